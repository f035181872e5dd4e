"""Smoke test of coapgate-loadgen against the real coapgate (issue #7): a short, bounded closed
loop of 2,000 simulated devices, each on its own 127/8 address, that checks correctness only,
never speed. Two more cases cover the DTLS mode (--dtls): 200 devices with keys from the fleet
CSV (make_fleet_csv.py --psk), and 50 devices that fetch their keys with GET /bootstrap first.
One more sends a spoofed-ClientHello flood (--flood, about a second) and checks that the server
answered with HelloVerifyRequests and kept no state.

What it proves: the fleet CSV from make_fleet_csv.py and the loadgen's address plan agree (every
answered device is registered, and the sink names the device the payload names); every request
the loadgen saw acknowledged with 2.04 is in coapgate's file sink; nothing timed out or got a
4.xx; the JSON report has its fields.

Environment: COAPGATE and LOADGEN, the two binaries (set by ctest; see tests/CMakeLists.txt).
Python's standard library only."""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_FLEET_CSV = os.path.join(HERE, "..", "..", "bench", "loadgen", "make_fleet_csv.py")
COAPGATE = os.environ.get("COAPGATE", "build/release/app/coapgate")
LOADGEN = os.environ.get("LOADGEN", "build/release/bench/loadgen/coapgate-loadgen")

DEVICES = 2000
DURATION_S = 3
STARTUP_TIMEOUT_S = 30
PAYLOAD = re.compile(rb"^d=(\d{7}) s=(\d{10}) ")


