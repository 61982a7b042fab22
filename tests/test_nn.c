/*
 * Layers, initialisation and bad input of nn.h.
 *
 * Forward and backward values of every layer against PyTorch live in
 * test_torch_fixtures.c (fixtures/ops.txt); here: init statistics against
 * PyTorch's formulas, reproducibility, parameter registration, BatchNorm's
 * running statistics over several steps against a reference computed here in
 * double, dropout's independence of the thread count, and the errors bad
 * input must give.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/nn.h"

static tg_ctx *new_ctx(int threads) {
    tg_ctx_config cfg = {.device = TG_DEVICE_CPU, .threads = threads};
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_OK);
    return ctx;
}

static float *host(tg_ctx *ctx, const tg_tensor *t) {
    int64_t n = tg_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    assert_non_null(v);
    assert_int_equal(tg_to_host(ctx, t, v, (size_t)n * sizeof *v), TG_OK);
    return v;
}

/* Bounds, mean and standard deviation of a U(-b, b) or N(0, s) sample. */
static void stats(const float *v, int64_t n, double *lo, double *hi, double *mean, double *sd) {
    double s = 0, s2 = 0;
    *lo = INFINITY, *hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s += v[i];
        s2 += (double)v[i] * v[i];
        *lo = v[i] < *lo ? v[i] : *lo;
        *hi = v[i] > *hi ? v[i] : *hi;
    }
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
}

static void test_linear_init_matches_pytorch_bounds(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx(0);
    tg_params ps = {0};
    tg_rng rng = tg_rng_make(1, 0);
    tg_linear fc;
    assert_int_equal(tg_linear_init(ctx, &fc, &ps, "fc1", 400, 300, true, &rng), TG_OK);
    assert_int_equal(ps.nparams, 2);
    assert_string_equal(ps.params[0]->name, "fc1.weight");
    assert_string_equal(ps.params[1]->name, "fc1.bias");
    assert_int_equal(tg_params_numel(&ps), 400 * 300 + 300);
    assert_true(fc.weight->requires_grad);
    /* kaiming_uniform(a = sqrt(5)) is U(-1/sqrt(in), 1/sqrt(in)): sd = b / sqrt(3). */
    double b = 1.0 / sqrt(400.0), lo, hi, mean, sd;
    float *w = host(ctx, fc.weight);
    stats(w, 400 * 300, &lo, &hi, &mean, &sd);
    assert_true(lo >= -b && hi <= b);
    assert_true(lo < -0.99 * b && hi > 0.99 * b);
    assert_true(fabs(mean) < 0.01 * b);
    assert_true(fabs(sd - b / sqrt(3.0)) < 0.01 * b);
    float *bias = host(ctx, fc.bias);
    stats(bias, 300, &lo, &hi, &mean, &sd);
    assert_true(lo >= -b && hi <= b && hi - lo > b);
    /* Same seed, same values; another seed, other values. */
    tg_rng r2 = tg_rng_make(1, 0), r3 = tg_rng_make(2, 0);
    tg_linear f2, f3;
    assert_int_equal(tg_linear_init(ctx, &f2, NULL, "again", 400, 300, true, &r2), TG_OK);
    assert_int_equal(tg_linear_init(ctx, &f3, NULL, "other", 400, 300, true, &r3), TG_OK);
    float *w2 = host(ctx, f2.weight), *w3 = host(ctx, f3.weight);
    assert_memory_equal(w, w2, 400 * 300 * sizeof(float));
    assert_true(memcmp(w, w3, 400 * 300 * sizeof(float)) != 0);
    free(w), free(w2), free(w3), free(bias);
    tg_ctx_free(ctx);
}

/* The linear layer adds its bias into the product: the forward makes one
 * (64, 48) tensor, and the bias sum is what x W^T + b gives, bit for bit,
 * with and without grad. */
