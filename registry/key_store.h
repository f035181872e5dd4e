// KeyStore: the bootstrap's durable state (docs/bootstrap-and-dtls.md) — per ICCID the key the
// last bootstrap generated and the time of that call — and the in-memory view of generated
// keys that DTLS handshakes read. PskStore (an SQLite file, one node) implements it; a backend
// shared by several nodes implements the same contract, deciding the regeneration window
// with the database's clock.
//
// Thread contract: Bootstrap is called by the bootstrap worker only and may block (each call
// waits until its change is durable). GeneratedKey and size() may be called from any thread
// at any time, also during Bootstrap, and never block for long: the shards call GeneratedKey
// during a handshake.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

namespace coapgate::registry {

class KeyStore {
 public:
  virtual ~KeyStore() = default;

  // One bootstrap call of `iccid` at `now_s` (Unix seconds); returns the key to hand out:
  // `user_psk` (the registry's user-set key) when non-empty, never replaced; else the current
  // generated key, or a new one when there is none or the previous call is at least the
  // regeneration window old. The call time is recorded in every case. Returns only after the
  // new state is durable and GeneratedKey answers with it; on failure nothing changed and the
  // text says why. REQUIRES: iccid is non-empty.
  [[nodiscard]] virtual Result<std::string, std::string> Bootstrap(std::string_view iccid,
                                                                   std::string_view user_psk,
                                                                   uint64_t now_s) = 0;

  // The generated key the last bootstrap of `iccid` handed out, copied into `out`; its length,
  // or 0 if there is none or it does not fit. No allocation, no I/O.
  [[nodiscard]] virtual size_t GeneratedKey(std::string_view iccid,
                                            std::span<std::byte> out) const noexcept = 0;

  // A handshake of `iccid`, an active device of the registry snapshot with no user-set key,
  // found no generated key here (GeneratedKey returned 0). A store shared by several nodes
  // fetches the row in the background, so that the device's next attempt finds a key another
  // node has just made; the default does nothing (a local store holds every key it has).
  // Called on a shard: noexcept, never blocks, no allocation.
  virtual void KeyMissed(std::string_view /*iccid*/) const noexcept {}

  // What the store holds for `iccid`, for the admin listener (GET /devices): whether a
  // generated key is held and the time of the last bootstrap call; nullopt: no state. Memory
  // only, never waits for the database; the key itself is not part of the answer.
  struct BootstrapState {
    bool generated_key;
    uint64_t last_call_s;
  };
  [[nodiscard]] virtual std::optional<BootstrapState> StateOf(std::string_view iccid) const = 0;

  // Devices with bootstrap state (generated key or not).
  [[nodiscard]] virtual size_t size() const noexcept = 0;

  // True while the store cannot reach its durable side (a shared database that is away): the
  // last Bootstrap failed for that reason, and the bootstrap answers 5.03 with Max-Age (try
  // again later) rather than 5.00. False for a local file, whose failures are not transient.
  [[nodiscard]] virtual bool unavailable() const noexcept { return false; }

  // Hand-over to a successor process (engine/takeover_channel.h): Release gives up what would
  // keep the successor from opening the same durable state (PskStore's exclusive lock on its
  // file); Reacquire takes it back when the hand-over failed. In between GeneratedKey still
  // answers from memory and Bootstrap fails. Called by the control thread while no bootstrap
  // is in progress. A shared database keeps nobody out: the default does nothing.
  [[nodiscard]] virtual Result<void, std::string> Release() { return {}; }
  [[nodiscard]] virtual Result<void, std::string> Reacquire() { return {}; }

  // What logs and messages call the store: its file, a database name (never a password).
  [[nodiscard]] virtual const std::string& name() const noexcept = 0;
};

}  // namespace coapgate::registry
