#include "energy_saver/template_program.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <map>
#include <unordered_set>
#include <span>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/hex.h"
#include "common/quote.h"


namespace coapgate::energysaver {
namespace {

// ordered_json keeps document order, so "the first unknown key" is the first one written.
using Json = nlohmann::ordered_json;
using internal::kNone;

// Keys every node may carry and that never mean anything (§5.2 "comment"; the Conversion's
// "name"/"version", tolerated anywhere so a descriptive key never breaks a template).
constexpr std::string_view kIgnorableKeys[] = {"comment", "name", "version"};

constexpr std::string_view kTypeNames[] = {"int", "uint", "float", "boolean", "string", "hex"};

std::string Child(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}
std::string Index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

std::string JsonString(std::string_view s) {
  std::string out(internal::JsonEscapedLength(s) + 2, '"');
  (void)internal::JsonEscape(s, std::span<char>(out).subspan(1, out.size() - 2));
  return out;
}

// Thrown from inside the parser callback (the only way to stop nlohmann's parse); caught
// in CompileTemplate.
struct DuplicateKey {
  std::string path;
  std::string key;
};

// Tracks the JSON path during nlohmann's callback parse so a duplicate key (which
// nlohmann would silently resolve as "last wins") is reported where it is.
class DuplicateKeyGuard {
 public:
  bool operator()(int /*depth*/, Json::parse_event_t event, Json& parsed) {
    using E = Json::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        frames_.push_back({event == E::array_start, 0, ComponentForChild(), {}, {}});
        break;
      case E::object_end:
      case E::array_end:
        frames_.pop_back();
        break;
      case E::key: {
        Frame& f = frames_.back();
        f.key = parsed.get<std::string>();
        if (!f.keys.insert(f.key).second) throw DuplicateKey{Path(), f.key};
        break;
      }
      case E::value:
        if (!frames_.empty() && frames_.back().is_array) ++frames_.back().next_index;
        break;
    }
    return true;
  }

 private:
  struct Frame {
    bool is_array;
    size_t next_index;
    std::string component;  // how the parent addresses this container: ".key" or "[i]"
    std::string key;        // objects: the key being parsed
    std::unordered_set<std::string> keys;
  };
  std::string ComponentForChild() {
    if (frames_.empty()) return {};
    Frame& parent = frames_.back();
    if (parent.is_array) return "[" + std::to_string(parent.next_index++) + "]";
    return "." + parent.key;
  }
  std::string Path() const {
    std::string path;
    for (const Frame& f : frames_) path += f.component;
    if (!path.empty() && path[0] == '.') path.erase(0, 1);
    return path;
  }
  std::vector<Frame> frames_;
};

std::string ParseErrorText(std::string_view text, const Json::parse_error& e) {
  // nlohmann reports the byte offset (1-based, of the last char read) and a message
  // "[json.exception.parse_error.101] parse error at line L, column C: why".
  // The line and 1-based column of that last char.
  size_t line = 1;
  size_t column = 0;
  const size_t last = std::min<size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size());
  for (size_t i = 0; i < last; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 0;
    } else {
      ++column;
    }
  }
  ++column;
  std::string why = e.what();
  const size_t at = why.find(": ", why.find("parse error"));
  if (at != std::string::npos) why.erase(0, at + 2);
  for (char& c : why) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  return "<root>: not valid JSON at line " + std::to_string(line) + " column " +
         std::to_string(column) + ": " + why;
}

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// Value-size bounds for MaxOutputSize (JSON text chars).
constexpr size_t kMaxIntegerText = 20;  // "-9223372036854775808", "18446744073709551615"
constexpr size_t kMaxFloatText = 25;    // sign + "0." + 5 zeros + 17 digits
constexpr size_t kEscapeWidth = 6;      // JsonEscape writes at most 6 chars per byte

}  // namespace

// Walks the parsed document once, checking every rule and emitting the program.
class ProgramBuilder {
 public:
  ProgramBuilder() : program_(new Program()) {
    program_->nodes_.push_back({});  // the root object
    node_fixed_.push_back(0);
    node_per_byte_.push_back(0);
  }

