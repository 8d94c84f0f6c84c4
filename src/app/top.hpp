// varanus app — `varanus top`: a live view of the admin endpoint's
// /stats/commands, like mongotop (top.cpp).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace varanus::app {

/// `varanus top --admin HOST:PORT [--once [--json]]`. argv[0] is "top".
int run_top(int argc, char** argv);

/// How `varanus top` orders rows.
enum class TopSort { totalTime, count, p99, failures };

/// The screen for one snapshot: `commands` is /stats/commands' JSON,
/// `stats` /stats' (for connections and drops); `width`/`height` bound the
/// text (rows past the height are left out). Plain text, no escapes.
std::string top_screen(const nlohmann::json& commands, const nlohmann::json& stats,
                       const std::string& admin, TopSort sort, std::size_t width,
                       std::size_t height);

}  // namespace varanus::app
