// AddressPlan: which source address simulated device i uses, and back (a reply's destination
// address -> the device it belongs to). make_fleet_csv.py writes the same plan into the
// registry CSV, so the two must change together.
//
// IPv4: Linux routes all of 127.0.0.0/8 to lo and accepts any of it as a local source, so
// every device gets its own address without any setup. Device i gets the i-th usable address
// counting from the first one, where addresses whose last octet is 0 or 255 are skipped (no
// device looks like a /24's network or broadcast address): from 127.1.0.1, device 253 is
// 127.1.0.254 and device 254 is 127.1.1.1. The mapping is arithmetic both ways (O(1), no
// table), and the whole plan must lie inside 127.0.0.0/8. Routed plans (--routed) may start
// anywhere and must lie inside the first address's /8: for a network namespace where the
// caller routed the devices' prefix to lo (`ip route add local 10.99.0.0/16 dev lo`).
//
// IPv6: Linux has only ::1 on lo (a wider local prefix needs root and a route), so IPv6
// devices all send from ::1 and differ by source port only; the registry then sees a single
// device, ::1. Device i is simply the i-th socket; there is no address arithmetic.
//
// Thread contract: immutable after construction; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/result.h"

namespace coapgate::loadgen {

class AddressPlan {
 public:
  static constexpr uint32_t kMaxDevices = 1'000'000;

  // REQUIRES nothing; fails with a one-line reason when `first` (dotted quad) is not in
  // 127/8 (any /8 when `routed`), ends in .0 or .255, or the plan for `devices` would run
  // past the end of that /8 (127.255.255.254).
  [[nodiscard]] static Result<AddressPlan, std::string> Ipv4(const std::string& first,
                                                             uint32_t devices,
                                                             bool routed = false);
  // All devices on ::1 (see above).
  [[nodiscard]] static AddressPlan Ipv6Loopback(uint32_t devices) noexcept;

  [[nodiscard]] bool ipv6() const noexcept { return ipv6_; }
  [[nodiscard]] uint32_t devices() const noexcept { return devices_; }

  // Host byte order. REQUIRES: !ipv6(), device < devices().
  [[nodiscard]] uint32_t Ipv4Of(uint32_t device) const noexcept {
    return AddressOfOrdinal(first_ordinal_ + device);
  }
  // The device whose address `address` (host byte order) is, if any. IPv4 only.
  [[nodiscard]] std::optional<uint32_t> DeviceOf(uint32_t address) const noexcept {
    const uint32_t low = address & 0xff;
    if (low == 0 || low == 255) return std::nullopt;
    const uint64_t ordinal = OrdinalOf(address);
    if (ordinal < first_ordinal_ || ordinal - first_ordinal_ >= devices_) return std::nullopt;
    return static_cast<uint32_t>(ordinal - first_ordinal_);
  }

  // "127.1.0.1", or "::1" in IPv6 mode.
  [[nodiscard]] std::string AddressText(uint32_t device) const;

 private:
  AddressPlan(bool ipv6, uint32_t devices, uint64_t first_ordinal) noexcept
      : ipv6_(ipv6), devices_(devices), first_ordinal_(first_ordinal) {}

  // Usable addresses numbered densely: 254 per /24 (last octets 1..254).
  static uint64_t OrdinalOf(uint32_t address) noexcept {
    return uint64_t{address >> 8} * 254 + ((address & 0xff) - 1);
  }
  static uint32_t AddressOfOrdinal(uint64_t ordinal) noexcept {
    return static_cast<uint32_t>((ordinal / 254) << 8 | (ordinal % 254 + 1));
  }

  bool ipv6_;
  uint32_t devices_;
  uint64_t first_ordinal_;
};

}  // namespace coapgate::loadgen
