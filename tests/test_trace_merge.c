/*
 * tests/test_trace_merge.c: `tapegrad trace merge` moves each rank's events
 * onto rank 0's clock by the offset in its file, keeps every event, and
 * refuses files that are not traces with exit 3 and the file's name; typos
 * of commands and of the commands' options get a suggestion.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "test_util.h"
#include "trace_merge.h"

static const char *rank0 =
    "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"rank\":0,\"clock_offset_us\":0.000,"
    "\"dropped_events\":0},\"traceEvents\":[\n"
    "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\"rank 0\"}},\n"
    "{\"name\":\"forward\",\"ph\":\"X\",\"ts\":1000.000,\"dur\":5.000,\"pid\":0,\"tid\":0,"
    "\"args\":{\"step\":1}}\n]}\n";
static const char *rank1 =
    "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"rank\":1,\"clock_offset_us\":250.500,"
    "\"dropped_events\":0},\"traceEvents\":[\n"
    "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,\"args\":{\"name\":\"rank 1\"}},\n"
    "{\"name\":\"forward\",\"ph\":\"X\",\"ts\":1250.500,\"dur\":5.000,\"pid\":1,\"tid\":0,"
    "\"args\":{\"step\":1}},\n"
    "{\"name\":\"allreduce bucket 0\",\"ph\":\"X\",\"ts\":1300.500,\"dur\":9.000,\"pid\":1,"
    "\"tid\":1,\"args\":{\"step\":1}}\n]}\n";

static const cJSON *nth(const cJSON *arr, int i) { return cJSON_GetArrayItem(arr, i); }

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void test_merge_shifts_onto_rank0(void **state) {
    (void)state;
    cJSON *ev = cJSON_CreateArray();
    char err[256];
    double off;
    assert_int_equal(tg_trace_merge_add(ev, rank0, strlen(rank0), "r0", &off, err, sizeof err), 0);
    assert_true(off == 0);
    assert_int_equal(tg_trace_merge_add(ev, rank1, strlen(rank1), "r1", &off, err, sizeof err), 0);
    assert_true(off == 250.5);
    assert_int_equal(cJSON_GetArraySize(ev), 5);
    /* Both ranks' forward began at the same instant of rank 0's clock. */
    assert_true(num(nth(ev, 1), "ts") == 1000.0);
    assert_true(num(nth(ev, 3), "ts") == 1000.0);
    assert_true(num(nth(ev, 4), "ts") == 1050.0);
    assert_true(num(nth(ev, 4), "dur") == 9.0);
    assert_true(num(nth(ev, 4), "pid") == 1);
    assert_null(cJSON_GetObjectItem(nth(ev, 2), "ts")); /* metadata has none */
    cJSON_Delete(ev);
}

static void test_merge_refuses_non_traces(void **state) {
    (void)state;
    cJSON *ev = cJSON_CreateArray();
    char err[256];
    double off;
    static const char *const bad[] = {
        "", "[]", "{\"traceEvents\":3}", "{\"traceEvents\":[1]}",
        "{\"traceEvents\":[{\"ts\":\"x\"}]}", "{\"traceEvents\":[{\"ts\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_int_equal(
            tg_trace_merge_add(ev, bad[i], strlen(bad[i]), "bad.json", &off, err, sizeof err), -1);
        assert_non_null(strstr(err, "bad.json: "));
    }
    cJSON_Delete(ev);
}

static void test_cli(void **state) {
    (void)state;
    const char *a = tgt_path("t.rank0.json"), *b = tgt_path("t.rank1.json");
    const char *out = tgt_path("all.json"), *junk = tgt_path("junk.json");
    tgt_write_file(a, rank0);
    tgt_write_file(b, rank1);
    tgt_write_file(junk, "{\"traceEvents\":");
    assert_int_equal(tgt_run("trace merge '%s' '%s' -o '%s'", a, b, out), 0);
    tgt_expect_out("clock offset +250.5 us");
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(root, "traceEvents")), 5);
    cJSON_Delete(root);
    assert_int_equal(tgt_run("trace merge '%s' '%s' -o '%s'", a, junk, out), 3);
    tgt_expect_out("junk.json: not a Chrome trace");
    assert_int_equal(tgt_run("trace merge '%s/none.json' -o '%s'", tgt_dir, out), 3);
    assert_int_equal(tgt_run("trace merge '%s'", a), 2);
    tgt_expect_out("-o OUT.json is required");
    assert_int_equal(tgt_run("trace split"), 2);
    assert_int_equal(tgt_run("trace --help"), 0);
    tgt_expect_out("exit codes");
    /* typos of commands and global options get the nearest name */
    assert_int_equal(tgt_run("trian"), 2);
    tgt_expect_out("did you mean 'train'?");
    assert_int_equal(tgt_run("--verison"), 2);
    tgt_expect_out("did you mean '--version'?");
    assert_int_equal(tgt_run("frobnicate"), 2);
    assert_null(strstr(tgt_out, "did you mean"));
    /* and so do the options of train and eval */
    assert_int_equal(tgt_run("train --epoch 3"), 2);
    tgt_expect_out("unknown option '--epoch'; did you mean --epochs?");
    assert_int_equal(tgt_run("train --bathc-size=3"), 2);
    tgt_expect_out("did you mean --batch-size?");
    assert_int_equal(tgt_run("eval --ckpts x"), 2);
    tgt_expect_out("did you mean --ckpt?");
    assert_int_equal(tgt_run("train --zzz"), 2);
    assert_null(strstr(tgt_out, "did you mean"));
    assert_int_equal(tgt_run("export --ckt x"), 2);
    tgt_expect_out("did you mean --ckpt?");
    assert_int_equal(tgt_run("plot a.jsonl --ccsv x"), 2);
    tgt_expect_out("did you mean --csv?");
    assert_int_equal(tgt_run("convert idx --imags a"), 2);
    tgt_expect_out("did you mean --images?");
    assert_int_equal(tgt_run("convert npy --xx a"), 2);
    tgt_expect_out("did you mean --x?");
}

static int setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_trace_merge");
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_shifts_onto_rank0),
        cmocka_unit_test(test_merge_refuses_non_traces),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests_name("trace_merge", tests, setup, teardown);
}
