/*
 * tests/test_cuda_backend.c: every op row on the CUDA backend against the
 * CPU backend, forward and backward.
 *
 * Each case of the table builds one op (through the public API, so the
 * runtime's shape logic and backward rules are the ones a user runs) from
 * fresh random inputs: several shapes, broadcasting, size-1 dims and
 * non-contiguous views (transposes and strided slices made inside the
 * builder). The same host values go to a CPU context and a CUDA context, in
 * f32 and in f64; the outputs must agree within the case's tolerance, and so
 * must the gradients that tg_backward computes on both for a random seed
 * gradient W. Every kernel call on both contexts, forward and backward, goes
 * through a wrapper that gives the kernel an output buffer with guard bytes
 * on both sides and checks that they are untouched.
 *
 * Structural checks run on every machine: each ops.def row has a case here,
 * and the CUDA kernel table (when the library has one) names a kernel for
 * every row that is not a view. Without a CUDA device the numerical part
 * cannot run: the test says "no CUDA device: skipped" and exits 77, which
 * ctest reports as skipped.
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

#include "core/internal.h"
#include "tapegrad/nn.h"
#include "tapegrad/optim.h"
#include "tapegrad/rng.h"
#include "tapegrad/runtime.h"

#include "cuda_backend_cases.h"

/* ---- values ---- */

/* splitmix64, so that a failure reproduces from its seed. */
static uint64_t cb_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double cb_unif(uint64_t *s, double lo, double hi) {
    return lo + (hi - lo) * ((double)(cb_next(s) >> 11) * (1.0 / 9007199254740992.0));
}

static int64_t cb_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

static double cb_value(cb_gen g, uint64_t *s) {
    switch (g) {
    case CB_POS:
        return cb_unif(s, 0.5, 2.0);
    case CB_NOKINK: {
        double v;
        do
            v = cb_unif(s, -1.0, 1.0);
        while (fabs(v) < 0.05 || fabs(fabs(v) - 0.5) < 0.05);
        return v;
    }
    case CB_SMALLINT:
        return (double)(cb_next(s) % 3);
    case CB_COND:
        return (double)(cb_next(s) & 1);
    default:
        return cb_unif(s, -1.0, 1.0);
    }
}

/* Host values of one case's inputs, as doubles (indices kept as given). */
typedef struct cb_vals {
    double *v[CB_MAX_IN];
    int64_t n[CB_MAX_IN];
} cb_vals;

static void cb_vals_make(const cb_case *c, uint64_t seed, cb_vals *vs) {
    uint64_t s = seed;
    for (int i = 0; i < c->nin; i++) {
        vs->n[i] = cb_numel(c->in[i].ndim, c->in[i].shape);
        vs->v[i] = calloc((size_t)vs->n[i] + 1, sizeof(double));
        assert_non_null(vs->v[i]);
        for (int64_t k = 0; k < vs->n[i]; k++)
            vs->v[i][k] =
                c->in[i].gen == CB_INDEX ? (double)c->in[i].idx[k] : cb_value(c->in[i].gen, &s);
    }
}

static void cb_vals_free(const cb_case *c, cb_vals *vs) {
    for (int i = 0; i < c->nin; i++)
        free(vs->v[i]);
}

static bool cb_is_int(cb_gen g) { return g == CB_INDEX || g == CB_COND; }

/* A tensor of dtype dt (i64 for index and condition inputs) with values v. */
static tg_tensor *cb_tensor(tg_ctx *ctx, tg_dtype dt, const cb_arg *a, const double *v) {
    const int64_t n = cb_numel(a->ndim, a->shape);
    const tg_dtype t = cb_is_int(a->gen) ? TG_I64 : dt;
    void *buf = calloc((size_t)n + 1, 8);
    assert_non_null(buf);
    for (int64_t k = 0; k < n; k++) {
        if (t == TG_F32)
            ((float *)buf)[k] = (float)v[k];
        else if (t == TG_F64)
            ((double *)buf)[k] = v[k];
        else
            ((int64_t *)buf)[k] = (int64_t)v[k];
    }
    tg_tensor *x = tg_from_data(ctx, t, a->ndim, a->shape, buf);
    free(buf);
    return x;
}

/* Reads any tensor (views included) as doubles; n elements. */
static bool cb_read(tg_ctx *ctx, const tg_tensor *t, double *out) {
    const int64_t n = tg_numel(t);
    const size_t es = tg_dtype_size(t->dtype);
    void *buf = malloc((size_t)n * es + 8);
    assert_non_null(buf);
    bool ok = tg_to_host(ctx, t, buf, (size_t)n * es) == TG_OK;
    for (int64_t k = 0; ok && k < n; k++) {
        switch (t->dtype) {
        case TG_F32:
            out[k] = ((float *)buf)[k];
            break;
        case TG_F64:
            out[k] = ((double *)buf)[k];
            break;
        case TG_I64:
            out[k] = (double)((int64_t *)buf)[k];
            break;
        case TG_I32:
            out[k] = ((int32_t *)buf)[k];
            break;
        default:
            out[k] = ((uint8_t *)buf)[k];
            break;
        }
    }
    free(buf);
    return ok;
}

