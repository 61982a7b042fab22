/*
 * tests/bench/bench_conv.c: the convolution paths side by side, for the
 * layer shapes of the cnn model and of ResNet-20.
 *
 *   bench_conv [--threads N] [--batch N] [--reps N]
 *
 * For each shape it times, per direction (forward, gradient of x, gradient
 * of w), the f32 im2col + OpenBLAS kernels through the ops (what f32 training
 * runs), oneDNN's f32 convolution, and oneDNN's bf16 convolution (what
 * --precision bf16 runs), alternating the three --reps times and keeping
 * each one's best time, and prints GFLOP/s (2 N K C R S OH OW per
 * direction). oneDNN's rows are missing in a build without it.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/cpu.h"
#include "tapegrad/nn.h"
#include "tapegrad/runtime.h"
#include "bench_util.h"

typedef struct shape {
    const char *name;
    int c, k, hw, r, pad;
} shape;

static const shape shapes[] = {
    {"cnn conv1", 1, 32, 28, 5, 2},          {"cnn conv2", 32, 64, 14, 5, 2},
    {"resnet20 stem", 3, 16, 32, 3, 1},      {"resnet20 16@32x32", 16, 16, 32, 3, 1},
    {"resnet20 32@16x16", 32, 32, 16, 3, 1}, {"resnet20 64@8x8", 64, 64, 8, 3, 1},
};

static tg_kview view4(float *p, int64_t a, int64_t b, int64_t c, int64_t d) {
    tg_kview v;
    memset(&v, 0, sizeof v);
    v.data = p;
    v.dtype = TG_F32;
    v.ndim = 4;
    const int64_t s[4] = {a, b, c, d};
    for (int i = 3, st = 1; i >= 0; st *= (int)s[i], i--) {
        v.shape[i] = s[i];
        v.strides[i] = st;
    }
    return v;
}

/* One direction through the ops (im2col) on ctx. */
static double time_ops(tg_ctx *ctx, int dir, tg_tensor *x, tg_tensor *w, tg_tensor *g,
                       const tg_conv2d_opts *o, const shape *s) {
    double t0 = now_s();
    tg_tensor *r = dir == 0   ? tg_conv2d(ctx, x, w, NULL, o)
                   : dir == 1 ? tg_conv2d_backward_input(ctx, g, w, o, s->hw, s->hw)
                              : tg_conv2d_backward_weight(ctx, x, g, o, s->r, s->r);
    double t = now_s() - t0;
    if (!r) {
        fprintf(stderr, "bench_conv: %s\n", tg_ctx_error(ctx));
        exit(1);
    }
    tg_step_reset(ctx);
    return t;
}

static double time_dnnl(tg__dnnl *d, int dir, bool bf16, const tg__conv_geom *g, tg_kview *x,
                        tg_kview *w, tg_kview *gy, float *out) {
    char err[256];
    double t0 = now_s();
    tg_status st = dir == 0   ? tg__dnnl_conv(d, 0, bf16, g, x, w, NULL, out, err, sizeof err)
                   : dir == 1 ? tg__dnnl_conv(d, 1, bf16, g, gy, w, NULL, out, err, sizeof err)
                              : tg__dnnl_conv(d, 2, bf16, g, x, gy, NULL, out, err, sizeof err);
    double t = now_s() - t0;
    if (st != TG_OK) {
        fprintf(stderr, "bench_conv: %s\n", err);
        exit(1);
    }
    return t;
}

int main(int argc, char **argv) {
    int threads = 2, batch = 256, reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--threads") && v > 0)
            threads = v;
        else if (!strcmp(argv[i], "--batch") && v > 0)
            batch = v;
        else if (!strcmp(argv[i], "--reps") && v > 0)
            reps = v;
        else {
            fprintf(stderr, "usage: bench_conv [--threads N] [--batch N] [--reps N]\n");
            return 2;
        }
    }
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = threads};
    tg_ctx *ctx;
    if (tg_ctx_new(&cc, &ctx) != TG_OK)
        return 1;
    tg__dnnl *d = NULL;
    char err[256];
    if (tg__dnnl_new(&d, err, sizeof err) != TG_OK)
        printf("(%s)\n", err);
    printf("threads %d, batch %d, best of %d; GFLOP/s: im2col f32 | oneDNN f32 | oneDNN bf16\n",
           threads, batch, reps);
    static const char *dirs[3] = {"fwd", "dx", "dw"};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        const int64_t n = batch, hw = s->hw;
        const int64_t sx[] = {n, s->c, hw, hw}, sw[] = {s->k, s->c, s->r, s->r},
                      sy[] = {n, s->k, hw, hw};
        float *xv = rnd(n * s->c * hw * hw), *wv = rnd(s->k * s->c * s->r * s->r),
              *gv = rnd(n * s->k * hw * hw);
        float *out = malloc((size_t)(n * (s->c > s->k ? s->c : s->k) * hw * hw) * sizeof *out);
        tg_tensor *x = tg_persistent(ctx, TG_F32, 4, sx, "x");
        tg_tensor *w = tg_persistent(ctx, TG_F32, 4, sw, "w");
        tg_tensor *g = tg_persistent(ctx, TG_F32, 4, sy, "g");
        tg_copy_from_host(ctx, x, xv, (size_t)tg_numel(x) * 4);
        tg_copy_from_host(ctx, w, wv, (size_t)tg_numel(w) * 4);
        tg_copy_from_host(ctx, g, gv, (size_t)tg_numel(g) * 4);
        const tg_conv2d_opts o = {{1, 1}, {s->pad, s->pad}, {1, 1}};
        tg__conv_geom geo = {n, s->c, hw, hw, s->k, s->r, s->r, hw, hw, 1, 1, s->pad, s->pad, 1, 1};
        tg_kview kx = view4(xv, n, s->c, hw, hw), kw = view4(wv, s->k, s->c, s->r, s->r),
                 kg = view4(gv, n, s->k, hw, hw);
        const double flop = 2.0 * (double)(n * s->k * s->c * s->r * s->r * hw * hw);
        for (int dir = 0; dir < 3; dir++) {
            double best[3] = {1e30, 1e30, 1e30};
            for (int rep = 0; rep < reps + 1; rep++) {
                /* The first round makes the primitives: not counted. */
                double t = time_ops(ctx, dir, x, w, g, &o, s);
                if (rep)
                    best[0] = t < best[0] ? t : best[0];
                for (int b = 0; d && b < 2; b++) {
                    t = time_dnnl(d, dir, b == 1, &geo, &kx, &kw, &kg, out);
                    if (rep)
                        best[1 + b] = t < best[1 + b] ? t : best[1 + b];
                }
            }
            printf("%-18s %-3s %8.1f %8.1f %8.1f\n", s->name, dirs[dir], flop / best[0] * 1e-9,
                   d ? flop / best[1] * 1e-9 : 0.0, d ? flop / best[2] * 1e-9 : 0.0);
            fflush(stdout);
        }
        free(xv), free(wv), free(gv), free(out);
    }
    tg__dnnl_free(d);
    tg_ctx_free(ctx);
    return 0;
}
