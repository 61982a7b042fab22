#!/usr/bin/env python3
"""PyTorch reference fixtures for tests/test_torch_fixtures.c (which runs every
case) and tests/test_torch_fixture_coverage.c (every ops.def row has a case).

Regenerate (needs PyTorch; `scripts/setup.sh --with-torch` installs it):

    python3 tests/gen_fixtures.py

which rewrites tests/fixtures/ops.txt. The output is deterministic: every case
draws its values from its own torch.Generator seeded from the case's name, so
adding or removing a case leaves the others unchanged.

Every case computes `out = op(inputs)` in float64 and, for differentiable ops,
the gradients of sum(out * W) with respect to each input that requires grad,
where W (the "seed") is a fixed random tensor of out's shape; the C test feeds W
to tg_backward() as the seed gradient, so backward is checked with a
non-trivial upstream gradient rather than ones.

Inputs and seeds are rounded to multiples of 1/64 (and kept small), so they
print short and convert to float32 exactly: the float32 run of the C test then
evaluates the same function at the same point, and only the arithmetic differs.

File format (one item per line, whitespace separated, '#' starts a comment
line; float values are printed with '%.17g', which round-trips float64):

    case <op> <id>
    param <key> <values...>                     (zero or more)
    input <name> <dtype> <requires_grad 0|1> <ndim> <dims...> : <values...>
    output <dtype> <ndim> <dims...> : <values...>   (one per result, in order)
    seed <ndim> <dims...> : <values...>         (one per output; diff ops)
    grad <input-name> <ndim> <dims...> : <values...>
    end

Values are in row-major order. dtype is f64, i64 or u8. The param `view <input>
<d0> <d1>` means the op receives transpose(input, d0, d1) instead of the input
itself (a strided operand); the gradient is still that of the stored input.
Ops with several results (chunk) list several outputs and seeds; the loss is
the sum over all of them.
"""

import math
import os
import sys
import zlib

import torch

import gen_fixtures_ops2

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_PATH = os.path.join(HERE, "fixtures", "ops.txt")
INT64_MAX = 9223372036854775807

F64 = torch.float64

# Ops whose output never requires grad (TG_OPF_DIFF unset in ops.def).
NONDIFF = {"eq", "sign", "argmax", "max_pool2d_indices", "max_pool2d_backward",
           "batch_norm_backward", "ne", "gt", "ge", "lt", "le", "topk_indices"}

_lines = []
_ids = set()
_gen = torch.Generator()


# ---- value helpers -------------------------------------------------------

def _q(t, step=1.0 / 64):
    """Round to a multiple of `step` so the value is short and f32-exact."""
    return torch.round(t / step) * step


def randn(*shape, scale=1.0):
    return _q(torch.randn(shape, generator=_gen, dtype=F64) * scale)


def uniform(lo, hi, *shape):
    return _q(torch.rand(shape, generator=_gen, dtype=F64) * (hi - lo) + lo)


def away(*shape, lo=0.25, scale=1.0):
    """Values with |x| >= lo, where abs/relu/sign are differentiable."""
    x = randn(*shape, scale=scale)
    s = torch.where(x >= 0, 1.0, -1.0).to(F64)
    return s * torch.clamp(x.abs(), min=lo)


def randint(lo, hi, *shape):
    return torch.randint(lo, hi, shape, generator=_gen, dtype=torch.int64)


def small_ints(lo, hi, *shape):
    """Small integers as float64: many ties and exact equalities."""
    return randint(lo, hi, *shape).to(F64)


# ---- formatting ----------------------------------------------------------

def _dtype_name(t):
    if t.dtype == F64:
        return "f64"
    if t.dtype == torch.int64:
        return "i64"
    if t.dtype == torch.uint8:
        return "u8"
    raise ValueError("unsupported dtype %s" % t.dtype)


def _shape(t):
    return " ".join([str(t.dim())] + [str(d) for d in t.shape])


def _values(t):
    flat = t.detach().contiguous().reshape(-1).tolist()
    if t.dtype == F64:
        for v in flat:
            if not math.isfinite(v):
                raise ValueError("non-finite value in fixture")
        return " ".join("%.17g" % v for v in flat)
    return " ".join(str(int(v)) for v in flat)


def _param_str(v):
    if isinstance(v, float):
        return "%.17g" % v
    return str(v)


# ---- the case emitter ----------------------------------------------------

def case(op, cid, inputs, fn, params=(), views=None):
    """Record one case.

    inputs: list of (name, tensor, requires_grad); fn(dict name -> operand)
    returns a tensor or a list of tensors. params: list of (key, values) where
    values is a list (numbers) or a str (the rest of the line). views: dict
    name -> (d0, d1), the operand is the stored input transposed.
    """
    key = "%s/%s" % (op, cid)
    if key in _ids:
        raise ValueError("duplicate case " + key)
    _ids.add(key)
    _gen.manual_seed(zlib.crc32(key.encode()) ^ 0x5EED)
    inputs = inputs() if callable(inputs) else inputs
    views = views or {}
    diff = op not in NONDIFF

    leaves = {}
    operands = {}
    for name, t, rg in inputs:
        leaf = t.clone()
        if rg:
            leaf.requires_grad_(True)
        leaves[name] = leaf
        operands[name] = leaf.transpose(*views[name]) if name in views else leaf
    outs = fn(operands)
    if isinstance(outs, torch.Tensor):
        outs = [outs]

    seeds = []
    grads = {}
    # An op on integer (or constant) inputs only has nothing to differentiate.
    if diff and any(rg for _, _, rg in inputs):
        seeds = [randn(*o.shape) for o in outs]
        loss = sum((o * w).sum() for o, w in zip(outs, seeds))
        wrt = [n for n, _, rg in inputs if rg]
        gs = torch.autograd.grad(loss, [leaves[n] for n in wrt])
        for n, g in zip(wrt, gs):
            assert g is not None, key
            grads[n] = g

    _lines.append("case %s %s" % (op, cid))
    for k, v in params:
        if isinstance(v, str):
            _lines.append(("param %s %s" % (k, v)).rstrip())
        else:
            _lines.append(" ".join(["param", k] + [_param_str(x) for x in v]))
    for name, (d0, d1) in views.items():
        _lines.append("param view %s %d %d" % (name, d0, d1))
    for name, t, rg in inputs:
        _lines.append("input %s %s %d %s : %s" % (name, _dtype_name(t), 1 if rg else 0,
                                                  _shape(t), _values(t)))
    for o in outs:
        _lines.append("output %s %s : %s" % (_dtype_name(o), _shape(o), _values(o)))
    for w in seeds:
        _lines.append("seed %s : %s" % (_shape(w), _values(w)))
    for name, _, rg in inputs:
        if rg and seeds:
            g = grads[name]
            _lines.append("grad %s %s : %s" % (name, _shape(g), _values(g)))
    _lines.append("end")


