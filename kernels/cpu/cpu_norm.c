/*
 * kernels/cpu/cpu_norm.c: batch norm in training mode, forward and backward.
 *
 * Operands are contiguous (the runtime makes them so) and seen as (N, C, S)
 * with S = H * W, or 1 for (N, C) input. Channels are independent and spread
 * over threads in blocks; within a channel every sum runs in one fixed
 * order (sample by sample, then along the row) and accumulates in double,
 * so the results depend on neither the thread count nor the schedule.
 *
 * For S = 1 a channel's values lie C apart, so a block holds several
 * neighbouring channels and walks the samples once for all of them, which
 * reads whole cache lines instead of one value per line. For S > 1 a block
 * is one channel and each (sample, channel) row is a contiguous run.
 *
 * The variance is the biased one (divided by the count), accumulated as
 * sums of (x - x0) and (x - x0)^2 with x0 the channel's first value: one pass
 * over x, and the shift removes the cancellation that plain sums of x and x^2
 * suffer when the mean is large next to the spread.
 */
#include <math.h>

#include "cpu.h"

/* Channels per block when S = 1: 64 f32 values are four cache lines. */
#define CPU_BN_BLOCK 64
/* Below this many elements the kernels stay on the calling thread. */
#define CPU_BN_PAR_MIN TG__CPU_PAR_MIN

typedef struct cpu_bn_geom {
    int64_t n, c, s, block, nblocks;
} cpu_bn_geom;

static bool cpu_bn_is_vec(const tg_kview *v, int64_t c) {
    return v->ndim == 1 && v->shape[0] == c && (c == 1 || v->strides[0] == 1);
}

static bool cpu_bn_is_rows(const tg_kview *v, int64_t rows, int64_t c) {
    return v->ndim == 2 && v->shape[0] == rows && v->shape[1] == c && tg__kview_contig(v);
}

/* Checks the operands: x (and g, dx, y) (N, C[, H, W]) contiguous, weight and
 * bias (C), stats (3, C), gparams (2, C). */
static tg_status cpu_bn_check(const tg_kargs *a, const tg_kview *x, cpu_bn_geom *g) {
    if (x->ndim != 2 && x->ndim != 4)
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu %s: input must have 2 or 4 dims, got %d",
                            tg_op_name(a->op), x->ndim);
    g->n = x->shape[0];
    g->c = x->shape[1];
    g->s = x->ndim == 4 ? x->shape[2] * x->shape[3] : 1;
    g->block = g->s == 1 ? CPU_BN_BLOCK : 1;
    g->nblocks = (g->c + g->block - 1) / g->block;
    if (!tg__kview_contig(x) || !tg__kview_contig(&a->out) || !tg__kview_numel(x) ||
        tg__kview_numel(&a->out) != tg__kview_numel(x))
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu %s: operands must be contiguous and alike",
                            tg_op_name(a->op));
    return TG_OK;
}

/*
 * The forward: per channel, mean and biased variance, invstd = 1 / sqrt(var
 * + eps), then y = x * alpha + beta with alpha = invstd * w and beta = b -
 * mean * alpha (the form PyTorch's CPU kernel uses).
 */
