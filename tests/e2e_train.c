/*
 * tests/e2e_train.c: real training runs of the tapegrad executable on
 * Fashion-MNIST.
 *
 *   - `tapegrad train --model mlp --epochs 2` from an empty cache folder: the
 *     cache file is built, the test accuracy reaches what two epochs of the
 *     MLP reach, the JSONL metrics hold the documented events and fields, and
 *     resident memory does not grow from the first epoch to the second.
 *   - Determinism: two capped runs with the same seed and thread count write
 *     identical loss lines; a third with another seed does not.
 *
 * Skipped (exit 77) when the Debian package dataset-fashion-mnist is absent.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"
#define CAP (1 << 20)

static char g_dir[256];

static const char *tmp_path(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

/* Runs the CLI with stdout to DIR/NAME.out; returns the exit status. */
static int run_cli(const char *name, char *const argv[]) {
    posix_spawn_file_actions_t fa;
    char out[600];
    snprintf(out, sizeof out, "%s/%s.out", g_dir, name);
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out,
                                                      O_WRONLY | O_CREAT | O_TRUNC, 0644),
                     0);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, TG_CLI_PATH, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot read %s", path);
    char *buf = calloc(1, CAP);
    assert_non_null(buf);
    size_t n = fread(buf, 1, CAP - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The number after "key": in a JSON line; fails the test when absent. */
static double field(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    const char *eol = strchr(line, '\n');
    if (!p || (eol && p > eol))
        fail_msg("no field %s in: %.*s", key, eol ? (int)(eol - line) : 200, line);
    return strtod(p + strlen(pat), NULL);
}

/* The n-th line (0-based) that contains `what`, or NULL. */
static const char *find_line(const char *text, const char *what, int n) {
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *eol = strchr(l, '\n');
        const char *hit = strstr(l, what);
        if (hit && (!eol || hit < eol) && n-- == 0)
            return l;
    }
    return NULL;
}

static int count_lines(const char *text, const char *what) {
    int n = 0;
    while (find_line(text, what, n))
        n++;
    return n;
}

static void test_mlp_two_epochs(void **state) {
    (void)state;
    const char *metrics = tmp_path("mlp.jsonl");
    int code = run_cli("mlp", (char *const[]){"tapegrad", "train", "--model", "mlp", "--epochs",
                                              "2", "--log-every", "100", "--metrics",
                                              (char *)metrics, NULL});
    char *out = slurp(tmp_path("mlp.out"));
    if (code != 0)
        fail_msg("train exited %d:\n%s", code, out);
    assert_non_null(strstr(out, "converting Fashion-MNIST"));
    assert_non_null(strstr(out, "test accuracy: "));
    assert_int_equal(access(tmp_path("cache/tapegrad/fashion-mnist.h5"), R_OK), 0);

    char *m = slurp(metrics);
    /* 60000 / 128 = 468 steps per epoch: steps 100..900 are logged. */
    assert_int_equal(count_lines(m, "\"event\":\"step\""), 9);
    assert_int_equal(count_lines(m, "\"event\":\"epoch\""), 2);
    assert_int_equal(count_lines(m, "\"event\":\"end\""), 1);
    const char *s1 = find_line(m, "\"event\":\"step\"", 0);
    assert_int_equal((int)field(s1, "step"), 100);
    assert_true(field(s1, "loss") > 0.1 && field(s1, "loss") < 2.3);
    assert_true(field(s1, "lr") > 0 && field(s1, "lr") <= 1e-3);

    const char *e1 = find_line(m, "\"event\":\"epoch\"", 0);
    const char *e2 = find_line(m, "\"event\":\"epoch\"", 1);
    const char *end = find_line(m, "\"event\":\"end\"", 0);
    assert_int_equal((int)field(e1, "epoch"), 1);
    assert_int_equal((int)field(e2, "epoch"), 2);
    assert_int_equal((int)field(e2, "step"), 936);
    static const char *const keys[] = {"train_loss", "test_loss", "test_acc", "samples_per_s",
                                       "seconds", "rss_mb"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_true(field(e2, keys[i]) > 0);
    /* The MLP passes 0.84 after two epochs with any reasonable setting. */
    double acc = field(e2, "test_acc");
    if (acc < 0.84)
        fail_msg("test accuracy %.4f after 2 epochs, expected >= 0.84", acc);
    assert_true(field(e2, "train_loss") < field(e1, "train_loss"));
    assert_true(field(end, "test_acc") == acc);
    /* Everything is allocated in the first step: the second epoch must not
     * add resident memory (a little slack for the C library's own pages). */
    double grow = field(e2, "rss_mb") - field(e1, "rss_mb");
    if (grow > 4.0)
        fail_msg("resident memory grew by %.1f MiB from epoch 1 to epoch 2", grow);
    free(m);
    free(out);
}

/* Runs a capped training; returns its step lines (the loss curve). */
static char *curve(const char *name, const char *seed) {
    char jsonl[600];
    snprintf(jsonl, sizeof jsonl, "%s/%s.jsonl", g_dir, name);
    int code = run_cli(name, (char *const[]){"tapegrad", "train", "--max-steps", "60",
                                             "--log-every", "5", "--threads", "2", "--seed",
                                             (char *)seed, "--metrics", jsonl, NULL});
    if (code != 0)
        fail_msg("train %s exited %d", name, code);
    char *m = slurp(jsonl);
    assert_int_equal(count_lines(m, "\"event\":\"step\""), 12);
    /* Keep the step lines only. */
    char *steps = calloc(1, CAP);
    assert_non_null(steps);
    for (int i = 0; i < 12; i++) {
        const char *l = find_line(m, "\"event\":\"step\"", i);
        /* Without the wall-clock "time" that ends every event. */
        const char *t = strstr(l, ",\"time\":");
        assert_true(t && t < strchr(l, '\n'));
        strncat(steps, l, (size_t)(t - l));
        strcat(steps, "}\n");
    }
    free(m);
    return steps;
}

static void test_determinism(void **state) {
    (void)state;
    char *a = curve("det-a", "7");
    char *b = curve("det-b", "7");
    char *c = curve("det-c", "8");
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    free(a);
    free(b);
    free(c);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void) {
    if (access(FMNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("skipped: %s not found (Debian package dataset-fashion-mnist)\n", FMNIST_DIR);
        return 77;
    }
    const char *base = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/tg_e2e_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir) || setenv("XDG_CACHE_HOME", tmp_path("cache"), 1) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_two_epochs),
        cmocka_unit_test(test_determinism),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
