/*
 * test_norm_channels.c: per-channel normalisation. mean and std attributes
 * that are vectors of one value per channel (x's first axis after N) are
 * read and applied to u8 and f32 inputs (checked against the formula
 * computed here), a vector of the wrong length is refused with a message
 * naming the file, split, attribute and expected length, `convert npy`
 * writes per-channel statistics for (N, C, ...) with C > 1 (checked against
 * a two-pass computation here) and a scalar for one channel, another split
 * takes train's vectors, and augmentation pads each channel with its own
 * normalised zero.
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
    return tgt_dir_setup("tg_norm_channels");
}

static int group_teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

enum {
    N = 4,
    C = 3,
    H = 2,
    W = 2,
    PER = C * H * W
};

static double xval(int i, int k) { return (double)((i * 53 + k * 29 + 7) % 256); }

static void put_attr(hid_t g, const char *name, const double *v, int n) {
    hsize_t d[1] = {(hsize_t)n};
    hid_t sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, d, NULL);
    hid_t a = H5Acreate2(g, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(a, H5T_NATIVE_DOUBLE, v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
}

/* Split "train" of x (N, C, H, W), u8 or f32, with the given attributes
 * (nm or ns 0: left out). */
static void write_file(const char *path, bool u8, double scale, const double *mean, int nm,
                       const double *sd, int ns) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t xd[4] = {N, C, H, W}, yd[1] = {N};
    unsigned char xb[N * PER];
    float xf[N * PER];
    unsigned char y[N] = {0, 1, 0, 1};
    for (int i = 0; i < N; i++)
        for (int k = 0; k < PER; k++) {
            xb[i * PER + k] = (unsigned char)xval(i, k);
            xf[i * PER + k] = (float)xval(i, k) - 100.5f;
        }
    hid_t sp = H5Screate_simple(4, xd, NULL);
    hid_t d = H5Dcreate2(g, "x", u8 ? H5T_STD_U8LE : H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                         H5P_DEFAULT);
    assert_true(H5Dwrite(d, u8 ? H5T_NATIVE_UCHAR : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                         u8 ? (const void *)xb : xf) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate_simple(1, yd, NULL);
    d = H5Dcreate2(g, "y", H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate(H5S_SCALAR);
    long long k = 2;
    hid_t a = H5Acreate2(g, "num_classes", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, &k);
    H5Aclose(a);
    H5Sclose(sp);
    put_attr(g, "scale", &scale, 1);
    if (nm)
        put_attr(g, "mean", mean, nm);
    if (ns)
        put_attr(g, "std", sd, ns);
    H5Gclose(g);
    H5Fclose(f);
}

/* Opens the file and checks every value of every sample against
 * (x*scale - mean[c]) / std[c] with c = k / (H*W). */
static void check_read(const char *path, bool u8, double scale, const double *mean,
                       const double *sd, int64_t nch) {
    char err[512];
    tg_dataset *ds;
    assert_int_equal(tg_dataset_open(path, "train", &ds, err, sizeof err), TG_OK);
    const double *dm, *dsd;
    assert_int_equal(tg_dataset_norm(ds, &dm, &dsd), nch);
    int64_t idx[N] = {3, 0, 2, 1};
    float x[N * PER];
    assert_int_equal(tg_dataset_read(ds, idx, N, x, NULL, err, sizeof err), TG_OK);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < PER; k++) {
            int c = nch > 1 ? k / (H * W) : 0;
            double v = u8 ? xval((int)idx[i], k) : (double)((float)xval((int)idx[i], k) - 100.5f);
            float want = (float)((v * scale - mean[c]) / sd[c]);
            assert_true(x[i * PER + k] == want);
        }
    tg_dataset_close(ds);
}

static void test_vector_attrs(void **state) {
    (void)state;
    const double mean[C] = {0.1, 0.45, -0.3}, sd[C] = {0.5, 1.0, 2.25};
    const char *p = tgt_path("vec_u8.h5");
    write_file(p, true, 1.0 / 255.0, mean, C, sd, C);
    check_read(p, true, 1.0 / 255.0, mean, sd, C);
    p = tgt_path("vec_f32.h5");
    write_file(p, false, 0.5, mean, C, sd, C);
    check_read(p, false, 0.5, mean, sd, C);
    /* A number beside a vector applies to every channel. */
    const double one[1] = {2.0}, three[C] = {2.0, 2.0, 2.0};
    p = tgt_path("mixed.h5");
    write_file(p, true, 1.0 / 255.0, mean, C, one, 1);
    check_read(p, true, 1.0 / 255.0, mean, three, C);
    /* Scalars: one channel, as before. */
    p = tgt_path("scalar.h5");
    write_file(p, true, 1.0 / 255.0, mean, 1, sd, 1);
    check_read(p, true, 1.0 / 255.0, mean, sd, 1);
}

