#!/usr/bin/env bash
# compare_sinks.sh: same-run, same-machine sink benchmarks of issue #4 and SPEC §11's MQTT goals.
# Runs, interleaved for R rounds of D seconds (the order reverses every other round, so drift
# on a shared machine hits every run alike), and prints a Markdown table per run, the medians
# and the ratios:
#
#   file         coapgate, one file sink writing to /dev/null: the ingest max I
#   mqtt-broker  mqtt_publish_rate -> a fresh mosquitto: the broker's own publish-only QoS 1
#                rate B from one client (window --inflight, --mqtt-payload bytes)
#   mqtt         coapgate, one MQTT sink (QoS 1, connections = 1) -> a fresh mosquitto
#   mqtt-c2      the same with connections = 2
#   mqtt-down    coapgate, one MQTT sink to a port where nothing listens (the broker is down):
#                every answer is a 5.03, and their rate is what counts
#   kafka        coapgate, one Kafka sink -> a librdkafka mock cluster (kafka_mock_cluster,
#                3 brokers, topic telemetry with 4 partitions); also the shard threads' CPU
#                per message
#
#   bench/tools/compare_sinks.sh [--rounds R] [--duration D] [--devices N] [--window W]
#       [--threads T] [--payload BYTES] [--shards S] [--kafka-window W] [--inflight N]
#       [--mqtt-payload BYTES] [--servers "file mqtt-broker mqtt mqtt-c2 mqtt-down kafka"]
#       [--build-dir DIR] [--keep]
#
# Load: coap_blast with N devices (default 64) x W requests in flight (default 2, as in
# compare_echo_libcoap.sh: 128 in flight, well below the MQTT sink's max_inflight of 1000).
# The kafka run gets --kafka-window instead (default 64, coap_blast's largest: 4,096 in
# flight, half the shard's default inflight_capacity): the Kafka sink lingers 5 ms per batch
# (linger.ms, coapgate's default, written out in its config here) and the idempotent producer
# pipelines at most 5 requests per broker, so a message waits ~6-20 ms for its delivery
# report and a closed loop with 128 in flight would measure that wait (128 / 6 ms ≈ 21k/s),
# not the sink. mqtt_publish_rate keeps --inflight (default 1000, the MQTT sink's
# max_inflight) messages unacknowledged and publishes payloads as large as the envelope
# coapgate publishes for coap_blast's request (measured once at start: one request through
# coapgate and mosquitto to mosquitto_sub), unless --mqtt-payload gives the size.
# A default run (3 rounds x 5 s x 6 runs) takes ~100 s.
#
# coap_blast and mqtt_publish_rate are compiled into --build-dir (default
# /tmp/benchtools_build) when missing or older than their sources; coapgate is
# $COAPGATE_BIN (default build/release/app/coapgate) and kafka_mock_cluster
# $KAFKA_MOCK_CLUSTER (default build/release/tests/kafka_mock_cluster), built with the release
# preset when missing. Everything listens on 127.0.0.1 only; every process is started here,
# killed here by PID (also on exit or ^C) and lives at most D + 60 s.
#
# Rates: "msgs/s" is, for coapgate runs, the messages every sink accepted per second (coap_blast's
# 2.04 answers; for mqtt-down its 5.03 answers), for mqtt-broker the PUBACKs per second;
# "answers/s" is coap_blast's rate (every answer). CPU from /proc, utime + stime: "shard
# µs/msg" is the CPU of coapgate's threads named shard-* per message counted in msgs/s, "pub
# µs/msg" the same for the threads named publish-*, "broker" mosquitto's or the mock cluster's
# process, "client" coap_blast or mqtt_publish_rate, "all µs/msg" coapgate + broker + client per
# message. On 2 CPUs coap_blast, coapgate and the broker share the machine: read the ratios and
# the CPU per message, not the absolute rates.
set -euo pipefail

