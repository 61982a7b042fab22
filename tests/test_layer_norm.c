/*
 * tests/test_layer_norm.c: the fused layer_norm row against the same layer
 * norm composed from op rows (mean, sub, mul, add_scalar, pow_scalar):
 * outputs and the gradients of x, weight and bias, over the last dim and
 * the last two, in f64 (tight) and f32; results bit-identical at 1 and 2
 * threads; a step arena several times smaller than the composition's; no
 * heap call in a steady step; and every bad input refused with a message
 * naming the op and the shapes. Finite-difference checks are in
 * test_gradcheck.c (gradcheck_rows_lnorm.h), PyTorch's values in
 * test_torch_fixtures.c (fixtures/lnorm.txt).
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

/* AddressSanitizer owns malloc: the heap counter is left out under it and
 * the steady-step test skips. */
#if !defined(__SANITIZE_ADDRESS__)
#include "heap_count.h"
#endif
#include "tapegrad/nn.h"
#include "tapegrad/runtime.h"

typedef struct ln_case {
    int xndim, ndim; /* x's dims, normalised dims (the last ones) */
    int64_t shape[3];
} ln_case;

static const ln_case k_cases[] = {
    {2, 1, {3, 4, 0}},   {3, 1, {2, 3, 8}}, {3, 2, {2, 3, 8}}, {2, 1, {5, 70}},
    {3, 1, {2, 1, 130}}, {2, 2, {4, 33}},   {2, 1, {1, 1}},    {2, 1, {128, 300}},
};

static uint64_t g_rs = 0x9E3779B97F4A7C15ull;
static double unif(void) {
    g_rs = g_rs * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rs >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static int64_t numel(int n, const int64_t *s) {
    int64_t k = 1;
    for (int i = 0; i < n; i++)
        k *= s[i];
    return k;
}

/* Host values: x (offset so the mean is not 0), weight, bias, seed. */
typedef struct vals {
    int64_t nx, nw;
    double *x, *w, *b, *seed;
} vals;

static void vals_make(vals *v, const ln_case *c) {
    v->nx = numel(c->xndim, c->shape);
    v->nw = numel(c->ndim, c->shape + c->xndim - c->ndim);
    v->x = malloc((size_t)v->nx * sizeof(double));
    v->seed = malloc((size_t)v->nx * sizeof(double));
    v->w = malloc((size_t)v->nw * sizeof(double));
    v->b = malloc((size_t)v->nw * sizeof(double));
    assert_true(v->x && v->seed && v->w && v->b);
    for (int64_t i = 0; i < v->nx; i++)
        v->x[i] = 0.7 + 2.0 * unif(), v->seed[i] = unif();
    for (int64_t i = 0; i < v->nw; i++)
        v->w[i] = 1.0 + 0.5 * unif(), v->b[i] = 0.3 * unif();
}

static void vals_free(vals *v) { free(v->x), free(v->w), free(v->b), free(v->seed); }

typedef struct result {
    double *y, *g[3];
} result;

static void result_free(result *r) { free(r->y), free(r->g[0]), free(r->g[1]), free(r->g[2]); }

static double *read_all(tg_ctx *ctx, const tg_tensor *t) {
    if (!t)
        fail_msg("missing tensor: %s", tg_ctx_error(ctx));
    const int64_t n = tg_numel(t);
    double *out = malloc((size_t)n * sizeof(double));
    assert_non_null(out);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(tg_get(ctx, t, i, &out[i]), TG_OK);
    return out;
}

static tg_tensor *leaf(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, const double *v) {
    tg_tensor *t = tg_to_dtype(ctx, tg_from_data(ctx, TG_F64, ndim, shape, v), dt);
    assert_non_null(t);
    assert_int_equal(tg_set_requires_grad(ctx, t, true), TG_OK);
    return t;
}

/* The layer norm as the layer composed it before the fused row. */
static tg_tensor *composed(tg_ctx *ctx, tg_tensor *x, int nd, tg_tensor *w, tg_tensor *b,
                           double eps) {
    int axes[TG_MAX_DIMS];
    for (int d = 0; d < nd; d++)
        axes[d] = x->ndim - nd + d;
    tg_tensor *mean = tg_mean(ctx, x, nd, axes, true);
    tg_tensor *xc = tg_sub(ctx, x, mean);
    tg_tensor *var = tg_mean(ctx, tg_mul(ctx, xc, xc), nd, axes, true);
    tg_tensor *xn = tg_mul(ctx, xc, tg_pow_scalar(ctx, tg_add_scalar(ctx, var, eps), -0.5));
    return tg_add(ctx, tg_mul(ctx, xn, w), b);
}

static void run(tg_ctx *ctx, const ln_case *c, const vals *v, tg_dtype dt, bool fused, result *r) {
    const int64_t *ws = c->shape + c->xndim - c->ndim;
    tg_tensor *x = leaf(ctx, dt, c->xndim, c->shape, v->x);
    tg_tensor *w = leaf(ctx, dt, c->ndim, ws, v->w);
    tg_tensor *b = leaf(ctx, dt, c->ndim, ws, v->b);
    tg_tensor *y =
        fused ? tg_layer_norm(ctx, x, c->ndim, w, b, 1e-5) : composed(ctx, x, c->ndim, w, b, 1e-5);
    if (!y)
        fail_msg("%s: %s", fused ? "fused" : "composed", tg_ctx_error(ctx));
    tg_tensor *seed = tg_to_dtype(ctx, tg_from_data(ctx, TG_F64, c->xndim, c->shape, v->seed), dt);
    assert_int_equal(tg_backward(ctx, y, seed, 0), TG_OK);
    r->y = read_all(ctx, y);
    r->g[0] = read_all(ctx, x->grad);
    r->g[1] = read_all(ctx, w->grad);
    r->g[2] = read_all(ctx, b->grad);
    tg_step_reset(ctx);
}

static void expect_close(const char *what, int ci, const double *a, const double *b, int64_t n,
                         double tol) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= tol * (1 + fabs(b[i]))))
            fail_msg("%s of case %d at %lld: fused %.17g, composed %.17g", what, ci, (long long)i,
                     a[i], b[i]);
}

