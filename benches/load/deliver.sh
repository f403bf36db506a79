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
relay_options "messages size sessions" "$@"

# shellcheck disable=SC2086
cargo build --release ${SLUICE_CARGO_FEATURES:-} --bin sluice 2>/dev/null
SLUICE=$PWD/target/release/sluice

bench_work deliver

# The LMTP sinks.
lmtp_sinks

# sluice.
SPORT=$(free_port)
sluice_private "$WORK/sluice" "$SPORT" "lmtp:[127.0.0.1]:$SINK1"
"$SLUICE" -c "$WORK/sluice" serve --log-file "$WORK/sluice/maillog" &
pids+=("$!")
wait_port "$SPORT"
source_run sluice "$SPORT" "$WORK/sluice/maillog" "$N" "$SIZE" "$SESSIONS"

# Postfix.
PPORT=$(free_port)
postfix_private "$WORK/pf" "$PPORT" "lmtp:[127.0.0.1]:$SINK2"
postfix_ctl "$WORK/pf" start >/dev/null
wait_port "$PPORT"
source_run postfix "$PPORT" "$WORK/pf/maillog" "$N" "$SIZE" "$SESSIONS"

python3 -c "print('ratio sluice/postfix: %.2f' % ($(cat "$WORK/sluice.rate") / $(cat "$WORK/postfix.rate")))"
