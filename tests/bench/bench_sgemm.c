/*
 * tests/bench/bench_sgemm.c: the f32 product of our own (kernels/cpu/
 * cpu_sgemm.c) against OpenBLAS's sgemm on one thread, at the products of a
 * gpt step (4 layers, 128 wide, batch 32 x 128 tokens) and of the mlp's and
 * the cnn's linear layers at batch 256.
 *
 *   bench_sgemm [--reps N]
 *
 * Each shape runs both sides alternately N times (default 9) and keeps the
 * best time of each; on our side B is copied into the kernel's panels first
 * where cpu_matmul.c copies it (a transposed B, and a B of 256 columns or
 * more in a product of 1,024 rows or more), and the copy is timed with it. Prints one row
 * per shape (ms and GFLOP/s of each side, the ratio, the largest difference
 * between the two results relative to the largest magnitude) and the totals.
 * Exits 77 on a CPU without AVX-512 (only OpenBLAS runs there).
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/cpu.h"
#include "bench_util.h"

typedef struct shape {
    const char *what;
    int ta, tb;
    int64_t n, k, m; /* C (n x m) = op(A) (n x k) op(B) (k x m) */
} shape;

static const shape shapes[] = {
    {"gpt qkv", 0, 1, 4096, 128, 384},       {"gpt attn proj", 0, 1, 4096, 128, 128},
    {"gpt fc", 0, 1, 4096, 128, 512},        {"gpt fc proj", 0, 1, 4096, 512, 128},
    {"gpt head", 0, 1, 4096, 128, 256},      {"gpt d fc proj", 0, 0, 4096, 128, 512},
    {"gpt d fc", 0, 0, 4096, 512, 128},      {"gpt d qkv", 0, 0, 4096, 384, 128},
    {"gpt d proj", 0, 0, 4096, 128, 128},    {"gpt d head", 0, 0, 4096, 256, 128},
    {"gpt dW fc", 1, 0, 512, 4096, 128},     {"gpt dW fc proj", 1, 0, 128, 4096, 512},
    {"gpt dW qkv", 1, 0, 384, 4096, 128},    {"gpt dW proj", 1, 0, 128, 4096, 128},
    {"gpt dW head", 1, 0, 256, 4096, 128},   {"mlp fc1", 0, 1, 256, 784, 256},
    {"mlp fc2", 0, 1, 256, 256, 128},        {"mlp d fc1", 0, 0, 256, 256, 784},
    {"mlp dW fc1", 1, 0, 784, 256, 256},     {"mlp fc3", 0, 1, 256, 128, 10},
    {"cnn fc1", 0, 1, 256, 3136, 1024},      {"cnn d fc1", 0, 0, 256, 1024, 3136},
    {"cnn dW fc1", 1, 0, 1024, 256, 3136},   {"cnn fc2", 0, 1, 256, 1024, 10},
};

int main(int argc, char **argv) {
    int reps = 9;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc && atoi(argv[i + 1]) > 0) {
            reps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_sgemm [--reps N]\n");
            return 2;
        }
    }
    if (!tg__cpu_sgemm_on()) {
        fprintf(stderr, "bench_sgemm: no AVX-512 on this CPU (or TG_CPU_SGEMM=blas): OpenBLAS "
                        "does every f32 product; nothing to compare\n");
        return 77;
    }
    openblas_set_num_threads(1);
    printf("%-15s %2s %5s %5s %5s %9s %7s %9s %7s %6s %9s\n", "product", "t", "n", "k", "m",
           "blas ms", "GF/s", "ours ms", "GF/s", "ratio", "rel diff");
    double tot_b = 0, tot_o = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *h = &shapes[s];
        const int64_t n = h->n, k = h->k, m = h->m;
        const int64_t lda = h->ta ? n : k, ldb = h->tb ? k : m;
        float *A = rnd(n * k), *B = rnd(k * m);
        float *C1 = malloc((size_t)(n * m) * sizeof *C1), *C2 = malloc((size_t)(n * m) * sizeof *C2);
        const int64_t nr = TG__CPU_SGEMM_NR, panels = (m + nr - 1) / nr;
        float *pk = malloc((size_t)(panels * nr * k) * sizeof *pk);
        if (!A || !B || !C1 || !C2 || !pk) {
            fprintf(stderr, "bench_sgemm: out of memory\n");
            return 1;
        }
        double best_b = INFINITY, best_o = INFINITY;
        for (int r = 0; r < reps; r++) {
            const double t0 = now_s();
            cblas_sgemm(CblasRowMajor, h->ta ? CblasTrans : CblasNoTrans,
                        h->tb ? CblasTrans : CblasNoTrans, (int)n, (int)m, (int)k, 1.0f, A,
                        (int)lda, B, (int)ldb, 0.0f, C1, (int)m);
            const double t1 = now_s();
            const float *b = B;
            int64_t lb = ldb, bps = nr;
            if (h->tb || (n >= 1024 && m >= 256)) {
                tg__cpu_sgemm_pack(pk, B, h->tb ? 1 : ldb, h->tb ? ldb : 1, k, m, 0, panels);
                b = pk;
                lb = nr;
                bps = nr * k;
            }
            tg__cpu_sgemm(n, m, k, A, h->ta ? 1 : lda, h->ta ? lda : 1, b, lb, bps, C2, m);
            const double t2 = now_s();
            best_b = t1 - t0 < best_b ? t1 - t0 : best_b;
            best_o = t2 - t1 < best_o ? t2 - t1 : best_o;
        }
        double diff = 0, mag = 0;
        for (int64_t i = 0; i < n * m; i++) {
            diff = fmax(diff, fabs((double)C1[i] - (double)C2[i]));
            mag = fmax(mag, fabs((double)C1[i]));
        }
        const double fl = 2.0 * (double)n * (double)m * (double)k;
        printf("%-15s %c%c %5lld %5lld %5lld %9.3f %7.1f %9.3f %7.1f %6.2f %9.1e\n", h->what,
               h->ta ? 'T' : 'N', h->tb ? 'T' : 'N', (long long)n, (long long)k, (long long)m,
               best_b * 1e3, fl / best_b * 1e-9, best_o * 1e3, fl / best_o * 1e-9,
               best_b / best_o, mag > 0 ? diff / mag : diff);
        tot_b += best_b;
        tot_o += best_o;
        free(A);
        free(B);
        free(C1);
        free(C2);
        free(pk);
    }
    printf("total: blas %.2f ms, ours %.2f ms, ratio %.3f\n", tot_b * 1e3, tot_o * 1e3,
           tot_b / tot_o);
    return 0;
}
