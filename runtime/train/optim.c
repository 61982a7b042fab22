/* Optimizers (SGD, Adam, AdamW) and gradient clipping, with PyTorch's update
 * rules (torch.optim, foreach=False, PyTorch 1.13). The update loops work on
 * the flat host buffers of contiguous CPU tensors; a backend with an
 * optim_update member (CUDA) runs the same update on its own memory instead.
 * See optim.h for the rules and the state layout. */
#include "tapegrad/optim.h"
#include "cpu/cpu_par.h"
#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Below this many elements a loop runs on one thread: starting a parallel
 * region costs more than the work. */
#define OPTIM_PAR_MIN 32768

/* Clipping sums squares in this many fixed blocks per gradient (at most), so
 * that the total does not depend on how many threads run. */
#define CLIP_BLOCKS 64

/* The state of one parameter. Tensors are NULL where the kind has none. */
typedef struct optim_slot {
    tg_tensor *p;
    tg_tensor *step; /* f64 (1,): the parameter's own step count */
    tg_tensor *buf;  /* SGD momentum_buffer */
    tg_tensor *m;    /* exp_avg */
    tg_tensor *v;    /* exp_avg_sq */
    bool no_decay;   /* weight decay 0 for this parameter */
} optim_slot;

struct tg_optim {
    tg_ctx *ctx; /* the context that holds the parameters and the state */
    tg_optim_config cfg;
    int n;
    int64_t steps;
    optim_slot *slots;
    int nstate;
    tg_tensor **state; /* every state tensor, in slot order, for checkpoints */
    char *names;       /* the state tensors' names (tensors do not copy them) */
};

static void *data_of(const tg_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)tg_dtype_size(t->dtype);
}

/* ---- configuration ---- */

tg_optim_config tg_optim_defaults(tg_optim_kind kind) {
    tg_optim_config c = {
        .kind = kind,
        .lr = 1e-3,
        .beta1 = 0.9,
        .beta2 = 0.999,
        .eps = 1e-8,
    };
    if (kind == TG_OPTIM_ADAMW)
        c.weight_decay = 1e-2;
    return c;
}

static const char *kind_name(tg_optim_kind k) {
    switch (k) {
    case TG_OPTIM_SGD:
        return "sgd";
    case TG_OPTIM_ADAM:
        return "adam";
    case TG_OPTIM_ADAMW:
        return "adamw";
    }
    return "?";
}

/* NaN fails every comparison, so `!(x >= lo)` also refuses it. */
static tg_status check_nonneg(tg_ctx *ctx, const char *kind, const char *field, double x) {
    if (!(x >= 0.0) || isinf(x))
        return tg__fail(ctx, TG_ERR_INVALID, "optim (%s): %s = %g must be finite and >= 0", kind,
                        field, x);
    return TG_OK;
}

static tg_status check_beta(tg_ctx *ctx, const char *kind, const char *field, double x) {
    if (!(x >= 0.0 && x < 1.0))
        return tg__fail(ctx, TG_ERR_INVALID, "optim (%s): %s = %g must be in [0, 1)", kind, field,
                        x);
    return TG_OK;
}

static tg_status check_sgd(tg_ctx *ctx, const tg_optim_config *c) {
    tg_status s;
    if ((s = check_nonneg(ctx, "sgd", "momentum", c->momentum)))
        return s;
    if (!isfinite(c->dampening))
        return tg__fail(ctx, TG_ERR_INVALID, "optim (sgd): dampening = %g must be finite",
                        c->dampening);
    if (c->nesterov && (c->momentum <= 0.0 || c->dampening != 0.0))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "optim (sgd): nesterov needs momentum > 0 and dampening 0 (momentum = "
                        "%g, dampening = %g)",
                        c->momentum, c->dampening);
    return TG_OK;
}

static tg_status check_adam(tg_ctx *ctx, const tg_optim_config *c) {
    const char *k = kind_name(c->kind);
    tg_status s;
    if ((s = check_beta(ctx, k, "beta1", c->beta1)) || (s = check_beta(ctx, k, "beta2", c->beta2)))
        return s;
    return check_nonneg(ctx, k, "eps", c->eps);
}

