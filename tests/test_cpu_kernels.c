/*
 * tests/test_cpu_kernels.c: the CPU kernels called directly through
 * tg_backend_cpu()->kernels[], on small hand-made strided inputs, against
 * naive reference loops in double precision.
 *
 * Covered: every elementwise op in f32 and f64 with contiguous, row- and
 * scalar-broadcast and transposed inputs (and one size above the threading
 * threshold); where with every condition dtype; reductions over every axis
 * set of a 3-D input, contiguous and permuted, plus large reductions that
 * take the cut-and-combine path, checked for identical bits at 1 and 4
 * threads; argmax ties; matmul with every transpose combination, batch
 * broadcast on either side and k == 0; copy / reshape / concat /
 * slice_scatter for 1-, 4- and 8-byte dtypes; softmax and log_softmax along
 * each axis; gather and scatter_add with duplicate indices and their
 * out-of-range errors; the backend's memory and in-place helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/kernels.h"

static const tg_dtype float_dtypes[2] = {TG_F32, TG_F64};

/* ---- helpers ---- */

static size_t esize(tg_dtype dt) {
    return dt == TG_U8 ? 1 : (dt == TG_F32 || dt == TG_I32) ? 4 : 8;
}

/* A deterministic sequence in [-1, 1). */
static double rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) / (double)(1ULL << 52) * 2.0 - 1.0;
}

static void set_elem(tg_dtype dt, void *p, int64_t i, double v) {
    switch (dt) {
    case TG_F32:
        ((float *)p)[i] = (float)v;
        break;
    case TG_F64:
        ((double *)p)[i] = v;
        break;
    case TG_U8:
        ((uint8_t *)p)[i] = (uint8_t)v;
        break;
    case TG_I32:
        ((int32_t *)p)[i] = (int32_t)v;
        break;
    default:
        ((int64_t *)p)[i] = (int64_t)v;
        break;
    }
}

static double get_elem(tg_dtype dt, const void *p, int64_t i) {
    switch (dt) {
    case TG_F32:
        return ((const float *)p)[i];
    case TG_F64:
        return ((const double *)p)[i];
    case TG_U8:
        return ((const uint8_t *)p)[i];
    case TG_I32:
        return ((const int32_t *)p)[i];
    default:
        return (double)((const int64_t *)p)[i];
    }
}

/* A buffer of n elements of dt holding v (rounded to dt). */
static void *buf_from(tg_dtype dt, const double *v, int64_t n) {
    void *p = malloc((size_t)(n > 0 ? n : 1) * esize(dt));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++)
        set_elem(dt, p, i, v[i]);
    return p;
}

/* n random values; rounded through dt so references see what the kernel sees. */
static double *rand_vals(tg_dtype dt, int64_t n, uint64_t seed, double scale) {
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++) {
        v[i] = rnd(&seed) * scale;
        if (dt == TG_F32)
            v[i] = (float)v[i];
    }
    return v;
}

static tg_kview view(void *data, tg_dtype dt, int ndim, const int64_t *shape,
                     const int64_t *strides) {
    tg_kview v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = dt;
    v.ndim = ndim;
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        v.shape[d] = shape[d];
        v.strides[d] = strides ? strides[d] : s;
        s *= shape[d];
    }
    return v;
}

static char errbuf[256];

static tg_status run_kernel(tg_op op, const tg_op_params *p, tg_kview out, int nin,
                            const tg_kview *in) {
    tg_kargs a;
    memset(&a, 0, sizeof a);
    a.op = op;
    a.p = p;
    a.out = out;
    a.nin = nin;
    for (int i = 0; i < nin; i++)
        a.in[i] = in[i];
    errbuf[0] = '\0';
    a.err = errbuf;
    a.errlen = sizeof errbuf;
    const tg_backend *be = tg_backend_cpu();
    assert_non_null(be->kernels[op]);
    return be->kernels[op](NULL, &a);
}

static double tol_of(tg_dtype dt) { return dt == TG_F32 ? 2e-5 : 1e-12; }

static void expect_close(double got, double want, double tol, const char *what, int64_t i) {
    if (isnan(want) && isnan(got))
        return;
    if (isinf(want) && got == want)
        return;
    double err = fabs(got - want), lim = tol * (1.0 + fabs(want));
    if (!(err <= lim))
        fail_msg("%s[%lld]: got %.17g, want %.17g", what, (long long)i, got, want);
}

static void expect_buf(tg_dtype dt, const void *got, const double *want, int64_t n, double tol,
                       const char *what) {
    for (int64_t i = 0; i < n; i++)
        expect_close(get_elem(dt, got, i), want[i], tol, what, i);
}

/* ---- elementwise ---- */

static double ref_binary(tg_op op, double a, double b) {
    switch (op) {
    case TG_OP_ADD:
        return a + b;
    case TG_OP_SUB:
        return a - b;
    case TG_OP_MUL:
        return a * b;
    case TG_OP_DIV:
        return a / b;
    case TG_OP_EQ:
        return a == b;
    case TG_OP_RELU_BACKWARD:
        return b > 0 ? a : 0;
    default: /* clamp_backward with lo -0.5, hi 0.5 */
        return (-0.5 <= b && b <= 0.5) ? a : 0;
    }
}

/* Runs a binary op on an (R, C) output, with x and y given as storage plus
 * strides over (R, C), and checks every element. */
static void check_binary(tg_dtype dt, tg_op op, int64_t R, int64_t C, const double *xs, int64_t nx,
                         const int64_t *sx, const double *ys, int64_t ny, const int64_t *sy) {
    const int64_t shape[2] = {R, C};
    tg_op_params p;
    memset(&p, 0, sizeof p);
    p.f[0] = -0.5;
    p.f[1] = 0.5;
    void *xb = buf_from(dt, xs, nx), *yb = buf_from(dt, ys, ny);
    void *ob = malloc((size_t)(R * C) * esize(dt));
    double *want = malloc((size_t)(R * C) * sizeof *want);
    tg_kview in[2] = {view(xb, dt, 2, shape, sx), view(yb, dt, 2, shape, sy)};
    assert_int_equal(run_kernel(op, &p, view(ob, dt, 2, shape, NULL), 2, in), TG_OK);
    for (int64_t r = 0; r < R; r++) {
        for (int64_t c = 0; c < C; c++) {
            double a = xs[r * sx[0] + c * sx[1]], b = ys[r * sy[0] + c * sy[1]];
            double w = ref_binary(op, a, b);
            want[r * C + c] = dt == TG_F32 ? (float)w : w;
        }
    }
    expect_buf(dt, ob, want, R * C, tol_of(dt), "binary");
    free(xb);
    free(yb);
    free(ob);
    free(want);
}

