/*
 * kernels/cuda/cuda_loss.cu: the fused cross-entropy pair and dropout, the
 * CUDA versions of kernels/cpu/cpu_loss.c.
 *
 * cross_entropy: one block per row (a block walks rows blockIdx.x,
 * blockIdx.x + gridDim.x, ...). The block's threads stride over the row's C
 * logits and combine the row maximum, the sum of exp(x - max) and the sum of
 * x with tree reductions in shared memory, in double, as the CPU does in one
 * thread. Thread 0 adds up its block's row losses; the per-block sums go to
 * the context's scratch buffer, and a one-block second pass adds them in a
 * fixed tree and divides by N. Every sum has a fixed order, so two runs give
 * the same bits; the order differs from the CPU's, so results agree with it
 * to rounding. cross_entropy_backward uses the same row statistics and
 * writes softmax - q, scaled by g / N.
 *
 * Targets are checked before anything is computed: a bad one is recorded
 * with atomicMin of its row in the context's bad-index word, which the host
 * reads back, so the lowest bad row is reported in the CPU kernel's words.
 * That costs one stream synchronisation per call of either kernel.
 *
 * dropout: one thread per Philox block of four elements. Element i keeps its
 * value when word i % 4 of Philox(key, counter + i / 4), as a double in
 * [0, 1), is >= p: the same integer arithmetic and the same comparison as
 * tg_philox4x32 and tg_u32_to_unit on the CPU, so both backends draw the
 * same mask bit for bit.
 */
#include <math.h>
#include <string.h>

#include "cuda.h"

/* Threads per block of the row kernels; the reductions assume a power of 2. */
#define CE_THREADS 256

/* "No bad target" in the device word. */
#define CE_NO_BAD 0xFFFFFFFFFFFFFFFFull

/* ---- Philox4x32-10, as in runtime/core/rng.c ---- */

/* The same rounds, constants and word order as tg_philox4x32: the 32x32-bit
 * products are formed in 64 bits and split into their high and low words. */
__host__ __device__ static inline void cuda_philox4x32(uint64_t key, uint64_t counter,
                                                       uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        const uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        const uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* The host instance of the same function, so that a test can compare the
 * port with tg_philox4x32 on a machine without a GPU. */
extern "C" void tg__cuda_philox4x32_host(uint64_t key, uint64_t counter, uint32_t out[4]) {
    cuda_philox4x32(key, counter, out);
}

/* ---- block reductions ---- */

/* Each returns, in every thread of the block, the combination of the
 * block's CE_THREADS values v, by a fixed tree in sh (CE_THREADS doubles).
 * Every thread of the block must call them. */
__device__ static double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = CE_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w)
            sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    const double r = sh[0];
    /* Nobody may overwrite sh[0] before every thread has read it. */
    __syncthreads();
    return r;
}

/* The maximum ignores NaN, as the CPU's `x > mx ? x : mx` does. */
__device__ static double block_max(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = CE_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) {
            const double o = sh[threadIdx.x + w];
            sh[threadIdx.x] = o > sh[threadIdx.x] ? o : sh[threadIdx.x];
        }
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

/* Row statistics of one row: the maximum, sum exp(x - max) and sum x. */
template <typename T>
__device__ static void ce_row(const T *row, int64_t sc, int64_t c, double *sh, double *mx,
                              double *sexp, double *sx) {
    double m = -INFINITY;
    for (int64_t k = threadIdx.x; k < c; k += CE_THREADS) {
        const double v = (double)row[k * sc];
        m = v > m ? v : m;
    }
    m = block_max(m, sh);
    double s = 0, t = 0;
    for (int64_t k = threadIdx.x; k < c; k += CE_THREADS) {
        const double v = (double)row[k * sc];
        s += exp(v - m);
        t += v;
    }
    *mx = m;
    *sexp = block_sum(s, sh);
    *sx = block_sum(t, sh);
}

/* ---- cross_entropy ---- */

__global__ static void k_ce_targets(int64_t n, int64_t c, const void *t, tg_dtype tdt, int64_t st,
                                    unsigned long long *bad) {
    TG__CUDA_FOR(i, n) {
        const int64_t y = tg__cuda_index_at(t, tdt, i * st);
        if (y < 0 || y >= c)
            atomicMin(bad, (unsigned long long)i);
    }
}

/* part[b]: the sum of the losses of the rows block b took. */
template <typename T>
__global__ static void k_ce_forward(int64_t n, int64_t c, const T *x, int64_t sr, int64_t sc,
                                    const void *t, tg_dtype tdt, int64_t st, double eps,
                                    double *part) {
    __shared__ double sh[CE_THREADS];
    double acc = 0;
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const T *row = x + i * sr;
        double mx, s, sum;
        ce_row<T>(row, sc, c, sh, &mx, &s, &sum);
        if (threadIdx.x == 0) {
            const int64_t y = tg__cuda_index_at(t, tdt, i * st);
            acc += (mx + log(s)) - (1.0 - eps) * (double)row[y * sc] - eps / (double)c * sum;
        }
    }
    if (threadIdx.x == 0)
        part[blockIdx.x] = acc;
}

