#include "bench/loadgen/fleet.h"

#include "bench/loadgen/monotonic_ns.h"
#include "common/hash.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "bench/loadgen/dtls_keys.h"
#include "codec/code.h"
#include "codec/encoder.h"
#include "codec/message.h"

namespace coapgate::loadgen {
namespace {

// The cap a closed loop starts from; it grows by one per answer.
constexpr uint64_t kInitialCap = 64;
// New exchanges per loop round at most, so that receiving keeps up with sending.
constexpr unsigned kMaxAdmitPerRound = 16 * kBatchSize;
// recvmmsg calls per socket per round, so one busy socket cannot starve the timers.
constexpr unsigned kDrainRounds = 8;
// An open loop more than this far behind its schedule drops the excess.
constexpr double kMaxBacklogS = 0.010;
constexpr size_t kLogFlushBytes = 60 * 1024;
constexpr uint32_t kWorkerSocket = UINT32_MAX;
constexpr int kDeviceSocketBuffer = 1 << 20;
// DTLS: the largest record the send path takes (wolfSSL's WOLFSSL_MAX_MTU in dtls/).
constexpr size_t kMaxRecord = 1500;
// A handshake flight unanswered this long is resent (RFC 6347 §4.2.4.1: 1 s initially).
constexpr uint32_t kFlightTimeoutMs = 1000;

// A device's MID base and token salt from (seed, device index), so they need no per-device
// storage.
uint64_t Mix(uint64_t x) noexcept { return Mix64(x); }

// Per device: MIDs count up from a random base (so two devices rarely share one), tokens are
// the sequence number XOR a random salt (unique per device for 2^32 requests; the sequence is
// recovered from a reply's token, which is how late duplicates are recognised).
uint16_t MidOf(uint64_t salt, uint32_t seq) noexcept {
  return static_cast<uint16_t>(salt + seq);
}
uint32_t TokenOf(uint64_t salt, uint32_t seq) noexcept {
  return static_cast<uint32_t>(salt >> 32) ^ seq;
}

}  // namespace

void FleetCounters::Add(const FleetCounters& o) noexcept {
  sent += o.sent;
  retransmissions += o.retransmissions;
  answered += o.answered;
  answered_in_load += o.answered_in_load;
  timeouts += o.timeouts;
  duplicates += o.duplicates;
  empty_acks += o.empty_acks;
  unmatched += o.unmatched;
  foreign += o.foreign;
  malformed += o.malformed;
  send_errors += o.send_errors;
  schedule_missed += o.schedule_missed;
  unfinished += o.unfinished;
  rst += o.rst;
  for (size_t i = 0; i < codes.size(); ++i) codes[i] += o.codes[i];
}

void DtlsCounters::Add(const DtlsCounters& o) noexcept {
  handshakes += o.handshakes;
  handshake_failures += o.handshake_failures;
  handshake_timeouts += o.handshake_timeouts;
  handshake_retransmissions += o.handshake_retransmissions;
  handshakes_unfinished += o.handshakes_unfinished;
  no_key += o.no_key;
  established += o.established;
  sessions_lost += o.sessions_lost;
  write_errors += o.write_errors;
  oversize += o.oversize;
  without_session += o.without_session;
}

Result<std::unique_ptr<FleetWorker>, std::string> FleetWorker::Create(const FleetConfig& config,
                                                                      unsigned index) {
  const uint32_t total = config.plan->devices();
  const uint32_t devices = total / config.threads + (index < total % config.threads ? 1 : 0);
  std::unique_ptr<FleetWorker> w(new FleetWorker(config, index, devices));
  w->epoll_ = epoll_create1(EPOLL_CLOEXEC);
  if (w->epoll_ < 0) return Fail("epoll_create1: " + std::string(std::strerror(errno)));
  const auto watch = [&](int fd, uint32_t tag) -> Result<bool, std::string> {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u32 = tag;
    if (epoll_ctl(w->epoll_, EPOLL_CTL_ADD, fd, &event) != 0) {
      return Fail("epoll_ctl: " + std::string(std::strerror(errno)));
    }
    return true;
  };
  if (config.dtls_keys != nullptr) {
    if (config.plan->ipv6()) return Fail("DTLS mode is IPv4 only");
    w->ctx_ = wolfSSL_CTX_new(wolfDTLSv1_2_client_method());
    if (w->ctx_ == nullptr ||
        wolfSSL_CTX_set_cipher_list(w->ctx_, config.cipher.c_str()) != WOLFSSL_SUCCESS) {
      return Fail("cipher '" + config.cipher + "' not available in this wolfSSL build");
    }
    wolfSSL_CTX_set_psk_client_callback(w->ctx_, &FleetWorker::PskCallback);
    wolfSSL_CTX_SetIORecv(w->ctx_, &FleetWorker::ReceiveCallback);
    wolfSSL_CTX_SetIOSend(w->ctx_, &FleetWorker::SendCallback);
    wolfSSL_CTX_set_session_cache_mode(w->ctx_, WOLFSSL_SESS_CACHE_OFF);  // full handshakes
    wolfSSL_CTX_set_group_messages(w->ctx_);  // a flight in one datagram
    w->tls_.resize(devices);
    w->plain_.resize(std::max<size_t>(config.request->size(), ReceiveBatch::kMaxDatagram));
  }
  if (config.plan->ipv6()) {
    w->device_fds_.reserve(devices);
    for (uint32_t i = 0; i < devices; ++i) {
      // A device socket holds at most W replies: no need for the worker socket's buffer.
      auto fd = OpenIpv6DeviceSocket(std::min(config.buffer_bytes, kDeviceSocketBuffer));
      if (!fd) return Fail("device " + std::to_string(w->Global(i)) + ": " + fd.error());
      w->device_fds_.push_back(*fd);
      if (auto ok = watch(*fd, i); !ok) return Fail(ok.error());
    }
  } else {
    auto fd = OpenIpv4WorkerSocket(config.buffer_bytes);
    if (!fd) return Fail(fd.error());
    w->fd_ = *fd;
    if (auto ok = watch(w->fd_, kWorkerSocket); !ok) return Fail(ok.error());
  }
  return w;
}

FleetWorker::FleetWorker(const FleetConfig& config, unsigned index, uint32_t devices)
    : config_(config),
      index_(index),
      window_(config.window),
      open_loop_(config.rate > 0),
      policy_(config.retransmit, Mix(config.seed ^ (0x9e3779b97f4a7c15ULL * (index + 1)))),
      devices_(devices),
      slots_(size_t{devices} * config.window, Slot{0, 0, 0, 0, 0, kFree}),
      wheel_(devices * config.window),
      ready_(devices),
      send_(config.target, config.target_length,
            config.dtls_keys != nullptr ? std::max(kMaxRecord, config.request->size())
                                        : config.request->size()) {
  // Every device starts with a free slot, in index order.
  for (uint32_t i = 0; i < devices; ++i) PushReady(i);
  cap_ = open_loop_ ? UINT64_MAX : std::min(config.in_flight, kInitialCap);
  log_.reserve(config.ack_log_fd >= 0 ? kLogFlushBytes + 64 : 0);
}

FleetWorker::~FleetWorker() {
  for (TlsDevice& t : tls_) {
    if (t.ssl != nullptr) wolfSSL_free(t.ssl);
  }
  if (ctx_ != nullptr) wolfSSL_CTX_free(ctx_);
  for (const int fd : device_fds_) close(fd);
  if (fd_ >= 0) close(fd_);
  if (epoll_ >= 0) close(epoll_);
}

int FleetWorker::receive_buffer_bytes() const noexcept {
  return ReceiveBufferBytes(device_fds_.empty() ? fd_ : device_fds_.front());
}

size_t FleetWorker::state_bytes() const noexcept {
  return devices_.capacity() * sizeof(Device) + slots_.capacity() * sizeof(Slot) +
         size_t{slots_.size()} * 12 + ready_.capacity() * sizeof(uint32_t) +
         device_fds_.capacity() * sizeof(int) + tls_.capacity() * sizeof(TlsDevice);
}

void FleetWorker::Run(uint64_t start_ns, uint64_t end_ns) noexcept {
  start_ns_ = start_ns;
  end_ns_ = end_ns;
  std::array<epoll_event, 256> events;
  uint64_t now = std::max(MonotonicNs(), start_ns);
  for (;;) {
    if (config_.stop->load(std::memory_order_relaxed)) break;
    if (loading_ && (now >= end_ns_ || counters_.sent >= config_.max_requests ||
                     (config_.end_load != nullptr &&
                      config_.end_load->load(std::memory_order_relaxed)))) {
      loading_ = false;
      load_end_ns_ = now;
      counters_.answered_in_load = counters_.answered;
    }
    if (!loading_ && (in_flight_ == 0 || now >= load_end_ns_ + config_.drain_ns)) break;

    const uint32_t now_ms = NowMs(now);
    wheel_.Advance(now_ms, [&](uint32_t id) { OnExpired(id, now_ms); });
    if (loading_) Admit(now);
    send_.Flush();
    Publish();

    bool received = false;
    if (fd_ >= 0) received = DrainSocket(fd_, kWorkerSocket, &now);
    if (!received) {
      // Nothing queued: sleep until a reply comes or the next millisecond (timers, pacing).
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 1);
      now = MonotonicNs();
      for (int i = 0; i < n; ++i) {
        const uint32_t tag = events[static_cast<size_t>(i)].data.u32;
        DrainSocket(tag == kWorkerSocket ? fd_ : device_fds_[tag], tag, &now);
      }
    }
    send_.Flush();  // empty ACKs for separate responses
    now = MonotonicNs();
  }
  if (loading_) {  // stopped by a signal
    load_end_ns_ = now;
    counters_.answered_in_load = counters_.answered;
  }
  send_.Flush();
  if (dtls_mode()) {  // close_notify, so that the server's session table empties
    for (uint32_t local = 0; local < tls_.size(); ++local) FreeSession(local, true);
    send_.Flush();
  }
  FlushLog();
  counters_.unfinished = in_flight_;
  counters_.send_errors = send_.send_errors();
  stop_ns_ = MonotonicNs();
  Publish();
}

