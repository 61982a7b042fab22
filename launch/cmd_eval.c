/*
 * launch/cmd_eval.c: `tapegrad eval --ckpt FILE`, a checkpoint's loss and
 * accuracy on one split of a dataset.
 *
 * The model is the one the checkpoint names, built by the trainer with the
 * evaluated split as both of its splits, and filled from the file. Under
 * mpirun each rank evaluates its part of the split (every sample once across
 * the ranks) and the sums are all-reduced; rank 0 prints.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tapegrad/checkpoint.h"
#include "tapegrad/datasets.h"
#include "options.h"
#include "train.h"
#include "train_data.h"

#define MAX_TENSORS (3 * TG_PARAMS_MAX + 8)

/* Every value of eval's options (the base of its option table). */
typedef struct eval_opts {
    const char *ckpt, *data, *split;
    int64_t batch;
    int threads;
    tg_device device;
    tg_precision precision;
    bool confusion, print_config;
    bool split_given; /* --split was given (not a row: set after reading) */
} eval_opts;

#define EV(m) offsetof(eval_opts, m)

/* eval's options, one row each (launch/options.h; how to add one is said
 * at train's table, launch/train_opts.c). */
const tg_opt tg_eval_options[] = {
    {"ckpt", 0, TG_OPT_STR, "FILE", EV(ckpt), 0, 0, NULL, "required", TG_OPT_INI | TG_OPT_NO_DEFAULT,
     "options",
     "the checkpoint (required)"},
    {"data", 0, TG_OPT_STR, "FILE.h5", EV(data), 0, 0, NULL,
     "the dataset the checkpoint records, else the Fashion-MNIST cache file of tapegrad train, "
     "built from " TG_FMNIST_IDX_DIR " when missing",
     TG_OPT_INI, NULL,
     "the dataset; without it, the one the checkpoint was trained on, with a warning when that "
     "file's SHA-256 differs from the recorded one, and an error when it is gone"},
    {"split", 0, TG_OPT_STR, "NAME", EV(split), 0, 0, NULL, NULL, TG_OPT_INI, NULL, "the split"},
    {"batch-size", 0, TG_OPT_I64, "N", EV(batch), 1, 1 << 20, NULL, NULL, TG_OPT_INI, NULL,
     "global evaluation batch"},
    {"confusion", 0, TG_OPT_SWITCH, NULL, EV(confusion), 0, 0, NULL, NULL, TG_OPT_INI, NULL,
     "also print the confusion matrix (rows: labels, columns: predictions)"},
    {"threads", 0, TG_OPT_INT, "N", EV(threads), 1, 1024, NULL, "as for train", TG_OPT_INI, NULL,
     "CPU threads per rank"},
    {"device", 0, TG_OPT_CHOICE, "NAME", EV(device), 0, 0, tg_train_devices, NULL, TG_OPT_INI,
     NULL, "cuda runs on the GPU of the rank's local rank"},
    {"precision", 0, TG_OPT_CHOICE, "NAME", EV(precision), 0, 0, tg_train_precisions, NULL,
     TG_OPT_INI, NULL,
     "with bf16, matrix products and convolutions round their operands to bf16 (as train's "
     "--precision; a checkpoint trained in bf16 evaluates in f32 unless asked)"},
    {"config", 0, TG_OPT_STR, "FILE.ini", TG_OPT_NOWHERE, 0, 0, NULL, NULL, 0, NULL,
     "read these options from an INI file (keys as the options without '--', in an [eval] "
     "section or before any); the command line overrides it"},
    {"print-config", 0, TG_OPT_SWITCH, NULL, EV(print_config), 0, 0, NULL, NULL, 0, NULL,
     "print every option's resolved value as a --config file and exit"},
    {"help", 'h', TG_OPT_SWITCH, NULL, TG_OPT_NOWHERE, 0, 0, NULL, NULL, 0, NULL,
     "print this help and exit"},
};
#define EVAL_NOPTS ((int)(sizeof tg_eval_options / sizeof tg_eval_options[0]))
const int tg_eval_options_count = EVAL_NOPTS;

static const eval_opts eval_defaults = {.split = "test", .batch = 250};

static void eval_usage(FILE *f) {
    fprintf(f, "usage: tapegrad eval --ckpt FILE [options]\n"
               "\n"
               "Evaluates the parameters of a checkpoint (written by tapegrad train) on one\n"
               "split of a dataset and prints the mean cross-entropy and the accuracy (a\n"
               "language model: also the perplexity and bits per byte; a regression model:\n"
               "the MSE and MAE instead). Runs alone or under mpirun -np N; every sample is\n"
               "counted once across the ranks.\n"
               "\n");
    tg_opt_help(f, tg_eval_options, EVAL_NOPTS, &eval_defaults);
    fprintf(f, "\n"
               "exit codes: 0 success, 1 runtime error, 2 usage error, 3 data or checkpoint\n"
               "error (missing, not a checkpoint, corrupt, another model than the file's, the\n"
               "recorded dataset gone), 4 lost rank\n");
}

