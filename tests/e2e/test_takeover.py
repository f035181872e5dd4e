"""`coapgate --take-over`: a new process receives the running one's sockets (SCM_RIGHTS), so a
restart under load loses no datagram; the old one finishes its pending messages and exits 0.

Real processes, real UDP sockets on loopback, the real Unix socket of the hand-over; the
failing successor is played by Python (socket.recv_fds), since coapgate never gives up by
itself after taking the sockets."""

import base64
import os
import socket
import subprocess
import threading
import time
import unittest
import urllib.request

from harness import COAPGATE, DEVICES, Device, Server, code, parse, post
from test_admin import get, samples, total
from test_restart import RESTART_DEVICES, USER, KeepAliveClient

CHANGED = code(2, 4)
LOAD_DEVICES = [row for row in DEVICES if row[2].startswith("127.0.1.")][:40]


def confirmed_posts(server, source, count, results, first_mid=0x100):
    """One device sending `count` CON POSTs one after the other, each retransmitted (same MID)
    until it is answered, at most 10 times; records (source, mid) -> code."""
    device = Device(server, source)
    try:
        for k in range(count):
            mid = first_mid + k
            request = post(topic="load", payload=f"{source}/{k}".encode(), mid=mid,
                           token=bytes([k & 0xff]))
            answer = None
            for _ in range(10):
                reply = device.request(request, timeout=0.5)
                if reply is not None and parse(reply)[2] == mid:
                    answer = parse(reply)[1]
                    break
            results[(source, mid)] = answer
    finally:
        device.close()


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


