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

#include <stdlib.h>
#include <string.h>

#include "tapegrad/checkpoint.h"
#include "train.h"
#include "train_data.h"

#define MAX_TENSORS (3 * TG_PARAMS_MAX + 8)

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: tapegrad eval --ckpt FILE [options]\n"
            "\n"
            "Evaluates the parameters of a checkpoint (written by tapegrad train) on one\n"
            "split of a dataset and prints the mean cross-entropy and the accuracy. Runs\n"
            "alone or under mpirun -np N; every sample is counted once across the ranks.\n"
            "\n"
            "  --ckpt FILE           the checkpoint (required)\n"
            "  --data FILE.h5        the dataset (default: the Fashion-MNIST cache file of\n"
            "                        tapegrad train, built from %s when missing)\n"
            "  --split NAME          the split (default: test)\n"
            "  --batch-size N        global evaluation batch (default: 250)\n"
            "  --confusion           also print the confusion matrix (rows: labels,\n"
            "                        columns: predictions)\n"
            "  --threads N           CPU threads per rank (default: as for train)\n"
            "  --device NAME         cpu or cuda (the GPU of the rank's local rank;\n"
            "                        default: cpu)\n"
            "  --config FILE.ini     read these options from an INI file (keys as the\n"
            "                        options without '--', in an [eval] section or before\n"
            "                        any); the command line overrides it\n"
            "  -h, --help            print this help and exit\n"
            "\n"
            "exit codes: 0 success, 1 runtime error, 2 usage error, 3 data or checkpoint\n"
            "error (missing, not a checkpoint, corrupt, another model than the file's),\n"
            "4 lost rank\n",
            TG_FMNIST_IDX_DIR);
}

typedef struct eval_opts {
    const char *ckpt, *data, *split, *batch, *threads, *device, *config;
    bool confusion;
    tg_cli_config file; /* --config FILE: its settings, under the command line's */
} eval_opts;

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
    return TG_EXIT_OK;
}

