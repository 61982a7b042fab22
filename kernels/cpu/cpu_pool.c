/*
 * kernels/cpu/cpu_pool.c: max and average pooling over NCHW windows.
 *
 * Parameters (tg_op_params.ints): [0..1] kernel, [2..3] stride, [4..5] pad.
 * Planes (n, c) are independent and spread over threads. Padding is -inf for
 * max (never chosen, since every window holds an element: pad <= kernel / 2)
 * and zero for the average, whose divisor is always kh * kw
 * (count_include_pad, PyTorch's default).
 *
 * max_pool2d and max_pool2d_indices scan a window row by row and keep the
 * first maximum (a later element wins only when strictly greater, or NaN), as
 * PyTorch's CPU kernel does; the gradient goes to that element only.
 * max_pool2d_backward finds the same element and writes g there in the same
 * pass: the 2x2 windows of the cnns tile the plane, so each of their four dx
 * elements is written once (g or zero) with no zero fill; the general case
 * zeroes the plane and adds each window's g, in increasing (oh, ow) order.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu.h"

typedef struct cpu_pool_geom {
    int64_t n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
} cpu_pool_geom;

static void cpu_pool_geom_make(const tg_kargs *a, const tg_kview *big, const tg_kview *small,
                               cpu_pool_geom *g) {
    const int64_t *p = a->p->ints;
    g->kh = p[0], g->kw = p[1], g->sh = p[2], g->sw = p[3], g->ph = p[4], g->pw = p[5];
    g->n = big->shape[0], g->c = big->shape[1], g->h = big->shape[2], g->w = big->shape[3];
    g->oh = small->shape[2], g->ow = small->shape[3];
}

static tg_status cpu_pool_check(const tg_kargs *a, const tg_kview *big, const tg_kview *small) {
    const int64_t *p = a->p->ints;
    if (big->ndim != 4 || small->ndim != 4 || p[0] < 1 || p[1] < 1 || p[2] < 1 || p[3] < 1 ||
        small->shape[2] != (big->shape[2] + 2 * p[4] - p[0]) / p[2] + 1 ||
        small->shape[3] != (big->shape[3] + 2 * p[5] - p[1]) / p[3] + 1)
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu %s: inconsistent pooling geometry",
                            tg_op_name(a->op));
    return TG_OK;
}

/* The cnns' 2x2 windows at stride 2 without padding over rows of unit
 * stride: every window lies inside the plane, so the general loop's bounds
 * and index arithmetic (a tenth of a cnn step, run twice: values forward,
 * indices backward) reduce to four loads. */
static bool cpu_pool_is_2x2(const cpu_pool_geom *g, const int64_t *xs) {
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0 &&
           xs[3] == 1;
}

/* The winner of one 2x2 window (v0, v1 on the first row, v2, v3 on the
 * second), with the general loop's first-maximum and NaN rule: scan (0,0),
 * (0,1), (1,0), (1,1); a later element wins only when strictly greater, and
 * a NaN wins and ends the scan. Returns its position 0..3; *mx gets the
 * maximum. */
#define CPU_MAX4(TYPE)                                                                \
    static inline int cpu_max4_##TYPE(TYPE v0, TYPE v1, TYPE v2, TYPE v3, TYPE *mx) { \
        if (__builtin_expect(isnan(v0) | isnan(v1) | isnan(v2) | isnan(v3), 0)) {     \
            /* The first NaN in scan order wins. */                                   \
            const int j = isnan(v0) ? 0 : isnan(v1) ? 1 : isnan(v2) ? 2 : 3;          \
            *mx = j == 0 ? v0 : j == 1 ? v1 : j == 2 ? v2 : v3;                       \
            return j;                                                                 \
        }                                                                             \
        /* Select, not branch: which element wins is data, and a mispredicted         \
         * branch per window cost more than the loads. */                             \
        const int a = v1 > v0, b = v3 > v2;                                           \
        const TYPE m01 = a ? v1 : v0, m23 = b ? v3 : v2;                              \
        const int c = m23 > m01;                                                      \
        *mx = c ? m23 : m01;                                                          \
        return c ? 2 + b : a;                                                         \
    }
