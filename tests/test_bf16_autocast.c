/*
 * test_bf16_autocast.c: tg_ctx_set_precision(ctx, TG_PRECISION_BF16).
 *
 * Each product (matmul forward, its two gradients, batched and transposed
 * operands, conv2d and its two gradients with stride, padding, dilation and
 * bias) is checked against a reference computed here: the operands rounded to
 * bf16, the products summed in double. The autocast result must agree with it
 * to f32 accumulation accuracy, and must differ from the plain f32 result by
 * more than f32 rounding (the operands really were rounded) but by less than
 * bf16's relative precision. Parameters and gradients stay f32; f64 operands
 * are untouched; an unknown precision is refused. A linear layer and a conv2d
 * agree with PyTorch's torch.autocast values (tests/fixtures/bf16_autocast.txt,
 * made by tests/gen_fixtures_bf16.py) within bf16's precision. Without oneDNN the CPU
 * refuses bf16 with a message that says so, and the test checks that instead.
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

#include "tapegrad/nn.h"
#include "tapegrad/runtime.h"

static uint64_t seed = 0x243f6a8885a308d3ull;
static float uniform(void) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(seed >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static float *random_buf(int64_t n) {
    float *p = malloc((size_t)n * sizeof *p);
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++)
        p[i] = uniform();
    return p;
}

static double r16(float f) { return (double)tg_bf16_to_f32(tg_bf16_from_f32(f)); }

/* Compares got with the bf16 reference ref (|terms| summed in mag) and with
 * the f32 result f32: to f32 accumulation accuracy against ref, within bf16
 * precision of f32, and away from f32 somewhere. */
static void check(const char *what, const float *got, const double *ref, const double *mag,
                  const float *f32, int64_t n) {
    double far = 0;
    for (int64_t i = 0; i < n; i++) {
        const double tol = 2e-6 * mag[i] + 1e-6;
        if (fabs(got[i] - ref[i]) > tol)
            fail_msg("%s[%lld]: %.9g, the bf16 reference %.9g (tolerance %.3g)", what, (long long)i,
                     (double)got[i], ref[i], tol);
        const double d = fabs((double)got[i] - f32[i]);
        if (d > 1.6e-2 * mag[i] + 1e-6)
            fail_msg("%s[%lld]: %.9g is farther than bf16 precision from f32's %.9g", what,
                     (long long)i, (double)got[i], (double)f32[i]);
        if (mag[i] > 0 && d / mag[i] > far)
            far = d / mag[i];
    }
    if (far < 1e-5)
        fail_msg("%s: the bf16 result is within %.3g of f32's: the operands were not rounded", what,
                 far);
}

static tg_ctx *new_ctx(void) {
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    return ctx;
}

/* True when this build can do bf16 on the CPU; otherwise checks the refusal. */
static bool bf16_or_refusal(tg_ctx *ctx) {
    tg_status st = tg_ctx_set_precision(ctx, TG_PRECISION_BF16);
    if (st == TG_OK) {
        assert_int_equal(tg_ctx_precision(ctx), TG_PRECISION_BF16);
        return true;
    }
    assert_int_equal(st, TG_ERR_UNSUPPORTED);
    assert_non_null(strstr(tg_ctx_error(ctx), "oneDNN"));
    assert_int_equal(tg_ctx_precision(ctx), TG_PRECISION_F32);
    print_message("bf16 unavailable: %s\n", tg_ctx_error(ctx));
    return false;
}

static tg_tensor *param_of(tg_ctx *ctx, int nd, const int64_t *shape, const float *v,
                           const char *name) {
    tg_tensor *p = tg_param(ctx, TG_F32, nd, shape, name);
    assert_non_null(p);
    bool grad = tg_set_grad_enabled(ctx, false);
    assert_int_equal(tg_copy_(ctx, p, tg_from_data(ctx, TG_F32, nd, shape, v)), TG_OK);
    tg_set_grad_enabled(ctx, grad);
    return p;
}

