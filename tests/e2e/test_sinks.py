"""End-to-end tests of the MQTT and Kafka sinks (issue #4): the real coapgate binary, a real
mosquitto broker on an ephemeral loopback port with a mosquitto_sub subscriber, and
librdkafka's mock cluster in its own process (tests/support/kafka_mock_cluster.cc).

The fault tests run devices in closed loops and keep, per message, whether the device got
2.04; the checker then proves that every acknowledged message arrived downstream at least once
and counts duplicates (reliability reference §2.1 I1, §3.4)."""

import base64
import json
import os
import signal
import struct
import subprocess
import threading
import time
import unittest

from brokers import KafkaMock, Mosquitto, Subscriber, payload_json, payload_text
from harness import COAPGATE, DEVICES, Device, Server, code, parse, post

CHANGED = code(2, 4)
UNAVAILABLE = code(5, 3)
MAX_AGE = 14

ICCID = {ip: iccid for iccid, _, ip, _ in DEVICES}
LOAD_SOURCES = [f"127.0.1.{i}" for i in range(10, 18)]


def mqtt_sink(broker, **settings):
    lines = ["[[sinks]]", 'type = "mqtt"', 'host = "127.0.0.1"', f"port = {broker.port}"]
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def kafka_sink(cluster, topic="telemetry", **properties):
    lines = ["[[sinks]]", 'type = "kafka"', f'brokers = "{cluster.bootstrap}"', f'topic = "{topic}"',
             "[sinks.properties]"]
    for key, value in properties.items():
        lines.append(f'"{key}" = "{value}"')
    return "\n".join(lines) + "\n"


def post_until_changed(device, payload, first_mid, timeout=20):
    """What a device does while the server answers 5.03: try again (with a new MID) until it
    gets 2.04. Returns the last code."""
    c = None
    deadline = time.monotonic() + timeout
    mid = first_mid
    while c != CHANGED and time.monotonic() < deadline:
        reply = device.request(post("t", payload, mid=mid), timeout=5)
        c = parse(reply)[1] if reply else None
        mid += 1
        if c != CHANGED:
            time.sleep(0.1)
    return c


def mqtt_ready(server, connections=1):
    """Waits until the server's MQTT connections are up (until then it answers 5.03): the log
    says so, and a message then gets 2.04 (topic "ready", from a device the tests do not use
    otherwise)."""
    for i in range(connections):
        server.wait_for_log(rf"mqtt://\S+#{i}: connected")
    d = Device(server, "127.0.1.59")
    try:
        deadline = time.monotonic() + 10
        for mid in range(1000):
            reply = d.request(post("ready", b"ready", mid=mid), timeout=2)
            if reply and parse(reply)[1] == CHANGED:
                return server
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        d.close()
    raise AssertionError("the MQTT sink never accepted a message")


def file_sink(path):
    return f'[[sinks]]\ntype = "file"\npath = "{path}"\n'


class Load:
    """Devices posting in closed loops (one request at a time each, as a CoAP device with
    NSTART = 1 does) until stopped. `acked` maps payload -> monotonic time of its 2.04."""

    def __init__(self, server, sources=LOAD_SOURCES, limit_s=60):
        self.acked = {}
        self.codes = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(server, s, limit_s))
                         for s in sources]
        for t in self._threads:
            t.start()

    def _run(self, server, source, limit_s):
        d = Device(server, source)
        deadline = time.monotonic() + limit_s
        seq = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            payload = f"{source}/{seq}".encode()
            reply = d.request(post("load", payload, mid=seq & 0xFFFF,
                                   token=seq.to_bytes(4, "big")), timeout=3)
            c = parse(reply)[1] if reply else None
            with self._lock:
                self.codes[c] = self.codes.get(c, 0) + 1
                if c == CHANGED:
                    self.acked[payload] = time.monotonic()
            if c == UNAVAILABLE:
                time.sleep(0.02)  # a real device waits Max-Age; keep the test moving
            seq += 1
        d.close()

    def count(self, c):
        with self._lock:
            return self.codes.get(c, 0)

    def wait_for(self, c, at_least, timeout=20):
        start = self.count(c)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(c) - start >= at_least:
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join()