def inp(name, t, rg=None):
    if rg is None:
        rg = t.dtype == F64
    return (name, t, rg)


# ---- cases -----------------------------------------------------------------

def binary_cases():
    fns = {
        "add": lambda o: o["a"] + o["b"],
        "sub": lambda o: o["a"] - o["b"],
        "mul": lambda o: o["a"] * o["b"],
        "div": lambda o: o["a"] / o["b"],
    }

    def den(*shape):
        return away(*shape, lo=0.5)

    shapes = {
        "add": [("same", (2, 3), (2, 3)), ("bcast_231_34", (2, 3, 1), (3, 4)),
                ("bcast_rows", (3, 1, 17), (1, 4, 17)),
                ("size1_13_21", (1, 3), (2, 1)), ("scalar_rhs", (2, 3), ())],
        "sub": [("bcast_231_34", (2, 3, 1), (3, 4)), ("row_3_23", (3,), (2, 3)),
                ("scalar_lhs", (), (2, 2))],
        "mul": [("bcast_4_234", (4,), (2, 3, 4)), ("wide_rows", (3, 13), (13,)),
                ("same", (2, 3), (2, 3)),
                ("size1_213_121", (2, 1, 3), (1, 2, 1))],
        "div": [("same", (2, 3), (2, 3)), ("wide", (37,), (37,)), ("bcast_31_14", (3, 1), (1, 4)),
                ("scalar_lhs", (), (2, 3)), ("bcast_23_3", (2, 3), (3,))],
    }
    for op, lst in shapes.items():
        for cid, sa, sb in lst:
            mk_b = den if op == "div" else randn
            case(op, cid,
                 lambda sa=sa, sb=sb, mk_b=mk_b: [inp("a", randn(*sa)), inp("b", mk_b(*sb))],
                 fns[op])
        # A strided operand: a is stored (3, 2) and used transposed.
        mk_b = den if op == "div" else randn
        case(op, "strided_lhs", lambda mk_b=mk_b: [inp("a", randn(3, 2)), inp("b", mk_b(2, 3))],
             fns[op], views={"a": (0, 1)})

    def eqf(o):
        return (o["a"] == o["b"]).to(o["a"].dtype)

    case("eq", "same", lambda: [inp("a", small_ints(0, 3, 2, 3)), inp("b", small_ints(0, 3, 2, 3))],
         eqf)
    case("eq", "bcast_23_3",
         lambda: [inp("a", small_ints(0, 2, 2, 3)), inp("b", small_ints(0, 2, 3))], eqf)
    case("eq", "bcast_21_14", lambda: [inp("a", small_ints(0, 2, 2, 1)),
                                       inp("b", small_ints(0, 2, 1, 4))], eqf)

    def wheref(o):
        return torch.where(o["cond"] != 0, o["a"], o["b"])

    case("where", "same_u8", lambda: [inp("cond", randint(0, 2, 2, 3).to(torch.uint8)),
                                      inp("a", randn(2, 3)), inp("b", randn(2, 3))], wheref)
    case("where", "bcast_u8", lambda: [inp("cond", randint(0, 2, 2, 1).to(torch.uint8)),
                                       inp("a", randn(3)), inp("b", randn(2, 3))], wheref)
    case("where", "bcast_all3", lambda: [inp("cond", randint(0, 2, 1, 3, 1).to(torch.uint8)),
                                         inp("a", randn(2, 1, 4)), inp("b", randn(3, 1))], wheref)
    # A float condition: any nonzero value (2, -1) counts as true.
    cond = torch.tensor([[2.0, 0, -1], [0, 1, 0]], dtype=F64)
    case("where", "float_cond", lambda: [inp("cond", cond, rg=False),
                                         inp("a", randn(2, 3)), inp("b", randn(2, 3))], wheref)


