// FirstRegistration: the LIFECYCLE DEVICE_FIRST_TIME_REGISTERED event of each device, once per
// device over all nodes sharing one PostgreSQL database (docs/downstream.md#lifecycle,
// docs/cluster.md). With the CSV backend there is none (the server makes no FirstRegistration).
//
//   shard: an interaction (a request, a GET /bootstrap) from an active device whose snapshot
//   byte says kUnknown -> kClaiming, and a copy of who and when onto the shard's own bounded
//   queue (no allocation, no lock, no system call but an eventfd write for a device's first
//   interaction on this node). Queue full: the byte goes back to kUnknown and the drop is
//   counted, so the device's next interaction tries again: delayed, not lost.
//   database thread: takes a batch from every queue, claims it in one transaction
//   (registry/postgres_first_seen.h), publishes the events it won through its own Handoff to
//   the publisher workers, like a shard's messages (same sinks, same envelope rules), waits
//   for every sink, gives back the claims whose event failed, commits, and sets each device's
//   byte on the snapshot then current: kRegistered (emitted, or already registered by a node
//   or an earlier run), or kUnknown (the database or a sink failed: the next interaction
//   tries again).
//
// So the database sees each device about once per node (the snapshot loaded from it starts
// with kRegistered for every device already in coapgate_first_seen), not once per request.
//
// Thread contract: Note from shard `shard` only (one producer per queue); Start, Stop and the
// counters' readers on any control thread; everything else on the database thread. The
// Handoff is read by the publisher workers from PublisherPool::Start until their Stop, so
// this object outlives the pool's Stop.
#pragma once

#include <boost/lockfree/spsc_queue.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/limits.h"
#include "net/ip_address.h"
#include "registry/device_registry.h"
#include "registry/registry_holder.h"
#include "sinks/handoff.h"

namespace coapgate::registry {
class PostgresConnection;
}  // namespace coapgate::registry

namespace coapgate::engine {

class FirstRegistration {
 public:
  struct Options {
    std::string dsn;
    uint32_t shards = 1;
    uint32_t queue_capacity = 1024;  ///< per shard
    uint32_t batch = 256;            ///< devices per claim: the Handoff's slots
    const registry::RegistryHolder* registry = nullptr;
    std::vector<int> publisher_wake_fds;  ///< one per lane (PublisherPool::wake_fds)
  };

  // Allocates the queues and the Handoff; starts nothing. Aborts only if an eventfd cannot be
  // created (startup).
  explicit FirstRegistration(Options options);
  ~FirstRegistration();  // Stop
  FirstRegistration(const FirstRegistration&) = delete;
  FirstRegistration& operator=(const FirstRegistration&) = delete;

  // For PublisherPool::Start, beside the shards' Handoffs.
  [[nodiscard]] sinks::Handoff& handoff() noexcept { return handoff_; }
  void Start();
  // Stops the thread: what is queued or being claimed is abandoned (rolled back). The
  // publisher workers may still complete into the Handoff afterwards.
  void Stop();

  // Shard side, per interaction of an active `device` of `snapshot` (the shard's current one):
  // one relaxed byte load when the device is known, else the claim above.
  void Note(uint32_t shard, const registry::DeviceRegistry& snapshot,
            const registry::DeviceView& device, const net::IpAddress& ip,
            uint64_t wall_ms) noexcept {
    if (snapshot.LoadRegistration(device.index) !=
        registry::DeviceRegistry::Registration::kUnknown) {
      return;
    }
    Enqueue(shard, snapshot, device, ip, wall_ms);
  }

  // coapgate_first_registrations_total{outcome}; any thread.
  struct Counts {
    uint64_t emitted = 0;             ///< this node won the claim and every sink took the event
    uint64_t already_registered = 0;  ///< another node (or an earlier run) registered it first
    uint64_t failed = 0;              ///< database or sink failure: asked again next time
    uint64_t dropped = 0;             ///< a shard's queue was full: asked again next time
  };
  [[nodiscard]] Counts counts() const noexcept;

 private:
  struct Item {
    uint64_t received_ms;
    std::array<uint8_t, 16> ip;
    uint8_t iccid_length;
    uint8_t imsi_length;
    std::array<char, kMaxIccidLength> iccid;
    std::array<char, kMaxImsiLength> imsi;
    [[nodiscard]] std::string_view Iccid() const noexcept { return {iccid.data(), iccid_length}; }
  };
  using Queue = boost::lockfree::spsc_queue<Item>;

  void Enqueue(uint32_t shard, const registry::DeviceRegistry& snapshot,
               const registry::DeviceView& device, const net::IpAddress& ip,
               uint64_t wall_ms) noexcept;
  void Run();
  // One batch: claim, publish, wait, settle, mark.
  void Process();
  // Publishes the claimed items' events and waits for all of them; returns per item whether
  // every sink took it. False overall when stopping cut the wait short.
  [[nodiscard]] bool Publish(const std::vector<const Item*>& claimed, std::vector<bool>* ok);
  // The connection, (re)connected and migrated when needed, or null while the database is
  // away (retried after a backoff of 1 s doubling to 30 s).
  registry::PostgresConnection* Connection();
  // Sets a device's byte on `snapshot` (the current one): kRegistered or kUnknown.
  static void Mark(const registry::DeviceRegistry& snapshot, std::string_view iccid,
                   bool registered) noexcept;

  Options options_;
  std::vector<std::unique_ptr<Queue>> queues_;  // one per shard
  int wake_fd_ = -1;  // shards write after a push
  sinks::Handoff handoff_;

  std::vector<Item> batch_;  // database thread only
  std::unique_ptr<registry::PostgresConnection> db_;
  uint64_t retry_at_ms_ = 0;
  uint32_t backoff_ms_ = 0;

  std::atomic<uint64_t> emitted_{0}, already_registered_{0}, failed_{0}, dropped_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace coapgate::engine
