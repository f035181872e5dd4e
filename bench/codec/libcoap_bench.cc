// The same device POST through libcoap's own parser (Debian libcoap3, coap_pdu_parse plus a
// Uri-Query lookup), in the same binary and run as codec_bench.cc: the yardstick that makes
// coapgate's codec numbers a ratio rather than a machine-dependent absolute. libcoap copies
// the datagram into its PDU and validates the options; it does not judge them (no 4.02
// rules, no topic check), so BM_TriageDevicePost does strictly more work than this.
#include <benchmark/benchmark.h>
#include <coap3/coap.h>

#include <cstdlib>
#include <vector>

#include "bench/codec/device_post.h"

namespace coapgate::codec {
namespace {

void BM_LibcoapParseDevicePost(benchmark::State& state) {
  coap_startup();
  coap_set_log_level(LOG_EMERG);
  const auto d = DevicePost(static_cast<size_t>(state.range(0)));
  coap_pdu_t* pdu = coap_pdu_init(COAP_MESSAGE_CON, COAP_REQUEST_CODE_POST, 0, 1500);
  const auto* bytes = reinterpret_cast<const uint8_t*>(d.data());
  RunCounted(state, [&] {
    if (!coap_pdu_parse(COAP_PROTO_UDP, bytes, d.size(), pdu)) std::abort();
    coap_opt_iterator_t it;
    coap_opt_t* query = coap_check_option(pdu, COAP_OPTION_URI_QUERY, &it);
    size_t length = 0;
    const uint8_t* data = nullptr;
    if (query == nullptr || !coap_get_data(pdu, &length, &data)) std::abort();
    benchmark::DoNotOptimize(coap_opt_value(query));
    benchmark::DoNotOptimize(data);
  });
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * d.size()));
  coap_delete_pdu(pdu);
}
BENCHMARK(BM_LibcoapParseDevicePost)->Arg(32)->Arg(64);

}  // namespace
}  // namespace coapgate::codec
