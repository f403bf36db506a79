#!/usr/bin/env bash
# User-space instructions per message of sluice, counted by valgrind's
# callgrind: repeatable where CPU time is not (this machine's CPU time per
# message moves by 10-20% with its load, and its VM exposes no hardware
# counters to `perf stat`). The relay of cpu.sh (smtp-source, 20 sessions,
# one connection per message, 4 KiB, LMTP to smtp-sink), run twice under
# callgrind, with SMALL and LARGE messages; the difference over
# LARGE - SMALL messages is the cost of one message without the daemon's
# start and stop. The kernel's share (TCP, fsync) is not in these counts:
# cpu.sh measures it.
#
#   benches/load/callgrind.sh [SMALL LARGE]        (default 200 1000)
#   env: SLUICE_BIN (default: this tree's release build), KEEP=DIR keeps
#        the callgrind.out files there (for callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap bench
# shellcheck source=lib.sh
. benches/load/lib.sh
# shellcheck source=cpu_lib.sh
. benches/load/cpu_lib.sh
command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind (Debian: valgrind)" >&2; exit 1; }

SMALL=${1:-200} LARGE=${2:-1000}
if [ -n "${SLUICE_BIN:-}" ]; then
    SLUICE=$SLUICE_BIN
else
    # shellcheck disable=SC2086
    nice cargo build --release ${SLUICE_CARGO_FEATURES:-} --bin sluice 2>/dev/null
    SLUICE=$PWD/target/release/sluice
fi

WORK=$(mktemp -d /tmp/sluice-callgrind.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

SINK=$(free_port)
# shellcheck disable=SC2046
smtp-sink $(sink_user) -L "127.0.0.1:$SINK" 256 &
pids+=("$!")
wait_port "$SINK"

# count N: runs sluice under callgrind for N messages; prints its total
# instruction count (Ir).
count() {
    local n=$1 d=$WORK/run-$1 port pid
    port=$(free_port)
    sluice_private "$d" "$port" "lmtp:[127.0.0.1]:$SINK"
    valgrind --tool=callgrind --callgrind-out-file="$d/callgrind.out" \
        "$SLUICE" -c "$d" serve --log-file "$d/maillog" 2>"$d/valgrind.err" &
    pid=$!
    # The cleanup stops it too when the run fails half-way.
    pids+=("$pid")
    wait_port "$port" 120
    smtp-source -s 20 -m "$n" -l 4096 -f load@remote.test -t user@dev.test "127.0.0.1:$port"
    wait_removed "$d/maillog" "$n"
    kill -TERM "$pid"
    wait "$pid" || true
    if [ -n "${KEEP:-}" ]; then cp "$d/callgrind.out" "$KEEP/callgrind.out.$n"; fi
    sed -n 's/^summary: //p; s/^totals: //p' "$d/callgrind.out" | head -1
}

small=$(count "$SMALL")
large=$(count "$LARGE")
python3 -c "
s, l = $small, $large
print('sluice user-space instructions: %d messages %d, %d messages %d' % ($SMALL, s, $LARGE, l))
print('per message: %.0f instructions' % ((l - s) / ($LARGE - $SMALL)))
"
