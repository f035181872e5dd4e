#include "engine/inflight_table.h"

#include "common/check.h"

namespace coapgate::engine {

void InflightTable::Track(uint32_t slot, uint64_t deadline_ms) noexcept {
  DCHECK(slot < slots_.size(), "slot out of range");
  DCHECK(tail_ == kNoSlot || slots_[tail_].deadline_ms <= deadline_ms,
         "deadlines must not decrease along the unanswered list");
  Slot& s = slots_[slot];
  s.answered = false;
  s.deadline_ms = deadline_ms;
  s.prev = tail_;
  s.next = kNoSlot;
  if (tail_ != kNoSlot) {
    slots_[tail_].next = slot;
  } else {
    head_ = slot;
  }
  tail_ = slot;
}

void InflightTable::MarkAnswered(uint32_t slot) noexcept {
  Slot& s = slots_[slot];
  CHECK(!s.answered, "a slot is answered once");
  s.answered = true;
  if (s.prev != kNoSlot) {
    slots_[s.prev].next = s.next;
  } else {
    head_ = s.next;
  }
  if (s.next != kNoSlot) {
    slots_[s.next].prev = s.prev;
  } else {
    tail_ = s.prev;
  }
  s.prev = s.next = kNoSlot;
}

}  // namespace coapgate::engine
