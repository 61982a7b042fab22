/*
 * Every op against PyTorch: tests/fixtures/ops.txt (and lnorm.txt, the fused
 * layer norm from tests/gen_fixtures_lnorm.py, and attn.txt, the fused
 * attention from a torch 2 generator, tests/gen_fixtures_attn.py) holds, per case, the
 * inputs, the op's parameters, torch's forward output and torch's gradients of
 * sum(out * W) for a fixed seed W (tests/gen_fixtures.py makes the file and
 * documents its format). Each case runs twice: in f64 against tight
 * tolerances and in f32 (inputs converted) against loose ones, forward and
 * backward, as its own cmocka test so a failure names the case.
 *
 * One more test guards the suite itself: the fixture file must load (a
 * missing file fails rather than skips). The file is read by
 * tests/torch_fixtures_load.h; the ops are applied by name here and in
 * tests/torch_fixtures_ops.h; that every row of ops.def has a case is
 * checked by tests/test_torch_fixture_coverage.c.
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

#include "tapegrad/nn.h"
#include "tapegrad/runtime.h"
#include "torch_fixtures_load.h"

typedef struct fx_run {
    const fx_case *c;
    tg_dtype dt; /* the float dtype this run uses */
    char name[2 * FX_NAME_LEN + 16];
} fx_run;

static tg_ctx *g_ctx;

/* Label of the running case, prefixed to every failure message. */
static char g_label[2 * FX_NAME_LEN + 64];

#define CASE_FAIL(fmt, ...) fail_msg("%s: " fmt, g_label, ##__VA_ARGS__)

/* Per-test host allocations, released by the teardown even when a check
 * fails and longjmps out of the test. */
static void **g_scratch;
static size_t g_nscratch, g_capscratch;

static void *scratch(size_t nbytes) {
    if (g_nscratch == g_capscratch) {
        size_t cap = g_capscratch ? 2 * g_capscratch : 64;
        void **p = realloc(g_scratch, cap * sizeof *p);
        if (!p)
            fail_msg("out of host memory");
        g_scratch = p;
        g_capscratch = cap;
    }
    void *m = calloc(1, nbytes ? nbytes : 1);
    if (!m)
        fail_msg("out of host memory");
    g_scratch[g_nscratch++] = m;
    return m;
}

static void scratch_release(void) {
    for (size_t i = 0; i < g_nscratch; i++)
        free(g_scratch[i]);
    g_nscratch = 0;
}

/* ---- case accessors (fail the running test on a malformed case) ---- */

static const fx_param *find_param(const fx_case *c, const char *key) {
    for (int i = 0; i < c->nparams; i++)
        if (strcmp(c->params[i].key, key) == 0)
            return &c->params[i];
    return NULL;
}

static const fx_param *need_param(const fx_case *c, const char *key) {
    const fx_param *p = find_param(c, key);
    if (!p)
        CASE_FAIL("fixture lacks param '%s'", key);
    return p;
}

static int64_t param_i64(const fx_case *c, const char *key, int idx) {
    const fx_param *p = need_param(c, key);
    int64_t v = 0;
    if (idx >= p->ntok || !parse_i64(p->tok[idx], &v))
        CASE_FAIL("param '%s' has no integer at %d", key, idx);
    return v;
}

static double param_f64(const fx_case *c, const char *key, int idx) {
    const fx_param *p = need_param(c, key);
    double v = 0;
    if (idx >= p->ntok || !parse_f64(p->tok[idx], &v))
        CASE_FAIL("param '%s' has no number at %d", key, idx);
    return v;
}

/* All of an integer-list param; returns the count. */
static int param_ints(const fx_case *c, const char *key, int64_t *out, int max) {
    const fx_param *p = need_param(c, key);
    if (p->ntok > max)
        CASE_FAIL("param '%s' has more than %d values", key, max);
    for (int i = 0; i < p->ntok; i++)
        out[i] = param_i64(c, key, i);
    return p->ntok;
}

static int input_index(const fx_case *c, const char *name) {
    for (int i = 0; i < c->ninputs; i++)
        if (strcmp(c->inputs[i].name, name) == 0)
            return i;
    return -1;
}

static bool fx_is_float(const fx_tensor *t) { return strcmp(t->dtype, "f64") == 0; }

