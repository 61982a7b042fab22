#!/bin/sh
# tests/cuda/hidden_libs_test.sh TAPEGRAD CUBLAS_SONAME NCCL_SONAME
#
# One binary for CPU and GPU nodes: a CUDA build of tapegrad must start and
# train on the CPU where no CUDA library can be found, and refuse
# --device cuda with exit code 1 and a message naming the missing library.
#
# It checks that neither the CLI nor libtapegrad needs a CUDA library at load
# time (readelf: no DT_NEEDED entry of libcudart, libcublas, libnccl or
# libcuda), then re-runs itself in a private mount namespace (unshare -m)
# where an empty tmpfs is mounted over the toolkit's directories and
# /dev/null over every other copy the loader's cache knows of, with
# LD_LIBRARY_PATH an empty directory. There it runs --version, a short CPU
# training on a tiny IDX dataset it writes, and --device cuda.
# Exit 77 (skipped) where mount namespaces are not permitted.
set -u
tg=$1 cublas=$2 nccl=$3

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

if [ "${TG_HIDDEN_NS:-}" != 1 ]; then
    for f in "$tg" "$(dirname "$tg")/libtapegrad.so"*; do
        [ -f "$f" ] || continue
        deps=$(readelf -d "$f" | grep NEEDED) || fail "readelf -d $f"
        if echo "$deps" | grep -E -q 'libcudart|libcublas|libnccl|libcuda\.'; then
            fail "$f needs a CUDA library at load time: $deps"
        fi
    done
    echo "no CUDA library among the DT_NEEDED entries of $tg and libtapegrad"
    if ! unshare -m --propagation private true 2>/dev/null; then
        echo "unshare -m is not permitted here: skipped"
        exit 77
    fi
    TG_HIDDEN_NS=1 exec unshare -m --propagation private sh "$0" "$@"
fi

# ---- inside the namespace: hide every CUDA library ----
hide_dir() {
    [ -d "$1" ] && mount -t tmpfs -o size=1m none "$1" || true
}
for d in /usr/local/cuda /usr/local/cuda-*; do
    [ -e "$d" ] && hide_dir "$(readlink -f "$d")"
done
ldconfig -p | grep -E 'lib(cudart|cublas|cublasLt|nccl|cuda)\.so' | sed 's/.*=> //' |
    while read -r lib; do
        [ -e "$lib" ] && mount --bind /dev/null "$(readlink -f "$lib")"
    done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/empty" "$tmp/idx"
export LD_LIBRARY_PATH="$tmp/empty" XDG_CACHE_HOME="$tmp/cache"

# --version: which libraries were found (none) and how many GPUs (0).
out=$("$tg" --version) || fail "--version exited $? with the libraries hidden"
echo "$out"
echo "$out" | grep -q "^CUDA backend: built" || fail "--version: no 'CUDA backend: built'"
echo "$out" | grep -q "^  cuBLAS: not found: cuBLAS: $cublas not found" ||
    fail "--version does not say that $cublas was not found"
echo "$out" | grep -q "^  NCCL: not found: NCCL: $nccl not found" ||
    fail "--version does not say that $nccl was not found"
echo "$out" | grep -q "^  GPUs: 0 visible" || fail "--version: expected 0 GPUs"

# A tiny Fashion-MNIST-shaped IDX dataset: 16 training and 8 test images.
be32() { printf "\\$(printf %03o $(($1 >> 24 & 255)))\\$(printf %03o $(($1 >> 16 & 255)))\\$(printf %03o $(($1 >> 8 & 255)))\\$(printf %03o $(($1 & 255)))"; }
idx() { # name count
    { be32 2051; be32 "$2"; be32 28; be32 28; head -c $(($2 * 784)) /dev/urandom; } |
        gzip >"$tmp/idx/$1-images-idx3-ubyte.gz"
    { be32 2049; be32 "$2"; i=0; while [ $i -lt "$2" ]; do printf "\\$(printf %03o $((i % 10)))"; i=$((i + 1)); done; } |
        gzip >"$tmp/idx/$1-labels-idx1-ubyte.gz"
}
idx train 16
idx t10k 8

# A short CPU training.
"$tg" train --idx-dir "$tmp/idx" --model mlp --max-steps 4 --batch-size 4 \
    --eval-batch-size 8 --threads 1 >"$tmp/out" 2>"$tmp/err" ||
    fail "CPU training exited $?: $(cat "$tmp/out" "$tmp/err")"
grep -q "test accuracy: " "$tmp/out" || fail "CPU training printed no test accuracy"
echo "CPU training with the CUDA libraries hidden: ok"

# --device cuda: exit 1 and the missing library named.
"$tg" train --idx-dir "$tmp/idx" --model mlp --max-steps 4 --batch-size 4 \
    --eval-batch-size 8 --threads 1 --device cuda >"$tmp/out" 2>"$tmp/err"
code=$?
cat "$tmp/err"
[ $code -eq 1 ] || fail "--device cuda exited $code, expected 1"
grep -q "^tapegrad train: --device cuda: cuBLAS: $cublas not found" "$tmp/err" ||
    fail "--device cuda: the message does not name $cublas"
echo "ok"
