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
 */
#include "cli.h"

#include <errno.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>

typedef struct read_state {
    tg_cli_config *c;
    FILE *f;
    int line; /* of the line inih is handling */
    const char *cmd;
    int code; /* first error's exit code */
} read_state;

/* fgets with a line count: inih hands each line to the handler right after
 * reading it, so the count is the handler's line. */
static char *counting_reader(char *str, int num, void *stream) {
    read_state *st = stream;
    char *r = fgets(str, num, st->f);
    if (r && strchr(r, '\n'))
        st->line++;
    else if (r && feof(st->f))
        st->line++; /* a last line without a newline */
    return r;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
    read_state *st = user;
    tg_cli_config *c = st->c;
    if (st->code)
        return 0;
    if (section[0] && strcmp(section, st->cmd) != 0) {
        fprintf(stderr,
                "tapegrad %s: %s:%d: section [%s] is not for this command (expected [%s] or no "
                "section)\n",
                st->cmd, c->path, st->line, section, st->cmd);
        st->code = TG_EXIT_USAGE;
        return 0;
    }
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->s[i].key, name) == 0) {
            fprintf(stderr, "tapegrad %s: %s:%d: key '%s' is already set on line %d\n", st->cmd,
                    c->path, st->line, name, c->s[i].line);
            st->code = TG_EXIT_USAGE;
            return 0;
        }
    if (c->n == TG_CLI_CONFIG_MAX) {
        fprintf(stderr, "tapegrad %s: %s:%d: more than %d settings\n", st->cmd, c->path, st->line,
                TG_CLI_CONFIG_MAX);
        st->code = TG_EXIT_USAGE;
        return 0;
    }
    tg_cli_setting *s = &c->s[c->n];
    s->key = strdup(name);
    s->value = strdup(value);
    s->line = st->line;
    if (!s->key || !s->value) {
        free(s->key);
        free(s->value);
        st->code = TG_EXIT_RUNTIME;
        return 0;
    }
    /* Keys are written as flags are (batch-size) or as the resolved
     * configuration prints them (batch_size). */
    for (char *p = s->key; *p; p++)
        if (*p == '_')
            *p = '-';
    c->n++;
    return 1;
}

int tg_cli_config_read(const char *cmd, const char *path, tg_cli_config *c) {
    memset(c, 0, sizeof *c);
    c->path = path;
    read_state st = {.c = c, .cmd = cmd};
    st.f = fopen(path, "r");
    if (!st.f) {
        fprintf(stderr, "tapegrad %s: --config: cannot open '%s': %s\n", cmd, path,
                strerror(errno));
        return TG_EXIT_USAGE;
    }
    int r = ini_parse_stream(counting_reader, &st, handler, &st);
    fclose(st.f);
    if (st.code)
        return st.code;
    if (r != 0) {
        fprintf(stderr, "tapegrad %s: %s:%d: not a 'key = value' line\n", cmd, path, r);
        return TG_EXIT_USAGE;
    }
    return TG_EXIT_OK;
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
