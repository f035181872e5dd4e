"""End-to-end tests of the exchange memory under load: the real coapgate binary with one shard,
a few hundred devices sending at full speed, the file sink. The old memory was one ring of
262,144 entries per shard, so more requests than that erased every device's exchanges; the
new one keeps each device's last exchanges for their whole lifetime whatever the other devices
do. Each test asserts what is answered and what is forwarded, never how fast."""

import os
import select
import socket
import struct
import time
import unittest

from harness import CON, Device, Server, code, parse, post

CHANGED = code(2, 4)
LOAD_DEVICES = 300
ROUNDS = 1010          # LOAD_DEVICES x ROUNDS = 303,000 requests, past the old ring
REPLY_TIMEOUT_S = 2.0  # per round; a missing reply means a retransmission, not a failure
TEST_BUDGET_S = 55


def load_ip(i):
    return f"127.0.{2 + i // 250}.{1 + i % 250}"


QUIET_IP = "127.0.9.1"   # one request before the load, its retransmission after
STEADY_IP = "127.0.9.2"  # NSTART = 1 through the whole load

FLEET = [(f"8988280666{i:09d}", f"90140510{i:07d}", load_ip(i), "active")
         for i in range(LOAD_DEVICES)]
FLEET += [("8988280666900000001", "901405190000001", QUIET_IP, "active"),
          ("8988280666900000002", "901405190000002", STEADY_IP, "active")]


def count_lines(path, needle=None):
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        if needle is None:
            return sum(1 for _ in f)
        return sum(1 for line in f if needle in line)


class DedupUnderLoad(unittest.TestCase):
    def setUp(self):
        self.started = time.monotonic()

    def budget_left(self):
        return TEST_BUDGET_S - (time.monotonic() - self.started)

    def exchange(self, device, datagram):
        """One request answered, retransmitting the same bytes until a reply comes."""
        for _ in range(5):
            reply = device.request(datagram, timeout=REPLY_TIMEOUT_S)
            if reply is not None:
                return reply
        self.fail("no reply after 5 transmissions")

    def run_load(self, server, steady):
        """ROUNDS rounds: every load device sends one new request and gets its answer; the steady
        device runs one exchange per round alongside. Returns the steady device's last request
        and reply, and how many exchanges it ran."""
        socks = []
        for i in range(LOAD_DEVICES):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((load_ip(i), 0))
            s.setblocking(False)
            socks.append(s)
        by_fd = {s.fileno(): i for i, s in enumerate(socks)}
        last = None
        try:
            for r in range(ROUNDS):
                self.assertGreater(self.budget_left(), 0, f"out of time in round {r}")
                mid = r & 0xFFFF
                datagrams = [post("load", b"x", mid=mid, token=struct.pack(">HH", i, r))
                             for i in range(LOAD_DEVICES)]
                waiting = set(range(LOAD_DEVICES))
                for i in waiting:
                    socks[i].sendto(datagrams[i], server.address)
                steady_request = post("steady", b"s%d" % r, mid=r & 0xFFFF,
                                      token=struct.pack(">I", r))
                steady.send(steady_request)
                steady_reply = None
                sent_at = time.monotonic()
                while waiting or steady_reply is None:
                    left = REPLY_TIMEOUT_S - (time.monotonic() - sent_at)
                    if left <= 0:  # lost on the way: the same bytes again (a duplicate hit)
                        self.assertGreater(self.budget_left(), 0, "out of time")
                        for i in waiting:
                            socks[i].sendto(datagrams[i], server.address)
                        if steady_reply is None:
                            steady.send(steady_request)
                        sent_at = time.monotonic()
                        continue
                    fds = [socks[i] for i in waiting]
                    if steady_reply is None:
                        fds.append(steady.sock)
                    ready, _, _ = select.select(fds, [], [], left)
                    for s in ready:
                        if s is steady.sock:
                            steady.sock.settimeout(0)
                            steady_reply = steady.sock.recv(65535)
                            continue
                        i = by_fd[s.fileno()]
                        reply = s.recv(65535)
                        _, c, m, _, _, _ = parse(reply)
                        self.assertEqual((c, m), (CHANGED, mid), f"device {i} round {r}")
                        waiting.discard(i)
                self.assertEqual(parse(steady_reply)[1], CHANGED)
                last = (steady_request, steady_reply)
        finally:
            for s in socks:
                s.close()
        return last, ROUNDS

    def test_retransmissions_are_caught_after_more_than_the_old_horizon(self):
        with Server(devices=FLEET, shards=1) as s:
            quiet = Device(s, QUIET_IP)
            steady = Device(s, STEADY_IP)
            early = post("quiet", b"early", mid=0x7777, token=b"\x07\x07")
            early_reply = self.exchange(quiet, early)
            self.assertEqual(parse(early_reply)[1], CHANGED)

            (steady_request, steady_reply), steady_count = self.run_load(s, steady)
            total = 1 + LOAD_DEVICES * ROUNDS + steady_count
            self.assertGreater(LOAD_DEVICES * ROUNDS, 262_144)

            # (a) a device quiet through the load: its exchange is still remembered.
            self.assertEqual(quiet.request(early, timeout=REPLY_TIMEOUT_S), early_reply)
            # (b) a device that kept sending (NSTART = 1): its latest exchange is caught.
            steady.sock.settimeout(None)
            self.assertEqual(steady.request(steady_request, timeout=REPLY_TIMEOUT_S),
                             steady_reply)

            # Forwarded once each: every 2.04 came after the sink took the line.
            deadline = time.monotonic() + 10
            while count_lines(s.sink_path) < total and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(count_lines(s.sink_path), total)
            self.assertEqual(count_lines(s.sink_path, b"8988280666900000001"), 1)
            self.assertEqual(count_lines(s.sink_path, b"8988280666900000002"), steady_count)
            quiet.close()
            steady.close()
            s.signal(__import__("signal").SIGUSR1)
            m = s.wait_for_log(r"dedup_horizon_table_bound_s=(\d+)")
            self.assertEqual(int(m.group(1)), 247)  # nothing evicted by the table bound
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main()
