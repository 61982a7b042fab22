/*
 * tests/cpu_kernels_util.h: what the CPU kernel tests (test_cpu_kernels.c,
 * test_cpu_reduce_matmul.c) share: buffers of any dtype filled from doubles,
 * a deterministic random sequence, kernel views over raw storage, calling a
 * kernel of tg_backend_cpu() directly (its error text lands in errbuf), and
 * element-by-element comparison against a double-precision reference.
 *
 * Everything is static inline so that a test uses only what it needs.
 */
#ifndef TG_TESTS_CPU_KERNELS_UTIL_H
#define TG_TESTS_CPU_KERNELS_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/kernels.h"

/* The float dtypes every kernel test runs in. */
static const tg_dtype float_dtypes[2] = {TG_F32, TG_F64};

static inline size_t esize(tg_dtype dt) {
    return dt == TG_U8 ? 1 : (dt == TG_F32 || dt == TG_I32) ? 4 : 8;
}

/* A deterministic sequence in [-1, 1). */
static inline double rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) / (double)(1ULL << 52) * 2.0 - 1.0;
}

static inline void set_elem(tg_dtype dt, void *p, int64_t i, double v) {
    switch (dt) {
    case TG_F32:
        ((float *)p)[i] = (float)v;
        break;
    case TG_F64:
        ((double *)p)[i] = v;
        break;
    case TG_U8:
        ((uint8_t *)p)[i] = (uint8_t)v;
        break;
    case TG_I32:
        ((int32_t *)p)[i] = (int32_t)v;
        break;
    default:
        ((int64_t *)p)[i] = (int64_t)v;
        break;
    }
}

static inline double get_elem(tg_dtype dt, const void *p, int64_t i) {
    switch (dt) {
    case TG_F32:
        return ((const float *)p)[i];
    case TG_F64:
        return ((const double *)p)[i];
    case TG_U8:
        return ((const uint8_t *)p)[i];
    case TG_I32:
        return ((const int32_t *)p)[i];
    default:
        return (double)((const int64_t *)p)[i];
    }
}

/* A buffer of n elements of dt holding v (rounded to dt). */
static inline void *buf_from(tg_dtype dt, const double *v, int64_t n) {
    void *p = malloc((size_t)(n > 0 ? n : 1) * esize(dt));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++)
        set_elem(dt, p, i, v[i]);
    return p;
}

/* n random values; rounded through dt so references see what the kernel sees. */
static inline double *rand_vals(tg_dtype dt, int64_t n, uint64_t seed, double scale) {
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++) {
        v[i] = rnd(&seed) * scale;
        if (dt == TG_F32)
            v[i] = (float)v[i];
    }
    return v;
}

static inline tg_kview view(void *data, tg_dtype dt, int ndim, const int64_t *shape,
                            const int64_t *strides) {
    tg_kview v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = dt;
    v.ndim = ndim;
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        v.shape[d] = shape[d];
        v.strides[d] = strides ? strides[d] : s;
        s *= shape[d];
    }
    return v;
}

/* The error text of the last run_kernel call. */
static char errbuf[256];

static inline tg_status run_kernel(tg_op op, const tg_op_params *p, tg_kview out, int nin,
                                   const tg_kview *in) {
    tg_kargs a;
    memset(&a, 0, sizeof a);
    a.op = op;
    a.p = p;
    a.out = out;
    a.nin = nin;
    for (int i = 0; i < nin; i++)
        a.in[i] = in[i];
    errbuf[0] = '\0';
    a.err = errbuf;
    a.errlen = sizeof errbuf;
    const tg_backend *be = tg_backend_cpu();
    assert_non_null(be->kernels[op]);
    return be->kernels[op](NULL, &a);
}

static inline double tol_of(tg_dtype dt) { return dt == TG_F32 ? 2e-5 : 1e-12; }

static inline void expect_close(double got, double want, double tol, const char *what, int64_t i) {
    if (isnan(want) && isnan(got))
        return;
    if (isinf(want) && got == want)
        return;
    double err = fabs(got - want), lim = tol * (1.0 + fabs(want));
    if (!(err <= lim))
        fail_msg("%s[%lld]: got %.17g, want %.17g", what, (long long)i, got, want);
}

static inline void expect_buf(tg_dtype dt, const void *got, const double *want, int64_t n,
                              double tol, const char *what) {
    for (int64_t i = 0; i < n; i++)
        expect_close(get_elem(dt, got, i), want[i], tol, what, i);
}

#endif
