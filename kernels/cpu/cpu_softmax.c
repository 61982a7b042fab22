/*
 * kernels/cpu/cpu_softmax.c: softmax and log_softmax along one axis, and the
 * indexing pair gather / scatter_add.
 *
 * The softmax kernels treat the input as lines along the axis; each line is
 * independent, so lines are spread over threads. Indexing kernels check
 * every index and report the first bad one (lowest row-major position),
 * which is the same whatever the thread count.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "cpu.h"

/* Columns per task in scatter_add's column loop: a contiguous inner run
 * long enough to stream, short enough that an embedding gradient of a few
 * hundred columns still splits into tasks for every thread. */
#define CPU_SCATTER_COLS 64

/* Element offset of line m of a view: m runs row-major over every dim but axis. */
static int64_t cpu_line_offset(const tg_kview *v, int axis, int64_t m) {
    int64_t off = 0;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (d == axis)
            continue;
        off += m % v->shape[d] * v->strides[d];
        m /= v->shape[d];
    }
    return off;
}

/* ---- softmax, log_softmax ---- */

/*
 * One line of n elements: x with stride sx, output with stride so. The max is
 * subtracted before exp so that no term overflows. The exponentials are
 * first written to the output (log_softmax overwrites them at the end), so
 * that every pass is a plain loop that vectorises; the sum is kept in
 * double. The max ignores NaN, but a NaN still reaches the sum and so makes
 * the whole line NaN, as in PyTorch.
 */
#define CPU_SOFTMAX_LINE(name, TYPE, LOG_OUTPUT)                                                 \
    static inline __attribute__((always_inline)) void name##_body(                               \
        const TYPE *x, int64_t sx, TYPE *o, int64_t so, int64_t n) {                             \
        TYPE mx = -INFINITY;                                                                     \
        TG__CPU_SIMD("omp simd reduction(max : mx)") for (int64_t k = 0; k < n; k++) {           \
            const TYPE v = x[k * sx];                                                            \
            mx = v > mx ? v : mx;                                                                \
        }                                                                                        \
        TG__CPU_SIMD("omp simd")                                                                 \
        for (int64_t k = 0; k < n; k++)                                                          \
            o[k * so] = tg__cpu_vexp(x[k * sx] - mx);                                            \
        double sum = 0;                                                                          \
        TG__CPU_SIMD("omp simd reduction(+ : sum)")                                              \
        for (int64_t k = 0; k < n; k++)                                                          \
            sum += o[k * so];                                                                    \
        if (LOG_OUTPUT) {                                                                        \
            const TYPE lse = (TYPE)log(sum);                                                     \
            TG__CPU_SIMD("omp simd")                                                             \
            for (int64_t k = 0; k < n; k++)                                                      \
                o[k * so] = (x[k * sx] - mx) - lse;                                              \
        } else {                                                                                 \
            const TYPE inv = (TYPE)(1.0 / sum);                                                  \
            TG__CPU_SIMD("omp simd") for (int64_t k = 0; k < n; k++) o[k * so] *= inv;           \
        }                                                                                        \
    }                                                                                            \
    /* Contiguous lines get their own copy of the body, with unit strides the                    \
     * compiler can vectorise. */                                                                \
    TG__CPU_CLONES static void name(const char *x, int64_t sx, char *o, int64_t so, int64_t n) { \
        if (sx == 1 && so == 1)                                                                  \
            name##_body((const TYPE *)x, 1, (TYPE *)o, 1, n);                                    \
        else                                                                                     \
            name##_body((const TYPE *)x, sx, (TYPE *)o, so, n);                                  \
    }

CPU_SOFTMAX_LINE(cpu_softmax_f32, float, false)
CPU_SOFTMAX_LINE(cpu_softmax_f64, double, false)
CPU_SOFTMAX_LINE(cpu_log_softmax_f32, float, true)
CPU_SOFTMAX_LINE(cpu_log_softmax_f64, double, true)

typedef void (*cpu_line_fn)(const char *x, int64_t sx, char *o, int64_t so, int64_t n);

