/*
 * kernels/cuda/cuda_attn.cu: fused scaled dot-product attention, forward and
 * backward, the CUDA version of kernels/cpu/cpu_attn.c (the same rows, the
 * same operands and the same formulas; see there).
 *
 * A straightforward scheme, correctness first: one warp per output row, the
 * lanes splitting the head dim D, a warp shuffle for each dot product. The
 * forward walks the row's keys with the online softmax and keeps its
 * accumulator in shared memory (D values per warp); the dq kernel (a warp
 * per query row) and the dk/dv kernel (a warp per key row) recompute each
 * probability from the saved log-sum-exp. Every output element is written by
 * one lane and summed in one order, so results depend only on the data; no
 * atomics and no (T_q, T_k) buffer.
 *
 * Under autocast (ints[TG_KP_ATTN_BF16], f32 operands) the kernels follow
 * cpu_attn_bf16.c's rounding: q, k, v and dO are rounded to bf16 (nearest
 * even) as they are loaded, and so are P before P V and dV, and dS before
 * dQ and dK; products of two bf16 are exact in f32 and every sum is f32;
 * the softmax, D = dO . o and the outputs stay f32.
 */
#include <cuda_bf16.h>
#include <math.h>

#include "cuda.h"

/* Warps (rows) per block. */
#define ATT_WARPS 4
/* The largest head dim: the dk/dv kernel keeps 2 * D values per warp in
 * shared memory, within the 48 KiB every device gives a block. */
#define ATT_MAX_D 512

__device__ __forceinline__ float att_exp(float x) { return expf(x); }
__device__ __forceinline__ double att_exp(double x) { return exp(x); }

/* x rounded to bf16 when bf (f32 only; f64 is never rounded). */
__device__ __forceinline__ float att_r(float x, int bf) {
    return bf ? __bfloat162float(__float2bfloat16_rn(x)) : x;
}
__device__ __forceinline__ double att_r(double x, int bf) { return (void)bf, x; }

template <typename T> __device__ __forceinline__ T att_wsum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The warp's dot product of two D-vectors, a rounded when ba, b when bb. */
template <typename T>
__device__ __forceinline__ T att_dot(const T *a, const T *b, int64_t d, int ba, int bb) {
    T s = 0;
    for (int64_t c = threadIdx.x; c < d; c += 32)
        s += att_r(a[c], ba) * att_r(b[c], bb);
    return att_wsum(s);
}

/* Keys query i attends to: all, or j <= i when causal. */
__device__ __forceinline__ int64_t att_nkeys(int64_t i, int64_t tk, int causal) {
    return causal && i + 1 < tk ? i + 1 : tk;
}

template <typename T>
__global__ static void k_attn_fwd(int64_t rows, int64_t tq, int64_t tk, int64_t d, T scale,
                                  int causal, int bf, const T *q, const T *k, const T *v, T *o,
                                  T *lse) {
    extern __shared__ __align__(16) unsigned char att_sh[];
    const int64_t row = (int64_t)blockIdx.x * ATT_WARPS + threadIdx.y;
    if (row >= rows)
        return;
    T *acc = (T *)att_sh + threadIdx.y * d;
    const int64_t b = row / tq, i = row % tq, nk = att_nkeys(i, tk, causal);
    const T *qi = q + row * d, *kb = k + b * tk * d, *vb = v + b * tk * d;
    for (int64_t c = threadIdx.x; c < d; c += 32)
        acc[c] = 0;
    T m = -INFINITY, l = 0;
    for (int64_t j = 0; j < nk; j++) {
        const T s = att_dot(qi, kb + j * d, d, bf, bf) * scale;
        const T mn = s > m ? s : m;
        /* exp(-inf) = 0 drops the empty accumulator at the first key */
        const T alpha = att_exp(m - mn), p = att_exp(s - mn);
        l = l * alpha + p;
        for (int64_t c = threadIdx.x; c < d; c += 32)
            acc[c] = acc[c] * alpha + att_r(p, bf) * att_r(vb[j * d + c], bf);
        m = mn;
    }
    for (int64_t c = threadIdx.x; c < d; c += 32)
        o[row * d + c] = acc[c] / l;
    if (threadIdx.x == 0)
        lse[row] = m + log(l);
}

