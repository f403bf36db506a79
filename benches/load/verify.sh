#!/usr/bin/env bash
# RCPT throughput with reject_unverified_recipient, sluice beside Postfix
# in one run: both are the MX for dev.test with
# `smtpd_recipient_restrictions = reject_unverified_recipient`, routed over
# LMTP to their own smtp-sink (which accepts every recipient, so every
# probe says deliverable). Postfix's smtp-source sends the load; the script
# prints recipients/s for each and the ratio.
#
# Two kinds of run:
#   uncached  smtp-source -N: every recipient is new, so every RCPT waits
#             for a probe. sluice asks the backend itself (a RCPT on a
#             pooled LMTP connection through the gate); Postfix's smtpd
#             asks verify(8), which sends a probe message through qmgr
#             and lmtp(8), and polls for the answer every
#             address_verify_poll_delay (set to 1s on both here; Postfix's
#             default 3s triples its time per new address).
#   cached    the same RCPTS recipients in every message: after the first
#             message both answer from their verification cache (sluice's
#             in the queue's RocksDB, Postfix's verify(8) btree).
# Both fsync each message before `250`; both deliver what they accept
# to their sink meanwhile (as in deliver.sh).
#
# Usage: benches/load/verify.sh
#   env: MSGS=400 RCPTS=50 SESSIONS=20 (cached)
#        UNCACHED_MSGS=40 UNCACHED_RCPTS=10 (uncached: Postfix needs about
#        a poll delay per recipient and session)
# Needs root (Postfix's master) and the Debian package postfix.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

MSGS=${MSGS:-400}
RCPTS=${RCPTS:-50}
SESSIONS=${SESSIONS:-20}
UNCACHED_MSGS=${UNCACHED_MSGS:-40}
UNCACHED_RCPTS=${UNCACHED_RCPTS:-10}

echo "building sluice (release)..." >&2
# shellcheck disable=SC2086
cargo build --release --quiet ${SLUICE_CARGO_FEATURES:-} --bin sluice
SLUICE=$PWD/target/release/sluice

WORK=$(mktemp -d /tmp/sluice-verify-bench.XXXXXX)
chmod 755 "$WORK"
pids=()
PF_STARTED=
cleanup() {
    if [ -n "$PF_STARTED" ]; then postfix_ctl "$WORK/pf" stop >/dev/null 2>&1 || true; fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# load PORT KIND: one smtp-source run; prints "seconds rcpts".
load() {
    local port=$1 kind=$2 start end
    if [ "$kind" = uncached ]; then
        start=$(now)
        smtp-source -N -s "$SESSIONS" -m "$UNCACHED_MSGS" -r "$UNCACHED_RCPTS" -l 512 \
            -f load@remote.test -t user@dev.test "127.0.0.1:$port" >/dev/null
        end=$(now)
        echo "$(echo "$end - $start" | bc -l) $((UNCACHED_MSGS * UNCACHED_RCPTS))"
    else
        start=$(now)
        smtp-source -s "$SESSIONS" -m "$MSGS" -r "$RCPTS" -l 512 \
            -f load@remote.test -t user@dev.test "127.0.0.1:$port" >/dev/null
        end=$(now)
        echo "$(echo "$end - $start" | bc -l) $((MSGS * RCPTS))"
    fi
}

# rejects LOG: RCPTs refused so far (a 450 "verification in progress"
# would make a run look faster than the probes it is meant to measure).
rejects() { grep -c 'reject: RCPT' "$1" 2>/dev/null || true; }

lmtp_sinks

SPORT=$(free_port)
sluice_private "$WORK/sluice" "$SPORT" "lmtp:[127.0.0.1]:$SINK1"
cat >>"$WORK/sluice/main.cf" <<EOF
smtpd_recipient_restrictions = reject_unverified_recipient
address_verify_poll_delay = 1s
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
EOF
"$SLUICE" -c "$WORK/sluice" serve --log-file "$WORK/sluice/maillog" &
pids+=("$!")
wait_port "$SPORT"

PPORT=$(free_port)
postfix_private "$WORK/pf" "$PPORT" "lmtp:[127.0.0.1]:$SINK2"
cat >>"$WORK/pf/conf/main.cf" <<EOF
smtpd_recipient_restrictions = reject_unverified_recipient
address_verify_poll_delay = 1s
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
in_flow_delay = 0
EOF
postfix_ctl "$WORK/pf" start >/dev/null
PF_STARTED=1
wait_port "$PPORT"

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in uncached cached; do
    read -r ts n < <(load "$SPORT" "$kind")
    rs=$(echo "$n / $ts" | bc -l)
    read -r tp n < <(load "$PPORT" "$kind")
    rp=$(echo "$n / $tp" | bc -l)
    printf '%-8s %6d rcpts  sluice %8.0f rcpt/s   postfix %8.0f rcpt/s   ratio %6.2f x\n' \
        "$kind" "$n" "$rs" "$rp" "$(echo "$rs / $rp" | bc -l)"
done
echo "refused RCPTs: sluice $(rejects "$WORK/sluice/maillog"), postfix $(rejects "$WORK/pf/maillog")"
echo "probes: sluice $(grep -c 'status=deliverable' "$WORK/sluice/maillog" || true), postfix $(grep -c 'status=deliverable' "$WORK/pf/maillog" || true)"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
