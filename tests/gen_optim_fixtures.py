#!/usr/bin/env python3
"""PyTorch reference fixtures for tests/test_optim.c.

Regenerate (needs PyTorch; `scripts/setup.sh --with-torch` installs it):

    python3 tests/gen_optim_fixtures.py

which rewrites tests/fixtures/optim.txt. The output is deterministic: every
case draws its values from its own torch.Generator seeded from the case's name.

Three kinds of blocks, one item per line, whitespace separated, '#' starts a
comment line, floats printed with '%.17g' (float64 runs; round-trips) or '%.9g'
(float32 runs; round-trips float32):

1. Optimizer trajectories (torch.optim.SGD/Adam/AdamW, foreach=False), run
   twice by torch, once in float64 and once in float32, from the same starting
   values and gradients (all multiples of 1/64 or of a power of two, so exact
   in both dtypes):

    optim <id> <sgd|adam|adamw> <nsteps> <nparams> <key>=<value> ...
    param <index> <name> <ndim> <dims...> : <values...>    (initial values)
    grad <step> <index> : <values...>                      (p.grad for that step)
    grad <step> <index> none                               (p.grad is None: skipped)
    lr <step> <value>                                      (group lr for that step)
    expect <f64|f32> <step> <index> : <values...>          (p after that step)
    state <f64|f32> <index> <key> : <values...>            (torch's state after the last step)
    end

   keys: lr momentum dampening nesterov(0|1) weight_decay beta1 beta2 eps.
   Steps count from 0. state keys are torch's: step, momentum_buffer, exp_avg,
   exp_avg_sq.

2. Gradient clipping (torch.nn.utils.clip_grad_norm_, norm_type 2):

    clip <id> <nparams> <max_norm>
    cgrad <index> <ndim> <dims...> : <values...>     or     cgrad <index> none
    total <f64|f32> <value>                          (the returned norm)
    clipped <f64|f32> <index> : <values...>          (the grads afterwards)
    end

3. Learning-rate schedules (torch.optim.lr_scheduler), the lr used by
   optimizer steps 0 .. n-1 (read before each opt.step(); sched.step() after):

    sched warmup <id> <n> <lr> <warmup_steps> : <values...>
        LinearLR(start_factor=1/W, end_factor=1, total_iters=W-1), n = W
    sched step <id> <n> <lr> <step_size> <gamma> : <values...>
        StepLR(step_size, gamma)
    sched cosine <id> <n> <lr> <t_max> <min_lr> : <values...>
        CosineAnnealingLR(T_max, eta_min), n = T_max + 1
"""

import math
import os
import warnings
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_PATH = os.path.join(HERE, "fixtures", "optim.txt")

_lines = []


def emit(s=""):
    _lines.append(s)


def gen_for(name):
    g = torch.Generator()
    g.manual_seed(zlib.crc32(name.encode()))
    return g


def grid(gen, shape, scale=1.0):
    """Values in [-2, 2] rounded to 1/64, times a power-of-two scale."""
    x = torch.rand(shape, generator=gen, dtype=torch.float64) * 4 - 2
    return torch.round(x * 64) / 64 * scale


def fmt(dt, vals):
    f = "%.17g" if dt == torch.float64 else "%.9g"
    return " ".join(f % v for v in vals)


def dtname(dt):
    return "f64" if dt == torch.float64 else "f32"


def shape_str(shape):
    return " ".join([str(len(shape))] + [str(d) for d in shape])


# ---- optimizers ------------------------------------------------------------

PARAMS = [("w", (2, 3)), ("b", (3,)), ("s", (1,)), ("t", (4,))]


def make_opt(kind, params, h):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=h["lr"], momentum=h["momentum"],
                               dampening=h["dampening"], nesterov=bool(h["nesterov"]),
                               weight_decay=h["weight_decay"], foreach=False)
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(params, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
               weight_decay=h["weight_decay"], foreach=False)


def run_traj(kind, h, init, grads, lrs, dt):
    ps = [torch.tensor(v.tolist(), dtype=dt).reshape(v.shape).requires_grad_(True)
          for v in init]
    opt = make_opt(kind, ps, h)
    after = []
    for step, gs in enumerate(grads):
        for p, g in zip(ps, gs):
            p.grad = None if g is None else g.to(dt).clone()
        opt.param_groups[0]["lr"] = lrs[step]
        opt.step()
        after.append([p.detach().clone() for p in ps])
    return after, opt, ps


def optim_case(cid, kind, nsteps, skip=(), lr_decay=1.0, gscale=None, **kw):
    h = dict(lr=1e-2, momentum=0.0, dampening=0.0, nesterov=0, weight_decay=0.0,
             beta1=0.9, beta2=0.999, eps=1e-8)
    h.update(kw)
    gen = gen_for(cid)
    gscale = gscale or [1.0] * len(PARAMS)
    init = [grid(gen, shape) for _, shape in PARAMS]
    grads = []
    for step in range(nsteps):
        grads.append([None if (step, i) in skip else grid(gen, shape, gscale[i])
                      for i, (_, shape) in enumerate(PARAMS)])
    lrs = [h["lr"] * lr_decay ** s for s in range(nsteps)]
    emit("optim %s %s %d %d %s" % (cid, kind, nsteps, len(PARAMS),
                                   " ".join("%s=%.17g" % (k, v) for k, v in h.items())))
    for i, ((name, shape), v) in enumerate(zip(PARAMS, init)):
        emit("param %d %s %s : %s" % (i, name, shape_str(shape),
                                      fmt(torch.float64, v.flatten().tolist())))
    for step, gs in enumerate(grads):
        emit("lr %d %.17g" % (step, lrs[step]))
        for i, g in enumerate(gs):
            if g is None:
                emit("grad %d %d none" % (step, i))
            else:
                emit("grad %d %d : %s" % (step, i, fmt(torch.float64, g.flatten().tolist())))
    for dt in (torch.float64, torch.float32):
        after, opt, ps = run_traj(kind, h, init, grads, lrs, dt)
        for step, vals in enumerate(after):
            for i, v in enumerate(vals):
                emit("expect %s %d %d : %s" % (dtname(dt), step, i, fmt(dt, v.flatten().tolist())))
        for i, p in enumerate(ps):
            for key, val in opt.state[p].items():
                if val is None:
                    continue
                flat = val.flatten().tolist() if torch.is_tensor(val) else [float(val)]
                emit("state %s %d %s : %s" % (dtname(dt), i, key, fmt(dt, flat)))
    emit("end")
    emit()


