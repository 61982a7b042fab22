/*
 * Autograd semantics, part 1: the worked examples of the seed notes,
 * broadcasting rules, the gradients of max/min with ties and of the shape
 * ops, einops-style rearrange, and PyTorch's conventions at kinks and edges.
 * Leaves, in-place detection, the grad hook and step memory are in
 * test_autograd_semantics.c.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "autograd_util.h"
/* ------------------------------------------------------------------------ */
/* Seed 000: the worked example                                             */
/* ------------------------------------------------------------------------ */

/* y = ln x1 + x1*x2 - exp(x2) at (2, 5): y = -137.72, dy/dx1 = 1/x1 + x2 =
 * 5.5, dy/dx2 = x1 - exp(x2) = -146.41. */
static void test_seed000_worked_example(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x1 = tg_scalar(ctx, TG_F64, 2.0);
    tg_tensor *x2 = tg_scalar(ctx, TG_F64, 5.0);
    CHECK_T(ctx, x1);
    CHECK_T(ctx, x2);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, x1, true));
    CHECK_OK(ctx, tg_set_requires_grad(ctx, x2, true));
    tg_tensor *v1 = tg_log(ctx, x1);
    tg_tensor *v2 = tg_mul(ctx, x1, x2);
    tg_tensor *v3 = tg_exp(ctx, x2);
    tg_tensor *v4 = tg_add(ctx, v1, v2);
    tg_tensor *y = tg_sub(ctx, v4, v3);
    CHECK_T(ctx, y);
    assert_int_equal(y->ndim, 0);
    CHECK_OK(ctx, tg_backward(ctx, y, NULL, 0));

    double yv = item(ctx, y);
    assert_true(fabs(yv - (log(2.0) + 10.0 - exp(5.0))) < 1e-9);
    assert_true(fabs(round(yv * 100.0) / 100.0 - (-137.72)) < 1e-9);

    CHECK_T(ctx, x1->grad);
    CHECK_T(ctx, x2->grad);
    double g1 = item(ctx, x1->grad), g2 = item(ctx, x2->grad);
    assert_true(fabs(g1 - 5.5) < 1e-12);
    assert_true(fabs(g2 - (2.0 - exp(5.0))) < 1e-9);
    assert_true(fabs(round(g2 * 100.0) / 100.0 - (-146.41)) < 1e-9);
    assert_true(fabs(round(g2 * 1e4) / 1e4 - (-146.4132)) < 1e-9);
    /* intermediates are not leaves and keep no gradient */
    assert_false(tg_is_leaf(v2));
    assert_null(v2->grad);
}

/* The same in f32, as the seed's own run printed it (-137.72001,
 * 5.5, -146.41316). */
static void test_seed000_worked_example_f32(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x1 = tg_scalar(ctx, TG_F32, 2.0);
    tg_tensor *x2 = tg_scalar(ctx, TG_F32, 5.0);
    CHECK_T(ctx, x1);
    CHECK_T(ctx, x2);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, x1, true));
    CHECK_OK(ctx, tg_set_requires_grad(ctx, x2, true));
    tg_tensor *y = tg_sub(ctx, tg_add(ctx, tg_log(ctx, x1), tg_mul(ctx, x1, x2)), tg_exp(ctx, x2));
    CHECK_T(ctx, y);
    assert_int_equal(y->dtype, TG_F32);
    CHECK_OK(ctx, tg_backward(ctx, y, NULL, 0));
    assert_true(fabs(item(ctx, y) - (-137.72001)) < 1e-3);
    assert_true(fabs(item(ctx, x1->grad) - 5.5) < 1e-5);
    assert_true(fabs(item(ctx, x2->grad) - (-146.41316)) < 1e-3);
}

/* ------------------------------------------------------------------------ */
/* Seed 001: higher-order gradients                                         */
/* ------------------------------------------------------------------------ */

/* L1 = sum((a+b)*b): dL1/da = b, dL1/db = a + 2b. L2 = sum(ga^2 + gb^2), so
 * dL2/da = 2a + 4b and dL2/db = 4a + 10b. */
static void test_seed001_higher_order(void **state) {
    tg_ctx *ctx = *state;
    enum {
        N = 6
    };
    double av[N], bv[N];
    fill_random(av, N, 1);
    fill_random(bv, N, 2);
    tg_tensor *a = f64_rg(ctx, 1, SH(N), av);
    tg_tensor *b = f64_rg(ctx, 1, SH(N), bv);
    tg_tensor *unused = f64_rg(ctx, 1, SH(N), av);
    tg_tensor *l1 = sum_all(ctx, tg_mul(ctx, tg_add(ctx, a, b), b));
    CHECK_T(ctx, l1);

    tg_tensor *g[3] = {NULL, NULL, NULL};
    CHECK_OK(ctx, tg_grad(ctx, l1, NULL, 3, TS(a, b, unused), g, TG_CREATE_GRAPH));
    CHECK_T(ctx, g[0]);
    CHECK_T(ctx, g[1]);
    /* an input that does not affect the root gets no gradient */
    assert_null(g[2]);
    /* tg_grad accumulates nothing into ->grad */
    assert_null(a->grad);
    assert_null(b->grad);
    /* made under create_graph, the gradients are differentiable */
    assert_true(g[0]->requires_grad);
    assert_true(g[1]->requires_grad);

    double want[N];
    expect_values(ctx, g[0], bv, N, 1e-12);
    for (int i = 0; i < N; i++)
        want[i] = av[i] + 2 * bv[i];
    expect_values(ctx, g[1], want, N, 1e-12);

    tg_tensor *l2 =
        sum_all(ctx, tg_add(ctx, tg_pow_scalar(ctx, g[0], 2.0), tg_pow_scalar(ctx, g[1], 2.0)));
    CHECK_T(ctx, l2);
    CHECK_OK(ctx, tg_backward(ctx, l2, NULL, 0));
    CHECK_T(ctx, a->grad);
    CHECK_T(ctx, b->grad);
    for (int i = 0; i < N; i++)
        want[i] = 2 * av[i] + 4 * bv[i];
    expect_values(ctx, a->grad, want, N, 1e-12);
    for (int i = 0; i < N; i++)
        want[i] = 4 * av[i] + 10 * bv[i];
    expect_values(ctx, b->grad, want, N, 1e-12);
    assert_null(unused->grad);
}

