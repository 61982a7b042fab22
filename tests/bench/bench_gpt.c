/*
 * tests/bench/bench_gpt.c: the tapegrad side of the gpt training comparison
 * (see compare_gpt.py; torch_gpt.py is the PyTorch side).
 *
 *   bench_gpt --data TEXT.h5 [--batch-size N] [--block T] [--threads N]
 *             [--steps N] [--warmup N] [--seed N]
 *             [--n-layer L] [--n-head H] [--n-embd E] [--precision f32|bf16]
 *
 * Trains `tapegrad train --model gpt` (its text from tg_gpt_model_text(),
 * its defaults: AdamW lr 1e-3, betas (0.9, 0.95), weight decay 0.1 on the
 * matrices only, gradients clipped at norm 1, batch 32, T 128) on the token
 * split "train" of TEXT.h5 (`tapegrad convert text`), exactly as the
 * trainer's step does (forward, cross-entropy over every position, loss to
 * host, backward, clipping, optimizer step, zero grad) at a constant
 * learning rate, and prints one JSON line in torch_gpt.py's format plus
 * "mallocs_per_step" and "blas_core":
 *
 *   {"framework": "tapegrad", "model": "gpt", "batch": 32, "block": 128,
 *    "threads": 2, "steps": 10, "tokens_per_s": 12345.6, "loss": 3.2,
 *    "cpu_ms_per_step": 600.0, "peak_rss_mb": 80.0, "mallocs_per_step": 0.0,
 *    "arena_peak_mb": 60.0, "blas_core": "Haswell", "precision": "f32"}
 *
 * cpu_ms_per_step is the process's user and system CPU time over the
 * timed steps (every thread) per step: on a loaded machine it moves far
 * less than the wall clock. arena_peak_mb is the step arena's high-water
 * mark (tg_arena_stats): every byte one step allocates (activations, what
 * backward saves, gradients).
 *
 * The windows are the same as torch_gpt.py's: sample i of step k is the
 * window starting at token (k*B + i) * 2654435761 mod (ntok - T), read from
 * the split held in memory (tg_dataset_read). Only the `--steps` steps
 * after `--warmup` untimed ones are timed, the window reads included.
 * Heap calls are counted as in bench_train.c (tests/heap_count.h;
 * TG_BENCH_HEAP_TRACE=N prints the stacks of the first N). Not a ctest test.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tapegrad/datasets.h"
#include "tapegrad/modelfile.h"
#include "tapegrad/nn.h"
#include "tapegrad/optim.h"
#include "tapegrad/runtime.h"
#include "tapegrad/trainer.h"

#include "../heap_count.h"
#include "bench_util.h"

/* The sizes of `tapegrad train --model gpt` (launch/train.h). */
enum {
    GPT_N_LAYER = 4,
    GPT_N_HEAD = 4,
    GPT_N_EMBD = 128
};

typedef struct gpt_opts {
    const char *data;
    int64_t batch, block, steps, warmup, seed, n_embd;
    int threads, n_layer, n_head;
    tg_precision precision; /* --precision bf16: tg_ctx_set_precision */
} gpt_opts;

/* User and system CPU seconds of the process, every thread. */
static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_gpt --data TEXT.h5 [--batch-size N] [--block T] [--threads N] "
                    "[--steps N] [--warmup N] [--seed N] [--n-layer L] [--n-head H] "
                    "[--n-embd E] [--precision f32|bf16]\n");
    return 2;
}

