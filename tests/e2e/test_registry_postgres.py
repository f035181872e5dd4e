"""The PostgreSQL registry end to end (devices.backend = "postgres"): a PostgreSQL server the
test starts (tests/e2e/postgres.py), `coapgate devices import/export`, a node that serves what
the table holds, picks up committed changes without a signal, keeps serving while the database
is away and starts from its local snapshot when the database is down; two nodes on one database
sharing the bootstrap state (a key bootstrapped on one opens a DTLS session on the other).

Waits are bounded and assert what happened, never how fast."""

import base64
import os
import subprocess
import tempfile
import time
import unittest

from harness import COAPGATE, DEVICES, Device, Server, code, devices_csv, parse, post
from postgres import Postgres
from test_admin import family, get, scrape_until
from test_bootstrap import bootstrap_get

CHANGED = code(2, 4)
UNAUTHORIZED = code(4, 1)
CONTENT = code(2, 5)
SERVICE_UNAVAILABLE = code(5, 3)
MAX_AGE = 14
WAIT_S = 15  # for a change to reach the node: bounded, far above what it needs



def telemetry(server):
    """The TELEMETRY_DATA events of the server's file sink (not its LIFECYCLE events)."""
    return [l for l in server.sink_lines() if l["type"] == "TELEMETRY_DATA"]

class PostgresRegistryTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = Postgres()

    @classmethod
    def tearDownClass(cls):
        cls.pg.close()

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="coapgate-pgreg-")
        self.database = "t_" + self._testMethodName.lower()
        self.pg.psql(f"CREATE DATABASE {self.database}")
        self.dsn = self.pg.dsn(self.database)
        self.snapshot = os.path.join(self.dir, "registry-snapshot.csv")
        self.config = os.path.join(self.dir, "cli.toml")
        with open(self.config, "w") as f:
            f.write(f'[devices]\nbackend = "postgres"\n[devices.postgres]\ndsn = "{self.dsn}"\n')
        self.mid = 0x4000

    def cli(self, *args, config=None):
        return subprocess.run([COAPGATE, *args, "--config", config or self.config],
                              capture_output=True, text=True, timeout=120)

    def write_csv(self, name, devices):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(devices_csv(devices))
        return path

    def import_devices(self, devices, *flags):
        r = self.cli("devices", "import", self.write_csv("import.csv", devices), *flags)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def server(self, coaps="", snapshot=None):
        return Server(devices=[], coaps=coaps,
                      devices_toml='backend = "postgres"',
                      extra_toml=f'[devices.postgres]\ndsn = "{self.dsn}"\n'
                                 f'snapshot = "{snapshot or self.snapshot}"\n')

    def bootstrap(self, server, source="127.0.0.1"):
        """GET /bootstrap from `source`: (code, options, payload)."""
        self.mid += 1
        d = Device(server, source)
        try:
            reply = d.request(bootstrap_get(mid=self.mid), timeout=5)
        finally:
            d.close()
        self.assertIsNotNone(reply, f"no bootstrap answer to {source}")
        _, c, _, _, options, payload = parse(reply)
        return c, options, payload

    def answer(self, server, source):
        self.mid += 1
        d = Device(server, source)
        try:
            reply = d.request(post("t", b"x%d" % self.mid, mid=self.mid), timeout=3)
        finally:
            d.close()
        self.assertIsNotNone(reply, f"no answer to {source}")
        return parse(reply)[1]

    def wait_for_answer(self, server, source, expected):
        deadline = time.monotonic() + WAIT_S
        got = None
        while time.monotonic() < deadline:
            got = self.answer(server, source)
            if got == expected:
                return
            time.sleep(0.1)
        self.fail(f"{source}: still {got:#x}, not {expected:#x}, after {WAIT_S} s")

    def test_imported_devices_are_served_and_committed_changes_go_live(self):
        out = self.import_devices([DEVICES[0]])
        self.assertIn("1 devices: 1 added, 0 changed, 0 removed", out)
        with self.server() as s:
            s.wait_for_log(r"postgres table coapgate_devices: 1 devices")
            self.assertEqual(self.answer(s, "127.0.0.1"), CHANGED)
            self.assertEqual(self.answer(s, "127.0.0.2"), UNAUTHORIZED)
            # Added with the CLI: live on the node without a signal.
            self.import_devices([DEVICES[0], DEVICES[1]])
            self.wait_for_answer(s, "127.0.0.2", CHANGED)
            # Changed with plain SQL, by another tool: live all the same.
            self.pg.psql("UPDATE coapgate_devices SET status = 'inactive' "
                         f"WHERE iccid = '{DEVICES[0][0]}'", self.database)
            self.wait_for_answer(s, "127.0.0.1", UNAUTHORIZED)
            # Removed by a replacing import: half the devices at once is refused (a file cut
            # short would look the same), and nothing changes until --force says it is meant.
            r = self.cli("devices", "import", self.write_csv("short.csv", [DEVICES[0]]),
                         "--replace")
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("--replace would remove 1 of the 2 devices (more than "
                          "devices.reload_max_removed_percent = 10%)", r.stderr)
            self.assertEqual(self.answer(s, "127.0.0.2"), CHANGED)
            self.import_devices([DEVICES[0]], "--replace", "--force")
            self.wait_for_answer(s, "127.0.0.2", UNAUTHORIZED)
            s.wait_for_log(r"reloaded postgres table coapgate_devices")

    def test_the_node_serves_on_while_the_database_is_away_and_catches_up(self):
        self.import_devices([DEVICES[0]])
        with self.server() as s:
            self.assertEqual(self.answer(s, "127.0.0.1"), CHANGED)
            self.pg.stop()
            try:
                s.wait_for_log(r"registry changes: .*(connection|connect)")
                for _ in range(5):
                    self.assertEqual(self.answer(s, "127.0.0.1"), CHANGED)
            finally:
                self.pg.start()
            # Back: a change made now reaches the node once the follower reconnected.
            self.import_devices([DEVICES[0], DEVICES[1]])
            self.wait_for_answer(s, "127.0.0.2", CHANGED)

    def test_a_node_starts_from_its_snapshot_when_the_database_is_down(self):
        self.import_devices([DEVICES[0]])
        with self.server() as s:  # writes the snapshot
            self.assertEqual(self.answer(s, "127.0.0.1"), CHANGED)
        self.assertEqual(os.stat(self.snapshot).st_mode & 0o777, 0o600, "it holds keys")
        self.pg.stop()
        try:
            with self.server() as s:
                s.wait_for_log(r"serving the registry snapshot .* \(1 devices\)")
                self.assertEqual(self.answer(s, "127.0.0.1"), CHANGED)
        finally:
            self.pg.start()

    def test_a_key_bootstrapped_on_one_node_opens_dtls_on_another(self):
        self.import_devices([DEVICES[0]])
        iccid = DEVICES[0][0]
        node = '"127.0.0.1:0"'
        with self.server(coaps=node, snapshot=os.path.join(self.dir, "a.csv")) as a, \
                self.server(coaps=node, snapshot=os.path.join(self.dir, "b.csv")) as b:
            c, _, payload = self.bootstrap(a)
            self.assertEqual(c, CONTENT, payload)
            got_iccid, key, _ = payload.decode().split(",")
            self.assertEqual(got_iccid, iccid)
            self.assertEqual(self.pg.psql(f"SELECT key FROM coapgate_bootstrap WHERE iccid = "
                                          f"'{iccid}'", self.database), key)
            # Node B learns of the key by notification, or fetches the row when a handshake
            # misses it: a handshake with it succeeds there at once or on the device's retry.
            self.dtls_post_until_accepted(b, iccid, key, "from a's key")
            [line] = telemetry(b)  # its LIFECYCLE event may be in the sink too
            self.assertEqual(line["device"]["iccid"], iccid)
            # B had the key by A's NOTIFY, or fetched it when the first handshake missed it.
            _, _, values = scrape_until(b.admin_port, lambda v: True)
            found = family(values, "coapgate_key_fetches_total")[frozenset({("result", "found")})]
            notes = family(values, "coapgate_database_notifications_total")[
                frozenset({("follower", "bootstrap")})]
            self.assertGreaterEqual(found + notes, 1)
            # Within the window, B hands out A's key.
            c, _, payload = self.bootstrap(b)
            self.assertEqual(c, CONTENT, payload)
            self.assertEqual(payload.decode().split(",")[1], key)

    def test_bootstrap_answers_503_with_max_age_while_the_database_is_away(self):
        self.import_devices([DEVICES[0]])
        with self.server() as s:
            c, _, payload = self.bootstrap(s)
            self.assertEqual(c, CONTENT, payload)
            self.pg.stop()
            try:
                c, options, _ = self.bootstrap(s)
                self.assertEqual(c, SERVICE_UNAVAILABLE)
                self.assertIn(MAX_AGE, [number for number, _ in options])
            finally:
                self.pg.start()
            # Back: the node reconnects on a later call (bounded wait).
            deadline = time.monotonic() + WAIT_S
            while True:
                c, _, payload = self.bootstrap(s)
                if c == CONTENT or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(c, CONTENT, payload)

    def dtls_post(self, server, iccid, key, payload):
        """One coap-client-gnutls POST over DTLS to `server` with PSK identity/key; the result."""
        return subprocess.run(["coap-client-gnutls", "-B", "5", "-m", "post", "-u", iccid,
                               "-k", key, "-e", payload,
                               f"coaps://127.0.0.1:{server.coaps_address[1]}/?t=cluster"],
                              capture_output=True, text=True, timeout=30)

    def dtls_post_until_accepted(self, server, iccid, key, payload):
        """Retries as a device does after a failed handshake (bounded) until the message reached
        the sink (coap-client exits 0 after a failed handshake too); the last result."""
        def accepted():
            return [l for l in telemetry(server)
                    if base64.b64decode(l["payload"]["value"]) == payload.encode()]
        deadline = time.monotonic() + WAIT_S
        while True:
            r = self.dtls_post(server, iccid, key, payload)
            settle = time.monotonic() + 1
            while not accepted() and time.monotonic() < settle:
                time.sleep(0.02)
            if accepted():
                return r
            if time.monotonic() > deadline:
                self.fail(f"no handshake with {iccid}'s key accepted in {WAIT_S} s: {r.stderr}")
            time.sleep(0.2)

    def wait_for_readyz(self, server, needle):
        deadline = time.monotonic() + WAIT_S
        while True:
            status, body = get(server.admin_port, "/readyz")
            if needle in body or time.monotonic() > deadline:
                return status, body
            time.sleep(0.1)

    def test_readyz_and_metrics_tell_the_database_away_and_back(self):
        self.import_devices([DEVICES[0]])
        with self.server() as s:
            status, body = self.wait_for_readyz(s, "database: connected")
            self.assertEqual((status, body), (200, "ready, database: connected\n"))
            _, _, values = scrape_until(
                s.admin_port, lambda v: set(family(v, "coapgate_database_up").values()) == {1})
            up = family(values, "coapgate_database_up")
            self.assertEqual(up, {frozenset({("follower", "devices")}): 1,
                                  frozenset({("follower", "bootstrap")}): 1})
            self.assertGreater(min(family(values, "coapgate_database_synced_timestamp_seconds")
                                   .values()), 0)
            self.pg.stop()
            try:
                # Still ready: ingest goes on from memory, and every node shares the database,
                # so leaving the pool for it would turn every device away at once.
                status, body = self.wait_for_readyz(s, "database: unavailable since ")
                self.assertEqual(status, 200, body)
                self.assertRegex(body, r"^ready, database: unavailable since "
                                       r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(.*5\.03\)\n$")
                _, _, values = scrape_until(
                    s.admin_port, lambda v: set(family(v, "coapgate_database_up").values()) == {0})
                self.assertEqual(set(family(values, "coapgate_database_up").values()), {0})
                for labels, failures in family(
                        values, "coapgate_database_connection_failures_total").items():
                    self.assertGreaterEqual(failures, 1, labels)
                self.assertEqual(self.answer(s, "127.0.0.1"), CHANGED)
            finally:
                self.pg.start()
            status, body = self.wait_for_readyz(s, "database: connected")
            self.assertEqual((status, body), (200, "ready, database: connected\n"))
            _, _, values = scrape_until(
                s.admin_port,
                lambda v: min(family(v, "coapgate_database_connects_total").values()) >= 2)
            for labels, connects in family(values, "coapgate_database_connects_total").items():
                self.assertGreaterEqual(connects, 2, labels)
            self.assertEqual(set(family(values, "coapgate_database_up").values()), {1})

    def test_a_key_no_notification_announced_is_fetched_when_a_handshake_misses_it(self):
        # The row is written with its trigger off, as if its NOTIFY had been lost: the node's
        # follower never hears of it and only reloads on a reconnect. Only the fetch a missed
        # handshake asks for can bring it in.
        self.import_devices([DEVICES[0], DEVICES[1]])
        iccid = DEVICES[0][0]
        key = "NeverAnnounced12345"
        with self.server(coaps='"127.0.0.1:0"') as s:
            s.wait_for_log(r"listening coaps://")
            self.pg.psql("SET session_replication_role = replica; INSERT INTO coapgate_bootstrap "
                         f"(iccid, key, last_call) VALUES ('{iccid}', '{key}', now())",
                         self.database)
            self.dtls_post_until_accepted(s, iccid, key, "fetched")
            [line] = telemetry(s)  # its LIFECYCLE event may be in the sink too
            self.assertEqual(line["device"]["iccid"], iccid)
            _, _, values = scrape_until(s.admin_port, lambda v: family(
                v, "coapgate_key_fetches_total").get(frozenset({("result", "found")})) == 1)
            fetches = {dict(k)["result"]: v
                       for k, v in family(values, "coapgate_key_fetches_total").items()}
            self.assertEqual(fetches, {"found": 1, "absent": 0, "failed": 0})
            requests = {dict(k)["outcome"]: v
                        for k, v in family(values, "coapgate_key_fetch_requests_total").items()}
            self.assertGreaterEqual(requests["queued"], 1)
            self.assertEqual(requests["queue_full"], 0)
            notes = family(values, "coapgate_database_notifications_total")
            self.assertEqual(notes[frozenset({("follower", "bootstrap")})], 0)
            # An identity the registry does not know never reaches the database.
            r = self.dtls_post(s, "8988280666099999999", key, "unknown")
            self.assertNotIn("2.04", r.stdout)
            _, _, values = scrape_until(s.admin_port, lambda v: True)
            self.assertEqual(sum(family(values, "coapgate_key_fetch_requests_total").values()),
                             sum(requests.values()))

    def test_export_gives_back_what_was_imported(self):
        self.import_devices(DEVICES[:4])
        r = self.cli("devices", "export")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().split("\n")
        self.assertEqual(lines[0], "iccid,imsi,ip,status,psk,psk_format")
        self.assertEqual(len(lines), 5)
        self.assertIn(",".join(DEVICES[3]) + ",\"\",\"\"", lines)

    def test_a_bad_file_is_refused_with_its_line_and_nothing_changes(self):
        self.import_devices([DEVICES[0]])
        path = self.write_csv("bad.csv", [DEVICES[1], ("12", "", "", "active")])
        r = self.cli("devices", "import", path)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(f"{path}:3: iccid", r.stderr)
        self.assertEqual(self.pg.psql("SELECT count(*) FROM coapgate_devices", self.database), "1")

    def test_import_needs_the_postgres_backend_and_a_reachable_database(self):
        csv_config = os.path.join(self.dir, "csv.toml")
        with open(csv_config, "w") as f:
            f.write("[devices]\nfile = \"devices.csv\"\n")
        path = self.write_csv("ok.csv", [DEVICES[0]])
        r = self.cli("devices", "import", path, config=csv_config)
        self.assertEqual(r.returncode, 2)
        self.assertIn('devices.backend is "csv"', r.stderr)
        gone = os.path.join(self.dir, "gone.toml")
        with open(gone, "w") as f:
            f.write('[devices]\nbackend = "postgres"\n[devices.postgres]\n'
                    f'dsn = "host={self.dir} port=1 dbname=x"\n')
        r = self.cli("devices", "import", path, config=gone)
        self.assertEqual(r.returncode, 1)
        self.assertIn("postgres: cannot connect", r.stderr)


if __name__ == "__main__":
    unittest.main()
