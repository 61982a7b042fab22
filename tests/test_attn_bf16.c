/*
 * tests/test_attn_bf16.c: the fused scaled_dot_product_attention under
 * autocast (tg_ctx_set_precision(ctx, TG_PRECISION_BF16)), CPU kernel
 * kernels/cpu/cpu_attn_bf16.c.
 *
 * The output, lse and the gradients of q, k and v are checked against a
 * reference computed here in double from the same inputs rounded to bf16,
 * with P (forward, dV) and dS (dK, dQ) rounded to bf16 where the kernel
 * rounds them, within a bound derived below; and against the f32 kernel:
 * close (a loose bound) but not equal (the operands really were rounded).
 * Causal and not, T_q != T_k, head dims 16 to 64, 128 and an odd one, T not a
 * multiple of the tiles; both block products (vdpbf16ps, where the CPU has
 * AVX512_BF16, and the portable one); the same bits at 1, 2 and 3 threads
 * (the one-pass and two-pass backwards, forward tasks of 1 to 4 tiles); f64
 * operands untouched by the setting; head dims above 128 on the f32 kernel;
 * no heap call in a steady step; and
 * PyTorch's autocast SDPA values (tests/fixtures/attn_bf16.txt, made by
 * tests/gen_fixtures_attn_bf16.py) within bf16's precision. Without oneDNN
 * the context refuses bf16 and the test skips.
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

#if !defined(__SANITIZE_ADDRESS__)
#include "heap_count.h"
#endif
#include "cpu/cpu.h"
#include "tapegrad/nn.h"
#include "tapegrad/runtime.h"

typedef struct acase {
    int64_t bh, tq, tk, d;
    bool causal;
} acase;

static const acase k_cases[] = {
    {2, 70, 70, 16, true},  {2, 70, 70, 16, false},  {3, 100, 90, 24, false},
    {2, 100, 90, 24, true}, {1, 33, 130, 64, false}, {2, 130, 130, 64, true},
    {1, 5, 9, 17, true},    {3, 1, 40, 32, false},   {2, 45, 45, 40, true},
    {1, 40, 40, 128, true},
};

static uint64_t g_rs = 0x9E3779B97F4A7C15ull;
static float unif(void) {
    g_rs = g_rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rs >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* q, k (scaled so that softmax is neither flat nor one-hot), v, the seed
 * gradient w; and a run's results. */
typedef struct inputs {
    int64_t nq, nk;
    float *q, *k, *v, *w;
} inputs;
typedef struct results {
    float *o, *lse, *dq, *dk, *dv;
} results;

static void inputs_make(inputs *in, const acase *c) {
    in->nq = c->bh * c->tq * c->d, in->nk = c->bh * c->tk * c->d;
    in->q = malloc((size_t)in->nq * sizeof(float));
    in->w = malloc((size_t)in->nq * sizeof(float));
    in->k = malloc((size_t)in->nk * sizeof(float));
    in->v = malloc((size_t)in->nk * sizeof(float));
    assert_true(in->q && in->w && in->k && in->v);
    for (int64_t i = 0; i < in->nq; i++)
        in->q[i] = 1.5f * unif(), in->w[i] = unif();
    for (int64_t i = 0; i < in->nk; i++)
        in->k[i] = 1.5f * unif(), in->v[i] = unif();
}
static void inputs_free(inputs *in) { free(in->q), free(in->k), free(in->v), free(in->w); }
static void results_free(results *r) {
    free(r->o), free(r->lse), free(r->dq), free(r->dk), free(r->dv);
}

static float *host(tg_ctx *ctx, const tg_tensor *t, int64_t n) {
    if (!t)
        fail_msg("missing tensor: %s", tg_ctx_error(ctx));
    assert_int_equal(tg_numel(t), n);
    float *p = malloc((size_t)n * sizeof(float));
    assert_non_null(p);
    assert_int_equal(tg_to_host(ctx, t, p, (size_t)n * sizeof(float)), TG_OK);
    return p;
}

