#!/usr/bin/env python3
"""Attention forward + backward: tapegrad's fused row, the same attention
composed from ops, and PyTorch's SDPA, time and peak memory against T.

    tests/bench/compare_attn.py --torch-python PATH [--build build]
        [--ts 128,512,1024] [--b 4] [--h 4] [--d 32] [--causal 1]
        [--threads 2] [--steps 5] [--warmup 2]

Every (T, variant) runs in a process of its own: build/tests/bench/bench_attn
(--variant fused and composed) and tests/bench/torch_attn.py under the
interpreter --torch-python names (a PyTorch >= 2.0, as compare_torch.py's
--torch-python), all with the same shapes and thread count. The table gives
the median (minimum) step time and the peak memory of each: for tapegrad the step
arena's high-water mark (every byte one step allocates) and for every side
the growth of the peak RSS over the RSS once the inputs exist. Below it, the
growth of each figure from one T to the next beside T's own ratio: linear
memory grows like T, memory that holds (T, T) scores like T^2.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("compare_attn: %s failed:\n%s" % (" ".join(cmd), p.stderr))
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-python", required=True)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--ts", default="128,512,1024")
    for k, v in [("b", 4), ("h", 4), ("d", 32), ("causal", 1), ("threads", 2), ("steps", 5),
                 ("warmup", 2)]:
        ap.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    ts = [int(x) for x in a.ts.split(",")]
    common = []
    for k in ["b", "h", "d", "causal", "threads", "steps", "warmup"]:
        common += ["--" + k, str(getattr(a, k))]
    exe = os.path.join(a.build, "tests", "bench", "bench_attn")
    rows = []
    for t in ts:
        r = {"t": t}
        for var in ["fused", "composed"]:
            r[var] = run([exe, "--variant", var, "--t", str(t)] + common)
        r["torch"] = run([a.torch_python, os.path.join(HERE, "torch_attn.py"), "--t", str(t)]
                         + common)
        rows.append(r)
    tv = rows[0]["torch"]["torch"]
    print("attention forward+backward, B=%d H=%d D=%d, %s, f32, %d threads, median (min) of %d "
          "steps"
          % (a.b, a.h, a.d, "causal" if a.causal else "not causal", a.threads, a.steps))
    print("torch %s (%s)" % (tv, a.torch_python))
    mib = 1024.0
    hdr = ("T", "fused ms", "composed ms", "torch SDPA ms", "fused arena MiB", "composed arena MiB",
           "fused +RSS MiB", "composed +RSS MiB", "torch +RSS MiB")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))

    def extra(x):
        return (x["rss_peak_kb"] - x["rss_base_kb"]) / mib

    for r in rows:
        f, c, p = r["fused"], r["composed"], r["torch"]
        def ms(x):
            return "%.1f (%.1f)" % (x["ms_median"], x["ms_min"])
        print("| %d | %s | %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f |" % (
            r["t"], ms(f), ms(c), ms(p),
            f["arena_peak"] / 2**20, c["arena_peak"] / 2**20, extra(f), extra(c), extra(p)))
    print()
    print("growth from one T to the next (linear: like T; quadratic: like T^2)")
    hdr = ("T", "T ratio", "T^2 ratio", "fused arena", "composed arena", "fused +RSS",
           "composed +RSS", "torch +RSS")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for p, r in zip(rows, rows[1:]):
        def ratio(x, y):
            return "%.2f" % (x / y) if y > 0 else "-"
        print("| %d -> %d | %.2f | %.2f | %s | %s | %s | %s | %s |" % (
            p["t"], r["t"], r["t"] / p["t"], (r["t"] / p["t"]) ** 2,
            ratio(r["fused"]["arena_peak"], p["fused"]["arena_peak"]),
            ratio(r["composed"]["arena_peak"], p["composed"]["arena_peak"]),
            ratio(extra(r["fused"]), extra(p["fused"])),
            ratio(extra(r["composed"]), extra(p["composed"])),
            ratio(extra(r["torch"]), extra(p["torch"]))))


if __name__ == "__main__":
    main()
