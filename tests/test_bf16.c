/*
 * test_bf16.c: the bf16 dtype as storage: casts to and from every dtype
 * (rounding to nearest even checked against a reference computed here in
 * double arithmetic, not with the library's bit trick), copies of strided
 * views, printing, fill, and checkpoints that keep every bf16 bit pattern.
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

#include "tapegrad/checkpoint.h"
#include "tapegrad/runtime.h"
#include "test_util.h"

static tg_ctx *new_ctx(void) {
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    return ctx;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The bf16 nearest to a finite f32, ties to the even mantissa, found by
 * comparing the distances to the two bf16 neighbours in double arithmetic. */
static uint16_t ref_round(float x) {
    const uint32_t u = f32_bits(x);
    const uint16_t lo = (uint16_t)(u >> 16); /* toward zero */
    const uint16_t hi = (uint16_t)(lo + 1);  /* away from zero (may be inf) */
    const double dx = fabs((double)x);
    const double dlo = fabs((double)bits_f32((uint32_t)lo << 16));
    double dhi = fabs((double)bits_f32((uint32_t)hi << 16));
    if (isinf(dhi)) /* the value past the largest finite bf16, had it one */
        dhi = ldexp(1.0, 128);
    const double below = dx - dlo, above = dhi - dx;
    if (below < above)
        return lo;
    if (above < below)
        return hi;
    return (lo & 1) ? hi : lo;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* f32 values: random bit patterns (finite ones), exact ties of both
 * parities, the largest finite f32 (rounds to inf), subnormals, zeros. */
static int fill_values(float *v, int n) {
    int k = 0;
    const uint32_t fixed[] = {0x3f808000u, 0x3f818000u, 0xbf808000u, 0xbf818000u, 0x7f7fffffu,
                              0xff7fffffu, 0x7f7f7fffu, 0x7f7f8000u, 0x00000001u, 0x00008000u,
                              0x00018000u, 0x80000000u, 0x00000000u, 0x3f800001u, 0x3f807fffu};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        v[k++] = bits_f32(fixed[i]);
    while (k < n) {
        uint32_t u = next_u32();
        if ((u & 0x7f800000u) == 0x7f800000u)
            continue;
        v[k++] = bits_f32(u);
    }
    return k;
}

static void test_round_to_nearest_even(void **state) {
    (void)state;
    enum {
        N = 4096
    };
    static float v[N];
    static uint16_t got[N];
    fill_values(v, N);
    tg_ctx *ctx = new_ctx();
    const int64_t shape[] = {N};
    tg_tensor *x = tg_from_data(ctx, TG_F32, 1, shape, v);
    tg_tensor *b = tg_to_dtype(ctx, x, TG_BF16);
    assert_non_null(b);
    assert_int_equal(b->dtype, TG_BF16);
    assert_false(b->requires_grad);
    assert_int_equal(tg_to_host(ctx, b, got, sizeof got), TG_OK);
    for (int i = 0; i < N; i++) {
        if (got[i] != ref_round(v[i]))
            fail_msg("element %d: f32 %a (0x%08x) gave bf16 0x%04x, expected 0x%04x", i,
                     (double)v[i], f32_bits(v[i]), got[i], ref_round(v[i]));
        assert_int_equal(got[i], tg_bf16_from_f32(v[i]));
    }
    /* The largest finite f32 is past bf16's range: inf, as in PyTorch. */
    assert_int_equal(got[4], 0x7f80);
    assert_int_equal(got[5], 0xff80);
    tg_ctx_free(ctx);
}

static void test_special_values(void **state) {
    (void)state;
    const float v[] = {NAN, -NAN, INFINITY, -INFINITY, bits_f32(0x7f800001u), -0.0f};
    uint16_t got[6];
    float back[6];
    tg_ctx *ctx = new_ctx();
    const int64_t shape[] = {6};
    tg_tensor *b = tg_to_dtype(ctx, tg_from_data(ctx, TG_F32, 1, shape, v), TG_BF16);
    tg_tensor *f = tg_to_dtype(ctx, b, TG_F32);
    assert_non_null(f);
    assert_int_equal(tg_to_host(ctx, b, got, sizeof got), TG_OK);
    assert_int_equal(tg_to_host(ctx, f, back, sizeof back), TG_OK);
    assert_true(isnan(back[0]) && isnan(back[1]));
    /* A signalling NaN whose payload sits in the dropped bits stays NaN. */
    assert_true(isnan(back[4]));
    assert_int_equal(got[2], 0x7f80);
    assert_int_equal(got[3], 0xff80);
    assert_int_equal(got[5], 0x8000);
    assert_true(signbit(back[5]));
    tg_ctx_free(ctx);
}

/* Every bf16 bit pattern to f32 and back is the identity (NaNs stay NaN);
 * f64, u8, i32 and i64 follow through f32. */
static void test_round_trip_all_dtypes(void **state) {
    (void)state;
    enum {
        N = 65536
    };
    static uint16_t all[N], back[N];
    static float f[N];
    for (int i = 0; i < N; i++)
        all[i] = (uint16_t)i;
    tg_ctx *ctx = new_ctx();
    const int64_t shape[] = {N};
    tg_tensor *b = tg_from_data(ctx, TG_BF16, 1, shape, all);
    assert_non_null(b);
    tg_tensor *x = tg_to_dtype(ctx, b, TG_F32);
    tg_tensor *y = tg_to_dtype(ctx, tg_to_dtype(ctx, b, TG_F64), TG_BF16);
    assert_non_null(y);
    assert_int_equal(tg_to_host(ctx, x, f, sizeof f), TG_OK);
    assert_int_equal(tg_to_host(ctx, y, back, sizeof back), TG_OK);
    for (int i = 0; i < N; i++) {
        const bool nan = (i & 0x7f80) == 0x7f80 && (i & 0x7f);
        if (nan) {
            assert_true(isnan(f[i]));
            continue;
        }
        assert_int_equal(f32_bits(f[i]), (uint32_t)i << 16);
        assert_int_equal(back[i], all[i]);
    }
    /* Integers: exact up to 256, then rounded to 8 significant bits. */
    const int32_t ints[] = {0, -7, 255, 256, 257, 1000001, -129};
    int32_t iback[7];
    const int64_t s7[] = {7};
    tg_tensor *ib = tg_to_dtype(ctx, tg_from_data(ctx, TG_I32, 1, s7, ints), TG_BF16);
    assert_int_equal(tg_to_host(ctx, tg_to_dtype(ctx, ib, TG_I32), iback, sizeof iback), TG_OK);
    for (int i = 0; i < 7; i++) {
        float want = tg_bf16_to_f32(ref_round((float)ints[i]));
        assert_int_equal(iback[i], (int32_t)want);
    }
    assert_int_equal(iback[4], 256);
    assert_int_equal(iback[5], 999424);
    tg_ctx_free(ctx);
}

/* A strided view of bf16 copies element by element; tg_get reads a value;
 * fill_ stores the rounded value; printing shows the dtype as torch does. */
static void test_views_fill_print(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx();
    const float v[] = {1.0f, 2.5f, -3.0f, 1.0f / 3.0f, 100.0f, 0.1f};
    const int64_t shape[] = {2, 3};
    tg_tensor *b = tg_to_dtype(ctx, tg_from_data(ctx, TG_F32, 2, shape, v), TG_BF16);
    const int perm[] = {1, 0};
    tg_tensor *t = tg_copy(ctx, tg_permute(ctx, b, perm));
    assert_non_null(t);
    uint16_t got[6];
    assert_int_equal(tg_to_host(ctx, t, got, sizeof got), TG_OK);
    const int order[] = {0, 3, 1, 4, 2, 5};
    for (int i = 0; i < 6; i++)
        assert_int_equal(got[i], tg_bf16_from_f32(v[order[i]]));
    double d = 0;
    assert_int_equal(tg_get(ctx, b, 3, &d), TG_OK);
    assert_true(d == (double)tg_bf16_to_f32(tg_bf16_from_f32(1.0f / 3.0f)));
    assert_true(d != (double)(1.0f / 3.0f));
    char buf[256];
    assert_true(tg_tensor_str(ctx, b, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "dtype=torch.bfloat16"));
    assert_non_null(strstr(buf, "0.3340"));
    tg_tensor *p = tg_persistent(ctx, TG_BF16, 2, shape, "p");
    assert_int_equal(tg_fill_(ctx, p, 0.1), TG_OK);
    assert_int_equal(tg_to_host(ctx, p, got, sizeof got), TG_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(got[i], tg_bf16_from_f32(0.1f));
    tg_ctx_free(ctx);
}

/* Checkpoints store bf16 as HDF5's own 16-bit float description and give
 * back every bit pattern; a bf16 tensor in the file does not load into an
 * f32 one. */
static void test_checkpoint_round_trip(void **state) {
    (void)state;
    enum {
        N = 65536
    };
    static uint16_t all[N], back[N];
    for (int i = 0; i < N; i++)
        all[i] = (uint16_t)(i * 40503u);
    tg_ctx *ctx = new_ctx();
    const int64_t shape[] = {256, 256};
    tg_tensor *w = tg_persistent(ctx, TG_BF16, 2, shape, "w");
    tg_tensor *src = tg_from_data(ctx, TG_BF16, 2, shape, all);
    assert_int_equal(tg_copy_(ctx, w, src), TG_OK);
    tg_ckpt_meta meta = {.step = 3};
    char path[1024];
    assert_int_equal(tg_ckpt_save(ctx, tgt_path("ck"), &meta, 1, &w, 0, path, sizeof path), TG_OK);

    tg_ctx *c2 = new_ctx();
    tg_tensor *w2 = tg_persistent(c2, TG_BF16, 2, shape, "w");
    tg_ckpt_meta m = {0};
    assert_int_equal(tg_ckpt_load(c2, path, 1, &w2, &m), TG_OK);
    tg_ckpt_meta_free(&m);
    assert_int_equal(tg_to_host(c2, w2, back, sizeof back), TG_OK);
    assert_memory_equal(back, all, sizeof all);
    assert_int_equal(tg_ckpt_verify(c2, path), TG_OK);

    tg_tensor *wf = tg_persistent(c2, TG_F32, 2, shape, "w");
    assert_int_equal(tg_ckpt_load(c2, path, 1, &wf, NULL), TG_ERR_DTYPE);
    assert_non_null(strstr(tg_ctx_error(c2), "bf16"));
    tg_ctx_free(c2);
    tg_ctx_free(ctx);
}

/* Arithmetic on bf16 tensors is refused with a message that says what to do. */
static void test_arithmetic_refused(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx();
    const int64_t shape[] = {2, 2};
    const float v[] = {1, 2, 3, 4};
    tg_tensor *b = tg_to_dtype(ctx, tg_from_data(ctx, TG_F32, 2, shape, v), TG_BF16);
    assert_non_null(b);
    assert_null(tg_add(ctx, b, b));
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_DTYPE);
    assert_non_null(strstr(tg_ctx_error(ctx), "add: bf16 tensors hold values only"));
    tg_ctx_clear_error(ctx);
    assert_null(tg_matmul(ctx, b, b));
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_DTYPE);
    tg_ctx_clear_error(ctx);
    /* Moving elements is fine: a reshape of a transposed view copies. */
    const int64_t flat[] = {4};
    assert_non_null(tg_reshape(ctx, tg_transpose(ctx, b, 0, 1), 1, flat));
    tg_ctx_free(ctx);
}

static int group_setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_bf16");
}

static int group_teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_to_nearest_even), cmocka_unit_test(test_special_values),
        cmocka_unit_test(test_round_trip_all_dtypes), cmocka_unit_test(test_views_fill_print),
        cmocka_unit_test(test_checkpoint_round_trip), cmocka_unit_test(test_arithmetic_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
