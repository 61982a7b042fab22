/*
 * test_npy.c: the .npy converter. Files written by NumPy itself
 * (tests/fixtures/npy, from tests/gen_npy_fixtures.py) and files written here
 * are converted, and the result is checked element by element against the
 * formulas that made them, both as stored in HDF5 and as tg_dataset_read()
 * returns it; every bad input fails with a message naming the file and the
 * problem, and leaves the output as it was.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "tapegrad/datasets.h"
#include "test_util.h"

static const char *fixture(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];

    snprintf(p, 512, "%s/npy/%s", TG_FIXTURE_DIR, name);
    return p;
}

static int group_setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_npy");
}

static int group_teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

/* Asserts a failure with status want whose message holds every given
 * fragment (a NULL-terminated list). */
static void expect_fail(tg_status got, tg_status want, const char *msg, ...) {
    va_list ap;
    const char *frag;

    /* TG_TEST_VERBOSE=1 shows every message, to review their wording. */
    if (getenv("TG_TEST_VERBOSE"))
        print_message("%s\n", msg);
    if (got != want)
        print_error("status %s, expected %s; message: %s\n", tg_status_str(got),
                    tg_status_str(want), msg);
    assert_int_equal(got, want);
    va_start(ap, msg);
    while ((frag = va_arg(ap, const char *)) != NULL) {
        if (!strstr(msg, frag))
            print_error("message \"%s\" lacks \"%s\"\n", msg, frag);
        assert_non_null(strstr(msg, frag));
    }
    va_end(ap);
}

/* The formulas of tests/gen_npy_fixtures.py. */
static double ref_u8(int64_t i, int64_t k) { return (double)((i * 37 + k * 11 + 5) % 256); }
static double ref_f(int64_t i, int64_t k) { return ((i * 7 + k * 3) % 11 - 5) / 4.0 + 1 / 8.0; }
static int64_t ref_label(int64_t i) { return (i * 3 + 1) % 5; }

/* ---------------------------------------------------------------------- */
/* Writing .npy files                                                      */
/* ---------------------------------------------------------------------- */

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* A .npy file of format version major.0 with header dict `dict`, padded with
 * spaces and a newline to a multiple of 64 bytes as NumPy does, then body. */
static void write_npy(const char *path, int major, const char *dict, const void *body,
                      size_t blen) {
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64, hlen = total - pre;
    unsigned char *buf = malloc(total + blen + 1);

    assert_non_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    for (size_t b = 0; b < pre - 8; b++)
        buf[8 + b] = (unsigned char)(hlen >> (8 * b));
    memcpy(buf + pre, dict, dl);
    memset(buf + pre + dl, ' ', hlen - dl - 1);
    buf[total - 1] = '\n';
    if (blen)
        memcpy(buf + total, body, blen);
    write_bytes(path, buf, total + blen);
    free(buf);
}

/* write_npy() with the dict of (descr, C order, shape). */
static void write_arr(const char *path, const char *descr, const char *shape, const void *body,
                      size_t blen) {
    char dict[256];

    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
             shape);
    write_npy(path, 1, dict, body, blen);
}

/* ---------------------------------------------------------------------- */
/* Reading the result                                                      */
/* ---------------------------------------------------------------------- */

struct expect {
    const char *split;
    int64_t n, per;
    int ndim;         /* of x, N included */
    int64_t shape[5]; /* of x */
    bool u8;          /* x stored as u8, else f32 */
    double (*xref)(int64_t i, int64_t k);
    int64_t (*yref)(int64_t i);
    int64_t num_classes;
    size_t ysize; /* bytes per stored label */
    hsize_t xchunk, ychunk;
};

