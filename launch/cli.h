/*
 * launch/cli.h: the tapegrad command line (private to launch/).
 *
 * The CLI is a table of subcommands. Each one is a function that gets the
 * arguments from its own name on (argv[0] is "train", ...) and returns the
 * process exit code; main() returns that code. Nothing outside launch/ may end
 * the process: library calls report a tg_status and the CLI turns it into an
 * exit code with tg_cli_exit_for_status().
 */
#ifndef TAPEGRAD_LAUNCH_CLI_H
#define TAPEGRAD_LAUNCH_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "tapegrad/base.h"

/*
 * Exit codes, part of the CLI's interface (batch scripts test them):
 *   0  success
 *   1  runtime error (a bug, out of memory, a backend failure)
 *   2  usage error (unknown command or option, bad value)
 *   3  data error (a dataset or checkpoint file is missing or malformed)
 *   4  a rank was lost (a collective failed or timed out)
 *   75 the run was pre-empted and checkpointed; requeue it (EX_TEMPFAIL)
 */
enum {
    TG_EXIT_OK = 0,
    TG_EXIT_RUNTIME = 1,
    TG_EXIT_USAGE = 2,
    TG_EXIT_DATA = 3,
    TG_EXIT_LOST_RANK = 4,
    TG_EXIT_REQUEUE = 75,
};

/* A subcommand: argv[0] is the command's name; returns an exit code. */
typedef int (*tg_cli_fn)(int argc, char **argv);

/* One row of the dispatch table. fn is NULL for a command that this build
 * does not provide yet; it is still listed so that the interface is visible. */
typedef struct tg_cli_command {
    const char *name;
    tg_cli_fn fn;
    const char *summary;
} tg_cli_command;

/* ---- --config FILE.ini (launch/config.c) ---- */

#define TG_CLI_CONFIG_MAX 128
/* The longest line (characters, without the line end) and the largest file
 * (bytes) that --config reads. */
#define TG_CLI_CONFIG_LINE 4096
#define TG_CLI_CONFIG_BYTES (1 << 20)

/* One "key = value" of a configuration file; key has '_' turned into '-'. */
typedef struct tg_cli_setting {
    char *key;
    char *value;
    int line;
} tg_cli_setting;

typedef struct tg_cli_config {
    const char *path;
    int n;
    tg_cli_setting s[TG_CLI_CONFIG_MAX];
} tg_cli_config;

/* Reads the INI file at path for command cmd: keys in section [cmd] or
 * before any section; a key given twice (batch-size and batch_size are one
 * key) is an error. Prints what is wrong (file:line) and returns an exit
 * code; on success release it with tg_cli_config_free() (on failure there
 * is nothing to release, and calling it does no harm). */
int tg_cli_config_read(const char *cmd, const char *path, tg_cli_config *c);
void tg_cli_config_free(tg_cli_config *c);
/* How to name a value in a message: "FILE:LINE: key 'lr'" when value is one
 * of c's values (compared by address), else flag ("--lr"). */
const char *tg_cli_label(const tg_cli_config *c, const char *flag, const char *value, char *buf,
                         size_t len);

/* ---- the dataset record of checkpoints (launch/data_digest.c) ---- */

typedef struct tg_cli_data_record {
    char path[4096];  /* absolute, symbolic links resolved */
    int64_t bytes;    /* the file's size */
    char sha256[65];  /* SHA-256 of its bytes, lowercase hex */
} tg_cli_data_record;

/* Fills r for the file at path, read once in pieces. Returns 0, or -1 with
 * a message naming the file in err. */
int tg_cli_file_record(const char *path, tg_cli_data_record *r, char *err, size_t len);

/* The subcommands (launch/cmd_*.c). */
int tg_cmd_plot(int argc, char **argv);
int tg_cmd_trace(int argc, char **argv);

/* The whole of a regular file of at most max bytes, NUL-terminated, in a
 * buffer to free; NULL with a message "tapegrad CMD: cannot read PATH: ..."
 * printed otherwise. */
char *tg_cli_read_file(const char *cmd, const char *path, long max, size_t *len);

/* Whether a launcher (mpirun, srun) started this process, judged from the
 * environment at the start of tg_cli_main, before MPI's start-up changed
 * it. */
bool tg_cli_launched(void);

/* The name among names[0..n) closest to `given` (a typo: up to about a third
 * of its letters wrong), or NULL when none is that close. */
const char *tg_cli_nearest(const char *given, const char *const *names, size_t n);
/* The usage error of an unknown option of cmd, with the nearest of
 * names[0..n) as a suggestion when one is close; returns TG_EXIT_USAGE. */
int tg_cli_unknown_option(const char *cmd, const char *arg, const char *const *names, size_t n);
int tg_cmd_export(int argc, char **argv);

/* Parses the global options and runs a subcommand; returns the exit code. */
int tg_cli_main(int argc, char **argv);

