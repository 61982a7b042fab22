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
#include "train.h"
#include "train_data.h"

/* Settings for SGD when --optimizer sgd is chosen without --lr etc. */
#define SGD_LR 0.05
#define SGD_MOMENTUM 0.9
#define SGD_WEIGHT_DECAY 5e-4

const char *tg_train_optim_name(tg_optim_kind k) {
    return k == TG_OPTIM_SGD ? "sgd" : k == TG_OPTIM_ADAM ? "adam" : "adamw";
}

const char *tg_train_sched_name(tg_lr_kind k) {
    return k == TG_LR_COSINE ? "cosine" : k == TG_LR_STEP ? "step" : "constant";
}

#define optim_name tg_train_optim_name
#define sched_name tg_train_sched_name

int tg_train_config_fields(const tg_trainer_config *c, tg_cfg_field *f, int max) {
    const tg_cfg_field all[] = {
        {"model", TG_CFG_STR, .s = c->model_text && c->model_name ? c->model_name
                                                                 : tg_model_name(c->model)},
        {"epochs", TG_CFG_INT, .i = c->epochs},
        {"batch_size", TG_CFG_INT, .i = c->batch_size},
        {"eval_batch_size", TG_CFG_INT, .i = c->eval_batch_size},
        {"max_steps", TG_CFG_INT, .i = c->max_steps},
        {"seed", TG_CFG_U64, .u = c->seed},
        {"optimizer", TG_CFG_STR, .s = optim_name(c->optim.kind)},
        {"lr", TG_CFG_NUM, .d = c->optim.lr},
        {"weight_decay", TG_CFG_NUM, .d = c->optim.weight_decay},
        {"momentum", TG_CFG_NUM, .d = c->optim.momentum},
        {"schedule", TG_CFG_STR, .s = sched_name(c->schedule.kind)},
        {"warmup", TG_CFG_INT, .i = c->schedule.warmup_steps},
        {"accum_steps", TG_CFG_INT, .i = c->accum_steps > 1 ? c->accum_steps : 1},
        {"label_smoothing", TG_CFG_NUM, .d = c->label_smoothing},
        {"clip_grad_norm", TG_CFG_NUM, .d = c->clip_grad_norm},
        {"train_split", TG_CFG_STR, .s = c->train_split ? c->train_split : "train"},
        {"test_split", TG_CFG_STR, .s = c->test_split ? c->test_split : "test"},
    };
    int n = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < n && i < max; i++)
        f[i] = all[i];
    return n;
}