class TakeoverTests(unittest.TestCase):
    def run_load_through_takeover(self, io):
        with Server(io=io, shards=2) as old:
            results = {}
            threads = [threading.Thread(target=confirmed_posts, args=(old, row[2], 60, results))
                       for row in LOAD_DEVICES]
            for t in threads:
                t.start()
            # Under way: some answers came before the successor starts.
            deadline = time.monotonic() + 20
            while len(results) < 100 and time.monotonic() < deadline:
                time.sleep(0.01)
            with Server(take_over_from=old) as new:
                self.assertEqual(old.proc.wait(timeout=30), 0, "\n".join(old.stderr_lines))
                handed = old.wait_for_log(
                    r"take-over by pid \d+: handed over \d+ DTLS sessions and \d+ answered "
                    r"exchanges in (\d+) ms")
                new.wait_for_log(r"take-over from pid \d+: serving on its sockets")
                for t in threads:
                    t.join(timeout=120)
                expected = len(LOAD_DEVICES) * 60
                self.assertEqual(len(results), expected)
                unanswered = [k for k, v in results.items() if v != CHANGED]
                self.assertEqual(unanswered, [], "requests not answered 2.04")
                # Everything 2.04'd reached the sink (one file, written by both processes).
                lines = new.wait_for_sink(expected)
                delivered = {}
                for line in lines:
                    source, k = base64.b64decode(line["payload"]["value"]).decode().split("/")
                    self.assertEqual(source, line["device"]["ip"])
                    key = (source, 0x100 + int(k))
                    delivered[key] = delivered.get(key, 0) + 1
                self.assertEqual(set(delivered), set(results), "2.04'd but not delivered")
                twice = sum(n - 1 for n in delivered.values())
                print(f"\n[{io}] {expected} requests through a take-over (reading paused for "
                      f"{handed.group(1)} ms), {twice} delivered twice")
                # The answered exchanges went over with the sockets: a retransmission that
                # reached the new process was answered from them, not forwarded again.
                self.assertEqual(twice, 0)
                # The successor's admin listener took over too.
                self.assertIn("coapgate_", metrics(new.admin_port))
                # And it can be taken over in its turn.
                with Server(take_over_from=new) as newer:
                    self.assertEqual(new.proc.wait(timeout=30), 0, "\n".join(new.stderr_lines))
                    d = Device(newer, "127.0.0.1")
                    reply = d.request(post(topic="after", mid=0x7777), timeout=5)
                    d.close()
                    self.assertIsNotNone(reply)
                    self.assertEqual(parse(reply)[1], CHANGED)
                    self.assertEqual(newer.stop(), 0)

    def test_a_take_over_under_load_answers_and_delivers_everything_io_uring(self):
        self.run_load_through_takeover("io_uring")

    def test_a_take_over_under_load_answers_and_delivers_everything_recvmmsg(self):
        self.run_load_through_takeover("recvmmsg")

    def test_a_dtls_session_and_an_answered_exchange_go_over_with_the_sockets(self):
        """The reference's Node client (node-coap-client, keepAlive) keeps its DTLS session
        across the take-over: 2.04, and the new process counted no handshake. A CON the old
        process answered, retransmitted to the new one, gets the identical bytes and is not
        forwarded again."""
        with Server(devices=RESTART_DEVICES, shards=2) as old:
            node = KeepAliveClient(old.coaps_address[1], USER[0], USER[4])
            try:
                self.assertEqual(node.post("before", "one"), {"code": "2.04"})
                device = Device(old)
                request = post(topic="plain", payload=b"once", mid=0x4343, token=b"\x0c\x0d")
                answer = device.request(request)
                self.assertEqual(parse(answer)[1], CHANGED)
                with Server(take_over_from=old) as new:
                    self.assertEqual(old.proc.wait(timeout=30), 0, "\n".join(old.stderr_lines))
                    handed = old.wait_for_log(
                        r"handed over (\d+) DTLS sessions and (\d+) answered exchanges")
                    self.assertEqual(handed.group(1), "1")
                    restored = new.wait_for_log(
                        r"take-over: restored (\d+) DTLS sessions \((\d+) not\) and (\d+) "
                        r"answered exchanges")
                    self.assertEqual(restored.group(1, 2), ("1", "0"))
                    self.assertEqual(node.post("after", "two"), {"code": "2.04"})
                    again = device.request(request)
                    device.close()
                    self.assertEqual(again, answer)
                    _, text = get(new.admin_port, "/metrics")
                    values = samples(text)
                    self.assertEqual(total(values, "coapgate_dtls_handshakes_started_total"), 0)
                    self.assertEqual(total(values, "coapgate_duplicate_replayed_total"), 1)
                    topics = [l["payload"]["topic"] for l in new.wait_for_sink(3)]
                    self.assertEqual(sorted(topics), ["after", "before", "plain"])
                    self.assertEqual(new.stop(), 0)
            finally:
                node.close()

    def test_a_successor_with_another_shard_count_is_refused_and_the_old_one_serves_on(self):
        with Server(shards=2) as old:
            other = os.path.join(old.dir, "other.toml")
            with open(old.config_path) as f:
                text = f.read().replace("shards = 2", "shards = 1")
            with open(other, "w") as f:
                f.write(text)
            r = subprocess.run([COAPGATE, "--config", other, "--take-over"], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("refused: this process serves 2 shards", r.stderr)
            old.wait_for_log(r"take-over by pid \d+: refused")
            d = Device(old, "127.0.0.1")
            reply = d.request(post(topic="still", mid=0x4242), timeout=5)
            d.close()
            self.assertEqual(parse(reply)[1], CHANGED)
            self.assertEqual(old.stop(), 0)

    def test_nothing_to_take_over_exits_1_naming_the_socket(self):
        with Server() as s:
            config = s.config_path
            self.assertEqual(s.stop(), 0)
        r = subprocess.run([COAPGATE, "--config", config, "--take-over"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("server.takeover_socket", r.stderr)
        self.assertIn("state.db.takeover: nothing to take over", r.stderr)

    def test_a_successor_that_dies_with_the_sockets_leaves_the_old_one_serving(self):
        """The old process stops reading and hands the sockets over; a datagram sent then waits
        in the socket. The successor closes the conversation without "ready": the old process
        reads its sockets again and answers that datagram."""
        with Server(shards=2) as old:
            path = old.state_path + ".takeover"
            old.wait_for_log(r"take-over socket .*state\.db\.takeover")
            fake = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            fake.connect(path)
            fake.send(b"coapgate-takeover 1\nshards 2\nlisten coap 127.0.0.1:0\n"
                      b"listen coaps 127.0.0.1:0\n")
            fake.settimeout(30)
            text, fds, _, _ = socket.recv_fds(fake, 4096, 16)
            self.assertTrue(text.startswith(b"sockets 4\n"), text)
            self.assertIn(b"\nstate 1\n", text)
            # 2 shards x 2 listeners, 2 instance locks, the state's memfd
            self.assertEqual(len(fds), 4 + 2 + 1)
            d = Device(old, "127.0.0.1")
            d.send(post(topic="queued", mid=0x5151))
            self.assertIsNone(d.recv(timeout=0.5))  # nobody reads while the sockets are away
            for fd in fds:
                os.close(fd)
            fake.close()
            reply = d.recv(timeout=10)
            d.close()
            self.assertIsNotNone(reply, "\n".join(old.stderr_lines))
            self.assertEqual(parse(reply)[1], CHANGED)
            old.wait_for_log(r"reading the sockets again")
            # Bootstrap works again (the state file was taken back) and a real successor can
            # still take over (the socket file is there).
            b = Device(old, "127.0.0.1")
            reply = b.request(bytes([0x40, 0x01, 0x12, 0x34, 0xb9]) + b"bootstrap", timeout=10)
            b.close()
            self.assertEqual(parse(reply)[1], code(2, 5), "\n".join(old.stderr_lines))
            with Server(take_over_from=old) as new:
                self.assertEqual(old.proc.wait(timeout=30), 0, "\n".join(old.stderr_lines))
                self.assertEqual(new.stop(), 0)

    def test_the_socket_file_is_the_owners_only(self):
        with Server() as s:
            s.wait_for_log(r"take-over socket .*state\.db\.takeover")
            st = os.stat(s.state_path + ".takeover")
            self.assertEqual(st.st_mode & 0o777, 0o600)
            self.assertEqual(s.stop(), 0)
            self.assertFalse(os.path.exists(s.state_path + ".takeover"))


if __name__ == "__main__":
    unittest.main()