static void test_fused_matches_composed(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    for (int ci = 0; ci < (int)(sizeof k_cases / sizeof k_cases[0]); ci++) {
        const ln_case *c = &k_cases[ci];
        vals v;
        vals_make(&v, c);
        for (int di = 0; di < 2; di++) {
            const tg_dtype dt = di ? TG_F32 : TG_F64;
            const double tol = di ? 2e-4 : 1e-11;
            result f, m;
            run(ctx, c, &v, dt, true, &f);
            run(ctx, c, &v, dt, false, &m);
            expect_close("y", ci, f.y, m.y, v.nx, tol);
            expect_close("dx", ci, f.g[0], m.g[0], v.nx, tol);
            expect_close("dweight", ci, f.g[1], m.g[1], v.nw, tol);
            expect_close("dbias", ci, f.g[2], m.g[2], v.nw, tol);
            result_free(&f);
            result_free(&m);
        }
        vals_free(&v);
    }
    tg_ctx_free(ctx);
}

/* Rows split over threads, the weight gradient over column blocks, every
 * sum in a fixed order: 1 and 2 threads give the same bits. The case is big
 * enough (128 x 300) for both kernels to run as parallel regions. */
static void test_thread_count_independent(void **state) {
    (void)state;
    const ln_case *c = &k_cases[7];
    vals v;
    vals_make(&v, c);
    result r[2];
    for (int t = 0; t < 2; t++) {
        tg_ctx_config cc = {.threads = t + 1};
        tg_ctx *ctx;
        assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
        run(ctx, c, &v, TG_F32, true, &r[t]);
        tg_ctx_free(ctx);
    }
    assert_memory_equal(r[0].y, r[1].y, (size_t)v.nx * sizeof(double));
    assert_memory_equal(r[0].g[0], r[1].g[0], (size_t)v.nx * sizeof(double));
    assert_memory_equal(r[0].g[1], r[1].g[1], (size_t)v.nw * sizeof(double));
    assert_memory_equal(r[0].g[2], r[1].g[2], (size_t)v.nw * sizeof(double));
    result_free(&r[0]);
    result_free(&r[1]);
    vals_free(&v);
}

