/*
 * Size arithmetic from user-given shapes: element counts, byte sizes,
 * strides, view geometry, conv/pool output sizes and the arena's round-up,
 * each just inside and just past its limit. A size that does not fit must
 * fail with TG_ERR_SHAPE or TG_ERR_NOMEM and a message naming the shape,
 * never wrap to a small size (the sanitizer build runs this file: a wrapped
 * signed product or an out-of-bounds fill fails it on its own).
 *
 * Huge tensors are made as broadcast views of a scalar, which allocate
 * nothing. Requests that pass the size checks and then reach the allocator
 * are all above 2^62 bytes, which no machine grants.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/checked.h"
#include "core/internal.h"
#include "tapegrad/nn.h"
#include "tapegrad/runtime.h"

/* Under AddressSanitizer a request above its maximum must return NULL (as
 * malloc does) rather than abort the test. Unused in other builds. */
const char *__asan_default_options(void);
__attribute__((used, visibility("default"))) const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define TS(...) ((tg_tensor *const[]){__VA_ARGS__})

/* INT64_MAX = 7 * 1317624576693539401: a shape with exactly that many
 * elements, and one with one row more. */
#define BIG_ROW 1317624576693539401LL

static int setup(void **state)
{
    tg_ctx *ctx = NULL;
    if (tg_ctx_new(NULL, &ctx) != TG_OK)
        return -1;
    *state = ctx;
    return 0;
}

static int teardown(void **state)
{
    tg_ctx_free(*state);
    return 0;
}

/* The call returned NULL with status st and a message holding every one of
 * the NULL-terminated strings; clears the error. */
static void expect_fail(tg_ctx *ctx, const void *r, tg_status st, ...)
{
    const char *msg = tg_ctx_error(ctx);
    if (r || tg_ctx_status(ctx) != st)
        fail_msg("expected status %s, got %s (result %p): %s", tg_status_str(st),
                 tg_status_str(tg_ctx_status(ctx)), r, msg);
    va_list ap;
    va_start(ap, st);
    for (const char *want; (want = va_arg(ap, const char *));)
        if (!strstr(msg, want))
            fail_msg("message \"%s\" does not contain \"%s\"", msg, want);
    va_end(ap);
    tg_ctx_clear_error(ctx);
}

static void expect_ok(tg_ctx *ctx, const void *r)
{
    if (!r || tg_ctx_status(ctx) != TG_OK)
        fail_msg("expected success: %s", tg_ctx_error(ctx));
}

/* A view of an f32 scalar with the given shape (no memory behind it). */
static tg_tensor *huge(tg_ctx *ctx, int ndim, const int64_t *shape)
{
    tg_tensor *s = tg_scalar(ctx, TG_F32, 1.0);
    assert_non_null(s);
    return tg_broadcast_to(ctx, s, ndim, shape);
}

/* ---- the helpers of checked.h ---- */

static void test_checked_helpers(void **state)
{
    (void)state;
    int64_t n;
    size_t b;
    assert_true(tg__numel_checked(2, SH(7, BIG_ROW), &n));
    assert_true(n == INT64_MAX);
    assert_false(tg__numel_checked(2, SH(7, BIG_ROW + 1), &n));
    assert_false(tg__numel_checked(2, SH(8, BIG_ROW), &n));
    assert_false(tg__numel_checked(3, SH(1LL << 40, 1LL << 40, 16), &n));
    /* A zero size: no elements, whatever the others are. */
    assert_true(tg__numel_checked(3, SH(1LL << 62, 1LL << 62, 0), &n));
    assert_true(n == 0);
    assert_false(tg__numel_checked(2, SH(3, -1), &n));
    assert_true(tg__numel_checked(0, NULL, &n) && n == 1);
    /* Byte sizes up to PTRDIFF_MAX. */
    assert_true(tg__nbytes_checked(1, SH(INT64_MAX), 1, &b) && b == (size_t)INT64_MAX);
    assert_true(tg__nbytes_checked(1, SH(INT64_MAX / 8), 8, &b));
    assert_false(tg__nbytes_checked(1, SH(INT64_MAX / 8 + 1), 8, &b));
    assert_false(tg__nbytes_checked(2, SH(1LL << 31, 1LL << 31), 8, &b));
    assert_true(tg__mul_size(SIZE_MAX / 2, 2, &b));
    assert_false(tg__mul_size(SIZE_MAX / 2 + 1, 2, &b));
    assert_true(tg__round_up_size(SIZE_MAX - 63, 64, &b) && b == SIZE_MAX - 63);
    assert_false(tg__round_up_size(SIZE_MAX - 62, 64, &b));
    assert_true(tg__round_up_size(65, 64, &b) && b == 128);
}