static void test_binary_ops(void **state) {
    (void)state;
    static const tg_op ops[] = {TG_OP_ADD, TG_OP_SUB,           TG_OP_MUL,           TG_OP_DIV,
                                TG_OP_EQ,  TG_OP_RELU_BACKWARD, TG_OP_CLAMP_BACKWARD};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        double *x = rand_vals(dt, 300 * 200, 1, 2.0), *y = rand_vals(dt, 300 * 200, 2, 2.0);
        /* Make some entries equal so that eq sees both outcomes. */
        for (int i = 0; i < 300 * 200; i += 3)
            y[i] = x[i];
        for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
            const int64_t c35[2] = {5, 1}, row[2] = {0, 1}, scal[2] = {0, 0}, tr[2] = {1, 4};
            const int64_t c46[2] = {6, 1}, col[2] = {1, 0}, big[2] = {200, 1};
            check_binary(dt, ops[o], 3, 5, x, 15, c35, y, 15, c35);
            check_binary(dt, ops[o], 4, 6, x, 24, c46, y, 6, row);
            check_binary(dt, ops[o], 4, 6, x, 24, c46, y, 1, scal);
            check_binary(dt, ops[o], 4, 6, x, 24, tr, y, 24, c46);
            check_binary(dt, ops[o], 4, 6, y, 4, col, x, 24, tr);
            check_binary(dt, ops[o], 300, 200, x, 60000, big, y, 60000, big);
            check_binary(dt, ops[o], 300, 200, x, 60000, big, y, 200, row);
        }
        free(x);
        free(y);
    }
}

static void test_where(void **state) {
    (void)state;
    static const tg_dtype conds[] = {TG_U8, TG_I32, TG_I64, TG_F32, TG_F64};
    const int64_t shape[2] = {3, 4}, row[2] = {0, 1};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        double *x = rand_vals(dt, 12, 3, 1.0), *y = rand_vals(dt, 12, 4, 1.0);
        const double cv[4] = {0, 2, 0, 1};
        for (size_t ci = 0; ci < sizeof conds / sizeof conds[0]; ci++) {
            void *cb = buf_from(conds[ci], cv, 4), *xb = buf_from(dt, x, 12);
            void *yb = buf_from(dt, y, 12), *ob = malloc(12 * esize(dt));
            tg_kview in[3] = {view(cb, conds[ci], 2, shape, row), view(xb, dt, 2, shape, NULL),
                              view(yb, dt, 2, shape, NULL)};
            assert_int_equal(run_kernel(TG_OP_WHERE, NULL, view(ob, dt, 2, shape, NULL), 3, in),
                             TG_OK);
            double want[12];
            for (int i = 0; i < 12; i++)
                want[i] = cv[i % 4] != 0 ? x[i] : y[i];
            expect_buf(dt, ob, want, 12, 0.0, "where");
            free(cb);
            free(xb);
            free(yb);
            free(ob);
        }
        free(x);
        free(y);
    }
}

static double ref_unary(tg_op op, double a) {
    switch (op) {
    case TG_OP_NEG:
        return -a;
    case TG_OP_AFFINE:
        return 1.5 * a - 0.25;
    case TG_OP_POW_SCALAR:
        return a * a;
    case TG_OP_EXP:
        return exp(a);
    case TG_OP_LOG:
        return log(fabs(a) + 0.1);
    case TG_OP_SQRT:
        return sqrt(fabs(a));
    case TG_OP_ABS:
        return fabs(a);
    case TG_OP_ERF:
        return erf(a);
    case TG_OP_RELU:
        return a > 0 ? a : 0;
    case TG_OP_SIGMOID:
        return 1 / (1 + exp(-a));
    case TG_OP_TANH:
        return tanh(a);
    case TG_OP_SILU:
        return a / (1 + exp(-a));
    case TG_OP_GELU:
        return 0.5 * a * (1 + erf(a / sqrt(2.0)));
    case TG_OP_CLAMP:
        return a < -0.5 ? -0.5 : a > 0.75 ? 0.75 : a;
    default:
        return (a > 0) - (a < 0);
    }
}

static void test_unary_ops(void **state) {
    (void)state;
    static const tg_op ops[] = {TG_OP_NEG,  TG_OP_AFFINE,  TG_OP_POW_SCALAR, TG_OP_EXP,
                                TG_OP_LOG,  TG_OP_SQRT,    TG_OP_ABS,        TG_OP_ERF,
                                TG_OP_RELU, TG_OP_SIGMOID, TG_OP_TANH,       TG_OP_SILU,
                                TG_OP_GELU, TG_OP_CLAMP,   TG_OP_SIGN};
    const int64_t n = 41, shape[2] = {n, 1}, strided[2] = {2, 1};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        double *x = rand_vals(dt, 2 * n, 5, 4.0);
        x[0] = 0.0;
        for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
            tg_op op = ops[o];
            tg_op_params p;
            memset(&p, 0, sizeof p);
            p.f[0] = op == TG_OP_AFFINE ? 1.5 : op == TG_OP_POW_SCALAR ? 2.0 : -0.5;
            p.f[1] = op == TG_OP_AFFINE ? -0.25 : 0.75;
            /* log and sqrt see |x| + 0.1 and |x| through a prepared input. */
            double *in = malloc((size_t)(2 * n) * sizeof *in);
            for (int64_t i = 0; i < 2 * n; i++) {
                in[i] = op == TG_OP_LOG ? fabs(x[i]) + 0.1 : op == TG_OP_SQRT ? fabs(x[i]) : x[i];
                if (dt == TG_F32)
                    in[i] = (float)in[i];
            }
            void *xb = buf_from(dt, in, 2 * n), *ob = malloc((size_t)n * esize(dt));
            double want[41];
            tg_kview v = view(xb, dt, 2, shape, strided);
            assert_int_equal(run_kernel(op, &p, view(ob, dt, 2, shape, NULL), 1, &v), TG_OK);
            for (int64_t i = 0; i < n; i++) {
                double a = x[2 * i];
                if (dt == TG_F32)
                    a = (float)a;
                want[i] = ref_unary(op, a);
            }
            expect_buf(dt, ob, want, n, dt == TG_F32 ? 1e-5 : 1e-12, tg_op_name(op));
            free(in);
            free(xb);
            free(ob);
        }
        free(x);
    }
}

/* Sigmoid, silu and gelu stay finite and exact at the far ends. */
static void test_unary_extremes(void **state) {
    (void)state;
    const double x[4] = {-1000, -60, 60, 1000};
    const int64_t shape[1] = {4};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        void *xb = buf_from(dt, x, 4), *ob = malloc(4 * esize(dt));
        tg_kview v = view(xb, dt, 1, shape, NULL);
        assert_int_equal(run_kernel(TG_OP_SIGMOID, NULL, view(ob, dt, 1, shape, NULL), 1, &v),
                         TG_OK);
        assert_true(get_elem(dt, ob, 0) == 0.0 && get_elem(dt, ob, 3) == 1.0);
        assert_true(get_elem(dt, ob, 1) >= 0.0 && get_elem(dt, ob, 1) < 1e-20);
        assert_int_equal(run_kernel(TG_OP_SILU, NULL, view(ob, dt, 1, shape, NULL), 1, &v), TG_OK);
        assert_true(get_elem(dt, ob, 0) == 0.0 && get_elem(dt, ob, 3) == 1000.0);
        assert_int_equal(run_kernel(TG_OP_GELU, NULL, view(ob, dt, 1, shape, NULL), 1, &v), TG_OK);
        assert_true(get_elem(dt, ob, 0) == 0.0 && get_elem(dt, ob, 3) == 1000.0);
        free(xb);
        free(ob);
    }
}

