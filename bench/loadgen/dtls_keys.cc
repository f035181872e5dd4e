#include "bench/loadgen/dtls_keys.h"

#include <arpa/inet.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <span>
#include <sstream>

#include "bench/loadgen/udp_batch.h"
#include "common/check.h"
#include "common/hex.h"
#include "codec/code.h"
#include "codec/message.h"
#include "registry/device_registry.h"

namespace coapgate::loadgen {
namespace {

uint64_t NowNs() noexcept {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}


constexpr uint32_t kBootstrapAckTimeoutMs = 2000;
constexpr unsigned kBootstrapMaxRetransmit = 4;
// After an empty ACK, how long to wait for the separate response.
constexpr uint64_t kSeparateWaitNs = 30'000'000'000;
constexpr size_t kBootstrapRequestSize = 18;

// CON GET /bootstrap, token = the device index (4 bytes, host order), MID from it.
void WriteBootstrapRequest(std::span<std::byte> out, uint32_t device, uint16_t mid) {
  const std::byte head[4] = {std::byte{0x44}, std::byte{0x01}, static_cast<std::byte>(mid >> 8),
                             static_cast<std::byte>(mid & 0xff)};
  std::memcpy(out.data(), head, 4);
  std::memcpy(out.data() + 4, &device, 4);
  out[8] = std::byte{0xB9};  // Uri-Path (11), 9 bytes
  std::memcpy(out.data() + 9, "bootstrap", 9);
}

}  // namespace

Result<std::vector<KeyRow>, std::string> ReadKeyCsv(const std::string& path) {
  // coapgate's own loader: the load tools accept exactly the files the server accepts.
  auto registry = registry::DeviceRegistry::LoadCsvFile(path);
  if (!registry) return Fail(std::move(registry).error().message);
  std::vector<KeyRow> rows;
  rows.reserve((*registry)->size());
  for (size_t i = 0; i < (*registry)->size(); ++i) {
    const registry::DeviceView device = (*registry)->Get(i);
    KeyRow row{std::string(device.iccid), device.ip ? device.ip->ToString() : std::string(), {}};
    if (device.psk_format == registry::PskFormat::kHex) {  // validated by the loader
      row.key.resize(device.psk.size() / 2);
      CHECK(DecodeHex(device.psk, std::as_writable_bytes(std::span(row.key))).has_value(),
            "the registry let a bad hex key through");
    } else {
      row.key = device.psk;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

Result<std::vector<DtlsCredential>, std::string> LoadCsvKeys(const std::string& path,
                                                             const AddressPlan& plan) {
  auto rows = ReadKeyCsv(path);
  if (!rows) return Fail("--keys csv: " + rows.error());
  std::vector<DtlsCredential> keys(plan.devices());
  uint32_t found = 0;
  for (KeyRow& row : *rows) {
    in_addr address{};
    if (inet_pton(AF_INET, row.ip.c_str(), &address) != 1) continue;
    const auto device = plan.DeviceOf(ntohl(address.s_addr));
    if (!device || row.key.empty()) continue;
    DtlsCredential& c = keys[*device];
    if (c.key.empty()) ++found;
    c.identity = std::move(row.iccid);
    c.key = std::move(row.key);
  }
  if (found != plan.devices()) {
    for (uint32_t i = 0; i < plan.devices(); ++i) {
      if (keys[i].key.empty()) {
        return Fail("--keys csv: " + std::to_string(plan.devices() - found) + " of " +
                    std::to_string(plan.devices()) + " devices have no row with a psk in " +
                    path + " (the first: device " + std::to_string(i) + ", " +
                    plan.AddressText(i) + "); make_fleet_csv.py --psk writes one");
      }
    }
  }
  return keys;
}

Result<std::vector<DtlsCredential>, std::string> BootstrapKeys(
    const AddressPlan& plan, const sockaddr_storage& target, socklen_t target_length,
    unsigned in_flight, uint64_t timeout_ns, BootstrapStats* stats) {
  auto fd = OpenIpv4WorkerSocket(4 << 20);
  if (!fd) return Fail("bootstrap: " + fd.error());
  const uint32_t n = plan.devices();
  std::vector<DtlsCredential> keys(n);
  enum : uint8_t { kPending, kOpen, kDone };
  struct State {
    uint64_t due_ns = 0;
    uint32_t wait_ms = kBootstrapAckTimeoutMs;
    uint8_t tries = 0;
    uint8_t state = kPending;
  };
  std::vector<State> states(n);
  std::vector<uint32_t> open;
  SendBatch send(target, target_length, kBootstrapRequestSize);
  ReceiveBatch receive;
  const uint64_t start = NowNs();
  const uint64_t deadline = start + timeout_ns;
  const uint16_t mid_base = static_cast<uint16_t>(start >> 10);
  const auto transmit = [&](uint32_t device) {
    WriteBootstrapRequest(send.Begin(*fd, plan.Ipv4Of(device)), device,
                          static_cast<uint16_t>(mid_base + device));
    send.Commit(kBootstrapRequestSize);
  };
  uint32_t next = 0, finished = 0;
  while (finished < n) {
    uint64_t now = NowNs();
    if (now >= deadline) break;
    while (open.size() < in_flight && next < n) {
      State& s = states[next];
      s.state = kOpen;
      s.due_ns = now + uint64_t{s.wait_ms} * 1'000'000;
      open.push_back(next);
      transmit(next++);
      ++stats->requests;
    }
    send.Flush();
    pollfd p{*fd, POLLIN, 0};
    poll(&p, 1, 5);
    for (unsigned got; (got = receive.Receive(*fd)) > 0;) {
      for (unsigned i = 0; i < got; ++i) {
        const ReceiveBatch::Datagram d = receive.Get(i);
        if (!SameEndpoint(*d.source, target) || d.truncated) continue;
        const auto device = plan.DeviceOf(d.destination_ipv4);
        if (!device) continue;
        const auto m = codec::ParseMessage(d.bytes);
        if (!m) continue;
        if (m->type == codec::MessageType::kConfirmable) {  // a separate response: ACK it
          const std::byte ack[4] = {std::byte{0x60}, std::byte{0},
                                    static_cast<std::byte>(m->message_id >> 8),
                                    static_cast<std::byte>(m->message_id & 0xff)};
          std::memcpy(send.Begin(*fd, plan.Ipv4Of(*device)).data(), ack, 4);
          send.Commit(4);
        }
        State& s = states[*device];
        if (s.state != kOpen) continue;
        if (m->type == codec::MessageType::kAcknowledgement && m->code == codec::code::kEmpty) {
          s.due_ns = NowNs() + kSeparateWaitNs;
          s.tries = kBootstrapMaxRetransmit;
          continue;
        }
        uint32_t token = 0;
        if (m->token.size() != 4) continue;
        std::memcpy(&token, m->token.data(), 4);
        if (token != *device || m->type == codec::MessageType::kReset) continue;
        s.state = kDone;
        ++finished;
        const std::string payload(reinterpret_cast<const char*>(m->payload.data()),
                                  m->payload.size());
        const size_t a = payload.find(','), b = payload.find(',', a + 1);
        if (m->code == codec::code::kContent && a != std::string::npos && b != std::string::npos &&
            a > 0 && b > a + 1) {
          keys[*device] = {payload.substr(0, a), payload.substr(a + 1, b - a - 1)};
          ++stats->ok;
        } else {
          ++stats->refused;
        }
      }
      if (got < kBatchSize) break;
    }
    now = NowNs();
    std::erase_if(open, [&](uint32_t device) {
      State& s = states[device];
      if (s.state == kDone) return true;
      if (now < s.due_ns) return false;
      if (s.tries < kBootstrapMaxRetransmit) {
        ++s.tries;
        s.wait_ms *= 2;
        s.due_ns = now + uint64_t{s.wait_ms} * 1'000'000;
        transmit(device);
        ++stats->retransmissions;
        return false;
      }
      s.state = kDone;
      ++finished;
      ++stats->timeouts;
      return true;
    });
    send.Flush();
  }
  stats->timeouts += n - finished;  // still pending or open at the deadline
  stats->seconds = static_cast<double>(NowNs() - start) / 1e9;
  close(*fd);
  return keys;
}

}  // namespace coapgate::loadgen
