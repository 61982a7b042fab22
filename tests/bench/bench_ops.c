/*
 * tests/bench/bench_ops.c: what the tape costs per op, and how close matmul
 * gets to OpenBLAS.
 *
 *   bench_ops [--threads N]
 *
 * Part 1 times long chains of tiny ops (1 and 4 elements), where the arithmetic
 * is negligible and what is left is the runtime's own cost: argument checks,
 * arena allocation, kernel dispatch, and with grad mode on, writing the tape
 * record. The backward pass of the same chain gives the cost of one backward
 * step. tg_step_reset() runs after every chain, so the arena stays small and
 * its (amortised) cost is included.
 *
 * Part 3 times the cnn's two convolutions (forward and both gradients)
 * through the ops against the three bare sgemms of the same sizes.
 *
 * Part 2 times square f32 matmuls through tg_matmul and through cblas_sgemm
 * directly on the same data, so the ratio is the runtime's overhead on top of
 * the BLAS it calls.
 *
 * Figures are medians (and for the tiny ops also minima) of several timed
 * repetitions after a warm-up.
 * Not a ctest test: timings depend on the machine and its load.
 */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tapegrad/nn.h"
#include "tapegrad/runtime.h"
#include "bench_util.h"

/* Ops per chain: tg_step_reset() runs after each one. */
#define CHAIN 1000
/* Chains per timed repetition, and repetitions. Many short repetitions,
 * because on a shared virtual machine the speed drifts by up to 2x over
 * tens of milliseconds: the median says what a run typically sees, the
 * minimum what the code costs when nothing else interferes. */
#define CHAINS_PER_REP 20
#define REPS 31

typedef enum {
    OP_ADD,
    OP_MUL,
    OP_RELU
} bench_op;

static const char *const op_names[] = {"add", "mul", "relu"};

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die_ctx(const tg_ctx *ctx, const char *what) {
    fprintf(stderr, "bench_ops: %s: %s: %s\n", what, tg_status_str(tg_ctx_status(ctx)),
            tg_ctx_error(ctx));
    exit(1);
}

/* A persistent f32 tensor of n elements all equal to value. */
static tg_tensor *filled(tg_ctx *ctx, int64_t n, float value, bool requires_grad) {
    tg_tensor *t = tg_persistent(ctx, TG_F32, 1, &n, NULL);
    if (!t || tg_fill_(ctx, t, value) != TG_OK)
        die_ctx(ctx, "making an input");
    if (requires_grad && tg_set_requires_grad(ctx, t, true) != TG_OK)
        die_ctx(ctx, "tg_set_requires_grad");
    return t;
}

static tg_tensor *apply(tg_ctx *ctx, bench_op op, tg_tensor *x, tg_tensor *b) {
    switch (op) {
    case OP_ADD:
        return tg_add(ctx, x, b);
    case OP_MUL:
        return tg_mul(ctx, x, b);
    case OP_RELU:
        return tg_relu(ctx, x);
    }
    return NULL;
}

/* x <- op(x, b), CHAIN times; returns the last x. */
static tg_tensor *chain(tg_ctx *ctx, bench_op op, tg_tensor *x, tg_tensor *b) {
    for (int i = 0; i < CHAIN; i++)
        x = apply(ctx, op, x, b);
    if (!x)
        die_ctx(ctx, op_names[op]);
    return x;
}

/* A median and a minimum, in ns per op. */
typedef struct timing {
    double med, min;
} timing;

static timing summarize(double *v, int n) {
    timing t = {median(v, n), v[0]}; /* median() sorts v */
    return t;
}

typedef struct tape_cost {
    timing fwd_grad;   /* grad mode on, inputs require grad: record + dispatch */
    timing fwd_nograd; /* grad mode off: dispatch only */
    timing bwd;        /* backward pass only, per op of the chain */
} tape_cost;

/* ns per op of forward chains (tape records made when grad is on). */
static timing time_forward(tg_ctx *ctx, bench_op op, tg_tensor *x0, tg_tensor *b) {
    double per_op[REPS];
    for (int r = -1; r < REPS; r++) { /* r = -1 is the warm-up */
        double t0 = now_s();
        for (int c = 0; c < CHAINS_PER_REP; c++) {
            chain(ctx, op, x0, b);
            tg_step_reset(ctx);
        }
        if (r >= 0)
            per_op[r] = (now_s() - t0) * 1e9 / ((double)CHAINS_PER_REP * CHAIN);
    }
    return summarize(per_op, REPS);
}

