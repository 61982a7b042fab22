/* Reductions and matmul: forward shape logic and backward rules. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* Axis list -> bitmask over ndim dims; naxes 0 means every axis. */
static bool axes_mask(tg_ctx *ctx, const char *op, int ndim, int naxes, const int *axes,
                      uint32_t *mask)
{
    *mask = 0;
    if (naxes == 0) {
        *mask = ndim ? (uint32_t)((1u << ndim) - 1) : 0;
        return true;
    }
    if (naxes < 0 || !axes) {
        tg__fail(ctx, TG_ERR_INVALID, "%s: bad axis list", op);
        return false;
    }
    for (int i = 0; i < naxes; i++) {
        int ax = axes[i];
        if (!tg__axis(ctx, op, ndim, &ax))
            return false;
        if (*mask & (1u << ax)) {
            tg__fail(ctx, TG_ERR_AXIS, "%s: axis %d listed twice", op, axes[i]);
            return false;
        }
        *mask |= 1u << ax;
    }
    return true;
}

static int reduced_shape(const tg_tensor *a, uint32_t mask, bool keepdim, int64_t *shape)
{
    int nd = 0;
    for (int i = 0; i < a->ndim; i++) {
        if (mask & (1u << i)) {
            if (keepdim)
                shape[nd++] = 1;
        } else {
            shape[nd++] = a->shape[i];
        }
    }
    return nd;
}

static tg_tensor *reduce(tg_ctx *ctx, tg_op op, tg_tensor *a, int naxes, const int *axes,
                         bool keepdim, uint32_t saved)
{
    const char *name = tg_op_name(op);
    uint32_t mask;
    /* sum also counts: integer tensors sum to i64, as in PyTorch. */
    bool int_sum = op == TG_OP_SUM && a && !tg_dtype_is_float(a->dtype);
    if (!tg__check_args(ctx, name, 1, &a) || (!int_sum && !tg__check_float(ctx, name, a)) ||
        !axes_mask(ctx, name, a->ndim, naxes, axes, &mask))
        return NULL;
    for (int i = 0; (op == TG_OP_MAX || op == TG_OP_MIN) && i < a->ndim; i++)
        if ((mask & (1u << i)) && a->shape[i] == 0)
            return tg__fail(ctx, TG_ERR_SHAPE, "%s: reduction over an empty axis %d", name, i),
                   NULL;
    int64_t shape[TG_MAX_DIMS];
    int nd = reduced_shape(a, mask, keepdim, shape);
    tg_op_params p = {.axes = mask, .keepdim = keepdim};
    return tg__apply(ctx, op, &p, tg__new(ctx, int_sum ? TG_I64 : a->dtype, nd, shape, false), 1,
                     &a, saved);
}

tg_tensor *tg_sum(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim)
{
    return reduce(ctx, TG_OP_SUM, a, naxes, axes, keepdim, 0);
}

tg_tensor *tg_mean(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim)
{
    return reduce(ctx, TG_OP_MEAN, a, naxes, axes, keepdim, 0);
}

tg_tensor *tg_max(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim)
{
    return reduce(ctx, TG_OP_MAX, a, naxes, axes, keepdim, 1u | TG__SAVED_OUT);
}

tg_tensor *tg_min(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim)
{
    return reduce(ctx, TG_OP_MIN, a, naxes, axes, keepdim, 1u | TG__SAVED_OUT);
}

tg_tensor *tg_argmax(tg_ctx *ctx, tg_tensor *a, int axis, bool keepdim)
{
    if (!tg__check_args(ctx, "argmax", 1, &a) || !tg__check_float(ctx, "argmax", a) ||
        !tg__axis(ctx, "argmax", a->ndim, &axis))
        return NULL;
    if (a->shape[axis] == 0)
        return tg__fail(ctx, TG_ERR_SHAPE, "argmax: empty axis %d", axis), NULL;
    int64_t shape[TG_MAX_DIMS];
    int nd = reduced_shape(a, 1u << axis, keepdim, shape);
    tg_op_params p = {.axis = axis, .keepdim = keepdim, .axes = 1u << axis};
    return tg__apply(ctx, TG_OP_ARGMAX, &p, tg__new(ctx, TG_I64, nd, shape, false), 1, &a, 0);
}