template <typename T>
__global__ static void k_ce_finish(int nb, const double *part, int64_t n, T *out) {
    __shared__ double sh[CE_THREADS];
    double v = 0;
    for (int b = threadIdx.x; b < nb; b += CE_THREADS)
        v += part[b];
    v = block_sum(v, sh);
    if (threadIdx.x == 0)
        *out = (T)(v / (double)n);
}

/* out[i, k] = g / N * (softmax(x_i)_k - q_ik); the output is contiguous. */
template <typename T>
__global__ static void k_ce_backward(int64_t n, int64_t c, const T *g, const T *x, int64_t sr,
                                     int64_t sc, const void *t, tg_dtype tdt, int64_t st,
                                     double eps, T *o) {
    __shared__ double sh[CE_THREADS];
    const double gs = (double)*g / (double)n;
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const T *row = x + i * sr;
        double mx, s, sum;
        ce_row<T>(row, sc, c, sh, &mx, &s, &sum);
        const double lse = mx + log(s);
        const int64_t y = tg__cuda_index_at(t, tdt, i * st);
        for (int64_t k = threadIdx.x; k < c; k += CE_THREADS) {
            const double q = eps / (double)c + (k == y ? 1.0 - eps : 0.0);
            o[i * c + k] = (T)(gs * (exp((double)row[k * sc] - lse) - q));
        }
    }
}

__global__ static void k_set_nan_f32(float *o) { *o = NAN; }
__global__ static void k_set_nan_f64(double *o) { *o = NAN; }

/* Shapes and dtypes of logits x (N, C) and targets t (N,), as the CPU checks
 * them; then every target, on the device, with one read-back. */
static tg_status ce_check(tg__cuda_state *s, const tg_kargs *a, const tg_kview *x,
                          const tg_kview *t) {
    if (x->ndim != 2 || t->ndim != 1 || t->shape[0] != x->shape[0])
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda %s: expected logits (N, C) and targets (N,)",
                             tg_op_name(a->op));
    if (t->dtype != TG_U8 && t->dtype != TG_I32 && t->dtype != TG_I64)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda %s: targets must be u8, i32 or i64",
                             tg_op_name(a->op));
    const int64_t n = x->shape[0], c = x->shape[1];
    if (n == 0)
        return TG_OK;
    TG__CUDA_K(cudaMemsetAsync(s->bad, 0xFF, sizeof *s->bad, s->stream), a);
    k_ce_targets<<<tg__cuda_blocks(n), TG__CUDA_THREADS, 0, s->stream>>>(n, c, t->data, t->dtype,
                                                                         t->strides[0], s->bad);
    TG__CUDA_LAUNCHED(a);
    unsigned long long pos = CE_NO_BAD;
    TG__CUDA_K(cudaMemcpyAsync(&pos, s->bad, sizeof pos, cudaMemcpyDeviceToHost, s->stream), a);
    TG__CUDA_K(cudaStreamSynchronize(s->stream), a);
    if (pos == CE_NO_BAD)
        return TG_OK;
    /* Read the bad target back to name it. */
    const size_t es = t->dtype == TG_U8 ? 1 : t->dtype == TG_I32 ? 4 : 8;
    unsigned char raw[8] = {0};
    TG__CUDA_K(cudaMemcpyAsync(raw,
                               (const char *)t->data + (int64_t)pos * t->strides[0] * (int64_t)es,
                               es, cudaMemcpyDeviceToHost, s->stream),
               a);
    TG__CUDA_K(cudaStreamSynchronize(s->stream), a);
    int64_t y;
    if (t->dtype == TG_U8) {
        y = raw[0];
    } else if (t->dtype == TG_I32) {
        int32_t v;
        memcpy(&v, raw, sizeof v);
        y = v;
    } else {
        memcpy(&y, raw, sizeof y);
    }
    return tg__cuda_fail(a, TG_ERR_INVALID,
                         "cuda %s: target %" PRId64 " of row %" PRId64
                         " is out of range: expected a class in [0, %" PRId64 ")",
                         tg_op_name(a->op), y, (int64_t)pos, c);
}

/* Blocks of a row kernel: one per row, at most max. */
static unsigned ce_blocks(int64_t n, int64_t max) { return (unsigned)(n < max ? n : max); }

