#!/usr/bin/env bash
# End-to-end test of launch/slurm/train.sbatch on a real single-node SLURM
# cluster started on localhost for the occasion:
#
#   1. tests/slurm/cluster_up.sh starts munged, slurmctld and slurmd;
#   2. train.sbatch is submitted as a 2-task CPU job;
#   3. once both ranks train, the batch shell gets the pre-emption warning
#      (scancel --batch --signal=USR1, which is what --signal=B:USR1@120
#      delivers), or with --timed SLURM sends it itself near the time limit;
#   4. the test checks that the ranks checkpointed and exited 75, that the
#      job requeued itself, restarted once, resumed from the checkpoint and
#      completed with exit code 0;
#   5. the cluster is torn down, whatever happened.
# With --cancel it checks the other way out instead: a plain scancel (SIGTERM
# to everything) makes the ranks checkpoint, and the job is NOT requeued.
#
#   tests/slurm/run_test.sh [--timed | --cancel] [--launcher srun|mpirun]
#
# Exit codes: 0 passed, 1 failed, 77 skipped (no SLURM on this machine and it
# cannot be installed, not root, or the daemons cannot run here: the reason
# is printed). The whole run is bounded by TG_SLURM_TIMEOUT seconds.
#
# What it trains comes from the environment, handed on to train.sbatch:
#   TAPEGRAD             the tapegrad command (default: the stand-in
#                        tests/slurm/standin_train.sh, same contract)
#   TG_TRAIN_ARGS        extra "tapegrad train" arguments (default
#                        "--max-steps 60", 100 ms a step for the stand-in)
#   TG_DATA, TG_MODEL, TG_EPOCHS, TG_CKPT_EVERY   as in train.sbatch
#   TG_SLURM_READY_REGEX a line of the job's output that shows both ranks are
#                        training with their signal handlers installed; the
#                        signal is sent only after it appears (default: the
#                        stand-in's "standin rank 1: start")
#   TG_SLURM_TIMEOUT     seconds for the whole test (default 170)
#   TG_SLURM_KEEP=1      keep the cluster folder (logs, job output) afterwards
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/slurm/common.sh
. "$here/common.sh"

timed=0
cancel=0
launcher=srun
while [ $# -gt 0 ]; do
    case "$1" in
    --timed) timed=1 ;;
    --cancel) cancel=1 ;;
    --launcher)
        launcher=${2:-}
        shift
        ;;
    *)
        echo "usage: $0 [--timed | --cancel] [--launcher srun|mpirun]" >&2
        exit 2
        ;;
    esac
    shift
done

export TAPEGRAD=${TAPEGRAD:-$here/standin_train.sh}
# 60 steps of 100 ms; with --timed the run must outlast SLURM's warning.
if [ "$timed" -eq 1 ]; then
    export TG_TRAIN_ARGS=${TG_TRAIN_ARGS:---max-steps 600}
else
    export TG_TRAIN_ARGS=${TG_TRAIN_ARGS:---max-steps 60}
fi
ready_regex=${TG_SLURM_READY_REGEX:-standin rank 1: start}
deadline=$((SECONDS + ${TG_SLURM_TIMEOUT:-170}))

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tg-slurm.XXXXXX") || die "mktemp failed"
cluster=$tmp/cluster
work=$tmp/job
mkdir -p "$work" || die "cannot create $work"
chmod 755 "$tmp"

# The real trainer needs data: Fashion-MNIST from the Debian package,
# converted into the job folder (the stand-in reads nothing).
if [ -z "${TG_DATA:-}" ] && [ "$TAPEGRAD" != "$here/standin_train.sh" ]; then
    fm=${TG_IDX_DIR:-/usr/share/datasets/fashion-mnist}
    [ -f "$fm/train-images-idx3-ubyte.gz" ] || skip "no Fashion-MNIST in $fm (dataset-fashion-mnist)"
    for s in train:train t10k:test; do
        "$TAPEGRAD" convert idx --images "$fm/${s%%:*}-images-idx3-ubyte.gz" \
            --labels "$fm/${s%%:*}-labels-idx1-ubyte.gz" --out "$work/data.h5" \
            --split "${s##*:}" >/dev/null || die "converting Fashion-MNIST failed"
    done
    export TG_DATA=$work/data.h5
fi

