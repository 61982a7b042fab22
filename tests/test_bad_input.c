/*
 * Bad input: every op and fallible call must refuse garbage with a status
 * and a message that names it, never crash or read out of bounds. The
 * sanitizer build runs this file, so an out-of-bounds access on any of these
 * paths fails the suite even when the status is right.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tapegrad/runtime.h"

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define AX(...) ((const int[]){__VA_ARGS__})
#define TS(...) ((tg_tensor *const[]){__VA_ARGS__})

/* Mismatches seen by the current test. The list-style tests report every
 * mismatch (print_error) and fail once at their end, so one run shows all
 * of them rather than the first. */
static int soft_failures;

#define END_CHECKS() assert_int_equal(soft_failures, 0)

static int setup_ctx(void **state) {
    soft_failures = 0;
    tg_ctx *ctx = NULL;
    if (tg_ctx_new(NULL, &ctx) != TG_OK || !ctx) {
        print_error("tg_ctx_new failed: %s\n", tg_last_init_error());
        return -1;
    }
    *state = ctx;
    return 0;
}

static int teardown_ctx(void **state) {
    tg_ctx_free(*state);
    return 0;
}

static const char *errmsg(tg_ctx *ctx) {
    const char *e = tg_ctx_error(ctx);
    return e ? e : "";
}

static tg_tensor *f64(tg_ctx *ctx, int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = 0.25 * (double)(i + 1);
    tg_tensor *t = tg_from_data(ctx, TG_F64, ndim, shape, v);
    free(v);
    if (!t)
        fail_msg("making a test tensor failed: %s", errmsg(ctx));
    return t;
}

static tg_tensor *i64(tg_ctx *ctx, int ndim, const int64_t *shape, const int64_t *v) {
    tg_tensor *t = tg_from_data(ctx, TG_I64, ndim, shape, v);
    if (!t)
        fail_msg("making an index tensor failed: %s", errmsg(ctx));
    return t;
}

/* The call failed with `want` (or with any error when want is TG_OK), and
 * the message names `name` (any of several names separated by '|', for APIs
 * built on another op). Records a mismatch and clears the error. */
static void expect_err_(tg_ctx *ctx, bool failed, tg_status want, const char *name,
                        const char *what) {
    tg_status got = tg_ctx_status(ctx);
    const char *e = errmsg(ctx);
    bool named = name == NULL;
    if (name) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", name);
        for (char *tok = strtok(buf, "|"); tok && !named; tok = strtok(NULL, "|"))
            named = strstr(e, tok) != NULL;
    }
    if (!failed) {
        print_error("%s: should have failed with %s\n", what, tg_status_str(want));
        soft_failures++;
    } else if (want != TG_OK ? got != want : got == TG_OK) {
        print_error("%s: status %s, expected %s (message '%s')\n", what, tg_status_str(got),
                    want != TG_OK ? tg_status_str(want) : "an error", e);
        soft_failures++;
    } else if (strlen(e) == 0) {
        print_error("%s: empty error message\n", what);
        soft_failures++;
    } else if (!named) {
        print_error("%s: message '%s' does not name '%s'\n", what, e, name);
        soft_failures++;
    }
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_ctx_status(ctx), TG_OK);
}

/* An op returning a tensor: NULL means failure. */
#define EXPECT_NULL(ctx, call, want, name) expect_err_((ctx), (call) == NULL, (want), (name), #call)
/* A call returning a status. */
#define EXPECT_ST(ctx, call, want, name)                                                        \
    do {                                                                                        \
        tg_status st_ = (call);                                                                 \
        if (st_ != tg_ctx_status(ctx)) {                                                        \
            print_error("%s returned %s but the context holds %s\n", #call, tg_status_str(st_), \
                        tg_status_str(tg_ctx_status(ctx)));                                     \
            soft_failures++;                                                                    \
        }                                                                                       \
        expect_err_((ctx), st_ != TG_OK, (want), (name), #call);                                \
    } while (0)

/* ------------------------------------------------------------------------ */
/* NULL operands                                                            */
/* ------------------------------------------------------------------------ */

/* Each case calls one API with a NULL operand in one position and valid
 * operands elsewhere (v: f64 (2,3); ix: i64 (2,3) of valid indices). */
typedef tg_tensor *(*null_fn)(tg_ctx *ctx, tg_tensor *v, tg_tensor *ix);
typedef struct null_case {
    const char *what;
    const char *name;
    null_fn fn;
    /* TG_OK: any error will do (a NULL shape or axis array is as much a
     * shape error as an invalid argument) */
    tg_status want;
} null_case;

#define NC(id, nm, expr)                                                  \
    static tg_tensor *nc_##id(tg_ctx *ctx, tg_tensor *v, tg_tensor *ix) { \
        (void)v;                                                          \
        (void)ix;                                                         \
        return (expr);                                                    \
    }
