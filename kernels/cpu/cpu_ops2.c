/*
 * kernels/cpu/cpu_ops2.c: dtype casts, cumsum, the indices of topk and the
 * integer sum (sum over u8/i32/i64 into i64).
 *
 * These kernels walk their operands with plain strided loops: the ops are
 * used on small tensors (labels, predictions, scores) far more than on
 * activations. Where the CUDA backend must agree bit for bit (topk's order on
 * ties, cumsum's order of additions), both follow one stated rule.
 */
#include <math.h>
#include <string.h>

#include "cpu.h"

/* The offset of row-major element i of the shape in a strided view. */
static int64_t cpu_offset(int ndim, const int64_t *shape, const int64_t *strides, int64_t i) {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; d--) {
        off += (i % shape[d]) * strides[d];
        i /= shape[d];
    }
    return off;
}

/* ---- cast ---- */

/* One row function per (output, input) dtype pair; the C conversion is the
 * rule (float to integer truncates toward zero). */
#define CPU_CAST_ROW(osfx, OT, isfx, IT)                                                \
    static void cpu_cast_##osfx##_##isfx(char *const *ptr, const int64_t *s, int64_t n, \
                                         const tg_op_params *p) {                       \
        OT *o = (OT *)ptr[0];                                                           \
        const IT *x = (const IT *)ptr[1];                                               \
        const int64_t sx = s[1];                                                        \
        (void)p;                                                                        \
        for (int64_t i = 0; i < n; i++)                                                 \
            o[i] = (OT)x[i * sx];                                                       \
    }
/* bf16 goes through f32 both ways, as PyTorch's conversion: to bf16 rounds
 * the f32 value to nearest even (an f64 is first rounded to f32), from bf16
 * is exact and then follows the C rule. */
#define CPU_CAST_ROW_FROM_BF16(osfx, OT)                                                 \
    static void cpu_cast_##osfx##_bf16(char *const *ptr, const int64_t *s, int64_t n,    \
                                       const tg_op_params *p) {                          \
        OT *o = (OT *)ptr[0];                                                            \
        const uint16_t *x = (const uint16_t *)ptr[1];                                    \
        const int64_t sx = s[1];                                                         \
        (void)p;                                                                         \
        for (int64_t i = 0; i < n; i++)                                                  \
            o[i] = (OT)tg_bf16_to_f32(x[i * sx]);                                        \
    }
#define CPU_CAST_ROW_TO_BF16(isfx, IT)                                                   \
    static void cpu_cast_bf16_##isfx(char *const *ptr, const int64_t *s, int64_t n,      \
                                     const tg_op_params *p) {                            \
        uint16_t *o = (uint16_t *)ptr[0];                                                \
        const IT *x = (const IT *)ptr[1];                                                \
        const int64_t sx = s[1];                                                         \
        (void)p;                                                                         \
        for (int64_t i = 0; i < n; i++)                                                  \
            o[i] = tg_bf16_from_f32((float)x[i * sx]);                                   \
    }
#define CPU_CAST_FROM(osfx, OT)          \
    CPU_CAST_ROW(osfx, OT, f32, float)   \
    CPU_CAST_ROW(osfx, OT, f64, double)  \
    CPU_CAST_ROW(osfx, OT, u8, uint8_t)  \
    CPU_CAST_ROW(osfx, OT, i32, int32_t) \
    CPU_CAST_ROW(osfx, OT, i64, int64_t) \
    CPU_CAST_ROW_FROM_BF16(osfx, OT)
CPU_CAST_FROM(f32, float)
CPU_CAST_FROM(f64, double)
CPU_CAST_FROM(u8, uint8_t)
CPU_CAST_FROM(i32, int32_t)
CPU_CAST_FROM(i64, int64_t)
CPU_CAST_ROW_TO_BF16(f32, float)
CPU_CAST_ROW_TO_BF16(f64, double)
CPU_CAST_ROW_TO_BF16(u8, uint8_t)
CPU_CAST_ROW_TO_BF16(i32, int32_t)
CPU_CAST_ROW_TO_BF16(i64, int64_t)
CPU_CAST_ROW(bf16, uint16_t, bf16, uint16_t)
#undef CPU_CAST_FROM
#undef CPU_CAST_ROW
#undef CPU_CAST_ROW_TO_BF16
#undef CPU_CAST_ROW_FROM_BF16