static void test_linear_bias_added_in_place(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx(0);
    tg_rng rng = tg_rng_make(3, 0);
    tg_linear fc;
    assert_int_equal(tg_linear_init(ctx, &fc, NULL, "fc", 32, 48, true, &rng), TG_OK);
    float xs[64 * 32];
    for (int i = 0; i < 64 * 32; i++)
        xs[i] = (float)((i * 37) % 101 - 50) / 25.0f;
    for (int grad = 0; grad < 2; grad++) {
        bool prev = tg_set_grad_enabled(ctx, grad == 1);
        tg_tensor *x = tg_from_data(ctx, TG_F32, 2, (const int64_t[]){64, 32}, xs);
        assert_non_null(x);
        size_t before = 0, after = 0, reserved = 0, high = 0;
        tg_arena_stats(ctx, &before, &reserved, &high);
        tg_tensor *y = tg_linear_forward(ctx, &fc, x);
        assert_non_null(y);
        tg_arena_stats(ctx, &after, &reserved, &high);
        const size_t out = 64 * 48 * sizeof(float);
        if (after - before >= 2 * out)
            fail_msg("linear forward took %zu bytes for a %zu-byte output", after - before, out);
        if (grad)
            assert_true(y->requires_grad);
        tg_tensor *ref =
            tg_add(ctx, tg_matmul(ctx, x, tg_transpose(ctx, fc.weight, 0, 1)), fc.bias);
        assert_non_null(ref);
        float *a = host(ctx, y), *b = host(ctx, ref);
        assert_memory_equal(a, b, out);
        free(a), free(b);
        tg_set_grad_enabled(ctx, prev);
        tg_step_reset(ctx);
    }
    tg_ctx_free(ctx);
}

static void test_conv_and_other_inits(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx(0);
    tg_params ps = {0};
    tg_rng rng = tg_rng_make(5, 1);
    tg_conv2d_layer cv;
    tg_conv2d_opts o = {{1, 1}, {2, 2}, {1, 1}};
    assert_int_equal(tg_conv2d_init(ctx, &cv, &ps, "conv1", 32, 64, (const int[]){5, 5}, &o, true,
                                    &rng),
                     TG_OK);
    double b = 1.0 / sqrt(32.0 * 25.0), lo, hi, mean, sd;
    float *w = host(ctx, cv.weight);
    stats(w, 64 * 32 * 25, &lo, &hi, &mean, &sd);
    assert_true(lo >= -b && hi <= b && lo < -0.99 * b && hi > 0.99 * b);
    assert_true(fabs(sd - b / sqrt(3.0)) < 0.02 * b);
    free(w);
    /* kaiming_normal (a = 0): sd = sqrt(2 / fan_in); xavier_uniform: bound
     * gain * sqrt(6 / (fan_in + fan_out)). */
    tg_tensor *t = tg_persistent(ctx, TG_F32, 2, (const int64_t[]){200, 500}, "t");
    assert_int_equal(tg_init_kaiming_normal(ctx, t, 0.0, &rng), TG_OK);
    w = host(ctx, t);
    stats(w, 100000, &lo, &hi, &mean, &sd);
    assert_true(fabs(sd - sqrt(2.0 / 500.0)) < 0.01 * sqrt(2.0 / 500.0));
    assert_true(fabs(mean) < 0.01 * sd);
    free(w);
    assert_int_equal(tg_init_xavier_uniform(ctx, t, 2.0, &rng), TG_OK);
    w = host(ctx, t);
    stats(w, 100000, &lo, &hi, &mean, &sd);
    b = 2.0 * sqrt(6.0 / 700.0);
    assert_true(lo >= -b && hi <= b && hi > 0.99 * b);
    free(w);
    assert_int_equal(tg_init_xavier_normal(ctx, t, 1.0, &rng), TG_OK);
    w = host(ctx, t);
    stats(w, 100000, &lo, &hi, &mean, &sd);
    assert_true(fabs(sd - sqrt(2.0 / 700.0)) < 0.01 * sqrt(2.0 / 700.0));
    free(w);
    /* Registration: names are unique. */
    tg_conv2d_layer dup;
    assert_int_equal(tg_conv2d_init(ctx, &dup, &ps, "conv1", 1, 2, (const int[]){3, 3}, NULL, true,
                                    &rng),
                     TG_ERR_INVALID);
    assert_non_null(strstr(tg_ctx_error(ctx), "conv1.weight"));
    tg_ctx_free(ctx);
}

/* BatchNorm over three training steps, then eval, against the running
 * averages computed here: biased variance normalises, unbiased variance
 * updates, momentum 0.1, num_batches_tracked counts. */
