#include "bench/loadgen/request_template.h"

#include <array>
#include <cstring>
#include <string_view>

#include "codec/encoder.h"
#include "codec/message.h"
#include "codec/option_number.h"
#include "codec/request.h"

namespace coapgate::loadgen {
namespace {

// Appends one option (RFC 7252 §3.1): the codec's encoder writes only the options a server
// response carries, so a client request's Uri-Path and Uri-Query are written here and then
// validated by ParseMessage/DecodeRequest in Build.
void AppendOption(std::vector<std::byte>& out, uint16_t* previous, uint16_t number,
                  std::string_view value) {
  const auto nibble = [](size_t v) -> uint8_t { return v < 13 ? v : v < 269 ? 13 : 14; };
  const size_t delta = number - *previous;
  out.push_back(static_cast<std::byte>(nibble(delta) << 4 | nibble(value.size())));
  for (const size_t v : {delta, value.size()}) {
    if (v >= 269) {
      out.push_back(static_cast<std::byte>((v - 269) >> 8));
      out.push_back(static_cast<std::byte>((v - 269) & 0xff));
    } else if (v >= 13) {
      out.push_back(static_cast<std::byte>(v - 13));
    }
  }
  for (const char c : value) out.push_back(static_cast<std::byte>(c));
  *previous = number;
}

void WriteDigits(std::byte* out, uint32_t value, size_t digits) noexcept {
  for (size_t i = digits; i-- > 0; value /= 10) out[i] = static_cast<std::byte>('0' + value % 10);
}

}  // namespace

Result<RequestTemplate, std::string> RequestTemplate::Build(const RequestSpec& spec) {
  if (spec.payload < kMinPayload || spec.payload > kMaxPayload) {
    return Fail("--payload must be " + std::to_string(kMinPayload) + " to " +
                std::to_string(kMaxPayload) + " bytes (it carries the device and sequence)");
  }
  if (spec.topic.size() > 253) return Fail(std::string("--topic: at most 253 characters"));
  if (spec.path.size() > 255) return Fail(std::string("--path: at most 255 characters"));

  std::array<std::byte, codec::kHeaderSize + kTokenLength> head{};
  const std::array<std::byte, kTokenLength> token{};
  codec::OutgoingMessage header;
  header.type = spec.confirmable ? codec::MessageType::kConfirmable
                                 : codec::MessageType::kNonConfirmable;
  header.code = spec.method;
  header.token = token;
  const auto head_size = codec::EncodeMessage(header, head);
  if (!head_size || *head_size != head.size()) {
    return Fail(std::string("cannot encode the request header"));
  }
  std::vector<std::byte> bytes(head.begin(), head.end());

  uint16_t previous = 0;
  std::string_view path = spec.path;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    const std::string_view segment = path.substr(0, slash);
    if (!segment.empty()) AppendOption(bytes, &previous, codec::option::kUriPath, segment);
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
  }
  if (!spec.topic.empty()) {
    AppendOption(bytes, &previous, codec::option::kUriQuery, "t=" + spec.topic);
  }
  bytes.push_back(codec::kPayloadMarker);
  const size_t payload_offset = bytes.size();
  constexpr std::string_view kHead = "d=0000000 s=0000000000 ";
  static_assert(kHead.size() == kMinPayload);
  for (size_t i = 0; i < spec.payload; ++i) {
    const char c = i < kHead.size() ? kHead[i] : static_cast<char>('a' + (i - kHead.size()) % 26);
    bytes.push_back(static_cast<std::byte>(c));
  }

  // The server's own reading of it.
  const auto message = codec::ParseMessage(std::span<const std::byte>(bytes));
  if (!message) {
    return Fail("the request does not parse: " + std::string(codec::ToString(message.error().errc)));
  }
  const auto request = codec::DecodeRequest(*message);
  if (!request) {
    return Fail("the request is refused: " + std::string(codec::ToString(request.error().errc)));
  }
  if (!spec.topic.empty() &&
      (request->topic_status != codec::TopicStatus::kValid || request->topic != spec.topic)) {
    return Fail("--topic " + spec.topic +
                ": not a valid coapgate topic ([A-Za-z0-9_/], no \"//\", at most the limit)");
  }
  return RequestTemplate(std::move(bytes), payload_offset);
}

void RequestTemplate::Write(std::span<std::byte> out, uint32_t device, uint32_t seq, uint16_t mid,
                            uint32_t token) const noexcept {
  std::memcpy(out.data(), bytes_.data(), bytes_.size());
  out[2] = static_cast<std::byte>(mid >> 8);
  out[3] = static_cast<std::byte>(mid & 0xff);
  std::memcpy(out.data() + codec::kHeaderSize, &token, kTokenLength);
  WriteDigits(out.data() + payload_offset_ + 2, device, kDeviceDigits);
  WriteDigits(out.data() + payload_offset_ + 2 + kDeviceDigits + 3, seq, kSeqDigits);
}

}  // namespace coapgate::loadgen
