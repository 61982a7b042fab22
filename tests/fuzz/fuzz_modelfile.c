/*
 * tests/fuzz/fuzz_modelfile.c: the bytes as a model file (docs/MODELS.md),
 * parsed, resolved and shape-checked by tg_net_build() for two sample
 * shapes (an image and a vector, the vector also as a window of tokens of
 * 5 classes), first without tensors (check_only, as `tapegrad inspect` does) and, when that builds with few parameters, for
 * real with a forward pass of a batch of 2, as training would. A build
 * either succeeds with a summary table or fails with a message; anything
 * else (a crash, a leak, a forward that fails after a clean build) is a bug.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/modelfile.h"
#include "tapegrad/runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const char *text, size_t len, int ndim, const int64_t *shape, int64_t classes) {
    tg_ctx *ctx;
    if (tg_ctx_new(NULL, &ctx) != TG_OK)
        return;
    tg_net_options o = {.path = "fuzz.ini", .in_ndim = ndim, .in_shape = shape,
                        .classes = classes, .check_only = true};
    tg_net *net = NULL;
    tg_status s = tg_net_build(ctx, text, len, &o, NULL, &net);
    if (s == TG_OK) {
        if (!net)
            abort();
        char buf[256];
        if (tg_net_summary(net, buf, sizeof buf) < 2 || !strstr(buf, "Layer"))
            abort();
        /* Small enough to build for real: parameters, then a forward. */
        int64_t total = 0;
        const char *p = NULL;
        size_t need = tg_net_summary(net, NULL, 0);
        char *table = malloc(need);
        if (table) {
            tg_net_summary(net, table, need);
            p = strstr(table, "Total params: ");
            if (p)
                for (p += 14; *p && *p != '\n'; p++)
                    if (*p >= '0' && *p <= '9')
                        total = total * 10 + (*p - '0');
            free(table);
        }
        if (total < 20000 && tg_net_layers(net) < 64) {
            tg_params ps = {0};
            tg_net *real;
            o.check_only = false;
            if (tg_net_build(ctx, text, len, &o, &ps, &real) != TG_OK) {
                /* Only the list's size may refuse what the check passed. */
                if (!strstr(tg_ctx_error(ctx), "at most"))
                    abort();
            } else {
                int64_t xs[8] = {2};
                memcpy(xs + 1, shape, (size_t)ndim * sizeof *xs);
                tg_tensor *x = tg_full(ctx, TG_F32, ndim + 1, xs, 0.5);
                tg_tensor *y = tg_net_forward(ctx, real, x, true);
                if (!y)
                    abort();
                /* A token model: the cached forward, a prefill of 3
                 * positions then one more. Token 0, the only one every
                 * vocabulary has (an [embedding] of num = 1 refuses 1). */
                if (tg_net_block_size(real) == shape[0] && shape[0] > 3) {
                    tg_step_reset(ctx);
                    int64_t ps3[2] = {2, 3}, ps1[2] = {2, 1};
                    if (tg_net_cache_new(ctx, real, 2) != TG_OK ||
                        !tg_net_forward_cached(ctx, real, tg_full(ctx, TG_I64, 2, ps3, 0), 0) ||
                        !tg_net_forward_cached(ctx, real, tg_full(ctx, TG_I64, 2, ps1, 0), 3))
                        abort();
                }
            }
        }
    } else if (net || !tg_ctx_error(ctx)[0]) {
        abort();
    }
    tg_ctx_free(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int64_t img[3] = {3, 8, 8}, vec[1] = {6};
    one((const char *)data, size, 3, img, 4);
    one((const char *)data, size, 1, vec, 0);
    one((const char *)data, size, 1, vec, 5); /* tokens: a window of 6, 5 classes */
    return 0;
}
