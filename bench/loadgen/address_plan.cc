#include "bench/loadgen/address_plan.h"

#include <arpa/inet.h>

namespace coapgate::loadgen {

Result<AddressPlan, std::string> AddressPlan::Ipv4(const std::string& first, uint32_t devices,
                                                   bool routed) {
  in_addr parsed{};
  if (inet_pton(AF_INET, first.c_str(), &parsed) != 1) {
    return Fail("--first-address: not an IPv4 address: " + first);
  }
  const uint32_t address = ntohl(parsed.s_addr);
  if (!routed && address >> 24 != 127) {
    return Fail("--first-address must be in 127.0.0.0/8 (or --routed): " + first);
  }
  if ((address & 0xff) == 0 || (address & 0xff) == 255) {
    return Fail("--first-address must not end in .0 or .255: " + first);
  }
  if (devices == 0 || devices > kMaxDevices) {
    return Fail(std::string("--devices must be 1 to 1000000"));
  }
  const uint64_t first_ordinal = OrdinalOf(address);
  const uint64_t last_ordinal = first_ordinal + devices - 1;
  const uint32_t last_of_slash8 = (address & 0xff000000u) | 0x00fffffeu;  // x.255.255.254
  if (last_ordinal > OrdinalOf(last_of_slash8)) {
    return Fail("--devices " + std::to_string(devices) + " from " + first + " runs past " +
                std::to_string(address >> 24) + ".255.255.254");
  }
  return AddressPlan(false, devices, first_ordinal);
}

AddressPlan AddressPlan::Ipv6Loopback(uint32_t devices) noexcept {
  return AddressPlan(true, devices, 0);
}

std::string AddressPlan::AddressText(uint32_t device) const {
  if (ipv6_) return "::1";
  const uint32_t a = Ipv4Of(device);
  return std::to_string(a >> 24) + "." + std::to_string(a >> 16 & 0xff) + "." +
         std::to_string(a >> 8 & 0xff) + "." + std::to_string(a & 0xff);
}

}  // namespace coapgate::loadgen
