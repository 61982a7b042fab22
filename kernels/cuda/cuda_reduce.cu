/*
 * kernels/cuda/cuda_reduce.cu: sum, mean, max, min over a set of axes, and
 * argmax along one axis.
 *
 * The input's dims are split, as on the CPU, into kept dims (the output's,
 * in order) and reduced dims. Output m starts at the offset of its kept
 * coordinates; reduced position k (row-major over the reduced dims) adds the
 * offset of its reduced coordinates. Two kernels share that geometry:
 *   - one thread per output, walking its K reduced elements in order, when
 *     K is small;
 *   - one block per output otherwise: each thread takes every blockDim-th
 *     element, then the block combines the partial results in shared memory.
 * Sums accumulate in double for both dtypes, as on the CPU. In max and min a
 * NaN wins, as in PyTorch. The combining order differs from the CPU's, so
 * f32 sums agree with it to rounding, not bit for bit.
 */
#include <math.h>

#include "cuda.h"

/* Reductions over at least this many elements use a block per output. */
#define CUDA_RED_BLOCK_MIN 128
/* Threads of the block kernel; a power of two for the tree in shared memory. */
#define CUDA_RED_THREADS 256

enum cuda_red_kind {
    RED_SUM = 0,
    RED_MAX,
    RED_MIN
};

/* Kept and reduced dims with their input strides; both lists have at least
 * one dim (a size-1 stand-in when empty). */
typedef struct cuda_red {
    int nk, nr;
    int64_t kshape[TG_MAX_DIMS], kstride[TG_MAX_DIMS];
    int64_t rshape[TG_MAX_DIMS], rstride[TG_MAX_DIMS];
    int64_t M, K;
} cuda_red;

static void red_build(const tg_kview *x, uint32_t axes, cuda_red *r) {
    r->nk = r->nr = 0;
    r->M = r->K = 1;
    for (int d = 0; d < x->ndim; d++) {
        const bool reduced = (axes >> d) & 1u;
        if (reduced)
            r->K *= x->shape[d];
        else
            r->M *= x->shape[d];
        if (x->shape[d] == 1)
            continue;
        if (reduced) {
            r->rshape[r->nr] = x->shape[d];
            r->rstride[r->nr++] = x->strides[d];
        } else {
            r->kshape[r->nk] = x->shape[d];
            r->kstride[r->nk++] = x->strides[d];
        }
    }
    if (r->nk == 0) {
        r->kshape[0] = 1;
        r->kstride[0] = 0;
        r->nk = 1;
    }
    if (r->nr == 0) {
        r->rshape[0] = 1;
        r->rstride[0] = 0;
        r->nr = 1;
    }
}

/* Offset of position idx (row-major) of a dim list. */
__device__ __forceinline__ int64_t red_offset(int n, const int64_t *shape, const int64_t *stride,
                                              int64_t idx) {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; d--) {
        off += idx % shape[d] * stride[d];
        idx /= shape[d];
    }
    return off;
}

/* NaN-absorbing combines: once acc is NaN neither comparison replaces it,
 * and a NaN v always replaces acc. */
template <int KIND> __device__ __forceinline__ double red_combine(double acc, double v) {
    if (KIND == RED_SUM)
        return acc + v;
    if (KIND == RED_MAX)
        return (v > acc || v != v) ? v : acc;
    return (v < acc || v != v) ? v : acc;
}

template <int KIND> __device__ __forceinline__ double red_init() {
    return KIND == RED_SUM ? 0.0 : KIND == RED_MAX ? -INFINITY : INFINITY;
}

template <typename T, int KIND>
__global__ void k_reduce_thread(cuda_red r, const T *x, T *out, bool mean) {
    TG__CUDA_FOR(m, r.M) {
        const T *base = x + red_offset(r.nk, r.kshape, r.kstride, m);
        double acc = red_init<KIND>();
        for (int64_t k = 0; k < r.K; k++)
            acc = red_combine<KIND>(acc, (double)base[red_offset(r.nr, r.rshape, r.rstride, k)]);
        out[m] = (T)(mean ? acc / (double)r.K : acc);
    }
}

template <typename T, int KIND>
__global__ void k_reduce_block(cuda_red r, const T *x, T *out, bool mean) {
    __shared__ double part[CUDA_RED_THREADS];
    for (int64_t m = blockIdx.x; m < r.M; m += gridDim.x) {
        const T *base = x + red_offset(r.nk, r.kshape, r.kstride, m);
        double acc = red_init<KIND>();
        for (int64_t k = threadIdx.x; k < r.K; k += blockDim.x)
            acc = red_combine<KIND>(acc, (double)base[red_offset(r.nr, r.rshape, r.rstride, k)]);
        part[threadIdx.x] = acc;
        __syncthreads();
        for (unsigned w = blockDim.x / 2; w > 0; w /= 2) {
            if (threadIdx.x < w)
                part[threadIdx.x] = red_combine<KIND>(part[threadIdx.x], part[threadIdx.x + w]);
            __syncthreads();
        }
        if (threadIdx.x == 0)
            out[m] = (T)(mean ? part[0] / (double)r.K : part[0]);
        /* part[0] is read above before the next output overwrites part[]. */
        __syncthreads();
    }
}

