/*
 * Gradient checks for every row of ops.def.
 *
 * The table below holds one or more cases per op row; each is checked
 * against central finite differences in f64 (gradcheck.h describes the
 * method), its f32 analytic gradient is compared with the f64 one, and the
 * cases marked second_order also have the gradient of their gradient checked
 * (create_graph). Rows without TG_OPF_DIFF get a case that checks their
 * output never requires grad. test_every_op_row_has_a_case walks the op enum,
 * so an op added to ops.def without a case here fails the suite.
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

#include "gradcheck.h"
#include "tapegrad/nn.h"

/* ------------------------------------------------------------------------ */
/* The checker                                                              */
/* ------------------------------------------------------------------------ */

/* splitmix64: a fixed, portable generator so that a failure reproduces. */
typedef struct gc_rng {
    uint64_t s;
} gc_rng;

static uint64_t gc_next(gc_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double gc_unif(gc_rng *r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(gc_next(r) >> 11) * (1.0 / 9007199254740992.0));
}

static int64_t gc_arg_numel(const gc_arg *a) {
    int64_t n = 1;
    for (int d = 0; d < a->ndim; d++)
        n *= a->shape[d];
    return n;
}

static bool gc_arg_diff(const gc_arg *a) { return a->gen <= GC_DISTINCT && !a->nograd; }

static bool gc_arg_float(const gc_arg *a) { return a->gen != GC_INDEX; }

/* Host values of a case's inputs (f64; index inputs keep their pointer). */
typedef struct gc_vals {
    int n;
    int64_t numel[GC_MAX_IN];
    double *v[GC_MAX_IN];
} gc_vals;

static void gc_vals_make(const gc_case *c, uint64_t seed, gc_vals *vs) {
    gc_rng r = {seed};
    memset(vs, 0, sizeof *vs);
    vs->n = c->nin;
    for (int i = 0; i < c->nin; i++) {
        const gc_arg *a = &c->in[i];
        int64_t n = gc_arg_numel(a);
        vs->numel[i] = n;
        if (!gc_arg_float(a))
            continue;
        double *v = calloc((size_t)(n > 0 ? n : 1), sizeof *v);
        assert_non_null(v);
        switch (a->gen) {
        case GC_RAND:
            for (int64_t j = 0; j < n; j++)
                v[j] = gc_unif(&r, -1.0, 1.0);
            break;
        case GC_POS:
            for (int64_t j = 0; j < n; j++)
                v[j] = gc_unif(&r, 0.5, 2.0);
            break;
        case GC_NOKINK:
            for (int64_t j = 0; j < n; j++) {
                double x;
                do {
                    x = gc_unif(&r, -1.0, 1.0);
                } while (fabs(x) < 0.05 || fabs(fabs(x) - 0.5) < 0.05);
                v[j] = x;
            }
            break;
        case GC_DISTINCT:
            /* values -1 + 0.1 k (+ a little noise), shuffled */
            for (int64_t j = 0; j < n; j++)
                v[j] = -1.0 + 0.1 * (double)j + gc_unif(&r, 0.0, 0.02);
            for (int64_t j = n - 1; j > 0; j--) {
                int64_t k = (int64_t)(gc_next(&r) % (uint64_t)(j + 1));
                double t = v[j];
                v[j] = v[k];
                v[k] = t;
            }
            break;
        case GC_DATA:
            memcpy(v, a->data, (size_t)n * sizeof *v);
            break;
        case GC_INDEX:
            break;
        }
        vs->v[i] = v;
    }
}

static void gc_vals_free(gc_vals *vs) {
    for (int i = 0; i < vs->n; i++)
        free(vs->v[i]);
    memset(vs, 0, sizeof *vs);
}

/* Any tensor's elements, row-major, converted to double. */
static tg_status gc_read(tg_ctx *ctx, const tg_tensor *t, double *dst) {
    int64_t n = tg_numel(t);
    size_t es = tg_dtype_size(t->dtype);
    void *tmp = malloc((size_t)(n > 0 ? n : 1) * es);
    if (!tmp)
        return TG_ERR_NOMEM;
    tg_status st = tg_to_host(ctx, t, tmp, (size_t)n * es);
    if (st == TG_OK) {
        for (int64_t i = 0; i < n; i++) {
            switch (t->dtype) {
            case TG_F32:
                dst[i] = ((const float *)tmp)[i];
                break;
            case TG_F64:
                dst[i] = ((const double *)tmp)[i];
                break;
            case TG_U8:
                dst[i] = ((const uint8_t *)tmp)[i];
                break;
            case TG_I32:
                dst[i] = ((const int32_t *)tmp)[i];
                break;
            case TG_I64:
                dst[i] = (double)((const int64_t *)tmp)[i];
                break;
            default:
                st = TG_ERR_DTYPE;
                break;
            }
        }
    }
    free(tmp);
    return st;
}

