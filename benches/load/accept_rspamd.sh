#!/usr/bin/env bash
# Accept throughput with rspamd as the milter, sluice beside Postfix:
# starts one private rspamd (milter proxy on a loopback port scanning by
# itself, RSPAMD_WORKERS processes, no Redis, DNS pointed at a closed
# loopback port so nothing leaves the host, hyperscan off and a short TLD
# list so it starts in seconds) and runs accept.sh with
# `smtpd_milters = inet:127.0.0.1:PORT` in both servers' main.cf. Every
# message goes through the same rspamd on both sides, so the figure is
# the accept path plus one milter conversation per session; accept.sh
# checks that each queue holds every message (rspamd refused none, and
# milter_default_action = tempfail would have shown a failure).
#
# Usage: benches/load/accept_rspamd.sh   (env as accept.sh: MSGS SESSIONS
#        SIZE ROUNDS; RSPAMD_WORKERS=2)
# Needs root (Postfix's master; rspamd runs with -i), postfix, rspamd.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../../scripts/bootstrap
. scripts/bootstrap test
# shellcheck source=lib.sh
. benches/load/lib.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-rspamd.XXXXXX")
RSPAMD_PID=
cleanup() {
    if [ -n "$RSPAMD_PID" ] && kill -0 "$RSPAMD_PID" 2>/dev/null; then
        # Its process group: the main process and every worker it forked.
        kill -TERM -- "-$RSPAMD_PID" 2>/dev/null || true
        wait "$RSPAMD_PID" 2>/dev/null || true
        kill -KILL -- "-$RSPAMD_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(free_port)
mkdir -p "$WORK/local/override.d" "$WORK/db" "$WORK/run" "$WORK/log"
cat >"$WORK/local/override.d/worker-proxy.inc" <<CONF
bind_socket = "127.0.0.1:$PORT";
milter = yes;
timeout = 120s;
count = ${RSPAMD_WORKERS:-2};
upstream "local" {
  default = yes;
  self_scan = yes;
}
CONF
echo "bind_socket = \"127.0.0.1:$(free_port)\";" >"$WORK/local/override.d/worker-normal.inc"
echo "bind_socket = \"127.0.0.1:$(free_port)\";" >"$WORK/local/override.d/worker-controller.inc"
printf 'com\nnet\norg\ntest\nexample\ninvalid\n' >"$WORK/tld.dat"
cat >"$WORK/local/override.d/options.inc" <<CONF
dns {
  nameserver = ["127.0.0.1:1"];
  timeout = 0.5s;
  retransmits = 1;
}
disable_hyperscan = true;
url_tld = "$WORK/tld.dat";
CONF
cat >"$WORK/local/override.d/logging.inc" <<CONF
type = "file";
filename = "$WORK/log/rspamd.log";
level = "warning";
CONF
# setsid: a process group of its own, led by rspamd's main process.
setsid rspamd -f -i -c /etc/rspamd/rspamd.conf \
    --var=LOCAL_CONFDIR="$WORK/local" --var=DBDIR="$WORK/db" \
    --var=RUNDIR="$WORK/run" --var=LOGDIR="$WORK/log" >/dev/null 2>&1 &
RSPAMD_PID=$!
wait_port "$PORT" 90
echo "rspamd milter on 127.0.0.1:$PORT (pid $RSPAMD_PID)" >&2
EXTRA_MAIN_CF="smtpd_milters = inet:127.0.0.1:$PORT
milter_default_action = tempfail" benches/load/accept.sh
