/*
 * tests/bench/bench_cuda.c: f32 matmul on the GPU through tg_matmul against
 * bare cuBLAS on the same sizes (run by scripts/gpu_check.sh).
 *
 *   bench_cuda [--sizes 1024,2048,4096] [--iters N] [--reps N]
 *
 * For each square size n it times --iters products C = A B per repetition,
 * --reps repetitions after one warm-up, both through the op on a CUDA
 * context (cuBLAS inside, default math: no TF32) and through cublasSgemm
 * called directly with the same math mode on its own stream, and prints one
 * JSON line per size with the median GFLOP/s of each and their ratio. The
 * bare side links the toolkit's cudart and cuBLAS itself; the library keeps
 * its own (static) runtime, and both use the device's primary context.
 * Not a ctest test: it needs a GPU.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tapegrad/kernels.h"
#include "tapegrad/runtime.h"
#include "bench_util.h"

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define REPS_MAX 64

/* GFLOP/s of the op: iters products, then one element read back (which
 * waits for the context's stream). */
static int bench_op(tg_ctx *ctx, int n, int iters, int reps, const float *host, double *gflops) {
    int64_t shape[2] = {n, n};
    tg_tensor *a = tg_persistent(ctx, TG_F32, 2, shape, "a");
    tg_tensor *b = tg_persistent(ctx, TG_F32, 2, shape, "b");
    size_t bytes = (size_t)n * n * sizeof(float);
    if (!a || !b || tg_copy_from_host(ctx, a, host, bytes) ||
        tg_copy_from_host(ctx, b, host + (size_t)n * n, bytes)) {
        fprintf(stderr, "bench_cuda: op inputs: %s\n", tg_ctx_error(ctx));
        return 1;
    }
    double t[REPS_MAX], v;
    for (int r = -1; r < reps; r++) {
        double t0 = now_s();
        tg_tensor *c = NULL;
        for (int i = 0; i < iters; i++) {
            c = tg_matmul(ctx, a, b);
            if (!c) {
                fprintf(stderr, "bench_cuda: tg_matmul: %s\n", tg_ctx_error(ctx));
                return 1;
            }
        }
        if (tg_get(ctx, c, 0, &v)) {
            fprintf(stderr, "bench_cuda: reading C: %s\n", tg_ctx_error(ctx));
            return 1;
        }
        if (r >= 0)
            t[r] = now_s() - t0;
        tg_step_reset(ctx);
    }
    *gflops = 2.0 * n * n * (double)n * iters / median(t, reps) * 1e-9;
    return 0;
}

#define CU(call)                                                                       \
    do {                                                                               \
        cudaError_t e_ = (call);                                                       \
        if (e_ != cudaSuccess) {                                                       \
            fprintf(stderr, "bench_cuda: %s: %s\n", #call, cudaGetErrorString(e_));    \
            return 1;                                                                  \
        }                                                                              \
    } while (0)
#define CB(call)                                                                       \
    do {                                                                               \
        cublasStatus_t e_ = (call);                                                    \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                                             \
            fprintf(stderr, "bench_cuda: %s: %s\n", #call, cublasGetStatusString(e_)); \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

static int bench_bare(int n, int iters, int reps, const float *host, double *gflops) {
    size_t bytes = (size_t)n * n * sizeof(float);
    float *a = NULL, *b = NULL, *c = NULL;
    cudaStream_t s;
    cublasHandle_t h;
    CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CB(cublasCreate(&h));
    CB(cublasSetStream(h, s));
    CB(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    CU(cudaMalloc((void **)&a, bytes));
    CU(cudaMalloc((void **)&b, bytes));
    CU(cudaMalloc((void **)&c, bytes));
    CU(cudaMemcpy(a, host, bytes, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(b, host + (size_t)n * n, bytes, cudaMemcpyHostToDevice));
    const float one = 1.0f, zero = 0.0f;
    double t[REPS_MAX];
    for (int r = -1; r < reps; r++) {
        double t0 = now_s();
        for (int i = 0; i < iters; i++)
            CB(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, b, n, a, n, &zero, c, n));
        CU(cudaStreamSynchronize(s));
        if (r >= 0)
            t[r] = now_s() - t0;
    }
    *gflops = 2.0 * n * n * (double)n * iters / median(t, reps) * 1e-9;
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    cublasDestroy(h);
    cudaStreamDestroy(s);
    return 0;
}

int main(int argc, char **argv) {
    const char *sizes = "1024,2048,4096";
    int iters = 20, reps = 7;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc)
            sizes = argv[++i];
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_cuda [--sizes N,N,...] [--iters N] [--reps N]\n");
            return 2;
        }
    }
    if (iters < 1 || reps < 1 || reps > REPS_MAX) {
        fprintf(stderr, "bench_cuda: --iters >= 1 and --reps in [1, %d]\n", REPS_MAX);
        return 2;
    }
    char why[1024];
    if (tg_cuda_available(why, sizeof why) != TG_OK) {
        fprintf(stderr, "bench_cuda: %s\n", why);
        return 77;
    }
    tg_ctx_config cfg = {.device = TG_DEVICE_CUDA};
    tg_ctx *ctx = NULL;
    if (tg_ctx_new(&cfg, &ctx) != TG_OK) {
        fprintf(stderr, "bench_cuda: tg_ctx_new: %s\n", tg_last_init_error());
        return 1;
    }
    tg_set_grad_enabled(ctx, false);
    int rc = 0;
    for (const char *p = sizes; *p && !rc;) {
        int n = atoi(p);
        if (n < 1) {
            fprintf(stderr, "bench_cuda: bad size in '%s'\n", sizes);
            rc = 2;
            break;
        }
        float *host = malloc((size_t)n * n * 2 * sizeof(float));
        if (!host) {
            rc = 1;
            break;
        }
        for (size_t i = 0; i < (size_t)n * n * 2; i++)
            host[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        double op = 0, bare = 0;
        /* Alternate the two sides so that clock drift hits both alike. */
        rc = bench_bare(n, iters, reps, host, &bare) || bench_op(ctx, n, iters, reps, host, &op);
        if (!rc)
            printf("{\"bench\": \"matmul_f32\", \"n\": %d, \"op_gflops\": %.1f, "
                   "\"cublas_gflops\": %.1f, \"ratio\": %.3f}\n",
                   n, op, bare, op / bare);
        fflush(stdout);
        free(host);
        p = strchr(p, ',');
        p = p ? p + 1 : "";
    }
    tg_ctx_free(ctx);
    return rc;
}
