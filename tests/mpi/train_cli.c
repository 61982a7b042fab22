/*
 * tests/mpi/train_cli.c: `tapegrad train`, `eval` and `inspect` run as users
 * run them, alone and under mpiexec on 1, 2 and 4 ranks, on small synthetic
 * datasets that this program writes (8x8 one-channel images of 4 classes).
 *
 *   train_cli ddp       mlp and cnn: K steps with the same global batch on 1,
 *                       2 and 4 ranks end with parameters equal within 1e-5
 *                       (relative to each tensor's largest value); every rank
 *                       bit-identical after every step (--check-replicas);
 *                       the logged loss is the global batch's; a batch not
 *                       divisible by the world, a split smaller than the
 *                       world, an uneven last batch, the trace files
 *   train_cli resume    2N steps vs N + resume + N, alone and on 2 ranks:
 *                       bit-identical tensors and the same loss lines; a
 *                       2-rank checkpoint resumed on 1 and 4 ranks
 *   train_cli badckpt   unusable folder, another model, truncated, flipped
 *                       bit, not HDF5, missing file, nothing to resume, a
 *                       corrupt newest checkpoint skipped, an empty folder
 *   train_cli preempt   SIGTERM to one of 2 ranks: exit 75, a checkpoint at
 *                       the step reported, --resume auto continues; SIGUSR1
 *                       to mpirun (forwarded); two SIGINTs alone: exit 130
 *   train_cli eval      eval on 1 and 3 ranks (confusion matrix, every sample
 *                       once) agrees with training's last evaluation; inspect
 *   train_cli syncbn    cnn-bn with --sync-bn on 1, 2 and 4 ranks: equal tensors
 *                       and step losses within 1e-5; without it they differ;
 *                       one sample per rank; refused for a model without bn
 *   train_cli zero      --zero 1 on 2 and 4 ranks equals the all-reduce run
 *                       and 1 rank (adamw, adam, sgd momentum, clipping);
 *                       its memory line; a --zero 1 checkpoint resumed on 2
 *                       (bit-identical), 4 and 1 ranks; another optimizer;
 *                       with --accum-steps 2 and --sync-bn
 *   train_cli sbatch    launch/slurm/train.sbatch's requeue decision after a
 *                       signal, with mpirun and with srun (train_cli_sbatch.h)
 *   train_cli data      --augment crop,flip: 1 rank == 2 ranks, 20 steps ==
 *                       10 + resume + 10 bit-identical; --val-fraction (the
 *                       same val loss on 1 and 2 ranks), --val-split, the
 *                       metrics' val fields, their errors; --val-fraction
 *                       with --augment across a resume on 2 ranks
 *                       bit-identical; regression (MSE) on 1 and 2 ranks
 *                       (train_cli_data.h)
 *
 * Each group prints its failed checks and exits non-zero when any failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int failures;
static char dir[512];

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "CHECK FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fprintf(stderr, "\n");                                                  \
            failures++;                                                             \
        }                                                                           \
    } while (0)

static const char *P(const char *fmt, ...) {
    static char buf[16][1024];
    static int next;
    char *p = buf[next++ % 16];
    int n = snprintf(p, 1024, "%s/", dir);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p + n, (size_t)(1024 - n), fmt, ap);
    va_end(ap);
    return p;
}

/* ---- the synthetic dataset ---- */

/* Class c lights pixels j with j % 4 == c, under noise that makes the task
 * learnable but not trivial. */
static void write_split(hid_t f, const char *name, int n, int off) {
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t xd[4] = {(hsize_t)n, 1, 8, 8}, yd[1] = {(hsize_t)n};
    float *x = malloc(sizeof(float) * (size_t)n * 64);
    long long *y = malloc(sizeof(long long) * (size_t)n);
    uint32_t s = 777u + (uint32_t)off;
    for (int i = 0; i < n; i++) {
        int c = (int)((i * 7 + off) % 4);
        y[i] = c;
        for (int j = 0; j < 64; j++) {
            s = s * 1664525u + 1013904223u;
            float noise = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
            x[i * 64 + j] = 1.2f * noise + ((j % 4) == c ? 0.6f : 0.0f);
        }
    }
    hid_t sp = H5Screate_simple(4, xd, NULL);
    hid_t d = H5Dcreate2(g, "x", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate_simple(1, yd, NULL);
    d = H5Dcreate2(g, "y", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, y);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate(H5S_SCALAR);
    long long k = 4;
    hid_t a = H5Acreate2(g, "num_classes", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, &k);
    H5Aclose(a);
    H5Sclose(sp);
    H5Gclose(g);
    free(x);
    free(y);
}

static const char *make_data(const char *name, int ntrain, int ntest) {
    const char *path = P("%s", name);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "cannot create %s\n", path);
        exit(2);
    }
    write_split(f, "train", ntrain, 0);
    write_split(f, "test", ntest, 1000);
    H5Fclose(f);
    /* Out of P()'s ring of buffers: the path is used for the whole group. */
    static char keep[8][1024];
    static int next;
    char *k = keep[next++ % 8];
    snprintf(k, sizeof keep[0], "%s", path);
    return k;
}

