#!/usr/bin/env python3
"""Builds the PyTorch module a tapegrad model file describes and scores an export.

    /usr/bin/python3 tests/modelfile_torch.py MODEL.ini MODEL.safetensors X.npy Y.npy \
        --scale S --mean M --std D [--classes K]

The model file is read with a line parser of its own (sections in order,
`key = value`, comments; docs/MODELS.md), independent of tapegrad's, and every
layer becomes the torch.nn module of the same meaning (nn.Linear, nn.Conv2d,
nn.BatchNorm1d/2d, nn.LayerNorm, nn.Embedding, ...), registered under the
layer's name, nested at its dots ("layer1.0.conv1"), so that the module's
state_dict names are the ones tapegrad exports; a projecting `add` is an
nn.Sequential(conv 1x1, [batch norm]) under the add's name. The exported
tensors are loaded with load_state_dict(strict=True) (every name and shape
must match, nothing missing or extra), the module is put in eval mode, and
the samples of X (normalised as (x * scale - mean) / std) are scored against
Y. Prints one JSON line: accuracy, mean cross-entropy, and the logits of the
first 4 samples. Exit 2 on a file it cannot read.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import load_safetensors  # noqa: E402


def parse(text):
    layers = []
    for ln, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            layers.append({"type": line[1:line.index("]")].strip(), "line": ln, "keys": {}})
            continue
        k, v = line.split("=", 1) if "=" in line else line.split(":", 1)
        v = v.split(";")[0].strip()
        layers[-1]["keys"][k.strip()] = v
    return layers


def pair(v, d):
    if v is None:
        return (d, d)
    p = [int(t) for t in v.split(",")]
    return (p[0], p[-1])


def build(layers, in_shape, classes):
    import torch
    import torch.nn as nn

    root = nn.Module()

    def put(name, mod):
        parts = name.split(".")
        cur = root
        for p in parts[:-1]:
            if not hasattr(cur, p) or getattr(cur, p) is None:
                cur.add_module(p, nn.Module())
            cur = getattr(cur, p)
        cur.add_module(parts[-1], mod)

    if not layers or layers[0]["type"] != "input":
        layers = [{"type": "input", "keys": {}}] + layers
    counts, nodes, shapes = {}, [], {}
    for i, L in enumerate(layers):
        t, k = L["type"], L["keys"]
        group = "batchnorm" if t.startswith("batchnorm") else t
        name = k.get("name")
        if name is None:
            if t == "input":
                name = "input"
            else:
                counts[group] = counts.get(group, 0) + 1
                name = f"{t}{counts[group]}"
        if t in ("add", "concat"):
            ins = [s.strip() for s in k["inputs"].split(",")]
            if len(ins) == 1:
                ins = [nodes[-1]["name"]] + ins
        elif t == "input":
            ins = []
        else:
            ins = [k.get("input", nodes[-1]["name"] if nodes else "input")]
        x = shapes[ins[0]] if ins else tuple(in_shape)
        node = {"type": t, "name": name, "in": ins, "k": k}

        def out_of(v):
            return classes if v == "classes" else int(v)

        if t == "input":
            shp = x
        elif t == "linear":
            o = out_of(k["out"])
            put(name, nn.Linear(x[-1], o, bias=k.get("bias", "true") == "true"))
            shp = x[:-1] + (o,)
        elif t == "conv2d":
            o, kk = out_of(k["out"]), pair(k["kernel"], 1)
            s, p, d = pair(k.get("stride"), 1), pair(k.get("padding"), 0), pair(k.get("dilation"), 1)
            put(name, nn.Conv2d(x[0], o, kk, s, p, d, groups=int(k.get("groups", "1")),
                                bias=k.get("bias", "true") == "true"))
            hw = [(x[1 + j] + 2 * p[j] - d[j] * (kk[j] - 1) - 1) // s[j] + 1 for j in range(2)]
            shp = (o, hw[0], hw[1])
        elif t.startswith("batchnorm"):
            cls = nn.BatchNorm1d if len(x) == 1 else nn.BatchNorm2d
            put(name, cls(x[0], eps=float(k.get("eps", 1e-5)), momentum=float(k.get("momentum", 0.1))))
            shp = x
        elif t == "layernorm":
            dims = int(k.get("dims", 1))
            put(name, nn.LayerNorm(list(x[-dims:]), eps=float(k.get("eps", 1e-5))))
            shp = x
        elif t == "embedding":
            put(name, nn.Embedding(int(k["num"]), int(k["dim"])))
            shp = x + (int(k["dim"]),)
        elif t in ("maxpool", "avgpool"):
            kk = pair(k["kernel"], 1)
            s = pair(k.get("stride"), 0)
            s = (s[0] or kk[0], s[1] or kk[1])
            p = pair(k.get("padding"), 0)
            node["args"] = (kk, s, p)
            hw = [(x[1 + j] + 2 * p[j] - kk[j]) // s[j] + 1 for j in range(2)]
            shp = (x[0], hw[0], hw[1])
        elif t == "globalavgpool":
            shp = (x[0],)
        elif t == "flatten":
            st = int(k.get("start", 1))
            shp = x[:st - 1] + (int(np.prod(x[st - 1:])),)
            node["start"] = st
        elif t == "add":
            proj = k.get("project", "none")
            y = shapes[ins[1]]
            if proj != "none":
                st = [-(-y[1 + j] // x[1 + j]) for j in range(2)]
                mods = [nn.Conv2d(y[0], x[0], 1, tuple(st), bias=False)]
                if proj == "conv-bn":
                    mods.append(nn.BatchNorm2d(x[0]))
                put(name, nn.Sequential(*mods))
            node["proj"] = proj
            shp = x
        elif t == "concat":
            dim = int(k.get("dim", 1))
            node["dim"] = dim
            shp = list(x)
            for o in ins[1:]:
                shp[dim - 1] += shapes[o][dim - 1]
            shp = tuple(shp)
        else:  # activations, dropout
            shp = x
        shapes[name] = shp
        nodes.append(node)

    def module(name):
        cur = root
        for p in name.split("."):
            cur = getattr(cur, p)
        return cur

    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            for n, m in root.named_children():
                self.add_module(n, m)
            self._root = [root]

        def forward(self, x):
            vals = {}
            for n in nodes:
                t = n["type"]
                a = vals[n["in"][0]] if n["in"] else x
                if t == "input":
                    y = x.long() if n["k"].get("dtype") == "i64" else x
                elif t in ("linear", "conv2d", "layernorm", "embedding") or t.startswith("batchnorm"):
                    y = module(n["name"])(a)
                elif t == "relu":
                    y = F.relu(a)
                elif t == "gelu":
                    y = F.gelu(a)
                elif t == "silu":
                    y = F.silu(a)
                elif t == "tanh":
                    y = torch.tanh(a)
                elif t == "sigmoid":
                    y = torch.sigmoid(a)
                elif t == "dropout":
                    y = F.dropout(a, float(n["k"].get("p", 0.5)), self.training)
                elif t == "maxpool":
                    y = F.max_pool2d(a, *n["args"])
                elif t == "avgpool":
                    y = F.avg_pool2d(a, *n["args"], count_include_pad=True)
                elif t == "globalavgpool":
                    y = a.mean(dim=(2, 3))
                elif t == "flatten":
                    y = torch.flatten(a, n["start"])
                elif t == "add":
                    b = vals[n["in"][1]]
                    if n["proj"] != "none":
                        b = module(n["name"])(b)
                    y = a + b
                elif t == "concat":
                    y = torch.cat([vals[i] for i in n["in"]], n["dim"])
                else:
                    raise ValueError(f"layer type {t}")
                vals[n["name"]] = y
            return y

    return Net()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("weights")
    ap.add_argument("x")
    ap.add_argument("y")
    ap.add_argument("--scale", type=float, required=True)
    ap.add_argument("--mean", required=True,
                    help="a number, or one per channel separated by commas")
    ap.add_argument("--std", required=True, help="as --mean")
    ap.add_argument("--classes", type=int, default=0)
    a = ap.parse_args()
    import torch
    import torch.nn.functional as F

    try:
        _, tensors = load_safetensors(a.weights)
        text = open(a.model).read()
    except (OSError, ValueError, KeyError) as e:
        print(f"modelfile_torch: {e}", file=sys.stderr)
        return 2
    x = np.load(a.x).astype(np.float64)
    y = np.load(a.y).astype(np.int64)
    classes = a.classes or int(y.max()) + 1
    net = build(parse(text), x.shape[1:], classes).double()
    net.load_state_dict({k: torch.from_numpy(v).double() if v.dtype.kind == "f"
                         else torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    net.eval()
    # One number for every value, or one per channel (dim 1 of x).
    def per_channel(text):
        v = np.array([float(t) for t in text.split(",")])
        return v.reshape((1, -1) + (1,) * (x.ndim - 2)) if v.size > 1 else v[0]
    xt = torch.from_numpy((x * a.scale - per_channel(a.mean)) / per_channel(a.std))
    with torch.no_grad():
        logits = net(xt)
        loss = F.cross_entropy(logits, torch.from_numpy(y)).item()
        acc = (logits.argmax(1).numpy() == y).mean()
    print(json.dumps({"test_acc": float(acc), "test_loss": loss, "tensors": len(tensors),
                      "logits": logits[:4].tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