/* A tensor of dtype dt holding the f64 host values v. */
static tg_tensor *gc_tensor(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape,
                            const double *v, int64_t n) {
    if (dt == TG_F64)
        return tg_from_data(ctx, TG_F64, ndim, shape, v);
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    if (!f)
        return NULL;
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)v[i];
    tg_tensor *t = tg_from_data(ctx, TG_F32, ndim, shape, f);
    free(f);
    return t;
}

static void gc_fail(gc_result *r, const char *fmt, ...) CMOCKA_PRINTF_ATTRIBUTE(2, 3);
static void gc_fail(gc_result *r, const char *fmt, ...) {
    if (!r->ok)
        return;
    r->ok = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
}

static const char *gc_err(tg_ctx *ctx) {
    const char *e = tg_ctx_error(ctx);
    return e ? e : "(no message)";
}

/* Makes the inputs of c from vs; requires_grad on the differentiated ones
 * when rg (and on every float input when all_rg). */
static bool gc_inputs(tg_ctx *ctx, const gc_case *c, const gc_vals *vs, tg_dtype dt, bool rg,
                      bool all_rg, tg_tensor **in, gc_result *r) {
    for (int i = 0; i < c->nin; i++) {
        const gc_arg *a = &c->in[i];
        if (a->gen == GC_INDEX)
            in[i] = tg_from_data(ctx, TG_I64, a->ndim, a->shape, a->idx);
        else
            in[i] = gc_tensor(ctx, dt, a->ndim, a->shape, vs->v[i], vs->numel[i]);
        if (!in[i]) {
            gc_fail(r, "making input %d failed: %s", i, gc_err(ctx));
            return false;
        }
        bool want = gc_arg_float(a) && (all_rg || (rg && gc_arg_diff(a)));
        if (want && tg_set_requires_grad(ctx, in[i], true) != TG_OK) {
            gc_fail(r, "tg_set_requires_grad(input %d) failed: %s", i, gc_err(ctx));
            return false;
        }
    }
    return true;
}

static bool gc_same_shape(const tg_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim)
        return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d])
            return false;
    return true;
}

static void gc_shape_fmt(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "(");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (o < len)
        snprintf(buf + o, len - o, ")");
}

/* Runs the builder and checks the output's shape against the case. */
static tg_tensor *gc_forward(tg_ctx *ctx, const gc_case *c, tg_tensor **in, gc_result *r) {
    tg_tensor *out = c->fn(ctx, in);
    if (!out) {
        gc_fail(r, "forward returned NULL: [%s] %s", tg_status_str(tg_ctx_status(ctx)),
                gc_err(ctx));
        return NULL;
    }
    if (c->check_out && !gc_same_shape(out, c->out_ndim, c->out_shape)) {
        char want[96], got[96];
        gc_shape_fmt(c->out_ndim, c->out_shape, want, sizeof want);
        gc_shape_fmt(out->ndim, out->shape, got, sizeof got);
        gc_fail(r, "output shape %s, expected %s", got, want);
        return NULL;
    }
    return out;
}

static double *gc_random_array(uint64_t seed, int64_t n) {
    gc_rng r = {seed};
    double *w = malloc((size_t)(n > 0 ? n : 1) * sizeof *w);
    assert_non_null(w);
    for (int64_t i = 0; i < n; i++)
        w[i] = gc_unif(&r, -1.0, 1.0);
    return w;
}

/* The output's numel for vs (one forward pass, without grad). */
static int64_t gc_out_numel(tg_ctx *ctx, const gc_case *c, const gc_vals *vs, gc_result *r) {
    tg_tensor *in[GC_MAX_IN];
    tg_step_reset(ctx);
    if (!gc_inputs(ctx, c, vs, TG_F64, false, false, in, r))
        return -1;
    tg_tensor *out = gc_forward(ctx, c, in, r);
    if (!out)
        return -1;
    return tg_numel(out);
}

