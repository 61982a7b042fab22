/*
 * tests/test_eval_cli.c: `tapegrad eval` takes --config (an INI file of its
 * options, under the command line's) and --device: the same result from a
 * file as from flags, a bad key named with file:line, --device checked (cpu;
 * cuda where this build or node has none is a clear error, not a crash).
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
    };
    return cmocka_run_group_tests_name("eval_cli", tests, setup, teardown);
}