/* ns per op of the backward pass alone over a recorded chain. */
static timing time_backward(tg_ctx *ctx, bench_op op, tg_tensor *x0, tg_tensor *b, int64_t n) {
    double per_op[REPS];
    for (int r = -1; r < REPS; r++) {
        double total = 0;
        for (int c = 0; c < CHAINS_PER_REP; c++) {
            tg_tensor *y = chain(ctx, op, x0, b);
            tg_tensor *seed = tg_full(ctx, TG_F32, 1, &n, 1.0);
            if (!seed)
                die_ctx(ctx, "tg_full");
            double t0 = now_s();
            if (tg_backward(ctx, y, seed, 0) != TG_OK)
                die_ctx(ctx, "tg_backward");
            total += now_s() - t0;
            tg_step_reset(ctx);
        }
        if (r >= 0)
            per_op[r] = total * 1e9 / ((double)CHAINS_PER_REP * CHAIN);
    }
    return summarize(per_op, REPS);
}

static tape_cost measure_tape(tg_ctx *ctx, bench_op op, int64_t n) {
    /* Values that stay finite along a chain of 1000: x + 1e-3, x * 1, relu(x). */
    tg_tensor *x0 = filled(ctx, n, 0.5f, true);
    tg_tensor *b = filled(ctx, n, op == OP_MUL ? 1.0f : 1e-3f, true);
    tape_cost c;

    tg_set_grad_enabled(ctx, true);
    c.fwd_grad = time_forward(ctx, op, x0, b);
    c.bwd = time_backward(ctx, op, x0, b, n);
    tg_set_grad_enabled(ctx, false);
    c.fwd_nograd = time_forward(ctx, op, x0, b);
    tg_set_grad_enabled(ctx, true);
    return c;
}

static void bench_tape(tg_ctx *ctx) {
    static const int64_t sizes[] = {1, 4};
    printf("Tape overhead, ns per op: chains of %d ops, tg_step_reset() after each;\n"
           "median and minimum of %d reps of %d ops each\n",
           CHAIN, REPS, CHAINS_PER_REP * CHAIN);
    printf("%-5s %5s | %-17s | %-17s | %s\n", "", "", "record+dispatch", "dispatch only",
           "backward");
    printf("%-5s %5s | %-17s | %-17s |\n", "op", "numel", "(grad on)", "(grad off)");
    printf("%-5s %5s | %8s %8s | %8s %8s | %8s %8s\n", "", "", "median", "min", "median", "min",
           "median", "min");
    for (int op = OP_ADD; op <= OP_RELU; op++) {
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            tape_cost c = measure_tape(ctx, (bench_op)op, sizes[s]);
            printf("%-5s %5lld | %8.0f %8.0f | %8.0f %8.0f | %8.0f %8.0f\n", op_names[op],
                   (long long)sizes[s], c.fwd_grad.med, c.fwd_grad.min, c.fwd_nograd.med,
                   c.fwd_nograd.min, c.bwd.med, c.bwd.min);
        }
    }
    printf("\n");
}

typedef struct mm_cost {
    double tg_s, blas_s, max_diff;
} mm_cost;

