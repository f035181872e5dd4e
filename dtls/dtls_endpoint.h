// DtlsEndpoint: one shard's coaps:// server (docs/bootstrap-and-dtls.md). DTLS 1.2, PSK only, on wolfSSL driven
// through custom I/O callbacks over the datagram being handled and Transport::Send: no
// per-peer sockets, no threads, no timers of its own (the shard calls Tick).
//
// What it guarantees (reliability-and-ecosystem.md §3.3):
// - No per-peer state before a ClientHello carries a valid stateless cookie (cookie.h): any
//   other ClientHello gets a 60-byte HelloVerifyRequest and nothing is allocated (D01-D03).
//   The first wolfSSL object of a peer is created for, and fed, that ClientHello; wolfSSL is
//   handed the same cookie secret and peer bytes, so it does not ask for a second cookie.
// - Bounded: at most max_sessions sessions (established + handshaking, successors included)
//   and max_handshakes unfinished handshakes, at most max_handshakes_per_source of them from
//   one source IP address (whatever its ports); handshakes time out, idle sessions are evicted
//   stale-first; past a bound a handshake is refused (its ClientHello dropped) and counted.
// - Fragmented ClientHellos are dropped (D06); records wolfSSL rejects (bad MAC, replayed:
//   anti-replay is wolfSSL's default 64-record window) are dropped silently and counted.
// - An established session survives a fresh epoch-0 ClientHello from its address until the
//   new handshake completes, and is replaced then (RFC 6347 §4.2.8, D12).
// - Renegotiation is refused: handshake records on an established session never reach
//   wolfSSL (which is built without secure renegotiation, too). Until the peer shows it has
//   our Finished, a repeat of its last flight makes us resend ours instead.
// - Idle sessions hold what wolfSSL cannot do without: its handshake state is freed the
//   moment the handshake completes (see CompleteHandshake in dtls_endpoint.cc).
// - close_notify ends the session (answered with close_notify); later records are dropped.
//
// Thread contract: every call on the owning shard's thread. Transport and PskLookup are called
// only from inside these calls, on that thread, and must not call back into the endpoint
// except DtlsEndpoint::Send from inside Transport::Deliver.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.h"
#include "common/result.h"
#include "dtls/cookie.h"
#include "dtls/flight_capture.h"
#include "dtls/session_table.h"
#include "net/local_address.h"

struct WOLFSSL_CTX;
struct WOLFSSL;

namespace coapgate::dtls {

struct DtlsSession;
struct WolfsslIo;

// How to reach a peer again: the shard fills it from the received datagram and gets it back
// unchanged in Transport::Send, so a record's reply leaves from the address the device sent
// it to (IP_PKTINFO). dtls never interprets it: a session keeps the route of its latest
// authenticated record.
struct Route {
  sockaddr_in6 address{};  // sockaddr_in or sockaddr_in6 in this storage
  socklen_t length = 0;
  uint16_t socket = 0;
  net::LocalAddress local;
};

using SessionId = uint64_t;  // index + generation: a stale id never reaches a newer session
// Datagrams above this are dropped unread: wolfSSL reads at most its MTU (WOLFSSL_MAX_MTU,
// set to the same value in dtls/CMakeLists.txt) per datagram.
inline constexpr size_t kMaxDatagramSize = 1500;

// Why a handshake ended without a session (each also counted in EndpointCounters).
enum class HandshakeFailure : uint8_t {
  kUnknownIdentity,  ///< PskLookup gave no key
  kWrongKey,         ///< timed out after a record failed to decrypt: another PSK (D08)
  kTimeout,          ///< the peer stopped answering
  kFailed,           ///< alert, protocol error or a wolfSSL failure
  kHandshakeLimit,   ///< max_handshakes reached: the hello was refused
  kPerSourceCap,     ///< max_handshakes_per_source reached for the hello's host
  kTableFull,        ///< max_sessions reached, nothing stale enough to evict
};

class Transport {  // implemented by the shard; called only from inside DtlsEndpoint calls
 public:
  virtual void Send(const Route& to, std::span<const std::byte> datagram) noexcept = 0;
  // One decrypted application record of an established session. `identity` = PSK identity.
  // The views are valid until Deliver returns.
  virtual void Deliver(SessionId session, std::string_view identity, const Route& from,
                       std::span<const std::byte> plaintext) noexcept = 0;
  // A handshake from `from` failed or was refused. `identity` is its PSK identity when the
  // peer sent one (untrusted bytes; empty for refusals at the ClientHello). For the shard's
  // per-device log and activity; the default ignores it.
  virtual void HandshakeFailed(const Route& from, std::string_view identity,
                               HandshakeFailure why) noexcept {
    (void)from, (void)identity, (void)why;
  }

