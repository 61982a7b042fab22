/*
 * kernels/cpu/cpu_shape.c: copies that move elements without changing them:
 * copy, reshape, slice_scatter and concat.
 *
 * All of them are one strided copy from a source view into a destination
 * view, so they work for every dtype by element size and share the loop
 * driver (dim collapsing, tiling, threads) with the elementwise kernels.
 */
#include <string.h>

#include "cpu.h"

/* Copies one row of elements of a given size. The destination is usually
 * contiguous; concat and slice_scatter write into strided destinations. */
#define CPU_COPY_ROW(fname, TYPE)                                                             \
    static void fname(char *const *ptr, const int64_t *s, int64_t n, const tg_op_params *p) { \
        TYPE *o = (TYPE *)ptr[0];                                                             \
        const TYPE *x = (const TYPE *)ptr[1];                                                 \
        const int64_t so = s[0], sx = s[1];                                                   \
        (void)p;                                                                              \
        if (so == 1 && sx == 1) {                                                             \
            memcpy(o, x, (size_t)n * sizeof(TYPE));                                           \
        } else if (so == 1) {                                                                 \
            for (int64_t i = 0; i < n; i++)                                                   \
                o[i] = x[i * sx];                                                             \
        } else {                                                                              \
            for (int64_t i = 0; i < n; i++)                                                   \
                o[i * so] = x[i * sx];                                                        \
        }                                                                                     \
    }

CPU_COPY_ROW(cpu_copy_row_1, uint8_t)
CPU_COPY_ROW(cpu_copy_row_2, uint16_t)
CPU_COPY_ROW(cpu_copy_row_4, uint32_t)
CPU_COPY_ROW(cpu_copy_row_8, uint64_t)

/*
 * Copies src (shape `shape`, strides src->strides) into dst, a view with the
 * same shape and strides dst_strides. The dtypes must match.
 */
static tg_status cpu_copy_view(const tg_kargs *a, void *dst, const int64_t *dst_strides,
                               const tg_kview *src) {
    tg__cpu_row_fn fn;
    switch (tg__cpu_esize(src->dtype)) {
    case 1:
        fn = cpu_copy_row_1;
        break;
    case 2:
        fn = cpu_copy_row_2;
        break;
    case 4:
        fn = cpu_copy_row_4;
        break;
    case 8:
        fn = cpu_copy_row_8;
        break;
    default:
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu %s: unknown dtype %d", tg_op_name(a->op),
                            (int)src->dtype);
    }
    tg__cpu_loop l;
    tg__cpu_loop_init(&l, src->ndim, src->shape);
    tg__cpu_loop_add(&l, dst, src->dtype, dst_strides);
    tg__cpu_loop_add(&l, src->data, src->dtype, src->strides);
    tg__cpu_loop_run(&l, fn, NULL);
    return TG_OK;
}

static tg_status cpu_check_same_dtype(const tg_kargs *a) {
    for (int i = 0; i < a->nin; i++) {
        if (a->in[i].dtype != a->out.dtype)
            return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu %s: input %d dtype differs from the output",
                                tg_op_name(a->op), i);
    }
    return TG_OK;
}

tg_status tg__cpu_copy(void *state, const tg_kargs *a) {
    (void)state;
    tg_status st = cpu_check_same_dtype(a);
    if (st != TG_OK)
        return st;
    bool same = a->in[0].ndim == a->out.ndim;
    for (int d = 0; same && d < a->out.ndim; d++)
        same = a->in[0].shape[d] == a->out.shape[d];
    if (!same)
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu copy: input and output shapes differ");
    return cpu_copy_view(a, a->out.data, a->out.strides, &a->in[0]);
}

tg_status tg__cpu_world_sum(void *state, const tg_kargs *a) { return tg__cpu_copy(state, a); }

/* The output holds the input's elements in the input's row-major order, so a
 * reshape is a copy into the output buffer seen with the input's shape. */
tg_status tg__cpu_reshape(void *state, const tg_kargs *a) {
    (void)state;
    tg_status st = cpu_check_same_dtype(a);
    if (st != TG_OK)
        return st;
    if (tg__kview_numel(&a->in[0]) != tg__kview_numel(&a->out))
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu reshape: input and output sizes differ");
    int64_t strides[TG_MAX_DIMS];
    tg__contig_strides(a->in[0].ndim, a->in[0].shape, strides);
    return cpu_copy_view(a, a->out.data, strides, &a->in[0]);
}

tg_status tg__cpu_slice_scatter(void *state, const tg_kargs *a) {
    (void)state;
    tg_status st = cpu_check_same_dtype(a);
    if (st != TG_OK)
        return st;
    const tg_kview *src = &a->in[0];
    const int axis = a->p->axis;
    const int64_t start = a->p->ints[0], step = a->p->ints[2];
    if (src->ndim != a->out.ndim || axis < 0 || axis >= a->out.ndim)
        return tg__cpu_fail(a, TG_ERR_AXIS, "cpu slice_scatter: axis %d invalid for %d dims", axis,
                            a->out.ndim);
    if (step < 1 || start < 0 ||
        (src->shape[axis] > 0 && start + (src->shape[axis] - 1) * step >= a->out.shape[axis]))
        return tg__cpu_fail(a, TG_ERR_INVALID,
                            "cpu slice_scatter: %" PRId64 " positions from %" PRId64
                            " with step %" PRId64 " do not fit in size %" PRId64,
                            src->shape[axis], start, step, a->out.shape[axis]);
    size_t esize = tg__cpu_esize(a->out.dtype);
    tg__cpu_zero(a->out.data, (size_t)tg__kview_numel(&a->out) * esize);
    /* The destination is the output seen through the slice: offset by start
     * along axis, and step times the stride there. */
    int64_t strides[TG_MAX_DIMS];
    for (int d = 0; d < a->out.ndim; d++)
        strides[d] = a->out.strides[d];
    strides[axis] *= step;
    char *dst = (char *)a->out.data + start * a->out.strides[axis] * (int64_t)esize;
    return cpu_copy_view(a, dst, strides, src);
}

tg_status tg__cpu_concat(void *state, const tg_kargs *a) {
    (void)state;
    tg_status st = cpu_check_same_dtype(a);
    if (st != TG_OK)
        return st;
    const int axis = a->p->axis;
    if (axis < 0 || axis >= a->out.ndim)
        return tg__cpu_fail(a, TG_ERR_AXIS, "cpu concat: axis %d invalid for %d dims", axis,
                            a->out.ndim);
    const int64_t esize = (int64_t)tg__cpu_esize(a->out.dtype);
    int64_t at = 0;
    for (int i = 0; i < a->nin; i++) {
        const tg_kview *src = &a->in[i];
        if (src->ndim != a->out.ndim || at + src->shape[axis] > a->out.shape[axis])
            return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu concat: input %d does not fit the output", i);
        char *dst = (char *)a->out.data + at * a->out.strides[axis] * esize;
        st = cpu_copy_view(a, dst, a->out.strides, src);
        if (st != TG_OK)
            return st;
        at += src->shape[axis];
    }
    if (at != a->out.shape[axis])
        return tg__cpu_fail(a, TG_ERR_SHAPE,
                            "cpu concat: inputs fill %" PRId64 " of %" PRId64 " along axis %d", at,
                            a->out.shape[axis], axis);
    return TG_OK;
}