char *tg_train_config_text(const tg_trainer_config *c, char *buf, size_t len) {
    tg_cfg_field f[TG_CFG_MAX_FIELDS];
    int n = tg_train_config_fields(c, f, TG_CFG_MAX_FIELDS);
    size_t at = 0;
    if (len)
        buf[0] = 0;
    for (int i = 0; i < n && at < len; i++) {
        int w;
        switch (f[i].kind) {
        case TG_CFG_STR:
            w = snprintf(buf + at, len - at, "%s = %s\n", f[i].key, f[i].s);
            break;
        case TG_CFG_INT:
            w = snprintf(buf + at, len - at, "%s = %lld\n", f[i].key, (long long)f[i].i);
            break;
        case TG_CFG_U64:
            w = snprintf(buf + at, len - at, "%s = %llu\n", f[i].key, (unsigned long long)f[i].u);
            break;
        default:
            w = snprintf(buf + at, len - at, "%s = %.9g\n", f[i].key, f[i].d);
            break;
        }
        at += w > 0 ? (size_t)w : 0;
    }
    return buf;
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
            "  --model NAME|FILE     a shipped model: mlp, cnn, cnn-bn, resnet20, resnet18\n"
            "                        (default: mlp), or a model file (a path such as\n"
            "                        ./net.ini; docs/MODELS.md); model files other than\n"
            "                        mlp, cnn and cnn-bn start from the mlp's defaults;\n"
            "                        with --resume and no --model: the checkpoint's model\n"
            "  --data FILE.h5        a dataset with splits 'train' and 'test' (default: the\n"
            "                        Fashion-MNIST cache file)\n"
            "  --idx-dir DIR         where the Fashion-MNIST IDX files are (default:\n"
            "                        %s)\n"
            "\n"
            "training (defaults per model below):\n"
            "  --epochs N            epochs over the training split\n"
            "  --batch-size N        global batch size\n"
            "  --accum-steps N       cut each rank's share of a batch into N micro-batches\n"
            "                        whose gradients add up before one all-reduce and one\n"
            "                        optimizer step (memory of a batch / N; default: 1)\n"
            "  --lr X                peak learning rate\n"
            "  --optimizer NAME      adamw, adam or sgd (sgd: lr %g, momentum %g, weight\n"
            "                        decay %g unless given)\n"
            "  --weight-decay X      decoupled for adamw, L2 for adam and sgd\n"
            "  --momentum X          sgd momentum\n"
            "  --schedule NAME       cosine (to 0 over the run) or constant (default: %s)\n"
            "  --warmup N            steps of linear warm-up (default: %lld); longer than\n"
            "                        the run is allowed: it then ends below --lr\n"
            "  --label-smoothing X   in [0, 1) (default: %g)\n"
            "  --clip-grad-norm X    clip the gradients' global norm; 0 off (default: %g)\n"
            "  --max-steps N         stop after N optimizer steps; 0 no cap (default: 0)\n"
            "  --seed N              model initialisation and data order (default: %llu)\n"
            "  --threads N           CPU threads per rank, at most the CPUs it may run on\n"
            "                        (default: OMP_NUM_THREADS, else the CPUs the rank\n"
            "                        may use, divided among the ranks of a node when\n"
            "                        they all share the same CPUs)\n"
            "  --device NAME         cpu or cuda (cuda: the GPU of the rank's local rank;\n"
            "                        default: cpu)\n"
            "\n"
            "data-parallel (under mpirun -np N or srun; alone it is a world of one):\n"
            "  --comm-timeout S      seconds any collective may take before the run\n"
            "                        fails with exit code 4 (default: 300)\n"
            "  --bucket-mb X         gradient all-reduce bucket size in MiB (default: half\n"
            "                        the model's gradients, 1 to 25)\n"
            "  --first-bucket-mb X   the first bucket's, which starts first (default: a\n"
            "                        quarter of the model's gradients, 0.0625 to 1)\n"
            "  --trace FILE.json     write a Chrome trace per rank to FILE.rank<r>.json:\n"
            "                        forward, backward, each bucket's all-reduce, optimizer\n"
            "  --check-replicas      after every step, check that every rank holds\n"
            "                        bit-identical parameters (a digest all-gather; a\n"
            "                        mismatch ends the run with exit code 1)\n"
            "\n"
            "checkpoints:\n"
            "  --ckpt-dir DIR        save checkpoints in DIR (created when missing) at every\n"
            "                        epoch end, at the last step and when pre-empted\n"
            "  --ckpt-every N        also every N steps (default: 0, only the above)\n"
            "  --keep K              keep the K newest checkpoints; 0 all (default: 3)\n"
            "  --resume auto|FILE    continue from FILE, or with auto from the newest valid\n"
            "                        checkpoint of --ckpt-dir (a broken newest one is\n"
            "                        skipped with a warning). auto on a folder that holds no\n"
            "                        checkpoint at all starts afresh; on one whose\n"
            "                        checkpoints are all broken it fails (exit code 3).\n"
            "                        --max-steps counts all steps, those before the resume\n"
            "                        included. Give the options of the first run again.\n"
            "\n"
            "output:\n"
            "  --log-every N         a progress line every N steps; 0 none (default: %lld)\n"
            "  --eval-batch-size N   test batch size, at most the test split (default: %lld)\n"
            "  --metrics FILE.jsonl  one JSON object per line: \"event\" is \"config\" (the\n"
            "                        resolved options), \"step\" (step, epoch, loss, lr)\n"
            "                        every --log-every steps, \"epoch\" and \"end\" (epoch,\n"
            "                        step, train_loss, test_loss, test_acc, samples_per_s,\n"
            "                        seconds, eval_seconds, rss_mb, peak_rss_mb, world);\n"
            "                        each ends with \"time\" (Unix seconds); appended to\n"
            "                        on --resume\n"
            "\n"
            "configuration:\n"
            "  --config FILE.ini     read options from an INI file: one 'key = value' per\n"
            "                        line, keys as the options without '--' (batch-size or\n"
            "                        batch_size: the same key, once), in a [train]\n"
            "                        section or before any; lines of at most 4096\n"
            "                        characters; check-replicas/quiet/verbose = true\n"
            "                        for switches;\n"
            "                        options on the command line override the file\n"
            "  --print-config        print the resolved configuration and exit\n"
            "  -q, --quiet           only the final accuracy, warnings and errors\n"
            "  -v, --verbose         plain progress lines even on a terminal (where a run\n"
            "                        started without mpirun or srun shows one progress bar\n"
            "                        with an ETA, redrawn in place; logs and launched jobs\n"
            "                        get plain lines)\n"
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
                (long long)c.epochs, (long long)c.batch_size, optim_name(c.optim.kind), c.optim.lr,
                c.optim.weight_decay);
    }
    fprintf(f, "\n"
               "signals: SIGTERM, SIGUSR1 or SIGINT stop the run at the next step: rank 0\n"
               "checkpoints (with --ckpt-dir) and every rank exits 75. A second SIGINT\n"
               "exits at once (130).\n"
               "\n"
               "exit codes: 0 success, 1 runtime error, 2 usage error, 3 data or checkpoint\n"
               "error, 4 lost rank (a collective failed or timed out), 75 checkpointed after\n"
               "a signal: requeue the job (EX_TEMPFAIL)\n");
}

