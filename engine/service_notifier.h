// ServiceNotifier: what coapgate tells its service manager (systemd's sd_notify protocol,
// Type=notify): READY=1 once every listener serves, RELOADING=1 ... READY=1 around a SIGHUP
// reload, STOPPING=1 when the drain starts, STATUS= a one-line summary, and WATCHDOG=1 —
// only while every shard makes progress, so that a wedged shard gets the node restarted
// (WatchdogSec=) instead of silently answering nothing.
//
// Without NOTIFY_SOCKET (not under systemd) every call is a no-op. Control thread only.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace coapgate::engine {

class ServiceNotifier {
 public:
  ServiceNotifier();

  void Ready(std::string_view status) const;
  void Reloading() const;
  void Stopping() const;
  void Status(std::string_view status) const;
  void Watchdog() const;
  // MAINPID= this process, for a successor started inside the service (`coapgate upgrade`,
  // engine/takeover_channel.h; the unit has NotifyAccess=all), then waits (bounded) until the
  // manager has read it, so that the predecessor's exit, which follows, is not taken for the
  // service's end.
  void MainPid() const;

  // The watchdog interval the service manager asked for (WATCHDOG_USEC), 0 = none. Pings
  // must come at least twice per interval.
  [[nodiscard]] uint64_t watchdog_usec() const noexcept { return watchdog_usec_; }

 private:
  void Send(std::string_view message) const;
  uint64_t watchdog_usec_ = 0;
};

// Decides whether the shards make progress: each shard's loop-turn counter must have moved
// since the previous check. An idle shard still turns (it wakes at least every 100 ms), so a
// counter that stands still for a whole check interval means a shard stuck inside a turn.
// Pure logic, for the control thread; tests drive it with made-up counters.
class ProgressWatch {
 public:
  // True when every counter in `turns` moved since the previous call (the first call, which
  // has nothing to compare with, is true). `turns` must keep its size between calls.
  [[nodiscard]] bool AllMoved(const std::vector<uint64_t>& turns);
  // Index of a shard that did not move at the last AllMoved that returned false.
  [[nodiscard]] size_t stuck() const noexcept { return stuck_; }

 private:
  std::vector<uint64_t> previous_;  // empty before the first call
  size_t stuck_ = 0;
};

}  // namespace coapgate::engine
