// varanus-stub — who is primary, and the topologyVersion each member
// reports. A standalone stub is a "set" of one member without a name.
//
// Streaming hellos (the SDAM monitor's awaitable hello) park on a timer
// registered here; any topology change bumps every member's counter and
// cancels every parked timer, on that timer's own executor, so the waiting
// sessions answer at once with the new state.
#pragma once

#include <bson/bson.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace varanus::stub {

class Topology {
 public:
  /// hosts: "host:port" of each member, in member order. setName empty = standalone.
  Topology(std::string setName, std::vector<std::string> hosts);

  bool replica_set() const noexcept { return !setName_.empty(); }
  const std::string& set_name() const noexcept { return setName_; }
  const std::vector<std::string>& hosts() const noexcept { return hosts_; }

  struct MemberState {
    bool primary = false;
    std::string primaryHost;  ///< empty when there is no primary
    bson_oid_t processId{};
    std::int64_t counter = 0;
    std::int64_t term = 0;  ///< election term, in electionId
  };
  MemberState state(int member) const;
  std::int64_t counter(int member) const;

  /// The primary steps down and the next member becomes primary.
  /// False (nothing changes) when `member` is not the primary.
  bool step_down(int member);
  /// `member` becomes primary (no-op if it already is).
  void step_up(int member);

  /// Registers a parked streaming hello; its timer is cancelled on change.
  void park(const std::shared_ptr<boost::asio::steady_timer>& timer);

 private:
  void changed_locked(std::vector<std::pair<boost::asio::any_io_executor,
                                            std::weak_ptr<boost::asio::steady_timer>>>& wake);
  void wake(std::vector<std::pair<boost::asio::any_io_executor,
                                  std::weak_ptr<boost::asio::steady_timer>>>& timers);

  std::string setName_;
  std::vector<std::string> hosts_;
  mutable std::mutex mu_;
  int primary_ = 0;
  std::int64_t term_ = 1;
  std::vector<bson_oid_t> processIds_;
  std::vector<std::int64_t> counters_;
  std::vector<std::pair<boost::asio::any_io_executor, std::weak_ptr<boost::asio::steady_timer>>>
      parked_;
};

}  // namespace varanus::stub
