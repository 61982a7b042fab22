/*
 * kernels/cuda/cuda_lnorm.cu: layer norm, forward and backward, the CUDA
 * version of kernels/cpu/cpu_lnorm.c.
 *
 * Operands are contiguous (the runtime makes them so) and x is seen as
 * (R, D) with D = numel(weight). One block per row: its threads stride over
 * the row, accumulate in double, and a fixed tree in shared memory adds the
 * partial sums (two passes: the mean, then the squared deviations), so a
 * result depends only on the data. The same block then writes the row's
 * outputs. The weight and bias gradients sum over rows in a second kernel,
 * one thread per column walking every row in order: deterministic, and the
 * threads of a warp read neighbouring columns. The CPU sums in another
 * order, so the two agree to rounding.
 */
#include <math.h>

#include "cuda.h"

#define LN_THREADS 256
/* Rows per launch: gridDim.x is at most 2^31 - 1. */
#define LN_MAX_GRID 2147483647LL

/* Adds v and w over the block; every thread gets the totals. */
__device__ static void ln_block_sum2(double *v, double *w, double *sh) {
    sh[threadIdx.x] = *v;
    sh[LN_THREADS + threadIdx.x] = *w;
    __syncthreads();
    for (int k = LN_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            sh[threadIdx.x] += sh[threadIdx.x + k];
            sh[LN_THREADS + threadIdx.x] += sh[LN_THREADS + threadIdx.x + k];
        }
        __syncthreads();
    }
    *v = sh[0];
    *w = sh[LN_THREADS];
    __syncthreads();
}

template <typename T>
__global__ static void k_ln_forward(int64_t rows, int64_t d, double eps, const T *x, const T *w,
                                    const T *b, T *st, T *y) {
    __shared__ double sh[2 * LN_THREADS];
    const int64_t r = blockIdx.x;
    const T *px = x + r * d;
    double s = 0, z = 0;
    for (int64_t i = threadIdx.x; i < d; i += LN_THREADS)
        s += (double)px[i];
    ln_block_sum2(&s, &z, sh);
    const double mean = s / (double)d;
    double v = 0;
    z = 0;
    for (int64_t i = threadIdx.x; i < d; i += LN_THREADS) {
        const double c = (double)px[i] - mean;
        v += c * c;
    }
    ln_block_sum2(&v, &z, sh);
    const double inv = 1.0 / sqrt(v / (double)d + eps);
    if (threadIdx.x == 0) {
        st[r] = (T)mean;
        st[rows + r] = (T)inv;
    }
    const T mu = (T)mean, is = (T)inv;
    T *py = y + r * d;
    for (int64_t i = threadIdx.x; i < d; i += LN_THREADS)
        py[i] = (px[i] - mu) * is * w[i] + b[i];
}

/* dx = (g w - mean(g w) - xhat mean(g w xhat)) * invstd per row. */
template <typename T>
__global__ static void k_ln_backward_dx(int64_t rows, int64_t d, const T *g, const T *x, const T *w,
                                        const T *st, T *dx) {
    __shared__ double sh[2 * LN_THREADS];
    const int64_t r = blockIdx.x;
    const T *pg = g + r * d, *px = x + r * d;
    const T mean = st[r], inv = st[rows + r];
    double s1 = 0, s2 = 0;
    for (int64_t i = threadIdx.x; i < d; i += LN_THREADS) {
        const double gw = (double)pg[i] * (double)w[i];
        s1 += gw;
        s2 += gw * ((double)px[i] - (double)mean) * (double)inv;
    }
    ln_block_sum2(&s1, &s2, sh);
    const T a = (T)(s1 / (double)d), c = (T)(s2 / (double)d);
    T *q = dx + r * d;
    for (int64_t i = threadIdx.x; i < d; i += LN_THREADS)
        q[i] = (pg[i] * w[i] - a - (px[i] - mean) * inv * c) * inv;
}

/* gp rows: d weight = sum_r g xhat, d bias = sum_r g, one thread a column. */
template <typename T>
__global__ static void k_ln_backward_params(int64_t rows, int64_t d, const T *g, const T *x,
                                            const T *st, T *gp) {
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d)
        return;
    double sw = 0, sb = 0;
    for (int64_t r = 0; r < rows; r++) {
        const double gv = (double)g[r * d + j];
        sw += gv * (((double)x[r * d + j] - (double)st[r]) * (double)st[rows + r]);
        sb += gv;
    }
    gp[j] = (T)sw;
    gp[d + j] = (T)sb;
}

