/*
 * The ops of runtime/core/ops_math2.c, creation.c and print.c beyond what the
 * gradcheck table and the PyTorch fixtures check: detach, dtype casts and
 * integer arithmetic (an accuracy as one expression), maximum's tie rule,
 * errors that name the op, arange and the *_like functions, the Philox
 * streams of rand/randn/randint against an independent Philox4x32-10 (with
 * the Random123 known answers), squeeze/unsqueeze, and tg_tensor_str
 * against the text PyTorch 1.13 prints for the same tensors, and layers made
 * in f64 (tg_params.dtype) checked by finite differences.
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

#include "tapegrad/nn.h"
#include "tapegrad/rng.h"
#include "tapegrad/runtime.h"

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define AX(...) ((const int[]){__VA_ARGS__})

static int setup(void **state) {
    tg_ctx *ctx;
    if (tg_ctx_new(NULL, &ctx) != TG_OK)
        return -1;
    *state = ctx;
    return 0;
}

static int teardown(void **state) {
    tg_ctx_free(*state);
    return 0;
}

#define CHECK_T(ctx, t)                                        \
    do {                                                       \
        if (!(t))                                              \
            fail_msg("%s is NULL: %s", #t, tg_ctx_error(ctx)); \
    } while (0)

static double at(tg_ctx *ctx, const tg_tensor *t, int64_t i) {
    double v;
    assert_int_equal(tg_get(ctx, t, i, &v), TG_OK);
    return v;
}

static tg_tensor *f64v(tg_ctx *ctx, int ndim, const int64_t *shape, const double *v) {
    tg_tensor *t = tg_from_data(ctx, TG_F64, ndim, shape, v);
    CHECK_T(ctx, t);
    return t;
}

static tg_tensor *i64v(tg_ctx *ctx, int ndim, const int64_t *shape, const int64_t *v) {
    tg_tensor *t = tg_from_data(ctx, TG_I64, ndim, shape, v);
    CHECK_T(ctx, t);
    return t;
}

/* The op returns NULL, the status is st and the message names `what`. */
static void expect_fail(tg_ctx *ctx, const tg_tensor *t, tg_status st, const char *what) {
    assert_null(t);
    assert_int_equal(tg_ctx_status(ctx), st);
    if (!strstr(tg_ctx_error(ctx), what))
        fail_msg("error '%s' does not mention '%s'", tg_ctx_error(ctx), what);
    tg_ctx_clear_error(ctx);
}

/* ---- detach ---- */

static void test_detach(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = f64v(ctx, 1, SH(3), (const double[]){1, 2, 3});
    tg_tensor *y = f64v(ctx, 1, SH(3), (const double[]){0.5, 0.5, 0.5});
    assert_int_equal(tg_set_requires_grad(ctx, x, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, y, true), TG_OK);
    tg_tensor *target = tg_detach(ctx, tg_mul_scalar(ctx, y, 2.0));
    CHECK_T(ctx, target);
    assert_false(target->requires_grad);
    assert_true(tg_is_leaf(target));
    /* loss = sum((x - target)^2): y gets nothing through the detached target */
    tg_tensor *d = tg_sub(ctx, x, target);
    tg_tensor *loss = tg_sum(ctx, tg_mul(ctx, d, d), 0, NULL, false);
    CHECK_T(ctx, loss);
    assert_int_equal(tg_backward(ctx, loss, NULL, 0), TG_OK);
    assert_null(y->grad);
    for (int i = 0; i < 3; i++)
        assert_true(fabs(at(ctx, x->grad, i) - 2.0 * ((double)(i + 1) - 1.0)) < 1e-12);
    /* the view shares storage with its source, as torch's detach */
    tg_tensor *xd = tg_detach(ctx, x);
    assert_ptr_equal(xd->storage, x->storage);
    tg_step_reset(ctx);
}

/* ---- casts ---- */

