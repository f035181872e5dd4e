"""End-to-end tests of the ingest server (issue #3): the real coapgate binary on ephemeral
loopback ports, real sockets, libcoap's coap-client-notls, the file sink. Every test class
runs once per I/O backend (io_uring, recvmmsg)."""

import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import (ACK, CON, GET, NON, POST, PUT, RST, Device, Server, b64, code, message,
                     parse, post)

CHANGED = code(2, 4)
BAD_REQUEST = code(4, 0)
UNAUTHORIZED = code(4, 1)
BAD_OPTION = code(4, 2)
NOT_FOUND = code(4, 4)
TOO_LARGE = code(4, 13)
UNAVAILABLE = code(5, 3)


def sighup(server, log_pattern):
    """Sends SIGHUP and waits for the log line (matching `log_pattern`) the reload ends with."""
    mark = server.log_count()
    server.signal(signal.SIGHUP)
    server.wait_for_log(log_pattern, start=mark)


class IngestTests:
    """Mixed into one TestCase per backend (IO below)."""

    IO = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(io=cls.IO)

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        if rc != 0:
            raise AssertionError(f"coapgate exited {rc}")

    def setUp(self):
        self.device = Device(self.server, "127.0.0.1")
        self.mid = (os.getpid() * 7919 + id(self)) & 0xFFFF

    def tearDown(self):
        self.device.close()

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def lines_with(self, payload):
        return [l for l in self.server.sink_lines() if l["payload"].get("value") == b64(payload)]

    def test_backend_in_use(self):
        self.server.wait_for_log(rf"io={self.IO}")

    def test_libcoap_client_post_is_forwarded(self):
        payload = f"libcoap-{self.IO}".encode()
        host, port = self.server.address
        out = subprocess.run(["coap-client-notls", "-m", "post", "-e", payload.decode(), "-B", "5",
                              f"coap://{host}:{port}/?t=a/b"],
                             capture_output=True, text=True, timeout=20)
        self.assertNotRegex(out.stdout + out.stderr, r"\b[45]\.\d\d\b", out.stdout + out.stderr)
        deadline = time.monotonic() + 5
        while not self.lines_with(payload) and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = self.lines_with(payload)
        self.assertEqual(len(lines), 1)
        line = lines[0]
        self.assertEqual(line["type"], "TELEMETRY_DATA")
        self.assertEqual(line["source"], "COAP")
        self.assertEqual(line["device"], {"iccid": "8988280666000000001",
                                          "imsi": "901405100000001", "ip": "127.0.0.1"})
        self.assertEqual(line["payload"], {"type": "STRING", "encoding": "base64",
                                           "value": b64(payload), "topic": "a/b"})
        self.assertRegex(line["id"], r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        self.assertRegex(line["received"], r"^\d{13}$")

    def test_con_post_gets_piggybacked_changed_with_token(self):
        mid = self.next_mid()
        reply = self.device.request(post("t1", b"con-post", mid=mid, token=b"\xaa\xbb"))
        self.assertIsNotNone(reply)
        self.assertEqual(reply, bytes([0x62, CHANGED]) + mid.to_bytes(2, "big") + b"\xaa\xbb")

    def test_non_post_gets_non_changed(self):
        reply = self.device.request(post("t1", b"non-post", mid=self.next_mid(), type_=NON,
                                         token=b"\x09"))
        type_, c, _, token, _, _ = parse(reply)
        self.assertEqual((type_, c, token), (NON, CHANGED, b"\x09"))

    def test_data_path_and_no_topic(self):
        payload = f"data-{self.IO}".encode()
        reply = self.device.request(post(None, payload, mid=self.next_mid(), path="data"))
        self.assertEqual(parse(reply)[1], CHANGED)
        lines = self.server.wait_for_sink(0) and self.lines_with(payload)
        self.assertEqual(len(lines), 1)
        self.assertNotIn("topic", lines[0]["payload"])

    def test_topic_table(self):
        for topic in ["a//b", "a+b", "#", "x" * 254, "a b"]:
            payload = f"bad-topic-{topic[:5]}-{self.IO}".encode()
            reply = self.device.request(post(topic, payload, mid=self.next_mid()))
            self.assertEqual(parse(reply)[1], BAD_REQUEST, topic)
            self.assertEqual(self.lines_with(payload), [])
        # repeated t
        d = message(CON, POST, self.next_mid(), b"\x01", [(15, b"t=a"), (15, b"t=b")], b"rep")
        self.assertEqual(parse(self.device.request(d))[1], BAD_REQUEST)
        # valid edge cases
        for topic in ["x" * 253, "a/b_c/D9", "/lead"]:
            reply = self.device.request(post(topic, b"ok", mid=self.next_mid()))
            self.assertEqual(parse(reply)[1], CHANGED, topic)

    def test_unknown_and_inactive_devices_get_unauthorized(self):
        for source in ["127.0.0.9", "127.0.0.3"]:  # unknown, inactive
            device = Device(self.server, source)
            payload = f"unauth-{source}-{self.IO}".encode()
            reply = device.request(post("t", payload, mid=self.next_mid()))
            device.close()
            type_, c, _, _, _, body = parse(reply)
            self.assertEqual((type_, c, body), (ACK, UNAUTHORIZED, b"Unauthorized"), source)
            time.sleep(0.1)
            self.assertEqual(self.lines_with(payload), [])

    def test_duplicates_get_identical_replies_and_are_forwarded_once(self):
        mid = self.next_mid()
        payload = f"dup-{self.IO}".encode()
        datagram = post("dup", payload, mid=mid, token=b"\x11\x22\x33\x44")
        first = self.device.request(datagram)
        self.assertEqual(parse(first)[1], CHANGED)
        replies = [self.device.request(datagram) for _ in range(4)]
        self.assertEqual(replies, [first] * 4)
        time.sleep(0.2)
        self.assertEqual(len(self.lines_with(payload)), 1)
        # Same MID, another token: a new message (a rebooted device reusing MIDs).
        again = self.device.request(post("dup", payload, mid=mid, token=b"\x55"))
        self.assertEqual(parse(again)[1], CHANGED)
        self.assertEqual(len(self.server.wait_for_sink(0) and self.lines_with(payload)), 2)

    def test_errors_are_replayed_for_duplicates_too(self):
        device = Device(self.server, "127.0.0.9")
        datagram = post("t", b"x", mid=self.next_mid())
        first = device.request(datagram)
        self.assertEqual(device.request(datagram), first)
        device.close()

    def test_malformed_datagrams(self):
        cases = [
            (b"\x40\x02\x12", None),                            # P03 too short: silence
            (b"\x80\x02\x12\x34", None),                        # P02 version 2: silence
            (b"\x49\x02\x12\x34" + bytes(9), b"\x70\x00\x12\x34"),  # P04 TKL 9: RST
            (b"\x40\x02\x12\x34\xff", b"\x70\x00\x12\x34"),     # P07: RST
            (b"\x50\x02\x12\x34\xff", None),                    # same in NON: silence
            (b"\x40\x02\x12\x34\xbe\x01", b"\x70\x00\x12\x34"),  # P10: RST
            (b"\x40\x00\x12\x34", b"\x70\x00\x12\x34"),         # P16 ping: RST
            (b"\x60\x00\x12\x34", None),                        # stray ACK: silence
            (b"\x40\x45\x12\x34", b"\x70\x00\x12\x34"),         # P24 unsolicited response: RST
        ]
        for datagram, expected in cases:
            reply = self.device.request(datagram, timeout=0.5 if expected is None else 3)
            self.assertEqual(reply, expected, datagram.hex())
        # P18: unknown critical option → 4.02
        reply = self.device.request(message(CON, POST, 0x1235, b"", [(9, b"")]))
        self.assertEqual(parse(reply)[1], BAD_OPTION)
        # GET / → 4.04 "Not Found" like the reference system
        reply = self.device.request(message(CON, GET, 0x1236, b"", [(15, b"t=1")]))
        self.assertEqual(parse(reply)[1:6:4], (NOT_FOUND, b"Not Found"))
        # the server keeps serving
        reply = self.device.request(post("after", b"still-alive", mid=self.next_mid()))
        self.assertEqual(parse(reply)[1], CHANGED)

    def test_oversized_payloads_get_413_with_size1(self):
        for size in [1025, 1500, 3000, 9000]:  # 3000 and 9000 exceed the receive buffer
            reply = self.device.request(post("big", b"x" * size, mid=self.next_mid()))
            self.assertIsNotNone(reply, size)
            _, c, _, _, options, _ = parse(reply)
            self.assertEqual(c, TOO_LARGE, size)
            self.assertIn((60, (1024).to_bytes(2, "big")), options)


class IngestIoUring(IngestTests, unittest.TestCase):
    IO = "io_uring"


class IngestRecvmmsg(IngestTests, unittest.TestCase):
    IO = "recvmmsg"


class LifecycleTests(unittest.TestCase):
    def test_dedup_entries_expire(self):
        with Server(extra_toml="[coap]\nexchange_lifetime_s = 1\nnon_lifetime_s = 1\n") as s:
            d = Device(s)
            datagram = post("exp", b"expiring", mid=0x4242, token=b"\x01")
            self.assertEqual(parse(d.request(datagram))[1], CHANGED)
            self.assertEqual(parse(d.request(datagram))[1], CHANGED)
            self.assertEqual(len(s.wait_for_sink(1)), 1)
            time.sleep(2.5)  # past the configured lifetime: the same message is new again
            self.assertEqual(parse(d.request(datagram))[1], CHANGED)
            self.assertEqual(len(s.wait_for_sink(2)), 2)
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_ipv6(self):
        with Server(listen="[::1]:0") as s:
            d = Device(s, "::1")
            reply = d.request(post("v6", b"over-ipv6", mid=7))
            self.assertEqual(parse(reply)[1], CHANGED)
            lines = s.wait_for_sink(1)
            self.assertEqual(lines[0]["device"]["ip"], "::1")
            self.assertEqual(lines[0]["device"]["iccid"], "8988280666000000006")
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_sighup_adds_a_device_without_restart(self):
        with Server() as s:
            d = Device(s, "127.0.0.77")
            self.assertEqual(parse(d.request(post("h", b"before", mid=1)))[1], UNAUTHORIZED)
            with open(s.devices_path, "a") as f:
                f.write("8988280666000000077,901405100000077,127.0.0.77,active,,\n")
            sighup(s, r"reloaded .*devices")
            self.assertEqual(parse(d.request(post("h", b"after", mid=2)))[1], CHANGED)
            # An invalid file keeps the old registry.
            with open(s.devices_path, "a") as f:
                f.write("not,a,valid,row\n")
            sighup(s, r"reload failed, keeping the previous devices")
            self.assertEqual(parse(d.request(post("h", b"still", mid=3)))[1], CHANGED)
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_sigterm_under_load_keeps_every_acknowledged_message(self):
        with Server(shards=2) as s:
            acked = {}
            stop = threading.Event()

            def device_loop(index):
                source = f"127.0.1.{10 + index}"
                d = Device(s, source)
                seq = 0
                deadline = time.monotonic() + 20
                while not stop.is_set() and seq < 3000 and time.monotonic() < deadline:
                    payload = f"{source}/{seq}".encode()
                    reply = d.request(post("load", payload, mid=seq & 0xFFFF, token=seq.to_bytes(4, "big")), timeout=2)
                    if reply is None:
                        break  # the server has gone
                    if parse(reply)[1] == CHANGED:
                        acked[payload] = True
                    seq += 1
                d.close()

            threads = [threading.Thread(target=device_loop, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            s.signal(signal.SIGTERM)
            rc = s.proc.wait(timeout=30)
            stop.set()
            for t in threads:
                t.join()
            self.assertEqual(rc, 0)
            self.assertGreater(len(acked), 0)
            delivered = {l["payload"]["value"] for l in s.sink_lines()}
            missing = [p for p in acked if b64(p) not in delivered]
            self.assertEqual(missing, [], f"{len(missing)} acknowledged messages missing")

    def test_sigusr1_logs_counters(self):
        with Server() as s:
            d = Device(s)
            self.assertEqual(parse(d.request(post("c", b"counted", mid=11)))[1], CHANGED)
            d.request(b"\x40\x00\x00\x01")  # a ping: one RST
            d.close()
            mark = s.log_count()
            s.signal(signal.SIGUSR1)
            m = s.wait_for_log(r"counters: (.*)", start=mark)
            counters = dict(kv.split("=") for kv in m.group(1).split())
            self.assertEqual(counters["received"], "2")
            self.assertEqual(counters["reply_2.04"], "1")
            self.assertEqual(counters["reset"], "1")
            self.assertEqual(counters["accepted"], "1")
            self.assertEqual(s.stop(), 0)

    def test_auto_falls_back_to_recvmmsg_without_io_uring(self):
        wrapper = os.environ.get("WITHOUT_IO_URING")
        if not wrapper:
            self.skipTest("WITHOUT_IO_URING not set (run through ctest)")
        with Server(io="auto", shards=1, wrapper=(wrapper,)) as s:
            s.wait_for_log(r"io_uring unavailable .*; using recvmmsg")
            s.wait_for_log(r"io=recvmmsg")
            d = Device(s)
            for mid in range(3):
                self.assertEqual(parse(d.request(post("f", b"fallback", mid=mid)))[1], CHANGED)
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_wildcard_listener_replies_from_the_address_asked(self):
        for io in ("io_uring", "recvmmsg"):
            with Server(io=io, listen="0.0.0.0:0", shards=1) as s:
                port = s.address[1]
                for target in ("127.0.0.5", "127.0.0.1"):
                    # A connected socket only accepts datagrams from the address it connected
                    # to, as a device behind a NAT effectively does.
                    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    d.bind(("127.0.0.1", 0))
                    d.connect((target, port))
                    d.settimeout(3)
                    d.send(post("w", f"wild-{io}-{target}".encode(), mid=target.__hash__() & 0xFFFF))
                    reply = d.recv(100)
                    self.assertEqual(parse(reply)[1], CHANGED, (io, target))
                    d.close()
                self.assertEqual(s.stop(), 0)

    def test_enqueue_ack_mode(self):
        with Server(extra_toml='[coap]\nack = "enqueue"\n') as s:
            d = Device(s)
            self.assertEqual(parse(d.request(post("q", b"enqueued", mid=9)))[1], CHANGED)
            self.assertEqual(len(s.wait_for_sink(1)), 1)
            d.close()
            self.assertEqual(s.stop(), 0)


class StalledSinkTests(unittest.TestCase):
    """The file sink writes into a pipe whose reader never reads: once the pipe is full, the
    delivery contract must hold (docs/delivery.md; reliability reference I1–I4)."""

    def test_stalled_sink(self):
        import tempfile
        fifo_dir = tempfile.mkdtemp(prefix="coapgate-fifo-")
        fifo = os.path.join(fifo_dir, "sink")
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open, not read (yet)
        s = Server(shards=1, extra_toml="[coap]\nresponse_budget_ms = 1000\nbusy_max_age_s = 5\n",
                   sink_path=fifo, drain_timeout_ms=1000)
        with s:
            d = Device(s)
            replies = {}

            def record(reply):
                _, c, mid, _, options, _ = parse(reply)
                replies.setdefault(mid, []).append((c, dict(options)))
                return c

            # 1. One request at a time until the pipe (64 KiB, ~170 lines) is full: 2.04s,
            #    then the first 5.03 once the write blocks and the budget runs out.
            mid = 0
            while mid < 2000:
                reply = d.request(post("stall", f"m{mid}".encode(), mid=mid,
                                       token=mid.to_bytes(2, "big")), timeout=10)
                self.assertIsNotNone(reply, mid)
                mid += 1
                if record(reply) == UNAVAILABLE:
                    break
            codes = [v[0][0] for v in replies.values()]
            self.assertGreater(codes.count(CHANGED), 0)
            self.assertEqual(codes[-1], UNAVAILABLE)
            # A burst while stalled: each request exactly one answer, all 5.03.
            for m in range(mid, mid + 50):
                d.send(post("stall", f"m{m}".encode(), mid=m, token=m.to_bytes(2, "big")))
            for _ in range(10 * (mid + 50)):  # bounded: a reply storm fails below
                reply = d.recv(timeout=3)
                if reply is None:
                    break
                record(reply)
            self.assertEqual(len(replies), mid + 50, "every request gets an answer")
            self.assertTrue(all(len(v) == 1 for v in replies.values()), "and only one")
            for v in replies.values():
                c, options = v[0]
                self.assertIn(c, (CHANGED, UNAVAILABLE))
                if c == UNAVAILABLE:  # Max-Age jittered in [5, 10]
                    self.assertIn(int.from_bytes(options[14], "big"), range(5, 11))
            # 2. A duplicate while the first copy is pending gets no answer; the first copy
            #    gets 5.03 when the budget runs out; a later duplicate gets the same bytes.
            x = post("stall", b"x", mid=5000, token=b"\x77")
            d.send(x)
            d.send(x)
            first = d.recv(timeout=3)
            self.assertEqual(parse(first)[1], UNAVAILABLE)
            self.assertIsNone(d.recv(timeout=0.5), "the pending duplicate must stay unanswered")
            self.assertEqual(d.request(x), first)
            d.close()
            # 3. SIGTERM with the output stalled: a bounded shutdown, non-zero (not all written).
            rc = s.stop(timeout=15)
            self.assertEqual(rc, 1)
            # 4. Every message answered 2.04 is in the pipe.
            data = b""
            while True:
                try:
                    chunk = os.read(reader, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                data += chunk
            os.close(reader)
            import json
            written = {json.loads(l)["payload"]["value"] for l in data.decode().splitlines()}
            acked = [mid for mid, v in replies.items() if v[0][0] == CHANGED]
            missing = [mid for mid in acked if b64(f"m{mid}".encode()) not in written]
            self.assertEqual(missing, [])


T_FEAT = ('{"sense":['
          '{"asset":"Temperature","value":{"byte":0,"bytelength":2,"type":"int"}},'
          '{"asset":"Humidity","value":{"byte":2,"bytelength":2,"type":"uint"}},'
          '{"asset":"Switch","value":{"byte":4,"type":"boolean"}}]}')
T_ALARM = '{"sense":[{"asset":"motion","value":{"byte":0,"bytelength":1,"type":"boolean"}}]}'
T_LOC = ('{"sense":[{"asset":"longitude","custom_type":"location_long",'
         '"value":{"byte":0,"bytelength":8,"type":"float"}}]}')


def write_file(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class EnergySaverTests(unittest.TestCase):
    """Binary payloads translated with templates on the way to the sink (issue #6)."""

    def start(self, template, extra="", device_map=None):
        import tempfile
        d = tempfile.mkdtemp(prefix="coapgate-es-")
        self.template_path = write_file(d, "template.json", template)
        toml = f'[energy_saver]\ncoap_template = "{self.template_path}"\n{extra}'
        if device_map is not None:
            lines = ["iccid,template"]
            for iccid, text in device_map.items():
                lines.append(f"{iccid},{write_file(d, iccid + '.json', text)}")
            toml += f'device_templates = "{write_file(d, "map.csv", chr(10).join(lines))}"\n'
        return Server(extra_toml=toml)

    def test_binary_post_arrives_as_translated_json(self):
        with self.start(T_FEAT) as s:
            d = Device(s)
            reply = d.request(post("es", bytes.fromhex("001a003700"), mid=1))
            self.assertEqual(parse(reply)[1], CHANGED)
            line = s.wait_for_sink(1)[0]
            self.assertEqual(line["type"], "TELEMETRY_DATA")
            self.assertEqual(line["payload"], {"type": "JSON", "topic": "es", "value": {
                "Temperature": 26, "Humidity": 55, "Switch": False}})
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_untranslatable_payload_becomes_an_error_event(self):
        with self.start(T_LOC) as s:
            d = Device(s)
            self.assertEqual(parse(d.request(post("g", b"\x01", mid=2)))[1], CHANGED)
            line = s.wait_for_sink(1)[0]
            self.assertEqual(line["type"], "ERROR")
            self.assertEqual(line["error"]["message"], "Translator[UserPayloadError]")
            self.assertEqual(line["error"]["description"],
                             "Asset path:longitude, Error: can't extract [0:8] from 1 bytes")
            self.assertEqual(line["payload"], {"type": "STRING", "encoding": "base64",
                                               "value": "AQ==", "topic": "g"})
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_reject_policy_answers_bad_request(self):
        with self.start(T_LOC, extra='on_error = "reject"\n') as s:
            d = Device(s)
            datagram = post("g", b"\x01", mid=3)
            reply = d.request(datagram)
            self.assertEqual(parse(reply)[1], BAD_REQUEST)
            self.assertEqual(d.request(datagram), reply, "a duplicate gets the same 4.00")
            lines = s.wait_for_sink(1)
            self.assertEqual([l["type"] for l in lines], ["ERROR"])
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_per_device_template_overrides_the_global_one(self):
        with self.start(T_FEAT, device_map={"8988280666000000002": T_ALARM}) as s:
            a, b = Device(s, "127.0.0.1"), Device(s, "127.0.0.2")
            self.assertEqual(parse(a.request(post("x", bytes.fromhex("001a003700"), mid=4)))[1], CHANGED)
            self.assertEqual(parse(b.request(post("x", b"\x01", mid=5)))[1], CHANGED)
            lines = s.wait_for_sink(2)
            by_ip = {l["device"]["ip"]: l["payload"]["value"] for l in lines}
            self.assertEqual(by_ip["127.0.0.1"], {"Temperature": 26, "Humidity": 55, "Switch": False})
            self.assertEqual(by_ip["127.0.0.2"], {"motion": True})
            a.close()
            b.close()
            self.assertEqual(s.stop(), 0)

    def test_sighup_reloads_the_template(self):
        with self.start(T_FEAT) as s:
            d = Device(s)
            write_file(os.path.dirname(self.template_path), "template.json", T_ALARM)
            sighup(s, r"reloaded the energy saver templates")
            self.assertEqual(parse(d.request(post("x", b"\x01", mid=6)))[1], CHANGED)
            self.assertEqual(s.wait_for_sink(1)[0]["payload"]["value"], {"motion": True})
            # A broken template keeps the previous one.
            write_file(os.path.dirname(self.template_path), "template.json", '{"sense":[{}]}')
            sighup(s, r"reload failed, keeping the previous templates")
            self.assertEqual(parse(d.request(post("x", b"\x00", mid=7)))[1], CHANGED)
            self.assertEqual(s.wait_for_sink(2)[1]["payload"]["value"], {"motion": False})
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_invalid_template_stops_startup_with_exit_2(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="coapgate-es-")
        path = write_file(d, "bad.json", '{"sense":[{"asset":"a","value":{"byte":0,"type":"integer"}}]}')
        config = write_file(d, "c.toml", f'[energy_saver]\ncoap_template = "{path}"\n')
        out = subprocess.run([os.environ.get("COAPGATE", "build/release/app/coapgate"),
                              "--check-config", "--config", config],
                             capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 2)
        self.assertIn("sense[0].value.type: unknown type", out.stderr)


class CommandLineTests(unittest.TestCase):
    def run_coapgate(self, *args, config_text=None):
        import tempfile
        cmd = [os.environ.get("COAPGATE", "build/release/app/coapgate")]
        if config_text is not None:
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                f.write(config_text)
            cmd += ["--config", f.name]
        return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=20)

    def test_check_config_accepts_defaults(self):
        out = self.run_coapgate("--check-config", config_text="")
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_bad_value_exits_2_naming_the_key(self):
        out = self.run_coapgate("--check-config", config_text="[coap]\nmax_payload = 0\n")
        self.assertEqual(out.returncode, 2)
        self.assertIn("coap.max_payload", out.stderr)
        self.assertEqual(len(out.stderr.strip().splitlines()), 1, out.stderr)

    def test_unknown_key_exits_2(self):
        out = self.run_coapgate("--check-config", config_text="[server]\nshardz = 1\n")
        self.assertEqual(out.returncode, 2)
        self.assertIn("server.shardz", out.stderr)

    def test_bad_config_also_stops_the_server(self):
        out = self.run_coapgate(config_text="[server]\nio = \"magic\"\n")
        self.assertEqual(out.returncode, 2)
        self.assertIn("server.io", out.stderr)

    def test_translate_prints_json_or_the_error(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="coapgate-cli-")
        feat = write_file(d, "feat.json", T_FEAT)
        loc = write_file(d, "loc.json", T_LOC)
        out = self.run_coapgate("translate", "--template", feat, "--base64", "ABoANwA=")
        self.assertEqual((out.returncode, out.stdout),
                         (0, '{"Temperature":26,"Humidity":55,"Switch":false}\n'))
        out = self.run_coapgate("translate", "--template", feat, "--hex", "00 1a 00 37 00")
        self.assertEqual(out.stdout, '{"Temperature":26,"Humidity":55,"Switch":false}\n')
        out = self.run_coapgate("translate", "--template", loc, "--hex", "01")
        self.assertEqual((out.returncode, out.stdout),
                         (1, "Asset path:longitude, Error: can't extract [0:8] from 1 bytes\n"))
        out = self.run_coapgate("translate", "--template", feat)
        self.assertEqual(out.returncode, 2)
        out = self.run_coapgate("translate", "--template", feat, "--base64", "!!")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--base64", out.stderr)

    def test_invalid_devices_file_exits_2(self):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            f.write("iccid,imsi,ip,status,psk,psk_format\n123,x,1.2.3.4,active,,\n")
        out = self.run_coapgate("--check-config", config_text=f'[devices]\nfile = "{f.name}"\n')
        self.assertEqual(out.returncode, 2)
        self.assertIn(f.name, out.stderr)

    def test_check_config_fails_with_exit_1_when_the_state_directory_is_missing(self):
        import tempfile
        state = os.path.join(tempfile.mkdtemp(prefix="coapgate-cli-"), "gone", "state.db")
        out = self.run_coapgate("--check-config", config_text=f'[devices]\nstate = "{state}"\n')
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn(": devices.state: directory ", out.stderr)
        self.assertIn(os.path.dirname(state), out.stderr)

    def test_check_config_warns_about_a_missing_devices_file_and_exits_0(self):
        import tempfile
        missing = os.path.join(tempfile.mkdtemp(prefix="coapgate-cli-"), "devices.csv")
        out = self.run_coapgate("--check-config", config_text=f'[devices]\nfile = "{missing}"\n')
        self.assertEqual(out.returncode, 0, out.stderr)
        warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
        self.assertEqual(len(warnings), 1, out.stderr)
        self.assertIn(f"devices.file: {missing} does not exist", warnings[0])

    def test_check_config_errors_name_the_config_file_and_the_key(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="coapgate-cli-")
        cases = [(f'[devices]\nfile = "{d}"\n', "devices.file: "),
                 (f'[energy_saver]\ncoap_template = "{d}/none.json"\n',
                  "energy_saver.coap_template: "),
                 (f'[[sinks]]\ntype = "file"\npath = "{d}/none/out.log"\n', "sinks[0]: ")]
        for text, key in cases:
            config = write_file(d, "c.toml", text)
            out = subprocess.run([os.environ.get("COAPGATE", "build/release/app/coapgate"),
                                  "--check-config", "--config", config],
                                 capture_output=True, text=True, timeout=20)
            self.assertEqual(out.returncode, 2, out.stderr)
            self.assertTrue(out.stderr.startswith(f"{config}: {key}"), out.stderr)
            # Starting the server with it says the same: file and key, and a non-zero exit.
            devices = f'[devices]\nstate = "{d}/state.db"\n'
            rest = text
            if text.startswith("[devices]\n"):
                devices, rest = devices + text[len("[devices]\n"):], ""
            serve = write_file(d, "serve.toml",
                               '[server]\ncoap_listen = ["127.0.0.1:0"]\ncoaps_listen = []\n'
                               '[admin]\nlisten = ""\n' + devices + rest)
            out = subprocess.run([os.environ.get("COAPGATE", "build/release/app/coapgate"),
                                  "--config", serve], capture_output=True, text=True, timeout=20)
            self.assertNotEqual(out.returncode, 0, out.stderr)
            self.assertRegex(out.stderr, rf"error {re.escape(serve)}: {re.escape(key)}")



class SteeringTests(unittest.TestCase):
    """Source-address steering over two shards: every datagram of one device address reaches
    the same shard whatever its source port, so a NAT rebind keeps the device on the shard
    that holds its state. Per-shard arrivals are read from the SIGUSR1 counters."""

    def per_shard_received(self, s):
        mark = s.log_count()
        s.signal(signal.SIGUSR1)
        m = s.wait_for_log(r"counters \(per shard\): received=([\d,]+)", start=mark)
        return [int(x) for x in m.group(1).split(",")]

    def test_rebinding_device_stays_on_one_shard_and_its_retransmission_is_answered_alike(self):
        with Server(shards=2) as s:
            host, port = s.address
            s.wait_for_log(rf"steering {re.escape(host)}:{port} by source address over 2 shards")
            before = self.per_shard_received(s)
            # Eight source ports of one address: with the kernel's 4-tuple hash they would
            # all land on one shard only with probability 2/2^8.
            devices = [Device(s, "127.0.0.1") for _ in range(8)]
            first = post("rebind", b"rebind-first", mid=0x4242, token=b"\x0a\x0b")
            first_reply = devices[0].request(first)
            self.assertIsNotNone(first_reply)
            self.assertEqual(parse(first_reply)[1], CHANGED)
            for i, d in enumerate(devices[1:], 1):
                last = post("rebind", f"rebind-{i}".encode(), mid=0x4242 + i, token=bytes([i]))
                last_reply = d.request(last)
                self.assertIsNotNone(last_reply)
                self.assertEqual(parse(last_reply)[1], CHANGED)
            # The NAT rebinds once more and the device retransmits its latest message (a
            # device with NSTART = 1 only ever retransmits that one).
            late = Device(s, "127.0.0.1")
            devices.append(late)
            again = late.request(last)
            self.assertEqual(again, last_reply)  # the same ACK: MID, token and code
            after = self.per_shard_received(s)
            delta = [a - b for a, b in zip(after, before)]
            # Nine datagrams from nine source ports of one address, all on one shard.
            self.assertEqual(sorted(delta), [0, len(devices)], f"per-shard arrivals {delta}")
            lines = s.wait_for_sink(9)
            # The exchange memory keys a plain device by its address, not its port: the
            # retransmission after the rebind is answered from it, not forwarded again.
            self.assertEqual(
                len([l for l in lines if l["payload"].get("value") == b64(b"rebind-7")]), 1)
            for d in devices:
                d.close()
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
