/*
 * Autograd semantics, part 2 (PyTorch's): leaves and requires_grad, gradient
 * accumulation and zeroing, freezing, freed graphs, in-place detection, the
 * grad hook and step-memory reuse.
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
/* Seed 004: leaves and requires_grad                                       */
/* ------------------------------------------------------------------------ */

static void test_seed004_requires_grad_propagates(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = arange(ctx, 1, SH(3), 1);
    tg_tensor *b = arange(ctx, 1, SH(3), 4);
    /* a fresh tensor does not require grad and is a leaf */
    assert_false(a->requires_grad);
    assert_true(tg_is_leaf(a));
    CHECK_OK(ctx, tg_set_requires_grad(ctx, a, true));
    assert_true(a->requires_grad);
    assert_true(tg_is_leaf(a));
    assert_null(a->grad);

    tg_tensor *c = tg_mul(ctx, a, b);
    CHECK_T(ctx, c);
    assert_true(c->requires_grad);
    assert_false(tg_is_leaf(c));
    tg_tensor *d = tg_mul(ctx, b, b);
    CHECK_T(ctx, d);
    assert_false(d->requires_grad);
    /* an op on inputs that need no grad makes a leaf, as in PyTorch */
    assert_true(tg_is_leaf(d));
    tg_tensor *e = tg_exp(ctx, d);
    CHECK_T(ctx, e);
    assert_false(e->requires_grad);
    tg_tensor *f = tg_add(ctx, d, c);
    CHECK_T(ctx, f);
    assert_true(f->requires_grad);
    assert_false(tg_is_leaf(f));
    /* views of a tensor that requires grad require grad */
    tg_tensor *v = tg_slice(ctx, a, 0, 1, 3, 1);
    CHECK_T(ctx, v);
    assert_true(v->requires_grad);
    assert_false(tg_is_leaf(v));

    /* parameters require grad from the start and are leaves */
    tg_tensor *p = tg_param(ctx, TG_F32, 2, SH(2, 2), "w");
    CHECK_T(ctx, p);
    assert_true(p->requires_grad);
    assert_true(tg_is_leaf(p));
    tg_tensor *q = tg_persistent(ctx, TG_F32, 1, SH(2), "m");
    CHECK_T(ctx, q);
    assert_false(q->requires_grad);

    /* a tensor made without grad can be turned into a leaf that needs it */
    CHECK_OK(ctx, tg_set_requires_grad(ctx, d, true));
    tg_tensor *l = sum_all(ctx, tg_mul(ctx, d, d));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    expect_values(ctx, d->grad, (const double[]){32, 50, 72}, 3, 0);
}

/* ->grad accumulates across backward calls until zeroed. */
static void test_seed004_grad_accumulates(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64_rg(ctx, 1, SH(3), (const double[]){1, 2, 3});
    tg_tensor *l = sum_all(ctx, tg_mul(ctx, a, a));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, TG_RETAIN_GRAPH));
    expect_values(ctx, a->grad, (const double[]){2, 4, 6}, 3, 0);
    tg_tensor *g = a->grad;
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    expect_values(ctx, a->grad, (const double[]){4, 8, 12}, 3, 0);
    CHECK_OK(ctx, tg_zero_grad(ctx, a));
    /* zeroing keeps the buffer */
    assert_ptr_equal(a->grad, g);
    expect_values(ctx, a->grad, (const double[]){0, 0, 0}, 3, 0);
    /* a new graph accumulates into the zeroed gradient */
    tg_tensor *l2 = sum_all(ctx, tg_mul_scalar(ctx, a, 3));
    CHECK_T(ctx, l2);
    CHECK_OK(ctx, tg_backward(ctx, l2, NULL, 0));
    expect_values(ctx, a->grad, (const double[]){3, 3, 3}, 3, 0);
    tg_tensor *l3 = sum_all(ctx, a);
    CHECK_T(ctx, l3);
    CHECK_OK(ctx, tg_backward(ctx, l3, NULL, 0));
    expect_values(ctx, a->grad, (const double[]){4, 4, 4}, 3, 0);
}

static void test_seed004_nonleaf_grad(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64_rg(ctx, 1, SH(3), (const double[]){0.1, 0.2, 0.3});
    tg_tensor *c = tg_mul_scalar(ctx, a, 2);
    tg_tensor *d = tg_exp(ctx, c);
    tg_tensor *l = sum_all(ctx, d);
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_retain_grad(ctx, c));
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    /* d was not retained: no gradient kept */
    assert_null(d->grad);
    assert_null(l->grad);
    CHECK_T(ctx, c->grad);
    expect_values(ctx, c->grad, (const double[]){exp(0.2), exp(0.4), exp(0.6)}, 3, 1e-15);
    expect_values(ctx, a->grad, (const double[]){2 * exp(0.2), 2 * exp(0.4), 2 * exp(0.6)}, 3,
                  1e-14);
}

