#include "dtls/dtls_endpoint.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>

#include "common/check.h"
#include "dtls/dtls_session.h"
#include "dtls/heap_scope.h"
#include "dtls/wolfssl_io.h"

namespace coapgate::dtls {

namespace {

// docs/bootstrap-and-dtls.md, in server preference order: CCM_8 (RFC 7252's mandatory suite) first.
constexpr const char* kCipherSuites[] = {
    "PSK-AES128-CCM-8",       // 0xC0A8
    "PSK-AES128-CBC-SHA256",  // 0x00AE: the only suite of the FreeRTOS blueprint
    "PSK-AES128-GCM-SHA256",  // 0x00A8
    "PSK-AES128-CBC-SHA",     // 0x008C
    "PSK-AES256-CBC-SHA",     // 0x008D
    "PSK-AES128-CCM",         // 0xC0A4
};

// Single writer: a relaxed load and store, no locked read-modify-write.
void Bump(std::atomic<uint64_t>& counter, uint64_t by = 1) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

// How many application-data records a datagram holds, and whether one is its last record.
struct RecordShape {
  size_t application_records = 0;
  bool ends_with_application_data = false;
};

RecordShape ShapeOf(std::span<const std::byte> datagram) noexcept {
  RecordShape shape;
  while (!datagram.empty()) {
    auto record = ParseRecordHeader(datagram);
    if (!record) {
      shape.ends_with_application_data = false;  // garbage at the end: let wolfSSL see it
      break;
    }
    const bool application = record->type == ContentType::kApplicationData;
    shape.application_records += application;
    shape.ends_with_application_data = application;
    datagram = datagram.subspan(kRecordHeaderSize + record->length);
  }
  return shape;
}

// Whether two routes carry the same IP address (ports, sockets and `local` aside).
bool SameHost(const Route& a, const Route& b) noexcept {
  const auto family = a.address.sin6_family;
  if (family != b.address.sin6_family) return false;
  if (family == AF_INET) {
    const auto* x = reinterpret_cast<const sockaddr_in*>(&a.address);
    const auto* y = reinterpret_cast<const sockaddr_in*>(&b.address);
    return x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  return std::memcmp(&a.address.sin6_addr, &b.address.sin6_addr, sizeof a.address.sin6_addr) == 0;
}

uint64_t TagOf(std::span<const std::byte> cookie) noexcept {
  uint64_t tag = 0;
  std::memcpy(&tag, cookie.data(), std::min(cookie.size(), sizeof tag));
  return tag;
}

}  // namespace

Result<std::unique_ptr<DtlsEndpoint>, std::string> DtlsEndpoint::Create(
    const EndpointOptions& options, Transport* transport, PskLookup psk_lookup) {
  using R = Result<std::unique_ptr<DtlsEndpoint>, std::string>;
  auto fail = [](std::string why) -> R { return Fail(std::move(why)); };
  if (transport == nullptr || !psk_lookup) {
    return fail("dtls: a transport and a PSK lookup are required");
  }
  if (options.max_sessions == 0 || options.max_sessions >= SessionTable::kNone) {
    return fail("dtls: max_sessions must be in [1, 2^32-2]");
  }
  if (options.max_handshakes == 0) return fail("dtls: max_handshakes must be at least 1");
  if (options.max_handshakes_per_source == 0) {
    return fail("dtls: max_handshakes_per_source must be at least 1");
  }
  if (options.handshake_timeout_ms == 0 || options.idle_timeout_s == 0 ||
      options.cookie_rotation_s == 0) {
    return fail("dtls: handshake_timeout_ms, idle_timeout_s and cookie_rotation_s must be > 0");
  }
  if (options.identity_hint.size() > kMaxIdentity) {
    return fail("dtls: identity_hint longer than 128 bytes");
  }

  InstallHeapAccounting();
  if (wolfSSL_Init() != WOLFSSL_SUCCESS) return fail("dtls: wolfSSL_Init failed");

  CookieSecret secret;
  CookieSecret seed;
  if (!RandomSecret(&secret) || !RandomSecret(&seed)) {
    wolfSSL_Cleanup();
    return fail("dtls: getrandom failed");
  }
  uint64_t hash_seed;
  std::memcpy(&hash_seed, seed.data(), sizeof hash_seed);
  std::unique_ptr<DtlsEndpoint> endpoint(
      new DtlsEndpoint(options, transport, std::move(psk_lookup), secret, hash_seed));

  WOLFSSL_CTX* context = wolfSSL_CTX_new(wolfDTLSv1_2_server_method());
  if (context == nullptr) return fail("dtls: wolfSSL_CTX_new failed");
  endpoint->context_ = context;
  std::string suites;
  for (const char* suite : kCipherSuites) {
    // One at a time first: wolfSSL accepts a list if any one of its suites is known.
    if (wolfSSL_CTX_set_cipher_list(context, suite) != WOLFSSL_SUCCESS) {
      return fail(std::string("dtls: cipher suite missing from the wolfSSL build: ") + suite);
    }
    suites += suites.empty() ? "" : ":";
    suites += suite;
  }
  if (wolfSSL_CTX_set_cipher_list(context, suites.c_str()) != WOLFSSL_SUCCESS) {
    return fail("dtls: wolfSSL_CTX_set_cipher_list failed");
  }
  wolfSSL_CTX_set_psk_server_callback(context, &WolfsslIo::Psk);
  if (!options.identity_hint.empty() &&
      wolfSSL_CTX_use_psk_identity_hint(context, options.identity_hint.c_str()) !=
          WOLFSSL_SUCCESS) {
    return fail("dtls: wolfSSL_CTX_use_psk_identity_hint failed");
  }
  wolfSSL_CTX_SetIORecv(context, &WolfsslIo::Receive);
  wolfSSL_CTX_SetIOSend(context, &WolfsslIo::Send);
  // No resumption yet: wolfSSL's internal cache is one process-wide table behind a lock,
  // which shards must not share. (Resumption would go through the external-cache hooks.)
  wolfSSL_CTX_set_session_cache_mode(context, WOLFSSL_SESS_CACHE_OFF);
  // A flight in one datagram (ServerHello + ServerHelloDone): one Transport::Send, not two.
  wolfSSL_CTX_set_group_messages(context);
  return endpoint;
}

DtlsEndpoint::DtlsEndpoint(const EndpointOptions& options, Transport* transport,
                           PskLookup psk_lookup, const CookieSecret& secret, uint64_t hash_seed)
    : options_(options),
      transport_(transport),
      psk_lookup_(std::move(psk_lookup)),
      cookies_(secret, uint64_t{options.cookie_rotation_s} * 1000, 0),
      table_(options.max_sessions, hash_seed),
      sessions_(options.max_sessions),
      // Four completions per handshake slot within one handshake timeout: past that, the
      // oldest held flights are released early (see CompleteHandshake).
      held_(size_t{options.max_handshakes} * 4),
      plaintext_(new std::byte[kMaxDatagramSize]) {}

DtlsEndpoint::~DtlsEndpoint() {
  {
    HeapScope scope(&heap_bytes_);
    for (uint32_t slot = 0; slot < sessions_.size(); ++slot) {
      if (sessions_[slot]) Destroy(slot);
    }
  }
  if (context_ != nullptr) wolfSSL_CTX_free(context_);
  wolfSSL_Cleanup();  // balances the wolfSSL_Init in Create, which preceded construction
}

size_t DtlsEndpoint::session_heap_bytes() const noexcept {
  return heap_bytes_ > 0 ? static_cast<size_t>(heap_bytes_) : 0;
}

size_t DtlsEndpoint::table_bytes() const noexcept {
  return table_.memory_bytes() + sessions_.capacity() * sizeof(sessions_[0]) +
         held_.capacity() * sizeof(HeldFlight) + kMaxDatagramSize + FlightCapture::buffer_bytes();
}

// ---------------------------------------------------------------------------------------
// Datagrams

void DtlsEndpoint::OnDatagram(const Route& from, std::span<const std::byte> datagram,
                              uint64_t now_ms) noexcept {
  HeapScope scope(&heap_bytes_);
  Bump(counters_.datagrams);
  cookies_.MaybeRotate(now_ms);

  auto record = ParseRecordHeader(datagram);
  PeerKey key;
  if (!record || datagram.size() > kMaxDatagramSize ||
      !MakePeerKey(reinterpret_cast<const sockaddr*>(&from.address), from.length, from.socket,
                   &key)) {
    Bump(counters_.records_dropped);
    return;
  }
  const uint32_t slot = table_.Find(key);
  if (StartsWithClientHello(datagram)) {
    HandleClientHello(from, key, slot, datagram, now_ms);
    return;
  }
  if (slot == SessionTable::kNone) {  // no state for this peer, and not a ClientHello
    Bump(counters_.records_dropped);
    return;
  }

  const uint32_t successor = table_.successor(slot);
  if (successor != SessionTable::kNone) {
    // The old session keeps its application data; everything of the new handshake goes to
    // the successor. The new handshake's Finished is in epoch 1 like the old session's
    // records, so epoch alone cannot tell; content type can. An alert can belong to either:
    // offer it to both (the wrong one fails its MAC check and drops it silently).
    switch (record->type) {
      case ContentType::kApplicationData:
        Feed(slot, from, datagram, now_ms);
        return;
      case ContentType::kAlert: {
        if (record->epoch == 0) {
          Feed(successor, from, datagram, now_ms);
          return;
        }
        const SessionId heir = table_.IdOf(successor);
        Feed(slot, from, datagram, now_ms);
        const uint32_t again = table_.SlotOf(heir);
        if (again != SessionTable::kNone) Feed(again, from, datagram, now_ms);
        return;
      }
      case ContentType::kHandshake:
      case ContentType::kChangeCipherSpec:
        Feed(successor, from, datagram, now_ms);
        return;
    }
    return;
  }

  if (table_.state(slot) == SessionTable::State::kEstablished) {
    Session& s = *sessions_[slot];
    if (record->type == ContentType::kHandshake || record->type == ContentType::kChangeCipherSpec) {
      if (s.final_flight) {
        // The peer repeats its last flight: ours was lost. wolfSSL 5.5.4 never resends
        // once its handshake is done, so we do, on the flight's first (epoch-0) record.
        if (record->epoch == 0 && record->type == ContentType::kHandshake) {
          ResendFinalFlight(slot);
        } else {
          Bump(counters_.records_dropped);
        }
      } else if (record->type == ContentType::kHandshake && record->epoch != 0) {
        Bump(counters_.renegotiation_refused);  // D14: the only handshake left to start
      } else {
        Bump(counters_.records_dropped);
      }
      return;
    }
    if (record->epoch == 0) {  // a plaintext alert or data on a protected session: forged
      Bump(counters_.records_dropped);
      return;
    }
  }
  Feed(slot, from, datagram, now_ms);
}

void DtlsEndpoint::HandleClientHello(const Route& from, const PeerKey& key, uint32_t slot,
                                     std::span<const std::byte> datagram,
                                     uint64_t now_ms) noexcept {
  auto hello = ParseClientHello(datagram);
  if (!hello) {  // fragmented (D06) or malformed: no state, no answer
    Bump(counters_.client_hello_dropped);
    return;
  }
  const CookieVerdict verdict = cookies_.Check(key.span(), *hello);
  if (verdict == CookieVerdict::kMissing || verdict == CookieVerdict::kInvalid) {
    if (verdict == CookieVerdict::kInvalid) Bump(counters_.bad_cookie);
    SendHelloVerifyRequest(from, key, *hello);
    return;
  }
  // The peer proved it receives at its address. From here on it may cost us state.
  const CookieSecret& secret =
      verdict == CookieVerdict::kCurrent ? cookies_.current() : cookies_.previous();
  const uint64_t tag = TagOf(hello->cookie);

  uint32_t predecessor = SessionTable::kNone;
  if (slot != SessionTable::kNone) {
    if (table_.state(slot) == SessionTable::State::kHandshaking) {
      if (sessions_[slot]->hello_tag == tag) {  // the same ClientHello again (D05)
        Retransmit(slot);
        return;
      }
      Bump(counters_.handshakes_superseded);  // the peer started over
      Destroy(slot);
    } else {
      if (sessions_[slot]->hello_tag == tag) {  // a late copy of this session's own hello
        Bump(counters_.records_dropped);
        return;
      }
      const uint32_t successor = table_.successor(slot);
      if (successor != SessionTable::kNone) {
        if (sessions_[successor]->hello_tag == tag) {
          Retransmit(successor);
          return;
        }
        Bump(counters_.handshakes_superseded);
        Destroy(successor);
      }
      predecessor = slot;  // keep the live session until the new handshake completes (D12)
    }
  }
  StartHandshake(from, key, predecessor, secret, tag, datagram, now_ms);
}

void DtlsEndpoint::Retransmit(uint32_t slot) noexcept {
  // The peer resent the ClientHello this handshake began with: our answer was lost. wolfSSL
  // ignores a repeated ClientHello (its message_seq is old) and would resend only on its
  // timer; resend the flight now instead. The cookie binds the hello to the peer's address,
  // so nobody else can trigger this.
  Session& s = *sessions_[slot];
  if (wolfSSL_dtls_retransmit(s.ssl) == 0) Bump(counters_.retransmissions);
}

uint32_t DtlsEndpoint::HandshakesFromHost(const Route& from) const noexcept {
  uint32_t n = 0;
  for (uint32_t h = table_.OldestHandshake(); h != SessionTable::kNone; h = table_.NextHandshake(h)) {
    n += SameHost(sessions_[h]->route, from);
  }
  return n;
}

bool DtlsEndpoint::MakeRoom(const Route& from, uint32_t* predecessor, uint64_t now_ms) noexcept {
  if (table_.handshakes() >= options_.max_handshakes) {
    Bump(counters_.handshakes_refused);
    transport_->HandshakeFailed(from, {}, HandshakeFailure::kHandshakeLimit);
    return false;
  }
  // A walk over the unfinished handshakes, once per cookie-verified hello that would start
  // one (so bounded by max_handshakes, and skipped while fewer than the cap exist at all).
  if (table_.handshakes() >= options_.max_handshakes_per_source &&
      HandshakesFromHost(from) >= options_.max_handshakes_per_source) {
    Bump(counters_.handshakes_refused_per_source);
    transport_->HandshakeFailed(from, {}, HandshakeFailure::kPerSourceCap);
    return false;
  }
  if (table_.size() < table_.capacity()) return true;
  const uint32_t stale = table_.LeastRecentlyUsed();
  if (stale == SessionTable::kNone ||
      now_ms - table_.stamp(stale) < uint64_t{options_.evict_min_idle_s} * 1000) {
    Bump(counters_.table_full_refused);
    transport_->HandshakeFailed(from, {}, HandshakeFailure::kTableFull);
    return false;
  }
  if (stale == *predecessor) *predecessor = SessionTable::kNone;  // the peer's own old session
  Bump(counters_.evicted_for_space);
  Destroy(stale);
  return true;
}

void DtlsEndpoint::StartHandshake(const Route& from, const PeerKey& key, uint32_t predecessor,
                                  const CookieSecret& secret, uint64_t hello_tag,
                                  std::span<const std::byte> datagram, uint64_t now_ms) noexcept {
  if (!MakeRoom(from, &predecessor, now_ms)) return;
  WOLFSSL* ssl = wolfSSL_new(context_);
  if (ssl == nullptr) {
    Bump(counters_.handshake_failed_other);
    return;
  }
  std::unique_ptr<Session> session(new (std::nothrow) Session(this));
  if (!session) {
    wolfSSL_free(ssl);
    Bump(counters_.handshake_failed_other);
    return;
  }
  session->ssl = ssl;
  session->route = from;
  session->hello_tag = hello_tag;
  wolfSSL_SetIOReadCtx(ssl, session.get());
  wolfSSL_SetIOWriteCtx(ssl, session.get());
  wolfSSL_dtls_set_using_nonblock(ssl, 1);
  // wolfSSL runs its own stateless cookie check on every ClientHello it is given and cannot
  // be told not to. Give it the secret and the peer bytes our cookie was made with: its
  // HMAC (cookie.h) then equals the cookie in this ClientHello and it goes straight on to
  // the ServerHello. The peer bytes are only ever used for that HMAC (our I/O callbacks
  // replace wolfSSL's socket code) and are freed once the handshake completes.
  if (wolfSSL_DTLS_SetCookieSecret(ssl, reinterpret_cast<const unsigned char*>(secret.data()),
                                   static_cast<unsigned int>(secret.size())) != 0 ||
      wolfSSL_dtls_set_peer(ssl, const_cast<std::byte*>(key.bytes.data()),
                            static_cast<unsigned int>(key.bytes.size())) != WOLFSSL_SUCCESS) {
    wolfSSL_free(ssl);
    Bump(counters_.handshake_failed_other);
    return;
  }
  const uint32_t slot = predecessor != SessionTable::kNone
                            ? table_.AddSuccessor(predecessor, now_ms)
                            : table_.AddHandshake(key, now_ms);
  CHECK(slot != SessionTable::kNone, "MakeRoom left a free slot");
  heap_bytes_ += static_cast<int64_t>(sizeof(Session));
  sessions_[slot] = std::move(session);
  Bump(counters_.handshakes_started);
  Feed(slot, from, datagram, now_ms);
}

// Counts the records wolfSSL drops silently (bad MAC, replayed) across a sequence of calls
// on one session.
struct DtlsEndpoint::DropMark {
  WOLFSSL* ssl;
  unsigned int mac = 0;
  unsigned int replay = 0;

