/*
 * kernels/cpu/cpu_reduce.c: sum, mean, max, min over a set of axes, and
 * argmax along one axis.
 *
 * The input's dims are split into kept dims (the output's, in order) and
 * reduced dims, and neighbours in each list that step as one are merged. Two
 * loop shapes cover the common layouts:
 *   - row: each output reads its reduced elements with the innermost reduced
 *     dim as the inner loop (reducing over the last axis);
 *   - column: the innermost kept dim is contiguous in the input, so a block
 *     of outputs is updated together by a contiguous inner loop while the
 *     reduced dims are walked outside it (reducing over leading axes, as for
 *     a bias gradient).
 *
 * Determinism: every output is reduced in an order fixed by the shapes alone.
 * When there are too few independent outputs to keep threads busy, the
 * reduced range is cut into Q pieces, Q chosen from the shapes and never
 * from the thread count; partial results are combined in piece order. Sums
 * accumulate in double for both dtypes, which also makes long f32 sums
 * accurate.
 */
#include <math.h>
#include <stdbool.h>

#include "cpu.h"

/*
 * Outputs processed together by the column loop (a 4 KiB accumulator). Each
 * step of that loop reads one run of this many input elements and then
 * jumps a full row ahead, usually to another page; long runs keep the
 * hardware prefetcher streaming instead of waiting on every jump.
 */
#define CPU_RED_COLS 512
/* Fewer independent tasks than this leave threads idle: cut the reduced range. */
#define CPU_RED_MIN_TASKS 64
/* The least work (input elements) in one piece of a cut range, and the most
 * pieces per output. */
#define CPU_RED_PIECE_MIN 16384
#define CPU_RED_PIECES_MAX 64
/* Partial results live on the stack: at most this many doubles (64 KiB). */
#define CPU_RED_PARTIALS 8192
/* Below this many columns the column loop's inner loop is too short to pay. */
#define CPU_RED_MIN_COLS 16

typedef enum cpu_red_kind {
    CPU_RED_SUM,
    CPU_RED_MAX,
    CPU_RED_MIN
} cpu_red_kind;

/* The input split into kept dims (output order) and reduced dims. Both lists
 * have at least one dim (a size-1 stand-in when empty). */
typedef struct cpu_red {
    int nk, nr;
    int64_t kshape[TG_MAX_DIMS], kstride[TG_MAX_DIMS];
    int64_t rshape[TG_MAX_DIMS], rstride[TG_MAX_DIMS];
    int64_t M, K;
} cpu_red;

/* Appends a dim, merging it into the previous one when the previous steps
 * over exactly this one; the flattened row-major order is unchanged. */
static void red_push(int *n, int64_t *shape, int64_t *stride, int64_t size, int64_t st) {
    if (*n > 0 && stride[*n - 1] == st * size) {
        shape[*n - 1] *= size;
        stride[*n - 1] = st;
        return;
    }
    shape[*n] = size;
    stride[*n] = st;
    (*n)++;
}

