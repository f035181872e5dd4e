#include "engine/shard.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <functional>
#include <future>
#include <random>

#include "codec/code.h"
#include "common/check.h"
#include "codec/encoder.h"
#include "bootstrap/bootstrap_reply.h"
#include "bootstrap/bootstrap_service.h"
#include "engine/device_log.h"
#include "registry/key_store.h"

namespace coapgate::engine {
namespace {

// Longest sleep of an idle shard: bounds how late it notices a stop request or a registry
// swap.
constexpr int kIdleWaitMs = 100;
// Exchange-memory records swept per turn: expiry is checked on lookup anyway, so the sweep
// only frees records of silent devices for new ones; a small budget keeps turns short.
constexpr size_t kSweepPerTurn = 256;
// At most one warning per shard per this long when the table bound cuts the horizon short.
constexpr uint32_t kHorizonWarningIntervalS = 60;

const SystemClock kSystemClock;

}  // namespace

Result<std::unique_ptr<Shard>, std::string> Shard::Create(ShardOptions options) {
  if (!options.io_factory) return Fail(std::string("no datagram I/O factory"));
  auto shard = std::unique_ptr<Shard>(new Shard(std::move(options)));
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
  io_options.receive = options_.receive;
  io_options.wake_fds = {handoff_.wake_fd()};
  auto io = options_.io_factory(io_options);
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

Shard::Shard(ShardOptions options)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : &kSystemClock),
      exchanges_(ExchangeMemory::Limits{
          .devices = options_.dedup_devices,
          .per_device = options_.dedup_per_device,
          .con_lifetime_s = options_.exchange_lifetime_s,
          .non_lifetime_s = std::min(options_.non_lifetime_s, options_.exchange_lifetime_s),
          .hash_seed = (static_cast<uint64_t>(std::random_device{}()) << 32) |
                       std::random_device{}()}),
      handoff_(options_.inflight_capacity, options_.max_payload,
               static_cast<uint32_t>(options_.publisher_wake_fds.size())),
      inflight_(options_.inflight_capacity) {
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

void Shard::RequestReceiving(bool on) noexcept {
  receiving_.store(on, std::memory_order_release);
  handoff_.WakeShard();
}

void Shard::Join() {
  if (thread_.joinable()) thread_.join();
}

void Shard::ExportState(RestartStateWriter* out) const {
  const uint64_t now_ms = clock_->MonotonicMs();
  if (dtls_) {
    dtls_->ExportSessions(now_ms, [&](const dtls::ExportedSession& s) { out->AddSession(s); });
  }
  exchanges_.ForEachDone(static_cast<uint32_t>(now_ms / 1000),
                         [&](const ExchangeMemory::SavedExchange& e) { out->AddExchange(e); });
}

Result<void, dtls::ImportRefusal> Shard::ImportSession(const dtls::ExportedSession& s) {
  if (!dtls_ || s.route.socket >= options_.secure.size() || !options_.secure[s.route.socket]) {
    return Fail(dtls::ImportRefusal::kBadRoute);
  }
  auto imported = dtls_->ImportSession(s, clock_->MonotonicMs());
  dtls_sessions_.store(dtls_->sessions(), std::memory_order_relaxed);
  return imported;
}

bool Shard::ExportOnShardThread(RestartStateWriter* out, int timeout_ms) {
  export_done_.store(false, std::memory_order_relaxed);
  export_to_.store(out, std::memory_order_release);
  handoff_.WakeShard();
  const uint64_t deadline_ms = MonotonicMs() + static_cast<uint64_t>(timeout_ms);
  while (!export_done_.load(std::memory_order_acquire)) {
    if (MonotonicMs() >= deadline_ms &&
        export_to_.exchange(nullptr, std::memory_order_acq_rel) != nullptr) {
      return false;  // taken back before the shard saw it
    }
    // Past the deadline with the request gone: the shard is exporting; it finishes.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

bool Shard::ImportExchange(const ExchangeMemory::SavedExchange& e) {
  return exchanges_.Restore(e, static_cast<uint32_t>(clock_->MonotonicMs() / 1000));
}

void Shard::Run() noexcept {
  while (!stop_.load(std::memory_order_relaxed)) {
    const bool draining = draining_.load(std::memory_order_acquire);
    const bool receiving = receiving_.load(std::memory_order_acquire);
    if (receiving != io_receiving_) {
      io_->SetReceiving(receiving);
      io_receiving_ = receiving;
      if (receiving) receive_stopped_.store(false, std::memory_order_release);
    }
    // Read before Receive: when already true, that Receive returns the backend's last datagrams.
    const bool stopped_before = !receiving && io_->receive_stopped();
    const std::span<const net::ReceivedDatagram> batch = io_->Receive(WaitTimeoutMs());
    now_us_ = clock_->MonotonicUs();
    now_ms_ = now_us_ / 1000;
    now_s_ = static_cast<uint32_t>(now_ms_ / 1000);
    wall_ms_ = clock_->WallMs();
    options_.registry->Refresh(&registry_generation_, &registry_);
    exchanges_.Sweep(now_s_, kSweepPerTurn);
    for (const net::ReceivedDatagram& d : batch) Handle(d);
    // After a datagram the endpoint's next deadline may be earlier (a handshake started).
    if (dtls_ && (dtls_touched_ || now_ms_ >= dtls_tick_ms_)) {
      dtls_touched_ = false;
      dtls_tick_ms_ = now_ms_ + static_cast<uint64_t>(dtls_->Tick(now_ms_));
      dtls_sessions_.store(dtls_->sessions(), std::memory_order_relaxed);
      dtls_handshakes_.store(dtls_->handshakes(), std::memory_order_relaxed);
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
    // Before the Flush that sends them: a client holding its reply finds it counted.
    RecordTurnReplies();
    io_->Flush();
    pending_.store(handoff_.in_use(), std::memory_order_release);
    all_answered_.store(inflight_.oldest_unanswered() == InflightTable::kNoSlot,
                        std::memory_order_release);
    if (draining) drain_seen_.store(true, std::memory_order_release);
    if (stopped_before) receive_stopped_.store(true, std::memory_order_release);
    // A plain load first: the exchange (a locked instruction) only when a take-over asks.
    if (export_to_.load(std::memory_order_relaxed) != nullptr) {
      if (RestartStateWriter* to = export_to_.exchange(nullptr, std::memory_order_acq_rel)) {
        ExportState(to);
        export_done_.store(true, std::memory_order_release);
      }
    }
    turns_.fetch_add(1, std::memory_order_relaxed);
    PublishExchangeStats();
    const uint64_t failures = io_->send_failures();
    if (failures != send_failures_seen_) {
      counters_.Add(Counter::kSendFailed, failures - send_failures_seen_);
      send_failures_seen_ = failures;
    }
  }
}

int Shard::WaitTimeoutMs() const noexcept {
  uint64_t deadline = inflight_.next_deadline_ms();
  if (dtls_) deadline = std::min(deadline, dtls_tick_ms_);
  if (deadline == UINT64_MAX) return kIdleWaitMs;
  const uint64_t now = clock_->MonotonicMs();
  if (deadline <= now) return 0;
  return static_cast<int>(std::min<uint64_t>(deadline - now + 1, kIdleWaitMs));
}

void Shard::Handle(const net::ReceivedDatagram& d) noexcept {
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
    route.local = d.local;
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
  CHECK(ip.has_value(), "a datagram from neither AF_INET nor AF_INET6");
  const uint16_t port = d.peer->sa_family == AF_INET
                            ? ntohs(reinterpret_cast<const sockaddr_in*>(d.peer)->sin_port)
                            : ntohs(reinterpret_cast<const sockaddr_in6*>(d.peer)->sin6_port);
  if (port == 0) {  // no real sender has source port 0: answering it only helps spoofers
    counters_.Add(Counter::kDropStray);
    return;
  }
  Ingest(Origin{peer, *ip, {}}, t);
}

bool Shard::AnswerTriage(const Peer& peer, const codec::Triage& t) noexcept {
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
      CHECK(n.has_value(), "a triage reply did not fit kMaxReplySize");
      SendBytes(peer, std::span(reply).first(*n));
      if (t.action == codec::Action::kReset) {
        counters_.Add(Counter::kReset);
      } else {
        CountReply(t.response_code);
        Refused(peer, nullptr, {}, t.response_code,
                t.response_code == codec::code::kRequestEntityTooLarge
                    ? registry::Reason::kPayloadTooLarge
                    : registry::Reason::kBadRequest);
      }
      return false;
    }
    case codec::Action::kRequest:
      return true;
  }
  return false;
}

void Shard::SendBytes(const Peer& peer, std::span<const std::byte> bytes) noexcept {
  if (peer.session != 0) {
    if (!dtls_->Send(peer.session, bytes)) counters_.Add(Counter::kSessionGone);
    return;
  }
  io_->Send(peer.socket, peer.address, peer.length, peer.local, bytes);
}

void Shard::Send(const dtls::Route& to, std::span<const std::byte> datagram) noexcept {
  io_->Send(to.socket, reinterpret_cast<const sockaddr*>(&to.address), to.length, to.local,
            datagram);
}

void Shard::Deliver(dtls::SessionId session, std::string_view identity, const dtls::Route& from,
                    std::span<const std::byte> plaintext) noexcept {
  counters_.Add(Counter::kSecureRecords);
  const auto* address = reinterpret_cast<const sockaddr*>(&from.address);
  const Peer peer{address, from.length, from.socket, from.local, session};
  const codec::Triage t = codec::TriageDatagram(plaintext, limits_);
  if (!AnswerTriage(peer, t)) return;
  if (t.request.route == codec::Route::kBootstrap) {
    // Bootstrap hands out the key DTLS needs; it is plain CoAP only (docs/bootstrap-and-dtls.md).
    const codec::MessageView& m = t.message;
    SendReply(peer,
              m.confirmable() ? codec::MessageType::kAcknowledgement
                              : codec::MessageType::kNonConfirmable,
              codec::code::kNotFound, m.confirmable() ? m.message_id : NextMessageId(), m.token,
              0);
    return;
  }
  const std::optional<net::IpAddress> ip = net::IpAddress::FromSockaddr(address);
  CHECK(ip.has_value(), "a DTLS route of neither AF_INET nor AF_INET6");
  Ingest(Origin{peer, *ip, identity}, t);
}

void Shard::HandshakeFailed(const dtls::Route& from, std::string_view identity,
                            dtls::HandshakeFailure why) noexcept {
  registry::Reason reason = registry::Reason::kHandshakeFailed;
  switch (why) {
    case dtls::HandshakeFailure::kUnknownIdentity: reason = registry::Reason::kUnknownIdentity; break;
    case dtls::HandshakeFailure::kWrongKey: reason = registry::Reason::kWrongKey; break;
    case dtls::HandshakeFailure::kTimeout: reason = registry::Reason::kHandshakeTimeout; break;
    case dtls::HandshakeFailure::kFailed: reason = registry::Reason::kHandshakeFailed; break;
    case dtls::HandshakeFailure::kHandshakeLimit: reason = registry::Reason::kHandshakeLimit; break;
    case dtls::HandshakeFailure::kPerSourceCap: reason = registry::Reason::kPerSourceCap; break;
    case dtls::HandshakeFailure::kTableFull: reason = registry::Reason::kTableFull; break;
  }
  const auto* address = reinterpret_cast<const sockaddr*>(&from.address);
  // The device: by the identity it sent, or (refused at the ClientHello, before any
  // identity) by its address.
  std::optional<registry::DeviceView> device;
  if (!identity.empty()) {
    device = registry_->FindByIccid(identity);
  } else if (const std::optional<net::IpAddress> ip = net::IpAddress::FromSockaddr(address)) {
    device = registry_->FindByIp(*ip);
  }
  if (device && reason == registry::Reason::kUnknownIdentity) {
    // LookupPsk found the device but gave no key: say which of the two it was.
    reason = device->active ? registry::Reason::kNoKey : registry::Reason::kInactive;
  }
  if (device) {
    registry_->StoreHandshakeActivity(
        device->index, {static_cast<uint32_t>(wall_ms_ / 1000), reason});
  }
  LogRefusal(address, device ? device->iccid : identity, 0, reason, now_ms_);
}

void Shard::Refused(const Peer& peer, const registry::DeviceView* device,
                    std::string_view claimed, uint8_t code, registry::Reason why) noexcept {
  std::optional<registry::DeviceView> found;
  if (device == nullptr && peer.session == 0 && why != registry::Reason::kUnknownDevice) {
    if (const std::optional<net::IpAddress> ip = net::IpAddress::FromSockaddr(peer.address)) {
      found = registry_->FindByIp(*ip);
      if (found) device = &*found;
    }
  }
  if (device != nullptr) {
    registry_->StoreRequestActivity(
        device->index, {static_cast<uint32_t>(wall_ms_ / 1000), code, why, peer.session != 0});
  }
  LogRefusal(peer.address, device != nullptr ? device->iccid : claimed, code, why, now_ms_);
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
  if (options_.psk_store == nullptr) return 0;
  const size_t n = options_.psk_store->GeneratedKey(identity, key);
  // None here: another node may have just made it; a shared store fetches the row, for the
  // device's next attempt (registry/key_store.h). Registered devices only: an unknown
  // identity never reaches the database.
  if (n == 0) options_.psk_store->KeyMissed(device->iccid);
  return n;
}

void Shard::Bootstrap(const net::ReceivedDatagram& d, const codec::Triage& t) noexcept {
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
    CHECK(reply.has_value(), "the bootstrap error reply did not fit kMaxReplySize");
    io_->Send(d.socket, d.peer, d.peer_length, d.local, std::span(out).first(reply->size));
    CountReply(codec::code::kUnauthorized);
    Refused(peer, device ? &*device : nullptr, {}, codec::code::kUnauthorized,
            device ? registry::Reason::kInactive : registry::Reason::kUnknownDevice);
    return;
  }
  if (options_.first_registration != nullptr) {
    options_.first_registration->Note(options_.index, *registry_, *device, *ip, wall_ms_);
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
    Refused(peer, &*device, {}, codec::code::kServiceUnavailable, registry::Reason::kBootstrapBusy);
    return;
  }
  counters_.Add(Counter::kBootstrap);
  // The worker answers 2.05 (or, when its store fails, 5.00: it logs that itself).
  registry_->StoreRequestActivity(
      device->index, {static_cast<uint32_t>(wall_ms_ / 1000), codec::code::kContent,
                      registry::Reason::kNone, false});
}

void Shard::HandleTruncated(const net::ReceivedDatagram& d) noexcept {
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
  const auto n = codec::EncodeMessage(reply, out);
  CHECK(n.has_value(), "a 4.13 reply did not fit kMaxReplySize");
  io_->Send(d.socket, d.peer, d.peer_length, d.local, std::span(out).first(*n));
  CountReply(codec::code::kRequestEntityTooLarge);
  Refused(Peer{d.peer, d.peer_length, d.socket, d.local}, nullptr, {},
          codec::code::kRequestEntityTooLarge, registry::Reason::kPayloadTooLarge);
}

void Shard::Ingest(const Origin& origin, const codec::Triage& t) noexcept {
  const codec::MessageView& m = t.message;
  const Peer& peer = origin.peer;
  const bool plain = origin.identity.empty();
  const std::optional<registry::DeviceView> device =
      plain ? registry_->FindByIp(origin.ip) : registry_->FindByIccid(origin.identity);
  // Refusals before the exchange memory: they are deterministic (a retransmission gets the
  // same bytes anyway, until SIGHUP changes the answer), and an unregistered sender must not
  // be able to take records from the devices that are.
  if (!device || !device->active) {
    Answer(ExchangeMemory::kNoHandle, peer, m.confirmable(), m.message_id, m.token,
           codec::code::kUnauthorized);
    Refused(peer, device ? &*device : nullptr, origin.identity, codec::code::kUnauthorized,
            device ? registry::Reason::kInactive : registry::Reason::kUnknownDevice);
    return;
  }
  // An identified active device interacted, whatever its request's fate from here.
  if (options_.first_registration != nullptr) {
    options_.first_registration->Note(options_.index, *registry_, *device, origin.ip, wall_ms_);
  }
  if (t.request.topic_status == codec::TopicStatus::kInvalid) {
    Answer(ExchangeMemory::kNoHandle, peer, m.confirmable(), m.message_id, m.token,
           codec::code::kBadRequest);
    Refused(peer, &*device, {}, codec::code::kBadRequest, registry::Reason::kBadTopic);
    return;
  }
  // Plain CoAP: the source IP without the port, so a NAT rebinding keeps the device's
  // exchanges (steering by source address keeps it on this shard). DTLS: the PSK identity,
  // which survives a new session from another address.
  const DeviceKey key =
      plain ? DeviceKeyForAddress(origin.ip.bytes()) : DeviceKeyForIdentity(origin.identity);
  const ExchangeMemory::Admission admission =
      exchanges_.Admit(key, m.message_id, m.token, m.confirmable(), now_s_);
  switch (admission.verdict) {
    case ExchangeMemory::Verdict::kDuplicatePending:
      counters_.Add(Counter::kDropPendingDuplicate);
      return;
    case ExchangeMemory::Verdict::kDuplicateDone: {
      const ExchangeMemory::Entry* e = admission.entry;
      SendReply(peer, static_cast<codec::MessageType>(e->response_type()), e->response_code(),
                e->response_message_id(), m.token, e->max_age());
      counters_.Add(Counter::kDuplicateReplayed);
      return;
    }
    case ExchangeMemory::Verdict::kFull:
      counters_.Add(Counter::kDedupFull);
      Answer(ExchangeMemory::kNoHandle, peer, m.confirmable(), m.message_id, m.token,
             codec::code::kServiceUnavailable);
      Refused(peer, &*device, {}, codec::code::kServiceUnavailable,
              registry::Reason::kExchangeMemoryFull);
      return;
    case ExchangeMemory::Verdict::kNew:
      break;
  }
  const ExchangeMemory::Handle handle = admission.handle;
  auto refuse = [&](Counter counter, registry::Reason why) noexcept {
    counters_.Add(counter);
    Answer(handle, peer, m.confirmable(), m.message_id, m.token,
           codec::code::kServiceUnavailable);
    Refused(peer, &*device, {}, codec::code::kServiceUnavailable, why);
  };
  if (draining_.load(std::memory_order_relaxed)) {
    refuse(Counter::kDraining, registry::Reason::kDraining);
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
    refuse(Counter::kSinkDown, registry::Reason::kSinkDown);
    return;
  }
  uint32_t slot;
  if (!handoff_.Acquire(&slot)) {
    refuse(Counter::kInflightFull, registry::Reason::kQueueFull);
    return;
  }

  sinks::InflightMessage& out = handoff_.message(slot);
  out.received_ms = wall_ms_;
  out.message_id = m.message_id;
  out.token_length = static_cast<uint8_t>(m.token.size());
  std::copy(m.token.begin(), m.token.end(), out.token.begin());
  out.ip = origin.ip.bytes();
  out.iccid_length = static_cast<uint8_t>(std::min(device->iccid.size(), out.iccid.size()));
  // copy_n, not memcpy: an empty view may have a null data() (UB for memcpy).
  std::copy_n(device->iccid.data(), out.iccid_length, out.iccid.data());
  out.imsi_length = static_cast<uint8_t>(std::min(device->imsi.size(), out.imsi.size()));
  std::copy_n(device->imsi.data(), out.imsi_length, out.imsi.data());
  out.topic_length = static_cast<uint8_t>(t.request.topic.size());
  std::copy_n(t.request.topic.data(), t.request.topic.size(), out.topic.data());
  out.payload_length = static_cast<uint16_t>(m.payload.size());
  std::copy(m.payload.begin(), m.payload.end(), out.payload);

  InflightTable::Slot& s = inflight_[slot];
  s.exchange = handle;
  std::memcpy(&s.peer, peer.address, std::min<size_t>(peer.length, sizeof(s.peer)));
  s.peer_length = peer.length;
  s.socket = peer.socket;
  s.local = peer.local;
  s.session = peer.session;
  s.confirmable = m.confirmable();
  s.received_us = now_us_;

  if (!handoff_.PushOutbound(lane, slot)) {
    handoff_.Release(slot);
    refuse(Counter::kQueueFull, registry::Reason::kQueueFull);
    return;
  }
  pushed_lanes_ |= uint64_t{1} << lane;
  counters_.Add(Counter::kAccepted);
  // 2.04 now, on the record the lookup just read; a sink's refusal or timeout overwrites it
  // (Refused), so the common completion needs no second lookup.
  registry_->StoreRequestActivity(
      device->index, {static_cast<uint32_t>(wall_ms_ / 1000), codec::code::kChanged,
                      registry::Reason::kNone, !plain});
  if (options_.ack_on_enqueue) {
    s.answered = true;  // never on the unanswered list: no budget applies
    Answer(handle, peer, m.confirmable(), m.message_id, m.token, codec::code::kChanged);
    return;
  }
  inflight_.Track(slot, now_ms_ + options_.response_budget_ms);
}

void Shard::Answer(ExchangeMemory::Handle exchange, const Peer& peer, bool confirmable,
                   uint16_t request_message_id, std::span<const std::byte> token,
                   uint8_t code) noexcept {
  const auto type =
      confirmable ? codec::MessageType::kAcknowledgement : codec::MessageType::kNonConfirmable;
  const uint16_t message_id = confirmable ? request_message_id : NextMessageId();
  const uint16_t max_age = code == codec::code::kServiceUnavailable ? BusyMaxAge() : 0;
  // False for kNoHandle, and for an exchange that outlived its lifetime while in flight (its
  // record is gone; the reply is still due).
  (void)exchanges_.Complete(exchange, code, static_cast<uint8_t>(type), message_id, max_age);
  SendReply(peer, type, code, message_id, token, max_age);
}

void Shard::SendReply(const Peer& peer, codec::MessageType type, uint8_t code,
                      uint16_t message_id, std::span<const std::byte> token,
                      uint16_t max_age) noexcept {
  codec::OutgoingMessage reply;
  reply.type = type;
  reply.code = code;
  reply.message_id = message_id;
  reply.token = token;
  if (max_age != 0) reply.max_age = max_age;
  // Error responses carry the code's name (RFC 7252 §5.5.2): deterministic from the code, so
  // a replay from the exchange memory is byte for byte the first answer.
  const std::string_view diagnostic =
      codec::CodeClass(code) >= 4 ? codec::CodeName(code) : std::string_view();
  reply.payload = std::as_bytes(std::span<const char>(diagnostic.data(), diagnostic.size()));
  std::array<std::byte, net::kMaxReplySize> out;
  auto n = codec::EncodeMessage(reply, out);
  CHECK(n.has_value(), "a reply did not fit kMaxReplySize (token <= 8, short diagnostic)");
  SendBytes(peer, std::span(out).first(*n));
  CountReply(code);
}

void Shard::DrainCompletions() noexcept {
  uint32_t slot;
  sinks::Outcome outcome;
  while (handoff_.PopCompletion(&slot, &outcome)) {
    InflightTable::Slot& s = inflight_[slot];
    if (s.answered && options_.ack_on_enqueue && outcome != sinks::Outcome::kAccepted) {
      // The price of coap.ack = "enqueue": the device already has its 2.04.
      counters_.Add(Counter::kLostAfterEnqueueAck);
    }
    if (!s.answered) {
      uint8_t code = codec::code::kChanged;
      registry::Reason why = registry::Reason::kNone;
      if (outcome == sinks::Outcome::kUnavailable) {
        code = codec::code::kServiceUnavailable;
        why = registry::Reason::kSinkRefused;
        counters_.Add(Counter::kSinkRefused);
      } else if (outcome == sinks::Outcome::kBadPayload) {
        code = codec::code::kBadRequest;
        why = registry::Reason::kBadPayload;
      }
      inflight_.MarkAnswered(slot);
      const sinks::InflightMessage& msg = handoff_.message(slot);
      answering_slot_ = true;
      answering_received_us_ = s.received_us;
      Answer(s.exchange, PeerOf(s), s.confirmable, msg.message_id, msg.Token(), code);
      answering_slot_ = false;
      if (why != registry::Reason::kNone) {
        const std::optional<registry::DeviceView> device = registry_->FindByIccid(msg.Iccid());
        Refused(PeerOf(s), device ? &*device : nullptr, msg.Iccid(), code, why);
      }
    }
    handoff_.Release(slot);
  }
}

void Shard::ExpireBudgets() noexcept {
  while (inflight_.next_deadline_ms() <= now_ms_) {
    const uint32_t slot = inflight_.oldest_unanswered();
    // The sinks did not answer in time: tell the device to retry. The slot stays with the
    // publisher until it completes; a late success then only means a duplicate downstream.
    counters_.Add(Counter::kBudgetExpired);
    inflight_.MarkAnswered(slot);
    const InflightTable::Slot& s = inflight_[slot];
    const sinks::InflightMessage& msg = handoff_.message(slot);
    answering_slot_ = true;
    answering_received_us_ = s.received_us;
    Answer(s.exchange, PeerOf(s), s.confirmable, msg.message_id, msg.Token(),
           codec::code::kServiceUnavailable);
    answering_slot_ = false;
    const std::optional<registry::DeviceView> device = registry_->FindByIccid(msg.Iccid());
    Refused(PeerOf(s), device ? &*device : nullptr, msg.Iccid(), codec::code::kServiceUnavailable,
            registry::Reason::kSinkTimeout);
  }
}

void Shard::PublishExchangeStats() noexcept {
  const ExchangeMemory::Stats& now = exchanges_.stats();
  ExchangeMemory::Stats& seen = exchange_stats_seen_;
  counters_.Add(Counter::kDedupEvictedDeviceOverK,
                now.evicted_device_over_k - seen.evicted_device_over_k);
  counters_.Add(Counter::kDedupEvictedTableBound,
                now.evicted_table_bound - seen.evicted_table_bound);
  seen = now;
  const uint32_t horizon = exchanges_.EffectiveHorizonS(now_s_);
  const uint32_t bound_horizon =
      exchanges_.EffectiveHorizonS(now_s_, ExchangeMemory::EvictionCause::kTableBound);
  counters_.SetHorizons(horizon, bound_horizon);
  exchange_devices_in_use_.store(static_cast<uint32_t>(exchanges_.devices_in_use()),
                                 std::memory_order_relaxed);
  exchange_entries_in_use_.store(static_cast<uint32_t>(exchanges_.size()),
                                 std::memory_order_relaxed);
  if (bound_horizon < options_.exchange_lifetime_s &&
      (horizon_warned_s_ == 0 || now_s_ - horizon_warned_s_ >= kHorizonWarningIntervalS)) {
    horizon_warned_s_ = std::max<uint32_t>(now_s_, 1);
    spdlog::warn(
        "shard {}: exchange memory full: devices evicted after {} s instead of {} s "
        "(coap.dedup_devices = {} per shard; {} evictions so far)",
        options_.index, bound_horizon, options_.exchange_lifetime_s, exchanges_.device_capacity(),
        now.evicted_table_bound);
  }
}

void Shard::RecordTurnReplies() noexcept {
  if (replies_this_turn_ == 0) return;
  const uint64_t sent_us = clock_->MonotonicUs();
  request_durations_.Record(sent_us >= now_us_ ? sent_us - now_us_ : 0, replies_this_turn_);
  replies_this_turn_ = 0;
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
  if (answering_slot_) {
    // now_us_ is the turn's clock reading, just after the completion woke the shard.
    request_durations_.Record(now_us_ >= answering_received_us_ ? now_us_ - answering_received_us_
                                                                : 0);
  } else {
    ++replies_this_turn_;
  }
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
