// `varanus decode FILE...`: files of raw wire frames back to back (as
// captured), one JSON line per message on stdout. A file that ends mid-frame
// or holds a bad frame gets one error line (stdout, and a human line on
// stderr); decoding goes on with the next file.
#include "decode.hpp"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "varanus/wire/command.hpp"
#include "varanus/wire/frame.hpp"
#include "varanus/wire/json.hpp"
#include "varanus/wire/message.hpp"

namespace varanus::app {

namespace {

namespace w = varanus::wire;

constexpr const char* kUsage =
    "usage: varanus decode [--max-message-size N] FILE...\n"
    "\n"
    "Reads files of raw MongoDB wire messages (frames back to back, as\n"
    "captured) and prints one JSON line per message: opCode, messageLength,\n"
    "requestId, responseTo, flags, compressor, commandName, databaseName and\n"
    "the documents as relaxed Extended JSON. A truncated or bad frame gives an\n"
    "error line {\"file\",\"offset\",\"error\",\"message\"} and decoding goes on\n"
    "with the next file.\n"
    "\n"
    "Exit status: 0 all decoded, 1 a file had an error, 2 usage error.\n";

void key(std::string& out, const char* k) {
  out += ",\"";
  out += k;
  out += "\":";
}

void doc(std::string& out, w::BsonView d) {
  if (d.empty()) {
    out += "null";
    return;
  }
  w::append_relaxed_json(out, d);
}

void docs(std::string& out, const std::vector<w::BsonView>& ds) {
  out += '[';
  for (std::size_t i = 0; i < ds.size(); ++i) {
    if (i) out += ',';
    doc(out, ds[i]);
  }
  out += ']';
}

void flag(std::string& out, const char* k, bool on) {
  if (!on) return;
  key(out, k);
  out += "true";
}

std::string message_line(const std::string& file, std::uint64_t offset, const w::Message& m) {
  std::string out;
  out.reserve(512);
  out += "{\"file\":";
  w::append_json_string(out, file);
  key(out, "offset");
  out += std::to_string(offset);
  key(out, "opCode");
  w::append_json_string(out, w::opcode_name(m.opCode));
  key(out, "opCodeNumber");
  out += std::to_string(m.opCode);
  key(out, "messageLength");
  out += std::to_string(m.header.messageLength);
  key(out, "requestId");
  out += std::to_string(m.header.requestId);
  key(out, "responseTo");
  out += std::to_string(m.header.responseTo);
  if (const auto* msg = std::get_if<w::OpMsg>(&m.body)) {
    key(out, "flags");
    out += std::to_string(msg->flagBits);
    flag(out, "moreToCome", msg->moreToCome());
    flag(out, "exhaustAllowed", msg->exhaustAllowed());
    flag(out, "checksumPresent", msg->checksumPresent());
  } else if (const auto* q = std::get_if<w::OpQuery>(&m.body)) {
    key(out, "flags");
    out += std::to_string(q->flags);
  } else if (const auto* r = std::get_if<w::OpReply>(&m.body)) {
    key(out, "flags");
    out += std::to_string(r->responseFlags);
  }
  if (m.compressor) {
    key(out, "compressor");
    w::append_json_string(out, w::to_string(*m.compressor));
  }
  // OP_MSG replies have a body too; responseTo != 0 marks them (requests
  // always carry 0), so their first key is not shown as a command name.
  const bool reply =
      m.opCode == static_cast<std::int32_t>(w::OpCode::msg) && m.header.responseTo != 0;
  auto v = reply ? w::Result<w::CommandView>(w::Error{}) : w::command_view(m);
  if (v) {
    key(out, "commandName");
    w::append_json_string(out, v->name);
    key(out, "databaseName");
    w::append_json_string(out, v->database);
  } else if (const auto* q = std::get_if<w::OpQuery>(&m.body)) {
    key(out, "namespace");
    w::append_json_string(out, q->fullCollectionName);
  }
  std::visit(
      [&](const auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, w::OpMsg>) {
          key(out, "sections");
          out += std::to_string(b.sectionCount);
          key(out, "body");
          doc(out, b.body);
          key(out, "sequences");
          out += '{';
          for (std::size_t i = 0; i < b.sequences.size(); ++i) {
            if (i) out += ',';
            w::append_json_string(out, b.sequences[i].identifier);
            out += ':';
            docs(out, b.sequences[i].documents);
          }
          out += '}';
        } else if constexpr (std::is_same_v<T, w::OpQuery>) {
          key(out, "documents");
          std::vector<w::BsonView> ds{b.query};
          if (b.returnFieldsSelector) ds.push_back(*b.returnFieldsSelector);
          docs(out, ds);
        } else if constexpr (std::is_same_v<T, w::OpReply>) {
          key(out, "cursorId");
          out += std::to_string(b.cursorId);
          key(out, "documents");
          docs(out, b.documents);
        } else if constexpr (std::is_same_v<T, w::OpCommand>) {
          key(out, "documents");
          std::vector<w::BsonView> ds{b.commandArgs, b.metadata};
          ds.insert(ds.end(), b.inputDocs.begin(), b.inputDocs.end());
          docs(out, ds);
        } else if constexpr (std::is_same_v<T, w::OpCommandReply>) {
          key(out, "documents");
          std::vector<w::BsonView> ds{b.commandReply, b.metadata};
          ds.insert(ds.end(), b.outputDocs.begin(), b.outputDocs.end());
          docs(out, ds);
        } else if constexpr (std::is_same_v<T, w::OpInsert>) {
          key(out, "namespace");
          w::append_json_string(out, b.fullCollectionName);
          key(out, "documents");
          docs(out, b.documents);
        } else if constexpr (std::is_same_v<T, w::OpUpdate>) {
          key(out, "namespace");
          w::append_json_string(out, b.fullCollectionName);
          key(out, "documents");
          docs(out, {b.selector, b.update});
        } else if constexpr (std::is_same_v<T, w::OpDelete>) {
          key(out, "namespace");
          w::append_json_string(out, b.fullCollectionName);
          key(out, "documents");
          docs(out, {b.selector});
        } else if constexpr (std::is_same_v<T, w::OpGetMore>) {
          key(out, "namespace");
          w::append_json_string(out, b.fullCollectionName);
          key(out, "cursorId");
          out += std::to_string(b.cursorId);
        } else if constexpr (std::is_same_v<T, w::OpKillCursors>) {
          key(out, "cursorIds");
          out += '[';
          for (std::size_t i = 0; i < b.cursorIds.size(); ++i) {
            if (i) out += ',';
            out += std::to_string(b.cursorIds[i]);
          }
          out += ']';
        }
      },
      m.body);
  out += "}\n";
  return out;
}

void report_error(const std::string& file, std::uint64_t offset, const w::Error& e) {
  std::string out = "{\"file\":";
  w::append_json_string(out, file);
  key(out, "offset");
  out += std::to_string(offset);
  key(out, "error");
  w::append_json_string(out, w::to_string(e.code));
  key(out, "message");
  w::append_json_string(out, e.message());
  out += "}\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "varanus decode: %s: at byte %llu: %s\n", file.c_str(),
               static_cast<unsigned long long>(offset), e.message().c_str());
}

