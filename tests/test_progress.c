/*
 * tests/test_progress.c: what `tapegrad train` shows while it runs. On a
 * pseudo-terminal (openpty) one progress line is redrawn in place, by a
 * timer, several times per second, with the epoch, the bar, the step counts,
 * samples/s and elapsed<remaining; through a pipe (a batch log) there is no
 * carriage return, only plain lines, one per --log-every steps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <utmp.h>
#include <sys/wait.h>

#include "test_util.h"

static char *g_data;

static char *const *train_argv(void) {
    static char *argv[] = {TG_CLI_PATH, "train", "--data", NULL, "--model", "cnn",
                           "--batch-size", "8", "--max-steps", "300", "--threads", "1",
                           "--log-every", "100", NULL};
    argv[3] = g_data;
    return argv;
}

/* Everything the child `pid` wrote to fd, in a static buffer, and its wait
 * status in *st. A pipe ends at EOF. For a pty the caller keeps the other
 * side open, so that reads never end in EIO when the child exits (on Linux an
 * EIO can come before the last output has been read, and the end of the run
 * would be lost): the child's exit is watched instead, and what is left is
 * drained. */
static const char *read_child(int fd, pid_t pid, int *st, size_t *len) {
    static char buf[1 << 20];
    size_t n = 0;
    bool exited = false;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int k = poll(&p, 1, exited ? 200 : 50);
        if (k > 0 && (p.revents & (POLLIN | POLLHUP)) && n < sizeof buf - 1) {
            ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
            if (r > 0) {
                n += (size_t)r;
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            break; /* EOF */
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (exited)
            break; /* nothing more within 200 ms of its exit */
        pid_t w = waitpid(pid, st, WNOHANG);
        if (w == pid)
            exited = true;
        else if (w < 0)
            break;
    }
    if (!exited && waitpid(pid, st, 0) != pid)
        *st = -1;
    buf[n] = 0;
    *len = n;
    return buf;
}

static int count(const char *s, const char *what) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)) != NULL; p++)
        n++;
    return n;
}

static void clean_env(void) {
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("PMIX_RANK");
    unsetenv("PMI_RANK");
    unsetenv("SLURM_STEP_ID");
}

static void test_bar_on_terminal(void **state) {
    (void)state;
    int master, slave;
    struct winsize ws = {.ws_row = 24, .ws_col = 100};
    assert_int_equal(openpty(&master, &slave, NULL, NULL, &ws), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(master);
        if (login_tty(slave) != 0)
            _exit(126);
        clean_env();
        execv(TG_CLI_PATH, train_argv());
        _exit(127);
    }
    size_t len;
    int st = 0;
    const char *out = read_child(master, pid, &st, &len);
    close(slave);
    close(master);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("train on a terminal: status %d\n%s", st, out);
    /* 300 steps of 64 per epoch: 5 epochs, the last partial. */
    int redraws = count(out, "\r\033[Kepoch ");
    if (redraws < 3 || !strstr(out, "samples/s") || !strstr(out, "[#") ||
        !strstr(out, "epoch 5/5 [") || !strstr(out, "test accuracy: "))
        fail_msg("expected a progress bar redrawn in place (%d redraws), output ending:\n%s",
                 redraws, len > 1500 ? out + len - 1500 : out);
    /* Redrawn by the timer, not only at each of the 3 logged steps. */
    if (redraws <= 3)
        fail_msg("the bar was redrawn %d times in a run of 300 steps logged every 100", redraws);
    /* The width follows the terminal: no line of the bar is wider. */
    for (const char *p = strstr(out, "\r\033[K"); p; p = strstr(p + 1, "\r\033[K")) {
        const char *e = strpbrk(p + 4, "\r\n");
        size_t w = e ? (size_t)(e - p - 4) : strlen(p + 4);
        bool is_bar = strncmp(p + 4, "eval [", 6) == 0 ||
                      (strncmp(p + 4, "epoch ", 6) == 0 && strstr(p + 4, " [") &&
                       strstr(p + 4, " [") < p + 4 + w);
        if (is_bar && w > 100)
            fail_msg("a progress line of %zu columns on a 100-column terminal", w);
    }
    /* Elapsed and remaining time: "m:ss<m:ss" once the rate is known. */
    bool eta = false;
    for (const char *lt = strchr(out, '<'); lt && !eta; lt = strchr(lt + 1, '<'))
        eta = lt - out >= 4 && lt[-3] == ':' && lt[1] >= '0' && lt[1] <= '9' && lt[2] == ':';
    if (!eta)
        fail_msg("no elapsed<remaining time in:\n%s", out);
}

static void test_plain_lines_in_a_pipe(void **state) {
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        clean_env();
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(TG_CLI_PATH, train_argv());
        _exit(127);
    }
    close(fds[1]);
    size_t len;
    int st = 0;
    const char *out = read_child(fds[0], pid, &st, &len);
    close(fds[0]);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("train into a pipe: status %d\n%s", st, out);
    if (strchr(out, '\r') || strstr(out, "\033["))
        fail_msg("carriage returns or escapes in a log:\n%s", out);
    assert_int_equal(count(out, "  step "), 3);
    assert_non_null(strstr(out, "epoch 2/5  step 36/64  loss "));
}

static int setup(void **state) {
    (void)state;
    if (tgt_dir_setup("tg_progress"))
        return -1;
    g_data = strdup(tgt_make_dataset());
    return 0;
}

static int teardown(void **state) {
    (void)state;
    free(g_data);
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bar_on_terminal),
        cmocka_unit_test(test_plain_lines_in_a_pipe),
    };
    return cmocka_run_group_tests_name("progress", tests, setup, teardown);
}
