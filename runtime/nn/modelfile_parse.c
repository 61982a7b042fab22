/*
 * runtime/nn/modelfile_parse.c: a model file's text to its sections and keys.
 *
 * libinih does the parsing. It reports a key with the name of its section
 * but says nothing of a section without keys ("[relu]") and cannot tell two
 * sections of one name apart, so the lines reach it through a reader that
 * notes each section header as it passes: the handler then files every key
 * under the last header read, and a layer without keys is still a layer.
 * The reader also strips each line's leading blanks (so no line continues
 * the previous value, which libinih would otherwise allow) and counts lines,
 * so every message names the line.
 */
#include "modelfile_internal.h"

#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parse_state {
    tg_ctx *ctx;
    tg__mf_file *f;
    const char *text;
    size_t pos, len;
    int line;
    bool failed;
    int cap;
} parse_state;

static int fail(parse_state *st, tg_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(parse_state *st, tg_status s, const char *fmt, ...) {
    if (st->failed)
        return 0;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tg__fail(st->ctx, s, "%s:%d: %s", st->f->path, st->line, msg);
    st->failed = true;
    return 0;
}

static bool blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

/* A "[type]" line opens a section. */
static void new_section(parse_state *st, const char *p, size_t n) {
    const char *close = memchr(p, ']', n);
    if (!close) {
        fail(st, TG_ERR_INVALID, "section header without ']'");
        return;
    }
    const char *a = p + 1, *b = close;
    while (a < b && blank(*a))
        a++;
    while (b > a && blank(b[-1]))
        b--;
    tg__mf_file *f = st->f;
    if (b == a) {
        fail(st, TG_ERR_INVALID, "empty layer type '[]'");
        return;
    }
    if ((size_t)(b - a) >= sizeof f->s[0].type) {
        fail(st, TG_ERR_INVALID, "layer type '%.*s...' is too long (at most %zu characters)", 31, a,
             sizeof f->s[0].type - 1);
        return;
    }
    if (f->n >= TG_NET_MAX_LAYERS) {
        fail(st, TG_ERR_INVALID, "more than %d layers", TG_NET_MAX_LAYERS);
        return;
    }
    if (f->n == st->cap) {
        int cap = st->cap ? 2 * st->cap : 16;
        tg__mf_section *s = realloc(f->s, (size_t)cap * sizeof *s);
        if (!s) {
            fail(st, TG_ERR_NOMEM, "out of memory");
            return;
        }
        f->s = s;
        st->cap = cap;
    }
    tg__mf_section *s = &f->s[f->n++];
    memset(s, 0, sizeof *s);
    memcpy(s->type, a, (size_t)(b - a));
    s->line = st->line;
}

/* inih's fgets: one line per call, leading blanks stripped, headers noted. */
static char *reader(char *str, int num, void *stream) {
    parse_state *st = stream;
    if (st->failed || st->pos >= st->len)
        return NULL;
    const char *p = st->text + st->pos;
    const char *nl = memchr(p, '\n', st->len - st->pos);
    size_t n = nl ? (size_t)(nl - p) + 1 : st->len - st->pos;
    st->pos += n;
    st->line++;
    while (n > 0 && blank(*p)) {
        p++;
        n--;
    }
    if (num < 3 || n > (size_t)num - 2) {
        fail(st, TG_ERR_INVALID, "line of %zu characters is longer than the %d this build reads", n,
             num - 3);
        return NULL;
    }
    if (n > 0 && *p == '[')
        new_section(st, p, n);
    memcpy(str, p, n);
    str[n] = '\0';
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
    parse_state *st = user;
    if (st->failed)
        return 0;
    (void)section;
    tg__mf_file *f = st->f;
    if (f->n == 0)
        return fail(st, TG_ERR_INVALID, "key '%s' before the first [layer] section", name);
    tg__mf_section *s = &f->s[f->n - 1];
    for (int i = 0; i < s->nkeys; i++)
        if (strcmp(s->keys[i].key, name) == 0)
            return fail(st, TG_ERR_INVALID,
                        "layer [%s] of line %d: key '%s' is already set on line %d", s->type,
                        s->line, name, s->keys[i].line);
    if (s->nkeys >= TG_NET_MAX_KEYS)
        return fail(st, TG_ERR_INVALID, "layer [%s] of line %d: more than %d keys", s->type,
                    s->line, TG_NET_MAX_KEYS);
    tg__mf_key *k = &s->keys[s->nkeys];
    k->key = strdup(name);
    k->value = strdup(value);
    k->line = st->line;
    k->used = false;
    if (!k->key || !k->value) {
        free(k->key);
        free(k->value);
        return fail(st, TG_ERR_NOMEM, "out of memory");
    }
    s->nkeys++;
    return 1;
}

tg_status tg__mf_parse(tg_ctx *ctx, const char *text, size_t len, const char *path,
                       tg__mf_file *f) {
    memset(f, 0, sizeof *f);
    f->path = path ? path : "<text>";
    parse_state st = {.ctx = ctx, .f = f, .text = text, .len = len};
    if (!text)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: no text", f->path);
    if (len > TG_NET_MAX_TEXT)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "%s: %zu bytes, more than the %d a model file may have", f->path, len,
                        TG_NET_MAX_TEXT);
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        int line = 1;
        for (const char *p = text; p < nul; p++)
            line += *p == '\n';
        return tg__fail(ctx, TG_ERR_INVALID, "%s:%d: a NUL byte (not a text file)", f->path, line);
    }
    int r = ini_parse_stream(reader, &st, handler, &st);
    if (st.failed)
        return ctx->status;
    if (r > 0) {
        st.line = r;
        fail(&st, TG_ERR_INVALID, "expected '[layer]', 'key = value' or a comment");
        return ctx->status;
    }
    if (r < 0)
        return tg__fail(ctx, TG_ERR_NOMEM, "%s: the INI parser failed (%d)", f->path, r);
    if (f->n == 0)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: no layers (expected [layer] sections)", f->path);
    return TG_OK;
}

void tg__mf_file_free(tg__mf_file *f) {
    for (int i = 0; f->s && i < f->n; i++)
        for (int k = 0; k < f->s[i].nkeys; k++) {
            free(f->s[i].keys[k].key);
            free(f->s[i].keys[k].value);
        }
    free(f->s);
    f->s = NULL;
    f->n = 0;
}

tg_status tg_net_input_dtype(tg_ctx *ctx, const char *text, size_t len, tg_dtype *dt) {
    tg__mf_file f;
    tg_status s = tg__mf_parse(ctx, text, len, NULL, &f);
    if (s == TG_OK) {
        /* [input] may only come first (tg_net_build checks the rest). */
        const tg__mf_key *k =
            !strcmp(f.s[0].type, "input") ? tg__mf_find_key(&f.s[0], "dtype") : NULL;
        *dt = k && !strcmp(k->value, "i64") ? TG_I64 : TG_F32;
    }
    tg__mf_file_free(&f);
    return s;
}
