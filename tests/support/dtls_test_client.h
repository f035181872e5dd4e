// DtlsTestClient: a wolfSSL DTLS 1.2 PSK client over in-memory datagrams, no sockets, for the
// endpoint's tests and benchmarks. What the client sends lands in `outbox`, what it should
// receive is pushed into `inbox` by the harness; Step() runs the handshake as far as the
// queued datagrams allow. Time is the harness's: Timeout() stands for the client's timer.
//
// Thread contract: none; one harness thread owns a client. The caller keeps wolfSSL_Init()
// in force for the client's lifetime. Moving datagrams through the queues copies into storage
// reserved at construction, so that allocation counts of a benchmark measure the endpoint and
// wolfSSL, not the harness.
#pragma once

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dtls/dtls_endpoint.h"

namespace coapgate::test {

// The route of a device at IPv4 address `ip` (host order) and `port`, on listening socket
// `socket`: how the endpoint's tests and benchmarks name their in-memory peers.
[[nodiscard]] dtls::Route MakeRoute(uint32_t ip, uint16_t port, uint16_t socket = 0);

// A bounded FIFO of datagrams. Overflowing it, or a datagram above kMaxDatagram, is a bug of
// the harness (flights are small and the harness drains its queues): CHECK.
class DatagramQueue {
 public:
  static constexpr size_t kMaxDatagram = 1536;

  explicit DatagramQueue(size_t capacity);

  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] size_t size() const noexcept { return size_; }
  void push_back(std::span<const std::byte> datagram) noexcept;
  // The oldest datagram; valid until the next pop_front() or clear().
  [[nodiscard]] std::span<const std::byte> front() const noexcept;
  void pop_front() noexcept;
  void clear() noexcept { head_ = size_ = 0; }

 private:
  std::vector<std::byte> bytes_;  // capacity x kMaxDatagram
  std::vector<size_t> sizes_;
  size_t head_ = 0;
  size_t size_ = 0;
};

class DtlsTestClient {
 public:
  struct Options {
    std::string identity = "8988280666000002864";
    std::string key = "kQ3v9TzA1bXc7LmN0pR";  // a bootstrap-style PSK
    std::string suite = "PSK-AES128-CCM-8";
    bool no_extensions = false;  // what node-dtls-client sends: no extensions block at all
    bool session_cache = true;   // false: every handshake is a full one
    size_t queue_capacity = 32;  // datagrams each way
  };

  // A suite wolfSSL does not know leaves the client failed() from the start.
  DtlsTestClient(const dtls::Route& route, Options options);
  ~DtlsTestClient();
  DtlsTestClient(const DtlsTestClient&) = delete;
  DtlsTestClient& operator=(const DtlsTestClient&) = delete;

  // Runs the handshake as far as the queued datagrams allow.
  void Step();
  // Retransmits the last flight, as the client's timer would.
  void Timeout();
  [[nodiscard]] bool Write(std::string_view text);
  // Decrypts everything queued for us.
  std::vector<std::string> ReadAll();
  // Sends close_notify.
  void Shutdown();
  [[nodiscard]] std::string cipher() const;
  [[nodiscard]] bool connected() const noexcept { return connected_; }
  [[nodiscard]] bool failed() const noexcept { return failed_; }

  dtls::Route route;
  DatagramQueue inbox;   // from the server
  DatagramQueue outbox;  // to the server

 private:
  static int Receive(WOLFSSL*, char* buffer, int size, void* context);
  static int Transmit(WOLFSSL*, char* buffer, int size, void* context);
  static unsigned int Psk(WOLFSSL* ssl, const char*, char* identity, unsigned int identity_max,
                          unsigned char* key, unsigned int key_max);

  Options options_;
  WOLFSSL_CTX* ctx_ = nullptr;
  WOLFSSL* ssl_ = nullptr;
  bool connected_ = false;
  bool failed_ = false;
};

}  // namespace coapgate::test
