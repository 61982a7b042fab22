/*
 * tests/test_attention.c: the fused scaled_dot_product_attention row against
 * the same attention composed from op rows (tg_attention_composed): outputs
 * and the gradients of q, k and v, causal and not, T_q != T_k, 3-d and 4-d
 * operands, in f64 (tight) and f32; results independent of the thread
 * count and of how the work is grouped into tasks; memory that grows
 * linearly in T where the composed version's grows quadratically; no heap
 * call in a steady step; and every bad input refused with a message naming
 * the op and the shapes. Finite-difference checks are
 * in test_gradcheck.c (gradcheck_rows_attn.h), PyTorch's values in
 * test_torch_fixtures.c (fixtures/attn.txt).
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

typedef struct shape_case {
    int ndim; /* 3: (B, T, D); 4: (B, H, T, D) */
    int64_t b, h, tq, tk, d;
    bool causal;
} shape_case;

static const shape_case k_shapes[] = {
    {4, 2, 3, 7, 7, 16, false}, {4, 2, 3, 7, 7, 16, true},   {4, 1, 2, 64, 64, 32, true},
    {4, 1, 2, 130, 130, 64, false}, {4, 2, 1, 130, 130, 16, true}, {4, 2, 2, 5, 9, 8, false},
    {4, 1, 2, 9, 4, 8, true},    {4, 1, 2, 3, 70, 8, true},  {3, 3, 1, 33, 33, 16, true},
    {4, 2, 2, 1, 1, 16, true},   {4, 1, 1, 1, 40, 32, false},
};

static uint64_t g_rs = 0x9E3779B97F4A7C15ull;
static double unif(void) {
    g_rs = g_rs * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rs >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* Host values of q, k, v (scaled so that softmax is neither flat nor one-hot)
 * and of the seed gradient W. */
typedef struct vals {
    int64_t sq[4], sk[4];
    int64_t nq, nk;
    double *q, *k, *v, *w;
} vals;

static void vals_make(vals *vs, const shape_case *c) {
    int n = 0;
    if (c->ndim == 4)
        vs->sq[n] = vs->sk[n] = c->b, n++, vs->sq[n] = vs->sk[n] = c->h, n++;
    else
        vs->sq[n] = vs->sk[n] = c->b * c->h, n++;
    vs->sq[n] = c->tq, vs->sk[n] = c->tk, n++;
    vs->sq[n] = vs->sk[n] = c->d;
    vs->nq = c->b * c->h * c->tq * c->d;
    vs->nk = c->b * c->h * c->tk * c->d;
    vs->q = malloc((size_t)vs->nq * sizeof(double));
    vs->w = malloc((size_t)vs->nq * sizeof(double));
    vs->k = malloc((size_t)vs->nk * sizeof(double));
    vs->v = malloc((size_t)vs->nk * sizeof(double));
    assert_true(vs->q && vs->w && vs->k && vs->v);
    for (int64_t i = 0; i < vs->nq; i++)
        vs->q[i] = 1.5 * unif(), vs->w[i] = unif();
    for (int64_t i = 0; i < vs->nk; i++)
        vs->k[i] = 1.5 * unif(), vs->v[i] = unif();
}

static void vals_free(vals *vs) {
    free(vs->q), free(vs->k), free(vs->v), free(vs->w);
}

/* The output and the three gradients, as doubles. */
typedef struct result {
    double *o, *g[3];
} result;

static void result_free(result *r) {
    free(r->o), free(r->g[0]), free(r->g[1]), free(r->g[2]);
}

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

static tg_tensor *leaf(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, int64_t n,
                       const double *v) {
    tg_tensor *t = tg_to_dtype(ctx, tg_from_data(ctx, TG_F64, ndim, shape, v), dt);
    assert_non_null(t);
    /* a fresh leaf: the cast above is not recorded (no input requires grad) */
    assert_int_equal(tg_set_requires_grad(ctx, t, true), TG_OK);
    (void)n;
    return t;
}

static void run(tg_ctx *ctx, const shape_case *c, const vals *vs, tg_dtype dt, bool fused,
                result *r) {
    const int n = c->ndim;
    tg_tensor *q = leaf(ctx, dt, n, vs->sq, vs->nq, vs->q);
    tg_tensor *k = leaf(ctx, dt, n, vs->sk, vs->nk, vs->k);
    tg_tensor *v = leaf(ctx, dt, n, vs->sk, vs->nk, vs->v);
    tg_tensor *o = fused ? tg_scaled_dot_product_attention(ctx, q, k, v, c->causal)
                         : tg_attention_composed(ctx, q, k, v, c->causal);
    if (!o)
        fail_msg("%s: %s", fused ? "fused" : "composed", tg_ctx_error(ctx));
    tg_tensor *w = tg_to_dtype(ctx, tg_from_data(ctx, TG_F64, n, vs->sq, vs->w), dt);
    assert_int_equal(tg_backward(ctx, o, w, 0), TG_OK);
    r->o = read_all(ctx, o);
    r->g[0] = read_all(ctx, q->grad);
    r->g[1] = read_all(ctx, k->grad);
    r->g[2] = read_all(ctx, v->grad);
    tg_step_reset(ctx);
}

static void expect_close(const char *what, const shape_case *c, const double *a, const double *b,
                         int64_t n, double tol) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= tol * (1 + fabs(b[i]))))
            fail_msg("%s of (%lld,%lld,%lld,%lld,%lld)%s at %lld: fused %.17g, composed %.17g",
                     what, (long long)c->b, (long long)c->h, (long long)c->tq, (long long)c->tk,
                     (long long)c->d, c->causal ? " causal" : "", (long long)i, a[i], b[i]);
}

