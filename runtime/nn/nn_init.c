/*
 * Parameter initialisation and the tg_params registry (nn.h).
 *
 * Values are drawn on the host from the caller's counter-based stream, in
 * row-major order, then copied to the tensor once: the same seed gives the
 * same parameters on every backend and thread count. Initialisation runs
 * once per model, so its host buffer is an ordinary malloc.
 */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t tg_params_numel(const tg_params *ps)
{
    int64_t n = 0;
    for (int i = 0; ps && i < ps->nparams; i++)
        n += tg_numel(ps->params[i]);
    return n;
}

/* fan_in = size(1) * receptive field, fan_out = size(0) * receptive field,
 * as torch.nn.init._calculate_fan_in_and_fan_out (a 1-D tensor has fan_in =
 * fan_out = its size, where PyTorch refuses; biases use explicit bounds). */
static bool fans(tg_ctx *ctx, const char *op, const tg_tensor *t, double *fan_in, double *fan_out)
{
    if (t->ndim < 1) {
        tg__fail(ctx, TG_ERR_SHAPE, "%s: fan in and fan out need at least 1 dim, got a scalar",
                 op);
        return false;
    }
    if (t->ndim == 1) {
        *fan_in = *fan_out = (double)t->shape[0];
    } else {
        double rf = 1;
        for (int d = 2; d < t->ndim; d++)
            rf *= (double)t->shape[d];
        *fan_in = (double)t->shape[1] * rf;
        *fan_out = (double)t->shape[0] * rf;
    }
    if (*fan_in <= 0 || *fan_out <= 0) {
        tg__fail(ctx, TG_ERR_SHAPE, "%s: fan in / fan out of an empty tensor", op);
        return false;
    }
    return true;
}

/* Draws numel values (uniform in [lo, hi) or normal(lo, hi)) and writes them. */
static tg_status fill_random(tg_ctx *ctx, const char *op, tg_tensor *t, bool normal, double a,
                             double b, tg_rng *rng)
{
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: NULL tensor", op);
    if (!rng)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: NULL rng", op);
    if (!tg_dtype_is_float(t->dtype))
        return tg__fail(ctx, TG_ERR_DTYPE, "%s: expected a float tensor, got %s", op,
                        tg_dtype_name(t->dtype));
    int64_t n = tg_numel(t);
    size_t es = tg_dtype_size(t->dtype);
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    double *d = t->dtype == TG_F64 ? malloc((size_t)(n ? n : 1) * sizeof *d) : NULL;
    if (!f || (t->dtype == TG_F64 && !d)) {
        free(f);
        free(d);
        return tg__fail(ctx, TG_ERR_NOMEM, "%s: out of memory", op);
    }
    if (normal)
        tg_rng_normal(rng, f, n, (float)a, (float)b);
    else
        tg_rng_uniform(rng, f, n, (float)a, (float)b);
    for (int64_t i = 0; d && i < n; i++)
        d[i] = f[i];
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_status s = tg_copy_from_host(ctx, t, d ? (void *)d : (void *)f, (size_t)n * es);
    tg_set_grad_enabled(ctx, prev);
    free(f);
    free(d);
    return s;
}

tg_status tg_init_uniform(tg_ctx *ctx, tg_tensor *t, double lo, double hi, tg_rng *rng)
{
    if (!(lo <= hi))
        return tg__fail(ctx, TG_ERR_INVALID, "init_uniform: lo %g > hi %g", lo, hi);
    return fill_random(ctx, "init_uniform", t, false, lo, hi, rng);
}

tg_status tg_init_normal(tg_ctx *ctx, tg_tensor *t, double mean, double std, tg_rng *rng)
{
    if (!(std >= 0))
        return tg__fail(ctx, TG_ERR_INVALID, "init_normal: std %g < 0", std);
    return fill_random(ctx, "init_normal", t, true, mean, std, rng);
}