tg_status tg_optim_check(tg_ctx *ctx, const tg_optim_config *cfg) {
    if (!cfg)
        return tg__fail(ctx, TG_ERR_INVALID, "optim: NULL configuration");
    if (cfg->kind != TG_OPTIM_SGD && cfg->kind != TG_OPTIM_ADAM && cfg->kind != TG_OPTIM_ADAMW)
        return tg__fail(ctx, TG_ERR_INVALID, "optim: unknown kind %d (sgd, adam or adamw)",
                        (int)cfg->kind);
    const char *k = kind_name(cfg->kind);
    tg_status s;
    if ((s = check_nonneg(ctx, k, "lr", cfg->lr)) ||
        (s = check_nonneg(ctx, k, "weight_decay", cfg->weight_decay)))
        return s;
    return cfg->kind == TG_OPTIM_SGD ? check_sgd(ctx, cfg) : check_adam(ctx, cfg);
}

/* ---- construction ---- */

static tg_status check_param(tg_ctx *ctx, tg_tensor *const *params, int i) {
    const tg_tensor *p = params[i];
    if (!p)
        return tg__fail(ctx, TG_ERR_INVALID, "optim: parameter %d is NULL", i);
    const char *nm = p->name ? p->name : "(unnamed)";
    if (!tg_dtype_is_float(p->dtype))
        return tg__fail(ctx, TG_ERR_DTYPE, "optim: parameter %d (%s) is %s; f32 or f64 expected", i,
                        nm, tg_dtype_name(p->dtype));
    if (p->device != TG_DEVICE_CPU && !ctx->be->optim_update)
        return tg__fail(ctx, TG_ERR_UNSUPPORTED,
                        "optim: parameter %d (%s) is on %s, whose backend has no optimizer update",
                        i, nm, tg_device_name(p->device));
    if (!tg_is_contiguous(p))
        return tg__fail(ctx, TG_ERR_INVALID, "optim: parameter %d (%s) is not contiguous", i, nm);
    for (int j = 0; j < i; j++) {
        const tg_tensor *q = params[j];
        if (q == p || (q && q->storage == p->storage && q->offset == p->offset))
            return tg__fail(ctx, TG_ERR_INVALID,
                            "optim: parameter %d (%s) is listed twice (also at %d)", i, nm, j);
        if (q && p->name && q->name && strcmp(p->name, q->name) == 0)
            return tg__fail(ctx, TG_ERR_INVALID,
                            "optim: parameters %d and %d are both named %s; state names must be "
                            "unique",
                            j, i, nm);
    }
    return TG_OK;
}

static const char *const SGD_KEYS[] = {"step", "momentum_buffer"};
static const char *const ADAM_KEYS[] = {"step", "exp_avg", "exp_avg_sq"};

static int keys_of(const tg_optim_config *c, const char *const **keys) {
    if (c->kind == TG_OPTIM_SGD) {
        *keys = SGD_KEYS;
        return c->momentum != 0.0 ? 2 : 0;
    }
    *keys = ADAM_KEYS;
    return 3;
}

/* Length of "optim.<name>.<key>" with the NUL; unnamed: "param<i>". */
static size_t state_name_len(const tg_tensor *p, int i, const char *key) {
    char idx[32];
    size_t base = p->name ? strlen(p->name) : (size_t)snprintf(idx, sizeof idx, "param%d", i);
    return strlen("optim.") + base + 1 + strlen(key) + 1;
}

static tg_optim *alloc_optim(const tg_optim_config *cfg, int n, tg_tensor *const *params) {
    const char *const *keys;
    int nk = keys_of(cfg, &keys);
    size_t names = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < nk; k++)
            names += state_name_len(params[i], i, keys[k]);
    tg_optim *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->slots = calloc((size_t)n + 1, sizeof *o->slots);
    o->state = calloc((size_t)n * (size_t)nk + 1, sizeof *o->state);
    o->names = malloc(names + 1);
    if (!o->slots || !o->state || !o->names) {
        tg_optim_free(o);
        return NULL;
    }
    o->cfg = *cfg;
    o->cfg.no_decay = NULL; /* the caller's array: copied into the slots */
    o->n = n;
    return o;
}

/* The step count lives in the context's memory (device memory on a device
 * backend), so it is read and written through the backend's copies. */
static tg_status step_get(tg_ctx *ctx, const tg_tensor *t, double *v) {
    if (ctx->be->copy_d2h(ctx->bstate, v, data_of(t), sizeof *v))
        return tg__fail(ctx, TG_ERR_BACKEND, "optim: reading %s failed", t->name);
    return TG_OK;
}

