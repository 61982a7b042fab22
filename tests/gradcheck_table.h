/*
 * tests/gradcheck_table.h: the case table of test_gradcheck.c (included once,
 * by that file alone): a builder per case and one gc_table row each, so that
 * every op row of ops.def has at least one finite-difference check.
 */
/* ------------------------------------------------------------------------ */
/* Builders                                                                 */
/* ------------------------------------------------------------------------ */

#define X in[0]
#define Y in[1]
#define Z in[2]
#define AX(...) ((const int[]){__VA_ARGS__})
#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define TS(...) ((tg_tensor *const[]){__VA_ARGS__})
#define B(name, expr) \
    static tg_tensor *b_##name(tg_ctx *ctx, tg_tensor *const *in) { return (expr); }

/* elementwise binary */
B(add, tg_add(ctx, X, Y))
B(add_self, tg_add(ctx, X, X))
B(sub, tg_sub(ctx, X, Y))
B(sub_self, tg_sub(ctx, tg_mul(ctx, X, X), X))
B(mul, tg_mul(ctx, X, Y))
B(mul_self, tg_mul(ctx, X, X))
B(div, tg_div(ctx, X, Y))
B(div_self, tg_div(ctx, tg_exp(ctx, X), X))
B(eq, tg_eq(ctx, X, Y))
B(relu_backward, tg_relu_backward(ctx, X, Y))
B(clamp_backward, tg_clamp_backward(ctx, X, Y, -0.5, 0.5))
B(gelu_backward, tg_gelu_backward(ctx, X, Y))
B(where, tg_where(ctx, X, Y, Z))
B(where_same, tg_where(ctx, X, Y, Y))
/* elementwise unary */
B(neg, tg_neg(ctx, X))
B(affine, tg_affine(ctx, X, 1.5, -0.3))
B(affine_zero, tg_affine(ctx, X, 0.0, 2.0))
B(pow3, tg_pow_scalar(ctx, X, 3.0))
B(pow2, tg_pow_scalar(ctx, X, 2.0))
B(pow_half, tg_pow_scalar(ctx, X, 0.5))
B(pow_m15, tg_pow_scalar(ctx, X, -1.5))
B(pow_25, tg_pow_scalar(ctx, X, 2.5))
B(pow1, tg_pow_scalar(ctx, X, 1.0))
B(exp, tg_exp(ctx, X))
B(log, tg_log(ctx, X))
B(sqrt, tg_sqrt(ctx, X))
B(abs, tg_abs(ctx, X))
B(erf, tg_erf(ctx, X))
B(relu, tg_relu(ctx, X))
B(sigmoid, tg_sigmoid(ctx, X))
B(tanh, tg_tanh(ctx, X))
B(silu, tg_silu(ctx, X))
B(gelu, tg_gelu(ctx, X))
B(clamp, tg_clamp(ctx, X, -0.5, 0.5))
B(clamp_lo, tg_clamp(ctx, X, -0.5, INFINITY))
B(sign, tg_sign(ctx, X))
/* reductions */
B(sum_all, tg_sum(ctx, X, 0, NULL, false))
B(sum_all_k, tg_sum(ctx, X, 0, NULL, true))
B(sum_0k, tg_sum(ctx, X, 1, AX(0), true))
B(sum_1, tg_sum(ctx, X, 1, AX(1), false))
B(sum_02, tg_sum(ctx, X, 2, AX(0, 2), false))
B(sum_m1k, tg_sum(ctx, X, 1, AX(-1), true))
B(sum_m1m3, tg_sum(ctx, X, 2, AX(-1, -3), false))
B(sum_012, tg_sum(ctx, X, 3, AX(0, 1, 2), false))
B(mean_all, tg_mean(ctx, X, 0, NULL, false))
B(mean_0k, tg_mean(ctx, X, 1, AX(0), true))
B(mean_1, tg_mean(ctx, X, 1, AX(1), false))
B(mean_02k, tg_mean(ctx, X, 2, AX(0, 2), true))
B(mean_m1, tg_mean(ctx, X, 1, AX(-1), false))
B(max_all, tg_max(ctx, X, 0, NULL, false))
B(max_0k, tg_max(ctx, X, 1, AX(0), true))
B(max_1, tg_max(ctx, X, 1, AX(1), false))
B(max_m1m3k, tg_max(ctx, X, 2, AX(-1, -3), true))
B(max_m1, tg_max(ctx, X, 1, AX(-1), false))
B(max_times, tg_mul(ctx, tg_max(ctx, X, 1, AX(1), true), X))
B(min_all, tg_min(ctx, X, 0, NULL, true))
B(min_0, tg_min(ctx, X, 1, AX(0), false))
B(min_2k, tg_min(ctx, X, 1, AX(2), true))
B(min_m2m1, tg_min(ctx, X, 2, AX(-2, -1), false))
B(min_times, tg_mul(ctx, tg_min(ctx, X, 1, AX(-1), true), tg_exp(ctx, X)))
B(argmax_1, tg_argmax(ctx, X, 1, false))
B(argmax_0k, tg_argmax(ctx, X, 0, true))
/* matmul */
B(mm, tg_matmul(ctx, X, Y))
B(mm_tA, tg_matmul(ctx, tg_transpose(ctx, X, -1, -2), Y))
B(mm_tB, tg_matmul(ctx, X, tg_transpose(ctx, Y, -1, -2)))
B(mm_tAB, tg_matmul(ctx, tg_transpose(ctx, X, -1, -2), tg_transpose(ctx, Y, -1, -2)))
B(mm_gram, tg_matmul(ctx, X, tg_transpose(ctx, X, 0, 1)))
/* shape */
B(copy, tg_copy(ctx, X))
B(copy_t, tg_copy(ctx, tg_transpose(ctx, X, 0, 1)))
/* world_sum on a world of one (no collective installed): the identity, on a
 * transposed view so that the copy kernel meets strides */
B(world_sum, tg_world_sum(ctx, X))
B(world_sum_t, tg_world_sum(ctx, tg_transpose(ctx, X, 0, 1)))
B(reshape_46, tg_reshape(ctx, X, 2, SH(4, 6)))
B(reshape_flat, tg_reshape(ctx, X, 1, SH(-1)))
B(reshape_t, tg_reshape(ctx, tg_transpose(ctx, X, 0, 2), 2, SH(4, -1)))
B(reshape_161, tg_reshape(ctx, X, 3, SH(1, 6, 1)))
B(reshape_0d, tg_reshape(ctx, X, 0, SH(0)))
B(perm_201, tg_permute(ctx, X, AX(2, 0, 1)))
B(perm_10, tg_permute(ctx, X, AX(1, 0)))
B(transpose_m1m2, tg_transpose(ctx, X, -1, -2))
B(perm_mul, tg_mul(ctx, tg_permute(ctx, X, AX(1, 0)), Y))
B(bcast_234, tg_broadcast_to(ctx, X, 3, SH(2, 3, 4)))
B(bcast_22, tg_broadcast_to(ctx, X, 2, SH(2, 2)))
B(slice_rows, tg_slice(ctx, X, 0, 1, 4, 1))
B(slice_step, tg_slice(ctx, X, 1, 0, 4, 2))
B(slice_neg, tg_slice(ctx, X, 0, -3, 100, 2))
B(slice_neg_stop, tg_slice(ctx, X, 1, -3, -1, 1))
B(slice_row2, tg_slice(ctx, X, 0, 2, 3, 1))
B(slice_chain, tg_slice(ctx, tg_slice(ctx, X, 0, 0, 5, 2), 1, 1, 4, 2))
B(ss_rows, tg_slice_scatter(ctx, X, 2, SH(5, 4), 0, 1, 5, 2))
B(ss_cols, tg_slice_scatter(ctx, X, 2, SH(3, 5), 1, -4, 5, 3))
B(cat0, tg_concat(ctx, 2, TS(X, Y), 0))
B(cat3_m1, tg_concat(ctx, 3, TS(X, Y, Z), -1))
B(cat_self, tg_concat(ctx, 2, TS(X, X), 1))
B(cat_one, tg_concat(ctx, 1, TS(X), 0))
/* softmax family and indexing */
B(sm_1, tg_softmax(ctx, X, 1))
B(sm_0, tg_softmax(ctx, X, 0))
B(sm_m1, tg_softmax(ctx, X, -1))
B(lsm_1, tg_log_softmax(ctx, X, 1))
B(lsm_0, tg_log_softmax(ctx, X, 0))
B(lsm_m1, tg_log_softmax(ctx, X, -1))
B(gather_1, tg_gather(ctx, X, 1, Y))
B(gather_0, tg_gather(ctx, X, 0, Y))
B(scatter_1, tg_scatter_add(ctx, X, 1, Y, 2, SH(3, 4)))
B(scatter_0, tg_scatter_add(ctx, X, 0, Y, 2, SH(3, 4)))
/* composites: APIs built from the rows above */
B(add_scalar, tg_add_scalar(ctx, X, 0.7))
B(mul_scalar, tg_mul_scalar(ctx, X, -2.5))
B(sum_to, tg_sum_to(ctx, X, 2, SH(3, 1)))
B(contiguous_t, tg_contiguous(ctx, tg_transpose(ctx, X, 0, 1)))
B(stack_1, tg_stack(ctx, 2, TS(X, Y), 1))
B(stack_m1, tg_stack(ctx, 2, TS(X, Y), -1))
B(rearrange_3d, tg_rearrange(ctx, X, "a (b1 b2) c -> (a c) (b2 b1)", "b1=2"))
B(rearrange_group, tg_rearrange(ctx, X, "(b a) -> a b", "a=2"))
B(reuse, tg_add(ctx, tg_mul(ctx, tg_exp(ctx, X), X), tg_tanh(ctx, X)))
B(bcast_chain, tg_sum(ctx, tg_mul(ctx, tg_add(ctx, X, Y), tg_sigmoid(ctx, Y)), 1, AX(0), false))
/* operands that are views: transposed, stepped, broadcast (stride 0) */
#define T01(t) tg_transpose(ctx, (t), 0, 1)
B(exp_t, tg_exp(ctx, T01(X)))
B(pow_t, tg_pow_scalar(ctx, T01(X), 3.0))
B(add_t_bcast, tg_add(ctx, T01(X), Y))
B(where_t, tg_where(ctx, X, T01(Y), Z))
B(relu_bw_t, tg_relu_backward(ctx, T01(X), Y))
B(clamp_bcast, tg_clamp(ctx, tg_broadcast_to(ctx, X, 2, SH(3, 4)), -0.5, 0.5))
B(sum_perm, tg_sum(ctx, tg_permute(ctx, X, AX(2, 0, 1)), 1, AX(1), false))
B(mean_step, tg_mean(ctx, tg_slice(ctx, X, 0, 0, 6, 3), 1, AX(0), false))
B(max_t, tg_max(ctx, T01(X), 1, AX(1), true))
B(min_step, tg_min(ctx, tg_slice(ctx, X, 1, 1, 8, 2), 1, AX(0), false))
B(sm_t, tg_softmax(ctx, T01(X), 1))
B(lsm_step, tg_log_softmax(ctx, tg_slice(ctx, X, 1, 0, 8, 2), 1))
B(gather_t, tg_gather(ctx, T01(X), 1, Y))
B(scatter_t, tg_scatter_add(ctx, T01(X), 1, Y, 2, SH(3, 4)))
B(mm_step, tg_matmul(ctx, tg_slice(ctx, X, 1, 0, 8, 2), Y))
B(mm_bcastA, tg_matmul(ctx, tg_broadcast_to(ctx, X, 3, SH(2, 3, 4)), Y))
B(mm_bcastB, tg_matmul(ctx, X, tg_broadcast_to(ctx, Y, 3, SH(2, 4, 5))))
B(cat_t, tg_concat(ctx, 2, TS(T01(X), Y), 0))
B(ss_t, tg_slice_scatter(ctx, T01(X), 2, SH(5, 4), 0, 1, 5, 2))
B(copy_step, tg_copy(ctx, tg_slice(ctx, T01(X), 1, 0, 5, 2)))
B(bcast_t, tg_broadcast_to(ctx, T01(X), 3, SH(2, 3, 4)))
#undef T01

