/*
 * tests/test_gpt.c: the transformer layers of model files and the gpt model
 * (docs/MODELS.md).
 *
 * - models/gpt.ini is tg_gpt_model_text() of the default sizes.
 * - GPT-2's initialisation (std 0.02, residual projections 0.02 /
 *   sqrt(2 n_layer), zero biases), the parameter names (nanoGPT's), the tied
 *   output layer that owns no weight, and the weight-decay mask.
 * - Gradients of every parameter of a small gpt (f64) against central
 *   differences of the cross-entropy over every position, causal and not.
 * - The cached forward: a prefill and then one position at a time give the
 *   full forward's logits; a later token never changes an earlier position.
 * - AdamW with the decay mask: the matrices shrink, the rest does not; a
 *   few dozen steps on a repeating sequence take the loss down.
 * - Every error of the new layer types and keys, with its message.
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
#include "tapegrad/rng.h"
#include "tapegrad/trainer.h"

static void ok(tg_ctx *ctx, tg_status s) {
    if (s != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
}

static tg_ctx *new_ctx(void) {
    tg_ctx *ctx;
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = 1};
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    return ctx;
}

/* The gpt's text (heap). */
static char *gpt_text(int layers, int heads, int64_t embd, int64_t block, double p) {
    size_t n = tg_gpt_model_text(NULL, 0, layers, heads, embd, block, p);
    assert_true(n > 1);
    char *t = malloc(n);
    assert_non_null(t);
    assert_int_equal(tg_gpt_model_text(t, n, layers, heads, embd, block, p), n);
    return t;
}

/* Builds text for windows of t tokens of a vocabulary of v in ps (whose
 * dtype the caller set). */
static tg_net *build(tg_ctx *ctx, const char *text, int64_t t, int64_t v, tg_params *ps,
                     uint64_t seed) {
    tg_net_options o = {.path = "gpt", .in_ndim = 1, .in_shape = &t, .classes = v, .seed = seed};
    tg_net *net;
    ok(ctx, tg_net_build(ctx, text, strlen(text), &o, ps, &net));
    return net;
}

static tg_tensor *param(const tg_params *ps, const char *name, int *index) {
    for (int i = 0; i < ps->nparams; i++)
        if (!strcmp(ps->params[i]->name, name)) {
            if (index)
                *index = i;
            return ps->params[i];
        }
    fail_msg("no parameter %s", name);
    return NULL;
}

static double *values(tg_ctx *ctx, const tg_tensor *t) {
    int64_t n = tg_numel(t);
    double *d = malloc((size_t)n * sizeof *d);
    assert_non_null(d);
    if (t->dtype == TG_F64) {
        ok(ctx, tg_to_host(ctx, t, d, (size_t)n * sizeof *d));
    } else {
        float *f = malloc((size_t)n * sizeof *f);
        assert_non_null(f);
        ok(ctx, tg_to_host(ctx, t, f, (size_t)n * sizeof *f));
        for (int64_t i = 0; i < n; i++)
            d[i] = f[i];
        free(f);
    }
    return d;
}

