// libFuzzer target: Energy Saver template compile → translate. Input layout: a 2-byte
// big-endian template length L, then L bytes of template JSON, then the payload (a shorter
// input is a template with no payload). Seeds in corpus/energy_saver are the reference
// templates with their test-vector payloads (1nce-coap-endpoint.md §5.6).
//
// Findings: crashes, sanitizer reports, and the invariants checked below (the translator's
// output is one valid JSON object that fits Program::MaxOutputSize; a too-small buffer is
// reported, never overrun; compile errors are one line).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "energy_saver/template_program.h"
#include "energy_saver/translator.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace coapgate::energysaver;
  if (size < 2) return 0;
  const size_t declared = static_cast<size_t>(data[0]) << 8 | data[1];
  const size_t template_size = std::min(declared, size - 2);
  const std::string_view text(reinterpret_cast<const char*>(data + 2), template_size);
  const std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(data + 2 + template_size),
                                           size - 2 - template_size);

  auto program = CompileTemplate(text);
  if (!program) {
    Check(!program.error().empty() && program.error().find('\n') == std::string::npos);
    return 0;
  }
  Translator translator(*program);
  std::vector<char> out((*program)->MaxOutputSize(payload.size()));
  auto r = translator.Translate(payload, out);
  if (!r) {
    Check(r.error().code == TranslateErrc::kCannotExtract);
    std::array<char, 4096> text_out;
    Check(FormatError(r.error(), text_out) != 0);
    return 0;
  }
  const std::string_view json(out.data(), *r);
  Check(json.size() >= 2 && json.front() == '{' && json.back() == '}');
  Check(!nlohmann::json::parse(json, nullptr, false).is_discarded());

  // Every shorter buffer fails cleanly without touching the bytes past its end.
  constexpr char kGuard = '\x5a';
  const size_t shorter = *r / 2;
  std::vector<char> small(shorter + 8, kGuard);
  auto s = translator.Translate(payload, std::span<char>(small.data(), shorter));
  Check(!s && s.error().code == TranslateErrc::kOutputTooSmall);
  Check(std::all_of(small.begin() + static_cast<std::ptrdiff_t>(shorter), small.end(),
                    [](char c) { return c == kGuard; }));
  // Same input, same output: the scratch carries nothing between translations.
  auto again = translator.Translate(payload, out);
  Check(again && *again == *r);
  return 0;
}
