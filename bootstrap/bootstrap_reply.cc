#include "bootstrap/bootstrap_reply.h"

#include <algorithm>
#include <optional>

#include "codec/code.h"
#include "codec/message.h"

namespace coapgate::bootstrap {
namespace {

// Header, longest token, Content-Format 50 (one option byte and one value byte) and the
// payload marker: what an error reply spends before its body.
constexpr size_t kErrorOverhead = codec::kHeaderSize + codec::kMaxTokenLength + 2 + 1;

constexpr std::string_view kUnauthorizedBody =
    R"({"statusText":"Unauthorized","errors":[{"code":"DEVICE_NOT_AUTHORIZED",)"
    R"("message":"No active device has this source address"}]})";
constexpr std::string_view kServerErrorBody =
    R"({"statusText":"Internal Server Error","errors":[{"code":"KEY_STORE_FAILED",)"
    R"("message":"The device key could not be stored"}]})";

// Even with an 8-byte token an error reply fits the C SDK's buffer.
static_assert(kErrorOverhead + kUnauthorizedBody.size() < kBootstrapDatagramLimit);
static_assert(kErrorOverhead + kServerErrorBody.size() < kBootstrapDatagramLimit);

constexpr std::byte kEight{0x38};
constexpr std::byte kNine{0x39};

[[nodiscard]] bool SafeMessageId(uint16_t mid, std::span<const std::byte> token) noexcept {
  const auto high = static_cast<std::byte>(mid >> 8);
  const auto low = static_cast<std::byte>(mid & 0xff);
  if (high == std::byte{0} || low == std::byte{0}) return false;
  if (high == kEight && low == kNine) return false;
  if (low == kEight && !token.empty() && token.front() == kNine) return false;
  return true;
}

[[nodiscard]] Result<EncodedBootstrapReply, codec::EncodeErrc> Encode(
    const BootstrapExchange& exchange, uint16_t non_message_id, uint8_t code,
    std::optional<uint32_t> content_format, std::string_view payload,
    std::span<std::byte> out, std::optional<uint32_t> max_age = std::nullopt) noexcept {
  codec::OutgoingMessage m;
  if (exchange.confirmable) {
    m.type = codec::MessageType::kAcknowledgement;
    m.message_id = exchange.message_id;
  } else {
    m.type = codec::MessageType::kNonConfirmable;
    m.message_id = SafeBootstrapMessageId(non_message_id, exchange.token);
  }
  m.code = code;
  m.token = exchange.token;
  m.content_format = content_format;
  m.max_age = max_age;
  m.payload = std::as_bytes(std::span(payload.data(), payload.size()));
  auto size = codec::EncodeMessage(m, out);
  if (!size) return Fail(size.error());
  return EncodedBootstrapReply{*size, m.message_id, *size >= kBootstrapDatagramLimit};
}

}  // namespace

size_t FormatBootstrapPayload(std::string_view iccid, std::string_view psk,
                              std::string_view coaps_url, std::span<char> out) noexcept {
  const std::string_view fields[] = {iccid, psk, coaps_url};
  size_t total = 2;  // the commas
  for (std::string_view f : fields) {
    if (f.empty() || f.find(',') != std::string_view::npos) return 0;
    total += f.size();
  }
  if (total > out.size()) return 0;
  char* p = out.data();
  for (size_t i = 0; i < 3; ++i) {
    if (i != 0) *p++ = ',';
    p = std::copy(fields[i].begin(), fields[i].end(), p);
  }
  return total;
}

uint8_t BootstrapErrorCode(BootstrapError error) noexcept {
  return error == BootstrapError::kUnauthorized ? codec::code::kUnauthorized
                                                : codec::code::kInternalServerError;
}

std::string_view BootstrapErrorBody(BootstrapError error) noexcept {
  return error == BootstrapError::kUnauthorized ? kUnauthorizedBody : kServerErrorBody;
}

uint16_t SafeBootstrapMessageId(uint16_t candidate, std::span<const std::byte> token) noexcept {
  // The longest run of refused MIDs is 0x0000..0x0100 (a zero byte in each), 257 values, so
  // the loop ends within 257 steps; its bound only makes that obvious.
  uint16_t mid = candidate;
  for (uint32_t i = 0; i < 0x10000 && !SafeMessageId(mid, token); ++i) ++mid;
  return mid;
}

Result<EncodedBootstrapReply, codec::EncodeErrc> EncodeBootstrapReply(
    const BootstrapExchange& exchange, uint16_t non_message_id, std::string_view payload,
    std::span<std::byte> out) noexcept {
  return Encode(exchange, non_message_id, codec::code::kContent, std::nullopt, payload, out);
}

Result<EncodedBootstrapReply, codec::EncodeErrc> EncodeBootstrapBusyReply(
    const BootstrapExchange& exchange, uint16_t non_message_id, uint32_t max_age_s,
    std::span<std::byte> out) noexcept {
  // The same body as the shard's own 5.03s: the reason phrase as text, no Content-Format.
  return Encode(exchange, non_message_id, codec::code::kServiceUnavailable, std::nullopt,
                codec::CodeName(codec::code::kServiceUnavailable), out, max_age_s);
}

Result<EncodedBootstrapReply, codec::EncodeErrc> EncodeBootstrapErrorReply(
    const BootstrapExchange& exchange, uint16_t non_message_id, BootstrapError error,
    std::span<std::byte> out) noexcept {
  return Encode(exchange, non_message_id, BootstrapErrorCode(error), kContentFormatJson,
                BootstrapErrorBody(error), out);
}

}  // namespace coapgate::bootstrap
