/*
 * Layer norm (nn.h): shape logic and backward rules of the layer_norm and
 * layer_norm_backward rows.
 *
 * x is normalised over its last dims, whose shape is the weight's: seen as
 * (R, D) with D = numel(weight), each of the R rows gets its own mean and
 * biased variance. The forward row keeps x, the weight and a (2, R) tensor
 * of per-row mean and invstd for backward; the composition of mean, sub,
 * mul, pow and add rows it replaces kept about eight tensors the size of x
 * per layer. The statistics tensor is the kernel's last input: the runtime
 * allocates it, the kernel fills it, and it never requires grad.
 * layer_norm_backward fills a (2, D) tensor with the weight and bias
 * gradients the same way.
 *
 * layer_norm_backward has no backward rule of its own. Under create_graph
 * layer_norm's rule builds the same gradient from composed rows that
 * recompute the statistics from x, so the graph stays differentiable to
 * every order; without it (every training step) the fused row runs.
 */
#include "internal.h"
#include "tapegrad/nn.h"

#include <stdio.h>

/* x float, weight (and bias) of its dtype, weight->ndim == ndim, x ends in
 * weight's shape, bias shaped as weight, nothing empty. */
static bool ln_check(tg_ctx *ctx, const char *op, tg_tensor *x, int ndim, tg_tensor *w,
                     tg_tensor *b) {
    char sx[96], sw[96], sb[96];
    tg_tensor *ts[3] = {x, w, b};
    if (!tg__check_args(ctx, op, b ? 3 : 2, ts) || !tg__check_float(ctx, op, x) ||
        !tg__check_same_dtype(ctx, op, x, w) || (b && !tg__check_same_dtype(ctx, op, x, b)))
        return false;
    if (ndim < 1 || ndim > TG_MAX_DIMS || w->ndim != ndim) {
        tg__fail(ctx, TG_ERR_SHAPE, "%s: ndim %d must be in [1, %d] and match weight %s", op, ndim,
                 TG_MAX_DIMS, tg_shape_str(w, sw, sizeof sw));
        return false;
    }
    bool ok = x->ndim >= ndim && tg_numel(x) > 0;
    for (int d = 0; ok && d < ndim; d++)
        ok = x->shape[x->ndim - ndim + d] == w->shape[d];
    for (int d = 0; ok && b && d < ndim; d++)
        ok = b->ndim == ndim && b->shape[d] == w->shape[d];
    if (!ok)
        tg__fail(ctx, TG_ERR_SHAPE,
                 "%s: input %s must be non-empty and end in the weight's shape %s%s%s", op,
                 tg_shape_str(x, sx, sizeof sx), tg_shape_str(w, sw, sizeof sw), b ? ", bias " : "",
                 b ? tg_shape_str(b, sb, sizeof sb) : "");
    return ok;
}

tg_tensor *tg_layer_norm_stats(tg_ctx *ctx, tg_tensor *x, int ndim, tg_tensor *weight,
                               tg_tensor *bias, double eps, tg_tensor **stats) {
    const char *op = "layer_norm";
    if (stats)
        *stats = NULL;
    if (!bias)
        return tg__fail(ctx, TG_ERR_INVALID, "layer_norm: NULL bias"), NULL;
    if (!ln_check(ctx, op, x, ndim, weight, bias))
        return NULL;
    if (!(eps > 0))
        return tg__fail(ctx, TG_ERR_INVALID, "layer_norm: eps %g must be > 0", eps), NULL;
    int64_t sshape[2] = {2, tg_numel(x) / tg_numel(weight)};
    tg_tensor *ins[4] = {tg_contiguous(ctx, x), tg_contiguous(ctx, weight),
                         tg_contiguous(ctx, bias), tg__new(ctx, x->dtype, 2, sshape, false)};
    if (!ins[0] || !ins[1] || !ins[2] || !ins[3])
        return NULL;
    tg_op_params p = {.f = {eps}};
    p.ints[0] = ndim;
    /* Saved for backward: x, the weight and the statistics (not the bias). */
    tg_tensor *y = tg__apply(ctx, TG_OP_LAYER_NORM, &p,
                             tg__new(ctx, x->dtype, x->ndim, x->shape, false), 4, ins, 0xBu);
    if (y && stats)
        *stats = ins[3];
    return y;
}

tg_tensor *tg_layer_norm(tg_ctx *ctx, tg_tensor *x, int ndim, tg_tensor *weight, tg_tensor *bias,
                         double eps) {
    return tg_layer_norm_stats(ctx, x, ndim, weight, bias, eps, NULL);
}

