#!/usr/bin/env bash
# Starts a single-node SLURM cluster on localhost for the tests: munged,
# slurmctld and slurmd, all as root, all state under one folder.
#
#   tests/slurm/cluster_up.sh DIR
#
# DIR must be an empty (or absent) folder; everything the cluster writes lives
# under it: slurm.conf, the munge key and socket, state, spool, logs and pid
# files. On success it writes DIR/env (source it to get SLURM_CONF for the
# client commands) and exits 0 once sinfo shows the node idle. It exits 77
# with the reason on stderr when the cluster cannot run on this machine
# (packages missing and not installable, not root, a daemon that will not
# start), and 1 on any other error. tests/slurm/cluster_down.sh DIR stops it.
#
# The ports are chosen free at start-up and only 127.0.0.1 is used, so two
# clusters (two checkouts running their tests at once) do not collide, and
# nothing here talks to the network. Environment:
#   TG_SLURM_INSTALL=0     do not apt-get install missing packages (skip instead)
#   TG_SLURM_WAIT=30       seconds to wait for each daemon and for the idle node
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/common.sh
. "$here/common.sh"

[ $# -eq 1 ] || {
    echo "usage: $0 DIR" >&2
    exit 2
}
dir=$1
wait_s=${TG_SLURM_WAIT:-10}

[ "$(id -u)" -eq 0 ] || skip "the test cluster runs its daemons as root; this is uid $(id -u)"

# Debian names: slurmctld and slurmd are the daemons, slurm-client holds
# sbatch/srun/sinfo/scontrol/scancel, munge the authentication daemon.
need_pkgs=(slurmctld slurmd slurm-client munge)
need_cmds=(munged mungekey slurmctld slurmd sbatch srun sinfo scontrol scancel)
missing_cmds() {
    local c out=()
    for c in "${need_cmds[@]}"; do
        command -v "$c" >/dev/null 2>&1 || out+=("$c")
    done
    echo "${out[*]}"
}
if [ -n "$(missing_cmds)" ]; then
    if [ "${TG_SLURM_INSTALL:-1}" = 0 ]; then
        skip "missing commands: $(missing_cmds) (TG_SLURM_INSTALL=0: not installing ${need_pkgs[*]})"
    fi
    log "installing ${need_pkgs[*]} (missing: $(missing_cmds))"
    # Debian's maintainer scripts would start the daemons with the packaged
    # configuration; policy-rc.d normally forbids that in containers, and the
    # test starts its own daemons anyway.
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"; } >"${dir%/}.apt.log" 2>&1; then
        tail -n 5 "${dir%/}.apt.log" >&2
        rm -f "${dir%/}.apt.log"
        skip "could not install ${need_pkgs[*]}"
    fi
    rm -f "${dir%/}.apt.log"
    [ -z "$(missing_cmds)" ] || skip "still missing after install: $(missing_cmds)"
fi

mkdir -p "$dir" || die "cannot create $dir"
dir=$(cd "$dir" && pwd)
[ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
mkdir -p "$dir"/{munge,state,spool/slurmd,log,run,pmix} || die "cannot create folders under $dir"
# munged refuses a socket folder or key that others can write to.
chmod 700 "$dir/munge"

# Free TCP ports on 127.0.0.1: bind to port 0 and read back what the kernel
# chose. The port is released before the daemon binds it; a collision in
# between is possible but needs another process to grab that exact port.
# Without python3: random ports in 20000..39999 that nothing listens on.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
        return
    fi
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 20000))
        if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
ctld_port=$(free_port) || die "cannot pick a free port"
slurmd_port=$(free_port) || die "cannot pick a free port"
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done

