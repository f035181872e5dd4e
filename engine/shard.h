// Shard: one pinned thread that owns its sockets (one per listen address, SO_REUSEPORT), its
// DatagramIo, its exchange memory, its in-flight slots (sinks::Handoff + InflightTable) and its
// counters, and runs the request path from datagram to reply:
//
//   receive → triage (codec) → device by source IP or PSK identity (4.01) → topic (4.00) →
//   exchange memory (duplicates answered or ignored here) → copy into an in-flight slot →
//   publisher queue → ... completion → 2.04 / 5.03.
//
// Unknown devices and bad topics are answered without an exchange record, so traffic from
// unregistered addresses cannot displace any device's memory. The DatagramIo and the clock are
// seams (ShardOptions::io_factory, ::clock): tests/engine/shard_test.cc drives a real shard
// through in-memory fakes.
//
// Nothing a shard owns is touched by another thread, except through the Handoff queues and
// the relaxed-atomic counters and flags below. No allocation and no lock on the data path
// (the registry refresh takes a mutex only when SIGHUP swapped the snapshot).
#pragma once

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "codec/message.h"
#include "common/clock.h"
#include "common/duration_histogram.h"
#include "codec/triage.h"
#include "dtls/dtls_endpoint.h"
#include "net/datagram_io.h"
#include "engine/exchange_memory.h"
#include "engine/first_registration.h"
#include "engine/inflight_table.h"
#include "engine/restart_state.h"
#include "net/ip_address.h"
#include "registry/device_activity.h"
#include "registry/registry_holder.h"
#include "engine/shard_counters.h"
#include "sinks/handoff.h"

namespace coapgate::bootstrap {
class BootstrapService;
}  // namespace coapgate::bootstrap
namespace coapgate::registry {
class KeyStore;
}  // namespace coapgate::registry

namespace coapgate::engine {

struct ShardOptions {
  uint32_t index = 0;
  int cpu = -1;               ///< CPU to pin to; -1 = not pinned
  std::vector<int> sockets;   ///< owned by the shard once Create succeeded
  // Per socket: true for coaps:// (DTLS) sockets. Empty: all plain.
  std::vector<bool> secure;
  dtls::EndpointOptions dtls;   ///< used when a socket is secure
  const registry::KeyStore* psk_store = nullptr;  ///< generated PSKs for DTLS (may be null)
  // Builds the shard's DatagramIo on the shard thread (net::MakeUringIo, net::MakeRecvmmsgIo,
  // or a test's fake). Required.
  net::DatagramIoFactory io_factory;
  // Monotonic and wall time, read once per loop turn; null: the system clocks. Must outlive
  // the shard.
  const Clock* clock = nullptr;
  uint32_t max_payload = 1024;
  // The exchange memory: records (devices) per shard and exchanges per device (K).
  uint32_t dedup_devices = 1024;
  uint32_t dedup_per_device = ExchangeMemory::kDefaultPerDevice;
  uint32_t inflight_capacity = 8192;
  uint32_t exchange_lifetime_s = 247;
  uint32_t non_lifetime_s = 145;
  uint32_t response_budget_ms = 1500;
  uint32_t busy_max_age_s = 5;
  bool ack_on_enqueue = false;         ///< coap.ack = "enqueue"
  const registry::RegistryHolder* registry = nullptr;
  // One per publisher worker (lane): written after pushing to that lane's queue. Non-empty;
  // at most 64.
  std::vector<int> publisher_wake_fds;
  // One flag per lane, written by its worker: false while one of its sinks is known down, so
  // the shard answers 5.03 at once. Null: always open.
  const std::atomic<bool>* sinks_available = nullptr;
  // GET /bootstrap on plain CoAP goes here (docs/bootstrap-and-dtls.md); null: 4.04.
  bootstrap::BootstrapService* bootstrap = nullptr;
  // Told of every request and GET /bootstrap of an active device (its LIFECYCLE event,
  // engine/first_registration.h); null: none (the CSV backend). Outlives the shard.
  FirstRegistration* first_registration = nullptr;
  // False: the shard reads nothing until RequestReceiving(true) (a take-over's successor,
  // which must not read before its predecessor committed to the hand-over).
  bool receive = true;
};

class Shard final : private dtls::Transport {
 public:
  static Result<std::unique_ptr<Shard>, std::string> Create(ShardOptions options);
  ~Shard();