typedef struct eval_run {
    tg_world *w;
    char err[1024];
} eval_run;

static tg_status allreduce_sum(tg_trainer *tr, double *vals, int n, void *user) {
    (void)tr;
    eval_run *er = user;
    if (tg_world_size(er->w) == 1)
        return TG_OK;
    tg_status s = tg_metrics_allreduce(er->w, n, vals);
    if (s)
        snprintf(er->err, sizeof er->err, "%s", tg_world_error(er->w));
    return s;
}

/* The value of "key = value" in the checkpoint's configuration text. */
static bool config_value(const char *text, const char *key, char *out, size_t len) {
    size_t kl = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, key, kl) == 0 && strncmp(l + kl, " = ", 3) == 0) {
            const char *v = l + kl + 3;
            size_t n = strcspn(v, "\n");
            snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), v);
            return true;
        }
    }
    return false;
}

/* The trainer config of the checkpoint's model and optimizer (the optimizer
 * decides which state tensors the file holds). */
static int config_from_meta(const tg_ckpt_meta *m, const char *path, tg_trainer_config *c) {
    tg_model_kind kind = TG_MODEL_MLP;
    /* A checkpoint that stores its model file is rebuilt from it; an older
     * one names a built-in model. */
    if (!m->model_text && !tg_model_from_name(m->model, &kind)) {
        fprintf(stderr, "tapegrad eval: %s: unknown model '%s'\n", path, m->model);
        return TG_EXIT_DATA;
    }
    if (m->model_text)
        (void)tg_model_from_name(m->model, &kind);
    *c = tg_trainer_defaults(kind);
    c->model_text = m->model_text;
    c->model_name = m->model;
    char v[64];
    if (m->config && config_value(m->config, "optimizer", v, sizeof v)) {
        tg_optim_kind k = strcmp(v, "sgd") == 0    ? TG_OPTIM_SGD
                          : strcmp(v, "adam") == 0 ? TG_OPTIM_ADAM
                                                   : TG_OPTIM_ADAMW;
        double lr = c->optim.lr;
        c->optim = tg_optim_defaults(k);
        c->optim.lr = lr;
    }
    if (m->config && config_value(m->config, "momentum", v, sizeof v))
        c->optim.momentum = strtod(v, NULL);
    /* Token data: the windows the model was built for. */
    if (m->config && config_value(m->config, "block_size", v, sizeof v))
        c->block_size = strtoll(v, NULL, 10);
    return TG_EXIT_OK;
}

static void print_result(const tg_eval_result *r, const double *conf, int64_t k, const char *path,
                         const char *split, int64_t step) {
    if (r->tokens) {
        printf("%s (step %lld) on %s: loss %.6f  perplexity %.4f  bits per byte %.4f  accuracy "
               "%.6f  (%lld tokens, %.2f s)\n",
               path, (long long)step, split, r->loss, exp(r->loss), r->bits_per_byte, r->accuracy,
               (long long)r->tokens, r->seconds);
        return;
    }
    if (r->regression) {
        /* Regression targets: no accuracy and no confusion matrix. */
        printf("%s (step %lld) on %s: mse %.6f  mae %.6f  (%lld samples, %.2f s)\n", path,
               (long long)step, split, r->loss, r->mae, (long long)r->samples, r->seconds);
        return;
    }
    printf("%s (step %lld) on %s: loss %.6f  accuracy %.6f  (%lld samples, %.2f s)\n", path,
           (long long)step, split, r->loss, r->accuracy, (long long)r->samples, r->seconds);
    if (!conf)
        return;
    printf("confusion matrix (rows: label, columns: prediction)\n      ");
    for (int64_t j = 0; j < k; j++)
        printf(" %7lld", (long long)j);
    printf("\n");
    for (int64_t i = 0; i < k; i++) {
        printf("%5lld:", (long long)i);
        for (int64_t j = 0; j < k; j++)
            printf(" %7.0f", conf[i * k + j]);
        printf("\n");
    }
}


/* A recorded dataset whose bytes are no longer those the model was
 * trained on: said, then evaluated anyway (rank 0). */
