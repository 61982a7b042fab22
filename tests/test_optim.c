/*
 * Optimizers, gradient clipping and learning-rate schedules.
 *
 * The references are PyTorch's: tests/fixtures/optim.txt (written by
 * tests/gen_optim_fixtures.py, which documents the format) holds trajectories
 * of torch.optim.SGD/Adam/AdamW run by torch in f64 and in f32 from the same
 * starting values and gradients, torch.nn.utils.clip_grad_norm_ results and
 * torch.optim.lr_scheduler values. The rest is checked against hand-computed
 * values: the first Adam step, skipped parameters, a long parameter that
 * takes the parallel path against a scalar re-implementation, bad configs,
 * resume from saved state, and that a step allocates nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/optim.h"

#define MAXP 8
#define MAXSTEPS 16
#define MAXSTATE 32
#define MAXCASES 32

#include "optim_fixtures.h"

/* ---- helpers ---- */

static tg_ctx *new_ctx(void)
{
    tg_ctx *ctx = NULL;
    tg_status s = tg_ctx_new(NULL, &ctx);
    if (s != TG_OK)
        fail_msg("tg_ctx_new: %s (%s)", tg_status_str(s), tg_last_init_error());
    /* Setting values of parameters is an in-place write, refused in grad mode. */
    tg_set_grad_enabled(ctx, false);
    return ctx;
}

#define CHECK_OK(ctx, call)                                                                    \
    do {                                                                                       \
        tg_status s_ = (call);                                                                 \
        if (s_ != TG_OK)                                                                       \
            fail_msg("%s: %s (%s)", #call, tg_status_str(s_), tg_ctx_error(ctx));              \
    } while (0)

/* Writes n doubles into a tensor of dtype f32 or f64. */
static void set_values(tg_ctx *ctx, tg_tensor *t, const double *v, int64_t n)
{
    assert_int_equal(tg_numel(t), n);
    if (t->dtype == TG_F64) {
        CHECK_OK(ctx, tg_copy_from_host(ctx, t, v, (size_t)n * sizeof(double)));
        return;
    }
    float *f = calloc((size_t)(n ? n : 1), sizeof *f);
    assert_non_null(f);
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)v[i];
    tg_status s = tg_copy_from_host(ctx, t, f, (size_t)n * sizeof(float));
    free(f);
    CHECK_OK(ctx, s);
}

static double value_at(tg_ctx *ctx, const tg_tensor *t, int64_t i)
{
    double v = 0.0;
    CHECK_OK(ctx, tg_get(ctx, t, i, &v));
    return v;
}

/* Every element of t against want, within atol + rtol * |want|. */
static void check_close(tg_ctx *ctx, const tg_tensor *t, const double *want, int64_t n,
                        double rtol, double atol, const char *what)
{
    assert_int_equal(tg_numel(t), n);
    for (int64_t i = 0; i < n; i++) {
        double got = value_at(ctx, t, i);
        if (!(fabs(got - want[i]) <= atol + rtol * fabs(want[i])))
            fail_msg("%s[%lld]: got %.17g, want %.17g (diff %.3g)", what, (long long)i, got,
                     want[i], got - want[i]);
    }
}

static tg_tensor *find_state(const tg_optim *opt, const char *name)
{
    tg_tensor *st[64];
    int n = tg_optim_state(opt, st, 64);
    for (int i = 0; i < n && i < 64; i++)
        if (!strcmp(st[i]->name, name))
            return st[i];
    return NULL;
}

/* ---- the fixture file itself ---- */

static void test_fixtures_load(void **state)
{
    (void)state;
    if (g_load_error[0])
        fail_msg("%s", g_load_error);
    assert_true(g_nopt >= 8);
    assert_true(g_nclip >= 2);
    assert_true(g_nsched >= 6);
}

/* ---- optimizers against torch ---- */

