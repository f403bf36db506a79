#!/usr/bin/env bash
# Accept throughput, sluice beside Postfix: Postfix's smtp-source sends
# MSGS messages of SIZE bytes over SESSIONS parallel sessions (one message
# per connection, as smtp-source does by default) to each server in turn,
# on loopback, and the script prints messages/s for each and the ratio.
#
# Both servers read the same relay lines in their main.cf: relay_domains =
# relay.test, loopback not in mynetworks, smtpd_relay_restrictions =
# permit_mynetworks, reject_unauth_destination, no per-client limits, 100
# concurrent sessions; both log every line to a file and make each message
# durable before `250`
# (sluice: synced RocksDB batch; Postfix: fsync of the queue file). Postfix
# runs as a private instance (its own config dir, queue dir and high port,
# `postfix -c DIR start`, stopped at the end) without qmgr, so neither side
# spends time delivering: what is measured is the accept path alone
# (smtpd -> trivial-rewrite -> cleanup -> fsync'd file in incoming/). Two
# settings keep that from being slowed artificially: in_flow_delay = 0
# (with no qmgr handing out flow-control tokens, cleanup would otherwise
# pause 1 s per message), and public/qmgr is a FIFO drained by `cat`, so
# cleanup's wake-up of the queue manager succeeds as it would with an idle
# qmgr instead of logging a warning per message.
#
# Usage: benches/load/accept.sh   (env: MSGS=20000 SESSIONS=20 SIZE=4096 ROUNDS=3;
#        EXTRA_MAIN_CF: lines added to both main.cf files)
# Needs root (Postfix's master), postfix and smtp-source (Debian: postfix).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test

MSGS=${MSGS:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-3}
DOMAIN=relay.test

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-accept.XXXXXX")
chmod 755 "$WORK" # Postfix's unprivileged processes must reach their dirs
SLUICE_PID=
PF_ETC=
DRAIN_PID=
QUEUED=

cleanup() {
    if [ -n "$SLUICE_PID" ] && kill -0 "$SLUICE_PID" 2>/dev/null; then
        kill -TERM "$SLUICE_PID" 2>/dev/null || true
        wait "$SLUICE_PID" 2>/dev/null || true
    fi
    if [ -n "$PF_ETC" ]; then
        script -qc "postfix -c $PF_ETC stop" /dev/null >/dev/null 2>&1 || true
    fi
    if [ -n "$DRAIN_PID" ]; then
        kill "$DRAIN_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    python3 - "$1" <<'EOF'
import socket, sys, time
deadline = time.time() + 30
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("port did not open")
EOF
}

now() { date +%s.%N; }

# One load run against a port; prints the elapsed seconds.
load() {
    local port=$1 start end
    start=$(now)
    smtp-source -s "$SESSIONS" -m "$MSGS" -l "$SIZE" -f bench@source.test -t "user@$DOMAIN" "127.0.0.1:$port" >/dev/null
    end=$(now)
    echo "$end - $start" | bc -l
}

# The relay both servers are: the same main.cf lines, read by each.
relay_main_cf() {
    cat <<EOF
myhostname = mx.bench.test
mydomain = bench.test
relay_domains = $DOMAIN
mynetworks = 192.0.2.0/24
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 100
message_size_limit = 10240000
EOF
    # Lines both servers get on top (accept_rspamd.sh: the milter).
    if [ -n "${EXTRA_MAIN_CF:-}" ]; then printf '%s\n' "$EXTRA_MAIN_CF"; fi
}

echo "building the sluice accept server (release)..." >&2
cargo build --release --quiet --example accept_server ${SLUICE_CARGO_FEATURES:-}
SLUICE_BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/accept_server

start_sluice() {
    local dir=$1 port=$2
    mkdir -p "$dir/etc"
    {
        relay_main_cf
        echo "queue_directory = $dir/queue"
        echo "maillog_file = $dir/maillog"
    } >"$dir/etc/main.cf"
    echo "127.0.0.1:$port inet n - n - - smtpd" >"$dir/etc/master.cf"
    "$SLUICE_BIN" "$dir/etc" >"$WORK/sluice.out" 2>"$WORK/sluice.err" &
    SLUICE_PID=$!
    wait_port "$port"
}

