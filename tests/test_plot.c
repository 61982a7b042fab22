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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[] = "/tmp/tg_plot_XXXXXX";

/* Runs the CLI with a shell command line; returns its exit code. */
static int run(const char *fmt, ...) {
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s", TG_CLI_PATH, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

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
    char in[256], out[256];
    snprintf(in, sizeof in, "%s/m.jsonl", dir);
    snprintf(out, sizeof out, "%s/curves.png", dir);
    write_file(in, metrics);
    assert_int_equal(run("plot '%s' --out '%s' --size 900x300 >/dev/null", in, out), 0);
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
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 2", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_bad_input(void **state) {
    (void)state;
    char in[256], out[256], bad[256], empty[256];
    snprintf(in, sizeof in, "%s/m2.jsonl", dir);
    snprintf(out, sizeof out, "%s/x.png", dir);
    snprintf(bad, sizeof bad, "%s/bad.jsonl", dir);
    snprintf(empty, sizeof empty, "%s/empty.jsonl", dir);
    write_file(in, metrics);
    write_file(bad, "{\"event\":\"epoch\",\"epoch\":1,\"train_loss\":0.5}\n");
    write_file(empty, "{\"event\":\"step\",\"step\":1,\"loss\":2.0,\"lr\":0.1}\n");
    /* usage errors: no --out, no input, a bad size, an unknown option */
    assert_int_equal(run("plot '%s' 2>/dev/null", in), 2);
    assert_int_equal(run("plot --out '%s' 2>/dev/null", out), 2);
    assert_int_equal(run("plot '%s' --out '%s' --size 10x10 2>/dev/null", in, out), 2);
    assert_int_equal(run("plot '%s' --out '%s' --frobnicate 2>/dev/null", in, out), 2);
    /* data errors: a missing file, an epoch event missing fields, no epochs */
    assert_int_equal(run("plot '%s/none.jsonl' --out '%s' 2>/dev/null", dir, out), 3);
    assert_int_equal(run("plot '%s' --out '%s' 2>/dev/null", bad, out), 3);
    assert_int_equal(run("plot '%s' --out '%s' 2>/dev/null", empty, out), 3);
    assert_int_not_equal(access(out, F_OK), 0);
    assert_int_equal(run("plot --help >/dev/null"), 0);
}

int main(void) {
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("gnuplot is not installed (Debian: gnuplot-nox): skipped\n");
        return 77;
    }
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writes_png_of_requested_size),
        cmocka_unit_test(test_bad_input),
    };
    int rc = cmocka_run_group_tests_name("plot", tests, NULL, NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
