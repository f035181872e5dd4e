// The Energy Saver template compiler: the JSON text of a 1NCE "BCL" Conversion object
// (reference 1nce-coap-endpoint.md §5.2, semantics §5.3) becomes an immutable, compact
// Program that translator.h runs over device payloads without allocating.
//
// Thread contract: CompileTemplate is a pure function (any thread; it allocates, so it
// belongs to the control plane). A Program is immutable once compiled: share it between
// threads through std::shared_ptr<const Program>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/json_escape.h"
#include "common/result.h"

namespace coapgate::energysaver {

// Limits. Each one is checked at compile time and its error names the offending node.
inline constexpr size_t kMaxTemplateSize = 64 * 1024;  ///< the template API's body limit (§5.1)
// Applies to switch nesting and to the number of segments of an asset path (the depth of
// the output object): bounds the recursion of the compiler and of the JSON emitter.
inline constexpr size_t kMaxNestingDepth = 32;
inline constexpr size_t kMaxStatements = 4096;      ///< "asset"/"switch"/comment statements
inline constexpr size_t kMaxAssetPathLength = 255;  ///< chars of the dotted path, as written
// Largest byte, -endbyte and bytelength: far above any datagram or reassembled body, and
// small enough that no range arithmetic can overflow int64.
inline constexpr int64_t kMaxByteOffset = 1 << 20;

enum class ValueType : uint8_t { kInt, kUint, kFloat, kBoolean, kString, kHex };
enum class ByteOrder : uint8_t { kBig, kLittle };

// A Mapping marked "custom_type": "location_lat"/"location_long" (§5.3): the device
// location. Always a float with bytelength 8; the translated JSON carries the value like any
// other field, and the translator also reports it (Translator::location) for the LOCATION
// event.
enum class LocationAxis : uint8_t { kLatitude, kLongitude };
struct LocationField {
  std::string_view asset;  ///< dotted path as written; lives as long as the Program
  LocationAxis axis;
};

// The compiled form, shared by the compiler and the translator only. Indices are uint32_t
// into the Program's tables; kNone marks "absent".
namespace internal {

inline constexpr uint32_t kNone = UINT32_MAX;

struct TextRef {  // a slice of Program::text_
  uint32_t offset = 0;
  uint32_t size = 0;
};

// A validated PayloadSelector. Range for N payload bytes (§5.3): byte only [byte,
// byte+length); endbyte only [N+endbyte, N+endbyte+length); both [byte, N+endbyte).
struct Selector {
  ValueType type = ValueType::kInt;
  ByteOrder order = ByteOrder::kBig;
  bool has_byte = false;
  bool has_endbyte = false;
  uint32_t length = 1;  ///< bytelength; unused when has_byte && has_endbyte
  int64_t byte = 0;
  int64_t endbyte = 0;
};

// Writes one value at one asset node. `selector` is kNone for a constant, whose JSON text
// (quotes included) is `constant`.
struct Mapping {
  uint32_t node = 0;
  uint32_t selector = kNone;
  TextRef constant;
  TextRef asset;  ///< the dotted path as written, for error messages
  // A custom_type field (then a float64 selector): the translator reports its value as the
  // device location too.
  bool location = false;
  LocationAxis axis = LocationAxis::kLatitude;
};

// A case label, already checked against its switch's type. Numbers keep both an exact
// integer form (when integral and |v| < 2^64) and the double / float32 readings.
struct CaseValue {
  enum class Kind : uint8_t { kNumber, kBoolean, kBytes } kind = Kind::kNumber;
  bool is_integer = false;
  bool negative = false;  ///< only with magnitude != 0
  bool boolean = false;
  bool has_replacement = false;  ///< kBytes of a string case containing U+FFFD
  uint64_t magnitude = 0;
  double real = 0;
  float real32 = 0;
  TextRef bytes;  ///< string case: its UTF-8; hex case: the decoded bytes
};

struct Case {
  CaseValue value;
  uint32_t target = 0;  ///< first op of its "do"
};

struct Switch {
  uint32_t selector = 0;
  uint32_t first_case = 0;
  uint32_t case_count = 0;
  uint32_t default_target = kNone;
  uint32_t end = 0;  ///< the op after the whole switch
  TextRef label;     ///< JSON path of the switch selector, e.g. "sense[1].switch"
};

// The program is a flat op list: kWrite runs a Mapping, kSwitch jumps to the matching
// case body (or default, or end), each body ends with a kJump to its switch's end.
struct Op {
  enum class Code : uint8_t { kWrite, kSwitch, kJump } code = Code::kWrite;
  uint32_t arg = 0;  ///< mapping index, switch index or jump target
};

// One object key of the output. Node 0 is the root object; every other node is one prefix
// of some asset path. `key` is the JSON text `"escaped":`.
struct Node {
  uint32_t parent = kNone;
  TextRef key;
};

// The escaper every coapgate JSON writer shares (common/json_escape.h).
using ::coapgate::JsonEscape;
using ::coapgate::JsonEscapedLength;
using ::coapgate::NextUtf8;
using ::coapgate::Utf8Step;

}  // namespace internal

class Program {
 public:
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  // Every mapping with a custom_type, in template order.
  [[nodiscard]] std::span<const LocationField> location_fields() const noexcept {
    return location_fields_;
  }
  // An upper bound of the translated JSON's size for a payload of `payload_size` bytes:
  // a buffer this large never yields kOutputTooSmall.
  [[nodiscard]] size_t MaxOutputSize(size_t payload_size) const noexcept;
  // Asset nodes including the root: the size of a Translator's scratch.
  [[nodiscard]] size_t node_count() const noexcept { return nodes_.size(); }

 private:
  friend class ProgramBuilder;
  friend class Translator;

  Program() = default;

  [[nodiscard]] std::string_view Text(internal::TextRef ref) const noexcept {
    return std::string_view(text_).substr(ref.offset, ref.size);
  }

  // Invariant: text_ never changes after compilation, and a Program is never moved (it is
  // only reachable through shared_ptr), so views into it live as long as the Program.
  std::string text_;
  std::vector<internal::Op> ops_;
  std::vector<internal::Mapping> mappings_;
  std::vector<internal::Selector> selectors_;
  std::vector<internal::Switch> switches_;
  std::vector<internal::Case> cases_;
  std::vector<internal::Node> nodes_;
  std::vector<LocationField> location_fields_;
  // MaxOutputSize(n) = max_output_fixed_ + max_output_per_byte_ * n.
  size_t max_output_fixed_ = 2;
  size_t max_output_per_byte_ = 0;
};

// Compiles a template. Strict: unknown keys, wrong JSON types, impossible lengths and case
// labels that can never match their switch are errors; only "comment", "name" and
// "version" (any node, any value) and "signed" (payload selectors) are ignored. The error
// is one line: the JSON path of the bad node ("<root>" for the document) and why, e.g.
//   sense[1].on[0].do[2].value.type: unknown type "integer" (expected int, uint, float,
//   boolean, string, hex)
// Never throws.
[[nodiscard]] Result<std::shared_ptr<const Program>, std::string> CompileTemplate(
    std::string_view template_json) noexcept;

}  // namespace coapgate::energysaver
