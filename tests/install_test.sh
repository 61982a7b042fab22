#!/usr/bin/env bash
# Installs the build in $1 into a scratch prefix, builds examples/ against the
# installed package twice (CMake's find_package, and pkg-config), and runs
# custom_model alone and on 2 MPI ranks and pytorch_style (which must learn
# and print its tensors). Every step must succeed.
set -euo pipefail
build=$1
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d /tmp/tg_install_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

echo "== cmake --install $build --prefix $tmp/prefix"
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
test -x "$tmp/prefix/bin/tapegrad"
"$tmp/prefix/bin/tapegrad" --version

echo "== shipped model files: installed, and compiled in (no file needed, any folder)"
for m in mlp cnn cnn-bn resnet20 resnet18; do
    cmp "$src/models/$m.ini" "$tmp/prefix/share/tapegrad/models/$m.ini"
done
(cd / && "$tmp/prefix/bin/tapegrad" inspect resnet20 --input-shape 3,32,32) | grep -q "Total params: 272,474"

echo "== find_package(tapegrad)"
cmake -S "$src/examples" -B "$tmp/ex" -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/cfg.log"
cmake --build "$tmp/ex" >"$tmp/build.log"
(cd "$tmp" && "$tmp/ex/custom_model" --steps 300 --ckpt-dir "$tmp/ck1")
test -s "$tmp/ck1/latest"
"$tmp/ex/pytorch_style" --steps 300 | tee "$tmp/pystyle.log"
grep -q "held-out accuracy" "$tmp/pystyle.log"
grep -q "^tensor(\[" "$tmp/pystyle.log"

echo "== pkg-config --cflags --libs tapegrad"
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
flags=$(pkg-config --cflags --libs tapegrad)
echo "pkg-config: $flags"
# shellcheck disable=SC2086
cc -std=c11 -Wall -Wextra -Werror "$src/examples/custom_model.c" -o "$tmp/custom_model_pc" $flags -lm
mpi=(mpiexec -n 2 --oversubscribe)
[ "$(id -u)" -ne 0 ] || mpi+=(--allow-run-as-root)
cc -std=c11 -Wall -Wextra -Werror "$src/examples/pytorch_style.c" -o "$tmp/pytorch_style_pc" $flags -lm
"$tmp/pytorch_style_pc" --steps 300 >/dev/null
"${mpi[@]}" "$tmp/custom_model_pc" --steps 300 --ckpt-dir "$tmp/ck2"
test -s "$tmp/ck2/latest"
echo "install test: ok"