  // The thread exists from Create on (it owns the io backend); Start lets it serve.
  void Start();
  // New requests get 5.03 from now on; pending ones still complete.
  void RequestDrain() noexcept { draining_.store(true, std::memory_order_relaxed); }
  void RequestStop() noexcept;
  void Join();
  // Hand-over to a successor process (engine/takeover_channel.h): stop or resume taking datagrams
  // from the sockets. What was already taken is still handled, pending messages still
  // complete and replies still leave; what the kernel queues stays in the sockets.
  void RequestReceiving(bool on) noexcept;
  // True once the shard's backend took its last datagram after RequestReceiving(false) and a
  // whole loop turn handled it: from then on only completions change the shard's state.
  [[nodiscard]] bool receive_stopped() const noexcept {
    return receive_stopped_.load(std::memory_order_acquire);
  }
  // True when, at the end of the shard's last loop turn, every request it accepted had its
  // answer (2.04 or 5.03), whether or not the publisher has completed it yet.
  [[nodiscard]] bool all_answered() const noexcept {
    return all_answered_.load(std::memory_order_acquire);
  }

  // Planned restarts (docs/operations.md): the shard's established DTLS sessions and answered
  // exchanges out to a restart state, and back in. REQUIRES: the shard thread is not serving,
  // i.e. before Start() (its endpoint is built by then: Create waited for it) or after Join();
  // the Start/Join synchronisation orders these calls with the thread's own accesses. Control
  // plane: they allocate.
  void ExportState(RestartStateWriter* out) const;
  // A session whose route names a socket of this shard that is not coaps:// is kBadRoute.
  [[nodiscard]] Result<void, dtls::ImportRefusal> ImportSession(const dtls::ExportedSession& s);
  [[nodiscard]] bool ImportExchange(const ExchangeMemory::SavedExchange& e);
  // The take-over's ExportState: run by the shard's own thread at the end of a loop turn,
  // while it serves (stopped reading, nothing pending), so that a hand-over that fails leaves
  // it serving as before. The caller waits up to timeout_ms; false when the shard did not
  // get to it (and then never will).
  [[nodiscard]] bool ExportOnShardThread(RestartStateWriter* out, int timeout_ms);

  // Messages accepted but not yet answered or completed, as of the end of the shard's last
  // loop turn (read by the control thread).
  [[nodiscard]] uint32_t pending() const noexcept {
    return pending_.load(std::memory_order_acquire);
  }
  // True once a whole loop turn ran with the drain request seen: from then on pending() can
  // only fall, since every request of that turn and later was answered 5.03.
  [[nodiscard]] bool drain_seen() const noexcept {
    return drain_seen_.load(std::memory_order_acquire);
  }
  // Loop turns completed: the control thread's proof of life (an idle shard still turns at
  // least every kIdleWaitMs), read by the service watchdog.
  [[nodiscard]] uint64_t turns() const noexcept { return turns_.load(std::memory_order_relaxed); }
  [[nodiscard]] const ShardCounters& counters() const noexcept { return counters_; }
  // Its sockets, one per listen address in order (owned by the shard; handed to a successor
  // as descriptors of the same sockets).
  [[nodiscard]] const std::vector<int>& sockets() const noexcept { return options_.sockets; }
  // Heap bytes of the exchange memory, allocated by Create (fixed; any thread).
  [[nodiscard]] size_t exchange_memory_bytes() const noexcept { return exchanges_.MemoryBytes(); }
  [[nodiscard]] sinks::Handoff& handoff() noexcept { return handoff_; }
  [[nodiscard]] const char* io_name() const noexcept { return io_->name(); }
  // The DTLS endpoint's counters, or null without coaps:// sockets.
  [[nodiscard]] const dtls::EndpointCounters* dtls_counters() const noexcept {
    return dtls_ ? &dtls_->counters() : nullptr;
  }
  // Live DTLS sessions (established and handshaking), as of the end of the shard's last loop
  // turn.
  [[nodiscard]] size_t dtls_sessions() const noexcept {
    return dtls_sessions_.load(std::memory_order_relaxed);
  }
  // Of those, the unfinished handshakes (same moment).
  [[nodiscard]] size_t dtls_handshakes() const noexcept {
    return dtls_handshakes_.load(std::memory_order_relaxed);
  }
  // The exchange memory's occupancy as of the end of the shard's last loop turn (published
  // once per turn with relaxed stores, so any thread reads it without touching the table):
  // device records in use, and remembered exchanges (non-free entries).
  [[nodiscard]] uint32_t exchange_devices_in_use() const noexcept {
    return exchange_devices_in_use_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] uint32_t exchange_entries_in_use() const noexcept {
    return exchange_entries_in_use_.load(std::memory_order_relaxed);
  }
  // Its capacity: records, and entries per record (fixed at construction; any thread).
  [[nodiscard]] uint32_t exchange_device_capacity() const noexcept {
    return options_.dedup_devices;
  }
  [[nodiscard]] uint32_t exchange_per_device() const noexcept { return options_.dedup_per_device; }
  // Time from a request's datagram to its answer, one observation per reply CountReply
  // counts (recorded by the shard thread; any thread reads). See RecordTurnReplies.
  [[nodiscard]] const DurationHistogram& request_durations() const noexcept {
    return request_durations_;
  }

