/*
 * test_tokens.c: token splits and the window sampler. Windows read from a
 * file written here through HDF5 (cached in memory and read from disk give
 * the same windows; the labels are the inputs shifted by one), bad token
 * splits refused at open with the file, split and problem named, the
 * sampler's draws (global batch g a function of (seed, g) alone: rank slices
 * concatenate to the 1-rank batch, a resumed position continues the same
 * draws, the epoch length does not change them), the evaluation stride, and
 * a loader handing out T labels per window.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "tapegrad/datasets.h"

static char dir[256];

static const char *path_of(const char *name) {
    static char p[8][512];
    static int k;
    char *b = p[k++ % 8];
    snprintf(b, sizeof p[0], "%s/%s", dir, name);
    return b;
}

/* Writes split `split` of file `path` holding tokens (n values of type
 * ftype, given as u16) of rank `rank`, with the vocab_size attribute when
 * vocab > 0. */
static void write_tokens(const char *path, const char *split, const uint16_t *tok, hsize_t n,
                         hid_t ftype, int rank, int64_t vocab) {
    hid_t f = access(path, F_OK) == 0 ? H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT)
                                      : H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t g = H5Gcreate2(f, split, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {rank == 2 ? n / 2 : n, 2};
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(g, "tokens", ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, tok) >= 0);
    if (vocab > 0) {
        hid_t as = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(g, "vocab_size", H5T_STD_I64LE, as, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(H5Awrite(a, H5T_NATIVE_INT64, &vocab) >= 0);
        H5Aclose(a);
        H5Sclose(as);
    }
    H5Dclose(d);
    H5Sclose(sp);
    H5Gclose(g);
    H5Fclose(f);
}

enum {
    NTOK = 1000,
    T = 7
};

static uint16_t *sequence(void) {
    static uint16_t t[NTOK];
    for (int i = 0; i < NTOK; i++)
        t[i] = (uint16_t)((i * 37 + i / 11) % 300);
    return t;
}

