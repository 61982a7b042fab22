/*
 * launch/opts.c: option parsing shared by the subcommands.
 *
 * Every bad value is reported with the command, the flag and the value as
 * given, so that a batch script's log says what to fix.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

int tg_cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "tapegrad %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun 'tapegrad %s --help' for usage.\n", cmd);
    return TG_EXIT_USAGE;
}

int tg_cli_is_help(const char *arg) { return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0; }

int tg_cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name,
               const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        tg_cli_usage_error(cmd, "%s needs a value", name);
        return -1;
    }
    *i += 1;
    *value = argv[*i];
    return 1;
}

int tg_cli_parse_i64(const char *cmd, const char *flag, const char *v, int64_t lo, int64_t hi,
                     int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (v[0] == '\0' || *end != '\0' || errno == ERANGE || x < lo || x > hi) {
        if (hi == INT64_MAX)
            tg_cli_usage_error(cmd, "%s: expected an integer >= %lld, got '%s'", flag,
                               (long long)lo, v);
        else
            tg_cli_usage_error(cmd, "%s: expected an integer in [%lld, %lld], got '%s'", flag,
                               (long long)lo, (long long)hi, v);
        return -1;
    }
    *out = (int64_t)x;
    return 0;
}

int tg_cli_parse_f64(const char *cmd, const char *flag, const char *v, double lo, double hi,
                     double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (v[0] == '\0' || *end != '\0' || errno == ERANGE || !isfinite(x) || x < lo || x > hi) {
        tg_cli_usage_error(cmd, "%s: expected a number in [%g, %g], got '%s'", flag, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

int tg_cli_rank_threads(int local_size, char *desc, size_t n) {
    const char *omp = getenv("OMP_NUM_THREADS");
    if (desc && n)
        snprintf(desc, n, "the OpenMP default");
    if ((omp && *omp) || local_size <= 1)
        return 0;
    cpu_set_t set;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (sched_getaffinity(0, sizeof set, &set) != 0 || online < 1)
        return 0;
    const int mine = CPU_COUNT(&set);
    if (mine < online)
        return 0; /* bound by the launcher: its choice */
    int t = mine / local_size;
    t = t < 1 ? 1 : t;
    if (desc && n)
        snprintf(desc, n, "%d (%d ranks share this node's %d CPUs)", t, local_size, mine);
    return t;
}

/* The CPUs this process may run on (0: unknown). */
static int allowed_cpus(void) {
    cpu_set_t set;
    return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
}

int tg_cli_cap_threads_quiet(int threads) {
    const int mine = allowed_cpus();
    return threads > 0 && mine >= 1 && threads > mine ? mine : threads;
}

int tg_cli_cap_threads(const char *cmd, const char *flag, int threads) {
    const int mine = allowed_cpus();
    if (threads <= 0 || mine < 1 || threads <= mine)
        return threads;
    fprintf(stderr,
            "tapegrad %s: warning: %s %d: this process may run on %d CPU%s; using %d threads "
            "(more would only compete for the same CPUs and each needs its own buffers)\n",
            cmd, flag, threads, mine, mine == 1 ? "" : "s", mine);
    return mine;
}

int tg_cli_check_launch(const char *cmd, int world_size) {
    const char *ws = getenv("WORLD_SIZE");
    if (world_size != 1 || !ws || !*ws)
        return TG_EXIT_OK;
    char *end;
    errno = 0;
    long long n = strtoll(ws, &end, 10);
    if (*end != '\0' || errno == ERANGE || n <= 1)
        return TG_EXIT_OK;
    const char *rank = getenv("RANK");
    fprintf(stderr,
            "tapegrad %s: WORLD_SIZE=%lld (RANK=%s) is set, but MPI started this process alone "
            "(a world of 1): started by torchrun or another launcher that sets these variables, "
            "every process would train its own copy of the model. tapegrad ranks find each "
            "other through MPI: launch them with 'mpirun -np %lld tapegrad %s ...' or "
            "'srun --mpi=pmix -n %lld tapegrad %s ...' (docs/TRAINING.md), or unset WORLD_SIZE "
            "to train alone.\n",
            cmd, n, rank && *rank ? rank : "unset", n, cmd, n, cmd);
    return TG_EXIT_USAGE;
}

int tg_cli_check_blas_room(const char *cmd, int threads) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return TG_EXIT_OK;
    /* Without a count of ours, the pools' own: OMP_NUM_THREADS or the
     * CPUs, OPENBLAS_NUM_THREADS. */
    int n = threads;
    if (n <= 0) {
        n = omp_get_max_threads();
        n = openblas_get_num_threads() > n ? openblas_get_num_threads() : n;
    }
    n = n < 1 ? 1 : n;
    /* One buffer per BLAS thread, one per OpenMP thread that calls BLAS
     * (the kernels do, from parallel loops), and the calling thread's. */
    const size_t need = (size_t)(2 * n + 1) * TG_CLI_BLAS_BUFFER_MIB << 20;
    void *p = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p != MAP_FAILED) {
        munmap(p, need);
        return TG_EXIT_OK;
    }
    fprintf(stderr,
            "tapegrad %s: the address-space limit (ulimit -v %llu KiB) leaves no room for the "
            "buffers of %d BLAS thread%s (OpenBLAS takes %d MiB per buffer, %zu MiB in all, "
            "and would wait for them forever): raise the limit%s\n",
            cmd, (unsigned long long)(rl.rlim_cur >> 10), n, n == 1 ? "" : "s",
            TG_CLI_BLAS_BUFFER_MIB, need >> 20, n > 1 ? " or use fewer --threads" : "");
    return TG_EXIT_RUNTIME;
}

int tg_cli_blas_warmup(void) {
    enum { N = 256 };
    const int nt = omp_get_max_threads();
    float *m = calloc((size_t)(2 + nt) * N * N, sizeof *m);
    if (!m)
        return -1;
    /* The kernels call BLAS from every OpenMP thread at once (one buffer
     * each) and from the main thread alone (OpenBLAS's own threads). */
#pragma omp parallel num_threads(nt)
    {
#pragma omp barrier
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, m, N, m + N * N, N,
                    0.0f, m + (size_t)(2 + omp_get_thread_num()) * N * N, N);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, m, N, m + N * N, N, 0.0f,
                m + 2 * N * N, N);
    free(m);
    return 0;
}

char *tg_cli_read_file(const char *cmd, const char *path, long max, size_t *len) {
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > max) {
        fprintf(stderr, "tapegrad %s: cannot read %s: %s\n", cmd, path,
                !f ? strerror(errno)
                   : !S_ISREG(st.st_mode) ? "not a regular file"
                                          : "larger than such a file can be");
        if (f)
            fclose(f);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    bool bad = !buf || ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "tapegrad %s: error reading %s\n", cmd, path);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}
