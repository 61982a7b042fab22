/* The ops PyTorch users reach for: comparisons, maximum/minimum, sin/cos,
 * casts, cumsum and topk (rows of ops.def), and the functions composed from
 * rows (detach, logsumexp, var/std, index_select, masked_fill, squeeze and
 * unsqueeze). Forward shape/dtype logic and backward rules side by side. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define IN0 (1u << 0)
#define IN1 (1u << 1)
#define SHAPE_OF(t) (t)->ndim, (t)->shape

static tg_status not_differentiable(tg_ctx *ctx, const tg__rec *r)
{
    return tg__fail(ctx, TG_ERR_AUTOGRAD, "%s is not differentiable", tg_op_name(r->op));
}

#define NODIFF_BW(name)                                                                       \
    tg_status tg__bw_##name(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)   \
    {                                                                                         \
        (void)g, (void)gin;                                                                   \
        return not_differentiable(ctx, r);                                                    \
    }

/* ---- comparisons ---- */

tg_tensor *tg_ne(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_NE, a, b, NULL, 0, true); }
tg_tensor *tg_gt(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_GT, a, b, NULL, 0, true); }
tg_tensor *tg_ge(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_GE, a, b, NULL, 0, true); }
tg_tensor *tg_lt(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_LT, a, b, NULL, 0, true); }
tg_tensor *tg_le(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_LE, a, b, NULL, 0, true); }
NODIFF_BW(ne)
NODIFF_BW(gt)
NODIFF_BW(ge)
NODIFF_BW(lt)
NODIFF_BW(le)

/* ---- maximum, minimum ---- */

tg_tensor *tg_maximum(tg_ctx *ctx, tg_tensor *a, tg_tensor *b)
{
    return tg__binary(ctx, TG_OP_MAXIMUM, a, b, NULL, IN0 | IN1, true);
}
tg_tensor *tg_minimum(tg_ctx *ctx, tg_tensor *a, tg_tensor *b)
{
    return tg__binary(ctx, TG_OP_MINIMUM, a, b, NULL, IN0 | IN1, true);
}

/* a's share of g is 1 where a wins, 1/2 on a tie (as max splits among tied
 * extrema), 0 where b wins; b gets the rest. The shares are constants. */
static tg_status bw_maxmin(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin, bool max)
{
    tg_tensor *a = r->in[0], *b = r->in[1];
    tg_tensor *wins = max ? tg_gt(ctx, a, b) : tg_lt(ctx, a, b);
    tg_tensor *wa = tg_add(ctx, wins, tg_mul_scalar(ctx, tg_eq(ctx, a, b), 0.5));
    if (a->requires_grad && !(gin[0] = tg_sum_to(ctx, tg_mul(ctx, g, wa), SHAPE_OF(a))))
        return ctx->status;
    if (b->requires_grad &&
        !(gin[1] = tg_sum_to(ctx, tg_mul(ctx, g, tg_affine(ctx, wa, -1.0, 1.0)), SHAPE_OF(b))))
        return ctx->status;
    return TG_OK;
}

tg_status tg__bw_maximum(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    return bw_maxmin(ctx, r, g, gin, true);
}
tg_status tg__bw_minimum(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    return bw_maxmin(ctx, r, g, gin, false);
}

/* ---- sin, cos ---- */

tg_tensor *tg_sin(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_SIN, a, NULL, IN0); }
tg_tensor *tg_cos(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_COS, a, NULL, IN0); }

tg_status tg__bw_sin(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_mul(ctx, g, tg_cos(ctx, r->in[0]));
    return gin[0] ? TG_OK : ctx->status;
}
tg_status tg__bw_cos(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_mul(ctx, g, tg_neg(ctx, tg_sin(ctx, r->in[0])));
    return gin[0] ? TG_OK : ctx->status;
}

/* ---- casts and detach ---- */

tg_tensor *tg_to_dtype(tg_ctx *ctx, tg_tensor *a, tg_dtype dt)
{
    if (!tg__check_args(ctx, "to_dtype", 1, &a))
        return NULL;
    if ((unsigned)dt >= TG_DTYPE_COUNT)
        return tg__fail(ctx, TG_ERR_DTYPE, "to_dtype: unknown target dtype %d", (int)dt), NULL;
    tg_tensor *out = tg__new(ctx, dt, a->ndim, a->shape, false);
    if (!out || tg__run(ctx, TG_OP_CAST, NULL, out, 1, &a) != TG_OK)
        return NULL;
    /* Gradients flow between float dtypes only: an integer result is a
     * constant, like argmax's. */
    if (tg_dtype_is_float(dt) && tg_dtype_is_float(a->dtype) &&
        tg__record(ctx, TG_OP_CAST, NULL, out, 1, &a, 0) != TG_OK)
        return NULL;
    return out;
}

