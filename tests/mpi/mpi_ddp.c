/*
 * DDP on 1, 2 and 4 ranks. A small MLP built from runtime ops is trained with
 * plain SGD on fixed synthetic data. Every rank also trains the same model
 * alone, in a second context, on the whole global batch: that is the 1-rank
 * reference the data-parallel run must match (within 1e-5 relative), and
 * the data-parallel parameters must be bit-identical on every rank after
 * every step. Also: no_sync accumulation of two half batches equals one full
 * step; a parameter used on one rank only, and one used nowhere; gradients
 * that live in the buckets, accumulate across steps and outlive the ddp; a
 * rank with a different model fails at start naming the difference.
 */
#include "mpi_check.h"

#include <math.h>
#include <string.h>

#define IN 8
#define HID 16
#define OUT 4
#define GB 16 /* global batch */
#define STEPS 6
#define LR 0.1

static float data_x[GB * STEPS][IN];
static int64_t data_y[GB * STEPS];

static void make_data(void)
{
    uint32_t s = 12345;
    for (int i = 0; i < GB * STEPS; i++) {
        for (int j = 0; j < IN; j++) {
            s = s * 1664525u + 1013904223u;
            data_x[i][j] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
        }
        data_y[i] = (i * 7 + 3) % OUT;
    }
}

typedef struct mlp {
    tg_tensor *p[6]; /* fc1.weight, fc1.bias, fc2.weight, fc2.bias, extra.u, extra.v */
} mlp;

static const char *names[6] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "extra.u",
                               "extra.v"};

/* Deterministic initial values; `perturb` makes a rank start elsewhere, so
 * that the initial broadcast is tested. out2 widens fc2 (a different model). */
static mlp make_mlp(tg_ctx *ctx, float perturb, int out2)
{
    int64_t shapes[6][2] = {{IN, HID}, {HID, 0}, {HID, out2}, {out2, 0}, {3, 0}, {2, 0}};
    mlp m;
    for (int i = 0; i < 6; i++) {
        int nd = shapes[i][1] ? 2 : 1;
        m.p[i] = tg_param(ctx, TG_F32, nd, shapes[i], names[i]);
        int64_t n = tg_numel(m.p[i]);
        float *v = malloc((size_t)n * sizeof *v);
        for (int64_t k = 0; k < n; k++)
            v[k] = 0.3f * sinf(1.0f + (float)(i * 131 + k) * 0.7f) + perturb;
        bool prev = tg_set_grad_enabled(ctx, false);
        tg_copy_from_host(ctx, m.p[i], v, (size_t)n * sizeof *v);
        tg_set_grad_enabled(ctx, prev);
        free(v);
    }
    return m;
}

/* scale * mean NLL of rows [lo, hi) of the data; rank-0-only term on u. */
static tg_tensor *loss_of(tg_ctx *ctx, const mlp *m, int lo, int hi, double scale, bool use_u)
{
    int64_t xs[2] = {hi - lo, IN}, ys[2] = {hi - lo, 1};
    tg_tensor *x = tg_from_data(ctx, TG_F32, 2, xs, data_x[lo]);
    tg_tensor *y = tg_from_data(ctx, TG_I64, 2, ys, &data_y[lo]);
    tg_tensor *h = tg_relu(ctx, tg_add(ctx, tg_matmul(ctx, x, m->p[0]), m->p[1]));
    tg_tensor *z = tg_add(ctx, tg_matmul(ctx, h, m->p[2]), m->p[3]);
    tg_tensor *g = tg_gather(ctx, tg_log_softmax(ctx, z, 1), 1, y);
    tg_tensor *l = tg_mul_scalar(ctx, tg_neg(ctx, tg_mean(ctx, g, 0, NULL, false)), scale);
    if (use_u) {
        const float c[3] = {1, 2, 3};
        int64_t three = 3;
        tg_tensor *ct = tg_from_data(ctx, TG_F32, 1, &three, c);
        l = tg_add(ctx, l, tg_sum(ctx, tg_mul(ctx, m->p[4], ct), 0, NULL, false));
    }
    return l;
}

