/*
 * kernels/cpu/cpu_elementwise.c: the strided loop driver and the elementwise
 * kernels (binary, where, unary).
 *
 * Each op is one expression written once; macros instantiate a row function
 * for f32 and f64 from it, and the driver walks the operands' strides and
 * calls the row function once per row. <tgmath.h> (sqrt, pow, fabs) and the
 * tg__cpu_v* macros of cpu.h (exp, log, erf, tanh) pick the float or double
 * function from the argument type, so the same expression serves both
 * precisions.
 */
#include <stdbool.h>
#include <string.h>
#include <tgmath.h>

#include "cpu.h"

/* ---- the loop driver ---- */

void tg__cpu_loop_init(tg__cpu_loop *l, int ndim, const int64_t *shape) {
    l->ndim = ndim;
    l->nops = 0;
    for (int d = 0; d < ndim; d++)
        l->shape[d] = shape[d];
}

void tg__cpu_loop_add(tg__cpu_loop *l, void *data, tg_dtype dt, const int64_t *strides) {
    int k = l->nops++;
    l->data[k] = data;
    l->esize[k] = tg__cpu_esize(dt);
    for (int d = 0; d < l->ndim; d++)
        l->strides[k][d] = strides[d];
}

/* True when, for every operand, one step along dim d equals a full sweep of
 * dim e, the next kept dim: then d and e can be walked by one counter. */
static bool loop_mergeable(const tg__cpu_loop *l, int d, int e) {
    for (int k = 0; k < l->nops; k++) {
        if (l->strides[k][d] != l->strides[k][e] * l->shape[e])
            return false;
    }
    return true;
}

static void loop_set_dim(tg__cpu_loop *l, int to, int from) {
    l->shape[to] = l->shape[from];
    for (int k = 0; k < l->nops; k++)
        l->strides[k][to] = l->strides[k][from];
}

/*
 * Drops size-1 dims (their strides never matter) and merges neighbours, so
 * that a contiguous operation becomes one long row and a row broadcast
 * becomes two dims whatever the original rank was.
 */
static void loop_collapse(tg__cpu_loop *l) {
    int nd = 0;
    for (int d = 0; d < l->ndim; d++) {
        if (l->shape[d] != 1)
            loop_set_dim(l, nd++, d);
    }
    if (nd == 0) {
        l->ndim = 1;
        l->shape[0] = 1;
        for (int k = 0; k < l->nops; k++)
            l->strides[k][0] = 1;
        return;
    }
    int last = 0;
    for (int d = 1; d < nd; d++) {
        if (loop_mergeable(l, last, d)) {
            l->shape[last] *= l->shape[d];
            for (int k = 0; k < l->nops; k++)
                l->strides[k][last] = l->strides[k][d];
        } else {
            loop_set_dim(l, ++last, d);
        }
    }
    l->ndim = last + 1;
}

/* Runs rows [r0, r0 + nrows) of the collapsed loop over columns
 * [c0, c0 + ncols) of the innermost dim. */
static void loop_rows(const tg__cpu_loop *l, tg__cpu_row_fn fn, const tg_op_params *p, int64_t r0,
                      int64_t nrows, int64_t c0, int64_t ncols) {
    const int outer = l->ndim - 1;
    int64_t coord[TG_MAX_DIMS];
    int64_t off[TG__CPU_MAX_OPERANDS];
    int64_t inner[TG__CPU_MAX_OPERANDS];
    char *ptr[TG__CPU_MAX_OPERANDS];

    for (int k = 0; k < l->nops; k++) {
        inner[k] = l->strides[k][outer];
        off[k] = c0 * inner[k];
    }
    int64_t r = r0;
    for (int d = outer - 1; d >= 0; d--) {
        coord[d] = r % l->shape[d];
        r /= l->shape[d];
        for (int k = 0; k < l->nops; k++)
            off[k] += coord[d] * l->strides[k][d];
    }
    for (int64_t i = 0; i < nrows; i++) {
        for (int k = 0; k < l->nops; k++)
            ptr[k] = l->data[k] + off[k] * (int64_t)l->esize[k];
        fn(ptr, inner, ncols, p);
        /* Advance the row odometer over the outer dims. */
        for (int d = outer - 1; d >= 0; d--) {
            for (int k = 0; k < l->nops; k++)
                off[k] += l->strides[k][d];
            if (++coord[d] < l->shape[d])
                break;
            coord[d] = 0;
            for (int k = 0; k < l->nops; k++)
                off[k] -= l->strides[k][d] * l->shape[d];
        }
    }
}