 private:
  // Where a reply goes: the datagram's peer and socket, or for DTLS the session that
  // encrypts it (and then sends it to the session's current address).
  struct Peer {
    const sockaddr* address;
    socklen_t length;
    uint16_t socket;
    net::LocalAddress local;  ///< the address the request was sent to: replies leave from it
    dtls::SessionId session = 0;  ///< non-zero: encrypt on this DTLS session
  };
  // Who sent a request: the address that identifies a plain CoAP device, or the PSK identity
  // of a DTLS session (which then identifies the device and keys its exchanges).
  struct Origin {
    Peer peer;
    net::IpAddress ip;           // the device's address as seen (the envelope's device.ip)
    std::string_view identity;   // DTLS: PSK identity (ICCID); empty: plain CoAP
  };

  explicit Shard(ShardOptions options);
  // The thread: builds the backend, reports through `built` ("" = ok), waits for Start.
  void ThreadMain(std::promise<std::string>& built);
  void Run() noexcept;
  void Handle(const net::ReceivedDatagram& d) noexcept;
  void HandleTruncated(const net::ReceivedDatagram& d) noexcept;
  // GET /bootstrap: identifies the device by source IP (4.01 with a JSON body if unknown or
  // inactive) and hands it to the bootstrap worker, which replies itself; 5.03 when its queue
  // is full. Not deduplicated: within the regeneration window a retransmission gets the same
  // key, and the worker records the call time either way.
  void Bootstrap(const net::ReceivedDatagram& d, const codec::Triage& t) noexcept;
  // The request path shared by plain CoAP and DTLS, from the device lookup to the publisher
  // queue.
  void Ingest(const Origin& origin, const codec::Triage& t) noexcept;
  // Answers what the codec decided by itself (RST, 4.xx, 5.05), or counts the drop.
  // True when `t` is a request left for the caller.
  bool AnswerTriage(const Peer& peer, const codec::Triage& t) noexcept;
  // Sends one encoded reply: encrypted on the peer's DTLS session, or as is.
  void SendBytes(const Peer& peer, std::span<const std::byte> bytes) noexcept;
  // dtls::Transport: the endpoint's datagrams out, decrypted records in.
  void Send(const dtls::Route& to, std::span<const std::byte> datagram) noexcept override;
  void Deliver(dtls::SessionId session, std::string_view identity, const dtls::Route& from,
               std::span<const std::byte> plaintext) noexcept override;
  void HandshakeFailed(const dtls::Route& from, std::string_view identity,
                       dtls::HandshakeFailure why) noexcept override;
  // A refused request (code >= 4.00): the per-device log line (engine/device_log.h), and
  // the answer in the device's activity word when `device` (of registry_) is given, else
  // looked up by the peer's address on plain CoAP (a refusal path: the lookup is its cost
  // only). `claimed`: the PSK identity of an unknown DTLS device; may be empty.
  void Refused(const Peer& peer, const registry::DeviceView* device, std::string_view claimed,
               uint8_t code, registry::Reason why) noexcept;
  // The DTLS key of a PSK identity (docs/registry.md, §6): the device's CSV key (hex-decoded when so
  // marked), else its generated key; 0 for unknown or inactive devices.
  size_t LookupPsk(std::string_view identity,
                   std::span<std::byte, kMaxPskLength> key) const noexcept;
  // The one way a request gets its final answer: piggybacked on the ACK of a CON (same MID) or
  // in a NON with a fresh MID, Max-Age on a 5.03, recorded as the exchange's response (when
  // `exchange` names one) so that a retransmission gets the identical bytes, then sent.
  void Answer(ExchangeMemory::Handle exchange, const Peer& peer, bool confirmable,
              uint16_t request_message_id, std::span<const std::byte> token,
              uint8_t code) noexcept;
  void SendReply(const Peer& peer, codec::MessageType type, uint8_t code, uint16_t message_id,
                 std::span<const std::byte> token, uint16_t max_age) noexcept;
  void DrainCompletions() noexcept;
  void ExpireBudgets() noexcept;
  // Moves the exchange memory's eviction stats and horizon into the counters, once per turn.
  void PublishExchangeStats() noexcept;
  // Counts a reply by code and records its duration: at once for a reply that answers a
  // slot (answering_slot_), at the end of the turn for one that answers a datagram of this
  // turn (RecordTurnReplies).
  void CountReply(uint8_t code) noexcept;
  // The replies to this turn's datagrams, sent at once by the Flush that follows: each took
  // from the turn's clock reading (just after the datagrams were received) to now. One clock
  // read per turn, none per reply.
  void RecordTurnReplies() noexcept;
  [[nodiscard]] static Peer PeerOf(const InflightTable::Slot& s) noexcept {
    return Peer{reinterpret_cast<const sockaddr*>(&s.peer), s.peer_length, s.socket, s.local,
                s.session};
  }
  [[nodiscard]] uint16_t NextMessageId() noexcept { return next_message_id_++; }
  [[nodiscard]] uint16_t BusyMaxAge() noexcept;
  [[nodiscard]] int WaitTimeoutMs() const noexcept;