static tg_status step_set(tg_ctx *ctx, tg_tensor *t, double v) {
    if (ctx->be->copy_h2d(ctx->bstate, data_of(t), &v, sizeof v))
        return tg__fail(ctx, TG_ERR_BACKEND, "optim: writing %s failed", t->name);
    tg_bump_version(t);
    return TG_OK;
}

static tg_status make_state(tg_ctx *ctx, tg_optim *o, int i, char **name_at) {
    const char *const *keys;
    int nk = keys_of(&o->cfg, &keys);
    optim_slot *sl = &o->slots[i];
    tg_tensor *p = sl->p;
    for (int k = 0; k < nk; k++) {
        char *nm = *name_at;
        size_t len = state_name_len(p, i, keys[k]);
        if (p->name)
            snprintf(nm, len, "optim.%s.%s", p->name, keys[k]);
        else
            snprintf(nm, len, "optim.param%d.%s", i, keys[k]);
        *name_at += len;
        static const int64_t one = 1;
        tg_tensor *t = k == 0 ? tg_persistent(ctx, TG_F64, 1, &one, nm)
                              : tg_persistent(ctx, p->dtype, p->ndim, p->shape, nm);
        if (!t)
            return ctx->status ? ctx->status : TG_ERR_NOMEM;
        o->state[o->nstate++] = t;
        if (k == 0)
            sl->step = t;
        else if (o->cfg.kind == TG_OPTIM_SGD)
            sl->buf = t;
        else if (k == 1)
            sl->m = t;
        else
            sl->v = t;
    }
    return TG_OK;
}

tg_status tg_optim_new(tg_ctx *ctx, const tg_optim_config *cfg, int n, tg_tensor *const *params,
                       tg_optim **out) {
    if (!out)
        return tg__fail(ctx, TG_ERR_INVALID, "optim: NULL output pointer");
    *out = NULL;
    tg_status s = tg_optim_check(ctx, cfg);
    if (s)
        return s;
    if (n < 0 || (n > 0 && !params))
        return tg__fail(ctx, TG_ERR_INVALID, "optim: bad parameter list (n = %d%s)", n,
                        n > 0 ? ", params NULL" : "");
    for (int i = 0; i < n; i++)
        if ((s = check_param(ctx, params, i)))
            return s;
    tg_optim *o = alloc_optim(cfg, n, params);
    if (!o)
        return tg__fail(ctx, TG_ERR_NOMEM, "optim: out of memory for %d parameters", n);
    o->ctx = ctx;
    char *name_at = o->names;
    for (int i = 0; i < n; i++) {
        o->slots[i].p = params[i];
        o->slots[i].no_decay = cfg->no_decay && cfg->no_decay[i];
        if ((s = make_state(ctx, o, i, &name_at))) {
            tg_optim_free(o);
            return s;
        }
    }
    *out = o;
    return TG_OK;
}

void tg_optim_free(tg_optim *opt) {
    if (!opt)
        return;
    free(opt->slots);
    free(opt->state);
    free(opt->names);
    free(opt);
}

int64_t tg_optim_steps(const tg_optim *opt) { return opt ? opt->steps : 0; }

void tg_optim_set_steps(tg_optim *opt, int64_t steps) {
    if (!opt)
        return;
    opt->steps = steps < 0 ? 0 : steps;
    /* A failed copy leaves its message in the context; the function has no
     * status to return it with. */
    for (int i = 0; i < opt->n; i++)
        if (opt->slots[i].step)
            (void)step_set(opt->ctx, opt->slots[i].step, (double)opt->steps);
}

int tg_optim_state(const tg_optim *opt, tg_tensor **out, int max) {
    if (!opt)
        return 0;
    for (int i = 0; i < opt->nstate && i < max && out; i++)
        out[i] = opt->state[i];
    return opt->nstate;
}

/* ---- the update loops ---- */

/* Scalars are rounded to the parameter's type first, as PyTorch passes them
 * to its kernels, and every expression follows torch's order of operations
 * (buf.mul_(m).add_(g, alpha=1-d), addcmul, addcdiv), so that f32 results
 * match torch's f32 results as closely as a different compiler allows. */
