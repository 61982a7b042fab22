/*
 * tapegrad/trainer.h: the built-in models and the training loop.
 *
 * Overview
 * --------
 * A tg_model is one of the built-in image classifiers (an MLP and two small
 * CNNs), with its parameters registered in a tg_params list under PyTorch
 * state_dict names ("fc1.weight", "conv1.weight", "bn1.running_mean").
 *
 * A tg_trainer owns everything one training run needs besides the context:
 * the model, the optimizer, the datasets, samplers and prefetching loaders of
 * the train and test splits. tg_trainer_run() loops over the training split
 * until the configured epochs (or max_steps) are done, and evaluates on the
 * test split at each epoch end, in no-grad mode, over every test sample
 * exactly once. Each step resets the context's step arena, so after the first
 * step the loop allocates nothing.
 *
 *     tg_trainer_config tc = tg_trainer_defaults(TG_MODEL_MLP);
 *     tc.data_path = "fmnist.h5";
 *     tg_trainer *tr;
 *     if (tg_trainer_new(ctx, &tc, &tr) != TG_OK ||
 *         tg_trainer_run(tr) != TG_OK)
 *         fprintf(stderr, "%s\n", tg_ctx_error(ctx));
 *     tg_eval_result r = tg_trainer_last_eval(tr);   // r.accuracy
 *     tg_trainer_free(tr);
 *
 * Nothing here prints. Progress reaches the caller through the on_event hook
 * (a tg_trainer_event at every log interval, at each epoch end and at the
 * end); the command line turns those into progress lines and JSONL metrics.
 *
 * Data parallelism and checkpoints plug in through the config: rank/world go
 * to both samplers (each rank reads its slice of every global batch, and the
 * test split is cut so that every sample is seen once across the ranks);
 * after_backward runs after backward and before gradient clipping and the
 * optimizer step (the place to wait for the gradient all-reduce); allreduce_sum
 * sums the evaluation counters across the ranks; on_event may ask the loop to
 * stop after the current step (pre-emption), and tg_trainer_state() /
 * tg_trainer_set_position() give a checkpoint the position to save and
 * restore (step, epoch, samples consumed; the parameters, buffers and
 * optimizer state are reached through tg_trainer_params() and
 * tg_trainer_optim()).
 *
 * Determinism: the epoch order comes from (seed, epoch) alone and the model's
 * initial values from (seed) alone, so on the CPU the same seed and thread
 * count give a bit-identical loss curve.
 *
 * Errors: every fallible call returns a tg_status and leaves a message in the
 * context (tg_ctx_error), naming the file, split or setting at fault. Dataset
 * problems are TG_ERR_IO or TG_ERR_FORMAT; bad settings TG_ERR_INVALID.
 */
#ifndef TAPEGRAD_TRAINER_H
#define TAPEGRAD_TRAINER_H

#include "tapegrad/comm.h"
#include "tapegrad/datasets.h"
#include "tapegrad/nn.h"
#include "tapegrad/optim.h"
#include "tapegrad/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum tg_model_kind {
    /* flatten - fc1 (256) - relu - fc2 (128) - relu - fc3 (classes) */
    TG_MODEL_MLP = 0,
    /* conv1 5x5x32 pad 2 - relu - maxpool 2 - conv2 5x5x64 pad 2 - relu -
     * maxpool 2 - flatten - fc1 (1024) - relu - fc2 (classes) */
    TG_MODEL_CNN,
    /* as cnn with bn1/bn2 (BatchNorm2d) after conv1/conv2 and bn3
     * (BatchNorm1d) after fc1, each before its relu */
    TG_MODEL_CNN_BN,
    TG_MODEL_COUNT
} tg_model_kind;

/* "mlp", "cnn", "cnn-bn"; NULL for a bad kind. */
const char *tg_model_name(tg_model_kind kind);
/* The kind named `name`; false when there is none. */
bool tg_model_from_name(const char *name, tg_model_kind *kind);