static int parse(int argc, char **argv, gpt_opts *o) {
    *o = (gpt_opts){.batch = 32,
                    .block = 128,
                    .steps = 10,
                    .warmup = 2,
                    .threads = 2,
                    .n_layer = GPT_N_LAYER,
                    .n_head = GPT_N_HEAD,
                    .n_embd = GPT_N_EMBD};
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        const char *k = argv[i], *v = argv[++i];
        char *end;
        long long n = strtoll(v, &end, 10);
        bool num = *v && !*end;
        if (!strcmp(k, "--data"))
            o->data = v;
        else if (num && n >= 1 && !strcmp(k, "--batch-size"))
            o->batch = n;
        else if (num && n >= 1 && n <= 65536 && !strcmp(k, "--block"))
            o->block = n;
        else if (num && n >= 1 && n <= 1024 && !strcmp(k, "--threads"))
            o->threads = (int)n;
        else if (num && n >= 1 && !strcmp(k, "--steps"))
            o->steps = n;
        else if (num && n >= 0 && !strcmp(k, "--warmup"))
            o->warmup = n;
        else if (num && n >= 0 && !strcmp(k, "--seed"))
            o->seed = n;
        else if (num && n >= 1 && n <= 256 && !strcmp(k, "--n-layer"))
            o->n_layer = (int)n;
        else if (num && n >= 1 && n <= 1024 && !strcmp(k, "--n-head"))
            o->n_head = (int)n;
        else if (!strcmp(k, "--precision") && (!strcmp(v, "f32") || !strcmp(v, "bf16")))
            o->precision = !strcmp(v, "bf16") ? TG_PRECISION_BF16 : TG_PRECISION_F32;
        else if (num && n >= 1 && n <= 65536 && !strcmp(k, "--n-embd"))
            o->n_embd = n;
        else
            return usage();
    }
    return o->data ? 0 : usage();
}

typedef struct gpt_run {
    tg_ctx *ctx;
    tg_dataset *ds;
    tg_model model;
    tg_optim *opt;
    int64_t batch, block, nwin;
    int64_t *idx, *yb;
    float *xb;
} gpt_run;

/* torch_gpt.py draws the same windows. */
static void windows(gpt_run *r, int64_t k) {
    for (int64_t i = 0; i < r->batch; i++)
        r->idx[i] = (int64_t)(((uint64_t)(k * r->batch + i) * 2654435761u) % (uint64_t)r->nwin);
}

/* One step on the windows of step k, as the trainer runs it. */
static tg_status gpt_step(gpt_run *r, int64_t k, double *loss) {
    tg_ctx *ctx = r->ctx;
    char err[256];
    windows(r, k);
    if (tg_dataset_read(r->ds, r->idx, r->batch, r->xb, r->yb, err, sizeof err) != TG_OK) {
        fprintf(stderr, "bench_gpt: %s\n", err);
        return TG_ERR_IO;
    }
    tg_step_reset(ctx);
    int64_t xs[2] = {r->batch, r->block}, ny = r->batch * r->block;
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 2, xs, r->xb);
    tg_tensor *yt = tg_from_data(ctx, TG_I64, 1, &ny, r->yb);
    tg_tensor *logits = xt && yt ? tg_model_forward(ctx, &r->model, xt, true) : NULL;
    if (logits) {
        int64_t sh[2] = {logits->shape[0] * logits->shape[1], logits->shape[2]};
        logits = tg_reshape(ctx, logits, 2, sh);
    }
    tg_tensor *l = logits ? tg_cross_entropy(ctx, logits, yt, 0.0) : NULL;
    tg_status s;
    if (!l)
        return tg_ctx_status(ctx);
    tg_params *p = &r->model.params;
    if ((s = tg_item(ctx, l, loss)) != TG_OK || (s = tg_backward(ctx, l, NULL, 0)) != TG_OK ||
        (s = tg_clip_grad_norm(ctx, p->nparams, p->params, 1.0, NULL)) != TG_OK ||
        (s = tg_optim_step(ctx, r->opt, -1.0)) != TG_OK)
        return s;
    return tg_optim_zero_grad(ctx, r->opt);
}