static void test_casts(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = f64v(ctx, 1, SH(5), (const double[]){-2.7, -0.5, 0.0, 1.9, 250.0});
    tg_tensor *i = tg_to_dtype(ctx, x, TG_I64);
    CHECK_T(ctx, i);
    assert_int_equal(i->dtype, TG_I64);
    const double trunc[5] = {-2, 0, 0, 1, 250};
    for (int k = 0; k < 5; k++)
        assert_true(at(ctx, i, k) == trunc[k]);
    tg_tensor *i32 = tg_to_dtype(ctx, i, TG_I32),
              *u8 = tg_to_dtype(ctx, tg_slice(ctx, x, 0, 2, 5, 1), TG_U8);
    tg_tensor *f32 = tg_to_dtype(ctx, i32, TG_F32);
    CHECK_T(ctx, f32);
    CHECK_T(ctx, u8);
    assert_int_equal(u8->dtype, TG_U8);
    assert_true(at(ctx, u8, 2) == 250.0);
    assert_true(at(ctx, f32, 0) == -2.0);
    /* float -> integer is a constant: no grad, nothing on the tape */
    assert_int_equal(tg_set_requires_grad(ctx, x, true), TG_OK);
    int64_t before = tg_tape_size(ctx);
    tg_tensor *c = tg_to_dtype(ctx, x, TG_I64);
    CHECK_T(ctx, c);
    assert_false(c->requires_grad);
    assert_int_equal(tg_tape_size(ctx), before);
    /* float -> float keeps the gradient, converted back to x's dtype */
    tg_tensor *s =
        tg_sum(ctx, tg_mul_scalar(ctx, tg_to_dtype(ctx, x, TG_F32), 3.0), 0, NULL, false);
    CHECK_T(ctx, s);
    assert_int_equal(s->dtype, TG_F32);
    assert_int_equal(tg_backward(ctx, s, NULL, 0), TG_OK);
    assert_int_equal(x->grad->dtype, TG_F64);
    assert_true(at(ctx, x->grad, 4) == 3.0);
    expect_fail(ctx, tg_to_dtype(ctx, x, (tg_dtype)99), TG_ERR_DTYPE, "to_dtype");
    tg_step_reset(ctx);
}

/* ---- integer arithmetic: the accuracy of a batch as one expression ---- */

static void test_accuracy_expression(void **state) {
    tg_ctx *ctx = *state;
    const double logits[12] = {0.1, 2.0, -1.0, /* 1 */ 3.0,  0.0, 0.5, /* 0 */
                               0.2, 0.1, 0.9,  /* 2 */ -1.0, 4.0, 4.0 /* 1, tie: first */};
    tg_tensor *lg = f64v(ctx, 2, SH(4, 3), logits);
    tg_tensor *y = i64v(ctx, 1, SH(4), (const int64_t[]){1, 2, 2, 1});
    tg_tensor *correct = tg_sum(ctx, tg_eq(ctx, tg_argmax(ctx, lg, 1, false), y), 0, NULL, false);
    CHECK_T(ctx, correct);
    assert_int_equal(correct->dtype, TG_I64);
    assert_int_equal(correct->ndim, 0);
    assert_true(at(ctx, correct, 0) == 3.0);
    /* integer add/sub/mul wrap like the machine's two's complement */
    tg_tensor *big = i64v(ctx, 1, SH(2), (const int64_t[]){INT64_MAX, -7});
    tg_tensor *one = i64v(ctx, 1, SH(1), (const int64_t[]){1});
    tg_tensor *w = tg_add(ctx, big, one);
    int64_t host[2];
    assert_int_equal(tg_to_host(ctx, w, host, sizeof host), TG_OK);
    assert_true(host[0] == INT64_MIN && host[1] == -6);
    tg_tensor *m = tg_mul(ctx, tg_sub(ctx, big, one), one);
    assert_int_equal(tg_to_host(ctx, m, host, sizeof host), TG_OK);
    assert_true(host[0] == INT64_MAX - 1 && host[1] == -8);
    /* sums of u8 and i32 are i64, as in PyTorch, and do not overflow a byte */
    uint8_t bytes[4] = {200, 200, 200, 1};
    tg_tensor *u = tg_from_data(ctx, TG_U8, 1, SH(4), bytes);
    tg_tensor *su = tg_sum(ctx, u, 0, NULL, false);
    CHECK_T(ctx, su);
    assert_int_equal(su->dtype, TG_I64);
    assert_true(at(ctx, su, 0) == 601.0);
    int32_t iv[6] = {1, 2, 3, 4, 5, 6};
    tg_tensor *s32 = tg_sum(
        ctx, tg_transpose(ctx, tg_from_data(ctx, TG_I32, 2, SH(2, 3), iv), 0, 1), 1, AX(1), true);
    CHECK_T(ctx, s32);
    assert_true(s32->ndim == 2 && s32->shape[0] == 3 && s32->shape[1] == 1);
    assert_true(at(ctx, s32, 0) == 5.0 && at(ctx, s32, 1) == 7.0 && at(ctx, s32, 2) == 9.0);
    /* what integers cannot do is refused by name */
    expect_fail(ctx, tg_div(ctx, y, y), TG_ERR_DTYPE, "div");
    expect_fail(ctx, tg_mean(ctx, y, 0, NULL, false), TG_ERR_DTYPE, "mean");
    expect_fail(ctx, tg_max(ctx, y, 0, NULL, false), TG_ERR_DTYPE, "max");
    expect_fail(ctx, tg_cumsum(ctx, y, 0), TG_ERR_DTYPE, "cumsum");
    /* no type promotion: mixed dtypes are refused */
    expect_fail(ctx, tg_add(ctx, y, lg), TG_ERR_DTYPE, "add");
    expect_fail(ctx, tg_gt(ctx, lg, tg_to_dtype(ctx, lg, TG_F32)), TG_ERR_DTYPE, "gt");
    tg_step_reset(ctx);
}