static void to_host(tg_ctx *ctx, const tg_tensor *t, float *dst, int64_t n) {
    assert_non_null(t);
    assert_int_equal(t->dtype, TG_F32);
    assert_int_equal(tg_to_host(ctx, t, dst, (size_t)n * sizeof *dst), TG_OK);
}

/* y = a @ b^T (b used transposed, as a linear layer's weight), its gradients
 * for a seed g, in the precision p: y, da, db to the host. */
static void run_matmul(tg_precision p, int64_t n, int64_t k, int64_t m, const float *av,
                       const float *bv, const float *gv, float *y, float *da, float *db) {
    tg_ctx *ctx = new_ctx();
    if (p == TG_PRECISION_BF16)
        assert_int_equal(tg_ctx_set_precision(ctx, p), TG_OK);
    const int64_t sa[] = {n, k}, sb[] = {m, k}, sy[] = {n, m};
    tg_tensor *a = param_of(ctx, 2, sa, av, "a"), *b = param_of(ctx, 2, sb, bv, "b");
    tg_tensor *out = tg_matmul(ctx, a, tg_transpose(ctx, b, 0, 1));
    to_host(ctx, out, y, n * m);
    assert_int_equal(tg_backward(ctx, out, tg_from_data(ctx, TG_F32, 2, sy, gv), 0), TG_OK);
    to_host(ctx, a->grad, da, n * k);
    to_host(ctx, b->grad, db, m * k);
    tg_ctx_free(ctx);
}

static void test_matmul(void **state) {
    (void)state;
    tg_ctx *probe = new_ctx();
    bool ok = bf16_or_refusal(probe);
    tg_ctx_free(probe);
    if (!ok)
        return;
    enum {
        N = 37,
        K = 70,
        M = 29
    };
    float *av = random_buf(N * K), *bv = random_buf(M * K), *gv = random_buf(N * M);
    static float y[N * M], da[N * K], db[M * K], fy[N * M], fda[N * K], fdb[M * K];
    static double ref[N * K + M * K], mag[N * K + M * K];
    run_matmul(TG_PRECISION_BF16, N, K, M, av, bv, gv, y, da, db);
    run_matmul(TG_PRECISION_F32, N, K, M, av, bv, gv, fy, fda, fdb);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < M; j++) {
            double s = 0, t = 0;
            for (int q = 0; q < K; q++) {
                double v = r16(av[i * K + q]) * r16(bv[j * K + q]);
                s += v, t += fabs(v);
            }
            ref[i * M + j] = s, mag[i * M + j] = t;
        }
    check("y", y, ref, mag, fy, N * M);
    /* da = g @ b and db = g^T @ a, with g rounded as well. */
    for (int i = 0; i < N; i++)
        for (int q = 0; q < K; q++) {
            double s = 0, t = 0;
            for (int j = 0; j < M; j++) {
                double v = r16(gv[i * M + j]) * r16(bv[j * K + q]);
                s += v, t += fabs(v);
            }
            ref[i * K + q] = s, mag[i * K + q] = t;
        }
    check("da", da, ref, mag, fda, N * K);
    for (int j = 0; j < M; j++)
        for (int q = 0; q < K; q++) {
            double s = 0, t = 0;
            for (int i = 0; i < N; i++) {
                double v = r16(gv[i * M + j]) * r16(av[i * K + q]);
                s += v, t += fabs(v);
            }
            ref[j * K + q] = s, mag[j * K + q] = t;
        }
    check("db", db, ref, mag, fdb, M * K);
    free(av), free(bv), free(gv);
}