CPU_MAX4(float)
CPU_MAX4(double)

/* Windows per vector of the f32 rows (AVX2). */
#define CPU_POOL_VEC 8

/* The gradient of one 2x2 window (rows r0, r1 of x; dx rows d0, d1): g's
 * bits at the winner, zero at the other three. The stores mask the bits
 * rather than select on j: compilers turned `j == 0 ? v : 0` into branches on
 * the data, which mispredicted about once a window. */
#define CPU_MAXPOOL_BW_WINDOW(TYPE, UTYPE)                                                 \
    static inline void cpu_put_if_##TYPE(TYPE *dst, UTYPE bits, int keep) {                \
        const UTYPE v = bits & ((UTYPE)0 - (UTYPE)keep);                                   \
        memcpy(dst, &v, sizeof v);                                                         \
    }                                                                                      \
    static inline void cpu_bw_window_##TYPE(const TYPE *r0, const TYPE *r1, const TYPE *g, \
                                            TYPE *d0, TYPE *d1) {                          \
        TYPE mx;                                                                           \
        const int j = cpu_max4_##TYPE(r0[0], r0[1], r1[0], r1[1], &mx);                    \
        UTYPE v;                                                                           \
        memcpy(&v, g, sizeof v);                                                           \
        cpu_put_if_##TYPE(d0, v, j == 0);                                                  \
        cpu_put_if_##TYPE(d0 + 1, v, j == 1);                                              \
        cpu_put_if_##TYPE(d1, v, j == 2);                                                  \
        cpu_put_if_##TYPE(d1 + 1, v, j == 3);                                              \
    }
CPU_MAXPOOL_BW_WINDOW(float, uint32_t)
CPU_MAXPOOL_BW_WINDOW(double, uint64_t)

/*
 * One output row of the 2x2 pooling of f32 planes with unit-stride rows,
 * written for the vectoriser: the scan is a chain of selects on whole
 * vectors (no branch on the data, no early exit; GCC keeps a loop scalar when
 * NaN tests are or-ed together, but vectorises selects), and the stride-2
 * loads and stores become shuffles. The vector loop covers whole vectors of
 * CPU_POOL_VEC windows; the rest (the cnns' rows are 14 and 7 windows long)
 * goes through the scalar window, without the branches on the data that the
 * vectoriser's own remainder loop had. Same rule as cpu_max4: the first strictly
 * greatest element in scan order wins, and a window holding a NaN gives its
 * first NaN (value and gradient).
 */
TG__CPU_CLONES static void cpu_max2x2_row_f32(const float *restrict r0, const float *restrict r1,
                                              float *restrict out, int64_t ow) {
    const int64_t nv = ow & ~(int64_t)(CPU_POOL_VEC - 1);
    TG__CPU_SIMD("omp simd")
    for (int64_t i = 0; i < nv; i++) {
        const float v0 = r0[2 * i], v1 = r0[2 * i + 1], v2 = r1[2 * i], v3 = r1[2 * i + 1];
        const float m01 = v1 > v0 ? v1 : v0, m23 = v3 > v2 ? v3 : v2;
        float m = m23 > m01 ? m23 : m01;
        m = v3 != v3 ? v3 : m;
        m = v2 != v2 ? v2 : m;
        m = v1 != v1 ? v1 : m;
        out[i] = v0 != v0 ? v0 : m;
    }
    for (int64_t i = nv; i < ow; i++)
        (void)cpu_max4_float(r0[2 * i], r0[2 * i + 1], r1[2 * i], r1[2 * i + 1], &out[i]);
}

/* The gradient of one such row: g (contiguous) goes to each window's
 * winner, zero to the other three. The winner's position is carried as a
 * float, because selects on int positions made GCC fall back to branches. */
