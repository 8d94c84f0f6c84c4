#include "json_config.hpp"

namespace varanus::app {

std::string json_child(const std::string& path, const std::string& key) {
  return (nlohmann::json::json_pointer(path) / key).to_string();
}

std::string json_child(const std::string& path, std::size_t index) {
  return (nlohmann::json::json_pointer(path) / index).to_string();
}

}  // namespace varanus::app
