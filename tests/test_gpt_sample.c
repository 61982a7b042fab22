/*
 * tests/test_gpt_sample.c: drawing tokens (tg_sample_logits) and `tapegrad
 * sample`.
 *
 * - Temperature 0 and top-k 1 take the largest logit; top-k never draws
 *   outside the k largest (ties with the k-th kept); the frequencies of many
 *   draws follow softmax(logits / temperature); a seed gives one sequence.
 * - The checkpoint exported as safetensors gives the same logits in
 *   nanoGPT's model in PyTorch (tests/gpt_torch.py; skipped without torch).
 * - `sample` on a gpt checkpoint written here: with temperature 0 its text
 *   is the greedy continuation computed without a cache by full forwards
 *   (windows padded to the block size, read at their last token), across
 *   several restarts of the full window; the same seed gives the same text
 *   and another seed another text; bad options and files are refused with
 *   their reason.
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

#include "tapegrad/checkpoint.h"
#include "tapegrad/modelfile.h"
#include "tapegrad/optim.h"
#include "tapegrad/trainer.h"
#include "test_util.h"

static void ok(tg_ctx *ctx, tg_status s) {
    if (s != TG_OK)
        fail_msg("%s", tg_ctx_error(ctx));
}

/* ---- tg_sample_logits ---- */

static void test_greedy_and_bad_args(void **state) {
    (void)state;
    const float l[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
    tg_rng r = tg_rng_make(1, 0);
    assert_int_equal(tg_sample_logits(l, 5, 0.0, 0, &r), 1); /* the first largest */
    assert_int_equal(tg_sample_logits(l, 5, 1.0, 1, &r), 1);
    assert_int_equal(r.counter, 0); /* no draw */
    assert_int_equal(tg_sample_logits(l, 0, 1.0, 0, &r), -1);
    assert_int_equal(tg_sample_logits(l, 5, -1.0, 0, &r), -1);
    assert_int_equal(tg_sample_logits(l, 5, INFINITY, 0, &r), -1);
    assert_int_equal(tg_sample_logits(l, 5, 1.0, -2, &r), -1);
    assert_int_equal(tg_sample_logits(NULL, 5, 1.0, 0, &r), -1);
}

static void test_top_k(void **state) {
    (void)state;
    /* The 2nd largest is tied: top-k 2 keeps 1, 3 and 4 (4 ties 3). */
    const float l[6] = {0.0f, 3.0f, 0.5f, 1.0f, 1.0f, -2.0f};
    int seen[6] = {0};
    tg_rng r = tg_rng_make(7, 0);
    for (int i = 0; i < 3000; i++) {
        int64_t t = tg_sample_logits(l, 6, 2.0, 2, &r);
        assert_true(t >= 0 && t < 6);
        seen[t]++;
    }
    assert_int_equal(seen[0] + seen[2] + seen[5], 0);
    assert_true(seen[1] > 0 && seen[3] > 0 && seen[4] > 0);
    /* k at least the vocabulary: nothing dropped. */
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 3000; i++)
        seen[tg_sample_logits(l, 6, 2.0, 6, &r)]++;
    assert_true(seen[0] > 0 && seen[2] > 0 && seen[5] > 0);
}

static void frequencies(double temperature) {
    const float l[4] = {1.0f, 0.0f, -0.5f, 2.0f};
    double p[4], z = 0;
    for (int i = 0; i < 4; i++)
        z += p[i] = exp(l[i] / temperature);
    enum {
        N = 20000
    };
    int seen[4] = {0};
    tg_rng r = tg_rng_make(3, 0);
    for (int i = 0; i < N; i++)
        seen[tg_sample_logits(l, 4, temperature, 0, &r)]++;
    for (int i = 0; i < 4; i++) {
        double f = (double)seen[i] / N, want = p[i] / z;
        /* 5 standard deviations of a binomial frequency. */
        if (fabs(f - want) > 5 * sqrt(want * (1 - want) / N))
            fail_msg("temperature %g: token %d drawn %.4f of the time, softmax gives %.4f",
                     temperature, i, f, want);
    }
}

static void test_frequencies(void **state) {
    (void)state;
    frequencies(1.0);
    frequencies(0.5);
    frequencies(3.0);
}

