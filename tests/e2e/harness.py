"""Test harness for coapgate end-to-end tests: runs the real binary on ephemeral loopback
ports with a temporary config and devices file, and talks to it over real UDP sockets.

Nothing here mocks coapgate's collaborators: the sink is the file sink writing to a real
file, the clients are real sockets and libcoap's coap-client-notls."""

import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

COAPGATE = os.environ.get("COAPGATE", "build/release/app/coapgate")
STARTUP_TIMEOUT_S = 20

# Devices the tests use: the loopback addresses are the devices' "static private IPs".
DEVICES = [
    # iccid, imsi, ip, status
    ("8988280666000000001", "901405100000001", "127.0.0.1", "active"),
    ("8988280666000000002", "901405100000002", "127.0.0.2", "active"),
    ("8988280666000000003", "901405100000003", "127.0.0.3", "inactive"),
    ("8988280666000000006", "901405100000006", "::1", "active"),
]
for i in range(10, 60):  # a block of active devices for load tests
    DEVICES.append((f"89882806660000000{i:02d}", f"9014051000000{i:02d}", f"127.0.1.{i}", "active"))


def devices_csv(devices):
    """Rows are (iccid, imsi, ip, status) or (iccid, imsi, ip, status, psk, psk_format)."""
    lines = ["iccid,imsi,ip,status,psk,psk_format"]
    lines += [",".join(row) + (",," if len(row) == 4 else "") for row in devices]
    return "\n".join(lines) + "\n"