static void run_optim_case(const fx_optim *c, tg_dtype dt)
{
    int di = dt == TG_F64 ? 0 : 1;
    double rtol = di ? 2e-6 : 1e-12, atol = di ? 1e-6 : 1e-14;
    tg_ctx *ctx = new_ctx();
    tg_tensor *ps[MAXP], *gs[MAXP];
    for (int i = 0; i < c->np; i++) {
        const fx_vec *v = &c->init[i];
        ps[i] = tg_param(ctx, dt, v->ndim, v->shape, c->pname[i]);
        gs[i] = tg_persistent(ctx, dt, v->ndim, v->shape, "grad");
        assert_non_null(ps[i]);
        assert_non_null(gs[i]);
        set_values(ctx, ps[i], v->v, v->n);
    }
    tg_optim *opt = NULL;
    CHECK_OK(ctx, tg_optim_new(ctx, &c->cfg, c->np, ps, &opt));
    char what[512];
    for (int step = 0; step < c->nsteps; step++) {
        for (int i = 0; i < c->np; i++) {
            ps[i]->grad = c->grad[step][i].v ? gs[i] : NULL;
            if (c->grad[step][i].v)
                set_values(ctx, gs[i], c->grad[step][i].v, c->grad[step][i].n);
        }
        CHECK_OK(ctx, tg_optim_step(ctx, opt, c->lr[step]));
        for (int i = 0; i < c->np; i++) {
            const fx_vec *e = &c->expect[di][step][i];
            assert_non_null(e->v);
            snprintf(what, sizeof what, "%.63s %s step %d %.15s", c->id, tg_dtype_name(dt), step,
                     c->pname[i]);
            check_close(ctx, ps[i], e->v, e->n, rtol, atol, what);
        }
    }
    assert_int_equal(tg_optim_steps(opt), c->nsteps);
    /* torch's state after the last step, under torch's key names. */
    int nchecked = 0;
    for (int k = 0; k < c->nstate; k++) {
        const fx_state *s = &c->state[k];
        if (s->dt != di)
            continue;
        char name[96];
        snprintf(name, sizeof name, "optim.%s.%s", c->pname[s->idx], s->key);
        tg_tensor *t = find_state(opt, name);
        if (!t)
            fail_msg("%s: no state tensor %s", c->id, name);
        snprintf(what, sizeof what, "%.63s %s state %.95s", c->id, tg_dtype_name(dt), name);
        check_close(ctx, t, s->val.v, s->val.n, rtol, atol, what);
        nchecked++;
    }
    /* torch's SGD keeps no step count; ours counts the steps with a grad. */
    if (c->cfg.kind == TG_OPTIM_SGD && c->cfg.momentum != 0.0) {
        for (int i = 0; i < c->np; i++) {
            char name[96];
            snprintf(name, sizeof name, "optim.%s.step", c->pname[i]);
            double want = 0;
            for (int step = 0; step < c->nsteps; step++)
                want += c->grad[step][i].v != NULL;
            tg_tensor *t = find_state(opt, name);
            assert_non_null(t);
            assert_true(value_at(ctx, t, 0) == want);
        }
    }
    bool has_state = c->cfg.kind != TG_OPTIM_SGD || c->cfg.momentum != 0.0;
    if (has_state)
        assert_true(nchecked >= c->np);
    int extra = c->cfg.kind == TG_OPTIM_SGD && has_state ? c->np : 0; /* the step counts */
    assert_int_equal(tg_optim_state(opt, NULL, 0), nchecked + extra);
    tg_optim_free(opt);
    tg_ctx_free(ctx);
}

static void test_optim_torch_f64(void **state)
{
    (void)state;
    for (int i = 0; i < g_nopt; i++)
        run_optim_case(&g_opt[i], TG_F64);
}

static void test_optim_torch_f32(void **state)
{
    (void)state;
    for (int i = 0; i < g_nopt; i++)
        run_optim_case(&g_opt[i], TG_F32);
}

/* ---- clipping against torch ---- */

static void run_clip_case(const fx_clip *c, tg_dtype dt)
{
    int di = dt == TG_F64 ? 0 : 1;
    double rtol = di ? 1e-6 : 1e-14, atol = di ? 1e-7 : 1e-15;
    tg_ctx *ctx = new_ctx();
    tg_tensor *ps[MAXP];
    for (int i = 0; i < c->np; i++) {
        int64_t one = 1;
        const fx_vec *g = &c->grad[i];
        ps[i] = g->v ? tg_param(ctx, dt, g->ndim, g->shape, "p") : tg_param(ctx, dt, 1, &one, "p");
        assert_non_null(ps[i]);
        if (g->v) {
            ps[i]->grad = tg_persistent(ctx, dt, g->ndim, g->shape, "grad");
            set_values(ctx, ps[i]->grad, g->v, g->n);
        }
    }
    double total = -1.0;
    CHECK_OK(ctx, tg_clip_grad_norm(ctx, c->np, ps, c->max_norm, &total));
    if (!(fabs(total - c->total[di]) <= rtol * c->total[di]))
        fail_msg("%s %s: total norm %.17g, torch %.17g", c->id, tg_dtype_name(dt), total,
                 c->total[di]);
    char what[512];
    for (int i = 0; i < c->np; i++) {
        if (!c->grad[i].v) {
            assert_null(ps[i]->grad);
            continue;
        }
        snprintf(what, sizeof what, "%.63s %s grad %d", c->id, tg_dtype_name(dt), i);
        check_close(ctx, ps[i]->grad, c->clipped[di][i].v, c->clipped[di][i].n, rtol, atol, what);
    }
    tg_ctx_free(ctx);
}

