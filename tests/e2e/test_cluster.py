"""Three coapgate nodes on one PostgreSQL database behind an nftables source-hash load balancer,
all on this machine (deploy/cluster/README.md): the real pieces, each network role in a
network namespace of its own.

Needs root (network namespaces, veth pairs, nftables, conntrack, sysctl) and the `ip`, `nft`
and `conntrack` tools (deploy/install-deps.sh); skipped when not root. Everything it creates is
named after this process's pid and torn down at the end, also when it fails: the namespaces
(with them their links, nftables tables and conntrack entries), the processes, the temporary
PostgreSQL server (tests/e2e/postgres.py; its Unix socket is a path on the file system, so the
nodes reach it from their namespaces without any network).

    gen (coapgate-loadgen --routed, 10.99.0.0/16 routed to lo: one address per device)
     |  10.77.0.0/24
    lb  (DNAT jhash ip saddr mod 64 -> map, deploy/cluster/coapgate-lb; VIP 192.0.2.10)
     |  10.77.1.0/24, 10.77.2.0/24, 10.77.3.0/24
    n1, n2, n3 (coapgate, devices.backend = "postgres", a file sink each; replies route
               back through lb, so that conntrack reverses the DNAT)

What it checks: the devices spread over the nodes as the bucket map says and each stays on
its node; every (device, seq) the load generator saw 2.04'd is in the union of the nodes'
sink files; a device bootstrapped through the balancer gets the same key from every node and,
once its bucket is moved, handshakes DTLS on the other node with it; a device added with
`coapgate devices import` is served by every node; a node killed with -9 under load and taken
out of the map (coapgate-lb fail) loses nothing that was acknowledged, its devices go to the
other nodes and nobody else's move (the 5.03s and timeouts around the move are printed, not
asserted); PostgreSQL stopped and started under load: ingest goes on and the nodes follow
changes again afterwards. Waits are bounded and assert what happened, never how fast.

Environment: COAPGATE and LOADGEN (set by ctest, tests/CMakeLists.txt)."""

import base64
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import Server, code, parse, post
from postgres import Postgres
from test_bootstrap import bootstrap_get

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
COAPGATE_LB = os.path.join(ROOT, "deploy", "cluster", "coapgate-lb")
SHIPPED_NFT = os.path.join(ROOT, "deploy", "cluster", "coapgate-lb.nft")
MAKE_FLEET_CSV = os.path.join(ROOT, "bench", "loadgen", "make_fleet_csv.py")
COAPGATE = os.environ.get("COAPGATE", "build/release/app/coapgate")
LOADGEN = os.environ.get("LOADGEN", "build/release/bench/loadgen/coapgate-loadgen")

CHANGED = code(2, 4)
CONTENT = code(2, 5)
VIP = "192.0.2.10"
NODES = ["10.77.1.2", "10.77.2.2", "10.77.3.2"]
FIRST_DEVICE = "10.99.0.1"
DEVICES = 1500           # loadgen devices 0..1499 from 10.99.0.1
RATE = 600               # requests per second in all, open loop
WAIT_S = 20              # bounded waits: far above what each step needs
PAYLOAD = re.compile(rb"^d=(\d{7}) s=(\d{10}) ")
# Devices outside the load generator's plan, each for one check.
BOOTSTRAPPED = ("8988280666900000001", "901405900000001", "10.99.200.1", "active")
IMPORTED = ("8988280666900000002", "901405900000002", "10.99.200.2", "active")
AFTER_RESTART = ("8988280666900000003", "901405900000003", "10.99.200.3", "active")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(argv, ns=None, check=True, timeout=60):
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def netns_socket(ns, source):
    """A UDP socket in network namespace `ns`, bound to (source, 0): made on a thread of its
    own that enters the namespace (setns is per thread); the socket stays in it after."""
    out = {}

    def body():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((source, 0))
            out["socket"] = s
        except Exception as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["socket"]


def devices_rows(devices):
    return "".join(",".join(d) + ",,\n" for d in devices)


