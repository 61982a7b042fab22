/*
 * launch/train_opts.c: the options of `tapegrad train`, one table.
 *
 * This table is the only description of train's options: the command line,
 * the keys of `--config FILE.ini`, `--help`, `--print-config`, the "did you
 * mean" suggestions, the config event of the metrics and the configuration
 * recorded in checkpoints are all read from it (launch/options.c walks it).
 *
 * To add an option, add one row here:
 *   1. a member for its value in train_args (launch/train.h: in cfg, o, or
 *      train_args itself), with its default set by tg_train_args_defaults()
 *      when that is not 0/NULL;
 *   2. the row: {"name", alias, type, "ARG", offsetof(train_args, member),
 *      lo, hi, choices, unset, flags, group, "help"}. `unset` (the meaning
 *      of 0/NULL, e.g. "off") makes an unset value print as a comment;
 *      flags: TG_OPT_INI to make it an INI key printed by --print-config,
 *      TG_OPT_RECORD (with INI: TG_OPT_SAVED) when it can change the
 *      results, so that checkpoints and metrics record it;
 *   3. any check that involves other options in tg_train_resolve() below.
 * The tests (tests/test_config.c) then find it in --help, as an INI key and
 * in --print-config without further work.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "options.h"
#include "tapegrad/modelfile.h"
#include "train.h"
#include "train_data.h"

#define STR_(x) #x
#define STR(x) STR_(x)

_Static_assert(sizeof(tg_model_kind) == sizeof(int), "choices are stored as int");
_Static_assert(sizeof(tg_optim_kind) == sizeof(int), "choices are stored as int");
_Static_assert(sizeof(tg_lr_kind) == sizeof(int), "choices are stored as int");
_Static_assert(sizeof(tg_device) == sizeof(int), "choices are stored as int");
_Static_assert(sizeof(unsigned) == sizeof(int), "choices are stored as int");
_Static_assert(sizeof(tg_loss_kind) == sizeof(int), "choices are stored as int");

static const tg_opt_choice optimizers[] = {
    {"adamw", TG_OPTIM_ADAMW}, {"adam", TG_OPTIM_ADAM}, {"sgd", TG_OPTIM_SGD}, {NULL, 0}};
static const tg_opt_choice schedules[] = {
    {"cosine", TG_LR_COSINE}, {"constant", TG_LR_CONSTANT}, {NULL, 0}};
static const tg_opt_choice losses[] = {
    {"auto", TG_LOSS_AUTO}, {"ce", TG_LOSS_CE}, {"mse", TG_LOSS_MSE}, {NULL, 0}};
static const tg_opt_choice augments[] = {{"none", 0},
                                          {"crop", TG_AUGMENT_CROP},
                                          {"flip", TG_AUGMENT_FLIP},
                                          {"crop,flip", TG_AUGMENT_CROP | TG_AUGMENT_FLIP},
                                          {NULL, 0}};
static const tg_opt_choice decays[] = {{"all", 0}, {"matrices", 1}, {NULL, 0}};
const tg_opt_choice tg_train_precisions[] = {
    {"f32", TG_PRECISION_F32}, {"bf16", TG_PRECISION_BF16}, {NULL, 0}};
static const tg_opt_choice grad_dtypes[] = {{"f32", TG_F32}, {"bf16", TG_BF16}, {NULL, 0}};
const tg_opt_choice tg_train_devices[] = {{"cpu", TG_DEVICE_CPU}, {"cuda", TG_DEVICE_CUDA}, {NULL, 0}};

#define CFG(m) offsetof(train_args, cfg.m)
#define OPT(m) offsetof(train_args, o.m)
#define ARG(m) offsetof(train_args, m)
#define NOWHERE TG_OPT_NOWHERE
#define BIG 9.3e18 /* an integer bound: no cap */
#define SAVED TG_OPT_SAVED
#define INI TG_OPT_INI

