# shellcheck shell=bash
# CPU accounting for the relay benches (cpu.sh, starttls.sh): each MTA runs
# in a cgroup (v1 cpuacct) of its own, started by the script, so its CPU is
# the sum over every process it forks, however short-lived (Postfix's
# smtpd, cleanup, qmgr, lmtp and the rest come and go; `ps` would miss the
# ones that exit). The load client and the sink run outside both groups.
# sluice is one process: its /proc/PID/stat utime+stime is printed as
# well, and agrees with its group.
#
# Source it after lib.sh. Needs root (cgroup directories, Postfix's master).

CG_ROOT=/sys/fs/cgroup/cpuacct

# cg_new NAME: creates a cpuacct group and prints its directory.
cg_new() {
    local dir="$CG_ROOT/sluice-bench-$1.$$"
    if [ ! -d "$CG_ROOT" ] || ! mkdir "$dir" 2>/dev/null; then
        echo "cpu_lib: cannot create a cgroup under $CG_ROOT (cgroup v1 cpuacct, root)" >&2
        return 1
    fi
    echo "$dir"
}

# cg_run DIR CMD...: runs CMD inside the group DIR (its children stay in it),
# in the foreground.
cg_run() {
    local dir=$1
    shift
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" "$@"
}

# cg_ns DIR: CPU nanoseconds the group has used so far.
cg_ns() { cat "$1/cpuacct.usage"; }

# cg_split DIR: "user_ns sys_ns" of the group. The kernel keeps these two
# in clock ticks (their sum undercounts cpuacct.usage, which is exact):
# they give the split, the total comes from cg_ns.
cg_split() { echo "$(cat "$1/cpuacct.usage_user") $(cat "$1/cpuacct.usage_sys")"; }

# cg_remove DIR: removes the group once its processes are gone (their CPU
# was read before).
cg_remove() {
    local dir=$1 i
    for ((i = 0; i < 50; i++)); do
        rmdir "$dir" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "cpu_lib: $dir still has processes" >&2
}

# proc_ticks PID: utime+stime of one process, in clock ticks.
proc_ticks() {
    # Fields 14 and 15, counted after the ")" that ends the command name.
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# loadavg: the 1-minute load average.
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# wait_removed LOG N: waits until LOG has N "removed" lines (both MTAs log
# them Postfix-style when a message leaves the queue).
wait_removed() {
    local log=$1 n=$2
    while [ "$(grep -c ': removed$' "$log" 2>/dev/null || true)" -lt "$n" ]; do sleep 0.05; done
}

# children_ms: user+system CPU milliseconds of this shell's waited-for
# children so far (bash's `times`, run in this shell, not a subshell).
children_ms() {
    local f
    f=$(mktemp)
    times >"$f"
    # Second line: children's user and system time, e.g. "0m1.234s 0m0.567s".
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print int((u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 1000) }' "$f"
    rm -f "$f"
}

# measure NAME CGROUP LOG N PID LOAD_CMD...: runs the load command, waits for
# N removals in LOG, and prints one result line: messages/s, CPU ms per
# message (group), user/sys split, and the process's own CPU when PID is
# not "-", with the load average at the start and the end; then the load
# client's own CPU per message (it runs in the foreground, so `times`
# counts it once it exits), which shares the two cores with the MTA.
measure() {
    local name=$1 cg=$2 log=$3 n=$4 pid=$5
    shift 5
    local start end ns0 ns1 u0 s0 u1 s1 t0 t1 la0 la1 hz c0 c1
    hz=$(getconf CLK_TCK)
    la0=$(loadavg)
    read -r u0 s0 < <(cg_split "$cg")
    ns0=$(cg_ns "$cg")
    if [ "$pid" != - ]; then t0=$(proc_ticks "$pid"); fi
    # Not $(children_ms): a subshell's `times` counts its own children.
    children_ms >"$WORK/children.ms"
    read -r c0 <"$WORK/children.ms"
    start=$(now)
    "$@"
    children_ms >"$WORK/children.ms"
    read -r c1 <"$WORK/children.ms"
    wait_removed "$log" "$n"
    end=$(now)
    ns1=$(cg_ns "$cg")
    read -r u1 s1 < <(cg_split "$cg")
    if [ "$pid" != - ]; then t1=$(proc_ticks "$pid"); fi
    la1=$(loadavg)
    python3 - "$name" "$n" "$start" "$end" "$ns0" "$ns1" "$u0" "$u1" "$s0" "$s1" \
        "${t0:-0}" "${t1:-0}" "$hz" "$la0" "$la1" "$c0" "$c1" <<'EOF'
import sys
name, n = sys.argv[1], int(sys.argv[2])
start, end = float(sys.argv[3]), float(sys.argv[4])
ns0, ns1, u0, u1, s0, s1, t0, t1, hz = (int(x) for x in sys.argv[5:14])
la0, la1 = sys.argv[14], sys.argv[15]
client = (int(sys.argv[17]) - int(sys.argv[16])) / n
el = end - start
cpu = (ns1 - ns0) / 1e6 / n
usr = (u1 - u0) / 1e6 / n
sys_ = (s1 - s0) / 1e6 / n
own = "" if t1 == 0 else " (process %.3f)" % ((t1 - t0) * 1000.0 / hz / n)
print("%-8s %6d msgs %7.2f s %7.0f msg/s  cpu %.3f ms/msg%s = user %.3f + sys %.3f  load %s -> %s  client %.3f ms/msg"
      % (name, n, el, n / el, cpu, own, usr, sys_, la0, la1, client))
EOF
}