/* A batched product with a broadcast operand, and 1-D operands. */
static void test_matmul_batched(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx();
    if (!bf16_or_refusal(ctx)) {
        tg_ctx_free(ctx);
        return;
    }
    enum {
        B = 3,
        N = 5,
        K = 9,
        M = 4
    };
    float *av = random_buf(B * N * K), *bv = random_buf(K * M);
    const int64_t sa[] = {B, N, K}, sb[] = {K, M}, sv[] = {K};
    tg_tensor *a = tg_from_data(ctx, TG_F32, 3, sa, av), *b = tg_from_data(ctx, TG_F32, 2, sb, bv);
    static float y[B * N * M], f[B * N * M], v[M];
    static double ref[B * N * M], mag[B * N * M];
    to_host(ctx, tg_matmul(ctx, a, b), y, B * N * M);
    to_host(ctx, tg_matmul(ctx, tg_from_data(ctx, TG_F32, 1, sv, av), b), v, M);
    assert_int_equal(tg_ctx_set_precision(ctx, TG_PRECISION_F32), TG_OK);
    to_host(ctx, tg_matmul(ctx, a, b), f, B * N * M);
    for (int t = 0; t < B * N; t++)
        for (int j = 0; j < M; j++) {
            double s = 0, u = 0;
            for (int q = 0; q < K; q++) {
                double w = r16(av[t * K + q]) * r16(bv[q * M + j]);
                s += w, u += fabs(w);
            }
            ref[t * M + j] = s, mag[t * M + j] = u;
        }
    check("batched", y, ref, mag, f, B * N * M);
    for (int j = 0; j < M; j++)
        assert_true(fabs(v[j] - ref[j]) <= 2e-6 * mag[j] + 1e-6);
    tg_ctx_free(ctx);
    free(av), free(bv);
}

/* x (N, C, H, W), w (K, C, R, S), bias, stride 2, pad 1, dilation 2. */
enum {
    CN = 2,
    CC = 3,
    CH = 9,
    CW = 8,
    CK = 4,
    CR = 3,
    CS = 2,
    ST = 2,
    PD = 1,
    DL = 2
};
#define COH ((CH + 2 * PD - DL * (CR - 1) - 1) / ST + 1)
#define COW ((CW + 2 * PD - DL * (CS - 1) - 1) / ST + 1)

static void run_conv(tg_precision p, const float *xv, const float *wv, const float *bv,
                     const float *gv, float *y, float *dx, float *dw) {
    tg_ctx *ctx = new_ctx();
    if (p == TG_PRECISION_BF16)
        assert_int_equal(tg_ctx_set_precision(ctx, p), TG_OK);
    const int64_t sx[] = {CN, CC, CH, CW}, sw[] = {CK, CC, CR, CS}, sb[] = {CK},
                  sy[] = {CN, CK, COH, COW};
    tg_tensor *x = param_of(ctx, 4, sx, xv, "x"), *w = param_of(ctx, 4, sw, wv, "w");
    tg_tensor *b = param_of(ctx, 1, sb, bv, "b");
    const tg_conv2d_opts o = {{ST, ST}, {PD, PD}, {DL, DL}};
    tg_tensor *out = tg_conv2d(ctx, x, w, b, &o);
    to_host(ctx, out, y, CN * CK * COH * COW);
    assert_int_equal(tg_backward(ctx, out, tg_from_data(ctx, TG_F32, 4, sy, gv), 0), TG_OK);
    to_host(ctx, x->grad, dx, CN * CC * CH * CW);
    to_host(ctx, w->grad, dw, CK * CC * CR * CS);
    assert_int_equal(w->dtype, TG_F32);
    tg_ctx_free(ctx);
}

