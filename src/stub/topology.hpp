// varanus-stub — the replica set's configuration and state: its members
// (added, removed, stopped, restarted, hung), who is primary, and the
// topologyVersion each member reports. A standalone stub is a "set" of one
// member without a name.
//
// Members are numbered in the order they joined and never renumbered (a
// session keeps its member's index for its whole life); a removed member
// keeps its number, out of the config.
//
// Streaming hellos (the SDAM monitor's awaitable hello) park on a timer
// registered here; any topology change bumps the members' counters and
// cancels every parked timer, on that timer's own executor, so the waiting
// sessions answer at once with the new state. A parked timer may also be
// woken with nothing changed (a hang lifted): waiters re-check and wait again.
#pragma once

#include <bson/bson.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "match.hpp"

namespace varanus::stub {

class Topology {
 public:
  /// The most members a set has (mongod's limit).
  static constexpr std::size_t kMaxMembers = 50;

  /// hosts: "host:port" of each member, in member order. setName empty = standalone.
  Topology(std::string setName, std::vector<std::string> hosts);

  bool replica_set() const noexcept { return !setName_.empty(); }
  const std::string& set_name() const noexcept { return setName_; }

  /// The config's members ("host:port", member order): stopped ones too,
  /// removed ones not — what hellos list in `hosts`.
  std::vector<std::string> hosts() const;
  /// Any member's address, removed ones too.
  std::string host(int member) const;
  /// The member listening (or that listened) at `host`, removed ones too.
  std::optional<int> find(std::string_view host) const;
  /// Members ever known, removed ones too (the next member's number).
  int size() const;

  struct MemberState {
    bool primary = false;
    bool removed = false;            ///< out of the config: answers as mongod's REMOVED state
    std::string me;                  ///< this member's address
    std::string primaryHost;         ///< empty when there is no primary
    std::vector<std::string> hosts;  ///< the config's members (hosts())
    bson_oid_t processId{};
    std::int64_t counter = 0;
    std::int64_t term = 0;  ///< election term, in electionId
    std::int64_t setVersion = 1;
  };
  MemberState state(int member) const;
  /// state(member).primary without copying the hosts (every CRUD request asks).
  bool is_primary(int member) const;
  std::int64_t counter(int member) const;
  bool hung(int member) const;

  /// The primary steps down and the next electable member (in the config,
  /// running) becomes primary. Errors: not primary; no one to take over.
  std::optional<CommandError> step_down(int member);
  /// `member` becomes primary (no-op if it already is). Error: removed.
  std::optional<CommandError> step_up(int member);

  // Members coming and going (Members, members.hpp, drives the listeners and
  // calls these under its own lock, so they apply in the order they happen).

  /// A new member joins the config as a secondary: setVersion + 1, every
  /// counter bumped. Returns its number.
  int add(std::string host);
  /// `member` leaves the config (setVersion + 1, counters bumped) and answers
  /// hellos as a removed member. Errors: not in the config; the primary.
  std::optional<CommandError> remove(int member);
  bool running(int member) const;
  /// The member's process dies: if it was primary the next electable member
  /// is elected (term + 1; none left: no primary); every counter bumped.
  void stop(int member);
  /// The member's process restarts: new processId, counter 0, a secondary —
  /// or the primary when the set has none and it is in the config (an election).
  void start(int member);
  /// A hung member accepts and reads but answers nothing until un-hung.
  /// Error: the member is stopped. Nothing else changes (no counter bump).
  std::optional<CommandError> set_hung(int member, bool hung);

  /// Registers a parked streaming hello; its timer is cancelled on change.
  void park(const std::shared_ptr<boost::asio::steady_timer>& timer);

 private:
  using Parked = std::vector<
      std::pair<boost::asio::any_io_executor, std::weak_ptr<boost::asio::steady_timer>>>;
  struct Member {
    std::string host;
    bool inConfig = true;
    bool running = true;
    bool hung = false;
    bson_oid_t processId{};
    std::int64_t counter = 0;
  };

  /// Every counter + 1 (term + 1 for an election); takes the parked timers.
  void changed_locked(Parked& wake, bool election);
  static void wake(Parked& timers);
  bool electable_locked(int member) const;
  /// The first electable member after `from` (wrapping, `from` excluded), or -1.
  int next_electable_locked(int from) const;
  std::vector<std::string> hosts_locked() const;

  std::string setName_;
  mutable std::mutex mu_;
  std::vector<Member> members_;
  int primary_ = 0;  ///< -1: no primary
  std::int64_t term_ = 1;
  std::int64_t setVersion_ = 1;
  Parked parked_;
};

}  // namespace varanus::stub
