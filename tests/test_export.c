/*
 * tests/test_export.c: `tapegrad export --format safetensors` writes every
 * parameter and buffer of a checkpoint, byte for byte, under PyTorch's
 * state_dict names, with a header that follows the safetensors layout; and
 * refuses bad input with the documented exit codes, never leaving a partial
 * output file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tapegrad/checkpoint.h"
#include "tapegrad/optim.h"
#include "tapegrad/trainer.h"

#include "test_util.h"

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

/* The [begin, end) data offsets of `name` in a safetensors header, checking
 * its dtype and shape text on the way. */
static void header_entry(const char *hdr, const char *name, const char *dtype, const char *shape,
                         size_t *begin, size_t *end) {
    char key[300];
    snprintf(key, sizeof key, "\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[", name,
             dtype, shape);
    const char *p = strstr(hdr, key);
    if (!p)
        fail_msg("header has no entry %s", key);
    unsigned long long b, e;
    assert_int_equal(sscanf(p + strlen(key), "%llu,%llu]", &b, &e), 2);
    *begin = (size_t)b;
    *end = (size_t)e;
}

static void shape_text(const tg_tensor *t, char *buf, size_t len) {
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < t->ndim; i++)
        off +=
            (size_t)snprintf(buf + off, len - off, "%s%lld", i ? "," : "", (long long)t->shape[i]);
}

/* Saves a cnn-bn checkpoint (parameters, buffers and AdamW state) and checks
 * that the export holds exactly the parameters and buffers. */
static void test_export_matches_checkpoint(void **state) {
    (void)state;
    tg_ctx *ctx;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    tg_model m;
    const int64_t in[3] = {1, 28, 28};
    assert_int_equal(tg_model_init(ctx, &m, TG_MODEL_CNN_BN, in, 10, 5), TG_OK);
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
    tg_optim *opt;
    assert_int_equal(tg_optim_new(ctx, &oc, m.params.nparams, m.params.params, &opt), TG_OK);
    tg_tensor *ts[3 * TG_PARAMS_MAX];
    int n = 0;
    for (int i = 0; i < m.params.nparams; i++)
        ts[n++] = m.params.params[i];
    for (int i = 0; i < m.params.nbuffers; i++)
        ts[n++] = m.params.buffers[i];
    int nmodel = n;
    n += tg_optim_state(opt, ts + n, (int)(sizeof ts / sizeof ts[0]) - n);
    assert_true(n > nmodel);
    tg_ckpt_meta meta = {.step = 7, .model = "cnn-bn", .config = "model = cnn-bn\n"};
    char ck[4096];
    assert_int_equal(tg_ckpt_save(ctx, tgt_dir, &meta, n, ts, 2, ck, sizeof ck), TG_OK);

    const char *out;
    out = tgt_path("model.safetensors");
    if (tgt_run("export --ckpt '%s' --format safetensors --out '%s'", ck, out) != 0)
        fail_msg("export failed:\n%s", tgt_out);
    size_t len;
    unsigned char *f = slurp(out, &len);
    assert_non_null(f);
    assert_true(len > 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | f[i];
    assert_true(hlen % 8 == 0 && 8 + hlen < len);
    char *hdr = malloc(hlen + 1);
    memcpy(hdr, f + 8, hlen);
    hdr[hlen] = 0;
    assert_true(hdr[0] == '{');
    assert_non_null(strstr(hdr, "\"__metadata__\":{\"format\":\"pt\""));
    assert_null(strstr(hdr, "optim."));
    size_t total = 0;
    for (int i = 0; i < nmodel; i++) {
        const tg_tensor *t = ts[i];
        char sh[128];
        shape_text(t, sh, sizeof sh);
        size_t b, e;
        header_entry(hdr, t->name, t->dtype == TG_F32 ? "F32" : "I64", sh, &b, &e);
        size_t nb = (size_t)tg_numel(t) * tg_dtype_size(t->dtype);
        assert_int_equal(e - b, nb);
        void *want = malloc(nb ? nb : 1);
        assert_int_equal(tg_to_host(ctx, t, want, nb), TG_OK);
        assert_true(8 + hlen + e <= len);
        assert_memory_equal(f + 8 + hlen + b, want, nb);
        free(want);
        total += nb;
    }
    /* Exactly the model's tensors: no gaps, nothing more. */
    assert_int_equal(8 + hlen + total, len);
    assert_non_null(strstr(hdr, "\"bn1.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[]"));
    free(hdr);
    free(f);

    /* --include-optimizer adds the optimizer state. */
    assert_int_equal(tgt_run("export --ckpt '%s' --out '%s' --include-optimizer", ck, out), 0);
    f = slurp(out, &len);
    assert_non_null(f);
    assert_non_null(strstr((char *)f + 8, "\"optim.fc1.weight.exp_avg\""));
    free(f);
    tg_optim_free(opt);
    tg_ctx_free(ctx);
}

static void test_bad_input(void **state) {
    (void)state;
    const char *out, *junk;
    out = tgt_path("bad.safetensors");
    junk = tgt_path("junk.h5");
    FILE *j = fopen(junk, "w");
    assert_non_null(j);
    fputs("this is not an HDF5 file\n", j);
    fclose(j);
    assert_int_equal(tgt_run("export --out '%s'", out), 2);
    assert_int_equal(tgt_run("export --ckpt '%s'", junk), 2);
    assert_int_equal(tgt_run("export --ckpt '%s' --out '%s' --format onnx", junk, out), 2);
    assert_int_equal(tgt_run("export --ckpt '%s/none.h5' --out '%s'", tgt_dir, out), 3);
    assert_int_equal(tgt_run("export --ckpt '%s' --out '%s'", junk, out), 3);
    assert_int_not_equal(access(out, F_OK), 0);
    assert_int_equal(tgt_run("export --help"), 0);
}

static int setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_export");
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_matches_checkpoint),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests_name("export", tests, setup, teardown);
}