/* Sets bf16 on ctx; false (and a message) where this build cannot. */
static bool try_bf16(tg_ctx *ctx) {
    if (tg_ctx_set_precision(ctx, TG_PRECISION_BF16) == TG_OK)
        return true;
    print_message("bf16 unavailable: %s\n", tg_ctx_error(ctx));
    return false;
}

/* One forward and backward of case c at precision p on `threads` threads;
 * false when bf16 is unavailable. */
static bool run(const acase *c, const inputs *in, tg_precision p, int threads, results *r) {
    tg_ctx_config cc = {.threads = threads};
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    if (p == TG_PRECISION_BF16 && !try_bf16(ctx)) {
        tg_ctx_free(ctx);
        return false;
    }
    const int64_t sq[3] = {c->bh, c->tq, c->d}, sk[3] = {c->bh, c->tk, c->d};
    tg_tensor *q = tg_from_data(ctx, TG_F32, 3, sq, in->q);
    tg_tensor *k = tg_from_data(ctx, TG_F32, 3, sk, in->k);
    tg_tensor *v = tg_from_data(ctx, TG_F32, 3, sk, in->v);
    assert_true(q && k && v);
    assert_int_equal(tg_set_requires_grad(ctx, q, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, k, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, v, true), TG_OK);
    tg_tensor *lse = NULL;
    tg_tensor *o = tg_scaled_dot_product_attention_lse(ctx, q, k, v, c->causal, &lse);
    if (!o)
        fail_msg("attention: %s", tg_ctx_error(ctx));
    if (tg_backward(ctx, o, tg_from_data(ctx, TG_F32, 3, sq, in->w), 0) != TG_OK)
        fail_msg("backward: %s", tg_ctx_error(ctx));
    r->o = host(ctx, o, in->nq);
    r->lse = host(ctx, lse, c->bh * c->tq);
    r->dq = host(ctx, q->grad, in->nq);
    r->dk = host(ctx, k->grad, in->nk);
    r->dv = host(ctx, v->grad, in->nk);
    tg_ctx_free(ctx);
    return true;
}

static double r16(double x) { return (double)tg_bf16_to_f32(tg_bf16_from_f32((float)x)); }

/*
 * The reference, in double from the bf16-rounded q, k, v and w, with each
 * result's tolerance. Per query row i (keys j < n_i):
 *   s_ij = scale q_i . k_j, lse_i = log sum_j exp(s_ij), P_ij = exp(s_ij - lse_i),
 *   o_i = sum_j bf16(P_ij) v_j; D_i = w_i . o_i, dP_ij = w_i . v_j,
 *   dS_ij = P_ij (dP_ij - D_i) scale,
 *   dV_j = sum_i bf16(P_ij) w_i, dK_j = sum_i bf16(dS_ij) q_i, dQ_i = sum_j bf16(dS_ij) k_j.
 * Tolerances: the kernel's scores are f32 sums of exact bf16 products, off by
 * at most es_i = d 2^-24 scale max_j sum_c |q_ic k_jc| (f32 summation), which
 * moves lse by as much and P relatively by 2 es_i. The kernel rounds its own P
 * (scaled by the running maximum: a different value, so a different rounding)
 * where the reference rounds the exact one: each within 2^-9 relative, so the
 * two rounded values differ by at most (2^-8 + 2 es_i) P_ij. Hence
 *   |o_ic - ref| <= (2^-8 + 2 es_i) sum_j P_ij |v_jc|,
 *   |dV_jc - ref| <= sum_i (2^-8 + 2 es_i) P_ij |w_ic|,
 * and with e_ij = (2^-8 + 2 es_i) |dS_ij| + P_ij scale (ed_ij + eD_i), where
 * ed_ij = d 2^-24 sum_c |w_ic v_jc| (dP's f32 sum) and eD_i = sum_c |w_ic| eo_ic
 * (D from the kernel's o):
 *   |dK_jc - ref| <= sum_i e_ij |q_ic|, |dQ_ic - ref| <= sum_j e_ij |k_jc|.
 * The f32 accumulations of the products themselves add d or T times 2^-24
 * of the same sums, far below these terms; the tests allow twice the bound
 * plus 1e-6 (1e-5 relative for lse).
 */