static void test_batchnorm_running_stats(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx(0);
    tg_params ps = {0};
    tg_batchnorm bn;
    const int64_t N = 3, C = 2, HW = 4;
    assert_int_equal(tg_batchnorm_init(ctx, &bn, &ps, "bn1", C, 1e-5, 0.1), TG_OK);
    assert_int_equal(ps.nparams, 2);
    assert_int_equal(ps.nbuffers, 3);
    assert_string_equal(ps.buffers[0]->name, "bn1.running_mean");
    assert_string_equal(ps.buffers[2]->name, "bn1.num_batches_tracked");
    double rm[2] = {0, 0}, rv[2] = {1, 1};
    float x[24];
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < 24; i++)
            x[i] = (float)(sin(1.7 * i + step) * (1 + step) + 0.5 * step);
        tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, (const int64_t[]){N, C, 2, 2}, x);
        tg_tensor *y = tg_batchnorm_forward(ctx, &bn, xt, true);
        assert_non_null(y);
        float *yv = host(ctx, y);
        for (int c = 0; c < C; c++) {
            double s = 0, s2 = 0;
            for (int n = 0; n < N; n++)
                for (int j = 0; j < HW; j++)
                    s += x[(n * C + c) * HW + j];
            double m = s / (double)(N * HW);
            for (int n = 0; n < N; n++)
                for (int j = 0; j < HW; j++) {
                    double d = x[(n * C + c) * HW + j] - m;
                    s2 += d * d;
                }
            double var = s2 / (double)(N * HW);
            for (int n = 0; n < N; n++)
                for (int j = 0; j < HW; j++) {
                    int k = (n * C + c) * HW + j;
                    assert_true(fabs(yv[k] - (x[k] - m) / sqrt(var + 1e-5)) < 1e-4);
                }
            rm[c] = 0.9 * rm[c] + 0.1 * m;
            rv[c] = 0.9 * rv[c] + 0.1 * var * (double)(N * HW) / (double)(N * HW - 1);
        }
        free(yv);
        tg_step_reset(ctx);
    }
    float *m = host(ctx, bn.running_mean), *v = host(ctx, bn.running_var);
    for (int c = 0; c < C; c++) {
        assert_true(fabs(m[c] - rm[c]) < 1e-5);
        assert_true(fabs(v[c] - rv[c]) < 1e-5);
    }
    double nbt = 0;
    assert_int_equal(tg_item(ctx, bn.num_batches_tracked, &nbt), TG_OK);
    assert_true(nbt == 3.0);
    /* Eval uses the running statistics and leaves them alone. */
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, (const int64_t[]){N, C, 2, 2}, x);
    tg_tensor *y = tg_batchnorm_forward(ctx, &bn, xt, false);
    assert_non_null(y);
    float *yv = host(ctx, y), *m2 = host(ctx, bn.running_mean);
    for (int k = 0; k < 24; k++) {
        int c = (k / (int)HW) % (int)C;
        assert_true(fabs(yv[k] - (x[k] - rm[c]) / sqrt(rv[c] + 1e-5)) < 1e-4);
    }
    assert_memory_equal(m, m2, (size_t)C * sizeof(float));
    free(m), free(v), free(yv), free(m2);
    /* One value per channel cannot be normalised in training. */
    tg_tensor *one = tg_zeros(ctx, TG_F32, 2, (const int64_t[]){1, C});
    assert_null(tg_batchnorm_forward(ctx, &bn, one, true));
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_SHAPE);
    tg_ctx_free(ctx);
}

/* The fused training forward and backward (batch_norm rows) against the
 * composition of mean, sub, mul and pow rows that BatchNorm used before, on
 * shapes past the kernels' parallel threshold, (N, C) with a partial block
 * of channels and (N, C, H, W) with a mean far from zero; and the fused
 * results bit for bit the same at 1 and 2 threads. */
typedef struct bn_run {
    float *y, *dx, *dw, *db;
} bn_run;

static void bn_run_free(bn_run *r) { free(r->y), free(r->dx), free(r->dw), free(r->db); }

static bn_run bn_one(int threads, bool fused, int ndim, const int64_t *shape, const float *x,
                     const float *w, const float *b, const float *seed) {
    tg_ctx *ctx = new_ctx(threads);
    int64_t c = shape[1], pshape[4] = {1, c, 1, 1};
    tg_tensor *xt = tg_from_data(ctx, TG_F32, ndim, shape, x);
    tg_tensor *wt = tg_from_data(ctx, TG_F32, 1, &c, w), *bt = tg_from_data(ctx, TG_F32, 1, &c, b);
    assert_int_equal(tg_set_requires_grad(ctx, xt, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, wt, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, bt, true), TG_OK);
    tg_tensor *y;
    if (fused) {
        tg_batchnorm bn = {.weight = wt, .bias = bt, .eps = 1e-5, .momentum = 0.1};
        bn.running_mean = tg_zeros(ctx, TG_F32, 1, &c);
        bn.running_var = tg_full(ctx, TG_F32, 1, &c, 1.0);
        bn.num_batches_tracked = tg_zeros(ctx, TG_I64, 0, NULL);
        y = tg_batchnorm_forward(ctx, &bn, xt, true);
    } else {
        const int axes[3] = {0, 2, 3};
        int nax = ndim == 4 ? 3 : 1;
        tg_tensor *mean = tg_mean(ctx, xt, nax, axes, true);
        tg_tensor *xc = tg_sub(ctx, xt, mean);
        tg_tensor *var = tg_mean(ctx, tg_mul(ctx, xc, xc), nax, axes, true);
        tg_tensor *scale = tg_mul(ctx, tg_pow_scalar(ctx, tg_add_scalar(ctx, var, 1e-5), -0.5),
                                  tg_reshape(ctx, wt, ndim, pshape));
        y = tg_add(ctx, tg_mul(ctx, xc, scale), tg_reshape(ctx, bt, ndim, pshape));
    }
    assert_non_null(y);
    tg_tensor *st = tg_from_data(ctx, TG_F32, ndim, shape, seed);
    assert_int_equal(tg_backward(ctx, y, st, 0), TG_OK);
    bn_run r = {host(ctx, y), host(ctx, xt->grad), host(ctx, wt->grad), host(ctx, bt->grad)};
    tg_ctx_free(ctx);
    return r;
}

