#!/usr/bin/env python3
"""Writes the device registry CSV (docs/registry.md) for coapgate-loadgen's simulated fleet.

Device i (0-based) of `coapgate-loadgen --devices N --first-address A` sends from the i-th
usable address counting from A, where addresses whose last octet is 0 or 255 are skipped
(bench/loadgen/address_plan.h); this file registers exactly those addresses as active devices
without a PSK, so coapgate answers their requests 2.04:

    make_fleet_csv.py N [--first-address 127.1.0.1] > devices.csv     (1 <= N <= 1,000,000)
    make_fleet_csv.py N --ipv6 > devices.csv
    make_fleet_csv.py N --psk > devices.csv     (for coapgate-loadgen --dtls --keys csv:FILE)
    make_fleet_csv.py N --routed --first-address 10.99.0.1 > devices.csv   (coapgate-loadgen --routed)

With --psk every row also carries a per-device key (psk_format empty = the string itself):
16 hex digits of SHA-256("coapgate-loadgen psk <i>"), so the same N always gives the same keys.

iccid = 8988280666 followed by i in 9 digits (19 digits), imsi = 901405 followed by i in 9
digits (15 digits): a sink record's iccid names the device index its payload's "d=" carries.

With --ipv6 every device sends from ::1 (Linux has no other loopback address; the devices
differ by source port), so the registry holds the one device ::1, with device 0's identity.
"""
import argparse
import hashlib
import ipaddress
import sys

MAX_DEVICES = 1_000_000
ICCID_PREFIX = "8988280666"
IMSI_PREFIX = "901405"
HEADER = "iccid,imsi,ip,status,psk,psk_format\n"


def ordinal(address):
    """Usable 127/8 addresses numbered densely: 254 per /24 (last octets 1..254)."""
    return (address >> 8) * 254 + (address & 0xFF) - 1


def address_of(n):
    return (n // 254) << 8 | (n % 254 + 1)


def plan(first, count, routed=False):
    """The addresses of devices 0..count-1 from `first` (an IPv4Address), as strings: inside
    127.0.0.0/8, or with `routed` inside first's /8 (coapgate-loadgen --routed)."""
    value = int(first)
    if (not routed and value >> 24 != 127) or value & 0xFF in (0, 255):
        raise ValueError(f"--first-address must be in 127.0.0.0/8 (or --routed), not ending in "
                         f".0/.255: {first}")
    start = ordinal(value)
    if start + count - 1 > ordinal(value & 0xFF000000 | 0x00FFFFFE):
        raise ValueError(f"{count} devices from {first} run past {value >> 24}.255.255.254")
    for i in range(count):
        a = address_of(start + i)
        yield f"{a >> 24}.{a >> 16 & 0xFF}.{a >> 8 & 0xFF}.{a & 0xFF}"


def psk_of(i):
    return hashlib.sha256(f"coapgate-loadgen psk {i}".encode()).hexdigest()[:16]


def row(i, ip, psk=False):
    key = psk_of(i) if psk else ""
    return f"{ICCID_PREFIX}{i:09d},{IMSI_PREFIX}{i:09d},{ip},active,{key},\n"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("devices", type=int, help=f"1..{MAX_DEVICES}")
    parser.add_argument("--first-address", default="127.1.0.1", type=ipaddress.IPv4Address)
    parser.add_argument("--ipv6", action="store_true", help="one row for ::1")
    parser.add_argument("--psk", action="store_true", help="a per-device PSK in every row")
    parser.add_argument("--routed", action="store_true",
                        help="--first-address outside 127.0.0.0/8 (coapgate-loadgen --routed)")
    args = parser.parse_args(argv[1:])
    if not 1 <= args.devices <= MAX_DEVICES:
        parser.error(f"devices must be 1..{MAX_DEVICES}")
    out = sys.stdout
    out.write(HEADER)
    if args.ipv6:
        out.write(row(0, "::1", args.psk))
        return 0
    try:
        out.writelines(row(i, ip, args.psk)
                       for i, ip in enumerate(plan(args.first_address, args.devices, args.routed)))
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