/* Side of the square tiles used when an input is read across its rows. */
#define CPU_TRANSPOSE_TILE 32

/*
 * Finds a dim that some input walks with stride 1 while its innermost dim has
 * a larger stride: the plain row loop would then read one element per cache
 * line (a transposed copy). Returns -1 when no input is laid out like that.
 */
static int loop_transposed_dim(const tg__cpu_loop *l) {
    const int last = l->ndim - 1;
    if (last < 1 || l->strides[0][last] != 1 || l->shape[last] < 8)
        return -1;
    for (int k = 1; k < l->nops; k++) {
        const int64_t s = l->strides[k][last];
        if (s == 0 || s == 1)
            continue;
        for (int d = last - 1; d >= 0; d--) {
            if (l->strides[k][d] == 1 && l->shape[d] >= 8)
                return d;
        }
    }
    return -1;
}

/*
 * Runs the loop in square tiles over dims j and the innermost one, so that
 * the cache lines an input brings in along j are reused by the next rows of
 * the tile instead of being evicted. Each tile writes short output rows.
 */
static void loop_run_tiled(const tg__cpu_loop *l, tg__cpu_row_fn fn, const tg_op_params *p, int j) {
    const int last = l->ndim - 1;
    const int64_t T = CPU_TRANSPOSE_TILE;
    const int64_t nj = (l->shape[j] + T - 1) / T, nl = (l->shape[last] + T - 1) / T;
    int64_t outer = 1;
    for (int d = 0; d < last; d++)
        outer *= d == j ? 1 : l->shape[d];
    int64_t inner[TG__CPU_MAX_OPERANDS];
    for (int k = 0; k < l->nops; k++)
        inner[k] = l->strides[k][last];
    const int64_t ntiles = outer * nj * nl;
    TG__CPU_FOR(
        tg__cpu_par_if(outer * l->shape[j] * l->shape[last] > TG__CPU_PAR_MIN),
        "omp parallel for schedule(static)", for (int64_t t = 0; t < ntiles; t++) {
            const int64_t c0 = t % nl * T, j0 = t / nl % nj * T;
            const int64_t nc = l->shape[last] - c0 < T ? l->shape[last] - c0 : T;
            const int64_t jn = l->shape[j] - j0 < T ? l->shape[j] - j0 : T;
            int64_t off[TG__CPU_MAX_OPERANDS], rest = t / (nl * nj);
            for (int k = 0; k < l->nops; k++)
                off[k] = c0 * inner[k] + j0 * l->strides[k][j];
            for (int d = last - 1; d >= 0; d--) {
                if (d == j)
                    continue;
                const int64_t c = rest % l->shape[d];
                rest /= l->shape[d];
                for (int k = 0; k < l->nops; k++)
                    off[k] += c * l->strides[k][d];
            }
            char *ptr[TG__CPU_MAX_OPERANDS];
            for (int64_t jj = 0; jj < jn; jj++) {
                for (int k = 0; k < l->nops; k++)
                    ptr[k] = l->data[k] + (off[k] + jj * l->strides[k][j]) * (int64_t)l->esize[k];
                fn(ptr, inner, nc, p);
            }
        });
}

