/*
 * kernels/cpu/cpu_loss.c: the fused cross-entropy pair and dropout.
 *
 * cross_entropy computes, per row i of the logits, the log-sum-exp with the
 * row maximum subtracted (so no exp overflows) and
 *     loss_i = lse_i - (1 - eps) x[i, y_i] - (eps / C) sum_c x[i, c],
 * which is -sum_c q_c log softmax(x_i)_c for the smoothed target
 * distribution q = (1 - eps) onehot(y_i) + eps / C, as PyTorch defines label
 * smoothing. The mean over rows is summed in double over fixed blocks of
 * rows, so the result does not depend on the thread count. f32 logits take
 * their exps in f32, eight at a time (cpu_vexp.h), as PyTorch's f32 kernels
 * do; the sums and the log stay in double.
 *
 * dropout draws element i's keep decision from word i % 4 of the Philox
 * block (key, counter + i / 4): a pure function of the element's position.
 */
#include <math.h>
#include <stdio.h>

#include "cpu.h"
#include "cpu_vexp.h"
#include "tapegrad/rng.h"

/* The most partial sums of the row blocks of cross_entropy. */
#define CPU_CE_MAX_BLOCKS 1024

/* Checks logits (N, C) float, targets (N,) integer, and every target. */
static tg_status cpu_ce_check(const tg_kargs *a, const tg_kview *x, const tg_kview *t) {
    if (x->ndim != 2 || t->ndim != 1 || t->shape[0] != x->shape[0])
        return tg__cpu_fail(a, TG_ERR_SHAPE, "expected logits (N, C) and targets (N,)");
    if (t->dtype != TG_U8 && t->dtype != TG_I32 && t->dtype != TG_I64)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "targets must be u8, i32 or i64");
    const int64_t n = x->shape[0], c = x->shape[1];
    for (int64_t i = 0; i < n; i++) {
        int64_t y = tg__cpu_index_at(t->data, t->dtype, i * t->strides[0]);
        if (y < 0 || y >= c)
            return tg__cpu_fail(a, TG_ERR_INVALID,
                                "target %" PRId64 " of row %" PRId64
                                " is out of range: expected a class in [0, %" PRId64 ")",
                                y, i, c);
    }
    return TG_OK;
}

/* Row statistics: the max and the log of sum exp(x - max). f32 rows take
 * the exps eight at a time in f32 (cpu_vexp.h: the same bits on every CPU)
 * and sum them in double, in lanes of four and then the lanes in a fixed
 * order; f64 rows take libm's exp. */
typedef double cpu_v4d __attribute__((vector_size(32), aligned(sizeof(double)), may_alias));
typedef float cpu_v4f __attribute__((vector_size(16), aligned(sizeof(float)), may_alias));

/* Eight floats of a row from k on (m of them; the rest 0) into *v. */
static inline __attribute__((always_inline)) void cpu_ce_load8(const float *x, int64_t sx,
                                                               int64_t k, int m, tg__v8f *v) {
    if (sx == 1 && m == 8) {
        *v = *(const tg__v8f *)(x + k);
        return;
    }
    for (int l = 0; l < 8; l++)
        (*v)[l] = l < m ? x[(k + l) * sx] : 0.0f;
}

/* The low and high four floats of v, in double. */
#define CPU_CE_LO(v) __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3), cpu_v4d)
#define CPU_CE_HI(v) __builtin_convertvector(__builtin_shufflevector(v, v, 4, 5, 6, 7), cpu_v4d)

/* The row's maximum (NaNs skipped, as the scalar loop of the f64 rows):
 * lane-wise over whole vectors, then the lanes and the tail. */
static inline __attribute__((always_inline)) float cpu_ce_max_float(const float *x, int64_t sx,
                                                                    int64_t c) {
    float mx = -INFINITY;
    int64_t k = 0;
    if (sx == 1 && c >= 8) {
        tg__v8f mv = (tg__v8f){0} - INFINITY;
        for (; k + 8 <= c; k += 8) {
            const tg__v8f v = *(const tg__v8f *)(x + k);
            const tg__v8i gt = v > mv;
            mv = (tg__v8f)(((tg__v8i)v & gt) | ((tg__v8i)mv & ~gt));
        }
        for (int l = 0; l < 8; l++)
            mx = mv[l] > mx ? mv[l] : mx;
    }
    for (; k < c; k++)
        mx = x[k * sx] > mx ? x[k * sx] : mx;
    return mx;
}