static void mean_std(tg_ctx *ctx, const tg_tensor *t, double *mean, double *std) {
    int64_t n = tg_numel(t);
    double *d = values(ctx, t), s = 0, q = 0;
    for (int64_t i = 0; i < n; i++)
        s += d[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        q += (d[i] - *mean) * (d[i] - *mean);
    *std = sqrt(q / (double)n);
    free(d);
}

static void test_shipped_file(void **state) {
    (void)state;
    char *t = gpt_text(4, 4, 128, 0, 0.0);
    const char *shipped = tg_model_builtin_text("gpt");
    assert_non_null(shipped);
    assert_string_equal(shipped, t);
    free(t);
    /* Bad sizes give no text. */
    assert_int_equal(tg_gpt_model_text(NULL, 0, 0, 4, 128, 0, 0), 0);
    assert_int_equal(tg_gpt_model_text(NULL, 0, 2, 3, 128, 0, 0), 0);
    assert_int_equal(tg_gpt_model_text(NULL, 0, 2, 4, 128, 0, 1.0), 0);
}

static void test_init_names_decay(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx();
    char *text = gpt_text(2, 2, 64, 0, 0.0);
    tg_params ps = {0};
    tg_net *net = build(ctx, text, 16, 50, &ps, 7);
    /* nanoGPT's names (without its "transformer." prefix); lm_head owns
     * nothing: it is wte. */
    const char *names[] = {"wte.weight",
                           "wpe.weight",
                           "h.0.ln_1.weight",
                           "h.0.ln_1.bias",
                           "h.0.attn.c_attn.weight",
                           "h.0.attn.c_attn.bias",
                           "h.0.attn.c_proj.weight",
                           "h.0.attn.c_proj.bias",
                           "h.0.ln_2.weight",
                           "h.0.ln_2.bias",
                           "h.0.mlp.c_fc.weight",
                           "h.0.mlp.c_fc.bias",
                           "h.0.mlp.c_proj.weight",
                           "h.0.mlp.c_proj.bias"};
    assert_int_equal(ps.nparams, 2 + 2 * 12 + 2);
    for (int i = 0; i < 14; i++)
        assert_string_equal(ps.params[i]->name, names[i]);
    assert_string_equal(ps.params[ps.nparams - 1]->name, "ln_f.bias");
    int64_t e = 64, expect = 50 * e + 16 * e + 2 * (12 * e * e + 13 * e) + 2 * e;
    assert_int_equal(tg_params_numel(&ps), expect);
    int64_t out[4];
    assert_int_equal(tg_net_out_shape(net, out), 2);
    assert_int_equal(out[0], 16);
    assert_int_equal(out[1], 50);
    assert_int_equal(tg_net_block_size(net), 16);
    /* GPT-2's initialisation. */
    const struct {
        const char *name;
        double std;
    } want[] = {{"wte.weight", 0.02},
                {"wpe.weight", 0.02},
                {"h.1.attn.c_attn.weight", 0.02},
                {"h.1.attn.c_proj.weight", 0.01},
                {"h.0.mlp.c_fc.weight", 0.02},
                {"h.0.mlp.c_proj.weight", 0.01}};
    for (int i = 0; i < 6; i++) {
        double m, s;
        mean_std(ctx, param(&ps, want[i].name, NULL), &m, &s);
        if (fabs(s - want[i].std) > 0.1 * want[i].std || fabs(m) > 0.2 * want[i].std)
            fail_msg("%s: mean %g std %g, expected 0 and %g", want[i].name, m, s, want[i].std);
    }
    const char *zero[] = {"h.0.attn.c_attn.bias", "h.1.attn.c_proj.bias", "h.0.mlp.c_fc.bias",
                          "ln_f.bias"};
    for (int i = 0; i < 4; i++) {
        double m, s;
        mean_std(ctx, param(&ps, zero[i], NULL), &m, &s);
        assert_true(m == 0 && s == 0);
    }
    double m, s;
    mean_std(ctx, param(&ps, "h.1.ln_2.weight", NULL), &m, &s);
    assert_true(m == 1 && s == 0);
    /* The decay mask: matrices only. */
    for (int i = 0; i < ps.nparams; i++) {
        const char *n = ps.params[i]->name;
        bool matrix =
            strstr(n, "c_attn.weight") || strstr(n, "c_proj.weight") || strstr(n, "c_fc.weight");
        if (ps.no_decay[i] == matrix)
            fail_msg("%s: no_decay %d", n, ps.no_decay[i]);
    }
    free(text);
    tg_ctx_free(ctx);
}

/* Cross-entropy over every position of logits (N, T, V). */
static tg_tensor *lm_loss(tg_ctx *ctx, tg_tensor *logits, tg_tensor *targets) {
    int64_t v = logits->shape[2], n = tg_numel(targets);
    int64_t ls[2] = {n, v};
    return tg_cross_entropy(ctx, tg_reshape(ctx, logits, 2, ls), tg_reshape(ctx, targets, 1, &n),
                            0.0);
}

static double loss_at(tg_ctx *ctx, tg_net *net, const int64_t *xs, const int64_t *ys, int64_t b,
                      int64_t t, bool backward) {
    int64_t sh[2] = {b, t};
    tg_tensor *x = tg_from_data(ctx, TG_I64, 2, sh, xs);
    tg_tensor *y = tg_from_data(ctx, TG_I64, 2, sh, ys);
    tg_tensor *l = lm_loss(ctx, tg_net_forward(ctx, net, x, false), y);
    double v = NAN;
    if (!l)
        fail_msg("%s", tg_ctx_error(ctx));
    ok(ctx, tg_item(ctx, l, &v));
    if (backward)
        ok(ctx, tg_backward(ctx, l, NULL, 0));
    tg_step_reset(ctx);
    return v;
}

static void gradcheck(const char *text, int64_t t, int64_t v) {
    tg_ctx *ctx = new_ctx();
    tg_params ps = {.dtype = TG_F64};
    tg_net *net = build(ctx, text, t, v, &ps, 3);
    enum {
        B = 2
    };
    int64_t xs[B * 8], ys[B * 8];
    tg_rng r = tg_rng_make(11, 0);
    for (int i = 0; i < B * t; i++) {
        xs[i] = (int64_t)tg_rng_below(&r, (uint64_t)v);
        ys[i] = (int64_t)tg_rng_below(&r, (uint64_t)v);
    }
    loss_at(ctx, net, xs, ys, B, t, true);
    tg_set_grad_enabled(ctx, false); /* the perturbations write the leaves */
    int checked = 0;
    for (int i = 0; i < ps.nparams; i++) {
        tg_tensor *p = ps.params[i];
        double *g = values(ctx, p->grad), *val = values(ctx, p);
        int64_t n = tg_numel(p);
        /* Up to 5 elements of each parameter, spread over it. */
        for (int k = 0; k < 5 && k < n; k++) {
            int64_t j = (k * 7919 + i * 31) % n;
            double keep = val[j], lp, lm;
            val[j] = keep + 1e-6;
            ok(ctx, tg_copy_from_host(ctx, p, val, (size_t)n * sizeof *val));
            lp = loss_at(ctx, net, xs, ys, B, t, false);
            val[j] = keep - 1e-6;
            ok(ctx, tg_copy_from_host(ctx, p, val, (size_t)n * sizeof *val));
            lm = loss_at(ctx, net, xs, ys, B, t, false);
            val[j] = keep;
            ok(ctx, tg_copy_from_host(ctx, p, val, (size_t)n * sizeof *val));
            double num = (lp - lm) / 2e-6;
            if (fabs(num - g[j]) > 1e-7 + 1e-5 * fmax(fabs(num), fabs(g[j])))
                fail_msg("%s[%lld]: analytic %.10g, finite differences %.10g", p->name,
                         (long long)j, g[j], num);
            checked++;
        }
        free(g);
        free(val);
    }
    assert_true(checked >= 20);
    tg_ctx_free(ctx);
}

static void test_gradcheck_gpt(void **state) {
    (void)state;
    char *text = gpt_text(2, 2, 8, 0, 0.0);
    gradcheck(text, 5, 7);
    free(text);
}

/* A non-causal attention with biases off and default init, a position
 * table longer than the window, and a tied head with a bias. */
static void test_gradcheck_layers(void **state) {
    (void)state;
    gradcheck("[input]\ndtype = i64\n[embedding]\nname = tok\nnum = classes\ndim = 6\n"
              "[pos_embedding]\nnum = 9\n[layernorm]\n[attention]\nheads = 3\ncausal = false\n"
              "bias = false\n[gelu]\n[linear]\ntie = tok\n",
              4, 5);
}

/* The gpt with the fused attention op and with `fused = false` (composed
 * from matmul, masked_fill, softmax): same loss and every gradient, in f64. */
static void test_fused_equals_composed(void **state) {
    (void)state;
    char *text = gpt_text(2, 2, 16, 0, 0.0);
    size_t n = strlen(text), extra = 0;
    for (const char *p = text; (p = strstr(p, "[attention]\n")); p++)
        extra += strlen("fused = false\n");
    char *comp = malloc(n + extra + 1), *o = comp;
    assert_non_null(comp);
    for (const char *p = text; *p;) {
        const char *a = strstr(p, "[attention]\n");
        size_t k = a ? (size_t)(a - p) + strlen("[attention]\n") : strlen(p);
        memcpy(o, p, k);
        o += k;
        p += k;
        if (a) {
            memcpy(o, "fused = false\n", strlen("fused = false\n"));
            o += strlen("fused = false\n");
        }
    }
    *o = 0;
    assert_true(extra > 0);
    enum { B = 2, T = 9, V = 11 };
    int64_t xs[B * T], ys[B * T];
    tg_rng r = tg_rng_make(5, 0);
    for (int i = 0; i < B * T; i++) {
        xs[i] = (int64_t)tg_rng_below(&r, V);
        ys[i] = (int64_t)tg_rng_below(&r, V);
    }
    double loss[2];
    double *grads[2][64] = {{0}};
    int np = 0;
    for (int v = 0; v < 2; v++) {
        tg_ctx *ctx = new_ctx();
        tg_params ps = {.dtype = TG_F64};
        tg_net *net = build(ctx, v ? comp : text, T, V, &ps, 3);
        loss[v] = loss_at(ctx, net, xs, ys, B, T, true);
        assert_true(ps.nparams <= 64);
        np = ps.nparams;
        for (int i = 0; i < ps.nparams; i++)
            grads[v][i] = values(ctx, ps.params[i]->grad);
        for (int i = 0; v && i < ps.nparams; i++)
            for (int64_t j = 0; j < tg_numel(ps.params[i]); j++)
                if (fabs(grads[0][i][j] - grads[1][i][j]) > 1e-12 + 1e-10 * fabs(grads[1][i][j]))
                    fail_msg("%s[%lld]: fused %.15g, composed %.15g", ps.params[i]->name,
                             (long long)j, grads[0][i][j], grads[1][i][j]);
        tg_ctx_free(ctx);
    }
    assert_true(fabs(loss[0] - loss[1]) <= 1e-12 * fabs(loss[1]));
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < np; i++)
            free(grads[v][i]);
    free(comp);
    free(text);
}