tg_status tg_init_kaiming_uniform(tg_ctx *ctx, tg_tensor *t, double a, tg_rng *rng)
{
    double fi, fo;
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "init_kaiming_uniform: NULL tensor");
    if (!fans(ctx, "init_kaiming_uniform", t, &fi, &fo))
        return ctx->status;
    double bound = sqrt(2.0 / (1.0 + a * a)) * sqrt(3.0 / fi);
    return fill_random(ctx, "init_kaiming_uniform", t, false, -bound, bound, rng);
}

tg_status tg_init_kaiming_normal(tg_ctx *ctx, tg_tensor *t, double a, tg_rng *rng)
{
    double fi, fo;
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "init_kaiming_normal: NULL tensor");
    if (!fans(ctx, "init_kaiming_normal", t, &fi, &fo))
        return ctx->status;
    return fill_random(ctx, "init_kaiming_normal", t, true, 0.0,
                       sqrt(2.0 / (1.0 + a * a)) / sqrt(fi), rng);
}

tg_status tg_init_xavier_uniform(tg_ctx *ctx, tg_tensor *t, double gain, tg_rng *rng)
{
    double fi, fo;
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "init_xavier_uniform: NULL tensor");
    if (!fans(ctx, "init_xavier_uniform", t, &fi, &fo))
        return ctx->status;
    double bound = gain * sqrt(6.0 / (fi + fo));
    return fill_random(ctx, "init_xavier_uniform", t, false, -bound, bound, rng);
}

tg_status tg_init_xavier_normal(tg_ctx *ctx, tg_tensor *t, double gain, tg_rng *rng)
{
    double fi, fo;
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "init_xavier_normal: NULL tensor");
    if (!fans(ctx, "init_xavier_normal", t, &fi, &fo))
        return ctx->status;
    return fill_random(ctx, "init_xavier_normal", t, true, 0.0, gain * sqrt(2.0 / (fi + fo)), rng);
}

/* ---- registration ---- */

tg_tensor *tg__nn_tensor(tg_ctx *ctx, tg_params *ps, const char *prefix, const char *suffix,
                         bool trainable, tg_dtype dt, int ndim, const int64_t *shape)
{
    /* The name is built here and copied by tg_param / tg_persistent. */
    size_t len = (prefix && *prefix ? strlen(prefix) + 1 : 0) + strlen(suffix) + 1;
    char buf[128];
    char *name = len <= sizeof buf ? buf : malloc(len);
    if (!name)
        return tg__fail(ctx, TG_ERR_NOMEM, "params: out of memory naming %s", suffix), NULL;
    if (prefix && *prefix)
        snprintf(name, len, "%s.%s", prefix, suffix);
    else
        snprintf(name, len, "%s", suffix);
    tg_tensor *t = NULL;
    if (ps) {
        int n = trainable ? ps->nparams : ps->nbuffers;
        if (n >= TG_PARAMS_MAX || ps->nparams < 0 || ps->nbuffers < 0) {
            tg__fail(ctx, TG_ERR_INVALID,
                     "params: cannot register %s: the list holds at most %d %s", name,
                     TG_PARAMS_MAX, trainable ? "parameters" : "buffers");
            goto done;
        }
        for (int i = 0; i < ps->nparams + ps->nbuffers; i++) {
            const tg_tensor *o = i < ps->nparams ? ps->params[i] : ps->buffers[i - ps->nparams];
            if (o->name && strcmp(o->name, name) == 0) {
                tg__fail(ctx, TG_ERR_INVALID,
                         "params: the name %s is registered twice (layer names must be unique)",
                         name);
                goto done;
            }
        }
    }
    t = trainable ? tg_param(ctx, dt, ndim, shape, name)
                  : tg_persistent(ctx, dt, ndim, shape, name);
done:
    if (name != buf)
        free(name);
    if (!t)
        return NULL;
    if (ps) {
        if (trainable) {
            ps->no_decay[ps->nparams] = ndim < 2;
            ps->params[ps->nparams++] = t;
        }
        else
            ps->buffers[ps->nbuffers++] = t;
    }
    return t;
}