static void test_windows(void **state) {
    (void)state;
    const char *p = path_of("w.h5");
    const uint16_t *seq = sequence();
    write_tokens(p, "train", seq, NTOK, H5T_STD_U16LE, 1, 300);
    char err[512];
    tg_dataset *mem, *disk;
    tg_dataset_options om = {.block_size = T}, od = {.block_size = T, .cache_budget = -1};
    assert_int_equal(tg_dataset_open_opts(p, "train", &om, &mem, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_open_opts(p, "train", &od, &disk, err, sizeof err), TG_OK);
    assert_true(tg_dataset_x_cached(mem));
    assert_false(tg_dataset_x_cached(disk));
    assert_int_equal(tg_dataset_len(mem), NTOK - T);
    assert_int_equal(tg_dataset_labels_per_sample(mem), T);
    assert_int_equal(tg_dataset_num_classes(mem), 300);
    int nd;
    assert_int_equal(tg_dataset_sample_shape(mem, &nd)[0], T);
    assert_int_equal(nd, 1);
    const int64_t idx[4] = {NTOK - T - 1, 0, 500, 0};
    float xa[4 * T], xb[4 * T];
    int64_t ya[4 * T], yb[4 * T];
    assert_int_equal(tg_dataset_read(mem, idx, 4, xa, ya, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_read(disk, idx, 4, xb, yb, err, sizeof err), TG_OK);
    assert_memory_equal(xa, xb, sizeof xa);
    assert_memory_equal(ya, yb, sizeof ya);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < T; k++) {
            assert_int_equal((int64_t)xa[i * T + k], seq[idx[i] + k]);
            assert_int_equal(ya[i * T + k], seq[idx[i] + k + 1]);
        }
    /* One past the last window is refused. */
    int64_t past = NTOK - T;
    assert_int_equal(tg_dataset_read(mem, &past, 1, xa, ya, err, sizeof err), TG_ERR_INVALID);
    assert_non_null(strstr(err, "outside [0, 993)"));
    tg_dataset_close(mem);
    tg_dataset_close(disk);
}

static void expect_open_fails(const char *p, const char *split, int64_t block, const char *what) {
    char err[512] = "";
    tg_dataset *ds;
    tg_dataset_options o = {.block_size = block};
    tg_status s = tg_dataset_open_opts(p, split, &o, &ds, err, sizeof err);
    if (s != TG_ERR_FORMAT || !strstr(err, what) || !strstr(err, p))
        fail_msg("open %s %s: status %d, message \"%s\", want \"%s\"", p, split, s, err, what);
    assert_null(ds);
}

static void test_bad_token_splits(void **state) {
    (void)state;
    const char *p = path_of("bad.h5");
    uint16_t t[64];
    for (int i = 0; i < 64; i++)
        t[i] = (uint16_t)(i % 10);
    write_tokens(p, "novocab", t, 64, H5T_STD_U8LE, 1, 0);
    write_tokens(p, "small", t, 64, H5T_STD_U8LE, 1, 5);
    write_tokens(p, "rank2", t, 64, H5T_STD_U8LE, 2, 10);
    write_tokens(p, "signed", t, 64, H5T_STD_I32LE, 1, 10);
    write_tokens(p, "short", t, 4, H5T_STD_U8LE, 1, 10);
    expect_open_fails(p, "novocab", 4, "needs an integer attribute vocab_size in [2, 65536]");
    expect_open_fails(p, "small", 4, "/small/tokens[5] is 5, outside [0, vocab_size 5)");
    expect_open_fails(p, "rank2", 4, "/rank2/tokens has rank 2 but expected 1");
    expect_open_fails(p, "signed", 4, "/signed/tokens has dtype i32 but expected u8 or u16");
    expect_open_fails(p, "short", 4, "/short has 4 tokens, fewer than one window of block size 4");
    /* The same tokens open with a block that fits. */
    char err[512];
    tg_dataset *ds;
    tg_dataset_options o = {.block_size = 3};
    assert_int_equal(tg_dataset_open_opts(p, "short", &o, &ds, err, sizeof err), TG_OK);
    tg_dataset_close(ds);
    assert_int_equal(tg_dataset_has_split(p, "short"), 1);
    assert_int_equal(tg_dataset_has_split(p, "nothere"), 0);
    assert_int_equal(tg_dataset_has_split(path_of("none.h5"), "train"), -1);
}

/* Global batch g of a draw sampler at (world, rank), as one array of B. */
static void global_batch(int64_t n, int64_t B, uint64_t seed, int world, int64_t nb, int64_t g,
                         int64_t *out) {
    char err[256];
    for (int r = 0; r < world; r++) {
        tg_sampler_config c = tg_sampler_config_train(n, B, seed, r, world);
        c.draw = true;
        c.epoch_batches = nb;
        tg_sampler *s;
        int64_t m;
        assert_int_equal(tg_sampler_new(&c, &s, err, sizeof err), TG_OK);
        assert_int_equal(
            tg_sampler_batch(s, g / nb, g % nb, out + r * (B / world), &m, err, sizeof err), TG_OK);
        assert_int_equal(m, B / world);
        tg_sampler_free(s);
    }
}

static void test_draws(void **state) {
    (void)state;
    enum {
        N = 100,
        B = 8
    };
    int64_t a[B], b[B], c[B];
    int hits[N] = {0};
    for (int64_t g = 0; g < 200; g++) {
        global_batch(N, B, 42, 1, 5, g, a);
        global_batch(N, B, 42, 4, 5, g, b);
        /* The epoch length only moves the epoch boundaries. */
        global_batch(N, B, 42, 2, 3, g, c);
        assert_memory_equal(a, b, sizeof a);
        assert_memory_equal(a, c, sizeof a);
        for (int i = 0; i < B; i++) {
            assert_true(a[i] >= 0 && a[i] < N);
            hits[a[i]]++;
        }
    }
    /* 1600 draws over 100 starts: every start drawn, none far too often. */
    for (int i = 0; i < N; i++)
        assert_true(hits[i] >= 2 && hits[i] <= 40);
    global_batch(N, B, 43, 1, 5, 0, b);
    global_batch(N, B, 42, 1, 5, 0, a);
    assert_memory_not_equal(a, b, sizeof a);
    /* A resumed position continues the same draws. */
    char err[256];
    tg_sampler_config cf = tg_sampler_config_train(N, B, 42, 0, 1);
    cf.draw = true;
    cf.epoch_batches = 5;
    tg_sampler *s;
    int64_t m, e, k;
    bool last;
    assert_int_equal(tg_sampler_new(&cf, &s, err, sizeof err), TG_OK);
    assert_int_equal(tg_sampler_num_batches(s), 5);
    assert_int_equal(tg_sampler_set_samples_consumed(s, 7 * B, err, sizeof err), TG_OK);
    assert_int_equal(tg_sampler_next(s, b, &m, &e, &k, &last, err, sizeof err), TG_OK);
    global_batch(N, B, 42, 1, 5, 7, a);
    assert_memory_equal(a, b, sizeof a);
    assert_int_equal(e, 1);
    assert_int_equal(k, 2);
    tg_sampler_free(s);
    /* No epoch length: refused. */
    cf.epoch_batches = 0;
    assert_int_equal(tg_sampler_new(&cf, &s, err, sizeof err), TG_ERR_INVALID);
    assert_non_null(strstr(err, "epoch_batches in [1, "));
    cf.epoch_batches = INT64_MAX / 4; /* times B = 8 passes 2^63 */
    assert_int_equal(tg_sampler_new(&cf, &s, err, sizeof err), TG_ERR_INVALID);
}

static void test_eval_stride_and_loader(void **state) {
    (void)state;
    const char *p = path_of("l.h5");
    const uint16_t *seq = sequence();
    write_tokens(p, "val", seq, NTOK, H5T_STD_U16LE, 1, 300);
    char err[512];
    tg_dataset *ds;
    tg_dataset_options o = {.block_size = T};
    assert_int_equal(tg_dataset_open_opts(p, "val", &o, &ds, err, sizeof err), TG_OK);
    /* Every non-overlapping window once: (NTOK - 1) / T of them. */
    int64_t nw = (NTOK - 1) / T;
    tg_sampler_config c = tg_sampler_config_eval(nw, 16, 0, 1);
    c.stride = T;
    tg_sampler *s;
    tg_loader *ld;
    assert_int_equal(tg_sampler_new(&c, &s, err, sizeof err), TG_OK);
    assert_int_equal(tg_loader_new(ds, s, NULL, &ld, err, sizeof err), TG_OK);
    int64_t seen = 0;
    for (;;) {
        const float *x;
        const int64_t *y;
        int64_t n;
        bool end;
        assert_int_equal(tg_loader_next(ld, &x, &y, &n, &end, err, sizeof err), TG_OK);
        if (end)
            break;
        for (int64_t i = 0; i < n; i++)
            for (int k = 0; k < T; k++) {
                int64_t start = (seen + i) * T;
                assert_int_equal((int64_t)x[i * T + k], seq[start + k]);
                assert_int_equal(y[i * T + k], seq[start + k + 1]);
            }
        seen += n;
    }
    assert_int_equal(seen, nw);
    tg_loader_free(ld);
    tg_sampler_free(s);
    /* A stride past the split is refused by the loader. */
    c.stride = T + 1;
    assert_int_equal(tg_sampler_new(&c, &s, err, sizeof err), TG_OK);
    assert_int_equal(tg_loader_new(ds, s, NULL, &ld, err, sizeof err), TG_ERR_INVALID);
    tg_sampler_free(s);
    tg_dataset_close(ds);
}

static int setup(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/tg_tokens_XXXXXX", base && *base ? base : "/tmp");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, getenv("TG_KEEP") ? "true" : "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_bad_token_splits),
        cmocka_unit_test(test_draws),
        cmocka_unit_test(test_eval_stride_and_loader),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
