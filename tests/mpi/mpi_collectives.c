/* Collectives on 1, 2 and 4 ranks: all-reduce, broadcast, all-gather and
 * barrier for sizes 0, 1, odd sizes and the default first-bucket boundary
 * +-1, in f32, f64 and i64, against values computed here in closed form;
 * plus the world's geometry, refused dtypes and the trace writer. */
#include "mpi_check.h"

#include <math.h>
#include <string.h>

/* Sizes: the 1 MiB first bucket holds 262144 f32 (131072 f64) elements. */
static const int64_t sizes[] = {0, 1, 2, 7, 1023, 131071, 131072, 131073, 262143, 262144, 262145};
#define NSIZES ((int)(sizeof sizes / sizeof sizes[0]))

/* Rank r's element i; small integers and halves, so every sum is exact. */
static double value(int r, int64_t i) { return (double)((r + 1) * (i % 13)) + 0.5 * r; }

static double sum_value(int size, int64_t i)
{
    double s = 0;
    for (int r = 0; r < size; r++)
        s += value(r, i);
    return s;
}

static void put(void *buf, tg_dtype dt, int64_t i, double v)
{
    if (dt == TG_F32)
        ((float *)buf)[i] = (float)v;
    else if (dt == TG_F64)
        ((double *)buf)[i] = v;
    else
        ((int64_t *)buf)[i] = (int64_t)(2 * v); /* halves become integers */
}

static double get(const void *buf, tg_dtype dt, int64_t i)
{
    if (dt == TG_F32)
        return ((const float *)buf)[i];
    if (dt == TG_F64)
        return ((const double *)buf)[i];
    return (double)((const int64_t *)buf)[i] / 2;
}

static void test_allreduce(tg_world *w, tg_dtype dt, void *buf)
{
    int r = tg_world_rank(w), n = tg_world_size(w);
    for (int k = 0; k < NSIZES; k++) {
        int64_t m = sizes[k], bad = -1;
        for (int64_t i = 0; i < m; i++)
            put(buf, dt, i, value(r, i));
        CHECK_OK(w, tg_allreduce_sum(w, buf, m, dt, "test"));
        for (int64_t i = 0; i < m && bad < 0; i++)
            if (get(buf, dt, i) != sum_value(n, i))
                bad = i;
        CHECK(bad < 0, "allreduce %s size %lld: element %lld is %g, expected %g", tg_dtype_name(dt),
              (long long)m, (long long)bad, bad < 0 ? 0 : get(buf, dt, bad),
              bad < 0 ? 0 : sum_value(n, bad));
    }
}

static void test_broadcast(tg_world *w, tg_dtype dt, void *buf)
{
    int r = tg_world_rank(w), n = tg_world_size(w);
    int root = n - 1;
    for (int k = 0; k < NSIZES; k++) {
        int64_t m = sizes[k], bad = -1;
        for (int64_t i = 0; i < m; i++)
            put(buf, dt, i, value(r, i));
        CHECK_OK(w, tg_broadcast(w, buf, m, dt, root, "test"));
        for (int64_t i = 0; i < m && bad < 0; i++)
            if (get(buf, dt, i) != value(root, i))
                bad = i;
        CHECK(bad < 0, "broadcast %s size %lld: element %lld wrong", tg_dtype_name(dt),
              (long long)m, (long long)bad);
    }
}

static void test_allgather(tg_world *w, tg_dtype dt, void *send, void *recv)
{
    int r = tg_world_rank(w), n = tg_world_size(w);
    for (int k = 0; k < NSIZES; k++) {
        int64_t m = sizes[k], bad = -1;
        for (int64_t i = 0; i < m; i++)
            put(send, dt, i, value(r, i));
        CHECK_OK(w, tg_allgather(w, send, recv, m, dt, "test"));
        for (int q = 0; q < n && bad < 0; q++)
            for (int64_t i = 0; i < m && bad < 0; i++)
                if (get(recv, dt, q * m + i) != value(q, i))
                    bad = q * m + i;
        CHECK(bad < 0, "allgather %s size %lld: element %lld wrong", tg_dtype_name(dt),
              (long long)m, (long long)bad);
    }
}

static void test_misc(tg_world *w)
{
    int r = tg_world_rank(w), n = tg_world_size(w);
    CHECK(r >= 0 && r < n, "rank %d of %d", r, n);
    /* ctest runs every rank on this one machine. */
    CHECK(tg_world_node_count(w) == 1, "node count %d", tg_world_node_count(w));
    CHECK(tg_world_local_size(w) == n && tg_world_local_rank(w) == r, "local %d/%d",
          tg_world_local_rank(w), tg_world_local_size(w));
    CHECK_OK(w, tg_barrier(w, "test"));

    double m[3] = {1.5 * r, r, 10};
    CHECK_OK(w, tg_metrics_allreduce(w, 3, m));
    CHECK(m[0] == 1.5 * n * (n - 1) / 2 && m[1] == n * (n - 1) / 2.0 && m[2] == 10.0 * n,
          "metrics %g %g %g", m[0], m[1], m[2]);

    char bytes[5] = {0};
    if (r == 0)
        memcpy(bytes, "abcd", 5);
    CHECK_OK(w, tg_broadcast(w, bytes, 5, TG_U8, 0, "bytes"));
    CHECK(strcmp(bytes, "abcd") == 0, "bytes '%s'", bytes);

    /* Refused locally, before any communication, with the rank named. */
    unsigned char u = 1;
    tg_status s = tg_allreduce_sum(w, &u, 1, TG_U8, "bytes");
    char want[32];
    snprintf(want, sizeof want, "rank %d: ", r);
    CHECK(s == TG_ERR_DTYPE && strstr(tg_world_error(w), want) &&
              strstr(tg_world_error(w), "u8"),
          "u8 sum: %s %s", tg_status_str(s), tg_world_error(w));
    s = tg_broadcast(w, bytes, 1, TG_U8, n, "bad root");
    CHECK(s == TG_ERR_INVALID, "root %d accepted", n);
    CHECK(!tg_world_broken(w), "world broken by a local refusal");
    CHECK(tg_world_timeout(w) == 300.0, "default timeout %g", tg_world_timeout(w));
}