static void test_fused_matches_composed(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    for (size_t ci = 0; ci < sizeof k_shapes / sizeof k_shapes[0]; ci++) {
        const shape_case *c = &k_shapes[ci];
        vals vs;
        vals_make(&vs, c);
        for (int di = 0; di < 2; di++) {
            const tg_dtype dt = di ? TG_F32 : TG_F64;
            const double tol = di ? 2e-5 : 1e-12;
            result f, m;
            run(ctx, c, &vs, dt, true, &f);
            run(ctx, c, &vs, dt, false, &m);
            expect_close(di ? "f32 output" : "f64 output", c, f.o, m.o, vs.nq, tol);
            expect_close(di ? "f32 dq" : "f64 dq", c, f.g[0], m.g[0], vs.nq, tol);
            expect_close(di ? "f32 dk" : "f64 dk", c, f.g[1], m.g[1], vs.nk, tol);
            expect_close(di ? "f32 dv" : "f64 dv", c, f.g[2], m.g[2], vs.nk, tol);
            result_free(&f);
            result_free(&m);
        }
        vals_free(&vs);
    }
    tg_ctx_free(ctx);
}

/* A causal output row i must not change when keys after i change. */
static void test_causal_ignores_later_keys(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const shape_case c = {4, 1, 2, 70, 70, 8, true};
    vals vs;
    vals_make(&vs, &c);
    result a, b;
    run(ctx, &c, &vs, TG_F64, true, &a);
    for (int64_t h = 0; h < 2; h++)
        for (int64_t x = 0; x < 8; x++) {
            vs.k[(h * 70 + 69) * 8 + x] += 3.0; /* the last key and value */
            vs.v[(h * 70 + 69) * 8 + x] -= 2.0;
        }
    run(ctx, &c, &vs, TG_F64, true, &b);
    for (int64_t h = 0; h < 2; h++)
        for (int64_t i = 0; i < 70 * 8; i++) {
            const int64_t e = h * 70 * 8 + i;
            if (i / 8 < 69)
                assert_true(a.o[e] == b.o[e]);
            else
                assert_true(a.o[e] != b.o[e]);
        }
    result_free(&a);
    result_free(&b);
    vals_free(&vs);
    tg_ctx_free(ctx);
}

/* The kernels split work by output rows and sum in a fixed order: 1 and 2
 * threads give the same bits. With 4 BH rows, 1 thread runs the one-pass
 * backward and 2 threads the two-pass one. */
static void test_thread_count_independent(void **state) {
    (void)state;
    const shape_case c = {4, 2, 2, 130, 130, 32, true};
    vals vs;
    vals_make(&vs, &c);
    result r[2];
    for (int t = 0; t < 2; t++) {
        tg_ctx_config cc = {.threads = t + 1};
        tg_ctx *ctx;
        assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
        run(ctx, &c, &vs, TG_F32, true, &r[t]);
        tg_ctx_free(ctx);
    }
    assert_memory_equal(r[0].o, r[1].o, (size_t)vs.nq * sizeof(double));
    assert_memory_equal(r[0].g[0], r[1].g[0], (size_t)vs.nq * sizeof(double));
    assert_memory_equal(r[0].g[1], r[1].g[1], (size_t)vs.nk * sizeof(double));
    assert_memory_equal(r[0].g[2], r[1].g[2], (size_t)vs.nk * sizeof(double));
    result_free(&r[0]);
    result_free(&r[1]);
    vals_free(&vs);
}

