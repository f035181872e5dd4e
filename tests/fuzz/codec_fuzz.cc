// libFuzzer target: datagram → ParseMessage → options → DecodeRequest → TriageDatagram →
// reply encoding, the path every received datagram takes (libcoap's pdu_parse_udp_target
// exercises parse → accessors → encode the same way). Crashes, sanitizer reports and the
// invariant checks below are findings; add each one to corpus/codec as a named regression.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "codec/code.h"
#include "codec/encoder.h"
#include "codec/option_iterator.h"
#include "codec/triage.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace coapgate::codec;
  const std::span<const std::byte> d(reinterpret_cast<const std::byte*>(data), size);

  if (auto m = ParseMessage(d)) {
    size_t total = 0;
    for (const OptionView& o : Options(*m)) {
      total += o.value.size() + o.AsString().size();
      (void)o.AsUint();
    }
    Check(total <= 2 * m->options.size());
    if (IsRequestCode(m->code)) {
      if (auto r = DecodeRequest(*m)) {
        Check(r->topic_status != TopicStatus::kValid || !r->topic.empty());
      }
      ForEachQuery(*m, [&](const QueryParam& q) { total += q.key.size() + q.value.size(); });
    }
    // Echo the request back as a response carrying every option kind we encode.
    std::array<std::byte, 1600> out;
    OutgoingMessage reply = ResponseTo(*m, code::kContent, 1);
    reply.max_age = static_cast<uint32_t>(size);
    reply.size1 = 1024;
    reply.payload = m->payload;
    auto n = EncodeMessage(reply, out);
    Check(n.has_value());
    auto again = ParseMessage(std::span(out).first(*n));
    Check(again.has_value() && again->payload.size() == m->payload.size());
  }

  const TriageLimits limits;
  const Triage t = TriageDatagram(d, limits);
  std::array<std::byte, 128> out;
  auto n = EncodeTriageReply(t, limits, 0x4242, out);
  Check(n.has_value());
  if (*n > 0) Check(ParseMessage(std::span(out).first(*n)).has_value());
  return 0;
}
