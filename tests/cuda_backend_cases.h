/*
 * tests/cuda_backend_cases.h: the case table of tests/test_cuda_backend.c
 * (included once, by it): per op row, the inputs (shapes, value generators),
 * a builder that calls the op, and the tolerance of the CPU-vs-CUDA
 * comparison.
 */
/* ---- the case table ---- */

typedef enum cb_gen {
    CB_RAND = 0, /* uniform in [-1, 1] */
    CB_POS,      /* uniform in [0.5, 2]: log, sqrt, powers, divisors */
    CB_NOKINK,   /* [-1, 1], at least 0.05 from 0 and +-0.5 (relu, abs, clamp) */
    CB_SMALLINT, /* integers 0..2 as floats: eq sees ties */
    CB_INDEX,    /* fixed i64 values from idx */
    CB_COND,     /* random 0/1 as i64: a where condition */
} cb_gen;

typedef struct cb_arg {
    cb_gen gen;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    const int64_t *idx;
} cb_arg;

typedef tg_tensor *(*cb_build_fn)(tg_ctx *ctx, tg_tensor *const *in);

#define CB_MAX_IN 4
#define CB_TOL_F32 1e-5
#define CB_TOL_F64 1e-11

typedef struct cb_case {
    const char *name;
    int op;
    cb_build_fn fn;
    int nin;
    cb_arg in[CB_MAX_IN];
    /* f32 tolerance (atol = rtol), 0 for CB_TOL_F32 */
    double tol;
} cb_case;

#define IN(g, n, ...)                                     \
    {                                                     \
        .gen = (g), .ndim = (n), .shape = { __VA_ARGS__ } \
    }
#define IDX(p, n, ...) \
    { .gen = CB_INDEX, .ndim = (n), .shape = {__VA_ARGS__}, .idx = (p) }

/* Builders: one expression each; the op under test is the last call. */
#define CB_BUILD(name, expr) \
    static tg_tensor *b_##name(tg_ctx *ctx, tg_tensor *const *in) { return (expr); }
#define T01(x) tg_transpose(ctx, (x), 0, 1)

