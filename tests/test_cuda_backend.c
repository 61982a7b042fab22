/*
 * tests/test_cuda_backend.c: every op row on the CUDA backend against the
 * CPU backend, forward and backward.
 *
 * Each case of the table builds one op (through the public API, so the
 * runtime's shape logic and backward rules are the ones a user runs) from
 * fresh random inputs: several shapes, broadcasting, size-1 dims and
 * non-contiguous views (transposes and strided slices made inside the
 * builder). The same host values go to a CPU context and a CUDA context, in
 * f32 and in f64; the outputs must agree within the case's tolerance, and so
 * must the gradients that tg_backward computes on both for a random seed
 * gradient W. Every kernel call on both contexts, forward and backward, goes
 * through a wrapper that gives the kernel an output buffer with guard bytes
 * on both sides and checks that they are untouched.
 *
 * Structural checks run on every machine: each ops.def row has a case here,
 * and the CUDA kernel table (when the library has one) names a kernel for
 * every row that is not a view. Without a CUDA device the numerical part
 * cannot run: the test says "no CUDA device: skipped" and exits 77, which
 * ctest reports as skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tapegrad/nn.h"
#include "tapegrad/optim.h"
#include "tapegrad/rng.h"
#include "tapegrad/runtime.h"

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
};
#define CB_NCASES ((int)(sizeof cb_table / sizeof cb_table[0]))

/* ---- values ---- */

/* splitmix64, so that a failure reproduces from its seed. */
static uint64_t cb_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double cb_unif(uint64_t *s, double lo, double hi) {
    return lo + (hi - lo) * ((double)(cb_next(s) >> 11) * (1.0 / 9007199254740992.0));
}

static int64_t cb_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

static double cb_value(cb_gen g, uint64_t *s) {
    switch (g) {
    case CB_POS:
        return cb_unif(s, 0.5, 2.0);
    case CB_NOKINK: {
        double v;
        do
            v = cb_unif(s, -1.0, 1.0);
        while (fabs(v) < 0.05 || fabs(fabs(v) - 0.5) < 0.05);
        return v;
    }
    case CB_SMALLINT:
        return (double)(cb_next(s) % 3);
    case CB_COND:
        return (double)(cb_next(s) & 1);
    default:
        return cb_unif(s, -1.0, 1.0);
    }
}

/* Host values of one case's inputs, as doubles (indices kept as given). */
typedef struct cb_vals {
    double *v[CB_MAX_IN];
    int64_t n[CB_MAX_IN];
} cb_vals;

static void cb_vals_make(const cb_case *c, uint64_t seed, cb_vals *vs) {
    uint64_t s = seed;
    for (int i = 0; i < c->nin; i++) {
        vs->n[i] = cb_numel(c->in[i].ndim, c->in[i].shape);
        vs->v[i] = calloc((size_t)vs->n[i] + 1, sizeof(double));
        assert_non_null(vs->v[i]);
        for (int64_t k = 0; k < vs->n[i]; k++)
            vs->v[i][k] =
                c->in[i].gen == CB_INDEX ? (double)c->in[i].idx[k] : cb_value(c->in[i].gen, &s);
    }
}

static void cb_vals_free(const cb_case *c, cb_vals *vs) {
    for (int i = 0; i < c->nin; i++)
        free(vs->v[i]);
}

static bool cb_is_int(cb_gen g) { return g == CB_INDEX || g == CB_COND; }

/* A tensor of dtype dt (i64 for index and condition inputs) with values v. */
static tg_tensor *cb_tensor(tg_ctx *ctx, tg_dtype dt, const cb_arg *a, const double *v) {
    const int64_t n = cb_numel(a->ndim, a->shape);
    const tg_dtype t = cb_is_int(a->gen) ? TG_I64 : dt;
    void *buf = calloc((size_t)n + 1, 8);
    assert_non_null(buf);
    for (int64_t k = 0; k < n; k++) {
        if (t == TG_F32)
            ((float *)buf)[k] = (float)v[k];
        else if (t == TG_F64)
            ((double *)buf)[k] = v[k];
        else
            ((int64_t *)buf)[k] = (int64_t)v[k];
    }
    tg_tensor *x = tg_from_data(ctx, t, a->ndim, a->shape, buf);
    free(buf);
    return x;
}