def unary_cases():
    case("neg", "basic", lambda: [inp("a", randn(2, 3))], lambda o: -o["a"])
    case("neg", "scalar", lambda: [inp("a", randn())], lambda o: -o["a"])
    case("affine", "basic", lambda: [inp("a", randn(2, 3))], lambda o: -1.5 * o["a"] + 0.25,
         params=[("scale", [-1.5]), ("shift", [0.25])])
    case("affine", "scale_only", lambda: [inp("a", randn(4))], lambda o: 2.0 * o["a"] + 0.0,
         params=[("scale", [2.0]), ("shift", [0.0])])
    case("add_scalar", "basic", lambda: [inp("a", randn(2, 3))], lambda o: o["a"] + 0.75,
         params=[("s", [0.75])])
    case("mul_scalar", "basic", lambda: [inp("a", randn(2, 3))], lambda o: o["a"] * -3.0,
         params=[("s", [-3.0])])

    for cid, mk, p in [("sqrt_pos", lambda: uniform(0.25, 3, 2, 3), 0.5),
                       ("neg_frac_pos", lambda: uniform(0.5, 2, 2, 3), -1.5),
                       ("square", lambda: randn(2, 3), 2.0),
                       ("cube", lambda: randn(2, 3), 3.0),
                       ("recip", lambda: away(3, lo=0.5), -1.0)]:
        case("pow_scalar", cid, lambda mk=mk: [inp("a", mk())], lambda o, p=p: o["a"] ** p,
             params=[("p", [p])])

    case("exp", "basic", lambda: [inp("a", randn(2, 3))], lambda o: torch.exp(o["a"]))
    case("exp", "strided", lambda: [inp("a", randn(3, 2))], lambda o: torch.exp(o["a"]),
         views={"a": (0, 1)})
    case("log", "pos", lambda: [inp("a", uniform(0.25, 4, 2, 3))], lambda o: torch.log(o["a"]))
    case("sqrt", "pos", lambda: [inp("a", uniform(0.25, 4, 2, 3))], lambda o: torch.sqrt(o["a"]))
    case("abs", "away", lambda: [inp("a", away(2, 3))], lambda o: torch.abs(o["a"]))
    case("erf", "basic", lambda: [inp("a", randn(2, 4, scale=1.5))], lambda o: torch.erf(o["a"]))
    case("relu", "away", lambda: [inp("a", away(2, 4))], lambda o: torch.relu(o["a"]))
    case("relu", "strided", lambda: [inp("a", away(3, 2))], lambda o: torch.relu(o["a"]),
         views={"a": (0, 1)})
    case("sigmoid", "basic", lambda: [inp("a", randn(2, 3, scale=3))],
         lambda o: torch.sigmoid(o["a"]))
    case("tanh", "basic", lambda: [inp("a", randn(2, 3, scale=2))], lambda o: torch.tanh(o["a"]))
    case("silu", "basic", lambda: [inp("a", randn(2, 3, scale=3))],
         lambda o: torch.nn.functional.silu(o["a"]))
    case("gelu", "basic", lambda: [inp("a", randn(2, 4, scale=3))],
         lambda o: torch.nn.functional.gelu(o["a"]))

    def clamp_input(lo, hi, n):
        # Keep every value at least 1/8 away from both bounds.
        x = randn(n, scale=1.5)
        for b in (lo, hi):
            if math.isfinite(b):
                near = (x - b).abs() < 0.125
                x = torch.where(near, torch.full_like(x, b) + 0.25 * torch.sign(x - b + 1e-9), x)
        return x

    case("clamp", "both", lambda: [inp("a", clamp_input(-0.5, 0.75, 8))],
         lambda o: torch.clamp(o["a"], -0.5, 0.75), params=[("lo", [-0.5]), ("hi", [0.75])])
    case("clamp", "upper_only", lambda: [inp("a", clamp_input(-math.inf, 0.5, 6))],
         lambda o: torch.clamp(o["a"], -math.inf, 0.5),
         params=[("lo", [-math.inf]), ("hi", [0.5])])

    def sign_input():
        x = away(2, 4)
        x[0, 1] = 0.0
        return x

    case("sign", "with_zero", lambda: [inp("a", sign_input())], lambda o: torch.sign(o["a"]))

    # Long rows with extreme values: vectorised kernels run their main loop
    # (not only the tail), and approximations are checked where they saturate.
    def wide(mk, extremes):
        return torch.cat([mk(), torch.tensor(extremes, dtype=F64)])

    unary_wide = [
        ("exp", torch.exp, lambda: randn(32, scale=3), [-30.0, -12.5, 10.25, 20.5]),
        ("log", torch.log, lambda: uniform(0.05, 8, 32), [1 / 1024, 1 / 64, 100.0, 1000.5]),
        ("sqrt", torch.sqrt, lambda: uniform(0.25, 9, 32), [1 / 1024, 400.0, 10000.0]),
        ("erf", torch.erf, lambda: randn(32, scale=2), [-5.0, -3.5, 4.25, 6.0]),
        ("sigmoid", torch.sigmoid, lambda: randn(32, scale=4), [-40.0, -18.0, 17.0, 35.0]),
        ("tanh", torch.tanh, lambda: randn(32, scale=2), [-12.0, -4.5, 5.25, 20.0]),
        ("silu", torch.nn.functional.silu, lambda: randn(32, scale=4), [-30.0, -15.0, 12.0, 40.0]),
        ("gelu", torch.nn.functional.gelu, lambda: randn(32, scale=3), [-9.0, -6.0, 5.5, 10.0]),
        ("abs", torch.abs, lambda: away(33), [-1000.0, 250.5]),
        ("relu", torch.relu, lambda: away(33), [-1000.0, 250.5]),
    ]
    for op, fn, mk, ext in unary_wide:
        case(op, "wide", lambda mk=mk, ext=ext: [inp("a", wide(mk, ext))],
             lambda o, fn=fn: fn(o["a"]))
    case("pow_scalar", "wide",
         lambda: [inp("a", wide(lambda: uniform(0.05, 4, 32), [1 / 256, 50.0]))],
         lambda o: o["a"] ** 1.5, params=[("p", [1.5])])
    case("clamp", "wide", lambda: [inp("a", clamp_input(-0.5, 0.75, 37))],
         lambda o: torch.clamp(o["a"], -0.5, 0.75), params=[("lo", [-0.5]), ("hi", [0.75])])

    def sign_wide():
        x = away(37)
        x[5] = x[17] = x[36] = 0.0
        return x

    case("sign", "wide", lambda: [inp("a", sign_wide())], lambda o: torch.sign(o["a"]))

    case("relu_backward", "basic", lambda: [inp("g", randn(2, 3)), inp("x", away(2, 3), rg=False)],
         lambda o: o["g"] * (o["x"] > 0).to(F64))
    # The exact (erf) GELU's derivative, as aten's gelu_backward computes it.
    case("gelu_backward", "basic",
         lambda: [inp("g", randn(2, 4)), inp("x", randn(2, 4, scale=3))],
         lambda o: torch.ops.aten.gelu_backward(o["g"], o["x"]))
    case("gelu_backward", "broadcast",
         lambda: [inp("g", randn(3, 4)), inp("x", randn(4, scale=3))],
         lambda o: torch.ops.aten.gelu_backward(o["g"], o["x"].expand(3, 4)))
    case("clamp_backward", "basic",
         lambda: [inp("g", randn(2, 4)),
                  inp("x", clamp_input(-0.5, 0.75, 8).reshape(2, 4), rg=False)],
         lambda o: o["g"] * ((o["x"] >= -0.5) & (o["x"] <= 0.75)).to(F64),
         params=[("lo", [-0.5]), ("hi", [0.75])])