static void test_seed_sequence(void **state) {
    (void)state;
    const float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    tg_rng a = tg_rng_make(5, 0), b = tg_rng_make(5, 0), c = tg_rng_make(6, 0);
    int same = 0;
    for (int i = 0; i < 50; i++) {
        int64_t x = tg_sample_logits(l, 8, 1.0, 0, &a);
        assert_int_equal(x, tg_sample_logits(l, 8, 1.0, 0, &b));
        same += x == tg_sample_logits(l, 8, 1.0, 0, &c);
    }
    assert_true(same < 25);
}

/* ---- the command ---- */

enum {
    T = 16,
    V = 128
};

static tg_ctx *new_ctx(void) {
    tg_ctx *ctx;
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = 1};
    assert_int_equal(tg_ctx_new(&cc, &ctx), TG_OK);
    return ctx;
}

static char *small_gpt(void) {
    size_t n = tg_gpt_model_text(NULL, 0, 2, 2, 32, 0, 0.0);
    char *t = malloc(n);
    assert_non_null(t);
    tg_gpt_model_text(t, n, 2, 2, 32, 0, 0.0);
    return t;
}

/* Trains a small gpt on "hello world " for `steps` AdamW steps and saves
 * it to dir (its path in path). */
static void make_ckpt(tg_ctx *ctx, tg_model *m, const char *dir, int steps, char *path) {
    char *text = small_gpt();
    int64_t t = T;
    ok(ctx, tg_model_init_sample(ctx, m, "gpt", text, 1, &t, V, 1));
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
    tg_optim *opt;
    ok(ctx, tg_optim_new(ctx, &oc, m->params.nparams, m->params.params, &opt));
    const char *s = "hello world ";
    enum {
        B = 8
    };
    for (int step = 0; step < steps; step++) {
        int64_t xs[B * T], ys[B * T], sh[2] = {B, T}, n = B * T, ls[2] = {B * T, V};
        for (int b = 0; b < B; b++)
            for (int k = 0; k < T; k++) {
                xs[b * T + k] = s[(b + k) % 12];
                ys[b * T + k] = s[(b + k + 1) % 12];
            }
        tg_tensor *y = tg_model_forward(ctx, m, tg_from_data(ctx, TG_I64, 2, sh, xs), true);
        tg_tensor *l = tg_cross_entropy(ctx, tg_reshape(ctx, y, 2, ls),
                                        tg_from_data(ctx, TG_I64, 1, &n, ys), 0.0);
        if (!l)
            fail_msg("%s", tg_ctx_error(ctx));
        ok(ctx, tg_backward(ctx, l, NULL, 0));
        ok(ctx, tg_optim_step(ctx, opt, 3e-3));
        ok(ctx, tg_optim_zero_grad(ctx, opt));
        tg_step_reset(ctx);
    }
    tg_ckpt_meta meta = {.step = steps,
                         .model_text = text,
                         .model_input = {1, 1, T},
                         .model_input_ndim = 1,
                         .model_classes = V,
                         .config = "model = gpt\n"};
    snprintf(meta.model, sizeof meta.model, "gpt");
    ok(ctx, tg_ckpt_save(ctx, dir, &meta, m->params.nparams, m->params.params, 0, path, 512));
    tg_optim_free(opt);
    free(text);
}

/* The greedy continuation by full forwards: each window (as the command
 * keeps it: the last half once the block is full) padded to T and read at
 * its last token. */
static void greedy(tg_ctx *ctx, tg_model *m, const char *prompt, int n, char *out) {
    int64_t hist[256];
    int len = (int)strlen(prompt), start = len > T ? len - T : 0;
    for (int i = 0; i < len; i++)
        hist[i] = (unsigned char)prompt[i];
    tg_set_grad_enabled(ctx, false);
    for (int k = 0; k < n; k++) {
        int64_t x[T] = {0}, sh[2] = {1, T};
        int w = len - start;
        memcpy(x, hist + start, (size_t)w * sizeof *x);
        tg_tensor *y = tg_model_forward(ctx, m, tg_from_data(ctx, TG_I64, 2, sh, x), false);
        float lg[T * V];
        ok(ctx, tg_to_host(ctx, y, lg, sizeof lg));
        tg_step_reset(ctx);
        tg_rng r = tg_rng_make(0, 0);
        hist[len++] = tg_sample_logits(lg + (w - 1) * V, V, 0.0, 0, &r);
        if (len - start > T)
            start = len - T / 2;
    }
    for (int i = 0; i < len; i++)
        out[i] = (char)hist[i];
    out[len] = '\0';
}

