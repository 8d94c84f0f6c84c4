// varanus::monitor — what the command monitoring spec says about a command,
// decided from its name and body alone.
#pragma once

#include <optional>
#include <string_view>

#include "varanus/wire/bson_view.hpp"

namespace varanus::monitor {

/// authenticate, saslStart, saslContinue, getnonce, createUser, updateUser,
/// copydbgetnonce, copydbsaslstart, copydb — compared case-insensitively.
bool is_sensitive_command(std::string_view name) noexcept;

/// hello, isMaster, ismaster (case-insensitively).
bool is_hello(std::string_view name) noexcept;

/// The spec's rule for a command's documents: sensitive names always; a hello
/// only when it carries speculativeAuthenticate.
bool should_redact(std::string_view name, wire::BsonView body) noexcept;

/// The reply's `ok` as a number (double, int32, int64, bool, decimal ignored);
/// nullopt when missing.
std::optional<double> ok_value(wire::BsonView reply) noexcept;

/// ok == 1: succeeded (writeErrors / writeConcernError do not change that).
bool reply_succeeded(wire::BsonView reply) noexcept;

}  // namespace varanus::monitor
