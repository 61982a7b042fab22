#!/bin/sh
# Runs one libFuzzer target for a fixed time from its seed corpus:
#
#     run_fuzz.sh FUZZER SEED_CORPUS ARTIFACT_DIR SECONDS
#
# New inputs go to a scratch folder (the seed corpus in the repository is only
# read). A crash, a leak, a sanitizer report, an input slower than 20 s or an
# allocation over 2 GiB fails the test; the input that did it is kept in
# ARTIFACT_DIR (reproduce with `FUZZER FILE`).
set -u
fuzzer=$1 seeds=$2 artifacts=$3 seconds=$4
work=$(mktemp -d "${TMPDIR:-/tmp}/tg-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$artifacts" || exit 1
"$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "$seeds"
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "run_fuzz.sh: $(basename "$fuzzer") failed (exit $rc); inputs kept in $artifacts" >&2
fi
exit "$rc"
