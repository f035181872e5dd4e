// Device registry benchmarks at docs/registry.md's scale: loading 1,000,000 devices (goal: < 2 s on one
// core, <= 200 bytes per device) and the per-datagram lookup by source address.
//
// The CSV is generated once per process into /tmp (outside every timed region) and removed at
// exit; it is in the page cache when timed, so the load time is parse + build, not disk.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "registry/device_registry.h"

namespace coapgate::registry {
namespace {

constexpr size_t kDevices = 1'000'000;

// 10.x.y.z, distinct for i < 2^24.
net::IpAddress DeviceIp(size_t i) {
  in_addr a;
  a.s_addr = htonl(0x0a000000u | static_cast<uint32_t>(i));
  return net::IpAddress::FromV4(a);
}

class BenchFile {
 public:
  BenchFile() : path_("/tmp/coapgate_registry_bench_" + std::to_string(::getpid()) + ".csv") {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr) std::abort();
    std::fputs("iccid,imsi,ip,status,psk,psk_format\n", f);
    for (size_t i = 0; i < kDevices; ++i) {
      // ICCID 89882806660000000000 + i: 20 digits, more than 64 bits, hence the fixed prefix.
      std::fprintf(f, "8988280666%010zu,%zu,10.%zu.%zu.%zu,active,,\n", i,
                   size_t{901405100000000} + i, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
    }
    bytes_ = static_cast<size_t>(std::ftell(f));
    if (std::fclose(f) != 0) std::abort();
  }
  ~BenchFile() { std::remove(path_.c_str()); }
  BenchFile(const BenchFile&) = delete;
  BenchFile& operator=(const BenchFile&) = delete;

  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] size_t bytes() const { return bytes_; }

 private:
  std::string path_;
  size_t bytes_ = 0;
};

const BenchFile& File1M() {
  static const BenchFile file;
  return file;
}

std::shared_ptr<const DeviceRegistry> Load1M() {
  auto registry = DeviceRegistry::LoadCsvFile(File1M().path());
  if (!registry) {
    std::fprintf(stderr, "%s\n", registry.error().message.c_str());
    std::abort();
  }
  return *std::move(registry);
}

// Bytes malloc has handed out, including the large blocks it serves with mmap.
size_t HeapInUse() {
  const struct mallinfo2 info = ::mallinfo2();
  return info.uordblks + info.hblkhd;
}

void BM_RegistryLoad1M(benchmark::State& state) {
  const BenchFile& file = File1M();
  std::shared_ptr<const DeviceRegistry> registry;
  for (auto _ : state) {
    state.PauseTiming();
    registry.reset();  // freeing the previous snapshot is not part of a load
    state.ResumeTiming();
    registry = Load1M();
    benchmark::DoNotOptimize(registry.get());
  }
  if (registry == nullptr || registry->size() != kDevices) std::abort();
  const size_t with = HeapInUse();
  const size_t memory = registry->MemoryBytes();
  registry.reset();
  const size_t without = HeapInUse();
  state.counters["devices"] = static_cast<double>(kDevices);
  state.counters["bytes_per_device"] = static_cast<double>(memory) / kDevices;
  state.counters["heap_per_device"] = static_cast<double>(with - without) / kDevices;
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kDevices));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * file.bytes()));
}
BENCHMARK(BM_RegistryLoad1M)->Unit(benchmark::kMillisecond)->UseRealTime();

const DeviceRegistry& Registry1M() {
  static const std::shared_ptr<const DeviceRegistry> registry = Load1M();
  return *registry;
}

// As many random present addresses as there are devices: the working set is the whole
// registry, not a cache-resident sample (a power of two, to wrap with a mask).
constexpr size_t kQueries = 1 << 20;

const std::vector<net::IpAddress>& IpQueries() {
  static const std::vector<net::IpAddress> queries = [] {
    std::vector<net::IpAddress> ips(kQueries);
    std::mt19937_64 random(42);
    for (net::IpAddress& ip : ips) ip = DeviceIp(random() % kDevices);
    return ips;
  }();
  return queries;
}

// Throughput: `find` of each of the kQueries `queries` in turn, independent lookups which the
// CPU overlaps (several cache misses in flight). Every query must be found.
template <class Query, class Find>
void IndependentLookups(benchmark::State& state, const std::vector<Query>& queries, Find find) {
  size_t i = 0;
  for (auto _ : state) {
    const auto device = find(queries[i++ & (kQueries - 1)]);
    if (!device) std::abort();
    benchmark::DoNotOptimize(device);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_RegistryFindByIp(benchmark::State& state) {
  const DeviceRegistry& registry = Registry1M();
  IndependentLookups(state, IpQueries(),
                     [&](const net::IpAddress& ip) { return registry.FindByIp(ip); });
}
BENCHMARK(BM_RegistryFindByIp);

// Latency: each query's position depends on the previous answer (psk is empty, but the CPU
// cannot know), so the misses of one lookup are not hidden behind the next; closer to the
// engine, where a lookup sits between other per-datagram work.
void BM_RegistryFindByIpLatency(benchmark::State& state) {
  const DeviceRegistry& registry = Registry1M();
  const std::vector<net::IpAddress>& queries = IpQueries();
  size_t i = 0;
  for (auto _ : state) {
    const auto device = registry.FindByIp(queries[i & (kQueries - 1)]);
    if (!device) std::abort();
    i += 1 + device->psk.size();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_RegistryFindByIpLatency);

// Once per DTLS handshake, not per datagram.
void BM_RegistryFindByIccid(benchmark::State& state) {
  const DeviceRegistry& registry = Registry1M();
  std::vector<std::string> queries(kQueries);
  std::mt19937_64 random(7);
  for (std::string& iccid : queries) {
    iccid = std::string(registry.Get(random() % kDevices).iccid);
  }
  IndependentLookups(state, queries,
                     [&](const std::string& iccid) { return registry.FindByIccid(iccid); });
}
BENCHMARK(BM_RegistryFindByIccid);

}  // namespace
}  // namespace coapgate::registry