/* Reads any tensor (views included) as doubles; n elements. */
static bool cb_read(tg_ctx *ctx, const tg_tensor *t, double *out) {
    const int64_t n = tg_numel(t);
    const size_t es = tg_dtype_size(t->dtype);
    void *buf = malloc((size_t)n * es + 8);
    assert_non_null(buf);
    bool ok = tg_to_host(ctx, t, buf, (size_t)n * es) == TG_OK;
    for (int64_t k = 0; ok && k < n; k++) {
        switch (t->dtype) {
        case TG_F32:
            out[k] = ((float *)buf)[k];
            break;
        case TG_F64:
            out[k] = ((double *)buf)[k];
            break;
        case TG_I64:
            out[k] = (double)((int64_t *)buf)[k];
            break;
        case TG_I32:
            out[k] = ((int32_t *)buf)[k];
            break;
        default:
            out[k] = ((uint8_t *)buf)[k];
            break;
        }
    }
    free(buf);
    return ok;
}

/* ---- running one case on one context ---- */

/* What one context produced for a case. */
typedef struct cb_run {
    int64_t nout;
    int out_ndim;
    int64_t out_shape[TG_MAX_DIMS];
    tg_dtype out_dtype;
    double *out;
    double *grad[CB_MAX_IN]; /* NULL for inputs without a gradient */
} cb_run;

static void cb_run_free(cb_run *r) {
    free(r->out);
    for (int i = 0; i < CB_MAX_IN; i++)
        free(r->grad[i]);
    memset(r, 0, sizeof *r);
}

static bool cb_close(double x, double y, double tol) {
    if (isnan(x) || isnan(y))
        return isnan(x) && isnan(y);
    return fabs(x - y) <= tol + tol * fabs(y);
}

/*
 * Guard bytes: every kernel call of a context goes through cb_guarded_call,
 * which hands the kernel a device buffer with CB_GUARD bytes of a known
 * pattern on both sides of the output, checks the pattern afterwards and
 * copies the result to the real output. So every kernel run during a case,
 * forward and backward, is checked for writes outside its output.
 */
#define CB_GUARD 256
#define CB_GUARD_BYTE 0xA5

typedef struct cb_guard {
    const tg_backend *real;
    tg_backend wrapped;
    int64_t calls;
    int failures;
    char msg[256];
} cb_guard;

static cb_guard cb_guards[TG_DEVICE_COUNT];

static tg_status cb_guarded_call(cb_guard *g, void *state, const tg_kargs *a) {
    const tg_backend *be = g->real;
    const size_t nbytes = (size_t)cb_numel(a->out.ndim, a->out.shape) * tg_dtype_size(a->out.dtype);
    const size_t total = CB_GUARD + nbytes + CB_GUARD;
    unsigned char *host = malloc(total);
    char *dev = be->alloc(state, total);
    if (!host || !dev) {
        free(host);
        if (dev)
            be->free(state, dev);
        return TG_ERR_NOMEM;
    }
    memset(host, CB_GUARD_BYTE, total);
    tg_status st = be->copy_h2d(state, dev, host, total);
    tg_kargs b = *a;
    b.out.data = dev + CB_GUARD;
    if (st == TG_OK)
        st = be->kernels[a->op](state, &b);
    if (st == TG_OK)
        st = be->synchronize(state);
    if (st == TG_OK)
        st = be->copy_d2h(state, host, dev, total);
    if (st == TG_OK && nbytes)
        st = be->copy_d2d(state, a->out.data, dev + CB_GUARD, nbytes);
    g->calls++;
    for (size_t i = 0; st == TG_OK && i < CB_GUARD; i++) {
        if (host[i] != CB_GUARD_BYTE || host[CB_GUARD + nbytes + i] != CB_GUARD_BYTE) {
            if (g->failures++ == 0)
                snprintf(g->msg, sizeof g->msg, "%s kernel %s wrote %s its output (guard byte %zu)",
                         be->name, tg_op_name(a->op), host[i] != CB_GUARD_BYTE ? "before" : "after",
                         i);
            break;
        }
    }
    be->free(state, dev);
    free(host);
    return st;
}

static tg_status cb_guarded_cpu(void *state, const tg_kargs *a) {
    return cb_guarded_call(&cb_guards[TG_DEVICE_CPU], state, a);
}

static tg_status cb_guarded_cuda(void *state, const tg_kargs *a) {
    return cb_guarded_call(&cb_guards[TG_DEVICE_CUDA], state, a);
}

