#!/usr/bin/env bash
# CPU per message, sluice beside Postfix in the same run: N messages of
# SIZE bytes (20,000 x 4 KiB) sent in SESSIONS parallel sessions, one
# connection per message, into the MTA, which relays them over LMTP to
# smtp-sink. Prints, per MTA and round, messages/s (first message in to
# last one removed) and the MTA's CPU per message: the sum over all its
# processes from its own cgroup (cpu_lib.sh), split into user and system
# time, and for sluice its /proc/PID/stat as well.
#
#   benches/load/cpu.sh [--messages N] [--size BYTES] [--sessions S] [--rounds R]
#
# The load client is smtp-source (plain SMTP). starttls.sh runs this same
# script with a TLS certificate (TLS_CERT, TLS_KEY, or TLS_CHAIN_FILES: both servers get
# `smtpd_tls_security_level = may` with it) and its own client
# (LOAD_CLIENT: a command given PORT, N, SIZE and SESSIONS as arguments).
#
# sluice runs as `sluice -c DIR serve` (the daemon, release build), Postfix
# as a private instance (`postfix -c DIR start`), both with their default
# delivery settings and the relay lines of deliver.sh. SLUICE_BIN=PATH
# measures that binary instead of building this tree. PERF_RECORD=FILE
# records sluice with `perf record --call-graph dwarf` (cpu-clock samples) during its
# first round, for the flame graph (see benches/README.md). FLOOR=1 adds a
# row between the two: relay_floor (benches/load/relay_floor.rs), the
# relay's system calls, thread hand-offs and TCP traffic with nothing else,
# in its own cgroup against its own sink. FLOOR="- sync log,removal" adds
# one such row per word, each leaving out the parts it names (its
# FLOOR_OMIT; "-" leaves out nothing).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap bench
# shellcheck source=lib.sh
. benches/load/lib.sh
# shellcheck source=cpu_lib.sh
. benches/load/cpu_lib.sh

N=20000 SIZE=4096 SESSIONS=20 ROUNDS=1
relay_options "messages size sessions rounds" "$@"
TLS_CERT=${TLS_CERT:-}
TLS_KEY=${TLS_KEY:-}
# TLS_CHAIN_FILES: instead, smtpd_tls_chain_files for both servers (one
# file per key algorithm, each the key and then the certificate).
TLS_CHAIN_FILES=${TLS_CHAIN_FILES:-}

# SLUICE_BIN: a sluice binary to measure instead of this tree's release
# build (to compare two builds in one sitting).
if [ -n "${SLUICE_BIN:-}" ]; then
    SLUICE=$SLUICE_BIN
else
    # shellcheck disable=SC2086
    nice cargo build --release ${SLUICE_CARGO_FEATURES:-} --bin sluice 2>/dev/null
    SLUICE=$PWD/target/release/sluice
fi
FLOOR=${FLOOR:-}
if [ -n "$FLOOR" ]; then
    nice cargo build --release --example relay_floor 2>/dev/null
fi

# PIN=1: the MTA (every process it starts inherits the affinity) on CPU 1,
# the load client and the sinks on CPU 0, so that each MTA's throughput is
# capped by its own CPU per message rather than by the tools it shares two
# cores with.
ON_MTA= ON_TOOLS=
if [ "${PIN:-0}" = 1 ]; then
    ON_MTA="taskset -c 1" ON_TOOLS="taskset -c 0"
fi