ROUNDS=3
DURATION=5
DEVICES=64
WINDOW=2
KAFKA_WINDOW=64
BLAST_THREADS=1
PAYLOAD=48
SHARDS=1
INFLIGHT=1000
MQTT_PAYLOAD=""   # default: the size of the envelope coapgate publishes (measured at start)
SERVERS="file mqtt-broker mqtt mqtt-c2 mqtt-down kafka"
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
    --payload) PAYLOAD=$2; shift 2 ;;
    --shards) SHARDS=$2; shift 2 ;;
    --kafka-window) KAFKA_WINDOW=$2; shift 2 ;;
    --inflight) INFLIGHT=$2; shift 2 ;;
    --mqtt-payload) MQTT_PAYLOAD=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "compare_sinks.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || (( ROUNDS < 1 || ROUNDS > 20 )); then
  echo "--rounds: 1..20" >&2; exit 2
fi
if ! [[ $DURATION =~ ^[0-9]+$ ]] || (( DURATION < 1 || DURATION > 300 )); then
  echo "--duration: 1..300 (coap_blast's cap)" >&2; exit 2
fi
if ! [[ $SHARDS =~ ^[0-9]+$ && $INFLIGHT =~ ^[0-9]+$ ]] || (( INFLIGHT < 1 || INFLIGHT > 65535 )); then
  echo "--shards: a number; --inflight: 1..65535" >&2; exit 2
fi
for server in $SERVERS; do
  case "$server" in
    file|mqtt-broker|mqtt|mqtt-c2|mqtt-down|kafka) ;;
    *) echo "--servers: unknown run '$server'" >&2; exit 2 ;;
  esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=common.sh
source "$REPO/bench/tools/common.sh"
WORK=$(mktemp -d /tmp/compare_sinks.XXXXXX)
RESULTS=$WORK/results.tsv
CLK_TCK=$(getconf CLK_TCK)
LIFETIME=$((DURATION + 60))      # the longest any process started here may live
COAPGATE_BIN=${COAPGATE_BIN:-$REPO/build/release/app/coapgate}
KAFKA_MOCK_CLUSTER=${KAFKA_MOCK_CLUSTER:-$REPO/build/release/tests/kafka_mock_cluster}

# What we started, by PID: the `timeout` wrappers (killing one kills its child) and, for the
# CPU figures, the processes themselves.
GATE_PID=""; GATE_CPU_PID=""; GATE_PORT=""
BROKER_PID=""; BROKER_CPU_PID=""; BROKER_PORT=""
KAFKA_FD_OPEN=0; KAFKA_BOOTSTRAP=""