job_id=
result=1
show_logs() {
    local f
    for f in "$work"/job.out "$cluster"/log/slurmctld.log "$cluster"/log/slurmd.log; do
        [ -f "$f" ] || continue
        echo "----- $f (last 40 lines)" >&2
        tail -n 40 "$f" >&2
    done
    [ -n "$job_id" ] && scontrol show job "$job_id" >&2 2>/dev/null
}
finish() {
    local rc=$? keep=()
    trap - EXIT INT TERM
    [ "$rc" -eq 0 ] || [ "$rc" -eq 77 ] || show_logs
    [ -n "$job_id" ] && scancel "$job_id" 2>/dev/null
    [ "${TG_SLURM_KEEP:-0}" = 1 ] && keep=(--keep)
    "$here/cluster_down.sh" "${keep[@]}" "$cluster"
    if [ "${#keep[@]}" -eq 0 ]; then
        rm -rf "$tmp"
    else
        log "kept $tmp"
    fi
    log "total ${SECONDS}s"
    exit "$rc"
}
trap finish EXIT
trap 'exit 1' INT TERM

left() {
    local s=$((deadline - SECONDS))
    [ "$s" -gt 0 ] || s=1
    echo "$s"
}

t0=$SECONDS
"$here/cluster_up.sh" "$cluster"
rc=$?
[ "$rc" -eq 0 ] || exit "$rc"
# shellcheck disable=SC1091
. "$cluster/env"
log "cluster up in $((SECONDS - t0))s"

fail() {
    log "FAIL: $*"
    exit 1
}

# PMIx when this SLURM has it (Debian's does), as train.sbatch defaults to.
if srun --mpi=list 2>&1 | grep -qw pmix; then
    export TG_SRUN_MPI=pmix
else
    log "srun has no pmix plugin; using --mpi=none"
    export TG_SRUN_MPI=none
fi
export TG_LAUNCHER=$launcher
if [ "$launcher" = mpirun ]; then
    command -v mpirun >/dev/null 2>&1 || skip "mpirun not found"
    # The daemons, and so the job, run as root here.
    export TG_MPIRUN_ARGS="--allow-run-as-root ${TG_MPIRUN_ARGS:-}"
    # The test cluster's KillWait is 5 s: mpirun must pass on scancel's
    # SIGTERM within it (train.sbatch's TG_MPIRUN_GRACE).
    export TG_MPIRUN_GRACE=${TG_MPIRUN_GRACE:-2}
fi
export TG_CKPT_DIR=$work/ckpt

# The script's own resource requests are for a GPU cluster; the command line
# overrides them (sbatch: command line > environment > #SBATCH lines).
sbatch_args=(--parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1
    --gpus-per-task=0 --chdir="$work" --output="$work/job.out")
if [ "$timed" -eq 1 ]; then
    # One minute of time limit and the warning 45 s before it: SLURM sends
    # it itself, somewhere in the job's first ~45 s (its timer checks
    # about every 30 s). The stand-in must outlast that.
    sbatch_args+=(--time=1 --signal=B:USR1@45)
fi
job_id=$(sbatch "${sbatch_args[@]}" "$root/launch/slurm/train.sbatch") || fail "sbatch failed"
job_id=${job_id%%;*}
log "submitted job $job_id ($TG_LAUNCHER, --mpi=$TG_SRUN_MPI, $TAPEGRAD $TG_TRAIN_ARGS)"

job_field() {
    scontrol show job "$job_id" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1
}
job_done() {
    case "$(job_field JobState)" in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) return 0 ;;
    esac
    return 1
}
ready() {
    grep -qE "$ready_regex" "$work/job.out" 2>/dev/null
}

t1=$SECONDS
# A job that ends before it trains ends the wait too.
wait_for "$(left)" "both ranks training (/$ready_regex/ in the job output)" \
    sh -c 'grep -qE "$1" "$2" 2>/dev/null || ! scontrol show job "$3" | grep -qE "JobState=(PENDING|RUNNING|CONFIGURING)"' \
    sh "$ready_regex" "$work/job.out" "$job_id"
ready || fail "the job did not start training: state $(job_field JobState), reason $(job_field Reason)"
log "training after $((SECONDS - t1))s"

if [ "$cancel" -eq 1 ]; then
    sleep 1
    scancel "$job_id" || fail "scancel $job_id failed"
    log "cancelled job $job_id"
    wait_for "$(left)" "the cancelled job to end" job_done || fail "job did not end after scancel"
    # The state turns CANCELLED at once; the batch shell still has its
    # KillWait (5 s here) to write its last lines.
    wait_for 10 "the batch script's report" grep -q \
        "train.sbatch\[$job_id\]: checkpointed after SIGTERM; not requeueing" "$work/job.out" ||
        fail "the batch script did not report a checkpoint after SIGTERM"
    [ "$(job_field JobState)" = CANCELLED ] || fail "job state $(job_field JobState), expected CANCELLED"
    [ "$(job_field Restarts)" = 0 ] || fail "a cancelled job was requeued ($(job_field Restarts) restarts)"
    if [ -f "$TG_CKPT_DIR/events" ]; then
        [ "$(grep -c ' checkpoint .* sig=TERM ' "$TG_CKPT_DIR/events")" -eq 2 ] ||
            fail "expected both ranks to checkpoint on SIGTERM"
    fi
    log "PASS: cancelled job $job_id checkpointed on SIGTERM and was not requeued ($((SECONDS - t0))s)"
    exit 0