static tg_status cpu_softmax_any(const tg_kargs *a, cpu_line_fn f32, cpu_line_fn f64) {
    tg_status st = tg__cpu_check_float(a, 1);
    if (st != TG_OK)
        return st;
    const tg_kview *x = &a->in[0];
    const int axis = a->p->axis;
    if (axis < 0 || axis >= x->ndim || x->ndim != a->out.ndim)
        return tg__cpu_fail(a, TG_ERR_AXIS, "cpu %s: axis %d invalid for %d dims",
                            tg_op_name(a->op), axis, x->ndim);
    const int64_t numel = tg__kview_numel(x), n = x->shape[axis];
    if (numel == 0)
        return TG_OK;
    /* The output is contiguous: line m starts at (m / inner) * n * inner +
     * m % inner and steps by inner, the product of the dims after axis. */
    int64_t inner = 1;
    for (int d = axis + 1; d < x->ndim; d++)
        inner *= x->shape[d];
    const int64_t lines = numel / n, esize = (int64_t)tg__cpu_esize(x->dtype);
    const cpu_line_fn line = x->dtype == TG_F32 ? f32 : f64;
    const char *xd = x->data;
    char *od = a->out.data;
    TG__CPU_FOR(
        tg__cpu_par_if(numel > TG__CPU_PAR_MIN), "omp parallel for schedule(static)",
        for (int64_t m = 0; m < lines; m++) {
            const int64_t xo = cpu_line_offset(x, axis, m);
            const int64_t oo = m / inner * n * inner + m % inner;
            line(xd + xo * esize, x->strides[axis], od + oo * esize, inner, n);
        });
    return TG_OK;
}

tg_status tg__cpu_softmax(void *state, const tg_kargs *a) {
    (void)state;
    return cpu_softmax_any(a, cpu_softmax_f32, cpu_softmax_f64);
}

tg_status tg__cpu_log_softmax(void *state, const tg_kargs *a) {
    (void)state;
    return cpu_softmax_any(a, cpu_log_softmax_f32, cpu_log_softmax_f64);
}

/* ---- index checking shared by gather and scatter_add ---- */

/* The first out-of-range index seen: lowest row-major position over the
 * index tensor, so the report does not depend on thread timing. */
typedef struct cpu_bad {
    int64_t pos;
    int64_t val;
} cpu_bad;

static void cpu_bad_note(cpu_bad *b, int64_t pos, int64_t val) {
#pragma omp critical(tg_cpu_bad_index)
    {
        if (b->pos < 0 || pos < b->pos) {
            b->pos = pos;
            b->val = val;
        }
    }
}

static tg_status cpu_bad_report(const tg_kargs *a, const cpu_bad *b, const tg_kview *idx, int axis,
                                int64_t limit) {
    char where[16 * TG_MAX_DIMS + 4];
    int64_t cs[TG_MAX_DIMS], rest = b->pos;
    size_t len = 0;
    tg__contig_strides(idx->ndim, idx->shape, cs);
    where[len++] = '(';
    for (int d = 0; d < idx->ndim && len < sizeof where; d++) {
        int w =
            snprintf(where + len, sizeof where - len, "%s%" PRId64, d ? ", " : "", rest / cs[d]);
        rest %= cs[d];
        len += w > 0 ? (size_t)w : 0;
    }
    if (len < sizeof where)
        snprintf(where + len, sizeof where - len, ")");
    where[sizeof where - 1] = '\0';
    return tg__cpu_fail(a, TG_ERR_INVALID,
                        "cpu %s: index %" PRId64 " at position %s is out of range [0, %" PRId64
                        ") along axis %d",
                        tg_op_name(a->op), b->val, where, limit, axis);
}

/* Checks the operand shapes and dtypes common to gather and scatter_add:
 * data (ndim like idx), idx of an integer dtype, every dim of idx other than
 * axis no larger than data's. */
static tg_status cpu_index_check(const tg_kargs *a, const tg_kview *data, const tg_kview *idx) {
    const int axis = a->p->axis;
    if (idx->dtype != TG_U8 && idx->dtype != TG_I32 && idx->dtype != TG_I64)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu %s: index must be u8, i32 or i64",
                            tg_op_name(a->op));
    if (data->ndim != idx->ndim || a->out.ndim != idx->ndim || idx->ndim < 1)
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu %s: operands need the same ndim",
                            tg_op_name(a->op));
    if (axis < 0 || axis >= idx->ndim)
        return tg__cpu_fail(a, TG_ERR_AXIS, "cpu %s: axis %d invalid for %d dims",
                            tg_op_name(a->op), axis, idx->ndim);
    for (int d = 0; d < idx->ndim; d++) {
        if (d != axis && idx->shape[d] > data->shape[d])
            return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu %s: index dim %d exceeds the data's",
                                tg_op_name(a->op), d);
    }
    return TG_OK;
}