CB_BUILD(add, tg_add(ctx, in[0], in[1]))
CB_BUILD(add_t, tg_add(ctx, T01(in[0]), in[1]))
CB_BUILD(sub, tg_sub(ctx, in[0], in[1]))
CB_BUILD(mul, tg_mul(ctx, in[0], in[1]))
CB_BUILD(mul_slice, tg_mul(ctx, tg_slice(ctx, in[0], 1, 1, 7, 2), in[1]))
CB_BUILD(div, tg_div(ctx, in[0], in[1]))
CB_BUILD(eq, tg_eq(ctx, in[0], in[1]))
CB_BUILD(relu_bw, tg_relu_backward(ctx, in[0], in[1]))
CB_BUILD(relu_bw_t, tg_relu_backward(ctx, T01(in[0]), in[1]))
CB_BUILD(clamp_bw, tg_clamp_backward(ctx, in[0], in[1], -0.5, 0.5))
CB_BUILD(gelu_bw, tg_gelu_backward(ctx, in[0], in[1]))
CB_BUILD(gelu_bw_t, tg_gelu_backward(ctx, T01(in[0]), in[1]))
CB_BUILD(where, tg_where(ctx, in[0], in[1], in[2]))
CB_BUILD(neg, tg_neg(ctx, in[0]))
CB_BUILD(affine, tg_affine(ctx, in[0], 2.5, -1.0))
CB_BUILD(pow2, tg_pow_scalar(ctx, in[0], 2.0))
CB_BUILD(pow3_t, tg_pow_scalar(ctx, T01(in[0]), 3.0))
CB_BUILD(pow_half, tg_pow_scalar(ctx, in[0], 0.5))
CB_BUILD(pow_m1, tg_pow_scalar(ctx, in[0], -1.0))
CB_BUILD(pow_17, tg_pow_scalar(ctx, in[0], 1.7))
CB_BUILD(exp, tg_exp(ctx, in[0]))
CB_BUILD(exp_slice, tg_exp(ctx, tg_slice(ctx, in[0], 1, 1, 7, 2)))
CB_BUILD(log, tg_log(ctx, in[0]))
CB_BUILD(sqrt, tg_sqrt(ctx, in[0]))
CB_BUILD(abs, tg_abs(ctx, in[0]))
CB_BUILD(erf, tg_erf(ctx, in[0]))
CB_BUILD(relu, tg_relu(ctx, in[0]))
CB_BUILD(sigmoid, tg_sigmoid(ctx, in[0]))
CB_BUILD(tanh_t, tg_tanh(ctx, T01(in[0])))
CB_BUILD(silu, tg_silu(ctx, in[0]))
CB_BUILD(gelu, tg_gelu(ctx, in[0]))
CB_BUILD(clamp, tg_clamp(ctx, in[0], -0.5, 0.5))
CB_BUILD(sign, tg_sign(ctx, in[0]))
CB_BUILD(sum_all, tg_sum(ctx, in[0], 0, NULL, false))
CB_BUILD(sum_1k, tg_sum(ctx, in[0], 1, (int[]){1}, true))
CB_BUILD(sum_02_t, tg_sum(ctx, tg_permute(ctx, in[0], (int[]){2, 0, 1}), 2, (int[]){0, 2}, false))
CB_BUILD(sum_long, tg_sum(ctx, in[0], 1, (int[]){1}, false))
CB_BUILD(mean_0, tg_mean(ctx, in[0], 1, (int[]){0}, false))
CB_BUILD(mean_long_t, tg_mean(ctx, T01(in[0]), 1, (int[]){0}, true))
CB_BUILD(max_1, tg_max(ctx, in[0], 1, (int[]){1}, false))
CB_BUILD(max_all_t, tg_max(ctx, T01(in[0]), 0, NULL, false))
CB_BUILD(min_0k, tg_min(ctx, in[0], 1, (int[]){0}, true))
CB_BUILD(min_long, tg_min(ctx, in[0], 1, (int[]){1}, false))
CB_BUILD(argmax_1, tg_argmax(ctx, in[0], 1, false))
CB_BUILD(argmax_0k, tg_argmax(ctx, in[0], 0, true))
CB_BUILD(matmul, tg_matmul(ctx, in[0], in[1]))
CB_BUILD(matmul_tt, tg_matmul(ctx, T01(in[0]), T01(in[1])))
CB_BUILD(copy_t, tg_copy(ctx, T01(in[0])))
CB_BUILD(copy_perm, tg_copy(ctx, tg_permute(ctx, in[0], (int[]){2, 0, 1})))
/* one rank: the copy the collective would sum */
CB_BUILD(world_sum_t, tg_world_sum(ctx, T01(in[0])))
CB_BUILD(reshape_t, tg_reshape(ctx, T01(in[0]), 2, (int64_t[]){2, 6}))
CB_BUILD(reshape_slice, tg_reshape(ctx, tg_slice(ctx, in[0], 1, 0, 4, 2), 1, (int64_t[]){-1}))
CB_BUILD(permute, tg_permute(ctx, in[0], (int[]){2, 0, 1}))
CB_BUILD(broadcast, tg_broadcast_to(ctx, in[0], 3, (int64_t[]){2, 3, 4}))
CB_BUILD(slice, tg_slice(ctx, in[0], 1, 1, 5, 2))
CB_BUILD(slice_scatter, tg_slice_scatter(ctx, in[0], 2, (int64_t[]){3, 6}, 1, 1, 5, 2))
CB_BUILD(slice_scatter_0, tg_slice_scatter(ctx, T01(in[0]), 3, (int64_t[]){5, 2, 2}, 0, 0, 5, 3))
CB_BUILD(concat, tg_concat(ctx, 3, (tg_tensor *[]){in[0], T01(in[1]), in[2]}, 1))
CB_BUILD(concat_0, tg_concat(ctx, 2, (tg_tensor *[]){in[0], in[1]}, 0))
CB_BUILD(softmax_1, tg_softmax(ctx, in[0], 1))
CB_BUILD(softmax_t, tg_softmax(ctx, T01(in[0]), 0))
CB_BUILD(log_softmax_1, tg_log_softmax(ctx, in[0], 1))
CB_BUILD(log_softmax_3d, tg_log_softmax(ctx, in[0], 1))
CB_BUILD(gather_1, tg_gather(ctx, in[0], 1, in[1]))
CB_BUILD(gather_0, tg_gather(ctx, in[0], 0, in[1]))
CB_BUILD(scatter_1, tg_scatter_add(ctx, in[0], 1, in[1], 2, (int64_t[]){3, 4}))
CB_BUILD(scatter_0, tg_scatter_add(ctx, in[0], 0, in[1], 2, (int64_t[]){3, 4}))
CB_BUILD(ce, tg_cross_entropy(ctx, in[0], in[1], 0.0))
CB_BUILD(ce_smooth_t, tg_cross_entropy(ctx, T01(in[0]), in[1], 0.1))
CB_BUILD(ce_bw, tg_cross_entropy_backward(ctx, in[0], in[1], in[2], 0.1))
CB_BUILD(ce_bw_t, tg_cross_entropy_backward(ctx, in[0], T01(in[1]), in[2], 0.0))

/* Dropout draws its mask from the stream it is given: the same fixed stream
 * on both contexts, so both must drop the same elements. */
static tg_tensor *b_dropout(tg_ctx *ctx, tg_tensor *const *in) {
    tg_rng r = {.key = 0x0123456789ABCDEFull, .counter = 5};
    return tg_dropout(ctx, in[0], 0.3, true, &r);
}
static tg_tensor *b_dropout_t(tg_ctx *ctx, tg_tensor *const *in) {
    tg_rng r = {.key = 0xFEDCBA9876543210ull, .counter = 0xFFFFFFFFull};
    return tg_dropout(ctx, T01(in[0]), 0.5, true, &r);
}

