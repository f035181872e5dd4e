#include "bench/loadgen/timer_wheel.h"

namespace coapgate::loadgen {

TimerWheel::TimerWheel(uint32_t ids)
    : links_(ids, Link{kOff, kNone, 0}), heads_(kBuckets, kNone) {}

void TimerWheel::Schedule(uint32_t id, uint32_t deadline_ms) noexcept {
  const uint32_t bucket = deadline_ms & kMask;
  Link& link = links_[id];
  link.deadline_ms = deadline_ms;
  link.prev = kHead;
  link.next = heads_[bucket];
  if (link.next != kNone) links_[link.next].prev = id;
  heads_[bucket] = id;
}

void TimerWheel::Cancel(uint32_t id) noexcept {
  Link& link = links_[id];
  if (link.prev == kHead) {
    heads_[link.deadline_ms & kMask] = link.next;
  } else {
    links_[link.prev].next = link.next;
  }
  if (link.next != kNone) links_[link.next].prev = link.prev;
  link.prev = kOff;
  link.next = kNone;
}

}  // namespace coapgate::loadgen
