/*
 * launch/stop.c: the record of a stop request (SIGTERM, SIGUSR1, SIGINT).
 *
 * A signal handler may only set a flag; everything that runs long checks it:
 * the conversion of the default dataset, the dataset checks at open, and the
 * training loop's pre-emption vote after every step (launch/train_run.c).
 */
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static const int stop_sigs[] = {SIGTERM, SIGUSR1, SIGINT};

/* The signal that asked for a stop (0: none), and SIGINTs seen. A signal
 * handler can reach only globals; these two are the launcher's only ones. */
static volatile sig_atomic_t g_stop_signal;
static volatile sig_atomic_t g_sigints;

static void on_signal(int sig) {
    if (sig == SIGINT && g_sigints++ > 0)
        _exit(130); /* a second Ctrl-C: the user does not want to wait */
    if (!g_stop_signal)
        g_stop_signal = sig;
}

int tg_cli_stop_signals_install(char *err, size_t len) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof stop_sigs / sizeof stop_sigs[0]; i++)
        if (sigaction(stop_sigs[i], &sa, NULL) != 0) {
            snprintf(err, len, "sigaction(%d): %s", stop_sigs[i], strerror(errno));
            return -1;
        }
    return 0;
}

void tg_cli_stop_signals_restore(void) {
    for (size_t i = 0; i < sizeof stop_sigs / sizeof stop_sigs[0]; i++)
        (void)signal(stop_sigs[i], SIG_DFL);
}

int tg_cli_stop_signal(void) { return g_stop_signal; }

bool tg_cli_stop_requested(void *user) {
    (void)user;
    return g_stop_signal != 0;
}

int tg_cli_stop_exit(bool ckpt_dir) {
    int sig = g_stop_signal;
    return ckpt_dir ? TG_EXIT_REQUEUE : 128 + (sig ? sig : SIGTERM);
}