void FleetWorker::Admit(uint64_t now) noexcept {
  if (!open_loop_) {
    for (unsigned n = 0; n < kMaxAdmitPerRound && in_flight_ < cap_ && ready_count_ > 0 &&
                         counters_.sent < config_.max_requests;
         ++n) {
      const uint32_t local = ready_[ready_head_];
      ready_head_ = ready_head_ + 1 == ready_.size() ? 0 : ready_head_ + 1;
      --ready_count_;
      devices_[local].queued = 0;
      StartExchange(local, now);
    }
    return;
  }
  const double elapsed_s = static_cast<double>(now - start_ns_) / 1e9;
  const auto due = static_cast<uint64_t>(elapsed_s * config_.rate);
  if (due <= scheduled_) return;
  uint64_t behind = due - scheduled_;
  const auto max_backlog = std::max<uint64_t>(1, static_cast<uint64_t>(config_.rate * kMaxBacklogS));
  if (behind > max_backlog) {
    counters_.schedule_missed += behind - max_backlog;
    scheduled_ += behind - max_backlog;
    behind = max_backlog;
  }
  for (; behind > 0 && counters_.sent < config_.max_requests; --behind) {
    ++scheduled_;
    if (ready_count_ == 0) {
      ++counters_.schedule_missed;
      continue;
    }
    const uint32_t local = ready_[ready_head_];
    ready_head_ = ready_head_ + 1 == ready_.size() ? 0 : ready_head_ + 1;
    --ready_count_;
    devices_[local].queued = 0;
    StartExchange(local, now);
  }
}

