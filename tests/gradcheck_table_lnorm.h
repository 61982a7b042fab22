/*
 * tests/gradcheck_table_lnorm.h: the builders of the gradcheck cases for the
 * fused layer norm rows (runtime/core/ops_lnorm.c). Included by
 * gradcheck_table.h before its table; the rows themselves are in
 * gradcheck_rows_lnorm.h, included inside the table.
 */
B(lnf1, tg_layer_norm(ctx, X, 1, Y, Z, 1e-5))
B(lnf2, tg_layer_norm(ctx, X, 2, Y, Z, 1e-5))
/* x as a transposed view: the row makes it contiguous */
B(lnf_view, tg_layer_norm(ctx, tg_transpose(ctx, X, 0, 1), 1, Y, Z, 1e-5))
/* The backward row (g, x, w) with the statistics of x made under no-grad. */
static tg_tensor *b_lnb(tg_ctx *ctx, tg_tensor *const *in) {
    tg_tensor *st = NULL, *gw = NULL, *gb = NULL;
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *bias = tg_zeros(ctx, Z->dtype, Z->ndim, Z->shape);
    tg_tensor *y = tg_layer_norm_stats(ctx, Y, Z->ndim, Z, bias, 1e-5, &st);
    tg_set_grad_enabled(ctx, prev);
    if (!y)
        return NULL;
    tg_tensor *dx = tg_layer_norm_backward(ctx, X, Y, Z->ndim, Z, st, &gw, &gb);
    return dx && gw && !gw->requires_grad && gb && !gb->requires_grad ? dx : NULL;
}

/* squared, for the second-order check (the rule must record) */
#define SQ(name)                                                       \
    static tg_tensor *b_sq_##name(tg_ctx *ctx, tg_tensor *const *in) { \
        tg_tensor *t = b_##name(ctx, in);                              \
        return tg_mul(ctx, t, t);                                      \
    }
SQ(lnf1)
SQ(lnf2)
#undef SQ