/* The output values f(x) in double, inputs without requires_grad. */
static bool gc_outputs(tg_ctx *ctx, const gc_case *c, const gc_vals *vs, int64_t n, double *vals,
                       gc_result *r) {
    tg_tensor *in[GC_MAX_IN];
    tg_step_reset(ctx);
    if (!gc_inputs(ctx, c, vs, TG_F64, false, false, in, r))
        return false;
    tg_tensor *out = gc_forward(ctx, c, in, r);
    if (!out)
        return false;
    if (tg_numel(out) != n) {
        gc_fail(r, "output numel %lld changed between passes (was %lld)", (long long)tg_numel(out),
                (long long)n);
        return false;
    }
    if (gc_read(ctx, out, vals) != TG_OK) {
        gc_fail(r, "reading the output failed: %s", gc_err(ctx));
        return false;
    }
    return true;
}

/* Analytic gradients of sum(f(x) * w) in dtype dt: grads[i] (numel of input
 * i) for every differentiated input. */
static bool gc_analytic(tg_ctx *ctx, const gc_case *c, const gc_vals *vs, tg_dtype dt,
                        const double *w, int64_t wn, double **grads, gc_result *r) {
    tg_tensor *in[GC_MAX_IN];
    tg_step_reset(ctx);
    if (!gc_inputs(ctx, c, vs, dt, true, false, in, r))
        return false;
    tg_tensor *out = gc_forward(ctx, c, in, r);
    if (!out)
        return false;
    if (out->dtype != dt) {
        gc_fail(r, "output dtype %s, expected %s", tg_dtype_name(out->dtype), tg_dtype_name(dt));
        return false;
    }
    if (!out->requires_grad) {
        gc_fail(r, "output does not require grad although an input does");
        return false;
    }
    if (tg_numel(out) != wn) {
        gc_fail(r, "output numel %lld changed between passes (was %lld)", (long long)tg_numel(out),
                (long long)wn);
        return false;
    }
    tg_tensor *seed = gc_tensor(ctx, dt, out->ndim, out->shape, w, wn);
    if (!seed) {
        gc_fail(r, "making the seed failed: %s", gc_err(ctx));
        return false;
    }
    tg_status st = tg_backward(ctx, out, seed, 0);
    if (st != TG_OK) {
        gc_fail(r, "tg_backward failed [%s]: %s", tg_status_str(st), gc_err(ctx));
        return false;
    }
    for (int i = 0; i < c->nin; i++) {
        if (!gc_arg_diff(&c->in[i]))
            continue;
        tg_tensor *g = in[i]->grad;
        if (!g) {
            gc_fail(r, "input %d has no gradient after backward", i);
            return false;
        }
        if (!gc_same_shape(g, in[i]->ndim, in[i]->shape)) {
            char want[96], got[96];
            gc_shape_fmt(in[i]->ndim, in[i]->shape, want, sizeof want);
            gc_shape_fmt(g->ndim, g->shape, got, sizeof got);
            gc_fail(r, "input %d: gradient shape %s, expected the input's %s", i, got, want);
            return false;
        }
        if (g->dtype != dt) {
            gc_fail(r, "input %d: gradient dtype %s, expected %s", i, tg_dtype_name(g->dtype),
                    tg_dtype_name(dt));
            return false;
        }
        if (gc_read(ctx, g, grads[i]) != TG_OK) {
            gc_fail(r, "reading the gradient of input %d failed: %s", i, gc_err(ctx));
            return false;
        }
    }
    return true;
}

static bool gc_close(double a, double b, double atol, double rtol) {
    double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= atol + rtol * m;
}

/* Fills vals (the aux's count of them) with the quantity whose weighted
 * sum is being differentiated: f(x) for the first-order check, the
 * gradients for the second-order one. */
typedef bool (*gc_eval_fn)(tg_ctx *ctx, const gc_case *c, const gc_vals *vs, const void *aux,
                           double *vals, gc_result *r);

/* The elements of input i to perturb: all of them, or c->sample of them
 * (always including the first and the last) for the large cases. */
static int64_t gc_pick(const gc_case *c, int i, int64_t numel, int64_t k) {
    if (c->sample <= 0 || numel <= c->sample)
        return k;
    if (k == 0)
        return 0;
    if (k == c->sample - 1)
        return numel - 1;
    gc_rng r = {0x51ull * (uint64_t)(i + 1) + (uint64_t)k * 0x9E37ull};
    return (int64_t)(gc_next(&r) % (uint64_t)numel);
}