template <typename T>
__global__ static void k_attn_dq(int64_t rows, int64_t tq, int64_t tk, int64_t d, T scale,
                                 int causal, int bf, const T *g, const T *q, const T *k,
                                 const T *v, const T *o, const T *lse, T *dq) {
    extern __shared__ __align__(16) unsigned char att_sh[];
    const int64_t row = (int64_t)blockIdx.x * ATT_WARPS + threadIdx.y;
    if (row >= rows)
        return;
    T *acc = (T *)att_sh + threadIdx.y * d;
    const int64_t b = row / tq, i = row % tq, nk = att_nkeys(i, tk, causal);
    const T *qi = q + row * d, *gi = g + row * d, *kb = k + b * tk * d, *vb = v + b * tk * d;
    const T di = att_dot(gi, o + row * d, d, bf, 0), li = lse[row];
    for (int64_t c = threadIdx.x; c < d; c += 32)
        acc[c] = 0;
    for (int64_t j = 0; j < nk; j++) {
        const T p = att_exp(att_dot(qi, kb + j * d, d, bf, bf) * scale - li);
        const T ds = att_r(p * (att_dot(gi, vb + j * d, d, bf, bf) - di) * scale, bf);
        for (int64_t c = threadIdx.x; c < d; c += 32)
            acc[c] += ds * att_r(kb[j * d + c], bf);
    }
    for (int64_t c = threadIdx.x; c < d; c += 32)
        dq[row * d + c] = acc[c];
}

template <typename T>
__global__ static void k_attn_dkv(int64_t rows, int64_t tq, int64_t tk, int64_t d, T scale,
                                  int causal, int bf, const T *g, const T *q, const T *k,
                                  const T *v, const T *o, const T *lse, T *dk, T *dv) {
    extern __shared__ __align__(16) unsigned char att_sh[];
    const int64_t row = (int64_t)blockIdx.x * ATT_WARPS + threadIdx.y;
    if (row >= rows)
        return;
    T *ak = (T *)att_sh + threadIdx.y * 2 * d, *av = ak + d;
    const int64_t b = row / tk, j = row % tk;
    const T *kj = k + row * d, *vj = v + row * d;
    for (int64_t c = threadIdx.x; c < d; c += 32)
        ak[c] = av[c] = 0;
    for (int64_t i = causal ? j : 0; i < tq; i++) {
        const int64_t r = b * tq + i;
        const T *qi = q + r * d, *gi = g + r * d;
        const T p = att_exp(att_dot(qi, kj, d, bf, bf) * scale - lse[r]);
        const T ds = att_r(
            p * (att_dot(gi, vj, d, bf, bf) - att_dot(gi, o + r * d, d, bf, 0)) * scale, bf);
        const T pr = att_r(p, bf);
        for (int64_t c = threadIdx.x; c < d; c += 32) {
            av[c] += pr * att_r(gi[c], bf);
            ak[c] += ds * att_r(qi[c], bf);
        }
    }
    for (int64_t c = threadIdx.x; c < d; c += 32) {
        dk[row * d + c] = ak[c];
        dv[row * d + c] = av[c];
    }
}

typedef struct att_geom {
    int64_t bh, tq, tk, d;
} att_geom;

static bool att_is(const tg_kview *v, int ndim, const int64_t *shape) {
    if (v->ndim != ndim || !tg__kview_contig(v))
        return false;
    for (int i = 0; i < ndim; i++)
        if (v->shape[i] != shape[i])
            return false;
    return true;
}

/* As cpu_attn.c's attn_geom_of: q in[iq], k in[iq + 1], v in[iq + 2], lse
 * in[ilse], out like q, all contiguous; D at most ATT_MAX_D. */
static tg_status att_geom_of(const tg_kargs *a, int iq, int ilse, att_geom *g) {
    const tg_kview *q = &a->in[iq], *k = &a->in[iq + 1];
    const int n = q->ndim;
    bool ok = n >= 3 && k->ndim == n && att_is(q, n, q->shape) && att_is(k, n, k->shape) &&
              att_is(&a->in[iq + 2], n, k->shape) && att_is(&a->out, n, q->shape) &&
              att_is(&a->in[ilse], n - 1, q->shape) && k->shape[n - 1] == q->shape[n - 1];
    g->bh = 1;
    for (int i = 0; ok && i < n - 2; i++) {
        ok = k->shape[i] == q->shape[i];
        g->bh *= q->shape[i];
    }
    if (!ok)
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda %s: operands must be contiguous (..., T_q, D) and (..., T_k, "
                             "D) with the same leading dims",
                             tg_op_name(a->op));
    g->tq = q->shape[n - 2];
    g->tk = k->shape[n - 2];
    g->d = q->shape[n - 1];
    if (g->d > ATT_MAX_D)
        return tg__cuda_fail(a, TG_ERR_UNSUPPORTED,
                             "cuda %s: head dim %lld is larger than the %d this kernel supports",
                             tg_op_name(a->op), (long long)g->d, ATT_MAX_D);
    if ((g->bh * (g->tq > g->tk ? g->tq : g->tk) + ATT_WARPS - 1) / ATT_WARPS > 2147483647LL)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda %s: too many rows for one launch",
                             tg_op_name(a->op));
    return TG_OK;
}