static void check_digest(const char *ckpt, const tg_ckpt_meta *m) {
    tg_cli_data_record now;
    char err[4200];
    if (tg_cli_file_record(m->data_path, &now, err, sizeof err) != 0) {
        fprintf(stderr, "tapegrad eval: warning: cannot check the dataset %s recorded: %s\n",
                ckpt, err);
        return;
    }
    if (!m->data_sha256[0] || strcmp(now.sha256, m->data_sha256) == 0)
        return;
    fflush(stdout);
    fprintf(stderr,
            "tapegrad eval: warning: the dataset %s has changed since %s was written: its "
            "SHA-256 is %s (%lld bytes) now, %s (%lld bytes) when trained; evaluating the "
            "file as it is now\n",
            m->data_path, ckpt, now.sha256, (long long)now.bytes, m->data_sha256,
            (long long)m->data_bytes);
}

/* The dataset: --data, else the one the checkpoint records (which must
 * still be there), else (an older checkpoint) the Fashion-MNIST cache.
 * Returns an exit code. */
static int pick_data(const eval_opts *o, const tg_ckpt_meta *m, tg_world *w, char *cache,
                     size_t len, const char **data) {
    const char *given = o->data;
    int rank = tg_world_rank(w);
    if (!given && m->data_path) {
        struct stat sb;
        if (stat(m->data_path, &sb) != 0) {
            int e = errno;
            char who[32] = "";
            if (tg_world_size(w) > 1)
                snprintf(who, sizeof who, "rank %d: ", rank);
            fprintf(stderr,
                    "tapegrad eval: %s%s was trained on the dataset %s, which %s (%s); pass "
                    "the dataset to evaluate with --data FILE.h5\n",
                    who, o->ckpt, m->data_path, e == ENOENT ? "is gone" : "cannot be read",
                    strerror(e));
            return TG_EXIT_DATA;
        }
        given = m->data_path;
        if (rank == 0)
            check_digest(o->ckpt, m);
    }
    return tg_train_find_data("eval", given, TG_FMNIST_IDX_DIR, w, cache, len, data);
}

