// FleetWorker: one thread's share of the simulated fleet. Device i belongs to worker i % T;
// the worker sends its devices' requests, retransmits them (RFC 7252 §4.2), matches replies
// to exchanges by (the reply's destination address = the device, MID, token), and counts.
//
// Load models:
//   closed loop  every device keeps at most W requests in flight, and the worker at most C
//                (--in-flight, split across workers); a device whose exchange ends goes to the
//                back of a FIFO of devices with a free slot, so with C < N x W the devices take
//                turns and every address is used. The cap opens from 64 by one per answer (a
//                slow start), so the first burst does not overflow the server's socket buffer.
//   open loop    --rate R: new requests are paced to R/T per second per worker (1 ms steps; a
//                backlog above 10 ms worth is dropped and counted as schedule_missed), each
//                from the next device in the FIFO; when every device already has W in flight
//                the scheduled request is counted as schedule_missed too.
// Both stop starting exchanges at the end of --duration (or --max-requests), then keep
// receiving and retransmitting for at most --drain-ms; what is still open then is unfinished.
//
// State per device: 8 bytes, plus per window slot 24 bytes and a 12-byte timer link, plus a
// 4-byte FIFO entry (48 bytes for W = 1); IPv6 adds a 4-byte fd per device.
//
// DTLS mode (config.dtls_keys set; IPv4 only): each device also has a wolfSSL DTLS 1.2 PSK
// client (a WOLFSSL with custom I/O) fed by the worker's one socket: an incoming datagram goes
// to the device its destination address names, and every record the client writes leaves
// through the same SendBatch with the device's source address (IP_PKTINFO). Handshake() runs
// every keyed device's handshake first (at most config.handshake_concurrency at once, flights
// retransmitted after 1 s of silence, wolfSSL's doubling), then Run() sends the requests as
// records over the sessions (a CoAP retransmission is a new record) and closes them all with
// close_notify at the end. Churn() is --dtls-handshakes-only: handshake, close_notify, and a
// new handshake from the same address, per device, until end_ns.
// Extra state per DTLS device: 24 bytes here plus the WOLFSSL and its session (heap, measured
// by the main thread: see loadgen_main.cc).
//
// Thread contract: Run() is called on one thread, which then alone touches the worker; the
// main thread reads progress() (relaxed atomics) at any time and the other accessors only
// after that thread has been joined. `stop` may be set from a signal handler.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/loadgen/address_plan.h"
#include "bench/loadgen/histogram.h"
#include "bench/loadgen/request_template.h"
#include "bench/loadgen/retransmit.h"
#include "bench/loadgen/timer_wheel.h"
#include "bench/loadgen/udp_batch.h"
#include "common/result.h"

struct WOLFSSL;
struct WOLFSSL_CTX;

namespace coapgate::loadgen {

inline constexpr unsigned kMaxWindow = 64;

struct DtlsCredential;  // dtls_keys.h

struct FleetConfig {
  const AddressPlan* plan = nullptr;         // must outlive the workers
  const RequestTemplate* request = nullptr;  // likewise
  sockaddr_storage target{};
  socklen_t target_length = 0;
  unsigned threads = 1;
  unsigned window = 1;          // W, 1..kMaxWindow
  uint64_t in_flight = 0;       // C for this worker (closed loop)
  double rate = 0;              // req/s for this worker; 0 = closed loop
  bool confirmable = true;
  RetransmitParams retransmit;
  uint64_t seed = 0;            // MIDs, tokens and waits derive from it
  uint64_t max_requests = 0;    // for this worker
  uint64_t drain_ns = 0;        // after the load phase, how long to wait for open exchanges
  int buffer_bytes = 0;
  int ack_log_fd = -1;          // O_APPEND file for "device seq code" lines of 2.xx answers
  bool log_all = false;         // every outcome in the ack log, with the first transmission's
                                // CLOCK_MONOTONIC ms: "device seq code|RST|timeout ms"
  const std::atomic<bool>* stop = nullptr;
  const std::atomic<bool>* end_load = nullptr;  // set: the load phase ends now (drain follows)
  // DTLS mode when set: indexed by global device; an empty key leaves the device out.
  const std::vector<DtlsCredential>* dtls_keys = nullptr;
  std::string cipher = "PSK-AES128-CCM-8";
  unsigned handshake_concurrency = 64;  // for this worker
  uint32_t handshake_timeout_ms = 10'000;
};

struct DtlsCounters {
  uint64_t handshakes = 0;            // completed full handshakes
  uint64_t handshake_failures = 0;    // wolfSSL gave up (alert, protocol error, no memory)
  uint64_t handshake_timeouts = 0;    // not complete after handshake_timeout_ms or the deadline
  uint64_t handshake_retransmissions = 0;  // flights resent after silence
  uint64_t handshakes_unfinished = 0; // Churn: in progress at the end
  uint64_t no_key = 0;                // devices without a key (left out)
  uint64_t established = 0;           // Handshake(): sessions up at its end
  uint64_t sessions_lost = 0;         // an established session failed or got close_notify
  uint64_t write_errors = 0;          // a request not sent: no session, or wolfSSL_write failed
  uint64_t oversize = 0;              // records larger than the send slot (dropped)
  uint64_t without_session = 0;       // datagrams for a device with no WOLFSSL (e.g. the
                                      // server's close_notify after ours, in Churn)

