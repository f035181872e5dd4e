#include "bootstrap/bootstrap_service.h"

#include <poll.h>
#include <pthread.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>

#include <spdlog/spdlog.h>

#include "bootstrap/bootstrap_reply.h"
#include "common/check.h"
#include "common/clock.h"

namespace coapgate::bootstrap {
namespace {

// A full socket send buffer is waited out this many times, this long each, before the reply
// is given up (the device retries). Only the bootstrap worker waits, never a shard.
constexpr int kSendAttempts = 5;
constexpr int kSendWaitMs = 20;

uint16_t RandomMessageId() {
  uint16_t mid = 0;
  if (getrandom(&mid, sizeof(mid), GRND_NONBLOCK) != static_cast<ssize_t>(sizeof(mid))) {
    // Only very early in boot; any start will do, it just makes reuse after a restart likelier.
    mid = static_cast<uint16_t>(
        std::chrono::steady_clock::now().time_since_epoch().count() & 0xffff);
  }
  return mid;
}

}  // namespace

uint64_t BootstrapService::SystemNowSeconds() { return coapgate::WallMs() / 1000; }

uint64_t BootstrapService::MonotonicNowMs() { return coapgate::MonotonicMs(); }

BootstrapService::BootstrapService(registry::KeyStore* store, std::string coaps_url, uint32_t capacity,
                                   Clock now_s)
    : BootstrapService(store, std::move(coaps_url), capacity, BootstrapLimits{}, std::move(now_s)) {}

BootstrapService::BootstrapService(registry::KeyStore* store, std::string coaps_url,
                                   uint32_t capacity, BootstrapLimits limits, Clock now_s,
                                   Clock now_ms)
    : store_(store),
      coaps_url_(std::move(coaps_url)),
      now_s_(std::move(now_s)),
      now_ms_(std::move(now_ms)),
      limits_(limits),
      ring_(std::max<uint32_t>(capacity, 1)),
      next_message_id_(RandomMessageId()) {
  batch_.reserve(ring_.size());
}

BootstrapService::~BootstrapService() { Stop(); }

void BootstrapService::Start() {
  worker_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "bootstrap");
    Run();
  });
}

void BootstrapService::Stop() {
  if (stopped_) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (worker_.joinable()) {
    worker_.join();
  } else {
    Run();  // never started: answer what was queued here
  }
  stopped_ = true;
}

bool BootstrapService::Submit(const BootstrapRequest& request) {
  CHECK(request.peer_length <= sizeof(request.peer), "the shard fills peer from a recvmsg");
  const uint64_t now_ms = now_ms_();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      bump(refused_stopped_);
      return false;
    }
    if (count_ == ring_.size()) {
      bump(queue_full_);
      return false;
    }
    ring_[(head_ + count_) % ring_.size()] = Queued{request, now_ms};
    ++count_;
  }
  wake_.notify_one();
  return true;
}

namespace {

std::string_view IccidOf(const BootstrapRequest& r) noexcept {
  return {r.iccid.data(), std::min<size_t>(r.iccid_length, r.iccid.size())};
}

std::string_view UserPskOf(const BootstrapRequest& r) noexcept {
  return {r.user_psk.data(), std::min<size_t>(r.user_psk_length, r.user_psk.size())};
}

// One device's requests: the same registry entry, so the same key rules apply to both.
bool SameDevice(const BootstrapRequest& a, const BootstrapRequest& b) noexcept {
  return IccidOf(a) == IccidOf(b) && UserPskOf(a) == UserPskOf(b);
}

BootstrapExchange ExchangeOf(const BootstrapRequest& request) noexcept {
  return BootstrapExchange{
      request.confirmable, request.message_id,
      std::span<const std::byte>(request.token)
          .first(std::min<size_t>(request.token_length, request.token.size()))};
}

}  // namespace

void BootstrapService::Run() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return count_ != 0 || stopping_; });
      if (count_ == 0) return;  // stopping, and everything queued is answered
      TakeBatch();
      answering_ = true;
    }
    AnswerBatch();
    std::lock_guard lock(mutex_);
    answering_ = false;
  }
}

bool BootstrapService::idle() {
  std::lock_guard lock(mutex_);
  return count_ == 0 && !answering_;
}

void BootstrapService::TakeBatch() {
  batch_.clear();
  batch_.push_back(ring_[head_]);
  const BootstrapRequest& first = batch_.front().request;
  // Compacts the rest of the ring in place, keeping order: O(queued), on a rare path.
  size_t kept = 0;
  for (size_t i = 1; i < count_; ++i) {
    const Queued& q = ring_[(head_ + i) % ring_.size()];
    if (SameDevice(q.request, first)) {
      batch_.push_back(q);
    } else {
      ring_[(head_ + 1 + kept) % ring_.size()] = q;
      ++kept;
    }
  }
  head_ = (head_ + 1) % ring_.size();
  count_ = kept;
}

