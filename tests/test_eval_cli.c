/*
 * tests/test_eval_cli.c: `tapegrad eval` takes --config (an INI file of its
 * options, under the command line's) and --device: the same result from a
 * file as from flags, a bad key named with file:line, --device checked (cpu;
 * cuda where this build or node has none is a clear error, not a crash);
 * --print-config read back by --config; the dataset that checkpoints record
 * (path, size, SHA-256 checked against sha256sum) is eval's default data,
 * with a warning when it changed, an error when it is gone, and the
 * Fashion-MNIST default for a checkpoint without the record.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "checkpoint/checkpoint_internal.h"
#include "test_util.h"

static char g_data[512], g_ckpt[600];

/* The "loss ... accuracy ..." part of eval's line, without the timing. */
static void result_of(char *buf, size_t len) {
    const char *p = strstr(tgt_out, "loss ");
    const char *e = p ? strstr(p, "  (") : NULL;
    if (!p || !e)
        fail_msg("no result in:\n%s", tgt_out);
    snprintf(buf, len, "%.*s", (int)(e - p), p);
}

static void test_config_equals_flags(void **state) {
    (void)state;
    char a[128], b[128], ini[1400];
    assert_int_equal(tgt_run("eval --ckpt '%s' --data '%s' --batch-size 16 --threads 1", g_ckpt,
                             g_data),
                     0);
    result_of(a, sizeof a);
    snprintf(ini, sizeof ini, "[eval]\nckpt = %s\ndata = %s\nbatch_size = 16\nthreads = 1\n",
             g_ckpt, g_data);
    tgt_write_file(tgt_path("ev.ini"), ini);
    assert_int_equal(tgt_run("eval --config '%s'", tgt_path("ev.ini")), 0);
    result_of(b, sizeof b);
    assert_string_equal(a, b);
    /* The command line wins: another split, named in the output. */
    assert_int_equal(tgt_run("eval --config '%s' --split train --device cpu",
                             tgt_path("ev.ini")),
                     0);
    tgt_expect_out("on train: loss ");
}

static void test_bad_config_and_device(void **state) {
    (void)state;
    tgt_write_file(tgt_path("bad.ini"), "ckpt = x.h5\nepochs = 3\n");
    assert_int_equal(tgt_run("eval --config '%s'", tgt_path("bad.ini")), 2);
    tgt_expect_out("bad.ini:2: unknown key 'epochs'");
    assert_int_equal(tgt_run("eval --config '%s'", tgt_dir), 2);
    assert_int_equal(tgt_run("eval --ckpt '%s' --device tpu", g_ckpt), 2);
    tgt_expect_out("--device: expected cpu or cuda, got 'tpu'");
    /* No GPU here (or no CUDA in this build): an error, exit 1 or 2. */
    int code = tgt_run("eval --ckpt '%s' --data '%s' --device cuda --threads 1", g_ckpt, g_data);
    if (code == 0) {
        printf("a GPU is present: eval --device cuda ran\n");
        tgt_expect_out("loss ");
    } else {
        assert_true(code == 1 || code == 2);
        tgt_expect_out("--device cuda");
    }
}

/* sha256sum's digest of path (coreutils: an independent implementation). */
static void sha256sum(const char *path, char out[65]) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(out, 65, p));
    pclose(p);
    assert_int_equal(strlen(out), 64);
}

static long file_size(const char *path) {
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (long)sb.st_size;
}

/* eval --print-config > e.ini, then --config e.ini: the same options
 * (printed again identically) and the same result. */
static void test_print_config_round_trip(void **state) {
    (void)state;
    static char first[1 << 16];
    char a[128], b[128];
    assert_int_equal(tgt_run("eval --ckpt '%s' --data '%s' --batch-size 16 --threads 1 "
                             "--confusion --print-config",
                             g_ckpt, g_data),
                     0);
    snprintf(first, sizeof first, "%s", tgt_out);
    assert_non_null(strstr(first, "batch_size = 16\n"));
    assert_non_null(strstr(first, "confusion = true\n"));
    assert_non_null(strstr(first, "split = test\n"));
    tgt_write_file(tgt_path("e.ini"), first);
    assert_int_equal(tgt_run("eval --config '%s' --print-config", tgt_path("e.ini")), 0);
    assert_string_equal(tgt_out, first);
    assert_int_equal(tgt_run("eval --ckpt '%s' --data '%s' --batch-size 16 --threads 1 "
                             "--confusion",
                             g_ckpt, g_data),
                     0);
    result_of(a, sizeof a);
    assert_int_equal(tgt_run("eval --config '%s'", tgt_path("e.ini")), 0);
    result_of(b, sizeof b);
    assert_string_equal(a, b);
    tgt_expect_out("confusion matrix");
    /* A command-line-only option is not a key. */
    tgt_write_file(tgt_path("pc.ini"), "print-config = true\n");
    assert_int_equal(tgt_run("eval --config '%s'", tgt_path("pc.ini")), 2);
    tgt_expect_out("pc.ini:1: command-line-only key 'print-config'");
}