def sigterm_under_load(test, server):
    """Sends SIGTERM to `server` while a Load runs against it; checks the drain exits 0 and
    returns the stopped Load (its `acked` are what must have reached the sink)."""
    load = Load(server)
    test.assertTrue(load.wait_for(CHANGED, 200))
    server.signal(signal.SIGTERM)
    rc = server.proc.wait(timeout=30)
    load.stop()
    test.assertEqual(rc, 0)
    return load


def check_delivered(test, acked, delivered_payloads, exempt=lambda t: False):
    """Every acknowledged payload (except those `exempt` by their ack time) is among the
    delivered ones; returns the number of duplicates downstream."""
    counts = {}
    for p in delivered_payloads:
        counts[p] = counts.get(p, 0) + 1
    missing = [p for p, t in acked.items() if p not in counts and not exempt(t)]
    test.assertEqual(missing[:10], [], f"{len(missing)} of {len(acked)} acknowledged messages "
                                       "missing downstream")
    return sum(n - 1 for n in counts.values())


def envelope_payload(envelope):
    return base64.b64decode(envelope["payload"]["value"])


class MqttSinkTests(unittest.TestCase):

    def test_envelope_arrives_with_topic_qos_and_id(self):
        with Mosquitto().start() as broker, Subscriber(broker) as sub, \
                mqtt_ready(Server(sinks_toml=mqtt_sink(broker))) as s:
            d = Device(s, "127.0.0.2")
            reply = parse(d.request(post("sensors/temp", b"21.5", mid=0x4242)))
            self.assertEqual(reply[1], CHANGED)
            d.request(post(None, b"no-topic", mid=0x4243))
            d.close()
            iccid = ICCID["127.0.0.2"]
            [m] = sub.wait_for(lambda m: m["topic"] == f"{iccid}/sensors/temp", 1)
            self.assertEqual(m["qos"], 1)
            envelope = payload_json(m)
            self.assertEqual(envelope["type"], "TELEMETRY_DATA")
            self.assertEqual(envelope["device"]["iccid"], iccid)
            self.assertEqual(envelope["payload"]["topic"], "sensors/temp")
            self.assertEqual(envelope_payload(envelope), b"21.5")
            self.assertEqual(m["properties"]["user-properties"]["id"], envelope["id"])
            [m] = sub.wait_for(lambda m: m["topic"] == iccid, 1)
            self.assertNotIn("topic", payload_json(m)["payload"])
            self.assertEqual(s.stop(), 0)

    def test_raw_format_carries_the_envelope_as_user_properties(self):
        sink = mqtt_sink(broker := Mosquitto().start(), format="raw", qos=0,
                         topic_template="fleet/{iccid}/{t}")
        with broker, Subscriber(broker) as sub, mqtt_ready(Server(sinks_toml=sink)) as s:
            d = Device(s, "127.0.0.1")
            self.assertEqual(parse(d.request(post("gps", b"raw bytes 1")))[1], CHANGED)
            d.close()
            iccid = ICCID["127.0.0.1"]
            [m] = sub.wait_for(lambda m: m["topic"] == f"fleet/{iccid}/gps", 1)
            self.assertEqual(payload_text(m), "raw bytes 1")
            props = m["properties"]["user-properties"]
            self.assertEqual(props["type"], "TELEMETRY_DATA")
            self.assertEqual(props["iccid"], iccid)
            self.assertEqual(props["ip"], "127.0.0.1")
            self.assertEqual(props["topic"], "gps")
            self.assertEqual(len(props["id"]), 36)
            self.assertEqual(s.stop(), 0)

    def test_untranslatable_payload_goes_to_the_error_topic(self):
        with Mosquitto().start() as broker, Subscriber(broker) as sub:
            template = os.path.join(broker.dir, "template.json")
            with open(template, "w") as f:
                json.dump({"sense": [{"asset": "temp", "value": {"byte": 4, "bytelength": 2,
                                                                   "type": "uint"}}]}, f)
            extra = f'[energy_saver]\ncoap_template = "{template}"\n'
            with mqtt_ready(Server(extra_toml=extra, sinks_toml=mqtt_sink(broker))) as s:
                d = Device(s, "127.0.0.1")
                self.assertEqual(parse(d.request(post("t", b"\x00\x01\x02\x03\x00\x2a")))[1],
                                 CHANGED)
                self.assertEqual(parse(d.request(post("t", b"\x01", mid=0x99)))[1], CHANGED)
                d.close()
                iccid = ICCID["127.0.0.1"]
                [m] = sub.wait_for(lambda m: m["topic"] == f"{iccid}/t", 1)
                self.assertEqual(payload_json(m)["payload"], {"type": "JSON", "value": {"temp": 42},
                                                              "topic": "t"})
                [e] = sub.wait_for(lambda m: m["topic"] == "error" and
                                   payload_json(m)["device"]["iccid"] == iccid, 1)
                error = payload_json(e)
                self.assertEqual(error["type"], "ERROR")
                self.assertEqual(envelope_payload(error), b"\x01")
                self.assertEqual(s.stop(), 0)

    def test_broker_absent_at_start_gets_503_then_204(self):
        broker = Mosquitto()  # not started
        with Server(sinks_toml=mqtt_sink(broker)) as s:
            d = Device(s, "127.0.0.1")
            reply = parse(d.request(post("t", b"early", mid=1)))
            self.assertEqual(reply[1], UNAVAILABLE)
            self.assertIn(MAX_AGE, dict(reply[4]))
            broker.start()
            with broker, Subscriber(broker) as sub:
                self.assertEqual(post_until_changed(d, b"late", 3), CHANGED)
                self.assertTrue(sub.wait_for(lambda m: m["topic"].endswith("/t") and
                                             envelope_payload(payload_json(m)) == b"late", 1))
                d.close()
                self.assertEqual(s.stop(), 0)

    def test_broker_killed_under_load_loses_no_acknowledged_message(self):
        # M02. The broker keeps the subscriber's session on disk (saved every second) so that
        # it queues for the subscriber while both reconnect. mosquitto's PUBACK is not
        # crash-durable (reliability reference F7): a message the broker acknowledged in the
        # last moments before SIGKILL may be lost by the broker itself, so 2.04s seen from
        # 1.5 s before the kill until the restart (those PUBACKs can only come from the old
        # broker) are exempt. Everything else, in particular every message in flight at the
        # kill and resent after the restart, must arrive.
        with Mosquitto(persistent=True).start() as broker:
            sub = Subscriber(broker, client_id="e2e-checker")
            broker.wait_saved()  # the subscriber's session survives the kill
            with mqtt_ready(Server(sinks_toml=mqtt_sink(broker))) as s:
                load = Load(s)
                self.assertTrue(load.wait_for(CHANGED, 1000))
                killed_at = time.monotonic()
                broker.kill9()
                self.assertTrue(load.wait_for(UNAVAILABLE, 5))
                time.sleep(0.5)
                restarted_at = time.monotonic()
                broker.start()
                self.assertTrue(load.wait_for(CHANGED, 200, timeout=30))
                load.stop()
                self.assertEqual(s.stop(), 0)
            delivered = [base64.b64decode(payload_json(m)["payload"]["value"])
                         for m in sub.wait_for(lambda m: m["topic"].endswith("/load"),
                                               len(load.acked), timeout=20)]
            sub.stop()
            duplicates = check_delivered(self, load.acked, delivered,
                                         exempt=lambda t: killed_at - 1.5 <= t < restarted_at)
            print(f"\nkill -9: {len(load.acked)} acked, {len(delivered)} delivered, "
                  f"{duplicates} duplicates, codes {load.codes}")

    def test_hung_broker_gets_503_fast_and_recovers(self):
        # M03: SIGSTOP, then SIGCONT.
        with Mosquitto().start() as broker, Subscriber(broker) as sub, \
                Server(sinks_toml=mqtt_sink(broker, max_inflight=64)) as s:
            load = Load(s)
            self.assertTrue(load.wait_for(CHANGED, 100))
            broker.pause()
            self.assertTrue(load.wait_for(UNAVAILABLE, 50))
            broker.resume()
            self.assertTrue(load.wait_for(CHANGED, 100, timeout=30))
            load.stop()
            self.assertEqual(s.stop(), 0)
            delivered = [envelope_payload(payload_json(m))
                         for m in sub.wait_for(lambda m: m["topic"].endswith("/load"),
                                               len(load.acked))]
            check_delivered(self, load.acked, delivered)

    def test_sigterm_under_load_drains_into_the_broker(self):
        with Mosquitto().start() as broker, Subscriber(broker) as sub, \
                Server(sinks_toml=mqtt_sink(broker, connections=3)) as s:
            load = sigterm_under_load(self, s)
            delivered = [envelope_payload(payload_json(m))
                         for m in sub.wait_for(lambda m: m["topic"].endswith("/load"),
                                               len(load.acked))]
            check_delivered(self, load.acked, delivered)

    def test_a_sink_known_down_gets_503_at_once(self):
        # Circuit breaking: with the broker down, the shards answer 5.03 without queueing, also
        # when another sink (the file) could take the message.
        broker = Mosquitto()
        with Server(sinks_toml=file_sink(os.path.join(broker.dir, "out.jsonl")) +
                    mqtt_sink(broker)) as s:
            s.wait_for_log(r"mqtt://\S+: cannot connect")  # known down from here on
            d = Device(s, "127.0.0.1")
            self.assertEqual(parse(d.request(post("t", b"x")))[1], UNAVAILABLE)
            d.close()
            s.signal(signal.SIGUSR1)
            s.wait_for_log(r"counters: .*sink_down=1")
            self.assertEqual(s.stop(), 0)

    def test_bad_sink_settings_are_reported_by_check_config_and_startup(self):
        broker = Mosquitto()
        config = os.path.join(broker.dir, "bad.toml")
        with open(config, "w") as f:
            f.write(mqtt_sink(broker, tls=True, ca_file="/nonexistent/ca.pem"))
        for args in (["--check-config", "--config", config], ["--config", config]):
            r = subprocess.run([COAPGATE, *args], capture_output=True, text=True, timeout=20)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn("sinks[0]: ca_file", r.stdout + r.stderr, args)


