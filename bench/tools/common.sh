# Shell helpers shared by the bench/tools/compare_*.sh scripts (sourced, not run).

# A port free for both UDP and TCP on 127.0.0.1 (coap-server and mosquitto listen on TCP too).
free_port() {
  python3 - <<'PY'
import socket
for _ in range(50):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        t.close()
        u.close()
    print(port)
    break
PY
}

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# utime + stime of a process's threads whose name starts with $2 (coapgate names its threads
# shard-N and publish-N), in clock ticks.
thread_ticks() {
  local pid=$1 prefix=$2 total=0 task comm t
  for task in /proc/"$pid"/task/*; do
    comm=$(cat "$task/comm" 2>/dev/null) || continue
    [[ $comm == "$prefix"* ]] || continue
    t=$(awk '{print $14 + $15}' "$task/stat" 2>/dev/null) || continue
    total=$((total + t))
  done
  echo "$total"
}
