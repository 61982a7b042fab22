/*
 * tests/autograd_util.h: helpers shared by the autograd test files: contexts,
 * f64 tensors from literals, reading values back and comparing them.
 */
#ifndef TG_TESTS_AUTOGRAD_UTIL_H
#define TG_TESTS_AUTOGRAD_UTIL_H
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tapegrad/runtime.h"

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define AX(...) ((const int[]){__VA_ARGS__})
#define TS(...) ((tg_tensor *const[]){__VA_ARGS__})
#define NELEM(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

/* ---- helpers ---- */

static inline int setup_ctx(void **state) {
    tg_ctx *ctx = NULL;
    if (tg_ctx_new(NULL, &ctx) != TG_OK || !ctx) {
        print_error("tg_ctx_new failed: %s\n", tg_last_init_error());
        return -1;
    }
    *state = ctx;
    return 0;
}

static inline int teardown_ctx(void **state) {
    tg_ctx_free(*state);
    return 0;
}

static inline const char *errmsg(tg_ctx *ctx) {
    const char *e = tg_ctx_error(ctx);
    return e ? e : "";
}

/* Fails with the context's error when t is NULL. */
#define CHECK_T(ctx, t)                                                                          \
    do {                                                                                         \
        if (!(t))                                                                                \
            fail_msg("%s is NULL: [%s] %s", #t, tg_status_str(tg_ctx_status(ctx)), errmsg(ctx)); \
    } while (0)

#define CHECK_OK(ctx, call)                                                         \
    do {                                                                            \
        tg_status st_ = (call);                                                     \
        if (st_ != TG_OK)                                                           \
            fail_msg("%s failed: [%s] %s", #call, tg_status_str(st_), errmsg(ctx)); \
    } while (0)

static inline tg_tensor *f64(tg_ctx *ctx, int ndim, const int64_t *shape, const double *v) {
    tg_tensor *t = tg_from_data(ctx, TG_F64, ndim, shape, v);
    CHECK_T(ctx, t);
    return t;
}

static inline tg_tensor *f64_rg(tg_ctx *ctx, int ndim, const int64_t *shape, const double *v) {
    tg_tensor *t = f64(ctx, ndim, shape, v);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, t, true));
    return t;
}

static inline tg_tensor *arange(tg_ctx *ctx, int ndim, const int64_t *shape, double start) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = start + (double)i;
    tg_tensor *t = f64(ctx, ndim, shape, v);
    free(v);
    return t;
}

static inline void fill_random(double *v, int64_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v[i] = -1.0 + 2.0 * (double)(s >> 11) / 9007199254740992.0;
    }
}

static inline tg_tensor *randn_like_shape(tg_ctx *ctx, int ndim, const int64_t *shape,
                                          uint64_t seed, double **host) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    fill_random(v, n, seed);
    tg_tensor *t = f64(ctx, ndim, shape, v);
    if (host)
        *host = v;
    else
        free(v);
    return t;
}

static inline double *read_all(tg_ctx *ctx, const tg_tensor *t) {
    assert_non_null(t);
    int64_t n = tg_numel(t);
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    assert_non_null(v);
    if (t->dtype == TG_F64) {
        CHECK_OK(ctx, tg_to_host(ctx, t, v, (size_t)n * sizeof *v));
    } else {
        for (int64_t i = 0; i < n; i++)
            CHECK_OK(ctx, tg_get(ctx, t, i, &v[i]));
    }
    return v;
}

static inline void expect_shape(const tg_tensor *t, int ndim, const int64_t *shape) {
    assert_non_null(t);
    assert_int_equal(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d])
            fail_msg("dim %d is %lld, expected %lld", d, (long long)t->shape[d],
                     (long long)shape[d]);
}

static inline void expect_values(tg_ctx *ctx, const tg_tensor *t, const double *want, int64_t n,
                                 double tol) {
    assert_non_null(t);
    assert_int_equal(tg_numel(t), n);
    double *got = read_all(ctx, t);
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol)) {
            double g = got[i];
            free(got);
            fail_msg("element %lld is %.10g, expected %.10g", (long long)i, g, want[i]);
        }
    free(got);
}

static inline double item(tg_ctx *ctx, const tg_tensor *t) {
    double v = NAN;
    assert_non_null(t);
    CHECK_OK(ctx, tg_item(ctx, t, &v));
    return v;
}

static inline tg_tensor *sum_all(tg_ctx *ctx, tg_tensor *t) {
    return tg_sum(ctx, t, 0, NULL, false);
}

static inline bool contains(const char *hay, const char *needle) {
    return hay && strstr(hay, needle) != NULL;
}

/* Row-major offset into a tensor of shape `shape` (ndim dims) of the element
 * that broadcasting pairs with the out index `oi` (out has ond dims). */
static inline int64_t bcast_offset(int ond, const int64_t *oi, int ndim, const int64_t *shape) {
    int64_t off = 0;
    for (int d = 0; d < ndim; d++) {
        int od = ond - ndim + d;
        int64_t i = shape[d] == 1 ? 0 : oi[od];
        off = off * shape[d] + i;
    }
    return off;
}

static inline void unravel(int64_t flat, int ndim, const int64_t *shape, int64_t *idx) {
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
}

#endif
