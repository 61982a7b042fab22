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

/* The file that rank 0 leaves in --ckpt-dir after the checkpoint of a
 * signal stop (step, signal, checkpoint), removed when the next run starts;
 * launch/slurm/train.sbatch reads it. */
#define TG_PREEMPT_MARKER "PREEMPTED"

/* Everything the options decide besides the trainer config. */
typedef struct train_opts {
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
    int verbosity;        /* -1 --quiet, 0 default, 1 --verbose */
} train_opts;

/* What --model names: a shipped model (the built-in kinds mlp, cnn, cnn-bn,
 * and resnet20, resnet18) or a path to a model file (launch/model_arg.c). */
typedef struct tg_model_arg {
    tg_model_kind kind; /* a built-in kind, or TG_MODEL_COUNT */
    const char *name;   /* the argument */
    const char *text;   /* the model file's text (shipped or read) */
    char *owned;        /* the text read from a file (heap), else NULL */
    char *owned_name;   /* the name taken from a checkpoint (heap), else NULL */
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

/* One field of the resolved configuration, typed for JSON (numbers as
 * numbers, strings as strings). The strings point into the config or into
 * static tables. */
typedef enum tg_cfg_kind { TG_CFG_STR, TG_CFG_INT, TG_CFG_U64, TG_CFG_NUM } tg_cfg_kind;
typedef struct tg_cfg_field {
    const char *key;
    tg_cfg_kind kind;
    const char *s;
    int64_t i;
    uint64_t u;
    double d;
} tg_cfg_field;
#define TG_CFG_MAX_FIELDS 64

/* Fills f (room for max) with the resolved configuration; returns the count. */
int tg_train_config_fields(const tg_trainer_config *c, tg_cfg_field *f, int max);

/* The resolved configuration as "key = value" lines (saved in checkpoints,
 * compared at resume, printed in the banner). Returns buf. */
char *tg_train_config_text(const tg_trainer_config *c, char *buf, size_t len);

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

/*
 * Runs the training on this rank of world w: the context, the trainer,
 * resuming, DDP, checkpoints, pre-emption, progress. Returns the exit code.
 */
int tg_train_run(tg_trainer_config *cfg, const train_opts *o, const char *data, tg_world *w);

#endif
