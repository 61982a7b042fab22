/*
 * tests/test_modelfile.c: model files (tapegrad/modelfile.h).
 *
 * - Every layer type in a model file, with its gradients checked by central
 *   differences through the whole graph: f64 parameters, loss = sum(out *
 *   W) for a fixed random W, the analytic gradient of the input and of
 *   every parameter element against (L(v + h) - L(v - h)) / 2h.
 * - Every error a model file can make, with the words of its message (file,
 *   line, layer, key, both shapes).
 * - The summary table, the parameter names and counts of the ResNets.
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

#include "nn/modelfile_internal.h"
#include "tapegrad/modelfile.h"
#include "tapegrad/rng.h"

static void ok(tg_ctx *ctx, tg_status s) {
    if (s != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
}

/* ---- gradients through the graph ---- */

typedef struct gcase {
    const char *name;
    const char *text;
    int ndim;
    int64_t shape[4]; /* one sample */
    int64_t batch;
    bool training;
    bool int_input; /* indices in [0, 7) */
} gcase;

/* L = sum(forward(x) * W), in f64; NULL on failure. */
static double loss_of(tg_ctx *ctx, tg_net *net, const gcase *c, const double *xv, const double *w,
                      tg_tensor **xout, tg_tensor **lout) {
    int64_t xs[5] = {c->batch};
    for (int d = 0; d < c->ndim; d++)
        xs[d + 1] = c->shape[d];
    tg_tensor *x;
    if (c->int_input) {
        int64_t n = tg__numel(c->ndim + 1, xs), idx[256];
        for (int64_t i = 0; i < n; i++)
            idx[i] = (int64_t)xv[i];
        x = tg_from_data(ctx, TG_I64, c->ndim + 1, xs, idx);
    } else {
        x = tg_from_data(ctx, TG_F64, c->ndim + 1, xs, xv);
        if (xout)
            ok(ctx, tg_set_requires_grad(ctx, x, true));
    }
    /* The same dropout mask at every evaluation. */
    net->drop_rng = tg_rng_make(5, 1);
    tg_tensor *y = tg_net_forward(ctx, net, x, c->training);
    if (!y)
        fail_msg("%s: %s", c->name, tg_ctx_error(ctx));
    tg_tensor *wt = tg_from_data(ctx, TG_F64, y->ndim, y->shape, w);
    int axes[TG_MAX_DIMS];
    for (int d = 0; d < y->ndim; d++)
        axes[d] = d;
    tg_tensor *l = tg_sum(ctx, tg_mul(ctx, y, wt), y->ndim, axes, false);
    double v;
    ok(ctx, tg_item(ctx, l, &v));
    if (xout)
        *xout = x;
    if (lout)
        *lout = l;
    return v;
}

static void check_close(const char *what, const char *cname, int64_t i, double a, double n) {
    if (fabs(a - n) > 1e-6 + 1e-5 * fmax(fabs(a), fabs(n)))
        fail_msg("%s: %s[%lld]: analytic %.10g, numeric %.10g", cname, what, (long long)i, a, n);
}

