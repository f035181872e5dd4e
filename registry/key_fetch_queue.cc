#include "registry/key_fetch_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <functional>

#include "common/check.h"
#include "common/hash.h"

namespace coapgate::registry {

static_assert((KeyFetchQueue::kRecentSlots & (KeyFetchQueue::kRecentSlots - 1)) == 0);

KeyFetchQueue::KeyFetchQueue(uint64_t cooldown_ms)
    : cooldown_ms_(cooldown_ms), recent_(kRecentSlots) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  CHECK(wake_fd_ >= 0, "eventfd for the key fetch queue");
}

KeyFetchQueue::~KeyFetchQueue() { ::close(wake_fd_); }

void KeyFetchQueue::Post(std::string_view iccid, uint64_t now_ms) noexcept {
  if (iccid.empty() || iccid.size() > kMaxIccidLength) return;
  const size_t slot =
      Mix64(std::hash<std::string_view>{}(iccid)) & (kRecentSlots - 1);
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    Recent& recent = recent_[slot];
    if (recent.iccid.view() == iccid && recent.posted_ms != 0 &&
        now_ms - recent.posted_ms < cooldown_ms_) {
      suppressed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    // Stamped also when dropped below: a full queue is not asked again at once.
    std::memcpy(recent.iccid.digits.data(), iccid.data(), iccid.size());
    recent.iccid.length = static_cast<uint8_t>(iccid.size());
    recent.posted_ms = now_ms == 0 ? 1 : now_ms;
    if (count_ == kCapacity) {
      queue_full_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    pending_[count_++] = recent.iccid;
    wake = count_ == 1;
  }
  queued_.fetch_add(1, std::memory_order_relaxed);
  if (wake) {
    const uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);  // EAGAIN only at 2^64-1: already readable
  }
}

void KeyFetchQueue::Take(std::vector<std::string>* out) {
  out->clear();
  uint64_t drained = 0;
  (void)!::read(wake_fd_, &drained, sizeof drained);  // before taking: a later Post wakes again
  std::array<Iccid, kCapacity> taken;
  size_t n = 0;
  {
    std::lock_guard lock(mutex_);
    n = count_;
    for (size_t i = 0; i < n; ++i) taken[i] = pending_[i];
    count_ = 0;
  }
  out->reserve(n);
  for (size_t i = 0; i < n; ++i) out->emplace_back(taken[i].view());
}

}  // namespace coapgate::registry
