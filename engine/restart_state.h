// RestartState: the versioned envelope that carries a server's DTLS sessions and answered
// exchanges from one process to the next (docs/operations.md, "Planned restarts"). Written to
// an encrypted file on SIGTERM and read at start (engine/state_file.h); the take-over over a
// Unix socket (issue #16) is meant to stream the same bytes.
//
// Format (every integer little-endian):
//
//   header   "CGRS" (4) | version u16 | reserved u16 (0)
//   records  type u8 | length u32 | body[length]      ... any number, in any order, then
//   end      type 0xff | length 8 | sessions u32 | exchanges u32
//
// Every record says its own length, so a stream can be read record by record (8 bytes, then
// 5 + length per record); the end record's counts prove nothing was cut off between records.
// Record bodies (types 1-3) are described in restart_state.cc. A body longer than this
// version defines is malformed, not "extended": any change of layout is a new version, and a
// reader refuses versions it does not know rather than guess.
//
// Thread contract: pure functions and a plain value type; any thread. Reading never
// allocates and never trusts a length: a truncated, garbled or hostile input is refused with
// a reason (tests/fuzz/restart_state_fuzz.cc), never a crash. The bytes hold session keys:
// never write them anywhere unencrypted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"
#include "dtls/dtls_endpoint.h"
#include "engine/exchange_memory.h"

namespace coapgate::engine {

inline constexpr uint16_t kRestartStateVersion = 1;

// Why a saved state was not restored. The first five come from ReadRestartState, the rest
// from the file around it (state_file.h); each is counted under its name in /metrics.
enum class StateRefusal : uint8_t {
  kBadMagic,          ///< not a restart state at all
  kUnknownVersion,    ///< written by another version of the format
  kTruncated,         ///< ends before its end record
  kMalformed,         ///< a record too short, too long, of an unknown type, or bad values
  kListenersChanged,  ///< written for other listen addresses: sessions would be misrouted
  kTooOld,            ///< older than restart.max_age_s
  kBadKeyOrCorrupt,   ///< authentication failed: another key, or the file was altered
  kUnreadable,        ///< the file could not be read
};
inline constexpr size_t kStateRefusalCount = 8;
// "bad_magic", "unknown_version", "truncated", "malformed", "listeners_changed", "too_old",
// "bad_key_or_corrupt", "unreadable".
[[nodiscard]] std::string_view ToString(StateRefusal why) noexcept;

// Builds a state. Each Add appends one record; Take hands out what was appended since the
// last Take (for a stream), Finish appends the end record and hands out the rest.
class RestartStateWriter {
 public:
  // `listeners` identifies the listen addresses the sessions' socket numbers refer to (the
  // reader refuses a state written for others); at most 65535 bytes.
  explicit RestartStateWriter(std::string_view listeners);

  void AddSession(const dtls::ExportedSession& session);
  void AddExchange(const ExchangeMemory::SavedExchange& exchange);
  [[nodiscard]] std::string Take();
  [[nodiscard]] std::string Finish();

  [[nodiscard]] uint32_t sessions() const noexcept { return sessions_; }
  [[nodiscard]] uint32_t exchanges() const noexcept { return exchanges_; }

 private:
  void BeginRecord(uint8_t type, size_t length);

  std::string out_;
  uint32_t sessions_ = 0;
  uint32_t exchanges_ = 0;
};

struct RestartStateVisitor {
  std::function<void(const dtls::ExportedSession&)> session;  ///< views into the input
  std::function<void(const ExchangeMemory::SavedExchange&)> exchange;
};

struct RestartStateCounts {
  uint32_t sessions = 0;
  uint32_t exchanges = 0;
};

// Validates all of `bytes` first; only if every record is sound does it visit them, in order
// (so a refused state restores nothing). `listeners` must equal the writer's.
[[nodiscard]] Result<RestartStateCounts, StateRefusal> ReadRestartState(
    std::span<const std::byte> bytes, std::string_view listeners,
    const RestartStateVisitor& visitor);

}  // namespace coapgate::engine