void FleetWorker::PushReady(uint32_t local) noexcept {
  if (!tls_.empty() && tls_[local].state != Tls::kEstablished) return;
  Device& d = devices_[local];
  if (d.queued || d.busy >= window_) return;
  size_t tail = ready_head_ + ready_count_;
  if (tail >= ready_.size()) tail -= ready_.size();
  ready_[tail] = local;
  ++ready_count_;
  d.queued = 1;
}

void FleetWorker::StartExchange(uint32_t local, uint64_t now) noexcept {
  Device& d = devices_[local];
  const uint32_t first = local * window_;
  uint32_t id = first;
  while (slots_[id].state != kFree) ++id;  // REQUIRES: d.busy < window_, so one is free
  Slot& s = slots_[id];
  const uint64_t salt = Mix(config_.seed ^ Global(local));
  s.first_sent_ns = now;
  s.seq = d.next_seq++;
  s.wait_ms = policy_.InitialWaitMs();
  s.mid = MidOf(salt, s.seq);
  s.retransmits = 0;
  s.state = kWaitReply;
  wheel_.Schedule(id, NowMs(now) + s.wait_ms);
  Transmit(id);
  ++d.busy;
  ++in_flight_;
  ++counters_.sent;
  PushReady(local);  // W > 1: it goes round again behind the others
}

