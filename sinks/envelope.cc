#include "sinks/envelope.h"

#include <array>

// The XXH3 state type is only public with XXH_STATIC_LINKING_ONLY; it lets the state live on
// the stack (XXH3_createState would allocate). Its layout is the one of the libxxhash that
// provides the header, which Debian ships as one version (0.8.x; XXH3 output is frozen since
// 0.8.0, so ids stay stable across library upgrades).
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "common/json_writer.h"

namespace coapgate::sinks {
namespace {

// ---- Message id -------------------------------------------------------------------------

// Prepended to the hashed encoding: names the format, so a future v2 can never collide with
// v1 ids by accident.
constexpr std::string_view kMessageIdDomain = "coapgate.MessageId.v1";
constexpr std::string_view kLocationIdDomain = "coapgate.LocationId.v1";
constexpr std::string_view kLifecycleIdDomain = "coapgate.LifecycleId.v1";

// Feeds the encoding to XXH3 without building it in memory.
class IdHasher {
 public:
  IdHasher() noexcept {
    XXH3_INITSTATE(&state_);
    (void)XXH3_128bits_reset(&state_);  // fails only for a null state
  }
  void Raw(const void* data, size_t size) noexcept {
    if (size != 0) (void)XXH3_128bits_update(&state_, data, size);
  }
  // Little-endian regardless of the host, so ids agree across machines.
  void Length(size_t n) noexcept {
    std::array<unsigned char, 8> le;
    for (size_t i = 0; i < le.size(); ++i) {
      le[i] = static_cast<unsigned char>(uint64_t{n} >> (8 * i));
    }
    Raw(le.data(), le.size());
  }
  void Field(const void* data, size_t size) noexcept {
    Length(size);
    Raw(data, size);
  }
  [[nodiscard]] MessageId Digest() const noexcept {
    const XXH128_hash_t h = XXH3_128bits_digest(&state_);
    return {h.high64, h.low64};
  }

 private:
  XXH3_state_t state_;
};

constexpr char kHexDigits[] = "0123456789abcdef";

// ---- Envelope ---------------------------------------------------------------------------

// The fixed text around the fields, shared by the formatter and MaxEnvelopeSize so the two
// cannot disagree.
constexpr std::string_view kIdOpen = "{\"id\":\"";
constexpr std::string_view kAfterId =
    "\",\"type\":\"TELEMETRY_DATA\",\"source\":\"COAP\",\"version\":\"1.0.0\",\"received\":\"";
constexpr std::string_view kIccidOpen = "\",\"device\":{\"iccid\":\"";
constexpr std::string_view kImsiOpen = "\",\"imsi\":\"";
constexpr std::string_view kIpOpen = "\",\"ip\":\"";
constexpr std::string_view kStringPayloadOpen =
    "\"},\"payload\":{\"type\":\"STRING\",\"encoding\":\"base64\",\"value\":\"";
constexpr std::string_view kStringPayloadClose = "\"";
constexpr std::string_view kJsonPayloadOpen = "\"},\"payload\":{\"type\":\"JSON\",\"value\":";
constexpr std::string_view kTopicOpen = ",\"topic\":\"";
constexpr std::string_view kTopicClose = "\"";
constexpr std::string_view kClose = "}}";

}  // namespace

MessageId MakeMessageId(std::string_view iccid, uint16_t message_id,
                        std::span<const std::byte> token, std::string_view topic,
                        std::span<const std::byte> payload) noexcept {
  // Encoding v1: domain | len8 iccid | mid (2 bytes, network order) | len8 token |
  // len8 topic | len8 payload, where len8 is the 8-byte little-endian length followed by the
  // bytes. Every variable field is length-prefixed, so no two input tuples share an encoding.
  IdHasher h;
  h.Raw(kMessageIdDomain.data(), kMessageIdDomain.size());
  h.Field(iccid.data(), iccid.size());
  const std::array<unsigned char, 2> mid = {static_cast<unsigned char>(message_id >> 8),
                                            static_cast<unsigned char>(message_id & 0xff)};
  h.Raw(mid.data(), mid.size());
  h.Field(token.data(), token.size());
  h.Field(topic.data(), topic.size());
  h.Field(payload.data(), payload.size());
  return h.Digest();
}

MessageId MakeLocationId(const MessageId& telemetry) noexcept {
  // Encoding v1: domain | hi | lo, each half 8 bytes little-endian.
  IdHasher h;
  h.Raw(kLocationIdDomain.data(), kLocationIdDomain.size());
  h.Length(telemetry.hi);
  h.Length(telemetry.lo);
  return h.Digest();
}

MessageId MakeLifecycleId(std::string_view iccid) noexcept {
  // Encoding v1: domain | len8 iccid.
  IdHasher h;
  h.Raw(kLifecycleIdDomain.data(), kLifecycleIdDomain.size());
  h.Field(iccid.data(), iccid.size());
  return h.Digest();
}

size_t FormatMessageId(const MessageId& id, char* out) noexcept {
  size_t pos = 0;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) out[pos++] = '-';
    const uint64_t half = i < 16 ? id.hi : id.lo;
    const int shift = 60 - 4 * (i % 16);
    out[pos++] = kHexDigits[(half >> shift) & 0xf];
  }
  return pos;
}