/* Routes every kernel of ctx through the guard; NULL rows stay NULL. */
static void cb_guard_install(tg_ctx *ctx) {
    cb_guard *g = &cb_guards[ctx->be->device];
    g->real = ctx->be;
    g->wrapped = *ctx->be;
    for (int op = 0; op < TG_OP_COUNT; op++) {
        if (g->wrapped.kernels[op])
            g->wrapped.kernels[op] =
                ctx->be->device == TG_DEVICE_CUDA ? cb_guarded_cuda : cb_guarded_cpu;
    }
    ctx->be = &g->wrapped;
}

static void cb_execute(tg_ctx *ctx, const cb_case *c, const cb_vals *vs, tg_dtype dt, uint64_t seed,
                       cb_run *r) {
    tg_tensor *in[CB_MAX_IN] = {0};
    const bool diff = (tg_op_flags((tg_op)c->op) & TG_OPF_DIFF) != 0;
    for (int i = 0; i < c->nin; i++) {
        in[i] = cb_tensor(ctx, dt, &c->in[i], vs->v[i]);
        if (!in[i])
            fail_msg("%s: making input %d: %s", c->name, i, tg_ctx_error(ctx));
        if (diff && !cb_is_int(c->in[i].gen) && c->in[i].gen != CB_SMALLINT)
            assert_int_equal(tg_set_requires_grad(ctx, in[i], true), TG_OK);
    }
    tg_tensor *out = c->fn(ctx, in);
    if (!out)
        fail_msg("%s (%s, %s): %s", c->name, tg_dtype_name(dt), ctx->be->name, tg_ctx_error(ctx));
    r->nout = tg_numel(out);
    r->out_ndim = out->ndim;
    memcpy(r->out_shape, out->shape, sizeof r->out_shape);
    r->out_dtype = out->dtype;
    r->out = calloc((size_t)r->nout + 1, sizeof(double));
    assert_non_null(r->out);
    if (!cb_read(ctx, out, r->out))
        fail_msg("%s: reading the output: %s", c->name, tg_ctx_error(ctx));
    /* A row without a backward rule never makes an output that needs one. */
    if (!diff)
        assert_false(out->requires_grad);
    if (!diff || !out->requires_grad || r->nout == 0)
        return;
    /* The seed gradient W: the same values on both contexts. */
    double *w = malloc((size_t)r->nout * sizeof(double));
    assert_non_null(w);
    uint64_t s = seed ^ 0x5EEDull;
    for (int64_t k = 0; k < r->nout; k++)
        w[k] = cb_unif(&s, -1.0, 1.0);
    cb_arg wa = {.gen = CB_RAND, .ndim = out->ndim};
    memcpy(wa.shape, out->shape, sizeof wa.shape);
    tg_tensor *W = cb_tensor(ctx, dt, &wa, w);
    free(w);
    assert_non_null(W);
    if (tg_backward(ctx, out, W, 0) != TG_OK)
        fail_msg("%s (%s, %s): backward: %s", c->name, tg_dtype_name(dt), ctx->be->name,
                 tg_ctx_error(ctx));
    for (int i = 0; i < c->nin; i++) {
        if (!in[i]->requires_grad || !in[i]->grad || vs->n[i] == 0)
            continue;
        r->grad[i] = calloc((size_t)vs->n[i] + 1, sizeof(double));
        assert_non_null(r->grad[i]);
        if (!cb_read(ctx, in[i]->grad, r->grad[i]))
            fail_msg("%s: reading grad %d: %s", c->name, i, tg_ctx_error(ctx));
    }
}

/* ---- the tests ---- */

typedef struct cb_env {
    tg_ctx *cpu, *cuda;
} cb_env;

