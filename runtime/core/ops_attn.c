/*
 * Fused scaled dot-product attention (nn.h): shape logic and backward rules
 * of the scaled_dot_product_attention and ..._backward rows, and the same
 * attention composed from op rows.
 *
 * The forward row keeps q, k, v, its output and a (..., T_q) tensor of
 * per-row log-sum-exps for backward: with them the backward kernel
 * recomputes each tile of probabilities exactly, so neither pass holds the
 * (T_q, T_k) scores of more than a tile per thread. The composed version
 * (matmul, masked_fill, softmax, matmul) keeps the whole (..., T_q, T_k)
 * probability tensor; it is the reference the fused row is tested against.
 *
 * The backward row has no backward rule of its own. Under create_graph the
 * forward's rule builds the gradient from composed rows that recompute the
 * probabilities from q and k, so the graph stays differentiable to every
 * order; without it (every training step) the fused row runs.
 */
#include "internal.h"
#include "tapegrad/nn.h"

#include <math.h>
#include <stdio.h>

/* q (..., T_q, D), k and v (..., T_k, D): float, one dtype, at least 3 dims,
 * equal leading dims, every size > 0. */
static bool attn_check(tg_ctx *ctx, const char *op, tg_tensor *q, tg_tensor *k, tg_tensor *v)
{
    char sq[96], sk[96], sv[96];
    tg_tensor *ts[3] = {q, k, v};
    if (!tg__check_args(ctx, op, 3, ts) || !tg__check_float(ctx, op, q) ||
        !tg__check_same_dtype(ctx, op, q, k) || !tg__check_same_dtype(ctx, op, q, v))
        return false;
    const int n = q->ndim;
    bool ok = n >= 3 && k->ndim == n && v->ndim == n && tg_numel(q) > 0 && tg_numel(k) > 0;
    for (int d = 0; ok && d < n - 2; d++)
        ok = k->shape[d] == q->shape[d] && v->shape[d] == q->shape[d];
    ok = ok && k->shape[n - 1] == q->shape[n - 1] && v->shape[n - 1] == q->shape[n - 1] &&
         v->shape[n - 2] == k->shape[n - 2];
    if (!ok)
        tg__fail(ctx, TG_ERR_SHAPE,
                 "%s: q %s, k %s and v %s must be non-empty (..., T_q, D), (..., T_k, D) and "
                 "(..., T_k, D) with at least 3 dims and the same leading dims",
                 op, tg_shape_str(q, sq, sizeof sq), tg_shape_str(k, sk, sizeof sk),
                 tg_shape_str(v, sv, sizeof sv));
    return ok;
}

static tg_op_params attn_params(const tg_tensor *q, bool causal)
{
    tg_op_params p = {.f = {1.0 / sqrt((double)q->shape[q->ndim - 1])}};
    p.ints[0] = causal ? 1 : 0;
    return p;
}

/* The params a fused row runs with: under autocast (bf16 precision, f32
 * operands) the kernel's products take bf16 operands (TG_KP_ATTN_BF16). */
static tg_op_params attn_run_params(const tg_ctx *ctx, const tg_tensor *q, tg_op_params p)
{
    p.ints[TG_KP_ATTN_BF16] = ctx->precision == TG_PRECISION_BF16 && q->dtype == TG_F32;
    return p;
}

tg_tensor *tg_scaled_dot_product_attention_lse(tg_ctx *ctx, tg_tensor *q, tg_tensor *k,
                                               tg_tensor *v, bool causal, tg_tensor **lse)
{
    if (lse)
        *lse = NULL;
    if (!attn_check(ctx, "scaled_dot_product_attention", q, k, v))
        return NULL;
    tg_tensor *ins[4] = {tg_contiguous(ctx, q), tg_contiguous(ctx, k), tg_contiguous(ctx, v),
                         tg__new(ctx, q->dtype, q->ndim - 1, q->shape, false)};
    if (!ins[0] || !ins[1] || !ins[2] || !ins[3])
        return NULL;
    tg_op_params p = attn_params(q, causal), lo = attn_run_params(ctx, q, p);
    /* Saved for backward: q, k, v, the log-sum-exps and the output. The
     * record keeps the params without the autocast flag: the backward
     * follows the context's precision when it runs, as matmul's does. */
    tg_tensor *o = tg__new(ctx, q->dtype, q->ndim, q->shape, false);
    if (!o || tg__run(ctx, TG_OP_SDPA, &lo, o, 4, ins) != TG_OK ||
        tg__record(ctx, TG_OP_SDPA, &p, o, 4, ins, 0xFu | TG__SAVED_OUT) != TG_OK)
        return NULL;
    if (lse)
        *lse = ins[3];
    return o;
}