NC(add_a, "add", tg_add(ctx, NULL, v))
NC(add_b, "add", tg_add(ctx, v, NULL))
NC(sub_a, "sub", tg_sub(ctx, NULL, v))
NC(sub_b, "sub", tg_sub(ctx, v, NULL))
NC(mul_a, "mul", tg_mul(ctx, NULL, v))
NC(mul_b, "mul", tg_mul(ctx, v, NULL))
NC(div_a, "div", tg_div(ctx, NULL, v))
NC(div_b, "div", tg_div(ctx, v, NULL))
NC(eq_a, "eq", tg_eq(ctx, NULL, v))
NC(eq_b, "eq", tg_eq(ctx, v, NULL))
NC(where_c, "where", tg_where(ctx, NULL, v, v))
NC(where_a, "where", tg_where(ctx, v, NULL, v))
NC(where_b, "where", tg_where(ctx, v, v, NULL))
NC(neg, "neg", tg_neg(ctx, NULL))
NC(affine, "affine", tg_affine(ctx, NULL, 2.0, 1.0))
NC(add_scalar, "add_scalar|affine", tg_add_scalar(ctx, NULL, 1.0))
NC(mul_scalar, "mul_scalar|affine", tg_mul_scalar(ctx, NULL, 2.0))
NC(pow_scalar, "pow_scalar", tg_pow_scalar(ctx, NULL, 2.0))
NC(exp, "exp", tg_exp(ctx, NULL))
NC(log, "log", tg_log(ctx, NULL))
NC(sqrt, "sqrt", tg_sqrt(ctx, NULL))
NC(abs, "abs", tg_abs(ctx, NULL))
NC(erf, "erf", tg_erf(ctx, NULL))
NC(relu, "relu", tg_relu(ctx, NULL))
NC(sigmoid, "sigmoid", tg_sigmoid(ctx, NULL))
NC(tanh, "tanh", tg_tanh(ctx, NULL))
NC(silu, "silu", tg_silu(ctx, NULL))
NC(gelu, "gelu", tg_gelu(ctx, NULL))
NC(clamp, "clamp", tg_clamp(ctx, NULL, -1.0, 1.0))
NC(sign, "sign", tg_sign(ctx, NULL))
NC(relu_backward_g, "relu_backward", tg_relu_backward(ctx, NULL, v))
NC(relu_backward_x, "relu_backward", tg_relu_backward(ctx, v, NULL))
NC(gelu_backward_g, "gelu_backward", tg_gelu_backward(ctx, NULL, v))
NC(gelu_backward_x, "gelu_backward", tg_gelu_backward(ctx, v, NULL))
NC(clamp_backward_g, "clamp_backward", tg_clamp_backward(ctx, NULL, v, -1.0, 1.0))
NC(clamp_backward_x, "clamp_backward", tg_clamp_backward(ctx, v, NULL, -1.0, 1.0))
NC(sum, "sum", tg_sum(ctx, NULL, 0, NULL, false))
NC(mean, "mean", tg_mean(ctx, NULL, 1, AX(0), true))
NC(max, "max", tg_max(ctx, NULL, 0, NULL, false))
NC(min, "min", tg_min(ctx, NULL, 0, NULL, false))
NC(argmax, "argmax", tg_argmax(ctx, NULL, 0, false))
NC(sum_to, "sum_to", tg_sum_to(ctx, NULL, 1, SH(3)))
NC(matmul_a, "matmul", tg_matmul(ctx, NULL, v))
NC(matmul_b, "matmul", tg_matmul(ctx, v, NULL))
NC(copy, "copy", tg_copy(ctx, NULL))
NC(contiguous, "contiguous|copy", tg_contiguous(ctx, NULL))
NC(reshape, "reshape", tg_reshape(ctx, NULL, 1, SH(6)))
NC(permute, "permute", tg_permute(ctx, NULL, AX(1, 0)))
NC(transpose, "transpose|permute", tg_transpose(ctx, NULL, 0, 1))
NC(broadcast_to, "broadcast_to", tg_broadcast_to(ctx, NULL, 2, SH(2, 3)))
NC(slice, "slice", tg_slice(ctx, NULL, 0, 0, 1, 1))
NC(slice_scatter, "slice_scatter", tg_slice_scatter(ctx, NULL, 2, SH(4, 3), 0, 0, 2, 1))
NC(concat_list, "concat", tg_concat(ctx, 2, NULL, 0))
NC(concat_elem, "concat", tg_concat(ctx, 2, TS(v, NULL), 0))
NC(stack_elem, "stack|concat", tg_stack(ctx, 2, TS(NULL, v), 0))
NC(rearrange, "rearrange", tg_rearrange(ctx, NULL, "a b -> b a", NULL))
NC(rearrange_pattern, "rearrange", tg_rearrange(ctx, v, NULL, NULL))
NC(softmax, "softmax", tg_softmax(ctx, NULL, 0))
NC(log_softmax, "log_softmax", tg_log_softmax(ctx, NULL, 0))
NC(gather_a, "gather", tg_gather(ctx, NULL, 1, ix))
NC(gather_index, "gather", tg_gather(ctx, v, 1, NULL))
NC(scatter_src, "scatter_add", tg_scatter_add(ctx, NULL, 1, ix, 2, SH(2, 3)))
NC(scatter_index, "scatter_add", tg_scatter_add(ctx, v, 1, NULL, 2, SH(2, 3)))
NC(zeros_like, "zeros_like", tg_zeros_like(ctx, NULL))
/* NULL shape or axis arrays where a count says there are some */
NC(reshape_shape, "reshape", tg_reshape(ctx, v, 1, NULL))
NC(permute_perm, "permute", tg_permute(ctx, v, NULL))
NC(broadcast_shape, "broadcast_to", tg_broadcast_to(ctx, v, 2, NULL))
NC(sum_axes, "sum", tg_sum(ctx, v, 1, NULL, false))
NC(from_data, "from_data", tg_from_data(ctx, TG_F64, 1, SH(3), NULL))
#undef NC

