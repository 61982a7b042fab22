/* Softmax family and indexing ops: forward and backward side by side. */
#include "internal.h"

#include <stdio.h>

#define SHAPE_OF(t) (t)->ndim, (t)->shape

static tg_tensor *softmax_like(tg_ctx *ctx, tg_op op, tg_tensor *a, int axis)
{
    const char *name = tg_op_name(op);
    if (!tg__check_args(ctx, name, 1, &a) || !tg__check_float(ctx, name, a) ||
        !tg__axis(ctx, name, a->ndim, &axis))
        return NULL;
    tg_op_params p = {.axis = axis};
    return tg__apply(ctx, op, &p, tg__new(ctx, a->dtype, SHAPE_OF(a), false), 1, &a,
                     TG__SAVED_OUT);
}

tg_tensor *tg_softmax(tg_ctx *ctx, tg_tensor *a, int axis)
{
    return softmax_like(ctx, TG_OP_SOFTMAX, a, axis);
}

tg_tensor *tg_log_softmax(tg_ctx *ctx, tg_tensor *a, int axis)
{
    return softmax_like(ctx, TG_OP_LOG_SOFTMAX, a, axis);
}

/* dx = y * (g - sum(g * y)) along the axis. */
tg_status tg__bw_softmax(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    tg_tensor *y = r->out;
    int ax = r->p.axis;
    tg_tensor *dot = tg_sum(ctx, tg_mul(ctx, g, y), 1, &ax, true);
    gin[0] = tg_mul(ctx, y, tg_sub(ctx, g, dot));
    return gin[0] ? TG_OK : ctx->status;
}

/* dx = g - exp(y) * sum(g) along the axis. */
tg_status tg__bw_log_softmax(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    int ax = r->p.axis;
    tg_tensor *s = tg_sum(ctx, g, 1, &ax, true);
    gin[0] = tg_sub(ctx, g, tg_mul(ctx, tg_exp(ctx, r->out), s));
    return gin[0] ? TG_OK : ctx->status;
}

/* ---- gather / scatter_add ---- */

static bool check_index(tg_ctx *ctx, const char *op, const tg_tensor *index, int ndim,
                        const int64_t *shape, int axis)
{
    if (index->dtype != TG_I64 && index->dtype != TG_I32 && index->dtype != TG_U8) {
        tg__fail(ctx, TG_ERR_DTYPE, "%s: index must be an integer tensor (u8, i32, i64), got %s",
                 op, tg_dtype_name(index->dtype));
        return false;
    }
    char a[96], b[96];
    if (index->ndim != ndim) {
        tg__fail(ctx, TG_ERR_SHAPE, "%s: index has %d dims, the tensor %d", op, index->ndim, ndim);
        return false;
    }
    for (int d = 0; d < ndim; d++) {
        if (d != axis && index->shape[d] > shape[d]) {
            tg_tensor probe = {.ndim = ndim};
            for (int i = 0; i < ndim; i++)
                probe.shape[i] = shape[i];
            tg__fail(ctx, TG_ERR_SHAPE, "%s: index of shape %s exceeds %s in dim %d", op,
                     tg_shape_str(index, a, sizeof a), tg_shape_str(&probe, b, sizeof b), d);
            return false;
        }
    }
    return true;
}

tg_tensor *tg_gather(tg_ctx *ctx, tg_tensor *a, int axis, tg_tensor *index)
{
    tg_tensor *ins[2] = {a, index};
    if (!tg__check_args(ctx, "gather", 2, ins) || !tg__check_float(ctx, "gather", a) ||
        !tg__axis(ctx, "gather", a->ndim, &axis) ||
        !check_index(ctx, "gather", index, SHAPE_OF(a), axis))
        return NULL;
    tg_op_params p = {.axis = axis};
    return tg__apply(ctx, TG_OP_GATHER, &p, tg__new(ctx, a->dtype, SHAPE_OF(index), false), 2, ins,
                     2u);
}

tg_status tg__bw_gather(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_scatter_add(ctx, g, r->p.axis, r->in[1], SHAPE_OF(r->in[0]));
    return gin[0] ? TG_OK : ctx->status;
}

tg_tensor *tg_scatter_add(tg_ctx *ctx, tg_tensor *src, int axis, tg_tensor *index, int ndim,
                          const int64_t *shape)
{
    tg_tensor *ins[2] = {src, index};
    if (!tg__check_args(ctx, "scatter_add", 2, ins) || !tg__check_float(ctx, "scatter_add", src))
        return NULL;
    if (ndim < 1 || ndim > TG_MAX_DIMS || !shape)
        return tg__fail(ctx, TG_ERR_SHAPE, "scatter_add: bad target of %d dims", ndim), NULL;
    if (!tg__axis(ctx, "scatter_add", ndim, &axis) ||
        !check_index(ctx, "scatter_add", index, ndim, shape, axis))
        return NULL;
    char a[96], b[96];
    if (src->ndim != index->ndim)
        return tg__fail(ctx, TG_ERR_SHAPE, "scatter_add: source %s and index %s differ",
                        tg_shape_str(src, a, sizeof a), tg_shape_str(index, b, sizeof b)), NULL;
    for (int d = 0; d < ndim; d++)
        if (src->shape[d] != index->shape[d])
            return tg__fail(ctx, TG_ERR_SHAPE, "scatter_add: source %s and index %s differ",
                            tg_shape_str(src, a, sizeof a), tg_shape_str(index, b, sizeof b)),
                   NULL;
    tg_op_params p = {.axis = axis};
    tg_tensor *out = tg__new(ctx, src->dtype, ndim, shape, false);
    /* The kernel is skipped for an empty source, but the zeros must exist. */
    if (out && tg_numel(src) == 0 && tg_numel(out) &&
        ctx->be->zero(ctx->bstate, out->storage->data, out->storage->nbytes))
        return tg__fail(ctx, TG_ERR_BACKEND, "scatter_add: zero fill failed"), NULL;
    return tg__apply(ctx, TG_OP_SCATTER_ADD, &p, out, 2, ins, 2u);
}

tg_status tg__bw_scatter_add(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_gather(ctx, g, r->p.axis, r->in[1]);
    return gin[0] ? TG_OK : ctx->status;
}
