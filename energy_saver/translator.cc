#include "energy_saver/translator.h"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

namespace coapgate::energysaver {
namespace {

using internal::kNone;

constexpr char kHexDigits[] = "0123456789abcdef";
constexpr std::string_view kReplacementUtf8 = "\xef\xbf\xbd";  // U+FFFD

}  // namespace

namespace {

// Lowercase hex of `bytes`, without quotes (the `hex` value type).
void WriteHex(JsonWriter& w, std::span<const std::byte> bytes) noexcept {
  const std::span<char> room = w.Reserve(2 * bytes.size());
  if (room.empty()) return;
  size_t i = 0;
  for (std::byte b : bytes) {
    room[i++] = kHexDigits[static_cast<uint8_t>(b) >> 4];
    room[i++] = kHexDigits[static_cast<uint8_t>(b) & 0xf];
  }
}

// ---- Decoding ----------------------------------------------------------------------------

// The payload bytes as an unsigned integer. REQUIRES: bytes.size() <= 8.
uint64_t ReadUnsigned(std::span<const std::byte> bytes, ByteOrder order) noexcept {
  uint64_t v = 0;
  if (order == ByteOrder::kBig) {
    for (std::byte b : bytes) v = v << 8 | static_cast<uint8_t>(b);
  } else {
    for (size_t i = bytes.size(); i-- > 0;) v = v << 8 | static_cast<uint8_t>(bytes[i]);
  }
  return v;
}

// Two's complement of `bytes.size()` bytes, sign-extended.
int64_t ReadSigned(std::span<const std::byte> bytes, ByteOrder order) noexcept {
  uint64_t v = ReadUnsigned(bytes, order);
  const size_t bits = 8 * bytes.size();
  if (bits < 64 && (v >> (bits - 1)) != 0) v |= ~uint64_t{0} << bits;
  return static_cast<int64_t>(v);
}

bool AnyNonZero(std::span<const std::byte> bytes) noexcept {
  return std::any_of(bytes.begin(), bytes.end(), [](std::byte b) { return b != std::byte{0}; });
}

std::string_view AsChars(std::span<const std::byte> bytes) noexcept {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// ---- Number text -------------------------------------------------------------------------

// Writes `v` as JavaScript's Number::toString would, using the shortest digits that
// round-trip at F's precision (so a float32 prints as 50.934544, not as its widened double):
// plain decimal for 1e-7 <= |v| < 1e21, else d.ddde±x. -0 prints as 0 (JSON.stringify(-0)).
// REQUIRES: v is finite; out has room for kMaxNumberText chars.
constexpr size_t kMaxNumberText = 32;
template <class F>
size_t FormatShortest(F v, char* out) noexcept {
  std::array<char, kMaxNumberText> sci;
  const auto r = std::to_chars(sci.data(), sci.data() + sci.size(), v, std::chars_format::scientific);
  const char* p = sci.data();
  const bool negative = *p == '-';
  if (negative) ++p;
  std::array<char, kMaxNumberText> digits;
  int k = 0;
  for (; *p != 'e'; ++p) {
    if (*p != '.') digits[static_cast<size_t>(k++)] = *p;
  }
  int exponent = 0;
  (void)std::from_chars(p + (p[1] == '+' ? 2 : 1), r.ptr, exponent);
  if (k == 1 && digits[0] == '0') {
    out[0] = '0';
    return 1;
  }
  const int n = exponent + 1;  // the decimal point sits after n digits
  size_t o = 0;
  if (negative) out[o++] = '-';
  const auto put_digits = [&](int from, int to) {
    for (int i = from; i < to; ++i) out[o++] = digits[static_cast<size_t>(i)];
  };
  if (k <= n && n <= 21) {
    put_digits(0, k);
    for (int i = k; i < n; ++i) out[o++] = '0';
  } else if (0 < n && n <= 21) {
    put_digits(0, n);
    out[o++] = '.';
    put_digits(n, k);
  } else if (-6 < n && n <= 0) {
    out[o++] = '0';
    out[o++] = '.';
    for (int i = n; i < 0; ++i) out[o++] = '0';
    put_digits(0, k);
  } else {
    put_digits(0, 1);
    if (k > 1) {
      out[o++] = '.';
      put_digits(1, k);
    }
    out[o++] = 'e';
    out[o++] = n - 1 < 0 ? '-' : '+';
    const auto e = std::to_chars(out + o, out + kMaxNumberText, std::abs(n - 1));
    o = static_cast<size_t>(e.ptr - out);
  }
  return o;
}

// ---- Values ------------------------------------------------------------------------------

void WriteValue(const internal::Selector& s, std::span<const std::byte> bytes,
                JsonWriter& w) noexcept {
  std::array<char, kMaxNumberText> text;
  char* const first = text.data();
  switch (s.type) {
    case ValueType::kInt:
      w.SignedDecimal(ReadSigned(bytes, s.order));
      return;
    case ValueType::kUint:
      w.Decimal(ReadUnsigned(bytes, s.order));
      return;
    case ValueType::kFloat: {
      const uint64_t raw = ReadUnsigned(bytes, s.order);
      size_t n = 0;
      if (bytes.size() == 4) {
        const auto f = std::bit_cast<float>(static_cast<uint32_t>(raw));
        if (!std::isfinite(f)) return w.Literal("null");
        n = FormatShortest(f, first);
      } else {
        const auto d = std::bit_cast<double>(raw);
        if (!std::isfinite(d)) return w.Literal("null");
        n = FormatShortest(d, first);
      }
      w.Literal({first, n});
      return;
    }
    case ValueType::kBoolean:
      w.Literal(AnyNonZero(bytes) ? "true" : "false");
      return;
    case ValueType::kString:  // byteorder never reverses text (§5.2 note)
      w.Char('"');
      w.Escaped(AsChars(bytes));
      w.Char('"');
      return;
    case ValueType::kHex:
      w.Char('"');
      WriteHex(w, bytes);
      w.Char('"');
      return;
  }
}

// ---- Switch matching ---------------------------------------------------------------------

// Whether the UTF-8 decoding of `bytes` (ill-formed parts → U+FFFD) equals `text`.
bool DecodedEquals(std::string_view bytes, std::string_view text, bool text_has_replacement) {
  if (bytes == text) return true;
  // Without U+FFFD in `text`, equality needs well-formed bytes, hence equal bytes.
  if (!text_has_replacement) return false;
  size_t i = 0;
  size_t j = 0;
  while (i < bytes.size()) {
    const internal::Utf8Step step = internal::NextUtf8(bytes.substr(i));
    const std::string_view unit = step.valid ? bytes.substr(i, step.length) : kReplacementUtf8;
    if (text.substr(j, unit.size()) != unit) return false;
    i += step.length;
    j += unit.size();
  }
  return j == text.size();
}

// Integer value as sign and magnitude, the form integer case labels are kept in.
bool IntegerEquals(bool negative, uint64_t magnitude, const internal::CaseValue& c) noexcept {
  return c.is_integer && c.negative == negative && c.magnitude == magnitude;
}

// JSON-typed equality of the switch value (bytes read with `s`) with a case label. The
// compiler guaranteed the label's JSON type fits the selector's type.
bool Matches(const internal::Selector& s, std::span<const std::byte> bytes,
             const internal::CaseValue& c, std::string_view case_bytes) noexcept {
  switch (s.type) {
    case ValueType::kInt: {
      const int64_t v = ReadSigned(bytes, s.order);
      const uint64_t magnitude = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
      return IntegerEquals(v < 0, magnitude, c);
    }
    case ValueType::kUint:
      return IntegerEquals(false, ReadUnsigned(bytes, s.order), c);
    case ValueType::kFloat: {
      // The label is read at the value's own precision, so a label written as the value
      // prints (50.934544) matches that float32. NaN matches nothing.
      const uint64_t raw = ReadUnsigned(bytes, s.order);
      if (bytes.size() == 4) return std::bit_cast<float>(static_cast<uint32_t>(raw)) == c.real32;
      return std::bit_cast<double>(raw) == c.real;
    }
    case ValueType::kBoolean:
      return AnyNonZero(bytes) == c.boolean;
    case ValueType::kString:
      return DecodedEquals(AsChars(bytes), case_bytes, c.has_replacement);
    case ValueType::kHex:
      return AsChars(bytes) == case_bytes;
  }
  return false;
}

}  // namespace

size_t FormatError(const TranslateError& error, std::span<char> out) noexcept {
  JsonWriter w(out);
  if (error.code == TranslateErrc::kOutputTooSmall) {
    w.Literal("Error: translated JSON does not fit the output buffer");
  } else {
    w.Literal("Asset path:");
    w.Literal(error.asset);
    w.Literal(", Error: can't extract [");
    w.SignedDecimal(error.start);
    w.Char(':');
    w.SignedDecimal(error.end);
    w.Literal("] from ");
    w.Decimal(error.payload_size);
    w.Literal(" bytes");
  }
  return w.overflow() ? 0 : w.size();
}

Translator::Translator(std::shared_ptr<const Program> program)
    : program_(std::move(program)), nodes_(program_->node_count()) {}

Translator::NodeState& Translator::Attach(uint32_t node) noexcept {
  NodeState& s = nodes_[node];
  if (s.epoch == current_epoch_) return s;  // always true for the root
  NodeState& parent = MakeObject(program_->nodes_[node].parent);
  s = NodeState{};
  s.epoch = current_epoch_;
  if (parent.last_child == kNone) {
    parent.first_child = node;
  } else {
    nodes_[parent.last_child].next_sibling = node;
  }
  parent.last_child = node;
  return s;
}

Translator::NodeState& Translator::MakeObject(uint32_t node) noexcept {
  NodeState& s = Attach(node);
  if (s.kind != Kind::kObject) {
    s.kind = Kind::kObject;
    s.first_child = s.last_child = kNone;
  }
  return s;
}

void Translator::Drop(NodeState& object) noexcept {
  for (uint32_t c = object.first_child; c != kNone; c = nodes_[c].next_sibling) {
    if (nodes_[c].kind == Kind::kObject) Drop(nodes_[c]);
    nodes_[c].epoch = 0;  // absent; a later write links it afresh
  }
  object.first_child = object.last_child = kNone;
}

void Translator::WriteScalar(uint32_t node, uint32_t mapping, size_t start, size_t end) noexcept {
  NodeState& s = Attach(node);
  if (s.kind == Kind::kObject) Drop(s);
  s.kind = Kind::kScalar;
  s.mapping = mapping;
  s.start = start;
  s.end = end;
}

namespace {

// Resolves a selector's byte range over N payload bytes (§5.3 table); false if it does not
// fit, with the range 1NCE's error message prints.
bool ResolveRange(const internal::Selector& s, int64_t n, int64_t* start, int64_t* end) noexcept {
  if (s.has_byte && s.has_endbyte) {
    *start = s.byte;
    *end = n + s.endbyte;
  } else if (s.has_byte) {
    *start = s.byte;
    *end = s.byte + s.length;
  } else {
    *start = n + s.endbyte;
    *end = *start + s.length;
  }
  return *start >= 0 && *end <= n && *start <= *end;
}

}  // namespace

Result<size_t, TranslateError> Translator::Translate(std::span<const std::byte> payload,
                                                     std::span<char> out) noexcept {
  const Program& p = *program_;
  if (++current_epoch_ == 0) {  // wrapped: stale epochs could look live again
    for (NodeState& s : nodes_) s.epoch = 0;
    current_epoch_ = 1;
  }
  location_mapping_ = {kNone, kNone};
  location_size_ = {0, 0};
  NodeState& root = nodes_[0];
  root = NodeState{};
  root.epoch = current_epoch_;
  root.kind = Kind::kObject;

  const auto n = static_cast<int64_t>(std::min<size_t>(payload.size(), INT64_MAX));
  const auto fail = [&](std::string_view asset, int64_t start, int64_t end) {
    return tl::unexpected(
        TranslateError{TranslateErrc::kCannotExtract, asset, start, end, payload.size()});
  };

  uint32_t pc = 0;
  const auto op_count = static_cast<uint32_t>(p.ops_.size());
  while (pc < op_count) {
    const internal::Op op = p.ops_[pc];
    switch (op.code) {
      case internal::Op::Code::kWrite: {
        const internal::Mapping& m = p.mappings_[op.arg];
        int64_t start = 0;
        int64_t end = 0;
        if (m.selector != kNone && !ResolveRange(p.selectors_[m.selector], n, &start, &end)) {
          return fail(p.Text(m.asset), start, end);
        }
        WriteScalar(m.node, op.arg, static_cast<size_t>(start), static_cast<size_t>(end));
        if (m.location) location_mapping_[static_cast<size_t>(m.axis)] = op.arg;
        ++pc;
        break;
      }
      case internal::Op::Code::kSwitch: {
        const internal::Switch& sw = p.switches_[op.arg];
        const internal::Selector& sel = p.selectors_[sw.selector];
        int64_t start = 0;
        int64_t end = 0;
        if (!ResolveRange(sel, n, &start, &end)) return fail(p.Text(sw.label), start, end);
        const auto bytes = payload.subspan(static_cast<size_t>(start),
                                           static_cast<size_t>(end - start));
        pc = sw.default_target != kNone ? sw.default_target : sw.end;
        for (uint32_t i = 0; i < sw.case_count; ++i) {
          const internal::Case& c = p.cases_[sw.first_case + i];
          if (Matches(sel, bytes, c.value, p.Text(c.value.bytes))) {
            pc = c.target;
            break;
          }
        }
        break;
      }
      case internal::Op::Code::kJump:
        pc = op.arg;
        break;
    }
  }

  JsonWriter w(out);
  EmitObject(root.first_child, payload, w);
  if (w.overflow()) {
    return tl::unexpected(TranslateError{TranslateErrc::kOutputTooSmall, {}, 0, 0, payload.size()});
  }
  CaptureLocation(payload);
  return w.size();
}

void Translator::CaptureLocation(std::span<const std::byte> payload) noexcept {
  static_assert(kNumberTextRoom >= kMaxNumberText);
  const Program& p = *program_;
  for (size_t axis = 0; axis < location_mapping_.size(); ++axis) {
    const uint32_t mapping = location_mapping_[axis];
    if (mapping == kNone) continue;
    const internal::Mapping& m = p.mappings_[mapping];
    const NodeState& s = nodes_[m.node];
    // Replaced by a later write (another field, or an object built over the path): the
    // output no longer carries this value.
    if (s.epoch != current_epoch_ || s.kind != Kind::kScalar || s.mapping != mapping) continue;
    const internal::Selector& sel = p.selectors_[m.selector];  // a float64, by compilation
    const auto d = std::bit_cast<double>(ReadUnsigned(payload.subspan(s.start, s.end - s.start),
                                                      sel.order));
    if (!std::isfinite(d)) continue;
    location_size_[axis] = FormatShortest(d, location_text_[axis].data());
  }
}

std::optional<Translator::Location> Translator::location() const noexcept {
  const auto lat = static_cast<size_t>(LocationAxis::kLatitude);
  const auto lon = static_cast<size_t>(LocationAxis::kLongitude);
  if (location_size_[lat] == 0 || location_size_[lon] == 0) return std::nullopt;
  return Location{{location_text_[lon].data(), location_size_[lon]},
                  {location_text_[lat].data(), location_size_[lat]}};
}

void Translator::EmitObject(uint32_t first_child, std::span<const std::byte> payload,
                            JsonWriter& w) const noexcept {
  const Program& p = *program_;
  w.Char('{');
  for (uint32_t c = first_child; c != kNone; c = nodes_[c].next_sibling) {
    if (c != first_child) w.Char(',');
    const NodeState& s = nodes_[c];
    w.Literal(p.Text(p.nodes_[c].key));
    if (s.kind == Kind::kObject) {
      EmitObject(s.first_child, payload, w);
      continue;
    }
    const internal::Mapping& m = p.mappings_[s.mapping];
    if (m.selector == kNone) {
      w.Literal(p.Text(m.constant));
    } else {
      WriteValue(p.selectors_[m.selector], payload.subspan(s.start, s.end - s.start), w);
    }
  }
  w.Char('}');
}

}  // namespace coapgate::energysaver
