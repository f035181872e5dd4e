"""coapgate under systemd: the shipped unit passes `systemd-analyze verify`, and the sd_notify
conversation (READY, STATUS, WATCHDOG, RELOADING, STOPPING) arrives in order on a datagram
socket of the test's own, as systemd's NOTIFY_SOCKET would receive it."""

import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import COAPGATE, Server

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UNIT = os.path.join(REPO, "deploy", "systemd", "coapgate.service")


def verify(text):
    d = tempfile.mkdtemp(prefix="coapgate-unit-")
    path = os.path.join(d, "coapgate.service")
    with open(path, "w") as f:
        f.write(text)
    return subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True,
                          timeout=60)


class UnitFileTests(unittest.TestCase):

    def unit_text(self):
        with open(UNIT) as f:
            # verify checks that ExecStart's binary exists: point it at the one under test.
            return f.read().replace("/usr/bin/coapgate", os.path.abspath(COAPGATE))

    def test_shipped_unit_passes_systemd_analyze_verify(self):
        done = verify(self.unit_text())
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        # verify reports many mistakes as warnings with exit 0: any line about the unit fails.
        self.assertNotIn("coapgate.service:", done.stderr, done.stderr)

    def test_verify_would_catch_a_broken_unit(self):
        done = verify(self.unit_text().replace("Type=notify", "Type=notifyy"))
        self.assertIn("coapgate.service:", done.stderr)

    def test_unit_runs_without_privilege_and_with_the_hardening(self):
        text = self.unit_text()
        for line in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict",
                     "CapabilityBoundingSet=\n", "StateDirectory=coapgate",
                     "ConfigurationDirectory=coapgate", "User=coapgate", "WatchdogSec=",
                     "RestrictAddressFamilies=", "SystemCallFilter=", "LimitNOFILE="):
            self.assertIn(line, text)


class NotifyTests(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="coapgate-notify-")
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def tearDown(self):
        self.sock.close()

    def messages_until(self, wanted, timeout=10):
        """Reads notifications until one contains `wanted`; returns all read so far."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            got.append(data)
            if wanted in data:
                return got
        self.fail(f"no notification with {wanted!r}; got {got!r}")

    def test_ready_status_watchdog_reload_and_stop_in_order(self):
        env = {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": "2000000"}
        with Server(coaps="", env=env) as s:
            first = self.messages_until("READY=1")
            self.assertIn("READY=1", first[0], "READY is the first thing systemd hears")
            self.assertIn("STATUS=", first[0])
            got = self.messages_until("WATCHDOG=1")
            got = self.messages_until("STATUS=")
            self.assertRegex("".join(got), r"STATUS=\d+ datagrams/s, \d+ devices")
            s.signal(signal.SIGHUP)
            got = self.messages_until("RELOADING=1")
            got = self.messages_until("READY=1")
            self.assertEqual(s.stop(), 0)
            got = self.messages_until("STOPPING=1")

    def test_no_notify_socket_is_a_no_op(self):
        with Server(coaps="") as s:
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main()
