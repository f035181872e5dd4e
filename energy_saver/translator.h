// Translator: runs a compiled Energy Saver Program (template_program.h) over one device
// payload and writes the compact JSON object into a caller buffer (reference
// 1nce-coap-endpoint.md §5.3), or reports the first failing extraction (§5.5).
//
// Thread contract: a Translator holds per-translation scratch, so it belongs to one thread
// (one per shard); the Program it runs may be shared. Construction allocates the scratch
// (sized by the Program); Translate never allocates and never throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
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

  std::shared_ptr<const Program> program_;
  std::vector<NodeState> nodes_;
  uint32_t current_epoch_ = 0;
};

}  // namespace coapgate::energysaver