namespace {

void WriteId(JsonWriter& w, const MessageId& id) noexcept {
  const std::span<char> room = w.Reserve(kMessageIdTextLength);
  if (!room.empty()) (void)FormatMessageId(id, room.data());
}

// id, type, source, version, received and the device object up to its last value: the part
// every event shares; `after_id` carries the event's type.
void WriteHead(JsonWriter& w, const EnvelopeFields& f, std::string_view after_id) noexcept {
  w.Literal(kIdOpen);
  WriteId(w, f.id);
  w.Literal(after_id);
  w.Decimal(f.received_ms);
  w.Literal(kIccidOpen);
  w.Escaped(f.iccid);
  if (!f.imsi.empty()) {
    w.Literal(kImsiOpen);
    w.Escaped(f.imsi);
  }
  w.Literal(kIpOpen);
  w.Escaped(f.ip);
}

// The optional topic and the closing braces: how every event ends.
void WriteTail(JsonWriter& w, const EnvelopeFields& f) noexcept {
  if (!f.topic.empty()) {
    w.Literal(kTopicOpen);
    w.Escaped(f.topic);
    w.Literal(kTopicClose);
  }
  w.Literal(kClose);
}

size_t TailSize(const EnvelopeFields& f) noexcept {
  if (f.topic.empty()) return kClose.size();
  return kTopicOpen.size() + JsonEscapedLength(f.topic) + kTopicClose.size() + kClose.size();
}

size_t HeadSize(const EnvelopeFields& f, std::string_view after_id) noexcept {
  size_t n = kIdOpen.size() + kMessageIdTextLength + after_id.size() +
             DecimalLength(f.received_ms) + kIccidOpen.size() + JsonEscapedLength(f.iccid) +
             kIpOpen.size() + JsonEscapedLength(f.ip);
  if (!f.imsi.empty()) n += kImsiOpen.size() + JsonEscapedLength(f.imsi);
  return n;
}

}  // namespace

size_t FormatTelemetryEnvelope(const EnvelopeFields& f, std::span<char> out) noexcept {
  JsonWriter w(out);
  WriteHead(w, f, kAfterId);
  if (f.json_payload.empty()) {
    w.Literal(kStringPayloadOpen);
    w.Base64(f.payload);
    w.Literal(kStringPayloadClose);
  } else {
    w.Literal(kJsonPayloadOpen);
    w.Literal(f.json_payload);
  }
  WriteTail(w, f);
  return w.overflow() ? 0 : w.size();
}

size_t MaxEnvelopeSize(const EnvelopeFields& f) noexcept {
  size_t n = HeadSize(f, kAfterId) + TailSize(f);
  if (f.json_payload.empty()) {
    n += kStringPayloadOpen.size() + Base64Length(f.payload.size()) + kStringPayloadClose.size();
  } else {
    n += kJsonPayloadOpen.size() + f.json_payload.size();
  }
  return n;
}