tg_status tg__cuda_cross_entropy(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *x = &a->in[0], *t = &a->in[1];
    if (x->dtype != a->out.dtype || (x->dtype != TG_F32 && x->dtype != TG_F64))
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda cross_entropy: logits must be f32 or f64");
    tg_status st = ce_check(s, a, x, t);
    if (st != TG_OK)
        return st;
    const int64_t n = x->shape[0], c = x->shape[1];
    const double eps = a->p->f[0];
    if (n == 0 || c == 0) {
        /* The mean of no rows, as in PyTorch and on the CPU. */
        if (x->dtype == TG_F32)
            k_set_nan_f32<<<1, 1, 0, s->stream>>>((float *)a->out.data);
        else
            k_set_nan_f64<<<1, 1, 0, s->stream>>>((double *)a->out.data);
        TG__CUDA_LAUNCHED(a);
        return TG_OK;
    }
    const unsigned nb = ce_blocks(n, TG__CUDA_SCRATCH);
    if (x->dtype == TG_F32) {
        k_ce_forward<float><<<nb, CE_THREADS, 0, s->stream>>>(
            n, c, (const float *)x->data, x->strides[0], x->strides[1], t->data, t->dtype,
            t->strides[0], eps, s->scratch);
        TG__CUDA_LAUNCHED(a);
        k_ce_finish<float>
            <<<1, CE_THREADS, 0, s->stream>>>((int)nb, s->scratch, n, (float *)a->out.data);
    } else {
        k_ce_forward<double><<<nb, CE_THREADS, 0, s->stream>>>(
            n, c, (const double *)x->data, x->strides[0], x->strides[1], t->data, t->dtype,
            t->strides[0], eps, s->scratch);
        TG__CUDA_LAUNCHED(a);
        k_ce_finish<double>
            <<<1, CE_THREADS, 0, s->stream>>>((int)nb, s->scratch, n, (double *)a->out.data);
    }
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

tg_status tg__cuda_cross_entropy_backward(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *g = &a->in[0], *x = &a->in[1], *t = &a->in[2];
    if (x->dtype != a->out.dtype || g->dtype != x->dtype ||
        (x->dtype != TG_F32 && x->dtype != TG_F64))
        return tg__cuda_fail(a, TG_ERR_DTYPE,
                             "cuda cross_entropy_backward: g and logits must share a float dtype");
    if (g->ndim != 0)
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda cross_entropy_backward: the incoming gradient must be a scalar");
    tg_status st = ce_check(s, a, x, t);
    if (st != TG_OK)
        return st;
    const int64_t n = x->shape[0], c = x->shape[1];
    const double eps = a->p->f[0];
    if (n == 0 || c == 0)
        return TG_OK;
    const unsigned nb = ce_blocks(n, TG__CUDA_MAX_BLOCKS);
    if (x->dtype == TG_F32)
        k_ce_backward<float><<<nb, CE_THREADS, 0, s->stream>>>(
            n, c, (const float *)g->data, (const float *)x->data, x->strides[0], x->strides[1],
            t->data, t->dtype, t->strides[0], eps, (float *)a->out.data);
    else
        k_ce_backward<double><<<nb, CE_THREADS, 0, s->stream>>>(
            n, c, (const double *)g->data, (const double *)x->data, x->strides[0], x->strides[1],
            t->data, t->dtype, t->strides[0], eps, (double *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* ---- dropout ---- */

/* Block b of the Philox stream decides elements 4b .. 4b+3. */
template <typename T>
__global__ static void k_dropout(int64_t nblk, int64_t n, uint64_t key, uint64_t counter, double p,
                                 T scale, const T *x, T *o) {
    TG__CUDA_FOR(b, nblk) {
        uint32_t w[4];
        cuda_philox4x32(key, counter + (uint64_t)b, w);
        for (int j = 0; j < 4 && 4 * b + j < n; j++) {
            const int64_t i = 4 * b + j;
            /* tg_u32_to_unit: exact in double. */
            const double u = (double)w[j] * (1.0 / 4294967296.0);
            o[i] = u >= p ? x[i] * scale : (T)0;
        }
    }
}

tg_status tg__cuda_dropout(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = tg__cuda_check_float(a, 1);
    if (st != TG_OK)
        return st;
    const tg_kview *x = &a->in[0];
    int64_t n = tg__kview_numel(x), sz = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        if (x->shape[d] != 1 && x->strides[d] != sz)
            return tg__cuda_fail(a, TG_ERR_INVALID, "cuda dropout: the input must be contiguous");
        sz *= x->shape[d];
    }
    if (n == 0)
        return TG_OK;
    const uint64_t key = (uint64_t)a->p->ints[0], counter = (uint64_t)a->p->ints[1];
    const double p = a->p->f[0];
    const int64_t nblk = (n + 3) / 4;
    const unsigned nb = tg__cuda_blocks(nblk);
    if (x->dtype == TG_F32)
        k_dropout<float>
            <<<nb, TG__CUDA_THREADS, 0, s->stream>>>(nblk, n, key, counter, p, (float)a->p->f[1],
                                                     (const float *)x->data, (float *)a->out.data);
    else
        k_dropout<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            nblk, n, key, counter, p, a->p->f[1], (const double *)x->data, (double *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}