/* The step arena's high-water mark over one forward and backward. */
static size_t step_peak(bool fused) {
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const int64_t shape[3] = {8, 64, 128};
    tg_tensor *x = tg_full(ctx, TG_F32, 3, shape, 0.5);
    tg_tensor *w = tg_full(ctx, TG_F32, 1, shape + 2, 1.0);
    tg_tensor *b = tg_full(ctx, TG_F32, 1, shape + 2, 0.0);
    assert_non_null(x);
    assert_int_equal(tg_set_requires_grad(ctx, x, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, w, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, b, true), TG_OK);
    tg_tensor *y = fused ? tg_layer_norm(ctx, x, 1, w, b, 1e-5) : composed(ctx, x, 1, w, b, 1e-5);
    assert_non_null(y);
    assert_int_equal(tg_backward(ctx, y, tg_ones_like(ctx, y), 0), TG_OK);
    size_t used, reserved, hw;
    tg_arena_stats(ctx, &used, &reserved, &hw);
    tg_ctx_free(ctx);
    return hw;
}

static void test_step_arena_smaller(void **state) {
    (void)state;
    const size_t fused = step_peak(true), comp = step_peak(false);
    printf("step arena peak, (8, 64, 128) f32 forward + backward: fused %zu, composed %zu\n", fused,
           comp);
    assert_true(2 * fused < comp);
}

static void test_no_heap_in_steady_steps(void **state) {
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip();
#else
    tg_heap_count_watch_off(); /* before the 2-thread context is made */
    tg_ctx_config cc = {.threads = 2};
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    const int64_t shape[2] = {128, 300};
    tg_tensor *x = tg_persistent(ctx, TG_F32, 2, shape, "x");
    tg_tensor *w = tg_persistent(ctx, TG_F32, 1, shape + 1, "w");
    tg_tensor *b = tg_persistent(ctx, TG_F32, 1, shape + 1, "b");
    assert_true(x && w && b);
    assert_int_equal(tg_fill_(ctx, x, 0.25), TG_OK);
    assert_int_equal(tg_fill_(ctx, w, 1.0), TG_OK);
    assert_int_equal(tg_fill_(ctx, b, 0.5), TG_OK);
    tg_tensor *p[3] = {x, w, b};
    for (int i = 0; i < 3; i++)
        assert_int_equal(tg_set_requires_grad(ctx, p[i], true), TG_OK);
    for (int step = 0; step < 5; step++) {
        if (step == 2)
            tg_heap_count_start(0);
        tg_step_reset(ctx);
        tg_tensor *y = tg_layer_norm(ctx, x, 1, w, b, 1e-5);
        tg_tensor *l = y ? tg_sum(ctx, tg_mul(ctx, y, y), 0, NULL, false) : NULL;
        if (!l || tg_backward(ctx, l, NULL, 0) != TG_OK)
            fail_msg("%s", tg_ctx_error(ctx));
    }
    long calls = tg_heap_count_stop();
    tg_ctx_free(ctx);
    assert_int_equal(calls, 0);
#endif
}

static void expect_fail(tg_ctx *ctx, tg_tensor *r, tg_status want, const char *n1, const char *n2) {
    assert_null(r);
    assert_int_equal(tg_ctx_status(ctx), want);
    const char *e = tg_ctx_error(ctx);
    if (!strstr(e, n1) || (n2 && !strstr(e, n2)))
        fail_msg("error '%s' does not name '%s'%s%s", e, n1, n2 ? " and " : "", n2 ? n2 : "");
    tg_ctx_clear_error(ctx);
}

