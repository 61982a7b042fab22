/*
 * tests/test_util.h: what the file-based and command-line tests share: a
 * scratch folder per test program (made by a cmocka group setup, removed with
 * everything in it by the teardown), paths inside it, writing a small file,
 * and running the tapegrad command line with its output captured.
 *
 * Include after <cmocka.h>. Everything is static inline so that a test uses
 * only what it needs.
 */
#ifndef TG_TESTS_TEST_UTIL_H
#define TG_TESTS_TEST_UTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char tgt_dir[256];

/* A fresh folder $TMPDIR/<prefix>_XXXXXX (under /tmp without TMPDIR). */
static inline int tgt_dir_setup(const char *prefix) {
    const char *base = getenv("TMPDIR");
    snprintf(tgt_dir, sizeof tgt_dir, "%s/%s_XXXXXX", base && *base ? base : "/tmp", prefix);
    return mkdtemp(tgt_dir) ? 0 : -1;
}

/* Removes the folder and everything in it. */
static inline int tgt_dir_teardown(void) {
    char cmd[512];
    if (!tgt_dir[0] || strchr(tgt_dir, '\''))
        return 0;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tgt_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* dir/name; the last 8 results stay valid. */
static inline const char *tgt_path(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", tgt_dir, name);
    return p;
}

static inline void tgt_write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

#ifdef TG_CLI_PATH
/* Output (stdout and stderr together) of the last tgt_run(). */
static char tgt_out[1 << 16];

/* Runs `tapegrad ARGS` through the shell (ARGS quoted as the caller wrote
 * them); returns its exit code, or -1 when it did not exit normally. */
static inline int tgt_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int tgt_run(const char *fmt, ...) {
    char args[2048], cmd[4096];
    const char *log = tgt_path(".cli-output");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>&1", TG_CLI_PATH, args, log);
    int st = system(cmd);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    size_t n = fread(tgt_out, 1, sizeof tgt_out - 1, f);
    tgt_out[n] = 0;
    fclose(f);
    remove(log);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Fails the test unless the last tgt_run() printed `what`. */
static inline void tgt_expect_out(const char *what) {
    if (!strstr(tgt_out, what))
        fail_msg("expected '%s' in:\n%s", what, tgt_out);
}
#endif

#endif
