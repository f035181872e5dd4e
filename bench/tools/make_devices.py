#!/usr/bin/env python3
"""Writes the device registry CSV (SPEC §3) for coap_blast's simulated devices.

Device i (0-based) of coap_blast sends from 127.0.0.(2+i); this file registers exactly those
addresses as active devices without a PSK, so coapgate answers them 2.04:

    make_devices.py N > devices.csv        (1 <= N <= 250)

iccid = 8988280666000000000 + i (19 digits), imsi = 901405100000000 + i (15 digits).
"""
import sys

MAX_DEVICES = 250  # coap_blast's limit: 127.0.0.2 .. 127.0.0.251
ICCID_BASE = 8988280666000000000
IMSI_BASE = 901405100000000


def main(argv):
    if len(argv) != 2 or not argv[1].isdigit() or not 1 <= int(argv[1]) <= MAX_DEVICES:
        sys.stderr.write(f"usage: {argv[0]} N > devices.csv   (1 <= N <= {MAX_DEVICES})\n")
        return 2
    out = sys.stdout
    out.write("iccid,imsi,ip,status,psk,psk_format\n")
    for i in range(int(argv[1])):
        out.write(f"{ICCID_BASE + i},{IMSI_BASE + i},127.0.0.{2 + i},active,,\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