TG__CPU_CLONES static double cpu_ce_lse_float(const float *x, int64_t sx, int64_t c, double *sum) {
    const float mx = cpu_ce_max_float(x, sx, c);
    cpu_v4d s = {0}, xs = {0};
    for (int64_t k = 0; k < c; k += 8) {
        const int m = c - k < 8 ? (int)(c - k) : 8;
        tg__v8f xv;
        cpu_ce_load8(x, sx, k, m, &xv);
        tg__v8f v = xv - mx;
        if (m < 8)
            for (int l = m; l < 8; l++)
                v[l] = -INFINITY; /* exp gives 0 */
        tg__vexp8(&v);
        s += CPU_CE_LO(v) + CPU_CE_HI(v);
        xs += CPU_CE_LO(xv) + CPU_CE_HI(xv);
    }
    *sum += (xs[0] + xs[1]) + (xs[2] + xs[3]);
    return (double)mx + log((s[0] + s[1]) + (s[2] + s[3]));
}

/* o[k] = gs (exp(x[k] - lse) - q_k), q the smoothed target of class y; the
 * argument x - lse is taken in double and rounded to f32. */
TG__CPU_CLONES static void cpu_ce_grad_float(const float *x, int64_t sx, int64_t c, double lse,
                                             double gs, double eps, int64_t y, float *o) {
    const double qb = eps / (double)c;
    for (int64_t k = 0; k < c; k += 8) {
        const int m = c - k < 8 ? (int)(c - k) : 8;
        tg__v8f xv;
        cpu_ce_load8(x, sx, k, m, &xv);
        const cpu_v4f a = __builtin_convertvector(CPU_CE_LO(xv) - lse, cpu_v4f);
        const cpu_v4f b = __builtin_convertvector(CPU_CE_HI(xv) - lse, cpu_v4f);
        tg__v8f v = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7);
        tg__vexp8(&v);
        const cpu_v4f oa = __builtin_convertvector(gs * (CPU_CE_LO(v) - qb), cpu_v4f);
        const cpu_v4f ob = __builtin_convertvector(gs * (CPU_CE_HI(v) - qb), cpu_v4f);
        if (m == 8) {
            *(cpu_v4f *)(o + k) = oa;
            *(cpu_v4f *)(o + k + 4) = ob;
        } else {
            for (int l = 0; l < m; l++)
                o[k + l] = l < 4 ? oa[l] : ob[l - 4];
        }
        if (y >= k && y < k + m)
            o[y] = (float)(gs * ((double)v[y - k] - qb - (1.0 - eps)));
    }
}

static inline void cpu_ce_grad_double(const double *x, int64_t sx, int64_t c, double lse, double gs,
                                      double eps, int64_t y, double *o) {
    for (int64_t k = 0; k < c; k++) {
        const double q = eps / (double)c + (k == y ? 1.0 - eps : 0.0);
        o[k] = gs * (exp(x[k * sx] - lse) - q);
    }
}

static inline double cpu_ce_lse_double(const double *x, int64_t sx, int64_t c, double *sum) {
    double mx = -INFINITY, s = 0;
    for (int64_t k = 0; k < c; k++)
        mx = x[k * sx] > mx ? x[k * sx] : mx;
    for (int64_t k = 0; k < c; k++) {
        s += exp(x[k * sx] - mx);
        *sum += x[k * sx];
    }
    return mx + log(s);
}

#define CPU_CE_FORWARD(TYPE)                                                                \
    do {                                                                                    \
        const TYPE *xd = x->data;                                                           \
        const int64_t sr = x->strides[0], sc = x->strides[1];                               \
        TG__CPU_FOR(                                                                        \
            tg__cpu_par_if(n * c > TG__CPU_PAR_MIN), "omp parallel for schedule(static)",    \
            for (int64_t b = 0; b < nblocks; b++) {                                         \
                double acc = 0;                                                             \
                const int64_t hi = (b + 1) * rows < n ? (b + 1) * rows : n;                 \
                for (int64_t i = b * rows; i < hi; i++) {                                   \
                    const TYPE *row = xd + i * sr;                                          \
                    double sum = 0;                                                         \
                    double lse = cpu_ce_lse_##TYPE(row, sc, c, &sum);                       \
                    int64_t y = tg__cpu_index_at(t->data, t->dtype, i * t->strides[0]);     \
                    acc += lse - (1.0 - eps) * (double)row[y * sc] - eps / (double)c * sum; \
                }                                                                           \
                part[b] = acc;                                                              \
            });                                                                             \
        double tot = 0;                                                                     \
        for (int64_t b = 0; b < nblocks; b++)                                               \
            tot += part[b];                                                                 \
        *(TYPE *)a->out.data = (TYPE)(tot / (double)n);                                     \
    } while (0)

