/*
 * tests/cuda_backend_lnorm_builders.h: builders of the CPU-vs-CUDA cases for
 * the fused layer norm rows (runtime/core/ops_lnorm.c); included by
 * cuda_backend_cases.h before its table, whose rows for these ops are in
 * cuda_backend_lnorm_rows.h.
 */
CB_BUILD(ln1, tg_layer_norm(ctx, in[0], 1, in[1], in[2], 1e-5))
CB_BUILD(ln2, tg_layer_norm(ctx, in[0], 2, in[1], in[2], 1e-5))
/* The backward row (g, x, w): dx, dweight and dbias flattened into one
 * vector, the statistics of x made under no-grad. */
static tg_tensor *b_ln_bw(tg_ctx *ctx, tg_tensor *const *in) {
    tg_tensor *st = NULL, *gw = NULL, *gb = NULL;
    const int64_t flat = -1;
    const int nd = in[2]->ndim;
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *y = tg_layer_norm_stats(ctx, in[1], nd, in[2],
                                       tg_zeros(ctx, in[2]->dtype, nd, in[2]->shape), 1e-5, &st);
    tg_set_grad_enabled(ctx, prev);
    tg_tensor *dx = y ? tg_layer_norm_backward(ctx, in[0], in[1], nd, in[2], st, &gw, &gb) : NULL;
    if (!dx)
        return NULL;
    tg_tensor *parts[3] = {tg_reshape(ctx, dx, 1, &flat), tg_reshape(ctx, gw, 1, &flat),
                           tg_reshape(ctx, gb, 1, &flat)};
    return tg_concat(ctx, 3, parts, 0);
}