class Server:
    """A coapgate process. Use as a context manager; stop() sends SIGTERM and returns the exit
    code."""

    def __init__(self, io="recvmmsg", listen="127.0.0.1:0", extra_toml="", devices=None,
                 shards=2, sink_path=None, drain_timeout_ms=5000, wrapper=(), sinks_toml=None,
                 state_path=None, coaps='"127.0.0.1:0"', env=None, args=(), devices_toml="",
                 take_over_from=None):
        """take_over_from: a running Server whose configuration (files included) this one
        runs with `--take-over`, receiving its sockets instead of binding."""
        if take_over_from is not None:
            self._take_over(take_over_from, env, args)
            return
        self.dir = tempfile.mkdtemp(prefix="coapgate-e2e-")
        self.state_path = state_path or os.path.join(self.dir, "state.db")
        self.devices_path = os.path.join(self.dir, "devices.csv")
        self.sink_path = sink_path or os.path.join(self.dir, "out.jsonl")
        self.config_path = os.path.join(self.dir, "coapgate.toml")
        with open(self.devices_path, "w") as f:
            f.write(devices_csv(DEVICES if devices is None else devices))
        coaps_listen = coaps
        # Tests run in parallel: each server's admin listener on a port of its own.
        admin = "" if "[admin]" in extra_toml else '[admin]\nlisten = "127.0.0.1:0"\n'
        if sinks_toml is None:
            sinks = f'[[sinks]]\ntype = "file"\npath = "{self.sink_path}"\n'
        else:
            sinks = sinks_toml
        with open(self.config_path, "w") as f:
            f.write(f"""
[server]
coap_listen = ["{listen}"]
coaps_listen = [{coaps_listen}]
shards = {shards}
io = "{io}"
drain_timeout_ms = {drain_timeout_ms}

{admin}
[devices]
file = "{self.devices_path}"
state = "{self.state_path}"
{devices_toml}

{extra_toml}

{sinks}""")
        self._start([*wrapper, COAPGATE, "--config", self.config_path, *args], env)
        self._wait_listening(coaps, bool(admin))

    def _take_over(self, running, env, args):
        for name in ("dir", "state_path", "devices_path", "sink_path", "config_path"):
            setattr(self, name, getattr(running, name))
        running.wait_for_log(r"take-over socket ")  # it waits for a successor
        self._start([COAPGATE, "--config", self.config_path, "--take-over", *args], env)
        self._wait_listening(running.coaps_address is not None, running.admin_port is not None)

    def _start(self, command, env):
        self.stderr_lines = []
        self._lines_cv = threading.Condition()
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=None if env is None else {**os.environ, **env})
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _wait_listening(self, coaps, admin):
        m = self.wait_for_log(r"listening coap://(\[?[0-9a-f:.]+\]?):(\d+)")
        host = m.group(1).strip("[]")
        self.address = (host, int(m.group(2)))
        self.coaps_address = None
        if coaps:
            m = self.wait_for_log(r"listening coaps://(\[?[0-9a-f:.]+\]?):(\d+)")
            self.coaps_address = (m.group(1).strip("[]"), int(m.group(2)))
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.admin_port = None
        if admin:
            m = self.wait_for_log(r"admin listening http://127\.0\.0\.1:(\d+)")
            self.admin_port = int(m.group(1))

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self._lines_cv:
                self.stderr_lines.append(line.rstrip("\n"))
                self._lines_cv.notify_all()

    def wait_for_log(self, pattern, timeout=STARTUP_TIMEOUT_S, start=0):
        """Waits for a stderr line matching `pattern` (at index >= start); returns the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self._lines_cv:
            while True:
                for line in self.stderr_lines[start:]:
                    m = regex.search(line)
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no log line matching {pattern!r}; stderr:\n"
                                         + "\n".join(self.stderr_lines))
                self._lines_cv.wait(min(remaining, 0.2))

    def log_count(self):
        with self._lines_cv:
            return len(self.stderr_lines)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("coapgate did not exit after SIGTERM")
        finally:
            self._reader.join(timeout=5)
            self.proc.stderr.close()

    def sink_lines(self):
        if not os.path.exists(self.sink_path):
            return []
        with open(self.sink_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def wait_for_sink(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.sink_lines()
            if len(lines) >= count:
                return lines
            time.sleep(0.02)
        return self.sink_lines()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        if not self.proc.stderr.closed:
            self.proc.stderr.close()


# --- CoAP datagrams ---------------------------------------------------------------------

CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT = 1, 2, 3


def code(c, dd):
    return c << 5 | dd


def option_bytes(options):
    """options: list of (number, bytes) in non-decreasing number order."""
    out = b""
    last = 0
    for number, value in options:
        delta, length = number - last, len(value)
        last = number

        def nib(v):
            if v < 13:
                return v, b""
            if v < 269:
                return 13, bytes([v - 13])
            return 14, struct.pack(">H", v - 269)

        dn, dx = nib(delta)
        ln, lx = nib(length)
        out += bytes([dn << 4 | ln]) + dx + lx + value
    return out


def message(type_=CON, code_=POST, mid=0x1234, token=b"\x01\x02\x03\x04", options=(), payload=b""):
    header = struct.pack(">BBH", 0x40 | type_ << 4 | len(token), code_, mid)
    body = option_bytes(list(options))
    if payload:
        body += b"\xff" + payload
    return header + token + body


def post(topic=None, payload=b"hello", mid=0x1234, token=b"\x01\x02\x03\x04", type_=CON, path=None):
    options = []
    if path is not None:
        options.append((11, path.encode()))
    if topic is not None:
        options.append((15, b"t=" + topic.encode()))
    return message(type_, POST, mid, token, options, payload)


def parse(datagram):
    """(type, code, mid, token, options[(number, bytes)], payload)."""
    b0, c, mid = struct.unpack(">BBH", datagram[:4])
    tkl = b0 & 0x0F
    token = datagram[4:4 + tkl]
    i = 4 + tkl
    options = []
    number = 0
    while i < len(datagram) and datagram[i] != 0xFF:
        dn, ln = datagram[i] >> 4, datagram[i] & 0x0F
        i += 1

        def ext(n):
            nonlocal i
            if n == 13:
                v = datagram[i] + 13
                i += 1
                return v
            if n == 14:
                v = struct.unpack(">H", datagram[i:i + 2])[0] + 269
                i += 2
                return v
            return n

        number += ext(dn)
        length = ext(ln)
        options.append((number, datagram[i:i + length]))
        i += length
    payload = datagram[i + 1:] if i < len(datagram) else b""
    return (b0 >> 4) & 3, c, mid, token, options, payload


class Device:
    """A UDP socket bound to a device's source address, talking to one server."""

    def __init__(self, server, source="127.0.0.1"):
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.server = server.address

    def send(self, datagram):
        self.sock.sendto(datagram, self.server)

    def recv(self, timeout=3.0):
        """The next reply, or None after `timeout` seconds of silence."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65535)
        except socket.timeout:
            return None

    def request(self, datagram, timeout=3.0):
        self.send(datagram)
        return self.recv(timeout)

    def close(self):
        self.sock.close()


def b64(data):
    return base64.b64encode(data).decode()