/* ---- running one case on one context ---- */

/* What one context produced for a case. */
typedef struct cb_run {
    int64_t nout;
    int out_ndim;
    int64_t out_shape[TG_MAX_DIMS];
    tg_dtype out_dtype;
    double *out;
    double *grad[CB_MAX_IN]; /* NULL for inputs without a gradient */
} cb_run;

static void cb_run_free(cb_run *r) {
    free(r->out);
    for (int i = 0; i < CB_MAX_IN; i++)
        free(r->grad[i]);
    memset(r, 0, sizeof *r);
}

static bool cb_close(double x, double y, double tol) {
    if (isnan(x) || isnan(y))
        return isnan(x) && isnan(y);
    return fabs(x - y) <= tol + tol * fabs(y);
}

/*
 * Guard bytes: every kernel call of a context goes through cb_guarded_call,
 * which hands the kernel a device buffer with CB_GUARD bytes of a known
 * pattern on both sides of the output, checks the pattern afterwards and
 * copies the result to the real output. So every kernel run during a case,
 * forward and backward, is checked for writes outside its output.
 */
#define CB_GUARD 256
#define CB_GUARD_BYTE 0xA5

typedef struct cb_guard {
    const tg_backend *real;
    tg_backend wrapped;
    int64_t calls;
    int failures;
    char msg[256];
} cb_guard;

static cb_guard cb_guards[TG_DEVICE_COUNT];

static tg_status cb_guarded_call(cb_guard *g, void *state, const tg_kargs *a) {
    const tg_backend *be = g->real;
    const size_t nbytes = (size_t)cb_numel(a->out.ndim, a->out.shape) * tg_dtype_size(a->out.dtype);
    const size_t total = CB_GUARD + nbytes + CB_GUARD;
    unsigned char *host = malloc(total);
    char *dev = be->alloc(state, total);
    if (!host || !dev) {
        free(host);
        if (dev)
            be->free(state, dev);
        return TG_ERR_NOMEM;
    }
    memset(host, CB_GUARD_BYTE, total);
    tg_status st = be->copy_h2d(state, dev, host, total);
    tg_kargs b = *a;
    b.out.data = dev + CB_GUARD;
    if (st == TG_OK)
        st = be->kernels[a->op](state, &b);
    if (st == TG_OK)
        st = be->synchronize(state);
    if (st == TG_OK)
        st = be->copy_d2h(state, host, dev, total);
    if (st == TG_OK && nbytes)
        st = be->copy_d2d(state, a->out.data, dev + CB_GUARD, nbytes);
    g->calls++;
    for (size_t i = 0; st == TG_OK && i < CB_GUARD; i++) {
        if (host[i] != CB_GUARD_BYTE || host[CB_GUARD + nbytes + i] != CB_GUARD_BYTE) {
            if (g->failures++ == 0)
                snprintf(g->msg, sizeof g->msg, "%s kernel %s wrote %s its output (guard byte %zu)",
                         be->name, tg_op_name(a->op), host[i] != CB_GUARD_BYTE ? "before" : "after",
                         i);
            break;
        }
    }
    be->free(state, dev);
    free(host);
    return st;
}

static tg_status cb_guarded_cpu(void *state, const tg_kargs *a) {
    return cb_guarded_call(&cb_guards[TG_DEVICE_CPU], state, a);
}

static tg_status cb_guarded_cuda(void *state, const tg_kargs *a) {
    return cb_guarded_call(&cb_guards[TG_DEVICE_CUDA], state, a);
}

/* Routes every kernel of ctx through the guard; NULL rows stay NULL. */
static void cb_guard_install(tg_ctx *ctx) {
    cb_guard *g = &cb_guards[ctx->be->device];
    g->real = ctx->be;
    g->wrapped = *ctx->be;
    for (int op = 0; op < TG_OP_COUNT; op++) {
        if (g->wrapped.kernels[op])
            g->wrapped.kernels[op] =
                ctx->be->device == TG_DEVICE_CUDA ? cb_guarded_cuda : cb_guarded_cpu;
    }
    ctx->be = &g->wrapped;
}