static void sgd_and_zero(tg_ctx *ctx, const mlp *m, int np)
{
    bool prev = tg_set_grad_enabled(ctx, false);
    for (int i = 0; i < np; i++) {
        if (!m->p[i]->grad)
            continue;
        CHECK(tg_axpy_(ctx, m->p[i], -LR, m->p[i]->grad) == TG_OK, "sgd: %s", tg_ctx_error(ctx));
        tg_zero_grad(ctx, m->p[i]);
    }
    tg_set_grad_enabled(ctx, prev);
    tg_step_reset(ctx);
}

static float *host_copy(tg_ctx *ctx, const tg_tensor *t)
{
    size_t n = (size_t)tg_numel(t);
    float *v = malloc(n * sizeof *v);
    tg_to_host(ctx, t, v, n * sizeof *v);
    return v;
}

/* Max |a - b| / max |b| over parameter i of both models. */
static double rel_diff(tg_ctx *ca, const mlp *a, tg_ctx *cb, const mlp *b, int i)
{
    float *x = host_copy(ca, a->p[i]), *y = host_copy(cb, b->p[i]);
    double d = 0, s = 0;
    for (int64_t k = 0; k < tg_numel(a->p[i]); k++) {
        d = fmax(d, fabs((double)x[k] - y[k]));
        s = fmax(s, fabs((double)y[k]));
    }
    free(x);
    free(y);
    return s > 0 ? d / s : d;
}

/* Every rank's parameters hash to rank 0's. */
static void check_identical(tg_world *w, tg_ctx *ctx, const mlp *m, int np, int step)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < np; i++) {
        float *v = host_copy(ctx, m->p[i]);
        const unsigned char *b = (const unsigned char *)v;
        for (size_t k = 0; k < (size_t)tg_numel(m->p[i]) * sizeof(float); k++)
            h = (h ^ b[k]) * 1099511628211ULL;
        free(v);
    }
    int64_t mine = (int64_t)(h >> 1), all[64];
    CHECK_OK(w, tg_allgather(w, &mine, all, 1, TG_I64, "param hash"));
    for (int r = 0; r < tg_world_size(w); r++)
        CHECK(all[r] == all[0], "step %d: rank %d's parameters differ from rank 0's", step, r);
}

static tg_ctx *new_ctx(void)
{
    tg_ctx *ctx;
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = 1};
    if (tg_ctx_new(&cc, &ctx) != TG_OK) {
        fprintf(stderr, "%s\n", tg_last_init_error());
        exit(2);
    }
    return ctx;
}

