"""End-to-end tests of the safe defaults: one coapgate per UDP port and per state file, a
state file nobody else can read, and a state file that survives being deleted or having a
-shm file planted next to it. The real binary, real sockets, real files."""

import os
import re
import stat
import subprocess
import unittest

from harness import COAPGATE, CON, GET, Device, Server, code, message, parse

CONTENT = code(2, 5)


def bootstrap_get(mid):
    return message(CON, GET, mid, b"\x0b", [(11, b"bootstrap")])


def second_instance(first, listen=None, state=None):
    """Runs a second coapgate with the first one's configuration, some keys changed; returns
    (exit code, stderr). Bounded: a second instance that starts serving is killed."""
    with open(first.config_path) as f:
        text = f.read()
    if listen is not None:
        text = re.sub(r'coap_listen = \[.*\]', f'coap_listen = ["{listen}"]', text)
    if state is not None:
        text = re.sub(r'state = ".*"', f'state = "{state}"', text)
    path = os.path.join(first.dir, "second.toml")
    with open(path, "w") as f:
        f.write(text)
    try:
        done = subprocess.run([COAPGATE, "--config", path], capture_output=True, text=True,
                              timeout=20)
        return done.returncode, done.stderr
    except subprocess.TimeoutExpired as e:
        return None, (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else e.stderr


class OneInstanceTests(unittest.TestCase):

    def test_second_coapgate_on_the_same_port_exits_1_naming_the_holder(self):
        with Server(coaps="") as s:
            port = s.address[1]
            rc, err = second_instance(s, listen=f"127.0.0.1:{port}",
                                      state=os.path.join(s.dir, "other-state.db"))
            self.assertEqual(rc, 1, err)
            self.assertIn(f"UDP port {port} is already served by another coapgate", err)
            self.assertIn(f"pid {s.proc.pid}", err)
            # The first one still has all the traffic.
            d = Device(s, "127.0.0.1")
            from harness import post
            _, c, *_ = parse(d.request(post(topic="t")))
            self.assertEqual(c, code(2, 4))
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_repeated_attempts_keep_exiting_1_and_never_hang(self):
        # A supervisor or a deploy script retrying: the holder never accepts the probes that
        # ask for its pid, so they fill its backlog; every attempt must still exit 1.
        with Server(coaps="") as s:
            listen = f"127.0.0.1:{s.address[1]}"
            for attempt in range(10):
                rc, err = second_instance(s, listen=listen,
                                            state=os.path.join(s.dir, f"other{attempt}.db"))
                self.assertEqual(rc, 1, f"attempt {attempt}: {err}")
                self.assertIn("is already served by another coapgate", err)

    def test_second_coapgate_on_the_same_state_file_exits_1(self):
        with Server(coaps="") as s:
            rc, err = second_instance(s, listen="127.0.0.1:0")
            self.assertEqual(rc, 1, err)
            self.assertIn(s.state_path, err)
            self.assertIn("in use by another process", err)
            self.assertEqual(s.stop(), 0)


class StateFileTests(unittest.TestCase):

    def test_state_files_are_readable_by_the_owner_only(self):
        with Server(coaps="") as s:
            d = Device(s, "127.0.0.1")
            _, c, *_ = parse(d.request(bootstrap_get(0x3000)))
            self.assertEqual(c, CONTENT)
            d.close()
            names = [n for n in os.listdir(s.dir) if n.startswith("state.db")]
            self.assertIn("state.db", names)
            for name in names:
                mode = os.stat(os.path.join(s.dir, name)).st_mode
                self.assertEqual(mode & (stat.S_IRWXG | stat.S_IRWXO), 0, f"{name}: {oct(mode)}")
            self.assertNotIn("state.db-shm", names)
            self.assertEqual(s.stop(), 0)

    def test_a_planted_unwritable_shm_file_cannot_kill_the_server(self):
        with Server(coaps="") as s:
            d = Device(s, "127.0.0.1")
            _, c, *_ = parse(d.request(bootstrap_get(0x3100)))
            self.assertEqual(c, CONTENT)
            shm = s.state_path + "-shm"
            with open(shm, "w"):
                pass  # empty: a mapping of it would fault past its end
            os.chmod(shm, 0)
            _, c, *_ = parse(d.request(bootstrap_get(0x3101)))
            self.assertEqual(c, CONTENT)
            from harness import post
            _, c, *_ = parse(d.request(post(topic="t")))
            self.assertEqual(c, code(2, 4))
            d.close()
            self.assertEqual(s.stop(), 0)

    def test_deleted_state_file_is_recreated_and_keys_survive_a_restart(self):
        state_dir = None
        with Server(coaps="") as s:
            state_dir = s.dir
            a = Device(s, "127.0.0.1")
            key_a = parse(a.request(bootstrap_get(0x3200)))[5].decode().split(",")[1]
            for suffix in ("", "-wal"):
                if os.path.exists(s.state_path + suffix):
                    os.remove(s.state_path + suffix)
            b = Device(s, "127.0.0.2")
            reply = parse(b.request(bootstrap_get(0x3201)))
            self.assertEqual(reply[1], CONTENT)
            key_b = reply[5].decode().split(",")[1]
            s.wait_for_log(r"deleted while coapgate ran; recreated it from memory")
            self.assertTrue(os.path.exists(s.state_path))
            a.close()
            b.close()
            self.assertEqual(s.stop(), 0)
            state_path = s.state_path
        # Restarted on the same state file: both keys are still the devices' keys.
        with Server(coaps="", state_path=state_path) as s2:
            for source, key, mid in (("127.0.0.1", key_a, 0x3300), ("127.0.0.2", key_b, 0x3301)):
                d = Device(s2, source)
                self.assertEqual(parse(d.request(bootstrap_get(mid)))[5].decode().split(",")[1],
                                 key)
                d.close()
            self.assertEqual(s2.stop(), 0)
        self.assertIsNotNone(state_dir)


class SinkFailureTests(unittest.TestCase):

    def test_a_full_disk_under_the_file_sink_is_answered_503_and_logged(self):
        # /dev/full: every write fails with ENOSPC, as on a full file system.
        from harness import post
        with Server(coaps="", sink_path="/dev/full") as s:
            d = Device(s, "127.0.0.1")
            for mid in range(0x4000, 0x4005):
                _, c, *_ = parse(d.request(post(topic="t", mid=mid)))
                self.assertEqual(c, code(5, 3))
            s.wait_for_log(r"file sink /dev/full: write failed: No space left on device")
            d.close()
            import urllib.request
            with urllib.request.urlopen(f"http://127.0.0.1:{s.admin_port}/metrics") as r:
                metrics = r.read().decode()
            self.assertRegex(metrics, r'(?m)^coapgate_sink_failures_total\{sink="file:/dev/full",'
                                      r'cause="io_error"\} 5$')
            s.stop()
            # Rate-limited: five failures in a row make one line, not five.
            lines = [l for l in s.stderr_lines if "write failed" in l]
            self.assertEqual(len(lines), 1, lines)


class LogRotationTests(unittest.TestCase):

    def test_sighup_reopens_the_file_sink_after_a_rename(self):
        from harness import post
        import json
        import signal
        with Server(coaps="") as s:
            d = Device(s, "127.0.0.1")
            self.assertEqual(parse(d.request(post(topic="before", mid=0x7000)))[1], code(2, 4))
            rotated = s.sink_path + ".1"
            os.rename(s.sink_path, rotated)  # what logrotate does, without copytruncate
            start = s.log_count()
            s.signal(signal.SIGHUP)
            s.wait_for_log(r"reloaded .*devices", start=start)
            self.assertEqual(parse(d.request(post(topic="after", mid=0x7001)))[1], code(2, 4))
            d.close()
            self.assertEqual(s.stop(), 0)
            with open(rotated) as f:
                old = [json.loads(l)["payload"]["topic"] for l in f if l.strip()]
            new = [line["payload"]["topic"] for line in s.sink_lines()]
            self.assertEqual((old, new), (["before"], ["after"]))


class ReloadGuardTests(unittest.TestCase):

    def test_a_truncated_devices_file_is_refused_until_the_limit_is_raised(self):
        from harness import DEVICES, devices_csv, post
        import signal
        import urllib.request
        with Server(coaps="") as s:
            d = Device(s, "127.0.1.10")
            self.assertEqual(parse(d.request(post(topic="t", mid=0x7100)))[1], code(2, 4))
            # Cut at a row boundary, as a copy that was interrupted leaves it: a valid CSV that
            # would remove 52 of the 54 devices.
            with open(s.devices_path, "w") as f:
                f.write(devices_csv(DEVICES[:2]))
            start = s.log_count()
            s.signal(signal.SIGHUP)
            s.wait_for_log(r"reload refused, keeping the previous 54 devices: .* would remove 52 "
                           r"of them \(more than devices.reload_max_removed_percent = 10%\)",
                           start=start)
            self.assertEqual(parse(d.request(post(topic="t", mid=0x7101)))[1], code(2, 4))
            with urllib.request.urlopen(f"http://127.0.0.1:{s.admin_port}/metrics") as r:
                metrics = r.read().decode()
            self.assertRegex(metrics, r"(?m)^coapgate_registry_reloads_refused_total 1$")
            # The removal was meant: the operator raises the limit and reloads again.
            with open(s.config_path) as f:
                text = f.read()
            with open(s.config_path, "w") as f:
                f.write(re.sub(r'(?m)^(state = ".*")$', r"\1\nreload_max_removed_percent = 100",
                               text))
            start = s.log_count()
            s.signal(signal.SIGHUP)
            s.wait_for_log(r"reload: devices.reload_max_removed_percent = 100 \(was 10\)",
                           start=start)
            s.wait_for_log(r"reloaded .*: 2 devices", start=start)
            self.assertEqual(parse(d.request(post(topic="t", mid=0x7102)))[1], code(4, 1))
            d.close()

    def test_a_small_removal_is_applied(self):
        from harness import DEVICES, devices_csv, post
        import signal
        with Server(coaps="") as s:
            d = Device(s, "127.0.1.10")
            self.assertEqual(parse(d.request(post(topic="t", mid=0x7200)))[1], code(2, 4))
            # 1 of 54 (under 10%): applied as before.
            with open(s.devices_path, "w") as f:
                f.write(devices_csv([row for row in DEVICES if row[2] != "127.0.1.10"]))
            start = s.log_count()
            s.signal(signal.SIGHUP)
            s.wait_for_log(r"reloaded .*: 53 devices", start=start)
            self.assertEqual(parse(d.request(post(topic="t", mid=0x7201)))[1], code(4, 1))
            d.close()


if __name__ == "__main__":
    unittest.main()
