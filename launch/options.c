/*
 * launch/options.c: reading, checking, describing and printing options from
 * a command's option table (launch/options.h).
 */
#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int tg_opt_find(const tg_opt *rows, int n, const char *name) {
    for (int r = 0; r < n; r++)
        if (strcmp(rows[r].name, name) == 0)
            return r;
    return -1;
}

bool tg_opt_given(const tg_opt_set *set, const char *name) {
    int r = tg_opt_find(set->rows, set->n, name);
    return r >= 0 && set->val[r] != NULL;
}

void tg_opt_set_free(tg_opt_set *set) { tg_cli_config_free(&set->file); }

/* Matches argv[*i] against row o: "--name VALUE", "--name=VALUE", or for a
 * switch "--name" (and "-a" for an alias). Returns 1 (setting *v), 0 for
 * another option, -1 after a usage error. */
static int match(const char *cmd, int argc, char **argv, int *i, const tg_opt *o,
                 const char **v) {
    const char *a = argv[*i];
    if (o->type == TG_OPT_SWITCH) {
        bool hit = (a[0] == '-' && a[1] == '-' && strcmp(a + 2, o->name) == 0) ||
                   (o->alias && a[0] == '-' && a[1] == o->alias && a[2] == '\0');
        if (hit)
            *v = "true";
        return hit;
    }
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", o->name);
    return tg_cli_opt(cmd, argc, argv, i, flag, v);
}

/* The names of a table as flags, for suggestions. */
static int unknown(const tg_opt_set *set, const char *arg) {
    static char flags[TG_OPT_MAX][64];
    const char *names[TG_OPT_MAX];
    for (int r = 0; r < set->n; r++) {
        snprintf(flags[r], sizeof flags[r], "--%s", set->rows[r].name);
        names[r] = flags[r];
    }
    return tg_cli_unknown_option(set->cmd, arg, names, (size_t)set->n);
}

static int from_file(tg_opt_set *set) {
    for (int k = 0; k < set->file.n; k++) {
        const tg_cli_setting *s = &set->file.s[k];
        int r = tg_opt_find(set->rows, set->n, s->key);
        if (r < 0 || !(set->rows[r].flags & TG_OPT_INI)) {
            char flag[80];
            snprintf(flag, sizeof flag, "--%s", s->key);
            const char *names[TG_OPT_MAX];
            size_t nn = 0;
            for (int j = 0; j < set->n; j++)
                if (set->rows[j].flags & TG_OPT_INI)
                    names[nn++] = set->rows[j].name;
            const char *near = r < 0 ? tg_cli_nearest(s->key, names, nn) : NULL;
            char hint[96] = "";
            if (near)
                snprintf(hint, sizeof hint, "; did you mean '%s'?", near);
            return tg_cli_usage_error(
                set->cmd, "%s:%d: %s key '%s'%s (keys are the options of 'tapegrad %s --help' "
                          "without the dashes%s)",
                set->file.path, s->line, r < 0 ? "unknown" : "command-line-only", s->key, hint,
                set->cmd, r < 0 ? "" : ", except config, print-config and help");
        }
        set->val[r] = s->value;
        set->line[r] = s->line;
    }
    return 0;
}

int tg_opt_read(tg_opt_set *set, const char *cmd, const tg_opt *rows, int n, int argc,
                char **argv, void (*usage)(FILE *)) {
    memset(set, 0, sizeof *set);
    set->cmd = cmd;
    set->rows = rows;
    set->n = n < TG_OPT_MAX ? n : TG_OPT_MAX;
    /* First --help and the configuration file, so that the command line
     * overrides the file wherever --config stands. */
    for (int i = 1; i < argc; i++) {
        if (tg_cli_is_help(argv[i])) {
            usage(stdout);
            set->help = true;
            return 0;
        }
        if (tg_cli_opt(cmd, argc, argv, &i, "--config", &set->config) < 0)
            return TG_EXIT_USAGE;
    }
    if (set->config) {
        int code = tg_cli_config_read(cmd, set->config, &set->file);
        if (code || (code = from_file(set)) != 0)
            return code;
    }
    for (int i = 1; i < argc; i++) {
        int m = 0;
        for (int r = 0; r < set->n && m == 0; r++) {
            const char *v = NULL;
            m = match(cmd, argc, argv, &i, &rows[r], &v);
            if (m > 0 && rows[r].off != TG_OPT_NOWHERE) {
                set->val[r] = v;
                set->line[r] = 0;
            }
        }
        if (m < 0)
            return TG_EXIT_USAGE;
        if (m == 0)
            return unknown(set, argv[i]);
    }
    return 0;
}

/* "--lr", or "run.ini:3: key 'lr'" for a value from the file. */
const char *tg_opt_label(const tg_opt_set *set, int r, char *buf, size_t len) {
    if (set->line[r] > 0)
        snprintf(buf, len, "%s:%d: key '%s'", set->file.path, set->line[r], set->rows[r].name);
    else
        snprintf(buf, len, "--%s", set->rows[r].name);
    return buf;
}

