#!/usr/bin/env bash
# Accept throughput with sender authentication off and on: Postfix's
# smtp-source sends MSGS copies of one DKIM-signed message (about SIZE
# bytes, from bench@source.test, HELO client.source.test) over SESSIONS
# parallel sessions, one message per connection, to sluice's accept server
# on loopback, in alternating rounds with `sluice_auth_checks =` (off) and
# `spf, dkim, dmarc, arc` (on, the default). The message passes every
# check: `auth_world` signs it and serves the sender's DNS (SPF, the DKIM
# key, DMARC p=reject) from a loopback DNS server both runs are pointed at
# (`sluice_dns_servers`), as an MX would use a local caching resolver.
# Both runs make every message durable before `250` and log every line;
# the script checks that each queue holds MSGS messages and that the "on"
# log has MSGS `dkim=pass ... dmarc=pass` lines.
#
# Usage: benches/load/accept_auth.sh   (env: MSGS=20000 SESSIONS=20 SIZE=4096 ROUNDS=3)
# Needs smtp-source (Debian: postfix) and opendkim-genkey (opendkim-tools).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

MSGS=${MSGS:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-3}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-accept-auth.XXXXXX")
SLUICE_PID=
WORLD_PID=
QUEUED=

cleanup() {
    for pid in "$SLUICE_PID" "$WORLD_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building the accept server and the sender's world (release)..." >&2
cargo build --release --quiet --example accept_server --example auth_world ${SLUICE_CARGO_FEATURES:-}
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SLUICE_BIN=$TARGET/release/examples/accept_server
WORLD_BIN=$TARGET/release/examples/auth_world

mkdir -p "$WORK/world"
"$WORLD_BIN" "$WORK/world" "$SIZE" >"$WORK/world.out" 2>"$WORK/world.err" &
WORLD_PID=$!
for _ in $(seq 1 100); do
    grep -q '^dns ' "$WORK/world.out" 2>/dev/null && break
    sleep 0.1
done
DNS=$(sed -n 's/^dns //p' "$WORK/world.out")
[ -n "$DNS" ] || { echo "auth_world did not start: $(cat "$WORK/world.err")" >&2; exit 1; }
BYTES=$(wc -c <"$WORK/world/message")

load() {
    local port=$1 start end
    start=$(now)
    smtp-source -s "$SESSIONS" -m "$MSGS" -F "$WORK/world/message" -M client.source.test \
        -f bench@source.test -t user@relay.test "127.0.0.1:$port" >/dev/null
    end=$(now)
    echo "$end - $start" | bc -l
}

start_sluice() {
    local dir=$1 port=$2 checks=$3
    mkdir -p "$dir/etc"
    cat >"$dir/etc/main.cf" <<EOF
myhostname = mx.bench.test
relay_domains = relay.test
mynetworks = 192.0.2.0/24
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_client_connection_count_limit = 0
default_process_limit = 100
smtpd_peername_lookup = no
sluice_dns_servers = $DNS
sluice_auth_checks = $checks
queue_directory = $dir/queue
maillog_file = $dir/maillog
EOF
    echo "127.0.0.1:$port inet n - n - - smtpd" >"$dir/etc/master.cf"
    "$SLUICE_BIN" "$dir/etc" >"$WORK/sluice.out" 2>"$WORK/sluice.err" &
    SLUICE_PID=$!
    wait_port "$port" 30
}

stop_sluice() {
    kill -TERM "$SLUICE_PID"
    wait "$SLUICE_PID"
    SLUICE_PID=
    QUEUED=$(sed -n 's/.*queue holds \([0-9]*\) messages.*/\1/p' "$WORK/sluice.out")
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: >"$WORK/off.times"
: >"$WORK/on.times"
for round in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
        checks=""
        [ "$mode" = on ] && checks="spf, dkim, dmarc, arc"
        dir="$WORK/sluice-$round-$mode"
        port=$(free_port)
        start_sluice "$dir" "$port" "$checks"
        t=$(load "$port")
        stop_sluice
        [ "$QUEUED" = "$MSGS" ] || { echo "$mode: queued $QUEUED of $MSGS messages" >&2; exit 1; }
        if [ "$mode" = on ]; then
            passed=$(grep -c 'auth: spf=pass .*dkim=pass header.d=source.test.*dmarc=pass' "$dir/maillog" || true)
            [ "$passed" = "$MSGS" ] || { echo "only $passed of $MSGS messages passed every check" >&2; exit 1; }
        fi
        echo "$t" >>"$WORK/$mode.times"
        printf 'round %d  checks %-3s %6.2fs  %8.0f msg/s\n' "$round" "$mode" "$t" "$(echo "$MSGS / $t" | bc -l)" >&2
        rm -rf "$dir"
    done
done

toff=$(median <"$WORK/off.times")
ton=$(median <"$WORK/on.times")
roff=$(echo "$MSGS / $toff" | bc -l)
ron=$(echo "$MSGS / $ton" | bc -l)
echo "accept with sender authentication: $MSGS signed messages of $BYTES bytes, $SESSIONS sessions, median of $ROUNDS rounds"
printf 'checks off  %8.0f msg/s\n' "$roff"
printf 'checks on   %8.0f msg/s\n' "$ron"
printf 'on / off    %8.2f\n' "$(echo "$ron / $roff" | bc -l)"
printf 'cost per message %.0f us of elapsed time over %d sessions\n' "$(echo "($ton - $toff) * 1000000 / $MSGS" | bc -l)" "$SESSIONS"