TG__CPU_CLONES static void cpu_max2x2_bw_row_f32(const float *restrict r0, const float *restrict r1,
                                                 const float *restrict gr, float *restrict d0,
                                                 float *restrict d1, int64_t ow) {
    const int64_t nv = ow & ~(int64_t)(CPU_POOL_VEC - 1);
    TG__CPU_SIMD("omp simd")
    for (int64_t i = 0; i < nv; i++) {
        const float v0 = r0[2 * i], v1 = r0[2 * i + 1], v2 = r1[2 * i], v3 = r1[2 * i + 1];
        const float m01 = v1 > v0 ? v1 : v0, m23 = v3 > v2 ? v3 : v2;
        const float ja = v1 > v0 ? 1.0f : 0.0f, jb = v3 > v2 ? 3.0f : 2.0f;
        float j = m23 > m01 ? jb : ja;
        j = v3 != v3 ? 3.0f : j;
        j = v2 != v2 ? 2.0f : j;
        j = v1 != v1 ? 1.0f : j;
        j = v0 != v0 ? 0.0f : j;
        const float g = gr[i];
        d0[2 * i] = j == 0.0f ? g : 0.0f;
        d0[2 * i + 1] = j == 1.0f ? g : 0.0f;
        d1[2 * i] = j == 2.0f ? g : 0.0f;
        d1[2 * i + 1] = j == 3.0f ? g : 0.0f;
    }
    for (int64_t i = nv; i < ow; i++)
        cpu_bw_window_float(r0 + 2 * i, r1 + 2 * i, gr + i, d0 + 2 * i, d1 + 2 * i);
}

/* One plane of 2x2 max pooling: the values (vo) or the flat indices (io). */
#define CPU_MAXPOOL_2X2(TYPE, VROW)                                                                \
    static void cpu_maxpool_2x2_##TYPE(const cpu_pool_geom *g, const TYPE *xp, int64_t rs,         \
                                       TYPE *vo, int64_t *io) {                                    \
        for (int64_t oh = 0; oh < g->oh; oh++) {                                                   \
            const TYPE *r0 = xp + 2 * oh * rs, *r1 = r0 + rs;                                      \
            if (VROW && vo) {                                                                      \
                cpu_max2x2_row_f32((const float *)r0, (const float *)r1, (float *)vo + oh * g->ow, \
                                   g->ow);                                                         \
                continue;                                                                          \
            }                                                                                      \
            for (int64_t ow = 0; ow < g->ow; ow++) {                                               \
                TYPE mx;                                                                           \
                const int j =                                                                      \
                    cpu_max4_##TYPE(r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1], &mx);  \
                if (vo)                                                                            \
                    vo[oh * g->ow + ow] = mx;                                                      \
                else                                                                               \
                    io[oh * g->ow + ow] = (2 * oh + (j >> 1)) * g->w + 2 * ow + (j & 1);           \
            }                                                                                      \
        }                                                                                          \
    }
CPU_MAXPOOL_2X2(float, 1)
CPU_MAXPOOL_2X2(double, 0)

/* One plane of the 2x2 gradient: each window's four dx elements get g at
 * the winner and zero elsewhere (the vectorised f32 row, or window by
 * window). A last row or column that no window covers (odd H or W) is
 * zeroed. gp, gs: the plane of g and its strides; dp: the contiguous plane
 * of dx. */