static void cb_execute(tg_ctx *ctx, const cb_case *c, const cb_vals *vs, tg_dtype dt, uint64_t seed,
                       cb_run *r) {
    tg_tensor *in[CB_MAX_IN] = {0};
    const bool diff = (tg_op_flags((tg_op)c->op) & TG_OPF_DIFF) != 0;
    for (int i = 0; i < c->nin; i++) {
        in[i] = cb_tensor(ctx, dt, &c->in[i], vs->v[i]);
        if (!in[i])
            fail_msg("%s: making input %d: %s", c->name, i, tg_ctx_error(ctx));
        if (diff && !cb_is_int(c->in[i].gen) && c->in[i].gen != CB_SMALLINT)
            assert_int_equal(tg_set_requires_grad(ctx, in[i], true), TG_OK);
    }
    tg_tensor *out = c->fn(ctx, in);
    if (!out)
        fail_msg("%s (%s, %s): %s", c->name, tg_dtype_name(dt), ctx->be->name, tg_ctx_error(ctx));
    r->nout = tg_numel(out);
    r->out_ndim = out->ndim;
    memcpy(r->out_shape, out->shape, sizeof r->out_shape);
    r->out_dtype = out->dtype;
    r->out = calloc((size_t)r->nout + 1, sizeof(double));
    assert_non_null(r->out);
    if (!cb_read(ctx, out, r->out))
        fail_msg("%s: reading the output: %s", c->name, tg_ctx_error(ctx));
    /* A row without a backward rule never makes an output that needs one. */
    if (!diff)
        assert_false(out->requires_grad);
    if (!diff || !out->requires_grad || r->nout == 0)
        return;
    /* The seed gradient W: the same values on both contexts. */
    double *w = malloc((size_t)r->nout * sizeof(double));
    assert_non_null(w);
    uint64_t s = seed ^ 0x5EEDull;
    for (int64_t k = 0; k < r->nout; k++)
        w[k] = cb_unif(&s, -1.0, 1.0);
    cb_arg wa = {.gen = CB_RAND, .ndim = out->ndim};
    memcpy(wa.shape, out->shape, sizeof wa.shape);
    tg_tensor *W = cb_tensor(ctx, dt, &wa, w);
    free(w);
    assert_non_null(W);
    if (tg_backward(ctx, out, W, 0) != TG_OK)
        fail_msg("%s (%s, %s): backward: %s", c->name, tg_dtype_name(dt), ctx->be->name,
                 tg_ctx_error(ctx));
    for (int i = 0; i < c->nin; i++) {
        if (!in[i]->requires_grad || !in[i]->grad || vs->n[i] == 0)
            continue;
        r->grad[i] = calloc((size_t)vs->n[i] + 1, sizeof(double));
        assert_non_null(r->grad[i]);
        if (!cb_read(ctx, in[i]->grad, r->grad[i]))
            fail_msg("%s: reading grad %d: %s", c->name, i, tg_ctx_error(ctx));
    }
}

/* ---- the tests ---- */

typedef struct cb_env {
    tg_ctx *cpu, *cuda;
} cb_env;

static void cb_compare(const cb_case *c, tg_dtype dt, const cb_run *cpu, const cb_run *gpu,
                       const cb_vals *vs, double tol) {
    assert_int_equal(cpu->out_dtype, gpu->out_dtype);
    assert_int_equal(cpu->out_ndim, gpu->out_ndim);
    assert_memory_equal(cpu->out_shape, gpu->out_shape, sizeof cpu->out_shape);
    for (int64_t k = 0; k < cpu->nout; k++) {
        if (!cb_close(gpu->out[k], cpu->out[k], tol))
            fail_msg("%s (%s): output %lld: cuda %.12g, cpu %.12g", c->name, tg_dtype_name(dt),
                     (long long)k, gpu->out[k], cpu->out[k]);
    }
    for (int i = 0; i < c->nin; i++) {
        if ((cpu->grad[i] == NULL) != (gpu->grad[i] == NULL))
            fail_msg("%s (%s): input %d has a gradient on one backend only", c->name,
                     tg_dtype_name(dt), i);
        for (int64_t k = 0; cpu->grad[i] && k < vs->n[i]; k++) {
            if (!cb_close(gpu->grad[i][k], cpu->grad[i][k], tol))
                fail_msg("%s (%s): grad of input %d at %lld: cuda %.12g, cpu %.12g", c->name,
                         tg_dtype_name(dt), i, (long long)k, gpu->grad[i][k], cpu->grad[i][k]);
        }
    }
}

/* Whether name is in the comma-separated list (NULL or "": everything).
 * scripts/gpu_check.sh runs a subset under compute-sanitizer with
 * TG_CUDA_TESTS (test functions) and TG_CUDA_CASES (case names of
 * test_every_case, each a prefix: "matmul" takes every matmul case). */
static bool cb_listed(const char *list, const char *name, bool prefix) {
    if (!list || !*list)
        return true;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n > 0 && strncmp(p, name, n) == 0 && (prefix || name[n] == '\0'))
            return true;
        p += n + (p[n] == ',');
    }
    return false;
}