static void test_seed004_second_backward_needs_retain(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64_rg(ctx, 1, SH(2), (const double[]){0.5, -0.5});
    tg_tensor *l = sum_all(ctx, tg_exp(ctx, a));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    tg_status st = tg_backward(ctx, l, NULL, 0);
    assert_int_equal(st, TG_ERR_AUTOGRAD);
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_AUTOGRAD);
    assert_true(strlen(errmsg(ctx)) > 0);
    /* the failed call added nothing */
    expect_values(ctx, a->grad, (const double[]){exp(0.5), exp(-0.5)}, 2, 1e-15);
    tg_ctx_clear_error(ctx);
    /* a fresh forward pass works again */
    tg_tensor *l2 = sum_all(ctx, tg_exp(ctx, a));
    CHECK_T(ctx, l2);
    CHECK_OK(ctx, tg_backward(ctx, l2, NULL, 0));
    expect_values(ctx, a->grad, (const double[]){2 * exp(0.5), 2 * exp(-0.5)}, 2, 1e-15);
}

static void test_seed004_no_grad_mode(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64_rg(ctx, 1, SH(3), (const double[]){1, 2, 3});
    assert_true(tg_grad_enabled(ctx));
    int64_t before = tg_tape_size(ctx);
    tg_tensor *r = tg_mul(ctx, a, a);
    CHECK_T(ctx, r);
    assert_true(tg_tape_size(ctx) > before);

    before = tg_tape_size(ctx);
    assert_true(tg_set_grad_enabled(ctx, false));
    assert_false(tg_grad_enabled(ctx));
    tg_tensor *y = tg_exp(ctx, tg_mul(ctx, a, a));
    CHECK_T(ctx, y);
    assert_false(y->requires_grad);
    assert_true(tg_is_leaf(y));
    assert_int_equal(tg_tape_size(ctx), before);
    /* setting it again returns the previous value */
    assert_false(tg_set_grad_enabled(ctx, false));
    assert_false(tg_set_grad_enabled(ctx, true));
    assert_true(tg_grad_enabled(ctx));
    tg_tensor *z = tg_exp(ctx, a);
    CHECK_T(ctx, z);
    assert_true(z->requires_grad);
}

/* Freezing: a parameter with requires_grad cleared gets no gradient while
 * the others still get theirs (the seed's frozen backbone). */
static void test_seed004_freeze_parameter(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *w1 = tg_param(ctx, TG_F64, 1, SH(3), "w1");
    tg_tensor *w2 = tg_param(ctx, TG_F64, 1, SH(3), "w2");
    CHECK_T(ctx, w1);
    CHECK_T(ctx, w2);
    bool prev = tg_set_grad_enabled(ctx, false);
    CHECK_OK(ctx, tg_fill_(ctx, w1, 0.5));
    CHECK_OK(ctx, tg_fill_(ctx, w2, -1.0));
    tg_set_grad_enabled(ctx, prev);
    const double xv[3] = {1, 2, 3};

    CHECK_OK(ctx, tg_set_requires_grad(ctx, w1, false));
    tg_tensor *x = f64(ctx, 1, SH(3), xv);
    tg_tensor *l = sum_all(ctx, tg_add(ctx, tg_mul(ctx, w1, x), tg_mul(ctx, w2, x)));
    CHECK_T(ctx, l);
    assert_true(l->requires_grad);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    assert_null(w1->grad);
    expect_values(ctx, w2->grad, xv, 3, 0);
    tg_step_reset(ctx);

    /* unfrozen, it gets its gradient again */
    CHECK_OK(ctx, tg_set_requires_grad(ctx, w1, true));
    CHECK_OK(ctx, tg_zero_grad(ctx, w2));
    x = f64(ctx, 1, SH(3), xv);
    l = sum_all(ctx, tg_add(ctx, tg_mul(ctx, w1, x), tg_mul(ctx, w2, x)));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    expect_values(ctx, w1->grad, xv, 3, 0);
    expect_values(ctx, w2->grad, xv, 3, 0);

    /* freezing everything: the loss no longer requires grad */
    CHECK_OK(ctx, tg_set_requires_grad(ctx, w1, false));
    CHECK_OK(ctx, tg_set_requires_grad(ctx, w2, false));
    x = f64(ctx, 1, SH(3), xv);
    l = sum_all(ctx, tg_mul(ctx, w1, x));
    CHECK_T(ctx, l);
    assert_false(l->requires_grad);
}

