#!/usr/bin/env python3
"""The comparisons of scripts/gpu_check.sh; each prints one line that starts
with "ok " or "fail " and the figures.

    gpu_compare.py curves A.jsonl B.jsonl STEPS RTOL
        the "step" events of two `tapegrad train --metrics` files: the
        largest relative loss difference over the first STEPS steps must be
        <= RTOL (and both must have STEPS steps); also reports it over all.
    gpu_compare.py matmul BENCH_CUDA.log MIN_RATIO
        bench_cuda's JSON lines: every size's op/cuBLAS ratio >= MIN_RATIO.
    gpu_compare.py tg_rate TRAIN.log MODEL
        one JSON line {"framework": "tapegrad", "samples_per_s": ...} from the
        progress lines of `tapegrad train`: the median rate of every line but
        the first (the warm-up).
    gpu_compare.py train RUNS.jsonl GOAL
        alternated runs of both frameworks: the median samples/s of each and
        the ratio tapegrad/torch, which must be >= GOAL.
"""
import json
import re
import statistics
import sys


def steps(path):
    out = {}
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            if e.get("event") == "step":
                out[e["step"]] = e["loss"]
    return out


def curves(a, b, n, rtol):
    sa, sb = steps(a), steps(b)
    n, rtol = int(n), float(rtol)
    common = sorted(set(sa) & set(sb))
    if len([s for s in common if s <= n]) < n:
        return f"fail only {len(common)} common steps, expected at least {n}"

    def worst(keys):
        return max((abs(sa[k] - sb[k]) / max(abs(sb[k]), 1e-12), k) for k in keys)

    w, at = worst([k for k in common if k <= n])
    wall, atall = worst(common)
    msg = (f"max rel. loss difference {w:.2e} (step {at}) over {n} steps, "
           f"{wall:.2e} (step {atall}) over {len(common)}; "
           f"loss {sb[common[0]]:.4f} -> {sb[common[-1]]:.4f}")
    return ("ok " if w <= rtol else "fail ") + msg


def matmul(path, lo):
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    if not rows:
        return "fail no results"
    ok = all(r["ratio"] >= float(lo) for r in rows)
    return ("ok " if ok else "fail ") + ", ".join(
        f"n={r['n']}: {r['op_gflops']:.0f} vs {r['cublas_gflops']:.0f} GFLOP/s ({r['ratio']:.2f})"
        for r in rows)


def tg_rate(path, model):
    rates = [float(m.group(1)) for m in
             re.finditer(r"step \d+/\d+ .* (\d+(?:\.\d+)?) samples/s", open(path).read())]
    if len(rates) < 2:
        print(f"tg_rate: fewer than 2 progress lines in {path}", file=sys.stderr)
        return None
    return json.dumps({"framework": "tapegrad", "model": model,
                       "samples_per_s": statistics.median(rates[1:])})


def train(path, goal):
    by = {}
    for line in open(path):
        if line.startswith("{"):
            r = json.loads(line)
            by.setdefault(r["framework"], []).append(r["samples_per_s"])
    if "tapegrad" not in by or "torch" not in by:
        return f"fail missing runs: {sorted(by)}"
    t, p = statistics.median(by["tapegrad"]), statistics.median(by["torch"])
    return (("ok " if t / p >= float(goal) else "fail ") +
            f"tapegrad {t:.0f} samples/s, PyTorch {p:.0f} samples/s: {t / p:.2f}x "
            f"(goal {float(goal):.1f}x; {len(by['tapegrad'])} runs each)")


def main(argv):
    cmds = {"curves": curves, "matmul": matmul, "tg_rate": tg_rate, "train": train}
    if len(argv) < 2 or argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        return 2
    out = cmds[argv[1]](*argv[2:])
    if out is None:
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
