/*
 * test_augment.c: the image augmentation of the training split (random crop
 * of the zero-padded image, horizontal flip) and the validation hold-out.
 *
 * The transform is checked against an independent computation (build the
 * padded image, cut the window, mirror it); the draws against their
 * definition and their spread; the loader's augmented batches against the
 * transform of the plain batches, for one rank and for two ranks' slices;
 * the hold-out for disjointness, coverage and a sampler that never hands out
 * a held-out sample.
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
#include "test_util.h"

static int group_setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_augment");
}

static int group_teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

/* The reference: pad into a (h+2p) x (w+2p) image per channel, cut the
 * window at (dy, dx), then mirror the window's columns. */
static void reference(const float *src, int c, int h, int w, int p, int dy, int dx, bool flip,
                      const float *fill, float *dst) {
    int ph = h + 2 * p, pw = w + 2 * p;
    float *pad = malloc(sizeof(float) * (size_t)(ph * pw));
    float *win = malloc(sizeof(float) * (size_t)(h * w));
    for (int k = 0; k < c; k++) {
        for (int i = 0; i < ph * pw; i++)
            pad[i] = fill[k];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                pad[(y + p) * pw + x + p] = src[(k * h + y) * w + x];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                win[y * w + x] = pad[(y + dy) * pw + x + dx];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                dst[(k * h + y) * w + x] = win[y * w + (flip ? w - 1 - x : x)];
    }
    free(pad);
    free(win);
}

static void test_apply_known(void **state) {
    (void)state;
    /* 2 channels of 3 x 4, values 1..24. */
    enum {
        C = 2,
        H = 3,
        W = 4
    };
    float src[C * H * W], got[C * H * W], want[C * H * W];
    const float fill[C] = {-7.5f, 0.25f};
    for (int i = 0; i < C * H * W; i++)
        src[i] = (float)(i + 1);
    /* A case written out by hand: pad 1, window at (0, 2), flipped. The
     * window's rows are image rows -1, 0, 1 and columns 1..4 (4 is
     * padding); mirrored, a row reads columns 4, 3, 2, 1. */
    tg_augment_apply(src, C, H, W, 1, 0, 2, true, fill, got);
    const float ch0[H * W] = {-7.5f, -7.5f, -7.5f, -7.5f, -7.5f, 4, 3, 2, -7.5f, 8, 7, 6};
    for (int i = 0; i < H * W; i++)
        assert_true(got[i] == ch0[i]);
    assert_true(got[H * W] == 0.25f && got[H * W + 5] == 16 && got[H * W + 7] == 14);
    /* Every offset of pads 0..3, flipped or not, against the reference. */
    for (int p = 0; p <= 3; p++)
        for (int dy = 0; dy <= 2 * p; dy++)
            for (int dx = 0; dx <= 2 * p; dx++)
                for (int f = 0; f < 2; f++) {
                    tg_augment_apply(src, C, H, W, p, dy, dx, f, fill, got);
                    reference(src, C, H, W, p, dy, dx, f, fill, want);
                    assert_memory_equal(got, want, sizeof got);
                }
    /* The centre window without a flip is the image itself. */
    tg_augment_apply(src, C, H, W, 4, 4, 4, false, NULL, got);
    assert_memory_equal(got, src, sizeof src);
}

static void test_draws(void **state) {
    (void)state;
    const int pad = 4;
    int hist_y[9] = {0}, hist_x[9] = {0}, flips = 0, moved = 0;
    const int n = 9000;
    for (int i = 0; i < n; i++) {
        int dy, dx, dy2, dx2;
        bool f, f2;
        tg_augment_draw(42, 3, i, pad, &dy, &dx, &f);
        assert_true(dy >= 0 && dy <= 2 * pad && dx >= 0 && dx <= 2 * pad);
        hist_y[dy]++;
        hist_x[dx]++;
        flips += f;
        /* Pure: the same draw again; another epoch draws anew. */
        tg_augment_draw(42, 3, i, pad, &dy2, &dx2, &f2);
        assert_true(dy == dy2 && dx == dx2 && f == f2);
        tg_augment_draw(42, 4, i, pad, &dy2, &dx2, &f2);
        moved += dy != dy2 || dx != dx2 || f != f2;
        /* The definition: Philox keyed by the seed, counter (index, epoch,
         * stream "aug!"), multiply-shift of words 0 and 1, bit 31 of word 2. */
        const uint32_t key[2] = {42, 0}, ctr[4] = {(uint32_t)i, 0, 3, 0x61756721u};
        uint32_t out[4];
        tg_philox4x32_10(ctr, key, out);
        assert_int_equal(dy, (int)(((uint64_t)out[0] * 9) >> 32));
        assert_int_equal(dx, (int)(((uint64_t)out[1] * 9) >> 32));
        assert_int_equal(f, (int)(out[2] >> 31));
    }
    /* Uniform: each of the 9 offsets about n/9 = 1000 times (5 sigma ~ 150). */
    for (int v = 0; v < 9; v++) {
        assert_true(abs(hist_y[v] - n / 9) < 150);
        assert_true(abs(hist_x[v] - n / 9) < 150);
    }
    assert_true(abs(flips - n / 2) < 250);
    assert_true(moved > n * 9 / 10);
    /* Pad 0: no offset to draw. */
    int dy, dx;
    bool f;
    tg_augment_draw(1, 0, 5, 0, &dy, &dx, &f);
    assert_true(dy == 0 && dx == 0);
}

