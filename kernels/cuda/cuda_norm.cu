/*
 * kernels/cuda/cuda_norm.cu: batch norm in training mode, forward and
 * backward, the CUDA version of kernels/cpu/cpu_norm.c.
 *
 * Operands are contiguous (the runtime makes them so) and seen as (N, C, S)
 * with S = H * W (1 for (N, C) input). One block per channel: its threads
 * stride over the channel's N * S values, accumulate in double, and a fixed
 * tree in shared memory adds the partial sums, so a result depends only on
 * the data. The same block then writes the channel's outputs. The sums
 * follow the CPU's formulas (the shift by the channel's first value, the
 * biased variance) but not its order, so the two agree to rounding.
 */
#include <math.h>

#include "cuda.h"

#define BN_THREADS 256

/* Adds v and w over the block; every thread gets the totals. */
__device__ static void bn_block_sum2(double *v, double *w, double *sh) {
    sh[threadIdx.x] = *v;
    sh[BN_THREADS + threadIdx.x] = *w;
    __syncthreads();
    for (int k = BN_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            sh[threadIdx.x] += sh[threadIdx.x + k];
            sh[BN_THREADS + threadIdx.x] += sh[BN_THREADS + threadIdx.x + k];
        }
        __syncthreads();
    }
    *v = sh[0];
    *w = sh[BN_THREADS];
    __syncthreads();
}

/* Element j of channel c: sample j / s, position j % s. */
__device__ static int64_t bn_at(int64_t c, int64_t j, int64_t nc, int64_t s) {
    return (j / s) * nc * s + c * s + j % s;
}

template <typename T>
__global__ static void k_bn_forward(int64_t n, int64_t nc, int64_t s, double eps, const T *x,
                                    const T *w, const T *b, T *st, T *y) {
    __shared__ double sh[2 * BN_THREADS];
    const int64_t c = blockIdx.x, m = n * s;
    const double x0 = (double)x[c * s];
    double a1 = 0, a2 = 0;
    for (int64_t j = threadIdx.x; j < m; j += BN_THREADS) {
        const double d = (double)x[bn_at(c, j, nc, s)] - x0;
        a1 += d;
        a2 += d * d;
    }
    bn_block_sum2(&a1, &a2, sh);
    const double d1 = a1 / (double)m;
    double var = a2 / (double)m - d1 * d1;
    var = var > 0 ? var : 0;
    const double mean = x0 + d1, inv = 1.0 / sqrt(var + eps);
    if (threadIdx.x == 0) {
        st[c] = (T)mean;
        st[nc + c] = (T)inv;
        st[2 * nc + c] = (T)var;
    }
    const double al = inv * (double)w[c];
    const T alpha = (T)al, beta = (T)((double)b[c] - mean * al);
    for (int64_t j = threadIdx.x; j < m; j += BN_THREADS) {
        const int64_t o = bn_at(c, j, nc, s);
        y[o] = x[o] * alpha + beta;
    }
}

template <typename T>
__global__ static void k_bn_backward(int64_t n, int64_t nc, int64_t s, const T *g, const T *x,
                                     const T *w, const T *st, T *gp, T *dx) {
    __shared__ double sh[2 * BN_THREADS];
    const int64_t c = blockIdx.x, m = n * s;
    const double mean = (double)st[c], inv = (double)st[nc + c];
    double sg = 0, sgx = 0;
    for (int64_t j = threadIdx.x; j < m; j += BN_THREADS) {
        const int64_t o = bn_at(c, j, nc, s);
        const double gv = (double)g[o];
        sg += gv;
        sgx += gv * ((double)x[o] - mean);
    }
    bn_block_sum2(&sg, &sgx, sh);
    if (threadIdx.x == 0) {
        gp[c] = (T)(sgx * inv);
        gp[nc + c] = (T)sg;
    }
    const T mg = (T)(sg / (double)m), proj = (T)(sgx / (double)m * inv * inv),
            gs = (T)(inv * (double)w[c]), mu = st[c];
    for (int64_t j = threadIdx.x; j < m; j += BN_THREADS) {
        const int64_t o = bn_at(c, j, nc, s);
        dx[o] = (g[o] - mg - (x[o] - mu) * proj) * gs;
    }
}

