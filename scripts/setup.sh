#!/usr/bin/env bash
# Installs the Debian packages tapegrad needs to build and run its tests.
#
#   scripts/setup.sh              build + test dependencies
#   scripts/setup.sh --with-torch also python3-torch (only needed to regenerate
#                                 test fixtures and to run the comparison benchmarks)
#
# Idempotent and non-interactive: when every package is already installed it
# touches nothing, so that reruns (and CI on a warm machine) cost a second.
set -euo pipefail

usage() {
    echo "usage: $0 [--with-torch]" >&2
}

packages=(
    build-essential cmake pkg-config
    libopenblas-dev libopenblas0-openmp libopenmpi-dev openmpi-bin
    libhdf5-dev hdf5-tools libcmocka-dev zlib1g-dev libdnnl-dev
    dataset-fashion-mnist gnuplot-nox libinih-dev libcjson-dev libssl-dev
    slurmctld slurmd slurm-client munge
    python3 python3-numpy
    clang libclang-rt-14-dev libomp-dev iproute2
)

for arg in "$@"; do
    case "$arg" in
    --with-torch) packages+=(python3-torch) ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "setup.sh: unknown option '$arg'" >&2
        usage
        exit 2
        ;;
    esac
done

# dpkg-query reports "install ok installed" only for fully configured
# packages; anything else (absent, half-installed, removed) is missing.
missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup.sh: all ${#packages[@]} packages already installed; nothing to do"
    exit 0
fi

# Root needs no sudo (containers and CI often have none); anyone else does.
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        echo "setup.sh: not root and sudo is not available; install as root: ${missing[*]}" >&2
        exit 1
    fi
fi

echo "setup.sh: installing: ${missing[*]}"
echo "setup.sh: apt-get update"
"${sudo_cmd[@]}" apt-get update
echo "setup.sh: apt-get install"
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
echo "setup.sh: done"
