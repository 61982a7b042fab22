/*
 * launch/train.h: the parts of `tapegrad train` shared between the option
 * handling (cmd_train.c) and the distributed run (train_run.c); private to
 * launch/.
 */
#ifndef TAPEGRAD_LAUNCH_TRAIN_H
#define TAPEGRAD_LAUNCH_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "tapegrad/checkpoint.h"
#include "tapegrad/comm.h"
#include "tapegrad/trainer.h"
#include "options.h"

/* The file that rank 0 leaves in --ckpt-dir after the checkpoint of a
 * signal stop (step, signal, checkpoint), removed when the next run starts;
 * launch/slurm/train.sbatch reads it. */
#define TG_PREEMPT_MARKER "PREEMPTED"

/* Everything the options decide besides the trainer config. */
typedef struct train_opts {
    const char *model;    /* --model: a shipped model's name or a model file */
    const char *data;
    const char *idx_dir;
    const char *metrics;
    int threads;
    tg_device device;
    const char *trace;    /* --trace FILE.json: FILE is the prefix */
    double comm_timeout;  /* seconds; 0: the world's default */
    double bucket_mb;     /* 0: the DDP default */
    double first_bucket_mb; /* 0: the DDP default */
    const char *ckpt_dir; /* NULL: no checkpoints */
    int64_t ckpt_every;   /* steps; 0: only at epoch ends, the end and a stop */
    int keep;             /* checkpoints kept; 0: all */
    const char *resume;   /* NULL, "auto" or a checkpoint file */
    bool check_replicas;  /* compare a digest of the parameters every step */
    bool sync_bn;         /* SyncBatchNorm over the ranks (cnn-bn) */
    int zero;             /* --zero 1: ZeRO stage 1 (optimizer state sharded) */
    tg_precision precision; /* --precision: the products' (autocast) */
    tg_dtype grad_dtype;  /* --grad-dtype: the dtype gradients are summed in */
    int verbosity;        /* -1 --quiet, 0 default, 1 --verbose */
    /* --model gpt's sizes (tg_gpt_model_text) and the weight-decay rule */
    int gpt_n_layer, gpt_n_head;
    int64_t gpt_n_embd;
    double gpt_dropout;
    int decay;            /* 1: matrices only (cfg.decay_matrices_only) */
} train_opts;

/* What --model names: a shipped model (the built-in kinds mlp, cnn, cnn-bn,
 * and resnet20, resnet18) or a path to a model file (launch/model_arg.c). */
typedef struct tg_model_arg {
    tg_model_kind kind; /* a built-in kind, or TG_MODEL_COUNT */
    const char *name;   /* the argument */
    const char *text;   /* the model file's text (shipped or read) */
    char *owned;        /* the text read from a file (heap), else NULL */
    char *owned_name;   /* the name taken from a checkpoint (heap), else NULL */
    bool shipped;       /* text is the shipped file of that name (a checkpoint's too) */
} tg_model_arg;

/* Resolves arg (label names the option in messages); prints the problem
 * and returns TG_EXIT_USAGE when it names neither. Free with
 * tg_model_arg_free(). */
int tg_model_arg_resolve(const char *cmd, const char *label, const char *arg, tg_model_arg *out);
void tg_model_arg_free(tg_model_arg *a);
/* The model a checkpoint stores, for `train --resume` without --model: the
 * checkpoint `resume` names (the newest in dir for "auto"). Leaves out->text
 * NULL when there is none to take (no checkpoint, or one written before
 * model files); returns an exit code after printing when the file is bad. */
int tg_model_arg_from_ckpt(const char *cmd, const char *resume, const char *dir,
                           tg_model_arg *out);

/* "sgd", "adam", "adamw" / "cosine", "step", "constant". */
const char *tg_train_optim_name(tg_optim_kind k);
const char *tg_train_sched_name(tg_lr_kind k);

/* Settings for SGD when --optimizer sgd is chosen without --lr etc. */
#define TG_TRAIN_SGD_LR 0.05
/* --model gpt's default sizes (models/gpt.ini is their text). */
#define TG_GPT_N_LAYER 4
#define TG_GPT_N_HEAD 4
#define TG_GPT_N_EMBD 128
#define TG_TRAIN_SGD_MOMENTUM 0.9
#define TG_TRAIN_SGD_WEIGHT_DECAY 5e-4