# Stops sluice and sets QUEUED to the messages its queue holds. (Not run
# in a command substitution: `wait` needs the server to be our child.)
stop_sluice() {
    kill -TERM "$SLUICE_PID"
    wait "$SLUICE_PID"
    SLUICE_PID=
    QUEUED=$(sed -n 's/.*queue holds \([0-9]*\) messages.*/\1/p' "$WORK/sluice.out")
}

start_postfix() {
    local dir=$1 port=$2
    mkdir -p "$dir/etc" "$dir/spool" "$dir/data"
    chmod 755 "$dir"
    chown postfix "$dir/data"
    {
        relay_main_cf
        cat <<EOF
compatibility_level = 3.6
queue_directory = $dir/spool
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
smtpd_peername_lookup = no
in_flow_delay = 0
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
EOF
    } >"$dir/etc/main.cf"
    cat >"$dir/etc/master.cf" <<EOF
127.0.0.1:$port inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
rewrite   unix - - n - - trivial-rewrite
anvil     unix - - n - 1 anvil
proxymap  unix - - n - - proxymap
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
postlog   unix-dgram n - n - 1 postlogd
EOF
    PF_ETC=$dir/etc
    # postfix(1) reports on a terminal only; give it one for its messages.
    script -qc "postfix -c $PF_ETC start" /dev/null >&2
    local fifo=$dir/spool/public/qmgr
    mkfifo "$fifo"
    chown postfix:postdrop "$fifo"
    chmod 622 "$fifo"
    # Opened read-write so it never sees end-of-file between writers.
    cat 0<>"$fifo" >/dev/null &
    DRAIN_PID=$!
    wait_port "$port"
}

# Stops Postfix and sets QUEUED to the queue files in incoming/.
stop_postfix() {
    local dir=$1
    script -qc "postfix -c $PF_ETC stop" /dev/null >/dev/null
    kill "$DRAIN_PID" 2>/dev/null || true
    wait "$DRAIN_PID" 2>/dev/null || true
    DRAIN_PID=
    PF_ETC=
    QUEUED=$(find "$dir/spool/incoming" -type f | wc -l)
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: >"$WORK/sluice.times"
: >"$WORK/postfix.times"
for round in $(seq 1 "$ROUNDS"); do
    port=$(free_port)
    start_sluice "$WORK/sluice-$round" "$port"
    t=$(load "$port")
    stop_sluice
    [ "$QUEUED" = "$MSGS" ] || { echo "sluice queued $QUEUED of $MSGS messages" >&2; exit 1; }
    echo "$t" >>"$WORK/sluice.times"
    printf 'round %d  sluice  %6.2fs  %8.0f msg/s\n' "$round" "$t" "$(echo "$MSGS / $t" | bc -l)" >&2

    port=$(free_port)
    start_postfix "$WORK/postfix-$round" "$port"
    t=$(load "$port")
    stop_postfix "$WORK/postfix-$round"
    [ "$QUEUED" = "$MSGS" ] || { echo "postfix queued $QUEUED of $MSGS messages" >&2; exit 1; }
    echo "$t" >>"$WORK/postfix.times"
    printf 'round %d  postfix %6.2fs  %8.0f msg/s\n' "$round" "$t" "$(echo "$MSGS / $t" | bc -l)" >&2
    rm -rf "$WORK/sluice-$round" "$WORK/postfix-$round"
done

ts=$(median <"$WORK/sluice.times")
tp=$(median <"$WORK/postfix.times")
rs=$(echo "$MSGS / $ts" | bc -l)
rp=$(echo "$MSGS / $tp" | bc -l)
echo "accept: $MSGS messages of $SIZE bytes, $SESSIONS sessions, median of $ROUNDS rounds${EXTRA_MAIN_CF:+ (with: $EXTRA_MAIN_CF)}"
printf 'sluice   %8.0f msg/s\n' "$rs"
printf 'postfix  %8.0f msg/s\n' "$rp"
printf 'ratio    %8.2f x\n' "$(echo "$rs / $rp" | bc -l)"