/* The seed's torch.autograd.grad example: z = sum(x*y), (dz/dx, dz/dy) =
 * (y, x) with create_graph; w = sum(dz/dx * dz/dy) = sum(x*y), so
 * dw/dx = y and dw/dy = x; x.grad and y.grad stay empty throughout. */
static void test_seed001_grad_of_grad(void **state) {
    tg_ctx *ctx = *state;
    double xv[4], yv[4];
    fill_random(xv, 4, 11);
    fill_random(yv, 4, 12);
    tg_tensor *x = f64_rg(ctx, 1, SH(4), xv);
    tg_tensor *y = f64_rg(ctx, 1, SH(4), yv);
    tg_tensor *z = sum_all(ctx, tg_mul(ctx, x, y));
    CHECK_T(ctx, z);
    tg_tensor *dz[2] = {NULL, NULL}, *dw[2] = {NULL, NULL};
    CHECK_OK(ctx, tg_grad(ctx, z, NULL, 2, TS(x, y), dz, TG_CREATE_GRAPH));
    tg_tensor *w = sum_all(ctx, tg_mul(ctx, dz[0], dz[1]));
    CHECK_T(ctx, w);
    CHECK_OK(ctx, tg_grad(ctx, w, NULL, 2, TS(x, y), dw, TG_CREATE_GRAPH));
    expect_values(ctx, dw[0], yv, 4, 1e-12);
    expect_values(ctx, dw[1], xv, 4, 1e-12);
    assert_null(x->grad);
    assert_null(y->grad);
}

/* ------------------------------------------------------------------------ */
/* Seed 000: broadcasting                                                   */
/* ------------------------------------------------------------------------ */

/* aa + other must be legal and equal the broadcast sum element by element. */
static void check_legal_add(tg_ctx *ctx, tg_tensor *aa, const double *av, int ndim,
                            const int64_t *shape, uint64_t seed) {
    double *ov = NULL;
    tg_tensor *o = randn_like_shape(ctx, ndim, shape, seed, &ov);
    tg_tensor *r = tg_add(ctx, aa, o);
    CHECK_T(ctx, r);
    expect_shape(r, 5, SH(2, 3, 6, 5, 4));
    double *rv = read_all(ctx, r);
    int64_t idx[TG_MAX_DIMS];
    for (int64_t i = 0; i < 720; i++) {
        unravel(i, 5, r->shape, idx);
        double want = av[i] + ov[bcast_offset(5, idx, ndim, shape)];
        if (fabs(rv[i] - want) > 1e-12)
            fail_msg("element %lld is %g, expected %g", (long long)i, rv[i], want);
    }
    free(rv);
    free(ov);
}

static void check_illegal(tg_ctx *ctx, tg_tensor *r, tg_status want, const char *op,
                          const char *shape_a, const char *shape_b) {
    if (r)
        fail_msg("%s of %s and %s should fail", op, shape_a, shape_b);
    assert_int_equal(tg_ctx_status(ctx), want);
    const char *e = errmsg(ctx);
    if (!contains(e, op) || !contains(e, shape_a) || !contains(e, shape_b))
        fail_msg("message should name %s, %s and %s: '%s'", op, shape_a, shape_b, e);
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_ctx_status(ctx), TG_OK);
}

static void test_seed000_broadcast_elementwise(void **state) {
    tg_ctx *ctx = *state;
    double *av = NULL;
    tg_tensor *aa = randn_like_shape(ctx, 5, SH(2, 3, 6, 5, 4), 100, &av);
    /* legal: missing leading dims are added; size-1 dims are repeated */
    check_legal_add(ctx, aa, av, 4, SH(3, 6, 5, 4), 101);
    check_legal_add(ctx, aa, av, 5, SH(2, 3, 1, 5, 4), 102);
    /* illegal: dims are never added on the right or in the middle, and a 2
     * is not repeated to 6 */
    tg_tensor *cc = randn_like_shape(ctx, 4, SH(2, 3, 6, 5), 103, NULL);
    tg_tensor *dd = randn_like_shape(ctx, 4, SH(2, 3, 5, 4), 104, NULL);
    tg_tensor *ff = randn_like_shape(ctx, 5, SH(2, 3, 2, 5, 4), 105, NULL);
    check_illegal(ctx, tg_add(ctx, aa, cc), TG_ERR_SHAPE, "add", "(2, 3, 6, 5, 4)", "(2, 3, 6, 5)");
    check_illegal(ctx, tg_add(ctx, aa, dd), TG_ERR_SHAPE, "add", "(2, 3, 6, 5, 4)", "(2, 3, 5, 4)");
    check_illegal(ctx, tg_add(ctx, aa, ff), TG_ERR_SHAPE, "add", "(2, 3, 6, 5, 4)",
                  "(2, 3, 2, 5, 4)");
    /* the same rules for the other elementwise ops */
    check_illegal(ctx, tg_mul(ctx, aa, cc), TG_ERR_SHAPE, "mul", "(2, 3, 6, 5, 4)", "(2, 3, 6, 5)");
    check_illegal(ctx, tg_sub(ctx, dd, aa), TG_ERR_SHAPE, "sub", "(2, 3, 5, 4)", "(2, 3, 6, 5, 4)");
    check_illegal(ctx, tg_div(ctx, aa, ff), TG_ERR_SHAPE, "div", "(2, 3, 6, 5, 4)",
                  "(2, 3, 2, 5, 4)");
    free(av);
}