/* The logits of the cached forward equal the full forward's. */
static void test_cache_equals_full(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx();
    char *text = gpt_text(2, 4, 32, 0, 0.0);
    tg_params ps = {0};
    enum {
        B = 2,
        T = 12,
        V = 20
    };
    tg_net *net = build(ctx, text, T, V, &ps, 5);
    int64_t xs[B * T];
    tg_rng r = tg_rng_make(1, 0);
    for (int i = 0; i < B * T; i++)
        xs[i] = (int64_t)tg_rng_below(&r, V);
    int64_t sh[2] = {B, T};
    tg_set_grad_enabled(ctx, false);
    tg_tensor *full = tg_net_forward(ctx, net, tg_from_data(ctx, TG_I64, 2, sh, xs), false);
    assert_non_null(full);
    double *f = values(ctx, full);
    tg_step_reset(ctx);
    /* Out of turn: no cache yet, a position past the start with 2 tokens. */
    int64_t one[2] = {B, 1};
    assert_null(tg_net_forward_cached(ctx, net, tg_from_data(ctx, TG_I64, 2, one, xs), 0));
    assert_non_null(strstr(tg_ctx_error(ctx), "tg_net_cache_new"));
    tg_ctx_clear_error(ctx);
    tg_step_reset(ctx);
    ok(ctx, tg_net_cache_new(ctx, net, B));
    double worst = 0;
    int64_t pos = 0;
    while (pos < T) {
        int64_t t = pos == 0 ? 5 : 1, in[B * 5];
        for (int b = 0; b < B; b++)
            for (int k = 0; k < t; k++)
                in[b * t + k] = xs[b * T + pos + k];
        int64_t s2[2] = {B, t};
        tg_tensor *y = tg_net_forward_cached(ctx, net, tg_from_data(ctx, TG_I64, 2, s2, in), pos);
        if (!y)
            fail_msg("%s", tg_ctx_error(ctx));
        assert_int_equal(y->shape[1], t);
        double *c = values(ctx, y);
        for (int b = 0; b < B; b++)
            for (int k = 0; k < t; k++)
                for (int j = 0; j < V; j++)
                    worst = fmax(worst, fabs(c[(b * t + k) * V + j] -
                                             f[((int64_t)b * T + pos + k) * V + j]));
        free(c);
        tg_step_reset(ctx);
        pos += t;
    }
    if (worst > 1e-5)
        fail_msg("cached logits differ from the full forward's by %g", worst);
    /* Past the block size, and 2 tokens after the start: refused. */
    assert_null(tg_net_forward_cached(ctx, net, tg_from_data(ctx, TG_I64, 2, one, xs), T));
    assert_non_null(strstr(tg_ctx_error(ctx), "net_forward_cached"));
    tg_ctx_clear_error(ctx);
    int64_t two[2] = {B, 2};
    assert_null(tg_net_forward_cached(ctx, net, tg_from_data(ctx, TG_I64, 2, two, xs), 3));
    assert_non_null(strstr(tg_ctx_error(ctx), "net_forward_cached"));
    tg_ctx_clear_error(ctx);
    tg_step_reset(ctx);
    /* A net that mixes positions otherwise is no token model. */
    int64_t four = 4;
    tg_net_options fo = {.path = "flat", .in_ndim = 1, .in_shape = &four, .classes = 3};
    const char *flat = "[input]\ndtype = i64\n[embedding]\nnum = 5\ndim = 2\n[flatten]\n"
                       "[linear]\nout = classes\n";
    tg_params fps = {0};
    tg_net *fnet;
    ok(ctx, tg_net_build(ctx, flat, strlen(flat), &fo, &fps, &fnet));
    assert_int_equal(tg_net_block_size(fnet), 0);
    ok(ctx, tg_net_cache_new(ctx, fnet, 1)); /* no attention: nothing to cache */
    int64_t f2[2] = {1, 2};
    assert_null(tg_net_forward_cached(ctx, fnet, tg_from_data(ctx, TG_I64, 2, f2, xs), 0));
    assert_non_null(strstr(tg_ctx_error(ctx), "does not take a window of tokens"));
    tg_ctx_clear_error(ctx);
    tg_step_reset(ctx);
    /* Causality: a later token leaves the earlier positions as they were. */
    xs[7] = (xs[7] + 1) % V;
    tg_tensor *g = tg_net_forward(ctx, net, tg_from_data(ctx, TG_I64, 2, sh, xs), false);
    double *h = values(ctx, g), before = 0, after = 0;
    for (int k = 0; k < T; k++)
        for (int j = 0; j < V; j++) {
            double d = fabs(h[k * V + j] - f[k * V + j]);
            if (k < 7)
                before = fmax(before, d);
            else
                after = fmax(after, d);
        }
    assert_true(before < 1e-6);
    assert_true(after > 1e-4);
    free(h);
    free(f);
    free(text);
    tg_ctx_free(ctx);
}

