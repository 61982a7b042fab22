/*
 * tests/cuda_backend_attn_builders.h: builders of the CPU-vs-CUDA cases for
 * the fused attention rows (runtime/core/ops_attn.c); included by
 * cuda_backend_cases.h before its table, whose rows for these ops are in
 * cuda_backend_attn_rows.h.
 */
CB_BUILD(sdpa, tg_scaled_dot_product_attention(ctx, in[0], in[1], in[2], false))
CB_BUILD(sdpa_causal, tg_scaled_dot_product_attention(ctx, in[0], in[1], in[2], true))
/* The backward row (g, q, k, v): dq, dk and dv flattened into one vector. */
static tg_tensor *b_sdpa_bw(tg_ctx *ctx, tg_tensor *const *in) {
    tg_tensor *lse = NULL, *dk = NULL, *dv = NULL;
    const int64_t flat = -1;
    tg_tensor *o = tg_scaled_dot_product_attention_lse(ctx, in[1], in[2], in[3], true, &lse);
    tg_tensor *dq = o ? tg_scaled_dot_product_attention_backward(ctx, in[0], in[1], in[2], in[3],
                                                                 o, lse, true, &dk, &dv)
                      : NULL;
    if (!dq)
        return NULL;
    tg_tensor *parts[3] = {tg_reshape(ctx, dq, 1, &flat), tg_reshape(ctx, dk, 1, &flat),
                           tg_reshape(ctx, dv, 1, &flat)};
    return tg_concat(ctx, 3, parts, 0);
}