static void test_dtype_errors(void **state) {
    (void)state;
    int32_t x[4] = {1, 2, 3, 4}, o[4];
    const int64_t shape[1] = {4};
    tg_kview in[2] = {view(x, TG_I32, 1, shape, NULL), view(x, TG_I32, 1, shape, NULL)};
    assert_int_equal(run_kernel(TG_OP_DIV, NULL, view(o, TG_I32, 1, shape, NULL), 2, in),
                     TG_ERR_DTYPE);
    assert_true(strlen(errbuf) > 0);
    assert_int_equal(run_kernel(TG_OP_EXP, NULL, view(o, TG_I32, 1, shape, NULL), 1, in),
                     TG_ERR_DTYPE);
}

/* ---- reductions ---- */

/* Reduces x (shape (4, 5, 6) seen through strides xs over storage xv) over
 * the axes in mask with a naive loop, and compares. */
static void check_reduce(tg_dtype dt, tg_op op, uint32_t mask, const double *xv,
                         const int64_t *xs) {
    const int64_t shape[3] = {4, 5, 6};
    int64_t oshape[3];
    int64_t M = 1, K = 1;
    for (int d = 0; d < 3; d++) {
        oshape[d] = (mask >> d) & 1 ? 1 : shape[d];
        M *= oshape[d];
        K *= (mask >> d) & 1 ? shape[d] : 1;
    }
    double want[120];
    for (int64_t m = 0; m < M; m++)
        want[m] = op == TG_OP_MAX ? -INFINITY : op == TG_OP_MIN ? INFINITY : 0;
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 5; j++)
            for (int64_t k = 0; k < 6; k++) {
                int64_t c[3] = {i, j, k}, m = 0;
                for (int d = 0; d < 3; d++)
                    m = m * oshape[d] + ((mask >> d) & 1 ? 0 : c[d]);
                double v = xv[i * xs[0] + j * xs[1] + k * xs[2]];
                if (op == TG_OP_MAX)
                    want[m] = v > want[m] ? v : want[m];
                else if (op == TG_OP_MIN)
                    want[m] = v < want[m] ? v : want[m];
                else
                    want[m] += v;
            }
    if (op == TG_OP_MEAN)
        for (int64_t m = 0; m < M; m++)
            want[m] /= (double)K;
    tg_op_params p;
    memset(&p, 0, sizeof p);
    p.axes = mask;
    p.keepdim = true;
    void *xb = buf_from(dt, xv, 120), *ob = malloc((size_t)M * esize(dt));
    tg_kview v = view(xb, dt, 3, shape, xs);
    assert_int_equal(run_kernel(op, &p, view(ob, dt, 3, oshape, NULL), 1, &v), TG_OK);
    expect_buf(dt, ob, want, M, tol_of(dt), tg_op_name(op));
    free(xb);
    free(ob);
}

static void test_reductions(void **state) {
    (void)state;
    static const tg_op ops[] = {TG_OP_SUM, TG_OP_MEAN, TG_OP_MAX, TG_OP_MIN};
    /* Contiguous, and the same logical tensor stored as (6, 4, 5). */
    const int64_t contig[3] = {30, 6, 1}, permuted[3] = {5, 1, 20};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        double *x = rand_vals(dt, 120, 7, 3.0);
        for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
            for (uint32_t mask = 0; mask < 8; mask++) {
                check_reduce(dt, ops[o], mask, x, contig);
                check_reduce(dt, ops[o], mask, x, permuted);
            }
        free(x);
    }
}

/* Runs a sum over `mask` of an (R, C) contiguous input at the given thread
 * count and returns the output (caller frees). */
static void *run_sum_2d(tg_dtype dt, tg_op op, const void *xb, int64_t R, int64_t C, uint32_t mask,
                        int threads) {
    const int64_t shape[2] = {R, C};
    const int64_t oshape[2] = {mask & 1 ? 1 : R, mask & 2 ? 1 : C};
    tg_op_params p;
    memset(&p, 0, sizeof p);
    p.axes = mask;
    void *ob = malloc((size_t)(oshape[0] * oshape[1]) * esize(dt));
    tg_kview v = view((void *)xb, dt, 2, shape, NULL);
    omp_set_num_threads(threads);
    assert_int_equal(run_kernel(op, &p, view(ob, dt, 2, oshape, NULL), 1, &v), TG_OK);
    return ob;
}

/* Large reductions (including the cut-and-combine path) match a naive sum and
 * give identical bits at 1 and 4 threads. */
static void test_reduce_large(void **state) {
    (void)state;
    const struct {
        int64_t R, C;
        uint32_t mask;
    } cases[] = {{1000, 1000, 3}, {50000, 40, 1}, {3000, 300, 1}, {200, 1000, 2},
                 {40, 50000, 2},  {20000, 3, 1},  {3, 20000, 1}};
    static const tg_op ops[] = {TG_OP_SUM, TG_OP_MAX};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            const int64_t R = cases[c].R, C = cases[c].C, n = R * C;
            const uint32_t mask = cases[c].mask;
            double *x = rand_vals(dt, n, 11 + c, 1.0);
            void *xb = buf_from(dt, x, n);
            for (size_t o = 0; o < 2; o++) {
                const int64_t M = (mask & 1 ? 1 : R) * (mask & 2 ? 1 : C);
                double *want = calloc((size_t)M, sizeof *want);
                for (int64_t m = 0; m < M; m++)
                    want[m] = ops[o] == TG_OP_MAX ? -INFINITY : 0;
                for (int64_t r = 0; r < R; r++)
                    for (int64_t k = 0; k < C; k++) {
                        int64_t m = (mask & 1 ? 0 : r) * (mask & 2 ? 1 : C) + (mask & 2 ? 0 : k);
                        double v = x[r * C + k];
                        want[m] = ops[o] == TG_OP_MAX ? (v > want[m] ? v : want[m]) : want[m] + v;
                    }
                void *o1 = run_sum_2d(dt, ops[o], xb, R, C, mask, 1);
                void *o4 = run_sum_2d(dt, ops[o], xb, R, C, mask, 4);
                expect_buf(dt, o1, want, M, dt == TG_F32 ? 1e-5 : 1e-11, "large reduce");
                assert_memory_equal(o1, o4, (size_t)M * esize(dt));
                free(o1);
                free(o4);
                free(want);
            }
            free(x);
            free(xb);
        }
    }
    omp_set_num_threads(omp_get_num_procs());
}

