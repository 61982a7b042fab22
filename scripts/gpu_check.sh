#!/bin/bash
# scripts/gpu_check.sh: proves the CUDA path on a GPU machine in one call.
#
#   scripts/gpu_check.sh --prepare [DIR]   here (Debian, apt, network): the
#       project's Debian dependencies into DIR (default .gpu-deps, ignored by
#       git), under 60 MiB; carry DIR to the GPU machine with the repository.
#   scripts/gpu_check.sh [--deps DIR] [--arch SM] [--build DIR] [--only LIST]
#       on the GPU machine (CUDA toolkit, nvidia-smi, python3 with PyTorch; no
#       -dev packages, no network needed), from the repository root:
#         deps      unpack DIR and point the compiler, pkg-config and CMake at
#                   it (the project's programs run with DIR's libraries on
#                   the loader's path; the machine's tools keep their own)
#         build     configure with CUDA for the GPU's compute capability and
#                   build the library, the CLI, test_cuda_backend, mpi_nccl
#                   and bench_cuda in parallel
#         backend   test_cuda_backend: every op row, CPU against CUDA,
#                   forward and backward
#         memcheck  the same under compute-sanitizer --tool memcheck, for a
#                   subset (TG_CUDA_TESTS: test functions, TG_CUDA_CASES:
#                   op cases of test_every_case, by name prefix)
#         nccl      the NCCL world test (mpi_nccl), one rank
#         curves    mlp and cnn trained with --device cuda and --device cpu
#                   from the same seed: the loss curves must agree to 1e-4
#                   relative over the first 100 steps
#         matmul    f32 matmul through the op against bare cuBLAS (>= 90%)
#         train     mlp and cnn samples/s against PyTorch eager on the same
#                   GPU, same model, batch and optimizer, runs alternated
#                   (goal >= 1.0x)
#       --only LIST runs a comma-separated subset (deps and build always run).
#       --arch SM builds for SM without asking nvidia-smi (to test the kit on
#       a machine without a GPU: it then stops at the first step that needs
#       one).
#
# Every step has its own timeout (the whole check is meant to fit in 8
# minutes). One summary (pass/fail/skip per step, the numbers, the GPU and
# driver) goes to stdout and, when $OUT is set, to $OUT/gpu_check.txt; the
# logs of the steps go to BUILD/gpu_check/ (and $OUT/gpu_check/).
# Exit status: 0 every step passed, 1 a step failed, 77 stopped because no
# GPU is present (every step before that passed), 2 usage.
set -u -o pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/gpu_deps.sh
. "$here/scripts/gpu_deps.sh"

usage() { sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; }

deps=$here/.gpu-deps build=$here/build-gpu arch="" only="" prepare=""
while [ $# -gt 0 ]; do
    case $1 in
    --prepare)
        prepare=1
        if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then deps=$2; shift; fi ;;
    --deps) deps=$2; shift ;;
    --build) build=$2; shift ;;
    --arch) arch=$2; shift ;;
    --only) only=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ -n "$prepare" ]; then
    gpu_deps_prepare "$deps"
    exit $?
fi