/* Train STEPS steps data-parallel and alone; compare after every step. */
static void test_equivalence(tg_world *w, const tg_ddp_config *cfg, int steps, int want_buckets)
{
    int r = tg_world_rank(w), n = tg_world_size(w), lb = GB / n;
    tg_ctx *ctx = new_ctx(), *ref = new_ctx();
    mlp m = make_mlp(ctx, r == 0 ? 0.0f : 0.25f, OUT), mr = make_mlp(ref, 0.0f, OUT);
    tg_ddp *ddp = NULL;
    CHECK_OK(w, tg_ddp_new(ctx, w, 4, m.p, 0, NULL, cfg, &ddp));
    if (!ddp)
        goto out;
    for (int i = 0; i < 4; i++)
        CHECK(rel_diff(ctx, &m, ref, &mr, i) == 0, "%s not broadcast from rank 0", names[i]);
    if (want_buckets) {
        CHECK(tg_ddp_bucket_count(ddp) == want_buckets, "%d buckets", tg_ddp_bucket_count(ddp));
        for (int i = 0; i < tg_ddp_bucket_count(ddp) && want_buckets == 4; i++) {
            int first, count;
            size_t bytes;
            static const size_t want_bytes[4] = {4 * OUT, 4 * HID * OUT, 4 * HID, 4 * IN * HID};
            CHECK(tg_ddp_bucket_info(ddp, i, &first, &count, &bytes) && first == i && count == 1 &&
                      bytes == want_bytes[i] && tg_ddp_bucket_param(ddp, i) == 3 - i,
                  "bucket %d: first %d count %d bytes %zu", i, first, count, bytes);
        }
    }
    tg_trace *tr = NULL;
    char err[256];
    CHECK(tg_trace_open("mpi_ddp_trace", r, 0, &tr, err, sizeof err) == TG_OK, "%s", err);
    tg_ddp_set_trace(ddp, tr);
    uint64_t allocs = 0;
    for (int k = 0; k < steps; k++) {
        tg_world_set_step(w, k);
        if (k == 3)
            allocs = tg_ctx_alloc_count(ctx);
        tg_trace_begin(tr, "backward");
        tg_tensor *l = loss_of(ctx, &m, k * GB + r * lb, k * GB + (r + 1) * lb, 1.0, false);
        CHECK(l && tg_backward(ctx, l, NULL, 0) == TG_OK, "backward: %s", tg_ctx_error(ctx));
        tg_trace_end(tr);
        CHECK_OK(w, tg_ddp_wait(ddp));
        sgd_and_zero(ctx, &m, 4);
        tg_tensor *lr = loss_of(ref, &mr, k * GB, (k + 1) * GB, 1.0, false);
        CHECK(lr && tg_backward(ref, lr, NULL, 0) == TG_OK, "ref: %s", tg_ctx_error(ref));
        sgd_and_zero(ref, &mr, 4);
        for (int i = 0; i < 4; i++) {
            double d = rel_diff(ctx, &m, ref, &mr, i);
            CHECK(d <= 1e-5, "step %d: %s differs from the 1-rank run by %g", k, names[i], d);
        }
        check_identical(w, ctx, &m, 4, k);
    }
    if (steps > 4)
        CHECK(tg_ctx_alloc_count(ctx) == allocs, "steady-state steps allocated %llu times",
              (unsigned long long)(tg_ctx_alloc_count(ctx) - allocs));
    /* The test's backward span, and with communication one span per bucket
     * and one "ddp wait" per step (none on one rank). */
    int64_t want = n > 1 ? (int64_t)tg_ddp_bucket_count(ddp) * steps + 2 * steps : steps;
    CHECK(tg_trace_count(tr) == want, "trace has %lld events, expected %lld",
          (long long)tg_trace_count(tr), (long long)want);
    CHECK(tg_trace_close(tr, err, sizeof err) == TG_OK, "%s", err);
    snprintf(err, sizeof err, "mpi_ddp_trace.rank%d.json", r);
    remove(err);
out:
    tg_ddp_free(ddp);
    tg_world_set_step(w, -1);
    tg_ctx_free(ctx);
    tg_ctx_free(ref);
}

/* Two half-batch micro-steps, the first under no_sync, equal one step. */
static void test_no_sync(tg_world *w)
{
    int r = tg_world_rank(w), n = tg_world_size(w), lb = GB / n, lo = r * lb;
    tg_ctx *ctx = new_ctx(), *ref = new_ctx();
    mlp m = make_mlp(ctx, 0.0f, OUT), mr = make_mlp(ref, 0.0f, OUT);
    tg_ddp_config cfg = {.bucket_bytes = 300, .first_bucket_bytes = 100};
    tg_ddp *ddp = NULL;
    CHECK_OK(w, tg_ddp_new(ctx, w, 4, m.p, 0, NULL, &cfg, &ddp));
    if (!ddp)
        goto out;
    tg_ddp_set_sync(ddp, false);
    CHECK(!tg_ddp_sync(ddp), "sync flag");
    tg_tensor *l = loss_of(ctx, &m, lo, lo + lb / 2, 0.5, false);
    CHECK(l && tg_backward(ctx, l, NULL, 0) == TG_OK, "%s", tg_ctx_error(ctx));
    CHECK_OK(w, tg_ddp_wait(ddp));
    /* Under no_sync nothing is averaged: rank 0's local gradient stays its own. */
    tg_ddp_set_sync(ddp, true);
    l = loss_of(ctx, &m, lo + lb / 2, lo + lb, 0.5, false);
    CHECK(l && tg_backward(ctx, l, NULL, 0) == TG_OK, "%s", tg_ctx_error(ctx));
    CHECK_OK(w, tg_ddp_wait(ddp));
    sgd_and_zero(ctx, &m, 4);
    tg_tensor *lr = loss_of(ref, &mr, 0, GB, 1.0, false);
    CHECK(lr && tg_backward(ref, lr, NULL, 0) == TG_OK, "%s", tg_ctx_error(ref));
    sgd_and_zero(ref, &mr, 4);
    for (int i = 0; i < 4; i++) {
        double d = rel_diff(ctx, &m, ref, &mr, i);
        CHECK(d <= 1e-5, "no_sync: %s differs from one full step by %g", names[i], d);
    }
    check_identical(w, ctx, &m, 4, 0);
out:
    tg_ddp_free(ddp);
    tg_ctx_free(ctx);
    tg_ctx_free(ref);
}