static void bn_close(const float *a, const float *b, int64_t n, double tol, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - b[i]) <= tol * (1.0 + fabs((double)b[i]))))
            fail_msg("%s element %lld: fused %.9g, composed %.9g", what, (long long)i, a[i], b[i]);
}

/* A grouped convolution (groups = 3: 6 -> 6 channels, weight (6, 2, 3, 3))
 * against an independent reference: one plain convolution whose (6, 6, 3, 3)
 * weight is block-diagonal (zero where an output does not see an input
 * group). Outputs, the input's gradient and the bias' gradient agree, and
 * the grouped weight's gradient is the diagonal blocks of the dense one's. */
static void test_grouped_conv_matches_block_diagonal(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx(2);
    tg_params ps = {0};
    tg_rng rng = tg_rng_make(11, 0);
    tg_conv2d_layer g;
    tg_conv2d_opts o = {{2, 1}, {1, 1}, {1, 1}};
    assert_int_equal(tg_conv2d_init(ctx, &g, &ps, "g", 2, 6, (const int[]){3, 3}, &o, true, &rng),
                     TG_OK);
    g.groups = 3;
    float *wg = host(ctx, g.weight), *bg = host(ctx, g.bias), wd[6 * 6 * 9] = {0};
    for (int k = 0; k < 6; k++)
        for (int c = 0; c < 2; c++)
            memcpy(&wd[(k * 6 + (k / 2) * 2 + c) * 9], &wg[(k * 2 + c) * 9], 9 * sizeof(float));
    const int64_t xs[4] = {2, 6, 7, 5}, ws[4] = {6, 6, 3, 3}, six = 6;
    float xv[2 * 6 * 7 * 5];
    for (size_t i = 0; i < sizeof xv / sizeof xv[0]; i++)
        xv[i] = (float)sin(0.37 * (double)i) + 0.1f;
    tg_tensor *x1 = tg_from_data(ctx, TG_F32, 4, xs, xv), *x2 = tg_from_data(ctx, TG_F32, 4, xs, xv);
    tg_tensor *w2 = tg_from_data(ctx, TG_F32, 4, ws, wd), *b2 = tg_from_data(ctx, TG_F32, 1, &six, bg);
    assert_int_equal(tg_set_requires_grad(ctx, x1, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, x2, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, w2, true), TG_OK);
    assert_int_equal(tg_set_requires_grad(ctx, b2, true), TG_OK);
    tg_tensor *y1 = tg_conv2d_forward(ctx, &g, x1), *y2 = tg_conv2d(ctx, x2, w2, b2, &o);
    assert_non_null(y1);
    assert_non_null(y2);
    assert_int_equal(y1->ndim, 4);
    for (int d = 0; d < 4; d++)
        assert_int_equal(y1->shape[d], y2->shape[d]);
    int64_t n = tg_numel(y1);
    float *seed = malloc((size_t)n * sizeof *seed);
    assert_non_null(seed);
    for (int64_t i = 0; i < n; i++)
        seed[i] = (float)cos(0.11 * (double)i);
    /* One backward through both (the tape is walked once): y1 + y2 sends the
     * same seed to each. */
    assert_int_equal(tg_backward(ctx, tg_add(ctx, y1, y2),
                                 tg_from_data(ctx, TG_F32, 4, y1->shape, seed), 0),
                     TG_OK);
    float *a = host(ctx, y1), *b = host(ctx, y2);
    bn_close(a, b, n, 1e-5, "grouped output");
    free(a), free(b);
    a = host(ctx, x1->grad), b = host(ctx, x2->grad);
    bn_close(a, b, tg_numel(x1), 1e-5, "input gradient");
    free(a), free(b);
    a = host(ctx, g.bias->grad), b = host(ctx, b2->grad);
    bn_close(a, b, 6, 1e-5, "bias gradient");
    free(a), free(b);
    a = host(ctx, g.weight->grad), b = host(ctx, w2->grad);
    float blocks[6 * 2 * 9];
    for (int k = 0; k < 6; k++)
        for (int c = 0; c < 2; c++)
            memcpy(&blocks[(k * 2 + c) * 9], &b[(k * 6 + (k / 2) * 2 + c) * 9], 9 * sizeof(float));
    bn_close(a, blocks, 6 * 2 * 9, 1e-5, "weight gradient");
    free(a), free(b), free(seed), free(wg), free(bg);
    /* The wrong number of input channels is refused, naming the groups. */
    tg_tensor *bad = tg_zeros(ctx, TG_F32, 4, (const int64_t[]){1, 4, 5, 5});
    assert_null(tg_conv2d_forward(ctx, &g, bad));
    assert_non_null(strstr(tg_ctx_error(ctx), "3 groups of 2 input channels need (N, 6, H, W)"));
    tg_ctx_free(ctx);
}