static void expect_open_fails(const char *path, const char *want) {
    char err[512] = "";
    tg_dataset *ds = (tg_dataset *)1;
    tg_status st = tg_dataset_open(path, "train", &ds, err, sizeof err);
    if (st != TG_ERR_FORMAT || !strstr(err, want))
        print_error("status %d, message \"%s\", want \"%s\"\n", st, err, want);
    assert_int_equal(st, TG_ERR_FORMAT);
    assert_null(ds);
    assert_non_null(strstr(err, want));
}

static void test_bad_vectors(void **state) {
    (void)state;
    const double v[5] = {0.1, 0.2, 0.3, 0.4, 0.5}, bad_sd[C] = {1, 0, 1};
    const char *p = tgt_path("len2.h5");
    write_file(p, true, 1.0, v, 2, NULL, 0);
    expect_open_fails(p, "len2.h5: /train attribute mean has 2 values but expected 1 or 3 (one "
                         "per channel: x's samples have 3 channels)");
    p = tgt_path("len5.h5");
    write_file(p, false, 1.0, v, 1, v, 5);
    expect_open_fails(p, "len5.h5: /train attribute std has 5 values but expected 1 or 3");
    p = tgt_path("zero_sd.h5");
    write_file(p, true, 1.0, v, C, bad_sd, C);
    expect_open_fails(p, "zero_sd.h5: /train attribute std[k] is 0 but expected a finite "
                         "number > 0");
}

/* A .npy of uint8 with the given shape (C order). */
static void write_npy_u8(const char *path, const char *shape, const unsigned char *body,
                         size_t len) {
    char hdr[128];
    int n =
        snprintf(hdr, sizeof hdr, "{'descr': '|u1', 'fortran_order': False, 'shape': %s, }", shape);
    /* Magic, version, header length, then the header padded with spaces and
     * a newline to a multiple of 64 bytes in all. */
    int total = (10 + n + 1 + 63) / 64 * 64;
    while (10 + n + 1 < total)
        hdr[n++] = ' ';
    hdr[n++] = '\n';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char pre[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
    fwrite(pre, 1, 10, f);
    fwrite(hdr, 1, (size_t)n, f);
    fwrite(body, 1, len, f);
    assert_int_equal(fclose(f), 0);
}

/* The attribute's values and whether it is a scalar (not a vector). */
static int read_attr(const char *path, const char *split, const char *name, double *v,
                     bool *scalar) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, split, H5P_DEFAULT);
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    hid_t sp = H5Aget_space(a);
    *scalar = H5Sget_simple_extent_type(sp) == H5S_SCALAR;
    int n = (int)H5Sget_simple_extent_npoints(sp);
    assert_true(n <= 8);
    assert_true(H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0);
    H5Sclose(sp);
    H5Aclose(a);
    H5Gclose(g);
    H5Fclose(f);
    return n;
}

