/*
 * The context API's contracts: tg_ctx_new refuses unknown devices, tg_stack
 * reports its own shapes, persistent tensors keep copies of their names, and
 * the debug mode (TG_DEBUG_STEPS) catches a step tensor used after
 * tg_step_reset, naming the op and the step it came from.
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

#include "tapegrad/nn.h"
#include "tapegrad/optim.h"
#include "tapegrad/runtime.h"

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define TS(...) ((tg_tensor *const[]){__VA_ARGS__})

/* A context with the debug mode on or off (the variable is read at
 * tg_ctx_new; it overrides the build's default either way). */
static tg_ctx *new_ctx(bool debug)
{
    setenv("TG_DEBUG_STEPS", debug ? "1" : "0", 1);
    tg_ctx *ctx = NULL;
    if (tg_ctx_new(NULL, &ctx) != TG_OK)
        fail_msg("tg_ctx_new: %s", tg_last_init_error());
    return ctx;
}

static void expect_msg(tg_ctx *ctx, tg_status st, const char *want)
{
    if (tg_ctx_status(ctx) != st || !strstr(tg_ctx_error(ctx), want))
        fail_msg("expected %s with \"%s\", got %s: \"%s\"", tg_status_str(st), want,
                 tg_status_str(tg_ctx_status(ctx)), tg_ctx_error(ctx));
    tg_ctx_clear_error(ctx);
}

/* ---- tg_ctx_new ---- */

static void test_ctx_new_devices(void **state)
{
    (void)state;
    const int bad[] = {-1, 2, 7};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tg_ctx_config cfg = {.device = (tg_device)bad[i], .threads = 1};
        tg_ctx *ctx = (tg_ctx *)&cfg; /* must be overwritten with NULL */
        assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_ERR_INVALID);
        assert_null(ctx);
        char want[64];
        snprintf(want, sizeof want, "unknown device %d", bad[i]);
        if (!strstr(tg_last_init_error(), want))
            fail_msg("\"%s\" does not name the device (%s)", tg_last_init_error(), want);
    }
    tg_ctx_config cpu = {.device = TG_DEVICE_CPU, .threads = 1};
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(&cpu, &ctx), TG_OK);
    assert_non_null(ctx);
    assert_int_equal(tg_ctx_backend(ctx)->device, TG_DEVICE_CPU);
    tg_ctx_free(ctx);
}

/* ---- tg_stack ---- */

static void test_stack_message(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx(false);
    tg_tensor *a = tg_zeros(ctx, TG_F32, 2, SH(2, 3));
    tg_tensor *b = tg_zeros(ctx, TG_F32, 2, SH(3, 4));
    assert_null(tg_stack(ctx, 2, TS(a, b), 0));
    const char *m = tg_ctx_error(ctx);
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_SHAPE);
    if (strncmp(m, "stack: ", 7) != 0 || !strstr(m, "tensor 1 has shape (3, 4)") ||
        !strstr(m, "(2, 3)") || strstr(m, "concat") || strstr(m, "(1, "))
        fail_msg("stack's message names other ops or shapes: \"%s\"", m);
    tg_ctx_clear_error(ctx);
    tg_tensor *d = tg_zeros(ctx, TG_F64, 2, SH(2, 3));
    assert_null(tg_stack(ctx, 2, TS(a, d), 1));
    expect_msg(ctx, TG_ERR_DTYPE, "stack: ");
    /* Matching shapes still stack, on any axis. */
    tg_tensor *c = tg_full(ctx, TG_F32, 2, SH(2, 3), 1.0);
    tg_tensor *s = tg_stack(ctx, 2, TS(a, c), 2);
    assert_non_null(s);
    assert_int_equal(s->ndim, 3);
    assert_true(s->shape[0] == 2 && s->shape[1] == 3 && s->shape[2] == 2);
    double v = -1;
    assert_int_equal(tg_get(ctx, s, 1, &v), TG_OK);
    assert_true(v == 1.0);
    tg_ctx_free(ctx);
}

/* ---- names ---- */

static void test_param_names_copied(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx(false);
    char buf[32];
    tg_tensor *p[3];
    for (int i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, "layer%d.weight", i);
        p[i] = i < 2 ? tg_param(ctx, TG_F32, 2, SH(2, 2), buf)
                     : tg_persistent(ctx, TG_F32, 1, SH(2), buf);
        assert_non_null(p[i]);
    }
    strcpy(buf, "overwritten");
    assert_string_equal(p[0]->name, "layer0.weight");
    assert_string_equal(p[1]->name, "layer1.weight");
    assert_string_equal(p[2]->name, "layer2.weight");
    assert_ptr_not_equal(p[0]->name, buf);
    /* The optimizer's unique-name check sees the real names. */
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_ADAMW);
    tg_optim *opt = NULL;
    if (tg_optim_new(ctx, &cfg, 2, p, &opt) != TG_OK)
        fail_msg("optim_new: %s", tg_ctx_error(ctx));
    tg_optim_free(opt);
    assert_null(tg_param(ctx, TG_F32, 1, SH(2), NULL)->name);
    tg_ctx_free(ctx);
}

/* ---- use after tg_step_reset ---- */

