// BootstrapService: the back half of GET /bootstrap (docs/bootstrap-and-dtls.md). A shard that
// has identified the device (unknown or inactive devices get 4.01 from the shard itself) hands
// the request over with Submit; one worker thread applies the PSK rules (KeyStore::Bootstrap,
// durable before it returns), and only then sends the reply, 2.05 "ICCID,PSK,URL" or 5.00 with a JSON body, with
// sendmsg(2) on the shard's socket, from the address the request was sent to (IP_PKTINFO /
// IPV6_PKTINFO). A UDP sendmsg is atomic per datagram, so sharing the socket with the shard's
// own sends needs no coordination. The fsync is why this is off the shards: a shard never
// waits for a disk.
//
// Thread contract: Submit may be called from any number of threads at once; Start and Stop
// from one controlling thread; the counters from anywhere. The clock runs on the worker only.
// Bootstrap is rare (once per device per boot or key rotation), so the queue is a plain
// mutex + condition variable ring, bounded, with counted refusals.
//
// Two rules keep a backlog from making things worse (both counted):
// - A request that waited longer than the response budget is answered 5.03 with Max-Age
//   instead of late: its device has given up on it, or is about to retransmit.
// - Requests of one device (the same registry ICCID and user-set key) that are queued when
//   the worker reaches the first of them are answered together, from one key lookup (one
//   fsync at most): every copy gets its own reply (its MID and token), all with the same key.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "net/datagram_io.h"
#include "registry/key_store.h"

namespace coapgate::bootstrap {

// One GET /bootstrap to answer: where the reply goes and what the device is. Plain data,
// copied into the queue by Submit.
struct BootstrapRequest {
  int socket_fd;              ///< the shard's socket the request came in on (not owned)
  sockaddr_in6 peer{};        ///< the device's address: a sockaddr_in or sockaddr_in6
  socklen_t peer_length;      ///< of `peer`; at most sizeof(sockaddr_in6)
  net::LocalAddress local;         ///< where the request was sent to: the reply leaves from there
  bool confirmable;           ///< CON: piggybacked ACK with message_id; NON: NON reply
  uint16_t message_id;        ///< the request's MID
  uint8_t token_length;       ///< 0..8
  std::array<std::byte, 8> token{};
  std::array<char, 22> iccid{};  ///< the registry's ICCID of the source address
  uint8_t iccid_length;          ///< 1..22
  std::array<char, 64> user_psk{};  ///< the registry's user-set key as text; empty = none
  uint8_t user_psk_length;          ///< 0..64
};

// How long a request may wait, and what a device that waited too long is told.
struct BootstrapLimits {
  uint32_t response_budget_ms = 0;  ///< 0: never too old (answered however late)
  uint32_t busy_max_age_s = 5;      ///< Max-Age of the 5.03 a too-old request gets
};

class BootstrapService {
 public:
  // Unix seconds: the time the PSK rules compare (KeyStore::Bootstrap's now_s).
  using Clock = std::function<uint64_t()>;
  [[nodiscard]] static uint64_t SystemNowSeconds();
  [[nodiscard]] static uint64_t MonotonicNowMs();

  // `store` must outlive the service. `coaps_url` is the third field of every 2.05 (config
  // bootstrap.coaps_url, validated there). `capacity` requests can wait at once (e.g. 1024:
  // a whole fleet rebooting after an outage bootstraps within seconds; beyond that devices
  // get 5.03 and retry).
  BootstrapService(registry::KeyStore* store, std::string coaps_url, uint32_t capacity,
                   Clock now_s = SystemNowSeconds);
  // The same with `limits`; `now_ms` is the monotonic clock requests are stamped and aged
  // with (Submit's thread and the worker; must be thread-safe).
  BootstrapService(registry::KeyStore* store, std::string coaps_url, uint32_t capacity,
                   BootstrapLimits limits, Clock now_s = SystemNowSeconds,
                   Clock now_ms = MonotonicNowMs);
  BootstrapService(const BootstrapService&) = delete;
  BootstrapService& operator=(const BootstrapService&) = delete;
  ~BootstrapService();  // Stop()

  // Starts the worker. REQUIRES: called at most once, before Stop.
  void Start();
  // Refuses further requests, answers every queued one (on the worker, or on the calling
  // thread when Start was never called), then returns. Idempotent. Every socket of a queued
  // request must stay open until Stop returns.
  void Stop();