const tg_opt tg_train_options[] = {
    /* name, alias, type, arg, member, lo, hi, choices, unset, flags, group, help */
    {"model", 0, TG_OPT_STR, "NAME|FILE", OPT(model), 0, 0, NULL, NULL, SAVED | TG_OPT_EARLY,
     "model and data",
     "a shipped model (mlp, cnn, cnn-bn, resnet20, resnet18, gpt) or a model file (a path such as "
     "./net.ini; docs/MODELS.md); model files other than mlp, cnn and cnn-bn start from the "
     "mlp's defaults; with --resume and no --model: the checkpoint's model"},
    {"data", 0, TG_OPT_STR, "FILE.h5", CFG(data_path), 0, 0, NULL,
     "the Fashion-MNIST cache file", SAVED, NULL,
     "a dataset with the splits of --train-split and --test-split; checkpoints record its "
     "absolute path, size and SHA-256"},
    {"idx-dir", 0, TG_OPT_STR, "DIR", OPT(idx_dir), 0, 0, NULL, NULL, SAVED, NULL,
     "where the Fashion-MNIST IDX files are, read when --data is not given"},
    {"train-split", 0, TG_OPT_STR, "NAME", CFG(train_split), 0, 0, NULL, NULL, SAVED, NULL,
     "the split of --data that trains"},
    {"test-split", 0, TG_OPT_STR, "NAME", CFG(test_split), 0, 0, NULL, NULL, SAVED, NULL,
     "the split of --data that evaluates after every epoch (with --val-split or "
     "--val-fraction: once, at the end)"},
    {"val-split", 0, TG_OPT_STR, "NAME", CFG(val_split), 0, 0, NULL, "none", SAVED, NULL,
     "a split of --data evaluated after every epoch (val_loss, val_acc); the test split is then "
     "scored only at the end"},
    {"val-fraction", 0, TG_OPT_F64, "F", CFG(val_fraction), 0.0001, 0.9999, NULL, "none", SAVED,
     NULL,
     "hold out round(F x N) samples of the training split as the validation set instead: the "
     "same samples for a seed whatever the number of ranks, never trained on"},
    {"augment", 0, TG_OPT_CHOICE, "LIST", CFG(augment), 0, 0, augments, NULL, SAVED, NULL,
     "augment the training split's images (C, H, W) on the loader's thread: crop takes a "
     "random window of the image padded with --augment-pad zeros on each side, flip mirrors it "
     "left-right with probability 1/2; drawn from (seed, epoch, sample index)"},
    {"augment-pad", 0, TG_OPT_INT, "N", CFG(augment_pad), 0, TG_AUGMENT_MAX_PAD, NULL, NULL,
     SAVED, NULL, "the random crop's padding in pixels on each side"},

    /* Token data (language models), one block. */
    {"block-size", 0, TG_OPT_I64, "N", CFG(block_size), 1, 1 << 20, NULL,
     STR(TG_DATASET_DEFAULT_BLOCK), SAVED, NULL,
     "token data (convert text): a sample is a window of N+1 tokens, the first N the input and "
     "the last N the next-token targets"},
    {"steps-per-epoch", 0, TG_OPT_I64, "N", CFG(steps_per_epoch), 1, 1 << 20, NULL,
     "the training split's tokens / (batch size x block size)", SAVED, NULL,
     "token data: the optimizer steps between two evaluations (an epoch); training windows are "
     "drawn at random, with replacement, from (seed, step), so with --max-steps this is "
     "nanoGPT's eval interval"},

    {"epochs", 0, TG_OPT_I64, "N", CFG(epochs), 1, 100000, NULL, NULL, SAVED | TG_OPT_PER_MODEL,
     "training (defaults per model below)", "epochs over the training split"},
    {"batch-size", 0, TG_OPT_I64, "N", CFG(batch_size), 1, 1 << 20, NULL, NULL,
     SAVED | TG_OPT_PER_MODEL, NULL, "global batch size"},
    {"accum-steps", 0, TG_OPT_I64, "N", CFG(accum_steps), 1, 1 << 20, NULL, NULL, SAVED, NULL,
     "cut each rank's share of a batch into N micro-batches whose gradients add up before one "
     "all-reduce and one optimizer step (memory of a batch / N)"},
    {"lr", 0, TG_OPT_F64, "X", CFG(optim.lr), 1e-12, 1e3, NULL, NULL, SAVED | TG_OPT_PER_MODEL,
     NULL, "peak learning rate"},
    {"optimizer", 0, TG_OPT_CHOICE, "NAME", CFG(optim.kind), 0, 0, optimizers, NULL,
     SAVED | TG_OPT_EARLY | TG_OPT_PER_MODEL, NULL,
     "sgd has lr " STR(TG_TRAIN_SGD_LR) ", momentum " STR(TG_TRAIN_SGD_MOMENTUM)
     ", weight decay " STR(TG_TRAIN_SGD_WEIGHT_DECAY) " unless given"},
    {"weight-decay", 0, TG_OPT_F64, "X", CFG(optim.weight_decay), 0, 10, NULL, NULL,
     SAVED | TG_OPT_PER_MODEL, NULL, "decoupled for adamw, L2 for adam and sgd"},
    {"momentum", 0, TG_OPT_F64, "X", CFG(optim.momentum), 0, 0.999999, NULL, NULL,
     SAVED | TG_OPT_NO_DEFAULT, NULL,
     "sgd momentum (default: " STR(TG_TRAIN_SGD_MOMENTUM) "; the other optimizers take only "
     "their own, 0)"},
    {"schedule", 0, TG_OPT_CHOICE, "NAME", CFG(schedule.kind), 0, 0, schedules, NULL, SAVED,
     NULL, "cosine decays to 0 over the run"},
    {"warmup", 0, TG_OPT_I64, "N", CFG(schedule.warmup_steps), 0, BIG, NULL, NULL, SAVED, NULL,
     "steps of linear warm-up; longer than the run is allowed: it then ends below --lr"},
    {"loss", 0, TG_OPT_CHOICE, "NAME", CFG(loss), 0, 0, losses, NULL, SAVED, NULL,
     "auto picks mse (mean squared error) for a training split whose y is f32 regression "
     "targets (N,) or (N, K), and ce (cross-entropy) for class labels; metrics then report "
     "test_mse and test_mae instead of test_acc"},
    {"label-smoothing", 0, TG_OPT_F64, "X", CFG(label_smoothing), 0, 0.999999, NULL, NULL,
     SAVED, NULL, "in [0, 1)"},
    {"clip-grad-norm", 0, TG_OPT_F64, "X", CFG(clip_grad_norm), 0, 1e12, NULL, NULL, SAVED,
     NULL, "clip the gradients' global norm; 0 off"},
    {"max-steps", 0, TG_OPT_I64, "N", CFG(max_steps), 0, BIG, NULL, NULL, SAVED, NULL,
     "stop after N optimizer steps; 0 no cap"},
    {"seed", 0, TG_OPT_U64, "N", CFG(seed), 0, BIG, NULL, NULL, SAVED, NULL,
     "model initialisation and data order"},
    {"threads", 0, TG_OPT_INT, "N", OPT(threads), 1, 1024, NULL,
     "OMP_NUM_THREADS, else the CPUs the rank may use, divided among the ranks of a node when "
     "they all share the same CPUs",
     SAVED, NULL, "CPU threads per rank, at most the CPUs it may run on"},
    {"device", 0, TG_OPT_CHOICE, "NAME", OPT(device), 0, 0, tg_train_devices, NULL, SAVED, NULL,
     "cuda runs on the GPU of the rank's local rank"},
    {"precision", 0, TG_OPT_CHOICE, "NAME", OPT(precision), 0, 0, tg_train_precisions, NULL, SAVED, NULL,
     "with bf16, matrix products and convolutions round their operands to bf16 and accumulate in "
     "f32 (autocast); parameters, optimizer state, gradients, norms and the loss stay f32"},
    {"grad-dtype", 0, TG_OPT_CHOICE, "NAME", OPT(grad_dtype), 0, 0, grad_dtypes, NULL, SAVED,
     NULL,
     "with bf16, gradients are summed over the ranks in bf16 (half the bytes), then averaged in f32; "
     "not with --zero 1"},

    /* ---- the gpt model (docs/MODELS.md) ---- */
    {"n-layer", 0, TG_OPT_INT, "N", OPT(gpt_n_layer), 1, 256, NULL, NULL, SAVED,
     "gpt (--model gpt; docs/MODELS.md)", "transformer blocks"},
    {"n-head", 0, TG_OPT_INT, "N", OPT(gpt_n_head), 1, 1024, NULL, NULL, SAVED, NULL,
     "attention heads per block (they must divide --n-embd)"},
    {"n-embd", 0, TG_OPT_I64, "N", OPT(gpt_n_embd), 1, 1 << 16, NULL, NULL, SAVED, NULL,
     "the width of the residual stream"},
    {"dropout", 0, TG_OPT_F64, "P", OPT(gpt_dropout), 0, 0.999999, NULL, NULL, SAVED, NULL,
     "dropout after the embeddings, each attention and each MLP"},
    {"decay", 0, TG_OPT_CHOICE, "RULE", OPT(decay), 0, 0, decays, NULL, SAVED | TG_OPT_PER_MODEL,
     NULL,
     "which parameters --weight-decay applies to: all, or matrices (not biases, norm weights "
     "and embeddings, as nanoGPT and llm.c; the gpt's default)"},

    {"comm-timeout", 0, TG_OPT_F64, "S", OPT(comm_timeout), 0.01, 1e6, NULL, "300", SAVED,
     "data-parallel (under mpirun -np N or srun; alone it is a world of one)",
     "seconds any collective may take before the run fails with exit code 4"},
    {"bucket-mb", 0, TG_OPT_F64, "X", OPT(bucket_mb), 0.001, 4096, NULL,
     "half the model's gradients, 1 to 25", SAVED, NULL,
     "gradient all-reduce bucket size in MiB"},
    {"first-bucket-mb", 0, TG_OPT_F64, "X", OPT(first_bucket_mb), 0.001, 4096, NULL,
     "a quarter of the model's gradients, 0.0625 to 1", SAVED, NULL,
     "the first bucket's, which starts first"},
    {"trace", 0, TG_OPT_STR, "FILE.json", OPT(trace), 0, 0, NULL, "off", SAVED, NULL,
     "write a Chrome trace per rank to FILE.rank<r>.json: forward, backward, each bucket's "
     "all-reduce, optimizer"},
    {"check-replicas", 0, TG_OPT_SWITCH, NULL, OPT(check_replicas), 0, 0, NULL, NULL, SAVED,
     NULL,
     "after every step, check that every rank holds bit-identical parameters (a digest "
     "all-gather; a mismatch ends the run with exit code 1)"},
    {"sync-bn", 0, TG_OPT_SWITCH, NULL, OPT(sync_bn), 0, 0, NULL, NULL, SAVED, NULL,
     "SyncBatchNorm (models with batch norm: cnn-bn, resnet20, resnet18, model files): "
     "batch-norm statistics, and their gradients, over the global "
     "batch of all ranks, so N ranks train as 1 rank (4 small all-reduces per layer and step)"},
    {"zero", 0, TG_OPT_INT, "N", OPT(zero), 0, 1, NULL, NULL, SAVED, NULL,
     "1: ZeRO stage 1: each rank keeps the optimizer state of 1/N of the parameters "
     "(gradients reduce-scattered, parameters all-gathered after the step); the same "
     "trajectory and checkpoints as without it; 0 off"},

    {"ckpt-dir", 0, TG_OPT_STR, "DIR", OPT(ckpt_dir), 0, 0, NULL, "no checkpoints", SAVED,
     "checkpoints",
     "save checkpoints in DIR (created when missing) at every epoch end, at the last step and "
     "when pre-empted"},
    {"ckpt-every", 0, TG_OPT_I64, "N", OPT(ckpt_every), 0, BIG, NULL, NULL, SAVED, NULL,
     "also every N steps; 0 only the above"},
    {"keep", 0, TG_OPT_INT, "K", OPT(keep), 0, 1000000, NULL, NULL, SAVED, NULL,
     "keep the K newest checkpoints; 0 all"},
    {"resume", 0, TG_OPT_STR, "auto|FILE", OPT(resume), 0, 0, NULL, "start afresh", INI, NULL,
     "continue from FILE, or with auto from the newest valid checkpoint of --ckpt-dir (a broken "
     "newest one is skipped with a warning). auto on a folder that holds no checkpoint at all "
     "starts afresh; on one whose checkpoints are all broken it fails (exit code 3). "
     "--max-steps counts all steps, those before the resume included. Give the options of the "
     "first run again (--config with the first run's --print-config does)."},

    {"log-every", 0, TG_OPT_I64, "N", CFG(log_every), 0, BIG, NULL, NULL, SAVED, "output",
     "a progress line every N steps; 0 none"},
    {"eval-batch-size", 0, TG_OPT_I64, "N", CFG(eval_batch_size), 1, 1 << 20, NULL, NULL, SAVED,
     NULL, "test batch size, at most the test split"},
    {"metrics", 0, TG_OPT_STR, "FILE.jsonl", OPT(metrics), 0, 0, NULL, "none", SAVED, NULL,
     "one JSON object per line: \"event\" is \"config\" (every option of --print-config, typed), "
     "\"step\" (step, epoch, loss, lr) every --log-every steps, \"epoch\" and \"end\" (epoch, "
     "step, train_loss, test_loss, test_acc, samples_per_s, seconds, eval_seconds, rss_mb, "
     "peak_rss_mb, world); each ends with \"time\" (Unix seconds); appended to on --resume"},
    {"quiet", 'q', TG_OPT_SWITCH, NULL, ARG(quiet), 0, 0, NULL, NULL, INI, NULL,
     "only the final accuracy, warnings and errors"},
    {"verbose", 'v', TG_OPT_SWITCH, NULL, ARG(verbose), 0, 0, NULL, NULL, INI, NULL,
     "plain progress lines even on a terminal (where a run started without mpirun or srun shows "
     "one progress bar with an ETA, redrawn in place; logs and launched jobs get plain lines)"},

    {"config", 0, TG_OPT_STR, "FILE.ini", NOWHERE, 0, 0, NULL, NULL, 0, "configuration",
     "read options from an INI file: one 'key = value' per line, keys as the options without "
     "'--' (batch-size or batch_size: the same key, once), in a [train] section or before any; "
     "lines of at most 4096 characters; true or false for switches; options on the command "
     "line override the file"},
    {"print-config", 0, TG_OPT_SWITCH, NULL, ARG(print_config), 0, 0, NULL, NULL, 0, NULL,
     "print every option's resolved value as a --config file and exit: "
     "'--print-config > run.ini' then '--config run.ini' repeats the run (unset options are "
     "comments)"},
    {"help", 'h', TG_OPT_SWITCH, NULL, NOWHERE, 0, 0, NULL, NULL, 0, NULL,
     "print this help and exit"},
};
const int tg_train_options_count = (int)(sizeof tg_train_options / sizeof tg_train_options[0]);
_Static_assert(sizeof tg_train_options / sizeof tg_train_options[0] <= TG_OPT_MAX,
               "raise TG_OPT_MAX");