typedef struct reference {
    double *o, *lse, *dq, *dk, *dv;      /* values */
    double *to, *tlse, *tdq, *tdk, *tdv; /* tolerances */
} reference;

static double *zeros(int64_t n) {
    double *p = calloc((size_t)n, sizeof(double));
    assert_non_null(p);
    return p;
}

static void reference_make(const acase *c, const inputs *in, reference *r) {
    const int64_t d = c->d, tq = c->tq, tk = c->tk;
    const double scale = 1.0 / sqrt((double)d), u8 = 1.0 / 256, e24 = ldexp(1.0, -24);
    r->o = zeros(in->nq), r->to = zeros(in->nq), r->dq = zeros(in->nq), r->tdq = zeros(in->nq);
    r->lse = zeros(c->bh * tq), r->tlse = zeros(c->bh * tq);
    r->dk = zeros(in->nk), r->tdk = zeros(in->nk), r->dv = zeros(in->nk), r->tdv = zeros(in->nk);
    double *P = zeros(tq * tk), *dS = zeros(tq * tk), *E = zeros(tq * tk), *es = zeros(tq);
    for (int64_t b = 0; b < c->bh; b++) {
        const float *q = in->q + b * tq * d, *k = in->k + b * tk * d, *v = in->v + b * tk * d;
        const float *w = in->w + b * tq * d;
        double *o = r->o + b * tq * d, *to = r->to + b * tq * d;
        for (int64_t i = 0; i < tq; i++) {
            const int64_t n = c->causal && i + 1 < tk ? i + 1 : tk;
            double m = -INFINITY, l = 0, mag = 0;
            for (int64_t j = 0; j < n; j++) {
                double s = 0, sa = 0;
                for (int64_t x = 0; x < d; x++) {
                    s += r16(q[i * d + x]) * r16(k[j * d + x]);
                    sa += fabs(r16(q[i * d + x]) * r16(k[j * d + x]));
                }
                P[i * tk + j] = s * scale;
                m = fmax(m, s * scale);
                mag = fmax(mag, sa * scale);
            }
            for (int64_t j = 0; j < n; j++)
                l += exp(P[i * tk + j] - m);
            const double lse = m + log(l);
            r->lse[b * tq + i] = lse;
            es[i] = (double)d * e24 * mag;
            r->tlse[b * tq + i] = 2 * es[i] + 1e-5 * (1 + fabs(lse));
            for (int64_t j = 0; j < tk; j++)
                P[i * tk + j] = j < n ? exp(P[i * tk + j] - lse) : 0;
            for (int64_t x = 0; x < d; x++) {
                double acc = 0, a = 0;
                for (int64_t j = 0; j < n; j++) {
                    acc += r16(P[i * tk + j]) * r16(v[j * d + x]);
                    a += P[i * tk + j] * fabs(r16(v[j * d + x]));
                }
                o[i * d + x] = acc;
                to[i * d + x] = 2 * (u8 + 2 * es[i]) * a + 1e-6;
            }
            double D = 0, eD = 0;
            for (int64_t x = 0; x < d; x++) {
                D += r16(w[i * d + x]) * o[i * d + x];
                eD += fabs(r16(w[i * d + x])) * to[i * d + x];
            }
            for (int64_t j = 0; j < n; j++) {
                double dp = 0, dpa = 0;
                for (int64_t x = 0; x < d; x++) {
                    dp += r16(w[i * d + x]) * r16(v[j * d + x]);
                    dpa += fabs(r16(w[i * d + x]) * r16(v[j * d + x]));
                }
                const double p = P[i * tk + j];
                dS[i * tk + j] = p * (dp - D) * scale;
                E[i * tk + j] = (u8 + 2 * es[i]) * fabs(dS[i * tk + j]) +
                                p * scale * ((double)d * e24 * dpa + eD);
            }
        }
        double *dq = r->dq + b * tq * d, *dk = r->dk + b * tk * d, *dv = r->dv + b * tk * d;
        double *tdq = r->tdq + b * tq * d, *tdk = r->tdk + b * tk * d, *tdv = r->tdv + b * tk * d;
        for (int64_t i = 0; i < tq; i++)
            for (int64_t j = 0; j < tk; j++) {
                const double p = P[i * tk + j], ds = dS[i * tk + j], e = E[i * tk + j];
                if (p == 0)
                    continue;
                for (int64_t x = 0; x < d; x++) {
                    const double wq = r16(w[i * d + x]), qq = r16(q[i * d + x]);
                    const double kk = r16(k[j * d + x]);
                    dv[j * d + x] += r16(p) * wq;
                    tdv[j * d + x] += 2 * (u8 + 2 * es[i]) * p * fabs(wq);
                    dk[j * d + x] += r16(ds) * qq;
                    tdk[j * d + x] += 2 * e * fabs(qq);
                    dq[i * d + x] += r16(ds) * kk;
                    tdq[i * d + x] += 2 * e * fabs(kk);
                }
            }
        for (int64_t x = 0; x < tq * d; x++)
            tdq[x] += 1e-6;
        for (int64_t x = 0; x < tk * d; x++)
            tdk[x] += 1e-6, tdv[x] += 1e-6;
        memset(P, 0, (size_t)(tq * tk) * sizeof(double));
        memset(dS, 0, (size_t)(tq * tk) * sizeof(double));
        memset(E, 0, (size_t)(tq * tk) * sizeof(double));
    }
    free(P), free(dS), free(E), free(es);
}