static unsigned att_blocks(int64_t rows) { return (unsigned)((rows + ATT_WARPS - 1) / ATT_WARPS); }

template <typename T>
static void att_fwd(cudaStream_t st, const att_geom *g, double scale, int causal, int bf,
                    const tg_kargs *a) {
    const int64_t rows = g->bh * g->tq;
    const size_t sh = (size_t)ATT_WARPS * (size_t)g->d * sizeof(T);
    k_attn_fwd<T><<<att_blocks(rows), dim3(32, ATT_WARPS), sh, st>>>(
        rows, g->tq, g->tk, g->d, (T)scale, causal, bf, (const T *)a->in[0].data,
        (const T *)a->in[1].data, (const T *)a->in[2].data, (T *)a->out.data, (T *)a->in[3].data);
}

template <typename T>
static tg_status att_bwd(cudaStream_t st, const att_geom *g, double scale, int causal, int bf,
                         const tg_kargs *a) {
    const T *in[6];
    for (int i = 0; i < 6; i++)
        in[i] = (const T *)a->in[i].data;
    const int64_t qrows = g->bh * g->tq, krows = g->bh * g->tk;
    const size_t sh = (size_t)ATT_WARPS * (size_t)g->d * sizeof(T);
    k_attn_dq<T><<<att_blocks(qrows), dim3(32, ATT_WARPS), sh, st>>>(
        qrows, g->tq, g->tk, g->d, (T)scale, causal, bf, in[0], in[1], in[2], in[3], in[4], in[5],
        (T *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    k_attn_dkv<T><<<att_blocks(krows), dim3(32, ATT_WARPS), 2 * sh, st>>>(
        krows, g->tq, g->tk, g->d, (T)scale, causal, bf, in[0], in[1], in[2], in[3], in[4], in[5],
        (T *)a->in[6].data, (T *)a->in[7].data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* in: q, k, v, lse (written); out: o. */
tg_status tg__cuda_scaled_dot_product_attention(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    att_geom g = {0, 0, 0, 0};
    tg_status st = tg__cuda_check_float(a, 4);
    if (st == TG_OK)
        st = att_geom_of(a, 0, 3, &g);
    if (st != TG_OK)
        return st;
    const int causal = a->p->ints[0] != 0, bf = tg_kparams_bf16(a->p, TG_KP_ATTN_BF16);
    if (a->out.dtype == TG_F32)
        att_fwd<float>(s->stream, &g, a->p->f[0], causal, bf, a);
    else
        att_fwd<double>(s->stream, &g, a->p->f[0], causal, 0, a);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* in: g, q, k, v, o, lse, dk (written), dv (written); out: dq. */
tg_status tg__cuda_scaled_dot_product_attention_backward(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    att_geom g = {0, 0, 0, 0};
    tg_status st = tg__cuda_check_float(a, 8);
    if (st == TG_OK)
        st = att_geom_of(a, 1, 5, &g);
    if (st != TG_OK)
        return st;
    const tg_kview *q = &a->in[1], *k = &a->in[2];
    if (!att_is(&a->in[0], q->ndim, q->shape) || !att_is(&a->in[4], q->ndim, q->shape) ||
        !att_is(&a->in[6], k->ndim, k->shape) || !att_is(&a->in[7], k->ndim, k->shape))
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda %s: g and o must be like q, dk and dv like k, all contiguous",
                             tg_op_name(a->op));
    const int causal = a->p->ints[0] != 0, bf = tg_kparams_bf16(a->p, TG_KP_ATTN_BF16);
    if (a->out.dtype == TG_F32)
        return att_bwd<float>(s->stream, &g, a->p->f[0], causal, bf, a);
    return att_bwd<double>(s->stream, &g, a->p->f[0], causal, 0, a);
}