/* Values given on the command line, applied onto the model's defaults once
 * every option is read (so that the order of the options does not matter). */
typedef struct given {
    const char *model, *optimizer, *schedule;
    const char *epochs, *batch, *eval_batch, *lr, *wd, *momentum, *warmup, *smoothing, *clip,
        *max_steps, *seed, *threads, *log_every, *accum;
    const char *device, *comm_timeout, *bucket_mb, *first_bucket_mb, *ckpt_every, *keep;
    bool quiet, verbose;
    /* --config FILE: its settings, applied before the command line's. */
    const char *config;
    tg_cli_config file;
    bool print_config;
    tg_model_arg marg; /* what --model named (its text is kept until the end) */
} given;

/* "--lr" for a value from the command line, "run.ini:3: key 'lr'" for one
 * from the configuration file. */
#define LABEL(g, flag, v, buf) tg_cli_label(&(g)->file, (flag), (v), (buf), sizeof(buf))

/* true/false (and yes/no, 1/0) for a switch set in a configuration file. */
static int parse_switch(const given *g, const tg_cli_setting *s, bool *out) {
    const char *v = s->value;
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
        *out = false;
    else
        return tg_cli_usage_error("train", "%s:%d: key '%s': expected true or false, got '%s'",
                                  g->file.path, s->line, s->key, v);
    return 0;
}

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
        {"--accum-steps", &g->accum},
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
        {"--device", &g->device},
        {"--trace", &o->trace},
        {"--comm-timeout", &g->comm_timeout},
        {"--bucket-mb", &g->bucket_mb},
        {"--first-bucket-mb", &g->first_bucket_mb},
        {"--ckpt-dir", &o->ckpt_dir},
        {"--ckpt-every", &g->ckpt_every},
        {"--keep", &g->keep},
        {"--resume", &o->resume},
    };
    size_t nt = sizeof(table) / sizeof(table[0]);
    /* First the configuration file, so that the command line overrides it. */
    for (int i = 1; i < argc; i++) {
        if (tg_cli_is_help(argv[i])) {
            train_usage(stdout);
            return -1;
        }
        int m = tg_cli_opt(cmd, argc, argv, &i, "--config", &g->config);
        if (m < 0)
            return TG_EXIT_USAGE;
    }
    if (g->config) {
        int code = tg_cli_config_read(cmd, g->config, &g->file);
        if (code)
            return code;
    }
    for (int k = 0; k < g->file.n; k++) {
        const tg_cli_setting *s = &g->file.s[k];
        bool *sw = !strcmp(s->key, "check-replicas") ? &o->check_replicas
                   : !strcmp(s->key, "quiet")        ? &g->quiet
                   : !strcmp(s->key, "verbose")      ? &g->verbose
                                                     : NULL;
        if (sw) {
            if (parse_switch(g, s, sw))
                return TG_EXIT_USAGE;
            continue;
        }
        size_t t = 0;
        while (t < nt && strcmp(table[t].flag + 2, s->key) != 0)
            t++;
        if (t == nt)
            return tg_cli_usage_error(cmd,
                                      "%s:%d: unknown key '%s' (keys are the options of "
                                      "'tapegrad train --help' without the dashes)",
                                      g->file.path, s->line, s->key);
        *table[t].dst = s->value;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check-replicas") == 0) {
            o->check_replicas = true;
            continue;
        }
        if (strcmp(argv[i], "--print-config") == 0) {
            g->print_config = true;
            continue;
        }
        if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            g->quiet = true;
            continue;
        }
        if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
            g->verbose = true;
            continue;
        }
        const char *ignored;
        int m = tg_cli_opt(cmd, argc, argv, &i, "--config", &ignored);
        for (size_t t = 0; m == 0 && t < nt; t++)
            if ((m = tg_cli_opt(cmd, argc, argv, &i, table[t].flag, table[t].dst)) != 0)
                break;
        if (m < 0)
            return TG_EXIT_USAGE;
        if (m == 0) {
            const char *names[64] = {"--check-replicas", "--print-config", "--quiet",
                                     "--verbose", "--config", "--help"};
            size_t n = 6;
            for (size_t t = 0; t < nt && n < 64; t++)
                names[n++] = table[t].flag;
            return tg_cli_unknown_option(cmd, argv[i], names, n);
        }
    }
    return 0;
}

