/*
 * Batch norm in training mode (nn.h): shape logic and backward rules of the
 * batch_norm and batch_norm_backward rows.
 *
 * The forward row keeps only its input, the weight and a (3, C) tensor of
 * per-channel statistics for backward (a composition of mean, sub, mul and
 * pow rows kept about ten activation-sized tensors per layer), and each row
 * makes one or two passes over the activations. The statistics tensor is
 * the kernel's last input: the runtime allocates it, the kernel fills it,
 * and it never requires grad. batch_norm_backward fills a (2, C) tensor with
 * the weight and bias gradients the same way.
 *
 * batch_norm_backward has no backward rule of its own. Under create_graph
 * batch_norm's rule builds the same gradient from composed rows that
 * recompute the statistics from x, so the graph stays differentiable to
 * every order; without it (every training step) the fused row runs.
 */
#include "internal.h"
#include "tapegrad/nn.h"

#include <stdio.h>

static bool bn_check(tg_ctx *ctx, const char *op, tg_tensor *x, tg_tensor *w, tg_tensor *b)
{
    char sx[96], sw[96], sb[96];
    tg_tensor *ts[3] = {x, w, b};
    if (!tg__check_args(ctx, op, b ? 3 : 2, ts) || !tg__check_float(ctx, op, x) ||
        !tg__check_same_dtype(ctx, op, x, w) || (b && !tg__check_same_dtype(ctx, op, x, b)))
        return false;
    bool ok = (x->ndim == 2 || x->ndim == 4) && tg_numel(x) > 0;
    int64_t c = ok ? x->shape[1] : 0;
    ok = ok && w->ndim == 1 && w->shape[0] == c && (!b || (b->ndim == 1 && b->shape[0] == c));
    if (!ok)
        tg__fail(ctx, TG_ERR_SHAPE,
                 "%s: input %s must be a non-empty (N, C) or (N, C, H, W) with weight%s (C), got "
                 "weight %s%s%s",
                 op, tg_shape_str(x, sx, sizeof sx), b ? " and bias" : "",
                 tg_shape_str(w, sw, sizeof sw), b ? " and bias " : "",
                 b ? tg_shape_str(b, sb, sizeof sb) : "");
    return ok;
}

/* Row i of a (rows, C) tensor as a (C) view. */
static tg_tensor *row(tg_ctx *ctx, tg_tensor *t, int64_t i)
{
    int64_t c = t->shape[1];
    return tg_reshape(ctx, tg_slice(ctx, t, 0, i, i + 1, 1), 1, &c);
}

tg_tensor *tg_batch_norm(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                         double eps, tg_tensor **stats)
{
    const char *op = "batch_norm";
    if (stats)
        *stats = NULL;
    if (!bn_check(ctx, op, x, weight, bias))
        return NULL;
    if (!bias)
        return tg__fail(ctx, TG_ERR_INVALID, "batch_norm: NULL bias"), NULL;
    if (!(eps > 0))
        return tg__fail(ctx, TG_ERR_INVALID, "batch_norm: eps %g must be > 0", eps), NULL;
    int64_t sshape[2] = {3, x->shape[1]};
    tg_tensor *ins[4] = {tg_contiguous(ctx, x), tg_contiguous(ctx, weight),
                         tg_contiguous(ctx, bias), tg__new(ctx, x->dtype, 2, sshape, false)};
    if (!ins[0] || !ins[1] || !ins[2] || !ins[3])
        return NULL;
    tg_op_params p = {.f = {eps}};
    /* Saved for backward: x, the weight and the statistics (not the bias). */
    tg_tensor *y = tg__apply(ctx, TG_OP_BATCH_NORM, &p,
                             tg__new(ctx, x->dtype, x->ndim, x->shape, false), 4, ins, 0xBu);
    if (y && stats)
        *stats = ins[3];
    return y;
}

