/*
 * Ops across ranks: world_sum, the one row through which the tape reaches
 * the other ranks (SyncBatchNorm's statistics are built from it in
 * runtime/nn/nn_layers.c). The runtime does not know how ranks talk: comm/
 * installs a tg_collective in the context, and without one the op is the
 * identity (a world of one), which is also what the gradient checks see.
 *
 * Its backward rule is itself: with y_r = sum_q x_q on every rank r, the
 * gradient of the ranks' summed losses with respect to x_r is
 * sum_q dL/dy_q, the world_sum of the incoming gradients. Since data-parallel
 * training averages the ranks' parameter gradients, this is exactly the
 * gradient of the global batch's loss that one rank would compute.
 */
#include "internal.h"

#include <string.h>

void tg_set_collective(tg_ctx *ctx, const tg_collective *c)
{
    if (c && c->sum)
        ctx->coll = *c;
    else
        memset(&ctx->coll, 0, sizeof ctx->coll);
}

int tg_collective_size(const tg_ctx *ctx)
{
    return ctx->coll.sum && ctx->coll.size > 1 ? ctx->coll.size : 1;
}

tg_tensor *tg_world_sum(tg_ctx *ctx, tg_tensor *x)
{
    if (!tg__check_args(ctx, "world_sum", 1, &x) || !tg__check_float(ctx, "world_sum", x))
        return NULL;
    tg_tensor *y = tg__apply(ctx, TG_OP_WORLD_SUM, NULL,
                             tg__new(ctx, x->dtype, x->ndim, x->shape, false), 1, &x, 0);
    if (!y || tg_collective_size(ctx) == 1 || tg_numel(y) == 0)
        return y;
    /* The collective may run on another stream (NCCL's): the copy must be done. */
    if (ctx->be->synchronize && ctx->be->synchronize(ctx->bstate) != TG_OK)
        return tg__fail(ctx, TG_ERR_BACKEND, "world_sum: synchronising the device failed"), NULL;
    char why[256] = "";
    void *data = (char *)y->storage->data + (size_t)y->offset * tg_dtype_size(y->dtype);
    tg_status s = ctx->coll.sum(ctx->coll.user, ctx, data, tg_numel(y), y->dtype, why, sizeof why);
    if (s)
        return tg__fail(ctx, s, "world_sum: %s", why[0] ? why : tg_status_str(s)), NULL;
    return y;
}

tg_status tg__bw_world_sum(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    if (r->in[0]->requires_grad && !(gin[0] = tg_world_sum(ctx, g)))
        return ctx->status;
    return TG_OK;
}