static void test_clip_torch(void **state)
{
    (void)state;
    for (int i = 0; i < g_nclip; i++) {
        run_clip_case(&g_clip[i], TG_F64);
        run_clip_case(&g_clip[i], TG_F32);
    }
}

/* A long gradient takes the parallel, blocked path: its norm must still be
 * the plain sum of squares, and clipping must reach every element. */
static void test_clip_long(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx();
    const int64_t n = 300007;
    tg_tensor *p = tg_param(ctx, TG_F64, 1, &n, "long");
    assert_non_null(p);
    p->grad = tg_persistent(ctx, TG_F64, 1, &n, "grad");
    double *g = calloc((size_t)n, sizeof *g);
    assert_non_null(g);
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        g[i] = sin((double)i * 0.37) * 0.01;
        ss += g[i] * g[i];
    }
    set_values(ctx, p->grad, g, n);
    double total = 0.0, max_norm = 0.5;
    tg_tensor *ps[1] = {p};
    CHECK_OK(ctx, tg_clip_grad_norm(ctx, 1, ps, max_norm, &total));
    assert_true(fabs(total - sqrt(ss)) <= 1e-12 * sqrt(ss));
    double coef = max_norm / (sqrt(ss) + 1e-6);
    assert_true(coef < 1.0);
    for (int64_t i = 0; i < n; i++)
        g[i] *= coef;
    check_close(ctx, p->grad, g, n, 1e-13, 1e-18, "clipped long grad");
    /* Bad max_norm is refused. */
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_clip_grad_norm(ctx, 1, ps, -1.0, NULL), TG_ERR_INVALID);
    assert_non_null(strstr(tg_ctx_error(ctx), "max_norm"));
    free(g);
    tg_ctx_free(ctx);
}

/* ---- schedules ---- */

static const fx_sched *sched_find(const char *kind, int nth)
{
    for (int i = 0; i < g_nsched; i++)
        if (!strcmp(g_sched[i].kind, kind) && nth-- == 0)
            return &g_sched[i];
    return NULL;
}

static void check_lr(const tg_lr_schedule *s, int64_t step, double want, const char *what)
{
    double got = tg_lr_at(s, step);
    if (!(fabs(got - want) <= 1e-12 * fabs(want) + 1e-15))
        fail_msg("%s step %lld: lr %.17g, want %.17g", what, (long long)step, got, want);
}

/* Warm-up (from torch's LinearLR) followed by the schedule proper (torch's
 * StepLR / CosineAnnealingLR counting from the end of the warm-up). */
static void test_schedules_torch(void **state)
{
    (void)state;
    for (int wi = -1;; wi++) {
        const fx_sched *w = wi < 0 ? NULL : sched_find("warmup", wi);
        if (wi >= 0 && !w)
            break;
        int W = w ? (int)w->a : 0;
        const fx_sched *p;
        char what[512];
        for (int k = 0; (p = sched_find("step", k)); k++) {
            tg_lr_schedule s = {.kind = TG_LR_STEP, .lr = p->lr, .warmup_steps = W,
                                .step_size = (int64_t)p->a, .gamma = p->b};
            snprintf(what, sizeof what, "warmup %d + %s", W, p->id);
            for (int t = 0; t < W; t++)
                check_lr(&s, t, w->v[t], what);
            for (int t = 0; t < p->n; t++)
                check_lr(&s, W + t, p->v[t], what);
        }
        for (int k = 0; (p = sched_find("cosine", k)); k++) {
            tg_lr_schedule s = {.kind = TG_LR_COSINE, .lr = p->lr, .warmup_steps = W,
                                .total_steps = W + (int64_t)p->a, .min_lr = p->b};
            snprintf(what, sizeof what, "warmup %d + %s", W, p->id);
            for (int t = 0; t < W; t++)
                check_lr(&s, t, w->v[t], what);
            for (int t = 0; t < p->n; t++)
                check_lr(&s, W + t, p->v[t], what);
            /* After the end: min_lr (torch would rise again). */
            check_lr(&s, W + (int64_t)p->a + 5, p->b, what);
        }
        tg_lr_schedule s = {.kind = TG_LR_CONSTANT, .lr = 0.1, .warmup_steps = W};
        for (int t = 0; t < W; t++)
            check_lr(&s, t, w->v[t], "constant with warm-up");
        check_lr(&s, W + 100, 0.1, "constant with warm-up");
    }
    assert_non_null(sched_find("warmup", 1));
    assert_non_null(sched_find("cosine", 1));
}

