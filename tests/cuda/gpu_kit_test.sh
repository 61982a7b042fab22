#!/bin/bash
# tests/cuda/gpu_kit_test.sh DIR [SM]: the GPU check kit on a machine without
# a GPU, as far as that goes. DIR was made by `scripts/gpu_check.sh --prepare
# DIR`. In a private mount namespace every file of the Debian packages listed
# in DIR/packages.txt that is installed here is hidden (an empty tmpfs over
# their own directories, /dev/null over each other file; except the packages
# whose libraries cmake, the compilers or python3 load), so that the build
# can only use DIR; then scripts/gpu_check.sh --deps DIR --arch SM (default
# 90) must unpack DIR, configure, build and link the project against it, and
# stop at the first step that needs a GPU with exit status 77 and a line
# saying so. The CLI it built must resolve every library from DIR and train
# on the CPU there, and mpi_nccl (Open MPI from DIR) must start and skip. Not a ctest test: it needs DIR and takes minutes (a CUDA
# build). Exit 77 where unshare -m is not permitted.
set -u -o pipefail
dir=$(cd "$1" && pwd) sm=${2:-90}
here=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "FAIL: $*" >&2; exit 1; }

if [ "${TG_KIT_NS:-}" != 1 ]; then
    unshare -m --propagation private true 2>/dev/null || { echo "unshare -m not permitted: skipped"; exit 77; }
    # The synthetic data set, made before numpy's own BLAS is hidden.
    TG_KIT_DATA=$(mktemp -d)
    trap 'rm -rf "$TG_KIT_DATA"' EXIT
    py=python3
    python3 -c 'import numpy' 2>/dev/null || py=/usr/bin/python3
    $py "$here/scripts/gpu_data.py" --out "$TG_KIT_DATA" --train 512 --test 128 ||
        fail "gpu_data.py"
    export TG_KIT_DATA
    TG_KIT_NS=1 unshare -m --propagation private bash "$0" "$@"
    exit $?
fi

A=x86_64-linux-gnu
for d in /usr/include/hdf5 /usr/lib/$A/hdf5 /usr/lib/$A/openmpi /usr/lib/$A/pmix2 \
    /usr/lib/$A/openblas-openmp /usr/lib/$A/openblas-pthread /usr/include/$A/openblas-pthread \
    /usr/include/$A/openblas-openmp /usr/share/openmpi /usr/share/pmix /usr/lib/$A/pkgconfig; do
    [ -d "$d" ] && mount -t tmpfs -o size=1m none "$d"
done
# The machine's own tools keep their libraries (on a GPU machine they are
# its own): the packages that own a library of cmake, make, the compilers,
# nvcc or python3 stay visible; their copies in DIR must still be the ones
# the project's programs load (checked with ldd below).
keep=" "
for t in cmake make cc ld as "$(cc -print-prog-name=cc1)" nvcc python3 /usr/bin/python3 git; do
    t=$(command -v "$t") || continue
    for lib in $(ldd "$t" 2>/dev/null | awk '/=> \//{print $3}'); do
        # dpkg knows a file by the path its package gave (/lib or /usr/lib).
        r=$(readlink -f "$lib")
        for f in "$lib" "$r" "${r#/usr}" "/usr$r" "$(dirname "$lib")/$(basename "$r")"; do
            o=$(dpkg -S "$f" 2>/dev/null | head -n 1 | cut -d: -f1)
            [ -n "$o" ] && { keep="$keep$o "; break; }
        done
    done
done
hidden=0 kept=""
for pkg in $(cut -d' ' -f1 "$dir/packages.txt"); do
    dpkg-query -W "$pkg" >/dev/null 2>&1 || continue
    case $keep in *" $pkg "*) kept="$kept $pkg"; continue ;; esac
    for f in $(dpkg -L "$pkg" 2>/dev/null); do
        case $f in /usr/share/doc/* | /usr/share/man/* | /usr/share/lintian/*) continue ;; esac
        [ -f "$f" ] && [ ! -L "$f" ] && mount --bind /dev/null "$f" 2>/dev/null && hidden=$((hidden + 1))
    done
done
echo "hid $hidden files of the packages in $dir/packages.txt; left for the tools:$kept"
[ -s /usr/include/cmocka.h ] && fail "cmocka.h is still visible"

# TG_KIT_BUILD: a build folder to reuse (the CUDA build takes minutes).
build=${TG_KIT_BUILD:-$(mktemp -d)/build-kit}
out=$(bash "$here/scripts/gpu_check.sh" --deps "$dir" --arch "$sm" --build "$build" 2>&1)
code=$?
echo "$out"
[ $code -eq 77 ] || fail "gpu_check.sh exited $code, expected 77 (stopped: no GPU)"
echo "$out" | grep -q "^deps *ok" || fail "no 'deps ok'"
echo "$out" | grep -q "^build *ok" || fail "no 'build ok'"
echo "$out" | grep -q "^backend *STOP *no GPU on this machine" || fail "no STOP line for the first GPU step"

# The CLI resolves its libraries from DIR only.
. "$here/scripts/gpu_deps.sh"
gpu_deps_use "$dir" || fail "gpu_deps_use"
gpu_deps_run ldd "$build/tapegrad" >"$build/ldd.txt"
cat "$build/ldd.txt"
grep -q "not found" "$build/ldd.txt" && fail "a library is not found"
for lib in libhdf5_serial libmpi libopenblas libinih libcurl libgfortran; do
    line=$(grep "$lib" "$build/ldd.txt")
    [ -n "$line" ] || fail "$lib is not a dependency of tapegrad?"
    echo "$line" | grep -q "$dir/root/" || fail "$lib does not come from $dir: $line"
done
rm -f "$build/data.h5"
for s in train test; do
    gpu_deps_run "$build/tapegrad" convert npy --x "$TG_KIT_DATA/x_$s.npy" --y "$TG_KIT_DATA/y_$s.npy" \
        --out "$build/data.h5" --split $s >/dev/null || fail "convert $s"
done
gpu_deps_run "$build/tapegrad" train --data "$build/data.h5" --max-steps 5 --batch-size 32 --threads 1 \
    --quiet || fail "CPU training with DIR's libraries"
# Open MPI from DIR: a singleton MPI_Init (what the nccl step does), which
# then finds no GPU and skips.
gpu_deps_run "$build/tests/mpi_nccl" >"$build/nccl.txt" 2>&1
code=$?
cat "$build/nccl.txt"
[ $code -eq 77 ] || fail "mpi_nccl exited $code, expected 77 (no GPU)"
grep -q "NCCL init" "$build/nccl.txt" || fail "mpi_nccl: no NCCL init message"
echo "ok"