static void test_argmax(void **state) {
    (void)state;
    /* (3, 4) with ties: the first maximum wins. */
    const double x[12] = {1, 5, 5, 0, 7, 7, 2, 7, -1, -1, -1, -1};
    const int64_t shape[2] = {3, 4};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        void *xb = buf_from(dt, x, 12);
        int64_t out[4];
        tg_op_params p;
        memset(&p, 0, sizeof p);
        tg_kview v = view(xb, dt, 2, shape, NULL);
        p.axis = 1;
        const int64_t o1[2] = {3, 1};
        assert_int_equal(run_kernel(TG_OP_ARGMAX, &p, view(out, TG_I64, 2, o1, NULL), 1, &v),
                         TG_OK);
        assert_int_equal(out[0], 1);
        assert_int_equal(out[1], 0);
        assert_int_equal(out[2], 0);
        p.axis = 0;
        const int64_t o0[1] = {4};
        assert_int_equal(run_kernel(TG_OP_ARGMAX, &p, view(out, TG_I64, 1, o0, NULL), 1, &v),
                         TG_OK);
        assert_int_equal(out[0], 1);
        assert_int_equal(out[1], 1);
        assert_int_equal(out[2], 0);
        assert_int_equal(out[3], 1);
        /* The transposed view: argmax along its axis 0 is the rows' argmax. */
        const int64_t tshape[2] = {4, 3}, tstr[2] = {1, 4}, ot[1] = {3};
        tg_kview t = view(xb, dt, 2, tshape, tstr);
        assert_int_equal(run_kernel(TG_OP_ARGMAX, &p, view(out, TG_I64, 1, ot, NULL), 1, &t),
                         TG_OK);
        assert_int_equal(out[0], 1);
        assert_int_equal(out[1], 0);
        assert_int_equal(out[2], 0);
        free(xb);
    }
}

/* ---- matmul ---- */

/*
 * C (batch, n, m) = A (batch, n, k) B (batch, k, m) where A and B are stored
 * transposed or not, and either may be shared by all batches (stride 0).
 */
static void check_matmul(tg_dtype dt, int64_t batch, int64_t n, int64_t k, int64_t m, bool ta,
                         bool tb, bool bcast_a, bool bcast_b) {
    const int64_t na = (bcast_a ? 1 : batch) * n * k, nb = (bcast_b ? 1 : batch) * k * m;
    double *av = rand_vals(dt, na, 21, 1.0), *bv = rand_vals(dt, nb, 22, 1.0);
    void *ab = buf_from(dt, av, na), *bb = buf_from(dt, bv, nb);
    void *cb = malloc((size_t)(batch * n * m + 1) * esize(dt));
    const int64_t ashape[3] = {batch, n, k}, bshape[3] = {batch, k, m}, cshape[3] = {batch, n, m};
    int64_t as[3] = {bcast_a ? 0 : n * k, ta ? 1 : k, ta ? n : 1};
    int64_t bs[3] = {bcast_b ? 0 : k * m, tb ? 1 : m, tb ? k : 1};
    tg_kview in[2] = {view(ab, dt, 3, ashape, as), view(bb, dt, 3, bshape, bs)};
    assert_int_equal(run_kernel(TG_OP_MATMUL, NULL, view(cb, dt, 3, cshape, NULL), 2, in), TG_OK);
    double *want = calloc((size_t)(batch * n * m + 1), sizeof *want);
    for (int64_t t = 0; t < batch; t++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < m; j++) {
                double s = 0;
                for (int64_t l = 0; l < k; l++)
                    s += av[t * as[0] + i * as[1] + l * as[2]] *
                         bv[t * bs[0] + l * bs[1] + j * bs[2]];
                want[(t * n + i) * m + j] = s;
            }
    expect_buf(dt, cb, want, batch * n * m, dt == TG_F32 ? 1e-5 : 1e-12, "matmul");
    free(av);
    free(bv);
    free(ab);
    free(bb);
    free(cb);
    free(want);
}

static void test_matmul(void **state) {
    (void)state;
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            check_matmul(dt, 1, 5, 7, 3, ta, tb, false, false);
            check_matmul(dt, 3, 5, 7, 3, ta, tb, false, false);
            check_matmul(dt, 3, 5, 7, 3, ta, tb, false, true);
            check_matmul(dt, 3, 5, 7, 3, ta, tb, true, false);
            check_matmul(dt, 2, 1, 4, 1, ta, tb, false, true);
            check_matmul(dt, 2, 4, 1, 6, ta, tb, false, false);
            check_matmul(dt, 2, 0, 3, 2, ta, tb, false, false);
            check_matmul(dt, 2, 3, 0, 2, ta, tb, false, true);
            check_matmul(dt, 2, 64, 33, 17, ta, tb, false, true);
        }
    }
}

/* Products large enough to be split across threads (in column blocks of C,
 * or row blocks when C is taller than wide), every transpose combination,
 * at 1 to 4 threads: each matches the naive product, and a second run at the
 * same thread count gives the same bits. (Different thread counts may differ
 * in the last bits: OpenBLAS picks its kernels by block size.) */
static void test_matmul_split(void **state) {
    (void)state;
    const int64_t dims[][3] = {{100, 70, 333}, {333, 70, 100}, {37, 129, 2049}, {1029, 64, 33}};
    for (int di = 0; di < 2; di++) {
        const tg_dtype dt = float_dtypes[di];
        for (size_t c = 0; c < sizeof dims / sizeof dims[0]; c++) {
            const int64_t n = dims[c][0], k = dims[c][1], m = dims[c][2];
            for (int t = 0; t < 4; t++) {
                const bool ta = t & 1, tb = t & 2;
                double *av = rand_vals(dt, n * k, 31 + c, 1.0), *bv = rand_vals(dt, k * m, 32, 1.0);
                void *ab = buf_from(dt, av, n * k), *bb = buf_from(dt, bv, k * m);
                const int64_t ashape[2] = {n, k}, bshape[2] = {k, m}, cshape[2] = {n, m};
                int64_t as[2] = {ta ? 1 : k, ta ? n : 1}, bs[2] = {tb ? 1 : m, tb ? k : 1};
                tg_kview in[2] = {view(ab, dt, 2, ashape, as), view(bb, dt, 2, bshape, bs)};
                double *want = calloc((size_t)(n * m), sizeof *want);
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < m; j++) {
                        double sum = 0;
                        for (int64_t l = 0; l < k; l++)
                            sum += av[i * as[0] + l * as[1]] * bv[l * bs[0] + j * bs[1]];
                        want[i * m + j] = sum;
                    }
                for (int nt = 1; nt <= 4; nt++) {
                    void *c1 = malloc((size_t)(n * m) * esize(dt));
                    void *c2 = malloc((size_t)(n * m) * esize(dt));
                    omp_set_num_threads(nt);
                    assert_int_equal(
                        run_kernel(TG_OP_MATMUL, NULL, view(c1, dt, 2, cshape, NULL), 2, in),
                        TG_OK);
                    assert_int_equal(
                        run_kernel(TG_OP_MATMUL, NULL, view(c2, dt, 2, cshape, NULL), 2, in),
                        TG_OK);
                    expect_buf(dt, c1, want, n * m, dt == TG_F32 ? 1e-5 : 1e-12, "split matmul");
                    assert_memory_equal(c1, c2, (size_t)(n * m) * esize(dt));
                    free(c1);
                    free(c2);
                }
                free(want);
                free(av);
                free(bv);
                free(ab);
                free(bb);
            }
        }
    }
    omp_set_num_threads(2);
}