  void Add(const DtlsCounters& other) noexcept;
};

struct FleetCounters {
  uint64_t sent = 0;             // exchanges started (first transmissions)
  uint64_t retransmissions = 0;
  uint64_t answered = 0;         // exchanges ended by a response or an RST
  uint64_t answered_in_load = 0; // of those, before the load phase ended
  uint64_t timeouts = 0;         // exchanges given up
  uint64_t duplicates = 0;       // replies for an exchange already ended
  uint64_t empty_acks = 0;       // separate responses announced (RFC 7252 §5.2.2)
  uint64_t unmatched = 0;        // well-formed, from the server, but no exchange of ours
  uint64_t foreign = 0;          // not from the target address
  uint64_t malformed = 0;        // not CoAP, or larger than the receive buffer
  uint64_t send_errors = 0;      // datagrams the kernel refused
  uint64_t schedule_missed = 0;  // open loop: scheduled requests not sent
  uint64_t unfinished = 0;       // exchanges still open at the end
  uint64_t rst = 0;
  std::array<uint64_t, 256> codes{};

  void Add(const FleetCounters& other) noexcept;
};

// What the progress line reads while the workers run; one cache line, written by one worker.
struct alignas(64) FleetProgress {
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> answered{0};
  std::atomic<uint64_t> retransmissions{0};
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> in_flight{0};
  std::atomic<uint64_t> handshakes{0};
  std::atomic<uint64_t> handshake_failures{0};  // failures + timeouts
};

class FleetWorker {
 public:
  // Allocates the device state and opens the sockets. `index` < config.threads.
  [[nodiscard]] static Result<std::unique_ptr<FleetWorker>, std::string> Create(
      const FleetConfig& config, unsigned index);
  ~FleetWorker();
  FleetWorker(const FleetWorker&) = delete;
  FleetWorker& operator=(const FleetWorker&) = delete;

  // Runs the load phase from start_ns (steady clock, the same for every worker) to end_ns,
  // then the drain; returns when both are over or *config.stop is set.
  void Run(uint64_t start_ns, uint64_t end_ns) noexcept;

  // DTLS: every keyed device handshakes once, until all are done or deadline_ns.
  void Handshake(uint64_t deadline_ns) noexcept;
  // DTLS --dtls-handshakes-only: full handshakes in a loop per device until end_ns.
  void Churn(uint64_t end_ns) noexcept;

  [[nodiscard]] FleetProgress& progress() noexcept { return progress_; }
  [[nodiscard]] const FleetCounters& counters() const noexcept { return counters_; }
  [[nodiscard]] const LatencyHistogram& latency() const noexcept { return latency_; }
  [[nodiscard]] uint64_t load_end_ns() const noexcept { return load_end_ns_; }
  [[nodiscard]] uint64_t stop_ns() const noexcept { return stop_ns_; }
  [[nodiscard]] const DtlsCounters& dtls() const noexcept { return dtls_; }
  [[nodiscard]] const LatencyHistogram& handshake_latency() const noexcept {
    return handshake_latency_;
  }
  [[nodiscard]] int receive_buffer_bytes() const noexcept;
  // Heap bytes of the per-device state (devices, slots, timer links, FIFO, fds).
  [[nodiscard]] size_t state_bytes() const noexcept;

 private:
  struct Device {
    uint32_t next_seq = 0;
    uint8_t busy = 0;    // slots in use
    uint8_t queued = 0;  // in the ready FIFO
    uint16_t unused = 0;
  };
  enum SlotState : uint8_t { kFree, kWaitReply, kWaitSeparate };
  struct Slot {
    uint64_t first_sent_ns;  // latency is measured from the first transmission
    uint32_t seq;
    uint32_t wait_ms;        // the current wait; doubles per retransmission
    uint16_t mid;
    uint8_t retransmits;
    SlotState state;
  };
  static_assert(sizeof(Device) == 8 && sizeof(Slot) == 24);
  enum class Tls : uint8_t { kNone, kHandshaking, kEstablished };
  struct TlsDevice {
    WOLFSSL* ssl = nullptr;
    uint64_t start_ns = 0;       // of the current handshake
    uint32_t flight_ms = 0;      // when the last flight left (NowMs)
    Tls state = Tls::kNone;
  };
  static_assert(sizeof(TlsDevice) == 24);

  FleetWorker(const FleetConfig& config, unsigned index, uint32_t devices);