/* out = A @ B (or A @ B^T when bt, with B stored (..., n, k)), batch dims
 * broadcast; every operand a contiguous host array. */
static void ref_matmul(const double *A, int an, const int64_t *ash, const double *Bv, int bn,
                       const int64_t *bsh, bool bt, const tg_tensor *out, double *ov) {
    int on = out->ndim;
    int64_t m = ash[an - 2], k = ash[an - 1], n = bt ? bsh[bn - 2] : bsh[bn - 1];
    int64_t nb = tg_numel(out) / (m * n);
    int64_t idx[TG_MAX_DIMS] = {0};
    for (int64_t bi = 0; bi < nb; bi++) {
        unravel(bi, on - 2, out->shape, idx);
        int64_t ao = bcast_offset(on - 2, idx, an - 2, ash) * m * k;
        int64_t bo = bcast_offset(on - 2, idx, bn - 2, bsh) * k * n;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t p = 0; p < k; p++)
                    s += A[ao + i * k + p] * (bt ? Bv[bo + j * k + p] : Bv[bo + p * n + j]);
                ov[(bi * m + i) * n + j] = s;
            }
    }
}

static void check_matmul(tg_ctx *ctx, tg_tensor *r, const double *A, int an, const int64_t *ash,
                         const double *Bv, int bn, const int64_t *bsh, bool bt) {
    CHECK_T(ctx, r);
    expect_shape(r, 5, SH(2, 3, 6, 5, 5));
    double *want = malloc((size_t)tg_numel(r) * sizeof *want);
    assert_non_null(want);
    ref_matmul(A, an, ash, Bv, bn, bsh, bt, r, want);
    expect_values(ctx, r, want, tg_numel(r), 1e-12);
    free(want);
}

static void test_seed000_broadcast_matmul(void **state) {
    tg_ctx *ctx = *state;
    double *av, *bv, *gv, *ev;
    tg_tensor *aa = randn_like_shape(ctx, 5, SH(2, 3, 6, 5, 4), 200, &av);
    tg_tensor *bb = randn_like_shape(ctx, 4, SH(3, 6, 5, 4), 201, &bv);
    tg_tensor *dd = randn_like_shape(ctx, 4, SH(2, 3, 5, 4), 202, NULL);
    tg_tensor *ee = randn_like_shape(ctx, 5, SH(2, 3, 1, 5, 4), 203, &ev);
    tg_tensor *ff = randn_like_shape(ctx, 5, SH(2, 3, 2, 5, 4), 204, NULL);
    tg_tensor *gg = randn_like_shape(ctx, 5, SH(2, 3, 6, 4, 5), 205, &gv);
    tg_tensor *hh = randn_like_shape(ctx, 5, SH(2, 3, 6, 1, 5), 206, NULL);

    /* only the last two dims must fit; the batch dims pair up */
    check_matmul(ctx, tg_matmul(ctx, aa, gg), av, 5, SH(2, 3, 6, 5, 4), gv, 5, SH(2, 3, 6, 4, 5),
                 false);
    /* missing leading batch dims are added */
    check_matmul(ctx, tg_matmul(ctx, aa, tg_transpose(ctx, bb, -1, -2)), av, 5, SH(2, 3, 6, 5, 4),
                 bv, 4, SH(3, 6, 5, 4), true);
    /* a size-1 batch dim repeats */
    check_matmul(ctx, tg_matmul(ctx, aa, tg_transpose(ctx, ee, -1, -2)), av, 5, SH(2, 3, 6, 5, 4),
                 ev, 5, SH(2, 3, 1, 5, 4), true);
    /* no batch dims in the middle, no 2 -> 6, no broadcasting of the
     * matrix dims themselves */
    check_illegal(ctx, tg_matmul(ctx, aa, tg_transpose(ctx, dd, -1, -2)), TG_ERR_SHAPE, "matmul",
                  "(2, 3, 6, 5, 4)", "(2, 3, 4, 5)");
    check_illegal(ctx, tg_matmul(ctx, aa, tg_transpose(ctx, ff, -1, -2)), TG_ERR_SHAPE, "matmul",
                  "(2, 3, 6, 5, 4)", "(2, 3, 2, 4, 5)");
    check_illegal(ctx, tg_matmul(ctx, aa, hh), TG_ERR_SHAPE, "matmul", "(2, 3, 6, 5, 4)",
                  "(2, 3, 6, 1, 5)");
    free(av);
    free(bv);
    free(ev);
    free(gv);
}

/* The gradient of a broadcast operand is reduced back to its own shape. */
static void test_broadcast_gradient_reduces(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = arange(ctx, 3, SH(2, 3, 1), 0);
    tg_tensor *b = arange(ctx, 2, SH(3, 4), 0);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, a, true));
    CHECK_OK(ctx, tg_set_requires_grad(ctx, b, true));
    tg_tensor *l = sum_all(ctx, tg_add(ctx, a, b));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    expect_shape(a->grad, 3, SH(2, 3, 1));
    expect_shape(b->grad, 2, SH(3, 4));
    double four[6] = {4, 4, 4, 4, 4, 4}, two[12];
    for (int i = 0; i < 12; i++)
        two[i] = 2;
    expect_values(ctx, a->grad, four, 6, 0);
    expect_values(ctx, b->grad, two, 12, 0);
}

/* ------------------------------------------------------------------------ */
/* Seed 002: max with ties, slice, reshape, transpose                       */
/* ------------------------------------------------------------------------ */