/// Decodes one file; false if it had an error.
bool decode_file(const std::string& file, std::int32_t maxSize) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    report_error(
        file, 0,
        w::Error{w::Errc::truncated, 0, std::string("cannot open: ") + std::strerror(errno)});
    return false;
  }
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                        std::istreambuf_iterator<char>());
  w::DecodeOptions opt;
  opt.maxMessageSize = maxSize;
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    const std::span<const std::uint8_t> rest(bytes.data() + pos, bytes.size() - pos);
    const w::FrameCheck c = w::check_frame(rest, maxSize);
    if (c.status == w::FrameStatus::error) {
      report_error(file, pos, *c.error);
      return false;
    }
    if (c.status == w::FrameStatus::need_more) {
      const std::string what = c.length
                                   ? "file ends inside a frame of " + std::to_string(c.length) +
                                         " bytes (" + std::to_string(rest.size()) + " present)"
                                   : "file ends inside a frame's length prefix";
      report_error(file, pos, w::Error{w::Errc::truncated, rest.size(), what});
      return false;
    }
    auto m = w::decode(rest.first(c.length), opt);
    if (!m) {
      report_error(file, pos, m.error());  // the message names the offset inside the frame
      return false;
    }
    const std::string line = message_line(file, pos, *m);
    std::fwrite(line.data(), 1, line.size(), stdout);
    pos += c.length;
  }
  return true;
}

}  // namespace

int run_decode(int argc, char** argv) {
  std::vector<std::string> files;
  std::int32_t maxSize = w::kDefaultMaxMessageSize;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--max-message-size") {
      if (i + 1 >= argc) {
        std::fputs("varanus decode: --max-message-size needs a value\n", stderr);
        return 2;
      }
      char* end = nullptr;
      const long v = std::strtol(argv[++i], &end, 10);
      if (*end != 0 || v <= 16 || v > 2'000'000'000) {
        std::fprintf(stderr, "varanus decode: bad --max-message-size %s\n", argv[i]);
        return 2;
      }
      maxSize = static_cast<std::int32_t>(v);
      continue;
    }
    if (a == "--") {
      for (++i; i < argc; ++i) files.emplace_back(argv[i]);
      break;
    }
    if (a.size() > 1 && a[0] == '-') {
      std::fprintf(stderr, "varanus decode: unknown option %s\n%s", argv[i], kUsage);
      return 2;
    }
    files.emplace_back(a);
  }
  if (files.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  int status = 0;
  for (const std::string& f : files) {
    if (!decode_file(f, maxSize)) status = 1;
  }
  std::fflush(stdout);
  return status;
}

}  // namespace varanus::app