 protected:
  ~Transport() = default;
};

// The key of a PSK identity, or 0 if unknown/inactive (handshake then fails, counted).
// Must not throw.
using PskLookup =
    std::function<size_t(std::string_view identity, std::span<std::byte, kMaxPskLength> key)>;

struct EndpointOptions {
  uint32_t max_sessions = 100000;  // per shard (established + handshaking)
  uint32_t max_handshakes = 2048;  // concurrent unfinished handshakes per shard
  // Concurrent unfinished handshakes from one source IP address (any port), so that one host
  // completing cookie exchanges and then stalling cannot hold every max_handshakes slot.
  uint32_t max_handshakes_per_source = 8;
  uint32_t handshake_timeout_ms = 15000;
  uint32_t idle_timeout_s = 1800;  // evicted when idle this long, or earlier (stale first)
                                   // when the table is full, see below
  // When the table is full, a new handshake evicts the least recently active established
  // session only if it has been idle at least this long; otherwise the handshake is refused.
  // Keeps a flood of (cookie-verified, PSK-less) handshakes from churning active devices.
  uint32_t evict_min_idle_s = 60;
  uint32_t cookie_rotation_s = 60;
  std::string identity_hint{};  // empty = none (node-dtls-client crashes on a hint)
};

// An established session as DtlsEndpoint::ExportSessions hands it out and ImportSession takes
// it back (the restart state, engine/restart_state.h, carries it to the next process). The
// views are valid only during the visit. `state` holds the session's keys: whoever stores it
// must encrypt it (engine/state_file.h).
struct ExportedSession {
  Route route;                        ///< its latest authenticated route
  std::string_view identity;          ///< PSK identity (the device's ICCID)
  uint64_t idle_ms = 0;               ///< since its last authenticated record
  std::span<const std::byte> state;   ///< wolfSSL_dtls_export: options, keys, epochs, window
};

// Why ImportSession refused a session (the caller counts and logs them).
enum class ImportRefusal : uint8_t {
  kBadRoute,      ///< the route is not an AF_INET/AF_INET6 address
  kBadIdentity,   ///< empty or longer than 128 bytes
  kDuplicate,     ///< the endpoint already has a session for that peer
  kTableFull,     ///< max_sessions reached
  kRejected,      ///< wolfSSL refused the state (garbled, another build, an unknown suite)
};

// Single writer (the shard), any reader: relaxed atomics.
struct EndpointCounters {
  std::atomic<uint64_t> datagrams{0};             ///< every OnDatagram
  std::atomic<uint64_t> hello_verify_sent{0};     ///< HVRs (cookieless or bad-cookie hellos)
  std::atomic<uint64_t> bad_cookie{0};            ///< cookie present but not valid (D03)
  std::atomic<uint64_t> client_hello_dropped{0};  ///< malformed or fragmented ClientHello
  std::atomic<uint64_t> handshakes_started{0};    ///< WOLFSSL created for a verified hello
  std::atomic<uint64_t> handshakes_completed{0};
  std::atomic<uint64_t> sessions_replaced{0};      ///< an established session's successor won
  std::atomic<uint64_t> handshakes_superseded{0};  ///< unfinished, replaced by a newer hello
  std::atomic<uint64_t> handshake_failed_unknown_identity{0};
  std::atomic<uint64_t> handshake_failed_other{0};      ///< alert, protocol error, wolfSSL failure
  std::atomic<uint64_t> handshake_failed_wrong_key{0};  ///< timed out after a record of it
                                                        ///< failed to decrypt: the Finished
                                                        ///< under a wrong PSK (D08)
  std::atomic<uint64_t> handshake_timeouts{0};          ///< every other unfinished handshake
  std::atomic<uint64_t> handshakes_refused{0};          ///< max_handshakes reached
  std::atomic<uint64_t> handshakes_refused_per_source{0};  ///< max_handshakes_per_source
                                                           ///< reached for the hello's host
  std::atomic<uint64_t> table_full_refused{0};          ///< max_sessions reached, nothing stale
  std::atomic<uint64_t> evicted_idle{0};                ///< idle_timeout_s passed
  std::atomic<uint64_t> evicted_for_space{0};           ///< stale session evicted for a handshake
  std::atomic<uint64_t> retransmissions{0};             ///< flights resent (timer, or asked)
  std::atomic<uint64_t> records_delivered{0};
  std::atomic<uint64_t> records_sent{0};
  std::atomic<uint64_t> records_dropped{0};  ///< bad MAC, replay, unknown peer, garbage
  std::atomic<uint64_t> renegotiation_refused{0};
  std::atomic<uint64_t> close_notify{0};
  std::atomic<uint64_t> sessions_failed{0};  ///< fatal error on an established session
  std::atomic<uint64_t> send_failed{0};      ///< Send on a live session that failed
};

class DtlsEndpoint {  // one per shard; every call on the shard thread; no threads of its own
 public:
  // `transport` must outlive the endpoint. Fails (with a reason) on bad options or if
  // wolfSSL cannot be set up (e.g. a suite of docs/bootstrap-and-dtls.md missing from the build).
  static Result<std::unique_ptr<DtlsEndpoint>, std::string> Create(const EndpointOptions& options,
                                                                   Transport* transport,
                                                                   PskLookup psk_lookup);
  ~DtlsEndpoint();
  DtlsEndpoint(const DtlsEndpoint&) = delete;
  DtlsEndpoint& operator=(const DtlsEndpoint&) = delete;