train_args tg_train_args_defaults(tg_model_kind kind) {
    train_args a = {.cfg = tg_trainer_defaults(kind)};
    a.cfg.train_split = "train";
    a.cfg.test_split = "test";
    a.cfg.accum_steps = a.cfg.accum_steps > 1 ? a.cfg.accum_steps : 1;
    a.o.model = "mlp";
    a.o.idx_dir = TG_FMNIST_IDX_DIR;
    a.o.keep = 3;
    a.o.device = TG_DEVICE_CPU;
    a.o.gpt_n_layer = TG_GPT_N_LAYER;
    a.o.gpt_n_head = TG_GPT_N_HEAD;
    a.o.gpt_n_embd = TG_GPT_N_EMBD;
    return a;
}

/* ---- --model gpt: its training defaults and its text from the sizes ---- */

/* nanoGPT's and llm.c's recipe: AdamW with betas (0.9, 0.95), weight decay
 * 0.1 on the matrices only, warm-up then cosine, gradients clipped at 1.
 * 2000 steps in 8 epochs of 250 (an evaluation each): minutes on 2 cores for
 * the default size, whatever the corpus' length. Evaluation batches of 32
 * windows: the step arena of a batch holds every layer's activations. */
void tg_train_gpt_defaults(train_args *a) {
    a->cfg.optim = tg_optim_defaults(TG_OPTIM_ADAMW);
    a->cfg.optim.lr = 1e-3;
    a->cfg.optim.beta2 = 0.95;
    a->cfg.optim.weight_decay = 0.1;
    a->cfg.schedule.kind = TG_LR_COSINE;
    a->cfg.schedule.warmup_steps = 100;
    a->cfg.clip_grad_norm = 1.0;
    a->cfg.batch_size = 32;
    a->cfg.epochs = 8;
    a->cfg.steps_per_epoch = 250;
    a->cfg.eval_batch_size = 32;
    a->o.decay = 1;
}

