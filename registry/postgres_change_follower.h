// PostgresChangeFollower: keeps a node's registry in step with the shared table. A thread of
// its own holds a connection that LISTENs on the change channel; when a notification (or, after
// every reconnect, a look at the table: NOTIFY is not replayed to a node that was away) shows a
// change newer than the snapshot in force, it calls `changed`, and the server reloads the
// registry on its main thread. Reconnects with a backoff of 1 s doubling to 30 s.
//
// The same loop follows any other channel through a Subscription (the bootstrap keys,
// registry/postgres_key_store.h): what to do after each (re)connect and periodically (catch
// up, since NOTIFY is not replayed), and what to do with the notifications that arrived.
//
// Thread contract: constructed, started and destroyed by one thread; `changed` and
// `loaded_seq` (or the Subscription's functions) are called on the follower's thread, with the
// follower's own connection; the accessors from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/result.h"

namespace coapgate::registry {

class PostgresConnection;

class PostgresChangeFollower {
 public:
  struct Subscription {
    std::string channel;  ///< LISTENed to
    std::string what;     ///< names the follower in logs: "registry changes"
    // After every (re)connect (`reconnected` true: catch up with what was missed) and every
    // 10 s while connected (false: also proves the connection alive). An error drops the
    // connection and reconnects.
    std::function<Result<void, Error>(PostgresConnection&, bool reconnected)> check;
    // The payloads of the notifications that arrived together; an error reconnects.
    std::function<Result<void, Error>(PostgresConnection&, const std::vector<std::string>&)>
        notified;
    // Optional (-1: none): an fd the subscriber makes readable when it has work for the
    // database (the key store's fetches of missed keys, registry/key_fetch_queue.h). While
    // connected, the follower polls it with its socket and calls `woken`, which must make it
    // unreadable again (or the loop spins); while disconnected the work waits, and the catch-up
    // after the reconnect comes first. An error reconnects.
    int wake_fd = -1;
    std::function<Result<void, Error>(PostgresConnection&)> woken;
  };

  PostgresChangeFollower(std::string dsn, Subscription subscription);
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
  // Connections made (LISTEN and the catch-up done): 1 after the first, one more per reconnect.
  [[nodiscard]] uint64_t connects() const noexcept {
    return connects_.load(std::memory_order_relaxed);
  }
  // Unix ms since when the follower has no connection (lost, or never made since Start); 0
  // while connected.
  [[nodiscard]] uint64_t down_since_ms() const noexcept {
    return down_since_ms_.load(std::memory_order_relaxed);
  }
  // Unix ms of the last time the follower knew itself in step with the table: a catch-up, a
  // periodic check or a batch of notifications handled without error; 0: never.
  [[nodiscard]] uint64_t synced_ms() const noexcept {
    return synced_ms_.load(std::memory_order_relaxed);
  }
  // What logs call it (Subscription::what).
  [[nodiscard]] const std::string& what() const noexcept { return subscription_.what; }

 private:
  void Run();
  // Waits up to `ms` for the stop event; true when asked to stop.
  [[nodiscard]] bool WaitForStop(int ms) const;

  const std::string dsn_;
  const Subscription subscription_;
  int stop_fd_ = -1;  // eventfd: written once by the destructor
  std::thread thread_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> notifications_{0};
  std::atomic<uint64_t> connects_{0};
  std::atomic<uint64_t> down_since_ms_{0};  // set by Start, cleared on each connect
  std::atomic<uint64_t> synced_ms_{0};
};

}  // namespace coapgate::registry
