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
#include <sys/wait.h>

#include <cmocka.h>

static char dir[] = "/tmp/tg_config_XXXXXX";
static char out[1 << 16];

/* Runs `tapegrad ARGS` with stdout and stderr captured into out. */
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

static const char *ini(const char *name, const char *text) {
    static char path[8][256];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    return p;
}

static void expect_out(const char *what) {
    if (!strstr(out, what))
        fail_msg("expected '%s' in:\n%s", what, out);
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
    assert_int_equal(run("train --config '%s' --print-config", f), 0);
    expect_out("model = cnn-bn\n");
    expect_out("batch_size = 64\n");
    expect_out("lr = 0.003\n");
    expect_out("label_smoothing = 0.1\n");
    /* The model's other defaults stay (cnn-bn: 10 epochs). */
    expect_out("epochs = 10\n");
    /* A flag wins over the file, wherever it stands. */
    assert_int_equal(run("train --lr 0.01 --config '%s' --batch-size 32 --print-config", f), 0);
    expect_out("lr = 0.01\n");
    expect_out("batch_size = 32\n");
    expect_out("model = cnn-bn\n");
    /* Keys before any section count too. */
    const char *g = ini("plain.ini", "model = mlp\nepochs = 3\n");
    assert_int_equal(run("train --config '%s' --print-config", g), 0);
    expect_out("epochs = 3\n");
}

static void test_bad_files(void **state) {
    (void)state;
    const char *f;
    f = ini("bad_value.ini", "[train]\nmodel = cnn\nlr = fast\n");
    assert_int_equal(run("train --config '%s' --print-config", f), 2);
    expect_out("bad_value.ini:3: key 'lr': expected a number");
    f = ini("bad_model.ini", "model = resnet\n");
    assert_int_equal(run("train --config '%s'", f), 2);
    expect_out("bad_model.ini:1: key 'model': expected mlp, cnn or cnn-bn, got 'resnet'");
    f = ini("unknown.ini", "model = cnn\n\nbatchsize = 3\n");
    assert_int_equal(run("train --config '%s'", f), 2);
    expect_out("unknown.ini:3: unknown key 'batchsize'");
    f = ini("junk.ini", "model = cnn\nthis is not a setting\n");
    assert_int_equal(run("train --config '%s'", f), 2);
    expect_out("junk.ini:2: not a 'key = value' line");
    f = ini("section.ini", "[eval]\nmodel = cnn\n");
    assert_int_equal(run("train --config '%s'", f), 2);
    expect_out("section.ini:2: section [eval] is not for this command");
    f = ini("twice.ini", "lr = 0.1\nmodel = cnn\nlr = 0.2\n");
    assert_int_equal(run("train --config '%s'", f), 2);
    expect_out("twice.ini:3: key 'lr' is already set on line 1");
    f = ini("switch.ini", "check-replicas = maybe\n");
    assert_int_equal(run("train --config '%s'", f), 2);
    expect_out("switch.ini:1: key 'check-replicas': expected true or false, got 'maybe'");
    f = ini("quiet.ini", "quiet = yes\n");
    assert_int_equal(run("train --config '%s' --print-config", f), 0);
    assert_int_equal(run("train --config '%s' --verbose --print-config", f), 2);
    expect_out("--quiet and --verbose exclude each other");
    assert_int_equal(run("train --config '%s/none.ini'", dir), 2);
    expect_out("cannot open");
    assert_int_equal(run("train --config"), 2);
    expect_out("--config needs a value");
}

int main(void) {
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_sets_and_flags_override),
        cmocka_unit_test(test_bad_files),
    };
    int rc = cmocka_run_group_tests_name("config", tests, NULL, NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