def reduction_cases():
    def red(fn):
        def f(o, axes, keep):
            x = o["a"]
            # An empty axis list means all axes, as in tg_sum().
            dims = tuple(axes) if axes else tuple(range(x.dim()))
            return fn(x, dims, keep)
        return f

    sumf = red(lambda x, d, k: torch.sum(x, dim=d, keepdim=k))
    meanf = red(lambda x, d, k: torch.mean(x, dim=d, keepdim=k))
    amaxf = red(lambda x, d, k: torch.amax(x, dim=d, keepdim=k))
    aminf = red(lambda x, d, k: torch.amin(x, dim=d, keepdim=k))

    def add(op, cid, mk, f, axes, keep, views=None):
        case(op, cid, lambda: [inp("a", mk())], lambda o: f(o, axes, keep),
             params=[("axes", list(axes)), ("keepdim", [1 if keep else 0])], views=views)

    r234 = lambda: randn(2, 3, 4)  # noqa: E731
    add("sum", "all", r234, sumf, [], False)
    add("sum", "all_keepdim", r234, sumf, [0, 1, 2], True)
    add("sum", "axis1_keepdim", r234, sumf, [1], True)
    add("sum", "axes02", r234, sumf, [0, 2], False)
    add("sum", "neg_axis", r234, sumf, [-1], False)
    add("sum", "neg_axes_keepdim", r234, sumf, [-3, -1], True)
    add("sum", "strided", lambda: randn(4, 3), sumf, [1], False, views={"a": (0, 1)})
    add("mean", "all", r234, meanf, [], False)
    add("mean", "axis0_keepdim", r234, meanf, [0], True)
    add("mean", "axes_neg12", r234, meanf, [-1, -2], False)
    add("mean", "1d", lambda: randn(5), meanf, [0], False)
    add("sum", "wide_rows", lambda: randn(2, 37), sumf, [-1], False)
    add("max", "wide_rows_ties", lambda: small_ints(0, 4, 2, 37), amaxf, [1], False)
    add("min", "wide_rows", lambda: randn(2, 37), aminf, [1], True)
    add("sum", "scalar_input", lambda: randn(), sumf, [], False)
    # Reductions whose kept last dim is contiguous and long: the CPU backend
    # reduces those column-wise, in blocks of 128 columns.
    add("sum", "columns", lambda: randn(3, 40), sumf, [0], False)
    add("sum", "inner_columns", lambda: randn(3, 4, 17), sumf, [1], False)
    add("mean", "column_blocks", lambda: randn(2, 130), meanf, [0], False)

    def ties():
        # Values in {0, 1, 2}: many tied maxima and minima in every reduction.
        return small_ints(0, 3, 2, 3, 4)

    def ties_global_max():
        x = small_ints(0, 3, 2, 3, 4)
        x[0, 1, 2] = 5.0
        x[1, 2, 0] = 5.0
        x[1, 0, 3] = 5.0
        return x

    def ties_global_min():
        x = small_ints(0, 3, 2, 3, 4)
        x[0, 0, 1] = -4.0
        x[1, 1, 3] = -4.0
        return x

    add("max", "all_ties", ties_global_max, amaxf, [], False)
    add("max", "all_ties_keepdim", ties_global_max, amaxf, [0, 1, 2], True)
    add("max", "axis1_ties_keepdim", ties, amaxf, [1], True)
    add("max", "axes_neg1_0_ties", ties, amaxf, [-1, 0], False)
    add("max", "axis2_distinct", r234, amaxf, [2], False)
    add("max", "strided", lambda: small_ints(0, 3, 4, 3), amaxf, [1], False, views={"a": (0, 1)})
    add("max", "columns_ties", lambda: small_ints(0, 3, 5, 20), amaxf, [0], True)
    add("min", "columns_ties", lambda: small_ints(0, 3, 4, 18), aminf, [-2], False)
    add("min", "all_ties", ties_global_min, aminf, [], False)
    add("min", "axis0_ties", ties, aminf, [0], False)
    add("min", "axes12_ties_keepdim", ties, aminf, [1, 2], True)
    add("min", "neg_axis_distinct", r234, aminf, [-2], False)

    def argmaxc(cid, mk, axis, keep):
        case("argmax", cid, lambda: [inp("a", mk())],
             lambda o: torch.argmax(o["a"], dim=axis, keepdim=keep),
             params=[("axis", [axis]), ("keepdim", [1 if keep else 0])])

    # torch.argmax returns the first maximal index, as tapegrad documents.
    argmaxc("axis1_ties", lambda: small_ints(0, 3, 3, 4), 1, False)
    argmaxc("neg_axis_keepdim", lambda: small_ints(0, 3, 3, 4), -1, True)
    argmaxc("axis0_3d", lambda: randn(2, 3, 4), 0, False)
    argmaxc("axis1_3d_ties", lambda: small_ints(0, 2, 2, 3, 2), 1, True)

    def sum_to(cid, src_shape, shape):
        case("sum_to", cid, lambda: [inp("b", randn(*src_shape))],
             lambda o: o["b"].sum_to_size(shape) if shape else o["b"].sum(),
             params=[("shape", list(shape))])

    sum_to("lead_and_keep", (2, 3, 4), (3, 1))
    sum_to("lead_only", (2, 3, 4), (4,))
    sum_to("keep_only", (2, 3), (1, 3))
    sum_to("identity", (2, 3), (2, 3))
    sum_to("mixed", (2, 3, 4), (2, 1, 4))


def matmul_cases():
    mm = lambda o: torch.matmul(o["a"], o["b"])  # noqa: E731
    for cid, sa, sb in [("2d_2d", (2, 3), (3, 4)),
                        ("batched_3d_2d", (2, 3, 4), (4, 2)),
                        ("bcast_batch", (2, 1, 2, 3), (2, 3, 2)),
                        ("batched_3d_3d", (2, 2, 3), (2, 3, 2)),
                        ("vec_mat", (3,), (3, 4)),
                        ("mat_vec", (2, 3), (3,)),
                        ("dot", (4,), (4,)),
                        ("vec_batched", (3,), (2, 3, 2)),
                        ("batched_vec", (2, 2, 3), (3,)),
                        ("outer_k1", (3, 1), (1, 4)),
                        ("row_col", (1, 3), (3, 1)),
                        ("medium", (6, 9), (9, 7))]:
        case("matmul", cid, lambda sa=sa, sb=sb: [inp("a", randn(*sa)), inp("b", randn(*sb))], mm)
    case("matmul", "strided_both", lambda: [inp("a", randn(3, 2)), inp("b", randn(4, 3))], mm,
         views={"a": (0, 1), "b": (0, 1)})
    # Batch dim not outermost in memory.
    case("matmul", "strided_batch", lambda: [inp("a", randn(3, 2, 4)), inp("b", randn(4, 2))], mm,
         views={"a": (0, 1)})
    # Matrices neither row- nor column-major: BLAS cannot take them as they lie.
    case("matmul", "strided_neither", lambda: [inp("a", randn(4, 2, 3)), inp("b", randn(4, 2))], mm,
         views={"a": (0, 2)})