/* extra.u gets a gradient on rank 0 only; extra.v on no rank. */
static void test_unused(tg_world *w)
{
    int r = tg_world_rank(w), n = tg_world_size(w), lb = GB / n;
    tg_ctx *ctx = new_ctx();
    mlp m = make_mlp(ctx, 0.0f, OUT);
    /* Small buckets: u and v sit in the first bucket, which on ranks other
     * than 0 never fills during backward. */
    tg_ddp_config cfg = {.bucket_bytes = 128, .first_bucket_bytes = 16};
    tg_ddp *ddp = NULL;
    CHECK_OK(w, tg_ddp_new(ctx, w, 6, m.p, 0, NULL, &cfg, &ddp));
    for (int k = 0; ddp && k < 2; k++) {
        tg_tensor *l = loss_of(ctx, &m, k * GB + r * lb, k * GB + (r + 1) * lb, 1.0, r == 0);
        CHECK(l && tg_backward(ctx, l, NULL, 0) == TG_OK, "%s", tg_ctx_error(ctx));
        CHECK_OK(w, tg_ddp_wait(ddp));
        CHECK(m.p[5]->grad == NULL, "step %d: extra.v, used nowhere, got a gradient", k);
        CHECK(m.p[4]->grad != NULL, "step %d: extra.u has no gradient on rank %d", k, r);
        if (m.p[4]->grad) {
            float *g = host_copy(ctx, m.p[4]->grad);
            for (int j = 0; j < 3; j++)
                CHECK(fabsf(g[j] - (float)(j + 1) / (float)n) < 1e-6f, "extra.u grad[%d] = %g",
                      j, g[j]);
            free(g);
        }
        sgd_and_zero(ctx, &m, 6);
        check_identical(w, ctx, &m, 6, k);
    }
    tg_ddp_free(ddp);
    tg_ctx_free(ctx);
}

/* Max |grad a - grad b| / max |grad b| over parameter i of both models. */
static double grad_diff(tg_ctx *ca, const mlp *a, tg_ctx *cb, const mlp *b, int i)
{
    float *x = host_copy(ca, a->p[i]->grad), *y = host_copy(cb, b->p[i]->grad);
    double d = 0, s = 0;
    for (int64_t k = 0; k < tg_numel(a->p[i]); k++) {
        d = fmax(d, fabs((double)x[k] - y[k]));
        s = fmax(s, fabs((double)y[k]));
    }
    free(x);
    free(y);
    return s > 0 ? d / s : d;
}

/* Gradients live in the buckets (one bucket: one storage for all four);
 * left unzeroed they accumulate across synchronised steps (avg1 + avg2,
 * like 1-rank g1 + g2); after tg_ddp_free they are plain tensors holding the
 * same values, and a backward without the ddp adds to them. */