static void grad_case(const gcase *c) {
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    tg_params ps = {.dtype = TG_F64};
    tg_net_options o = {.path = c->name, .in_ndim = c->ndim, .in_shape = c->shape, .seed = 3};
    tg_net *net;
    ok(ctx, tg_net_build(ctx, c->text, strlen(c->text), &o, &ps, &net));
    assert_true(ps.nparams > 0);
    int64_t nx = c->batch;
    for (int d = 0; d < c->ndim; d++)
        nx *= c->shape[d];
    double *xv = malloc((size_t)nx * sizeof *xv);
    tg_rng rng = tg_rng_make(9, 0);
    float tmp;
    for (int64_t i = 0; i < nx; i++) {
        tg_rng_uniform(&rng, &tmp, 1, -1.0f, 1.0f);
        xv[i] = c->int_input ? (double)(i * 5 % 7) : tmp;
    }
    int64_t oshape[TG_MAX_DIMS];
    int ond = tg_net_out_shape(net, oshape);
    int64_t nw = c->batch;
    for (int d = 0; d < ond; d++)
        nw *= oshape[d];
    double *w = malloc((size_t)nw * sizeof *w);
    for (int64_t i = 0; i < nw; i++) {
        tg_rng_uniform(&rng, &tmp, 1, -1.0f, 1.0f);
        w[i] = tmp;
    }
    /* Analytic. */
    tg_step_reset(ctx);
    tg_tensor *x, *l;
    loss_of(ctx, net, c, xv, w, &x, &l);
    ok(ctx, tg_backward(ctx, l, NULL, 0));
    int np = ps.nparams;
    double **pg = calloc((size_t)np, sizeof *pg), *xg = NULL;
    for (int p = 0; p < np; p++) {
        tg_tensor *t = ps.params[p];
        int64_t n = tg_numel(t);
        pg[p] = malloc((size_t)n * sizeof(double));
        if (!t->grad)
            fail_msg("%s: %s has no gradient", c->name, t->name);
        ok(ctx, tg_to_host(ctx, t->grad, pg[p], (size_t)n * sizeof(double)));
    }
    if (!c->int_input) {
        xg = malloc((size_t)nx * sizeof *xg);
        ok(ctx, tg_to_host(ctx, x->grad, xg, (size_t)nx * sizeof *xg));
    }
    for (int p = 0; p < np; p++)
        ok(ctx, tg_zero_grad(ctx, ps.params[p]));
    /* Numeric, with grad off. */
    bool prev = tg_set_grad_enabled(ctx, false);
    const double h = 1e-6;
    for (int64_t i = 0; xg && i < nx; i++) {
        double v = xv[i];
        xv[i] = v + h;
        tg_step_reset(ctx);
        double lp = loss_of(ctx, net, c, xv, w, NULL, NULL);
        xv[i] = v - h;
        tg_step_reset(ctx);
        double lm = loss_of(ctx, net, c, xv, w, NULL, NULL);
        xv[i] = v;
        check_close("input", c->name, i, xg[i], (lp - lm) / (2 * h));
    }
    for (int p = 0; p < np; p++) {
        tg_tensor *t = ps.params[p];
        int64_t n = tg_numel(t);
        for (int64_t i = 0; i < n; i++) {
            double v;
            ok(ctx, tg_get(ctx, t, i, &v));
            double vals[2] = {v + h, v - h}, ls[2];
            for (int k = 0; k < 2; k++) {
                double *host = malloc((size_t)n * sizeof *host);
                ok(ctx, tg_to_host(ctx, t, host, (size_t)n * sizeof *host));
                host[i] = vals[k];
                ok(ctx, tg_copy_from_host(ctx, t, host, (size_t)n * sizeof *host));
                tg_step_reset(ctx);
                ls[k] = loss_of(ctx, net, c, xv, w, NULL, NULL);
                host[i] = v;
                ok(ctx, tg_copy_from_host(ctx, t, host, (size_t)n * sizeof *host));
                free(host);
            }
            char what[128];
            snprintf(what, sizeof what, "%s", t->name);
            check_close(what, c->name, i, pg[p][i], (ls[0] - ls[1]) / (2 * h));
        }
    }
    tg_set_grad_enabled(ctx, prev);
    for (int p = 0; p < np; p++)
        free(pg[p]);
    free(pg);
    free(xg);
    free(xv);
    free(w);
    tg_ctx_free(ctx);
}