static void red_build(const tg_kview *x, uint32_t axes, cpu_red *r) {
    r->nk = r->nr = 0;
    r->M = r->K = 1;
    for (int d = 0; d < x->ndim; d++) {
        bool reduced = (axes >> d) & 1u;
        if (reduced)
            r->K *= x->shape[d];
        else
            r->M *= x->shape[d];
        if (x->shape[d] == 1)
            continue;
        if (reduced)
            red_push(&r->nr, r->rshape, r->rstride, x->shape[d], x->strides[d]);
        else
            red_push(&r->nk, r->kshape, r->kstride, x->shape[d], x->strides[d]);
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

/* Element offset of the idx-th position (row-major) of a dim list. */
static int64_t red_offset(int n, const int64_t *shape, const int64_t *stride, int64_t idx) {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; d--) {
        off += idx % shape[d] * stride[d];
        idx /= shape[d];
    }
    return off;
}

/*
 * Combining for partial results and column accumulators. NaN wins in max and
 * min, as in PyTorch: once acc is NaN neither comparison replaces it. The
 * bitwise | keeps the select branch-free so that column loops vectorise.
 */
#define CPU_RED_ADD(acc, v) ((acc) + (v))
#define CPU_RED_MAX(acc, v) ((((v) > (acc)) | ((v) != (v))) ? (v) : (acc))
#define CPU_RED_MIN(acc, v) ((((v) < (acc)) | ((v) != (v))) ? (v) : (acc))
/* The row loops keep NaN in a separate flag instead, which lets them use the
 * OpenMP max/min reductions. */
#define CPU_ROW_MAX(acc, v) ((v) > (acc) ? (v) : (acc))
#define CPU_ROW_MIN(acc, v) ((v) < (acc) ? (v) : (acc))

static double red_combine(cpu_red_kind kind, double acc, double v) {
    switch (kind) {
    case CPU_RED_SUM:
        return CPU_RED_ADD(acc, v);
    case CPU_RED_MAX:
        return CPU_RED_MAX(acc, v);
    default:
        return CPU_RED_MIN(acc, v);
    }
}

static double red_init(cpu_red_kind kind) {
    return kind == CPU_RED_SUM ? 0.0 : kind == CPU_RED_MAX ? -INFINITY : INFINITY;
}

typedef double (*cpu_range_fn)(const char *base, const cpu_red *r, int64_t r0, int64_t r1);
typedef void (*cpu_cols_fn)(const char *base, const cpu_red *r, int64_t r0, int64_t r1, int64_t nc,
                            double *acc);

/*
 * range: reduces the reduced positions [r0, r1) (row-major over the reduced
 * dims) of one output starting at base, the innermost reduced dim inside.
 * cols: the same positions for nc contiguous outputs at once, into acc[].
 * ROW combines inside a row (NaN tracked by the flag), SIMD is the pragma
 * that vectorises a contiguous row, COL combines into column accumulators.
 */
#define CPU_RED_FUNCS(name, TYPE, KIND, ROW, SIMD, COL)                                            \
    TG__CPU_CLONES static double cpu_range_##name(const char *base_, const cpu_red *r, int64_t r0, \
                                                  int64_t r1) {                                    \
        const TYPE *base = (const TYPE *)base_;                                                    \
        const int in = r->nr - 1;                                                                  \
        const int64_t n_in = r->rshape[in], s_in = r->rstride[in];                                 \
        int64_t coord[TG_MAX_DIMS];                                                                \
        int64_t c = r0 % n_in, rest = r0 / n_in, off = 0, left = r1 - r0;                          \
        for (int d = in - 1; d >= 0; d--) {                                                        \
            coord[d] = rest % r->rshape[d];                                                        \
            rest /= r->rshape[d];                                                                  \
            off += coord[d] * r->rstride[d];                                                       \
        }                                                                                          \
        double acc = red_init(KIND);                                                               \
        int nan = 0;                                                                               \
        while (left > 0) {                                                                         \
            const int64_t cnt = n_in - c < left ? n_in - c : left;                                 \
            const TYPE *p = base + off + c * s_in;                                                 \
            if (s_in == 1) {                                                                       \
                SIMD for (int64_t i = 0; i < cnt; i++) {                                           \
                    const double v = p[i];                                                         \
                    acc = ROW(acc, v);                                                             \
                    nan |= v != v;                                                                 \
                }                                                                                  \
            } else {                                                                               \
                for (int64_t i = 0; i < cnt; i++) {                                                \
                    const double v = p[i * s_in];                                                  \
                    acc = ROW(acc, v);                                                             \
                    nan |= v != v;                                                                 \
                }                                                                                  \
            }                                                                                      \
            left -= cnt;                                                                           \
            c = 0;                                                                                 \
            for (int d = in - 1; d >= 0; d--) {                                                    \
                off += r->rstride[d];                                                              \
                if (++coord[d] < r->rshape[d])                                                     \
                    break;                                                                         \
                coord[d] = 0;                                                                      \
                off -= r->rstride[d] * r->rshape[d];                                               \
            }                                                                                      \
        }                                                                                          \
        return nan && (KIND) != CPU_RED_SUM ? NAN : acc;                                           \
    }                                                                                              \
    TG__CPU_CLONES static void cpu_cols_##name(const char *base_, const cpu_red *r, int64_t r0,    \
                                               int64_t r1, int64_t nc, double *acc) {              \
        const TYPE *base = (const TYPE *)base_;                                                    \
        int64_t coord[TG_MAX_DIMS];                                                                \
        int64_t rest = r0, off = 0;                                                                \
        for (int d = r->nr - 1; d >= 0; d--) {                                                     \
            coord[d] = rest % r->rshape[d];                                                        \
            rest /= r->rshape[d];                                                                  \
            off += coord[d] * r->rstride[d];                                                       \
        }                                                                                          \
        for (int64_t k = r0; k < r1; k++) {                                                        \
            const TYPE *p = base + off;                                                            \
            TG__CPU_SIMD("omp simd") for (int64_t j = 0; j < nc; j++) {                            \
                const double v = p[j];                                                             \
                acc[j] = COL(acc[j], v);                                                           \
            }                                                                                      \
            for (int d = r->nr - 1; d >= 0; d--) {                                                 \
                off += r->rstride[d];                                                              \
                if (++coord[d] < r->rshape[d])                                                     \
                    break;                                                                         \
                coord[d] = 0;                                                                      \
                off -= r->rstride[d] * r->rshape[d];                                               \
            }                                                                                      \
        }                                                                                          \
    }