/* ---- element counts ---- */

static void test_numel_overflow(void **state)
{
    tg_ctx *ctx = *state;
    expect_fail(ctx, tg_zeros(ctx, TG_F32, 3, SH(1LL << 40, 1LL << 40, 16)), TG_ERR_SHAPE,
                "(1099511627776, 1099511627776, 16)", NULL);
    expect_fail(ctx, tg_empty(ctx, TG_F32, 2, SH(1LL << 62, 4)), TG_ERR_SHAPE,
                "(4611686018427387904, 4)", NULL);
    expect_fail(ctx, tg_param(ctx, TG_F32, 2, SH(1LL << 62, 4), "w"), TG_ERR_SHAPE,
                "(4611686018427387904, 4)", NULL);
    expect_fail(ctx, tg_persistent(ctx, TG_F64, 2, SH(1LL << 62, 4), "b"), TG_ERR_SHAPE,
                "(4611686018427387904, 4)", NULL);
    /* Zero elements, but a contiguous stride of 2^124. */
    expect_fail(ctx, tg_empty(ctx, TG_F32, 3, SH(0, 1LL << 62, 1LL << 62)), TG_ERR_SHAPE,
                "(0, 4611686018427387904, 4611686018427387904)", NULL);
    expect_fail(ctx, tg_zeros(ctx, TG_F32, 2, SH(4, -3)), TG_ERR_SHAPE, "(4, -3)", "negative",
                NULL);
    /* A zero size among moderate ones is an ordinary empty tensor. */
    tg_tensor *e = tg_zeros(ctx, TG_F32, 3, SH(1LL << 40, 0, 16));
    expect_ok(ctx, e);
    assert_int_equal(tg_numel(e), 0);
}

/* ---- byte sizes ---- */

static void test_bytes_overflow(void **state)
{
    tg_ctx *ctx = *state;
    /* 2^62 elements fit an int64_t; 2^65 bytes do not fit a size_t. */
    expect_fail(ctx, tg_zeros(ctx, TG_F64, 2, SH(1LL << 31, 1LL << 31)), TG_ERR_NOMEM,
                "(2147483648, 2147483648)", "f64", NULL);
    /* 2^61 f32 elements: 2^63 bytes, one element past the limit. */
    expect_fail(ctx, tg_empty(ctx, TG_F32, 1, SH(1LL << 61)), TG_ERR_NOMEM,
                "(2305843009213693952,)", "f32", NULL);
    /* One element less is within the limit: the allocator refuses it. */
    expect_fail(ctx, tg_empty(ctx, TG_F32, 1, SH((1LL << 61) - 1)), TG_ERR_NOMEM,
                "out of memory allocating 9223372036854775804 bytes", "(2305843009213693951,)",
                NULL);
    /* u8: the element count limit and the byte limit coincide. */
    expect_fail(ctx, tg_empty(ctx, TG_U8, 2, SH(7, BIG_ROW)), TG_ERR_NOMEM,
                "9223372036854775807 bytes", "(7, 1317624576693539401)", NULL);
    expect_fail(ctx, tg_empty(ctx, TG_U8, 2, SH(7, BIG_ROW + 1)), TG_ERR_SHAPE,
                "(7, 1317624576693539402)", NULL);
    /* The context still works after all of these. */
    tg_tensor *t = tg_full(ctx, TG_F64, 2, SH(3, 4), 2.5);
    expect_ok(ctx, t);
    double v = 0;
    assert_int_equal(tg_get(ctx, t, 11, &v), TG_OK);
    assert_true(v == 2.5);
}

