/*
 * launch/opts.c: option parsing shared by the subcommands.
 *
 * Every bad value is reported with the command, the flag and the value as
 * given, so that a batch script's log says what to fix.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
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