typedef struct tg_net tg_net;

typedef struct tg_model {
    tg_model_kind kind;  /* TG_MODEL_COUNT for a model file that is not one of them */
    const char *name;    /* "mlp", or the model file's name (context memory) */
    /* One sample: (C, H, W) with in_ndim 3, or a vector (D) with in_ndim 1,
     * stored as (1, 1, D). A sample (H, W) is the image (1, H, W). */
    int64_t in_shape[3];
    int in_ndim;
    int64_t num_classes;
    tg_params params;
    tg_net *net;         /* the compiled model file (tapegrad/modelfile.h) */
} tg_model;

/*
 * Allocates and initialises the model's tensors in ctx's persistent pool, as
 * PyTorch's default initialisation does, from the stream tg_rng_make(seed, 0).
 * in_shape is one sample's (C, H, W). The built-in kinds are the shipped
 * model files models/mlp.ini, cnn.ini, cnn-bn.ini. Returns TG_ERR_INVALID
 * for a bad kind or shape, TG_ERR_SHAPE for an input its layers do not fit.
 */
tg_status tg_model_init(tg_ctx *ctx, tg_model *m, tg_model_kind kind, const int64_t in_shape[3],
                        int64_t num_classes, uint64_t seed);

/* As tg_model_init() for the model file `text` (docs/MODELS.md); name labels
 * it in messages (a path, or a shipped name). A file whose last layer does
 * not give (N, num_classes) is refused with a message naming its line. */
tg_status tg_model_init_text(tg_ctx *ctx, tg_model *m, const char *name, const char *text,
                             const int64_t in_shape[3], int64_t num_classes, uint64_t seed);

/* As tg_model_init_text() for a sample of any rank 1..3 as a dataset gives
 * it: (D) builds the model for vectors (N, D); (H, W) for the one-channel
 * image (1, H, W); (C, H, W) as it is. A layer that does not fit the sample
 * (a convolution given vectors) fails with TG_ERR_SHAPE. */
tg_status tg_model_init_sample(tg_ctx *ctx, tg_model *m, const char *name, const char *text,
                               int ndim, const int64_t *shape, int64_t num_classes, uint64_t seed);

/* x (N, C, H, W) f32 (or (N, D) for a model built for vectors) -> logits (N, num_classes). training selects batch
 * statistics (and running-average updates) in the BatchNorm layers. */
tg_tensor *tg_model_forward(tg_ctx *ctx, tg_model *m, tg_tensor *x, bool training);
/* SyncBatchNorm (tg_batchnorm.sync) in every batch-norm layer: batch
 * statistics over every rank of the context's collective (tg_world_attach). */
void tg_model_set_sync_bn(tg_model *m, bool sync);
/* Whether the model has batch-norm layers. */
bool tg_model_has_bn(const tg_model *m);

/* ------------------------------------------------------------------------ */
/* The trainer                                                               */
/* ------------------------------------------------------------------------ */

typedef struct tg_trainer tg_trainer;

typedef enum tg_trainer_event_kind {
    TG_EVENT_STEP = 0, /* every log_every steps */
    TG_EVENT_EPOCH,    /* after each epoch's evaluation */
    TG_EVENT_END,      /* once, after the last evaluation */
} tg_trainer_event_kind;

typedef struct tg_eval_result {
    double loss;      /* mean cross-entropy over the split (regression: the MSE) */
    double accuracy;  /* fraction of samples whose argmax is the label (regression: NaN) */
    bool regression;  /* the split holds f32 targets: loss is the MSE, and */
    double mae;       /* the mean absolute error over every target value */
    int64_t samples;  /* samples evaluated (all ranks): the split's size */
    /* Token splits: samples are windows of T tokens, loss and accuracy are
     * means over every position (tokens = samples x T), perplexity is
     * exp(loss) and bits_per_byte = loss / ln 2 / the split's
     * bytes_per_token. tokens is 0 (and bits_per_byte NaN) otherwise. */
    int64_t tokens;
    double bits_per_byte;
    double seconds;
} tg_eval_result;

