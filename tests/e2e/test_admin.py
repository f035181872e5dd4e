"""The admin listener end to end: /metrics passes the real `promtool check metrics`, the
probes answer as a load balancer expects, and a real Prometheus server (started here on a
loopback port, its data in a temporary directory) scrapes a coapgate under load and answers
a PromQL query for its request rate."""

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from harness import CON, GET, Device, Server, code, message, parse, post
from postgres import Postgres


def get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def samples(text):
    """{(name, labels): value} of an exposition: labels as a frozenset of (key, value)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparsable sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def family(values, name):
    """{labels: value} of one metric name (a counter's or gauge's samples, or one histogram
    series such as NAME_bucket)."""
    return {labels: v for (n, labels), v in values.items() if n == name}


def total(values, name):
    return sum(family(values, name).values())


def scrape_until(port, predicate, timeout=10):
    """The first scrape whose samples satisfy `predicate`, or the last one (the shards publish
    their gauges once per loop turn, just after the replies they count went out)."""
    deadline = time.monotonic() + timeout
    while True:
        status, text = get(port, "/metrics")
        values = samples(text)
        if status == 200 and predicate(values) or time.monotonic() > deadline:
            return status, text, values
        time.sleep(0.05)


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

    def test_metrics_have_the_histogram_gauges_and_bootstrap_counters(self):
        with Server(extra_toml='[bootstrap]\ncoaps_url = "coaps://ingest.example.net:5684"\n') as s:
            d = Device(s, "127.0.0.1")
            for mid in range(0x5100, 0x5104):
                self.assertEqual(parse(d.request(post(topic="t", mid=mid)))[1], code(2, 4))
            reply = d.request(message(CON, GET, 0x5200, b"\x0b", [(11, b"bootstrap")]))
            self.assertEqual(parse(reply)[1], code(2, 5))
            unknown = Device(s, "127.0.0.200")  # not registered: 4.01
            self.assertEqual(parse(unknown.request(post(topic="t", mid=0x5300)))[1], code(4, 1))
            d.close()
            unknown.close()

            def settled(v):  # the gauges published after the last reply's loop turn
                return (total(v, "coapgate_bootstrap_replies_total") >= 1 and
                        total(v, "coapgate_dedup_exchanges") >= 4)
            status, text, v = scrape_until(s.admin_port, settled)
            self.assertEqual(status, 200)
            check = subprocess.run(["promtool", "check", "metrics"], input=text,
                                   capture_output=True, text=True, timeout=30)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

            # One duration per reply the shards counted (the bootstrap worker's 2.05 is its own).
            replies = total(v, "coapgate_replies_total")
            self.assertEqual(replies, 5)
            self.assertEqual(total(v, "coapgate_request_duration_seconds_count"), replies)
            buckets = family(v, "coapgate_request_duration_seconds_bucket")
            self.assertEqual(buckets[frozenset({("le", "+Inf")})], replies)
            ordered = sorted(buckets.items(), key=lambda kv: float(dict(kv[0])["le"]))
            self.assertEqual([c for _, c in ordered], sorted(c for _, c in ordered))
            self.assertGreaterEqual(total(v, "coapgate_request_duration_seconds_sum"), 0)
            # The file sink acknowledged the four POSTs: one acknowledgement time each.
            self.assertEqual(total(v, "coapgate_sink_ack_duration_seconds_count"), 4)
            self.assertEqual(total(v, "coapgate_sink_messages_total"), 4)

            # The SIGUSR1 summary's bootstrap line and per-shard received count.
            self.assertEqual(family(v, "coapgate_bootstrap_replies_total"),
                             {frozenset({("code", "2.05")}): 1, frozenset({("code", "5.00")}): 0,
                              frozenset({("code", "5.03")}): 0})
            for name in ("expired", "coalesced", "send_failed"):
                self.assertEqual(total(v, f"coapgate_bootstrap_{name}_total"), 0, name)
            self.assertEqual(total(v, "coapgate_bootstrap_queue_full_total"), 0)
            shards = family(v, "coapgate_shard_received_total")
            self.assertGreaterEqual(len(shards), 1)
            self.assertEqual(sum(shards.values()), total(v, "coapgate_received_total"))
            self.assertEqual(sum(shards.values()), 6)

            # Gauges.
            self.assertEqual(total(v, "coapgate_registry_generation"), 1)
            started = total(v, "coapgate_start_time_seconds")
            loaded = total(v, "coapgate_registry_load_timestamp_seconds")
            self.assertGreaterEqual(loaded, started - 1)
            self.assertLessEqual(loaded, time.time() + 1)
            self.assertGreaterEqual(total(v, "coapgate_registry_load_duration_seconds"), 0)
            self.assertEqual(total(v, "coapgate_dedup_devices"), 1)
            self.assertEqual(total(v, "coapgate_dedup_exchanges"), 4)
            capacity = family(v, "coapgate_dedup_devices_capacity")
            self.assertEqual(set(capacity), set(shards))
            self.assertTrue(all(c > 0 for c in capacity.values()))
            self.assertEqual(total(v, "coapgate_dedup_exchanges_capacity"),
                             4 * total(v, "coapgate_dedup_devices_capacity"))
            self.assertEqual(set(family(v, "coapgate_dedup_horizon_seconds").values()), {247})
            self.assertEqual(family(v, "coapgate_publisher_queue_depth"),
                             {frozenset({("lane", "0")}): 0})
            self.assertEqual(total(v, "coapgate_inflight_messages"), 0)
            self.assertEqual(total(v, "coapgate_dtls_sessions"), 0)
            self.assertEqual(total(v, "coapgate_dtls_handshakes_in_progress"), 0)

            # A reload installs a second snapshot.
            s.signal(signal.SIGHUP)
            _, _, v = scrape_until(s.admin_port,
                                   lambda v: total(v, "coapgate_registry_generation") == 2)
            self.assertEqual(total(v, "coapgate_registry_generation"), 2)
            self.assertGreaterEqual(total(v, "coapgate_registry_load_timestamp_seconds"), loaded)
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
                if status == 503 and "starting" not in body:  # not the start's own 503
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


OPERATIONS_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                             "operations.md")
DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy",
                         "grafana", "coapgate.json")


def dashboard_queries(dashboard):
    """Every PromQL expression of the dashboard: its panels' targets (rows' nested panels too)
    and its query variables."""
    queries = []

    def walk(panels):
        for panel in panels:
            queries.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))
    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


class DashboardTests(unittest.TestCase):
    """deploy/grafana/coapgate.json may only refer to metrics a live coapgate exposes, in
    PromQL that Prometheus' own parser accepts; docs/operations.md's metrics table names every
    family."""

    def test_every_metric_the_dashboard_queries_is_in_a_live_scrape(self):
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        queries = dashboard_queries(dashboard)
        self.assertGreater(len(queries), 20)
        used = set()
        for query in queries:
            names = set(re.findall(r"\bcoapgate_[a-zA-Z0-9_:]*", query))
            self.assertTrue(names, f"a query without a coapgate metric: {query}")
            used |= names
        # DTLS on (the default coaps:// listener), one request answered, one loop turn done.
        with Server() as s:
            d = Device(s, "127.0.0.1")
            self.assertEqual(parse(d.request(post(topic="t", mid=0x5400)))[1], code(2, 4))
            d.close()
            status, _, values = scrape_until(
                s.admin_port, lambda v: family(v, "coapgate_dedup_horizon_seconds"))
            self.assertEqual(status, 200)
            self.assertEqual(s.stop(), 0)
        exposed = {name for name, _ in values}
        # The database panels: their series exist with devices.backend = "postgres" only.
        with Postgres() as pg, Server(devices=[], devices_toml='backend = "postgres"',
                                      extra_toml=f'[devices.postgres]\ndsn = "{pg.dsn()}"\n'
                                                 f'snapshot = "{pg.dir}/snapshot.csv"\n') as s:
            status, _, values = scrape_until(
                s.admin_port, lambda v: set(family(v, "coapgate_database_up").values()) == {1})
            self.assertEqual(status, 200)
            self.assertEqual(s.stop(), 0)
        exposed |= {name for name, _ in values}
        self.assertEqual(sorted(used - exposed), [],
                         "the dashboard queries metrics that /metrics does not expose")

    def test_operations_md_has_a_row_for_every_family_and_no_other(self):
        with Server() as s:  # DTLS on: its families too
            status, text, _ = scrape_until(
                s.admin_port, lambda v: family(v, "coapgate_dedup_horizon_seconds"))
            self.assertEqual(status, 200)
            self.assertEqual(s.stop(), 0)
        exposed = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        with open(OPERATIONS_MD) as f:
            documented = set(re.findall(r"^\| `(coapgate_[a-zA-Z0-9_:]+)` \|", f.read(), re.M))
        self.assertEqual(sorted(exposed - documented), [],
                         "families /metrics exposes without a row in docs/operations.md")
        self.assertEqual(sorted(documented - exposed), [],
                         "rows of docs/operations.md for families /metrics does not expose")

    def test_every_dashboard_query_parses_as_promql(self):
        with open(DASHBOARD) as f:
            queries = dashboard_queries(json.load(f))
        # Grafana's variables as Prometheus would see them after substitution; each query a
        # recording rule, checked by promtool's parser (JSON is YAML).
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}",
             "expr": q.replace("$__rate_interval", "1m").replace("$instance", ".*")}
            for i, q in enumerate(q for q in queries if not q.startswith("label_values("))]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            json.dump(rules, f)
        try:
            check = subprocess.run(["promtool", "check", "rules", f.name],
                                   capture_output=True, text=True, timeout=30)
        finally:
            os.unlink(f.name)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


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
