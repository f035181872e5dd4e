"""End-to-end tests of coaps:// (docs/bootstrap-and-dtls.md, reliability catalogue §3.3): the real coapgate, and
real DTLS clients: the reference system's documented Node client (node-coap-client, after a
GET /bootstrap), libcoap's coap-client-gnutls and coap-client-openssl, openssl s_client. The
abuse cases (cookieless ClientHello flood, handshakes left unfinished, a full handshake table)
are hand-built DTLS records over plain UDP sockets."""

import os
import re
import signal
import socket
import struct
import subprocess
import time
import unittest

from harness import DEVICES, Server

CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients")
USER = ("8988280666000000097", "901405100000097", "127.0.0.97", "active", "secretkey123",
        "string")
HEX = ("8988280666000000098", "901405100000098", "", "active",
       "00112233445566778899aabbccddeeff", "hex")
INACTIVE = ("8988280666000000096", "901405100000096", "", "inactive", "inactivekey1", "string")
DTLS_DEVICES = DEVICES + [USER, HEX, INACTIVE]
SUITES = ["PSK-AES128-CCM8", "PSK-AES128-CBC-SHA256", "PSK-AES128-GCM-SHA256",
          "PSK-AES128-CBC-SHA", "PSK-AES256-CBC-SHA", "PSK-AES128-CCM"]


def client_hello(message_seq=0, record_seq=0, cookie=b"", suites=(0xC0A8,), random=None):
    """A DTLS 1.2 ClientHello record without extensions (as node-dtls-client sends it). The
    hello that returns a cookie must repeat the first one's random (RFC 6347 §4.2.1)."""
    body = struct.pack(">H", 0xFEFD) + (random or os.urandom(32)) + b"\x00"
    body += bytes([len(cookie)]) + cookie
    body += struct.pack(">H", 2 * len(suites)) + b"".join(struct.pack(">H", s) for s in suites)
    body += b"\x01\x00"
    n = len(body)
    handshake = bytes([1]) + n.to_bytes(3, "big") + struct.pack(">H", message_seq)
    handshake += (0).to_bytes(3, "big") + n.to_bytes(3, "big") + body
    return (bytes([22]) + struct.pack(">HH", 0xFEFD, 0) + record_seq.to_bytes(6, "big")
            + struct.pack(">H", len(handshake)) + handshake)


def hello_verify_cookie(datagram):
    """The cookie of a HelloVerifyRequest record, or None."""
    if len(datagram) < 13 + 12 + 3 or datagram[0] != 22 or datagram[13] != 3:
        return None
    body = datagram[25:]
    return body[3:3 + body[2]]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


