/*
 * launch/cmd_train.c: `tapegrad train`, the options, the data, the output.
 *
 * The training loop itself is the library's (runtime/trainer.c); this file
 * resolves the options onto the model's defaults, finds or builds the
 * dataset, prints progress and writes the JSONL metrics from the trainer's
 * events, and turns statuses into exit codes.
 */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tapegrad/trainer.h"
#include "train_data.h"

/* Settings for SGD when --optimizer sgd is chosen without --lr etc. */
#define SGD_LR 0.05
#define SGD_MOMENTUM 0.9
#define SGD_WEIGHT_DECAY 5e-4

static const char *optim_name(tg_optim_kind k) {
    return k == TG_OPTIM_SGD ? "sgd" : k == TG_OPTIM_ADAM ? "adam" : "adamw";
}

static const char *sched_name(tg_lr_kind k) {
    return k == TG_LR_COSINE ? "cosine" : k == TG_LR_STEP ? "step" : "constant";
}

static void train_usage(FILE *f) {
    tg_trainer_config d = tg_trainer_defaults(TG_MODEL_MLP);
    fprintf(f,
            "usage: tapegrad train [options]\n"
            "\n"
            "Trains an image classifier and reports its accuracy on the test split after\n"
            "every epoch. With no options: the mlp model on Fashion-MNIST, read from the\n"
            "Debian package dataset-fashion-mnist and converted on first use to\n"
            "$XDG_CACHE_HOME/tapegrad/%s (default ~/.cache/tapegrad/).\n"
            "\n"
            "model and data:\n"
            "  --model NAME          mlp, cnn or cnn-bn (default: mlp)\n"
            "  --data FILE.h5        a dataset with splits 'train' and 'test' (default: the\n"
            "                        Fashion-MNIST cache file)\n"
            "  --idx-dir DIR         where the Fashion-MNIST IDX files are (default:\n"
            "                        %s)\n"
            "\n"
            "training (defaults per model below):\n"
            "  --epochs N            epochs over the training split\n"
            "  --batch-size N        global batch size\n"
            "  --lr X                peak learning rate\n"
            "  --optimizer NAME      adamw, adam or sgd (sgd: lr %g, momentum %g, weight\n"
            "                        decay %g unless given)\n"
            "  --weight-decay X      decoupled for adamw, L2 for adam and sgd\n"
            "  --momentum X          sgd momentum\n"
            "  --schedule NAME       cosine (to 0 over the run) or constant (default: %s)\n"
            "  --warmup N            steps of linear warm-up (default: %lld)\n"
            "  --label-smoothing X   in [0, 1) (default: %g)\n"
            "  --clip-grad-norm X    clip the gradients' global norm; 0 off (default: %g)\n"
            "  --max-steps N         stop after N optimizer steps; 0 no cap (default: 0)\n"
            "  --seed N              model initialisation and data order (default: %llu)\n"
            "  --threads N           CPU threads (default: the OpenMP default, all cores\n"
            "                        or OMP_NUM_THREADS)\n"
            "\n"
            "output:\n"
            "  --log-every N         a progress line every N steps; 0 none (default: %lld)\n"
            "  --eval-batch-size N   test batch size (default: %lld)\n"
            "  --metrics FILE.jsonl  one JSON object per line: \"event\" is \"step\" (step,\n"
            "                        epoch, loss, lr) every --log-every steps, \"epoch\" and\n"
            "                        \"end\" (epoch, step, train_loss, test_loss, test_acc,\n"
            "                        samples_per_s, seconds, eval_seconds, rss_mb, peak_rss_mb)\n"
            "  -h, --help            print this help and exit\n"
            "\n"
            "per-model defaults:\n"
            "  model   epochs  batch  optimizer  lr      weight decay\n",
            TG_FMNIST_CACHE_NAME, TG_FMNIST_IDX_DIR, SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY,
            sched_name(d.schedule.kind), (long long)d.schedule.warmup_steps, d.label_smoothing,
            d.clip_grad_norm, (unsigned long long)d.seed, (long long)d.log_every,
            (long long)d.eval_batch_size);
    for (int k = 0; k < TG_MODEL_COUNT; k++) {
        tg_trainer_config c = tg_trainer_defaults((tg_model_kind)k);
        fprintf(f, "  %-7s %-7lld %-6lld %-10s %-7g %g\n", tg_model_name(c.model),
                (long long)c.epochs, (long long)c.batch_size, optim_name(c.optim.kind),
                c.optim.lr, c.optim.weight_decay);
    }
    fprintf(f, "\n"
               "exit codes: 0 success, 1 runtime error, 2 usage error, 3 data error\n");
}