#define CPU_SIMD_SUM TG__CPU_SIMD("omp simd reduction(+ : acc) reduction(| : nan)")
#define CPU_SIMD_MAX TG__CPU_SIMD("omp simd reduction(max : acc) reduction(| : nan)")
#define CPU_SIMD_MIN TG__CPU_SIMD("omp simd reduction(min : acc) reduction(| : nan)")
CPU_RED_FUNCS(sum_f32, float, CPU_RED_SUM, CPU_RED_ADD, CPU_SIMD_SUM, CPU_RED_ADD)
CPU_RED_FUNCS(sum_f64, double, CPU_RED_SUM, CPU_RED_ADD, CPU_SIMD_SUM, CPU_RED_ADD)
CPU_RED_FUNCS(max_f32, float, CPU_RED_MAX, CPU_ROW_MAX, CPU_SIMD_MAX, CPU_RED_MAX)
CPU_RED_FUNCS(max_f64, double, CPU_RED_MAX, CPU_ROW_MAX, CPU_SIMD_MAX, CPU_RED_MAX)
CPU_RED_FUNCS(min_f32, float, CPU_RED_MIN, CPU_ROW_MIN, CPU_SIMD_MIN, CPU_RED_MIN)
CPU_RED_FUNCS(min_f64, double, CPU_RED_MIN, CPU_ROW_MIN, CPU_SIMD_MIN, CPU_RED_MIN)

/* Everything one reduction needs while it runs. */
typedef struct cpu_red_job {
    cpu_red r;
    cpu_red_kind kind;
    bool mean;
    bool column;
    const char *x;
    size_t esize;
    void *out;
    tg_dtype dt;
    cpu_range_fn range;
    cpu_cols_fn cols;
    /* Column loop: outputs per outer index, and blocks per outer index. */
    int64_t ncols, nblocks;
    /* Pieces of the reduced range (1: not cut). */
    int64_t Q;
} cpu_red_job;

static void red_store(const cpu_red_job *j, int64_t m, double v) {
    if (j->mean)
        v /= (double)j->r.K;
    if (j->dt == TG_F32)
        ((float *)j->out)[m] = (float)v;
    else
        ((double *)j->out)[m] = v;
}

/* Reduces column block t (outer index t / nblocks) over pieces [r0, r1) into acc. */
static int64_t red_column_block(const cpu_red_job *j, int64_t t, int64_t r0, int64_t r1,
                                double *acc, int64_t *nc) {
    const cpu_red *r = &j->r;
    const int64_t o = t / j->nblocks, j0 = t % j->nblocks * CPU_RED_COLS;
    *nc = j->ncols - j0 < CPU_RED_COLS ? j->ncols - j0 : CPU_RED_COLS;
    const int64_t base = red_offset(r->nk - 1, r->kshape, r->kstride, o) + j0;
    const double init = red_init(j->kind);
    for (int64_t c = 0; c < *nc; c++)
        acc[c] = init;
    j->cols(j->x + base * (int64_t)j->esize, r, r0, r1, *nc, acc);
    return o * j->ncols + j0;
}

/* Task t of the uncut reduction: one output (row) or one column block. */
static void red_task_full(const cpu_red_job *j, int64_t t) {
    const cpu_red *r = &j->r;
    if (j->column) {
        double acc[CPU_RED_COLS];
        int64_t nc;
        int64_t m0 = red_column_block(j, t, 0, r->K, acc, &nc);
        for (int64_t c = 0; c < nc; c++)
            red_store(j, m0 + c, acc[c]);
    } else {
        const int64_t base = red_offset(r->nk, r->kshape, r->kstride, t);
        red_store(j, t, j->range(j->x + base * (int64_t)j->esize, r, 0, r->K));
    }
}