namespace {

// The ERROR event (reference §5.5): the reference system's members first, then the raw
// payload as in TELEMETRY_DATA, so that a message the Energy Saver could not translate is
// still delivered whole (docs/downstream.md).
constexpr std::string_view kAfterErrorId =
    "\",\"type\":\"ERROR\",\"source\":\"COAP\",\"version\":\"1.0.0\",\"received\":\"";
constexpr std::string_view kErrorOpen = "\"},\"error\":{\"id\":\"";
constexpr std::string_view kErrorMessage =
    "\",\"type\":\"DEVICE\",\"message\":\"Translator[UserPayloadError]\",\"description\":\"";
constexpr std::string_view kErrorClose = "\",\"payloadExists\":true},\"payload\":{";
constexpr std::string_view kRawPayloadOpen =
    "\"type\":\"STRING\",\"encoding\":\"base64\",\"value\":\"";

}  // namespace

size_t FormatErrorEnvelope(const EnvelopeFields& f, std::string_view description,
                           std::span<char> out) noexcept {
  JsonWriter w(out);
  WriteHead(w, f, kAfterErrorId);
  w.Literal(kErrorOpen);
  WriteId(w, f.id);
  w.Literal(kErrorMessage);
  w.Escaped(description);
  w.Literal(kErrorClose);
  w.Literal(kRawPayloadOpen);
  w.Base64(f.payload);
  w.Literal(kStringPayloadClose);
  WriteTail(w, f);
  return w.overflow() ? 0 : w.size();
}

size_t MaxErrorEnvelopeSize(const EnvelopeFields& f, std::string_view description) noexcept {
  size_t n = HeadSize(f, kAfterErrorId) + kErrorOpen.size() + kMessageIdTextLength +
             kErrorMessage.size() + JsonEscapedLength(description) + kErrorClose.size() +
             kRawPayloadOpen.size() + Base64Length(f.payload.size()) +
             kStringPayloadClose.size() + TailSize(f);
  return n;
}

namespace {

// The LOCATION event (reference §6.2): the common head, then what the reference's LOCATION
// carries, a source and the coordinates as strings, longitude first.
constexpr std::string_view kAfterLocationId =
    "\",\"type\":\"LOCATION\",\"source\":\"COAP\",\"version\":\"1.0.0\",\"received\":\"";
constexpr std::string_view kLocationOpen =
    "\"},\"location\":{\"source\":\"GPS\",\"coordinates\":[\"";
constexpr std::string_view kCoordinateSeparator = "\",\"";
constexpr std::string_view kLocationClose = "\"]}}";

}  // namespace

size_t FormatLocationEnvelope(const EnvelopeFields& f, std::string_view longitude,
                              std::string_view latitude, std::span<char> out) noexcept {
  JsonWriter w(out);
  WriteHead(w, f, kAfterLocationId);
  w.Literal(kLocationOpen);
  w.Escaped(longitude);
  w.Literal(kCoordinateSeparator);
  w.Escaped(latitude);
  w.Literal(kLocationClose);
  return w.overflow() ? 0 : w.size();
}

size_t MaxLocationEnvelopeSize(const EnvelopeFields& f, std::string_view longitude,
                               std::string_view latitude) noexcept {
  return HeadSize(f, kAfterLocationId) + kLocationOpen.size() + JsonEscapedLength(longitude) +
         kCoordinateSeparator.size() + JsonEscapedLength(latitude) + kLocationClose.size();
}

namespace {

// The LIFECYCLE event (reference §6.2): the reference's members, no "source" (an event about
// the device, not about one of its messages), then the lifecycle object.
constexpr std::string_view kAfterLifecycleId =
    "\",\"type\":\"LIFECYCLE\",\"version\":\"1.0.0\",\"received\":\"";
constexpr std::string_view kLifecycleOpen =
    "\"},\"lifecycle\":{\"type\":\"DEVICE_FIRST_TIME_REGISTERED\",\"message\":\""
    "New Device successfully registered for the first time - ";
constexpr std::string_view kLifecycleClose = "\"}}";

}  // namespace

size_t FormatLifecycleEnvelope(const EnvelopeFields& f, std::span<char> out) noexcept {
  JsonWriter w(out);
  WriteHead(w, f, kAfterLifecycleId);
  w.Literal(kLifecycleOpen);
  w.Escaped(f.iccid);
  w.Literal(kLifecycleClose);
  return w.overflow() ? 0 : w.size();
}

size_t MaxLifecycleEnvelopeSize(const EnvelopeFields& f) noexcept {
  return HeadSize(f, kAfterLifecycleId) + kLifecycleOpen.size() + JsonEscapedLength(f.iccid) +
         kLifecycleClose.size();
}

}  // namespace coapgate::sinks