static void test_batchnorm_fused_matches_composed(void **state) {
    (void)state;
    const int64_t shapes[2][4] = {{300, 130, 1, 1}, {16, 6, 20, 20}};
    for (int k = 0; k < 2; k++) {
        int ndim = k == 0 ? 2 : 4;
        const int64_t *shape = shapes[k];
        int64_t c = shape[1], n = shape[0] * c * shape[2] * shape[3];
        float *x = malloc((size_t)n * sizeof *x), *seed = malloc((size_t)n * sizeof *seed);
        float *w = malloc((size_t)c * sizeof *w), *b = malloc((size_t)c * sizeof *b);
        assert_true(x && seed && w && b);
        for (int64_t i = 0; i < n; i++) {
            /* channel-dependent offsets (up to 20) and spreads */
            int64_t ch = (i / (shape[2] * shape[3])) % c;
            x[i] = (float)(sin(0.37 * (double)i) * (0.5 + 0.1 * (double)(ch % 7)) +
                           2.0 * (double)(ch % 11));
            seed[i] = (float)cos(0.11 * (double)i + 0.3);
        }
        for (int64_t j = 0; j < c; j++) {
            w[j] = (float)(0.5 + 0.01 * (double)j);
            b[j] = (float)(0.2 - 0.003 * (double)j);
        }
        bn_run f1 = bn_one(1, true, ndim, shape, x, w, b, seed);
        bn_run f2 = bn_one(2, true, ndim, shape, x, w, b, seed);
        bn_run cp = bn_one(1, false, ndim, shape, x, w, b, seed);
        bn_close(f1.y, cp.y, n, 1e-4, "y");
        bn_close(f1.dx, cp.dx, n, 1e-3, "dx");
        bn_close(f1.dw, cp.dw, c, 1e-3, "dweight");
        bn_close(f1.db, cp.db, c, 1e-4, "dbias");
        assert_memory_equal(f1.y, f2.y, (size_t)n * sizeof(float));
        assert_memory_equal(f1.dx, f2.dx, (size_t)n * sizeof(float));
        assert_memory_equal(f1.dw, f2.dw, (size_t)c * sizeof(float));
        assert_memory_equal(f1.db, f2.db, (size_t)c * sizeof(float));
        bn_run_free(&f1), bn_run_free(&f2), bn_run_free(&cp);
        free(x), free(seed), free(w), free(b);
    }
}

/* A stand-in for comm/'s collective: `copies` ranks holding the same data,
 * so a sum over them is the data times copies; or a failure. */
typedef struct fake_world {
    int copies, calls;
    bool fail;
} fake_world;

static tg_status fake_sum(void *user, tg_ctx *ctx, void *data, int64_t n, tg_dtype dt, char *err,
                          size_t errlen) {
    (void)ctx;
    fake_world *f = user;
    f->calls++;
    if (f->fail) {
        snprintf(err, errlen, "fake: rank 3 lost");
        return TG_ERR_COMM;
    }
    assert_int_equal(dt, TG_F32);
    for (int64_t i = 0; i < n; i++)
        ((float *)data)[i] *= (float)f->copies;
    return TG_OK;
}

/* world_sum and SyncBatchNorm against a world of `copies` identical ranks:
 * the sum, its gradient (one more sum), the statistics (those of one rank,
 * since the others hold the same values) with the count of all ranks in the
 * running variance, a batch of one sample per rank, and a failing
 * collective reported with its message. */
