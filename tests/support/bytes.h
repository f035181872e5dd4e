// Test helper: byte arrays written as hex text ("40 02 12 34"), the way the RFC and the
// reliability catalogue write datagrams.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "common/hex.h"

namespace coapgate::test {

inline std::vector<std::byte> Bytes(std::string_view hex) {
  auto bytes = ParseHex(hex);
  if (!bytes) {
    ADD_FAILURE() << "bad hex in test: " << bytes.error();
    return {};
  }
  return *bytes;
}

// Keeps a datagram alive until the test binary exits, for helpers that return views into it
// (a MessageView must never outlive its bytes).
inline const std::vector<std::byte>& Retain(std::vector<std::byte> datagram) {
  static std::deque<std::vector<std::byte>> kept;
  kept.push_back(std::move(datagram));
  return kept.back();
}

inline std::vector<std::byte> Concat(std::vector<std::byte> a, const std::vector<std::byte>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Appends the low `width` bytes of `value`, most significant first (network order), the way
// the DTLS and CoAP headers write their fields.
inline void PutBigEndian(std::vector<std::byte>* out, uint64_t value, size_t width) {
  for (size_t k = width; k-- > 0;) {
    out->push_back(static_cast<std::byte>((value >> (8 * k)) & 0xff));
  }
}

inline std::vector<std::byte> Text(std::string_view text) {
  std::vector<std::byte> out;
  for (char c : text) out.push_back(static_cast<std::byte>(c));
  return out;
}

inline std::string AsText(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace coapgate::test