/* AdamW and SGD with the mask: zero gradients, so only the decay moves
 * values. */
static void decay_case(tg_optim_kind kind, bool mask) {
    tg_ctx *ctx = new_ctx();
    char *text = gpt_text(1, 2, 8, 0, 0.0);
    tg_params ps = {0};
    build(ctx, text, 4, 6, &ps, 9);
    double *before[64];
    for (int i = 0; i < ps.nparams; i++) {
        before[i] = values(ctx, ps.params[i]);
        ok(ctx, tg_zero_grad(ctx, ps.params[i]));
        if (!ps.params[i]->grad) {
            ps.params[i]->grad =
                tg_persistent(ctx, TG_F32, ps.params[i]->ndim, ps.params[i]->shape, NULL);
            assert_non_null(ps.params[i]->grad);
            ok(ctx, tg_zero_grad(ctx, ps.params[i]));
        }
    }
    tg_optim_config oc = tg_optim_defaults(kind);
    oc.weight_decay = 0.5; /* AdamW: p *= 1 - 0.1 * 0.5; SGD: p -= 0.1 * 0.5 p */
    oc.no_decay = mask ? ps.no_decay : NULL;
    tg_optim *opt;
    ok(ctx, tg_optim_new(ctx, &oc, ps.nparams, ps.params, &opt));
    ok(ctx, tg_optim_step(ctx, opt, 0.1));
    int decayed = 0;
    for (int i = 0; i < ps.nparams; i++) {
        double *after = values(ctx, ps.params[i]);
        double scale = mask && ps.no_decay[i] ? 1.0 : 0.95;
        for (int64_t j = 0; j < tg_numel(ps.params[i]); j++)
            if (fabs(after[j] - before[i][j] * scale) > 1e-6)
                fail_msg("%s[%lld]: %g after, %g before (scale %g)", ps.params[i]->name,
                         (long long)j, after[j], before[i][j], scale);
        decayed += !ps.no_decay[i];
        free(after);
        free(before[i]);
    }
    assert_int_equal(decayed, 4); /* c_attn, c_proj, c_fc, mlp.c_proj */
    tg_optim_free(opt);
    free(text);
    tg_ctx_free(ctx);
}