/* The top-level help text. */
void tg_cli_usage(FILE *f);

/* The exit code that a library status stands for. */
int tg_cli_exit_for_status(tg_status s);

/* ---- the subcommands (one file each) ---- */

int tg_cmd_train(int argc, char **argv);
int tg_cmd_eval(int argc, char **argv);
int tg_cmd_sample(int argc, char **argv);
int tg_cmd_convert(int argc, char **argv);
/* `tapegrad convert text` (launch/cmd_convert_text.c). */
int tg_cmd_convert_text(int argc, char **argv);
int tg_cmd_inspect(int argc, char **argv);
/* inspect's model-file summary (cmd_inspect_model.c); shape and classes may
 * be NULL. Returns an exit code. */
int tg_inspect_model(const char *model, const char *shape, const char *classes);

/* ---- option parsing shared by the subcommands (opts.c) ---- */

/*
 * Prints "tapegrad CMD: MESSAGE" and a pointer to CMD's help on stderr and
 * returns TG_EXIT_USAGE.
 */
int tg_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Matches argv[*i] against the option `name` ("--epochs"), given either as
 * "--epochs 3" or "--epochs=3". Returns 1 and sets *value (advancing *i past
 * a separate value) on a match, 0 when argv[*i] is another option, and -1
 * after printing a usage error when the value is missing.
 */
int tg_cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name,
               const char **value);

/* Parse a whole-string integer / finite number within [lo, hi]; on failure
 * print a usage error naming the flag and the value and return -1. */
int tg_cli_parse_i64(const char *cmd, const char *flag, const char *v, int64_t lo, int64_t hi,
                     int64_t *out);
int tg_cli_parse_f64(const char *cmd, const char *flag, const char *v, double lo, double hi,
                     double *out);

/* True for "-h" and "--help". */
int tg_cli_is_help(const char *arg);

/*
 * The CPU threads a rank uses when neither --threads nor OMP_NUM_THREADS
 * says: 0 (the OpenMP default: the CPUs this process may run on) when it is
 * alone on its node or the launcher bound it to its own CPUs; else, when
 * local_size ranks share all of the node's CPUs, those CPUs divided among
 * them (at least 1), since OpenMP's default would give every rank all of
 * them and oversubscribe the node. desc gets a phrase for the banner.
 */
int tg_cli_rank_threads(int local_size, char *desc, size_t n);

/*
 * Stop requests (launch/stop.c). tg_cli_stop_signals_install() makes
 * SIGTERM, SIGUSR1 and SIGINT only record the first signal (a second SIGINT
 * still ends the process at once with 130); long work checks the record
 * through tg_cli_stop_requested(), a callback for the library's stop options
 * (user is ignored). tg_cli_stop_signals_restore() puts the default actions
 * back. tg_cli_stop_signal() is the recorded signal, 0 for none.
 * tg_cli_stop_exit() is the exit code of a stop before any training step:
 * 75 when a checkpoint folder is in use (requeue: nothing was lost), else
 * 128 + the signal.
 */
int tg_cli_stop_signals_install(char *err, size_t len);
void tg_cli_stop_signals_restore(void);
int tg_cli_stop_signal(void);
bool tg_cli_stop_requested(void *user);
int tg_cli_stop_exit(bool ckpt_dir);

/* An explicit thread count (flag: "--threads") capped at the CPUs that
 * sched_getaffinity allows this process, with a warning when it asked for
 * more; threads <= 0 (the default) is returned as it is. */
int tg_cli_cap_threads(const char *cmd, const char *flag, int threads);
/* The same without a word (ranks other than 0). */
int tg_cli_cap_threads_quiet(int threads);

/* The address space that OpenBLAS takes per thread for its buffers: it
 * allocates them on a thread's first BLAS call and, when that fails, retries
 * for ever. */
#define TG_CLI_BLAS_BUFFER_MIB 130

/*
 * Under an address-space limit (RLIMIT_AS, ulimit -v): whether `threads`
 * BLAS threads (0: as many as OpenMP and OpenBLAS would start) find room for
 * their buffers; if not, prints what to do and returns TG_EXIT_RUNTIME, so
 * that the run fails now instead of hanging in its first matrix product.
 */
int tg_cli_check_blas_room(const char *cmd, int threads);
/* One small matrix product, right after the context set the BLAS threads:
 * OpenBLAS then takes its buffers while tg_cli_check_blas_room() knows
 * there is room, not later, when the data and the model have taken it.
 * -1 when even the product's operands find no memory. */
int tg_cli_blas_warmup(void);

/* Started by torchrun or the like: WORLD_SIZE > 1 in the environment while
 * MPI made a world of world_size == 1. Prints how to launch and returns
 * TG_EXIT_USAGE then, else TG_EXIT_OK. */
int tg_cli_check_launch(const char *cmd, int world_size);

#endif
