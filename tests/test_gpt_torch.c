/*
 * tests/test_gpt_torch.c: the gpt against nanoGPT's model in PyTorch
 * (tests/fixtures/gpt.txt, written by tests/gen_gpt_fixtures.py).
 *
 * The fixture's weights are loaded by name into tapegrad's gpt of the same
 * sizes (tg_gpt_model_text), so names and shapes must agree one to one (the
 * tied lm_head has none of its own in either). Checked:
 *   - f64: the logits and the cross-entropy over every position, and the
 *     gradient of every parameter, to 1e-10;
 *   - the losses of 10 steps of nanoGPT's recipe (AdamW betas 0.9/0.95,
 *     weight decay 0.1 on the matrices only, clipping at 1): f64 to 1e-9
 *     relative, f32 against PyTorch's f32 run to 1e-4 relative.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/modelfile.h"
#include "tapegrad/optim.h"

enum {
    L = 2,
    H = 2,
    E = 16,
    T = 8,
    V = 13,
    B = 2,
    STEPS = 10,
    MAXP = 64
};

typedef struct fx {
    int np;
    char name[MAXP][64];
    int64_t numel[MAXP];
    double *param[MAXP], *grad[MAXP];
    int64_t tokens[STEPS][B * T], targets[STEPS][B * T];
    double logits[B * T * V], loss, steploss[2][STEPS];
} fx;

static fx g_fx;

/* Reads n numbers after " : " of line into out. */
static void numbers(const char *line, double *out, int64_t n) {
    const char *p = strstr(line, " : ");
    assert_non_null(p);
    p += 3;
    for (int64_t i = 0; i < n; i++) {
        char *end;
        out[i] = strtod(p, &end);
        if (end == p)
            fail_msg("fixture: %lld numbers expected in: %.60s", (long long)n, line);
        p = end;
    }
}

static int find(const char *name) {
    for (int i = 0; i < g_fx.np; i++)
        if (!strcmp(g_fx.name[i], name))
            return i;
    fail_msg("fixture: no param %s", name);
    return -1;
}

static int load(void **state) {
    (void)state;
    FILE *f = fopen(TG_FIXTURE_DIR "/gpt.txt", "r");
    if (!f)
        return -1;
    size_t cap = 1 << 16;
    char *line = malloc(cap);
    double tmp[B * T];
    while (line && fgets(line, (int)cap, f)) {
        size_t n = strlen(line);
        while (n == cap - 1 && line[n - 1] != '\n') {
            line = realloc(line, cap *= 2);
            if (!line || !fgets(line + n, (int)(cap - n), f))
                break;
            n = strlen(line);
        }
        char name[64], tag[8];
        int k;
        long long cnt;
        if (sscanf(line, "param %63s %lld", name, &cnt) == 2) {
            int i = g_fx.np++;
            snprintf(g_fx.name[i], 64, "%s", name);
            g_fx.numel[i] = cnt;
            g_fx.param[i] = malloc((size_t)cnt * sizeof(double));
            numbers(line, g_fx.param[i], cnt);
        } else if (sscanf(line, "grad %63s", name) == 1) {
            int i = find(name);
            g_fx.grad[i] = malloc((size_t)g_fx.numel[i] * sizeof(double));
            numbers(line, g_fx.grad[i], g_fx.numel[i]);
        } else if (sscanf(line, "tokens %d", &k) == 1 || sscanf(line, "targets %d", &k) == 1) {
            numbers(line, tmp, B * T);
            for (int j = 0; j < B * T; j++)
                (line[1] == 'o' ? g_fx.tokens : g_fx.targets)[k][j] = (int64_t)tmp[j];
        } else if (!strncmp(line, "logits :", 8)) {
            numbers(line, g_fx.logits, B * T * V);
        } else if (sscanf(line, "loss %lf", &g_fx.loss) == 1) {
        } else if (sscanf(line, "steploss %7s %d", tag, &k) == 2) {
            sscanf(line, "steploss %*s %*d %lf", &g_fx.steploss[strcmp(tag, "f64") != 0][k]);
        }
    }
    free(line);
    fclose(f);
    return g_fx.np > 0 && g_fx.grad[g_fx.np - 1] ? 0 : -1;
}

static int unload(void **state) {
    (void)state;
    for (int i = 0; i < g_fx.np; i++) {
        free(g_fx.param[i]);
        free(g_fx.grad[i]);
    }
    return 0;
}

