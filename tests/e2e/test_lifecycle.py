"""The LIFECYCLE DEVICE_FIRST_TIME_REGISTERED event end to end (devices.backend = "postgres"):
two nodes on one PostgreSQL database (tests/e2e/postgres.py), each with its own file sink; a
device that talks to both gets exactly one event between them, with the reference's JSON; it
gets none again for later requests, after a node restarts, or after a re-import of the fleet;
a GET /bootstrap is a first interaction too.

Waits are bounded and assert what happened, never how fast."""

import json
import os
import time
import unittest

import test_registry_postgres as registry_tests
from brokers import Mosquitto, Subscriber, payload_json
from harness import DEVICES, Device, Server
from test_admin import family, scrape_until
from test_bootstrap import bootstrap_get
from test_sinks import mqtt_sink

WAIT_S = registry_tests.WAIT_S
OUTCOMES = ("emitted", "already_registered", "failed", "dropped")


def counts(server):
    """{outcome: n} of coapgate_first_registrations_total on `server`."""
    _, _, values = scrape_until(server.admin_port, lambda v: True)
    got = {dict(labels)["outcome"]: n
           for labels, n in family(values, "coapgate_first_registrations_total").items()}
    return {outcome: int(got.get(outcome, -1)) for outcome in OUTCOMES}


def wait_for_counts(server, predicate, what):
    deadline = time.monotonic() + WAIT_S
    while True:
        c = counts(server)
        if predicate(c):
            return c
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {c} after {WAIT_S} s")
        time.sleep(0.05)


def settled(c):
    return c["emitted"] + c["already_registered"]


def lifecycle_events(*servers):
    return [line for s in servers for line in s.sink_lines() if line["type"] == "LIFECYCLE"]


