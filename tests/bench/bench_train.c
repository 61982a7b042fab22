/*
 * tests/bench/bench_train.c: the tapegrad side of the CPU training
 * comparison (see compare_torch.py; torch_train.py is the PyTorch side).
 *
 *   bench_train --data FILE.h5 [--model mlp|cnn|cnn-bn] [--batch-size N]
 *               [--threads N] [--steps N] [--warmup N] [--seed N]
 *               [--precision f32|bf16]
 *
 * Trains the built-in model on the train split with AdamW (lr 1e-3, the
 * PyTorch defaults otherwise), exactly as the trainer's step does (forward,
 * cross-entropy, loss to host, backward, optimizer step, zero grad), and
 * prints one JSON line in torch_train.py's format plus "cpu_ms_per_step",
 * "mallocs_per_step" and "blas_core" (the OpenBLAS kernel set that ran, see
 * tg_blas_info_get):
 *
 *   {"framework": "tapegrad", "model": "cnn", "batch": 256, "threads": 2,
 *    "steps": 20, "samples_per_s": 1234.5, "loss": 0.61, "cpu_ms_per_step": 400.0,
 *    "peak_rss_mb": 412.0, "mallocs_per_step": 0.0, "blas_core": "Cooperlake"}
 *
 * cpu_ms_per_step is the process's user and system CPU time over the timed
 * steps (every thread) per step: on a loaded machine it moves far less than
 * the wall clock.
 *
 * Like torch_train.py it holds the whole train split in memory as f32 and
 * gathers each batch from it through a random permutation, times only the
 * `--steps` steps after `--warmup` untimed ones, and never evaluates, so both
 * sides time the same work.
 *
 * The heap counter (tests/heap_count.h) counts every call to malloc & co.
 * made while the timed steps run, from any thread (OpenMP and OpenBLAS
 * workers included). With TG_BENCH_HEAP_TRACE=N in the environment it prints
 * the call stacks of the first N of them to stderr. Not a ctest test.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tapegrad/datasets.h"
#include "tapegrad/nn.h"
#include "tapegrad/optim.h"
#include "tapegrad/runtime.h"
#include "tapegrad/trainer.h"

#include "../heap_count.h"
#include "bench_util.h"

/* ---- the benchmark ---- */

typedef struct bench_opts {
    const char *data, *model;
    int64_t batch, steps, warmup, seed;
    int threads;
    tg_precision precision; /* --precision bf16: tg_ctx_set_precision */
} bench_opts;

/* User and system CPU seconds of the process, every thread. */
static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_train --data FILE.h5 [--model mlp|cnn|cnn-bn] "
                    "[--batch-size N] [--threads N] [--steps N] [--warmup N] [--seed N] "
                    "[--precision f32|bf16]\n");
    return 2;
}

static int parse(int argc, char **argv, bench_opts *o) {
    *o = (bench_opts){
        .model = "mlp", .batch = 256, .steps = 20, .warmup = 3, .seed = 0, .threads = 2};
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        const char *k = argv[i], *v = argv[++i];
        char *end;
        long long n = strtoll(v, &end, 10);
        bool num = *v && !*end;
        if (!strcmp(k, "--data"))
            o->data = v;
        else if (!strcmp(k, "--model"))
            o->model = v;
        else if (num && n >= 1 && !strcmp(k, "--batch-size"))
            o->batch = n;
        else if (num && n >= 1 && n <= 1024 && !strcmp(k, "--threads"))
            o->threads = (int)n;
        else if (num && n >= 1 && !strcmp(k, "--steps"))
            o->steps = n;
        else if (num && n >= 0 && !strcmp(k, "--warmup"))
            o->warmup = n;
        else if (num && n >= 0 && !strcmp(k, "--seed"))
            o->seed = n;
        else if (!strcmp(k, "--precision") && (!strcmp(v, "f32") || !strcmp(v, "bf16")))
            o->precision = !strcmp(v, "bf16") ? TG_PRECISION_BF16 : TG_PRECISION_F32;
        else
            return usage();
    }
    return o->data ? 0 : usage();
}

/* The whole split as f32 (N, numel) and its labels. */
static int load_split(const char *path, float **x, int64_t **y, int64_t *n, int64_t shape[3]) {
    char err[512];
    tg_dataset *ds;
    if (tg_dataset_open(path, "train", &ds, err, sizeof err) != TG_OK) {
        fprintf(stderr, "bench_train: %s\n", err);
        return 1;
    }
    int nd;
    const int64_t *ss = tg_dataset_sample_shape(ds, &nd);
    for (int d = 0; d < 3; d++)
        shape[d] = d < nd ? ss[d] : 1;
    *n = tg_dataset_len(ds);
    int64_t numel = tg_dataset_sample_numel(ds);
    *x = malloc((size_t)(*n * numel) * sizeof(float));
    *y = malloc((size_t)*n * sizeof(int64_t));
    int64_t *idx = malloc((size_t)*n * sizeof(int64_t));
    int rc = 1;
    if (*x && *y && idx) {
        for (int64_t i = 0; i < *n; i++)
            idx[i] = i;
        rc = tg_dataset_read(ds, idx, *n, *x, *y, err, sizeof err) != TG_OK;
        if (rc)
            fprintf(stderr, "bench_train: %s\n", err);
    } else {
        fprintf(stderr, "bench_train: out of memory for the train split\n");
    }
    free(idx);
    tg_dataset_close(ds);
    return rc;
}

