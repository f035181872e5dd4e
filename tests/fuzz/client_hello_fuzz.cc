// libFuzzer target: the DTLS pre-filter, everything the endpoint does with an unauthenticated
// datagram before any per-peer state exists (catalogue §3.8, target 4): record header →
// ClientHello parse → cookie check → HelloVerifyRequest. Seeds in corpus/client_hello are
// ClientHellos with and without extensions and cookies, a fragment, a DTLS 1.0 hello and a
// real wolfSSL client's first flight.
//
// Findings: crashes, sanitizer reports, and the invariants checked below (views inside the
// input, a cookieless hello is kMissing, a forged cookie never verifies, the HVR is exactly
// 60 bytes, parses back, and is smaller than the hello that asked for it).
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "dtls/client_hello.h"
#include "dtls/cookie.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using coapgate::fuzz::Check;
using coapgate::fuzz::Inside;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace coapgate::dtls;
  const std::span<const std::byte> d(reinterpret_cast<const std::byte*>(data), size);

  auto record = ParseRecordHeader(d);
  if (record) Check(kRecordHeaderSize + record->length <= d.size());

  auto hello = ParseClientHello(d);
  if (!hello) return 0;
  Check(record.has_value());
  Check(StartsWithClientHello(d));
  Check(hello->random.size() == kRandomSize);
  Check(hello->version.size() == 2);
  Check(hello->session_id.size() <= kMaxSessionIdSize);
  Check(!hello->cipher_suites.empty() && hello->cipher_suites.size() % 2 == 0);
  Check(!hello->compression_methods.empty());
  Check(hello->has_extensions || hello->extensions.empty());
  for (auto part : {hello->version, hello->random, hello->session_id, hello->cookie,
                    hello->cipher_suites, hello->compression_methods, hello->extensions}) {
    Check(Inside(part, d));
  }

  // A fixed secret and peer: the fuzzer cannot produce a valid cookie by chance.
  CookieSecret secret;
  secret.fill(std::byte{0x42});
  const std::array<std::byte, 24> peer{};
  CookieSecrets secrets(secret, 60000, 0);
  const CookieVerdict verdict = secrets.Check(peer, *hello);
  Check(hello->cookie.empty() ? verdict == CookieVerdict::kMissing
                              : verdict == CookieVerdict::kInvalid);

  Cookie cookie;
  Check(secrets.Mint(peer, *hello, &cookie));
  std::array<std::byte, kHelloVerifyRequestSize> out;
  auto n = BuildHelloVerifyRequest(*hello, cookie, out);
  Check(n.has_value() && *n == kHelloVerifyRequestSize);
  Check(*n < kRecordHeaderSize + record->length);  // never an amplifier
  auto hvr = ParseRecordHeader(std::span<const std::byte>(out.data(), *n));
  Check(hvr.has_value() && hvr->type == ContentType::kHandshake &&
        hvr->sequence == hello->record.sequence && hvr->epoch == 0);
  return 0;
}