typedef struct tg_trainer_event {
    tg_trainer_event_kind kind;
    int64_t step;        /* optimizer steps taken so far */
    int64_t total_steps; /* steps the run will take */
    int64_t epoch;       /* 1-based: the epoch the step belongs to / that ended */
    int64_t epochs;      /* epochs the run will take (the last may be partial) */
    int64_t step_in_epoch, steps_per_epoch;
    double loss;         /* STEP: this step's training loss */
    double lr;           /* STEP: the learning rate of this step */
    double train_loss;   /* EPOCH/END: mean training loss of the epoch's steps */
    /* EPOCH/END: the test split; with a validation set, scored at the END
     * only (eval.samples is 0 in the EPOCH events before it). */
    tg_eval_result eval;
    bool has_val;        /* a validation set is evaluated every epoch: */
    tg_eval_result val;  /* EPOCH/END: its figures */
    double tokens_per_s;  /* token data: samples_per_s x T; else 0 */
    double samples_per_s; /* training samples per second: since the last STEP
                           * event (STEP), over the epoch (EPOCH), over the run,
                           * evaluations included (END) */
    double seconds;      /* STEP: since the run began; EPOCH: the epoch's
                          * training time; END: the whole run's wall time */
} tg_trainer_event;

/*
 * Hooks (all optional). A hook returning a status other than TG_OK stops the
 * run with that status; a hook that fails should set the context's message
 * with its own words first.
 */
typedef struct tg_trainer_hooks {
    void *user;
    /* Progress. Set *stop to end the run after this step (the trainer still
     * evaluates and sends TG_EVENT_END). */
    tg_status (*on_event)(tg_trainer *tr, const tg_trainer_event *ev, bool *stop, void *user);
    /* After backward, before clipping and the optimizer step (the DDP wait). */
    tg_status (*after_backward)(tg_trainer *tr, void *user);
    /* Sums n doubles across the ranks in place: the evaluation counters, and
     * the training loss of each logged step and of each epoch (so that
     * events report the mean over the global batch, not this rank's). */
    tg_status (*allreduce_sum)(tg_trainer *tr, double *vals, int n, void *user);
    /* Gradient accumulation (accum_steps > 1): called before the backward of
     * each micro-batch with sync false for all but the last, true for the
     * last, so that only the last all-reduces (tg_ddp_set_sync). */
    tg_status (*set_sync)(tg_trainer *tr, bool sync, void *user);
    /* Before the forward of each training step and before each evaluation:
     * the place to broadcast rank 0's buffers (batch-norm statistics), as
     * PyTorch DDP's broadcast_buffers, so that every rank trains on and
     * evaluates the same model. */
    tg_status (*before_forward)(tg_trainer *tr, void *user);
    /* After every optimizer step (the step count already advanced), before
     * the step's progress event and evaluation: the place for periodic
     * checkpoints and the pre-emption vote. Setting *stop ends the run at
     * once, without an evaluation or TG_EVENT_END; tg_trainer_run() returns
     * TG_OK and tg_trainer_stopped() tells. */
    tg_status (*after_step)(tg_trainer *tr, bool *stop, void *user);
    /* Replaces the step's clipping (to clip_grad_norm), optimizer step and
     * zeroing of the gradients, after after_backward: ZeRO's sharded
     * optimizer (tg_ddp_zero_step). With it the trainer makes no optimizer
     * (tg_trainer_optim() is NULL); the hook owns the optimizer state. */
    tg_status (*optimizer_step)(tg_trainer *tr, double lr, void *user);
    /* Asked in the long work before the first step (the dataset checks at
     * open, loading and checking x when the loaders start); true makes
     * tg_trainer_new() or tg_trainer_run() give up with TG_ERR_STOPPED. */
    bool (*should_stop)(void *user);
} tg_trainer_hooks;

