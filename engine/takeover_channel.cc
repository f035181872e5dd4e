#include "engine/takeover_channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace coapgate::engine {
namespace {

constexpr std::string_view kGreeting = "coapgate-takeover 1";
constexpr size_t kMaxMessage = 4096;
constexpr size_t kMaxFds = 253;  // SCM_MAX_FD

std::string Errno(std::string_view what) {
  return std::string(what) + ": " + std::strerror(errno);
}

Result<sockaddr_un, std::string> AddressOf(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return Fail(path + ": a Unix socket path must have 1 to " +
                std::to_string(sizeof(address.sun_path) - 1) + " characters");
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

// The text's lines, each split at its first space into key and value.
template <typename Visit>
Result<void, std::string> ForEachLine(std::string_view text, Visit visit) {
  while (!text.empty()) {
    const size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos) return Fail("take-over: bad line \"" + std::string(line) + "\"");
    if (auto ok = visit(line.substr(0, space), line.substr(space + 1)); !ok) return ok;
  }
  return {};
}

template <typename T>
Result<T, std::string> Number(std::string_view key, std::string_view value) {
  T out{};
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (error != std::errc() || end != value.data() + value.size()) {
    return Fail("take-over: bad " + std::string(key) + " \"" + std::string(value) + "\"");
  }
  return out;
}

// The pid listening at `path` (whatever its user), or 0 when nobody does: a bare connect,
// which a listener sees as a connection closed at once.
pid_t LivePeer(const std::string& path) {
  auto address = AddressOf(path);
  if (!address) return 0;
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  pid_t pid = 0;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&*address), sizeof(*address)) == 0) {
    ucred peer{};
    socklen_t length = sizeof(peer);
    pid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) == 0 && peer.pid > 0 ? peer.pid
                                                                                          : 1;
  }
  ::close(fd);
  return pid;
}

}  // namespace

std::string TakeoverRequest::Encode() const {
  std::string out = std::string(kGreeting) + "\nshards " + std::to_string(shards) + "\n";
  for (const std::string& a : coap_listen) out += "listen coap " + a + "\n";
  for (const std::string& a : coaps_listen) out += "listen coaps " + a + "\n";
  return out;
}

Result<TakeoverRequest, std::string> TakeoverRequest::Parse(std::string_view text) {
  if (!text.starts_with(std::string(kGreeting) + "\n")) {
    return Fail("take-over: not a request of this version (\"" +
                std::string(text.substr(0, text.find('\n'))) + "\")");
  }
  TakeoverRequest request;
  bool have_shards = false;
  auto ok = ForEachLine(text.substr(kGreeting.size() + 1),
                        [&](std::string_view key, std::string_view value) -> Result<void, std::string> {
    if (key == "shards") {
      auto n = Number<uint32_t>(key, value);
      if (!n) return Fail(std::move(n.error()));
      request.shards = *n;
      have_shards = true;
    } else if (key == "listen" && value.starts_with("coap ")) {
      request.coap_listen.emplace_back(value.substr(5));
    } else if (key == "listen" && value.starts_with("coaps ")) {
      request.coaps_listen.emplace_back(value.substr(6));
    } else {
      return Fail("take-over: unknown line \"" + std::string(key) + " " + std::string(value) + "\"");
    }
    return {};
  });
  if (!ok) return Fail(std::move(ok.error()));
  if (!have_shards) return Fail(std::string("take-over: the request names no shard count"));
  return request;
}

std::string TakeoverSockets::Encode() const {
  std::string out = "sockets " + std::to_string(sockets) + "\nlocks " + std::to_string(locks) +
                    "\nstate " + std::to_string(state) + "\n";
  for (uint16_t port : ports) out += "port " + std::to_string(port) + "\n";
  return out;
}

Result<TakeoverSockets, std::string> TakeoverSockets::Parse(std::string_view text) {
  if (text.starts_with("refused ")) return Fail("refused: " + std::string(text.substr(8)));
  TakeoverSockets answer;
  bool have_sockets = false;
  auto ok = ForEachLine(text, [&](std::string_view key, std::string_view value) -> Result<void, std::string> {
    if (key == "sockets" || key == "locks" || key == "state") {
      auto n = Number<uint32_t>(key, value);
      if (!n) return Fail(std::move(n.error()));
      (key == "sockets" ? answer.sockets : key == "locks" ? answer.locks : answer.state) = *n;
      have_sockets = have_sockets || key == "sockets";
    } else if (key == "port") {
      auto n = Number<uint16_t>(key, value);
      if (!n) return Fail(std::move(n.error()));
      answer.ports.push_back(*n);
    } else {
      return Fail("take-over: unknown line \"" + std::string(key) + " " + std::string(value) + "\"");
    }
    return {};
  });
  if (!ok) return Fail(std::move(ok.error()));
  if (!have_sockets) return Fail(std::string("take-over: the answer names no sockets"));
  return answer;
}

TakeoverChannel::~TakeoverChannel() { ::close(fd_); }

