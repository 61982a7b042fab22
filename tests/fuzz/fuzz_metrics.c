/*
 * tests/fuzz/fuzz_metrics.c: the reader of JSONL metrics files that
 * `tapegrad plot` uses (launch/metrics.c), on arbitrary bytes.
 */
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tg_metrics_curves c;
    char err[512];
    if (tg_metrics_parse((const char *)data, size, "fuzz.jsonl", &c, err, sizeof err) == 0)
        tg_metrics_curves_free(&c);
    return 0;
}