static void reference_free(reference *r) {
    free(r->o), free(r->lse), free(r->dq), free(r->dk), free(r->dv);
    free(r->to), free(r->tlse), free(r->tdq), free(r->tdk), free(r->tdv);
}

static void expect_ref(const char *what, const acase *c, const char *path, const float *got,
                       const double *ref, const double *tol, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - ref[i]) <= tol[i]))
            fail_msg("%s (%s path) of (%lld, %lld, %lld, %lld)%s at %lld: %.9g, the bf16 "
                     "reference %.9g (tolerance %.3g)",
                     what, path, (long long)c->bh, (long long)c->tq, (long long)c->tk,
                     (long long)c->d, c->causal ? " causal" : "", (long long)i, (double)got[i],
                     ref[i], tol[i]);
}

/* Close to the f32 kernel's result (within 5% of its largest magnitude:
 * bf16 operands move scores and products by about 2^-8 relative) but not
 * equal to it. */
static void expect_near_f32(const char *what, const float *got, const float *f32, int64_t n) {
    double big = 0, far = 0;
    for (int64_t i = 0; i < n; i++)
        big = fmax(big, fabs((double)f32[i]));
    for (int64_t i = 0; i < n; i++) {
        const double dd = fabs((double)got[i] - (double)f32[i]);
        if (dd > 0.05 * big + 1e-6)
            fail_msg("%s[%lld]: %.9g, f32's %.9g (largest %.3g)", what, (long long)i,
                     (double)got[i], (double)f32[i], big);
        far = fmax(far, dd);
    }
    if (!(far > 1e-6 * big))
        fail_msg("%s: within %.3g of f32's result: the operands were not rounded", what, far);
}