#define SGD_LOOP(T)                                                                              \
    static void sgd_##T(int64_t n, T *restrict p, const T *restrict g, T *restrict b, double lr, \
                        double wd, double mom, double damp, bool nesterov, bool first) {         \
        const T nlr = (T)-lr, twd = (T)wd, tm = (T)mom, omd = (T)(1.0 - damp);                   \
        TG__CPU_FOR(                                                                             \
            tg__cpu_par_if(n > OPTIM_PAR_MIN), "omp parallel for schedule(static)",              \
            for (int64_t i = 0; i < n; i++) {                                                    \
                T d = g[i];                                                                      \
                if (wd != 0.0)                                                                   \
                    d = d + twd * p[i];                                                          \
                if (b) {                                                                         \
                    T bi = first ? d : (T)(b[i] * tm) + omd * d;                                 \
                    b[i] = bi;                                                                   \
                    d = nesterov ? d + tm * bi : bi;                                             \
                }                                                                                \
                p[i] = p[i] + nlr * d;                                                           \
            });                                                                                  \
    }
SGD_LOOP(float)
SGD_LOOP(double)

/* One Adam/AdamW step; decay is AdamW's factor 1 - lr*wd (1 for Adam) and
 * wd the L2 term added to the gradient (0 for AdamW). */
typedef struct adam_k {
    double decay, wd, b1, b2, eps, step_size, bc2_sqrt;
} adam_k;

#define ADAM_LOOP(T)                                                                   \
    static void adam_##T(int64_t n, T *restrict p, const T *restrict g, T *restrict m, \
                         T *restrict v, const adam_k *k) {                             \
        const T decay = (T)k->decay, wd = (T)k->wd, b1 = (T)k->b1, b2 = (T)k->b2;      \
        const T omb1 = (T)(1.0 - k->b1), omb2 = (T)(1.0 - k->b2), eps = (T)k->eps;     \
        const T nss = (T)-k->step_size, bc2 = (T)k->bc2_sqrt;                          \
        const bool do_decay = k->decay != 1.0, do_wd = k->wd != 0.0;                   \
        TG__CPU_FOR(                                                                   \
            tg__cpu_par_if(n > OPTIM_PAR_MIN), "omp parallel for schedule(static)",    \
            for (int64_t i = 0; i < n; i++) {                                          \
                T pi = p[i], d = g[i];                                                 \
                if (do_decay)                                                          \
                    pi = pi * decay;                                                   \
                if (do_wd)                                                             \
                    d = d + wd * pi;                                                   \
                T mi = (T)(m[i] * b1) + omb1 * d;                                      \
                T vi = (T)(v[i] * b2) + (T)(omb2 * d) * d;                             \
                m[i] = mi;                                                             \
                v[i] = vi;                                                             \
                T den = (T)sqrt(vi) / bc2 + eps;                                       \
                p[i] = pi + (T)(nss * mi) / den;                                       \
            });                                                                        \
    }
ADAM_LOOP(float)
ADAM_LOOP(double)

/* A gradient the step can use: present, of the parameter's dtype and shape,
 * contiguous and on the same device. NULL grads and frozen parameters are
 * skipped, not errors. */
static tg_status check_grad(tg_ctx *ctx, const tg_tensor *p, int i) {
    const tg_tensor *g = p->grad;
    const char *nm = p->name ? p->name : "(unnamed)";
    char a[96], b[96];
    if (g->dtype != p->dtype)
        return tg__fail(ctx, TG_ERR_DTYPE, "optim step: parameter %d (%s) is %s but its grad is %s",
                        i, nm, tg_dtype_name(p->dtype), tg_dtype_name(g->dtype));
    if (g->ndim != p->ndim || memcmp(g->shape, p->shape, sizeof(int64_t) * (size_t)p->ndim) != 0)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "optim step: parameter %d (%s) has shape %s but its grad has shape %s", i,
                        nm, tg_shape_str(p, a, sizeof a), tg_shape_str(g, b, sizeof b));
    if (!tg_is_contiguous(g) || g->device != p->device)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "optim step: the grad of parameter %d (%s) is not a contiguous tensor on "
                        "the parameter's device",
                        i, nm);
    return TG_OK;
}

static bool takes_step(const tg_tensor *p) { return p->requires_grad && p->grad; }