template <typename T, int KIND>
static void red_launch(tg__cuda_state *s, const cuda_red &r, const void *x, void *out, bool mean) {
    if (r.K >= CUDA_RED_BLOCK_MIN) {
        const unsigned nb = (unsigned)(r.M < TG__CUDA_MAX_BLOCKS ? r.M : TG__CUDA_MAX_BLOCKS);
        k_reduce_block<T, KIND>
            <<<nb, CUDA_RED_THREADS, 0, s->stream>>>(r, (const T *)x, (T *)out, mean);
    } else {
        k_reduce_thread<T, KIND><<<tg__cuda_blocks(r.M), TG__CUDA_THREADS, 0, s->stream>>>(
            r, (const T *)x, (T *)out, mean);
    }
}

/* An empty sum is 0 and an empty mean 0 / 0, as on the CPU. */
template <typename T> __global__ void k_red_empty(int64_t n, T *out, T v) {
    TG__CUDA_FOR(i, n) out[i] = v;
}

static tg_status cuda_reduce(void *state, const tg_kargs *a, int kind, bool mean) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = tg__cuda_check_float(a, 1);
    if (st != TG_OK)
        return st;
    const tg_kview *x = &a->in[0];
    const uint32_t axes = a->p->axes;
    if (x->ndim < 32 && (axes >> x->ndim) != 0)
        return tg__cuda_fail(a, TG_ERR_AXIS, "cuda %s: axes mask 0x%x names dims beyond %d",
                             tg_op_name(a->op), (unsigned)axes, x->ndim);
    cuda_red r;
    red_build(x, axes, &r);
    if (r.M != tg__kview_numel(&a->out))
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda %s: output has %" PRId64 " elements, expected %" PRId64,
                             tg_op_name(a->op), tg__kview_numel(&a->out), r.M);
    if (r.M == 0)
        return TG_OK;
    const bool f32 = a->out.dtype == TG_F32;
    if (r.K == 0) {
        if (kind != RED_SUM)
            return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda %s: reduction over an empty dim",
                                 tg_op_name(a->op));
        const double v = mean ? NAN : 0.0;
        if (f32)
            k_red_empty<float><<<tg__cuda_blocks(r.M), TG__CUDA_THREADS, 0, s->stream>>>(
                r.M, (float *)a->out.data, (float)v);
        else
            k_red_empty<double><<<tg__cuda_blocks(r.M), TG__CUDA_THREADS, 0, s->stream>>>(
                r.M, (double *)a->out.data, v);
        TG__CUDA_LAUNCHED(a);
        return TG_OK;
    }
    switch (kind) {
    case RED_SUM:
        f32 ? red_launch<float, RED_SUM>(s, r, x->data, a->out.data, mean)
            : red_launch<double, RED_SUM>(s, r, x->data, a->out.data, mean);
        break;
    case RED_MAX:
        f32 ? red_launch<float, RED_MAX>(s, r, x->data, a->out.data, false)
            : red_launch<double, RED_MAX>(s, r, x->data, a->out.data, false);
        break;
    default:
        f32 ? red_launch<float, RED_MIN>(s, r, x->data, a->out.data, false)
            : red_launch<double, RED_MIN>(s, r, x->data, a->out.data, false);
        break;
    }
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

tg_status tg__cuda_sum(void *state, const tg_kargs *a) {
    if (a->in[0].dtype == TG_U8 || a->in[0].dtype == TG_I32 || a->in[0].dtype == TG_I64)
        return tg__cuda_sum_int(state, a);
    return cuda_reduce(state, a, RED_SUM, false);
}

tg_status tg__cuda_mean(void *state, const tg_kargs *a) {
    return cuda_reduce(state, a, RED_SUM, true);
}

tg_status tg__cuda_max(void *state, const tg_kargs *a) {
    return cuda_reduce(state, a, RED_MAX, false);
}

tg_status tg__cuda_min(void *state, const tg_kargs *a) {
    return cuda_reduce(state, a, RED_MIN, false);
}

/* ---- argmax ---- */

/* Index of the first maximum along the line; the first NaN counts as the
 * maximum, as on the CPU. */
template <typename T>
__global__ void k_argmax(cuda_red r, int64_t n, int64_t stride, const T *x, int64_t *out) {
    TG__CUDA_FOR(m, r.M) {
        const T *line = x + red_offset(r.nk, r.kshape, r.kstride, m);
        T best = line[0];
        int64_t at = 0;
        if (best == best) {
            for (int64_t k = 1; k < n; k++) {
                const T v = line[k * stride];
                if (v > best) {
                    best = v;
                    at = k;
                } else if (v != v) {
                    at = k;
                    break;
                }
            }
        }
        out[m] = at;
    }
}

tg_status tg__cuda_argmax(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *x = &a->in[0];
    if (x->dtype != TG_F32 && x->dtype != TG_F64)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda argmax: input must be f32 or f64");
    if (a->out.dtype != TG_I64)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda argmax: output must be i64");
    const int axis = a->p->axis;
    if (axis < 0 || axis >= x->ndim)
        return tg__cuda_fail(a, TG_ERR_AXIS, "cuda argmax: axis %d invalid for %d dims", axis,
                             x->ndim);
    cuda_red r;
    red_build(x, 1u << axis, &r);
    if (r.M != tg__kview_numel(&a->out))
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda argmax: output has the wrong size");
    if (r.M == 0)
        return TG_OK;
    if (r.K == 0)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda argmax: reduction over an empty dim");
    const unsigned nb = tg__cuda_blocks(r.M);
    if (x->dtype == TG_F32)
        k_argmax<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            r, r.K, x->strides[axis], (const float *)x->data, (int64_t *)a->out.data);
    else
        k_argmax<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            r, r.K, x->strides[axis], (const double *)x->data, (int64_t *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}