static const gcase gcases[] = {
    {"conv.ini",
     "[input]\nshape = 2, 7, 7\n"
     "[conv2d]\nname = c1\nout = 3\nkernel = 3, 2\nstride = 2, 1\npadding = 1\ndilation = 2, 1\n"
     "[batchnorm2d]\nname = bn\nmomentum = 0.2\neps = 1e-3\n"
     "[relu]\n[maxpool]\nkernel = 2\nstride = 1\n[flatten]\n"
     "[linear]\nname = fc\nout = 4\n",
     3,
     {2, 7, 7},
     3,
     true,
     false},
    {"conv_eval.ini",
     "[conv2d]\nname = c1\nout = 2\nkernel = 3\nbias = false\n"
     "[batchnorm]\nname = bn\n[avgpool]\nkernel = 3\nstride = 2\npadding = 1\n"
     "[globalavgpool]\n[linear]\nname = fc\nout = 3\nbias = false\n",
     3,
     {1, 6, 5},
     2,
     false,
     false},
    {"acts.ini",
     "[linear]\nname = a\nout = 5\n[gelu]\n[linear]\nname = b\nout = 5\n[silu]\n"
     "[layernorm]\nname = ln\neps = 1e-4\n[tanh]\n[dropout]\np = 0.3\n"
     "[linear]\nname = c\nout = 4\n[sigmoid]\n",
     1,
     {6},
     3,
     true,
     false},
    {"residual.ini",
     "[input]\nname = img\n"
     "[conv2d]\nname = a\nout = 4\nkernel = 3\nstride = 2\npadding = 1\n"
     "[relu]\nname = ar\n"
     "[add]\nname = down\ninputs = ar, img\nproject = conv-bn\n"
     "[conv2d]\nname = b\ninput = img\nout = 2\nkernel = 1\nstride = 2\n"
     "[concat]\nname = cat\ninputs = down, b\ndim = 1\n"
     "[add]\nname = plain\ninputs = cat\n"
     "[conv2d]\nname = p\nout = 3\nkernel = 1\n"
     "[add]\nname = proj\ninputs = p, plain\nproject = conv\n"
     "[layernorm]\nname = ln2\ndims = 3\n"
     "[flatten]\n",
     3,
     {3, 5, 4},
     2,
     true,
     false},
    {"embed.ini",
     "[input]\ndtype = i64\nshape = 4\n"
     "[embedding]\nname = emb\nnum = 7\ndim = 3\n"
     "[flatten]\n[batchnorm1d]\nname = bn\n"
     "[linear]\nname = fc\nout = 2\n"
     "[concat]\ninputs = fc, bn\n",
     1,
     {4},
     3,
     true,
     true},
    /* The transformer layers (more in tests/test_gpt.c): a causal and a
     * full attention, a position table longer than the window, normal
     * init, a tied output layer. */
    {"attention.ini",
     "[input]\ndtype = i64\n"
     "[embedding]\nname = wte\nnum = 7\ndim = 6\ninit = normal\nstd = 0.5\n"
     "[pos_embedding]\nname = wpe\nnum = 6\n"
     "[attention]\nname = a1\nheads = 2\ninit = normal\nstd = 0.3\nproj_std = 0.2\n"
     "[attention]\nname = a2\nheads = 3\ncausal = false\nbias = false\n"
     "[layernorm]\n[linear]\nname = head\ntie = wte\n",
     1,
     {4},
     2,
     false,
     true},
};

static void test_gradients(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof gcases / sizeof gcases[0]; i++)
        grad_case(&gcases[i]);
}

/* Every layer type appears in the cases above. */
static void test_every_type_checked(void **state) {
    (void)state;
    for (int k = 0; k < TG__MF_KIND_COUNT; k++) {
        char sec[48];
        snprintf(sec, sizeof sec, "[%s", tg__mf_kind_name((tg__mf_kind)k));
        bool found = k == TG__MF_INPUT;
        for (size_t i = 0; !found && i < sizeof gcases / sizeof gcases[0]; i++)
            found = strstr(gcases[i].text, sec) != NULL;
        if (!found)
            fail_msg("layer type %s has no gradient case", sec + 1);
    }
}

/* ---- errors ---- */

typedef struct ecase {
    const char *text;
    int64_t classes;
    tg_status status;
    const char *want[4]; /* substrings of the message */
} ecase;