#define CPU_CAST_TABLE(osfx)                                                \
    {                                                                       \
        [TG_F32] = cpu_cast_##osfx##_f32, [TG_F64] = cpu_cast_##osfx##_f64, \
        [TG_U8] = cpu_cast_##osfx##_u8, [TG_I32] = cpu_cast_##osfx##_i32,   \
        [TG_I64] = cpu_cast_##osfx##_i64, [TG_BF16] = cpu_cast_##osfx##_bf16, \
    }

tg_status tg__cpu_cast(void *state, const tg_kargs *a) {
    /* Indexed by the output's dtype, then the input's. */
    static const tg__cpu_row_fn fns[TG_DTYPE_COUNT][TG_DTYPE_COUNT] = {
        [TG_F32] = CPU_CAST_TABLE(f32), [TG_F64] = CPU_CAST_TABLE(f64),
        [TG_U8] = CPU_CAST_TABLE(u8),   [TG_I32] = CPU_CAST_TABLE(i32),
        [TG_I64] = CPU_CAST_TABLE(i64), [TG_BF16] = CPU_CAST_TABLE(bf16),
    };
    (void)state;
    const tg_kview *x = &a->in[0];
    if ((unsigned)a->out.dtype >= TG_DTYPE_COUNT || (unsigned)x->dtype >= TG_DTYPE_COUNT)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu cast: unknown dtype");
    if (x->ndim != a->out.ndim || tg__kview_numel(x) != tg__kview_numel(&a->out))
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu cast: input and output shapes differ");
    tg__cpu_loop l;
    tg__cpu_loop_init(&l, a->out.ndim, a->out.shape);
    tg__cpu_loop_add(&l, a->out.data, a->out.dtype, a->out.strides);
    tg__cpu_loop_add(&l, x->data, x->dtype, x->strides);
    static const tg_op_params none;
    tg__cpu_loop_run(&l, fns[a->out.dtype][x->dtype], a->p ? a->p : &none);
    return TG_OK;
}
#undef CPU_CAST_TABLE

/* ---- lines along one axis (cumsum, topk) ---- */

/* The lines of a view along axis: count, length, and for line j the offset
 * of its first element and the stride between its elements. */
typedef struct cpu_lines {
    int64_t count, len, step;
    int ndim;
    int64_t shape[TG_MAX_DIMS], strides[TG_MAX_DIMS];
} cpu_lines;

static void cpu_lines_init(cpu_lines *L, const tg_kview *v, int axis) {
    L->len = v->shape[axis];
    L->step = v->strides[axis];
    L->ndim = 0;
    L->count = 1;
    for (int d = 0; d < v->ndim; d++) {
        if (d == axis)
            continue;
        L->shape[L->ndim] = v->shape[d];
        L->strides[L->ndim++] = v->strides[d];
        L->count *= v->shape[d];
    }
}

static int64_t cpu_line_start(const cpu_lines *L, int64_t j) {
    return cpu_offset(L->ndim, L->shape, L->strides, j);
}

/* ---- cumsum ---- */

#define CPU_CUMSUM(T)                                                   \
    for (int64_t j = 0; j < xl.count; j++) {                            \
        const T *x = (const T *)a->in[0].data + cpu_line_start(&xl, j); \
        T *o = (T *)a->out.data + cpu_line_start(&ol, j);               \
        T acc = 0;                                                      \
        for (int64_t k = 0; k < xl.len; k++) {                          \
            const int64_t i = reverse ? xl.len - 1 - k : k;             \
            acc += x[i * xl.step];                                      \
            o[i * ol.step] = acc;                                       \
        }                                                               \
    }

tg_status tg__cpu_cumsum(void *state, const tg_kargs *a) {
    (void)state;
    tg_status st = tg__cpu_check_float(a, 1);
    if (st != TG_OK)
        return st;
    const int axis = a->p->axis;
    if (axis < 0 || axis >= a->out.ndim || a->in[0].ndim != a->out.ndim)
        return tg__cpu_fail(a, TG_ERR_AXIS, "cpu cumsum: axis %d out of range", axis);
    const bool reverse = a->p->ints[0] != 0;
    cpu_lines xl, ol;
    cpu_lines_init(&xl, &a->in[0], axis);
    cpu_lines_init(&ol, &a->out, axis);
    if (a->out.dtype == TG_F32) {
        CPU_CUMSUM(float)
    } else {
        CPU_CUMSUM(double)
    }
    return TG_OK;
}
#undef CPU_CUMSUM

