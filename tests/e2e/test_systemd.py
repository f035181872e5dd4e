"""coapgate under systemd: the shipped unit passes `systemd-analyze verify`, and the sd_notify
conversation (READY, STATUS, WATCHDOG, RELOADING, STOPPING) arrives in order on a datagram
socket of the test's own, as systemd's NOTIFY_SOCKET would receive it."""

import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from harness import COAPGATE, Device, Server, code, parse, post

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
        for line in ("Type=notify", "NotifyAccess=all", "NoNewPrivileges=yes", "ProtectSystem=strict",
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

    def test_upgrade_makes_a_child_the_main_process_with_no_stopping_in_between(self):
        """`coapgate upgrade`: the running process starts its successor as its own child (so it
        stays in the service's cgroup); the child says MAINPID= before the old one exits, then
        READY=1 and pings the watchdog itself (its WATCHDOG_PID is not the old one's); the old
        one never says STOPPING=1, which systemd would take for the service stopping."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        env = {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": "1000000"}
        # systemd sets WATCHDOG_PID to the main process: so does this wrapper.
        wrapper = ("sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"')
        with Server(coaps="", env=env, wrapper=wrapper) as s:
            s.wait_for_log(r"take-over socket ")
            self.messages_until("READY=1")
            old_pid = s.proc.pid
            done = subprocess.run([COAPGATE, "upgrade", "--config", s.config_path],
                                  capture_output=True, text=True, timeout=180)
            self.assertEqual(done.returncode, 0, done.stderr + "\n".join(s.stderr_lines))
            new_pid = int(done.stdout.split()[-1])
            self.assertNotEqual(new_pid, old_pid)
            try:
                self.assertEqual(s.proc.wait(timeout=30), 0)
                seen = []  # (sender pid, text)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                    try:
                        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
                    except socket.timeout:
                        break
                    pid = struct.unpack("iII", ancillary[0][2][:12])[0] if ancillary else -1
                    seen.append((pid, data.decode()))
                    if pid == new_pid and "WATCHDOG=1" in data.decode():
                        break
                texts = [t for _, t in seen]
                main = [i for i, t in enumerate(texts) if f"MAINPID={new_pid}" in t]
                self.assertTrue(main, seen)
                self.assertTrue(any(p == new_pid and "READY=1" in t for p, t in seen[main[0]:]),
                                seen)
                self.assertTrue(any(p == new_pid and "WATCHDOG=1" in t for p, t in seen), seen)
                self.assertFalse(any("STOPPING=1" in t for t in texts), seen)
                s.wait_for_log(r"take-over from pid \d+: serving on its sockets")
                d = Device(s, "127.0.0.1")
                reply = d.request(post(topic="upgraded", mid=0x6161), timeout=5)
                d.close()
                self.assertEqual(parse(reply)[1], code(2, 4))
            finally:
                os.kill(new_pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while os.path.exists(f"/proc/{new_pid}") and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertFalse(os.path.exists(f"/proc/{new_pid}"), "successor did not exit")

    def test_upgrade_with_nothing_running_exits_1(self):
        with Server(coaps="") as s:
            config = s.config_path
            self.assertEqual(s.stop(), 0)
        done = subprocess.run([COAPGATE, "upgrade", "--config", config], capture_output=True,
                              text=True, timeout=60)
        self.assertEqual(done.returncode, 1)
        self.assertIn("nothing to take over", done.stderr)

    def test_a_stalled_shard_stops_the_watchdog_and_fails_healthz(self):
        # Needs root (or CAP_SYS_PTRACE): one shard thread is stopped with ptrace, the rest of
        # the process runs on, as a shard wedged inside a turn would leave it.
        import ctypes
        import urllib.error
        import urllib.request
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        libc.ptrace.restype = ctypes.c_long
        PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17
        WALL = 0x40000000  # waitpid's __WALL: the thread is not a child process

        def healthz(port):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        env = {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": "1000000"}
        with Server(coaps="", env=env, shards=2) as s:
            self.messages_until("WATCHDOG=1")
            self.assertEqual(healthz(s.admin_port), 200)
            task_dir = f"/proc/{s.proc.pid}/task"
            def comm(tid):
                with open(f"{task_dir}/{tid}/comm") as f:
                    return f.read().strip()
            shard = next(int(t) for t in os.listdir(task_dir) if comm(t) == "shard-1")
            self.assertEqual(libc.ptrace(PTRACE_SEIZE, shard, None, None), 0,
                             os.strerror(ctypes.get_errno()))
            try:
                self.assertEqual(libc.ptrace(PTRACE_INTERRUPT, shard, None, None), 0)
                os.waitpid(shard, WALL)
                s.wait_for_log(r"shard 1 made no progress for \d+ ms: no watchdog ping")
                # No ping after the stall was seen: drain what was queued before, then listen.
                self.sock.settimeout(0.05)
                try:
                    while True:
                        self.sock.recv(4096)
                except socket.timeout:
                    pass
                self.sock.settimeout(1.5)
                quiet = []
                deadline = time.monotonic() + 1.5
                while time.monotonic() < deadline:
                    try:
                        quiet.append(self.sock.recv(4096).decode())
                    except socket.timeout:
                        break
                self.assertFalse(any("WATCHDOG=1" in m for m in quiet), quiet)
                self.assertEqual(healthz(s.admin_port), 503)
            finally:
                libc.ptrace(PTRACE_DETACH, shard, None, None)
            # Running again: the pings and a healthy /healthz come back.
            self.messages_until("WATCHDOG=1")
            deadline = time.monotonic() + 10
            while healthz(s.admin_port) != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(healthz(s.admin_port), 200)
            self.assertEqual(s.stop(), 0)

    def test_no_notify_socket_is_a_no_op(self):
        with Server(coaps="") as s:
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main()