tg_tensor *tg__unsqueeze_axes(tg_ctx *ctx, tg_tensor *g, int ndim, const int64_t *shape,
                              uint32_t axes)
{
    int64_t ks[TG_MAX_DIMS];
    for (int i = 0; i < ndim; i++)
        ks[i] = (axes & (1u << i)) ? 1 : shape[i];
    return tg_reshape(ctx, g, ndim, ks);
}

tg_status tg__bw_argmax(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    (void)g, (void)gin;
    return tg__fail(ctx, TG_ERR_AUTOGRAD, "%s is not differentiable", tg_op_name(r->op));
}

/* The gradient of a reduction seen from the input's shape: g broadcast back. */
static tg_tensor *expand_grad(tg_ctx *ctx, const tg__rec *r, tg_tensor *g)
{
    const tg_tensor *x = r->in[0];
    if (!r->p.keepdim)
        g = tg__unsqueeze_axes(ctx, g, x->ndim, x->shape, r->p.axes);
    return tg_broadcast_to(ctx, g, x->ndim, x->shape);
}

tg_status tg__bw_sum(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = expand_grad(ctx, r, g);
    return gin[0] ? TG_OK : ctx->status;
}

tg_status tg__bw_mean(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    int64_t n = tg_numel(r->in[0]) / (tg_numel(r->out) ? tg_numel(r->out) : 1);
    gin[0] = tg_mul_scalar(ctx, expand_grad(ctx, r, g), n ? 1.0 / (double)n : 0.0);
    return gin[0] ? TG_OK : ctx->status;
}

/* Ties share the gradient evenly (seed 002): mask = (x == max), divided by
 * the number of tied elements in each reduced group. The mask is a constant,
 * so the rule is differentiable in g for higher-order gradients. */
static tg_status bw_extremum(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    const tg_tensor *x = r->in[0];
    tg_tensor *m = r->out;
    if (!r->p.keepdim)
        m = tg__unsqueeze_axes(ctx, m, x->ndim, x->shape, r->p.axes);
    tg_tensor *mask = tg_eq(ctx, r->in[0], m);
    int axes[TG_MAX_DIMS], n = 0;
    for (int i = 0; i < x->ndim; i++)
        if (r->p.axes & (1u << i))
            axes[n++] = i;
    tg_tensor *count = n ? tg_sum(ctx, mask, n, axes, true) : mask;
    gin[0] = tg_mul(ctx, tg_div(ctx, mask, count), expand_grad(ctx, r, g));
    return gin[0] ? TG_OK : ctx->status;
}

tg_status tg__bw_max(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    return bw_extremum(ctx, r, g, gin);
}

tg_status tg__bw_min(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    return bw_extremum(ctx, r, g, gin);
}

/* ---- matmul ---- */

/* BLAS takes a matrix whose rows or columns are unit-stride; anything else
 * is copied first (the record keeps the original operand). */
static bool blas_ok(const tg_tensor *t)
{
    int n = t->ndim;
    return t->strides[n - 1] == 1 || t->strides[n - 2] == 1 || t->shape[n - 1] == 1 ||
           t->shape[n - 2] == 1;
}

static tg_tensor *plain_copy(tg_ctx *ctx, tg_tensor *t)
{
    tg_tensor *c = tg__new(ctx, t->dtype, t->ndim, t->shape, false);
    if (!c || tg__run(ctx, TG_OP_COPY, NULL, c, 1, &t) != TG_OK)
        return NULL;
    return c;
}

/* A view of t with a dim of size 1 inserted at position pos. */
static tg_tensor *unsqueeze_view(tg_ctx *ctx, tg_tensor *t, int pos)
{
    int64_t shape[TG_MAX_DIMS], strides[TG_MAX_DIMS];
    for (int i = 0, j = 0; i <= t->ndim; i++) {
        if (i == pos) {
            shape[i] = 1;
            strides[i] = 1;
            continue;
        }
        shape[i] = t->shape[j];
        strides[i] = t->strides[j];
        j++;
    }
    return tg__view(ctx, t, t->ndim + 1, shape, strides, t->offset);
}