  Result<std::shared_ptr<const Program>, std::string> Build(const Json& root) {
    if (!root.is_object()) return Error("<root>", "must be a JSON object");
    if (!CheckKeys(root, "<root>", {"sense"})) return tl::unexpected(error_);
    const auto sense = root.find("sense");
    if (sense == root.end()) return Error("<root>", "needs \"sense\"");
    if (!CompileBlock(*sense, "sense", 0)) return tl::unexpected(error_);
    Finish();
    return std::shared_ptr<const Program>(std::move(program_));
  }

 private:
  tl::unexpected<std::string> Error(const std::string& path, const std::string& why) {
    Fail(path, why);
    return tl::unexpected(error_);
  }
  bool Fail(const std::string& path, const std::string& why) {
    error_ = (path.empty() ? "<root>" : path) + ": " + why;
    return false;
  }

  bool CheckKeys(const Json& object, const std::string& path,
                 std::initializer_list<std::string_view> allowed) {
    std::string unknown;
    size_t count = 0;
    for (const auto& item : object.items()) {
      const std::string& key = item.key();
      const auto known = [&](std::string_view k) { return k == key; };
      if (std::any_of(allowed.begin(), allowed.end(), known) ||
          std::any_of(std::begin(kIgnorableKeys), std::end(kIgnorableKeys), known)) {
        continue;
      }
      unknown += (count++ == 0 ? "" : ", ") + QuoteForMessage(key);
    }
    if (count == 0) return true;
    std::string expected;
    for (std::string_view k : allowed) expected += std::string(k) + ", ";
    expected += "comment";
    return Fail(path, (count == 1 ? "unknown key " : "unknown keys ") + unknown +
                          " (allowed: " + expected + ")");
  }

  uint32_t AddText(std::string_view s) {
    const auto offset = static_cast<uint32_t>(program_->text_.size());
    program_->text_.append(s);
    return offset;
  }
  internal::TextRef Text(std::string_view s) {
    return {AddText(s), static_cast<uint32_t>(s.size())};
  }
  uint32_t Here() const { return static_cast<uint32_t>(program_->ops_.size()); }
  void Emit(internal::Op::Code code, uint32_t arg) { program_->ops_.push_back({code, arg}); }

  // ---- Statements -----------------------------------------------------------------------

  bool CompileBlock(const Json& block, const std::string& path, size_t depth) {
    if (!block.is_array()) return Fail(path, "must be an array");
    for (size_t i = 0; i < block.size(); ++i) {
      if (!CompileStatement(block[i], Index(path, i), depth)) return false;
    }
    return true;
  }

  bool CompileStatement(const Json& s, const std::string& path, size_t depth) {
    if (!s.is_object()) return Fail(path, "statement must be an object");
    if (++statements_ > kMaxStatements) {
      return Fail(path, "more than " + std::to_string(kMaxStatements) + " statements");
    }
    const bool mapping = s.contains("asset") || s.contains("value") || s.contains("custom_type");
    const bool control = s.contains("switch") || s.contains("on");
    if (mapping && control) return Fail(path, "has both \"asset\" and \"switch\" keys");
    if (mapping) return CompileMapping(s, path);
    if (control) return CompileSwitch(s, path, depth + 1);
    if (s.empty()) return Fail(path, "empty statement (needs \"asset\" or \"switch\")");
    return CheckKeys(s, path, {"asset", "value", "custom_type", "switch", "on"});  // comment
  }