static void test_grad_views(tg_world *w)
{
    int r = tg_world_rank(w), n = tg_world_size(w), lb = GB / n;
    tg_ctx *ctx = new_ctx(), *ref = new_ctx();
    mlp m = make_mlp(ctx, 0.0f, OUT), mr = make_mlp(ref, 0.0f, OUT);
    tg_ddp *ddp = NULL;
    CHECK_OK(w, tg_ddp_new(ctx, w, 4, m.p, 0, NULL, NULL, &ddp));
    if (!ddp)
        goto out;
    CHECK(tg_ddp_bucket_count(ddp) == 1, "%d buckets", tg_ddp_bucket_count(ddp));
    for (int k = 0; k < 2; k++) {
        tg_tensor *l = loss_of(ctx, &m, k * GB + r * lb, k * GB + (r + 1) * lb, 1.0, false);
        CHECK(l && tg_backward(ctx, l, NULL, 0) == TG_OK, "%s", tg_ctx_error(ctx));
        CHECK_OK(w, tg_ddp_wait(ddp));
        tg_tensor *lr = loss_of(ref, &mr, k * GB, (k + 1) * GB, 1.0, false);
        CHECK(lr && tg_backward(ref, lr, NULL, 0) == TG_OK, "%s", tg_ctx_error(ref));
        for (int i = 0; i < 4; i++) {
            CHECK(m.p[i]->grad, "step %d: %s has no gradient", k, names[i]);
            if (!m.p[i]->grad)
                goto out;
            double d = grad_diff(ctx, &m, ref, &mr, i);
            CHECK(d <= 1e-5, "step %d: accumulated %s gradient differs by %g", k, names[i], d);
            if (n > 1)
                CHECK(m.p[i]->grad->storage == m.p[0]->grad->storage,
                      "step %d: %s's gradient is not in the bucket", k, names[i]);
        }
        tg_step_reset(ctx);
        tg_step_reset(ref);
    }
    float *before = host_copy(ctx, m.p[0]->grad);
    tg_ddp_free(ddp);
    ddp = NULL;
    float *after = m.p[0]->grad ? host_copy(ctx, m.p[0]->grad) : NULL;
    CHECK(after && !memcmp(before, after, (size_t)tg_numel(m.p[0]) * sizeof *after),
          "fc1.weight's gradient changed when the ddp was freed");
    free(before);
    free(after);
    /* Without the ddp, a local backward on the first rows adds to it. */
    tg_tensor *l = loss_of(ctx, &m, 0, lb, 1.0, false);
    tg_tensor *lr = loss_of(ref, &mr, 0, lb, 1.0, false);
    CHECK(l && tg_backward(ctx, l, NULL, 0) == TG_OK, "%s", tg_ctx_error(ctx));
    CHECK(lr && tg_backward(ref, lr, NULL, 0) == TG_OK, "%s", tg_ctx_error(ref));
    for (int i = 0; i < 4; i++) {
        double d = grad_diff(ctx, &m, ref, &mr, i);
        CHECK(d <= 1e-5, "after free: %s gradient differs by %g", names[i], d);
    }
out:
    tg_ddp_free(ddp);
    tg_ctx_free(ctx);
    tg_ctx_free(ref);
}

/* Rank 1 builds fc2 with 5 outputs, or passes one parameter fewer. */
static void test_mismatch(tg_world *w)
{
    int r = tg_world_rank(w);
    if (tg_world_size(w) < 2)
        return;
    for (int mode = 0; mode < 2; mode++) {
        tg_ctx *ctx = new_ctx();
        mlp m = make_mlp(ctx, 0.0f, r == 1 && mode == 0 ? OUT + 1 : OUT);
        tg_ddp *ddp = NULL;
        int np = r == 1 && mode == 1 ? 3 : 4;
        tg_status s = tg_ddp_new(ctx, w, np, m.p, 0, NULL, NULL, &ddp);
        const char *e = tg_world_error(w);
        char rk[16];
        snprintf(rk, sizeof rk, "rank %d: ", r);
        CHECK(s == TG_ERR_INVALID && ddp == NULL && strstr(e, rk) == e, "mode %d: %s: %s", mode,
              tg_status_str(s), e);
        if (mode == 0)
            CHECK(strstr(e, "parameter 2 is 'fc2.weight' f32 (16, 4) on rank 0 but 'fc2.weight' "
                            "f32 (16, 5) on rank 1"),
                  "message: %s", e);
        else
            CHECK(strstr(e, "rank 0 has 4 parameters and 0 buffers, rank 1 has 3 and 0"),
                  "message: %s", e);
        CHECK(!tg_world_broken(w), "a model mismatch broke the world");
        tg_ddp_free(ddp);
        tg_ctx_free(ctx);
    }
}

/* The default bucket capacities follow the model. Bucket layouts of the
 * built-in models' parameter shapes, listed in registration order; the
 * buckets take them in reverse. mlp: the first bucket (a quarter of 0.9 MB)
 * starts after fc2, while fc1's gradient is still being computed. cnn:
 * fc1.weight (12.8 MB) gets a bucket of its own instead of waiting for the
 * convolutions. A toy model stays in one bucket. */