#define CPU_MAXPOOL_BW_2X2(TYPE, VROW)                                                         \
    static void cpu_maxpool_bw_2x2_##TYPE(const cpu_pool_geom *g, const TYPE *xp, int64_t rs,  \
                                          const TYPE *gp, const int64_t *gs, TYPE *dp) {       \
        const int64_t gcs = gs[3];                                                             \
        for (int64_t oh = 0; oh < g->oh; oh++) {                                               \
            const TYPE *r0 = xp + 2 * oh * rs, *r1 = r0 + rs;                                  \
            const TYPE *gr = gp + oh * gs[2];                                                  \
            TYPE *d0 = dp + 2 * oh * g->w, *d1 = d0 + g->w;                                    \
            if (VROW && gcs == 1)                                                              \
                cpu_max2x2_bw_row_f32((const float *)r0, (const float *)r1, (const float *)gr, \
                                      (float *)d0, (float *)d1, g->ow);                        \
            else                                                                               \
                for (int64_t ow = 0; ow < g->ow; ow++)                                         \
                    cpu_bw_window_##TYPE(r0 + 2 * ow, r1 + 2 * ow, gr + ow * gcs, d0 + 2 * ow, \
                                         d1 + 2 * ow);                                         \
            for (int64_t iw = 2 * g->ow; iw < g->w; iw++)                                      \
                d0[iw] = d1[iw] = 0;                                                           \
        }                                                                                      \
        for (int64_t i = 2 * g->oh * g->w; i < g->h * g->w; i++)                               \
            dp[i] = 0;                                                                         \
    }
CPU_MAXPOOL_BW_2X2(float, 1)
CPU_MAXPOOL_BW_2X2(double, 0)

/* The first maximum of window (oh, ow) of plane xp: its flat index
 * ih * W + iw; *mx gets its value. Padding never wins (pad <= kernel / 2, so
 * every window holds an element). */
#define CPU_WINDOW_ARG(TYPE)                                                               \
    static inline int64_t cpu_window_arg_##TYPE(const cpu_pool_geom *g, const TYPE *xp,    \
                                                const int64_t *xs, int64_t oh, int64_t ow, \
                                                TYPE *mx) {                                \
        int64_t h0 = oh * g->sh - g->ph, h1 = h0 + g->kh;                                  \
        h0 = h0 < 0 ? 0 : h0;                                                              \
        h1 = h1 > g->h ? g->h : h1;                                                        \
        int64_t w0 = ow * g->sw - g->pw, w1 = w0 + g->kw;                                  \
        w0 = w0 < 0 ? 0 : w0;                                                              \
        w1 = w1 > g->w ? g->w : w1;                                                        \
        TYPE m = -INFINITY;                                                                \
        int64_t arg = h0 * g->w + w0;                                                      \
        for (int64_t ih = h0; ih < h1; ih++)                                               \
            for (int64_t iw = w0; iw < w1; iw++) {                                         \
                const TYPE v = xp[ih * xs[2] + iw * xs[3]];                                \
                if (v > m || isnan(v)) {                                                   \
                    m = v;                                                                 \
                    arg = ih * g->w + iw;                                                  \
                    if (isnan(v))                                                          \
                        goto done;                                                         \
                }                                                                          \
            }                                                                              \
    done:                                                                                  \
        *mx = m;                                                                           \
        return arg;                                                                        \
    }
CPU_WINDOW_ARG(float)
CPU_WINDOW_ARG(double)

