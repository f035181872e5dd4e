"""`coapgate --take-over` under coapgate-loadgen's fleets: 10,000 plain CoAP devices and 1,000
DTLS devices on their own loopback addresses keep sending while a new process takes the
sockets, sessions and answered exchanges over. No request times out, no device handshakes
again, and every 2.04'd (device, seq) reaches the sink, once or with the same id.

Needs the loadgen (built with the benchmarks, so registered for the release preset only).
Environment: COAPGATE and LOADGEN (set by ctest)."""

import base64
import json
import os
import re
import subprocess
import time
import unittest

from harness import Server
from test_admin import get, samples, total

LOADGEN = os.environ.get("LOADGEN", "build/release/bench/loadgen/coapgate-loadgen")
FLEET_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench",
                         "loadgen", "make_fleet_csv.py")
PAYLOAD = re.compile(rb"^d=(\d{7}) s=(\d{10}) ")
DURATION_S = 8


def fleet(devices, psk=False):
    text = subprocess.run(["python3", FLEET_CSV, str(devices)] + (["--psk"] if psk else []),
                          capture_output=True, text=True, check=True).stdout
    rows = [tuple(line.split(",")) for line in text.splitlines()[1:]]
    return [row if psk else row[:4] for row in rows]


class LoadgenTakeoverTests(unittest.TestCase):

    def run_through_takeover(self, devices, rows, loadgen_args, target_of):
        with Server(devices=rows, shards=2, coaps='"127.0.0.1:0"') as old:
            ack_log = os.path.join(old.dir, "acks.txt")
            load = subprocess.Popen(
                [LOADGEN, "--target", target_of(old), "--devices", str(devices),
                 "--duration", str(DURATION_S), "--drain-ms", "20000", "--ack-log", ack_log,
                 "--ack-log-all", *loadgen_args],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.addCleanup(lambda: load.poll() is None and (load.kill(), load.wait()))
            # The load is under way (answers counted by the old process) before the take-over.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                _, text = get(old.admin_port, "/metrics")
                if total(samples(text), "coapgate_replies_total") > devices:
                    break
                time.sleep(0.2)
            with Server(take_over_from=old) as new:
                self.assertEqual(old.proc.wait(timeout=60), 0, "\n".join(old.stderr_lines[-30:]))
                handed = old.wait_for_log(r"handed over (\d+) DTLS sessions and (\d+) answered "
                                          r"exchanges in (\d+) ms")
                out, err = load.communicate(timeout=120)
                self.assertEqual(load.returncode, 0, err)
                report = json.loads(out.strip().splitlines()[-1])
                _, text = get(new.admin_port, "/metrics")
                values = samples(text)
                new_handshakes = total(values, "coapgate_dtls_handshakes_started_total")
                lines = new.wait_for_sink(report["codes"].get("2.04", 0), timeout=30)
                self.assertEqual(new.stop(), 0)
        print(f"\n{devices} devices through a take-over (paused {handed.group(3)} ms, "
              f"{handed.group(1)} sessions and {handed.group(2)} exchanges handed over): "
              f"sent {report['sent']}, codes {report['codes']}, timeouts {report['timeouts']}, "
              f"retransmissions {report.get('retransmissions')}")
        self.assertEqual(report["timeouts"], 0, report)
        self.assertEqual(set(report["codes"]), {"2.04"}, report)
        self.assertEqual(report["unmatched"] + report["malformed"], 0, report)
        acked = set()
        with open(ack_log) as f:
            for line in f:
                device, seq, outcome, _ = line.split()
                self.assertEqual(outcome, "2.04", line)
                acked.add((int(device), int(seq)))
        self.assertEqual(len(acked), report["codes"]["2.04"])
        ids = {}  # (device, seq) -> the ids it was delivered with
        for record in lines:
            m = PAYLOAD.match(base64.b64decode(record["payload"]["value"]))
            self.assertIsNotNone(m, record)
            ids.setdefault((int(m.group(1)), int(m.group(2))), set()).add(record["id"])
        missing = acked - ids.keys()
        self.assertEqual(missing, set(), f"{len(missing)} acknowledged requests not delivered")
        self.assertEqual([k for k, v in ids.items() if len(v) > 1], [],
                         "delivered twice with different ids")
        return report, new_handshakes, int(handed.group(1))

    def test_ten_thousand_plain_devices_through_a_take_over(self):
        self.run_through_takeover(10000, fleet(10000), ["--rate", "3000"],
                                  lambda s: f"{s.address[0]}:{s.address[1]}")

    def test_no_datagram_is_lost_non_requests_without_retransmission(self):
        # NON requests are never retransmitted: one lost in the hand-over would be a timeout.
        self.run_through_takeover(10000, fleet(10000), ["--rate", "3000", "--non"],
                                  lambda s: f"{s.address[0]}:{s.address[1]}")

    def test_a_thousand_dtls_devices_keep_their_sessions_through_a_take_over(self):
        rows = fleet(1000, psk=True)
        with open(f"/tmp/coapgate-takeover-keys-{os.getpid()}.csv", "w") as f:
            f.write("iccid,imsi,ip,status,psk,psk_format\n")
            f.write("".join(",".join(r) + "\n" for r in rows))
            keys = f.name
        self.addCleanup(os.remove, keys)
        report, new_handshakes, handed = self.run_through_takeover(
            1000, rows, ["--dtls", "--keys", f"csv:{keys}", "--rate", "1000",
                         "--setup-timeout", "60"],
            lambda s: f"{s.coaps_address[0]}:{s.coaps_address[1]}")
        dtls = report["dtls"]
        self.assertEqual(dtls["established"], 1000, report)
        self.assertEqual(dtls["sessions_lost"], 0, report)
        self.assertEqual(handed, 1000)
        self.assertEqual(new_handshakes, 0, "a device handshook again with the new process")


if __name__ == "__main__":
    unittest.main()
