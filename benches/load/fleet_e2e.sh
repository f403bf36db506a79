#!/usr/bin/env bash
# What fleet mode costs one host end to end: N messages of SIZE bytes
# (10,000 x 4 KB by default) sent by smtp-source in 20 sessions into one
# sluice, which relays them over LMTP to smtp-sink, without and with fleet
# mode (a private redis-server on loopback), ROUNDS rounds alternating, each
# on a fresh spool; prints messages/s per round and the medians, and the
# Redis round trips and commands per message (INFO commandstats before and
# after the fleet rounds), and sluice's own count of its calls by script.
# The adaptive limit is the default; FIXED=K runs
# both sides at a fixed limit of K. SLUICE_BIN runs another build of
# sluice (e.g. to compare two builds in one sitting).
#
#   benches/load/fleet_e2e.sh [--messages N] [--size BYTES] [--sessions S] [--rounds R]
#
# `overload fleet-cost` measures the delivery half alone (a queued backlog
# drained), the harsher figure; this is the end-to-end one.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

N=10000 SIZE=4096 SESSIONS=20 ROUNDS=3
relay_options "messages size sessions rounds" "$@"

# shellcheck disable=SC2086
cargo build --release ${SLUICE_CARGO_FEATURES:-} --bin sluice 2>/dev/null
SLUICE=${SLUICE_BIN:-$PWD/target/release/sluice}

bench_work fleet-e2e
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
lmtp_sinks
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >/dev/null &
pids+=("$!")
wait_port "$RPORT"
rcli() { redis-cli -p "$RPORT" "$@"; }

# calls: Redis round trips (EVALSHA/EVAL and the clients' own commands)
# and all commands (those run inside the scripts included) so far, from
# INFO commandstats (the INFO calls left out), as `overload fleet-cost`
# counts them.
calls() {
    rcli INFO commandstats | python3 -c '
import sys
trips = cmds = 0
for line in sys.stdin:
    if not line.startswith("cmdstat_"):
        continue
    name, rest = line.strip()[8:].split(":", 1)
    n = int(rest.split("calls=")[1].split(",")[0])
    if name == "info":
        continue
    cmds += n
    if name in ("evalsha", "eval", "script|load", "hello", "client|setinfo", "ping"):
        trips += n
print(trips, cmds)'
}

# run NAME ROUND FLEET: one round on a fresh spool.
run() {
    local name=$1 round=$2 fleet=$3 dir port pid mport
    dir="$WORK/$name-$round"
    port=$(free_port)
    sluice_private "$dir" "$port" "lmtp:[127.0.0.1]:$SINK1"
    if [ -n "${FIXED:-}" ]; then
        printf 'lmtp_destination_concurrency_limit = %s\nsluice_adaptive_concurrency = no\n' "$FIXED" >>"$dir/main.cf"
    fi
    if [ "$fleet" = 1 ]; then
        mport=$(free_port)
        printf 'sluice_fleet_redis = redis://127.0.0.1:%s\nsluice_fleet_host = mx1\nsluice_fleet_name = round%s\nsluice_metrics_listen = 127.0.0.1:%s\n' \
            "$RPORT" "$round" "$mport" >>"$dir/main.cf"
    fi
    "$SLUICE" -c "$dir" serve --log-file "$dir/maillog" &
    pid=$!
    pids+=("$pid")
    wait_port "$port"
    source_run "$name-$round" "$port" "$dir/maillog" "$N" "$SIZE" "$SESSIONS" | sed 's/^/  /'
    if [ "$fleet" = 1 ]; then
        # The Redis calls by script, per message (sluice's own counters).
        curl -s "127.0.0.1:$mport/metrics" | N=$N python3 -c '
import os, re, sys
n = int(os.environ["N"])
calls = {}
for line in sys.stdin:
    m = re.match(r"sluice_fleet_redis_calls_total\{script=\"(\w+)\",result=\"\w+\"\} (\d+)", line)
    if m:
        calls[m[1]] = calls.get(m[1], 0) + int(m[2])
print("    redis calls per message: " + ", ".join(f"{k} {v / n:.3f}" for k, v in sorted(calls.items())))'
    fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

read -r trips0 cmds0 < <(calls)
for round in $(seq 1 "$ROUNDS"); do
    run without "$round" 0
    run with "$round" 1
done
read -r trips1 cmds1 < <(calls)

python3 - "$WORK" "$ROUNDS" "$N" "$trips0" "$cmds0" "$trips1" "$cmds1" <<'PY'
import statistics, sys
work, rounds, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0, c0, t1, c1 = map(int, sys.argv[4:8])
rate = lambda name: [float(open(f"{work}/{name}-{r}.rate").read()) for r in range(1, rounds + 1)]
without, with_ = statistics.median(rate("without")), statistics.median(rate("with"))
print(f"end to end, one host, median of {rounds}:")
print(f"  without fleet mode: {without:.0f} msg/s")
print(f"  with fleet mode:    {with_:.0f} msg/s ({(with_ / without - 1) * 100:+.1f} %)")
msgs = n * rounds
print(f"  redis round trips per message: {(t1 - t0) / msgs:.2f}")
print(f"  redis commands per message: {(c1 - c0) / msgs:.2f}")
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