static const ecase ecases[] = {
    {"[linear]\nout = 3\n[bogus]\n",
     0,
     TG_ERR_INVALID,
     {"m.ini:3: unknown layer type [bogus]", "expected one of: input, linear"}},
    {"[linear]\nname = fc\nout = 3\nsize = 4\n",
     0,
     TG_ERR_INVALID,
     {"m.ini:4: layer 'fc' [linear]: key 'size': unknown key", "takes: name, input, out, bias"}},
    {"[linear]\nname = fc\n",
     0,
     TG_ERR_INVALID,
     {"m.ini:1: layer 'fc' [linear]: missing required key 'out'"}},
    {"[linear]\nname = fc\nout = x\n",
     0,
     TG_ERR_INVALID,
     {"m.ini:3: layer 'fc' [linear]: key 'out'", "got 'x'"}},
    {"[linear]\nname = fc\nout = classes\n",
     0,
     TG_ERR_INVALID,
     {"key 'out': 'classes' has no value here"}},
    {"[flatten]\n[conv2d]\nname = c\nout = 2\nkernel = 3\n",
     0,
     TG_ERR_SHAPE,
     {"m.ini:2: layer 'c' [conv2d]", "input 'flatten1' is (N, 48), expected (N, C, H, W)"}},
    {"[conv2d]\nname = c\nout = 2\nkernel = 9\n",
     0,
     TG_ERR_SHAPE,
     {"layer 'c' [conv2d]", "(N, 3, 4, 4) is smaller than the kernel 9x9"}},
    {"[conv2d]\nname = a\nout = 2\nkernel = 1\n[add]\nname = r\ninputs = input\n",
     0,
     TG_ERR_SHAPE,
     {"m.ini:5: layer 'r' [add]", "adds 'a' (N, 2, 4, 4) and 'input' (N, 3, 4, 4)",
      "shapes differ"}},
    {"[relu]\nname = a\n[add]\nname = r\ninputs = a, later\n[relu]\nname = later\n",
     0,
     TG_ERR_INVALID,
     {"m.ini:5: layer 'r' [add]: key 'inputs'", "unknown name 'later'", "cycle"}},
    {"[relu]\nname = a\ninput = a\n",
     0,
     TG_ERR_INVALID,
     {"m.ini:3: layer 'a' [relu]: key 'input'", "names itself", "cycle"}},
    {"[relu]\nname = a\n[relu]\nname = a\n",
     0,
     TG_ERR_INVALID,
     {"m.ini:4: layer 'a' [relu]: key 'name'", "already taken by line 1"}},
    {"[flatten]\n[linear]\nname = fc\nout = 5\n",
     10,
     TG_ERR_SHAPE,
     {"m.ini:2: layer 'fc' [linear]", "ends in (N, 5), expected (N, 10)", "out = classes"}},
    {"[flatten]\n", 10, TG_ERR_SHAPE, {"ends in (N, 48), expected (N, 10)"}},
    {"[input]\nshape = 1, 28, 28\n",
     0,
     TG_ERR_SHAPE,
     {"m.ini:2: layer 'input' [input]: key 'shape'", "the file says (N, 1, 28, 28) but the data "
                                                     "gives (N, 3, 4, 4)"}},
    {"[conv2d]\nname = g\nout = 4\nkernel = 1\ngroups = 3\n",
     0,
     TG_ERR_SHAPE,
     {"m.ini:5: layer 'g' [conv2d]: key 'groups'",
      "3 groups must divide both the input's 3 channels (input 'input' (N, 3, 4, 4)) and out = 4"}},
    {"[conv2d]\nname = g\nout = 3\nkernel = 1\ngroups = 2\n",
     0,
     TG_ERR_SHAPE,
     {"m.ini:5: layer 'g' [conv2d]: key 'groups'", "2 groups must divide"}},
    {"[conv2d]\nout = 3\nkernel = 1\ngroups = 0\n", 0, TG_ERR_INVALID, {"key 'groups'"}},
    {"[linear\nout = 3\n", 0, TG_ERR_INVALID, {"m.ini:1: section header without ']'"}},
    {"out = 3\n", 0, TG_ERR_INVALID, {"m.ini:1: key 'out' before the first [layer] section"}},
    {"[relu]\nnot a key\n", 0, TG_ERR_INVALID, {"m.ini:2: expected '[layer]', 'key = value'"}},
    {"[relu]\nname = x\nname = y\n", 0, TG_ERR_INVALID, {"m.ini:3:", "already set on line 2"}},
    {"[relu]\nname = a/b\n", 0, TG_ERR_INVALID, {"m.ini:2:", "not a layer name"}},
    {"[relu]\nname = input\n", 0, TG_ERR_INVALID, {"m.ini:2:", "the name 'input' is the input's"}},
    {"[relu]\n[input]\n", 0, TG_ERR_INVALID, {"m.ini:2:", "[input] must be the first layer"}},
    {"[maxpool]\nkernel = 2\npadding = 2\n",
     0,
     TG_ERR_INVALID,
     {"key 'padding'", "more than half the kernel"}},
    {"[dropout]\np = 1\n", 0, TG_ERR_INVALID, {"m.ini:2:", "key 'p'", "[0, 1)"}},
    {"[embedding]\nnum = 4\ndim = 2\n",
     0,
     TG_ERR_DTYPE,
     {"layer 'embedding1' [embedding]", "input 'input' is f32, expected integer values"}},
    {"[concat]\ninputs = input\ndim = 2\n[conv2d]\nout = 1\nkernel = 1\n[concat]\ninputs = "
     "concat1\ndim = 2\n",
     0,
     TG_ERR_SHAPE,
     {"m.ini:7: layer 'concat2' [concat]", "cannot join 'conv2d1' (N, 1, 8, 4)"}},
    {"[add]\ninputs = input\nproject = maybe\n",
     0,
     TG_ERR_INVALID,
     {"key 'project'", "expected none, conv or conv-bn"}},
    {"", 0, TG_ERR_INVALID, {"m.ini: no layers"}},
    {"[layernorm]\ndims = 4\n", 0, TG_ERR_SHAPE, {"key 'dims'", "last 4 dims"}},
    {"[batchnorm1d]\n", 0, TG_ERR_SHAPE, {"expected (N, C) for [batchnorm1d]"}},
    {"[concat]\ninputs = input, input, input, input, input, input, input, input\n"
     "[concat]\ninputs = concat1, concat1, concat1, concat1, concat1, concat1, concat1, concat1\n"
     "[concat]\ninputs = concat2, concat2, concat2, concat2, concat2, concat2, concat2, concat2\n"
     "[concat]\ninputs = concat3, concat3, concat3, concat3, concat3, concat3, concat3, concat3\n"
     "[concat]\ninputs = concat4, concat4, concat4, concat4, concat4, concat4, concat4, concat4\n"
     "[concat]\ninputs = concat5, concat5, concat5, concat5, concat5, concat5, concat5, concat5\n"
     "[concat]\ninputs = concat6, concat6, concat6, concat6, concat6, concat6, concat6, concat6\n"
     "[concat]\ninputs = concat7, concat7, concat7, concat7, concat7, concat7, concat7, concat7\n"
     "[concat]\ninputs = concat8, concat8, concat8, concat8, concat8, concat8, concat8, concat8\n"
     "[concat]\ninputs = concat9, concat9, concat9, concat9, concat9, concat9, concat9, concat9\n"
     "[concat]\ninputs = concat10, concat10, concat10, concat10, concat10, concat10, concat10\n"
     "[concat]\ninputs = concat11, concat11, concat11, concat11, concat11, concat11, concat11\n"
     "[concat]\ninputs = concat12, concat12, concat12, concat12, concat12, concat12, concat12\n",
     0,
     TG_ERR_SHAPE,
     {"m.ini:23: layer 'concat12' [concat]: an output of 2.53e+12", "more than the 2^40"}},
    {"[flatten]\n[linear]\nout = 131072\n[linear]\nout = 16777216\n",
     0,
     TG_ERR_SHAPE,
     {"m.ini:4: layer 'linear2' [linear]: a weight of 2.2e+12 scalars"}},
};

