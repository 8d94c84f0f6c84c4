// varanus::capture — the thin I/O part: packets from libpcap (a pcap or
// pcapng file, or a live interface) handed to a callback. Everything else
// of the capture library is pure.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace varanus::capture {

/// A file that cannot be read, an interface that cannot be opened, a
/// missing permission: what() is one line for the user.
class CaptureError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PacketView {
  std::chrono::nanoseconds time{0};  ///< since the Unix epoch
  std::span<const std::uint8_t> data;
  std::uint32_t wireLength = 0;
};

/// One libpcap handle.
class PcapSource {
 public:
  /// A pcap or pcapng file ("-" is stdin). Throws CaptureError.
  static PcapSource open_file(const std::string& path);
  /// A pcap or pcapng file held in memory (the fuzz target). The bytes must
  /// outlive the source. Throws CaptureError.
  static PcapSource open_buffer(std::span<const std::uint8_t> bytes);
  struct LiveOptions {
    std::string interface;
    std::string filter;  ///< BPF expression; empty: none
    int snapLength = 262144;
    /// Kernel buffer. Immediate mode gives each packet a slot of the snap
    /// length: 64 MiB holds 256 of 256 KiB (loopback segments reach 64 KiB).
    int bufferBytes = 64 << 20;
  };
  /// A live interface. Throws CaptureError (with a hint about CAP_NET_RAW
  /// when the permission is missing).
  static PcapSource open_live(const LiveOptions& options);

  PcapSource(PcapSource&&) noexcept;
  PcapSource& operator=(PcapSource&&) noexcept;
  ~PcapSource();

  int link_type() const noexcept;
  /// Calls `f` for each packet until the end of the file, an error (thrown
  /// as CaptureError) or break_loop(). Returns the packets read.
  std::uint64_t loop(const std::function<void(const PacketView&)>& f);
  /// Live: returns within `timeout` even without packets (false: ended).
  /// Reads what is there, then returns. Throws CaptureError.
  bool dispatch(const std::function<void(const PacketView&)>& f);
  /// Live: hands out every packet the kernel holds already, without
  /// waiting for more (at stop, so that nothing captured is left unread).
  void drain(const std::function<void(const PacketView&)>& f);
  /// Any thread / signal handler: makes loop() return.
  void break_loop() noexcept;

  struct KernelStats {
    std::uint64_t received = 0;
    std::uint64_t dropped = 0;  ///< by the kernel: the buffer was full
    std::uint64_t droppedByInterface = 0;
  };
  /// Live captures only (zeros for files).
  KernelStats stats() const;

 private:
  struct Impl;
  explicit PcapSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace varanus::capture
