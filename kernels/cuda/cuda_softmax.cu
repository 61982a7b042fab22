/*
 * kernels/cuda/cuda_softmax.cu: softmax and log_softmax along one axis, and
 * the indexing pair gather / scatter_add (each other's gradient).
 *
 * Softmax: one thread per line along the axis, three passes (max, sum of
 * exponentials in double, write), the algorithm of the CPU kernel. A line
 * per thread is the simple choice that is right for the short lines of a
 * classifier; long lines would want a block per line.
 *
 * Indexing: one thread per index element. Every index is checked; a bad one
 * is recorded with atomicMin of its row-major position in a device word of
 * the context, so the report names the lowest bad position, as on the CPU,
 * whatever the scheduling. Reporting needs that word on the host, so these
 * two kernels wait for the stream before they return. scatter_add adds with
 * atomicAdd: sums into one output element happen in no fixed order, so f32
 * results agree with the CPU's to rounding, not bit for bit.
 */
#include <math.h>
#include <string.h>

#include "cuda.h"

/* "No bad index" in the device word. */
#define CUDA_NO_BAD 0xFFFFFFFFFFFFFFFFull

/* Element offset of line m of a view: m runs row-major over every dim but axis. */
__device__ __forceinline__ int64_t line_offset(const tg__cuda_geom &g, int axis, int64_t m) {
    int64_t off = 0;
    for (int d = g.ndim - 1; d >= 0; d--) {
        if (d == axis)
            continue;
        off += m % g.shape[d] * g.st[0][d];
        m /= g.shape[d];
    }
    return off;
}

__device__ __forceinline__ float sm_exp(float x) { return expf(x); }
__device__ __forceinline__ double sm_exp(double x) { return exp(x); }

/* ---- softmax, log_softmax ---- */

/* g: the input's shape and strides (operand 0). The output is contiguous:
 * line m starts at (m / inner) * n * inner + m % inner and steps by inner.
 * The max ignores NaN, but a NaN reaches the sum and so makes the whole line
 * NaN, as on the CPU. */
template <typename T, bool LOG>
__global__ void k_softmax(int64_t lines, tg__cuda_geom g, int axis, int64_t inner, const T *x,
                          T *o) {
    const int64_t n = g.shape[axis], sx = g.st[0][axis];
    TG__CUDA_FOR(m, lines) {
        const T *xl = x + line_offset(g, axis, m);
        T *ol = o + m / inner * n * inner + m % inner;
        T mx = -INFINITY;
        for (int64_t k = 0; k < n; k++) {
            const T v = xl[k * sx];
            mx = v > mx ? v : mx;
        }
        double sum = 0;
        for (int64_t k = 0; k < n; k++) {
            const T e = sm_exp(xl[k * sx] - mx);
            ol[k * inner] = e;
            sum += e;
        }
        if (LOG) {
            const T lse = (T)log(sum);
            for (int64_t k = 0; k < n; k++)
                ol[k * inner] = (xl[k * sx] - mx) - lse;
        } else {
            const T inv = (T)(1.0 / sum);
            for (int64_t k = 0; k < n; k++)
                ol[k * inner] *= inv;
        }
    }
}

template <bool LOG> static tg_status softmax_any(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = tg__cuda_check_float(a, 1);
    if (st != TG_OK)
        return st;
    const tg_kview *x = &a->in[0];
    const int axis = a->p->axis;
    if (axis < 0 || axis >= x->ndim || !tg__cuda_same_shape(x, &a->out))
        return tg__cuda_fail(a, TG_ERR_AXIS, "cuda %s: axis %d invalid for %d dims",
                             tg_op_name(a->op), axis, x->ndim);
    const int64_t numel = tg__kview_numel(x), n = x->shape[axis];
    if (numel == 0)
        return TG_OK;
    int64_t inner = 1;
    for (int d = axis + 1; d < x->ndim; d++)
        inner *= x->shape[d];
    const int64_t lines = numel / n;
    tg__cuda_geom g;
    tg__cuda_geom_init(&g, x->ndim, x->shape);
    tg__cuda_geom_add(&g, x->strides);
    const unsigned nb = tg__cuda_blocks(lines);
    if (x->dtype == TG_F32)
        k_softmax<float, LOG><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            lines, g, axis, inner, (const float *)x->data, (float *)a->out.data);
    else
        k_softmax<double, LOG><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            lines, g, axis, inner, (const double *)x->data, (double *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

tg_status tg__cuda_softmax(void *state, const tg_kargs *a) { return softmax_any<false>(state, a); }

tg_status tg__cuda_log_softmax(void *state, const tg_kargs *a) {
    return softmax_any<true>(state, a);
}

/* ---- index checking shared by gather and scatter_add ---- */

/* Shapes and dtypes common to both (the CPU's cpu_index_check): data with
 * idx's ndim, idx of an integer dtype, every dim of idx but axis no larger
 * than data's. */
static tg_status index_check(const tg_kargs *a, const tg_kview *data, const tg_kview *idx) {
    const int axis = a->p->axis;
    if (idx->dtype != TG_U8 && idx->dtype != TG_I32 && idx->dtype != TG_I64)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda %s: index must be u8, i32 or i64",
                             tg_op_name(a->op));
    if (data->ndim != idx->ndim || a->out.ndim != idx->ndim || idx->ndim < 1)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda %s: operands need the same ndim",
                             tg_op_name(a->op));
    if (axis < 0 || axis >= idx->ndim)
        return tg__cuda_fail(a, TG_ERR_AXIS, "cuda %s: axis %d invalid for %d dims",
                             tg_op_name(a->op), axis, idx->ndim);
    for (int d = 0; d < idx->ndim; d++) {
        if (d != axis && idx->shape[d] > data->shape[d])
            return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda %s: index dim %d exceeds the data's",
                                 tg_op_name(a->op), d);
    }
    return TG_OK;
}

