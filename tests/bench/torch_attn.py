#!/usr/bin/env python3
"""The PyTorch side of tests/bench/compare_attn.py: one attention
configuration, forward + backward, through torch.nn.functional.
scaled_dot_product_attention (needs torch >= 2.0), as tests/bench/bench_attn
does through tapegrad's ops.

    python torch_attn.py --t T [--b 4] [--h 4] [--d 32] [--causal 1]
        [--threads N] [--steps 5] [--warmup 1] [--composed] [--precision f32|bf16]

A step is q, k, v (B, H, T, D) f32 leaves -> attention -> backward with a
fixed seed gradient on the CPU. --composed times the same math from matmul,
masked_fill and softmax instead. --precision bf16 runs the forward under
torch.autocast("cpu", dtype=torch.bfloat16) (PyTorch's autocast runs SDPA in
bf16), as bench_attn --precision bf16 runs tapegrad's. Prints one JSON line: the median and minimum
step time in ms, the RSS after the inputs are made and the peak RSS (kB).
"""
import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def rss_now_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main():
    ap = argparse.ArgumentParser()
    for k, v in [("t", None), ("b", 4), ("h", 4), ("d", 32), ("causal", 1), ("threads", 0),
                 ("steps", 5), ("warmup", 1)]:
        ap.add_argument("--" + k, type=int, default=v, required=v is None)
    ap.add_argument("--composed", action="store_true")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    a = ap.parse_args()
    if not a.composed and not hasattr(F, "scaled_dot_product_attention"):
        sys.exit("torch_attn.py: torch %s has no scaled_dot_product_attention (needs >= 2.0)"
                 % torch.__version__)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(5)
    shape = (a.b, a.h, a.t, a.d)
    q, k, v = (torch.randn(shape, generator=g).requires_grad_(True) for _ in range(3))
    seed = torch.randn(shape, generator=g)
    mask = torch.ones(a.t, a.t, dtype=torch.bool).triu(1) if a.causal else None

    def attention():
        if not a.composed:
            return F.scaled_dot_product_attention(q, k, v, is_causal=bool(a.causal))
        s = q @ k.transpose(-1, -2) / (a.d ** 0.5)
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        return torch.softmax(s, -1) @ v

    base = rss_now_kb()
    ms = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            o = attention()
        o.backward(seed.to(o.dtype))
        q.grad = k.grad = v.grad = None
        if i >= a.warmup:
            ms.append(1e3 * (time.perf_counter() - t0))
    print(json.dumps({"variant": "torch_composed" if a.composed else "torch_sdpa",
                      "torch": torch.__version__, "precision": a.precision, "t": a.t, "threads": torch.get_num_threads(),
                      "ms_median": statistics.median(ms), "ms_min": min(ms),
                      "rss_base_kb": base,
                      "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


if __name__ == "__main__":
    main()