/* Backpropagates `seed` (NULL: 1 for a scalar) through red(x) and checks
 * x's gradient. */
static void check_reduce_grad(tg_ctx *ctx, bool is_max, int xnd, const int64_t *xsh,
                              const double *xv, int naxes, const int *axes, bool keepdim,
                              const double *seedv, const double *want_val,
                              const double *want_grad) {
    tg_tensor *x = f64_rg(ctx, xnd, xsh, xv);
    tg_tensor *y =
        is_max ? tg_max(ctx, x, naxes, axes, keepdim) : tg_min(ctx, x, naxes, axes, keepdim);
    CHECK_T(ctx, y);
    if (want_val)
        expect_values(ctx, y, want_val, tg_numel(y), 0);
    tg_tensor *seed = NULL;
    if (seedv)
        seed = f64(ctx, y->ndim, y->shape, seedv);
    CHECK_OK(ctx, tg_backward(ctx, y, seed, 0));
    CHECK_T(ctx, x->grad);
    expect_values(ctx, x->grad, want_grad, tg_numel(x), 1e-15);
}

/* Seed 002's convention, which this runtime follows (and PyTorch does only
 * for the whole-tensor reduction): tied extrema split the gradient evenly,
 * for a full reduction and per axis alike. */
static void test_seed002_max_ties(void **state) {
    tg_ctx *ctx = *state;
    /* the seed's examples without ties: the gradient is one-hot */
    const double x8[8] = {3, 1, 8, 0, 0, 3, 6, 4};
    const double g8[8] = {0, 0, 1, 0, 0, 0, 0, 0};
    check_reduce_grad(ctx, true, 1, SH(8), x8, 0, NULL, false, NULL, (const double[]){8}, g8);
    const double x45[20] = {1, 1, 5, 9, 1, 4, 5, 9, 8, 7, 1, 1, 7, 7, 9, 8, 1, 1, 0, 7};
    const double g45[20] = {0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0};
    check_reduce_grad(ctx, true, 2, SH(4, 5), x45, 1, AX(0), true, (const double[]){1, 1, 1, 1, 1},
                      (const double[]){8, 5, 9, 9, 9}, g45);
    /* whole-tensor max with a tie */
    check_reduce_grad(ctx, true, 1, SH(4), (const double[]){1, 3, 3, 2}, 0, NULL, false, NULL,
                      (const double[]){3}, (const double[]){0, 0.5, 0.5, 0});
    /* all equal: every element gets 1/10 (the seed's torch.ones((2,5))) */
    const double ones10[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    const double tenth[10] = {.1, .1, .1, .1, .1, .1, .1, .1, .1, .1};
    check_reduce_grad(ctx, true, 2, SH(2, 5), ones10, 0, NULL, false, NULL, (const double[]){1},
                      tenth);
    /* per axis on the same tensor: each column's two maxima get 1/2 each
     * (PyTorch would give [[1...],[0...]]; the seed prefers the split) */
    const double half10[10] = {.5, .5, .5, .5, .5, .5, .5, .5, .5, .5};
    check_reduce_grad(ctx, true, 2, SH(2, 5), ones10, 1, AX(0), false,
                      (const double[]){1, 1, 1, 1, 1}, (const double[]){1, 1, 1, 1, 1}, half10);
    /* per axis with a non-uniform seed */
    const double x23[6] = {1, 4, 4, 4, 2, 4};
    check_reduce_grad(ctx, true, 2, SH(2, 3), x23, 1, AX(0), false, (const double[]){1, 2, 3},
                      (const double[]){4, 4, 4}, (const double[]){0, 2, 1.5, 1, 0, 1.5});
    check_reduce_grad(ctx, true, 2, SH(2, 3), x23, 1, AX(-1), true, (const double[]){1, 2},
                      (const double[]){4, 4}, (const double[]){0, .5, .5, 1, 0, 1});
    /* two axes at once: ties across both reduced axes share */
    const double x222[8] = {1, 5, 5, 0, 5, 2, 3, 3};
    check_reduce_grad(ctx, true, 3, SH(2, 2, 2), x222, 2, AX(0, 2), true, (const double[]){1, 1},
                      (const double[]){5, 5}, (const double[]){0, .5, 1, 0, .5, 0, 0, 0});
}

static void test_seed002_min_ties(void **state) {
    tg_ctx *ctx = *state;
    check_reduce_grad(ctx, false, 1, SH(4), (const double[]){2, 0, 0, 1}, 0, NULL, false, NULL,
                      (const double[]){0}, (const double[]){0, 0.5, 0.5, 0});
    const double x23[6] = {-1, -4, -4, -4, -2, -4};
    check_reduce_grad(ctx, false, 2, SH(2, 3), x23, 1, AX(0), false, (const double[]){1, 2, 3},
                      (const double[]){-4, -4, -4}, (const double[]){0, 2, 1.5, 1, 0, 1.5});
    check_reduce_grad(ctx, false, 2, SH(2, 3), x23, 1, AX(1), false, (const double[]){1, 2},
                      (const double[]){-4, -4}, (const double[]){0, .5, .5, 1, 0, 1});
    const double x222[8] = {-1, -5, -5, 0, -5, -2, -3, -3};
    check_reduce_grad(ctx, false, 3, SH(2, 2, 2), x222, 2, AX(0, 2), false, (const double[]){1, 1},
                      (const double[]){-5, -5}, (const double[]){0, .5, 1, 0, .5, 0, 0, 0});
}

/* transpose(2,0,1) of arange(24).reshape(2,3,4), and its gradient: the
 * permute by argsort((2,0,1)) = (1,2,0) of the incoming gradient. */
static void test_seed002_permute_gradient(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = arange(ctx, 3, SH(2, 3, 4), 0);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, x, true));
    tg_tensor *y = tg_permute(ctx, x, AX(2, 0, 1));
    CHECK_T(ctx, y);
    expect_shape(y, 3, SH(4, 2, 3));
    const double b[24] = {0, 4, 8,  12, 16, 20, 1, 5, 9,  13, 17, 21,
                          2, 6, 10, 14, 18, 22, 3, 7, 11, 15, 19, 23};
    expect_values(ctx, y, b, 24, 0);
    /* a view: no copy, same storage */
    assert_ptr_equal(y->storage, x->storage);

    tg_tensor *s = arange(ctx, 3, SH(4, 2, 3), 100);
    CHECK_OK(ctx, tg_backward(ctx, y, s, 0));
    expect_shape(x->grad, 3, SH(2, 3, 4));
    double want[24];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++)
                want[(i * 3 + j) * 4 + k] = 100 + (k * 2 + i) * 3 + j;
    expect_values(ctx, x->grad, want, 24, 0);
    /* and that is exactly the permute by argsort */
    tg_tensor *inv = tg_permute(ctx, s, AX(1, 2, 0));
    CHECK_T(ctx, inv);
    expect_values(ctx, inv, want, 24, 0);
    /* permuting back by argsort restores x */
    tg_tensor *back = tg_permute(ctx, y, AX(1, 2, 0));
    CHECK_T(ctx, back);
    double xv[24];
    for (int i = 0; i < 24; i++)
        xv[i] = i;
    expect_values(ctx, back, xv, 24, 0);
}