# A reference location template (little-endian float64 longitude, then latitude) and a
# payload for it: 6.956068, 50.934544.
T_LOCATION = {"sense": [
    {"asset": "longitude", "custom_type": "location_long",
     "value": {"byte": 0, "bytelength": 8, "type": "float", "byteorder": "little"}},
    {"asset": "latitude", "custom_type": "location_lat",
     "value": {"byte": 8, "bytelength": 8, "type": "float", "byteorder": "little"}}]}
LOCATION_PAYLOAD = struct.pack("<dd", 6.956068, 50.934544)


def location_toml(directory):
    template = os.path.join(directory, "location.json")
    with open(template, "w") as f:
        json.dump(T_LOCATION, f)
    return f'[energy_saver]\ncoap_template = "{template}"\n'


class LocationEventTests(unittest.TestCase):
    """A template with location fields: the LOCATION event next to TELEMETRY_DATA."""

    def expect_location(self, event, iccid):
        self.assertEqual(list(event), ["id", "type", "source", "version", "received", "device",
                                       "location"])
        self.assertEqual(event["type"], "LOCATION")
        self.assertEqual(event["source"], "COAP")
        self.assertEqual(event["device"]["iccid"], iccid)
        self.assertEqual(event["location"], {"source": "GPS",
                                             "coordinates": ["6.956068", "50.934544"]})

    def test_file_sink_gets_a_location_line_after_the_telemetry(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="coapgate-loc-")
        with Server(extra_toml=location_toml(d)) as s:
            dev = Device(s, "127.0.0.1")
            self.assertEqual(parse(dev.request(post("gps", LOCATION_PAYLOAD, mid=1)))[1], CHANGED)
            # Only one axis a number: no LOCATION, the telemetry alone.
            half = struct.pack("<dd", 1.5, float("nan"))
            self.assertEqual(parse(dev.request(post("gps", half, mid=2)))[1], CHANGED)
            dev.close()
            lines = s.wait_for_sink(3)
            self.assertEqual(s.stop(), 0)
        lines = s.sink_lines()
        self.assertEqual([line["type"] for line in lines],
                         ["TELEMETRY_DATA", "LOCATION", "TELEMETRY_DATA"])
        telemetry, location, second = lines
        self.assertEqual(telemetry["payload"]["value"], {"longitude": 6.956068,
                                                         "latitude": 50.934544})
        self.expect_location(location, ICCID["127.0.0.1"])
        self.assertNotEqual(location["id"], telemetry["id"])
        self.assertEqual(location["received"], telemetry["received"])
        self.assertEqual(second["payload"]["value"], {"longitude": 1.5, "latitude": None})

    def test_mqtt_sends_it_to_the_location_topic(self):
        with Mosquitto().start() as broker, Subscriber(broker) as sub:
            sinks = mqtt_sink(broker, location_topic="fleet/{iccid}/location")
            with mqtt_ready(Server(extra_toml=location_toml(broker.dir), sinks_toml=sinks)) as s:
                d = Device(s, "127.0.0.1")
                self.assertEqual(parse(d.request(post("gps", LOCATION_PAYLOAD)))[1], CHANGED)
                d.close()
                iccid = ICCID["127.0.0.1"]
                [m] = sub.wait_for(lambda m: m["topic"] == f"{iccid}/gps", 1)
                self.assertEqual(payload_json(m)["type"], "TELEMETRY_DATA")
                [loc] = sub.wait_for(lambda m: m["topic"] == f"fleet/{iccid}/location", 1)
                self.expect_location(payload_json(loc), iccid)
                self.assertEqual(s.stop(), 0)