  bool CompileMapping(const Json& s, const std::string& path) {
    if (!CheckKeys(s, path, {"asset", "value", "custom_type"})) return false;
    const auto asset = s.find("asset");
    if (asset == s.end()) return Fail(path, "mapping without \"asset\"");
    const auto value = s.find("value");
    if (value == s.end()) return Fail(path, "mapping without \"value\"");
    if (!asset->is_string()) return Fail(Child(path, "asset"), "must be a string");
    const auto& asset_text = asset->get_ref<const std::string&>();
    uint32_t node = 0;
    if (!ResolveAsset(asset_text, Child(path, "asset"), &node)) return false;

    internal::Mapping m;
    m.node = node;
    m.asset = Text(asset_text);
    const std::string value_path = Child(path, "value");
    size_t fixed = 0;
    size_t per_byte = 0;
    if (value->is_string()) {
      const std::string text = JsonString(value->get_ref<const std::string&>());
      m.constant = Text(text);
      fixed = text.size();
    } else if (value->is_object()) {
      if (!CompileSelector(*value, value_path, &m.selector)) return false;
      ValueBound(program_->selectors_[m.selector], &fixed, &per_byte);
    } else {
      return Fail(value_path, "must be a string constant or a payload selector object");
    }

    if (const auto custom = s.find("custom_type"); custom != s.end()) {
      const std::string custom_path = Child(path, "custom_type");
      const bool lat = custom->is_string() && *custom == "location_lat";
      const bool lon = custom->is_string() && *custom == "location_long";
      if (!lat && !lon) return Fail(custom_path, "must be \"location_lat\" or \"location_long\"");
      const bool float64 = m.selector != kNone &&
                           program_->selectors_[m.selector].type == ValueType::kFloat &&
                           program_->selectors_[m.selector].length == 8;
      if (!float64) {
        return Fail(custom_path, custom->get<std::string>() +
                                     " needs a float value with bytelength 8");
      }
      m.location = true;
      m.axis = lat ? LocationAxis::kLatitude : LocationAxis::kLongitude;
      locations_.push_back({m.asset, m.axis});
    }

    node_fixed_[node] = std::max(node_fixed_[node], fixed);
    node_per_byte_[node] = std::max(node_per_byte_[node], per_byte);
    Emit(internal::Op::Code::kWrite, static_cast<uint32_t>(program_->mappings_.size()));
    program_->mappings_.push_back(m);
    return true;
  }

  // Finds or creates the node of every prefix of `asset` ("a", "a.b", "a.b.c").
  bool ResolveAsset(const std::string& asset, const std::string& path, uint32_t* node) {
    if (asset.size() > kMaxAssetPathLength) {
      return Fail(path, "longer than " + std::to_string(kMaxAssetPathLength) + " chars (got " +
                            std::to_string(asset.size()) + ")");
    }
    uint32_t current = 0;
    size_t segments = 0;
    size_t begin = 0;
    while (true) {
      const size_t dot = std::min(asset.find('.', begin), asset.size());
      const std::string segment = asset.substr(begin, dot - begin);
      if (segment.empty()) return Fail(path, "empty path segment in " + QuoteForMessage(asset));
      if (++segments > kMaxNestingDepth) {
        return Fail(path, "more than " + std::to_string(kMaxNestingDepth) + " path segments");
      }
      auto [it, inserted] = children_.try_emplace({current, segment}, 0);
      if (inserted) {
        it->second = static_cast<uint32_t>(program_->nodes_.size());
        const std::string key = JsonString(segment) + ":";
        program_->nodes_.push_back({current, Text(key)});
        node_fixed_.push_back(0);
        node_per_byte_.push_back(0);
      }
      current = it->second;
      if (dot == asset.size()) break;
      begin = dot + 1;
    }
    *node = current;
    return true;
  }

