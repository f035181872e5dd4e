// The PSK credentials of coapgate-loadgen's DTLS mode (--dtls): one (identity, key) per
// simulated device, indexed by device. Two sources:
//   csv:FILE        the registry CSV (make_fleet_csv.py --psk): a row whose ip is device i's
//                   address gives device i's identity (iccid) and key (psk; hex-decoded when
//                   psk_format is hex). Every device of the plan needs a row with a key.
//   bootstrap:H:P   every device sends a plain-CoAP CON GET /bootstrap to H:P from its own
//                   address (IP_PKTINFO, one socket); the 2.05 payload "ICCID,PSK,URL" is its
//                   credential. At most `in_flight` requests are open at once (the server
//                   fsyncs per bootstrap), each retransmitted RFC 7252-style (2 s, doubling,
//                   4 times); the whole phase is bounded by `timeout_ns`.
//
// Thread contract: plain functions, run on the main thread before the workers start.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/loadgen/address_plan.h"
#include "common/result.h"

namespace coapgate::loadgen {

struct DtlsCredential {
  std::string identity;  // the ICCID
  std::string key;       // raw key bytes
};

// One device row of a registry CSV, as the load tools need it.
struct KeyRow {
  std::string iccid;
  std::string ip;     // as written; may be empty
  std::string key;    // raw key bytes (hex-decoded when psk_format is hex); may be empty
};
// Every device of a registry CSV, read by coapgate's own loader (DeviceRegistry::LoadCsvFile),
// so the load tools take every file the server takes (quoting, CRLF, any column order, any
// case of psk_format and status) and refuse the rest with the server's message,
// "PATH:LINE: reason".
[[nodiscard]] Result<std::vector<KeyRow>, std::string> ReadKeyCsv(const std::string& path);

[[nodiscard]] Result<std::vector<DtlsCredential>, std::string> LoadCsvKeys(
    const std::string& path, const AddressPlan& plan);

struct BootstrapStats {
  uint64_t requests = 0;
  uint64_t retransmissions = 0;
  uint64_t ok = 0;        // 2.05 with a well-formed payload
  uint64_t refused = 0;   // any other response code, or a malformed payload
  uint64_t timeouts = 0;  // no answer after the retransmissions, or the phase deadline
  double seconds = 0;
};

// Fails only when the socket cannot be opened; devices without a key keep an empty one (they
// are counted in `stats` and are left out of the handshakes).
[[nodiscard]] Result<std::vector<DtlsCredential>, std::string> BootstrapKeys(
    const AddressPlan& plan, const sockaddr_storage& target, socklen_t target_length,
    unsigned in_flight, uint64_t timeout_ns, BootstrapStats* stats);

}  // namespace coapgate::loadgen