static void check_layout(tg_world *w, const char *what, int n, const int64_t (*shapes)[4],
                         int nb, const int *counts)
{
    tg_ctx *ctx = new_ctx();
    tg_tensor *p[8];
    for (int i = 0; i < n; i++) {
        int nd = 0;
        while (nd < 4 && shapes[i][nd])
            nd++;
        p[i] = tg_param(ctx, TG_F32, nd, shapes[i], names[i % 6]);
    }
    tg_ddp *ddp = NULL;
    CHECK_OK(w, tg_ddp_new(ctx, w, n, p, 0, NULL, NULL, &ddp));
    if (ddp) {
        CHECK(tg_ddp_bucket_count(ddp) == nb, "%s: %d buckets, expected %d", what,
              tg_ddp_bucket_count(ddp), nb);
        for (int i = 0; i < nb && i < tg_ddp_bucket_count(ddp); i++) {
            int count = -1;
            tg_ddp_bucket_info(ddp, i, NULL, &count, NULL);
            CHECK(count == counts[i], "%s: bucket %d holds %d parameters, expected %d", what, i,
                  count, counts[i]);
        }
    }
    tg_ddp_free(ddp);
    tg_ctx_free(ctx);
}

/* Parameters listed in another order than backward finalises them: after
 * the first synchronised step the buckets follow the order the gradients
 * became final (fc2.bias, fc2.weight, fc1.bias, fc1.weight), the gradients
 * move with them, and training still equals the 1-rank run. */
static void test_rebuild(tg_world *w)
{
    int r = tg_world_rank(w), n = tg_world_size(w), lb = GB / n;
    tg_ctx *ctx = new_ctx(), *ref = new_ctx();
    mlp m = make_mlp(ctx, 0.0f, OUT), mr = make_mlp(ref, 0.0f, OUT);
    /* listed: fc2.weight, fc2.bias, fc1.weight, fc1.bias */
    tg_tensor *listed[4] = {m.p[2], m.p[3], m.p[0], m.p[1]};
    tg_ddp_config cfg = {.bucket_bytes = 128, .first_bucket_bytes = 16};
    tg_ddp *ddp = NULL;
    CHECK_OK(w, tg_ddp_new(ctx, w, 4, listed, 0, NULL, &cfg, &ddp));
    if (!ddp)
        goto out;
    const int before[4] = {3, 2, 1, 0}, after[4] = {1, 0, 3, 2};
    for (int k = 0; k < 4; k++)
        CHECK(tg_ddp_bucket_param(ddp, k) == before[k], "position %d holds %d before step 1", k,
              tg_ddp_bucket_param(ddp, k));
    for (int k = 0; k < 3; k++) {
        tg_tensor *l = loss_of(ctx, &m, k * GB + r * lb, k * GB + (r + 1) * lb, 1.0, false);
        CHECK(l && tg_backward(ctx, l, NULL, 0) == TG_OK, "backward: %s", tg_ctx_error(ctx));
        CHECK_OK(w, tg_ddp_wait(ddp));
        if (k == 0)
            for (int j = 0; j < 4; j++) {
                int want = n > 1 ? after[j] : before[j];
                CHECK(tg_ddp_bucket_param(ddp, j) == want,
                      "position %d holds parameter %d after step 1, expected %d", j,
                      tg_ddp_bucket_param(ddp, j), want);
            }
        /* The gradients moved with their slots: still the 1-rank ones. */
        tg_tensor *lr = loss_of(ref, &mr, k * GB, (k + 1) * GB, 1.0, false);
        CHECK(lr && tg_backward(ref, lr, NULL, 0) == TG_OK, "ref: %s", tg_ctx_error(ref));
        for (int i = 0; i < 4; i++) {
            double d = grad_diff(ctx, &m, ref, &mr, i);
            CHECK(d <= 1e-5, "step %d: %s's gradient differs from 1 rank by %g", k, names[i], d);
        }
        sgd_and_zero(ctx, &m, 4);
        sgd_and_zero(ref, &mr, 4);
        for (int i = 0; i < 4; i++) {
            double d = rel_diff(ctx, &m, ref, &mr, i);
            CHECK(d <= 1e-5, "step %d: %s differs from the 1-rank run by %g", k, names[i], d);
        }
        tg_step_reset(ctx);
        tg_step_reset(ref);
    }
out:
    tg_ddp_free(ddp);
    tg_ctx_free(ctx);
    tg_ctx_free(ref);
}

