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
    : PostgresChangeFollower(
          std::move(dsn),
          Subscription{
              kDeviceChangesChannel, "registry changes",
              [loaded_seq, changed](PostgresConnection& db, bool) -> Result<void, Error> {
                auto latest = PostgresDeviceTable::LatestSeq(db);
                if (!latest) return tl::unexpected<Error>(latest.error());
                if (*latest > loaded_seq()) changed();
                return {};
              },
              [loaded_seq, changed](PostgresConnection&,
                                    const std::vector<std::string>& payloads)
                  -> Result<void, Error> {
                bool newer = false;
                for (const std::string& p : payloads) newer |= ParseSeq(p) > loaded_seq();
                if (newer) changed();
                return {};
              },
              /*wake_fd=*/-1, /*woken=*/nullptr}) {}

PostgresChangeFollower::PostgresChangeFollower(std::string dsn, Subscription subscription)
    : dsn_(std::move(dsn)), subscription_(std::move(subscription)) {
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
  // spdlog's registry is created on first use; created here, before the thread, its creation
  // happens-before the thread's logging in a way ThreadSanitizer can see (libspdlog is not
  // instrumented, so the guard of its lazy static is invisible to it).
  (void)spdlog::default_logger_raw();
  down_since_ms_.store(WallMs(), std::memory_order_relaxed);
  thread_ = std::thread([this] { Run(); });
}

bool PostgresChangeFollower::WaitForStop(int ms) const {
  pollfd p{stop_fd_, POLLIN, 0};
  return ::poll(&p, 1, ms) > 0;
}

void PostgresChangeFollower::Run() {
  const std::string& what = subscription_.what;
  int backoff_ms = kFirstBackoffMs;
  bool was_connected = true;  // so that the first failure is logged
  for (;;) {
    auto db = PostgresConnection::Connect(dsn_);
    Result<void, Error> listening =
        db ? db->Execute("LISTEN " + subscription_.channel, "listening")
           : Result<void, Error>(tl::unexpected<Error>(db.error()));
    // Catch up first: changes made while we were away announced themselves to nobody.
    if (listening) listening = subscription_.check(*db, /*reconnected=*/true);
    if (!listening) {
      failures_.fetch_add(1, std::memory_order_relaxed);
      connected_.store(false, std::memory_order_release);
      if (down_since_ms_.load(std::memory_order_relaxed) == 0) {
        down_since_ms_.store(WallMs(), std::memory_order_relaxed);
      }
      if (was_connected) {
        spdlog::error("{}: {}; retrying (serving from memory)", what, listening.error().message);
        was_connected = false;
      }
      if (WaitForStop(backoff_ms)) return;
      backoff_ms = std::min(backoff_ms * 2, kMaxBackoffMs);
      continue;
    }
    if (!was_connected) spdlog::info("{}: connected again", what);
    was_connected = true;
    backoff_ms = kFirstBackoffMs;
    connects_.fetch_add(1, std::memory_order_relaxed);
    synced_ms_.store(WallMs(), std::memory_order_relaxed);
    down_since_ms_.store(0, std::memory_order_relaxed);
    connected_.store(true, std::memory_order_release);

    uint64_t last_check_ms = MonotonicMs();
    std::vector<std::string> payloads;
    for (;;) {
      const uint64_t now_ms = MonotonicMs();
      if (now_ms - last_check_ms >= kCheckEveryMs) {
        if (auto checked = subscription_.check(*db, /*reconnected=*/false); !checked) {
          spdlog::error("{}: {}", what, checked.error().message);
          break;
        }
        last_check_ms = now_ms;
        synced_ms_.store(WallMs(), std::memory_order_relaxed);
      }
      // Drain what libpq holds before waiting: notifications that arrived while a callback's
      // query ran are already read off the socket, which would not wake poll for them.
      payloads.clear();
      bool failed = false;
      std::string payload;
      for (;;) {
        auto note = db->NextNotification(&payload);
        if (!note) {
          spdlog::error("{}: {}", what, note.error().message);
          failed = true;
          break;
        }
        if (!*note) break;
        notifications_.fetch_add(1, std::memory_order_relaxed);
        payloads.push_back(payload);
      }
      if (failed || !db->ok()) break;
      if (!payloads.empty()) {
        if (auto done = subscription_.notified(*db, payloads); !done) {
          spdlog::error("{}: {}", what, done.error().message);
          break;
        }
        synced_ms_.store(WallMs(), std::memory_order_relaxed);
        continue;  // look again before sleeping
      }
      const int wake_fd = subscription_.wake_fd;
      pollfd p[3] = {{db->socket(), POLLIN, 0}, {stop_fd_, POLLIN, 0}, {wake_fd, POLLIN, 0}};
      const int ready = ::poll(p, wake_fd >= 0 ? 3 : 2, static_cast<int>(kCheckEveryMs));
      if (ready < 0 && errno != EINTR) break;
      if (p[1].revents != 0) return;
      if (wake_fd >= 0 && p[2].revents != 0) {
        if (auto done = subscription_.woken(*db); !done) {
          spdlog::error("{}: {}", what, done.error().message);
          break;
        }
      }
    }
    failures_.fetch_add(1, std::memory_order_relaxed);
    down_since_ms_.store(WallMs(), std::memory_order_relaxed);
    connected_.store(false, std::memory_order_release);
    spdlog::error("{}: connection lost; reconnecting", what);
    was_connected = false;
    if (WaitForStop(backoff_ms)) return;
  }
}

}  // namespace coapgate::registry