class ClusterTest(unittest.TestCase):
    @unittest.skipUnless(os.geteuid() == 0, "network namespaces: needs root (CI runs as root)")
    def test_three_nodes_behind_a_source_hash_balancer(self):
        self.t0 = time.monotonic()
        self.tag = f"cg{os.getpid()}"
        self.dir = tempfile.mkdtemp(prefix="coapgate-cluster-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.mid = 0x5000
        self.build_network()
        self.progress('build_network')
        self.start_database()
        self.progress('start_database')
        self.start_nodes()
        self.progress('start_nodes')
        self.start_balancer()
        self.progress('start_balancer')
        self.check_bootstrap_and_a_moved_dtls_device()
        self.progress('check_bootstrap_and_a_moved_dtls_device')
        self.check_load_through_failures()
        self.progress('check_load_through_failures')

    def progress(self, step):
        print(f"cluster: {time.monotonic() - self.t0:6.2f} s {step} done", file=sys.stderr)

    # ---- the pieces ------------------------------------------------------------------------

    def ns(self, role):
        return f"{self.tag}{role}"

    def add_ns(self, role):
        name = self.ns(role)
        run(["ip", "netns", "add", name])
        self.addCleanup(run, ["ip", "netns", "del", name], check=False)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def build_network(self):
        lb = self.add_ns("lb")
        gen = self.add_ns("gen")
        links = [("gen", gen, "10.77.0")] + [
            (f"n{i + 1}", self.add_ns(f"n{i + 1}"), f"10.77.{i + 1}") for i in range(3)]
        for name, peer, subnet in links:
            # Created straight into the namespaces: no name in the host's namespace.
            run(["ip", "-n", lb, "link", "add", name, "type", "veth", "peer", "name", "lb",
                 "netns", peer])
            run(["ip", "-n", lb, "addr", "add", f"{subnet}.1/24", "dev", name])
            run(["ip", "-n", lb, "link", "set", name, "up"])
            run(["ip", "-n", peer, "addr", "add", f"{subnet}.2/24", "dev", "lb"])
            run(["ip", "-n", peer, "link", "set", "lb", "up"])
            run(["ip", "-n", peer, "route", "add", "default", "via", f"{subnet}.1"])
        run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=lb)
        run(["ip", "-n", lb, "route", "add", "10.99.0.0/16", "via", "10.77.0.2"])
        # Every address of 10.99.0.0/16 is local to gen: a device each, nothing to assign.
        run(["ip", "-n", gen, "route", "add", "local", "10.99.0.0/16", "dev", "lo"])

    def start_database(self):
        self.pg = Postgres()
        self.addCleanup(self.pg.close)
        self.pg.psql("CREATE DATABASE cluster")
        self.dsn = self.pg.dsn("cluster")
        self.cli_config = os.path.join(self.dir, "cli.toml")
        with open(self.cli_config, "w") as f:
            f.write(f'[devices]\nbackend = "postgres"\n[devices.postgres]\ndsn = "{self.dsn}"\n')
        fleet = subprocess.run([sys.executable, MAKE_FLEET_CSV, str(DEVICES), "--routed",
                                "--first-address", FIRST_DEVICE], capture_output=True,
                               text=True, check=True).stdout
        self.fleet_addresses = [line.split(",")[2] for line in fleet.splitlines()[1:]]
        self.import_devices(fleet + devices_rows([BOOTSTRAPPED]))

    def import_devices(self, csv_text):
        path = os.path.join(self.dir, "import.csv")
        with open(path, "w") as f:
            f.write(csv_text if csv_text.startswith("iccid,") else
                    "iccid,imsi,ip,status,psk,psk_format\n" + csv_text)
        r = subprocess.run([COAPGATE, "devices", "import", path, "--config", self.cli_config],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)

    def start_nodes(self):
        self.nodes = []
        for i, address in enumerate(NODES):
            node = Server(
                wrapper=("ip", "netns", "exec", self.ns(f"n{i + 1}")), shards=1, devices=[],
                listen=f"{address}:5683", coaps=f'"{address}:5684"',
                devices_toml='backend = "postgres"',
                extra_toml=f'[devices.postgres]\ndsn = "{self.dsn}"\n'
                           f'snapshot = "{self.dir}/snapshot-{i + 1}.csv"\n')
            self.addCleanup(node.__exit__, None, None, None)
            node.wait_for_log(r"postgres table coapgate_devices: \d+ devices")
            self.nodes.append(node)

    def lb(self, *args, check=True):
        return run([COAPGATE_LB, "--state", self.lb_state, *args], ns=self.ns("lb"),
                   check=check)

    def start_balancer(self):
        self.lb_state = os.path.join(self.dir, "lb", "state")
        self.lb("init", VIP, *NODES)
        # The shipped example is exactly what the script loads for its three nodes, and nft
        # accepts it.
        example = os.path.join(self.dir, "example-state")
        r = run([COAPGATE_LB, "--no-load", "--state", example, "init", VIP, "10.0.0.11",
                 "10.0.0.12", "10.0.0.13"])
        r = run([COAPGATE_LB, "--state", example, "render"])
        with open(SHIPPED_NFT) as f:
            self.assertEqual(f.read(), r.stdout, "deploy/cluster/coapgate-lb.nft is stale")
        run(["nft", "-c", "-f", SHIPPED_NFT], ns=self.ns("lb"))
        # A fourth node joins: it takes 16 buckets from the others, nobody else's move; a
        # node the state does not know, or a bucket past 63, is a usage error.
        old = self.owners_of(example)
        r = run([COAPGATE_LB, "--no-load", "--state", example, "add", "10.0.0.14"])
        new = self.owners_of(example)
        self.assertEqual(sum(1 for n in new.values() if n == "10.0.0.14"), 16, r.stderr)
        for b in range(64):
            self.assertIn(new[b], (old[b], "10.0.0.14"))
        for args in (["fail", "10.0.0.99"], ["move", "64", "10.0.0.11"]):
            r = run([COAPGATE_LB, "--no-load", "--state", example, *args], check=False)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("coapgate-lb: ", r.stderr)

    def owners(self):
        return self.owners_of(self.lb_state)

    def owners_of(self, state):
        """bucket -> node address, from a coapgate-lb state file."""
        owners = {}
        with open(state) as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] == "bucket":
                    owners[int(fields[1])] = fields[2]
        self.assertEqual(len(owners), 64)
        return owners

    def buckets(self, addresses):
        """address -> bucket, by the script's jhash (the kernel's, checked against where the
        devices really went)."""
        out = {}
        for start in range(0, len(addresses), 500):
            r = self.lb("bucket", *addresses[start:start + 500])
            for line in r.stdout.split("\n"):
                if line:
                    address, bucket = line.split()
                    out[address] = int(bucket)
        return out

    # ---- a device's own requests, from its address in gen ----------------------------------

    def request(self, source, destination, datagram, timeout=3):
        s = netns_socket(self.ns("gen"), source)
        try:
            s.settimeout(timeout)
            s.sendto(datagram, (destination, 5683))
            try:
                return parse(s.recv(65535))
            except socket.timeout:
                return None
        finally:
            s.close()

    def bootstrap(self, source, destination):
        self.mid += 1
        reply = self.request(source, destination, bootstrap_get(mid=self.mid), timeout=5)
        self.assertIsNotNone(reply, f"no bootstrap answer from {destination} to {source}")
        _, c, _, _, _, payload = reply
        self.assertEqual(c, CONTENT, payload)
        return payload.decode().split(",")

    def wait_until_served(self, device, destinations):
        """POSTs from `device` to each destination until each answers 2.04 (bounded);
        returns the seconds it took."""
        start = time.monotonic()
        for destination in destinations:
            got = None
            while got != CHANGED:
                self.assertLess(time.monotonic() - start, WAIT_S,
                                f"{device[2]}: {destination} still answers {got} after {WAIT_S} s")
                self.mid += 1
                reply = self.request(device[2], destination,
                                     post("cluster", b"served?", mid=self.mid), timeout=1)
                got = reply[1] if reply else None
                if got != CHANGED:
                    time.sleep(0.1)
        return time.monotonic() - start

    def dtls_post(self, iccid, key, text):
        """coap-client-gnutls from the bootstrapped device's address through the balancer,
        retried within a bounded wait (as a device retransmits)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            r = run(["coap-client-gnutls", "-a", BOOTSTRAPPED[2], "-B", "5", "-m", "post",
                     "-u", iccid, "-k", key, "-e", text, f"coaps://{VIP}/?t=dtls"],
                    ns=self.ns("gen"), check=False)
            if r.returncode == 0 or time.monotonic() > deadline:
                self.assertEqual(r.returncode, 0, r.stderr)
                return
            time.sleep(0.2)

    def sink_records(self, node):
        """The node's TELEMETRY_DATA events (its LIFECYCLE events: lifecycle_events)."""
        return [r for r in node.sink_lines() if r["type"] == "TELEMETRY_DATA"]

    def lifecycle_events(self):
        """ICCID -> the ids of the DEVICE_FIRST_TIME_REGISTERED events all nodes wrote for it."""
        ids = {}
        for node in self.nodes:
            for r in node.sink_lines():
                if r["type"] == "LIFECYCLE":
                    self.assertEqual(r["lifecycle"]["type"], "DEVICE_FIRST_TIME_REGISTERED", r)
                    ids.setdefault(r["device"]["iccid"], []).append(r["id"])
        return ids

    def wait_for_dtls_record(self, node, text):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for record in self.sink_records(node):
                if (record["payload"]["topic"] == "dtls" and
                        base64.b64decode(record["payload"]["value"]) == text.encode()):
                    self.assertEqual(record["device"]["iccid"], BOOTSTRAPPED[0])
                    return
            time.sleep(0.1)
        self.fail(f"{text!r} not in the sink of the node at {node.address[0]}")

    # ---- the checks ------------------------------------------------------------------------

    def check_bootstrap_and_a_moved_dtls_device(self):
        iccid, key, _ = self.bootstrap(BOOTSTRAPPED[2], VIP)
        self.assertEqual(iccid, BOOTSTRAPPED[0])
        for node in NODES:  # each node, straight (routed through lb without NAT)
            self.assertEqual(self.bootstrap(BOOTSTRAPPED[2], node)[1], key,
                             f"{node} hands out another key")
        bucket = self.buckets([BOOTSTRAPPED[2]])[BOOTSTRAPPED[2]]
        home = NODES.index(self.owners()[bucket])
        self.dtls_post(iccid, key, "before the move")
        self.wait_for_dtls_record(self.nodes[home], "before the move")
        other = (home + 1) % len(NODES)
        self.lb("move", str(bucket), NODES[other])
        self.dtls_post(iccid, key, "after the move")
        self.wait_for_dtls_record(self.nodes[other], "after the move")
        self.lb("move", str(bucket), NODES[home])  # back: the load phase starts from init

    def check_load_through_failures(self):
        ack_log = os.path.join(self.dir, "acks.txt")
        loadgen = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("gen"), LOADGEN, "--routed", "--target",
             f"{VIP}:5683", "--first-address", FIRST_DEVICE, "--devices", str(DEVICES),
             "--rate", str(RATE), "--duration", "120", "--ack-timeout", "500",
             "--max-retransmit", "4", "--drain-ms", "25000", "--ack-log", ack_log,
             "--ack-log-all"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        load_start = time.monotonic()
        self.addCleanup(lambda: loadgen.poll() is None and (loadgen.kill(), loadgen.wait()))
        before = self.owners()
        events = {}

        # Load reaches every node.
        deadline = time.monotonic() + WAIT_S
        while not all(self.sink_records(n) for n in self.nodes):
            self.assertLess(time.monotonic(), deadline, "the load does not reach every node")
            if loadgen.poll() is not None:
                self.fail(f"the loadgen exited: {loadgen.communicate()}")
            time.sleep(0.2)

        self.progress("load reaches every node")
        # A device added with the CLI is served by every node.
        self.import_devices(devices_rows([IMPORTED]))
        events["import_s"] = self.wait_until_served(IMPORTED, NODES)

        # Node 3 killed with -9 under load, then taken out of the map; a few seconds of load
        # first, so that most devices have been heard from where the map put them.
        time.sleep(max(1.0, load_start + 7 - time.monotonic()))
        killed = 2
        events["kill"] = time.monotonic()
        os.kill(self.nodes[killed].proc.pid, signal.SIGKILL)
        self.nodes[killed].proc.wait()
        time.sleep(0.5)  # a health checker's reaction time, roughly
        r = self.lb("fail", NODES[killed])
        events["moved"] = time.monotonic()
        print(f"\ncoapgate-lb fail: {r.stderr.strip()}", file=sys.stderr)
        after = self.owners()
        self.assertNotIn(NODES[killed], after.values())
        for b in range(64):
            if before[b] != NODES[killed]:
                self.assertEqual(after[b], before[b], f"bucket {b} moved")

        self.progress("node killed and taken out")
        # PostgreSQL stopped and started under load.
        time.sleep(2)
        events["db_down"] = time.monotonic()
        logged = self.nodes[0].log_count()
        self.pg.stop()
        try:
            self.nodes[0].wait_for_log(r"registry changes: ", timeout=WAIT_S,
                                       start=logged)
            time.sleep(2)
        finally:
            self.pg.start()
        events["db_up"] = time.monotonic()
        self.import_devices(devices_rows([AFTER_RESTART]))
        events["after_restart_s"] = self.wait_until_served(AFTER_RESTART, NODES[:2])
        time.sleep(1)

        self.progress("database restarted")
        loadgen.send_signal(signal.SIGUSR1)  # end the load; the loadgen drains
        out, err = loadgen.communicate(timeout=60)
        self.assertEqual(loadgen.returncode, 0, err)
        report = json.loads(out.strip().splitlines()[-1])
        for node in self.nodes[:killed]:
            self.assertEqual(node.stop(), 0, "\n".join(node.stderr_lines))
        self.check_outcome(report, ack_log, before, after, killed, events)
        # Every device talked to one node or two (moved), some to a node killed with -9: one
        # first-registration event each across the cluster; a second one only where the killed
        # node had written it but not committed its claim, and then with the same id.
        events_of = self.lifecycle_events()
        self.assertGreaterEqual(len(events_of), DEVICES, "devices never announced")
        self.assertEqual({i: e for i, e in events_of.items() if len(set(e)) > 1}, {},
                         "a device announced twice with different ids")

    def check_outcome(self, report, ack_log, before, after, killed, events):
        self.assertEqual([c for c in report["codes"] if c.startswith("4.")], [], report)
        self.assertEqual(report["unmatched"] + report["malformed"] + report["foreign"], 0, report)
        exchanges = {}  # (device, seq) -> (outcome, first sent, CLOCK_MONOTONIC s)
        with open(ack_log) as f:
            for line in f:
                device, seq, outcome, first_ms = line.split()
                exchanges[(int(device), int(seq))] = (outcome, int(first_ms) / 1000)
        acked = {k for k, (outcome, _) in exchanges.items() if outcome == "2.04"}
        self.assertEqual(len(acked), report["codes"]["2.04"], report)

        delivered = {}  # (device, seq) -> set of node indexes
        for i, node in enumerate(self.nodes):
            for record in self.sink_records(node):
                if record["payload"]["topic"] != "bench":
                    continue
                m = PAYLOAD.match(base64.b64decode(record["payload"]["value"]))
                self.assertIsNotNone(m, record)
                device, seq = int(m.group(1)), int(m.group(2))
                self.assertEqual(record["device"]["iccid"], f"8988280666{device:09d}")
                delivered.setdefault((device, seq), set()).add(i)
        missing = acked - delivered.keys()
        self.assertEqual(missing, set(), f"{len(missing)} acknowledged requests in no sink")
        killed_acked = sum(1 for k in acked if killed in delivered[k])
        self.assertGreater(killed_acked, 0, "the killed node had acknowledged nothing")

        # Where each device went: as the map said, one node each; after the failure the
        # killed node's devices on the others as the new map says, everyone else unmoved.
        bucket_of = self.buckets(self.fleet_addresses)
        nodes_before, nodes_after = {}, {}
        for (device, seq), nodes in delivered.items():
            outcome_sent = exchanges.get((device, seq))
            if outcome_sent is None:
                continue  # answered after the loadgen gave up on it: not in the log
            sent = outcome_sent[1]
            if sent < events["kill"] - 3:
                nodes_before.setdefault(device, set()).update(nodes)
            elif sent > events["moved"] + 0.5:
                nodes_after.setdefault(device, set()).update(nodes)
        per_node = [0, 0, 0]
        for device, nodes in nodes_before.items():
            expected = NODES.index(before[bucket_of[self.fleet_addresses[device]]])
            self.assertEqual(nodes, {expected}, f"device {device} before the failure")
            per_node[expected] += 1
        for count in per_node:  # 21 or 22 buckets of 64 each
            self.assertGreater(count, len(nodes_before) / 6, per_node)
        moved = 0
        for device, nodes in nodes_after.items():
            expected = NODES.index(after[bucket_of[self.fleet_addresses[device]]])
            self.assertEqual(nodes, {expected}, f"device {device} after the failure")
            moved += before[bucket_of[self.fleet_addresses[device]]] == NODES[killed]
        self.assertGreater(moved, 0, "no device of the killed node was heard from again")

        def count(start, end):
            counts = {}
            for outcome, sent in exchanges.values():
                if start <= sent <= end:
                    counts[outcome] = counts.get(outcome, 0) + 1
            return counts
        around_move = count(events["kill"] - 2, events["moved"] + 2)
        db_away = count(events["db_down"], events["db_up"])
        self.assertGreater(db_away.get("2.04", 0), 0, f"no ingest while the database was away")
        print(f"cluster: {len(acked)} acknowledged, all delivered ({killed_acked} by the node "
              f"killed with -9); devices per node before the failure {per_node}, "
              f"{moved} heard from on their new node after it\n"
              f"cluster: exchanges started from 2 s before the kill to 2 s after the move "
              f"({events['moved'] - events['kill']:.2f} s apart): {around_move} "
              f"(5.03 and timeout are the failure's cost)\n"
              f"cluster: while the database was away: {db_away}\n"
              f"cluster: an imported device served by all nodes after {events['import_s']:.2f} s, "
              f"one imported after the restart by both live nodes after "
              f"{events['after_restart_s']:.2f} s\n"
              f"cluster: loadgen {report['sent']} sent, codes {report['codes']}, "
              f"{report['timeouts']} timeouts, {report['retransmissions']} retransmissions",
              file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