static int setup(const gpt_opts *o, gpt_run *r, char **text) {
    char err[512];
    tg_dataset_options dopt = {.block_size = o->block};
    if (tg_dataset_open_opts(o->data, "train", &dopt, &r->ds, err, sizeof err) != TG_OK) {
        fprintf(stderr, "bench_gpt: %s\n", err);
        return 1;
    }
    if (!tg_dataset_is_tokens(r->ds)) {
        fprintf(stderr, "bench_gpt: %s: split train is not a token split (convert text)\n",
                o->data);
        return 1;
    }
    r->batch = o->batch, r->block = o->block, r->nwin = tg_dataset_len(r->ds);
    r->idx = malloc((size_t)o->batch * sizeof(int64_t));
    r->yb = malloc((size_t)(o->batch * o->block) * sizeof(int64_t));
    r->xb = malloc((size_t)(o->batch * o->block) * sizeof(float));
    if (o->n_embd % o->n_head) {
        fprintf(stderr, "bench_gpt: --n-head %d does not divide --n-embd %lld\n", o->n_head,
                (long long)o->n_embd);
        return 2;
    }
    size_t need = tg_gpt_model_text(NULL, 0, o->n_layer, o->n_head, o->n_embd, 0, 0.0);
    *text = need ? malloc(need) : NULL;
    if (!r->idx || !r->yb || !r->xb || !*text) {
        fprintf(stderr, "bench_gpt: bad gpt sizes or out of memory\n");
        return 1;
    }
    tg_gpt_model_text(*text, need, o->n_layer, o->n_head, o->n_embd, 0, 0.0);
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = o->threads};
    if (tg_ctx_new(&cc, &r->ctx) != TG_OK) {
        fprintf(stderr, "bench_gpt: %s\n", tg_last_init_error());
        return 1;
    }
    if (tg_ctx_set_precision(r->ctx, o->precision) != TG_OK) {
        fprintf(stderr, "bench_gpt: %s\n", tg_ctx_error(r->ctx));
        return 1;
    }
    /* The defaults of --model gpt (launch/train_opts.c, tg_train_gpt_defaults). */
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
    oc.lr = 1e-3;
    oc.beta2 = 0.95;
    oc.weight_decay = 0.1;
    int64_t shape[1] = {o->block};
    if (tg_model_init_sample(r->ctx, &r->model, "gpt", *text, 1, shape,
                             tg_dataset_num_classes(r->ds), (uint64_t)o->seed) != TG_OK)
        goto fail;
    oc.no_decay = r->model.params.no_decay;
    if (tg_optim_new(r->ctx, &oc, r->model.params.nparams, r->model.params.params, &r->opt) !=
        TG_OK)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "bench_gpt: %s\n", tg_ctx_error(r->ctx));
    return 1;
}

static int run(const gpt_opts *o, gpt_run *r) {
    double loss = 0;
    for (int64_t k = 0; k < o->warmup; k++)
        if (gpt_step(r, k, &loss) != TG_OK)
            goto fail;
    const char *trace = getenv("TG_BENCH_HEAP_TRACE");
    tg_heap_count_start(trace ? strtol(trace, NULL, 10) : 0);
    double t0 = now_s(), c0 = cpu_s();
    for (int64_t k = o->warmup; k < o->warmup + o->steps; k++)
        if (gpt_step(r, k, &loss) != TG_OK)
            goto fail;
    double dt = now_s() - t0, cpu = cpu_s() - c0;
    const long heap_calls = tg_heap_count_stop();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    tg_blas_info blas;
    tg_blas_info_get(&blas);
    size_t used, reserved, high;
    tg_arena_stats(r->ctx, &used, &reserved, &high);
    int64_t np = 0;
    for (int i = 0; i < r->model.params.nparams; i++)
        np += tg_numel(r->model.params.params[i]);
    printf("{\"framework\": \"tapegrad\", \"model\": \"gpt\", \"batch\": %lld, \"block\": %lld, "
           "\"threads\": %d, \"steps\": %lld, \"params\": %lld, \"tokens_per_s\": %.1f, "
           "\"loss\": %.6f, \"cpu_ms_per_step\": %.1f, \"peak_rss_mb\": %.1f, "
           "\"mallocs_per_step\": %.2f, "
           "\"arena_peak_mb\": %.1f, \"blas_core\": \"%s\", \"precision\": \"%s\"}\n",
           (long long)o->batch, (long long)o->block, o->threads, (long long)o->steps, (long long)np,
           (double)(o->steps * o->batch * o->block) / dt, loss, 1e3 * cpu / (double)o->steps,
           (double)ru.ru_maxrss / 1024.0, (double)heap_calls / (double)o->steps,
           (double)high / 1048576.0, blas.core, tg_precision_name(o->precision));
    return 0;
fail:
    fprintf(stderr, "bench_gpt: %s\n", tg_ctx_error(r->ctx));
    return 1;
}

int main(int argc, char **argv) {
    gpt_opts o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc;
    gpt_run r = {0};
    char *text = NULL;
    rc = setup(&o, &r, &text);
    if (rc == 0)
        rc = run(&o, &r);
    if (r.ctx)
        tg_ctx_free(r.ctx);
    tg_dataset_close(r.ds);
    free(text);
    free(r.idx);
    free(r.yb);
    free(r.xb);
    return rc;
}