/* The backend's fused update, for a backend that has one. */
static tg_status backend_update(tg_ctx *ctx, tg_optim_update_args *a, const tg_tensor *p) {
    a->dtype = p->dtype;
    a->n = tg_numel(p);
    a->p = data_of(p);
    a->g = data_of(p->grad);
    a->err = ctx->kerr;
    a->errlen = sizeof ctx->kerr;
    ctx->kerr[0] = '\0';
    tg_status s = ctx->be->optim_update(ctx->bstate, a);
    if (s)
        return tg__fail(ctx, s, "optim step (%s): %s", p->name ? p->name : "(unnamed)",
                        ctx->kerr[0] ? ctx->kerr : tg_status_str(s));
    return TG_OK;
}

static tg_status sgd_slot(const tg_optim *o, optim_slot *sl, double lr) {
    const tg_optim_config *c = &o->cfg;
    tg_ctx *ctx = o->ctx;
    tg_tensor *p = sl->p;
    int64_t n = tg_numel(p);
    bool first = true;
    double wd = sl->no_decay ? 0.0 : c->weight_decay;
    if (sl->step) {
        double t;
        tg_status s = step_get(ctx, sl->step, &t);
        if (s || (s = step_set(ctx, sl->step, t + 1.0)))
            return s;
        first = t == 0.0;
        tg_bump_version(sl->buf);
    }
    void *b = sl->buf ? data_of(sl->buf) : NULL;
    if (ctx->be->optim_update) {
        tg_optim_update_args a = {.rule = TG_OPTIM_RULE_SGD,
                                  .buf = b,
                                  .lr = lr,
                                  .wd = wd,
                                  .momentum = c->momentum,
                                  .dampening = c->dampening,
                                  .nesterov = c->nesterov,
                                  .first = first};
        return backend_update(ctx, &a, p);
    }
    if (p->dtype == TG_F32)
        sgd_float(n, data_of(p), data_of(p->grad), b, lr, wd, c->momentum,
                  c->dampening, c->nesterov, first);
    else
        sgd_double(n, data_of(p), data_of(p->grad), b, lr, wd, c->momentum,
                   c->dampening, c->nesterov, first);
    return TG_OK;
}

static tg_status adam_slot(const tg_optim *o, optim_slot *sl, double lr) {
    const tg_optim_config *c = &o->cfg;
    tg_ctx *ctx = o->ctx;
    tg_tensor *p = sl->p;
    double t;
    tg_status s = step_get(ctx, sl->step, &t);
    if (s || (s = step_set(ctx, sl->step, t + 1.0)))
        return s;
    t += 1.0;
    tg_bump_version(sl->m);
    tg_bump_version(sl->v);
    double wd = sl->no_decay ? 0.0 : c->weight_decay;
    adam_k k = {
        .decay = c->kind == TG_OPTIM_ADAMW ? 1.0 - lr * wd : 1.0,
        .wd = c->kind == TG_OPTIM_ADAM ? wd : 0.0,
        .b1 = c->beta1,
        .b2 = c->beta2,
        .eps = c->eps,
        .step_size = lr / (1.0 - pow(c->beta1, t)),
        .bc2_sqrt = sqrt(1.0 - pow(c->beta2, t)),
    };
    if (ctx->be->optim_update) {
        tg_optim_update_args a = {.rule = TG_OPTIM_RULE_ADAM,
                                  .m = data_of(sl->m),
                                  .v = data_of(sl->v),
                                  .lr = lr,
                                  .wd = k.wd,
                                  .decay = k.decay,
                                  .beta1 = k.b1,
                                  .beta2 = k.b2,
                                  .eps = k.eps,
                                  .step_size = k.step_size,
                                  .bc2_sqrt = k.bc2_sqrt};
        return backend_update(ctx, &a, p);
    }
    if (p->dtype == TG_F32)
        adam_float(tg_numel(p), data_of(p), data_of(p->grad), data_of(sl->m), data_of(sl->v), &k);
    else
        adam_double(tg_numel(p), data_of(p), data_of(p->grad), data_of(sl->m), data_of(sl->v), &k);
    return TG_OK;
}

tg_status tg_optim_step(tg_ctx *ctx, tg_optim *opt, double lr) {
    if (!opt)
        return tg__fail(ctx, TG_ERR_INVALID, "optim step: NULL optimizer");
    if (isnan(lr) || isinf(lr))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "optim step: lr = %g is not finite (an invalid schedule? see tg_lr_check)",
                        lr);
    if (lr < 0.0)
        lr = opt->cfg.lr;
    /* Check everything first, so that a bad gradient leaves all untouched. */
    for (int i = 0; i < opt->n; i++) {
        tg_status s;
        if (takes_step(opt->slots[i].p) && (s = check_grad(ctx, opt->slots[i].p, i)))
            return s;
    }
    for (int i = 0; i < opt->n; i++) {
        optim_slot *sl = &opt->slots[i];
        if (!takes_step(sl->p))
            continue;
        tg_status s =
            opt->cfg.kind == TG_OPTIM_SGD ? sgd_slot(opt, sl, lr) : adam_slot(opt, sl, lr);
        if (s)
            return s;
        tg_bump_version(sl->p);
    }
    opt->steps++;
    return TG_OK;
}

