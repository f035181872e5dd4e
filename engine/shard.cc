#include "engine/shard.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <random>

#include "codec/code.h"
#include "codec/encoder.h"
#include "bootstrap/bootstrap_reply.h"
#include "bootstrap/bootstrap_service.h"
#include "registry/psk_store.h"

namespace coapgate::engine {
namespace {

// Longest sleep of an idle shard: bounds how late it notices a stop request, a registry
// swap or an expired dedup entry.
constexpr int kIdleWaitMs = 100;
constexpr size_t kExpiryPerTurn = 4096;

uint64_t MonotonicMs() noexcept {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

uint64_t WallMs() noexcept {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

Result<std::unique_ptr<Shard>, std::string> Shard::Create(ShardOptions options) {
  auto shard = std::unique_ptr<Shard>(new Shard(std::move(options), nullptr));
  // The backend is built on the shard's own thread: an io_uring belongs to the task that
  // submits to it (its task work runs there), so a ring set up here on the control thread
  // would have this thread do the shard's receive work.
  std::promise<std::string> built;
  std::future<std::string> result = built.get_future();
  shard->thread_ = std::thread(
      [raw = shard.get(), promise = std::move(built)]() mutable { raw->ThreadMain(promise); });
  const std::string error = result.get();
  if (!error.empty()) {
    shard->thread_.join();
    // The sockets stay the caller's on failure (it may retry with another backend).
    shard->options_.sockets.clear();
    return Fail(error);
  }
  return shard;
}

void Shard::ThreadMain(std::promise<std::string>& built) {
  // Named for top -H and for the benchmarks, which read each shard's CPU time from /proc.
  const std::string name = "shard-" + std::to_string(options_.index);
  pthread_setname_np(pthread_self(), name.c_str());
  if (options_.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(options_.cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort
  }
  net::DatagramIoOptions io_options;
  io_options.sockets = options_.sockets;
  // Headroom over max_payload for the header, token and options (Uri-Query alone may take
  // 255 bytes): a datagram longer than this is cut short and answered 4.13.
  io_options.buffer_size = options_.max_payload + 1024;
  io_options.wake_fds = {handoff_.wake_fd()};
  auto io = options_.io == ShardIo::kIoUring ? net::MakeUringIo(io_options)
                                             : net::MakeRecvmmsgIo(io_options);
  if (!io) {
    built.set_value(io.error());
    return;
  }
  io_ = std::move(*io);
  if (std::find(options_.secure.begin(), options_.secure.end(), true) != options_.secure.end()) {
    auto endpoint = dtls::DtlsEndpoint::Create(
        options_.dtls, this,
        [this](std::string_view identity, std::span<std::byte, kMaxPskLength> key) {
          return LookupPsk(identity, key);
        });
    if (!endpoint) {
      built.set_value("dtls: " + endpoint.error());
      return;
    }
    dtls_ = std::move(*endpoint);
  }
  built.set_value({});  // `built` is gone after this: Create returned
  {
    std::unique_lock lock(start_mutex_);
    start_cv_.wait(lock, [this] { return started_ || stop_.load(std::memory_order_relaxed); });
  }
  Run();
}

Shard::Shard(ShardOptions options, std::unique_ptr<net::DatagramIo> io)
    : options_(std::move(options)),
      io_(std::move(io)),
      dedup_(DedupTable::Limits{options_.dedup_capacity, options_.exchange_lifetime_s,
                                options_.non_lifetime_s, std::random_device{}()}),
      handoff_(options_.inflight_capacity, options_.max_payload,
               static_cast<uint32_t>(options_.publisher_wake_fds.size())),
      slots_(options_.inflight_capacity) {
  limits_.max_payload = options_.max_payload;
  std::random_device seed;
  next_message_id_ = static_cast<uint16_t>(seed());
  rng_ = (static_cast<uint64_t>(seed()) << 32 | seed()) | 1;
}

Shard::~Shard() {
  RequestStop();
  Join();
  for (int fd : options_.sockets) close(fd);
}

void Shard::Start() {
  std::lock_guard lock(start_mutex_);
  started_ = true;
  start_cv_.notify_one();
}

void Shard::RequestStop() noexcept {
  {
    std::lock_guard lock(start_mutex_);
    stop_.store(true, std::memory_order_relaxed);
  }
  start_cv_.notify_one();
  handoff_.WakeShard();
}

void Shard::Join() {
  if (thread_.joinable()) thread_.join();
}

void Shard::Run() {
  while (!stop_.load(std::memory_order_relaxed)) {
    const bool draining = draining_.load(std::memory_order_acquire);
    const std::span<const net::ReceivedDatagram> batch = io_->Receive(WaitTimeoutMs());
    now_ms_ = MonotonicMs();
    now_s_ = static_cast<uint32_t>(now_ms_ / 1000);
    wall_ms_ = WallMs();
    options_.registry->Refresh(&registry_generation_, &registry_);
    // Bounded so that the entries of one busy second, all expiring in one later second,
    // are reclaimed over several turns instead of stalling one.
    dedup_.ExpireUntil(now_s_, kExpiryPerTurn);
    for (const net::ReceivedDatagram& d : batch) Handle(d);
    // After a datagram the endpoint's next deadline may be earlier (a handshake started).
    if (dtls_ && (dtls_touched_ || now_ms_ >= dtls_tick_ms_)) {
      dtls_touched_ = false;
      dtls_tick_ms_ = now_ms_ + static_cast<uint64_t>(dtls_->Tick(now_ms_));
      dtls_sessions_.store(dtls_->sessions(), std::memory_order_relaxed);
    }
    handoff_.DrainWake();
    DrainCompletions();
    ExpireBudgets();
    for (uint64_t lanes = pushed_lanes_; lanes != 0; lanes &= lanes - 1) {
      const uint64_t one = 1;
      const int lane = std::countr_zero(lanes);
      [[maybe_unused]] const ssize_t n =
          write(options_.publisher_wake_fds[static_cast<size_t>(lane)], &one, sizeof(one));
    }
    pushed_lanes_ = 0;
    io_->Flush();
    pending_.store(handoff_.in_use(), std::memory_order_release);
    if (draining) drain_seen_.store(true, std::memory_order_release);
    turns_.fetch_add(1, std::memory_order_relaxed);
    const uint64_t failures = io_->send_failures();
    if (failures != send_failures_seen_) {
      counters_.Add(Counter::kSendFailed, failures - send_failures_seen_);
      send_failures_seen_ = failures;
    }
  }
}

int Shard::WaitTimeoutMs() const noexcept {
  uint64_t deadline = UINT64_MAX;
  if (unanswered_head_ != kNoSlot) deadline = slots_[unanswered_head_].deadline_ms;
  if (dtls_) deadline = std::min(deadline, dtls_tick_ms_);
  if (deadline == UINT64_MAX) return kIdleWaitMs;
  const uint64_t now = MonotonicMs();
  if (deadline <= now) return 0;
  return static_cast<int>(std::min<uint64_t>(deadline - now + 1, kIdleWaitMs));
}

void Shard::Handle(const net::ReceivedDatagram& d) {
  counters_.Add(Counter::kReceived);
  if (d.socket < options_.secure.size() && options_.secure[d.socket]) {
    if (d.truncated) {  // no DTLS record is that large: nothing to decrypt, nothing to say
      counters_.Add(Counter::kDropTruncated);
      return;
    }
    dtls::Route route;
    std::memcpy(&route.address, d.peer, std::min<size_t>(d.peer_length, sizeof(route.address)));
    route.length = d.peer_length;
    route.socket = d.socket;
    static_assert(sizeof(net::LocalAddress) <= sizeof(route.local));
    std::memcpy(route.local.data(), &d.local, sizeof(net::LocalAddress));
    dtls_->OnDatagram(route, d.bytes, now_ms_);  // decrypted requests come back in Deliver
    dtls_touched_ = true;
    return;
  }
  if (d.truncated) {
    HandleTruncated(d);
    return;
  }
  const codec::Triage t = codec::TriageDatagram(d.bytes, limits_);
  const Peer peer{d.peer, d.peer_length, d.socket, d.local};
  if (!AnswerTriage(peer, t)) return;
  if (t.request.route == codec::Route::kBootstrap) {
    Bootstrap(d, t);
    return;
  }
  const std::optional<net::IpAddress> ip = net::IpAddress::FromSockaddr(d.peer);
  if (!ip) return;  // impossible: UDP sockets of AF_INET/AF_INET6 only
  Origin origin{peer, *ip, 0, {}};
  origin.port = d.peer->sa_family == AF_INET
                    ? ntohs(reinterpret_cast<const sockaddr_in*>(d.peer)->sin_port)
                    : ntohs(reinterpret_cast<const sockaddr_in6*>(d.peer)->sin6_port);
  if (origin.port == 0) {
    // No real sender has source port 0, and port 0 marks DTLS identities in the dedup table:
    // a spoofed datagram must not plant an answer under a DTLS device's key.
    counters_.Add(Counter::kDropStray);
    return;
  }
  Ingest(origin, t);
}

bool Shard::AnswerTriage(const Peer& peer, const codec::Triage& t) {
  switch (t.action) {
    case codec::Action::kDrop:
      switch (t.reason) {
        case codec::Reason::kTooShort: counters_.Add(Counter::kDropTooShort); break;
        case codec::Reason::kBadVersion: counters_.Add(Counter::kDropBadVersion); break;
        case codec::Reason::kFormatError: counters_.Add(Counter::kDropFormatError); break;
        default: counters_.Add(Counter::kDropStray); break;
      }
      return false;
    case codec::Action::kReset:
    case codec::Action::kRespond: {
      std::array<std::byte, net::kMaxReplySize> reply;
      auto n = codec::EncodeTriageReply(t, limits_, NextMessageId(), reply);
      if (!n) return false;  // impossible: triage replies are small
      SendBytes(peer, std::span(reply).first(*n));
      if (t.action == codec::Action::kReset) {
        counters_.Add(Counter::kReset);
      } else {
        CountReply(t.response_code);
      }
      return false;
    }
    case codec::Action::kRequest:
      return true;
  }
  return false;
}

void Shard::SendBytes(const Peer& peer, std::span<const std::byte> bytes) {
  if (peer.session != 0) {
    if (!dtls_->Send(peer.session, bytes)) counters_.Add(Counter::kSessionGone);
    return;
  }
  io_->Send(peer.socket, peer.address, peer.length, peer.local, bytes);
}

void Shard::Send(const dtls::Route& to, std::span<const std::byte> datagram) noexcept {
  net::LocalAddress local;
  std::memcpy(&local, to.local.data(), sizeof(net::LocalAddress));
  io_->Send(to.socket, reinterpret_cast<const sockaddr*>(&to.address), to.length, local,
            datagram);
}

void Shard::Deliver(dtls::SessionId session, std::string_view identity, const dtls::Route& from,
                    std::span<const std::byte> plaintext) noexcept {
  counters_.Add(Counter::kSecureRecords);
  const auto* address = reinterpret_cast<const sockaddr*>(&from.address);
  net::LocalAddress local;
  std::memcpy(&local, from.local.data(), sizeof(net::LocalAddress));
  const Peer peer{address, from.length, from.socket, local, session};
  const codec::Triage t = codec::TriageDatagram(plaintext, limits_);
  if (!AnswerTriage(peer, t)) return;
  if (t.request.route == codec::Route::kBootstrap) {
    // Bootstrap hands out the key DTLS needs; it is plain CoAP only (SPEC §6).
    const codec::MessageView& m = t.message;
    SendReply(peer,
              m.confirmable() ? codec::MessageType::kAcknowledgement
                              : codec::MessageType::kNonConfirmable,
              codec::code::kNotFound, m.confirmable() ? m.message_id : NextMessageId(), m.token,
              0);
    return;
  }
  const std::optional<net::IpAddress> ip = net::IpAddress::FromSockaddr(address);
  if (!ip) return;  // impossible: UDP sockets of AF_INET/AF_INET6 only
  Ingest(Origin{peer, *ip, 0, identity}, t);
}

size_t Shard::LookupPsk(std::string_view identity,
                        std::span<std::byte, kMaxPskLength> key) const noexcept {
  const std::optional<registry::DeviceView> device = registry_->FindByIccid(identity);
  if (!device || !device->active) return 0;
  if (!device->psk.empty()) {
    if (device->psk_format == registry::PskFormat::kHex) {  // validated by the registry: even, hex
      auto hex = [](char c) {
        return static_cast<uint8_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
      };
      const size_t n = std::min(device->psk.size() / 2, key.size());
      for (size_t i = 0; i < n; ++i) {
        key[i] = static_cast<std::byte>(hex(device->psk[2 * i]) << 4 | hex(device->psk[2 * i + 1]));
      }
      return n;
    }
    const size_t n = std::min(device->psk.size(), key.size());
    std::memcpy(key.data(), device->psk.data(), n);
    return n;
  }
  // The generated key, handed out by GET /bootstrap: the devices use its ASCII bytes.
  return options_.psk_store == nullptr ? 0 : options_.psk_store->GeneratedKey(identity, key);
}

void Shard::Bootstrap(const net::ReceivedDatagram& d, const codec::Triage& t) {
  const codec::MessageView& m = t.message;
  const Peer peer{d.peer, d.peer_length, d.socket, d.local};
  const auto type = m.confirmable() ? codec::MessageType::kAcknowledgement
                                    : codec::MessageType::kNonConfirmable;
  // Every reply to GET /bootstrap gets a MID the 1NCE C SDK cannot mistake for the payload
  // (it searches the whole datagram for "89"), also the refusals.
  const uint16_t message_id =
      m.confirmable() ? m.message_id : bootstrap::SafeBootstrapMessageId(NextMessageId(), m.token);
  if (options_.bootstrap == nullptr) {
    SendReply(peer, type, codec::code::kNotFound, message_id, m.token, 0);
    return;
  }
  const std::optional<net::IpAddress> ip = net::IpAddress::FromSockaddr(d.peer);
  const std::optional<registry::DeviceView> device = ip ? registry_->FindByIp(*ip) : std::nullopt;
  if (!device || !device->active) {
    std::array<std::byte, net::kMaxReplySize> out;
    const auto reply = bootstrap::EncodeBootstrapErrorReply({m.confirmable(), m.message_id, m.token},
                                                 NextMessageId(), bootstrap::BootstrapError::kUnauthorized,
                                                 out);
    if (!reply) return;  // impossible: the body is a short constant
    io_->Send(d.socket, d.peer, d.peer_length, d.local, std::span(out).first(reply->size));
    CountReply(codec::code::kUnauthorized);
    return;
  }
  bootstrap::BootstrapRequest r;
  r.socket_fd = options_.sockets[d.socket];
  std::memcpy(&r.peer, d.peer, std::min<size_t>(d.peer_length, sizeof(r.peer)));
  r.peer_length = d.peer_length;
  r.local = d.local;
  r.confirmable = m.confirmable();
  r.message_id = m.message_id;
  r.token_length = static_cast<uint8_t>(m.token.size());
  std::copy(m.token.begin(), m.token.end(), r.token.begin());
  r.iccid_length = static_cast<uint8_t>(std::min(device->iccid.size(), r.iccid.size()));
  std::copy_n(device->iccid.data(), r.iccid_length, r.iccid.data());
  r.user_psk_length = static_cast<uint8_t>(std::min(device->psk.size(), r.user_psk.size()));
  std::copy_n(device->psk.data(), r.user_psk_length, r.user_psk.data());
  if (!options_.bootstrap->Submit(r)) {
    counters_.Add(Counter::kBootstrapQueueFull);
    SendReply(peer, type, codec::code::kServiceUnavailable, message_id, m.token, BusyMaxAge());
    return;
  }
  counters_.Add(Counter::kBootstrap);
}

void Shard::HandleTruncated(const net::ReceivedDatagram& d) {
  auto header = codec::ParseHeader(d.bytes);
  if (!header || !codec::IsRequestCode(header->code) ||
      (header->type != codec::MessageType::kConfirmable &&
       header->type != codec::MessageType::kNonConfirmable)) {
    counters_.Add(Counter::kDropTruncated);
    return;
  }
  codec::OutgoingMessage reply = codec::ResponseTo(*header, codec::code::kRequestEntityTooLarge,
                                                   NextMessageId());
  reply.size1 = options_.max_payload;
  std::array<std::byte, net::kMaxReplySize> out;
  if (auto n = codec::EncodeMessage(reply, out)) {
    io_->Send(d.socket, d.peer, d.peer_length, d.local, std::span(out).first(*n));
    CountReply(codec::code::kRequestEntityTooLarge);
  }
}

namespace {

// The dedup key's `peer` for a DTLS device (port 0): its PSK identity, an ICCID of 18 to 22
// digits (the registry admits no other, and only registered identities get a session), as
// BCD after a length byte. Distinct identities give distinct keys; no plain key has port 0.
std::array<uint8_t, 16> PackIdentity(std::string_view identity) noexcept {
  std::array<uint8_t, 16> packed{};
  packed[0] = static_cast<uint8_t>(identity.size());
  for (size_t i = 0; i < identity.size() && i < 30; ++i) {
    const auto digit = static_cast<uint8_t>((identity[i] - '0') & 0x0f);
    packed[1 + i / 2] |= static_cast<uint8_t>(i % 2 == 0 ? digit << 4 : digit);
  }
  return packed;
}

}  // namespace

void Shard::Ingest(const Origin& origin, const codec::Triage& t) {
  const codec::MessageView& m = t.message;
  const Peer& peer = origin.peer;
  const net::IpAddress* ip = &origin.ip;
  // Plain CoAP: (source IP, port, MID). DTLS: (PSK identity, MID) (SPEC §4), which survives
  // a new session from the same address. The table is per shard, and SO_REUSEPORT may send a
  // device whose NAT rebound to another shard: its retransmission is then forwarded again,
  // under the same id (a duplicate consumers can drop).
  DedupKey key;
  key.peer = origin.identity.empty() ? ip->bytes() : PackIdentity(origin.identity);
  key.port = origin.identity.empty() ? origin.port : 0;
  key.message_id = m.message_id;

  const DedupTable::Admission admission = dedup_.Admit(key, m.token, m.confirmable(), now_s_);
  switch (admission.verdict) {
    case DedupTable::Verdict::kDuplicatePending:
      counters_.Add(Counter::kDropPendingDuplicate);
      return;
    case DedupTable::Verdict::kDuplicateDone: {
      const auto* e = admission.entry;
      SendReply(peer, static_cast<codec::MessageType>(e->response_type), e->response_code,
                e->response_message_id, m.token, e->max_age);
      counters_.Add(Counter::kDuplicateReplayed);
      return;
    }
    case DedupTable::Verdict::kFull:
      counters_.Add(Counter::kDedupFull);
      SendReply(peer, m.confirmable() ? codec::MessageType::kAcknowledgement
                                      : codec::MessageType::kNonConfirmable,
                codec::code::kServiceUnavailable, m.confirmable() ? m.message_id : NextMessageId(),
                m.token, BusyMaxAge());
      return;
    case DedupTable::Verdict::kNew:
      break;
  }
  const DedupTable::Handle handle = admission.handle;

  const std::optional<registry::DeviceView> device = origin.identity.empty()
                                              ? registry_->FindByIp(*ip)
                                              : registry_->FindByIccid(origin.identity);
  if (!device || !device->active) {
    Finish(handle, m, codec::code::kUnauthorized, peer);
    return;
  }
  if (t.request.topic_status == codec::TopicStatus::kInvalid) {
    Finish(handle, m, codec::code::kBadRequest, peer);
    return;
  }
  if (draining_.load(std::memory_order_relaxed)) {
    counters_.Add(Counter::kDraining);
    Finish(handle, m, codec::code::kServiceUnavailable, peer);
    return;
  }
  // Per device, so that one device's messages keep their order on one broker connection.
  const uint32_t lane =
      handoff_.lanes() == 1
          ? 0
          : static_cast<uint32_t>(std::hash<std::string_view>{}(device->iccid) % handoff_.lanes());
  if (options_.sinks_available != nullptr &&
      !options_.sinks_available[lane].load(std::memory_order_relaxed)) {
    // Circuit breaking: a sink is known down, so answer now instead of queueing behind it.
    counters_.Add(Counter::kSinkDown);
    Finish(handle, m, codec::code::kServiceUnavailable, peer);
    return;
  }
  uint32_t slot;
  if (!handoff_.Acquire(&slot)) {
    counters_.Add(Counter::kInflightFull);
    Finish(handle, m, codec::code::kServiceUnavailable, peer);
    return;
  }

  sinks::InflightMessage& out = handoff_.message(slot);
  out.received_ms = wall_ms_;
  out.message_id = m.message_id;
  out.token_length = static_cast<uint8_t>(m.token.size());
  std::copy(m.token.begin(), m.token.end(), out.token.begin());
  out.ip = ip->bytes();
  out.iccid_length = static_cast<uint8_t>(std::min(device->iccid.size(), out.iccid.size()));
  // copy_n, not memcpy: an empty view may have a null data() (UB for memcpy).
  std::copy_n(device->iccid.data(), out.iccid_length, out.iccid.data());
  out.imsi_length = static_cast<uint8_t>(std::min(device->imsi.size(), out.imsi.size()));
  std::copy_n(device->imsi.data(), out.imsi_length, out.imsi.data());
  out.topic_length = static_cast<uint8_t>(t.request.topic.size());
  std::copy_n(t.request.topic.data(), t.request.topic.size(), out.topic.data());
  out.payload_length = static_cast<uint16_t>(m.payload.size());
  std::copy(m.payload.begin(), m.payload.end(), out.payload);

  SlotState& s = slots_[slot];
  s.dedup = handle;
  std::memcpy(&s.peer, peer.address, std::min<size_t>(peer.length, sizeof(s.peer)));
  s.peer_length = peer.length;
  s.socket = peer.socket;
  s.local = peer.local;
  s.session = peer.session;
  s.confirmable = m.confirmable();
  s.answered = false;
  s.deadline_ms = now_ms_ + options_.response_budget_ms;

  if (!handoff_.PushOutbound(lane, slot)) {
    handoff_.Release(slot);
    counters_.Add(Counter::kQueueFull);
    Finish(handle, m, codec::code::kServiceUnavailable, peer);
    return;
  }
  pushed_lanes_ |= uint64_t{1} << lane;
  counters_.Add(Counter::kAccepted);
  if (options_.ack_on_enqueue) {
    s.answered = true;
    Finish(handle, m, codec::code::kChanged, peer);
    return;
  }
  LinkUnanswered(slot);
}

void Shard::Finish(DedupTable::Handle handle, const codec::MessageView& request, uint8_t code,
                   const Peer& peer) {
  const auto type = request.confirmable() ? codec::MessageType::kAcknowledgement
                                          : codec::MessageType::kNonConfirmable;
  const uint16_t message_id = request.confirmable() ? request.message_id : NextMessageId();
  const uint16_t max_age = code == codec::code::kServiceUnavailable ? BusyMaxAge() : 0;
  dedup_.Complete(handle, code, static_cast<uint8_t>(type), message_id, max_age);
  SendReply(peer, type, code, message_id, request.token, max_age);
}

void Shard::SendReply(const Peer& peer, codec::MessageType type, uint8_t code,
                      uint16_t message_id, std::span<const std::byte> token, uint16_t max_age) {
  codec::OutgoingMessage reply;
  reply.type = type;
  reply.code = code;
  reply.message_id = message_id;
  reply.token = token;
  if (max_age != 0) reply.max_age = max_age;
  // Error responses carry the code's name (RFC 7252 §5.5.2): deterministic from the code, so
  // a replay from the dedup table is byte for byte the first answer.
  const std::string_view diagnostic =
      codec::CodeClass(code) >= 4 ? codec::CodeName(code) : std::string_view();
  reply.payload = std::as_bytes(std::span<const char>(diagnostic.data(), diagnostic.size()));
  std::array<std::byte, net::kMaxReplySize> out;
  auto n = codec::EncodeMessage(reply, out);
  if (!n) return;  // impossible: token ≤ 8 and a short diagnostic always fit
  SendBytes(peer, std::span(out).first(*n));
  CountReply(code);
}

void Shard::DrainCompletions() {
  uint32_t slot;
  sinks::Outcome outcome;
  while (handoff_.PopCompletion(&slot, &outcome)) {
    SlotState& s = slots_[slot];
    if (s.answered && options_.ack_on_enqueue && outcome != sinks::Outcome::kAccepted) {
      // The price of coap.ack = "enqueue": the device already has its 2.04.
      counters_.Add(Counter::kLostAfterEnqueueAck);
    }
    if (!s.answered) {
      const sinks::InflightMessage& msg = handoff_.message(slot);
      const auto type = s.confirmable ? codec::MessageType::kAcknowledgement
                                      : codec::MessageType::kNonConfirmable;
      uint8_t code = codec::code::kChanged;
      if (outcome == sinks::Outcome::kUnavailable) {
        code = codec::code::kServiceUnavailable;
        counters_.Add(Counter::kSinkRefused);
      } else if (outcome == sinks::Outcome::kBadPayload) {
        code = codec::code::kBadRequest;
      }
      const uint16_t message_id = s.confirmable ? msg.message_id : NextMessageId();
      const uint16_t max_age = code == codec::code::kServiceUnavailable ? BusyMaxAge() : 0;
      dedup_.Complete(s.dedup, code, static_cast<uint8_t>(type), message_id, max_age);
      const Peer peer{reinterpret_cast<const sockaddr*>(&s.peer), s.peer_length, s.socket,
                      s.local, s.session};
      SendReply(peer, type, code, message_id, msg.Token(), max_age);
      MarkAnswered(slot);
    }
    handoff_.Release(slot);
  }
}

void Shard::ExpireBudgets() {
  while (unanswered_head_ != kNoSlot) {
    const uint32_t slot = unanswered_head_;
    SlotState& s = slots_[slot];
    if (s.deadline_ms > now_ms_) return;
    // The sinks did not answer in time: tell the device to retry. The slot stays with the
    // publisher until it completes; a late success then only means a duplicate downstream.
    counters_.Add(Counter::kBudgetExpired);
    const sinks::InflightMessage& msg = handoff_.message(slot);
    const auto type = s.confirmable ? codec::MessageType::kAcknowledgement
                                    : codec::MessageType::kNonConfirmable;
    const uint16_t message_id = s.confirmable ? msg.message_id : NextMessageId();
    const uint16_t max_age = BusyMaxAge();
    dedup_.Complete(s.dedup, codec::code::kServiceUnavailable, static_cast<uint8_t>(type),
                    message_id, max_age);
    const Peer peer{reinterpret_cast<const sockaddr*>(&s.peer), s.peer_length, s.socket,
                    s.local, s.session};
    SendReply(peer, type, codec::code::kServiceUnavailable, message_id, msg.Token(), max_age);
    MarkAnswered(slot);
  }
}

void Shard::LinkUnanswered(uint32_t slot) noexcept {
  SlotState& s = slots_[slot];
  s.prev = unanswered_tail_;
  s.next = kNoSlot;
  if (unanswered_tail_ != kNoSlot) {
    slots_[unanswered_tail_].next = slot;
  } else {
    unanswered_head_ = slot;
  }
  unanswered_tail_ = slot;
}

void Shard::MarkAnswered(uint32_t slot) noexcept {
  SlotState& s = slots_[slot];
  s.answered = true;
  if (s.prev != kNoSlot) {
    slots_[s.prev].next = s.next;
  } else {
    unanswered_head_ = s.next;
  }
  if (s.next != kNoSlot) {
    slots_[s.next].prev = s.prev;
  } else {
    unanswered_tail_ = s.prev;
  }
  s.prev = s.next = kNoSlot;
}

uint16_t Shard::BusyMaxAge() noexcept {
  // Uniform in [base, 2*base] (reliability reference I2): a fleet told to wait does not come
  // back in lock-step.
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  const uint32_t base = options_.busy_max_age_s;
  return static_cast<uint16_t>(base + rng_ % (base + 1));
}

void Shard::CountReply(uint8_t code) noexcept {
  switch (code) {
    case codec::code::kChanged: counters_.Add(Counter::kReplyChanged); break;
    case codec::code::kBadRequest: counters_.Add(Counter::kReplyBadRequest); break;
    case codec::code::kUnauthorized: counters_.Add(Counter::kReplyUnauthorized); break;
    case codec::code::kServiceUnavailable: counters_.Add(Counter::kReplyServiceUnavailable); break;
    default:
      counters_.Add(codec::CodeClass(code) == 5 ? Counter::kReplyOtherServerError
                                                : Counter::kReplyOtherClientError);
  }
}

}  // namespace coapgate::engine