static tg_dtype fx_dtype(const fx_tensor *t, tg_dtype float_dt) {
    if (fx_is_float(t))
        return float_dt;
    if (strcmp(t->dtype, "i64") == 0)
        return TG_I64;
    if (strcmp(t->dtype, "u8") == 0)
        return TG_U8;
    CASE_FAIL("unknown fixture dtype '%s'", t->dtype);
    return TG_F64;
}

/* ---- building and reading tensors ---- */

static tg_tensor *build(tg_ctx *ctx, const fx_tensor *t, tg_dtype dt) {
    size_t n = (size_t)t->numel;
    void *buf = scratch(n * tg_dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case TG_F64:
            ((double *)buf)[i] = t->v[i];
            break;
        case TG_F32:
            ((float *)buf)[i] = (float)t->v[i];
            break;
        case TG_I64:
            ((int64_t *)buf)[i] = (int64_t)t->v[i];
            break;
        case TG_I32:
            ((int32_t *)buf)[i] = (int32_t)t->v[i];
            break;
        case TG_U8:
            ((uint8_t *)buf)[i] = (uint8_t)t->v[i];
            break;
        default:
            CASE_FAIL("cannot build dtype %d", (int)dt);
        }
    }
    tg_tensor *r = tg_from_data(ctx, dt, t->ndim, t->shape, buf);
    if (!r)
        CASE_FAIL("tg_from_data(%s) failed: %s", t->name[0] ? t->name : "seed", tg_ctx_error(ctx));
    return r;
}

static double *read_back(tg_ctx *ctx, const tg_tensor *t, const char *what) {
    int64_t n = tg_numel(t);
    size_t es = tg_dtype_size(t->dtype);
    void *raw = scratch((size_t)n * es);
    double *v = scratch((size_t)(n ? n : 1) * sizeof(double));
    if (n > 0) {
        tg_status s = tg_to_host(ctx, t, raw, (size_t)n * es);
        if (s != TG_OK)
            CASE_FAIL("%s: tg_to_host failed: %s (%s)", what, tg_status_str(s), tg_ctx_error(ctx));
    }
    for (int64_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case TG_F64:
            v[i] = ((double *)raw)[i];
            break;
        case TG_F32:
            v[i] = ((float *)raw)[i];
            break;
        case TG_I64:
            v[i] = (double)((int64_t *)raw)[i];
            break;
        case TG_I32:
            v[i] = ((int32_t *)raw)[i];
            break;
        case TG_U8:
            v[i] = ((uint8_t *)raw)[i];
            break;
        default:
            CASE_FAIL("%s: unexpected dtype %d", what, (int)t->dtype);
        }
    }
    return v;
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t k = (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < ndim && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < len)
        snprintf(buf + k, len - k, ndim == 1 ? ",)" : ")");
}

/*
 * Compares got with the fixture tensor exp: dtype, shape, then values with
 * |got - exp| <= rtol |exp| + atol (integer dtypes: exactly). The inputs
 * keep every term of order 1, so atol bounds the rounding left where terms
 * cancel (softmax and matmul gradients) without loosening large values.
 */
static void check_tensor(tg_ctx *ctx, const char *what, const tg_tensor *got, const fx_tensor *exp,
                         tg_dtype want_dt, double rtol, double atol) {
    char gs[96], es[96];
    if (!got)
        CASE_FAIL("%s: missing (NULL tensor)", what);
    shape_str(got->ndim, got->shape, gs, sizeof gs);
    shape_str(exp->ndim, exp->shape, es, sizeof es);
    if (got->dtype != want_dt)
        CASE_FAIL("%s: dtype %s, expected %s", what, tg_dtype_name(got->dtype),
                  tg_dtype_name(want_dt));
    bool same = got->ndim == exp->ndim;
    for (int d = 0; same && d < exp->ndim; d++)
        same = got->shape[d] == exp->shape[d];
    if (!same)
        CASE_FAIL("%s: shape %s, expected %s", what, gs, es);
    double *v = read_back(ctx, got, what);
    bool exact = !tg_dtype_is_float(want_dt);
    int64_t bad = 0, first = -1;
    double worst = 0;
    for (int64_t i = 0; i < exp->numel; i++) {
        double e = exp->v[i], g = v[i];
        double tol = exact ? 0.0 : rtol * fabs(e) + atol;
        double err = fabs(g - e);
        if (!(err <= tol)) { /* also catches NaN */
            if (first < 0)
                first = i;
            bad++;
            if (err > worst || isnan(err))
                worst = err;
        }
    }
    if (bad == 0)
        return;
    print_error("%s: %s %s: %lld of %lld values off (largest error %.3g; rtol %g, atol %g)\n",
                g_label, what, es, (long long)bad, (long long)exp->numel, worst, rtol, atol);
    int shown = 0;
    for (int64_t i = 0; i < exp->numel && shown < 12; i++) {
        double e = exp->v[i], g = v[i];
        double tol = exact ? 0.0 : rtol * fabs(e) + atol;
        if (!(fabs(g - e) <= tol)) {
            print_error("    [%lld] got %.17g expected %.17g (diff %.3g)\n", (long long)i, g, e,
                        g - e);
            shown++;
        }
    }
    CASE_FAIL("%s mismatch, first at flat index %lld: got %.17g expected %.17g", what,
              (long long)first, v[first], exp->v[first]);
}

