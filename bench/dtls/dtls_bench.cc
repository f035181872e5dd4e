// DtlsEndpoint micro-benchmarks (issue #5): what coaps:// costs the shard per record and per
// full PSK handshake, in process. A DtlsEndpoint (the shard's side) and real wolfSSL DTLS 1.2
// PSK clients exchange datagrams through a memory Transport, as tests/dtls/dtls_endpoint_test.cc
// does: no sockets, no syscalls, so these are the endpoint's (and wolfSSL's) CPU costs alone.
//
// - BM_EndpointSend/S: DtlsEndpoint::Send of one 100-byte plaintext on an established session
//   (encrypt + Transport::Send, which drops the datagram): the reply path of every request.
// - BM_EndpointReceive/S: DtlsEndpoint::OnDatagram of one client record carrying 100 bytes
//   (session lookup, decrypt, anti-replay, Transport::Deliver): the request path. The records
//   are encrypted by the client ahead of time, in untimed batches.
// - BM_FullHandshake: the server's CPU for one full PSK handshake, HelloVerifyRequest included
//   (manual time: only the endpoint's OnDatagram calls are timed; `client_us` is the client's
//   share, not timed); each session is closed with close_notify afterwards, untimed.
// - BM_IdleSessionBytes/N: N sessions that each completed a handshake and one request, held
//   idle: heap per session by the endpoint's own accounting (`bytes_per_session`: wolfSSL's
//   allocations by malloc_usable_size plus its Session) and by glibc (`heap_per_session`:
//   mallinfo2 before/after, the clients freed). tests/dtls/dtls_endpoint_test.cc's
//   HeapPerIdleSession measures the first figure too.
//
// S selects the suite: 0 PSK-AES128-CCM-8 (RFC 7252's mandatory one, the one bench/README.md's goals name), 1
// PSK-AES128-CBC-SHA256, 2 PSK-AES128-GCM-SHA256. Every benchmark reports `allocs/item`
// (operator new, tests/support/allocation_counter.h) and `wolfssl_allocs/item` (wolfSSL's
// allocator hooks, chained behind the endpoint's own).
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/memory.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dtls/dtls_endpoint.h"
#include "tests/support/allocation_counter.h"
#include "tests/support/dtls_test_client.h"

namespace coapgate::dtls {
namespace {

using Bytes = std::vector<std::byte>;

constexpr const char* kSuites[] = {"PSK-AES128-CCM-8", "PSK-AES128-CBC-SHA256",
                                   "PSK-AES128-GCM-SHA256"};
const std::string kIdentity = "8988280666000002864";
const std::string kKey = "kQ3v9TzA1bXc7LmN0pR";  // a bootstrap-style PSK (docs/bootstrap-and-dtls.md)
constexpr size_t kPayload = 100;                 // a typical telemetry POST

// wolfSSL allocations, counted by hooks chained in front of the endpoint's (installed once,
// after the first DtlsEndpoint::Create installed those).
std::atomic<long> g_wolfssl_allocations{0};
wolfSSL_Malloc_cb g_next_malloc = nullptr;
wolfSSL_Free_cb g_next_free = nullptr;
wolfSSL_Realloc_cb g_next_realloc = nullptr;

void* CountedMalloc(size_t size) {
  g_wolfssl_allocations.fetch_add(1, std::memory_order_relaxed);
  return g_next_malloc(size);
}
void CountedFree(void* p) { g_next_free(p); }
void* CountedRealloc(void* p, size_t size) {
  g_wolfssl_allocations.fetch_add(1, std::memory_order_relaxed);
  return g_next_realloc(p, size);
}

void ChainAllocationCounter() {
  static std::once_flag once;
  std::call_once(once, [] {
    wolfSSL_GetAllocators(&g_next_malloc, &g_next_free, &g_next_realloc);
    wolfSSL_SetAllocators(CountedMalloc, CountedFree, CountedRealloc);
  });
}

using test::MakeRoute;

// The endpoint test's in-memory client (tests/support/dtls_test_client.h), full handshakes
// only: its queues copy into storage reserved at construction, so the allocation counts
// measure the endpoint (and wolfSSL), not the harness.
class Client : public test::DtlsTestClient {
 public:
  Client(const Route& r, const char* suite)
      : DtlsTestClient(r, {.identity = kIdentity, .key = kKey, .suite = suite,
                           .session_cache = false, .queue_capacity = 16}) {}
};

// The shard's side: server datagrams go to `to` (or nowhere), plaintext is counted.
class MemoryNet final : public Transport {
 public:
  void Send(const Route&, std::span<const std::byte> datagram) noexcept override {
    ++sends;
    if (to != nullptr) to->inbox.push_back(datagram);
  }
  void Deliver(SessionId session, std::string_view, const Route&,
               std::span<const std::byte> plaintext) noexcept override {
    ++delivered;
    last_session = session;
    benchmark::DoNotOptimize(plaintext.data());
  }