void tg__cpu_loop_run(tg__cpu_loop *l, tg__cpu_row_fn fn, const tg_op_params *p) {
    for (int d = 0; d < l->ndim; d++) {
        if (l->shape[d] == 0)
            return;
    }
    loop_collapse(l);
    const int tj = loop_transposed_dim(l);
    if (tj >= 0) {
        loop_run_tiled(l, fn, p, tj);
        return;
    }
    const int64_t inner = l->shape[l->ndim - 1];
    int64_t rows = 1;
    for (int d = 0; d < l->ndim - 1; d++)
        rows *= l->shape[d];
    if (!tg__cpu_par_if(rows * inner > TG__CPU_PAR_MIN)) {
        loop_rows(l, fn, p, 0, rows, 0, inner);
        return;
    }
    /* Tasks hold about TG__CPU_TILE elements: long rows are cut into pieces,
     * short rows are grouped, so both shapes spread over all threads. */
    if (inner >= TG__CPU_TILE) {
        const int64_t per_row = (inner + TG__CPU_TILE - 1) / TG__CPU_TILE;
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < rows * per_row; t++) {
            int64_t c0 = (t % per_row) * TG__CPU_TILE;
            int64_t nc = inner - c0 < TG__CPU_TILE ? inner - c0 : TG__CPU_TILE;
            loop_rows(l, fn, p, t / per_row, 1, c0, nc);
        }
    } else {
        const int64_t per_task = TG__CPU_TILE / inner;
        const int64_t ntasks = (rows + per_task - 1) / per_task;
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < ntasks; t++) {
            int64_t r0 = t * per_task;
            int64_t nr = rows - r0 < per_task ? rows - r0 : per_task;
            loop_rows(l, fn, p, r0, nr, 0, inner);
        }
    }
}

/* ---- shared driver for the float kernels ---- */

/* Ops without parameters may be given none; the row functions of the others
 * read p, so a missing p becomes all zeros rather than a crash. */
static const tg_op_params cpu_no_params;

/* Walks the output and inputs 1..nin with fns[0] (f32) or fns[1] (f64).
 * first_any: input 0 may have any dtype (the condition of where). */
static tg_status cpu_map(const tg_kargs *a, int nin, bool first_any, const tg__cpu_row_fn *fns) {
    tg_status st;
    if (first_any) {
        st = tg__cpu_check_float(a, 0);
        for (int i = 1; st == TG_OK && i < nin; i++) {
            if (a->in[i].dtype != a->out.dtype)
                st = tg__cpu_fail(a, TG_ERR_DTYPE, "cpu %s: input %d dtype differs from the output",
                                  tg_op_name(a->op), i);
        }
    } else {
        st = tg__cpu_check_float(a, nin);
    }
    if (st != TG_OK)
        return st;
    for (int i = 0; i < nin; i++) {
        bool same = a->in[i].ndim == a->out.ndim;
        for (int d = 0; same && d < a->out.ndim; d++)
            same = a->in[i].shape[d] == a->out.shape[d];
        if (!same)
            return tg__cpu_fail(a, TG_ERR_SHAPE,
                                "cpu %s: input %d is not broadcast to the output shape",
                                tg_op_name(a->op), i);
    }
    tg__cpu_loop l;
    tg__cpu_loop_init(&l, a->out.ndim, a->out.shape);
    tg__cpu_loop_add(&l, a->out.data, a->out.dtype, a->out.strides);
    for (int i = 0; i < nin; i++)
        tg__cpu_loop_add(&l, a->in[i].data, a->in[i].dtype, a->in[i].strides);
    tg__cpu_loop_run(&l, fns[a->out.dtype == TG_F64], a->p ? a->p : &cpu_no_params);
    return TG_OK;
}

/* Walks the output and inputs with the row function for the output's dtype
 * (fns indexed by tg_dtype; NULL: the op does not take that dtype). Every
 * input has the output's dtype. */
static tg_status cpu_map_any(const tg_kargs *a, int nin, const tg__cpu_row_fn *fns) {
    const tg_dtype dt = a->out.dtype;
    if ((unsigned)dt >= TG_DTYPE_COUNT || !fns[dt])
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu %s: output dtype %s is not supported",
                            tg_op_name(a->op), tg_dtype_name(dt));
    for (int i = 0; i < nin; i++) {
        if (a->in[i].dtype != dt)
            return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu %s: input %d has dtype %s, expected %s",
                                tg_op_name(a->op), i, tg_dtype_name(a->in[i].dtype),
                                tg_dtype_name(dt));
        bool same = a->in[i].ndim == a->out.ndim;
        for (int d = 0; same && d < a->out.ndim; d++)
            same = a->in[i].shape[d] == a->out.shape[d];
        if (!same)
            return tg__cpu_fail(a, TG_ERR_SHAPE,
                                "cpu %s: input %d is not broadcast to the output shape",
                                tg_op_name(a->op), i);
    }
    tg__cpu_loop l;
    tg__cpu_loop_init(&l, a->out.ndim, a->out.shape);
    tg__cpu_loop_add(&l, a->out.data, dt, a->out.strides);
    for (int i = 0; i < nin; i++)
        tg__cpu_loop_add(&l, a->in[i].data, dt, a->in[i].strides);
    tg__cpu_loop_run(&l, fns[dt], a->p ? a->p : &cpu_no_params);
    return TG_OK;
}

