#!/bin/sh
# Run a job that must fail: usage expect_fail.sh MAX_SECONDS REGEX COMMAND...
# Passes when COMMAND exits non-zero within MAX_SECONDS (a hang is killed
# 10 s later and fails) and its output matches the extended REGEX.
max=$1
pat=$2
shift 2
start=$(date +%s)
out=$(timeout $((max + 10)) "$@" 2>&1)
rc=$?
end=$(date +%s)
printf '%s\n' "$out"
took=$((end - start))
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0"; exit 1; fi
if [ "$rc" -eq 124 ]; then echo "FAIL: the job hung (killed after $((max + 10)) s)"; exit 1; fi
if [ "$took" -gt "$max" ]; then echo "FAIL: took $took s, more than $max s"; exit 1; fi
if ! printf '%s\n' "$out" | grep -Eq "$pat"; then echo "FAIL: no line matches /$pat/"; exit 1; fi
echo "ok: exit code $rc after $took s"
