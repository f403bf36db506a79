#!/usr/bin/env bash
# Many open sessions, sluice beside Postfix in the same run: SESSIONS
# connections (10,000 for the full run) from 250 loopback source addresses
# connect and stay idle or trickle a byte every 5 s (idle_clients), while
# Postfix's smtp-source sends MSGS messages of 4 KiB in 20 sessions from
# 127.0.0.1. For each MTA it prints the normal client's messages/s without
# and with the idle sessions, the MTA's memory per open session (RSS delta /
# sessions), what happened to 60 more sessions from a single address (the
# per-client limit, smtpd_client_connection_count_limit = 50, refuses 10
# with 421 4.7.0) and how many idle sessions the server closed within HOLD
# seconds (smtpd_timeout: 60 s, 10 s under stress, on both).
#
#   benches/load/idle.sh    (env: SESSIONS=2000 MSGS=5000 HOLD=75)
#   SESSIONS=10000 benches/load/idle.sh     the full run
#
# Both relay dev.test over LMTP to smtp-sink; mynetworks is 127.0.0.1/32 on
# both, so the normal client is exempt from the per-client limits and the
# idle ones are not. sluice's listener allows SESSIONS + 200 sessions
# (master.cf maxproc); Postfix has its default 100 smtpd processes, as the
# issue asks: a Postfix MX holds one process per session.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

SESSIONS=${SESSIONS:-2000}
MSGS=${MSGS:-5000}
HOLD=${HOLD:-75}
# The idle client needs a descriptor per session.
ulimit -n "$(ulimit -Hn)"

nice cargo build --release --bin sluice --example idle_clients --example backlog_fill 2>/dev/null
SLUICE=$PWD/target/release/sluice
IDLE=$PWD/target/release/examples/idle_clients

bench_work idle

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Postfix's memory: the master and all its children.
pf_rss_kib() {
    local master=$1
    # shellcheck disable=SC2009
    ps -o rss= --ppid "$master" | awk -v m="$(rss_kib "$master")" '{s += $1} END {print s + m}'
}

# normal NAME PORT LIMIT: smtp-source sends MSGS messages (at most LIMIT s);
# prints messages/s of the messages it finished.
normal() {
    local port=$2 limit=$3 start end out
    start=$(now)
    out=$(timeout "$limit" smtp-source -c -s 20 -m "$MSGS" -l 4096 -f load@remote.test -t user@dev.test "127.0.0.1:$port" 2>&1 | tail -1 || true)
    end=$(now)
    # -c prints a running count; its last number is how many were sent.
    local sent
    sent=$(echo "$out" | tr -c '0-9\n' ' ' | awk '{print $NF}')
    python3 -c "print('%.0f' % (${sent:-0} / ($end - $start)))"
}

# run NAME PORT RSS_CMD: the measurement against one MTA.
run() {
    local name=$1 port=$2 rss=$3 base loaded before after ready
    base=$(normal "$name" "$port" 120)
    before=$($rss)
    "$IDLE" "127.0.0.1:$port" --sessions "$SESSIONS" --hold "$HOLD" --burst 127.0.9.9:60 >"$WORK/$name.idle" &
    local ipid=$!
    pids+=("$ipid")
    while ! grep -q '^ready' "$WORK/$name.idle"; do sleep 0.5; done
    after=$($rss)
    ready=$(grep '^ready' "$WORK/$name.idle")
    loaded=$(normal "$name" "$port" 120)
    wait "$ipid" || true
    echo "$name: normal client $base msg/s alone, $loaded msg/s with the open sessions ($(python3 -c "print('%.0f' % (100.0 * $loaded / max($base, 1)))") %)"
    echo "$name: memory $before KiB before, $after KiB with them: $(python3 -c "print('%.1f' % (($after - $before) / $SESSIONS))") KiB per session"
    echo "$name: $ready"
    echo "$name: $(grep '^after' "$WORK/$name.idle")"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
lmtp_sinks

SPORT=$(free_port)
sluice_private "$WORK/sluice" "$SPORT" "lmtp:[127.0.0.1]:$SINK1" $((SESSIONS + 200))
sed -i 's|^mynetworks = .*|mynetworks = 127.0.0.1/32|' "$WORK/sluice/main.cf"
# shellcheck disable=SC2016
echo 'smtpd_timeout = ${stress?{10}:{60}}s' >>"$WORK/sluice/main.cf"
echo 'smtpd_peername_lookup = no' >>"$WORK/sluice/main.cf"
"$SLUICE" -c "$WORK/sluice" serve --log-file "$WORK/sluice/maillog" &
SPID=$!
pids+=("$SPID")
wait_port "$SPORT"
run sluice "$SPORT" "rss_kib $SPID"
kill -TERM "$SPID"
wait "$SPID" || true
grep -m1 "file descriptor" "$WORK/sluice/maillog" || true

PPORT=$(free_port)
postfix_private "$WORK/pf" "$PPORT" "lmtp:[127.0.0.1]:$SINK2"
sed -i 's|^mynetworks = .*|mynetworks = 127.0.0.1/32|' "$WORK/pf/conf/main.cf"
# shellcheck disable=SC2016
echo 'smtpd_timeout = ${stress?{10}:{60}}s' >>"$WORK/pf/conf/main.cf"
echo 'smtpd_peername_lookup = no' >>"$WORK/pf/conf/main.cf"
postfix_ctl "$WORK/pf" start >/dev/null
wait_port "$PPORT"
PMASTER=$(awk '{print $1}' "$WORK/pf/queue/pid/master.pid")
run postfix "$PPORT" "pf_rss_kib $PMASTER"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
