/*
 * tests/gradcheck_table_ops2.h: the builders and data of the gradcheck cases
 * for the ops of runtime/core/ops_math2.c (comparisons, maximum/minimum, sin/cos,
 * casts, cumsum, topk and the composites built from rows). Included by
 * gradcheck_table.h before its table; the rows themselves are in
 * gradcheck_rows_ops2.h, included inside the table.
 */
B(ne, tg_ne(ctx, X, Y))
B(gt, tg_gt(ctx, X, Y))
B(ge, tg_ge(ctx, X, Y))
B(lt, tg_lt(ctx, X, Y))
B(le, tg_le(ctx, X, Y))
B(maximum, tg_maximum(ctx, X, Y))
B(minimum, tg_minimum(ctx, X, Y))
B(maximum_self, tg_maximum(ctx, X, tg_mul_scalar(ctx, X, -0.5)))
B(minimum_t, tg_minimum(ctx, tg_transpose(ctx, X, 0, 1), Y))
B(sin, tg_sin(ctx, X))
B(cos, tg_cos(ctx, X))
B(cos_t, tg_cos(ctx, tg_transpose(ctx, X, 0, 1)))
B(cast_same, tg_to_dtype(ctx, X, X->dtype))
/* f64 -> f64 -> f64 in the f64 check, f32 -> f64 -> f32 in the f32 one:
 * the gradient crosses both float dtypes */
B(cast_rt, tg_to_dtype(ctx, tg_to_dtype(ctx, X, TG_F64), X->dtype))
B(cumsum_1, tg_cumsum(ctx, X, 1))
B(cumsum_0, tg_cumsum(ctx, X, 0))
B(cumsum_m1_t, tg_cumsum(ctx, tg_transpose(ctx, X, 0, 1), -1))
B(topk2, tg_topk_indices(ctx, X, 2, 1, true))
B(bottomk3, tg_topk_indices(ctx, X, 3, -1, false))
/* composites */
B(topk_vals, tg_topk(ctx, X, 2, 1, true, NULL))
B(topk_vals_min, tg_topk(ctx, X, 3, 0, false, NULL))
B(logsumexp_1, tg_logsumexp(ctx, X, 1, AX(1), false))
B(logsumexp_all_k, tg_logsumexp(ctx, X, 0, NULL, true))
B(var_1, tg_var(ctx, X, 1, AX(1), true, false))
B(var_all_biased, tg_var(ctx, X, 0, NULL, false, false))
B(std_0k, tg_std(ctx, X, 1, AX(0), true, true))
B(index_select_0, tg_index_select(ctx, X, 0, Y))
B(index_select_1, tg_index_select(ctx, X, 1, Y))
B(masked_fill, tg_masked_fill(ctx, X, Y, -3.0))
B(unsqueeze_sq, tg_squeeze(ctx, tg_mul(ctx, tg_unsqueeze(ctx, X, 1), tg_unsqueeze(ctx, X, -1)), 0, NULL))

/* squared, for the second-order check (the rule must record) */
#define SQ(name)                                                       \
    static tg_tensor *b_sq_##name(tg_ctx *ctx, tg_tensor *const *in) { \
        tg_tensor *t = b_##name(ctx, in);                              \
        return tg_mul(ctx, t, t);                                      \
    }
SQ(maximum)
SQ(minimum)
SQ(cumsum_1)
SQ(cast_rt)
SQ(topk_vals)
SQ(masked_fill)
#undef SQ

static const double cmp_a[6] = {1, 2, 3, 4, 5, 6};
static const double cmp_b[6] = {2, 2, 1, 5, 5, 0};
static const double cmp_gt[6] = {0, 0, 1, 0, 0, 1};
static const double cmp_ge[6] = {0, 1, 1, 0, 1, 1};
static const double cmp_lt[6] = {1, 0, 0, 1, 0, 0};
static const double cmp_le[6] = {1, 1, 0, 1, 1, 0};
static const double cmp_ne[6] = {1, 0, 1, 1, 0, 1};
static const double cmp_b3[3] = {3, 1, 6};        /* broadcast over rows */
static const double cmp_gt3[6] = {0, 1, 0, 1, 1, 0};
static const double tk_a[8] = {0.5, -1, 2, 0.5, 3, 3, -2, 1}; /* (2,4), with ties */
static const double tk_top2[4] = {2, 0, 0, 1};
static const double tk_bot3[6] = {1, 0, 3, 2, 3, 0};
static const int64_t sel_idx0[4] = {2, 0, 2, 1}; /* rows of (3,4), repeated */
static const int64_t sel_idx1[3] = {3, 3, 0};    /* columns of (3,4) */
static const int64_t fill_mask[4] = {1, 0, 0, 1}; /* (4), over (3,4) */
