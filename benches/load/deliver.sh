#!/usr/bin/env bash
# End-to-end relay, sluice beside Postfix in the same run: N messages of
# SIZE bytes (20,000 x 4 KB by default) sent by smtp-source in 20 sessions
# into the MTA, which relays them over LMTP to smtp-sink (`smtp-sink -L`).
# Prints messages/s for each (from the first message in to the last one
# out) and the ratio sluice/Postfix.
#
#   benches/load/deliver.sh [--messages N] [--size BYTES] [--sessions S]
#
# sluice runs as `sluice -c DIR serve` with a private configuration (spool
# in a temp dir, loopback high ports); Postfix as a private instance
# (`postfix -c DIR start`), both with their default delivery settings.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

N=20000 SIZE=4096 SESSIONS=20
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) N=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --sessions) SESSIONS=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

# shellcheck disable=SC2086
cargo build --release ${SLUICE_CARGO_FEATURES:-} --bin sluice 2>/dev/null
SLUICE=$PWD/target/release/sluice

WORK=$(mktemp -d /tmp/sluice-deliver-bench.XXXXXX)
# Postfix's daemons run as the postfix user and must reach the private queue.
chmod 755 "$WORK"
pids=()
cleanup() {
    postfix_ctl "$WORK/pf" stop >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# run_one NAME SMTPD_PORT MAILLOG: sends the load and waits until the MTA
# has logged "removed" for every message (both log Postfix-style lines).
run_one() {
    local name=$1 port=$2 log=$3 start end
    start=$(now)
    smtp-source -s "$SESSIONS" -m "$N" -l "$SIZE" -f load@remote.test -t user@dev.test "127.0.0.1:$port"
    while [ "$(grep -c ': removed$' "$log" 2>/dev/null || true)" -lt "$N" ]; do sleep 0.05; done
    end=$(now)
    python3 -c "print('%s: %d messages of %d bytes in %.2f s = %.0f msg/s' % ('$name', $N, $SIZE, $end - $start, $N / ($end - $start)))"
    python3 -c "print($N / ($end - $start))" >"$WORK/$name.rate"
}

# The LMTP sinks.
lmtp_sinks

# sluice.
SPORT=$(free_port)
sluice_private "$WORK/sluice" "$SPORT" "lmtp:[127.0.0.1]:$SINK1"
"$SLUICE" -c "$WORK/sluice" serve --log-file "$WORK/sluice/maillog" &
pids+=("$!")
wait_port "$SPORT"
run_one sluice "$SPORT" "$WORK/sluice/maillog"

# Postfix.
PPORT=$(free_port)
postfix_private "$WORK/pf" "$PPORT" "lmtp:[127.0.0.1]:$SINK2"
postfix_ctl "$WORK/pf" start >/dev/null
wait_port "$PPORT"
run_one postfix "$PPORT" "$WORK/pf/maillog"

python3 -c "print('ratio sluice/postfix: %.2f' % ($(cat "$WORK/sluice.rate") / $(cat "$WORK/postfix.rate")))"
