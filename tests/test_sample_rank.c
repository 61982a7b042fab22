/*
 * test_sample_rank.c: datasets whose samples are vectors (N, D) or
 * one-channel images (N, H, W) besides (N, C, H, W). The mlp built for a
 * vector (D) is the one built for the image (1, 1, D) (same parameters, the
 * same logits bit for bit), (H, W) builds for (1, H, W); the command line
 * trains the mlp on an (N, D) f32 and an (N, H, W) u8 dataset and a model
 * file whose input is (D) with linear layers, the loss falling; a checkpoint
 * of a vector model records its input, and eval, inspect and export rebuild
 * it; a convolution given vectors is refused naming the sample's shape and
 * what the layer expects.
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

#include "tapegrad/checkpoint.h"
#include "tapegrad/modelfile.h"
#include "tapegrad/trainer.h"
#include "test_util.h"

static int group_setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_sample_rank");
}

static int group_teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

static void ok(tg_ctx *ctx, tg_status s) {
    if (s != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
}

/* Logits of model m for x (n samples) given with the shape xs (ndim). */
static float *logits(tg_ctx *ctx, tg_model *m, int ndim, const int64_t *xs, const float *x,
                     int64_t classes) {
    tg_step_reset(ctx);
    tg_tensor *lg = tg_model_forward(ctx, m, tg_from_data(ctx, TG_F32, ndim, xs, x), false);
    if (!lg)
        fail_msg("%s", tg_ctx_error(ctx));
    assert_int_equal(tg_numel(lg), xs[0] * classes);
    size_t nb = (size_t)tg_numel(lg) * sizeof(float);
    float *p = malloc(nb);
    ok(ctx, tg_to_host(ctx, lg, p, nb));
    return p;
}

/* The mlp built for the vector (16) equals the one built for the image
 * (1, 1, 16): same tensors, same logits; (4, 4) builds for (1, 4, 4). */
static void test_mlp_any_rank(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    const char *mlp = tg_model_builtin_text("mlp");
    const int64_t d[1] = {16}, img[3] = {1, 1, 16}, hw[2] = {4, 4};
    tg_model v, im, m2;
    ok(ctx, tg_model_init_sample(ctx, &v, "mlp", mlp, 1, d, 3, 5));
    ok(ctx, tg_model_init_sample(ctx, &im, "mlp", mlp, 3, img, 3, 5));
    ok(ctx, tg_model_init_sample(ctx, &m2, "mlp", mlp, 2, hw, 3, 5));
    assert_int_equal(v.kind, TG_MODEL_MLP);
    assert_int_equal(v.in_ndim, 1);
    assert_int_equal(im.in_ndim, 3);
    assert_int_equal(m2.in_ndim, 3);
    assert_true(v.in_shape[0] == 1 && v.in_shape[1] == 1 && v.in_shape[2] == 16);
    assert_true(m2.in_shape[0] == 1 && m2.in_shape[1] == 4 && m2.in_shape[2] == 4);
    assert_int_equal(v.params.nparams, im.params.nparams);
    for (int i = 0; i < v.params.nparams; i++) {
        const tg_tensor *a = v.params.params[i], *b = im.params.params[i];
        size_t nb = (size_t)tg_numel(a) * sizeof(float);
        assert_int_equal(tg_numel(a), tg_numel(b));
        float *pa = malloc(nb), *pb = malloc(nb);
        ok(ctx, tg_to_host(ctx, a, pa, nb));
        ok(ctx, tg_to_host(ctx, b, pb, nb));
        if (memcmp(pa, pb, nb) != 0)
            fail_msg("tensor %s differs between the (16) and (1, 1, 16) models", a->name);
        free(pa);
        free(pb);
    }
    enum {
        N = 5
    };
    float x[N * 16];
    for (int i = 0; i < N * 16; i++)
        x[i] = (float)((i * 37) % 19) / 9.0f - 1.0f;
    const int64_t xv[2] = {N, 16}, xi[4] = {N, 1, 1, 16}, x2[4] = {N, 1, 4, 4};
    float *a = logits(ctx, &v, 2, xv, x, 3), *b = logits(ctx, &im, 4, xi, x, 3);
    float *c = logits(ctx, &m2, 4, x2, x, 3);
    assert_memory_equal(a, b, N * 3 * sizeof(float));
    /* m2 has the same parameters as well (same seed, same flattened size). */
    assert_memory_equal(a, c, N * 3 * sizeof(float));
    free(a);
    free(b);
    free(c);
    /* A model for vectors refuses images, naming what it expects. */
    tg_step_reset(ctx);
    assert_null(tg_model_forward(ctx, &v, tg_from_data(ctx, TG_F32, 4, xi, x), false));
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_ctx_error(ctx), "expected (N, 16)"));
    tg_ctx_clear_error(ctx);
    /* A convolution given vectors. */
    tg_model cv;
    assert_int_equal(
        tg_model_init_sample(ctx, &cv, "cnn", tg_model_builtin_text("cnn"), 1, d, 3, 5),
        TG_ERR_SHAPE);
    assert_non_null(strstr(tg_ctx_error(ctx), "[conv2d]"));
    assert_non_null(strstr(tg_ctx_error(ctx), "is (N, 16), expected (N, C, H, W)"));
    tg_ctx_clear_error(ctx);
    /* Rank 0 or 4 is no sample. */
    const int64_t four[4] = {1, 1, 4, 4};
    assert_int_equal(tg_model_init_sample(ctx, &cv, "mlp", mlp, 4, four, 3, 5), TG_ERR_INVALID);
    tg_ctx_clear_error(ctx);
    assert_int_equal(tg_model_init_sample(ctx, &cv, "mlp", mlp, 0, four, 3, 5), TG_ERR_INVALID);
    tg_ctx_free(ctx);
}