/* x (and out) contiguous and alike, weight contiguous with D elements
 * dividing numel(x), stats (2, R): fills *rows and *d. */
static tg_status ln_geom(const tg_kargs *a, const tg_kview *x, const tg_kview *w,
                         const tg_kview *st, int64_t *rows, int64_t *d) {
    const int64_t n = tg__kview_numel(x);
    *d = tg__kview_numel(w);
    *rows = *d > 0 ? n / *d : 0;
    if (!tg__kview_contig(x) || !tg__kview_contig(&a->out) || !tg__kview_contig(w) || n == 0 ||
        *d == 0 || n % *d || tg__kview_numel(&a->out) != n || st->ndim != 2 || st->shape[0] != 2 ||
        st->shape[1] != *rows || !tg__kview_contig(st))
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda %s: operands must be contiguous, the input (R, D) with D the "
                             "weight's %lld elements and stats (2, R)",
                             tg_op_name(a->op), (long long)*d);
    if (*rows > LN_MAX_GRID)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda %s: too many rows (%lld)", tg_op_name(a->op),
                             (long long)*rows);
    return TG_OK;
}

/* in: x, weight, bias, stats (written); out: y. */
tg_status tg__cuda_layer_norm(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    int64_t rows = 0, d = 0;
    tg_status st = tg__cuda_check_float(a, 4);
    if (st == TG_OK)
        st = ln_geom(a, &a->in[0], &a->in[1], &a->in[3], &rows, &d);
    if (st != TG_OK)
        return st;
    if (!tg__kview_contig(&a->in[2]) || tg__kview_numel(&a->in[2]) != d)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda layer_norm: bias must have %lld elements",
                             (long long)d);
    const double eps = a->p->f[0];
    if (a->out.dtype == TG_F32)
        k_ln_forward<float><<<(unsigned)rows, LN_THREADS, 0, s->stream>>>(
            rows, d, eps, (const float *)a->in[0].data, (const float *)a->in[1].data,
            (const float *)a->in[2].data, (float *)a->in[3].data, (float *)a->out.data);
    else
        k_ln_forward<double><<<(unsigned)rows, LN_THREADS, 0, s->stream>>>(
            rows, d, eps, (const double *)a->in[0].data, (const double *)a->in[1].data,
            (const double *)a->in[2].data, (double *)a->in[3].data, (double *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* in: g, x, weight, stats, gparams (written); out: dx. */
tg_status tg__cuda_layer_norm_backward(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    int64_t rows = 0, d = 0;
    tg_status st = tg__cuda_check_float(a, 5);
    if (st == TG_OK)
        st = ln_geom(a, &a->in[1], &a->in[2], &a->in[3], &rows, &d);
    if (st != TG_OK)
        return st;
    const tg_kview *gp = &a->in[4];
    if (!tg__cuda_same_shape(&a->in[0], &a->in[1]) || !tg__kview_contig(&a->in[0]) ||
        gp->ndim != 2 || gp->shape[0] != 2 || gp->shape[1] != d || !tg__kview_contig(gp))
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda layer_norm_backward: g must be contiguous and like x, "
                             "gparams (2, %lld)",
                             (long long)d);
    const unsigned pblocks = (unsigned)((d + LN_THREADS - 1) / LN_THREADS);
    if (a->out.dtype == TG_F32) {
        const float *g = (const float *)a->in[0].data, *x = (const float *)a->in[1].data,
                    *sv = (const float *)a->in[3].data;
        k_ln_backward_dx<float><<<(unsigned)rows, LN_THREADS, 0, s->stream>>>(
            rows, d, g, x, (const float *)a->in[2].data, sv, (float *)a->out.data);
        k_ln_backward_params<float>
            <<<pblocks, LN_THREADS, 0, s->stream>>>(rows, d, g, x, sv, (float *)a->in[4].data);
    } else {
        const double *g = (const double *)a->in[0].data, *x = (const double *)a->in[1].data,
                     *sv = (const double *)a->in[3].data;
        k_ln_backward_dx<double><<<(unsigned)rows, LN_THREADS, 0, s->stream>>>(
            rows, d, g, x, (const double *)a->in[2].data, sv, (double *)a->out.data);
        k_ln_backward_params<double>
            <<<pblocks, LN_THREADS, 0, s->stream>>>(rows, d, g, x, sv, (double *)a->in[4].data);
    }
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}