static const null_case null_cases[] = {
#define NC_ROW(id, nm) \
    { #id, nm, nc_##id, TG_ERR_INVALID }
#define NC_ANY(id, nm) \
    { #id, nm, nc_##id, TG_OK }
    NC_ROW(add_a, "add"),
    NC_ROW(add_b, "add"),
    NC_ROW(sub_a, "sub"),
    NC_ROW(sub_b, "sub"),
    NC_ROW(mul_a, "mul"),
    NC_ROW(mul_b, "mul"),
    NC_ROW(div_a, "div"),
    NC_ROW(div_b, "div"),
    NC_ROW(eq_a, "eq"),
    NC_ROW(eq_b, "eq"),
    NC_ROW(where_c, "where"),
    NC_ROW(where_a, "where"),
    NC_ROW(where_b, "where"),
    NC_ROW(neg, "neg"),
    NC_ROW(affine, "affine"),
    NC_ROW(add_scalar, "add_scalar|affine"),
    NC_ROW(mul_scalar, "mul_scalar|affine"),
    NC_ROW(pow_scalar, "pow_scalar"),
    NC_ROW(exp, "exp"),
    NC_ROW(log, "log"),
    NC_ROW(sqrt, "sqrt"),
    NC_ROW(abs, "abs"),
    NC_ROW(erf, "erf"),
    NC_ROW(relu, "relu"),
    NC_ROW(sigmoid, "sigmoid"),
    NC_ROW(tanh, "tanh"),
    NC_ROW(silu, "silu"),
    NC_ROW(gelu, "gelu"),
    NC_ROW(clamp, "clamp"),
    NC_ROW(sign, "sign"),
    NC_ROW(relu_backward_g, "relu_backward"),
    NC_ROW(relu_backward_x, "relu_backward"),
    NC_ROW(gelu_backward_g, "gelu_backward"),
    NC_ROW(gelu_backward_x, "gelu_backward"),
    NC_ROW(clamp_backward_g, "clamp_backward"),
    NC_ROW(clamp_backward_x, "clamp_backward"),
    NC_ROW(sum, "sum"),
    NC_ROW(mean, "mean"),
    NC_ROW(max, "max"),
    NC_ROW(min, "min"),
    NC_ROW(argmax, "argmax"),
    NC_ROW(sum_to, "sum_to"),
    NC_ROW(matmul_a, "matmul"),
    NC_ROW(matmul_b, "matmul"),
    NC_ROW(copy, "copy"),
    NC_ROW(contiguous, "contiguous|copy"),
    NC_ROW(reshape, "reshape"),
    NC_ROW(permute, "permute"),
    NC_ROW(transpose, "transpose|permute"),
    NC_ROW(broadcast_to, "broadcast_to"),
    NC_ROW(slice, "slice"),
    NC_ROW(slice_scatter, "slice_scatter"),
    NC_ROW(concat_list, "concat"),
    NC_ROW(concat_elem, "concat"),
    NC_ROW(stack_elem, "stack|concat"),
    NC_ROW(rearrange, "rearrange"),
    NC_ROW(rearrange_pattern, "rearrange"),
    NC_ROW(softmax, "softmax"),
    NC_ROW(log_softmax, "log_softmax"),
    NC_ROW(gather_a, "gather"),
    NC_ROW(gather_index, "gather"),
    NC_ROW(scatter_src, "scatter_add"),
    NC_ROW(scatter_index, "scatter_add"),
    NC_ROW(zeros_like, "zeros_like"),
    NC_ANY(reshape_shape, "reshape"),
    NC_ANY(permute_perm, "permute"),
    NC_ANY(broadcast_shape, "broadcast_to"),
    NC_ANY(sum_axes, "sum"),
    NC_ROW(from_data, "from_data"),
#undef NC_ROW
#undef NC_ANY
};

static void test_null_operands(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *v = f64(ctx, 2, SH(2, 3));
    tg_tensor *ix = i64(ctx, 2, SH(2, 3), (const int64_t[]){0, 1, 2, 2, 1, 0});
    for (size_t i = 0; i < sizeof null_cases / sizeof null_cases[0]; i++) {
        const null_case *c = &null_cases[i];
        tg_ctx_clear_error(ctx);
        tg_tensor *r = c->fn(ctx, v, ix);
        char what[96];
        snprintf(what, sizeof what, "NULL case %s", c->what);
        expect_err_(ctx, r == NULL, c->want, c->name, what);
    }
    END_CHECKS();
}

/* Calls that return a status refuse NULL too. */
static void test_null_arguments_of_calls(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *v = f64(ctx, 1, SH(3));
    double d = 0;
    tg_tensor *g[1] = {NULL};
    EXPECT_ST(ctx, tg_backward(ctx, NULL, NULL, 0), TG_ERR_INVALID, "backward");
    EXPECT_ST(ctx, tg_grad(ctx, NULL, NULL, 1, TS(v), g, 0), TG_ERR_INVALID, "grad");
    EXPECT_ST(ctx, tg_item(ctx, NULL, &d), TG_ERR_INVALID, "item");
    EXPECT_ST(ctx, tg_get(ctx, NULL, 0, &d), TG_ERR_INVALID, "get");
    EXPECT_ST(ctx, tg_to_host(ctx, NULL, &d, sizeof d), TG_ERR_INVALID, "to_host");
    EXPECT_ST(ctx, tg_to_host(ctx, v, NULL, 3 * sizeof d), TG_ERR_INVALID, "to_host");
    EXPECT_ST(ctx, tg_set_requires_grad(ctx, NULL, true), TG_ERR_INVALID, "requires_grad");
    EXPECT_ST(ctx, tg_retain_grad(ctx, NULL), TG_ERR_INVALID, "retain_grad");
    EXPECT_ST(ctx, tg_zero_grad(ctx, NULL), TG_ERR_INVALID, "zero_grad");
    EXPECT_ST(ctx, tg_fill_(ctx, NULL, 1.0), TG_ERR_INVALID, "fill_");
    EXPECT_ST(ctx, tg_mul_scalar_(ctx, NULL, 1.0), TG_ERR_INVALID, "mul_scalar_");
    EXPECT_ST(ctx, tg_axpy_(ctx, NULL, 1.0, v), TG_ERR_INVALID, "axpy_");
    EXPECT_ST(ctx, tg_axpy_(ctx, v, 1.0, NULL), TG_ERR_INVALID, "axpy_");
    EXPECT_ST(ctx, tg_copy_(ctx, v, NULL), TG_ERR_INVALID, "copy_");
    EXPECT_ST(ctx, tg_copy_from_host(ctx, NULL, &d, sizeof d), TG_ERR_INVALID, "copy_from_host");
    assert_int_equal(tg_chunk(ctx, NULL, 2, 0, g), -1);
    expect_err_(ctx, true, TG_ERR_INVALID, "chunk", "tg_chunk(NULL)");
    assert_int_equal(tg_chunk(ctx, v, 2, 0, NULL), -1);
    expect_err_(ctx, true, TG_ERR_INVALID, "chunk", "tg_chunk(out NULL)");
    END_CHECKS();
}

/* A chain of ops is checked once at its end: the first error is kept, and
 * later ops given the resulting NULL do not overwrite it. */
static void test_null_propagation_keeps_first_error(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64(ctx, 2, SH(2, 3));
    tg_tensor *b = f64(ctx, 1, SH(4));
    tg_tensor *c = tg_add(ctx, a, b);
    assert_null(c);
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_SHAPE);
    char first[512];
    snprintf(first, sizeof first, "%s", errmsg(ctx));
    tg_tensor *d = tg_exp(ctx, c);
    tg_tensor *e = tg_matmul(ctx, d, a);
    tg_tensor *f = tg_sum(ctx, tg_softmax(ctx, e, 0), 0, NULL, false);
    tg_tensor *g = tg_reshape(ctx, tg_permute(ctx, f, AX(1, 0)), 1, SH(-1));
    assert_null(d);
    assert_null(e);
    assert_null(f);
    assert_null(g);
    /* even a later op that fails for its own reason keeps the first error */
    tg_tensor *h = tg_add(ctx, a, tg_zeros(ctx, TG_F32, 1, SH(3)));
    assert_null(h);
    assert_int_equal(tg_backward(ctx, g, NULL, 0), TG_ERR_INVALID);
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_SHAPE);
    assert_string_equal(errmsg(ctx), first);
    char sa[64], sb[64];
    tg_shape_str(a, sa, sizeof sa);
    tg_shape_str(b, sb, sizeof sb);
    if (!strstr(first, "add") || !strstr(first, sa) || !strstr(first, sb))
        fail_msg("message '%s' should name add, %s and %s", first, sa, sb);
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_ctx_status(ctx), TG_OK);
    assert_int_equal(strlen(errmsg(ctx)), 0);
    /* and the context works normally afterwards */
    tg_tensor *ok = tg_add(ctx, a, a);
    assert_non_null(ok);
    assert_int_equal(tg_ctx_status(ctx), TG_OK);
}

