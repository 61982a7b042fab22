/*
 * launch/suggest.c: "did you mean ...?" for mistyped commands and options.
 */
#include "cli.h"

#include <string.h>

/* Optimal-string-alignment distance (insertions, deletions, substitutions,
 * transpositions of neighbours), or a large number for long strings. */
static int distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63)
        return 1000;
    int d[64][64];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[n][m];
}

const char *tg_cli_nearest(const char *given, const char *const *names, size_t n) {
    const char *best = NULL;
    int best_d = 1000;
    size_t len = strlen(given);
    /* Up to a third of the word wrong (at least 1, at most 3 edits). */
    int limit = len < 6 ? 1 : len < 9 ? 2 : 3;
    for (size_t i = 0; i < n; i++) {
        int d = distance(given, names[i]);
        if (d < best_d) {
            best_d = d;
            best = names[i];
        }
    }
    return best_d <= limit ? best : NULL;
}

int tg_cli_unknown_option(const char *cmd, const char *arg, const char *const *names, size_t n) {
    /* "--epoch=3" is compared as "--epoch". */
    char key[64];
    size_t k = strcspn(arg, "=");
    snprintf(key, sizeof key, "%.*s", (int)(k < sizeof key ? k : sizeof key - 1), arg);
    const char *near = tg_cli_nearest(key, names, n);
    if (near)
        return tg_cli_usage_error(cmd, "unknown option '%s'; did you mean %s?", arg, near);
    return tg_cli_usage_error(cmd, "unknown option '%s'", arg);
}
