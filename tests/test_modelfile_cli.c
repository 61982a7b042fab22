/*
 * tests/test_modelfile_cli.c: model files from the command line and in the
 * trainer.
 *
 * - ResNet-20 (the shipped resnet20) trains on synthetic 3x32x32 images
 *   through the library's trainer: its loss falls over a few steps.
 * - `train --model ./FILE.ini` trains, checkpoints the model file, and
 *   `eval` and `export` rebuild the model from the checkpoint alone, with
 *   the loss train reported; `--resume auto` continues.
 * - The shipped ResNets train with crop and flip augmentation by default,
 *   also when resumed from a checkpoint without --model; a model file with
 *   the same layers and --augment none do not.
 * - `inspect FILE.ini` prints the summary table; the errors of --model (an
 *   unknown name, a missing file, a file that does not build) name what is
 *   wrong and exit non-zero.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tapegrad/modelfile.h"
#include "tapegrad/trainer.h"
#include "test_util.h"

/* A 4-class dataset of C x S x S u8 images: class k brightens every 4th
 * column starting at k. */
static const char *make_images(const char *name, int c, int s, int ntrain, int ntest) {
    static char out[512];
    snprintf(out, sizeof out, "%s", tgt_path(name));
    for (int split = 0; split < 2; split++) {
        int n = split ? ntest : ntrain;
        size_t per = (size_t)c * s * s;
        unsigned char *x = malloc((size_t)n * per);
        int64_t *y = malloc((size_t)n * sizeof *y);
        for (int i = 0; i < n; i++) {
            y[i] = i % 4;
            for (size_t j = 0; j < per; j++)
                x[i * per + j] = (unsigned char)(((int)(j % (size_t)s) % 4 == y[i] ? 150 : 30) +
                                                 (i * 7 + (int)j * 13) % 60);
        }
        char shape[64];
        snprintf(shape, sizeof shape, "(%d, %d, %d, %d)", n, c, s, s);
        tgt_write_npy(tgt_path("x.npy"), "|u1", shape, x, (size_t)n * per);
        snprintf(shape, sizeof shape, "(%d,)", n);
        tgt_write_npy(tgt_path("y.npy"), "<i8", shape, y, (size_t)n * 8);
        free(x);
        free(y);
        if (tgt_run("convert npy --x '%s' --y '%s' --out '%s' --split %s", tgt_path("x.npy"),
                    tgt_path("y.npy"), out, split ? "test" : "train") != 0)
            fail_msg("convert npy:\n%s", tgt_out);
    }
    return out;
}

typedef struct losses {
    int n;
    double v[64];
} losses;

static tg_status on_event(tg_trainer *tr, const tg_trainer_event *ev, bool *stop, void *user) {
    (void)tr;
    (void)stop;
    losses *l = user;
    if (ev->kind == TG_EVENT_STEP && l->n < 64)
        l->v[l->n++] = ev->loss;
    return TG_OK;
}