/* Expand the batch dims of t (>= 2-D) to (nd-2 batch dims, rows, cols). */
static tg_tensor *batch_view(tg_ctx *ctx, tg_tensor *t, int nd, const int64_t *batch)
{
    int64_t shape[TG_MAX_DIMS], strides[TG_MAX_DIMS];
    int lead = nd - t->ndim;
    for (int i = 0; i < nd - 2; i++) {
        int it = i - lead;
        shape[i] = batch[i];
        strides[i] = (it >= 0 && t->shape[it] == batch[i]) ? t->strides[it] : 0;
    }
    for (int i = 0; i < 2; i++) {
        shape[nd - 2 + i] = t->shape[t->ndim - 2 + i];
        strides[nd - 2 + i] = t->strides[t->ndim - 2 + i];
    }
    return tg__view(ctx, t, nd, shape, strides, t->offset);
}

tg_tensor *tg_matmul(tg_ctx *ctx, tg_tensor *a, tg_tensor *b)
{
    tg_tensor *ins[2] = {a, b};
    if (!tg__check_args(ctx, "matmul", 2, ins) || !tg__check_float(ctx, "matmul", a) ||
        !tg__check_same_dtype(ctx, "matmul", a, b))
        return NULL;
    char sa[96], sb[96];
    if (a->ndim == 0 || b->ndim == 0)
        return tg__fail(ctx, TG_ERR_SHAPE, "matmul: operands must have at least 1 dim (%s @ %s)",
                        tg_shape_str(a, sa, sizeof sa), tg_shape_str(b, sb, sizeof sb)),
               NULL;
    tg_tensor *a2 = a->ndim == 1 ? unsqueeze_view(ctx, a, 0) : a;
    tg_tensor *b2 = b->ndim == 1 ? unsqueeze_view(ctx, b, 1) : b;
    if (!a2 || !b2)
        return NULL;
    int64_t n = a2->shape[a2->ndim - 2], k = a2->shape[a2->ndim - 1];
    int64_t k2 = b2->shape[b2->ndim - 2], m = b2->shape[b2->ndim - 1];
    if (k != k2)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "matmul: inner dims differ: %s @ %s (%lld vs %lld)",
                        tg_shape_str(a, sa, sizeof sa), tg_shape_str(b, sb, sizeof sb),
                        (long long)k, (long long)k2),
               NULL;
    /* Broadcast the batch dims, as elementwise ops do. */
    tg_tensor ba = {.ndim = a2->ndim - 2}, bb = {.ndim = b2->ndim - 2};
    memcpy(ba.shape, a2->shape, sizeof(int64_t) * (size_t)ba.ndim);
    memcpy(bb.shape, b2->shape, sizeof(int64_t) * (size_t)bb.ndim);
    int nb;
    int64_t batch[TG_MAX_DIMS];
    if (!tg__broadcast_shape(ctx, "matmul", &ba, &bb, &nb, batch)) {
        tg_ctx_clear_error(ctx);
        return tg__fail(ctx, TG_ERR_SHAPE, "matmul: batch dims of %s and %s do not broadcast",
                        tg_shape_str(a, sa, sizeof sa), tg_shape_str(b, sb, sizeof sb)),
               NULL;
    }
    int nd = nb + 2;
    if (nd > TG_MAX_DIMS)
        return tg__fail(ctx, TG_ERR_SHAPE, "matmul: too many dims"), NULL;
    int64_t full[TG_MAX_DIMS], oshape[TG_MAX_DIMS];
    memcpy(full, batch, sizeof(int64_t) * (size_t)nb);
    full[nb] = n;
    full[nb + 1] = m;
    int ond = 0;
    for (int i = 0; i < nd; i++)
        if (!((i == nb && a->ndim == 1) || (i == nb + 1 && b->ndim == 1)))
            oshape[ond++] = full[i];
    tg_tensor *out = tg__new(ctx, a->dtype, ond, oshape, false);
    if (!out)
        return NULL;
    tg_tensor *va = blas_ok(a2) ? a2 : plain_copy(ctx, a2);
    tg_tensor *vb = blas_ok(b2) ? b2 : plain_copy(ctx, b2);
    tg_tensor *views[2] = {va ? batch_view(ctx, va, nd, batch) : NULL,
                           vb ? batch_view(ctx, vb, nd, batch) : NULL};
    int64_t ostr[TG_MAX_DIMS];
    tg__contig_strides(nd, full, ostr);
    tg_tensor *vout = tg__view(ctx, out, nd, full, ostr, 0);
    /* Autocast: f32 operands multiplied in bf16 (the record keeps NULL
     * params: the backward products consult the context again). */
    tg_op_params lo = {0};
    lo.ints[TG_KP_MATMUL_BF16] = 1;
    const tg_op_params *mp = ctx->precision == TG_PRECISION_BF16 && a->dtype == TG_F32 ? &lo : NULL;
    if (!views[0] || !views[1] || !vout || tg__run(ctx, TG_OP_MATMUL, mp, vout, 2, views) != TG_OK)
        return NULL;
    if (tg__record(ctx, TG_OP_MATMUL, NULL, out, 2, ins, 3u) != TG_OK)
        return NULL;
    return out;
}