/* Eight BH rows at once (forward tasks of four query tiles, the one-pass
 * backward) give the same bits as each row alone (tasks of one query tile,
 * the two-pass backward), causal and not, f32 and f64. */
static void test_task_grouping_changes_no_bit(void **state) {
    (void)state;
    tg_ctx_config cc = {.threads = 1};
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    for (int causal = 0; causal < 2; causal++)
        for (int f = 0; f < 2; f++) {
            const tg_dtype dt = f ? TG_F64 : TG_F32;
            const shape_case all = {4, 2, 4, 100, 90, 24, causal != 0};
            const shape_case one = {4, 1, 1, 100, 90, 24, causal != 0};
            vals vs;
            vals_make(&vs, &all);
            result ra;
            run(ctx, &all, &vs, dt, true, &ra);
            const int64_t rq = one.tq * one.d, rk = one.tk * one.d;
            for (int64_t row = 0; row < all.b * all.h; row++) {
                vals vo = {.sq = {1, 1, one.tq, one.d}, .sk = {1, 1, one.tk, one.d},
                           .nq = rq, .nk = rk, .q = vs.q + row * rq, .k = vs.k + row * rk,
                           .v = vs.v + row * rk, .w = vs.w + row * rq};
                result r1;
                run(ctx, &one, &vo, dt, true, &r1);
                assert_memory_equal(r1.o, ra.o + row * rq, (size_t)rq * sizeof(double));
                assert_memory_equal(r1.g[0], ra.g[0] + row * rq, (size_t)rq * sizeof(double));
                assert_memory_equal(r1.g[1], ra.g[1] + row * rk, (size_t)rk * sizeof(double));
                assert_memory_equal(r1.g[2], ra.g[2] + row * rk, (size_t)rk * sizeof(double));
                result_free(&r1);
            }
            result_free(&ra);
            vals_free(&vs);
        }
    tg_ctx_free(ctx);
}

/* The step arena's high-water mark over one forward and backward at T. */
static size_t step_peak(int64_t t, bool fused) {
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const int64_t shape[4] = {1, 2, t, 16};
    tg_tensor *in[3];
    for (int i = 0; i < 3; i++) {
        in[i] = tg_full(ctx, TG_F32, 4, shape, 0.01 * (i + 1));
        assert_int_equal(tg_set_requires_grad(ctx, in[i], true), TG_OK);
    }
    tg_tensor *o = fused ? tg_scaled_dot_product_attention(ctx, in[0], in[1], in[2], true)
                         : tg_attention_composed(ctx, in[0], in[1], in[2], true);
    assert_non_null(o);
    assert_int_equal(tg_backward(ctx, o, tg_ones_like(ctx, o), 0), TG_OK);
    size_t used, reserved, hw;
    tg_arena_stats(ctx, &used, &reserved, &hw);
    tg_ctx_free(ctx);
    return hw;
}

static void test_memory_linear_in_t(void **state) {
    (void)state;
    const double fused = (double)step_peak(1024, true) / (double)step_peak(256, true);
    const double composed = (double)step_peak(1024, false) / (double)step_peak(256, false);
    printf("step arena peak, T 256 -> 1024: fused x%.2f, composed x%.2f\n", fused, composed);
    assert_true(fused < 5.0);
    assert_true(composed > 10.0);
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
    const int64_t shape[4] = {2, 2, 130, 32};
    tg_tensor *p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = tg_persistent(ctx, TG_F32, 4, shape, i == 0 ? "q" : i == 1 ? "k" : "v");
        assert_non_null(p[i]);
        assert_int_equal(tg_fill_(ctx, p[i], 0.05 * (i + 1)), TG_OK);
        assert_int_equal(tg_set_requires_grad(ctx, p[i], true), TG_OK);
    }
    long calls = 0;
    for (int step = 0; step < 5; step++) {
        if (step == 2)
            tg_heap_count_start(0);
        tg_step_reset(ctx);
        tg_tensor *o = tg_scaled_dot_product_attention(ctx, p[0], p[1], p[2], step % 2 == 0);
        tg_tensor *l = o ? tg_sum(ctx, tg_mul(ctx, o, o), 0, NULL, false) : NULL;
        if (!l || tg_backward(ctx, l, NULL, 0) != TG_OK)
            fail_msg("%s", tg_ctx_error(ctx));
    }
    calls = tg_heap_count_stop();
    tg_ctx_free(ctx);
    assert_int_equal(calls, 0);
