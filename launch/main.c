/*
 * launch/main.c: the tapegrad executable.
 *
 * Exit codes are listed in cli.h. This file, with the rest of launch/, is the
 * only place where the process ends; library code returns a status instead.
 */
#include <stdio.h>

#include "cli.h"
#include "tapegrad/runtime.h"

int main(int argc, char **argv) {
    int code = tg_cli_main(argc, argv);
    /* Output that could not be written (a full disk, a closed pipe) is a
     * failure even when the command itself succeeded. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("tapegrad: writing output");
        if (code == TG_EXIT_OK)
            code = TG_EXIT_RUNTIME;
    }
    return code;
}
