#!/usr/bin/env bash
# The overload scenario, sluice beside Postfix: a mailbox server with
# capacity C concurrent deliveries (latency grows past C, 421 past 2C
# connections), offered 1.5x its capacity for T seconds, then recovered.
# Prints peak concurrency at the server, goodput as a fraction of capacity,
# messages lost and drain time after recovery, for each.
#
#   benches/load/overload.sh [--capacity 10] [--base-ms 100] [--seconds 20]
#
# sluice runs in the bench binary (queue + scheduler, mail put in the queue
# at the offered rate); Postfix is a private instance fed by smtp-source at
# the same rate, delivering over LMTP to the same server (run by the bench
# binary in `backend` mode). Postfix retries deferred mail after
# minimal_backoff_time (300 s), so its drain can take minutes; the wait is
# capped at DRAIN_LIMIT seconds (default 700).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

CAPACITY=10 BASE_MS=100 SECONDS_=20 SIZE=4096
while [ $# -gt 0 ]; do
    case "$1" in
        --capacity) CAPACITY=$2; shift 2 ;;
        --base-ms) BASE_MS=$2; shift 2 ;;
        --seconds) SECONDS_=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
RATE=$(python3 -c "print(int(1.5 * $CAPACITY * 1000 / $BASE_MS))")
OPTS=(--capacity "$CAPACITY" --base-ms "$BASE_MS" --seconds "$SECONDS_" --size "$SIZE" --rate "$RATE")
DRAIN_LIMIT=${DRAIN_LIMIT:-700}

cargo bench --bench overload --no-run 2>/dev/null
BIN=$(ls -t target/release/deps/overload-* | grep -v '\.d$' | head -1)

if [ "${SKIP_SLUICE:-0}" != 1 ]; then
    echo "== sluice"
    "$BIN" sluice "${OPTS[@]}"
fi

echo "== postfix $(postconf -h mail_version)"
WORK=$(mktemp -d /tmp/sluice-overload-postfix.XXXXXX)
# Postfix's daemons run as the postfix user and must reach the private queue.
chmod 755 "$WORK"
BPORT=$(free_port) SPORT=$(free_port)
pids=()
cleanup() {
    postfix_ctl "$WORK" stop >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
"$BIN" backend --port "$BPORT" "${OPTS[@]}" >"$WORK/backend.out" 2>"$WORK/backend.err" &
BACKEND=$!
pids+=("$BACKEND")
wait_port "$BPORT"
postfix_private "$WORK/pf" "$SPORT" "lmtp:[127.0.0.1]:$BPORT"
postfix_ctl "$WORK/pf" start >/dev/null
wait_port "$SPORT"

# Offer RATE messages per second for SECONDS_: one smtp-source batch per
# second, 20 sessions each (batches overlap if Postfix accepts slowly).
start=$(now)
for ((s = 0; s < SECONDS_; s++)); do
    smtp-source -s 20 -m "$RATE" -l "$SIZE" -f load@remote.test -t user@dev.test "127.0.0.1:$SPORT" &
    pids+=("$!")
    sleep 1
done
wait "${pids[@]:1}" 2>/dev/null || true
kill -USR1 "$BACKEND"
recovered=$(now)
while [ "$(postfix_queued "$WORK/pf")" -gt 0 ]; do
    if python3 -c "import sys; sys.exit(0 if $(now) - $recovered < $DRAIN_LIMIT else 1)"; then
        sleep 0.2
    else
        echo "  (drain not finished after ${DRAIN_LIMIT} s)"
        break
    fi
done
drained=$(now)
left=$(postfix_queued "$WORK/pf")
sleep 0.5
kill -TERM "$BACKEND"
wait "$BACKEND" || true
offered=$((RATE * SECONDS_))
delivered=$(sed -n 's/^delivered_unique=//p' "$WORK/backend.out")
echo "  offered: $offered messages of $SIZE bytes at $RATE msg/s for $SECONDS_ s (smtp-source, 20 sessions/s)"
sed 's/^/  /' "$WORK/backend.out"
echo "  lost: $((offered - delivered - left > 0 ? offered - delivered - left : 0)) (still queued: $left)"
python3 -c "print('  drain after recovery: %.2f s' % ($drained - $recovered))"
echo "  deferred by Postfix during the run: $(grep -c 'status=deferred' "$WORK/pf/maillog" || true)"
