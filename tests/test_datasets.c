/*
 * test_datasets.c: the IDX converter, the HDF5 dataset reader and the
 * prefetching loader, against files built here in a temporary directory:
 * good files read back exactly, and every bad file fails at open (or at
 * conversion) with a message that names the file and the problem.
 */
#define _GNU_SOURCE
#include <fcntl.h>
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
#include <zlib.h>

#include "tapegrad/datasets.h"
#include "test_util.h"

/* Where the Debian package dataset-fashion-mnist puts the files; a build
 * may point elsewhere with -DFMNIST_DIR=... */
#ifndef FMNIST_DIR
#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"
#endif

static int group_setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_datasets");
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

/* ---------------------------------------------------------------------- */
/* IDX files                                                               */
/* ---------------------------------------------------------------------- */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void write_gz(const char *path, const void *data, size_t len, bool compress) {
    if (compress) {
        gzFile gz = gzopen(path, "wb");
        assert_non_null(gz);
        assert_int_equal(gzwrite(gz, data, (unsigned)len), (int)len);
        assert_int_equal(gzclose(gz), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
    }
}

static uint8_t pixel(int64_t i, int64_t k) { return (uint8_t)((i * 37 + k * 11 + 5) % 256); }

/* An images file with header (magic, n, rows, cols) and body_n images. */
static void write_images(const char *path, uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols,
                         uint32_t body_n) {
    size_t per = (size_t)rows * cols, len = 16 + body_n * per;
    unsigned char *buf = malloc(len);

    assert_non_null(buf);
    put_be32(buf, magic);
    put_be32(buf + 4, n);
    put_be32(buf + 8, rows);
    put_be32(buf + 12, cols);
    for (size_t i = 0; i < body_n; i++)
        for (size_t k = 0; k < per; k++)
            buf[16 + i * per + k] = pixel((int64_t)i, (int64_t)k);
    write_gz(path, buf, len, true);
    free(buf);
}

static void write_labels(const char *path, uint32_t magic, uint32_t n, const uint8_t *lab,
                         uint32_t body_n) {
    unsigned char buf[8 + 256];

    assert_true(body_n <= 256);
    put_be32(buf, magic);
    put_be32(buf + 4, n);
    memcpy(buf + 8, lab, body_n);
    write_gz(path, buf, 8 + body_n, true);
}

static const uint8_t k_labels[6] = {3, 1, 4, 1, 5, 9};

static void test_idx_round_trip(void **state) {
    const char *im = tgt_path("rt-images.gz"), *lb = tgt_path("rt-labels.gz");
    const char *out = tgt_path("rt.h5");
    const int64_t idx[5] = {5, 0, 2, 2, 4};
    double sum = 0, sumsq = 0, cnt = 6.0 * 12, mean, sd;
    char err[512] = "";
    tg_dataset *ds;
    float x[5 * 12];
    int64_t y[5];
    int ndim;
    const int64_t *shape;

    (void)state;
    write_images(im, 0x803, 6, 3, 4, 6);
    write_labels(lb, 0x801, 6, k_labels, 6);
    assert_int_equal(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_OK);
    for (int i = 0; i < 6; i++)
        for (int k = 0; k < 12; k++) {
            double v = pixel(i, k) / 255.0;
            sum += v;
            sumsq += v * v;
        }
    mean = sum / cnt;
    sd = sqrt(sumsq / cnt - mean * mean);

    assert_int_equal(tg_dataset_open(out, "train", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_len(ds), 6);
    shape = tg_dataset_sample_shape(ds, &ndim);
    assert_int_equal(ndim, 3);
    assert_int_equal(shape[0], 1);
    assert_int_equal(shape[1], 3);
    assert_int_equal(shape[2], 4);
    assert_int_equal(tg_dataset_sample_numel(ds), 12);
    assert_int_equal(tg_dataset_x_dtype(ds), TG_U8);
    assert_int_equal(tg_dataset_num_classes(ds), 10);
    assert_true(tg_dataset_scale(ds) == 1.0 / 255.0);
    assert_true(fabs(tg_dataset_mean(ds) - mean) < 1e-12);
    assert_true(fabs(tg_dataset_std(ds) - sd) < 1e-12);

    assert_int_equal(tg_dataset_read(ds, idx, 5, x, y, err, sizeof err), TG_OK);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(y[i], k_labels[idx[i]]);
        for (int k = 0; k < 12; k++) {
            float want =
                (float)((pixel(idx[i], k) / 255.0 - tg_dataset_mean(ds)) / tg_dataset_std(ds));
            assert_true(fabsf(x[i * 12 + k] - want) <= 1e-6f * fmaxf(1.0f, fabsf(want)));
        }
    }
    tg_dataset_close(ds);
}

/* num_classes grows past 10 with the labels; a second split joins the file
 * and converting a split again replaces it. */
static void test_idx_splits_and_classes(void **state) {
    const char *im = tgt_path("sc-images.gz"), *lb = tgt_path("sc-labels.gz");
    const char *out = tgt_path("sc.h5");
    const uint8_t lab[4] = {0, 12, 3, 7};
    char err[512] = "";
    tg_dataset *ds;

    (void)state;
    write_images(im, 0x803, 6, 2, 2, 6);
    write_labels(lb, 0x801, 6, k_labels, 6);
    assert_int_equal(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_OK);
    write_images(im, 0x803, 4, 2, 2, 4);
    write_labels(lb, 0x801, 4, lab, 4);
    assert_int_equal(tg_idx_convert(im, lb, out, "/test", err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_open(out, "train", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_len(ds), 6);
    double train_mean = tg_dataset_mean(ds), train_std = tg_dataset_std(ds);
    tg_dataset_close(ds);
    assert_int_equal(tg_dataset_open(out, "test", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_len(ds), 4);
    assert_int_equal(tg_dataset_num_classes(ds), 13);
    /* The test split is normalised with the training split's statistics,
     * not with its own (which differ: the 4 images are not the 6). */
    double own = 0;
    for (int64_t i = 0; i < 4; i++)
        for (int64_t k = 0; k < 4; k++)
            own += pixel(i, k) / 255.0 / 16.0;
    assert_true(fabs(own - train_mean) > 1e-3);
    assert_true(tg_dataset_mean(ds) == train_mean);
    assert_true(tg_dataset_std(ds) == train_std);
    tg_dataset_close(ds);
    /* Replace train with the 4-sample files. */
    assert_int_equal(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_open(out, "train", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_len(ds), 4);
    tg_dataset_close(ds);
}

static void test_idx_bad_files(void **state) {
    const char *im = tgt_path("bad-images.gz"), *lb = tgt_path("bad-labels.gz");
    const char *out = tgt_path("bad-out.h5"), *nothere = tgt_path("nothere.gz");
    const char *plain = tgt_path("plain-images");
    unsigned char raw[32] = {0, 0, 8, 3};
    char err[512] = "";

    (void)state;
    write_labels(lb, 0x801, 6, k_labels, 6);

    write_images(im, 0x801, 6, 2, 2, 6);
    expect_fail(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_ERR_FORMAT, err, im,
                "bad IDX magic 0x00000801", "expected 0x00000803", NULL);
    write_images(im, 0x803, 6, 2, 2, 5);
    expect_fail(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_ERR_FORMAT, err, im,
                "short body", "6 images", NULL);
    write_images(im, 0x803, 5, 2, 2, 5);
    expect_fail(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_ERR_FORMAT, err, lb, im,
                "6 labels", "5 images", NULL);
    write_images(im, 0x803, 5, 2, 2, 6);
    write_labels(lb, 0x801, 5, k_labels, 5);
    expect_fail(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_ERR_FORMAT, err, im,
                "data continues past", NULL);
    write_labels(lb, 0x801, 6, k_labels, 4);
    expect_fail(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_ERR_FORMAT, err, lb,
                "short body", "6 labels", NULL);
    write_labels(lb, 0x803, 6, k_labels, 6);
    expect_fail(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_ERR_FORMAT, err, lb,
                "bad IDX magic", "looks like an images file", NULL);
    write_labels(lb, 0x801, 6, k_labels, 6);
    write_gz(plain, raw, sizeof raw, false);
    expect_fail(tg_idx_convert(plain, lb, out, "train", err, sizeof err), TG_ERR_FORMAT, err, plain,
                "not a gzip file", NULL);
    expect_fail(tg_idx_convert(nothere, lb, out, "train", err, sizeof err), TG_ERR_IO, err, nothere,
                "cannot open", NULL);
    /* No failure above may leave an output file behind. */
    assert_int_not_equal(access(out, F_OK), 0);

    /* An existing file that is not HDF5 is never overwritten. */
    write_images(im, 0x803, 6, 2, 2, 6);
    write_gz(out, raw, sizeof raw, false);
    expect_fail(tg_idx_convert(im, lb, out, "train", err, sizeof err), TG_ERR_FORMAT, err, out,
                "not an HDF5 file", NULL);
}

/* ---------------------------------------------------------------------- */
/* HDF5 files                                                              */
/* ---------------------------------------------------------------------- */

/* What to put in a hand-built split; zeroed fields mean the defaults of a
 * valid 10-sample u8 split of 2x3 images. */
struct spec {
    const char *group;  /* default "train" */
    hid_t xtype, ytype; /* default u8 both */
    int xrank, yrank;   /* default 3 and 1 */
    hsize_t xn, yn;     /* rows: default 10 both; use -1 for 0 rows */
    bool no_x, no_y, no_classes, chunked;
    int64_t classes;  /* default 10 */
    double sd;        /* default 0.5 */
    int bad_label_at; /* 1-based position of a label == num_classes */
};

static hsize_t rows_of(hsize_t v) { return v == (hsize_t)-1 ? 0 : v ? v : 10; }

/* Writes a dataset of `rank` (1: (n,), 2: (n, 1), 3: (n, 2, 3)) from the
 * leading elements of data, converted to type by HDF5. */
static void put_dataset(hid_t g, const char *name, hid_t type, int rank, hsize_t n, bool chunked,
                        const double *data) {
    const hsize_t shapes[3][3] = {{n}, {n, 1}, {n, 2, 3}}, chunks[3][3] = {{4}, {4, 1}, {4, 2, 3}};
    hid_t sp = H5Screate_simple(rank, shapes[rank - 1], NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t d;

    assert_true(sp >= 0 && dcpl >= 0);
    if (chunked && n > 0)
        assert_true(H5Pset_chunk(dcpl, rank, chunks[rank - 1]) >= 0);
    d = H5Dcreate2(g, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    if (n > 0)
        assert_true(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    assert_true(H5Dclose(d) >= 0);
    (void)H5Pclose(dcpl);
    (void)H5Sclose(sp);
}

static void put_attr(hid_t g, const char *name, hid_t type, double v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);

    assert_true(a >= 0);
    assert_true(H5Awrite(a, H5T_NATIVE_DOUBLE, &v) >= 0);
    assert_true(H5Aclose(a) >= 0);
    (void)H5Sclose(sp);
}

/* Sample i element k of the hand-built x. */
static double xval(hsize_t i, int k) { return (double)((i * 7 + (hsize_t)k * 3) % 200); }

static void write_h5(const char *path, const struct spec *s) {
    hsize_t xn = rows_of(s->xn), yn = rows_of(s->yn);
    int64_t classes = s->classes ? s->classes : 10;
    double *xb = calloc(xn * 6 + 1, sizeof *xb), *yb = calloc(yn + 1, sizeof *yb);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(f, s->group ? s->group : "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);

    assert_true(f >= 0 && g >= 0 && xb && yb);
    for (hsize_t i = 0; i < xn; i++)
        for (int k = 0; k < 6; k++)
            xb[i * 6 + k] = xval(i, k);
    for (hsize_t i = 0; i < yn; i++)
        yb[i] = (double)((int64_t)(i * 3) % classes);
    if (s->bad_label_at)
        yb[s->bad_label_at - 1] = (double)classes;
    if (!s->no_x)
        put_dataset(g, "x", s->xtype ? s->xtype : H5T_STD_U8LE, s->xrank ? s->xrank : 3, xn,
                    s->chunked, xb);
    if (!s->no_y)
        put_dataset(g, "y", s->ytype ? s->ytype : H5T_STD_U8LE, s->yrank ? s->yrank : 1, yn,
                    s->chunked, yb);
    if (!s->no_classes)
        put_attr(g, "num_classes", H5T_STD_I64LE, (double)classes);
    put_attr(g, "scale", H5T_IEEE_F64LE, 0.1);
    put_attr(g, "mean", H5T_IEEE_F64LE, 2.0);
    put_attr(g, "std", H5T_IEEE_F64LE, s->sd ? s->sd : 0.5);
    assert_true(H5Gclose(g) >= 0);
    assert_true(H5Fclose(f) >= 0);
    free(xb);
    free(yb);
}

struct bad_case {
    const char *name;
    struct spec spec;
    const char *split;
    tg_status want;
    const char *frag1, *frag2;
};

static void test_h5_bad_files(void **state) {
    /* Automatic, not static: HDF5 type ids are not compile-time constants. */
    const struct bad_case cases[] = {
        {"split.h5",
         {.group = "test"},
         "train",
         TG_ERR_FORMAT,
         "split group /train not found",
         "/test"},
        {"nox.h5", {.no_x = true}, "train", TG_ERR_FORMAT, "/train/x not found", "u8 or f32"},
        {"noy.h5", {.no_y = true}, "train", TG_ERR_FORMAT, "/train/y not found", "integer"},
        {"len.h5", {.yn = 9}, "train", TG_ERR_FORMAT, "/train/y has 9 rows", "/train/x has 10"},
        {"xrank.h5", {.xrank = 1}, "train", TG_ERR_FORMAT, "/train/x has rank 1", "expected 2.."},
        {"yrank.h5", {.yrank = 2}, "train", TG_ERR_FORMAT, "/train/y has rank 2", "expected 1"},
        {"xtype.h5",
         {.xtype = H5T_STD_I32LE},
         "train",
         TG_ERR_FORMAT,
         "/train/x has dtype i32",
         "u8 or f32"},
        /* f32 y holds regression targets (tests/test_regression.c). */
        {"ytype.h5",
         {.ytype = H5T_IEEE_F64LE},
         "train",
         TG_ERR_FORMAT,
         "/train/y has dtype f64",
         "integer type (u8, i32 or i64) for labels or f32 for regression targets"},
        {"label.h5",
         {.bad_label_at = 4},
         "train",
         TG_ERR_FORMAT,
         "/train/y[3] = 10",
         "outside [0, 10)"},
        {"empty.h5",
         {.xn = (hsize_t)-1, .yn = (hsize_t)-1},
         "train",
         TG_ERR_FORMAT,
         "/train is empty",
         "0 rows"},
        {"ncls.h5",
         {.no_classes = true},
         "train",
         TG_ERR_FORMAT,
         "no attribute num_classes",
         "in 1..1048576"},
        {"ncls0.h5", {.classes = -3}, "train", TG_ERR_FORMAT, "num_classes is -3", "in 1..1048576"},
        {"std.h5", {.sd = -1}, "train", TG_ERR_FORMAT, "attribute std is -1", "> 0"},
    };
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct bad_case *c = &cases[i];
        const char *path = tgt_path(c->name);
        tg_dataset *ds = (tg_dataset *)&err;

        write_h5(path, &c->spec);
        err[0] = '\0';
        expect_fail(tg_dataset_open(path, c->split, &ds, err, sizeof err), c->want, err, path,
                    c->frag1, c->frag2, NULL);
        assert_null(ds);
    }
}

static void test_h5_not_hdf5_truncated_missing(void **state) {
    const char *txt = tgt_path("text.h5"), *tr = tgt_path("trunc.h5");
    const char *none = tgt_path("none.h5");
    char err[512];
    tg_dataset *ds;
    struct stat sb;
    static const char junk[] = "x,y\n1,2\n";

    (void)state;
    write_gz(txt, junk, sizeof junk, false);
    expect_fail(tg_dataset_open(txt, "train", &ds, err, sizeof err), TG_ERR_FORMAT, err, txt,
                "not an HDF5 file", NULL);
    write_h5(tr, &(struct spec){.xn = 200, .yn = 200});
    assert_int_equal(stat(tr, &sb), 0);
    assert_int_equal(truncate(tr, sb.st_size / 2), 0);
    expect_fail(tg_dataset_open(tr, "train", &ds, err, sizeof err), TG_ERR_FORMAT, err, tr,
                "truncated", NULL);
    expect_fail(tg_dataset_open(none, "train", &ds, err, sizeof err), TG_ERR_IO, err, none,
                "cannot open", NULL);
}

/* f32 x, i64 y, chunked and contiguous layouts, cached and uncached reads:
 * all must give the same normalised values. */
static void test_h5_read_paths(void **state) {
    const char *a = tgt_path("f32.h5"), *b = tgt_path("u8chunk.h5");
    const int64_t idx[7] = {9, 3, 3, 0, 4, 5, 8};
    tg_dataset_options nocache = {.cache_budget = -1};
    char err[512];

    (void)state;
    write_h5(a, &(struct spec){.xtype = H5T_IEEE_F32LE, .ytype = H5T_STD_I64LE});
    write_h5(b, &(struct spec){.chunked = true, .ytype = H5T_STD_I32BE});
    for (int f = 0; f < 2; f++) {
        for (int c = 0; c < 2; c++) {
            tg_dataset *ds;
            float x[7 * 6];
            int64_t y[7];

            assert_int_equal(
                tg_dataset_open_opts(f ? b : a, "train", c ? &nocache : NULL, &ds, err, sizeof err),
                TG_OK);
            assert_int_equal(tg_dataset_x_dtype(ds), f ? TG_U8 : TG_F32);
            assert_int_equal(tg_dataset_read(ds, idx, 7, x, y, err, sizeof err), TG_OK);
            assert_int_equal(tg_dataset_x_cached(ds), !c);
            for (int i = 0; i < 7; i++) {
                assert_int_equal(y[i], (idx[i] * 3) % 10);
                for (int k = 0; k < 6; k++) {
                    float want = (float)((xval((hsize_t)idx[i], k) * 0.1 - 2.0) / 0.5);
                    assert_true(fabsf(x[i * 6 + k] - want) < 1e-5f);
                }
            }
            /* Labels alone, and an index out of range. */
            assert_int_equal(tg_dataset_read(ds, idx, 7, NULL, y, err, sizeof err), TG_OK);
            expect_fail(tg_dataset_read(ds, (int64_t[]){1, 10}, 2, x, y, err, sizeof err),
                        TG_ERR_INVALID, err, "index 10", "[0, 10)", NULL);
            tg_dataset_close(ds);
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Loader                                                                  */
/* ---------------------------------------------------------------------- */

/* Every batch of two epochs from the loader equals a direct read of the
 * sampler's indices, and the epoch end comes after num_batches batches. */
static void check_loader(const char *path, tg_sampler_config sc, int depth, int64_t budget) {
    tg_dataset_options dopt = {.cache_budget = budget};
    tg_dataset *ds, *ref;
    tg_sampler *s, *rs;
    tg_loader *ld;
    tg_loader_options lo = {.depth = depth};
    int64_t idx[64], rn, numel;
    float *rx;
    int64_t ry[64];
    char err[512];

    assert_int_equal(tg_dataset_open_opts(path, "train", &dopt, &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_open(path, "train", &ref, err, sizeof err), TG_OK);
    assert_int_equal(tg_sampler_new(&sc, &s, err, sizeof err), TG_OK);
    assert_int_equal(tg_sampler_new(&sc, &rs, err, sizeof err), TG_OK);
    numel = tg_dataset_sample_numel(ds);
    rx = malloc((size_t)(64 * numel) * sizeof *rx);
    assert_non_null(rx);
    assert_int_equal(tg_loader_new(ds, s, &lo, &ld, err, sizeof err), TG_OK);
    for (int64_t e = 0; e < 2; e++) {
        for (int64_t k = 0; k <= tg_sampler_num_batches(s); k++) {
            const float *x;
            const int64_t *y;
            int64_t n;
            bool end;

            assert_int_equal(tg_loader_next(ld, &x, &y, &n, &end, err, sizeof err), TG_OK);
            assert_int_equal(end, k == tg_sampler_num_batches(s));
            if (end)
                break;
            assert_int_equal(tg_sampler_batch(rs, e, k, idx, &rn, err, sizeof err), TG_OK);
            assert_int_equal(n, rn);
            assert_int_equal(tg_dataset_read(ref, idx, rn, rx, ry, err, sizeof err), TG_OK);
            if (n) {
                assert_memory_equal(x, rx, (size_t)(n * numel) * sizeof *rx);
                assert_memory_equal(y, ry, (size_t)n * sizeof *ry);
            }
        }
        assert_int_equal(tg_loader_samples_consumed(ld), (e + 1) * tg_sampler_epoch_samples(s));
    }
    tg_loader_free(ld);
    assert_int_equal(tg_sampler_samples_consumed(s), 2 * tg_sampler_epoch_samples(s));
    free(rx);
    tg_sampler_free(s);
    tg_sampler_free(rs);
    tg_dataset_close(ds);
    tg_dataset_close(ref);
}

static void test_loader_epochs(void **state) {
    const char *p = tgt_path("loader.h5");

    (void)state;
    write_h5(p, &(struct spec){.xn = 50, .yn = 50, .chunked = true});
    /* Cached and read from the file (budget -1) must agree. */
    check_loader(p, tg_sampler_config_train(50, 8, 7, 1, 2), 0, 0);
    check_loader(p, tg_sampler_config_train(50, 8, 7, 0, 1), 3, -1);
    /* Eval, 4 ranks: the last batch holds 2 samples, so rank 3 gets none. */
    check_loader(p, tg_sampler_config_eval(50, 8, 3, 4), 2, 0);
    check_loader(p, tg_sampler_config_eval(50, 8, 0, 4), 4, -1);
}

static void test_loader_shutdown(void **state) {
    const char *p = tgt_path("loader2.h5");
    tg_sampler_config sc = tg_sampler_config_train(50, 8, 1, 0, 2);
    tg_dataset *ds;
    tg_sampler *s;
    tg_loader *ld;
    const float *x;
    const int64_t *y;
    int64_t n;
    bool end;
    char err[512];

    (void)state;
    write_h5(p, &(struct spec){.xn = 50, .yn = 50});
    assert_int_equal(tg_dataset_open(p, "train", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_sampler_new(&sc, &s, err, sizeof err), TG_OK);
    /* Freed at once, and freed mid-epoch with batches read ahead: the
     * sampler keeps only what the consumer took. */
    assert_int_equal(tg_loader_new(ds, s, NULL, &ld, err, sizeof err), TG_OK);
    tg_loader_free(ld);
    assert_int_equal(tg_sampler_samples_consumed(s), 0);
    assert_int_equal(tg_loader_new(ds, s, NULL, &ld, err, sizeof err), TG_OK);
    for (int i = 0; i < 2; i++)
        assert_int_equal(tg_loader_next(ld, &x, &y, &n, &end, err, sizeof err), TG_OK);
    usleep(20000);
    tg_loader_free(ld);
    assert_int_equal(tg_sampler_samples_consumed(s), 16);
    /* A sampler for another split size is refused. */
    tg_sampler_free(s);
    sc.n = 49;
    assert_int_equal(tg_sampler_new(&sc, &s, err, sizeof err), TG_OK);
    expect_fail(tg_loader_new(ds, s, NULL, &ld, err, sizeof err), TG_ERR_INVALID, err, p, "N = 49",
                "has 50", NULL);
    tg_sampler_free(s);
    tg_dataset_close(ds);
}

/* Overwrites every chunk of /train/y with 0xff labels, behind the back of
 * a reader that has already validated the file. */
static void corrupt_labels(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/train/y", H5P_DEFAULT), sp;
    hsize_t nchunks = 0;
    unsigned char ff[64];
    int fd;

    memset(ff, 0xff, sizeof ff);
    /* HDF5 1.10 wants the dataspace itself, not H5S_ALL. */
    sp = H5Dget_space(d);
    assert_true(d >= 0 && sp >= 0 && H5Dget_num_chunks(d, sp, &nchunks) >= 0 && nchunks > 0);
    fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    for (hsize_t c = 0; c < nchunks; c++) {
        hsize_t off[1];
        unsigned mask;
        haddr_t addr;
        hsize_t size;

        assert_true(H5Dget_chunk_info(d, sp, c, off, &mask, &addr, &size) >= 0);
        assert_true(size <= sizeof ff);
        assert_int_equal(pwrite(fd, ff, size, (off_t)addr), (ssize_t)size);
    }
    assert_int_equal(close(fd), 0);
    (void)H5Sclose(sp);
    (void)H5Dclose(d);
    (void)H5Fclose(f);
}

static void test_loader_error(void **state) {
    const char *p = tgt_path("loader3.h5");
    tg_sampler_config sc = tg_sampler_config_train(50, 8, 1, 0, 1);
    tg_dataset_options nocache = {.cache_budget = -1};
    tg_dataset *ds;
    tg_sampler *s;
    tg_loader *ld;
    const float *x;
    const int64_t *y;
    int64_t n;
    bool end;
    char err[512];

    (void)state;
    write_h5(p, &(struct spec){.xn = 50, .yn = 50, .chunked = true});
    assert_int_equal(tg_dataset_open_opts(p, "train", &nocache, &ds, err, sizeof err), TG_OK);
    corrupt_labels(p);
    assert_int_equal(tg_sampler_new(&sc, &s, err, sizeof err), TG_OK);
    assert_int_equal(tg_loader_new(ds, s, NULL, &ld, err, sizeof err), TG_OK);
    /* The I/O thread's error reaches the consumer, and stays. */
    for (int i = 0; i < 2; i++) {
        err[0] = '\0';
        expect_fail(tg_loader_next(ld, &x, &y, &n, &end, err, sizeof err), TG_ERR_FORMAT, err, p,
                    "/train/y[", "= 255 is outside [0, 10)", NULL);
        assert_null(x);
    }
    tg_loader_free(ld);
    assert_int_equal(tg_sampler_samples_consumed(s), 0);
    tg_sampler_free(s);
    tg_dataset_close(ds);
}

/* ---------------------------------------------------------------------- */
/* Fashion-MNIST from the Debian package                                   */
/* ---------------------------------------------------------------------- */

static void test_fashion_mnist(void **state) {
    const char *im = FMNIST_DIR "/t10k-images-idx3-ubyte.gz";
    const char *lb = FMNIST_DIR "/t10k-labels-idx1-ubyte.gz";
    const char *out = tgt_path("fmnist.h5");
    const int64_t idx[3] = {0, 5000, 9999};
    tg_dataset *ds;
    const int64_t *shape;
    float x[3 * 784];
    int64_t y[3];
    int ndim;
    char err[512];

    (void)state;
    if (access(im, R_OK) != 0 || access(lb, R_OK) != 0) {
        print_message("skipping: package dataset-fashion-mnist is not installed (%s)\n",
                      FMNIST_DIR);
        skip();
    }
    assert_int_equal(tg_idx_convert(im, lb, out, "test", err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_open(out, "test", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_len(ds), 10000);
    shape = tg_dataset_sample_shape(ds, &ndim);
    assert_int_equal(ndim, 3);
    assert_true(shape[0] == 1 && shape[1] == 28 && shape[2] == 28);
    assert_int_equal(tg_dataset_num_classes(ds), 10);
    /* Published statistics of the test split: mean 0.2868, std 0.3524. */
    assert_true(fabs(tg_dataset_mean(ds) - 0.2868) < 0.001);
    assert_true(fabs(tg_dataset_std(ds) - 0.3524) < 0.001);
    assert_int_equal(tg_dataset_read(ds, idx, 3, x, y, err, sizeof err), TG_OK);
    /* The first test image is an ankle boot (class 9). */
    assert_int_equal(y[0], 9);
    tg_dataset_close(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_round_trip),
        cmocka_unit_test(test_idx_splits_and_classes),
        cmocka_unit_test(test_idx_bad_files),
        cmocka_unit_test(test_h5_bad_files),
        cmocka_unit_test(test_h5_not_hdf5_truncated_missing),
        cmocka_unit_test(test_h5_read_paths),
        cmocka_unit_test(test_loader_epochs),
        cmocka_unit_test(test_loader_shutdown),
        cmocka_unit_test(test_loader_error),
        cmocka_unit_test(test_fashion_mnist),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
