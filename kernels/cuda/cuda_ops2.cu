/*
 * kernels/cuda/cuda_ops2.cu: dtype casts, cumsum, the indices of topk and
 * the integer sum, with the rules of kernels/cpu/cpu_ops2.c: cumsum adds in
 * line order (from the end when reversed), topk runs the same passes over
 * the same total order (value, then lower index first; NaN largest), so
 * both backends give the same results.
 */
#include <cuda_bf16.h>

#include "cuda.h"

/* Offset of row-major element i of (ndim, shape) in a view with strides. */
__device__ __forceinline__ int64_t k_offset(int ndim, const int64_t *shape, const int64_t *strides,
                                            int64_t i) {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; d--) {
        off += (i % shape[d]) * strides[d];
        i /= shape[d];
    }
    return off;
}

/* A view's geometry, passed by value. */
typedef struct k_geom {
    int ndim;
    int64_t shape[TG_MAX_DIMS], strides[TG_MAX_DIMS];
} k_geom;

static k_geom geom_of(const tg_kview *v) {
    k_geom g;
    g.ndim = v->ndim;
    for (int d = 0; d < v->ndim; d++) {
        g.shape[d] = v->shape[d];
        g.strides[d] = v->strides[d];
    }
    return g;
}

/* ---- cast ---- */

template <typename O, typename I> __global__ void k_cast(int64_t n, k_geom gx, O *o, const I *x) {
    TG__CUDA_FOR(i, n) o[i] = (O)x[k_offset(gx.ndim, gx.shape, gx.strides, i)];
}

/* bf16 goes through f32 both ways, as on the CPU: to bf16 rounds the f32
 * value to nearest even (an f64 is rounded to f32 first). */
template <typename O>
__global__ void k_cast_from_bf16(int64_t n, k_geom gx, O *o, const __nv_bfloat16 *x) {
    TG__CUDA_FOR(i, n) o[i] = (O)__bfloat162float(x[k_offset(gx.ndim, gx.shape, gx.strides, i)]);
}
template <typename I>
__global__ void k_cast_to_bf16(int64_t n, k_geom gx, __nv_bfloat16 *o, const I *x) {
    TG__CUDA_FOR(i, n) o[i] = __float2bfloat16_rn((float)x[k_offset(gx.ndim, gx.shape, gx.strides, i)]);
}

static void cast_to_bf16(tg__cuda_state *s, const tg_kargs *a, int64_t n, const k_geom &gx) {
    const unsigned nb = tg__cuda_blocks(n);
    __nv_bfloat16 *o = (__nv_bfloat16 *)a->out.data;
    const void *x = a->in[0].data;
    switch (a->in[0].dtype) {
    case TG_F32:
        k_cast_to_bf16<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const float *)x);
        break;
    case TG_F64:
        k_cast_to_bf16<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const double *)x);
        break;
    case TG_U8:
        k_cast_to_bf16<uint8_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const uint8_t *)x);
        break;
    case TG_I32:
        k_cast_to_bf16<int32_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const int32_t *)x);
        break;
    case TG_I64:
        k_cast_to_bf16<int64_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const int64_t *)x);
        break;
    default:
        k_cast<uint16_t, uint16_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            n, gx, (uint16_t *)o, (const uint16_t *)x);
        break;
    }
}

template <typename O>
static void cast_from(tg__cuda_state *s, const tg_kargs *a, int64_t n, const k_geom &gx) {
    const unsigned nb = tg__cuda_blocks(n);
    O *o = (O *)a->out.data;
    const void *x = a->in[0].data;
    switch (a->in[0].dtype) {
    case TG_F32:
        k_cast<O, float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const float *)x);
        break;
    case TG_F64:
        k_cast<O, double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const double *)x);
        break;
    case TG_U8:
        k_cast<O, uint8_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const uint8_t *)x);
        break;
    case TG_I32:
        k_cast<O, int32_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const int32_t *)x);
        break;
    case TG_BF16:
        k_cast_from_bf16<O><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o,
                                                                   (const __nv_bfloat16 *)x);
        break;
    default:
        k_cast<O, int64_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, gx, o, (const int64_t *)x);
        break;
    }
}

tg_status tg__cuda_cast(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *x = &a->in[0];
    if ((unsigned)a->out.dtype >= TG_DTYPE_COUNT || (unsigned)x->dtype >= TG_DTYPE_COUNT)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda cast: unknown dtype");
    if (!tg__cuda_same_shape(x, &a->out))
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda cast: input and output shapes differ");
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    const k_geom gx = geom_of(x);
    switch (a->out.dtype) {
    case TG_F32:
        cast_from<float>(s, a, n, gx);
        break;
    case TG_F64:
        cast_from<double>(s, a, n, gx);
        break;
    case TG_U8:
        cast_from<uint8_t>(s, a, n, gx);
        break;
    case TG_I32:
        cast_from<int32_t>(s, a, n, gx);
        break;
    case TG_BF16:
        cast_to_bf16(s, a, n, gx);
        break;
    default:
        cast_from<int64_t>(s, a, n, gx);
        break;
    }
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* ---- lines along one axis: one thread per line ---- */

typedef struct k_lines {
    int64_t count, len, xstep, ostep;
    k_geom x, o; /* the other dims of the input and the output */
} k_lines;

static k_lines lines_of(const tg_kview *x, const tg_kview *o, int axis) {
    k_lines L;
    L.len = x->shape[axis];
    L.xstep = x->strides[axis];
    L.ostep = o->strides[axis];
    L.count = 1;
    L.x.ndim = L.o.ndim = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (d == axis)
            continue;
        L.x.shape[L.x.ndim] = x->shape[d];
        L.x.strides[L.x.ndim++] = x->strides[d];
        L.o.shape[L.o.ndim] = o->shape[d];
        L.o.strides[L.o.ndim++] = o->strides[d];
        L.count *= x->shape[d];
    }
    return L;
}