tg_tensor *tg_scaled_dot_product_attention(tg_ctx *ctx, tg_tensor *q, tg_tensor *k, tg_tensor *v,
                                           bool causal)
{
    return tg_scaled_dot_product_attention_lse(ctx, q, k, v, causal, NULL);
}

static bool same_shape(const tg_tensor *a, const tg_tensor *b, int ndim)
{
    if (a->ndim != ndim)
        return false;
    for (int d = 0; d < ndim; d++)
        if (a->shape[d] != b->shape[d])
            return false;
    return true;
}

tg_tensor *tg_scaled_dot_product_attention_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *q,
                                                    tg_tensor *k, tg_tensor *v, tg_tensor *o,
                                                    tg_tensor *lse, bool causal, tg_tensor **dk,
                                                    tg_tensor **dv)
{
    const char *op = "scaled_dot_product_attention_backward";
    char sg[96], so[96], sl[96], sq[96];
    if (dk)
        *dk = NULL;
    if (dv)
        *dv = NULL;
    tg_tensor *ts[3] = {g, o, lse};
    if (!attn_check(ctx, op, q, k, v) || !tg__check_args(ctx, op, 3, ts) ||
        !tg__check_same_dtype(ctx, op, q, g) || !tg__check_same_dtype(ctx, op, q, o) ||
        !tg__check_same_dtype(ctx, op, q, lse))
        return NULL;
    if (!same_shape(g, q, q->ndim) || !same_shape(o, q, q->ndim) ||
        !same_shape(lse, q, q->ndim - 1))
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "%s: gradient %s and output %s must match q %s, and lse %s be q's shape "
                        "without its last dim",
                        op, tg_shape_str(g, sg, sizeof sg), tg_shape_str(o, so, sizeof so),
                        tg_shape_str(q, sq, sizeof sq), tg_shape_str(lse, sl, sizeof sl)),
               NULL;
    tg_tensor *ins[8] = {tg_contiguous(ctx, g),
                         tg_contiguous(ctx, q),
                         tg_contiguous(ctx, k),
                         tg_contiguous(ctx, v),
                         tg_contiguous(ctx, o),
                         tg_contiguous(ctx, lse),
                         tg__new(ctx, q->dtype, k->ndim, k->shape, false),
                         tg__new(ctx, q->dtype, v->ndim, v->shape, false)};
    for (int i = 0; i < 8; i++)
        if (!ins[i])
            return NULL;
    tg_op_params p = attn_run_params(ctx, q, attn_params(q, causal));
    tg_tensor *dq = tg__apply(ctx, TG_OP_SDPA_BACKWARD, &p,
                              tg__new(ctx, q->dtype, q->ndim, q->shape, false), 8, ins, 0);
    if (!dq)
        return NULL;
    if (dk)
        *dk = ins[6];
    if (dv)
        *dv = ins[7];
    return dq;
}

/* ---- the composed version ---- */

/* The probabilities softmax(q k^T * scale) with keys j > query i set to
 * -inf before the softmax when causal: (..., T_q, T_k). */