# Sends SIGTERM to $1 and waits up to $2 s for it, then SIGKILL. $1 is a `timeout` wrapper:
# it passes SIGTERM on to its child and exits when the child does.
stop_pid() {
  local pid=$1 grace=${2:-15} i
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for (( i = 0; i < grace * 10; i++ )); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "compare_sinks.sh: pid $pid ignored SIGTERM for ${grace}s: SIGKILL" >&2
    local child
    for child in $(pgrep -P "$pid" 2>/dev/null); do kill -KILL "$child" 2>/dev/null || true; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_kafka() {
  if (( KAFKA_FD_OPEN )); then
    echo quit >&7 2>/dev/null || true
    exec 7>&-
    KAFKA_FD_OPEN=0
  fi
  stop_pid "$BROKER_PID" 5
  BROKER_PID=""; BROKER_CPU_PID=""
}

cleanup() {
  stop_pid "$GATE_PID" 10
  if (( KAFKA_FD_OPEN )); then stop_kafka; else stop_pid "$BROKER_PID" 5; fi
  if (( KEEP )); then echo "raw results kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_tools() {
  mkdir -p "$BUILD_DIR"
  local src=$REPO/bench/tools/coap_blast.cc bin=$BUILD_DIR/coap_blast
  if [[ ! -x $bin || $src -nt $bin || -n $(find "$REPO/codec" -newer "$bin" -print -quit) ]]; then
    echo "building $bin" >&2
    g++ -std=c++20 -O2 -Wall -Wextra -Wpedantic -Wshadow -Wold-style-cast -Werror \
        -I"$REPO" "$src" "$REPO"/codec/*.cc "$REPO"/bench/loadgen/histogram.cc -pthread -o "$bin"
  fi
  src=$REPO/bench/tools/mqtt_publish_rate.cc bin=$BUILD_DIR/mqtt_publish_rate
  if [[ ! -x $bin || $src -nt $bin ]]; then
    echo "building $bin" >&2
    g++ -std=c++20 -O2 -Wall -Wextra -Wpedantic -Wshadow -Wold-style-cast -Werror \
        -I"$REPO" "$src" -lmosquitto -o "$bin"
  fi
  if [[ ! -x $COAPGATE_BIN ]] || { [[ " $SERVERS " == *" kafka "* ]] && [[ ! -x $KAFKA_MOCK_CLUSTER ]]; }; then
    echo "building coapgate and kafka_mock_cluster (release preset)" >&2
    "$REPO/deploy/build.sh" release >&2
  fi
}

# --- mosquitto: a fresh broker per run, no persistence, no inflight/queue limits (its receive
# --- maximum is then 65535, so neither coapgate's 1000 nor mqtt_publish_rate's window is cut).
start_mosquitto() {
  local tag=$1
  BROKER_PORT=$(free_port)
  cat >"$WORK/mosquitto.conf" <<CONF
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
max_inflight_messages 0
max_queued_messages 0
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
CONF
  timeout "$LIFETIME" mosquitto -c "$WORK/mosquitto.conf" >"$WORK/$tag.mosquitto.log" 2>&1 7>&- &
  BROKER_PID=$!
  local i
  for i in $(seq 100); do
    if grep -q 'mosquitto version .* running' "$WORK/$tag.mosquitto.log" 2>/dev/null; then
      BROKER_CPU_PID=$(pgrep -P "$BROKER_PID" | head -n1)
      return 0
    fi
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "mosquitto did not start:" >&2; cat "$WORK/$tag.mosquitto.log" >&2; return 1
}

# --- the librdkafka mock cluster: commands on stdin (a FIFO held open on fd 7), bootstrap
# --- servers as one JSON line on stdout.
start_kafka() {
  local tag=$1
  rm -f "$WORK/kafka.in"
  mkfifo "$WORK/kafka.in"
  timeout "$LIFETIME" "$KAFKA_MOCK_CLUSTER" --brokers 3 --topic telemetry:4 \
      <"$WORK/kafka.in" >"$WORK/$tag.kafka.out" 2>"$WORK/$tag.kafka.err" &
  BROKER_PID=$!
  exec 7>"$WORK/kafka.in"   # unblocks the child's open; EOF on it would stop the cluster
  KAFKA_FD_OPEN=1
  local i
  for i in $(seq 100); do
    KAFKA_BOOTSTRAP=$(sed -n 's/.*"bootstrap" *: *"\([^"]*\)".*/\1/p' "$WORK/$tag.kafka.out")
    if [[ -n $KAFKA_BOOTSTRAP ]]; then
      BROKER_CPU_PID=$(pgrep -P "$BROKER_PID" | head -n1)
      return 0
    fi
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "kafka_mock_cluster did not start:" >&2; cat "$WORK/$tag.kafka.err" >&2; return 1
}

# --- coapgate with the sink section $2 (TOML), stderr to $WORK/$1.coapgate.err.
start_coapgate() {
  local tag=$1 sink=$2
  cat >"$WORK/$tag.toml" <<TOML
[server]
coap_listen = ["127.0.0.1:0"]
coaps_listen = []
shards = $SHARDS
[devices]
file = "$WORK/devices.csv"
state = "$WORK/$tag.state.db"
$sink
TOML
  : >"$WORK/$tag.coapgate.err"
  timeout "$LIFETIME" "$COAPGATE_BIN" --config "$WORK/$tag.toml" \
      >>"$WORK/$tag.coapgate.out" 2>>"$WORK/$tag.coapgate.err" 7>&- &
  GATE_PID=$!
  local i
  for i in $(seq 200); do
    GATE_PORT=$(sed -n 's|.*listening coap://127\.0\.0\.1:\([0-9]*\) .*|\1|p' "$WORK/$tag.coapgate.err")
    if [[ -n $GATE_PORT ]]; then
      GATE_CPU_PID=$(pgrep -P "$GATE_PID" | head -n1)
      return 0
    fi
    kill -0 "$GATE_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "coapgate did not start:" >&2; cat "$WORK/$tag.coapgate.err" >&2; return 1
}

mqtt_sink() {  # port connections
  cat <<TOML
[[sinks]]
type = "mqtt"
host = "127.0.0.1"
port = $1
qos = 1
connections = $2
TOML
}

# Waits until every MQTT connection of coapgate is up (its TCP connections to the broker are
# ESTABLISHED and the broker logged as many CONNECTs), at most 5 s: the first requests would
# otherwise meet a sink still connecting.
wait_mqtt_connected() {
  local tag=$1 want=$2 i
  local n
  for i in $(seq 100); do
    n=$(grep -c 'New client connected' "$WORK/$tag.mosquitto.log" 2>/dev/null || true)
    (( ${n:-0} >= want )) && return 0
    sleep 0.05
  done
  echo "warning: coapgate's $want MQTT connection(s) not up after 5 s" >&2
}

# Runs coap_blast (window $4) against coapgate for D seconds and appends the row to $RESULTS.
blast_coapgate() {
  local run=$1 round=$2 tag=$3 window=$4 json g0 g1 s0 s1 p0 p1 b0 b1
  g0=$(cpu_ticks "$GATE_CPU_PID"); s0=$(thread_ticks "$GATE_CPU_PID" shard-)
  p0=$(thread_ticks "$GATE_CPU_PID" publish-)
  b0=0; [[ -n $BROKER_CPU_PID ]] && b0=$(cpu_ticks "$BROKER_CPU_PID")
  json=$("$BUILD_DIR/coap_blast" --target "127.0.0.1:$GATE_PORT" --devices "$DEVICES" \
      --window "$window" --threads "$BLAST_THREADS" --payload "$PAYLOAD" \
      --duration "$DURATION" 2>>"$WORK/blast.err")
  g1=$(cpu_ticks "$GATE_CPU_PID"); s1=$(thread_ticks "$GATE_CPU_PID" shard-)
  p1=$(thread_ticks "$GATE_CPU_PID" publish-)
  b1=0; [[ -n $BROKER_CPU_PID ]] && b1=$(cpu_ticks "$BROKER_CPU_PID")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$round" $((g1 - g0)) $((s1 - s0)) \
      $((p1 - p0)) $((b1 - b0)) "$json" >>"$RESULTS"
  echo "round $round $run: $(echo "$json" | cut -c1-150)" >&2
}

finish_coapgate() {  # tag: stops coapgate (it drains) and keeps its final counters
  local tag=$1
  stop_pid "$GATE_PID" 15
  GATE_PID=""; GATE_CPU_PID=""
}

run_one() {  # run round
  local run=$1 round=$2 tag="$1.$2"
  case "$run" in
    file)
      start_coapgate "$tag" $'[[sinks]]\ntype = "file"\npath = "/dev/null"'
      blast_coapgate "$run" "$round" "$tag" "$WINDOW"
      finish_coapgate "$tag"
      ;;
    mqtt-broker)
      start_mosquitto "$tag"
      local b0 b1 json
      b0=$(cpu_ticks "$BROKER_CPU_PID")
      json=$("$BUILD_DIR/mqtt_publish_rate" --port "$BROKER_PORT" --inflight "$INFLIGHT" \
          --payload "$MQTT_PAYLOAD" --topic "8988280666000000000/bench" \
          --duration "$DURATION" --timeout $((DURATION + 30)) 2>>"$WORK/publish.err") || true
      b1=$(cpu_ticks "$BROKER_CPU_PID")
      stop_pid "$BROKER_PID" 5; BROKER_PID=""; BROKER_CPU_PID=""
      [[ -n $json ]] || json='{"published":0,"acked":0,"seconds":0,"rate":0,"error":"no output"}'
      printf '%s\t%s\t0\t0\t0\t%s\t%s\n' "$run" "$round" $((b1 - b0)) "$json" >>"$RESULTS"
      echo "round $round $run: $json" >&2
      ;;
    mqtt|mqtt-c2)
      local connections=1
      [[ $run == mqtt-c2 ]] && connections=2
      start_mosquitto "$tag"
      start_coapgate "$tag" "$(mqtt_sink "$BROKER_PORT" "$connections")"
      wait_mqtt_connected "$tag" "$connections"
      blast_coapgate "$run" "$round" "$tag" "$WINDOW"
      finish_coapgate "$tag"
      stop_pid "$BROKER_PID" 5; BROKER_PID=""; BROKER_CPU_PID=""
      ;;
    mqtt-down)
      start_coapgate "$tag" "$(mqtt_sink "$(free_port)" 1)"
      blast_coapgate "$run" "$round" "$tag" "$WINDOW"
      finish_coapgate "$tag"
      ;;
    kafka)
      start_kafka "$tag"
      start_coapgate "$tag" "$(printf '[[sinks]]\ntype = "kafka"\nbrokers = "%s"\ntopic = "telemetry"\n[sinks.properties]\n"linger.ms" = "5"' "$KAFKA_BOOTSTRAP")"
      blast_coapgate "$run" "$round" "$tag" "$KAFKA_WINDOW"
      finish_coapgate "$tag"
      stop_kafka
      ;;
  esac
}

