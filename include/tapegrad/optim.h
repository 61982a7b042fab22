/*
 * tapegrad/optim.h: optimizers, gradient clipping and learning-rate schedules.
 *
 * Overview
 * --------
 * An optimizer updates a fixed list of parameter tensors from their ->grad,
 * in place, with PyTorch's update rules (torch.optim.SGD, Adam, AdamW), so
 * that the same hyper-parameters give the same trajectory. Its state (momentum
 * buffers, first and second moments) lives in persistent tensors of the
 * context, allocated once by tg_optim_new(); a step allocates nothing.
 *
 *     tg_optim_config oc = tg_optim_defaults(TG_OPTIM_ADAMW);
 *     oc.weight_decay = 1e-2;
 *     tg_optim *opt;
 *     tg_optim_new(ctx, &oc, ps.nparams, ps.params, &opt);
 *     for (int64_t step = 0; ...; step++) {
 *         ... forward, tg_backward ...
 *         tg_clip_grad_norm(ctx, ps.nparams, ps.params, 1.0, NULL);
 *         tg_optim_step(ctx, opt, tg_lr_at(&sched, step));
 *         tg_optim_zero_grad(ctx, opt);
 *     }
 *     tg_optim_free(opt);
 *
 * A parameter whose ->grad is NULL (it took no part in this step) or that no
 * longer requires grad (frozen) is left untouched, as PyTorch does.
 *
 * Ownership: tg_optim is heap-allocated by tg_optim_new() and freed by
 * tg_optim_free(); its state tensors belong to the context.
 */
#ifndef TAPEGRAD_OPTIM_H
#define TAPEGRAD_OPTIM_H

#include "tapegrad/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tg_optim_kind {
    TG_OPTIM_SGD = 0,
    TG_OPTIM_ADAM,
    TG_OPTIM_ADAMW,
} tg_optim_kind;

typedef struct tg_optim_config {
    tg_optim_kind kind;
    double lr;           /* used only when tg_optim_step is given lr < 0 */
    double momentum;     /* SGD */
    double dampening;    /* SGD */
    bool nesterov;       /* SGD; needs momentum > 0 and dampening 0 */
    double weight_decay; /* L2 added to the gradient (SGD, Adam); decoupled (AdamW) */
    double beta1, beta2; /* Adam, AdamW */
    double eps;          /* Adam, AdamW */
} tg_optim_config;

/* PyTorch's defaults for the kind (SGD lr 1e-3 here, since torch has none;
 * Adam lr 1e-3, betas 0.9/0.999, eps 1e-8; AdamW the same with weight decay 1e-2). */
tg_optim_config tg_optim_defaults(tg_optim_kind kind);

typedef struct tg_optim tg_optim;

/* Checks the configuration (names the bad field) and allocates the state. */
tg_status tg_optim_new(tg_ctx *ctx, const tg_optim_config *cfg, int n, tg_tensor *const *params,
                       tg_optim **out);
void tg_optim_free(tg_optim *opt);
/* One update with learning rate lr (lr < 0: the configured one). */
tg_status tg_optim_step(tg_ctx *ctx, tg_optim *opt, double lr);
/* Zero every parameter's ->grad in place (buffers are kept). */
tg_status tg_optim_zero_grad(tg_ctx *ctx, tg_optim *opt);
/* Number of steps taken (Adam's bias correction uses it; checkpoints save it). */
int64_t tg_optim_steps(const tg_optim *opt);
void tg_optim_set_steps(tg_optim *opt, int64_t steps);
/* The state tensors, for checkpoints: writes up to max tensors (each with a
 * unique ->name such as "optim.fc1.weight.exp_avg") and returns how many the
 * optimizer has. */
int tg_optim_state(const tg_optim *opt, tg_tensor **out, int max);

/* Scale all gradients so that their global L2 norm is at most max_norm, as
 * torch.nn.utils.clip_grad_norm_; *total_norm (may be NULL) gets the norm
 * before clipping. */
tg_status tg_clip_grad_norm(tg_ctx *ctx, int n, tg_tensor *const *params, double max_norm,
                            double *total_norm);

/* Learning-rate schedules, a pure function of the step. */
typedef enum tg_lr_kind {
    TG_LR_CONSTANT = 0,
    TG_LR_STEP,   /* lr * gamma ^ floor(step / step_size) */
    TG_LR_COSINE, /* min_lr + (lr - min_lr) * (1 + cos(pi * t / total)) / 2 */
} tg_lr_kind;

typedef struct tg_lr_schedule {
    tg_lr_kind kind;
    double lr;
    int64_t warmup_steps; /* linear warm-up from lr / warmup_steps to lr, then the schedule */
    int64_t step_size;
    double gamma;
    int64_t total_steps;
    double min_lr;
} tg_lr_schedule;

double tg_lr_at(const tg_lr_schedule *s, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
