#include "tests/support/dtls_test_client.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace coapgate::test {

dtls::Route MakeRoute(uint32_t ip, uint16_t port, uint16_t socket) {
  dtls::Route r;
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  in.sin_addr.s_addr = htonl(ip);
  std::memcpy(&r.address, &in, sizeof in);
  r.length = sizeof in;
  r.socket = socket;
  return r;
}

DatagramQueue::DatagramQueue(size_t capacity)
    : bytes_(capacity * kMaxDatagram), sizes_(capacity) {}

void DatagramQueue::push_back(std::span<const std::byte> datagram) noexcept {
  CHECK(size_ < sizes_.size(), "test datagram queue full: the harness does not drain it");
  CHECK(datagram.size() <= kMaxDatagram, "test datagram above kMaxDatagram");
  const size_t slot = (head_ + size_++) % sizes_.size();
  std::memcpy(bytes_.data() + slot * kMaxDatagram, datagram.data(), datagram.size());
  sizes_[slot] = datagram.size();
}

std::span<const std::byte> DatagramQueue::front() const noexcept {
  CHECK(size_ > 0, "front() of an empty test datagram queue");
  return {bytes_.data() + head_ * kMaxDatagram, sizes_[head_]};
}

void DatagramQueue::pop_front() noexcept {
  CHECK(size_ > 0, "pop_front() of an empty test datagram queue");
  head_ = (head_ + 1) % sizes_.size();
  --size_;
}

DtlsTestClient::DtlsTestClient(const dtls::Route& r, Options options)
    : route(r),
      inbox(options.queue_capacity),
      outbox(options.queue_capacity),
      options_(std::move(options)) {
  ctx_ = wolfSSL_CTX_new(wolfDTLSv1_2_client_method());
  CHECK(ctx_ != nullptr, "wolfSSL_CTX_new: wolfSSL_Init() missing or out of memory");
  failed_ = wolfSSL_CTX_set_cipher_list(ctx_, options_.suite.c_str()) != WOLFSSL_SUCCESS;
  wolfSSL_CTX_set_psk_client_callback(ctx_, &DtlsTestClient::Psk);
  wolfSSL_CTX_SetIORecv(ctx_, &DtlsTestClient::Receive);
  wolfSSL_CTX_SetIOSend(ctx_, &DtlsTestClient::Transmit);
  if (!options_.session_cache) wolfSSL_CTX_set_session_cache_mode(ctx_, WOLFSSL_SESS_CACHE_OFF);
  ssl_ = wolfSSL_new(ctx_);
  CHECK(ssl_ != nullptr, "wolfSSL_new: out of memory");
  wolfSSL_SetIOReadCtx(ssl_, this);
  wolfSSL_SetIOWriteCtx(ssl_, this);
  wolfSSL_dtls_set_using_nonblock(ssl_, 1);
  if (options_.no_extensions) {
    wolfSSL_DisableExtendedMasterSecret(ssl_);
    wolfSSL_AllowEncryptThenMac(ssl_, 0);
  }
}

DtlsTestClient::~DtlsTestClient() {
  wolfSSL_free(ssl_);
  wolfSSL_CTX_free(ctx_);
}

void DtlsTestClient::Step() {
  if (connected_ || failed_) return;
  const int r = wolfSSL_connect(ssl_);
  if (r == WOLFSSL_SUCCESS) {
    connected_ = true;
    return;
  }
  const int e = wolfSSL_get_error(ssl_, r);
  if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE) failed_ = true;
}

void DtlsTestClient::Timeout() { wolfSSL_dtls_got_timeout(ssl_); }

bool DtlsTestClient::Write(std::string_view text) {
  return wolfSSL_write(ssl_, text.data(), static_cast<int>(text.size())) ==
         static_cast<int>(text.size());
}

std::vector<std::string> DtlsTestClient::ReadAll() {
  std::vector<std::string> out;
  char buffer[2048];
  for (;;) {
    const int n = wolfSSL_read(ssl_, buffer, sizeof buffer);
    if (n <= 0) break;
    out.emplace_back(buffer, static_cast<size_t>(n));
  }
  return out;
}

void DtlsTestClient::Shutdown() { wolfSSL_shutdown(ssl_); }

std::string DtlsTestClient::cipher() const { return wolfSSL_get_cipher_name(ssl_); }

int DtlsTestClient::Receive(WOLFSSL*, char* buffer, int size, void* context) {
  auto* c = static_cast<DtlsTestClient*>(context);
  if (c->inbox.empty()) return WOLFSSL_CBIO_ERR_WANT_READ;
  const std::span<const std::byte> d = c->inbox.front();
  const size_t n = std::min(d.size(), static_cast<size_t>(size));
  std::memcpy(buffer, d.data(), n);
  c->inbox.pop_front();
  return static_cast<int>(n);
}

int DtlsTestClient::Transmit(WOLFSSL*, char* buffer, int size, void* context) {
  auto* c = static_cast<DtlsTestClient*>(context);
  c->outbox.push_back({reinterpret_cast<const std::byte*>(buffer), static_cast<size_t>(size)});
  return size;
}

unsigned int DtlsTestClient::Psk(WOLFSSL* ssl, const char*, char* identity,
                                 unsigned int identity_max, unsigned char* key,
                                 unsigned int key_max) {
  auto* c = static_cast<DtlsTestClient*>(wolfSSL_GetIOReadCtx(ssl));
  const std::string& id = c->options_.identity;
  if (id.size() + 1 > identity_max || c->options_.key.size() > key_max) return 0;
  std::memcpy(identity, id.c_str(), id.size() + 1);
  std::memcpy(key, c->options_.key.data(), c->options_.key.size());
  return static_cast<unsigned int>(c->options_.key.size());
}

}  // namespace coapgate::test