/* ---- comparisons and maximum/minimum ---- */

static void test_comparisons_are_constants(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64v(ctx, 1, SH(3), (const double[]){1, 2, 3});
    assert_int_equal(tg_set_requires_grad(ctx, a, true), TG_OK);
    tg_tensor *b = tg_scalar(ctx, TG_F64, 2.0);
    int64_t before = tg_tape_size(ctx);
    tg_tensor *r[5] = {tg_gt(ctx, a, b), tg_ge(ctx, a, b), tg_lt(ctx, a, b), tg_le(ctx, a, b),
                       tg_ne(ctx, a, b)};
    const double want[5][3] = {{0, 0, 1}, {0, 1, 1}, {1, 0, 0}, {1, 1, 0}, {1, 0, 1}};
    for (int k = 0; k < 5; k++) {
        CHECK_T(ctx, r[k]);
        assert_false(r[k]->requires_grad);
        assert_int_equal(r[k]->dtype, TG_F64);
        for (int i = 0; i < 3; i++)
            assert_true(at(ctx, r[k], i) == want[k][i]);
    }
    assert_int_equal(tg_tape_size(ctx), before);
    /* backward from a comparison is refused: it does not require grad */
    assert_int_not_equal(tg_backward(ctx, tg_sum(ctx, r[0], 0, NULL, false), NULL, 0), TG_OK);
    tg_ctx_clear_error(ctx);
    tg_step_reset(ctx);
}

static void test_maximum_ties_and_nan(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64v(ctx, 1, SH(4), (const double[]){1, 5, 2, NAN});
    tg_tensor *b = f64v(ctx, 1, SH(4), (const double[]){1, 3, 4, 0});
    assert_int_equal(tg_set_requires_grad(ctx, a, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, b, true), TG_OK);
    tg_tensor *mx = tg_maximum(ctx, a, b), *mn = tg_minimum(ctx, a, b);
    CHECK_T(ctx, mx);
    CHECK_T(ctx, mn);
    assert_true(at(ctx, mx, 1) == 5 && at(ctx, mx, 2) == 4 && isnan(at(ctx, mx, 3)));
    assert_true(at(ctx, mn, 1) == 3 && at(ctx, mn, 2) == 2 && isnan(at(ctx, mn, 3)));
    tg_tensor *s = tg_sum(ctx, tg_slice(ctx, mx, 0, 0, 3, 1), 0, NULL, false);
    assert_int_equal(tg_backward(ctx, s, NULL, 0), TG_OK);
    /* the tie at element 0 splits evenly, as max does */
    const double ga[3] = {0.5, 1, 0}, gb[3] = {0.5, 0, 1};
    for (int i = 0; i < 3; i++) {
        assert_true(at(ctx, a->grad, i) == ga[i]);
        assert_true(at(ctx, b->grad, i) == gb[i]);
    }
    tg_step_reset(ctx);
}

/* ---- creation ---- */