static mm_cost measure_matmul(tg_ctx *ctx, int n, int reps) {
    size_t nn = (size_t)n * (size_t)n;
    float *a = malloc(nn * sizeof(float));
    float *b = malloc(nn * sizeof(float));
    float *c = malloc(nn * sizeof(float));
    float *ct = malloc(nn * sizeof(float));
    double *t_tg = malloc((size_t)reps * sizeof(double));
    double *t_blas = malloc((size_t)reps * sizeof(double));
    if (!a || !b || !c || !ct || !t_tg || !t_blas) {
        fprintf(stderr, "bench_ops: out of memory\n");
        exit(1);
    }
    /* A fixed LCG keeps the inputs (and so the check) the same on every run. */
    uint32_t s = 12345;
    for (size_t i = 0; i < nn; i++) {
        s = s * 1664525u + 1013904223u;
        a[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        s = s * 1664525u + 1013904223u;
        b[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }

    int64_t shape[2] = {n, n};
    tg_tensor *ta = tg_persistent(ctx, TG_F32, 2, shape, "a");
    tg_tensor *tb = tg_persistent(ctx, TG_F32, 2, shape, "b");
    if (!ta || !tb || tg_copy_from_host(ctx, ta, a, nn * sizeof(float)) != TG_OK ||
        tg_copy_from_host(ctx, tb, b, nn * sizeof(float)) != TG_OK)
        die_ctx(ctx, "matmul inputs");

    /* tg_matmul and sgemm alternate, so that a drift in the machine's speed
     * affects both columns alike instead of biasing their ratio. */
    const int warmup = 2;
    tg_tensor *y = NULL;
    for (int r = -warmup; r < reps; r++) {
        tg_step_reset(ctx);
        double t0 = now_s();
        y = tg_matmul(ctx, ta, tb);
        double t1 = now_s();
        if (!y)
            die_ctx(ctx, "tg_matmul");
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        double t2 = now_s();
        if (r >= 0) {
            t_tg[r] = t1 - t0;
            t_blas[r] = t2 - t1;
        }
    }
    if (tg_to_host(ctx, y, ct, nn * sizeof(float)) != TG_OK)
        die_ctx(ctx, "tg_to_host");
    tg_step_reset(ctx);

    mm_cost m = {median(t_tg, reps), median(t_blas, reps), 0.0};
    for (size_t i = 0; i < nn; i++)
        m.max_diff = fmax(m.max_diff, fabs((double)c[i] - (double)ct[i]));
    free(a);
    free(b);
    free(c);
    free(ct);
    free(t_tg);
    free(t_blas);
    return m;
}

static void bench_matmul(tg_ctx *ctx) {
    static const int sizes[] = {256, 512, 1024};
    static const int reps[] = {21, 11, 7};
    printf("Matmul, f32, square: tg_matmul against cblas_sgemm on the same data, "
           "alternating;\nmedian after 2 warm-up reps\n");
    printf("%6s %5s %12s %12s %14s %14s %8s %10s\n", "n", "reps", "tg ms", "sgemm ms", "tg GFLOP/s",
           "sgemm GFLOP/s", "tg/sgemm", "max |diff|");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        int n = sizes[i];
        mm_cost m = measure_matmul(ctx, n, reps[i]);
        double flop = 2.0 * n * (double)n * n;
        double g_tg = flop / m.tg_s * 1e-9, g_blas = flop / m.blas_s * 1e-9;
        printf("%6d %5d %12.3f %12.3f %14.1f %14.1f %8.3f %10.2e\n", n, reps[i], m.tg_s * 1e3,
               m.blas_s * 1e3, g_tg, g_blas, g_tg / g_blas, m.max_diff);
    }
}

/* A buffer of n values in [-0.5, 0.5) from a fixed LCG. */
static float *lcg_buf(size_t n, uint32_t seed) {
    float *v = malloc(n * sizeof(float));
    if (!v) {
        fprintf(stderr, "bench_ops: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
    return v;
}

typedef struct conv_shape {
    const char *name;
    int n, c, h, w, k, r, pad;
} conv_shape;

/*
 * One training step's convolution work (forward, input gradient, weight
 * gradient) through the ops, against the three bare sgemms of the same sizes
 * (K x CRS by CRS x N*OH*OW and its two transposes): the same FLOPs with no
 * im2col, col2im, layout or bias passes, so the ratio is what the conv path
 * costs on top of OpenBLAS.
 */
static void measure_conv(tg_ctx *ctx, const conv_shape *cs, int reps) {
    const int oh = cs->h + 2 * cs->pad - cs->r + 1, ow = cs->w + 2 * cs->pad - cs->r + 1;
    const int crs = cs->c * cs->r * cs->r, cols = cs->n * oh * ow;
    int64_t xs[4] = {cs->n, cs->c, cs->h, cs->w}, ws[4] = {cs->k, cs->c, cs->r, cs->r};
    int64_t gs[4] = {cs->n, cs->k, oh, ow}, bs[1] = {cs->k};
    float *x = lcg_buf((size_t)cs->n * cs->c * cs->h * cs->w, 1);
    float *w = lcg_buf((size_t)cs->k * crs, 2), *g = lcg_buf((size_t)cols * cs->k, 3);
    float *bias = lcg_buf((size_t)cs->k, 4);
    float *A = lcg_buf((size_t)cs->k * crs, 5), *B = lcg_buf((size_t)crs * cols, 6);
    float *C = lcg_buf((size_t)cs->k * cols, 7);
    double *t_tg = malloc((size_t)reps * sizeof(double)), *t_blas = malloc((size_t)reps * sizeof(double));
    tg_tensor *tx = tg_persistent(ctx, TG_F32, 4, xs, "x"), *tw = tg_persistent(ctx, TG_F32, 4, ws, "w");
    tg_tensor *tgr = tg_persistent(ctx, TG_F32, 4, gs, "g"), *tb = tg_persistent(ctx, TG_F32, 1, bs, "b");
    if (!t_tg || !t_blas || !tx || !tw || !tgr || !tb ||
        tg_copy_from_host(ctx, tx, x, (size_t)tg_numel(tx) * sizeof(float)) != TG_OK ||
        tg_copy_from_host(ctx, tw, w, (size_t)tg_numel(tw) * sizeof(float)) != TG_OK ||
        tg_copy_from_host(ctx, tgr, g, (size_t)tg_numel(tgr) * sizeof(float)) != TG_OK ||
        tg_copy_from_host(ctx, tb, bias, (size_t)cs->k * sizeof(float)) != TG_OK)
        die_ctx(ctx, "conv inputs");
    tg_conv2d_opts o = {{1, 1}, {cs->pad, cs->pad}, {1, 1}};
    for (int r = -2; r < reps; r++) {
        tg_step_reset(ctx);
        double t0 = now_s();
        if (!tg_conv2d(ctx, tx, tw, tb, &o) ||
            !tg_conv2d_backward_input(ctx, tgr, tw, &o, cs->h, cs->w) ||
            !tg_conv2d_backward_weight(ctx, tx, tgr, &o, cs->r, cs->r))
            die_ctx(ctx, "conv ops");
        double t1 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cs->k, cols, crs, 1.0f, A, crs, B,
                    cols, 0.0f, C, cols);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, crs, cols, cs->k, 1.0f, A, crs, C,
                    cols, 0.0f, B, cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cs->k, crs, cols, 1.0f, C, cols, B,
                    cols, 0.0f, A, crs);
        double t2 = now_s();
        if (r >= 0) {
            t_tg[r] = t1 - t0;
            t_blas[r] = t2 - t1;
        }
    }
    tg_step_reset(ctx);
    double flop = 3.0 * 2.0 * cs->k * (double)crs * cols;
    double tt = median(t_tg, reps), tb2 = median(t_blas, reps);
    printf("%-22s %5d %10.2f %10.2f %12.1f %12.1f %8.3f\n", cs->name, reps, tt * 1e3, tb2 * 1e3,
           flop / tt * 1e-9, flop / tb2 * 1e-9, tb2 / tt);
    free(x), free(w), free(g), free(bias), free(A), free(B), free(C), free(t_tg), free(t_blas);
}

static void bench_conv(tg_ctx *ctx) {
    static const conv_shape shapes[] = {
        {"cnn conv1 (64,1,28,28)", 64, 1, 28, 28, 32, 5, 2},
        {"cnn conv2 (64,32,14,14)", 64, 32, 14, 14, 64, 5, 2},
    };
    printf("\nConv2d, f32, forward + both gradients through the ops against the three "
           "sgemms\nof the same sizes (same FLOPs), alternating; median after 2 warm-up reps\n");
    printf("%-22s %5s %10s %10s %12s %12s %8s\n", "shape (x)", "reps", "ops ms", "sgemm ms",
           "ops GFLOP/s", "sgemm GF/s", "ops/sgemm");
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        measure_conv(ctx, &shapes[i], 9);
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_ops [--threads N]\n"
               "  --threads N  CPU threads for tapegrad and OpenBLAS (default 2)\n");
}

int main(int argc, char **argv) {
    int threads = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            long v = strtol(argv[++i], &end, 10);
            if (errno || *end || v < 1 || v > 1024) {
                fprintf(stderr, "bench_ops: --threads wants a count from 1 to 1024, not '%s'\n",
                        argv[i]);
                return 2;
            }
            threads = (int)v;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_ops: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    openblas_set_num_threads(threads);
    tg_ctx_config cfg = {.device = TG_DEVICE_CPU, .threads = threads};
    tg_ctx *ctx;
    tg_status st = tg_ctx_new(&cfg, &ctx);
    if (st != TG_OK) {
        fprintf(stderr, "bench_ops: tg_ctx_new: %s: %s\n", tg_status_str(st), tg_last_init_error());
        return 1;
    }
    printf("bench_ops: tapegrad %s, CPU backend, %d thread%s\n\n", TG_VERSION_STRING, threads,
           threads == 1 ? "" : "s");
    bench_tape(ctx);
    bench_matmul(ctx);
    bench_conv(ctx);
    tg_ctx_free(ctx);
    return 0;
}