static void test_errors(void **state) {
    (void)state;
    const int64_t in[3] = {3, 4, 4};
    for (size_t i = 0; i < sizeof ecases / sizeof ecases[0]; i++) {
        const ecase *e = &ecases[i];
        tg_ctx *ctx;
        assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
        for (int mode = 0; mode < 2; mode++) {
            tg_params ps = {0};
            tg_net_options o = {.path = "m.ini",
                                .in_ndim = 3,
                                .in_shape = in,
                                .classes = e->classes,
                                .check_only = mode == 1};
            tg_net *net = (tg_net *)1;
            tg_status s = tg_net_build(ctx, e->text, strlen(e->text), &o, &ps, &net);
            if (s == TG_OK)
                fail_msg("case %zu built: %s", i, e->text);
            assert_null(net);
            const char *msg = tg_ctx_error(ctx);
            if (s != e->status)
                fail_msg("case %zu: status %d, expected %d: %s", i, (int)s, (int)e->status, msg);
            for (int k = 0; k < 4 && e->want[k]; k++)
                if (!strstr(msg, e->want[k]))
                    fail_msg("case %zu: '%s' not in: %s", i, e->want[k], msg);
            tg_ctx_clear_error(ctx);
        }
        tg_ctx_free(ctx);
    }
}

