/*
 * kernels/cuda/cuda_shape.cu: copies that move elements without changing
 * them: copy, reshape, slice_scatter and concat.
 *
 * All four are one strided copy from a source view into a destination view
 * of the same shape, so they work for every dtype by element size (1, 2, 4
 * or 8 bytes) and share one kernel. Their backward rules are the same copies
 * the other way round (slice_scatter is slice's gradient, slices of the
 * gradient are concat's), so this file holds both directions.
 */
#include "cuda.h"

template <typename T> __global__ void k_copy(int64_t n, tg__cuda_geom g, T *dst, const T *src) {
    TG__CUDA_FOR(i, n) {
        int64_t off[2];
        tg__cuda_offsets<2>(g, i, off);
        dst[off[0]] = src[off[1]];
    }
}

static size_t shape_esize(tg_dtype dt) {
    switch (dt) {
    case TG_U8:
        return 1;
    case TG_BF16:
        return 2;
    case TG_F32:
    case TG_I32:
        return 4;
    case TG_F64:
    case TG_I64:
        return 8;
    default:
        return 0;
    }
}

/* Copies src into dst, a view with src's shape and strides dst_strides. */
static tg_status copy_view(tg__cuda_state *s, const tg_kargs *a, void *dst,
                           const int64_t *dst_strides, const tg_kview *src) {
    const int64_t n = tg__kview_numel(src);
    if (n == 0)
        return TG_OK;
    tg__cuda_geom g;
    tg__cuda_geom_init(&g, src->ndim, src->shape);
    tg__cuda_geom_add(&g, dst_strides);
    tg__cuda_geom_add(&g, src->strides);
    tg__cuda_geom_collapse(&g);
    const unsigned nb = tg__cuda_blocks(n);
    switch (shape_esize(src->dtype)) {
    case 1:
        k_copy<uint8_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (uint8_t *)dst,
                                                                (const uint8_t *)src->data);
        break;
    case 2:
        k_copy<uint16_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (uint16_t *)dst,
                                                                 (const uint16_t *)src->data);
        break;
    case 4:
        k_copy<uint32_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (uint32_t *)dst,
                                                                 (const uint32_t *)src->data);
        break;
    case 8:
        k_copy<uint64_t><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (uint64_t *)dst,
                                                                 (const uint64_t *)src->data);
        break;
    default:
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda %s: unknown dtype %d", tg_op_name(a->op),
                             (int)src->dtype);
    }
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

static tg_status check_same_dtype(const tg_kargs *a) {
    for (int i = 0; i < a->nin; i++) {
        if (a->in[i].dtype != a->out.dtype)
            return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda %s: input %d dtype differs from the output",
                                 tg_op_name(a->op), i);
    }
    return TG_OK;
}

tg_status tg__cuda_copy(void *state, const tg_kargs *a) {
    tg_status st = check_same_dtype(a);
    if (st != TG_OK)
        return st;
    if (!tg__cuda_same_shape(&a->in[0], &a->out))
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda copy: input and output shapes differ");
    return copy_view((tg__cuda_state *)state, a, a->out.data, a->out.strides, &a->in[0]);
}

tg_status tg__cuda_world_sum(void *state, const tg_kargs *a) { return tg__cuda_copy(state, a); }

/* The output holds the input's elements in the input's row-major order, so a
 * reshape is a copy into the output buffer seen with the input's shape. */
tg_status tg__cuda_reshape(void *state, const tg_kargs *a) {
    tg_status st = check_same_dtype(a);
    if (st != TG_OK)
        return st;
    if (tg__kview_numel(&a->in[0]) != tg__kview_numel(&a->out))
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda reshape: input and output sizes differ");
    int64_t strides[TG_MAX_DIMS];
    tg__contig_strides(a->in[0].ndim, a->in[0].shape, strides);
    return copy_view((tg__cuda_state *)state, a, a->out.data, strides, &a->in[0]);
}

tg_status tg__cuda_slice_scatter(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = check_same_dtype(a);
    if (st != TG_OK)
        return st;
    const tg_kview *src = &a->in[0];
    const int axis = a->p->axis;
    const int64_t start = a->p->ints[0], step = a->p->ints[2];
    if (src->ndim != a->out.ndim || axis < 0 || axis >= a->out.ndim)
        return tg__cuda_fail(a, TG_ERR_AXIS, "cuda slice_scatter: axis %d invalid for %d dims",
                             axis, a->out.ndim);
    if (step < 1 || start < 0 ||
        (src->shape[axis] > 0 && start + (src->shape[axis] - 1) * step >= a->out.shape[axis]))
        return tg__cuda_fail(a, TG_ERR_INVALID,
                             "cuda slice_scatter: %" PRId64 " positions from %" PRId64
                             " with step %" PRId64 " do not fit in size %" PRId64,
                             src->shape[axis], start, step, a->out.shape[axis]);
    for (int d = 0; d < src->ndim; d++) {
        if (d != axis && src->shape[d] != a->out.shape[d])
            return tg__cuda_fail(a, TG_ERR_SHAPE,
                                 "cuda slice_scatter: source dim %d differs from the output", d);
    }
    const size_t esize = shape_esize(a->out.dtype);
    TG__CUDA_K(cudaMemsetAsync(a->out.data, 0, (size_t)tg__kview_numel(&a->out) * esize, s->stream),
               a);
    /* The destination is the output seen through the slice: offset by start
     * along axis, and step times the stride there. */
    int64_t strides[TG_MAX_DIMS];
    for (int d = 0; d < a->out.ndim; d++)
        strides[d] = a->out.strides[d];
    strides[axis] *= step;
    char *dst = (char *)a->out.data + start * a->out.strides[axis] * (int64_t)esize;
    return copy_view(s, a, dst, strides, src);
}

tg_status tg__cuda_concat(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = check_same_dtype(a);
    if (st != TG_OK)
        return st;
    const int axis = a->p->axis;
    if (axis < 0 || axis >= a->out.ndim)
        return tg__cuda_fail(a, TG_ERR_AXIS, "cuda concat: axis %d invalid for %d dims", axis,
                             a->out.ndim);
    const int64_t esize = (int64_t)shape_esize(a->out.dtype);
    /* Check every input before queuing any copy. */
    int64_t total = 0;
    for (int i = 0; i < a->nin; i++) {
        const tg_kview *src = &a->in[i];
        bool fits = src->ndim == a->out.ndim;
        for (int d = 0; fits && d < src->ndim; d++)
            fits = d == axis || src->shape[d] == a->out.shape[d];
        if (!fits || total + src->shape[axis] > a->out.shape[axis])
            return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda concat: input %d does not fit the output",
                                 i);
        total += src->shape[axis];
    }
    if (total != a->out.shape[axis])
        return tg__cuda_fail(a, TG_ERR_SHAPE,
                             "cuda concat: inputs fill %" PRId64 " of %" PRId64 " along axis %d",
                             total, a->out.shape[axis], axis);
    int64_t at = 0;
    for (int i = 0; i < a->nin; i++) {
        const tg_kview *src = &a->in[i];
        char *dst = (char *)a->out.data + at * a->out.strides[axis] * esize;
        st = copy_view(s, a, dst, a->out.strides, src);
        if (st != TG_OK)
            return st;
        at += src->shape[axis];
    }
    return TG_OK;
}