  Client* to = nullptr;
  uint64_t sends = 0;
  uint64_t delivered = 0;
  SessionId last_session = 0;
};

// One endpoint, its memory transport and a clock; wolfSSL initialised for the clients.
class Bench {
 public:
  Bench() {
    wolfSSL_Init();  // the clients' reference (the endpoint holds its own)
    auto e = DtlsEndpoint::Create({}, &net, [](std::string_view identity,
                                               std::span<std::byte, kMaxPskLength> key) {
      if (identity != kIdentity) return size_t{0};
      std::memcpy(key.data(), kKey.data(), kKey.size());
      return kKey.size();
    });
    if (!e) std::abort();
    endpoint = std::move(*e);
    ChainAllocationCounter();
  }
  ~Bench() {
    endpoint.reset();
    wolfSSL_Cleanup();
  }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  // Runs `c`'s handshake to completion; `server_ns` (if given) gets the endpoint's share.
  // Allocations inside the endpoint's calls are added to `server_allocations` and
  // `server_wolfssl_allocations`.
  bool Connect(Client& c, std::chrono::nanoseconds* server_ns = nullptr,
               std::chrono::nanoseconds* client_ns = nullptr) {
    net.to = &c;
    for (int round = 0; round < 10 && !c.connected() && !c.failed(); ++round) {
      const auto c0 = std::chrono::steady_clock::now();
      c.Step();
      if (client_ns != nullptr) *client_ns += std::chrono::steady_clock::now() - c0;
      while (!c.outbox.empty()) {
        const long a0 = test::AllocationCount();
        const long w0 = g_wolfssl_allocations.load(std::memory_order_relaxed);
        const auto t0 = std::chrono::steady_clock::now();
        endpoint->OnDatagram(c.route, c.outbox.front(), now_ms);
        if (server_ns != nullptr) *server_ns += std::chrono::steady_clock::now() - t0;
        server_allocations += test::AllocationCount() - a0;
        server_wolfssl_allocations += g_wolfssl_allocations.load(std::memory_order_relaxed) - w0;
        c.outbox.pop_front();
      }
    }
    net.to = nullptr;
    return c.connected();
  }
  // One application record from `c` through the endpoint (confirms the handshake to it).
  bool Exchange(Client& c) {
    const uint64_t before = net.delivered;
    if (!c.Write(std::string(kPayload, 'p'))) return false;
    while (!c.outbox.empty()) {
      endpoint->OnDatagram(c.route, c.outbox.front(), now_ms);
      c.outbox.pop_front();
    }
    return net.delivered == before + 1;
  }
  void Close(Client& c) {
    c.Shutdown();
    while (!c.outbox.empty()) {
      endpoint->OnDatagram(c.route, c.outbox.front(), now_ms);
      c.outbox.pop_front();
    }
  }

  MemoryNet net;
  std::unique_ptr<DtlsEndpoint> endpoint;
  uint64_t now_ms = 5'000'000;
  long server_allocations = 0;
  long server_wolfssl_allocations = 0;
};

void SetAllocationCounters(benchmark::State& state, long allocations, long wolfssl_allocations,
                           double items) {
  state.counters["allocs/item"] = benchmark::Counter(static_cast<double>(allocations) / items);
  state.counters["wolfssl_allocs/item"] =
      benchmark::Counter(static_cast<double>(wolfssl_allocations) / items);
}

// The suite of state.range(0), also the benchmark's label.
const char* LabelledSuite(benchmark::State& state) {
  const char* suite = kSuites[state.range(0)];
  state.SetLabel(suite);
  return suite;
}

// The steady-state benchmarks' start: `c` connected and confirmed by one record. False, with the
// benchmark skipped, when the handshake failed.
bool Established(benchmark::State& state, Bench& b, Client& c) {
  if (b.Connect(c) && b.Exchange(c)) return true;
  state.SkipWithError("handshake failed");
  return false;
}

// Calls `one(i)` for i in [0, kProbe), untimed, and reports the allocations per call.
template <class One>
void ProbeAllocations(benchmark::State& state, One one) {
  constexpr int kProbe = 1000;
  const long a0 = test::AllocationCount();
  const long w0 = g_wolfssl_allocations.load();
  for (int i = 0; i < kProbe; ++i) one(i);
  SetAllocationCounters(state, test::AllocationCount() - a0, g_wolfssl_allocations.load() - w0,
                        kProbe);
}

// One record of kPayload bytes per iteration.
void SetRecordsProcessed(benchmark::State& state) {
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kPayload));
}

void BM_EndpointSend(benchmark::State& state) {
  const char* suite = LabelledSuite(state);
  Bench b;
  Client c(MakeRoute(0x7f000002, 40000), suite);
  if (!Established(state, b, c)) return;
  const SessionId id = b.net.last_session;
  const Bytes plaintext(kPayload, std::byte{'r'});
  ProbeAllocations(state, [&](int) {
    if (!b.endpoint->Send(id, plaintext)) std::abort();
  });
  for (auto _ : state) {
    if (!b.endpoint->Send(id, plaintext)) std::abort();
  }
  SetRecordsProcessed(state);
}
BENCHMARK(BM_EndpointSend)->DenseRange(0, 2);

