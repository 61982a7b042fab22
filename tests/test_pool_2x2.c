/*
 * The 2x2, stride-2, unpadded max-pooling path of the CPU backend (the cnns'
 * pooling) against a window scan written here: values and indices on data
 * full of ties, NaNs and infinities, where the first maximum of each window
 * in row-major order must win and a NaN must win over everything (PyTorch's
 * rule). The fixtures cover ties on ordinary data only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "tapegrad/nn.h"

enum { N = 2, C = 3, H = 6, W = 8, OH = 3, OW = 4 };

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_2x2_ties_nan_inf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
