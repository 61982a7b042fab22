/*
 * tests/test_dataset_signals.c: SIGTERM before the first training step.
 * A stop request while a dataset is opened and checked, or while the
 * default dataset is converted on first use, must end the run within a
 * couple of seconds with the documented exit code (128 + 15 without
 * --ckpt-dir) and leave no temporary file; temporaries of conversions that
 * died are removed on the next start.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <zlib.h>

#include "test_util.h"

/* How soon after the signal the process must be gone: "a couple of
 * seconds"; a sanitizer build's exit (its leak check walks every
 * allocation's stack) takes seconds of its own. */
#if defined(__SANITIZE_ADDRESS__)
#define STOP_LIMIT_S 10.0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STOP_LIMIT_S 10.0
#endif
#endif
#ifndef STOP_LIMIT_S
#define STOP_LIMIT_S 2.0
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Starts the CLI with args (NULL-terminated), its output going to log. */
static pid_t spawn(const char *log, const char *const *args) {
    char *argv[32];
    int n = 0;
    pid_t pid;

    argv[n++] = (char *)TG_CLI_PATH;
    for (; *args && n < 31; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(TG_CLI_PATH, argv);
        _exit(127);
    }
    return pid;
}

/* Waits up to `limit` seconds for pid; returns its exit code (-1 for a
 * signal death). Kills it and fails the test when it does not end. */
static int wait_exit(pid_t pid, double limit, double *took) {
    double t0 = now_s();
    int st;

    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        assert_true(r >= 0);
        if (r == pid)
            break;
        if (now_s() - t0 > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("the process did not end within %.1f s of the signal", limit);
        }
        usleep(10000);
    }
    if (took)
        *took = now_s() - t0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Waits until process pid has a file whose path ends in `name` open. */
static bool wait_open(pid_t pid, const char *name, double limit) {
    double t0 = now_s();
    char dir[64], link[600], target[600];
    size_t nl = strlen(name);

    snprintf(dir, sizeof dir, "/proc/%ld/fd", (long)pid);
    while (now_s() - t0 < limit) {
        for (int fd = 3; fd < 64; fd++) {
            snprintf(link, sizeof link, "%s/%d", dir, fd);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n <= 0)
                continue;
            target[n] = '\0';
            if ((size_t)n >= nl && strcmp(target + n - nl, name) == 0)
                return true;
        }
        usleep(5000);
    }
    return false;
}

static void read_log(const char *log, char *buf, size_t len) {
    FILE *f = fopen(log, "r");
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* ---------------------------------------------------------------------- */
/* A stop while the labels are checked                                     */
/* ---------------------------------------------------------------------- */

/*
 * A split of 2^30 samples of one u8 each, deflated: every 1 MiB chunk of x
 * and y is the same compressed block of zeros, written directly, so the
 * file is about 2 MiB yet honest (within deflate's ratio). Checking its
 * 2^30 labels takes seconds.
 */
static void write_long_scan(const char *path) {
    const hsize_t n = (hsize_t)1 << 30, ch = (hsize_t)1 << 20;
    hsize_t xd[2] = {n, 1}, xc[2] = {ch, 1}, yd[1] = {n}, yc[1] = {ch};
    unsigned char *zero = calloc(ch, 1), *z;
    uLongf zl = compressBound((uLong)ch);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);

    z = malloc(zl);
    assert_true(zero && z && f >= 0);
    assert_int_equal(compress2(z, &zl, zero, (uLong)ch, 9), Z_OK);
    for (int s = 0; s < 2; s++) {
        hid_t g = H5Gcreate2(f, s ? "test" : "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        for (int m = 0; m < 2; m++) {
            hid_t sp = H5Screate_simple(m ? 1 : 2, m ? yd : xd, NULL);
            hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
            hid_t d;
            assert_true(H5Pset_chunk(dcpl, m ? 1 : 2, m ? yc : xc) >= 0);
            assert_true(H5Pset_deflate(dcpl, 9) >= 0);
            d = H5Dcreate2(g, m ? "y" : "x", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
            assert_true(d >= 0);
            for (hsize_t c = 0; c < n / ch; c++) {
                hsize_t off[2] = {c * ch, 0};
                assert_true(H5Dwrite_chunk(d, H5P_DEFAULT, 0, off, zl, z) >= 0);
            }
            H5Dclose(d);
            H5Pclose(dcpl);
            H5Sclose(sp);
        }
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(g, "num_classes", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        int64_t k = 10;
        assert_true(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &k) >= 0);
        H5Aclose(a);
        H5Sclose(sp);
        H5Gclose(g);
    }
    assert_true(H5Fclose(f) >= 0);
    free(zero);
    free(z);
}

static void test_sigterm_during_open(void **state) {
    const char *path = tgt_path("long.h5"), *log = tgt_path("open.log");
    const char *args[] = {"train", "--data", path, "--max-steps", "1", "--batch-size", "4", NULL};
    char out[8192];
    double took;
    pid_t pid;

    (void)state;
    write_long_scan(path);
    pid = spawn(log, args);
    /* The signal handlers are in place before the file is opened: wait
     * until the child holds it open, then a little into the label scan
     * (seconds long). */
    assert_true(wait_open(pid, "long.h5", 30));
    usleep(300 * 1000);
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid, 30, &took), 128 + SIGTERM);
    read_log(log, out, sizeof out);
    if (took > STOP_LIMIT_S)
        fail_msg("exit took %.2f s after SIGTERM; output:\n%s", took, out);
    if (!strstr(out, "stopped by a signal before the first step"))
        fail_msg("unexpected output:\n%s", out);
}

