/*
 * runtime/nn/models.c: the built-in image classifiers (see trainer.h).
 *
 * Every model is a model file (tapegrad/modelfile.h): the built-in ones are
 * the shipped files models/mlp.ini, cnn.ini and cnn-bn.ini, compiled into the
 * library, so there is one way to build a model. Layers are initialised in
 * file order, as PyTorch's modules would be, from one stream, and
 * registered under state_dict names, so that a checkpoint's tensors line up
 * with a PyTorch model of the same definition.
 */
#include "core/internal.h"
#include "modelfile_internal.h"

#include <stdio.h>
#include <string.h>

#include "tapegrad/modelfile.h"
#include "tapegrad/trainer.h"

static const char *const model_names[TG_MODEL_COUNT] = {
    [TG_MODEL_MLP] = "mlp",
    [TG_MODEL_CNN] = "cnn",
    [TG_MODEL_CNN_BN] = "cnn-bn",
};

const char *tg_model_name(tg_model_kind kind) {
    if ((int)kind < 0 || kind >= TG_MODEL_COUNT)
        return NULL;
    return model_names[kind];
}

bool tg_model_from_name(const char *name, tg_model_kind *kind) {
    for (int k = 0; name && k < TG_MODEL_COUNT; k++) {
        if (strcmp(name, model_names[k]) == 0) {
            *kind = (tg_model_kind)k;
            return true;
        }
    }
    return false;
}

/* A copy of s in the context's persistent memory. */
static const char *keep_str(tg_ctx *ctx, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = tg__arena_alloc(ctx, &ctx->pers_meta, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* "(a, b, c)": the first nd sizes of sh. */
static const char *sizes_str(const int64_t *sh, int nd, char *buf, size_t len) {
    size_t off = (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < nd && off < len; d++)
        off += (size_t)snprintf(buf + off, len - off, "%s%lld", d ? ", " : "", (long long)sh[d]);
    if (off < len)
        snprintf(buf + off, len - off, ")");
    return buf;
}

static tg_status check_dims(tg_ctx *ctx, const char *name, int ndim, const int64_t *in_shape,
                            int64_t num_classes) {
    char buf[96];
    bool ok = ndim >= 1 && ndim <= 3 && in_shape;
    for (int i = 0; ok && i < ndim; i++)
        ok = in_shape[i] >= 1;
    if (!ok)
        return tg__fail(
            ctx, TG_ERR_INVALID, "model %s: bad input shape %s (expected 1 to 3 sizes >= 1)", name,
            in_shape && ndim >= 1 && ndim <= 3 ? sizes_str(in_shape, ndim, buf, sizeof buf)
                                               : "(none)");
    if (num_classes < 2)
        return tg__fail(ctx, TG_ERR_INVALID, "model %s: needs at least 2 classes, got %lld", name,
                        (long long)num_classes);
    return TG_OK;
}

tg_status tg_model_init_sample(tg_ctx *ctx, tg_model *m, const char *name, const char *text,
                               int ndim, const int64_t *shape, int64_t num_classes, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    m->kind = TG_MODEL_COUNT;
    if (!name || !text)
        return tg__fail(ctx, TG_ERR_INVALID, "model: NULL name or text");
    tg_status s = check_dims(ctx, name, ndim, shape, num_classes);
    if (s)
        return s;
    for (int k = 0; k < TG_MODEL_COUNT; k++)
        if (tg_model_builtin_text(model_names[k]) == text)
            m->kind = (tg_model_kind)k;
    /* Padded with leading 1s: (D) -> (1, 1, D), (H, W) -> (1, H, W). */
    m->in_shape[0] = m->in_shape[1] = 1;
    memcpy(m->in_shape + 3 - ndim, shape, (size_t)ndim * sizeof *shape);
    m->in_ndim = ndim == 1 ? 1 : 3;
    m->num_classes = num_classes;
    m->name = keep_str(ctx, name);
    if (!m->name)
        return ctx->status;
    tg_net_options o = {.path = m->name,
                        .in_ndim = m->in_ndim,
                        .in_shape = m->in_shape + 3 - m->in_ndim,
                        .classes = num_classes,
                        .seed = seed};
    tg_status s2 = tg_net_build(ctx, text, strlen(text), &o, &m->params, &m->net);
    if (s2 == TG_OK && m->params.nparams == 0)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "model %s: no layer has parameters (nothing to train: add a [linear] or "
                        "[conv2d])",
                        m->name);
    return s2;
}

tg_status tg_model_init_text(tg_ctx *ctx, tg_model *m, const char *name, const char *text,
                             const int64_t in_shape[3], int64_t num_classes, uint64_t seed) {
    return tg_model_init_sample(ctx, m, name, text, 3, in_shape, num_classes, seed);
}

tg_status tg_model_init(tg_ctx *ctx, tg_model *m, tg_model_kind kind, const int64_t in_shape[3],
                        int64_t num_classes, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    const char *name = tg_model_name(kind);
    if (!name)
        return tg__fail(ctx, TG_ERR_INVALID, "model: unknown kind %d", (int)kind);
    return tg_model_init_text(ctx, m, name, tg_model_builtin_text(name), in_shape, num_classes,
                              seed);
}

tg_tensor *tg_model_forward(tg_ctx *ctx, tg_model *m, tg_tensor *x, bool training) {
    if (!x)
        return NULL;
    if (!m || !m->net) {
        tg__fail(ctx, TG_ERR_INVALID, "model: not initialised");
        return NULL;
    }
    const int64_t *want = m->in_shape + 3 - m->in_ndim;
    bool ok = x->ndim == m->in_ndim + 1;
    for (int d = 0; ok && d < m->in_ndim; d++)
        ok = x->shape[d + 1] == want[d];
    if (!ok) {
        char buf[96], wb[96];
        tg__fail(ctx, TG_ERR_SHAPE, "model %s: input of shape %s, expected (N, %s", m->name,
                 tg_shape_str(x, buf, sizeof buf), sizes_str(want, m->in_ndim, wb, sizeof wb) + 1);
        return NULL;
    }
    return tg_net_forward(ctx, m->net, x, training);
}

void tg_model_set_sync_bn(tg_model *m, bool sync) { tg__net_set_sync_bn(m->net, sync); }

bool tg_model_has_bn(const tg_model *m) { return tg__net_has_bn(m->net); }
