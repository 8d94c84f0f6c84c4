#include "topology.hpp"

#include <boost/asio/post.hpp>

namespace varanus::stub {

Topology::Topology(std::string setName, std::vector<std::string> hosts)
    : setName_(std::move(setName)) {
  for (auto& h : hosts) {
    Member m;
    m.host = std::move(h);
    bson_oid_init(&m.processId, nullptr);
    members_.push_back(std::move(m));
  }
}

std::vector<std::string> Topology::hosts_locked() const {
  std::vector<std::string> out;
  for (const auto& m : members_) {
    if (m.inConfig) out.push_back(m.host);
  }
  return out;
}

std::vector<std::string> Topology::hosts() const {
  std::lock_guard lock(mu_);
  return hosts_locked();
}

std::string Topology::host(int member) const {
  std::lock_guard lock(mu_);
  return members_[static_cast<std::size_t>(member)].host;
}

std::optional<int> Topology::find(std::string_view host) const {
  std::lock_guard lock(mu_);
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (members_[i].host == host) return static_cast<int>(i);
  }
  return std::nullopt;
}

int Topology::size() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(members_.size());
}

Topology::MemberState Topology::state(int member) const {
  std::lock_guard lock(mu_);
  const Member& m = members_[static_cast<std::size_t>(member)];
  MemberState s;
  s.primary = primary_ == member;
  s.removed = !m.inConfig;
  s.me = m.host;
  if (primary_ >= 0) s.primaryHost = members_[static_cast<std::size_t>(primary_)].host;
  s.hosts = hosts_locked();
  s.processId = m.processId;
  s.counter = m.counter;
  s.term = term_;
  s.setVersion = setVersion_;
  return s;
}

bool Topology::is_primary(int member) const {
  std::lock_guard lock(mu_);
  return primary_ == member;
}

std::int64_t Topology::counter(int member) const {
  std::lock_guard lock(mu_);
  return members_[static_cast<std::size_t>(member)].counter;
}

bool Topology::hung(int member) const {
  std::lock_guard lock(mu_);
  return members_[static_cast<std::size_t>(member)].hung;
}

bool Topology::running(int member) const {
  std::lock_guard lock(mu_);
  return members_[static_cast<std::size_t>(member)].running;
}

bool Topology::electable_locked(int member) const {
  const Member& m = members_[static_cast<std::size_t>(member)];
  return m.inConfig && m.running;
}

int Topology::next_electable_locked(int from) const {
  const int n = static_cast<int>(members_.size());
  for (int i = 1; i < n; ++i) {
    int c = (from + i) % n;
    if (electable_locked(c)) return c;
  }
  return -1;
}

std::optional<CommandError> Topology::step_down(int member) {
  Parked wake_list;
  {
    std::lock_guard lock(mu_);
    if (primary_ != member) {
      return CommandError{10107, "NotWritablePrimary", "not primary so can't step down"};
    }
    int next = next_electable_locked(member);
    if (next < 0) {
      return CommandError{262, "ExceededTimeLimit",
                          "No electable secondaries caught up: no other member of " + setName_ +
                              " is in the config and running"};
    }
    primary_ = next;
    changed_locked(wake_list, true);
  }
  wake(wake_list);
  return std::nullopt;
}

std::optional<CommandError> Topology::step_up(int member) {
  Parked wake_list;
  {
    std::lock_guard lock(mu_);
    if (!members_[static_cast<std::size_t>(member)].inConfig) {
      return CommandError{93, "InvalidReplicaSetConfig",
                          "Our replica set config is invalid or we are not a member of it"};
    }
    if (primary_ == member) return std::nullopt;
    primary_ = member;
    changed_locked(wake_list, true);
  }
  wake(wake_list);
  return std::nullopt;
}

int Topology::add(std::string host) {
  Parked wake_list;
  int index = 0;
  {
    std::lock_guard lock(mu_);
    Member m;
    m.host = std::move(host);
    bson_oid_init(&m.processId, nullptr);
    members_.push_back(std::move(m));
    index = static_cast<int>(members_.size()) - 1;
    ++setVersion_;
    changed_locked(wake_list, false);
    members_.back().counter = 0;  // a process just started: nothing to bump yet
  }
  wake(wake_list);
  return index;
}

std::optional<CommandError> Topology::remove(int member) {
  Parked wake_list;
  {
    std::lock_guard lock(mu_);
    Member& m = members_[static_cast<std::size_t>(member)];
    if (!m.inConfig) {
      return CommandError{
          74, "NodeNotFound",
          "member " + m.host + " is not in the config of " + setName_ + " (removed already)"};
    }
    if (primary_ == member) {
      // mongod refuses a reconfig that makes the current primary unelectable.
      return CommandError{
          103, "NewReplicaSetConfigurationIncompatible",
          "cannot remove the primary " + m.host + " from " + setName_ + "; step it down first"};
    }
    m.inConfig = false;
    ++setVersion_;
    changed_locked(wake_list, false);
  }
  wake(wake_list);
  return std::nullopt;
}

void Topology::stop(int member) {
  Parked wake_list;
  {
    std::lock_guard lock(mu_);
    Member& m = members_[static_cast<std::size_t>(member)];
    m.running = false;
    m.hung = false;
    bool election = false;
    if (primary_ == member) {
      primary_ = next_electable_locked(member);
      election = primary_ >= 0;
    }
    changed_locked(wake_list, election);
  }
  wake(wake_list);
}

void Topology::start(int member) {
  Parked wake_list;
  {
    std::lock_guard lock(mu_);
    Member& m = members_[static_cast<std::size_t>(member)];
    m.running = true;
    m.hung = false;
    bson_oid_init(&m.processId, nullptr);
    m.counter = 0;
    if (primary_ < 0 && m.inConfig) {
      // A set without a primary elects the member that came back.
      primary_ = member;
      changed_locked(wake_list, true);
    }
  }
  wake(wake_list);
}

std::optional<CommandError> Topology::set_hung(int member, bool hung) {
  Parked wake_list;
  {
    std::lock_guard lock(mu_);
    Member& m = members_[static_cast<std::size_t>(member)];
    if (!m.running) {
      return CommandError{20, "IllegalOperation", "member " + m.host + " is stopped"};
    }
    m.hung = hung;
    // Wake the waiters (hung replies, parked hellos) without a change: each
    // re-checks its own condition.
    wake_list.swap(parked_);
  }
  wake(wake_list);
  return std::nullopt;
}

void Topology::changed_locked(Parked& wake_list, bool election) {
  if (election) ++term_;
  for (auto& m : members_) ++m.counter;
  wake_list.swap(parked_);
}

void Topology::wake(Parked& timers) {
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
