# scripts/gpu_deps.sh: sourced by scripts/gpu_check.sh. The project's Debian
# dependencies as a folder that a bare GPU machine can build and run against
# without installing anything.
#
#   gpu_deps_prepare DIR   (here, on a Debian machine with apt and network)
#   gpu_deps_use DIR       (there: points the compiler, pkg-config, CMake
#                           and Open MPI at DIR/root)
#   gpu_deps_run CMD...    (runs one of the project's programs with DIR's
#                           libraries on the loader's path)
#
# DIR/root.tar.xz holds the unpacked .deb files (apt-get download +
# dpkg-deb -x; gpu_deps_use unpacks it into DIR/root),
# without docs, man pages, static libraries, Fortran/C++ bindings and the
# Open MPI plugins for fabrics a single GPU node does not use; DIR/packages.txt
# lists the packages and versions. The package set is the project's direct
# dependencies plus every package that owns a shared library one of their
# libraries or programs needs (the closure of DT_NEEDED), except the C/C++
# runtime that any machine with a compiler has (GPU_DEPS_BASE).

GPU_DEPS_ARCH=x86_64-linux-gnu
# The project's direct dependencies: headers, link names, pkg-config files,
# the MPI launcher. libopenblas-pthread-dev gives the OpenBLAS headers and
# openblas.pc (its library is not taken: the build links the OpenMP build).
GPU_DEPS_DIRECT=(
    libhdf5-dev libhdf5-103-1 libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common
    libopenblas0-openmp libopenblas-pthread-dev libopenblas-dev libcmocka-dev libcmocka0
    libinih-dev libinih1 libcjson-dev libcjson1 libssl-dev libssl3 zlib1g-dev zlib1g
    libdnnl-dev libdnnl2 pkgconf pkgconf-bin libpkgconf3
)
# Packages never taken: the other OpenBLAS build, and what the plugins left
# out below need.
GPU_DEPS_SKIP='^(libopenblas0-pthread|libopenblas0|libc6|libgcc-s1|libstdc\+\+6|libgomp1)$'
# Shared libraries assumed on the GPU machine (glibc, the compiler's runtime).
GPU_DEPS_BASE='^(libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|ld-linux-x86-64|libgcc_s|libstdc\+\+|libgomp|libmvec)\.so'
# Open MPI / PMIx plugins for fabrics and launchers a single node does not
# need; they pull in UCX, libfabric, verbs, PSM and SLURM/munge libraries.
GPU_DEPS_DROP_PLUGIN='libuc[pst]|libfabric|libibverbs|librdmacm|libpsm|libmunge|libcuda|libnl-|libefa|libhcoll|libxpmem|libknem|libpmi\.|libpmi2\.|libslurm'

gpu_deps_log() { echo "gpu_deps: $*" >&2; }

# The NEEDED sonames of an ELF file ("" when not ELF).
gpu_deps_needed() {
    readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

# Downloads packages (one apt-get call) and unpacks them into $root;
# records each as "name version" in $work/packages.txt.
gpu_deps_take() { # work root pkg...
    local work=$1 root=$2
    shift 2
    (cd "$work/debs" && apt-get download "$@" >/dev/null 2>"$work/apt.err") || {
        gpu_deps_log "apt-get download $* failed: $(cat "$work/apt.err")"
        return 1
    }
    local pkg deb
    for pkg in "$@"; do
        deb=$(ls -t "$work/debs/${pkg}_"*.deb | head -n 1)
        dpkg-deb -x "$deb" "$root" || return 1
        echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >>"$work/packages.txt"
    done
}

# Removes what neither the build nor the check needs.
gpu_deps_strip() { # root
    local root=$1 L=$1/usr/lib/$GPU_DEPS_ARCH
    rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" \
        "$root/usr/share/lintian" "$root/usr/share/locale" "$root/usr/share/bug" \
        "$root/usr/share/doc-base" "$root/usr/lib/$GPU_DEPS_ARCH/openmpi/lib/"*.mod \
        "$root/usr/share/java" "$root/usr/lib/$GPU_DEPS_ARCH/openmpi/lib/"*java* \
        "$root/etc/alternatives"
    find "$root" -name '*.a' -delete
    # Fortran and C++ bindings: the project is C.
    find "$root" \( \( -name '*fortran*' ! -name 'libgfortran*' \) -o -name '*mpifh*' -o -name '*usempi*' -o \
        -name 'libhdf5_*cpp*' -o -name 'libhdf5*_hl*' -o -name 'libmpi_cxx*' -o \
        -name 'libmpi_java*' -o -name 'libINIReader*' -o -name 'libcmockery*' -o \
        -name 'h5*' -path '*/bin/*' -o -name 'liblapack.so*' -o -name 'libblas.so*' \) \
        -prune -exec rm -rf {} +
    # Open MPI and PMIx plugins for other fabrics and launchers.
    local p
    for p in $(find "$L/openmpi/lib/openmpi3" "$L/pmix2/lib/pmix" -name '*.so' 2>/dev/null) \
        $(find "$L" -maxdepth 1 -name 'libmca_common_*.so*' -type f); do
        if gpu_deps_needed "$p" | grep -E -q "$GPU_DEPS_DROP_PLUGIN"; then
            rm -f "$p" "${p%.so}.la"
            case $p in */libmca_common_*) rm -f "${p%%.so*}.so"* ;; esac
        fi
    done
    find "$root" -name '*.la' -delete
    # Links whose target was not taken.
    find "$root" -xtype l -delete
}