/* ---- running one case ---- */

typedef struct operands {
    int n;
    tg_tensor *t[TG_MAX_INPUTS];
    const fx_case *c;
} operands;

static tg_tensor *opnd(const operands *o, const char *name) {
    int i = input_index(o->c, name);
    if (i < 0)
        CASE_FAIL("fixture lacks input '%s'", name);
    return o->t[i];
}

/* The inputs named x0, x1, ... (concat, stack); returns how many. */
static int seq_operands(const operands *o, tg_tensor **ts) {
    int n = 0;
    char name[16];
    for (;;) {
        snprintf(name, sizeof name, "x%d", n);
        int i = input_index(o->c, name);
        if (i < 0)
            break;
        ts[n++] = o->t[i];
    }
    if (n == 0)
        CASE_FAIL("fixture lacks inputs x0, x1, ...");
    return n;
}

static int axes_param(const fx_case *c, int *axes) {
    int64_t v[TG_MAX_DIMS];
    int n = param_ints(c, "axes", v, TG_MAX_DIMS);
    for (int i = 0; i < n; i++)
        axes[i] = (int)v[i];
    return n;
}

static const char *string_param(const fx_case *c, const char *key) {
    const fx_param *p = find_param(c, key);
    return p ? p->rest : "";
}

#include "torch_fixtures_ops.h"

/* Two-int params of the nn.h ops ("stride 2 1"). */
static void pair_param(const fx_case *c, const char *key, int out[2]) {
    out[0] = (int)param_i64(c, key, 0);
    out[1] = (int)param_i64(c, key, 1);
}