static void test_decay_mask(void **state) {
    (void)state;
    decay_case(TG_OPTIM_ADAMW, true);
    decay_case(TG_OPTIM_SGD, true);
    decay_case(TG_OPTIM_SGD, false); /* no mask: every parameter decays */
}

/* nanoGPT's recipe on a repeating sequence: the loss falls well below the
 * uniform ln(V). */
static void test_train_repeating(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx();
    char *text = gpt_text(2, 2, 32, 0, 0.1);
    tg_params ps = {0};
    enum {
        B = 8,
        T = 16,
        V = 8
    };
    tg_net *net = build(ctx, text, T, V, &ps, 1);
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
    oc.beta2 = 0.95;
    oc.weight_decay = 0.1;
    oc.no_decay = ps.no_decay;
    tg_optim *opt;
    ok(ctx, tg_optim_new(ctx, &oc, ps.nparams, ps.params, &opt));
    tg_rng r = tg_rng_make(2, 0);
    double first = 0, last = 0;
    for (int step = 0; step < 40; step++) {
        int64_t xs[B * T], ys[B * T], sh[2] = {B, T};
        for (int b = 0; b < B; b++) {
            int64_t off = (int64_t)tg_rng_below(&r, 64);
            for (int k = 0; k < T; k++) {
                xs[b * T + k] = (off + k) % V;
                ys[b * T + k] = (off + k + 1) % V;
            }
        }
        tg_tensor *x = tg_from_data(ctx, TG_I64, 2, sh, xs);
        tg_tensor *l =
            lm_loss(ctx, tg_net_forward(ctx, net, x, true), tg_from_data(ctx, TG_I64, 2, sh, ys));
        if (!l)
            fail_msg("%s", tg_ctx_error(ctx));
        ok(ctx, tg_item(ctx, l, step ? &last : &first));
        ok(ctx, tg_backward(ctx, l, NULL, 0));
        ok(ctx, tg_clip_grad_norm(ctx, ps.nparams, ps.params, 1.0, NULL));
        ok(ctx, tg_optim_step(ctx, opt, 3e-3));
        ok(ctx, tg_optim_zero_grad(ctx, opt));
        tg_step_reset(ctx);
    }
    if (!(fabs(first - log(V)) < 0.3 && last < 0.25 * first))
        fail_msg("loss %g at the first step, %g at the 40th", first, last);
    tg_optim_free(opt);
    free(text);
    tg_ctx_free(ctx);
}