/* x and y as stored, exactly, and the chunk layout, read with HDF5 alone. */
static void check_stored(const char *path, const struct expect *e) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, e->split, H5P_DEFAULT);
    hid_t x = H5Dopen2(g, "x", H5P_DEFAULT), y = H5Dopen2(g, "y", H5P_DEFAULT);
    hid_t xt = H5Dget_type(x), yt = H5Dget_type(y);
    hid_t xp = H5Dget_create_plist(x), yp = H5Dget_create_plist(y);
    hsize_t ch[8];
    double *xv = malloc(sizeof(double) * (size_t)(e->n * e->per));
    int64_t *yv = malloc(sizeof(int64_t) * (size_t)e->n);

    assert_true(f >= 0 && g >= 0 && x >= 0 && y >= 0 && xt >= 0 && yt >= 0 && xv && yv);
    assert_int_equal(H5Tget_class(xt), e->u8 ? H5T_INTEGER : H5T_FLOAT);
    assert_int_equal(H5Tget_size(xt), e->u8 ? 1 : 4);
    assert_int_equal(H5Tget_class(yt), H5T_INTEGER);
    assert_int_equal(H5Tget_size(yt), e->ysize);
    assert_int_equal(H5Pget_chunk(xp, 8, ch), e->ndim);
    assert_int_equal(ch[0], e->xchunk);
    for (int d = 1; d < e->ndim; d++)
        assert_int_equal(ch[d], (hsize_t)e->shape[d]);
    assert_int_equal(H5Pget_chunk(yp, 8, ch), 1);
    assert_int_equal(ch[0], e->ychunk);
    assert_true(H5Dread(x, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, xv) >= 0);
    assert_true(H5Dread(y, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, yv) >= 0);
    for (int64_t i = 0; i < e->n; i++) {
        assert_int_equal(yv[i], e->yref(i));
        for (int64_t k = 0; k < e->per; k++)
            if (xv[i * e->per + k] != (double)(float)e->xref(i, k)) {
                print_error("%s: x[%lld].flat[%lld] = %g, expected %g\n", path, (long long)i,
                            (long long)k, xv[i * e->per + k], e->xref(i, k));
                fail();
            }
    }
    free(xv);
    free(yv);
    (void)H5Pclose(xp);
    (void)H5Pclose(yp);
    (void)H5Tclose(xt);
    (void)H5Tclose(yt);
    (void)H5Dclose(x);
    (void)H5Dclose(y);
    (void)H5Gclose(g);
    assert_true(H5Fclose(f) >= 0);
}

/* The channels the converter keeps statistics for: x's axis 1 when x is
 * (N, C, H, W) with C > 1, else 1 ((N, H, W) images have one channel). */
static int64_t channels(const struct expect *e) {
    return e->ndim == 4 && e->shape[1] > 1 ? e->shape[1] : 1;
}

/* The population mean and standard deviation of x*scale (x as stored, in
 * f32) per channel, recomputed here in two passes: element k of a sample
 * is in channel k / (per / C). Returns C. */
static int64_t ref_stats_v(const struct expect *e, double scale, double *mean, double *sd) {
    int64_t nch = channels(e), chn = e->per / nch;

    for (int64_t c = 0; c < nch; c++) {
        double cnt = (double)(e->n * chn), m = 0, var = 0;
        for (int64_t i = 0; i < e->n; i++)
            for (int64_t k = c * chn; k < (c + 1) * chn; k++)
                m += (float)e->xref(i, k) * scale;
        m /= cnt;
        for (int64_t i = 0; i < e->n; i++)
            for (int64_t k = c * chn; k < (c + 1) * chn; k++)
                var += ((float)e->xref(i, k) * scale - m) * ((float)e->xref(i, k) * scale - m);
        mean[c] = m;
        sd[c] = sqrt(var / cnt);
    }
    return nch;
}

/* The statistics of a split converted as one channel. */
static void ref_stats(const struct expect *e, double scale, double *mean, double *sd) {
    double m[8], v[8];

    assert_int_equal(ref_stats_v(e, scale, m, v), 1);
    *mean = m[0];
    *sd = v[0];
}

/* The split through the reader: shape, attributes (mean and std as given,
 * to 1e-12), and every sample normalised. */