typedef struct bench_run {
    tg_ctx *ctx;
    tg_model model;
    tg_optim *opt;
    const float *x;
    const int64_t *y, *perm;
    int64_t n, numel, batch, shape[3];
    float *xb;
    int64_t *yb;
} bench_run;

/* One step on the k-th batch of the permutation, as the trainer runs it. */
static tg_status bench_step(bench_run *r, int64_t k, double *loss) {
    tg_ctx *ctx = r->ctx;
    const int64_t nb = r->n / r->batch, b0 = (k % nb) * r->batch;
    for (int64_t i = 0; i < r->batch; i++) {
        int64_t j = r->perm[b0 + i];
        memcpy(r->xb + i * r->numel, r->x + j * r->numel, (size_t)r->numel * sizeof(float));
        r->yb[i] = r->y[j];
    }
    tg_step_reset(ctx);
    int64_t xs[4] = {r->batch, r->shape[0], r->shape[1], r->shape[2]};
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, xs, r->xb);
    tg_tensor *yt = tg_from_data(ctx, TG_I64, 1, &r->batch, r->yb);
    tg_tensor *logits = xt && yt ? tg_model_forward(ctx, &r->model, xt, true) : NULL;
    tg_tensor *l = logits ? tg_cross_entropy(ctx, logits, yt, 0.0) : NULL;
    tg_status s;
    if (!l)
        return tg_ctx_status(ctx);
    if ((s = tg_item(ctx, l, loss)) != TG_OK || (s = tg_backward(ctx, l, NULL, 0)) != TG_OK ||
        (s = tg_optim_step(ctx, r->opt, -1.0)) != TG_OK)
        return s;
    return tg_optim_zero_grad(ctx, r->opt);
}

static int run(const bench_opts *o, bench_run *r) {
    tg_model_kind kind;
    if (!tg_model_from_name(o->model, &kind)) {
        fprintf(stderr, "bench_train: unknown model '%s'\n", o->model);
        return 2;
    }
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = o->threads};
    if (tg_ctx_new(&cc, &r->ctx) != TG_OK) {
        fprintf(stderr, "bench_train: %s\n", tg_last_init_error());
        return 1;
    }
    if (tg_ctx_set_precision(r->ctx, o->precision) != TG_OK) {
        fprintf(stderr, "bench_train: %s\n", tg_ctx_error(r->ctx));
        return 1;
    }
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
    oc.lr = 1e-3;
    if (tg_model_init(r->ctx, &r->model, kind, r->shape, 10, (uint64_t)o->seed) != TG_OK ||
        tg_optim_new(r->ctx, &oc, r->model.params.nparams, r->model.params.params, &r->opt) !=
            TG_OK) {
        fprintf(stderr, "bench_train: %s\n", tg_ctx_error(r->ctx));
        return 1;
    }
    double loss = 0;
    for (int64_t k = 0; k < o->warmup; k++)
        if (bench_step(r, k, &loss) != TG_OK)
            goto fail;
    const char *trace = getenv("TG_BENCH_HEAP_TRACE");
    tg_heap_count_start(trace ? strtol(trace, NULL, 10) : 0);
    double t0 = now_s(), c0 = cpu_s();
    for (int64_t k = o->warmup; k < o->warmup + o->steps; k++)
        if (bench_step(r, k, &loss) != TG_OK)
            goto fail;
    double dt = now_s() - t0, cpu = cpu_s() - c0;
    const long heap_calls = tg_heap_count_stop();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    tg_blas_info blas;
    tg_blas_info_get(&blas);
    printf("{\"framework\": \"tapegrad\", \"model\": \"%s\", \"batch\": %lld, \"threads\": %d, "
           "\"steps\": %lld, \"samples_per_s\": %.1f, \"loss\": %.6f, \"cpu_ms_per_step\": %.1f, "
           "\"peak_rss_mb\": %.1f, "
           "\"mallocs_per_step\": %.2f, \"blas_core\": \"%s\", \"precision\": \"%s\"}\n",
           o->model, (long long)o->batch, o->threads, (long long)o->steps,
           (double)(o->steps * o->batch) / dt, loss, 1e3 * cpu / (double)o->steps,
           (double)ru.ru_maxrss / 1024.0,
           (double)heap_calls / (double)o->steps, blas.core, tg_precision_name(o->precision));
    return 0;
fail:
    fprintf(stderr, "bench_train: %s\n", tg_ctx_error(r->ctx));
    return 1;
}

int main(int argc, char **argv) {
    bench_opts o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc;
    bench_run r = {.batch = o.batch};
    float *x = NULL;
    int64_t *y = NULL, *perm = NULL;
    if ((rc = load_split(o.data, &x, &y, &r.n, r.shape)) != 0)
        goto out;
    rc = 1;
    r.numel = r.shape[0] * r.shape[1] * r.shape[2];
    r.x = x, r.y = y;
    perm = malloc((size_t)r.n * sizeof(int64_t));
    r.xb = malloc((size_t)(o.batch * r.numel) * sizeof(float));
    r.yb = malloc((size_t)o.batch * sizeof(int64_t));
    char err[256];
    if (!perm || !r.xb || !r.yb || o.batch > r.n ||
        tg_permutation((uint64_t)o.seed, 0, r.n, perm, err, sizeof err) != TG_OK) {
        fprintf(stderr, "bench_train: bad batch size or out of memory\n");
        goto out;
    }
    r.perm = perm;
    rc = run(&o, &r);
out:
    if (r.ctx)
        tg_ctx_free(r.ctx);
    free(r.xb);
    free(r.yb);
    free(perm);
    free(x);
    free(y);
    return rc;
}
