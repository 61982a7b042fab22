# shellcheck shell=bash
# Helpers shared by the scripts in tests/slurm/ (sourced, not run).

# The name of the script that sourced this file, for messages.
tg_slurm_me=$(basename "$0")

log() {
    echo "$tg_slurm_me: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# ctest counts exit code 77 as "skipped" (SKIP_RETURN_CODE 77).
skip() {
    log "SKIP: $*"
    exit 77
}

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 0.2 s until it
# succeeds (returns 0) or SECONDS have passed (returns 1, with a message).
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.2
    done
    log "timed out after ${secs}s waiting for $what"
    return 1
}