static void test_schedules_hand(void **state)
{
    (void)state;
    tg_lr_schedule s = {.kind = TG_LR_STEP, .lr = 1.0, .step_size = 2, .gamma = 0.5};
    check_lr(&s, -3, 1.0, "negative step");
    check_lr(&s, 1, 1.0, "step");
    check_lr(&s, 2, 0.5, "step");
    check_lr(&s, 5, 0.25, "step");
    s = (tg_lr_schedule){.kind = TG_LR_COSINE, .lr = 1.0, .warmup_steps = 2, .total_steps = 6};
    check_lr(&s, 0, 0.5, "cosine");
    check_lr(&s, 1, 1.0, "cosine");
    check_lr(&s, 2, 1.0, "cosine");
    check_lr(&s, 4, 0.5, "cosine");      /* t = 2 of T = 4: cos(pi/2) = 0 */
    check_lr(&s, 6, 0.0, "cosine");
    check_lr(&s, 1000, 0.0, "cosine");
    /* A warm-up longer than the run: the run (4 steps) stays in it, finite
     * and below lr; it once made every step's lr NaN. */
    s = (tg_lr_schedule){.kind = TG_LR_COSINE, .lr = 1.0, .warmup_steps = 8, .total_steps = 4};
    check_lr(&s, 0, 0.125, "long warm-up");
    check_lr(&s, 3, 0.5, "long warm-up");
    check_lr(&s, 8, 0.0, "long warm-up"); /* past the warm-up: min_lr */
    s = (tg_lr_schedule){.kind = TG_LR_COSINE, .lr = 1.0, .warmup_steps = 5, .total_steps = 5};
    check_lr(&s, 4, 1.0, "warm-up as long as the run");

    tg_ctx *ctx = new_ctx();
    struct {
        tg_lr_schedule s;
        const char *field;
    } bad[] = {
        {{.kind = TG_LR_CONSTANT, .lr = -1.0}, "lr"},
        {{.kind = TG_LR_CONSTANT, .lr = NAN}, "lr"},
        {{.kind = TG_LR_CONSTANT, .lr = 1.0, .warmup_steps = -1}, "warmup_steps"},
        {{.kind = TG_LR_STEP, .lr = 1.0, .step_size = 0, .gamma = 0.5}, "step_size"},
        {{.kind = TG_LR_STEP, .lr = 1.0, .step_size = 1, .gamma = -0.5}, "gamma"},
        {{.kind = TG_LR_COSINE, .lr = 1.0, .warmup_steps = 5, .total_steps = 0}, "total_steps"},
        {{.kind = TG_LR_COSINE, .lr = 1.0, .total_steps = 5, .min_lr = -1}, "min_lr"},
        {{.kind = (tg_lr_kind)9, .lr = 1.0}, "kind"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tg_ctx_clear_error(ctx);
        assert_true(isnan(tg_lr_at(&bad[i].s, 3)));
        assert_int_equal(tg_lr_check(ctx, &bad[i].s), TG_ERR_INVALID);
        if (!strstr(tg_ctx_error(ctx), bad[i].field))
            fail_msg("bad schedule %zu: message '%s' does not name %s", i, tg_ctx_error(ctx),
                     bad[i].field);
    }
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_lr_check(ctx, &s), TG_OK);
    assert_true(isnan(tg_lr_at(NULL, 0)));
    tg_ctx_free(ctx);
}

/* ---- configuration and parameter checks ---- */

static void test_bad_configs(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx();
    int64_t sh = 3;
    tg_tensor *p = tg_param(ctx, TG_F32, 1, &sh, "w");
    assert_non_null(p);
    tg_optim_config sgd = tg_optim_defaults(TG_OPTIM_SGD), adam = tg_optim_defaults(TG_OPTIM_ADAM);
    struct {
        tg_optim_config c;
        const char *field;
    } bad[16];
    int nb = 0;
#define BAD(base, field_, member, value)                                                      \
    do {                                                                                       \
        bad[nb].c = base;                                                                      \
        bad[nb].c.member = value;                                                              \
        bad[nb++].field = field_;                                                              \
    } while (0)
    BAD(sgd, "lr", lr, -0.1);
    BAD(sgd, "lr", lr, NAN);
    BAD(sgd, "momentum", momentum, -0.5);
    BAD(sgd, "weight_decay", weight_decay, -1e-4);
    BAD(sgd, "dampening", dampening, INFINITY);
    BAD(sgd, "nesterov", nesterov, true); /* momentum 0 */
    BAD(adam, "beta1", beta1, 1.0);
    BAD(adam, "beta1", beta1, -0.1);
    BAD(adam, "beta2", beta2, 1.0);
    BAD(adam, "eps", eps, -1e-8);
    BAD(adam, "weight_decay", weight_decay, -0.1);
    BAD(tg_optim_defaults(TG_OPTIM_ADAMW), "lr", lr, INFINITY);
    BAD(sgd, "kind", kind, (tg_optim_kind)7);
    bad[nb].c = sgd;
    bad[nb].c.momentum = 0.9;
    bad[nb].c.dampening = 0.1;
    bad[nb].c.nesterov = true;
    bad[nb++].field = "dampening";
#undef BAD
    for (int i = 0; i < nb; i++) {
        tg_ctx_clear_error(ctx);
        tg_optim *opt = (tg_optim *)&bad[i]; /* must be reset to NULL */
        assert_int_equal(tg_optim_new(ctx, &bad[i].c, 1, &p, &opt), TG_ERR_INVALID);
        assert_null(opt);
        if (!strstr(tg_ctx_error(ctx), bad[i].field))
            fail_msg("bad config %d: message '%s' does not name %s", i, tg_ctx_error(ctx),
                     bad[i].field);
        tg_ctx_clear_error(ctx);
        assert_int_equal(tg_optim_check(ctx, &bad[i].c), TG_ERR_INVALID);
    }
    /* Fields of other kinds are ignored. */
    tg_optim_config ok = sgd;
    ok.beta2 = 7.0;
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_optim_check(ctx, &ok), TG_OK);
    ok = adam;
    ok.nesterov = true;
    assert_int_equal(tg_optim_check(ctx, &ok), TG_OK);
    tg_ctx_free(ctx);
}