  // Queues `request` for an answer; any thread, never blocks on I/O. False when the queue is
  // full (queue_full) or Stop was called (refused_stopped): the caller answers 5.03 itself.
  [[nodiscard]] bool Submit(const BootstrapRequest& request);

  // Nothing queued and no batch being answered: a take-over (engine/takeover_channel.h)
  // hands the key store over only then. Any thread.
  [[nodiscard]] bool idle();

  [[nodiscard]] uint64_t replied_205() const noexcept { return load(replied_205_); }
  [[nodiscard]] uint64_t replied_500() const noexcept { return load(replied_500_); }
  [[nodiscard]] uint64_t replied_503() const noexcept { return load(replied_503_); }
  [[nodiscard]] uint64_t queue_full() const noexcept { return load(queue_full_); }
  [[nodiscard]] uint64_t refused_stopped() const noexcept { return load(refused_stopped_); }
  // Replies sendmsg refused (after brief retries on a full socket buffer); the device retries
  // and, within the regeneration window, gets the same key again.
  [[nodiscard]] uint64_t send_failures() const noexcept { return load(send_failures_); }
  // Replies of kBootstrapDatagramLimit bytes or more (logged once): the URL is too long.
  [[nodiscard]] uint64_t oversized() const noexcept { return load(oversized_); }
  // Requests answered 5.03 because they waited longer than limits.response_budget_ms.
  [[nodiscard]] uint64_t expired() const noexcept { return load(expired_); }
  // Requests answered from another queued request's key lookup (copies of one device's).
  [[nodiscard]] uint64_t coalesced() const noexcept { return load(coalesced_); }

 private:
  static uint64_t load(const std::atomic<uint64_t>& c) noexcept {
    return c.load(std::memory_order_relaxed);
  }
  static void bump(std::atomic<uint64_t>& c) noexcept {
    c.fetch_add(1, std::memory_order_relaxed);
  }

  struct Queued {
    BootstrapRequest request;
    uint64_t queued_ms;  // monotonic, stamped by Submit
  };

  void Run();
  // Takes the oldest queued request and every other queued one of the same device into
  // batch_. REQUIRES: mutex_ held, count_ > 0.
  void TakeBatch();
  // Answers batch_: too-old requests 5.03, the rest from one key lookup.
  void AnswerBatch();
  // `key` is the device's key, or null when the lookup failed (5.00).
  void Answer(const BootstrapRequest& request, const std::string* key);
  void AnswerBusy(const BootstrapRequest& request);
  void Finish(const BootstrapRequest& request, std::span<const std::byte> bytes,
              std::atomic<uint64_t>& success);
  [[nodiscard]] bool Send(const BootstrapRequest& request, std::span<const std::byte> bytes);

  registry::KeyStore* const store_;
  const std::string coaps_url_;
  const Clock now_s_;
  const Clock now_ms_;
  const BootstrapLimits limits_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Queued> ring_;  // capacity slots, allocated once; guarded by mutex_
  size_t head_ = 0;                     // oldest queued request; guarded by mutex_
  size_t count_ = 0;                    // guarded by mutex_
  bool stopping_ = false;               // guarded by mutex_
  bool answering_ = false;              // the worker answers batch_; guarded by mutex_
  bool stopped_ = false;                // Stop finished; controlling thread only
  std::thread worker_;
  std::vector<Queued> batch_;  // capacity reserved once; worker (or Stop) only

  // The next MID for a NON reply, before SafeBootstrapMessageId. Starts at a random value so
  // that a restart does not reuse the MIDs a device has just seen. Worker (or Stop) only.
  uint16_t next_message_id_;

  std::atomic<uint64_t> replied_205_{0};
  std::atomic<uint64_t> replied_500_{0};
  std::atomic<uint64_t> queue_full_{0};
  std::atomic<uint64_t> refused_stopped_{0};
  std::atomic<uint64_t> send_failures_{0};
  std::atomic<uint64_t> oversized_{0};
  std::atomic<uint64_t> expired_{0};
  std::atomic<uint64_t> coalesced_{0};
  std::atomic<uint64_t> replied_503_{0};
};

}  // namespace coapgate::bootstrap
