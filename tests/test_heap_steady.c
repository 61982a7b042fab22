/*
 * tests/test_heap_steady.c: a steady-state training step makes no heap call.
 *
 * The counter (heap_count.h) wraps malloc and its relatives and counts every
 * call made from any thread (OpenMP and OpenBLAS workers included) while
 * counting is on. Each case builds a built-in model, takes warm-up
 * steps on random data (the arenas grow to their high-water mark, the
 * optimizer creates its state), then counts the calls over further steps:
 * forward, cross-entropy, loss to host, backward, clipping, optimizer step,
 * zero grad, as the trainer runs them. The expected count is zero, at one
 * thread and at two, for every model and optimizer.
 *
 * The same holds for the trainer's whole loop (tg_trainer_run: the loader
 * thread's batches, the step, the schedule, the hooks) between two of its
 * steps, on a small synthetic dataset converted from IDX files.
 *
 * bf16 autocast steps (the mlp, the cnn and a small gpt, one and two
 * threads) run their convolutions on oneDNN, whose execute call allocates
 * its argument map on the heap each time (kernels/cpu/cpu_dnnl.c), and their
 * matmuls on our own kernel where the CPU has AVX512_BF16
 * (cpu_gemm_bf16.c; on oneDNN elsewhere): the calls with a frame in oneDNN's
 * library are set apart, the rest must be zero as for f32, and oneDNN's own
 * stay under a bound per step far below what creating its primitives again
 * would cost (the cache must hold). The models without convolutions (the
 * mlp, the gpt) must make none at all where our kernel runs. A build
 * without oneDNN skips these cases and says so.
 *
 * The spin watch is off here (see main()): its switches, rare, are the
 * heap calls a step may make.
 *
 * The counter itself is checked first: a plain malloc while counting must
 * count. Under AddressSanitizer, which owns malloc, the test is skipped (77).
 */
#define _GNU_SOURCE /* dladdr, for the calls set apart */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "cpu/cpu.h"
#include "tapegrad/datasets.h"
#include "tapegrad/modelfile.h"
#include "tapegrad/nn.h"
#include "tapegrad/optim.h"
#include "tapegrad/rng.h"
#include "tapegrad/runtime.h"
#include "tapegrad/trainer.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
int main(void) {
    printf("test_heap_steady: skipped: AddressSanitizer replaces malloc\n");
    return 77;
}
#else

/* ---- the counter ---- */

#define TG_HEAP_COUNT_APART
#include "heap_count.h"

/* ---- the steps ---- */

#define WARMUP 3
#define COUNTED 3

typedef struct step_case {
    tg_model_kind model;
    tg_optim_kind optim;
    int64_t batch;
    int threads;
    double clip; /* clip_grad_norm's max norm; 0: none */
    bool bf16;   /* autocast precision bf16 */
} step_case;

static void check_ok(tg_ctx *ctx, tg_status s) {
    if (s != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
}

/* One training step on the batch (x, y), as the trainer's. */
static void train_step(tg_ctx *ctx, tg_model *m, tg_optim *opt, const step_case *c,
                       const int64_t xs[4], float *x, int64_t *y) {
    tg_step_reset(ctx);
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 4, xs, x);
    tg_tensor *yt = tg_from_data(ctx, TG_I64, 1, &c->batch, y);
    tg_tensor *logits = xt && yt ? tg_model_forward(ctx, m, xt, true) : NULL;
    tg_tensor *l = logits ? tg_cross_entropy(ctx, logits, yt, 0.1) : NULL;
    if (!l)
        fail_msg("%s", tg_ctx_error(ctx));
    double loss;
    check_ok(ctx, tg_item(ctx, l, &loss));
    assert_true(loss > 0 && loss < 10);
    check_ok(ctx, tg_backward(ctx, l, NULL, 0));
    if (c->clip > 0) {
        double norm;
        check_ok(ctx, tg_clip_grad_norm(ctx, m->params.nparams, m->params.params, c->clip, &norm));
    }
    check_ok(ctx, tg_optim_step(ctx, opt, -1.0));
    check_ok(ctx, tg_optim_zero_grad(ctx, opt));
}