static void check_dataset_norm_v(const char *path, const struct expect *e, double scale,
                                 const double *mean, const double *sd, int64_t nch) {
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)e->n),
            *y = malloc(sizeof(int64_t) * (size_t)e->n);
    float *x = malloc(sizeof(float) * (size_t)(e->n * e->per));
    char err[512] = "";
    const int64_t *shape;
    tg_dataset *ds;
    int ndim;

    assert_true(idx && y && x);
    assert_int_equal(tg_dataset_open(path, e->split, &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_len(ds), e->n);
    shape = tg_dataset_sample_shape(ds, &ndim);
    assert_int_equal(ndim, e->ndim - 1);
    for (int d = 1; d < e->ndim; d++)
        assert_int_equal(shape[d - 1], e->shape[d]);
    assert_int_equal(tg_dataset_x_dtype(ds), e->u8 ? TG_U8 : TG_F32);
    assert_int_equal(tg_dataset_num_classes(ds), e->num_classes);
    assert_true(tg_dataset_scale(ds) == scale);
    const double *dm, *dsd;
    assert_int_equal(tg_dataset_norm(ds, &dm, &dsd), nch);
    for (int64_t c = 0; c < nch; c++) {
        assert_true(fabs(dm[c] - mean[c]) <= 1e-12 * fmax(1.0, fabs(mean[c])));
        assert_true(fabs(dsd[c] - sd[c]) <= 1e-12 * fmax(1.0, sd[c]));
    }
    assert_true(tg_dataset_mean(ds) == dm[0] && tg_dataset_std(ds) == dsd[0]);
    /* Reverse order, to read through the index path too. */
    for (int64_t i = 0; i < e->n; i++)
        idx[i] = e->n - 1 - i;
    assert_int_equal(tg_dataset_read(ds, idx, e->n, x, y, err, sizeof err), TG_OK);
    for (int64_t i = 0; i < e->n; i++) {
        assert_int_equal(y[i], e->yref(idx[i]));
        for (int64_t k = 0; k < e->per; k++) {
            int64_t c = k / (e->per / nch);
            float want = (float)(((float)e->xref(idx[i], k) * scale - dm[c]) / dsd[c]);
            assert_true(fabsf(x[i * e->per + k] - want) <= 1e-6f * fmaxf(1.0f, fabsf(want)));
        }
    }
    tg_dataset_close(ds);
    free(idx);
    free(y);
    free(x);
}

/* check_dataset_norm_v() with one mean and std. */
static void check_dataset_norm(const char *path, const struct expect *e, double scale, double mean,
                               double sd) {
    check_dataset_norm_v(path, e, scale, &mean, &sd, 1);
}

/* check_dataset_norm_v() with the split's own statistics, per channel. */
static void check_dataset(const char *path, const struct expect *e, double scale) {
    double mean[8], sd[8];
    int64_t nch = ref_stats_v(e, scale, mean, sd);

    check_dataset_norm_v(path, e, scale, mean, sd, nch);
}

/* ---------------------------------------------------------------------- */
/* Round trips                                                             */
/* ---------------------------------------------------------------------- */

/* Files NumPy wrote: every x dtype, format versions 1 to 3, big-endian x and
 * labels, and each integer label dtype, as splits of one file. */
static void test_npy_numpy_files(void **state) {
    const struct {
        const char *x, *y;
        struct expect e;
    } cases[] = {
        {"x_u8.npy",
         "y_u1_7.npy",
         {"u8", 7, 12, 4, {7, 1, 3, 4}, true, ref_u8, ref_label, 5, 1, 7, 7}},
        {"x_u8_v3.npy",
         "y_i1_7.npy",
         {"u8v3", 7, 12, 4, {7, 1, 3, 4}, true, ref_u8, ref_label, 5, 1, 7, 7}},
        {"x_u8.npy",
         "y_u2be_7.npy",
         {"u2be", 7, 12, 4, {7, 1, 3, 4}, true, ref_u8, ref_label, 5, 1, 7, 7}},
        {"x_f4.npy", "y_i4_5.npy", {"f4", 5, 3, 2, {5, 3}, false, ref_f, ref_label, 5, 1, 5, 5}},
        {"x_f4_v2.npy",
         "y_i8_5.npy",
         {"f4v2", 5, 3, 2, {5, 3}, false, ref_f, ref_label, 5, 1, 5, 5}},
        {"x_f8_be.npy",
         "y_u8_5.npy",
         {"f8be", 5, 4, 3, {5, 2, 2}, false, ref_f, ref_label, 5, 1, 5, 5}},
        {"x_f4_4d.npy",
         "y_i2be_5.npy",
         {"f4d4", 5, 12, 5, {5, 2, 1, 2, 3}, false, ref_f, ref_label, 5, 1, 5, 5}},
    };
    const char *out = tgt_path("numpy.h5");
    char err[512] = "";

    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tg_status st = tg_npy_convert(fixture(cases[c].x), fixture(cases[c].y), out,
                                      cases[c].e.split, NULL, err, sizeof err);
        if (st)
            print_error("%s + %s: %s\n", cases[c].x, cases[c].y, err);
        assert_int_equal(st, TG_OK);
    }
    /* Every split is checked after all were written: adding one kept the
     * others intact. */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        check_stored(out, &cases[c].e);
        check_dataset(out, &cases[c].e, cases[c].e.u8 ? 1.0 / 255.0 : 1.0);
    }
}