static void *at(void *base, const tg_opt *o) { return (char *)base + o->off; }
static const void *cat(const void *base, const tg_opt *o) { return (const char *)base + o->off; }

static int parse_choice(const tg_opt_set *set, int r, const char *lb, const char *v, int *out) {
    const tg_opt *o = &set->rows[r];
    char list[256] = "";
    int k = 0;
    for (; o->choices[k].name; k++)
        if (strcmp(o->choices[k].name, v) == 0) {
            *out = o->choices[k].value;
            return 0;
        }
    /* "expected mlp, cnn or cnn-bn" */
    for (int j = 0; j < k; j++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", j == 0 ? "" : j == k - 1 ? " or " : ", ",
                 o->choices[j].name);
    }
    return tg_cli_usage_error(set->cmd, "%s: expected %s, got '%s'", lb, list, v);
}

int tg_opt_apply_row(const tg_opt_set *set, int r, void *base) {
    const tg_opt *o = &set->rows[r];
    const char *v = set->val[r];
    if (!v || o->off == TG_OPT_NOWHERE)
        return 0;
    char lb[4200];
    tg_opt_label(set, r, lb, sizeof lb);
    int64_t i;
    double d;
    switch (o->type) {
    case TG_OPT_STR:
        if (!v[0])
            return tg_cli_usage_error(set->cmd, "%s: empty value", lb);
        *(const char **)at(base, o) = v;
        return 0;
    case TG_OPT_I64:
    case TG_OPT_INT:
    case TG_OPT_U64:
        if (tg_cli_parse_i64(set->cmd, lb, v, (int64_t)o->lo,
                             o->hi >= 9.2e18 ? INT64_MAX : (int64_t)o->hi, &i))
            return TG_EXIT_USAGE;
        if (o->type == TG_OPT_I64)
            *(int64_t *)at(base, o) = i;
        else if (o->type == TG_OPT_INT)
            *(int *)at(base, o) = (int)i;
        else
            *(uint64_t *)at(base, o) = (uint64_t)i;
        return 0;
    case TG_OPT_F64:
        if (tg_cli_parse_f64(set->cmd, lb, v, o->lo, o->hi, &d))
            return TG_EXIT_USAGE;
        *(double *)at(base, o) = d;
        return 0;
    case TG_OPT_SWITCH:
        if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
            *(bool *)at(base, o) = true;
        else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
            *(bool *)at(base, o) = false;
        else
            return tg_cli_usage_error(set->cmd, "%s: expected true or false, got '%s'", lb, v);
        return 0;
    case TG_OPT_CHOICE:
        return parse_choice(set, r, lb, v, (int *)at(base, o)) ? TG_EXIT_USAGE : 0;
    }
    return 0;
}

int tg_opt_apply(const tg_opt_set *set, void *base) {
    for (int r = 0; r < set->n; r++) {
        if (set->rows[r].flags & TG_OPT_EARLY)
            continue;
        int code = tg_opt_apply_row(set, r, base);
        if (code)
            return code;
    }
    return 0;
}

/* ---- values as text ---- */

/* The shortest of %.15g and %.17g that reads back as the same double. */
static void fmt_double(double d, char *buf, size_t len) {
    snprintf(buf, len, "%.15g", d);
    if (strtod(buf, NULL) != d)
        snprintf(buf, len, "%.17g", d);
}

/* Whether row o's value in base reads as "not set" (0 or NULL, for a row
 * that has an `unset` meaning). */
static bool is_unset(const tg_opt *o, const void *base) {
    if (!o->unset || o->off == TG_OPT_NOWHERE)
        return false;
    const void *p = cat(base, o);
    switch (o->type) {
    case TG_OPT_STR:
        return *(const char *const *)p == NULL;
    case TG_OPT_I64:
        return *(const int64_t *)p == 0;
    case TG_OPT_INT:
    case TG_OPT_CHOICE:
        return *(const int *)p == 0;
    case TG_OPT_U64:
        return *(const uint64_t *)p == 0;
    case TG_OPT_F64:
        return *(const double *)p == 0;
    case TG_OPT_SWITCH:
        return !*(const bool *)p;
    }
    return false;
}

static tg_cfg_field field(const tg_opt *o, const void *base) {
    tg_cfg_field f = {.kind = TG_CFG_NULL};
    snprintf(f.key, sizeof f.key, "%s", o->name);
    for (char *p = f.key; *p; p++)
        if (*p == '-')
            *p = '_';
    if (o->off == TG_OPT_NOWHERE || is_unset(o, base))
        return f;
    const void *p = cat(base, o);
    switch (o->type) {
    case TG_OPT_STR:
        f.kind = *(const char *const *)p ? TG_CFG_STR : TG_CFG_NULL;
        f.s = *(const char *const *)p;
        break;
    case TG_OPT_I64:
        f.kind = TG_CFG_INT;
        f.i = *(const int64_t *)p;
        break;
    case TG_OPT_INT:
        f.kind = TG_CFG_INT;
        f.i = *(const int *)p;
        break;
    case TG_OPT_U64:
        f.kind = TG_CFG_U64;
        f.u = *(const uint64_t *)p;
        break;
    case TG_OPT_F64:
        f.kind = TG_CFG_NUM;
        f.d = *(const double *)p;
        break;
    case TG_OPT_SWITCH:
        f.kind = TG_CFG_BOOL;
        f.i = *(const bool *)p;
        break;
    case TG_OPT_CHOICE:
        f.kind = TG_CFG_STR;
        f.s = "?";
        for (int k = 0; o->choices[k].name; k++)
            if (o->choices[k].value == *(const int *)p)
                f.s = o->choices[k].name;
        break;
    }
    return f;
}

