/*
 * kernels/cuda/cuda_pool.cu: max and average pooling over NCHW windows, the
 * CUDA version of kernels/cpu/cpu_pool.c.
 *
 * Parameters (tg_op_params.ints): [0..1] kernel, [2..3] stride, [4..5] pad.
 * One thread per output element scans its window in the CPU's order:
 * max_pool2d and max_pool2d_indices keep the first maximum (a later element
 * wins only when strictly greater, or NaN, which ends the scan), and the
 * average sums in double with the divisor kh * kw (count_include_pad), so
 * both give the CPU's results exactly.
 *
 * avg_pool2d_backward and max_pool2d_backward are written as gathers: one
 * thread per element of dx adds g (over kh * kw for the average) of every
 * window that holds it, in increasing (oh, ow) order, the order in which the
 * CPU's scatter adds them; no atomics, so the sums are deterministic. For
 * max pooling the thread rescans each such window and takes its g only when
 * the window's first maximum is this element: kh * kw windows of kh * kw
 * loads at most, four loads for the cnns' 2x2 windows.
 */
#include <math.h>

#include "cuda.h"

typedef struct cuda_pool_geom {
    int64_t n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
    int64_t xs[4]; /* strides of the strided operand over (n, c, h, w) */
    int64_t gs[4]; /* max_pool2d_backward: the strides of g (xs are x's) */
} cuda_pool_geom;

static void pool_geom_make(const tg_kargs *a, const tg_kview *big, const tg_kview *small,
                           const int64_t *strides, cuda_pool_geom *g) {
    const int64_t *p = a->p->ints;
    g->kh = p[0], g->kw = p[1], g->sh = p[2], g->sw = p[3], g->ph = p[4], g->pw = p[5];
    g->n = big->shape[0], g->c = big->shape[1], g->h = big->shape[2], g->w = big->shape[3];
    g->oh = small->shape[2], g->ow = small->shape[3];
    for (int d = 0; d < 4; d++)
        g->xs[d] = strides[d], g->gs[d] = 0;
}

static tg_status pool_check(const tg_kargs *a, const tg_kview *big, const tg_kview *small) {
    const int64_t *p = a->p->ints;
    if (big->ndim != 4 || small->ndim != 4 || p[0] < 1 || p[1] < 1 || p[2] < 1 || p[3] < 1 ||
        small->shape[2] != (big->shape[2] + 2 * p[4] - p[0]) / p[2] + 1 ||
        small->shape[3] != (big->shape[3] + 2 * p[5] - p[1]) / p[3] + 1 ||
        small->shape[0] != big->shape[0] || small->shape[1] != big->shape[1])
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda %s: inconsistent pooling geometry",
                             tg_op_name(a->op));
    return TG_OK;
}

/* Output element i (contiguous (n, c, oh, ow)) of a pooling forward. */
struct pool_pos {
    int64_t n, c, oh, ow;
};

__device__ static pool_pos pool_at(const cuda_pool_geom &g, int64_t i) {
    pool_pos q;
    q.ow = i % g.ow;
    q.oh = i / g.ow % g.oh;
    q.c = i / (g.ow * g.oh) % g.c;
    q.n = i / (g.ow * g.oh * g.c);
    return q;
}

/* The first maximum of window (oh, ow) of plane xp (strides g.xs): its flat
 * index ih * W + iw; *mx gets its value. A later element wins only when
 * strictly greater, and a NaN wins and ends the scan. */
template <typename T>
__device__ static int64_t window_arg(const cuda_pool_geom &g, const T *xp, int64_t oh, int64_t ow,
                                     T *mx) {
    int64_t h0 = oh * g.sh - g.ph, h1 = h0 + g.kh;
    h0 = h0 < 0 ? 0 : h0;
    h1 = h1 > g.h ? g.h : h1;
    int64_t w0 = ow * g.sw - g.pw, w1 = w0 + g.kw;
    w0 = w0 < 0 ? 0 : w0;
    w1 = w1 > g.w ? g.w : w1;
    T m = -INFINITY;
    int64_t arg = h0 * g.w + w0;
    for (int64_t ih = h0; ih < h1; ih++) {
        for (int64_t iw = w0; iw < w1; iw++) {
            const T v = xp[ih * g.xs[2] + iw * g.xs[3]];
            if (v > m || isnan(v)) {
                m = v;
                arg = ih * g.w + iw;
                if (isnan(v)) {
                    *mx = m;
                    return arg;
                }
            }
        }
    }
    *mx = m;
    return arg;
}