/* ------------------------------------------------------------------------ */
/* Shapes                                                                   */
/* ------------------------------------------------------------------------ */

static void test_shape_mismatches(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a23 = f64(ctx, 2, SH(2, 3));
    tg_tensor *a24 = f64(ctx, 2, SH(2, 4));
    tg_tensor *a45 = f64(ctx, 2, SH(4, 5));
    tg_tensor *v3 = f64(ctx, 1, SH(3));
    tg_tensor *v4 = f64(ctx, 1, SH(4));
    tg_tensor *s = f64(ctx, 0, SH(0));

    EXPECT_NULL(ctx, tg_add(ctx, a23, v4), TG_ERR_SHAPE, "add");
    EXPECT_NULL(ctx, tg_mul(ctx, a23, a24), TG_ERR_SHAPE, "mul");
    EXPECT_NULL(ctx, tg_where(ctx, a24, a23, a23), TG_ERR_SHAPE, "where");
    EXPECT_NULL(ctx, tg_eq(ctx, a23, v4), TG_ERR_SHAPE, "eq");
    EXPECT_NULL(ctx, tg_relu_backward(ctx, a23, a24), TG_ERR_SHAPE, "relu_backward");
    EXPECT_NULL(ctx, tg_gelu_backward(ctx, a23, a24), TG_ERR_SHAPE, "gelu_backward");
    /* matmul: inner dims, 1-D operands, 0-d operands */
    EXPECT_NULL(ctx, tg_matmul(ctx, a23, a45), TG_ERR_SHAPE, "matmul");
    EXPECT_NULL(ctx, tg_matmul(ctx, v3, v4), TG_ERR_SHAPE, "matmul");
    EXPECT_NULL(ctx, tg_matmul(ctx, a23, v4), TG_ERR_SHAPE, "matmul");
    EXPECT_NULL(ctx, tg_matmul(ctx, v3, a45), TG_ERR_SHAPE, "matmul");
    EXPECT_NULL(ctx, tg_matmul(ctx, s, a23), TG_ERR_SHAPE, "matmul");
    /* concat: other dims differ; ranks differ */
    EXPECT_NULL(ctx, tg_concat(ctx, 2, TS(a23, a24), 0), TG_ERR_SHAPE, "concat");
    EXPECT_NULL(ctx, tg_concat(ctx, 2, TS(a23, v3), 0), TG_ERR_SHAPE, "concat");
    EXPECT_NULL(ctx, tg_stack(ctx, 2, TS(a23, a24), 0), TG_ERR_SHAPE, "stack|concat");
    /* reshape to a wrong numel, or with an impossible -1 */
    EXPECT_NULL(ctx, tg_reshape(ctx, a23, 2, SH(4, 2)), TG_ERR_SHAPE, "reshape");
    EXPECT_NULL(ctx, tg_reshape(ctx, a23, 2, SH(4, -1)), TG_ERR_SHAPE, "reshape");
    EXPECT_NULL(ctx, tg_reshape(ctx, a23, 2, SH(-1, -1)), TG_ERR_SHAPE, "reshape");
    EXPECT_NULL(ctx, tg_reshape(ctx, a23, 2, SH(-2, -3)), TG_ERR_SHAPE, "reshape");
    EXPECT_NULL(ctx, tg_reshape(ctx, a23, TG_MAX_DIMS + 1, SH(1, 1, 1, 1, 1, 1, 1, 2, 3)),
                TG_ERR_SHAPE, "reshape");
    /* broadcast_to: incompatible sizes, fewer dims */
    EXPECT_NULL(ctx, tg_broadcast_to(ctx, v3, 2, SH(2, 4)), TG_ERR_SHAPE, "broadcast_to");
    EXPECT_NULL(ctx, tg_broadcast_to(ctx, a23, 1, SH(3)), TG_ERR_SHAPE, "broadcast_to");
    EXPECT_NULL(ctx, tg_broadcast_to(ctx, a23, 3, SH(2, 4, 3)), TG_ERR_SHAPE, "broadcast_to");
    EXPECT_NULL(ctx, tg_sum_to(ctx, a23, 2, SH(4, 1)), TG_ERR_SHAPE, "sum_to");
    /* slice_scatter: the source must fit the slice */
    EXPECT_NULL(ctx, tg_slice_scatter(ctx, a23, 2, SH(5, 3), 0, 0, 5, 2), TG_ERR_SHAPE,
                "slice_scatter");
    EXPECT_NULL(ctx, tg_slice_scatter(ctx, a23, 2, SH(4, 4), 0, 0, 2, 1), TG_ERR_SHAPE,
                "slice_scatter");
    /* scatter_add: the source must match the index */
    tg_tensor *ix = i64(ctx, 2, SH(2, 2), (const int64_t[]){0, 1, 1, 0});
    EXPECT_NULL(ctx, tg_scatter_add(ctx, a23, 1, ix, 2, SH(2, 3)), TG_ERR_SHAPE, "scatter_add");
    /* gather: the index must have the data's rank and fit it off the axis */
    tg_tensor *ix1 = i64(ctx, 1, SH(2), (const int64_t[]){0, 1});
    tg_tensor *ix33 = i64(ctx, 2, SH(3, 3), (const int64_t[]){0, 1, 2, 0, 1, 2, 0, 1, 2});
    EXPECT_NULL(ctx, tg_gather(ctx, a23, 1, ix1), TG_ERR_SHAPE, "gather");
    EXPECT_NULL(ctx, tg_gather(ctx, a23, 1, ix33), TG_ERR_SHAPE, "gather");
    /* tensors: too many dims, negative sizes */
    EXPECT_NULL(ctx, tg_zeros(ctx, TG_F64, TG_MAX_DIMS + 1, SH(1, 1, 1, 1, 1, 1, 1, 1, 1)),
                TG_ERR_SHAPE, NULL);
    EXPECT_NULL(ctx, tg_zeros(ctx, TG_F64, 2, SH(2, -3)), TG_ERR_SHAPE, NULL);
    EXPECT_NULL(ctx, tg_zeros(ctx, TG_F64, -1, SH(2)), TG_ERR_SHAPE, NULL);
    /* in-place helpers check shapes too */
    EXPECT_ST(ctx, tg_axpy_(ctx, a23, 1.0, a24), TG_ERR_SHAPE, "axpy_");
    EXPECT_ST(ctx, tg_copy_(ctx, a23, v3), TG_ERR_SHAPE, "copy_");
    EXPECT_ST(ctx, tg_copy_from_host(ctx, a23, (const double[]){1, 2}, 2 * sizeof(double)),
              TG_ERR_INVALID, "copy_from_host");
    double buf[4];
    EXPECT_ST(ctx, tg_to_host(ctx, a23, buf, sizeof buf), TG_ERR_INVALID, "to_host");
    double d;
    EXPECT_ST(ctx, tg_get(ctx, a23, 6, &d), TG_ERR_INVALID, "get");
    EXPECT_ST(ctx, tg_get(ctx, a23, -1, &d), TG_ERR_INVALID, "get");
    END_CHECKS();
}

