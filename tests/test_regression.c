/*
 * test_regression.c: f32 regression targets. A split whose y is f32 (N,)
 * or (N, K) opens without num_classes, its targets read back exactly, bad
 * targets (NaN, rank 3) are refused naming the file, split and row, the
 * trainer fits a linear target with the MSE loss, and its evaluation's MSE
 * and MAE equal the ones computed here from the model's own outputs; the
 * command line reports test_mse and test_mae and refuses a loss that does
 * not fit the targets.
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
#include <hdf5.h>

#include "tapegrad/datasets.h"
#include "tapegrad/trainer.h"
#include "test_util.h"

static int group_setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_regression");
}

static int group_teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

enum {
    PER = 16,
    K = 2
};

static float xv(int i, int k) { return (float)((i * 37 + k * 11) % 23) / 11.0f - 1.0f; }

/* The targets: two linear functions of the inputs. */
static void targets(int i, float *t) {
    float a = 0, b = 0;
    for (int k = 0; k < PER; k++) {
        a += (k < 8 ? 0.25f : -0.125f) * xv(i, k);
        b += (k % 3 == 0 ? 0.5f : 0.0f) * xv(i, k);
    }
    t[0] = a;
    t[1] = b + 1.0f;
}

/* Split `name` of n samples x (n, 1, 4, 4) f32 and y f32 (n, K) (or (n,)
 * with k 1, or rank 3 with k -1); bad_row >= 0 puts a NaN in y there. */
