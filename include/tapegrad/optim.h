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
 * longer requires grad (frozen) is left untouched, as PyTorch does: its
 * value, its state and its own step count stay as they were.
 *
 * Update rules (g the gradient, p the parameter, t the parameter's own step
 * count after the increment; PyTorch 1.13, foreach=False):
 *   SGD:   g += wd*p; if momentum: b = (t == 1) ? g : momentum*b + (1-dampening)*g,
 *          g = nesterov ? g + momentum*b : b; p -= lr*g
 *   Adam:  g += wd*p; m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g*g;
 *          p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)
 *   AdamW: p *= 1 - lr*wd, then Adam without the wd term.
 * f32 parameters are updated in f32 arithmetic (the hyper-parameters rounded
 * to f32 as PyTorch does), f64 ones in f64.
 *
 * State: per parameter, the tensors PyTorch's state_dict holds, as persistent
 * tensors named "optim.<param name>.<key>" ("optim.param<i>.<key>" for an
 * unnamed parameter): "step" (f64, shape (1,), the parameter's own step count,
 * which drives Adam's bias correction and SGD's first momentum step), then
 * "momentum_buffer" (SGD with momentum) or "exp_avg" and "exp_avg_sq" (Adam,
 * AdamW), of the parameter's dtype and shape. SGD without momentum has no
 * state. All are zero at tg_optim_new(). Restoring them (tg_optim_state() and
 * tg_copy_from_host) plus tg_optim_set_steps() resumes a run exactly.
 *
 * Parameters must be contiguous f32 or f64 tensors. On the CPU the updates
 * run as OpenMP loops over the flat buffers; on a backend that offers a fused
 * update (tg_backend.optim_update: the CUDA backend) they run there. Either
 * way each written storage's version is bumped, like any in-place operation.
 * tg_clip_grad_norm() needs gradients on the CPU.
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
    /* Parameter groups as nanoGPT's: no_decay[i] true exempts params[i] of
     * tg_optim_new from weight_decay (as a torch param group with
     * weight_decay 0; tg_params.no_decay gives the matrices-only rule).
     * NULL: every parameter decays. Read by tg_optim_new only (copied). */
    const bool *no_decay;
} tg_optim_config;

/* PyTorch's defaults for the kind (SGD lr 1e-3 here, since torch has none;
 * Adam lr 1e-3, betas 0.9/0.999, eps 1e-8; AdamW the same with weight decay 1e-2). */
tg_optim_config tg_optim_defaults(tg_optim_kind kind);

typedef struct tg_optim tg_optim;

/* Checks a configuration without allocating anything: TG_ERR_INVALID with a
 * message naming the field ("optim: beta2 = 1 must be in [0, 1)"). Only the
 * fields the kind uses are checked (SGD: lr, momentum, dampening, nesterov,
 * weight_decay; Adam/AdamW: lr, beta1, beta2, eps, weight_decay); the others
 * are ignored. lr and weight_decay must be >= 0, momentum >= 0, betas in
 * [0, 1), eps >= 0, all finite; nesterov needs momentum > 0 and dampening 0. */
tg_status tg_optim_check(tg_ctx *ctx, const tg_optim_config *cfg);

/* Checks the configuration (names the bad field) and the parameters (each
 * non-NULL, f32 or f64, contiguous, on the CPU or on a backend with a
 * fused update, listed once, with a unique
 * name), then allocates the zeroed state. n may be 0. On failure *out is
 * NULL; state tensors already made stay in the context's pool until
 * tg_ctx_free(). The optimizer keeps the params pointers (not the array). */
tg_status tg_optim_new(tg_ctx *ctx, const tg_optim_config *cfg, int n, tg_tensor *const *params,
                       tg_optim **out);
void tg_optim_free(tg_optim *opt);
/* One update with learning rate lr (lr < 0: the configured one; NaN or
 * infinity is an error). Every gradient is checked (same dtype and shape as
 * its parameter, contiguous) before anything is written, so a failed step
 * changes nothing. Allocates nothing. */
