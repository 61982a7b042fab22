#!/usr/bin/env python3
"""PyTorch's bf16 autocast values of scaled_dot_product_attention for
tests/test_attn_bf16.c (needs torch >= 2.0: Debian's torch 1.13 has no
F.scaled_dot_product_attention).

    PYTHON tests/gen_fixtures_attn_bf16.py > tests/fixtures/attn_bf16.txt

q, k, v (1, 2, 9, 16) f32 leaves (T_k = 13 for the non-causal case), run
forward under torch.autocast("cpu", dtype=torch.bfloat16), which runs SDPA on
bf16 operands, and backward from a fixed seed gradient. Inputs are a fixed
formula (no RNG), so the C test rebuilds them: value i of vals(n, a, b) is
((i * a + b) % 97) / 48.5 - 1, q and k doubled. Each line: NAME N V1 ... VN
(the values as f32, "%.9g"). PyTorch returns the output and the gradients
rounded to bf16; tapegrad returns f32: the test compares within bf16's
precision.
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


def case(name, tk, causal):
    sq, sk = (1, 2, 9, 16), (1, 2, tk, 16)
    q = (2 * vals(2 * 9 * 16, 7, 3)).reshape(sq).requires_grad_()
    k = (2 * vals(2 * tk * 16, 11, 5)).reshape(sk).requires_grad_()
    v = vals(2 * tk * 16, 13, 1).reshape(sk).requires_grad_()
    g = vals(2 * 9 * 16, 17, 2).reshape(sq)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert o.dtype == torch.bfloat16
    o.backward(g)
    emit(name + ".o", o)
    emit(name + ".dq", q.grad)
    emit(name + ".dk", k.grad)
    emit(name + ".dv", v.grad)


def main():
    print("# PyTorch %s, torch.autocast('cpu', dtype=torch.bfloat16)" % torch.__version__)
    case("sdpa", 13, False)
    case("sdpa_causal", 9, True)


if __name__ == "__main__":
    main()