static void test_conv(void **state) {
    (void)state;
    tg_ctx *probe = new_ctx();
    bool ok = bf16_or_refusal(probe);
    tg_ctx_free(probe);
    if (!ok)
        return;
    enum {
        NX = CN * CC * CH * CW,
        NW = CK * CC * CR * CS,
        NY = CN * CK * COH * COW
    };
    float *xv = random_buf(NX), *wv = random_buf(NW), *bv = random_buf(CK), *gv = random_buf(NY);
    static float y[NY], dx[NX], dw[NW], fy[NY], fdx[NX], fdw[NW];
    static double ry[NY], my[NY], rdx[NX], mdx[NX], rdw[NW], mdw[NW];
    run_conv(TG_PRECISION_BF16, xv, wv, bv, gv, y, dx, dw);
    run_conv(TG_PRECISION_F32, xv, wv, bv, gv, fy, fdx, fdw);
    for (int n = 0; n < CN; n++)
        for (int k = 0; k < CK; k++)
            for (int oh = 0; oh < COH; oh++)
                for (int ow = 0; ow < COW; ow++) {
                    const int yi = ((n * CK + k) * COH + oh) * COW + ow;
                    ry[yi] = bv[k], my[yi] = fabs(bv[k]);
                    for (int c = 0; c < CC; c++)
                        for (int r = 0; r < CR; r++)
                            for (int s = 0; s < CS; s++) {
                                const int ih = oh * ST - PD + r * DL, iw = ow * ST - PD + s * DL;
                                if (ih < 0 || ih >= CH || iw < 0 || iw >= CW)
                                    continue;
                                const int xi = ((n * CC + c) * CH + ih) * CW + iw;
                                const int wi = ((k * CC + c) * CR + r) * CS + s;
                                const double v = r16(xv[xi]) * r16(wv[wi]);
                                ry[yi] += v, my[yi] += fabs(v);
                                const double a = r16(gv[yi]) * r16(wv[wi]);
                                rdx[xi] += a, mdx[xi] += fabs(a);
                                const double b = r16(gv[yi]) * r16(xv[xi]);
                                rdw[wi] += b, mdw[wi] += fabs(b);
                            }
                }
    check("conv y", y, ry, my, fy, NY);
    check("conv dx", dx, rdx, mdx, fdx, NX);
    check("conv dw", dw, rdw, mdw, fdw, NW);
    free(xv), free(wv), free(bv), free(gv);
}

/* f64 products are never rounded: bit for bit the f32-precision result. */
static void test_f64_untouched(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx();
    if (!bf16_or_refusal(ctx)) {
        tg_ctx_free(ctx);
        return;
    }
    double av[12], bv[12], y1[9], y2[9];
    for (int i = 0; i < 12; i++)
        av[i] = uniform() / 3.0, bv[i] = uniform() / 7.0;
    const int64_t sa[] = {3, 4}, sb[] = {4, 3};
    tg_tensor *a = tg_from_data(ctx, TG_F64, 2, sa, av), *b = tg_from_data(ctx, TG_F64, 2, sb, bv);
    assert_int_equal(tg_to_host(ctx, tg_matmul(ctx, a, b), y1, sizeof y1), TG_OK);
    assert_int_equal(tg_ctx_set_precision(ctx, TG_PRECISION_F32), TG_OK);
    assert_int_equal(tg_to_host(ctx, tg_matmul(ctx, a, b), y2, sizeof y2), TG_OK);
    assert_memory_equal(y1, y2, sizeof y1);
    tg_ctx_free(ctx);
}

/* ---- PyTorch's autocast values ---- */

/* Value i of the fixture's input sequence (gen_fixtures_bf16.py's vals). */
static void fx_values(float *v, int n, int a, int b) {
    for (int i = 0; i < n; i++)
        v[i] = (float)((double)((i * a + b) % 97) / 48.5 - 1.0);
}