static double ref_big(int64_t i, int64_t k) {
    return (double)((i * 131 + k * 17) % 1000) / 64.0 - 3.0;
}
static int64_t ref_many(int64_t i) { return (i * 7) % 300; }

/* A split of several chunks and raw blocks, labels that need i32, the
 * default chunk and an explicit one. */
static void test_npy_chunks(void **state) {
    enum {
        N = 3000,
        PER = 100
    };
    const char *xp = tgt_path("big-x.npy"), *yp = tgt_path("big-y.npy");
    const char *out = tgt_path("big.h5");
    float *xb = malloc(sizeof(float) * N * PER);
    int32_t yb[N];
    struct expect e = {"train", N, PER, 3, {N, 4, 25}, false, ref_big, ref_many, 300, 4, 1024, N};
    tg_npy_options o = {0};
    char err[512] = "";

    (void)state;
    assert_non_null(xb);
    for (int64_t i = 0; i < N; i++) {
        yb[i] = (int32_t)ref_many(i);
        for (int64_t k = 0; k < PER; k++)
            xb[i * PER + k] = (float)ref_big(i, k);
    }
    write_arr(xp, "<f4", "(3000, 4, 25)", xb, sizeof(float) * N * PER);
    write_arr(yp, "<i4", "(3000,)", yb, sizeof yb);
    assert_int_equal(tg_npy_convert(xp, yp, out, "train", NULL, err, sizeof err), TG_OK);
    check_stored(out, &e);
    check_dataset(out, &e, 1.0);
    /* y chunks of 64 * 40 labels do not divide N. */
    o.chunk_samples = 40;
    e.xchunk = 40;
    e.ychunk = 2560;
    assert_int_equal(tg_npy_convert(xp, yp, out, "train", &o, err, sizeof err), TG_OK);
    check_stored(out, &e);
    /* One chunk of 300,000 elements spans two raw read blocks. */
    o.chunk_samples = N;
    e.xchunk = N;
    e.ychunk = N;
    assert_int_equal(tg_npy_convert(xp, yp, out, "train", &o, err, sizeof err), TG_OK);
    check_stored(out, &e);
    check_dataset(out, &e, 1.0);
    free(xb);
}