/* One plane of max pooling; writes the values (vo) or the flat indices (io). */
#define CPU_MAXPOOL(TYPE)                                                                          \
    static void cpu_maxpool_plane_##TYPE(const cpu_pool_geom *g, const TYPE *x, const int64_t *xs, \
                                         TYPE *vo, int64_t *io, int64_t pl) {                      \
        const int64_t n = pl / g->c, c = pl % g->c;                                                \
        const TYPE *xp = x + n * xs[0] + c * xs[1];                                                \
        const int64_t base = pl * g->oh * g->ow;                                                   \
        if (cpu_pool_is_2x2(g, xs)) {                                                              \
            cpu_maxpool_2x2_##TYPE(g, xp, xs[2], vo ? vo + base : NULL, io ? io + base : NULL);    \
            return;                                                                                \
        }                                                                                          \
        for (int64_t oh = 0; oh < g->oh; oh++)                                                     \
            for (int64_t ow = 0; ow < g->ow; ow++) {                                               \
                TYPE mx;                                                                           \
                const int64_t arg = cpu_window_arg_##TYPE(g, xp, xs, oh, ow, &mx);                 \
                if (vo)                                                                            \
                    vo[base + oh * g->ow + ow] = mx;                                               \
                else                                                                               \
                    io[base + oh * g->ow + ow] = arg;                                              \
            }                                                                                      \
    }                                                                                              \
    static void cpu_maxpool_##TYPE(const cpu_pool_geom *g, const TYPE *x, const int64_t *xs,       \
                                   TYPE *vo, int64_t *io) {                                        \
        TG__CPU_FOR(tg__cpu_par_if(g->n * g->c * g->oh * g->ow > TG__CPU_PAR_MIN / 8),             \
                    "omp parallel for schedule(static)",                                           \
                    for (int64_t pl = 0; pl < g->n * g->c; pl++)                                   \
                        cpu_maxpool_plane_##TYPE(g, x, xs, vo, io, pl););                          \
    }
CPU_MAXPOOL(float)
CPU_MAXPOOL(double)

/* max_pool2d's gradient, one plane per task: dx (contiguous) from g (strides
 * gs) and x (strides xs). The general case zeroes the plane and adds each
 * window's g at its first maximum, windows in increasing (oh, ow) order (the
 * order of the scatter it replaces, so overlapping sums round the same). */
#define CPU_MAXPOOL_BW(TYPE)                                                                      \
    static void cpu_maxpool_bw_plane_##TYPE(const cpu_pool_geom *g, const TYPE *x,                \
                                            const int64_t *xs, const TYPE *gd, const int64_t *gs, \
                                            TYPE *dx, int64_t pl) {                               \
        const int64_t n = pl / g->c, c = pl % g->c;                                               \
        const TYPE *xp = x + n * xs[0] + c * xs[1], *gp = gd + n * gs[0] + c * gs[1];             \
        TYPE *dp = dx + pl * g->h * g->w;                                                         \
        if (cpu_pool_is_2x2(g, xs)) {                                                             \
            cpu_maxpool_bw_2x2_##TYPE(g, xp, xs[2], gp, gs, dp);                                  \
            return;                                                                               \
        }                                                                                         \
        for (int64_t i = 0; i < g->h * g->w; i++)                                                 \
            dp[i] = 0;                                                                            \
        for (int64_t oh = 0; oh < g->oh; oh++)                                                    \
            for (int64_t ow = 0; ow < g->ow; ow++) {                                              \
                TYPE mx;                                                                          \
                dp[cpu_window_arg_##TYPE(g, xp, xs, oh, ow, &mx)] += gp[oh * gs[2] + ow * gs[3]]; \
            }                                                                                     \
    }                                                                                             \
    static void cpu_maxpool_bw_##TYPE(const cpu_pool_geom *g, const TYPE *x, const int64_t *xs,   \
                                      const TYPE *gd, const int64_t *gs, TYPE *dx) {              \
        TG__CPU_FOR(tg__cpu_par_if(g->n * g->c * g->h * g->w > TG__CPU_PAR_MIN / 8),              \
                    "omp parallel for schedule(static)",                                          \
                    for (int64_t pl = 0; pl < g->n * g->c; pl++)                                  \
                        cpu_maxpool_bw_plane_##TYPE(g, x, xs, gd, gs, dx, pl););                  \
    }
CPU_MAXPOOL_BW(float)
CPU_MAXPOOL_BW(double)

tg_status tg__cpu_max_pool2d(void *state, const tg_kargs *a) {
    (void)state;
    tg_status st = tg__cpu_check_float(a, 1);
    if (st == TG_OK)
        st = cpu_pool_check(a, &a->in[0], &a->out);
    if (st != TG_OK)
        return st;
    cpu_pool_geom g;
    cpu_pool_geom_make(a, &a->in[0], &a->out, &g);
    if (a->out.dtype == TG_F32)
        cpu_maxpool_float(&g, a->in[0].data, a->in[0].strides, a->out.data, NULL);
    else
        cpu_maxpool_double(&g, a->in[0].data, a->in[0].strides, a->out.data, NULL);
    return TG_OK;
}

tg_status tg__cpu_max_pool2d_indices(void *state, const tg_kargs *a) {
    (void)state;
    const tg_kview *x = &a->in[0];
    if (a->out.dtype != TG_I64 || (x->dtype != TG_F32 && x->dtype != TG_F64))
        return tg__cpu_fail(a, TG_ERR_DTYPE,
                            "cpu max_pool2d_indices: expected a float input "
                            "and an i64 output");
    tg_status st = cpu_pool_check(a, x, &a->out);
    if (st != TG_OK)
        return st;
    cpu_pool_geom g;
    cpu_pool_geom_make(a, x, &a->out, &g);
    if (x->dtype == TG_F32)
        cpu_maxpool_float(&g, x->data, x->strides, NULL, a->out.data);
    else
        cpu_maxpool_double(&g, x->data, x->strides, NULL, a->out.data);
    return TG_OK;
}

/* in: g (N, C, OH, OW), x (N, C, H, W); out: dx shaped like x. */
tg_status tg__cpu_max_pool2d_backward(void *state, const tg_kargs *a) {
    (void)state;
    const tg_kview *gv = &a->in[0], *x = &a->in[1];
    tg_status st = tg__cpu_check_float(a, 2);
    if (st == TG_OK)
        st = cpu_pool_check(a, x, gv);
    if (st != TG_OK)
        return st;
    for (int d = 0; d < 4; d++)
        if (a->out.shape[d] != x->shape[d] || (d < 2 && gv->shape[d] != x->shape[d]))
            return tg__cpu_fail(a, TG_ERR_SHAPE,
                                "cpu max_pool2d_backward: dx and g must match x in N and C, "
                                "and dx x's shape");
    cpu_pool_geom g;
    cpu_pool_geom_make(a, x, gv, &g);
    if (x->dtype == TG_F32)
        cpu_maxpool_bw_float(&g, x->data, x->strides, gv->data, gv->strides, a->out.data);
    else
        cpu_maxpool_bw_double(&g, x->data, x->strides, gv->data, gv->strides, a->out.data);
    return TG_OK;
}

/* Average pooling forward (fwd) or its adjoint (bwd: dx += g / (kh*kw) over
 * each window; src is g, dst is dx, zeroed here). */
#define CPU_AVGPOOL(TYPE)                                                                         \
    static void cpu_avgpool_fwd_##TYPE(const cpu_pool_geom *g, const TYPE *x, const int64_t *xs,  \
                                       TYPE *out) {                                               \
        const double inv = 1.0 / (double)(g->kh * g->kw);                                         \
        TG__CPU_FOR(                                                                              \
            tg__cpu_par_if(g->n * g->c * g->oh * g->ow > TG__CPU_PAR_MIN / 8),                    \
            "omp parallel for collapse(2) schedule(static)", for (int64_t n = 0; n < g->n; n++) { \
                for (int64_t c = 0; c < g->c; c++) {                                              \
                    const TYPE *xp = x + n * xs[0] + c * xs[1];                                   \
                    TYPE *op = out + (n * g->c + c) * g->oh * g->ow;                              \
                    for (int64_t oh = 0; oh < g->oh; oh++) {                                      \
                        int64_t h0 = oh * g->sh - g->ph, h1 = h0 + g->kh;                         \
                        h0 = h0 < 0 ? 0 : h0;                                                     \
                        h1 = h1 > g->h ? g->h : h1;                                               \
                        for (int64_t ow = 0; ow < g->ow; ow++) {                                  \
                            int64_t w0 = ow * g->sw - g->pw, w1 = w0 + g->kw;                     \
                            w0 = w0 < 0 ? 0 : w0;                                                 \
                            w1 = w1 > g->w ? g->w : w1;                                           \
                            double s = 0;                                                         \
                            for (int64_t ih = h0; ih < h1; ih++)                                  \
                                for (int64_t iw = w0; iw < w1; iw++)                              \
                                    s += xp[ih * xs[2] + iw * xs[3]];                             \
                            op[oh * g->ow + ow] = (TYPE)(s * inv);                                \
                        }                                                                         \
                    }                                                                             \
                }                                                                                 \
            });                                                                                   \
    }                                                                                             \
    static void cpu_avgpool_bwd_##TYPE(const cpu_pool_geom *g, const TYPE *gd, const int64_t *gs, \
                                       TYPE *dx) {                                                \
        const TYPE inv = (TYPE)(1.0 / (double)(g->kh * g->kw));                                   \
        TG__CPU_FOR(                                                                              \
            tg__cpu_par_if(g->n * g->c * g->h * g->w > TG__CPU_PAR_MIN / 8),                      \
            "omp parallel for collapse(2) schedule(static)", for (int64_t n = 0; n < g->n; n++) { \
                for (int64_t c = 0; c < g->c; c++) {                                              \
                    const TYPE *gp = gd + n * gs[0] + c * gs[1];                                  \
                    TYPE *xp = dx + (n * g->c + c) * g->h * g->w;                                 \
                    for (int64_t i = 0; i < g->h * g->w; i++)                                     \
                        xp[i] = 0;                                                                \
                    for (int64_t oh = 0; oh < g->oh; oh++) {                                      \
                        int64_t h0 = oh * g->sh - g->ph, h1 = h0 + g->kh;                         \
                        h0 = h0 < 0 ? 0 : h0;                                                     \
                        h1 = h1 > g->h ? g->h : h1;                                               \
                        for (int64_t ow = 0; ow < g->ow; ow++) {                                  \
                            int64_t w0 = ow * g->sw - g->pw, w1 = w0 + g->kw;                     \
                            w0 = w0 < 0 ? 0 : w0;                                                 \
                            w1 = w1 > g->w ? g->w : w1;                                           \
                            const TYPE v = gp[oh * gs[2] + ow * gs[3]] * inv;                     \
                            for (int64_t ih = h0; ih < h1; ih++)                                  \
                                for (int64_t iw = w0; iw < w1; iw++)                              \
                                    xp[ih * g->w + iw] += v;                                      \
                        }                                                                         \
                    }                                                                             \
                }                                                                                 \
            });                                                                                   \
    }