/* Every case on the path given, against the reference and the f32 kernel. */
static void check_path(int path) {
    const int prev = tg__cpu_attn_bf16_set_path(path);
    const char *name = path == TG__ATTN_BF16_AVX512 ? "vdpbf16ps" : "portable";
    for (size_t ci = 0; ci < sizeof k_cases / sizeof k_cases[0]; ci++) {
        const acase *c = &k_cases[ci];
        inputs in;
        inputs_make(&in, c);
        results rb, rf;
        if (!run(c, &in, TG_PRECISION_BF16, 1, &rb)) {
            inputs_free(&in);
            tg__cpu_attn_bf16_set_path(prev);
            skip();
        }
        reference ref;
        reference_make(c, &in, &ref);
        expect_ref("o", c, name, rb.o, ref.o, ref.to, in.nq);
        expect_ref("lse", c, name, rb.lse, ref.lse, ref.tlse, c->bh * c->tq);
        expect_ref("dq", c, name, rb.dq, ref.dq, ref.tdq, in.nq);
        expect_ref("dk", c, name, rb.dk, ref.dk, ref.tdk, in.nk);
        expect_ref("dv", c, name, rb.dv, ref.dv, ref.tdv, in.nk);
        assert_true(run(c, &in, TG_PRECISION_F32, 1, &rf));
        expect_near_f32("o", rb.o, rf.o, in.nq);
        expect_near_f32("dq", rb.dq, rf.dq, in.nq);
        expect_near_f32("dk", rb.dk, rf.dk, in.nk);
        expect_near_f32("dv", rb.dv, rf.dv, in.nk);
        reference_free(&ref);
        results_free(&rb);
        results_free(&rf);
        inputs_free(&in);
    }
    tg__cpu_attn_bf16_set_path(prev);
}

static void test_portable_matches_reference(void **state) {
    (void)state;
    check_path(TG__ATTN_BF16_PORTABLE);
}

static void test_vdpbf16ps_matches_reference(void **state) {
    (void)state;
    if (!tg__cpu_attn_bf16_native()) {
        print_message("this CPU has no AVX512_BF16: the vdpbf16ps path is not tested\n");
        skip();
    }
    check_path(TG__ATTN_BF16_AVX512);
}

/* 1, 2 and 3 threads give the same bits on each path: with 4 BH rows, 1
 * thread runs the one-pass backward and forward tasks of 4 tiles, 2 and 3
 * threads the two-pass backward and tasks of 2 or 1 tiles. */
static void test_thread_count_independent(void **state) {
    (void)state;
    for (int path = 0; path < 2; path++) {
        if (path == TG__ATTN_BF16_AVX512 && !tg__cpu_attn_bf16_native())
            continue;
        const int prev = tg__cpu_attn_bf16_set_path(path);
        for (int causal = 0; causal < 2; causal++) {
            const acase c = {4, 130, 130, 32, causal != 0};
            inputs in;
            inputs_make(&in, &c);
            results r[3];
            for (int t = 0; t < 3; t++)
                if (!run(&c, &in, TG_PRECISION_BF16, t + 1, &r[t]))
                    skip();
            for (int t = 1; t < 3; t++) {
                assert_memory_equal(r[0].o, r[t].o, (size_t)in.nq * sizeof(float));
                assert_memory_equal(r[0].lse, r[t].lse, (size_t)(c.bh * c.tq) * sizeof(float));
                assert_memory_equal(r[0].dq, r[t].dq, (size_t)in.nq * sizeof(float));
                assert_memory_equal(r[0].dk, r[t].dk, (size_t)in.nk * sizeof(float));
                assert_memory_equal(r[0].dv, r[t].dv, (size_t)in.nk * sizeof(float));
            }
            for (int t = 0; t < 3; t++)
                results_free(&r[t]);
            inputs_free(&in);
        }
        tg__cpu_attn_bf16_set_path(prev);
    }
}