/* The values of line `name` of the fixture file into v (n of them). */
static void fx_read(const char *name, double *v, int n) {
    FILE *f = fopen(TG_FIXTURE_DIR "/bf16_autocast.txt", "r");
    assert_non_null(f);
    char key[64];
    int count;
    bool found = false;
    while (!found && fscanf(f, "%63s", key) == 1) {
        if (key[0] == '#') {
            int c;
            while ((c = fgetc(f)) != '\n' && c != EOF) {
            }
            continue;
        }
        assert_int_equal(fscanf(f, "%d", &count), 1);
        found = strcmp(key, name) == 0;
        for (int i = 0; i < count; i++) {
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
        fail_msg("bf16_autocast.txt has no line %s", name);
}

/* Within 1e-2 of the largest PyTorch value: PyTorch rounds its products and
 * their gradients to bf16, tapegrad keeps them f32. */
static void fx_check(const char *name, const float *got, int n) {
    double *want = malloc((size_t)n * sizeof *want), mx = 0;
    assert_non_null(want);
    fx_read(name, want, n);
    for (int i = 0; i < n; i++)
        mx = fmax(mx, fabs(want[i]));
    for (int i = 0; i < n; i++)
        if (fabs(got[i] - want[i]) > 1e-2 * mx)
            fail_msg("%s[%d]: %.9g, PyTorch autocast %.9g", name, i, (double)got[i], want[i]);
    free(want);
}

static void test_torch_autocast(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx();
    if (!bf16_or_refusal(ctx)) {
        tg_ctx_free(ctx);
        return;
    }
    float xv[24], wv[30], bv[5], gv[20], out[256];
    fx_values(xv, 24, 7, 3), fx_values(wv, 30, 11, 5), fx_values(bv, 5, 13, 1);
    fx_values(gv, 20, 17, 2);
    const int64_t sx[] = {4, 6}, sw[] = {5, 6}, sb[] = {5}, sg[] = {4, 5};
    tg_tensor *x = param_of(ctx, 2, sx, xv, "x"), *w = param_of(ctx, 2, sw, wv, "w");
    tg_tensor *b = param_of(ctx, 1, sb, bv, "b");
    tg_tensor *y = tg_add(ctx, tg_matmul(ctx, x, tg_transpose(ctx, w, 0, 1)), b);
    to_host(ctx, y, out, 20);
    fx_check("linear.y", out, 20);
    assert_int_equal(tg_backward(ctx, y, tg_from_data(ctx, TG_F32, 2, sg, gv), 0), TG_OK);
    to_host(ctx, x->grad, out, 24);
    fx_check("linear.dx", out, 24);
    to_host(ctx, w->grad, out, 30);
    fx_check("linear.dw", out, 30);

    static float cxv[216], cwv[108], cbv[4], cgv[288], cout[288];
    fx_values(cxv, 216, 19, 7), fx_values(cwv, 108, 23, 4), fx_values(cbv, 4, 29, 6);
    fx_values(cgv, 288, 31, 8);
    const int64_t scx[] = {2, 3, 6, 6}, scw[] = {4, 3, 3, 3}, scb[] = {4}, scg[] = {2, 4, 6, 6};
    tg_tensor *cx = param_of(ctx, 4, scx, cxv, "cx"), *cw = param_of(ctx, 4, scw, cwv, "cw");
    tg_tensor *cb = param_of(ctx, 1, scb, cbv, "cb");
    const tg_conv2d_opts o = {{1, 1}, {1, 1}, {1, 1}};
    tg_tensor *cy = tg_conv2d(ctx, cx, cw, cb, &o);
    to_host(ctx, cy, cout, 288);
    fx_check("conv.y", cout, 288);
    assert_int_equal(tg_backward(ctx, cy, tg_from_data(ctx, TG_F32, 4, scg, cgv), 0), TG_OK);
    to_host(ctx, cx->grad, cxv, 216);
    fx_check("conv.dx", cxv, 216);
    to_host(ctx, cw->grad, cwv, 108);
    fx_check("conv.dw", cwv, 108);
    tg_ctx_free(ctx);
}

static void test_bad_precision(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx();
    assert_int_equal(tg_ctx_set_precision(ctx, (tg_precision)7), TG_ERR_INVALID);
    assert_non_null(strstr(tg_ctx_error(ctx), "unknown precision 7"));
    assert_int_equal(tg_ctx_precision(ctx), TG_PRECISION_F32);
    assert_string_equal(tg_precision_name(TG_PRECISION_BF16), "bf16");
    assert_string_equal(tg_precision_name((tg_precision)7), "?");
    tg_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),        cmocka_unit_test(test_matmul_batched),
        cmocka_unit_test(test_conv),          cmocka_unit_test(test_f64_untouched),
        cmocka_unit_test(test_bad_precision), cmocka_unit_test(test_torch_autocast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