/* Writes the window maximum (vo) or its flat index ih * W + iw (io). */
template <typename T>
__global__ static void k_maxpool(cuda_pool_geom g, const T *x, T *vo, int64_t *io) {
    const int64_t total = g.n * g.c * g.oh * g.ow;
    TG__CUDA_FOR(i, total) {
        const pool_pos q = pool_at(g, i);
        T mx;
        const int64_t arg = window_arg(g, x + q.n * g.xs[0] + q.c * g.xs[1], q.oh, q.ow, &mx);
        if (vo)
            vo[i] = mx;
        else
            io[i] = arg;
    }
}

template <typename T> __global__ static void k_avgpool_fwd(cuda_pool_geom g, const T *x, T *o) {
    const int64_t total = g.n * g.c * g.oh * g.ow;
    const double inv = 1.0 / (double)(g.kh * g.kw);
    TG__CUDA_FOR(i, total) {
        const pool_pos q = pool_at(g, i);
        const T *xp = x + q.n * g.xs[0] + q.c * g.xs[1];
        int64_t h0 = q.oh * g.sh - g.ph, h1 = h0 + g.kh;
        h0 = h0 < 0 ? 0 : h0;
        h1 = h1 > g.h ? g.h : h1;
        int64_t w0 = q.ow * g.sw - g.pw, w1 = w0 + g.kw;
        w0 = w0 < 0 ? 0 : w0;
        w1 = w1 > g.w ? g.w : w1;
        double s = 0;
        for (int64_t ih = h0; ih < h1; ih++)
            for (int64_t iw = w0; iw < w1; iw++)
                s += xp[ih * g.xs[2] + iw * g.xs[3]];
        o[i] = (T)(s * inv);
    }
}

/* The output positions o in [0, nout) whose window o*st - pad + [0, k)
 * holds input index ix: lo..hi inclusive (empty when lo > hi). */
__device__ static void pool_windows(int64_t ix, int64_t k, int64_t st, int64_t pad, int64_t nout,
                                    int64_t *lo, int64_t *hi) {
    const int64_t a = ix + pad - k + 1; /* o*st >= a */
    *lo = a <= 0 ? 0 : (a + st - 1) / st;
    const int64_t b = (ix + pad) / st; /* o*st <= ix + pad */
    *hi = b < nout - 1 ? b : nout - 1;
}

/* dx[n, c, ih, iw] (contiguous) from g, whose strides are g.xs. */
template <typename T> __global__ static void k_avgpool_bwd(cuda_pool_geom g, const T *gd, T *dx) {
    const int64_t total = g.n * g.c * g.h * g.w;
    const T inv = (T)(1.0 / (double)(g.kh * g.kw));
    TG__CUDA_FOR(i, total) {
        const int64_t iw = i % g.w, ih = i / g.w % g.h, c = i / (g.w * g.h) % g.c;
        const int64_t n = i / (g.w * g.h * g.c);
        const T *gp = gd + n * g.xs[0] + c * g.xs[1];
        int64_t ohlo, ohhi, owlo, owhi;
        pool_windows(ih, g.kh, g.sh, g.ph, g.oh, &ohlo, &ohhi);
        pool_windows(iw, g.kw, g.sw, g.pw, g.ow, &owlo, &owhi);
        T acc = 0;
        for (int64_t oh = ohlo; oh <= ohhi; oh++)
            for (int64_t ow = owlo; ow <= owhi; ow++)
                acc += gp[oh * g.xs[2] + ow * g.xs[3]] * inv;
        dx[i] = acc;
    }
}

/* dx[n, c, ih, iw] (contiguous): the g (strides g.gs) of every window whose
 * first maximum is this element. x has strides g.xs. */
