// TomlReader: the generic half of reading a TOML configuration, apart from its schema
// (config.cc: which keys exist, their defaults, cross-key checks). Typed getters with range
// checks, unknown-key detection, and the messages that name a key the way TOML spells it
// (sinks[0].properties."linger.ms") and quote values on one line. The first error stops
// reading and is kept as "<source>: <key>: <reason>".
//
// Thread contract: none shared; a TableReader and its Errors live on one thread for one
// parse. Control plane (allocates, and toml++ may throw, which ParseToml catches).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include <toml++/toml.h>

#include "common/quote.h"
#include "common/result.h"

namespace coapgate::config {

// A name the file uses, and the value it stands for. A schema's tables of them are the single
// spelling of each enum, for parsing and for ToString().
template <class T>
struct Named {
  std::string_view name;
  T value;
};

// The dotted key of `key` inside the table at `path`, quoted the way TOML would need it.
[[nodiscard]] std::string Child(std::string_view path, std::string_view key);
// "path[index]".
[[nodiscard]] std::string Element(std::string_view path, size_t index);
// What a node holds, for "(got ...)": its type, and its value when that is short and useful.
[[nodiscard]] std::string Got(const toml::node& node);

// The names of `choices` for a message: "a", "b" or "c".
template <class T, size_t N>
[[nodiscard]] std::string ListNames(const Named<T> (&choices)[N]) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out.append(i + 1 == N ? " or " : ", ");
    out += QuoteForMessage(choices[i].name);
  }
  return out;
}

// The name of `value` in `choices` (the spelling ToString() gives), or "unknown".
template <class T, size_t N>
[[nodiscard]] std::string NameOf(const Named<T> (&choices)[N], T value) {
  for (const Named<T>& choice : choices) {
    if (choice.value == value) return std::string(choice.name);
  }
  return "unknown";
}


// The document in `text`, or "<source>:LINE:COLUMN: <description>" for a syntax error.
[[nodiscard]] Result<toml::table, std::string> ParseToml(std::string_view text,
                                                        std::string_view source);

// The first validation error, formatted "<source>: <key>: <reason>". Reading stops at it.
class Errors {
 public:
  explicit Errors(std::string_view source) : source_(OneLineForMessage(source)) {}

  // Always returns false, so that readers can `return errors->Fail(...)`.
  bool Fail(std::string_view dotted_key, std::string_view reason) {
    first_ = source_ + ": " + std::string(dotted_key) + ": " + std::string(reason);
    return false;
  }
  std::string Take() { return std::move(first_); }

 private:
  std::string source_;
  std::string first_;
};

// Reads the keys of one TOML table into a struct. Every reader returns false after recording
// an error that names the full dotted key; an absent key leaves the output (its default) as is.
class TableReader {
 public:
  TableReader(const toml::table& table, std::string path, Errors* errors)
      : table_(table), path_(std::move(path)), errors_(errors) {}

  [[nodiscard]] const toml::table& table() const { return table_; }
  [[nodiscard]] std::string KeyPath(std::string_view key) const { return Child(path_, key); }
  [[nodiscard]] const toml::node* Find(std::string_view key) const { return table_.get(key); }
  bool Fail(std::string_view key, std::string_view reason) {
    return errors_->Fail(KeyPath(key), reason);
  }
  // For errors below this table's own keys (array elements); `dotted_key` is complete.
  bool FailAt(std::string_view dotted_key, std::string_view reason) {
    return errors_->Fail(dotted_key, reason);
  }

  // Rejects any key outside `known`; when several are unknown, the first in the file.
  // `what` qualifies the message ("for a file sink").
  bool OnlyKeys(std::initializer_list<std::string_view> known, std::string_view what = {}) {
    const toml::key* unknown = nullptr;
    for (const auto& [key, node] : table_) {
      if (std::find(known.begin(), known.end(), key.str()) != known.end()) continue;
      const toml::source_position at = key.source().begin;
      if (unknown == nullptr || at < unknown->source().begin) unknown = &key;
    }
    if (unknown == nullptr) return true;
    std::string reason = "unknown key";
    if (!what.empty()) reason.append(" ").append(what);
    reason.append(" (expected one of: ");
    for (auto it = known.begin(); it != known.end(); ++it) {
      if (it != known.begin()) reason.append(", ");
      reason.append(*it);
    }
    reason.append(")");
    return Fail(unknown->str(), reason);
  }

  // REQUIRES: lo <= hi. T is the field's type, so the range always fits it: TOML integers are
  // 64-bit and are range-checked before narrowing.
  template <class T>
  bool Integer(std::string_view key, T lo, T hi, T* out) {
    const toml::node* node = Find(key);
    if (node == nullptr) return true;
    const std::string expected =
        "must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
    const auto* value = node->as_integer();
    if (value == nullptr) return Fail(key, expected + " (got " + Got(*node) + ")");
    const int64_t v = value->get();
    if (std::cmp_less(v, lo) || std::cmp_greater(v, hi)) {
      return Fail(key, expected + " (got " + std::to_string(v) + ")");
    }
    *out = static_cast<T>(v);
    return true;
  }

  // NUL is refused everywhere: every string ends up in a C API (open, libmosquitto,
  // librdkafka) that would silently cut it there.
  bool String(std::string_view key, bool non_empty, std::string* out) {
    const toml::node* node = Find(key);
    if (node == nullptr) return true;
    const auto* value = node->as_string();
    const char* expected = non_empty ? "must be a non-empty string" : "must be a string";
    if (value == nullptr || (non_empty && value->get().empty())) {
      return Fail(key, std::string(expected) + " (got " + Got(*node) + ")");
    }
    if (value->get().find('\0') != std::string::npos) {
      return Fail(key, "must not contain NUL characters");
    }
    *out = value->get();
    return true;
  }

  bool Boolean(std::string_view key, bool* out) {
    const toml::node* node = Find(key);
    if (node == nullptr) return true;
    const auto* value = node->as_boolean();
    if (value == nullptr) return Fail(key, "must be true or false (got " + Got(*node) + ")");
    *out = value->get();
    return true;
  }

  template <class T, size_t N>
  bool Choice(std::string_view key, const Named<T> (&choices)[N], T* out) {
    const toml::node* node = Find(key);
    if (node == nullptr) return true;
    if (const auto* value = node->as_string()) {
      for (const Named<T>& choice : choices) {
        if (choice.name == value->get()) {
          *out = choice.value;
          return true;
        }
      }
    }
    return Fail(key, "must be one of " + ListNames(choices) + " (got " + Got(*node) + ")");
  }

  // Reads the sub-table `key` with `read(TableReader&)`; an absent table keeps the defaults.
  template <class Read>
  bool Section(std::string_view key, Read read) {
    const toml::node* node = Find(key);
    if (node == nullptr) return true;
    const toml::table* table = node->as_table();
    if (table == nullptr) return Fail(key, "must be a table (got " + Got(*node) + ")");
    TableReader reader(*table, KeyPath(key), errors_);
    return read(reader);
  }

 private:
  const toml::table& table_;
  std::string path_;  // dotted key of this table; empty for the root
  Errors* errors_;
};


}  // namespace coapgate::config
