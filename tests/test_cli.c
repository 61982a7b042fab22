/*
 * tests/test_cli.c: the tapegrad executable's global options and exit codes.
 *
 * Runs the built CLI (TG_CLI_PATH) as a child process, capturing stdout and
 * stderr in temporary files, so that what is checked is what a user or a
 * batch script sees. The convert, inspect and train tests work on small IDX
 * files written here into a temporary folder.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <hdf5.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "tapegrad/base.h"
#include "tapegrad/kernels.h"
#include "tapegrad/trainer.h"

extern char **environ;

#define CAP 65536

typedef struct cli_result {
    int code; /* exit status, or -1 when the child did not exit normally */
    char out[CAP];
    char err[CAP];
} cli_result;

static void slurp(FILE *f, char *buf) {
    rewind(f);
    size_t n = fread(buf, 1, CAP - 1, f);
    buf[n] = '\0';
}

/* Runs TG_CLI_PATH with the given arguments (NULL-terminated after argv[0]). */
static void run_cli(cli_result *r, char *const argv[]) {
    FILE *out = tmpfile();
    FILE *err = tmpfile();
    assert_non_null(out);
    assert_non_null(err);

    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, fileno(out), STDOUT_FILENO), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, fileno(err), STDERR_FILENO), 0);
    pid_t pid;
    int rc = posix_spawn(&pid, TG_CLI_PATH, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(rc, 0);

    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    r->code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    slurp(out, r->out);
    slurp(err, r->err);
    fclose(out);
    fclose(err);
}

static cli_result *result(void) {
    cli_result *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    return r;
}

static void test_version(void **state) {
    (void)state;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "--version", NULL});
    assert_int_equal(r->code, 0);
    assert_non_null(strstr(r->out, "tapegrad " TG_VERSION_STRING "\n"));
    assert_non_null(strstr(r->out, "CUDA backend: "));
#ifdef TG_HAVE_CUDA
    /* Which libraries were found, and the GPU count. */
    char gpus[64];
    snprintf(gpus, sizeof gpus, "\n  GPUs: %d visible\n", tg_cuda_device_count());
    assert_non_null(strstr(r->out, "CUDA backend: built (CUDA runtime "));
    assert_non_null(strstr(r->out, "\n  driver: "));
    assert_non_null(strstr(r->out, "\n  cuBLAS: "));
    assert_non_null(strstr(r->out, "\n  NCCL: "));
    assert_non_null(strstr(r->out, gpus));
#else
    assert_non_null(strstr(r->out, "CUDA backend: not built\n"));
#endif
    free(r);
}

static void check_help(const char *flag) {
    static const char *const cmds[] = {"train",  "eval",   "convert", "inspect",
                                       "export", "sample", "plot",    "trace"};
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", (char *)flag, NULL});
    assert_int_equal(r->code, 0);
    assert_non_null(strstr(r->out, "usage: tapegrad"));
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        /* Each command is listed at the start of an indented line. */
        char row[32];
        snprintf(row, sizeof(row), "\n  %s ", cmds[i]);
        if (!strstr(r->out, row))
            fail_msg("'%s' help does not list '%s':\n%s", flag, cmds[i], r->out);
    }
    free(r);
}

static void test_help(void **state) {
    (void)state;
    check_help("--help");
    check_help("-h");
}

/* Every format in convert's own usage ("tapegrad convert FMT ...") is named
 * as 'convert FMT' on convert's row of the top-level help. */