static void test_resnet20_learns(void **state) {
    (void)state;
    const char *data = make_images("r.h5", 3, 32, 256, 64);
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    tg_trainer_config c = tg_trainer_defaults(TG_MODEL_MLP);
    c.model_text = tg_model_builtin_text("resnet20");
    c.model_name = "resnet20";
    c.data_path = data;
    c.batch_size = 32;
    c.max_steps = 8;
    c.epochs = 2;
    c.log_every = 1;
    c.optim.lr = 2e-3;
    losses l = {0};
    c.hooks.user = &l;
    c.hooks.on_event = on_event;
    tg_trainer *tr;
    if (tg_trainer_new(ctx, &c, &tr) != TG_OK || tg_trainer_run(tr) != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
    assert_int_equal(l.n, 8);
    double first = l.v[0], last = (l.v[5] + l.v[6] + l.v[7]) / 3;
    printf("resnet20 on 3x32x32: loss %.4f (step 1) -> %.4f (steps 6-8)\n", first, last);
    assert_true(first > 1.0);
    assert_true(last < 0.5 * first);
    assert_int_equal(tg_params_numel(tg_trainer_params(tr)), 272474 - 650 + 64 * 4 + 4);
    tg_trainer_free(tr);
    tg_ctx_free(ctx);
}

static const char *five = "[conv2d]\nname = conv\nout = 8\nkernel = 3\n[relu]\n[globalavgpool]\n"
                          "[linear]\nname = fc\nout = classes\n";

/* A number after `key` in the text (the first). */
static double number_after(const char *text, const char *key) {
    const char *p = strstr(text, key);
    if (!p)
        fail_msg("'%s' not in:\n%s", key, text);
    return strtod(p + strlen(key), NULL);
}

static void test_train_eval_export(void **state) {
    (void)state;
    const char *data = make_images("s.h5", 3, 8, 128, 32);
    char dataset[512], model[512], ck[512], latest[700];
    snprintf(dataset, sizeof dataset, "%s", data);
    snprintf(model, sizeof model, "%s", tgt_path("five.ini"));
    snprintf(ck, sizeof ck, "%s", tgt_path("ck"));
    tgt_write_file(model, five);
    if (tgt_run("train --model '%s' --data '%s' --epochs 2 --batch-size 32 --lr 0.02 "
                "--ckpt-dir '%s' --quiet",
                model, dataset, ck) != 0)
        fail_msg("train:\n%s", tgt_out);
    double loss = number_after(tgt_out, "test_loss ");
    /* The checkpoint holds the file: eval needs no model argument. */
    FILE *f = fopen(tgt_path("ck/latest"), "r");
    assert_non_null(f);
    char name[128] = "";
    assert_non_null(fgets(name, sizeof name, f));
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
    snprintf(latest, sizeof latest, "%s/%s", ck, name);
    assert_int_equal(tgt_run("eval --ckpt '%s' --data '%s'", latest, dataset), 0);
    double eloss = number_after(tgt_out, "loss ");
    assert_true(eloss > 0);
    if (eloss < loss - 1e-4 || eloss > loss + 1e-4)
        fail_msg("eval loss %.6f, train reported %.6f:\n%s", eloss, loss, tgt_out);
    assert_int_equal(tgt_run("inspect '%s'", latest), 0);
    assert_non_null(strstr(tgt_out, "model file ("));
    assert_non_null(strstr(tgt_out, "[linear]\nname = fc\nout = classes"));
    assert_int_equal(tgt_run("export --ckpt '%s' --out '%s'", latest, tgt_path("m.safetensors")),
                     0);
    assert_non_null(strstr(tgt_out, "4 tensors of model"));
    /* Resume continues from the checkpoint, with the model file it stores
     * when --model is not given. */
    assert_int_equal(tgt_run("train --data '%s' --epochs 3 --batch-size 32 --lr 0.02 "
                             "--ckpt-dir '%s' --resume auto",
                             dataset, ck),
                     0);
    char line[700];
    snprintf(line, sizeof line, "model %s (260 parameters)", model);
    if (!strstr(tgt_out, line))
        fail_msg("'%s' not in:\n%s", line, tgt_out);
    assert_non_null(strstr(tgt_out, "resumed from"));
    assert_non_null(strstr(tgt_out, "epoch 3/3"));
    assert_null(strstr(tgt_out, "epoch 1/3"));
}

static void test_inspect_and_errors(void **state) {
    (void)state;
    char model[512];
    snprintf(model, sizeof model, "%s", tgt_path("five.ini"));
    tgt_write_file(model, five);
    assert_int_equal(tgt_run("inspect '%s' --input-shape 3,32,32 --classes 4", model), 0);
    assert_non_null(strstr(tgt_out, "conv                         conv2d         (N, 8, 30, 30)"
                                    "                        224\n"));
    assert_non_null(strstr(tgt_out, "Total params: 260\n"));
    assert_int_equal(tgt_run("inspect resnet20 --input-shape 3,32,32"), 0);
    assert_non_null(strstr(tgt_out, "Total params: 272,474"));
    /* Errors. */
    assert_int_equal(tgt_run("train --model resnet99 --max-steps 1"), 2);
    assert_non_null(strstr(tgt_out, "--model: expected a shipped model (mlp, cnn, cnn-bn, "
                                    "resnet20, resnet18, gpt) or a model file"));
    assert_int_equal(tgt_run("train --model ./missing.ini --max-steps 1"), 2);
    assert_non_null(strstr(tgt_out, "model file ./missing.ini: No such file"));
    char bad[512];
    snprintf(bad, sizeof bad, "%s", tgt_path("bad.ini"));
    tgt_write_file(bad, "[conv2d]\nname = c\nout = 4\nkernel = 3\nstrides = 2\n");
    const char *data = make_images("e.h5", 1, 8, 32, 8);
    int rc = tgt_run("train --model '%s' --data '%s' --max-steps 1 --batch-size 8", bad, data);
    assert_true(rc != 0);
    if (!strstr(tgt_out, "bad.ini:5: layer 'c' [conv2d]: key 'strides': unknown key"))
        fail_msg("%s", tgt_out);
    assert_int_equal(tgt_run("inspect '%s'", bad), 3);
    assert_non_null(strstr(tgt_out, "bad.ini:5: layer 'c' [conv2d]: key 'strides'"));
    /* --sync-bn needs a batch norm somewhere in the file. */
    char nobn[512];
    snprintf(nobn, sizeof nobn, "%s", tgt_path("nobn.ini"));
    tgt_write_file(nobn, five);
    assert_int_equal(tgt_run("train --model '%s' --data '%s' --max-steps 1 --batch-size 8 "
                             "--sync-bn",
                             nobn, data),
                     2);
    if (!strstr(tgt_out, "--sync-bn needs a model with batch norm;"))
        fail_msg("%s", tgt_out);
    tgt_write_file(bad, "[globalavgpool]\n");
    const char *four = make_images("f.h5", 4, 4, 32, 8);
    assert_true(tgt_run("train --model '%s' --data '%s' --max-steps 1 --batch-size 8", bad,
                        four) != 0);
    if (!strstr(tgt_out, "bad.ini: no layer has parameters (nothing to train"))
        fail_msg("%s", tgt_out);
    tgt_write_file(bad, "[flatten]\n[linear]\nname = fc\nout = 3\n");
    assert_true(tgt_run("train --model '%s' --data '%s' --max-steps 1 --batch-size 8", bad, data) !=
                0);
    if (!strstr(tgt_out, "bad.ini:2: layer 'fc' [linear]: the model ends in (N, 3), expected "
                         "(N, 4) for a classification dataset of 4 classes"))
        fail_msg("%s", tgt_out);
}

/* resnet20's and resnet18's per-model default: --augment crop,flip
 * --augment-pad 2; given options win, and a user's copy of the file is a
 * model file like any other (no augmentation unless asked). */
static void test_resnet_defaults(void **state) {
    (void)state;
    assert_int_equal(tgt_run("train --model resnet20 --print-config"), 0);
    tgt_expect_out("augment = crop,flip\naugment_pad = 2\n");
    assert_int_equal(tgt_run("train --model resnet18 --print-config"), 0);
    tgt_expect_out("augment = crop,flip\naugment_pad = 2\n");
    assert_int_equal(tgt_run("train --model resnet20 --augment none --augment-pad 4 "
                             "--print-config"),
                     0);
    tgt_expect_out("augment = none\naugment_pad = 4\n");
    assert_int_equal(tgt_run("train --model cnn --print-config"), 0);
    tgt_expect_out("augment = none\n");
    char copy[512];
    snprintf(copy, sizeof copy, "%s", tgt_path("resnet20.ini"));
    tgt_write_file(copy, tg_model_builtin_text("resnet20"));
    assert_int_equal(tgt_run("train --model '%s' --print-config", copy), 0);
    tgt_expect_out("augment = none\n");
    assert_int_equal(tgt_run("train --help"), 0);
    tgt_expect_out("resnet20, resnet18: the mlp's, with --augment crop,flip --augment-pad 2");
    /* A run resumed from its checkpoint alone keeps the model's defaults:
     * the warning about changed settings names --max-steps alone. */
    const char *data = make_images("r.h5", 3, 8, 16, 8);
    char ck[512];
    snprintf(ck, sizeof ck, "%s", tgt_path("rck"));
    if (tgt_run("train --model resnet20 --data '%s' --batch-size 8 --max-steps 1 "
                "--ckpt-dir '%s' --quiet",
                data, ck) != 0)
        fail_msg("train:\n%s", tgt_out);
    if (tgt_run("train --data '%s' --batch-size 8 --max-steps 2 --ckpt-dir '%s' --resume auto",
                data, ck) != 0)
        fail_msg("resume:\n%s", tgt_out);
    tgt_expect_out("augment = crop,flip, augment_pad = 2");
    const char *w = strstr(tgt_out, "other settings");
    assert_non_null(w); /* --max-steps changed, and only it */
    char warning[512];
    snprintf(warning, sizeof warning, "%.*s", (int)strcspn(w, "\n"), w);
    if (!strstr(warning, "max_steps = 2;") || strstr(warning, "augment"))
        fail_msg("resumed with other augmentation settings:\n%s", tgt_out);
}

static int setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_modelfile_cli");
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resnet20_learns),
        cmocka_unit_test(test_train_eval_export),
        cmocka_unit_test(test_inspect_and_errors),
        cmocka_unit_test(test_resnet_defaults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