static size_t index_esize(tg_dtype dt) { return dt == TG_U8 ? 1 : dt == TG_I32 ? 4 : 8; }

/*
 * Waits for the indexing kernel, reads the bad-index word and, when an index
 * was out of range, reads that index back and reports it with its position
 * in the index tensor, in the CPU kernel's words.
 */
static tg_status index_report(tg__cuda_state *s, const tg_kargs *a, const tg_kview *idx, int axis,
                              int64_t limit) {
    unsigned long long pos = CUDA_NO_BAD;
    TG__CUDA_K(cudaMemcpyAsync(&pos, s->bad, sizeof pos, cudaMemcpyDeviceToHost, s->stream), a);
    TG__CUDA_K(cudaStreamSynchronize(s->stream), a);
    if (pos == CUDA_NO_BAD)
        return TG_OK;
    int64_t coord[TG_MAX_DIMS], rest = (int64_t)pos, off = 0;
    for (int d = idx->ndim - 1; d >= 0; d--) {
        coord[d] = rest % idx->shape[d];
        rest /= idx->shape[d];
        off += coord[d] * idx->strides[d];
    }
    unsigned char raw[8] = {0};
    const size_t es = index_esize(idx->dtype);
    TG__CUDA_K(cudaMemcpyAsync(raw, (const char *)idx->data + off * (int64_t)es, es,
                               cudaMemcpyDeviceToHost, s->stream),
               a);
    TG__CUDA_K(cudaStreamSynchronize(s->stream), a);
    int64_t val;
    if (idx->dtype == TG_U8) {
        val = raw[0];
    } else if (idx->dtype == TG_I32) {
        int32_t v32;
        memcpy(&v32, raw, sizeof v32);
        val = v32;
    } else {
        memcpy(&val, raw, sizeof val);
    }
    char where[16 * TG_MAX_DIMS + 4];
    size_t len = 0;
    where[len++] = '(';
    for (int d = 0; d < idx->ndim && len < sizeof where; d++) {
        int w = snprintf(where + len, sizeof where - len, "%s%" PRId64, d ? ", " : "", coord[d]);
        len += w > 0 ? (size_t)w : 0;
    }
    if (len < sizeof where)
        snprintf(where + len, sizeof where - len, ")");
    where[sizeof where - 1] = '\0';
    return tg__cuda_fail(a, TG_ERR_INVALID,
                         "cuda %s: index %" PRId64 " at position %s is out of range [0, %" PRId64
                         ") along axis %d",
                         tg_op_name(a->op), val, where, limit, axis);
}

/* ---- gather ---- */

/* Walks the index's shape: st[0] holds the source's strides, st[1] the
 * index's; the output is contiguous in the index's shape. Elements are moved
 * by their size, so every dtype is served by three instantiations. */
template <typename T>
__global__ void k_gather(int64_t n, tg__cuda_geom g, int axis, int64_t lim, const T *x,
                         const void *idx, tg_dtype idt, T *o, unsigned long long *bad) {
    TG__CUDA_FOR(i, n) {
        int64_t rest = i, xo = 0, io = 0;
        for (int d = g.ndim - 1; d >= 0; d--) {
            const int64_t c = rest % g.shape[d];
            rest /= g.shape[d];
            io += c * g.st[1][d];
            if (d != axis)
                xo += c * g.st[0][d];
        }
        const int64_t v = tg__cuda_index_at(idx, idt, io);
        if (v < 0 || v >= lim) {
            atomicMin(bad, (unsigned long long)i);
            continue;
        }
        o[i] = x[xo + v * g.st[0][axis]];
    }
}

