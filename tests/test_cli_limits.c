/*
 * tests/test_cli_limits.c: `tapegrad train` and `eval` with settings that
 * are legal but extreme, or a launch that is not what it seems: a warm-up
 * longer than the run, an evaluation batch far larger than the split,
 * more --threads than CPUs, an address-space limit too small for OpenBLAS's
 * buffers, and torchrun's environment without an MPI launch. Each must end
 * with a clear outcome (exit code and message) within seconds.
 *
 * The memory checks run the CLI under `ulimit -v` in its own shell, so a
 * regression fails the test instead of taking the machine's memory; a build
 * whose CLI cannot start under such a limit at all (the sanitizer build
 * reserves terabytes of shadow memory) skips them.
 */
#define _GNU_SOURCE
#include <math.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hdf5.h>

#include "test_util.h"

/* A dataset of n 1x16x16 images of 4 classes per split. */
static void write_split(hid_t f, const char *name, int n) {
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t xd[4] = {(hsize_t)n, 1, 16, 16}, yd[1] = {(hsize_t)n};
    float *x = malloc(sizeof(float) * (size_t)n * 256);
    long long *y = malloc(sizeof(long long) * (size_t)n);
    assert_non_null(x);
    assert_non_null(y);
    for (int i = 0; i < n; i++) {
        y[i] = i % 4;
        for (int j = 0; j < 256; j++)
            x[i * 256 + j] = (float)((i * 7 + j * 3) % 11) / 11.0f + (j % 4 == i % 4 ? 0.5f : 0.0f);
    }
    hid_t sp = H5Screate_simple(4, xd, NULL);
    hid_t d = H5Dcreate2(g, "x", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate_simple(1, yd, NULL);
    d = H5Dcreate2(g, "y", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, y) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate(H5S_SCALAR);
    long long k = 4;
    hid_t a = H5Acreate2(g, "num_classes", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, &k);
    H5Aclose(a);
    H5Sclose(sp);
    H5Gclose(g);
    free(x);
    free(y);
}

static const char *data_path(void) { return tgt_path("d.h5"); }

/* Runs the CLI under `ulimit -v kib` and a 60 s kill; returns its exit code
 * (137: killed, i.e. it hung) with the output in tgt_out. */
static int run_limited(long kib, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run_limited(long kib, const char *fmt, ...) {
    char args[2048], cmd[4096];
    const char *log = tgt_path(".limited-output");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "ulimit -v %ld && exec timeout -s KILL 60 '%s' %s >'%s' 2>&1", kib,
             TG_CLI_PATH, args, log);
    int st = system(cmd);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    size_t n = fread(tgt_out, 1, sizeof tgt_out - 1, f);
    tgt_out[n] = 0;
    fclose(f);
    remove(log);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Whether this build's CLI runs at all under a limit of kib. */
static bool limit_usable(long kib) {
    if (run_limited(kib, "--version") == 0)
        return true;
    print_message("the CLI cannot start under ulimit -v %ld (a sanitizer build?); skipped\n", kib);
    return false;
}

/* The "lr" of every step event of a metrics file, in order. */
static int metrics_lrs(const char *path, double *lr, int max) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "\"event\":\"step\"") && n < max) {
            const char *p = strstr(line, "\"lr\":");
            assert_non_null(p);
            lr[n++] = strtod(p + 5, NULL);
        }
    fclose(f);
    return n;
}

/* A warm-up longer than the run once gave "lr = nan" at the first step
 * (exit 1): the run now stays in its warm-up, lr * (step + 1) / W. */
static void test_warmup_longer_than_run(void **state) {
    (void)state;
    const char *m = tgt_path("warm.jsonl");
    assert_int_equal(tgt_run("train --data '%s' --batch-size 16 --max-steps 4 --warmup 100 "
                             "--lr 0.01 --log-every 1 --threads 1 -v --metrics '%s'",
                             data_path(), m),
                     0);
    tgt_expect_out("test accuracy: ");
    double lr[8];
    assert_int_equal(metrics_lrs(m, lr, 8), 4);
    for (int i = 0; i < 4; i++) {
        assert_true(isfinite(lr[i]));
        assert_true(fabs(lr[i] - 0.01 * (i + 1) / 100) < 1e-12);
    }
    /* As long as the run: its last step reaches the peak. */
    assert_int_equal(tgt_run("train --data '%s' --batch-size 16 --max-steps 4 --warmup 4 "
                             "--lr 0.01 --log-every 1 --threads 1 -q --metrics '%s'",
                             data_path(), m),
                     0);
    assert_int_equal(metrics_lrs(m, lr, 8), 4);
    assert_true(fabs(lr[3] - 0.01) < 1e-12);
    /* Nonsense is a usage error that names the flag or the file's key. */
    assert_int_equal(tgt_run("train --data '%s' --warmup -1", data_path()), 2);
    tgt_expect_out("--warmup: expected an integer >= 0, got '-1'");
    assert_int_equal(tgt_run("train --data '%s' --warmup nan", data_path()), 2);
    tgt_expect_out("--warmup: expected an integer >= 0, got 'nan'");
    assert_int_equal(tgt_run("train --data '%s' --warmup 1e999", data_path()), 2);
    tgt_expect_out("--warmup: expected an integer >= 0, got '1e999'");
    const char *ini = tgt_path("warm.ini");
    tgt_write_file(ini, "warmup = -5\n");
    assert_int_equal(tgt_run("train --data '%s' --config '%s'", data_path(), ini), 2);
    tgt_expect_out("warm.ini:1: key 'warmup': expected an integer >= 0, got '-5'");
}