/* f64 operands are never rounded: the bf16 setting changes no bit. */
static void test_f64_untouched(void **state) {
    (void)state;
    const int64_t s[3] = {2, 37, 16};
    double out[2][2 * 37 * 16], gq[2][2 * 37 * 16];
    for (int pass = 0; pass < 2; pass++) {
        tg_ctx *ctx;
        assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
        if (pass == 1 && !try_bf16(ctx)) {
            tg_ctx_free(ctx);
            skip();
        }
        tg_tensor *t[3];
        g_rs = 0x243f6a8885a308d3ull;
        for (int i = 0; i < 3; i++) {
            double vals[2 * 37 * 16];
            for (size_t x = 0; x < sizeof vals / sizeof vals[0]; x++)
                vals[x] = 1.5 * unif();
            t[i] = tg_from_data(ctx, TG_F64, 3, s, vals);
            assert_non_null(t[i]);
            assert_int_equal(tg_set_requires_grad(ctx, t[i], true), TG_OK);
        }
        tg_tensor *o = tg_scaled_dot_product_attention(ctx, t[0], t[1], t[2], true);
        assert_non_null(o);
        assert_int_equal(tg_backward(ctx, o, tg_ones_like(ctx, o), 0), TG_OK);
        assert_int_equal(tg_to_host(ctx, o, out[pass], sizeof out[pass]), TG_OK);
        assert_int_equal(tg_to_host(ctx, t[0]->grad, gq[pass], sizeof gq[pass]), TG_OK);
        tg_ctx_free(ctx);
    }
    assert_memory_equal(out[0], out[1], sizeof out[0]);
    assert_memory_equal(gq[0], gq[1], sizeof gq[0]);
}

/* Head dims above the bf16 kernel's 128 run the f32 kernel: the same bits as
 * at f32 precision. */
static void test_large_head_dim_runs_f32(void **state) {
    (void)state;
    const acase c = {2, 20, 20, 136, true};
    inputs in;
    inputs_make(&in, &c);
    results rb, rf;
    if (!run(&c, &in, TG_PRECISION_BF16, 1, &rb)) {
        inputs_free(&in);
        skip();
    }
    assert_true(run(&c, &in, TG_PRECISION_F32, 1, &rf));
    assert_memory_equal(rb.o, rf.o, (size_t)in.nq * sizeof(float));
    assert_memory_equal(rb.dq, rf.dq, (size_t)in.nq * sizeof(float));
    assert_memory_equal(rb.dk, rf.dk, (size_t)in.nk * sizeof(float));
    assert_memory_equal(rb.dv, rf.dv, (size_t)in.nk * sizeof(float));
    results_free(&rb);
    results_free(&rf);
    inputs_free(&in);
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
    if (!try_bf16(ctx)) {
        tg_ctx_free(ctx);
        skip();
    }
    const int64_t shape[4] = {2, 2, 130, 32};
    tg_tensor *p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = tg_persistent(ctx, TG_F32, 4, shape, i == 0 ? "q" : i == 1 ? "k" : "v");
        assert_non_null(p[i]);
        assert_int_equal(tg_fill_(ctx, p[i], 0.05 * (i + 1)), TG_OK);
        assert_int_equal(tg_set_requires_grad(ctx, p[i], true), TG_OK);
    }
    for (int step = 0; step < 5; step++) {
        if (step == 2)
            tg_heap_count_start(0);
        tg_step_reset(ctx);
        tg_tensor *o = tg_scaled_dot_product_attention(ctx, p[0], p[1], p[2], step % 2 == 0);
        tg_tensor *l = o ? tg_sum(ctx, tg_mul(ctx, o, o), 0, NULL, false) : NULL;
        if (!l || tg_backward(ctx, l, NULL, 0) != TG_OK)
            fail_msg("%s", tg_ctx_error(ctx));
    }
    const long calls = tg_heap_count_stop();
    tg_ctx_free(ctx);
    assert_int_equal(calls, 0);
#endif
}

/* ---- PyTorch's autocast values ---- */