/* On one machine every rank reads the same monotonic clock: the measured
 * offset is zero within its error bound (plus scheduling slack), and the
 * bound is small on shared memory. */
static void test_clock_offset(tg_world *w)
{
    double off = 1e9, err = 1e9;
    CHECK(tg_world_clock_offset(w, &off, &err) == TG_OK, "%s", tg_world_error(w));
    CHECK(err >= 0 && err < 50000, "error bound %g us", err);
    CHECK(off <= err + 1000 && off >= -err - 1000, "offset %g us (error bound %g us) between "
          "ranks of one machine", off, err);
    if (tg_world_rank(w) == 0)
        CHECK(off == 0, "rank 0's offset from itself is %g", off);
}

static void test_trace(tg_world *w)
{
    int r = tg_world_rank(w);
    char err[256], path[512];
    tg_trace *t;
    const char *prefix = "mpi_collectives_trace";
    CHECK(tg_trace_open(prefix, r, 4, &t, err, sizeof err) == TG_OK, "%s", err);
    tg_trace_set_step(t, 7);
    tg_trace_set_clock_offset(t, -12.5);
    tg_trace_begin(t, "forward");
    tg_trace_set_step(t, 8);
    tg_trace_begin(t, "inner \"quoted\" \\ \n");
    tg_trace_end(t);
    tg_trace_end(t);
    tg_trace_span(t, 1, "allreduce bucket 3", 10.0, 25.5);
    tg_trace_span(t, 1, "b", 1, 2);
    tg_trace_span(t, 1, "dropped", 1, 2);
    CHECK(tg_trace_count(t) == 4 && tg_trace_dropped(t) == 1, "count %lld dropped %lld",
          (long long)tg_trace_count(t), (long long)tg_trace_dropped(t));
    CHECK(tg_trace_close(t, err, sizeof err) == TG_OK, "%s", err);
    snprintf(path, sizeof path, "%s.rank%d.json", prefix, r);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f)
        return;
    char text[4096] = {0};
    size_t got = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    char pid[32];
    snprintf(pid, sizeof pid, "\"pid\":%d,", r);
    CHECK(got > 0 && strstr(text, "\"traceEvents\":[") && strstr(text, pid) &&
              strstr(text, "\"name\":\"allreduce bucket 3\",\"ph\":\"X\",\"ts\":10.000,"
                           "\"dur\":15.500") &&
              strstr(text, "\"name\":\"inner \\\"quoted\\\" \\\\ \\u000a\"") &&
              strstr(text, "\"otherData\":{\"rank\":") &&
              strstr(text, "\"clock_offset_us\":-12.500,\"dropped_events\":1}") &&
              !strstr(text, "\"dropped\"") && text[got - 2] == '}',
          "trace file:\n%s", text);
    /* A span belongs to the step it began in; later spans to the new one. */
    const char *fwd = strstr(text, "\"name\":\"forward\"");
    const char *inner = strstr(text, "\"name\":\"inner");
    const char *b3 = strstr(text, "\"name\":\"allreduce bucket 3\"");
    CHECK(fwd && inner && b3 && strstr(fwd, "\"args\":{\"step\":7}") < strchr(fwd, '\n') &&
              strstr(inner, "\"args\":{\"step\":8}") < strchr(inner, '\n') &&
              strstr(b3, "\"args\":{\"step\":8}") < strchr(b3, '\n'),
          "steps of the spans:\n%s", text);
    remove(path);
}

int main(int argc, char **argv)
{
    tg_world *w;
    char err[512];
    if (tg_world_init(&argc, &argv, NULL, &w, err, sizeof err) != TG_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    tg_check_rank = tg_world_rank(w);
    int64_t max = sizes[NSIZES - 1] * tg_world_size(w);
    void *a = malloc((size_t)max * 8), *b = malloc((size_t)max * 8);
    if (!a || !b)
        return 2;
    const tg_dtype dts[] = {TG_F32, TG_F64, TG_I64};
    for (int i = 0; i < 3; i++) {
        test_allreduce(w, dts[i], a);
        test_broadcast(w, dts[i], a);
        test_allgather(w, dts[i], a, b);
    }
    test_misc(w);
    test_clock_offset(w);
    test_trace(w);
    free(a);
    free(b);
    int rc = tg_check_finish(w, "mpi_collectives");
    tg_world_free(w);
    return rc;
}
