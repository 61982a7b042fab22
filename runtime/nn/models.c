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

static tg_status check_dims(tg_ctx *ctx, const char *name, const int64_t in_shape[3],
                            int64_t num_classes) {
    for (int i = 0; i < 3; i++)
        if (in_shape[i] < 1)
            return tg__fail(ctx, TG_ERR_INVALID, "model %s: bad input shape (%lld, %lld, %lld)",
                            name, (long long)in_shape[0], (long long)in_shape[1],
                            (long long)in_shape[2]);
    if (num_classes < 2)
        return tg__fail(ctx, TG_ERR_INVALID, "model %s: needs at least 2 classes, got %lld", name,
                        (long long)num_classes);
    return TG_OK;
}

tg_status tg_model_init_text(tg_ctx *ctx, tg_model *m, const char *name, const char *text,
                             const int64_t in_shape[3], int64_t num_classes, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    m->kind = TG_MODEL_COUNT;
    if (!name || !text)
        return tg__fail(ctx, TG_ERR_INVALID, "model: NULL name or text");
    tg_status s = check_dims(ctx, name, in_shape, num_classes);
    if (s)
        return s;
    for (int k = 0; k < TG_MODEL_COUNT; k++)
        if (tg_model_builtin_text(model_names[k]) == text)
            m->kind = (tg_model_kind)k;
    memcpy(m->in_shape, in_shape, sizeof(m->in_shape));
    m->num_classes = num_classes;
    m->name = keep_str(ctx, name);
    if (!m->name)
        return ctx->status;
    tg_net_options o = {
        .path = m->name, .in_ndim = 3, .in_shape = in_shape, .classes = num_classes, .seed = seed};
    tg_status s2 = tg_net_build(ctx, text, strlen(text), &o, &m->params, &m->net);
    if (s2 == TG_OK && m->params.nparams == 0)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "model %s: no layer has parameters (nothing to train: add a [linear] or "
                        "[conv2d])",
                        m->name);
    return s2;
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
    if (x->ndim != 4 || x->shape[1] != m->in_shape[0] || x->shape[2] != m->in_shape[1] ||
        x->shape[3] != m->in_shape[2]) {
        char buf[96];
        tg__fail(ctx, TG_ERR_SHAPE, "model %s: input of shape %s, expected (N, %lld, %lld, %lld)",
                 m->name, tg_shape_str(x, buf, sizeof buf), (long long)m->in_shape[0],
                 (long long)m->in_shape[1], (long long)m->in_shape[2]);
        return NULL;
    }
    return tg_net_forward(ctx, m->net, x, training);
}

void tg_model_set_sync_bn(tg_model *m, bool sync) { tg__net_set_sync_bn(m->net, sync); }

bool tg_model_has_bn(const tg_model *m) { return tg__net_has_bn(m->net); }
