/*
 * runtime/models.c: the built-in image classifiers (see trainer.h).
 *
 * Layers are initialised in the order PyTorch's modules would be, from one
 * stream, and registered under state_dict names, so that a checkpoint's
 * tensors line up with a PyTorch model of the same definition.
 */
#include "internal.h"

#include <string.h>

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

/* PyTorch's BatchNorm defaults. */
#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1

static tg_status init_mlp(tg_ctx *ctx, tg_model *m, tg_rng *rng) {
    int64_t in = m->in_shape[0] * m->in_shape[1] * m->in_shape[2];
    tg_status s = tg_linear_init(ctx, &m->fc1, &m->params, "fc1", in, 256, true, rng);
    if (s == TG_OK)
        s = tg_linear_init(ctx, &m->fc2, &m->params, "fc2", 256, 128, true, rng);
    if (s == TG_OK)
        s = tg_linear_init(ctx, &m->fc3, &m->params, "fc3", 128, m->num_classes, true, rng);
    return s;
}

/* conv1, [bn1], conv2, [bn2], fc1, [bn3], fc2: the order in which a PyTorch
 * module that declares them so registers them. */
static tg_status init_cnn(tg_ctx *ctx, tg_model *m, bool bn, tg_rng *rng) {
    static const int k5[2] = {5, 5};
    const tg_conv2d_opts o = {.stride = {1, 1}, .pad = {2, 2}, .dilation = {1, 1}};
    int64_t flat = 64 * (m->in_shape[1] / 4) * (m->in_shape[2] / 4);
    tg_params *ps = &m->params;
    tg_status s = tg_conv2d_init(ctx, &m->conv1, ps, "conv1", m->in_shape[0], 32, k5, &o, true, rng);
    if (s == TG_OK && bn)
        s = tg_batchnorm_init(ctx, &m->bn1, ps, "bn1", 32, BN_EPS, BN_MOMENTUM);
    if (s == TG_OK)
        s = tg_conv2d_init(ctx, &m->conv2, ps, "conv2", 32, 64, k5, &o, true, rng);
    if (s == TG_OK && bn)
        s = tg_batchnorm_init(ctx, &m->bn2, ps, "bn2", 64, BN_EPS, BN_MOMENTUM);
    if (s == TG_OK)
        s = tg_linear_init(ctx, &m->fc1, ps, "fc1", flat, 1024, true, rng);
    if (s == TG_OK && bn)
        s = tg_batchnorm_init(ctx, &m->bn3, ps, "bn3", 1024, BN_EPS, BN_MOMENTUM);
    if (s == TG_OK)
        s = tg_linear_init(ctx, &m->fc2, ps, "fc2", 1024, m->num_classes, true, rng);
    return s;
}

tg_status tg_model_init(tg_ctx *ctx, tg_model *m, tg_model_kind kind, const int64_t in_shape[3],
                        int64_t num_classes, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    if (!tg_model_name(kind))
        return tg__fail(ctx, TG_ERR_INVALID, "model: unknown kind %d", (int)kind);
    for (int i = 0; i < 3; i++)
        if (in_shape[i] < 1)
            return tg__fail(ctx, TG_ERR_INVALID, "model %s: bad input shape (%lld, %lld, %lld)",
                            tg_model_name(kind), (long long)in_shape[0],
                            (long long)in_shape[1], (long long)in_shape[2]);
    if (num_classes < 2)
        return tg__fail(ctx, TG_ERR_INVALID, "model %s: needs at least 2 classes, got %lld",
                        tg_model_name(kind), (long long)num_classes);
    if (kind != TG_MODEL_MLP && (in_shape[1] % 4 != 0 || in_shape[2] % 4 != 0))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "model %s: input height and width must be multiples of 4 (two 2x2 "
                        "poolings), got %lldx%lld",
                        tg_model_name(kind), (long long)in_shape[1], (long long)in_shape[2]);
    m->kind = kind;
    memcpy(m->in_shape, in_shape, sizeof(m->in_shape));
    m->num_classes = num_classes;
    tg_rng rng = tg_rng_make(seed, 0);
    if (kind == TG_MODEL_MLP)
        return init_mlp(ctx, m, &rng);
    return init_cnn(ctx, m, kind == TG_MODEL_CNN_BN, &rng);
}

static tg_tensor *forward_mlp(tg_ctx *ctx, tg_model *m, tg_tensor *x) {
    tg_tensor *h = tg_flatten(ctx, x, 1);
    h = tg_relu(ctx, tg_linear_forward(ctx, &m->fc1, h));
    h = tg_relu(ctx, tg_linear_forward(ctx, &m->fc2, h));
    return tg_linear_forward(ctx, &m->fc3, h);
}

/* The module order is PyTorch's (conv, [bn,] relu, pool), but relu runs after
 * the pooling: max and relu commute (relu is monotonic), values and gradients
 * are the same (a window's gradient goes to its maximum, and relu's mask of
 * the maximum is the window's), and relu's two passes then cover a quarter of
 * the elements. Only NaN inputs, which end training anyway, tell them apart. */
static tg_tensor *forward_cnn(tg_ctx *ctx, tg_model *m, tg_tensor *x, bool training) {
    static const int k2[2] = {2, 2}, s2[2] = {2, 2}, p0[2] = {0, 0};
    bool bn = m->kind == TG_MODEL_CNN_BN;
    tg_tensor *h = tg_conv2d_forward(ctx, &m->conv1, x);
    if (bn)
        h = tg_batchnorm_forward(ctx, &m->bn1, h, training);
    h = tg_relu(ctx, tg_max_pool2d(ctx, h, k2, s2, p0));
    h = tg_conv2d_forward(ctx, &m->conv2, h);
    if (bn)
        h = tg_batchnorm_forward(ctx, &m->bn2, h, training);
    h = tg_relu(ctx, tg_max_pool2d(ctx, h, k2, s2, p0));
    h = tg_linear_forward(ctx, &m->fc1, tg_flatten(ctx, h, 1));
    if (bn)
        h = tg_batchnorm_forward(ctx, &m->bn3, h, training);
    return tg_linear_forward(ctx, &m->fc2, tg_relu(ctx, h));
}

tg_tensor *tg_model_forward(tg_ctx *ctx, tg_model *m, tg_tensor *x, bool training) {
    if (!x)
        return NULL;
    if (x->ndim != 4 || x->shape[1] != m->in_shape[0] || x->shape[2] != m->in_shape[1] ||
        x->shape[3] != m->in_shape[2]) {
        char buf[96];
        tg__fail(ctx, TG_ERR_SHAPE, "model %s: input of shape %s, expected (N, %lld, %lld, %lld)",
                 tg_model_name(m->kind), tg_shape_str(x, buf, sizeof buf),
                 (long long)m->in_shape[0], (long long)m->in_shape[1], (long long)m->in_shape[2]);
        return NULL;
    }
    if (m->kind == TG_MODEL_MLP)
        return forward_mlp(ctx, m, x);
    return forward_cnn(ctx, m, x, training);
}

void tg_model_set_sync_bn(tg_model *m, bool sync) {
    m->bn1.sync = m->bn2.sync = m->bn3.sync = sync;
}

bool tg_model_has_bn(const tg_model *m) { return m->kind == TG_MODEL_CNN_BN; }
