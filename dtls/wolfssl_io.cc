#include "dtls/wolfssl_io.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>

#include "dtls/dtls_endpoint.h"
#include "dtls/dtls_session.h"

namespace coapgate::dtls {

int WolfsslIo::Receive(WOLFSSL*, char* buffer, int size, void* context) noexcept {
  auto* s = static_cast<DtlsSession*>(context);
  if (s->input.empty() || size <= 0) return WOLFSSL_CBIO_ERR_WANT_READ;
  // One datagram per read, as from a UDP socket; wolfSSL asks for a whole MTU and the
  // endpoint dropped anything larger already.
  const size_t n = std::min(s->input.size(), static_cast<size_t>(size));
  std::memcpy(buffer, s->input.data(), n);
  s->input = {};
  return static_cast<int>(n);
}

int WolfsslIo::Send(WOLFSSL*, char* buffer, int size, void* context) noexcept {
  auto* s = static_cast<DtlsSession*>(context);
  s->sent = true;
  DtlsEndpoint& e = *s->endpoint;
  const std::span<const std::byte> datagram(reinterpret_cast<const std::byte*>(buffer),
                                            static_cast<size_t>(size));
  // Keep a copy: this call may be the one that sends our Finished.
  e.capture_.Append(s, datagram);
  e.transport_->Send(s->route, datagram);
  return size;
}

unsigned int WolfsslIo::Psk(WOLFSSL* ssl, const char* identity, unsigned char* key,
                            unsigned int max_key_length) noexcept {
  auto* s = static_cast<DtlsSession*>(wolfSSL_GetIOReadCtx(ssl));
  if (s == nullptr || identity == nullptr) return 0;
  const std::string_view id(identity, strnlen(identity, kMaxIdentity));
  s->endpoint->heap_bytes_ += s->SetIdentity(id);
  std::array<std::byte, kMaxPskLength> buffer{};
  const size_t length = s->endpoint->psk_lookup_(id, std::span<std::byte, kMaxPskLength>(buffer));
  if (length == 0 || length > max_key_length || length > buffer.size()) {
    s->unknown_identity = true;
    return 0;
  }
  std::memcpy(key, buffer.data(), length);
  explicit_bzero(buffer.data(), buffer.size());
  return static_cast<unsigned int>(length);
}

}  // namespace coapgate::dtls
