/*
 * tests/test_cpu_kernels.c: the CPU kernels called directly through
 * tg_backend_cpu()->kernels[], on small hand-made strided inputs, against
 * naive reference loops in double precision: the elementwise, layout,
 * indexing and memory kernels (reductions, softmax and matmul are in
 * tests/test_cpu_reduce_matmul.c; the shared helpers in
 * tests/cpu_kernels_util.h).
 *
 * Covered: every elementwise op in f32 and f64 with contiguous, row- and
 * scalar-broadcast and transposed inputs (and one size above the threading
 * threshold); where with every condition dtype; sigmoid, silu and gelu at
 * the far ends; dtype errors; pow_scalar's special-cased exponents; copy /
 * reshape / concat / slice_scatter for 1-, 4- and 8-byte dtypes, and
 * transposed copies and adds through the tiled loop; gather and scatter_add
 * with duplicate indices and their out-of-range errors, and a large
 * scatter_add identical at 1 and 4 threads; zero-size operands; the
 * backend's memory and in-place helpers.
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

#include "cpu_kernels_util.h"
#include "tapegrad/kernels.h"

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
        cmocka_unit_test(test_copy_reshape),
        cmocka_unit_test(test_concat_slice_scatter),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_scatter_add),
        cmocka_unit_test(test_scatter_add_large),
        cmocka_unit_test(test_pow_scalar),
        cmocka_unit_test(test_transposed_tiles),
        cmocka_unit_test(test_empty_shapes),
        cmocka_unit_test(test_backend_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
