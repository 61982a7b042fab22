/*
 * tests/bench/bench_attn.c: one attention configuration, forward + backward,
 * through the fused row or the composed ops; tests/bench/compare_attn.py runs
 * it once per configuration (a fresh process each, so that the peak RSS is
 * that configuration's) beside PyTorch's SDPA.
 *
 *   bench_attn --variant fused|composed --t T [--b 4] [--h 4] [--d 32]
 *       [--causal 1] [--threads N] [--steps 5] [--warmup 1] [--precision f32|bf16]
 *
 * A step is q, k, v (B, H, T, D) f32 persistent leaves -> attention ->
 * backward with a fixed seed gradient, then tg_step_reset(). It prints one
 * JSON line: the median and minimum step time in ms, the step arena's
 * high-water mark (every byte the step allocates: activations, what is
 * saved for backward, intermediate gradients), the RSS after the inputs are
 * made and the process's peak RSS (kB), and a digest of the last step's
 * results (FNV-1a over the bits of the output and the gradients of q, k and
 * v, outside the timing), so that two builds can be checked for the same
 * bits. --precision bf16 runs the step under autocast
 * (tg_ctx_set_precision: the fused row's products in bf16, and the composed
 * version's matmuls).
 * Not a ctest test: timings depend on the machine and its load.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tapegrad/nn.h"
#include "tapegrad/rng.h"
#include "tapegrad/runtime.h"
#include "bench_util.h"

/* The current resident set, kB (VmRSS), or -1. */
static long rss_now_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

/* FNV-1a over the bytes of t's f32 values, folded into h; buf holds n floats. */
static uint64_t digest(tg_ctx *ctx, const tg_tensor *t, float *buf, int64_t n, uint64_t h) {
    if (!t || tg_to_host(ctx, t, buf, (size_t)n * sizeof *buf) != TG_OK)
        return 0;
    const unsigned char *p = (const unsigned char *)buf;
    for (size_t i = 0; i < (size_t)n * sizeof *buf; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void die(tg_ctx *ctx, const char *what) {
    fprintf(stderr, "bench_attn: %s: %s\n", what, ctx ? tg_ctx_error(ctx) : "");
    exit(1);
}

int main(int argc, char **argv) {
    const char *variant = "fused", *precision = "f32";
    long t = 0, b = 4, h = 4, d = 32, causal = 1, threads = 0, steps = 5, warmup = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i];
        long v = strtol(argv[i + 1], NULL, 10);
        if (strcmp(k, "--variant") == 0)
            variant = argv[i + 1];
        else if (strcmp(k, "--t") == 0)
            t = v;
        else if (strcmp(k, "--b") == 0)
            b = v;
        else if (strcmp(k, "--h") == 0)
            h = v;
        else if (strcmp(k, "--d") == 0)
            d = v;
        else if (strcmp(k, "--causal") == 0)
            causal = v;
        else if (strcmp(k, "--threads") == 0)
            threads = v;
        else if (strcmp(k, "--steps") == 0)
            steps = v;
        else if (strcmp(k, "--warmup") == 0)
            warmup = v;
        else if (strcmp(k, "--precision") == 0)
            precision = argv[i + 1];
        else {
            fprintf(stderr, "bench_attn: unknown option %s\n", k);
            return 2;
        }
    }
    const bool fused = strcmp(variant, "fused") == 0;
    const bool bf16 = strcmp(precision, "bf16") == 0;
    if ((!fused && strcmp(variant, "composed") != 0) || (!bf16 && strcmp(precision, "f32") != 0) ||
        t < 1 || b < 1 || h < 1 || d < 1 || steps < 1 || steps > 1000 || warmup < 0) {
        fprintf(stderr, "usage: bench_attn --variant fused|composed --t T [--b B] [--h H] "
                        "[--d D] [--causal 0|1] [--threads N] [--steps S] [--warmup W] "
                        "[--precision f32|bf16]\n");
        return 2;
    }
    tg_ctx_config cc = {.threads = (int)threads};
    tg_ctx *ctx = NULL;
    if (tg_ctx_new(&cc, &ctx) != TG_OK)
        die(NULL, tg_last_init_error());
    if (bf16 && tg_ctx_set_precision(ctx, TG_PRECISION_BF16) != TG_OK)
        die(ctx, "--precision bf16");
    const int64_t shape[4] = {b, h, t, d}, n = b * h * t * d;
    float *host = malloc((size_t)n * sizeof *host);
    if (!host)
        die(ctx, "out of memory");
    tg_rng rng = tg_rng_make(5, 0);
    tg_tensor *in[3], *seed;
    for (int i = 0; i < 3; i++) {
        in[i] = tg_persistent(ctx, TG_F32, 4, shape, i == 0 ? "q" : i == 1 ? "k" : "v");
        tg_rng_normal(&rng, host, n, 0.0f, 1.0f);
        if (!in[i] || tg_copy_from_host(ctx, in[i], host, (size_t)n * sizeof *host) != TG_OK ||
            tg_set_requires_grad(ctx, in[i], true) != TG_OK)
            die(ctx, "making the inputs");
    }
    seed = tg_persistent(ctx, TG_F32, 4, shape, "seed");
    tg_rng_normal(&rng, host, n, 0.0f, 1.0f);
    if (!seed || tg_copy_from_host(ctx, seed, host, (size_t)n * sizeof *host) != TG_OK)
        die(ctx, "making the seed");
    const long rss_base = rss_now_kb();
    double *ms = malloc((size_t)steps * sizeof *ms);
    if (!ms)
        die(ctx, "out of memory");
    uint64_t hash = 0;
    for (long s = 0; s < warmup + steps; s++) {
        double t0 = now_s();
        tg_tensor *o = fused ? tg_scaled_dot_product_attention(ctx, in[0], in[1], in[2], causal)
                             : tg_attention_composed(ctx, in[0], in[1], in[2], causal);
        if (!o || tg_backward(ctx, o, seed, 0) != TG_OK || tg_synchronize(ctx) != TG_OK)
            die(ctx, "the step");
        double t1 = now_s();
        if (s == warmup + steps - 1) {
            hash = 14695981039346656037ull;
            hash = digest(ctx, o, host, n, hash);
            for (int i = 0; i < 3 && hash; i++)
                hash = digest(ctx, in[i]->grad, host, n, hash);
            if (!hash)
                die(ctx, "reading the results");
            t0 += now_s() - t1;
        }
        tg_step_reset(ctx);
        if (s >= warmup)
            ms[s - warmup] = 1e3 * (now_s() - t0);
    }
    free(host);
    qsort(ms, (size_t)steps, sizeof *ms, cmp_double);
    size_t used, reserved, high;
    tg_arena_stats(ctx, &used, &reserved, &high);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"variant\": \"%s\", \"precision\": \"%s\", \"b\": %ld, \"h\": %ld, \"t\": %ld, "
           "\"d\": %ld, \"causal\": %ld, "
           "\"threads\": %ld, \"ms_median\": %.3f, \"ms_min\": %.3f, \"arena_peak\": %zu, "
           "\"rss_base_kb\": %ld, \"rss_peak_kb\": %ld, \"digest\": \"%016llx\"}\n",
           variant, precision, b, h, t, d, causal, threads, ms[steps / 2], ms[0], high, rss_base,
           ru.ru_maxrss, (unsigned long long)hash);
    free(ms);
    tg_ctx_free(ctx);
    return 0;
}
