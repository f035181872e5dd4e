#!/usr/bin/env bash
# compare_echo_libcoap.sh: same-run, same-machine yardsticks of SPEC §11. Runs coap_blast
# against the bare-echo ceiling E (udp_echo) and against libcoap's coap-server-notls, interleaved
# for R rounds of D seconds (the order alternates per round, so drift on a shared machine hits
# both), and prints a Markdown table per run plus the median per server.
#
#   bench/tools/compare_echo_libcoap.sh [--rounds R] [--duration D] [--devices N] [--window W]
#       [--threads T] [--echo-threads N] [--payload BYTES] [--servers "echo coapgate libcoap"]
#       [--build-dir DIR] [--keep]
#
# The tools are compiled into --build-dir (default /tmp/benchtools_build) when missing or older
# than their sources. Every server runs on 127.0.0.1 only, is started and killed here (by PID),
# and lives at most D + 60 s. What each server is asked:
#   echo     CON POST /?t=bench            -> ACK 2.04 (no work at all: the ceiling E)
#   libcoap  CON PUT /example_data?t=bench -> ACK 2.04 (2.01 for the very first PUT, which
#            creates the data): the one resource of coap-server that takes a payload, stores
#            it and answers 2.04. POST is 4.05 on every coap-server resource, and GET / or
#            GET /time return text instead of storing anything, so PUT is the closest to
#            ingest (it keeps the payload: a later GET /example_data returns it).
# The default window is 2, not coap_blast's 4: 64 x 2 = 128 requests in flight stay below the
# ~190 small datagrams a default 208 KiB receive buffer holds (libcoap does not enlarge it), so
# a saturated libcoap queues instead of dropping; E is the same with either window here.
set -euo pipefail

ROUNDS=3
DURATION=5
DEVICES=64
WINDOW=2
BLAST_THREADS=1
ECHO_THREADS=1
PAYLOAD=48
SERVERS="echo coapgate libcoap"
BUILD_DIR=/tmp/benchtools_build
KEEP=0

usage() { sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --threads) BLAST_THREADS=$2; shift 2 ;;
    --echo-threads) ECHO_THREADS=$2; shift 2 ;;
    --payload) PAYLOAD=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "compare_echo_libcoap.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || (( ROUNDS < 1 || ROUNDS > 20 )); then
  echo "--rounds: 1..20" >&2; exit 2
fi
if ! [[ $DURATION =~ ^[0-9]+$ ]] || (( DURATION < 1 || DURATION > 300 )); then
  echo "--duration: 1..300 (coap_blast's cap)" >&2; exit 2
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=common.sh
source "$REPO/bench/tools/common.sh"
WORK=$(mktemp -d /tmp/compare_echo_libcoap.XXXXXX)
RESULTS=$WORK/results.tsv
CLK_TCK=$(getconf CLK_TCK)
SERVER_PID=""   # what we started (and kill)
CPU_PID=""      # the process whose CPU time is the server's (differs under `timeout`)
SERVER_PORT=""

cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if (( KEEP )); then echo "raw results kept in $WORK" >&2; else rm -rf "$WORK"; fi
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
}

# --- servers: start_<name> sets SERVER_PID and SERVER_PORT; blast_args_<name> prints the
# --- coap_blast options that make the request this server answers 2.04.

start_echo() {
  "$BUILD_DIR/udp_echo" --listen 127.0.0.1:0 --threads "$ECHO_THREADS" \
      --duration $((DURATION + 60)) >"$WORK/echo.out" 2>>"$WORK/echo.err" &
  SERVER_PID=$!
  CPU_PID=$SERVER_PID
  local i
  for i in $(seq 100); do
    SERVER_PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/echo.out")
    [[ -n $SERVER_PORT ]] && return 0
    sleep 0.05
  done
  echo "udp_echo did not start" >&2; return 1
}
blast_args_echo() { :; }

start_libcoap() {
  SERVER_PORT=$(free_port)
  timeout $((DURATION + 60)) coap-server-notls -A 127.0.0.1 -p "$SERVER_PORT" \
      >>"$WORK/libcoap.log" 2>&1 &
  SERVER_PID=$!
  local i
  for i in $(seq 50); do  # ready when it answers a GET
    if coap-client-notls -B 1 -m get "coap://127.0.0.1:$SERVER_PORT/" >/dev/null 2>&1; then
      CPU_PID=$(pgrep -P "$SERVER_PID" | head -n1)  # coap-server-notls itself
      return 0
    fi
    sleep 0.1
  done
  echo "coap-server-notls did not start" >&2; return 1
}
blast_args_libcoap() { echo "--method put --path example_data"; }

