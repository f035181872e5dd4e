#!/usr/bin/env bash
# compare_dtls.sh: issue #5's measurements and SPEC §11's two DTLS goals, in one run on one
# machine. Interleaved for R rounds of D seconds (the order reverses every other round, so drift
# on a shared machine hits every row), each run against a freshly started server:
#
#   echo           udp_echo (bench/tools/udp_echo.cc) under coap_blast: the bare-echo ceiling E
#   coapgate       coapgate, 1 shard, file sink to /dev/null (ack after the sink), plain CoAP
#                  under coap_blast (N devices, window W, CON POST /?t=bench, 48-byte payload)
#   coapgate-dtls  the same coapgate config, the same N devices and window W, but over coaps://
#                  with dtls_blast --mode requests: every device completes one full PSK handshake
#                  first (untimed), then the same closed loop over its established session
#                  (PSK-AES128-CCM-8 unless --cipher)
#   handshakes     the same coapgate config, dtls_blast --mode handshakes: K devices each loop
#                  handshake (HelloVerifyRequest included) -> close_notify -> new source port
#                  for D seconds. One shard, so the rate is per core of coapgate
#
# Then once: a spoofed-ClientHello flood (dtls_blast --mode flood: cookieless ClientHellos from
# fresh source addresses in 127.64.0.0/10 and fresh ports, paced) against a fresh coapgate, with
# its VmRSS/VmHWM (/proc/PID/status) sampled before and after and its SIGUSR1 `counters (dtls)`
# line, which must show sessions=0 and handshakes_started=0.
#
#   bench/tools/compare_dtls.sh [--rounds R] [--duration D] [--devices N] [--window W]
#       [--hs-devices K] [--cipher NAME] [--flood-count C] [--flood-rate PER_S]
#       [--runs "echo coapgate coapgate-dtls handshakes"] [--no-flood] [--no-build]
#       [--build-dir DIR] [--keep]
#
# Defaults: 3 rounds x 5 s, N = 64 devices, W = 2 (as compare_echo_libcoap.sh), K = 64,
# flood 100,000 ClientHellos at 20,000/s; about 2 minutes in all. udp_echo and coap_blast are
# compiled with g++ into --build-dir (default /tmp/benchtools_build) as compare_echo_libcoap.sh
# does; coapgate and dtls_blast (which need the wolfSSL of the build tree) are built with
# `cmake --build build/release --target coapgate dtls_blast` (configuring the release preset if
# needed) unless --no-build. Every process runs on 127.0.0.0/8 only, is started and killed here
# (by PID, also on exit), and lives at most D + 60 s (D + 90 s for dtls_blast).
#
# CPU: utime + stime from /proc of the server (coapgate: the whole process and its threads
# named shard-*) and the client's own getrusage, per request (or per handshake). On a shared
# 2-CPU machine the server and the driver compete for the CPUs, so besides the rates read the
# server's µs per item: "handshakes per server CPU-second" is the per-core figure independent
# of how much CPU the driver took. "other CPU" is what the rest of the machine (other jobs) used
# during the run, from /proc/stat: a round where it is high is a round to distrust. coapgate
# pins shard i to CPU i, so on 2 CPUs a busy neighbour on CPU 0 slows the shard directly.
set -euo pipefail

ROUNDS=3
DURATION=5
DEVICES=64
WINDOW=2
HS_DEVICES=64
CIPHER=PSK-AES128-CCM-8
FLOOD_COUNT=100000
FLOOD_RATE=20000
PAYLOAD=48
RUNS="echo coapgate coapgate-dtls handshakes"
FLOOD=1
BUILD=1
BUILD_DIR=/tmp/benchtools_build
KEEP=0

usage() { sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --hs-devices) HS_DEVICES=$2; shift 2 ;;
    --cipher) CIPHER=$2; shift 2 ;;
    --flood-count) FLOOD_COUNT=$2; shift 2 ;;
    --flood-rate) FLOOD_RATE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --no-flood) FLOOD=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "compare_dtls.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
check_range() {  # name value min max
  if ! [[ $2 =~ ^[0-9]+$ ]] || (( $2 < $3 || $2 > $4 )); then
    echo "$1: $3..$4" >&2; exit 2
  fi
}
check_range --rounds "$ROUNDS" 1 20
check_range --duration "$DURATION" 1 300
check_range --devices "$DEVICES" 1 250
check_range --window "$WINDOW" 1 64
check_range --hs-devices "$HS_DEVICES" 1 250
check_range --flood-count "$FLOOD_COUNT" 1 10000000
check_range --flood-rate "$FLOOD_RATE" 1 1000000
for run in $RUNS; do
  case "$run" in echo|coapgate|coapgate-dtls|handshakes) ;;
    *) echo "--runs: unknown run '$run'" >&2; exit 2 ;;
  esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=common.sh