/* op(x)^2: its gradient feeds a value that depends on x into op's backward
 * rule, so the second-order check sees whether that rule is itself
 * recorded (differentiable in its incoming gradient) under create_graph. */
#define SQ(name)                                                       \
    static tg_tensor *b_sq_##name(tg_ctx *ctx, tg_tensor *const *in) { \
        tg_tensor *t = b_##name(ctx, in);                              \
        return tg_mul(ctx, t, t);                                      \
    }
SQ(add)
SQ(sub)
SQ(where)
SQ(relu_backward)
SQ(clamp_backward)
SQ(neg)
SQ(affine)
SQ(abs)
SQ(relu)
SQ(clamp)
SQ(sum_02)
SQ(mean_1)
SQ(max_1)
SQ(min_0)
SQ(copy_t)
SQ(world_sum_t)
SQ(reshape_t)
SQ(perm_201)
SQ(bcast_234)
SQ(slice_neg)
SQ(ss_cols)
SQ(cat3_m1)
SQ(gather_1)
SQ(scatter_1)
SQ(sum_to)
SQ(stack_m1)
SQ(rearrange_3d)
#undef SQ


#define SQ2(name)                                                       \
    static tg_tensor *b_sq_##name(tg_ctx *ctx, tg_tensor *const *in) { \
        tg_tensor *t = b_##name(ctx, in);                              \
        return tg_mul(ctx, t, t);                                      \
    }

/* nn.h: losses, dropout, convolution, pooling and the layers built on them */
B(ce, tg_cross_entropy(ctx, X, Y, 0.0))
B(ce_smooth, tg_cross_entropy(ctx, X, Y, 0.1))
B(ceb, tg_cross_entropy_backward(ctx, X, Y, Z, 0.0))
B(ceb_smooth, tg_cross_entropy_backward(ctx, X, Y, Z, 0.25))
B(mse, tg_mse_loss(ctx, X, Y))
B(flatten1, tg_flatten(ctx, X, 1))
static tg_tensor *b_dropout(tg_ctx *ctx, tg_tensor *const *in) {
    tg_rng r = tg_rng_make(7, 3);
    return tg_dropout(ctx, X, 0.4, true, &r);
}
#define CV(...) (&(const tg_conv2d_opts){__VA_ARGS__})
B(conv_p1, tg_conv2d(ctx, X, Y, Z, CV({1, 1}, {1, 1}, {1, 1})))
B(conv_s2_d2, tg_conv2d(ctx, X, Y, NULL, CV({2, 1}, {1, 0}, {1, 2})))
B(conv_plain, tg_conv2d(ctx, X, Y, NULL, NULL))
B(conv_t, tg_conv2d(ctx, tg_transpose(ctx, X, 2, 3), Y, Z, CV({1, 2}, {0, 1}, {1, 1})))
B(cbi_s2, tg_conv2d_backward_input(ctx, X, Y, CV({2, 2}, {1, 1}, {1, 1}), 5, 5))
B(cbi_plain, tg_conv2d_backward_input(ctx, X, Y, NULL, 3, 4))
B(cbw_s2, tg_conv2d_backward_weight(ctx, X, Y, CV({2, 2}, {1, 1}, {1, 1}), 3, 3))
B(cbw_d2, tg_conv2d_backward_weight(ctx, X, Y, CV({1, 1}, {0, 2}, {2, 1}), 2, 2))
B(maxp_22, tg_max_pool2d(ctx, X, AX(2, 2), NULL, NULL))
B(maxp_31p, tg_max_pool2d(ctx, X, AX(3, 3), AX(1, 2), AX(1, 1)))
B(maxi_22, tg_max_pool2d_indices(ctx, X, AX(2, 2), NULL, NULL))
/* max_pool2d_backward(g, x); _t: g is the transpose of the stored input */
B(mpb_22, tg_max_pool2d_backward(ctx, X, Y, AX(2, 2), NULL, NULL))
B(mpb_31p, tg_max_pool2d_backward(ctx, X, Y, AX(3, 3), AX(1, 1), AX(1, 1)))
B(mpb_31p_t,
  tg_max_pool2d_backward(ctx, tg_transpose(ctx, X, 2, 3), Y, AX(3, 3), AX(1, 1), AX(1, 1)))
B(avgp_22, tg_avg_pool2d(ctx, X, AX(2, 2), NULL, NULL))
B(avgp_32p, tg_avg_pool2d(ctx, X, AX(3, 3), AX(2, 2), AX(1, 1)))
B(avgb_22, tg_avg_pool2d_backward(ctx, X, AX(2, 2), NULL, NULL, 4, 5))
B(avgb_32p, tg_avg_pool2d_backward(ctx, X, AX(3, 3), AX(2, 2), AX(1, 1), 5, 5))
#undef CV
static tg_tensor *b_linear(tg_ctx *ctx, tg_tensor *const *in) {
    tg_linear l = {.weight = Y, .bias = Z};
    return tg_linear_forward(ctx, &l, X);
}
static tg_tensor *b_linear_3d(tg_ctx *ctx, tg_tensor *const *in) {
    tg_linear l = {.weight = Y, .bias = NULL};
    return tg_linear_forward(ctx, &l, X);
}
static tg_tensor *b_bn_train(tg_ctx *ctx, tg_tensor *const *in) {
    int64_t c = Y->shape[0];
    tg_batchnorm bn = {.weight = Y, .bias = Z, .eps = 1e-5, .momentum = 0.1};
    bn.running_mean = tg_zeros(ctx, X->dtype, 1, &c);
    bn.running_var = tg_full(ctx, X->dtype, 1, &c, 1.0);
    bn.num_batches_tracked = tg_zeros(ctx, TG_I64, 0, NULL);
    return tg_batchnorm_forward(ctx, &bn, X, true);
}
static tg_tensor *b_bn_eval(tg_ctx *ctx, tg_tensor *const *in) {
    int64_t c = Y->shape[0];
    tg_batchnorm bn = {.weight = Y, .bias = Z, .eps = 1e-5, .momentum = 0.1};
    bn.running_mean = tg_full(ctx, X->dtype, 1, &c, 0.3);
    bn.running_var = tg_full(ctx, X->dtype, 1, &c, 1.7);
    bn.num_batches_tracked = tg_zeros(ctx, TG_I64, 0, NULL);
    return tg_batchnorm_forward(ctx, &bn, X, false);
}
/* The fused training-mode rows: batch_norm(x, w, b), and batch_norm_backward
 * (g, x, w) with the statistics of x made under no-grad. */
