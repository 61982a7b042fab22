/*
 * tests/test_models_builtin.c: the built-in models, now the shipped model
 * files models/mlp.ini, cnn.ini and cnn-bn.ini, train exactly as the C
 * builders they replaced did.
 *
 * The old builders (runtime/nn/models.c before model files) are kept here, in
 * the test only: each case builds both models from one seed, checks that
 * they register the same tensors under the same names with bit-identical
 * initial values, then takes the same AdamW steps with both on the same
 * random batches and requires every step's loss, and the parameters at the
 * end, to be bit-identical, at one thread and at two.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/modelfile.h"
#include "tapegrad/nn.h"
#include "tapegrad/optim.h"
#include "tapegrad/rng.h"
#include "tapegrad/runtime.h"
#include "tapegrad/trainer.h"

/* ---- the old builders, verbatim but for the names ---- */

typedef struct old_model {
    tg_model_kind kind;
    int64_t in_shape[3];
    int64_t num_classes;
    tg_params params;
    tg_linear fc1, fc2, fc3;
    tg_conv2d_layer conv1, conv2;
    tg_batchnorm bn1, bn2, bn3;
} old_model;

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1

static tg_status init_mlp(tg_ctx *ctx, old_model *m, tg_rng *rng) {
    int64_t in = m->in_shape[0] * m->in_shape[1] * m->in_shape[2];
    tg_status s = tg_linear_init(ctx, &m->fc1, &m->params, "fc1", in, 256, true, rng);
    if (s == TG_OK)
        s = tg_linear_init(ctx, &m->fc2, &m->params, "fc2", 256, 128, true, rng);
    if (s == TG_OK)
        s = tg_linear_init(ctx, &m->fc3, &m->params, "fc3", 128, m->num_classes, true, rng);
    return s;
}

