/*
 * tests/fuzz/fuzz_trace.c: the trace reader of `tapegrad trace merge`
 * (launch/cmd_trace.c), on arbitrary bytes.
 */
#include <stddef.h>
#include <stdint.h>

#include "trace_merge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cJSON *events = cJSON_CreateArray();
    char err[512];
    double off;
    if (events)
        tg_trace_merge_add(events, (const char *)data, size, "fuzz.json", &off, err, sizeof err);
    cJSON_Delete(events);
    return 0;
}
