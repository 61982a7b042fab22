/*
 * tests/test_plot.c: `tapegrad plot` writes a valid PNG of the requested size
 * from one or several metrics files, the same curves as CSV, drops what a
 * resumed run logged again, and refuses bad input with the documented exit
 * codes and a message naming the file and the line.
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
    "{\"event\":\"config\",\"time\":1.5,\"world_size\":1,\"resumed_from_step\":null}\n"
    "{\"event\":\"step\",\"time\":2,\"step\":10,\"epoch\":1,\"loss\":2.1,\"lr\":0.001}\n"
    "{\"event\":\"epoch\",\"time\":3,\"step\":20,\"epoch\":1,\"train_loss\":0.61,"
    "\"test_loss\":0.52,\"test_acc\":0.81,\"samples_per_s\":20000,\"seconds\":3.1}\n"
    "{\"event\":\"epoch\",\"time\":4,\"step\":40,\"epoch\":2,\"train_loss\":0.44,"
    "\"test_loss\":null,\"test_acc\":0.85,\"samples_per_s\":21000,\"seconds\":6.0}\n"
    "{\"event\":\"end\",\"time\":5,\"step\":40,\"epoch\":2,\"train_loss\":0.44,"
    "\"test_loss\":0.45,\"test_acc\":0.85,\"samples_per_s\":20500,\"seconds\":6.0}\n";

/* The file read whole into a static buffer. */
static const char *slurp(const char *path) {
    static char buf[1 << 14];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

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

/* Two files overlaid: the CSV holds both runs' curves, a null as an empty
 * cell; the image is drawn from the same data. */
static void test_overlay_and_csv(void **state) {
    (void)state;
    const char *a = tgt_path("a.jsonl"), *b = tgt_path("b,run.jsonl");
    const char *csv = tgt_path("c.csv"), *png = tgt_path("c.png");
    tgt_write_file(a, metrics);
    tgt_write_file(b, "{\"event\":\"step\",\"step\":5,\"epoch\":1,\"loss\":1.25,\"lr\":1}\n"
                      "{\"event\":\"step\",\"step\":6,\"epoch\":1,\"loss\":1.0,\"lr\":1}\n");
    assert_int_equal(tgt_run("plot '%s' '%s' --csv '%s' --out '%s'", a, b, csv, png), 0);
    char want[2048];
    snprintf(want, sizeof want,
             "run,event,step,epoch,loss,train_loss,test_loss,test_acc,samples_per_s,val_loss,"
             "val_acc,test_mae,val_mae\n"
             "%s,step,10,1,2.1,,,,,,,,\n"
             "%s,epoch,20,1,,0.61,0.52,0.81,20000,,,,\n"
             "%s,epoch,40,2,,0.44,,0.85,21000,,,,\n"
             "\"%s\",step,5,1,1.25,,,,,,,,\n"
             "\"%s\",step,6,1,1,,,,,,,,\n",
             a, a, a, b, b);
    assert_string_equal(slurp(csv), want);
    assert_int_equal(access(png, F_OK), 0);
}

/* A run resumed from step 15 logs steps 20 and 30 and epoch 1 again: the
 * first run's step 20, 30 and its epoch 1 are replaced, not doubled. */
static void test_resume_replaces(void **state) {
    (void)state;
    const char *in = tgt_path("r.jsonl"), *csv = tgt_path("r.csv");
    tgt_write_file(in,
                   "{\"event\":\"step\",\"step\":10,\"epoch\":1,\"loss\":3,\"lr\":1}\n"
                   "{\"event\":\"step\",\"step\":20,\"epoch\":1,\"loss\":2,\"lr\":1}\n"
                   "{\"event\":\"step\",\"step\":30,\"epoch\":1,\"loss\":1.5,\"lr\":1}\n"
                   "{\"event\":\"epoch\",\"step\":30,\"epoch\":1,\"train_loss\":2,"
                   "\"test_loss\":1,\"test_acc\":0.5,\"samples_per_s\":9}\n"
                   "{\"event\":\"config\",\"resumed_from_step\":15}\n"
                   "{\"event\":\"step\",\"step\":20,\"epoch\":1,\"loss\":2.5,\"lr\":1}\n"
                   "{\"event\":\"step\",\"step\":30,\"epoch\":1,\"loss\":1.75,\"lr\":1}\n"
                   "{\"event\":\"epoch\",\"step\":30,\"epoch\":1,\"train_loss\":2.25,"
                   "\"test_loss\":1,\"test_acc\":0.75,\"samples_per_s\":8}\n");
    assert_int_equal(tgt_run("plot '%s' --csv '%s'", in, csv), 0);
    char want[1024];
    snprintf(want, sizeof want,
             "run,event,step,epoch,loss,train_loss,test_loss,test_acc,samples_per_s,val_loss,"
             "val_acc,test_mae,val_mae\n"
             "%s,step,10,1,3,,,,,,,,\n%s,step,20,1,2.5,,,,,,,,\n%s,step,30,1,1.75,,,,,,,,\n"
             "%s,epoch,30,1,,2.25,1,0.75,8,,,,\n",
             in, in, in, in);
    assert_string_equal(slurp(csv), want);
}

/* A regression run with a validation split: its epochs have null accuracy
 * and MSE/MAE under their own names. The middle panel is the MAE (an
 * accuracy panel of nothing but nulls makes gnuplot fail), the validation
 * curves are drawn and the CSV carries them. */
static void test_regression_and_validation(void **state) {
    (void)state;
    const char *in = tgt_path("reg.jsonl"), *csv = tgt_path("reg.csv"),
               *png = tgt_path("reg.png");
    tgt_write_file(in, "{\"event\":\"step\",\"step\":5,\"epoch\":1,\"loss\":4,\"lr\":1}\n"
                       "{\"event\":\"epoch\",\"epoch\":1,\"step\":10,\"train_loss\":3,"
                       "\"test_loss\":2.5,\"test_acc\":null,\"test_mse\":2.5,\"test_mae\":1.25,"
                       "\"val_loss\":2.75,\"val_mse\":2.75,\"val_mae\":1.5,"
                       "\"samples_per_s\":100}\n"
                       "{\"event\":\"epoch\",\"epoch\":2,\"step\":20,\"train_loss\":2,"
                       "\"test_loss\":1.5,\"test_acc\":null,\"test_mse\":1.5,\"test_mae\":0.75,"
                       "\"val_loss\":1.75,\"val_mse\":1.75,\"val_mae\":1,"
                       "\"samples_per_s\":110}\n");
    assert_int_equal(tgt_run("plot '%s' --csv '%s' --out '%s'", in, csv, png), 0);
    char want[1024];
    snprintf(want, sizeof want,
             "run,event,step,epoch,loss,train_loss,test_loss,test_acc,samples_per_s,val_loss,"
             "val_acc,test_mae,val_mae\n"
             "%s,step,5,1,4,,,,,,,,\n"
             "%s,epoch,10,1,,3,2.5,,100,2.75,,1.25,1.5\n"
             "%s,epoch,20,2,,2,1.5,,110,1.75,,0.75,1\n",
             in, in, in);
    assert_string_equal(slurp(csv), want);
    assert_int_equal(access(png, F_OK), 0);
    /* A run cut before its first epoch: the epoch panels say "no data". */
    const char *steps = tgt_path("steps.jsonl"), *png2 = tgt_path("steps.png");
    tgt_write_file(steps, "{\"event\":\"step\",\"step\":5,\"epoch\":1,\"loss\":4,\"lr\":1}\n");
    assert_int_equal(tgt_run("plot '%s' --out '%s'", steps, png2), 0);
    assert_int_equal(access(png2, F_OK), 0);
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
    tgt_write_file(empty, "{\"event\":\"config\",\"world_size\":1}\n");
    /* usage errors: neither --out nor --csv, no input, a bad size, an unknown option */
    assert_int_equal(tgt_run("plot '%s'", in), 2);
    assert_int_equal(tgt_run("plot --out '%s'", out), 2);
    assert_int_equal(tgt_run("plot '%s' --out '%s' --size 10x10", in, out), 2);
    assert_int_equal(tgt_run("plot '%s' --out '%s' --frobnicate", in, out), 2);
    /* data errors: a missing file, an epoch event missing fields, no epochs */
    assert_int_equal(tgt_run("plot '%s/none.jsonl' --out '%s'", tgt_dir, out), 3);
    assert_int_equal(tgt_run("plot '%s' --out '%s'", bad, out), 3);
    tgt_expect_out("bad.jsonl:1: an \"epoch\" event needs");
    assert_int_equal(tgt_run("plot '%s' --out '%s'", empty, out), 3);
    tgt_expect_out("no \"step\" or \"epoch\" events");
    /* a damaged line (a cut-off write) is named with its line number */
    const char *cut = tgt_path("cut.jsonl");
    char text[2048];
    snprintf(text, sizeof text, "%s{\"event\":\"epoch\",\"epo\n", metrics);
    tgt_write_file(cut, text);
    assert_int_equal(tgt_run("plot '%s' --out '%s'", cut, out), 3);
    tgt_expect_out("cut.jsonl:6: not a JSON object");
    /* a folder is not a metrics file */
    assert_int_equal(tgt_run("plot '%s' --out '%s'", tgt_dir, out), 3);
    assert_int_not_equal(access(out, F_OK), 0);
    assert_int_equal(tgt_run("plot --help"), 0);
    tgt_expect_out("--csv FILE.csv");
    tgt_expect_out("exit codes");
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
        cmocka_unit_test(test_overlay_and_csv),
        cmocka_unit_test(test_resume_replaces),
        cmocka_unit_test(test_regression_and_validation),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests_name("plot", tests, setup, teardown);
}
