# shellcheck shell=bash
# Helpers for the load scripts: a private Postfix instance (own config and
# queue directories, loopback high ports, `postfix -c DIR start/stop`),
# waiting for ports and queues, and killing what we started by PID.
#
# Source it: `. benches/load/lib.sh`.

# free_port: prints a free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT [SECONDS]: waits until 127.0.0.1:PORT accepts connections.
wait_port() {
    local port=$1 limit=${2:-15} i
    for ((i = 0; i < limit * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $port did not open" >&2
    return 1
}

# now: seconds since the epoch with fractions.
now() { date +%s.%N; }

# postfix_private DIR SMTPD_PORT TRANSPORT: writes a private Postfix
# configuration under DIR (DIR/conf, DIR/queue, DIR/data, log DIR/maillog)
# listening on 127.0.0.1:SMTPD_PORT, relaying dev.test to TRANSPORT
# (e.g. lmtp:[127.0.0.1]:2424), with Postfix's defaults otherwise.
postfix_private() {
    local dir=$1 port=$2 transport=$3
    mkdir -p "$dir/conf" "$dir/queue" "$dir/data"
    chown postfix "$dir/data" 2>/dev/null || true
    cat >"$dir/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = dev.test
transport_maps = inline:{ dev.test=$transport }
smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
EOF
    cat >"$dir/conf/master.cf" <<EOF
127.0.0.1:$port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# sluice_private DIR SMTPD_PORT TRANSPORT [MAXPROC]: writes a private sluice
# configuration under DIR (DIR/main.cf, DIR/master.cf; spool DIR/spool,
# admin socket DIR/admin.sock) listening on 127.0.0.1:SMTPD_PORT with at
# most MAXPROC sessions (default "-", the master.cf default), relaying
# dev.test to TRANSPORT (e.g. lmtp:[127.0.0.1]:2424). The twin of
# postfix_private: a bench appends its own main.cf lines after it.
sluice_private() {
    local dir=$1 port=$2 transport=$3 maxproc=${4:--}
    mkdir -p "$dir"
    cat >"$dir/main.cf" <<EOF
myhostname = mx.bench.test
queue_directory = $dir/spool
mynetworks = 127.0.0.0/8
relay_domains = dev.test
transport_maps = inline:{ dev.test=$transport }
sluice_admin_socket = $dir/admin.sock
EOF
    cat >"$dir/master.cf" <<EOF
127.0.0.1:$port inet n - n - $maxproc smtpd
lmtp      unix  -       -       n       -       -       lmtp
EOF
}

# postfix_ctl DIR start|stop: runs `postfix -c DIR/conf CMD` (under a
# pseudo-terminal so its complaints are shown instead of going to syslog).
postfix_ctl() {
    script -qc "postfix -c $1/conf $2" /dev/null
}

# postfix_queued DIR: messages in the private instance's queue.
postfix_queued() {
    find "$1/queue/incoming" "$1/queue/active" "$1/queue/deferred" "$1/queue/maildrop" -type f 2>/dev/null | wc -l
}

# lmtp_sinks: starts two LMTP sinks (`smtp-sink -L`), one per MTA so
# neither waits on the other's deliveries, on free loopback ports; sets
# SINK1 and SINK2 and adds their PIDs to the caller's pids array (the
# caller's cleanup kills them).
lmtp_sinks() {
    SINK1=$(free_port) SINK2=$(free_port)
    # shellcheck disable=SC2046
    smtp-sink $(sink_user) -L "127.0.0.1:$SINK1" 256 &
    pids+=("$!")
    # shellcheck disable=SC2046
    smtp-sink $(sink_user) -L "127.0.0.1:$SINK2" 256 &
    pids+=("$!")
    wait_port "$SINK1"
    wait_port "$SINK2"
}

# sink_user: smtp-sink refuses to run as root without -u.
sink_user() {
    if [ "$(id -u)" = 0 ]; then echo "-u nobody"; fi
}

# bench_work NAME: makes the run's work directory WORK (under
# $SLUICE_BENCH_DIR or /tmp, readable by Postfix's daemons, which run as
# the postfix user), the list `pids` of what the script starts, and an EXIT
# trap that stops the private Postfix in $WORK/pf, kills `pids` and
# removes WORK (kept with KEEP_WORK=1).
bench_work() {
    WORK=$(mktemp -d "${SLUICE_BENCH_DIR:-/tmp}/sluice-$1-bench.XXXXXX")
    chmod 755 "$WORK"
    pids=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    postfix_ctl "$WORK/pf" stop >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}

# relay_options "OPTIONS" ARGS...: the relay benches' command line. Each
# of OPTIONS (of messages, size, sessions, rounds) may be given as
# --NAME VALUE and sets N, SIZE, SESSIONS or ROUNDS (the caller sets the
# defaults first); anything else stops the script.
relay_options() {
    local allowed=" $1 " name
    shift
    while [ $# -gt 0 ]; do
        name=${1#--}
        if [ "$name" = "$1" ] || [[ $allowed != *" $name "* ]]; then
            echo "unknown option $1" >&2
            exit 2
        fi
        if [ $# -lt 2 ]; then
            echo "option $1 needs a value" >&2
            exit 2
        fi
        case "$name" in
            messages) N=$2 ;;
            size) SIZE=$2 ;;
            sessions) SESSIONS=$2 ;;
            rounds) ROUNDS=$2 ;;
        esac
        shift 2
    done
}

# source_run NAME PORT MAILLOG COUNT SIZE SESSIONS: sends COUNT messages of
# SIZE bytes over SESSIONS sessions with smtp-source, waits until the MTA
# has logged "removed" for every one (both log Postfix-style lines), prints
# the rate and writes it to $WORK/NAME.rate.
source_run() {
    local name=$1 port=$2 log=$3 count=$4 size=$5 sessions=$6 start end
    start=$(now)
    smtp-source -s "$sessions" -m "$count" -l "$size" -f load@remote.test -t user@dev.test "127.0.0.1:$port"
    while [ "$(grep -c ': removed$' "$log" 2>/dev/null || true)" -lt "$count" ]; do sleep 0.05; done
    end=$(now)
    python3 -c "t = $end - $start; print('%s: %d messages of %d bytes in %.2f s = %.1f msg/s, %.1f MB/s' % ('$name', $count, $size, t, $count / t, $count * $size / 1e6 / t))"
    python3 -c "print($count / ($end - $start))" >"$WORK/$name.rate"
}