static void test_world_sum_and_sync_bn(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx(1);
    fake_world f = {.copies = 3};
    tg_collective c = {.sum = fake_sum, .size = 3, .user = &f};
    tg_set_collective(ctx, &c);
    assert_int_equal(tg_collective_size(ctx), 3);
    const float xv[6] = {1, -2, 3, 0.5f, 4, -1}, cv[6] = {1, 2, 3, 4, 5, 6};
    tg_tensor *x = tg_from_data(ctx, TG_F32, 2, (const int64_t[]){2, 3}, xv);
    tg_tensor *cw = tg_from_data(ctx, TG_F32, 2, (const int64_t[]){2, 3}, cv);
    assert_int_equal(tg_set_requires_grad(ctx, x, true), TG_OK);
    tg_tensor *y = tg_world_sum(ctx, x);
    assert_non_null(y);
    assert_int_equal(tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, y, cw), 0, NULL, false), NULL, 0),
                     TG_OK);
    float *yv = host(ctx, y), *gv = host(ctx, x->grad);
    for (int i = 0; i < 6; i++) {
        assert_true(yv[i] == 3 * xv[i]);
        assert_true(gv[i] == 3 * cv[i]);
    }
    assert_int_equal(f.calls, 2);
    free(yv), free(gv);
    tg_step_reset(ctx);

    /* SyncBatchNorm over 2 identical ranks of 3 samples each. */
    f.copies = 2;
    c.size = 2;
    tg_set_collective(ctx, &c);
    tg_params ps = {0};
    tg_batchnorm bn, ref;
    const int64_t C = 2;
    assert_int_equal(tg_batchnorm_init(ctx, &bn, &ps, "bn", C, 1e-5, 0.1), TG_OK);
    assert_int_equal(tg_batchnorm_init(ctx, &ref, &ps, "ref", C, 1e-5, 0.1), TG_OK);
    bn.sync = true;
    float x4[24];
    for (int i = 0; i < 24; i++)
        x4[i] = (float)(sin(1.3 * i) * 2 + 0.25 * (i % 5));
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, (const int64_t[]){3, C, 2, 2}, x4);
    tg_tensor *ys = tg_batchnorm_forward(ctx, &bn, xt, true);
    tg_tensor *yr = tg_batchnorm_forward(ctx, &ref, xt, true);
    assert_non_null(ys);
    assert_non_null(yr);
    float *a = host(ctx, ys), *b = host(ctx, yr);
    for (int i = 0; i < 24; i++)
        assert_true(fabs(a[i] - b[i]) < 1e-5);
    free(a), free(b);
    /* running_var = 0.9 + 0.1 * var * M / (M - 1) with M = 2 ranks x 12 values. */
    float *rs = host(ctx, bn.running_var), *rr = host(ctx, ref.running_var);
    for (int ch = 0; ch < C; ch++) {
        double var = (rr[ch] - 0.9) / 0.1 * 11.0 / 12.0;
        assert_true(fabs(rs[ch] - (0.9 + 0.1 * var * 24.0 / 23.0)) < 1e-5);
    }
    free(rs), free(rr);
    /* One sample per rank: (1, C) is enough when 2 ranks pool it. */
    tg_tensor *one = tg_from_data(ctx, TG_F32, 2, (const int64_t[]){1, C}, x4);
    assert_null(tg_batchnorm_forward(ctx, &ref, one, true));
    tg_ctx_clear_error(ctx);
    f.copies = 1; /* as if the other rank's sample differed: here, the same */
    assert_null(tg_batchnorm_forward(ctx, &bn, one, true));
    tg_ctx_clear_error(ctx);
    f.copies = 2;
    assert_non_null(tg_batchnorm_forward(ctx, &bn, one, true));
    /* A failing collective fails the op, naming it and the cause. */
    x = tg_from_data(ctx, TG_F32, 2, (const int64_t[]){2, 3}, xv);
    f.fail = true;
    assert_null(tg_world_sum(ctx, x));
    assert_int_equal(tg_ctx_status(ctx), TG_ERR_COMM);
    assert_non_null(strstr(tg_ctx_error(ctx), "world_sum: fake: rank 3 lost"));
    tg_ctx_clear_error(ctx);
    /* Without a collective, the identity. */
    tg_set_collective(ctx, NULL);
    assert_int_equal(tg_collective_size(ctx), 1);
    y = tg_world_sum(ctx, x);
    yv = host(ctx, y);
    assert_memory_equal(yv, xv, sizeof xv);
    free(yv);
    tg_ctx_free(ctx);
}

