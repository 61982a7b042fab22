#!/usr/bin/python3
"""PyTorch's bf16 autocast values for tests/test_bf16_autocast.c.

    /usr/bin/python3 tests/gen_fixtures_bf16.py > tests/fixtures/bf16_autocast.txt

A linear layer and a padded conv2d, run forward under
torch.autocast("cpu", dtype=torch.bfloat16) and backward from a fixed seed
gradient, with f32 leaves. Inputs are a fixed formula (no RNG), so the C
test rebuilds them. Each line: NAME N V1 ... VN (the values as f32, "%.9g").
PyTorch returns the autocast products in bf16 and computes their gradients in
bf16 too; tapegrad returns f32 from f32 accumulation: the test compares
within bf16's precision.
"""
import sys

import torch
import torch.nn.functional as F


def vals(n, a, b):
    """Value i of a fixed sequence in [-1, 1): the C test's fx_value."""
    return torch.tensor([((i * a + b) % 97) / 48.5 - 1.0 for i in range(n)], dtype=torch.float32)


def emit(name, t):
    t = t.detach().float().reshape(-1)
    sys.stdout.write("%s %d %s\n" % (name, t.numel(), " ".join("%.9g" % v for v in t.tolist())))


def main():
    print("# PyTorch %s, torch.autocast('cpu', dtype=torch.bfloat16)" % torch.__version__)
    x = vals(4 * 6, 7, 3).reshape(4, 6).requires_grad_()
    w = vals(5 * 6, 11, 5).reshape(5, 6).requires_grad_()
    b = vals(5, 13, 1).requires_grad_()
    g = vals(4 * 5, 17, 2).reshape(4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = F.linear(x, w, b)
    assert y.dtype == torch.bfloat16
    y.backward(g)
    emit("linear.y", y)
    emit("linear.dx", x.grad)
    emit("linear.dw", w.grad)
    cx = vals(2 * 3 * 6 * 6, 19, 7).reshape(2, 3, 6, 6).requires_grad_()
    cw = vals(4 * 3 * 3 * 3, 23, 4).reshape(4, 3, 3, 3).requires_grad_()
    cb = vals(4, 29, 6).requires_grad_()
    cg = vals(2 * 4 * 6 * 6, 31, 8).reshape(2, 4, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cy = F.conv2d(cx, cw, cb, padding=1)
    assert cy.dtype == torch.bfloat16
    cy.backward(cg)
    emit("conv.y", cy)
    emit("conv.dx", cx.grad)
    emit("conv.dw", cw.grad)


if __name__ == "__main__":
    main()
