#!/usr/bin/env python3
"""PyTorch reference for tests/test_gpt_torch.c: nanoGPT's GPT on fixed weights.

Regenerate (Debian's python3-torch):

    /usr/bin/python3 tests/gen_gpt_fixtures.py

which rewrites tests/fixtures/gpt.txt. The model is nanoGPT's (model.py:
CausalSelfAttention with its explicit causal mask, MLP with exact GELU,
pre-LN blocks, lm_head tied to wte), with its modules at the top level
(`wte`, `h.0.attn.c_attn`, `ln_f`: nanoGPT nests them under `transformer.`),
so that the parameter names are those of tapegrad's `--model gpt`
(tg_gpt_model_text). Its weights are drawn here from torch.manual_seed(0),
wider than GPT-2's 0.02 so that attention is far from uniform; the C test
loads them by name. Recorded, in float64:

  - the logits and the mean cross-entropy over every position of batch 0,
    and the gradient of that loss for every parameter;
  - the losses of 10 AdamW steps (one batch each), nanoGPT's recipe:
    betas (0.9, 0.95), weight decay 0.1 on the matrices only (not biases,
    layernorm weights, embeddings), gradients clipped to norm 1, lr 3e-3;
    the same run in float32 as well.

Format, one item per line, '#' comments, floats '%.17g':

    config <key> <value> ...
    param <name> <numel> : <values>
    tokens <step> : <B*T ints>        targets <step> : <B*T ints>
    logits : <values>                 loss <value>
    grad <name> : <values>
    steploss <f64|f32> <step> <value> (the loss before the step's update)
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

L, H, E, T, V, B, STEPS = 2, 2, 16, 8, 13, 2, 10
LR, BETAS, WD, CLIP = 3e-3, (0.9, 0.95), 0.1, 1.0


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(E, 3 * E)
        self.c_proj = nn.Linear(E, E)
        self.register_buffer("mask", torch.tril(torch.ones(T, T)).view(1, 1, T, T))

    def forward(self, x):
        b, t, e = x.size()
        q, k, v = self.c_attn(x).split(E, dim=2)
        q, k, v = (z.view(b, t, H, e // H).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, e))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = nn.Linear(E, 4 * E)
        self.c_proj = nn.Linear(4 * E, E)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(E)
        self.attn = Attention()
        self.ln_2 = nn.LayerNorm(E)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(V, E)
        self.wpe = nn.Embedding(T, E)
        self.h = nn.ModuleList([Block() for _ in range(L)])
        self.ln_f = nn.LayerNorm(E)
        self.lm_head = nn.Linear(E, V, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for b in self.h:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def loss_of(model, x, y):
    logits = model(x)
    return logits, F.cross_entropy(logits.view(-1, V), y.view(-1))


def params(model):
    # named_parameters() lists the tied weight once, as wte.weight.
    return [(n, p) for n, p in model.named_parameters()]


def train(model, batches):
    decay = [p for n, p in params(model) if p.dim() >= 2 and not n.startswith(("wte", "wpe"))]
    rest = [p for n, p in params(model) if not (p.dim() >= 2 and not n.startswith(("wte", "wpe")))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": rest, "weight_decay": 0.0}], lr=LR, betas=BETAS)
    losses = []
    for x, y in batches:
        _, loss = loss_of(model, x, y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
    return losses


def fmt(vals):
    return " ".join("%.17g" % v for v in vals)


def main():
    torch.manual_seed(0)
    model = GPT().double()
    with torch.no_grad():
        for n, p in params(model):
            if n.endswith("ln_1.weight") or n.endswith("ln_2.weight") or n == "ln_f.weight":
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    init = {n: p.detach().clone() for n, p in params(model)}
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(STEPS):
        seq = torch.randint(0, V, (B, T + 1), generator=g)
        batches.append((seq[:, :T].contiguous(), seq[:, 1:].contiguous()))
    logits, loss = loss_of(model, *batches[0])
    loss.backward()
    out = ["# Generated by tests/gen_gpt_fixtures.py (PyTorch %s): do not edit." % torch.__version__,
           "config n_layer %d n_head %d n_embd %d block %d vocab %d batch %d steps %d" % (L, H, E, T, V, B, STEPS),
           "config lr %r beta1 %r beta2 %r weight_decay %r clip %r" % (LR, BETAS[0], BETAS[1], WD, CLIP)]
    for n, p in params(model):
        out.append("param %s %d : %s" % (n, p.numel(), fmt(init[n].flatten().tolist())))
    for k, (x, y) in enumerate(batches):
        out.append("tokens %d : %s" % (k, " ".join(str(v) for v in x.flatten().tolist())))
        out.append("targets %d : %s" % (k, " ".join(str(v) for v in y.flatten().tolist())))
    out.append("logits : %s" % fmt(logits.detach().flatten().tolist()))
    out.append("loss %.17g" % loss.item())
    for n, p in params(model):
        out.append("grad %s : %s" % (n, fmt(p.grad.flatten().tolist())))
    model.zero_grad()
    for dt, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
        m = GPT().to(dt)
        with torch.no_grad():
            for n, p in params(m):
                p.copy_(init[n].to(dt))
        for k, l in enumerate(train(m, batches)):
            out.append("steploss %s %d %.17g" % (tag, k, l))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gpt.txt")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
