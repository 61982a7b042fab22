/*
 * examples/custom_model.c: a model of your own, written against tapegrad's
 * public API only, trained data-parallel and checkpointed.
 *
 * The network is a two-layer perceptron with a residual tanh block,
 *
 *     h = relu(x W1^T + b1);  h = h + tanh(h W2^T + b2);  logits = h W3^T + b3
 *
 * trained to classify points of three interleaved spirals (made here, so the
 * example needs no data files). Each rank computes the same global batch from
 * the same seed and keeps its own contiguous slice of it, the DDP hook
 * averages the gradients across ranks during backward, AdamW updates the
 * weights, and rank 0 writes a checkpoint at the end.
 *
 *     ./custom_model [--steps N] [--ckpt-dir DIR]          # alone
 *     mpirun -np 2 ./custom_model --steps 300              # two ranks
 *
 * It prints the loss every 50 steps and the final training accuracy, and
 * exits non-zero when anything fails or when it did not learn (accuracy under
 * 0.9), so it doubles as a test of an installed tapegrad.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/comm.h>
#include <tapegrad/nn.h>
#include <tapegrad/optim.h>
#include <tapegrad/rng.h>
#include <tapegrad/runtime.h>

#define CLASSES 3
#define HIDDEN 64
#define BATCH 96 /* global; divisible by 1, 2, 3 and 4 ranks */

typedef struct model {
    tg_params ps;
    tg_linear fc1, fc2, fc3;
} model;

static tg_status model_init(tg_ctx *ctx, model *m, uint64_t seed)
{
    tg_rng rng = tg_rng_make(seed, 0);
    memset(m, 0, sizeof *m);
    tg_status s = tg_linear_init(ctx, &m->fc1, &m->ps, "fc1", 2, HIDDEN, true, &rng);
    if (!s)
        s = tg_linear_init(ctx, &m->fc2, &m->ps, "fc2", HIDDEN, HIDDEN, true, &rng);
    if (!s)
        s = tg_linear_init(ctx, &m->fc3, &m->ps, "fc3", HIDDEN, CLASSES, true, &rng);
    return s;
}

/* Ops return NULL on failure and pass a NULL operand on, so the whole
 * expression is checked once, by the caller. */
static tg_tensor *model_forward(tg_ctx *ctx, model *m, tg_tensor *x)
{
    tg_tensor *h = tg_relu(ctx, tg_linear_forward(ctx, &m->fc1, x));
    h = tg_add(ctx, h, tg_tanh(ctx, tg_linear_forward(ctx, &m->fc2, h)));
    return tg_linear_forward(ctx, &m->fc3, h);
}

/* Sample i of the global batch of `step`: a point on spiral i % 3 with noise,
 * a pure function of (step, i) so that every rank agrees on the batch. */
static void spiral_point(int64_t step, int64_t i, float xy[2], int64_t *label)
{
    tg_rng r = tg_rng_make(1234, (uint64_t)(step * BATCH + i));
    float u[4];
    tg_rng_uniform(&r, u, 4, 0.0f, 1.0f);
    int64_t c = i % CLASSES;
    double t = 0.25 + 3.0 * u[0];
    double a = t * 1.6 + c * 2.0 * 3.14159265358979323846 / CLASSES;
    xy[0] = (float)(t * cos(a) + 0.08 * (u[1] - 0.5));
    xy[1] = (float)(t * sin(a) + 0.08 * (u[2] - 0.5));
    *label = c;
}

static int fail(tg_world *w, tg_ctx *ctx, const char *what)
{
    fprintf(stderr, "rank %d: %s: %s\n", w ? tg_world_rank(w) : 0, what,
            ctx ? tg_ctx_error(ctx) : (w ? tg_world_error(w) : "failed"));
    return 1;
}