static void test_default_buckets(tg_world *w)
{
    const int64_t mlp_shapes[6][4] = {{256, 784}, {256}, {128, 256}, {128}, {10, 128}, {10}};
    check_layout(w, "mlp", 6, mlp_shapes, 2, (const int[]){5, 1});
    const int64_t cnn_shapes[8][4] = {{32, 1, 5, 5}, {32},       {64, 32, 5, 5}, {64},
                                      {1024, 3136},  {1024},     {10, 1024},     {10}};
    check_layout(w, "cnn", 8, cnn_shapes, 3, (const int[]){3, 1, 4});
    const int64_t toy[4][4] = {{IN, HID}, {HID}, {HID, OUT}, {OUT}};
    check_layout(w, "toy", 4, toy, 1, (const int[]){4});
}

/* world_sum through the world's collective (tg_world_attach): rank r's x[i]
 * = r + 1 + i, so y[i] = n(n+1)/2 + n i on every rank; with the loss
 * sum(y * (i + 1)), every rank's x gets n (i + 1): its value feeds all n
 * ranks' losses. Values are small integers, so every check is exact. */
static void test_world_sum(tg_world *w)
{
    tg_ctx *ctx = new_ctx();
    const int n = tg_world_size(w), r = tg_world_rank(w);
    tg_world_attach(w, ctx);
    CHECK(tg_collective_size(ctx) == n, "collective size %d, world %d", tg_collective_size(ctx), n);
    float xv[6], cv[6];
    for (int i = 0; i < 6; i++) {
        xv[i] = (float)(r + 1 + i);
        cv[i] = (float)(i + 1);
    }
    int64_t shape[2] = {2, 3};
    tg_tensor *x = tg_from_data(ctx, TG_F32, 2, shape, xv);
    tg_tensor *c = tg_from_data(ctx, TG_F32, 2, shape, cv);
    tg_tensor *y = x && c && tg_set_requires_grad(ctx, x, true) == TG_OK ? tg_world_sum(ctx, x)
                                                                         : NULL;
    tg_tensor *loss = y ? tg_sum(ctx, tg_mul(ctx, y, c), 0, NULL, false) : NULL;
    CHECK(loss && tg_backward(ctx, loss, NULL, 0) == TG_OK, "world_sum: %s", tg_ctx_error(ctx));
    float yv[6] = {0}, gv[6] = {0};
    if (loss && tg_to_host(ctx, y, yv, sizeof yv) == TG_OK &&
        tg_to_host(ctx, x->grad, gv, sizeof gv) == TG_OK)
        for (int i = 0; i < 6; i++) {
            CHECK(yv[i] == (float)(n * (n + 1) / 2 + n * i), "world_sum y[%d] = %g", i, yv[i]);
            CHECK(gv[i] == (float)(n * (i + 1)), "world_sum grad[%d] = %g, expected %d", i, gv[i],
                  n * (i + 1));
        }
    /* Removed, the context is a world of one again: the identity. */
    tg_set_collective(ctx, NULL);
    y = tg_world_sum(ctx, x);
    CHECK(y && tg_to_host(ctx, y, yv, sizeof yv) == TG_OK && yv[5] == xv[5],
          "world_sum alone: %s", tg_ctx_error(ctx));
    tg_ctx_free(ctx);
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
    make_data();
    tg_ddp_config small = {.bucket_bytes = 256, .first_bucket_bytes = 64};
    test_equivalence(w, &small, STEPS, 4);
    test_equivalence(w, NULL, 2, 1);
    test_default_buckets(w);
    test_rebuild(w);
    test_no_sync(w);
    test_unused(w);
    test_grad_views(w);
    test_mismatch(w);
    test_world_sum(w);
    int rc = tg_check_finish(w, "mpi_ddp");
    tg_world_free(w);
    return rc;
}
