// varanus::wire — a command view over a decoded request or reply: what the
// command monitoring spec calls commandName, databaseName and command.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "varanus/wire/message.hpp"

namespace varanus::wire {

struct CommandView {
  std::string_view name;      ///< first key of the body (OP_QUERY: of the unwrapped $query)
  std::string_view database;  ///< $db, else the "<db>.$cmd" prefix, else OP_COMMAND's database
  BsonView body;              ///< the command document (unwrapped from $query when wrapped)
  const std::vector<DocumentSequence>* sequences = nullptr;  ///< OP_MSG kind-1 sections, or null
  std::uint32_t flagBits = 0;  ///< OP_MSG flagBits (0 for other opcodes)
  bool moreToCome = false;
  bool exhaustAllowed = false;
  bool checksumPresent = false;
  std::optional<Compressor> compressor;
  std::int32_t opCode = 0;  ///< effective opcode the command came in
};

/// A command view for an OP_MSG, an OP_QUERY on "<db>.$cmd" (with {$query: ...}
/// unwrapping) or an OP_COMMAND. Error (invalid_field) for other opcodes, an
/// OP_QUERY on a collection namespace, or an empty body.
Result<CommandView> command_view(const Message& message);

/// The command as the monitoring spec shows it: the body with each kind-1
/// sequence appended as an array named by its identifier. Returns BSON bytes,
/// written into `spare` (reused when its capacity suffices).
BsonBytes merged_command(const CommandView& view, BsonBytes spare = {});

/// First key of a document ("" for an empty or invalid one).
std::string_view first_key(BsonView doc) noexcept;

}  // namespace varanus::wire