static void test_seed002_reshape_gradient(void **state) {
    tg_ctx *ctx = *state;
    const double xv[24] = {9, 4, 8, 7, 6, 0, 7, 4, 2, 9, 4, 4, 7, 1, 8, 2, 4, 7, 8, 8, 9, 2, 6, 6};
    tg_tensor *x = f64_rg(ctx, 2, SH(4, 6), xv);
    tg_tensor *y = tg_reshape(ctx, x, 2, SH(3, 8));
    CHECK_T(ctx, y);
    expect_shape(y, 2, SH(3, 8));
    /* reshape keeps the row-major order */
    expect_values(ctx, y, xv, 24, 0);
    tg_tensor *s = arange(ctx, 2, SH(3, 8), 1);
    CHECK_OK(ctx, tg_backward(ctx, y, s, 0));
    expect_shape(x->grad, 2, SH(4, 6));
    double want[24];
    for (int i = 0; i < 24; i++)
        want[i] = 1 + i;
    expect_values(ctx, x->grad, want, 24, 0);

    /* y.sum().backward() gives ones (the seed's example) */
    tg_tensor *x2 = f64_rg(ctx, 2, SH(4, 6), xv);
    tg_tensor *l = sum_all(ctx, tg_reshape(ctx, x2, 2, SH(3, 8)));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    for (int i = 0; i < 24; i++)
        want[i] = 1;
    expect_values(ctx, x2->grad, want, 24, 0);

    /* reshape of a non-contiguous view must copy in the view's order, and
     * its gradient must land back through the permute */
    tg_tensor *x3 = arange(ctx, 2, SH(2, 3), 0);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, x3, true));
    tg_tensor *f = tg_reshape(ctx, tg_transpose(ctx, x3, 0, 1), 1, SH(6));
    CHECK_T(ctx, f);
    expect_values(ctx, f, (const double[]){0, 3, 1, 4, 2, 5}, 6, 0);
    CHECK_OK(ctx, tg_backward(ctx, f, arange(ctx, 1, SH(6), 10), 0));
    expect_values(ctx, x3->grad, (const double[]){10, 12, 14, 11, 13, 15}, 6, 0);
}

static void check_slice_grad(tg_ctx *ctx, int axis, int64_t start, int64_t stop, int64_t step,
                             int ond, const int64_t *osh, const double *want_val,
                             const double *want_grad) {
    tg_tensor *x = arange(ctx, 2, SH(4, 5), 0);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, x, true));
    tg_tensor *y = tg_slice(ctx, x, axis, start, stop, step);
    CHECK_T(ctx, y);
    expect_shape(y, ond, osh);
    expect_values(ctx, y, want_val, tg_numel(y), 0);
    /* seed 1..n so that each selected element's gradient is identifiable */
    tg_tensor *s = arange(ctx, y->ndim, y->shape, 1);
    CHECK_OK(ctx, tg_backward(ctx, y, s, 0));
    expect_values(ctx, x->grad, want_grad, 20, 0);
}