void FleetWorker::Transmit(uint32_t slot_id) noexcept {
  const uint32_t local = slot_id / window_;
  const uint32_t global = Global(local);
  const Slot& s = slots_[slot_id];
  const uint64_t salt = Mix(config_.seed ^ global);
  if (dtls_mode()) {
    config_.request->Write(plain_, global, s.seq, s.mid, TokenOf(salt, s.seq));
    WriteRecord(local, std::span(plain_).first(config_.request->size()));
    return;
  }
  const std::span<std::byte> out = send_.Begin(FdOf(local), SourceOf(global));
  config_.request->Write(out, global, s.seq, s.mid, TokenOf(salt, s.seq));
  send_.Commit(config_.request->size());
}

void FleetWorker::OnExpired(uint32_t slot_id, uint32_t now_ms) noexcept {
  Slot& s = slots_[slot_id];
  if (s.state == kWaitReply && config_.confirmable && policy_.MayRetransmit(s.retransmits)) {
    ++s.retransmits;
    s.wait_ms = RetransmitPolicy::NextWaitMs(s.wait_ms);
    wheel_.Schedule(slot_id, now_ms + s.wait_ms);
    Transmit(slot_id);
    ++counters_.retransmissions;
    return;
  }
  ++counters_.timeouts;
  if (config_.ack_log_fd >= 0 && config_.log_all) {
    LogOutcome(Global(slot_id / window_), s, "timeout");
  }
  Release(slot_id);
}

void FleetWorker::Release(uint32_t slot_id) noexcept {
  slots_[slot_id].state = kFree;
  const uint32_t local = slot_id / window_;
  --devices_[local].busy;
  --in_flight_;
  PushReady(local);
}

void FleetWorker::Complete(uint32_t slot_id, uint8_t code, bool rst, uint64_t now) noexcept {
  const Slot& s = slots_[slot_id];
  latency_.Record(now - s.first_sent_ns);
  if (rst) {
    ++counters_.rst;
    if (config_.ack_log_fd >= 0 && config_.log_all) LogOutcome(Global(slot_id / window_), s, "RST");
  } else {
    ++counters_.codes[code];
    if (config_.ack_log_fd >= 0 && (codec::CodeClass(code) == 2 || config_.log_all)) {
      char text[8];
      std::snprintf(text, sizeof text, "%u.%02u", codec::CodeClass(code), codec::CodeDetail(code));
      LogOutcome(Global(slot_id / window_), s, text);
    }
  }
  ++counters_.answered;
  wheel_.Cancel(slot_id);
  Release(slot_id);
  if (cap_ < config_.in_flight) ++cap_;
}

