/*
 * The 2x2, stride-2, unpadded max-pooling path of the CPU backend (the cnns'
 * pooling) against a window scan written here: values and indices on data
 * full of ties, NaNs and infinities, where the first maximum of each window
 * in row-major order must win and a NaN must win over everything (PyTorch's
 * rule). The fixtures cover ties on ordinary data only.
 *
 * max_pool2d_backward's 2x2 path writes every element of dx itself (no zero
 * fill), so it is checked on odd sizes (a last row and column no window
 * covers) over an arena first filled with NaN, where a missed write shows;
 * the general path (taken for an x whose rows are not unit-stride: a
 * transposed view of the same values) must give the same dx.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/nn.h"

/* OW = 20: whole vectors of windows and a remainder. */
enum { N = 2, C = 3, H = 6, W = 40, OH = 3, OW = 20 };

static void test_pool_2x2_ties_nan_inf(void **state) {
    (void)state;
    /* Values drawn from a small set so that ties are everywhere. */
    const float pick[6] = {1.0f, 1.0f, 2.0f, -INFINITY, INFINITY, NAN};
    float x[N * C * H * W];
    unsigned seed = 3;
    for (int i = 0; i < N * C * H * W; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = pick[(seed >> 16) % 6];
    }
    tg_ctx_config cfg = {.device = TG_DEVICE_CPU, .threads = 2};
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_OK);
    int64_t xs[4] = {N, C, H, W};
    const int k[2] = {2, 2}, s[2] = {2, 2}, p[2] = {0, 0};
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, xs, x);
    tg_tensor *vt = tg_max_pool2d(ctx, xt, k, s, p), *it = tg_max_pool2d_indices(ctx, xt, k, s, p);
    assert_true(vt && it);
    float v[N * C * OH * OW];
    int64_t idx[N * C * OH * OW];
    assert_int_equal(tg_to_host(ctx, vt, v, sizeof v), TG_OK);
    assert_int_equal(tg_to_host(ctx, it, idx, sizeof idx), TG_OK);
    for (int pl = 0; pl < N * C; pl++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                const float *xp = x + pl * H * W;
                int best = 2 * oh * W + 2 * ow;
                for (int t = 0; t < 4 && !isnan(xp[best]); t++) {
                    int q = (2 * oh + t / 2) * W + 2 * ow + t % 2;
                    if (xp[q] > xp[best] || isnan(xp[q]))
                        best = q;
                }
                const int o = (pl * OH + oh) * OW + ow;
                assert_int_equal(idx[o], best);
                if (isnan(xp[best]))
                    assert_true(isnan(v[o]));
                else
                    assert_true(v[o] == xp[best]);
            }
    tg_ctx_free(ctx);
}

/* The reference gradient: each window's g at its first maximum (a NaN wins
 * and ends the scan). */
static void ref_backward(const float *x, const float *g, float *dx, int np, int h, int w) {
    const int oh_n = h / 2, ow_n = w / 2;
    memset(dx, 0, sizeof(float) * (size_t)(np * h * w));
    for (int pl = 0; pl < np; pl++)
        for (int oh = 0; oh < oh_n; oh++)
            for (int ow = 0; ow < ow_n; ow++) {
                const float *xp = x + pl * h * w;
                int best = 2 * oh * w + 2 * ow;
                for (int t = 0; t < 4 && !isnan(xp[best]); t++) {
                    int q = (2 * oh + t / 2) * w + 2 * ow + t % 2;
                    if (xp[q] > xp[best] || isnan(xp[q]))
                        best = q;
                }
                dx[pl * h * w + best] += g[(pl * oh_n + oh) * ow_n + ow];
            }
}

/* One (n, c, h, w) case: the 2x2 path (contiguous x) and the general path
 * (x as a transposed view) against ref_backward, element for element. */