/* The checkpoint exported as safetensors and loaded into nanoGPT's model
 * in PyTorch (tests/gpt_torch.py) gives tapegrad's logits. Skipped where
 * Debian's python3-torch is absent. */
static void export_to_torch(tg_ctx *ctx, tg_model *m, const char *ck) {
    if (system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
        printf("PyTorch is not importable by /usr/bin/python3: export check skipped\n");
        return;
    }
    enum {
        NB = 2
    };
    int64_t x[NB * T], sh[2] = {NB, T};
    for (int i = 0; i < NB * T; i++)
        x[i] = (i * 37 + 11) % V;
    tgt_write_npy(tgt_path("x.npy"), "<i8", "(2, 16)", x, sizeof x);
    assert_int_equal(tgt_run("export --ckpt '%s' --format safetensors --out '%s'", ck,
                             tgt_path("m.safetensors")),
                     0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/../gpt_torch.py' '%s' '%s' --n-layer 2 --n-head 2 > '%s'",
             TG_FIXTURE_DIR, tgt_path("m.safetensors"), tgt_path("x.npy"), tgt_path("y.json"));
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(tgt_path("y.json"), "r");
    assert_non_null(f);
    static char js[1 << 20];
    size_t n = fread(js, 1, sizeof js - 1, f);
    js[n] = '\0';
    fclose(f);
    tg_set_grad_enabled(ctx, false);
    tg_tensor *y = tg_model_forward(ctx, m, tg_from_data(ctx, TG_I64, 2, sh, x), false);
    static float lg[NB * T * V];
    ok(ctx, tg_to_host(ctx, y, lg, sizeof lg));
    tg_step_reset(ctx);
    const char *p = strchr(js, '[');
    assert_non_null(p);
    double worst = 0;
    for (int i = 0; i < NB * T * V; i++) {
        char *end;
        double v = strtod(p + 1, &end);
        assert_true(end != p + 1);
        worst = fmax(worst, fabs(v - lg[i]));
        p = end;
    }
    if (worst > 1e-4)
        fail_msg("PyTorch's logits differ from tapegrad's by %g", worst);
}

static void test_sample_cli(void **state) {
    (void)state;
    assert_int_equal(tgt_dir_setup("tg_gpt_sample"), 0);
    tg_ctx *ctx = new_ctx();
    tg_model m;
    char ck[512], ck0[512];
    make_ckpt(ctx, &m, tgt_path("trained"), 60, ck);
    /* Greedy: the cached command equals full forwards, over 40 tokens of a
     * block of 16 (the window restarts 4 times). */
    char want[256];
    greedy(ctx, &m, "hel", 40, want);
    assert_int_equal(tgt_run("sample --ckpt '%s' --prompt hel --tokens 40 --temperature 0 "
                             "--threads 1",
                             ck),
                     0);
    if (strncmp(tgt_out, want, strlen(want)) != 0 || tgt_out[strlen(want)] != '\n')
        fail_msg("sample printed:\n%s\nfull forwards give:\n%s", tgt_out, want);
    tgt_expect_out("sampled 40 tokens in");
    /* A trained model continues its text. */
    assert_non_null(strstr(want + 3, "world hello"));
    export_to_torch(ctx, &m, ck);
    /* Seeds, on an untrained model (near-uniform draws). */
    tg_model m0;
    make_ckpt(ctx, &m0, tgt_path("fresh"), 0, ck0);
    static char a[sizeof tgt_out], b[sizeof tgt_out];
    assert_int_equal(tgt_run("sample --ckpt '%s' --tokens 30 --seed 3 --top-k 50", ck0), 0);
    snprintf(a, sizeof a, "%s", tgt_out);
    assert_int_equal(tgt_run("sample --ckpt '%s' --tokens 30 --seed 3 --top-k 50", ck0), 0);
    snprintf(b, sizeof b, "%s", tgt_out);
    *strstr(a, "sampled") = *strstr(b, "sampled") = '\0';
    assert_string_equal(a, b);
    assert_int_equal(tgt_run("sample --ckpt '%s' --tokens 30 --seed 4 --top-k 50", ck0), 0);
    *strstr(tgt_out, "sampled") = '\0';
    assert_string_not_equal(a, tgt_out);
    /* Refusals. */
    assert_int_equal(tgt_run("sample --tokens 3"), 2);
    tgt_expect_out("--ckpt FILE is required");
    assert_int_equal(tgt_run("sample --ckpt '%s' --prompt \"$(printf 'caf\\303\\251')\"", ck), 2);
    tgt_expect_out("--prompt: byte 0xc3 at offset 3 is not a token of this model (its "
                   "vocabulary has 128)");
    assert_int_equal(tgt_run("sample --ckpt '%s' --temperature -1", ck), 2);
    assert_int_equal(tgt_run("sample --ckpt '%s' --top-kk 3", ck), 2);
    tgt_expect_out("top-k");
    assert_int_equal(tgt_run("sample --ckpt '%s'", tgt_path("none.h5")), 3);
    /* A checkpoint of an image classifier is no language model. */
    tg_model img;
    int64_t in[3] = {1, 4, 4};
    ok(ctx, tg_model_init(ctx, &img, TG_MODEL_MLP, in, 3, 0));
    tg_ckpt_meta meta = {.model_text = tg_model_builtin_text("mlp"),
                         .model_input = {1, 4, 4},
                         .model_input_ndim = 3,
                         .model_classes = 3};
    snprintf(meta.model, sizeof meta.model, "mlp");
    char ckm[512];
    ok(ctx, tg_ckpt_save(ctx, tgt_path("mlp"), &meta, img.params.nparams, img.params.params, 0, ckm,
                         sizeof ckm));
    assert_int_equal(tgt_run("sample --ckpt '%s'", ckm), 3);
    tgt_expect_out("model 'mlp' is not a language model");
    /* --print-config reads back. */
    assert_int_equal(tgt_run("sample --ckpt x.h5 --top-k 5 --print-config"), 0);
    tgt_expect_out("top_k = 5");
    tgt_expect_out("# prompt = (unset: a newline)");
    tg_ctx_free(ctx);
    assert_int_equal(tgt_dir_teardown(), 0);
}