/* A 4-D matmul whose batch is (2, 3) with B broadcast over the first dim and
 * A a transposed view of its storage. */
static void test_matmul_4d(void **state) {
    (void)state;
    const int64_t n = 4, k = 5, m = 3;
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        double *av = rand_vals(dt, 6 * n * k, 31, 1.0), *bv = rand_vals(dt, 3 * k * m, 32, 1.0);
        void *ab = buf_from(dt, av, 6 * n * k), *bb = buf_from(dt, bv, 3 * k * m);
        double out[6 * 4 * 3];
        void *cb = malloc(sizeof out);
        const int64_t ashape[4] = {2, 3, n, k}, as[4] = {3 * n * k, n * k, 1, n};
        const int64_t bshape[4] = {2, 3, k, m}, bs[4] = {0, k * m, m, 1};
        const int64_t cshape[4] = {2, 3, n, m};
        tg_kview in[2] = {view(ab, dt, 4, ashape, as), view(bb, dt, 4, bshape, bs)};
        assert_int_equal(run_kernel(TG_OP_MATMUL, NULL, view(cb, dt, 4, cshape, NULL), 2, in),
                         TG_OK);
        for (int64_t b0 = 0; b0 < 2; b0++)
            for (int64_t b1 = 0; b1 < 3; b1++)
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < m; j++) {
                        double s = 0;
                        for (int64_t l = 0; l < k; l++)
                            s += av[b0 * as[0] + b1 * as[1] + i * as[2] + l * as[3]] *
                                 bv[b1 * bs[1] + l * bs[2] + j];
                        out[((b0 * 3 + b1) * n + i) * m + j] = s;
                    }
        expect_buf(dt, cb, out, 6 * n * m, dt == TG_F32 ? 1e-5 : 1e-12, "matmul4d");
        free(av);
        free(bv);
        free(ab);
        free(bb);
        free(cb);
    }
}

/* ---- shape ---- */

static void test_copy_reshape(void **state) {
    (void)state;
    static const tg_dtype dts[] = {TG_U8, TG_I32, TG_F32, TG_I64, TG_F64};
    double v[24];
    for (int i = 0; i < 24; i++)
        v[i] = i + 1;
    /* Storage (2, 3, 4) seen permuted as (4, 2, 3). */
    const int64_t pshape[3] = {4, 2, 3}, pstr[3] = {1, 12, 4};
    for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
        tg_dtype dt = dts[di];
        void *xb = buf_from(dt, v, 24), *ob = malloc(24 * esize(dt));
        double want[24];
        for (int64_t i = 0; i < 4; i++)
            for (int64_t j = 0; j < 2; j++)
                for (int64_t l = 0; l < 3; l++)
                    want[(i * 2 + j) * 3 + l] = v[i * pstr[0] + j * pstr[1] + l * pstr[2]];
        tg_kview x = view(xb, dt, 3, pshape, pstr);
        assert_int_equal(run_kernel(TG_OP_COPY, NULL, view(ob, dt, 3, pshape, NULL), 1, &x), TG_OK);
        expect_buf(dt, ob, want, 24, 0.0, "copy");
        const int64_t rshape[2] = {6, 4};
        memset(ob, 0, 24 * esize(dt));
        assert_int_equal(run_kernel(TG_OP_RESHAPE, NULL, view(ob, dt, 2, rshape, NULL), 1, &x),
                         TG_OK);
        expect_buf(dt, ob, want, 24, 0.0, "reshape");
        free(xb);
        free(ob);
    }
}

static void test_concat_slice_scatter(void **state) {
    (void)state;
    static const tg_dtype dts[] = {TG_U8, TG_F32, TG_I64};
    for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
        tg_dtype dt = dts[di];
        double a[6] = {1, 2, 3, 4, 5, 6}, b[4] = {7, 8, 9, 10};
        void *ab = buf_from(dt, a, 6), *bb = buf_from(dt, b, 4), *ob = malloc(10 * esize(dt));
        tg_op_params p;
        memset(&p, 0, sizeof p);
        /* Along axis 1: (2, 3) ++ (2, 2) where b is a transposed view. */
        const int64_t as[2] = {2, 3}, bs[2] = {2, 2}, bstr[2] = {1, 2}, os[2] = {2, 5};
        tg_kview in[2] = {view(ab, dt, 2, as, NULL), view(bb, dt, 2, bs, bstr)};
        p.axis = 1;
        assert_int_equal(run_kernel(TG_OP_CONCAT, &p, view(ob, dt, 2, os, NULL), 2, in), TG_OK);
        const double w1[10] = {1, 2, 3, 7, 9, 4, 5, 6, 8, 10};
        expect_buf(dt, ob, w1, 10, 0.0, "concat1");
        /* Along axis 0: (2, 3) ++ (1, 3) ++ (1, 3) from one row-broadcast view. */
        const int64_t rs[2] = {1, 3}, os0[2] = {4, 3};
        tg_kview in0[3] = {view(ab, dt, 2, as, NULL), view(bb, dt, 2, rs, NULL),
                           view(bb, dt, 2, rs, NULL)};
        p.axis = 0;
        const double w0[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 7, 8, 9};
        void *ob2 = malloc(12 * esize(dt));
        assert_int_equal(run_kernel(TG_OP_CONCAT, &p, view(ob2, dt, 2, os0, NULL), 3, in0), TG_OK);
        expect_buf(dt, ob2, w0, 12, 0.0, "concat0");
        /* slice_scatter: (2, 2) written at columns 1 and 3 of a (2, 5) output. */
        p.axis = 1;
        p.ints[0] = 1;
        p.ints[1] = 4;
        p.ints[2] = 2;
        tg_kview src = view(bb, dt, 2, bs, NULL);
        assert_int_equal(run_kernel(TG_OP_SLICE_SCATTER, &p, view(ob, dt, 2, os, NULL), 1, &src),
                         TG_OK);
        const double ws[10] = {0, 7, 0, 8, 0, 0, 9, 0, 10, 0};
        expect_buf(dt, ob, ws, 10, 0.0, "slice_scatter");
        free(ab);
        free(bb);
        free(ob);
        free(ob2);
    }
}

/* ---- softmax ---- */