void BootstrapService::AnswerBatch() {
  const uint64_t now_ms = now_ms_();
  size_t fresh = 0;
  for (const Queued& q : batch_) {
    if (limits_.response_budget_ms != 0 && now_ms - q.queued_ms > limits_.response_budget_ms) {
      bump(expired_);
      AnswerBusy(q.request);
    } else {
      batch_[fresh++] = q;
    }
  }
  if (fresh == 0) return;
  const std::string_view iccid = IccidOf(batch_.front().request);
  auto key = store_->Bootstrap(iccid, UserPskOf(batch_.front().request), now_s_());
  if (!key) spdlog::error("bootstrap {}: {}", iccid, key.error());
  // A shared database that is away is transient: the device is told to come back later
  // (5.03 with Max-Age), not that the server failed.
  const bool busy = !key && store_->unavailable();
  for (size_t i = 0; i < fresh; ++i) {
    if (i != 0) bump(coalesced_);
    if (busy) {
      AnswerBusy(batch_[i].request);
    } else {
      Answer(batch_[i].request, key ? &*key : nullptr);
    }
  }
}

void BootstrapService::AnswerBusy(const BootstrapRequest& request) {
  std::array<std::byte, net::kMaxReplySize> out;
  const BootstrapExchange exchange = ExchangeOf(request);
  auto reply = EncodeBootstrapBusyReply(exchange, next_message_id_, limits_.busy_max_age_s, out);
  CHECK(reply.has_value(), "a 5.03 with Max-Age and no body always fits a reply");
  if (!exchange.confirmable) next_message_id_ = static_cast<uint16_t>(reply->message_id + 1);
  Finish(request, std::span<const std::byte>(out).first(reply->size), replied_503_);
}

void BootstrapService::Answer(const BootstrapRequest& request, const std::string* key) {
  const std::string_view iccid = IccidOf(request);
  const BootstrapExchange exchange = ExchangeOf(request);
  std::array<std::byte, net::kMaxReplySize> out;
  Result<EncodedBootstrapReply, codec::EncodeErrc> reply = Fail(codec::EncodeErrc::kBufferTooSmall);
  if (key != nullptr) {
    std::array<char, net::kMaxReplySize> payload;
    const size_t n = FormatBootstrapPayload(iccid, *key, coaps_url_, payload);
    if (n != 0) {
      reply = EncodeBootstrapReply(exchange, next_message_id_, std::string_view(payload.data(), n),
                                   out);
    }
    if (!reply) {
      // Only a user-set key with a ',' (or an absurdly long one) gets here: the device would
      // split it, so it gets 5.00 rather than a wrong key.
      spdlog::error("bootstrap {}: the key cannot be sent as \"ICCID,PSK,URL\" (a ',' in the "
                    "user-set key, or longer than a reply)",
                    iccid);
    }
  }
  const bool content = reply.has_value();
  if (!content) {
    reply = EncodeBootstrapErrorReply(exchange, next_message_id_, BootstrapError::kServerError,
                                      out);
  }
  CHECK(reply.has_value(), "the error reply is a constant that fits (static_assert)");
  if (!exchange.confirmable) next_message_id_ = static_cast<uint16_t>(reply->message_id + 1);
  if (reply->oversized && oversized_.fetch_add(1, std::memory_order_relaxed) == 0) {
    spdlog::warn("bootstrap reply of {} bytes: devices with a {}-byte receive buffer (1NCE C "
                 "SDK) cannot read it; shorten bootstrap.coaps_url",
                 reply->size, kBootstrapDatagramLimit);
  }
  Finish(request, std::span<const std::byte>(out).first(reply->size),
         content ? replied_205_ : replied_500_);
}

void BootstrapService::Finish(const BootstrapRequest& request, std::span<const std::byte> bytes,
                              std::atomic<uint64_t>& success) {
  if (!Send(request, bytes)) {
    bump(send_failures_);
    return;
  }
  bump(success);
}

bool BootstrapService::Send(const BootstrapRequest& request, std::span<const std::byte> bytes) {
  net::ReplyMessage message;
  message.Fill(reinterpret_cast<const sockaddr*>(&request.peer), request.peer_length,
               request.local, bytes);
  for (int attempt = 1;; ++attempt) {
    if (sendmsg(request.socket_fd, &message.header, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
      return true;
    }
    if (errno == EINTR) continue;
    if ((errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) ||
        attempt == kSendAttempts) {
      spdlog::warn("bootstrap reply not sent: {}", std::strerror(errno));
      return false;
    }
    pollfd p{request.socket_fd, POLLOUT, 0};
    poll(&p, 1, kSendWaitMs);
  }
}

}  // namespace coapgate::bootstrap