/* The training loss: cross-entropy for class labels, mean squared error
 * for f32 regression targets (docs/DATASETS.md). AUTO picks by the
 * training split's y. */
typedef enum tg_loss_kind {
    TG_LOSS_AUTO = 0,
    TG_LOSS_CE,
    TG_LOSS_MSE,
} tg_loss_kind;

typedef struct tg_trainer_config {
    tg_model_kind model;
    /* A model file's text (docs/MODELS.md) to train instead of `model`, and
     * the name it goes by in messages and checkpoints (its path); NULL: the
     * built-in `model`. Not copied: must outlive the trainer. */
    const char *model_text;
    const char *model_name;
    const char *data_path;   /* HDF5 file with both splits (required) */
    const char *train_split; /* NULL: "train" */
    const char *test_split;  /* NULL: "test" */
    int64_t epochs;          /* >= 1 */
    int64_t batch_size;      /* global batch, divisible by world */
    int64_t eval_batch_size; /* global; 0: 250 */
    int64_t max_steps;       /* stop after this many steps; 0: no cap */
    uint64_t seed;           /* model init and epoch order */
    tg_optim_config optim;   /* optim.lr is the peak learning rate */
    /* Weight decay on the matrices only (tg_params.no_decay: not on biases,
     * norm weights and embeddings), as nanoGPT and llm.c; false: on every
     * parameter, as one torch param group. */
    bool decay_matrices_only;
    /* Schedule over the run: kind, warmup_steps, min_lr, step_size and gamma
     * are used; lr comes from optim.lr and total_steps from the run. */
    tg_lr_schedule schedule;
    double label_smoothing;  /* [0, 1); cross-entropy only */
    tg_loss_kind loss;       /* AUTO: MSE for f32 targets, else cross-entropy */
    double clip_grad_norm;   /* 0: no clipping */
    int64_t log_every;       /* steps between TG_EVENT_STEP; 0: none */
    /* Micro-batches per optimizer step (0 or 1: none). Each rank's slice of
     * the global batch is cut into accum_steps equal micro-batches (it must
     * divide batch_size / world); their gradients, each scaled by
     * 1/accum_steps, add up to the gradient of the whole batch, and the
     * step's loss is their mean. The global batch stays batch_size. */
    int64_t accum_steps;
    /* Data beyond the two splits (docs/DATASETS.md). augment: TG_AUGMENT_*
     * bits applied to the training split on the loader's I/O thread, drawn
     * from (seed, epoch, sample index); augment_pad: the crop's padding
     * (tg_trainer_defaults: 4). val_split: a split evaluated after every
     * epoch, or val_fraction in (0, 1): that share of the training split,
     * held out by tg_holdout(seed) and never trained on. With either, the
     * test split is scored only at the end. */
    unsigned augment;
    int augment_pad;
    const char *val_split;
    double val_fraction;
    /* Token data (docs/DATASETS.md): the window length T of the samples
     * (0: TG_DATASET_DEFAULT_BLOCK), and the batches of a training epoch
     * (0: the training split's tokens / (batch_size x T), at least 1).
     * Training windows are drawn with replacement from (seed, batch
     * number); evaluation reads every non-overlapping window once. */
    int64_t block_size;
    int64_t steps_per_epoch;
    int rank, world;         /* this process in the data-parallel job; world 1 alone */
    /* Optional: spans "forward", "backward" and "optimizer" of every
     * training step go here (NULL: none). Not owned by the trainer. */
    tg_trace *trace;
    tg_trainer_hooks hooks;
} tg_trainer_config;

/* Per-model defaults (the command line's): data_path NULL, everything else
 * set, reaching the documented test accuracy on Fashion-MNIST. */
tg_trainer_config tg_trainer_defaults(tg_model_kind kind);