WORK=$(mktemp -d /tmp/sluice-cpu-bench.XXXXXX)
chmod 755 "$WORK"
pids=()
PF_DIR=
CG_S=
CG_P=
CG_F=
cleanup() {
    if [ -n "$PF_DIR" ]; then postfix_ctl "$PF_DIR" stop >/dev/null 2>&1 || true; fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$CG_S" ]; then cg_remove "$CG_S"; fi
    if [ -n "$CG_P" ]; then cg_remove "$CG_P"; fi
    if [ -n "$CG_F" ]; then cg_remove "$CG_F"; fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

load() {
    local port=$1
    if [ -n "${LOAD_CLIENT:-}" ]; then
        # shellcheck disable=SC2086
        $ON_TOOLS $LOAD_CLIENT "$port" "$N" "$SIZE" "$SESSIONS"
    else
        # shellcheck disable=SC2086
        $ON_TOOLS smtp-source -s "$SESSIONS" -m "$N" -l "$SIZE" -f load@remote.test -t user@dev.test "127.0.0.1:$port"
    fi
}

# The LMTP sinks, outside both cgroups.
lmtp_sinks
if [ -n "$ON_TOOLS" ]; then
    for p in "${pids[@]}"; do taskset -pc 0 "$p" >/dev/null; done
fi

tls_main_cf() {
    # TLS_PREEMPT=1: each server picks the cipher suite by its own order
    # (sluice: AES-128-GCM first; Postfix: OpenSSL's, AES-256-GCM first).
    if [ "${TLS_PREEMPT:-0}" = 1 ] && [ -n "$TLS_CERT$TLS_CHAIN_FILES" ]; then
        echo "tls_preempt_cipherlist = yes"
    fi
    if [ -n "$TLS_CHAIN_FILES" ]; then
        printf 'smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s\n' "$TLS_CHAIN_FILES"
    elif [ -n "$TLS_CERT" ]; then
        printf 'smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n' \
            "$TLS_CERT" "$TLS_KEY"
    fi
}

for round in $(seq 1 "$ROUNDS"); do
    # sluice.
    CG_S=$(cg_new sluice)
    SPORT=$(free_port)
    D=$WORK/sluice-$round
    sluice_private "$D" "$SPORT" "lmtp:[127.0.0.1]:$SINK1"
    tls_main_cf >>"$D/main.cf"
    # Not through cg_run: $! must be sluice itself, for its /proc stat.
    # shellcheck disable=SC2086
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG_S" $ON_MTA "$SLUICE" -c "$D" serve --log-file "$D/maillog" &
    SPID=$!
    pids+=("$SPID")
    wait_port "$SPORT"
    PERF_PID=
    if [ -n "${PERF_RECORD:-}" ] && [ "$round" = 1 ]; then
        perf record -F ${PERF_FREQ:-499} --call-graph dwarf,16384 -o "$PERF_RECORD" -p "$SPID" 2>/dev/null &
        PERF_PID=$!
        sleep 0.5
    fi
    measure sluice "$CG_S" "$D/maillog" "$N" "$SPID" load "$SPORT"
    if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi
    kill -TERM "$SPID"
    wait "$SPID" || true
    cg_remove "$CG_S"
    CG_S=

    for omit in $FLOOR; do
        [ -z "$TLS_CERT$TLS_CHAIN_FILES" ] || break
        [ "$omit" = 1 ] && omit=-
        # The floor, on a sink of its own, so its kept connections meet a
        # sink as fresh as sluice's and Postfix's.
        CG_F=$(cg_new floor)
        FPORT=$(free_port)
        FSINK=$(free_port)
        # shellcheck disable=SC2046,SC2086
        $ON_TOOLS smtp-sink $(sink_user) -L "127.0.0.1:$FSINK" 256 &
        FSINK_PID=$!
        pids+=("$FSINK_PID")
        wait_port "$FSINK"
        # shellcheck disable=SC2086
        FLOOR_OMIT=${omit#-} sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG_F" \
            $ON_MTA target/release/examples/relay_floor "$FPORT" "$FSINK" "$WORK/floor.log" "$WORK/floor.spool" &
        FPID=$!
        pids+=("$FPID")
        wait_port "$FPORT"
        measure "floor${omit#-}" "$CG_F" "$WORK/floor.log" "$N" "$FPID" load "$FPORT"
        kill -TERM "$FPID" "$FSINK_PID"
        wait "$FPID" "$FSINK_PID" || true
        cg_remove "$CG_F"
        CG_F=
        rm -f "$WORK/floor.log" "$WORK/floor.spool"
    done

    # Postfix.
    CG_P=$(cg_new postfix)
    PPORT=$(free_port)
    PF_DIR=$WORK/pf-$round
    postfix_private "$PF_DIR" "$PPORT" "lmtp:[127.0.0.1]:$SINK2"
    if [ -n "$TLS_CERT$TLS_CHAIN_FILES" ]; then
        # Postfix's defaults otherwise: stateless session tickets (its
        # smtpd_tls_session_cache_timeout is 3600 s), keys from tlsmgr.
        tls_main_cf >>"$PF_DIR/conf/main.cf"
        echo "tlsmgr    unix  -       -       n       1000?   1       tlsmgr" >>"$PF_DIR/conf/master.cf"
    fi
    # shellcheck disable=SC2086
    cg_run "$CG_P" $ON_MTA script -qc "postfix -c $PF_DIR/conf start" /dev/null >/dev/null
    wait_port "$PPORT"
    measure postfix "$CG_P" "$PF_DIR/maillog" "$N" - load "$PPORT"
    postfix_ctl "$PF_DIR" stop >/dev/null
    PF_DIR=
    cg_remove "$CG_P"
    CG_P=
    rm -rf "$D" "$WORK/pf-$round"
done
