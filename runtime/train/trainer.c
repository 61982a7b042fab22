/*
 * runtime/train/trainer.c: the training loop (see trainer.h).
 *
 * One step: reset the step arena, take the next batch from the prefetching
 * loader, forward, loss, backward, the after_backward hook, optional clipping,
 * the optimizer step at the schedule's learning rate, zero the gradients.
 * Everything a step makes lives in the step arena, so the arena reaches its
 * high-water mark on the first step and the loop allocates nothing after it.
 */
#include "core/internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tapegrad/modelfile.h"
#include "tapegrad/trainer.h"

struct tg_trainer {
    tg_ctx *ctx;
    tg_trainer_config cfg;
    tg_model model;
    tg_optim *opt;
    tg_lr_schedule sched;
    tg_dataset *train_ds, *test_ds, *val_ds;
    tg_sampler *train_sp, *test_sp, *val_sp;
    tg_loader *train_ld, *test_ld, *val_ld;
    /* --val-fraction: the held-out indices and the ones trained on. */
    int64_t *val_idx, *train_idx;
    /* One sample as the dataset gives it (sample_ndim 1..3 sizes), padded
     * with leading 1s to three. */
    int64_t sample_shape[3];
    int sample_ndim;
    int64_t steps_per_epoch, total_steps, epochs;
    int64_t step;
    /* Copies for tg_trainer_progress_get from another thread (a progress
     * bar): relaxed atomic stores, one per step and per evaluation batch. */
    _Atomic int64_t a_step, a_eval_done, a_eval_total;
    int64_t *pred;  /* argmax of one evaluation batch, on the host */
    int64_t pred_cap;
    /* Regression (f32 targets of tdim values a sample; 0: labels): the
     * outputs of one evaluation batch, on the host. */
    int64_t tdim;
    float *out_host;
    /* Token data (tokens): a sample is a window of lps = T positions, each
     * with a label; lps is 1 otherwise. */
    bool tokens;
    int64_t lps;
    tg_eval_result last;
    double *confusion; /* during an evaluation that fills one, else NULL */
    bool stopped;      /* the last run ended through after_step's stop */
    double t_run;      /* when the current run() began */
    int64_t run_step0; /* and at which step */
    bool ran;
};

/* The most logits (floats) one evaluation batch of token data may make. */
#define EVAL_TOKEN_LOGITS ((int64_t)1 << 25)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

tg_trainer_config tg_trainer_defaults(tg_model_kind kind) {
    tg_trainer_config c;
    memset(&c, 0, sizeof(c));
    c.model = kind;
    c.train_split = "train";
    c.test_split = "test";
    c.epochs = 15;
    c.batch_size = 128;
    c.eval_batch_size = 250; /* bounds the CNNs' activation memory */
    c.seed = 42;
    c.optim = tg_optim_defaults(TG_OPTIM_ADAMW);
    c.optim.lr = 1e-3;
    c.optim.weight_decay = 1e-2;
    c.schedule.kind = TG_LR_COSINE;
    c.schedule.min_lr = 0.0;
    c.log_every = 50;
    c.augment_pad = 4;
    c.rank = 0;
    c.world = 1;
    switch (kind) {
    case TG_MODEL_CNN:
        c.epochs = 10;
        break;
    case TG_MODEL_CNN_BN:
        c.epochs = 10;
        c.optim.lr = 2e-3;
        break;
    default:
        break;
    }
    return c;
}

static tg_status check_config(tg_ctx *ctx, const tg_trainer_config *c) {
    if (!c->model_text && !tg_model_name(c->model))
        return tg__fail(ctx, TG_ERR_INVALID, "trainer: unknown model kind %d", (int)c->model);
    if (!c->data_path || !c->data_path[0])
        return tg__fail(ctx, TG_ERR_INVALID, "trainer: no data file given");
    if (c->epochs < 1)
        return tg__fail(ctx, TG_ERR_INVALID, "trainer: epochs must be >= 1, got %lld",
                        (long long)c->epochs);
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world)
        return tg__fail(ctx, TG_ERR_INVALID, "trainer: rank %d outside world of %d", c->rank,
                        c->world);
    if (c->accum_steps < 0 ||
        (c->accum_steps > 1 && c->batch_size % ((int64_t)c->world * c->accum_steps) != 0))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "trainer: gradient accumulation over %lld micro-batches needs a batch "
                        "size divisible by %lld (%d ranks x %lld), got %lld",
                        (long long)c->accum_steps, (long long)c->world * c->accum_steps, c->world,
                        (long long)c->accum_steps, (long long)c->batch_size);
    if (c->batch_size < 1 || c->batch_size % c->world != 0)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "trainer: batch size %lld must be >= 1 and divisible by the world size %d",
                        (long long)c->batch_size, c->world);
    if (c->eval_batch_size < 0 || c->max_steps < 0 || c->log_every < 0)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "trainer: eval batch size, max steps and log interval must be >= 0");
    if (!(c->optim.lr > 0) || !isfinite(c->optim.lr))
        return tg__fail(ctx, TG_ERR_INVALID, "trainer: learning rate must be > 0, got %g",
                        c->optim.lr);
    if (!(c->label_smoothing >= 0 && c->label_smoothing < 1))
        return tg__fail(ctx, TG_ERR_INVALID, "trainer: label smoothing must be in [0, 1), got %g",
                        c->label_smoothing);
    if (c->augment & ~(unsigned)(TG_AUGMENT_CROP | TG_AUGMENT_FLIP) || c->augment_pad < 0 ||
        c->augment_pad > TG_AUGMENT_MAX_PAD)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "trainer: augment flags 0x%x or crop padding %d (at most %d) invalid",
                        c->augment, c->augment_pad, TG_AUGMENT_MAX_PAD);
    if (!(c->val_fraction >= 0 && c->val_fraction < 1) || (c->val_fraction > 0 && c->val_split))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "trainer: val_fraction %g must be in [0, 1), and not given with a "
                        "val_split",
                        c->val_fraction);
    if (c->loss < TG_LOSS_AUTO || c->loss > TG_LOSS_MSE)
        return tg__fail(ctx, TG_ERR_INVALID, "trainer: unknown loss kind %d", (int)c->loss);
    if (!(c->clip_grad_norm >= 0))
        return tg__fail(ctx, TG_ERR_INVALID, "trainer: clip norm must be >= 0, got %g",
                        c->clip_grad_norm);
    return TG_OK;
}

