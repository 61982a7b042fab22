#!/usr/bin/env bash
# Builds tapegrad twice and runs its test suite:
#   1. build/      Release, default options; every test except the labels "bench"
#                  and "slurm-slow".
#   2. build-asan/ Debug with AddressSanitizer + UndefinedBehaviorSanitizer, CPU
#                  only; the "unit" label, with the step-lifetime debug mode on
#                  (TG_DEBUG_STEPS=1: a step tensor used after tg_step_reset
#                  fails the op that uses it).
#   3. build-fuzz/ clang with libFuzzer (when clang can link -fsanitize=fuzzer):
#                  every tests/fuzz target fuzzed for TG_FUZZ_SECONDS (default
#                  60) from its seed corpus.
# Exits non-zero when any configure, build or test step fails, and ends with a
# summary (the last line says PASS or FAIL). Run it from anywhere: it works in
# the repository root. TG_TEST_JOBS sets the parallelism (default 2).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

jobs=${TG_TEST_JOBS:-2}
failed=()
passed=()

step() {
    local name=$1
    shift
    echo "==> $name: $*"
    if "$@"; then
        passed+=("$name")
    else
        echo "==> $name: FAILED"
        failed+=("$name")
        return 1
    fi
}

# A sanitizer error must fail the test that hit it, not just print a report.
# detect_leaks stays on; tests/lsan.supp names the few leaks that belong to
# third-party runtimes rather than to tapegrad. fast_unwind_on_malloc=0 gives
# full allocation stacks through libraries built without frame pointers, so
# that those entries can stay narrow.
# allocator_may_return_null and hard_rss_limit_mb: a damaged file that makes
# a reader ask for a huge allocation gets NULL (and must fail cleanly), and
# one that grows without bound is killed at 6 GiB: the bad-input tests fail
# instead of the machine.
# intercept_tls_get_addr=0: the sanitizer then does not track the dynamic TLS
# blocks of dlopen'ed libraries, and its leak tracer no longer reads a stale
# block left in a thread's DTV by a library already closed (Open MPI loads and
# unloads its components), where it died at a CLI process's exit with "Tracer
# caught signal 11 ... DTLS 12 at 0x3bd1-..." and no leak found. Scanning fewer
# roots can only report more leaks, never hide one.
asan_env=(
    ASAN_OPTIONS="halt_on_error=1:exitcode=1:detect_leaks=1:detect_stack_use_after_return=1:fast_unwind_on_malloc=0:allocator_may_return_null=1:hard_rss_limit_mb=6144:intercept_tls_get_addr=0"
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
    LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
    TG_DEBUG_STEPS=1
)

# Runs ctest, keeps its output in $1/ctest.log for the summary, and passes on
# its exit status. --no-tests=error: a suite that silently found no tests
# is a broken build, not a pass.
run_ctest() {
    local dir=$1
    shift
    ctest --test-dir "$dir" --output-on-failure --no-tests=error -j"$jobs" "$@" 2>&1 |
        tee "$dir/ctest.log"
}

# run_ctest with the sanitizer settings exported (a subshell keeps them out of
# the rest of this script).
run_asan_ctest() {
    (
        export "${asan_env[@]}"
        run_ctest "$@"
    )
}

# run_asan_ctest, and when tests failed, those tests once more: a guard kept
# from before the cause of LeakSanitizer's tracer deaths was found (see
# intercept_tls_get_addr above), in case another sanitizer-runtime death
# remains. A failure that comes again fails the step; one that does not is
# listed in build-asan/reruns.log and in the summary, so it stays visible.
run_asan_ctest_once_more() {
    local dir=$1
    rm -f "$dir/reruns.log"
    if run_asan_ctest "$@"; then
        return 0
    fi
    grep -E '^[[:space:]]+[0-9]+ - ' "$dir/ctest.log" | grep -v '(Skipped)' >"$dir/reruns.log" || true
    echo "==> asan: running the failed tests once more:"
    cat "$dir/reruns.log"
    run_asan_ctest "$dir" --rerun-failed
}