/* Everything the options decide besides the trainer config. */
typedef struct train_opts {
    const char *data;
    const char *idx_dir;
    const char *metrics;
    int threads;
} train_opts;

/* Values given on the command line, applied onto the model's defaults once
 * every option is read (so that the order of the options does not matter). */
typedef struct given {
    const char *model, *optimizer, *schedule;
    const char *epochs, *batch, *eval_batch, *lr, *wd, *momentum, *warmup, *smoothing, *clip,
        *max_steps, *seed, *threads, *log_every;
} given;

static int collect(int argc, char **argv, given *g, train_opts *o) {
    const char *cmd = "train";
    struct {
        const char *flag;
        const char **dst;
    } table[] = {
        {"--model", &g->model},
        {"--data", &o->data},
        {"--idx-dir", &o->idx_dir},
        {"--epochs", &g->epochs},
        {"--batch-size", &g->batch},
        {"--eval-batch-size", &g->eval_batch},
        {"--lr", &g->lr},
        {"--optimizer", &g->optimizer},
        {"--weight-decay", &g->wd},
        {"--momentum", &g->momentum},
        {"--schedule", &g->schedule},
        {"--warmup", &g->warmup},
        {"--label-smoothing", &g->smoothing},
        {"--clip-grad-norm", &g->clip},
        {"--max-steps", &g->max_steps},
        {"--seed", &g->seed},
        {"--threads", &g->threads},
        {"--log-every", &g->log_every},
        {"--metrics", &o->metrics},
    };
    for (int i = 1; i < argc; i++) {
        if (tg_cli_is_help(argv[i])) {
            train_usage(stdout);
            return -1;
        }
        size_t t = 0, nt = sizeof(table) / sizeof(table[0]);
        int m = 0;
        for (; t < nt; t++)
            if ((m = tg_cli_opt(cmd, argc, argv, &i, table[t].flag, table[t].dst)) != 0)
                break;
        if (m < 0)
            return TG_EXIT_USAGE;
        if (t == nt)
            return tg_cli_usage_error(cmd, "unknown option '%s'", argv[i]);
    }
    return 0;
}

static int parse_i(const char *flag, const char *v, int64_t lo, int64_t hi, int64_t *out) {
    return v ? tg_cli_parse_i64("train", flag, v, lo, hi, out) : 0;
}

static int parse_d(const char *flag, const char *v, double lo, double hi, double *out) {
    return v ? tg_cli_parse_f64("train", flag, v, lo, hi, out) : 0;
}

/* Resolves the given values into cfg (starting from the model's defaults). */
static int resolve(const given *g, tg_trainer_config *cfg, train_opts *o) {
    const char *cmd = "train";
    tg_model_kind kind = TG_MODEL_MLP;
    if (g->model && !tg_model_from_name(g->model, &kind))
        return tg_cli_usage_error(cmd, "--model: expected mlp, cnn or cnn-bn, got '%s'",
                                  g->model);
    *cfg = tg_trainer_defaults(kind);
    if (g->optimizer) {
        if (strcmp(g->optimizer, "sgd") == 0) {
            cfg->optim = tg_optim_defaults(TG_OPTIM_SGD);
            cfg->optim.lr = SGD_LR;
            cfg->optim.momentum = SGD_MOMENTUM;
            cfg->optim.weight_decay = SGD_WEIGHT_DECAY;
        } else if (strcmp(g->optimizer, "adam") == 0) {
            double lr = cfg->optim.lr;
            cfg->optim = tg_optim_defaults(TG_OPTIM_ADAM);
            cfg->optim.lr = lr;
        } else if (strcmp(g->optimizer, "adamw") != 0) {
            return tg_cli_usage_error(cmd, "--optimizer: expected adamw, adam or sgd, got '%s'",
                                      g->optimizer);
        }
    }
    if (g->schedule) {
        if (strcmp(g->schedule, "cosine") == 0)
            cfg->schedule.kind = TG_LR_COSINE;
        else if (strcmp(g->schedule, "constant") == 0)
            cfg->schedule.kind = TG_LR_CONSTANT;
        else
            return tg_cli_usage_error(cmd, "--schedule: expected cosine or constant, got '%s'",
                                      g->schedule);
    }
    int64_t seed = (int64_t)cfg->seed, threads = 0;
    if (parse_i("--epochs", g->epochs, 1, 100000, &cfg->epochs) ||
        parse_i("--batch-size", g->batch, 1, 1 << 20, &cfg->batch_size) ||
        parse_i("--eval-batch-size", g->eval_batch, 1, 1 << 20, &cfg->eval_batch_size) ||
        parse_i("--warmup", g->warmup, 0, INT64_MAX, &cfg->schedule.warmup_steps) ||
        parse_i("--max-steps", g->max_steps, 0, INT64_MAX, &cfg->max_steps) ||
        parse_i("--seed", g->seed, 0, INT64_MAX, &seed) ||
        parse_i("--threads", g->threads, 1, 1024, &threads) ||
        parse_i("--log-every", g->log_every, 0, INT64_MAX, &cfg->log_every) ||
        parse_d("--lr", g->lr, 1e-12, 1e3, &cfg->optim.lr) ||
        parse_d("--weight-decay", g->wd, 0, 10, &cfg->optim.weight_decay) ||
        parse_d("--momentum", g->momentum, 0, 0.999999, &cfg->optim.momentum) ||
        parse_d("--label-smoothing", g->smoothing, 0, 0.999999, &cfg->label_smoothing) ||
        parse_d("--clip-grad-norm", g->clip, 0, 1e12, &cfg->clip_grad_norm))
        return TG_EXIT_USAGE;
    if (g->momentum && cfg->optim.kind != TG_OPTIM_SGD)
        return tg_cli_usage_error(cmd, "--momentum applies to --optimizer sgd only");
    cfg->seed = (uint64_t)seed;
    o->threads = (int)threads;
    if (o->data && !o->data[0])
        return tg_cli_usage_error(cmd, "--data: empty file name");
    if (o->metrics && !o->metrics[0])
        return tg_cli_usage_error(cmd, "--metrics: empty file name");
    return 0;
}

