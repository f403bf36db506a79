#!/usr/bin/env bash
# Backlog drain: BACKLOG messages of 4 KiB (200,000 by default; 1,000,000
# for the full run) are queued while the daemon is stopped (the mailbox
# server being down), through the queue crate's enqueue path
# (backlog_fill: one synced batch per message, 64 writers). Then the LMTP
# backend (smtp-sink) is up and the daemon starts on that queue. The script
# prints:
#   - the start-up time with the full queue (exec to the SMTP port open),
#   - the drain rate over the whole drain, against the rate of draining a
#     small queue (SMALL = 10,000 messages, "empty queue") in the same run,
#   - the daemon's RSS over time (peak, and at the end),
#   - the delay of NEW messages sent over SMTP (smtp-source, 2 per second)
#     while the drain runs: from acceptance to delivery, as the delivery log
#     line's delay= says,
# and writes queue size and delivered/s per second as CSV for chart.py
# (benches/charts/backlog-drain.svg with CHART=1).
#
#   benches/load/backlog.sh        (env: BACKLOG=200000 SMALL=10000 NEW=60 CHART=0)
#   BACKLOG=1000000 benches/load/backlog.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

BACKLOG=${BACKLOG:-200000}
SMALL=${SMALL:-10000}
NEW=${NEW:-60}
CHART=${CHART:-0}

nice cargo build --release --bin sluice --example idle_clients --example backlog_fill 2>/dev/null
# SLUICE_BIN: a sluice binary to measure instead of this tree's build.
SLUICE=${SLUICE_BIN:-$PWD/target/release/sluice}
FILL=$PWD/target/release/examples/backlog_fill

WORK=$(mktemp -d "${SLUICE_BENCH_DIR:-/tmp}/sluice-backlog-bench.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
SINK=$(free_port)
# shellcheck disable=SC2046
smtp-sink $(sink_user) -L "127.0.0.1:$SINK" 256 &
pids+=("$!")
wait_port "$SINK"

# config DIR PORT: a daemon relaying dev.test to the sink.
config() {
    sluice_private "$1" "$2" "lmtp:[127.0.0.1]:$SINK"
    sed -i 's|^mynetworks = .*|mynetworks = 127.0.0.1/32|' "$1/main.cf"
    cat >>"$1/main.cf" <<EOF
# The backlog is over the default high-water mark (100,000), which would
# answer new mail 452 4.3.1: the bench wants to see new mail accepted.
sluice_queue_high_water = 0
smtpd_peername_lookup = no
EOF
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# drain NAME N: fills a queue of N, starts the daemon, samples once a second
# until N messages are removed; prints the figures. With NEW > 0 (the big
# run) smtp-source sends NEW messages at 2/s from the 5th second.
drain() {
    local name=$1 n=$2 dir="$WORK/$1" port t0 t1 pid
    port=$(free_port)
    config "$dir" "$port"
    "$FILL" "$dir/spool/db" "$n" 4096
    du -sh "$dir/spool" | awk -v n="$name" '{print n ": queue on disk " $1}'
    t0=$(now)
    "$SLUICE" -c "$dir" serve --log-file "$dir/maillog" &
    pid=$!
    pids+=("$pid")
    wait_port "$port" 120
    t1=$(now)
    python3 -c "print('$name: start-up with $n queued: %.2f s to the SMTP port' % ($t1 - $t0))"
    echo "t,queued,removed,rss_mib" >"$dir/samples.csv"
    local removed=0 peak=0 rss i=0 newpid=
    while [ "$removed" -lt "$n" ]; do
        sleep 1
        i=$((i + 1))
        removed=$(grep -c ': removed$' "$dir/maillog" || true)
        rss=$(rss_kib "$pid")
        [ "$rss" -gt "$peak" ] && peak=$rss
        echo "$i,$((n - removed)),$removed,$((rss / 1024))" >>"$dir/samples.csv"
        if [ "$NEW" -gt 0 ] && [ "$n" -gt "$SMALL" ] && [ "$i" = 5 ]; then
            (for _ in $(seq "$NEW"); do
                smtp-source -s 1 -m 1 -l 4096 -f new@remote.test -t user@dev.test "127.0.0.1:$port" || true
                sleep 0.5
            done) &
            newpid=$!
        fi
        [ "$i" -gt 3600 ] && { echo "$name: drain did not finish in an hour" >&2; break; }
    done
    local t2
    t2=$(now)
    [ -n "$newpid" ] && wait "$newpid" || true
    python3 -c "print('$name: drained $n in %.1f s = %.0f msg/s (from the SMTP port open)' % ($t2 - $t1, $n / ($t2 - $t1)))"
    python3 -c "print($n / ($t2 - $t1))" >"$WORK/$name.rate"
    echo "$name: daemon RSS peak $((peak / 1024)) MiB, at the end $(($(rss_kib "$pid") / 1024)) MiB"
    if [ "$NEW" -gt 0 ] && [ "$n" -gt "$SMALL" ]; then
        # Wait for the new mail too, then its delays (acceptance to delivery).
        for _ in $(seq 120); do
            [ "$(grep -c 'from=<new@remote.test>' "$dir/maillog" || true)" -ge "$NEW" ] || { sleep 1; continue; }
            break
        done
        sleep 2
        python3 - "$name" "$dir/maillog" <<'PY'
import re, sys
name, log = sys.argv[1], sys.argv[2]
mine, delays = set(), []
for line in open(log, errors="replace"):
    m = re.search(r" ([0-9A-Za-z]+): from=<new@remote\.test>", line)
    if m:
        mine.add(m.group(1))
        continue
    m = re.search(r" ([0-9A-Za-z]+): to=<.*delay=([0-9.]+),.*status=sent", line)
    if m and m.group(1) in mine:
        delays.append(float(m.group(2)))
if not delays:
    print(f"{name}: no new message delivered")
else:
    d = sorted(delays)
    p90 = d[max(int(len(d) * 0.9) - 1, 0)]
    print(f"{name}: {len(d)} new messages during the drain: delay p50 {d[len(d) // 2]:.2f} s, p90 {p90:.2f} s, max {d[-1]:.2f} s")
PY
    fi
    kill -TERM "$pid"
    wait "$pid" || true
    cp "$dir/samples.csv" "$WORK/$name.csv"
    rm -rf "$dir/spool"
}

drain small "$SMALL"
drain backlog "$BACKLOG"
python3 -c "print('drain rate backlog/small: %.2f' % ($(cat "$WORK/backlog.rate") / $(cat "$WORK/small.rate")))"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$CHART" = 1 ]; then
    python3 benches/load/chart.py --out benches/charts/backlog-drain.svg \
        --title "draining $BACKLOG queued messages into smtp-sink (LMTP)" \
        --panel 'queued|messages in the queue' \
        --panel 'rate(removed)|delivered (msg/s)' \
        --panel 'rss_mib|daemon RSS (MiB)' \
        "backlog=$WORK/backlog.csv"
    echo "chart: benches/charts/backlog-drain.svg"
fi