static void expect_bad_params(tg_ctx *ctx, int n, tg_tensor *const *ps, tg_status want,
                              const char *needle)
{
    tg_optim_config c = tg_optim_defaults(TG_OPTIM_ADAM);
    tg_optim *opt = NULL;
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_optim_new(ctx, &c, n, ps, &opt), want);
    assert_null(opt);
    if (!strstr(tg_ctx_error(ctx), needle))
        fail_msg("message '%s' lacks '%s'", tg_ctx_error(ctx), needle);
}

static void test_bad_params(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx();
    int64_t sh[2] = {2, 3};
    tg_tensor *a = tg_param(ctx, TG_F32, 2, sh, "a");
    tg_tensor *b = tg_param(ctx, TG_F32, 2, sh, "b");
    tg_tensor *a2 = tg_param(ctx, TG_F32, 2, sh, "a");
    tg_tensor *lab = tg_persistent(ctx, TG_I64, 2, sh, "labels");
    tg_tensor *tr = tg_transpose(ctx, b, 0, 1);
    assert_non_null(tr);
    expect_bad_params(ctx, 2, (tg_tensor *[]){a, NULL}, TG_ERR_INVALID, "parameter 1 is NULL");
    expect_bad_params(ctx, 1, (tg_tensor *[]){lab}, TG_ERR_DTYPE, "labels");
    expect_bad_params(ctx, 2, (tg_tensor *[]){a, tr}, TG_ERR_INVALID, "not contiguous");
    expect_bad_params(ctx, 2, (tg_tensor *[]){a, a}, TG_ERR_INVALID, "twice");
    expect_bad_params(ctx, 2, (tg_tensor *[]){a, a2}, TG_ERR_INVALID, "both named a");
    expect_bad_params(ctx, -1, (tg_tensor *[]){a}, TG_ERR_INVALID, "n = -1");

    /* A bad gradient fails the step before anything is written. */
    tg_optim_config c = tg_optim_defaults(TG_OPTIM_SGD);
    tg_optim *opt = NULL;
    CHECK_OK(ctx, tg_optim_new(ctx, &c, 2, (tg_tensor *[]){a, b}, &opt));
    int64_t wrong = 6;
    a->grad = tg_persistent(ctx, TG_F32, 2, sh, "ga");
    CHECK_OK(ctx, tg_fill_(ctx, a->grad, 1.0));
    b->grad = tg_persistent(ctx, TG_F32, 1, &wrong, "gb");
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_optim_step(ctx, opt, 0.1), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_ctx_error(ctx), "(2, 3)"));
    assert_true(value_at(ctx, a, 0) == 0.0);
    b->grad = tg_persistent(ctx, TG_F64, 2, sh, "gb64");
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_optim_step(ctx, opt, 0.1), TG_ERR_DTYPE);
    b->grad = NULL;
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_optim_step(ctx, opt, NAN), TG_ERR_INVALID);
    assert_non_null(strstr(tg_ctx_error(ctx), "lr"));
    assert_int_equal(tg_optim_steps(opt), 0);
    /* lr < 0 takes the configured one: p = 0 - 1e-3 * 1. */
    tg_ctx_clear_error(ctx);
    CHECK_OK(ctx, tg_optim_step(ctx, opt, -1.0));
    assert_true(value_at(ctx, a, 4) == (double)(0.0f - (float)1e-3 * 1.0f));
    tg_optim_free(opt);
    tg_ctx_free(ctx);
}