/* Dataset errors arrive in a buffer; move them into the context. */
static tg_status ds_fail(tg_ctx *ctx, tg_status s, const char *err) {
    return tg__fail(ctx, s, "%s", err);
}

/* An evaluation sampler over n samples (of subset, when given). */
static tg_status eval_sampler(tg_trainer *tr, int64_t n, const int64_t *subset, tg_sampler **out,
                              char *err, size_t errlen) {
    const tg_trainer_config *c = &tr->cfg;
    int64_t eb = c->eval_batch_size ? c->eval_batch_size : 250;
    /* No batch larger than the split: the loader's buffers and the
     * predictions are sized by it (--eval-batch-size 1048576 on a split of
     * 256 samples once asked for 6.4 GB). */
    if (eb > n)
        eb = n > 0 ? n : 1;
    /* Token data: the logits of a batch are eb x T x V floats; keep them
     * within EVAL_TOKEN_LOGITS (a BPE's 50k-word vocabulary at T = 128
     * would need 6 GiB for 250 windows). */
    if (tr->tokens) {
        int64_t cap = EVAL_TOKEN_LOGITS / (tr->lps * tg_dataset_num_classes(tr->train_ds));
        if (eb > cap)
            eb = cap > 1 ? cap : 1;
    }
    eb = (eb + c->world - 1) / c->world * c->world; /* divisible by world */
    tg_sampler_config sc = tg_sampler_config_eval(n, eb, c->rank, c->world);
    sc.subset = subset;
    /* Token windows: every non-overlapping window of T+1 tokens once. */
    if (tr->tokens)
        sc.stride = tr->lps;
    return tg_sampler_new(&sc, out, err, errlen);
}

/* Both splits must fit the same model. */
static tg_status check_same(tg_trainer *tr, tg_dataset *a, tg_dataset *b, const char *bname) {
    const tg_trainer_config *c = &tr->cfg;
    int nd, nd2;
    const int64_t *sh = tg_dataset_sample_shape(a, &nd);
    const int64_t *sh2 = tg_dataset_sample_shape(b, &nd2);
    if (nd2 != nd || memcmp(sh, sh2, (size_t)nd * sizeof(*sh)) != 0 ||
        tg_dataset_is_tokens(a) != tg_dataset_is_tokens(b) ||
        tg_dataset_num_classes(a) != tg_dataset_num_classes(b) ||
        tg_dataset_target_dim(a) != tg_dataset_target_dim(b))
        return tg__fail(tr->ctx, TG_ERR_FORMAT,
                        "%s: splits %s and %s differ in sample shape, num_classes or targets",
                        c->data_path, c->train_split, bname);
    return TG_OK;
}

/* The validation set: a split of its own, or a share of the training
 * split held out (a second handle on it, for the second loader's thread).
 * *n becomes the samples left to train on, *nval the held-out count. */
static tg_status open_val(tg_trainer *tr, int64_t *n, int64_t *nval) {
    tg_ctx *ctx = tr->ctx;
    const tg_trainer_config *c = &tr->cfg;
    const char *split = c->val_split ? c->val_split : c->train_split;
    char err[512];
    tg_dataset_options dopt = {.stop = c->hooks.should_stop, .stop_user = c->hooks.user};
    if (!c->val_split && !(c->val_fraction > 0))
        return TG_OK;
    if (tr->tokens && !c->val_split)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "%s: a validation fraction holds out samples, but split %s holds tokens: "
                        "give a split of its own (convert text --val-fraction writes 'val')",
                        c->data_path, c->train_split);
    dopt.block_size = c->block_size;
    tg_status s = tg_dataset_open_opts(c->data_path, split, &dopt, &tr->val_ds, err, sizeof err);
    if (s)
        return ds_fail(ctx, s, err);
    if (c->val_split)
        return check_same(tr, tr->train_ds, tr->val_ds, c->val_split);
    *nval = tg_holdout_count(*n, c->val_fraction);
    if (*nval < 1 || *nval >= *n)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "%s: a validation fraction of %g holds out %lld of the %lld samples of "
                        "split %s; it must hold out at least one and leave some to train on",
                        c->data_path, c->val_fraction, (long long)*nval, (long long)*n,
                        c->train_split);
    tr->val_idx = malloc((size_t)*nval * sizeof(*tr->val_idx));
    tr->train_idx = malloc((size_t)(*n - *nval) * sizeof(*tr->train_idx));
    if (!tr->val_idx || !tr->train_idx)
        return tg__fail(ctx, TG_ERR_NOMEM, "trainer: no memory for the validation hold-out");
    s = tg_holdout(c->seed, *n, *nval, tr->val_idx, tr->train_idx, err, sizeof err);
    if (s)
        return ds_fail(ctx, s, err);
    *n -= *nval;
    return TG_OK;
}

/* The samples an evaluation of ds covers: all of them, or for tokens the
 * non-overlapping windows (every T-th start). */
