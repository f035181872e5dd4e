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

uint64_t BootstrapService::SystemNowSeconds() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(now).count());
}

BootstrapService::BootstrapService(registry::PskStore* store, std::string coaps_url, uint32_t capacity,
                                   Clock now_s)
    : store_(store),
      coaps_url_(std::move(coaps_url)),
      now_s_(std::move(now_s)),
      ring_(std::max<uint32_t>(capacity, 1)),
      next_message_id_(RandomMessageId()) {}

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
    ring_[(head_ + count_) % ring_.size()] = request;
    ++count_;
  }
  wake_.notify_one();
  return true;
}

void BootstrapService::Run() {
  for (;;) {
    BootstrapRequest request;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return count_ != 0 || stopping_; });
      if (count_ == 0) return;  // stopping, and everything queued is answered
      request = ring_[head_];
      head_ = (head_ + 1) % ring_.size();
      --count_;
    }
    Answer(request);
  }
}

void BootstrapService::Answer(const BootstrapRequest& request) {
  const std::string_view iccid(request.iccid.data(),
                               std::min<size_t>(request.iccid_length, request.iccid.size()));
  const std::string_view user_psk(
      request.user_psk.data(), std::min<size_t>(request.user_psk_length, request.user_psk.size()));
  const BootstrapExchange exchange{
      request.confirmable, request.message_id,
      std::span<const std::byte>(request.token)
          .first(std::min<size_t>(request.token_length, request.token.size()))};

  std::array<std::byte, net::kMaxReplySize> out;
  Result<EncodedBootstrapReply, codec::EncodeErrc> reply = Fail(codec::EncodeErrc::kBufferTooSmall);
  auto key = store_->Bootstrap(iccid, user_psk, now_s_());
  if (key) {
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
  } else {
    spdlog::error("bootstrap {}: {}", iccid, key.error());
  }
  const bool content = reply.has_value();
  if (!content) {
    reply = EncodeBootstrapErrorReply(exchange, next_message_id_, BootstrapError::kServerError,
                                      out);
  }
  if (!reply) {  // impossible: the error reply is a constant that fits (static_assert)
    bump(send_failures_);
    return;
  }
  if (!exchange.confirmable) next_message_id_ = static_cast<uint16_t>(reply->message_id + 1);
  if (reply->oversized && oversized_.fetch_add(1, std::memory_order_relaxed) == 0) {
    spdlog::warn("bootstrap reply of {} bytes: devices with a {}-byte receive buffer (1NCE C "
                 "SDK) cannot read it; shorten bootstrap.coaps_url",
                 reply->size, kBootstrapDatagramLimit);
  }
  if (!Send(request, std::span<const std::byte>(out).first(reply->size))) {
    bump(send_failures_);
    return;
  }
  bump(content ? replied_205_ : replied_500_);
}

bool BootstrapService::Send(const BootstrapRequest& request, std::span<const std::byte> bytes) {
  if (request.peer_length > sizeof(request.peer)) return false;
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