template <typename T>
static void gather_launch(tg__cuda_state *s, const tg_kargs *a, int64_t n, const tg__cuda_geom &g,
                          int axis, int64_t lim) {
    const tg_kview *x = &a->in[0], *idx = &a->in[1];
    k_gather<T><<<tg__cuda_blocks(n), TG__CUDA_THREADS, 0, s->stream>>>(
        n, g, axis, lim, (const T *)x->data, idx->data, idx->dtype, (T *)a->out.data, s->bad);
}

tg_status tg__cuda_gather(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *x = &a->in[0], *idx = &a->in[1];
    tg_status st = index_check(a, x, idx);
    if (st != TG_OK)
        return st;
    if (a->out.dtype != x->dtype)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda gather: output dtype differs from the source");
    if (!tg__cuda_same_shape(idx, &a->out))
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda gather: output shape differs from the index");
    const int axis = a->p->axis;
    const int64_t n = tg__kview_numel(idx), lim = x->shape[axis];
    if (n == 0)
        return TG_OK;
    tg__cuda_geom g;
    tg__cuda_geom_init(&g, idx->ndim, idx->shape);
    tg__cuda_geom_add(&g, x->strides);
    tg__cuda_geom_add(&g, idx->strides);
    TG__CUDA_K(cudaMemsetAsync(s->bad, 0xFF, sizeof *s->bad, s->stream), a);
    switch (x->dtype) {
    case TG_U8:
        gather_launch<uint8_t>(s, a, n, g, axis, lim);
        break;
    case TG_F32:
    case TG_I32:
        gather_launch<uint32_t>(s, a, n, g, axis, lim);
        break;
    default:
        gather_launch<uint64_t>(s, a, n, g, axis, lim);
        break;
    }
    TG__CUDA_LAUNCHED(a);
    return index_report(s, a, idx, axis, lim);
}

/* ---- scatter_add ---- */

/* Walks the index's shape: st[0] holds the contiguous output's strides,
 * st[1] the index's, st[2] the source's. */
template <typename T>
__global__ void k_scatter_add(int64_t n, tg__cuda_geom g, int axis, int64_t lim, T *o,
                              const void *idx, tg_dtype idt, const T *src,
                              unsigned long long *bad) {
    TG__CUDA_FOR(i, n) {
        int64_t off[3];
        tg__cuda_offsets<3>(g, i, off);
        /* off[0] is the output position with a zero coordinate along axis. */
        int64_t rest = i, c_axis = 0;
        for (int d = g.ndim - 1; d >= 0; d--) {
            if (d == axis)
                c_axis = rest % g.shape[d];
            rest /= g.shape[d];
        }
        const int64_t v = tg__cuda_index_at(idx, idt, off[1]);
        if (v < 0 || v >= lim) {
            atomicMin(bad, (unsigned long long)i);
            continue;
        }
        atomicAdd(&o[off[0] - c_axis * g.st[0][axis] + v * g.st[0][axis]], src[off[2]]);
    }
}

tg_status tg__cuda_scatter_add(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const tg_kview *src = &a->in[0], *idx = &a->in[1];
    tg_status st = tg__cuda_check_float(a, 1);
    if (st == TG_OK)
        st = index_check(a, &a->out, idx);
    if (st != TG_OK)
        return st;
    if (!tg__cuda_same_shape(src, idx))
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda scatter_add: src and index shapes differ");
    const int axis = a->p->axis;
    const int64_t n = tg__kview_numel(idx), lim = a->out.shape[axis];
    const size_t esize = a->out.dtype == TG_F32 ? 4 : 8;
    TG__CUDA_K(cudaMemsetAsync(a->out.data, 0, (size_t)tg__kview_numel(&a->out) * esize, s->stream),
               a);
    if (n == 0)
        return TG_OK;
    /* The output is contiguous; its strides serve the index's coordinates
     * because every index dim but axis is no larger than the output's. */
    int64_t ostrides[TG_MAX_DIMS];
    tg__contig_strides(a->out.ndim, a->out.shape, ostrides);
    tg__cuda_geom g;
    tg__cuda_geom_init(&g, idx->ndim, idx->shape);
    tg__cuda_geom_add(&g, ostrides);
    tg__cuda_geom_add(&g, idx->strides);
    tg__cuda_geom_add(&g, src->strides);
    TG__CUDA_K(cudaMemsetAsync(s->bad, 0xFF, sizeof *s->bad, s->stream), a);
    const unsigned nb = tg__cuda_blocks(n);
    if (a->out.dtype == TG_F32)
        k_scatter_add<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            n, g, axis, lim, (float *)a->out.data, idx->data, idx->dtype, (const float *)src->data,
            s->bad);
    else
        k_scatter_add<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(
            n, g, axis, lim, (double *)a->out.data, idx->data, idx->dtype,
            (const double *)src->data, s->bad);
    TG__CUDA_LAUNCHED(a);
    return index_report(s, a, idx, axis, lim);
}
