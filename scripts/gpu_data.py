#!/usr/bin/env python3
"""A synthetic Fashion-MNIST-shaped data set for scripts/gpu_check.sh.

    gpu_data.py --out DIR [--train N] [--test N] [--seed S]

Writes DIR/x_train.npy (N, 1, 28, 28) uint8, DIR/y_train.npy (N,) uint8 and the
same for test: ten fixed random prototype images, one per class, under much
noise, and 40% of the labels replaced by random ones, so that a model learns
something in a few hundred steps but the loss stays far from 0 (about 1.2 at
best): the relative difference of two loss curves stays meaningful. `tapegrad convert npy` turns them into the HDF5 file
that `tapegrad train --data` reads; tests/bench/torch_train.py --npy DIR reads
them directly. Needs numpy (which PyTorch brings).
"""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=8192)
    ap.add_argument("--test", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    protos = rng.uniform(0, 255, size=(10, 28, 28))
    for split, n in (("train", a.train), ("test", a.test)):
        c = rng.integers(0, 10, size=n)
        x = 0.3 * protos[c] + rng.uniform(0, 0.7 * 255, size=(n, 28, 28))
        y = np.where(rng.random(n) < 0.6, c, rng.integers(0, 10, size=n)).astype(np.uint8)
        x = np.clip(x, 0, 255).astype(np.uint8).reshape(n, 1, 28, 28)
        np.save(os.path.join(a.out, f"x_{split}.npy"), x)
        np.save(os.path.join(a.out, f"y_{split}.npy"), y)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
