/*
 * tests/test_plot.c: `tapegrad plot` writes a valid PNG of the requested size
 * from a metrics file, and refuses bad input with the documented exit codes.
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

#include "test_util.h"

/* Runs the CLI with a shell command line; returns its exit code. */

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const char *metrics =
    "{\"event\":\"step\",\"step\":10,\"loss\":2.1,\"lr\":0.001}\n"
    "{\"event\":\"epoch\",\"epoch\":1,\"train_loss\":0.61,\"test_loss\":0.52,"
    "\"test_acc\":0.81,\"samples_per_s\":20000,\"seconds\":3.1}\n"
    "{\"event\":\"epoch\",\"epoch\":2,\"train_loss\":0.44,\"test_loss\":0.45,"
    "\"test_acc\":0.85,\"samples_per_s\":21000,\"seconds\":6.0}\n"
    "{\"event\":\"end\",\"epoch\":2,\"train_loss\":0.44,\"test_loss\":0.45,"
    "\"test_acc\":0.85,\"samples_per_s\":20500,\"seconds\":6.0}\n";

static void test_writes_png_of_requested_size(void **state) {
    (void)state;
    const char *in, *out;
    in = tgt_path("m.jsonl");
    out = tgt_path("curves.png");
    tgt_write_file(in, metrics);
    assert_int_equal(tgt_run("plot '%s' --out '%s' --size 900x300", in, out), 0);
    FILE *f = fopen(out, "rb");
    assert_non_null(f);
    unsigned char h[24];
    assert_int_equal(fread(h, 1, sizeof h, f), sizeof h);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_memory_equal(h, sig, 8);
    assert_memory_equal(h + 12, "IHDR", 4);
    assert_int_equal(be32(h + 16), 900);
    assert_int_equal(be32(h + 20), 300);
    /* Three panels with axes and curves: far more than an empty image. */
    assert_true(size > 5000);
    /* Only the image is left beside it. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 2", tgt_dir);
    assert_int_equal(system(cmd), 0);
}

static void test_bad_input(void **state) {
    (void)state;
    const char *in, *out, *bad, *empty;
    in = tgt_path("m2.jsonl");
    out = tgt_path("x.png");
    bad = tgt_path("bad.jsonl");
    empty = tgt_path("empty.jsonl");
    tgt_write_file(in, metrics);
    tgt_write_file(bad, "{\"event\":\"epoch\",\"epoch\":1,\"train_loss\":0.5}\n");
    tgt_write_file(empty, "{\"event\":\"step\",\"step\":1,\"loss\":2.0,\"lr\":0.1}\n");
    /* usage errors: no --out, no input, a bad size, an unknown option */
    assert_int_equal(tgt_run("plot '%s'", in), 2);
    assert_int_equal(tgt_run("plot --out '%s'", out), 2);
    assert_int_equal(tgt_run("plot '%s' --out '%s' --size 10x10", in, out), 2);
    assert_int_equal(tgt_run("plot '%s' --out '%s' --frobnicate", in, out), 2);
    /* data errors: a missing file, an epoch event missing fields, no epochs */
    assert_int_equal(tgt_run("plot '%s/none.jsonl' --out '%s'", tgt_dir, out), 3);
    assert_int_equal(tgt_run("plot '%s' --out '%s'", bad, out), 3);
    assert_int_equal(tgt_run("plot '%s' --out '%s'", empty, out), 3);
    assert_int_not_equal(access(out, F_OK), 0);
    assert_int_equal(tgt_run("plot --help"), 0);
}

static int setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_plot");
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("gnuplot is not installed (Debian: gnuplot-nox): skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writes_png_of_requested_size),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests_name("plot", tests, setup, teardown);
}