static void cb_compare(const cb_case *c, tg_dtype dt, const cb_run *cpu, const cb_run *gpu,
                       const cb_vals *vs, double tol) {
    assert_int_equal(cpu->out_dtype, gpu->out_dtype);
    assert_int_equal(cpu->out_ndim, gpu->out_ndim);
    assert_memory_equal(cpu->out_shape, gpu->out_shape, sizeof cpu->out_shape);
    for (int64_t k = 0; k < cpu->nout; k++) {
        if (!cb_close(gpu->out[k], cpu->out[k], tol))
            fail_msg("%s (%s): output %lld: cuda %.12g, cpu %.12g", c->name, tg_dtype_name(dt),
                     (long long)k, gpu->out[k], cpu->out[k]);
    }
    for (int i = 0; i < c->nin; i++) {
        if ((cpu->grad[i] == NULL) != (gpu->grad[i] == NULL))
            fail_msg("%s (%s): input %d has a gradient on one backend only", c->name,
                     tg_dtype_name(dt), i);
        for (int64_t k = 0; cpu->grad[i] && k < vs->n[i]; k++) {
            if (!cb_close(gpu->grad[i][k], cpu->grad[i][k], tol))
                fail_msg("%s (%s): grad of input %d at %lld: cuda %.12g, cpu %.12g", c->name,
                         tg_dtype_name(dt), i, (long long)k, gpu->grad[i][k], cpu->grad[i][k]);
        }
    }
}

static void test_every_case(void **state) {
    cb_env *env = *state;
    static const tg_dtype dts[2] = {TG_F32, TG_F64};
    for (int ci = 0; ci < CB_NCASES; ci++) {
        const cb_case *c = &cb_table[ci];
        for (int di = 0; di < 2; di++) {
            const double tol = dts[di] == TG_F64 ? CB_TOL_F64 : (c->tol > 0 ? c->tol : CB_TOL_F32);
            /* Two seeds: fresh random values, the same on both backends. */
            for (uint64_t rep = 0; rep < 2; rep++) {
                const uint64_t seed = 1000003ull * (uint64_t)(ci + 1) + 7919ull * rep + di;
                cb_vals vs;
                cb_run rc = {0}, rg = {0};
                cb_vals_make(c, seed, &vs);
                cb_execute(env->cpu, c, &vs, dts[di], seed, &rc);
                cb_execute(env->cuda, c, &vs, dts[di], seed, &rg);
                cb_compare(c, dts[di], &rc, &rg, &vs, tol);
                for (int d = 0; d < TG_DEVICE_COUNT; d++) {
                    if (cb_guards[d].failures)
                        fail_msg("%s (%s): %s", c->name, tg_dtype_name(dts[di]), cb_guards[d].msg);
                }
                cb_run_free(&rc);
                cb_run_free(&rg);
                cb_vals_free(c, &vs);
                tg_step_reset(env->cpu);
                tg_step_reset(env->cuda);
            }
        }
    }
    /* The guard saw the kernels: a wrapper that was bypassed checks nothing. */
    assert_true(cb_guards[TG_DEVICE_CUDA].calls > CB_NCASES);
}

/* A bad index is reported by both backends with the same position and value. */
static void test_bad_index_reported(void **state) {
    cb_env *env = *state;
    static const int64_t bad[6] = {0, 1, 2, 9, 1, -3};
    char msg[2][512];
    tg_ctx *ctxs[2] = {env->cpu, env->cuda};
    for (int b = 0; b < 2; b++) {
        tg_ctx *ctx = ctxs[b];
        const cb_arg xa = IN(CB_RAND, 2, 3, 4), ia = IDX(bad, 2, 3, 2);
        double xv[12] = {0}, iv[6];
        for (int k = 0; k < 6; k++)
            iv[k] = (double)bad[k];
        tg_tensor *x = cb_tensor(ctx, TG_F32, &xa, xv);
        tg_tensor *idx = cb_tensor(ctx, TG_F32, &ia, iv);
        assert_null(tg_gather(ctx, x, 1, idx));
        assert_int_equal(tg_ctx_status(ctx), TG_ERR_INVALID);
        const char *e = tg_ctx_error(ctx);
        /* Drop the backend's name so that the rest can be compared. */
        const char *rest = strstr(e, "index 9");
        assert_non_null(rest);
        snprintf(msg[b], sizeof msg[b], "%s", rest);
        tg_ctx_clear_error(ctx);
        tg_step_reset(ctx);
    }
    assert_string_equal(msg[0], msg[1]);
    assert_non_null(strstr(msg[1], "position (1, 1)"));
}

