#!/usr/bin/env bash
# Model files -> PyTorch: trains shipped and written model files briefly on
# synthetic 3x16x16 images (resnet20, and a file with every layer type that
# takes images: conv2d with stride, padding, dilation and groups, batch norm, both
# poolings, a projecting and a plain add, concat, layernorm, dropout, every
# activation), scores each checkpoint with `tapegrad eval` (which rebuilds
# the model from the checkpoint alone), exports it as safetensors and builds
# the module the same model file describes in PyTorch
# (tests/modelfile_torch.py, its own parser), loading the weights with
# strict=True. Accuracies must agree to 1 sample, losses to 1e-4.
# Exits 77 (skipped) where Debian's python3-torch is absent.
set -euo pipefail
cli=$1
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
if ! "$py" -c 'import torch, numpy' 2>/dev/null; then
    echo "PyTorch is not importable by $py (Debian: python3-torch): skipped"
    exit 77
fi
tmp=$(mktemp -d /tmp/tg_modelfile_torch_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$py" - "$tmp" <<'PY'
import sys, numpy as np
d = sys.argv[1]
r = np.random.default_rng(0)
for split, n in (("train", 256), ("test", 128)):
    y = np.arange(n) % 4
    x = r.integers(0, 90, (n, 3, 16, 16)) + (np.arange(16)[None, None, None, :] % 4 == y[:, None, None, None]) * 120
    np.save(f"{d}/x_{split}.npy", x.astype(np.uint8))
    np.save(f"{d}/y_{split}.npy", y.astype(np.int64))
PY
for s in train test; do
    "$cli" convert npy --x "$tmp/x_$s.npy" --y "$tmp/y_$s.npy" --out "$tmp/data.h5" --split $s >/dev/null
done
attr() { "$cli" inspect "$tmp/data.h5" | awk -v a="$1" '/split test/{t=1} t && $0 ~ "attribute "a" "{print $4; exit}'; }
scale=$(attr scale) mean=$(attr mean) std=$(attr std)
cat >"$tmp/graph.ini" <<'INI'
[input]
name = img
[conv2d]
name = stem
out = 8
kernel = 3
padding = 2
dilation = 2
[batchnorm2d]
name = stem_bn
[silu]
[maxpool]
kernel = 3
stride = 2
padding = 1
[conv2d]
name = block.conv
out = 8
kernel = 3
padding = 1
groups = 4
bias = false
[batchnorm]
name = block.bn
[gelu]
[add]
name = block.sum
inputs = maxpool1
[conv2d]
name = side
input = img
out = 4
kernel = 1
stride = 2
[concat]
name = cat
inputs = block.sum, side
[add]
name = down
inputs = cat, img
project = conv-bn
[avgpool]
kernel = 2
padding = 1
[tanh]
[flatten]
[layernorm]
name = ln
[dropout]
p = 0.2
[linear]
name = fc1
out = 16
[sigmoid]
[linear]
name = head
out = classes
INI
check() {
    local model=$1 file=$2 ck="$tmp/ck-$1"
    "$cli" train --data "$tmp/data.h5" --model "$file" --max-steps 6 --batch-size 32 --lr 0.005 \
        --ckpt-dir "$ck" --threads 2 --quiet >/dev/null
    local c="$ck/$(cat "$ck/latest")" ev acc loss js
    ev=$("$cli" eval --ckpt "$c" --data "$tmp/data.h5" --threads 2)
    acc=$(echo "$ev" | sed -n 's/.*accuracy \([0-9.]*\).*/\1/p')
    loss=$(echo "$ev" | sed -n 's/.*loss \([0-9.]*\) .*/\1/p')
    "$cli" export --ckpt "$c" --out "$tmp/$model.safetensors" >/dev/null
    local text="$file"
    [ -f "$file" ] || text="$src/../models/$file.ini"
    js=$("$py" "$src/modelfile_torch.py" "$text" "$tmp/$model.safetensors" "$tmp/x_test.npy" \
        "$tmp/y_test.npy" --scale "$scale" --mean "$mean" --std "$std")
    echo "$model: tapegrad eval accuracy $acc loss $loss; PyTorch $js"
    "$py" - "$acc" "$loss" "$js" <<'PY'
import json, sys
acc, loss, js = float(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
if abs(acc - js["test_acc"]) > 1.0 / 128 + 1e-9 or abs(loss - js["test_loss"]) > 1e-4 * max(1.0, loss):
    sys.exit(f"mismatch: tapegrad {acc} / {loss}, PyTorch {js['test_acc']} / {js['test_loss']}")
PY
}
check resnet20 resnet20
check graph "$tmp/graph.ini"
echo "model files to PyTorch: ok"