# coapgate itself: CON POST /?t=bench (coap_blast's default request) from N device addresses
# that are in its registry -> 2.04 after the file sink (writing to /dev/null) took the
# message. One shard, so that the three servers are compared per core.
COAPGATE_BIN=${COAPGATE_BIN:-$REPO/build/release/app/coapgate}
COAPGATE_SHARDS=${COAPGATE_SHARDS:-1}
start_coapgate() {
  if [[ ! -x $COAPGATE_BIN ]]; then
    echo "building coapgate (release preset)" >&2
    "$REPO/deploy/build.sh" release >&2
  fi
  python3 "$REPO/bench/tools/make_devices.py" "$DEVICES" >"$WORK/devices.csv"
  cat >"$WORK/coapgate.toml" <<TOML
[server]
coap_listen = ["127.0.0.1:0"]
coaps_listen = []
shards = $COAPGATE_SHARDS
[devices]
file = "$WORK/devices.csv"
state = "$WORK/state.db"
[[sinks]]
type = "file"
path = "/dev/null"
TOML
  : >"$WORK/coapgate.err"
  timeout $((DURATION + 60)) "$COAPGATE_BIN" --config "$WORK/coapgate.toml" \
      2>>"$WORK/coapgate.err" &
  SERVER_PID=$!
  local i
  for i in $(seq 100); do
    SERVER_PORT=$(sed -n 's|.*listening coap://127\.0\.0\.1:\([0-9]*\) .*|\1|p' "$WORK/coapgate.err")
    if [[ -n $SERVER_PORT ]]; then
      CPU_PID=$(pgrep -P "$SERVER_PID" | head -n1)
      return 0
    fi
    sleep 0.05
  done
  echo "coapgate did not start:" >&2; cat "$WORK/coapgate.err" >&2; return 1
}
blast_args_coapgate() { :; }

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

run_one() {  # server round
  local server=$1 round=$2
  "start_$server"
  local ticks0 ticks1 json
  ticks0=$(cpu_ticks "$CPU_PID")
  # shellcheck disable=SC2046  # the per-server options are meant to split
  json=$("$BUILD_DIR/coap_blast" --target "127.0.0.1:$SERVER_PORT" --devices "$DEVICES" \
      --window "$WINDOW" --threads "$BLAST_THREADS" --payload "$PAYLOAD" \
      --duration "$DURATION" $("blast_args_$server") 2>>"$WORK/blast.err")
  ticks1=$(cpu_ticks "$CPU_PID")
  stop_server
  echo "$json" >"$WORK/$server.$round.json"
  printf '%s\t%s\t%s\t%s\n' "$server" "$round" "$(( ticks1 - ticks0 ))" "$json" >>"$RESULTS"
  echo "round $round $server: $(echo "$json" | cut -c1-160)" >&2
}

build_tools
read -r -a servers <<<"$SERVERS"
for round in $(seq "$ROUNDS"); do
  order=("${servers[@]}")
  if (( round % 2 == 0 )); then  # alternate the order: neither server always goes first
    order=()
    for (( i = ${#servers[@]} - 1; i >= 0; i-- )); do order+=("${servers[$i]}"); done
  fi
  for server in "${order[@]}"; do run_one "$server" "$round"; done
done

echo
echo "coap_blast: $DEVICES devices, window $WINDOW, $BLAST_THREADS thread(s), payload $PAYLOAD B," \
     "$ROUNDS x ${DURATION}s; udp_echo threads $ECHO_THREADS; $(nproc) CPUs; $(uname -r)"
echo
python3 - "$RESULTS" "$CLK_TCK" "$SERVERS" <<'EOF'
import json, statistics, sys

path, clk_tck, servers = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
rows = []
for line in open(path):
    server, rnd, ticks, blob = line.rstrip("\n").split("\t", 3)
    j = json.loads(blob)
    rows.append((server, int(rnd), j, int(ticks) / clk_tck / j["duration_s"] * 100))

def codes(j):
    return " ".join(f"{k}:{v}" for k, v in j["codes"].items()) or "-"

print("| server | round | req/s | p50 µs | p99 µs | timeouts | codes | server CPU | blast CPU |")
print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
for server, rnd, j, cpu in sorted(rows, key=lambda r: (servers.index(r[0]), r[1])):
    print(f"| {server} | {rnd} | {j['rate']:,.0f} | {j['latency_us']['p50']:.0f} | "
          f"{j['latency_us']['p99']:.0f} | {j['timeouts']} | {codes(j)} | {cpu:.0f} % | "
          f"{j['cpu_s'] / j['duration_s'] * 100:.0f} % |")
print()
print("| server | median req/s | median p50 µs | median p99 µs |")
print("|---|---:|---:|---:|")
medians = {}
for server in servers:
    mine = [j for s, _, j, _ in rows if s == server]
    if not mine:
        continue
    medians[server] = statistics.median(j["rate"] for j in mine)
    print(f"| {server} (median) | {medians[server]:,.0f} | "
          f"{statistics.median(j['latency_us']['p50'] for j in mine):.0f} | "
          f"{statistics.median(j['latency_us']['p99'] for j in mine):.0f} |")
if medians.get("libcoap"):
    print()
    for server, rate in medians.items():
        if server != "libcoap":
            print(f"{server} / libcoap = {rate / medians['libcoap']:.2f}")
EOF
