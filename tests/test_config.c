/*
 * tests/test_config.c: `tapegrad train --config FILE.ini` and --print-config:
 * the file's keys set the options, the command line overrides them, and every
 * bad file is a usage error (exit 2) whose message names the file, the line
 * and the key. The option tables: every row of train's and eval's is in
 * --help, is an INI key (or refused as a command-line-only one) and is
 * printed by --print-config; --print-config > run.ini, --config run.ini
 * repeats a training run exactly (the same options, the same losses).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "options.h"
#include "test_util.h"
#include "train.h"

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
                   "resnet20, resnet18, gpt) or a model file (a path such as ./resnet.ini), got "
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
    /* The data-parallel keys: sync-bn (a switch) and zero (0 or 1). */
    f = ini("syncbn.ini", "sync-bn = maybe\n");
    assert_int_equal(tgt_run("train --config '%s'", f), 2);
    tgt_expect_out("syncbn.ini:1: key 'sync-bn': expected true or false, got 'maybe'");
    f = ini("syncbn_mlp.ini", "sync_bn = true\nmodel = mlp\n");
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 2);
    tgt_expect_out("--sync-bn needs a model with batch norm, got --model mlp");
    f = ini("zero.ini", "zero = 3\n");
    assert_int_equal(tgt_run("train --config '%s'", f), 2);
    tgt_expect_out("zero.ini:1: key 'zero': expected an integer in [0, 1], got '3'");
    f = ini("dp.ini", "model = cnn-bn\nsync-bn = true\nzero = 1\n");
    assert_int_equal(tgt_run("train --config '%s' --print-config", f), 0);
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

/* ---- the option tables ---- */

typedef struct cmd_table {
    const char *cmd, *base; /* base: what every run of cmd needs */
    const tg_opt *rows;
    int n;
} cmd_table;

/* The line of key (printed with '_') in text, set or as an unset comment;
 * NULL when absent. */
static const char *line_of(const char *text, const char *name, bool *unset) {
    char key[64];
    snprintf(key, sizeof key, "%s", name);
    for (char *p = key; *p; p++)
        *p = *p == '-' ? '_' : *p;
    size_t kl = strlen(key);
    for (const char *l = text; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        const char *k = strncmp(l, "# ", 2) == 0 ? l + 2 : l;
        if (strncmp(k, key, kl) == 0 && strncmp(k + kl, " = ", 3) == 0) {
            *unset = k != l;
            return l;
        }
    }
    return NULL;
}

/* A value that row o accepts alone: the value printed when it is set by
 * default, else one of its own. */
static void sample(const tg_opt *o, const char *printed, char *buf, size_t len) {
    bool unset = false;
    const char *l = line_of(printed, o->name, &unset);
    int k = 0;
    switch (o->type) {
    case TG_OPT_STR:
        /* --model takes a shipped name or a model file that exists. */
        snprintf(buf, len, "%s", strcmp(o->name, "model") == 0 ? "cnn-bn" : "/tmp/sample value");
        return;
    case TG_OPT_SWITCH:
        snprintf(buf, len, "true");
        return;
    case TG_OPT_CHOICE:
        while (o->choices[k + 1].name)
            k++;
        snprintf(buf, len, "%s", o->choices[k].name);
        return;
    default:
        if (l && !unset)
            snprintf(buf, len, "%.*s", (int)strcspn(strchr(l, '=') + 2, "\n"), strchr(l, '=') + 2);
        else
            snprintf(buf, len, "%g", o->lo);
        return;
    }
}

static void check_table(const cmd_table *t) {
    static char help[1 << 16], printed[1 << 16];
    assert_int_equal(tgt_run("%s --help", t->cmd), 0);
    snprintf(help, sizeof help, "%s", tgt_out);
    assert_int_equal(tgt_run("%s %s --print-config", t->cmd, t->base), 0);
    snprintf(printed, sizeof printed, "%s", tgt_out);
    for (int r = 0; r < t->n; r++) {
        const tg_opt *o = &t->rows[r];
        char flag[80], ini[300], v[128], want[300];
        bool unset;
        snprintf(flag, sizeof flag, "  %s%c%s--%s%s", o->alias ? "-" : "", o->alias ? o->alias : ' ',
                 o->alias ? ", " : "", o->name, o->arg ? " " : "");
        if (!strstr(help, o->alias ? flag : flag + 2))
            fail_msg("%s --help lacks %s:\n%s", t->cmd, o->name, help);
        const char *l = line_of(printed, o->name, &unset);
        if (!(o->flags & TG_OPT_INI)) {
            if (l)
                fail_msg("%s --print-config prints the command-line-only %s", t->cmd, o->name);
            snprintf(ini, sizeof ini, "%s = x\n", o->name);
            tgt_write_file(tgt_path("row.ini"), ini);
            assert_int_equal(tgt_run("%s %s --config '%s'", t->cmd, t->base, tgt_path("row.ini")), 2);
            snprintf(want, sizeof want, "row.ini:1: command-line-only key '%s'", o->name);
            tgt_expect_out(want);
            continue;
        }
        if (!l)
            fail_msg("%s --print-config lacks %s:\n%s", t->cmd, o->name, printed);
        /* Accepted as a key, and printed back as given. */
        sample(o, printed, v, sizeof v);
        snprintf(ini, sizeof ini, "%s = %s\n", o->name, v);
        tgt_write_file(tgt_path("row.ini"), ini);
        /* Keys that hold only beside another option get it on the command line. */
        /* (--resume without --model reads the checkpoint for its model.) */
        const char *needs = strcmp(o->name, "sync-bn") == 0  ? "--model cnn-bn"
                            : strcmp(o->name, "resume") == 0 ? "--model mlp"
                                                              : "";
        if (tgt_run("%s %s %s --config '%s' --print-config", t->cmd, t->base, needs,
                    tgt_path("row.ini")) != 0)
            fail_msg("%s: key '%s = %s' refused:\n%s", t->cmd, o->name, v, tgt_out);
        l = line_of(tgt_out, o->name, &unset);
        assert_non_null(l);
        assert_false(unset);
        snprintf(want, sizeof want, " = %s\n", v);
        if (strncmp(strstr(l, " = "), want, strlen(want)) != 0)
            fail_msg("%s: '%s = %s' printed as '%.*s'", t->cmd, o->name, v, (int)strcspn(l, "\n"), l);
    }
}