static void test_seed004_set_requires_grad_nonleaf_fails(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64_rg(ctx, 1, SH(2), (const double[]){1, 2});
    tg_tensor *c = tg_mul(ctx, a, a);
    CHECK_T(ctx, c);
    tg_status st = tg_set_requires_grad(ctx, c, false);
    assert_int_not_equal(st, TG_OK);
    assert_int_equal(tg_ctx_status(ctx), st);
    assert_true(strlen(errmsg(ctx)) > 0);
    assert_true(c->requires_grad);
    tg_ctx_clear_error(ctx);
    /* gradients flow only through float dtypes */
    tg_tensor *i = tg_zeros(ctx, TG_I64, 1, SH(2));
    CHECK_T(ctx, i);
    assert_int_not_equal(tg_set_requires_grad(ctx, i, true), TG_OK);
    assert_false(i->requires_grad);
    assert_true(strlen(errmsg(ctx)) > 0);
    tg_ctx_clear_error(ctx);
}

/* A graph that a backward pass has freed may be refused, but never walked
 * silently: a gradient that quietly goes missing trains the wrong model.
 * PyTorch raises "Trying to backward through the graph a second time" when
 * a new graph reaches a freed node; a separate graph is fine there. */
static void test_freed_graph_is_never_silently_ignored(void **state) {
    tg_ctx *ctx = *state;
    const double av[2] = {1, 2};
    double want[2];

    /* a new graph built on an intermediate of a freed one */
    tg_tensor *a = f64_rg(ctx, 1, SH(2), av);
    tg_tensor *c = tg_exp(ctx, a);
    tg_tensor *l1 = sum_all(ctx, c);
    CHECK_T(ctx, l1);
    CHECK_OK(ctx, tg_backward(ctx, l1, NULL, 0));
    tg_tensor *l3 = sum_all(ctx, tg_mul_scalar(ctx, c, 2));
    CHECK_T(ctx, l3);
    tg_status st = tg_backward(ctx, l3, NULL, 0);
    if (st == TG_OK) {
        for (int i = 0; i < 2; i++)
            want[i] = 3 * exp(av[i]);
        expect_values(ctx, a->grad, want, 2, 1e-12);
    } else {
        assert_int_equal(st, TG_ERR_AUTOGRAD);
        assert_true(strlen(errmsg(ctx)) > 0);
        for (int i = 0; i < 2; i++)
            want[i] = exp(av[i]);
        expect_values(ctx, a->grad, want, 2, 1e-12);
        tg_ctx_clear_error(ctx);
    }
    tg_step_reset(ctx);

    /* two graphs built first, then each backpropagated without retain */
    a = f64_rg(ctx, 1, SH(2), av);
    l1 = sum_all(ctx, tg_exp(ctx, a));
    tg_tensor *l2 = sum_all(ctx, tg_mul(ctx, a, a));
    CHECK_T(ctx, l2);
    CHECK_OK(ctx, tg_backward(ctx, l1, NULL, 0));
    st = tg_backward(ctx, l2, NULL, 0);
    for (int i = 0; i < 2; i++)
        want[i] = exp(av[i]) + (st == TG_OK ? 2 * av[i] : 0);
    if (st != TG_OK) {
        assert_int_equal(st, TG_ERR_AUTOGRAD);
        assert_true(strlen(errmsg(ctx)) > 0);
        tg_ctx_clear_error(ctx);
    }
    expect_values(ctx, a->grad, want, 2, 1e-12);
}

/* Backward from a leaf root: its gradient is the seed. */
static void test_leaf_root(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64_rg(ctx, 1, SH(2), (const double[]){1, 2});
    CHECK_OK(ctx, tg_backward(ctx, a, f64(ctx, 1, SH(2), (const double[]){3, 4}), 0));
    expect_values(ctx, a->grad, (const double[]){3, 4}, 2, 0);
    tg_tensor *s = tg_scalar(ctx, TG_F64, 5);
    CHECK_T(ctx, s);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, s, true));
    CHECK_OK(ctx, tg_backward(ctx, s, NULL, 0));
    assert_true(item(ctx, s->grad) == 1.0);
}

/* tg_grad with respect to an intermediate, next to a leaf. */
static void test_grad_wrt_intermediate(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64_rg(ctx, 1, SH(2), (const double[]){1, 2});
    tg_tensor *b = tg_mul_scalar(ctx, a, 3);
    tg_tensor *l = sum_all(ctx, tg_mul(ctx, b, b));
    CHECK_T(ctx, l);
    tg_tensor *g[2] = {NULL, NULL};
    CHECK_OK(ctx, tg_grad(ctx, l, NULL, 2, TS(b, a), g, 0));
    expect_values(ctx, g[0], (const double[]){6, 12}, 2, 1e-12);
    expect_values(ctx, g[1], (const double[]){18, 36}, 2, 1e-12);
    assert_null(a->grad);
    assert_null(b->grad);
}