/* Each bad call fails with a status and a message naming the op and the
 * operands' shapes or dtypes; the context then still works. */
static void test_bad_inputs(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const int64_t sx[3] = {2, 3, 8}, s8[1] = {8}, s5[1] = {5}, s38[2] = {3, 8}, s0[3] = {2, 0, 8};
    tg_tensor *x = tg_zeros(ctx, TG_F32, 3, sx), *w = tg_full(ctx, TG_F32, 1, s8, 1.0),
              *b = tg_zeros(ctx, TG_F32, 1, s8);
    /* the weight's shape is not the end of x's */
    expect_fail(ctx, tg_layer_norm(ctx, x, 1, tg_full(ctx, TG_F32, 1, s5, 1.0), b, 1e-5),
                TG_ERR_SHAPE, "(2, 3, 8)", "(5,)");
    /* bias unlike the weight */
    expect_fail(ctx, tg_layer_norm(ctx, x, 1, w, tg_zeros(ctx, TG_F32, 1, s5), 1e-5), TG_ERR_SHAPE,
                "layer_norm", "bias (5,)");
    /* ndim not the weight's */
    expect_fail(ctx, tg_layer_norm(ctx, x, 2, w, b, 1e-5), TG_ERR_SHAPE, "ndim 2", "(8,)");
    expect_fail(ctx, tg_layer_norm(ctx, x, 2, tg_full(ctx, TG_F32, 2, s38, 1.0), w, 1e-5),
                TG_ERR_SHAPE, "layer_norm", "(3, 8)");
    /* an empty input */
    expect_fail(ctx, tg_layer_norm(ctx, tg_zeros(ctx, TG_F32, 3, s0), 1, w, b, 1e-5), TG_ERR_SHAPE,
                "(2, 0, 8)", "(8,)");
    /* dtypes: an f64 weight with f32 x, and an integer x */
    expect_fail(ctx, tg_layer_norm(ctx, x, 1, tg_full(ctx, TG_F64, 1, s8, 1.0), b, 1e-5),
                TG_ERR_DTYPE, "layer_norm", "f64");
    expect_fail(ctx, tg_layer_norm(ctx, tg_zeros(ctx, TG_I64, 3, sx), 1, w, b, 1e-5), TG_ERR_DTYPE,
                "layer_norm", NULL);
    /* NULL bias, eps <= 0 */
    expect_fail(ctx, tg_layer_norm(ctx, x, 1, w, NULL, 1e-5), TG_ERR_INVALID, "NULL bias", NULL);
    expect_fail(ctx, tg_layer_norm(ctx, x, 1, w, b, 0), TG_ERR_INVALID, "eps", NULL);
    /* the backward row: g unlike x, stats of another x */
    tg_tensor *st = NULL;
    assert_non_null(tg_layer_norm_stats(ctx, x, 1, w, b, 1e-5, &st));
    assert_non_null(st);
    expect_fail(ctx,
                tg_layer_norm_backward(ctx, tg_zeros(ctx, TG_F32, 2, s38), x, 1, w, st, NULL, NULL),
                TG_ERR_SHAPE, "(3, 8)", "(2, 3, 8)");
    expect_fail(ctx,
                tg_layer_norm_backward(ctx, x, x, 1, w, tg_zeros(ctx, TG_F32, 2, s38), NULL, NULL),
                TG_ERR_SHAPE, "stats (3, 8)", "(2, 6)");
    /* still works */
    tg_tensor *gw = NULL, *gb = NULL;
    assert_non_null(tg_layer_norm_backward(ctx, x, x, 1, w, st, &gw, &gb));
    assert_int_equal(gw->ndim, 1);
    assert_int_equal(gw->shape[0], 8);
    tg_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_matches_composed),
        cmocka_unit_test(test_thread_count_independent),
        cmocka_unit_test(test_step_arena_smaller),
        cmocka_unit_test(test_no_heap_in_steady_steps),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