/* ---- errors ---- */

static void expect_error(const char *text, int64_t t, const char *want) {
    tg_ctx *ctx = new_ctx();
    tg_params ps = {0};
    tg_net_options o = {.path = "lm.ini", .in_ndim = 1, .in_shape = &t, .classes = 10};
    tg_net *net = (tg_net *)1;
    tg_status s = tg_net_build(ctx, text, strlen(text), &o, &ps, &net);
    assert_int_not_equal(s, TG_OK);
    assert_null(net);
    if (!strstr(tg_ctx_error(ctx), want))
        fail_msg("expected '%s' in: %s", want, tg_ctx_error(ctx));
    tg_ctx_free(ctx);
}

#define HEAD "[input]\ndtype = i64\n[embedding]\nname = e\nnum = classes\ndim = 8\n"

static void test_errors(void **state) {
    (void)state;
    expect_error(HEAD "[attention]\nname = a\nheads = 3\n", 4,
                 "lm.ini:9: layer 'a' [attention]: key 'heads': input 'e' (N, 4, 8) has 8 "
                 "features, which 3 heads do not divide");
    expect_error(HEAD "[attention]\nname = a\n", 4,
                 "lm.ini:7: layer 'a' [attention]: missing required key 'heads'");
    expect_error("[input]\nshape = 8\n[attention]\nname = a\nheads = 2\n", 8,
                 "layer 'a' [attention]: input 'input' is (N, 8), expected (N, T, E)");
    expect_error(HEAD "[attention]\nheads = 2\nproj_std = 0.1\n", 4,
                 "key 'proj_std': 'proj_std' needs init = normal");
    expect_error(HEAD "[attention]\nheads = 2\nstd = 0.1\n", 4,
                 "key 'std': 'std' needs init = "
                 "normal");
    expect_error(HEAD "[attention]\nheads = 2\ninit = xavier\n", 4,
                 "key 'init': expected default or normal, got 'xavier'");
    expect_error(HEAD "[attention]\nheads = 2\ncausal = maybe\n", 4,
                 "key 'causal': expected true or false, got 'maybe'");
    expect_error(HEAD "[attention]\nheads = 2\ndropout = 1\n", 4,
                 "key 'dropout': expected a number in [0, 1)");
    expect_error(HEAD "[pos_embedding]\nname = p\nnum = 3\n", 4,
                 "lm.ini:9: layer 'p' [pos_embedding]: key 'num': 3 positions, but input 'e' "
                 "(N, 4, 8) has 4");
    expect_error(HEAD "[layernorm]\nname = n\n[linear]\nname = head\ntie = n\n", 4,
                 "lm.ini:11: layer 'head' [linear]: key 'tie': 'n' is a [layernorm], expected an "
                 "[embedding]");
    expect_error(HEAD "[linear]\nname = head\ntie = later\n", 4, "key 'tie': unknown name 'later'");
    expect_error(HEAD "[linear]\nout = 4\n[linear]\nname = head\ntie = e\n", 4,
                 "key 'tie': the weight of 'e' is (10, 8): its 8 columns do not match the "
                 "input's 4 features");
    expect_error(HEAD "[linear]\nname = head\ntie = e\nout = 9\n", 4,
                 "key 'out': out = 9, but the tied weight of 'e' has 10 rows");
    expect_error(HEAD "[linear]\nname = head\ntie = e\ninit = normal\n", 4,
                 "key 'init': a tied layer has no weight of its own to initialise");
    expect_error(HEAD "[linear]\nname = head\nout = 10\nstd = 0.1\n", 4,
                 "key 'std': 'std' needs init = normal");
    /* Token models must end in (N, T, classes). */
    expect_error(HEAD "[linear]\nname = head\nout = 9\n", 4,
                 "layer 'head' [linear]: the model ends in (N, 4, 9), expected (N, 10)");
    /* Unknown keys name the new ones. */
    expect_error(HEAD "[attention]\nheads = 2\nwindow = 3\n", 4,
                 "unknown key (layer [attention] takes: name, input, heads, causal, fused, bias, "
                 "dropout, init, std, proj_std)");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_file),      cmocka_unit_test(test_init_names_decay),
        cmocka_unit_test(test_gradcheck_gpt),     cmocka_unit_test(test_gradcheck_layers),
        cmocka_unit_test(test_cache_equals_full), cmocka_unit_test(test_decay_mask),
        cmocka_unit_test(test_train_repeating),   cmocka_unit_test(test_errors),
        cmocka_unit_test(test_fused_equals_composed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
