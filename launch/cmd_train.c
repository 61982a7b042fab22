/*
 * launch/cmd_train.c: `tapegrad train`, the options, the data, the output.
 *
 * The training loop itself is the library's (runtime/train/trainer.c); this file
 * resolves the options onto the model's defaults, finds or builds the
 * dataset, prints progress and writes the JSONL metrics from the trainer's
 * events, and turns statuses into exit codes.
 */
#include "cli.h"
#include "tapegrad/datasets.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tapegrad/trainer.h"
#include "train.h"
#include "train_data.h"

const char *tg_train_optim_name(tg_optim_kind k) {
    return k == TG_OPTIM_SGD ? "sgd" : k == TG_OPTIM_ADAM ? "adam" : "adamw";
}

const char *tg_train_sched_name(tg_lr_kind k) {
    return k == TG_LR_COSINE ? "cosine" : k == TG_LR_STEP ? "step" : "constant";
}

/* The options come from the table in launch/train_opts.c. */
static void train_usage(FILE *f) {
    train_args d = tg_train_args_defaults(TG_MODEL_MLP);
    fprintf(f,
            "usage: tapegrad train [options]\n"
            "\n"
            "Trains a model and reports its loss and accuracy on the test split after\n"
            "every epoch: an image classifier, a regression model (f32 targets: MSE and\n"
            "MAE) or a language model on token data (gpt: loss, perplexity and bits per\n"
            "byte). With no options: the mlp model on Fashion-MNIST, read from the\n"
            "Debian package dataset-fashion-mnist and converted on first use to\n"
            "$XDG_CACHE_HOME/tapegrad/%s (default ~/.cache/tapegrad/).\n"
            "Every option but --config, --print-config and --help is also a key of\n"
            "--config files (see configuration).\n"
            "\n",
            TG_FMNIST_CACHE_NAME);
    tg_opt_help(f, tg_train_options, tg_train_options_count, &d);
    fprintf(f, "\n"
               "per-model defaults:\n"
               "  model   epochs  batch  optimizer  lr      weight decay\n");
    for (int k = 0; k < TG_MODEL_COUNT; k++) {
        tg_trainer_config c = tg_trainer_defaults((tg_model_kind)k);
        fprintf(f, "  %-7s %-7lld %-6lld %-10s %-7g %g\n", tg_model_name(c.model),
                (long long)c.epochs, (long long)c.batch_size, tg_train_optim_name(c.optim.kind),
                c.optim.lr, c.optim.weight_decay);
    }
    train_args g = tg_train_args_defaults(TG_MODEL_MLP);
    tg_train_gpt_defaults(&g);
    fprintf(f, "  %-7s %-7lld %-6lld %-10s %-7g %g on matrices; betas %g, %g, warm-up %lld,\n"
               "                                            clip %g; %lld steps per epoch,\n"
               "                                            evaluation batch %lld\n",
            "gpt", (long long)g.cfg.epochs, (long long)g.cfg.batch_size,
            tg_train_optim_name(g.cfg.optim.kind), g.cfg.optim.lr, g.cfg.optim.weight_decay,
            g.cfg.optim.beta1, g.cfg.optim.beta2, (long long)g.cfg.schedule.warmup_steps,
            g.cfg.clip_grad_norm, (long long)g.cfg.steps_per_epoch,
            (long long)g.cfg.eval_batch_size);
    train_args r = tg_train_args_defaults(TG_MODEL_MLP);
    tg_train_resnet_defaults(&r);
    fprintf(f, "  resnet20, resnet18: the mlp's, with --augment crop,flip --augment-pad %d\n",
            r.cfg.augment_pad);
    fprintf(f, "\n"
               "signals: SIGTERM, SIGUSR1 or SIGINT stop the run at the next step: rank 0\n"
               "checkpoints (with --ckpt-dir) and every rank exits 75. A second SIGINT\n"
               "exits at once (130).\n"
               "\n"
               "exit codes: 0 success, 1 runtime error, 2 usage error, 3 data or checkpoint\n"
               "error, 4 lost rank (a collective failed or timed out), 75 checkpointed after\n"
               "a signal: requeue the job (EX_TEMPFAIL)\n");
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
    tg_opt_set set;
    train_args a = {0};
    int code = tg_opt_read(&set, "train", tg_train_options, tg_train_options_count, argc, argv,
                           train_usage);
    if (code == 0 && !set.help)
        code = tg_train_resolve(&set, &a);
    if (code == 0 && !set.help && a.print_config) {
        char text[1 << 14];
        fputs(tg_opt_text(tg_train_options, tg_train_options_count, &a, TG_OPT_INI, text,
                          sizeof text),
              stdout);
        set.help = true;
    }
    /* The strings that the file gave (data, metrics, ...) stay until the
     * end, so the file is released there. */
    if (code || set.help) {
        tg_model_arg_free(&a.marg);
        tg_opt_set_free(&set);
        return code;
    }
    tg_trainer_config cfg = a.cfg;
    train_opts o = a.o;

    /* Without mpirun this is a world of one. */
    char err[512];
    tg_world *w;
    tg_world_config wc = {.timeout_s = o.comm_timeout};
    if (tg_world_init(NULL, NULL, &wc, &w, err, sizeof err) != TG_OK) {
        fprintf(stderr, "tapegrad train: %s\n", err);
        tg_model_arg_free(&a.marg);
        tg_opt_set_free(&set);
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
        /* Token files (convert text) hold train and val: without a test
         * split, val is the one evaluated. */
        if (code == TG_EXIT_OK && !tg_opt_given(&set, "test-split") &&
            tg_dataset_has_split(data, cfg.test_split) == 0 &&
            tg_dataset_has_split(data, "val") == 1)
            cfg.test_split = "val";
        if (code == TG_EXIT_OK)
            code = tg_train_run(&cfg, &o, data, w);
    }
    tg_world_free(w);
    tg_model_arg_free(&a.marg);
    tg_opt_set_free(&set);
    return code;
}