static void test_help_names_convert_formats(void **state) {
    (void)state;
    cli_result *top = result(), *conv = result();
    run_cli(top, (char *const[]){"tapegrad", "--help", NULL});
    run_cli(conv, (char *const[]){"tapegrad", "convert", "--help", NULL});
    assert_int_equal(top->code, 0);
    assert_int_equal(conv->code, 0);
    int formats = 0;
    for (const char *p = conv->out; (p = strstr(p, "tapegrad convert ")) != NULL;) {
        p += strlen("tapegrad convert ");
        size_t n = strcspn(p, " \n");
        char want[64];
        snprintf(want, sizeof want, "'convert %.*s'", (int)n, p);
        if (!strstr(top->out, want))
            fail_msg("tapegrad --help does not name %s, which convert --help offers:\n%s", want,
                     top->out);
        formats++;
    }
    assert_true(formats >= 3);
    free(top);
    free(conv);
}

static void test_unknown_command(void **state) {
    (void)state;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "frobnicate", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "frobnicate"));
    assert_non_null(strstr(r->err, "--help"));
    assert_string_equal(r->out, "");
    free(r);
}

static void test_unknown_option(void **state) {
    (void)state;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "--frobnicate", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--frobnicate"));
    assert_non_null(strstr(r->err, "--help"));
    free(r);
}

static void test_no_args(void **state) {
    (void)state;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "usage: tapegrad"));
    assert_string_equal(r->out, "");
    free(r);
}

/* ---- small IDX files and a temporary folder ---- */

static char g_dir[256];

static const char *tmp_path(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Tiny data sets: NS samples of RxC pixels; pixel j of sample i is
 * (7*i + 3*j) % 256 and the label is i % 3. */
#define NS 20
#define R 8
#define C 8

static void write_gz(const char *path, const unsigned char *hdr, size_t hlen,
                     const unsigned char *body, size_t blen) {
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, hdr, (unsigned)hlen), (int)hlen);
    assert_int_equal(gzwrite(gz, body, (unsigned)blen), (int)blen);
    assert_int_equal(gzclose(gz), Z_OK);
}

static void be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Writes DIR/PREFIX-images-idx3-ubyte.gz and DIR/PREFIX-labels-idx1-ubyte.gz. */
static void write_idx(const char *dir, const char *prefix) {
    static unsigned char px[NS * R * C], lb[NS];
    for (int i = 0; i < NS; i++) {
        lb[i] = (unsigned char)(i % 3);
        for (int j = 0; j < R * C; j++)
            px[i * R * C + j] = (unsigned char)((7 * i + 3 * j) % 256);
    }
    unsigned char h[16];
    char path[600];
    be32(h, 0x803);
    be32(h + 4, NS);
    be32(h + 8, R);
    be32(h + 12, C);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    write_gz(path, h, 16, px, sizeof px);
    be32(h, 0x801);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    write_gz(path, h, 8, lb, sizeof lb);
}

/* The mean pixel after scaling by 1/255, computed independently. */
static double tiny_mean(void) {
    double sum = 0;
    for (int i = 0; i < NS; i++)
        for (int j = 0; j < R * C; j++)
            sum += (7 * i + 3 * j) % 256;
    return sum / (NS * R * C) / 255.0;
}

static int group_setup(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/tg_cli_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_dir))
        return -1;
    write_idx(g_dir, "train");
    write_idx(g_dir, "t10k");
    /* The cache folder of `tapegrad train` goes under the test's folder. */
    return setenv("XDG_CACHE_HOME", tmp_path("cache"), 1);
}

static int group_teardown(void **state) {
    (void)state;
    return nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void convert_tiny(const char *out, const char *split, const char *prefix, int code) {
    char im[600], lb[600];
    snprintf(im, sizeof im, "%s/%s-images-idx3-ubyte.gz", g_dir, prefix);
    snprintf(lb, sizeof lb, "%s/%s-labels-idx1-ubyte.gz", g_dir, prefix);
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "convert", "idx", "--images", im, "--labels", lb,
                               "--out", (char *)out, "--split", (char *)split, NULL});
    if (r->code != code)
        fail_msg("convert exited %d, expected %d:\n%s%s", r->code, code, r->out, r->err);
    free(r);
}

/* ---- convert and inspect ---- */

