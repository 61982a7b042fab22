/*
 * tests/gradcheck_table_attn.h: the builders of the gradcheck cases for the
 * fused attention rows (runtime/core/ops_attn.c). Included by
 * gradcheck_table.h before its table; the rows themselves are in
 * gradcheck_rows_attn.h, included inside the table.
 */
B(sdpa, tg_scaled_dot_product_attention(ctx, X, Y, Z, false))
B(sdpa_causal, tg_scaled_dot_product_attention(ctx, X, Y, Z, true))
B(attn_composed, tg_attention_composed(ctx, X, Y, Z, false))
B(attn_composed_causal, tg_attention_composed(ctx, X, Y, Z, true))
/* q and v as transposed views: the row makes them contiguous */
B(sdpa_views, tg_scaled_dot_product_attention(ctx, tg_transpose(ctx, X, -1, -2), Y,
                                              tg_transpose(ctx, Z, -1, -2), true))
/* The backward row (g, q, k, v) with o and lse made under no-grad. */
static tg_tensor *b_sdpab(tg_ctx *ctx, tg_tensor *const *in) {
    tg_tensor *lse = NULL, *dk = NULL, *dv = NULL;
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *o = tg_scaled_dot_product_attention_lse(ctx, Y, Z, in[3], true, &lse);
    tg_set_grad_enabled(ctx, prev);
    if (!o)
        return NULL;
    tg_tensor *dq = tg_scaled_dot_product_attention_backward(ctx, X, Y, Z, in[3], o, lse, true,
                                                             &dk, &dv);
    return dq && dk && !dk->requires_grad && dv && !dv->requires_grad ? dq : NULL;
}

/* squared, for the second-order check (the rule must record) */
#define SQ(name)                                                       \
    static tg_tensor *b_sq_##name(tg_ctx *ctx, tg_tensor *const *in) { \
        tg_tensor *t = b_##name(ctx, in);                              \
        return tg_mul(ctx, t, t);                                      \
    }
SQ(sdpa)
SQ(sdpa_causal)
#undef SQ
