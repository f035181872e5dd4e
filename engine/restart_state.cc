#include "engine/restart_state.h"

#include <netinet/in.h>

#include <cstring>

#include "common/check.h"

namespace coapgate::engine {
namespace {

constexpr char kMagic[4] = {'C', 'G', 'R', 'S'};
constexpr size_t kHeaderSize = 8;
constexpr size_t kRecordHeaderSize = 5;

enum RecordType : uint8_t {
  kListeners = 1,  // body: the listeners string; exactly once, first
  kSession = 2,    // body: see SessionBody below
  kExchange = 3,   // body: kExchangeBodySize bytes, see AddExchange
  kEnd = 0xff,     // body: sessions u32, exchanges u32; last
};

// Session body: socket u16 | family u8 (4 or 6) | port u16 | address[16] | scope u32 |
// local family u8 (0, 4 or 6) | local ifindex u32 | local address[16] | idle_ms u64 |
// identity length u8 | identity | state length u16 | state.
constexpr size_t kSessionFixedSize = 2 + 1 + 2 + 16 + 4 + 1 + 4 + 16 + 8 + 1 + 2;
// Exchange body: kind u8 | key[16] | message id u16 | confirmable u8 | token length u8 |
// token[8] (zero-padded) | response code u8 | response type u8 | response message id u16 |
// max age u16 | remaining s u32.
constexpr size_t kExchangeBodySize = 1 + 16 + 2 + 1 + 1 + 8 + 1 + 1 + 2 + 2 + 4;
static_assert(codec::kMaxTokenLength == 8);
constexpr size_t kMaxIdentity = 128;
constexpr size_t kMaxSessionState = 4096;  // wolfSSL 5.5.4 exports at most 514 bytes

void Put(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}
void PutBytes(std::string& out, const void* data, size_t size) {
  out.append(static_cast<const char*>(data), size);
}

uint8_t FamilyCode(sa_family_t family) {
  return family == AF_INET ? 4 : family == AF_INET6 ? 6 : 0;
}

// A bounds-checked cursor over one record body: every read past the end sets `bad`.
struct Cursor {
  std::span<const std::byte> rest;
  bool bad = false;