  bool CompileSwitch(const Json& s, const std::string& path, size_t depth) {
    if (!CheckKeys(s, path, {"switch", "on"})) return false;
    if (depth > kMaxNestingDepth) {
      return Fail(path, "switch nesting deeper than " + std::to_string(kMaxNestingDepth));
    }
    const auto selector = s.find("switch");
    if (selector == s.end()) return Fail(path, "\"on\" without \"switch\"");
    const auto on = s.find("on");
    if (on == s.end()) return Fail(path, "switch without \"on\"");
    const std::string selector_path = Child(path, "switch");
    if (!selector->is_object()) return Fail(selector_path, "must be a payload selector object");

    internal::Switch sw;
    if (!CompileSelector(*selector, selector_path, &sw.selector)) return false;
    sw.label = Text(selector_path);
    const std::string on_path = Child(path, "on");
    if (!on->is_array()) return Fail(on_path, "must be an array");
    const ValueType type = program_->selectors_[sw.selector].type;

    const auto index = static_cast<uint32_t>(program_->switches_.size());
    program_->switches_.push_back(sw);  // completed below; referenced by index only
    Emit(internal::Op::Code::kSwitch, index);

    // Case labels are collected first so each switch's cases are contiguous in cases_,
    // even though nested switches in the bodies add their own cases meanwhile.
    std::vector<internal::Case> cases;
    std::vector<uint32_t> jumps;  // kJump ops to patch with the switch's end
    uint32_t default_target = kNone;
    for (size_t i = 0; i < on->size(); ++i) {
      const Json& c = (*on)[i];
      const std::string case_path = Index(on_path, i);
      if (!c.is_object()) return Fail(case_path, "case must be an object");
      const bool is_case = c.contains("case");
      const bool is_default = c.contains("default");
      if (!is_case && !is_default) {
        if (c.contains("do")) return Fail(case_path, "needs \"case\" or \"default\"");
        if (c.empty()) return Fail(case_path, "empty case (needs \"case\" or \"default\")");
        if (!CheckKeys(c, case_path, {"case", "default", "do"})) return false;
        continue;  // a comment entry
      }
      if (is_case && is_default) return Fail(case_path, "has both \"case\" and \"default\"");
      if (!CheckKeys(c, case_path, {is_case ? "case" : "default", "do"})) return false;
      internal::Case entry;
      if (is_case) {
        if (!CompileCaseValue(c["case"], Child(case_path, "case"), type, &entry.value)) {
          return false;
        }
      } else {
        if (c["default"] != true) return Fail(Child(case_path, "default"), "must be true");
        if (default_target != kNone) return Fail(case_path, "second default");
      }
      const auto body = c.find("do");
      if (body == c.end()) return Fail(case_path, is_case ? "case without \"do\""
                                                         : "default without \"do\"");
      entry.target = Here();
      if (!CompileBlock(*body, Child(case_path, "do"), depth)) return false;
      jumps.push_back(Here());
      Emit(internal::Op::Code::kJump, 0);
      if (is_case) {
        cases.push_back(entry);
      } else {
        default_target = entry.target;
      }
    }
    internal::Switch& done = program_->switches_[index];
    done.first_case = static_cast<uint32_t>(program_->cases_.size());
    done.case_count = static_cast<uint32_t>(cases.size());
    done.default_target = default_target;
    done.end = Here();
    program_->cases_.insert(program_->cases_.end(), cases.begin(), cases.end());
    for (uint32_t j : jumps) program_->ops_[j].arg = done.end;
    return true;
  }

  // ---- Selectors and case labels --------------------------------------------------------

  // Reads an integer key within [lo, hi]; `*present` tells whether it was given.
  bool IntegerKey(const Json& object, std::string_view key, const std::string& path, int64_t lo,
                  int64_t hi, std::string_view expected, int64_t* out, bool* present) {
    const auto it = object.find(std::string(key));
    *present = it != object.end();
    if (!*present) return true;
    const std::string key_path = Child(path, key);
    if (!it->is_number_integer()) return Fail(key_path, "must be an integer " + std::string(expected));
    const auto out_of_range = [&](const std::string& got, int64_t limit) {
      return Fail(key_path, "must be an integer " + std::string(expected) + " (got " + got +
                                ", limit " + std::to_string(limit) + ")");
    };
    if (it->is_number_unsigned()) {
      const auto u = it->get<uint64_t>();
      if (u > static_cast<uint64_t>(hi)) return out_of_range(std::to_string(u), hi);
      *out = static_cast<int64_t>(u);
    } else {
      *out = it->get<int64_t>();
    }
    if (*out < lo) return out_of_range(std::to_string(*out), lo);
    if (*out > hi) return out_of_range(std::to_string(*out), hi);
    return true;
  }

