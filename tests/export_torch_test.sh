#!/usr/bin/env bash
# tapegrad export -> PyTorch: trains mlp and cnn-bn briefly, scores the
# checkpoint with `tapegrad eval`, exports it as safetensors, and loads the
# file into the same network built in PyTorch (tests/export_check.py, which
# parses it with numpy alone). The two accuracies must agree to 2 test samples
# (float summation order can move a borderline sample) and the losses to 1e-4.
# Exits 77 (skipped) where Debian's python3-torch or Fashion-MNIST is absent.
set -euo pipefail
cli=$1
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
fm=/usr/share/datasets/fashion-mnist
if ! "$py" -c 'import torch, numpy' 2>/dev/null; then
    echo "PyTorch is not importable by $py (Debian: python3-torch; scripts/setup.sh --with-torch): skipped"
    exit 77
fi
[ -f "$fm/train-images-idx3-ubyte.gz" ] || { echo "no Fashion-MNIST in $fm: skipped"; exit 77; }
tmp=$(mktemp -d /tmp/tg_export_torch_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
for s in train:train t10k:test; do
    "$cli" convert idx --images "$fm/${s%%:*}-images-idx3-ubyte.gz" \
        --labels "$fm/${s%%:*}-labels-idx1-ubyte.gz" --out "$tmp/data.h5" --split "${s##*:}" >/dev/null
done
# The test split carries the training split's normalisation.
mean=$("$cli" inspect "$tmp/data.h5" | awk '/split test/{t=1} t && /attribute mean/{print $4; exit}')
std=$("$cli" inspect "$tmp/data.h5" | awk '/split test/{t=1} t && /attribute std/{print $4; exit}')

check() {
    local model=$1 steps=$2 ck="$tmp/ck-$1"
    "$cli" train --data "$tmp/data.h5" --model "$model" --max-steps "$steps" --batch-size 64 \
        --eval-batch-size 500 --ckpt-dir "$ck" --threads 2 --quiet >/dev/null
    local file="$ck/$(cat "$ck/latest")"
    local ev
    ev=$("$cli" eval --ckpt "$file" --data "$tmp/data.h5" --threads 2)
    local acc loss
    acc=$(echo "$ev" | sed -n 's/.*accuracy \([0-9.]*\).*/\1/p')
    loss=$(echo "$ev" | sed -n 's/.*loss \([0-9.]*\) .*/\1/p')
    "$cli" export --ckpt "$file" --format safetensors --out "$tmp/$model.safetensors" >/dev/null
    local js
    js=$("$py" "$src/export_check.py" "$tmp/$model.safetensors" --model "$model" \
        --mean "$mean" --std "$std")
    echo "$model: tapegrad eval accuracy $acc loss $loss; PyTorch $js"
    "$py" - "$acc" "$loss" "$js" <<'PY'
import json, sys
acc, loss, js = float(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
if abs(acc - js["test_acc"]) > 2e-4 or abs(loss - js["test_loss"]) > 1e-4 * max(1.0, loss):
    sys.exit(f"mismatch: tapegrad {acc} / {loss}, PyTorch {js['test_acc']} / {js['test_loss']}")
PY
}
check mlp 100
check cnn-bn 20
echo "export to PyTorch: ok"