/* ---------------------------------------------------------------------- */
/* First-use conversion                                                    */
/* ---------------------------------------------------------------------- */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Gzip'd IDX bytes: images (ndim 3, 10 of 28x28) or labels (ndim 1). */
static size_t idx_bytes(unsigned char *buf, int ndim) {
    size_t len = ndim == 3 ? 16 + 10 * 784 : 8 + 10;
    put_be32(buf, ndim == 3 ? 0x803 : 0x801);
    put_be32(buf + 4, 10);
    if (ndim == 3) {
        put_be32(buf + 8, 28);
        put_be32(buf + 12, 28);
    }
    for (size_t i = 4 + 4 * (size_t)ndim; i < len; i++)
        buf[i] = (unsigned char)(ndim == 3 ? i * 7 : i % 10);
    return len;
}

static void write_idx(const char *path, int ndim) {
    static unsigned char buf[16 + 10 * 784];
    size_t len = idx_bytes(buf, ndim);
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, buf, (unsigned)len), (int)len);
    assert_int_equal(gzclose(gz), Z_OK);
}

/* The Fashion-MNIST file names in dir; the test images are a FIFO when
 * fifo, so that the conversion waits there for as long as the test wants. */
static void make_idx_dir(const char *dir, bool fifo) {
    char p[600];
    assert_true(mkdir(dir, 0755) == 0 || errno == EEXIST);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    write_idx(p, 3);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_idx(p, 1);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", dir);
    write_idx(p, 1);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte.gz", dir);
    if (fifo)
        assert_int_equal(mkfifo(p, 0644), 0);
    else
        write_idx(p, 3);
}

