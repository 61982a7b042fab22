/*
 * tests/test_cpu_reduce_matmul.c: the CPU reduction, softmax and matmul
 * kernels called directly through tg_backend_cpu()->kernels[], on small
 * hand-made strided inputs and on inputs large enough to be split across
 * threads, against naive reference loops in double precision (the other
 * kernels are in tests/test_cpu_kernels.c; the shared helpers in
 * tests/cpu_kernels_util.h).
 *
 * Covered: reductions over every axis set of a 3-D input, contiguous and
 * permuted, plus large reductions that take the cut-and-combine path,
 * checked for identical bits at 1 and 4 threads; argmax ties; matmul with
 * every transpose combination, batch broadcast on either side and k == 0, a
 * 4-D batch with a broadcast and a transposed operand, and products split
 * across 1 to 4 threads; softmax and log_softmax along each axis; a NaN
 * through every reduction path and through softmax.
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

#include "cpu/cpu.h"
#include "cpu_kernels_util.h"
#include "tapegrad/kernels.h"

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

/* ---- NaN propagation ---- */

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

/*
 * The f32 product of our own (cpu_sgemm.c) against a product in double, and
 * against OpenBLAS's: every transpose, row counts around its 8-row tile,
 * column counts around its 16- and 32-column vectors (masked tails), k of 1,
 * around its 256-step chunks and past them, and leading dimensions wider
 * than the matrices; C written with a row stride wider than m, and what lies
 * between its rows left alone. Skipped (with a message) on CPUs without
 * AVX-512, where OpenBLAS does every product.
 */
static void test_sgemm_own(void **state) {
    (void)state;
    tg__cpu_sgemm_set(true);
    if (!tg__cpu_sgemm_on()) {
        print_message("no AVX-512 on this CPU: OpenBLAS does the f32 products; skipped\n");
        skip();
    }
    const int64_t dims[][3] = {{1, 1, 1},    {7, 1, 15},   {8, 3, 16},    {9, 256, 17},
                               {17, 257, 31}, {16, 300, 32}, {33, 513, 33}, {40, 64, 49},
                               {3, 1000, 70}, {65, 129, 100}};
    for (size_t c = 0; c < sizeof dims / sizeof dims[0]; c++) {
        const int64_t n = dims[c][0], k = dims[c][1], m = dims[c][2];
        for (int t = 0; t < 8; t++) {
            const bool ta = t & 1, tb = t & 2, wide = t & 4;
            /* Stored with 5 extra elements per row or column when wide. */
            const int64_t pad = wide ? 5 : 0, lda = (ta ? n : k) + pad, ldb = (tb ? k : m) + pad;
            const int64_t ldc = m + pad, na = (ta ? k : n) * lda, nb = (tb ? m : k) * ldb;
            double *av = rand_vals(TG_F32, na, 41 + c, 1.0), *bv = rand_vals(TG_F32, nb, 42, 1.0);
            float *A = buf_from(TG_F32, av, na), *B = buf_from(TG_F32, bv, nb);
            const int64_t nr = TG__CPU_SGEMM_NR, panels = (m + nr - 1) / nr;
            float *pk = malloc((size_t)(panels * nr * k) * sizeof *pk);
            float *C = malloc((size_t)(n * ldc) * sizeof *C);
            for (int64_t i = 0; i < n * ldc; i++)
                C[i] = -7.0f;
            /* B as it lies (row-major only), or copied into the kernel's
             * panels as cpu_matmul.c does (transposed always; row-major
             * in every other case here) */
            const float *b = B;
            int64_t lb = ldb, bps = nr;
            if (tb || c % 2) {
                tg__cpu_sgemm_pack(pk, B, tb ? 1 : ldb, tb ? ldb : 1, k, m, 0, panels);
                b = pk;
                lb = nr;
                bps = nr * k;
            }
            tg__cpu_sgemm(n, m, k, A, ta ? 1 : lda, ta ? lda : 1, b, lb, bps, C, ldc);
            for (int64_t i = 0; i < n; i++) {
                for (int64_t j = 0; j < ldc; j++) {
                    if (j >= m) {
                        if (C[i * ldc + j] != -7.0f)
                            fail_msg("%lldx%lldx%lld t%d: C[%lld][%lld] past m was written",
                                     (long long)n, (long long)k, (long long)m, t, (long long)i,
                                     (long long)j);
                        continue;
                    }
                    double want = 0, mag = 0;
                    for (int64_t l = 0; l < k; l++) {
                        const double x = av[ta ? l * lda + i : i * lda + l];
                        const double y = bv[tb ? j * ldb + l : l * ldb + j];
                        want += x * y;
                        mag += fabs(x * y);
                    }
                    /* A sum of k f32 products is within k u of the sum of their
                     * magnitudes (u = 2^-24); one term missing or doubled is not. */
                    if (fabs(C[i * ldc + j] - want) > 1.01 * (double)k * 0x1p-24 * mag)
                        fail_msg("%lldx%lldx%lld t%d: C[%lld][%lld] = %.9g, want %.9g",
                                 (long long)n, (long long)k, (long long)m, t, (long long)i,
                                 (long long)j, C[i * ldc + j], want);
                }
            }
            free(av);
            free(bv);
            free(A);
            free(B);
            free(pk);
            free(C);
        }
    }
    /* Through the kernel with either product: both match the product in
     * double (check_matmul), and OpenBLAS is still there when ours is off.
     * With ours on, the 1030-row products take it for every transpose (a
     * transposed B is copied into its panels first, and so is a row-major B
     * of 260 columns; with 1100 columns, more than rows, the parts split the
     * columns and each starts at its own panel), the 37-row ones for a B as
     * it lies. */
    for (int on = 0; on < 2; on++) {
        tg__cpu_sgemm_set(on);
        assert_int_equal(tg__cpu_sgemm_on(), on);
        for (int t = 0; t < 4; t++) {
            check_matmul(TG_F32, 2, 37, 300, 45, t & 1, t & 2, false, true);
            check_matmul(TG_F32, 1, 1030, 20, 70, t & 1, t & 2, false, false);
            check_matmul(TG_F32, 1, 1030, 20, 260, t & 1, t & 2, false, false);
            check_matmul(TG_F32, 1, 1030, 20, 1100, t & 1, t & 2, false, false);
        }
    }
    tg__cpu_sgemm_set(true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgemm_own),
        cmocka_unit_test(test_reductions), cmocka_unit_test(test_reduce_large),
        cmocka_unit_test(test_argmax),     cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_4d),  cmocka_unit_test(test_matmul_split),
        cmocka_unit_test(test_softmax),    cmocka_unit_test(test_nan_propagation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