/* ---- topk indices ---- */

/*
 * The order is a total one: by value (descending when largest, ascending
 * otherwise), then by index ascending; NaN counts as larger than every
 * number, as in PyTorch. Pass r picks the first element after the one pass
 * r - 1 picked, so the CUDA kernel, which runs the same passes, returns the
 * same indices.
 */
static inline bool cpu_topk_before(double v, int64_t i, double w, int64_t j, bool largest) {
    const bool vn = isnan(v), wn = isnan(w);
    if (vn != wn)
        return largest ? vn : wn;
    if (!vn && v != w)
        return largest ? v > w : v < w;
    return i < j;
}

#define CPU_TOPK(T)                                                                                \
    for (int64_t j = 0; j < xl.count; j++) {                                                       \
        const T *x = (const T *)a->in[0].data + cpu_line_start(&xl, j);                            \
        int64_t *o = (int64_t *)a->out.data + cpu_line_start(&ol, j);                              \
        int64_t prev = -1;                                                                         \
        for (int64_t r = 0; r < k; r++) {                                                          \
            int64_t best = -1;                                                                     \
            for (int64_t i = 0; i < xl.len; i++) {                                                 \
                const double v = (double)x[i * xl.step];                                           \
                if (prev >= 0 && !cpu_topk_before((double)x[prev * xl.step], prev, v, i, largest)) \
                    continue;                                                                      \
                if (best < 0 || cpu_topk_before(v, i, (double)x[best * xl.step], best, largest))   \
                    best = i;                                                                      \
            }                                                                                      \
            o[r * ol.step] = best;                                                                 \
            prev = best;                                                                           \
        }                                                                                          \
    }

tg_status tg__cpu_topk_indices(void *state, const tg_kargs *a) {
    (void)state;
    const tg_kview *x = &a->in[0];
    if (x->dtype != TG_F32 && x->dtype != TG_F64)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu topk_indices: input dtype %s is not a float",
                            tg_dtype_name(x->dtype));
    if (a->out.dtype != TG_I64)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu topk_indices: output must be i64");
    const int axis = a->p->axis;
    const int64_t k = a->p->ints[0];
    const bool largest = a->p->ints[1] != 0;
    if (axis < 0 || axis >= x->ndim || k < 0 || k > x->shape[axis] || a->out.shape[axis] != k)
        return tg__cpu_fail(a, TG_ERR_SHAPE,
                            "cpu topk_indices: k = %" PRId64 " does not fit axis %d", k, axis);
    cpu_lines xl, ol;
    cpu_lines_init(&xl, x, axis);
    cpu_lines_init(&ol, &a->out, axis);
    if (x->dtype == TG_F32) {
        CPU_TOPK(float)
    } else {
        CPU_TOPK(double)
    }
    return TG_OK;
}
#undef CPU_TOPK

/* ---- integer sum ---- */

/* Each input element adds into the output element its kept coordinates name;
 * wrapping on overflow, as PyTorch's i64 sum. */
tg_status tg__cpu_sum_int(const tg_kargs *a) {
    const tg_kview *x = &a->in[0];
    if (a->out.dtype != TG_I64)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu sum: an integer sum's output must be i64");
    const uint32_t axes = a->p->axes;
    int64_t ostr[TG_MAX_DIMS], contig[TG_MAX_DIMS];
    /* Output strides over the input's dims: 0 along the reduced ones. */
    int od = 0;
    int64_t oshape[TG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        if (!(axes & (1u << d)))
            oshape[od++] = x->shape[d];
    tg__contig_strides(od, oshape, contig);
    for (int d = 0, k = 0; d < x->ndim; d++)
        ostr[d] = (axes & (1u << d)) ? 0 : contig[k++];
    const int64_t m = tg__kview_numel(&a->out), n = tg__kview_numel(x);
    int64_t *o = a->out.data;
    memset(o, 0, (size_t)m * sizeof *o);
    for (int64_t i = 0; i < n; i++) {
        const int64_t xo = cpu_offset(x->ndim, x->shape, x->strides, i);
        const int64_t oo = cpu_offset(x->ndim, x->shape, ostr, i);
        /* unsigned: wrapping is defined */
        o[oo] = (int64_t)((uint64_t)o[oo] + (uint64_t)tg__cpu_index_at(x->data, x->dtype, xo));
    }
    return TG_OK;
}
