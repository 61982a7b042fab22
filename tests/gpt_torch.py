#!/usr/bin/env python3
"""nanoGPT's GPT in PyTorch with tapegrad's parameter names, and a check of an export.

    /usr/bin/python3 tests/gpt_torch.py M.safetensors TOKENS.npy --n-layer L --n-head H

loads the safetensors export of a tapegrad gpt checkpoint (`tapegrad export
--ckpt F --format safetensors`) into nanoGPT's model (model.py: explicit
causal mask, exact GELU, pre-LN blocks, lm_head tied to wte) built at the
sizes the tensors give, with load_state_dict(strict=True) after lm_head.weight
is pointed at wte.weight (tapegrad stores the tied weight once, as
wte.weight); runs the tokens (B, T) of TOKENS.npy and prints one JSON line:
the logits (flattened) in float64. The modules sit at the top level (`wte`,
`h.0.attn.c_attn`, `ln_f`), where nanoGPT nests them under `transformer.`.
tests/gen_gpt_fixtures.py uses the same classes. Exit 2 on a file it cannot
read.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, e, h, block):
        super().__init__()
        self.h, self.e = h, e
        self.c_attn = nn.Linear(e, 3 * e)
        self.c_proj = nn.Linear(e, e)
        self.register_buffer("mask", torch.tril(torch.ones(block, block)).view(1, 1, block, block),
                             persistent=False)

    def forward(self, x):
        b, t, e = x.size()
        q, k, v = self.c_attn(x).split(self.e, dim=2)
        q, k, v = (z.view(b, t, self.h, e // self.h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, e))


class MLP(nn.Module):
    def __init__(self, e):
        super().__init__()
        self.c_fc = nn.Linear(e, 4 * e)
        self.c_proj = nn.Linear(4 * e, e)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, e, h, block):
        super().__init__()
        self.ln_1 = nn.LayerNorm(e)
        self.attn = Attention(e, h, block)
        self.ln_2 = nn.LayerNorm(e)
        self.mlp = MLP(e)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, block, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block, n_embd)
        self.h = nn.ModuleList([Block(n_embd, n_head, block) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for b in self.h:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from export_check import load_safetensors

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("tokens")
    ap.add_argument("--n-layer", type=int, required=True)
    ap.add_argument("--n-head", type=int, required=True)
    a = ap.parse_args()
    try:
        _, t = load_safetensors(a.file)
        x = np.load(a.tokens)
    except (OSError, ValueError) as e:
        print(f"gpt_torch.py: {e}", file=sys.stderr)
        sys.exit(2)
    vocab, e = t["wte.weight"].shape
    m = GPT(a.n_layer, a.n_head, e, t["wpe.weight"].shape[0], vocab).double()
    sd = {k: torch.from_numpy(v).double() for k, v in t.items()}
    sd["lm_head.weight"] = sd["wte.weight"]
    m.load_state_dict(sd, strict=True)
    m.eval()
    with torch.no_grad():
        y = m(torch.from_numpy(x.astype(np.int64)))
    print(json.dumps({"logits": y.flatten().tolist()}))


if __name__ == "__main__":
    main()