/* How many entries of dir start with prefix. */
static int count_prefix(const char *dir, const char *prefix) {
    char cmd[1024], buf[64] = "";
    FILE *f;
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c '^%s' || true", dir, prefix);
    f = popen(cmd, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    pclose(f);
    return atoi(buf);
}

static void test_sigterm_during_conversion(void **state) {
    char idx[512], cache[512], tg[600], fifo[600];
    const char *log = tgt_path("conv.log");
    char out[8192];
    double took, t0;
    pid_t pid;
    int fd = -1;

    (void)state;
    snprintf(idx, sizeof idx, "%s", tgt_path("idx_fifo"));
    snprintf(cache, sizeof cache, "%s", tgt_path("cache_fifo"));
    snprintf(tg, sizeof tg, "%s/tapegrad", cache);
    snprintf(fifo, sizeof fifo, "%s/t10k-images-idx3-ubyte.gz", idx);
    make_idx_dir(idx, true);
    setenv("XDG_CACHE_HOME", cache, 1);
    const char *args[] = {"train", "--idx-dir", idx, "--max-steps", "1", "--batch-size", "2", NULL};
    pid = spawn(log, args);
    /* The train split is converted, then the test images are opened: the
     * FIFO's other end opens once the converter waits on it. */
    t0 = now_s();
    while ((fd = open(fifo, O_WRONLY | O_NONBLOCK)) < 0 && now_s() - t0 < 20)
        usleep(10000);
    assert_true(fd >= 0);
    usleep(200 * 1000);
    /* The temporary cache file holds the train split by now. */
    assert_int_equal(count_prefix(tg, "fashion-mnist.h5.tmp."), 1);
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid, 30, &took), 128 + SIGTERM);
    close(fd);
    read_log(log, out, sizeof out);
    if (took > STOP_LIMIT_S)
        fail_msg("exit took %.2f s after SIGTERM; output:\n%s", took, out);
    if (!strstr(out, "stopped by a signal while converting Fashion-MNIST"))
        fail_msg("unexpected output:\n%s", out);
    assert_int_equal(count_prefix(tg, "fashion-mnist.h5"), 0);
    unsetenv("XDG_CACHE_HOME");
}

/* Temporaries of dead conversions go; a live one and a recent one of
 * another host stay. */
static void test_stale_temporaries_removed(void **state) {
    char idx[512], cache[512], tg[600], host[128] = "host", p[5][800];
    struct timeval old[2];
    pid_t dead = fork();
    struct stat sb;
    FILE *f;

    (void)state;
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    if (gethostname(host, sizeof host) != 0 || !host[0])
        snprintf(host, sizeof host, "host");
    host[sizeof host - 1] = '\0';
    for (char *c = host; *c; c++)
        if (*c == '/' || *c == '.')
            *c = '_';
    snprintf(idx, sizeof idx, "%s", tgt_path("idx_ok"));
    snprintf(cache, sizeof cache, "%s", tgt_path("cache_ok"));
    snprintf(tg, sizeof tg, "%s/tapegrad", cache);
    make_idx_dir(idx, false);
    assert_int_equal(mkdir(cache, 0755), 0);
    assert_int_equal(mkdir(tg, 0755), 0);
    snprintf(p[0], sizeof p[0], "%s/fashion-mnist.h5.tmp.%s.%ld", tg, host, (long)dead);
    snprintf(p[1], sizeof p[1], "%s/fashion-mnist.h5.tmp.%s.%ld.tmp%ld", tg, host, (long)dead,
             (long)dead);
    snprintf(p[2], sizeof p[2], "%s/fashion-mnist.h5.tmp.4242", tg);
    snprintf(p[3], sizeof p[3], "%s/fashion-mnist.h5.tmp.%s.%ld", tg, host, (long)getpid());
    snprintf(p[4], sizeof p[4], "%s/fashion-mnist.h5.tmp.otherhost.77", tg);
    for (int i = 0; i < 5; i++) {
        f = fopen(p[i], "w");
        assert_non_null(f);
        fputs("partial", f);
        fclose(f);
    }
    /* An old-style name untouched for two days. */
    gettimeofday(&old[0], NULL);
    old[0].tv_sec -= 2 * 24 * 3600;
    old[1] = old[0];
    assert_int_equal(utimes(p[2], old), 0);
    setenv("XDG_CACHE_HOME", cache, 1);
    (void)tgt_run("train --idx-dir '%s' --max-steps 1 --batch-size 2", idx);
    unsetenv("XDG_CACHE_HOME");
    tgt_expect_out("converting Fashion-MNIST");
    for (int i = 0; i < 3; i++)
        if (stat(p[i], &sb) == 0)
            fail_msg("stale %s was kept", p[i]);
    for (int i = 3; i < 5; i++)
        assert_int_equal(stat(p[i], &sb), 0);
    snprintf(p[0], sizeof p[0], "%s/fashion-mnist.h5", tg);
    assert_int_equal(stat(p[0], &sb), 0);
}

static int setup(void **state) {
    (void)state;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return tgt_dir_setup("tg_dssignals");
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_during_open),
        cmocka_unit_test(test_sigterm_during_conversion),
        cmocka_unit_test(test_stale_temporaries_removed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