# The "N% tests passed, ..." line ctest prints, or a note when there is none.
ctest_total() {
    local line
    line=$(grep -E 'tests passed, [0-9]+ tests? failed' "$1/ctest.log" 2>/dev/null | tail -n 1)
    echo "${line:-tests not run}"
}

# The committed reference fixtures must be what the generators produce now
# (with Debian's PyTorch and NumPy; the attention fixtures need a torch >= 2.0
# and are checked against the composed math when made): regenerate them over a copy, compare,
# and put the committed files back whatever the outcome.
check_fixtures() {
    local keep rc=0 gen
    keep=$(mktemp -d) || return 1
    cp -a tests/fixtures "$keep/" || return 1
    for gen in tests/gen_fixtures.py tests/gen_optim_fixtures.py tests/gen_npy_fixtures.py \
        tests/gen_fixtures_bf16.py tests/gen_gpt_fixtures.py tests/gen_fixtures_lnorm.py; do
        /usr/bin/python3 "$gen" >/dev/null || rc=1
    done
    diff -r "$keep/fixtures" tests/fixtures || rc=1
    rm -rf tests/fixtures && cp -a "$keep/fixtures" tests/ && rm -rf "$keep"
    return $rc
}

# True when clang can build a libFuzzer program (Debian: clang and
# libclang-rt-14-dev, which scripts/setup.sh installs).
have_libfuzzer() {
    local dir rc
    command -v clang >/dev/null 2>&1 || return 1
    dir=$(mktemp -d) || return 1
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        >"$dir/t.c"
    clang -fsanitize=fuzzer,address "$dir/t.c" -o "$dir/t" >/dev/null 2>&1
    rc=$?
    rm -rf "$dir"
    return $rc
}

# A log from an earlier run must not stand in for a step that failed to build.
rm -f build/ctest.log build-asan/ctest.log build-fuzz/ctest.log

if /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
    step "fixtures reproduce" check_fixtures
else
    echo "==> fixtures reproduce: skipped (no PyTorch for /usr/bin/python3: scripts/setup.sh --with-torch)"
fi

if step "configure (release)" cmake -S . -B build &&
    step "build (release)" cmake --build build -j"$jobs"; then
    step "test (release)" run_ctest build -LE 'bench|slurm-slow'
fi

if step "configure (asan)" cmake -S . -B build-asan -DTG_SANITIZE=ON -DTG_CUDA=OFF \
    -DTG_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug &&
    step "build (asan)" cmake --build build-asan -j"$jobs"; then
    echo "==> sanitizer settings: ${asan_env[*]}"
    step "test (asan)" run_asan_ctest_once_more build-asan -L unit
fi

fuzz_seconds=${TG_FUZZ_SECONDS:-60}
if have_libfuzzer; then
    if step "configure (fuzz)" env CC=clang cmake -S . -B build-fuzz -DTG_FUZZ=ON -DTG_CUDA=OFF \
        -DTG_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTG_FUZZ_SECONDS="$fuzz_seconds" &&
        step "build (fuzz)" cmake --build build-fuzz -j"$jobs"; then
        step "fuzz (${fuzz_seconds} s per target)" run_ctest build-fuzz -L fuzz
    fi
else
    echo "==> fuzz: skipped (clang cannot link -fsanitize=fuzzer: scripts/setup.sh installs it)"
fi

echo "test.sh: release: $(ctest_total build)"
echo "test.sh: asan: $(ctest_total build-asan)"
if [ -s build-asan/reruns.log ]; then
    echo "test.sh: asan: failed once and were run again (the line above is the second run):"
    sed 's/^/test.sh:   /' build-asan/reruns.log
fi
if [ -f build-fuzz/ctest.log ]; then
    echo "test.sh: fuzz: $(ctest_total build-fuzz)"
fi
if [ "${#failed[@]}" -eq 0 ]; then
    echo "test.sh: PASS (${#passed[@]} steps)"
    exit 0
fi
echo "test.sh: FAIL (${#failed[@]} of $((${#passed[@]} + ${#failed[@]})) steps failed: $(IFS=,; echo "${failed[*]}"))"
exit 1