/* Only the selected elements get gradient. */
static void test_seed002_slice_gradient(void **state) {
    tg_ctx *ctx = *state;
    /* x[2, :] (kept as a (1,5) slice) */
    check_slice_grad(ctx, 0, 2, 3, 1, 2, SH(1, 5), (const double[]){10, 11, 12, 13, 14},
                     (const double[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0});
    /* x[:, 0:5:2] */
    check_slice_grad(
        ctx, 1, 0, 5, 2, 2, SH(4, 3), (const double[]){0, 2, 4, 5, 7, 9, 10, 12, 14, 15, 17, 19},
        (const double[]){1, 0, 2, 0, 3, 4, 0, 5, 0, 6, 7, 0, 8, 0, 9, 10, 0, 11, 0, 12});
    /* x[-3::2] with a stop past the end (clamped) */
    check_slice_grad(ctx, 0, -3, 100, 2, 2, SH(2, 5),
                     (const double[]){5, 6, 7, 8, 9, 15, 16, 17, 18, 19},
                     (const double[]){0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 6, 7, 8, 9, 10});
    /* x[:, -100:-2:3]: a start before the beginning clamps to 0 */
    check_slice_grad(ctx, 1, -100, -2, 3, 2, SH(4, 1), (const double[]){0, 5, 10, 15},
                     (const double[]){1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 4, 0, 0, 0, 0});
    /* an empty slice is a legal (0,5) view */
    tg_tensor *x = arange(ctx, 2, SH(4, 5), 0);
    tg_tensor *e = tg_slice(ctx, x, 0, 3, 1, 1);
    CHECK_T(ctx, e);
    expect_shape(e, 2, SH(0, 5));
}

/* ------------------------------------------------------------------------ */
/* Seed 000: rearrange, chunk, stack, softmax                                */
/* ------------------------------------------------------------------------ */

static void test_seed000_rearrange(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *t = arange(ctx, 1, SH(8), 1);
    /* grouping */
    tg_tensor *g = tg_rearrange(ctx, t, "(b a) -> b a", "a=2");
    CHECK_T(ctx, g);
    expect_shape(g, 2, SH(4, 2));
    expect_values(ctx, g, (const double[]){1, 2, 3, 4, 5, 6, 7, 8}, 8, 0);
    /* transposition */
    tg_tensor *tr = tg_rearrange(ctx, g, "b a -> a b", NULL);
    CHECK_T(ctx, tr);
    expect_shape(tr, 2, SH(2, 4));
    expect_values(ctx, tr, (const double[]){1, 3, 5, 7, 2, 4, 6, 8}, 8, 0);
    /* concatenation (the seed passes a=4, which must agree) */
    tg_tensor *c = tg_rearrange(ctx, tr, "b a -> (b a)", "a=4");
    CHECK_T(ctx, c);
    expect_shape(c, 1, SH(8));
    expect_values(ctx, c, (const double[]){1, 3, 5, 7, 2, 4, 6, 8}, 8, 0);
    tg_tensor *c2 = tg_rearrange(ctx, tr, "b a -> (b a)", "");
    CHECK_T(ctx, c2);
    expect_values(ctx, c2, (const double[]){1, 3, 5, 7, 2, 4, 6, 8}, 8, 0);

    /* the exercise: a (b1 b2) c -> a (b2 b1) c -> a c (b2 b1) -> (a c) (b2 b1) */
    tg_tensor *t3 = arange(ctx, 3, SH(3, 4, 1), 1);
    tg_tensor *r = tg_rearrange(ctx, t3, "a (b1 b2) c -> (a c) (b2 b1)", "b1=2");
    CHECK_T(ctx, r);
    expect_shape(r, 2, SH(3, 4));
    expect_values(ctx, r, (const double[]){1, 3, 2, 4, 5, 7, 6, 8, 9, 11, 10, 12}, 12, 0);

    /* gradients flow back through the rearrangement */
    CHECK_OK(ctx, tg_set_requires_grad(ctx, t3, true));
    tg_tensor *r2 = tg_rearrange(ctx, t3, "a (b1 b2) c -> (a c) (b2 b1)", "b1=2");
    CHECK_T(ctx, r2);
    CHECK_OK(ctx, tg_backward(ctx, r2, arange(ctx, 2, SH(3, 4), 1), 0));
    expect_shape(t3->grad, 3, SH(3, 4, 1));
    expect_values(ctx, t3->grad, (const double[]){1, 3, 2, 4, 5, 7, 6, 8, 9, 11, 10, 12}, 12, 0);
}

static void test_seed000_chunk(void **state) {
    tg_ctx *ctx = *state;
    const double tv[12] = {1, 1, 4, 4, 2, 2, 5, 5, 3, 3, 6, 6};
    tg_tensor *t = f64_rg(ctx, 2, SH(3, 4), tv);
    tg_tensor *parts[4] = {NULL, NULL, NULL, NULL};
    assert_int_equal(tg_chunk(ctx, t, 2, 1, parts), 2);
    expect_shape(parts[0], 2, SH(3, 2));
    expect_shape(parts[1], 2, SH(3, 2));
    expect_values(ctx, parts[0], (const double[]){1, 1, 2, 2, 3, 3}, 6, 0);
    expect_values(ctx, parts[1], (const double[]){4, 4, 5, 5, 6, 6}, 6, 0);
    /* the chunks are views: each passes gradient to its own columns */
    tg_tensor *l =
        tg_add(ctx, sum_all(ctx, parts[0]), sum_all(ctx, tg_mul_scalar(ctx, parts[1], 3)));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    expect_values(ctx, t->grad, (const double[]){1, 1, 3, 3, 1, 1, 3, 3, 1, 1, 3, 3}, 12, 0);

    /* size ceil(len/chunks), the last smaller; fewer chunks when they run
     * out (torch.chunk) */
    tg_tensor *u = arange(ctx, 1, SH(5), 0);
    assert_int_equal(tg_chunk(ctx, u, 3, 0, parts), 3);
    expect_values(ctx, parts[0], (const double[]){0, 1}, 2, 0);
    expect_values(ctx, parts[1], (const double[]){2, 3}, 2, 0);
    expect_values(ctx, parts[2], (const double[]){4}, 1, 0);
    tg_tensor *v = arange(ctx, 1, SH(4), 0);
    assert_int_equal(tg_chunk(ctx, v, 3, 0, parts), 2);
    expect_values(ctx, parts[1], (const double[]){2, 3}, 2, 0);
    /* a negative axis counts from the end */
    assert_int_equal(tg_chunk(ctx, t, 2, -1, parts), 2);
    expect_values(ctx, parts[1], (const double[]){4, 4, 5, 5, 6, 6}, 6, 0);
}

static void test_stack(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = arange(ctx, 2, SH(2, 3), 0);
    tg_tensor *b = arange(ctx, 2, SH(2, 3), 10);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, a, true));
    tg_tensor *s0 = tg_stack(ctx, 2, TS(a, b), 0);
    CHECK_T(ctx, s0);
    expect_shape(s0, 3, SH(2, 2, 3));
    expect_values(ctx, s0, (const double[]){0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15}, 12, 0);
    tg_tensor *s2 = tg_stack(ctx, 2, TS(a, b), -1);
    CHECK_T(ctx, s2);
    expect_shape(s2, 3, SH(2, 3, 2));
    expect_values(ctx, s2, (const double[]){0, 10, 1, 11, 2, 12, 3, 13, 4, 14, 5, 15}, 12, 0);
    assert_true(s2->requires_grad);
    CHECK_OK(ctx, tg_backward(ctx, s2, arange(ctx, 3, SH(2, 3, 2), 0), 0));
    expect_values(ctx, a->grad, (const double[]){0, 2, 4, 6, 8, 10}, 6, 0);
    assert_null(b->grad);
}

