#!/usr/bin/env bash
# RCPT throughput with a directory table, sluice beside Postfix: both
# servers are the same MX for relay.test with relay_recipient_maps = an
# ldap: or pgsql: table (the same .cf file, read by each), and Postfix's
# smtp-source sends MSGS messages of RCPTS recipients each over SESSIONS
# parallel sessions; the script prints recipients/s for each and the ratio.
#
# The directory servers are private: slapd (slapadd'ed base entry, own
# port) and PostgreSQL 15 (initdb in the work dir, as the postgres user
# when run as root). Every lookup is one round trip: the LDAP table
# searches the base entry with a filter that holds the key, the PostgreSQL
# one runs a query naming the key against an indexed table.
#
# Two kinds of run:
#   uncached  smtp-source -N: every recipient is new (a sequence number is
#             prepended), so every RCPT is a lookup; sluice's answer cache
#             is off as well (sluice_table_cache_*_lifetime = 0).
#   cached    the same RCPTS recipients in every message: sluice answers
#             from its cache after the first message; Postfix has no
#             answer cache (its smtpd asks the table at every RCPT).
# Postfix opens the tables in each smtpd process (no proxy:), as sluice
# keeps pooled connections per table; both keep up to 100 sessions.
#
# As in accept.sh, Postfix runs without qmgr (a FIFO drained by `cat`, and
# in_flow_delay = 0), and both servers fsync each message before `250`,
# so messages with many recipients make the lookups the main cost.
#
# Virtual alias expansion (TABLES=alias-texthash or alias-pgsql): the
# same runs with relay.test a virtual_alias_domains domain and every
# recipient an alias of its own target in dest.test (user@relay.test ->
# user@dest.test), from a texthash table of every address smtp-source
# sends or from PostgreSQL (a query that builds the target from %u), in
# place of relay_recipient_maps. sluice looks the alias up and expands it
# at RCPT and stores the target; Postfix's smtpd looks it up at RCPT and
# its cleanup expands it before the queue file is written, so both sides
# do the lookups (the address, then the target and its @domain) before
# the `250` that ends DATA.
#
# Usage: benches/load/rcpt.sh   (env: MSGS=400 RCPTS=50 SESSIONS=20 ROUNDS=2
#                                TABLES="ldap pgsql" KINDS="uncached cached";
#                                TABLES="alias-texthash alias-pgsql" for aliases)
# Needs root (Postfix's master; PostgreSQL is run as postgres), and the
# Debian packages postfix, postfix-ldap, postfix-pgsql, slapd, postgresql.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

MSGS=${MSGS:-400}
RCPTS=${RCPTS:-50}
SESSIONS=${SESSIONS:-20}
ROUNDS=${ROUNDS:-2}
TABLES=${TABLES:-ldap pgsql}
KINDS=${KINDS:-uncached cached}
DOMAIN=relay.test
PGBIN=/usr/lib/postgresql/15/bin

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-rcpt.XXXXXX")
chmod 755 "$WORK"
SLUICE_PID=
PF_ETC=
DRAIN_PID=
SLAPD_PID=
PG_PID=
QUEUED=