#define CPU_BN_FORWARD(T)                                                                         \
    TG__CPU_CLONES static void cpu_bn_fwd_block_##T(const cpu_bn_geom *g, int64_t b, double eps,  \
                                                    const T *x, const T *w, const T *bias, T *st, \
                                                    T *y) {                                       \
        const int64_t c0 = b * g->block;                                                          \
        const int64_t nc = c0 + g->block > g->c ? g->c - c0 : g->block;                           \
        const int64_t cs = g->c * g->s;                                                           \
        double sh[CPU_BN_BLOCK], s1[CPU_BN_BLOCK] = {0}, s2[CPU_BN_BLOCK] = {0};                  \
        for (int64_t j = 0; j < nc; j++)                                                          \
            sh[j] = (double)x[(c0 + j) * g->s];                                                   \
        for (int64_t n = 0; n < g->n; n++)                                                        \
            for (int64_t j = 0; j < nc; j++) {                                                    \
                const T *p = x + n * cs + (c0 + j) * g->s;                                        \
                const double x0 = sh[j];                                                          \
                double a1 = 0, a2 = 0;                                                            \
                TG__CPU_SIMD("omp simd reduction(+ : a1, a2)")                                    \
                for (int64_t i = 0; i < g->s; i++) {                                              \
                    const double d = (double)p[i] - x0;                                           \
                    a1 += d;                                                                      \
                    a2 += d * d;                                                                  \
                }                                                                                 \
                s1[j] += a1;                                                                      \
                s2[j] += a2;                                                                      \
            }                                                                                     \
        const double m = (double)(g->n * g->s);                                                   \
        T alpha[CPU_BN_BLOCK], beta[CPU_BN_BLOCK];                                                \
        for (int64_t j = 0; j < nc; j++) {                                                        \
            const double d1 = s1[j] / m;                                                          \
            double var = s2[j] / m - d1 * d1;                                                     \
            var = var > 0 ? var : 0;                                                              \
            const double mean = sh[j] + d1, inv = 1.0 / sqrt(var + eps);                          \
            const int64_t c = c0 + j;                                                             \
            st[c] = (T)mean;                                                                      \
            st[g->c + c] = (T)inv;                                                                \
            st[2 * g->c + c] = (T)var;                                                            \
            const double al = inv * (double)w[c];                                                 \
            alpha[j] = (T)al;                                                                     \
            beta[j] = (T)((double)bias[c] - mean * al);                                           \
        }                                                                                         \
        for (int64_t n = 0; n < g->n; n++)                                                        \
            for (int64_t j = 0; j < nc; j++) {                                                    \
                const int64_t o = n * cs + (c0 + j) * g->s;                                       \
                const T *p = x + o;                                                               \
                T *q = y + o;                                                                     \
                const T al = alpha[j], be = beta[j];                                              \
                TG__CPU_SIMD("omp simd")                                                          \
                for (int64_t i = 0; i < g->s; i++)                                                \
                    q[i] = p[i] * al + be;                                                        \
            }                                                                                     \
    }                                                                                             \
    static void cpu_bn_fwd_##T(const cpu_bn_geom *g, double eps, const T *x, const T *w,          \
                               const T *bias, T *st, T *y) {                                      \
        TG__CPU_FOR(tg__cpu_par_if(g->n * g->c * g->s >= CPU_BN_PAR_MIN),                         \
                    "omp parallel for schedule(static)",                                          \
                    for (int64_t b = 0; b < g->nblocks; b++)                                      \
                        cpu_bn_fwd_block_##T(g, b, eps, x, w, bias, st, y););                     \
    }
CPU_BN_FORWARD(float)
CPU_BN_FORWARD(double)

tg_status tg__cpu_batch_norm(void *state, const tg_kargs *a) {
    (void)state;
    cpu_bn_geom g;
    tg_status s = tg__cpu_check_float(a, 4);
    if (!s)
        s = cpu_bn_check(a, &a->in[0], &g);
    if (s)
        return s;
    if (!cpu_bn_is_vec(&a->in[1], g.c) || !cpu_bn_is_vec(&a->in[2], g.c) ||
        !cpu_bn_is_rows(&a->in[3], 3, g.c))
        return tg__cpu_fail(a, TG_ERR_SHAPE,
                            "cpu batch_norm: weight and bias must be (%lld) and stats (3, %lld), "
                            "contiguous",
                            (long long)g.c, (long long)g.c);
    const double eps = a->p->f[0];
    if (a->out.dtype == TG_F32)
        cpu_bn_fwd_float(&g, eps, a->in[0].data, a->in[1].data, a->in[2].data, a->in[3].data,
                         a->out.data);
    else
        cpu_bn_fwd_double(&g, eps, a->in[0].data, a->in[1].data, a->in[2].data, a->in[3].data,
                          a->out.data);
    return TG_OK;
}

/*
 * The backward, the classic formula: with xhat = (x - mean) * invstd and M
 * values per channel, sum_g = sum g and sum_gx = sum g * (x - mean),
 *   d bias = sum_g, d weight = sum_gx * invstd,
 *   dx = (g - sum_g / M - (x - mean) * sum_gx * invstd^2 / M) * invstd * w.
 */
#define CPU_BN_BACKWARD(T)                                                                     \
    TG__CPU_CLONES static void cpu_bnb_block_##T(const cpu_bn_geom *g, int64_t b, const T *gr, \
                                                 const T *x, const T *w, const T *st, T *gp,   \
                                                 T *dx) {                                      \
        const int64_t c0 = b * g->block;                                                       \
        const int64_t nc = c0 + g->block > g->c ? g->c - c0 : g->block;                        \
        const int64_t cs = g->c * g->s;                                                        \
        double sg[CPU_BN_BLOCK] = {0}, sgx[CPU_BN_BLOCK] = {0};                                \
        for (int64_t n = 0; n < g->n; n++)                                                     \
            for (int64_t j = 0; j < nc; j++) {                                                 \
                const int64_t o = n * cs + (c0 + j) * g->s;                                    \
                const T *pg = gr + o, *px = x + o;                                             \
                const double mean = (double)st[c0 + j];                                        \
                double a1 = 0, a2 = 0;                                                         \
                TG__CPU_SIMD("omp simd reduction(+ : a1, a2)")                                 \
                for (int64_t i = 0; i < g->s; i++) {                                           \
                    const double gv = (double)pg[i];                                           \
                    a1 += gv;                                                                  \
                    a2 += gv * ((double)px[i] - mean);                                         \
                }                                                                              \
                sg[j] += a1;                                                                   \
                sgx[j] += a2;                                                                  \
            }                                                                                  \
        const double m = (double)(g->n * g->s);                                                \
        T mg[CPU_BN_BLOCK], proj[CPU_BN_BLOCK], gs[CPU_BN_BLOCK], mu[CPU_BN_BLOCK];            \
        for (int64_t j = 0; j < nc; j++) {                                                     \
            const int64_t c = c0 + j;                                                          \
            const double inv = (double)st[g->c + c];                                           \
            gp[c] = (T)(sgx[j] * inv);                                                         \
            gp[g->c + c] = (T)sg[j];                                                           \
            mg[j] = (T)(sg[j] / m);                                                            \
            proj[j] = (T)(sgx[j] / m * inv * inv);                                             \
            gs[j] = (T)(inv * (double)w[c]);                                                   \
            mu[j] = st[c];                                                                     \
        }                                                                                      \
        for (int64_t n = 0; n < g->n; n++)                                                     \
            for (int64_t j = 0; j < nc; j++) {                                                 \
                const int64_t o = n * cs + (c0 + j) * g->s;                                    \
                const T *pg = gr + o, *px = x + o;                                             \
                T *q = dx + o;                                                                 \
                const T a_mg = mg[j], a_pr = proj[j], a_gs = gs[j], a_mu = mu[j];              \
                TG__CPU_SIMD("omp simd")                                                       \
                for (int64_t i = 0; i < g->s; i++)                                             \
                    q[i] = (pg[i] - a_mg - (px[i] - a_mu) * a_pr) * a_gs;                      \
            }                                                                                  \
    }                                                                                          \
    static void cpu_bnb_##T(const cpu_bn_geom *g, const T *gr, const T *x, const T *w,         \
                            const T *st, T *gp, T *dx) {                                       \
        TG__CPU_FOR(tg__cpu_par_if(g->n * g->c * g->s >= CPU_BN_PAR_MIN),                      \
                    "omp parallel for schedule(static)",                                       \
                    for (int64_t b = 0; b < g->nblocks; b++)                                   \
                        cpu_bnb_block_##T(g, b, gr, x, w, st, gp, dx););                       \
    }
CPU_BN_BACKWARD(float)
CPU_BN_BACKWARD(double)

tg_status tg__cpu_batch_norm_backward(void *state, const tg_kargs *a) {
    (void)state;
    cpu_bn_geom g;
    tg_status s = tg__cpu_check_float(a, 5);
    if (!s)
        s = cpu_bn_check(a, &a->in[1], &g);
    if (s)
        return s;
    if (!tg__kview_contig(&a->in[0]) || tg__kview_numel(&a->in[0]) != tg__kview_numel(&a->in[1]) ||
        !cpu_bn_is_vec(&a->in[2], g.c) || !cpu_bn_is_rows(&a->in[3], 3, g.c) ||
        !cpu_bn_is_rows(&a->in[4], 2, g.c))
        return tg__cpu_fail(a, TG_ERR_SHAPE,
                            "cpu batch_norm_backward: g must be contiguous and like x, weight "
                            "(%lld), stats (3, %lld) and gparams (2, %lld)",
                            (long long)g.c, (long long)g.c, (long long)g.c);
    if (a->out.dtype == TG_F32)
        cpu_bnb_float(&g, a->in[0].data, a->in[1].data, a->in[2].data, a->in[3].data, a->in[4].data,
                      a->out.data);
    else
        cpu_bnb_double(&g, a->in[0].data, a->in[1].data, a->in[2].data, a->in[3].data,
                       a->in[4].data, a->out.data);
    return TG_OK;
}