# ---- the summary ----
t_start=$(date +%s)
logs=$build/gpu_check
mkdir -p "$logs"
summary=$logs/summary.txt
: >"$summary"
failed=0
say() { echo "$*" | tee -a "$summary"; }
result() { # step status detail
    say "$(printf '%-9s %-5s %s' "$1" "$2" "$3")"
    [ "$2" = FAIL ] && failed=1
    return 0
}
finish() { # exit code
    say "total: $(($(date +%s) - t_start)) s"
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT/gpu_check"
        cp "$summary" "$OUT/gpu_check.txt"
        cp "$logs"/*.log "$logs"/*.json* "$OUT/gpu_check/" 2>/dev/null
    fi
    exit "$1"
}
wanted() { [ -z "$only" ] || case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
# Stops the check: this step and every later one need a GPU.
no_gpu() { # step
    result "$1" STOP "no GPU on this machine (nvidia-smi sees none): this step and the later ones need one"
    finish $([ $failed -eq 1 ] && echo 1 || echo 77)
}
# run_step NAME TIMEOUT cmd...: the command's output goes to NAME.log.
run_step() {
    local name=$1 limit=$2
    shift 2
    timeout -k 10 "$limit" "$@" >"$logs/$name.log" 2>&1
    local rc=$?
    [ $rc -eq 124 ] && echo "(timed out after $limit s)" >>"$logs/$name.log"
    return $rc
}

say "tapegrad GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'))"
gpu=""
if command -v nvidia-smi >/dev/null; then
    gpu=$(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null |
        head -n 1)
fi
say "GPU: ${gpu:-none} (name, driver, compute capability)"
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
say "nvcc: $(nvcc --version 2>/dev/null | sed -n 's/.*release \([^,]*\).*/\1/p')" \
    "glibc: $(ldd --version 2>/dev/null | head -n 1 | sed 's/.* //')" \
    "($(sed -n 's/^PRETTY_NAME="\(.*\)"/\1/p' /etc/os-release 2>/dev/null))"

# ---- 1. deps ----
if gpu_deps_use "$deps" >"$logs/deps.log" 2>&1; then
    result deps ok "$(wc -l <"$deps/packages.txt") Debian packages from $deps"
    # The project's programs run with DIR's libraries (also under timeout).
    withlibs=(env "LD_LIBRARY_PATH=$GPU_DEPS_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
else
    result deps FAIL "$(tail -n 1 "$logs/deps.log")"
    finish 1
fi

# ---- 2. build ----
if [ -z "$arch" ]; then
    [ -n "$gpu" ] || no_gpu build
    arch=$(echo "$gpu" | awk -F', *' '{print $3}' | tr -d '.')
fi
jobs=$(nproc 2>/dev/null || echo 4)
targets=(tapegrad tapegrad_cli test_cuda_backend mpi_nccl bench_cuda)
if run_step build 300 bash -c '
    cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DTG_CUDA=ON -DTG_BENCH=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$3" "${@:6}" &&
    cmake --build "$2" -j "$4" --target $5' _ "$here" "$build" "$arch" "$jobs" \
    "${targets[*]}" "${GPU_DEPS_CMAKE_ARGS[@]}"; then
    result build ok "sm_$arch, -j$jobs, $(($(date +%s) - t_start)) s since the start"
else
    result build FAIL "see $logs/build.log: $(grep -m1 -E 'error|Error' "$logs/build.log")"
    finish 1
fi
tg=$build/tapegrad
"${withlibs[@]}" "$tg" --version >"$logs/version.log" 2>&1
sed 's/^/  /' "$logs/version.log" | tee -a "$summary"
[ -n "$gpu" ] || no_gpu backend

# ---- 3. the unit test, memcheck, NCCL ----
if wanted backend; then
    if run_step backend 120 "${withlibs[@]}" "$build/tests/test_cuda_backend"; then
        result backend ok "$(grep -c '^\[       OK \]' "$logs/backend.log") tests passed"
    else
        why=$(grep -m3 -E 'FAILED|Error|error' "$logs/backend.log" | paste -sd' ')
        result backend FAIL "see $logs/backend.log: ${why:-$(tail -n 1 "$logs/backend.log")}"
    fi
fi
if wanted memcheck; then
    export TG_CUDA_TESTS=${TG_CUDA_TESTS:-test_every_case,test_bad_index_reported,test_inplace_helpers,test_optim_matches_cpu}
    export TG_CUDA_CASES=${TG_CUDA_CASES:-add transposed,sum long rows,matmul,gather,scatter_add,softmax,cross_entropy,dropout,conv2d,max_pool2d_backward,avg_pool2d_backward,batch_norm_backward}
    if ! command -v compute-sanitizer >/dev/null; then
        result memcheck FAIL "compute-sanitizer not found"
    elif run_step memcheck 180 "${withlibs[@]}" compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$build/tests/test_cuda_backend"; then
        result memcheck ok "$TG_CUDA_TESTS (cases: $TG_CUDA_CASES): $(grep -m1 'ERROR SUMMARY' "$logs/memcheck.log")"
    else
        result memcheck FAIL "see $logs/memcheck.log: $(grep -m1 'ERROR SUMMARY' "$logs/memcheck.log")"
    fi
    unset TG_CUDA_TESTS TG_CUDA_CASES
fi
if wanted nccl; then
    if run_step nccl 60 "${withlibs[@]}" "$build/tests/mpi_nccl"; then
        result nccl ok "$(grep -m1 'mpi_nccl:' "$logs/nccl.log")"
    else
        result nccl FAIL "see $logs/nccl.log: $(tail -n 2 "$logs/nccl.log" | paste -sd' ')"
    fi
fi

# ---- 4. loss curves, 5. benchmarks ----
data=$logs/data.h5
make_data() {
    [ -f "$data" ] && return 0
    run_step data 60 python3 "$here/scripts/gpu_data.py" --out "$logs/data" --train 32768 &&
        for split in train test; do
            "${withlibs[@]}" "$tg" convert npy --x "$logs/data/x_$split.npy" --y "$logs/data/y_$split.npy" \
                --out "$data" --split "$split" >>"$logs/data.log" 2>&1 || return 1
        done
}
if wanted curves; then
    if ! make_data; then
        result curves FAIL "could not make the data set: see $logs/data.log"
    else
        for model in mlp cnn; do
            ok=1
            for dev in cuda cpu; do
                run_step "curve_${model}_$dev" 150 "${withlibs[@]}" "$tg" train --data "$data" --model "$model" \
                    --device "$dev" --seed 7 --max-steps 200 --batch-size 64 --log-every 1 \
                    --schedule constant --metrics "$logs/curve_${model}_$dev.jsonl" --quiet || ok=0
            done
            if [ $ok -eq 0 ]; then
                result "curves" FAIL "$model: a run failed: see $logs/curve_${model}_*.log"
                continue
            fi
            line=$(python3 "$here/scripts/gpu_compare.py" curves \
                "$logs/curve_${model}_cuda.jsonl" "$logs/curve_${model}_cpu.jsonl" 100 1e-4)
            case $line in
            ok*) result curves ok "$model: ${line#ok }" ;;
            *) result curves FAIL "$model: ${line#fail }" ;;
            esac
        done
    fi
