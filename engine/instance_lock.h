// InstanceLock: one coapgate per UDP port on a host (per network namespace). SO_REUSEPORT
// lets a second process of the same user bind the same port and silently take part of the
// traffic with its own exchange memory and state; this lock makes the second one stop at
// startup instead, naming the process that holds the port.
//
// Mechanism: a listening Unix socket in the abstract namespace ("\0coapgate/udp/<port>"),
// bound for the process's lifetime. The kernel releases it when the process dies, however it
// dies (no stale lock file); its scope is the network namespace, exactly the scope of the UDP
// port it guards. A contender connects to it to learn the holder's pid (SO_PEERCRED).
//
// Control plane only (startup); the lock is held until the object is destroyed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace coapgate::engine {

class InstanceLock {
 public:
  // Takes the lock of every non-zero port in `ports` (port 0 picks a free port: nobody else
  // can have it). The error names the port and, when the kernel tells, the holder's pid.
  [[nodiscard]] static Result<std::unique_ptr<InstanceLock>, std::string> Acquire(
      const std::vector<uint16_t>& ports);

  // A predecessor's locks, received with its sockets at a take-over (engine/takeover_channel.h):
  // the abstract sockets stay bound while either process holds a descriptor of them, so the
  // ports are guarded throughout. Takes ownership of `fds`.
  [[nodiscard]] static std::unique_ptr<InstanceLock> Adopt(std::vector<int> fds);
  // The descriptors, to hand to a successor (still owned here).
  [[nodiscard]] const std::vector<int>& fds() const noexcept { return fds_; }

  // Takes one more port's lock: for a port that was 0 in the configuration, once the kernel
  // chose it (a later instance configured with that number then finds it taken).
  [[nodiscard]] Result<void, std::string> Take(uint16_t port);

  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;
  ~InstanceLock();

 private:
  InstanceLock() = default;
  std::vector<int> fds_;
};

}  // namespace coapgate::engine