bool FleetWorker::DrainSocket(int fd, uint32_t local, uint64_t* now) noexcept {
  bool any = false;
  for (unsigned round = 0; round < kDrainRounds; ++round) {
    const unsigned n = receive_.Receive(fd);
    if (n == 0) break;
    any = true;
    *now = MonotonicNs();
    for (unsigned i = 0; i < n; ++i) {
      const ReceiveBatch::Datagram d = receive_.Get(i);
      if (!SameEndpoint(*d.source, config_.target)) {
        ++counters_.foreign;
        continue;
      }
      if (d.truncated) {
        ++counters_.malformed;
        continue;
      }
      uint32_t device_local = local;
      if (local == kWorkerSocket) {  // IPv4: the destination address names the device
        const auto global = config_.plan->DeviceOf(d.destination_ipv4);
        if (!global || *global % config_.threads != index_) {
          ++counters_.unmatched;
          continue;
        }
        device_local = *global / config_.threads;
      }
      if (dtls_mode()) {
        FeedDtls(device_local, d.bytes, *now);
      } else {
        OnDatagram(device_local, d.bytes, *now);
      }
    }
    if (n < kBatchSize) break;
  }
  return any;
}

void FleetWorker::OnDatagram(uint32_t local, std::span<const std::byte> bytes,
                             uint64_t now) noexcept {
  const auto message = codec::ParseMessage(bytes);
  if (!message) {
    ++counters_.malformed;
    return;
  }
  const Device& d = devices_[local];
  const uint64_t salt = Mix(config_.seed ^ Global(local));
  const bool has_token = message->token.size() == kTokenLength;
  uint32_t token = 0;
  if (has_token) std::memcpy(&token, message->token.data(), kTokenLength);
  const uint32_t first = local * window_;

  if (message->type == codec::MessageType::kAcknowledgement ||
      message->type == codec::MessageType::kReset) {
    for (uint32_t id = first; id < first + window_; ++id) {
      Slot& s = slots_[id];
      if (s.state == kFree || s.mid != message->message_id) continue;
      if (message->type == codec::MessageType::kReset) {
        Complete(id, 0, true, now);
        return;
      }
      if (message->code == codec::code::kEmpty) {
        if (s.state == kWaitSeparate) break;  // a duplicate empty ACK
        // RFC 7252 §5.2.2: stop retransmitting; the response follows, matched by token.
        s.state = kWaitSeparate;
        wheel_.Cancel(id);
        wheel_.Schedule(id, NowMs(now) + policy_.MaxTransmitWaitMs());
        ++counters_.empty_acks;
        return;
      }
      if (!has_token || token != TokenOf(salt, s.seq)) continue;  // the MID came round again
      Complete(id, message->code, false, now);
      return;
    }
    Stale(d, has_token, token, salt);
    return;
  }

  // A separate response (CON or NON) or the NON response to a NON request: by token.
  if (message->type == codec::MessageType::kConfirmable) {
    SendEmptyAck(local, message->message_id);  // owed even for a duplicate (§4.2)
  }
  if (has_token && codec::IsResponseCode(message->code)) {
    const uint32_t seq = token ^ static_cast<uint32_t>(salt >> 32);
    for (uint32_t id = first; id < first + window_; ++id) {
      if (slots_[id].state != kFree && slots_[id].seq == seq) {
        Complete(id, message->code, false, now);
        return;
      }
    }
  }
  Stale(d, has_token, token, salt);
}

// A reply no open exchange takes: a duplicate if its token names a request this device has
// sent (a retransmission's second answer, or an answer after the exchange gave up).
void FleetWorker::Stale(const Device& device, bool has_token, uint32_t token,
                        uint64_t salt) noexcept {
  if (has_token && (token ^ static_cast<uint32_t>(salt >> 32)) < device.next_seq) {
    ++counters_.duplicates;
  } else {
    ++counters_.unmatched;
  }
}