static int parse_i(const given *g, const char *flag, const char *v, int64_t lo, int64_t hi,
                   int64_t *out) {
    char b[4200];
    return v ? tg_cli_parse_i64("train", LABEL(g, flag, v, b), v, lo, hi, out) : 0;
}

static int parse_d(const given *g, const char *flag, const char *v, double lo, double hi,
                   double *out) {
    char b[4200];
    return v ? tg_cli_parse_f64("train", LABEL(g, flag, v, b), v, lo, hi, out) : 0;
}

/* Resolves the given values into cfg (starting from the model's defaults). */
static int resolve(given *g, tg_trainer_config *cfg, train_opts *o) {
    const char *cmd = "train";
    char lb[4200];
    tg_model_kind kind = TG_MODEL_MLP;
    int mc = g->model ? tg_model_arg_resolve(cmd, LABEL(g, "--model", g->model, lb), g->model,
                                             &g->marg)
                      : 0;
    /* --resume without --model: the model the checkpoint stores. */
    if (!mc && !g->model && o->resume && o->resume[0])
        mc = tg_model_arg_from_ckpt(cmd, o->resume, o->ckpt_dir, &g->marg);
    if (mc)
        return mc;
    bool have = g->marg.text != NULL;
    if (have && g->marg.kind != TG_MODEL_COUNT)
        kind = g->marg.kind;
    *cfg = tg_trainer_defaults(kind);
    if (have && g->marg.kind == TG_MODEL_COUNT) {
        cfg->model_text = g->marg.text;
        cfg->model_name = g->marg.name;
    }
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
            return tg_cli_usage_error(cmd, "%s: expected adamw, adam or sgd, got '%s'",
                                      LABEL(g, "--optimizer", g->optimizer, lb), g->optimizer);
        }
    }
    if (g->schedule) {
        if (strcmp(g->schedule, "cosine") == 0)
            cfg->schedule.kind = TG_LR_COSINE;
        else if (strcmp(g->schedule, "constant") == 0)
            cfg->schedule.kind = TG_LR_CONSTANT;
        else
            return tg_cli_usage_error(cmd, "%s: expected cosine or constant, got '%s'",
                                      LABEL(g, "--schedule", g->schedule, lb), g->schedule);
    }
    int64_t seed = (int64_t)cfg->seed, threads = 0, keep = 3;
    if (parse_i(g, "--epochs", g->epochs, 1, 100000, &cfg->epochs) ||
        parse_i(g, "--batch-size", g->batch, 1, 1 << 20, &cfg->batch_size) ||
        parse_i(g, "--accum-steps", g->accum, 1, 1 << 20, &cfg->accum_steps) ||
        parse_i(g, "--eval-batch-size", g->eval_batch, 1, 1 << 20, &cfg->eval_batch_size) ||
        parse_i(g, "--warmup", g->warmup, 0, INT64_MAX, &cfg->schedule.warmup_steps) ||
        parse_i(g, "--max-steps", g->max_steps, 0, INT64_MAX, &cfg->max_steps) ||
        parse_i(g, "--seed", g->seed, 0, INT64_MAX, &seed) ||
        parse_i(g, "--threads", g->threads, 1, 1024, &threads) ||
        parse_i(g, "--log-every", g->log_every, 0, INT64_MAX, &cfg->log_every) ||
        parse_d(g, "--lr", g->lr, 1e-12, 1e3, &cfg->optim.lr) ||
        parse_d(g, "--weight-decay", g->wd, 0, 10, &cfg->optim.weight_decay) ||
        parse_d(g, "--momentum", g->momentum, 0, 0.999999, &cfg->optim.momentum) ||
        parse_d(g, "--label-smoothing", g->smoothing, 0, 0.999999, &cfg->label_smoothing) ||
        parse_d(g, "--clip-grad-norm", g->clip, 0, 1e12, &cfg->clip_grad_norm) ||
        parse_d(g, "--comm-timeout", g->comm_timeout, 0.01, 1e6, &o->comm_timeout) ||
        parse_d(g, "--bucket-mb", g->bucket_mb, 0.001, 4096, &o->bucket_mb) ||
        parse_d(g, "--first-bucket-mb", g->first_bucket_mb, 0.001, 4096, &o->first_bucket_mb) ||
        parse_i(g, "--ckpt-every", g->ckpt_every, 0, INT64_MAX, &o->ckpt_every) ||
        parse_i(g, "--keep", g->keep, 0, 1000000, &keep))
        return TG_EXIT_USAGE;
    o->keep = (int)keep;
    o->device = TG_DEVICE_CPU;
    if (g->device && strcmp(g->device, "cuda") == 0)
        o->device = TG_DEVICE_CUDA;
    else if (g->device && strcmp(g->device, "cpu") != 0)
        return tg_cli_usage_error(cmd, "%s: expected cpu or cuda, got '%s'",
                                  LABEL(g, "--device", g->device, lb), g->device);
    if (o->ckpt_dir && !o->ckpt_dir[0])
        return tg_cli_usage_error(cmd, "--ckpt-dir: empty folder name");
    if (o->trace && !o->trace[0])
        return tg_cli_usage_error(cmd, "--trace: empty file name");
    if (o->resume && !o->resume[0])
        return tg_cli_usage_error(cmd, "--resume: expected auto or a checkpoint file");
    if (o->resume && strcmp(o->resume, "auto") == 0 && !o->ckpt_dir)
        return tg_cli_usage_error(cmd, "--resume auto needs --ckpt-dir");
    if ((g->ckpt_every || g->keep) && !o->ckpt_dir)
        return tg_cli_usage_error(cmd, "--ckpt-every and --keep need --ckpt-dir");
    if (g->momentum && cfg->optim.kind != TG_OPTIM_SGD)
        return tg_cli_usage_error(cmd, "--momentum applies to --optimizer sgd only");
    cfg->seed = (uint64_t)seed;
    o->threads = (int)threads;
    if (o->data && !o->data[0])
        return tg_cli_usage_error(cmd, "--data: empty file name");
    if (o->metrics && !o->metrics[0])
        return tg_cli_usage_error(cmd, "--metrics: empty file name");
    if (g->quiet && g->verbose)
        return tg_cli_usage_error(cmd, "--quiet and --verbose exclude each other");
    o->verbosity = g->quiet ? -1 : g->verbose ? 1 : 0;
    return 0;
}