/* Central differences over the picked elements of every differentiated
 * input, compared with ana[i]. The numeric derivative is
 * sum_k weights[k] * (vals+[k] - vals-[k]) / (2 eps): differencing before
 * summing keeps the untouched terms exactly zero, so the rounding error
 * of a large sum does not swamp the difference. */
static void gc_compare_numeric(tg_ctx *ctx, const gc_case *c, gc_vals *vs, gc_eval_fn eval,
                               const void *aux, int64_t nvals, const double *weights,
                               double *const *ana, gc_result *r) {
    double *vp = calloc((size_t)(nvals > 0 ? nvals : 1), sizeof *vp);
    double *vm = calloc((size_t)(nvals > 0 ? nvals : 1), sizeof *vm);
    assert_non_null(vp);
    assert_non_null(vm);
    for (int i = 0; i < c->nin && r->ok; i++) {
        if (!gc_arg_diff(&c->in[i]))
            continue;
        int64_t count = c->sample > 0 && vs->numel[i] > c->sample ? c->sample : vs->numel[i];
        for (int64_t k = 0; k < count && r->ok; k++) {
            int64_t j = gc_pick(c, i, vs->numel[i], k);
            double x0 = vs->v[i][j];
            vs->v[i][j] = x0 + GC_EPS;
            bool ok = eval(ctx, c, vs, aux, vp, r);
            vs->v[i][j] = x0 - GC_EPS;
            ok = ok && eval(ctx, c, vs, aux, vm, r);
            vs->v[i][j] = x0;
            if (!ok)
                break;
            double num = 0;
            for (int64_t q = 0; q < nvals; q++)
                num += weights[q] * (vp[q] - vm[q]);
            num /= 2 * GC_EPS;
            double err = fabs(num - ana[i][j]);
            if (err > r->max_abs_err)
                r->max_abs_err = err;
            if (!gc_close(ana[i][j], num, GC_ATOL, GC_RTOL))
                gc_fail(r, "input %d element %lld (value %.6g): analytic %.12g, numeric %.12g", i,
                        (long long)j, x0, ana[i][j], num);
        }
    }
    free(vp);
    free(vm);
}

static bool gc_eval_first(tg_ctx *ctx, const gc_case *c, const gc_vals *vs, const void *aux,
                          double *vals, gc_result *r) {
    return gc_outputs(ctx, c, vs, *(const int64_t *)aux, vals, r);
}

static tg_ctx *gc_ctx(gc_result *r) {
    tg_ctx *ctx = NULL;
    tg_status st = tg_ctx_new(NULL, &ctx);
    if (st != TG_OK || !ctx) {
        gc_fail(r, "tg_ctx_new failed [%s]: %s", tg_status_str(st), tg_last_init_error());
        return NULL;
    }
    return ctx;
}

static void gc_grads_alloc(const gc_case *c, const gc_vals *vs, double **g) {
    for (int i = 0; i < GC_MAX_IN; i++)
        g[i] = NULL;
    for (int i = 0; i < c->nin; i++) {
        g[i] = calloc((size_t)(vs->numel[i] > 0 ? vs->numel[i] : 1), sizeof(double));
        assert_non_null(g[i]);
    }
}

static void gc_grads_free(double **g) {
    for (int i = 0; i < GC_MAX_IN; i++) {
        free(g[i]);
        g[i] = NULL;
    }
}

gc_result gc_check(const gc_case *c, uint64_t seed) {
    gc_result r = {.ok = true};
    gc_vals vs;
    double *ana[GC_MAX_IN];
    tg_ctx *ctx = gc_ctx(&r);
    if (!ctx)
        return r;
    gc_vals_make(c, seed, &vs);
    gc_grads_alloc(c, &vs, ana);
    double *w = NULL;
    int64_t wn = gc_out_numel(ctx, c, &vs, &r);
    if (wn >= 0) {
        w = gc_random_array(seed ^ 0x5eedull, wn);
        if (gc_analytic(ctx, c, &vs, TG_F64, w, wn, ana, &r))
            gc_compare_numeric(ctx, c, &vs, gc_eval_first, &wn, wn, w, ana, &r);
    }
    free(w);
    gc_grads_free(ana);
    gc_vals_free(&vs);
    tg_ctx_free(ctx);
    return r;
}