static int64_t eval_len(const tg_trainer *tr, const tg_dataset *ds) {
    return tr->tokens ? (tg_dataset_num_tokens(ds) - 1) / tr->lps : tg_dataset_len(ds);
}

static tg_status open_data(tg_trainer *tr) {
    tg_ctx *ctx = tr->ctx;
    const tg_trainer_config *c = &tr->cfg;
    char err[512];
    tg_dataset_options dopt = {.stop = c->hooks.should_stop, .stop_user = c->hooks.user,
                               .block_size = c->block_size};
    tg_status s =
        tg_dataset_open_opts(c->data_path, c->train_split, &dopt, &tr->train_ds, err, sizeof err);
    if (s == TG_OK)
        s = tg_dataset_open_opts(c->data_path, c->test_split, &dopt, &tr->test_ds, err,
                                 sizeof err);
    if (s)
        return ds_fail(ctx, s, err);

    int nd;
    const int64_t *sh = tg_dataset_sample_shape(tr->train_ds, &nd);
    if (nd < 1 || nd > 3)
        return tg__fail(ctx, TG_ERR_FORMAT,
                        "%s: /%s/x has samples of rank %d; the models take vectors (D), images "
                        "(H, W) or (C, H, W)",
                        c->data_path, c->train_split, nd);
    if ((s = check_same(tr, tr->train_ds, tr->test_ds, c->test_split)) != TG_OK)
        return s;
    tr->tokens = tg_dataset_is_tokens(tr->train_ds);
    tr->lps = tg_dataset_labels_per_sample(tr->train_ds);
    tr->sample_ndim = nd;
    tr->sample_shape[0] = tr->sample_shape[1] = 1;
    memcpy(tr->sample_shape + 3 - nd, sh, (size_t)nd * sizeof *sh);

    int64_t n = tg_dataset_len(tr->train_ds), nval = 0;
    if ((s = open_val(tr, &n, &nval)) != TG_OK)
        return s;
    if (n < c->batch_size && !tr->tokens)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "%s: split %s has %lld samples%s, fewer than one batch of %lld",
                        c->data_path, c->train_split, (long long)n,
                        nval ? " left after the validation hold-out" : "",
                        (long long)c->batch_size);
    tg_sampler_config sc = tg_sampler_config_train(n, c->batch_size, c->seed, c->rank, c->world);
    sc.subset = tr->train_idx;
    if (tr->tokens) {
        /* Windows drawn with replacement; an epoch is as many batches as
         * the split has tokens for, unless steps_per_epoch says. */
        int64_t per = tg_dataset_num_tokens(tr->train_ds) / (c->batch_size * tr->lps);
        sc.draw = true;
        sc.epoch_batches = c->steps_per_epoch > 0 ? c->steps_per_epoch : per > 1 ? per : 1;
    }
    s = tg_sampler_new(&sc, &tr->train_sp, err, sizeof err);
    if (s == TG_OK)
        s = eval_sampler(tr, eval_len(tr, tr->test_ds), NULL, &tr->test_sp, err, sizeof err);
    if (s == TG_OK && tr->val_ds)
        s = eval_sampler(tr, nval ? nval : eval_len(tr, tr->val_ds), tr->val_idx, &tr->val_sp,
                         err, sizeof err);
    if (s)
        return ds_fail(ctx, s, err);
    tr->pred_cap = tg_sampler_local_batch(tr->test_sp);
    if (tr->val_sp && tg_sampler_local_batch(tr->val_sp) > tr->pred_cap)
        tr->pred_cap = tg_sampler_local_batch(tr->val_sp);
    tr->pred = malloc((size_t)(tr->pred_cap * tr->lps) * sizeof(*tr->pred));
    tr->tdim = tg_dataset_target_dim(tr->train_ds);
    if (tr->tdim &&
        !(tr->out_host = malloc((size_t)(tr->pred_cap * tr->tdim) * sizeof(*tr->out_host))))
        return tg__fail(ctx, TG_ERR_NOMEM, "trainer: no memory for %lld outputs",
                        (long long)(tr->pred_cap * tr->tdim));
    if (!tr->pred)
        return tg__fail(ctx, TG_ERR_NOMEM, "trainer: no memory for %lld predictions",
                        (long long)tr->pred_cap);
    return TG_OK;
}

/* The loss fits the targets: MSE for f32 targets, cross-entropy for
 * labels; AUTO becomes the one that fits. */
static tg_status check_loss(tg_trainer *tr) {
    tg_trainer_config *c = &tr->cfg;
    if (c->loss == TG_LOSS_AUTO)
        c->loss = tr->tdim ? TG_LOSS_MSE : TG_LOSS_CE;
    if (c->loss == TG_LOSS_MSE && !tr->tdim)
        return tg__fail(tr->ctx, TG_ERR_INVALID,
                        "%s: the MSE loss needs f32 regression targets, but %s/y holds class "
                        "labels (use the cross-entropy loss)",
                        c->data_path, c->train_split);
    if (c->loss == TG_LOSS_CE && tr->tdim)
        return tg__fail(tr->ctx, TG_ERR_INVALID,
                        "%s: the cross-entropy loss needs class labels, but %s/y holds f32 "
                        "regression targets (use the MSE loss)",
                        c->data_path, c->train_split);
    if (tr->tdim && c->label_smoothing > 0)
        return tg__fail(tr->ctx, TG_ERR_INVALID,
                        "trainer: label smoothing %g applies to class labels, not to the "
                        "regression targets of %s",
                        c->label_smoothing, c->data_path);
    return TG_OK;
}