static void test_every_case(void **state) {
    cb_env *env = *state;
    static const tg_dtype dts[2] = {TG_F32, TG_F64};
    const char *only = getenv("TG_CUDA_CASES");
    int ran = 0;
    for (int ci = 0; ci < CB_NCASES; ci++) {
        const cb_case *c = &cb_table[ci];
        if (!cb_listed(only, c->name, true))
            continue;
        ran++;
        for (int di = 0; di < 2; di++) {
            const double tol = dts[di] == TG_F64 ? CB_TOL_F64 : (c->tol > 0 ? c->tol : CB_TOL_F32);
            /* Two seeds: fresh random values, the same on both backends. */
            for (uint64_t rep = 0; rep < 2; rep++) {
                const uint64_t seed = 1000003ull * (uint64_t)(ci + 1) + 7919ull * rep + di;
                cb_vals vs;
                cb_run rc = {0}, rg = {0};
                cb_vals_make(c, seed, &vs);
                cb_execute(env->cpu, c, &vs, dts[di], seed, &rc);
                cb_execute(env->cuda, c, &vs, dts[di], seed, &rg);
                cb_compare(c, dts[di], &rc, &rg, &vs, tol);
                for (int d = 0; d < TG_DEVICE_COUNT; d++) {
                    if (cb_guards[d].failures)
                        fail_msg("%s (%s): %s", c->name, tg_dtype_name(dts[di]), cb_guards[d].msg);
                }
                cb_run_free(&rc);
                cb_run_free(&rg);
                cb_vals_free(c, &vs);
                tg_step_reset(env->cpu);
                tg_step_reset(env->cuda);
            }
        }
    }
    /* The guard saw the kernels: a wrapper that was bypassed checks nothing. */
    if (ran == 0)
        fail_msg("TG_CUDA_CASES=%s names no case", only);
    assert_true(cb_guards[TG_DEVICE_CUDA].calls > (only && *only ? 0 : CB_NCASES));
}

/* A bad index is reported by both backends with the same position and value. */
static void test_bad_index_reported(void **state) {
    cb_env *env = *state;
    static const int64_t bad[6] = {0, 1, 2, 9, 1, -3};
    char msg[2][512];
    tg_ctx *ctxs[2] = {env->cpu, env->cuda};
    for (int b = 0; b < 2; b++) {
        tg_ctx *ctx = ctxs[b];
        const cb_arg xa = IN(CB_RAND, 2, 3, 4), ia = IDX(bad, 2, 3, 2);
        double xv[12] = {0}, iv[6];
        for (int k = 0; k < 6; k++)
            iv[k] = (double)bad[k];
        tg_tensor *x = cb_tensor(ctx, TG_F32, &xa, xv);
        tg_tensor *idx = cb_tensor(ctx, TG_F32, &ia, iv);
        assert_null(tg_gather(ctx, x, 1, idx));
        assert_int_equal(tg_ctx_status(ctx), TG_ERR_INVALID);
        const char *e = tg_ctx_error(ctx);
        /* Drop the backend's name so that the rest can be compared. */
        const char *rest = strstr(e, "index 9");
        assert_non_null(rest);
        snprintf(msg[b], sizeof msg[b], "%s", rest);
        tg_ctx_clear_error(ctx);
        tg_step_reset(ctx);
    }
    assert_string_equal(msg[0], msg[1]);
    assert_non_null(strstr(msg[1], "position (1, 1)"));
}

/* The in-place helpers (gradient accumulation, optimizers) and copies. */
static void test_inplace_helpers(void **state) {
    cb_env *env = *state;
    const int64_t shape[1] = {1000};
    double res[2][1000];
    tg_ctx *ctxs[2] = {env->cpu, env->cuda};
    for (int b = 0; b < 2; b++) {
        tg_ctx *ctx = ctxs[b];
        tg_tensor *p = tg_persistent(ctx, TG_F32, 1, shape, "p");
        tg_tensor *q = tg_persistent(ctx, TG_F32, 1, shape, "q");
        assert_non_null(p);
        assert_non_null(q);
        float v[1000];
        for (int k = 0; k < 1000; k++)
            v[k] = (float)k * 0.25f - 7.0f;
        assert_int_equal(tg_copy_from_host(ctx, q, v, sizeof v), TG_OK);
        assert_int_equal(tg_fill_(ctx, p, 1.5), TG_OK);
        assert_int_equal(tg_axpy_(ctx, p, -2.0, q), TG_OK);
        assert_int_equal(tg_mul_scalar_(ctx, p, 0.5), TG_OK);
        assert_true(cb_read(ctx, p, res[b]));
        for (int k = 0; k < 1000; k++)
            assert_true(cb_close(res[b][k], 0.5 * (1.5 - 2.0 * v[k]), 1e-6));
    }
    assert_memory_equal(res[0], res[1], sizeof res[0]);
}

/* The CUDA dropout mask against one computed here from tg_philox4x32: an
 * element is kept, and scaled by 1 / (1 - p), exactly when word i % 4 of
 * block counter + i / 4 is at least p as a fraction of 2^32. */