static bool bn_vec(const tg_kview *v, int64_t c) {
    return v->ndim == 1 && v->shape[0] == c && tg__kview_contig(v);
}

static bool bn_rows(const tg_kview *v, int64_t rows, int64_t c) {
    return v->ndim == 2 && v->shape[0] == rows && v->shape[1] == c && tg__kview_contig(v);
}

/* x (N, C[, H, W]) and out alike and contiguous; n, c, s from x. */
static tg_status bn_geom(const tg_kargs *a, const tg_kview *x, int64_t *n, int64_t *c,
                         int64_t *s) {
    if ((x->ndim != 2 && x->ndim != 4) || !tg__cuda_same_shape(x, &a->out) || !tg__kview_contig(x) ||
        !tg__kview_contig(&a->out) || tg__kview_numel(x) == 0)
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda %s: input must be a contiguous non-empty (N, C) or (N, C, H, "
                             "W) and the output alike",
                             tg_op_name(a->op));
    *n = x->shape[0];
    *c = x->shape[1];
    *s = x->ndim == 4 ? x->shape[2] * x->shape[3] : 1;
    if (*c > 2147483647LL)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda %s: too many channels (%lld)",
                             tg_op_name(a->op), (long long)*c);
    return TG_OK;
}

/* in: x, weight, bias, stats (written); out: y. */
tg_status tg__cuda_batch_norm(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    int64_t n = 0, c = 0, sp = 0;
    tg_status st = tg__cuda_check_float(a, 4);
    if (st == TG_OK)
        st = bn_geom(a, &a->in[0], &n, &c, &sp);
    if (st != TG_OK)
        return st;
    if (!bn_vec(&a->in[1], c) || !bn_vec(&a->in[2], c) || !bn_rows(&a->in[3], 3, c))
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda batch_norm: weight and bias must be (%lld) and stats (3, "
                             "%lld), contiguous",
                             (long long)c, (long long)c);
    const double eps = a->p->f[0];
    if (a->out.dtype == TG_F32)
        k_bn_forward<float><<<(unsigned)c, BN_THREADS, 0, s->stream>>>(
            n, c, sp, eps, (const float *)a->in[0].data, (const float *)a->in[1].data,
            (const float *)a->in[2].data, (float *)a->in[3].data, (float *)a->out.data);
    else
        k_bn_forward<double><<<(unsigned)c, BN_THREADS, 0, s->stream>>>(
            n, c, sp, eps, (const double *)a->in[0].data, (const double *)a->in[1].data,
            (const double *)a->in[2].data, (double *)a->in[3].data, (double *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* in: g, x, weight, stats, gparams (written); out: dx. */
tg_status tg__cuda_batch_norm_backward(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    int64_t n = 0, c = 0, sp = 0;
    tg_status st = tg__cuda_check_float(a, 5);
    if (st == TG_OK)
        st = bn_geom(a, &a->in[1], &n, &c, &sp);
    if (st != TG_OK)
        return st;
    if (!tg__cuda_same_shape(&a->in[0], &a->in[1]) || !tg__kview_contig(&a->in[0]) ||
        !bn_vec(&a->in[2], c) || !bn_rows(&a->in[3], 3, c) || !bn_rows(&a->in[4], 2, c))
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda batch_norm_backward: g must be contiguous and like x, weight "
                             "(%lld), stats (3, %lld) and gparams (2, %lld)",
                             (long long)c, (long long)c, (long long)c);
    if (a->out.dtype == TG_F32)
        k_bn_backward<float><<<(unsigned)c, BN_THREADS, 0, s->stream>>>(
            n, c, sp, (const float *)a->in[0].data, (const float *)a->in[1].data,
            (const float *)a->in[2].data, (const float *)a->in[3].data, (float *)a->in[4].data,
            (float *)a->out.data);
    else
        k_bn_backward<double><<<(unsigned)c, BN_THREADS, 0, s->stream>>>(
            n, c, sp, (const double *)a->in[0].data, (const double *)a->in[1].data,
            (const double *)a->in[2].data, (const double *)a->in[3].data,
            (double *)a->in[4].data, (double *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}