# Where a soname lives on this machine (the loader's cache), "" if nowhere.
gpu_deps_where() {
    ldconfig -p | awk -v n="$1" '$1 == n && /x86-64/ {print $NF; exit}'
}

# The sonames needed inside $root and found in neither $root nor the base.
gpu_deps_missing() { # root
    local root=$1 f n
    find "$root" -type f \( -name '*.so*' -o -path '*/bin/*' \) | while read -r f; do
        gpu_deps_needed "$f"
    done | sort -u | while read -r n; do
        [ -z "$n" ] && continue
        echo "$n" | grep -E -q "$GPU_DEPS_BASE" && continue
        [ -n "$(find "$root" -name "$n" -print -quit)" ] && continue
        echo "$n"
    done
}

gpu_deps_prepare() { # DIR
    local dir=$1 limit_mib=${GPU_DEPS_LIMIT_MIB:-60}
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
        gpu_deps_log "--prepare needs apt-get and dpkg-deb (a Debian machine)"
        return 1
    }
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd)
    local work root=$dir/root
    work=$(mktemp -d) || return 1
    mkdir -p "$work/debs"
    rm -rf "$root" "$dir/packages.txt"
    mkdir -p "$root"
    : >"$work/packages.txt"
    gpu_deps_take "$work" "$root" "${GPU_DEPS_DIRECT[@]}" || { rm -rf "$work"; return 1; }
    gpu_deps_strip "$root"
    # The closure: the owner of every missing soname, until none is missing.
    local round n path owner new
    for round in 1 2 3 4 5 6 7 8; do
        new=()
        for n in $(gpu_deps_missing "$root"); do
            path=$(gpu_deps_where "$n")
            if [ -z "$path" ]; then
                gpu_deps_log "no package on this machine provides $n"
                continue
            fi
            owner=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n 1 | cut -d: -f1)
            [ -z "$owner" ] && owner=$(dpkg -S "$path" 2>/dev/null | head -n 1 | cut -d: -f1)
            if [ -z "$owner" ] || echo "$owner" | grep -E -q "$GPU_DEPS_SKIP"; then
                continue
            fi
            grep -q "^$owner " "$work/packages.txt" && continue
            case " ${new[*]} " in *" $owner "*) continue ;; esac
            gpu_deps_log "round $round: $n -> $owner"
            new+=("$owner")
        done
        [ ${#new[@]} -eq 0 ] && break
        gpu_deps_take "$work" "$root" "${new[@]}" || { rm -rf "$work"; return 1; }
        gpu_deps_strip "$root"
    done
    gpu_deps_alternatives "$root"
    sort -u "$work/packages.txt" >"$dir/packages.txt"
    rm -rf "$work"
    local left
    left=$(gpu_deps_missing "$root" | paste -sd' ')
    [ -n "$left" ] && gpu_deps_log "still missing (expected on the GPU machine): $left"
    # Carried as one xz archive (a quarter of the size: OpenBLAS alone is
    # 35 MiB unpacked); gpu_deps_use unpacks it into DIR/root.
    gpu_deps_log "packing $dir/root.tar.xz"
    tar -C "$root" -cf - . | xz -T0 -6 >"$dir/root.tar.xz" || return 1
    rm -rf "$root"
    local kib
    kib=$(du -sk "$dir" | cut -f1)
    gpu_deps_log "$(wc -l <"$dir/packages.txt") packages in $dir: $((kib / 1024)) MiB"
    if [ $((kib / 1024)) -ge "$limit_mib" ]; then
        gpu_deps_log "$dir is $((kib / 1024)) MiB, over the limit of $limit_mib MiB"
        return 1
    fi
}

# Debian picks these through update-alternatives, which dpkg-deb -x does
# not run: the OpenMP OpenBLAS, the pthread build's .pc (the headers are the
# same), the MPI launcher.
gpu_deps_alternatives() { # root
    local L=$1/usr/lib/$GPU_DEPS_ARCH
    ln -sfn openblas-openmp/libopenblas.so.0 "$L/libopenblas.so.0"
    ln -sfn openblas-openmp/libopenblas.so.0 "$L/libopenblas.so"
    ln -sfn ../openblas-pthread/pkgconfig/openblas.pc "$L/pkgconfig/openblas.pc"
    ln -sfn orterun "$1/usr/bin/mpiexec"
}

# Exports what makes the build and the programs use DIR/root: compiler
# search paths, pkg-config, Open MPI's relocation; sets GPU_DEPS_LD (the
# loader's path for the project's programs, see gpu_deps_run) and
# GPU_DEPS_CMAKE_ARGS (what FindMPI/FindHDF5 and the OpenBLAS choice would
# otherwise look for under /usr).
gpu_deps_use() { # DIR
    local root
    if [ ! -d "$1/root" ]; then
        [ -f "$1/root.tar.xz" ] || {
            gpu_deps_log "$1/root.tar.xz does not exist: run scripts/gpu_check.sh --prepare $1 here first"
            return 1
        }
        mkdir -p "$1/root.tmp" || return 1
        if command -v xz >/dev/null; then
            xz -dc "$1/root.tar.xz" | tar -C "$1/root.tmp" -xf - || return 1
        else
            python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
                "$1/root.tar.xz" "$1/root.tmp" || return 1
        fi
        mv "$1/root.tmp" "$1/root" || return 1
    fi
    root=$(cd "$1/root" && pwd) || return 1
    gpu_deps_alternatives "$root"
    local L=$root/usr/lib/$GPU_DEPS_ARCH
    export CPATH="$root/usr/include:$root/usr/include/hdf5/serial:$root/usr/include/$GPU_DEPS_ARCH${CPATH:+:$CPATH}"
    # Some Debian 12 packages (zlib1g, libudev1, ...) still install into /lib.
    local R=$root/lib/$GPU_DEPS_ARCH
    export LIBRARY_PATH="$L:$R:$L/openblas-openmp${LIBRARY_PATH:+:$LIBRARY_PATH}"
    # The loader's path for the project's own programs only (gpu_deps_run):
    # the machine's tools (cmake, the compilers, python3 with PyTorch) keep
    # their own libraries, which may be newer than Debian 12's.
    GPU_DEPS_LD="$L:$R:$L/openblas-openmp:$L/openmpi/lib"
    # pkg-config from DIR, run with DIR's libpkgconf.
    mkdir -p "$root/tg-bin"
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$GPU_DEPS_LD" \
        "$root/usr/bin/pkgconf" >"$root/tg-bin/pkg-config"
    chmod +x "$root/tg-bin/pkg-config"
    export PKG_CONFIG_LIBDIR="$L/pkgconfig:$root/usr/share/pkgconfig:$L/openmpi/lib/pkgconfig"
    export PKG_CONFIG_PATH="$PKG_CONFIG_LIBDIR"
    export PKG_CONFIG_SYSROOT_DIR="$root"
    export PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
    # Open MPI and PMIx find their plugins and help files through these
    # (their installdirs "env" components); Debian's directories are not
    # all below the prefix, so each is named.
    export OPAL_PREFIX="$root/usr" OPAL_EXEC_PREFIX="$root/usr" OPAL_BINDIR="$root/usr/bin"
    export OPAL_LIBDIR="$L/openmpi/lib" OPAL_PKGLIBDIR="$L/openmpi/lib/openmpi3"
    export OPAL_DATAROOTDIR="$root/usr/share" OPAL_DATADIR="$root/usr/share"
    export OPAL_PKGDATADIR="$root/usr/share/openmpi" OPAL_SYSCONFDIR="$root/etc/openmpi"
    export OPAL_INCLUDEDIR="$L/openmpi/include"
    export PMIX_INSTALL_PREFIX="$root/usr" PMIX_PREFIX="$root/usr"
    export PMIX_LIBDIR="$L/pmix2/lib" PMIX_PKGLIBDIR="$L/pmix2/lib/pmix"
    export PMIX_DATADIR="$L/pmix2/share" PMIX_PKGDATADIR="$L/pmix2/share/pmix"
    export PMIX_MCA_mca_base_component_path="$L/pmix2/lib/pmix"
    export OMPI_MCA_mca_base_component_show_load_errors=0
    GPU_DEPS_CMAKE_ARGS=(
        -DPKG_CONFIG_EXECUTABLE="$root/tg-bin/pkg-config"
        # The linker follows the DT_NEEDED entries of DIR's libraries here.
        -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$GPU_DEPS_LD"
        -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath-link,$GPU_DEPS_LD"
        -DMPI_SKIP_COMPILER_WRAPPER=ON
        -DMPI_C_HEADER_DIR="$L/openmpi/include" -DMPI_C_LIB_NAMES=mpi
        -DMPI_mpi_LIBRARY="$L/openmpi/lib/libmpi.so" -DMPIEXEC_EXECUTABLE="$root/usr/bin/orterun"
        -DHDF5_C_COMPILER_EXECUTABLE=HDF5_C_COMPILER_EXECUTABLE-NOTFOUND
        -DHDF5_ROOT="$L/hdf5/serial" -DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON
        -DTG_OPENBLAS_OPENMP="$L/openblas-openmp/libopenblas.so.0"
        -DCMAKE_PREFIX_PATH="$root/usr"
    )
}

# Runs one of the project's programs with DIR's libraries on the loader's path.
gpu_deps_run() {
    LD_LIBRARY_PATH="$GPU_DEPS_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"
}