/* ------------------------------------------------------------------------ */
/* Dtypes                                                                   */
/* ------------------------------------------------------------------------ */

static void test_wrong_dtypes(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *f = f64(ctx, 2, SH(2, 3));
    tg_tensor *g = tg_zeros(ctx, TG_F32, 2, SH(2, 3));
    tg_tensor *i = tg_zeros(ctx, TG_I64, 2, SH(2, 3));
    tg_tensor *fi = f64(ctx, 2, SH(2, 2));
    assert_non_null(g);
    assert_non_null(i);
    /* float ops on an integer tensor */
    EXPECT_NULL(ctx, tg_exp(ctx, i), TG_ERR_DTYPE, "exp");
    EXPECT_NULL(ctx, tg_log(ctx, i), TG_ERR_DTYPE, "log");
    EXPECT_NULL(ctx, tg_tanh(ctx, i), TG_ERR_DTYPE, "tanh");
    EXPECT_NULL(ctx, tg_softmax(ctx, i, 0), TG_ERR_DTYPE, "softmax");
    EXPECT_NULL(ctx, tg_log_softmax(ctx, i, 0), TG_ERR_DTYPE, "log_softmax");
    EXPECT_NULL(ctx, tg_mean(ctx, i, 0, NULL, false), TG_ERR_DTYPE, "mean");
    EXPECT_NULL(ctx, tg_matmul(ctx, i, tg_transpose(ctx, i, 0, 1)), TG_ERR_DTYPE, "matmul");
    EXPECT_NULL(ctx, tg_gather(ctx, i, 1, i), TG_ERR_DTYPE, "gather");
    /* mixing f32 and f64 */
    EXPECT_NULL(ctx, tg_add(ctx, f, g), TG_ERR_DTYPE, "add");
    EXPECT_NULL(ctx, tg_mul(ctx, g, f), TG_ERR_DTYPE, "mul");
    EXPECT_NULL(ctx, tg_div(ctx, f, g), TG_ERR_DTYPE, "div");
    EXPECT_NULL(ctx, tg_matmul(ctx, f, tg_transpose(ctx, g, 0, 1)), TG_ERR_DTYPE, "matmul");
    EXPECT_NULL(ctx, tg_concat(ctx, 2, TS(f, g), 0), TG_ERR_DTYPE, "concat");
    EXPECT_NULL(ctx, tg_where(ctx, i, f, g), TG_ERR_DTYPE, "where");
    /* indices must be integers */
    EXPECT_NULL(ctx, tg_gather(ctx, f, 1, fi), TG_ERR_DTYPE, "gather");
    EXPECT_NULL(ctx, tg_scatter_add(ctx, fi, 1, fi, 2, SH(2, 3)), TG_ERR_DTYPE, "scatter_add");
    /* gradients are for floats only */
    EXPECT_ST(ctx, tg_set_requires_grad(ctx, i, true), TG_ERR_DTYPE, "requires_grad");
    assert_false(i->requires_grad);
    EXPECT_NULL(ctx, tg_param(ctx, TG_I64, 1, SH(3), "p"), TG_ERR_DTYPE, "param");
    EXPECT_NULL(ctx, tg_zeros(ctx, (tg_dtype)99, 1, SH(3)), TG_ERR_DTYPE, NULL);
    /* in-place helpers */
    EXPECT_ST(ctx, tg_axpy_(ctx, f, 1.0, g), TG_ERR_DTYPE, "axpy_");
    EXPECT_ST(ctx, tg_copy_(ctx, f, g), TG_ERR_DTYPE, "copy_");
    END_CHECKS();
}

