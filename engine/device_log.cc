#include "engine/device_log.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>

#include "codec/code.h"
#include "common/log_fields.h"
#include "common/rate_limiter.h"

namespace coapgate::engine {
namespace {

// One limiter per reason, each on its own cache line: shards refusing for different reasons
// do not contend.
struct alignas(64) ReasonLimiter {
  RateLimiter limiter{kDeviceLogIntervalMs};
};
ReasonLimiter g_limiters[static_cast<size_t>(registry::Reason::kCount)];

// "a.b.c.d:port" or "[v6]:port".
std::string_view FormatAddress(const sockaddr* peer, std::span<char, 64> out) noexcept {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  bool v6 = false;
  if (peer != nullptr && peer->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(peer);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
  } else if (peer != nullptr && peer->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(peer);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
    v6 = true;
  }
  const int n = std::snprintf(out.data(), out.size(), v6 ? "[%s]:%u" : "%s:%u", host, port);
  return {out.data(), n > 0 ? std::min<size_t>(static_cast<size_t>(n), out.size() - 1) : 0};
}

// At most 32 bytes of the identity, printable ASCII kept, everything else '?': a PSK identity
// is the peer's choice, and a log line must stay one line.
std::string_view Printable(std::string_view text, std::span<char, 32> out) noexcept {
  const size_t n = std::min(text.size(), out.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    out[i] = c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
  }
  return {out.data(), n};
}

}  // namespace

void LogRefusal(const sockaddr* peer, std::string_view iccid, uint8_t code, registry::Reason why,
                uint64_t now_ms) noexcept {
  spdlog::logger* logger = spdlog::default_logger_raw();
  spdlog::level::level_enum level = spdlog::level::debug;
  uint64_t suppressed = 0;
  if (!logger->should_log(spdlog::level::debug)) {
    const size_t index = static_cast<size_t>(why);
    if (!logger->should_log(spdlog::level::info) || index >= std::size(g_limiters) ||
        !g_limiters[index].limiter.Allow(now_ms, &suppressed)) {
      return;
    }
    level = spdlog::level::info;
  }
  std::array<char, 64> address_buffer;
  const std::string_view address = FormatAddress(peer, address_buffer);
  std::array<char, 32> iccid_buffer;
  const std::string_view device = Printable(iccid, iccid_buffer);
  const codec::DottedCode dotted = codec::Dotted(code);
  const std::string_view code_text = code == 0 ? std::string_view() : dotted.view();
  std::array<char, 24> suppressed_buffer;
  const auto [end, ec] = std::to_chars(suppressed_buffer.data(),
                                       suppressed_buffer.data() + suppressed_buffer.size(),
                                       suppressed);
  const std::string_view suppressed_text(suppressed_buffer.data(),
                                         ec == std::errc() ? size_t(end - suppressed_buffer.data()) : 0);
  const std::string_view reason = registry::ReasonName(why);

  std::array<LogField, 5> fields;
  size_t n = 0;
  if (!device.empty()) fields[n++] = {"iccid", device};
  fields[n++] = {"addr", address};
  if (!code_text.empty()) fields[n++] = {"code", code_text};
  fields[n++] = {"reason", reason};
  if (suppressed > 0) fields[n++] = {"suppressed", suppressed_text, /*number=*/true};
  ScopedLogFields scope(std::span<const LogField>(fields.data(), n));

  const std::string_view space = device.empty() ? "" : " ";
  const std::string_view more = suppressed > 0 ? " more suppressed)" : "";
  const std::string_view open = suppressed > 0 ? " (" : "";
  if (code == 0) {
    logger->log(level, "device{}{} at {}: DTLS handshake failed: {}{}{}{}", space, device,
                address, reason, open, suppressed > 0 ? suppressed_text : "", more);
  } else {
    logger->log(level, "device{}{} at {}: {} {}: {}{}{}{}", space, device, address, code_text,
                codec::CodeName(code), reason, open, suppressed > 0 ? suppressed_text : "", more);
  }
}

}  // namespace coapgate::engine
