/*
 * Convolutions with a batch that the CPU kernels split across threads (each
 * thread runs its samples in its own workspace slot and the weight gradient
 * is summed per thread), at 1 and 2 threads, against a direct convolution
 * computed here in double: forward with bias, the input gradient and the
 * weight gradient, with stride, padding and dilation, and a batch of 5 that does not
 * split evenly. The small cases of test_torch_fixtures.c and test_gradcheck.c
 * mostly have batches of 1 or 2.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "tapegrad/nn.h"

/* The shape of a case; zero sizes take the defaults: 16 channels of 48x48
 * with a 3x3 kernel, about 1.5 MB of columns per sample. */
typedef struct geo {
    int st, pad, dil, oh, ow;
    int n, c, h, w, k, r, s;
} geo;

static float *rand_buf(int64_t n, unsigned *seed) {
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        v[i] = (float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return v;
}

/* The input index of output o and kernel tap r, or -1 in the padding. */
static int tap(const geo *g, int o, int r, int size) {
    int i = o * g->st - g->pad + r * g->dil;
    return i >= 0 && i < size ? i : -1;
}

static void check_close(const float *got, const double *want, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        assert_true(fabs(got[i] - want[i]) <= 1e-3 * (1.0 + fabs(want[i])));
}

static void run_case(const geo *gin, int threads) {
    geo g = *gin;
    const int N = g.n ? g.n : 5, C = g.c ? g.c : 16, H = g.h ? g.h : 48, W = g.w ? g.w : 48;
    const int K = g.k ? g.k : 8, R = g.r ? g.r : 3, S = g.s ? g.s : 3;
    g.oh = (H + 2 * g.pad - g.dil * (R - 1) - 1) / g.st + 1;
    g.ow = (W + 2 * g.pad - g.dil * (S - 1) - 1) / g.st + 1;
    unsigned seed = 7;
    const int64_t nx = N * C * H * W, nw = K * C * R * S, ng = (int64_t)N * K * g.oh * g.ow;
    float *x = rand_buf(nx, &seed), *w = rand_buf(nw, &seed), *b = rand_buf(K, &seed);
    float *gy = rand_buf(ng, &seed);
    double *y = calloc((size_t)ng, sizeof *y), *dx = calloc((size_t)nx, sizeof *dx);
    double *dw = calloc((size_t)nw, sizeof *dw);
    assert_true(y && dx && dw);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int oh = 0; oh < g.oh; oh++)
                for (int ow = 0; ow < g.ow; ow++) {
                    const int64_t o = ((int64_t)(n * K + k) * g.oh + oh) * g.ow + ow;
                    double acc = b[k];
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < R; r++)
                            for (int s = 0; s < S; s++) {
                                int ih = tap(&g, oh, r, H), iw = tap(&g, ow, s, W);
                                if (ih < 0 || iw < 0)
                                    continue;
                                const int64_t xi = ((int64_t)(n * C + c) * H + ih) * W + iw;
                                const int64_t wi = ((k * C + c) * R + r) * S + s;
                                acc += (double)x[xi] * w[wi];
                                dx[xi] += (double)gy[o] * w[wi];
                                dw[wi] += (double)gy[o] * x[xi];
                            }
                    y[o] = acc;
                }

    tg_ctx_config cfg = {.device = TG_DEVICE_CPU, .threads = threads};
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_OK);
    int64_t xs[4] = {N, C, H, W}, ws[4] = {K, C, R, S}, bs[1] = {K}, gs[4] = {N, K, g.oh, g.ow};
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, xs, x), *wt = tg_from_data(ctx, TG_F32, 4, ws, w);
    tg_tensor *bt = tg_from_data(ctx, TG_F32, 1, bs, b), *gt = tg_from_data(ctx, TG_F32, 4, gs, gy);
    tg_conv2d_opts o = {{g.st, g.st}, {g.pad, g.pad}, {g.dil, g.dil}};
    tg_tensor *yt = tg_conv2d(ctx, xt, wt, bt, &o);
    tg_tensor *dxt = tg_conv2d_backward_input(ctx, gt, wt, &o, H, W);
    tg_tensor *dwt = tg_conv2d_backward_weight(ctx, xt, gt, &o, R, S);
    assert_true(yt && dxt && dwt);
    const int64_t most = nx > ng ? (nx > nw ? nx : nw) : (ng > nw ? ng : nw);
    float *got = malloc((size_t)most * sizeof *got);
    assert_non_null(got);
    assert_int_equal(tg_to_host(ctx, yt, got, (size_t)ng * sizeof *got), TG_OK);
    check_close(got, y, ng);
    assert_int_equal(tg_to_host(ctx, dxt, got, (size_t)nx * sizeof *got), TG_OK);
    check_close(got, dx, nx);
    assert_int_equal(tg_to_host(ctx, dwt, got, (size_t)nw * sizeof *got), TG_OK);
    check_close(got, dw, nw);
    tg_ctx_free(ctx);
    free(got), free(x), free(w), free(b), free(gy), free(y), free(dx), free(dw);
}

static void test_split_plain(void **state) {
    (void)state;
    run_case(&(geo){.st = 1, .pad = 1, .dil = 1}, 1);
    run_case(&(geo){.st = 1, .pad = 1, .dil = 1}, 2);
}

static void test_split_padded_dilated(void **state) {
    (void)state;
    run_case(&(geo){.st = 1, .pad = 2, .dil = 2}, 2);
    run_case(&(geo){.st = 2, .pad = 1, .dil = 1}, 2);
}

/* Shapes for the stride-1 im2col that copies whole 64-byte chunks from a
 * zero-padded plane (rows of 14 and 28 as in the cnns, rows shorter than a
 * chunk, several chunks with a remainder, no padding, 1x1) and one whose
 * padded plane is too large for it (the general loop). */
static void test_im2col_shapes(void **state) {
    (void)state;
    const geo cases[] = {
        {.st = 1, .pad = 2, .dil = 1, .n = 3, .c = 32, .h = 14, .w = 14, .k = 8, .r = 5, .s = 5},
        {.st = 1, .pad = 2, .dil = 1, .n = 3, .c = 1, .h = 28, .w = 28, .k = 4, .r = 5, .s = 5},
        {.st = 1, .pad = 1, .dil = 1, .n = 2, .c = 3, .h = 7, .w = 19, .k = 3, .r = 3, .s = 2},
        {.st = 1, .pad = 0, .dil = 1, .n = 2, .c = 2, .h = 9, .w = 9, .k = 2, .r = 3, .s = 3},
        {.st = 1, .pad = 0, .dil = 1, .n = 2, .c = 5, .h = 6, .w = 37, .k = 3, .r = 1, .s = 1},
        {.st = 1, .pad = 1, .dil = 1, .n = 2, .c = 2, .h = 100, .w = 100, .k = 2, .r = 3, .s = 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i], 1);
        run_case(&cases[i], 2);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_im2col_shapes),
        cmocka_unit_test(test_split_plain),
        cmocka_unit_test(test_split_padded_dilated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