/* ---- math helpers, one definition per precision ---- */

#define CPU_MATH_HELPERS(sfx, real)                                                        \
    static inline real cpu_math_gelu_##sfx(real x) {                                       \
        return (real)0.5 * x * ((real)1 + tg__cpu_verf(x * (real)0.70710678118654752440)); \
    }                                                                                      \
    /* gelu'(x) = Phi(x) + x phi(x) */                                                     \
    static inline real cpu_math_dgelu_##sfx(real x) {                                      \
        const real e = tg__cpu_verf(x * (real)0.70710678118654752440);                     \
        const real pdf = (real)0.39894228040143267794 * tg__cpu_vexp((real)-0.5 * x * x);  \
        return (real)0.5 + (real)0.5 * e + x * pdf;                                        \
    }
CPU_MATH_HELPERS(f32, float)
CPU_MATH_HELPERS(f64, double)
#undef CPU_MATH_HELPERS

#define cpu_gelu(x) _Generic((x), float : cpu_math_gelu_f32, double : cpu_math_gelu_f64)(x)
#define cpu_dgelu(x) _Generic((x), float : cpu_math_dgelu_f32, double : cpu_math_dgelu_f64)(x)

/* ---- binary ops: the expression sees a (input 0) and b (input 1) ---- */

/*
 * The row function has a branch per common stride pattern: both contiguous,
 * and one side a scalar (a broadcast along the row); the plain loops in those
 * branches vectorise. Anything else takes the general strided loop.
 */
#define CPU_BINARY_ROW(fname, TYPE, PRE, EXPR)                                      \
    TG__CPU_CLONES static void fname(char *const *ptr, const int64_t *s, int64_t n, \
                                     const tg_op_params *p) {                       \
        typedef TYPE real;                                                          \
        real *o = (real *)ptr[0];                                                   \
        const real *x = (const real *)ptr[1];                                       \
        const real *y = (const real *)ptr[2];                                       \
        const int64_t sx = s[1], sy = s[2];                                         \
        PRE(void) p;                                                                \
        if (sx == 1 && sy == 1) {                                                   \
            TG__CPU_SIMD("omp simd") for (int64_t i = 0; i < n; i++) {              \
                const real a = x[i], b = y[i];                                      \
                o[i] = (EXPR);                                                      \
            }                                                                       \
        } else if (sx == 1 && sy == 0) {                                            \
            const real b = y[0];                                                    \
            TG__CPU_SIMD("omp simd") for (int64_t i = 0; i < n; i++) {              \
                const real a = x[i];                                                \
                o[i] = (EXPR);                                                      \
            }                                                                       \
        } else if (sx == 0 && sy == 1) {                                            \
            const real a = x[0];                                                    \
            TG__CPU_SIMD("omp simd") for (int64_t i = 0; i < n; i++) {              \
                const real b = y[i];                                                \
                o[i] = (EXPR);                                                      \
            }                                                                       \
        } else {                                                                    \
            for (int64_t i = 0; i < n; i++) {                                       \
                const real a = x[i * sx], b = y[i * sy];                            \
                o[i] = (EXPR);                                                      \
            }                                                                       \
        }                                                                           \
    }