source "$REPO/bench/tools/common.sh"
RELEASE=$REPO/build/release
COAPGATE_BIN=${COAPGATE_BIN:-$RELEASE/app/coapgate}
DTLS_BLAST=${DTLS_BLAST:-$RELEASE/bench/dtls_blast}
WORK=$(mktemp -d /tmp/compare_dtls.XXXXXX)
RESULTS=$WORK/results.tsv
CLK_TCK=$(getconf CLK_TCK)
SERVER_PID=""   # what we started (and kill): udp_echo, or `timeout` around coapgate
CPU_PID=""      # the server process itself (coapgate under `timeout`)
CLIENT_PID=""
PLAIN_PORT=""
SECURE_PORT=""
: >"$RESULTS"

cleanup() {
  local pid
  for pid in "$CLIENT_PID" "$SERVER_PID"; do
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if (( KEEP )); then echo "raw results and logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_tools() {
  mkdir -p "$BUILD_DIR"
  local tool
  for tool in udp_echo coap_blast; do
    local src=$REPO/bench/tools/$tool.cc bin=$BUILD_DIR/$tool
    if [[ ! -x $bin || $src -nt $bin || -n $(find "$REPO/codec" -newer "$bin" -print -quit) ]]; then
      echo "building $bin" >&2
      g++ -std=c++20 -O2 -Wall -Wextra -Wpedantic -Wshadow -Wold-style-cast -Werror \
          -I"$REPO" "$src" "$REPO"/codec/*.cc "$REPO"/bench/loadgen/histogram.cc -pthread -o "$bin"
    fi
  done
  if (( BUILD )); then
    if [[ ! -f $RELEASE/build.ninja && ! -f $RELEASE/Makefile ]]; then
      (cd "$REPO" && cmake --preset release >&2)
    fi
    echo "building coapgate and dtls_blast in $RELEASE" >&2
    cmake --build "$RELEASE" --target coapgate dtls_blast >&2
  fi
  local bin
  for bin in "$COAPGATE_BIN" "$DTLS_BLAST"; do
    [[ -x $bin ]] || { echo "missing $bin (build it, or drop --no-build)" >&2; exit 1; }
  done
}

# Busy ticks of the whole machine (user nice system irq softirq steal of /proc/stat's cpu line).
machine_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

start_echo() {
  "$BUILD_DIR/udp_echo" --listen 127.0.0.1:0 --threads 1 --duration $((DURATION + 60)) \
      >"$WORK/echo.out" 2>>"$WORK/echo.err" &
  SERVER_PID=$!
  CPU_PID=$SERVER_PID
  local i
  for i in $(seq 100); do
    PLAIN_PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/echo.out")
    [[ -n $PLAIN_PORT ]] && return 0
    sleep 0.05
  done
  echo "udp_echo did not start" >&2; return 1
}

# One config for every coapgate run: plain and DTLS listeners, 1 shard, the devices (with a
# PSK each, DTLS identity = ICCID) in the registry, a file sink writing to /dev/null.
write_coapgate_config() {
  local n=$(( DEVICES > HS_DEVICES ? DEVICES : HS_DEVICES ))
  "$DTLS_BLAST" --make-devices "$n" >"$WORK/devices.csv"
  cat >"$WORK/coapgate.toml" <<TOML
[server]
coap_listen = ["127.0.0.1:0"]
coaps_listen = ["127.0.0.1:0"]
shards = 1
[devices]
file = "$WORK/devices.csv"
state = "$WORK/state.db"
[[sinks]]
type = "file"
path = "/dev/null"
TOML
}

start_coapgate() {  # log file
  local log=$1
  : >"$log"
  timeout $((DURATION + 60)) "$COAPGATE_BIN" --config "$WORK/coapgate.toml" 2>>"$log" &
  SERVER_PID=$!
  local i
  for i in $(seq 100); do
    PLAIN_PORT=$(sed -n 's|.*listening coap://127\.0\.0\.1:\([0-9]*\) .*|\1|p' "$log")
    SECURE_PORT=$(sed -n 's|.*listening coaps://127\.0\.0\.1:\([0-9]*\) .*|\1|p' "$log")
    if [[ -n $PLAIN_PORT && -n $SECURE_PORT ]]; then
      CPU_PID=$(pgrep -P "$SERVER_PID" | head -n1)
      [[ -n $CPU_PID ]] && return 0
    fi
    sleep 0.05
  done
  echo "coapgate did not start:" >&2; cat "$log" >&2; return 1
}

# SIGUSR1, then the counters lines it logged (the last `counters (dtls)` one is what we need).
dump_counters() {  # log file
  local log=$1 before i
  before=$(grep -c 'counters (dtls)' "$log" || true)
  kill -USR1 "$CPU_PID" 2>/dev/null || return 0
  for i in $(seq 40); do
    (( $(grep -c 'counters (dtls)' "$log" || true) > before )) && return 0
    sleep 0.05
  done
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

run_client() {  # output file, command...: runs it as CLIENT_PID (killed on exit), waits
  local out=$1
  shift
  "$@" >"$out" 2>>"$WORK/client.err" &
  CLIENT_PID=$!
  wait "$CLIENT_PID" || { echo "client failed: $*" >&2; tail -5 "$WORK/client.err" >&2; return 1; }
  CLIENT_PID=""
}

run_one() {  # run round
  local run=$1 round=$2 log="$WORK/$1.$2.log" json_file="$WORK/$1.$2.json"
  local t0 t1 s0=0 s1=0 m0 m1
  if [[ $run == echo ]]; then
    start_echo
  else
    start_coapgate "$log"
  fi
  m0=$(machine_ticks)
  t0=$(cpu_ticks "$CPU_PID")
  [[ $run != echo ]] && s0=$(thread_ticks "$CPU_PID" shard-)
  case "$run" in
    echo|coapgate)
      run_client "$json_file" timeout $((DURATION + 60)) "$BUILD_DIR/coap_blast" \
          --target "127.0.0.1:$PLAIN_PORT" --devices "$DEVICES" --window "$WINDOW" \
          --payload "$PAYLOAD" --duration "$DURATION" ;;
    coapgate-dtls)
      run_client "$json_file" timeout $((DURATION + 90)) "$DTLS_BLAST" --mode requests \
          --target "127.0.0.1:$SECURE_PORT" --devices-csv "$WORK/devices.csv" \
          --devices "$DEVICES" --window "$WINDOW" --payload "$PAYLOAD" --cipher "$CIPHER" \
          --duration "$DURATION" ;;
    handshakes)
      run_client "$json_file" timeout $((DURATION + 90)) "$DTLS_BLAST" --mode handshakes \
          --target "127.0.0.1:$SECURE_PORT" --devices-csv "$WORK/devices.csv" \
          --devices "$HS_DEVICES" --cipher "$CIPHER" --duration "$DURATION" ;;
  esac
  t1=$(cpu_ticks "$CPU_PID")
  m1=$(machine_ticks)
  [[ $run != echo ]] && s1=$(thread_ticks "$CPU_PID" shard-)
  local counters="-"
  if [[ $run != echo ]]; then
    dump_counters "$log"
    counters=$(grep 'counters (dtls)' "$log" | tail -n1 | sed 's/.*counters (dtls): //')
  fi
  stop_server
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$round" "$((t1 - t0))" "$((s1 - s0))" \
      "$((m1 - m0))" "$(tr -d '\n' <"$json_file")" "${counters:--}" >>"$RESULTS"
  echo "round $round $run: $(cut -c1-150 "$json_file")" >&2
}

run_flood() {
  local log="$WORK/flood.log"
  start_coapgate "$log"
  sleep 0.5  # settled after start-up
  local rss0 hwm0 rss1 hwm1
  rss0=$(status_kb "$CPU_PID" VmRSS)
  hwm0=$(status_kb "$CPU_PID" VmHWM)
  run_client "$WORK/flood.json" timeout $((DURATION + 90)) "$DTLS_BLAST" --mode flood \
      --target "127.0.0.1:$SECURE_PORT" --flood-count "$FLOOD_COUNT" \
      --flood-rate "$FLOOD_RATE" --duration $(( FLOOD_COUNT / FLOOD_RATE + 10 > 300 ? 300 : FLOOD_COUNT / FLOOD_RATE + 10 ))
  sleep 0.5
  rss1=$(status_kb "$CPU_PID" VmRSS)
  hwm1=$(status_kb "$CPU_PID" VmHWM)
  dump_counters "$log"
  stop_server
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rss0" "$hwm0" "$rss1" "$hwm1" \
      "$(tr -d '\n' <"$WORK/flood.json")" \
      "$(grep 'counters (dtls)' "$log" | tail -n1 | sed 's/.*counters (dtls): //')" \
      >"$WORK/flood.tsv"
}

build_tools
write_coapgate_config
read -r -a runs <<<"$RUNS"
started=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
  order=("${runs[@]}")
  if (( round % 2 == 0 )); then
    order=()
    for (( i = ${#runs[@]} - 1; i >= 0; i-- )); do order+=("${runs[$i]}"); done
  fi
  for run in "${order[@]}"; do run_one "$run" "$round"; done
done
(( FLOOD )) && run_flood

echo
echo "$DEVICES devices, window $WINDOW, payload $PAYLOAD B, $ROUNDS x ${DURATION}s; handshakes:" \
     "$HS_DEVICES devices; cipher $CIPHER; coapgate 1 shard; $(nproc) CPUs" \
     "($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n1)); $(uname -r);" \
     "$(( $(date +%s) - started )) s; load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo
python3 - "$RESULTS" "$CLK_TCK" "$RUNS" "$WORK" "$FLOOD" <<'EOF'
import glob, json, os, re, statistics, sys

path, clk_tck, runs, work, flood = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4], sys.argv[5] == "1"
rows = []
for line in open(path):
    run, rnd, ticks, shard_ticks, machine_ticks, blob, counters = line.rstrip("\n").split("\t", 6)
    j = json.loads(blob)
    items = j["handshakes"] if run == "handshakes" else j["answered"]
    secs = j["duration_s"]
    server_s = int(ticks) / clk_tck
    shard_s = int(shard_ticks) / clk_tck
    rows.append(dict(run=run, round=int(rnd), j=j, items=items, rate=j["rate"],
                     cpu=server_s / secs * 100, shard_us=(shard_s / items * 1e6) if items and run != "echo" else None,
                     server_us=server_s / items * 1e6 if items else 0.0,
                     client_us=j["cpu_s"] / items * 1e6 if items else 0.0,
                     client_cpu=j["cpu_s"] / secs * 100, counters=counters,
                     # what the rest of the machine (other jobs) used meanwhile, in % of one CPU
                     other_cpu=max(0.0, (int(machine_ticks) / clk_tck - server_s - j["cpu_s"]) / secs * 100)))

def codes(r):
    j = r["j"]
    if r["run"] == "handshakes":
        return f"failures:{j['failures']} timeouts:{j['timeouts']} retx:{j['retransmissions']}"
    text = " ".join(f"{k}:{v}" for k, v in j["codes"].items()) or "-"
    if j.get("timeouts"):
        text += f" timeouts:{j['timeouts']}"
    if r["run"] == "coapgate-dtls":
        s = j["setup"]
        text += f" (sessions {s['established']}/{j['devices']}, lost {j['sessions_lost']})"
    return text

def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"

print("| run | round | items/s | p50 µs | p99 µs | codes / outcome | server CPU | server µs/item | shard µs/item | client CPU | client µs/item | other CPU |")
print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
for r in sorted(rows, key=lambda r: (runs.index(r["run"]), r["round"])):
    lat = r["j"]["latency_us"]
    print(f"| {r['run']} | {r['round']} | {r['rate']:,.0f} | {lat['p50']:.0f} | {lat['p99']:.0f} | "
          f"{codes(r)} | {r['cpu']:.0f} % | {r['server_us']:.2f} | {fmt(r['shard_us'])} | "
          f"{r['client_cpu']:.0f} % | {r['client_us']:.2f} | {r['other_cpu']:.0f} % |")
print()
print("| run | median items/s | median p50 µs | median p99 µs | median server µs/item | median shard µs/item | median client µs/item |")
print("|---|---:|---:|---:|---:|---:|---:|")
med = {}
for run in runs:
    mine = [r for r in rows if r["run"] == run]
    if not mine:
        continue
    m = lambda key: statistics.median(r[key] for r in mine)
    med[run] = dict(rate=m("rate"), server_us=m("server_us"), client_us=m("client_us"),
                    shard_us=statistics.median(r["shard_us"] for r in mine) if run != "echo" else None)
    label = {"echo": "echo (E)", "handshakes": "handshakes (per s)"}.get(run, run)
    print(f"| {label} | {med[run]['rate']:,.0f} | "
          f"{statistics.median(r['j']['latency_us']['p50'] for r in mine):.0f} | "
          f"{statistics.median(r['j']['latency_us']['p99'] for r in mine):.0f} | "
          f"{med[run]['server_us']:.2f} | {fmt(med[run]['shard_us'])} | {med[run]['client_us']:.2f} |")
print()

def verdict(ok):
    return "MET" if ok else "NOT MET"

if "coapgate-dtls" in med and "echo" in med:
    ratio = med["coapgate-dtls"]["rate"] / med["echo"]["rate"]
    print(f"coapgate-dtls / E     = {ratio:.2f}   (SPEC §11 goal >= 0.55: {verdict(ratio >= 0.55)})")
if "coapgate-dtls" in med and "coapgate" in med:
    print(f"coapgate-dtls / plain = {med['coapgate-dtls']['rate'] / med['coapgate']['rate']:.2f}")
    print(f"server CPU per request: plain {med['coapgate']['server_us']:.2f} µs, "
          f"DTLS {med['coapgate-dtls']['server_us']:.2f} µs "
          f"(+{med['coapgate-dtls']['server_us'] - med['coapgate']['server_us']:.2f} µs for DTLS)")
if "coapgate" in med and "echo" in med:
    print(f"coapgate / E          = {med['coapgate']['rate'] / med['echo']['rate']:.2f}")
# Ratios within each round (runs seconds apart), and their medians: robust to a round that
# another job on the machine slowed down as a whole.
pairs = [("coapgate-dtls", "echo"), ("coapgate-dtls", "coapgate"), ("coapgate", "echo")]
pairs = [(a, b) for a, b in pairs if a in med and b in med]
if pairs:
    print()
    print("| round | " + " | ".join(f"{a} / {'E' if b == 'echo' else b}" for a, b in pairs) + " |")
    print("|---:|" + "---:|" * len(pairs))
    per_round = {p: [] for p in pairs}
    for rnd in sorted({r["round"] for r in rows}):
        rate = {r["run"]: r["rate"] for r in rows if r["round"] == rnd}
        cells = []
        for a, b in pairs:
            if a in rate and b in rate and rate[b]:
                per_round[(a, b)].append(rate[a] / rate[b])
                cells.append(f"{rate[a] / rate[b]:.2f}")
            else:
                cells.append("-")
        print(f"| {rnd} | " + " | ".join(cells) + " |")
    print("| median | " + " | ".join(f"{statistics.median(v):.2f}" if v else "-" for v in per_round.values()) + " |")
    print()
if "handshakes" in med:
    hs = med["handshakes"]
    per_cpu = 1e6 / hs["server_us"] if hs["server_us"] else 0
    per_shard = 1e6 / hs["shard_us"] if hs["shard_us"] else 0
    print(f"full PSK handshakes/s, 1 shard: {hs['rate']:,.0f}  (SPEC §11 goal >= 5,000 per core: "
          f"{verdict(hs['rate'] >= 5000)})")
    print(f"  per CPU-second of coapgate: {per_cpu:,.0f} (whole process), {per_shard:,.0f} (shard thread)")

# Every coapgate run's last dtls counters line, and anything it logged above info.
print()
print("coapgate `counters (dtls)` after each DTLS run:")
for r in sorted(rows, key=lambda r: (runs.index(r["run"]), r["round"])):
    if r["run"] in ("coapgate-dtls", "handshakes"):
        print(f"  {r['run']} {r['round']}: {r['counters']}")
odd = []
for log in sorted(glob.glob(os.path.join(work, "*.log"))):
    for line in open(log, errors="replace"):
        if re.search(r"\b(warn|warning|error|critical)\b", line, re.I):
            odd.append(f"  {os.path.basename(log)}: {line.rstrip()}")
print(f"coapgate log lines above info: {len(odd)}")
for line in odd[:20]:
    print(line)

if flood and os.path.exists(os.path.join(work, "flood.tsv")):
    rss0, hwm0, rss1, hwm1, blob, counters = open(os.path.join(work, "flood.tsv")).read().rstrip("\n").split("\t", 5)
    j = json.loads(blob)
    fields = dict(kv.split("=", 1) for kv in counters.split() if "=" in kv)
    sessions = int(fields.get("sessions", "-1"))
    started = int(fields.get("handshakes_started", "0"))
    print()
    print(f"Spoofed ClientHello flood: {j['sent']:,} cookieless ClientHellos from fresh 127.64/10 "
          f"addresses and ports at {j['rate']:,.0f}/s; {j['hvr_received']:,} HelloVerifyRequests came back "
          f"before the sockets closed")
    print(f"  coapgate VmRSS {int(rss0):,} kB -> {int(rss1):,} kB (delta {int(rss1) - int(rss0):+,} kB); "
          f"VmHWM {int(hwm0):,} kB -> {int(hwm1):,} kB")
    print(f"  counters (dtls): {counters}")
    print(f"  sessions={sessions}, handshakes_started={started}: "
          f"{'no state kept (as SPEC §7 requires)' if sessions == 0 and started == 0 else 'STATE KEPT: a bug'}")
EOF