static void test_softmax(void **state) {
    (void)state;
    const int64_t shape[2] = {3, 5}, tstr[2] = {1, 3};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        double *x = rand_vals(dt, 15, 41, 5.0);
        x[0] = 1000; /* stability: exp(1000) would overflow without the max */
        void *xb = buf_from(dt, x, 15), *ob = malloc(15 * esize(dt));
        for (int log_out = 0; log_out < 2; log_out++)
            for (int layout = 0; layout < 2; layout++)
                for (int axis = 0; axis < 2; axis++) {
                    const int64_t *st = layout ? tstr : NULL;
                    const int64_t ss[2] = {layout ? 1 : 5, layout ? 3 : 1};
                    double want[15];
                    for (int64_t line = 0; line < shape[1 - axis]; line++) {
                        double mx = -INFINITY, sum = 0;
                        for (int64_t k = 0; k < shape[axis]; k++) {
                            int64_t i = axis ? line : k, j = axis ? k : line;
                            mx = fmax(mx, x[i * ss[0] + j * ss[1]]);
                        }
                        for (int64_t k = 0; k < shape[axis]; k++) {
                            int64_t i = axis ? line : k, j = axis ? k : line;
                            sum += exp(x[i * ss[0] + j * ss[1]] - mx);
                        }
                        for (int64_t k = 0; k < shape[axis]; k++) {
                            int64_t i = axis ? line : k, j = axis ? k : line;
                            double z = x[i * ss[0] + j * ss[1]] - mx;
                            want[i * 5 + j] = log_out ? z - log(sum) : exp(z) / sum;
                        }
                    }
                    tg_op_params p;
                    memset(&p, 0, sizeof p);
                    p.axis = axis;
                    tg_kview v = view(xb, dt, 2, shape, st);
                    tg_op op = log_out ? TG_OP_LOG_SOFTMAX : TG_OP_SOFTMAX;
                    assert_int_equal(run_kernel(op, &p, view(ob, dt, 2, shape, NULL), 1, &v),
                                     TG_OK);
                    expect_buf(dt, ob, want, 15, tol_of(dt), tg_op_name(op));
                }
        free(x);
        free(xb);
        free(ob);
    }
}

/* ---- gather, scatter_add ---- */

static void test_gather(void **state) {
    (void)state;
    static const tg_dtype idts[] = {TG_U8, TG_I32, TG_I64};
    const double a[12] = {0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23}; /* (3, 4) */
    const int64_t ashape[2] = {3, 4};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        void *ab = buf_from(dt, a, 12);
        for (size_t ii = 0; ii < 3; ii++) {
            tg_dtype it = idts[ii];
            tg_op_params p;
            memset(&p, 0, sizeof p);
            /* axis 1, index (3, 2) */
            const double i1[6] = {3, 0, 1, 1, 2, 0};
            const int64_t ishape[2] = {3, 2};
            void *ib = buf_from(it, i1, 6), *ob = malloc(6 * esize(dt));
            tg_kview in[2] = {view(ab, dt, 2, ashape, NULL), view(ib, it, 2, ishape, NULL)};
            p.axis = 1;
            assert_int_equal(run_kernel(TG_OP_GATHER, &p, view(ob, dt, 2, ishape, NULL), 2, in),
                             TG_OK);
            const double w1[6] = {3, 0, 11, 11, 22, 20};
            expect_buf(dt, ob, w1, 6, 0.0, "gather1");
            /* axis 0, index (2, 3) smaller than a in dim 1 */
            const double i0[6] = {2, 0, 1, 0, 0, 2};
            const int64_t ishape0[2] = {2, 3};
            void *ib0 = buf_from(it, i0, 6);
            tg_kview in0[2] = {view(ab, dt, 2, ashape, NULL), view(ib0, it, 2, ishape0, NULL)};
            p.axis = 0;
            assert_int_equal(run_kernel(TG_OP_GATHER, &p, view(ob, dt, 2, ishape0, NULL), 2, in0),
                             TG_OK);
            const double w0[6] = {20, 1, 12, 0, 1, 22};
            expect_buf(dt, ob, w0, 6, 0.0, "gather0");
            /* An index of 4 along axis 1 (size 4) is refused with its position. */
            set_elem(it, ib, 3, 4);
            p.axis = 1;
            assert_int_equal(run_kernel(TG_OP_GATHER, &p, view(ob, dt, 2, ishape, NULL), 2, in),
                             TG_ERR_INVALID);
            assert_non_null(strstr(errbuf, "index 4"));
            assert_non_null(strstr(errbuf, "(1, 1)"));
            assert_non_null(strstr(errbuf, "[0, 4)"));
            free(ib);
            free(ib0);
            free(ob);
        }
        /* A negative index is refused too. */
        const int64_t ishape[2] = {1, 1}, bad = -1;
        int64_t ibad = bad;
        void *ob = malloc(esize(dt));
        tg_op_params p;
        memset(&p, 0, sizeof p);
        p.axis = 0;
        tg_kview in[2] = {view(ab, dt, 2, ashape, NULL), view(&ibad, TG_I64, 2, ishape, NULL)};
        assert_int_equal(run_kernel(TG_OP_GATHER, &p, view(ob, dt, 2, ishape, NULL), 2, in),
                         TG_ERR_INVALID);
        assert_non_null(strstr(errbuf, "index -1"));
        free(ob);
        free(ab);
    }
}

static void test_scatter_add(void **state) {
    (void)state;
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        tg_op_params p;
        memset(&p, 0, sizeof p);
        /* axis 1: src/index (2, 3) into out (2, 4), with repeated indices. */
        const double s1[6] = {1, 2, 3, 4, 5, 6};
        const int64_t i1[6] = {0, 3, 0, 2, 2, 2};
        const int64_t sshape[2] = {2, 3}, oshape[2] = {2, 4};
        void *sb = buf_from(dt, s1, 6), *ob = malloc(8 * esize(dt));
        tg_kview in[2] = {view(sb, dt, 2, sshape, NULL), view((void *)i1, TG_I64, 2, sshape, NULL)};
        p.axis = 1;
        assert_int_equal(run_kernel(TG_OP_SCATTER_ADD, &p, view(ob, dt, 2, oshape, NULL), 2, in),
                         TG_OK);
        const double w1[8] = {4, 0, 0, 2, 0, 0, 15, 0};
        expect_buf(dt, ob, w1, 8, 0.0, "scatter1");
        /* axis 0: src/index (3, 2) into out (2, 3); index as i32 with a transposed src. */
        const int32_t i0[6] = {1, 0, 1, 1, 0, 0};
        const int64_t s0shape[2] = {3, 2}, s0str[2] = {1, 3}, o0shape[2] = {2, 3};
        tg_kview in0[2] = {view(sb, dt, 2, s0shape, s0str),
                           view((void *)i0, TG_I32, 2, s0shape, NULL)};
        p.axis = 0;
        assert_int_equal(run_kernel(TG_OP_SCATTER_ADD, &p, view(ob, dt, 2, o0shape, NULL), 2, in0),
                         TG_OK);
        /* src seen as (3, 2): [[1, 4], [2, 5], [3, 6]] */
        const double w0[6] = {3, 4 + 6, 0, 1 + 2, 5, 0};
        expect_buf(dt, ob, w0, 6, 0.0, "scatter0");
        /* Out of range: index 2 along axis 0 of size 2, at position (2, 0). */
        const int32_t ibad[6] = {1, 0, 1, 1, 2, 0};
        tg_kview inb[2] = {view(sb, dt, 2, s0shape, s0str),
                           view((void *)ibad, TG_I32, 2, s0shape, NULL)};
        assert_int_equal(run_kernel(TG_OP_SCATTER_ADD, &p, view(ob, dt, 2, o0shape, NULL), 2, inb),
                         TG_ERR_INVALID);
        assert_non_null(strstr(errbuf, "index 2"));
        assert_non_null(strstr(errbuf, "(2, 0)"));
        assert_non_null(strstr(errbuf, "[0, 2)"));
        free(sb);
        free(ob);
    }
}

