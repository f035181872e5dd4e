#include "sinks/handoff.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <cstdlib>

#include "common/check.h"

namespace coapgate::sinks {

Handoff::Handoff(uint32_t capacity, uint32_t max_payload, uint32_t lanes)
    : capacity_(std::min(capacity, kSlotMask)),
      max_payload_(max_payload),
      messages_(new InflightMessage[capacity_]),
      payloads_(new std::byte[static_cast<size_t>(capacity_) * max_payload]),
      free_(capacity_),
      free_count_(capacity_) {
  for (uint32_t i = 0; i < std::clamp(lanes, 1u, 64u); ++i) {
    lanes_.push_back(std::make_unique<Lane>(capacity_));
  }
  for (uint32_t i = 0; i < capacity_; ++i) {
    messages_[i].payload = payloads_.get() + static_cast<size_t>(i) * max_payload;
    free_[i] = capacity_ - 1 - i;  // hand out low slots first: their pages get touched first
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  CHECK(wake_fd_ >= 0, "eventfd for the hand-off failed");
}

Handoff::~Handoff() {
  if (wake_fd_ >= 0) close(wake_fd_);
}

bool Handoff::Acquire(uint32_t* slot) noexcept {
  if (free_count_ == 0) return false;
  *slot = free_[--free_count_];
  return true;
}

void Handoff::Release(uint32_t slot) noexcept { free_[free_count_++] = slot; }

bool Handoff::PopCompletion(uint32_t* slot, Outcome* outcome) noexcept {
  const uint32_t n = lanes();
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t lane = next_lane_;
    next_lane_ = next_lane_ + 1 == n ? 0 : next_lane_ + 1;
    uint32_t v;
    if (lanes_[lane]->completions.pop(v)) {
      *slot = v & kSlotMask;
      *outcome = static_cast<Outcome>(v >> kOutcomeShift);
      return true;
    }
  }
  return false;
}

void Handoff::DrainWake() noexcept {
  uint64_t ignored;
  while (read(wake_fd_, &ignored, sizeof(ignored)) > 0) {
  }
}

void Handoff::Complete(uint32_t lane, uint32_t slot, Outcome outcome) noexcept {
  const bool pushed =
      lanes_[lane]->completions.push(slot | static_cast<uint32_t>(outcome) << kOutcomeShift);
  CHECK(pushed, "more completions than slots");
}

void Handoff::WakeShard() noexcept {
  const uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the shard will wake anyway.
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof(one));
}

}  // namespace coapgate::sinks