def shape_cases():
    case("copy", "basic", lambda: [inp("a", randn(2, 3))], lambda o: o["a"].clone())
    case("copy", "strided", lambda: [inp("a", randn(3, 4))], lambda o: o["a"].clone(),
         views={"a": (0, 1)})
    # world_sum on a world of one (no collective in the context) is the
    # identity, as torch.distributed.all_reduce(SUM) is on one process.
    case("world_sum", "one_rank", lambda: [inp("a", randn(2, 3))], lambda o: o["a"].clone())
    case("world_sum", "strided_one_rank", lambda: [inp("a", randn(3, 4))],
         lambda o: o["a"].clone(), views={"a": (0, 1)})
    case("contiguous", "strided", lambda: [inp("a", randn(2, 3, 2))],
         lambda o: o["a"].contiguous(), views={"a": (0, 2)})

    def reshape(cid, mk, shape, views=None):
        case("reshape", cid, lambda: [inp("a", mk())], lambda o: o["a"].reshape(shape),
             params=[("shape", list(shape))], views=views)

    reshape("infer", lambda: randn(2, 6), (3, -1))
    reshape("split_dims", lambda: randn(6), (2, 1, 3))
    reshape("strided_flatten", lambda: randn(3, 4), (12,), views={"a": (0, 1)})
    reshape("to_scalar", lambda: randn(1, 1), ())

    case("permute", "3d", lambda: [inp("a", randn(2, 3, 4))], lambda o: o["a"].permute(2, 0, 1),
         params=[("perm", [2, 0, 1])])
    case("permute", "identity", lambda: [inp("a", randn(2, 3))], lambda o: o["a"].permute(0, 1),
         params=[("perm", [0, 1])])
    case("transpose", "outer", lambda: [inp("a", randn(2, 3, 4))], lambda o: o["a"].transpose(0, 2),
         params=[("dims", [0, 2])])
    case("transpose", "neg", lambda: [inp("a", randn(2, 3))], lambda o: o["a"].transpose(-1, -2),
         params=[("dims", [-1, -2])])

    def bto(cid, src, shape):
        case("broadcast_to", cid, lambda: [inp("a", randn(*src))],
             lambda o: torch.broadcast_to(o["a"], shape), params=[("shape", list(shape))])

    bto("col_to_3d", (3, 1), (2, 3, 4))
    bto("row_to_2d", (4,), (3, 4))
    bto("scalar", (), (2, 3))
    bto("middle_one", (2, 1, 3), (2, 2, 3))

    def pyslice(x, axis, start, stop, step):
        axis = axis % x.dim()
        idx = [slice(None)] * x.dim()
        idx[axis] = slice(start, stop, step)
        return x[tuple(idx)]

    def slc(cid, mk, axis, start, stop, step):
        case("slice", cid, lambda: [inp("a", mk())],
             lambda o: pyslice(o["a"], axis, start, stop, step),
             params=[("axis", [axis]), ("start", [start]), ("stop", [stop]), ("step", [step])])

    slc("step2", lambda: randn(5, 3), 0, 1, 5, 2)
    slc("neg_axis_neg_start", lambda: randn(2, 5), -1, -3, 100, 1)
    slc("clamped_start_step2", lambda: randn(2, 6), 1, -10, -1, 2)
    slc("to_end", lambda: randn(4, 2), 0, 1, INT64_MAX, 1)
    slc("step3_3d", lambda: randn(2, 7, 2), 1, 0, 7, 3)
    slc("empty", lambda: randn(4, 2), 0, 3, 1, 1)

    def sscat(cid, src_shape, shape, axis, start, stop, step):
        def f(o):
            out = torch.zeros(shape, dtype=F64)
            idx = [slice(None)] * len(shape)
            idx[axis % len(shape)] = slice(start, stop, step)
            out[tuple(idx)] = o["src"]
            return out

        case("slice_scatter", cid, lambda: [inp("src", randn(*src_shape))], f,
             params=[("shape", list(shape)), ("axis", [axis]), ("start", [start]),
                     ("stop", [stop]), ("step", [step])])

    sscat("step2", (2, 3), (5, 3), 0, 1, 5, 2)
    sscat("neg_axis", (2, 3), (2, 5), -1, -3, 100, 1)
    sscat("step3_3d", (2, 3, 2), (2, 7, 2), 1, 0, 7, 3)

    def concat(cid, shapes, axis):
        names = ["x%d" % i for i in range(len(shapes))]
        case("concat", cid, lambda: [inp(n, randn(*s)) for n, s in zip(names, shapes)],
             lambda o: torch.cat([o[n] for n in names], dim=axis), params=[("axis", [axis])])

    concat("axis1_three", [(2, 1), (2, 3), (2, 2)], 1)
    concat("neg_axis", [(1, 3), (2, 3)], -2)
    concat("3d_last", [(2, 1, 2), (2, 1, 1)], 2)
    concat("single", [(2, 2)], 0)

    def stack(cid, n, shape, axis):
        names = ["x%d" % i for i in range(n)]
        case("stack", cid, lambda: [inp(nm, randn(*shape)) for nm in names],
             lambda o: torch.stack([o[nm] for nm in names], dim=axis), params=[("axis", [axis])])

    stack("axis0", 3, (2, 2), 0)
    stack("axis1", 2, (2, 3), 1)
    stack("neg_axis", 2, (2, 3), -1)

    def chunk(cid, shape, chunks, axis):
        case("chunk", cid, lambda: [inp("a", randn(*shape))],
             lambda o: list(torch.chunk(o["a"], chunks, dim=axis)),
             params=[("chunks", [chunks]), ("axis", [axis])])

    chunk("uneven", (7, 2), 3, 0)
    chunk("fewer_than_asked", (2, 5), 4, -1)
    chunk("even_1d", (6,), 2, 0)

    def rearr(cid, shape, pattern, sizes, ref):
        params = [("pattern", pattern)]
        if sizes:
            params.append(("sizes", sizes))
        case("rearrange", cid, lambda: [inp("a", randn(*shape))], lambda o: ref(o["a"]),
             params=params)

    # einops is not available: each reference spells the pattern out with
    # reshape and permute.
    rearr("group_swap", (2, 6, 3), "a (b1 b2) c -> (a c) (b2 b1)", "b1=2",
          lambda x: x.reshape(2, 2, 3, 3).permute(0, 3, 2, 1).reshape(6, 6))
    rearr("nhwc_to_nchw", (2, 3, 2, 2), "b h w c -> b c h w", "",
          lambda x: x.permute(0, 3, 1, 2))
    rearr("patches", (1, 4, 6, 2), "b (h p1) (w p2) c -> b (h w) (p1 p2 c)", "p1=2,p2=2",
          lambda x: x.reshape(1, 2, 2, 3, 2, 2).permute(0, 1, 3, 2, 4, 5).reshape(1, 6, 8))
    rearr("split_lead", (6, 2), "(b s) d -> b s d", "b=2", lambda x: x.reshape(2, 3, 2))
    rearr("merge", (2, 3, 2), "a b c -> a (b c)", "", lambda x: x.reshape(2, 6))


