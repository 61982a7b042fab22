/*
 * tests/test_metrics.c: the JSONL metrics writer (launch/metrics.c). Every
 * line parses as JSON; strings with quotes, backslashes, control characters
 * and non-ASCII come back unchanged; numbers are numbers (a seed beyond 2^53
 * exactly), NaN is null, and every event has its "time".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "metrics.h"
#include "tapegrad/trainer.h"

static char *written(FILE *f) {
    static char buf[1 << 14];
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    return buf;
}

static void test_config_strings_and_numbers(void **state) {
    (void)state;
    tg_trainer_config cfg = tg_trainer_defaults(TG_MODEL_MLP);
    const char *weird = "tr\"ai\\n\n\t\x01 spl\xc3\xbc\xe2\x82\xac";
    cfg.train_split = weird;
    cfg.seed = 18446744073709551557ull; /* 2^64 - 59 */
    cfg.optim.lr = 0.0025;
    FILE *f = tmpfile();
    assert_non_null(f);
    double t0 = (double)time(NULL);
    assert_int_equal(tg_metrics_write_config(f, &cfg, NULL, 4, 120), 0);
    char *line = written(f);
    fclose(f);
    assert_non_null(strchr(line, '\n'));
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1); /* one line */
    cJSON *o = cJSON_Parse(line);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "event")->valuestring, "config");
    assert_string_equal(cJSON_GetObjectItem(o, "train_split")->valuestring, weird);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(o, "lr")));
    assert_true(cJSON_GetObjectItem(o, "lr")->valuedouble == 0.0025);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(o, "world_size")));
    assert_int_equal(cJSON_GetObjectItem(o, "world_size")->valueint, 4);
    assert_int_equal(cJSON_GetObjectItem(o, "resumed_from_step")->valueint, 120);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(o, "batch_size")));
    assert_non_null(strstr(line, "\"seed\":18446744073709551557"));
    double t = cJSON_GetObjectItem(o, "time")->valuedouble;
    assert_true(t >= t0 - 1 && t <= t0 + 60);
    cJSON_Delete(o);
}

static void test_event_nan_is_null(void **state) {
    (void)state;
    tg_trainer_event ev = {.kind = TG_EVENT_EPOCH, .step = 7, .epoch = 2, .train_loss = 0.5};
    ev.eval.loss = 0.0 / 0.0;
    ev.eval.accuracy = 0.75;
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(tg_metrics_write_event(f, &ev, 2, -1, 12.5), 0);
    char *line = written(f);
    fclose(f);
    cJSON *o = cJSON_Parse(line);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "event")->valuestring, "epoch");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "test_loss")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "rss_mb")));
    assert_true(cJSON_GetObjectItem(o, "peak_rss_mb")->valuedouble == 12.5);
    assert_int_equal(cJSON_GetObjectItem(o, "step")->valueint, 7);
    assert_int_equal(cJSON_GetObjectItem(o, "world")->valueint, 2);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(o, "time")));
    cJSON_Delete(o);
}

/* What the writer writes, the reader reads back. */
static void test_round_trip(void **state) {
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    tg_trainer_event s1 = {.kind = TG_EVENT_STEP, .step = 10, .epoch = 1, .loss = 1.5, .lr = 0.1};
    tg_trainer_event e1 = {.kind = TG_EVENT_EPOCH, .step = 10, .epoch = 1, .train_loss = 1.25,
                           .samples_per_s = 100};
    e1.eval.loss = 1.0;
    e1.eval.accuracy = 0.5;
    assert_int_equal(tg_metrics_write_event(f, &s1, 1, -1, -1), 0);
    assert_int_equal(tg_metrics_write_event(f, &e1, 1, 3, 4), 0);
    char *text = written(f);
    fclose(f);
    tg_metrics_curves c;
    char err[256];
    assert_int_equal(tg_metrics_parse(text, strlen(text), "m", &c, err, sizeof err), 0);
    assert_int_equal(c.n_steps, 1);
    assert_int_equal(c.n_epochs, 1);
    assert_true(c.loss[0] == 1.5 && c.step[0] == 10 && c.step_epoch[0] == 1);
    assert_true(c.train_loss[0] == 1.25 && c.test_loss[0] == 1.0 && c.test_acc[0] == 0.5);
    assert_true(c.sps[0] == 100 && c.ep[0] == 1 && c.ep_step[0] == 10);
    tg_metrics_curves_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_strings_and_numbers),
        cmocka_unit_test(test_event_nan_is_null),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