# The payload of mqtt-broker: as large as what coapgate publishes for coap_blast's request,
# unless --mqtt-payload says otherwise. Measured once: coapgate -> mosquitto, one request,
# mosquitto_sub prints the payload.
measure_envelope() {  # sets MQTT_PAYLOAD
  local tag=probe sub_pid size=0
  start_mosquitto "$tag"
  timeout 10 mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t '#' -C 1 -N \
      >"$WORK/probe.payload" 2>/dev/null 7>&- &
  sub_pid=$!
  start_coapgate "$tag" "$(mqtt_sink "$BROKER_PORT" 1)"
  wait_mqtt_connected "$tag" 2   # the subscriber and coapgate
  "$BUILD_DIR/coap_blast" --target "127.0.0.1:$GATE_PORT" --devices 1 --window 1 \
      --payload "$PAYLOAD" --duration 1 --max-requests 1 >/dev/null 2>>"$WORK/blast.err" || true
  wait "$sub_pid" 2>/dev/null || true
  size=$(stat -c %s "$WORK/probe.payload" 2>/dev/null || echo 0)
  finish_coapgate "$tag"
  stop_pid "$BROKER_PID" 5; BROKER_PID=""; BROKER_CPU_PID=""
  if (( size > 0 )); then MQTT_PAYLOAD=$size; else MQTT_PAYLOAD=420; fi
}