/* The in-place helpers (gradient accumulation, optimizers) and copies. */
static void test_inplace_helpers(void **state) {
    cb_env *env = *state;
    const int64_t shape[1] = {1000};
    double res[2][1000];
    tg_ctx *ctxs[2] = {env->cpu, env->cuda};
    for (int b = 0; b < 2; b++) {
        tg_ctx *ctx = ctxs[b];
        tg_tensor *p = tg_persistent(ctx, TG_F32, 1, shape, "p");
        tg_tensor *q = tg_persistent(ctx, TG_F32, 1, shape, "q");
        assert_non_null(p);
        assert_non_null(q);
        float v[1000];
        for (int k = 0; k < 1000; k++)
            v[k] = (float)k * 0.25f - 7.0f;
        assert_int_equal(tg_copy_from_host(ctx, q, v, sizeof v), TG_OK);
        assert_int_equal(tg_fill_(ctx, p, 1.5), TG_OK);
        assert_int_equal(tg_axpy_(ctx, p, -2.0, q), TG_OK);
        assert_int_equal(tg_mul_scalar_(ctx, p, 0.5), TG_OK);
        assert_true(cb_read(ctx, p, res[b]));
        for (int k = 0; k < 1000; k++)
            assert_true(cb_close(res[b][k], 0.5 * (1.5 - 2.0 * v[k]), 1e-6));
    }
    assert_memory_equal(res[0], res[1], sizeof res[0]);
}

/* The CUDA dropout mask against one computed here from tg_philox4x32: an
 * element is kept, and scaled by 1 / (1 - p), exactly when word i % 4 of
 * block counter + i / 4 is at least p as a fraction of 2^32. */
static void test_dropout_mask(void **state) {
    cb_env *env = *state;
    enum { N = 1001 };
    const double p = 0.25;
    float ones[N], got[N];
    for (int k = 0; k < N; k++)
        ones[k] = 1.0f;
    tg_ctx *ctx = env->cuda;
    tg_tensor *x = tg_from_data(ctx, TG_F32, 1, (const int64_t[]){N}, ones);
    assert_non_null(x);
    tg_rng r = {.key = 0xDEADBEEFCAFEF00Dull, .counter = 0xFFFFFFF0ull};
    const tg_rng r0 = r;
    tg_tensor *y = tg_dropout(ctx, x, p, true, &r);
    assert_non_null(y);
    assert_int_equal(tg_to_host(ctx, y, got, sizeof got), TG_OK);
    assert_true(r.counter == r0.counter + (N + 3) / 4);
    int kept = 0;
    for (int k = 0; k < N; k++) {
        uint32_t w[4];
        tg_philox4x32(r0.key, r0.counter + (uint64_t)(k / 4), w);
        const float want = tg_u32_to_unit(w[k % 4]) >= p ? (float)(1.0 / (1.0 - p)) : 0.0f;
        if (got[k] != want)
            fail_msg("dropout element %d: cuda %g, expected %g", k, got[k], want);
        kept += want != 0.0f;
    }
    /* About 3/4 kept: a mask of all ones or all zeros would be a defect. */
    assert_true(kept > N / 2 && kept < N);
    tg_step_reset(ctx);
}

/* A bad cross-entropy target is reported by both backends in the same words. */
static void test_bad_target_reported(void **state) {
    cb_env *env = *state;
    static const int64_t bad[4] = {1, 0, 7, 5};
    char msg[2][512];
    tg_ctx *ctxs[2] = {env->cpu, env->cuda};
    for (int b = 0; b < 2; b++) {
        tg_ctx *ctx = ctxs[b];
        const cb_arg xa = IN(CB_RAND, 2, 4, 5), ta = IDX(bad, 1, 4);
        double xv[20] = {0}, tv[4];
        for (int k = 0; k < 4; k++)
            tv[k] = (double)bad[k];
        tg_tensor *x = cb_tensor(ctx, TG_F32, &xa, xv);
        tg_tensor *t = cb_tensor(ctx, TG_F32, &ta, tv);
        assert_null(tg_cross_entropy(ctx, x, t, 0.0));
        assert_int_equal(tg_ctx_status(ctx), TG_ERR_INVALID);
        const char *rest = strstr(tg_ctx_error(ctx), "target 7 of row 2");
        assert_non_null(rest);
        snprintf(msg[b], sizeof msg[b], "%s", rest);
        tg_ctx_clear_error(ctx);
        tg_step_reset(ctx);
    }
    assert_string_equal(msg[0], msg[1]);
}

/*
 * The optimizers on the CUDA backend's fused update against the CPU's host
 * loops (which test_optim checks against PyTorch): the same parameters and
 * gradients for four steps, where the second parameter has no gradient in
 * step 1 (so its own step count falls behind), then every parameter and
 * every state tensor compared. The kernels repeat the host's operations with
 * unfused roundings, so the two should agree far inside the tolerance.
 */