tg_status tg_optim_step(tg_ctx *ctx, tg_optim *opt, double lr);
/* Zero every parameter's ->grad in place (buffers are kept), frozen ones
 * included, as tg_zero_grad() does for one tensor. */
tg_status tg_optim_zero_grad(tg_ctx *ctx, tg_optim *opt);
/* Number of tg_optim_step() calls made (checkpoints save it). */
int64_t tg_optim_steps(const tg_optim *opt);
/* Sets that number and every parameter's own step count to steps (>= 0).
 * Per-parameter counts differ from it only for parameters that had no
 * gradient in some steps; to keep those exact, restore the "step" state
 * tensors after calling this. */
void tg_optim_set_steps(tg_optim *opt, int64_t steps);
/* The state tensors, for checkpoints: writes up to max tensors (each with a
 * unique ->name such as "optim.fc1.weight.exp_avg") and returns how many the
 * optimizer has. */
int tg_optim_state(const tg_optim *opt, tg_tensor **out, int max);

/* Scale all gradients so that their global L2 norm is at most max_norm, as
 * torch.nn.utils.clip_grad_norm_ with norm_type 2: total = sqrt(sum of g^2
 * over every non-NULL ->grad, frozen parameters included, as torch does),
 * and when c = max_norm / (total + 1e-6) is below 1 every gradient is
 * multiplied by c in place. *total_norm (may be NULL) gets the norm before
 * clipping. max_norm must be >= 0. The sum is formed in f64 in a fixed
 * order, so the result does not depend on the number of threads. NULL
 * entries of params are skipped. Allocates nothing. */
tg_status tg_clip_grad_norm(tg_ctx *ctx, int n, tg_tensor *const *params, double max_norm,
                            double *total_norm);

/*
 * Learning-rate schedules, a pure function of the step index (0 for the
 * first optimizer step; negative indices count as 0).
 *
 * Warm-up: for step < warmup_steps (W), lr * (step + 1) / W, i.e. from lr/W
 * at step 0 up to lr at step W-1 (torch's LinearLR with start_factor 1/W,
 * end_factor 1 and total_iters W-1). From step W on the schedule proper runs
 * with its own count t = step - W, so it starts at lr. W = 0: no warm-up.
 *
 *   CONSTANT: lr.
 *   STEP:     lr * gamma ^ floor(t / step_size)            (torch's StepLR)
 *   COSINE:   min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2 for t < T,
 *             min_lr from t = T on, where T = total_steps - W. total_steps
 *             counts the whole run, warm-up included: a run of total_steps
 *             optimizer steps (indices 0 .. total_steps-1) ends just above
 *             min_lr and would reach it at index total_steps, as torch's
 *             CosineAnnealingLR(T_max = T, eta_min = min_lr) does (which,
 *             unlike this, rises again after T). A warm-up as long as the
 *             run or longer (W >= total_steps) is allowed: the run then
 *             ends inside the warm-up, below lr, and steps from W on get
 *             min_lr.
 */
typedef enum tg_lr_kind {
    TG_LR_CONSTANT = 0,
    TG_LR_STEP,
    TG_LR_COSINE,
} tg_lr_kind;

typedef struct tg_lr_schedule {
    tg_lr_kind kind;
    double lr;            /* >= 0 */
    int64_t warmup_steps; /* >= 0 */
    int64_t step_size;    /* STEP: >= 1 */
    double gamma;         /* STEP: >= 0 */
    int64_t total_steps;  /* COSINE: >= 1 (warm-up included; may be <= it) */
    double min_lr;        /* COSINE: >= 0 */
} tg_lr_schedule;

/* Checks a schedule: TG_ERR_INVALID with a message naming the field. Fields
 * the kind does not use are not checked. */
tg_status tg_lr_check(tg_ctx *ctx, const tg_lr_schedule *s);
/* The learning rate at step; NaN for a schedule tg_lr_check() refuses, which
 * tg_optim_step() then refuses in turn. */
double tg_lr_at(const tg_lr_schedule *s, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