class DtlsTests(unittest.TestCase):

    def server(self, extra_toml="", **kwargs):
        return Server(devices=DTLS_DEVICES, extra_toml=extra_toml, **kwargs)

    def libcoap(self, variant, s, identity, key, payload, topic="sec"):
        port = s.coaps_address[1]
        return subprocess.run([f"coap-client-{variant}", "-B", "10", "-m", "post", "-u", identity,
                               "-k", key, "-e", payload, f"coaps://127.0.0.1:{port}/?t={topic}"],
                              capture_output=True, text=True, timeout=30)

    def dtls_counters(self, s):
        start = s.log_count()
        s.signal(signal.SIGUSR1)
        return s.wait_for_log(r"counters \(dtls\): (.*)", start=start).group(1)

    def lines_with(self, s, payload):
        import base64
        value = base64.b64encode(payload.encode()).decode()
        return [l for l in s.sink_lines() if l["payload"].get("value") == value]

    def test_documented_node_client_bootstraps_then_posts(self):
        with self.server() as s:
            r = subprocess.run(["node", os.path.join(CLIENTS, "onboard.js"), "127.0.0.1",
                                str(s.address[1]), str(s.coaps_address[1]), "fromnode",
                                '{"temp":21}'], capture_output=True, text=True, timeout=40)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            import json
            out = json.loads(r.stdout)
            self.assertEqual((out["bootstrap"], out["post"]), ("2.05", "2.04"), out)
            self.assertEqual(out["identity"], DEVICES[0][0])
            [line] = s.wait_for_sink(1)
            self.assertEqual(line["device"]["iccid"], DEVICES[0][0])
            self.assertEqual(line["payload"]["topic"], "fromnode")
            self.assertEqual(s.stop(), 0)

    def test_libcoap_gnutls_and_openssl_clients_post(self):
        with self.server() as s:
            for variant in ("gnutls", "openssl"):
                r = self.libcoap(variant, s, USER[0], USER[4], f"via {variant}")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(len(self.lines_with(s, f"via {variant}")), 1, r.stderr)
            [line] = self.lines_with(s, "via gnutls")
            self.assertEqual(line["device"]["iccid"], USER[0])
            self.assertEqual(line["device"]["ip"], "127.0.0.1")  # as seen, not as registered
            self.assertEqual(s.stop(), 0)

    def test_openssl_negotiates_every_suite(self):
        with self.server() as s:
            for suite in SUITES:
                for identity, key in ((USER[0], USER[4].encode().hex()), (HEX[0], HEX[4])):
                    r = subprocess.run(
                        ["openssl", "s_client", "-dtls1_2", "-brief", "-connect",
                         f"127.0.0.1:{s.coaps_address[1]}", "-psk_identity", identity,
                         "-psk", key, "-cipher", suite],
                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
                    self.assertIn(f"Ciphersuite: {suite}", r.stderr + r.stdout, (suite, r.stderr))

    def test_unknown_identity_wrong_key_and_inactive_device_are_refused(self):
        with self.server() as s:
            for identity, key in (("8988280666000099999", "whatever123"), (USER[0], "wrongkey"),
                                  (INACTIVE[0], INACTIVE[4])):
                r = self.libcoap("gnutls", s, identity, key, f"refused {identity} {key}")
                self.assertNotIn("2.04", r.stdout)
            self.assertEqual(s.sink_lines(), [])
            counters = self.dtls_counters(s)
            self.assertRegex(counters, r"unknown_identity=2")  # unknown and inactive
            self.assertEqual(s.stop(), 0)

    def test_cookieless_hello_flood_allocates_nothing(self):
        with self.server(shards=1) as s:
            base = rss_kib(s.proc.pid)
            answered = 0
            socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
            for i, sock in enumerate(socks):
                sock.bind((f"127.0.2.{i + 1}", 0))
                sock.setblocking(False)
            for round_ in range(250):  # 5,000 spoofed hellos, paced per round
                for sock in socks:
                    sock.sendto(client_hello(), s.coaps_address)
                time.sleep(0.002)
                for sock in socks:
                    try:
                        while True:
                            if hello_verify_cookie(sock.recv(2048)):
                                answered += 1
                    except BlockingIOError:
                        pass
            for sock in socks:
                sock.close()
            self.assertGreater(answered, 2500)
            counters = self.dtls_counters(s)
            self.assertIn("sessions=0", counters)
            self.assertNotIn("handshakes_started", counters)
            self.assertLess(rss_kib(s.proc.pid) - base, 4096, "memory grew under the flood")
            # A real client is still served.
            r = self.libcoap("gnutls", s, USER[0], USER[4], "after the flood")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(len(self.lines_with(s, "after the flood")), 1)
            self.assertEqual(s.stop(), 0)

    def half_handshake(self, s, source):
        """Gets past the cookie exchange, then goes silent: a handshake never finished."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.settimeout(3)
        random = os.urandom(32)
        sock.sendto(client_hello(random=random), s.coaps_address)
        cookie = hello_verify_cookie(sock.recv(2048))
        self.assertTrue(cookie)
        sock.sendto(client_hello(message_seq=1, record_seq=1, cookie=cookie, random=random),
                    s.coaps_address)
        try:
            flight = sock.recv(2048)  # ServerHello...; or nothing when refused
        except socket.timeout:
            flight = None
        if flight is not None:
            self.assertIsNone(hello_verify_cookie(flight), "the cookie was not accepted")
        sock.close()
        return flight

    def test_unfinished_handshakes_time_out(self):
        with self.server("[dtls]\nhandshake_timeout_ms = 300\n", shards=1) as s:
            self.assertIsNotNone(self.half_handshake(s, "127.0.3.1"))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                counters = self.dtls_counters(s)
                if "handshake_timeouts=1" in counters:
                    break
                time.sleep(0.2)
            self.assertIn("handshake_timeouts=1", counters)
            self.assertIn("sessions=0", counters)
            self.assertEqual(s.stop(), 0)

    def metric(self, s, name):
        """The value of an unlabelled sample of /metrics."""
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{s.admin_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return float(re.search(rf"(?m)^{name} (\S+)$", text).group(1))

    def test_metrics_show_a_handshake_in_progress_then_a_session(self):
        with self.server(shards=1) as s:
            self.assertIsNotNone(self.half_handshake(s, "127.0.3.5"))
            # Published by the shard at the end of the turn that handled the hello.
            deadline = time.monotonic() + 10
            while (self.metric(s, "coapgate_dtls_handshakes_in_progress") != 1 and
                   time.monotonic() < deadline):
                time.sleep(0.05)
            self.assertEqual(self.metric(s, "coapgate_dtls_handshakes_in_progress"), 1)
            self.assertEqual(self.metric(s, "coapgate_dtls_sessions"), 0)
            self.assertEqual(self.metric(s, "coapgate_dtls_handshakes_started_total"), 1)
            r = self.libcoap("gnutls", s, USER[0], USER[4], "counted")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(self.metric(s, "coapgate_dtls_handshakes_completed_total"), 1)
            self.assertEqual(s.stop(), 0)

    def test_a_full_handshake_table_refuses_and_recovers(self):
        toml = "[dtls]\nmax_sessions = 1\nmax_handshakes = 1\nhandshake_timeout_ms = 1000\n"
        with self.server(toml, shards=1) as s:
            self.assertIsNotNone(self.half_handshake(s, "127.0.3.2"))
            self.assertIsNone(self.half_handshake(s, "127.0.3.3"))  # refused: no flight
            self.assertRegex(self.dtls_counters(s), r"handshakes_refused=1|table_full_refused=1")
            time.sleep(1.5)  # the first one times out and frees the table
            r = self.libcoap("gnutls", s, USER[0], USER[4], "table free again")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(len(self.lines_with(s, "table free again")), 1)
            self.assertEqual(s.stop(), 0)


    def test_one_stalling_host_does_not_lock_out_another(self):
        # Without the per-source cap the stalling host would hold all three slots.
        toml = "[dtls]\nmax_handshakes = 3\nmax_handshakes_per_source = 2\n"
        with self.server(toml, shards=1) as s:
            self.assertIsNotNone(self.half_handshake(s, "127.0.3.4"))
            self.assertIsNotNone(self.half_handshake(s, "127.0.3.4"))  # another port
            self.assertIsNone(self.half_handshake(s, "127.0.3.4"))  # refused: no flight
            self.assertIn("handshakes_refused_per_source=1", self.dtls_counters(s))
            r = self.libcoap("gnutls", s, USER[0], USER[4], "another host gets in")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(len(self.lines_with(s, "another host gets in")), 1)
            self.assertEqual(s.stop(), 0)

if __name__ == "__main__":
    unittest.main()