/* A (C,) tensor from a list param (running statistics). */
static tg_tensor *list_tensor(tg_ctx *ctx, const fx_case *c, const char *key, tg_dtype dt,
                              int64_t n) {
    fx_tensor t = {.ndim = 1, .shape = {n}, .numel = n};
    strcpy(t.name, key);
    t.v = scratch((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        t.v[i] = param_f64(c, key, (int)i);
    return build(ctx, &t, dt);
}

/* The ops and layers of nn.h; returns false when op is none of them. */
static bool apply_nn(tg_ctx *ctx, const operands *o, tg_tensor **r) {
    const fx_case *c = o->c;
    const char *op = c->op;
    int st[2], pd[2], dl[2], k[2];
    if (strcmp(op, "cross_entropy") == 0) {
        *r = tg_cross_entropy(ctx, opnd(o, "logits"), opnd(o, "targets"),
                              param_f64(c, "smoothing", 0));
    } else if (strcmp(op, "cross_entropy_backward") == 0) {
        *r = tg_cross_entropy_backward(ctx, opnd(o, "g"), opnd(o, "logits"), opnd(o, "targets"),
                                       param_f64(c, "smoothing", 0));
    } else if (strcmp(op, "dropout") == 0) {
        tg_rng rng = tg_rng_make((uint64_t)param_i64(c, "seed", 0),
                                 (uint64_t)param_i64(c, "stream", 0));
        *r = tg_dropout(ctx, opnd(o, "a"), param_f64(c, "p", 0), true, &rng);
    } else if (strncmp(op, "conv2d", 6) == 0) {
        pair_param(c, "stride", st);
        pair_param(c, "pad", pd);
        pair_param(c, "dilation", dl);
        tg_conv2d_opts co = {{st[0], st[1]}, {pd[0], pd[1]}, {dl[0], dl[1]}};
        if (strcmp(op, "conv2d") == 0)
            *r = tg_conv2d(ctx, opnd(o, "x"), opnd(o, "w"),
                           input_index(c, "b") >= 0 ? opnd(o, "b") : NULL, &co);
        else if (strcmp(op, "conv2d_backward_input") == 0)
            *r = tg_conv2d_backward_input(ctx, opnd(o, "g"), opnd(o, "w"), &co,
                                          param_i64(c, "size", 0), param_i64(c, "size", 1));
        else
            *r = tg_conv2d_backward_weight(ctx, opnd(o, "x"), opnd(o, "g"), &co,
                                           param_i64(c, "size", 0), param_i64(c, "size", 1));
    } else if (strstr(op, "pool2d")) {
        pair_param(c, "kernel", k);
        pair_param(c, "stride", st);
        pair_param(c, "pad", pd);
        if (strcmp(op, "max_pool2d") == 0)
            *r = tg_max_pool2d(ctx, opnd(o, "a"), k, st, pd);
        else if (strcmp(op, "max_pool2d_indices") == 0)
            *r = tg_max_pool2d_indices(ctx, opnd(o, "a"), k, st, pd);
        else if (strcmp(op, "max_pool2d_backward") == 0)
            *r = tg_max_pool2d_backward(ctx, opnd(o, "g"), opnd(o, "x"), k, st, pd);
        else if (strcmp(op, "avg_pool2d") == 0)
            *r = tg_avg_pool2d(ctx, opnd(o, "a"), k, st, pd);
        else
            *r = tg_avg_pool2d_backward(ctx, opnd(o, "a"), k, st, pd, param_i64(c, "size", 0),
                                        param_i64(c, "size", 1));
    } else if (strcmp(op, "linear") == 0) {
        tg_linear l = {.weight = opnd(o, "w"),
                       .bias = input_index(c, "b") >= 0 ? opnd(o, "b") : NULL};
        *r = tg_linear_forward(ctx, &l, opnd(o, "x"));
    } else if (strcmp(op, "mse_loss") == 0) {
        *r = tg_mse_loss(ctx, opnd(o, "a"), opnd(o, "b"));
    } else if (strcmp(op, "batchnorm") == 0) {
        tg_tensor *w = opnd(o, "w");
        int64_t ch = w->shape[0];
        tg_batchnorm bn = {.weight = w, .bias = opnd(o, "b"), .eps = 1e-5, .momentum = 0.1};
        bn.running_mean = list_tensor(ctx, c, "running_mean", w->dtype, ch);
        bn.running_var = list_tensor(ctx, c, "running_var", w->dtype, ch);
        bn.num_batches_tracked = tg_zeros(ctx, TG_I64, 0, NULL);
        *r = tg_batchnorm_forward(ctx, &bn, opnd(o, "x"), param_i64(c, "training", 0) != 0);
    } else if (strcmp(op, "batch_norm") == 0) {
        *r = tg_batch_norm(ctx, opnd(o, "x"), opnd(o, "w"), opnd(o, "b"), param_f64(c, "eps", 0),
                           NULL);
    } else if (strcmp(op, "layernorm") == 0) {
        tg_tensor *w = opnd(o, "w");
        tg_layernorm ln = {.weight = w, .bias = opnd(o, "b"), .ndim = w->ndim, .eps = 1e-5};
        *r = tg_layernorm_forward(ctx, &ln, opnd(o, "x"));
    } else if (strcmp(op, "embedding") == 0) {
        tg_embedding e = {.weight = opnd(o, "w")};
        *r = tg_embedding_forward(ctx, &e, opnd(o, "index"));
    } else {
        return false;
    }
    return true;
}

/* Applies the case's op; writes its results to out and returns how many. */
static int apply(tg_ctx *ctx, const operands *o, tg_tensor **out) {
    const fx_case *c = o->c;
    const char *op = c->op;
    tg_tensor *r = NULL;
    int axes[TG_MAX_DIMS];
    int64_t shape[TG_MAX_DIMS];

    if (apply_table(ctx, o, &r) || apply_nn(ctx, o, &r) || apply_ops2(ctx, o, &r)) {
        /* r is checked below */
    } else if (strcmp(op, "where") == 0) {
        r = tg_where(ctx, opnd(o, "cond"), opnd(o, "a"), opnd(o, "b"));
    } else if (strcmp(op, "affine") == 0) {
        r = tg_affine(ctx, opnd(o, "a"), param_f64(c, "scale", 0), param_f64(c, "shift", 0));
    } else if (strcmp(op, "add_scalar") == 0) {
        r = tg_add_scalar(ctx, opnd(o, "a"), param_f64(c, "s", 0));
    } else if (strcmp(op, "mul_scalar") == 0) {
        r = tg_mul_scalar(ctx, opnd(o, "a"), param_f64(c, "s", 0));
    } else if (strcmp(op, "pow_scalar") == 0) {
        r = tg_pow_scalar(ctx, opnd(o, "a"), param_f64(c, "p", 0));
    } else if (strcmp(op, "clamp") == 0) {
        r = tg_clamp(ctx, opnd(o, "a"), param_f64(c, "lo", 0), param_f64(c, "hi", 0));
    } else if (strcmp(op, "relu_backward") == 0) {
        r = tg_relu_backward(ctx, opnd(o, "g"), opnd(o, "x"));
    } else if (strcmp(op, "gelu_backward") == 0) {
        r = tg_gelu_backward(ctx, opnd(o, "g"), opnd(o, "x"));
    } else if (strcmp(op, "clamp_backward") == 0) {
        r = tg_clamp_backward(ctx, opnd(o, "g"), opnd(o, "x"), param_f64(c, "lo", 0),
                              param_f64(c, "hi", 0));
    } else if (strcmp(op, "argmax") == 0) {
        r = tg_argmax(ctx, opnd(o, "a"), (int)param_i64(c, "axis", 0),
                      param_i64(c, "keepdim", 0) != 0);
    } else if (strcmp(op, "sum_to") == 0) {
        int nd = param_ints(c, "shape", shape, TG_MAX_DIMS);
        r = tg_sum_to(ctx, opnd(o, "b"), nd, shape);
    } else if (strcmp(op, "reshape") == 0) {
        int nd = param_ints(c, "shape", shape, TG_MAX_DIMS);
        r = tg_reshape(ctx, opnd(o, "a"), nd, shape);
    } else if (strcmp(op, "permute") == 0) {
        int64_t perm[TG_MAX_DIMS];
        int np = param_ints(c, "perm", perm, TG_MAX_DIMS);
        for (int i = 0; i < np; i++)
            axes[i] = (int)perm[i];
        r = tg_permute(ctx, opnd(o, "a"), axes);
    } else if (strcmp(op, "transpose") == 0) {
        r = tg_transpose(ctx, opnd(o, "a"), (int)param_i64(c, "dims", 0),
                         (int)param_i64(c, "dims", 1));
    } else if (strcmp(op, "broadcast_to") == 0) {
        int nd = param_ints(c, "shape", shape, TG_MAX_DIMS);
        r = tg_broadcast_to(ctx, opnd(o, "a"), nd, shape);
    } else if (strcmp(op, "slice") == 0) {
        r = tg_slice(ctx, opnd(o, "a"), (int)param_i64(c, "axis", 0), param_i64(c, "start", 0),
                     param_i64(c, "stop", 0), param_i64(c, "step", 0));
    } else if (strcmp(op, "slice_scatter") == 0) {
        int nd = param_ints(c, "shape", shape, TG_MAX_DIMS);
        r = tg_slice_scatter(ctx, opnd(o, "src"), nd, shape, (int)param_i64(c, "axis", 0),
                             param_i64(c, "start", 0), param_i64(c, "stop", 0),
                             param_i64(c, "step", 0));
    } else if (strcmp(op, "concat") == 0 || strcmp(op, "stack") == 0) {
        tg_tensor *ts[TG_MAX_INPUTS];
        int n = seq_operands(o, ts);
        int axis = (int)param_i64(c, "axis", 0);
        r = op[0] == 'c' ? tg_concat(ctx, n, ts, axis) : tg_stack(ctx, n, ts, axis);
    } else if (strcmp(op, "batch_norm_backward") == 0) {
        /* The statistics of x from the forward row (zero bias), then the
         * three gradients. */
        tg_tensor *x = opnd(o, "x"), *w = opnd(o, "w"), *st = NULL;
        bool prev = tg_set_grad_enabled(ctx, false);
        tg_tensor *y = tg_batch_norm(ctx, x, w, tg_zeros(ctx, w->dtype, 1, w->shape),
                                     param_f64(c, "eps", 0), &st);
        tg_set_grad_enabled(ctx, prev);
        out[0] = y ? tg_batch_norm_backward(ctx, opnd(o, "g"), x, w, st, &out[1], &out[2]) : NULL;
        if (!out[0])
            CASE_FAIL("batch_norm_backward failed: %s", tg_ctx_error(ctx));
        return 3;
    } else if (strcmp(op, "scaled_dot_product_attention") == 0 ||
               strcmp(op, "attention_composed") == 0) {
        const bool causal = param_i64(c, "causal", 0) != 0;
        r = (op[0] == 's' ? tg_scaled_dot_product_attention : tg_attention_composed)(
            ctx, opnd(o, "q"), opnd(o, "k"), opnd(o, "v"), causal);
    } else if (strcmp(op, "layer_norm") == 0) {
        r = tg_layer_norm(ctx, opnd(o, "x"), (int)param_i64(c, "ndim", 0), opnd(o, "w"),
                          opnd(o, "b"), param_f64(c, "eps", 0));
    } else if (strcmp(op, "layer_norm_backward") == 0) {
        /* the statistics from the forward row (bias 0), then the gradients */
        tg_tensor *x = opnd(o, "x"), *w = opnd(o, "w"), *st = NULL;
        const int nd = (int)param_i64(c, "ndim", 0);
        bool prev = tg_set_grad_enabled(ctx, false);
        tg_tensor *y = tg_layer_norm_stats(ctx, x, nd, w, tg_zeros(ctx, w->dtype, w->ndim, w->shape),
                                           param_f64(c, "eps", 0), &st);
        tg_set_grad_enabled(ctx, prev);
        out[0] = y ? tg_layer_norm_backward(ctx, opnd(o, "g"), x, nd, w, st, &out[1], &out[2])
                   : NULL;
        if (!out[0])
            CASE_FAIL("layer_norm_backward failed: %s", tg_ctx_error(ctx));
        return 3;
    } else if (strcmp(op, "scaled_dot_product_attention_backward") == 0) {
        /* o and lse from the forward row, then the three gradients. */
        tg_tensor *q = opnd(o, "q"), *k = opnd(o, "k"), *v = opnd(o, "v"), *lse = NULL;
        const bool causal = param_i64(c, "causal", 0) != 0;
        bool prev = tg_set_grad_enabled(ctx, false);
        tg_tensor *y = tg_scaled_dot_product_attention_lse(ctx, q, k, v, causal, &lse);
        tg_set_grad_enabled(ctx, prev);
        out[0] = y ? tg_scaled_dot_product_attention_backward(ctx, opnd(o, "g"), q, k, v, y, lse,
                                                              causal, &out[1], &out[2])
                   : NULL;
        if (!out[0])
            CASE_FAIL("scaled_dot_product_attention_backward failed: %s", tg_ctx_error(ctx));
        return 3;
    } else if (strcmp(op, "chunk") == 0) {
        int chunks = (int)param_i64(c, "chunks", 0);
        if (chunks > FX_MAX_OUTPUTS)
            CASE_FAIL("too many chunks for the test");
        int n = tg_chunk(ctx, opnd(o, "a"), chunks, (int)param_i64(c, "axis", 0), out);
        if (n < 0)
            CASE_FAIL("tg_chunk failed: %s", tg_ctx_error(ctx));
        return n;
    } else if (strcmp(op, "rearrange") == 0) {
        r = tg_rearrange(ctx, opnd(o, "a"), string_param(c, "pattern"), string_param(c, "sizes"));
    } else if (strcmp(op, "softmax") == 0) {
        r = tg_softmax(ctx, opnd(o, "a"), (int)param_i64(c, "axis", 0));
    } else if (strcmp(op, "log_softmax") == 0) {
        r = tg_log_softmax(ctx, opnd(o, "a"), (int)param_i64(c, "axis", 0));
    } else if (strcmp(op, "gather") == 0) {
        r = tg_gather(ctx, opnd(o, "a"), (int)param_i64(c, "axis", 0), opnd(o, "index"));
    } else if (strcmp(op, "scatter_add") == 0) {
        int nd = param_ints(c, "shape", shape, TG_MAX_DIMS);
        r = tg_scatter_add(ctx, opnd(o, "src"), (int)param_i64(c, "axis", 0), opnd(o, "index"), nd,
                           shape);
    } else {
        CASE_FAIL("no runner for op '%s'", op);
    }
    if (!r)
        CASE_FAIL("op returned NULL: %s (%s)", tg_ctx_error(ctx),
                  tg_status_str(tg_ctx_status(ctx)));
    out[0] = r;
    return 1;
}

/* Tolerances for the f64 run; erf (and gelu and gelu_backward, built on it)
 * may use a libm erf whose last bits differ from torch's. */
static void tolerances(const fx_case *c, tg_dtype dt, double *rtol, double *atol) {
    if (dt == TG_F32) {
        *rtol = 1e-4;
        *atol = 1e-5;
    } else if (strcmp(c->op, "erf") == 0 || strcmp(c->op, "gelu") == 0 ||
               strcmp(c->op, "gelu_backward") == 0) {
        *rtol = 1e-9;
        *atol = 1e-11;
    } else {
        *rtol = 1e-10;
        *atol = 1e-12;
    }
}

static void run_case(void **state) {
    const fx_run *run = *state;
    const fx_case *c = run->c;
    tg_ctx *ctx = g_ctx;
    tg_dtype dt = run->dt;
    g_run_dt = dt;
    snprintf(g_label, sizeof g_label, "case %s/%s [%s] (%s line %d)", c->op, c->id,
             tg_dtype_name(dt), c->file, c->line);
    assert_non_null(ctx);

    int opi = op_by_name(c->op);
    bool diff = opi < 0 || (tg_op_flags((tg_op)opi) & TG_OPF_DIFF);
    double rtol, atol;
    tolerances(c, dt, &rtol, &atol);

    /* Leaves, then the operands the op sees (a transposed view where the
     * case asks for a strided operand). */
    tg_tensor *leaves[TG_MAX_INPUTS];
    operands o = {.n = c->ninputs, .c = c};
    for (int i = 0; i < c->ninputs; i++) {
        const fx_tensor *in = &c->inputs[i];
        leaves[i] = build(ctx, in, fx_dtype(in, dt));
        leaves[i]->name = in->name;
        if (in->rg) {
            tg_status s = tg_set_requires_grad(ctx, leaves[i], true);
            if (s != TG_OK)
                CASE_FAIL("tg_set_requires_grad(%s): %s", in->name, tg_ctx_error(ctx));
        }
        o.t[i] = leaves[i];
    }
    for (int p = 0; p < c->nparams; p++) {
        const fx_param *pr = &c->params[p];
        if (strcmp(pr->key, "view") != 0)
            continue;
        int64_t d0 = 0, d1 = 0;
        int i = pr->ntok == 3 ? input_index(c, pr->tok[0]) : -1;
        if (i < 0 || !parse_i64(pr->tok[1], &d0) || !parse_i64(pr->tok[2], &d1))
            CASE_FAIL("bad 'view' param");
        o.t[i] = tg_transpose(ctx, leaves[i], (int)d0, (int)d1);
        if (!o.t[i])
            CASE_FAIL("tg_transpose for the strided operand failed: %s", tg_ctx_error(ctx));
    }

    /* Forward. */
    tg_tensor *outs[FX_MAX_OUTPUTS] = {0};
    int nout = apply(ctx, &o, outs);
    if (nout != c->noutputs)
        CASE_FAIL("op gave %d results, expected %d", nout, c->noutputs);
    for (int k = 0; k < nout; k++) {
        char what[32];
        snprintf(what, sizeof what, "output %d", k);
        check_tensor(ctx, what, outs[k], &c->outputs[k], fx_dtype(&c->outputs[k], dt), rtol, atol);
    }
    if (tg_ctx_status(ctx) != TG_OK)
        CASE_FAIL("context holds an error after the forward pass: %s", tg_ctx_error(ctx));

    if (!diff) {
        for (int k = 0; k < nout; k++)
            if (outs[k]->requires_grad)
                CASE_FAIL("output %d of non-differentiable op requires grad", k);
        return;
    }

    /* Backward from sum(out * W): W is the seed of a single output; several
     * outputs are folded into that scalar with the library's own ops. */
    bool any_rg = false;
    for (int i = 0; i < c->ninputs; i++)
        any_rg |= c->inputs[i].rg;
    if (!any_rg)
        return;
    if (c->nseeds != nout)
        CASE_FAIL("fixture has %d seeds for %d outputs", c->nseeds, nout);
    for (int k = 0; k < nout; k++)
        if (!outs[k]->requires_grad)
            CASE_FAIL("output %d does not require grad though an input does", k);
    tg_status s;
    if (nout == 1) {
        tg_tensor *seed = build(ctx, &c->seeds[0], dt);
        s = tg_backward(ctx, outs[0], seed, 0);
    } else {
        tg_tensor *loss = NULL;
        for (int k = 0; k < nout; k++) {
            tg_tensor *seed = build(ctx, &c->seeds[k], dt);
            tg_tensor *term = tg_sum(ctx, tg_mul(ctx, outs[k], seed), 0, NULL, false);
            loss = loss ? tg_add(ctx, loss, term) : term;
        }
        if (!loss)
            CASE_FAIL("building the loss failed: %s", tg_ctx_error(ctx));
        s = tg_backward(ctx, loss, NULL, 0);
    }
    if (s != TG_OK)
        CASE_FAIL("tg_backward: %s (%s)", tg_status_str(s), tg_ctx_error(ctx));

    for (int i = 0; i < c->ninputs; i++) {
        const fx_tensor *in = &c->inputs[i];
        char what[FX_NAME_LEN + 16];
        snprintf(what, sizeof what, "grad of %s", in->name);
        if (!in->rg) {
            if (leaves[i]->grad)
                CASE_FAIL("%s: input does not require grad but got a gradient", what);
            continue;
        }
        const fx_tensor *g = NULL;
        for (int j = 0; j < c->ngrads; j++)
            if (strcmp(c->grads[j].name, in->name) == 0)
                g = &c->grads[j];
        if (!g)
            CASE_FAIL("fixture lacks the %s", what);
        if (!leaves[i]->grad)
            CASE_FAIL("%s: ->grad is NULL after backward", what);
        check_tensor(ctx, what, leaves[i]->grad, g, dt, rtol, atol);
    }
}

static int case_setup(void **state) {
    (void)state;
    if (!g_ctx)
        return -1;
    tg_step_reset(g_ctx);
    tg_ctx_clear_error(g_ctx);
    tg_set_grad_enabled(g_ctx, true);
    g_label[0] = '\0';
    return 0;
}

static int case_teardown(void **state) {
    (void)state;
    scratch_release();
    if (g_ctx)
        tg_step_reset(g_ctx);
    return 0;
}

/* ---- suite check ---- */

/* The fixture file loads; without it no case would run and the program
 * would pass. */
static void test_fixture_file_loads(void **state) {
    (void)state;
    if (g_load_error[0])
        fail_msg("cannot load the PyTorch fixtures (regenerate with python3 "
                 "tests/gen_fixtures.py): %s",
                 g_load_error);
    assert_true(g_ncases > 0);
}

static int group_setup(void **state) {
    (void)state;
    tg_status s = tg_ctx_new(NULL, &g_ctx);
    if (s != TG_OK) {
        print_error("tg_ctx_new: %s (%s)\n", tg_status_str(s), tg_last_init_error());
        g_ctx = NULL;
        return -1;
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    if (g_ctx)
        tg_ctx_free(g_ctx);
    g_ctx = NULL;
    return 0;
}

int main(void) {
    if (load_fixtures(TG_FIXTURE_DIR "/ops.txt") == 0)
        if (load_fixtures(TG_FIXTURE_DIR "/attn.txt") == 0)
            load_fixtures(TG_FIXTURE_DIR "/lnorm.txt");
    static const tg_dtype dts[2] = {TG_F64, TG_F32};
    size_t ntests = 1 + 2 * (size_t)g_ncases;
    struct CMUnitTest *tests = calloc(ntests, sizeof *tests);
    fx_run *runs = calloc(2 * (size_t)g_ncases + 1, sizeof *runs);
    if (!tests || !runs) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    tests[0] = (struct CMUnitTest)cmocka_unit_test(test_fixture_file_loads);
    size_t k = 1;
    for (int d = 0; d < 2; d++) {
        for (int i = 0; i < g_ncases; i++) {
            fx_run *r = &runs[(size_t)d * (size_t)g_ncases + (size_t)i];
            r->c = &g_cases[i];
            r->dt = dts[d];
            snprintf(r->name, sizeof r->name, "%s/%s [%s]", g_cases[i].op, g_cases[i].id,
                     tg_dtype_name(dts[d]));
            tests[k].name = r->name;
            tests[k].test_func = run_case;
            tests[k].setup_func = case_setup;
            tests[k].teardown_func = case_teardown;
            tests[k].initial_state = r;
            k++;
        }
    }
    int failed =
        _cmocka_run_group_tests("torch_fixtures", tests, ntests, group_setup, group_teardown);
    free(tests);
    free(runs);
    free(g_scratch);
    free_cases();
    return failed ? 1 : 0;
}