template <typename T> __global__ void k_cumsum(k_lines L, const T *x, T *o, bool reverse) {
    TG__CUDA_FOR(j, L.count) {
        const T *xl = x + k_offset(L.x.ndim, L.x.shape, L.x.strides, j);
        T *ol = o + k_offset(L.o.ndim, L.o.shape, L.o.strides, j);
        T acc = 0;
        for (int64_t k = 0; k < L.len; k++) {
            const int64_t i = reverse ? L.len - 1 - k : k;
            acc += xl[i * L.xstep];
            ol[i * L.ostep] = acc;
        }
    }
}

tg_status tg__cuda_cumsum(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = tg__cuda_check_float(a, 1);
    if (st != TG_OK)
        return st;
    const int axis = a->p->axis;
    if (axis < 0 || axis >= a->out.ndim || a->in[0].ndim != a->out.ndim)
        return tg__cuda_fail(a, TG_ERR_AXIS, "cuda cumsum: axis %d out of range", axis);
    if (tg__kview_numel(&a->out) == 0)
        return TG_OK;
    const k_lines L = lines_of(&a->in[0], &a->out, axis);
    const bool reverse = a->p->ints[0] != 0;
    const unsigned nb = tg__cuda_blocks(L.count);
    if (a->out.dtype == TG_F32)
        k_cumsum<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(L, (const float *)a->in[0].data,
                                                                (float *)a->out.data, reverse);
    else
        k_cumsum<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(L, (const double *)a->in[0].data,
                                                                 (double *)a->out.data, reverse);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* ---- topk indices ---- */

__device__ __forceinline__ bool k_topk_before(double v, int64_t i, double w, int64_t j,
                                              bool largest) {
    const bool vn = isnan(v), wn = isnan(w);
    if (vn != wn)
        return largest ? vn : wn;
    if (!vn && v != w)
        return largest ? v > w : v < w;
    return i < j;
}

template <typename T>
__global__ void k_topk(k_lines L, const T *x, int64_t *o, int64_t k, bool largest) {
    TG__CUDA_FOR(j, L.count) {
        const T *xl = x + k_offset(L.x.ndim, L.x.shape, L.x.strides, j);
        int64_t *ol = o + k_offset(L.o.ndim, L.o.shape, L.o.strides, j);
        int64_t prev = -1;
        for (int64_t r = 0; r < k; r++) {
            int64_t best = -1;
            for (int64_t i = 0; i < L.len; i++) {
                const double v = (double)xl[i * L.xstep];
                if (prev >= 0 && !k_topk_before((double)xl[prev * L.xstep], prev, v, i, largest))
                    continue;
                if (best < 0 || k_topk_before(v, i, (double)xl[best * L.xstep], best, largest))
                    best = i;
            }
            ol[r * L.ostep] = best;
            prev = best;
        }
    }
}

tg_status tg__cuda_topk_indices(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *x = &a->in[0];
    if (x->dtype != TG_F32 && x->dtype != TG_F64)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda topk_indices: input is not a float dtype");
    if (a->out.dtype != TG_I64)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda topk_indices: output must be i64");
    const int axis = a->p->axis;
    const int64_t k = a->p->ints[0];
    const bool largest = a->p->ints[1] != 0;
    if (axis < 0 || axis >= x->ndim || k < 0 || k > x->shape[axis] || a->out.shape[axis] != k)
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda topk_indices: k = %" PRId64 " does not fit axis %d", k, axis);
    if (tg__kview_numel(&a->out) == 0)
        return TG_OK;
    const k_lines L = lines_of(x, &a->out, axis);
    const unsigned nb = tg__cuda_blocks(L.count);
    if (x->dtype == TG_F32)
        k_topk<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(L, (const float *)x->data,
                                                              (int64_t *)a->out.data, k, largest);
    else
        k_topk<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(L, (const double *)x->data,
                                                               (int64_t *)a->out.data, k, largest);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* ---- integer sum: one thread per output element ---- */

/* kept: the kept dims of x (the output's order); red: the reduced ones. */
__global__ void k_sum_int(int64_t m, int64_t kred, k_geom kept, k_geom red, const void *x,
                          tg_dtype dt, int64_t *o) {
    TG__CUDA_FOR(i, m) {
        const int64_t base = k_offset(kept.ndim, kept.shape, kept.strides, i);
        uint64_t acc = 0;
        for (int64_t r = 0; r < kred; r++)
            acc += (uint64_t)tg__cuda_index_at(
                x, dt, base + k_offset(red.ndim, red.shape, red.strides, r));
        o[i] = (int64_t)acc;
    }
}

tg_status tg__cuda_sum_int(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *x = &a->in[0];
    if (a->out.dtype != TG_I64)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda sum: an integer sum's output must be i64");
    const uint32_t axes = a->p->axes;
    k_geom kept, red;
    kept.ndim = red.ndim = 0;
    int64_t kred = 1;
    for (int d = 0; d < x->ndim; d++) {
        k_geom *g = (axes & (1u << d)) ? &red : &kept;
        g->shape[g->ndim] = x->shape[d];
        g->strides[g->ndim++] = x->strides[d];
        if (axes & (1u << d))
            kred *= x->shape[d];
    }
    const int64_t m = tg__kview_numel(&a->out);
    if (m == 0)
        return TG_OK;
    k_sum_int<<<tg__cuda_blocks(m), TG__CUDA_THREADS, 0, s->stream>>>(
        m, kred, kept, red, x->data, x->dtype, (int64_t *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}
