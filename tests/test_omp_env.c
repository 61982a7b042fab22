/*
 * tests/test_omp_env.c: the tapegrad executable starts OpenMP with a short
 * spin before idle workers sleep (kernels/cpu/omp_env.c), unless the user
 * chose a wait policy or spin count, which then stands.
 *
 * What libgomp really uses is read from libgomp itself: OMP_DISPLAY_ENV=verbose
 * makes it print its settings (GOMP_SPINCOUNT among them) on stderr when it
 * starts, so the test sees the value after the executable's start-up code ran.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* Runs `tapegrad --version` with OMP_DISPLAY_ENV=verbose and the given
 * variable (NAME=VALUE, or NULL) set and the others unset; returns its
 * stderr in `out`. */
static void run_cli(const char *setting, char *out, size_t outlen) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsetenv("OMP_WAIT_POLICY");
        unsetenv("GOMP_SPINCOUNT");
        setenv("OMP_DISPLAY_ENV", "verbose", 1);
        if (setting)
            putenv((char *)setting);
        dup2(fds[1], 2);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 1);
        close(fds[0]);
        close(fds[1]);
        execl(TG_CLI_PATH, TG_CLI_PATH, "--version", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < outlen && (r = read(fds[0], out + n, outlen - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* The value libgomp printed last for `name` ("  NAME = 'VALUE'"), or "":
 * the last one is what the process that ran used (a first start that
 * executes itself again prints its own settings before). */
static void display_value(const char *text, const char *name, char *val, size_t len) {
    char key[64];
    snprintf(key, sizeof key, "  %s = '", name);
    const char *p = NULL;
    for (const char *q = strstr(text, key); q; q = strstr(q + 1, key))
        p = q;
    val[0] = '\0';
    if (!p)
        return;
    p += strlen(key);
    size_t i = 0;
    while (p[i] && p[i] != '\'' && i + 1 < len) {
        val[i] = p[i];
        i++;
    }
    val[i] = '\0';
}

static char g_out[1 << 16];

static void test_default_spin_is_short(void **state) {
    (void)state;
    char v[64];
    run_cli(NULL, g_out, sizeof g_out);
    display_value(g_out, "GOMP_SPINCOUNT", v, sizeof v);
    if (v[0] == '\0') {
        /* Not libgomp (another OpenMP runtime prints other names). */
        print_message("skipped: the OpenMP runtime did not print GOMP_SPINCOUNT\n");
        skip();
    }
    assert_string_equal(v, "1000");
}

static void test_user_spin_count_stands(void **state) {
    (void)state;
    char v[64];
    run_cli("GOMP_SPINCOUNT=7", g_out, sizeof g_out);
    display_value(g_out, "GOMP_SPINCOUNT", v, sizeof v);
    if (v[0] == '\0')
        skip();
    assert_string_equal(v, "7");
}

static void test_user_wait_policy_stands(void **state) {
    (void)state;
    char v[64];
    run_cli("OMP_WAIT_POLICY=active", g_out, sizeof g_out);
    display_value(g_out, "OMP_WAIT_POLICY", v, sizeof v);
    if (v[0] == '\0')
        skip();
    assert_string_equal(v, "ACTIVE");
    display_value(g_out, "GOMP_SPINCOUNT", v, sizeof v);
    assert_string_not_equal(v, "1000");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_spin_is_short),
        cmocka_unit_test(test_user_spin_count_stands),
        cmocka_unit_test(test_user_wait_policy_stands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