class LifecycleTests(unittest.TestCase):
    setUpClass = classmethod(registry_tests.PostgresRegistryTests.setUpClass.__func__)
    tearDownClass = classmethod(registry_tests.PostgresRegistryTests.tearDownClass.__func__)
    setUp = registry_tests.PostgresRegistryTests.setUp
    cli = registry_tests.PostgresRegistryTests.cli
    write_csv = registry_tests.PostgresRegistryTests.write_csv
    import_devices = registry_tests.PostgresRegistryTests.import_devices
    answer = registry_tests.PostgresRegistryTests.answer

    def node(self, name):
        """A node on the test's database; its sink file and snapshot are kept across restarts."""
        return Server(devices=[], coaps="", devices_toml='backend = "postgres"',
                      sink_path=os.path.join(self.dir, name + ".jsonl"),
                      extra_toml=f'[devices.postgres]\ndsn = "{self.dsn}"\n'
                                 f'snapshot = "{os.path.join(self.dir, name + ".csv")}"\n')

    def test_a_device_on_two_nodes_is_announced_once(self):
        self.import_devices(DEVICES[:2])
        iccid, imsi, ip, _ = DEVICES[0]
        a = self.node("a")
        b = self.node("b")
        try:
            self.assertEqual(self.answer(a, ip), registry_tests.CHANGED)
            self.assertEqual(self.answer(b, ip), registry_tests.CHANGED)
            # Both nodes asked the database; between them exactly one won.
            ca = wait_for_counts(a, lambda c: settled(c) == 1, "node A")
            cb = wait_for_counts(b, lambda c: settled(c) == 1, "node B")
            self.assertEqual(ca["emitted"] + cb["emitted"], 1, (ca, cb))
            self.assertEqual(ca["failed"] + cb["failed"] + ca["dropped"] + cb["dropped"], 0)
            [event] = lifecycle_events(a, b)
            # The reference's shape (docs/downstream.md#lifecycle), members in this order.
            self.assertEqual(list(event), ["id", "type", "version", "received", "device",
                                           "lifecycle"])
            self.assertEqual(event["type"], "LIFECYCLE")
            self.assertEqual(event["version"], "1.0.0")
            self.assertRegex(event["id"], r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                          r"[0-9a-f]{12}$")
            self.assertIsInstance(event["received"], str)
            received_ms = int(event["received"])
            self.assertLess(abs(received_ms / 1000 - time.time()), 300)
            self.assertEqual(event["device"], {"iccid": iccid, "imsi": imsi, "ip": ip})
            self.assertEqual(event["lifecycle"], {
                "type": "DEVICE_FIRST_TIME_REGISTERED",
                "message": f"New Device successfully registered for the first time - {iccid}"})
            self.assertEqual(self.pg.psql("SELECT count(*) FROM coapgate_first_seen",
                                          self.database), "1")

            # More requests: the nodes know, and ask the database no more.
            for node in (a, b):
                for _ in range(3):
                    self.assertEqual(self.answer(node, ip), registry_tests.CHANGED)
            telemetry = [l for s in (a, b) for l in s.sink_lines() if l["type"] == "TELEMETRY_DATA"]
            self.assertEqual(len(telemetry), 8)
            self.assertEqual(counts(a), ca)
            self.assertEqual(counts(b), cb)
            self.assertEqual(len(lifecycle_events(a, b)), 1)

            # A re-import of the fleet (replacing, with one more device, so that the nodes
            # reload) leaves the first registrations alone.
            self.import_devices([*DEVICES[:2], DEVICES[3]], "--replace")
            for node in (a, b):
                node.wait_for_log(r"reloaded postgres table coapgate_devices")
                self.assertEqual(self.answer(node, ip), registry_tests.CHANGED)
            self.assertEqual(counts(a), ca)
            self.assertEqual(counts(b), cb)

            # Node A restarted: its snapshot, loaded from the database, knows the device.
            self.assertEqual(a.stop(), 0)
            lines = len(a.sink_lines())
            a = self.node("a")
            self.assertEqual(self.answer(a, ip), registry_tests.CHANGED)
            self.assertEqual(len(a.wait_for_sink(lines + 1)), lines + 1)
            self.assertEqual(counts(a), {o: 0 for o in OUTCOMES})
            self.assertEqual(counts(b), cb)
            self.assertEqual(len(lifecycle_events(a, b)), 1)

            # Another device's first interaction is a GET /bootstrap on node B.
            other_iccid, other_imsi, other_ip, _ = DEVICES[1]
            d = Device(b, other_ip)
            try:
                self.assertIsNotNone(d.request(bootstrap_get(mid=0x4abc), timeout=5))
            finally:
                d.close()
            wait_for_counts(b, lambda c: c["emitted"] == cb["emitted"] + 1, "node B")
            events = {e["device"]["iccid"]: e for e in lifecycle_events(a, b)}
            self.assertEqual(sorted(events), sorted([iccid, other_iccid]))
            self.assertEqual(events[other_iccid]["device"],
                             {"iccid": other_iccid, "imsi": other_imsi, "ip": other_ip})
            self.assertNotEqual(events[other_iccid]["id"], events[iccid]["id"])
        finally:
            a.stop()
            b.stop()


    def test_an_event_no_sink_took_goes_out_on_a_later_interaction(self):
        """MQTT broker away: the claim is given back, and once the broker is up the device's
        next request brings the event, on the `lifecycle` topic."""
        self.import_devices(DEVICES[:2])
        iccid, imsi, ip, _ = DEVICES[0]
        broker = Mosquitto()  # its port is chosen; it starts later
        s = Server(devices=[], coaps="", devices_toml='backend = "postgres"',
                   sinks_toml=mqtt_sink(broker),
                   extra_toml=f'[devices.postgres]\ndsn = "{self.dsn}"\n'
                              f'snapshot = "{os.path.join(self.dir, "mqtt.csv")}"\n')
        try:
            self.assertEqual(self.answer(s, ip), registry_tests.SERVICE_UNAVAILABLE)
            wait_for_counts(s, lambda c: c["failed"] >= 1, "the node with its broker away")
            self.assertEqual(self.pg.psql("SELECT count(*) FROM coapgate_first_seen",
                                          self.database), "0")
            broker.start()
            with Subscriber(broker) as sub:
                s.wait_for_log(r"mqtt://\S+#0: connected")
                # The device retries, as devices do, until the node takes its message; an
                # interaction whose claim was under way while the sink was not yet up is
                # followed by the next one.
                deadline = time.monotonic() + WAIT_S
                while not (self.answer(s, ip) == registry_tests.CHANGED and
                           sub.wait_for(lambda m: m["topic"] == "lifecycle", 1, timeout=0.5)):
                    self.assertLess(time.monotonic(), deadline, "no LIFECYCLE event after the "
                                                                "broker came")
                [m] = sub.wait_for(lambda m: m["topic"] == "lifecycle", 1)
                event = payload_json(m)
                self.assertEqual(event["type"], "LIFECYCLE")
                self.assertEqual(event["device"], {"iccid": iccid, "imsi": imsi, "ip": ip})
                self.assertEqual(event["lifecycle"]["type"], "DEVICE_FIRST_TIME_REGISTERED")
                c = wait_for_counts(s, lambda c: c["emitted"] == 1, "the node")
                self.assertEqual(c["already_registered"], 0)
                self.assertEqual(self.pg.psql("SELECT iccid FROM coapgate_first_seen",
                                              self.database), iccid)
        finally:
            s.stop()
            broker.stop()


if __name__ == "__main__":
    unittest.main()
