// varanus app — the command line of `varanus` (the proxy; `varanus decode`
// is dispatched before this parser sees anything).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config.hpp"
#include "sink_config.hpp"

namespace varanus::app {

/// Environment variables, name and value (only VARANUS_* ones matter).
using Environment = std::vector<std::pair<std::string, std::string>>;

/// The process's VARANUS_* variables.
Environment varanus_environment();

/// The environment variable for a flag: --grace-period -> VARANUS_GRACE_PERIOD.
std::string env_name(std::string_view flag);

struct Cli {
  enum class Action { run, help, version, check, error };
  Action action = Action::run;  ///< check: --check-config (validate, describe, exit)
  AppConfig config;
  SinkFlags sinkFlags;  ///< --log-file, --log-format, --admin, --plugin (sink_config.hpp)
  std::string error;    ///< Action::error: one line for stderr (exit 2)
  /// Where each option that is not at its default came from, by its config
  /// key ("listen" -> "flag --listen", "env VARANUS_LISTEN", "config FILE").
  std::vector<std::pair<std::string, std::string>> sources;
  /// The config file read ("" when none).
  std::string configPath;
  /// VARANUS_* variables that name no option (said by --check-config).
  std::vector<std::string> unknownEnv;
  /// "default" or where the option `key` came from.
  std::string source(std::string_view key) const;
};

/// Parses the arguments after the program name, with the VARANUS_*
/// variables of `env`. Precedence: flags > environment > config file >
/// defaults. --config FILE (or VARANUS_CONFIG) is applied first wherever it
/// appears; each option of the environment applies unless its flag is given.
Cli parse_cli(const std::vector<std::string>& args, const Environment& env = {});

/// A TLS setting that makes no sense without another one (a key without a
/// certificate, an upstream CA without --upstream-tls); nullopt when fine.
std::optional<std::string> tls_config_error(const proxy::TlsConfig& tls);

/// The --help text.
std::string usage();

}  // namespace varanus::app
