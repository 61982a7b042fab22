#!/usr/bin/env python3
"""The PyTorch side of the gpt training comparison (see compare_gpt.py).

    torch_gpt.py --corpus FILE... [--batch-size 32] [--block 128] [--threads 2]
        [--steps 10] [--warmup 2] [--attn sdpa|math] [--n-layer 4] [--n-head 4]
        [--n-embd 128]

Trains tests/gpt_torch.py's GPT (nanoGPT's model, the twin of tapegrad's
gpt, imported so that the two stay one definition) on the bytes of the
--corpus files concatenated in the order given (byte tokens, vocabulary 256:
what `tapegrad convert text --val-fraction 0` makes of the same files), with
tapegrad's gpt defaults: GPT-2's initialisation (weights N(0, 0.02), the
residual projections N(0, 0.02 / sqrt(2 n_layer)), biases 0), AdamW lr 1e-3,
betas (0.9, 0.95), weight decay 0.1 on the matrices only (the Linear weights;
not biases, layer norms, or the embeddings, tied head included, as tapegrad's
tg_params.no_decay), gradients clipped at norm 1. Sample i of step k is the
window starting at token (k*B + i) * 2654435761 mod (ntok - T), as in
bench_gpt.c. Prints one JSON line (cpu_ms_per_step: the process's user and
system CPU time over the timed steps, all threads, per step):

    {"framework": "torch", "model": "gpt", "batch": 32, "block": 128,
     "threads": 2, "steps": 10, "tokens_per_s": 12345.6, "loss": 3.2,
     "cpu_ms_per_step": 600.0, "peak_rss_mb": 300.0, "torch_version": "2.x", "blas": "mkl", "attn": "sdpa"}

--attn sdpa (the default) runs the attention through
F.scaled_dot_product_attention(is_causal=True), as nanoGPT does on a
PyTorch that has it (2.0 and later; tapegrad's gpt uses its fused attention
op); math keeps gpt_torch.py's explicit mask and softmax, the only way on
1.13, which falls back to it (the JSON says which ran).
"""
import argparse
import json
import math
import os
import re
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gpt_torch  # noqa: E402  (tests/gpt_torch.py)


def sdpa_forward(self, x):
    """gpt_torch.Attention.forward with the fused attention (nanoGPT's flash path)."""
    b, t, e = x.size()
    q, k, v = self.c_attn(x).split(self.e, dim=2)
    q, k, v = (z.view(b, t, self.h, e // self.h).transpose(1, 2) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, e))


def init_gpt2(model, n_layer):
    """nanoGPT's _init_weights and its scaled residual projections."""
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            torch.nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))
        elif name.endswith(".bias") and "ln_" not in name:
            torch.nn.init.zeros_(p)
        elif name in ("wte.weight", "wpe.weight") or (name.endswith(".weight") and p.dim() == 2):
            torch.nn.init.normal_(p, 0.0, 0.02)


def blas_info():
    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return m.group(1) if m else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", nargs="+", required=True)
    ap.add_argument("--model", choices=["gpt"], default="gpt")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attn", choices=["sdpa", "math"], default="sdpa")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="bf16: the forward pass and the loss under torch.autocast('cpu', "
                         "dtype=torch.bfloat16), as bench_gpt --precision bf16")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    data = b"".join(open(p, "rb").read() for p in a.corpus)
    tokens = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))
    nwin = len(tokens) - a.block
    if nwin < 1:
        sys.exit("torch_gpt.py: the corpus has %d tokens, fewer than --block + 1" % len(tokens))
    attn = a.attn if hasattr(F, "scaled_dot_product_attention") else "math"
    if attn == "sdpa":
        gpt_torch.Attention.forward = sdpa_forward
    model = gpt_torch.GPT(a.n_layer, a.n_head, a.n_embd, a.block, 256)
    init_gpt2(model, a.n_layer)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n not in
             ("wte.weight", "wpe.weight")]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n not in
             ("wte.weight", "wpe.weight"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95))
    params = list(model.parameters())
    offs = torch.arange(a.block + 1)

    def step(k):
        starts = torch.tensor([(k * a.batch_size + i) * 2654435761 % nwin
                               for i in range(a.batch_size)])
        w = tokens[starts[:, None] + offs]
        xb, yb = w[:, :-1], w[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            logits = model(xb)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), yb.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        return loss.item()

    for k in range(a.warmup):
        step(k)
    t0, c0 = time.perf_counter(), time.process_time()
    loss = 0.0
    for k in range(a.warmup, a.warmup + a.steps):
        loss = step(k)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "framework": "torch", "model": "gpt", "batch": a.batch_size, "block": a.block,
        "threads": a.threads, "steps": a.steps,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": a.steps * a.batch_size * a.block / dt, "loss": loss,
        "cpu_ms_per_step": 1e3 * cpu / a.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "torch_version": torch.__version__, "blas": blas_info(), "attn": attn,
        "precision": a.precision,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