/* ---- progress and metrics ---- */

typedef struct printer {
    FILE *metrics;
    const char *metrics_path;
    bool write_failed;
} printer;

/* VmRSS and VmHWM of this process in MiB (-1 when unknown). */
static void rss_mb(double *rss, double *peak) {
    *rss = *peak = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long long kb;
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
            *rss = (double)kb / 1024.0;
        else if (sscanf(line, "VmHWM: %lld kB", &kb) == 1)
            *peak = (double)kb / 1024.0;
    }
    fclose(f);
}

static void write_metrics(printer *p, const tg_trainer_event *ev, double rss, double peak) {
    if (!p->metrics || p->write_failed)
        return;
    int r;
    if (ev->kind == TG_EVENT_STEP)
        r = fprintf(p->metrics,
                    "{\"event\":\"step\",\"step\":%lld,\"epoch\":%lld,\"loss\":%.9g,\"lr\":%.9g}\n",
                    (long long)ev->step, (long long)ev->epoch, ev->loss, ev->lr);
    else
        r = fprintf(p->metrics,
                    "{\"event\":\"%s\",\"epoch\":%lld,\"step\":%lld,\"train_loss\":%.9g,"
                    "\"test_loss\":%.9g,\"test_acc\":%.9g,\"samples_per_s\":%.1f,"
                    "\"seconds\":%.3f,\"eval_seconds\":%.3f,\"rss_mb\":%.1f,"
                    "\"peak_rss_mb\":%.1f}\n",
                    ev->kind == TG_EVENT_END ? "end" : "epoch", (long long)ev->epoch,
                    (long long)ev->step, ev->train_loss, ev->eval.loss, ev->eval.accuracy,
                    ev->samples_per_s, ev->seconds, ev->eval.seconds, rss, peak);
    if (r < 0 || fflush(p->metrics) != 0)
        p->write_failed = true;
}

static tg_status on_event(tg_trainer *tr, const tg_trainer_event *ev, bool *stop, void *user) {
    (void)stop;
    printer *p = user;
    if (tg_trainer_get_config(tr)->rank != 0)
        return TG_OK;
    double rss = -1, peak = -1;
    if (ev->kind != TG_EVENT_STEP)
        rss_mb(&rss, &peak);
    write_metrics(p, ev, rss, peak);
    switch (ev->kind) {
    case TG_EVENT_STEP:
        printf("epoch %lld/%lld  step %lld/%lld  loss %.4f  lr %.3g  %.0f samples/s\n",
               (long long)ev->epoch, (long long)ev->epochs, (long long)ev->step_in_epoch,
               (long long)ev->steps_per_epoch, ev->loss, ev->lr, ev->samples_per_s);
        break;
    case TG_EVENT_EPOCH:
        printf("epoch %lld/%lld done: train_loss %.4f  test_loss %.4f  test_acc %.4f  "
               "(%.1f s, %.0f samples/s, eval %.1f s, rss %.0f MiB)\n",
               (long long)ev->epoch, (long long)ev->epochs, ev->train_loss, ev->eval.loss,
               ev->eval.accuracy, ev->seconds, ev->samples_per_s, ev->eval.seconds, rss);
        break;
    case TG_EVENT_END:
        printf("test accuracy: %.4f (test_loss %.4f, %lld steps, %.1f s)\n", ev->eval.accuracy,
               ev->eval.loss, (long long)ev->step, ev->seconds);
        break;
    }
    fflush(stdout);
    return TG_OK;
}