/* A retained non-leaf used twice holds the sum of both contributions. */
static void test_retained_grad_accumulates_uses(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *a = f64_rg(ctx, 1, SH(2), (const double[]){1, 2});
    tg_tensor *c = tg_mul_scalar(ctx, a, 2);
    CHECK_T(ctx, c);
    CHECK_OK(ctx, tg_retain_grad(ctx, c));
    tg_tensor *l = tg_add(ctx, sum_all(ctx, c), sum_all(ctx, tg_mul(ctx, c, c)));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    /* 1 + 2c */
    expect_values(ctx, c->grad, (const double[]){5, 9}, 2, 1e-12);
    expect_values(ctx, a->grad, (const double[]){10, 18}, 2, 1e-12);
}

/* ------------------------------------------------------------------------ */
/* Seed 001: in-place pitfalls                                              */
/* ------------------------------------------------------------------------ */

/* exp saves its output; changing it in place (allowed under no-grad) must
 * make backward refuse rather than use the changed value. */
static void test_inplace_saved_output_detected(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = f64_rg(ctx, 1, SH(3), (const double[]){0.1, 0.2, 0.3});
    tg_tensor *y = tg_exp(ctx, x);
    tg_tensor *l = sum_all(ctx, y);
    CHECK_T(ctx, l);
    uint32_t v0 = y->storage->version;
    bool prev = tg_set_grad_enabled(ctx, false);
    CHECK_OK(ctx, tg_mul_scalar_(ctx, y, 2.0));
    tg_set_grad_enabled(ctx, prev);
    assert_true(y->storage->version != v0);
    tg_status st = tg_backward(ctx, l, NULL, 0);
    assert_int_equal(st, TG_ERR_INPLACE);
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_INPLACE);
    if (!contains(errmsg(ctx), "modified in place"))
        fail_msg("message should say 'modified in place': '%s'", errmsg(ctx));
    tg_ctx_clear_error(ctx);
}

/* A saved input that does not require grad (w in x*w) is changed with an
 * in-place op that grad mode allows: backward must notice. */
static void test_inplace_saved_input_detected(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = f64_rg(ctx, 1, SH(3), (const double[]){1, 2, 3});
    tg_tensor *w = f64(ctx, 1, SH(3), (const double[]){4, 5, 6});
    tg_tensor *l = sum_all(ctx, tg_mul(ctx, x, w));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_fill_(ctx, w, 3.0));
    tg_status st = tg_backward(ctx, l, NULL, 0);
    assert_int_equal(st, TG_ERR_INPLACE);
    if (!contains(errmsg(ctx), "modified in place"))
        fail_msg("message should say 'modified in place': '%s'", errmsg(ctx));
    tg_ctx_clear_error(ctx);

    /* tg_bump_version counts as a write too */
    tg_tensor *w2 = f64(ctx, 1, SH(3), (const double[]){4, 5, 6});
    tg_tensor *l2 = sum_all(ctx, tg_mul(ctx, x, w2));
    CHECK_T(ctx, l2);
    tg_bump_version(w2);
    assert_int_equal(tg_backward(ctx, l2, NULL, 0), TG_ERR_INPLACE);
    tg_ctx_clear_error(ctx);

    /* without the write the same graph is fine */
    tg_tensor *w3 = f64(ctx, 1, SH(3), (const double[]){4, 5, 6});
    tg_tensor *l3 = sum_all(ctx, tg_mul(ctx, x, w3));
    CHECK_T(ctx, l3);
    CHECK_OK(ctx, tg_backward(ctx, l3, NULL, 0));
    expect_values(ctx, x->grad, (const double[]){4, 5, 6}, 3, 0);
}

/* Versions belong to the storage: writing to a view's base invalidates a
 * saved view, and writing through a view invalidates a saved base. */
static void test_inplace_through_views_detected(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = f64_rg(ctx, 1, SH(2), (const double[]){1, 2});
    tg_tensor *w = f64(ctx, 1, SH(4), (const double[]){1, 2, 3, 4});
    tg_tensor *v = tg_slice(ctx, w, 0, 0, 4, 2);
    tg_tensor *l = sum_all(ctx, tg_mul(ctx, x, v));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_fill_(ctx, w, 0.0));
    assert_int_equal(tg_backward(ctx, l, NULL, 0), TG_ERR_INPLACE);
    if (!contains(errmsg(ctx), "modified in place"))
        fail_msg("message should say 'modified in place': '%s'", errmsg(ctx));
    tg_ctx_clear_error(ctx);

    tg_tensor *w2 = f64(ctx, 1, SH(2), (const double[]){1, 2});
    tg_tensor *l2 = sum_all(ctx, tg_mul(ctx, x, w2));
    CHECK_T(ctx, l2);
    tg_tensor *view = tg_reshape(ctx, w2, 2, SH(1, 2));
    CHECK_T(ctx, view);
    CHECK_OK(ctx, tg_mul_scalar_(ctx, view, 3.0));
    assert_int_equal(tg_backward(ctx, l2, NULL, 0), TG_ERR_INPLACE);
    tg_ctx_clear_error(ctx);
}