static void test_arange_and_like(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *r = tg_arange(ctx, TG_I64, 0, 5, 1);
    CHECK_T(ctx, r);
    assert_int_equal(r->shape[0], 5);
    assert_true(at(ctx, r, 4) == 4);
    tg_tensor *f = tg_arange(ctx, TG_F32, 1.0, -0.5, -0.5);
    CHECK_T(ctx, f);
    assert_int_equal(f->shape[0], 3);
    assert_true(at(ctx, f, 2) == 0.0);
    tg_tensor *fr = tg_arange(ctx, TG_F64, 0, 1, 0.3);
    assert_int_equal(fr->shape[0], 4);
    assert_int_equal(tg_arange(ctx, TG_I32, 3, 3, 1)->shape[0], 0);
    expect_fail(ctx, tg_arange(ctx, TG_F32, 0, 1, 0), TG_ERR_INVALID, "arange");
    tg_tensor *o = tg_ones_like(ctx, fr), *v = tg_full_like(ctx, r, 7);
    CHECK_T(ctx, o);
    assert_int_equal(o->dtype, TG_F64);
    assert_true(at(ctx, o, 3) == 1.0);
    assert_int_equal(v->dtype, TG_I64);
    assert_true(at(ctx, v, 0) == 7.0);
    tg_step_reset(ctx);
}

/* Philox4x32-10 written out again from the paper, with a full four-word
 * counter and two-word key, so the library's stream is checked against an
 * implementation it does not share. */
static void ref_philox(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]}, k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c[0], p1 = (uint64_t)0xCD9E8D57u * c[2];
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k[0], n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k[1];
        c[0] = n0, c[1] = (uint32_t)p1, c[2] = n2, c[3] = (uint32_t)p0;
        k[0] += 0x9E3779B9u, k[1] += 0xBB67AE85u;
    }
    memcpy(out, c, sizeof c);
}

static void ref_block(uint64_t key, uint64_t counter, uint32_t out[4]) {
    const uint32_t ctr[4] = {(uint32_t)counter, (uint32_t)(counter >> 32), 0, 0};
    const uint32_t k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
    ref_philox(ctr, k, out);
}

static void test_philox_known_answers(void **state) {
    (void)state;
    /* Random123's kat_vectors for philox4x32_10 */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        ref_philox(kat[i], kat[i] + 4, out);
        assert_memory_equal(out, kat[i] + 6, sizeof out);
    }
    /* the library agrees where its counter's upper words are zero */
    uint32_t lib[4];
    tg_philox4x32(0, 0, lib);
    assert_memory_equal(lib, kat[0] + 6, sizeof lib);
    for (uint64_t c = 1; c < 1000; c += 97) {
        uint32_t want[4];
        ref_block(0x0123456789abcdefull, c << 20 | c, want);
        tg_philox4x32(0x0123456789abcdefull, c << 20 | c, lib);
        assert_memory_equal(lib, want, sizeof lib);
    }
}

static void test_random_streams(void **state) {
    tg_ctx *ctx = *state;
    tg_rng r1 = tg_rng_make(42, 7), r2 = tg_rng_make(42, 7);
    const uint64_t key = r1.key;
    tg_tensor *u = tg_rand(ctx, &r1, TG_F32, 2, SH(3, 3));
    tg_tensor *u2 = tg_rand(ctx, &r2, TG_F32, 2, SH(3, 3));
    CHECK_T(ctx, u);
    assert_int_equal(r1.counter, 3); /* 9 words: 3 blocks */
    for (int i = 0; i < 9; i++) {
        uint32_t w[4];
        ref_block(key, (uint64_t)i / 4, w);
        double want = (double)(w[i % 4] >> 8) / 16777216.0;
        assert_true(at(ctx, u, i) == want);
        assert_true(at(ctx, u2, i) == want);
    }
    /* the next call continues the stream */
    tg_tensor *d = tg_rand(ctx, &r1, TG_F64, 1, SH(2));
    uint32_t w[4];
    ref_block(key, 3, w);
    assert_true(at(ctx, d, 1) == (double)w[1] / 4294967296.0);
    /* randn: Box-Muller on words 0 and 1 of block m for elements 2m, 2m+1 */
    tg_rng rn = tg_rng_make(5, 0);
    const uint64_t nkey = rn.key;
    tg_tensor *n = tg_randn(ctx, &rn, TG_F64, 1, SH(5));
    CHECK_T(ctx, n);
    assert_int_equal(rn.counter, 3);
    for (int i = 0; i < 5; i++) {
        ref_block(nkey, (uint64_t)i / 2, w);
        double u1 = ((double)w[0] + 1.0) / 4294967296.0, u2v = (double)w[1] / 4294967296.0;
        double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2v;
        double want = i % 2 ? rad * sin(th) : rad * cos(th);
        assert_true(fabs(at(ctx, n, i) - want) < 1e-15);
    }
    /* the f32 stream equals tg_rng_normal's */
    tg_rng a = tg_rng_make(9, 1), b = tg_rng_make(9, 1);
    float ref[7];
    tg_rng_normal(&b, ref, 7, 0.0f, 1.0f);
    tg_tensor *nf = tg_randn(ctx, &a, TG_F32, 1, SH(7));
    for (int i = 0; i < 7; i++)
        assert_true(at(ctx, nf, i) == (double)ref[i]);
    /* randint: in range, from block i */
    tg_rng ri = tg_rng_make(3, 3);
    const uint64_t ikey = ri.key;
    tg_tensor *k = tg_randint(ctx, &ri, -3, 10, TG_I64, 1, SH(50));
    CHECK_T(ctx, k);
    for (int i = 0; i < 50; i++) {
        ref_block(ikey, (uint64_t)i, w);
        uint64_t x = ((uint64_t)w[0] << 32) | w[1];
        assert_true(at(ctx, k, i) == (double)(-3 + (int64_t)(x % 13)));
    }
    expect_fail(ctx, tg_randint(ctx, &ri, 5, 5, TG_I64, 1, SH(2)), TG_ERR_INVALID, "randint");
    expect_fail(ctx, tg_rand(ctx, NULL, TG_F32, 1, SH(2)), TG_ERR_INVALID, "rand");
    expect_fail(ctx, tg_randn(ctx, &ri, TG_I64, 1, SH(2)), TG_ERR_DTYPE, "randn");
    tg_step_reset(ctx);
}