static void test_dropout_mask(void **state) {
    cb_env *env = *state;
    enum { N = 1001 };
    const double p = 0.25;
    float ones[N], got[N];
    for (int k = 0; k < N; k++)
        ones[k] = 1.0f;
    tg_ctx *ctx = env->cuda;
    tg_tensor *x = tg_from_data(ctx, TG_F32, 1, (const int64_t[]){N}, ones);
    assert_non_null(x);
    tg_rng r = {.key = 0xDEADBEEFCAFEF00Dull, .counter = 0xFFFFFFF0ull};
    const tg_rng r0 = r;
    tg_tensor *y = tg_dropout(ctx, x, p, true, &r);
    assert_non_null(y);
    assert_int_equal(tg_to_host(ctx, y, got, sizeof got), TG_OK);
    assert_true(r.counter == r0.counter + (N + 3) / 4);
    int kept = 0;
    for (int k = 0; k < N; k++) {
        uint32_t w[4];
        tg_philox4x32(r0.key, r0.counter + (uint64_t)(k / 4), w);
        const float want = tg_u32_to_unit(w[k % 4]) >= p ? (float)(1.0 / (1.0 - p)) : 0.0f;
        if (got[k] != want)
            fail_msg("dropout element %d: cuda %g, expected %g", k, got[k], want);
        kept += want != 0.0f;
    }
    /* About 3/4 kept: a mask of all ones or all zeros would be a defect. */
    assert_true(kept > N / 2 && kept < N);
    tg_step_reset(ctx);
}

/* A bad cross-entropy target is reported by both backends in the same words. */
static void test_bad_target_reported(void **state) {
    cb_env *env = *state;
    static const int64_t bad[4] = {1, 0, 7, 5};
    char msg[2][512];
    tg_ctx *ctxs[2] = {env->cpu, env->cuda};
    for (int b = 0; b < 2; b++) {
        tg_ctx *ctx = ctxs[b];
        const cb_arg xa = IN(CB_RAND, 2, 4, 5), ta = IDX(bad, 1, 4);
        double xv[20] = {0}, tv[4];
        for (int k = 0; k < 4; k++)
            tv[k] = (double)bad[k];
        tg_tensor *x = cb_tensor(ctx, TG_F32, &xa, xv);
        tg_tensor *t = cb_tensor(ctx, TG_F32, &ta, tv);
        assert_null(tg_cross_entropy(ctx, x, t, 0.0));
        assert_int_equal(tg_ctx_status(ctx), TG_ERR_INVALID);
        const char *rest = strstr(tg_ctx_error(ctx), "target 7 of row 2");
        assert_non_null(rest);
        snprintf(msg[b], sizeof msg[b], "%s", rest);
        tg_ctx_clear_error(ctx);
        tg_step_reset(ctx);
    }
    assert_string_equal(msg[0], msg[1]);
}

/*
 * The optimizers on the CUDA backend's fused update against the CPU's host
 * loops (which test_optim checks against PyTorch): the same parameters and
 * gradients for four steps, where the second parameter has no gradient in
 * step 1 (so its own step count falls behind), then every parameter and
 * every state tensor compared. The kernels repeat the host's operations with
 * unfused roundings, so the two should agree far inside the tolerance.
 */
#define OPT_STEPS 4
#define OPT_NP 2

static void opt_run(tg_ctx *ctx, const tg_optim_config *cfg, tg_dtype dt, uint64_t seed,
                    double *out, int64_t *nout) {
    static const int64_t shp[OPT_NP][2] = {{37, 1}, {5, 300}};
    static const char *const names[OPT_NP] = {"w", "b"};
    const bool was = tg_set_grad_enabled(ctx, false);
    tg_tensor *ps[OPT_NP], *gs[OPT_NP];
    uint64_t s = seed;
    for (int i = 0; i < OPT_NP; i++) {
        const cb_arg pa = IN(CB_RAND, 2, shp[i][0], shp[i][1]);
        double v[1500];
        ps[i] = tg_param(ctx, dt, 2, shp[i], names[i]);
        gs[i] = tg_persistent(ctx, dt, 2, shp[i], "grad");
        assert_non_null(ps[i]);
        assert_non_null(gs[i]);
        for (int64_t k = 0; k < shp[i][0] * shp[i][1]; k++)
            v[k] = cb_unif(&s, -1.0, 1.0);
        tg_tensor *src = cb_tensor(ctx, dt, &pa, v);
        assert_non_null(src);
        assert_int_equal(tg_copy_(ctx, ps[i], src), TG_OK);
    }
    tg_optim *opt = NULL;
    if (tg_optim_new(ctx, cfg, OPT_NP, ps, &opt) != TG_OK)
        fail_msg("tg_optim_new on %s: %s", ctx->be->name, tg_ctx_error(ctx));
    for (int step = 0; step < OPT_STEPS; step++) {
        for (int i = 0; i < OPT_NP; i++) {
            const cb_arg ga = IN(CB_RAND, 2, shp[i][0], shp[i][1]);
            double v[1500];
            for (int64_t k = 0; k < shp[i][0] * shp[i][1]; k++)
                v[k] = cb_unif(&s, -1.0, 1.0);
            tg_tensor *src = cb_tensor(ctx, dt, &ga, v);
            assert_non_null(src);
            assert_int_equal(tg_copy_(ctx, gs[i], src), TG_OK);
            ps[i]->grad = i == 1 && step == 1 ? NULL : gs[i];
        }
        if (tg_optim_step(ctx, opt, 0.05 * (step + 1)) != TG_OK)
            fail_msg("optim step on %s: %s", ctx->be->name, tg_ctx_error(ctx));
        tg_step_reset(ctx);
    }
    int64_t n = 0;
    for (int i = 0; i < OPT_NP; i++) {
        assert_true(cb_read(ctx, ps[i], out + n));
        n += tg_numel(ps[i]);
    }
    tg_tensor *st[8];
    const int ns = tg_optim_state(opt, st, 8);
    assert_true(ns <= 8);
    for (int k = 0; k < ns; k++) {
        assert_true(cb_read(ctx, st[k], out + n));
        n += tg_numel(st[k]);
    }
    *nout = n;
    tg_optim_free(opt);
    tg_set_grad_enabled(ctx, was);
}