#endif
}

/* Each bad call fails with TG_ERR_SHAPE or TG_ERR_DTYPE and a message that
 * names the op and the operands' shapes; the context then still works. */
static void test_bad_inputs(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const int64_t s4[4] = {2, 3, 5, 8}, s4d[4] = {2, 3, 5, 4}, s4h[4] = {2, 2, 5, 8},
                  s4t[4] = {2, 3, 6, 8}, s2[2] = {5, 8}, s4e[4] = {2, 3, 0, 8};
    tg_tensor *q = tg_zeros(ctx, TG_F32, 4, s4);
    struct {
        tg_tensor *q, *k, *v;
        tg_status want;
        const char *needle;
    } bad[] = {
        {tg_zeros(ctx, TG_F32, 2, s2), tg_zeros(ctx, TG_F32, 2, s2), tg_zeros(ctx, TG_F32, 2, s2),
         TG_ERR_SHAPE, "(5, 8)"},
        {q, tg_zeros(ctx, TG_F32, 4, s4d), tg_zeros(ctx, TG_F32, 4, s4d), TG_ERR_SHAPE,
         "(2, 3, 5, 4)"},
        {q, tg_zeros(ctx, TG_F32, 4, s4h), tg_zeros(ctx, TG_F32, 4, s4h), TG_ERR_SHAPE,
         "(2, 2, 5, 8)"},
        {q, q, tg_zeros(ctx, TG_F32, 4, s4t), TG_ERR_SHAPE, "(2, 3, 6, 8)"},
        {q, q, tg_zeros(ctx, TG_F64, 4, s4), TG_ERR_DTYPE, "f64"},
        {tg_zeros(ctx, TG_I64, 4, s4), tg_zeros(ctx, TG_I64, 4, s4), tg_zeros(ctx, TG_I64, 4, s4),
         TG_ERR_DTYPE, "i64"},
        {tg_zeros(ctx, TG_F32, 4, s4e), tg_zeros(ctx, TG_F32, 4, s4e),
         tg_zeros(ctx, TG_F32, 4, s4e), TG_ERR_SHAPE, "(2, 3, 0, 8)"},
        {q, NULL, q, TG_ERR_INVALID, "operand 2 is NULL"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int composed = 0; composed < 2; composed++) {
            tg_tensor *o = composed
                               ? tg_attention_composed(ctx, bad[i].q, bad[i].k, bad[i].v, true)
                               : tg_scaled_dot_product_attention(ctx, bad[i].q, bad[i].k,
                                                                 bad[i].v, false);
            assert_null(o);
            const char *msg = tg_ctx_error(ctx);
            const char *opname =
                composed ? "attention_composed" : "scaled_dot_product_attention";
            if (tg_ctx_status(ctx) != bad[i].want || !strstr(msg, bad[i].needle) ||
                (bad[i].k && !strstr(msg, opname)))
                fail_msg("bad case %zu (%s): status %d, message '%s'", i, opname,
                         (int)tg_ctx_status(ctx), msg);
            tg_ctx_clear_error(ctx);
        }
    }
    /* the backward with an lse of the wrong shape */
    tg_tensor *lse = NULL, *o = tg_scaled_dot_product_attention_lse(ctx, q, q, q, true, &lse);
    assert_non_null(o);
    assert_non_null(lse);
    assert_null(tg_scaled_dot_product_attention_backward(ctx, q, q, q, q, o, q, true, NULL, NULL));
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_ctx_error(ctx), "lse (2, 3, 5, 8)"));
    tg_ctx_clear_error(ctx);
    assert_non_null(tg_scaled_dot_product_attention_backward(ctx, q, q, q, q, o, lse, true, NULL,
                                                             NULL));
    tg_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_matches_composed),
        cmocka_unit_test(test_causal_ignores_later_keys),
        cmocka_unit_test(test_thread_count_independent),
        cmocka_unit_test(test_task_grouping_changes_no_bit),
        cmocka_unit_test(test_memory_linear_in_t),
        cmocka_unit_test(test_no_heap_in_steady_steps),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