/* ---- shapes ---- */

static void test_squeeze_unsqueeze(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = tg_zeros(ctx, TG_F32, 3, SH(1, 3, 1));
    tg_tensor *a = tg_squeeze(ctx, x, 0, NULL), *b = tg_squeeze(ctx, x, 1, AX(-1));
    tg_tensor *c = tg_unsqueeze(ctx, a, 0), *e = tg_unsqueeze(ctx, a, -1);
    CHECK_T(ctx, c);
    CHECK_T(ctx, e);
    assert_int_equal(a->ndim, 1);
    assert_int_equal(b->ndim, 2);
    assert_int_equal(b->shape[0], 1);
    assert_true(c->ndim == 2 && c->shape[0] == 1 && c->shape[1] == 3);
    assert_true(e->ndim == 2 && e->shape[0] == 3 && e->shape[1] == 1);
    expect_fail(ctx, tg_unsqueeze(ctx, a, 3), TG_ERR_AXIS, "unsqueeze");
    expect_fail(ctx, tg_squeeze(ctx, x, 1, AX(3)), TG_ERR_AXIS, "squeeze");
    expect_fail(ctx, tg_topk(ctx, a, 4, 0, true, NULL), TG_ERR_INVALID, "topk");
    expect_fail(ctx, tg_index_select(ctx, x, 1, x), TG_ERR_SHAPE, "index_select");
    tg_tensor *wide = tg_zeros(ctx, TG_U8, 1, SH(5));
    expect_fail(ctx, tg_masked_fill(ctx, a, wide, 1.0), TG_ERR_SHAPE, "broadcast");
    tg_step_reset(ctx);
}

/* ---- printing ---- */

static void expect_str(tg_ctx *ctx, const tg_tensor *t, const char *want) {
    char buf[4096];
    CHECK_T(ctx, t);
    int64_t n = tg_tensor_str(ctx, t, buf, sizeof buf);
    assert_int_equal(n, (int64_t)strlen(want));
    if (strcmp(buf, want) != 0)
        fail_msg("printed\n%s\nexpected (PyTorch)\n%s", buf, want);
}