int main(int argc, char **argv)
{
    int64_t steps = 400;
    const char *ckpt_dir = "custom_model_ckpt";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--steps"))
            steps = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--ckpt-dir"))
            ckpt_dir = argv[i + 1];
    }

    char err[512];
    tg_world *w;
    if (tg_world_init(&argc, &argv, NULL, &w, err, sizeof err)) {
        fprintf(stderr, "custom_model: %s\n", err);
        return 1;
    }
    int rank = tg_world_rank(w), world = tg_world_size(w);
    if (BATCH % world) {
        fprintf(stderr, "custom_model: the batch of %d does not split over %d ranks\n", BATCH,
                world);
        tg_world_free(w);
        return 2;
    }
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = 1};
    tg_ctx *ctx;
    if (tg_ctx_new(&cc, &ctx)) {
        fprintf(stderr, "custom_model: %s\n", tg_last_init_error());
        return 1;
    }
    model m;
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
    oc.lr = 1e-2;
    tg_optim *opt = NULL;
    tg_ddp *ddp = NULL;
    int rc = 0;
    if (model_init(ctx, &m, 7) ||
        tg_optim_new(ctx, &oc, m.ps.nparams, m.ps.params, &opt) ||
        /* Broadcasts rank 0's weights and checks every rank has this model. */
        tg_ddp_new(ctx, w, m.ps.nparams, m.ps.params, m.ps.nbuffers, m.ps.buffers, NULL, &ddp)) {
        rc = fail(w, ctx, "set-up");
        goto out;
    }

    const int64_t local = BATCH / world, first = rank * local;
    float xs[BATCH * 2];
    int64_t ys[BATCH];
    double acc = 0.0;
    for (int64_t step = 0; step < steps; step++) {
        for (int64_t i = 0; i < local; i++)
            spiral_point(step, first + i, xs + 2 * i, ys + i);
        tg_tensor *x = tg_from_data(ctx, TG_F32, 2, (int64_t[]){local, 2}, xs);
        tg_tensor *y = tg_from_data(ctx, TG_I64, 1, (int64_t[]){local}, ys);
        tg_tensor *logits = model_forward(ctx, &m, x);
        tg_tensor *loss = tg_cross_entropy(ctx, logits, y, 0.0);
        double lv = 0.0;
        /* backward fires the DDP hook as each gradient is final; wait
         * completes the all-reduce and averages over the ranks. */
        if (!loss || tg_backward(ctx, loss, NULL, 0) || tg_ddp_wait(ddp) ||
            tg_optim_step(ctx, opt, 1e-2 * (1.0 - (double)step / steps)) ||
            tg_item(ctx, loss, &lv)) {
            rc = fail(w, ctx, "training step");
            goto out;
        }
        /* The mean loss and accuracy over the whole global batch. */
        double stats[3] = {lv * (double)local, 0.0, (double)local};
        tg_tensor *pred = tg_argmax(ctx, logits, 1, false);
        for (int64_t i = 0; pred && i < local; i++) {
            double p;
            if (tg_get(ctx, pred, i, &p) == TG_OK && (int64_t)p == ys[i])
                stats[1] += 1.0;
        }
        if (tg_metrics_allreduce(w, 3, stats)) {
            rc = fail(w, NULL, "metrics");
            goto out;
        }
        acc = stats[1] / stats[2];
        if (rank == 0 && (step % 50 == 0 || step == steps - 1))
            printf("step %4lld  loss %.4f  accuracy %.3f\n", (long long)step,
                   stats[0] / stats[2], acc);
        tg_optim_zero_grad(ctx, opt);
        tg_step_reset(ctx); /* everything made during the step goes at once */
    }

    if (rank == 0) {
        tg_tensor *ts[2 * TG_PARAMS_MAX];
        int n = 0;
        for (int i = 0; i < m.ps.nparams; i++)
            ts[n++] = m.ps.params[i];
        n += tg_optim_state(opt, ts + n, (int)(sizeof ts / sizeof ts[0]) - n);
        tg_ckpt_meta meta = {.step = steps, .optim_steps = tg_optim_steps(opt),
                             .world_size = world, .model = "custom-spirals"};
        char path[4096];
        if (tg_ckpt_save(ctx, ckpt_dir, &meta, n, ts, 1, path, sizeof path)) {
            rc = fail(w, ctx, "checkpoint");
            goto out;
        }
        printf("final accuracy %.3f; checkpoint %s\n", acc, path);
    }
    if (acc < 0.9) {
        fprintf(stderr, "rank %d: the model did not learn (accuracy %.3f)\n", rank, acc);
        rc = 3;
    }
out:
    tg_ddp_free(ddp);
    tg_optim_free(opt);
    tg_ctx_free(ctx);
    tg_world_free(w);
    return rc;
}