/* nn.Softmax(dim=1) on rows of equal values gives 0.25 everywhere. */
static void test_seed000_softmax_dim(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *t = f64(ctx, 2, SH(3, 4), (const double[]){1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3});
    tg_tensor *s = tg_softmax(ctx, t, 1);
    CHECK_T(ctx, s);
    double q[12];
    for (int i = 0; i < 12; i++)
        q[i] = 0.25;
    expect_values(ctx, s, q, 12, 1e-15);
    /* along dim 0 each column is softmax(1, 2, 3) */
    tg_tensor *s0 = tg_softmax(ctx, t, 0);
    CHECK_T(ctx, s0);
    double z = exp(1) + exp(2) + exp(3);
    expect_values(ctx, tg_slice(ctx, s0, 1, 0, 1, 1),
                  (const double[]){exp(1) / z, exp(2) / z, exp(3) / z}, 3, 1e-15);
    /* large inputs must not overflow */
    tg_tensor *big = f64(ctx, 1, SH(3), (const double[]){1000, 1000, 1000});
    tg_tensor *sb = tg_softmax(ctx, big, 0);
    tg_tensor *lb = tg_log_softmax(ctx, big, 0);
    expect_values(ctx, sb, (const double[]){1.0 / 3, 1.0 / 3, 1.0 / 3}, 3, 1e-15);
    expect_values(ctx, lb, (const double[]){-log(3.0), -log(3.0), -log(3.0)}, 3, 1e-12);
}

/* ------------------------------------------------------------------------ */
/* Conventions at kinks and edges (PyTorch's)                               */
/* ------------------------------------------------------------------------ */

/* Gradient of sum(f(x) * w) for a 1-D x. */
static void check_grad_1d(tg_ctx *ctx, tg_tensor *(*f)(tg_ctx *, tg_tensor *), const double *xv,
                          int n, const double *want_grad, const char *what) {
    tg_tensor *x = f64_rg(ctx, 1, SH(n), xv);
    tg_tensor *y = f(ctx, x);
    CHECK_T(ctx, y);
    tg_tensor *l = sum_all(ctx, y);
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    CHECK_T(ctx, x->grad);
    double *g = read_all(ctx, x->grad);
    for (int i = 0; i < n; i++)
        if (!(g[i] == want_grad[i])) {
            double gi = g[i];
            free(g);
            fail_msg("%s: gradient at x = %g is %g, expected %g", what, xv[i], gi, want_grad[i]);
        }
    free(g);
}

static tg_tensor *k_relu(tg_ctx *ctx, tg_tensor *x) { return tg_relu(ctx, x); }
static tg_tensor *k_abs(tg_ctx *ctx, tg_tensor *x) { return tg_abs(ctx, x); }
static tg_tensor *k_clamp(tg_ctx *ctx, tg_tensor *x) { return tg_clamp(ctx, x, -1.0, 1.0); }
static tg_tensor *k_pow0(tg_ctx *ctx, tg_tensor *x) { return tg_pow_scalar(ctx, x, 0.0); }
static tg_tensor *k_pow1(tg_ctx *ctx, tg_tensor *x) { return tg_pow_scalar(ctx, x, 1.0); }
static tg_tensor *k_pow2(tg_ctx *ctx, tg_tensor *x) { return tg_pow_scalar(ctx, x, 2.0); }
static tg_tensor *k_pow3(tg_ctx *ctx, tg_tensor *x) { return tg_pow_scalar(ctx, x, 3.0); }
static tg_tensor *k_sign_x(tg_ctx *ctx, tg_tensor *x) { return tg_mul(ctx, tg_sign(ctx, x), x); }

static void test_kink_conventions(void **state) {
    tg_ctx *ctx = *state;
    /* relu'(0) = 0: the helper is g * (x > 0) */
    check_grad_1d(ctx, k_relu, (const double[]){-1, 0, 2}, 3, (const double[]){0, 0, 1}, "relu");
    /* clamp passes the gradient on the closed interval [lo, hi] */
    check_grad_1d(ctx, k_clamp, (const double[]){-2, -1, 0, 1, 2}, 5,
                  (const double[]){0, 1, 1, 1, 0}, "clamp");
    /* abs'(0) = sign(0) = 0 */
    check_grad_1d(ctx, k_abs, (const double[]){-1, 0, 2}, 3, (const double[]){-1, 0, 1}, "abs");
    check_grad_1d(ctx, k_pow1, (const double[]){0, 2, -3}, 3, (const double[]){1, 1, 1},
                  "pow_scalar(x, 1)");
    check_grad_1d(ctx, k_pow2, (const double[]){0, 2, -3}, 3, (const double[]){0, 4, -6},
                  "pow_scalar(x, 2)");
    check_grad_1d(ctx, k_pow3, (const double[]){0, 2, -1}, 3, (const double[]){0, 12, 3},
                  "pow_scalar(x, 3)");
    /* sign is a constant downstream: d(sign(x) * x)/dx = sign(x) */
    check_grad_1d(ctx, k_sign_x, (const double[]){-2, 0, 3}, 3, (const double[]){-1, 0, 1},
                  "sign(x) * x");
    /* x^0 is constant: its gradient is 0 everywhere, 0 included (not
     * 0 * 0^-1 = NaN) */
    check_grad_1d(ctx, k_pow0, (const double[]){0, 2, -3}, 3, (const double[]){0, 0, 0},
                  "pow_scalar(x, 0)");
}