/* ---- gather ---- */

/* One row of gather: n outputs along the last dim. xs is the source's stride
 * along the last dim, 0 when the last dim is the gathered axis. */
#define CPU_GATHER_ROW(name, TYPE)                                                    \
    static int64_t name(const char *x_, int64_t xs, int64_t xs_axis, const char *idx, \
                        tg_dtype idt, int64_t is, char *o_, int64_t n, int64_t lim,   \
                        int64_t *bad) {                                               \
        const TYPE *x = (const TYPE *)x_;                                             \
        TYPE *o = (TYPE *)o_;                                                         \
        for (int64_t j = 0; j < n; j++) {                                             \
            const int64_t v = tg__cpu_index_at(idx, idt, j * is);                     \
            if (v < 0 || v >= lim) {                                                  \
                *bad = v;                                                             \
                return j;                                                             \
            }                                                                         \
            o[j] = x[j * xs + v * xs_axis];                                           \
        }                                                                             \
        return -1;                                                                    \
    }
CPU_GATHER_ROW(cpu_gather_row_1, uint8_t)
CPU_GATHER_ROW(cpu_gather_row_4, uint32_t)
CPU_GATHER_ROW(cpu_gather_row_8, uint64_t)

typedef int64_t (*cpu_gather_fn)(const char *, int64_t, int64_t, const char *, tg_dtype, int64_t,
                                 char *, int64_t, int64_t, int64_t *);

tg_status tg__cpu_gather(void *state, const tg_kargs *a) {
    (void)state;
    const tg_kview *x = &a->in[0], *idx = &a->in[1];
    tg_status st = cpu_index_check(a, x, idx);
    if (st != TG_OK)
        return st;
    if (a->out.dtype != x->dtype)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu gather: output dtype differs from the source");
    const int axis = a->p->axis, nd = idx->ndim;
    const int64_t numel = tg__kview_numel(idx), inner = idx->shape[nd - 1];
    const int64_t lim = x->shape[axis], esize = (int64_t)tg__cpu_esize(x->dtype);
    if (numel == 0)
        return TG_OK;
    const cpu_gather_fn row = esize == 1   ? cpu_gather_row_1
                              : esize == 4 ? cpu_gather_row_4
                                           : cpu_gather_row_8;
    /* The source's own stride along the last dim, unless that is the axis. */
    const int64_t xs = axis == nd - 1 ? 0 : x->strides[nd - 1];
    const char *xd = x->data, *id = idx->data;
    char *od = a->out.data;
    cpu_bad bad = {.pos = -1};
    TG__CPU_FOR(
        tg__cpu_par_if(numel > TG__CPU_PAR_MIN), "omp parallel for schedule(static)",
        for (int64_t r = 0; r < numel / inner; r++) {
            int64_t rest = r, xo = 0, io = 0;
            for (int d = nd - 2; d >= 0; d--) {
                const int64_t c = rest % idx->shape[d];
                rest /= idx->shape[d];
                io += c * idx->strides[d];
                xo += d == axis ? 0 : c * x->strides[d];
            }
            int64_t val;
            int64_t j = row(xd + xo * esize, xs, x->strides[axis],
                            id + io * (int64_t)tg__cpu_esize(idx->dtype), idx->dtype,
                            idx->strides[nd - 1], od + r * inner * esize, inner, lim, &val);
            if (j >= 0)
                cpu_bad_note(&bad, r * inner + j, val);
        });
    if (bad.pos >= 0)
        return cpu_bad_report(a, &bad, idx, axis, lim);
    return TG_OK;
}

/* ---- scatter_add ---- */

/*
 * Adds src into out along axis. A task owns a set of positions that differ
 * only along axis and in a block of the last dim; two tasks never write the
 * same output element, and within a task the axis is walked in order, so the
 * sums are the same for every thread count.
 */
typedef struct cpu_scatter {
    const tg_kview *src, *idx;
    const tg_kargs *a;
    int axis, nd;
    int64_t ostrides[TG_MAX_DIMS];
    int64_t cstrides[TG_MAX_DIMS];
    int64_t lim, ncols, nblocks;
} cpu_scatter;