/* ---- skipped parameters, hand-computed first step ---- */

static void test_frozen_and_null_grad(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx();
    int64_t n = 4;
    const double init[4] = {0.5, -1.0, 2.0, 0.25}, g[4] = {0.5, -0.25, 1e-9, 3.0};
    tg_tensor *ps[3];
    const char *names[3] = {"live", "frozen", "nograd"};
    for (int i = 0; i < 3; i++) {
        ps[i] = tg_param(ctx, TG_F64, 1, &n, names[i]);
        assert_non_null(ps[i]);
        set_values(ctx, ps[i], init, n);
    }
    CHECK_OK(ctx, tg_set_requires_grad(ctx, ps[1], false));
    for (int i = 0; i < 2; i++) {
        ps[i]->grad = tg_persistent(ctx, TG_F64, 1, &n, "grad");
        set_values(ctx, ps[i]->grad, g, n);
    }
    tg_optim_config c = tg_optim_defaults(TG_OPTIM_ADAM);
    c.lr = 0.1;
    tg_optim *opt = NULL;
    CHECK_OK(ctx, tg_optim_new(ctx, &c, 3, ps, &opt));
    uint32_t ver[3];
    for (int i = 0; i < 3; i++)
        ver[i] = ps[i]->storage->version;
    CHECK_OK(ctx, tg_optim_step(ctx, opt, -1.0));
    /* First Adam step: m/(1-b1) = g and sqrt(v/(1-b2)) = |g|, so
     * p -= lr * g / (|g| + eps). */
    double want[4];
    for (int k = 0; k < 4; k++)
        want[k] = init[k] - 0.1 * g[k] / (fabs(g[k]) + 1e-8);
    check_close(ctx, ps[0], want, n, 1e-12, 1e-15, "live after one step");
    assert_true(ps[0]->storage->version > ver[0]);
    for (int i = 1; i < 3; i++) {
        check_close(ctx, ps[i], init, n, 0.0, 0.0, names[i]);
        assert_int_equal(ps[i]->storage->version, ver[i]);
        char nm[64];
        snprintf(nm, sizeof nm, "optim.%s.exp_avg", names[i]);
        const double zero[4] = {0};
        check_close(ctx, find_state(opt, nm), zero, n, 0.0, 0.0, nm);
        snprintf(nm, sizeof nm, "optim.%s.step", names[i]);
        assert_true(value_at(ctx, find_state(opt, nm), 0) == 0.0);
    }
    /* zero_grad zeroes every grad, frozen ones included, and keeps NULL. */
    CHECK_OK(ctx, tg_optim_zero_grad(ctx, opt));
    const double zero[4] = {0};
    check_close(ctx, ps[0]->grad, zero, n, 0.0, 0.0, "zeroed grad");
    check_close(ctx, ps[1]->grad, zero, n, 0.0, 0.0, "zeroed frozen grad");
    assert_null(ps[2]->grad);
    tg_optim_free(opt);
    tg_ctx_free(ctx);
}

/* ---- state names ---- */

static void test_state_names(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx();
    int64_t sh[2] = {3, 2};
    tg_tensor *ps[3] = {tg_param(ctx, TG_F32, 2, sh, "fc1.weight"),
                        tg_param(ctx, TG_F32, 1, sh, "fc1.bias"),
                        tg_param(ctx, TG_F64, 1, sh, NULL)};
    tg_optim_config c = tg_optim_defaults(TG_OPTIM_ADAMW);
    tg_optim *opt = NULL;
    CHECK_OK(ctx, tg_optim_new(ctx, &c, 3, ps, &opt));
    static const char *const want[] = {
        "optim.fc1.weight.step", "optim.fc1.weight.exp_avg", "optim.fc1.weight.exp_avg_sq",
        "optim.fc1.bias.step",   "optim.fc1.bias.exp_avg",   "optim.fc1.bias.exp_avg_sq",
        "optim.param2.step",     "optim.param2.exp_avg",     "optim.param2.exp_avg_sq",
    };
    tg_tensor *st[16];
    assert_int_equal(tg_optim_state(opt, NULL, 0), 9);
    assert_int_equal(tg_optim_state(opt, st, 2), 9);
    assert_int_equal(tg_optim_state(opt, st, 16), 9);
    for (int i = 0; i < 9; i++) {
        assert_string_equal(st[i]->name, want[i]);
        assert_true(st[i]->storage->persistent);
        const tg_tensor *p = ps[i / 3];
        if (i % 3 == 0) {
            assert_int_equal(st[i]->dtype, TG_F64);
            assert_int_equal(tg_numel(st[i]), 1);
        } else {
            assert_int_equal(st[i]->dtype, p->dtype);
            assert_int_equal(st[i]->ndim, p->ndim);
            assert_memory_equal(st[i]->shape, p->shape, sizeof(int64_t) * (size_t)p->ndim);
        }
    }
    tg_optim_free(opt);
    /* Plain SGD has no state; SGD with momentum has step and momentum_buffer. */
    c = tg_optim_defaults(TG_OPTIM_SGD);
    CHECK_OK(ctx, tg_optim_new(ctx, &c, 3, ps, &opt));
    assert_int_equal(tg_optim_state(opt, st, 16), 0);
    tg_optim_free(opt);
    c.momentum = 0.9;
    CHECK_OK(ctx, tg_optim_new(ctx, &c, 3, ps, &opt));
    assert_int_equal(tg_optim_state(opt, st, 16), 6);
    assert_string_equal(st[1]->name, "optim.fc1.weight.momentum_buffer");
    tg_optim_free(opt);
    tg_ctx_free(ctx);
}