static void test_tensor_str_matches_pytorch(void **state) {
    tg_ctx *ctx = *state;
    /* the expected texts are str(t) of the same tensors in PyTorch 1.13 */
    expect_str(ctx, tg_from_data(ctx, TG_F32, 2, SH(2, 2), (const float[]){1.5f, -2, 3.25f, 4}),
               "tensor([[ 1.5000, -2.0000],\n        [ 3.2500,  4.0000]])");
    expect_str(ctx, tg_from_data(ctx, TG_F32, 1, SH(3), (const float[]){1, 2, -3}),
               "tensor([ 1.,  2., -3.])");
    expect_str(ctx, tg_from_data(ctx, TG_F32, 1, SH(3), (const float[]){1e-5f, 1, 2.5f}),
               "tensor([1.0000e-05, 1.0000e+00, 2.5000e+00])");
    expect_str(ctx, i64v(ctx, 2, SH(1, 3), (const int64_t[]){1, -20, 3}),
               "tensor([[  1, -20,   3]])");
    expect_str(ctx, f64v(ctx, 1, SH(2), (const double[]){0.5, 0.25}),
               "tensor([0.5000, 0.2500], dtype=torch.float64)");
    expect_str(ctx, tg_from_data(ctx, TG_U8, 1, SH(2), (const uint8_t[]){1, 200}),
               "tensor([  1, 200], dtype=torch.uint8)");
    expect_str(ctx, tg_from_data(ctx, TG_I32, 1, SH(1), (const int32_t[]){7}),
               "tensor([7], dtype=torch.int32)");
    expect_str(ctx, tg_scalar(ctx, TG_F32, 3.5), "tensor(3.5000)");
    expect_str(ctx, tg_arange(ctx, TG_I64, 0, 2000, 1),
               "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])");
    expect_str(ctx, tg_reshape(ctx, tg_arange(ctx, TG_F32, 0, 1200, 1), 2, SH(40, 30)),
               "tensor([[0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 2.7000e+01, 2.8000e+01,\n"
               "         2.9000e+01],\n"
               "        [3.0000e+01, 3.1000e+01, 3.2000e+01,  ..., 5.7000e+01, 5.8000e+01,\n"
               "         5.9000e+01],\n"
               "        [6.0000e+01, 6.1000e+01, 6.2000e+01,  ..., 8.7000e+01, 8.8000e+01,\n"
               "         8.9000e+01],\n"
               "        ...,\n"
               "        [1.1100e+03, 1.1110e+03, 1.1120e+03,  ..., 1.1370e+03, 1.1380e+03,\n"
               "         1.1390e+03],\n"
               "        [1.1400e+03, 1.1410e+03, 1.1420e+03,  ..., 1.1670e+03, 1.1680e+03,\n"
               "         1.1690e+03],\n"
               "        [1.1700e+03, 1.1710e+03, 1.1720e+03,  ..., 1.1970e+03, 1.1980e+03,\n"
               "         1.1990e+03]])");
    expect_str(ctx, tg_reshape(ctx, tg_arange(ctx, TG_I64, 0, 8, 1), 3, SH(2, 2, 2)),
               "tensor([[[0, 1],\n         [2, 3]],\n\n        [[4, 5],\n         [6, 7]]])");
    expect_str(ctx, tg_zeros(ctx, TG_F32, 1, SH(0)), "tensor([])");
    expect_str(ctx, tg_zeros(ctx, TG_F32, 2, SH(0, 3)), "tensor([], size=(0, 3))");
    expect_str(ctx, tg_zeros(ctx, TG_F32, 1, SH(3)), "tensor([0., 0., 0.])");
    expect_str(ctx, tg_from_data(ctx, TG_F32, 1, SH(3), (const float[]){NAN, 1.5f, INFINITY}),
               "tensor([   nan, 1.5000,    inf])");
    expect_str(ctx, tg_mul_scalar(ctx, tg_arange(ctx, TG_F32, 0, 30, 1), 1.0 / 7.0),
               "tensor([0.0000, 0.1429, 0.2857, 0.4286, 0.5714, 0.7143, 0.8571, 1.0000, 1.1429,\n"
               "        1.2857, 1.4286, 1.5714, 1.7143, 1.8571, 2.0000, 2.1429, 2.2857, 2.4286,\n"
               "        2.5714, 2.7143, 2.8571, 3.0000, 3.1429, 3.2857, 3.4286, 3.5714, 3.7143,\n"
               "        3.8571, 4.0000, 4.1429])");
    tg_tensor *p = tg_from_data(ctx, TG_F32, 1, SH(2), (const float[]){1, 2});
    assert_int_equal(tg_set_requires_grad(ctx, p, true), TG_OK);
    expect_str(ctx, p, "tensor([1., 2.], requires_grad=True)");
    /* a transposed view prints its logical order; a short buffer truncates */
    expect_str(ctx, tg_transpose(ctx, i64v(ctx, 2, SH(2, 2), (const int64_t[]){1, 2, 3, 4}), 0, 1),
               "tensor([[1, 3],\n        [2, 4]])");
    char small[8];
    assert_int_equal(tg_tensor_str(ctx, tg_scalar(ctx, TG_F32, 3.5), small, sizeof small), 14);
    assert_string_equal(small, "tensor(");
    assert_int_equal(tg_tensor_str(ctx, NULL, small, sizeof small), -1);
    tg_ctx_clear_error(ctx);
    tg_step_reset(ctx);
}