enum {
    NTRAIN = 512,
    NTEST = 64,
    D = 16
};

/* A 4-class set converted by `tapegrad convert npy` to `out`: vectors (N, D)
 * f32 (images false) or images (N, 8, 8) u8, the class in where the values
 * are high. */
static const char *make_set(const char *out, int images) {
    static float xf[NTRAIN * D];
    static unsigned char xu[NTRAIN * 64];
    static int64_t y[NTRAIN];
    for (int i = 0; i < NTRAIN; i++) {
        y[i] = i % 4;
        for (int j = 0; j < D; j++)
            xf[i * D + j] = (j % 4 == y[i] ? 1.0f : 0.0f) + (float)((i * 7 + j * 13) % 50) / 50.0f;
        for (int j = 0; j < 64; j++)
            xu[i * 64 + j] =
                (unsigned char)((j / 8 % 4 == y[i] ? 160 : 40) + (i * 7 + j * 13) % 50);
    }
    static char path[512];
    snprintf(path, sizeof path, "%s", tgt_path(out));
    for (int s = 0; s < 2; s++) {
        int n = s ? NTEST : NTRAIN;
        char shape[48];
        if (images) {
            snprintf(shape, sizeof shape, "(%d, 8, 8)", n);
            tgt_write_npy(tgt_path("x.npy"), "|u1", shape, xu, (size_t)n * 64);
        } else {
            snprintf(shape, sizeof shape, "(%d, %d)", n, D);
            tgt_write_npy(tgt_path("x.npy"), "<f4", shape, xf, (size_t)n * D * 4);
        }
        snprintf(shape, sizeof shape, "(%d,)", n);
        tgt_write_npy(tgt_path("y.npy"), "<i8", shape, y, (size_t)n * 8);
        if (tgt_run("convert npy --x '%s' --y '%s' --out '%s' --split %s", tgt_path("x.npy"),
                    tgt_path("y.npy"), path, s ? "test" : "train") != 0)
            fail_msg("convert npy:\n%s", tgt_out);
    }
    return path;
}

/* The train_loss of epoch `e` of 3 in the last run's output. */
static double epoch_loss(int e) {
    char key[48];
    snprintf(key, sizeof key, "epoch %d/3 done: train_loss ", e);
    const char *p = strstr(tgt_out, key);
    if (!p)
        fail_msg("no '%s' in:\n%s", key, tgt_out);
    return strtod(p + strlen(key), NULL);
}

/* Trains `model` 3 epochs on data and checks that the loss falls. */
static void train_falls(const char *data, const char *model, const char *extra) {
    if (tgt_run("train --data '%s' --model '%s' --epochs 3 --batch-size 32 --lr 0.003 %s", data,
                model, extra) != 0)
        fail_msg("train %s on %s:\n%s", model, data, tgt_out);
    double l1 = epoch_loss(1), l3 = epoch_loss(3);
    if (!(l3 < 0.5 * l1))
        fail_msg("%s on %s: train_loss %g after epoch 1, %g after 3: expected a fall:\n%s", model,
                 data, l1, l3, tgt_out);
}

