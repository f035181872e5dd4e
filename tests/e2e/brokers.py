"""Real downstream components for the end-to-end tests: a mosquitto broker on an ephemeral
loopback port, a mosquitto_sub subscriber, and a librdkafka mock cluster in its own process
(tests/support/kafka_mock_cluster.cc). Nothing here is a mock of a protocol: the brokers are
the real Debian mosquitto and librdkafka's own in-process Kafka brokers."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

KAFKA_MOCK = os.environ.get("KAFKA_MOCK_CLUSTER", "build/release/tests/kafka_mock_cluster")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


class Mosquitto:
    """The Debian mosquitto broker. `persistent` keeps sessions and queued messages in a file
    saved every second, so that a subscriber's session survives kill -9 + restart."""

    def __init__(self, persistent=False, extra_conf=""):
        self.dir = tempfile.mkdtemp(prefix="coapgate-mosquitto-")
        self.port = free_port()
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    "max_inflight_messages 0\nmax_queued_messages 0\n")
            if os.geteuid() == 0:
                # Otherwise mosquitto drops to the `mosquitto` user, which cannot write the
                # persistence file into our private temporary directory.
                f.write("user root\n")
            if persistent:
                f.write(f"persistence true\npersistence_location {self.dir}/\n"
                        "autosave_interval 1\n")
            f.write(extra_conf)
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "mosquitto.log"), "a")
        self.proc = subprocess.Popen(["mosquitto", "-c", self.conf], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        wait_port(self.port)
        return self

    def wait_saved(self, timeout=10):
        """Waits for the next autosave of a persistent broker (its sessions are on disk)."""
        db = os.path.join(self.dir, "mosquitto.db")
        before = os.stat(db).st_mtime_ns if os.path.exists(db) else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(db) and os.stat(db).st_mtime_ns != before:
                return
            time.sleep(0.05)
        raise AssertionError("mosquitto did not save its database")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Subscriber:
    """mosquitto_sub on '#' at QoS 1, MQTT v5, one JSON object per message (-F %j). With a
    `client_id` the session is persistent (-c): the broker queues for it while it is away."""

    def __init__(self, broker, client_id=None, topic="#"):
        args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-q", "1",
                "-V", "mqttv5", "-F", "%j"]
        if client_id:
            args += ["-i", client_id, "-c", "-x", "600"]
        self.messages = []
        self._cv = threading.Condition()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._probe(broker)

    def _probe(self, broker):
        # The subscription is live once a message published after it arrives.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                            "-t", "probe/ready", "-m", "1"], check=True)
            if self.wait_for(lambda m: m["topic"] == "probe/ready", 1, timeout=0.5):
                return
        raise AssertionError("the subscriber never became ready")

    def _read(self):
        for line in self.proc.stdout:
            message = json.loads(line)
            with self._cv:
                self.messages.append(message)
                self._cv.notify_all()

    def wait_for(self, predicate, count, timeout=15):
        """The messages matching `predicate` once there are at least `count` of them (or
        whatever matched when `timeout` ran out)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                matched = [m for m in self.messages if predicate(m)]
                remaining = deadline - time.monotonic()
                if len(matched) >= count or remaining <= 0:
                    return matched
                self._cv.wait(min(remaining, 0.2))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def payload_text(message):
    """mosquitto_sub's %j gives a JSON payload as an embedded object or as a string."""
    payload = message["payload"]
    return payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))


def payload_json(message):
    payload = message["payload"]
    return json.loads(payload) if isinstance(payload, str) else payload


class KafkaMock:
    """librdkafka's mock cluster in its own process, driven over stdin (one command per line,
    one JSON line back). `bootstrap` is its broker list."""

    def __init__(self, brokers=3, topics=("telemetry:4", "error:1")):
        args = [KAFKA_MOCK, "--brokers", str(brokers)]
        for t in topics:
            args += ["--topic", t]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.bootstrap = json.loads(self.proc.stdout.readline())["bootstrap"]
        self._lock = threading.Lock()

    def command(self, line):
        with self._lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline())
        if reply.get("ok") is False:
            raise AssertionError(f"kafka_mock_cluster: {line}: {reply}")
        return reply

    def records(self, topic):
        return self.command(f"consume {topic}")["records"]

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