static tg_tensor *attn_probs(tg_ctx *ctx, tg_tensor *q, tg_tensor *k, bool causal, double scale)
{
    tg_tensor *s = tg_mul_scalar(ctx, tg_matmul(ctx, q, tg_transpose(ctx, k, -1, -2)), scale);
    if (s && causal) {
        int64_t tq = q->shape[q->ndim - 2], tk = k->shape[k->ndim - 2];
        int64_t rows[2] = {tq, 1}, cols[2] = {1, tk};
        tg_tensor *i = tg_reshape(ctx, tg_arange(ctx, TG_I64, 0, (double)tq, 1), 2, rows);
        tg_tensor *j = tg_reshape(ctx, tg_arange(ctx, TG_I64, 0, (double)tk, 1), 2, cols);
        s = tg_masked_fill(ctx, s, tg_gt(ctx, j, i), -INFINITY);
    }
    return tg_softmax(ctx, s, -1);
}

tg_tensor *tg_attention_composed(tg_ctx *ctx, tg_tensor *q, tg_tensor *k, tg_tensor *v,
                                 bool causal)
{
    if (!attn_check(ctx, "attention_composed", q, k, v))
        return NULL;
    tg_op_params p = attn_params(q, causal);
    return tg_matmul(ctx, attn_probs(ctx, q, k, causal, p.f[0]), v);
}

/* The gradient from composed rows, the probabilities P recomputed from q and
 * k so that their dependence on q and k is on the tape:
 *   dV = P^T g, dS = P * (g V^T - rowsum(g V^T * P)),
 *   dQ = scale * dS K, dK = scale * dS^T Q. */
static tg_status attn_backward_composed(tg_ctx *ctx, const tg__rec *r, tg_tensor *g,
                                        tg_tensor **gin)
{
    tg_tensor *q = r->in[0], *k = r->in[1], *v = r->in[2];
    const double scale = r->p.f[0];
    const int last = -1;
    tg_tensor *pr = attn_probs(ctx, q, k, r->p.ints[0] != 0, scale);
    tg_tensor *dp = tg_matmul(ctx, g, tg_transpose(ctx, v, -1, -2));
    tg_tensor *rs = tg_sum(ctx, tg_mul(ctx, dp, pr), 1, &last, true);
    tg_tensor *ds = tg_mul_scalar(ctx, tg_mul(ctx, pr, tg_sub(ctx, dp, rs)), scale);
    if (!ds)
        return ctx->status;
    if (q->requires_grad && !(gin[0] = tg_matmul(ctx, ds, k)))
        return ctx->status;
    if (k->requires_grad && !(gin[1] = tg_matmul(ctx, tg_transpose(ctx, ds, -1, -2), q)))
        return ctx->status;
    if (v->requires_grad && !(gin[2] = tg_matmul(ctx, tg_transpose(ctx, pr, -1, -2), g)))
        return ctx->status;
    return TG_OK;
}

tg_status tg__bw_scaled_dot_product_attention(tg_ctx *ctx, const tg__rec *r, tg_tensor *g,
                                              tg_tensor **gin)
{
    if (ctx->grad_enabled)
        return attn_backward_composed(ctx, r, g, gin);
    tg_tensor *q = r->in[0], *k = r->in[1], *v = r->in[2], *dk = NULL, *dv = NULL;
    tg_tensor *dq = tg_scaled_dot_product_attention_backward(ctx, g, q, k, v, r->out, r->in[3],
                                                             r->p.ints[0] != 0, &dk, &dv);
    if (!dq)
        return ctx->status;
    gin[0] = q->requires_grad ? dq : NULL;
    gin[1] = k->requires_grad ? dk : NULL;
    gin[2] = v->requires_grad ? dv : NULL;
    return TG_OK;
}

/* Never recorded (no TG_OPF_DIFF), so never called. */
tg_status tg__bw_scaled_dot_product_attention_backward(tg_ctx *ctx, const tg__rec *r,
                                                       tg_tensor *g, tg_tensor **gin)
{
    (void)r, (void)g, (void)gin;
    return tg__fail(ctx, TG_ERR_AUTOGRAD,
                    "scaled_dot_product_attention_backward: no second derivative "
                    "(scaled_dot_product_attention's backward rule uses composed ops under "
                    "create_graph)");
}
