/* Losses and dropout (nn.h): forward shape logic and backward rules. */
#include "internal.h"
#include "tapegrad/nn.h"

#include <stdio.h>

#define SHAPE_OF(t) (t)->ndim, (t)->shape

/* ---- cross-entropy ---- */

static bool ce_check(tg_ctx *ctx, const char *op, tg_tensor *logits, tg_tensor *targets,
                     double smoothing)
{
    char a[96], b[96];
    if (!tg__check_float(ctx, op, logits))
        return false;
    if (targets->dtype != TG_U8 && targets->dtype != TG_I32 && targets->dtype != TG_I64) {
        tg__fail(ctx, TG_ERR_DTYPE, "%s: targets must be an integer tensor (u8, i32, i64), got %s",
                 op, tg_dtype_name(targets->dtype));
        return false;
    }
    if (logits->ndim != 2 || targets->ndim != 1 || targets->shape[0] != logits->shape[0]) {
        tg__fail(ctx, TG_ERR_SHAPE, "%s: expected logits (N, C) and targets (N,), got %s and %s",
                 op, tg_shape_str(logits, a, sizeof a), tg_shape_str(targets, b, sizeof b));
        return false;
    }
    if (!(smoothing >= 0.0 && smoothing < 1.0)) {
        tg__fail(ctx, TG_ERR_INVALID, "%s: label smoothing %g is outside [0, 1)", op, smoothing);
        return false;
    }
    return true;
}

tg_tensor *tg_cross_entropy(tg_ctx *ctx, tg_tensor *logits, tg_tensor *targets,
                            double label_smoothing)
{
    tg_tensor *ins[2] = {logits, targets};
    if (!tg__check_args(ctx, "cross_entropy", 2, ins) ||
        !ce_check(ctx, "cross_entropy", logits, targets, label_smoothing))
        return NULL;
    tg_op_params p = {.f = {label_smoothing}};
    return tg__apply(ctx, TG_OP_CROSS_ENTROPY, &p, tg__new(ctx, logits->dtype, 0, NULL, false), 2,
                     ins, 3u);
}

tg_tensor *tg_cross_entropy_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *logits,
                                     tg_tensor *targets, double label_smoothing)
{
    tg_tensor *ins[3] = {g, logits, targets};
    if (!tg__check_args(ctx, "cross_entropy_backward", 3, ins) ||
        !ce_check(ctx, "cross_entropy_backward", logits, targets, label_smoothing) ||
        !tg__check_same_dtype(ctx, "cross_entropy_backward", g, logits))
        return NULL;
    if (g->ndim != 0)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "cross_entropy_backward: the incoming gradient must be a scalar, got %d "
                        "dims",
                        g->ndim),
               NULL;
    tg_op_params p = {.f = {label_smoothing}};
    return tg__apply(ctx, TG_OP_CROSS_ENTROPY_BACKWARD, &p,
                     tg__new(ctx, logits->dtype, SHAPE_OF(logits), false), 3, ins, 7u);
}

tg_status tg__bw_cross_entropy(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_cross_entropy_backward(ctx, g, r->in[0], r->in[1], r->p.f[0]);
    return gin[0] ? TG_OK : ctx->status;
}

/*
 * d = g (softmax(x) - q) / N is linear in g and has the softmax Jacobian in
 * x: for an incoming v, dg = sum(v * d) / g = sum(v * d(1)), and
 * dx = (g / N) * s * (v - sum(v * s, axis 1)), with s = softmax(x).
 */
