#!/usr/bin/env bash
# Large messages, sluice beside Postfix in the same run: smtp-source sends
# MSGS messages of SIZE bytes (25 MB by default) over SESSIONS parallel
# sessions to each MTA, which relays them over LMTP to smtp-sink. Prints
# messages/s and MB/s end to end (first message in to the last one
# delivered), and sluice's peak RSS (VmHWM) with SESSIONS such messages
# in flight at once against its RSS before: a message is streamed (into
# the queue in 256 KiB chunks, out of it to the next hop), never held
# whole in memory, so the peak should not grow with SIZE x SESSIONS.
#
#   benches/load/large.sh     (env: MSGS=16 SESSIONS=4 SIZE=25000000)
#
# message_size_limit is 30,000,000 on both (Postfix's default is 10 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

MSGS=${MSGS:-16}
SESSIONS=${SESSIONS:-4}
SIZE=${SIZE:-25000000}
LIMIT=30000000

# The same targets as idle.sh and backlog.sh build, so the binary is not
# rebuilt with other features between the benches.
nice cargo build --release --bin sluice --example idle_clients --example backlog_fill 2>/dev/null
SLUICE=$PWD/target/release/sluice

bench_work large

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
lmtp_sinks

SPORT=$(free_port)
sluice_private "$WORK/sluice" "$SPORT" "lmtp:[127.0.0.1]:$SINK1"
echo "message_size_limit = $LIMIT" >>"$WORK/sluice/main.cf"
echo 'smtpd_peername_lookup = no' >>"$WORK/sluice/main.cf"
"$SLUICE" -c "$WORK/sluice" serve --log-file "$WORK/sluice/maillog" &
SPID=$!
pids+=("$SPID")
wait_port "$SPORT"
before=$(awk '/^VmRSS/ {print $2}' "/proc/$SPID/status")
# RocksDB's own memtable figures (`sluice status`) beside the RSS, sampled
# five times a second: what of the peak is the queue's memtables, and what
# is the sessions' buffers.
(
    while kill -0 "$SPID" 2>/dev/null; do
        "$SLUICE" -c "$WORK/sluice" status 2>/dev/null |
            awk -F': ' '/^queue_memtable_bytes:/ {m=$2} /^queue_body_memtable_bytes:/ {b=$2} END {print m+0, b+0}'
        sleep 0.2
    done
) >"$WORK/memtables" &
pids+=("$!")
source_run sluice "$SPORT" "$WORK/sluice/maillog" "$MSGS" "$SIZE" "$SESSIONS"
peak=$(awk '/^VmHWM/ {print $2}' "/proc/$SPID/status")
echo "sluice: RSS $((before / 1024)) MiB before, peak (VmHWM) $((peak / 1024)) MiB with $SESSIONS messages of $SIZE bytes at once"
awk '$1 > m {m = $1} $2 > b {b = $2} END {printf "sluice: RocksDB memtables peak %d MiB (bodies %d MiB), %d samples\n", m / 1048576, b / 1048576, NR}' "$WORK/memtables"

PPORT=$(free_port)
postfix_private "$WORK/pf" "$PPORT" "lmtp:[127.0.0.1]:$SINK2"
echo "message_size_limit = $LIMIT" >>"$WORK/pf/conf/main.cf"
echo 'smtpd_peername_lookup = no' >>"$WORK/pf/conf/main.cf"
postfix_ctl "$WORK/pf" start >/dev/null
wait_port "$PPORT"
source_run postfix "$PPORT" "$WORK/pf/maillog" "$MSGS" "$SIZE" "$SESSIONS"

python3 -c "print('ratio sluice/postfix: %.2f' % ($(cat "$WORK/sluice.rate") / $(cat "$WORK/postfix.rate")))"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