/* --model gpt's options, its training defaults and `inspect gpt`. */
static void test_gpt_options(void **state) {
    (void)state;
    assert_int_equal(tgt_dir_setup("tg_gpt_opts"), 0);
    assert_int_equal(tgt_run("inspect gpt"), 0);
    tgt_expect_out("gpt: model file, input (N, 128), 256 classes");
    tgt_expect_out("h.3.attn                     attention      (N, 128, 128)                "
                   "      66,048");
    tgt_expect_out("lm_head                      linear         (N, 128, 256)                "
                   "           0");
    tgt_expect_out("Total params: 842,496");
    assert_int_equal(tgt_run("train --model gpt --n-layer 2 --n-embd 64 --print-config"), 0);
    const char *want[] = {"model = gpt",        "n_layer = 2",        "n_embd = 64",
                          "decay = matrices",   "weight_decay = 0.1", "warmup = 100",
                          "clip_grad_norm = 1", "lr = 0.001"};
    for (int i = 0; i < 8; i++)
        tgt_expect_out(want[i]);
    /* The printed configuration reads back. */
    tgt_write_file(tgt_path("run.ini"), tgt_out);
    assert_int_equal(tgt_run("train --config '%s' --print-config", tgt_path("run.ini")), 0);
    tgt_expect_out("n_embd = 64");
    /* The mlp keeps decay on every parameter and refuses the gpt's sizes. */
    assert_int_equal(tgt_run("train --model mlp --print-config"), 0);
    tgt_expect_out("decay = all");
    assert_int_equal(tgt_run("train --model mlp --n-layer 3"), 2);
    tgt_expect_out("--n-layer applies to --model gpt only");
    assert_int_equal(tgt_run("train --model gpt --n-head 3"), 2);
    tgt_expect_out("--n-head 3 does not divide --n-embd 128");
    assert_int_equal(tgt_run("train --model gpt --zero 1"), 2);
    tgt_expect_out("--decay matrices does not work with --zero 1 yet");
    assert_int_equal(tgt_run("train --model gpt --decay some"), 2);
    tgt_expect_out("--decay");
    assert_int_equal(tgt_dir_teardown(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_bad_args), cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_frequencies),         cmocka_unit_test(test_seed_sequence),
        cmocka_unit_test(test_sample_cli),          cmocka_unit_test(test_gpt_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