B(bnf, tg_batch_norm(ctx, X, Y, Z, 1e-5, NULL))
static tg_tensor *b_bnb(tg_ctx *ctx, tg_tensor *const *in) {
    tg_tensor *st = NULL, *gw = NULL, *gb = NULL;
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *bias = tg_zeros(ctx, Y->dtype, 1, Z->shape);
    tg_tensor *y = tg_batch_norm(ctx, Y, Z, bias, 1e-5, &st);
    tg_set_grad_enabled(ctx, prev);
    if (!y)
        return NULL;
    tg_tensor *dx = tg_batch_norm_backward(ctx, X, Y, Z, st, &gw, &gb);
    return dx && gw && !gw->requires_grad && gb && !gb->requires_grad ? dx : NULL;
}
static tg_tensor *b_layernorm(tg_ctx *ctx, tg_tensor *const *in) {
    tg_layernorm ln = {.weight = Y, .bias = Z, .ndim = Y->ndim, .eps = 1e-5};
    return tg_layernorm_forward(ctx, &ln, X);
}
static tg_tensor *b_embedding(tg_ctx *ctx, tg_tensor *const *in) {
    tg_embedding e = {.weight = X};
    return tg_embedding_forward(ctx, &e, Y);
}
SQ2(ce)
SQ2(ceb)
SQ2(dropout)
SQ2(conv_p1)
SQ2(cbi_s2)
SQ2(cbw_s2)
SQ2(maxp_22)
SQ2(avgp_32p)
SQ2(avgb_22)
SQ2(bn_train)
SQ2(bnf)
SQ2(layernorm)
SQ2(embedding)
#undef SQ2

static tg_tensor *b_chunk(tg_ctx *ctx, tg_tensor *const *in) {
    tg_tensor *parts[2] = {NULL, NULL};
    if (tg_chunk(ctx, X, 2, 1, parts) != 2)
        return NULL;
    /* (3,5) -> (3,3) and (3,2); use them differently so that each chunk's
     * gradient is distinguishable */
    return tg_concat(ctx, 2, TS(tg_mul(ctx, parts[1], parts[1]), parts[0]), 1);
}

/* The training loss of a linear classifier: mean NLL of log_softmax(x w + b). */
static tg_tensor *b_nll(tg_ctx *ctx, tg_tensor *const *in) {
    tg_tensor *logits = tg_add(ctx, tg_matmul(ctx, X, Y), Z);
    tg_tensor *lp = tg_log_softmax(ctx, logits, 1);
    return tg_neg(ctx, tg_mean(ctx, tg_gather(ctx, lp, 1, in[3]), 0, NULL, false));
}

/* A two-layer MLP with every activation, reduced to one scalar per row. */
static tg_tensor *b_mlp(tg_ctx *ctx, tg_tensor *const *in) {
    tg_tensor *h = tg_gelu(ctx, tg_matmul(ctx, X, Y));
    tg_tensor *o = tg_silu(ctx, tg_matmul(ctx, h, Z));
    return tg_mean(ctx, tg_softmax(ctx, o, -1), 1, AX(0), false);
}

#include "gradcheck_table_ops2.h"
#include "gradcheck_table_attn.h"
#include "gradcheck_table_lnorm.h"
#undef B

/* ------------------------------------------------------------------------ */
/* The table                                                                */
/* ------------------------------------------------------------------------ */

/* conditions for where: any dtype, nonzero is true */
static const int64_t cond24[24] = {1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1,
                                   1, 0, 1, 0, 1, 1, 0, 0, 0, 1, 0, 1};
static const int64_t cond31[3] = {0, 7, -1};
static const double cond_f6[6] = {1.0, 0.0, 0.0, 2.5, 0.0, -1.0};
/* gather/scatter indices; repeats on purpose (scatter_add must add them) */
static const int64_t gidx1[6] = {0, 3, 1, 1, 2, 0};       /* (3,2), axis 1 of (3,4) */
static const int64_t gidx0[8] = {2, 0, 1, 2, 0, 0, 1, 2}; /* (2,4), axis 0 of (3,4) */
static const int64_t gidx_small[6] = {4, 0, 2, 1, 1, 3};  /* (2,3), axis 1 of (3,5) */
static const int64_t labels4[4] = {2, 0, 4, 1};           /* (4,1) */
/* non-differentiable rows: inputs and expected outputs */
static const double eq_a[6] = {1, 2, 3, 4, 5, 6};
static const double eq_b[6] = {1, 0, 3, 0, 5, 0};
static const double eq_ab[6] = {1, 0, 1, 0, 1, 0};
static const double eq_b3[3] = {1, 2, 0};
static const double eq_ab3[6] = {1, 1, 0, 0, 0, 0};
static const double sign_a[5] = {-2, 0, 3, -0.5, 1e-3};
static const double sign_out[5] = {-1, 0, 1, -1, 1};
static const double am_a[6] = {1, 5, 2, 7, 0, 7};
static const double am_1[2] = {1, 0}; /* the first of tied maxima */
static const double am_0k[3] = {1, 0, 1};

/* nn.h cases: targets, indices and pooling data with ties */
static const int64_t tgt4[4] = {2, 0, 4, 1};
static const int64_t tgt1[1] = {2};
static const int64_t tgt3c1[3] = {0, 0, 0};
static const int64_t emb_idx[6] = {3, 0, 3, 1, 4, 2}; /* (2,3) into 5 rows */
static const double mp_a[8] = {1, 3, 3, 0, 2, 2, 5, 5}; /* (1,1,2,4): ties */
static const double mp_i[2] = {1, 6}; /* first maximum of each 2x2 window */
/* max_pool2d_backward by hand. 2x2 on mp_a: the windows' first maxima are
 * elements 1 and 6. 3x3, stride 1, pad 1 on mpb_x (rows 1 2 2 / 0 2 1 /
 * 3 3 0): the nine windows' first maxima are 1 1 1 / 6 6 7 / 6 6 7, so
 * with g = 1..9 element 1 gets 1+2+3, element 6 gets 4+5+7+8 and element 7
 * gets 6+9. mpb_gt is g = 1..9 stored transposed. */
