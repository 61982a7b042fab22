/* A Chrome-trace (trace event format) writer: spans are kept in a buffer
 * allocated once and written as complete ("X") events at close, so that
 * recording costs no I/O and no allocation during training. Every span
 * carries the step it belongs to; the file's "otherData" holds the rank, the
 * offset of this rank's clock from rank 0's (for `tapegrad trace merge`) and
 * the number of spans dropped because the buffer was full. */
#include "comm_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TG__TRACE_NAME 48
#define TG__TRACE_DEPTH 16

typedef struct trace_event {
    char name[TG__TRACE_NAME];
    double t0, t1;
    int64_t step;
    int track;
} trace_event;

struct tg_trace {
    char path[1024];
    int rank;
    int64_t step;
    double clock_offset_us;
    trace_event *ev;
    int64_t n, cap, dropped;
    /* Open spans of track 0. */
    trace_event open[TG__TRACE_DEPTH];
    int depth;
};

double tg_trace_now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e6 * (double)t.tv_sec + 1e-3 * (double)t.tv_nsec;
}

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a, b);
}

tg_status tg_trace_open(const char *prefix, int rank, int max_events, tg_trace **out, char *err,
                        size_t errlen)
{
    if (!out || !prefix || !*prefix) {
        set_err(err, errlen, "trace: %s%s", "empty file prefix or NULL output", "");
        return TG_ERR_INVALID;
    }
    *out = NULL;
    tg_trace *t = calloc(1, sizeof *t);
    int64_t cap = max_events > 0 ? max_events : 65536;
    if (t)
        t->ev = malloc((size_t)cap * sizeof *t->ev);
    if (!t || !t->ev) {
        free(t);
        set_err(err, errlen, "trace %s: %s", prefix, "out of memory");
        return TG_ERR_NOMEM;
    }
    int k = snprintf(t->path, sizeof t->path, "%s.rank%d.json", prefix, rank);
    if (k < 0 || (size_t)k >= sizeof t->path) {
        free(t->ev);
        free(t);
        set_err(err, errlen, "trace %s: %s", prefix, "file name too long");
        return TG_ERR_INVALID;
    }
    t->rank = rank;
    t->cap = cap;
    *out = t;
    return TG_OK;
}

/* Names are copied as given (cut at a character boundary of UTF-8) and
 * escaped when written. */
static void copy_name(char *dst, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n > TG__TRACE_NAME - 1) {
        n = TG__TRACE_NAME - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* s as a JSON string, quotes included. */
static int put_json_str(FILE *f, const char *s)
{
    int bad = fputc('"', f) == EOF;
    for (; *s && !bad; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            bad = fprintf(f, "\\%c", c) < 0;
        else if (c < 0x20)
            bad = fprintf(f, "\\u%04x", c) < 0;
        else
            bad = fputc(c, f) == EOF;
    }
    return bad || fputc('"', f) == EOF;
}

void tg_trace_set_step(tg_trace *t, int64_t step)
{
    if (t)
        t->step = step;
}

void tg_trace_set_clock_offset(tg_trace *t, double offset_us)
{
    if (t)
        t->clock_offset_us = offset_us;
}

void tg_trace_span(tg_trace *t, int track, const char *name, double t0_us, double t1_us)
{
    if (!t)
        return;
    if (t->n == t->cap) {
        t->dropped++;
        return;
    }
    trace_event *e = &t->ev[t->n++];
    copy_name(e->name, name);
    e->t0 = t0_us;
    e->t1 = t1_us < t0_us ? t0_us : t1_us;
    e->step = t->step;
    e->track = track;
}

void tg_trace_begin(tg_trace *t, const char *name)
{
    if (!t)
        return;
    if (t->depth == TG__TRACE_DEPTH) {
        t->dropped++;
        return;
    }
    trace_event *e = &t->open[t->depth++];
    copy_name(e->name, name);
    e->t0 = tg_trace_now_us();
    e->step = t->step;
    e->track = 0;
}

void tg_trace_end(tg_trace *t)
{
    if (!t || t->depth == 0)
        return;
    trace_event *e = &t->open[--t->depth];
    int64_t now_step = t->step;
    t->step = e->step; /* a span belongs to the step it began in */
    tg_trace_span(t, 0, e->name, e->t0, tg_trace_now_us());
    t->step = now_step;
}

int64_t tg_trace_count(const tg_trace *t) { return t ? t->n : 0; }
int64_t tg_trace_dropped(const tg_trace *t) { return t ? t->dropped : 0; }

static int write_events(const tg_trace *t, FILE *f)
{
    int bad = fprintf(f, "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"rank\":%d,"
                      "\"clock_offset_us\":%.3f,\"dropped_events\":%lld},\"traceEvents\":[\n",
                      t->rank, t->clock_offset_us, (long long)t->dropped) < 0;
    bad |= fprintf(f, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
                   "\"args\":{\"name\":\"rank %d\"}},\n", t->rank, t->rank) < 0;
    bad |= fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
                   "\"args\":{\"name\":\"compute\"}},\n", t->rank) < 0;
    bad |= fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":1,"
                   "\"args\":{\"name\":\"comm\"}}", t->rank) < 0;
    for (int64_t i = 0; i < t->n && !bad; i++) {
        const trace_event *e = &t->ev[i];
        bad |= fputs(",\n{\"name\":", f) < 0;
        bad |= put_json_str(f, e->name);
        bad |= fprintf(f, ",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":%d,\"tid\":%d,"
                       "\"args\":{\"step\":%lld}}", e->t0, e->t1 - e->t0, t->rank, e->track,
                       (long long)e->step) < 0;
    }
    bad |= fprintf(f, "\n]}\n") < 0;
    return bad;
}

tg_status tg_trace_close(tg_trace *t, char *err, size_t errlen)
{
    if (!t)
        return TG_OK;
    while (t->depth > 0)
        tg_trace_end(t);
    tg_status s = TG_OK;
    FILE *f = fopen(t->path, "w");
    if (!f) {
        set_err(err, errlen, "trace %s: cannot create: %s", t->path, strerror(errno));
        s = TG_ERR_IO;
    } else {
        int bad = write_events(t, f);
        if (fclose(f) != 0 || bad) {
            set_err(err, errlen, "trace %s: write failed: %s", t->path, strerror(errno));
            s = TG_ERR_IO;
        }
    }
    free(t->ev);
    free(t);
    return s;
}
