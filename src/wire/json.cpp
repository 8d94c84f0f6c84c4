// Placeholder: libbson's writer until the fast bson_iter writer lands.
#include "varanus/wire/json.hpp"

namespace varanus::wire {

JsonResult append_relaxed_json(std::string& out, BsonView doc, const JsonOptions& options) {
  JsonResult r;
  std::string s = doc.to_relaxed_json();
  if (s.empty()) {
    out += "{}";
    r.valid = false;
    return r;
  }
  if (options.maxLength != 0 && s.size() > options.maxLength) {
    out += "{}";
    r.truncated = true;
    return r;
  }
  out += s;
  return r;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  out += '"';
}

}  // namespace varanus::wire
