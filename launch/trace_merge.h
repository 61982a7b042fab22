/*
 * launch/trace_merge.h: merging the per-rank Chrome traces of `tapegrad
 * train --trace` into one file (`tapegrad trace merge`). Private to launch/.
 */
#ifndef TAPEGRAD_LAUNCH_TRACE_MERGE_H
#define TAPEGRAD_LAUNCH_TRACE_MERGE_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* Parses one rank's trace (text, len bytes; name for messages) and appends
 * copies of its events to the array `events`, with every "ts" moved onto
 * rank 0's clock (minus the file's otherData.clock_offset_us). *offset_us
 * gets that offset (0 when the file has none). Returns 0, or -1 with err
 * naming the file and what is wrong. */
int tg_trace_merge_add(cJSON *events, const char *text, size_t len, const char *name,
                       double *offset_us, char *err, size_t errlen);

#endif