int tg_train_find_data(const char *cmd, const char *given, const char *idx_dir, tg_world *w,
                       char *cache, size_t len, const char **data) {
    int rank = tg_world_rank(w);
    *data = given;
    /* From here a stop request is recorded and honoured by the long work
     * before the first step (converting, opening and checking the data),
     * which then cleans up after itself, instead of killing the process. */
    char err[256];
    if (tg_cli_stop_signals_install(err, sizeof err) != 0) {
        fprintf(stderr, "tapegrad %s: %s\n", cmd, err);
        return TG_EXIT_RUNTIME;
    }
    if (given) {
        struct stat st;
        if (stat(given, &st) != 0) {
            if (tg_world_size(w) > 1)
                fprintf(stderr, "tapegrad %s: rank %d: %s: %s\n", cmd, rank, given,
                        strerror(errno));
            else
                fprintf(stderr, "tapegrad %s: %s: %s\n", cmd, given, strerror(errno));
            return TG_EXIT_DATA;
        }
        return TG_EXIT_OK;
    }
    int64_t code = rank == 0 ? tg_fmnist_cache(idx_dir, cache, len) : 0;
    if (tg_world_size(w) > 1 && tg_broadcast(w, &code, 1, TG_I64, 0, "dataset ready") != TG_OK) {
        fprintf(stderr, "tapegrad %s: %s\n", cmd, tg_world_error(w));
        return TG_EXIT_LOST_RANK;
    }
    if (code == 0 && rank != 0)
        code = tg_fmnist_cache(idx_dir, cache, len);
    *data = cache;
    return (int)code;
}