/* Task t of the cut reduction: piece t % Q of one output or column block,
 * written to partial[m * Q + piece]. */
static void red_task_piece(const cpu_red_job *j, int64_t t, double *partial) {
    const cpu_red *r = &j->r;
    const int64_t q = t % j->Q, u = t / j->Q;
    const int64_t r0 = r->K * q / j->Q, r1 = r->K * (q + 1) / j->Q;
    if (j->column) {
        double acc[CPU_RED_COLS];
        int64_t nc;
        int64_t m0 = red_column_block(j, u, r0, r1, acc, &nc);
        for (int64_t c = 0; c < nc; c++)
            partial[(m0 + c) * j->Q + q] = acc[c];
    } else {
        const int64_t base = red_offset(r->nk, r->kshape, r->kstride, u);
        partial[u * j->Q + q] = j->range(j->x + base * (int64_t)j->esize, r, r0, r1);
    }
}

static tg_status cpu_reduce(const tg_kargs *a, cpu_red_kind kind, bool mean) {
    tg_status st = tg__cpu_check_float(a, 1);
    if (st != TG_OK)
        return st;
    const tg_kview *x = &a->in[0];
    const uint32_t axes = a->p->axes;
    if (x->ndim < 32 && (axes >> x->ndim) != 0)
        return tg__cpu_fail(a, TG_ERR_AXIS, "cpu %s: axes mask 0x%x names dims beyond %d",
                            tg_op_name(a->op), (unsigned)axes, x->ndim);
    cpu_red_job j = {.kind = kind,
                     .mean = mean,
                     .x = x->data,
                     .esize = tg__cpu_esize(x->dtype),
                     .out = a->out.data,
                     .dt = a->out.dtype,
                     .Q = 1};
    red_build(x, axes, &j.r);
    const cpu_red *r = &j.r;
    if (r->M != tg__kview_numel(&a->out))
        return tg__cpu_fail(a, TG_ERR_SHAPE,
                            "cpu %s: output has %" PRId64 " elements, expected %" PRId64,
                            tg_op_name(a->op), tg__kview_numel(&a->out), r->M);
    if (r->M == 0)
        return TG_OK;
    if (r->K == 0) {
        /* An empty sum is 0 and an empty mean 0 / 0, as in PyTorch; max and
         * min have no value to give. The loops below assume K > 0. */
        if (kind != CPU_RED_SUM)
            return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu %s: reduction over an empty dim",
                                tg_op_name(a->op));
        for (int64_t m = 0; m < r->M; m++)
            red_store(&j, m, mean ? NAN : 0.0);
        return TG_OK;
    }
    static const cpu_range_fn ranges[3][2] = {{cpu_range_sum_f32, cpu_range_sum_f64},
                                              {cpu_range_max_f32, cpu_range_max_f64},
                                              {cpu_range_min_f32, cpu_range_min_f64}};
    static const cpu_cols_fn cols[3][2] = {{cpu_cols_sum_f32, cpu_cols_sum_f64},
                                           {cpu_cols_max_f32, cpu_cols_max_f64},
                                           {cpu_cols_min_f32, cpu_cols_min_f64}};
    j.range = ranges[kind][j.dt == TG_F64];
    j.cols = cols[kind][j.dt == TG_F64];

    j.ncols = r->kshape[r->nk - 1];
    j.column = r->kstride[r->nk - 1] == 1 && j.ncols >= CPU_RED_MIN_COLS && r->K > 1;
    int64_t ntasks = r->M;
    if (j.column) {
        j.nblocks = (j.ncols + CPU_RED_COLS - 1) / CPU_RED_COLS;
        ntasks = r->M / j.ncols * j.nblocks;
    }
    /* How a reduction is cut depends on its size alone, so its bits do not
     * depend on the thread count; whether a region runs depends on both. */
    const bool big = r->M * r->K > TG__CPU_PAR_MIN, par = tg__cpu_par_if(big);
    if (big && ntasks < CPU_RED_MIN_TASKS && r->M <= CPU_RED_PARTIALS / 2) {
        const int64_t width = j.column ? (j.ncols < CPU_RED_COLS ? j.ncols : CPU_RED_COLS) : 1;
        int64_t q = r->K * width / CPU_RED_PIECE_MIN;
        q = q < CPU_RED_PIECES_MAX ? q : CPU_RED_PIECES_MAX;
        j.Q = q < CPU_RED_PARTIALS / r->M ? q : CPU_RED_PARTIALS / r->M;
    }
    if (j.Q < 2) {
        TG__CPU_FOR(par, "omp parallel for schedule(static)",
                    for (int64_t t = 0; t < ntasks; t++) red_task_full(&j, t););
        return TG_OK;
    }
    double partial[CPU_RED_PARTIALS];
    TG__CPU_FOR(par, "omp parallel for schedule(static)",
                for (int64_t t = 0; t < ntasks * j.Q; t++) red_task_piece(&j, t, partial););
    for (int64_t m = 0; m < r->M; m++) {
        double v = partial[m * j.Q];
        for (int64_t q = 1; q < j.Q; q++)
            v = red_combine(kind, v, partial[m * j.Q + q]);
        red_store(&j, m, v);
    }
    return TG_OK;
}

