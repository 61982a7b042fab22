/*
 * tests/bench/bench_gemm16.c: the autocast matmul's two bf16 products side by
 * side, for the gpt's shapes (batch 32, block 128, width 128, 4 heads, the
 * vocabulary's 256 logits): our AVX512_BF16 kernel (kernels/cpu/
 * cpu_gemm_bf16.c) and oneDNN's matmul primitive with our rounding of the
 * operands before it (kernels/cpu/cpu_dnnl.c), each from f32 operands as
 * the matmul op hands them over.
 *
 *   bench_gemm16 [--threads N] [--reps N]
 *
 * Per shape it alternates the two --reps times (after one untimed call of
 * each, which makes oneDNN's primitive) and prints each one's median time in
 * ms and GFLOP/s (2 n m k) and their ratio (oneDNN's time over ours).
 * oneDNN's columns are missing in a build without it,
 * ours on a CPU without AVX512_BF16. Not a ctest test.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/cpu.h"
#include "tapegrad/runtime.h"
#include "bench_util.h"

/* op(A) (n x k) op(B) (k x m); ta, tb: stored transposed. */
typedef struct shape {
    const char *name;
    int64_t n, k, m;
    bool ta, tb;
} shape;

static const shape shapes[] = {
    {"mlp fc1 (B^T)", 4096, 128, 512, false, true},
    {"mlp fc1 (ab)", 4096, 128, 512, false, false},
    {"qkv (B^T)", 4096, 128, 384, false, true},
    {"mlp fc2 (B^T)", 4096, 512, 128, false, true},
    {"mlp fc2 dx (ab)", 4096, 512, 128, false, false},
    {"fc2 dw (A^T)", 512, 4096, 128, true, false},
    {"fc1 dw (A^T)", 128, 4096, 512, true, false},
    {"qkv dw (A^T)", 384, 4096, 128, true, false},
    {"proj dw (A^T)", 128, 4096, 128, true, false},
    {"qkv dx (ab)", 4096, 384, 128, false, false},
    {"proj (B^T)", 4096, 128, 128, false, true},
    {"proj dx (ab)", 4096, 128, 128, false, false},
    {"lm head (B^T)", 4096, 128, 256, false, true},
    {"lm head dx (ab)", 4096, 256, 128, false, false},
    {"lm head dw (A^T)", 256, 4096, 128, true, false},
};

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

int main(int argc, char **argv) {
    int threads = 1, reps = 15;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--threads") && v > 0)
            threads = v;
        else if (!strcmp(argv[i], "--reps") && v > 0)
            reps = v;
        else {
            fprintf(stderr, "usage: bench_gemm16 [--threads N] [--reps N]\n");
            return 2;
        }
    }
    omp_set_num_threads(threads);
    char err[256];
    tg__dnnl *d = NULL;
    if (tg__dnnl_new(&d, err, sizeof err) != TG_OK)
        printf("(%s)\n", err);
    tg__gemm16 *g = tg__cpu_avx512_bf16() ? tg__gemm16_new(threads) : NULL;
    if (!g)
        printf("(no AVX512_BF16 on this CPU: our kernel is not timed)\n");
    printf("threads %d, median of %d alternated calls\n", threads, reps);
    printf("%-18s %-20s %9s %9s %9s %9s %7s\n", "shape", "n x k @ k x m", "own ms", "GFLOP/s",
           "oneDNN ms", "GFLOP/s", "ratio");
    double *t[2] = {malloc(sizeof(double) * (size_t)reps), malloc(sizeof(double) * (size_t)reps)};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        const tg__gemm_arg ga = {.trans = s->ta, .ld = s->ta ? s->n : s->k};
        const tg__gemm_arg gb = {.trans = s->tb, .ld = s->tb ? s->k : s->m};
        float *A = rnd(s->n * s->k), *B = rnd(s->k * s->m), *C = rnd(s->n * s->m);
        double med[2] = {0, 0};
        for (int rep = -1; rep < reps; rep++) {
            for (int w = 0; w < 2; w++) {
                if ((w == 0 && !g) || (w == 1 && !d))
                    continue;
                const double t0 = now_s();
                if (w == 0)
                    tg__gemm16_run(g, threads, &ga, &gb, s->n, s->m, s->k, A, B, C);
                else if (tg__dnnl_gemm(d, &ga, &gb, s->n, s->m, s->k, A, B, C, err, sizeof err)) {
                    fprintf(stderr, "bench_gemm16: %s\n", err);
                    return 1;
                }
                if (rep >= 0)
                    t[w][rep] = now_s() - t0;
            }
        }
        for (int w = 0; w < 2; w++)
            med[w] = (w == 0 ? g != NULL : d != NULL) ? median(t[w], reps) : 0;
        const double flop = 2.0 * (double)s->n * (double)s->m * (double)s->k;
        char dims[64];
        snprintf(dims, sizeof dims, "%lldx%lld%s @ %lldx%lld%s", (long long)s->n, (long long)s->k,
                 s->ta ? "^T" : "", (long long)s->k, (long long)s->m, s->tb ? "^T" : "");
        printf("%-18s %-20s %9.3f %9.1f %9.3f %9.1f %7.2f\n", s->name, dims, med[0] * 1e3,
               med[0] > 0 ? flop / med[0] * 1e-9 : 0.0, med[1] * 1e3,
               med[1] > 0 ? flop / med[1] * 1e-9 : 0.0, med[0] > 0 ? med[1] / med[0] : 0.0);
        fflush(stdout);
        free(A), free(B), free(C);
    }
    free(t[0]), free(t[1]);
    tg__gemm16_free(g);
    tg__dnnl_free(d);
    return 0;
}