/* num_classes, scale, mean and std as given, and options refused. */
static void test_npy_options(void **state) {
    const char *out = tgt_path("opts.h5");
    tg_npy_options o = {
        .num_classes = 10, .scale = 0.5, .set_mean_std = true, .mean = 0.25, .std = 2.0};
    char err[512] = "";
    tg_dataset *ds;

    (void)state;
    assert_int_equal(tg_npy_convert(fixture("x_u8.npy"), fixture("y_u1_7.npy"), out, "train", &o,
                                    err, sizeof err),
                     TG_OK);
    assert_int_equal(tg_dataset_open(out, "train", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_num_classes(ds), 10);
    assert_true(tg_dataset_scale(ds) == 0.5);
    assert_true(tg_dataset_mean(ds) == 0.25);
    assert_true(tg_dataset_std(ds) == 2.0);
    tg_dataset_close(ds);

    o.num_classes = 4; /* the labels reach 4 */
    expect_fail(tg_npy_convert(fixture("x_u8.npy"), fixture("y_u1_7.npy"), out, "train", &o, err,
                               sizeof err),
                TG_ERR_FORMAT, err, "y_u1_7.npy", "y[1] = 4 is not below num_classes 4", NULL);
    o = (tg_npy_options){.deflate_level = 10};
    expect_fail(tg_npy_convert(fixture("x_u8.npy"), fixture("y_u1_7.npy"), out, "train", &o, err,
                               sizeof err),
                TG_ERR_INVALID, err, "deflate level 10", NULL);
    o = (tg_npy_options){.num_classes = -3};
    expect_fail(tg_npy_convert(fixture("x_u8.npy"), fixture("y_u1_7.npy"), out, "train", &o, err,
                               sizeof err),
                TG_ERR_INVALID, err, "num_classes -3", NULL);
    o = (tg_npy_options){.set_mean_std = true, .mean = 0, .std = 0};
    expect_fail(tg_npy_convert(fixture("x_u8.npy"), fixture("y_u1_7.npy"), out, "train", &o, err,
                               sizeof err),
                TG_ERR_INVALID, err, "std > 0", NULL);
    expect_fail(tg_npy_convert(fixture("x_u8.npy"), fixture("y_u1_7.npy"), out, "a/b", NULL, err,
                               sizeof err),
                TG_ERR_INVALID, err, "bad split name", NULL);
    expect_fail(tg_npy_convert(NULL, fixture("y_u1_7.npy"), out, "train", NULL, err, sizeof err),
                TG_ERR_INVALID, err, "must be given", NULL);
    /* The refused runs left the split as the first run wrote it. */
    assert_int_equal(tg_dataset_open(out, "train", &ds, err, sizeof err), TG_OK);
    assert_true(tg_dataset_std(ds) == 2.0);
    tg_dataset_close(ds);
}

/* Converts two fixtures into split `split` of out, which must succeed. */
static void conv_ok(const char *x, const char *y, const char *out, const char *split,
                    const tg_npy_options *opts) {
    char err[512] = "";
    tg_status st = tg_npy_convert(fixture(x), fixture(y), out, split, opts, err, sizeof err);

    if (st)
        print_error("%s + %s -> %s: %s\n", x, y, split, err);
    assert_int_equal(st, TG_OK);
}

/* Reads mean and std of a split through the reader. */
static void read_norm(const char *path, const char *split, double *mean, double *sd) {
    char err[512] = "";
    tg_dataset *ds;

    assert_int_equal(tg_dataset_open(path, split, &ds, err, sizeof err), TG_OK);
    *mean = tg_dataset_mean(ds);
    *sd = tg_dataset_std(ds);
    tg_dataset_close(ds);
}

/* A split other than train converted into a file that holds train takes
 * train's mean and std, as the IDX converter does; set_mean_std still wins,
 * and the same split converted into a file without train gets its own. */
static void test_npy_test_takes_train(void **state) {
    const char *out = tgt_path("train-test.h5"), *alone = tgt_path("test-alone.h5");
    const struct expect tr = {"train", 7, 12, 4, {7, 1, 3, 4}, true, ref_u8, ref_label, 5, 1, 7, 7};
    const struct expect te = {"test", 5, 3, 2, {5, 3}, false, ref_f, ref_label, 5, 1, 5, 5};
    const tg_npy_options given = {.set_mean_std = true, .mean = 0.25, .std = 2.0};
    double trm, trs, tem, tes, m1, s1, m2, s2;

    (void)state;
    ref_stats(&tr, 1.0 / 255.0, &trm, &trs);
    ref_stats(&te, 1.0, &tem, &tes);
    /* The rule is only visible when the two splits' statistics differ. */
    assert_true(fabs(trm - tem) > 0.1 && fabs(trs - tes) > 0.01);
    conv_ok("x_u8.npy", "y_u1_7.npy", out, "train", NULL);
    conv_ok("x_f4.npy", "y_i4_5.npy", out, "test", NULL);
    check_dataset(out, &tr, 1.0 / 255.0);
    /* Every test sample is normalised with train's statistics. */
    check_dataset_norm(out, &te, 1.0, trm, trs);
    read_norm(out, "train", &m1, &s1);
    read_norm(out, "test", &m2, &s2);
    assert_true(m2 == m1 && s2 == s1);
    /* Explicit statistics win over train's. */
    conv_ok("x_f4.npy", "y_i4_5.npy", out, "test", &given);
    check_dataset_norm(out, &te, 1.0, 0.25, 2.0);
    /* Train converted again keeps its own; the test split, converted alone,
     * gets its own. */
    conv_ok("x_u8.npy", "y_u1_7.npy", out, "train", NULL);
    check_dataset(out, &tr, 1.0 / 255.0);
    conv_ok("x_f4.npy", "y_i4_5.npy", alone, "test", NULL);
    check_dataset(alone, &te, 1.0);
}

/* Deflate gives the same values. */
static void test_npy_deflate(void **state) {
    const char *out = tgt_path("deflate.h5");
    const struct expect e = {"train", 7, 12, 4, {7, 1, 3, 4}, true, ref_u8, ref_label, 5, 1, 7, 7};
    tg_npy_options o = {.deflate_level = 1};

    (void)state;
    conv_ok("x_u8.npy", "y_u1_7.npy", out, "train", &o);
    check_stored(out, &e);
}

/* ---------------------------------------------------------------------- */
/* Bad inputs                                                              */
/* ---------------------------------------------------------------------- */

/* The output of every refused conversion must not exist afterwards. */
static const char *bad_out(void) {
    static char buf[512];

    snprintf(buf, sizeof buf, "%s/bad-out.h5", tgt_dir);
    return buf;
}

static void no_output_left(void) {
    DIR *d = opendir(tgt_dir);
    struct dirent *de;

    assert_non_null(d);
    assert_int_not_equal(access(bad_out(), F_OK), 0);
    /* Nor a temporary file. */
    while ((de = readdir(d)) != NULL)
        assert_null(strstr(de->d_name, "bad-out.h5.tmp"));
    closedir(d);
}

/* Converts x with the good labels y_i4_5 (or x_f4 with y) into bad_out(). */
static tg_status conv(const char *x, const char *y, char *err, size_t errlen) {
    return tg_npy_convert(x ? x : fixture("x_f4.npy"), y ? y : fixture("y_i4_5.npy"), bad_out(),
                          "train", NULL, err, errlen);
}

static void test_npy_bad_headers(void **state) {
    const char *p = tgt_path("bad.npy"), *nothere = tgt_path("nothere.npy");
    unsigned char raw[64];
    char err[512] = "";
    const struct {
        const char *dict, *frag;
    } dicts[] = {
        {"[1, 2]", "not a dict"},
        {"{'descr': '<f4', 'fortran_order': False}", "missing key"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3), 'extra': 1}", "unknown key"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (5, 3)}", "twice"},
        {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (5, 3)}", "True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [5, 3]}", "must be a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (5, -3)}", "non-negative integers"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (5 3)}", "expected ',' or ')'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (5, 3)} x", "text after the dict"},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (5, 3)}", "between items"},
        {"{'descr' '<f4', 'fortran_order': False, 'shape': (5, 3)}", "expected ':'"},
        {"{'descr': <f4, 'fortran_order': False, 'shape': (5, 3)}", "quoted string"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 3)}",
         "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", "more than 8"},
    };

    (void)state;
    /* Not a .npy at all, a cut preamble, a cut header length. */
    write_bytes(p, "hello, world", 12);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "not a .npy file",
                "bad magic", NULL);
    write_bytes(p, "\x93NUMPY\x01", 7);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "truncated header", NULL);
    write_bytes(p, "\x93NUMPY\x02\x00\x40\x00", 10);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "truncated header",
                "header length", NULL);
    /* Versions. */
    memcpy(raw, "\x93NUMPY\x04\x00\x10\x00", 10);
    write_bytes(p, raw, 10);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_UNSUPPORTED, err, p, "version 4.0",
                "expected 1.0, 2.0 or 3.0", NULL);
    memcpy(raw, "\x93NUMPY\x01\x01\x10\x00", 10);
    write_bytes(p, raw, 10);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_UNSUPPORTED, err, p, "version 1.1", NULL);
    /* A header longer than the file, and one over the bound. */
    memcpy(raw, "\x93NUMPY\x01\x00\x76\x00{'descr'", 18);
    write_bytes(p, raw, 18);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "truncated header",
                "8 of the 118 bytes", NULL);
    memcpy(raw, "\x93NUMPY\x02\x00\x00\x00\x10\x00", 12);
    write_bytes(p, raw, 12);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "header length 1048576",
                NULL);
    for (size_t c = 0; c < sizeof dicts / sizeof dicts[0]; c++) {
        write_npy(p, 1 + (int)(c % 3), dicts[c].dict, raw, 60);
        expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "bad header dict",
                    dicts[c].frag, NULL);
    }
    expect_fail(conv(nothere, NULL, err, sizeof err), TG_ERR_IO, err, nothere, "cannot open", NULL);
    /* The labels file goes through the same parser. */
    write_bytes(p, "hello, world", 12);
    expect_fail(conv(NULL, p, err, sizeof err), TG_ERR_FORMAT, err, p, "not a .npy file", NULL);
    no_output_left();
}