gc_result gc_check_f32(const gc_case *c, uint64_t seed) {
    gc_result r = {.ok = true};
    gc_vals vs;
    double *g64[GC_MAX_IN], *g32[GC_MAX_IN];
    tg_ctx *ctx = gc_ctx(&r);
    if (!ctx)
        return r;
    gc_vals_make(c, seed, &vs);
    gc_grads_alloc(c, &vs, g64);
    gc_grads_alloc(c, &vs, g32);
    double *w = NULL;
    int64_t wn = gc_out_numel(ctx, c, &vs, &r);
    if (wn >= 0) {
        w = gc_random_array(seed ^ 0x5eedull, wn);
        if (gc_analytic(ctx, c, &vs, TG_F64, w, wn, g64, &r) &&
            gc_analytic(ctx, c, &vs, TG_F32, w, wn, g32, &r)) {
            for (int i = 0; i < c->nin && r.ok; i++) {
                if (!gc_arg_diff(&c->in[i]))
                    continue;
                for (int64_t j = 0; j < vs.numel[i] && r.ok; j++)
                    if (!gc_close(g32[i][j], g64[i][j], 1e-4, 1e-3))
                        gc_fail(&r, "input %d element %lld: f32 gradient %.8g, f64 gradient %.8g",
                                i, (long long)j, g32[i][j], g64[i][j]);
            }
        }
    }
    free(w);
    gc_grads_free(g64);
    gc_grads_free(g32);
    gc_vals_free(&vs);
    tg_ctx_free(ctx);
    return r;
}

/* ---- second order ---- */

typedef struct gc_second_aux {
    const double *w;
    int64_t wn;
    /* V_i for every differentiated input (NULL for the others), and all of
     * them end to end: the weights of the numeric pass */
    double *v[GC_MAX_IN];
    double *vcat;
    int64_t nv;
} gc_second_aux;

/* g = d sum(f(x) * w) / dx for the differentiated inputs, made with flags.
 * Returns the inputs, their index, and the gradients (NULL entries where
 * tg_grad gave none). */
static int gc_second_grads(tg_ctx *ctx, const gc_case *c, const gc_vals *vs,
                           const gc_second_aux *sa, unsigned flags, tg_tensor **in, int *idx,
                           tg_tensor **g, gc_result *r) {
    tg_tensor *dins[GC_MAX_IN];
    int nd = 0;
    tg_step_reset(ctx);
    if (!gc_inputs(ctx, c, vs, TG_F64, true, false, in, r))
        return -1;
    tg_tensor *out = gc_forward(ctx, c, in, r);
    if (!out)
        return -1;
    if (tg_numel(out) != sa->wn) {
        gc_fail(r, "output numel %lld changed between passes (was %lld)", (long long)tg_numel(out),
                (long long)sa->wn);
        return -1;
    }
    tg_tensor *seed = tg_from_data(ctx, TG_F64, out->ndim, out->shape, sa->w);
    if (!seed) {
        gc_fail(r, "making the seed failed: %s", gc_err(ctx));
        return -1;
    }
    for (int i = 0; i < c->nin; i++) {
        if (gc_arg_diff(&c->in[i])) {
            idx[nd] = i;
            dins[nd++] = in[i];
        }
    }
    tg_status st = tg_grad(ctx, out, seed, nd, dins, g, flags);
    if (st != TG_OK) {
        gc_fail(r, "tg_grad(%s) failed [%s]: %s", flags & TG_CREATE_GRAPH ? "TG_CREATE_GRAPH" : "0",
                tg_status_str(st), gc_err(ctx));
        return -1;
    }
    for (int k = 0; k < nd; k++) {
        int i = idx[k];
        if (g[k] && !gc_same_shape(g[k], in[i]->ndim, in[i]->shape)) {
            gc_fail(r, "gradient of input %d from tg_grad has the wrong shape", i);
            return -1;
        }
    }
    return nd;
}

/* The numeric pass: the gradients themselves, end to end (zeros where
 * tg_grad gave none), so that h = sum(vals * vcat). */
static bool gc_eval_second(tg_ctx *ctx, const gc_case *c, const gc_vals *vs, const void *aux,
                           double *vals, gc_result *r) {
    const gc_second_aux *sa = aux;
    tg_tensor *in[GC_MAX_IN], *g[GC_MAX_IN];
    int idx[GC_MAX_IN];
    int nd = gc_second_grads(ctx, c, vs, sa, 0, in, idx, g, r);
    if (nd < 0)
        return false;
    int64_t o = 0;
    for (int k = 0; k < nd; k++) {
        int64_t n = vs->numel[idx[k]];
        if (!g[k])
            memset(vals + o, 0, (size_t)n * sizeof *vals);
        else if (gc_read(ctx, g[k], vals + o) != TG_OK) {
            gc_fail(r, "reading the gradient of input %d failed: %s", idx[k], gc_err(ctx));
            return false;
        }
        o += n;
    }
    return true;
}

