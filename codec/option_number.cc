#include "codec/option_number.h"

#include <array>
#include <cstddef>
#include <iterator>

namespace coapgate::codec {
namespace {

// RFC 7252 §5.10 table, plus the elective options of RFC 7641, 7959 (Size2), 7967 and 9175
// so that logs can name them. Sorted by number.
constexpr OptionDefinition kDefinitions[] = {
    {option::kIfMatch, true, 0, 8, "If-Match"},
    {option::kUriHost, false, 1, 255, "Uri-Host"},
    {option::kETag, true, 1, 8, "ETag"},
    {option::kIfNoneMatch, false, 0, 0, "If-None-Match"},
    {option::kObserve, false, 0, 3, "Observe"},
    {option::kUriPort, false, 0, 2, "Uri-Port"},
    {option::kLocationPath, true, 0, 255, "Location-Path"},
    {option::kUriPath, true, 0, 255, "Uri-Path"},
    {option::kContentFormat, false, 0, 2, "Content-Format"},
    {option::kMaxAge, false, 0, 4, "Max-Age"},
    {option::kUriQuery, true, 0, 255, "Uri-Query"},
    {option::kAccept, false, 0, 2, "Accept"},
    {option::kLocationQuery, true, 0, 255, "Location-Query"},
    {option::kSize2, false, 0, 4, "Size2"},
    {option::kProxyUri, false, 1, 1034, "Proxy-Uri"},
    {option::kProxyScheme, false, 1, 255, "Proxy-Scheme"},
    {option::kSize1, false, 0, 4, "Size1"},
    {option::kEcho, false, 1, 40, "Echo"},
    {option::kNoResponse, false, 0, 1, "No-Response"},
    {option::kRequestTag, true, 0, 8, "Request-Tag"},
};

// Index into kDefinitions + 1 for every number below 64 (0 = unrecognized), built at compile
// time: the common options of a request resolve with one load instead of a scan.
constexpr auto kSmallIndex = [] {
  std::array<uint8_t, 64> index{};
  for (size_t i = 0; i < std::size(kDefinitions); ++i) {
    if (kDefinitions[i].number < index.size()) {
      index[kDefinitions[i].number] = static_cast<uint8_t>(i + 1);
    }
  }
  return index;
}();

}  // namespace

const OptionDefinition* FindOptionDefinition(uint16_t number) noexcept {
  if (number < kSmallIndex.size()) {
    const uint8_t i = kSmallIndex[number];
    return i == 0 ? nullptr : &kDefinitions[i - 1];
  }
  for (const OptionDefinition& d : kDefinitions) {
    if (d.number == number) return &d;
  }
  return nullptr;
}

}  // namespace coapgate::codec
