// varanus-stub — SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802 / 7677, as
// MongoDB speaks them) for real, with OpenSSL: users made by createUser /
// updateUser, saslStart / saslContinue, and speculative authentication in
// the handshake. So drivers authenticate through varanus as they would
// against mongod, and tests can check that no secret of a real exchange
// leaks into varanus's output.
//
// Not implemented: SASLprep of non-ASCII passwords (taken as they are),
// authorization (an unauthenticated client may still run every command),
// other mechanisms. {stubScramSecrets: 1} (run on the stub directly, never
// through varanus) answers every secret of every exchange so far: the
// passwords, salted passwords, nonces, proofs, signatures and payloads, for
// tests that look for them in varanus's output.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "doc.hpp"

namespace varanus::stub {

struct CommandContext;
struct CommandInput;

/// One SCRAM conversation of a connection (between saslStart and the last
/// saslContinue).
struct ScramConversation;

/// The users of the process and the secrets seen so far (for tests).
class Users;
std::shared_ptr<Users> make_users();

/// createUser / updateUser / dropUser: {ok: 1} or an error reply.
Doc run_user_command(CommandContext& ctx, const CommandInput& in);
/// saslStart: the server-first message, or AuthenticationFailed.
Doc run_sasl_start(CommandContext& ctx, const CommandInput& in);
/// saslContinue: verifies the proof, answers the server signature.
Doc run_sasl_continue(CommandContext& ctx, const CommandInput& in);
/// hello's speculativeAuthenticate (a saslStart document): the document to
/// answer in the reply's speculativeAuthenticate, or nullopt (no such user,
/// bad payload: the driver then authenticates the ordinary way).
std::optional<Doc> speculative_authenticate(CommandContext& ctx, BsonView saslStart);
/// hello's saslSupportedMechs "db.user": the mechanisms that user has.
std::optional<Doc> sasl_supported_mechs(CommandContext& ctx, std::string_view dbUser);
/// {stubScramSecrets: 1}
Doc run_scram_secrets(CommandContext& ctx);

}  // namespace varanus::stub
