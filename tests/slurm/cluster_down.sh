#!/usr/bin/env bash
# Stops the test cluster that tests/slurm/cluster_up.sh started in DIR and
# removes DIR.
#
#   tests/slurm/cluster_down.sh [--keep] DIR
#
# Safe to run on a half-started cluster (only the daemons whose pid files
# exist are stopped) and more than once. Each daemon gets SIGTERM, then
# SIGKILL after 5 s; only the processes named in DIR's pid files are
# signalled, plus job processes whose SLURM_CONF points into DIR (a job that
# outlived its slurmd). --keep leaves DIR in place (for reading the logs).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/common.sh
. "$here/common.sh"

keep=0
if [ "${1:-}" = --keep ]; then
    keep=1
    shift
fi
[ $# -eq 1 ] || {
    echo "usage: $0 [--keep] DIR" >&2
    exit 2
}
dir=$1
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd)
# Refuse anything that is not a cluster folder: rm -rf follows.
[ -f "$dir/slurm.conf" ] || [ -d "$dir/munge" ] || die "$dir does not look like a test cluster folder"

alive() {
    kill -0 "$1" 2>/dev/null
}

# stop NAME PID: SIGTERM, up to 5 s of grace, then SIGKILL.
stop() {
    local name=$1 pid=$2
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 25); do
        alive "$pid" || return 0
        sleep 0.2
    done
    log "$name (pid $pid) ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null
}

# Job processes carry SLURM_CONF in their environment; any still running
# after slurmd has gone belong to this cluster and nothing else.
job_pids() {
    local p
    for p in /proc/[0-9]*; do
        if { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$dir/slurm.conf"; then
            echo "${p#/proc/}"
        fi
    done
}

# slurmd first (it ends its job steps), then the controller, then munge.
for name in slurmd slurmctld munged; do
    pidfile=$dir/run/$name.pid
    [ -s "$pidfile" ] || continue
    stop "$name" "$(cat "$pidfile")"
done
for pid in $(job_pids); do
    [ "$pid" = $$ ] && continue
    stop "job process" "$pid"
done

if [ "$keep" -eq 0 ]; then
    rm -rf "$dir"
fi
exit 0