void FleetWorker::SendEmptyAck(uint32_t local, uint16_t mid) noexcept {
  codec::OutgoingMessage ack;
  ack.type = codec::MessageType::kAcknowledgement;
  ack.code = codec::code::kEmpty;
  ack.message_id = mid;
  if (dtls_mode()) {
    std::array<std::byte, 4> plain;
    if (const auto size = codec::EncodeMessage(ack, plain)) {
      WriteRecord(local, std::span(plain).first(*size));
    }
    return;
  }
  const std::span<std::byte> out = send_.Begin(FdOf(local), SourceOf(Global(local)));
  if (const auto size = codec::EncodeMessage(ack, out)) send_.Commit(*size);
}

void FleetWorker::LogOutcome(uint32_t global, const Slot& s, const char* outcome) noexcept {
  char line[64];
  const int n = config_.log_all
                    ? std::snprintf(line, sizeof line, "%u %u %s %lu\n", global, s.seq, outcome,
                                    static_cast<unsigned long>(s.first_sent_ns / 1'000'000))
                    : std::snprintf(line, sizeof line, "%u %u %s\n", global, s.seq, outcome);
  log_.append(line, static_cast<size_t>(n));
  if (log_.size() >= kLogFlushBytes) FlushLog();
}

// One write of whole lines to an O_APPEND file: workers' chunks never interleave mid-line.
void FleetWorker::FlushLog() noexcept {
  size_t done = 0;
  while (done < log_.size()) {
    const ssize_t n = write(config_.ack_log_fd, log_.data() + done, log_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::fprintf(stderr, "coapgate-loadgen: --ack-log: %s\n", std::strerror(errno));
      break;
    }
    done += static_cast<size_t>(n);
  }
  log_.clear();
}

void FleetWorker::Publish() noexcept {
  progress_.sent.store(counters_.sent, std::memory_order_relaxed);
  progress_.answered.store(counters_.answered, std::memory_order_relaxed);
  progress_.retransmissions.store(counters_.retransmissions, std::memory_order_relaxed);
  progress_.timeouts.store(counters_.timeouts, std::memory_order_relaxed);
  progress_.in_flight.store(in_flight_, std::memory_order_relaxed);
  progress_.handshakes.store(dtls_.handshakes, std::memory_order_relaxed);
  progress_.handshake_failures.store(dtls_.handshake_failures + dtls_.handshake_timeouts,
                                     std::memory_order_relaxed);
}

// ---- DTLS ----------------------------------------------------------------------------------

void FleetWorker::Handshake(uint64_t deadline_ns) noexcept {
  start_ns_ = MonotonicNs();
  HandshakeLoop(deadline_ns, false);
  // The ready FIFO again, with the established devices only (PushReady skips the others).
  ready_head_ = 0;
  ready_count_ = 0;
  for (Device& d : devices_) d.queued = 0;
  for (uint32_t local = 0; local < devices_.size(); ++local) {
    if (tls_[local].state == Tls::kEstablished) {
      ++dtls_.established;
      PushReady(local);
    }
  }
  Publish();
}

void FleetWorker::Churn(uint64_t end_ns) noexcept {
  start_ns_ = MonotonicNs();
  load_end_ns_ = end_ns;
  HandshakeLoop(end_ns, true);
  load_end_ns_ = std::min(end_ns, MonotonicNs());
  stop_ns_ = MonotonicNs();
  Publish();
}

