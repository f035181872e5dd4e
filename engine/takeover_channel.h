// TakeoverChannel: how a new coapgate takes the listening sockets of the running one
// (`coapgate --take-over`, docs/operations.md "Upgrading without a restart"). The running
// process listens on a Unix socket in its state directory; the successor connects, says
// which sockets it expects, and receives the very same sockets (SCM_RIGHTS) — with whatever
// datagrams the kernel still queues in them — instead of binding new ones. Nothing is
// dropped, and since the old process stops reading before it hands them over, no datagram
// is read by both.
//
// The conversation, one SOCK_SEQPACKET message per step (text, so that `strace` shows it):
//   successor → running:  "coapgate-takeover 1\nshards N\nlisten coap H:P\nlisten coaps H:P\n"
//   running → successor:  "refused <why>"  (the running process serves on), or
//                         "sockets N\nlocks M\nstate S\nport P\n..." with N + M + S
//                         descriptors attached: the shards' sockets, shard by shard in listen
//                         order, then the instance locks (engine/instance_lock.h), which pass
//                         with them, then (S = 1) a memfd holding the restart state
//                         (engine/restart_state.h: DTLS sessions, answered exchanges) taken
//                         after the running process stopped reading
//   successor → running:  "ready <pid>" once its shards are built and the state restored;
//                         they read nothing yet
//   running → successor:  "go": the running process has committed (it never reads again and
//                         closed its take-over socket), or "abort" (its wait ran out, or it
//                         was told to stop): it reads its sockets again, and the successor
//                         exits 1 having read nothing. Without "ready" (the successor died,
//                         the connection closed) it reads its sockets again too.
//   successor → running:  "serving" once it reads the sockets and its service manager knows
//                         it as the main process (MAINPID=); the running process, draining
//                         its pending messages to the sinks meanwhile, then exits 0.
//
// Security: the socket file is 0600 in the state directory (0700 under systemd); both ends
// check the other's credentials (SO_PEERCRED): the same effective user, or root. The state
// holds session keys: it lives in memory only (memfd), never in a file, and never leaves
// the host.
//
// Control plane only: one thread at a time per object; every call bounded by a timeout.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace coapgate::engine {

// One message: its text and the descriptors that came with it (owned by the receiver).
struct TakeoverMessage {
  std::string text;
  std::vector<int> fds;
};

// What a successor asks for: the same shard count and listen addresses, as configured
// (port 0 stays 0: the running process's chosen port comes back in the answer).
struct TakeoverRequest {
  uint32_t shards = 0;
  std::vector<std::string> coap_listen;
  std::vector<std::string> coaps_listen;

  [[nodiscard]] std::string Encode() const;
  // The error says what is wrong with the text (a different version, a missing line).
  [[nodiscard]] static Result<TakeoverRequest, std::string> Parse(std::string_view text);
  bool operator==(const TakeoverRequest&) const = default;
};

// The running process's answer: how many of the attached descriptors are shard sockets
// (the rest are instance locks) and the ports they listen on, in listen order.
struct TakeoverSockets {
  uint32_t sockets = 0;
  uint32_t locks = 0;
  uint32_t state = 0;  ///< 1: the last descriptor is the restart state's memfd
  std::vector<uint16_t> ports;

  [[nodiscard]] std::string Encode() const;
  [[nodiscard]] static Result<TakeoverSockets, std::string> Parse(std::string_view text);
};

// One end of a conversation. Closing it (destruction) is how either side gives up.
class TakeoverChannel {
 public:
  // The successor's end. Errors name the path ("nothing to take over at ...").
  [[nodiscard]] static Result<std::unique_ptr<TakeoverChannel>, std::string> Connect(
      const std::string& path);

  // Sends one message with `fds` attached (still the caller's afterwards).
  [[nodiscard]] Result<void, std::string> Send(std::string_view text,
                                               std::span<const int> fds = {});
  // Waits up to timeout_ms for one message; an error on timeout, end of conversation
  // ("closed") or a message too large.
  [[nodiscard]] Result<TakeoverMessage, std::string> Receive(int timeout_ms);

  [[nodiscard]] pid_t peer_pid() const noexcept { return peer_pid_; }
  [[nodiscard]] int fd() const noexcept { return fd_; }

  TakeoverChannel(const TakeoverChannel&) = delete;
  TakeoverChannel& operator=(const TakeoverChannel&) = delete;
  ~TakeoverChannel();

 private:
  friend class TakeoverListener;
  explicit TakeoverChannel(int fd) : fd_(fd) {}
  // Reads the peer's credentials; refuses another user.
  [[nodiscard]] Result<void, std::string> CheckPeer();

  int fd_;
  pid_t peer_pid_ = 0;
};

// The running process's end: listens at `path` for its lifetime and removes the file after.
class TakeoverListener {
 public:
  // A stale socket file from a process that died is replaced; one a live process listens
  // on is not ("in use by pid N"). Errors name the path.
  [[nodiscard]] static Result<std::unique_ptr<TakeoverListener>, std::string> Listen(
      const std::string& path);

  // Readable (poll) when a successor is waiting.
  [[nodiscard]] int fd() const noexcept { return fd_; }
  // Takes one waiting successor, or says why not (nobody waiting, another user).
  [[nodiscard]] Result<std::unique_ptr<TakeoverChannel>, std::string> Accept();
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  TakeoverListener(const TakeoverListener&) = delete;
  TakeoverListener& operator=(const TakeoverListener&) = delete;
  ~TakeoverListener();

 private:
  TakeoverListener(int fd, std::string path, dev_t device, ino_t inode)
      : fd_(fd), path_(std::move(path)), device_(device), inode_(inode) {}

  int fd_;
  std::string path_;
  // The file we bound: only that one is removed at exit (a successor may have bound its own).
  dev_t device_;
  ino_t inode_;
};

}  // namespace coapgate::engine
