// Test helper: builds request datagrams option by option, so tests say what they send
// (Path("data"), Query("t=a")) rather than hand-encoding deltas. Options must be added in
// non-decreasing number order, as on the wire. Deliberately independent of codec/encoder.h
// so that round-trip tests compare two encoders.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace coapgate::test {

class MessageBuilder {
 public:
  MessageBuilder& Type(uint8_t type) { type_ = type; return *this; }
  MessageBuilder& Con() { return Type(0); }
  MessageBuilder& Non() { return Type(1); }
  MessageBuilder& Code(uint8_t code) { code_ = code; return *this; }
  MessageBuilder& Mid(uint16_t mid) { mid_ = mid; return *this; }
  MessageBuilder& Token(std::vector<std::byte> token) { token_ = std::move(token); return *this; }

  MessageBuilder& Option(uint16_t number, std::string_view value) {
    const uint32_t delta = number - last_;
    last_ = number;
    const auto nibble = [](uint32_t v) -> uint8_t { return v < 13 ? v : v < 269 ? 13 : 14; };
    options_.push_back(static_cast<std::byte>(nibble(delta) << 4 | nibble(value.size())));
    Extended(delta);
    Extended(static_cast<uint32_t>(value.size()));
    for (char c : value) options_.push_back(static_cast<std::byte>(c));
    return *this;
  }
  MessageBuilder& UintOption(uint16_t number, uint32_t value) {
    std::string bytes;
    for (int shift = 24; shift >= 0; shift -= 8) {
      if (!bytes.empty() || (value >> shift) != 0) bytes += static_cast<char>(value >> shift);
    }
    return Option(number, bytes);
  }
  MessageBuilder& Path(std::string_view segment) { return Option(11, segment); }
  MessageBuilder& Query(std::string_view query) { return Option(15, query); }
  MessageBuilder& Payload(std::string_view payload) {
    payload_.assign(reinterpret_cast<const std::byte*>(payload.data()),
                    reinterpret_cast<const std::byte*>(payload.data()) + payload.size());
    return *this;
  }

  [[nodiscard]] std::vector<std::byte> Build() const {
    std::vector<std::byte> d;
    d.push_back(static_cast<std::byte>(0x40 | type_ << 4 | token_.size()));
    d.push_back(static_cast<std::byte>(code_));
    d.push_back(static_cast<std::byte>(mid_ >> 8));
    d.push_back(static_cast<std::byte>(mid_ & 0xff));
    d.insert(d.end(), token_.begin(), token_.end());
    d.insert(d.end(), options_.begin(), options_.end());
    if (!payload_.empty()) {
      d.push_back(std::byte{0xff});
      d.insert(d.end(), payload_.begin(), payload_.end());
    }
    return d;
  }

 private:
  void Extended(uint32_t v) {
    if (v >= 269) {
      options_.push_back(static_cast<std::byte>((v - 269) >> 8));
      options_.push_back(static_cast<std::byte>((v - 269) & 0xff));
    } else if (v >= 13) {
      options_.push_back(static_cast<std::byte>(v - 13));
    }
  }

  uint8_t type_ = 0;
  uint8_t code_ = 0x02;
  uint16_t mid_ = 0x1234;
  std::vector<std::byte> token_;
  std::vector<std::byte> options_;
  std::vector<std::byte> payload_;
  uint16_t last_ = 0;
};

}  // namespace coapgate::test
