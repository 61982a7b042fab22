/*
 * tests/test_cli.c: the tapegrad executable's global options and exit codes.
 *
 * Runs the built CLI (TG_CLI_PATH) as a child process, capturing stdout and
 * stderr in temporary files, so that what is checked is what a user or a
 * batch script sees.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tapegrad/base.h"

extern char **environ;

#define CAP 65536

typedef struct cli_result {
    int code; /* exit status, or -1 when the child did not exit normally */
    char out[CAP];
    char err[CAP];
} cli_result;

static void slurp(FILE *f, char *buf) {
    rewind(f);
    size_t n = fread(buf, 1, CAP - 1, f);
    buf[n] = '\0';
}

/* Runs TG_CLI_PATH with the given arguments (NULL-terminated after argv[0]). */
static void run_cli(cli_result *r, char *const argv[]) {
    FILE *out = tmpfile();
    FILE *err = tmpfile();
    assert_non_null(out);
    assert_non_null(err);

    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, fileno(out), STDOUT_FILENO), 0);
    assert_int_equal(posix_spawn_file_actions_adddup2(&fa, fileno(err), STDERR_FILENO), 0);
    pid_t pid;
    int rc = posix_spawn(&pid, TG_CLI_PATH, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(rc, 0);

    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    r->code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    slurp(out, r->out);
    slurp(err, r->err);
    fclose(out);
    fclose(err);
}

static cli_result *result(void) {
    cli_result *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    return r;
}

static void test_version(void **state) {
    (void)state;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "--version", NULL});
    assert_int_equal(r->code, 0);
    assert_non_null(strstr(r->out, "tapegrad " TG_VERSION_STRING "\n"));
    assert_non_null(strstr(r->out, "CUDA backend: "));
    free(r);
}

static void check_help(const char *flag) {
    static const char *const cmds[] = {"train", "eval", "convert", "inspect", "export"};
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", (char *)flag, NULL});
    assert_int_equal(r->code, 0);
    assert_non_null(strstr(r->out, "usage: tapegrad"));
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        /* Each command is listed at the start of an indented line. */
        char row[32];
        snprintf(row, sizeof(row), "\n  %s ", cmds[i]);
        if (!strstr(r->out, row))
            fail_msg("'%s' help does not list '%s':\n%s", flag, cmds[i], r->out);
    }
    free(r);
}

static void test_help(void **state) {
    (void)state;
    check_help("--help");
    check_help("-h");
}

static void test_unknown_command(void **state) {
    (void)state;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "frobnicate", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "frobnicate"));
    assert_non_null(strstr(r->err, "--help"));
    assert_string_equal(r->out, "");
    free(r);
}

static void test_unknown_option(void **state) {
    (void)state;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", "--frobnicate", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "--frobnicate"));
    assert_non_null(strstr(r->err, "--help"));
    free(r);
}

static void test_no_args(void **state) {
    (void)state;
    cli_result *r = result();
    run_cli(r, (char *const[]){"tapegrad", NULL});
    assert_int_equal(r->code, 2);
    assert_non_null(strstr(r->err, "usage: tapegrad"));
    assert_string_equal(r->out, "");
    free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),         cmocka_unit_test(test_help),
        cmocka_unit_test(test_unknown_command), cmocka_unit_test(test_unknown_option),
        cmocka_unit_test(test_no_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
