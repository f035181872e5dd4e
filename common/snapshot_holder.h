// SnapshotHolder<T>: the current version of an immutable, shared object (the device registry,
// the Energy Saver templates), replaced atomically on SIGHUP while readers keep working.
//
// Readers poll a generation counter once per loop turn — one acquire load — and take the
// mutex only when it changed, to copy the new shared_ptr. An old snapshot is freed when its
// last reader has moved on, so views into it never dangle mid-message.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

namespace coapgate {

template <class T>
class SnapshotHolder {
 public:
  explicit SnapshotHolder(std::shared_ptr<const T> initial) : current_(std::move(initial)) {}

  // Control thread.
  void Replace(std::shared_ptr<const T> next) {
    std::lock_guard lock(mutex_);
    current_ = std::move(next);
    generation_.fetch_add(1, std::memory_order_release);
  }

  // Any thread: updates *local if a newer snapshot exists since *seen_generation.
  void Refresh(uint64_t* seen_generation, std::shared_ptr<const T>* local) const {
    const uint64_t g = generation_.load(std::memory_order_acquire);
    if (g == *seen_generation && *local != nullptr) return;
    std::lock_guard lock(mutex_);
    *local = current_;
    *seen_generation = generation_.load(std::memory_order_relaxed);
  }

  // 1 for the initial snapshot, one more per Replace. Any thread.
  [[nodiscard]] uint64_t generation() const noexcept {
    return generation_.load(std::memory_order_relaxed);
  }

  [[nodiscard]] std::shared_ptr<const T> current() const {
    std::lock_guard lock(mutex_);
    return current_;
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const T> current_;
  std::atomic<uint64_t> generation_{1};
};

}  // namespace coapgate