class Coapgate:
    """The real server with a file sink, on an ephemeral loopback port."""

    def __init__(self, directory, devices_csv, coaps=False):
        self.sink_path = os.path.join(directory, "sink.jsonl")
        config_path = os.path.join(directory, "coapgate.toml")
        with open(config_path, "w") as f:
            f.write(f"""
[admin]
listen = ""

[server]
coap_listen = ["127.0.0.1:0"]
coaps_listen = {'["127.0.0.1:0"]' if coaps else '[]'}
shards = 2

[devices]
file = "{devices_csv}"
state = "{os.path.join(directory, 'state.db')}"

[[sinks]]
type = "file"
path = "{self.sink_path}"
""")
        self.lines = []
        self.cv = threading.Condition()
        self.proc = subprocess.Popen([COAPGATE, "--config", config_path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = int(self._wait_for(r"listening coap://127\.0\.0\.1:(\d+) ").group(1))
        self.coaps_port = (int(self._wait_for(r"listening coaps://127\.0\.0\.1:(\d+) ").group(1))
                           if coaps else None)

    def _read(self):
        for line in self.proc.stderr:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()

    def _wait_for(self, pattern):
        regex = re.compile(pattern)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with self.cv:
            while True:
                for line in self.lines:
                    m = regex.search(line)
                    if m:
                        return m
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError("coapgate did not start:\n" + "\n".join(self.lines))
                self.cv.wait(0.2)

    def stop(self):
        """SIGTERM: coapgate drains its sinks before it exits. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(timeout=5)


def read_acked(ack_log):
    acked = set()
    with open(ack_log) as f:
        for line in f:
            device, seq, code = line.split()
            if code == "2.04":
                acked.add((int(device), int(seq)))
    return acked


def read_delivered(test, sink_path, devices):
    """(device, seq) of every sink record, checking that the registry row matched the payload's
    device and the topic (the row that matched the source address is the payload's device: the
    loadgen and make_fleet_csv.py use the same address plan)."""
    delivered = set()
    with open(sink_path) as f:
        for line in f:
            record = json.loads(line)
            payload = base64.b64decode(record["payload"]["value"])
            m = PAYLOAD.match(payload)
            test.assertIsNotNone(m, payload)
            device, seq = int(m.group(1)), int(m.group(2))
            test.assertLess(device, devices)
            test.assertEqual(record["device"]["iccid"], f"8988280666{device:09d}")
            test.assertEqual(record["payload"]["topic"], "bench")
            delivered.add((device, seq))
    return delivered


def check_closed_loop(test, report, ack_log, sink_path, devices):
    """What every closed-loop run keeps, plain or DTLS: no timeouts and no 4.xx, some 2.04,
    every request answered, timed out or unfinished, no stray or malformed answer, and every
    acknowledged request in the sink. Returns the acknowledged (device, seq)."""
    test.assertEqual(report["timeouts"], 0, report)
    test.assertEqual([c for c in report["codes"] if c.startswith("4.")], [], report)
    test.assertGreater(report["codes"].get("2.04", 0), 0, report)
    test.assertEqual(report["sent"],
                     report["answered"] + report["timeouts"] + report["unfinished"], report)
    test.assertEqual(report["unmatched"], 0, report)
    test.assertEqual(report["malformed"], 0, report)
    acked = read_acked(ack_log)
    test.assertEqual(len(acked), report["codes"]["2.04"])
    missing = acked - read_delivered(test, sink_path, devices)
    test.assertEqual(missing, set(), f"{len(missing)} acknowledged requests not in the sink")
    return acked


class LoadgenSmokeTest(unittest.TestCase):
    def run_dtls(self, devices, psk, keys_of, rewrite=None):
        """A closed loop of `devices` over DTLS; keys_of(server) -> the --keys argument;
        rewrite(csv text) -> the devices file both the server and the loadgen read."""
        directory = tempfile.mkdtemp(prefix="coapgate-loadgen-dtls-")
        devices_csv = os.path.join(directory, "devices.csv")
        text = subprocess.run([sys.executable, MAKE_FLEET_CSV, str(devices)] +
                              (["--psk"] if psk else []), capture_output=True, text=True,
                              check=True).stdout
        with open(devices_csv, "w") as f:
            f.write(rewrite(text) if rewrite else text)
        ack_log = os.path.join(directory, "acks.txt")
        server = Coapgate(directory, devices_csv, coaps=True)
        try:
            run = subprocess.run(
                [LOADGEN, "--target", f"127.0.0.1:{server.coaps_port}", "--dtls",
                 "--keys", keys_of(server, devices_csv), "--devices", str(devices),
                 "--window", "1", "--duration", str(DURATION_S), "--drain-ms", "10000",
                 "--setup-timeout", "30", "--ack-log", ack_log],
                capture_output=True, text=True, timeout=120)
        finally:
            code = server.stop()
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(code, 0, "\n".join(server.lines))
        report = json.loads(run.stdout.strip().splitlines()[-1])
        dtls = report["dtls"]
        self.assertEqual(dtls["handshakes"], devices, report)
        self.assertEqual(dtls["established"], devices, report)
        self.assertEqual(dtls["handshake_failures"] + dtls["handshake_timeouts"], 0, report)
        self.assertEqual(dtls["sessions_lost"], 0, report)
        for field in ("p50", "p99", "p999"):
            self.assertIn(field, dtls["handshake_latency_us"])
        self.assertGreater(dtls["heap_bytes_per_session"], 0, report)
        acked = check_closed_loop(self, report, ack_log, server.sink_path, devices)
        self.assertEqual({device for device, _ in acked}, set(range(devices)))
        return report

    def test_dtls_csv_keys_every_acknowledged_request_reaches_the_sink(self):
        self.run_dtls(200, True, lambda server, csv: f"csv:{csv}")

    def test_dtls_csv_keys_in_any_form_the_server_accepts(self):
        # Hex keys with psk_format spelled "HeX", quoted fields and CRLF line ends: the loadgen
        # reads the file with coapgate's own loader, so it derives the very keys the server does.
        def rewrite(text):
            lines = text.strip("\n").split("\n")
            out = [lines[0]]
            for line in lines[1:]:
                fields = line.split(",")
                fields[5] = "HeX"
                fields[0] = f'"{fields[0]}"'
                out.append(",".join(fields))
            return "\r\n".join(out) + "\r\n"
        self.run_dtls(20, True, lambda server, csv: f"csv:{csv}", rewrite=rewrite)

    def test_flood_of_cookieless_client_hellos_keeps_no_state(self):
        directory = tempfile.mkdtemp(prefix="coapgate-loadgen-flood-")
        devices_csv = os.path.join(directory, "devices.csv")
        with open(devices_csv, "w") as f:
            subprocess.run([sys.executable, MAKE_FLEET_CSV, "10", "--psk"], stdout=f, check=True)
        server = Coapgate(directory, devices_csv, coaps=True)
        try:
            run = subprocess.run(
                [LOADGEN, "--flood", "--target", f"127.0.0.1:{server.coaps_port}",
                 "--flood-count", "2000", "--flood-rate", "2000", "--duration", "20"],
                capture_output=True, text=True, timeout=60)
            with server.cv:
                before = sum("counters (dtls)" in line for line in server.lines)
            server.proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            counters = None
            with server.cv:
                while counters is None:
                    found = [line for line in server.lines if "counters (dtls)" in line]
                    if len(found) > before:
                        counters = found[-1]
                        break
                    if time.monotonic() > deadline or server.proc.poll() is not None:
                        break
                    server.cv.wait(0.2)
        finally:
            code = server.stop()
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(code, 0, "\n".join(server.lines))
        report = json.loads(run.stdout.strip().splitlines()[-1])
        self.assertEqual(report["mode"], "flood", report)
        self.assertEqual(report["sent"], 2000, report)
        self.assertEqual(report["socket_errors"] + report["send_errors"], 0, report)
        self.assertGreater(report["hvr_received"], 0, report)
        self.assertIsNotNone(counters, "no counters (dtls) line after SIGUSR1:\n" +
                             "\n".join(server.lines))
        fields = dict(kv.split("=", 1) for kv in counters.split("counters (dtls): ", 1)[1].split())
        self.assertEqual(fields.get("sessions"), "0", counters)
        self.assertNotIn("handshakes_started", fields, counters)  # zero counters are not logged
        self.assertGreater(int(fields.get("hello_verify_sent", "0")), 0, counters)

    def test_dtls_bootstrap_keys(self):
        report = self.run_dtls(
            50, False, lambda server, csv: f"bootstrap:127.0.0.1:{server.port}")
        self.assertEqual(report["bootstrap"]["ok"], 50, report)
        self.assertEqual(report["dtls"]["keys"], "bootstrap")

    def test_ack_log_all_records_every_outcome_and_sigusr1_ends_the_load(self):
        # 100 registered devices and 20 the server does not know (4.01 each time); the load
        # is ended by SIGUSR1 long before --duration, and the drain still runs.
        directory = tempfile.mkdtemp(prefix="coapgate-loadgen-all-")
        devices_csv = os.path.join(directory, "devices.csv")
        with open(devices_csv, "w") as f:
            subprocess.run([sys.executable, MAKE_FLEET_CSV, "100"], stdout=f, check=True)
        ack_log = os.path.join(directory, "acks.txt")
        server = Coapgate(directory, devices_csv)
        try:
            before_ms = time.monotonic() * 1000
            loadgen = subprocess.Popen(
                [LOADGEN, "--target", f"127.0.0.1:{server.port}", "--devices", "120",
                 "--rate", "400", "--duration", "120", "--drain-ms", "10000",
                 "--ack-log", ack_log, "--ack-log-all"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                time.sleep(1.5)
                loadgen.send_signal(signal.SIGUSR1)
                out, err = loadgen.communicate(timeout=60)
            finally:
                if loadgen.poll() is None:
                    loadgen.kill()
                    loadgen.wait()
            after_ms = time.monotonic() * 1000
        finally:
            code = server.stop()
        self.assertEqual(loadgen.returncode, 0, err)
        self.assertEqual(code, 0, "\n".join(server.lines))
        report = json.loads(out.strip().splitlines()[-1])
        self.assertLess(report["duration_s"], 60, report)  # ended by the signal
        self.assertEqual(report["unfinished"], 0, report)  # drained
        outcomes = []
        with open(ack_log) as f:
            for line in f:
                device, seq, outcome, first_ms = line.split()
                outcomes.append((int(device), int(seq), outcome, int(first_ms)))
        self.assertEqual(len(outcomes), report["answered"] + report["timeouts"], report)
        for device, seq, outcome, first_ms in outcomes:
            self.assertEqual(outcome, "2.04" if device < 100 else "4.01", (device, seq))
            self.assertTrue(before_ms <= first_ms <= after_ms, (first_ms, before_ms, after_ms))
        self.assertEqual(sum(1 for o in outcomes if o[2] == "4.01"), report["codes"]["4.01"])
        acked = {(d, s) for d, s, outcome, _ in outcomes if outcome == "2.04"}
        self.assertEqual(acked - read_delivered(self, server.sink_path, 100), set())

    def test_non_loopback_addresses_need_routed(self):
        run = subprocess.run([LOADGEN, "--target", "10.0.0.1:5683", "--duration", "1"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 2)
        self.assertIn("other IPv4 addresses with --routed", run.stderr)
        run = subprocess.run([LOADGEN, "--target", "127.0.0.1:9", "--first-address",
                              "10.99.0.1", "--duration", "1"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(run.returncode, 2)
        self.assertIn("--first-address must be in 127.0.0.0/8 (or --routed)", run.stderr)

    def test_closed_loop_con_every_acknowledged_request_reaches_the_sink(self):
        directory = tempfile.mkdtemp(prefix="coapgate-loadgen-")
        devices_csv = os.path.join(directory, "devices.csv")
        with open(devices_csv, "w") as f:
            subprocess.run([sys.executable, MAKE_FLEET_CSV, str(DEVICES)], stdout=f, check=True)
        ack_log = os.path.join(directory, "acks.txt")

        server = Coapgate(directory, devices_csv)
        try:
            run = subprocess.run(
                [LOADGEN, "--target", f"127.0.0.1:{server.port}", "--devices", str(DEVICES),
                 "--window", "1", "--duration", str(DURATION_S), "--drain-ms", "10000",
                 "--ack-log", ack_log],
                capture_output=True, text=True, timeout=120)
        finally:
            code = server.stop()
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(code, 0, "\n".join(server.lines))
        self.assertRegex(run.stderr, r"coapgate-loadgen: +1s sent=\d+ answered=\d+")

        report = json.loads(run.stdout.strip().splitlines()[-1])
        for field in ("sent", "answered", "codes", "timeouts", "retransmissions", "duplicates",
                      "unfinished", "rate", "latency_us", "duration_s", "devices", "cpu_s"):
            self.assertIn(field, report)
        for field in ("p50", "p99", "p999"):
            self.assertIn(field, report["latency_us"])
        self.assertEqual(report["devices"], DEVICES)
        self.assertEqual(report["answered"], sum(report["codes"].values()), report)
        acked = check_closed_loop(self, report, ack_log, server.sink_path, DEVICES)
        # Devices take turns in a FIFO, so once a few rounds are answered every one of them
        # has been (this crosses several .254 -> .1 wraps of the address plan).
        if len(acked) >= 2 * DEVICES:
            self.assertEqual({device for device, _ in acked}, set(range(DEVICES)))


if __name__ == "__main__":
    unittest.main()