static void test_convert_and_inspect(void **state) {
    (void)state;
    const char *out = tmp_path("tiny.h5");
    cli_result *r = result();
    char im[600], lb[600];
    snprintf(im, sizeof im, "%s/train-images-idx3-ubyte.gz", g_dir);
    snprintf(lb, sizeof lb, "%s/train-labels-idx1-ubyte.gz", g_dir);
    run_cli(r, (char *const[]){"tapegrad", "convert", "idx", "--images", im, "--labels", lb,
                               "--out", (char *)out, "--split", "train", NULL});
    assert_int_equal(r->code, 0);
    char want[256];
    /* num_classes is 10 whenever every label is in 0..9 (the MNIST family). */
    snprintf(want, sizeof want, "split 'train': %d samples of 1x%dx%d u8, 10 classes, mean %.6f",
             NS, R, C, tiny_mean());
    if (!strstr(r->out, want))
        fail_msg("convert output lacks '%s':\n%s", want, r->out);

    /* A second split is added to the same file, keeping the first. */
    convert_tiny(out, "test", "t10k", 0);
    run_cli(r, (char *const[]){"tapegrad", "inspect", (char *)out, NULL});
    assert_int_equal(r->code, 0);
    assert_non_null(strstr(r->out, "dataset, 2 splits"));
    assert_non_null(strstr(r->out, "split train: 20 samples, 10 classes"));
    assert_non_null(strstr(r->out, "split test: 20 samples, 10 classes"));
    assert_non_null(strstr(r->out, "x: u8 (20, 1, 8, 8)"));
    assert_non_null(strstr(r->out, "y: u8 (20,)"));
    assert_non_null(strstr(r->out, "attribute num_classes = 10"));
    /* Labels i % 3 for i < 20: 7 zeros, 7 ones, 6 twos. */
    assert_non_null(strstr(r->out, "0: 7 (35.0%)  1: 7 (35.0%)  2: 6 (30.0%)  3: 0 (0.0%)"));
    free(r);
}

