// varanus-stub — SCRAM-SHA-1 / SCRAM-SHA-256 with OpenSSL (see auth.hpp).
#include "auth.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "commands.hpp"

namespace varanus::stub {

namespace {

using Bytes = std::vector<unsigned char>;

constexpr int kIterations = 4096;  // the least drivers accept: tests stay fast

struct Mechanism {
  std::string_view name;
  const EVP_MD* (*md)();
  std::size_t size;
};
constexpr Mechanism kSha1{"SCRAM-SHA-1", &EVP_sha1, 20};
constexpr Mechanism kSha256{"SCRAM-SHA-256", &EVP_sha256, 32};

const Mechanism* mechanism(std::string_view name) {
  if (name == kSha1.name) return &kSha1;
  if (name == kSha256.name) return &kSha256;
  return nullptr;
}

Bytes to_bytes(std::string_view s) {
  return Bytes(s.begin(), s.end());
}

Bytes digest(const EVP_MD* md, const Bytes& in) {
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned int n = 0;
  EVP_Digest(in.data(), in.size(), out.data(), &n, md, nullptr);
  out.resize(n);
  return out;
}

Bytes hmac(const EVP_MD* md, const Bytes& key, std::string_view data) {
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned int n = 0;
  HMAC(md, key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &n);
  out.resize(n);
  return out;
}

std::string base64(const Bytes& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), in.data(),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<Bytes> unbase64(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  Bytes out(in.size() / 4 * 3 + 1);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  std::size_t len = static_cast<std::size_t>(n);
  for (std::size_t i = in.size(); i > 0 && in[i - 1] == '=' && len > 0; --i) --len;
  out.resize(len);
  return out;
}

std::string hex(const Bytes& in) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : in) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

Bytes random_bytes(std::size_t n) {
  Bytes out(n);
  RAND_bytes(out.data(), static_cast<int>(n));
  return out;
}

// "a=1,b=2": the value of `key`, or nullopt.
std::optional<std::string> attribute(std::string_view message, char key) {
  std::size_t pos = 0;
  while (pos <= message.size()) {
    const std::size_t end = std::min(message.find(',', pos), message.size());
    const std::string_view part = message.substr(pos, end - pos);
    if (part.size() >= 2 && part[0] == key && part[1] == '=') return std::string(part.substr(2));
    pos = end + 1;
  }
  return std::nullopt;
}

// saslname: "=2C" is ',' and "=3D" is '='.
std::string unescape_name(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s.substr(i, 3) == "=2C") {
      out += ',';
      i += 2;
    } else if (s.substr(i, 3) == "=3D") {
      out += '=';
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

struct Credential {
  Bytes salt;
  Bytes storedKey;
  Bytes serverKey;
};

struct User {
  std::string password;  // kept for {stubScramSecrets: 1}
  std::map<std::string, Credential, std::less<>> byMechanism;
};

// The password SCRAM-SHA-1 salts: MongoDB's digest of user and password.
std::string sha1_password(std::string_view user, std::string_view password) {
  const Bytes d =
      digest(EVP_md5(), to_bytes(std::string(user) + ":mongo:" + std::string(password)));
  return hex(d);
}

Bytes salted_password(const Mechanism& m, std::string_view user, std::string_view password,
                      const Bytes& salt) {
  const std::string p =
      m.name == kSha1.name ? sha1_password(user, password) : std::string(password);
  Bytes out(m.size);
  PKCS5_PBKDF2_HMAC(p.data(), static_cast<int>(p.size()), salt.data(),
                    static_cast<int>(salt.size()), kIterations, m.md(), static_cast<int>(m.size),
                    out.data());
  return out;
}

BsonView binary_payload(const bson_t* body) {
  bson_iter_t it;
  if (!find(body, "payload", &it) || !BSON_ITER_HOLDS_BINARY(&it)) return {};
  bson_subtype_t sub;
  std::uint32_t len = 0;
  const std::uint8_t* data = nullptr;
  bson_iter_binary(&it, &sub, &len, &data);
  return BsonView{data, len};
}

void append_payload(bson_t* out, std::string_view payload) {
  bson_append_binary(out, "payload", 7, BSON_SUBTYPE_BINARY,
                     reinterpret_cast<const std::uint8_t*>(payload.data()),
                     static_cast<std::uint32_t>(payload.size()));
}

Doc ok_reply() {
  Doc d;
  BSON_APPEND_DOUBLE(d.get(), "ok", 1.0);
  return d;
}

Doc auth_failed() {
  return error_reply(18, "AuthenticationFailed", "Authentication failed.");
}

}  // namespace

struct ScramConversation {
  const Mechanism* mech = nullptr;
  std::string user;
  std::string db;
  std::string clientFirstBare;
  std::string serverFirst;
  std::string nonce;  // client + server
  Credential cred;
};

class Users {
 public:
  std::mutex mutex;
  std::map<std::pair<std::string, std::string>, User> users;  // (db, name)
  std::vector<std::string> secrets;                           // for tests
  void remember(std::string s) {
    if (!s.empty()) secrets.push_back(std::move(s));
  }
};

std::shared_ptr<Users> make_users() {
  return std::make_shared<Users>();
}

namespace {

// The conversation a saslStart (or a speculative one) begins; nullopt when
// the payload or the user is unknown.
std::optional<std::pair<std::shared_ptr<ScramConversation>, std::string>> start(
    CommandContext& ctx, std::string_view mechName, std::string_view db, BsonView payload) {
  const Mechanism* m = mechanism(mechName);
  if (m == nullptr || payload.data == nullptr) return std::nullopt;
  const std::string first(reinterpret_cast<const char*>(payload.data), payload.size);
  if (!first.starts_with("n,,")) return std::nullopt;  // no channel binding, no authzid
  const std::string bare = first.substr(3);
  const auto user = attribute(bare, 'n');
  const auto clientNonce = attribute(bare, 'r');
  if (!user || !clientNonce) return std::nullopt;
  Users& users = *ctx.state.users;
  std::lock_guard lock(users.mutex);
  const auto u = users.users.find({std::string(db), unescape_name(*user)});
  if (u == users.users.end()) return std::nullopt;
  const auto c = u->second.byMechanism.find(m->name);
  if (c == u->second.byMechanism.end()) return std::nullopt;
  auto conv = std::make_shared<ScramConversation>();
  conv->mech = m;
  conv->user = unescape_name(*user);
  conv->db = std::string(db);
  conv->clientFirstBare = bare;
  conv->nonce = *clientNonce + base64(random_bytes(24));
  conv->cred = c->second;
  conv->serverFirst =
      "r=" + conv->nonce + ",s=" + base64(conv->cred.salt) + ",i=" + std::to_string(kIterations);
  users.remember(first);
  users.remember(base64(to_bytes(first)));
  users.remember(*clientNonce);
  users.remember(conv->nonce);
  users.remember(conv->serverFirst);
  users.remember(base64(to_bytes(conv->serverFirst)));
  return std::make_pair(conv, conv->serverFirst);
}

}  // namespace

Doc run_user_command(CommandContext& ctx, const CommandInput& in) {
  StaticDoc body(in.body);
  const auto name = get_string(body.get(), in.name);
  if (!name || name->empty()) return error_reply(2, "BadValue", in.name + " needs a user name");
  Users& users = *ctx.state.users;
  std::lock_guard lock(users.mutex);
  const auto key = std::make_pair(in.db, std::string(*name));
  if (in.name == "dropUser") {
    if (users.users.erase(key) == 0)
      return error_reply(11, "UserNotFound",
                         "User '" + std::string(*name) + "@" + in.db + "' not found");
    return ok_reply();
  }
  const bool exists = users.users.count(key) != 0;
  if (in.name == "createUser" && exists)
    return error_reply(51003, "Location51003",
                       "User \"" + std::string(*name) + "@" + in.db + "\" already exists");
  if (in.name == "updateUser" && !exists)
    return error_reply(11, "UserNotFound",
                       "User " + std::string(*name) + "@" + in.db + " not found");
  const auto pwd = get_string(body.get(), "pwd");
  if (!pwd) {
    if (in.name == "createUser") return error_reply(2, "BadValue", "Must provide a 'pwd' field");
    return ok_reply();  // roles only: nothing to change here
  }
  User u;
  u.password = std::string(*pwd);
  users.remember(u.password);
  for (const Mechanism* m : {&kSha1, &kSha256}) {
    Credential c;
    c.salt = random_bytes(m->size == 20 ? 16 : 28);
    const Bytes salted = salted_password(*m, *name, u.password, c.salt);
    const Bytes clientKey = hmac(m->md(), salted, "Client Key");
    c.storedKey = digest(m->md(), clientKey);
    c.serverKey = hmac(m->md(), salted, "Server Key");
    users.remember(hex(salted));
    users.remember(base64(salted));
    users.remember(base64(clientKey));
    users.remember(base64(c.serverKey));
    users.remember(base64(c.storedKey));
    if (m == &kSha1) users.remember(sha1_password(*name, u.password));
    u.byMechanism[std::string(m->name)] = std::move(c);
  }
  users.users[key] = std::move(u);
  return ok_reply();
}

Doc run_sasl_start(CommandContext& ctx, const CommandInput& in) {
  StaticDoc body(in.body);
  const auto mech = get_string(body.get(), "mechanism");
  auto started = start(ctx, mech.value_or(""), in.db, binary_payload(body.get()));
  if (!started) return auth_failed();
  ctx.session.scram = started->first;
  Doc reply;
  BSON_APPEND_INT32(reply.get(), "conversationId", 1);
  BSON_APPEND_BOOL(reply.get(), "done", false);
  append_payload(reply.get(), started->second);
  BSON_APPEND_DOUBLE(reply.get(), "ok", 1.0);
  return reply;
}

Doc run_sasl_continue(CommandContext& ctx, const CommandInput& in) {
  StaticDoc body(in.body);
  std::shared_ptr<ScramConversation> conv = std::move(ctx.session.scram);
  ctx.session.scram.reset();
  if (!conv) return auth_failed();
  const BsonView payload = binary_payload(body.get());
  if (payload.data == nullptr) return auth_failed();
  const std::string final(reinterpret_cast<const char*>(payload.data), payload.size);
  const auto proofAt = final.rfind(",p=");
  const auto nonce = attribute(final, 'r');
  const auto proof64 = attribute(final, 'p');
  if (proofAt == std::string::npos || !nonce || *nonce != conv->nonce || !proof64)
    return auth_failed();
  const std::string withoutProof = final.substr(0, proofAt);
  const std::string authMessage =
      conv->clientFirstBare + "," + conv->serverFirst + "," + withoutProof;
  const auto proof = unbase64(*proof64);
  const EVP_MD* md = conv->mech->md();
  const Bytes clientSignature = hmac(md, conv->cred.storedKey, authMessage);
  if (!proof || proof->size() != clientSignature.size()) return auth_failed();
  Bytes clientKey(proof->size());
  for (std::size_t i = 0; i < clientKey.size(); ++i)
    clientKey[i] = static_cast<unsigned char>((*proof)[i] ^ clientSignature[i]);
  if (digest(md, clientKey) != conv->cred.storedKey) return auth_failed();
  const std::string serverFinal = "v=" + base64(hmac(md, conv->cred.serverKey, authMessage));
  {
    Users& users = *ctx.state.users;
    std::lock_guard lock(users.mutex);
    users.remember(final);
    users.remember(base64(to_bytes(final)));
    users.remember(*proof64);
    users.remember(base64(clientSignature));
    users.remember(serverFinal);
    users.remember(serverFinal.substr(2));
    users.remember(base64(to_bytes(serverFinal)));
  }
  Doc reply;
  BSON_APPEND_INT32(reply.get(), "conversationId", 1);
  BSON_APPEND_BOOL(reply.get(), "done", true);
  append_payload(reply.get(), serverFinal);
  BSON_APPEND_DOUBLE(reply.get(), "ok", 1.0);
  return reply;
}

std::optional<Doc> speculative_authenticate(CommandContext& ctx, BsonView saslStart) {
  StaticDoc body(saslStart);
  const auto mech = get_string(body.get(), "mechanism");
  const auto db = get_string(body.get(), "db");
  auto started = start(ctx, mech.value_or(""), db.value_or("admin"), binary_payload(body.get()));
  if (!started) return std::nullopt;
  ctx.session.scram = started->first;
  Doc reply;
  BSON_APPEND_INT32(reply.get(), "conversationId", 1);
  BSON_APPEND_BOOL(reply.get(), "done", false);
  append_payload(reply.get(), started->second);
  return reply;
}

std::optional<Doc> sasl_supported_mechs(CommandContext& ctx, std::string_view dbUser) {
  const auto dot = dbUser.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  Users& users = *ctx.state.users;
  std::lock_guard lock(users.mutex);
  const auto u =
      users.users.find({std::string(dbUser.substr(0, dot)), std::string(dbUser.substr(dot + 1))});
  if (u == users.users.end()) return std::nullopt;
  Doc arr;
  std::uint32_t i = 0;
  for (const auto& [name, cred] : u->second.byMechanism)
    append_utf8(arr.get(), std::to_string(i++), name);
  return arr;
}

Doc run_scram_secrets(CommandContext& ctx) {
  Users& users = *ctx.state.users;
  std::lock_guard lock(users.mutex);
  Doc reply;
  bson_t arr;
  BSON_APPEND_ARRAY_BEGIN(reply.get(), "secrets", &arr);
  std::uint32_t i = 0;
  for (const auto& s : users.secrets) append_utf8(&arr, std::to_string(i++), s);
  bson_append_array_end(reply.get(), &arr);
  BSON_APPEND_DOUBLE(reply.get(), "ok", 1.0);
  return reply;
}

}  // namespace varanus::stub