/* A context of c's threads, at bf16 when c asks; NULL (and a message) when
 * this build has no bf16 (no oneDNN). */
static tg_ctx *case_ctx(const step_case *c) {
    tg_ctx_config cc = {.threads = c->threads};
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    if (c->bf16 && tg_ctx_set_precision(ctx, TG_PRECISION_BF16) != TG_OK) {
        assert_non_null(strstr(tg_ctx_error(ctx), "oneDNN"));
        print_message("bf16 cases skipped: %s\n", tg_ctx_error(ctx));
        tg_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

/* The heap calls of COUNTED steady steps (oneDNN's apart in *apart when
 * bf16), or -1 when this build has no bf16 (no oneDNN). */
static long heap_calls_per_case(const step_case *c, long *apart) {
    tg_ctx *ctx = case_ctx(c);
    if (!ctx)
        return -1;
    const int64_t shape[3] = {1, 28, 28}, xs[4] = {c->batch, 1, 28, 28};
    tg_model m;
    check_ok(ctx, tg_model_init(ctx, &m, c->model, shape, 10, 7));
    tg_optim_config oc = tg_optim_defaults(c->optim);
    oc.lr = 1e-3;
    if (c->optim == TG_OPTIM_SGD)
        oc.momentum = 0.9, oc.weight_decay = 1e-4;
    tg_optim *opt;
    check_ok(ctx, tg_optim_new(ctx, &oc, m.params.nparams, m.params.params, &opt));
    const int64_t n = c->batch * 28 * 28;
    float *x = malloc((size_t)n * sizeof *x);
    int64_t *y = malloc((size_t)c->batch * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    tg_rng rng = tg_rng_make(11, 0);
    tg_rng_normal(&rng, x, n, 0.0f, 1.0f);
    for (int64_t i = 0; i < c->batch; i++)
        y[i] = i % 10;
    for (int k = 0; k < WARMUP; k++)
        train_step(ctx, &m, opt, c, xs, x, y);
    tg_heap_count_apart(c->bf16 ? "libdnnl" : NULL);
    tg_heap_count_start(0);
    for (int k = 0; k < COUNTED; k++)
        train_step(ctx, &m, opt, c, xs, x, y);
    long calls = tg_heap_count_stop();
    *apart = atomic_load(&tg_heap_apart_calls);
    tg_heap_count_apart(NULL);
    free(x);
    free(y);
    tg_ctx_free(ctx);
    return calls;
}

static void test_counter_counts(void **state) {
    (void)state;
    tg_heap_count_start(0);
    void *volatile p = malloc(64);
    void *volatile q = calloc(4, 16);
    long calls = tg_heap_count_stop();
    free(p);
    free(q);
    assert_int_equal(calls, 2);
}

static void run_cases(const step_case *cases, size_t n) {
    for (size_t i = 0; i < n; i++) {
        long apart = 0, calls = heap_calls_per_case(&cases[i], &apart);
        assert_int_equal(apart, 0);
        if (calls != 0)
            fail_msg("%s, %s, batch %lld, %d thread(s)%s: %ld heap calls in %d steady-state "
                     "steps, expected 0",
                     tg_model_name(cases[i].model),
                     cases[i].optim == TG_OPTIM_SGD ? "sgd" : "adamw", (long long)cases[i].batch,
                     cases[i].threads, cases[i].clip > 0 ? ", clipped" : "", calls, COUNTED);
    }
}

static void test_mlp(void **state) {
    (void)state;
    const step_case cases[] = {
        {TG_MODEL_MLP, TG_OPTIM_ADAMW, 256, 1, 0, false},
        {TG_MODEL_MLP, TG_OPTIM_ADAMW, 256, 2, 0, false},
        {TG_MODEL_MLP, TG_OPTIM_SGD, 64, 2, 1.0, false},
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_cnn(void **state) {
    (void)state;
    const step_case cases[] = {
        {TG_MODEL_CNN, TG_OPTIM_ADAMW, 32, 1, 0, false},
        {TG_MODEL_CNN, TG_OPTIM_ADAMW, 32, 2, 0, false},
        {TG_MODEL_CNN_BN, TG_OPTIM_SGD, 32, 2, 1.0, false},
        {TG_MODEL_CNN_BN, TG_OPTIM_ADAMW, 16, 1, 0, false},
    };
    run_cases(cases, sizeof cases / sizeof cases[0]);
}

/*
 * bf16: oneDNN's calls per step stay under a bound. A steady step makes a
 * few per product (the argument map of each execute: a node per argument and
 * its bucket array, and some kernels' parallel-loop closures): 65 for the cnn
 * and 48 for the mlp, at one thread and two. Making a primitive again costs
 * about 200 (its descriptor, its jit code, its memory objects), so a cache
 * that stopped holding would exceed the bound at once.
 */
#define DNNL_CALLS_PER_STEP 100

static void test_bf16(void **state) {
    (void)state;
    const step_case cases[] = {
        {TG_MODEL_MLP, TG_OPTIM_ADAMW, 64, 1, 0, true},
        {TG_MODEL_MLP, TG_OPTIM_ADAMW, 64, 2, 1.0, true},
        {TG_MODEL_CNN, TG_OPTIM_ADAMW, 32, 1, 0, true},
        {TG_MODEL_CNN, TG_OPTIM_SGD, 32, 2, 0, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const step_case *c = &cases[i];
        long apart = 0, calls = heap_calls_per_case(c, &apart);
        if (calls < 0)
            return;
        print_message("bf16 %s, %d thread(s): %ld heap calls of oneDNN's in %d steps\n",
                      tg_model_name(c->model), c->threads, apart, COUNTED);
        if (calls != 0)
            fail_msg("bf16 %s, %d thread(s): %ld heap calls outside oneDNN in %d steady-state "
                     "steps, expected 0",
                     tg_model_name(c->model), c->threads, calls, COUNTED);
        if (apart > (long)DNNL_CALLS_PER_STEP * COUNTED)
            fail_msg("bf16 %s, %d thread(s): %ld heap calls inside oneDNN in %d steady-state "
                     "steps, expected at most %d a step (are its primitives made again?)",
                     tg_model_name(c->model), c->threads, apart, COUNTED, DNNL_CALLS_PER_STEP);
        /* No convolution: every product is ours where the CPU has AVX512_BF16. */
        if (c->model == TG_MODEL_MLP && tg__cpu_avx512_bf16() && apart != 0)
            fail_msg("bf16 mlp, %d thread(s): %ld heap calls inside oneDNN in %d steady-state "
                     "steps, expected none (its matmuls run on our kernel)",
                     c->threads, apart, COUNTED);
    }
}

/* ---- a small gpt in bf16 ---- */

enum {
    GPT_B = 4,
    GPT_T = 32
};

/* One gpt step on random tokens, as bench_gpt's. */
static void gpt_step(tg_ctx *ctx, tg_model *m, tg_optim *opt, float *x, int64_t *y) {
    tg_step_reset(ctx);
    const int64_t xs[2] = {GPT_B, GPT_T}, ny = GPT_B * GPT_T;
    tg_tensor *xt = tg_from_data(ctx, TG_F32, 2, xs, x);
    tg_tensor *yt = tg_from_data(ctx, TG_I64, 1, &ny, y);
    tg_tensor *logits = xt && yt ? tg_model_forward(ctx, m, xt, true) : NULL;
    if (logits) {
        const int64_t sh[2] = {logits->shape[0] * logits->shape[1], logits->shape[2]};
        logits = tg_reshape(ctx, logits, 2, sh);
    }
    tg_tensor *l = logits ? tg_cross_entropy(ctx, logits, yt, 0.0) : NULL;
    if (!l)
        fail_msg("%s", tg_ctx_error(ctx));
    double loss;
    check_ok(ctx, tg_item(ctx, l, &loss));
    check_ok(ctx, tg_backward(ctx, l, NULL, 0));
    check_ok(ctx, tg_clip_grad_norm(ctx, m->params.nparams, m->params.params, 1.0, NULL));
    check_ok(ctx, tg_optim_step(ctx, opt, -1.0));
    check_ok(ctx, tg_optim_zero_grad(ctx, opt));
}

/* A 2-layer gpt (4 heads, 64 wide) at bf16: zero heap calls outside oneDNN,
 * and none inside it where its matmuls run on our kernel (it has no
 * convolution). */
static void test_gpt_bf16(void **state) {
    (void)state;
    for (int threads = 1; threads <= 2; threads++) {
        const step_case c = {.threads = threads, .bf16 = true};
        tg_ctx *ctx = case_ctx(&c);
        if (!ctx)
            return;
        const size_t need = tg_gpt_model_text(NULL, 0, 2, 4, 64, 0, 0.0);
        char *text = malloc(need);
        assert_non_null(text);
        tg_gpt_model_text(text, need, 2, 4, 64, 0, 0.0);
        tg_model m;
        const int64_t shape[1] = {GPT_T};
        check_ok(ctx, tg_model_init_sample(ctx, &m, "gpt", text, 1, shape, 256, 5));
        tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
        oc.no_decay = m.params.no_decay;
        tg_optim *opt;
        check_ok(ctx, tg_optim_new(ctx, &oc, m.params.nparams, m.params.params, &opt));
        float x[GPT_B * GPT_T];
        int64_t y[GPT_B * GPT_T];
        for (int i = 0; i < GPT_B * GPT_T; i++)
            x[i] = (float)((i * 37 + 11) % 256), y[i] = (i * 53 + 7) % 256;
        for (int k = 0; k < WARMUP; k++)
            gpt_step(ctx, &m, opt, x, y);
        tg_heap_count_apart("libdnnl");
        tg_heap_count_start(0);
        for (int k = 0; k < COUNTED; k++)
            gpt_step(ctx, &m, opt, x, y);
        const long calls = tg_heap_count_stop();
        const long apart = atomic_load(&tg_heap_apart_calls);
        tg_heap_count_apart(NULL);
        free(text);
        tg_ctx_free(ctx);
        print_message("bf16 gpt, %d thread(s): %ld heap calls of oneDNN's in %d steps\n", threads,
                      apart, COUNTED);
        if (calls != 0)
            fail_msg("bf16 gpt, %d thread(s): %ld heap calls outside oneDNN in %d steady-state "
                     "steps, expected 0",
                     threads, calls, COUNTED);
        if (tg__cpu_avx512_bf16() && apart != 0)
            fail_msg("bf16 gpt, %d thread(s): %ld heap calls inside oneDNN in %d steady-state "
                     "steps, expected none (its matmuls run on our kernel)",
                     threads, apart, COUNTED);
        if (apart > (long)DNNL_CALLS_PER_STEP * 4 * COUNTED)
            fail_msg("bf16 gpt, %d thread(s): %ld heap calls inside oneDNN in %d steps (are its "
                     "primitives made again?)",
                     threads, apart, COUNTED);
    }
}

/* ---- the trainer's loop ---- */

#define TRAIN_N 2048
#define TEST_N 256

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* An IDX pair (n 28x28 images whose pixels depend on the label, labels) of
 * gzip files, converted into `split` of data.h5. */
static void write_split(const char *split, uint32_t n) {
    const size_t per = 28 * 28, ilen = 16 + n * per, llen = 8 + n;
    unsigned char *img = malloc(ilen), *lab = malloc(llen);
    assert_non_null(img);
    assert_non_null(lab);
    put_be32(img, 0x803), put_be32(img + 4, n), put_be32(img + 8, 28), put_be32(img + 12, 28);
    put_be32(lab, 0x801), put_be32(lab + 4, n);
    for (uint32_t i = 0; i < n; i++) {
        lab[8 + i] = (unsigned char)(i * 7 % 10);
        for (size_t k = 0; k < per; k++)
            img[16 + i * per + k] = (unsigned char)((k * 13 + i * 5 + lab[8 + i] * 40) % 256);
    }
    char ip[600], lp[600], err[512];
    snprintf(ip, sizeof ip, "%s", tgt_path("images.gz"));
    snprintf(lp, sizeof lp, "%s", tgt_path("labels.gz"));
    const struct {
        const char *path;
        unsigned char *buf;
        size_t len;
    } files[] = {{ip, img, ilen}, {lp, lab, llen}};
    for (int f = 0; f < 2; f++) {
        gzFile gz = gzopen(files[f].path, "wb1");
        assert_non_null(gz);
        assert_int_equal(gzwrite(gz, files[f].buf, (unsigned)files[f].len), (int)files[f].len);
        assert_int_equal(gzclose(gz), Z_OK);
    }
    if (tg_idx_convert(ip, lp, tgt_path("data.h5"), split, err, sizeof err) != TG_OK)
        fail_msg("%s", err);
    free(img);
    free(lab);
}

static int group_setup(void **state) {
    (void)state;
    if (tgt_dir_setup("tg_heap") != 0)
        return -1;
    write_split("train", TRAIN_N);
    write_split("test", TEST_N);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

/* Counting runs from the end of step FIRST to the end of step LAST. */
typedef struct window {
    int64_t first, last;
    long calls;
    bool seen;
} window;

static tg_status count_window(tg_trainer *tr, bool *stop, void *user) {
    (void)stop;
    window *w = user;
    const int64_t step = tg_trainer_state_get(tr).step;
    if (step == w->first)
        tg_heap_count_start(0);
    if (step == w->last) {
        w->calls = tg_heap_count_stop();
        w->seen = true;
    }
    return TG_OK;
}

static void trainer_case(tg_model_kind model, int64_t batch, int threads) {
    tg_ctx_config cc = {.threads = threads};
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    tg_trainer_config c = tg_trainer_defaults(model);
    const char *path = tgt_path("data.h5");
    window w = {.first = 4, .last = TRAIN_N / batch - 2};
    c.data_path = path;
    c.epochs = 1;
    c.batch_size = batch;
    c.log_every = 0;
    c.hooks.after_step = count_window;
    c.hooks.user = &w;
    tg_trainer *tr;
    check_ok(ctx, tg_trainer_new(ctx, &c, &tr));
    check_ok(ctx, tg_trainer_run(tr));
    tg_trainer_free(tr);
    tg_ctx_free(ctx);
    assert_true(w.seen);
    if (w.calls != 0)
        fail_msg("trainer, %s, batch %lld, %d thread(s): %ld heap calls from step %lld to step "
                 "%lld, expected 0",
                 tg_model_name(model), (long long)batch, threads, w.calls, (long long)w.first,
                 (long long)w.last);
}

static void test_trainer(void **state) {
    (void)state;
    trainer_case(TG_MODEL_MLP, 64, 1);
    trainer_case(TG_MODEL_MLP, 64, 2);
    trainer_case(TG_MODEL_CNN, 32, 2);
    trainer_case(TG_MODEL_CNN_BN, 32, 1);
}

int main(void) {
    tg_heap_count_watch_off();
    /* The bf16 matmuls' default choice (cpu_gemm_bf16.c), whatever the caller set. */
    unsetenv("TG_CPU_BF16_GEMM");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_counts),
        cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_cnn),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_gpt_bf16),
        cmocka_unit_test(test_trainer),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
#endif
