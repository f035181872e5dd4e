#include "engine/service_notifier.h"

#include <systemd/sd-daemon.h>

#include <unistd.h>

#include <string>

#include "common/check.h"

namespace coapgate::engine {
namespace {
constexpr uint64_t kBarrierTimeoutUsec = 5'000'000;
}  // namespace

ServiceNotifier::ServiceNotifier() {
  uint64_t usec = 0;
  // 0 unset_environment: a child (none today) would see the same socket; >0 means enabled.
  if (sd_watchdog_enabled(0, &usec) > 0) watchdog_usec_ = usec;
}

void ServiceNotifier::Send(std::string_view message) const {
  // sd_notify is a no-op returning 0 without NOTIFY_SOCKET; a failure to reach the manager
  // is not fatal to serving devices, so its result is only informative.
  const std::string text(message);
  (void)sd_notify(0, text.c_str());
}

void ServiceNotifier::Ready(std::string_view status) const {
  Send("READY=1\nSTATUS=" + std::string(status));
}

void ServiceNotifier::Reloading() const { Send("RELOADING=1\nSTATUS=reloading"); }

void ServiceNotifier::Stopping() const { Send("STOPPING=1\nSTATUS=draining"); }

void ServiceNotifier::Status(std::string_view status) const {
  Send("STATUS=" + std::string(status));
}

void ServiceNotifier::Watchdog() const { Send("WATCHDOG=1"); }

void ServiceNotifier::MainPid() const {
  Send("MAINPID=" + std::to_string(getpid()));
  (void)sd_notify_barrier(0, kBarrierTimeoutUsec);
}

bool ProgressWatch::AllMoved(const std::vector<uint64_t>& turns) {
  const bool first = previous_.empty();
  CHECK(first || previous_.size() == turns.size(), "the shard count changed under the watch");
  bool moved = true;
  for (size_t i = 0; !first && i < turns.size(); ++i) {
    if (turns[i] == previous_[i]) {
      moved = false;
      stuck_ = i;
      break;
    }
  }
  previous_ = turns;
  return moved;
}

}  // namespace coapgate::engine
