#!/usr/bin/env python3
"""gpt training throughput and memory on the CPU, tapegrad against PyTorch.

    tests/bench/compare_gpt.py [--build build] [--corpus FILE...] [--batch 32]
        [--block 128] [--threads 1,2] [--runs 3] [--steps 10] [--warmup 2]
        [--attn sdpa|math] [--blas-core inherit|native|NAME]
        [--torch-python PATH]... [--load N[,N...]|cores] [--precision f32[,bf16]]

For every thread count it runs build/tests/bench/bench_gpt (tapegrad's
`--model gpt`: 4 layers, 4 heads, 128 wide, tied head, AdamW betas
(0.9, 0.95), weight decay 0.1 on the matrices only, clipping at 1) and
tests/bench/torch_gpt.py (tests/gpt_torch.py's nanoGPT model with the same
initialisation and optimizer) alternately, --runs times each, on the same
byte-token corpus and the same windows, batch, block size and threads, and
prints the median tokens/s of each, their ratio, the peak RSS of each (the
largest over the runs), the median CPU milliseconds (user + system, all
threads) per step of each ("cpu": steadier than the wall clock on a loaded
machine) and tapegrad's heap calls per timed step.

--precision f32,bf16 measures both precisions in the same alternation (every
run of a row takes each precision in turn): bf16 is bench_gpt --precision
bf16 against PyTorch under torch.autocast("cpu", dtype=torch.bfloat16), and
the bf16 rows add "bf16/f32", tapegrad's bf16 tokens/s over its own f32 in
the same runs.

The corpus is the text files of Debian's fortunes package
(/usr/share/games/fortunes, without the .dat and .u8 files) or, when it is
absent, /usr/share/common-licenses; `tapegrad convert text --val-fraction 0`
turns them into a token dataset in the build folder (made once), and
torch_gpt.py reads the same files as bytes. --blas-core, --torch-python and
--load are compare_torch.py's (its helpers are imported). --attn is
torch_gpt.py's: the PyTorch attention through F.scaled_dot_product_attention
(sdpa, PyTorch >= 2.0; 1.13 falls back to math) or gpt_torch.py's explicit
mask and softmax (math); the table names what ran.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from compare_torch import TORCH_PY, Load, blas_env, ensure_torch, one_core, run_json  # noqa

CORPORA = ["/usr/share/games/fortunes", "/usr/share/common-licenses"]


def default_corpus():
    for d in CORPORA:
        files = sorted(f for f in glob.glob(os.path.join(d, "*"))
                       if os.path.isfile(f) and not f.endswith((".dat", ".u8")))
        if files:
            return files
    sys.exit("compare_gpt: no corpus: install the fortunes package or give --corpus FILE...")


def ensure_tokens(build, files):
    """The token dataset of files (byte tokens, all in 'train'), made once."""
    h5 = os.path.join(build, "tests", "bench", "gpt_corpus.h5")
    stamp = h5 + ".files"
    want = "\n".join(files)
    if not (os.path.exists(h5) and os.path.exists(stamp) and open(stamp).read() == want):
        subprocess.run([os.path.join(build, "tapegrad"), "convert", "text", "--in"] + files +
                       ["--out", h5, "--val-fraction", "0"], check=True, capture_output=True)
        with open(stamp, "w") as f:
            f.write(want)
    return h5


def row(a, thr, load, prec, tg, th):
    """One table row: the medians of a precision's runs at a thread count and load."""
    r = {
        "model": "gpt", "batch": a.batch, "block": a.block, "threads": thr,
        "load": load, "precision": prec,
        "tapegrad": statistics.median(x["tokens_per_s"] for x in tg),
        "tapegrad_runs": [x["tokens_per_s"] for x in tg],
        "torch": [statistics.median(x["tokens_per_s"] for x in t) for t in th],
        "torch_runs": [[x["tokens_per_s"] for x in t] for t in th],
        "torch_version": [t[0]["torch_version"] for t in th],
        "tapegrad_cpu_ms": statistics.median(x["cpu_ms_per_step"] for x in tg),
        "torch_cpu_ms": [statistics.median(x["cpu_ms_per_step"] for x in t) for t in th],
        "tapegrad_rss": max(x["peak_rss_mb"] for x in tg),
        "torch_rss": [max(x["peak_rss_mb"] for x in t) for t in th],
        "mallocs": max(x["mallocs_per_step"] for x in tg),
        "blas_core_tapegrad": one_core(tg, "bench_gpt"),
        "blas_core_torch": [one_core(t, "torch_gpt.py") for t in th],
    }
    r["ratio"] = [r["tapegrad"] / t for t in r["torch"]]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="build folder holding tapegrad and tests/bench/bench_gpt")
    ap.add_argument("--corpus", nargs="+", help="text files (default: fortunes or licenses)")
    ap.add_argument("--batch", type=int, default=32, help="sequences per step")
    ap.add_argument("--block", type=int, default=128, help="tokens per sequence (T)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (both sides)")
    ap.add_argument("--runs", type=int, default=3, help="alternated runs of each side per row")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per run")
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed steps before them (at least 2 for tapegrad's steady state: "
                    "the first step grows the arena, the next reset makes it one chunk)")
    ap.add_argument("--attn", choices=["sdpa", "math"], default="sdpa",
                    help="PyTorch's attention (torch_gpt.py --attn)")
    ap.add_argument("--blas-core", default="inherit", metavar="{inherit,native,NAME}",
                    help="OpenBLAS kernels of both sides (compare_torch.py's option)")
    ap.add_argument("--torch-python", action="append", metavar="PATH",
                    help="a Python interpreter that imports torch; repeatable "
                    "(none: Debian's " + TORCH_PY + ")")
    ap.add_argument("--precision", default="f32", metavar="f32[,bf16]",
                    help="comma-separated precisions, alternated within each row's runs")
    ap.add_argument("--load", default="0", metavar="N[,N...]",
                    help="busy-loop processes running beside each row ('cores': one per core)")
    a = ap.parse_args()
    env = blas_env(a.blas_core)
    pythons = a.torch_python or [TORCH_PY]
    loads = [os.cpu_count() if x == "cores" else int(x) for x in a.load.split(",")]
    for py in pythons:
        ensure_torch(py)
    files = [os.path.abspath(f) for f in (a.corpus or default_corpus())]
    h5 = ensure_tokens(a.build, files)
    bench = os.path.join(a.build, "tests", "bench", "bench_gpt")
    forced = env.get("OPENBLAS_CORETYPE")
    print("gpt: batch %d, block %d, corpus %d files, %d bytes; blas: --blas-core %s, "
          "OPENBLAS_CORETYPE%s" % (a.batch, a.block, len(files),
                                   sum(os.path.getsize(f) for f in files), a.blas_core,
                                   "=" + forced if forced else " unset"))
    precs = a.precision.split(",")
    for q in precs:
        if q not in ("f32", "bf16"):
            ap.error("--precision: expected f32 or bf16, got '%s'" % q)
    both = "f32" in precs and "bf16" in precs
    head = "%3s %4s %4s %12s" % ("thr", "load", "prec", "tapegrad t/s")
    for i in range(len(pythons)):
        head += " %12s %6s" % ("torch%d t/s" % (i + 1), "ratio")
    if both:
        head += " %8s" % "bf16/f32"
    head += " %8s" % "tg MiB"
    for i in range(len(pythons)):
        head += " %9s" % ("torch%d MiB" % (i + 1))
    head += " %8s" % "tg cpu"
    for i in range(len(pythons)):
        head += " %10s" % ("torch%d cpu" % (i + 1))
    head += " %8s  %s" % ("mallocs", "blas core")
    rows, printed = [], False
    for load in loads:
        for thr in [int(t) for t in a.threads.split(",")]:
            common = ["--batch-size", str(a.batch), "--block", str(a.block), "--threads",
                      str(thr), "--steps", str(a.steps), "--warmup", str(a.warmup)]
            tg = {q: [] for q in precs}
            th = {q: [[] for _ in pythons] for q in precs}
            with Load(load):
                for _ in range(a.runs):
                    for q in precs:
                        pq = ["--precision", q]
                        tg[q].append(run_json([bench, "--data", h5] + common + pq, env))
                        for i, py in enumerate(pythons):
                            th[q][i].append(run_json(
                                [py, os.path.join(HERE, "torch_gpt.py"), "--attn", a.attn,
                                 "--corpus"] + files + common + pq, env))
            if not printed:
                t0 = th[precs[0]]
                for i, py in enumerate(pythons):
                    print("torch%d: PyTorch %s, BLAS %s, attention %s (%s)" % (
                        i + 1, t0[i][0]["torch_version"], t0[i][0]["blas"], t0[i][0]["attn"],
                        "Debian's" if py == TORCH_PY else "--torch-python %d" % (i + 1)))
                print(head)
                printed = True
            for q in precs:
                r = row(a, thr, load, q, tg[q], th[q])
                if both and q == "bf16":
                    f32 = statistics.median(x["tokens_per_s"] for x in tg["f32"])
                    r["bf16_over_f32"] = r["tapegrad"] / f32
                rows.append(r)
                line = "%3d %4d %4s %12.1f" % (thr, load, q, r["tapegrad"])
                for t, k in zip(r["torch"], r["ratio"]):
                    line += " %12.1f %6.2f" % (t, k)
                if both:
                    line += " %8s" % ("%.2f" % r["bf16_over_f32"] if q == "bf16" else "")
                line += " %8.1f" % r["tapegrad_rss"]
                for m in r["torch_rss"]:
                    line += " %9.1f" % m
                line += " %8.0f" % r["tapegrad_cpu_ms"]
                for c in r["torch_cpu_ms"]:
                    line += " %10.0f" % c
                line += " %8.2f  %s" % (r["mallocs"], "/".join([r["blas_core_tapegrad"]] +
                                                               r["blas_core_torch"]))
                print(line, flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