def softmax_cases():
    for op, fn in [("softmax", torch.softmax), ("log_softmax", torch.log_softmax)]:
        def sm(cid, mk, axis, views=None, fn=fn, op=op):
            case(op, cid, lambda: [inp("a", mk())], lambda o: fn(o["a"], dim=axis),
                 params=[("axis", [axis])], views=views)

        sm("last", lambda: randn(2, 5, scale=2), -1)
        sm("axis0", lambda: randn(3, 4, scale=2), 0)
        sm("middle_3d", lambda: randn(2, 3, 2, scale=2), 1)
        # Inputs near 100: exp overflows float32 unless the max is subtracted.
        sm("large", lambda: randn(2, 4, scale=3) + 100.0, 1)
        sm("strided", lambda: randn(4, 3, scale=2), 1, views={"a": (0, 1)})
        sm("ties", lambda: small_ints(0, 2, 2, 3), -1)
        sm("singleton_axis", lambda: randn(3, 1), 1)
        sm("wide", lambda: randn(2, 40, scale=2), -1)


def index_cases():
    def gather(cid, ashape, axis, ishape, hi, views=None):
        case("gather", cid,
             lambda: [inp("a", randn(*ashape)), inp("index", randint(0, hi, *ishape))],
             lambda o: torch.gather(o["a"], axis, o["index"]), params=[("axis", [axis])],
             views=views)

    gather("axis1_dups", (3, 4), 1, (3, 5), 4)
    gather("axis0", (4, 3), 0, (2, 3), 4)
    gather("neg_axis_smaller", (3, 4), -1, (2, 3), 4)
    gather("axis0_longer", (3, 2), 0, (5, 2), 3)
    gather("3d", (2, 3, 2), 1, (2, 2, 2), 3)
    gather("strided", (4, 3), 1, (3, 2), 4, views={"a": (0, 1)})
    gather("strided_index", (3, 4), 1, (2, 3), 4, views={"index": (0, 1)})
    gather("wide_axis0", (3, 70), 0, (2, 70), 3)

    def scatter(cid, shape, axis, ishape, hi):
        case("scatter_add", cid,
             lambda: [inp("src", randn(*ishape)), inp("index", randint(0, hi, *ishape))],
             lambda o: torch.zeros(shape, dtype=F64).scatter_add(axis, o["index"], o["src"]),
             params=[("axis", [axis]), ("shape", list(shape))])

    scatter("axis1_dups", (3, 4), 1, (3, 5), 4)
    scatter("axis0_longer", (4, 3), 0, (6, 3), 4)
    scatter("neg_axis_smaller", (3, 4), -1, (2, 2), 4)
    scatter("3d", (2, 3, 2), 1, (2, 4, 2), 3)
    # More than 64 columns: the CPU backend walks them in blocks.
    scatter("column_blocks", (3, 70), 0, (2, 70), 3)


# ---- nn.h: losses, dropout, convolution, pooling, layers ------------------