tg_status tg__bw_cross_entropy_backward(tg_ctx *ctx, const tg__rec *r, tg_tensor *v,
                                        tg_tensor **gin)
{
    tg_tensor *g = r->in[0], *x = r->in[1], *t = r->in[2];
    if (g->requires_grad) {
        tg_tensor *one = tg_scalar(ctx, x->dtype, 1.0);
        tg_tensor *d1 = tg_cross_entropy_backward(ctx, one, x, t, r->p.f[0]);
        gin[0] = tg_sum(ctx, tg_mul(ctx, v, d1), 0, NULL, false);
        if (!gin[0])
            return ctx->status;
    }
    if (x->requires_grad) {
        int ax = 1;
        tg_tensor *s = tg_softmax(ctx, x, 1);
        tg_tensor *dot = tg_sum(ctx, tg_mul(ctx, v, s), 1, &ax, true);
        tg_tensor *scale = tg_mul_scalar(ctx, g, 1.0 / (double)(x->shape[0] ? x->shape[0] : 1));
        gin[1] = tg_mul(ctx, tg_mul(ctx, s, tg_sub(ctx, v, dot)), scale);
        if (!gin[1])
            return ctx->status;
    }
    return TG_OK;
}

tg_tensor *tg_mse_loss(tg_ctx *ctx, tg_tensor *a, tg_tensor *b)
{
    tg_tensor *ins[2] = {a, b};
    char sa[96], sb[96];
    if (!tg__check_args(ctx, "mse_loss", 2, ins) || !tg__check_float(ctx, "mse_loss", a) ||
        !tg__check_same_dtype(ctx, "mse_loss", a, b))
        return NULL;
    bool same = a->ndim == b->ndim;
    for (int d = 0; same && d < a->ndim; d++)
        same = a->shape[d] == b->shape[d];
    if (!same)
        return tg__fail(ctx, TG_ERR_SHAPE, "mse_loss: operands %s and %s must have one shape",
                        tg_shape_str(a, sa, sizeof sa), tg_shape_str(b, sb, sizeof sb)),
               NULL;
    tg_tensor *d = tg_sub(ctx, a, b);
    return tg_mean(ctx, tg_mul(ctx, d, d), 0, NULL, false);
}

/* ---- dropout ---- */

static tg_tensor *dropout_apply(tg_ctx *ctx, tg_tensor *x, const tg_op_params *p)
{
    x = tg_contiguous(ctx, x);
    if (!x)
        return NULL;
    return tg__apply(ctx, TG_OP_DROPOUT, p, tg__new(ctx, x->dtype, SHAPE_OF(x), false), 1, &x, 0);
}

tg_tensor *tg_dropout(tg_ctx *ctx, tg_tensor *x, double p, bool training, tg_rng *rng)
{
    if (!tg__check_args(ctx, "dropout", 1, &x) || !tg__check_float(ctx, "dropout", x))
        return NULL;
    if (!(p >= 0.0 && p < 1.0))
        return tg__fail(ctx, TG_ERR_INVALID, "dropout: p = %g is outside [0, 1)", p), NULL;
    if (!training || p == 0.0)
        return x;
    if (!rng)
        return tg__fail(ctx, TG_ERR_INVALID, "dropout: training needs an rng stream (got NULL)"),
               NULL;
    tg_op_params pr = {.f = {p, 1.0 / (1.0 - p)},
                       .ints = {(int64_t)rng->key, (int64_t)rng->counter}};
    /* The stream moves past the blocks this mask used, as tg_rng_uniform does. */
    rng->counter += (uint64_t)((tg_numel(x) + 3) / 4);
    return dropout_apply(ctx, x, &pr);
}

/* y = x * m / (1 - p) is linear in x: its gradient is the same mask on g. */
tg_status tg__bw_dropout(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = dropout_apply(ctx, g, &r->p);
    return gin[0] ? TG_OK : ctx->status;
}

tg_tensor *tg_flatten(tg_ctx *ctx, tg_tensor *x, int start_dim)
{
    if (!tg__check_args(ctx, "flatten", 1, &x))
        return NULL;
    if (x->ndim == 0)
        return tg_reshape(ctx, x, 1, (const int64_t[]){1});
    if (!tg__axis(ctx, "flatten", x->ndim, &start_dim))
        return NULL;
    int64_t shape[TG_MAX_DIMS];
    int64_t rest = 1;
    for (int d = 0; d < start_dim; d++)
        shape[d] = x->shape[d];
    for (int d = start_dim; d < x->ndim; d++)
        rest *= x->shape[d];
    shape[start_dim] = rest;
    return tg_reshape(ctx, x, start_dim + 1, shape);
}
