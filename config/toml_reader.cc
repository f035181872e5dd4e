#include "config/toml_reader.h"

#include <algorithm>
#include <charconv>

namespace coapgate::config {

namespace {

bool IsBareKey(std::string_view key) {
  if (key.empty()) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

}  // namespace

std::string Child(std::string_view path, std::string_view key) {
  std::string out(path);
  if (!out.empty()) out.push_back('.');
  out += IsBareKey(key) ? std::string(key) : QuoteForMessage(key);
  return out;
}

std::string Element(std::string_view path, size_t index) {
  return std::string(path) + "[" + std::to_string(index) + "]";
}

std::string Got(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "string " + QuoteForMessage(node.as_string()->get());
    case toml::node_type::integer:
      return "integer " + std::to_string(node.as_integer()->get());
    case toml::node_type::floating_point: {
      char text[32];
      const auto end = std::to_chars(text, text + sizeof(text), node.as_floating_point()->get());
      return "float " + std::string(text, end.ec == std::errc{} ? end.ptr : text);
    }
    case toml::node_type::boolean:
      return node.as_boolean()->get() ? "boolean true" : "boolean false";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

Result<toml::table, std::string> ParseToml(std::string_view text, std::string_view source) {
  try {
    return toml::parse(text, source);
  } catch (const toml::parse_error& error) {
    const toml::source_position at = error.source().begin;
    std::string out = OneLineForMessage(source);
    if (at) out += ":" + std::to_string(at.line) + ":" + std::to_string(at.column);
    return Fail(out + ": " + OneLineForMessage(error.description()));
  }
}

}  // namespace coapgate::config