# The node's real size, as slurmd itself sees it, so that slurmd accepts the
# configuration without overrides. The first line of `slurmd -C` is
# "NodeName=... CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ...".
hw=$(slurmd -C 2>/dev/null | head -n 1) || true
[ -n "$hw" ] || skip "slurmd -C printed nothing: slurmd cannot read this machine's topology"
hw=${hw#NodeName=* } # drop the real host name; the node is called localhost
log "node hardware: $hw"

first_job_id=$((1000 + RANDOM * 16 + RANDOM % 16))

cat >"$dir/slurm.conf" <<EOF
# Single-node test cluster written by tests/slurm/cluster_up.sh.
ClusterName=tgtest
# Job ids from a random start: the pmix plugin and others name files in /tmp
# after the job id, and two test clusters at once must not share them.
FirstJobId=$first_job_id
MailProg=/bin/true
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Our own munged, not the system one: its socket lives under DIR.
# cred_expire is also how long a requeued job waits before it may start
# again (120 s by default); a test cluster needs no such margin.
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: containers rarely let a daemon create its own hierarchy.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
# Run the main scheduling loop every second (default 60 s), so that a
# requeued job starts as soon as it is eligible again.
SchedulerParameters=sched_interval=1
# PMIx is what "srun --mpi=pmix" in launch/slurm/train.sbatch asks for;
# Debian's slurm-wlm-basic-plugins ships mpi_pmix. The default stays none so
# that a plain srun of a non-MPI program needs nothing from it.
MpiDefault=none
PlugStackConfig=$dir/plugstack.conf
# Batch jobs may be requeued (train.sbatch asks for it with --requeue too).
JobRequeue=1
ReturnToService=2
# Short timeouts: a test cluster has nothing to wait for.
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
# Finished jobs stay visible to scontrol show job for five minutes: the test
# reads their state and restart count there (no accounting database).
MinJobAge=300
# No GPUs: jobs ask for none (train.sbatch takes --gpus-per-task=0 on the
# command line, see docs/SLURM.md).
NodeName=localhost NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
: >"$dir/plugstack.conf"
# The pmix plugin's per-step client folder (default /tmp/spmix_appdir_UID_JOB.STEP).
echo "PMIxCliTmpDirBase=$dir/pmix" >"$dir/mpi.conf"

cat >"$dir/env" <<EOF
export SLURM_CONF=$dir/slurm.conf
EOF
export SLURM_CONF=$dir/slurm.conf

# A fresh key per cluster; munged checks that only its owner can read it.
mungekey --create --keyfile="$dir/munge/munge.key" --force >/dev/null 2>&1 ||
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none ||
    die "cannot create a munge key"
chmod 600 "$dir/munge/munge.key"

# munged as root (--force: it otherwise warns about running as root with a
# key that root owns). --pid-file and --seed-file keep it out of /run and
# /var/lib; --log-file keeps its log with the others.
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/run/munged.pid" --seed-file="$dir/munge/munged.seed" \
    --log-file="$dir/log/munged.log" --num-threads=2 >"$dir/log/munged.out" 2>&1 ||
    skip "munged did not start: $(tail -n 3 "$dir/log/munged.out" "$dir/log/munged.log" 2>/dev/null | tr '\n' ' ')"
wait_for "$wait_s" "munge socket" test -S "$dir/munge/munge.socket" ||
    skip "munged started but made no socket: $(tail -n 3 "$dir/log/munged.log" 2>/dev/null | tr '\n' ' ')"
if command -v munge >/dev/null 2>&1; then
    munge --socket="$dir/munge/munge.socket" -n | unmunge --socket="$dir/munge/munge.socket" >/dev/null 2>&1 ||
        skip "munge cannot encode/decode a credential with its own daemon"
fi

# -i: ignore saved state (a fresh cluster); both daemons detach by themselves
# and write pid files; their stdout/stderr only carry start-up failures.
slurmctld -i -f "$dir/slurm.conf" >"$dir/log/slurmctld.out" 2>&1 ||
    skip "slurmctld did not start: $(tail -n 5 "$dir/log/slurmctld.out" "$dir/log/slurmctld.log" 2>/dev/null | tr '\n' ' ')"
wait_for "$wait_s" "slurmctld" scontrol ping -Q ||
    wait_for 1 "slurmctld" sh -c 'scontrol ping | grep -q UP' ||
    skip "slurmctld does not answer: $(tail -n 5 "$dir/log/slurmctld.log" 2>/dev/null | tr '\n' ' ')"

# -N localhost: the node's name in slurm.conf, whatever the host is called.
slurmd -N localhost -f "$dir/slurm.conf" >"$dir/log/slurmd.out" 2>&1 ||
    skip "slurmd did not start: $(tail -n 5 "$dir/log/slurmd.out" "$dir/log/slurmd.log" 2>/dev/null | tr '\n' ' ')"

node_idle() {
    local state
    state=$(sinfo -h -N -n localhost -o %T 2>/dev/null)
    [ "$state" = idle ]
}
if ! wait_for "$wait_s" "node idle" node_idle; then
    skip "node localhost is '$(sinfo -h -N -o %T 2>/dev/null)', not idle, after ${wait_s}s: $(tail -n 5 "$dir/log/slurmd.log" 2>/dev/null | tr '\n' ' ')"
fi
log "cluster up in $dir (slurmctld :$ctld_port, slurmd :$slurmd_port)"