/* ---- views ---- */

static void test_broadcast_views(void **state)
{
    tg_ctx *ctx = *state;
    tg_tensor *t = huge(ctx, 2, SH(7, BIG_ROW));
    expect_ok(ctx, t);
    assert_true(tg_numel(t) == INT64_MAX);
    expect_fail(ctx, huge(ctx, 2, SH(7, BIG_ROW + 1)), TG_ERR_SHAPE, "broadcast_to",
                "(7, 1317624576693539402)", NULL);
    expect_fail(ctx, huge(ctx, 3, SH(1LL << 40, 1LL << 40, 16)), TG_ERR_SHAPE, "broadcast_to",
                "(1099511627776, 1099511627776, 16)", NULL);
    expect_fail(ctx, huge(ctx, 2, SH(3, -2)), TG_ERR_SHAPE, "broadcast_to", "(3, -2)", NULL);
    /* Its bytes do not fit any host buffer. */
    float buf[4];
    assert_int_equal(tg_to_host(ctx, t, buf, sizeof buf), TG_ERR_NOMEM);
    expect_fail(ctx, NULL, TG_ERR_NOMEM, "to_host", "(7, 1317624576693539401)", NULL);
    /* A binary op over huge operands: the result's bytes do not fit. */
    tg_tensor *a = huge(ctx, 2, SH(7, 1)), *b = huge(ctx, 2, SH(1, BIG_ROW));
    expect_ok(ctx, a);
    expect_ok(ctx, b);
    expect_fail(ctx, tg_add(ctx, a, b), TG_ERR_NOMEM, "(7, 1317624576693539401)", NULL);
    tg_tensor *c = huge(ctx, 2, SH(8, 1));
    expect_fail(ctx, tg_mul(ctx, c, b), TG_ERR_SHAPE, "(8, 1317624576693539401)", NULL);
    /* matmul of huge operands: the product's shape overflows. */
    tg_tensor *m1 = huge(ctx, 2, SH(1LL << 40, 2)), *m2 = huge(ctx, 2, SH(2, 1LL << 40));
    expect_fail(ctx, tg_matmul(ctx, m1, m2), TG_ERR_SHAPE, "(1099511627776, 1099511627776)",
                NULL);
}

static void test_reshape_huge(void **state)
{
    tg_ctx *ctx = *state;
    tg_tensor *t = huge(ctx, 2, SH(7, BIG_ROW));
    expect_ok(ctx, t);
    /* A target whose product overflows, with and without -1. */
    expect_fail(ctx, tg_reshape(ctx, t, 2, SH(1LL << 62, 4)), TG_ERR_SHAPE, "reshape",
                "(4611686018427387904, 4)", NULL);
    expect_fail(ctx, tg_reshape(ctx, t, 3, SH(1LL << 62, 4, -1)), TG_ERR_SHAPE, "reshape",
                "(4611686018427387904, 4, -1)", NULL);
    /* The same count: a copy (the view is not contiguous), too big to make. */
    expect_fail(ctx, tg_reshape(ctx, t, 2, SH(BIG_ROW, -1)), TG_ERR_NOMEM,
                "(1317624576693539401, 7)", NULL);
    /* A contiguous reshape of a real tensor still works, -1 included. */
    tg_tensor *r = tg_zeros(ctx, TG_F32, 2, SH(4, 6));
    tg_tensor *v = tg_reshape(ctx, r, 3, SH(2, -1, 3));
    expect_ok(ctx, v);
    assert_true(v->shape[1] == 4);
    expect_fail(ctx, tg_reshape(ctx, r, 2, SH(5, -1)), TG_ERR_SHAPE, "(4, 6)", "(5, -1)", NULL);
}

