#!/usr/bin/env python3
"""The PyTorch side of the CPU training comparison (see compare_torch.py).

Trains the same models as `tapegrad train --model mlp|cnn|cnn-bn` on
Fashion-MNIST (read from the Debian package's IDX files, normalised the same
way), with the same global batch, optimizer and thread count, for a fixed
number of optimizer steps, and prints one JSON line:

    {"framework": "torch", "model": "cnn", "batch": 256, "threads": 2,
     "steps": 60, "samples_per_s": 1234.5, "loss": 0.61, "peak_rss_mb": 412.0}

samples_per_s counts the timed steps only (after `--warmup` untimed ones), so
start-up, data loading and the first-step allocations are left out on both
sides. Needs Debian's python3-torch: run it with /usr/bin/python3.
"""
import argparse
import gzip
import json
import re
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"
# The normalisation tapegrad's converter stores for Fashion-MNIST: x/255 then
# (x - mean) / std with the training split's mean and std.
MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self, bn):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 1024)
        self.fc2 = nn.Linear(1024, 10)
        self.bn = bn
        if bn:
            self.bn1 = nn.BatchNorm2d(32)
            self.bn2 = nn.BatchNorm2d(64)
            self.bn3 = nn.BatchNorm1d(1024)

    def forward(self, x):
        x = self.conv1(x)
        x = F.max_pool2d(F.relu(self.bn1(x) if self.bn else x), 2)
        x = self.conv2(x)
        x = F.max_pool2d(F.relu(self.bn2(x) if self.bn else x), 2)
        x = self.fc1(x.flatten(1))
        x = F.relu(self.bn3(x) if self.bn else x)
        return self.fc2(x)


def blas_info():
    """The BLAS this PyTorch was built with (BLAS_INFO of its build settings)."""
    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return m.group(1) if m else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["mlp", "cnn", "cnn-bn"], default="mlp")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--optimizer", choices=["sgd", "adamw"], default="adamw")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="bf16: forward and loss under torch.autocast(dtype=torch.bfloat16)")
    # scripts/gpu_check.sh: the GPU, and its synthetic data set (x_train.npy,
    # y_train.npy). The data stay in host memory and each batch is copied to
    # the device, as tapegrad's trainer does.
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--npy", metavar="DIR", help="read DIR/x_train.npy, DIR/y_train.npy")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.npy:
        x = np.load(os.path.join(a.npy, "x_train.npy")).reshape(-1, 28, 28)
        y = np.load(os.path.join(a.npy, "y_train.npy"))
        mean, std = float((x / 255.0).mean()), float((x / 255.0).std())
    else:
        x = read_idx(os.path.join(DATA, "train-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(DATA, "train-labels-idx1-ubyte.gz"))
        mean, std = MEAN, STD
    xt = torch.from_numpy(((x.astype(np.float32) / 255.0 - mean) / std)).unsqueeze(1)
    yt = torch.from_numpy(y.astype(np.int64))
    dev = torch.device(a.device)
    model = MLP() if a.model == "mlp" else CNN(a.model == "cnn-bn")
    model.to(dev)
    model.train()
    if a.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
    perm = torch.randperm(len(yt))
    nb = len(yt) // a.batch_size

    def step(k):
        idx = perm[(k % nb) * a.batch_size:(k % nb + 1) * a.batch_size]
        xb, yb = xt[idx].to(dev), yt[idx].to(dev)
        opt.zero_grad(set_to_none=False)
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.item()

    for k in range(a.warmup):
        step(k)
    t0 = time.perf_counter()
    loss = 0.0
    for k in range(a.warmup, a.warmup + a.steps):
        loss = step(k)
    dt = time.perf_counter() - t0
    print(json.dumps({
        "framework": "torch", "model": a.model, "device": a.device, "batch": a.batch_size,
        "threads": a.threads,
        "steps": a.steps, "samples_per_s": a.steps * a.batch_size / dt, "loss": loss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "torch_version": torch.__version__, "blas": blas_info(), "precision": a.precision,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