static void test_npy_bad_arrays(void **state) {
    const char *p = tgt_path("bad.npy"), *q = tgt_path("bad-y.npy");
    unsigned char body[512] = {0};
    char err[512] = "";

    (void)state;
    /* Dtypes. */
    expect_fail(conv(fixture("x_obj.npy"), NULL, err, sizeof err), TG_ERR_UNSUPPORTED, err,
                "x_obj.npy", "dtype |O (Python objects)", "expected uint8", NULL);
    write_arr(p, "<i4", "(5, 3)", body, 60);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_UNSUPPORTED, err, p, "dtype <i4", NULL);
    write_arr(p, "<c8", "(5, 3)", body, 120);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_UNSUPPORTED, err, p, "dtype <c8", NULL);
    write_arr(p, "<f2", "(5, 3)", body, 30);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_UNSUPPORTED, err, p, "dtype <f2", NULL);
    write_npy(p, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (5, 3), }", body,
              60);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_UNSUPPORTED, err, p, "dtype structured",
                NULL);
    expect_fail(conv(NULL, fixture("y_bool_5.npy"), err, sizeof err), TG_ERR_UNSUPPORTED, err,
                "y_bool_5.npy", "dtype |b1", "integer dtype", "f4/f8 for regression targets",
                NULL);
    /* A float y of (N, K) holds regression targets (tests/test_regression.c). */
    assert_int_equal(conv(NULL, fixture("x_f4.npy"), err, sizeof err), TG_OK);
    assert_int_equal(unlink(bad_out()), 0);
    /* Order and shapes. */
    expect_fail(conv(fixture("x_f4_fortran.npy"), NULL, err, sizeof err), TG_ERR_UNSUPPORTED, err,
                "x_f4_fortran.npy", "Fortran order", "np.ascontiguousarray", NULL);
    write_npy(q, 1, "{'descr': '<i4', 'fortran_order': True, 'shape': (5,), }", body, 20);
    assert_int_equal(conv(NULL, q, err, sizeof err), TG_OK); /* 1-D: the same bytes */
    assert_int_equal(unlink(bad_out()), 0);
    expect_fail(conv(fixture("x_u8.npy"), NULL, err, sizeof err), TG_ERR_FORMAT, err,
                "y_i4_5.npy has 5 labels", "x_u8.npy has 7 samples", NULL);
    write_arr(q, "<i4", "(5, 1)", body, 20);
    expect_fail(conv(NULL, q, err, sizeof err), TG_ERR_FORMAT, err, q, "shape (5, 1)",
                "expected (N,)", NULL);
    write_arr(q, "<i4", "()", body, 4);
    expect_fail(conv(NULL, q, err, sizeof err), TG_ERR_FORMAT, err, q, "shape ()", NULL);
    write_arr(p, "<f4", "(5,)", body, 20);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "shape (5,)",
                "1 to 4 dims after N", NULL);
    write_arr(p, "|u1", "(5, 1, 1, 1, 1, 1)", body, 5);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "1 to 4 dims", NULL);
    /* Empty arrays. */
    write_arr(p, "<f4", "(0, 3)", body, 0);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "shape (0, 3)",
                "empty array", NULL);
    write_arr(p, "<f4", "(5, 0)", body, 0);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "empty array", NULL);
    write_arr(q, "<i4", "(0,)", body, 0);
    expect_fail(conv(NULL, q, err, sizeof err), TG_ERR_FORMAT, err, q, "empty array", NULL);
    /* Bodies shorter and longer than the header says. */
    write_arr(p, "<f4", "(5, 3)", body, 59);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "truncated body",
                "needs 60 bytes but only 59", NULL);
    write_arr(q, "<i8", "(5,)", body, 8);
    expect_fail(conv(NULL, q, err, sizeof err), TG_ERR_FORMAT, err, q, "truncated body", NULL);
    write_arr(p, "<f4", "(5, 3)", body, 61);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "data continues past", NULL);
    no_output_left();
}

