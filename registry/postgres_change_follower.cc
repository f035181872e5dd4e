#include "registry/postgres_change_follower.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>

#include <spdlog/spdlog.h>

#include "common/check.h"
#include "common/clock.h"
#include "registry/postgres_connection.h"
#include "registry/postgres_device_table.h"

namespace coapgate::registry {
namespace {

constexpr int kFirstBackoffMs = 1000;
constexpr int kMaxBackoffMs = 30000;
// Besides notifications, the follower looks at the table this often: it notices a connection
// that died silently (no RST through a firewall) and a change whose NOTIFY was lost.
constexpr uint64_t kCheckEveryMs = 10000;

uint64_t ParseSeq(const std::string& text) {
  uint64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

}  // namespace

PostgresChangeFollower::PostgresChangeFollower(std::string dsn,
                                               std::function<uint64_t()> loaded_seq,
                                               std::function<void()> changed)
    : dsn_(std::move(dsn)), loaded_seq_(std::move(loaded_seq)), changed_(std::move(changed)) {
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  CHECK(stop_fd_ >= 0, "eventfd for the change follower");
}

PostgresChangeFollower::~PostgresChangeFollower() {
  const uint64_t one = 1;
  if (thread_.joinable()) {
    (void)!::write(stop_fd_, &one, sizeof one);
    thread_.join();
  }
  ::close(stop_fd_);
}

void PostgresChangeFollower::Start() {
  CHECK(!thread_.joinable(), "PostgresChangeFollower::Start twice");
  thread_ = std::thread([this] { Run(); });
}

bool PostgresChangeFollower::WaitForStop(int ms) const {
  pollfd p{stop_fd_, POLLIN, 0};
  return ::poll(&p, 1, ms) > 0;
}

void PostgresChangeFollower::Run() {
  int backoff_ms = kFirstBackoffMs;
  bool was_connected = true;  // so that the first failure is logged
  for (;;) {
    auto db = PostgresConnection::Connect(dsn_);
    Result<void, Error> listening =
        db ? db->Execute(std::string("LISTEN ") + kDeviceChangesChannel, "listening")
           : Result<void, Error>(tl::unexpected<Error>(db.error()));
    if (!listening) {
      failures_.fetch_add(1, std::memory_order_relaxed);
      connected_.store(false, std::memory_order_release);
      if (was_connected) {
        spdlog::error("registry changes: {}; retrying (serving the registry in memory)",
                      listening.error().message);
        was_connected = false;
      }
      if (WaitForStop(backoff_ms)) return;
      backoff_ms = std::min(backoff_ms * 2, kMaxBackoffMs);
      continue;
    }
    if (!was_connected) spdlog::info("registry changes: connected again");
    was_connected = true;
    backoff_ms = kFirstBackoffMs;
    connected_.store(true, std::memory_order_release);

    // Catch up first: changes made while we were away announced themselves to nobody.
    uint64_t last_check_ms = 0;
    for (;;) {
      const uint64_t now_ms = MonotonicMs();
      if (now_ms - last_check_ms >= kCheckEveryMs) {
        auto latest = PostgresDeviceTable::LatestSeq(*db);
        if (!latest) {
          spdlog::error("registry changes: {}", latest.error().message);
          break;
        }
        if (*latest > loaded_seq_()) changed_();
        last_check_ms = now_ms;
      }
      pollfd p[2] = {{db->socket(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      const int ready = ::poll(p, 2, static_cast<int>(kCheckEveryMs));
      if (ready < 0 && errno != EINTR) break;
      if (p[1].revents != 0) return;
      if (ready <= 0) continue;
      bool newer = false;
      std::string payload;
      for (;;) {
        auto note = db->NextNotification(&payload);
        if (!note) {
          spdlog::error("registry changes: {}", note.error().message);
          break;
        }
        if (!*note) break;
        notifications_.fetch_add(1, std::memory_order_relaxed);
        newer |= ParseSeq(payload) > loaded_seq_();
      }
      if (newer) changed_();
      if (!db->ok()) break;
    }
    failures_.fetch_add(1, std::memory_order_relaxed);
    connected_.store(false, std::memory_order_release);
    spdlog::error("registry changes: connection lost; reconnecting");
    was_connected = false;
    if (WaitForStop(backoff_ms)) return;
  }
}

}  // namespace coapgate::registry