#define CPU_BINARY(name, PRE, EXPR)                                                \
    CPU_BINARY_ROW(cpu_##name##_f32, float, PRE, EXPR)                             \
    CPU_BINARY_ROW(cpu_##name##_f64, double, PRE, EXPR)                            \
    tg_status tg__cpu_##name(void *state, const tg_kargs *args) {                  \
        static const tg__cpu_row_fn fns[2] = {cpu_##name##_f32, cpu_##name##_f64}; \
        (void)state;                                                               \
        return cpu_map(args, 2, false, fns);                                       \
    }

/* The ops that also take integer operands (u8, i32, i64; wrapping). */
#define CPU_BINARY_INT(name, EXPR)                                                  \
    CPU_BINARY_ROW(cpu_##name##_f32, float, , EXPR)                                 \
    CPU_BINARY_ROW(cpu_##name##_f64, double, , EXPR)                                \
    CPU_BINARY_ROW(cpu_##name##_u8, uint8_t, , EXPR)                                \
    CPU_BINARY_ROW(cpu_##name##_i32, int32_t, , EXPR)                               \
    CPU_BINARY_ROW(cpu_##name##_i64, int64_t, , EXPR)                               \
    tg_status tg__cpu_##name(void *state, const tg_kargs *args) {                   \
        static const tg__cpu_row_fn fns[TG_DTYPE_COUNT] = {                         \
            [TG_F32] = cpu_##name##_f32, [TG_F64] = cpu_##name##_f64,               \
            [TG_U8] = cpu_##name##_u8,   [TG_I32] = cpu_##name##_i32,               \
            [TG_I64] = cpu_##name##_i64,                                            \
        };                                                                          \
        (void)state;                                                                \
        return cpu_map_any(args, 2, fns);                                           \
    }

/* maximum/minimum: NaN in either operand propagates, as in PyTorch. */
#define CPU_MAXMIN(sfx, T, NAN_TEST)                                              \
    static inline T cpu_vmax_##sfx(T a, T b) { return (NAN_TEST(a) || a > b) ? a : b; } \
    static inline T cpu_vmin_##sfx(T a, T b) { return (NAN_TEST(a) || a < b) ? a : b; }
#define CPU_NAN(x) isnan(x)
#define CPU_NO_NAN(x) ((void)(x), 0)
CPU_MAXMIN(f32, float, CPU_NAN)
CPU_MAXMIN(f64, double, CPU_NAN)
CPU_MAXMIN(u8, uint8_t, CPU_NO_NAN)
CPU_MAXMIN(i32, int32_t, CPU_NO_NAN)
CPU_MAXMIN(i64, int64_t, CPU_NO_NAN)
#undef CPU_MAXMIN
/* Integer add/sub/mul wrap: the arithmetic runs in uint64_t, where
 * overflow is defined, and is truncated to the dtype (signed overflow would
 * be undefined behaviour in C). */
#define CPU_WRAP(sfx, T, OP, NAME)                                                          \
    static inline T cpu_##NAME##_##sfx(T a, T b) { return (T)((uint64_t)a OP(uint64_t) b); }
#define CPU_PLAIN(sfx, T, OP, NAME) \
    static inline T cpu_##NAME##_##sfx(T a, T b) { return a OP b; }
#define CPU_ARITH(GEN, sfx, T) GEN(sfx, T, +, wadd) GEN(sfx, T, -, wsub) GEN(sfx, T, *, wmul)
CPU_ARITH(CPU_PLAIN, f32, float)
CPU_ARITH(CPU_PLAIN, f64, double)
CPU_ARITH(CPU_WRAP, u8, uint8_t)
CPU_ARITH(CPU_WRAP, i32, int32_t)
CPU_ARITH(CPU_WRAP, i64, int64_t)
#undef CPU_ARITH
#undef CPU_PLAIN
#undef CPU_WRAP
#define CPU_GENERIC_2(fn, a, b)                                                            \
    _Generic((a), float: fn##_f32, double: fn##_f64, uint8_t: fn##_u8, int32_t: fn##_i32, \
             int64_t: fn##_i64)(a, b)

CPU_BINARY_INT(add, CPU_GENERIC_2(cpu_wadd, a, b))
CPU_BINARY_INT(sub, CPU_GENERIC_2(cpu_wsub, a, b))
CPU_BINARY_INT(mul, CPU_GENERIC_2(cpu_wmul, a, b))
CPU_BINARY(div, , a / b)
CPU_BINARY_INT(eq, (real)(a == b))
CPU_BINARY_INT(ne, (real)(a != b))
CPU_BINARY_INT(gt, (real)(a > b))
CPU_BINARY_INT(ge, (real)(a >= b))
CPU_BINARY_INT(lt, (real)(a < b))
CPU_BINARY_INT(le, (real)(a <= b))
CPU_BINARY_INT(maximum, CPU_GENERIC_2(cpu_vmax, a, b))
CPU_BINARY_INT(minimum, CPU_GENERIC_2(cpu_vmin, a, b))
/* a is the incoming gradient, b the forward input. */
CPU_BINARY(relu_backward, , b > 0 ? a : (real)0)
CPU_BINARY(gelu_backward, , a * cpu_dgelu(b))
CPU_BINARY(clamp_backward, const real lo = (real)p->f[0]; const real hi = (real)p->f[1];
           , (lo <= b && b <= hi) ? a : (real)0)

/* ---- where: input 0 is the condition, of any dtype ---- */

#define CPU_WHERE_ROW(fname, CTYPE, TYPE)                                           \
    TG__CPU_CLONES static void fname(char *const *ptr, const int64_t *s, int64_t n, \
                                     const tg_op_params *p) {                       \
        typedef TYPE real;                                                          \
        real *o = (real *)ptr[0];                                                   \
        const CTYPE *c = (const CTYPE *)ptr[1];                                     \
        const real *x = (const real *)ptr[2];                                       \
        const real *y = (const real *)ptr[3];                                       \
        const int64_t sc = s[1], sx = s[2], sy = s[3];                              \
        (void)p;                                                                    \
        if (sc == 1 && sx == 1 && sy == 1) {                                        \
            /* Both values are loaded unconditionally: a conditional load           \
             * would keep the loop from vectorising. */                             \
            TG__CPU_SIMD("omp simd") for (int64_t i = 0; i < n; i++) {              \
                const real xv = x[i], yv = y[i];                                    \
                o[i] = c[i] != 0 ? xv : yv;                                         \
            }                                                                       \
        } else {                                                                    \
            for (int64_t i = 0; i < n; i++)                                         \
                o[i] = c[i * sc] != 0 ? x[i * sx] : y[i * sy];                      \
        }                                                                           \
    }

#define CPU_WHERE_COND(csfx, CTYPE)                     \
    CPU_WHERE_ROW(cpu_where_##csfx##_f32, CTYPE, float) \
    CPU_WHERE_ROW(cpu_where_##csfx##_f64, CTYPE, double)
CPU_WHERE_COND(f32, float)
CPU_WHERE_COND(f64, double)
CPU_WHERE_COND(u8, uint8_t)
CPU_WHERE_COND(i32, int32_t)
CPU_WHERE_COND(i64, int64_t)

tg_status tg__cpu_where(void *state, const tg_kargs *a) {
    /* Indexed by the condition's dtype, then by the value dtype. */
    static const tg__cpu_row_fn fns[TG_DTYPE_COUNT][2] = {
        [TG_F32] = {cpu_where_f32_f32, cpu_where_f32_f64},
        [TG_F64] = {cpu_where_f64_f32, cpu_where_f64_f64},
        [TG_U8] = {cpu_where_u8_f32, cpu_where_u8_f64},
        [TG_I32] = {cpu_where_i32_f32, cpu_where_i32_f64},
        [TG_I64] = {cpu_where_i64_f32, cpu_where_i64_f64},
    };
    (void)state;
    if ((unsigned)a->in[0].dtype >= TG_DTYPE_COUNT)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu where: unknown condition dtype %d",
                            (int)a->in[0].dtype);
    return cpu_map(a, 3, true, fns[a->in[0].dtype]);
}

/* ---- unary ops: the expression sees a ---- */

#define CPU_UNARY_ROW(fname, TYPE, PRE, EXPR)                                       \
    TG__CPU_CLONES static void fname(char *const *ptr, const int64_t *s, int64_t n, \
                                     const tg_op_params *p) {                       \
        typedef TYPE real;                                                          \
        real *o = (real *)ptr[0];                                                   \
        const real *x = (const real *)ptr[1];                                       \
        const int64_t sx = s[1];                                                    \
        PRE(void) p;                                                                \
        if (sx == 1) {                                                              \
            TG__CPU_SIMD("omp simd") for (int64_t i = 0; i < n; i++) {              \
                const real a = x[i];                                                \
                o[i] = (EXPR);                                                      \
            }                                                                       \
        } else {                                                                    \
            for (int64_t i = 0; i < n; i++) {                                       \
                const real a = x[i * sx];                                           \
                o[i] = (EXPR);                                                      \
            }                                                                       \
        }                                                                           \
    }

#define CPU_UNARY(name, PRE, EXPR)                                                 \
    CPU_UNARY_ROW(cpu_##name##_f32, float, PRE, EXPR)                              \
    CPU_UNARY_ROW(cpu_##name##_f64, double, PRE, EXPR)                             \
    tg_status tg__cpu_##name(void *state, const tg_kargs *args) {                  \
        static const tg__cpu_row_fn fns[2] = {cpu_##name##_f32, cpu_##name##_f64}; \
        (void)state;                                                               \
        return cpu_map(args, 1, false, fns);                                       \
    }

CPU_UNARY(neg, , -a)
CPU_UNARY(affine, const real w = (real)p->f[0]; const real c = (real)p->f[1];, w *a + c)

/*
 * pow_scalar: the common exponents (squares in norms and variances, square
 * roots, reciprocals) get their own row functions, faster than pow and, for
 * the integer ones, exactly rounded; 0.5 and -0.5 go through sqrt as in
 * PyTorch. Choosing the row function once keeps the branch out of the loop.
 */
#define CPU_POW_ROWS(name, EXPR)                   \
    CPU_UNARY_ROW(cpu_##name##_f32, float, , EXPR) \
    CPU_UNARY_ROW(cpu_##name##_f64, double, , EXPR)
CPU_POW_ROWS(pow_2, a *a)
CPU_POW_ROWS(pow_3, a *a *a)
CPU_POW_ROWS(pow_half, sqrt(a))
CPU_POW_ROWS(pow_mhalf, (real)1 / sqrt(a))
CPU_POW_ROWS(pow_m1, (real)1 / a)
CPU_POW_ROWS(pow_m2, (real)1 / (a * a))
CPU_UNARY_ROW(cpu_pow_f32, float, const float e = (float)p->f[0];, pow(a, e))
CPU_UNARY_ROW(cpu_pow_f64, double, const double e = p->f[0];, pow(a, e))

tg_status tg__cpu_pow_scalar(void *state, const tg_kargs *args) {
    static const struct {
        double e;
        tg__cpu_row_fn fns[2];
    } special[] = {
        {2.0, {cpu_pow_2_f32, cpu_pow_2_f64}},       {3.0, {cpu_pow_3_f32, cpu_pow_3_f64}},
        {0.5, {cpu_pow_half_f32, cpu_pow_half_f64}}, {-0.5, {cpu_pow_mhalf_f32, cpu_pow_mhalf_f64}},
        {-1.0, {cpu_pow_m1_f32, cpu_pow_m1_f64}},    {-2.0, {cpu_pow_m2_f32, cpu_pow_m2_f64}},
    };
    static const tg__cpu_row_fn generic[2] = {cpu_pow_f32, cpu_pow_f64};
    (void)state;
    const double e = args->p ? args->p->f[0] : 0.0;
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
        if (e == special[i].e)
            return cpu_map(args, 1, false, special[i].fns);
    }
    return cpu_map(args, 1, false, generic);
}
CPU_UNARY(exp, , tg__cpu_vexp(a))
CPU_UNARY(log, , tg__cpu_vlog(a))
CPU_UNARY(sqrt, , sqrt(a))
CPU_UNARY(abs, , fabs(a))
CPU_UNARY(erf, , tg__cpu_verf(a))
/* Written so that NaN passes through, as in PyTorch. */
CPU_UNARY(relu, , a < 0 ? (real)0 : a)
/*
 * 1 / (1 + exp(-x)) is stable at both ends: for large negative x, exp(-x)
 * overflows to +inf only where the true result is below the smallest normal
 * number, and 1 / inf is 0; for large positive x it tends to 1 / 1. Without
 * a branch, the loop vectorises.
 */
CPU_UNARY(sigmoid, , (real)1 / ((real)1 + tg__cpu_vexp(-a)))
CPU_UNARY(tanh, , tg__cpu_vtanh(a))
CPU_UNARY(silu, , a / ((real)1 + tg__cpu_vexp(-a)))
CPU_UNARY(gelu, , cpu_gelu(a))
/* NaN passes through: both comparisons are false for it. */
CPU_UNARY(clamp, const real lo = (real)p->f[0]; const real hi = (real)p->f[1];
          , a < lo ? lo : (a > hi ? hi : a))
CPU_UNARY(sign, , (real)((a > 0) - (a < 0)))
CPU_UNARY(sin, , sin(a))
CPU_UNARY(cos, , cos(a))
