// DtlsSession: a DtlsEndpoint's per-peer state besides wolfSSL's own. Allocated when a
// verified ClientHello starts a handshake, freed with the session; reached from wolfSSL's
// callbacks through the I/O context pointer (wolfssl_io.h). Internal to dtls/.
//
// Thread contract: owned by one DtlsEndpoint; every access on the shard's thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string_view>

#include "dtls/dtls_endpoint.h"

struct WOLFSSL;

namespace coapgate::dtls {

inline constexpr size_t kMaxIdentity = 128;  // wolfSSL's MAX_PSK_ID_LEN

struct DtlsSession {
  explicit DtlsSession(DtlsEndpoint* owner) noexcept : endpoint(owner) {}

  DtlsEndpoint* endpoint;
  WOLFSSL* ssl = nullptr;
  Route route;
  std::span<const std::byte> input;  // the datagram being fed; empty outside Feed
  uint64_t hello_tag = 0;            // the first 8 cookie bytes of the ClientHello we accepted
  uint64_t next_retransmit_ms = 0;
  bool sent = false;              // wolfSSL sent a flight during the current call
  bool unknown_identity = false;  // PskLookup said 0
  bool undecryptable = false;     // a record of the handshake failed its MAC (wrong PSK?)
  // Our last flight (ChangeCipherSpec + Finished) as sent, in FlightCapture's format, until
  // the peer shows it has it (see DtlsEndpoint::CompleteHandshake).
  std::unique_ptr<std::byte[]> final_flight;
  uint16_t final_flight_size = 0;
  uint8_t identity_length = 0;
  std::array<char, 32> identity_inline{};
  std::unique_ptr<char[]> identity_long;  // identities over 32 bytes (ICCIDs are 19-20)

  [[nodiscard]] std::string_view identity() const noexcept {
    return {identity_long ? identity_long.get() : identity_inline.data(), identity_length};
  }
  // Called by the PSK callback; returns the change in bytes held on the heap.
  int64_t SetIdentity(std::string_view id) noexcept {
    const int64_t before = identity_long ? identity_length : 0;
    identity_long.reset();
    id = id.substr(0, kMaxIdentity);
    identity_length = static_cast<uint8_t>(id.size());
    if (id.size() <= identity_inline.size()) {
      std::memcpy(identity_inline.data(), id.data(), id.size());
      return -before;
    }
    identity_long.reset(new (std::nothrow) char[id.size()]);
    if (!identity_long) {
      identity_length = 0;
      return -before;
    }
    std::memcpy(identity_long.get(), id.data(), id.size());
    return static_cast<int64_t>(id.size()) - before;
  }
};

}  // namespace coapgate::dtls