/* The analytic pass: h = sum_k sum(g_k * V_k) built as a tensor from
 * gradients made with TG_CREATE_GRAPH, then tg_backward(h). */
static bool gc_second_analytic(tg_ctx *ctx, const gc_case *c, const gc_vals *vs,
                               const gc_second_aux *sa, double **ana, gc_result *r) {
    tg_tensor *in[GC_MAX_IN], *g[GC_MAX_IN];
    int idx[GC_MAX_IN];
    int nd = gc_second_grads(ctx, c, vs, sa, TG_CREATE_GRAPH, in, idx, g, r);
    if (nd < 0)
        return false;
    tg_tensor *ht = NULL;
    for (int k = 0; k < nd; k++) {
        int i = idx[k];
        if (!g[k])
            continue;
        tg_tensor *vt = tg_from_data(ctx, TG_F64, in[i]->ndim, in[i]->shape, sa->v[i]);
        tg_tensor *term = tg_sum(ctx, tg_mul(ctx, g[k], vt), 0, NULL, false);
        ht = ht ? tg_add(ctx, ht, term) : term;
        if (!ht) {
            gc_fail(r, "building h failed: %s", gc_err(ctx));
            return false;
        }
    }
    if (!ht) {
        gc_fail(r, "tg_grad returned no gradient for any input");
        return false;
    }
    if (!ht->requires_grad) {
        gc_fail(r, "the gradient made with TG_CREATE_GRAPH does not require grad");
        return false;
    }
    tg_status st = tg_backward(ctx, ht, NULL, 0);
    if (st != TG_OK) {
        gc_fail(r, "tg_backward of the gradient failed [%s]: %s", tg_status_str(st), gc_err(ctx));
        return false;
    }
    for (int k = 0; k < nd; k++) {
        int i = idx[k];
        tg_tensor *gg = in[i]->grad;
        if (!gg) {
            /* h does not depend on this input: its derivative is zero */
            memset(ana[i], 0, (size_t)vs->numel[i] * sizeof(double));
            continue;
        }
        if (!gc_same_shape(gg, in[i]->ndim, in[i]->shape) || gc_read(ctx, gg, ana[i]) != TG_OK) {
            gc_fail(r, "second-order gradient of input %d has the wrong shape or cannot be read",
                    i);
            return false;
        }
    }
    return true;
}

gc_result gc_check2(const gc_case *c, uint64_t seed) {
    gc_result r = {.ok = true};
    gc_vals vs;
    double *ana[GC_MAX_IN];
    tg_ctx *ctx = gc_ctx(&r);
    if (!ctx)
        return r;
    gc_vals_make(c, seed, &vs);
    gc_grads_alloc(c, &vs, ana);
    gc_second_aux sa = {0};
    int64_t wn = gc_out_numel(ctx, c, &vs, &r);
    if (wn >= 0) {
        sa.w = gc_random_array(seed ^ 0x5eedull, wn);
        sa.wn = wn;
        for (int i = 0; i < c->nin; i++)
            if (gc_arg_diff(&c->in[i]))
                sa.nv += vs.numel[i];
        sa.vcat = calloc((size_t)(sa.nv > 0 ? sa.nv : 1), sizeof *sa.vcat);
        assert_non_null(sa.vcat);
        int64_t o = 0;
        for (int i = 0; i < c->nin; i++) {
            if (!gc_arg_diff(&c->in[i]))
                continue;
            sa.v[i] = gc_random_array(seed ^ (0xabcull + (uint64_t)i), vs.numel[i]);
            memcpy(sa.vcat + o, sa.v[i], (size_t)vs.numel[i] * sizeof(double));
            o += vs.numel[i];
        }
        if (gc_second_analytic(ctx, c, &vs, &sa, ana, &r))
            gc_compare_numeric(ctx, c, &vs, gc_eval_second, &sa, sa.nv, sa.vcat, ana, &r);
    }
    free((void *)sa.w);
    free(sa.vcat);
    for (int i = 0; i < GC_MAX_IN; i++)
        free(sa.v[i]);
    gc_grads_free(ana);
    gc_vals_free(&vs);
    tg_ctx_free(ctx);
    return r;
}

