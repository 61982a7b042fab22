/*
 * launch/metrics.c: writing and reading the JSONL metrics (see metrics.h).
 */
#include "metrics.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "train.h"

/* Unix time in seconds with milliseconds. */
static double now_unix(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1e3;
}

/* A number, or null for NaN and infinities (JSON has neither). */
static void add_num(cJSON *o, const char *key, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

/* Integers beyond 2^53 would lose digits as a double: written exactly. */
static void add_int(cJSON *o, const char *key, long long v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    cJSON_AddItemToObject(o, key, cJSON_CreateRaw(b));
}

static void add_u64(cJSON *o, const char *key, unsigned long long v) {
    char b[32];
    snprintf(b, sizeof b, "%llu", v);
    cJSON_AddItemToObject(o, key, cJSON_CreateRaw(b));
}

/* Prints o as one line, with "time" as its last field, and frees it. */
static int emit(FILE *f, cJSON *o) {
    cJSON_AddNumberToObject(o, "time", now_unix());
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return -1;
    int bad = fputs(s, f) < 0 || fputc('\n', f) == EOF || fflush(f) != 0;
    cJSON_free(s);
    return bad ? -1 : 0;
}

static cJSON *event(const char *name) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "event", name);
    return o;
}

int tg_metrics_write_config(FILE *f, const tg_trainer_config *cfg, const train_opts *opts,
                            int world, int64_t resumed_from_step) {
    cJSON *o = event("config");
    if (!o)
        return -1;
    add_int(o, "world_size", world);
    if (resumed_from_step >= 0)
        add_int(o, "resumed_from_step", resumed_from_step);
    else
        cJSON_AddNullToObject(o, "resumed_from_step");
    tg_cfg_field fl[TG_CFG_MAX_FIELDS];
    int n = tg_train_config_fields(cfg, opts, fl, TG_CFG_MAX_FIELDS);
    for (int i = 0; i < n && i < TG_CFG_MAX_FIELDS; i++) {
        switch (fl[i].kind) {
        case TG_CFG_STR:
            cJSON_AddStringToObject(o, fl[i].key, fl[i].s);
            break;
        case TG_CFG_INT:
            add_int(o, fl[i].key, fl[i].i);
            break;
        case TG_CFG_U64:
            add_u64(o, fl[i].key, fl[i].u);
            break;
        case TG_CFG_BOOL:
            cJSON_AddBoolToObject(o, fl[i].key, fl[i].i != 0);
            break;
        case TG_CFG_NULL:
            cJSON_AddNullToObject(o, fl[i].key);
            break;
        default:
            add_num(o, fl[i].key, fl[i].d);
            break;
        }
    }
    return emit(f, o);
}

int tg_metrics_write_event(FILE *f, const tg_trainer_event *ev, int world, double rss,
                           double peak) {
    cJSON *o = event(ev->kind == TG_EVENT_STEP    ? "step"
                     : ev->kind == TG_EVENT_END ? "end"
                                                : "epoch");
    if (!o)
        return -1;
    /* The field order of the first metrics files, kept for readers that
     * match prefixes: a step's step first, an epoch's epoch first. */
    if (ev->kind == TG_EVENT_STEP) {
        add_int(o, "step", ev->step);
        add_int(o, "epoch", ev->epoch);
        add_num(o, "loss", ev->loss);
        add_num(o, "lr", ev->lr);
        if (ev->tokens_per_s > 0)
            add_num(o, "tokens_per_s", ev->tokens_per_s);
        return emit(f, o);
    }
    add_int(o, "epoch", ev->epoch);
    add_int(o, "step", ev->step);
    add_num(o, "train_loss", ev->train_loss);
    add_num(o, "test_loss", ev->eval.loss);
    add_num(o, "test_acc", ev->eval.accuracy);
    /* Regression: test_loss is the MSE, test_acc null, and the MSE and MAE
     * under their own names. */
    bool reg = ev->eval.regression || (ev->has_val && ev->val.regression);
    if (reg) {
        add_num(o, "test_mse", ev->eval.loss);
        add_num(o, "test_mae", ev->eval.mae);
    }
    if (ev->has_val) {
        add_num(o, "val_loss", ev->val.loss);
        if (reg) {
            add_num(o, "val_mse", ev->val.loss);
            add_num(o, "val_mae", ev->val.mae);
        } else {
            add_num(o, "val_acc", ev->val.accuracy);
        }
    }
    /* Token data: perplexity and bits per byte beside the losses, and the
     * throughput in tokens. */
    if (ev->eval.tokens || (ev->has_val && ev->val.tokens)) {
        add_num(o, "test_ppl", exp(ev->eval.loss));
        add_num(o, "test_bpb", ev->eval.bits_per_byte);
        if (ev->has_val) {
            add_num(o, "val_ppl", exp(ev->val.loss));
            add_num(o, "val_bpb", ev->val.bits_per_byte);
        }
        add_num(o, "tokens_per_s", ev->tokens_per_s);
    }
    add_num(o, "samples_per_s", ev->samples_per_s);
    add_num(o, "seconds", ev->seconds);
    add_num(o, "eval_seconds", ev->eval.seconds + (ev->has_val ? ev->val.seconds : 0));
    add_num(o, "rss_mb", rss >= 0 ? rss : NAN);
    add_num(o, "peak_rss_mb", peak >= 0 ? peak : NAN);
    add_int(o, "world", world);
    return emit(f, o);
}

