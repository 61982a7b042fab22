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
    a->owned = NULL;
    a->text = NULL;
}
