/*
 * tests/test_blas_info.c: tg_blas_info_get against independent readings.
 *
 *   - core and config are what OpenBLAS itself says;
 *   - forced_core follows OPENBLAS_CORETYPE as it is set and unset;
 *   - cpu_avx512 agrees with the flags line of /proc/cpuinfo;
 *   - in a child process started with OPENBLAS_CORETYPE=Haswell the core is
 *     Haswell and not an AVX-512 one; with SkylakeX the core is an AVX-512
 *     one exactly when the CPU has AVX-512 (OpenBLAS falls back otherwise).
 *
 * OpenBLAS reads the variable only when it is loaded, hence the child
 * processes: this test program runs itself with "--child", which prints
 * one line with the query's answer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tapegrad/runtime.h"

/* The value OPENBLAS_CORETYPE had when the program started (or NULL), and
 * this program's own path, to run it again as a child. */
static char *g_saved;
static char g_self[4096];

static void restore_env(void) {
    if (g_saved)
        setenv("OPENBLAS_CORETYPE", g_saved, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
}

static void test_core_is_openblas_own(void **state) {
    (void)state;
    tg_blas_info b;
    tg_blas_info_get(&b);
    assert_non_null(b.core);
    assert_true(strlen(b.core) > 0);
    assert_string_equal(b.core, openblas_get_corename());
    assert_string_equal(b.config, openblas_get_config());
    assert_int_equal(strncmp(b.config, "OpenBLAS ", 9), 0);
}

static void test_forced_core_follows_env(void **state) {
    (void)state;
    tg_blas_info b;
    assert_int_equal(setenv("OPENBLAS_CORETYPE", "Sandybridge", 1), 0);
    tg_blas_info_get(&b);
    assert_non_null(b.forced_core);
    assert_string_equal(b.forced_core, getenv("OPENBLAS_CORETYPE"));
    assert_string_equal(b.forced_core, "Sandybridge");

    assert_int_equal(unsetenv("OPENBLAS_CORETYPE"), 0);
    tg_blas_info_get(&b);
    assert_null(b.forced_core);

    /* OpenBLAS ignores an empty value; so does the query. */
    assert_int_equal(setenv("OPENBLAS_CORETYPE", "", 1), 0);
    tg_blas_info_get(&b);
    assert_null(b.forced_core);
    restore_env();
}

/* True when the whitespace-separated list `flags` holds the word `w`. */
static bool has_word(const char *flags, const char *w) {
    size_t n = strlen(w);
    for (const char *p = flags; (p = strstr(p, w)) != NULL; p += n)
        if ((p == flags || p[-1] == ' ' || p[-1] == '\t') &&
            (p[n] == ' ' || p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

static void test_cpu_avx512_matches_cpuinfo(void **state) {
    (void)state;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        skip();
    static char line[16384];
    bool found = false, avx512 = false;
    while (!found && fgets(line, sizeof line, f))
        if (strncmp(line, "flags", 5) == 0) {
            found = true;
            avx512 = has_word(line, "avx512f") && has_word(line, "avx512bw") &&
                     has_word(line, "avx512dq") && has_word(line, "avx512vl");
        }
    fclose(f);
    tg_blas_info b;
    tg_blas_info_get(&b);
    /* Without a flags line (not x86) the CPU has no AVX-512 either. */
    assert_int_equal(b.cpu_avx512, avx512);
}

/* Runs this program with --child under OPENBLAS_CORETYPE=core; fills core
 * (the name the child's OpenBLAS reports) and the child's two booleans. */
static void run_child(const char *core, char *got, size_t len, int *core_avx512, int *cpu_avx512) {
    char cmd[4200];
    assert_null(strchr(g_self, '\''));
    snprintf(cmd, sizeof cmd, "exec '%s' --child", g_self);
    assert_int_equal(setenv("OPENBLAS_CORETYPE", core, 1), 0);
    FILE *p = popen(cmd, "r");
    restore_env();
    assert_non_null(p);
    char line[256] = "";
    assert_non_null(fgets(line, sizeof line, p));
    assert_int_equal(pclose(p), 0);
    char name[64];
    assert_int_equal(
        sscanf(line, "core=%63s core_avx512=%d cpu_avx512=%d", name, core_avx512, cpu_avx512), 3);
    snprintf(got, len, "%s", name);
}

static void test_forced_core_in_child(void **state) {
    (void)state;
    tg_blas_info here;
    tg_blas_info_get(&here);
    char core[64];
    int core_avx512, cpu_avx512;

    run_child("Haswell", core, sizeof core, &core_avx512, &cpu_avx512);
    assert_int_equal(cpu_avx512, here.cpu_avx512);
    assert_false(core_avx512);
    if (__builtin_cpu_supports("avx2"))
        assert_string_equal(core, "Haswell");

    /* A lower-case name is taken too; OpenBLAS answers with its own spelling. */
    run_child("skylakex", core, sizeof core, &core_avx512, &cpu_avx512);
    assert_int_equal(core_avx512, here.cpu_avx512);
    if (here.cpu_avx512)
        assert_string_equal(core, "SkylakeX");
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--child") == 0) {
        tg_blas_info b;
        tg_blas_info_get(&b);
        printf("core=%s core_avx512=%d cpu_avx512=%d\n", b.core, b.core_avx512, b.cpu_avx512);
        return 0;
    }
    ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0)
        return 1;
    g_self[n] = '\0';
    const char *v = getenv("OPENBLAS_CORETYPE");
    g_saved = v ? strdup(v) : NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_is_openblas_own),
        cmocka_unit_test(test_forced_core_follows_env),
        cmocka_unit_test(test_cpu_avx512_matches_cpuinfo),
        cmocka_unit_test(test_forced_core_in_child),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(g_saved);
    return rc;
}