/* The checkpoint of setup() records g_data; eval without --data uses it. */
static void test_recorded_dataset(void **state) {
    (void)state;
    char sha[65], want[6000], abs[PATH_MAX], a[128], b[128];
    assert_non_null(realpath(g_data, abs));
    sha256sum(g_data, sha);
    assert_int_equal(tgt_run("inspect '%s'", g_ckpt), 0);
    snprintf(want, sizeof want, "  dataset           %s (%ld bytes, sha256 %s)\n", abs,
             file_size(g_data), sha);
    tgt_expect_out(want);
    assert_int_equal(tgt_run("eval --ckpt '%s' --data '%s' --batch-size 16 --threads 1", g_ckpt,
                             g_data),
                     0);
    result_of(a, sizeof a);
    assert_int_equal(tgt_run("eval --ckpt '%s' --batch-size 16 --threads 1", g_ckpt), 0);
    result_of(b, sizeof b);
    assert_string_equal(a, b);
    assert_null(strstr(tgt_out, "warning"));
}

/* A recorded dataset that changed: a warning naming the file and both
 * digests, then the evaluation; one that is gone: exit 3 naming it and
 * --data. */
static void test_recorded_dataset_changed_or_gone(void **state) {
    (void)state;
    char cmd[1400], old_sha[65], new_sha[65], want[6000], abs[PATH_MAX];
    const char *d2 = tgt_path("d2.h5");
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_data, d2);
    assert_int_equal(system(cmd), 0);
    sha256sum(d2, old_sha);
    assert_int_equal(tgt_run("train --data '%s' --model mlp --max-steps 2 --batch-size 8 "
                             "--threads 1 --ckpt-dir '%s' --quiet",
                             d2, tgt_path("ck2")),
                     0);
    const char *ck = tgt_path("ck2/ckpt-00000002.h5");
    assert_non_null(realpath(d2, abs));
    /* Bytes appended after HDF5's end of file: still the same data, but
     * no longer the same file. */
    FILE *f = fopen(d2, "ab");
    assert_non_null(f);
    fputs("appended", f);
    fclose(f);
    sha256sum(d2, new_sha);
    assert_string_not_equal(old_sha, new_sha);
    assert_int_equal(tgt_run("eval --ckpt '%s' --batch-size 16 --threads 1", ck), 0);
    snprintf(want, sizeof want,
             "warning: the dataset %s has changed since %s was written: its SHA-256 is %s (%ld "
             "bytes) now, %s (%ld bytes) when trained",
             abs, ck, new_sha, file_size(d2), old_sha, file_size(d2) - 8);
    tgt_expect_out(want);
    tgt_expect_out("on test: loss ");
    remove(d2);
    assert_int_equal(tgt_run("eval --ckpt '%s' --batch-size 16 --threads 1", ck), 3);
    snprintf(want, sizeof want,
             "%s was trained on the dataset %s, which is gone (No such file or directory); "
             "pass the dataset to evaluate with --data FILE.h5",
             ck, abs);
    tgt_expect_out(want);
    /* --data still works. */
    assert_int_equal(tgt_run("eval --ckpt '%s' --data '%s' --threads 1", ck, g_data), 0);
}

/* A checkpoint from before the record (its attributes removed here): it
 * loads, inspect says so, --data evaluates it as before. */
static void test_checkpoint_without_record(void **state) {
    (void)state;
    char cmd[1400], err[256], a[128], b[128];
    const char *old = tgt_path("old.h5");
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_ckpt, old);
    assert_int_equal(system(cmd), 0);
    hid_t f = H5Fopen(old, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    static const char *const attrs[] = {"data_path", "data_bytes", "data_sha256", "data_crc32"};
    for (int i = 0; i < 4; i++)
        assert_true(H5Adelete(f, attrs[i]) >= 0);
    H5Fclose(f);
    assert_int_equal(tg__ck_reseal(old, err, sizeof err), TG_OK);
    assert_int_equal(tgt_run("inspect '%s'", old), 0);
    tgt_expect_out("dataset           not recorded");
    assert_int_equal(tgt_run("eval --ckpt '%s' --data '%s' --batch-size 16 --threads 1", g_ckpt,
                             g_data),
                     0);
    result_of(a, sizeof a);
    assert_int_equal(tgt_run("eval --ckpt '%s' --data '%s' --batch-size 16 --threads 1", old,
                             g_data),
                     0);
    result_of(b, sizeof b);
    assert_string_equal(a, b);
}

static int setup(void **state) {
    (void)state;
    if (tgt_dir_setup("tg_eval_cli"))
        return -1;
    snprintf(g_data, sizeof g_data, "%s", tgt_make_dataset());
    if (tgt_run("train --data '%s' --model mlp --max-steps 3 --batch-size 8 --threads 1 "
                "--ckpt-dir '%s' --quiet",
                g_data, tgt_path("ck")) != 0)
        return -1;
    snprintf(g_ckpt, sizeof g_ckpt, "%s", tgt_path("ck/ckpt-00000003.h5"));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_equals_flags),
        cmocka_unit_test(test_bad_config_and_device),
        cmocka_unit_test(test_print_config_round_trip),
        cmocka_unit_test(test_recorded_dataset),
        cmocka_unit_test(test_recorded_dataset_changed_or_gone),
        cmocka_unit_test(test_checkpoint_without_record),
    };
    return cmocka_run_group_tests_name("eval_cli", tests, setup, teardown);
}