template <typename T>
__global__ static void k_maxpool_bwd(cuda_pool_geom g, const T *x, const T *gd, T *dx) {
    const int64_t total = g.n * g.c * g.h * g.w;
    TG__CUDA_FOR(i, total) {
        const int64_t iw = i % g.w, ih = i / g.w % g.h, c = i / (g.w * g.h) % g.c;
        const int64_t n = i / (g.w * g.h * g.c), self = ih * g.w + iw;
        const T *xp = x + n * g.xs[0] + c * g.xs[1], *gp = gd + n * g.gs[0] + c * g.gs[1];
        int64_t ohlo, ohhi, owlo, owhi;
        pool_windows(ih, g.kh, g.sh, g.ph, g.oh, &ohlo, &ohhi);
        pool_windows(iw, g.kw, g.sw, g.pw, g.ow, &owlo, &owhi);
        T acc = 0;
        for (int64_t oh = ohlo; oh <= ohhi; oh++)
            for (int64_t ow = owlo; ow <= owhi; ow++) {
                T mx;
                if (window_arg(g, xp, oh, ow, &mx) == self)
                    acc += gp[oh * g.gs[2] + ow * g.gs[3]];
            }
        dx[i] = acc;
    }
}

/* ---- the five rows ---- */

tg_status tg__cuda_max_pool2d(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = tg__cuda_check_float(a, 1);
    if (st == TG_OK)
        st = pool_check(a, &a->in[0], &a->out);
    if (st != TG_OK)
        return st;
    cuda_pool_geom g;
    pool_geom_make(a, &a->in[0], &a->out, a->in[0].strides, &g);
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (a->out.dtype == TG_F32)
        k_maxpool<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(g, (const float *)a->in[0].data,
                                                                 (float *)a->out.data, NULL);
    else
        k_maxpool<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(g, (const double *)a->in[0].data,
                                                                  (double *)a->out.data, NULL);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

tg_status tg__cuda_max_pool2d_indices(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *x = &a->in[0];
    if (a->out.dtype != TG_I64 || (x->dtype != TG_F32 && x->dtype != TG_F64))
        return tg__cuda_fail(a, TG_ERR_DTYPE,
                             "cuda max_pool2d_indices: expected a float input "
                             "and an i64 output");
    tg_status st = pool_check(a, x, &a->out);
    if (st != TG_OK)
        return st;
    cuda_pool_geom g;
    pool_geom_make(a, x, &a->out, x->strides, &g);
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (x->dtype == TG_F32)
        k_maxpool<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(g, (const float *)x->data, NULL,
                                                                 (int64_t *)a->out.data);
    else
        k_maxpool<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(g, (const double *)x->data, NULL,
                                                                  (int64_t *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* in: g (N, C, OH, OW), x (N, C, H, W); out: dx shaped like x. */
tg_status tg__cuda_max_pool2d_backward(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *gv = &a->in[0], *x = &a->in[1];
    tg_status st = tg__cuda_check_float(a, 2);
    if (st == TG_OK)
        st = pool_check(a, x, gv);
    if (st != TG_OK)
        return st;
    for (int d = 0; d < 4; d++)
        if (a->out.shape[d] != x->shape[d])
            return tg__cuda_fail(a, TG_ERR_SHAPE,
                                 "cuda max_pool2d_backward: dx must have x's shape");
    cuda_pool_geom g;
    pool_geom_make(a, x, gv, x->strides, &g);
    for (int d = 0; d < 4; d++)
        g.gs[d] = gv->strides[d];
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (x->dtype == TG_F32)
        k_maxpool_bwd<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            g, (const float *)x->data, (const float *)gv->data, (float *)a->out.data);
    else
        k_maxpool_bwd<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            g, (const double *)x->data, (const double *)gv->data, (double *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

tg_status tg__cuda_avg_pool2d(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = tg__cuda_check_float(a, 1);
    if (st == TG_OK)
        st = pool_check(a, &a->in[0], &a->out);
    if (st != TG_OK)
        return st;
    cuda_pool_geom g;
    pool_geom_make(a, &a->in[0], &a->out, a->in[0].strides, &g);
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (a->out.dtype == TG_F32)
        k_avgpool_fwd<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            g, (const float *)a->in[0].data, (float *)a->out.data);
    else
        k_avgpool_fwd<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            g, (const double *)a->in[0].data, (double *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* in: g (N, C, OH, OW); out: dx (N, C, H, W). */
tg_status tg__cuda_avg_pool2d_backward(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = tg__cuda_check_float(a, 1);
    if (st == TG_OK)
        st = pool_check(a, &a->out, &a->in[0]);
    if (st != TG_OK)
        return st;
    cuda_pool_geom g;
    pool_geom_make(a, &a->out, &a->in[0], a->in[0].strides, &g);
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (a->out.dtype == TG_F32)
        k_avgpool_bwd<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            g, (const float *)a->in[0].data, (float *)a->out.data);
    else
        k_avgpool_bwd<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            g, (const double *)a->in[0].data, (double *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}