/* ------------------------------------------------------------------------ */
/* Axes                                                                     */
/* ------------------------------------------------------------------------ */

static void test_axes_out_of_range(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64(ctx, 2, SH(2, 3));
    tg_tensor *s = f64(ctx, 0, SH(0));
    tg_tensor *ix = i64(ctx, 2, SH(2, 3), (const int64_t[]){0, 1, 2, 2, 1, 0});
    tg_tensor *parts[4];
    EXPECT_NULL(ctx, tg_sum(ctx, a, 1, AX(2), false), TG_ERR_AXIS, "sum");
    EXPECT_NULL(ctx, tg_sum(ctx, a, 1, AX(-3), true), TG_ERR_AXIS, "sum");
    EXPECT_NULL(ctx, tg_sum(ctx, a, 2, AX(0, 0), false), TG_ERR_AXIS, "sum");
    EXPECT_NULL(ctx, tg_sum(ctx, a, 2, AX(1, -1), false), TG_ERR_AXIS, "sum");
    EXPECT_NULL(ctx, tg_sum(ctx, a, -1, AX(0), false), TG_ERR_INVALID, "sum");
    EXPECT_NULL(ctx, tg_mean(ctx, a, 1, AX(5), false), TG_ERR_AXIS, "mean");
    EXPECT_NULL(ctx, tg_max(ctx, a, 1, AX(2), false), TG_ERR_AXIS, "max");
    EXPECT_NULL(ctx, tg_min(ctx, a, 1, AX(-3), false), TG_ERR_AXIS, "min");
    EXPECT_NULL(ctx, tg_softmax(ctx, a, 2), TG_ERR_AXIS, "softmax");
    EXPECT_NULL(ctx, tg_softmax(ctx, a, -3), TG_ERR_AXIS, "softmax");
    EXPECT_NULL(ctx, tg_log_softmax(ctx, a, 7), TG_ERR_AXIS, "log_softmax");
    EXPECT_NULL(ctx, tg_softmax(ctx, s, 0), TG_ERR_AXIS, "softmax");
    EXPECT_NULL(ctx, tg_permute(ctx, a, AX(0, 0)), TG_ERR_AXIS, "permute");
    EXPECT_NULL(ctx, tg_permute(ctx, a, AX(0, 2)), TG_ERR_AXIS, "permute");
    EXPECT_NULL(ctx, tg_permute(ctx, a, AX(-3, 0)), TG_ERR_AXIS, "permute");
    EXPECT_NULL(ctx, tg_permute(ctx, a, AX(-1, 1)), TG_ERR_AXIS, "permute");
    EXPECT_NULL(ctx, tg_transpose(ctx, a, 0, 2), TG_ERR_AXIS, "transpose|permute");
    EXPECT_NULL(ctx, tg_slice(ctx, a, 2, 0, 1, 1), TG_ERR_AXIS, "slice");
    EXPECT_NULL(ctx, tg_slice(ctx, a, -3, 0, 1, 1), TG_ERR_AXIS, "slice");
    EXPECT_NULL(ctx, tg_slice_scatter(ctx, a, 2, SH(2, 3), 2, 0, 1, 1), TG_ERR_AXIS,
                "slice_scatter");
    EXPECT_NULL(ctx, tg_argmax(ctx, a, 2, false), TG_ERR_AXIS, "argmax");
    EXPECT_NULL(ctx, tg_argmax(ctx, a, -3, true), TG_ERR_AXIS, "argmax");
    EXPECT_NULL(ctx, tg_concat(ctx, 2, TS(a, a), 2), TG_ERR_AXIS, "concat");
    EXPECT_NULL(ctx, tg_stack(ctx, 2, TS(a, a), 3), TG_ERR_AXIS, "stack|concat");
    EXPECT_NULL(ctx, tg_gather(ctx, a, 2, ix), TG_ERR_AXIS, "gather");
    EXPECT_NULL(ctx, tg_scatter_add(ctx, a, -3, ix, 2, SH(2, 3)), TG_ERR_AXIS, "scatter_add");
    assert_int_equal(tg_chunk(ctx, a, 2, 2, parts), -1);
    expect_err_(ctx, true, TG_ERR_AXIS, "chunk", "tg_chunk(axis 2)");
    END_CHECKS();
}

/* ------------------------------------------------------------------------ */
/* Values and parameters                                                    */
/* ------------------------------------------------------------------------ */

