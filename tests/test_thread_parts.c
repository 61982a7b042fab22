/*
 * tests/test_thread_parts.c: the CPU kernels that split their work across
 * threads (products in blocks of C, convolutions in runs of samples with a
 * weight-gradient partial sum per run) cut it into the context's thread count
 * of parts whatever number of threads runs them. While the cores are shared
 * the spin watch runs steps on one thread by setting OpenMP's count to 1 on
 * the training thread (kernels/cpu/omp_throttle.c); its results must be the
 * bits of the whole team's.
 *
 *   - A context of 2 (and of 3) threads: products of every transpose and the
 *     three convolutions, computed with OpenMP's count at the context's, then
 *     at 1 (the watch's one thread) and at 2 for the 3-thread context (fewer
 *     threads than parts), give identical bits.
 *   - That the check can tell: a 1-thread context's weight gradient differs
 *     from the 2-thread context's in some bits (its sum runs in another
 *     order), so a split that followed the running threads would fail above.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/nn.h"

static float *rand_buf(int64_t n, unsigned seed) {
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        v[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return v;
}

/* Everything the split kernels compute for one input set, on the host. */
typedef struct results {
    float *mm[4]; /* products, A and B plain or transposed */
    float *y, *dx, *dw;
} results;

enum {
    MN = 300,
    MK = 200,
    MM = 150
}; /* products: (MN x MK) (MK x MM) */
enum {
    CN = 5,
    CC = 16,
    CH = 40,
    CW = 40,
    CK = 8,
    CR = 3
}; /* conv, pad 1 */

static int64_t conv_sizes(int64_t *nx, int64_t *nw) {
    *nx = (int64_t)CN * CC * CH * CW;
    *nw = (int64_t)CK * CC * CR * CR;
    return (int64_t)CN * CK * CH * CW;
}

static float *host(tg_ctx *ctx, tg_tensor *t, int64_t n) {
    assert_non_null(t);
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    assert_int_equal(tg_to_host(ctx, t, v, (size_t)n * sizeof *v), TG_OK);
    return v;
}

/* Runs the products and convolutions on ctx with OpenMP's count at `run`. */
static results compute(tg_ctx *ctx, int run) {
    omp_set_num_threads(run);
    results r;
    float *a = rand_buf(MN * MK, 11), *b = rand_buf(MK * MM, 12);
    for (int t = 0; t < 4; t++) {
        const bool ta = t & 1, tb = t & 2;
        /* A transposed operand is the transpose view of its (k, n) storage. */
        int64_t as[2] = {ta ? MK : MN, ta ? MN : MK}, bs[2] = {tb ? MM : MK, tb ? MK : MM};
        tg_tensor *at = tg_from_data(ctx, TG_F32, 2, as, a);
        tg_tensor *bt = tg_from_data(ctx, TG_F32, 2, bs, b);
        if (ta)
            at = tg_transpose(ctx, at, 0, 1);
        if (tb)
            bt = tg_transpose(ctx, bt, 0, 1);
        r.mm[t] = host(ctx, tg_matmul(ctx, at, bt), MN * MM);
    }
    free(a), free(b);
    int64_t nx, nw;
    const int64_t ng = conv_sizes(&nx, &nw);
    float *x = rand_buf(nx, 21), *w = rand_buf(nw, 22), *bias = rand_buf(CK, 23);
    float *g = rand_buf(ng, 24);
    int64_t xs[4] = {CN, CC, CH, CW}, ws[4] = {CK, CC, CR, CR}, bs[1] = {CK};
    int64_t gs[4] = {CN, CK, CH, CW};
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, xs, x), *wt = tg_from_data(ctx, TG_F32, 4, ws, w);
    tg_tensor *bt = tg_from_data(ctx, TG_F32, 1, bs, bias);
    tg_tensor *gt = tg_from_data(ctx, TG_F32, 4, gs, g);
    tg_conv2d_opts o = {{1, 1}, {1, 1}, {1, 1}};
    r.y = host(ctx, tg_conv2d(ctx, xt, wt, bt, &o), ng);
    r.dx = host(ctx, tg_conv2d_backward_input(ctx, gt, wt, &o, CH, CW), nx);
    r.dw = host(ctx, tg_conv2d_backward_weight(ctx, xt, gt, &o, CR, CR), nw);
    free(x), free(w), free(bias), free(g);
    return r;
}

static void expect_same(const results *a, const results *b) {
    int64_t nx, nw;
    const int64_t ng = conv_sizes(&nx, &nw);
    for (int t = 0; t < 4; t++)
        assert_memory_equal(a->mm[t], b->mm[t], (size_t)(MN * MM) * sizeof(float));
    assert_memory_equal(a->y, b->y, (size_t)ng * sizeof(float));
    assert_memory_equal(a->dx, b->dx, (size_t)nx * sizeof(float));
    assert_memory_equal(a->dw, b->dw, (size_t)nw * sizeof(float));
}

static void release(results *r) {
    for (int t = 0; t < 4; t++)
        free(r->mm[t]);
    free(r->y), free(r->dx), free(r->dw);
}

static tg_ctx *ctx_of(int threads) {
    tg_ctx_config cfg = {.device = TG_DEVICE_CPU, .threads = threads};
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_OK);
    return ctx;
}

static void check_context(int threads) {
    tg_ctx *ctx = ctx_of(threads);
    results team = compute(ctx, threads), one = compute(ctx, 1);
    expect_same(&team, &one);
    if (threads > 2) {
        results fewer = compute(ctx, 2);
        expect_same(&team, &fewer);
        release(&fewer);
    }
    release(&team), release(&one);
    tg_ctx_free(ctx);
}

static void test_two_threads_one_running(void **state) {
    (void)state;
    check_context(2);
}

static void test_three_threads_fewer_running(void **state) {
    (void)state;
    check_context(3);
}

static void test_parts_change_the_bits(void **state) {
    (void)state;
    tg_ctx *c1 = ctx_of(1);
    results one = compute(c1, 1);
    tg_ctx_free(c1);
    tg_ctx *c2 = ctx_of(2);
    results two = compute(c2, 2);
    tg_ctx_free(c2);
    int64_t nx, nw;
    conv_sizes(&nx, &nw);
    assert_true(memcmp(one.dw, two.dw, (size_t)nw * sizeof(float)) != 0);
    release(&one), release(&two);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_threads_one_running),
        cmocka_unit_test(test_three_threads_fewer_running),
        cmocka_unit_test(test_parts_change_the_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