  bool CompileSelector(const Json& v, const std::string& path, uint32_t* index) {
    if (!CheckKeys(v, path, {"type", "byte", "endbyte", "bytelength", "byteorder", "signed"})) {
      return false;
    }
    internal::Selector sel;
    const auto type = v.find("type");
    if (type == v.end()) return Fail(path, "needs \"type\"");
    if (!type->is_string()) return Fail(Child(path, "type"), "must be a string");
    const auto& type_name = type->get_ref<const std::string&>();
    const auto* name = std::find(std::begin(kTypeNames), std::end(kTypeNames), type_name);
    if (name == std::end(kTypeNames)) {
      return Fail(Child(path, "type"), "unknown type " + QuoteForMessage(type_name) +
                                           " (expected int, uint, float, boolean, string, hex)");
    }
    sel.type = static_cast<ValueType>(name - std::begin(kTypeNames));

    int64_t length = 1;
    bool has_length = false;
    if (!IntegerKey(v, "byte", path, 0, kMaxByteOffset, ">= 0", &sel.byte, &sel.has_byte) ||
        !IntegerKey(v, "endbyte", path, -kMaxByteOffset, 0, "<= 0", &sel.endbyte,
                    &sel.has_endbyte) ||
        !IntegerKey(v, "bytelength", path, 1, kMaxByteOffset, ">= 1", &length, &has_length)) {
      return false;
    }
    if (!sel.has_byte && !sel.has_endbyte) return Fail(path, "needs \"byte\" or \"endbyte\"");
    const bool both = sel.has_byte && sel.has_endbyte;
    if (both && has_length) {
      return Fail(path, "\"bytelength\" cannot be given with both \"byte\" and \"endbyte\"");
    }
    sel.length = static_cast<uint32_t>(length);

    if (const auto order = v.find("byteorder"); order != v.end()) {
      if (*order == "little") {
        sel.order = ByteOrder::kLittle;
      } else if (*order != "big") {
        return Fail(Child(path, "byteorder"), "must be \"big\" or \"little\"");
      }
    }

    const bool integer = sel.type == ValueType::kInt || sel.type == ValueType::kUint;
    if (integer || sel.type == ValueType::kFloat) {
      const std::string lengths = integer ? "1, 2, 4 or 8" : "4 or 8";
      if (both) {
        return Fail(path, type_name + " needs a fixed \"bytelength\" (" + lengths +
                              "); \"byte\" with \"endbyte\" gives a variable length");
      }
      const bool ok = integer ? (length == 1 || length == 2 || length == 4 || length == 8)
                              : (length == 4 || length == 8);
      if (!ok && !has_length) return Fail(path, type_name + " needs \"bytelength\" " + lengths);
      if (!ok) {
        return Fail(Child(path, "bytelength"), type_name + " needs " + lengths + " (got " +
                                                   std::to_string(length) + ")");
      }
    }
    *index = static_cast<uint32_t>(program_->selectors_.size());
    program_->selectors_.push_back(sel);
    return true;
  }

  bool CompileCaseValue(const Json& c, const std::string& path, ValueType type,
                        internal::CaseValue* out) {
    using Kind = internal::CaseValue::Kind;
    const std::string_view type_name = kTypeNames[static_cast<size_t>(type)];
    const auto mismatch = [&](std::string_view what) {
      return Fail(path, std::string(what) + " case never matches a " + std::string(type_name) +
                            " switch");
    };
    if (!c.is_primitive() || c.is_null()) return Fail(path, "must be a number, string or boolean");
    switch (type) {
      case ValueType::kInt:
      case ValueType::kUint:
      case ValueType::kFloat:
        if (!c.is_number()) return mismatch(c.is_string() ? "a string" : "a boolean");
        out->kind = Kind::kNumber;
        if (c.is_number_unsigned()) {
          out->is_integer = true;
          out->magnitude = c.get<uint64_t>();
        } else if (c.is_number_integer()) {
          const auto i = c.get<int64_t>();
          out->is_integer = true;
          out->negative = i < 0;
          out->magnitude = i < 0 ? 0 - static_cast<uint64_t>(i) : static_cast<uint64_t>(i);
        } else {
          const double d = c.get<double>();
          // 2^64: integral doubles below it have an exact uint64 magnitude.
          if (std::trunc(d) == d && std::fabs(d) < 18446744073709551616.0) {
            out->is_integer = true;
            out->negative = d < 0;
            out->magnitude = static_cast<uint64_t>(std::fabs(d));
            if (out->magnitude == 0) out->negative = false;
          }
        }
        out->real = c.get<double>();
        out->real32 = static_cast<float>(out->real);
        return true;
      case ValueType::kBoolean:
        if (!c.is_boolean()) return mismatch(c.is_string() ? "a string" : "a number");
        out->kind = Kind::kBoolean;
        out->boolean = c.get<bool>();
        return true;
      case ValueType::kString: {
        if (!c.is_string()) return mismatch(c.is_number() ? "a number" : "a boolean");
        const auto& s = c.get_ref<const std::string&>();
        out->kind = Kind::kBytes;
        out->bytes = Text(s);
        out->has_replacement = s.find("\xef\xbf\xbd") != std::string::npos;
        return true;
      }
      case ValueType::kHex: {
        if (!c.is_string()) return mismatch(c.is_number() ? "a number" : "a boolean");
        const auto& s = c.get_ref<const std::string&>();
        if (s.size() % 2 != 0 || !std::all_of(s.begin(), s.end(), IsLowerHex)) {
          return Fail(path, "a hex switch needs lowercase hex digits, two per byte (got " +
                                QuoteForMessage(s) + ")");
        }
        std::string bytes(s.size() / 2, '\0');
        if (!s.empty()) {
          const auto n =
              DecodeHex(s, std::as_writable_bytes(std::span(bytes.data(), bytes.size())));
          CHECK(n, "lowercase hex digits in pairs, checked above");
        }
        out->kind = Kind::kBytes;
        out->bytes = Text(bytes);
        return true;
      }
    }
    return false;
  }