static void test_mlp_on_vectors_and_checkpoint(void **state) {
    (void)state;
    const char *data = make_set("v.h5", 0);
    char ck[512];
    snprintf(ck, sizeof ck, "--ckpt-dir '%s'", tgt_path("ckv"));
    train_falls(data, "mlp", ck);
    const char *t = strstr(tgt_out, "test accuracy: ");
    assert_non_null(t);
    const char *tl = strstr(t, "test_loss ");
    assert_non_null(tl);
    double test_loss = strtod(tl + 10, NULL);
    /* 3 epochs of 16 steps. */
    char file[600];
    snprintf(file, sizeof file, "%s/ckpt-00000048.h5", tgt_path("ckv"));
    if (tgt_run("eval --ckpt '%s' --data '%s'", file, data) != 0)
        fail_msg("eval:\n%s", tgt_out);
    const char *lp = strstr(tgt_out, "on test: loss ");
    assert_non_null(lp);
    double ev = strtod(lp + 14, NULL);
    if (fabs(ev - test_loss) > 5e-4)
        fail_msg("eval loss %g but training's last test_loss %g:\n%s", ev, test_loss, tgt_out);
    tgt_expect_out("accuracy 1.000000");
    if (tgt_run("inspect '%s'", file) != 0)
        fail_msg("inspect:\n%s", tgt_out);
    tgt_expect_out("built for input (16), 4 classes");
    if (tgt_run("export --ckpt '%s' --out '%s'", file, tgt_path("v.safetensors")) != 0)
        fail_msg("export:\n%s", tgt_out);
    tgt_expect_out("6 tensors of model 'mlp'");
    /* The recorded input: (1, 1, 16) with rank 1. */
    tg_ckpt_meta m;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    ok(ctx, tg_ckpt_read_meta(ctx, file, &m));
    assert_int_equal(m.model_input_ndim, 1);
    assert_true(m.model_input[0] == 1 && m.model_input[1] == 1 && m.model_input[2] == 16);
    tg_ckpt_meta_free(&m);
    tg_ctx_free(ctx);
    /* The vector model does not take the image set. */
    const char *img = make_set("i.h5", 1);
    assert_int_not_equal(tgt_run("eval --ckpt '%s' --data '%s'", file, img), 0);
    tgt_expect_out("fc1.weight");
}

static void test_images_without_channels(void **state) {
    (void)state;
    const char *data = make_set("i.h5", 1);
    train_falls(data, "mlp", "");
    /* A convolution takes them as (1, 8, 8); its checkpoint records that. */
    char ck[512];
    snprintf(ck, sizeof ck, "--ckpt-dir '%s'", tgt_path("cki"));
    train_falls(data, "cnn", ck);
    char file[600];
    snprintf(file, sizeof file, "%s/ckpt-00000048.h5", tgt_path("cki"));
    if (tgt_run("inspect '%s'", file) != 0)
        fail_msg("inspect:\n%s", tgt_out);
    tgt_expect_out("built for input (1, 8, 8), 4 classes");
    if (tgt_run("eval --ckpt '%s' --data '%s'", file, data) != 0)
        fail_msg("eval:\n%s", tgt_out);
}

static void test_model_file_for_vectors(void **state) {
    (void)state;
    const char *data = make_set("v.h5", 0);
    const char *ini = tgt_path("vec.ini");
    tgt_write_file(ini, "[input]\nshape = 16\n\n[linear]\nout = 32\n\n[relu]\n\n"
                        "[linear]\nout = classes\n");
    train_falls(data, ini, "");
    /* A file that says another size names both. */
    const char *bad = tgt_path("vec20.ini");
    tgt_write_file(bad, "[input]\nshape = 20\n\n[linear]\nout = classes\n");
    assert_int_not_equal(tgt_run("train --data '%s' --model '%s' --epochs 1", data, bad), 0);
    tgt_expect_out("/train/x has samples of shape (16)");
    tgt_expect_out("the file says (N, 20) but the data gives (N, 16)");
}

static void test_conv_on_vectors(void **state) {
    (void)state;
    const char *data = make_set("v.h5", 0);
    int rc = tgt_run("train --data '%s' --model cnn --epochs 1", data);
    assert_int_not_equal(rc, 0);
    tgt_expect_out("/train/x has samples of shape (16), which model cnn does not take");
    tgt_expect_out("layer 'conv1' [conv2d]: input 'input' is (N, 16), expected (N, C, H, W)");
    /* Samples of rank 4 are no input of any model. */
    static float x[NTRAIN * D];
    static int64_t y[NTRAIN];
    for (int i = 0; i < NTRAIN; i++)
        y[i] = i % 2;
    char r4[512];
    snprintf(r4, sizeof r4, "%s", tgt_path("r4.h5"));
    for (int s = 0; s < 2; s++) {
        char shape[48];
        snprintf(shape, sizeof shape, "(%d, 1, 2, 4, 2)", NTRAIN);
        tgt_write_npy(tgt_path("x.npy"), "<f4", shape, x, sizeof x);
        snprintf(shape, sizeof shape, "(%d,)", NTRAIN);
        tgt_write_npy(tgt_path("y.npy"), "<i8", shape, y, sizeof y);
        if (tgt_run("convert npy --x '%s' --y '%s' --out '%s' --split %s", tgt_path("x.npy"),
                    tgt_path("y.npy"), r4, s ? "test" : "train") != 0)
            fail_msg("convert npy:\n%s", tgt_out);
    }
    assert_int_not_equal(tgt_run("train --data '%s' --model mlp --epochs 1", r4), 0);
    tgt_expect_out("/train/x has samples of rank 4; the models take vectors (D), images (H, W) or "
                   "(C, H, W)");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_any_rank),
        cmocka_unit_test(test_mlp_on_vectors_and_checkpoint),
        cmocka_unit_test(test_images_without_channels),
        cmocka_unit_test(test_model_file_for_vectors),
        cmocka_unit_test(test_conv_on_vectors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