static tg_status build(tg_trainer *tr) {
    tg_ctx *ctx = tr->ctx;
    const tg_trainer_config *c = &tr->cfg;
    tg_status s = open_data(tr);
    if (s)
        return s;
    if ((s = check_loss(tr)) != TG_OK)
        return s;
    /* A regression model has one output per target value. */
    const int64_t outs = tr->tdim ? tr->tdim : tg_dataset_num_classes(tr->train_ds);
    const char *mname = c->model_text ? (c->model_name ? c->model_name : "model")
                                      : tg_model_name(c->model);
    const int nd = tr->sample_ndim;
    if (!mname)
        return tg__fail(ctx, TG_ERR_INVALID, "model: unknown kind %d", (int)c->model);
    const char *text = c->model_text ? c->model_text : tg_model_builtin_text(mname);
    s = tg_model_init_sample(ctx, &tr->model, mname, text, nd, tr->sample_shape + 3 - nd, outs,
                             c->seed);
    if (s == TG_ERR_SHAPE) {
        /* Names the data's sample beside the layer that does not take it. */
        char why[768], shp[96];
        snprintf(why, sizeof why, "%s", tg_ctx_error(ctx));
        size_t off = (size_t)snprintf(shp, sizeof shp, "(");
        for (int d = 3 - nd; d < 3 && off < sizeof shp; d++)
            off += (size_t)snprintf(shp + off, sizeof shp - off, "%s%lld", d > 3 - nd ? ", " : "",
                                    (long long)tr->sample_shape[d]);
        tg_ctx_clear_error(ctx);
        /* A model of token indices (the gpt) given images: say what it needs. */
        tg_dtype in_dt = TG_F32;
        if (!tr->tokens && text && tg_net_input_dtype(ctx, text, strlen(text), &in_dt) != TG_OK)
            tg_ctx_clear_error(ctx); /* the build's message stands */
        const bool wants_tokens = !tr->tokens && in_dt == TG_I64;
        return tg__fail(ctx, s,
                        "%s: /%s/x has samples of shape %s), which model %s does not take: %s%s",
                        c->data_path, c->train_split, shp, mname, why,
                        wants_tokens ? " (its [input] is token indices: train it on token data "
                                       "made by 'tapegrad convert text', given with --data)"
                                     : "");
    }
    if (s)
        return s;
    int64_t osh[TG_MAX_DIMS];
    int ond = tg_net_out_shape(tr->model.net, osh);
    if (!tr->tokens && ond != 1)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "model %s gives a score per position (%d dims a sample), which needs "
                        "token data (convert text), but split %s of %s holds samples with one "
                        "label each",
                        mname, ond, c->train_split, c->data_path);
    if (tr->tokens && (ond != 2 || osh[0] != tr->lps))
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "%s: split %s holds tokens in windows of %lld, so model %s must give "
                        "(N, %lld, %lld) logits (an [input] of dtype i64 and a next-token score "
                        "at every position)",
                        c->data_path, c->train_split, (long long)tr->lps, mname,
                        (long long)tr->lps, (long long)outs);
    /* A hook that steps the parameters itself (ZeRO) owns the optimizer
     * state: none is allocated here. */
    tg_optim_config oc = c->optim;
    if (c->decay_matrices_only)
        oc.no_decay = tr->model.params.no_decay;
    s = c->hooks.optimizer_step
            ? tg_optim_check(ctx, &c->optim)
            : tg_optim_new(ctx, &oc, tr->model.params.nparams, tr->model.params.params, &tr->opt);
    if (s)
        return s;

    tr->steps_per_epoch = tg_sampler_num_batches(tr->train_sp);
    tr->total_steps = c->epochs * tr->steps_per_epoch;
    if (c->max_steps > 0 && c->max_steps < tr->total_steps)
        tr->total_steps = c->max_steps;
    tr->epochs = (tr->total_steps + tr->steps_per_epoch - 1) / tr->steps_per_epoch;
    tr->sched = c->schedule;
    tr->sched.lr = c->optim.lr;
    tr->sched.total_steps = tr->total_steps;
    return TG_OK;
}

tg_status tg_trainer_new(tg_ctx *ctx, const tg_trainer_config *cfg, tg_trainer **out) {
    *out = NULL;
    tg_status s = check_config(ctx, cfg);
    if (s)
        return s;
    tg_trainer *tr = calloc(1, sizeof(*tr));
    if (!tr)
        return tg__fail(ctx, TG_ERR_NOMEM, "trainer: out of memory");
    tr->ctx = ctx;
    tr->cfg = *cfg;
    if (!tr->cfg.train_split)
        tr->cfg.train_split = "train";
    if (!tr->cfg.test_split)
        tr->cfg.test_split = "test";
    s = build(tr);
    if (s) {
        tg_trainer_free(tr);
        return s;
    }
    *out = tr;
    return TG_OK;
}

void tg_trainer_free(tg_trainer *tr) {
    if (!tr)
        return;
    tg_loader_free(tr->train_ld);
    tg_loader_free(tr->test_ld);
    tg_loader_free(tr->val_ld);
    tg_sampler_free(tr->train_sp);
    tg_sampler_free(tr->test_sp);
    tg_sampler_free(tr->val_sp);
    tg_dataset_close(tr->train_ds);
    tg_dataset_close(tr->test_ds);
    tg_dataset_close(tr->val_ds);
    free(tr->val_idx);
    free(tr->train_idx);
    tg_optim_free(tr->opt);
    free(tr->pred);
    free(tr->out_host);
    free(tr);
}

/* The loaders start on first use, so that a resumed trainer starts them at
 * its restored position. */