  uint64_t Get(int bytes) noexcept {
    if (rest.size() < static_cast<size_t>(bytes)) {
      bad = true;
      rest = {};
      return 0;
    }
    uint64_t value = 0;
    for (int i = 0; i < bytes; ++i) value |= uint64_t{static_cast<uint8_t>(rest[i])} << (8 * i);
    rest = rest.subspan(static_cast<size_t>(bytes));
    return value;
  }
  std::span<const std::byte> Bytes(size_t n) noexcept {
    if (rest.size() < n) {
      bad = true;
      rest = {};
      return {};
    }
    auto out = rest.first(n);
    rest = rest.subspan(n);
    return out;
  }
};

bool ParseSession(std::span<const std::byte> body, dtls::ExportedSession* out) noexcept {
  Cursor c{body};
  dtls::ExportedSession s;
  s.route.socket = static_cast<uint16_t>(c.Get(2));
  const auto family = static_cast<uint8_t>(c.Get(1));
  const auto port = static_cast<uint16_t>(c.Get(2));
  const auto address = c.Bytes(16);
  const auto scope = static_cast<uint32_t>(c.Get(4));
  const auto local_family = static_cast<uint8_t>(c.Get(1));
  s.route.local.ifindex = static_cast<uint32_t>(c.Get(4));
  const auto local_address = c.Bytes(16);
  s.idle_ms = c.Get(8);
  const auto identity = c.Bytes(static_cast<size_t>(c.Get(1)));
  s.state = c.Bytes(static_cast<size_t>(c.Get(2)));
  if (c.bad || !c.rest.empty() || identity.empty() || s.state.empty()) return false;
  if (family == 4) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    std::memcpy(&in.sin_addr, address.data(), 4);
    std::memcpy(&s.route.address, &in, sizeof in);
    s.route.length = sizeof in;
  } else if (family == 6) {
    s.route.address.sin6_family = AF_INET6;
    s.route.address.sin6_port = htons(port);
    std::memcpy(&s.route.address.sin6_addr, address.data(), 16);
    s.route.address.sin6_scope_id = scope;
    s.route.length = sizeof(sockaddr_in6);
  } else {
    return false;
  }
  if (local_family == 4) {
    s.route.local.family = AF_INET;
  } else if (local_family == 6) {
    s.route.local.family = AF_INET6;
  } else if (local_family != 0) {
    return false;
  }
  std::memcpy(s.route.local.address.data(), local_address.data(), 16);
  s.identity = std::string_view(reinterpret_cast<const char*>(identity.data()), identity.size());
  *out = s;
  return true;
}

bool ParseExchange(std::span<const std::byte> body, ExchangeMemory::SavedExchange* out) noexcept {
  if (body.size() != kExchangeBodySize) return false;
  Cursor c{body};
  ExchangeMemory::SavedExchange e{};
  e.device.kind = static_cast<uint8_t>(c.Get(1));
  std::memcpy(e.device.bytes.data(), c.Bytes(16).data(), 16);
  e.message_id = static_cast<uint16_t>(c.Get(2));
  const auto confirmable = c.Get(1);
  e.token_length = static_cast<uint8_t>(c.Get(1));
  std::memcpy(e.token.data(), c.Bytes(8).data(), 8);
  e.response_code = static_cast<uint8_t>(c.Get(1));
  e.response_type = static_cast<uint8_t>(c.Get(1));
  e.response_message_id = static_cast<uint16_t>(c.Get(2));
  e.max_age = static_cast<uint16_t>(c.Get(2));
  e.remaining_s = static_cast<uint32_t>(c.Get(4));
  if (e.device.kind > DeviceKey::kDtls || confirmable > 1 ||
      e.token_length > codec::kMaxTokenLength || e.response_type > 3 || e.remaining_s == 0) {
    return false;
  }
  e.confirmable = confirmable == 1;
  *out = e;
  return true;
}

// One pass over the whole input; visits only when `visitor` is given.
Result<RestartStateCounts, StateRefusal> Walk(std::span<const std::byte> bytes,
                                              std::string_view listeners,
                                              const RestartStateVisitor* visitor) noexcept {
  if (bytes.size() < 4 || std::memcmp(bytes.data(), kMagic, 4) != 0) {
    return Fail(StateRefusal::kBadMagic);
  }
  if (bytes.size() < kHeaderSize) return Fail(StateRefusal::kTruncated);
  Cursor header{bytes.subspan(4, 4)};
  const auto version = header.Get(2);
  const auto reserved = header.Get(2);
  if (version != kRestartStateVersion) return Fail(StateRefusal::kUnknownVersion);
  if (reserved != 0) return Fail(StateRefusal::kMalformed);
  Cursor c{bytes.subspan(kHeaderSize)};
  RestartStateCounts seen;
  bool listeners_seen = false;
  while (!c.rest.empty()) {
    if (c.rest.size() < kRecordHeaderSize) return Fail(StateRefusal::kTruncated);
    const auto type = static_cast<uint8_t>(c.Get(1));
    const auto length = c.Get(4);
    if (length > c.rest.size()) return Fail(StateRefusal::kTruncated);
    const std::span<const std::byte> body = c.Bytes(static_cast<size_t>(length));
    if (!listeners_seen && type != kListeners) return Fail(StateRefusal::kMalformed);
    switch (type) {
      case kListeners:
        if (listeners_seen) return Fail(StateRefusal::kMalformed);
        listeners_seen = true;
        if (std::string_view(reinterpret_cast<const char*>(body.data()), body.size()) !=
            listeners) {
          return Fail(StateRefusal::kListenersChanged);
        }
        break;
      case kSession: {
        dtls::ExportedSession session;
        if (!ParseSession(body, &session)) return Fail(StateRefusal::kMalformed);
        ++seen.sessions;
        if (visitor != nullptr && visitor->session) visitor->session(session);
        break;
      }
      case kExchange: {
        ExchangeMemory::SavedExchange exchange;
        if (!ParseExchange(body, &exchange)) return Fail(StateRefusal::kMalformed);
        ++seen.exchanges;
        if (visitor != nullptr && visitor->exchange) visitor->exchange(exchange);
        break;
      }
      case kEnd: {
        Cursor end{body};
        const auto sessions = end.Get(4);
        const auto exchanges = end.Get(4);
        // The end record is last, and its counts match: nothing between records went missing.
        if (end.bad || !end.rest.empty() || !c.rest.empty() || sessions != seen.sessions ||
            exchanges != seen.exchanges) {
          return Fail(StateRefusal::kMalformed);
        }
        return seen;
      }
      default:
        return Fail(StateRefusal::kMalformed);
    }
  }
  return Fail(StateRefusal::kTruncated);
}

}  // namespace

