"""The Debian package end to end, as an operator installs it (needs root, as CI is): cpack
builds coapgate_<version>_amd64.deb from this build tree, real dpkg installs it, the
installed binary checks the installed configuration, runs as the service user and answers a
device 2.04, and `dpkg --purge` takes everything away again."""

import glob
import grp
import os
import pwd
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from harness import code, parse, post  # noqa: E402

BUILD = os.environ.get("BUILD_DIR", "build/release")


def run(*cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)


@unittest.skipUnless(os.geteuid() == 0, "installs a package: needs root (CI runs as root)")
class PackageTests(unittest.TestCase):

    def setUp(self):
        owner = run("dpkg-query", "-W", "-f=${Status}", "coapgate")
        if owner.returncode == 0 and "installed" in owner.stdout:
            self.skipTest("a coapgate package is already installed here: not touching it")

    def test_build_install_serve_and_purge(self):
        out = tempfile.mkdtemp(prefix="coapgate-deb-")
        built = run("cpack", "--config", os.path.join(os.path.abspath(BUILD), "CPackConfig.cmake"),
                    cwd=out)
        self.assertEqual(built.returncode, 0, built.stdout + built.stderr)
        debs = glob.glob(os.path.join(out, "coapgate_*_amd64.deb"))
        self.assertEqual(len(debs), 1, os.listdir(out))
        try:
            installed = run("dpkg", "-i", debs[0])
            self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
            for path in ("/usr/bin/coapgate", "/etc/coapgate/coapgate.toml",
                         "/etc/coapgate/devices.csv", "/usr/lib/systemd/system/coapgate.service",
                         "/usr/share/man/man8/coapgate.8", "/usr/share/doc/coapgate/README.md"):
                self.assertTrue(os.path.exists(path), path)
            conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "coapgate").stdout
            self.assertIn("/etc/coapgate/coapgate.toml", conffiles)
            self.assertIn("/etc/coapgate/devices.csv", conffiles)
            user = pwd.getpwnam("coapgate")
            state = os.stat("/var/lib/coapgate")
            self.assertEqual(stat.S_IMODE(state.st_mode), 0o700)
            self.assertEqual(state.st_uid, user.pw_uid)

            check = run("/usr/bin/coapgate", "--check-config", "--config",
                        "/etc/coapgate/coapgate.toml")
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

            # The installed binary as the service user, on loopback ports of its own (the
            # packaged configuration listens on 5683/5684, which this test must not take).
            work = tempfile.mkdtemp(prefix="coapgate-deb-run-")
            os.chown(work, user.pw_uid, user.pw_gid)
            config = os.path.join(work, "coapgate.toml")
            with open(config, "w") as f:
                f.write('[server]\ncoap_listen = ["127.0.0.1:0"]\ncoaps_listen = []\n'
                        '[admin]\nlisten = ""\n'
                        f'[devices]\nfile = "/etc/coapgate/devices.csv"\n'
                        f'state = "{work}/state.db"\n')
            os.chown(config, user.pw_uid, user.pw_gid)
            proc = subprocess.Popen(["runuser", "-u", "coapgate", "--", "/usr/bin/coapgate",
                                     "--config", config],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                port = None
                deadline = time.monotonic() + 20
                while port is None and time.monotonic() < deadline:
                    line = proc.stderr.readline()
                    if not line:
                        break
                    if "listening coap://127.0.0.1:" in line:
                        port = int(line.split("127.0.0.1:")[1].split()[0])
                self.assertIsNotNone(port, "the installed coapgate did not start")
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(5)
                s.bind(("127.0.0.1", 0))  # 127.0.0.1 is a device of the shipped devices.csv
                s.sendto(post(topic="installed"), ("127.0.0.1", port))
                reply, _ = s.recvfrom(2048)
                s.close()
                self.assertEqual(parse(reply)[1], code(2, 4))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
                proc.stdout.close()
                proc.stderr.close()
        finally:
            purged = run("dpkg", "--purge", "coapgate")
        self.assertEqual(purged.returncode, 0, purged.stdout + purged.stderr)
        self.assertFalse(os.path.exists("/usr/bin/coapgate"))
        self.assertFalse(os.path.exists("/var/lib/coapgate"))
        with self.assertRaises(KeyError):
            pwd.getpwnam("coapgate")


if __name__ == "__main__":
    unittest.main()