tg_tensor *tg_layer_norm_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x, int ndim,
                                  tg_tensor *weight, tg_tensor *stats, tg_tensor **gweight,
                                  tg_tensor **gbias) {
    const char *op = "layer_norm_backward";
    char sg[96], sx[96], ss[96];
    if (gweight)
        *gweight = NULL;
    if (gbias)
        *gbias = NULL;
    tg_tensor *ts[2] = {g, stats};
    if (!ln_check(ctx, op, x, ndim, weight, NULL) || !tg__check_args(ctx, op, 2, ts) ||
        !tg__check_same_dtype(ctx, op, x, g) || !tg__check_same_dtype(ctx, op, x, stats))
        return NULL;
    const int64_t d = tg_numel(weight), rows = tg_numel(x) / d;
    bool same = g->ndim == x->ndim;
    for (int k = 0; same && k < x->ndim; k++)
        same = g->shape[k] == x->shape[k];
    if (!same || stats->ndim != 2 || stats->shape[0] != 2 || stats->shape[1] != rows)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "%s: gradient %s must match input %s and stats %s be (2, %lld)", op,
                        tg_shape_str(g, sg, sizeof sg), tg_shape_str(x, sx, sizeof sx),
                        tg_shape_str(stats, ss, sizeof ss), (long long)rows),
               NULL;
    int64_t pshape[2] = {2, d};
    tg_tensor *ins[5] = {tg_contiguous(ctx, g), tg_contiguous(ctx, x), tg_contiguous(ctx, weight),
                         tg_contiguous(ctx, stats), tg__new(ctx, x->dtype, 2, pshape, false)};
    if (!ins[0] || !ins[1] || !ins[2] || !ins[3] || !ins[4])
        return NULL;
    tg_op_params p = {.f = {0}};
    p.ints[0] = ndim;
    tg_tensor *dx = tg__apply(ctx, TG_OP_LAYER_NORM_BACKWARD, &p,
                              tg__new(ctx, x->dtype, x->ndim, x->shape, false), 5, ins, 0);
    if (!dx)
        return NULL;
    for (int k = 0; k < 2; k++) {
        tg_tensor **dst = k ? gbias : gweight;
        if (dst &&
            !(*dst = tg_reshape(ctx, tg_slice(ctx, ins[4], 0, k, k + 1, 1), ndim, weight->shape)))
            return NULL;
    }
    return dx;
}

/* The same gradient from composed rows, statistics recomputed from x so
 * that their dependence on x is on the tape: with xhat = (x - mean) * invstd
 * and gw = g * w, per row over the normalised dims,
 *   dx = (gw - mean(gw) - xhat * mean(gw * xhat)) * invstd,
 * d weight = sum over the leading dims of g * xhat, d bias of g. */
static tg_status ln_backward_composed(tg_ctx *ctx, const tg__rec *r, tg_tensor *g,
                                      tg_tensor **gin) {
    tg_tensor *x = r->in[0], *w = r->in[1], *b = r->in[2];
    const int nd = (int)r->p.ints[0], lead = x->ndim - nd;
    int axes[TG_MAX_DIMS], laxes[TG_MAX_DIMS];
    for (int k = 0; k < nd; k++)
        axes[k] = lead + k;
    for (int k = 0; k < lead; k++)
        laxes[k] = k;
    tg_tensor *mean = tg_mean(ctx, x, nd, axes, true);
    tg_tensor *xc = tg_sub(ctx, x, mean);
    tg_tensor *var = tg_mean(ctx, tg_mul(ctx, xc, xc), nd, axes, true);
    tg_tensor *inv = tg_pow_scalar(ctx, tg_add_scalar(ctx, var, r->p.f[0]), -0.5);
    tg_tensor *xhat = tg_mul(ctx, xc, inv);
    if (!xhat)
        return ctx->status;
    if (x->requires_grad) {
        tg_tensor *gw = tg_mul(ctx, g, w);
        tg_tensor *t =
            tg_sub(ctx, tg_sub(ctx, gw, tg_mean(ctx, gw, nd, axes, true)),
                   tg_mul(ctx, xhat, tg_mean(ctx, tg_mul(ctx, gw, xhat), nd, axes, true)));
        if (!(gin[0] = tg_mul(ctx, t, inv)))
            return ctx->status;
    }
    /* With no leading dims the sum over them is the tensor itself (naxes 0
     * would sum everything). */
    if (w->requires_grad) {
        tg_tensor *gx = tg_mul(ctx, g, xhat);
        if (!(gin[1] = lead ? tg_sum(ctx, gx, lead, laxes, false) : gx))
            return ctx->status;
    }
    if (b->requires_grad && !(gin[2] = lead ? tg_sum(ctx, g, lead, laxes, false) : g))
        return ctx->status;
    return TG_OK;
}

tg_status tg__bw_layer_norm(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin) {
    if (ctx->grad_enabled)
        return ln_backward_composed(ctx, r, g, gin);
    tg_tensor *x = r->in[0], *w = r->in[1], *b = r->in[2], *gw = NULL, *gb = NULL;
    tg_tensor *dx = tg_layer_norm_backward(ctx, g, x, (int)r->p.ints[0], w, r->in[3], &gw, &gb);
    if (!dx)
        return ctx->status;
    gin[0] = x->requires_grad ? dx : NULL;
    gin[1] = w->requires_grad ? gw : NULL;
    gin[2] = b->requires_grad ? gb : NULL;
    return TG_OK;
}

/* Never recorded (no TG_OPF_DIFF), so never called. */
tg_status tg__bw_layer_norm_backward(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin) {
    (void)r, (void)g, (void)gin;
    return tg__fail(ctx, TG_ERR_AUTOGRAD,
                    "layer_norm_backward: no second derivative (layer_norm's backward rule "
                    "uses composed ops under create_graph)");
}