/* ---- a long parameter against a scalar re-implementation ---- */

static void test_long_param_adamw(void **state)
{
    (void)state;
    tg_ctx *ctx = new_ctx();
    const int64_t n = 200003;
    const double lr = 3e-3, wd = 0.1, b1 = 0.9, b2 = 0.99, eps = 1e-8;
    tg_tensor *p = tg_param(ctx, TG_F64, 1, &n, "long");
    assert_non_null(p);
    p->grad = tg_persistent(ctx, TG_F64, 1, &n, "grad");
    double *x = calloc((size_t)n, sizeof *x), *g = calloc((size_t)n, sizeof *g);
    double *m = calloc((size_t)n, sizeof *m), *v = calloc((size_t)n, sizeof *v);
    assert_true(x && g && m && v);
    for (int64_t i = 0; i < n; i++)
        x[i] = cos((double)i * 0.01);
    set_values(ctx, p, x, n);
    tg_optim_config c = tg_optim_defaults(TG_OPTIM_ADAMW);
    c.lr = lr;
    c.weight_decay = wd;
    c.beta2 = b2;
    tg_optim *opt = NULL;
    CHECK_OK(ctx, tg_optim_new(ctx, &c, 1, &p, &opt));
    for (int t = 1; t <= 3; t++) {
        for (int64_t i = 0; i < n; i++)
            g[i] = sin((double)(i + 7 * t) * 0.013);
        set_values(ctx, p->grad, g, n);
        CHECK_OK(ctx, tg_optim_step(ctx, opt, -1.0));
        for (int64_t i = 0; i < n; i++) {
            x[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            double mh = m[i] / (1.0 - pow(b1, t)), vh = v[i] / (1.0 - pow(b2, t));
            x[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    check_close(ctx, p, x, n, 1e-11, 1e-12, "long AdamW parameter");
    free(x);
    free(g);
    free(m);
    free(v);
    tg_optim_free(opt);
    tg_ctx_free(ctx);
}

/* ---- resume and allocation ---- */

static void fill_grads(tg_ctx *ctx, int np, tg_tensor **ps, int step)
{
    for (int i = 0; i < np; i++) {
        int64_t n = tg_numel(ps[i]);
        float *buf = ps[i]->grad->storage->data;
        for (int64_t k = 0; k < n; k++)
            buf[k] = (float)sin(0.1 * (double)(k + 1) * (double)(step + 1) + i);
        tg_bump_version(ps[i]->grad);
    }
    (void)ctx;
}

static tg_optim *make_model(tg_ctx *ctx, tg_optim_kind kind, tg_tensor **ps, int np,
                            const int64_t *sizes)
{
    static const char *const names[] = {"l1.weight", "l1.bias", "l2.weight", "l2.bias"};
    for (int i = 0; i < np; i++) {
        ps[i] = tg_param(ctx, TG_F32, 1, &sizes[i], names[i]);
        assert_non_null(ps[i]);
        ps[i]->grad = tg_persistent(ctx, TG_F32, 1, &sizes[i], "grad");
        assert_non_null(ps[i]->grad);
        CHECK_OK(ctx, tg_fill_(ctx, ps[i], 0.5 - 0.25 * i));
    }
    tg_optim_config c = tg_optim_defaults(kind);
    c.momentum = kind == TG_OPTIM_SGD ? 0.9 : 0.0;
    c.nesterov = kind == TG_OPTIM_SGD;
    c.weight_decay = 1e-3;
    tg_optim *opt = NULL;
    CHECK_OK(ctx, tg_optim_new(ctx, &c, np, ps, &opt));
    return opt;
}

/* Saving params + state after 3 steps and restoring them into a fresh
 * context continues bit for bit like the uninterrupted run. */
static void test_resume_exact(void **state)
{
    (void)state;
    const int64_t sizes[4] = {37, 5, 40000, 1};
    for (int kind = 0; kind < 3; kind++) {
        tg_ctx *a = new_ctx(), *b = new_ctx();
        tg_tensor *pa[4], *pb[4];
        tg_optim *oa = make_model(a, (tg_optim_kind)kind, pa, 4, sizes);
        tg_optim *ob = make_model(b, (tg_optim_kind)kind, pb, 4, sizes);
        for (int s = 0; s < 3; s++) {
            fill_grads(a, 4, pa, s);
            CHECK_OK(a, tg_optim_step(a, oa, 1e-2));
        }
        for (int i = 0; i < 4; i++)
            CHECK_OK(b, tg_copy_(b, pb[i], pa[i]));
        tg_tensor *sa[16], *sb[16];
        int ns = tg_optim_state(oa, sa, 16);
        assert_int_equal(tg_optim_state(ob, sb, 16), ns);
        tg_optim_set_steps(ob, tg_optim_steps(oa));
        /* set_steps also sets every parameter's own count. */
        assert_true(((double *)find_state(ob, "optim.l2.bias.step")->storage->data)[0] == 3.0);
        for (int i = 0; i < ns; i++) {
            assert_string_equal(sa[i]->name, sb[i]->name);
            CHECK_OK(b, tg_copy_from_host(b, sb[i], sa[i]->storage->data, sa[i]->storage->nbytes));
        }
        for (int s = 3; s < 6; s++) {
            fill_grads(a, 4, pa, s);
            fill_grads(b, 4, pb, s);
            CHECK_OK(a, tg_optim_step(a, oa, 1e-2));
            CHECK_OK(b, tg_optim_step(b, ob, 1e-2));
        }
        assert_int_equal(tg_optim_steps(ob), 6);
        for (int i = 0; i < 4; i++)
            assert_memory_equal(pa[i]->storage->data, pb[i]->storage->data,
                                pa[i]->storage->nbytes);
        /* The step changed the parameters at all. */
        assert_true(((float *)pa[2]->storage->data)[0] != 0.0f);
        tg_optim_free(oa);
        tg_optim_free(ob);
        tg_ctx_free(a);
        tg_ctx_free(b);
    }
}

/* A step (with clipping and zero_grad) makes no heap allocation and takes
 * nothing from the step arena. */
static void test_zero_alloc(void **state)
{
    (void)state;
    const int64_t sizes[4] = {300, 17, 100000, 3};
    for (int kind = 0; kind < 3; kind++) {
        tg_ctx *ctx = new_ctx();
        tg_tensor *ps[4];
        tg_optim *opt = make_model(ctx, (tg_optim_kind)kind, ps, 4, sizes);
        fill_grads(ctx, 4, ps, 0);
        CHECK_OK(ctx, tg_optim_step(ctx, opt, -1.0));
        uint64_t before = tg_ctx_alloc_count(ctx);
        size_t used0, res0, hw0, used1, res1, hw1;
        tg_arena_stats(ctx, &used0, &res0, &hw0);
        float p0 = ((float *)ps[2]->storage->data)[5];
        for (int s = 1; s < 6; s++) {
            fill_grads(ctx, 4, ps, s);
            double total;
            CHECK_OK(ctx, tg_clip_grad_norm(ctx, 4, ps, 1.0, &total));
            CHECK_OK(ctx, tg_optim_step(ctx, opt, -1.0));
            CHECK_OK(ctx, tg_optim_zero_grad(ctx, opt));
        }
        tg_arena_stats(ctx, &used1, &res1, &hw1);
        assert_int_equal(tg_ctx_alloc_count(ctx), before);
        assert_int_equal(used1, used0);
        assert_int_equal(res1, res0);
        assert_true(((float *)ps[2]->storage->data)[5] != p0);
        tg_optim_free(opt);
        tg_ctx_free(ctx);
    }
}

int main(void)
{
    load_fixtures(TG_FIXTURE_DIR "/optim.txt");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_load),
        cmocka_unit_test(test_optim_torch_f64),
        cmocka_unit_test(test_optim_torch_f32),
        cmocka_unit_test(test_clip_torch),
        cmocka_unit_test(test_clip_long),
        cmocka_unit_test(test_schedules_torch),
        cmocka_unit_test(test_schedules_hand),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_frozen_and_null_grad),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_long_param_adamw),
        cmocka_unit_test(test_resume_exact),
        cmocka_unit_test(test_zero_alloc),
    };
    int failed = cmocka_run_group_tests_name("optim", tests, NULL, NULL);
    free_kept();
    return failed ? 1 : 0;
}