#define OPT_STEPS 4
#define OPT_NP 2

static void opt_run(tg_ctx *ctx, const tg_optim_config *cfg, tg_dtype dt, uint64_t seed,
                    double *out, int64_t *nout) {
    static const int64_t shp[OPT_NP][2] = {{37, 1}, {5, 300}};
    static const char *const names[OPT_NP] = {"w", "b"};
    const bool was = tg_set_grad_enabled(ctx, false);
    tg_tensor *ps[OPT_NP], *gs[OPT_NP];
    uint64_t s = seed;
    for (int i = 0; i < OPT_NP; i++) {
        const cb_arg pa = IN(CB_RAND, 2, shp[i][0], shp[i][1]);
        double v[1500];
        ps[i] = tg_param(ctx, dt, 2, shp[i], names[i]);
        gs[i] = tg_persistent(ctx, dt, 2, shp[i], "grad");
        assert_non_null(ps[i]);
        assert_non_null(gs[i]);
        for (int64_t k = 0; k < shp[i][0] * shp[i][1]; k++)
            v[k] = cb_unif(&s, -1.0, 1.0);
        tg_tensor *src = cb_tensor(ctx, dt, &pa, v);
        assert_non_null(src);
        assert_int_equal(tg_copy_(ctx, ps[i], src), TG_OK);
    }
    tg_optim *opt = NULL;
    if (tg_optim_new(ctx, cfg, OPT_NP, ps, &opt) != TG_OK)
        fail_msg("tg_optim_new on %s: %s", ctx->be->name, tg_ctx_error(ctx));
    for (int step = 0; step < OPT_STEPS; step++) {
        for (int i = 0; i < OPT_NP; i++) {
            const cb_arg ga = IN(CB_RAND, 2, shp[i][0], shp[i][1]);
            double v[1500];
            for (int64_t k = 0; k < shp[i][0] * shp[i][1]; k++)
                v[k] = cb_unif(&s, -1.0, 1.0);
            tg_tensor *src = cb_tensor(ctx, dt, &ga, v);
            assert_non_null(src);
            assert_int_equal(tg_copy_(ctx, gs[i], src), TG_OK);
            ps[i]->grad = i == 1 && step == 1 ? NULL : gs[i];
        }
        if (tg_optim_step(ctx, opt, 0.05 * (step + 1)) != TG_OK)
            fail_msg("optim step on %s: %s", ctx->be->name, tg_ctx_error(ctx));
        tg_step_reset(ctx);
    }
    int64_t n = 0;
    for (int i = 0; i < OPT_NP; i++) {
        assert_true(cb_read(ctx, ps[i], out + n));
        n += tg_numel(ps[i]);
    }
    tg_tensor *st[8];
    const int ns = tg_optim_state(opt, st, 8);
    assert_true(ns <= 8);
    for (int k = 0; k < ns; k++) {
        assert_true(cb_read(ctx, st[k], out + n));
        n += tg_numel(st[k]);
    }
    *nout = n;
    tg_optim_free(opt);
    tg_set_grad_enabled(ctx, was);
}

static void test_optim_matches_cpu(void **state) {
    cb_env *env = *state;
    tg_optim_config cfgs[5] = {
        tg_optim_defaults(TG_OPTIM_SGD), tg_optim_defaults(TG_OPTIM_SGD),
        tg_optim_defaults(TG_OPTIM_SGD), tg_optim_defaults(TG_OPTIM_ADAM),
        tg_optim_defaults(TG_OPTIM_ADAMW),
    };
    cfgs[1].momentum = 0.9, cfgs[1].dampening = 0.1, cfgs[1].weight_decay = 0.01;
    cfgs[2].momentum = 0.8, cfgs[2].nesterov = true, cfgs[2].weight_decay = 0.05;
    cfgs[3].weight_decay = 0.02;
    cfgs[4].weight_decay = 0.1, cfgs[4].beta1 = 0.8;
    /* Parameters, momentum buffers or both moments, and step counts. */
    enum { MAXV = 3 * (37 + 1500) + 2 * OPT_NP };
    static double rc[MAXV], rg[MAXV];
    for (int c = 0; c < 5; c++) {
        for (int di = 0; di < 2; di++) {
            const tg_dtype dt = di ? TG_F64 : TG_F32;
            const double tol = di ? 1e-12 : 1e-6;
            int64_t nc = 0, ng = 0;
            opt_run(env->cpu, &cfgs[c], dt, 77 + (uint64_t)c, rc, &nc);
            opt_run(env->cuda, &cfgs[c], dt, 77 + (uint64_t)c, rg, &ng);
            assert_int_equal(nc, ng);
            for (int64_t k = 0; k < nc; k++) {
                if (!cb_close(rg[k], rc[k], tol))
                    fail_msg("optim config %d (%s): value %lld: cuda %.12g, cpu %.12g", c,
                             tg_dtype_name(dt), (long long)k, rg[k], rc[k]);
            }
        }
    }
}