static void test_optim_matches_cpu(void **state) {
    cb_env *env = *state;
    tg_optim_config cfgs[5] = {
        tg_optim_defaults(TG_OPTIM_SGD), tg_optim_defaults(TG_OPTIM_SGD),
        tg_optim_defaults(TG_OPTIM_SGD), tg_optim_defaults(TG_OPTIM_ADAM),
        tg_optim_defaults(TG_OPTIM_ADAMW),
    };
    cfgs[1].momentum = 0.9, cfgs[1].dampening = 0.1, cfgs[1].weight_decay = 0.01;
    cfgs[2].momentum = 0.8, cfgs[2].nesterov = true, cfgs[2].weight_decay = 0.05;
    cfgs[3].weight_decay = 0.02;
    cfgs[4].weight_decay = 0.1, cfgs[4].beta1 = 0.8;
    /* Parameters, momentum buffers or both moments, and step counts. */
    enum { MAXV = 3 * (37 + 1500) + 2 * OPT_NP };
    static double rc[MAXV], rg[MAXV];
    for (int c = 0; c < 5; c++) {
        for (int di = 0; di < 2; di++) {
            const tg_dtype dt = di ? TG_F64 : TG_F32;
            const double tol = di ? 1e-12 : 1e-6;
            int64_t nc = 0, ng = 0;
            opt_run(env->cpu, &cfgs[c], dt, 77 + (uint64_t)c, rc, &nc);
            opt_run(env->cuda, &cfgs[c], dt, 77 + (uint64_t)c, rg, &ng);
            assert_int_equal(nc, ng);
            for (int64_t k = 0; k < nc; k++) {
                if (!cb_close(rg[k], rc[k], tol))
                    fail_msg("optim config %d (%s): value %lld: cuda %.12g, cpu %.12g", c,
                             tg_dtype_name(dt), (long long)k, rg[k], rc[k]);
            }
        }
    }
}

/* ---- structural checks, which need no device ---- */

/* The host instance of the CUDA backend's Philox port (cuda_loss.cu). */
#ifdef TG_HAVE_CUDA
void tg__cuda_philox4x32_host(uint64_t key, uint64_t counter, uint32_t out[4]);
#endif

static int check_structure(void) {
    int bad = 0;
    const tg_backend *be = tg_backend_cuda();
    for (int op = 0; op < TG_OP_COUNT; op++) {
        bool covered = false;
        for (int ci = 0; ci < CB_NCASES && !covered; ci++)
            covered = cb_table[ci].op == op;
        if (!covered) {
            printf("op row %s has no case in test_cuda_backend.c\n", tg_op_name((tg_op)op));
            bad++;
        }
    }
    for (int op = 0; be && op < TG_OP_COUNT; op++) {
        const bool view = (tg_op_flags((tg_op)op) & TG_OPF_VIEW) != 0;
        if (view != (be->kernels[op] == NULL)) {
            printf("op row %s: the cuda table has %s kernel\n", tg_op_name((tg_op)op),
                   view ? "a (view row)" : "no");
            bad++;
        }
    }
#ifdef TG_HAVE_CUDA
    /* Dropout masks must be the CPU's bit for bit: the CUDA port of Philox,
     * run on the host, against tg_philox4x32 over keys and counters that
     * carry across the 32-bit halves. */
    uint64_t s = 99;
    for (int k = 0; k < 2000; k++) {
        const uint64_t key = k < 4 ? (uint64_t)k * 0xFFFFFFFFull : cb_next(&s);
        const uint64_t ctr = k % 3 == 0 ? 0xFFFFFFFFull + (uint64_t)(k % 7) : cb_next(&s);
        uint32_t want[4], got[4];
        tg_philox4x32(key, ctr, want);
        tg__cuda_philox4x32_host(key, ctr, got);
        if (memcmp(want, got, sizeof want) != 0) {
            printf("cuda philox differs from tg_philox4x32 at key %llx counter %llx\n",
                   (unsigned long long)key, (unsigned long long)ctr);
            bad++;
            break;
        }
    }
#endif
    return bad;
}

