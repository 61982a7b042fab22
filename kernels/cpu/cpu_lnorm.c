/*
 * kernels/cpu/cpu_lnorm.c: layer norm, forward and backward.
 *
 * Operands are contiguous (the runtime makes them so) and x is seen as
 * (R, D) with D = numel(weight): each row is normalised on its own. Rows
 * are independent and spread over threads; within a row every sum runs in
 * one fixed order and accumulates in double, two passes (the mean, then the
 * squared deviations from it), so the statistics depend on neither the
 * thread count nor the schedule.
 *
 * The backward writes dx row by row the same way. The weight and bias
 * gradients sum over rows: a second pass splits the D columns into blocks,
 * each walking every row in order with double accumulators, so those sums
 * too are the same at any thread count, and no per-thread scratch is
 * needed.
 */
#include <math.h>

#include "cpu.h"

/* Columns per block of the weight-gradient pass: 64 f32 are four cache lines. */
#define CPU_LN_BLOCK 64
/* Columns whose two sums (in double) one pass over the rows keeps in registers. */
#define CPU_LN_RUN 16
/* The rows' pass of cpu_lnb_cols for the W columns from j0 (W a constant for
 * full runs, so that the sums stay in registers). */
#define CPU_LNB_RUN(T, W)                                              \
    for (int64_t r = 0; r < rows; r++) {                               \
        const T *pg = g + r * d + j0, *px = x + r * d + j0;            \
        const double mean = (double)st[r], inv = (double)st[rows + r]; \
        TG__CPU_SIMD("omp simd")                                       \
        for (int64_t j = 0; j < (W); j++) {                            \
            const double gv = (double)pg[j];                           \
            sw[j] += gv * (((double)px[j] - mean) * inv);              \
            sb[j] += gv;                                               \
        }                                                              \
    }
/* Below this many elements the kernels stay on the calling thread. */
#define CPU_LN_PAR_MIN TG__CPU_PAR_MIN

/* y = (x - mean) * invstd * w + b per row; stats rows mean, invstd. */
#define CPU_LN_FORWARD(T)                                                                        \
    TG__CPU_CLONES static void cpu_ln_fwd_row_##T(int64_t d, double eps, const T *x, const T *w, \
                                                  const T *b, T *mean_out, T *inv_out, T *y) {   \
        double s = 0;                                                                            \
        TG__CPU_SIMD("omp simd reduction(+ : s)")                                                \
        for (int64_t i = 0; i < d; i++)                                                          \
            s += (double)x[i];                                                                   \
        const double mean = s / (double)d;                                                       \
        double v = 0;                                                                            \
        TG__CPU_SIMD("omp simd reduction(+ : v)")                                                \
        for (int64_t i = 0; i < d; i++) {                                                        \
            const double c = (double)x[i] - mean;                                                \
            v += c * c;                                                                          \
        }                                                                                        \
        const double inv = 1.0 / sqrt(v / (double)d + eps);                                      \
        *mean_out = (T)mean;                                                                     \
        *inv_out = (T)inv;                                                                       \
        const T mu = (T)mean, is = (T)inv;                                                       \
        TG__CPU_SIMD("omp simd")                                                                 \
        for (int64_t i = 0; i < d; i++)                                                          \
            y[i] = (x[i] - mu) * is * w[i] + b[i];                                               \
    }                                                                                            \
    static void cpu_ln_fwd_##T(int64_t rows, int64_t d, double eps, const T *x, const T *w,      \
                               const T *b, T *st, T *y) {                                        \
        TG__CPU_FOR(tg__cpu_par_if(rows > 1 && rows * d >= CPU_LN_PAR_MIN),                      \
                    "omp parallel for schedule(static)",                                         \
                    for (int64_t r = 0; r < rows; r++) cpu_ln_fwd_row_##T(                       \
                        d, eps, x + r * d, w, b, st + r, st + rows + r, y + r * d););            \
    }
CPU_LN_FORWARD(float)
CPU_LN_FORWARD(double)

/*
 * dx per row: with xhat = (x - mean) * invstd and gw = g * w,
 *   dx = (gw - mean(gw) - xhat * mean(gw * xhat)) * invstd.
 */