static void test_slice_chunk_concat_huge(void **state)
{
    tg_ctx *ctx = *state;
    tg_tensor *t = huge(ctx, 1, SH(INT64_MAX));
    expect_ok(ctx, t);
    /* A huge step: one element, no overflow computing the count. */
    tg_tensor *s = tg_slice(ctx, t, 0, 5, INT64_MAX, INT64_MAX);
    expect_ok(ctx, s);
    assert_true(s->shape[0] == 1);
    tg_tensor *r = tg_zeros(ctx, TG_F32, 1, SH(10));
    s = tg_slice(ctx, r, 0, 1, 10, INT64_MAX - 1);
    expect_ok(ctx, s);
    assert_true(s->shape[0] == 1);
    s = tg_slice(ctx, t, 0, -3, INT64_MAX, 2);
    expect_ok(ctx, s);
    assert_true(s->shape[0] == 2);
    /* chunk: ceil(INT64_MAX / 2) without overflowing. */
    tg_tensor *out[2];
    assert_int_equal(tg_chunk(ctx, t, 2, 0, out), 2);
    assert_true(out[0]->shape[0] == (1LL << 62));
    assert_true(out[1]->shape[0] == (1LL << 62) - 1);
    /* concat along a dim whose sizes sum past INT64_MAX. */
    tg_tensor *one = huge(ctx, 1, SH(1));
    expect_fail(ctx, tg_concat(ctx, 2, TS(t, one), 0), TG_ERR_SHAPE, "concat",
                "(1,)", NULL);
    /* rearrange: sizes whose product overflows. */
    tg_tensor *r8 = tg_zeros(ctx, TG_F32, 1, SH(8));
    expect_fail(ctx, tg_rearrange(ctx, r8, "(a b) -> a b", "a=4611686018427387904, b=4"),
                TG_ERR_SHAPE, "rearrange", "a=4611686018427387904, b=4", NULL);
    /* slice_scatter into a target shape that overflows. */
    expect_fail(ctx, tg_slice_scatter(ctx, one, 2, SH(1LL << 62, 4), 0, 0, 1, 1), TG_ERR_SHAPE,
                "slice_scatter", "(4611686018427387904, 4)", NULL);
}

/* The runtime's own view constructor refuses geometry whose offsets leave
 * the int64_t range (a last line behind the ops' own checks). */
static void test_view_geometry(void **state)
{
    tg_ctx *ctx = *state;
    tg_tensor *src = tg_zeros(ctx, TG_F32, 1, SH(4));
    expect_ok(ctx, src);
    /* Largest offset 2 * 2^62 + 1 = 2^63 + 1. */
    expect_fail(ctx, tg__view(ctx, src, 2, SH(3, 2), SH(1LL << 62, 1), 0), TG_ERR_SHAPE,
                "view: shape (3, 2) with strides (4611686018427387904, 1)", NULL);
    /* Largest offset 2^62 + (2^62 - 2) = INT64_MAX - 1: fits. */
    expect_ok(ctx, tg__view(ctx, src, 2, SH(2, (1LL << 62) - 1), SH(1LL << 62, 1), 0));
    expect_fail(ctx, tg__view(ctx, src, 1, SH(2), SH(-(1LL << 62)), INT64_MIN + 1),
                TG_ERR_SHAPE, "at offset", NULL);
}

/* ---- conv and pool output sizes ---- */