/* A large scatter_add along axis 0 (an embedding gradient) is the same at 1
 * and 4 threads and matches a naive loop. */
static void test_scatter_add_large(void **state) {
    (void)state;
    const int64_t N = 2000, D = 300, V = 50;
    double *src = rand_vals(TG_F32, N * D, 51, 1.0);
    int64_t *idx = malloc((size_t)(N * D) * sizeof *idx);
    uint64_t seed = 52;
    for (int64_t i = 0; i < N; i++) {
        int64_t row = (int64_t)((rnd(&seed) + 1.0) * 0.5 * (double)V) % V;
        for (int64_t j = 0; j < D; j++)
            idx[i * D + j] = row;
    }
    void *sb = buf_from(TG_F32, src, N * D);
    float *o1 = malloc((size_t)(V * D) * sizeof *o1), *o4 = malloc((size_t)(V * D) * sizeof *o4);
    double *want = calloc((size_t)(V * D), sizeof *want);
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < D; j++)
            want[idx[i * D + j] * D + j] += src[i * D + j];
    const int64_t sshape[2] = {N, D}, oshape[2] = {V, D};
    tg_kview in[2] = {view(sb, TG_F32, 2, sshape, NULL), view(idx, TG_I64, 2, sshape, NULL)};
    tg_op_params p;
    memset(&p, 0, sizeof p);
    omp_set_num_threads(1);
    assert_int_equal(run_kernel(TG_OP_SCATTER_ADD, &p, view(o1, TG_F32, 2, oshape, NULL), 2, in),
                     TG_OK);
    omp_set_num_threads(4);
    assert_int_equal(run_kernel(TG_OP_SCATTER_ADD, &p, view(o4, TG_F32, 2, oshape, NULL), 2, in),
                     TG_OK);
    omp_set_num_threads(omp_get_num_procs());
    assert_memory_equal(o1, o4, (size_t)(V * D) * sizeof *o1);
    expect_buf(TG_F32, o1, want, V * D, 1e-4, "scatter large");
    free(src);
    free(idx);
    free(sb);
    free(o1);
    free(o4);
    free(want);
}

/* ---- special values and layouts ---- */

/* pow_scalar's special-cased exponents agree with pow. */
static void test_pow_scalar(void **state) {
    (void)state;
    const double exps[] = {2.0, 3.0, 0.5, -0.5, -1.0, -2.0, 1.7, 0.0};
    const int64_t n = 37, shape[1] = {n};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        double *x = rand_vals(dt, n, 61, 1.0);
        for (int64_t i = 0; i < n; i++)
            x[i] = dt == TG_F32 ? (float)(fabs(x[i]) * 2 + 0.1) : fabs(x[i]) * 2 + 0.1;
        void *xb = buf_from(dt, x, n), *ob = malloc((size_t)n * esize(dt));
        for (size_t e = 0; e < sizeof exps / sizeof exps[0]; e++) {
            tg_op_params p;
            memset(&p, 0, sizeof p);
            p.f[0] = exps[e];
            double want[37];
            for (int64_t i = 0; i < n; i++)
                want[i] = pow(x[i], exps[e]);
            tg_kview v = view(xb, dt, 1, shape, NULL);
            assert_int_equal(run_kernel(TG_OP_POW_SCALAR, &p, view(ob, dt, 1, shape, NULL), 1, &v),
                             TG_OK);
            expect_buf(dt, ob, want, n, dt == TG_F32 ? 1e-6 : 1e-14, "pow_scalar");
        }
        free(x);
        free(xb);
        free(ob);
    }
}

/* A NaN makes max, min and sum NaN on every reduction path, and makes its
 * softmax line NaN while leaving the other lines alone. */
static void test_nan_propagation(void **state) {
    (void)state;
    static const tg_op ops[] = {TG_OP_SUM, TG_OP_MAX, TG_OP_MIN};
    /* (rows, cols, mask): row loop, column loop, cut range, full reduction. */
    const struct {
        int64_t R, C;
        uint32_t mask;
    } cases[] = {{8, 100, 2}, {100, 64, 1}, {40000, 20, 1}, {300, 300, 3}};
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            const int64_t R = cases[c].R, C = cases[c].C, n = R * C;
            double *x = rand_vals(dt, n, 71, 1.0);
            x[(R / 2) * C + C / 3] = NAN;
            void *xb = buf_from(dt, x, n);
            for (size_t o = 0; o < 3; o++) {
                void *ob = run_sum_2d(dt, ops[o], xb, R, C, cases[c].mask, 4);
                int64_t m = cases[c].mask == 3 ? 0 : cases[c].mask == 2 ? R / 2 : C / 3;
                assert_true(isnan(get_elem(dt, ob, m)));
                if (cases[c].mask != 3)
                    assert_false(isnan(get_elem(dt, ob, m == 0 ? 1 : 0)));
                free(ob);
            }
            free(x);
            free(xb);
        }
        const double sx[6] = {1, NAN, 3, 1, 2, 3};
        const int64_t shape[2] = {2, 3};
        void *xb = buf_from(dt, sx, 6), *ob = malloc(6 * esize(dt));
        tg_op_params p;
        memset(&p, 0, sizeof p);
        p.axis = 1;
        tg_kview v = view(xb, dt, 2, shape, NULL);
        assert_int_equal(run_kernel(TG_OP_SOFTMAX, &p, view(ob, dt, 2, shape, NULL), 1, &v), TG_OK);
        assert_true(isnan(get_elem(dt, ob, 0)) && isnan(get_elem(dt, ob, 2)));
        assert_false(isnan(get_elem(dt, ob, 3)));
        free(xb);
        free(ob);
    }
    omp_set_num_threads(omp_get_num_procs());
}

/* Copies and elementwise ops whose input is transposed take the tiled loop,
 * with partial tiles and an outer dim; results match a naive loop. */
