"""PyTorch fixtures for the ops of runtime/core/ops_math2.c (comparisons,
maximum/minimum, sin/cos, casts, cumsum, topk, logsumexp, var/std,
index_select, masked_fill, squeeze/unsqueeze) and integer arithmetic.

Called by tests/gen_fixtures.py with that module as `g`, whose case() and
value helpers write the cases into the same ops.txt (format: see there).
"""

import torch


def cases(g):
    case, inp, randn, randint, uniform = g.case, g.inp, g.randn, g.randint, g.uniform
    small_ints, F64 = g.small_ints, g.F64
    cmp = {"ne": torch.ne, "gt": torch.gt, "ge": torch.ge, "lt": torch.lt, "le": torch.le}
    # tapegrad's comparisons give 1/0 in the dtype of a (as its eq does).
    for op, fn in cmp.items():
        case(op, "ties",
             lambda: [inp("a", small_ints(0, 3, 2, 3)), inp("b", small_ints(0, 3, 2, 3))],
             lambda o, fn=fn: fn(o["a"], o["b"]).to(o["a"].dtype))
        case(op, "bcast_i64", lambda: [inp("a", randint(0, 3, 2, 3)), inp("b", randint(0, 3, 3))],
             lambda o, fn=fn: fn(o["a"], o["b"]).to(o["a"].dtype))
    case("gt", "strided",
         lambda: [inp("a", small_ints(0, 3, 3, 2)), inp("b", small_ints(0, 3, 2, 3))],
         lambda o: torch.gt(o["a"], o["b"]).to(o["a"].dtype), views={"a": (0, 1)})
    # integer arithmetic: eq, add and sum on i64 (and a u8 sum, which is i64)
    case("eq", "i64", lambda: [inp("a", randint(0, 4, 2, 5)), inp("b", randint(0, 4, 2, 5))],
         lambda o: (o["a"] == o["b"]).to(torch.int64))
    case("add", "i64_bcast",
         lambda: [inp("a", randint(-50, 50, 2, 3)), inp("b", randint(-9, 9, 3))],
         lambda o: o["a"] + o["b"])
    case("sub", "i64", lambda: [inp("a", randint(-50, 50, 4)), inp("b", randint(-50, 50, 4))],
         lambda o: o["a"] - o["b"])
    case("mul", "i64", lambda: [inp("a", randint(-50, 50, 4)), inp("b", randint(-50, 50, 4))],
         lambda o: o["a"] * o["b"])
    case("sum", "i64_axis1", lambda: [inp("a", randint(-100, 100, 3, 4))],
         lambda o: torch.sum(o["a"], dim=1), params=[("axes", [1]), ("keepdim", [0])])
    case("sum", "u8_all", lambda: [inp("a", randint(0, 256, 5, 7).to(torch.uint8))],
         lambda o: torch.sum(o["a"]), params=[("axes", []), ("keepdim", [0])])
    # maximum/minimum: ties (small integers) split the gradient evenly
    for op, fn in (("maximum", torch.maximum), ("minimum", torch.minimum)):
        case(op, "bcast", lambda: [inp("a", randn(2, 3, 1)), inp("b", randn(3, 4))],
             lambda o, fn=fn: fn(o["a"], o["b"]))
        case(op, "ties",
             lambda: [inp("a", small_ints(0, 3, 2, 4)), inp("b", small_ints(0, 3, 2, 4))],
             lambda o, fn=fn: fn(o["a"], o["b"]))
        case(op, "i64", lambda: [inp("a", randint(-5, 5, 6)), inp("b", randint(-5, 5, 6))],
             lambda o, fn=fn: fn(o["a"], o["b"]))
    case("maximum", "strided", lambda: [inp("a", randn(3, 2)), inp("b", randn(2, 3))],
         lambda o: torch.maximum(o["a"], o["b"]), views={"a": (0, 1)})
    case("sin", "basic", lambda: [inp("a", randn(2, 3, scale=2))], lambda o: torch.sin(o["a"]))
    case("cos", "basic", lambda: [inp("a", randn(2, 3, scale=2))], lambda o: torch.cos(o["a"]))
    case("cos", "strided", lambda: [inp("a", randn(3, 2))], lambda o: torch.cos(o["a"]),
         views={"a": (0, 1)})
    # casts: float -> integer truncates toward zero; float -> float keeps the gradient
    case("cast", "to_i64", lambda: [inp("a", randn(2, 4, scale=4), rg=False)],
         lambda o: o["a"].to(torch.int64), params=[("dtype", "i64")])
    case("cast", "to_u8", lambda: [inp("a", uniform(0, 200, 5), rg=False)],
         lambda o: o["a"].to(torch.uint8), params=[("dtype", "u8")])
    case("cast", "i64_to_float", lambda: [inp("a", randint(-1000, 1000, 2, 3))],
         lambda o: o["a"].to(F64), params=[("dtype", "float")])
    case("cast", "u8_to_i64", lambda: [inp("a", randint(0, 256, 4).to(torch.uint8))],
         lambda o: o["a"].to(torch.int64), params=[("dtype", "i64")])
    case("cast", "float_grad", lambda: [inp("a", randn(2, 3))], lambda o: o["a"].to(F64),
         params=[("dtype", "float")], views={"a": (0, 1)})
    for cid, shape, axis, views in (("axis1", (2, 3, 4), 1, None), ("neg_axis", (3, 5), -1, None),
                                    ("axis0", (4, 2), 0, None),
                                    ("strided", (4, 3), 1, {"a": (0, 1)})):
        case("cumsum", cid, lambda shape=shape: [inp("a", randn(*shape))],
             lambda o, axis=axis: torch.cumsum(o["a"], dim=axis), params=[("axis", [axis])],
             views=views)

    def distinct(*shape):
        n = 1
        for d in shape:
            n *= d
        perm = torch.randperm(n, generator=g._gen).to(F64)
        return ((perm - n / 2) / 4).reshape(shape)

    for cid, shape, k, axis, largest in (("largest_axis1", (3, 6), 2, 1, True),
                                         ("smallest_axis0", (5, 3), 3, 0, False),
                                         ("all_3d", (2, 4, 2), 4, 1, True)):
        params = [("k", [k]), ("axis", [axis]), ("largest", [1 if largest else 0])]
        case("topk_indices", cid, lambda shape=shape: [inp("a", distinct(*shape))],
             lambda o, k=k, axis=axis, largest=largest:
             torch.topk(o["a"], k, dim=axis, largest=largest).indices, params=params)
        case("topk", cid, lambda shape=shape: [inp("a", distinct(*shape))],
             lambda o, k=k, axis=axis, largest=largest:
             torch.topk(o["a"], k, dim=axis, largest=largest).values, params=params)

    def red(op, cid, shape, axes, keep, fn, extra=()):
        case(op, cid, lambda: [inp("a", randn(*shape))],
             lambda o: fn(o["a"], tuple(axes) if axes else tuple(range(len(shape))), keep),
             params=[("axes", list(axes)), ("keepdim", [1 if keep else 0])] + list(extra))

    red("logsumexp", "axis1", (2, 3, 4), [1], False, lambda x, d, k: torch.logsumexp(x, d, k))
    red("logsumexp", "all_keepdim", (3, 4), [], True, lambda x, d, k: torch.logsumexp(x, d, k))
    case("logsumexp", "large", lambda: [inp("a", randn(2, 5) + 500.0)],
         lambda o: torch.logsumexp(o["a"], (1,), False), params=[("axes", [1]), ("keepdim", [0])])
    for unb in (True, False):
        tag = "unbiased" if unb else "biased"
        red("var", "axis1_" + tag, (3, 5), [1], False,
            lambda x, d, k, unb=unb: torch.var(x, d, unbiased=unb, keepdim=k),
            extra=[("unbiased", [1 if unb else 0])])
        red("std", "axes02_keepdim_" + tag, (2, 3, 4), [0, 2], True,
            lambda x, d, k, unb=unb: torch.std(x, d, unbiased=unb, keepdim=k),
            extra=[("unbiased", [1 if unb else 0])])
    red("var", "all", (4, 3), [], False, lambda x, d, k: torch.var(x, d, unbiased=True, keepdim=k),
        extra=[("unbiased", [1])])
    case("index_select", "rows_dups",
         lambda: [inp("a", randn(4, 3)), inp("index", randint(0, 4, 6))],
         lambda o: torch.index_select(o["a"], 0, o["index"]), params=[("axis", [0])])
    case("index_select", "neg_axis",
         lambda: [inp("a", randn(2, 3, 5)), inp("index", randint(0, 5, 3))],
         lambda o: torch.index_select(o["a"], -1, o["index"]), params=[("axis", [-1])])
    case("masked_fill", "bcast_u8", lambda: [inp("a", randn(3, 4)),
                                            inp("mask", randint(0, 2, 4).to(torch.uint8))],
         lambda o: o["a"].masked_fill(o["mask"].bool(), -2.5), params=[("value", [-2.5])])
    case("masked_fill", "same_i64",
         lambda: [inp("a", randn(2, 3)), inp("mask", randint(0, 2, 2, 3))],
         lambda o: o["a"].masked_fill(o["mask"].bool(), 4.0), params=[("value", [4.0])])
    case("squeeze", "all", lambda: [inp("a", randn(1, 3, 1, 2))], lambda o: o["a"].squeeze(),
         params=[("axes", [])])
    case("squeeze", "one_dim", lambda: [inp("a", randn(1, 3, 1, 2))], lambda o: o["a"].squeeze(2),
         params=[("axes", [2])])
    case("squeeze", "not_size1_stays", lambda: [inp("a", randn(2, 3))],
         lambda o: o["a"].squeeze(1),
         params=[("axes", [1])])
    case("unsqueeze", "middle", lambda: [inp("a", randn(2, 3))], lambda o: o["a"].unsqueeze(1),
         params=[("axis", [1])])
    case("unsqueeze", "neg_end", lambda: [inp("a", randn(2, 3))], lambda o: o["a"].unsqueeze(-1),
         params=[("axis", [-1])])
