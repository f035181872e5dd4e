"""The logs end to end: [log] format = "json" writes one JSON object per stderr line, and the
per-device refusal lines name the device, the answer and the reason, every one at debug and
sampled per reason at info. The real coapgate, real UDP sockets, libcoap's coap-client-notls
and coap-client-openssl."""

import json
import re
import subprocess
import time
import unittest

from harness import Device, Server, code, parse, post

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UNKNOWN_SOURCE = "127.0.0.9"  # no device has this address (harness.DEVICES)


def json_lines(s):
    """Every stderr line so far, each parsed as JSON (fails the test on one that is not)."""
    out = []
    for line in list(s.stderr_lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}")
    return out


def wait_for_record(s, match, timeout=10):
    """The first JSON log record for which match(record) is true; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        for record in json_lines(s):
            if match(record):
                return record
        if time.monotonic() > deadline:
            raise AssertionError("no such log record; stderr:\n" + "\n".join(s.stderr_lines))
        time.sleep(0.05)


class JsonDebugLogTests(unittest.TestCase):

    def test_every_line_is_json_and_refusals_carry_device_code_and_reason(self):
        toml = '[log]\nlevel = "debug"\nformat = "json"\n'
        with Server(coaps="", extra_toml=toml) as s:
            host, port = s.address
            out = subprocess.run(["coap-client-notls", "-a", UNKNOWN_SOURCE, "-m", "post", "-e",
                                  "x", "-B", "5", f"coap://{host}:{port}/?t=a"],
                                 capture_output=True, text=True, timeout=20)
            self.assertIn("4.01", out.stdout + out.stderr)
            unknown = wait_for_record(s, lambda r: r.get("reason") == "unknown_device")
            self.assertEqual(unknown["level"], "debug")
            self.assertEqual(unknown["code"], "4.01")
            self.assertTrue(unknown["addr"].startswith(UNKNOWN_SOURCE + ":"), unknown)
            self.assertNotIn("iccid", unknown)
            self.assertIn(UNKNOWN_SOURCE, unknown["msg"])
            self.assertIn("unknown_device", unknown["msg"])

            inactive = Device(s, "127.0.0.3")
            self.assertEqual(parse(inactive.request(post(topic="a")))[1], code(4, 1))
            inactive.close()
            r = wait_for_record(s, lambda r: r.get("reason") == "inactive")
            self.assertEqual((r["iccid"], r["code"]), ("8988280666000000003", "4.01"))

            device = Device(s, "127.0.0.1")
            self.assertEqual(parse(device.request(post(topic="bad topic")))[1], code(4, 0))
            device.close()
            r = wait_for_record(s, lambda r: r.get("reason") == "bad_topic")
            self.assertEqual((r["iccid"], r["code"]), ("8988280666000000001", "4.00"))
            self.assertTrue(r["addr"].startswith("127.0.0.1:"), r)

            for record in json_lines(s):
                self.assertRegex(record["ts"], TS)
                self.assertIn(record["level"], ("debug", "info", "warn", "error", "critical"))
                self.assertIsInstance(record["msg"], str)
            self.assertEqual(s.stop(), 0)
            for record in json_lines(s):  # the shutdown lines too
                self.assertRegex(record["ts"], TS)

    def test_failed_handshake_names_the_identity(self):
        toml = '[log]\nlevel = "debug"\nformat = "json"\n'
        with Server(extra_toml=toml) as s:
            port = s.coaps_address[1]
            subprocess.run(["coap-client-openssl", "-B", "5", "-m", "post", "-u",
                            "8988280666999999999", "-k", "nosuchkey123", "-e", "x",
                            f"coaps://127.0.0.1:{port}/?t=a"],
                           capture_output=True, text=True, timeout=30)
            r = wait_for_record(s, lambda r: r.get("reason") == "unknown_identity")
            self.assertEqual(r["iccid"], "8988280666999999999")
            self.assertNotIn("code", r)
            self.assertIn("DTLS handshake failed", r["msg"])
            s.stop()


class SampledInfoLogTests(unittest.TestCase):

    def test_a_flood_of_one_reason_is_a_few_lines_with_the_suppressed_count(self):
        with Server(coaps="", extra_toml='[log]\nformat = "json"\n') as s:
            d = Device(s, UNKNOWN_SOURCE)
            sent = 0
            for mid in range(50):
                self.assertEqual(parse(d.request(post(topic="a", mid=mid)))[1], code(4, 1))
                sent += 1
            refusals = [r for r in json_lines(s) if r.get("reason") == "unknown_device"]
            self.assertLessEqual(len(refusals), 3, refusals)
            self.assertGreaterEqual(len(refusals), 1)
            self.assertEqual(refusals[0]["level"], "info")
            # Keep refusing until the next sampled line arrives (one per reason per 10 s):
            # it carries the count of everything held back in between.
            deadline = time.monotonic() + 40
            while not any("suppressed" in r for r in refusals):
                self.assertLess(time.monotonic(), deadline, "no line with a suppressed count")
                self.assertEqual(parse(d.request(post(topic="a", mid=sent)))[1], code(4, 1))
                sent += 1
                time.sleep(0.2)
                refusals = [r for r in json_lines(s) if r.get("reason") == "unknown_device"]
            d.close()
            self.assertEqual(s.stop(), 0)
            refusals = [r for r in json_lines(s) if r.get("reason") == "unknown_device"]
            # Every refusal is either a line or counted in a later line's "suppressed", except
            # those after the last line (still held back when the server stopped).
            accounted = len(refusals) + sum(r.get("suppressed", 0) for r in refusals)
            self.assertLessEqual(accounted, sent)
            self.assertGreaterEqual(sum(r.get("suppressed", 0) for r in refusals), 49)
            line = next(r for r in refusals if "suppressed" in r)
            self.assertIn(f"({line['suppressed']} more suppressed)", line["msg"])

    def test_the_command_line_level_overrides_the_file(self):
        # At "warn" the startup lines the harness waits for would not appear at all.
        with Server(coaps="", extra_toml='[log]\nlevel = "warn"\n',
                    args=("--log-level", "debug")) as s:
            d = Device(s, UNKNOWN_SOURCE)
            self.assertEqual(parse(d.request(post(topic="a")))[1], code(4, 1))
            d.close()
            s.wait_for_log(r" debug device at 127\.0\.0\.9:\d+: 4\.01 Unauthorized: unknown_device")
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main()