/* --eval-batch-size 1048576 on a split of 32 images of 16x16 asked the
 * loader for two buffers of 1 GiB each; the batch is now the split's size. */
static void test_eval_batch_clamped(void **state) {
    (void)state;
    const long kib = 1500000;
    if (!limit_usable(kib))
        return;
    int code = run_limited(kib,
                           "train --data '%s' --batch-size 16 --max-steps 2 --threads 1 "
                           "--eval-batch-size 1048576",
                           data_path());
    if (code != 0)
        fail_msg("train exited %d:\n%s", code, tgt_out);
    tgt_expect_out("(64 train / 32 test)");
    tgt_expect_out("test accuracy: ");
    code = run_limited(kib, "eval --ckpt '%s' --data '%s' --batch-size 1048576 --threads 1",
                       tgt_path("ck/ckpt-00000002.h5"), data_path());
    if (code != 0)
        fail_msg("eval exited %d:\n%s", code, tgt_out);
    tgt_expect_out("(32 samples");
}

static int allowed_cpus(void) {
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    return CPU_COUNT(&set);
}

/* More threads than CPUs: a warning, and the CPUs' count is used. */
static void test_threads_capped(void **state) {
    (void)state;
    const int cpus = allowed_cpus();
    if (cpus >= 64)
        skip();
    assert_int_equal(tgt_run("train --data '%s' --batch-size 16 --max-steps 1 --threads 64",
                             data_path()),
                     0);
    char want[256];
    snprintf(want, sizeof want,
             "tapegrad train: warning: --threads 64: this process may run on %d CPU%s; using %d "
             "threads",
             cpus, cpus == 1 ? "" : "s", cpus);
    tgt_expect_out(want);
    snprintf(want, sizeof want, "threads %d per rank", cpus);
    tgt_expect_out(want);
    /* Within the CPUs: no word. */
    assert_int_equal(tgt_run("train --data '%s' --batch-size 16 --max-steps 1 --threads 1",
                             data_path()),
                     0);
    assert_null(strstr(tgt_out, "warning: --threads"));
    assert_int_equal(tgt_run("eval --ckpt '%s' --data '%s' --threads 64",
                             tgt_path("ck/ckpt-00000002.h5"), data_path()),
                     0);
    snprintf(want, sizeof want, "tapegrad eval: warning: --threads 64: this process may run on %d",
             cpus);
    tgt_expect_out(want);
}

/* Under an address-space limit that leaves no room for OpenBLAS's buffers,
 * OpenBLAS retried its allocation for ever (the run hung, deaf to SIGTERM):
 * now the run ends at once with exit code 1 and says why. */
static void test_address_space_too_small(void **state) {
    (void)state;
    const long kib = 700000;
    if (!limit_usable(kib))
        return;
    int threads = allowed_cpus() < 2 ? 1 : 2;
    int code = run_limited(kib, "train --data '%s' --batch-size 16 --max-steps 2 --threads %d",
                           data_path(), threads);
    if (code != 1)
        fail_msg("train exited %d (137: killed after 60 s, it hung):\n%s", code, tgt_out);
    tgt_expect_out("tapegrad train: the address-space limit (ulimit -v 700000 KiB) leaves no room "
                   "for the buffers of ");
}

/* torchrun's variables without an MPI launch: every process would train its
 * own copy; refused with how to launch. */
static void test_torchrun_environment(void **state) {
    (void)state;
    assert_int_equal(tgt_run("train --data '%s' --max-steps 1 --batch-size 16 --threads 1 "
                             "--ckpt-dir '%s'",
                             data_path(), tgt_path("never")),
                     0); /* the control: alone it trains */
    setenv("WORLD_SIZE", "4", 1);
    setenv("RANK", "2", 1);
    setenv("LOCAL_RANK", "2", 1);
    int code = tgt_run("train --data '%s' --max-steps 1 --batch-size 16 --threads 1", data_path());
    int ecode = tgt_run("eval --ckpt '%s' --data '%s'", tgt_path("ck/ckpt-00000002.h5"),
                        data_path());
    char eout[sizeof tgt_out];
    memcpy(eout, tgt_out, sizeof eout);
    setenv("WORLD_SIZE", "1", 1);
    int one = tgt_run("eval --ckpt '%s' --data '%s'", tgt_path("ck/ckpt-00000002.h5"), data_path());
    unsetenv("WORLD_SIZE");
    unsetenv("RANK");
    unsetenv("LOCAL_RANK");
    assert_int_equal(code, 2);
    assert_int_equal(ecode, 2);
    assert_int_equal(one, 0);
    assert_non_null(strstr(eout, "tapegrad eval: WORLD_SIZE=4 (RANK=2) is set, but MPI started "
                                 "this process alone"));
    assert_non_null(strstr(eout, "'mpirun -np 4 tapegrad eval ...'"));
}

static int setup(void **state) {
    (void)state;
    if (tgt_dir_setup("tg_cli_limits") != 0)
        return -1;
    hid_t f = H5Fcreate(data_path(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        return -1;
    write_split(f, "train", 64);
    write_split(f, "test", 32);
    H5Fclose(f);
    /* A checkpoint for eval: ck/ckpt-00000002.h5. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' train --data '%s' --batch-size 16 --max-steps 2 --threads 1 -q --ckpt-dir "
             "'%s' >/dev/null",
             TG_CLI_PATH, data_path(), tgt_path("ck"));
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_warmup_longer_than_run),
        cmocka_unit_test(test_eval_batch_clamped),
        cmocka_unit_test(test_threads_capped),
        cmocka_unit_test(test_address_space_too_small),
        cmocka_unit_test(test_torchrun_environment),
    };
    return cmocka_run_group_tests_name("cli_limits", tests, setup, teardown);
}