static void print_header(tg_trainer *tr, const char *data, int threads) {
    const tg_trainer_config *c = tg_trainer_get_config(tr);
    printf("model %s (%lld parameters), data %s (%lld train / %lld test)\n",
           tg_model_name(c->model), (long long)tg_params_numel(tg_trainer_params(tr)), data,
           (long long)tg_trainer_train_len(tr), (long long)tg_trainer_test_len(tr));
    char th[32] = "the OpenMP default";
    if (threads > 0)
        snprintf(th, sizeof th, "%d", threads);
    printf("%lld steps (%lld per epoch), batch %lld, %s lr %g weight_decay %g %s, seed %llu, "
           "threads %s\n",
           (long long)tg_trainer_total_steps(tr), (long long)tg_trainer_steps_per_epoch(tr),
           (long long)c->batch_size, optim_name(c->optim.kind), c->optim.lr,
           c->optim.weight_decay, sched_name(c->schedule.kind), (unsigned long long)c->seed, th);
    fflush(stdout);
}

static int fail_ctx(tg_ctx *ctx, tg_status s) {
    fprintf(stderr, "tapegrad train: %s\n", tg_ctx_error(ctx));
    return s == TG_ERR_INVALID ? TG_EXIT_RUNTIME : tg_cli_exit_for_status(s);
}

static int run(tg_trainer_config *cfg, const train_opts *o, const char *data) {
    printer p = {.metrics_path = o->metrics};
    if (o->metrics && !(p.metrics = fopen(o->metrics, "w"))) {
        return tg_cli_usage_error("train", "--metrics: cannot create '%s': %s", o->metrics,
                                  strerror(errno));
    }
    cfg->data_path = data;
    cfg->hooks.on_event = on_event;
    cfg->hooks.user = &p;
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = o->threads};
    tg_ctx *ctx;
    int code = TG_EXIT_OK;
    tg_status s = tg_ctx_new(&cc, &ctx);
    if (s) {
        fprintf(stderr, "tapegrad train: %s\n", tg_last_init_error());
        code = TG_EXIT_RUNTIME;
        goto out;
    }
    tg_trainer *tr;
    if ((s = tg_trainer_new(ctx, cfg, &tr)) != TG_OK) {
        code = fail_ctx(ctx, s);
    } else {
        print_header(tr, data, o->threads);
        if ((s = tg_trainer_run(tr)) != TG_OK)
            code = fail_ctx(ctx, s);
        tg_trainer_free(tr);
    }
    tg_ctx_free(ctx);
out:
    if (p.metrics && (fclose(p.metrics) != 0 || p.write_failed)) {
        fprintf(stderr, "tapegrad train: writing %s failed\n", o->metrics);
        if (code == TG_EXIT_OK)
            code = TG_EXIT_RUNTIME;
    }
    return code;
}

int tg_cmd_train(int argc, char **argv) {
    given g = {0};
    train_opts o = {.idx_dir = TG_FMNIST_IDX_DIR};
    int code = collect(argc, argv, &g, &o);
    if (code < 0)
        return TG_EXIT_OK; /* --help */
    if (code)
        return code;
    tg_trainer_config cfg;
    if ((code = resolve(&g, &cfg, &o)) != 0)
        return code;

    char cache[4096];
    const char *data = o.data;
    if (data) {
        struct stat st;
        if (stat(data, &st) != 0) {
            fprintf(stderr, "tapegrad train: %s: %s\n", data, strerror(errno));
            return TG_EXIT_DATA;
        }
    } else {
        if ((code = tg_fmnist_cache(o.idx_dir, cache, sizeof cache)) != 0)
            return code;
        data = cache;
    }
    return run(&cfg, &o, data);
}
