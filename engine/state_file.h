// StateFile: the restart state (restart_state.h) at rest, encrypted and authenticated with
// AES-256-GCM (wolfCrypt) under a key of the operator's (restart.key_file: 64 hex digits, e.g.
// a systemd credential). The session keys inside never touch the disk in the clear.
//
// File: "CGSF" | version u8 (1) | reserved u8[3] (0) | created Unix ms u64 (LE) | nonce[12] |
//       ciphertext | tag[16]
// The first 28 bytes are the GCM additional data, so the creation time is authenticated too;
// the nonce is random per file (one key seals a file per restart: far from GCM's limits).
//
// Thread contract: pure functions (Seal, Open) and blocking file I/O (Save); control plane,
// any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/result.h"
#include "engine/restart_state.h"

namespace coapgate::engine {

using StateKey = std::array<std::byte, 32>;

// 64 hex digits (what `openssl rand -hex 32` prints), surrounding whitespace ignored; the
// error says what is wrong without echoing the text.
[[nodiscard]] Result<StateKey, std::string> ParseStateKey(std::string_view text);

// The sealed file bytes for `plaintext`, created at `created_unix_ms`; empty if wolfCrypt or
// getrandom failed.
[[nodiscard]] std::string SealState(const StateKey& key, std::string_view plaintext,
                                    uint64_t created_unix_ms);

struct OpenedState {
  std::string plaintext;
  uint64_t created_unix_ms = 0;
  uint64_t age_ms = 0;
};

// Checks and decrypts a sealed file: kBadMagic, kUnknownVersion, kTruncated,
// kBadKeyOrCorrupt (tag mismatch: another key or altered bytes), kTooOld (older than
// max_age_s at now_unix_ms, or dated more than max_age_s in the future: a clock that jumped
// says nothing trustworthy about its age).
[[nodiscard]] Result<OpenedState, StateRefusal> OpenState(const StateKey& key,
                                                         std::span<const std::byte> file,
                                                         uint64_t now_unix_ms,
                                                         uint32_t max_age_s);

// Seals and writes atomically (0600, fsynced, renamed into place).
[[nodiscard]] Result<void, Error> SaveStateFile(const std::string& path, const StateKey& key,
                                                std::string_view plaintext,
                                                uint64_t created_unix_ms);

}  // namespace coapgate::engine