/* A split of n u8 images (3, 5, 6) with scale 1/255, mean 0.5, std 0.25. */
static void write_images(const char *path, int n, int rank_one) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t xd[4] = {(hsize_t)n, 3, 5, 6}, yd[1] = {(hsize_t)n};
    if (rank_one)
        xd[1] = 90;
    unsigned char *x = malloc((size_t)n * 90);
    unsigned char *y = malloc((size_t)n);
    for (int i = 0; i < n * 90; i++)
        x[i] = (unsigned char)(1 + (i * 37) % 250);
    for (int i = 0; i < n; i++)
        y[i] = (unsigned char)(i % 3);
    hid_t sp = H5Screate_simple(rank_one ? 2 : 4, xd, NULL);
    hid_t d = H5Dcreate2(g, "x", H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate_simple(1, yd, NULL);
    d = H5Dcreate2(g, "y", H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate(H5S_SCALAR);
    const char *names[4] = {"num_classes", "scale", "mean", "std"};
    const double vals[4] = {3, 1.0 / 255.0, 0.5, 0.25};
    for (int i = 0; i < 4; i++) {
        hid_t a = H5Acreate2(g, names[i], i ? H5T_IEEE_F64LE : H5T_STD_I64LE, sp, H5P_DEFAULT,
                             H5P_DEFAULT);
        long long k = 3;
        H5Awrite(a, i ? H5T_NATIVE_DOUBLE : H5T_NATIVE_LLONG, i ? (const void *)&vals[i] : &k);
        H5Aclose(a);
    }
    H5Sclose(sp);
    H5Gclose(g);
    H5Fclose(f);
    free(x);
    free(y);
}

/* Two epochs of the loader with augmentation: each sample is the transform
 * of the plain read, drawn from (seed, epoch, index); the pad is the
 * normalised 0, (0 - 0.5) / 0.25 = -2. */
static void check_loader(const char *path, int rank, int world, float *batches) {
    char err[512];
    tg_dataset *ds, *plain;
    tg_sampler *sp;
    tg_loader *ld;
    assert_int_equal(tg_dataset_open(path, "train", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_open(path, "train", &plain, err, sizeof err), TG_OK);
    tg_sampler_config sc = tg_sampler_config_train(40, 8, 7, rank, world);
    assert_int_equal(tg_sampler_new(&sc, &sp, err, sizeof err), TG_OK);
    tg_loader_options lo = {.augment = {TG_AUGMENT_CROP | TG_AUGMENT_FLIP, 2, 99}};
    assert_int_equal(tg_loader_new(ds, sp, &lo, &ld, err, sizeof err), TG_OK);
    const float fill[3] = {-2, -2, -2};
    float raw[8 * 90], want[90];
    int64_t local = 8 / world, batch = 0, idx[8], n;
    int changed = 0;
    tg_sampler *mirror;
    assert_int_equal(tg_sampler_new(&sc, &mirror, err, sizeof err), TG_OK);
    for (int64_t epoch = 0; epoch < 2; epoch++)
        for (int64_t k = 0;; k++) {
            const float *x;
            const int64_t *y;
            bool end;
            assert_int_equal(tg_loader_next(ld, &x, &y, &n, &end, err, sizeof err), TG_OK);
            if (end)
                break;
            assert_int_equal(n, local);
            assert_int_equal(tg_sampler_batch(mirror, epoch, k, idx, &n, err, sizeof err), TG_OK);
            assert_int_equal(tg_dataset_read(plain, idx, n, raw, NULL, err, sizeof err), TG_OK);
            for (int64_t i = 0; i < n; i++) {
                int dy, dx;
                bool f;
                tg_augment_draw(99, epoch, idx[i], 2, &dy, &dx, &f);
                reference(raw + i * 90, 3, 5, 6, 2, dy, dx, f, fill, want);
                assert_memory_equal(x + i * 90, want, sizeof want);
                changed += memcmp(want, raw + i * 90, sizeof want) != 0;
            }
            memcpy(batches + (batch * 8 + (int64_t)rank * local) * 90, x,
                   sizeof(float) * (size_t)(n * 90));
            batch++;
        }
    assert_true(changed > 0);
    tg_loader_free(ld);
    tg_sampler_free(sp);
    tg_sampler_free(mirror);
    tg_dataset_close(ds);
    tg_dataset_close(plain);
}

static void test_loader_augments(void **state) {
    (void)state;
    const char *path = tgt_path("img.h5");
    write_images(path, 40, 0);
    /* 2 epochs of 5 batches of 8 samples of 90 floats. */
    size_t len = sizeof(float) * 10 * 8 * 90;
    float *one = calloc(1, len), *two = calloc(1, len);
    check_loader(path, 0, 1, one);
    check_loader(path, 0, 2, two);
    check_loader(path, 1, 2, two);
    /* The two ranks' slices make up the one-rank batches exactly. */
    assert_memory_equal(one, two, len);
    free(one);
    free(two);
}

static void test_augment_refused(void **state) {
    (void)state;
    char err[512];
    const char *path = tgt_path("flat.h5");
    write_images(path, 16, 1);
    tg_dataset *ds;
    tg_sampler *sp;
    tg_loader *ld;
    assert_int_equal(tg_dataset_open(path, "train", &ds, err, sizeof err), TG_OK);
    tg_sampler_config sc = tg_sampler_config_train(16, 8, 7, 0, 1);
    assert_int_equal(tg_sampler_new(&sc, &sp, err, sizeof err), TG_OK);
    tg_loader_options lo = {.augment = {TG_AUGMENT_FLIP, 4, 1}};
    assert_int_equal(tg_loader_new(ds, sp, &lo, &ld, err, sizeof err), TG_ERR_INVALID);
    assert_null(ld);
    assert_non_null(strstr(err, "flat.h5: /train: augmentation (crop, flip) needs image "
                                "samples (C, H, W) or (H, W), but x's samples have shape (90)"));
    lo.augment.pad = TG_AUGMENT_MAX_PAD + 1;
    assert_int_equal(tg_loader_new(ds, sp, &lo, &ld, err, sizeof err), TG_ERR_INVALID);
    assert_non_null(strstr(err, "crop padding 257 is outside [0, 256]"));
    tg_sampler_free(sp);
    tg_dataset_close(ds);
}

static void test_holdout(void **state) {
    (void)state;
    char err[256];
    const int64_t n = 1000;
    assert_int_equal(tg_holdout_count(n, 0.1), 100);
    assert_int_equal(tg_holdout_count(7, 0.5), 4); /* 3.5 rounds up */
    assert_int_equal(tg_holdout_count(7, 0.0), 0);
    int64_t val[100], train[900], val2[100], train2[900];
    assert_int_equal(tg_holdout(5, n, 100, val, train, err, sizeof err), TG_OK);
    /* Sorted, disjoint, together every index once. */
    unsigned char seen[1000] = {0};
    for (int i = 0; i < 100; i++) {
        assert_true(i == 0 || val[i] > val[i - 1]);
        seen[val[i]] |= 1;
    }
    for (int i = 0; i < 900; i++) {
        assert_true(i == 0 || train[i] > train[i - 1]);
        assert_int_equal(seen[train[i]] & 1, 0);
        seen[train[i]] |= 2;
    }
    for (int i = 0; i < n; i++)
        assert_true(seen[i] == 1 || seen[i] == 2);
    /* Not the first 100, nor the first 100 of epoch 0's permutation. */
    assert_true(val[99] > 200);
    int64_t perm[1000];
    assert_int_equal(tg_permutation(5, 0, n, perm, err, sizeof err), TG_OK);
    int same = 0;
    for (int i = 0; i < 100; i++)
        same += seen[perm[i]] == 1;
    assert_true(same < 50);
    /* Pure; another seed holds out another set. */
    assert_int_equal(tg_holdout(5, n, 100, val2, train2, err, sizeof err), TG_OK);
    assert_memory_equal(val, val2, sizeof val);
    assert_int_equal(tg_holdout(6, n, 100, val2, train2, err, sizeof err), TG_OK);
    assert_true(memcmp(val, val2, sizeof val) != 0);
    assert_int_equal(tg_holdout(5, n, 1001, val, train, err, sizeof err), TG_ERR_INVALID);

    /* A sampler over the rest, on 1 and on 2 ranks: each epoch hands out
     * every training index once and never a held-out one. */
    for (int world = 1; world <= 2; world++) {
        int count[1000] = {0};
        for (int r = 0; r < world; r++) {
            tg_sampler *sp;
            tg_sampler_config sc = tg_sampler_config_train(900, 30, 11, r, world);
            sc.subset = train;
            assert_int_equal(tg_sampler_new(&sc, &sp, err, sizeof err), TG_OK);
            int64_t idx[30], m;
            for (int k = 0; k < 30; k++) {
                assert_int_equal(tg_sampler_next(sp, idx, &m, NULL, NULL, NULL, err, sizeof err),
                                 TG_OK);
                for (int64_t i = 0; i < m; i++)
                    count[idx[i]]++;
            }
            tg_sampler_free(sp);
        }
        for (int i = 0; i < n; i++)
            assert_int_equal(count[i], seen[i] == 2 ? 1 : 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_known),     cmocka_unit_test(test_draws),
        cmocka_unit_test(test_loader_augments), cmocka_unit_test(test_augment_refused),
        cmocka_unit_test(test_holdout),
    };
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