static int evaluate(const eval_opts *o, tg_world *w) {
    int rank = tg_world_rank(w), world = tg_world_size(w);
    int threads = o->threads;
    /* The same on every rank: only rank 0 warns. */
    if (threads > 0)
        threads = rank == 0 ? tg_cli_cap_threads("eval", "--threads", threads)
                            : tg_cli_cap_threads_quiet(threads);
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = threads};
    if (o->device == TG_DEVICE_CUDA) {
        train_opts to = {.device = TG_DEVICE_CUDA};
        char err[512];
        int code = tg_train_open_device(&to, w, err, sizeof err);
        if (code) {
            fprintf(stderr, "tapegrad eval: rank %d: %s\n", rank, err);
            return code;
        }
        cc.device = TG_DEVICE_CUDA;
    }
    if (threads == 0)
        cc.threads = tg_cli_rank_threads(tg_world_local_size(w), NULL, 0);
    int room = tg_cli_check_blas_room("eval", cc.threads);
    if (room)
        return room;
    tg_ctx *ctx;
    if (tg_ctx_new(&cc, &ctx) != TG_OK) {
        fprintf(stderr, "tapegrad eval: rank %d: %s\n", rank, tg_last_init_error());
        return TG_EXIT_RUNTIME;
    }
    if (o->precision != TG_PRECISION_F32 && tg_ctx_set_precision(ctx, o->precision) != TG_OK) {
        fprintf(stderr, "tapegrad eval: rank %d: %s\n", rank, tg_ctx_error(ctx));
        tg_ctx_free(ctx);
        return TG_EXIT_RUNTIME;
    }
    if (tg_cli_blas_warmup() != 0) {
        fprintf(stderr, "tapegrad eval: rank %d: out of memory for a first matrix product\n",
                rank);
        tg_ctx_free(ctx);
        return TG_EXIT_RUNTIME;
    }
    eval_run er = {.w = w};
    tg_ckpt_meta m = {0};
    tg_trainer *tr = NULL;
    double *conf = NULL;
    int code = TG_EXIT_OK;
    tg_status s = tg_ckpt_read_meta(ctx, o->ckpt, &m);
    if (s) {
        fprintf(stderr, "tapegrad eval: rank %d: %s\n", rank, tg_ctx_error(ctx));
        code = tg_cli_exit_for_status(s);
        goto out;
    }
    tg_trainer_config c;
    if ((code = config_from_meta(&m, o->ckpt, &c)) != 0)
        goto out;
    char cache[4096];
    const char *data;
    if ((code = pick_data(o, &m, w, cache, sizeof cache, &data)) != 0)
        goto out;
    c.data_path = data;
    c.train_split = c.test_split = o->split;
    /* Token files (convert text) hold train and val: without a test
     * split, val is the default. */
    if (!o->split_given && tg_dataset_has_split(data, o->split) == 0 &&
        tg_dataset_has_split(data, "val") == 1)
        c.train_split = c.test_split = "val";
    c.batch_size = world; /* the training sampler is unused; any valid batch */
    c.eval_batch_size = o->batch;
    c.rank = rank;
    c.world = world;
    c.hooks = (tg_trainer_hooks){
        .user = &er, .allreduce_sum = allreduce_sum, .should_stop = tg_cli_stop_requested};
    /* A stop request during the checks at open ends the command; after
     * them, nothing is left to clean up, so signals act as usual again. */
    char err[256];
    if (tg_cli_stop_signals_install(err, sizeof err) != 0) {
        fprintf(stderr, "tapegrad eval: %s\n", err);
        code = TG_EXIT_RUNTIME;
        goto out;
    }
    s = tg_trainer_new(ctx, &c, &tr);
    tg_cli_stop_signals_restore();
    if (s == TG_ERR_STOPPED || tg_cli_stop_signal()) {
        printf("stopped by a signal while opening the data\n");
        code = tg_cli_stop_exit(false);
        goto out;
    }
    if (s != TG_OK) {
        fprintf(stderr, "tapegrad eval: rank %d: %s\n", rank, tg_ctx_error(ctx));
        code = s == TG_ERR_INVALID ? TG_EXIT_DATA : tg_cli_exit_for_status(s);
        goto out;
    }
    tg_tensor *ts[MAX_TENSORS];
    const tg_params *ps = tg_trainer_params(tr);
    int n = 0;
    for (int i = 0; i < ps->nparams; i++)
        ts[n++] = ps->params[i];
    for (int i = 0; i < ps->nbuffers; i++)
        ts[n++] = ps->buffers[i];
    n += tg_optim_state(tg_trainer_optim(tr), ts + n, MAX_TENSORS - n);
    if ((s = tg_ckpt_load(ctx, o->ckpt, n, ts, NULL)) != TG_OK) {
        fprintf(stderr, "tapegrad eval: rank %d: %s\n", rank, tg_ctx_error(ctx));
        code = s == TG_ERR_NOMEM ? TG_EXIT_RUNTIME : TG_EXIT_DATA;
        goto out;
    }
    int64_t k = tg_trainer_num_classes(tr);
    if (o->confusion && !(conf = calloc((size_t)(k * k), sizeof *conf))) {
        fprintf(stderr, "tapegrad eval: out of memory\n");
        code = TG_EXIT_RUNTIME;
        goto out;
    }
    tg_eval_result r;
    if ((s = tg_trainer_evaluate_confusion(tr, &r, conf)) != TG_OK) {
        fprintf(stderr, "tapegrad eval: %s\n", er.err[0] ? er.err : tg_ctx_error(ctx));
        code = tg_cli_exit_for_status(s);
        goto out;
    }
    if (rank == 0)
        print_result(&r, conf, k, o->ckpt, c.test_split, m.step);
out:
    free(conf);
    tg_trainer_free(tr);
    tg_ckpt_meta_free(&m);
    tg_ctx_free(ctx);
    return code;
}

static int run(const eval_opts *o) {
    const char *cmd = "eval";
    if (!o->ckpt)
        return tg_cli_usage_error(cmd, "--ckpt FILE is required");
    char err[512];
    tg_world *w;
    if (tg_world_init(NULL, NULL, NULL, &w, err, sizeof err) != TG_OK) {
        fprintf(stderr, "tapegrad eval: %s\n", err);
        return TG_EXIT_LOST_RANK;
    }
    int code = tg_cli_check_launch(cmd, tg_world_size(w));
    if (code == 0)
        code = evaluate(o, w);
    tg_world_free(w);
    return code;
}

int tg_cmd_eval(int argc, char **argv) {
    tg_opt_set set;
    eval_opts o = eval_defaults;
    int code = tg_opt_read(&set, "eval", tg_eval_options, EVAL_NOPTS, argc, argv, eval_usage);
    if (code == 0 && !set.help)
        code = tg_opt_apply(&set, &o);
    o.split_given = code == 0 && tg_opt_given(&set, "split");
    if (code == 0 && !set.help && o.print_config) {
        char text[1 << 14];
        fputs(tg_opt_text(tg_eval_options, EVAL_NOPTS, &o, TG_OPT_INI, text, sizeof text), stdout);
    } else if (code == 0 && !set.help) {
        code = run(&o);
    }
    tg_opt_set_free(&set);
    return code;
}
