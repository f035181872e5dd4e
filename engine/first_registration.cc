#include "engine/first_registration.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <optional>

#include <spdlog/spdlog.h>

#include "common/check.h"
#include "common/clock.h"
#include "registry/postgres_connection.h"
#include "registry/postgres_device_table.h"
#include "registry/postgres_first_seen.h"

namespace coapgate::engine {
namespace {

constexpr uint32_t kFirstBackoffMs = 1000;
constexpr uint32_t kMaxBackoffMs = 30000;
// How long the thread sleeps with nothing to do: how often a stop request is looked at.
constexpr int kIdleWaitMs = 200;

}  // namespace

FirstRegistration::FirstRegistration(Options options)
    : options_(std::move(options)),
      // No payload: the events carry only the device, from the message's fixed fields.
      handoff_(options_.batch, 1, static_cast<uint32_t>(options_.publisher_wake_fds.size())) {
  CHECK(!options_.publisher_wake_fds.empty(), "FirstRegistration needs a publisher lane");
  for (uint32_t i = 0; i < options_.shards; ++i) {
    queues_.push_back(std::make_unique<Queue>(options_.queue_capacity));
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  CHECK(wake_fd_ >= 0, "eventfd for the first registrations failed");
  batch_.reserve(options_.batch);
}

FirstRegistration::~FirstRegistration() {
  Stop();
  close(wake_fd_);
}

void FirstRegistration::Start() {
  thread_ = std::thread([this] { Run(); });
}

void FirstRegistration::Stop() {
  stop_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

FirstRegistration::Counts FirstRegistration::counts() const noexcept {
  return {emitted_.load(std::memory_order_relaxed),
          already_registered_.load(std::memory_order_relaxed),
          failed_.load(std::memory_order_relaxed), dropped_.load(std::memory_order_relaxed)};
}

void FirstRegistration::Enqueue(uint32_t shard, const registry::DeviceRegistry& snapshot,
                                const registry::DeviceView& device, const net::IpAddress& ip,
                                uint64_t wall_ms) noexcept {
  if (!snapshot.BeginRegistration(device.index)) return;  // another shard's, already queued
  Item item;
  item.received_ms = wall_ms;
  item.ip = ip.bytes();
  item.iccid_length = static_cast<uint8_t>(std::min(device.iccid.size(), item.iccid.size()));
  std::copy_n(device.iccid.data(), item.iccid_length, item.iccid.data());
  item.imsi_length = static_cast<uint8_t>(std::min(device.imsi.size(), item.imsi.size()));
  std::copy_n(device.imsi.data(), item.imsi_length, item.imsi.data());
  if (!queues_[shard]->push(item)) {
    snapshot.AbandonRegistration(device.index);
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void FirstRegistration::Run() {
  pthread_setname_np(pthread_self(), "first-seen");
  (void)Connection();  // at once, so that the first device's claim does not wait for it
  while (!stop_.load(std::memory_order_acquire)) {
    pollfd fd{wake_fd_, POLLIN, 0};
    if (poll(&fd, 1, kIdleWaitMs) > 0) {
      uint64_t ignored;
      [[maybe_unused]] const ssize_t n = read(wake_fd_, &ignored, sizeof(ignored));
    }
    // Until the queues are empty: one wake-up may stand for more than a batch.
    while (!stop_.load(std::memory_order_acquire)) {
      batch_.clear();
      for (auto& queue : queues_) {
        Item item;
        while (batch_.size() < options_.batch && queue->pop(item)) batch_.push_back(item);
      }
      if (batch_.empty()) break;
      Process();
    }
  }
  // Stopping: what is still queued stays kClaiming on a snapshot nobody serves any more.
}

registry::PostgresConnection* FirstRegistration::Connection() {
  if (db_ != nullptr && db_->ok()) return db_.get();
  db_.reset();
  const uint64_t now = MonotonicMs();
  if (now < retry_at_ms_) return nullptr;
  auto db = registry::PostgresConnection::Connect(options_.dsn);
  Result<int, Error> migrated = db ? registry::PostgresDeviceTable::Migrate(*db)
                                   : Result<int, Error>(tl::unexpected<Error>(db.error()));
  if (!migrated) {
    backoff_ms_ = backoff_ms_ == 0 ? kFirstBackoffMs : std::min(backoff_ms_ * 2, kMaxBackoffMs);
    retry_at_ms_ = now + backoff_ms_;
    spdlog::warn("first registrations: {}; devices interacting now are asked about again "
                 "on a later interaction (next attempt in {} s at the earliest)",
                 migrated.error().message, backoff_ms_ / 1000);
    return nullptr;
  }
  if (backoff_ms_ != 0) spdlog::info("first registrations: database reachable again");
  backoff_ms_ = 0;
  db_ = std::make_unique<registry::PostgresConnection>(std::move(*db));
  return db_.get();
}

void FirstRegistration::Mark(const registry::DeviceRegistry& snapshot, std::string_view iccid,
                             bool registered) noexcept {
  const std::optional<registry::DeviceView> device = snapshot.FindByIccid(iccid);
  if (!device) return;  // removed meanwhile
  if (registered) {
    snapshot.MarkRegistered(device->index);
  } else {
    snapshot.AbandonRegistration(device->index);
  }
}

void FirstRegistration::Process() {
  // Two shards may each have queued one device (a reload between their interactions gave
  // each a kUnknown byte): claim it once.
  std::sort(batch_.begin(), batch_.end(),
            [](const Item& a, const Item& b) { return a.Iccid() < b.Iccid(); });
  batch_.erase(std::unique(batch_.begin(), batch_.end(),
                           [](const Item& a, const Item& b) { return a.Iccid() == b.Iccid(); }),
               batch_.end());
  // The snapshot current now: a reload since the shards' Note made theirs old, and the new
  // one's bytes are what the shards read from now on.
  std::shared_ptr<const registry::DeviceRegistry> snapshot = options_.registry->current();
  const auto give_up = [&] {
    for (const Item& item : batch_) Mark(*snapshot, item.Iccid(), false);
    failed_.fetch_add(batch_.size(), std::memory_order_relaxed);
  };
  registry::PostgresConnection* db = Connection();
  if (db == nullptr) {
    give_up();
    return;
  }
  std::vector<std::string_view> iccids;
  iccids.reserve(batch_.size());
  for (const Item& item : batch_) iccids.push_back(item.Iccid());
  auto claimed = registry::PostgresFirstSeen::Claim(*db, iccids);
  if (!claimed) {
    spdlog::warn("first registrations: {}", claimed.error().message);
    give_up();
    return;
  }
  // The batch is sorted, and so are the claimed ICCIDs once sorted: one merge.
  std::sort(claimed->begin(), claimed->end());
  std::vector<const Item*> won;
  size_t c = 0;
  for (const Item& item : batch_) {
    while (c < claimed->size() && (*claimed)[c] < item.Iccid()) ++c;
    if (c < claimed->size() && (*claimed)[c] == item.Iccid()) {
      won.push_back(&item);
    } else {
      Mark(*snapshot, item.Iccid(), true);
      already_registered_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (won.empty()) {
    if (auto settled = registry::PostgresFirstSeen::Settle(*db, {}); !settled) {
      spdlog::warn("first registrations: {}", settled.error().message);
    }
    return;
  }
  std::vector<bool> delivered;
  if (!Publish(won, &delivered)) {  // stopping: nothing is committed
    registry::PostgresFirstSeen::Abort(*db);
    return;
  }
  std::vector<std::string_view> failed;
  for (size_t i = 0; i < won.size(); ++i) {
    if (!delivered[i]) failed.push_back(won[i]->Iccid());
  }
  if (auto settled = registry::PostgresFirstSeen::Settle(*db, failed); !settled) {
    // The delivered events stay delivered; their devices are announced again by whichever
    // node claims them next, under the same id (the header's one exception).
    spdlog::warn("first registrations: {}", settled.error().message);
  }
  snapshot = options_.registry->current();  // the wait for the sinks may have seen a reload
  for (size_t i = 0; i < won.size(); ++i) {
    Mark(*snapshot, won[i]->Iccid(), delivered[i]);
    (delivered[i] ? emitted_ : failed_).fetch_add(1, std::memory_order_relaxed);
  }
}

bool FirstRegistration::Publish(const std::vector<const Item*>& claimed, std::vector<bool>* ok) {
  ok->assign(claimed.size(), false);
  const uint32_t lanes = handoff_.lanes();
  uint64_t lanes_pushed = 0;
  std::vector<uint32_t> slots(claimed.size());
  size_t outstanding = 0;
  for (size_t i = 0; i < claimed.size(); ++i) {
    const Item& item = *claimed[i];
    // The batch never exceeds the slots, and every slot came back before this batch.
    CHECK(handoff_.Acquire(&slots[i]), "first registration batch larger than its Handoff");
    sinks::InflightMessage& m = handoff_.message(slots[i]);
    m.lifecycle = true;  // the slot's payload pointer stays; nothing else of the message counts
    m.message_id = 0;
    m.token_length = 0;
    m.topic_length = 0;
    m.payload_length = 0;
    m.received_ms = item.received_ms;
    m.ip = item.ip;
    m.iccid_length = item.iccid_length;
    std::copy_n(item.iccid.data(), item.iccid_length, m.iccid.data());
    m.imsi_length = item.imsi_length;
    std::copy_n(item.imsi.data(), item.imsi_length, m.imsi.data());
    // By ICCID, like a shard's lanes: spreads a fleet's first day over the workers.
    const uint32_t lane =
        static_cast<uint32_t>(std::hash<std::string_view>{}(item.Iccid()) % lanes);
    // Each lane's queue holds every slot: a push cannot fail.
    CHECK(handoff_.PushOutbound(lane, slots[i]), "first registration lane full");
    lanes_pushed |= uint64_t{1} << lane;
    ++outstanding;
  }
  for (uint32_t lane = 0; lane < lanes; ++lane) {
    if ((lanes_pushed >> lane & 1) == 0) continue;
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n =
        write(options_.publisher_wake_fds[lane], &one, sizeof(one));
  }
  // Every slot completes: each sink settles what it took, and the workers' Stop abandons the
  // rest. Only this thread's own stop cuts the wait short.
  while (outstanding > 0) {
    uint32_t slot;
    sinks::Outcome outcome;
    while (handoff_.PopCompletion(&slot, &outcome)) {
      const size_t i = static_cast<size_t>(std::find(slots.begin(), slots.end(), slot) - slots.begin());
      CHECK(i < slots.size(), "a first registration completion for a slot not in flight");
      (*ok)[i] = outcome == sinks::Outcome::kAccepted;
      handoff_.Release(slot);
      --outstanding;
    }
    if (outstanding == 0) break;
    if (stop_.load(std::memory_order_acquire)) return false;
    pollfd fd{handoff_.wake_fd(), POLLIN, 0};
    if (poll(&fd, 1, kIdleWaitMs) > 0) handoff_.DrainWake();
  }
  return true;
}

}  // namespace coapgate::engine