int tg_cmd_train(int argc, char **argv) {
    given g = {0};
    train_opts o = {.idx_dir = TG_FMNIST_IDX_DIR};
    int code = collect(argc, argv, &g, &o);
    if (code) {
        tg_cli_config_free(&g.file);
        return code < 0 ? TG_EXIT_OK : code; /* < 0: --help */
    }
    tg_trainer_config cfg;
    code = resolve(&g, &cfg, &o);
    if (code == 0 && g.print_config) {
        char text[4096];
        fputs(tg_train_config_text(&cfg, text, sizeof text), stdout);
        code = -1;
    }
    /* The values resolved into cfg and o; the strings the file gave o (data,
     * metrics, ...) must stay, so the file is released at the end. */
    if (code) {
        tg_cli_config_free(&g.file);
        tg_model_arg_free(&g.marg);
        return code < 0 ? TG_EXIT_OK : code;
    }

    /* Without mpirun this is a world of one. */
    char err[512];
    tg_world *w;
    tg_world_config wc = {.timeout_s = o.comm_timeout};
    if (tg_world_init(NULL, NULL, &wc, &w, err, sizeof err) != TG_OK) {
        fprintf(stderr, "tapegrad train: %s\n", err);
        tg_model_arg_free(&g.marg);
        return TG_EXIT_LOST_RANK;
    }
    cfg.rank = tg_world_rank(w);
    cfg.world = tg_world_size(w);
    /* The same on every rank: only rank 0 says it. */
    const int64_t accum = cfg.accum_steps > 1 ? cfg.accum_steps : 1;
    if ((code = tg_cli_check_launch("train", cfg.world)) != 0) {
        /* said */
    } else if (cfg.batch_size % (cfg.world * accum) != 0) {
        code = TG_EXIT_USAGE;
        if (cfg.rank == 0 && accum == 1)
            tg_cli_usage_error("train",
                               "--batch-size %lld (the global batch) is not divisible by the "
                               "world size %d; choose a multiple of %d",
                               (long long)cfg.batch_size, cfg.world, cfg.world);
        else if (cfg.rank == 0)
            tg_cli_usage_error("train",
                               "--batch-size %lld (the global batch) is not divisible by %lld "
                               "(%d rank%s x --accum-steps %lld); choose a multiple of %lld",
                               (long long)cfg.batch_size, (long long)(cfg.world * accum),
                               cfg.world, cfg.world == 1 ? "" : "s", (long long)accum,
                               (long long)(cfg.world * accum));
    } else if ((code = tg_train_open_device(&o, w, err, sizeof err)) != 0) {
        if (cfg.world == 1)
            fprintf(stderr, "tapegrad train: %s\n", err);
        else if (cfg.rank == 0 || code != TG_EXIT_USAGE)
            fprintf(stderr, "tapegrad train: rank %d: %s\n", cfg.rank, err);
    } else {
        char cache[4096];
        const char *data;
        code = tg_train_find_data("train", o.data, o.idx_dir, w, cache, sizeof cache, &data);
        if (code != TG_EXIT_OK && tg_cli_stop_signal())
            code = tg_cli_stop_exit(o.ckpt_dir != NULL);
        if (code == TG_EXIT_OK)
            code = tg_train_run(&cfg, &o, data, w);
    }
    tg_world_free(w);
    tg_cli_config_free(&g.file);
    tg_model_arg_free(&g.marg);
    return code;
}