  // Handles one received datagram from `from`. `now_ms` is a monotonic clock (the same one
  // Tick gets). Replies go out through Transport::Send, plaintext through Deliver.
  void OnDatagram(const Route& from, std::span<const std::byte> datagram, uint64_t now_ms) noexcept;
  // Encrypts one application record on `session` and sends it via Transport::Send; false if
  // the session is gone (or not yet established) or wolfSSL refused the write.
  bool Send(SessionId session, std::span<const std::byte> plaintext) noexcept;
  // Handshake retransmissions/timeouts, idle eviction, cookie rotation, release of held final
  // flights; returns ms until it needs calling again (>= 1).
  int Tick(uint64_t now_ms) noexcept;

  // Planned restarts (docs/operations.md). Both run on the thread that owns the endpoint, or
  // while no thread runs it (the shard before Start or after Join); they allocate and are
  // control plane, never called per datagram.
  //
  // Visits every established session, least recently active first (importing them in this
  // order rebuilds the same idle-eviction order). Handshakes in progress are not exported:
  // the peer retransmits its flight and starts over.
  void ExportSessions(uint64_t now_ms,
                      const std::function<void(const ExportedSession&)>& visit) const;
  // Adds one established session as exported by another endpoint (of this build, with the
  // same cipher suites), idle since now_ms - session.idle_ms: the peer's next record is
  // decrypted as if the session had never left. The PSK is not needed (the exported state
  // holds the derived keys) and PskLookup is not called.
  [[nodiscard]] Result<void, ImportRefusal> ImportSession(const ExportedSession& session,
                                                          uint64_t now_ms);

  [[nodiscard]] size_t sessions() const noexcept { return table_.size(); }
  [[nodiscard]] size_t handshakes() const noexcept { return table_.handshakes(); }
  [[nodiscard]] const EndpointCounters& counters() const noexcept { return counters_; }
  // Heap bytes held by live sessions: everything wolfSSL allocated for them (counted through
  // wolfSSL_SetAllocators hooks, by malloc_usable_size) plus our per-session state. The
  // preallocated table is table_bytes().
  [[nodiscard]] size_t session_heap_bytes() const noexcept;
  [[nodiscard]] size_t table_bytes() const noexcept;

 private:
  using Session = DtlsSession;
  friend struct WolfsslIo;  // the wolfSSL callbacks: capture_, transport_, psk_lookup_, heap
  struct HeldFlight {  // a session holding its final flight, and until when
    SessionId id;
    uint64_t release_ms;
  };

  DtlsEndpoint(const EndpointOptions& options, Transport* transport, PskLookup psk_lookup,
               const CookieSecret& secret, uint64_t hash_seed);

  void HandleClientHello(const Route& from, const PeerKey& key, uint32_t slot,
                         std::span<const std::byte> datagram, uint64_t now_ms) noexcept;
  void StartHandshake(const Route& from, const PeerKey& key, uint32_t predecessor,
                      const CookieSecret& secret, uint64_t hello_tag,
                      std::span<const std::byte> datagram, uint64_t now_ms) noexcept;
  void Retransmit(uint32_t slot) noexcept;
  bool MakeRoom(const Route& from, uint32_t* predecessor, uint64_t now_ms) noexcept;
  // Unfinished handshakes (successors included) whose peer has the IP address of `from`.
  [[nodiscard]] uint32_t HandshakesFromHost(const Route& from) const noexcept;
  // Feeds `datagram` to the session's wolfSSL and acts on the outcome; the slot may be freed.
  void Feed(uint32_t slot, const Route& from, std::span<const std::byte> datagram,
            uint64_t now_ms) noexcept;
  void CompleteHandshake(uint32_t slot, uint64_t now_ms) noexcept;
  void ResendFinalFlight(uint32_t slot) noexcept;
  void ReleaseFinalFlight(Session& session) noexcept;
  struct DropMark;
  void ReadRecords(uint32_t slot, const Route& from, std::span<const std::byte> datagram,
                   uint64_t now_ms, DropMark* drops) noexcept;
  void FailHandshake(uint32_t slot) noexcept;
  // Tells the transport, then destroys the slot's session.
  void DestroyFailed(uint32_t slot, HandshakeFailure why) noexcept;
  void Destroy(uint32_t slot) noexcept;
  void SendHelloVerifyRequest(const Route& to, const PeerKey& key,
                              const ClientHelloView& hello) noexcept;

  EndpointOptions options_;
  Transport* transport_;
  PskLookup psk_lookup_;
  WOLFSSL_CTX* context_ = nullptr;
  CookieSecrets cookies_;
  SessionTable table_;
  std::vector<std::unique_ptr<Session>> sessions_;  // by slot
  std::vector<HeldFlight> held_;                    // ring, release_ms ascending
  size_t held_head_ = 0;
  size_t held_size_ = 0;
  // What wolfSSL sends during the handshake call in progress (see CompleteHandshake).
  FlightCapture capture_;
  std::unique_ptr<std::byte[]> plaintext_;  // one record: it fits in a datagram
  int64_t heap_bytes_ = 0;  // wolfSSL bytes allocated inside our calls + Session objects
  EndpointCounters counters_;
};

}  // namespace coapgate::dtls
