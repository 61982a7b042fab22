#!/usr/bin/env python3
"""Evaluates a `tapegrad export` safetensors file in PyTorch.

    /usr/bin/python3 tests/export_check.py MODEL.safetensors --model mlp \
        [--idx-dir /usr/share/datasets/fashion-mnist] [--mean M --std S]

Parses the file with the standard library and numpy only (8-byte little-endian
header length, JSON header, raw little-endian data: no safetensors package),
builds the same network in PyTorch (the classes of tests/bench/torch_train.py,
whose module names are the state_dict names tapegrad writes), loads the
weights with load_state_dict(strict=True), and prints one JSON line with the
test-split accuracy and mean loss, for the caller to compare with `tapegrad
eval`. Exit code 0 when it ran, 2 on a malformed file.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "bench"))

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
          "U8": np.uint8, "I8": np.int8}


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if 8 + hlen > len(raw):
        raise ValueError(f"{path}: header length {hlen} runs past the end of the file")
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    body = raw[8 + hlen:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = DTYPES[info["dtype"]]
        arr = np.frombuffer(body[b:e], dtype=np.dtype(dt).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).copy()
    return header.get("__metadata__", {}), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--model", choices=["mlp", "cnn", "cnn-bn"], required=True)
    ap.add_argument("--idx-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--mean", type=float, required=True, help="the dataset's mean attribute")
    ap.add_argument("--std", type=float, required=True, help="the dataset's std attribute")
    a = ap.parse_args()
    try:
        meta, tensors = load_safetensors(a.file)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"export_check: {e}", file=sys.stderr)
        return 2

    import torch
    import torch.nn.functional as F
    import torch_train as tt

    model = tt.MLP() if a.model == "mlp" else tt.CNN(a.model == "cnn-bn")
    state = {k: torch.from_numpy(v) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    x = tt.read_idx(os.path.join(a.idx_dir, "t10k-images-idx3-ubyte.gz"))
    y = tt.read_idx(os.path.join(a.idx_dir, "t10k-labels-idx1-ubyte.gz"))
    xt = torch.from_numpy((x.astype(np.float32) / 255.0 - a.mean) / a.std).unsqueeze(1)
    yt = torch.from_numpy(y.astype(np.int64))
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(yt), 500):
            logits = model(xt[i:i + 500])
            loss += F.cross_entropy(logits, yt[i:i + 500], reduction="sum").item()
            correct += (logits.argmax(1) == yt[i:i + 500]).sum().item()
    print(json.dumps({"model": meta.get("model"), "step": meta.get("step"),
                      "tensors": len(tensors), "test_acc": correct / len(yt),
                      "test_loss": loss / len(yt)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