build_tools
python3 "$REPO/bench/tools/make_devices.py" "$DEVICES" >"$WORK/devices.csv"
read -r -a servers <<<"$SERVERS"
if [[ -z $MQTT_PAYLOAD ]]; then
  measure_envelope
  echo "coapgate's MQTT payload for a ${PAYLOAD}-byte request: $MQTT_PAYLOAD bytes" >&2
fi
for round in $(seq "$ROUNDS"); do
  order=("${servers[@]}")
  if (( round % 2 == 0 )); then  # alternate the order: no run always goes first
    order=()
    for (( i = ${#servers[@]} - 1; i >= 0; i-- )); do order+=("${servers[$i]}"); done
  fi
  for server in "${order[@]}"; do run_one "$server" "$round"; done
done

echo
echo "coap_blast: $DEVICES devices, window $WINDOW (kafka $KAFKA_WINDOW), $BLAST_THREADS thread(s), payload $PAYLOAD B," \
     "$ROUNDS x ${DURATION}s; coapgate $SHARDS shard(s); mqtt_publish_rate: window $INFLIGHT," \
     "payload $MQTT_PAYLOAD B; $(nproc) CPUs; $(uname -r)"
echo
python3 - "$RESULTS" "$CLK_TCK" "$SERVERS" "$WORK" <<'EOF'
import glob, json, os, re, statistics, sys

path, clk_tck, servers, work = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]
rows = []
for line in open(path):
    run, rnd, gate, shard, pub, broker, blob = line.rstrip("\n").split("\t", 6)
    j = json.loads(blob)
    r = {"run": run, "round": int(rnd), "j": j}
    secs = lambda ticks: int(ticks) / clk_tck
    if run == "mqtt-broker":
        dur = j.get("seconds") or 0
        acked = j.get("acked", 0)
        r.update(msgs=j.get("rate", 0), answers=None, codes=f"acked:{acked}"
                 + (f" rejected:{j['rejected']}" if j.get("rejected") else "")
                 + (" TIMED OUT" if j.get("timed_out") else "")
                 + (f" error:{j['error']}" if j.get("error") else ""),
                 p50=None, p99=None, timeouts=None, gate=None, shard_us=None, pub_us=None,
                 broker=secs(broker) / dur * 100 if dur else None,
                 client=j.get("cpu_s", 0) / dur * 100 if dur else None,
                 all_us=(secs(broker) + j.get("cpu_s", 0)) * 1e6 / acked if acked else None)
    else:
        dur = j["duration_s"]
        ok = j["codes"].get("2.04", 0)
        unavailable = j["codes"].get("5.03", 0)
        counted = unavailable if run == "mqtt-down" else ok
        r.update(msgs=(unavailable if run == "mqtt-down" else ok) / dur, answers=j["rate"],
                 codes=" ".join(f"{k}:{v}" for k, v in j["codes"].items()) or "-",
                 p50=j["latency_us"]["p50"], p99=j["latency_us"]["p99"],
                 timeouts=j["timeouts"], gate=secs(gate) / dur * 100,
                 shard_us=secs(shard) * 1e6 / counted if counted else None,
                 pub_us=secs(pub) * 1e6 / counted if counted else None,
                 broker=secs(broker) / dur * 100 if run in ("mqtt", "mqtt-c2", "kafka") else None,
                 client=j["cpu_s"] / dur * 100,
                 all_us=(secs(gate) + secs(broker) + j["cpu_s"]) * 1e6 / counted
                 if counted else None)
    rows.append(r)

def f(v, fmt="{:,.0f}", unit=""):
    return "-" if v is None else fmt.format(v) + unit

print("| run | round | msgs/s | answers/s | codes | p50 µs | p99 µs | timeouts | coapgate CPU "
      "| broker CPU | client CPU | shard µs/msg | pub µs/msg | all µs/msg |")
print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in sorted(rows, key=lambda r: (servers.index(r["run"]), r["round"])):
    print(f"| {r['run']} | {r['round']} | {f(r['msgs'])} | {f(r['answers'])} | {r['codes']} | "
          f"{f(r['p50'])} | {f(r['p99'])} | {f(r['timeouts'])} | {f(r['gate'], unit=' %')} | "
          f"{f(r['broker'], unit=' %')} | {f(r['client'], unit=' %')} | "
          f"{f(r['shard_us'], '{:.2f}')} | {f(r['pub_us'], '{:.2f}')} | "
          f"{f(r['all_us'], '{:.2f}')} |")
print()
print("msgs/s: 2.04 answers per second (mqtt-down: 5.03 answers; mqtt-broker: PUBACKs). "
      "CPU in % of one core over the run; client = coap_blast or mqtt_publish_rate; "
      "all = coapgate + broker + client CPU per message.")
print()
print("| run | median msgs/s | median p50 µs | median p99 µs | median shard µs/msg "
      "| median pub µs/msg | median all µs/msg |")
print("|---|---:|---:|---:|---:|---:|---:|")
med = {}
def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
for run in servers:
    mine = [r for r in rows if r["run"] == run]
    if not mine:
        continue
    med[run] = median(r["msgs"] for r in mine)
    print(f"| {run} | {f(med[run])} | {f(median(r['p50'] for r in mine))} | "
          f"{f(median(r['p99'] for r in mine))} | "
          f"{f(median(r['shard_us'] for r in mine), '{:.2f}')} | "
          f"{f(median(r['pub_us'] for r in mine), '{:.2f}')} | "
          f"{f(median(r['all_us'] for r in mine), '{:.2f}')} |")
print()
def ratio(a, b, goal=None):
    if med.get(a) is None or not med.get(b):
        return
    value = med[a] / med[b]
    verdict = "" if goal is None else (f" (goal ≥ {goal}: " + ("met" if value >= goal else "NOT met") + ")")
    print(f"- {a} / {b} = {value:.2f}{verdict}")
ratio("mqtt", "mqtt-broker", 0.9)
ratio("mqtt-c2", "mqtt-broker", 0.9)
ratio("mqtt-down", "file", 0.95)
ratio("mqtt", "file")
# The same comparison per CPU: with the 2 cores saturated, the rate of a pipeline is about
# (CPUs / its CPU per message), so this ratio is what the rates converge to when nothing else
# runs on the machine, and it is much less noisy than the rates on a shared one.
all_us = {run: median(r["all_us"] for r in rows if r["run"] == run) for run in med}
for a in ("mqtt", "mqtt-c2"):
    if all_us.get(a) and all_us.get("mqtt-broker"):
        print(f"- CPU per message: {a} {all_us[a]:.2f} µs (coap_blast + coapgate + mosquitto), "
              f"mqtt-broker {all_us['mqtt-broker']:.2f} µs (client + mosquitto): at equal CPU "
              f"{a} / mqtt-broker = {all_us['mqtt-broker'] / all_us[a]:.2f}")
if med.get("kafka") is not None:
    kafka_us = median(r["shard_us"] for r in rows if r["run"] == "kafka")
    print(f"- kafka: {med['kafka']:,.0f} msgs/s into the mock cluster, shard CPU "
          f"{f(kafka_us, '{:.2f}')} µs/msg")

# coapgate's own words: warnings and errors, and the final counters, per run (last round).
print()
print("coapgate log (warnings/errors counted over all rounds; final counters of the last round):")
print()
for run in servers:
    if run == "mqtt-broker":
        continue
    logs = sorted(glob.glob(os.path.join(work, f"{run}.[0-9]*.coapgate.err")),
                  key=lambda p: int(p.split(".")[-3]))
    if not logs:
        continue
    levels = {}
    samples = {}
    for p in logs:
        for line in open(p, errors="replace"):
            m = re.match(r"\S+ (warning|error|critical) (.*)", line)
            if m:
                levels[m.group(1)] = levels.get(m.group(1), 0) + 1
                key = re.sub(r"\d+", "N", m.group(2))[:100]
                samples.setdefault(key, line.strip())
    final = [l.split(" info ", 1)[-1].strip() for l in open(logs[-1], errors="replace")
             if "final counters" in l]
    # Every round: what the shard accepted must be what the sink delivered (nothing failed,
    # refused or left over at the drain).
    mismatches = []
    for p in logs:
        text = open(p, errors="replace").read()
        accepted = re.search(r"final counters: .*?\baccepted=(\d+)", text)
        delivered = re.search(r"final counters \(sinks\): .*?\bdelivered=(\d+)", text)
        if accepted and (not delivered or delivered.group(1) != accepted.group(1)):
            mismatches.append(f"{os.path.basename(p)}: accepted={accepted.group(1)} "
                              f"delivered={delivered.group(1) if delivered else 0}")
        if not re.search(r"final counters:", text):
            mismatches.append(f"{os.path.basename(p)}: no final counters (did it drain?)")
    print(f"- {run}: " + (", ".join(f"{v} {k}" for k, v in levels.items()) or "no warnings")
          + ("; accepted = delivered in every round" if not mismatches and run != "mqtt-down"
             else ""))
    for m in mismatches:
        print(f"    - MISMATCH {m}")
    for s in list(samples.values())[:4]:
        print(f"    - `{s[:220]}`")
    for l in final:
        print(f"    - {l[:300]}")
EOF
