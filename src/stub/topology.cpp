#include "topology.hpp"

#include <boost/asio/post.hpp>

namespace varanus::stub {

Topology::Topology(std::string setName, std::vector<std::string> hosts)
    : setName_(std::move(setName)),
      hosts_(std::move(hosts)),
      processIds_(hosts_.size()),
      counters_(hosts_.size(), 0) {
  for (auto& id : processIds_) bson_oid_init(&id, nullptr);
}

Topology::MemberState Topology::state(int member) const {
  std::lock_guard lock(mu_);
  auto m = static_cast<std::size_t>(member);
  MemberState s;
  s.primary = primary_ == member;
  if (primary_ >= 0) s.primaryHost = hosts_[static_cast<std::size_t>(primary_)];
  s.processId = processIds_[m];
  s.counter = counters_[m];
  s.term = term_;
  return s;
}

std::int64_t Topology::counter(int member) const {
  std::lock_guard lock(mu_);
  return counters_[static_cast<std::size_t>(member)];
}

bool Topology::step_down(int member) {
  decltype(parked_) wake_list;
  {
    std::lock_guard lock(mu_);
    if (primary_ != member || hosts_.size() < 2) return false;
    primary_ = (primary_ + 1) % static_cast<int>(hosts_.size());
    changed_locked(wake_list);
  }
  wake(wake_list);
  return true;
}

void Topology::step_up(int member) {
  decltype(parked_) wake_list;
  {
    std::lock_guard lock(mu_);
    if (primary_ == member) return;
    primary_ = member;
    changed_locked(wake_list);
  }
  wake(wake_list);
}

void Topology::changed_locked(decltype(parked_)& wake_list) {
  ++term_;
  for (auto& c : counters_) ++c;
  wake_list.swap(parked_);
}

void Topology::wake(decltype(parked_)& timers) {
  // Each timer belongs to one io_context thread: touch it only there. Moving
  // the expiry to now ends a pending wait and also one not yet started (the
  // session may be between parking and waiting), so no wake-up is lost.
  for (auto& [executor, weak] : timers) {
    boost::asio::post(executor, [weak = std::move(weak)] {
      if (auto t = weak.lock()) t->expires_at(std::chrono::steady_clock::now());
    });
  }
}

void Topology::park(const std::shared_ptr<boost::asio::steady_timer>& timer) {
  std::lock_guard lock(mu_);
  if (parked_.size() > 256) {
    std::erase_if(parked_, [](const auto& p) { return p.second.expired(); });
  }
  parked_.emplace_back(timer->get_executor(), timer);
}

}  // namespace varanus::stub