/* Leaves that require grad may not be modified in place while grad mode is
 * on (the seed's a.random_() error); under no-grad, as an optimizer step
 * does, they may. */
static void test_inplace_on_leaf_refused(void **state) {
    tg_ctx *ctx = *state;
    const double xv[3] = {1, 2, 3};
    tg_tensor *x = f64_rg(ctx, 1, SH(3), xv);
    tg_tensor *src = f64(ctx, 1, SH(3), (const double[]){7, 8, 9});
    uint32_t v0 = x->storage->version;

    assert_int_equal(tg_fill_(ctx, x, 1.0), TG_ERR_INPLACE);
    assert_true(strlen(errmsg(ctx)) > 0);
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_mul_scalar_(ctx, x, 2.0), TG_ERR_INPLACE);
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_axpy_(ctx, x, 1.0, src), TG_ERR_INPLACE);
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_copy_(ctx, x, src), TG_ERR_INPLACE);
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_copy_from_host(ctx, x, (const double[]){0, 0, 0}, 3 * sizeof(double)),
                     TG_ERR_INPLACE);
    tg_ctx_clear_error(ctx);
    expect_values(ctx, x, xv, 3, 0);
    assert_int_equal(x->storage->version, v0);

    /* a non-leaf that requires grad is refused too */
    tg_tensor *y = tg_exp(ctx, x);
    CHECK_T(ctx, y);
    assert_int_equal(tg_mul_scalar_(ctx, y, 2.0), TG_ERR_INPLACE);
    tg_ctx_clear_error(ctx);

    /* allowed under no-grad: an SGD step x -= 0.5 * src */
    bool prev = tg_set_grad_enabled(ctx, false);
    CHECK_OK(ctx, tg_axpy_(ctx, x, -0.5, src));
    tg_set_grad_enabled(ctx, prev);
    expect_values(ctx, x, (const double[]){-2.5, -2, -1.5}, 3, 0);
    assert_true(x->storage->version != v0);
    assert_true(x->requires_grad);
    assert_true(tg_is_leaf(x));
}

/* ------------------------------------------------------------------------ */
/* The grad hook                                                            */
/* ------------------------------------------------------------------------ */

typedef struct hook_log {
    int n;
    tg_tensor *leaf[8];
    double grad[8][4];
    int count[3];
    tg_tensor *watch[3];
} hook_log;

static void record_hook(tg_ctx *ctx, tg_tensor *leaf, void *user) {
    hook_log *h = user;
    for (int i = 0; i < 3; i++)
        if (h->watch[i] == leaf)
            h->count[i]++;
    if (h->n < 8 && leaf->grad && tg_numel(leaf->grad) <= 4) {
        h->leaf[h->n] = leaf;
        if (tg_to_host(ctx, leaf->grad, h->grad[h->n],
                       (size_t)tg_numel(leaf->grad) * sizeof(double)) != TG_OK)
            h->grad[h->n][0] = NAN;
    }
    h->n++;
}

static void expect_hook_grad(const hook_log *h, const tg_tensor *leaf, int occurrence,
                             const double *want, int n) {
    int seen = 0;
    for (int k = 0; k < h->n && k < 8; k++) {
        if (h->leaf[k] != leaf)
            continue;
        if (seen++ != occurrence)
            continue;
        for (int i = 0; i < n; i++)
            if (fabs(h->grad[k][i] - want[i]) > 1e-12)
                fail_msg("hook call %d saw grad[%d] = %g, the final value is %g", k, i,
                         h->grad[k][i], want[i]);
        return;
    }
    fail_msg("hook was not called for the leaf (occurrence %d)", occurrence);
}