/*
 * Opens both splits, checks that they agree (sample shape, classes), builds
 * the model and the optimizer and starts the loaders. The config is copied
 * (the strings must outlive the trainer). On failure *out is NULL.
 */
tg_status tg_trainer_new(tg_ctx *ctx, const tg_trainer_config *cfg, tg_trainer **out);

/* Trains from the current position to the end of the run (or a stop). */
tg_status tg_trainer_run(tg_trainer *tr);

/* Where a run is, for a progress display in another thread: safe to call
 * while tg_trainer_run() runs (the counters are atomic copies, updated once
 * per step and per evaluation batch). eval_total is the number of batches
 * of the evaluation under way, 0 when none is. */
typedef struct tg_trainer_progress {
    int64_t step, total_steps, steps_per_epoch, epochs;
    int64_t eval_done, eval_total;
} tg_trainer_progress;
tg_trainer_progress tg_trainer_progress_get(const tg_trainer *tr);

/* Evaluates the current parameters on the test split (no grad). */
tg_status tg_trainer_evaluate(tg_trainer *tr, tg_eval_result *out);

/* As tg_trainer_evaluate(), also adding every sample's (label, prediction)
 * into confusion (num_classes x num_classes doubles, row = label, column =
 * prediction; the caller zeroes it), summed across the ranks through the
 * allreduce_sum hook. confusion may be NULL. */
tg_status tg_trainer_evaluate_confusion(tg_trainer *tr, tg_eval_result *out, double *confusion);

/* Classes of the dataset (the model's outputs). */
int64_t tg_trainer_num_classes(const tg_trainer *tr);

/* True when the last tg_trainer_run() ended because after_step set *stop. */
bool tg_trainer_stopped(const tg_trainer *tr);

/* The result of the last evaluation (zeros before the first). */
tg_eval_result tg_trainer_last_eval(const tg_trainer *tr);

/* The position, for checkpoints. samples_consumed counts global training
 * samples since epoch 0, step 0 (valid for any world size). */
typedef struct tg_trainer_state {
    int64_t step;
    int64_t epoch; /* 0-based epoch of the next step */
    int64_t samples_consumed;
    uint64_t seed;
} tg_trainer_state;
tg_trainer_state tg_trainer_state_get(const tg_trainer *tr);

/* Moves a fresh (not yet run) trainer to a saved position: step and
 * samples_consumed must agree with the batch size. The optimizer's step
 * count is set too; its state tensors are restored by the caller. */
tg_status tg_trainer_set_position(tg_trainer *tr, int64_t step, int64_t samples_consumed);

tg_ctx *tg_trainer_ctx(tg_trainer *tr);
const tg_trainer_config *tg_trainer_get_config(const tg_trainer *tr);
tg_model *tg_trainer_model(tg_trainer *tr);
const tg_params *tg_trainer_params(const tg_trainer *tr);
/* NULL when hooks.optimizer_step owns the optimizer. */
tg_optim *tg_trainer_optim(tg_trainer *tr);
int64_t tg_trainer_steps_per_epoch(const tg_trainer *tr);
int64_t tg_trainer_total_steps(const tg_trainer *tr);
/* Samples trained on per epoch's pass (the training split less any
 * held-out validation samples), in the test split, in the validation set
 * (0: none). */
int64_t tg_trainer_train_len(const tg_trainer *tr);
/* Token data: the positions of a sample (the block size T); 0 otherwise. */
int64_t tg_trainer_tokens_per_sample(const tg_trainer *tr);
int64_t tg_trainer_test_len(const tg_trainer *tr);
int64_t tg_trainer_val_len(const tg_trainer *tr);

/* Stops the loaders and frees the trainer (the tensors stay in the context
 * until tg_ctx_free). NULL is a no-op. */
void tg_trainer_free(tg_trainer *tr);

#ifdef __cplusplus
}
#endif
#endif
