/*
 * tests/test_util.h: what the file-based and command-line tests share: a
 * scratch folder per test program (made by a cmocka group setup, removed with
 * everything in it by the teardown), paths inside it, writing a small file,
 * running the tapegrad command line with its output captured, and a small
 * dataset made through it.
 *
 * Include after <cmocka.h>. Everything is static inline so that a test uses
 * only what it needs.
 */
#ifndef TG_TESTS_TEST_UTIL_H
#define TG_TESTS_TEST_UTIL_H

#include <stdarg.h>
#include <stdint.h>
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

/* A .npy file of `n` bytes of data after a version-1.0 header. */
static inline void tgt_write_npy(const char *path, const char *descr, const char *shape, const void *data,
                      size_t n) {
    char hdr[128];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                       descr, shape);
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned short hl = (unsigned short)(len + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fwrite(&hl, 2, 1, f);
    fwrite(hdr, 1, (size_t)len, f);
    for (int i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    fwrite(data, 1, n, f);
    assert_int_equal(fclose(f), 0);
}

/* A 4-class set of 8x8 u8 images (512 train, 64 test) written by `tapegrad
 * convert npy` to d.h5 in the test folder; returns its path (static). */
static inline const char *tgt_make_dataset(void) {
    enum { N = 512, T = 64 };
    static unsigned char x[N * 64];
    static int64_t y[N];
    for (int i = 0; i < N; i++) {
        y[i] = i % 4;
        for (int j = 0; j < 64; j++)
            x[i * 64 + j] = (unsigned char)((j % 4 == y[i] ? 160 : 40) + (i * 7 + j * 13) % 50);
    }
    static char out[512];
    snprintf(out, sizeof out, "%s", tgt_path("d.h5"));
    for (int s = 0; s < 2; s++) {
        int n = s ? T : N;
        char shape[48];
        snprintf(shape, sizeof shape, "(%d, 1, 8, 8)", n);
        tgt_write_npy(tgt_path("x.npy"), "|u1", shape, x, (size_t)n * 64);
        snprintf(shape, sizeof shape, "(%d,)", n);
        tgt_write_npy(tgt_path("y.npy"), "<i8", shape, y, (size_t)n * 8);
        if (tgt_run("convert npy --x '%s' --y '%s' --out '%s' --split %s", tgt_path("x.npy"),
                    tgt_path("y.npy"), out, s ? "test" : "train") != 0)
            fail_msg("convert npy:\n%s", tgt_out);
    }
    return out;
}

/* Fails the test unless the last tgt_run() printed `what`. */
static inline void tgt_expect_out(const char *what) {
    if (!strstr(tgt_out, what))
        fail_msg("expected '%s' in:\n%s", what, tgt_out);
}
#endif

#endif