/* A field's value as text (unset: empty). */
static const char *field_text(const tg_cfg_field *f, char *buf, size_t len) {
    switch (f->kind) {
    case TG_CFG_STR:
        return f->s;
    case TG_CFG_INT:
        snprintf(buf, len, "%lld", (long long)f->i);
        return buf;
    case TG_CFG_U64:
        snprintf(buf, len, "%llu", (unsigned long long)f->u);
        return buf;
    case TG_CFG_NUM:
        fmt_double(f->d, buf, len);
        return buf;
    case TG_CFG_BOOL:
        return f->i ? "true" : "false";
    case TG_CFG_NULL:
        break;
    }
    return "";
}

int tg_opt_fields(const tg_opt *rows, int n, const void *base, unsigned mask, tg_cfg_field *f,
                  int max) {
    int k = 0;
    for (int r = 0; r < n; r++) {
        if ((rows[r].flags & mask) != mask || rows[r].off == TG_OPT_NOWHERE)
            continue;
        if (k < max)
            f[k] = field(&rows[r], base);
        k++;
    }
    return k;
}

char *tg_opt_text(const tg_opt *rows, int n, const void *base, unsigned mask, char *buf,
                  size_t len) {
    size_t at = 0;
    if (len)
        buf[0] = '\0';
    for (int r = 0; r < n && at < len; r++) {
        if ((rows[r].flags & mask) != mask || rows[r].off == TG_OPT_NOWHERE)
            continue;
        tg_cfg_field f = field(&rows[r], base);
        char num[64];
        int w;
        if (f.kind == TG_CFG_NULL)
            w = snprintf(buf + at, len - at, "# %s = (unset: %s)\n", f.key,
                         rows[r].unset ? rows[r].unset : "none");
        else
            w = snprintf(buf + at, len - at, "%s = %s\n", f.key, field_text(&f, num, sizeof num));
        at += w > 0 ? (size_t)w : 0;
    }
    return buf;
}

/* ---- --help ---- */

/* Writes text from column `col` (the cursor is there), wrapped at 80. */
static void wrap(FILE *f, const char *text, int col) {
    int x = col;
    const char *p = text;
    while (*p) {
        size_t w = strcspn(p, " ");
        if (x > col && x + 1 + (int)w > 80) {
            fprintf(f, "\n%*s", col, "");
            x = col;
        } else if (x > col) {
            fputc(' ', f);
            x++;
        }
        fprintf(f, "%.*s", (int)w, p);
        x += (int)w;
        p += w;
        while (*p == ' ')
            p++;
    }
    fputc('\n', f);
}

void tg_opt_help(FILE *f, const tg_opt *rows, int n, const void *defaults) {
    for (int r = 0; r < n; r++) {
        const tg_opt *o = &rows[r];
        if (o->group)
            fprintf(f, "%s%s:\n", r ? "\n" : "", o->group);
        char head[80];
        if (o->alias)
            snprintf(head, sizeof head, "  -%c, --%s", o->alias, o->name);
        else
            snprintf(head, sizeof head, "  --%s%s%s", o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        fputs(head, f);
        int col = 24;
        if ((int)strlen(head) >= col - 1)
            fprintf(f, "\n%*s", col, "");
        else
            fprintf(f, "%*s", col - (int)strlen(head), "");
        char text[1200], num[64];
        const char *def = NULL;
        if (o->flags & TG_OPT_NO_DEFAULT || o->off == TG_OPT_NOWHERE || o->type == TG_OPT_SWITCH)
            def = NULL;
        else if (o->flags & TG_OPT_PER_MODEL)
            def = "per model, below";
        else if (is_unset(o, defaults))
            def = o->unset;
        else {
            tg_cfg_field fl = field(o, defaults);
            def = field_text(&fl, num, sizeof num);
        }
        if (o->type == TG_OPT_CHOICE && !(o->flags & TG_OPT_NO_DEFAULT)) {
            char list[200] = "";
            for (int k = 0; o->choices[k].name; k++) {
                size_t l = strlen(list);
                snprintf(list + l, sizeof list - l, "%s%s", k ? ", " : "", o->choices[k].name);
            }
            snprintf(text, sizeof text, "%s: %s%s%s%s", list, o->help, def ? " (default: " : "",
                     def ? def : "", def ? ")" : "");
        } else {
            snprintf(text, sizeof text, "%s%s%s%s", o->help, def ? " (default: " : "",
                     def ? def : "", def ? ")" : "");
        }
        wrap(f, text, col);
    }
}