static bool is_gpt(const train_args *a) { return a->o.model && !strcmp(a->o.model, "gpt"); }

/* The shipped ResNets train with He et al.'s augmentation: a random crop of
 * the image padded by 2 pixels and a horizontal flip. Without it resnet20
 * overfits Fashion-MNIST (docs/TRAINING.md, "Defaults"): 0.9287 against
 * 0.9360 with it, in the same 15 epochs. The padding of 2 is the one
 * measured on 28x28 images; CIFAR's recipe pads 32x32 images by 4
 * (docs/MODELS.md gives that command). */
void tg_train_resnet_defaults(train_args *a) {
    a->cfg.augment = TG_AUGMENT_CROP | TG_AUGMENT_FLIP;
    a->cfg.augment_pad = 2;
}

/* By its name and its text (tg_model_arg.shipped): a resumed run's
 * checkpoint carries both. */
static bool is_shipped_resnet(const train_args *a) {
    const char *n = a->o.model;
    return a->marg.shipped && n && (!strcmp(n, "resnet20") || !strcmp(n, "resnet18"));
}

/* The gpt's text for the sizes given (the shipped gpt.ini is that of the
 * defaults). */
static int gpt_text(const char *cmd, train_args *a) {
    const train_opts *o = &a->o;
    if (o->gpt_n_embd % o->gpt_n_head)
        return tg_cli_usage_error(cmd, "--n-head %d does not divide --n-embd %lld",
                                  o->gpt_n_head, (long long)o->gpt_n_embd);
    size_t need = tg_gpt_model_text(NULL, 0, o->gpt_n_layer, o->gpt_n_head, o->gpt_n_embd, 0,
                                    o->gpt_dropout);
    char *text = need ? malloc(need) : NULL;
    if (!text)
        return tg_cli_usage_error(cmd, "--model gpt: cannot make the model's text");
    tg_gpt_model_text(text, need, o->gpt_n_layer, o->gpt_n_head, o->gpt_n_embd, 0,
                      o->gpt_dropout);
    free(a->marg.owned);
    a->marg.owned = text;
    a->marg.text = text;
    a->cfg.model_text = text;
    return 0;
}