CPU_AVGPOOL(float)
CPU_AVGPOOL(double)

tg_status tg__cpu_avg_pool2d(void *state, const tg_kargs *a) {
    (void)state;
    tg_status st = tg__cpu_check_float(a, 1);
    if (st == TG_OK)
        st = cpu_pool_check(a, &a->in[0], &a->out);
    if (st != TG_OK)
        return st;
    cpu_pool_geom g;
    cpu_pool_geom_make(a, &a->in[0], &a->out, &g);
    if (a->out.dtype == TG_F32)
        cpu_avgpool_fwd_float(&g, a->in[0].data, a->in[0].strides, a->out.data);
    else
        cpu_avgpool_fwd_double(&g, a->in[0].data, a->in[0].strides, a->out.data);
    return TG_OK;
}

/* in: g (N, C, OH, OW); out: dx (N, C, H, W). */
tg_status tg__cpu_avg_pool2d_backward(void *state, const tg_kargs *a) {
    (void)state;
    tg_status st = tg__cpu_check_float(a, 1);
    if (st == TG_OK)
        st = cpu_pool_check(a, &a->out, &a->in[0]);
    if (st != TG_OK)
        return st;
    cpu_pool_geom g;
    cpu_pool_geom_make(a, &a->out, &a->in[0], &g);
    if (a->out.dtype == TG_F32)
        cpu_avgpool_bwd_float(&g, a->in[0].data, a->in[0].strides, a->out.data);
    else
        cpu_avgpool_bwd_double(&g, a->in[0].data, a->in[0].strides, a->out.data);
    return TG_OK;
}