static void put_split(hid_t f, const char *name, int n, int k, int bad_row) {
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t xd[4] = {(hsize_t)n, 1, 4, 4}, yd[3] = {(hsize_t)n, K, 1};
    float *x = malloc(sizeof(float) * (size_t)(n * PER)),
          *y = malloc(sizeof(float) * (size_t)n * K);
    for (int i = 0; i < n; i++) {
        float t[K];
        for (int j = 0; j < PER; j++)
            x[i * PER + j] = xv(i, j);
        targets(i, t);
        for (int j = 0; j < (k == 1 ? 1 : K); j++)
            y[i * (k == 1 ? 1 : K) + j] = t[j];
    }
    if (bad_row >= 0)
        y[bad_row * K + 1] = NAN;
    hid_t sp = H5Screate_simple(4, xd, NULL);
    hid_t d = H5Dcreate2(g, "x", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate_simple(k == 1 ? 1 : k == -1 ? 3 : 2, yd, NULL);
    d = H5Dcreate2(g, "y", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Gclose(g);
    free(x);
    free(y);
}

static const char *make_file(const char *name, int k, int bad_row) {
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, 512, "%s", tgt_path(name));
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    put_split(f, "train", 256, k, bad_row);
    put_split(f, "test", 64, k, -1);
    H5Fclose(f);
    return p;
}

static void test_read_targets(void **state) {
    (void)state;
    char err[512];
    tg_dataset *ds;
    const char *p = make_file("reg.h5", K, -1);
    assert_int_equal(tg_dataset_open(p, "train", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_target_dim(ds), K);
    assert_int_equal(tg_dataset_num_classes(ds), 0);
    int64_t idx[3] = {200, 7, 7};
    float t[3 * K], x[3 * PER], want[K];
    int64_t y[3];
    assert_int_equal(tg_dataset_read_targets(ds, idx, 3, x, t, err, sizeof err), TG_OK);
    for (int i = 0; i < 3; i++) {
        targets((int)idx[i], want);
        assert_true(t[i * K] == want[0] && t[i * K + 1] == want[1]);
        assert_true(x[i * PER + 5] == xv((int)idx[i], 5));
    }
    assert_int_equal(tg_dataset_read(ds, idx, 3, x, y, err, sizeof err), TG_ERR_INVALID);
    assert_non_null(strstr(err, "holds f32 regression targets, not labels"));
    tg_dataset_close(ds);
    /* (N,): one target a sample. */
    p = make_file("reg1.h5", 1, -1);
    assert_int_equal(tg_dataset_open(p, "train", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_target_dim(ds), 1);
    assert_int_equal(tg_dataset_read_targets(ds, idx, 1, NULL, t, err, sizeof err), TG_OK);
    targets(200, want);
    assert_true(t[0] == want[0]);
    tg_dataset_close(ds);
    /* A NaN target, and f32 y of rank 3. */
    p = make_file("nan.h5", K, 3);
    assert_int_equal(tg_dataset_open(p, "train", &ds, err, sizeof err), TG_ERR_FORMAT);
    assert_non_null(strstr(err, "nan.h5: /train/y[3] holds nan at value 1; regression targets "
                                "must be finite"));
    p = make_file("rank3.h5", -1, -1);
    assert_int_equal(tg_dataset_open(p, "train", &ds, err, sizeof err), TG_ERR_FORMAT);
    assert_non_null(strstr(err, "rank3.h5: /train/y is f32 of rank 3 (shape 256x2x1) but "
                                "regression targets are (N,) or (N, K)"));
}

/* Trains the mlp with MSE, then checks the evaluation's MSE and MAE
 * against the model's outputs on the test split computed here. */
static void test_trainer_mse(void **state) {
    (void)state;
    const char *p = make_file("fit.h5", K, -1);
    tg_ctx *ctx;
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = 1};
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    tg_trainer_config c = tg_trainer_defaults(TG_MODEL_MLP);
    c.data_path = p;
    c.batch_size = 32;
    c.max_steps = 160;
    c.log_every = 0;
    c.optim.lr = 3e-3;
    tg_trainer *tr;
    if (tg_trainer_new(ctx, &c, &tr) != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
    assert_int_equal(tg_trainer_get_config(tr)->loss, TG_LOSS_MSE);
    tg_eval_result before, after;
    assert_int_equal(tg_trainer_evaluate(tr, &before), TG_OK);
    assert_true(before.regression && isnan(before.accuracy));
    if (tg_trainer_run(tr) != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
    assert_int_equal(tg_trainer_evaluate(tr, &after), TG_OK);
    print_message("mse %.5f -> %.5f, mae %.5f -> %.5f\n", before.loss, after.loss, before.mae,
                  after.mae);
    assert_true(after.loss < 0.1 * before.loss);
    /* The model's outputs on all 64 test samples, compared here. */
    float x[64 * PER];
    for (int i = 0; i < 64 * PER; i++)
        x[i] = xv(i / PER, i % PER);
    int64_t xs[4] = {64, 1, 4, 4};
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, xs, x);
    tg_tensor *out = tg_model_forward(ctx, tg_trainer_model(tr), xt, false);
    assert_non_null(out);
    float o[64 * K];
    assert_int_equal(tg_to_host(ctx, out, o, sizeof o), TG_OK);
    tg_set_grad_enabled(ctx, prev);
    double se = 0, ae = 0;
    for (int i = 0; i < 64; i++) {
        float t[K];
        targets(i, t);
        for (int j = 0; j < K; j++) {
            se += ((double)o[i * K + j] - t[j]) * ((double)o[i * K + j] - t[j]);
            ae += fabs((double)o[i * K + j] - t[j]);
        }
    }
    assert_true(fabs(after.loss - se / (64 * K)) <= 1e-9 * (1 + se));
    assert_true(fabs(after.mae - ae / (64 * K)) <= 1e-9 * (1 + ae));
    tg_trainer_free(tr);
    tg_ctx_free(ctx);
}

static void test_cli(void **state) {
    (void)state;
    char p[512], m[512];
    snprintf(p, sizeof p, "%s", make_file("cli.h5", K, -1));
    snprintf(m, sizeof m, "%s", tgt_path("reg.jsonl"));
    assert_int_equal(tgt_run("train --data '%s' --max-steps 64 --batch-size 32 --threads 1 "
                             "--lr 0.003 --metrics '%s' --ckpt-dir '%s'",
                             p, m, tgt_path("ck")),
                     0);
    tgt_expect_out("test mse: ");
    tgt_expect_out("test_mse ");
    FILE *f = fopen(m, "r");
    assert_non_null(f);
    static char text[1 << 16];
    text[fread(text, 1, sizeof text - 1, f)] = 0;
    fclose(f);
    const char *end = strstr(text, "{\"event\":\"end\"");
    assert_non_null(end);
    assert_non_null(strstr(end, "\"test_acc\":null"));
    assert_non_null(strstr(end, "\"test_mse\":0."));
    assert_non_null(strstr(end, "\"test_mae\":0."));
    /* The loss the run resolved auto to. */
    assert_non_null(strstr(text, "\"loss\":\"mse\""));
    /* eval of the checkpoint reports the same MSE and MAE (6 digits). */
    const char *mse = strstr(end, "\"test_mse\":"), *mae = strstr(end, "\"test_mae\":");
    double want_mse = strtod(mse + 11, NULL), want_mae = strtod(mae + 11, NULL);
    assert_int_equal(
        tgt_run("eval --ckpt '%s/ckpt-00000064.h5' --data '%s' --threads 1", tgt_path("ck"), p), 0);
    const char *e = strstr(tgt_out, ": mse ");
    assert_non_null(e);
    double got_mse = strtod(e + 6, NULL), got_mae = strtod(strstr(e, "mae ") + 4, NULL);
    assert_true(fabs(got_mse - want_mse) <= 1e-6 && fabs(got_mae - want_mae) <= 1e-6);
    assert_int_equal(tgt_run("train --data '%s' --loss ce --max-steps 1 --threads 1", p), 1);
    tgt_expect_out("the cross-entropy loss needs class labels, but train/y holds f32 regression "
                   "targets");
    assert_int_equal(
        tgt_run("train --data '%s' --label-smoothing 0.1 --max-steps 1 --threads 1", p), 1);
    tgt_expect_out("label smoothing 0.1 applies to class labels");
    const char *d = tgt_make_dataset();
    assert_int_equal(tgt_run("train --data '%s' --loss mse --max-steps 1 --threads 1", d), 1);
    tgt_expect_out("the MSE loss needs f32 regression targets, but train/y holds class labels");
}

/* convert npy: f4 targets (N, K) and f8 targets (N,) become f32 y
 * without num_classes; a NaN target and --num-classes are refused. */
static void test_convert_targets(void **state) {
    (void)state;
    enum {
        M = 8
    };
    float x[M * PER], t2[M * K];
    double t1[M];
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < PER; j++)
            x[i * PER + j] = xv(i, j);
        targets(i, t2 + i * K);
        t1[i] = (double)i / 3.0;
    }
    char xs[512], y2[512], y1[512], out[512], err[512];
    snprintf(xs, sizeof xs, "%s", tgt_path("cx.npy"));
    snprintf(y2, sizeof y2, "%s", tgt_path("cy2.npy"));
    snprintf(y1, sizeof y1, "%s", tgt_path("cy1.npy"));
    snprintf(out, sizeof out, "%s", tgt_path("conv.h5"));
    tgt_write_npy(xs, "<f4", "(8, 1, 4, 4)", x, sizeof x);
    tgt_write_npy(y2, "<f4", "(8, 2)", t2, sizeof t2);
    tgt_write_npy(y1, "<f8", "(8,)", t1, sizeof t1);
    assert_int_equal(tg_npy_convert(xs, y2, out, "train", NULL, err, sizeof err), TG_OK);
    assert_int_equal(tg_npy_convert(xs, y1, out, "test", NULL, err, sizeof err), TG_OK);
    tg_dataset *ds;
    int64_t idx[M];
    float t[M * K];
    for (int i = 0; i < M; i++)
        idx[i] = M - 1 - i;
    assert_int_equal(tg_dataset_open(out, "train", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_target_dim(ds), K);
    assert_int_equal(tg_dataset_read_targets(ds, idx, M, NULL, t, err, sizeof err), TG_OK);
    for (int i = 0; i < M; i++)
        assert_true(t[i * K] == t2[idx[i] * K] && t[i * K + 1] == t2[idx[i] * K + 1]);
    tg_dataset_close(ds);
    assert_int_equal(tg_dataset_open(out, "test", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_target_dim(ds), 1);
    assert_int_equal(tg_dataset_read_targets(ds, idx, M, NULL, t, err, sizeof err), TG_OK);
    for (int i = 0; i < M; i++)
        assert_true(t[i] == (float)t1[idx[i]]);
    tg_dataset_close(ds);
    hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_int_equal(H5Aexists_by_name(f, "train", "num_classes", H5P_DEFAULT), 0);
    H5Fclose(f);
    t2[5] = NAN;
    tgt_write_npy(y2, "<f4", "(8, 2)", t2, sizeof t2);
    assert_int_equal(tg_npy_convert(xs, y2, out, "bad", NULL, err, sizeof err), TG_ERR_FORMAT);
    assert_non_null(strstr(err, "cy2.npy: y[2, 1] is NaN; float values must be finite"));
    tg_npy_options o = {.num_classes = 3};
    assert_int_equal(tg_npy_convert(xs, y1, out, "bad", &o, err, sizeof err), TG_ERR_INVALID);
    assert_non_null(strstr(err, "num_classes 3 given, but y holds float regression targets"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_targets),
        cmocka_unit_test(test_trainer_mse),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_convert_targets),
    };
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
