#!/usr/bin/env python3
"""CPU training throughput and memory, tapegrad against PyTorch, side by side.

    tests/bench/compare_torch.py [--build build] [--models mlp,cnn,cnn-bn]
        [--batches 64,256] [--threads 1,2] [--runs 3] [--steps 20] [--warmup 3]
        [--no-ops]

For every (model, batch, threads) it runs build/tests/bench/bench_train (the
tapegrad side) and tests/bench/torch_train.py (the PyTorch side) alternately,
--runs times each, so that drifts in the machine's load hit both alike. Both
train the same model on Fashion-MNIST with the same global batch, AdamW at
lr 1e-3, the same thread count, and time the same --steps optimizer steps
after --warmup untimed ones (no evaluation, no start-up). It prints per
configuration the median samples/s of each, their ratio, the peak RSS of each
(the largest over the runs) and tapegrad's heap allocations per timed step.
Then, unless --no-ops, it runs bench_ops (matmul and conv2d forward+backward
GFLOP/s through the ops against bare OpenBLAS sgemm on the same FLOPs).

The PyTorch side needs Debian's python3-torch, importable by /usr/bin/python3;
this script installs it with apt-get when it is missing (when run as root).
tapegrad reads the HDF5 file `tapegrad train` converts on first use; it is
made here the same way when missing.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TORCH_PY = "/usr/bin/python3"
IDX = "/usr/share/datasets/fashion-mnist"


def ensure_torch():
    ok = subprocess.run([TORCH_PY, "-c", "import torch"], capture_output=True).returncode == 0
    if ok:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("compare_torch: python3-torch is missing: apt-get install python3-torch")
    subprocess.run(["apt-get", "install", "-y", "python3-torch"], check=True)


def ensure_data(build):
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    h5 = os.path.join(cache, "tapegrad", "fashion-mnist.h5")
    if not os.path.exists(h5):
        # One step of the default run converts the IDX files into the cache.
        subprocess.run([os.path.join(build, "tapegrad"), "train", "--max-steps", "1",
                        "--log-every", "0"], check=True, capture_output=True)
    return h5


def run_json(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("compare_torch: %s failed:\n%s" % (" ".join(cmd), p.stderr))
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", default="mlp,cnn,cnn-bn")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-ops", action="store_true")
    a = ap.parse_args()

    ensure_torch()
    h5 = ensure_data(a.build)
    bench_train = os.path.join(a.build, "tests", "bench", "bench_train")
    rows = []
    print("%-7s %5s %3s %12s %12s %6s %9s %9s %8s" % (
        "model", "batch", "thr", "tapegrad/s", "torch/s", "ratio", "tg MiB", "torch MiB",
        "mallocs"))
    for model in a.models.split(","):
        for batch in [int(b) for b in a.batches.split(",")]:
            for thr in [int(t) for t in a.threads.split(",")]:
                common = ["--model", model, "--batch-size", str(batch), "--threads", str(thr),
                          "--steps", str(a.steps), "--warmup", str(a.warmup)]
                tg, th = [], []
                for _ in range(a.runs):
                    tg.append(run_json([bench_train, "--data", h5] + common))
                    th.append(run_json([TORCH_PY, os.path.join(HERE, "torch_train.py")] + common))
                r = {
                    "model": model, "batch": batch, "threads": thr,
                    "tapegrad": statistics.median(x["samples_per_s"] for x in tg),
                    "torch": statistics.median(x["samples_per_s"] for x in th),
                    "tapegrad_rss": max(x["peak_rss_mb"] for x in tg),
                    "torch_rss": max(x["peak_rss_mb"] for x in th),
                    "mallocs": max(x["mallocs_per_step"] for x in tg),
                }
                r["ratio"] = r["tapegrad"] / r["torch"]
                rows.append(r)
                print("%-7s %5d %3d %12.1f %12.1f %6.2f %9.1f %9.1f %8.2f" % (
                    model, batch, thr, r["tapegrad"], r["torch"], r["ratio"],
                    r["tapegrad_rss"], r["torch_rss"], r["mallocs"]), flush=True)
    print(json.dumps(rows))
    if not a.no_ops:
        for thr in sorted({int(t) for t in a.threads.split(",")}):
            subprocess.run([os.path.join(a.build, "tests", "bench", "bench_ops"), "--threads",
                            str(thr)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