@unittest.skipIf(os.environ.get("E2E_KAFKA", "1") == "0",
                 "librdkafka's threads are invisible to ThreadSanitizer (see tests/CMakeLists.txt)")
class KafkaSinkTests(unittest.TestCase):

    def test_records_carry_key_headers_and_envelope(self):
        with KafkaMock() as cluster, Server(sinks_toml=kafka_sink(cluster)) as s:
            d = Device(s, "127.0.0.2")
            self.assertEqual(parse(d.request(post("meter", b"42", mid=7)))[1], CHANGED)
            self.assertEqual(parse(d.request(post(None, b"43", mid=8)))[1], CHANGED)
            d.close()
            self.assertEqual(s.stop(), 0)
            records = cluster.records("telemetry")
            self.assertEqual(len(records), 2)
            iccid = ICCID["127.0.0.2"]
            by_payload = {envelope_payload(json.loads(r["value"])): r for r in records}
            r = by_payload[b"42"]
            envelope = json.loads(r["value"])
            self.assertEqual(r["key"], iccid)
            self.assertEqual(r["headers"]["id"], envelope["id"])
            self.assertEqual(r["headers"]["iccid"], iccid)
            self.assertEqual(r["headers"]["topic"], "meter")
            self.assertNotIn("topic", by_payload[b"43"]["headers"])

    def test_transient_produce_errors_are_retried(self):
        # K02 and K03: retriable errors and a dropped connection mid-request.
        with KafkaMock() as cluster, Server(sinks_toml=kafka_sink(cluster)) as s:
            cluster.command("produce-errors 3 NOT_ENOUGH_REPLICAS")
            d = Device(s, "127.0.0.1")
            self.assertEqual(parse(d.request(post("t", b"retried", mid=1)))[1], CHANGED)
            cluster.command("produce-errors 1 _TRANSPORT")
            self.assertEqual(parse(d.request(post("t", b"reconnected", mid=2)))[1], CHANGED)
            d.close()
            self.assertEqual(s.stop(), 0)
            values = [envelope_payload(json.loads(r["value"])) for r in cluster.records("telemetry")]
            # A dropped connection may duplicate a record: librdkafka's mock brokers do not
            # check the idempotent producer's sequence numbers as a real broker does.
            self.assertEqual(set(values), {b"reconnected", b"retried"})

    def test_down_cluster_gets_503_then_recovers(self):
        # K01: nothing acknowledged while the cluster is down goes missing.
        with KafkaMock() as cluster, \
                Server(sinks_toml=kafka_sink(cluster, **{"message.timeout.ms": "1000"})) as s:
            load = Load(s, sources=LOAD_SOURCES[:4])
            self.assertTrue(load.wait_for(CHANGED, 50))
            cluster.command("down")
            self.assertTrue(load.wait_for(UNAVAILABLE, 20))
            cluster.command("up")
            self.assertTrue(load.wait_for(CHANGED, 50, timeout=30))
            load.stop()
            self.assertEqual(s.stop(), 0)
            delivered = [envelope_payload(json.loads(r["value"]))
                         for r in cluster.records("telemetry")]
            duplicates = check_delivered(self, load.acked, delivered)
            print(f"\nkafka down/up: {len(load.acked)} acked, {duplicates} duplicates, "
                  f"codes {load.codes}")

    def test_slow_cluster_past_the_budget_gets_503(self):
        # K04: every Produce answered after 3 s, past the 1.5 s response budget.
        with KafkaMock() as cluster, Server(sinks_toml=kafka_sink(cluster)) as s:
            d = Device(s, "127.0.0.1")
            self.assertEqual(parse(d.request(post("t", b"warm", mid=1)))[1], CHANGED)
            cluster.command("rtt 3000")
            reply = parse(d.request(post("t", b"slow", mid=2), timeout=5))
            self.assertEqual(reply[1], UNAVAILABLE)
            self.assertIn(MAX_AGE, dict(reply[4]))
            cluster.command("rtt 0")
            self.assertEqual(post_until_changed(d, b"fast again", 3), CHANGED)
            d.close()
            s.signal(signal.SIGUSR1)
            s.wait_for_log(r"counters: .*budget_expired=1")
            self.assertEqual(s.stop(), 0)
            values = [envelope_payload(json.loads(r["value"])) for r in cluster.records("telemetry")]
            # The late delivery of "slow" still lands: the device was told 5.03 and retries,
            # a duplicate its id lets consumers drop (reliability reference K04).
            self.assertIn(b"slow", values)

    def test_sigterm_under_load_flushes(self):
        with KafkaMock() as cluster, Server(sinks_toml=kafka_sink(cluster)) as s:
            load = sigterm_under_load(self, s)
            delivered = [envelope_payload(json.loads(r["value"]))
                         for r in cluster.records("telemetry")]
            check_delivered(self, load.acked, delivered)

    def test_kafka_and_mqtt_together(self):
        # K07: both sinks required; with MQTT down the answer is 5.03 although Kafka took it.
        with KafkaMock() as cluster:
            broker = Mosquitto()
            with Server(sinks_toml=kafka_sink(cluster) + mqtt_sink(broker)) as s:
                d = Device(s, "127.0.0.1")
                self.assertEqual(parse(d.request(post("t", b"a", mid=1)))[1], UNAVAILABLE)
                broker.start()
                with broker, Subscriber(broker) as sub:
                    self.assertEqual(post_until_changed(d, b"both", 2), CHANGED)
                    d.close()
                    self.assertTrue(sub.wait_for(lambda m: m["topic"].endswith("/t"), 1))
                    self.assertEqual(s.stop(), 0)
            values = [envelope_payload(json.loads(r["value"])) for r in cluster.records("telemetry")]
            self.assertIn(b"both", values)


if __name__ == "__main__":
    unittest.main()
