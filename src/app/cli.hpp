// varanus app — the command line of `varanus` (the proxy; `varanus decode`
// is dispatched before this parser sees anything).
#pragma once

#include <string>
#include <vector>

#include "config.hpp"
#include "sink_config.hpp"

namespace varanus::app {

struct Cli {
  enum class Action { run, help, version, check, error };
  Action action = Action::run;  ///< check: --check-config (validate, describe, exit)
  AppConfig config;
  SinkFlags sinkFlags;  ///< --log-file, --log-format, --admin, --plugin (sink_config.hpp)
  std::string error;    ///< Action::error: one line for stderr (exit 2)
};

/// Parses the arguments after the program name. --config FILE is applied
/// first wherever it appears; the other flags then override the file.
Cli parse_cli(const std::vector<std::string>& args);

/// The --help text.
std::string usage();

}  // namespace varanus::app