  [[nodiscard]] uint32_t Global(uint32_t local) const noexcept {
    return local * config_.threads + index_;
  }
  [[nodiscard]] int FdOf(uint32_t local) const noexcept {
    return device_fds_.empty() ? fd_ : device_fds_[local];
  }
  [[nodiscard]] uint32_t SourceOf(uint32_t global) const noexcept {
    return config_.plan->ipv6() ? 0 : config_.plan->Ipv4Of(global);
  }
  [[nodiscard]] uint32_t NowMs(uint64_t now_ns) const noexcept {
    return static_cast<uint32_t>((now_ns - start_ns_) / 1'000'000);
  }

  void Admit(uint64_t now) noexcept;
  void StartExchange(uint32_t local, uint64_t now) noexcept;
  void Transmit(uint32_t slot_id) noexcept;
  void OnExpired(uint32_t slot_id, uint32_t now_ms) noexcept;
  void Complete(uint32_t slot_id, uint8_t code, bool rst, uint64_t now) noexcept;
  void Release(uint32_t slot_id) noexcept;
  void SendEmptyAck(uint32_t local, uint16_t mid) noexcept;
  void Stale(const Device& device, bool has_token, uint32_t token, uint64_t salt) noexcept;
  // Reads and handles everything queued on `fd`; false when nothing was.
  bool DrainSocket(int fd, uint32_t local, uint64_t* now) noexcept;
  void OnDatagram(uint32_t local, std::span<const std::byte> bytes, uint64_t now) noexcept;
  void PushReady(uint32_t local) noexcept;
  // One ack-log line for slot `s` of device `global`; `outcome` is "2.04", "RST", "timeout".
  void LogOutcome(uint32_t global, const Slot& s, const char* outcome) noexcept;
  void FlushLog() noexcept;
  void Publish() noexcept;
  // DTLS
  [[nodiscard]] bool dtls_mode() const noexcept { return config_.dtls_keys != nullptr; }
  void HandshakeLoop(uint64_t end_ns, bool churn) noexcept;
  void StartHandshake(uint32_t local, uint64_t now) noexcept;
  void Advance(uint32_t local, uint64_t now) noexcept;
  void FreeSession(uint32_t local, bool notify) noexcept;
  void FeedDtls(uint32_t local, std::span<const std::byte> bytes, uint64_t now) noexcept;
  void WriteRecord(uint32_t local, std::span<const std::byte> plain) noexcept;
  static int ReceiveCallback(WOLFSSL* ssl, char* buffer, int size, void* context) noexcept;
  static int SendCallback(WOLFSSL* ssl, char* buffer, int size, void* context) noexcept;
  static unsigned int PskCallback(WOLFSSL* ssl, const char* hint, char* identity,
                                  unsigned int identity_max, unsigned char* key,
                                  unsigned int key_max) noexcept;

  const FleetConfig config_;
  const unsigned index_;
  const unsigned window_;
  const bool open_loop_;
  RetransmitPolicy policy_;

  std::vector<Device> devices_;
  std::vector<Slot> slots_;        // device-major: slot id = local device x W + k
  TimerWheel wheel_;
  std::vector<uint32_t> ready_;    // FIFO ring of local devices with a free slot
  size_t ready_head_ = 0;
  size_t ready_count_ = 0;
  std::vector<int> device_fds_;    // IPv6 only: one socket per device

  int fd_ = -1;  // IPv4: the worker's one socket
  int epoll_ = -1;
  SendBatch send_;
  ReceiveBatch receive_;

  uint64_t in_flight_ = 0;
  uint64_t cap_ = 0;               // closed loop: the current in-flight cap (slow start)
  uint64_t scheduled_ = 0;         // open loop: requests the schedule has called for
  uint64_t start_ns_ = 0;
  uint64_t end_ns_ = 0;
  bool loading_ = true;
  uint64_t load_end_ns_ = 0;
  uint64_t stop_ns_ = 0;
  std::string log_;

  // DTLS
  WOLFSSL_CTX* ctx_ = nullptr;
  std::vector<TlsDevice> tls_;
  uint32_t current_ = 0;                 // the device whose WOLFSSL is being called
  std::span<const std::byte> input_;     // the datagram being fed to it
  bool flight_sent_ = false;
  bool churn_ = false;
  uint64_t churn_end_ns_ = 0;
  std::vector<uint32_t> handshaking_;    // locals in Tls::kHandshaking
  std::vector<uint32_t> to_start_;       // FIFO of locals waiting for a handshake slot
  size_t to_start_head_ = 0;
  std::vector<std::byte> plain_;         // one request or one decrypted record
  DtlsCounters dtls_;
  LatencyHistogram handshake_latency_;

  FleetCounters counters_;
  LatencyHistogram latency_;
  FleetProgress progress_;
};

}  // namespace coapgate::loadgen