static void test_bad_values(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64(ctx, 2, SH(2, 4));
    tg_tensor *parts[4];
    /* gather / scatter_add indices outside the axis */
    tg_tensor *hi = i64(ctx, 2, SH(2, 2), (const int64_t[]){0, 4, 1, 2});
    tg_tensor *neg = i64(ctx, 2, SH(2, 2), (const int64_t[]){0, 1, -1, 2});
    EXPECT_NULL(ctx, tg_gather(ctx, a, 1, hi), TG_ERR_INVALID, "gather");
    EXPECT_NULL(ctx, tg_gather(ctx, a, 1, neg), TG_ERR_INVALID, "gather");
    tg_tensor *src = f64(ctx, 2, SH(2, 2));
    EXPECT_NULL(ctx, tg_scatter_add(ctx, src, 1, hi, 2, SH(2, 4)), TG_ERR_INVALID, "scatter_add");
    EXPECT_NULL(ctx, tg_scatter_add(ctx, src, 1, neg, 2, SH(2, 4)), TG_ERR_INVALID, "scatter_add");
    /* chunk: at least one chunk */
    assert_int_equal(tg_chunk(ctx, a, 0, 1, parts), -1);
    expect_err_(ctx, true, TG_ERR_INVALID, "chunk", "tg_chunk(chunks 0)");
    assert_int_equal(tg_chunk(ctx, a, -2, 1, parts), -1);
    expect_err_(ctx, true, TG_ERR_INVALID, "chunk", "tg_chunk(chunks -2)");
    /* slice: step >= 1 */
    EXPECT_NULL(ctx, tg_slice(ctx, a, 1, 0, 4, 0), TG_ERR_INVALID, "slice");
    EXPECT_NULL(ctx, tg_slice(ctx, a, 1, 4, 0, -1), TG_ERR_INVALID, "slice");
    EXPECT_NULL(ctx, tg_slice_scatter(ctx, a, 2, SH(2, 8), 1, 0, 8, 0), TG_ERR_INVALID,
                "slice_scatter");
    /* concat and stack need at least one tensor */
    EXPECT_NULL(ctx, tg_concat(ctx, 0, TS(a), 0), TG_ERR_INVALID, "concat");
    EXPECT_NULL(ctx, tg_stack(ctx, 0, TS(a), 0), TG_ERR_INVALID, "stack");
    EXPECT_NULL(ctx, tg_concat(ctx, -1, TS(a), 0), TG_ERR_INVALID, "concat");
    /* clamp bounds out of order */
    EXPECT_NULL(ctx, tg_clamp(ctx, a, 1.0, -1.0), TG_ERR_INVALID, "clamp");
    END_CHECKS();
}

static void test_bad_rearrange(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *t = f64(ctx, 1, SH(8));
    tg_tensor *m = f64(ctx, 2, SH(2, 4));
    /* malformed patterns */
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a b -> (a b", NULL), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a b) -> a b", NULL), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a b", NULL), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "", NULL), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a ((b)) -> a b", NULL), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a b -> a b -> a b", NULL), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a $ -> a", NULL), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a a -> a a", NULL), TG_ERR_INVALID, "rearrange");
    /* an axis on one side only */
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a b -> a c", NULL), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a b -> a", NULL), TG_ERR_INVALID, "rearrange");
    /* sizes that do not fit, or cannot be inferred */
    EXPECT_NULL(ctx, tg_rearrange(ctx, t, "(b a) -> b a", "a=3"), TG_ERR_SHAPE, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, t, "(b a) -> b a", NULL), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, t, "(b a) -> b a", "a"), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, t, "(b a) -> b a", "a=x"), TG_ERR_INVALID, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a b -> b a", "a=3"), TG_ERR_SHAPE, "rearrange");
    /* the pattern's rank must match the tensor's */
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, "a b c -> c b a", NULL), TG_ERR_SHAPE, "rearrange");
    EXPECT_NULL(ctx, tg_rearrange(ctx, t, "a b -> b a", NULL), TG_ERR_SHAPE, "rearrange");
    /* a long garbage pattern must not overflow anything */
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    EXPECT_NULL(ctx, tg_rearrange(ctx, m, big, NULL), TG_ERR_INVALID, "rearrange");
    char many[1200];
    size_t o = 0;
    for (int k = 0; k < 100 && o + 8 < sizeof many; k++)
        o += (size_t)snprintf(many + o, sizeof many - o, "a%d ", k);
    snprintf(many + o, sizeof many - o, "-> a0");
    tg_tensor *r = tg_rearrange(ctx, m, many, NULL);
    assert_null(r);
    assert_int_not_equal(tg_ctx_status(ctx), TG_OK);
    assert_non_null(strstr(errmsg(ctx), "rearrange"));
    tg_ctx_clear_error(ctx);
    END_CHECKS();
}

/* ------------------------------------------------------------------------ */
/* Autograd misuse                                                          */
/* ------------------------------------------------------------------------ */

