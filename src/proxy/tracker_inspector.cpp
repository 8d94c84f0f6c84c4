// varanus::proxy — the production Inspector: a monitor::Tracker.
//
// Kept in its own translation unit so that tests which plug in their own
// inspectors do not pull the Tracker (and the wire codec) into their link.
#include "varanus/monitor/tracker.hpp"
#include "varanus/proxy/inspector.hpp"

namespace varanus::proxy {

namespace {

class TrackerInspector final : public Inspector {
 public:
  TrackerInspector(const InspectorContext& ctx, const monitor::TrackerOptions& options)
      : tracker_(ctx.info, ctx.out, options), stats_(ctx.stats) {}

  void opened(monitor::Clock now) override { tracker_.opened(now); }
  void client_data(std::span<const std::uint8_t> bytes, monitor::Clock now) override {
    tracker_.client_data(bytes, now);
    count();
  }
  void server_data(std::span<const std::uint8_t> bytes, monitor::Clock now) override {
    tracker_.server_data(bytes, now);
    count();
  }
  void closed(std::string_view reason, monitor::Clock now) override {
    tracker_.closed(reason, now);
    count();
  }
  bool inspecting() const noexcept override { return tracker_.inspecting(); }
  std::string_view stop_reason() const noexcept override { return tracker_.stop_reason(); }
  bool idle() const noexcept override { return tracker_.quiescent(); }
  monitor::StopCause stop_cause() const noexcept override { return tracker_.stop_cause(); }
  std::string_view throttle_reason() const noexcept override { return tracker_.throttle_reason(); }

 private:
  // Stats::commands, frames and sparseFrames follow the tracker's own counts; a
  // relaxed add only for a read that changed them.
  void count() noexcept {
    const std::uint64_t commands = tracker_.stats().commands;
    if (commands != counted_) {
      stats_.add(stats_.commands, static_cast<std::int64_t>(commands - counted_));
      counted_ = commands;
    }
    const std::uint64_t frames = tracker_.stats().frames;
    if (frames != framesCounted_) {
      stats_.add(stats_.frames, static_cast<std::int64_t>(frames - framesCounted_));
      framesCounted_ = frames;
    }
    const std::uint64_t uninspected = tracker_.stats().uninspectedCompressed;
    if (uninspected != uninspectedCounted_) {
      stats_.add(stats_.uninspectedCompressed,
                 static_cast<std::int64_t>(uninspected - uninspectedCounted_));
      uninspectedCounted_ = uninspected;
    }
    const std::uint64_t sparse = tracker_.sparse_frames();
    if (sparse != sparseCounted_) {
      stats_.add(stats_.sparseFrames, static_cast<std::int64_t>(sparse - sparseCounted_));
      sparseCounted_ = sparse;
    }
  }

  monitor::Tracker tracker_;
  monitor::Stats& stats_;
  std::uint64_t counted_ = 0;
  std::uint64_t sparseCounted_ = 0;
  std::uint64_t framesCounted_ = 0;
  std::uint64_t uninspectedCounted_ = 0;
};

}  // namespace

InspectorFactory tracker_factory(monitor::TrackerOptions options) {
  return [options = std::move(options)](const InspectorContext& ctx) -> std::unique_ptr<Inspector> {
    return std::make_unique<TrackerInspector>(ctx, options);
  };
}

}  // namespace varanus::proxy
