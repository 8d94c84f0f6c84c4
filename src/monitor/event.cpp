#include "varanus/monitor/event.hpp"

namespace varanus::monitor {

std::string_view to_string(EventType type) noexcept {
  switch (type) {
    case EventType::commandStarted:
      return "commandStarted";
    case EventType::commandSucceeded:
      return "commandSucceeded";
    case EventType::commandFailed:
      return "commandFailed";
    case EventType::connectionOpened:
      return "connectionOpened";
    case EventType::connectionClosed:
      return "connectionClosed";
    case EventType::topology:
      return "topology";
  }
  return "unknown";
}

std::string_view event_name(const Event& event) noexcept {
  return event.type == EventType::topology ? std::string_view(event.commandName)
                                           : to_string(event.type);
}

std::string_view to_string(HelloKind kind) noexcept {
  switch (kind) {
    case HelloKind::none:
      return "";
    case HelloKind::handshake:
      return "handshake";
    case HelloKind::heartbeat:
      return "heartbeat";
  }
  return "";
}

}  // namespace varanus::monitor