/* The dropout mask depends on the seed and position only. */
static void test_dropout_thread_independent(void **state) {
    (void)state;
    const int64_t n = 100003; /* past the parallel threshold, not a multiple of 4 */
    float *out[2];
    for (int k = 0; k < 2; k++) {
        tg_ctx *ctx = new_ctx(k + 1);
        tg_tensor *x = tg_full(ctx, TG_F32, 1, &n, 1.0);
        tg_rng rng = tg_rng_make(99, 4);
        tg_tensor *y = tg_dropout(ctx, x, 0.25, true, &rng);
        assert_non_null(y);
        assert_true(rng.counter == (uint64_t)((n + 3) / 4));
        out[k] = host(ctx, y);
        /* eval mode: the input itself */
        assert_ptr_equal(tg_dropout(ctx, x, 0.25, false, &rng), x);
        tg_ctx_free(ctx);
    }
    assert_memory_equal(out[0], out[1], (size_t)n * sizeof(float));
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        assert_true(out[0][i] == 0.0f || fabsf(out[0][i] - 1.0f / 0.75f) < 1e-6f);
        kept += out[0][i] != 0.0f;
    }
    assert_true(fabs((double)kept / (double)n - 0.75) < 0.01);
    free(out[0]), free(out[1]);
}

static void expect_error(tg_ctx *ctx, tg_tensor *r, tg_status s, const char *a, const char *b) {
    assert_null(r);
    assert_int_equal(tg_ctx_status(ctx), s);
    if (!strstr(tg_ctx_error(ctx), a) || (b && !strstr(tg_ctx_error(ctx), b)))
        fail_msg("message '%s' lacks '%s' / '%s'", tg_ctx_error(ctx), a, b ? b : "");
    tg_ctx_clear_error(ctx);
}

static void test_bad_input(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx(0);
    tg_tensor *logits = tg_zeros(ctx, TG_F32, 2, (const int64_t[]){3, 4});
    const int64_t bad_t[3] = {1, 4, 0}, neg_t[3] = {0, -1, 2};
    tg_tensor *t = tg_from_data(ctx, TG_I64, 1, (const int64_t[]){3}, bad_t);
    expect_error(ctx, tg_cross_entropy(ctx, logits, t, 0.0), TG_ERR_INVALID, "cross_entropy",
                 "target 4 of row 1 is out of range: expected a class in [0, 4)");
    t = tg_from_data(ctx, TG_I64, 1, (const int64_t[]){3}, neg_t);
    expect_error(ctx, tg_cross_entropy(ctx, logits, t, 0.0), TG_ERR_INVALID, "cross_entropy",
                 "target -1");
    tg_tensor *ft = tg_zeros(ctx, TG_F32, 1, (const int64_t[]){3});
    expect_error(ctx, tg_cross_entropy(ctx, logits, ft, 0.0), TG_ERR_DTYPE, "cross_entropy",
                 "integer");
    tg_tensor *t2 = tg_zeros(ctx, TG_I64, 1, (const int64_t[]){2});
    expect_error(ctx, tg_cross_entropy(ctx, logits, t2, 0.0), TG_ERR_SHAPE, "cross_entropy",
                 "(N, C)");
    expect_error(ctx, tg_cross_entropy(ctx, NULL, t2, 0.0), TG_ERR_INVALID, "cross_entropy",
                 "NULL");
    tg_tensor *t3 = tg_zeros(ctx, TG_I64, 1, (const int64_t[]){3});
    expect_error(ctx, tg_cross_entropy(ctx, logits, t3, 1.0), TG_ERR_INVALID, "smoothing", NULL);
    tg_tensor *x = tg_zeros(ctx, TG_F32, 4, (const int64_t[]){2, 3, 5, 5});
    tg_tensor *w = tg_zeros(ctx, TG_F32, 4, (const int64_t[]){4, 2, 3, 3});
    expect_error(ctx, tg_conv2d(ctx, x, w, NULL, NULL), TG_ERR_SHAPE, "conv2d", "(K, 3, R, S)");
    tg_tensor *w7 = tg_zeros(ctx, TG_F32, 4, (const int64_t[]){4, 3, 7, 7});
    expect_error(ctx, tg_conv2d(ctx, x, w7, NULL, NULL), TG_ERR_SHAPE, "conv2d", "larger");
    tg_tensor *wd = tg_zeros(ctx, TG_F64, 4, (const int64_t[]){4, 3, 3, 3});
    expect_error(ctx, tg_conv2d(ctx, x, wd, NULL, NULL), TG_ERR_DTYPE, "conv2d", NULL);
    tg_tensor *w3 = tg_zeros(ctx, TG_F32, 4, (const int64_t[]){4, 3, 3, 3});
    tg_tensor *b5 = tg_zeros(ctx, TG_F32, 1, (const int64_t[]){5});
    expect_error(ctx, tg_conv2d(ctx, x, w3, b5, NULL), TG_ERR_SHAPE, "conv2d", "bias");
    tg_conv2d_opts o0 = {{0, 1}, {0, 0}, {1, 1}};
    expect_error(ctx, tg_conv2d(ctx, x, w3, NULL, &o0), TG_ERR_INVALID, "conv2d", "stride");
    expect_error(ctx, tg_max_pool2d(ctx, x, (const int[]){2, 2}, NULL, (const int[]){2, 0}),
                 TG_ERR_INVALID, "max_pool2d", "pad");
    expect_error(ctx, tg_avg_pool2d(ctx, logits, (const int[]){2, 2}, NULL, NULL), TG_ERR_SHAPE,
                 "avg_pool2d", "4 dims");
    expect_error(ctx, tg_max_pool2d(ctx, x, NULL, NULL, NULL), TG_ERR_INVALID, "max_pool2d",
                 "kernel");
    expect_error(ctx, tg_dropout(ctx, x, 1.0, true, NULL), TG_ERR_INVALID, "dropout", "p = 1");
    expect_error(ctx, tg_dropout(ctx, x, 0.5, true, NULL), TG_ERR_INVALID, "dropout", "rng");
    expect_error(ctx, tg_mse_loss(ctx, logits, x), TG_ERR_SHAPE, "mse_loss", NULL);
    /* layers */
    tg_rng rng = tg_rng_make(0, 0);
    tg_linear fc;
    assert_int_equal(tg_linear_init(ctx, &fc, NULL, "fc", 5, 2, true, &rng), TG_OK);
    expect_error(ctx, tg_linear_forward(ctx, &fc, logits), TG_ERR_SHAPE, "linear", "end in 5");
    assert_int_equal(tg_linear_init(ctx, &fc, NULL, "fc0", 0, 2, true, &rng), TG_ERR_SHAPE);
    tg_ctx_clear_error(ctx);
    tg_embedding e;
    assert_int_equal(tg_embedding_init(ctx, &e, NULL, "emb", 4, 3, &rng), TG_OK);
    const int64_t idx[2] = {1, 4};
    tg_tensor *it = tg_from_data(ctx, TG_I64, 1, (const int64_t[]){2}, idx);
    expect_error(ctx, tg_embedding_forward(ctx, &e, it), TG_ERR_INVALID, "gather", "out of range");
    expect_error(ctx, tg_embedding_forward(ctx, &e, logits), TG_ERR_DTYPE, "embedding", NULL);
    tg_batchnorm bn;
    assert_int_equal(tg_batchnorm_init(ctx, &bn, NULL, "bn", 3, 1e-5, 0.1), TG_OK);
    expect_error(ctx, tg_batchnorm_forward(ctx, &bn, logits, true), TG_ERR_SHAPE, "batchnorm",
                 "(N, 3)");
    tg_ctx_free(ctx);
}