void FleetWorker::HandshakeLoop(uint64_t end_ns, bool churn) noexcept {
  churn_ = churn;
  churn_end_ns_ = end_ns;
  to_start_.clear();
  to_start_head_ = 0;
  for (uint32_t local = 0; local < devices_.size(); ++local) {
    if ((*config_.dtls_keys)[Global(local)].key.empty()) {
      ++dtls_.no_key;
    } else {
      to_start_.push_back(local);
    }
  }
  std::array<epoll_event, 16> events;
  const uint64_t timeout_ms = config_.handshake_timeout_ms;
  uint64_t now = MonotonicNs();
  uint32_t last_scan_ms = NowMs(now);
  for (;;) {
    if (config_.stop->load(std::memory_order_relaxed) || now >= end_ns) break;
    if (handshaking_.empty() && to_start_head_ == to_start_.size()) break;
    while (handshaking_.size() < config_.handshake_concurrency &&
           to_start_head_ < to_start_.size()) {
      StartHandshake(to_start_[to_start_head_++], now);
    }
    if (to_start_head_ > 4096 && to_start_head_ * 2 > to_start_.size()) {  // Churn: compact
      to_start_.erase(to_start_.begin(), to_start_.begin() + static_cast<long>(to_start_head_));
      to_start_head_ = 0;
    }
    send_.Flush();
    Publish();
    if (!DrainSocket(fd_, kWorkerSocket, &now)) {
      epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 1);
    }
    send_.Flush();
    now = MonotonicNs();
    const uint32_t now_ms = NowMs(now);
    if (now_ms - last_scan_ms >= 10) {  // timeouts and flight retransmissions
      last_scan_ms = now_ms;
      for (const uint32_t local : handshaking_) {
        TlsDevice& t = tls_[local];
        if (t.state != Tls::kHandshaking) continue;
        if (now - t.start_ns >= timeout_ms * 1'000'000) {
          ++dtls_.handshake_timeouts;
          FreeSession(local, false);
          if (churn_) to_start_.push_back(local);
        } else if (now_ms - t.flight_ms >= kFlightTimeoutMs) {
          ++dtls_.handshake_retransmissions;
          t.flight_ms = now_ms;
          current_ = local;
          if (wolfSSL_dtls_got_timeout(t.ssl) != WOLFSSL_SUCCESS) {
            ++dtls_.handshake_failures;
            FreeSession(local, false);
            if (churn_) to_start_.push_back(local);
          }
        }
      }
    }
    std::erase_if(handshaking_,
                  [&](uint32_t local) { return tls_[local].state != Tls::kHandshaking; });
  }
  for (const uint32_t local : handshaking_) {
    if (tls_[local].state != Tls::kHandshaking) continue;
    if (churn) {
      ++dtls_.handshakes_unfinished;
    } else {
      ++dtls_.handshake_timeouts;
    }
    FreeSession(local, false);
  }
  handshaking_.clear();
  if (churn) {
    for (uint32_t local = 0; local < tls_.size(); ++local) FreeSession(local, true);
  }
  send_.Flush();
}

void FleetWorker::StartHandshake(uint32_t local, uint64_t now) noexcept {
  TlsDevice& t = tls_[local];
  t.ssl = wolfSSL_new(ctx_);
  if (t.ssl == nullptr) {
    ++dtls_.handshake_failures;
    return;
  }
  wolfSSL_SetIOReadCtx(t.ssl, this);
  wolfSSL_SetIOWriteCtx(t.ssl, this);
  wolfSSL_dtls_set_using_nonblock(t.ssl, 1);
  t.state = Tls::kHandshaking;
  t.start_ns = now;
  t.flight_ms = NowMs(now);
  handshaking_.push_back(local);
  Advance(local, now);
}

// Runs the handshake as far as input_ (the datagram being fed, if any) allows.
void FleetWorker::Advance(uint32_t local, uint64_t now) noexcept {
  TlsDevice& t = tls_[local];
  current_ = local;
  flight_sent_ = false;
  const int r = wolfSSL_connect(t.ssl);
  input_ = {};
  if (flight_sent_) t.flight_ms = NowMs(now);
  if (r == WOLFSSL_SUCCESS) {
    ++dtls_.handshakes;
    handshake_latency_.Record(now - t.start_ns);
    t.state = Tls::kEstablished;
    if (churn_) {
      FreeSession(local, true);  // close_notify; a new handshake from the same address next
      if (now < churn_end_ns_) to_start_.push_back(local);
    }
    return;
  }
  const int e = wolfSSL_get_error(t.ssl, r);
  if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE) return;
  ++dtls_.handshake_failures;
  FreeSession(local, false);
  if (churn_ && now < churn_end_ns_) to_start_.push_back(local);
}