def optim_cases():
    optim_case("sgd_plain", "sgd", 6, lr=0.1)
    optim_case("sgd_wd", "sgd", 6, lr=0.05, weight_decay=0.1)
    optim_case("sgd_momentum", "sgd", 7, lr=0.05, momentum=0.9, dampening=0.25,
               weight_decay=0.01)
    optim_case("sgd_nesterov", "sgd", 6, lr=0.02, momentum=0.8, nesterov=1,
               weight_decay=1e-3, lr_decay=0.9)
    # Parameter 1 has no gradient in steps 0 and 2: its momentum buffer starts
    # one step late (with no dampening), parameter 3 misses a later step.
    optim_case("sgd_skip", "sgd", 6, lr=0.05, momentum=0.9, dampening=0.5,
               skip={(0, 1), (2, 1), (3, 3)})
    optim_case("adam", "adam", 6, lr=1e-2)
    optim_case("adam_wd", "adam", 6, lr=3e-2, beta1=0.8, beta2=0.99, eps=1e-6,
               weight_decay=0.1)
    # Small gradients on two parameters make eps matter.
    optim_case("adam_eps", "adam", 5, lr=1e-2, eps=1e-3,
               gscale=[1.0, 2.0 ** -10, 1.0, 2.0 ** -6])
    optim_case("adam_skip", "adam", 6, lr=2e-2, weight_decay=0.05,
               skip={(0, 2), (1, 2), (4, 0)})
    optim_case("adamw", "adamw", 6, lr=1e-2, weight_decay=0.05)
    optim_case("adamw_lr", "adamw", 8, lr=5e-2, beta1=0.5, beta2=0.9, weight_decay=0.2,
               lr_decay=0.7, skip={(3, 1)})


# ---- clipping --------------------------------------------------------------

def clip_case(cid, max_norm, shapes, scale=1.0):
    gen = gen_for(cid)
    grads = [None if s is None else grid(gen, s, scale) for s in shapes]
    emit("clip %s %d %.17g" % (cid, len(shapes), max_norm))
    for i, g in enumerate(grads):
        if g is None:
            emit("cgrad %d none" % i)
        else:
            emit("cgrad %d %s : %s" % (i, shape_str(tuple(g.shape)),
                                       fmt(torch.float64, g.flatten().tolist())))
    for dt in (torch.float64, torch.float32):
        ps = []
        for g in grads:
            p = torch.zeros(1 if g is None else g.shape, dtype=dt, requires_grad=True)
            p.grad = None if g is None else g.to(dt).clone()
            ps.append(p)
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=2.0)
        emit("total %s %s" % (dtname(dt), fmt(dt, [float(total)])))
        for i, p in enumerate(ps):
            if p.grad is not None:
                emit("clipped %s %d : %s" % (dtname(dt), i, fmt(dt, p.grad.flatten().tolist())))
    emit("end")
    emit()


def clip_cases():
    clip_case("clip_applied", 1.0, [(2, 3), (3,), None, (5,)])
    clip_case("clip_not_applied", 100.0, [(2, 3), (4,)])
    clip_case("clip_small", 0.25, [(7,), (1,)], scale=2.0 ** -3)


# ---- schedules -------------------------------------------------------------

def sched_values(make, lr, n):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def sched_cases():
    lr = 0.1
    for w in (1, 4, 5):
        if w == 1:
            vals = [lr]  # LinearLR needs total_iters >= 1; one warm-up step is just lr
        else:
            vals = sched_values(lambda o: torch.optim.lr_scheduler.LinearLR(
                o, start_factor=1.0 / w, end_factor=1.0, total_iters=w - 1), lr, w)
        emit("sched warmup warmup%d %d %.17g %d : %s" % (w, w, lr, w, fmt(torch.float64, vals)))
    for step_size, gamma, n in ((3, 0.5, 12), (1, 0.9, 8), (5, 0.1, 16)):
        vals = sched_values(lambda o: torch.optim.lr_scheduler.StepLR(
            o, step_size=step_size, gamma=gamma), lr, n)
        emit("sched step step%d_%g %d %.17g %d %.17g : %s" % (
            step_size, gamma, n, lr, step_size, gamma, fmt(torch.float64, vals)))
    for t_max, min_lr in ((10, 0.0), (7, 1e-3), (20, 0.01)):
        vals = sched_values(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
            o, T_max=t_max, eta_min=min_lr), lr, t_max + 1)
        emit("sched cosine cos%d %d %.17g %d %.17g : %s" % (
            t_max, t_max + 1, lr, t_max, min_lr, fmt(torch.float64, vals)))
    emit()


def main():
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    emit("# Generated by tests/gen_optim_fixtures.py with torch %s; do not edit." %
         torch.__version__)
    emit()
    optim_cases()
    clip_cases()
    sched_cases()
    with open(OUT_PATH, "w") as f:
        f.write("\n".join(_lines) + "\n")
    print("wrote %s (%d lines)" % (OUT_PATH, len(_lines)))


if __name__ == "__main__":
    main()
