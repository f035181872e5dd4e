"""The admin listener end to end: /metrics passes the real `promtool check metrics`, the
probes answer as a load balancer expects, and a real Prometheus server (started here on a
loopback port, its data in a temporary directory) scrapes a coapgate under load and answers
a PromQL query for its request rate."""

import json
import os
import re
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from harness import Device, Server, code, parse, post


def get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AdminTests(unittest.TestCase):

    def test_metrics_pass_promtool_and_count_the_replies(self):
        with Server(coaps="") as s:
            d = Device(s, "127.0.0.1")
            for mid in range(0x5000, 0x5003):
                self.assertEqual(parse(d.request(post(topic="t", mid=mid)))[1], code(2, 4))
            d.close()
            status, text = get(s.admin_port, "/metrics")
            self.assertEqual(status, 200)
            check = subprocess.run(["promtool", "check", "metrics"], input=text,
                                   capture_output=True, text=True, timeout=30)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
            self.assertIn('coapgate_replies_total{code="2.04"} 3', text)
            self.assertIn("coapgate_received_total 3", text)
            self.assertIn('coapgate_build_info{version="', text)
            self.assertIn("coapgate_devices ", text)
            self.assertIn('coapgate_sinks_up{lane="0"} 1', text)
            self.assertEqual(s.stop(), 0)

    def test_healthz_and_readyz_answer_200_while_serving(self):
        with Server(coaps="") as s:
            self.assertEqual(get(s.admin_port, "/healthz"), (200, "ok\n"))
            self.assertEqual(get(s.admin_port, "/readyz"), (200, "ready\n"))
            self.assertEqual(get(s.admin_port, "/nothing")[0], 404)
            self.assertEqual(s.stop(), 0)

    def test_readyz_is_503_while_a_sink_is_down(self):
        # An MQTT broker nobody listens on: the circuit opens and the node is not ready.
        port = free_port()
        sinks = (f'[[sinks]]\ntype = "mqtt"\nhost = "127.0.0.1"\nport = {port}\n'
                 f'topic_template = "t"\n')
        with Server(coaps="", sinks_toml=sinks) as s:
            deadline = time.monotonic() + 15
            status = None
            while time.monotonic() < deadline:
                status, body = get(s.admin_port, "/readyz")
                if status == 503:
                    break
                time.sleep(0.1)
            self.assertEqual(status, 503)
            self.assertIn("a sink is down", body)
            # The cause of the 5.03 reaches the log and the metrics: while the sink is down
            # the shards answer 5.03 themselves (sink_down), and the sink logs why it is down.
            d = Device(s, "127.0.0.1")
            self.assertEqual(parse(d.request(post(topic="t", mid=0x5100)))[1], code(5, 3))
            d.close()
            s.wait_for_log(rf"mqtt://127\.0\.0\.1:{port}#0: cannot connect: .*[Cc]onnection refused")
            _, text = get(s.admin_port, "/metrics")
            self.assertRegex(text, r"(?m)^coapgate_sink_down_total [1-9]")
            self.assertRegex(text, rf'(?m)^coapgate_sink_failures_total\{{sink="mqtt://127\.0\.0\.1:'
                                   rf'{port}",cause="down"\}} \d+$')
            s.stop()

    def test_admin_listener_off_when_listen_is_empty(self):
        with Server(coaps="", extra_toml='[admin]\nlisten = ""\n') as s:
            self.assertIsNone(s.admin_port)
            self.assertFalse(any("admin listening" in l for l in s.stderr_lines))
            self.assertEqual(s.stop(), 0)


class PrometheusScrapeTests(unittest.TestCase):

    def test_prometheus_scrapes_and_promql_returns_the_request_rate(self):
        with Server(coaps="") as s:
            work = tempfile.mkdtemp(prefix="coapgate-prometheus-")
            config = os.path.join(work, "prometheus.yml")
            with open(config, "w") as f:
                f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                        "scrape_configs:\n  - job_name: coapgate\n    static_configs:\n"
                        f"      - targets: ['127.0.0.1:{s.admin_port}']\n")
            port = free_port()
            prometheus = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work}/data",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                d = Device(s, "127.0.0.1")
                query = "/api/v1/query?query=" + urllib.request.quote(
                    'sum(rate(coapgate_replies_total{code="2.04"}[5s]))')
                rate = None
                deadline = time.monotonic() + 60
                mid = 0x6000
                while time.monotonic() < deadline and not rate:
                    for _ in range(20):  # a little load between the checks, bounded
                        d.request(post(topic="t", mid=mid & 0xffff))
                        mid += 1
                    try:
                        status, body = get(port, query, timeout=2)
                    except (urllib.error.URLError, ConnectionError, socket.timeout):
                        time.sleep(0.2)
                        continue
                    if status == 200:
                        result = json.loads(body)["data"]["result"]
                        if result and float(result[0]["value"][1]) > 0:
                            rate = float(result[0]["value"][1])
                    time.sleep(0.2)
                d.close()
                self.assertIsNotNone(rate, "Prometheus never returned a request rate")
                self.assertGreater(rate, 0)
            finally:
                prometheus.terminate()
                prometheus.wait(timeout=30)
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main()