static tg_status start_loaders(tg_trainer *tr) {
    char err[512];
    tg_status s = TG_OK;
    /* Augmentation on the training split only, on its loader's thread. */
    tg_loader_options lo = {.augment = {.flags = tr->cfg.augment,
                                        .pad = tr->cfg.augment_pad,
                                        .seed = tr->cfg.seed}};
    if (!tr->train_ld)
        s = tg_loader_new(tr->train_ds, tr->train_sp, &lo, &tr->train_ld, err, sizeof err);
    if (s == TG_OK && !tr->test_ld)
        s = tg_loader_new(tr->test_ds, tr->test_sp, NULL, &tr->test_ld, err, sizeof err);
    if (s == TG_OK && tr->val_ds && !tr->val_ld)
        s = tg_loader_new(tr->val_ds, tr->val_sp, NULL, &tr->val_ld, err, sizeof err);
    return s ? ds_fail(tr->ctx, s, err) : TG_OK;
}

/* A batch from the loader as step tensors x (n, C, H, W) or (n, D) and y: labels
 * (n), or with regression targets t (not NULL) (n, K) f32. */
static tg_status batch_tensors(tg_trainer *tr, const float *x, const int64_t *y, const float *t,
                               int64_t n, tg_tensor **xt, tg_tensor **yt) {
    /* Vectors (n, D), images (n, C, H, W): as the model was built. */
    const int xd = tr->model.in_ndim;
    int64_t xs[4] = {n, tr->sample_shape[0], tr->sample_shape[1], tr->sample_shape[2]};
    if (xd == 1)
        xs[1] = tr->sample_shape[2];
    int64_t ts[2] = {n, tr->tdim}, ny = n * tr->lps;
    *xt = tg_from_data(tr->ctx, TG_F32, xd + 1, xs, x);
    *yt = t ? tg_from_data(tr->ctx, TG_F32, 2, ts, t) : tg_from_data(tr->ctx, TG_I64, 1, &ny, y);
    return (*xt && *yt) ? TG_OK : tg_ctx_status(tr->ctx);
}

/* Token data: logits (n, T, V) as (n*T, V), one row per position, so
 * that cross-entropy averages over every position. */
static tg_tensor *positions(tg_trainer *tr, tg_tensor *logits) {
    if (!tr->tokens || !logits)
        return logits;
    int64_t sh[2] = {logits->shape[0] * logits->shape[1], logits->shape[2]};
    return tg_reshape(tr->ctx, logits, 2, sh);
}

/* One regression batch: adds the summed squared and absolute errors over
 * every target value to acc[0] and acc[1]. */
static tg_status eval_regress(tg_trainer *tr, tg_tensor *out, const float *t, int64_t n,
                              double *acc) {
    int64_t m = n * tr->tdim;
    tg_status s = tg_to_host(tr->ctx, out, tr->out_host, (size_t)m * sizeof(*tr->out_host));
    if (s)
        return s;
    for (int64_t i = 0; i < m; i++) {
        double d = (double)tr->out_host[i] - (double)t[i];
        acc[0] += d * d;
        acc[1] += fabs(d);
    }
    return TG_OK;
}

/* One evaluation batch: adds the summed loss and the number of correct
 * predictions to acc[0] and acc[1] (regression: see eval_regress). */
static tg_status eval_batch(tg_trainer *tr, const float *x, const int64_t *y, const float *t,
                            int64_t n, double *acc) {
    tg_ctx *ctx = tr->ctx;
    tg_step_reset(ctx);
    tg_tensor *xt, *yt;
    tg_status s = batch_tensors(tr, x, y, t, n, &xt, &yt);
    if (s)
        return s;
    if (t) {
        tg_tensor *out = tg_model_forward(ctx, &tr->model, xt, false);
        return out ? eval_regress(tr, out, t, n, acc) : tg_ctx_status(ctx);
    }
    tg_tensor *logits = positions(tr, tg_model_forward(ctx, &tr->model, xt, false));
    tg_tensor *loss = tg_cross_entropy(ctx, logits, yt, 0.0);
    tg_tensor *pred = tg_argmax(ctx, logits, 1, false);
    double l;
    if (!loss || !pred)
        return tg_ctx_status(ctx);
    if ((s = tg_item(ctx, loss, &l)) != TG_OK)
        return s;
    /* Token data: every position of the n windows counts. */
    n *= tr->lps;
    if ((s = tg_to_host(ctx, pred, tr->pred, (size_t)n * sizeof(*tr->pred))) != TG_OK)
        return s;
    acc[0] += l * (double)n;
    int64_t k = tr->model.num_classes;
    for (int64_t i = 0; i < n; i++) {
        acc[1] += tr->pred[i] == y[i];
        if (tr->confusion)
            tr->confusion[y[i] * k + tr->pred[i]] += 1;
    }
    return TG_OK;
}

tg_status tg_trainer_evaluate(tg_trainer *tr, tg_eval_result *out) {
    return tg_trainer_evaluate_confusion(tr, out, NULL);
}

/* Sums n doubles over the ranks through the hook (nothing alone). */
static tg_status reduce(tg_trainer *tr, double *vals, int n) {
    if (!tr->cfg.hooks.allreduce_sum)
        return TG_OK;
    return tr->cfg.hooks.allreduce_sum(tr, vals, n, tr->cfg.hooks.user);
}

/* Evaluates on the loader ld of sampler sp (the test split or the
 * validation set), named `name` in messages. */
static tg_status evaluate_on(tg_trainer *tr, tg_loader *ld, tg_sampler *sp, const char *name,
                             tg_eval_result *out, double *confusion);

tg_status tg_trainer_evaluate_confusion(tg_trainer *tr, tg_eval_result *out, double *confusion) {
    tg_status s = start_loaders(tr);
    if (s)
        return s;
    return evaluate_on(tr, tr->test_ld, tr->test_sp, tr->cfg.test_split, out, confusion);
}

/* The dataset that loader ld reads. */
static const tg_dataset *ld_dataset(const tg_trainer *tr, const tg_loader *ld) {
    return ld == tr->val_ld ? tr->val_ds : ld == tr->train_ld ? tr->train_ds : tr->test_ds;
}