#define CPU_SCATTER_TASK(name, TYPE)                                                            \
    static void name(const cpu_scatter *s, int64_t t, cpu_bad *bad) {                           \
        const tg_kview *src = s->src, *idx = s->idx;                                            \
        const int axis = s->axis, last = s->nd - 1;                                             \
        const int64_t j0 = t % s->nblocks * CPU_SCATTER_COLS;                                   \
        const int64_t nc = s->ncols - j0 < CPU_SCATTER_COLS ? s->ncols - j0 : CPU_SCATTER_COLS; \
        int64_t rest = t / s->nblocks, so = 0, io = 0, oo = 0, flat = 0;                        \
        for (int d = last; d >= 0; d--) {                                                       \
            if (d == axis || (d == last && axis != last))                                       \
                continue;                                                                       \
            const int64_t c = rest % idx->shape[d];                                             \
            rest /= idx->shape[d];                                                              \
            so += c * src->strides[d];                                                          \
            io += c * idx->strides[d];                                                          \
            oo += c * s->ostrides[d];                                                           \
            flat += c * s->cstrides[d];                                                         \
        }                                                                                       \
        const int64_t ss_l = axis == last ? 0 : src->strides[last];                             \
        const int64_t is_l = axis == last ? 0 : idx->strides[last];                             \
        const int64_t os_l = axis == last ? 0 : s->ostrides[last];                              \
        const int64_t cs_l = axis == last ? 0 : s->cstrides[last];                              \
        const TYPE *x = (const TYPE *)src->data + so;                                           \
        const char *ip = (const char *)idx->data;                                               \
        TYPE *o = (TYPE *)s->a->out.data + oo;                                                  \
        for (int64_t k = 0; k < idx->shape[axis]; k++) {                                        \
            for (int64_t j = j0; j < j0 + nc; j++) {                                            \
                const int64_t v =                                                               \
                    tg__cpu_index_at(ip, idx->dtype, io + k * idx->strides[axis] + j * is_l);   \
                if (v < 0 || v >= s->lim) {                                                     \
                    cpu_bad_note(bad, flat + k * s->cstrides[axis] + j * cs_l, v);              \
                    return;                                                                     \
                }                                                                               \
                o[v * s->ostrides[axis] + j * os_l] += x[k * src->strides[axis] + j * ss_l];    \
            }                                                                                   \
        }                                                                                       \
    }
CPU_SCATTER_TASK(cpu_scatter_f32, float)
CPU_SCATTER_TASK(cpu_scatter_f64, double)

tg_status tg__cpu_scatter_add(void *state, const tg_kargs *a) {
    (void)state;
    const tg_kview *src = &a->in[0], *idx = &a->in[1];
    tg_status st = tg__cpu_check_float(a, 1);
    if (st == TG_OK)
        st = cpu_index_check(a, &a->out, idx);
    if (st != TG_OK)
        return st;
    for (int d = 0; d < idx->ndim; d++) {
        if (src->ndim != idx->ndim || src->shape[d] != idx->shape[d])
            return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu scatter_add: src and index shapes differ");
    }
    cpu_scatter s = {.src = src, .idx = idx, .a = a, .axis = a->p->axis, .nd = idx->ndim};
    const int last = s.nd - 1;
    s.lim = a->out.shape[s.axis];
    tg__contig_strides(a->out.ndim, a->out.shape, s.ostrides);
    tg__contig_strides(idx->ndim, idx->shape, s.cstrides);
    const int64_t numel = tg__kview_numel(idx);
    tg__cpu_zero(a->out.data, (size_t)tg__kview_numel(&a->out) * tg__cpu_esize(a->out.dtype));
    if (numel == 0)
        return TG_OK;
    /* When the axis is the last dim, a task is one line along it; otherwise a
     * task also covers a block of the last dim, walked contiguously. */
    s.ncols = s.axis == last ? 1 : idx->shape[last];
    s.nblocks = (s.ncols + CPU_SCATTER_COLS - 1) / CPU_SCATTER_COLS;
    const int64_t ntasks = numel / idx->shape[s.axis] / s.ncols * s.nblocks;
    void (*task)(const cpu_scatter *, int64_t, cpu_bad *) =
        a->out.dtype == TG_F32 ? cpu_scatter_f32 : cpu_scatter_f64;
    cpu_bad bad = {.pos = -1};
    TG__CPU_FOR(tg__cpu_par_if(numel > TG__CPU_PAR_MIN), "omp parallel for schedule(static)",
                for (int64_t t = 0; t < ntasks; t++) task(&s, t, &bad););
    if (bad.pos >= 0)
        return cpu_bad_report(a, &bad, idx, s.axis, s.lim);
    return TG_OK;
}