tg_status tg__cpu_sum(void *state, const tg_kargs *a) {
    (void)state;
    if (a->in[0].dtype == TG_U8 || a->in[0].dtype == TG_I32 || a->in[0].dtype == TG_I64)
        return tg__cpu_sum_int(a);
    return cpu_reduce(a, CPU_RED_SUM, false);
}

tg_status tg__cpu_mean(void *state, const tg_kargs *a) {
    (void)state;
    return cpu_reduce(a, CPU_RED_SUM, true);
}

tg_status tg__cpu_max(void *state, const tg_kargs *a) {
    (void)state;
    return cpu_reduce(a, CPU_RED_MAX, false);
}

tg_status tg__cpu_min(void *state, const tg_kargs *a) {
    (void)state;
    return cpu_reduce(a, CPU_RED_MIN, false);
}

/* ---- argmax ---- */

/* Index of the first maximum of n elements with stride s; the first NaN
 * counts as the maximum, as in PyTorch. */
#define CPU_ARGMAX_LINE(name, TYPE)                             \
    static int64_t name(const char *x_, int64_t n, int64_t s) { \
        const TYPE *x = (const TYPE *)x_;                       \
        TYPE best = x[0];                                       \
        int64_t at = 0;                                         \
        if (best != best)                                       \
            return 0;                                           \
        for (int64_t k = 1; k < n; k++) {                       \
            const TYPE v = x[k * s];                            \
            if (v > best) {                                     \
                best = v;                                       \
                at = k;                                         \
            } else if (v != v) {                                \
                return k;                                       \
            }                                                   \
        }                                                       \
        return at;                                              \
    }
CPU_ARGMAX_LINE(cpu_argmax_f32, float)
CPU_ARGMAX_LINE(cpu_argmax_f64, double)

tg_status tg__cpu_argmax(void *state, const tg_kargs *a) {
    (void)state;
    const tg_kview *x = &a->in[0];
    if (x->dtype != TG_F32 && x->dtype != TG_F64)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu argmax: input must be f32 or f64");
    if (a->out.dtype != TG_I64)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu argmax: output must be i64");
    const int axis = a->p->axis;
    if (axis < 0 || axis >= x->ndim)
        return tg__cpu_fail(a, TG_ERR_AXIS, "cpu argmax: axis %d invalid for %d dims", axis,
                            x->ndim);
    cpu_red r;
    red_build(x, 1u << axis, &r);
    if (r.M != tg__kview_numel(&a->out))
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu argmax: output has the wrong size");
    if (r.M == 0)
        return TG_OK;
    if (r.K == 0)
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu argmax: reduction over an empty dim");
    int64_t (*line)(const char *, int64_t, int64_t) =
        x->dtype == TG_F32 ? cpu_argmax_f32 : cpu_argmax_f64;
    const int64_t esize = (int64_t)tg__cpu_esize(x->dtype);
    const char *base = x->data;
    int64_t *out = a->out.data;
    if (tg__cpu_par_if(r.M * r.K > TG__CPU_PAR_MIN)) {
#pragma omp parallel for schedule(static)
        for (int64_t m = 0; m < r.M; m++)
            out[m] =
                line(base + red_offset(r.nk, r.kshape, r.kstride, m) * esize, r.K, r.rstride[0]);
    } else {
        for (int64_t m = 0; m < r.M; m++)
            out[m] =
                line(base + red_offset(r.nk, r.kshape, r.kstride, m) * esize, r.K, r.rstride[0]);
    }
    return TG_OK;
}
