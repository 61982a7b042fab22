/*
 * tests/fuzz/fuzz_config.c: the bytes as a `--config FILE.ini` for
 * `tapegrad train`: read by the code that reads the option
 * (tg_cli_config_read, launch/config.c) and released again, then given to
 * `tapegrad train --config FILE --print-config` and `tapegrad eval --config
 * FILE --print-config`, which parse the values through the option tables.
 *
 * The bytes go to a temporary file that each call creates and removes. The
 * messages about bad files go to stderr (libFuzzer's -close_fd_mask=2 hides
 * them).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[] = "/tmp/tg_fuzz_config_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    close(fd);
    if (done == size) {
        tg_cli_config *c = malloc(sizeof *c);
        if (c) {
            int code = tg_cli_config_read("train", path, c);
            /* Whatever was read is usable: keys normalised, lines counted. */
            for (int i = 0; code == 0 && i < c->n; i++)
                if (!c->s[i].key || !c->s[i].value || strchr(c->s[i].key, '_') ||
                    c->s[i].line < 1)
                    abort();
            tg_cli_config_free(c);
            free(c);
        }
        /* And the whole of `train --config FILE --print-config`: the values
         * parsed onto the options (stops before any training). */
        char *argv[] = {"train", "--config", path, "--print-config", NULL};
        tg_cmd_train(4, argv);
        /* eval's table reads the same file under its own keys. */
        char *eargv[] = {"eval", "--config", path, "--print-config", NULL};
        tg_cmd_eval(4, eargv);
    }
    unlink(path);
    return 0;
}