/* ---- structural checks, which need no device ---- */

/* The host instance of the CUDA backend's Philox port (cuda_loss.cu). */
#ifdef TG_HAVE_CUDA
void tg__cuda_philox4x32_host(uint64_t key, uint64_t counter, uint32_t out[4]);
#endif

static int check_structure(void) {
    int bad = 0;
    const tg_backend *be = tg_backend_cuda();
    for (int op = 0; op < TG_OP_COUNT; op++) {
        bool covered = false;
        for (int ci = 0; ci < CB_NCASES && !covered; ci++)
            covered = cb_table[ci].op == op;
        if (!covered) {
            printf("op row %s has no case in test_cuda_backend.c\n", tg_op_name((tg_op)op));
            bad++;
        }
    }
    for (int op = 0; be && op < TG_OP_COUNT; op++) {
        const bool view = (tg_op_flags((tg_op)op) & TG_OPF_VIEW) != 0;
        if (view != (be->kernels[op] == NULL)) {
            printf("op row %s: the cuda table has %s kernel\n", tg_op_name((tg_op)op),
                   view ? "a (view row)" : "no");
            bad++;
        }
    }
#ifdef TG_HAVE_CUDA
    /* Dropout masks must be the CPU's bit for bit: the CUDA port of Philox,
     * run on the host, against tg_philox4x32 over keys and counters that
     * carry across the 32-bit halves. */
    uint64_t s = 99;
    for (int k = 0; k < 2000; k++) {
        const uint64_t key = k < 4 ? (uint64_t)k * 0xFFFFFFFFull : cb_next(&s);
        const uint64_t ctr = k % 3 == 0 ? 0xFFFFFFFFull + (uint64_t)(k % 7) : cb_next(&s);
        uint32_t want[4], got[4];
        tg_philox4x32(key, ctr, want);
        tg__cuda_philox4x32_host(key, ctr, got);
        if (memcmp(want, got, sizeof want) != 0) {
            printf("cuda philox differs from tg_philox4x32 at key %llx counter %llx\n",
                   (unsigned long long)key, (unsigned long long)ctr);
            bad++;
            break;
        }
    }
#endif
    return bad;
}

static int cb_setup(void **state) {
    static cb_env env;
    tg_ctx_config cpu = {.device = TG_DEVICE_CPU, .threads = 1};
    tg_ctx_config cuda = {.device = TG_DEVICE_CUDA};
    if (tg_ctx_new(&cpu, &env.cpu) != TG_OK)
        return -1;
    if (tg_ctx_new(&cuda, &env.cuda) != TG_OK) {
        printf("cuda context: %s\n", tg_last_init_error());
        tg_ctx_free(env.cpu);
        return -1;
    }
    cb_guard_install(env.cpu);
    cb_guard_install(env.cuda);
    *state = &env;
    return 0;
}

static int cb_teardown(void **state) {
    cb_env *env = *state;
    tg_ctx_free(env->cuda);
    tg_ctx_free(env->cpu);
    return 0;
}

static void cb_fill_targets(void) {
    for (int k = 0; k < CE_MANY; k++)
        ce_many[k] = (k * 7 + k / 5) % 3;
}

int main(void) {
    cb_fill_targets();
    if (check_structure() != 0)
        return 1;
    if (!tg_backend_cuda() || tg_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_case),
        cmocka_unit_test(test_bad_index_reported),
        cmocka_unit_test(test_inplace_helpers),
        cmocka_unit_test(test_dropout_mask),
        cmocka_unit_test(test_bad_target_reported),
        cmocka_unit_test(test_optim_matches_cpu),
    };
    return cmocka_run_group_tests(tests, cb_setup, cb_teardown);
}
