// The restart state's envelope (engine/restart_state.h) and its encrypted file
// (engine/state_file.h): round trips, and every refusal with its reason.
#include "engine/restart_state.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/state_file.h"
#include "tests/support/dtls_test_client.h"

namespace coapgate::engine {
namespace {

constexpr std::string_view kListeners = "coap: 0.0.0.0:5683 coaps: 0.0.0.0:5684";

dtls::Route RouteV4(uint32_t ip, uint16_t port, uint16_t socket) {
  dtls::Route r = test::Ipv4Route(ip, port, socket);
  r.local.family = AF_INET;
  r.local.ifindex = 3;
  r.local.address = {192, 0, 2, 1};
  return r;
}

struct Saved {
  std::vector<dtls::ExportedSession> sessions;
  std::vector<std::string> identities;  // backing the sessions' views
  std::vector<std::vector<std::byte>> states;
  std::vector<ExchangeMemory::SavedExchange> exchanges;
};

std::span<const std::byte> AsBytes(const std::string& s) { return std::as_bytes(std::span(s)); }

Result<RestartStateCounts, StateRefusal> Read(const std::string& bytes, Saved* out,
                                              std::string_view listeners = kListeners) {
  RestartStateVisitor visitor;
  out->identities.reserve(16);
  out->states.reserve(16);
  visitor.session = [&](const dtls::ExportedSession& s) {
    out->identities.emplace_back(s.identity);
    out->states.emplace_back(s.state.begin(), s.state.end());
    dtls::ExportedSession copy = s;
    copy.identity = out->identities.back();
    copy.state = out->states.back();
    out->sessions.push_back(copy);
  };
  visitor.exchange = [&](const ExchangeMemory::SavedExchange& e) { out->exchanges.push_back(e); };
  return ReadRestartState(AsBytes(bytes), listeners, visitor);
}

ExchangeMemory::SavedExchange Exchange(uint16_t mid, uint8_t kind) {
  ExchangeMemory::SavedExchange e{};
  e.device.kind = kind;
  e.device.bytes = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 7};
  e.message_id = mid;
  e.confirmable = true;
  e.token_length = 4;
  e.token = {std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
  e.response_code = 0x44;  // 2.04
  e.response_type = 2;     // ACK
  e.response_message_id = mid;
  e.max_age = 0;
  e.remaining_s = 200;
  return e;
}

std::string SampleState() {
  RestartStateWriter w(kListeners);
  const std::vector<std::byte> state(300, std::byte{0x5a});
  w.AddSession({RouteV4(0x0a000001, 40001, 1), "8988280666000002864", 1234, state});
  w.AddExchange(Exchange(7, DeviceKey::kPlain));
  w.AddExchange(Exchange(8, DeviceKey::kDtls));
  return w.Finish();
}

TEST(RestartState, RoundTrip) {
  RestartStateWriter w(kListeners);
  const std::vector<std::byte> state(300, std::byte{0x5a});
  dtls::Route v6;
  v6.address.sin6_family = AF_INET6;
  v6.address.sin6_port = htons(5555);
  v6.address.sin6_addr.s6_addr[15] = 1;
  v6.address.sin6_scope_id = 2;
  v6.length = sizeof(sockaddr_in6);
  v6.socket = 3;
  w.AddSession({RouteV4(0x0a000001, 40001, 1), "8988280666000002864", 1234, state});
  w.AddSession({v6, std::string(128, 'i'), 0, std::span(state).first(10)});
  std::string bytes = w.Take();  // a stream may take what is written so far
  w.AddExchange(Exchange(7, DeviceKey::kPlain));
  w.AddExchange(Exchange(8, DeviceKey::kDtls));
  bytes += w.Finish();

  Saved got;
  auto counts = Read(bytes, &got);
  ASSERT_TRUE(counts) << ToString(counts.error());
  EXPECT_EQ(counts->sessions, 2u);
  EXPECT_EQ(counts->exchanges, 2u);
  ASSERT_EQ(got.sessions.size(), 2u);
  const dtls::ExportedSession& a = got.sessions[0];
  EXPECT_EQ(a.identity, "8988280666000002864");
  EXPECT_EQ(a.idle_ms, 1234u);
  EXPECT_EQ(a.route.socket, 1);
  EXPECT_EQ(a.route.length, sizeof(sockaddr_in));
  const dtls::Route expected = RouteV4(0x0a000001, 40001, 1);
  EXPECT_EQ(std::memcmp(&a.route.address, &expected.address, sizeof(sockaddr_in)), 0);
  EXPECT_EQ(a.route.local.family, AF_INET);
  EXPECT_EQ(a.route.local.ifindex, 3u);
  EXPECT_EQ(a.route.local.address, expected.local.address);
  EXPECT_TRUE(std::equal(a.state.begin(), a.state.end(), state.begin(), state.end()));
  const dtls::ExportedSession& b = got.sessions[1];
  EXPECT_EQ(b.identity, std::string(128, 'i'));
  EXPECT_EQ(b.route.address.sin6_family, AF_INET6);
  EXPECT_EQ(ntohs(b.route.address.sin6_port), 5555);
  EXPECT_EQ(b.route.address.sin6_scope_id, 2u);
  EXPECT_EQ(b.route.address.sin6_addr.s6_addr[15], 1);
  EXPECT_EQ(b.route.local.family, 0);
  EXPECT_EQ(b.state.size(), 10u);
  ASSERT_EQ(got.exchanges.size(), 2u);
  const ExchangeMemory::SavedExchange want = Exchange(7, DeviceKey::kPlain);
  const ExchangeMemory::SavedExchange& e = got.exchanges[0];
  EXPECT_EQ(e.device, want.device);
  EXPECT_EQ(e.message_id, 7);
  EXPECT_TRUE(e.confirmable);
  EXPECT_EQ(e.token_length, 4);
  EXPECT_EQ(e.token, want.token);
  EXPECT_EQ(e.response_code, 0x44);
  EXPECT_EQ(e.response_type, 2);
  EXPECT_EQ(e.response_message_id, 7);
  EXPECT_EQ(e.remaining_s, 200u);
  EXPECT_EQ(got.exchanges[1].device.kind, DeviceKey::kDtls);
}

TEST(RestartState, EmptyStateIsValid) {
  Saved got;
  auto counts = Read(RestartStateWriter(kListeners).Finish(), &got);
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->sessions + counts->exchanges, 0u);
}

TEST(RestartState, RefusesWithAReason) {
  const std::string good = SampleState();
  auto refusal = [](const std::string& bytes, std::string_view listeners = kListeners) {
    Saved got;
    auto r = Read(bytes, &got, listeners);
    if (!r) {
      EXPECT_TRUE(got.sessions.empty() && got.exchanges.empty()) << "a refused state visits nothing";
    }
    return r ? std::string("accepted") : std::string(ToString(r.error()));
  };
  EXPECT_EQ(refusal(""), "bad_magic");
  EXPECT_EQ(refusal("XGRS" + good.substr(4)), "bad_magic");
  std::string v2 = good;
  v2[4] = 2;
  EXPECT_EQ(refusal(v2), "unknown_version");
  EXPECT_EQ(refusal(good, "coap: 0.0.0.0:5683"), "listeners_changed");
  // Cut anywhere: never accepted; cut between records: truncated (no end record).
  for (size_t n = 4; n < good.size(); ++n) {
    const std::string why = refusal(good.substr(0, n));
    EXPECT_TRUE(why == "truncated" || why == "malformed") << n << ": " << why;
  }
  EXPECT_EQ(refusal(good.substr(0, good.size() - 13)), "truncated");  // the end record gone
  EXPECT_EQ(refusal(good + "x"), "malformed");                        // bytes after the end
  std::string unknown_type = good;
  const size_t first_record = 8 + 5 + kListeners.size();
  unknown_type[first_record] = 9;
  EXPECT_EQ(refusal(unknown_type), "malformed");
  // An end record whose counts disagree: a record went missing in between.
  std::string miscounted = good;
  miscounted[miscounted.size() - 1 - 4 - 3] ^= 1;
  EXPECT_EQ(refusal(miscounted), "malformed");
  // Every single-byte change of a record body is refused or read back as a valid state
  // (bytes of the wolfSSL blob are only judged by wolfSSL): the reader never crashes.
  for (size_t i = 0; i < good.size(); ++i) {
    std::string flipped = good;
    flipped[i] = static_cast<char>(flipped[i] ^ 0xff);
    (void)refusal(flipped);
  }
}

TEST(RestartState, RefusesBadRecordValues) {
  auto with_exchange = [](ExchangeMemory::SavedExchange e) {
    RestartStateWriter w(kListeners);
    w.AddExchange(e);
    return w.Finish();
  };
  Saved got;
  auto bad_kind = Exchange(1, 2);
  EXPECT_EQ(Read(with_exchange(bad_kind), &got).error(), StateRefusal::kMalformed);
  auto no_lifetime = Exchange(1, DeviceKey::kPlain);
  no_lifetime.remaining_s = 0;
  EXPECT_EQ(Read(with_exchange(no_lifetime), &got).error(), StateRefusal::kMalformed);
  auto long_token = Exchange(1, DeviceKey::kPlain);
  long_token.token_length = 9;
  EXPECT_EQ(Read(with_exchange(long_token), &got).error(), StateRefusal::kMalformed);
}

// ---- The encrypted file ---------------------------------------------------------------------

StateKey Key(uint8_t fill) {
  StateKey key;
  key.fill(std::byte{fill});
  return key;
}

TEST(StateFile, ParsesTheKeyFile) {
  auto key = ParseStateKey(std::string(64, 'a') + "\n");
  ASSERT_TRUE(key);
  EXPECT_EQ((*key)[0], std::byte{0xaa});
  EXPECT_FALSE(ParseStateKey(std::string(62, 'a')));
  EXPECT_FALSE(ParseStateKey(std::string(63, 'a') + "g"));
  EXPECT_FALSE(ParseStateKey(""));
}

TEST(StateFile, SealOpenRoundTrip) {
  const std::string plaintext = SampleState();
  const std::string sealed = SealState(Key(1), plaintext, 1'000'000);
  ASSERT_FALSE(sealed.empty());
  EXPECT_EQ(sealed.find(plaintext.substr(8, 40)), std::string::npos) << "not in the clear";
  auto opened = OpenState(Key(1), AsBytes(sealed), 1'000'000 + 5'000, 600);
  ASSERT_TRUE(opened) << ToString(opened.error());
  EXPECT_EQ(opened->plaintext, plaintext);
  EXPECT_EQ(opened->created_unix_ms, 1'000'000u);
  EXPECT_EQ(opened->age_ms, 5'000u);
  // Two seals of the same state differ (a fresh nonce each time).
  EXPECT_NE(SealState(Key(1), plaintext, 1'000'000), sealed);
}

TEST(StateFile, RefusesWithAReason) {
  const std::string sealed = SealState(Key(1), SampleState(), 1'000'000);
  auto why = [](const StateKey& key, const std::string& file, uint64_t now = 1'001'000,
                uint32_t max_age_s = 600) {
    auto r = OpenState(key, AsBytes(file), now, max_age_s);
    return r ? std::string("accepted") : std::string(ToString(r.error()));
  };
  EXPECT_EQ(why(Key(1), sealed), "accepted");
  EXPECT_EQ(why(Key(2), sealed), "bad_key_or_corrupt");
  EXPECT_EQ(why(Key(1), sealed, 1'000'000 + 601'000), "too_old");
  EXPECT_EQ(why(Key(1), sealed, 1'000'000 - 601'000), "too_old");  // dated in the future
  EXPECT_EQ(why(Key(1), "nope"), "bad_magic");
  std::string v9 = sealed;
  v9[4] = 9;
  EXPECT_EQ(why(Key(1), v9), "unknown_version");
  EXPECT_EQ(why(Key(1), sealed.substr(0, 30)), "truncated");
  EXPECT_EQ(why(Key(1), sealed.substr(0, sealed.size() - 1)), "bad_key_or_corrupt");
  for (size_t i = 5; i < sealed.size(); i += 7) {  // header (time, nonce), body or tag
    std::string altered = sealed;
    altered[i] = static_cast<char>(altered[i] ^ 1);
    EXPECT_EQ(why(Key(1), altered), "bad_key_or_corrupt") << i;
  }
}

TEST(StateFile, SavesPrivatelyAndAtomically) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("restart-state-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "sessions.state").string();
  ASSERT_TRUE(SaveStateFile(path, Key(1), SampleState(), 42));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::string file(static_cast<size_t>(std::filesystem::file_size(path)), '\0');
  std::FILE* in = std::fopen(path.c_str(), "rb");
  ASSERT_NE(in, nullptr);
  ASSERT_EQ(std::fread(file.data(), 1, file.size(), in), file.size());
  std::fclose(in);
  auto opened = OpenState(Key(1), AsBytes(file), 43, 1);
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->plaintext, SampleState());
  EXPECT_FALSE(SaveStateFile((dir / "no" / "such").string(), Key(1), "x", 1));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace coapgate::engine
