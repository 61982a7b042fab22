/*
 * launch/cmd_trace.c: `tapegrad trace merge rank*.json -o all.json`.
 *
 * Each rank of `tapegrad train --trace FILE.json` writes its own
 * FILE.rank<r>.json, with times on its own monotonic clock and the offset
 * of that clock from rank 0's (measured over MPI at start-up) in
 * "otherData". The merge moves every event onto rank 0's clock and writes
 * one file in which Perfetto or chrome://tracing shows the ranks one above
 * the other (pid = rank).
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trace_merge.h"

/* A trace of 1 GiB is far beyond the 65536 spans a rank keeps. */
#define MAX_TRACE_BYTES (1L << 30)

int tg_trace_merge_add(cJSON *events, const char *text, size_t len, const char *name,
                       double *offset_us, char *err, size_t errlen) {
    *offset_us = 0;
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *evs = root ? cJSON_GetObjectItemCaseSensitive(root, "traceEvents") : NULL;
    if (!cJSON_IsObject(root) || !cJSON_IsArray(evs)) {
        snprintf(err, errlen,
                 "%s: not a Chrome trace (expected a JSON object with a \"traceEvents\" array)",
                 name);
        cJSON_Delete(root);
        return -1;
    }
    const cJSON *other = cJSON_GetObjectItemCaseSensitive(root, "otherData");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(other, "clock_offset_us");
    if (cJSON_IsNumber(off) && isfinite(off->valuedouble))
        *offset_us = off->valuedouble;
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, evs) {
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(e, "ts");
        if (!cJSON_IsObject(e) || (ts && !cJSON_IsNumber(ts))) {
            snprintf(err, errlen, "%s: traceEvents[%d] is not an event (an object with a "
                     "numeric \"ts\")", name, i);
            cJSON_Delete(root);
            return -1;
        }
        cJSON *copy = cJSON_Duplicate(e, 1);
        cJSON *cts = copy ? cJSON_GetObjectItemCaseSensitive(copy, "ts") : NULL;
        if (cts)
            cJSON_SetNumberValue(cts, cts->valuedouble - *offset_us);
        if (!copy || !cJSON_AddItemToArray(events, copy)) {
            cJSON_Delete(copy);
            snprintf(err, errlen, "%s: out of memory", name);
            cJSON_Delete(root);
            return -1;
        }
        i++;
    }
    cJSON_Delete(root);
    return 0;
}

static void trace_usage(FILE *f) {
    fprintf(f, "usage: tapegrad trace merge RANK.json... -o OUT.json\n"
               "\n"
               "Merges the per-rank traces of 'tapegrad train --trace FILE.json' (the files\n"
               "FILE.rank<r>.json) into one, with every rank's events moved onto rank 0's\n"
               "clock by the offset measured at start-up, for Perfetto (ui.perfetto.dev) or\n"
               "chrome://tracing: one process per rank, compute and comm tracks.\n"
               "\n"
               "options:\n"
               "  -o, --out FILE   the merged trace to write (required)\n"
               "  -h, --help       print this help and exit\n"
               "\n"
               "exit codes: 0 written, 1 writing failed, 2 usage error, 3 an input is\n"
               "missing or not a trace.\n");
}

static int merge(int n, char **in, const char *out) {
    cJSON *root = cJSON_CreateObject(), *events = cJSON_CreateArray();
    if (!root || !events) {
        cJSON_Delete(root);
        cJSON_Delete(events);
        return TG_EXIT_RUNTIME;
    }
    cJSON_AddStringToObject(root, "displayTimeUnit", "ms");
    cJSON_AddItemToObject(root, "traceEvents", events);
    int code = TG_EXIT_OK;
    for (int i = 0; i < n && code == TG_EXIT_OK; i++) {
        size_t len;
        char *text = tg_cli_read_file("trace merge", in[i], MAX_TRACE_BYTES, &len), err[1024];
        double off;
        if (!text) {
            code = TG_EXIT_DATA;
        } else if (tg_trace_merge_add(events, text, len, in[i], &off, err, sizeof err) != 0) {
            fprintf(stderr, "tapegrad trace merge: %s\n", err);
            code = TG_EXIT_DATA;
        } else {
            printf("%s: clock offset %+.1f us\n", in[i], off);
        }
        free(text);
    }
    char *s = code == TG_EXIT_OK ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (code != TG_EXIT_OK)
        return code;
    FILE *f = s ? fopen(out, "w") : NULL;
    if (!f || fputs(s, f) < 0 || fputc('\n', f) == EOF || fclose(f) != 0) {
        fprintf(stderr, "tapegrad trace merge: cannot write %s: %s\n", out,
                s ? strerror(errno) : "out of memory");
        cJSON_free(s);
        return TG_EXIT_RUNTIME;
    }
    cJSON_free(s);
    printf("wrote %s (%d ranks)\n", out, n);
    return TG_EXIT_OK;
}

int tg_cmd_trace(int argc, char **argv) {
    if (argc < 2 || tg_cli_is_help(argv[1])) {
        trace_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? TG_EXIT_USAGE : TG_EXIT_OK;
    }
    if (strcmp(argv[1], "merge") != 0)
        return tg_cli_usage_error("trace", "unknown subcommand '%s' (expected merge)", argv[1]);
    const char *out = NULL;
    char **in = calloc((size_t)argc, sizeof *in);
    if (!in)
        return TG_EXIT_RUNTIME;
    int n = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (tg_cli_is_help(a)) {
            trace_usage(stdout);
            free(in);
            return TG_EXIT_OK;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            if (i + 1 >= argc) {
                free(in);
                return tg_cli_usage_error("trace", "%s needs a file name", a);
            }
            out = argv[++i];
        } else if (a[0] == '-') {
            free(in);
            return tg_cli_usage_error("trace", "unknown option '%s'", a);
        } else {
            in[n++] = argv[i];
        }
    }
    int code;
    if (!n || !out || !*out)
        code = tg_cli_usage_error("trace", "%s", !n ? "no trace files given"
                                                    : "-o OUT.json is required");
    else
        code = merge(n, in, out);
    free(in);
    return code;
}
