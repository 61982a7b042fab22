/*
 * tests/test_cuda_backend_ops2.c: the ops of runtime/core/ops_math2.c,
 * creation.c and print.c on the CUDA backend against the CPU backend, beyond
 * the per-row cases of test_cuda_backend.c (cuda_backend_ops2_rows.h): casts
 * between every pair of dtypes, the random streams (the same numbers on
 * both for one seed), the accuracy expression on integers, and printing a
 * device tensor. Without a CUDA device it exits 77 (skipped).
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

#include "tapegrad/rng.h"
#include "tapegrad/runtime.h"

#define SH(...) ((const int64_t[]){__VA_ARGS__})

typedef struct env {
    tg_ctx *cpu, *cuda;
} env;

static int setup(void **state) {
    static env e;
    tg_ctx_config cfg = {.device = TG_DEVICE_CUDA};
    if (tg_ctx_new(NULL, &e.cpu) != TG_OK || tg_ctx_new(&cfg, &e.cuda) != TG_OK)
        return -1;
    *state = &e;
    return 0;
}

static int teardown(void **state) {
    env *e = *state;
    tg_ctx_free(e->cpu);
    tg_ctx_free(e->cuda);
    return 0;
}

/* Both tensors' elements, converted to double, must be equal. */
static void expect_same(tg_ctx *a, const tg_tensor *x, tg_ctx *b, const tg_tensor *y,
                        const char *what) {
    if (!x || !y)
        fail_msg("%s: NULL result: cpu '%s', cuda '%s'", what, tg_ctx_error(a), tg_ctx_error(b));
    assert_int_equal(x->dtype, y->dtype);
    assert_int_equal(tg_numel(x), tg_numel(y));
    for (int64_t i = 0; i < tg_numel(x); i++) {
        double u, v;
        assert_int_equal(tg_get(a, x, i, &u), TG_OK);
        assert_int_equal(tg_get(b, y, i, &v), TG_OK);
        if (!(u == v || (isnan(u) && isnan(v))))
            fail_msg("%s: element %lld is %.17g on cpu, %.17g on cuda", what, (long long)i, u, v);
    }
}

static void test_casts_every_pair(void **state) {
    env *e = *state;
    const double v[8] = {-3.75, -1.0, -0.25, 0.0, 0.5, 1.99, 7.0, 200.5};
    const tg_dtype dts[5] = {TG_F32, TG_F64, TG_U8, TG_I32, TG_I64};
    for (int i = 0; i < 5; i++) {
        for (int o = 0; o < 5; o++) {
            tg_tensor *src[2];
            tg_ctx *c[2] = {e->cpu, e->cuda};
            for (int k = 0; k < 2; k++) {
                tg_tensor *f = tg_from_data(c[k], TG_F64, 2, SH(2, 4), v);
                /* non-negative values for u8 sources and targets, where
                 * negatives are undefined */
                if (dts[i] == TG_U8 || dts[o] == TG_U8)
                    f = tg_abs(c[k], f);
                src[k] = tg_transpose(c[k], tg_to_dtype(c[k], f, dts[i]), 0, 1);
            }
            char what[64];
            snprintf(what, sizeof what, "cast %s -> %s", tg_dtype_name(dts[i]),
                     tg_dtype_name(dts[o]));
            expect_same(e->cpu, tg_to_dtype(e->cpu, src[0], dts[o]), e->cuda,
                        tg_to_dtype(e->cuda, src[1], dts[o]), what);
        }
    }
    tg_step_reset(e->cpu);
    tg_step_reset(e->cuda);
}

static void test_random_streams_match(void **state) {
    env *e = *state;
    tg_rng a = tg_rng_make(1234, 5), b = tg_rng_make(1234, 5);
    for (int dt = 0; dt < 2; dt++) {
        tg_dtype d = dt ? TG_F64 : TG_F32;
        expect_same(e->cpu, tg_rand(e->cpu, &a, d, 2, SH(7, 9)), e->cuda,
                    tg_rand(e->cuda, &b, d, 2, SH(7, 9)), "rand");
        expect_same(e->cpu, tg_randn(e->cpu, &a, d, 1, SH(33)), e->cuda,
                    tg_randn(e->cuda, &b, d, 1, SH(33)), "randn");
    }
    expect_same(e->cpu, tg_randint(e->cpu, &a, -5, 17, TG_I32, 1, SH(40)), e->cuda,
                tg_randint(e->cuda, &b, -5, 17, TG_I32, 1, SH(40)), "randint");
    assert_int_equal(a.counter, b.counter);
    tg_step_reset(e->cpu);
    tg_step_reset(e->cuda);
}

static void test_accuracy_and_print_on_device(void **state) {
    env *e = *state;
    const double logits[6] = {0.1, 2.0, 3.0, -1.0, 0.5, 0.4};
    const int64_t y[3] = {1, 0, 1};
    tg_tensor *lg = tg_from_data(e->cuda, TG_F64, 2, SH(3, 2), logits);
    tg_tensor *yt = tg_from_data(e->cuda, TG_I64, 1, SH(3), y);
    tg_tensor *n =
        tg_sum(e->cuda, tg_eq(e->cuda, tg_argmax(e->cuda, lg, 1, false), yt), 0, NULL, false);
    double v;
    assert_non_null(n);
    assert_int_equal(tg_item(e->cuda, n, &v), TG_OK);
    assert_true(v == 2.0);
    char buf[128];
    assert_true(tg_tensor_str(e->cuda, yt, buf, sizeof buf) > 0);
    assert_string_equal(buf, "tensor([1, 0, 1])");
    tg_step_reset(e->cuda);
}

int main(void) {
    if (!tg_backend_cuda() || tg_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_casts_every_pair),
        cmocka_unit_test(test_random_streams_match),
        cmocka_unit_test(test_accuracy_and_print_on_device),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