/* The arguments a run's recorded configuration is printed from: the
 * trainer's config and the launch options (NULL: their defaults). */
static train_args recorded_args(const tg_trainer_config *c, const train_opts *o) {
    train_args a = tg_train_args_defaults(c->model);
    a.cfg = *c;
    a.cfg.train_split = c->train_split ? c->train_split : "train";
    a.cfg.test_split = c->test_split ? c->test_split : "test";
    a.cfg.accum_steps = c->accum_steps > 1 ? c->accum_steps : 1;
    if (o)
        a.o = *o;
    return a;
}

int tg_train_config_fields(const tg_trainer_config *c, const train_opts *o, tg_cfg_field *f,
                           int max) {
    train_args a = recorded_args(c, o);
    return tg_opt_fields(tg_train_options, tg_train_options_count, &a, TG_OPT_RECORD, f, max);
}

char *tg_train_config_text(const tg_trainer_config *c, const train_opts *o, char *buf,
                           size_t len) {
    train_args a = recorded_args(c, o);
    return tg_opt_text(tg_train_options, tg_train_options_count, &a, TG_OPT_RECORD, buf, len);
}

/* --optimizer's defaults: sgd brings its own lr, momentum and weight decay;
 * adam keeps the model's lr. */
static void optimizer_defaults(tg_trainer_config *c, tg_optim_kind k) {
    double lr = c->optim.lr;
    if (k == c->optim.kind)
        return;
    c->optim = tg_optim_defaults(k);
    if (k == TG_OPTIM_SGD) {
        c->optim.lr = TG_TRAIN_SGD_LR;
        c->optim.momentum = TG_TRAIN_SGD_MOMENTUM;
        c->optim.weight_decay = TG_TRAIN_SGD_WEIGHT_DECAY;
    } else {
        c->optim.lr = lr;
    }
}