/* One backend's bf16 results: the bits of a cast, then under the bf16
 * precision y = a @ b^T (b transposed, as a linear layer's weight) and
 * conv2d(x, w) with their gradients for fixed seeds. */
enum { BF_N = 33, BF_K = 40, BF_M = 21, BF_X = 2 * 3 * 9 * 9, BF_W = 4 * 3 * 3 * 3,
       BF_Y = 2 * 4 * 9 * 9, BF_A = 2 * 2 * 70 * 32 };
typedef struct bf_out {
    uint16_t bits[BF_X];
    double y[BF_N * BF_M], da[BF_N * BF_K], db[BF_M * BF_K];
    double cy[BF_Y], dx[BF_X], dw[BF_W];
    double ao[BF_A], adq[BF_A], adk[BF_A], adv[BF_A];
} bf_out;

static tg_tensor *bf_leaf(tg_ctx *ctx, int nd, const int64_t *shape, const float *v) {
    tg_tensor *t = tg_from_data(ctx, TG_F32, nd, shape, v);
    assert_non_null(t);
    assert_int_equal(tg_set_requires_grad(ctx, t, true), TG_OK);
    return t;
}

static void bf_run(tg_ctx *ctx, const float *const *v, bf_out *o) {
    const int64_t sx[] = {2, 3, 9, 9}, sw[] = {4, 3, 3, 3}, sy[] = {2, 4, 9, 9};
    const int64_t sa[] = {BF_N, BF_K}, sb[] = {BF_M, BF_K}, sg[] = {BF_N, BF_M};
    tg_tensor *c = tg_to_dtype(ctx, tg_from_data(ctx, TG_F32, 4, sx, v[0]), TG_BF16);
    assert_non_null(c);
    assert_int_equal(tg_to_host(ctx, c, o->bits, sizeof o->bits), TG_OK);
    assert_int_equal(tg_ctx_set_precision(ctx, TG_PRECISION_BF16), TG_OK);
    tg_tensor *a = bf_leaf(ctx, 2, sa, v[2]), *b = bf_leaf(ctx, 2, sb, v[3]);
    tg_tensor *y = tg_matmul(ctx, a, tg_transpose(ctx, b, 0, 1));
    assert_non_null(y);
    assert_int_equal(tg_backward(ctx, y, tg_from_data(ctx, TG_F32, 2, sg, v[4]), 0), TG_OK);
    assert_true(cb_read(ctx, y, o->y) && cb_read(ctx, a->grad, o->da) &&
                cb_read(ctx, b->grad, o->db));
    tg_tensor *x = bf_leaf(ctx, 4, sx, v[0]), *w = bf_leaf(ctx, 4, sw, v[1]);
    tg_tensor *cy = tg_conv2d(ctx, x, w, NULL, &cv_pad);
    assert_non_null(cy);
    assert_int_equal(tg_backward(ctx, cy, tg_from_data(ctx, TG_F32, 4, sy, v[5]), 0), TG_OK);
    assert_true(cb_read(ctx, cy, o->cy) && cb_read(ctx, x->grad, o->dx) &&
                cb_read(ctx, w->grad, o->dw));
    /* the fused attention, causal, T = 70 (past a key tile), D = 32 */
    const int64_t sq[] = {2, 2, 70, 32};
    tg_tensor *q = bf_leaf(ctx, 4, sq, v[6]), *k = bf_leaf(ctx, 4, sq, v[7]);
    tg_tensor *vv = bf_leaf(ctx, 4, sq, v[8]);
    tg_tensor *ao = tg_scaled_dot_product_attention(ctx, q, k, vv, true);
    assert_non_null(ao);
    assert_int_equal(tg_backward(ctx, ao, tg_from_data(ctx, TG_F32, 4, sq, v[9]), 0), TG_OK);
    assert_true(cb_read(ctx, ao, o->ao) && cb_read(ctx, q->grad, o->adq) &&
                cb_read(ctx, k->grad, o->adk) && cb_read(ctx, vv->grad, o->adv));
    assert_int_equal(tg_ctx_set_precision(ctx, TG_PRECISION_F32), TG_OK);
    tg_step_reset(ctx);
}

static void bf_close(const char *what, const double *c, const double *g, int n) {
    double mx = 0;
    for (int k = 0; k < n; k++)
        mx = fmax(mx, fabs(c[k]));
    for (int k = 0; k < n; k++)
        if (fabs(c[k] - g[k]) > 1e-4 * mx + 1e-6)
            fail_msg("bf16 %s[%d]: cpu %.9g, cuda %.9g", what, k, c[k], g[k]);
}

