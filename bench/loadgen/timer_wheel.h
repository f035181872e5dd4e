// TimerWheel: one pending deadline per exchange slot, for up to millions of slots, with O(1)
// schedule and cancel. Deadlines are milliseconds on the worker's own clock (32 bits: 49 days).
//
// A single wheel of 4096 one-millisecond buckets (4.1 s); a deadline further out than that
// sits in its bucket and is skipped, not fired, on the rotations before its own (a 93 s wait
// is looked at 23 times). Each bucket is an intrusive doubly linked list threaded through a
// per-slot Link array, so memory is fixed at construction: 12 bytes per slot + 16 KiB.
//
// Thread contract: owned by one worker; not synchronized.
#pragma once

#include <cstdint>
#include <vector>

namespace coapgate::loadgen {

class TimerWheel {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;  // end of a bucket's list
  // ids must stay below this (two link values are markers).
  static constexpr uint32_t kMaxIds = UINT32_MAX - 2;

  // Slots are ids 0 .. ids - 1. REQUIRES: ids <= kMaxIds.
  explicit TimerWheel(uint32_t ids);

  // REQUIRES: id < ids, not scheduled; deadline_ms >= the last Advance's now_ms.
  void Schedule(uint32_t id, uint32_t deadline_ms) noexcept;
  // REQUIRES: id scheduled.
  void Cancel(uint32_t id) noexcept;
  [[nodiscard]] bool scheduled(uint32_t id) const noexcept { return links_[id].prev != kOff; }

  // Calls on_expired(id) once for every id whose deadline is <= now_ms, after unscheduling it;
  // on_expired may schedule it, or any unscheduled id, but must not cancel other ids. Deadlines
  // are fired in bucket order, not strictly in time order within one call.
  template <class F>
  void Advance(uint32_t now_ms, F&& on_expired) {
    if (now_ms < now_ms_) return;
    // Every bucket at most once per call: after a long stall, one full rotation covers all.
    const uint32_t steps = now_ms - now_ms_ >= kBuckets ? kBuckets : now_ms - now_ms_ + 1;
    for (uint32_t s = 0; s < steps; ++s) {
      const uint32_t bucket = (now_ms_ + s) & kMask;
      uint32_t id = heads_[bucket];
      while (id != kNone) {
        const uint32_t next = links_[id].next;
        if (links_[id].deadline_ms <= now_ms) {
          Cancel(id);
          on_expired(id);
        }
        id = next;
      }
    }
    now_ms_ = now_ms;
  }

 private:
  static constexpr uint32_t kBuckets = 4096;
  static constexpr uint32_t kMask = kBuckets - 1;

  // prev is kHead for the first entry of a bucket (the bucket is deadline_ms & kMask) and
  // kOff when the id is not scheduled.
  static constexpr uint32_t kHead = UINT32_MAX;
  static constexpr uint32_t kOff = UINT32_MAX - 1;
  struct Link {
    uint32_t prev;
    uint32_t next;
    uint32_t deadline_ms;
  };

  std::vector<Link> links_;
  std::vector<uint32_t> heads_;
  uint32_t now_ms_ = 0;
};

}  // namespace coapgate::loadgen