/* ---- f64 layers ---- */

/* loss(w) = sum(layernorm(linear(x))^2) with every layer in f64. */
static double f64_loss(tg_ctx *ctx, tg_linear *fc, tg_layernorm *ln, tg_tensor *x, bool backward) {
    tg_tensor *y = tg_layernorm_forward(ctx, ln, tg_linear_forward(ctx, fc, x));
    tg_tensor *l = tg_sum(ctx, tg_mul(ctx, y, y), 0, NULL, false);
    double v = NAN;
    CHECK_T(ctx, l);
    assert_int_equal(l->dtype, TG_F64);
    assert_int_equal(tg_item(ctx, l, &v), TG_OK);
    if (backward)
        assert_int_equal(tg_backward(ctx, l, NULL, 0), TG_OK);
    return v;
}

static void test_f64_layers(void **state) {
    tg_ctx *ctx = *state;
    tg_params ps = {.dtype = TG_F64};
    tg_rng rng = tg_rng_make(11, 0);
    tg_linear fc;
    tg_layernorm ln;
    tg_batchnorm bn;
    assert_int_equal(tg_linear_init(ctx, &fc, &ps, "fc", 3, 4, true, &rng), TG_OK);
    assert_int_equal(tg_layernorm_init(ctx, &ln, &ps, "ln", 1, SH(4), 1e-5), TG_OK);
    assert_int_equal(tg_batchnorm_init(ctx, &bn, &ps, "bn", 4, 1e-5, 0.1), TG_OK);
    for (int i = 0; i < ps.nparams; i++)
        assert_int_equal(ps.params[i]->dtype, TG_F64);
    assert_int_equal(bn.running_var->dtype, TG_F64);
    /* the zero value of the list is f32, as before */
    tg_params p32 = {0};
    tg_linear f32;
    assert_int_equal(tg_linear_init(ctx, &f32, &p32, "fc", 3, 4, true, &rng), TG_OK);
    assert_int_equal(f32.weight->dtype, TG_F32);
    /* a central difference in f64 agrees with backward to ~1e-8: only an
     * f64 model can be checked this closely */
    tg_tensor *x = f64v(ctx, 2, SH(2, 3), (const double[]){0.3, -1.2, 0.8, 1.1, 0.4, -0.7});
    f64_loss(ctx, &fc, &ln, x, true);
    double g;
    assert_int_equal(tg_get(ctx, fc.weight->grad, 5, &g), TG_OK);
    double w0, h = 1e-6;
    assert_int_equal(tg_get(ctx, fc.weight, 5, &w0), TG_OK);
    double wb[12];
    assert_int_equal(tg_to_host(ctx, fc.weight, wb, sizeof wb), TG_OK);
    bool prev = tg_set_grad_enabled(ctx, false);
    wb[5] = w0 + h;
    assert_int_equal(tg_copy_from_host(ctx, fc.weight, wb, sizeof wb), TG_OK);
    double lp = f64_loss(ctx, &fc, &ln, x, false);
    wb[5] = w0 - h;
    assert_int_equal(tg_copy_from_host(ctx, fc.weight, wb, sizeof wb), TG_OK);
    double lm = f64_loss(ctx, &fc, &ln, x, false);
    tg_set_grad_enabled(ctx, prev);
    double fd = (lp - lm) / (2 * h);
    if (fabs(fd - g) > 1e-8 * (1 + fabs(g)))
        fail_msg("d loss / d w[5]: backward %.12g, central difference %.12g", g, fd);
    tg_step_reset(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detach),
        cmocka_unit_test(test_casts),
        cmocka_unit_test(test_accuracy_expression),
        cmocka_unit_test(test_comparisons_are_constants),
        cmocka_unit_test(test_maximum_ties_and_nan),
        cmocka_unit_test(test_arange_and_like),
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_random_streams),
        cmocka_unit_test(test_squeeze_unsqueeze),
        cmocka_unit_test(test_tensor_str_matches_pytorch),
        cmocka_unit_test(test_f64_layers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