static void ok(tg_ctx *ctx, tg_status s) {
    if (s != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
}

/* tapegrad's gpt of the fixture's sizes with its weights, in dtype dt. */
static tg_net *model(tg_ctx *ctx, tg_params *ps, tg_dtype dt) {
    size_t n = tg_gpt_model_text(NULL, 0, L, H, E, 0, 0.0);
    char *text = malloc(n);
    assert_non_null(text);
    tg_gpt_model_text(text, n, L, H, E, 0, 0.0);
    int64_t t = T;
    tg_net_options o = {.path = "gpt", .in_ndim = 1, .in_shape = &t, .classes = V};
    tg_net *net;
    ps->dtype = dt;
    ok(ctx, tg_net_build(ctx, text, n - 1, &o, ps, &net));
    free(text);
    assert_int_equal(ps->nparams, g_fx.np);
    bool prev = tg_set_grad_enabled(ctx, false);
    for (int i = 0; i < ps->nparams; i++) {
        tg_tensor *p = ps->params[i];
        assert_string_equal(p->name, g_fx.name[i]);
        assert_int_equal(tg_numel(p), g_fx.numel[i]);
        float *f = malloc((size_t)g_fx.numel[i] * sizeof *f);
        assert_non_null(f);
        for (int64_t j = 0; j < g_fx.numel[i]; j++)
            f[j] = (float)g_fx.param[i][j];
        ok(ctx, tg_copy_from_host(ctx, p, dt == TG_F64 ? (void *)g_fx.param[i] : (void *)f,
                                  (size_t)g_fx.numel[i] * tg_dtype_size(dt)));
        free(f);
    }
    tg_set_grad_enabled(ctx, prev);
    return net;
}

static tg_tensor *loss_of(tg_ctx *ctx, tg_net *net, int k, tg_tensor **logits) {
    int64_t sh[2] = {B, T}, n = B * T, ls[2] = {B * T, V};
    tg_tensor *y = tg_net_forward(ctx, net, tg_from_data(ctx, TG_I64, 2, sh, g_fx.tokens[k]), true);
    if (logits)
        *logits = y;
    tg_tensor *l = tg_cross_entropy(ctx, tg_reshape(ctx, y, 2, ls),
                                    tg_from_data(ctx, TG_I64, 1, &n, g_fx.targets[k]), 0.0);
    if (!l)
        fail_msg("%s", tg_ctx_error(ctx));
    return l;
}

static void close_to(const char *what, const double *got, const double *want, int64_t n,
                     double tol) {
    for (int64_t i = 0; i < n; i++)
        if (fabs(got[i] - want[i]) > tol * (1 + fabs(want[i])))
            fail_msg("%s[%lld]: tapegrad %.17g, PyTorch %.17g", what, (long long)i, got[i],
                     want[i]);
}

static void test_forward_backward_f64(void **state) {
    (void)state;
    tg_ctx *ctx;
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = 1};
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    tg_params ps = {0};
    tg_net *net = model(ctx, &ps, TG_F64);
    tg_tensor *logits;
    tg_tensor *l = loss_of(ctx, net, 0, &logits);
    double lg[B * T * V], loss;
    ok(ctx, tg_to_host(ctx, logits, lg, sizeof lg));
    close_to("logits", lg, g_fx.logits, B * T * V, 1e-12);
    ok(ctx, tg_item(ctx, l, &loss));
    close_to("loss", &loss, &g_fx.loss, 1, 1e-13);
    ok(ctx, tg_backward(ctx, l, NULL, 0));
    for (int i = 0; i < ps.nparams; i++) {
        double *g = malloc((size_t)g_fx.numel[i] * sizeof *g);
        assert_non_null(g);
        ok(ctx, tg_to_host(ctx, ps.params[i]->grad, g, (size_t)g_fx.numel[i] * sizeof *g));
        close_to(g_fx.name[i], g, g_fx.grad[i], g_fx.numel[i], 1e-10);
        free(g);
    }
    tg_ctx_free(ctx);
}

static void adamw_steps(tg_dtype dt, const double *want, double rtol) {
    tg_ctx *ctx;
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = 1};
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    tg_params ps = {0};
    tg_net *net = model(ctx, &ps, dt);
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
    oc.beta2 = 0.95;
    oc.weight_decay = 0.1;
    oc.no_decay = ps.no_decay;
    tg_optim *opt;
    ok(ctx, tg_optim_new(ctx, &oc, ps.nparams, ps.params, &opt));
    for (int k = 0; k < STEPS; k++) {
        tg_tensor *l = loss_of(ctx, net, k, NULL);
        double v;
        ok(ctx, tg_item(ctx, l, &v));
        if (fabs(v - want[k]) > rtol * fabs(want[k]))
            fail_msg("%s step %d: loss %.17g, PyTorch %.17g (relative %.3g)", tg_dtype_name(dt), k,
                     v, want[k], fabs(v - want[k]) / fabs(want[k]));
        ok(ctx, tg_backward(ctx, l, NULL, 0));
        ok(ctx, tg_clip_grad_norm(ctx, ps.nparams, ps.params, 1.0, NULL));
        ok(ctx, tg_optim_step(ctx, opt, 3e-3));
        ok(ctx, tg_optim_zero_grad(ctx, opt));
        tg_step_reset(ctx);
    }
    tg_optim_free(opt);
    tg_ctx_free(ctx);
}

static void test_adamw_f64(void **state) {
    (void)state;
    adamw_steps(TG_F64, g_fx.steploss[0], 1e-9);
}

static void test_adamw_f32(void **state) {
    (void)state;
    adamw_steps(TG_F32, g_fx.steploss[1], 1e-4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_backward_f64),
        cmocka_unit_test(test_adamw_f64),
        cmocka_unit_test(test_adamw_f32),
    };
    return cmocka_run_group_tests(tests, load, unload);
}