cleanup() {
    if [ -n "$SLUICE_PID" ]; then kill -TERM "$SLUICE_PID" 2>/dev/null || true; wait "$SLUICE_PID" 2>/dev/null || true; fi
    if [ -n "$PF_ETC" ]; then script -qc "postfix -c $PF_ETC stop" /dev/null >/dev/null 2>&1 || true; fi
    if [ -n "$DRAIN_PID" ]; then kill "$DRAIN_PID" 2>/dev/null || true; fi
    if [ -n "$SLAPD_PID" ]; then kill -TERM "$SLAPD_PID" 2>/dev/null || true; wait "$SLAPD_PID" 2>/dev/null || true; fi
    if [ -n "$PG_PID" ]; then kill -INT "$PG_PID" 2>/dev/null || true; wait "$PG_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# The directory servers, once for all runs.
start_slapd() {
    local d=$WORK/slapd
    mkdir -p "$d/db"
    cat >"$d/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $d/slapd.pid
database mdb
suffix "dc=bench,dc=test"
rootdn "cn=admin,dc=bench,dc=test"
rootpw secret
directory $d/db
maxsize 10485760
EOF
    printf 'dn: dc=bench,dc=test\nobjectClass: dcObject\nobjectClass: organization\no: ok\ndc: bench\n' >"$d/base.ldif"
    slapadd -f "$d/slapd.conf" -l "$d/base.ldif" >/dev/null 2>&1
    SLAPD_PORT=$(free_port)
    # -d 0: foreground, no per-operation log (its cost is not the MTA's).
    slapd -f "$d/slapd.conf" -h "ldap://127.0.0.1:$SLAPD_PORT/" -d 0 >"$d/slapd.log" 2>&1 &
    SLAPD_PID=$!
    wait_port "$SLAPD_PORT" 20
    cat >"$WORK/ldap.cf" <<EOF
server_host = 127.0.0.1:$SLAPD_PORT
version = 3
search_base = dc=bench,dc=test
scope = base
query_filter = (|(description=%s)(objectClass=organization))
result_attribute = o
EOF
}

start_postgres() {
    local d=$WORK/pg
    mkdir -p "$d"
    if [ "$(id -u)" = 0 ]; then chown postgres "$d"; fi
    as_postgres "$PGBIN/initdb" -D "$d/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
    PG_PORT=$(free_port)
    as_postgres "$PGBIN/postgres" -D "$d/data" -k "$d" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
        -c fsync=off -c max_connections=300 >"$WORK/pg.log" 2>&1 &
    PG_PID=$!
    wait_port "$PG_PORT" 30
    for _ in $(seq 1 100); do as_postgres psql -h "$d" -p "$PG_PORT" -U postgres -Atc 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
    as_postgres psql -q -h "$d" -p "$PG_PORT" -U postgres -c "CREATE TABLE domains (domain text PRIMARY KEY); INSERT INTO domains VALUES ('$DOMAIN');"
    cat >"$WORK/pgsql.cf" <<EOF
hosts = inet:127.0.0.1:$PG_PORT
user = postgres
dbname = postgres
query = SELECT 'ok' FROM domains WHERE domain = '%d' AND '%s' <> ''
EOF
    # Every user of relay.test is an alias of the same user in dest.test.
    cat >"$WORK/alias-pgsql.cf" <<EOF
hosts = inet:127.0.0.1:$PG_PORT
user = postgres
dbname = postgres
query = SELECT '%u@dest.test' FROM domains WHERE domain = '%d'
EOF
}

# The texthash alias table: every address smtp-source sends (-N prepends
# 1, 2, ... to the recipient), each to its own target.
write_alias_texthash() {
    {
        echo "user@$DOMAIN user@dest.test"
        seq 1 "$((MSGS * RCPTS))" | awk -v d="$DOMAIN" '{ print $1 "user@" d " " $1 "user@dest.test" }'
    } >"$WORK/alias-texthash"
}

# One load run against a port; prints the elapsed seconds.
load() {
    local port=$1 kind=$2 start end flags=""
    [ "$kind" = uncached ] && flags="-N"
    start=$(now)
    # shellcheck disable=SC2086
    smtp-source $flags -s "$SESSIONS" -m "$MSGS" -r "$RCPTS" -l 512 -f bench@source.test -t "user@$DOMAIN" \
        "127.0.0.1:$port" >/dev/null
    end=$(now)
    echo "$end - $start" | bc -l
}

relay_main_cf() {
    case $1 in
        alias-texthash) printf 'virtual_alias_domains = %s\nvirtual_alias_maps = texthash:%s\n' "$DOMAIN" "$WORK/alias-texthash" ;;
        alias-pgsql) printf 'virtual_alias_domains = %s\nvirtual_alias_maps = pgsql:%s\n' "$DOMAIN" "$WORK/alias-pgsql.cf" ;;
        *) printf 'relay_domains = %s\nrelay_recipient_maps = %s:%s/%s.cf\n' "$DOMAIN" "$1" "$WORK" "$1" ;;
    esac
    cat <<EOF
myhostname = mx.bench.test
mydomain = bench.test
mynetworks = 192.0.2.0/24
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_recipient_limit = 1000
default_process_limit = 100
EOF
}

echo "building the sluice accept server (release)..." >&2
cargo build --release --quiet --example accept_server ${SLUICE_CARGO_FEATURES:-}
SLUICE_BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/accept_server