void FleetWorker::FreeSession(uint32_t local, bool notify) noexcept {
  TlsDevice& t = tls_[local];
  if (t.ssl == nullptr) return;
  current_ = local;
  input_ = {};
  if (notify && t.state == Tls::kEstablished) wolfSSL_shutdown(t.ssl);
  wolfSSL_free(t.ssl);
  t.ssl = nullptr;
  t.state = Tls::kNone;
}

void FleetWorker::FeedDtls(uint32_t local, std::span<const std::byte> bytes,
                           uint64_t now) noexcept {
  TlsDevice& t = tls_[local];
  if (t.ssl == nullptr) {  // the server's close_notify after ours, a flight after a failure
    ++dtls_.without_session;
    return;
  }
  input_ = bytes;
  if (t.state == Tls::kHandshaking) {
    Advance(local, now);
    return;
  }
  for (;;) {
    current_ = local;
    const int n = wolfSSL_read(t.ssl, plain_.data(), static_cast<int>(plain_.size()));
    if (n > 0) {
      OnDatagram(local, std::span<const std::byte>(plain_).first(static_cast<size_t>(n)), now);
      continue;
    }
    const int e = wolfSSL_get_error(t.ssl, n);
    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE) break;
    // close_notify from the server, or a fatal error: the session is gone; the device's open
    // exchanges time out and it is not scheduled again.
    ++dtls_.sessions_lost;
    FreeSession(local, false);
    break;
  }
  input_ = {};
}

void FleetWorker::WriteRecord(uint32_t local, std::span<const std::byte> plain) noexcept {
  TlsDevice& t = tls_[local];
  if (t.state != Tls::kEstablished) {
    ++dtls_.write_errors;
    return;
  }
  current_ = local;
  const int size = static_cast<int>(plain.size());
  if (wolfSSL_write(t.ssl, plain.data(), size) != size) ++dtls_.write_errors;
}

// wolfSSL custom I/O: the datagram being fed, once; then "would block".
int FleetWorker::ReceiveCallback(WOLFSSL*, char* buffer, int size, void* context) noexcept {
  auto* w = static_cast<FleetWorker*>(context);
  if (w->input_.empty()) return WOLFSSL_CBIO_ERR_WANT_READ;
  const size_t n = std::min(w->input_.size(), static_cast<size_t>(size));
  std::memcpy(buffer, w->input_.data(), n);
  w->input_ = {};
  return static_cast<int>(n);
}

// Every record leaves through the worker's batch, from the current device's address. A
// datagram lost here is a lost datagram to DTLS, never an error to wolfSSL.
int FleetWorker::SendCallback(WOLFSSL*, char* buffer, int size, void* context) noexcept {
  auto* w = static_cast<FleetWorker*>(context);
  w->flight_sent_ = true;
  if (static_cast<size_t>(size) > kMaxRecord) {
    ++w->dtls_.oversize;
    return size;
  }
  const std::span<std::byte> out =
      w->send_.Begin(w->fd_, w->SourceOf(w->Global(w->current_)));
  std::memcpy(out.data(), buffer, static_cast<size_t>(size));
  w->send_.Commit(static_cast<size_t>(size));
  return size;
}

unsigned int FleetWorker::PskCallback(WOLFSSL* ssl, const char*, char* identity,
                                      unsigned int identity_max, unsigned char* key,
                                      unsigned int key_max) noexcept {
  const auto* w = static_cast<const FleetWorker*>(wolfSSL_GetIOReadCtx(ssl));
  const DtlsCredential& c = (*w->config_.dtls_keys)[w->Global(w->current_)];
  if (c.identity.size() + 1 > identity_max || c.key.size() > key_max) return 0;
  std::memcpy(identity, c.identity.c_str(), c.identity.size() + 1);
  std::memcpy(key, c.key.data(), c.key.size());
  return static_cast<unsigned int>(c.key.size());
}

}  // namespace coapgate::loadgen
