/*
 * launch/config.c: `--config FILE.ini` for the subcommands.
 *
 * The file is parsed with inih (Debian's libinih). Its keys mirror the
 * command's flags without the leading dashes ("batch-size = 256", or
 * "batch_size = 256" as the resolved configuration prints it), in the
 * section named after the command ("[train]") or before any section. Values
 * from the file are applied first and the command line after them, so a flag
 * overrides the file. Every setting remembers its line, so that a bad value
 * is reported as "run.ini:12: key 'lr': ...".
 *
 * The file is read whole first and checked here: a regular file of at most
 * TG_CLI_CONFIG_BYTES, text without NUL bytes, no line longer than
 * TG_CLI_CONFIG_LINE. inih reads into a line buffer of fixed size and hands
 * the rest of a longer line over as the next "line", so an over-long
 * "metrics = ..." would otherwise become a truncated path plus whatever the
 * tail of the line happens to say.
 */
#include "cli.h"

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Debian's libinih exports its compile-time options as variables; the line
 * buffer's size is one of them. Weak, so that a libinih without it still
 * links (the reader below then rejects what does not fit its buffer). */
extern int ini_max_line __attribute__((weak));
/* Also: an indented line continues the previous value (Python's
 * configparser), which is off here: a stray indent must not glue text to a
 * path. Without the variable such a line reads as the same key again. */
extern bool ini_allow_multiline __attribute__((weak));

typedef struct read_state {
    tg_cli_config *c;
    const char *text; /* the whole file, NUL-terminated */
    size_t pos, len;
    int line; /* of the line inih is handling */
    const char *cmd;
    int code; /* first error's exit code */
} read_state;

static int fail(read_state *st, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(read_state *st, int code, const char *fmt, ...) {
    if (st->code)
        return 0;
    va_list ap;
    fprintf(stderr, "tapegrad %s: %s:%d: ", st->cmd, st->c->path, st->line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    st->code = code;
    return 0;
}

/* inih's fgets: one whole line of the text per call (the checks before
 * made sure that each fits), counted, so that st->line is the line that the
 * handler is called for. */
static char *line_reader(char *str, int num, void *stream) {
    read_state *st = stream;
    if (st->code || st->pos >= st->len)
        return NULL;
    const char *p = st->text + st->pos;
    const char *nl = memchr(p, '\n', st->len - st->pos);
    size_t n = nl ? (size_t)(nl - p) + 1 : st->len - st->pos;
    st->line++;
    if (num < 2 || n > (size_t)num - 1) {
        fail(st, TG_EXIT_USAGE, "line of %zu characters is longer than the %d this build reads",
             n, num - 3);
        return NULL;
    }
    memcpy(str, p, n);
    str[n] = '\0';
    st->pos += n;
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
    read_state *st = user;
    tg_cli_config *c = st->c;
    if (st->code)
        return 0;
    if (section[0] && strcmp(section, st->cmd) != 0)
        return fail(st, TG_EXIT_USAGE,
                    "section [%s] is not for this command (expected [%s] or no section)", section,
                    st->cmd);
    /* Keys are written as flags are (batch-size) or as the resolved
     * configuration prints them (batch_size): the same key either way. */
    char *key = strdup(name);
    if (!key)
        return fail(st, TG_EXIT_RUNTIME, "out of memory");
    for (char *p = key; *p; p++)
        if (*p == '_')
            *p = '-';
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->s[i].key, key) == 0) {
            free(key);
            return fail(st, TG_EXIT_USAGE, "key '%s' is already set on line %d", name,
                        c->s[i].line);
        }
    if (c->n == TG_CLI_CONFIG_MAX) {
        free(key);
        return fail(st, TG_EXIT_USAGE, "more than %d settings", TG_CLI_CONFIG_MAX);
    }
    tg_cli_setting *s = &c->s[c->n];
    s->key = key;
    s->value = strdup(value);
    s->line = st->line;
    if (!s->value) {
        free(s->key);
        return fail(st, TG_EXIT_RUNTIME, "out of memory");
    }
    c->n++;
    return 1;
}

/* Reads the file at c->path whole into *text (NUL-terminated). Prints what
 * is wrong and returns an exit code. */