tg_status tg_optim_zero_grad(tg_ctx *ctx, tg_optim *opt) {
    if (!opt)
        return tg__fail(ctx, TG_ERR_INVALID, "optim zero_grad: NULL optimizer");
    for (int i = 0; i < opt->n; i++) {
        tg_status s = tg_zero_grad(ctx, opt->slots[i].p);
        if (s)
            return s;
    }
    return TG_OK;
}

/* ---- gradient clipping ---- */

#define SUMSQ(T)                                                                    \
    static double sumsq_##T(int64_t n, const T *x) {                                \
        double part[CLIP_BLOCKS];                                                   \
        int64_t nb = n < CLIP_BLOCKS ? (n > 0 ? n : 1) : CLIP_BLOCKS;               \
        int64_t per = (n + nb - 1) / nb;                                            \
        TG__CPU_FOR(                                                                \
            tg__cpu_par_if(n > OPTIM_PAR_MIN), "omp parallel for schedule(static)", \
            for (int64_t b = 0; b < nb; b++) {                                      \
                int64_t lo = b * per, hi = lo + per < n ? lo + per : n;             \
                double acc = 0.0;                                                   \
                for (int64_t i = lo; i < hi; i++)                                   \
                    acc += (double)x[i] * (double)x[i];                             \
                part[b] = acc;                                                      \
            });                                                                     \
        double s = 0.0;                                                             \
        for (int64_t b = 0; b < nb; b++)                                            \
            s += part[b];                                                           \
        return s;                                                                   \
    }
SUMSQ(float)
SUMSQ(double)

static tg_status check_clip_grad(tg_ctx *ctx, const tg_tensor *p, int i) {
    const tg_tensor *g = p->grad;
    const char *nm = p->name ? p->name : "(unnamed)";
    if (!tg_dtype_is_float(g->dtype) || !tg_is_contiguous(g) || g->device != TG_DEVICE_CPU)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "clip_grad_norm: the grad of parameter %d (%s) must be a contiguous f32 "
                        "or f64 CPU tensor",
                        i, nm);
    return TG_OK;
}

tg_status tg_clip_grad_norm(tg_ctx *ctx, int n, tg_tensor *const *params, double max_norm,
                            double *total_norm) {
    if (n < 0 || (n > 0 && !params))
        return tg__fail(ctx, TG_ERR_INVALID, "clip_grad_norm: bad parameter list (n = %d)", n);
    if (!(max_norm >= 0.0))
        return tg__fail(ctx, TG_ERR_INVALID, "clip_grad_norm: max_norm = %g must be >= 0",
                        max_norm);
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        const tg_tensor *p = params[i];
        if (!p || !p->grad)
            continue;
        tg_status s = check_clip_grad(ctx, p, i);
        if (s)
            return s;
        const tg_tensor *g = p->grad;
        ss += g->dtype == TG_F32 ? sumsq_float(tg_numel(g), data_of(g))
                                 : sumsq_double(tg_numel(g), data_of(g));
    }
    double total = sqrt(ss);
    if (total_norm)
        *total_norm = total;
    double coef = max_norm / (total + 1e-6);
    /* torch multiplies by min(coef, 1); a factor of exactly 1 changes
     * nothing, so it is skipped. A NaN total gives a NaN coef, which torch
     * also applies. */
    if (!(coef < 1.0) && !isnan(coef))
        return TG_OK;
    for (int i = 0; i < n; i++) {
        tg_tensor *p = params[i];
        if (!p || !p->grad)
            continue;
        if (ctx->be->scale(ctx->bstate, p->grad->dtype, tg_numel(p->grad), coef, data_of(p->grad)))
            return tg__fail(ctx, TG_ERR_BACKEND, "clip_grad_norm: backend scale failed");
        tg_bump_version(p->grad);
    }
    return TG_OK;
}