/* Cross-entropy forward against a value computed here, with smoothing, in
 * f32 with large logits (the max must be subtracted). */
static void test_cross_entropy_value(void **state) {
    (void)state;
    tg_ctx *ctx = new_ctx(0);
    const float lg[6] = {1000.0f, 1001.0f, 999.0f, -2.0f, 0.5f, 3.0f};
    const int32_t tg[2] = {2, 0};
    tg_tensor *l = tg_from_data(ctx, TG_F32, 2, (const int64_t[]){2, 3}, lg);
    tg_tensor *t = tg_from_data(ctx, TG_I32, 1, (const int64_t[]){2}, tg);
    tg_tensor *loss = tg_cross_entropy(ctx, l, t, 0.2);
    assert_non_null(loss);
    double want = 0;
    for (int i = 0; i < 2; i++) {
        double mx = fmax(lg[3 * i], fmax(lg[3 * i + 1], lg[3 * i + 2])), s = 0;
        for (int c = 0; c < 3; c++)
            s += exp(lg[3 * i + c] - mx);
        for (int c = 0; c < 3; c++) {
            double q = 0.2 / 3 + (c == tg[i] ? 0.8 : 0.0);
            want += -q * (lg[3 * i + c] - mx - log(s));
        }
    }
    want /= 2;
    double got;
    assert_int_equal(tg_item(ctx, loss, &got), TG_OK);
    assert_true(fabs(got - want) < 1e-5);
    tg_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_init_matches_pytorch_bounds),
        cmocka_unit_test(test_linear_bias_added_in_place),
        cmocka_unit_test(test_conv_and_other_inits),
        cmocka_unit_test(test_batchnorm_running_stats),
        cmocka_unit_test(test_batchnorm_fused_matches_composed),
        cmocka_unit_test(test_world_sum_and_sync_bn),
        cmocka_unit_test(test_dropout_thread_independent),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_grouped_conv_matches_block_diagonal),
        cmocka_unit_test(test_cross_entropy_value),
    };
    return cmocka_run_group_tests_name("nn", tests, NULL, NULL);
}
