/*
 * launch/cmd_inspect_model.c: `tapegrad inspect FILE.ini` (or a shipped
 * model's name): the model's summary table for a sample shape, as
 * torchinfo and Keras print it: each layer's name, type, output shape and
 * parameter count, then the totals. Nothing is allocated for the
 * parameters: the file is parsed and its shapes checked only.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "tapegrad/modelfile.h"
#include "train.h"

/* "3,32,32" (also "3x32x32") into shape; returns the dims or -1. */
static int parse_shape(const char *s, int64_t *shape) {
    char buf[256];
    if (strlen(s) >= sizeof buf)
        return -1;
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",x", &save); t; t = strtok_r(NULL, ",x", &save)) {
        char *end;
        long long v = strtoll(t, &end, 10);
        if (end == t || *end || v < 1 || v > (1LL << 32) || n >= TG_MAX_DIMS - 1)
            return -1;
        shape[n++] = v;
    }
    return n ? n : -1;
}

/* The value of `key = ...` in the file's [input] section, without blanks
 * and comments, when it has one: a plain scan, the parser then checks it. */
static bool input_key(const char *text, const char *key, char *v, size_t len) {
    const char *p = strstr(text, "[input]");
    if (!p)
        return false;
    size_t kl = strlen(key);
    for (p = strchr(p, '\n'); p && p[1] && p[1] != '['; p = strchr(p + 1, '\n')) {
        const char *l = p + 1;
        while (*l == ' ' || *l == '\t')
            l++;
        if (strncmp(l, key, kl) != 0)
            continue;
        const char *eq = strchr(l, '=');
        const char *nl = strchr(l, '\n');
        if (!eq || (nl && eq > nl))
            return false;
        size_t n = nl ? (size_t)(nl - eq - 1) : strlen(eq + 1);
        if (n >= len)
            return false;
        memcpy(v, eq + 1, n);
        v[n] = '\0';
        char *c = strpbrk(v, ";#\r");
        if (c)
            *c = '\0';
        for (char *q = v; *q; q++)
            if (*q == ' ' || *q == '\t')
                memmove(q, q + 1, strlen(q)), q--;
        return true;
    }
    return false;
}

static int shape_in_file(const char *text, int64_t *shape) {
    char v[256];
    return input_key(text, "shape", v, sizeof v) ? parse_shape(v, shape) : -1;
}

int tg_inspect_model(const char *arg, const char *shape_arg, const char *classes_arg) {
    const char *cmd = "inspect";
    tg_model_arg ma;
    int code = tg_model_arg_resolve(cmd, "model", arg, &ma);
    if (code)
        return code;
    int64_t shape[TG_MAX_DIMS], classes = 10;
    int nd = shape_arg ? parse_shape(shape_arg, shape) : shape_in_file(ma.text, shape);
    if (shape_arg && nd < 0) {
        tg_model_arg_free(&ma);
        return tg_cli_usage_error(cmd, "--input-shape: expected sizes such as 3,32,32, got '%s'",
                                  shape_arg);
    }
    char dt[16];
    bool tokens = input_key(ma.text, "dtype", dt, sizeof dt) && !strcmp(dt, "i64");
    if (nd < 0 && tokens) {
        /* A language model (the gpt): a window of 128 byte-level tokens. */
        shape[0] = 128;
        nd = 1;
        if (!classes_arg)
            classes = 256;
        printf("input (128) tokens assumed: give --input-shape T (the block size) or `shape` "
               "in [input]\n");
    } else if (nd < 0) {
        shape[0] = 1, shape[1] = shape[2] = 28;
        nd = 3;
        printf("input shape (1, 28, 28) assumed: give --input-shape C,H,W or `shape` in "
               "[input]\n");
    }
    if (classes_arg && tg_cli_parse_i64(cmd, "--classes", classes_arg, 2, 1 << 24, &classes)) {
        tg_model_arg_free(&ma);
        return TG_EXIT_USAGE;
    }
    tg_ctx *ctx;
    if (tg_ctx_new(NULL, &ctx) != TG_OK) {
        fprintf(stderr, "tapegrad inspect: %s\n", tg_last_init_error());
        tg_model_arg_free(&ma);
        return TG_EXIT_RUNTIME;
    }
    tg_net_options o = {
        .path = arg, .in_ndim = nd, .in_shape = shape, .classes = classes, .check_only = true};
    tg_net *net;
    if (tg_net_build(ctx, ma.text, strlen(ma.text), &o, NULL, &net) != TG_OK) {
        fprintf(stderr, "tapegrad inspect: %s\n", tg_ctx_error(ctx));
        code = TG_EXIT_DATA;
    } else {
        size_t need = tg_net_summary(net, NULL, 0);
        char *buf = malloc(need);
        if (buf) {
            tg_net_summary(net, buf, need);
            printf("%s: model file, input (N", arg);
            for (int d = 0; d < nd; d++)
                printf(", %lld", (long long)shape[d]);
            printf("), %lld classes\n%s", (long long)classes, buf);
        }
        free(buf);
        code = buf ? TG_EXIT_OK : TG_EXIT_RUNTIME;
    }
    tg_ctx_free(ctx);
    tg_model_arg_free(&ma);
    return code;
}