static void test_npy_bad_values(void **state) {
    const char *p = tgt_path("bad.npy"), *q = tgt_path("bad-y.npy");
    float xf[4 * 2 * 3] = {0};
    double xd[5 * 3] = {0};
    int8_t y8[5] = {0, 1, 2, -1, 4};
    uint64_t y64[5] = {0, 1, 2, 3, ((uint64_t)1 << 63) + 5};
    int32_t y32[5] = {0, 1, (int32_t)2147483647, 3, 4};
    char err[512] = "";

    (void)state;
    write_arr(q, "|i1", "(5,)", y8, sizeof y8);
    expect_fail(conv(NULL, q, err, sizeof err), TG_ERR_FORMAT, err, q, "y[3] = -1 is negative",
                NULL);
    write_arr(q, "<u8", "(5,)", y64, sizeof y64);
    expect_fail(conv(NULL, q, err, sizeof err), TG_ERR_FORMAT, err, q,
                "y[4] = 9223372036854775813 is too large", NULL);
    write_arr(q, "<i4", "(5,)", y32, sizeof y32);
    expect_fail(conv(NULL, q, err, sizeof err), TG_ERR_FORMAT, err, q, "y[2] = 2147483647", NULL);
    /* Non-finite x, named by its first index. */
    y32[2] = 2;
    write_arr(q, "<i4", "(4,)", y32, 16);
    xf[2 * 6 + 1 * 3 + 0] = NAN;
    xf[3 * 6] = NAN;
    write_arr(p, "<f4", "(4, 2, 3)", xf, sizeof xf);
    expect_fail(conv(p, q, err, sizeof err), TG_ERR_FORMAT, err, p, "x[2, 1, 0] is NaN", NULL);
    xd[7] = -INFINITY;
    write_arr(p, "<f8", "(5, 3)", xd, sizeof xd);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "x[2, 1] is -inf", NULL);
    xd[7] = 1e300;
    write_arr(p, "<f8", "(5, 3)", xd, sizeof xd);
    expect_fail(conv(p, NULL, err, sizeof err), TG_ERR_FORMAT, err, p, "x[2, 1] = 1e+300",
                "float32 range", NULL);
    no_output_left();
    /* An existing file that is not HDF5 is never overwritten. */
    write_bytes(bad_out(), "not hdf5", 8);
    expect_fail(conv(NULL, NULL, err, sizeof err), TG_ERR_FORMAT, err, bad_out(),
                "not an HDF5 file", NULL);
    assert_int_equal(unlink(bad_out()), 0);
}

