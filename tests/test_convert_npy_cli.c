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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tapegrad/datasets.h"

#define NPY TG_FIXTURE_DIR "/npy/"

static char dir[] = "/tmp/tg_npycli_XXXXXX";
static char out[1 << 16];

static int run(const char *fmt, ...) {
    char args[2048], cmd[4096], path[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(path, sizeof path, "%s/out.txt", dir);
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>&1", TG_CLI_PATH, args, path);
    int st = system(cmd);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = 0;
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void expect_out(const char *what) {
    if (!strstr(out, what))
        fail_msg("expected '%s' in:\n%s", what, out);
}

static void test_converts(void **state) {
    (void)state;
    char h5[256];
    snprintf(h5, sizeof h5, "%s/ok.h5", dir);
    assert_int_equal(run("convert npy --x " NPY "x_u8.npy --y " NPY "y_u1_7.npy --out '%s'", h5),
                     0);
    expect_out("split 'train': 7 samples of 1x3x4 u8, 5 classes");
    assert_int_equal(run("convert npy --x " NPY "x_u8.npy --y " NPY "y_u1_7.npy --out '%s' "
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
    assert_int_equal(run("convert npy --help"), 0);
    expect_out("usage: tapegrad convert npy");
}

static void test_bad_input(void **state) {
    (void)state;
    char h5[256];
    snprintf(h5, sizeof h5, "%s/bad.h5", dir);
    /* usage errors */
    assert_int_equal(run("convert npy --x " NPY "x_u8.npy --out '%s'", h5), 2);
    expect_out("--y is required");
    assert_int_equal(run("convert npy --x a --y b --out '%s' --mean 1", h5), 2);
    expect_out("--mean and --std go together");
    assert_int_equal(run("convert npy --x a --y b --out '%s' --split ../x", h5), 2);
    assert_int_equal(run("convert tfrecord --x a"), 2);
    /* data errors: missing file, object dtype, Fortran order, lengths */
    assert_int_equal(run("convert npy --x '%s/none.npy' --y " NPY "y_u1_7.npy --out '%s'", dir, h5),
                     3);
    expect_out("none.npy");
    assert_int_equal(run("convert npy --x " NPY "x_obj.npy --y " NPY "y_u1_7.npy --out '%s'", h5),
                     3);
    expect_out("x_obj.npy");
    assert_int_equal(
        run("convert npy --x " NPY "x_f4_fortran.npy --y " NPY "y_u1_7.npy --out '%s'", h5), 3);
    assert_int_equal(run("convert npy --x " NPY "x_u8.npy --y " NPY "y_i4_5.npy --out '%s'", h5),
                     3);
    assert_int_not_equal(access(h5, F_OK), 0);
}

int main(void) {
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_converts),
        cmocka_unit_test(test_bad_input),
    };
    int rc = cmocka_run_group_tests_name("convert_npy_cli", tests, NULL, NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
