// The data-plane contract "no allocation per message", asserted: this binary links the
// counting operator new (tests/support/allocation_counter.h) and runs a typical device POST
// and the replies through every codec entry point.
#include <gtest/gtest.h>

#include <array>

#include "codec/code.h"
#include "codec/encoder.h"
#include "codec/option_iterator.h"
#include "codec/triage.h"
#include "tests/support/allocation_counter.h"
#include "tests/support/message_builder.h"

namespace {
void* volatile g_escape = nullptr;  // keeps the compiler from eliding the probe allocation
}  // namespace

namespace coapgate::codec {
namespace {

TEST(Allocation, CodecHotPathAllocatesNothing) {
  const auto request = test::MessageBuilder()
                           .Token({std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}})
                           .Query("t=sensors/temp")
                           .Payload("{\"t\":21.5,\"h\":40,\"b\":3.71,\"seq\":123456}")
                           .Build();
  const auto bad = test::MessageBuilder().Option(9, "").Build();
  std::array<std::byte, 256> out{};
  const TriageLimits limits;

  const long before = test::AllocationCount();
  size_t sink = 0;
  for (int i = 0; i < 1000; ++i) {
    const Triage t = TriageDatagram(request, limits);
    sink += t.request.topic.size();
    for (const OptionView& o : Options(t.message)) sink += o.value.size();
    auto ack = EncodeMessage(ResponseTo(t.message, code::kChanged, 1), out);
    sink += ack ? *ack : 0;
    const Triage rejected = TriageDatagram(bad, limits);
    auto reply = EncodeTriageReply(rejected, limits, 1, out);
    sink += reply ? *reply : 0;
    auto rst = EncodeReset(7, out);
    sink += rst ? *rst : 0;
  }
  const long after = test::AllocationCount();
  EXPECT_GT(sink, 0u);
  EXPECT_EQ(after - before, 0) << "allocations on the codec's hot path";
}

TEST(Allocation, CounterSeesAllocations) {
  // Guards the test above against a counter that cannot count.
  const long before = test::AllocationCount();
  auto* p = new std::array<char, 64>();
  g_escape = p;
  delete p;
  EXPECT_EQ(test::AllocationCount() - before, 1);
}

}  // namespace
}  // namespace coapgate::codec
