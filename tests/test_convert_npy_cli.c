/*
 * tests/test_convert_npy_cli.c: `tapegrad convert npy` on the committed .npy
 * fixtures (tests/fixtures/npy, written by NumPy): a conversion that
 * succeeds, and each kind of bad input with its exit code, leaving no output
 * behind.
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

#include "tapegrad/datasets.h"

#define NPY TG_FIXTURE_DIR "/npy/"

#include "test_util.h"

static void test_converts(void **state) {
    (void)state;
    const char *h5 = tgt_path("ok.h5");
    assert_int_equal(
        tgt_run("convert npy --x " NPY "x_u8.npy --y " NPY "y_u1_7.npy --out '%s'", h5), 0);
    tgt_expect_out("split 'train': 7 samples of 1x3x4 u8, 5 classes");
    assert_int_equal(tgt_run("convert npy --x " NPY "x_u8.npy --y " NPY "y_u1_7.npy --out '%s' "
                             "--split test --num-classes 10 --mean 0.5 --std 0.25",
                             h5),
                     0);
    char err[256];
    tg_dataset *ds;
    assert_int_equal(tg_dataset_open(h5, "test", &ds, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_len(ds), 7);
    assert_int_equal(tg_dataset_num_classes(ds), 10);
    assert_true(tg_dataset_mean(ds) == 0.5 && tg_dataset_std(ds) == 0.25);
    tg_dataset_close(ds);
    assert_int_equal(tgt_run("convert npy --help"), 0);
    tgt_expect_out("usage: tapegrad convert npy");
}

static void test_bad_input(void **state) {
    (void)state;
    const char *h5 = tgt_path("bad.h5");
    /* usage errors */
    assert_int_equal(tgt_run("convert npy --x " NPY "x_u8.npy --out '%s'", h5), 2);
    tgt_expect_out("--y is required");
    assert_int_equal(tgt_run("convert npy --x a --y b --out '%s' --mean 1", h5), 2);
    tgt_expect_out("--mean and --std go together");
    assert_int_equal(tgt_run("convert npy --x a --y b --out '%s' --split ../x", h5), 2);
    assert_int_equal(tgt_run("convert tfrecord --x a"), 2);
    /* data errors: missing file, object dtype, Fortran order, lengths */
    assert_int_equal(
        tgt_run("convert npy --x '%s' --y " NPY "y_u1_7.npy --out '%s'", tgt_path("none.npy"), h5),
        3);
    tgt_expect_out("none.npy");
    assert_int_equal(
        tgt_run("convert npy --x " NPY "x_obj.npy --y " NPY "y_u1_7.npy --out '%s'", h5), 3);
    tgt_expect_out("x_obj.npy");
    assert_int_equal(
        tgt_run("convert npy --x " NPY "x_f4_fortran.npy --y " NPY "y_u1_7.npy --out '%s'", h5), 3);
    assert_int_equal(
        tgt_run("convert npy --x " NPY "x_u8.npy --y " NPY "y_i4_5.npy --out '%s'", h5), 3);
    assert_int_not_equal(access(h5, F_OK), 0);
}

static int setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_npycli");
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_converts),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests_name("convert_npy_cli", tests, setup, teardown);
}