static const tg_conv2d_opts cv_plain = {{1, 1}, {0, 0}, {1, 1}};
static const tg_conv2d_opts cv_pad = {{1, 1}, {1, 1}, {1, 1}};
static const tg_conv2d_opts cv_odd = {{2, 1}, {1, 2}, {2, 1}};
#define T23(x) tg_transpose(ctx, (x), 2, 3)
CB_BUILD(conv, tg_conv2d(ctx, in[0], in[1], in[2], &cv_pad))
CB_BUILD(conv_plain, tg_conv2d(ctx, in[0], in[1], NULL, &cv_plain))
CB_BUILD(conv_odd_t, tg_conv2d(ctx, T23(in[0]), in[1], NULL, &cv_odd))
CB_BUILD(conv_bwi, tg_conv2d_backward_input(ctx, in[0], in[1], &cv_pad, 5, 4))
CB_BUILD(conv_bwi_odd, tg_conv2d_backward_input(ctx, T23(in[0]), in[1], &cv_odd, 6, 5))
CB_BUILD(conv_bww, tg_conv2d_backward_weight(ctx, in[0], in[1], &cv_pad, 3, 3))
CB_BUILD(conv_bww_odd, tg_conv2d_backward_weight(ctx, in[0], T23(in[1]), &cv_odd, 2, 3))
/* A batch larger than the CPU kernels' workspace slots (the CUDA kernels
 * need the whole batch's column matrix). */
CB_BUILD(conv_big_bwi, tg_conv2d_backward_input(ctx, in[0], in[1], &cv_pad, 16, 16))
CB_BUILD(conv_big_bww, tg_conv2d_backward_weight(ctx, in[0], in[1], &cv_pad, 3, 3))
CB_BUILD(maxpool, tg_max_pool2d(ctx, in[0], (int[]){2, 2}, NULL, NULL))
CB_BUILD(maxpool_pad_t, tg_max_pool2d(ctx, T23(in[0]), (int[]){3, 2}, (int[]){2, 1}, (int[]){1, 1}))
CB_BUILD(maxpool_idx, tg_max_pool2d_indices(ctx, in[0], (int[]){3, 3}, (int[]){2, 2}, (int[]){1, 1}))
CB_BUILD(maxpool_idx_t, tg_max_pool2d_indices(ctx, T23(in[0]), (int[]){2, 3}, (int[]){1, 2}, (int[]){1, 0}))
/* max_pool2d_backward(g, x): 2x2 windows over odd sizes (an uncovered last
 * row and column), and overlapping 3x3 windows with a transposed g. */
CB_BUILD(maxpool_bw, tg_max_pool2d_backward(ctx, in[0], in[1], (int[]){2, 2}, NULL, NULL))
CB_BUILD(maxpool_bw_ov_t, tg_max_pool2d_backward(ctx, T23(in[0]), in[1], (int[]){3, 3},
                                                 (int[]){1, 1}, (int[]){1, 1}))
CB_BUILD(avgpool, tg_avg_pool2d(ctx, in[0], (int[]){2, 2}, NULL, NULL))
CB_BUILD(avgpool_pad_t, tg_avg_pool2d(ctx, T23(in[0]), (int[]){3, 2}, (int[]){2, 1}, (int[]){1, 1}))
CB_BUILD(avgpool_bw, tg_avg_pool2d_backward(ctx, in[0], (int[]){3, 3}, (int[]){2, 2}, (int[]){1, 1}, 7, 6))
CB_BUILD(avgpool_bw_t, tg_avg_pool2d_backward(ctx, T23(in[0]), (int[]){2, 3}, (int[]){1, 2}, (int[]){1, 1}, 4, 5))

/* batch norm: the fused forward (of a contiguous and a transposed input),
 * and the fused backward with the statistics of x made under no-grad. */
CB_BUILD(bn, tg_batch_norm(ctx, in[0], in[1], in[2], 1e-5, NULL))
CB_BUILD(bn_t, tg_batch_norm(ctx, T23(in[0]), in[1], in[2], 1e-5, NULL))
static tg_tensor *b_bn_bw(tg_ctx *ctx, tg_tensor *const *in) {
    tg_tensor *st = NULL, *gw = NULL, *gb = NULL;
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *y = tg_batch_norm(ctx, in[1], in[2], tg_zeros(ctx, in[2]->dtype, 1, in[2]->shape),
                                 1e-5, &st);
    tg_set_grad_enabled(ctx, prev);
    tg_tensor *dx = y ? tg_batch_norm_backward(ctx, in[0], in[1], in[2], st, &gw, &gb) : NULL;
    /* One result: dx scaled by the two parameter gradients, so that a wrong
     * dweight or dbias shows in it. */
    int64_t pshape[4] = {1, in[2]->shape[0], 1, 1};
    return dx ? tg_add(ctx, tg_mul(ctx, dx, tg_reshape(ctx, gw, in[1]->ndim, pshape)),
                       tg_reshape(ctx, gb, in[1]->ndim, pshape))
              : NULL;
}