static void test_convert_per_channel(void **state) {
    (void)state;
    enum {
        M = 6
    };
    unsigned char tr[M * PER], te[M * PER];
    unsigned char y[M] = {0, 1, 1, 0, 1, 0};
    for (int i = 0; i < M * PER; i++) {
        /* Channel c has its own level, so the statistics differ by channel. */
        int c = (i % PER) / (H * W);
        tr[i] = (unsigned char)(c * 80 + (i * 13) % 50);
        te[i] = (unsigned char)((i * 7) % 256);
    }
    write_npy_u8(tgt_path("tr_x.npy"), "(6, 3, 2, 2)", tr, sizeof tr);
    write_npy_u8(tgt_path("te_x.npy"), "(6, 3, 2, 2)", te, sizeof te);
    write_npy_u8(tgt_path("y.npy"), "(6,)", y, sizeof y);
    char out[512], one[512];
    snprintf(out, sizeof out, "%s", tgt_path("conv.h5"));
    snprintf(one, sizeof one, "%s", tgt_path("one.h5"));
    char err[512] = "";
    tg_status st = tg_npy_convert(tgt_path("tr_x.npy"), tgt_path("y.npy"), out, "train", NULL, err,
                                  sizeof err);
    if (st)
        print_error("%s\n", err);
    assert_int_equal(st, TG_OK);
    assert_int_equal(
        tg_npy_convert(tgt_path("te_x.npy"), tgt_path("y.npy"), out, "test", NULL, err, sizeof err),
        TG_OK);
    /* Two passes per channel over x/255. */
    double mean[C], sd[C];
    for (int c = 0; c < C; c++) {
        double s = 0, q = 0, cnt = M * H * W;
        for (int i = 0; i < M; i++)
            for (int k = c * H * W; k < (c + 1) * H * W; k++)
                s += tr[i * PER + k] / 255.0;
        s /= cnt;
        for (int i = 0; i < M; i++)
            for (int k = c * H * W; k < (c + 1) * H * W; k++)
                q += (tr[i * PER + k] / 255.0 - s) * (tr[i * PER + k] / 255.0 - s);
        mean[c] = s;
        sd[c] = sqrt(q / cnt);
    }
    const char *splits[2] = {"train", "test"};
    for (int sp = 0; sp < 2; sp++) {
        double m[8], s[8];
        bool scalar;
        assert_int_equal(read_attr(out, splits[sp], "mean", m, &scalar), C);
        assert_false(scalar);
        assert_int_equal(read_attr(out, splits[sp], "std", s, &scalar), C);
        for (int c = 0; c < C; c++) {
            assert_true(fabs(m[c] - mean[c]) < 1e-12);
            assert_true(fabs(s[c] - sd[c]) < 1e-12);
        }
    }
    assert_true(mean[2] > mean[1] + 0.2 && mean[1] > mean[0] + 0.2);
    /* One channel, (N, 1, H, W): a scalar over all of x. */
    write_npy_u8(tgt_path("one_x.npy"), "(6, 1, 3, 4)", tr, sizeof tr);
    assert_int_equal(tg_npy_convert(tgt_path("one_x.npy"), tgt_path("y.npy"), one, "train", NULL,
                                    err, sizeof err),
                     TG_OK);
    double m[8], s = 0, q = 0;
    bool scalar;
    assert_int_equal(read_attr(one, "train", "mean", m, &scalar), 1);
    assert_true(scalar);
    for (int i = 0; i < M * PER; i++)
        s += tr[i] / 255.0;
    s /= M * PER;
    for (int i = 0; i < M * PER; i++)
        q += (tr[i] / 255.0 - s) * (tr[i] / 255.0 - s);
    assert_true(fabs(m[0] - s) < 1e-12);
    assert_int_equal(read_attr(one, "train", "std", m, &scalar), 1);
    assert_true(scalar && fabs(m[0] - sqrt(q / (M * PER))) < 1e-12);
    /* The converted file trains through the reader: channel c normalised
     * with its own statistics. */
    tg_dataset *ds;
    st = tg_dataset_open(out, "train", &ds, err, sizeof err);
    if (st)
        print_error("%s\n", err);
    assert_int_equal(st, TG_OK);
    float x[PER];
    int64_t i0 = 0;
    assert_int_equal(tg_dataset_read(ds, &i0, 1, x, NULL, err, sizeof err), TG_OK);
    const double *dm, *dsd;
    assert_int_equal(tg_dataset_norm(ds, &dm, &dsd), C);
    for (int k = 0; k < PER; k++) {
        int c = k / (H * W);
        assert_true(x[k] == (float)((tr[k] * (1.0 / 255.0) - dm[c]) / dsd[c]));
    }
    tg_dataset_close(ds);
}

/* Augmentation pads channel c with (0 - mean[c]) / std[c]: with pad 2 on
 * 2 x 2 images, a window drawn at dy = 0 has a first row of padding. */
static void test_augment_pads_per_channel(void **state) {
    (void)state;
    const double mean[C] = {0.25, 0.5, -1.0}, sd[C] = {0.5, 2.0, 4.0};
    const char *p = tgt_path("pad.h5");
    write_file(p, true, 1.0 / 255.0, mean, C, sd, C);
    char err[512];
    tg_dataset *ds;
    tg_sampler *sp;
    tg_loader *ld;
    assert_int_equal(tg_dataset_open(p, "train", &ds, err, sizeof err), TG_OK);
    tg_sampler_config sc = tg_sampler_config_train(N, N, 3, 0, 1);
    assert_int_equal(tg_sampler_new(&sc, &sp, err, sizeof err), TG_OK);
    tg_loader_options lo = {.augment = {TG_AUGMENT_CROP, 2, 5}};
    assert_int_equal(tg_loader_new(ds, sp, &lo, &ld, err, sizeof err), TG_OK);
    int found = 0;
    int64_t idx[N], n;
    for (int64_t epoch = 0; epoch < 8; epoch++) {
        const float *x;
        const int64_t *y;
        bool end;
        assert_int_equal(tg_loader_next(ld, &x, &y, &n, &end, err, sizeof err), TG_OK);
        assert_int_equal(tg_sampler_batch(sp, epoch, 0, idx, &n, err, sizeof err), TG_OK);
        for (int i = 0; i < n; i++) {
            int dy, dx;
            bool f;
            tg_augment_draw(5, epoch, idx[i], 2, &dy, &dx, &f);
            if (dy != 0)
                continue;
            for (int c = 0; c < C; c++)
                for (int k = 0; k < W; k++)
                    assert_true(x[i * PER + c * H * W + k] == (float)((0.0 - mean[c]) / sd[c]));
            found++;
        }
        assert_int_equal(tg_loader_next(ld, &x, &y, &n, &end, err, sizeof err), TG_OK);
        assert_true(end);
    }
    assert_true(found > 0);
    tg_loader_free(ld);
    tg_sampler_free(sp);
    tg_dataset_close(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_attrs),
        cmocka_unit_test(test_bad_vectors),
        cmocka_unit_test(test_convert_per_channel),
        cmocka_unit_test(test_augment_pads_per_channel),
    };
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