int tg_train_resolve(const tg_opt_set *set, train_args *a) {
    const char *cmd = set->cmd;
    const tg_opt *rows = set->rows;
    /* --model first: a shipped name or a model file; without it, --resume's
     * checkpoint names the model, else the mlp. The model's defaults are
     * then those the other options apply onto. */
    train_args m = tg_train_args_defaults(TG_MODEL_MLP);
    tg_model_arg marg = {0};
    int mr = tg_opt_find(rows, set->n, "model");
    int code = tg_opt_apply_row(set, mr, &m);
    if (!code)
        code = tg_opt_apply_row(set, tg_opt_find(rows, set->n, "resume"), &m);
    if (!code)
        code = tg_opt_apply_row(set, tg_opt_find(rows, set->n, "ckpt-dir"), &m);
    if (code)
        return code;
    char lb[4200];
    if (tg_opt_given(set, "model"))
        code = tg_model_arg_resolve(cmd, tg_opt_label(set, mr, lb, sizeof lb), m.o.model, &marg);
    else if (m.o.resume && m.o.resume[0])
        code = tg_model_arg_from_ckpt(cmd, m.o.resume, m.o.ckpt_dir, &marg);
    if (!code && !marg.text)
        code = tg_model_arg_resolve(cmd, "--model", "mlp", &marg);
    if (code) {
        tg_model_arg_free(&marg);
        return code;
    }
    *a = tg_train_args_defaults(marg.kind != TG_MODEL_COUNT ? marg.kind : TG_MODEL_MLP);
    a->marg = marg;
    a->o.model = marg.name;
    if (marg.kind == TG_MODEL_COUNT) {
        a->cfg.model_text = marg.text;
        a->cfg.model_name = marg.name;
    }
    int r = tg_opt_find(rows, set->n, "optimizer");
    train_args k = *a;
    if ((code = tg_opt_apply_row(set, r, &k)) != 0)
        return code;
    if (is_gpt(a))
        tg_train_gpt_defaults(a);
    else if (is_shipped_resnet(a))
        tg_train_resnet_defaults(a);
    optimizer_defaults(&a->cfg, k.cfg.optim.kind);
    if ((code = tg_opt_apply(set, a)) != 0)
        return code;
    train_opts *o = &a->o;
    const char *sizes[] = {"n-layer", "n-head", "n-embd", "dropout"};
    train_args dg = tg_train_args_defaults(TG_MODEL_MLP);
    bool same[4] = {o->gpt_n_layer == dg.o.gpt_n_layer, o->gpt_n_head == dg.o.gpt_n_head,
                    o->gpt_n_embd == dg.o.gpt_n_embd, o->gpt_dropout == dg.o.gpt_dropout};
    for (int i = 0; i < 4; i++)
        if (!same[i] && !is_gpt(a))
            return tg_cli_usage_error(cmd, "--%s applies to --model gpt only", sizes[i]);
    if (is_gpt(a) && tg_opt_given(set, "model") && (code = gpt_text(cmd, a)) != 0)
        return code;
    a->cfg.decay_matrices_only = o->decay == 1;
    if (o->decay == 1 && o->zero)
        return tg_cli_usage_error(cmd, "--decay matrices does not work with --zero 1 yet (its "
                                       "shards take no parameter groups); give --decay all");
    if (o->resume && strcmp(o->resume, "auto") == 0 && !o->ckpt_dir)
        return tg_cli_usage_error(cmd, "--resume auto needs --ckpt-dir");
    /* A value that changes nothing is harmless: the defaults that
     * --print-config writes must read back. */
    train_args d = tg_train_args_defaults(a->cfg.model);
    if ((o->ckpt_every != d.o.ckpt_every || o->keep != d.o.keep) && !o->ckpt_dir)
        return tg_cli_usage_error(cmd, "--ckpt-every and --keep need --ckpt-dir");
    if (tg_opt_given(set, "momentum") && a->cfg.optim.kind != TG_OPTIM_SGD &&
        a->cfg.optim.momentum != tg_optim_defaults(a->cfg.optim.kind).momentum)
        return tg_cli_usage_error(cmd, "--momentum applies to --optimizer sgd only");
    if (a->quiet && a->verbose)
        return tg_cli_usage_error(cmd, "--quiet and --verbose exclude each other");
    if (o->sync_bn && (a->cfg.model == TG_MODEL_MLP || a->cfg.model == TG_MODEL_CNN) &&
        !a->cfg.model_text)
        return tg_cli_usage_error(cmd, "--sync-bn needs a model with batch norm, got --model %s",
                                  tg_model_name(a->cfg.model));
    if (o->grad_dtype == TG_BF16 && o->zero == 1)
        return tg_cli_usage_error(cmd, "--grad-dtype bf16 and --zero 1 exclude each other");
    if (a->cfg.val_split && a->cfg.val_fraction > 0)
        return tg_cli_usage_error(cmd, "--val-split and --val-fraction exclude each other");
    if (a->cfg.val_split && strcmp(a->cfg.val_split, a->cfg.train_split) == 0)
        return tg_cli_usage_error(cmd, "--val-split %s is the training split (--train-split); "
                                       "use --val-fraction to hold samples out of it",
                                  a->cfg.val_split);
    o->verbosity = a->quiet ? -1 : a->verbose ? 1 : 0;
    o->data = a->cfg.data_path;
    return 0;
}