static void test_bad_backward(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = f64(ctx, 2, SH(2, 3));
    assert_int_equal(tg_set_requires_grad(ctx, x, true), TG_OK);
    tg_tensor *y = tg_exp(ctx, x);
    assert_non_null(y);
    /* a non-scalar root needs a seed */
    EXPECT_ST(ctx, tg_backward(ctx, y, NULL, TG_RETAIN_GRAPH), TG_ERR_SHAPE, "backward");
    EXPECT_ST(ctx, tg_grad(ctx, y, NULL, 1, TS(x), (tg_tensor *[1]){NULL}, TG_RETAIN_GRAPH),
              TG_ERR_SHAPE, "grad");
    /* the seed must have the root's shape and dtype */
    tg_tensor *bad = f64(ctx, 1, SH(6));
    EXPECT_ST(ctx, tg_backward(ctx, y, bad, TG_RETAIN_GRAPH), TG_ERR_SHAPE, "backward");
    tg_tensor *bad2 = f64(ctx, 2, SH(3, 2));
    EXPECT_ST(ctx, tg_backward(ctx, y, bad2, TG_RETAIN_GRAPH), TG_ERR_SHAPE, "backward");
    tg_tensor *bad3 = tg_zeros(ctx, TG_F32, 2, SH(2, 3));
    assert_non_null(bad3);
    tg_status st = tg_backward(ctx, y, bad3, TG_RETAIN_GRAPH);
    assert_int_not_equal(st, TG_OK);
    expect_err_(ctx, true, st, "backward", "tg_backward(seed f32 for an f64 root)");
    /* nothing was accumulated by the refused calls */
    assert_null(x->grad);

    /* a root that does not require grad */
    tg_tensor *c = f64(ctx, 0, SH(0));
    EXPECT_ST(ctx, tg_backward(ctx, c, NULL, 0), TG_ERR_AUTOGRAD, "backward");
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *nog = tg_sum(ctx, x, 0, NULL, false);
    tg_set_grad_enabled(ctx, prev);
    assert_non_null(nog);
    EXPECT_ST(ctx, tg_backward(ctx, nog, NULL, 0), TG_ERR_AUTOGRAD, "backward");
    /* tg_grad with respect to a tensor that does not require grad */
    tg_tensor *l = tg_sum(ctx, y, 0, NULL, false);
    tg_tensor *out[1] = {NULL};
    EXPECT_ST(ctx, tg_grad(ctx, l, NULL, 1, TS(c), out, TG_RETAIN_GRAPH), TG_ERR_AUTOGRAD, "grad");
    EXPECT_ST(ctx, tg_grad(ctx, l, NULL, -1, TS(x), out, TG_RETAIN_GRAPH), TG_ERR_INVALID, "grad");
    /* retain_grad on a tensor that does not require grad */
    EXPECT_ST(ctx, tg_retain_grad(ctx, c), TG_ERR_AUTOGRAD, "retain_grad");
    /* changing requires_grad of a non-leaf */
    EXPECT_ST(ctx, tg_set_requires_grad(ctx, y, false), TG_ERR_AUTOGRAD, "requires_grad");
    /* the graph is still usable after all the refusals */
    assert_int_equal(tg_backward(ctx, l, NULL, 0), TG_OK);
    assert_non_null(x->grad);
    /* and freed after it: a second pass is refused */
    EXPECT_ST(ctx, tg_backward(ctx, l, NULL, 0), TG_ERR_AUTOGRAD, "backward");
    /* a tensor from before tg_step_reset is gone with its graph; a fresh
     * one works */
    tg_step_reset(ctx);
    tg_tensor *z = f64(ctx, 1, SH(2));
    assert_int_equal(tg_set_requires_grad(ctx, z, true), TG_OK);
    assert_int_equal(tg_backward(ctx, tg_sum(ctx, z, 0, NULL, false), NULL, 0), TG_OK);
    END_CHECKS();
}

static void test_item_needs_one_element(void **state) {
    tg_ctx *ctx = *state;
    double v = 0;
    tg_tensor *a = f64(ctx, 1, SH(3));
    EXPECT_ST(ctx, tg_item(ctx, a, &v), TG_ERR_SHAPE, "item");
    tg_tensor *e = tg_zeros(ctx, TG_F64, 1, SH(0));
    assert_non_null(e);
    EXPECT_ST(ctx, tg_item(ctx, e, &v), TG_ERR_SHAPE, "item");
    /* one element in any number of dims is fine, but not without a
     * destination */
    tg_tensor *one = f64(ctx, 3, SH(1, 1, 1));
    EXPECT_ST(ctx, tg_item(ctx, one, NULL), TG_ERR_INVALID, "item");
    assert_int_equal(tg_item(ctx, one, &v), TG_OK);
    assert_true(v == 0.25);
    END_CHECKS();
}

/* The context-level calls tolerate a NULL context (ops require one). */
static void test_null_context(void **state) {
    (void)state;
    assert_int_not_equal(tg_ctx_status(NULL), TG_OK);
    assert_non_null(tg_ctx_error(NULL));
    assert_int_not_equal(tg_ctx_new(NULL, NULL), TG_OK);
    assert_true(strlen(tg_last_init_error()) > 0);
    tg_ctx_free(NULL);
}

/* NULL shape arrays and host buffers where a count says there is data.
 * Kept in a test of their own, last, because a crash here would take the
 * rest of the file with it under the sanitizers. */
static void test_null_arrays_do_not_crash(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *v = f64(ctx, 2, SH(2, 3));
    EXPECT_NULL(ctx, tg_sum_to(ctx, v, 1, NULL), TG_OK, "sum_to");
    EXPECT_NULL(ctx, tg_slice_scatter(ctx, v, 2, NULL, 0, 0, 2, 1), TG_OK, "slice_scatter");
    EXPECT_NULL(ctx, tg_zeros(ctx, TG_F64, 2, NULL), TG_ERR_INVALID, NULL);
    EXPECT_NULL(ctx, tg_param(ctx, TG_F64, 2, NULL, "p"), TG_ERR_INVALID, NULL);
    /* v does not require grad, so only the NULL source is wrong */
    EXPECT_ST(ctx, tg_copy_from_host(ctx, v, NULL, 6 * sizeof(double)), TG_ERR_INVALID,
              "copy_from_host");
    END_CHECKS();
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_ctx, teardown_ctx)
        T(test_null_operands),
        T(test_null_arguments_of_calls),
        T(test_null_propagation_keeps_first_error),
        T(test_shape_mismatches),
        T(test_wrong_dtypes),
        T(test_axes_out_of_range),
        T(test_bad_values),
        T(test_bad_rearrange),
        T(test_bad_backward),
        T(test_item_needs_one_element),
        T(test_null_context),
        T(test_null_arrays_do_not_crash),
#undef T
    };
    return cmocka_run_group_tests_name("bad_input", tests, NULL, NULL);
}