static tg_status evaluate_on(tg_trainer *tr, tg_loader *ld, tg_sampler *sp, const char *name,
                             tg_eval_result *out, double *confusion) {
    tg_ctx *ctx = tr->ctx;
    tg_status s = TG_OK;
    tr->confusion = confusion;
    double t0 = now_s();
    double acc[3] = {0, 0, 0}; /* loss sum, correct, samples */
    bool prev = tg_set_grad_enabled(ctx, false);
    atomic_store_explicit(&tr->a_eval_done, 0, memory_order_relaxed);
    atomic_store_explicit(&tr->a_eval_total, tg_sampler_num_batches(sp),
                          memory_order_relaxed);
    char err[512];
    for (;;) {
        const float *x;
        const int64_t *y;
        int64_t n;
        bool end;
        s = tg_loader_next(ld, &x, &y, &n, &end, err, sizeof err);
        if (s) {
            ds_fail(ctx, s, err);
            break;
        }
        if (end)
            break;
        if (n > tr->pred_cap) {
            s = tg__fail(ctx, TG_ERR_INVALID, "trainer: evaluation batch of %lld > %lld",
                         (long long)n, (long long)tr->pred_cap);
            break;
        }
        if (n > 0 && (s = eval_batch(tr, x, y, tg_loader_targets(ld), n, acc)) != TG_OK)
            break;
        acc[2] += (double)n;
        atomic_fetch_add_explicit(&tr->a_eval_done, 1, memory_order_relaxed);
    }
    atomic_store_explicit(&tr->a_eval_total, 0, memory_order_relaxed);
    tg_step_reset(ctx);
    tg_set_grad_enabled(ctx, prev);
    tr->confusion = NULL;
    if (s)
        return s;
    if ((s = reduce(tr, acc, 3)) != TG_OK)
        return s;
    int64_t k = tr->model.num_classes;
    if (confusion && !tr->tdim && (s = reduce(tr, confusion, (int)(k * k))) != TG_OK)
        return s;
    if (acc[2] != (double)tg_sampler_get_config(sp)->n)
        return tg__fail(ctx, TG_ERR_INVALID, "trainer: evaluated %.0f samples of %s, expected %lld",
                        acc[2], name, (long long)tg_sampler_get_config(sp)->n);
    out->regression = tr->tdim > 0;
    if (tr->tdim) {
        /* Means over every target value: the MSE is the training loss. */
        out->loss = acc[0] / (acc[2] * (double)tr->tdim);
        out->mae = acc[1] / (acc[2] * (double)tr->tdim);
        out->accuracy = NAN;
    } else {
        out->loss = acc[0] / (acc[2] * (double)tr->lps);
        out->accuracy = acc[1] / (acc[2] * (double)tr->lps);
        out->mae = NAN;
    }
    out->tokens = tr->tokens ? (int64_t)acc[2] * tr->lps : 0;
    out->bits_per_byte = tr->tokens ? out->loss / log(2.0) / tg_dataset_bytes_per_token(
                                                                 ld_dataset(tr, ld))
                                    : NAN;
    out->samples = (int64_t)acc[2];
    out->seconds = now_s() - t0;
    tr->last = *out;
    return TG_OK;
}

static tg_status step_params(tg_trainer *tr, double lr);

/* Forward and backward of one micro-batch of n samples, its loss scaled
 * by `scale` before backward; *loss gets the unscaled loss. */
static tg_status micro_step(tg_trainer *tr, const float *x, const int64_t *y, const float *t,
                            int64_t n, double scale, double lr, double *loss) {
    tg_ctx *ctx = tr->ctx;
    const tg_trainer_config *c = &tr->cfg;
    tg_step_reset(ctx);
    tg_tensor *xt, *yt;
    tg_status s = batch_tensors(tr, x, y, t, n, &xt, &yt);
    if (s)
        return s;
    tg_trace_begin(c->trace, "forward");
    tg_tensor *logits = positions(tr, tg_model_forward(ctx, &tr->model, xt, true));
    tg_tensor *l = t ? tg_mse_loss(ctx, logits, yt)
                     : tg_cross_entropy(ctx, logits, yt, c->label_smoothing);
    tg_trace_end(c->trace);
    if (!l)
        return tg_ctx_status(ctx);
    if ((s = tg_item(ctx, l, loss)) != TG_OK)
        return s;
    if (!isfinite(*loss))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "trainer: training loss is %g at step %lld (learning rate %g too high?)",
                        *loss, (long long)tr->step + 1, lr);
    if (scale != 1.0 && !(l = tg_mul_scalar(ctx, l, scale)))
        return tg_ctx_status(ctx);
    tg_trace_begin(c->trace, "backward");
    s = tg_backward(ctx, l, NULL, 0);
    tg_trace_end(c->trace);
    return s;
}

/* One optimizer step on batch (x, y); *loss receives its training loss. */
static tg_status train_step(tg_trainer *tr, const float *x, const int64_t *y, const float *t,
                            int64_t n, double lr, double *loss) {
    const tg_trainer_config *c = &tr->cfg;
    const int64_t a = c->accum_steps > 1 ? c->accum_steps : 1, mb = n / a;
    const int64_t sample = tr->sample_shape[0] * tr->sample_shape[1] * tr->sample_shape[2];
    tg_status s = c->hooks.before_forward ? c->hooks.before_forward(tr, c->hooks.user) : TG_OK;
    *loss = 0;
    for (int64_t k = 0; k < a && s == TG_OK; k++) {
        if (a > 1 && c->hooks.set_sync)
            s = c->hooks.set_sync(tr, k == a - 1, c->hooks.user);
        double lk = 0;
        if (s == TG_OK)
            s = micro_step(tr, x + k * mb * sample, y + k * mb * tr->lps,
                           t ? t + k * mb * tr->tdim : NULL,
                           mb, 1.0 / (double)a, lr, &lk);
        *loss += a > 1 ? lk / (double)a : lk;
    }
    /* The DDP wait (after_backward) has a span of its own ("ddp wait"):
     * what is left of the all-reduce after backward. */
    if (s == TG_OK && c->hooks.after_backward)
        s = c->hooks.after_backward(tr, c->hooks.user);
    if (s)
        return s;
    tg_trace_begin(c->trace, "optimizer");
    s = step_params(tr, lr);
    tg_trace_end(c->trace);
    return s;
}