static void test_conv_pool_huge(void **state)
{
    tg_ctx *ctx = *state;
    tg_tensor *x = huge(ctx, 4, SH(1, 1, INT64_MAX, 1));
    tg_tensor *w = tg_zeros(ctx, TG_F32, 4, SH(1, 1, 1, 1));
    expect_ok(ctx, x);
    expect_ok(ctx, w);
    /* The padded height overflows. */
    tg_conv2d_opts pad = {{1, 1}, {1, 0}, {1, 1}};
    expect_fail(ctx, tg_conv2d(ctx, x, w, NULL, &pad), TG_ERR_SHAPE, "conv2d",
                "input 9223372036854775807x1", "pad (1, 0)", NULL);
    /* No padding: an output of INT64_MAX elements, too many bytes. */
    expect_fail(ctx, tg_conv2d(ctx, x, w, NULL, NULL), TG_ERR_NOMEM,
                "(1, 1, 9223372036854775807, 1)", NULL);
    /* A dilated kernel whose span overflows. */
    tg_tensor *wk = huge(ctx, 4, SH(1, 1, 1LL << 62, 1));
    tg_tensor *xs = tg_zeros(ctx, TG_F32, 4, SH(1, 1, 4, 1));
    tg_conv2d_opts dil = {{1, 1}, {0, 0}, {4, 1}};
    expect_fail(ctx, tg_conv2d(ctx, xs, wk, NULL, &dil), TG_ERR_SHAPE, "conv2d",
                "kernel 4611686018427387904x1", "dilation (4, 1)", NULL);
    /* The gradient ops take the sizes from the caller. */
    tg_tensor *g = tg_zeros(ctx, TG_F32, 4, SH(1, 1, 1, 1));
    expect_fail(ctx, tg_conv2d_backward_input(ctx, g, w, &pad, INT64_MAX, 1), TG_ERR_SHAPE,
                "conv2d_backward_input", "input 9223372036854775807x1", NULL);
    expect_fail(ctx, tg_conv2d_backward_weight(ctx, xs, g, &dil, 1LL << 62, 1), TG_ERR_SHAPE,
                "conv2d_backward_weight", "kernel 4611686018427387904x1", NULL);
    /* Pooling: the padded input overflows. */
    const int k[2] = {2, 2}, st[2] = {1, 1}, pd[2] = {1, 0};
    expect_fail(ctx, tg_max_pool2d(ctx, x, k, st, pd), TG_ERR_SHAPE, "max_pool2d",
                "(1, 1, 9223372036854775807, 1)", NULL);
    expect_fail(ctx, tg_avg_pool2d(ctx, x, k, st, pd), TG_ERR_SHAPE, "avg_pool2d",
                "(1, 1, 9223372036854775807, 1)", NULL);
    expect_fail(ctx, tg_avg_pool2d_backward(ctx, g, k, st, pd, INT64_MAX, 1), TG_ERR_SHAPE,
                "avg_pool2d_backward", NULL);
    /* An ordinary conv still runs. */
    tg_tensor *y = tg_conv2d(ctx, xs, w, NULL, NULL);
    expect_ok(ctx, y);
    assert_true(y->shape[2] == 4);
}

/* ---- the arena ---- */

static void test_arena_round_up(void **state)
{
    tg_ctx *ctx = *state;
    /* SIZE_MAX - 10 rounded up to 64 bytes wraps to 0 (then 64 bytes were
     * handed out). */
    expect_fail(ctx, tg__arena_alloc(ctx, &ctx->step_data, SIZE_MAX - 10), TG_ERR_NOMEM,
                "18446744073709551605 bytes", NULL);
    expect_fail(ctx, tg__arena_alloc(ctx, &ctx->step_meta, (size_t)PTRDIFF_MAX + 1),
                TG_ERR_NOMEM, "9223372036854775808 bytes", NULL);
    /* At the limit: rounds up without wrapping; the allocator refuses. */
    expect_fail(ctx, tg__arena_alloc(ctx, &ctx->step_data, (size_t)PTRDIFF_MAX), TG_ERR_NOMEM,
                "9223372036854775807 bytes", NULL);
    assert_null(tg__arena_try(ctx, &ctx->step_data, SIZE_MAX));
    assert_int_equal(tg_ctx_status(ctx), TG_OK);
    /* Ordinary requests still work and are aligned. */
    void *p = tg__arena_alloc(ctx, &ctx->step_data, 100);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checked_helpers),
        cmocka_unit_test_setup_teardown(test_numel_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broadcast_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reshape_huge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slice_chunk_concat_huge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_geometry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conv_pool_huge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arena_round_up, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