/* Within 2^-8 of the largest magnitude (bf16's rounding of P and dS). */
static void bf_near(const char *what, const double *c, const double *g, int n) {
    double mx = 0;
    for (int k = 0; k < n; k++)
        mx = fmax(mx, fabs(c[k]));
    for (int k = 0; k < n; k++)
        if (fabs(c[k] - g[k]) > mx / 256 + 1e-6)
            fail_msg("bf16 %s[%d]: cpu %.9g, cuda %.9g", what, k, c[k], g[k]);
}

/* bf16: the casts give the CPU's bits, and the autocast products (cuBLAS
 * bf16 GEMMs with f32 compute; the fused attention's kernels with bf16
 * operands) agree with the CPU's (oneDNN; cpu_attn_bf16.c) to f32
 * accumulation accuracy, forward and backward: the attention within 2^-8 of
 * each result's largest magnitude, as both round their own P and dS (f32
 * values that differ in the last bits, and whose exps differ) to bf16.
 * Skipped where the CPU has no bf16 products (a build without oneDNN). */
static void test_bf16_matches_cpu(void **state) {
    cb_env *env = *state;
    static float buf[10][BF_A];
    static bf_out out[2];
    uint64_t seed = 16;
    for (int i = 0; i < 10; i++)
        for (int k = 0; k < BF_A; k++)
            buf[i][k] = (float)cb_unif(&seed, -1, 1);
    const float *v[10] = {buf[0], buf[1], buf[2], buf[3], buf[4],
                          buf[5], buf[6], buf[7], buf[8], buf[9]};
    if (tg_ctx_set_precision(env->cpu, TG_PRECISION_BF16) != TG_OK) {
        printf("bf16 on the CPU: %s: skipped\n", tg_ctx_error(env->cpu));
        tg_ctx_clear_error(env->cpu);
        return;
    }
    assert_int_equal(tg_ctx_set_precision(env->cpu, TG_PRECISION_F32), TG_OK);
    bf_run(env->cpu, v, &out[0]);
    bf_run(env->cuda, v, &out[1]);
    assert_memory_equal(out[0].bits, out[1].bits, sizeof out[0].bits);
    bf_close("matmul", out[0].y, out[1].y, BF_N * BF_M);
    bf_close("matmul da", out[0].da, out[1].da, BF_N * BF_K);
    bf_close("matmul db", out[0].db, out[1].db, BF_M * BF_K);
    bf_close("conv2d", out[0].cy, out[1].cy, BF_Y);
    bf_close("conv2d dx", out[0].dx, out[1].dx, BF_X);
    bf_close("conv2d dw", out[0].dw, out[1].dw, BF_W);
    bf_near("attention", out[0].ao, out[1].ao, BF_A);
    bf_near("attention dq", out[0].adq, out[1].adq, BF_A);
    bf_near("attention dk", out[0].adk, out[1].adk, BF_A);
    bf_near("attention dv", out[0].adv, out[1].adv, BF_A);
}

static int cb_setup(void **state) {
    static cb_env env;
    tg_ctx_config cpu = {.device = TG_DEVICE_CPU, .threads = 1};
    tg_ctx_config cuda = {.device = TG_DEVICE_CUDA};
    if (tg_ctx_new(&cpu, &env.cpu) != TG_OK)
        return -1;
    if (tg_ctx_new(&cuda, &env.cuda) != TG_OK) {
        printf("cuda context: %s\n", tg_last_init_error());
        tg_ctx_free(env.cpu);
        return -1;
    }
    cb_guard_install(env.cpu);
    cb_guard_install(env.cuda);
    *state = &env;
    return 0;
}

static int cb_teardown(void **state) {
    cb_env *env = *state;
    tg_ctx_free(env->cuda);
    tg_ctx_free(env->cpu);
    return 0;
}

static void cb_fill_targets(void) {
    for (int k = 0; k < CE_MANY; k++)
        ce_many[k] = (k * 7 + k / 5) % 3;
}

int main(void) {
    cb_fill_targets();
    if (check_structure() != 0)
        return 1;
    if (!tg_backend_cuda() || tg_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_every_case),
        cmocka_unit_test(test_bad_index_reported),
        cmocka_unit_test(test_inplace_helpers),
        cmocka_unit_test(test_dropout_mask),
        cmocka_unit_test(test_bad_target_reported),
        cmocka_unit_test(test_optim_matches_cpu),
        cmocka_unit_test(test_bf16_matches_cpu),
    };
    struct CMUnitTest tests[sizeof all / sizeof *all];
    size_t n = 0;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (cb_listed(getenv("TG_CUDA_TESTS"), all[i].name, false))
            tests[n++] = all[i];
    if (n == 0) {
        fprintf(stderr, "TG_CUDA_TESTS=%s names no test\n", getenv("TG_CUDA_TESTS"));
        return 1;
    }
    return _cmocka_run_group_tests("test_cuda_backend", tests, n, cb_setup, cb_teardown);
}