/* A conversion that fails late (after y and part of x are written) leaves
 * an existing file with its splits as they were and no partial group. */
static void test_npy_keeps_output(void **state) {
    enum {
        N = 2000
    };
    const char *out = tgt_path("keep.h5"), *p = tgt_path("late-nan.npy"),
               *q = tgt_path("late-y.npy");
    const struct expect tr = {"train", 7, 12, 4, {7, 1, 3, 4}, true, ref_u8, ref_label, 5, 1, 7, 7};
    const struct expect te = {"test", 5, 3, 2, {5, 3}, false, ref_f, ref_label, 5, 1, 5, 5};
    float *xf = calloc(N * 2, sizeof(float));
    uint8_t y[N] = {0};
    char err[512] = "";
    hid_t f;

    (void)state;
    assert_non_null(xf);
    conv_ok("x_u8.npy", "y_u1_7.npy", out, "train", NULL);
    conv_ok("x_f4.npy", "y_i4_5.npy", out, "test", NULL);
    /* NaN in the second chunk of x: the first chunk is already written. */
    xf[2 * 1500 + 1] = NAN;
    write_arr(p, "<f4", "(2000, 2)", xf, sizeof(float) * N * 2);
    write_arr(q, "|u1", "(2000,)", y, sizeof y);
    expect_fail(tg_npy_convert(p, q, out, "train", NULL, err, sizeof err), TG_ERR_FORMAT, err, p,
                "x[1500, 1] is NaN", NULL);
    check_stored(out, &tr);
    check_dataset(out, &tr, 1.0 / 255.0);
    check_stored(out, &te);
    f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_int_equal(H5Lexists(f, "/.train.partial", H5P_DEFAULT), 0);
    assert_true(H5Fclose(f) >= 0);
    /* And into a new file: neither it nor its temporary remains. */
    expect_fail(tg_npy_convert(p, q, bad_out(), "train", NULL, err, sizeof err), TG_ERR_FORMAT, err,
                "x[1500, 1] is NaN", NULL);
    no_output_left();
    free(xf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_npy_numpy_files),  cmocka_unit_test(test_npy_chunks),
        cmocka_unit_test(test_npy_options),      cmocka_unit_test(test_npy_test_takes_train),
        cmocka_unit_test(test_npy_deflate),      cmocka_unit_test(test_npy_bad_headers),
        cmocka_unit_test(test_npy_bad_arrays),   cmocka_unit_test(test_npy_bad_values),
        cmocka_unit_test(test_npy_keeps_output),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