/* ---- reading ---- */

static int grow(double **arrs[], int narr, size_t *cap, size_t need) {
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? 2 * *cap : 256;
    for (int i = 0; i < narr; i++) {
        double *p = realloc(*arrs[i], nc * sizeof(double));
        if (!p)
            return -1;
        *arrs[i] = p;
    }
    *cap = nc;
    return 0;
}

/* The number at key, NaN for null; false when absent or of another type. */
static bool get_num(const cJSON *o, const char *key, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsNumber(it)) {
        *v = it->valuedouble;
        return true;
    }
    if (cJSON_IsNull(it)) {
        *v = NAN;
        return true;
    }
    return false;
}

/* A resumed run restarts at step s: what the first run logged after s is
 * dropped (the resumed run logs it again), so a curve never goes back. */
static void cut_steps_after(tg_metrics_curves *c, double s) {
    while (c->n_steps && c->step[c->n_steps - 1] > s)
        c->n_steps--;
}

static void cut_epochs_after(tg_metrics_curves *c, double s) {
    while (c->n_epochs && c->ep_step[c->n_epochs - 1] > s)
        c->n_epochs--;
}

static int take(tg_metrics_curves *c, const cJSON *o, const char *ev, char *why, size_t wl) {
    if (!strcmp(ev, "config")) {
        double s;
        if (get_num(o, "resumed_from_step", &s) && isfinite(s)) {
            cut_steps_after(c, s);
            cut_epochs_after(c, s);
        }
        return 0;
    }
    if (!strcmp(ev, "step")) {
        double st, loss, ep;
        if (!get_num(o, "step", &st) || !get_num(o, "loss", &loss) || !get_num(o, "epoch", &ep)) {
            snprintf(why, wl, "a \"step\" event needs the numbers step, epoch and loss");
            return -1;
        }
        cut_steps_after(c, st - 1);
        double **a[] = {&c->step, &c->step_epoch, &c->loss};
        if (grow(a, 3, &c->cap_steps, c->n_steps + 1))
            goto nomem;
        c->step[c->n_steps] = st;
        c->step_epoch[c->n_steps] = ep;
        c->loss[c->n_steps++] = loss;
        return 0;
    }
    if (!strcmp(ev, "epoch")) {
        double v[11];
        static const char *const keys[] = {"epoch",     "step",          "train_loss", "test_loss",
                                           "test_acc",  "samples_per_s", "val_loss",   "val_acc",
                                           "test_mae",  "val_mae",       "tokens_per_s"};
        for (int i = 0; i < 11; i++)
            if (!get_num(o, keys[i], &v[i])) {
                if (i >= 6) { /* optional */
                    v[i] = NAN;
                    continue;
                }
                snprintf(why, wl,
                         "an \"epoch\" event needs the numbers epoch, step, train_loss, "
                         "test_loss, test_acc and samples_per_s (%s is missing)",
                         keys[i]);
                return -1;
            }
        cut_epochs_after(c, v[1] - 1);
        double **a[] = {&c->ep,      &c->ep_step, &c->train_loss, &c->test_loss, &c->test_acc,
                        &c->sps,     &c->val_loss, &c->val_acc,   &c->test_mae,  &c->val_mae,
                        &c->tps};
        if (grow(a, 11, &c->cap_epochs, c->n_epochs + 1))
            goto nomem;
        for (int i = 0; i < 11; i++)
            (*a[i])[c->n_epochs] = v[i];
        c->n_epochs++;
    }
    return 0;
nomem:
    snprintf(why, wl, "out of memory");
    return -1;
}

int tg_metrics_parse(const char *text, size_t len, const char *name, tg_metrics_curves *c,
                     char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    size_t at = 0;
    long lineno = 0;
    char why[256];
    while (at < len) {
        const char *line = text + at;
        const char *nl = memchr(line, '\n', len - at);
        size_t n = nl ? (size_t)(nl - line) : len - at;
        at += n + (nl != NULL);
        lineno++;
        size_t k = 0;
        while (k < n && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
            k++;
        if (k == n)
            continue;
        cJSON *o = cJSON_ParseWithLength(line, n);
        const cJSON *ev = o ? cJSON_GetObjectItemCaseSensitive(o, "event") : NULL;
        int r = 0;
        if (!cJSON_IsObject(o)) {
            snprintf(why, sizeof why, "not a JSON object");
            r = -1;
        } else if (!cJSON_IsString(ev)) {
            snprintf(why, sizeof why, "no \"event\" string");
            r = -1;
        } else {
            r = take(c, o, ev->valuestring, why, sizeof why);
        }
        cJSON_Delete(o);
        if (r) {
            snprintf(err, errlen, "%s:%ld: %s", name, lineno, why);
            tg_metrics_curves_free(c);
            return -1;
        }
    }
    return 0;
}

void tg_metrics_curves_free(tg_metrics_curves *c) {
    free(c->step);
    free(c->step_epoch);
    free(c->loss);
    free(c->ep);
    free(c->ep_step);
    free(c->train_loss);
    free(c->test_loss);
    free(c->test_acc);
    free(c->sps);
    free(c->val_loss);
    free(c->val_acc);
    free(c->test_mae);
    free(c->val_mae);
    free(c->tps);
    memset(c, 0, sizeof *c);
}