/* Every value of train's options (the base of its option table,
 * launch/train_opts.c). */
typedef struct train_args {
    tg_trainer_config cfg;
    train_opts o;
    bool quiet, verbose, print_config;
    tg_model_arg marg; /* what --model named; tg_model_arg_free() at the end */
} train_args;

/* The option table of `tapegrad train` and its length. */
extern const tg_opt tg_train_options[];
extern const int tg_train_options_count;
/* The option table of `tapegrad eval` (launch/cmd_eval.c) and its length. */
extern const tg_opt tg_eval_options[];
extern const int tg_eval_options_count;
/* cpu and cuda, for every command's --device. */
extern const tg_opt_choice tg_train_devices[];
/* f32 and bf16, for train's and eval's --precision. */
extern const tg_opt_choice tg_train_precisions[];

/* The defaults of every option for a model. */
train_args tg_train_args_defaults(tg_model_kind kind);
/* --model gpt's training defaults (nanoGPT's recipe) onto a. */
void tg_train_gpt_defaults(train_args *a);
/* resnet20 and resnet18 (the shipped files): --augment crop,flip --augment-pad 2. */
void tg_train_resnet_defaults(train_args *a);

/* Resolves the options read into set onto the model's defaults (the model
 * first, then the optimizer's defaults, then the rest) and checks how they
 * combine. Prints what is wrong; returns an exit code. */
int tg_train_resolve(const tg_opt_set *set, train_args *a);

/* Fills f (room for max) with the options that a run records (the
 * table's TG_OPT_RECORD rows), typed; returns the count. o may be NULL
 * (the defaults). */
int tg_train_config_fields(const tg_trainer_config *c, const train_opts *o, tg_cfg_field *f,
                           int max);

/* The same as "key = value" lines, a --config file (saved in checkpoints,
 * compared at resume, printed in the banner). Returns buf. */
char *tg_train_config_text(const tg_trainer_config *c, const train_opts *o, char *buf,
                           size_t len);

/* Whether the checkpoint tensors ts[0..n) hold every parameter and buffer
 * of ps under its name, shape and dtype; if not, why names the first that
 * is missing or differs ("tensor 'fc3.bias' (10,) f32 of model 'mlp' is
 * missing from the file"). model names the model in that message. */
bool tg_train_ckpt_fits(const char *model, const tg_params *ps, const tg_ckpt_tensor *ts, int n,
                        char *why, size_t whylen);

/* The dataset's path: `given` (--data) when set, else the Fashion-MNIST
 * cache, which rank 0 builds first (the other ranks wait, then find it in
 * place, so that no two ranks convert into the same folder at once).
 * Returns an exit code. */
int tg_train_find_data(const char *cmd, const char *given, const char *idx_dir, tg_world *w,
                       char *cache, size_t len, const char **data);

/* --device: for cuda, checks the build and the node's GPUs and selects the
 * GPU of this rank's local rank. Returns an exit code; err says why. */
int tg_train_open_device(const train_opts *o, tg_world *w, char *err, size_t len);

/* --zero 1 resume (launch/train_zero.c): reads the checkpoint at path into
 * host memory (*ts, *n; free with tg_ckpt_tensors_free), checks it against
 * the model and loads the parameters and buffers; the optimizer state stays
 * in *ts for tg_ddp_zero_load_state. On failure why says what and *ts is NULL. */
tg_status tg_train_zero_read(tg_trainer *tr, const char *path, tg_ckpt_tensor **ts, int *n,
                             char *why, size_t whylen);
/* Collective: rank 0 prints (when print) the optimizer state's memory per
 * rank (the shard's with zero, else the trainer optimizer's). */
tg_status tg_train_optim_memory(tg_trainer *tr, tg_ddp *ddp, tg_world *w, bool zero, bool print);

/*
 * Runs the training on this rank of world w: the context, the trainer,
 * resuming, DDP, checkpoints, pre-emption, progress. Returns the exit code.
 */
int tg_train_run(tg_trainer_config *cfg, const train_opts *o, const char *data, tg_world *w);

#endif