fi
if [ "$timed" -eq 0 ]; then
    sleep 1
    # --batch: the batch shell only, exactly as --signal=B:USR1@120 does at
    # the time limit; the ranks hear of it only through the script's trap.
    scancel --batch --signal=USR1 "$job_id" || fail "scancel --batch --signal=USR1 $job_id failed"
    log "sent SIGUSR1 to the batch shell of job $job_id"
fi

# A job that ends without requeueing ends the wait too (and fails below).
restarted_or_done() {
    [ "$(job_field Restarts)" -ge 1 ] 2>/dev/null || job_done
}
wait_for "$(left)" "the job to requeue itself" restarted_or_done
if ! [ "$(job_field Restarts)" -ge 1 ] 2>/dev/null; then
    fail "job did not requeue: state $(job_field JobState), exit code $(job_field ExitCode), restarts $(job_field Restarts)"
fi
log "requeued after $((SECONDS - t1))s"
if [ "$timed" -eq 1 ]; then
    # The requeued run would get the same one-minute limit and be warned
    # again; give it room to finish instead.
    scontrol update JobId="$job_id" TimeLimit=5 || fail "cannot raise the time limit of job $job_id"
fi
wait_for "$(left)" "the requeued job to finish" job_done ||
    fail "job did not finish: state $(job_field JobState), reason $(job_field Reason)"
log "finished after $((SECONDS - t1))s"

# ---- checks -----------------------------------------------------------------
out=$work/job.out
state=$(job_field JobState)
restarts=$(job_field Restarts)
exitcode=$(job_field ExitCode)
[ "$state" = COMPLETED ] || fail "job state $state, expected COMPLETED (exit code $exitcode)"
[ "$exitcode" = 0:0 ] || fail "job exit code $exitcode, expected 0:0"
[ "$restarts" = 1 ] || fail "job restarted $restarts times, expected 1"

# The output file (--open-mode=append) holds both runs, in this order.
expect_seq=(
    "start .* restart 0 "
    "got SIGUSR1"
    "step exited with 75"
    "checkpointed; requeued job $job_id"
    "start .* restart 1 "
    "step exited with 0"
)
line=0
for pat in "${expect_seq[@]}"; do
    n=$(tail -n +"$((line + 1))" "$out" | grep -n -m1 -E "train\.sbatch\[$job_id\]: $pat" | cut -d: -f1)
    [ -n "$n" ] || fail "job output lacks /$pat/ after line $line"
    line=$((line + n))
done

[ -n "$(ls -A "$TG_CKPT_DIR" 2>/dev/null)" ] || fail "checkpoint folder $TG_CKPT_DIR is empty"

# The stand-in's event log: both ranks checkpointed at the same step after
# the signal, restarted from exactly that step, and finished.
events=$TG_CKPT_DIR/events
if [ -f "$events" ]; then
    max=$(echo "$TG_TRAIN_ARGS" | sed -n 's/.*--max-steps \([0-9]*\).*/\1/p')
    for r in 0 1; do
        ck=$(sed -n "s/^rank=$r checkpoint step=\([0-9]*\) sig=USR1 .* restart=0$/\1/p" "$events")
        [ -n "$ck" ] || fail "rank $r did not checkpoint on SIGUSR1 in the first run"
        if [ "$ck" -le 0 ] || [ "$ck" -ge "$max" ]; then
            fail "rank $r checkpointed at step $ck, not inside 1..$((max - 1))"
        fi
        grep -qx "rank=$r start step=$ck sig=none job=$job_id restart=1" "$events" ||
            fail "rank $r did not resume from its checkpoint (step $ck) after the requeue"
        grep -qx "rank=$r done step=$max sig=none job=$job_id restart=1" "$events" ||
            fail "rank $r did not finish $max steps after the requeue"
        log "rank $r: checkpointed at step $ck, resumed there, finished at $max"
    done
    [ "$(grep -c ' start ' "$events")" -eq 4 ] || fail "expected 4 starts (2 ranks x 2 runs) in $events"
fi

log "PASS: job $job_id checkpointed on SIGUSR1, requeued itself, resumed and completed ($((SECONDS - t0))s)"
result=0
exit "$result"
