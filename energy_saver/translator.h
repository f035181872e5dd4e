// Translator: runs a compiled Energy Saver Program (template_program.h) over one device
// payload and writes the compact JSON object into a caller buffer (reference
// 1nce-coap-endpoint.md §5.3), or reports the first failing extraction (§5.5).
//
// Thread contract: a Translator holds per-translation scratch, so it belongs to one thread
// (one per shard); the Program it runs may be shared. Construction allocates the scratch
// (sized by the Program); Translate never allocates and never throws.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/json_writer.h"
#include "energy_saver/template_program.h"
#include "common/result.h"

namespace coapgate::energysaver {

enum class TranslateErrc : uint8_t {
  kCannotExtract,   ///< a selector's byte range is outside the payload (§5.5 UserPayloadError)
  kOutputTooSmall,  ///< `out` cannot hold the JSON; see Program::MaxOutputSize
};

struct TranslateError {
  TranslateErrc code = TranslateErrc::kCannotExtract;
  // kCannotExtract: the mapping's asset path as written, or the JSON path of a switch
  // selector (e.g. "sense[1].switch"), which has no asset. Views the Program: valid while
  // the Program lives.
  std::string_view asset;
  int64_t start = 0;  ///< the resolved range [start:end), as 1NCE prints it
  int64_t end = 0;
  size_t payload_size = 0;
};

// Writes the error's text and returns its length, or 0 if `out` is too small:
//   kCannotExtract:  Asset path:<asset>, Error: can't extract [<start>:<end>] from <N> bytes
//   kOutputTooSmall: Error: translated JSON does not fit the output buffer
size_t FormatError(const TranslateError& error, std::span<char> out) noexcept;

class Translator {
 public:
  // REQUIRES: program != nullptr.
  explicit Translator(std::shared_ptr<const Program> program);

  // Translates `payload` into one compact JSON object (no spaces; keys of each object in
  // first-write order; dotted asset paths build nested objects) written to the front of
  // `out`; returns its length. Nothing produced is "{}". No terminating NUL.
  //
  // Writes: the last write to a path wins and the key keeps its first position. A write
  // also replaces a different kind of value at that key: "a" as a scalar, then "a.b", turns
  // "a" into an object holding "b"; "a.b", then "a", drops the object for the scalar. Keys
  // keep insertion order even when they look like integers (JavaScript would sort those).
  //
  // On error nothing usable is in `out`, but nothing past out.size() was touched.
  [[nodiscard]] Result<size_t, TranslateError> Translate(std::span<const std::byte> payload,
                                                         std::span<char> out) noexcept;

  [[nodiscard]] const Program& program() const noexcept { return *program_; }

  // The device location the last successful Translate carried, as the number text the
  // translated JSON prints for it (views into this Translator, valid until the next
  // Translate); nullopt unless it carried both axes. An axis is carried when a location_lat
  // (location_long) field ran in that translation, the value it wrote is still the one at
  // its path in the output (no later write replaced it), and that value is a finite number
  // (a NaN or infinity prints as null: no location). When several fields of one axis ran,
  // the last one counts.
  struct Location {
    std::string_view longitude;
    std::string_view latitude;
  };
  [[nodiscard]] std::optional<Location> location() const noexcept;

 private:
  enum class Kind : uint8_t { kAbsent, kScalar, kObject };

  // Per-node state of the current translation. A node is live only when epoch ==
  // current_epoch_, so starting a translation is one increment, not a clear.
  // Invariants (live nodes): a kObject's children form the list first_child → next_sibling
  // in first-write order; a kScalar's value is mapping_ over payload bytes [start, end).
  struct NodeState {
    uint32_t epoch = 0;
    Kind kind = Kind::kAbsent;
    uint32_t first_child = internal::kNone;
    uint32_t last_child = internal::kNone;
    uint32_t next_sibling = internal::kNone;
    uint32_t mapping = 0;
    size_t start = 0;
    size_t end = 0;
  };

  NodeState& Attach(uint32_t node) noexcept;
  NodeState& MakeObject(uint32_t node) noexcept;
  void Drop(NodeState& object) noexcept;
  void WriteScalar(uint32_t node, uint32_t mapping, size_t start, size_t end) noexcept;
  // Emits the live children starting at `first_child` as one JSON object. Recursion depth
  // is bounded by kMaxNestingDepth (asset path segments).
  void EmitObject(uint32_t first_child, std::span<const std::byte> payload,
                  JsonWriter& w) const noexcept;

  // Fills location_text_ from the last location writes of this translation.
  void CaptureLocation(std::span<const std::byte> payload) noexcept;

  std::shared_ptr<const Program> program_;
  std::vector<NodeState> nodes_;
  uint32_t current_epoch_ = 0;
  // Per LocationAxis: the mapping of the last location write of the current translation
  // (kNone: none ran), and its value's number text once Translate succeeded (empty: none).
  static constexpr size_t kNumberTextRoom = 32;
  std::array<uint32_t, 2> location_mapping_{internal::kNone, internal::kNone};
  std::array<std::array<char, kNumberTextRoom>, 2> location_text_{};
  std::array<size_t, 2> location_size_{};
};

}  // namespace coapgate::energysaver
