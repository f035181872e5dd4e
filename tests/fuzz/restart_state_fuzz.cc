// libFuzzer target: the restart state's reader (engine/restart_state.h), the one parser that
// takes a whole server's sessions from bytes another process wrote. Seeds in
// corpus/restart_state are states with sessions (IPv4 and IPv6 routes) and exchanges, an
// empty state, and a truncated one.
//
// Findings: crashes, sanitizer reports, and the invariants checked below: a refused state
// visits nothing; an accepted one visits exactly what its counts say, with views inside the
// input; and what the writer makes of the visited records reads back the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "engine/restart_state.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr std::string_view kListeners = "coap: 0.0.0.0:5683 coaps: 0.0.0.0:5684";

using coapgate::fuzz::Check;
using coapgate::fuzz::Inside;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace coapgate::engine;
  const auto input = std::as_bytes(std::span(data, size));
  uint32_t sessions = 0;
  uint32_t exchanges = 0;
  RestartStateWriter rewritten(kListeners);
  RestartStateVisitor visitor;
  visitor.session = [&](const coapgate::dtls::ExportedSession& s) {
    ++sessions;
    Check(Inside(s.state, input));
    Check(Inside(std::as_bytes(std::span(s.identity.data(), s.identity.size())), input));
    Check(!s.identity.empty() && s.identity.size() <= 255 && !s.state.empty());
    rewritten.AddSession(s);
  };
  visitor.exchange = [&](const ExchangeMemory::SavedExchange& e) {
    ++exchanges;
    Check(e.token_length <= 8 && e.remaining_s > 0 && e.device.kind <= 1);
    rewritten.AddExchange(e);
  };
  const auto read = ReadRestartState(input, kListeners, visitor);
  if (!read) {
    Check(sessions == 0 && exchanges == 0);
    Check(!ToString(read.error()).empty());
    return 0;
  }
  Check(read->sessions == sessions && read->exchanges == exchanges);
  // Identities longer than 128 bytes are cut by the writer (no endpoint accepts them), so the
  // round trip is exact only below that.
  const std::string again = rewritten.Finish();
  uint32_t again_sessions = 0;
  const auto reread = ReadRestartState(
      std::as_bytes(std::span(again)), kListeners,
      RestartStateVisitor{[&](const coapgate::dtls::ExportedSession&) { ++again_sessions; }, {}});
  Check(reread.has_value() && reread->sessions == sessions && reread->exchanges == exchanges);
  return 0;
}