tg_status tg__bw_cast(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_to_dtype(ctx, g, r->in[0]->dtype);
    return gin[0] ? TG_OK : ctx->status;
}

tg_tensor *tg_detach(tg_ctx *ctx, tg_tensor *a)
{
    if (!tg__check_args(ctx, "detach", 1, &a))
        return NULL;
    /* A view: shares the storage (and its version counter), is a leaf and
     * never requires grad. */
    return tg__view(ctx, a, a->ndim, a->shape, a->strides, a->offset);
}

/* ---- cumsum ---- */

static tg_tensor *cumsum_op(tg_ctx *ctx, tg_tensor *a, int axis, bool reverse)
{
    if (!tg__check_args(ctx, "cumsum", 1, &a) || !tg__check_float(ctx, "cumsum", a) ||
        !tg__axis(ctx, "cumsum", a->ndim, &axis))
        return NULL;
    tg_op_params p = {.axis = axis, .ints = {reverse ? 1 : 0}};
    return tg__apply(ctx, TG_OP_CUMSUM, &p, tg__new(ctx, a->dtype, a->ndim, a->shape, false), 1,
                     &a, 0);
}

tg_tensor *tg_cumsum(tg_ctx *ctx, tg_tensor *a, int axis)
{
    /* A 0-d tensor is its own cumsum, as in PyTorch. */
    if (a && a->ndim == 0)
        return tg_copy(ctx, a);
    return cumsum_op(ctx, a, axis, false);
}

tg_status tg__bw_cumsum(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = cumsum_op(ctx, g, r->p.axis, r->p.ints[0] == 0);
    return gin[0] ? TG_OK : ctx->status;
}

/* ---- topk ---- */

tg_tensor *tg_topk_indices(tg_ctx *ctx, tg_tensor *a, int64_t k, int axis, bool largest)
{
    if (!tg__check_args(ctx, "topk", 1, &a) || !tg__check_float(ctx, "topk", a))
        return NULL;
    if (a->ndim == 0)
        return tg__fail(ctx, TG_ERR_SHAPE, "topk: needs at least one dim, got a 0-d tensor"), NULL;
    if (!tg__axis(ctx, "topk", a->ndim, &axis))
        return NULL;
    if (k < 0 || k > a->shape[axis])
        return tg__fail(ctx, TG_ERR_INVALID, "topk: k = %lld is outside [0, %lld] (the size of axis %d)",
                        (long long)k, (long long)a->shape[axis], axis),
               NULL;
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[axis] = k;
    tg_op_params p = {.axis = axis, .ints = {k, largest ? 1 : 0}};
    return tg__apply(ctx, TG_OP_TOPK_INDICES, &p, tg__new(ctx, TG_I64, a->ndim, shape, false), 1,
                     &a, 0);
}
NODIFF_BW(topk_indices)

tg_tensor *tg_topk(tg_ctx *ctx, tg_tensor *a, int64_t k, int axis, bool largest,
                   tg_tensor **indices)
{
    tg_tensor *idx = tg_topk_indices(ctx, a, k, axis, largest);
    if (indices)
        *indices = idx;
    return idx ? tg_gather(ctx, a, axis, idx) : NULL;
}

/* ---- composites ---- */

tg_tensor *tg_logsumexp(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim)
{
    if (!tg__check_args(ctx, "logsumexp", 1, &a) || !tg__check_float(ctx, "logsumexp", a))
        return NULL;
    /* log sum exp(a - m) + m with m the maximum, held constant (its
     * gradient cancels); an infinite m is replaced by 0 so that a row of
     * -inf gives -inf rather than NaN. */
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *m = tg_max(ctx, a, naxes, axes, true);
    tg_tensor *fin = m ? tg_where(ctx, tg_eq(ctx, tg_abs(ctx, m), tg_scalar(ctx, m->dtype, INFINITY)),
                                  tg_scalar(ctx, m->dtype, 0.0), m)
                       : NULL;
    tg_set_grad_enabled(ctx, prev);
    tg_tensor *s = tg_log(ctx, tg_sum(ctx, tg_exp(ctx, tg_sub(ctx, a, fin)), naxes, axes, true));
    tg_tensor *out = tg_add(ctx, s, fin);
    if (!out || keepdim)
        return out;
    /* drop the reduced dims: sum without keepdim gives the shape */
    tg_tensor *probe = tg_sum(ctx, tg_detach(ctx, fin), naxes, axes, false);
    return probe ? tg_reshape(ctx, out, probe->ndim, probe->shape) : NULL;
}