/* The values of line `name` of the fixture file into v (n of them). */
static void fx_read(const char *name, double *v, int64_t n) {
    FILE *f = fopen(TG_FIXTURE_DIR "/attn_bf16.txt", "r");
    assert_non_null(f);
    char key[64];
    long long count;
    bool found = false;
    while (!found && fscanf(f, "%63s", key) == 1) {
        if (key[0] == '#') {
            int c;
            while ((c = fgetc(f)) != '\n' && c != EOF) {
            }
            continue;
        }
        assert_int_equal(fscanf(f, "%lld", &count), 1);
        found = strcmp(key, name) == 0;
        for (long long i = 0; i < count; i++) {
            double x;
            assert_int_equal(fscanf(f, "%lf", &x), 1);
            if (found && i < n)
                v[i] = x;
        }
        if (found)
            assert_int_equal(count, n);
    }
    fclose(f);
    if (!found)
        fail_msg("attn_bf16.txt has no line %s", name);
}

/* Within 1e-2 of the largest PyTorch value: PyTorch returns the output and
 * the gradients rounded to bf16 (2^-9 relative), and rounds its own P and dS
 * (2^-8 between two roundings, as in the reference's bound); tapegrad keeps
 * f32. */
static void fx_check(const char *name, const float *got, int64_t n) {
    double *want = malloc((size_t)n * sizeof *want), mx = 0;
    assert_non_null(want);
    fx_read(name, want, n);
    for (int64_t i = 0; i < n; i++)
        mx = fmax(mx, fabs(want[i]));
    for (int64_t i = 0; i < n; i++)
        if (fabs((double)got[i] - want[i]) > 1e-2 * mx)
            fail_msg("%s[%lld]: %.9g, PyTorch autocast %.9g", name, (long long)i, (double)got[i],
                     want[i]);
    free(want);
}

/* gen_fixtures_attn_bf16.py's vals(n, a, b) times m. */
static void fx_values(float *v, int64_t n, int a, int b, float m) {
    for (int64_t i = 0; i < n; i++)
        v[i] = m * (float)((double)((i * a + b) % 97) / 48.5 - 1.0);
}

static void test_torch_autocast(void **state) {
    (void)state;
    for (int causal = 0; causal < 2; causal++) {
        const int64_t tk = causal ? 9 : 13;
        const acase c = {2, 9, tk, 16, causal != 0};
        inputs in = {.nq = 2 * 9 * 16, .nk = 2 * tk * 16};
        float q[2 * 9 * 16], w[2 * 9 * 16], k[2 * 13 * 16], v[2 * 13 * 16];
        fx_values(q, in.nq, 7, 3, 2), fx_values(k, in.nk, 11, 5, 2);
        fx_values(v, in.nk, 13, 1, 1), fx_values(w, in.nq, 17, 2, 1);
        in.q = q, in.k = k, in.v = v, in.w = w;
        results r;
        if (!run(&c, &in, TG_PRECISION_BF16, 1, &r))
            skip();
        char name[32];
        const char *pre = causal ? "sdpa_causal" : "sdpa";
        snprintf(name, sizeof name, "%s.o", pre), fx_check(name, r.o, in.nq);
        snprintf(name, sizeof name, "%s.dq", pre), fx_check(name, r.dq, in.nq);
        snprintf(name, sizeof name, "%s.dk", pre), fx_check(name, r.dk, in.nk);
        snprintf(name, sizeof name, "%s.dv", pre), fx_check(name, r.dv, in.nk);
        results_free(&r);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_portable_matches_reference),
        cmocka_unit_test(test_vdpbf16ps_matches_reference),
        cmocka_unit_test(test_thread_count_independent),
        cmocka_unit_test(test_f64_untouched),
        cmocka_unit_test(test_large_head_dim_runs_f32),
        cmocka_unit_test(test_no_heap_in_steady_steps),
        cmocka_unit_test(test_torch_autocast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
