#!/usr/bin/env bash
# A stand-in for "tapegrad train" with the same command line and the same
# signal and checkpoint contract, for testing the SLURM harness without the
# trainer:
#
#   standin_train.sh train --ckpt-dir DIR --max-steps N [--resume auto|FILE]
#                    [--step-ms MS] [other tapegrad train options, ignored]
#
# It "trains" N steps of MS milliseconds (default 100). On SIGUSR1, SIGTERM or
# SIGINT it finishes the current step, writes DIR/ckpt.rankR (the step
# reached) and exits 75; a second SIGINT exits 130 at once. --resume auto
# continues from DIR/ckpt.rankR when it exists. At the end it writes
# DIR/done.rankR and exits 0. Every start, checkpoint and end is also one line
# in DIR/events (rank, what, step, signal), which the test reads.
#
# The rank comes from MPI launchers' variables (Open MPI, PMIx), else from
# SLURM_PROCID as with "srun --mpi=none", else 0.
set -u

rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${SLURM_PROCID:-0}}}
ckpt_dir=
max_steps=
resume=
step_ms=100

[ "${1:-}" = train ] || {
    echo "standin_train.sh: usage: $0 train --ckpt-dir DIR --max-steps N ..." >&2
    exit 2
}
shift
while [ $# -gt 0 ]; do
    case "$1" in
    --ckpt-dir) ckpt_dir=$2 ;;
    --max-steps) max_steps=$2 ;;
    --resume) resume=$2 ;;
    --step-ms) step_ms=$2 ;;
    --*) [ $# -ge 2 ] || break ;; # tapegrad options this stand-in ignores
    *)
        echo "standin_train.sh: unexpected argument '$1'" >&2
        exit 2
        ;;
    esac
    shift 2
done
if [ -z "$ckpt_dir" ] || [ -z "$max_steps" ]; then
    echo "standin_train.sh: --ckpt-dir and --max-steps are required" >&2
    exit 2
fi
mkdir -p "$ckpt_dir" || exit 1

ckpt=$ckpt_dir/ckpt.rank$rank
event() {
    # One short line per write: O_APPEND keeps lines from two ranks whole.
    echo "rank=$rank $1 step=$2 sig=${3:-none} job=${SLURM_JOB_ID:-none} restart=${SLURM_RESTART_COUNT:-0}" >>"$ckpt_dir/events"
}

step=0
case "$resume" in
'') ;;
auto) [ -s "$ckpt" ] && read -r step <"$ckpt" ;;
*) read -r step <"$resume" || exit 1 ;;
esac

signal=
sigints=0
on_signal() {
    if [ "$1" = INT ]; then
        sigints=$((sigints + 1))
        if [ "$sigints" -ge 2 ]; then
            event abort "$step" INT
            exit 130
        fi
    fi
    [ -n "$signal" ] || signal=$1
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

echo "standin rank $rank: start at step $step of $max_steps (job ${SLURM_JOB_ID:-none}, restart ${SLURM_RESTART_COUNT:-0})"
event start "$step"
sleep_s=$(printf '%d.%03d' $((step_ms / 1000)) $((step_ms % 1000)))
while [ "$step" -lt "$max_steps" ]; do
    # sleep in the background: wait returns at once on a trapped signal, so
    # the signal is seen at this step's end rather than after it.
    sleep "$sleep_s" &
    wait $! 2>/dev/null || wait $! 2>/dev/null
    step=$((step + 1))
    if [ -n "$signal" ]; then
        # Builtins only from here on: srun and slurmstepd signal the whole
        # process group, and a second signal (SIGTERM from scancel, then the
        # batch script's SIGUSR1) would kill a child such as mv.
        echo "$step" >"$ckpt" || exit 1
        echo "standin rank $rank: SIG$signal, checkpointed at step $step, exit 75"
        event checkpoint "$step" "$signal"
        exit 75
    fi
done
echo "$step" >"$ckpt_dir/done.rank$rank" || exit 1
echo "standin rank $rank: done at step $step"
event "done" "$step"
exit 0
