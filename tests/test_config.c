/*
 * tests/test_config.c: `tapegrad train --config FILE.ini` and --print-config:
 * the file's keys set the options, the command line overrides them, and every
 * bad file is a usage error (exit 2) whose message names the file, the line
 * and the key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

static const char *ini(const char *name, const char *text) {
    const char *p = tgt_path(name);
    tgt_write_file(p, text);
    return p;
}

static void test_file_sets_and_flags_override(void **state) {
    (void)state;
    const char *f = ini("run.ini", "; a comment\n"
                                   "# another\n"
                                   "[train]\n"
                                   "model = cnn-bn\n"
                                   "batch_size = 64\n"
                                   "lr = 0.003\n"
                                   "label-smoothing = 0.1\n"
                                   "check_replicas = yes\n");
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 0);
    tgt_expect_out("model = cnn-bn\n");
    tgt_expect_out("batch_size = 64\n");
    tgt_expect_out("lr = 0.003\n");
    tgt_expect_out("label_smoothing = 0.1\n");
    /* The model's other defaults stay (cnn-bn: 10 epochs). */
    tgt_expect_out("epochs = 10\n");
    /* A flag wins over the file, wherever it stands. */
    assert_int_equal(tgt_run("train --lr 0.01 --config '%s' --batch-size 32 --print-config", f), 0);
    tgt_expect_out("lr = 0.01\n");
    tgt_expect_out("batch_size = 32\n");
    tgt_expect_out("model = cnn-bn\n");
    /* Keys before any section count too. */
    const char *g = ini("plain.ini", "model = mlp\nepochs = 3\n");
    assert_int_equal(tgt_run("train --config '%s' --print-config", g), 0);
    tgt_expect_out("epochs = 3\n");
}

static void test_bad_files(void **state) {
    (void)state;
    const char *f;
    f = ini("bad_value.ini", "[train]\nmodel = cnn\nlr = fast\n");
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 2);
    tgt_expect_out("bad_value.ini:3: key 'lr': expected a number");
    f = ini("bad_model.ini", "model = resnet\n");
    assert_int_equal(tgt_run("train --config '%s'", f), 2);
    tgt_expect_out("bad_model.ini:1: key 'model': expected mlp, cnn or cnn-bn, got 'resnet'");
    f = ini("unknown.ini", "model = cnn\n\nbatchsize = 3\n");
    assert_int_equal(tgt_run("train --config '%s'", f), 2);
    tgt_expect_out("unknown.ini:3: unknown key 'batchsize'");
    f = ini("junk.ini", "model = cnn\nthis is not a setting\n");
    assert_int_equal(tgt_run("train --config '%s'", f), 2);
    tgt_expect_out("junk.ini:2: not a 'key = value' line");
    f = ini("section.ini", "[eval]\nmodel = cnn\n");
    assert_int_equal(tgt_run("train --config '%s'", f), 2);
    tgt_expect_out("section.ini:2: section [eval] is not for this command");
    f = ini("twice.ini", "lr = 0.1\nmodel = cnn\nlr = 0.2\n");
    assert_int_equal(tgt_run("train --config '%s'", f), 2);
    tgt_expect_out("twice.ini:3: key 'lr' is already set on line 1");
    f = ini("switch.ini", "check-replicas = maybe\n");
    assert_int_equal(tgt_run("train --config '%s'", f), 2);
    tgt_expect_out("switch.ini:1: key 'check-replicas': expected true or false, got 'maybe'");
    f = ini("quiet.ini", "quiet = yes\n");
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 0);
    assert_int_equal(tgt_run("train --config '%s' --verbose --print-config", f), 2);
    tgt_expect_out("--quiet and --verbose exclude each other");
    assert_int_equal(tgt_run("train --config '%s'", tgt_path("none.ini")), 2);
    tgt_expect_out("cannot open");
    assert_int_equal(tgt_run("train --config"), 2);
    tgt_expect_out("--config needs a value");
}

static int setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_config");
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_sets_and_flags_override),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