static int slurp(const char *cmd, const char *path, char **text, size_t *len) {
    *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tapegrad %s: --config: cannot open '%s': %s\n", cmd, path,
                strerror(errno));
        return TG_EXIT_USAGE;
    }
    struct stat sb;
    const char *why = NULL;
    if (fstat(fileno(f), &sb) != 0)
        why = strerror(errno);
    else if (S_ISDIR(sb.st_mode))
        why = "is a directory, expected an INI file";
    else if (!S_ISREG(sb.st_mode))
        why = "not a regular file";
    else if (sb.st_size > TG_CLI_CONFIG_BYTES)
        why = "larger than a configuration file may be (1 MiB)";
    if (why) {
        fprintf(stderr, "tapegrad %s: --config '%s': %s\n", cmd, path, why);
        fclose(f);
        return TG_EXIT_USAGE;
    }
    /* One byte more than the limit: a file that grew since fstat shows. */
    char *b = malloc(TG_CLI_CONFIG_BYTES + 2);
    if (!b) {
        fclose(f);
        fprintf(stderr, "tapegrad %s: --config '%s': out of memory\n", cmd, path);
        return TG_EXIT_RUNTIME;
    }
    size_t n = fread(b, 1, TG_CLI_CONFIG_BYTES + 1, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err || n > TG_CLI_CONFIG_BYTES) {
        fprintf(stderr, "tapegrad %s: --config '%s': %s\n", cmd, path,
                err ? strerror(err) : "larger than a configuration file may be (1 MiB)");
        free(b);
        return TG_EXIT_USAGE;
    }
    b[n] = '\0';
    *text = b;
    *len = n;
    return TG_EXIT_OK;
}

/* Every line: no NUL byte, at most TG_CLI_CONFIG_LINE characters. */
static int check_lines(read_state *st) {
    int line = 0;
    for (size_t pos = 0; pos < st->len;) {
        const char *p = st->text + pos;
        const char *nl = memchr(p, '\n', st->len - pos);
        size_t n = nl ? (size_t)(nl - p) : st->len - pos;
        line++;
        st->line = line;
        size_t chars = n - (n > 0 && p[n - 1] == '\r');
        if (memchr(p, '\0', n))
            fail(st, TG_EXIT_USAGE, "a NUL byte: not a text file");
        else if (chars > TG_CLI_CONFIG_LINE)
            fail(st, TG_EXIT_USAGE, "line of %zu characters, longer than the %d allowed", chars,
                 TG_CLI_CONFIG_LINE);
        if (st->code)
            return st->code;
        pos += n + (nl != NULL);
    }
    st->line = 0;
    return 0;
}

int tg_cli_config_read(const char *cmd, const char *path, tg_cli_config *c) {
    memset(c, 0, sizeof *c);
    c->path = path;
    read_state st = {.c = c, .cmd = cmd};
    char *text;
    int code = slurp(cmd, path, &text, &st.len);
    if (code)
        return code;
    st.text = text;
    code = check_lines(&st);
    if (code == 0) {
        /* inih's buffer: the longest line, its "\r\n" and the NUL. */
        int saved = &ini_max_line ? ini_max_line : 0;
        bool multi = &ini_allow_multiline ? ini_allow_multiline : false;
        if (&ini_max_line && ini_max_line < TG_CLI_CONFIG_LINE + 3)
            ini_max_line = TG_CLI_CONFIG_LINE + 3;
        if (&ini_allow_multiline)
            ini_allow_multiline = false;
        int r = ini_parse_stream(line_reader, &st, handler, &st);
        if (&ini_max_line)
            ini_max_line = saved;
        if (&ini_allow_multiline)
            ini_allow_multiline = multi;
        if (st.code)
            code = st.code;
        else if (r > 0) {
            st.line = r;
            fail(&st, TG_EXIT_USAGE, "not a 'key = value' line");
            code = st.code;
        } else if (r < 0) {
            fail(&st, TG_EXIT_RUNTIME, "inih could not read the file (%d)", r);
            code = st.code;
        }
    }
    free(text);
    if (code)
        tg_cli_config_free(c);
    return code;
}

void tg_cli_config_free(tg_cli_config *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->s[i].key);
        free(c->s[i].value);
    }
    c->n = 0;
}

const char *tg_cli_label(const tg_cli_config *c, const char *flag, const char *value, char *buf,
                         size_t len) {
    for (int i = 0; c && value && i < c->n; i++)
        if (c->s[i].value == value) {
            snprintf(buf, len, "%s:%d: key '%s'", c->path, c->s[i].line, flag + 2);
            return buf;
        }
    return flag;
}