/* Clipping, the optimizer step and zeroing the gradients. */
static tg_status step_params(tg_trainer *tr, double lr) {
    tg_ctx *ctx = tr->ctx;
    const tg_trainer_config *c = &tr->cfg;
    tg_status s;
    if (c->hooks.optimizer_step)
        return c->hooks.optimizer_step(tr, lr, c->hooks.user);
    if (c->clip_grad_norm > 0 &&
        (s = tg_clip_grad_norm(ctx, tr->model.params.nparams, tr->model.params.params,
                               c->clip_grad_norm, NULL)) != TG_OK)
        return s;
    if ((s = tg_optim_step(ctx, tr->opt, lr)) != TG_OK)
        return s;
    return tg_optim_zero_grad(ctx, tr->opt);
}

static tg_status emit(tg_trainer *tr, tg_trainer_event *ev, bool *stop) {
    if (!tr->cfg.hooks.on_event)
        return TG_OK;
    ev->total_steps = tr->total_steps;
    ev->epochs = tr->epochs;
    ev->steps_per_epoch = tr->steps_per_epoch;
    return tr->cfg.hooks.on_event(tr, ev, stop, tr->cfg.hooks.user);
}

/* Per-epoch running figures. */
typedef struct epoch_acc {
    double loss_sum;
    int64_t steps;
    double t_start, t_log;
    int64_t step_log;
} epoch_acc;

static tg_status end_epoch(tg_trainer *tr, epoch_acc *ea, bool final, bool *stop) {
    double train_s = now_s() - ea->t_start;
    tg_trainer_event ev = {.kind = TG_EVENT_EPOCH, .step = tr->step};
    ev.epoch = (tr->step - 1) / tr->steps_per_epoch + 1;
    ev.step_in_epoch = (tr->step - 1) % tr->steps_per_epoch + 1;
    double ls = ea->loss_sum;
    tg_status s = reduce(tr, &ls, 1);
    if (s)
        return s;
    ev.train_loss = ea->steps ? ls / tr->cfg.world / (double)ea->steps : NAN;
    ev.seconds = train_s;
    ev.samples_per_s = train_s > 0 ? (double)(ea->steps * tr->cfg.batch_size) / train_s : 0;
    ev.tokens_per_s = tr->tokens ? ev.samples_per_s * (double)tr->lps : 0;
    tg_trace_begin(tr->cfg.trace, "eval");
    s = tr->cfg.hooks.before_forward ? tr->cfg.hooks.before_forward(tr, tr->cfg.hooks.user)
                                     : TG_OK;
    /* With a validation set, it is scored every epoch and the test split
     * only at the end. */
    ev.has_val = tr->val_ld != NULL;
    ev.eval.loss = ev.eval.accuracy = NAN; /* until the test split is scored */
    if (s == TG_OK && ev.has_val)
        s = evaluate_on(tr, tr->val_ld, tr->val_sp, "the validation set", &ev.val, NULL);
    if (s == TG_OK && (!ev.has_val || final))
        s = tg_trainer_evaluate(tr, &ev.eval);
    tg_trace_end(tr->cfg.trace);
    if (s == TG_OK)
        s = emit(tr, &ev, stop);
    if (s == TG_OK && ev.has_val && !final && *stop)
        s = tg_trainer_evaluate(tr, &ev.eval);
    if (s == TG_OK && (final || *stop)) {
        ev.kind = TG_EVENT_END;
        ev.seconds = now_s() - tr->t_run;
        ev.samples_per_s = ev.seconds > 0 ? (double)((tr->step - tr->run_step0) *
                                                     tr->cfg.batch_size) / ev.seconds
                                          : 0;
        ev.tokens_per_s = tr->tokens ? ev.samples_per_s * (double)tr->lps : 0;
        s = emit(tr, &ev, stop);
    }
    ea->loss_sum = 0;
    ea->steps = 0;
    ea->t_start = ea->t_log = now_s();
    ea->step_log = tr->step;
    return s;
}