static void test_grad_hook(void **state) {
    tg_ctx *ctx = *state;
    const double av[3] = {0.1, 0.2, 0.3}, bv[3] = {1, -2, 3};
    tg_tensor *a = f64_rg(ctx, 1, SH(3), av);
    tg_tensor *b = f64_rg(ctx, 1, SH(3), bv);
    tg_tensor *c = f64_rg(ctx, 1, SH(3), bv);
    hook_log h;
    memset(&h, 0, sizeof h);
    h.watch[0] = a;
    h.watch[1] = b;
    h.watch[2] = c;
    tg_set_grad_hook(ctx, record_hook, &h);

    /* a is used twice, far apart in the tape: once early in a*b, once at the
     * very end in exp(a); its hook may fire only after both contributed */
    tg_tensor *ab = sum_all(ctx, tg_mul(ctx, a, b));
    tg_tensor *t = tg_tanh(ctx, tg_mul_scalar(ctx, ab, 0.5));
    tg_tensor *l = tg_add(ctx, t, sum_all(ctx, tg_exp(ctx, a)));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, TG_RETAIN_GRAPH));
    assert_int_equal(h.count[0], 1);
    assert_int_equal(h.count[1], 1);
    /* c is not in the graph: no call */
    assert_int_equal(h.count[2], 0);
    double abv = av[0] * bv[0] + av[1] * bv[1] + av[2] * bv[2];
    double dt = 0.5 * (1 - tanh(0.5 * abv) * tanh(0.5 * abv));
    double ga[3], gb[3];
    for (int i = 0; i < 3; i++) {
        ga[i] = dt * bv[i] + exp(av[i]);
        gb[i] = dt * av[i];
    }
    expect_values(ctx, a->grad, ga, 3, 1e-14);
    expect_hook_grad(&h, a, 0, ga, 3);
    expect_hook_grad(&h, b, 0, gb, 3);

    /* a second backward: once more per leaf, seeing the accumulated value */
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    assert_int_equal(h.count[0], 2);
    assert_int_equal(h.count[1], 2);
    double ga2[3], gb2[3];
    for (int i = 0; i < 3; i++) {
        ga2[i] = 2 * ga[i];
        gb2[i] = 2 * gb[i];
    }
    expect_hook_grad(&h, a, 1, ga2, 3);
    expect_hook_grad(&h, b, 1, gb2, 3);

    /* removing the hook stops the calls */
    tg_set_grad_hook(ctx, NULL, NULL);
    tg_tensor *l2 = sum_all(ctx, a);
    CHECK_T(ctx, l2);
    CHECK_OK(ctx, tg_backward(ctx, l2, NULL, 0));
    assert_int_equal(h.count[0], 2);
}

/* A hook that rewrites the gradient in place, as a data-parallel all-reduce
 * does (average across ranks: here, halve it). Because the hook runs only
 * once the gradient is final, nothing is added after it and the result is
 * exactly half the true gradient; a leaf used by both operands of one op
 * and a persistent parameter count once each. */
typedef struct scale_hook {
    int calls;
    tg_status st;
} scale_hook;

static void halve_hook(tg_ctx *ctx, tg_tensor *leaf, void *user) {
    scale_hook *h = user;
    h->calls++;
    tg_status st = tg_mul_scalar_(ctx, leaf->grad, 0.5);
    if (st != TG_OK)
        h->st = st;
}

static void test_grad_hook_rewrites_final_gradient(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *w = tg_param(ctx, TG_F64, 1, SH(3), "w");
    CHECK_T(ctx, w);
    bool prev = tg_set_grad_enabled(ctx, false);
    CHECK_OK(ctx, tg_copy_from_host(ctx, w, (const double[]){0.5, -1, 2}, 3 * sizeof(double)));
    tg_set_grad_enabled(ctx, prev);
    tg_tensor *a = f64_rg(ctx, 1, SH(3), (const double[]){1, 2, 3});
    scale_hook h = {0, TG_OK};
    tg_set_grad_hook(ctx, halve_hook, &h);
    /* a*a (both operands), then w at the start and again at the end */
    tg_tensor *t = tg_mul(ctx, tg_mul(ctx, a, a), w);
    tg_tensor *l = tg_add(ctx, sum_all(ctx, t), sum_all(ctx, tg_mul_scalar(ctx, w, 3)));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    tg_set_grad_hook(ctx, NULL, NULL);
    assert_int_equal(h.st, TG_OK);
    assert_int_equal(h.calls, 2);
    /* d/da = 2 a w, d/dw = a^2 + 3; halved */
    expect_values(ctx, a->grad, (const double[]){0.5, -2, 6}, 3, 1e-15);
    expect_values(ctx, w->grad, (const double[]){2, 3.5, 6}, 3, 1e-15);
}

/* ------------------------------------------------------------------------ */
/* Step memory                                                              */
/* ------------------------------------------------------------------------ */

static void test_step_reset_releases_memory(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *x = randn_like_shape(ctx, 2, SH(16, 16), 7, NULL);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, x, true));
    tg_tensor *l = sum_all(ctx, tg_tanh(ctx, tg_matmul(ctx, x, x)));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    size_t used = 0, reserved = 0, high = 0;
    tg_arena_stats(ctx, &used, &reserved, &high);
    assert_true(used > 0);
    assert_true(reserved >= used);
    assert_true(high >= used);
    assert_true(tg_tape_size(ctx) >= 0);
    size_t used_before = used;
    tg_step_reset(ctx);
    tg_arena_stats(ctx, &used, &reserved, &high);
    assert_int_equal(used, 0);
    /* the arena keeps its memory and its high-water mark */
    assert_true(reserved > 0);
    assert_true(high >= used_before);
    assert_int_equal(tg_tape_size(ctx), 0);
}

