#!/usr/bin/env bash
# Language-model quality on a small generated text: the text is sentences
# of a little grammar (subjects, verbs, objects, a few fixed phrases), so
# the next byte depends on more than the byte before it. A bigram model
# (one embedding of 256 x 256: the logits of the next byte given this one)
# and a small gpt train the same number of steps on the same windows; the
# gpt's validation loss must be below the bigram's, and text sampled from
# the gpt (temperature 0.8) must look like the corpus: its byte frequencies within a total
# variation distance of 0.15 of the corpus' (uniform bytes are about 0.9
# away), and at least 60% of its words words of the grammar.
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

"$cli" convert text --in "$tmp/corpus.txt" --out "$tmp/lm.h5" --val-fraction 0.1 >/dev/null
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