tg_status tg_trainer_run(tg_trainer *tr) {
    tg_ctx *ctx = tr->ctx;
    const tg_trainer_config *c = &tr->cfg;
    tg_status s = start_loaders(tr);
    if (s)
        return s;
    tr->ran = true;
    tr->stopped = false;
    char err[512];
    epoch_acc ea = {.t_start = now_s(), .step_log = tr->step};
    ea.t_log = ea.t_start;
    tr->t_run = ea.t_start;
    tr->run_step0 = tr->step;
    bool stop = false;
    while (tr->step < tr->total_steps) {
        const float *x;
        const int64_t *y;
        int64_t n;
        bool end;
        /* Spans of step k: "data" (waiting for the prefetched batch),
         * forward, backward, "ddp wait", optimizer, and "eval" at an epoch
         * end. */
        tg_trace_set_step(c->trace, tr->step + 1);
        tg_trace_begin(c->trace, "data");
        s = tg_loader_next(tr->train_ld, &x, &y, &n, &end, err, sizeof err);
        tg_trace_end(c->trace);
        if (s != TG_OK)
            return ds_fail(ctx, s, err);
        if (end)
            continue; /* the marker after an epoch that ended at a resume point */
        double lr = tg_lr_at(&tr->sched, tr->step);
        double loss;
        if ((s = train_step(tr, x, y, tg_loader_targets(tr->train_ld), n, lr, &loss)) != TG_OK)
            return s;
        tr->step++;
        atomic_store_explicit(&tr->a_step, tr->step, memory_order_relaxed);
        ea.loss_sum += loss;
        ea.steps++;
        bool epoch_done = tr->step % tr->steps_per_epoch == 0;
        bool final = tr->step == tr->total_steps;
        if (c->hooks.after_step) {
            bool halt = false;
            if ((s = c->hooks.after_step(tr, &halt, c->hooks.user)) != TG_OK)
                return s;
            if (halt) {
                tr->stopped = true;
                break;
            }
        }
        if (c->log_every > 0 && tr->step % c->log_every == 0) {
            double t = now_s();
            double gl = loss;
            if ((s = reduce(tr, &gl, 1)) != TG_OK)
                return s;
            tg_trainer_event ev = {.kind = TG_EVENT_STEP, .step = tr->step, .lr = lr};
            ev.loss = gl / c->world;
            ev.epoch = (tr->step - 1) / tr->steps_per_epoch + 1;
            ev.step_in_epoch = (tr->step - 1) % tr->steps_per_epoch + 1;
            ev.seconds = t - tr->t_run;
            ev.samples_per_s =
                t > ea.t_log ? (double)((tr->step - ea.step_log) * c->batch_size) / (t - ea.t_log)
                             : 0;
            ev.tokens_per_s = tr->tokens ? ev.samples_per_s * (double)tr->lps : 0;
            ea.t_log = t;
            ea.step_log = tr->step;
            if ((s = emit(tr, &ev, &stop)) != TG_OK)
                return s;
        }
        if (epoch_done || final || stop) {
            if ((s = end_epoch(tr, &ea, final, &stop)) != TG_OK)
                return s;
        }
        if (stop)
            break;
    }
    tg_step_reset(ctx);
    return TG_OK;
}

tg_eval_result tg_trainer_last_eval(const tg_trainer *tr) { return tr->last; }
int64_t tg_trainer_num_classes(const tg_trainer *tr) { return tr->model.num_classes; }
bool tg_trainer_stopped(const tg_trainer *tr) { return tr->stopped; }

tg_trainer_state tg_trainer_state_get(const tg_trainer *tr) {
    tg_trainer_state st = {.step = tr->step, .seed = tr->cfg.seed};
    st.samples_consumed = tr->step * tr->cfg.batch_size;
    st.epoch = tr->step / tr->steps_per_epoch;
    return st;
}

tg_status tg_trainer_set_position(tg_trainer *tr, int64_t step, int64_t samples_consumed) {
    if (tr->ran || tr->train_ld)
        return tg__fail(tr->ctx, TG_ERR_INVALID, "trainer: set_position after the run started");
    if (step < 0 || step > tr->total_steps || samples_consumed != step * tr->cfg.batch_size)
        return tg__fail(tr->ctx, TG_ERR_INVALID,
                        "trainer: position step %lld / %lld samples does not match batch %lld "
                        "and %lld total steps",
                        (long long)step, (long long)samples_consumed,
                        (long long)tr->cfg.batch_size, (long long)tr->total_steps);
    char err[512];
    tg_status s = tg_sampler_set_samples_consumed(tr->train_sp, samples_consumed, err, sizeof err);
    if (s)
        return ds_fail(tr->ctx, s, err);
    tr->step = step;
    atomic_store_explicit(&tr->a_step, step, memory_order_relaxed);
    tg_optim_set_steps(tr->opt, step);
    return TG_OK;
}

tg_ctx *tg_trainer_ctx(tg_trainer *tr) { return tr->ctx; }
const tg_trainer_config *tg_trainer_get_config(const tg_trainer *tr) { return &tr->cfg; }
tg_model *tg_trainer_model(tg_trainer *tr) { return &tr->model; }
const tg_params *tg_trainer_params(const tg_trainer *tr) { return &tr->model.params; }
tg_optim *tg_trainer_optim(tg_trainer *tr) { return tr->opt; }
int64_t tg_trainer_steps_per_epoch(const tg_trainer *tr) { return tr->steps_per_epoch; }
int64_t tg_trainer_total_steps(const tg_trainer *tr) { return tr->total_steps; }
int64_t tg_trainer_train_len(const tg_trainer *tr) { return tg_sampler_get_config(tr->train_sp)->n; }
int64_t tg_trainer_tokens_per_sample(const tg_trainer *tr) { return tr->tokens ? tr->lps : 0; }
int64_t tg_trainer_test_len(const tg_trainer *tr) { return tg_dataset_len(tr->test_ds); }
int64_t tg_trainer_val_len(const tg_trainer *tr) {
    return tr->val_sp ? tg_sampler_get_config(tr->val_sp)->n : 0;
}

tg_trainer_progress tg_trainer_progress_get(const tg_trainer *tr) {
    tg_trainer *t = (tg_trainer *)tr;
    return (tg_trainer_progress){
        .step = atomic_load_explicit(&t->a_step, memory_order_relaxed),
        .total_steps = tr->total_steps,
        .steps_per_epoch = tr->steps_per_epoch,
        .epochs = tr->epochs,
        .eval_done = atomic_load_explicit(&t->a_eval_done, memory_order_relaxed),
        .eval_total = atomic_load_explicit(&t->a_eval_total, memory_order_relaxed),
    };
}