gc_result gc_check_nodiff(const gc_case *c, uint64_t seed) {
    gc_result r = {.ok = true};
    gc_vals vs;
    tg_tensor *in[GC_MAX_IN];
    tg_ctx *ctx = gc_ctx(&r);
    if (!ctx)
        return r;
    gc_vals_make(c, seed, &vs);
    double *buf = NULL, *gbuf = NULL;
    /* every float input requires grad: the op must still cut the graph */
    if (!gc_inputs(ctx, c, &vs, TG_F64, true, true, in, &r))
        goto done;
    tg_tensor *out = gc_forward(ctx, c, in, &r);
    if (!out)
        goto done;
    if (out->requires_grad) {
        gc_fail(&r, "output of a non-differentiable op requires grad");
        goto done;
    }
    int64_t n = tg_numel(out);
    buf = calloc((size_t)(n > 0 ? n : 1), sizeof *buf);
    assert_non_null(buf);
    if (gc_read(ctx, out, buf) != TG_OK) {
        gc_fail(&r, "reading the output failed: %s", gc_err(ctx));
        goto done;
    }
    if (c->expect) {
        for (int64_t i = 0; i < n; i++)
            if (buf[i] != c->expect[i]) {
                gc_fail(&r, "output element %lld is %g, expected %g", (long long)i, buf[i],
                        c->expect[i]);
                goto done;
            }
    }
    /* Used downstream, the output acts as a constant: the gradient of
     * sum(out * x) with respect to x is out itself. */
    if (tg_dtype_is_float(out->dtype) && gc_arg_float(&c->in[0]) &&
        gc_same_shape(out, in[0]->ndim, in[0]->shape)) {
        tg_tensor *l = tg_sum(ctx, tg_mul(ctx, out, in[0]), 0, NULL, false);
        if (!l) {
            gc_fail(&r, "sum(out * x) failed: %s", gc_err(ctx));
            goto done;
        }
        tg_status st = tg_backward(ctx, l, NULL, 0);
        if (st != TG_OK) {
            gc_fail(&r, "backward through sum(out * x) failed [%s]: %s", tg_status_str(st),
                    gc_err(ctx));
            goto done;
        }
        if (!in[0]->grad) {
            gc_fail(&r, "x has no gradient after backward of sum(out * x)");
            goto done;
        }
        gbuf = calloc((size_t)(n > 0 ? n : 1), sizeof *gbuf);
        assert_non_null(gbuf);
        if (gc_read(ctx, in[0]->grad, gbuf) != TG_OK) {
            gc_fail(&r, "reading x's gradient failed: %s", gc_err(ctx));
            goto done;
        }
        for (int64_t i = 0; i < n; i++)
            if (fabs(gbuf[i] - buf[i]) > 1e-12) {
                gc_fail(&r, "d sum(out * x)/dx element %lld is %g, expected out = %g", (long long)i,
                        gbuf[i], buf[i]);
                goto done;
            }
    }
done:
    free(buf);
    free(gbuf);
    gc_vals_free(&vs);
    tg_ctx_free(ctx);
    return r;
}

#include "gradcheck_table.h"


/* ------------------------------------------------------------------------ */
/* Tests                                                                    */
/* ------------------------------------------------------------------------ */

static uint64_t case_seed(const gc_case *c) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = c->name; *p; p++)
        h = (h ^ (uint64_t)(unsigned char)*p) * 1099511628211ull;
    return h;
}

static void test_case_first_order(void **state) {
    const gc_case *c = *state;
    gc_result r;
    if (c->mode == GC_NODIFF) {
        r = gc_check_nodiff(c, case_seed(c));
        if (!r.ok)
            fail_msg("%s: %s", c->name, r.msg);
        return;
    }
    r = gc_check(c, case_seed(c));
    if (!r.ok)
        fail_msg("%s (f64 vs finite differences): %s", c->name, r.msg);
    r = gc_check_f32(c, case_seed(c));
    if (!r.ok)
        fail_msg("%s (f32 vs f64): %s", c->name, r.msg);
}

static void test_case_second_order(void **state) {
    const gc_case *c = *state;
    gc_result r = gc_check2(c, case_seed(c));
    if (!r.ok)
        fail_msg("%s (second order): %s", c->name, r.msg);
}