/* A NUL byte, a too-long line and the byte limit. */
static void test_bad_bytes(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const int64_t in[1] = {4};
    tg_net_options o = {.path = "b.ini", .in_ndim = 1, .in_shape = in, .check_only = true};
    tg_net *net;
    assert_int_equal(tg_net_build(ctx, "[relu]\n\n[r\0lu]\n", 15, &o, NULL, &net), TG_ERR_INVALID);
    assert_non_null(strstr(tg_ctx_error(ctx), "b.ini:3: a NUL byte"));
    tg_ctx_clear_error(ctx);
    char line[600];
    memset(line, 'a', sizeof line);
    memcpy(line, "[relu]\nname = ", 14);
    line[sizeof line - 1] = '\0';
    assert_int_equal(tg_net_build(ctx, line, strlen(line), &o, NULL, &net), TG_ERR_INVALID);
    assert_non_null(strstr(tg_ctx_error(ctx), "b.ini:2: line of"));
    tg_ctx_clear_error(ctx);
    tg_ctx_free(ctx);
}

/* The [input]'s dtype, read without a build: as the file spells it (spaces
 * or none), f32 by default and without an [input], and the parse's error for
 * a text that is no model file. */
static void test_input_dtype(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const struct {
        const char *text;
        tg_dtype want;
    } cases[] = {
        {"[input]\ndtype = i64\n[embedding]\nnum = 5\ndim = 3\n", TG_I64},
        {"[input]\ndtype=i64\nshape = 4\n[relu]\n", TG_I64},
        {"[input]\ndtype = f32\n[relu]\n", TG_F32},
        {"[input]\nshape = 4\n[relu]\n", TG_F32},
        {"[relu]\n[linear]\nout = 3\n", TG_F32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_dtype dt = TG_F64;
        ok(ctx, tg_net_input_dtype(ctx, cases[i].text, strlen(cases[i].text), &dt));
        if (dt != cases[i].want)
            fail_msg("case %zu: dtype %d, want %d", i, (int)dt, (int)cases[i].want);
    }
    const char *gpt = tg_model_builtin_text("gpt");
    tg_dtype dt = TG_F32;
    ok(ctx, tg_net_input_dtype(ctx, gpt, strlen(gpt), &dt));
    assert_int_equal(dt, TG_I64);
    dt = TG_F64;
    assert_int_equal(tg_net_input_dtype(ctx, "not a model\n", 12, &dt), TG_ERR_INVALID);
    assert_int_equal(dt, TG_F64);
    assert_non_null(strstr(tg_ctx_error(ctx), ":1:"));
    tg_ctx_free(ctx);
}

/* ---- the summary and the shipped models ---- */

static void test_summary(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const char *text = "[conv2d]\nname = conv1\nout = 8\nkernel = 3\n[batchnorm]\nname = bn\n"
                       "[relu]\n[globalavgpool]\n[linear]\nname = fc\nout = classes\n";
    const int64_t in[3] = {1, 28, 28};
    tg_net_options o = {
        .path = "s.ini", .in_ndim = 3, .in_shape = in, .classes = 10, .check_only = true};
    tg_net *net;
    ok(ctx, tg_net_build(ctx, text, strlen(text), &o, NULL, &net));
    char buf[4096];
    size_t need = tg_net_summary(net, buf, sizeof buf);
    assert_true(need > 100 && need <= sizeof buf);
    assert_int_equal(strlen(buf) + 1, need);
    const char *want[] = {
        "input                        input          (N, 1, 28, 28)                          0\n",
        "conv1                        conv2d         (N, 8, 26, 26)                         80\n",
        "bn                           batchnorm      (N, 8, 26, 26)                         16\n",
        "relu1                        relu           (N, 8, 26, 26)                          0\n",
        "globalavgpool1               globalavgpool  (N, 8)                                  0\n",
        "fc                           linear         (N, 10)                                90\n",
        "Total params: 186\n",
        "Buffers (batch-norm statistics): 17\n"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(buf, want[i]))
            fail_msg("'%s' not in:\n%s", want[i], buf);
    /* A short buffer is cut, still terminated, and says what it needs. */
    char small[16];
    assert_int_equal(tg_net_summary(net, small, sizeof small), need);
    assert_int_equal(strlen(small), sizeof small - 1);
    tg_ctx_free(ctx);
}

static int64_t count_params(const char *name, const int64_t in[3], tg_params *ps, tg_ctx *ctx) {
    const char *text = tg_model_builtin_text(name);
    assert_non_null(text);
    tg_net_options o = {.path = name, .in_ndim = 3, .in_shape = in, .classes = 10, .seed = 1};
    tg_net *net;
    ok(ctx, tg_net_build(ctx, text, strlen(text), &o, ps, &net));
    return tg_params_numel(ps);
}

/* ResNet-20 has 0.27 M parameters (He et al., table 6: 0.27 M), the
 * ResNet-18 of CIFAR 11,173,962 (torchvision's resnet18 with a 3x3 stem and
 * 10 classes); the names are torchvision's. */
static void test_resnets(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const int64_t in[3] = {3, 32, 32};
    tg_params a = {0}, b = {0};
    assert_int_equal(count_params("resnet20", in, &a, ctx), 272474);
    assert_int_equal(count_params("resnet18", in, &b, ctx), 11173962);
    const char *names[] = {"conv1.weight", "layer2.0.downsample.0.weight",
                           "layer2.0.downsample.1.running_var", "layer3.2.bn2.bias", "fc.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        bool found = false;
        for (int j = 0; j < a.nparams + a.nbuffers && !found; j++)
            found =
                !strcmp((j < a.nparams ? a.params[j] : a.buffers[j - a.nparams])->name, names[i]);
        if (!found)
            fail_msg("resnet20 has no tensor %s", names[i]);
    }
    /* 19 convolutions + 2 projections, 21 batch norms, one linear layer. */
    assert_int_equal(a.nparams, 21 + 2 * 21 + 2);
    assert_int_equal(a.nbuffers, 3 * 21);
    tg_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type_checked),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bad_bytes),
        cmocka_unit_test(test_input_dtype),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_resnets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