/* A training loop allocates nothing once it reaches its steady state: the
 * arena's chunks and the tape are reused after tg_step_reset. */
static void test_steady_state_does_not_allocate(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *w = tg_param(ctx, TG_F64, 2, SH(8, 4), "w");
    tg_tensor *bias = tg_param(ctx, TG_F64, 1, SH(4), "b");
    CHECK_T(ctx, w);
    CHECK_T(ctx, bias);
    double wv[32];
    fill_random(wv, 32, 5);
    bool prev = tg_set_grad_enabled(ctx, false);
    CHECK_OK(ctx, tg_copy_from_host(ctx, w, wv, sizeof wv));
    tg_set_grad_enabled(ctx, prev);

    double xv[16 * 8];
    fill_random(xv, 16 * 8, 6);
    uint64_t after2 = 0;
    size_t high2 = 0;
    double first_loss = 0, last_loss = 0;
    for (int step = 0; step < 6; step++) {
        tg_tensor *x = f64(ctx, 2, SH(16, 8), xv);
        tg_tensor *h = tg_tanh(ctx, tg_add(ctx, tg_matmul(ctx, x, w), bias));
        tg_tensor *l = tg_mean(ctx, tg_mul(ctx, h, h), 0, NULL, false);
        CHECK_T(ctx, l);
        CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
        double lv = item(ctx, l);
        if (step == 0)
            first_loss = lv;
        last_loss = lv;
        prev = tg_set_grad_enabled(ctx, false);
        CHECK_OK(ctx, tg_axpy_(ctx, w, -0.5, w->grad));
        CHECK_OK(ctx, tg_axpy_(ctx, bias, -0.5, bias->grad));
        tg_set_grad_enabled(ctx, prev);
        CHECK_OK(ctx, tg_zero_grad(ctx, w));
        CHECK_OK(ctx, tg_zero_grad(ctx, bias));
        tg_step_reset(ctx);
        size_t used, reserved, high;
        tg_arena_stats(ctx, &used, &reserved, &high);
        assert_int_equal(used, 0);
        if (step == 1) {
            after2 = tg_ctx_alloc_count(ctx);
            high2 = high;
        } else if (step > 1) {
            if (tg_ctx_alloc_count(ctx) != after2)
                fail_msg("step %d: alloc count %llu, was %llu after the second step", step,
                         (unsigned long long)tg_ctx_alloc_count(ctx), (unsigned long long)after2);
            assert_int_equal(high, high2);
        }
        /* persistent gradients survive the reset */
        assert_non_null(w->grad);
    }
    /* gradient descent on mean(h^2) lowers it */
    assert_true(last_loss < first_loss);
}

/* A persistent leaf's gradient made under create_graph lives in the step
 * arena and is dropped by tg_step_reset; a plain one survives with its
 * value. */
static void test_step_reset_and_persistent_grads(void **state) {
    tg_ctx *ctx = *state;
    tg_tensor *w = tg_param(ctx, TG_F64, 1, SH(2), "w");
    CHECK_T(ctx, w);
    bool prev = tg_set_grad_enabled(ctx, false);
    CHECK_OK(ctx, tg_fill_(ctx, w, 3.0));
    tg_set_grad_enabled(ctx, prev);

    tg_tensor *l = sum_all(ctx, tg_mul(ctx, w, w));
    CHECK_T(ctx, l);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    tg_step_reset(ctx);
    CHECK_T(ctx, w->grad);
    expect_values(ctx, w->grad, (const double[]){6, 6}, 2, 0);
    expect_values(ctx, w, (const double[]){3, 3}, 2, 0);

    /* a parameter whose first gradient is made under create_graph */
    tg_tensor *v = tg_param(ctx, TG_F64, 1, SH(2), "v");
    CHECK_T(ctx, v);
    tg_tensor *l2 = sum_all(ctx, tg_mul(ctx, v, v));
    CHECK_T(ctx, l2);
    CHECK_OK(ctx, tg_backward(ctx, l2, NULL, TG_CREATE_GRAPH));
    CHECK_T(ctx, v->grad);
    expect_values(ctx, v->grad, (const double[]){0, 0}, 2, 0);
    tg_step_reset(ctx);
    assert_null(v->grad);
    /* the plain one is untouched */
    expect_values(ctx, w->grad, (const double[]){6, 6}, 2, 0);
}

/* Backward adds a second contribution into a gradient it made itself, in
 * place; a gradient that is also another tensor's (a pass-through of add,
 * here s's retained gradient) is never written into, whichever of the two
 * contributions arrives first. */
