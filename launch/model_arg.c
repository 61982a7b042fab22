/*
 * launch/model_arg.c: what `--model X` names (train, inspect).
 *
 * X is a shipped model when it is one of the shipped names (mlp, cnn,
 * cnn-bn, resnet20, resnet18: their text is compiled into the library, so
 * no file is looked for), else a path to a model file (docs/MODELS.md). A
 * file that happens to be called "mlp" in the current folder is reached as
 * ./mlp. The file is read whole here: a regular file of at most
 * TG_NET_MAX_TEXT bytes.
 */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tapegrad/checkpoint.h"
#include "tapegrad/modelfile.h"
#include "train.h"

static int list_names(char *buf, size_t len) {
    int n = 0;
    const char *const *names = tg_model_builtin_names(&n);
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", names[i]);
    return n;
}

int tg_model_arg_resolve(const char *cmd, const char *label, const char *arg, tg_model_arg *out) {
    memset(out, 0, sizeof *out);
    out->kind = TG_MODEL_COUNT;
    out->name = arg;
    const char *shipped = tg_model_builtin_text(arg);
    if (shipped) {
        out->text = shipped;
        out->shipped = true;
        (void)tg_model_from_name(arg, &out->kind);
        return TG_EXIT_OK;
    }
    char names[256];
    list_names(names, sizeof names);
    struct stat st;
    if (stat(arg, &st) != 0) {
        if (!strchr(arg, '/') && !strchr(arg, '.'))
            return tg_cli_usage_error(cmd,
                                      "%s: expected a shipped model (%s) or a model file "
                                      "(a path such as ./%s.ini), got '%s'",
                                      label, names, arg, arg);
        return tg_cli_usage_error(cmd, "%s: model file %s: %s", label, arg, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return tg_cli_usage_error(cmd, "%s: model file %s is not a regular file", label, arg);
    if (st.st_size > TG_NET_MAX_TEXT)
        return tg_cli_usage_error(cmd,
                                  "%s: model file %s has %lld bytes, more than the %d a model "
                                  "file may have",
                                  label, arg, (long long)st.st_size, TG_NET_MAX_TEXT);
    FILE *f = fopen(arg, "rb");
    if (!f)
        return tg_cli_usage_error(cmd, "%s: model file %s: %s", label, arg, strerror(errno));
    char *text = malloc((size_t)st.st_size + 1);
    size_t n = text ? fread(text, 1, (size_t)st.st_size, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!text || bad || n != (size_t)st.st_size) {
        free(text);
        return tg_cli_usage_error(cmd, "%s: model file %s: %s", label, arg,
                                  text ? "read error" : "out of memory");
    }
    text[n] = '\0';
    if (memchr(text, '\0', n)) {
        free(text);
        return tg_cli_usage_error(cmd, "%s: model file %s holds a NUL byte (not a text file)",
                                  label, arg);
    }
    out->owned = text;
    out->text = text;
    return TG_EXIT_OK;
}

void tg_model_arg_free(tg_model_arg *a) {
    if (!a)
        return;
    free(a->owned);
    free(a->owned_name);
    a->owned = a->owned_name = NULL;
    a->text = NULL;
}

/* The value of "model = X" in a checkpoint's configuration (heap). */
static char *config_model(const char *config) {
    for (const char *l = config; l && *l;) {
        size_t n = strcspn(l, "\n");
        if (n > 8 && strncmp(l, "model = ", 8) == 0)
            return strndup(l + 8, n - 8);
        l += n + (l[n] == '\n');
    }
    return NULL;
}

int tg_model_arg_from_ckpt(const char *cmd, const char *resume, const char *dir,
                           tg_model_arg *out) {
    memset(out, 0, sizeof *out);
    out->kind = TG_MODEL_COUNT;
    tg_ctx *ctx;
    if (tg_ctx_new(NULL, &ctx) != TG_OK) {
        fprintf(stderr, "tapegrad %s: %s\n", cmd, tg_last_init_error());
        return TG_EXIT_RUNTIME;
    }
    char path[4096], warn[1024];
    int code = TG_EXIT_OK;
    tg_ckpt_meta m = {0};
    if (strcmp(resume, "auto") != 0)
        snprintf(path, sizeof path, "%s", resume);
    else if (!dir || tg_ckpt_find(ctx, dir, path, sizeof path, warn, sizeof warn) != TG_OK)
        path[0] = '\0'; /* nothing to resume: the run starts afresh */
    if (path[0] && tg_ckpt_read_meta(ctx, path, &m) != TG_OK) {
        fprintf(stderr, "tapegrad %s: --resume: %s\n", cmd, tg_ctx_error(ctx));
        code = TG_EXIT_DATA;
    } else if (path[0] && m.model_text) {
        out->owned = strdup(m.model_text);
        out->owned_name = config_model(m.config);
        if (!out->owned_name)
            out->owned_name = strdup(m.model);
        if (!out->owned || !out->owned_name) {
            tg_model_arg_free(out);
            fprintf(stderr, "tapegrad %s: out of memory\n", cmd);
            code = TG_EXIT_RUNTIME;
        } else {
            out->text = out->owned;
            out->name = out->owned_name;
            const char *builtin = tg_model_builtin_text(out->name);
            out->shipped = builtin && strcmp(builtin, out->text) == 0;
            if (tg_model_from_name(out->name, &out->kind) && !out->shipped)
                out->kind = TG_MODEL_COUNT;
        }
    }
    tg_ckpt_meta_free(&m);
    tg_ctx_free(ctx);
    return code;
}
