/*
 * launch/options.h: option tables, the one description of a command's
 * options (private to launch/).
 *
 * A command describes each of its options once, as a row of a table
 * (tg_opt): its name, type, where its value is kept, its bounds, its help
 * text and where it is recorded. Everything else walks that table: reading
 * the command line, reading `--config FILE.ini` (the INI keys are the names),
 * `--help`, `--print-config` (an INI file that `--config` reads back), the
 * "did you mean" suggestions, the typed fields of the metrics' config event
 * and the configuration text stored in checkpoints. The train table is in
 * launch/train_opts.c, eval's in launch/cmd_eval.c.
 *
 * Values are kept in a struct of the command's (the "base"); each row names
 * a member by its offset. A value that the user did not give stays as the
 * command's defaults set it.
 */
#ifndef TAPEGRAD_LAUNCH_OPTIONS_H
#define TAPEGRAD_LAUNCH_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cli.h"

typedef enum tg_opt_type {
    TG_OPT_STR,    /* const char *: the text as given (non-empty) */
    TG_OPT_I64,    /* int64_t in [lo, hi] */
    TG_OPT_INT,    /* int in [lo, hi] */
    TG_OPT_U64,    /* uint64_t in [lo, hi] (bounds below 2^63) */
    TG_OPT_F64,    /* double in [lo, hi], finite */
    TG_OPT_SWITCH, /* bool: a flag without value; in a file true/false */
    TG_OPT_CHOICE, /* an enum (int-sized): one of choices' names */
} tg_opt_type;

/* One value of a TG_OPT_CHOICE option: its name and the enum's value. */
typedef struct tg_opt_choice {
    const char *name;
    int value;
} tg_opt_choice;

/* Where an option appears besides the command line and --help. */
enum {
    TG_OPT_INI = 1u << 0,     /* a key of --config files, printed by --print-config */
    TG_OPT_RECORD = 1u << 1,  /* in the checkpoint's configuration and the metrics */
    TG_OPT_PER_MODEL = 1u << 2, /* --help: the default depends on the model */
    TG_OPT_NO_DEFAULT = 1u << 3, /* --help: the help text says the default itself */
    TG_OPT_EARLY = 1u << 4,   /* resolved by the command itself, before the others */
};
#define TG_OPT_SAVED (TG_OPT_INI | TG_OPT_RECORD)

/* No member: the option acts while reading (--config, --help). */
#define TG_OPT_NOWHERE ((size_t)-1)

typedef struct tg_opt {
    const char *name;   /* "batch-size": the flag without "--"; the INI key */
    char alias;         /* 'q' for -q, or 0 */
    tg_opt_type type;
    const char *arg;    /* "N", "X", "FILE.h5" in --help; NULL for switches */
    size_t off;         /* offsetof the member in the base, or TG_OPT_NOWHERE */
    double lo, hi;      /* bounds of numbers */
    const tg_opt_choice *choices; /* TG_OPT_CHOICE: ended by a NULL name */
    /* A value that reads as 0 or NULL means "not set"; this says what then
     * applies ("the Fashion-MNIST cache file"). --print-config writes such
     * an option as a comment. NULL: 0 is a value like any other. */
    const char *unset;
    unsigned flags;
    const char *group;  /* --help: a heading that starts before this row */
    const char *help;   /* one paragraph; --help wraps it and adds the default */
} tg_opt;

/* The most rows a table may have. */
#define TG_OPT_MAX 64

/* The options of one command line (and its --config file), as read. */
typedef struct tg_opt_set {
    const char *cmd;
    const tg_opt *rows;
    int n;
    const char *val[TG_OPT_MAX]; /* the text given for each row, or NULL */
    int line[TG_OPT_MAX];        /* > 0: the line of the --config file that gave it */
    const char *config;          /* --config FILE, or NULL */
    tg_cli_config file;
    bool help;                   /* -h/--help was given (and printed) */
} tg_opt_set;

/* Reads argv (argv[0] is the command) and the --config file it names:
 * the file's settings first, then the command line's over them. Prints what
 * is wrong and returns an exit code. usage is called for --help (then
 * set->help is true and 0 is returned). Release with tg_opt_set_free(),
 * also after a failure. */
int tg_opt_read(tg_opt_set *set, const char *cmd, const tg_opt *rows, int n, int argc,
                char **argv, void (*usage)(FILE *));
void tg_opt_set_free(tg_opt_set *set);

/* The row of `name` (without dashes), or -1. */
int tg_opt_find(const tg_opt *rows, int n, const char *name);
/* Whether row `name` was given (on the command line or in the file). */
bool tg_opt_given(const tg_opt_set *set, const char *name);

/* How messages name row r's value: "--lr", or "run.ini:3: key 'lr'" when
 * the --config file gave it. */
const char *tg_opt_label(const tg_opt_set *set, int r, char *buf, size_t len);
/* Parses the value given for row r (if any) into base. Prints a usage
 * error naming the flag or the file, line and key; returns an exit code. */
int tg_opt_apply_row(const tg_opt_set *set, int r, void *base);
/* The same for every row without TG_OPT_EARLY. */
int tg_opt_apply(const tg_opt_set *set, void *base);

/* The rows' help, grouped under their headings; defaults are read from the
 * base `defaults`. */
void tg_opt_help(FILE *f, const tg_opt *rows, int n, const void *defaults);

/* The values of the rows that have every bit of `mask` as "key = value"
 * lines (keys with '_' for '-'; unset values as "# key = (unset: ...)"
 * comments), the text that --config reads back. Returns buf (truncated to
 * len). */
char *tg_opt_text(const tg_opt *rows, int n, const void *base, unsigned mask, char *buf,
                  size_t len);

/* One option's value, typed for JSON (numbers as numbers, strings as
 * strings, unset as null). Strings point into the base or static tables. */
typedef enum tg_cfg_kind {
    TG_CFG_STR,
    TG_CFG_INT,
    TG_CFG_U64,
    TG_CFG_NUM,
    TG_CFG_BOOL,
    TG_CFG_NULL
} tg_cfg_kind;
typedef struct tg_cfg_field {
    char key[48]; /* "batch_size" */
    tg_cfg_kind kind;
    const char *s;
    int64_t i;
    uint64_t u;
    double d;
} tg_cfg_field;
#define TG_CFG_MAX_FIELDS TG_OPT_MAX

/* The rows with every bit of mask as fields; returns the count (at most
 * max are written). Keys have '_' for '-' ("batch_size"). */
int tg_opt_fields(const tg_opt *rows, int n, const void *base, unsigned mask, tg_cfg_field *f,
                  int max);

#endif