static void test_convert_errors(void **state) {
    (void)state;
    cli_result *r = result();
    const char *missing = tmp_path("absent-images.gz");
    char lb[600];
    snprintf(lb, sizeof lb, "%s/train-labels-idx1-ubyte.gz", g_dir);
    /* A missing input is a data error naming the file; no output appears. */
    run_cli(r, (char *const[]){"tapegrad", "convert", "idx", "--images", (char *)missing,
                               "--labels", lb, "--out", (char *)tmp_path("never.h5"), NULL});
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "absent-images.gz"));
    assert_int_not_equal(access(tmp_path("never.h5"), F_OK), 0);
    /* Images and labels swapped: a bad magic is a data error too. */
    run_cli(r, (char *const[]){"tapegrad", "convert", "idx", "--images", lb, "--labels", lb,
                               "--out", (char *)tmp_path("never.h5"), NULL});
    assert_int_equal(r->code, 3);
    /* Usage errors: a missing required flag, an unknown format, a bad value. */
    run_cli(r, (char *const[]){"tapegrad", "convert", "idx", "--images", lb, NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--labels is required"));
    run_cli(r, (char *const[]){"tapegrad", "convert", "csv", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "csv"));
    run_cli(r, (char *const[]){"tapegrad", "convert", "idx", "--deflate", "12", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--deflate"));
    run_cli(r, (char *const[]){"tapegrad", "convert", "--help", NULL});
    assert_int_equal(r->code, 0);
    assert_non_null(strstr(r->out, "--images"));
    free(r);
}

static void test_inspect_errors(void **state) {
    (void)state;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "inspect", (char *)tmp_path("nope.h5"), NULL});
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "nope.h5"));

    const char *txt = tmp_path("text.h5");
    FILE *f = fopen(txt, "w");
    assert_non_null(f);
    fputs("not hdf5\n", f);
    assert_int_equal(fclose(f), 0);
    run_cli(r, (char *const[]){"tapegrad", "inspect", (char *)txt, NULL});
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "not an HDF5 file"));

    /* An HDF5 file without split groups (as a checkpoint would be). */
    const char *empty = tmp_path("empty.h5");
    hid_t h = H5Fcreate(empty, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(h >= 0);
    assert_true(H5Fclose(h) >= 0);
    run_cli(r, (char *const[]){"tapegrad", "inspect", (char *)empty, NULL});
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "empty.h5: not a dataset"));

    run_cli(r, (char *const[]){"tapegrad", "inspect", NULL});
    assert_int_equal(r->code, 2);
    /* eval: usage errors before anything is opened. */
    run_cli(r, (char *const[]){"tapegrad", "eval", "--data", (char *)empty, NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--ckpt FILE is required"));
    run_cli(r, (char *const[]){"tapegrad", "eval", "--ckpt", (char *)empty, "--bogus", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "unknown option '--bogus'"));
    run_cli(r, (char *const[]){"tapegrad", "eval", "--ckpt", (char *)empty, "--data", (char *)empty,
                               NULL});
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "not a tapegrad checkpoint"));
    /* train: checkpoint options need a folder; a bad device is refused. */
    run_cli(r, (char *const[]){"tapegrad", "train", "--resume", "auto", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--resume auto needs --ckpt-dir"));
    run_cli(r, (char *const[]){"tapegrad", "train", "--keep", "2", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--ckpt-every and --keep need --ckpt-dir"));
    run_cli(r, (char *const[]){"tapegrad", "train", "--device", "tpu", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--device: expected cpu or cuda, got 'tpu'"));
#ifndef TG_HAVE_CUDA
    run_cli(r, (char *const[]){"tapegrad", "train", "--device", "cuda", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--device cuda: this build has no CUDA backend"));
#endif
    run_cli(r, (char *const[]){"tapegrad", "inspect", "--bogus", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--bogus"));
    free(r);
}

/* ---- train: help, usage errors, data errors ---- */

static void test_train_help(void **state) {
    (void)state;
    static const char *const flags[] = {
        "--model",           "--data",     "--epochs",       "--batch-size", "--lr",
        "--optimizer",       "--seed",     "--threads",      "--metrics",    "--max-steps",
        "--log-every",       "--idx-dir",  "--weight-decay", "--schedule",   "--eval-batch-size",
        "--label-smoothing", "--device",   "--comm-timeout", "--bucket-mb",  "--trace",
        "--check-replicas",  "--ckpt-dir", "--ckpt-every",   "--keep",       "--resume",
        "--sync-bn",         "--zero",
    };
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "train", "--help", NULL});
    assert_int_equal(r->code, 0);
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        char row[64];
        snprintf(row, sizeof row, "  %s ", flags[i]);
        if (!strstr(r->out, row))
            fail_msg("train --help lacks %s:\n%s", flags[i], r->out);
    }
    /* The defaults shown are the ones the trainer uses. */
    for (int k = 0; k < TG_MODEL_COUNT; k++) {
        tg_trainer_config c = tg_trainer_defaults((tg_model_kind)k);
        char row[128];
        snprintf(row, sizeof row, "\n  %-7s %-7lld %-6lld %-10s %-7g %g\n",
                 tg_model_name((tg_model_kind)k), (long long)c.epochs, (long long)c.batch_size,
                 c.optim.kind == TG_OPTIM_ADAMW ? "adamw" : "?", c.optim.lr, c.optim.weight_decay);
        if (!strstr(r->out, row))
            fail_msg("train --help lacks the defaults row '%s':\n%s", row, r->out);
    }
    tg_trainer_config d = tg_trainer_defaults(TG_MODEL_MLP);
    char seed[64];
    snprintf(seed, sizeof seed, "(default: %llu)", (unsigned long long)d.seed);
    assert_non_null(strstr(r->out, seed));
    free(r);
}

/* Each bad value exits 2 with a message naming the flag. */
static void test_train_bad_values(void **state) {
    (void)state;
    static const char *const bad[][2] = {
        {"--epochs", "0"},        {"--epochs", "ten"},     {"--batch-size", "0"},
        {"--batch-size", "12x"},  {"--lr", "-1"},          {"--lr", "nan"},
        {"--optimizer", "lbfgs"}, {"--model", "resnet"},   {"--threads", "0"},
        {"--seed", "-3"},         {"--max-steps", "-1"},   {"--label-smoothing", "1"},
        {"--schedule", "linear"}, {"--weight-decay", "x"}, {"--log-every", "1.5"},
    };
    cli_result *r = result();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run_cli(r,
                (char *const[]){"tapegrad", "train", (char *)bad[i][0], (char *)bad[i][1], NULL});
        if (r->code != 2 || !strstr(r->err, bad[i][0]))
            fail_msg("train %s %s: exit %d, stderr: %s", bad[i][0], bad[i][1], r->code, r->err);
        assert_string_equal(r->out, "");
    }
    run_cli(r, (char *const[]){"tapegrad", "train", "--epochs", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--epochs needs a value"));
    run_cli(r, (char *const[]){"tapegrad", "train", "--frobnicate", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--frobnicate"));
    run_cli(r, (char *const[]){"tapegrad", "train", "--momentum", "0.9", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--momentum"));
    free(r);
}

static void test_train_data_errors(void **state) {
    (void)state;
    cli_result *r = result();
    const char *missing = tmp_path("missing-data.h5");
    run_cli(r, (char *const[]){"tapegrad", "train", "--data", (char *)missing, NULL});
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "missing-data.h5"));

    /* A file that is not HDF5. */
    const char *txt = tmp_path("text2.h5");
    FILE *f = fopen(txt, "w");
    assert_non_null(f);
    fputs("not hdf5\n", f);
    assert_int_equal(fclose(f), 0);
    run_cli(r, (char *const[]){"tapegrad", "train", "--data", (char *)txt, NULL});
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "text2.h5"));

    /* A dataset without a test split: the message names the file and split. */
    const char *only = tmp_path("train-only.h5");
    convert_tiny(only, "train", "train", 0);
    run_cli(r, (char *const[]){"tapegrad", "train", "--data", (char *)only, NULL});
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "train-only.h5"));
    assert_non_null(strstr(r->err, "test"));

    /* The language model on images: the message says what data it takes. */
    const char *img = tmp_path("images.h5");
    convert_tiny(img, "train", "train", 0);
    convert_tiny(img, "test", "t10k", 0);
    run_cli(r, (char *const[]){"tapegrad", "train", "--model", "gpt", "--data", (char *)img,
                               "--batch-size", "4", "--max-steps", "1", NULL});
    assert_int_not_equal(r->code, 0);
    if (!strstr(r->err, "images.h5") || !strstr(r->err, "convert text"))
        fail_msg("gpt on images: %s", r->err);

    /* No IDX files where the default data should come from: a data error,
     * and no cache file (not even a partial one) is left behind. */
    run_cli(r,
            (char *const[]){"tapegrad", "train", "--idx-dir", (char *)tmp_path("nowhere"), NULL});
    assert_int_equal(r->code, 3);
    assert_non_null(strstr(r->err, "nowhere/train-images-idx3-ubyte.gz"));
    assert_non_null(strstr(r->err, "dataset-fashion-mnist"));
    assert_int_not_equal(access(tmp_path("cache/tapegrad/fashion-mnist.h5"), F_OK), 0);
    free(r);
}

/* The whole default path on tiny data: the IDX files are converted into the
 * cache folder (and only the finished file is left there), then trained on.
 * 20 samples in batches of 4 give 5 steps per epoch. */
static void test_train_tiny_from_idx(void **state) {
    (void)state;
    cli_result *r = result();
    const char *jsonl = tmp_path("tiny.jsonl");
    for (int k = 0; k < 2; k++) {
        run_cli(r, (char *const[]){"tapegrad", "train", "--idx-dir", g_dir, "--model",
                                   k ? "cnn-bn" : "cnn", "--epochs", "2", "--batch-size", "4",
                                   "--eval-batch-size", "8", "--log-every", "5", "--metrics",
                                   (char *)jsonl, "--threads", "1", NULL});
        if (r->code != 0)
            fail_msg("train exited %d:\n%s%s", r->code, r->out, r->err);
        /* The first run converts, the second finds the cache. */
        assert_true((strstr(r->out, "converting Fashion-MNIST") != NULL) == (k == 0));
        assert_non_null(strstr(r->out, "(20 train / 20 test)"));
        assert_non_null(strstr(r->out, "10 steps (5 per epoch), batch 4"));
        assert_non_null(strstr(r->out, "epoch 2/2 done: "));
        assert_non_null(strstr(r->out, "test accuracy: "));
    }
    DIR *d = opendir(tmp_path("cache/tapegrad"));
    assert_non_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') {
            assert_string_equal(e->d_name, "fashion-mnist.h5");
            files++;
        }
    closedir(d);
    assert_int_equal(files, 1);

    /* The metrics of the last run: the resolved configuration, 2 step events
     * (steps 5 and 10), 2 epoch events and the end event, in this order. */
    FILE *f = fopen(jsonl, "r");
    assert_non_null(f);
    char line[4096];
    static const char *const want[] = {
        "{\"event\":\"config\",\"world_size\":1,\"resumed_from_step\":null,"
        "\"model\":\"cnn-bn\",",
        "{\"event\":\"step\",\"step\":5,",
        "{\"event\":\"epoch\",\"epoch\":1,\"step\":5,",
        "{\"event\":\"step\",\"step\":10,",
        "{\"event\":\"epoch\",\"epoch\":2,\"step\":10,",
        "{\"event\":\"end\",\"epoch\":2,\"step\":10,"};
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        assert_true(n < 6);
        if (strncmp(line, want[n], strlen(want[n])) != 0)
            fail_msg("metrics line %d is '%s', expected it to start with '%s'", n, line, want[n]);
        /* Every option of the table, in its order, the dataset resolved. */
        if (n == 0 && !strstr(line, "\"epochs\":2,\"batch_size\":4,\"accum_steps\":1,"))
            fail_msg("config event without the resolved options: %s", line);
        if (n == 0 && (!strstr(line, "\"data\":\"") || !strstr(line, "fashion-mnist.h5\",") ||
                       !strstr(line, "\"comm_timeout\":null,")))
            fail_msg("config event without the dataset or null for unset: %s", line);
        n++;
    }
    fclose(f);
    assert_int_equal(n, 6);
    free(r);
}

/* --device cuda in a CUDA build: where this process cannot run CUDA (no
 * driver, no GPU, or cuBLAS not loadable) the run ends with exit 1 and the
 * reason tg_cuda_available gives; on a GPU node it trains. Without CUDA see
 * test_train_bad_values. */
static void test_train_device_cuda(void **state) {
    (void)state;
#ifdef TG_HAVE_CUDA
    char why[1024], want[1200];
    const bool ok = tg_cuda_available(why, sizeof why) == TG_OK;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "train", "--idx-dir", g_dir, "--model", "mlp",
                               "--max-steps", "2", "--batch-size", "4", "--eval-batch-size",
                               "8", "--threads", "1", "--device", "cuda", NULL});
    if (ok) {
        if (r->code != 0)
            fail_msg("train --device cuda exited %d:\n%s%s", r->code, r->out, r->err);
        assert_non_null(strstr(r->out, "test accuracy: "));
    } else {
        assert_int_equal(r->code, 1);
        snprintf(want, sizeof want, "tapegrad train: --device cuda: %s\n", why);
        if (!strstr(r->err, want))
            fail_msg("expected '%s' in:\n%s", want, r->err);
    }
    free(r);
#else
    skip();
#endif
}

/* The banner names the OpenBLAS kernels in use. OPENBLAS_CORETYPE=Haswell
 * takes the Haswell kernels (on any CPU with AVX2) and, on a CPU with
 * AVX-512, brings a warning, also under --quiet (which drops the banner);
 * without the variable there is none. */
static void test_train_blas_banner(void **state) {
    (void)state;
    const char *old = getenv("OPENBLAS_CORETYPE");
    char *saved = old ? strdup(old) : NULL;
    tg_blas_info here;
    tg_blas_info_get(&here);
    cli_result *r = result();
    char *argv[] = {"tapegrad",    "train", "--idx-dir",    g_dir, "--model",           "mlp",
                    "--max-steps", "1",     "--batch-size", "4",   "--eval-batch-size", "8",
                    "--threads",   "1",     NULL,           NULL};
    for (int run = 0; run < 3; run++) {
        const bool forced = run > 0, quiet = run == 2;
        argv[14] = quiet ? "--quiet" : NULL;
        if (forced)
            assert_int_equal(setenv("OPENBLAS_CORETYPE", "Haswell", 1), 0);
        else
            assert_int_equal(unsetenv("OPENBLAS_CORETYPE"), 0);
        run_cli(r, argv);
        if (r->code != 0)
            fail_msg("train exited %d:\n%s%s", r->code, r->out, r->err);
        bool warned = strstr(r->err, "warning: OPENBLAS_CORETYPE=Haswell keeps OpenBLAS on its "
                                     "Haswell kernels although this CPU has AVX-512") != NULL;
        assert_int_equal(warned, forced && here.cpu_avx512);
        const char *line = strstr(r->out, "\nblas: OpenBLAS ");
        if (quiet) {
            assert_null(line);
            continue;
        }
        if (!line)
            fail_msg("no blas line in the banner:\n%s", r->out);
        char *end = strchr(line + 1, '\n');
        assert_non_null(end);
        /* Where f32 products run on our own kernel the line says so after
         * the kernel set, and the warning no longer blames the products. */
        static const char own[] = "; f32 matrix products on tapegrad's own AVX-512 kernel";
        const size_t on = sizeof own - 1;
        const bool says_own =
            (size_t)(end - line) > on && strncmp(end - on, own, on) == 0;
        assert_int_equal(says_own, here.own_sgemm);
        if (says_own)
            end -= on;
        if (warned)
            assert_int_equal(strstr(r->err, "and matrix products") == NULL, here.own_sgemm);
        static const char want[] = ", Haswell kernels";
        size_t wn = sizeof want - 1;
        assert_true((size_t)(end - line) > wn && strncmp(end - 8, " kernels", 8) == 0);
        if (forced && __builtin_cpu_supports("avx2"))
            assert_true(strncmp(end - wn, want, wn) == 0);
        if (!forced)
            assert_null(strstr(r->err, "OPENBLAS_CORETYPE"));
    }
    if (saved)
        setenv("OPENBLAS_CORETYPE", saved, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
    free(saved);
    free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),           cmocka_unit_test(test_help),
        cmocka_unit_test(test_help_names_convert_formats),
        cmocka_unit_test(test_unknown_command),   cmocka_unit_test(test_unknown_option),
        cmocka_unit_test(test_no_args),           cmocka_unit_test(test_convert_and_inspect),
        cmocka_unit_test(test_convert_errors),    cmocka_unit_test(test_inspect_errors),
        cmocka_unit_test(test_train_help),        cmocka_unit_test(test_train_bad_values),
        cmocka_unit_test(test_train_data_errors), cmocka_unit_test(test_train_tiny_from_idx),
        cmocka_unit_test(test_train_blas_banner), cmocka_unit_test(test_train_device_cuda),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
