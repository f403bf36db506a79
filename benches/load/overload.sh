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
#
#   benches/load/overload.sh shapes [retrograde plateau step outage]
#
# The four shapes of trouble (benches/load/shapes.rs) against a real Dovecot
# behind a shaping proxy: sluice adaptive and at every fixed limit 1..8,
# then Postfix (defaults, fed by smtp-source, the backlog held until
# released at once). Prints the table for benches/README.md and writes the
# charts to benches/charts/overload-SHAPE.svg (benches/load/chart.py).
# Env: OUT (target/overload-shapes), SKIP_POSTFIX=1, SKIP_SLUICE=1 (Postfix
# again beside the sluice runs already in OUT), DRAIN_LIMIT (600 s,
# the longest Postfix's outage run waits for its backlog).
#
#   benches/load/overload.sh fleet [single-fixed-1 single nofleet-3 fleet-3 fleet-6]
#
# Several sluice hosts in front of one server, with and without fleet mode
# (benches/load/fleet.rs), then three Postfix instances, then fleet mode's
# cost on one host; the table, and the chart benches/charts/fleet.svg.
# Env: OUT (target/overload-fleet), SKIP_SLUICE=1, SKIP_POSTFIX=1,
# SKIP_COST=1, DRAIN_LIMIT.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

# overload_bin: builds the overload bench (release) and prints its binary,
# the newest of target/release/deps/overload-*. A command substitution
# does not inherit `set -e`: a failed build returns at once, so the caller
# stops instead of running an older binary.
overload_bin() {
    cargo bench --bench overload --no-run 2>/dev/null || return
    ls -t target/release/deps/overload-* | grep -v '\.d$' | head -1
}

