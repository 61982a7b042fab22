/*
 * tests/cuda_backend_ops2_builders.h: builders of the CPU-vs-CUDA cases for
 * the ops of runtime/core/ops_math2.c; included by test_cuda_backend.c before its
 * table, whose rows for these ops are in cuda_backend_ops2_rows.h.
 */
CB_BUILD(ne, tg_ne(ctx, in[0], in[1]))
CB_BUILD(gt_t, tg_gt(ctx, T01(in[0]), in[1]))
CB_BUILD(ge, tg_ge(ctx, in[0], in[1]))
CB_BUILD(lt, tg_lt(ctx, in[0], in[1]))
CB_BUILD(le, tg_le(ctx, in[0], in[1]))
CB_BUILD(maximum, tg_maximum(ctx, in[0], in[1]))
CB_BUILD(maximum_t, tg_maximum(ctx, T01(in[0]), in[1]))
CB_BUILD(minimum, tg_minimum(ctx, in[0], in[1]))
CB_BUILD(sin, tg_sin(ctx, in[0]))
CB_BUILD(cos_t, tg_cos(ctx, T01(in[0])))
CB_BUILD(cast_rt, tg_to_dtype(ctx, tg_to_dtype(ctx, T01(in[0]), TG_F64), in[0]->dtype))
CB_BUILD(cast_i64, tg_to_dtype(ctx, tg_mul_scalar(ctx, in[0], 7.0), TG_I64))
CB_BUILD(cast_u8_i32, tg_to_dtype(ctx, tg_to_dtype(ctx, T01(in[0]), TG_U8), TG_I32))
CB_BUILD(cumsum_1, tg_cumsum(ctx, in[0], 1))
CB_BUILD(cumsum_0_t, tg_cumsum(ctx, T01(in[0]), 0))
CB_BUILD(topk_idx, tg_topk_indices(ctx, in[0], 3, 1, true))
CB_BUILD(bottomk_idx_t, tg_topk_indices(ctx, T01(in[0]), 2, 0, false))
CB_BUILD(topk_vals, tg_topk(ctx, in[0], 2, -1, true, NULL))
/* integer arithmetic on i64 operands */
CB_BUILD(add_i64, tg_add(ctx, in[0], in[1]))
CB_BUILD(eq_sum_i64, tg_sum(ctx, tg_eq(ctx, in[0], in[1]), 0, NULL, false))
CB_BUILD(sum_i64_1, tg_sum(ctx, T01(in[0]), 1, (const int[]){0}, true))
CB_BUILD(mul_i64_max, tg_maximum(ctx, tg_mul(ctx, in[0], in[1]), tg_sub(ctx, in[1], in[0])))
/* composites */
CB_BUILD(logsumexp, tg_logsumexp(ctx, in[0], 1, (const int[]){1}, false))
CB_BUILD(std, tg_std(ctx, in[0], 1, (const int[]){0}, true, true))
CB_BUILD(masked_fill, tg_masked_fill(ctx, in[0], in[1], 2.5))
CB_BUILD(index_select, tg_index_select(ctx, in[0], 0, in[1]))

static const int64_t cb2_ia[6] = {3, -1, 4, 1, -5, 9};
static const int64_t cb2_ib[6] = {3, 2, 4, 0, -5, 1};
static const int64_t cb2_ib3[3] = {2, 7, -8};
static const int64_t cb2_sel[5] = {1, 1, 0, 2, 0};
