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
    tgt_expect_out("bad_model.ini:1: key 'model': expected a shipped model (mlp, cnn, cnn-bn, "
                   "resnet20, resnet18) or a model file (a path such as ./resnet.ini), got "
                   "'resnet'");
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

/* Files that are not what a configuration file is: a folder, binary
 * bytes, a key twice under its two spellings, lines longer than inih's
 * buffer (which it would otherwise split into two "lines"). */
static void test_damaged_files(void **state) {
    (void)state;
    /* A folder was once read as an empty configuration. */
    assert_int_equal(tgt_run("train --config '%s' --print-config", tgt_path("")), 2);
    tgt_expect_out("is a directory, expected an INI file");
    assert_int_equal(tgt_run("train --config /dev/null --print-config"), 2);
    tgt_expect_out("--config '/dev/null': not a regular file");
    /* '-' and '_' spell the same key. */
    const char *f = ini("dup.ini", "[train]\nbatch-size = 64\nbatch_size = 32\n");
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 2);
    tgt_expect_out("dup.ini:3: key 'batch_size' is already set on line 2");
    /* A 300-character path (longer than inih's default buffer of 200): read
     * whole, so the text after it stays part of the path. */
    char text[6000];
    char path[320];
    memset(path, 'p', 300);
    path[300] = '\0';
    snprintf(text, sizeof text, "metrics = /tmp/%sepochs=3\nmodel = cnn\n", path);
    f = ini("long.ini", text);
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 0);
    tgt_expect_out("epochs = 10\n"); /* cnn's default, not 3 */
    tgt_expect_out("model = cnn\n");
    /* Over the limit: an error naming the line, not a split. */
    char big[4200];
    memset(big, 'q', 4100);
    big[4100] = '\0';
    snprintf(text, sizeof text, "model = cnn\nmetrics = /tmp/%s\nepochs = 3\n", big);
    f = ini("toolong.ini", text);
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 2);
    tgt_expect_out("toolong.ini:2: line of 4115 characters, longer than the 4096 allowed");
    /* An indented line is a key of its own, not the previous value's tail. */
    f = ini("indent.ini", "metrics = /tmp/m.jsonl\n    epochs = 3\n");
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 0);
    tgt_expect_out("epochs = 3\n");
    /* Binary junk: a NUL byte. */
    const char *p = tgt_path("nul.ini");
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    fwrite("model = cnn\nlr\0 = 1\n", 1, 21, fp);
    fclose(fp);
    assert_int_equal(tgt_run("train --config '%s' --print-config", p), 2);
    tgt_expect_out("nul.ini:2: a NUL byte: not a text file");
    /* Larger than any configuration. */
    p = tgt_path("huge.ini");
    fp = fopen(p, "wb");
    assert_non_null(fp);
    for (int i = 0; i < (1 << 20) / 16 + 1; i++)
        fputs("; a comment ...\n", fp);
    fclose(fp);
    assert_int_equal(tgt_run("train --config '%s' --print-config", p), 2);
    tgt_expect_out("larger than a configuration file may be (1 MiB)");
    /* An empty file is an empty configuration. */
    f = ini("empty.ini", "");
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 0);
    tgt_expect_out("model = mlp\n");
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
        cmocka_unit_test(test_damaged_files),
    };
    return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