  explicit DropMark(WOLFSSL* s) noexcept : ssl(s) {
    wolfSSL_dtls_get_drop_stats(ssl, &mac, &replay);
  }
  void Count(std::atomic<uint64_t>& dropped) noexcept {
    unsigned int m = mac, r = replay;
    wolfSSL_dtls_get_drop_stats(ssl, &mac, &replay);
    if (mac + replay != m + r) Bump(dropped, (mac - m) + (replay - r));
  }
};

void DtlsEndpoint::Feed(uint32_t slot, const Route& from, std::span<const std::byte> datagram,
                        uint64_t now_ms) noexcept {
  Session& s = *sessions_[slot];
  DropMark drops(s.ssl);
  s.input = datagram;
  if (table_.state(slot) == SessionTable::State::kEstablished) {
    ReadRecords(slot, from, datagram, now_ms, &drops);
    return;
  }
  s.sent = false;
  const unsigned int mac_drops = drops.mac;
  capture_.Begin(&s);
  const int result = wolfSSL_accept(s.ssl);
  capture_.End();
  drops.Count(counters_.records_dropped);
  if (drops.mac != mac_drops) s.undecryptable = true;
  s.input = {};
  if (result == WOLFSSL_SUCCESS) {
    CompleteHandshake(slot, now_ms);
    return;
  }
  const int error = wolfSSL_get_error(s.ssl, result);
  if (error == WOLFSSL_ERROR_WANT_READ || error == WOLFSSL_ERROR_WANT_WRITE) {
    if (s.sent) {
      s.next_retransmit_ms =
          now_ms + uint64_t(std::max(1, wolfSSL_dtls_get_current_timeout(s.ssl))) * 1000;
    }
    return;
  }
  FailHandshake(slot);
}

void DtlsEndpoint::ReadRecords(uint32_t slot, const Route& from,
                               std::span<const std::byte> datagram, uint64_t now_ms,
                               DropMark* drops) noexcept {
  Session& s = *sessions_[slot];
  const SessionId id = table_.IdOf(slot);
  // wolfSSL_read returns one application record per call. Calling it once more than the
  // datagram has records makes wolfSSL grow its input buffer for a datagram that is not
  // there and keep it (16.9 KiB with a 16 KiB read, 2 KiB with ours) for the idle life of
  // the session. So stop after the datagram's last application record when nothing else
  // follows it; otherwise read until wolfSSL asks for more and then let it shrink the
  // buffer (wolfSSL_FreeHandshakeResources: everything else it frees is gone already).
  const RecordShape shape = ShapeOf(datagram);
  size_t delivered = 0;
  for (;;) {
    const int n = wolfSSL_read(s.ssl, plaintext_.get(), static_cast<int>(kMaxDatagramSize));
    drops->Count(counters_.records_dropped);
    s.input = {};
    if (n > 0) {
      // Authenticated: this is the peer. Take its latest route (the engine's `local` may
      // differ) and mark it active. Its data shows it has our Finished.
      s.route = from;
      ReleaseFinalFlight(s);
      table_.Touch(slot, now_ms);
      Bump(counters_.records_delivered);
      transport_->Deliver(id, s.identity(), s.route,
                          std::span<const std::byte>(plaintext_.get(), static_cast<size_t>(n)));
      if (++delivered >= shape.application_records && shape.ends_with_application_data) return;
      continue;
    }
    const int error = wolfSSL_get_error(s.ssl, n);
    if (error == WOLFSSL_ERROR_WANT_READ || error == WOLFSSL_ERROR_WANT_WRITE) {
      wolfSSL_FreeHandshakeResources(s.ssl);
      return;
    }
    if (error == WOLFSSL_ERROR_ZERO_RETURN) {  // close_notify: answer it, forget the session
      Bump(counters_.close_notify);
      wolfSSL_shutdown(s.ssl);
    } else {
      Bump(counters_.sessions_failed);
    }
    Destroy(slot);
    return;
  }
}

void DtlsEndpoint::CompleteHandshake(uint32_t slot, uint64_t now_ms) noexcept {
  Session& s = *sessions_[slot];
  const uint32_t predecessor = table_.predecessor(slot);
  if (predecessor != SessionTable::kNone) {  // the rebooted device's old session ends now
    Bump(counters_.sessions_replaced);
    Destroy(predecessor);  // puts `slot` in the index under the same address
  }
  table_.Establish(slot, now_ms);
  Bump(counters_.handshakes_completed);
  wolfSSL_dtls_set_peer(s.ssl, nullptr, 0);  // was only for the cookie HMAC

  // wolfSSL would keep its handshake state (hashes, arrays, a copy of our last flight:
  // about 1.7 KiB) until the peer's first application record, so as to resend that flight
  // if the peer resends its own; yet 5.5.4 never does resend it once the handshake is done,
  // and a peer that sends nothing would keep it for its whole idle life. Free it all now and
  // keep only the bytes of our last flight (about 100 B), captured as they were sent, until
  // the peer's first record or the handshake timeout, whichever comes first.
  wolfSSL_FreeHandshakeResources(s.ssl);
  const std::span<const std::byte> flight = capture_.flight();
  if (flight.empty()) return;
  s.final_flight.reset(new (std::nothrow) std::byte[flight.size()]);
  if (!s.final_flight) return;
  std::memcpy(s.final_flight.get(), flight.data(), flight.size());
  s.final_flight_size = static_cast<uint16_t>(flight.size());
  heap_bytes_ += static_cast<int64_t>(flight.size());
  if (held_size_ == held_.size()) {  // full: release the oldest early
    const uint32_t early = table_.SlotOf(held_[held_head_].id);
    if (early != SessionTable::kNone) ReleaseFinalFlight(*sessions_[early]);
    held_head_ = (held_head_ + 1) % held_.size();
    --held_size_;
  }
  held_[(held_head_ + held_size_) % held_.size()] =
      HeldFlight{table_.IdOf(slot), now_ms + options_.handshake_timeout_ms};
  ++held_size_;
}

void DtlsEndpoint::ResendFinalFlight(uint32_t slot) noexcept {
  const Session& s = *sessions_[slot];
  FlightCapture::Replay(std::span<const std::byte>(s.final_flight.get(), s.final_flight_size),
                        [&](std::span<const std::byte> datagram) {
                          transport_->Send(s.route, datagram);
                        });
  Bump(counters_.retransmissions);
}

void DtlsEndpoint::ReleaseFinalFlight(Session& s) noexcept {
  if (!s.final_flight) return;
  heap_bytes_ -= s.final_flight_size;
  s.final_flight.reset();
  s.final_flight_size = 0;
}

void DtlsEndpoint::FailHandshake(uint32_t slot) noexcept {
  const bool unknown = sessions_[slot]->unknown_identity;
  Bump(unknown ? counters_.handshake_failed_unknown_identity : counters_.handshake_failed_other);
  DestroyFailed(slot, unknown ? HandshakeFailure::kUnknownIdentity : HandshakeFailure::kFailed);
}

void DtlsEndpoint::DestroyFailed(uint32_t slot, HandshakeFailure why) noexcept {
  const Session& s = *sessions_[slot];
  transport_->HandshakeFailed(s.route, s.identity(), why);
  Destroy(slot);
}

void DtlsEndpoint::Destroy(uint32_t slot) noexcept {
  std::unique_ptr<Session> s = std::move(sessions_[slot]);
  wolfSSL_free(s->ssl);
  ReleaseFinalFlight(*s);
  heap_bytes_ -= static_cast<int64_t>(sizeof(Session));
  if (s->identity_long) heap_bytes_ -= s->identity_length;
  table_.Remove(slot);
}

void DtlsEndpoint::SendHelloVerifyRequest(const Route& to, const PeerKey& key,
                                          const ClientHelloView& hello) noexcept {
  Cookie cookie;
  std::array<std::byte, kHelloVerifyRequestSize> datagram;
  if (!cookies_.Mint(key.span(), hello, &cookie)) {
    Bump(counters_.client_hello_dropped);
    return;
  }
  auto size = BuildHelloVerifyRequest(hello, cookie, datagram);
  if (!size) {
    Bump(counters_.client_hello_dropped);
    return;
  }
  Bump(counters_.hello_verify_sent);
  transport_->Send(to, std::span<const std::byte>(datagram.data(), *size));
}

// ---------------------------------------------------------------------------------------
// Planned restarts

void DtlsEndpoint::ExportSessions(uint64_t now_ms,
                                  const std::function<void(const ExportedSession&)>& visit) const {
  // wolfSSL's own bound for a DTLS export (MAX_EXPORT_BUFFER, 514 in 5.5.4); asked, not assumed.
  std::vector<std::byte> buffer;
  for (uint32_t slot = table_.LeastRecentlyUsed(); slot != SessionTable::kNone;
       slot = table_.NextHandshake(slot)) {  // the same links thread the established list
    const Session& s = *sessions_[slot];
    unsigned int size = 0;
    (void)wolfSSL_dtls_export(s.ssl, nullptr, &size);
    buffer.resize(size);
    int64_t scratch = 0;  // wolfSSL allocates nothing here; keep the account exact anyway
    HeapScope scope(&scratch);
    const int n = wolfSSL_dtls_export(s.ssl, reinterpret_cast<unsigned char*>(buffer.data()), &size);
    if (n <= 0) continue;  // not exportable (cannot happen for an established session)
    ExportedSession out;
    out.route = s.route;
    out.identity = s.identity();
    out.idle_ms = now_ms >= table_.stamp(slot) ? now_ms - table_.stamp(slot) : 0;
    out.state = std::span<const std::byte>(buffer.data(), static_cast<size_t>(n));
    visit(out);
  }
  std::fill(buffer.begin(), buffer.end(), std::byte{0});  // it held keys
}

Result<void, ImportRefusal> DtlsEndpoint::ImportSession(const ExportedSession& session,
                                                        uint64_t now_ms) {
  PeerKey key;
  if (session.route.length > sizeof(session.route.address) ||
      !MakePeerKey(reinterpret_cast<const sockaddr*>(&session.route.address),
                   session.route.length, session.route.socket, &key)) {
    return Fail(ImportRefusal::kBadRoute);
  }
  if (session.identity.empty() || session.identity.size() > kMaxIdentity) {
    return Fail(ImportRefusal::kBadIdentity);
  }
  if (table_.Find(key) != SessionTable::kNone) return Fail(ImportRefusal::kDuplicate);
  if (table_.size() >= table_.capacity()) return Fail(ImportRefusal::kTableFull);
  HeapScope scope(&heap_bytes_);
  WOLFSSL* ssl = wolfSSL_new(context_);
  if (ssl == nullptr) return Fail(ImportRefusal::kRejected);
  const int imported =
      wolfSSL_dtls_import(ssl, reinterpret_cast<const unsigned char*>(session.state.data()),
                          static_cast<unsigned int>(session.state.size()));
  if (imported <= 0 || !wolfSSL_is_init_finished(ssl)) {
    wolfSSL_free(ssl);
    return Fail(ImportRefusal::kRejected);
  }
  std::unique_ptr<Session> s(new (std::nothrow) Session(this));
  if (!s) {
    wolfSSL_free(ssl);
    return Fail(ImportRefusal::kRejected);
  }
  s->ssl = ssl;
  s->route = session.route;
  wolfSSL_SetIOReadCtx(ssl, s.get());
  wolfSSL_SetIOWriteCtx(ssl, s.get());
  wolfSSL_dtls_set_using_nonblock(ssl, 1);
  // wolfSSL_new made handshake state this session will never use (see CompleteHandshake).
  wolfSSL_FreeHandshakeResources(ssl);
  heap_bytes_ += static_cast<int64_t>(sizeof(Session)) + s->SetIdentity(session.identity);
  // An idle time longer than this clock's age (the host rebooted) counts from the clock's 0.
  const uint64_t last_active = now_ms - std::min(now_ms, session.idle_ms);
  const uint32_t slot = table_.AddHandshake(key, last_active);
  CHECK(slot != SessionTable::kNone, "the table had room");
  table_.Establish(slot, last_active);
  sessions_[slot] = std::move(s);
  return {};
}

// ---------------------------------------------------------------------------------------
// Sending and time

bool DtlsEndpoint::Send(SessionId session, std::span<const std::byte> plaintext) noexcept {
  const uint32_t slot = table_.SlotOf(session);
  if (slot == SessionTable::kNone || table_.state(slot) != SessionTable::State::kEstablished) {
    return false;
  }
  HeapScope scope(&heap_bytes_);
  const int n =
      wolfSSL_write(sessions_[slot]->ssl, plaintext.data(), static_cast<int>(plaintext.size()));
  if (n != static_cast<int>(plaintext.size())) {
    Bump(counters_.send_failed);
    return false;
  }
  Bump(counters_.records_sent);
  return true;
}

int DtlsEndpoint::Tick(uint64_t now_ms) noexcept {
  HeapScope scope(&heap_bytes_);
  cookies_.MaybeRotate(now_ms);
  uint64_t next = cookies_.next_rotation_ms();

  // Handshakes past their deadline, oldest first (the list is in start order).
  const uint64_t handshake_timeout = options_.handshake_timeout_ms;
  for (uint32_t h = table_.OldestHandshake(); h != SessionTable::kNone;
       h = table_.OldestHandshake()) {
    if (now_ms - table_.stamp(h) < handshake_timeout) {
      next = std::min(next, table_.stamp(h) + handshake_timeout);
      break;
    }
    const bool wrong_key = sessions_[h]->undecryptable;
    Bump(wrong_key ? counters_.handshake_failed_wrong_key : counters_.handshake_timeouts);
    DestroyFailed(h, wrong_key ? HandshakeFailure::kWrongKey : HandshakeFailure::kTimeout);
  }
  // Retransmissions of the last flight of handshakes still waiting for the peer.
  for (uint32_t h = table_.OldestHandshake(); h != SessionTable::kNone;) {
    const uint32_t following = table_.NextHandshake(h);
    Session& s = *sessions_[h];
    if (s.next_retransmit_ms != 0 && now_ms >= s.next_retransmit_ms) {
      Bump(counters_.retransmissions);
      if (wolfSSL_dtls_got_timeout(s.ssl) != WOLFSSL_SUCCESS) {
        FailHandshake(h);
        h = following;
        continue;
      }
      s.next_retransmit_ms =
          now_ms + uint64_t(std::max(1, wolfSSL_dtls_get_current_timeout(s.ssl))) * 1000;
    }
    if (s.next_retransmit_ms != 0) next = std::min(next, s.next_retransmit_ms);
    h = following;
  }
  // Final flights nobody asked to be resent.
  while (held_size_ > 0 && held_[held_head_].release_ms <= now_ms) {
    const uint32_t slot = table_.SlotOf(held_[held_head_].id);
    if (slot != SessionTable::kNone) ReleaseFinalFlight(*sessions_[slot]);
    held_head_ = (held_head_ + 1) % held_.size();
    --held_size_;
  }
  if (held_size_ > 0) next = std::min(next, held_[held_head_].release_ms);
  // Idle sessions, stalest first.
  const uint64_t idle_timeout = uint64_t{options_.idle_timeout_s} * 1000;
  for (uint32_t l = table_.LeastRecentlyUsed(); l != SessionTable::kNone;
       l = table_.LeastRecentlyUsed()) {
    if (now_ms - table_.stamp(l) < idle_timeout) {
      next = std::min(next, table_.stamp(l) + idle_timeout);
      break;
    }
    Bump(counters_.evicted_idle);
    Destroy(l);
  }
  const uint64_t wait = next > now_ms ? next - now_ms : 1;
  return static_cast<int>(std::min<uint64_t>(wait, std::numeric_limits<int>::max()));
}

}  // namespace coapgate::dtls