static const int64_t gidx1[6] = {0, 3, 1, 1, 2, 0};       /* (3,2), axis 1 of (3,4) */
static const int64_t gidx0[8] = {2, 0, 1, 2, 0, 0, 1, 2}; /* (2,4), axis 0 of (3,4) */
static const int64_t sidx1[6] = {3, 3, 0, 1, 2, 2};       /* (3,2) into (3,4): duplicates */
static const int64_t sidx0[8] = {1, 1, 0, 2, 1, 0, 0, 2}; /* (2,4) into (3,4) along 0 */
static const int64_t ce_t4[4] = {2, 0, 4, 4};             /* 4 rows of 5 classes */
static const int64_t ce_t3[3] = {5, 699, 0};              /* 3 rows of 700 classes */
#include "cuda_backend_ops2_builders.h"
#include "cuda_backend_attn_builders.h"
#include "cuda_backend_lnorm_builders.h"
/* 1500 rows: more than the 1024 row blocks of the CUDA forward's first pass.
 * Filled by cb_fill_targets() before the tests run. */
#define CE_MANY 1500
static int64_t ce_many[CE_MANY];

static const cb_case cb_table[] = {
    {.name = "add",
     .op = TG_OP_ADD,
     .fn = b_add,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 4), IN(CB_RAND, 1, 4)}},
    {.name = "add size-1",
     .op = TG_OP_ADD,
     .fn = b_add,
     .nin = 2,
     .in = {IN(CB_RAND, 3, 2, 1, 5), IN(CB_RAND, 2, 3, 1)}},
    {.name = "add transposed",
     .op = TG_OP_ADD,
     .fn = b_add_t,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 5, 3), IN(CB_RAND, 2, 3, 5)}},
    {.name = "add large",
     .op = TG_OP_ADD,
     .fn = b_add,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 300, 257), IN(CB_RAND, 2, 300, 1)}},
    {.name = "sub",
     .op = TG_OP_SUB,
     .fn = b_sub,
     .nin = 2,
     .in = {IN(CB_RAND, 1, 1), IN(CB_RAND, 2, 4, 3)}},
    {.name = "mul",
     .op = TG_OP_MUL,
     .fn = b_mul,
     .nin = 2,
     .in = {IN(CB_RAND, 3, 2, 3, 4), IN(CB_RAND, 3, 2, 1, 4)}},
    {.name = "mul sliced",
     .op = TG_OP_MUL,
     .fn = b_mul_slice,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 4, 8), IN(CB_RAND, 2, 1, 3)}},
    {.name = "div",
     .op = TG_OP_DIV,
     .fn = b_div,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 4), IN(CB_POS, 2, 3, 1)},
     .tol = 1e-4},
    {.name = "eq",
     .op = TG_OP_EQ,
     .fn = b_eq,
     .nin = 2,
     .in = {IN(CB_SMALLINT, 2, 4, 5), IN(CB_SMALLINT, 1, 5)}},
    {.name = "relu_backward",
     .op = TG_OP_RELU_BACKWARD,
     .fn = b_relu_bw,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 4), IN(CB_NOKINK, 2, 3, 4)}},
    {.name = "relu_backward transposed",
     .op = TG_OP_RELU_BACKWARD,
     .fn = b_relu_bw_t,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 4, 3), IN(CB_NOKINK, 1, 4)}},
    {.name = "gelu_backward",
     .op = TG_OP_GELU_BACKWARD,
     .fn = b_gelu_bw,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 4), IN(CB_RAND, 2, 3, 4)}},
    {.name = "gelu_backward transposed",
     .op = TG_OP_GELU_BACKWARD,
     .fn = b_gelu_bw_t,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 4, 3), IN(CB_RAND, 1, 4)}},
    {.name = "clamp_backward",
     .op = TG_OP_CLAMP_BACKWARD,
     .fn = b_clamp_bw,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 4), IN(CB_NOKINK, 2, 3, 4)}},
    {.name = "where",
     .op = TG_OP_WHERE,
     .fn = b_where,
     .nin = 3,
     .in = {IN(CB_COND, 2, 3, 4), IN(CB_RAND, 2, 3, 4), IN(CB_RAND, 1, 4)}},
    {.name = "where broadcast cond",
     .op = TG_OP_WHERE,
     .fn = b_where,
     .nin = 3,
     .in = {IN(CB_COND, 2, 3, 1), IN(CB_RAND, 3, 2, 3, 4), IN(CB_RAND, 0, 0)}},
    {.name = "neg", .op = TG_OP_NEG, .fn = b_neg, .nin = 1, .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "affine",
     .op = TG_OP_AFFINE,
     .fn = b_affine,
     .nin = 1,
     .in = {IN(CB_RAND, 3, 1, 3, 4)}},
    {.name = "pow 2", .op = TG_OP_POW_SCALAR, .fn = b_pow2, .nin = 1, .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "pow 3 transposed",
     .op = TG_OP_POW_SCALAR,
     .fn = b_pow3_t,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 4, 3)}},
    {.name = "pow 0.5",
     .op = TG_OP_POW_SCALAR,
     .fn = b_pow_half,
     .nin = 1,
     .in = {IN(CB_POS, 2, 3, 4)},
     .tol = 1e-4},
    {.name = "pow -1",
     .op = TG_OP_POW_SCALAR,
     .fn = b_pow_m1,
     .nin = 1,
     .in = {IN(CB_POS, 2, 3, 4)},
     .tol = 1e-4},
    {.name = "pow 1.7",
     .op = TG_OP_POW_SCALAR,
     .fn = b_pow_17,
     .nin = 1,
     .in = {IN(CB_POS, 2, 3, 4)},
     .tol = 1e-4},
    {.name = "exp", .op = TG_OP_EXP, .fn = b_exp, .nin = 1, .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "exp sliced",
     .op = TG_OP_EXP,
     .fn = b_exp_slice,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 8)}},
    {.name = "log",
     .op = TG_OP_LOG,
     .fn = b_log,
     .nin = 1,
     .in = {IN(CB_POS, 2, 3, 4)},
     .tol = 1e-4},
    {.name = "sqrt",
     .op = TG_OP_SQRT,
     .fn = b_sqrt,
     .nin = 1,
     .in = {IN(CB_POS, 2, 3, 4)},
     .tol = 1e-4},
    {.name = "abs", .op = TG_OP_ABS, .fn = b_abs, .nin = 1, .in = {IN(CB_NOKINK, 2, 3, 4)}},
    {.name = "erf", .op = TG_OP_ERF, .fn = b_erf, .nin = 1, .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "relu", .op = TG_OP_RELU, .fn = b_relu, .nin = 1, .in = {IN(CB_NOKINK, 2, 3, 4)}},
    {.name = "sigmoid",
     .op = TG_OP_SIGMOID,
     .fn = b_sigmoid,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "tanh transposed",
     .op = TG_OP_TANH,
     .fn = b_tanh_t,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 4, 3)}},
    {.name = "silu", .op = TG_OP_SILU, .fn = b_silu, .nin = 1, .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "gelu", .op = TG_OP_GELU, .fn = b_gelu, .nin = 1, .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "clamp", .op = TG_OP_CLAMP, .fn = b_clamp, .nin = 1, .in = {IN(CB_NOKINK, 2, 3, 4)}},
    {.name = "sign", .op = TG_OP_SIGN, .fn = b_sign, .nin = 1, .in = {IN(CB_NOKINK, 2, 3, 4)}},
    {.name = "sum all", .op = TG_OP_SUM, .fn = b_sum_all, .nin = 1, .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "sum axis 1 keepdim",
     .op = TG_OP_SUM,
     .fn = b_sum_1k,
     .nin = 1,
     .in = {IN(CB_RAND, 3, 2, 3, 4)}},
    {.name = "sum permuted",
     .op = TG_OP_SUM,
     .fn = b_sum_02_t,
     .nin = 1,
     .in = {IN(CB_RAND, 3, 2, 3, 4)}},
    {.name = "sum long rows",
     .op = TG_OP_SUM,
     .fn = b_sum_long,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 1000)}},
    {.name = "mean axis 0",
     .op = TG_OP_MEAN,
     .fn = b_mean_0,
     .nin = 1,
     .in = {IN(CB_RAND, 3, 5, 1, 3)}},
    {.name = "mean long transposed",
     .op = TG_OP_MEAN,
     .fn = b_mean_long_t,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 2, 700)}},
    {.name = "max axis 1", .op = TG_OP_MAX, .fn = b_max_1, .nin = 1, .in = {IN(CB_RAND, 2, 4, 5)}},
    {.name = "max all transposed",
     .op = TG_OP_MAX,
     .fn = b_max_all_t,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "min axis 0 keepdim",
     .op = TG_OP_MIN,
     .fn = b_min_0k,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 4, 5)}},
    {.name = "min long rows",
     .op = TG_OP_MIN,
     .fn = b_min_long,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 2, 600)}},
    {.name = "argmax axis 1",
     .op = TG_OP_ARGMAX,
     .fn = b_argmax_1,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 4, 7)}},
    {.name = "argmax axis 0 keepdim",
     .op = TG_OP_ARGMAX,
     .fn = b_argmax_0k,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 5, 3)}},
    {.name = "matmul",
     .op = TG_OP_MATMUL,
     .fn = b_matmul,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 4), IN(CB_RAND, 2, 4, 5)}},
    {.name = "matmul batched",
     .op = TG_OP_MATMUL,
     .fn = b_matmul,
     .nin = 2,
     .in = {IN(CB_RAND, 3, 2, 3, 4), IN(CB_RAND, 3, 2, 4, 5)}},
    {.name = "matmul batch broadcast",
     .op = TG_OP_MATMUL,
     .fn = b_matmul,
     .nin = 2,
     .in = {IN(CB_RAND, 3, 2, 3, 4), IN(CB_RAND, 2, 4, 5)}},
    {.name = "matmul mixed broadcast",
     .op = TG_OP_MATMUL,
     .fn = b_matmul,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 2, 1, 3, 4), IN(CB_RAND, 4, 1, 3, 4, 2)}},
    {.name = "matmul transposed",
     .op = TG_OP_MATMUL,
     .fn = b_matmul_tt,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 4, 3), IN(CB_RAND, 2, 5, 4)}},
    {.name = "matmul vector",
     .op = TG_OP_MATMUL,
     .fn = b_matmul,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 4), IN(CB_RAND, 1, 4)}},
    {.name = "matmul k=0",
     .op = TG_OP_MATMUL,
     .fn = b_matmul,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 0), IN(CB_RAND, 2, 0, 2)}},
    {.name = "copy transposed",
     .op = TG_OP_COPY,
     .fn = b_copy_t,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "copy permuted",
     .op = TG_OP_COPY,
     .fn = b_copy_perm,
     .nin = 1,
     .in = {IN(CB_RAND, 3, 2, 3, 4)}},
    {.name = "world_sum transposed (one rank)",
     .op = TG_OP_WORLD_SUM,
     .fn = b_world_sum_t,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "reshape transposed",
     .op = TG_OP_RESHAPE,
     .fn = b_reshape_t,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "reshape sliced",
     .op = TG_OP_RESHAPE,
     .fn = b_reshape_slice,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 4)}},
    {.name = "permute",
     .op = TG_OP_PERMUTE,
     .fn = b_permute,
     .nin = 1,
     .in = {IN(CB_RAND, 3, 2, 3, 4)}},
    {.name = "broadcast_to",
     .op = TG_OP_BROADCAST_TO,
     .fn = b_broadcast,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 1)}},
    {.name = "slice", .op = TG_OP_SLICE, .fn = b_slice, .nin = 1, .in = {IN(CB_RAND, 2, 3, 6)}},
    {.name = "slice_scatter",
     .op = TG_OP_SLICE_SCATTER,
     .fn = b_slice_scatter,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 2)}},
    {.name = "slice_scatter axis 0",
     .op = TG_OP_SLICE_SCATTER,
     .fn = b_slice_scatter_0,
     .nin = 1,
     .in = {IN(CB_RAND, 3, 2, 2, 2)}},
    {.name = "concat",
     .op = TG_OP_CONCAT,
     .fn = b_concat,
     .nin = 3,
     .in = {IN(CB_RAND, 2, 3, 2), IN(CB_RAND, 2, 4, 3), IN(CB_RAND, 2, 3, 1)}},
    {.name = "concat axis 0",
     .op = TG_OP_CONCAT,
     .fn = b_concat_0,
     .nin = 2,
     .in = {IN(CB_RAND, 3, 1, 2, 3), IN(CB_RAND, 3, 2, 2, 3)}},
    {.name = "softmax",
     .op = TG_OP_SOFTMAX,
     .fn = b_softmax_1,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 4, 5)}},
    {.name = "softmax transposed",
     .op = TG_OP_SOFTMAX,
     .fn = b_softmax_t,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 3, 6)}},
    {.name = "log_softmax",
     .op = TG_OP_LOG_SOFTMAX,
     .fn = b_log_softmax_1,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 4, 5)}},
    {.name = "log_softmax 3d",
     .op = TG_OP_LOG_SOFTMAX,
     .fn = b_log_softmax_3d,
     .nin = 1,
     .in = {IN(CB_RAND, 3, 2, 5, 3)}},
    {.name = "gather axis 1",
     .op = TG_OP_GATHER,
     .fn = b_gather_1,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 4), IDX(gidx1, 2, 3, 2)}},
    {.name = "gather axis 0",
     .op = TG_OP_GATHER,
     .fn = b_gather_0,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 4), IDX(gidx0, 2, 2, 4)}},
    {.name = "scatter_add axis 1",
     .op = TG_OP_SCATTER_ADD,
     .fn = b_scatter_1,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 2), IDX(sidx1, 2, 3, 2)}},
    {.name = "scatter_add axis 0",
     .op = TG_OP_SCATTER_ADD,
     .fn = b_scatter_0,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 2, 4), IDX(sidx0, 2, 2, 4)}},
    {.name = "cross_entropy",
     .op = TG_OP_CROSS_ENTROPY,
     .fn = b_ce,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 4, 5), IDX(ce_t4, 1, 4)}},
    {.name = "cross_entropy smoothed transposed",
     .op = TG_OP_CROSS_ENTROPY,
     .fn = b_ce_smooth_t,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 5, 4), IDX(ce_t4, 1, 4)}},
    {.name = "cross_entropy long rows",
     .op = TG_OP_CROSS_ENTROPY,
     .fn = b_ce,
     .nin = 2,
     .in = {IN(CB_RAND, 2, 3, 700), IDX(ce_t3, 1, 3)}},
    {.name = "cross_entropy many rows",
     .op = TG_OP_CROSS_ENTROPY,
     .fn = b_ce,
     .nin = 2,
     .in = {IN(CB_RAND, 2, CE_MANY, 3), IDX(ce_many, 1, CE_MANY)}},
    {.name = "cross_entropy_backward",
     .op = TG_OP_CROSS_ENTROPY_BACKWARD,
     .fn = b_ce_bw,
     .nin = 3,
     .in = {IN(CB_RAND, 0, 0), IN(CB_RAND, 2, 4, 5), IDX(ce_t4, 1, 4)}},
    {.name = "cross_entropy_backward long rows transposed",
     .op = TG_OP_CROSS_ENTROPY_BACKWARD,
     .fn = b_ce_bw_t,
     .nin = 3,
     .in = {IN(CB_RAND, 0, 0), IN(CB_RAND, 2, 700, 3), IDX(ce_t3, 1, 3)}},
    {.name = "dropout",
     .op = TG_OP_DROPOUT,
     .fn = b_dropout,
     .nin = 1,
     .in = {IN(CB_RAND, 3, 2, 3, 7)}},
    {.name = "dropout transposed",
     .op = TG_OP_DROPOUT,
     .fn = b_dropout_t,
     .nin = 1,
     .in = {IN(CB_RAND, 2, 9, 5)}},
    {.name = "conv2d bias pad",
     .op = TG_OP_CONV2D,
     .fn = b_conv,
     .nin = 3,
     .in = {IN(CB_RAND, 4, 2, 3, 5, 4), IN(CB_RAND, 4, 4, 3, 3, 3), IN(CB_RAND, 1, 4)},
     .tol = 1e-4},
    {.name = "conv2d 1x1 no pad",
     .op = TG_OP_CONV2D,
     .fn = b_conv_plain,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 1, 2, 3, 3), IN(CB_RAND, 4, 3, 2, 1, 1)},
     .tol = 1e-4},
    {.name = "conv2d stride dilation transposed",
     .op = TG_OP_CONV2D,
     .fn = b_conv_odd_t,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 2, 2, 5, 6), IN(CB_RAND, 4, 3, 2, 2, 3)},
     .tol = 1e-4},
    {.name = "conv2d_backward_input",
     .op = TG_OP_CONV2D_BACKWARD_INPUT,
     .fn = b_conv_bwi,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 2, 4, 5, 4), IN(CB_RAND, 4, 4, 3, 3, 3)},
     .tol = 1e-4},
    {.name = "conv2d_backward_input stride dilation transposed",
     .op = TG_OP_CONV2D_BACKWARD_INPUT,
     .fn = b_conv_bwi_odd,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 2, 3, 7, 3), IN(CB_RAND, 4, 3, 2, 2, 3)},
     .tol = 1e-4},
    {.name = "conv2d_backward_weight",
     .op = TG_OP_CONV2D_BACKWARD_WEIGHT,
     .fn = b_conv_bww,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 2, 3, 5, 4), IN(CB_RAND, 4, 2, 4, 5, 4)},
     .tol = 1e-4},
    {.name = "conv2d_backward_weight stride dilation transposed",
     .op = TG_OP_CONV2D_BACKWARD_WEIGHT,
     .fn = b_conv_bww_odd,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 2, 2, 6, 5), IN(CB_RAND, 4, 2, 3, 7, 3)},
     .tol = 1e-4},
    {.name = "conv2d batch 32 (more samples than workspace slots)",
     .op = TG_OP_CONV2D,
     .fn = b_conv,
     .nin = 3,
     .in = {IN(CB_RAND, 4, 32, 16, 16, 16), IN(CB_RAND, 4, 16, 16, 3, 3), IN(CB_RAND, 1, 16)},
     .tol = 1e-3},
    {.name = "conv2d_backward_input batch 32",
     .op = TG_OP_CONV2D_BACKWARD_INPUT,
     .fn = b_conv_big_bwi,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 32, 16, 16, 16), IN(CB_RAND, 4, 16, 16, 3, 3)},
     .tol = 1e-3},
    {.name = "conv2d_backward_weight batch 32",
     .op = TG_OP_CONV2D_BACKWARD_WEIGHT,
     .fn = b_conv_big_bww,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 32, 16, 16, 16), IN(CB_RAND, 4, 32, 16, 16, 16)},
     .tol = 1e-3},
    {.name = "max_pool2d",
     .op = TG_OP_MAX_POOL2D,
     .fn = b_maxpool,
     .nin = 1,
     .in = {IN(CB_RAND, 4, 2, 3, 4, 6)}},
    {.name = "max_pool2d pad stride transposed",
     .op = TG_OP_MAX_POOL2D,
     .fn = b_maxpool_pad_t,
     .nin = 1,
     .in = {IN(CB_RAND, 4, 2, 2, 5, 7)}},
    {.name = "max_pool2d_indices",
     .op = TG_OP_MAX_POOL2D_INDICES,
     .fn = b_maxpool_idx,
     .nin = 1,
     .in = {IN(CB_RAND, 4, 2, 3, 7, 6)}},
    /* Small integers: windows with ties, where the first maximum wins. */
    {.name = "max_pool2d_indices ties transposed",
     .op = TG_OP_MAX_POOL2D_INDICES,
     .fn = b_maxpool_idx_t,
     .nin = 1,
     .in = {IN(CB_SMALLINT, 4, 2, 2, 6, 5)}},
    /* Small integers in x: windows with ties, where the first maximum takes
     * the gradient. */
    {.name = "max_pool2d_backward 2x2 odd size ties",
     .op = TG_OP_MAX_POOL2D_BACKWARD,
     .fn = b_maxpool_bw,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 2, 3, 3, 4), IN(CB_SMALLINT, 4, 2, 3, 7, 9)}},
    {.name = "max_pool2d_backward 3x3 stride 1 pad 1 transposed g ties",
     .op = TG_OP_MAX_POOL2D_BACKWARD,
     .fn = b_maxpool_bw_ov_t,
     .nin = 2,
     .in = {IN(CB_RAND, 4, 2, 2, 6, 5), IN(CB_SMALLINT, 4, 2, 2, 5, 6)}},
    {.name = "avg_pool2d",
     .op = TG_OP_AVG_POOL2D,
     .fn = b_avgpool,
     .nin = 1,
     .in = {IN(CB_RAND, 4, 2, 3, 4, 6)}},
    {.name = "avg_pool2d pad stride transposed",
     .op = TG_OP_AVG_POOL2D,
     .fn = b_avgpool_pad_t,
     .nin = 1,
     .in = {IN(CB_RAND, 4, 2, 2, 5, 7)}},
    {.name = "avg_pool2d_backward",
     .op = TG_OP_AVG_POOL2D_BACKWARD,
     .fn = b_avgpool_bw,
     .nin = 1,
     .in = {IN(CB_RAND, 4, 2, 3, 4, 3)}},
    {.name = "avg_pool2d_backward transposed",
     .op = TG_OP_AVG_POOL2D_BACKWARD,
     .fn = b_avgpool_bw_t,
     .nin = 1,
     .in = {IN(CB_RAND, 4, 2, 2, 3, 5)}},
    {.name = "batch_norm (N, C, H, W)",
     .op = TG_OP_BATCH_NORM,
     .fn = b_bn,
     .nin = 3,
     .in = {IN(CB_RAND, 4, 3, 5, 4, 6), IN(CB_RAND, 1, 5), IN(CB_RAND, 1, 5)},
     .tol = 1e-4},
    {.name = "batch_norm (N, C) many rows",
     .op = TG_OP_BATCH_NORM,
     .fn = b_bn,
     .nin = 3,
     .in = {IN(CB_RAND, 2, 700, 3), IN(CB_RAND, 1, 3), IN(CB_RAND, 1, 3)},
     .tol = 1e-4},
    {.name = "batch_norm transposed size-1 dims",
     .op = TG_OP_BATCH_NORM,
     .fn = b_bn_t,
     .nin = 3,
     .in = {IN(CB_RAND, 4, 1, 2, 3, 1), IN(CB_RAND, 1, 2), IN(CB_RAND, 1, 2)},
     .tol = 1e-4},
    {.name = "batch_norm_backward",
     .op = TG_OP_BATCH_NORM_BACKWARD,
     .fn = b_bn_bw,
     .nin = 3,
     .in = {IN(CB_RAND, 4, 2, 3, 5, 4), IN(CB_RAND, 4, 2, 3, 5, 4), IN(CB_RAND, 1, 3)},
     .tol = 1e-4},
    {.name = "batch_norm_backward (N, C)",
     .op = TG_OP_BATCH_NORM_BACKWARD,
     .fn = b_bn_bw,
     .nin = 3,
     .in = {IN(CB_RAND, 2, 9, 70), IN(CB_RAND, 2, 9, 70), IN(CB_RAND, 1, 70)},
     .tol = 1e-4},
#include "cuda_backend_ops2_rows.h"
#include "cuda_backend_attn_rows.h"
#include "cuda_backend_lnorm_rows.h"
};
#define CB_NCASES ((int)(sizeof cb_table / sizeof cb_table[0]))