static void test_use_after_reset_detected(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx(true);
    tg_tensor *w = tg_param(ctx, TG_F32, 2, SH(2, 3), "w");
    tg_tensor *x = tg_full(ctx, TG_F32, 2, SH(2, 3), 2.0); /* step 0 */
    tg_tensor *wt = tg_transpose(ctx, w, 0, 1);             /* a step-0 view of w */
    tg_tensor *xd = tg_full(ctx, TG_F64, 1, SH(2), 2.0);
    tg_tensor *xi = tg_full(ctx, TG_I64, 1, SH(2), 2.0);
    assert_non_null(x);
    assert_non_null(wt);
    assert_non_null(xd);
    assert_non_null(xi);
    assert_non_null(tg_add(ctx, x, w));
    bool prev = tg_set_grad_enabled(ctx, false);
    assert_int_equal(tg_fill_(ctx, w, 4.0), TG_OK);
    tg_set_grad_enabled(ctx, prev);
    /* Host memory on the CPU backend: what the step's data becomes. */
    const float *xp = x->storage->data;
    const double *xdp = xd->storage->data;
    const int64_t *xip = xi->storage->data;
    const float *wp = w->storage->data;
    tg_step_reset(ctx);
    /* The released data is poisoned (NaN, -1); the parameter's is intact. */
    assert_true(isnan(xp[0]) && isnan(xp[5]));
    assert_true(isnan(xdp[0]) && isnan(xdp[1]));
    assert_true(xip[0] == -1 && xip[1] == -1);
    assert_true(wp[0] == 4.0f && wp[5] == 4.0f);
    /* Step 1: every use of x or of the view is caught. */
    tg_tensor *y = tg_full(ctx, TG_F32, 2, SH(2, 3), 1.0);
    assert_null(tg_add(ctx, y, x));
    expect_msg(ctx, TG_ERR_INVALID,
               "add: operand 2: tensor from step 0 used after tg_step_reset (now step 1)");
    assert_null(tg_matmul(ctx, wt, y));
    expect_msg(ctx, TG_ERR_INVALID, "matmul: operand 1: tensor from step 0 used after");
    double v;
    assert_int_equal(tg_item(ctx, x, &v), TG_ERR_INVALID);
    expect_msg(ctx, TG_ERR_INVALID, "item: tensor from step 0");
    float host[6];
    assert_int_equal(tg_to_host(ctx, x, host, sizeof host), TG_ERR_INVALID);
    expect_msg(ctx, TG_ERR_INVALID, "to_host: tensor from step 0");
    assert_int_equal(tg_fill_(ctx, x, 0.0), TG_ERR_INVALID);
    expect_msg(ctx, TG_ERR_INVALID, "fill_: operand 1: tensor from step 0");
    /* Parameters, and tensors and views made in this step, are fine. */
    tg_tensor *z = tg_add(ctx, tg_transpose(ctx, tg_transpose(ctx, w, 0, 1), 0, 1), y);
    assert_non_null(z);
    assert_int_equal(tg_get(ctx, z, 5, &v), TG_OK);
    assert_true(v == 5.0);
    /* Two resets later it still names the step it came from. */
    tg_tensor *q = tg_full(ctx, TG_F32, 1, SH(4), 3.0); /* step 1 */
    tg_step_reset(ctx);
    tg_step_reset(ctx);
    assert_null(tg_neg(ctx, q));
    expect_msg(ctx, TG_ERR_INVALID, "neg: operand 1: tensor from step 1 used after "
                                    "tg_step_reset (now step 3)");
    tg_ctx_free(ctx);
}

/* A training loop that does everything right runs in debug mode without a
 * complaint, and the parameters learn (the checks touch no values). */
static void train(tg_ctx *ctx, double *loss_out)
{
    tg_rng rng = tg_rng_make(7, 0);
    tg_params ps = {0};
    tg_linear l;
    assert_int_equal(tg_linear_init(ctx, &l, &ps, "fc", 3, 2, true, &rng), TG_OK);
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD);
    tg_optim *opt = NULL;
    assert_int_equal(tg_optim_new(ctx, &cfg, ps.nparams, ps.params, &opt), TG_OK);
    double loss = 0;
    for (int step = 0; step < 20; step++) {
        tg_tensor *x = tg_full(ctx, TG_F32, 2, SH(4, 3), 0.5);
        tg_tensor *t = tg_zeros(ctx, TG_F32, 2, SH(4, 2));
        tg_tensor *y = tg_linear_forward(ctx, &l, x);
        tg_tensor *L = tg_mse_loss(ctx, y, t);
        if (!L || tg_item(ctx, L, &loss) != TG_OK || tg_backward(ctx, L, NULL, 0) != TG_OK ||
            tg_optim_step(ctx, opt, 0.1) != TG_OK || tg_optim_zero_grad(ctx, opt) != TG_OK)
            fail_msg("step %d: %s", step, tg_ctx_error(ctx));
        tg_step_reset(ctx);
    }
    tg_optim_free(opt);
    *loss_out = loss;
}

static void test_debug_mode_clean_loop(void **state)
{
    (void)state;
    double on, off;
    tg_ctx *ctx = new_ctx(true);
    train(ctx, &on);
    tg_ctx_free(ctx);
    ctx = new_ctx(false);
    train(ctx, &off);
    tg_ctx_free(ctx);
    assert_true(on == off);
    assert_true(on < 0.05);
}

/* Without the debug mode nothing is checked: the stale tensor's struct is
 * not poisoned, so the use goes through (it reads whatever the arena holds
 * now); the mode costs nothing there. */
static void test_default_mode_unchecked(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx(false);
    tg_tensor *x = tg_full(ctx, TG_F32, 1, SH(4), 2.0);
    tg_step_reset(ctx);
    tg_tensor *y = tg_full(ctx, TG_F32, 1, SH(4), 5.0);
    assert_non_null(tg_add(ctx, x, y));
    assert_int_equal(tg_ctx_status(ctx), TG_OK);
    tg_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_new_devices),
        cmocka_unit_test(test_stack_message),
        cmocka_unit_test(test_param_names_copied),
        cmocka_unit_test(test_use_after_reset_detected),
        cmocka_unit_test(test_debug_mode_clean_loop),
        cmocka_unit_test(test_default_mode_unchecked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
