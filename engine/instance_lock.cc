#include "engine/instance_lock.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace coapgate::engine {
namespace {

// The abstract address of one port's lock; returns the address length to bind or connect.
socklen_t LockAddress(uint16_t port, sockaddr_un* address) {
  std::memset(address, 0, sizeof(*address));
  address->sun_family = AF_UNIX;
  const std::string name = "coapgate/udp/" + std::to_string(port);
  // sun_path[0] stays '\0': the abstract namespace. The name is short and never truncated.
  std::memcpy(address->sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

// The pid holding `port`'s lock, or 0 if it cannot be learnt. Non-blocking: the holder never
// accepts, so every probe stays in its listen backlog; once that is full a blocking connect
// would wait for good (EAGAIN here: the pid is unknown, the refusal stands).
pid_t Holder(uint16_t port) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return 0;
  sockaddr_un address;
  const socklen_t length = LockAddress(port, &address);
  pid_t pid = 0;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), length) == 0) {
    ucred credentials{};
    socklen_t size = sizeof(credentials);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) == 0) pid = credentials.pid;
  }
  close(fd);
  return pid;
}

}  // namespace

Result<std::unique_ptr<InstanceLock>, std::string> InstanceLock::Acquire(
    const std::vector<uint16_t>& ports) {
  std::unique_ptr<InstanceLock> lock(new InstanceLock());
  std::vector<uint16_t> sorted = ports;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  for (uint16_t port : sorted) {
    if (port == 0) continue;
    if (auto ok = lock->Take(port); !ok) return Fail(std::move(ok.error()));
  }
  return lock;
}

Result<void, std::string> InstanceLock::Take(uint16_t port) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(std::string("instance lock: socket: ") + std::strerror(errno));
  sockaddr_un address;
  const socklen_t length = LockAddress(port, &address);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0 || listen(fd, 4) != 0) {
    const int e = errno;
    close(fd);
    if (e != EADDRINUSE) {
      return Fail("instance lock for UDP port " + std::to_string(port) + ": " + std::strerror(e));
    }
    const pid_t pid = Holder(port);
    return Fail("UDP port " + std::to_string(port) + " is already served by another coapgate" +
                (pid > 0 ? " (pid " + std::to_string(pid) + ")" : std::string()) +
                "; stop it first (a second instance would silently take part of its traffic)");
  }
  fds_.push_back(fd);
  return {};
}

std::unique_ptr<InstanceLock> InstanceLock::Adopt(std::vector<int> fds) {
  std::unique_ptr<InstanceLock> lock(new InstanceLock());
  lock->fds_ = std::move(fds);
  return lock;
}

InstanceLock::~InstanceLock() {
  for (int fd : fds_) close(fd);
}

}  // namespace coapgate::engine