/* ga = g @ b^T and gb = a^T @ g, with 1-D operands promoted as in the
 * forward and broadcast batch dims summed away. */
tg_status tg__bw_matmul(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    tg_tensor *a = r->in[0], *b = r->in[1];
    int64_t ka[2] = {1, a->shape[0]}, kb[2] = {b->shape[0], 1};
    tg_tensor *a2 = a->ndim == 1 ? tg_reshape(ctx, a, 2, ka) : a;
    tg_tensor *b2 = b->ndim == 1 ? tg_reshape(ctx, b, 2, kb) : b;
    if (!a2 || !b2)
        return ctx->status;
    /* g with the promoted dims put back: (batch..., n, m). */
    int64_t gs[TG_MAX_DIMS];
    int gnd = 0;
    int nbatch = g->ndim - (a->ndim != 1) - (b->ndim != 1);
    for (int i = 0; i < nbatch; i++)
        gs[gnd++] = g->shape[i];
    gs[gnd++] = a2->shape[a2->ndim - 2];
    gs[gnd++] = b2->shape[b2->ndim - 1];
    tg_tensor *g2 = tg_reshape(ctx, g, gnd, gs);
    if (a->requires_grad) {
        tg_tensor *ga = tg_matmul(ctx, g2, tg_transpose(ctx, b2, -1, -2));
        gin[0] = tg_reshape(ctx, tg_sum_to(ctx, ga, a2->ndim, a2->shape), a->ndim, a->shape);
        if (!gin[0])
            return ctx->status;
    }
    if (b->requires_grad) {
        /* A matrix used transposed (x W^T, where b is the view W^T) gets its
         * gradient in the same layout, computed as (g^T a)^T: transpose's
         * backward then hands W a contiguous gradient, which accumulates
         * without a transposing copy. */
        const bool bt = b->ndim == 2 && b->shape[0] > 1 && b->shape[1] > 1 &&
                        b->strides[0] == 1 && b->strides[1] == b->shape[0];
        tg_tensor *gb, *ra = a2, *rg = g2;
        bool two = a2->ndim == 2;
        if (b2->ndim == 2 && a2->ndim > 2 && tg_is_contiguous(a2) && tg_is_contiguous(g2)) {
            /* b was shared by every batch: fold the batch into the rows and do
             * one GEMM instead of a batched product and a sum. */
            int64_t as[2] = {-1, a2->shape[a2->ndim - 1]}, gs2[2] = {-1, gs[gnd - 1]};
            ra = tg_reshape(ctx, a2, 2, as);
            rg = tg_reshape(ctx, g2, 2, gs2);
            two = true;
        }
        if (two && bt)
            gb = tg_transpose(ctx, tg_matmul(ctx, tg_transpose(ctx, rg, 0, 1), ra), 0, 1);
        else
            gb = tg_matmul(ctx, tg_transpose(ctx, ra, -1, -2), rg);
        gb = tg_sum_to(ctx, gb, b2->ndim, b2->shape);
        /* reshape copies a strided tensor even to its own shape. */
        gin[1] = gb && gb->ndim == b->ndim &&
                         !memcmp(gb->shape, b->shape, sizeof(int64_t) * (size_t)b->ndim)
                     ? gb
                     : tg_reshape(ctx, gb, b->ndim, b->shape);
        if (!gin[1])
            return ctx->status;
    }
    return TG_OK;
}
