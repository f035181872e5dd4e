#!/usr/bin/env python3
"""The PostgreSQL registry's numbers for bench/README.md (issue #15), on this machine:

1. `coapgate devices import` of N devices (default 1,000,000) into an empty table;
2. a node's start-up with those N devices in PostgreSQL (process start to "listening");
3. change propagation: one device imported while a node runs, until that node answers it 2.04
   (from the import's start, and from its exit: the transaction committed);
4. one node's request rate with devices.backend = "postgres" against "csv" (the same devices,
   the same in-memory path), coapgate-loadgen closed loop, rounds alternating.

Starts its own throwaway PostgreSQL (tests/e2e/postgres.py) and coapgates on loopback. Run it as
root or as a user PostgreSQL accepts (it runs initdb/pg_ctl as `postgres` when root):

    bench/postgres_registry.py --coapgate build/release/app/coapgate \\
        --loadgen build/release/bench/loadgen/coapgate-loadgen [--devices 1000000] [--rounds 5]

Prints one line per measurement and a JSON summary at the end."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from harness import Device, Server, code, parse, post  # noqa: E402
from postgres import Postgres  # noqa: E402

MAKE_FLEET_CSV = os.path.join(HERE, "loadgen", "make_fleet_csv.py")
CHANGED = code(2, 4)


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "all": [round(v, 4) for v in values]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--coapgate", required=True)
    p.add_argument("--loadgen", required=True)
    p.add_argument("--devices", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--load-devices", type=int, default=10_000)
    p.add_argument("--load-seconds", type=int, default=5)
    args = p.parse_args()
    os.environ["COAPGATE"] = os.path.abspath(args.coapgate)
    import harness
    harness.COAPGATE = os.environ["COAPGATE"]
    work = tempfile.mkdtemp(prefix="coapgate-bench-pg-")
    fleet = os.path.join(work, "fleet.csv")
    with open(fleet, "w") as f:
        subprocess.run([sys.executable, MAKE_FLEET_CSV, str(args.devices)], stdout=f, check=True)
    summary = {"devices": args.devices}
    with Postgres() as pg:
        config = os.path.join(work, "cli.toml")

        def cli_config(database):
            with open(config, "w") as f:
                f.write(f'[devices]\nbackend = "postgres"\n[devices.postgres]\n'
                        f'dsn = "{pg.dsn(database)}"\n')
            return config

        def import_file(path, database):
            t = time.monotonic()
            r = subprocess.run([args.coapgate, "devices", "import", path, "--config",
                                cli_config(database)], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            return time.monotonic() - t

        # 1. import into an empty table, each round a fresh database
        imports = []
        for i in range(args.rounds):
            pg.psql(f"CREATE DATABASE import_{i}")
            imports.append(import_file(fleet, f"import_{i}"))
            print(f"import of {args.devices} devices: {imports[-1]:.2f} s", flush=True)
            if i > 0:
                pg.psql(f"DROP DATABASE import_{i}")
        summary["import_s"] = spread(imports)
        database = "import_0"

        def node(backend):
            assert backend == "postgres"
            return Server(devices=[], coaps="", shards=1,
                          devices_toml='backend = "postgres"',
                          extra_toml=f'[devices.postgres]\ndsn = "{pg.dsn(database)}"\n'
                                     f'snapshot = "{work}/snapshot.csv"\n')

        # 2. start-up from PostgreSQL
        starts = []
        for _ in range(args.rounds):
            t = time.monotonic()
            with node("postgres") as s:
                starts.append(time.monotonic() - t)
                s.stop()
            print(f"start-up with {args.devices} devices from PostgreSQL: {starts[-1]:.2f} s",
                  flush=True)
        summary["startup_s"] = spread(starts)

        # 3. change propagation: import one new device, POST from it until 2.04
        latencies, after_commit = [], []
        with node("postgres") as s:
            for i in range(args.rounds):
                address = f"127.200.0.{i + 1}"
                one = os.path.join(work, "one.csv")
                with open(one, "w") as f:
                    f.write("iccid,imsi,ip,status,psk,psk_format\n"
                            f"89882806669999{i:05d},90140599999{i:04d},{address},active,,\n")
                d = Device(s, address)
                t = time.monotonic()
                import_file(one, database)
                committed = time.monotonic()  # the CLI exits once its transaction committed
                mid = 0x100
                while True:
                    mid += 1
                    reply = d.request(post("bench", b"x", mid=mid), timeout=0.5)
                    if reply and parse(reply)[1] == CHANGED:
                        break
                    if time.monotonic() - t > 30:
                        raise SystemExit(f"{address} not served after 30 s")
                    time.sleep(0.005)
                latencies.append(time.monotonic() - t)
                after_commit.append(time.monotonic() - committed)
                d.close()
                print(f"import of one device until the node answers it 2.04: "
                      f"{latencies[-1] * 1000:.0f} ms with the import's own run, "
                      f"{after_commit[-1] * 1000:.0f} ms after it exited", flush=True)
            s.stop()
        summary["propagation_s"] = spread(latencies)
        summary["propagation_after_commit_s"] = spread(after_commit)

        # 4. request rate, csv against postgres, alternating rounds, same devices
        small = os.path.join(work, "small.csv")
        with open(small, "w") as f:
            subprocess.run([sys.executable, MAKE_FLEET_CSV, str(args.load_devices)], stdout=f,
                           check=True)
        with open(small) as f:
            rows = [tuple(line.rstrip("\n").split(",")) for line in f.readlines()[1:]]
        pg.psql("CREATE DATABASE load")
        database = "load"
        import_file(small, "load")
        rates = {"csv": [], "postgres": []}
        for i in range(args.rounds):
            for backend in ("csv", "postgres") if i % 2 == 0 else ("postgres", "csv"):
                if backend == "csv":
                    s = Server(devices=rows, coaps="", shards=1)
                else:
                    s = node("postgres")
                with s:
                    r = subprocess.run(
                        [args.loadgen, "--target", f"127.0.0.1:{s.address[1]}", "--devices",
                         str(args.load_devices), "--window", "2", "--duration",
                         str(args.load_seconds), "--drain-ms", "5000"],
                        capture_output=True, text=True, timeout=120)
                    s.stop()
                report = json.loads(r.stdout.strip().splitlines()[-1])
                rates[backend].append(report["rate"])
                print(f"{backend}: {report['rate']:.0f} requests/s, codes {report['codes']}, "
                      f"p99 {report['latency_us']['p99']:.0f} us", flush=True)
        summary["rate_csv"] = spread(rates["csv"])
        summary["rate_postgres"] = spread(rates["postgres"])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