start_sluice() {
    local dir=$1 port=$2 table=$3 kind=$4
    mkdir -p "$dir/etc"
    {
        relay_main_cf "$table"
        echo "queue_directory = $dir/queue"
        echo "maillog_file = $dir/maillog"
        if [ "$kind" = uncached ]; then
            echo "sluice_table_cache_positive_lifetime = 0"
            echo "sluice_table_cache_negative_lifetime = 0"
        fi
        echo "sluice_table_connection_limit = $SESSIONS"
        # Postfix checks no SPF/DKIM/DMARC: neither does sluice here (its
        # DNS lookups per message, not the tables, would be measured).
        echo "sluice_auth_checks ="
    } >"$dir/etc/main.cf"
    echo "127.0.0.1:$port inet n - n - - smtpd" >"$dir/etc/master.cf"
    "$SLUICE_BIN" "$dir/etc" >"$WORK/sluice.out" 2>"$WORK/sluice.err" &
    SLUICE_PID=$!
    wait_port "$port"
}

stop_sluice() {
    kill -TERM "$SLUICE_PID"
    wait "$SLUICE_PID"
    SLUICE_PID=
    QUEUED=$(sed -n 's/.*queue holds \([0-9]*\) messages.*/\1/p' "$WORK/sluice.out")
}

start_postfix() {
    local dir=$1 port=$2 table=$3
    mkdir -p "$dir/etc" "$dir/spool" "$dir/data"
    chmod 755 "$dir"
    chown postfix "$dir/data"
    {
        relay_main_cf "$table"
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
    script -qc "postfix -c $PF_ETC start" /dev/null >&2
    local fifo=$dir/spool/public/qmgr
    mkfifo "$fifo"
    chown postfix:postdrop "$fifo"
    chmod 622 "$fifo"
    cat 0<>"$fifo" >/dev/null &
    DRAIN_PID=$!
    wait_port "$port"
}

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

# Every recipient must have been found in the table: a refused RCPT would
# make a run cheaper than the lookups it is meant to measure.
no_rejects() {
    local n
    n=$(grep -c 'reject: RCPT' "$1" || true)
    [ "$n" = 0 ] || { echo "$1: $n recipients refused" >&2; grep -m3 'reject: RCPT' "$1" >&2; exit 1; }
}

case " $TABLES " in *" ldap "*) start_slapd ;; esac
case " $TABLES " in *pgsql*) start_postgres ;; esac
case " $TABLES " in *alias-texthash*) write_alias_texthash ;; esac
RCPT_TOTAL=$((MSGS * RCPTS))
: >"$WORK/summary"
for table in $TABLES; do
    for kind in $KINDS; do
        : >"$WORK/sluice.times"
        : >"$WORK/postfix.times"
        for round in $(seq 1 "$ROUNDS"); do
            port=$(free_port)
            start_sluice "$WORK/sluice-$round" "$port" "$table" "$kind"
            t=$(load "$port" "$kind")
            stop_sluice
            [ "$QUEUED" = "$MSGS" ] || { echo "sluice queued $QUEUED of $MSGS messages" >&2; cat "$WORK/sluice.err" >&2; exit 1; }
            no_rejects "$WORK/sluice-$round/maillog"
            echo "$t" >>"$WORK/sluice.times"
            printf '%-14s %-8s round %d  sluice  %6.2fs  %8.0f rcpt/s\n' "$table" "$kind" "$round" "$t" "$(echo "$RCPT_TOTAL / $t" | bc -l)" >&2

            port=$(free_port)
            start_postfix "$WORK/postfix-$round" "$port" "$table"
            t=$(load "$port" "$kind")
            stop_postfix "$WORK/postfix-$round"
            [ "$QUEUED" = "$MSGS" ] || { echo "postfix queued $QUEUED of $MSGS messages" >&2; exit 1; }
            no_rejects "$WORK/postfix-$round/maillog"
            echo "$t" >>"$WORK/postfix.times"
            printf '%-14s %-8s round %d  postfix %6.2fs  %8.0f rcpt/s\n' "$table" "$kind" "$round" "$t" "$(echo "$RCPT_TOTAL / $t" | bc -l)" >&2
            rm -rf "$WORK/sluice-$round" "$WORK/postfix-$round"
        done
        rs=$(echo "$RCPT_TOTAL / $(median <"$WORK/sluice.times")" | bc -l)
        rp=$(echo "$RCPT_TOTAL / $(median <"$WORK/postfix.times")" | bc -l)
        printf '%-14s %-8s sluice %8.0f rcpt/s   postfix %8.0f rcpt/s   ratio %5.2f x\n' \
            "$table" "$kind" "$rs" "$rp" "$(echo "$rs / $rp" | bc -l)" >>"$WORK/summary"
    done
done
echo "rcpt: $MSGS messages x $RCPTS recipients, $SESSIONS sessions, median of $ROUNDS rounds"
cat "$WORK/summary"