  ShardOptions options_;
  const Clock* clock_;  ///< options_.clock or the system clocks
  std::unique_ptr<net::DatagramIo> io_;
  std::unique_ptr<dtls::DtlsEndpoint> dtls_;  ///< built on the shard thread; null: no coaps://
  uint64_t dtls_tick_ms_ = 0;                 ///< when the endpoint next wants Tick
  bool dtls_touched_ = false;                 ///< a datagram reached the endpoint this turn
  std::atomic<size_t> dtls_sessions_{0};      ///< published for the control thread
  std::atomic<size_t> dtls_handshakes_{0};    ///< published with dtls_sessions_
  std::atomic<uint32_t> exchange_devices_in_use_{0};  ///< published by PublishExchangeStats
  std::atomic<uint32_t> exchange_entries_in_use_{0};
  DurationHistogram request_durations_;
  uint64_t replies_this_turn_ = 0;  ///< replies to this turn's datagrams, not yet recorded
  // True while DrainCompletions or ExpireBudgets answers a slot: CountReply then records
  // now_us_ - answering_received_us_ at once.
  bool answering_slot_ = false;
  uint64_t answering_received_us_ = 0;
  codec::TriageLimits limits_;
  ExchangeMemory exchanges_;
  ExchangeMemory::Stats exchange_stats_seen_{};  ///< what PublishExchangeStats has counted
  uint32_t horizon_warned_s_ = 0;  ///< last table-bound horizon warning (now_s_); 0 = never
  sinks::Handoff handoff_;
  InflightTable inflight_;
  ShardCounters counters_;
  std::shared_ptr<const registry::DeviceRegistry> registry_;
  uint64_t registry_generation_ = 0;

  uint64_t now_us_ = 0;       ///< monotonic microseconds, read once per loop turn
  uint64_t now_ms_ = 0;       ///< now_us_ in milliseconds
  uint32_t now_s_ = 0;        ///< monotonic seconds for the exchange memory
  uint64_t wall_ms_ = 0;      ///< Unix epoch ms, per loop turn
  uint16_t next_message_id_;  ///< MIDs of NON responses
  uint64_t rng_;              ///< xorshift state for Max-Age jitter
  uint64_t pushed_lanes_ = 0;  ///< bit per lane that got a message this turn
  uint64_t send_failures_seen_ = 0;

  std::mutex start_mutex_;
  std::condition_variable start_cv_;
  bool started_ = false;  ///< guarded by start_mutex_
  std::atomic<bool> draining_{false};
  std::atomic<bool> drain_seen_{false};
  std::atomic<bool> receiving_{options_.receive};  ///< RequestReceiving
  bool io_receiving_ = options_.receive;  ///< what the backend was last told (shard thread)
  std::atomic<bool> receive_stopped_{false};
  std::atomic<bool> all_answered_{true};
  std::atomic<RestartStateWriter*> export_to_{nullptr};  ///< ExportOnShardThread's request
  std::atomic<bool> export_done_{false};
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> pending_{0};
  std::atomic<uint64_t> turns_{0};
  std::thread thread_;
};

}  // namespace coapgate::engine