/* ---- running the CLI ---- */

/* argv for np ranks (np 0: the CLI alone, without mpiexec). */
static int build_argv(int np, const char *const *args, char **argv) {
    static char npbuf[16];
    int n = 0;
    if (np > 0) {
        snprintf(npbuf, sizeof npbuf, "%d", np);
        argv[n++] = TG_MPIEXEC;
        argv[n++] = "-n";
        argv[n++] = npbuf;
        argv[n++] = "--oversubscribe";
        if (geteuid() == 0)
            argv[n++] = "--allow-run-as-root";
    }
    argv[n++] = TG_CLI_PATH;
    for (int i = 0; args[i]; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    return n;
}

static pid_t spawn(int np, const char *out, const char *const *args) {
    char *argv[96];
    build_argv(np, args, argv);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    pid_t pid;
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
        perror("posix_spawn");
        exit(2);
    }
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static int wait_code(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return calloc(1, 1);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = calloc(1, (size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n)
        b[0] = '\0';
    fclose(f);
    return b;
}

/* Runs the CLI; *out gets its stdout+stderr (free it). Returns the exit code. */
static int run(int np, char **out, const char *const *args) {
    static int seq;
    const char *log = P("run%d.log", seq++);
    int code = wait_code(spawn(np, log, args));
    char *text = slurp(log);
    if (out)
        *out = text;
    else
        free(text);
    return code;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- reading checkpoints ---- */

typedef struct tensors {
    int n;
    char names[128][96];
    double *vals[128];
    long long len[128];
} tensors;

static herr_t add_one(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    tensors *t = data;
    if (t->n >= 128)
        return 0;
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    hid_t sp = H5Dget_space(d);
    long long n = (long long)H5Sget_simple_extent_npoints(sp);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Sclose(sp);
    H5Dclose(d);
    snprintf(t->names[t->n], sizeof t->names[0], "%s", name);
    t->vals[t->n] = v;
    t->len[t->n++] = n;
    return 0;
}

static bool read_ckpt(const char *path, tensors *t) {
    memset(t, 0, sizeof *t);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return false;
    hid_t g = H5Gopen2(f, "tensors", H5P_DEFAULT);
    hsize_t at = 0;
    H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &at, add_one, t);
    H5Gclose(g);
    H5Fclose(f);
    return t->n > 0;
}

static void free_ckpt(tensors *t) {
    for (int i = 0; i < t->n; i++)
        free(t->vals[i]);
}

/* The largest difference of any tensor of a and b relative to that tensor's
 * largest magnitude (0: bit-identical values); 1e30 when they do not match
 * as lists. */
static double ckpt_diff(const char *a, const char *b) {
    tensors ta, tb;
    if (!read_ckpt(a, &ta) || !read_ckpt(b, &tb)) {
        fprintf(stderr, "cannot read %s or %s\n", a, b);
        return 1e30;
    }
    double worst = ta.n == tb.n ? 0 : 1e30;
    for (int i = 0; i < ta.n && i < tb.n; i++) {
        if (strcmp(ta.names[i], tb.names[i]) != 0 || ta.len[i] != tb.len[i]) {
            worst = 1e30;
            continue;
        }
        double mx = 0, d = 0;
        for (long long k = 0; k < ta.len[i]; k++) {
            mx = fmax(mx, fabs(ta.vals[i][k]));
            d = fmax(d, fabs(ta.vals[i][k] - tb.vals[i][k]));
        }
        double r = mx > 0 ? d / mx : d;
        if (r > 1e-5)
            fprintf(stderr, "  %s vs %s: %s differs by %.3g relative\n", a, b, ta.names[i], r);
        worst = fmax(worst, r);
    }
    free_ckpt(&ta);
    free_ckpt(&tb);
    return worst;
}

/* The lines of text that contain `what`, concatenated. */
/* The lines of text that contain what, without their "time" field. */
static char *lines_with(const char *text, const char *what) {
    char *out = calloc(1, strlen(text) + 1);
    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l + 1) : strlen(l);
        char line[4096];
        snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line ? n : sizeof line - 1), l);
        /* Each event ends with its wall-clock "time", which differs between
         * runs: compared without it. */
        char *t = strstr(line, ",\"time\":");
        if (t)
            strcpy(t, "}\n");
        if (strstr(line, what))
            strcat(out, line);
        l += n;
    }
    return out;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#include "train_cli_groups.h"
#include "train_cli_modelfile.h"
#include "train_cli_tokens.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: train_cli ddp|resume|badckpt|preempt|eval|accum|syncbn|zero|sbatch|modelfile|data|tokens|bf16\n");
        return 2;
    }
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/tg_train_cli_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    double t0 = now_s();
    int known = run_group(argv[1]);
    if (!known) {
        fprintf(stderr, "unknown group '%s'\n", argv[1]);
        return 2;
    }
    printf("train_cli %s: %d failed checks (%.1f s)\n", argv[1], failures, now_s() - t0);
    if (failures == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    } else {
        fprintf(stderr, "files kept in %s\n", dir);
    }
    return failures ? 1 : 0;
}
