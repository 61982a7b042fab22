/*
 * examples/pytorch_style.c: a small classifier written the way a PyTorch
 * user writes one, with tapegrad's names for the usual torch calls (see
 * docs/PYTORCH.md):
 *
 *     x = torch.randn(N, 2, generator=g)              tg_randn(ctx, &rng, ...)
 *     y = (x[:, 0] * x[:, 1] > 0).long()              tg_to_dtype(tg_gt(...), TG_I64)
 *     loss = ce(model(x + noise), y)
 *            + 0.1 * mse(model(x + noise), model(x).detach())      tg_detach
 *     acc = (logits.argmax(1) == y).sum().item() / N  tg_eq, tg_sum on i64
 *     print(probs[:4])                                tg_print
 *
 * The labels say whether a point lies in the first or third quadrant; the
 * consistency term asks the model to answer the same for a noisy copy of a
 * point as for the point itself (its clean answer is a detached target, so
 * no gradient flows through it). Everything runs on the context's device:
 *
 *     ./pytorch_style [--steps N] [--cuda]
 *
 * It exits non-zero when anything fails or when the held-out accuracy is
 * under 0.9, so it doubles as a test of an installed tapegrad.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/nn.h>
#include <tapegrad/optim.h>
#include <tapegrad/rng.h>
#include <tapegrad/runtime.h>

#define N 256
#define HIDDEN 32

typedef struct model {
    tg_params ps;
    tg_linear fc1, fc2;
} model;

static tg_tensor *forward(tg_ctx *ctx, model *m, tg_tensor *x)
{
    return tg_linear_forward(ctx, &m->fc2, tg_relu(ctx, tg_linear_forward(ctx, &m->fc1, x)));
}

/* A batch from the stream: points ~ N(0, 1) and their quadrant labels,
 * made on the device with a comparison and a cast. */
static tg_tensor *batch(tg_ctx *ctx, tg_rng *rng, tg_tensor **y)
{
    tg_tensor *x = tg_randn(ctx, rng, TG_F32, 2, (int64_t[]){N, 2});
    tg_tensor *prod = tg_mul(ctx, tg_slice(ctx, x, 1, 0, 1, 1), tg_slice(ctx, x, 1, 1, 2, 1));
    tg_tensor *zero = tg_scalar(ctx, TG_F32, 0.0);
    *y = tg_to_dtype(ctx, tg_squeeze(ctx, tg_gt(ctx, prod, zero), 1, (int[]){1}), TG_I64);
    return x;
}

/* The fraction of correct predictions, counted on the device in i64. */
static double accuracy(tg_ctx *ctx, tg_tensor *logits, tg_tensor *y)
{
    double correct = -1.0;
    tg_tensor *n = tg_sum(ctx, tg_eq(ctx, tg_argmax(ctx, logits, 1, false), y), 0, NULL, false);
    if (!n || tg_item(ctx, n, &correct) != TG_OK)
        return -1.0;
    return correct / (double)N;
}

int main(int argc, char **argv)
{
    int64_t steps = 300;
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = 1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--cuda"))
            cc.device = TG_DEVICE_CUDA;
    }
    tg_ctx *ctx;
    if (tg_ctx_new(&cc, &ctx) != TG_OK) {
        fprintf(stderr, "pytorch_style: %s\n", tg_last_init_error());
        return 1;
    }
    model m;
    memset(&m, 0, sizeof m);
    tg_rng init = tg_rng_make(7, 0), data = tg_rng_make(7, 1), test = tg_rng_make(8, 1);
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
    oc.lr = 1e-2;
    tg_optim *opt = NULL;
    int rc = 0;
    if (tg_linear_init(ctx, &m.fc1, &m.ps, "fc1", 2, HIDDEN, true, &init) ||
        tg_linear_init(ctx, &m.fc2, &m.ps, "fc2", HIDDEN, 2, true, &init) ||
        tg_optim_new(ctx, &oc, m.ps.nparams, m.ps.params, &opt)) {
        fprintf(stderr, "pytorch_style: set-up: %s\n", tg_ctx_error(ctx));
        tg_ctx_free(ctx);
        return 1;
    }

    for (int64_t step = 0; step < steps; step++) {
        tg_tensor *y;
        tg_tensor *x = batch(ctx, &data, &y);
        tg_tensor *noisy = tg_add(ctx, x, tg_mul_scalar(ctx, tg_randn(ctx, &data, TG_F32, 2,
                                                                      (int64_t[]){N, 2}), 0.05));
        tg_tensor *target = tg_detach(ctx, forward(ctx, &m, x));
        tg_tensor *logits = forward(ctx, &m, noisy);
        tg_tensor *loss = tg_add(ctx, tg_cross_entropy(ctx, logits, y, 0.0),
                                 tg_mul_scalar(ctx, tg_mse_loss(ctx, logits, target), 0.1));
        double lv;
        if (!loss || tg_backward(ctx, loss, NULL, 0) != TG_OK ||
            tg_optim_step(ctx, opt, oc.lr) != TG_OK || tg_item(ctx, loss, &lv) != TG_OK) {
            fprintf(stderr, "pytorch_style: step %lld: %s\n", (long long)step, tg_ctx_error(ctx));
            rc = 1;
            break;
        }
        if (step % 100 == 0)
            printf("step %4lld  loss %.4f  batch accuracy %.3f\n", (long long)step, lv,
                   accuracy(ctx, logits, y));
        tg_optim_zero_grad(ctx, opt);
        tg_step_reset(ctx);
    }

    if (rc == 0) {
        /* held out, without recording: torch.no_grad() */
        bool prev = tg_set_grad_enabled(ctx, false);
        tg_tensor *y;
        tg_tensor *x = batch(ctx, &test, &y);
        tg_tensor *logits = forward(ctx, &m, x);
        double acc = accuracy(ctx, logits, y);
        printf("first points, their probabilities and labels:\n");
        if (tg_print(ctx, tg_slice(ctx, x, 0, 0, 4, 1)) != TG_OK ||
            tg_print(ctx, tg_softmax(ctx, tg_slice(ctx, logits, 0, 0, 4, 1), 1)) != TG_OK ||
            tg_print(ctx, tg_slice(ctx, y, 0, 0, 4, 1)) != TG_OK) {
            fprintf(stderr, "pytorch_style: print: %s\n", tg_ctx_error(ctx));
            rc = 1;
        }
        tg_set_grad_enabled(ctx, prev);
        printf("held-out accuracy %.3f\n", acc);
        if (rc == 0 && acc < 0.9) {
            fprintf(stderr, "pytorch_style: the model did not learn (accuracy %.3f)\n", acc);
            rc = 3;
        }
    }
    tg_optim_free(opt);
    tg_ctx_free(ctx);
    return rc;
}