/* Every op row needs a case: a new op without a gradient check fails here.
 * A case's mode must also match its row's flags, so that a row that gains
 * or loses TG_OPF_DIFF gets its case revisited. */
static void test_every_op_row_has_a_case(void **state) {
    (void)state;
    int missing = 0, mismatched = 0;
    for (int op = 0; op < (int)TG_OP_COUNT; op++) {
        int n = 0;
        for (size_t i = 0; i < GC_NCASES; i++)
            if (gc_table[i].op == op)
                n++;
        if (n == 0) {
            print_error("op row %d (%s) has no gradcheck case\n", op, tg_op_name((tg_op)op));
            missing++;
        }
    }
    for (size_t i = 0; i < GC_NCASES; i++) {
        const gc_case *c = &gc_table[i];
        if (c->op == GC_COMPOSITE)
            continue;
        bool diff = (tg_op_flags((tg_op)c->op) & TG_OPF_DIFF) != 0;
        if (diff != (c->mode == GC_GRAD)) {
            print_error("case '%s': row %s is %sdifferentiable but the case is a %s case\n",
                        c->name, tg_op_name((tg_op)c->op), diff ? "" : "not ",
                        c->mode == GC_GRAD ? "gradient" : "non-differentiable");
            mismatched++;
        }
    }
    assert_int_equal(missing, 0);
    assert_int_equal(mismatched, 0);
}

/* The checker itself must catch a wrong gradient; otherwise a table full of
 * passes means nothing. A builder whose forward and backward disagree is
 * made by differentiating through a value changed behind autograd's back:
 * f(x) = x * c where c is a copy of x taken under no-grad, so the analytic
 * gradient is c (x's value) but the true derivative is 2x. */
static tg_tensor *b_detached_square(tg_ctx *ctx, tg_tensor *const *in) {
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *c = tg_copy(ctx, X);
    tg_set_grad_enabled(ctx, prev);
    return tg_mul(ctx, X, c);
}

static void test_checker_catches_a_wrong_gradient(void **state) {
    (void)state;
    const gc_case c = {.name = "detached square",
                       .op = GC_COMPOSITE,
                       .mode = GC_GRAD,
                       .fn = b_detached_square,
                       .nin = 1,
                       .in = {GC_IN(GC_POS, 1, 3)}};
    gc_result r = gc_check(&c, 42);
    assert_false(r.ok);
    assert_non_null(strstr(r.msg, "analytic"));
}

int main(void) {
    size_t n2 = 0;
    for (size_t i = 0; i < GC_NCASES; i++)
        if (gc_table[i].second_order)
            n2++;
    size_t ntests = 2 + GC_NCASES + n2, k = 0;
    struct CMUnitTest *tests = calloc(ntests, sizeof *tests);
    char **names = calloc(ntests, sizeof *names);
    if (!tests || !names)
        return 1;
    tests[k++] = (struct CMUnitTest){.name = "every op row has a case",
                                     .test_func = test_every_op_row_has_a_case};
    tests[k++] = (struct CMUnitTest){.name = "checker catches a wrong gradient",
                                     .test_func = test_checker_catches_a_wrong_gradient};
    for (size_t i = 0; i < GC_NCASES; i++) {
        const gc_case *c = &gc_table[i];
        const char *row = c->op == GC_COMPOSITE ? "composite" : tg_op_name((tg_op)c->op);
        size_t len = strlen(c->name) + strlen(row ? row : "?") + 16;
        names[k] = malloc(len);
        if (!names[k])
            return 1;
        snprintf(names[k], len, "%s: %s", row ? row : "?", c->name);
        tests[k] = (struct CMUnitTest){
            .name = names[k], .test_func = test_case_first_order, .initial_state = (void *)c};
        k++;
    }
    for (size_t i = 0; i < GC_NCASES; i++) {
        const gc_case *c = &gc_table[i];
        if (!c->second_order)
            continue;
        size_t len = strlen(c->name) + 32;
        names[k] = malloc(len);
        if (!names[k])
            return 1;
        snprintf(names[k], len, "second order: %s", c->name);
        tests[k] = (struct CMUnitTest){
            .name = names[k], .test_func = test_case_second_order, .initial_state = (void *)c};
        k++;
    }
    int rc = _cmocka_run_group_tests("gradcheck", tests, k, NULL, NULL);
    for (size_t i = 0; i < ntests; i++)
        free(names[i]);
    free(names);
    free(tests);
    return rc;
}
