"""Planned restarts end to end (docs/operations.md, "Planned restarts"): coapgate saves its
DTLS sessions and answered exchanges on SIGTERM and the next start with the same config
restores them. The devices are real: the reference system's documented Node client
(node-coap-client, keepAlive) on one DTLS session across the restart, and a plain CoAP
device retransmitting a CON the old process answered."""

import json
import os
import socket
import subprocess
import tempfile
import time
import unittest

from harness import DEVICES, Device, Server, code, parse, post
from test_admin import get, samples, total

CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients")
USER = ("8988280666000000097", "901405100000097", "127.0.0.97", "active", "secretkey123",
        "string")
RESTART_DEVICES = DEVICES + [USER]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KeepAliveClient:
    """node keepalive.js: one request per line on one kept-alive DTLS session."""

    def __init__(self, port, identity, key):
        self.proc = subprocess.Popen(
            ["node", os.path.join(CLIENTS, "keepalive.js"), "127.0.0.1", str(port), identity, key],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def post(self, topic, payload):
        self.proc.stdin.write(f"post {topic} {payload}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()  # the client answers within its own 15 s timeout
        if not line:
            raise AssertionError("keepalive.js exited: " + self.proc.stderr.read())
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RestartTests(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="coapgate-restart-")
        self.state_file = os.path.join(self.dir, "sessions.state")
        self.key_file = os.path.join(self.dir, "restart.key")
        with open(os.open(self.key_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        self.coap_port = free_port()
        self.coaps_port = free_port()

    def server(self, max_age_s=600, key_file=None):
        restart = (f'[restart]\nstate_file = "{self.state_file}"\n'
                   f'key_file = "{key_file or self.key_file}"\nmax_age_s = {max_age_s}\n')
        return Server(devices=RESTART_DEVICES, listen=f"127.0.0.1:{self.coap_port}",
                      coaps=f'"127.0.0.1:{self.coaps_port}"', extra_toml=restart)

    def metrics(self, s):
        _, text = get(s.admin_port, "/metrics")
        return samples(text)

    def test_sessions_and_answers_survive_a_restart(self):
        node = KeepAliveClient(self.coaps_port, USER[0], USER[4])
        try:
            with self.server() as first:
                self.assertEqual(node.post("before", "one"), {"code": "2.04"})
                device = Device(first)  # 127.0.0.1, DEVICES[0]
                request = post(topic="plain", payload=b"once", mid=0x4242, token=b"\x0a\x0b")
                answer = device.request(request)
                self.assertEqual(parse(answer)[1], code(2, 4))
                self.assertEqual(len(first.wait_for_sink(2)), 2)
                # The session's one handshake, in the first process (and the family's name).
                self.assertEqual(
                    total(self.metrics(first), "coapgate_dtls_handshakes_started_total"), 1)
                self.assertEqual(first.stop(), 0)
                saved = first.wait_for_log(
                    r"restart state .*: saved (\d+) DTLS sessions and (\d+) answered exchanges")
                self.assertEqual(int(saved.group(1)), 1)
                self.assertGreaterEqual(int(saved.group(2)), 2)
            self.assertEqual(os.stat(self.state_file).st_mode & 0o777, 0o600)
            with open(self.state_file, "rb") as f:
                self.assertNotIn(USER[0].encode(), f.read())  # encrypted, identity included

            with self.server() as second:
                restored = second.wait_for_log(
                    r"restored (\d+) DTLS sessions \((\d+) not\) and (\d+) answered exchanges")
                self.assertEqual(restored.group(1, 2), ("1", "0"))
                self.assertFalse(os.path.exists(self.state_file), "deleted once loaded")
                # The same session goes on: 2.04, and the new process saw no handshake.
                self.assertEqual(node.post("after", "two"), {"code": "2.04"})
                values = self.metrics(second)
                self.assertEqual(total(values, "coapgate_dtls_handshakes_started_total"), 0)
                self.assertEqual(total(values, "coapgate_restart_sessions_restored_total"), 1)
                self.assertGreaterEqual(
                    total(values, "coapgate_restart_exchanges_restored_total"), 2)
                # The retransmission of the CON answered before the restart: the identical
                # answer, and nothing forwarded again.
                again = device.request(request)
                self.assertEqual(again, answer)
                lines = second.wait_for_sink(1)
                self.assertEqual([l["payload"]["topic"] for l in lines], ["after"])
                values = self.metrics(second)
                self.assertEqual(total(values, "coapgate_duplicate_replayed_total"), 1)
                device.close()
                self.assertEqual(second.stop(), 0)
        finally:
            node.close()

    def test_a_file_older_than_max_age_is_refused(self):
        with self.server() as first:
            device = Device(first)
            self.assertEqual(parse(device.request(post(topic="t", mid=1)))[1], code(2, 4))
            device.close()
            self.assertEqual(first.stop(), 0)
        self.assertTrue(os.path.exists(self.state_file))
        time.sleep(1.5)  # the file is now older than the next start's max_age_s = 1
        with self.server(max_age_s=1) as second:
            m = second.wait_for_log(r"restart state .* refused \(too_old\): (.*)")
            self.assertIn("restart.max_age_s = 1", m.group(1))
            self.assertFalse(os.path.exists(self.state_file), "a stale file is deleted")
            values = self.metrics(second)
            self.assertEqual(values[("coapgate_restart_state_refused_total",
                                     frozenset({("reason", "too_old")}))], 1)
            self.assertEqual(total(values, "coapgate_restart_exchanges_restored_total"), 0)
            self.assertEqual(second.stop(), 0)

    def test_a_wrong_key_is_refused_and_the_server_starts_fresh(self):
        with self.server() as first:
            device = Device(first)
            self.assertEqual(parse(device.request(post(topic="t", mid=2)))[1], code(2, 4))
            device.close()
            self.assertEqual(first.stop(), 0)
        other_key = os.path.join(self.dir, "other.key")
        with open(os.open(other_key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(os.urandom(32).hex())
        with self.server(key_file=other_key) as second:
            second.wait_for_log(r"restart state .* refused \(bad_key_or_corrupt\)")
            self.assertTrue(os.path.exists(self.state_file + ".refused"))
            device = Device(second)
            self.assertEqual(parse(device.request(post(topic="t", mid=3)))[1], code(2, 4))
            device.close()
            values = self.metrics(second)
            self.assertEqual(values[("coapgate_restart_state_refused_total",
                                     frozenset({("reason", "bad_key_or_corrupt")}))], 1)
            self.assertEqual(second.stop(), 0)


if __name__ == "__main__":
    unittest.main()