static void check_backward(int n, int c, int h, int w, unsigned seed) {
    const float pick[6] = {1.0f, 1.0f, 2.0f, -INFINITY, INFINITY, NAN};
    const int np = n * c, oh = h / 2, ow = w / 2, nx = np * h * w, ng = np * oh * ow;
    float *x = malloc(sizeof(float) * (size_t)nx), *xt = malloc(sizeof(float) * (size_t)nx);
    float *g = malloc(sizeof(float) * (size_t)ng), *ref = malloc(sizeof(float) * (size_t)nx);
    float *got = malloc(sizeof(float) * (size_t)nx);
    assert_true(x && xt && g && ref && got);
    for (int i = 0; i < nx; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = pick[(seed >> 16) % 6];
    }
    /* xt holds each plane transposed (w, h): transpose(xt, 2, 3) is x. */
    for (int pl = 0; pl < np; pl++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++)
                xt[(pl * w + j) * h + i] = x[(pl * h + i) * w + j];
    for (int i = 0; i < ng; i++)
        g[i] = (float)(i % 23) - 11.5f;
    ref_backward(x, g, ref, np, h, w);

    tg_ctx_config cfg = {.device = TG_DEVICE_CPU, .threads = 2};
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_OK);
    /* NaN over the step arena, released: the tensors below reuse it. */
    int64_t junk = 8 * (int64_t)nx;
    assert_non_null(tg_full(ctx, TG_F32, 1, &junk, NAN));
    tg_step_reset(ctx);
    int64_t xs[4] = {n, c, h, w}, xts[4] = {n, c, w, h}, gs[4] = {n, c, oh, ow};
    const int k[2] = {2, 2}, s[2] = {2, 2}, p[2] = {0, 0};
    tg_tensor *xv = tg_from_data(ctx, TG_F32, 4, xs, x);
    tg_tensor *xtv = tg_transpose(ctx, tg_from_data(ctx, TG_F32, 4, xts, xt), 2, 3);
    tg_tensor *gv = tg_from_data(ctx, TG_F32, 4, gs, g);
    tg_tensor *fast = tg_max_pool2d_backward(ctx, gv, xv, k, s, p);
    tg_tensor *general = tg_max_pool2d_backward(ctx, gv, xtv, k, s, p);
    assert_true(fast && general);
    assert_false(fast->requires_grad);
    tg_tensor *outs[2] = {fast, general};
    for (int t = 0; t < 2; t++) {
        assert_int_equal(tg_to_host(ctx, outs[t], got, sizeof(float) * (size_t)nx), TG_OK);
        for (int i = 0; i < nx; i++)
            if (!(got[i] == ref[i]))
                fail_msg("%s path, (%d,%d,%d,%d) element %d: %g, expected %g",
                         t ? "general" : "2x2", n, c, h, w, i, got[i], ref[i]);
    }
    tg_ctx_free(ctx);
    free(x), free(xt), free(g), free(ref), free(got);
}

static void test_pool_2x2_backward_ties_nan_inf(void **state) {
    (void)state;
    check_backward(2, 3, 7, 9, 11); /* odd sizes */
    check_backward(1, 2, 6, 8, 5);  /* every element in a window */
    /* Past the threshold where planes run on two threads. */
    check_backward(4, 8, 25, 24, 7);
}

/* Bad arguments fail with a message that names the op and what was
 * expected, and make no tensor. */
static void test_pool_backward_bad_args(void **state) {
    (void)state;
    tg_ctx_config cfg = {.device = TG_DEVICE_CPU, .threads = 1};
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_OK);
    const int k[2] = {2, 2};
    int64_t xs[4] = {1, 2, 4, 6}, gs[4] = {1, 2, 2, 3}, bad[4] = {1, 2, 3, 2};
    tg_tensor *x = tg_zeros(ctx, TG_F32, 4, xs), *g = tg_zeros(ctx, TG_F32, 4, gs);
    tg_tensor *gbad = tg_zeros(ctx, TG_F32, 4, bad), *g64 = tg_zeros(ctx, TG_F64, 4, gs);
    assert_non_null(tg_max_pool2d_backward(ctx, g, x, k, NULL, NULL));
    /* The context keeps its first error: clear it before each check. */
    assert_null(tg_max_pool2d_backward(ctx, gbad, x, k, NULL, NULL));
    assert_non_null(strstr(tg_ctx_error(ctx), "max_pool2d_backward"));
    assert_non_null(strstr(tg_ctx_error(ctx), "(1, 2, 2, 3)"));
    tg_ctx_clear_error(ctx);
    assert_null(tg_max_pool2d_backward(ctx, g64, x, k, NULL, NULL));
    assert_non_null(strstr(tg_ctx_error(ctx), "max_pool2d_backward"));
    assert_non_null(strstr(tg_ctx_error(ctx), "f64"));
    tg_ctx_clear_error(ctx);
    assert_null(tg_max_pool2d_backward(ctx, NULL, x, k, NULL, NULL));
    tg_ctx_clear_error(ctx);
    assert_null(tg_max_pool2d_backward(ctx, g, x, (const int[]){2, 0}, NULL, NULL));
    assert_non_null(strstr(tg_ctx_error(ctx), "max_pool2d_backward: kernel"));
    tg_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_2x2_ties_nan_inf),
        cmocka_unit_test(test_pool_2x2_backward_ties_nan_inf),
        cmocka_unit_test(test_pool_backward_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