static void accumulate_case(tg_ctx *ctx, int order) {
    {
        tg_tensor *a = f64_rg(ctx, 1, SH(2), (const double[]){1, 2});
        tg_tensor *w = f64(ctx, 1, SH(2), (const double[]){3, 5});
        tg_tensor *c = tg_mul_scalar(ctx, a, 2);
        CHECK_T(ctx, c);
        CHECK_OK(ctx, tg_retain_grad(ctx, c));
        tg_tensor *sq = NULL, *s = NULL;
        if (order == 0)
            sq = tg_mul(ctx, c, c);
        s = tg_add(ctx, c, a);
        CHECK_T(ctx, s);
        CHECK_OK(ctx, tg_retain_grad(ctx, s));
        if (order == 1)
            sq = tg_mul(ctx, c, c);
        tg_tensor *l = tg_add(ctx, sum_all(ctx, tg_mul(ctx, s, w)), sum_all(ctx, sq));
        CHECK_T(ctx, l);
        CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
        /* s: w; c: w + 2c = (3 + 4, 5 + 8); a: 2 dc + ds = (17, 31) */
        expect_values(ctx, s->grad, (const double[]){3, 5}, 2, 0);
        expect_values(ctx, c->grad, (const double[]){7, 13}, 2, 0);
        expect_values(ctx, a->grad, (const double[]){17, 31}, 2, 0);
        tg_step_reset(ctx);
    }
}

static void test_accumulate_in_place_spares_shared_grads(void **state) {
    accumulate_case(*state, 0);
    accumulate_case(*state, 1);
}

/* Slices of one tensor hand their gradients to one input-sized gradient:
 * backward allocates it once, not once per slice and again per sum. */
static void test_slices_share_one_gradient(void **state) {
    tg_ctx *ctx = *state;
    enum { N = 4096 };
    tg_tensor *x = randn_like_shape(ctx, 2, SH(3, N), 3, NULL);
    CHECK_OK(ctx, tg_set_requires_grad(ctx, x, true));
    tg_tensor *y = tg_mul_scalar(ctx, x, 1.0);
    CHECK_T(ctx, y);
    CHECK_OK(ctx, tg_retain_grad(ctx, y));
    tg_tensor *l = NULL;
    for (int i = 0; i < 3; i++) {
        tg_tensor *part = sum_all(ctx, tg_mul_scalar(ctx, tg_slice(ctx, y, 0, i, i + 1, 1), i + 1));
        l = l ? tg_add(ctx, l, part) : part;
    }
    CHECK_T(ctx, l);
    size_t before = 0, after = 0, reserved = 0, high = 0;
    tg_arena_stats(ctx, &before, &reserved, &high);
    CHECK_OK(ctx, tg_backward(ctx, l, NULL, 0));
    tg_arena_stats(ctx, &after, &reserved, &high);
    double *g = read_all(ctx, y->grad);
    for (int64_t i = 0; i < 3 * N; i++)
        assert_true(g[i] == (double)(i / N + 1));
    free(g);
    /* y's gradient (3 N doubles), the slices' own (N each, from
     * mul_scalar), x's in flight and x's ->grad (3 N each): 12 N doubles and
     * some headers, where a zero-filled 3 N per slice and two 3 N sums would
     * be 12 N more. */
    size_t made = after - before, size = 3 * N * sizeof(double);
    if (made >= 4 * size + size / 2)
        fail_msg("backward took %zu bytes, expected under %zu", made, 4 * size + size / 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_ctx, teardown_ctx)
        T(test_seed004_requires_grad_propagates),
        T(test_seed004_grad_accumulates),
        T(test_seed004_nonleaf_grad),
        T(test_seed004_second_backward_needs_retain),
        T(test_seed004_no_grad_mode),
        T(test_seed004_freeze_parameter),
        T(test_seed004_set_requires_grad_nonleaf_fails),
        T(test_freed_graph_is_never_silently_ignored),
        T(test_leaf_root),
        T(test_grad_wrt_intermediate),
        T(test_retained_grad_accumulates_uses),
        T(test_accumulate_in_place_spares_shared_grads),
        T(test_slices_share_one_gradient),
        T(test_inplace_saved_output_detected),
        T(test_inplace_through_views_detected),
        T(test_inplace_saved_input_detected),
        T(test_inplace_on_leaf_refused),
        T(test_grad_hook),
        T(test_grad_hook_rewrites_final_gradient),
        T(test_step_reset_releases_memory),
        T(test_steady_state_does_not_allocate),
        T(test_step_reset_and_persistent_grads),
#undef T
    };
    return cmocka_run_group_tests_name("autograd_semantics", tests, NULL, NULL);
}