static void print_result(const tg_eval_result *r, const double *conf, int64_t k, const char *path,
                         const char *split, int64_t step) {
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

static int evaluate(const eval_opts *o, tg_world *w, const char *data) {
    int rank = tg_world_rank(w), world = tg_world_size(w);
    int64_t batch = 250, threads = 0;
    if ((o->batch && tg_cli_parse_i64("eval", "--batch-size", o->batch, 1, 1 << 20, &batch)) ||
        (o->threads && tg_cli_parse_i64("eval", "--threads", o->threads, 1, 1024, &threads)))
        return TG_EXIT_USAGE;
    /* The same on every rank: only rank 0 warns. */
    if (threads > 0)
        threads = rank == 0 ? tg_cli_cap_threads("eval", "--threads", (int)threads)
                            : tg_cli_cap_threads_quiet((int)threads);
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = (int)threads};
    if (o->device && strcmp(o->device, "cuda") == 0) {
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
    c.data_path = data;
    c.train_split = c.test_split = o->split;
    c.batch_size = world; /* the training sampler is unused; any valid batch */
    c.eval_batch_size = batch;
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
        print_result(&r, conf, k, o->ckpt, o->split, m.step);
out:
    free(conf);
    tg_trainer_free(tr);
    tg_ckpt_meta_free(&m);
    tg_ctx_free(ctx);
    return code;
}

/* The settings of --config FILE, under the command line's (which the
 * caller applies after). Returns an exit code. */
static int apply_config(eval_opts *o) {
    static const char *const keys[] = {"ckpt", "data", "split", "batch-size", "threads", "device"};
    for (int k = 0; k < o->file.n; k++) {
        const tg_cli_setting *s = &o->file.s[k];
        const char **dst[] = {&o->ckpt, &o->data, &o->split, &o->batch, &o->threads, &o->device};
        size_t t = 0;
        while (t < sizeof keys / sizeof keys[0] && strcmp(keys[t], s->key) != 0)
            t++;
        if (t < sizeof keys / sizeof keys[0]) {
            *dst[t] = s->value;
        } else if (strcmp(s->key, "confusion") == 0) {
            bool yes = !strcmp(s->value, "true") || !strcmp(s->value, "yes") ||
                       !strcmp(s->value, "1");
            if (!yes && strcmp(s->value, "false") && strcmp(s->value, "no") &&
                strcmp(s->value, "0"))
                return tg_cli_usage_error("eval", "%s:%d: key 'confusion': expected true or "
                                          "false, got '%s'",
                                          o->file.path, s->line, s->value);
            o->confusion = yes;
        } else {
            return tg_cli_usage_error("eval",
                                      "%s:%d: unknown key '%s' (keys are the options of "
                                      "'tapegrad eval --help' without the dashes)",
                                      o->file.path, s->line, s->key);
        }
    }
    return TG_EXIT_OK;
}

static int eval_main(int argc, char **argv, eval_opts *o);

int tg_cmd_eval(int argc, char **argv) {
    eval_opts o = {.split = "test"};
    int code = eval_main(argc, argv, &o);
    tg_cli_config_free(&o.file);
    return code;
}

static int eval_main(int argc, char **argv, eval_opts *op) {
    const char *cmd = "eval";
    eval_opts o = *op;
    /* First the configuration file, so that the command line overrides it. */
    for (int i = 1; i < argc; i++) {
        if (tg_cli_is_help(argv[i])) {
            eval_usage(stdout);
            return TG_EXIT_OK;
        }
        if (tg_cli_opt(cmd, argc, argv, &i, "--config", &o.config) < 0)
            return TG_EXIT_USAGE;
    }
    if (o.config) {
        int code = tg_cli_config_read(cmd, o.config, &op->file);
        if (code)
            return code;
        o.file = op->file;
        if ((code = apply_config(&o)) != 0)
            return code;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--confusion") == 0) {
            o.confusion = true;
            continue;
        }
        const char *ignored;
        int m = tg_cli_opt(cmd, argc, argv, &i, "--config", &ignored);
        if (m == 0 && (m = tg_cli_opt(cmd, argc, argv, &i, "--device", &o.device)) == 0 &&
            (m = tg_cli_opt(cmd, argc, argv, &i, "--ckpt", &o.ckpt)) == 0 &&
            (m = tg_cli_opt(cmd, argc, argv, &i, "--data", &o.data)) == 0 &&
            (m = tg_cli_opt(cmd, argc, argv, &i, "--split", &o.split)) == 0 &&
            (m = tg_cli_opt(cmd, argc, argv, &i, "--batch-size", &o.batch)) == 0 &&
            (m = tg_cli_opt(cmd, argc, argv, &i, "--threads", &o.threads)) == 0) {
            static const char *const names[] = {"--ckpt",      "--data",    "--split",
                                                "--batch-size", "--threads", "--confusion",
                                                "--device",    "--config",  "--help"};
            return tg_cli_unknown_option(cmd, argv[i], names, sizeof names / sizeof names[0]);
        }
        if (m < 0)
            return TG_EXIT_USAGE;
    }
    if (!o.ckpt || !o.ckpt[0])
        return tg_cli_usage_error(cmd, "--ckpt FILE is required");
    if (!o.split[0])
        return tg_cli_usage_error(cmd, "--split: empty name");
    if (o.device && strcmp(o.device, "cpu") != 0 && strcmp(o.device, "cuda") != 0)
        return tg_cli_usage_error(cmd, "--device: expected cpu or cuda, got '%s'", o.device);
    char err[512];
    tg_world *w;
    if (tg_world_init(NULL, NULL, NULL, &w, err, sizeof err) != TG_OK) {
        fprintf(stderr, "tapegrad eval: %s\n", err);
        return TG_EXIT_LOST_RANK;
    }
    int code = tg_cli_check_launch(cmd, tg_world_size(w));
    if (code) {
        tg_world_free(w);
        return code;
    }
    char cache[4096];
    const char *data;
    code = tg_train_find_data(cmd, o.data, TG_FMNIST_IDX_DIR, w, cache, sizeof cache, &data);
    if (code == TG_EXIT_OK)
        code = evaluate(&o, w, data);
    tg_world_free(w);
    return code;
}