void BM_EndpointReceive(benchmark::State& state) {
  const char* suite = LabelledSuite(state);
  Bench b;
  Client c(MakeRoute(0x7f000002, 40000), suite);
  if (!Established(state, b, c)) return;
  const std::string payload(kPayload, 'p');
  constexpr size_t kRecords = 4096;  // encrypted ahead, untimed; in order (anti-replay)
  std::vector<Bytes> records;
  auto encrypt_batch = [&] {
    records.clear();
    for (size_t i = 0; i < kRecords; ++i) {
      if (!c.Write(payload)) std::abort();
      records.emplace_back(c.outbox.front().begin(), c.outbox.front().end());
      c.outbox.pop_front();
    }
  };
  encrypt_batch();
  ProbeAllocations(state, [&](int i) {
    b.endpoint->OnDatagram(c.route, records[static_cast<size_t>(i)], b.now_ms);
  });
  encrypt_batch();
  const uint64_t delivered0 = b.net.delivered;
  size_t next = 0;
  for (auto _ : state) {
    if (next == records.size()) {
      state.PauseTiming();
      encrypt_batch();
      next = 0;
      state.ResumeTiming();
    }
    b.endpoint->OnDatagram(c.route, records[next++], b.now_ms);
  }
  const auto iterations = static_cast<uint64_t>(state.iterations());
  if (b.net.delivered - delivered0 != iterations) {
    state.SkipWithError("a record was not delivered");
  }
  SetRecordsProcessed(state);
}
BENCHMARK(BM_EndpointReceive)->DenseRange(0, 2);

void BM_FullHandshake(benchmark::State& state) {
  const char* suite = LabelledSuite(state);
  Bench b;
  uint32_t n = 0;
  std::chrono::nanoseconds client_total{0};
  for (auto _ : state) {
    // A new device address and port each time: a fresh cookie exchange, a fresh session.
    ++n;
    Client c(MakeRoute(0x7f000000 + 2 + n % 200, static_cast<uint16_t>(1024 + n % 60000)), suite);
    std::chrono::nanoseconds server{0};
    const bool ok = b.Connect(c, &server, &client_total);
    state.SetIterationTime(std::chrono::duration<double>(server).count());
    if (!ok) {
      state.SkipWithError("handshake failed");
      return;
    }
    b.Close(c);  // close_notify: the session goes, untimed
  }
  const auto& counters = b.endpoint->counters();
  const auto iterations = static_cast<uint64_t>(state.iterations());
  if (counters.handshakes_completed.load() != iterations ||
      counters.hello_verify_sent.load() != iterations || b.endpoint->sessions() != 0) {
    state.SkipWithError("not one HVR and one completed handshake per iteration");
  }
  const double items = static_cast<double>(state.iterations());
  SetAllocationCounters(state, b.server_allocations, b.server_wolfssl_allocations, items);
  state.counters["client_us"] =
      benchmark::Counter(std::chrono::duration<double, std::micro>(client_total).count() / items);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_FullHandshake)->DenseRange(0, 2)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_IdleSessionBytes(benchmark::State& state) {
  const int sessions = static_cast<int>(state.range(0));
  for (auto _ : state) {
    state.PauseTiming();
    {
      Bench b;
      // Warm-up: the first handshake's lazy allocations (of the process, not of a session).
      {
        Client c(MakeRoute(0x0a000000, 1), kSuites[0]);
        if (!b.Connect(c) || !b.Exchange(c)) std::abort();
        b.Close(c);
      }
      malloc_trim(0);
      const size_t heap0 = mallinfo2().uordblks;
      for (int i = 0; i < sessions; ++i) {
        auto c = std::make_unique<Client>(
            MakeRoute(0x0a000001 + static_cast<uint32_t>(i), static_cast<uint16_t>(40000)),
            kSuites[0]);
        if (!b.Connect(*c) || !b.Exchange(*c)) {
          state.SkipWithError("handshake failed");
          return;
        }
        // The client goes silently (no close_notify): the server keeps an idle session.
      }
      b.endpoint->Tick(b.now_ms + 16'000);  // past the handshake timeout: every flight released
      const size_t heap1 = mallinfo2().uordblks;
      if (b.endpoint->sessions() != static_cast<size_t>(sessions)) {
        state.SkipWithError("sessions missing");
        return;
      }
      state.counters["bytes_per_session"] = benchmark::Counter(
          static_cast<double>(b.endpoint->session_heap_bytes()) / sessions);
      state.counters["heap_per_session"] =
          benchmark::Counter((static_cast<double>(heap1) - static_cast<double>(heap0)) / sessions);
      state.counters["table_bytes_per_slot"] = benchmark::Counter(
          static_cast<double>(b.endpoint->table_bytes()) / EndpointOptions{}.max_sessions);
    }
    state.ResumeTiming();
  }
}
BENCHMARK(BM_IdleSessionBytes)->Arg(1000)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace coapgate::dtls
