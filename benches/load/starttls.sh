#!/usr/bin/env bash
# STARTTLS throughput and CPU per message, sluice beside Postfix (with
# OpenSSL) in the same run: cpu.sh's relay (N messages of SIZE bytes over
# SESSIONS sessions, one connection per message, LMTP to smtp-sink) with
# every client doing STARTTLS and TLS 1.3, once per certificate type
# (ECDSA P-256, RSA 2048) and once with and once without session
# resumption. Both servers get the same certificate with
# `smtpd_tls_security_level = may` and their default session resumption:
# stateless tickets (Postfix: its 3600 s smtpd_tls_session_cache_timeout,
# keys from tlsmgr; sluice: rustls' ticketer). The client is
# tls_source.rs, the same for both.
#
#   benches/load/starttls.sh [--messages N] [--size BYTES] [--sessions S] [--rounds R]
#        env: CERTS="ecdsa rsa" (or both), RESUME="yes no", TLS_SOURCE_BIN, SLUICE_BIN,
#             TLS_PREEMPT=1 (tls_preempt_cipherlist = yes for both), PIN=1 (cpu.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap bench

# TLS_SOURCE_BIN: a built client to use instead of building it here.
if [ -n "${TLS_SOURCE_BIN:-}" ]; then
    CLIENT=$TLS_SOURCE_BIN
else
    echo "building the TLS load client (release)..." >&2
    # shellcheck disable=SC2086
    nice cargo build --release --quiet ${SLUICE_CARGO_FEATURES:-} --example tls_source
    CLIENT=$PWD/target/release/examples/tls_source
fi

CERTDIR=$(mktemp -d /tmp/sluice-tls-certs.XXXXXX)
chmod 755 "$CERTDIR"
trap 'rm -rf "$CERTDIR"' EXIT

# cert KIND: a self-signed certificate for mx.bench.test with its key.
cert() {
    local kind=$1 key=(-newkey rsa:2048)
    if [ "$kind" = ecdsa ]; then key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); fi
    openssl req -x509 "${key[@]}" -nodes -days 30 -subj /CN=mx.bench.test \
        -addext subjectAltName=DNS:mx.bench.test \
        -keyout "$CERTDIR/$kind.key" -out "$CERTDIR/$kind.pem" 2>/dev/null
    chmod 644 "$CERTDIR/$kind.key" "$CERTDIR/$kind.pem"
}

# "both": an ECDSA and an RSA certificate on each server, as
# smtpd_tls_chain_files (key, then certificate, per file); each picks the
# one the client verifies (ECDSA for this client).
for kind in ${CERTS:-ecdsa rsa}; do
    if [ "$kind" = both ]; then
        for k in ecdsa rsa; do
            [ -f "$CERTDIR/$k.pem" ] || cert "$k"
            cat "$CERTDIR/$k.key" "$CERTDIR/$k.pem" >"$CERTDIR/$k.chain"
            chmod 644 "$CERTDIR/$k.chain"
        done
    else
        cert "$kind"
    fi
    for resume in ${RESUME:-yes no}; do
        flag=
        if [ "$resume" = no ]; then flag=--no-resume; fi
        echo "== STARTTLS, TLS 1.3, $kind certificate, resumption $resume"
        if [ "$kind" = both ]; then
            TLS_CHAIN_FILES="$CERTDIR/ecdsa.chain, $CERTDIR/rsa.chain" LOAD_CLIENT="$CLIENT $flag" \
                benches/load/cpu.sh "$@"
        else
            TLS_CERT=$CERTDIR/$kind.pem TLS_KEY=$CERTDIR/$kind.key LOAD_CLIENT="$CLIENT $flag" \
                benches/load/cpu.sh "$@"
        fi
    done
done