Result<void, std::string> TakeoverChannel::CheckPeer() {
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (getsockopt(fd_, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    return Fail(Errno("take-over: SO_PEERCRED"));
  }
  peer_pid_ = peer.pid;
  if (peer.uid != geteuid() && peer.uid != 0) {
    return Fail("take-over: refused pid " + std::to_string(peer.pid) + " of uid " +
                std::to_string(peer.uid) + " (not this process's user)");
  }
  return {};
}

Result<std::unique_ptr<TakeoverChannel>, std::string> TakeoverChannel::Connect(
    const std::string& path) {
  auto address = AddressOf(path);
  if (!address) return Fail(std::move(address.error()));
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(Errno("take-over: socket"));
  std::unique_ptr<TakeoverChannel> channel(new TakeoverChannel(fd));
  if (connect(fd, reinterpret_cast<const sockaddr*>(&*address), sizeof(*address)) != 0) {
    const int e = errno;
    if (e == ENOENT || e == ECONNREFUSED) {
      return Fail(path + ": nothing to take over (no coapgate listens there: " +
                  std::strerror(e) + ")");
    }
    return Fail(path + ": connect: " + std::strerror(e));
  }
  if (auto ok = channel->CheckPeer(); !ok) return Fail(std::move(ok.error()));
  return channel;
}

Result<void, std::string> TakeoverChannel::Send(std::string_view text, std::span<const int> fds) {
  if (text.size() > kMaxMessage || fds.size() > kMaxFds) {
    return Fail(std::string("take-over: message too large"));
  }
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr header{};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  std::vector<std::byte> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    header.msg_control = control.data();
    header.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&header);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  while (true) {
    const ssize_t n = sendmsg(fd_, &header, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(text.size())) return {};
    if (n < 0 && errno == EINTR) continue;
    return Fail(n < 0 ? Errno("take-over: send") : std::string("take-over: short send"));
  }
}

Result<TakeoverMessage, std::string> TakeoverChannel::Receive(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  int ready;
  do {
    ready = poll(&p, 1, timeout_ms);
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) return Fail(Errno("take-over: poll"));
  if (ready == 0) return Fail("take-over: no answer within " + std::to_string(timeout_ms) + " ms");
  TakeoverMessage message;
  message.text.resize(kMaxMessage + 1);
  iovec iov{message.text.data(), message.text.size()};
  std::vector<std::byte> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  msghdr header{};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  header.msg_control = control.data();
  header.msg_controllen = control.size();
  ssize_t n;
  do {
    n = recvmsg(fd_, &header, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Fail(Errno("take-over: receive"));
  for (cmsghdr* c = CMSG_FIRSTHDR(&header); c != nullptr; c = CMSG_NXTHDR(&header, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const size_t first = message.fds.size();
    message.fds.resize(first + count);
    std::memcpy(message.fds.data() + first, CMSG_DATA(c), count * sizeof(int));
  }
  if (n == 0) return Fail(std::string("take-over: closed by the other process"));
  if (static_cast<size_t>(n) > kMaxMessage || (header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    for (int fd : message.fds) ::close(fd);
    return Fail(std::string("take-over: message too large"));
  }
  message.text.resize(static_cast<size_t>(n));
  return message;
}

Result<std::unique_ptr<TakeoverListener>, std::string> TakeoverListener::Listen(
    const std::string& path) {
  auto address = AddressOf(path);
  if (!address) return Fail(std::move(address.error()));
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Fail(Errno("take-over: socket"));
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      ::close(fd);
      return Fail(path + ": exists and is not a socket");
    }
    // Another live process listening there (a second instance whose state file is the same
    // path) keeps it; a stale socket, whose process is gone, is replaced below.
    if (const pid_t holder = LivePeer(path); holder != 0) {
      ::close(fd);
      return Fail(path + ": in use by pid " + std::to_string(holder));
    }
  }
  // Bound under a name of its own, made 0600, then renamed into place: the path never names
  // a socket others may connect to, and a successor's rename replaces a stale file at once.
  const std::string temporary = path + ".new." + std::to_string(getpid());
  auto temporary_address = AddressOf(temporary);
  if (!temporary_address) {
    ::close(fd);
    return Fail(std::move(temporary_address.error()));
  }
  ::unlink(temporary.c_str());
  const char* failed = nullptr;
  if (bind(fd, reinterpret_cast<const sockaddr*>(&*temporary_address),
           sizeof(*temporary_address)) != 0) {
    failed = "bind";
  } else if (::chmod(temporary.c_str(), 0600) != 0) {
    failed = "chmod";
  } else if (listen(fd, 4) != 0) {
    failed = "listen";
  } else if (::rename(temporary.c_str(), path.c_str()) != 0) {
    failed = "rename";
  }
  if (failed != nullptr) {
    const std::string error = path + ": " + failed + ": " + std::strerror(errno);
    ::unlink(temporary.c_str());
    ::close(fd);
    return Fail(error);
  }
  if (::stat(path.c_str(), &st) != 0) {
    const std::string error = Errno(path + ": stat");
    ::close(fd);
    return Fail(error);
  }
  return std::unique_ptr<TakeoverListener>(
      new TakeoverListener(fd, path, st.st_dev, st.st_ino));
}

Result<std::unique_ptr<TakeoverChannel>, std::string> TakeoverListener::Accept() {
  const int fd = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return Fail(Errno("take-over: accept"));
  std::unique_ptr<TakeoverChannel> channel(new TakeoverChannel(fd));
  if (auto ok = channel->CheckPeer(); !ok) return Fail(std::move(ok.error()));
  return channel;
}

TakeoverListener::~TakeoverListener() {
  ::close(fd_);
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0 && st.st_dev == device_ && st.st_ino == inode_) {
    ::unlink(path_.c_str());
  }
}

}  // namespace coapgate::engine
