#!/usr/bin/env python3
"""CPU training throughput and memory, tapegrad against PyTorch, side by side.

    tests/bench/compare_torch.py [--build build] [--models mlp,cnn,cnn-bn]
        [--batches 64,256] [--threads 1,2] [--runs 3] [--steps 20] [--warmup 3]
        [--no-ops] [--blas-core inherit|native|NAME]
        [--torch-python PATH]... [--load N[,N...]|cores] [--precision f32[,bf16]]

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

Both sides, and bench_ops, run with the same OpenBLAS kernel choice:
--blas-core inherit (the default) leaves OPENBLAS_CORETYPE as the environment
has it, native removes it (OpenBLAS picks by the CPU), NAME sets
OPENBLAS_CORETYPE=NAME (e.g. Haswell, SkylakeX). PyTorch's convolutions go
through oneDNN, which ignores the variable, but its matrix products run on
OpenBLAS too. Every run sets OPENBLAS_VERBOSE=2, so that OpenBLAS names the
core it loaded on stderr; the table's last column shows it (one name when both
sides agree, tapegrad's/torch's otherwise; "-" when a side loaded no OpenBLAS).

--torch-python PATH runs the PyTorch side with that interpreter (a PyTorch 2.x
installed from PyPI in a virtual environment, docs/BENCHMARKS.md); given several
times, every row runs every interpreter, and the table has a column pair
(samples/s, tapegrad's ratio) per PyTorch, named with its version and BLAS above
the table. Without it the PyTorch side is Debian's python3-torch, importable by
/usr/bin/python3, which this script installs with apt-get when it is missing
(when run as root).

--precision f32,bf16 measures every row in each precision: tapegrad with
bench_train --precision (tg_ctx_set_precision: bf16 matrix products and
convolutions, f32 master weights) and PyTorch with the forward and the loss
under torch.autocast("cpu", dtype=torch.bfloat16). The table's "prec" column
says which; "vs f32" is tapegrad's samples/s over its own f32 figure of the
same row (blank in f32 rows).

--load N runs N busy-loop processes (or one per core: --load cores) beside both
sides for the whole row, standing for another job on the same node; with
--load 0,cores every row is measured without and with that load.
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


def ensure_torch(python):
    ok = subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0
    if ok:
        return
    if python != TORCH_PY:
        sys.exit("compare_torch: %s cannot import torch" % python)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("compare_torch: python3-torch is missing: apt-get install python3-torch")
    subprocess.run(["apt-get", "install", "-y", "python3-torch"], check=True)


class Load:
    """--load: N processes that spin on the CPU while a row runs, standing for
    another job on the same cores. Started before the row's runs and stopped
    after them, so that both sides run under the same load."""

    def __init__(self, n):
        self.n = n
        self.procs = []

    def __enter__(self):
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


def ensure_data(build):
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    h5 = os.path.join(cache, "tapegrad", "fashion-mnist.h5")
    if not os.path.exists(h5):
        # One step of the default run converts the IDX files into the cache.
        subprocess.run([os.path.join(build, "tapegrad"), "train", "--max-steps", "1",
                        "--log-every", "0"], check=True, capture_output=True)
    return h5


def blas_env(choice):
    """The environment every benchmark process runs in, for --blas-core."""
    env = dict(os.environ)
    if choice == "native":
        env.pop("OPENBLAS_CORETYPE", None)
    elif choice != "inherit":
        env["OPENBLAS_CORETYPE"] = choice
    # OpenBLAS prints "Core: NAME" to stderr when it is loaded.
    env["OPENBLAS_VERBOSE"] = "2"
    return env


def split_cores(stderr):
    """The OpenBLAS cores named in stderr ("-" for none), and the other lines."""
    cores, rest = [], []
    for line in stderr.splitlines(keepends=True):
        if line.startswith("Core: "):
            name = line[len("Core: "):].strip()
            if name not in cores:
                cores.append(name)
        else:
            rest.append(line)
    return "+".join(cores) or "-", "".join(rest)


def run_json(cmd, env):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    core, rest = split_cores(p.stderr)
    if p.returncode != 0:
        sys.exit("compare_torch: %s failed:\n%s" % (" ".join(cmd), rest))
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["blas_core_seen"] = core
    return r


def one_core(runs, what):
    """The core all runs of one side used; differing runs would be a bug here."""
    cores = sorted({x["blas_core_seen"] for x in runs})
    if len(cores) != 1:
        sys.exit("compare_torch: %s ran on different OpenBLAS cores: %s" % (what, cores))
    return cores[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="build folder holding tests/bench/bench_train and bench_ops")
    ap.add_argument("--models", default="mlp,cnn,cnn-bn", help="comma-separated built-in models")
    ap.add_argument("--batches", default="64,256", help="comma-separated global batch sizes")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (both sides)")
    ap.add_argument("--runs", type=int, default=3,
                    help="alternated runs of each side per row; the table shows medians")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    ap.add_argument("--no-ops", action="store_true",
                    help="skip bench_ops (matmul and conv2d through the ops vs bare sgemm)")
    ap.add_argument("--blas-core", default="inherit", metavar="{inherit,native,NAME}",
                    help="OpenBLAS kernels of both sides: OPENBLAS_CORETYPE as inherited, "
                    "removed (OpenBLAS picks for this CPU), or set to NAME")
    ap.add_argument("--torch-python", action="append", metavar="PATH",
                    help="a Python interpreter that imports torch; repeat it to compare "
                    "against several PyTorch installs in one run (none: Debian's " + TORCH_PY + ")")
    ap.add_argument("--load", default="0", metavar="N[,N...]",
                    help="busy-loop processes running beside each row (0: none; 'cores': one "
                    "per core); every row is run at every load")
    ap.add_argument("--precision", default="f32", metavar="P[,P...]",
                    help="f32 and/or bf16 (autocast on both sides); every row is run in each")
    a = ap.parse_args()
    env = blas_env(a.blas_core)
    pythons = a.torch_python or [TORCH_PY]
    loads = [os.cpu_count() if x == "cores" else int(x) for x in a.load.split(",")]

    for py in pythons:
        ensure_torch(py)
    h5 = ensure_data(a.build)
    bench_train = os.path.join(a.build, "tests", "bench", "bench_train")
    rows = []
    forced = env.get("OPENBLAS_CORETYPE")
    print("blas: --blas-core %s, OPENBLAS_CORETYPE%s" % (
        a.blas_core, "=" + forced if forced else " unset"))
    precs = a.precision.split(",")
    if any(x not in ("f32", "bf16") for x in precs):
        sys.exit("compare_torch: --precision takes f32 and/or bf16, got %s" % a.precision)
    head = "%-7s %5s %3s %4s %4s %12s %6s" % ("model", "batch", "thr", "load", "prec",
                                               "tapegrad/s", "vs f32")
    for i in range(len(pythons)):
        head += " %12s %6s" % ("torch%d/s" % (i + 1), "ratio")
    head += " %9s %9s %8s  %s" % ("tg MiB", "torch MiB", "mallocs", "blas core")
    printed_head = False
    for model in a.models.split(","):
        for batch in [int(b) for b in a.batches.split(",")]:
            for load in loads:
                for thr, prec in [(int(t), p) for t in a.threads.split(",") for p in precs]:
                    common = ["--model", model, "--batch-size", str(batch), "--threads",
                              str(thr), "--steps", str(a.steps), "--warmup", str(a.warmup),
                              "--precision", prec]
                    tg, th = [], [[] for _ in pythons]
                    with Load(load):
                        for _ in range(a.runs):
                            tg.append(run_json([bench_train, "--data", h5] + common, env))
                            for i, py in enumerate(pythons):
                                th[i].append(run_json(
                                    [py, os.path.join(HERE, "torch_train.py")] + common, env))
                    if not printed_head:
                        for i, py in enumerate(pythons):
                            print("torch%d: PyTorch %s, BLAS %s (%s)" % (
                                i + 1, th[i][0].get("torch_version", "?"),
                                th[i][0].get("blas", "?"), "Debian's" if py == TORCH_PY
                                else "--torch-python %d" % (i + 1)))
                        print(head)
                        printed_head = True
                    r = {
                        "model": model, "batch": batch, "threads": thr, "load": load,
                        "precision": prec,
                        "tapegrad": statistics.median(x["samples_per_s"] for x in tg),
                        "torch": [statistics.median(x["samples_per_s"] for x in t) for t in th],
                        "torch_version": [t[0].get("torch_version", "?") for t in th],
                        "tapegrad_rss": max(x["peak_rss_mb"] for x in tg),
                        "torch_rss": [max(x["peak_rss_mb"] for x in t) for t in th],
                        "mallocs": max(x["mallocs_per_step"] for x in tg),
                        "blas_core_tapegrad": one_core(tg, "bench_train"),
                        "blas_core_torch": [one_core(t, "torch_train.py") for t in th],
                    }
                    # bench_train names its core itself; OpenBLAS's own word must agree.
                    for x in tg:
                        if x.get("blas_core", x["blas_core_seen"]) != x["blas_core_seen"]:
                            sys.exit("compare_torch: bench_train says core %s, OpenBLAS said %s"
                                     % (x["blas_core"], x["blas_core_seen"]))
                    cores = "/".join([r["blas_core_tapegrad"]] + r["blas_core_torch"])
                    r["ratio"] = [r["tapegrad"] / t for t in r["torch"]]
                    rows.append(r)
                    f32 = [x["tapegrad"] for x in rows[:-1] if x["precision"] == "f32" and
                           (x["model"], x["batch"], x["threads"], x["load"]) ==
                           (model, batch, thr, load)]
                    vs = "%6.2f" % (r["tapegrad"] / f32[-1]) if prec != "f32" and f32 else ""
                    line = "%-7s %5d %3d %4d %4s %12.1f %6s" % (model, batch, thr, load, prec,
                                                               r["tapegrad"], vs)
                    for t, q in zip(r["torch"], r["ratio"]):
                        line += " %12.1f %6.2f" % (t, q)
                    line += " %9.1f %9.1f %8.2f  %s" % (r["tapegrad_rss"], max(r["torch_rss"]),
                                                       r["mallocs"], cores)
                    print(line, flush=True)
    print(json.dumps(rows))
    if not a.no_ops:
        for thr in sorted({int(t) for t in a.threads.split(",")}):
            sys.stdout.flush()
            p = subprocess.run([os.path.join(a.build, "tests", "bench", "bench_ops"), "--threads",
                                str(thr)], stderr=subprocess.PIPE, text=True, env=env)
            core, rest = split_cores(p.stderr)
            sys.stderr.write(rest)
            if p.returncode != 0:
                sys.exit("compare_torch: bench_ops --threads %d failed" % thr)
            print("(bench_ops --threads %d: OpenBLAS core %s)" % (thr, core), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