/* A masked softmax (-inf logits) gives exact zeros and finite gradients. */
static void test_softmax_with_masked_logits(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = f64_rg(ctx, 1, SH(3), (const double[]){-INFINITY, 0, 0});
    tg_tensor *w = f64(ctx, 1, SH(3), (const double[]){1, 2, 3});
    tg_tensor *y = tg_softmax(ctx, x, 0);
    CHECK_T(ctx, y);
    expect_values(ctx, y, (const double[]){0, 0.5, 0.5}, 3, 0);
    tg_tensor *l = sum_all(ctx, tg_mul(ctx, y, w));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    /* y * (w - sum(w * y)) = y * (w - 2.5) */
    expect_values(ctx, x->grad, (const double[]){0, -0.25, 0.25}, 3, 1e-15);

    tg_tensor *x2 = f64_rg(ctx, 1, SH(3), (const double[]){-INFINITY, 0, 0});
    tg_tensor *ls = tg_log_softmax(ctx, x2, 0);
    CHECK_T(ctx, ls);
    double lv[3];
    CHECK_OK(ctx, tg_to_host(ctx, ls, lv, sizeof lv));
    assert_true(isinf(lv[0]) && lv[0] < 0);
    assert_true(fabs(lv[1] + log(2.0)) < 1e-15);
    /* only the finite entries are used, as a masked NLL would */
    tg_tensor *l2 = sum_all(ctx, tg_slice(ctx, ls, 0, 1, 3, 1));
    CHECK_T(ctx, l2);
    CHECK_OK(ctx, tg_backward(ctx, l2, NULL, 0));
    /* g - exp(y) * sum(g) with g = (0, 1, 1) */
    expect_values(ctx, x2->grad, (const double[]){0, 0, 0}, 3, 1e-15);
}

/* Tensors with a zero-sized dim are legal, as in PyTorch; a fresh one is
 * contiguous like any other. */
static void test_empty_tensor_creation(void **state) {
    tg_ctx *ctx = *state;
    const int64_t shapes[4][2] = {{0, 4}, {3, 0}, {0, 0}, {2, 0}};
    for (int k = 0; k < 4; k++) {
        tg_tensor *z = tg_zeros(ctx, TG_F64, 2, shapes[k]);
        if (!z)
            fail_msg("tg_zeros of (%lld, %lld) failed: [%s] %s", (long long)shapes[k][0],
                     (long long)shapes[k][1], tg_status_str(tg_ctx_status(ctx)), errmsg(ctx));
        assert_int_equal(tg_numel(z), 0);
        assert_true(tg_is_contiguous(z));
        tg_tensor *f = tg_full(ctx, TG_F32, 2, shapes[k], 1.0);
        CHECK_T(ctx, f);
    }
}

/* Ops on empty tensors: an empty reduction is 0, a matmul with an empty
 * inner dim is all zeros, and gradients have the empty shape. Last in the
 * file: a crash here (division by an empty extent) must not hide the rest
 * under the sanitizers. */
static void test_empty_tensor_ops(void **state) {
    tg_ctx *ctx = *state;
    const double dummy = 0;
    tg_tensor *e30 = f64(ctx, 2, SH(3, 0), &dummy);
    tg_tensor *e04 = f64(ctx, 2, SH(0, 4), &dummy);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, e30, true));
    tg_tensor *m = tg_matmul(ctx, e30, e04);
    CHECK_T(ctx, m);
    expect_shape(m, 2, SH(3, 4));
    double zeros[12] = {0};
    expect_values(ctx, m, zeros, 12, 0);
    tg_tensor *x = tg_exp(ctx, e30);
    CHECK_T(ctx, x);
    expect_shape(x, 2, SH(3, 0));
    tg_tensor *s = tg_sum(ctx, e30, 1, AX(1), false);
    CHECK_T(ctx, s);
    expect_shape(s, 1, SH(3));
    expect_values(ctx, s, zeros, 3, 0);
    tg_tensor *l = tg_add(ctx, sum_all(ctx, m), sum_all(ctx, tg_mul(ctx, s, s)));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    CHECK_T(ctx, e30->grad);
    expect_shape(e30->grad, 2, SH(3, 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_ctx, teardown_ctx)
        T(test_seed000_worked_example),
        T(test_seed000_worked_example_f32),
        T(test_seed001_higher_order),
        T(test_seed001_grad_of_grad),
        T(test_seed000_broadcast_elementwise),
        T(test_seed000_broadcast_matmul),
        T(test_broadcast_gradient_reduces),
        T(test_seed002_max_ties),
        T(test_seed002_min_ties),
        T(test_seed002_permute_gradient),
        T(test_seed002_reshape_gradient),
        T(test_seed002_slice_gradient),
        T(test_seed000_rearrange),
        T(test_seed000_chunk),
        T(test_stack),
        T(test_seed000_softmax_dim),
        T(test_kink_conventions),
        T(test_softmax_with_masked_logits),
        T(test_empty_tensor_creation),
        T(test_empty_tensor_ops),
#undef T
    };
    return cmocka_run_group_tests_name("autograd", tests, NULL, NULL);
}
