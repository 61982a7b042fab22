/*
 * tests/test_torch_fixture_coverage.c: the PyTorch fixture suite covers every
 * op. tests/fixtures/ops.txt, attn.txt and lnorm.txt (read by tests/torch_fixtures_load.h) must have
 * at least one case per row of ops.def, so a new op without a PyTorch
 * reference fails here, and every case must name an ops.def row or one of the
 * composite functions test_torch_fixtures.c runs, so no case claims to test
 * a function it never calls. A fixture file that cannot be read fails too.
 * The cases themselves run in tests/test_torch_fixtures.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tapegrad/runtime.h"
#include "torch_fixtures_load.h"

static void test_every_op_has_a_case(void **state) {
    (void)state;
    if (g_load_error[0])
        fail_msg("no fixtures loaded, so no op is covered: %s", g_load_error);
    int missing = 0;
    for (int op = 0; op < TG_OP_COUNT; op++) {
        const char *name = tg_op_name((tg_op)op);
        bool found = false;
        for (int i = 0; i < g_ncases && !found; i++)
            found = strcmp(g_cases[i].op, name) == 0;
        if (!found) {
            print_error("op '%s' (ops.def row %d) has no PyTorch fixture case\n", name, op);
            missing++;
        }
    }
    /* A case whose op is neither a row nor a known composite would never run
     * the function it claims to test. */
    for (int i = 0; i < g_ncases; i++) {
        bool known = op_by_name(g_cases[i].op) >= 0;
        for (size_t k = 0; !known && k < sizeof k_composites / sizeof k_composites[0]; k++)
            known = strcmp(g_cases[i].op, k_composites[k]) == 0;
        for (size_t k = 0; !known && k < sizeof k_composites2 / sizeof k_composites2[0]; k++)
            known = strcmp(g_cases[i].op, k_composites2[k]) == 0;
        for (size_t k = 0; !known && k < sizeof k_composites_attn / sizeof k_composites_attn[0];
             k++)
            known = strcmp(g_cases[i].op, k_composites_attn[k]) == 0;
        if (!known) {
            print_error("fixture case %s/%s names an unknown op\n", g_cases[i].op, g_cases[i].id);
            missing++;
        }
    }
    if (missing)
        fail_msg("%d ops without fixtures or unknown fixture ops (add cases to "
                 "tests/gen_fixtures.py)",
                 missing);
}

int main(void) {
    if (load_fixtures(TG_FIXTURE_DIR "/ops.txt") == 0)
        if (load_fixtures(TG_FIXTURE_DIR "/attn.txt") == 0)
            load_fixtures(TG_FIXTURE_DIR "/lnorm.txt");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op_has_a_case),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    free_cases();
    return failed ? 1 : 0;
}
