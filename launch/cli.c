/*
 * launch/cli.c: global options and the subcommand dispatch table.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "tapegrad/kernels.h"

/*
 * The subcommands, in the order help lists them. A command is added by
 * writing its function and putting it in its row; a row whose fn is NULL
 * reports that this build lacks the command.
 */
static const tg_cli_command commands[] = {
    {"train", tg_cmd_train, "train a model (by default: Fashion-MNIST, on the CPU)"},
    {"eval", tg_cmd_eval, "evaluate a checkpoint on a dataset split"},
    {"convert", tg_cmd_convert,
     "make an HDF5 dataset ('convert idx', 'convert npy', 'convert text')"},
    {"inspect", tg_cmd_inspect, "describe a dataset or checkpoint file"},
    {"export", tg_cmd_export, "export a checkpoint's parameters"},
    {"sample", tg_cmd_sample, "generate text with a language model's checkpoint"},
    {"plot", tg_cmd_plot, "draw loss, accuracy and throughput curves from metrics files"},
    {"trace", tg_cmd_trace, "'trace merge': the ranks' traces of train --trace on one clock"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

void tg_cli_usage(FILE *f) {
    fprintf(f, "usage: tapegrad <command> [options]\n"
               "       tapegrad --help | --version\n"
               "\n"
               "tapegrad trains models data-parallel across MPI ranks, on CPUs or GPUs.\n"
               "The same binary runs alone, under mpirun -np N, and under srun.\n"
               "\n"
               "commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-9s %s%s\n", commands[i].name, commands[i].summary,
                commands[i].fn ? "" : " (not available yet)");
    fprintf(f, "\n"
               "options:\n"
               "  -h, --help     print this help and exit\n"
               "  --version      print the version and the backends built in, and exit\n"
               "\n"
               "Run 'tapegrad <command> --help' for the options of a command.\n"
               "\n"
               "exit codes: 0 success, 1 runtime error, 2 usage error, 3 data error,\n"
               "            4 lost rank, 75 checkpointed for requeue (EX_TEMPFAIL)\n");
}

int tg_cli_exit_for_status(tg_status s) {
    switch (s) {
    case TG_OK:
        return TG_EXIT_OK;
    case TG_ERR_IO:
    case TG_ERR_FORMAT:
        return TG_EXIT_DATA;
    case TG_ERR_COMM:
    case TG_ERR_TIMEOUT:
        return TG_EXIT_LOST_RANK;
    default:
        return TG_EXIT_RUNTIME;
    }
}

static int print_version(void) {
    printf("tapegrad %s\n", TG_VERSION_STRING);
    char cuda[4096];
    tg_cuda_describe(cuda, sizeof cuda);
    fputs(cuda, stdout);
    return TG_EXIT_OK;
}

static const tg_cli_command *find_command(const char *name) {
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int usage_error(const char *what, const char *arg) {
    const char *names[NCOMMANDS + 3] = {"--help", "--version", "-h"};
    size_t n = 3;
    for (size_t i = 0; i < NCOMMANDS; i++)
        names[n++] = commands[i].name;
    const char *near = tg_cli_nearest(arg, names, n);
    if (near)
        fprintf(stderr, "tapegrad: unknown %s '%s'; did you mean '%s'?\n", what, arg, near);
    else
        fprintf(stderr, "tapegrad: unknown %s '%s'\n", what, arg);
    fprintf(stderr, "Run 'tapegrad --help' for usage.\n");
    return TG_EXIT_USAGE;
}

/* Set from the environment before anything starts MPI: Open MPI's
 * singleton start-up sets PMIX_RANK in the process itself. */
static bool g_launched;

bool tg_cli_launched(void) { return g_launched; }

int tg_cli_main(int argc, char **argv) {
    g_launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") ||
                 getenv("SLURM_STEP_ID") || getenv("PMI_RANK");
    if (argc < 2) {
        tg_cli_usage(stderr);
        return TG_EXIT_USAGE;
    }
    const char *arg = argv[1];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
        tg_cli_usage(stdout);
        return TG_EXIT_OK;
    }
    if (strcmp(arg, "--version") == 0)
        return print_version();
    if (arg[0] == '-')
        return usage_error("option", arg);

    const tg_cli_command *cmd = find_command(arg);
    if (!cmd)
        return usage_error("command", arg);
    if (!cmd->fn) {
        fprintf(stderr, "tapegrad %s: not available in this build yet\n", cmd->name);
        return TG_EXIT_USAGE;
    }
    return cmd->fn(argc - 1, argv + 1);
}