tg_tensor *tg_batch_norm_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x, tg_tensor *weight,
                                  tg_tensor *stats, tg_tensor **gweight, tg_tensor **gbias)
{
    const char *op = "batch_norm_backward";
    char sg[96], sx[96], ss[96];
    if (gweight)
        *gweight = NULL;
    if (gbias)
        *gbias = NULL;
    tg_tensor *ts[2] = {g, stats};
    if (!bn_check(ctx, op, x, weight, NULL) || !tg__check_args(ctx, op, 2, ts) ||
        !tg__check_same_dtype(ctx, op, x, g) || !tg__check_same_dtype(ctx, op, x, stats))
        return NULL;
    bool same = g->ndim == x->ndim;
    for (int d = 0; same && d < x->ndim; d++)
        same = g->shape[d] == x->shape[d];
    if (!same || stats->ndim != 2 || stats->shape[0] != 3 || stats->shape[1] != x->shape[1])
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "%s: gradient %s must match input %s and stats %s be (3, %lld)", op,
                        tg_shape_str(g, sg, sizeof sg), tg_shape_str(x, sx, sizeof sx),
                        tg_shape_str(stats, ss, sizeof ss), (long long)x->shape[1]),
               NULL;
    int64_t pshape[2] = {2, x->shape[1]};
    tg_tensor *ins[5] = {tg_contiguous(ctx, g), tg_contiguous(ctx, x), tg_contiguous(ctx, weight),
                         tg_contiguous(ctx, stats), tg__new(ctx, x->dtype, 2, pshape, false)};
    if (!ins[0] || !ins[1] || !ins[2] || !ins[3] || !ins[4])
        return NULL;
    tg_tensor *dx = tg__apply(ctx, TG_OP_BATCH_NORM_BACKWARD, NULL,
                              tg__new(ctx, x->dtype, x->ndim, x->shape, false), 5, ins, 0);
    if (!dx)
        return NULL;
    if (gweight && !(*gweight = row(ctx, ins[4], 0)))
        return NULL;
    if (gbias && !(*gbias = row(ctx, ins[4], 1)))
        return NULL;
    return dx;
}

/* The same gradient from composed rows, statistics recomputed from x so
 * that their dependence on x is on the tape: with xhat = (x - mean) * invstd,
 *   dx = (g - mean(g) - xhat * mean(g * xhat)) * invstd * w. */
static tg_status bn_backward_composed(tg_ctx *ctx, const tg__rec *r, tg_tensor *g,
                                      tg_tensor **gin)
{
    tg_tensor *x = r->in[0], *w = r->in[1], *b = r->in[2];
    const int axes[3] = {0, 2, 3};
    int nax = x->ndim == 4 ? 3 : 1;
    int64_t c = x->shape[1], pshape[4] = {1, c, 1, 1};
    double m = (double)(tg_numel(x) / c);
    tg_tensor *mean = tg_mean(ctx, x, nax, axes, true);
    tg_tensor *xc = tg_sub(ctx, x, mean);
    tg_tensor *var = tg_mean(ctx, tg_mul(ctx, xc, xc), nax, axes, true);
    tg_tensor *inv = tg_pow_scalar(ctx, tg_add_scalar(ctx, var, r->p.f[0]), -0.5);
    tg_tensor *xhat = tg_mul(ctx, xc, inv);
    tg_tensor *sg = tg_sum(ctx, g, nax, axes, true);
    tg_tensor *sgx = tg_sum(ctx, tg_mul(ctx, g, xhat), nax, axes, true);
    if (!sg || !sgx)
        return ctx->status;
    if (x->requires_grad) {
        tg_tensor *t = tg_sub(ctx, tg_sub(ctx, g, tg_mul_scalar(ctx, sg, 1.0 / m)),
                              tg_mul(ctx, xhat, tg_mul_scalar(ctx, sgx, 1.0 / m)));
        tg_tensor *scale = tg_mul(ctx, inv, tg_reshape(ctx, w, x->ndim, pshape));
        if (!(gin[0] = tg_mul(ctx, t, scale)))
            return ctx->status;
    }
    if (w->requires_grad && !(gin[1] = tg_reshape(ctx, sgx, 1, &c)))
        return ctx->status;
    if (b->requires_grad && !(gin[2] = tg_reshape(ctx, sg, 1, &c)))
        return ctx->status;
    return TG_OK;
}

tg_status tg__bw_batch_norm(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    if (ctx->grad_enabled)
        return bn_backward_composed(ctx, r, g, gin);
    tg_tensor *x = r->in[0], *w = r->in[1], *b = r->in[2], *gw = NULL, *gb = NULL;
    tg_tensor *dx = tg_batch_norm_backward(ctx, g, x, w, r->in[3], &gw, &gb);
    if (!dx)
        return ctx->status;
    gin[0] = x->requires_grad ? dx : NULL;
    gin[1] = w->requires_grad ? gw : NULL;
    gin[2] = b->requires_grad ? gb : NULL;
    return TG_OK;
}

/* Never recorded (no TG_OPF_DIFF), so never called. */
tg_status tg__bw_batch_norm_backward(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    (void)r, (void)g, (void)gin;
    return tg__fail(ctx, TG_ERR_AUTOGRAD,
                    "batch_norm_backward: no second derivative (batch_norm's backward rule "
                    "uses composed ops under create_graph)");
}