run_shapes() {
    local shapes=("$@")
    [ ${#shapes[@]} -gt 0 ] || shapes=(retrograde plateau step outage)
    local out=${OUT:-target/overload-shapes}
    local bin
    bin=$(overload_bin)
    if [ "${SKIP_SLUICE:-0}" = 1 ]; then
        # Postfix again beside the sluice runs already in $out.
        grep -v '"run":"postfix"' "$out/results.jsonl" >"$out/results.sluice" || true
        mv "$out/results.sluice" "$out/results.jsonl"
    else
        rm -rf "$out"
        mkdir -p "$out"
        "$bin" shapes "${shapes[@]}" --out "$out"
    fi
    mkdir -p benches/charts
    if [ "${SKIP_POSTFIX:-0}" != 1 ]; then
        local shape
        for shape in "${shapes[@]}"; do
            postfix_shape "$bin" "$shape" "$out"
        done
    fi
    python3 benches/load/shapes_report.py "$out" benches/charts
}

# postfix_shape BIN SHAPE OUT: one Postfix run on SHAPE through the proxy.
postfix_shape() {
    local bin=$1 shape=$2 out=$3 info messages size work pport sport proxy i
    info=$("$bin" info "$shape")
    messages=$(sed -n 's/.*messages=\([0-9]*\).*/\1/p' <<<"$info")
    size=$(sed -n 's/.*size=\([0-9]*\).*/\1/p' <<<"$info")
    echo "== $shape (postfix $(postconf -d -h mail_version))"
    work=$(mktemp -d /tmp/sluice-shapes-postfix.XXXXXX)
    chmod 755 "$work"
    pport=$(free_port)
    sport=$(free_port)
    "$bin" proxy "$shape" --port "$pport" --out "$out" --limit "${DRAIN_LIMIT:-600}" >"$work/proxy.out" 2>"$work/proxy.err" &
    proxy=$!
    # Ready when it says so: a connection to test the port would be the
    # run's first connection, its time zero.
    for ((i = 0; i < 600; i++)); do
        grep -q '^proxy for' "$work/proxy.err" 2>/dev/null && break
        sleep 0.1
    done
    postfix_private "$work/pf" "$sport" "lmtp:[127.0.0.1]:$pport"
    # The backlog is held as it arrives and released at once, as sluice's
    # is queued before its delivery starts.
    echo "header_checks = static:HOLD" >>"$work/pf/conf/main.cf"
    postfix_ctl "$work/pf" start >/dev/null
    wait_port "$sport"
    smtp-source -s 20 -m "$messages" -l "$size" -f load@remote.test -t postfix@dev.test "127.0.0.1:$sport"
    local i
    for ((i = 0; i < 600; i++)); do
        [ "$(find "$work/pf/queue/hold" -type f | wc -l)" -ge "$messages" ] && break
        sleep 0.1
    done
    postsuper -c "$work/pf/conf" -H ALL 2>/dev/null
    postqueue -c "$work/pf/conf" -f
    wait "$proxy" || true
    sed 's/^/  /' "$work/proxy.out"
    echo "  deferred by Postfix: $(grep -c 'status=deferred' "$work/pf/maillog" || true)"
    postfix_ctl "$work/pf" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}

# postfix_fleet BIN OUT N: N Postfix instances through one proxy playing
# the fleet shape, the shape's messages spread over them, each backlog
# held as it arrives and all released at once.
postfix_fleet() {
    local bin=$1 out=$2 n=$3 info messages size work pport proxy i k
    info=$("$bin" info fleet)
    messages=$(sed -n 's/.*messages=\([0-9]*\).*/\1/p' <<<"$info")
    size=$(sed -n 's/.*size=\([0-9]*\).*/\1/p' <<<"$info")
    echo "== fleet postfix-$n ($n Postfix $(postconf -d -h mail_version) instances)"
    work=$(mktemp -d /tmp/sluice-fleet-postfix.XXXXXX)
    chmod 755 "$work"
    pport=$(free_port)
    "$bin" proxy fleet --port "$pport" --out "$out" --run "postfix-$n" \
        --limit "${DRAIN_LIMIT:-600}" >"$work/proxy.out" 2>"$work/proxy.err" &
    proxy=$!
    for ((i = 0; i < 600; i++)); do
        grep -q '^proxy for' "$work/proxy.err" 2>/dev/null && break
        sleep 0.1
    done
    local sports=()
    for ((k = 1; k <= n; k++)); do
        sports+=("$(free_port)")
        postfix_private "$work/pf$k" "${sports[-1]}" "lmtp:[127.0.0.1]:$pport"
        echo "header_checks = static:HOLD" >>"$work/pf$k/conf/main.cf"
        postfix_ctl "$work/pf$k" start >/dev/null
    done
    for ((k = 1; k <= n; k++)); do
        wait_port "${sports[k - 1]}"
        smtp-source -s 20 -m $((messages / n)) -l "$size" -f load@remote.test -t postfix@dev.test "127.0.0.1:${sports[k - 1]}"
    done
    for ((i = 0; i < 600; i++)); do
        [ "$(find "$work"/pf*/queue/hold -type f | wc -l)" -ge "$messages" ] && break
        sleep 0.1
    done
    for ((k = 1; k <= n; k++)); do postsuper -c "$work/pf$k/conf" -H ALL 2>/dev/null; done
    for ((k = 1; k <= n; k++)); do postqueue -c "$work/pf$k/conf" -f; done
    wait "$proxy" || true
    sed 's/^/  /' "$work/proxy.out"
    echo "  deferred by Postfix: $(cat "$work"/pf*/maillog | grep -c 'status=deferred' || true)"
    for ((k = 1; k <= n; k++)); do postfix_ctl "$work/pf$k" stop >/dev/null 2>&1 || true; done
    rm -rf "$work"
}

# The fleet runs (benches/load/fleet.rs), three Postfix instances beside
# them, fleet mode's cost on one host, then the table and the chart.
run_fleet() {
    local out=${OUT:-target/overload-fleet}
    local bin
    bin=$(overload_bin)
    if [ "${SKIP_SLUICE:-0}" = 1 ]; then
        grep -v '"run":"postfix' "$out/results.jsonl" >"$out/results.sluice" || true
        mv "$out/results.sluice" "$out/results.jsonl"
    else
        rm -rf "$out"
        mkdir -p "$out"
        "$bin" fleet "$@" --out "$out"
    fi
    [ "${SKIP_POSTFIX:-0}" = 1 ] || postfix_fleet "$bin" "$out" 3
    [ "${SKIP_COST:-0}" = 1 ] || "$bin" fleet-cost
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 benches/load/shapes_report.py "$out" benches/charts
}

if [ "${1:-}" = fleet ]; then
    shift
    run_fleet "$@"
    exit 0
fi

if [ "${1:-}" = shapes ]; then
    shift
    run_shapes "$@"
    exit 0
fi

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

BIN=$(overload_bin)

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