tg_status tg__cpu_cross_entropy(void *state, const tg_kargs *a) {
    (void)state;
    const tg_kview *x = &a->in[0], *t = &a->in[1];
    if (x->dtype != a->out.dtype || (x->dtype != TG_F32 && x->dtype != TG_F64))
        return tg__cpu_fail(a, TG_ERR_DTYPE, "logits must be f32 or f64");
    tg_status st = cpu_ce_check(a, x, t);
    if (st != TG_OK)
        return st;
    const int64_t n = x->shape[0], c = x->shape[1];
    const double eps = a->p->f[0];
    if (n == 0 || c == 0) {
        /* The mean of no rows, as in PyTorch. */
        if (x->dtype == TG_F32)
            *(float *)a->out.data = NAN;
        else
            *(double *)a->out.data = NAN;
        return TG_OK;
    }
    int64_t rows = 64;
    if ((n + rows - 1) / rows > CPU_CE_MAX_BLOCKS)
        rows = (n + CPU_CE_MAX_BLOCKS - 1) / CPU_CE_MAX_BLOCKS;
    const int64_t nblocks = (n + rows - 1) / rows;
    double part[CPU_CE_MAX_BLOCKS];
    if (x->dtype == TG_F32)
        CPU_CE_FORWARD(float);
    else
        CPU_CE_FORWARD(double);
    return TG_OK;
}

/* out[i, c] = g / N * (softmax(x_i)_c - q_ic). */
#define CPU_CE_BACKWARD(TYPE)                                                             \
    do {                                                                                  \
        const TYPE *xd = x->data;                                                         \
        TYPE *od = a->out.data;                                                           \
        const int64_t sr = x->strides[0], sc = x->strides[1];                             \
        const double gs = (double)*(const TYPE *)g->data / (double)n;                     \
        TG__CPU_FOR(                                                                      \
            tg__cpu_par_if(n * c > TG__CPU_PAR_MIN), "omp parallel for schedule(static)",  \
            for (int64_t i = 0; i < n; i++) {                                             \
                const TYPE *row = xd + i * sr;                                            \
                double sum = 0;                                                           \
                const double lse = cpu_ce_lse_##TYPE(row, sc, c, &sum);                   \
                const int64_t y = tg__cpu_index_at(t->data, t->dtype, i * t->strides[0]); \
                cpu_ce_grad_##TYPE(row, sc, c, lse, gs, eps, y, od + i * c);              \
            });                                                                           \
    } while (0)

tg_status tg__cpu_cross_entropy_backward(void *state, const tg_kargs *a) {
    (void)state;
    const tg_kview *g = &a->in[0], *x = &a->in[1], *t = &a->in[2];
    if (x->dtype != a->out.dtype || g->dtype != x->dtype ||
        (x->dtype != TG_F32 && x->dtype != TG_F64))
        return tg__cpu_fail(a, TG_ERR_DTYPE, "g and logits must share a float dtype");
    if (g->ndim != 0)
        return tg__cpu_fail(a, TG_ERR_SHAPE, "the incoming gradient must be a scalar");
    tg_status st = cpu_ce_check(a, x, t);
    if (st != TG_OK)
        return st;
    const int64_t n = x->shape[0], c = x->shape[1];
    const double eps = a->p->f[0];
    if (x->dtype == TG_F32)
        CPU_CE_BACKWARD(float);
    else
        CPU_CE_BACKWARD(double);
    return TG_OK;
}

/* ---- dropout ---- */

#define CPU_DROPOUT(TYPE)                                                             \
    do {                                                                              \
        const TYPE *xd = x->data;                                                     \
        TYPE *od = a->out.data;                                                       \
        const TYPE scale = (TYPE)a->p->f[1];                                          \
        TG__CPU_FOR(                                                                  \
            tg__cpu_par_if(n > TG__CPU_PAR_MIN), "omp parallel for schedule(static)", \
            for (int64_t b = 0; b < nblk; b++) {                                      \
                uint32_t w[4];                                                        \
                tg_philox4x32(key, counter + (uint64_t)b, w);                         \
                for (int j = 0; j < 4 && 4 * b + j < n; j++) {                        \
                    const int64_t i = 4 * b + j;                                      \
                    od[i] = tg_u32_to_unit(w[j]) >= p ? xd[i] * scale : (TYPE)0;      \
                }                                                                     \
            });                                                                       \
    } while (0)

tg_status tg__cpu_dropout(void *state, const tg_kargs *a) {
    (void)state;
    tg_status st = tg__cpu_check_float(a, 1);
    if (st != TG_OK)
        return st;
    const tg_kview *x = &a->in[0];
    int64_t n = tg__kview_numel(x), s = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        if (x->shape[d] != 1 && x->strides[d] != s)
            return tg__cpu_fail(a, TG_ERR_INVALID, "cpu dropout: the input must be contiguous");
        s *= x->shape[d];
    }
    const uint64_t key = (uint64_t)a->p->ints[0], counter = (uint64_t)a->p->ints[1];
    const double p = a->p->f[0];
    const int64_t nblk = (n + 3) / 4;
    if (x->dtype == TG_F32)
        CPU_DROPOUT(float);
    else
        CPU_DROPOUT(double);
    return TG_OK;
}