tg_tensor *tg_var(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool unbiased,
                  bool keepdim)
{
    if (!tg__check_args(ctx, "var", 1, &a) || !tg__check_float(ctx, "var", a))
        return NULL;
    tg_tensor *mean = tg_mean(ctx, a, naxes, axes, true);
    tg_tensor *d = tg_sub(ctx, a, mean);
    tg_tensor *ss = tg_sum(ctx, tg_mul(ctx, d, d), naxes, axes, keepdim);
    if (!ss)
        return NULL;
    int64_t n = tg_numel(a) / (tg_numel(ss) ? tg_numel(ss) : 1);
    if (tg_numel(ss) == 0)
        n = 0;
    /* n - 1 = 0 gives inf/NaN, as in PyTorch */
    double div = (double)n - (unbiased ? 1.0 : 0.0);
    return tg_mul_scalar(ctx, ss, 1.0 / div);
}

tg_tensor *tg_std(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool unbiased,
                  bool keepdim)
{
    return tg_sqrt(ctx, tg_var(ctx, a, naxes, axes, unbiased, keepdim));
}

tg_tensor *tg_index_select(tg_ctx *ctx, tg_tensor *a, int axis, tg_tensor *index)
{
    tg_tensor *ins[2] = {a, index};
    if (!tg__check_args(ctx, "index_select", 2, ins) || !tg__axis(ctx, "index_select", a->ndim, &axis))
        return NULL;
    if (index->ndim != 1 || tg_dtype_is_float(index->dtype)) {
        char b[96];
        return tg__fail(ctx, TG_ERR_SHAPE, "index_select: index must be a 1-d integer tensor, got %s %s",
                        tg_dtype_name(index->dtype), tg_shape_str(index, b, sizeof b)),
               NULL;
    }
    /* gather with the index laid along axis and broadcast over the rest */
    int64_t ishape[TG_MAX_DIMS], oshape[TG_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) {
        ishape[d] = d == axis ? index->shape[0] : 1;
        oshape[d] = d == axis ? index->shape[0] : a->shape[d];
    }
    tg_tensor *idx = tg_broadcast_to(ctx, tg_reshape(ctx, index, a->ndim, ishape), a->ndim, oshape);
    return tg_gather(ctx, a, axis, idx);
}

tg_tensor *tg_masked_fill(tg_ctx *ctx, tg_tensor *a, tg_tensor *mask, double value)
{
    tg_tensor *ins[2] = {a, mask};
    if (!tg__check_args(ctx, "masked_fill", 2, ins) || !tg__check_float(ctx, "masked_fill", a))
        return NULL;
    tg_tensor *out = tg_where(ctx, mask, tg_scalar(ctx, a->dtype, value), a);
    if (out && (out->ndim != a->ndim || memcmp(out->shape, a->shape, sizeof(int64_t) * (size_t)a->ndim))) {
        char sa[96], sm[96];
        return tg__fail(ctx, TG_ERR_SHAPE, "masked_fill: mask %s must broadcast to the tensor's shape %s",
                        tg_shape_str(mask, sm, sizeof sm), tg_shape_str(a, sa, sizeof sa)),
               NULL;
    }
    return out;
}

tg_tensor *tg_unsqueeze(tg_ctx *ctx, tg_tensor *a, int axis)
{
    if (!tg__check_args(ctx, "unsqueeze", 1, &a))
        return NULL;
    if (a->ndim >= TG_MAX_DIMS)
        return tg__fail(ctx, TG_ERR_SHAPE, "unsqueeze: already %d dims, the most a tensor has",
                        a->ndim),
               NULL;
    if (!tg__axis(ctx, "unsqueeze", a->ndim + 1, &axis))
        return NULL;
    int64_t shape[TG_MAX_DIMS];
    for (int d = 0, s = 0; d <= a->ndim; d++)
        shape[d] = d == axis ? 1 : a->shape[s++];
    return tg_reshape(ctx, a, a->ndim + 1, shape);
}

tg_tensor *tg_squeeze(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes)
{
    if (!tg__check_args(ctx, "squeeze", 1, &a))
        return NULL;
    uint32_t drop = 0;
    for (int i = 0; i < naxes; i++) {
        int ax = axes[i];
        if (!tg__axis(ctx, "squeeze", a->ndim, &ax))
            return NULL;
        drop |= 1u << ax;
    }
    int64_t shape[TG_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < a->ndim; d++) {
        /* as in PyTorch, a named dim whose size is not 1 stays */
        bool named = naxes == 0 || (drop & (1u << d));
        if (!(named && a->shape[d] == 1))
            shape[nd++] = a->shape[d];
    }
    return tg_reshape(ctx, a, nd, shape);
}