std::string_view ToString(StateRefusal why) noexcept {
  switch (why) {
    case StateRefusal::kBadMagic: return "bad_magic";
    case StateRefusal::kUnknownVersion: return "unknown_version";
    case StateRefusal::kTruncated: return "truncated";
    case StateRefusal::kMalformed: return "malformed";
    case StateRefusal::kListenersChanged: return "listeners_changed";
    case StateRefusal::kTooOld: return "too_old";
    case StateRefusal::kBadKeyOrCorrupt: return "bad_key_or_corrupt";
    case StateRefusal::kUnreadable: return "unreadable";
  }
  return "unknown";
}

RestartStateWriter::RestartStateWriter(std::string_view listeners) {
  CHECK(listeners.size() <= 65535, "a listeners string fits a record");
  PutBytes(out_, kMagic, 4);
  Put(out_, kRestartStateVersion, 2);
  Put(out_, 0, 2);
  BeginRecord(kListeners, listeners.size());
  PutBytes(out_, listeners.data(), listeners.size());
}

void RestartStateWriter::BeginRecord(uint8_t type, size_t length) {
  Put(out_, type, 1);
  Put(out_, length, 4);
}

void RestartStateWriter::AddSession(const dtls::ExportedSession& s) {
  const size_t identity = std::min(s.identity.size(), kMaxIdentity);
  CHECK(!s.state.empty() && s.state.size() <= kMaxSessionState, "a wolfSSL export fits");
  BeginRecord(kSession, kSessionFixedSize + identity + s.state.size());
  Put(out_, s.route.socket, 2);
  std::array<uint8_t, 16> address{};
  uint16_t port = 0;
  uint32_t scope = 0;
  const sa_family_t family = s.route.address.sin6_family;
  if (family == AF_INET) {
    sockaddr_in in;
    std::memcpy(&in, &s.route.address, sizeof in);
    std::memcpy(address.data(), &in.sin_addr, 4);
    port = ntohs(in.sin_port);
  } else {
    std::memcpy(address.data(), &s.route.address.sin6_addr, 16);
    port = ntohs(s.route.address.sin6_port);
    scope = s.route.address.sin6_scope_id;
  }
  Put(out_, FamilyCode(family), 1);
  Put(out_, port, 2);
  PutBytes(out_, address.data(), 16);
  Put(out_, scope, 4);
  Put(out_, FamilyCode(s.route.local.family), 1);
  Put(out_, s.route.local.ifindex, 4);
  PutBytes(out_, s.route.local.address.data(), 16);
  Put(out_, s.idle_ms, 8);
  Put(out_, identity, 1);
  PutBytes(out_, s.identity.data(), identity);
  Put(out_, s.state.size(), 2);
  PutBytes(out_, s.state.data(), s.state.size());
  ++sessions_;
}

void RestartStateWriter::AddExchange(const ExchangeMemory::SavedExchange& e) {
  BeginRecord(kExchange, kExchangeBodySize);
  Put(out_, e.device.kind, 1);
  PutBytes(out_, e.device.bytes.data(), 16);
  Put(out_, e.message_id, 2);
  Put(out_, e.confirmable ? 1 : 0, 1);
  Put(out_, e.token_length, 1);
  std::array<std::byte, 8> token{};
  std::memcpy(token.data(), e.token.data(), std::min<size_t>(e.token_length, 8));
  PutBytes(out_, token.data(), 8);
  Put(out_, e.response_code, 1);
  Put(out_, e.response_type, 1);
  Put(out_, e.response_message_id, 2);
  Put(out_, e.max_age, 2);
  Put(out_, e.remaining_s, 4);
  ++exchanges_;
}

std::string RestartStateWriter::Take() { return std::exchange(out_, std::string()); }

std::string RestartStateWriter::Finish() {
  BeginRecord(kEnd, 8);
  Put(out_, sessions_, 4);
  Put(out_, exchanges_, 4);
  return Take();
}

Result<RestartStateCounts, StateRefusal> ReadRestartState(std::span<const std::byte> bytes,
                                                          std::string_view listeners,
                                                          const RestartStateVisitor& visitor) {
  auto checked = Walk(bytes, listeners, nullptr);
  if (!checked) return checked;
  return Walk(bytes, listeners, &visitor);
}

}  // namespace coapgate::engine
