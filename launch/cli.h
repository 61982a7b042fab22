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

/* The subcommands (launch/cmd_*.c). */
int tg_cmd_plot(int argc, char **argv);

/* Parses the global options and runs a subcommand; returns the exit code. */
int tg_cli_main(int argc, char **argv);

/* The top-level help text. */
void tg_cli_usage(FILE *f);

/* The exit code that a library status stands for. */
int tg_cli_exit_for_status(tg_status s);

#endif