static const double mpb_g2[2] = {0.5, -2};
static const double mpb_dx2[8] = {0, 0.5, 0, 0, 0, 0, -2, 0};
static const double mpb_x[9] = {1, 2, 2, 0, 2, 1, 3, 3, 0};
static const double mpb_g[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const double mpb_gt[9] = {1, 4, 7, 2, 5, 8, 3, 6, 9};
static const double mpb_dx[9] = {0, 6, 0, 0, 0, 0, 24, 15, 0};

#define GC(opx, fnx, desc, ...) \
    { .name = #fnx " " desc, .op = TG_OP_##opx, .mode = GC_GRAD, .fn = b_##fnx, __VA_ARGS__ }
#define GCC(fnx, desc, ...) \
    { .name = #fnx " " desc, .op = GC_COMPOSITE, .mode = GC_GRAD, .fn = b_##fnx, __VA_ARGS__ }
#define GCN(opx, fnx, desc, ...) \
    { .name = #fnx " " desc, .op = TG_OP_##opx, .mode = GC_NODIFF, .fn = b_##fnx, __VA_ARGS__ }
#define R GC_RAND
#define P GC_POS
#define K GC_NOKINK
#define D GC_DISTINCT
#define SO .second_order = true

static const gc_case gc_table[] = {
    /* add / sub / mul / div: same shapes, broadcasting, size-1 dims, 0-d */
    GC(ADD, add, "(2,3)+(2,3)", .nin = 2, .in = {GC_IN(R, 2, 2, 3), GC_IN(R, 2, 2, 3)},
       GC_OUT(2, 2, 3)),
    GC(ADD, add, "(2,3,1)+(3,4)", .nin = 2, .in = {GC_IN(R, 3, 2, 3, 1), GC_IN(R, 2, 3, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(ADD, add, "(4)+(2,3,4)", .nin = 2, .in = {GC_IN(R, 1, 4), GC_IN(R, 3, 2, 3, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(ADD, add, "()+(2,3)", .nin = 2, .in = {GC_IN0(R), GC_IN(R, 2, 2, 3)}, GC_OUT(2, 2, 3)),
    GC(ADD, add, "(1,3,1)+(2,1,4)", .nin = 2, .in = {GC_IN(R, 3, 1, 3, 1), GC_IN(R, 3, 2, 1, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(ADD, add, "(2,3)+(2,3) b fixed", .nin = 2, .in = {GC_IN(R, 2, 2, 3), GC_CONST(R, 2, 2, 3)}),
    GC(ADD, add_self, "x+x", .nin = 1, .in = {GC_IN(R, 2, 3, 2)}),
    GC(SUB, sub, "(2,3,1)-(3,4)", .nin = 2, .in = {GC_IN(R, 3, 2, 3, 1), GC_IN(R, 2, 3, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(SUB, sub, "(2,3,4)-(4)", .nin = 2, .in = {GC_IN(R, 3, 2, 3, 4), GC_IN(R, 1, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(SUB, sub, "()-(3)", .nin = 2, .in = {GC_IN0(R), GC_IN(R, 1, 3)}, GC_OUT(1, 3)),
    GC(SUB, sub_self, "x*x-x", .nin = 1, .in = {GC_IN(R, 1, 5)}),
    GC(MUL, mul, "(2,3,1)*(3,4)", .nin = 2, .in = {GC_IN(R, 3, 2, 3, 1), GC_IN(R, 2, 3, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(MUL, mul, "(4)*(2,3,4)", .nin = 2, .in = {GC_IN(R, 1, 4), GC_IN(R, 3, 2, 3, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(MUL, mul, "(2,3)*()", .nin = 2, .in = {GC_IN(R, 2, 2, 3), GC_IN0(R)}, GC_OUT(2, 2, 3)),
    GC(MUL, mul, "(2,3)*(3)", .nin = 2, .in = {GC_IN(R, 2, 2, 3), GC_IN(R, 1, 3)}, SO),
    GC(MUL, mul_self, "x*x", .nin = 1, .in = {GC_IN(R, 2, 2, 2)}, SO),
    GC(DIV, div, "(2,3,1)/(3,4)", .nin = 2, .in = {GC_IN(R, 3, 2, 3, 1), GC_IN(P, 2, 3, 4)},
       GC_OUT(3, 2, 3, 4), SO),
    GC(DIV, div, "(4)/(2,3,4)", .nin = 2, .in = {GC_IN(R, 1, 4), GC_IN(P, 3, 2, 3, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(DIV, div, "(2,3)/()", .nin = 2, .in = {GC_IN(R, 2, 2, 3), GC_IN0(P)}, GC_OUT(2, 2, 3), SO),
    GC(DIV, div, "()/(2,3)", .nin = 2, .in = {GC_IN0(R), GC_IN(P, 2, 2, 3)}, GC_OUT(2, 2, 3)),
    GC(DIV, div_self, "exp(x)/x", .nin = 1, .in = {GC_IN(P, 1, 4)}, SO),
    /* where: the condition is fixed; it and both branches broadcast */
    GC(WHERE, where, "c(2,3,4) a(3,4) b(2,1,4)", .nin = 3,
       .in = {GC_IDX(cond24, 3, 2, 3, 4), GC_IN(R, 2, 3, 4), GC_IN(R, 3, 2, 1, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(WHERE, where, "c(3,1) a() b(2,3,4)", .nin = 3,
       .in = {GC_IDX(cond31, 2, 3, 1), GC_IN0(R), GC_IN(R, 3, 2, 3, 4)}, GC_OUT(3, 2, 3, 4)),
    GC(WHERE, where, "float c(2,3)", .nin = 3,
       .in = {GC_DATA_IN(cond_f6, 2, 2, 3), GC_IN(R, 2, 2, 3), GC_IN(R, 1, 3)}, GC_OUT(2, 2, 3)),
    GC(WHERE, where_same, "where(c, x, x)", .nin = 2,
       .in = {GC_IDX(cond31, 2, 3, 1), GC_IN(R, 2, 3, 2)}),
    /* unary */
    GC(NEG, neg, "(2,3)", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}),
    GC(NEG, neg, "()", .nin = 1, .in = {GC_IN0(R)}, GC_OUT0),
    GC(AFFINE, affine, "1.5x-0.3", .nin = 1, .in = {GC_IN(R, 2, 3, 2)}),
    GC(AFFINE, affine_zero, "0x+2", .nin = 1, .in = {GC_IN(R, 1, 4)}),
    GC(POW_SCALAR, pow3, "x^3", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(POW_SCALAR, pow2, "x^2", .nin = 1, .in = {GC_IN(R, 1, 5)}, SO),
    GC(POW_SCALAR, pow_half, "x^0.5", .nin = 1, .in = {GC_IN(P, 1, 5)}),
    GC(POW_SCALAR, pow_m15, "x^-1.5", .nin = 1, .in = {GC_IN(P, 2, 2, 2)}, SO),
    GC(POW_SCALAR, pow_25, "x^2.5", .nin = 1, .in = {GC_IN(P, 1, 4)}, SO),
    GC(POW_SCALAR, pow1, "x^1", .nin = 1, .in = {GC_IN(R, 1, 4)}),
    GC(EXP, exp, "(2,3)", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(EXP, exp, "()", .nin = 1, .in = {GC_IN0(R)}, GC_OUT0, SO),
    GC(LOG, log, "(2,3)", .nin = 1, .in = {GC_IN(P, 2, 2, 3)}, SO),
    GC(SQRT, sqrt, "(2,3)", .nin = 1, .in = {GC_IN(P, 2, 2, 3)}, SO),
    GC(ABS, abs, "(2,4)", .nin = 1, .in = {GC_IN(K, 2, 2, 4)}),
    GC(ERF, erf, "(2,3)", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(RELU, relu, "(2,4)", .nin = 1, .in = {GC_IN(K, 2, 2, 4)}),
    GC(SIGMOID, sigmoid, "(2,3)", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(TANH, tanh, "(2,3)", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(SILU, silu, "(2,3)", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(GELU, gelu, "(2,3)", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(CLAMP, clamp, "[-0.5,0.5]", .nin = 1, .in = {GC_IN(K, 2, 2, 4)}),
    GC(CLAMP, clamp_lo, "[-0.5,inf]", .nin = 1, .in = {GC_IN(K, 1, 6)}),
    /* fused gradient helpers: with respect to g; x fixed and off the kinks */
    GC(RELU_BACKWARD, relu_backward, "wrt g", .nin = 2,
       .in = {GC_IN(R, 2, 2, 4), GC_CONST(K, 2, 2, 4)}, GC_OUT(2, 2, 4)),
    GC(CLAMP_BACKWARD, clamp_backward, "wrt g", .nin = 2,
       .in = {GC_IN(R, 2, 2, 4), GC_CONST(K, 2, 2, 4)}, GC_OUT(2, 2, 4)),
    /* gelu's is smooth in x too: both inputs, second order, broadcasting */
    GC(GELU_BACKWARD, gelu_backward, "wrt g and x", .nin = 2,
       .in = {GC_IN(R, 2, 2, 4), GC_IN(R, 2, 2, 4)}, GC_OUT(2, 2, 4), SO),
    GC(GELU_BACKWARD, gelu_backward, "x (4) broadcast", .nin = 2,
       .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 1, 4)}, GC_OUT(2, 3, 4), SO),
    /* reductions: axis sets, keepdim both ways, negative axes */
    GC(SUM, sum_all, "(2,3,4)", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT0),
    GC(SUM, sum_all_k, "(2,3,4) keepdim", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)},
       GC_OUT(3, 1, 1, 1)),
    GC(SUM, sum_0k, "axis 0 keepdim", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT(3, 1, 3, 4)),
    GC(SUM, sum_1, "axis 1 of (2,1,3)", .nin = 1, .in = {GC_IN(R, 3, 2, 1, 3)}, GC_OUT(2, 2, 3)),
    GC(SUM, sum_02, "axes 0,2", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT(1, 3)),
    GC(SUM, sum_m1k, "axis -1 keepdim", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT(3, 2, 3, 1)),
    GC(SUM, sum_m1m3, "axes -1,-3", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT(1, 3)),
    GC(SUM, sum_012, "axes 0,1,2", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT0),
    GC(SUM, sum_all, "of ()", .nin = 1, .in = {GC_IN0(R)}, GC_OUT0),
    GC(MEAN, mean_all, "(2,3,4)", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT0),
    GC(MEAN, mean_0k, "axis 0 keepdim", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT(3, 1, 3, 4)),
    GC(MEAN, mean_1, "axis 1", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT(2, 2, 4)),
    GC(MEAN, mean_02k, "axes 0,2 keepdim", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)},
       GC_OUT(3, 1, 3, 1)),
    GC(MEAN, mean_m1, "axis -1", .nin = 1, .in = {GC_IN(R, 2, 3, 5)}, GC_OUT(1, 3)),
    GC(MAX, max_all, "(2,3,4)", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)}, GC_OUT0),
    GC(MAX, max_0k, "axis 0 keepdim", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)}, GC_OUT(3, 1, 3, 4)),
    GC(MAX, max_1, "axis 1", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)}, GC_OUT(2, 2, 4)),
    GC(MAX, max_m1m3k, "axes -1,-3 keepdim", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)},
       GC_OUT(3, 1, 3, 1)),
    GC(MAX, max_m1, "axis -1 of (5)", .nin = 1, .in = {GC_IN(D, 1, 5)}, GC_OUT0),
    GC(MAX, max_times, "max(x,1,keep)*x", .nin = 1, .in = {GC_IN(D, 2, 3, 4)}, GC_OUT(2, 3, 4), SO),
    GC(MIN, min_all, "(2,3,4) keepdim", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)}, GC_OUT(3, 1, 1, 1)),
    GC(MIN, min_0, "axis 0", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)}, GC_OUT(2, 3, 4)),
    GC(MIN, min_2k, "axis 2 keepdim", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)}, GC_OUT(3, 2, 3, 1)),
    GC(MIN, min_m2m1, "axes -2,-1", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)}, GC_OUT(1, 2)),
    GC(MIN, min_times, "min(x,-1,keep)*exp(x)", .nin = 1, .in = {GC_IN(D, 2, 2, 5)}, SO),
    /* matmul: 2-D, batched, broadcast batch dims, 1-D either side, views */
    GC(MATMUL, mm, "(3,4)@(4,5)", .nin = 2, .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 2, 4, 5)},
       GC_OUT(2, 3, 5), SO),
    GC(MATMUL, mm, "(2,3,4)@(2,4,5)", .nin = 2, .in = {GC_IN(R, 3, 2, 3, 4), GC_IN(R, 3, 2, 4, 5)},
       GC_OUT(3, 2, 3, 5), SO),
    GC(MATMUL, mm, "(2,1,3,4)@(3,4,2)", .nin = 2,
       .in = {GC_IN(R, 4, 2, 1, 3, 4), GC_IN(R, 3, 3, 4, 2)}, GC_OUT(4, 2, 3, 3, 2), SO),
    GC(MATMUL, mm, "(2,3,4)@(4,5)", .nin = 2, .in = {GC_IN(R, 3, 2, 3, 4), GC_IN(R, 2, 4, 5)},
       GC_OUT(3, 2, 3, 5)),
    GC(MATMUL, mm, "(4)@(4,5)", .nin = 2, .in = {GC_IN(R, 1, 4), GC_IN(R, 2, 4, 5)}, GC_OUT(1, 5)),
    GC(MATMUL, mm, "(3,4)@(4)", .nin = 2, .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 1, 4)}, GC_OUT(1, 3),
       SO),
    GC(MATMUL, mm, "(4)@(4)", .nin = 2, .in = {GC_IN(R, 1, 4), GC_IN(R, 1, 4)}, GC_OUT0),
    GC(MATMUL, mm, "(4)@(2,4,5)", .nin = 2, .in = {GC_IN(R, 1, 4), GC_IN(R, 3, 2, 4, 5)},
       GC_OUT(2, 2, 5)),
    GC(MATMUL, mm, "(2,3,4)@(4)", .nin = 2, .in = {GC_IN(R, 3, 2, 3, 4), GC_IN(R, 1, 4)},
       GC_OUT(2, 2, 3)),
    GC(MATMUL, mm, "(1,4)@(4,1)", .nin = 2, .in = {GC_IN(R, 2, 1, 4), GC_IN(R, 2, 4, 1)},
       GC_OUT(2, 1, 1)),
    GC(MATMUL, mm_tA, "(4,3)^T@(4,5)", .nin = 2, .in = {GC_IN(R, 2, 4, 3), GC_IN(R, 2, 4, 5)},
       GC_OUT(2, 3, 5)),
    GC(MATMUL, mm_tB, "(3,4)@(5,4)^T", .nin = 2, .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 2, 5, 4)},
       GC_OUT(2, 3, 5)),
    GC(MATMUL, mm_tAB, "(2,4,3)^T@(2,5,4)^T", .nin = 2,
       .in = {GC_IN(R, 3, 2, 4, 3), GC_IN(R, 3, 2, 5, 4)}, GC_OUT(3, 2, 3, 5), SO),
    GC(MATMUL, mm_gram, "x@x^T", .nin = 1, .in = {GC_IN(R, 2, 3, 4)}, GC_OUT(2, 3, 3), SO),
    /* shape */
    GC(COPY, copy, "(2,3)", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, GC_OUT(2, 2, 3)),
    GC(COPY, copy_t, "of a transposed view", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, GC_OUT(2, 3, 2)),
    GC(WORLD_SUM, world_sum, "(2,3) one rank", .nin = 1, .in = {GC_IN(R, 2, 2, 3)},
       GC_OUT(2, 2, 3)),
    GC(WORLD_SUM, world_sum_t, "of a transposed view, one rank", .nin = 1,
       .in = {GC_IN(R, 2, 2, 3)}, GC_OUT(2, 3, 2)),
    GC(WORLD_SUM, sq_world_sum_t, "squared", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(RESHAPE, reshape_46, "(2,3,4)->(4,6)", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)},
       GC_OUT(2, 4, 6)),
    GC(RESHAPE, reshape_flat, "(2,3,4)->(-1)", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)},
       GC_OUT(1, 24)),
    GC(RESHAPE, reshape_t, "of a permuted view", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)},
       GC_OUT(2, 4, 6)),
    GC(RESHAPE, reshape_161, "(6)->(1,6,1)", .nin = 1, .in = {GC_IN(R, 1, 6)}, GC_OUT(3, 1, 6, 1)),
    GC(RESHAPE, reshape_0d, "(1,1)->()", .nin = 1, .in = {GC_IN(R, 2, 1, 1)}, GC_OUT0),
    GC(PERMUTE, perm_201, "(2,3,4) by (2,0,1)", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)},
       GC_OUT(3, 4, 2, 3)),
    GC(PERMUTE, perm_10, "(3,2) by (1,0)", .nin = 1, .in = {GC_IN(R, 2, 3, 2)}, GC_OUT(2, 2, 3)),
    GC(PERMUTE, transpose_m1m2, "transpose(-1,-2)", .nin = 1, .in = {GC_IN(R, 3, 3, 4, 1)},
       GC_OUT(3, 3, 1, 4)),
    GC(PERMUTE, perm_mul, "permuted operand of mul", .nin = 2,
       .in = {GC_IN(R, 2, 3, 2), GC_IN(R, 2, 2, 3)}),
    GC(BROADCAST_TO, bcast_234, "(3,1)->(2,3,4)", .nin = 1, .in = {GC_IN(R, 2, 3, 1)},
       GC_OUT(3, 2, 3, 4)),
    GC(BROADCAST_TO, bcast_234, "(4)->(2,3,4)", .nin = 1, .in = {GC_IN(R, 1, 4)},
       GC_OUT(3, 2, 3, 4)),
    GC(BROADCAST_TO, bcast_234, "(1,3,1)->(2,3,4)", .nin = 1, .in = {GC_IN(R, 3, 1, 3, 1)},
       GC_OUT(3, 2, 3, 4)),
    GC(BROADCAST_TO, bcast_22, "()->(2,2)", .nin = 1, .in = {GC_IN0(R)}, GC_OUT(2, 2, 2)),
    GC(SLICE, slice_rows, "[1:4] axis 0", .nin = 1, .in = {GC_IN(R, 2, 5, 4)}, GC_OUT(2, 3, 4)),
    GC(SLICE, slice_step, "[0:4:2] axis 1", .nin = 1, .in = {GC_IN(R, 2, 5, 4)}, GC_OUT(2, 5, 2)),
    GC(SLICE, slice_neg, "[-3:100:2] axis 0", .nin = 1, .in = {GC_IN(R, 2, 5, 4)}, GC_OUT(2, 2, 4)),
    GC(SLICE, slice_neg_stop, "[-3:-1] axis 1", .nin = 1, .in = {GC_IN(R, 2, 5, 4)},
       GC_OUT(2, 5, 2)),
    GC(SLICE, slice_row2, "[2:3] axis 0", .nin = 1, .in = {GC_IN(R, 2, 5, 4)}, GC_OUT(2, 1, 4)),
    GC(SLICE, slice_chain, "slice of a slice", .nin = 1, .in = {GC_IN(R, 2, 5, 4)},
       GC_OUT(2, 3, 2)),
    GC(SLICE_SCATTER, ss_rows, "(2,4) into (5,4)[1:5:2]", .nin = 1, .in = {GC_IN(R, 2, 2, 4)},
       GC_OUT(2, 5, 4)),
    GC(SLICE_SCATTER, ss_cols, "(3,2) into (3,5)[:,-4:5:3]", .nin = 1, .in = {GC_IN(R, 2, 3, 2)},
       GC_OUT(2, 3, 5)),
    GC(CONCAT, cat0, "(2,3),(4,3) axis 0", .nin = 2, .in = {GC_IN(R, 2, 2, 3), GC_IN(R, 2, 4, 3)},
       GC_OUT(2, 6, 3)),
    GC(CONCAT, cat3_m1, "three along -1", .nin = 3,
       .in = {GC_IN(R, 2, 2, 1), GC_IN(R, 2, 2, 3), GC_IN(R, 2, 2, 2)}, GC_OUT(2, 2, 6)),
    GC(CONCAT, cat_self, "(x, x) axis 1", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, GC_OUT(2, 2, 6)),
    GC(CONCAT, cat_one, "one input", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, GC_OUT(2, 2, 3)),
    /* softmax family and indexing */
    GC(SOFTMAX, sm_1, "(3,4) axis 1", .nin = 1, .in = {GC_IN(R, 2, 3, 4)}, SO),
    GC(SOFTMAX, sm_0, "(3,4) axis 0", .nin = 1, .in = {GC_IN(R, 2, 3, 4)}),
    GC(SOFTMAX, sm_m1, "(2,3,4) axis -1", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, SO),
    GC(SOFTMAX, sm_1, "(2,3,4) axis 1", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}),
    GC(LOG_SOFTMAX, lsm_1, "(3,4) axis 1", .nin = 1, .in = {GC_IN(R, 2, 3, 4)}, SO),
    GC(LOG_SOFTMAX, lsm_0, "(3,4) axis 0", .nin = 1, .in = {GC_IN(R, 2, 3, 4)}),
    GC(LOG_SOFTMAX, lsm_m1, "(2,3,4) axis -1", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, SO),
    GC(GATHER, gather_1, "(3,4) axis 1 idx (3,2)", .nin = 2,
       .in = {GC_IN(R, 2, 3, 4), GC_IDX(gidx1, 2, 3, 2)}, GC_OUT(2, 3, 2)),
    GC(GATHER, gather_0, "(3,4) axis 0 idx (2,4)", .nin = 2,
       .in = {GC_IN(R, 2, 3, 4), GC_IDX(gidx0, 2, 2, 4)}, GC_OUT(2, 2, 4)),
    GC(GATHER, gather_1, "(3,5) axis 1 idx (2,3)", .nin = 2,
       .in = {GC_IN(R, 2, 3, 5), GC_IDX(gidx_small, 2, 2, 3)}, GC_OUT(2, 2, 3)),
    GC(SCATTER_ADD, scatter_1, "src (3,2) axis 1", .nin = 2,
       .in = {GC_IN(R, 2, 3, 2), GC_IDX(gidx1, 2, 3, 2)}, GC_OUT(2, 3, 4)),
    GC(SCATTER_ADD, scatter_0, "src (2,4) axis 0", .nin = 2,
       .in = {GC_IN(R, 2, 2, 4), GC_IDX(gidx0, 2, 2, 4)}, GC_OUT(2, 3, 4)),
    /* view operands: strided kernels and the gradient through the view */
    GC(EXP, exp_t, "of a transposed view", .nin = 1, .in = {GC_IN(R, 2, 4, 3)}, GC_OUT(2, 3, 4)),
    GC(POW_SCALAR, pow_t, "of a transposed view", .nin = 1, .in = {GC_IN(R, 2, 4, 3)},
       GC_OUT(2, 3, 4), SO),
    GC(ADD, add_t_bcast, "transposed (4,3) + (4)", .nin = 2,
       .in = {GC_IN(R, 2, 4, 3), GC_IN(R, 1, 4)}, GC_OUT(2, 3, 4)),
    GC(WHERE, where_t, "transposed branch", .nin = 3,
       .in = {GC_IDX(cond24, 2, 3, 4), GC_IN(R, 2, 4, 3), GC_IN(R, 2, 3, 4)}, GC_OUT(2, 3, 4)),
    GC(RELU_BACKWARD, relu_bw_t, "transposed g", .nin = 2,
       .in = {GC_IN(R, 2, 4, 2), GC_CONST(K, 2, 2, 4)}, GC_OUT(2, 2, 4)),
    GC(CLAMP, clamp_bcast, "of a broadcast view", .nin = 1, .in = {GC_IN(K, 1, 4)},
       GC_OUT(2, 3, 4)),
    GC(SUM, sum_perm, "of a permuted view", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)},
       GC_OUT(2, 4, 3)),
    GC(MEAN, mean_step, "of a stepped slice", .nin = 1, .in = {GC_IN(R, 2, 6, 4)}, GC_OUT(1, 4)),
    GC(MAX, max_t, "of a transposed view", .nin = 1, .in = {GC_IN(D, 2, 4, 3)}, GC_OUT(2, 3, 1)),
    GC(MIN, min_step, "of a stepped slice", .nin = 1, .in = {GC_IN(D, 2, 3, 8)}, GC_OUT(1, 4)),
    GC(SOFTMAX, sm_t, "of a transposed view", .nin = 1, .in = {GC_IN(R, 2, 4, 3)}, GC_OUT(2, 3, 4),
       SO),
    GC(LOG_SOFTMAX, lsm_step, "of a stepped slice", .nin = 1, .in = {GC_IN(R, 2, 3, 8)},
       GC_OUT(2, 3, 4), SO),
    GC(GATHER, gather_t, "from a transposed view", .nin = 2,
       .in = {GC_IN(R, 2, 4, 3), GC_IDX(gidx1, 2, 3, 2)}, GC_OUT(2, 3, 2)),
    GC(SCATTER_ADD, scatter_t, "of a transposed source", .nin = 2,
       .in = {GC_IN(R, 2, 2, 3), GC_IDX(gidx1, 2, 3, 2)}, GC_OUT(2, 3, 4)),
    GC(MATMUL, mm_step, "stepped-slice operand", .nin = 2,
       .in = {GC_IN(R, 2, 3, 8), GC_IN(R, 2, 4, 5)}, GC_OUT(2, 3, 5), SO),
    GC(MATMUL, mm_bcastA, "broadcast-view batch of A", .nin = 2,
       .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 3, 2, 4, 5)}, GC_OUT(3, 2, 3, 5)),
    GC(MATMUL, mm_bcastB, "broadcast-view batch of B", .nin = 2,
       .in = {GC_IN(R, 3, 2, 3, 4), GC_IN(R, 2, 4, 5)}, GC_OUT(3, 2, 3, 5)),
    GC(CONCAT, cat_t, "of a transposed view", .nin = 2,
       .in = {GC_IN(R, 2, 3, 2), GC_IN(R, 2, 2, 3)}, GC_OUT(2, 4, 3)),
    GC(SLICE_SCATTER, ss_t, "transposed source", .nin = 1, .in = {GC_IN(R, 2, 4, 2)},
       GC_OUT(2, 5, 4)),
    GC(COPY, copy_step, "of a stepped transposed view", .nin = 1, .in = {GC_IN(R, 2, 5, 3)},
       GC_OUT(2, 3, 3)),
    GC(BROADCAST_TO, bcast_t, "of a transposed view", .nin = 1, .in = {GC_IN(R, 2, 4, 1)},
       GC_OUT(3, 2, 3, 4)),
    /* large cases (sampled): past the CPU kernels' multi-threading threshold */
    GC(MUL, mul, "(200,200)*(200) sampled", .nin = 2,
       .in = {GC_IN(R, 2, 200, 200), GC_IN(R, 1, 200)}, GC_SAMPLE(12)),
    GC(ADD, add, "(1,256)+(160,1) sampled", .nin = 2,
       .in = {GC_IN(R, 2, 1, 256), GC_IN(R, 2, 160, 1)}, GC_OUT(2, 160, 256), GC_SAMPLE(12)),
    GC(EXP, exp, "(200,200) sampled", .nin = 1, .in = {GC_IN(R, 2, 200, 200)}, GC_SAMPLE(12)),
    GC(GELU, gelu, "(200,200) sampled", .nin = 1, .in = {GC_IN(R, 2, 200, 200)}, GC_SAMPLE(12)),
    GC(SUM, sum_02, "(40,30,40) axes 0,2 sampled", .nin = 1, .in = {GC_IN(R, 3, 40, 30, 40)},
       GC_OUT(1, 30), GC_SAMPLE(12)),
    GC(SUM, sum_m1k, "(180,200) axis -1 sampled", .nin = 1, .in = {GC_IN(R, 2, 180, 200)},
       GC_OUT(2, 180, 1), GC_SAMPLE(12)),
    GC(MEAN, mean_all, "(200,200) sampled", .nin = 1, .in = {GC_IN(R, 2, 200, 200)}, GC_OUT0,
       GC_SAMPLE(12)),
    GC(MAX, max_1, "(8,50,100) axis 1 sampled", .nin = 1, .in = {GC_IN(D, 3, 8, 50, 100)},
       GC_OUT(2, 8, 100), GC_SAMPLE(12)),
    GC(SOFTMAX, sm_m1, "(64,600) sampled", .nin = 1, .in = {GC_IN(R, 2, 64, 600)}, GC_SAMPLE(12)),
    GC(LOG_SOFTMAX, lsm_0, "(600,64) sampled", .nin = 1, .in = {GC_IN(R, 2, 600, 64)},
       GC_SAMPLE(12)),
    GC(MATMUL, mm, "(64,96)@(96,48) sampled", .nin = 2,
       .in = {GC_IN(R, 2, 64, 96), GC_IN(R, 2, 96, 48)}, GC_OUT(2, 64, 48), GC_SAMPLE(12)),
    /* op(x)^2 with the second-order check: every backward rule recorded */
    GC(ADD, sq_add, "(2,3,1)+(3,4) squared", .nin = 2,
       .in = {GC_IN(R, 3, 2, 3, 1), GC_IN(R, 2, 3, 4)}, SO),
    GC(SUB, sq_sub, "(2,3,1)-(3,4) squared", .nin = 2,
       .in = {GC_IN(R, 3, 2, 3, 1), GC_IN(R, 2, 3, 4)}, SO),
    GC(WHERE, sq_where, "squared", .nin = 3,
       .in = {GC_IDX(cond24, 3, 2, 3, 4), GC_IN(R, 2, 3, 4), GC_IN(R, 3, 2, 1, 4)}, SO),
    GC(RELU_BACKWARD, sq_relu_backward, "squared", .nin = 2,
       .in = {GC_IN(R, 2, 2, 4), GC_CONST(K, 2, 2, 4)}, SO),
    GC(CLAMP_BACKWARD, sq_clamp_backward, "squared", .nin = 2,
       .in = {GC_IN(R, 2, 2, 4), GC_CONST(K, 2, 2, 4)}, SO),
    GC(NEG, sq_neg, "squared", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(AFFINE, sq_affine, "squared", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(ABS, sq_abs, "squared", .nin = 1, .in = {GC_IN(K, 2, 2, 4)}, SO),
    GC(RELU, sq_relu, "squared", .nin = 1, .in = {GC_IN(K, 2, 2, 4)}, SO),
    GC(CLAMP, sq_clamp, "squared", .nin = 1, .in = {GC_IN(K, 2, 2, 4)}, SO),
    GC(SUM, sq_sum_02, "axes 0,2 squared", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, SO),
    GC(MEAN, sq_mean_1, "axis 1 squared", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, SO),
    GC(MAX, sq_max_1, "axis 1 squared", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)}, SO),
    GC(MIN, sq_min_0, "axis 0 squared", .nin = 1, .in = {GC_IN(D, 3, 2, 3, 4)}, SO),
    GC(COPY, sq_copy_t, "squared", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GC(RESHAPE, sq_reshape_t, "squared", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, SO),
    GC(PERMUTE, sq_perm_201, "squared", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, SO),
    GC(BROADCAST_TO, sq_bcast_234, "(3,1) squared", .nin = 1, .in = {GC_IN(R, 2, 3, 1)}, SO),
    GC(SLICE, sq_slice_neg, "squared", .nin = 1, .in = {GC_IN(R, 2, 5, 4)}, SO),
    GC(SLICE_SCATTER, sq_ss_cols, "squared", .nin = 1, .in = {GC_IN(R, 2, 3, 2)}, SO),
    GC(CONCAT, sq_cat3_m1, "squared", .nin = 3,
       .in = {GC_IN(R, 2, 2, 1), GC_IN(R, 2, 2, 3), GC_IN(R, 2, 2, 2)}, SO),
    GC(GATHER, sq_gather_1, "squared", .nin = 2, .in = {GC_IN(R, 2, 3, 4), GC_IDX(gidx1, 2, 3, 2)},
       SO),
    GC(SCATTER_ADD, sq_scatter_1, "squared", .nin = 2,
       .in = {GC_IN(R, 2, 3, 2), GC_IDX(gidx1, 2, 3, 2)}, SO),
    GCC(sq_sum_to, "squared", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, SO),
    GCC(sq_stack_m1, "squared", .nin = 2, .in = {GC_IN(R, 2, 2, 3), GC_IN(R, 2, 2, 3)}, SO),
    GCC(sq_rearrange_3d, "squared", .nin = 1, .in = {GC_IN(R, 3, 3, 4, 2)}, SO),
    /* nn.h: losses */
    GC(CROSS_ENTROPY, ce, "(4,5)", .nin = 2, .in = {GC_IN(R, 2, 4, 5), GC_IDX(tgt4, 1, 4)}, GC_OUT0,
       SO),
    GC(CROSS_ENTROPY, ce_smooth, "(4,5) smoothing 0.1", .nin = 2,
       .in = {GC_IN(R, 2, 4, 5), GC_IDX(tgt4, 1, 4)}, GC_OUT0, SO),
    GC(CROSS_ENTROPY, ce, "(1,3)", .nin = 2, .in = {GC_IN(R, 2, 1, 3), GC_IDX(tgt1, 1, 1)}, GC_OUT0),
    GC(CROSS_ENTROPY, ce_smooth, "(3,1) one class", .nin = 2,
       .in = {GC_IN(R, 2, 3, 1), GC_IDX(tgt3c1, 1, 3)}, GC_OUT0),
    GC(CROSS_ENTROPY, sq_ce, "squared", .nin = 2, .in = {GC_IN(R, 2, 4, 5), GC_IDX(tgt4, 1, 4)},
       SO),
    GC(CROSS_ENTROPY_BACKWARD, ceb, "g () logits (4,5)", .nin = 3,
       .in = {GC_IN0(R), GC_IN(R, 2, 4, 5), GC_IDX(tgt4, 1, 4)}, GC_OUT(2, 4, 5), SO),
    GC(CROSS_ENTROPY_BACKWARD, ceb_smooth, "smoothing 0.25 (1,3)", .nin = 3,
       .in = {GC_IN0(R), GC_IN(R, 2, 1, 3), GC_IDX(tgt1, 1, 1)}, GC_OUT(2, 1, 3), SO),
    GC(CROSS_ENTROPY_BACKWARD, sq_ceb, "squared", .nin = 3,
       .in = {GC_IN0(R), GC_IN(R, 2, 4, 5), GC_IDX(tgt4, 1, 4)}, SO),
    GCC(mse, "(3,4)", .nin = 2, .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 2, 3, 4)}, GC_OUT0, SO),
    GCC(flatten1, "(2,3,1,2)", .nin = 1, .in = {GC_IN(R, 4, 2, 3, 1, 2)}, GC_OUT(2, 2, 6)),
    GC(DROPOUT, dropout, "(4,6)", .nin = 1, .in = {GC_IN(R, 2, 4, 6)}, GC_OUT(2, 4, 6)),
    GC(DROPOUT, dropout, "(1,5,1)", .nin = 1, .in = {GC_IN(R, 3, 1, 5, 1)}),
    GC(DROPOUT, sq_dropout, "squared", .nin = 1, .in = {GC_IN(R, 2, 3, 5)}, SO),
    /* nn.h: convolution */
    GC(CONV2D, conv_p1, "(2,3,5,5) w (4,3,3,3) pad 1 bias", .nin = 3,
       .in = {GC_IN(R, 4, 2, 3, 5, 5), GC_IN(R, 4, 4, 3, 3, 3), GC_IN(R, 1, 4)},
       GC_OUT(4, 2, 4, 5, 5)),
    GC(CONV2D, conv_s2_d2, "stride (2,1) pad (1,0) dilation (1,2)", .nin = 2,
       .in = {GC_IN(R, 4, 2, 2, 6, 7), GC_IN(R, 4, 3, 2, 3, 2)}, GC_OUT(4, 2, 3, 3, 5), SO),
    GC(CONV2D, conv_plain, "size-1 dims (1,1,3,4) w (2,1,1,1)", .nin = 2,
       .in = {GC_IN(R, 4, 1, 1, 3, 4), GC_IN(R, 4, 2, 1, 1, 1)}, GC_OUT(4, 1, 2, 3, 4)),
    GC(CONV2D, conv_t, "of a transposed view, stride (1,2)", .nin = 3,
       .in = {GC_IN(R, 4, 2, 2, 5, 4), GC_IN(R, 4, 3, 2, 2, 3), GC_IN(R, 1, 3)},
       GC_OUT(4, 2, 3, 3, 3)),
    GC(CONV2D, sq_conv_p1, "squared", .nin = 3,
       .in = {GC_IN(R, 4, 1, 2, 4, 4), GC_IN(R, 4, 2, 2, 3, 3), GC_IN(R, 1, 2)}, SO),
    GC(CONV2D_BACKWARD_INPUT, cbi_s2, "g (2,4,3,3) w (4,3,3,3) stride 2 pad 1", .nin = 2,
       .in = {GC_IN(R, 4, 2, 4, 3, 3), GC_IN(R, 4, 4, 3, 3, 3)}, GC_OUT(4, 2, 3, 5, 5), SO),
    GC(CONV2D_BACKWARD_INPUT, cbi_plain, "size-1 dims", .nin = 2,
       .in = {GC_IN(R, 4, 1, 2, 2, 4), GC_IN(R, 4, 2, 1, 2, 1)}, GC_OUT(4, 1, 1, 3, 4)),
    GC(CONV2D_BACKWARD_INPUT, sq_cbi_s2, "squared", .nin = 2,
       .in = {GC_IN(R, 4, 1, 2, 3, 3), GC_IN(R, 4, 2, 2, 3, 3)}, SO),
    GC(CONV2D_BACKWARD_WEIGHT, cbw_s2, "x (2,3,5,5) g (2,4,3,3) stride 2 pad 1", .nin = 2,
       .in = {GC_IN(R, 4, 2, 3, 5, 5), GC_IN(R, 4, 2, 4, 3, 3)}, GC_OUT(4, 4, 3, 3, 3), SO),
    GC(CONV2D_BACKWARD_WEIGHT, cbw_d2, "dilation (2,1) pad (0,2)", .nin = 2,
       .in = {GC_IN(R, 4, 1, 2, 4, 3), GC_IN(R, 4, 1, 3, 2, 6)}, GC_OUT(4, 3, 2, 2, 2)),
    GC(CONV2D_BACKWARD_WEIGHT, sq_cbw_s2, "squared", .nin = 2,
       .in = {GC_IN(R, 4, 1, 2, 5, 5), GC_IN(R, 4, 1, 2, 3, 3)}, SO),
    /* nn.h: pooling (distinct values: a tie is a kink) */
    GC(MAX_POOL2D, maxp_22, "(2,3,4,4) 2x2", .nin = 1, .in = {GC_IN(D, 4, 2, 3, 4, 4)},
       GC_OUT(4, 2, 3, 2, 2)),
    GC(MAX_POOL2D, maxp_31p, "(1,2,5,5) 3x3 stride (1,2) pad 1", .nin = 1,
       .in = {GC_IN(D, 4, 1, 2, 5, 5)}, GC_OUT(4, 1, 2, 5, 3)),
    GC(MAX_POOL2D, maxp_22, "(1,1,2,3) size-1 dims", .nin = 1, .in = {GC_IN(D, 4, 1, 1, 2, 3)},
       GC_OUT(4, 1, 1, 1, 1)),
    GC(MAX_POOL2D, sq_maxp_22, "squared", .nin = 1, .in = {GC_IN(D, 4, 1, 2, 4, 4)}, SO),
    GCN(MAX_POOL2D_INDICES, maxi_22, "(1,1,2,4) ties", .nin = 1,
        .in = {GC_DATA_IN(mp_a, 4, 1, 1, 2, 4)}, GC_OUT(4, 1, 1, 1, 2), .expect = mp_i),
    GCN(MAX_POOL2D_BACKWARD, mpb_22, "(1,1,2,4) 2x2 ties", .nin = 2,
        .in = {GC_DATA_IN(mpb_g2, 4, 1, 1, 1, 2), GC_DATA_IN(mp_a, 4, 1, 1, 2, 4)},
        GC_OUT(4, 1, 1, 2, 4), .expect = mpb_dx2),
    GCN(MAX_POOL2D_BACKWARD, mpb_31p, "(1,1,3,3) 3x3 stride 1 pad 1 overlapping ties", .nin = 2,
        .in = {GC_DATA_IN(mpb_g, 4, 1, 1, 3, 3), GC_DATA_IN(mpb_x, 4, 1, 1, 3, 3)},
        GC_OUT(4, 1, 1, 3, 3), .expect = mpb_dx),
    GCN(MAX_POOL2D_BACKWARD, mpb_31p_t, "transposed g", .nin = 2,
        .in = {GC_DATA_IN(mpb_gt, 4, 1, 1, 3, 3), GC_DATA_IN(mpb_x, 4, 1, 1, 3, 3)},
        GC_OUT(4, 1, 1, 3, 3), .expect = mpb_dx),
    GC(AVG_POOL2D, avgp_22, "(2,3,4,4) 2x2", .nin = 1, .in = {GC_IN(R, 4, 2, 3, 4, 4)},
       GC_OUT(4, 2, 3, 2, 2)),
    GC(AVG_POOL2D, avgp_32p, "(1,2,5,5) 3x3 stride 2 pad 1", .nin = 1,
       .in = {GC_IN(R, 4, 1, 2, 5, 5)}, GC_OUT(4, 1, 2, 3, 3)),
    GC(AVG_POOL2D, sq_avgp_32p, "squared", .nin = 1, .in = {GC_IN(R, 4, 1, 1, 5, 5)}, SO),
    GC(AVG_POOL2D_BACKWARD, avgb_22, "g (2,1,2,2) to 4x5", .nin = 1, .in = {GC_IN(R, 4, 2, 1, 2, 2)},
       GC_OUT(4, 2, 1, 4, 5)),
    GC(AVG_POOL2D_BACKWARD, avgb_32p, "3x3 stride 2 pad 1", .nin = 1,
       .in = {GC_IN(R, 4, 1, 2, 3, 3)}, GC_OUT(4, 1, 2, 5, 5)),
    GC(AVG_POOL2D_BACKWARD, sq_avgb_22, "squared", .nin = 1, .in = {GC_IN(R, 4, 1, 2, 2, 2)}, SO),
    GCC(sq_embedding, "squared", .nin = 2, .in = {GC_IN(R, 2, 5, 3), GC_IDX(emb_idx, 2, 2, 3)},
        SO),
    /* nn.h: layers (compositions) */
    GCC(linear, "(3,4) w (5,4) b (5)", .nin = 3,
        .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 2, 5, 4), GC_IN(R, 1, 5)}, GC_OUT(2, 3, 5), SO),
    GCC(linear_3d, "(2,1,4) w (1,4) no bias", .nin = 2,
        .in = {GC_IN(R, 3, 2, 1, 4), GC_IN(R, 2, 1, 4)}, GC_OUT(3, 2, 1, 1)),
    GCC(bn_train, "(4,3) train", .nin = 3,
        .in = {GC_IN(R, 2, 4, 3), GC_IN(R, 1, 3), GC_IN(R, 1, 3)}, GC_OUT(2, 4, 3), SO),
    GCC(bn_train, "(2,3,2,2) train", .nin = 3,
        .in = {GC_IN(R, 4, 2, 3, 2, 2), GC_IN(R, 1, 3), GC_IN(R, 1, 3)}, GC_OUT(4, 2, 3, 2, 2)),
    GCC(sq_bn_train, "squared", .nin = 3,
        .in = {GC_IN(R, 4, 2, 2, 1, 3), GC_IN(R, 1, 2), GC_IN(R, 1, 2)}, SO),
    GC(BATCH_NORM, bnf, "(4,3)", .nin = 3,
       .in = {GC_IN(R, 2, 4, 3), GC_IN(R, 1, 3), GC_IN(R, 1, 3)}, GC_OUT(2, 4, 3), SO),
    GC(BATCH_NORM, bnf, "(2,3,2,2)", .nin = 3,
       .in = {GC_IN(R, 4, 2, 3, 2, 2), GC_IN(R, 1, 3), GC_IN(R, 1, 3)}, GC_OUT(4, 2, 3, 2, 2), SO),
    GC(BATCH_NORM, bnf, "size-1 dims (1,2,3,1)", .nin = 3,
       .in = {GC_IN(R, 4, 1, 2, 3, 1), GC_IN(R, 1, 2), GC_IN(R, 1, 2)}, GC_OUT(4, 1, 2, 3, 1)),
    GC(BATCH_NORM, bnf, "one channel (5,1) weight fixed", .nin = 3,
       .in = {GC_IN(R, 2, 5, 1), GC_CONST(R, 1, 1), GC_IN(R, 1, 1)}, GC_OUT(2, 5, 1)),
    GC(BATCH_NORM, sq_bnf, "squared", .nin = 3,
       .in = {GC_IN(R, 4, 2, 2, 1, 3), GC_IN(R, 1, 2), GC_IN(R, 1, 2)}, SO),
    GCN(BATCH_NORM_BACKWARD, bnb, "g x (2,3,2,2)", .nin = 3,
        .in = {GC_IN(R, 4, 2, 3, 2, 2), GC_IN(R, 4, 2, 3, 2, 2), GC_IN(R, 1, 3)},
        GC_OUT(4, 2, 3, 2, 2)),
    GCN(BATCH_NORM_BACKWARD, bnb, "g x (4,3)", .nin = 3,
        .in = {GC_IN(R, 2, 4, 3), GC_IN(R, 2, 4, 3), GC_IN(R, 1, 3)}, GC_OUT(2, 4, 3)),
    GCC(bn_eval, "(2,3,2,2) eval", .nin = 3,
        .in = {GC_IN(R, 4, 2, 3, 2, 2), GC_IN(R, 1, 3), GC_IN(R, 1, 3)}, GC_OUT(4, 2, 3, 2, 2)),
    GCC(layernorm, "(3,4) over (4)", .nin = 3,
        .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 1, 4), GC_IN(R, 1, 4)}, GC_OUT(2, 3, 4), SO),
    GCC(layernorm, "(2,2,3) over (2,3)", .nin = 3,
        .in = {GC_IN(R, 3, 2, 2, 3), GC_IN(R, 2, 2, 3), GC_IN(R, 2, 2, 3)}, GC_OUT(3, 2, 2, 3)),
    GCC(sq_layernorm, "squared", .nin = 3,
        .in = {GC_IN(R, 2, 2, 5), GC_IN(R, 1, 5), GC_IN(R, 1, 5)}, SO),
    GCC(embedding, "(5,3) by (2,3)", .nin = 2, .in = {GC_IN(R, 2, 5, 3), GC_IDX(emb_idx, 2, 2, 3)},
        GC_OUT(3, 2, 3, 3)),
    /* rows without a backward rule */
    GCN(EQ, eq, "(2,3)==(2,3)", .nin = 2,
        .in = {GC_DATA_IN(eq_a, 2, 2, 3), GC_DATA_IN(eq_b, 2, 2, 3)}, GC_OUT(2, 2, 3),
        .expect = eq_ab),
    GCN(EQ, eq, "(2,3)==(3)", .nin = 2, .in = {GC_DATA_IN(eq_a, 2, 2, 3), GC_DATA_IN(eq_b3, 1, 3)},
        GC_OUT(2, 2, 3), .expect = eq_ab3),
    GCN(SIGN, sign, "(5)", .nin = 1, .in = {GC_DATA_IN(sign_a, 1, 5)}, GC_OUT(1, 5),
        .expect = sign_out),
    GCN(ARGMAX, argmax_1, "axis 1", .nin = 1, .in = {GC_DATA_IN(am_a, 2, 2, 3)}, GC_OUT(1, 2),
        .expect = am_1),
    GCN(ARGMAX, argmax_0k, "axis 0 keepdim", .nin = 1, .in = {GC_DATA_IN(am_a, 2, 2, 3)},
        GC_OUT(2, 1, 3), .expect = am_0k),
    /* composites */
    GCC(add_scalar, "x+0.7", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}),
    GCC(mul_scalar, "x*-2.5", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}),
    GCC(sum_to, "(2,3,4)->(3,1)", .nin = 1, .in = {GC_IN(R, 3, 2, 3, 4)}, GC_OUT(2, 3, 1)),
    GCC(contiguous_t, "of a transposed view", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, GC_OUT(2, 3, 2)),
    GCC(stack_1, "two (2,3) axis 1", .nin = 2, .in = {GC_IN(R, 2, 2, 3), GC_IN(R, 2, 2, 3)},
        GC_OUT(3, 2, 2, 3)),
    GCC(stack_m1, "two (2,3) axis -1", .nin = 2, .in = {GC_IN(R, 2, 2, 3), GC_IN(R, 2, 2, 3)},
        GC_OUT(3, 2, 3, 2)),
    GCC(chunk, "(3,5) into 2 along 1", .nin = 1, .in = {GC_IN(R, 2, 3, 5)}, GC_OUT(2, 3, 5)),
    GCC(rearrange_3d, "a (b1 b2) c -> (a c) (b2 b1)", .nin = 1, .in = {GC_IN(R, 3, 3, 4, 2)},
        GC_OUT(2, 6, 4)),
    GCC(rearrange_group, "(b a) -> a b", .nin = 1, .in = {GC_IN(R, 1, 8)}, GC_OUT(2, 2, 4)),
    GCC(reuse, "exp(x)*x+tanh(x)", .nin = 1, .in = {GC_IN(R, 2, 2, 3)}, SO),
    GCC(bcast_chain, "sum((x+y)*sigmoid(y), 0)", .nin = 2,
        .in = {GC_IN(R, 2, 3, 1), GC_IN(R, 1, 4)}, GC_OUT(1, 4), SO),
    GCC(nll, "linear classifier loss", .nin = 4,
        .in = {GC_IN(R, 2, 4, 3), GC_IN(R, 2, 3, 5), GC_IN(R, 1, 5), GC_IDX(labels4, 2, 4, 1)},
        GC_OUT0, SO),
    GCC(mlp, "two layers", .nin = 3,
        .in = {GC_IN(R, 2, 4, 3), GC_IN(R, 2, 3, 5), GC_IN(R, 2, 5, 2)}, GC_OUT(1, 2), SO),
#include "gradcheck_rows_ops2.h"
#include "gradcheck_rows_attn.h"
#include "gradcheck_rows_lnorm.h"
};

#undef R
#undef P
#undef K
#undef D
#undef SO

#define GC_NCASES (sizeof gc_table / sizeof gc_table[0])