static void test_transposed_tiles(void **state) {
    (void)state;
    static const tg_dtype dts[] = {TG_U8, TG_F32, TG_F64};
    /* Storage (5, 40, 36) seen as (5, 36, 40). */
    const int64_t shape[3] = {5, 36, 40}, str[3] = {1440, 1, 36}, n = 5 * 36 * 40;
    double *v = malloc((size_t)n * sizeof *v), *want = malloc((size_t)n * sizeof *want);
    for (int64_t i = 0; i < n; i++)
        v[i] = (double)(i % 251);
    for (int64_t a = 0; a < 5; a++)
        for (int64_t b = 0; b < 36; b++)
            for (int64_t c = 0; c < 40; c++)
                want[(a * 36 + b) * 40 + c] = v[a * str[0] + b * str[1] + c * str[2]];
    for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
        tg_dtype dt = dts[di];
        void *xb = buf_from(dt, v, n), *ob = malloc((size_t)n * esize(dt));
        tg_kview x = view(xb, dt, 3, shape, str);
        assert_int_equal(run_kernel(TG_OP_COPY, NULL, view(ob, dt, 3, shape, NULL), 1, &x), TG_OK);
        expect_buf(dt, ob, want, n, 0.0, "transposed copy");
        if (dt != TG_U8) {
            /* x^T + x^T through the binary kernel: twice the copy. */
            double *w2 = malloc((size_t)n * sizeof *w2);
            for (int64_t i = 0; i < n; i++)
                w2[i] = 2 * want[i];
            tg_kview in[2] = {x, x};
            assert_int_equal(run_kernel(TG_OP_ADD, NULL, view(ob, dt, 3, shape, NULL), 2, in),
                             TG_OK);
            expect_buf(dt, ob, w2, n, 0.0, "transposed add");
            free(w2);
        }
        free(xb);
        free(ob);
    }
    free(v);
    free(want);
}

/* Zero-size operands: nothing is read, empty sums are 0 and empty means NaN. */
static void test_empty_shapes(void **state) {
    (void)state;
    double x[1] = {1.0}, out[3] = {-1, -1, -1};
    const int64_t shape[2] = {3, 0}, oshape[2] = {3, 1}, eshape[2] = {0, 3};
    tg_op_params p;
    memset(&p, 0, sizeof p);
    p.axes = 2;
    tg_kview v = view(x, TG_F64, 2, shape, NULL);
    assert_int_equal(run_kernel(TG_OP_SUM, &p, view(out, TG_F64, 2, oshape, NULL), 1, &v), TG_OK);
    assert_true(out[0] == 0 && out[1] == 0 && out[2] == 0);
    assert_int_equal(run_kernel(TG_OP_MEAN, &p, view(out, TG_F64, 2, oshape, NULL), 1, &v), TG_OK);
    assert_true(isnan(out[0]) && isnan(out[2]));
    assert_int_equal(run_kernel(TG_OP_MAX, &p, view(out, TG_F64, 2, oshape, NULL), 1, &v),
                     TG_ERR_SHAPE);
    /* Reducing the other axis of a (3, 0) input gives an empty output. */
    p.axes = 1;
    const int64_t o0[2] = {1, 0};
    assert_int_equal(run_kernel(TG_OP_SUM, &p, view(out, TG_F64, 2, o0, NULL), 1, &v), TG_OK);
    out[0] = out[1] = out[2] = -1;
    tg_kview in[2] = {view(x, TG_F64, 2, eshape, NULL), view(x, TG_F64, 2, eshape, NULL)};
    assert_int_equal(run_kernel(TG_OP_MUL, NULL, view(out, TG_F64, 2, eshape, NULL), 2, in), TG_OK);
    assert_int_equal(run_kernel(TG_OP_EXP, NULL, view(out, TG_F64, 2, eshape, NULL), 1, in), TG_OK);
    assert_int_equal(run_kernel(TG_OP_COPY, NULL, view(out, TG_F64, 2, eshape, NULL), 1, in),
                     TG_OK);
    p.axis = 1;
    assert_int_equal(run_kernel(TG_OP_SOFTMAX, &p, view(out, TG_F64, 2, eshape, NULL), 1, in),
                     TG_OK);
    assert_true(out[0] == -1 && out[1] == -1 && out[2] == -1);
}

/* ---- backend memory and in-place helpers ---- */

static void test_backend_memory(void **state) {
    (void)state;
    const tg_backend *be = tg_backend_cpu();
    assert_string_equal(be->name, "cpu");
    assert_int_equal(be->device, TG_DEVICE_CPU);
    assert_null(be->kernels[TG_OP_PERMUTE]);
    assert_null(be->kernels[TG_OP_BROADCAST_TO]);
    assert_null(be->kernels[TG_OP_SLICE]);
    void *st = NULL;
    char err[64];
    assert_int_equal(be->init(&st, 2, err, sizeof err), TG_OK);
    for (size_t n = 0; n < 300; n += 37) {
        void *p = be->alloc(st, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        be->free(st, p);
    }
    const int64_t n = 100000;
    for (int di = 0; di < 2; di++) {
        tg_dtype dt = float_dtypes[di];
        void *x = be->alloc(st, (size_t)n * esize(dt)), *y = be->alloc(st, (size_t)n * esize(dt));
        assert_int_equal(be->fill(st, dt, n, 2.0, x), TG_OK);
        assert_int_equal(be->zero(st, y, (size_t)n * esize(dt)), TG_OK);
        assert_int_equal(be->axpy(st, dt, n, 0.5, x, y), TG_OK);
        assert_int_equal(be->scale(st, dt, n, 3.0, y), TG_OK);
        assert_int_equal(be->synchronize(st), TG_OK);
        assert_true(get_elem(dt, y, 0) == 3.0 && get_elem(dt, y, n - 1) == 3.0);
        assert_int_equal(be->copy_d2d(st, x, y, (size_t)n * esize(dt)), TG_OK);
        assert_true(get_elem(dt, x, n / 2) == 3.0);
        be->free(st, x);
        be->free(st, y);
    }
    int32_t iv[4];
    assert_int_equal(be->fill(st, TG_I32, 4, 1.0, iv), TG_ERR_DTYPE);
    be->release(st);
    omp_set_num_threads(omp_get_num_procs());
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary_ops),
        cmocka_unit_test(test_where),
        cmocka_unit_test(test_unary_ops),
        cmocka_unit_test(test_unary_extremes),
        cmocka_unit_test(test_dtype_errors),
        cmocka_unit_test(test_reductions),
        cmocka_unit_test(test_reduce_large),
        cmocka_unit_test(test_argmax),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_4d),
        cmocka_unit_test(test_matmul_split),
        cmocka_unit_test(test_copy_reshape),
        cmocka_unit_test(test_concat_slice_scatter),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_scatter_add),
        cmocka_unit_test(test_scatter_add_large),
        cmocka_unit_test(test_pow_scalar),
        cmocka_unit_test(test_nan_propagation),
        cmocka_unit_test(test_transposed_tiles),
        cmocka_unit_test(test_empty_shapes),
        cmocka_unit_test(test_backend_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