fi
if wanted matmul; then
    if run_step matmul 90 "${withlibs[@]}" "$build/tests/bench/bench_cuda" --sizes 1024,2048,4096; then
        line=$(python3 "$here/scripts/gpu_compare.py" matmul "$logs/matmul.log" 0.90)
        case $line in
        ok*) result matmul ok "${line#ok }" ;;
        *) result matmul FAIL "${line#fail }" ;;
        esac
    else
        result matmul FAIL "see $logs/matmul.log"
    fi
fi
if wanted train; then
    if ! make_data; then
        result train FAIL "could not make the data set: see $logs/data.log"
    else
        for model in mlp cnn; do
            : >"$logs/train_$model.jsonl"
            ok=1
            for run in 1 2 3; do
                run_step "train_${model}_tg$run" 60 "${withlibs[@]}" "$tg" train --data "$data" --model "$model" \
                    --device cuda --max-steps 120 --batch-size 256 --log-every 20 \
                    --schedule constant --optimizer adamw --lr 1e-3 || ok=0
                python3 "$here/scripts/gpu_compare.py" tg_rate "$logs/train_${model}_tg$run.log" \
                    "$model" >>"$logs/train_$model.jsonl" || ok=0
                run_step "train_${model}_torch$run" 60 python3 "$here/tests/bench/torch_train.py" \
                    --device cuda --npy "$logs/data" --model "$model" --batch-size 256 \
                    --steps 100 --warmup 20 --optimizer adamw --lr 1e-3 || ok=0
                tail -n 1 "$logs/train_${model}_torch$run.log" >>"$logs/train_$model.jsonl"
            done
            if [ $ok -eq 0 ]; then
                result train FAIL "$model: a run failed: see $logs/train_${model}_*.log"
                continue
            fi
            line=$(python3 "$here/scripts/gpu_compare.py" train "$logs/train_$model.jsonl" 1.0)
            case $line in
            ok*) result train ok "$model: ${line#ok }" ;;
            *) result train FAIL "$model: ${line#fail }" ;;
            esac
        done
    fi
    result train skip "gpt: no gpt model exists in tapegrad yet (models: mlp, cnn, cnn-bn)"
fi
finish $failed