def _mix64(z):
    M = (1 << 64) - 1
    z = (z + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def _philox(key, counter):
    """Philox4x32-10, as runtime/core/rng.c (an independent implementation)."""
    M32 = 0xFFFFFFFF
    c = [counter & M32, (counter >> 32) & M32, 0, 0]
    k0, k1 = key & M32, (key >> 32) & M32
    for _ in range(10):
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        hi0, lo0 = p0 >> 32, p0 & M32
        hi1, lo1 = p1 >> 32, p1 & M32
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0 = (k0 + 0x9E3779B9) & M32
        k1 = (k1 + 0xBB67AE85) & M32
    return c


def dropout_mask(seed, stream, n, p):
    key = _mix64(seed ^ _mix64(stream))
    keep = []
    for i in range(n):
        w = _philox(key, i // 4)[i % 4]
        keep.append(1.0 if w / 4294967296.0 >= p else 0.0)
    return torch.tensor(keep, dtype=F64)


def nn_cases():
    F = torch.nn.functional

    def ce(cid, n, c, smoothing, views=None):
        case("cross_entropy", cid,
             lambda: [inp("logits", randn(n, c, scale=2)), inp("targets", randint(0, c, n))],
             lambda o: F.cross_entropy(o["logits"], o["targets"], label_smoothing=smoothing),
             params=[("smoothing", [smoothing])], views=views)

    ce("plain", 4, 5, 0.0)
    ce("smooth", 6, 3, 0.1)
    ce("one_row", 1, 7, 0.0)
    ce("large_logits", 3, 4, 0.2)
    case("cross_entropy", "shifted_100",
         lambda: [inp("logits", randn(3, 4, scale=3) + 100.0), inp("targets", randint(0, 4, 3))],
         lambda o: F.cross_entropy(o["logits"], o["targets"]), params=[("smoothing", [0.0])])

    def ceb(cid, n, c, smoothing):
        def f(o):
            x = o["logits"]
            lse = torch.logsumexp(x, 1, keepdim=True)
            q = F.one_hot(o["targets"], c).to(F64) * (1 - smoothing) + smoothing / c
            return o["g"] * (torch.exp(x - lse) - q) / n
        case("cross_entropy_backward", cid,
             lambda: [inp("g", randn()), inp("logits", randn(n, c, scale=2)),
                      inp("targets", randint(0, c, n))], f, params=[("smoothing", [smoothing])])

    ceb("plain", 4, 5, 0.0)
    ceb("smooth", 3, 6, 0.3)

    def drop(cid, shape, p, seed, stream):
        n = 1
        for d in shape:
            n *= d
        mask = dropout_mask(seed, stream, n, p).reshape(shape)
        case("dropout", cid, lambda: [inp("a", randn(*shape))],
             lambda o: o["a"] * mask / (1 - p),
             params=[("p", [p]), ("seed", [seed]), ("stream", [stream])])

    drop("p03", (4, 9), 0.3, 11, 0)
    drop("p05_3d", (2, 3, 5), 0.5, 12345, 7)

    def conv(cid, xs, ws, bias, stride, pad, dil):
        def mk():
            r = [inp("x", randn(*xs)), inp("w", randn(*ws, scale=0.5))]
            if bias:
                r.append(inp("b", randn(ws[0])))
            return r
        case("conv2d", cid, mk,
             lambda o: F.conv2d(o["x"], o["w"], o.get("b"), stride, pad, dil),
             params=[("stride", list(stride)), ("pad", list(pad)), ("dilation", list(dil))])

    conv("pad1_bias", (2, 3, 5, 5), (4, 3, 3, 3), True, (1, 1), (1, 1), (1, 1))
    conv("stride2", (1, 2, 7, 6), (3, 2, 3, 2), False, (2, 2), (0, 1), (1, 1))
    conv("dilation", (2, 1, 6, 6), (2, 1, 2, 3), True, (1, 1), (2, 0), (2, 2))
    conv("five_by_five", (2, 1, 8, 8), (3, 1, 5, 5), True, (1, 1), (2, 2), (1, 1))

    def conv_bw(which, cid, xs, ws, stride, pad, dil):
        n, c, h, w = xs
        k, _, r, s = ws
        oh = (h + 2 * pad[0] - dil[0] * (r - 1) - 1) // stride[0] + 1
        ow = (w + 2 * pad[1] - dil[1] * (s - 1) - 1) // stride[1] + 1
        params = [("stride", list(stride)), ("pad", list(pad)), ("dilation", list(dil))]
        if which == "input":
            def f(o):
                x0 = torch.zeros(xs, dtype=F64, requires_grad=True)
                y = F.conv2d(x0, o["w"], None, stride, pad, dil)
                return torch.autograd.grad(y, x0, o["g"], create_graph=True)[0]
            case("conv2d_backward_input", cid,
                 lambda: [inp("g", randn(n, k, oh, ow)), inp("w", randn(*ws, scale=0.5))], f,
                 params=params + [("size", [h, w])])
        else:
            def f(o):
                w0 = torch.zeros(ws, dtype=F64, requires_grad=True)
                y = F.conv2d(o["x"], w0, None, stride, pad, dil)
                return torch.autograd.grad(y, w0, o["g"], create_graph=True)[0]
            case("conv2d_backward_weight", cid,
                 lambda: [inp("x", randn(*xs)), inp("g", randn(n, k, oh, ow))], f,
                 params=params + [("size", [r, s])])

    conv_bw("input", "stride2_pad1", (2, 3, 5, 5), (4, 3, 3, 3), (2, 2), (1, 1), (1, 1))
    conv_bw("input", "dilation", (1, 2, 6, 5), (3, 2, 2, 2), (1, 1), (1, 0), (2, 1))
    conv_bw("weight", "stride2_pad1", (2, 3, 5, 5), (4, 3, 3, 3), (2, 2), (1, 1), (1, 1))
    conv_bw("weight", "dilation", (1, 2, 6, 5), (3, 2, 2, 2), (1, 2), (0, 1), (1, 2))

    def pool(op, cid, xs, k, s, p, mk=None):
        mk = mk or (lambda: randn(*xs))
        params = [("kernel", list(k)), ("stride", list(s)), ("pad", list(p))]
        if op == "max_pool2d":
            fn = lambda o: F.max_pool2d(o["a"], k, s, p)
        elif op == "max_pool2d_indices":
            fn = lambda o: F.max_pool2d(o["a"], k, s, p, return_indices=True)[1]
        else:
            fn = lambda o: F.avg_pool2d(o["a"], k, s, p, count_include_pad=True)
        case(op, cid, lambda: [inp("a", mk())], fn, params=params)

    pool("max_pool2d", "k2", (2, 3, 4, 4), (2, 2), (2, 2), (0, 0))
    pool("max_pool2d", "k3_s1_p1", (1, 2, 5, 6), (3, 3), (1, 2), (1, 1))
    pool("max_pool2d", "odd_size", (1, 1, 5, 5), (2, 2), (2, 2), (0, 0))
    pool("max_pool2d_indices", "k2_ties", (1, 2, 4, 4), (2, 2), (2, 2), (0, 0),
         mk=lambda: small_ints(0, 3, 1, 2, 4, 4))
    pool("max_pool2d_indices", "k3_p1", (1, 1, 5, 5), (3, 3), (2, 2), (1, 1))
    # max_pool2d_backward as torch's gradient of max_pool2d(x) for an
    # upstream g; small integers give ties (the first maximum takes g), and
    # stride < kernel overlapping windows (their g summed). view: the op sees
    # transpose(g, 2, 3).
    def mpb(cid, xs, k, s, p, mk=None, views=None):
        n, c, h, w = xs
        oh = (h + 2 * p[0] - k[0]) // s[0] + 1
        ow = (w + 2 * p[1] - k[1]) // s[1] + 1
        gs = (n, c, ow, oh) if views else (n, c, oh, ow)
        mk = mk or (lambda: randn(*xs))

        def f(o):
            x0 = o["x"].detach().requires_grad_(True)
            y = F.max_pool2d(x0, k, s, p)
            return torch.autograd.grad((y * o["g"]).sum(), x0)[0]
        case("max_pool2d_backward", cid, lambda: [inp("g", randn(*gs)), inp("x", mk())], f,
             params=[("kernel", list(k)), ("stride", list(s)), ("pad", list(p))], views=views)

    mpb("k2_ties", (2, 3, 4, 6), (2, 2), (2, 2), (0, 0), mk=lambda: small_ints(0, 3, 2, 3, 4, 6))
    mpb("k2_odd_size", (1, 2, 5, 7), (2, 2), (2, 2), (0, 0))
    mpb("k3_s1_p1_ties", (1, 2, 5, 5), (3, 3), (1, 1), (1, 1),
        mk=lambda: small_ints(0, 3, 1, 2, 5, 5))
    mpb("k3_s2_p1", (2, 1, 6, 5), (3, 3), (2, 2), (1, 1))
    mpb("k2_g_transposed", (1, 2, 4, 6), (2, 2), (2, 2), (0, 0),
        mk=lambda: small_ints(0, 3, 1, 2, 4, 6), views={"g": (2, 3)})
    mpb("k3_s1_p1_g_transposed", (1, 1, 4, 5), (3, 3), (1, 1), (1, 1),
        mk=lambda: small_ints(0, 3, 1, 1, 4, 5), views={"g": (2, 3)})
    pool("avg_pool2d", "k2", (2, 3, 4, 4), (2, 2), (2, 2), (0, 0))
    pool("avg_pool2d", "k3_s2_p1", (1, 2, 5, 6), (3, 3), (2, 2), (1, 1))

    def avgb(cid, xs, k, s, p):
        n, c, h, w = xs
        oh = (h + 2 * p[0] - k[0]) // s[0] + 1
        ow = (w + 2 * p[1] - k[1]) // s[1] + 1

        def f(o):
            x0 = torch.zeros(xs, dtype=F64, requires_grad=True)
            y = F.avg_pool2d(x0, k, s, p, count_include_pad=True)
            return torch.autograd.grad(y, x0, o["a"], create_graph=True)[0]
        case("avg_pool2d_backward", cid, lambda: [inp("a", randn(n, c, oh, ow))], f,
             params=[("kernel", list(k)), ("stride", list(s)), ("pad", list(p)),
                     ("size", [h, w])])

    avgb("k2", (2, 1, 4, 5), (2, 2), (2, 2), (0, 0))
    avgb("k3_s2_p1", (1, 2, 5, 5), (3, 3), (2, 2), (1, 1))

    # Layers as compositions; their parameters are inputs that require grad.
    case("linear", "bias", lambda: [inp("x", randn(3, 4)), inp("w", randn(5, 4)),
                                    inp("b", randn(5))],
         lambda o: F.linear(o["x"], o["w"], o["b"]))
    case("linear", "3d_nobias", lambda: [inp("x", randn(2, 3, 4)), inp("w", randn(2, 4))],
         lambda o: F.linear(o["x"], o["w"]))
    case("mse_loss", "plain", lambda: [inp("a", randn(3, 4)), inp("b", randn(3, 4))],
         lambda o: F.mse_loss(o["a"], o["b"]))

    def bn(cid, xs, training):
        c = xs[1]
        rm0 = uniform(-0.5, 0.5, c)
        rv0 = uniform(0.5, 2.0, c)

        def f(o):
            rm, rv = rm0.clone(), rv0.clone()
            return F.batch_norm(o["x"], rm, rv, o["w"], o["b"], training, 0.1, 1e-5)
        case("batchnorm", cid, lambda: [inp("x", randn(*xs)), inp("w", randn(c)),
                                        inp("b", randn(c))], f,
             params=[("training", [1 if training else 0]), ("running_mean", rm0.tolist()),
                     ("running_var", rv0.tolist())])

    bn("train_2d", (5, 3), True)
    bn("train_4d", (2, 3, 3, 2), True)
    bn("eval_4d", (2, 3, 2, 2), False)
    # The fused training-mode rows: batch_norm (no running statistics), and
    # batch_norm_backward as the gradients (dx, dweight, dbias) of the same
    # forward for an upstream g. view: the op sees transpose(x, 2, 3).
    def bnf(cid, xs, views=None):
        c = xs[1]
        case("batch_norm", cid, lambda: [inp("x", randn(*xs)), inp("w", randn(c)),
                                         inp("b", randn(c))],
             lambda o: F.batch_norm(o["x"], None, None, o["w"], o["b"], True, 0.1, 1e-5),
             params=[("eps", [1e-5])], views=views)

    bnf("2d", (5, 3))
    bnf("4d", (2, 3, 3, 2))
    bnf("size1_dims", (1, 2, 3, 1))
    bnf("one_channel", (4, 1))
    bnf("4d_strided", (2, 2, 3, 4), views={"x": (2, 3)})

    def bnb(cid, xs):
        c = xs[1]

        def f(o):
            x0 = o["x"].detach().requires_grad_(True)
            w0 = o["w"].detach().requires_grad_(True)
            b0 = torch.zeros(c, dtype=F64, requires_grad=True)
            y = F.batch_norm(x0, None, None, w0, b0, True, 0.1, 1e-5)
            return list(torch.autograd.grad(y, [x0, w0, b0], o["g"]))
        case("batch_norm_backward", cid, lambda: [inp("g", randn(*xs)), inp("x", randn(*xs)),
                                                  inp("w", randn(c))], f,
             params=[("eps", [1e-5])])

    bnb("2d", (6, 4))
    bnb("4d", (2, 3, 2, 3))
    bnb("size1_dims", (1, 2, 1, 3))
    case("layernorm", "last2", lambda: [inp("x", randn(2, 3, 4)), inp("w", randn(3, 4)),
                                        inp("b", randn(3, 4))],
         lambda o: F.layer_norm(o["x"], (3, 4), o["w"], o["b"], 1e-5))
    case("embedding", "dups", lambda: [inp("w", randn(6, 3)), inp("index", randint(0, 6, 2, 4))],
         lambda o: F.embedding(o["index"], o["w"]))


def main():
    binary_cases()
    unary_cases()
    reduction_cases()
    matmul_cases()
    shape_cases()
    softmax_cases()
    index_cases()
    nn_cases()
    gen_fixtures_ops2.cases(sys.modules[__name__])
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    header = [
        "# tapegrad PyTorch reference fixtures: generated by tests/gen_fixtures.py; do not edit.",
        "# Regenerate with: python3 tests/gen_fixtures.py   (format: see that script)",
        "# torch %s, %d cases" % (torch.__version__, len(_ids)),
    ]
    with open(OUT_PATH, "w") as f:
        # rstrip: an empty tensor's line ends at its ':'.
        f.write("\n".join(line.rstrip() for line in header + _lines) + "\n")
    print("wrote %d cases to %s (%d bytes)" % (len(_ids), os.path.relpath(OUT_PATH),
                                               os.path.getsize(OUT_PATH)))


if __name__ == "__main__":
    main()
