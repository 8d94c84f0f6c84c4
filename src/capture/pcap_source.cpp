// The only file of the capture library that does I/O: libpcap.
#include "varanus/capture/pcap_source.hpp"

#include <pcap/pcap.h>

#include <cstdio>
#include <utility>

namespace varanus::capture {

struct PcapSource::Impl {
  pcap_t* p = nullptr;
  bool live = false;
  bool nanos = false;
  ~Impl() {
    if (p) pcap_close(p);
  }
};

namespace {

struct Callback {
  const std::function<void(const PacketView&)>* f;
  bool nanos;
};

void on_packet(u_char* user, const pcap_pkthdr* h, const u_char* bytes) {
  const auto* cb = reinterpret_cast<const Callback*>(user);
  PacketView v;
  v.time = std::chrono::seconds(h->ts.tv_sec) +
           (cb->nanos ? std::chrono::nanoseconds(h->ts.tv_usec)
                      : std::chrono::nanoseconds(std::chrono::microseconds(h->ts.tv_usec)));
  v.data = std::span<const std::uint8_t>(bytes, h->caplen);
  v.wireLength = h->len;
  (*cb->f)(v);
}

}  // namespace

PcapSource::PcapSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PcapSource::PcapSource(PcapSource&&) noexcept = default;
PcapSource& PcapSource::operator=(PcapSource&&) noexcept = default;
PcapSource::~PcapSource() = default;

PcapSource PcapSource::open_file(const std::string& path) {
  char err[PCAP_ERRBUF_SIZE] = {};
  auto impl = std::make_unique<Impl>();
  impl->p = pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, err);
  if (!impl->p) throw CaptureError(path + ": " + err);
  impl->nanos = true;
  return PcapSource(std::move(impl));
}

PcapSource PcapSource::open_buffer(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) throw CaptureError("empty capture");
  // fmemopen does not write to a buffer opened "rb".
  FILE* f = fmemopen(const_cast<std::uint8_t*>(bytes.data()), bytes.size(), "rb");
  if (!f) throw CaptureError("fmemopen failed");
  char err[PCAP_ERRBUF_SIZE] = {};
  auto impl = std::make_unique<Impl>();
  impl->p = pcap_fopen_offline_with_tstamp_precision(f, PCAP_TSTAMP_PRECISION_NANO, err);
  if (!impl->p) {
    std::fclose(f);
    throw CaptureError(err);
  }
  impl->nanos = true;
  return PcapSource(std::move(impl));
}

PcapSource PcapSource::open_live(const LiveOptions& o) {
  char err[PCAP_ERRBUF_SIZE] = {};
  auto impl = std::make_unique<Impl>();
  impl->live = true;
  impl->p = pcap_create(o.interface.c_str(), err);
  if (!impl->p) throw CaptureError("interface " + o.interface + ": " + err);
  pcap_set_snaplen(impl->p, o.snapLength);
  pcap_set_buffer_size(impl->p, o.bufferBytes);
  pcap_set_timeout(impl->p, 100);
  pcap_set_immediate_mode(impl->p, 1);
  if (pcap_set_tstamp_precision(impl->p, PCAP_TSTAMP_PRECISION_NANO) == 0) impl->nanos = true;
  const int rc = pcap_activate(impl->p);
  if (rc < 0) {
    std::string why = rc == PCAP_ERROR ? pcap_geterr(impl->p) : pcap_statustostr(rc);
    if (rc == PCAP_ERROR_PERM_DENIED)
      why +=
          " (capturing needs CAP_NET_RAW: run as root, or grant it with "
          "`setcap cap_net_raw,cap_net_admin+eip $(command -v varanus)`)";
    throw CaptureError("interface " + o.interface + ": " + why);
  }
  if (!o.filter.empty()) {
    bpf_program prog{};
    if (pcap_compile(impl->p, &prog, o.filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0)
      throw CaptureError("--bpf \"" + o.filter + "\": " + pcap_geterr(impl->p));
    const int set = pcap_setfilter(impl->p, &prog);
    pcap_freecode(&prog);
    if (set != 0) throw CaptureError("--bpf: " + std::string(pcap_geterr(impl->p)));
  }
  return PcapSource(std::move(impl));
}

int PcapSource::link_type() const noexcept {
  return pcap_datalink(impl_->p);
}

std::uint64_t PcapSource::loop(const std::function<void(const PacketView&)>& f) {
  Callback cb{&f, impl_->nanos};
  std::uint64_t n = 0;
  for (;;) {
    const int rc = pcap_dispatch(impl_->p, 4096, on_packet, reinterpret_cast<u_char*>(&cb));
    if (rc > 0) {
      n += static_cast<std::uint64_t>(rc);
      continue;
    }
    if (rc == 0 && impl_->live) continue;
    if (rc == 0 || rc == PCAP_ERROR_BREAK) return n;
    throw CaptureError(pcap_geterr(impl_->p));
  }
}

bool PcapSource::dispatch(const std::function<void(const PacketView&)>& f) {
  Callback cb{&f, impl_->nanos};
  const int rc = pcap_dispatch(impl_->p, -1, on_packet, reinterpret_cast<u_char*>(&cb));
  if (rc == PCAP_ERROR_BREAK) return false;
  if (rc < 0) throw CaptureError(pcap_geterr(impl_->p));
  return impl_->live || rc > 0;
}

void PcapSource::drain(const std::function<void(const PacketView&)>& f) {
  char err[PCAP_ERRBUF_SIZE] = {};
  if (pcap_setnonblock(impl_->p, 1, err) != 0) return;
  Callback cb{&f, impl_->nanos};
  // A break_loop() not yet seen ends the first call (and is then cleared).
  for (int breaks = 0;;) {
    const int rc = pcap_dispatch(impl_->p, -1, on_packet, reinterpret_cast<u_char*>(&cb));
    if (rc > 0) continue;
    if (rc == PCAP_ERROR_BREAK && ++breaks == 1) continue;
    return;
  }
}

void PcapSource::break_loop() noexcept {
  pcap_breakloop(impl_->p);
}

PcapSource::KernelStats PcapSource::stats() const {
  KernelStats k;
  if (!impl_->live) return k;
  pcap_stat s{};
  if (pcap_stats(impl_->p, &s) != 0) return k;
  k.received = s.ps_recv;
  k.dropped = s.ps_drop;
  k.droppedByInterface = s.ps_ifdrop;
  return k;
}

}  // namespace varanus::capture