static tg_status init_cnn(tg_ctx *ctx, old_model *m, bool bn, tg_rng *rng) {
    static const int k5[2] = {5, 5};
    const tg_conv2d_opts o = {.stride = {1, 1}, .pad = {2, 2}, .dilation = {1, 1}};
    int64_t flat = 64 * (m->in_shape[1] / 4) * (m->in_shape[2] / 4);
    tg_params *ps = &m->params;
    tg_status s =
        tg_conv2d_init(ctx, &m->conv1, ps, "conv1", m->in_shape[0], 32, k5, &o, true, rng);
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

static tg_status old_init(tg_ctx *ctx, old_model *m, tg_model_kind kind, const int64_t in[3],
                          int64_t classes, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    m->kind = kind;
    memcpy(m->in_shape, in, sizeof(m->in_shape));
    m->num_classes = classes;
    tg_rng rng = tg_rng_make(seed, 0);
    if (kind == TG_MODEL_MLP)
        return init_mlp(ctx, m, &rng);
    return init_cnn(ctx, m, kind == TG_MODEL_CNN_BN, &rng);
}

static tg_tensor *forward_mlp(tg_ctx *ctx, old_model *m, tg_tensor *x) {
    tg_tensor *h = tg_flatten(ctx, x, 1);
    h = tg_relu(ctx, tg_linear_forward(ctx, &m->fc1, h));
    h = tg_relu(ctx, tg_linear_forward(ctx, &m->fc2, h));
    return tg_linear_forward(ctx, &m->fc3, h);
}

static tg_tensor *forward_cnn(tg_ctx *ctx, old_model *m, tg_tensor *x, bool training) {
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

static tg_tensor *old_forward(tg_ctx *ctx, old_model *m, tg_tensor *x, bool training) {
    return m->kind == TG_MODEL_MLP ? forward_mlp(ctx, m, x) : forward_cnn(ctx, m, x, training);
}

/* ---- the comparison ---- */

#define STEPS 6

static void ok(tg_ctx *ctx, tg_status s) {
    if (s != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
}

/* The bytes of every tensor of both lists must be the same. */
static void same_tensors(tg_ctx *ctx, const tg_params *a, const tg_params *b) {
    assert_int_equal(a->nparams, b->nparams);
    assert_int_equal(a->nbuffers, b->nbuffers);
    for (int i = 0; i < a->nparams + a->nbuffers; i++) {
        tg_tensor *x = i < a->nparams ? a->params[i] : a->buffers[i - a->nparams];
        tg_tensor *y = i < b->nparams ? b->params[i] : b->buffers[i - b->nparams];
        assert_string_equal(x->name, y->name);
        assert_int_equal(tg_numel(x), tg_numel(y));
        size_t n = (size_t)tg_numel(x) * tg_dtype_size(x->dtype);
        char *p = malloc(n + 1), *q = malloc(n + 1);
        ok(ctx, tg_to_host(ctx, x, p, n));
        ok(ctx, tg_to_host(ctx, y, q, n));
        if (memcmp(p, q, n) != 0)
            fail_msg("tensor %s differs", x->name);
        free(p);
        free(q);
    }
}

static void curve(tg_model_kind kind, int threads, const int64_t in[3], int64_t batch) {
    tg_ctx_config cc = {.threads = threads};
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    old_model om;
    tg_model nm;
    ok(ctx, old_init(ctx, &om, kind, in, 10, 42));
    ok(ctx, tg_model_init(ctx, &nm, kind, in, 10, 42));
    assert_int_equal(nm.kind, kind);
    same_tensors(ctx, &om.params, &nm.params);
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
    oc.lr = 2e-3;
    oc.weight_decay = 1e-2;
    tg_optim *oo, *no;
    ok(ctx, tg_optim_new(ctx, &oc, om.params.nparams, om.params.params, &oo));
    ok(ctx, tg_optim_new(ctx, &oc, nm.params.nparams, nm.params.params, &no));
    int64_t xs[4] = {batch, in[0], in[1], in[2]}, n = batch * in[0] * in[1] * in[2];
    float *x = malloc((size_t)n * sizeof *x);
    int64_t *y = malloc((size_t)batch * sizeof *y);
    tg_rng rng = tg_rng_make(7, 0);
    for (int step = 0; step < STEPS; step++) {
        tg_rng_normal(&rng, x, n, 0.0f, 1.0f);
        for (int64_t i = 0; i < batch; i++)
            y[i] = (i * 7 + step) % 10;
        double loss[2];
        for (int which = 0; which < 2; which++) {
            tg_step_reset(ctx);
            tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, xs, x);
            tg_tensor *yt = tg_from_data(ctx, TG_I64, 1, &batch, y);
            tg_tensor *lg =
                which ? tg_model_forward(ctx, &nm, xt, true) : old_forward(ctx, &om, xt, true);
            tg_tensor *l = lg ? tg_cross_entropy(ctx, lg, yt, 0.0) : NULL;
            if (!l)
                fail_msg("%s", tg_ctx_error(ctx));
            ok(ctx, tg_item(ctx, l, &loss[which]));
            ok(ctx, tg_backward(ctx, l, NULL, 0));
            ok(ctx, tg_optim_step(ctx, which ? no : oo, -1.0));
            ok(ctx, tg_optim_zero_grad(ctx, which ? no : oo));
        }
        if (memcmp(&loss[0], &loss[1], sizeof(double)) != 0)
            fail_msg("%s, %d threads, step %d: loss %.17g (old builder) != %.17g (model file)",
                     tg_model_name(kind), threads, step, loss[0], loss[1]);
    }
    same_tensors(ctx, &om.params, &nm.params);
    /* And evaluation mode (running statistics in cnn-bn). */
    tg_step_reset(ctx);
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, xs, x);
    tg_tensor *a = old_forward(ctx, &om, xt, false), *b = tg_model_forward(ctx, &nm, xt, false);
    assert_non_null(a);
    assert_non_null(b);
    size_t nb = (size_t)tg_numel(a) * sizeof(float);
    float *pa = malloc(nb), *pb = malloc(nb);
    ok(ctx, tg_to_host(ctx, a, pa, nb));
    ok(ctx, tg_to_host(ctx, b, pb, nb));
    assert_memory_equal(pa, pb, nb);
    free(pa);
    free(pb);
    free(x);
    free(y);
    tg_optim_free(oo);
    tg_optim_free(no);
    tg_ctx_free(ctx);
}

static void test_mlp(void **state) {
    (void)state;
    const int64_t in[3] = {1, 28, 28};
    curve(TG_MODEL_MLP, 1, in, 32);
    curve(TG_MODEL_MLP, 2, in, 32);
}

static void test_cnn(void **state) {
    (void)state;
    const int64_t in[3] = {1, 28, 28};
    curve(TG_MODEL_CNN, 1, in, 8);
    curve(TG_MODEL_CNN, 2, in, 8);
}

static void test_cnn_bn(void **state) {
    (void)state;
    const int64_t in[3] = {3, 16, 12};
    curve(TG_MODEL_CNN_BN, 1, in, 8);
    curve(TG_MODEL_CNN_BN, 2, in, 8);
}

/* The shipped texts are the files of models/ (compiled in at build time). */
static void test_shipped_text(void **state) {
    (void)state;
    int n = 0;
    const char *const *names = tg_model_builtin_names(&n);
    assert_true(n >= 5);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/../models/%s.ini", TG_FIXTURE_DIR "/..", names[i]);
        FILE *f = fopen(path, "rb");
        if (!f)
            fail_msg("%s: missing", path);
        static char buf[1 << 16];
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        assert_string_equal(buf, tg_model_builtin_text(names[i]));
    }
    assert_null(tg_model_builtin_text("nope"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_cnn),
        cmocka_unit_test(test_cnn_bn),
        cmocka_unit_test(test_shipped_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
