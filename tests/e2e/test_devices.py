"""GET /devices/{iccid} and GET /devices/by-address/{ip} on the admin listener end to end: the
real coapgate answers what a device did last (code, reason, when, DTLS, key source), from
real requests over UDP (plain CoAP sockets, libcoap's coap-client-openssl for DTLS), and
never shows a key."""

import json
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from harness import DEVICES, GET, CON, Device, Server, code, message, parse, post

USER = ("8988280666000000097", "901405100000097", "127.0.0.97", "active", "secretkey123",
        "string")
DEVICES_WITH_KEYS = DEVICES + [USER]
TOML = '[dtls]\nhandshake_timeout_ms = 500\n'


def get(port, path, timeout=5):
    """(status, parsed JSON body, raw body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            body = r.read().decode()
            return r.status, json.loads(body), body
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        return e.code, json.loads(body), body


def post_once(server, source, topic):
    """The code of the answer to one POST ?t=`topic` from a device at `source`."""
    d = Device(server, source)
    try:
        return parse(d.request(post(topic=topic)))[1]
    finally:
        d.close()


def wait_for(predicate, what, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


class DeviceInspectionTests(unittest.TestCase):

    def test_answers_what_each_device_did_last(self):
        with Server(coaps="", devices=DEVICES_WITH_KEYS) as s:
            status, never, _ = get(s.admin_port, "/devices/8988280666000000001")
            self.assertEqual(status, 200)
            self.assertEqual(never["registered"], True)
            self.assertIsNone(never["last_seen"])
            self.assertIsNone(never["last_code"])

            self.assertEqual(post_once(s, "127.0.0.1", "a"), code(2, 4))
            status, ok, _ = get(s.admin_port, "/devices/8988280666000000001")
            self.assertEqual(status, 200)
            self.assertEqual((ok["iccid"], ok["imsi"], ok["ip"], ok["status"]),
                             ("8988280666000000001", "901405100000001", "127.0.0.1", "active"))
            self.assertEqual(ok["last_code"], "2.04")
            self.assertIsNone(ok["last_reason"])
            self.assertRegex(ok["last_seen"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            self.assertFalse(ok["dtls_session"])
            self.assertIsNone(ok["last_handshake_failure"])

            self.assertEqual(post_once(s, "127.0.0.3", "a"), code(4, 1))
            _, inactive, _ = get(s.admin_port, "/devices/8988280666000000003")
            self.assertEqual((inactive["status"], inactive["last_code"], inactive["last_reason"]),
                             ("inactive", "4.01", "inactive"))
            self.assertIsNotNone(inactive["last_seen"])

            self.assertEqual(post_once(s, "127.0.0.2", "a b"), code(4, 0))
            status, bad, _ = get(s.admin_port, "/devices/by-address/127.0.0.2")
            self.assertEqual(status, 200)
            self.assertEqual((bad["iccid"], bad["last_code"], bad["last_reason"]),
                             ("8988280666000000002", "4.00", "bad_topic"))
            self.assertEqual(get(s.admin_port, "/devices/by-address/::1")[1]["iccid"],
                             "8988280666000000006")
            self.assertEqual(s.stop(), 0)

    def test_unknown_is_404_and_malformed_is_400(self):
        with Server(coaps="") as s:
            self.assertEqual(get(s.admin_port, "/devices/8988280666999999999")[:2],
                             (404, {"registered": False}))
            self.assertEqual(get(s.admin_port, "/devices/by-address/127.0.0.9")[:2],
                             (404, {"registered": False}))
            status, body, _ = get(s.admin_port, "/devices/12ab")
            self.assertEqual(status, 400)
            self.assertIn("iccid must be 18 to 22 digits", body["error"])
            status, body, _ = get(s.admin_port, "/devices/by-address/nope")
            self.assertEqual(status, 400)
            self.assertIn("not an IPv4 or IPv6 address", body["error"])
            self.assertEqual(s.stop(), 0)

    def test_activity_survives_a_reload(self):
        import signal
        with Server(coaps="") as s:
            self.assertEqual(post_once(s, "127.0.0.1", "a"), code(2, 4))
            start = s.log_count()
            s.signal(signal.SIGHUP)
            s.wait_for_log(r"reloaded .*devices", start=start)
            self.assertEqual(get(s.admin_port, "/devices/8988280666000000001")[1]["last_code"],
                             "2.04")
            self.assertEqual(s.stop(), 0)

    def test_never_shows_a_key_csv_or_generated(self):
        with Server(devices=DEVICES_WITH_KEYS, extra_toml=TOML) as s:
            # A generated key: GET /bootstrap from the device's address.
            d = Device(s, "127.0.0.1")
            reply = d.request(message(CON, GET, 0x2000, b"\x0b", [(11, b"bootstrap")]))
            d.close()
            generated = parse(reply)[5].decode().split(",")[1]
            self.assertEqual(len(generated), 19)
            status, boot, raw = get(s.admin_port, "/devices/8988280666000000001")
            self.assertEqual(status, 200)
            self.assertEqual(boot["key_source"], "generated")
            self.assertEqual(boot["last_code"], "2.05")
            self.assertRegex(boot["last_bootstrap"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            self.assertNotIn(generated, raw)

            # A CSV key, then a handshake under the wrong key, then one under the right key.
            port = s.coaps_address[1]

            def coaps_post(key):
                return subprocess.run(["coap-client-openssl", "-B", "5", "-m", "post", "-u",
                                       USER[0], "-k", key, "-e", "x",
                                       f"coaps://127.0.0.1:{port}/?t=a"],
                                      capture_output=True, text=True, timeout=30)
            coaps_post("wrongkey9999")
            failure = wait_for(
                lambda: get(s.admin_port, f"/devices/{USER[0]}")[1]["last_handshake_failure"],
                "a handshake failure of the wrong key")
            self.assertEqual(failure["reason"], "wrong_key")
            self.assertRegex(failure["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            r = coaps_post(USER[4])
            self.assertNotRegex(r.stdout + r.stderr, r"\b[45]\.\d\d\b", r.stdout + r.stderr)
            status, user, raw = get(s.admin_port, f"/devices/by-address/{USER[2]}")
            self.assertEqual(status, 200)
            self.assertEqual(user["key_source"], "csv")
            self.assertEqual((user["last_code"], user["dtls_session"]), ("2.04", True))
            self.assertNotIn(USER[4], raw)
            self.assertNotIn("secret", raw)
            s.stop()


if __name__ == "__main__":
    unittest.main()
