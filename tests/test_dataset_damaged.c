/*
 * tests/test_dataset_damaged.c: damaged or hostile dataset and IDX files
 * must fail at once, with a message naming the file and the field, never
 * scan for hours, allocate what a header claims, or let a NaN reach the
 * loss. Every bad file is written here with the HDF5 C API or zlib.
 */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <zlib.h>

#include "tapegrad/datasets.h"

#include "test_util.h"

/* Asserts status want and that msg holds every fragment (NULL-ended). */
static void expect_fail(tg_status got, tg_status want, const char *msg, ...) {
    va_list ap;
    const char *frag;

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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------------- */
/* HDF5 helpers                                                            */
/* ---------------------------------------------------------------------- */

/* Creates dataset `name` in g of file type `type` and shape dims; chunked
 * (chunk non-NULL, deflated when deflate) or contiguous; written from data
 * of memory type mtype unless data is NULL. */
static void put(hid_t g, const char *name, hid_t type, int rank, const hsize_t *dims,
                const hsize_t *chunk, bool deflate, hid_t mtype, const void *data) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t d;

    assert_true(sp >= 0 && dcpl >= 0);
    if (chunk)
        assert_true(H5Pset_chunk(dcpl, rank, chunk) >= 0);
    if (deflate)
        assert_true(H5Pset_deflate(dcpl, 1) >= 0);
    d = H5Dcreate2(g, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    if (data)
        assert_true(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
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

/* A split of n samples of shape (1, 4, 4), f32 x with x[bad] = bad_val when
 * bad >= 0, and labels i % 3 of num_classes 3. */
static void put_f32_split(hid_t f, const char *split, hsize_t n, int64_t bad, float bad_val) {
    hsize_t xd[4] = {n, 1, 4, 4}, yd[1] = {n};
    float *x = malloc(n * 16 * sizeof *x);
    uint8_t *y = malloc(n);
    hid_t g = H5Gcreate2(f, split, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);

    assert_true(x && y && g >= 0);
    for (hsize_t i = 0; i < n * 16; i++)
        x[i] = (float)(i % 17) / 17.0f;
    for (hsize_t i = 0; i < n; i++)
        y[i] = (uint8_t)(i % 3);
    if (bad >= 0)
        x[bad * 16 + 5] = bad_val;
    put(g, "x", H5T_IEEE_F32LE, 4, xd, NULL, false, H5T_NATIVE_FLOAT, x);
    put(g, "y", H5T_STD_U8LE, 1, yd, NULL, false, H5T_NATIVE_UINT8, y);
    put_attr(g, "num_classes", H5T_STD_I64LE, 3);
    assert_true(H5Gclose(g) >= 0);
    free(x);
    free(y);
}

static hid_t create(const char *path) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    return f;
}

/* ---------------------------------------------------------------------- */
/* Item: declared sizes bounded by the file                                */
/* ---------------------------------------------------------------------- */

/* A few KiB file whose chunked x and y declare 2^40 rows that were never
 * written: before the bound, the label scan read 2^40 fill values. */
static void write_huge_rows(const char *path) {
    const hsize_t n = (hsize_t)1 << 40;
    hsize_t xd[4] = {n, 1, 2, 2}, xc[4] = {1024, 1, 2, 2}, yd[1] = {n}, yc[1] = {4096};
    hid_t f = create(path);

    for (int s = 0; s < 2; s++) {
        hid_t g = H5Gcreate2(f, s ? "test" : "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        put(g, "x", H5T_STD_U8LE, 4, xd, xc, false, 0, NULL);
        put(g, "y", H5T_STD_U8LE, 1, yd, yc, false, 0, NULL);
        put_attr(g, "num_classes", H5T_STD_I64LE, 10);
        H5Gclose(g);
    }
    assert_true(H5Fclose(f) >= 0);
}

static void test_rows_bounded_by_file_size(void **state) {
    const char *path = tgt_path("rows40.h5");
    char err[512];
    tg_dataset *ds;
    double t0;

    (void)state;
    write_huge_rows(path);
    /* Hours before the bound: the alarm fails the test instead. */
    alarm(60);
    t0 = now_s();
    expect_fail(tg_dataset_open(path, "train", &ds, err, sizeof err), TG_ERR_FORMAT, err, path,
                "/train/x declares 1099511627776 rows", "the file has only", NULL);
    assert_true(now_s() - t0 < 5.0);
    /* inspect and train validate the same way: exit 3, promptly. */
    t0 = now_s();
    assert_int_equal(tgt_run("inspect '%s'", path), 3);
    tgt_expect_out("declares 1099511627776 rows");
    assert_int_equal(tgt_run("train --data '%s' --max-steps 1 --batch-size 4", path), 3);
    tgt_expect_out("declares 1099511627776 rows");
    assert_true(now_s() - t0 < 20.0);
    alarm(0);
}

/* A compressed y may expand, but not past deflate's limit. */
static void test_compressed_rows_bounded(void **state) {
    const char *path = tgt_path("deflate.h5");
    hsize_t n = (hsize_t)1 << 36, xd[2] = {n, 1}, xc[2] = {1 << 16, 1}, yd[1] = {n},
            yc[1] = {1 << 16};
    hid_t f = create(path), g;
    char err[512];
    tg_dataset *ds;

    (void)state;
    g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    put(g, "x", H5T_STD_U8LE, 2, xd, xc, true, 0, NULL);
    put(g, "y", H5T_STD_U8LE, 1, yd, yc, true, 0, NULL);
    put_attr(g, "num_classes", H5T_STD_I64LE, 2);
    H5Gclose(g);
    H5Fclose(f);
    alarm(60);
    expect_fail(tg_dataset_open(path, "train", &ds, err, sizeof err), TG_ERR_FORMAT, err, path,
                "/train/x declares 68719476736 rows", "expands at most 1032 times", NULL);
    alarm(0);
}

/* ---------------------------------------------------------------------- */
/* Item: num_classes and the sample shape bounded                          */
/* ---------------------------------------------------------------------- */

static void test_num_classes_and_shape_bounded(void **state) {
    const char *big = tgt_path("ncls.h5"), *wide = tgt_path("wide.h5");
    hsize_t xd[4] = {1, 1, 8192, 8192}, xc[4] = {1, 1, 256, 256}, yd[1] = {1};
    uint8_t y0 = 0;
    char err[512];
    tg_dataset *ds;
    hid_t f, g;
    double t0;

    (void)state;
    f = create(big);
    put_f32_split(f, "train", 8, -1, 0);
    put_f32_split(f, "test", 8, -1, 0);
    g = H5Gopen2(f, "train", H5P_DEFAULT);
    assert_true(H5Adelete(g, "num_classes") >= 0);
    put_attr(g, "num_classes", H5T_STD_I64LE, 5e7);
    H5Gclose(g);
    H5Fclose(f);
    expect_fail(tg_dataset_open(big, "train", &ds, err, sizeof err), TG_ERR_FORMAT, err, big,
                "/train attribute num_classes is 50000000", "1..1048576", NULL);
    /* Formerly exit 1 "out of memory" after half a minute, naming no file. */
    t0 = now_s();
    assert_int_equal(tgt_run("train --data '%s' --max-steps 1 --batch-size 4", big), 3);
    tgt_expect_out("num_classes is 50000000");
    tgt_expect_out(big);
    assert_true(now_s() - t0 < 20.0);

    f = create(wide);
    g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    put(g, "x", H5T_STD_U8LE, 4, xd, xc, true, 0, NULL);
    put(g, "y", H5T_STD_U8LE, 1, yd, NULL, false, H5T_NATIVE_UINT8, &y0);
    put_attr(g, "num_classes", H5T_STD_I64LE, 2);
    H5Gclose(g);
    H5Fclose(f);
    expect_fail(tg_dataset_open(wide, "train", &ds, err, sizeof err), TG_ERR_FORMAT, err, wide,
                "/train/x has shape 1x1x8192x8192", "1 to 16777216 elements", NULL);
}

/* ---------------------------------------------------------------------- */
/* Item: NaN and infinite f32 inputs                                       */
/* ---------------------------------------------------------------------- */

static void test_nonfinite_inputs(void **state) {
    const char *path = tgt_path("nan.h5"), *inf = tgt_path("inf.h5");
    const int64_t all[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, good[3] = {0, 1, 2};
    tg_dataset_options nocache = {.cache_budget = -1};
    float x[10 * 16];
    char err[512];
    tg_dataset *ds;
    hid_t f;

    (void)state;
    f = create(path);
    put_f32_split(f, "train", 10, 7, NAN);
    put_f32_split(f, "test", 10, -1, 0);
    H5Fclose(f);
    /* Cached: the whole of x is checked when it is loaded. */
    assert_int_equal(tg_dataset_open(path, "train", &ds, err, sizeof err), TG_OK);
    expect_fail(tg_dataset_read(ds, good, 3, x, NULL, err, sizeof err), TG_ERR_FORMAT, err, path,
                "/train/x[7]", "holds nan at element 5", "must be finite", NULL);
    tg_dataset_close(ds);
    /* From the file: the batch that holds it fails, naming it. */
    assert_int_equal(tg_dataset_open_opts(path, "train", &nocache, &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_read(ds, good, 3, x, NULL, err, sizeof err), TG_OK);
    expect_fail(tg_dataset_read(ds, all, 10, x, NULL, err, sizeof err), TG_ERR_FORMAT, err, path,
                "/train/x[7]", "nan", NULL);
    tg_dataset_close(ds);

    f = create(inf);
    put_f32_split(f, "train", 10, 2, -INFINITY);
    put_f32_split(f, "test", 10, -1, 0);
    H5Fclose(f);
    assert_int_equal(tg_dataset_open(inf, "train", &ds, err, sizeof err), TG_OK);
    expect_fail(tg_dataset_read(ds, all, 10, x, NULL, err, sizeof err), TG_ERR_FORMAT, err, inf,
                "/train/x[2]", "-inf", NULL);
    tg_dataset_close(ds);

    /* train: exit 3 before any step, not "loss is nan" at step 3. */
    assert_int_equal(tgt_run("train --data '%s' --max-steps 5 --batch-size 2 --log-every 1", path),
                     3);
    tgt_expect_out("/train/x[7]");
    tgt_expect_out(path);
    if (strstr(tgt_out, "loss is nan") || strstr(tgt_out, "step 1"))
        fail_msg("trained before failing:\n%s", tgt_out);
}

/* A checkpoint given as --data is named as one, not as a file whose split
 * group is missing. */
static void test_checkpoint_as_data(void **state) {
    const char *path = tgt_path("ok.h5");
    char ck[600];
    hid_t f;

    (void)state;
    f = create(path);
    put_f32_split(f, "train", 10, -1, 0);
    put_f32_split(f, "test", 10, -1, 0);
    H5Fclose(f);
    assert_int_equal(tgt_run("train --data '%s' --max-steps 2 --batch-size 2 --threads 1 "
                             "--ckpt-dir '%s'",
                             path, tgt_path("ck")),
                     0);
    snprintf(ck, sizeof ck, "%s", tgt_path("ck/ckpt-00000002.h5"));
    assert_int_equal(tgt_run("train --data '%s' --threads 1", ck), 3);
    tgt_expect_out("is a tapegrad checkpoint, not a dataset");
    tgt_expect_out(ck);
    if (strstr(tgt_out, "not found"))
        fail_msg("a checkpoint reported as a dataset without a split:\n%s", tgt_out);
}

/* ---------------------------------------------------------------------- */
/* Item: inspect validates as train does                                   */
/* ---------------------------------------------------------------------- */

static void test_inspect_missing_member(void **state) {
    const char *path = tgt_path("noy.h5"), *path2 = tgt_path("nox.h5");
    hid_t f, g;

    (void)state;
    f = create(path);
    put_f32_split(f, "train", 6, -1, 0);
    put_f32_split(f, "test", 6, -1, 0);
    g = H5Gopen2(f, "test", H5P_DEFAULT);
    assert_true(H5Ldelete(g, "y", H5P_DEFAULT) >= 0);
    H5Gclose(g);
    H5Fclose(f);
    assert_int_equal(tgt_run("inspect '%s'", path), 3);
    tgt_expect_out("/test/y not found");
    assert_int_equal(tgt_run("train --data '%s' --max-steps 1 --batch-size 2", path), 3);
    tgt_expect_out("/test/y not found");

    f = create(path2);
    put_f32_split(f, "train", 6, -1, 0);
    put_f32_split(f, "other", 6, -1, 0);
    g = H5Gopen2(f, "train", H5P_DEFAULT);
    assert_true(H5Ldelete(g, "x", H5P_DEFAULT) >= 0);
    H5Gclose(g);
    H5Fclose(f);
    assert_int_equal(tgt_run("inspect '%s'", path2), 3);
    tgt_expect_out("/train/x not found");
}

/* ---------------------------------------------------------------------- */
/* Item: stop requests during open                                         */
/* ---------------------------------------------------------------------- */

struct stop_after {
    int calls, after;
};

static bool stop_cb(void *user) {
    struct stop_after *s = user;
    return ++s->calls > s->after;
}

static void test_stop_during_label_scan(void **state) {
    const char *path = tgt_path("stop.h5");
    const hsize_t n = 200000;
    hsize_t xd[2] = {n, 1}, yd[1] = {n};
    uint8_t *buf = calloc(n, 1);
    struct stop_after sa = {0, 1};
    tg_dataset_options o = {.stop = stop_cb, .stop_user = &sa};
    char err[512];
    tg_dataset *ds;
    hid_t f = create(path), g;

    (void)state;
    assert_non_null(buf);
    g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    put(g, "x", H5T_STD_U8LE, 2, xd, NULL, false, H5T_NATIVE_UINT8, buf);
    put(g, "y", H5T_STD_U8LE, 1, yd, NULL, false, H5T_NATIVE_UINT8, buf);
    put_attr(g, "num_classes", H5T_STD_I64LE, 2);
    H5Gclose(g);
    H5Fclose(f);
    free(buf);
    /* The scan asks between blocks: the second question stops it. */
    expect_fail(tg_dataset_open_opts(path, "train", &o, &ds, err, sizeof err), TG_ERR_STOPPED,
                err, path, "checking the labels stopped by request", NULL);
    assert_null(ds);
    assert_int_equal(sa.calls, 2);
    sa = (struct stop_after){0, 1000};
    assert_int_equal(tg_dataset_open_opts(path, "train", &o, &ds, err, sizeof err), TG_OK);
    assert_int_equal(sa.calls, 4); /* 200000 labels: four blocks of 65536 */
    tg_dataset_close(ds);
}

/* ---------------------------------------------------------------------- */
/* Item: IDX headers bounded before any allocation                         */
/* ---------------------------------------------------------------------- */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void write_gz(const char *path, const void *data, size_t len) {
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(gz), Z_OK);
}

/* An IDX file: magic, the header's dims, then body bytes of value 1. */
static void write_idx(const char *path, uint32_t magic, int ndim, const uint32_t *dims,
                      size_t body) {
    size_t hl = 4 + 4 * (size_t)ndim;
    unsigned char *buf = malloc(hl + body);

    assert_non_null(buf);
    put_be32(buf, magic);
    for (int i = 0; i < ndim; i++)
        put_be32(buf + 4 + 4 * i, dims[i]);
    memset(buf + hl, 1, body);
    write_gz(path, buf, hl + body);
    free(buf);
}

static void test_idx_headers_bounded(void **state) {
    const char *lab = tgt_path("lab.gz"), *img = tgt_path("img.gz"), *out = tgt_path("idx.h5");
    const char *lab10 = tgt_path("lab10.gz");
    uint32_t huge = 0xffffffffu, ten = 10, dims[3] = {10, 4, 4};
    struct stop_after sa = {0, 0};
    tg_idx_options o = {.stop = stop_cb, .stop_user = &sa};
    char err[512];

    (void)state;
    /* 2^32-1 labels announced by a file of a few dozen bytes: refused from
     * the header, not after a 4 GiB allocation. */
    write_idx(lab, 0x801, 1, &huge, 10);
    write_idx(img, 0x803, 3, dims, 160);
    expect_fail(tg_idx_convert(img, lab, out, "train", err, sizeof err), TG_ERR_FORMAT, err, lab,
                "header says items 4294967295", "compressed bytes", NULL);
    assert_int_not_equal(access(out, F_OK), 0);
    /* Images of 4000 x 4000 (16 MB each, 160 MB in all) from a file of a
     * few dozen bytes: the input and its fields are named, not the output
     * with "HDF5: no detail". */
    write_idx(lab10, 0x801, 1, &ten, 10);
    dims[1] = dims[2] = 4000;
    write_idx(img, 0x803, 3, dims, 64);
    expect_fail(tg_idx_convert(img, lab10, out, "train", err, sizeof err), TG_ERR_FORMAT, err, img,
                "header says images 10, rows 4000, cols 4000", "damaged", NULL);
    assert_null(strstr(err, out));
    /* 70000 x 70000: more than a sample may hold (and than one HDF5 chunk). */
    dims[1] = dims[2] = 70000;
    write_idx(img, 0x803, 3, dims, 64);
    expect_fail(tg_idx_convert(img, lab10, out, "train", err, sizeof err), TG_ERR_FORMAT, err, img,
                "70000 rows x 70000 cols", "at most 16777216 pixels per image", NULL);
    assert_int_not_equal(access(out, F_OK), 0);
    /* A stop request: nothing written, no temporary left. */
    dims[1] = dims[2] = 4;
    write_idx(img, 0x803, 3, dims, 160);
    expect_fail(tg_idx_convert_opts(img, lab10, out, "train", &o, err, sizeof err),
                TG_ERR_STOPPED, err, "stopped by request", NULL);
    assert_int_not_equal(access(out, F_OK), 0);
    assert_int_equal(tgt_run("convert idx --images '%s' --labels '%s' --out '%s'", img, lab10, out),
                     0);
    tgt_expect_out("10 samples");
}

/* The converters write HDF5's newest format (superblock 2 or later, with
 * metadata checksums). */
static void test_converter_file_format(void **state) {
    const char *lab = tgt_path("flab.gz"), *img = tgt_path("fimg.gz"), *out = tgt_path("fmt.h5");
    uint32_t ten = 10, dims[3] = {10, 4, 4};
    H5F_info2_t info;
    char err[512];
    hid_t f;

    (void)state;
    write_idx(lab, 0x801, 1, &ten, 10);
    write_idx(img, 0x803, 3, dims, 160);
    assert_int_equal(tg_idx_convert(img, lab, out, "train", err, sizeof err), TG_OK);
    f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_true(H5Fget_info2(f, &info) >= 0);
    assert_true(info.super.version >= 2);
    H5Fclose(f);
}

static int setup(void **state) {
    (void)state;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return tgt_dir_setup("tg_dsdamaged");
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_bounded_by_file_size),
        cmocka_unit_test(test_compressed_rows_bounded),
        cmocka_unit_test(test_num_classes_and_shape_bounded),
        cmocka_unit_test(test_nonfinite_inputs),
        cmocka_unit_test(test_checkpoint_as_data),
        cmocka_unit_test(test_inspect_missing_member),
        cmocka_unit_test(test_stop_during_label_scan),
        cmocka_unit_test(test_idx_headers_bounded),
        cmocka_unit_test(test_converter_file_format),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
