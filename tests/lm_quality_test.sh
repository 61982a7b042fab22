#!/usr/bin/env bash
# Language-model quality on a small generated text: the text is sentences
# of a little grammar (subjects, verbs, objects, a few fixed phrases), so
# the next byte depends on more than the byte before it. A bigram model
# (one embedding of 256 x 256: the logits of the next byte given this one)
# and a small gpt train the same number of steps on the same windows; the
# gpt's validation loss must be below the bigram's, and text sampled from
# the gpt (temperature 0.8) must look like the corpus: its byte frequencies within a total
# variation distance of 0.15 of the corpus' (uniform bytes are about 0.9
# away), and at least 60% of its words words of the grammar. Then the gpt's
# checkpoint is exported as safetensors and loaded into nanoGPT's model in
# PyTorch (tests/gpt_torch.py, when Debian's python3-torch is there): its
# loss over the validation windows `tapegrad eval` reads must equal eval's
# within 1e-4 relative.
# Prints both losses, the distance and the share of words.
set -euo pipefail
cli=$1
py=$(command -v python3)
tmp=$(mktemp -d /tmp/tg_lm_quality_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

"$py" - "$tmp/corpus.txt" <<'PY'
import random, sys
r = random.Random(7)
subj = ["the old sailor", "a small dog", "my neighbour", "the teacher", "every child",
        "the quiet river", "a tired farmer", "the red fox"]
verb = ["watched", "followed", "painted", "remembered", "carried", "found", "greeted"]
obj = ["the morning light", "a wooden boat", "the long road", "an empty house",
       "the green hills", "a letter from home", "the evening bells"]
tail = ["", " again", " before dawn", " with great care", " in the rain"]
out = []
while sum(map(len, out)) < 300_000:
    out.append(f"{r.choice(subj)} {r.choice(verb)} {r.choice(obj)}{r.choice(tail)}.\n")
open(sys.argv[1], "w").write("".join(out))
PY

"$cli" convert text --in "$tmp/corpus.txt" --out "$tmp/lm.h5" --val-fraction 0.1 >"$tmp/convert.out"
nval=$(sed -n "s/.*split 'val': \([0-9]*\) tokens.*/\1/p" "$tmp/convert.out")
printf '[input]\ndtype = i64\n[embedding]\nnum = classes\ndim = 256\n' >"$tmp/bigram.ini"
common=(--data "$tmp/lm.h5" --block-size 32 --batch-size 32 --max-steps 300
        --steps-per-epoch 300 --threads 2 --seed 3 --quiet)
"$cli" train --model "$tmp/bigram.ini" "${common[@]}" --lr 0.05 --ckpt-dir "$tmp/bigram" \
    >"$tmp/bigram.out"
"$cli" train --model gpt --n-layer 2 --n-head 2 --n-embd 64 "${common[@]}" --lr 0.003 \
    --warmup 30 --ckpt-dir "$tmp/gpt" >"$tmp/gpt.out"
loss() { sed -n 's/^test loss: \([0-9.]*\).*/\1/p' "$1"; }
lb=$(loss "$tmp/bigram.out") lg=$(loss "$tmp/gpt.out")
[ -n "$lb" ] && [ -n "$lg" ] || { cat "$tmp/bigram.out" "$tmp/gpt.out"; exit 1; }
"$cli" sample --ckpt "$tmp/gpt/$(cat "$tmp/gpt/latest")" --prompt "the " --tokens 600 --temperature 0.8 \
    --seed 1 --threads 2 >"$tmp/sample.txt" 2>"$tmp/sample.err"
"$py" - "$tmp/corpus.txt" "$tmp/sample.txt" "$lb" "$lg" <<'PY'
import collections, sys
corpus, sample = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
lb, lg = float(sys.argv[3]), float(sys.argv[4])
def freq(b):
    c = collections.Counter(b)
    return {k: v / len(b) for k, v in c.items()}
fc, fs = freq(corpus), freq(sample)
tv = 0.5 * sum(abs(fc.get(k, 0) - fs.get(k, 0)) for k in set(fc) | set(fs))
vocab = set(corpus.replace(b".", b" ").split())
words = sample.replace(b".", b" ").split()
share = sum(w in vocab for w in words) / max(1, len(words))
print(f"validation loss: bigram {lb:.4f}, gpt {lg:.4f}; sample: byte-frequency distance "
      f"{tv:.3f}, {100 * share:.0f}% of {len(words)} words from the corpus")
print("sample:", sample[:200].decode("utf-8", "replace").replace("\n", " | "))
bad = []
if not lg < lb:
    bad.append("the gpt's validation loss is not below the bigram's")
if not tv < 0.15:
    bad.append("the sample's byte frequencies are far from the corpus'")
if not (share >= 0.6 and len(words) >= 50):
    bad.append("the sample's words are not the corpus' words")
if bad:
    sys.exit("lm quality: " + "; ".join(bad))
PY

# The trained gpt in PyTorch: the same validation loss as tapegrad's eval.
ck="$tmp/gpt/$(cat "$tmp/gpt/latest")"
ev=$("$cli" eval --ckpt "$ck" --threads 2)
le=$(echo "$ev" | sed -n 's/.* loss \([0-9.]*\) .*/\1/p')
"$cli" export --ckpt "$ck" --out "$tmp/gpt.safetensors" >/dev/null
if ! /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
    echo "PyTorch is not importable by /usr/bin/python3 (Debian: python3-torch): export check skipped"
    exit 0
fi
/usr/bin/python3 - "$tmp/corpus.txt" "$nval" "$tmp/gpt.safetensors" "$le" \
    "$(dirname "${BASH_SOURCE[0]}")" <<'PY'
import sys
import numpy as np
import torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[5])
from export_check import load_safetensors
from gpt_torch import GPT
corpus, nval, le = open(sys.argv[1], "rb").read(), int(sys.argv[2]), float(sys.argv[4])
_, t = load_safetensors(sys.argv[3])
vocab, e = t["wte.weight"].shape
block = t["wpe.weight"].shape[0]
m = GPT(2, 2, e, block, vocab).double()
sd = {k: torch.from_numpy(v).double() for k, v in t.items()}
sd["lm_head.weight"] = sd["wte.weight"]
m.load_state_dict(sd, strict=True)
m.eval()
val = np.frombuffer(corpus[-nval:], dtype=np.uint8).astype(np.int64)
n = (len(val) - 1) // block  # eval's windows: starts 0, T, 2T, ...
x = torch.from_numpy(np.stack([val[i * block:i * block + block] for i in range(n)]))
y = torch.from_numpy(np.stack([val[i * block + 1:i * block + block + 1] for i in range(n)]))
with torch.no_grad():
    lt = F.cross_entropy(m(x).reshape(-1, vocab), y.reshape(-1)).item()
print(f"validation loss of the exported gpt: tapegrad eval {le:.6f}, PyTorch {lt:.6f} "
      f"({n} windows of {block})")
if not abs(lt - le) <= 1e-4 * le:
    sys.exit("lm quality: PyTorch's loss of the export differs from tapegrad's eval")
PY
