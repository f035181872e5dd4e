"""End-to-end tests of GET /bootstrap (docs/bootstrap-and-dtls.md, reference 1nce-coap-endpoint.md §3): the real
coapgate, real UDP sockets, its SQLite state file, and libcoap's coap-client-notls."""

import json
import re
import subprocess
import time
import unittest

from harness import CON, GET, NON, DEVICES, Device, Server, code, message, parse

CONTENT = code(2, 5)
UNAUTHORIZED = code(4, 1)
CONTENT_FORMAT = 12
URL = "coaps://ingest.example.net:5684"
USER_KEY_DEVICE = ("8988280666000000099", "901405100000099", "127.0.0.9", "active",
                   "my-own-key-123", "string")
BOOTSTRAP_TOML = f'[bootstrap]\ncoaps_url = "{URL}"\n'


def bootstrap_get(mid=0x2000, token=b"\x0b\x0c", type_=CON):
    return message(type_, GET, mid, token, [(11, b"bootstrap")])


def c_sdk_bootstrap(mid):
    """The 1NCE C SDK's datagram: NON, no token, Uri-Host then Uri-Path (reference §3.1)."""
    return message(NON, GET, mid, b"", [(3, b"coap.os.1nce.com"), (11, b"bootstrap")])


class BootstrapTests(unittest.TestCase):

    def server(self, **kwargs):
        kwargs.setdefault("devices", DEVICES + [USER_KEY_DEVICE])
        kwargs.setdefault("extra_toml", BOOTSTRAP_TOML)
        return Server(**kwargs)

    def fields(self, datagram):
        type_, c, mid, token, options, payload = parse(datagram)
        self.assertEqual(c, CONTENT, payload)
        self.assertLess(len(datagram), 150)
        self.assertNotIn(b"89", datagram[:len(datagram) - len(payload)],
                         "the C SDK searches the whole datagram for \"89\"")
        iccid, psk, url = payload.decode().split(",")
        return iccid, psk, url

    def test_con_get_returns_identity_key_and_url(self):
        with self.server() as s:
            d = Device(s, "127.0.0.1")
            reply = d.request(bootstrap_get())
            type_, _, mid, token, options, _ = parse(reply)
            self.assertEqual((mid, token), (0x2000, b"\x0b\x0c"))
            iccid, psk, url = self.fields(reply)
            self.assertEqual(iccid, DEVICES[0][0])
            self.assertEqual(url, URL)
            self.assertRegex(psk, r"^[A-Za-z0-9]{1,19}$")
            # Within the regeneration window: the same key, also for a retransmission.
            self.assertEqual(self.fields(d.request(bootstrap_get(mid=0x2001)))[1], psk)
            self.assertEqual(self.fields(d.request(bootstrap_get(mid=0x2001)))[1], psk)
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_the_c_sdk_datagram_gets_a_non_reply_it_can_parse(self):
        with self.server() as s:
            d = Device(s, "127.0.0.2")
            for mid in (1001, 0x3839, 0x0038):
                reply = d.request(c_sdk_bootstrap(mid))
                self.assertEqual(parse(reply)[0], NON)
                iccid, psk, _ = self.fields(reply)
                # What the SDK does: strstr(datagram, "89"), then strtok(",") twice.
                text = reply.split(b"\x00")[0]
                start = text.find(b"89")
                sdk_identity, sdk_psk = text[start:].split(b",")[:2]
                self.assertEqual(sdk_identity.decode(), DEVICES[1][0])
                self.assertEqual(sdk_psk.decode(), psk)
            d.close()

    def test_key_is_regenerated_only_after_the_window(self):
        with self.server(extra_toml=BOOTSTRAP_TOML + "regenerate_after_s = 1\n") as s:
            d = Device(s, "127.0.0.1")
            first = self.fields(d.request(bootstrap_get(mid=1)))[1]
            time.sleep(1.2)
            second = self.fields(d.request(bootstrap_get(mid=2)))[1]
            self.assertNotEqual(first, second)
            d.close()

    def test_a_user_set_key_never_changes(self):
        with self.server(extra_toml=BOOTSTRAP_TOML + "regenerate_after_s = 1\n") as s:
            d = Device(s, "127.0.0.9")
            self.assertEqual(self.fields(d.request(bootstrap_get(mid=1)))[1], "my-own-key-123")
            time.sleep(1.2)
            self.assertEqual(self.fields(d.request(bootstrap_get(mid=2)))[1], "my-own-key-123")
            d.close()

    def test_the_key_survives_a_restart(self):
        with self.server() as s:
            d = Device(s, "127.0.0.1")
            psk = self.fields(d.request(bootstrap_get(mid=1)))[1]
            d.close()
            self.assertEqual(s.stop(), 0)
            state = s.state_path
        with self.server(state_path=state) as s2:
            d = Device(s2, "127.0.0.1")
            self.assertEqual(self.fields(d.request(bootstrap_get(mid=2)))[1], psk)
            d.close()
            self.assertEqual(s2.stop(), 0)

    def test_unknown_and_inactive_devices_get_401_with_a_json_body(self):
        with self.server() as s:
            for source in ("127.0.0.200", "127.0.0.3"):  # unknown, inactive
                d = Device(s, source)
                _, c, _, _, options, payload = parse(d.request(bootstrap_get()))
                self.assertEqual(c, UNAUTHORIZED)
                self.assertEqual(dict(options).get(CONTENT_FORMAT), b"\x32")  # 50: JSON
                body = json.loads(payload)
                self.assertEqual(body["statusText"], "Unauthorized")
                self.assertTrue(body["errors"])
                d.close()

    def test_libcoap_client_fetches_the_key(self):
        with self.server(listen="127.0.0.1:0") as s:
            r = subprocess.run(["coap-client-notls", "-B", "5", "-m", "get",
                                f"coap://127.0.0.1:{s.address[1]}/bootstrap"],
                               capture_output=True, text=True, timeout=20)
            self.assertEqual(r.returncode, 0, r.stderr)
            iccid, psk, url = r.stdout.strip().split(",")
            self.assertEqual((iccid, url), (DEVICES[0][0], URL))
            self.assertTrue(re.fullmatch(r"[A-Za-z0-9]{1,19}", psk))

    def test_unwritable_state_stops_startup(self):
        with self.assertRaises(AssertionError) as raised:
            Server(state_path="/nonexistent-dir/state.db")
        self.assertIn("/nonexistent-dir/state.db", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