static void test_tables_everywhere(void **state) {
    (void)state;
    const cmd_table tables[] = {
        {"train", "", tg_train_options, tg_train_options_count},
        {"eval", "", tg_eval_options, tg_eval_options_count},
    };
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        check_table(&tables[i]);
    /* Suggestions come from the table too. */
    assert_int_equal(tgt_run("train --clip-grad-nrom 1"), 2);
    tgt_expect_out("did you mean --clip-grad-norm?");
    assert_int_equal(tgt_run("train --test-spilt x"), 2);
    tgt_expect_out("did you mean --test-split?");
    assert_int_equal(tgt_run("eval --ckpt x --confuison"), 2);
    tgt_expect_out("did you mean --confusion?");
    tgt_write_file(tgt_path("typo.ini"), "ckpt-dri = x\n");
    assert_int_equal(tgt_run("train --config '%s'", tgt_path("typo.ini")), 2);
    tgt_expect_out("typo.ini:1: unknown key 'ckpt-dri'; did you mean 'ckpt-dir'?");
}

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *b = calloc(1 << 20, 1);
    assert_non_null(b);
    *n = fread(b, 1, (1 << 20) - 1, f);
    fclose(f);
    return b;
}

/* The losses and accuracies of a metrics file, without its times. */
static void losses(const char *path, char *out, size_t len) {
    size_t n = 0;
    char *text = read_all(path, &n);
    size_t at = 0;
    out[0] = 0;
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(l);
        assert_non_null(o);
        static const char *const keys[] = {"step", "loss", "train_loss", "test_loss", "test_acc"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            cJSON *v = cJSON_GetObjectItem(o, keys[k]);
            if (cJSON_IsNumber(v))
                at += (size_t)snprintf(out + at, len - at, "%s=%.17g ", keys[k], v->valuedouble);
        }
        at += (size_t)snprintf(out + at, len - at, "\n");
        cJSON_Delete(o);
        assert_true(at < len);
    }
    free(text);
}

static void test_print_config_round_trip(void **state) {
    (void)state;
    static char first[1 << 16], a[1 << 14], b[1 << 14];
    const char *d = tgt_make_dataset();
    char m[600], flags[1600];
    snprintf(m, sizeof m, "%s", tgt_path("rt.jsonl"));
    snprintf(flags, sizeof flags,
             "--data '%s' --model mlp --optimizer sgd --lr 0.0123 --seed 7 --max-steps 6 "
             "--batch-size 16 --eval-batch-size 32 --threads 1 --log-every 1 --warmup 2 "
             "--label-smoothing 0.05 --metrics '%s' --quiet",
             d, m);
    assert_int_equal(tgt_run("train %s --print-config", flags), 0);
    snprintf(first, sizeof first, "%s", tgt_out);
    tgt_write_file(tgt_path("run.ini"), first);
    assert_int_equal(tgt_run("train --config '%s' --print-config", tgt_path("run.ini")), 0);
    assert_string_equal(tgt_out, first);
    assert_non_null(strstr(first, "momentum = 0.9\n")); /* sgd's default, resolved */
    assert_int_equal(tgt_run("train %s", flags), 0);
    losses(m, a, sizeof a);
    assert_int_equal(tgt_run("train --config '%s'", tgt_path("run.ini")), 0);
    losses(m, b, sizeof b);
    assert_non_null(strstr(a, "step=6 loss="));
    assert_non_null(strstr(a, "test_acc="));
    assert_string_equal(a, b);
    /* And not by chance: another seed trains otherwise. */
    assert_int_equal(tgt_run("train --config '%s' --seed 8", tgt_path("run.ini")), 0);
    losses(m, b, sizeof b);
    assert_string_not_equal(a, b);
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
        cmocka_unit_test(test_tables_everywhere),
        cmocka_unit_test(test_print_config_round_trip),
    };
    return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