  // The largest JSON text of one value: fixed chars plus chars per payload byte (only
  // variable byte+endbyte ranges depend on the payload size).
  static void ValueBound(const internal::Selector& s, size_t* fixed, size_t* per_byte) {
    const bool variable = s.has_byte && s.has_endbyte;
    const size_t length = variable ? 0 : s.length;
    switch (s.type) {
      case ValueType::kInt:
      case ValueType::kUint: *fixed = kMaxIntegerText; break;
      case ValueType::kFloat: *fixed = kMaxFloatText; break;
      case ValueType::kBoolean: *fixed = 5; break;
      case ValueType::kString:
        *fixed = 2 + kEscapeWidth * length;
        *per_byte = variable ? kEscapeWidth : 0;
        break;
      case ValueType::kHex:
        *fixed = 2 + 2 * length;
        *per_byte = variable ? 2 : 0;
        break;
    }
  }

  void Finish() {
    Program& p = *program_;
    // Each node appears at most once: its key, a comma, and either its largest value or
    // braces (its children are counted as nodes of their own).
    for (size_t n = 1; n < p.nodes_.size(); ++n) {
      p.max_output_fixed_ += p.nodes_[n].key.size + 1 + std::max<size_t>(node_fixed_[n], 2);
      p.max_output_per_byte_ += node_per_byte_[n];
    }
    for (const auto& [asset, axis] : locations_) p.location_fields_.push_back({p.Text(asset), axis});
  }

  std::unique_ptr<Program> program_;
  std::string error_;
  size_t statements_ = 0;
  std::map<std::pair<uint32_t, std::string>, uint32_t> children_;  // (parent, segment) → node
  std::vector<size_t> node_fixed_;                                 // per node, see Finish
  std::vector<size_t> node_per_byte_;
  std::vector<std::pair<internal::TextRef, LocationAxis>> locations_;
};


size_t Program::MaxOutputSize(size_t payload_size) const noexcept {
  return max_output_fixed_ + max_output_per_byte_ * payload_size;
}

Result<std::shared_ptr<const Program>, std::string> CompileTemplate(
    std::string_view template_json) noexcept {
  if (template_json.size() > kMaxTemplateSize) {
    return tl::unexpected("<root>: template is " + std::to_string(template_json.size()) +
                          " bytes (limit " + std::to_string(kMaxTemplateSize) + ")");
  }
  try {
    DuplicateKeyGuard guard;
    const Json root = Json::parse(template_json.begin(), template_json.end(), std::ref(guard));
    return ProgramBuilder().Build(root);
  } catch (const DuplicateKey& e) {
    return tl::unexpected((e.path.empty() ? "<root>" : e.path) + ": duplicate key " +
                          QuoteForMessage(e.key));
  } catch (const Json::parse_error& e) {
    return tl::unexpected(ParseErrorText(template_json, e));
  } catch (const std::exception& e) {
    return tl::unexpected(std::string("<root>: cannot compile: ") + e.what());
  }
}

}  // namespace coapgate::energysaver
