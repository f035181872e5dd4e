// PostgresChangeFollower: keeps a node's registry in step with the shared table. A thread of
// its own holds a connection that LISTENs on the change channel; when a notification (or, after
// every reconnect, a look at the table: NOTIFY is not replayed to a node that was away) shows a
// change newer than the snapshot in force, it calls `changed`, and the server reloads the
// registry on its main thread. Reconnects with a backoff of 1 s doubling to 30 s.
//
// Thread contract: constructed, started and destroyed by one thread; `changed` and
// `loaded_seq` are called on the follower's thread; the accessors from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

namespace coapgate::registry {

class PostgresChangeFollower {
 public:
  // `loaded_seq`: the change number of the snapshot in force. `changed`: there is a newer one;
  // must return at once (the server raises a signal at itself).
  PostgresChangeFollower(std::string dsn, std::function<uint64_t()> loaded_seq,
                         std::function<void()> changed);
  ~PostgresChangeFollower();  // stops the thread and waits for it
  PostgresChangeFollower(const PostgresChangeFollower&) = delete;
  PostgresChangeFollower& operator=(const PostgresChangeFollower&) = delete;

  void Start();

  // The follower holds a live, listening connection.
  [[nodiscard]] bool connected() const noexcept {
    return connected_.load(std::memory_order_acquire);
  }
  // Connections lost (or never made) since the start.
  [[nodiscard]] uint64_t connection_failures() const noexcept {
    return failures_.load(std::memory_order_relaxed);
  }
  // Notifications received.
  [[nodiscard]] uint64_t notifications() const noexcept {
    return notifications_.load(std::memory_order_relaxed);
  }

 private:
  void Run();
  // Waits up to `ms` for the stop event; true when asked to stop.
  [[nodiscard]] bool WaitForStop(int ms) const;

  const std::string dsn_;
  const std::function<uint64_t()> loaded_seq_;
  const std::function<void()> changed_;
  int stop_fd_ = -1;  // eventfd: written once by the destructor
  std::thread thread_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> notifications_{0};
};

}  // namespace coapgate::registry