#define CPU_LN_BACKWARD(T)                                                                         \
    TG__CPU_CLONES static void cpu_lnb_row_##T(int64_t d, const T *g, const T *x, const T *w,      \
                                               T mean, T inv, T *dx) {                             \
        double s1 = 0, s2 = 0;                                                                     \
        TG__CPU_SIMD("omp simd reduction(+ : s1, s2)")                                             \
        for (int64_t i = 0; i < d; i++) {                                                          \
            const double gw = (double)g[i] * (double)w[i];                                         \
            s1 += gw;                                                                              \
            s2 += gw * ((double)x[i] - (double)mean) * (double)inv;                                \
        }                                                                                          \
        const T a = (T)(s1 / (double)d), c = (T)(s2 / (double)d);                                  \
        TG__CPU_SIMD("omp simd")                                                                   \
        for (int64_t i = 0; i < d; i++)                                                            \
            dx[i] = (g[i] * w[i] - a - (x[i] - mean) * inv * c) * inv;                             \
    }                                                                                              \
    /* d weight and d bias for columns [c0, c0 + nc), every row in order, in                       \
     * runs of CPU_LN_RUN columns whose sums stay in registers (the order of                       \
     * each column's sum is the same whatever the runs).                                           \
     */                                                                                            \
    TG__CPU_CLONES static void cpu_lnb_cols_##T(int64_t rows, int64_t d, int64_t c0, int64_t nc,   \
                                                const T *g, const T *x, const T *st, T *gp) {      \
        for (int64_t j0 = c0; j0 < c0 + nc; j0 += CPU_LN_RUN) {                                    \
            const int64_t w = c0 + nc - j0 < CPU_LN_RUN ? c0 + nc - j0 : CPU_LN_RUN;               \
            double sw[CPU_LN_RUN] = {0}, sb[CPU_LN_RUN] = {0};                                     \
            if (w == CPU_LN_RUN) {                                                                 \
                CPU_LNB_RUN(T, CPU_LN_RUN)                                                         \
            } else {                                                                               \
                CPU_LNB_RUN(T, w)                                                                  \
            }                                                                                      \
            for (int64_t j = 0; j < w; j++) {                                                      \
                gp[j0 + j] = (T)sw[j];                                                             \
                gp[d + j0 + j] = (T)sb[j];                                                         \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    static void cpu_lnb_##T(int64_t rows, int64_t d, const T *g, const T *x, const T *w,           \
                            const T *st, T *gp, T *dx) {                                           \
        const bool big = rows * d >= CPU_LN_PAR_MIN;                                               \
        TG__CPU_FOR(tg__cpu_par_if(big &&rows > 1), "omp parallel for schedule(static)",           \
                    for (int64_t r = 0; r < rows; r++) cpu_lnb_row_##T(                            \
                        d, g + r * d, x + r * d, w, st[r], st[rows + r], dx + r * d););            \
        const int64_t nb = (d + CPU_LN_BLOCK - 1) / CPU_LN_BLOCK;                                  \
        TG__CPU_FOR(                                                                               \
            tg__cpu_par_if(big &&nb > 1), "omp parallel for schedule(static)",                     \
            for (int64_t k = 0; k < nb; k++) {                                                     \
                const int64_t c0 = k * CPU_LN_BLOCK;                                               \
                cpu_lnb_cols_##T(rows, d, c0, c0 + CPU_LN_BLOCK > d ? d - c0 : CPU_LN_BLOCK, g, x, \
                                 st, gp);                                                          \
            });                                                                                    \
    }
CPU_LN_BACKWARD(float)
CPU_LN_BACKWARD(double)

/* x (and out) contiguous and alike, weight (and bias) contiguous with D
 * elements dividing numel(x), stats (2, R): fills *rows and *d. */
static tg_status cpu_ln_geom(const tg_kargs *a, const tg_kview *x, const tg_kview *w,
                             const tg_kview *st, int64_t *rows, int64_t *d) {
    const int64_t n = tg__kview_numel(x);
    *d = tg__kview_numel(w);
    *rows = *d > 0 ? n / *d : 0;
    if (!tg__kview_contig(x) || !tg__kview_contig(&a->out) || !tg__kview_contig(w) || n == 0 ||
        *d == 0 || n % *d || tg__kview_numel(&a->out) != n || st->ndim != 2 || st->shape[0] != 2 ||
        st->shape[1] != *rows || !tg__kview_contig(st))
        return tg__cpu_fail(a, TG_ERR_SHAPE,
                            "cpu %s: operands must be contiguous, the input (R, D) with D the "
                            "weight's %lld elements and stats (2, R)",
                            tg_op_name(a->op), (long long)*d);
    return TG_OK;
}

/* in: x, weight, bias, stats (written); out: y. */
tg_status tg__cpu_layer_norm(void *state, const tg_kargs *a) {
    (void)state;
    int64_t rows = 0, d = 0;
    tg_status s = tg__cpu_check_float(a, 4);
    if (!s)
        s = cpu_ln_geom(a, &a->in[0], &a->in[1], &a->in[3], &rows, &d);
    if (s)
        return s;
    if (!tg__kview_contig(&a->in[2]) || tg__kview_numel(&a->in[2]) != d)
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu layer_norm: bias must have %lld elements",
                            (long long)d);
    const double eps = a->p->f[0];
    if (a->out.dtype == TG_F32)
        cpu_ln_fwd_float(rows, d, eps, a->in[0].data, a->in[1].data, a->in[2].data, a->in[3].data,
                         a->out.data);
    else
        cpu_ln_fwd_double(rows, d, eps, a->in[0].data, a->in[1].data, a->in[2].data, a->in[3].data,
                          a->out.data);
    return TG_OK;
}

/* in: g, x, weight, stats, gparams (written); out: dx. */
tg_status tg__cpu_layer_norm_backward(void *state, const tg_kargs *a) {
    (void)state;
    int64_t rows = 0, d = 0;
    tg_status s = tg__cpu_check_float(a, 5);
    if (!s)
        s = cpu_ln_geom(a, &a->in[1], &a->in[2], &a->in[3], &rows, &d);
    if (s)
        return s;
    const tg_kview *gp = &a->in[4];
    if (!tg__kview_contig(&a->in[0]) || tg__kview_numel(&a->in[0]) != rows * d || gp->ndim != 2 ||
        gp->shape[0] != 2 || gp->shape[1] != d || !tg__kview_contig(gp))
        return tg__cpu_fail(a, TG_ERR_SHAPE,
                            "cpu layer_norm_backward: g must be contiguous and like x, gparams "
                            "(2, %lld)",
                            (long long)d);
    if (a->out.dtype == TG_F32)
        cpu_lnb_float(rows, d, a->in[0].data, a->in[1].data, a->in[2].data, a->in[3].data,
                      a->in[4].data, a->out.data);
    else
        cpu_lnb_double(rows, d, a->in[0].data, a->in[1].data, a->in[2].data, a->in[3].data,
                       a->in[4].data, a->out.data);
    return TG_OK;
}
