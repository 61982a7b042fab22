/*
 * launch/train_run.c: one rank of `tapegrad train`.
 *
 * The trainer (runtime/train/trainer.c) runs the loop; this file plugs the job
 * around it through the trainer's hooks: the DDP wait after backward, the
 * metric all-reduce, and after each step the pre-emption vote and the
 * periodic checkpoint. It also resumes from a checkpoint before the first
 * step (saving and resuming are in launch/train_ckpt.c), prints the banner
 * and the progress (rank 0 only) and turns the outcome into the exit code.
 *
 * Signals: SIGTERM, SIGUSR1 and SIGINT only set a flag here (all that a
 * handler may safely do). At every step boundary the ranks sum their flags
 * in one small all-reduce, so they all stop after the same step even when
 * the signal reached one rank only, or reached them at different moments.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#include "tapegrad/checkpoint.h"
#include "tapegrad/kernels.h"
#include "metrics.h"
#include "progress.h"
#include "tapegrad/modelfile.h"
#include "train.h"
#include "train_run.h"

/* ---- messages ---- */

static int exit_code(tg_status s) {
    return s == TG_ERR_INVALID ? TG_EXIT_RUNTIME : tg_cli_exit_for_status(s);
}

/* ---- progress and metrics (rank 0) ---- */

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

static void write_metrics(run_state *st, const tg_trainer_event *ev, double rss, double peak) {
    if (st->metrics && !st->metrics_failed &&
        tg_metrics_write_event(st->metrics, ev, st->world, rss, peak) != 0)
        st->metrics_failed = true;
}

/* On a terminal, the progress thread draws the bar (launch/progress.c) and a
 * logged step only gives it the loss; elsewhere (a batch log) a plain line
 * per logged step. */
static void print_step(run_state *st, const tg_trainer_event *ev) {
    if (st->o->verbosity < 0)
        return;
    if (st->bar) {
        tg_progress_set_loss(st->prog, ev->loss);
        return;
    }
    if (ev->tokens_per_s > 0) {
        printf("epoch %lld/%lld  step %lld/%lld  loss %.4f  lr %.3g  %.0f tokens/s\n",
               (long long)ev->epoch, (long long)ev->epochs, (long long)ev->step_in_epoch,
               (long long)ev->steps_per_epoch, ev->loss, ev->lr, ev->tokens_per_s);
        return;
    }
    printf("epoch %lld/%lld  step %lld/%lld  loss %.4f  lr %.3g  %.0f samples/s\n",
           (long long)ev->epoch, (long long)ev->epochs, (long long)ev->step_in_epoch,
           (long long)ev->steps_per_epoch, ev->loss, ev->lr, ev->samples_per_s);
}

/* Token data: an epoch's line and the end's, with perplexity and bits per
 * byte of the evaluated split (val, or the test split). */
static void print_tokens(const tg_trainer_event *ev, double rss) {
    const tg_eval_result *r = ev->has_val ? &ev->val : &ev->eval;
    const char *set = ev->has_val ? "val" : "test";
    if (ev->kind == TG_EVENT_END) {
        r = &ev->eval;
        printf("test loss: %.4f (perplexity %.3f, %.4f bits per byte, %lld steps, %.1f s, %.0f "
               "tokens/s)\n",
               r->loss, exp(r->loss), r->bits_per_byte, (long long)ev->step, ev->seconds,
               ev->tokens_per_s);
        return;
    }
    printf("epoch %lld/%lld done: train_loss %.4f  %s_loss %.4f  %s_ppl %.3f  %s_bpb %.4f  "
           "(%.1f s, %.0f tokens/s, eval %.1f s, rss %.0f MiB)\n",
           (long long)ev->epoch, (long long)ev->epochs, ev->train_loss, set, r->loss, set,
           exp(r->loss), set, r->bits_per_byte, ev->seconds, ev->tokens_per_s, r->seconds, rss);
}

static tg_status on_event(tg_trainer *tr, const tg_trainer_event *ev, bool *stop, void *user) {
    (void)tr;
    (void)stop;
    run_state *st = user;
    if (st->rank != 0)
        return TG_OK;
    double rss = -1, peak = -1;
    if (ev->kind != TG_EVENT_STEP)
        rss_mb(&rss, &peak);
    write_metrics(st, ev, rss, peak);
    if (ev->kind != TG_EVENT_STEP)
        tg_progress_hold(st->prog);
    switch (ev->kind) {
    case TG_EVENT_STEP:
        print_step(st, ev);
        break;
    case TG_EVENT_EPOCH:
        if (st->o->verbosity < 0)
            break;
        if (ev->eval.tokens || (ev->has_val && ev->val.tokens)) {
            print_tokens(ev, rss);
            break;
        }
        if (ev->has_val || ev->eval.regression) {
            /* The validation set's figures, or the test split's MSE/MAE. */
            const tg_eval_result *r = ev->has_val ? &ev->val : &ev->eval;
            const char *set = ev->has_val ? "val" : "test";
            printf("epoch %lld/%lld done: train_loss %.4f  %s_%s %.4f  %s_%s %.4f  "
                   "(%.1f s, %.0f samples/s, eval %.1f s, rss %.0f MiB)\n",
                   (long long)ev->epoch, (long long)ev->epochs, ev->train_loss, set,
                   r->regression ? "mse" : "loss", r->loss, set, r->regression ? "mae" : "acc",
                   r->regression ? r->mae : r->accuracy, ev->seconds, ev->samples_per_s,
                   r->seconds, rss);
            break;
        }
        printf("epoch %lld/%lld done: train_loss %.4f  test_loss %.4f  test_acc %.4f  "
               "(%.1f s, %.0f samples/s, eval %.1f s, rss %.0f MiB)\n",
               (long long)ev->epoch, (long long)ev->epochs, ev->train_loss, ev->eval.loss,
               ev->eval.accuracy, ev->seconds, ev->samples_per_s, ev->eval.seconds, rss);
        break;
    case TG_EVENT_END:
        if (ev->eval.tokens)
            print_tokens(ev, rss);
        else if (ev->eval.regression)
            printf("test mse: %.6g (mae %.6g, %lld steps, %.1f s)\n", ev->eval.loss, ev->eval.mae,
                   (long long)ev->step, ev->seconds);
        else
            printf("test accuracy: %.4f (test_loss %.4f, %lld steps, %.1f s)\n",
                   ev->eval.accuracy, ev->eval.loss, (long long)ev->step, ev->seconds);
        break;
    }
    fflush(stdout);
    if (ev->kind != TG_EVENT_STEP)
        tg_progress_release(st->prog);
    return TG_OK;
}

/* OpenBLAS picks its kernels at load time, and OPENBLAS_CORETYPE overrides
 * the pick silently; an AVX2 core on an AVX-512 CPU makes convolutions (and
 * matrix products, where OpenBLAS runs them) much slower, so say so, even
 * under --quiet (a warning). The variable stays the user's choice: this only
 * reports it. */
static void warn_blas_core(const train_opts *o) {
    if (o->device != TG_DEVICE_CPU)
        return;
    tg_blas_info b;
    tg_blas_info_get(&b);
    if (b.forced_core && b.cpu_avx512 && !b.core_avx512) {
        fflush(stdout);
        fprintf(stderr,
                "tapegrad train: warning: OPENBLAS_CORETYPE=%s keeps OpenBLAS on its %s "
                "kernels although this CPU has AVX-512; unset it for faster convolutions%s "
                "(the cnn model trains about 1.5x faster)\n",
                b.forced_core, b.core, b.own_sgemm ? "" : " and matrix products");
    }
}

static void print_banner(const run_state *st, tg_trainer *tr, const char *data) {
    const tg_trainer_config *c = tg_trainer_get_config(tr);
    const train_opts *o = st->o;
    printf("tapegrad %s: %d rank%s (%d per node, %d node%s), device %s\n", TG_VERSION_STRING,
           st->world, st->world == 1 ? "" : "s", tg_world_local_size(st->w),
           tg_world_node_count(st->w), tg_world_node_count(st->w) == 1 ? "" : "s",
           o->device == TG_DEVICE_CUDA ? "cuda" : "cpu");
    static const char *const slurm[] = {"SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NNODES",
                                        "SLURM_JOB_NODELIST", "SLURM_CPUS_PER_TASK"};
    bool any = false;
    for (size_t i = 0; i < sizeof slurm / sizeof slurm[0]; i++) {
        const char *v = getenv(slurm[i]);
        if (v && *v) {
            printf("%s%s=%s", any ? " " : "slurm: ", slurm[i], v);
            any = true;
        }
    }
    if (any)
        printf("\n");
    printf("model %s (%lld parameters), data %s (%lld train / %lld test",
           tg_trainer_model(tr)->name, (long long)tg_params_numel(tg_trainer_params(tr)), data,
           (long long)tg_trainer_train_len(tr), (long long)tg_trainer_test_len(tr));
    if (tg_trainer_val_len(tr) > 0)
        printf(" / %lld val", (long long)tg_trainer_val_len(tr));
    printf(")\n");
    const char *th = st->threads;
    printf("%lld steps (%lld per epoch), batch %lld (%lld per rank), %s lr %g weight_decay %g "
           "%s, seed %llu, threads %s per rank\n",
           (long long)tg_trainer_total_steps(tr), (long long)tg_trainer_steps_per_epoch(tr),
           (long long)c->batch_size, (long long)(c->batch_size / st->world),
           tg_train_optim_name(c->optim.kind), c->optim.lr, c->optim.weight_decay,
           tg_train_sched_name(c->schedule.kind), (unsigned long long)c->seed, th);
    if (o->device == TG_DEVICE_CPU) {
        tg_blas_info b;
        tg_blas_info_get(&b);
        printf("blas: %s, %s kernels%s\n", b.config, b.core,
               b.own_sgemm ? "; f32 matrix products on tapegrad's own AVX-512 kernel" : "");
    }
    /* The options set, without the unset ones (comments in the text). */
    printf("config:");
    bool first = true;
    for (const char *p = st->cfg_text; *p;) {
        size_t n = strcspn(p, "\n");
        if (p[0] != '#')
            printf("%s%.*s", first ? " " : ", ", (int)n, p);
        first = first && p[0] == '#';
        p += n + (p[n] == '\n');
    }
    printf("\n");
    if (o->ckpt_dir)
        printf("checkpoints: %s (every %lld steps and each epoch end, keep %d)\n", o->ckpt_dir,
               (long long)o->ckpt_every, o->keep);
    fflush(stdout);
}


/* ---- --check-replicas ---- */

/* FNV-1a over the bytes of every trainable parameter. (Buffers are left
 * out: batch-norm statistics are per rank, as in PyTorch's DDP.) */
static tg_status params_digest(run_state *st, tg_trainer *tr, uint64_t *out) {
    const tg_params *ps = tg_trainer_params(tr);
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < ps->nparams; i++) {
        tg_tensor *t = ps->params[i];
        size_t nb = (size_t)tg_numel(t) * tg_dtype_size(t->dtype);
        if (nb > st->scratch_len) {
            unsigned char *p = realloc(st->scratch, nb);
            if (!p)
                return hook_fail(st, TG_ERR_NOMEM, TG_EXIT_RUNTIME,
                                 "--check-replicas: out of memory");
            st->scratch = p;
            st->scratch_len = nb;
        }
        tg_status s = tg_to_host(tg_trainer_ctx(tr), t, st->scratch, nb);
        if (s)
            return hook_fail(st, s, TG_EXIT_RUNTIME, tg_ctx_error(tg_trainer_ctx(tr)));
        for (size_t k = 0; k < nb; k++)
            h = (h ^ st->scratch[k]) * 1099511628211ull;
    }
    *out = h;
    return TG_OK;
}

/* Every rank must hold bit-identical parameters after every step. */
static tg_status check_replicas(run_state *st, tg_trainer *tr, int64_t step) {
    uint64_t h, all[1024];
    tg_status s = params_digest(st, tr, &h);
    if (s)
        return s;
    if (st->world > 1024)
        return TG_OK;
    if ((s = tg_allgather(st->w, &h, all, 8, TG_U8, "replica digest")) != TG_OK)
        return hook_fail(st, s, TG_EXIT_LOST_RANK, tg_world_error(st->w));
    for (int r = 1; r < st->world; r++)
        if (all[r] != all[0]) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "--check-replicas: after step %lld the parameters of rank %d differ from "
                     "rank 0's (digest %016llx vs %016llx)",
                     (long long)step, r, (unsigned long long)all[r], (unsigned long long)all[0]);
            return hook_fail(st, TG_ERR_INVALID, TG_EXIT_RUNTIME, msg);
        }
    return TG_OK;
}

/* ---- hooks ---- */

static tg_status after_backward(tg_trainer *tr, void *user) {
    (void)tr;
    run_state *st = user;
    tg_status s = tg_ddp_wait(st->ddp);
    return s ? hook_fail(st, s, TG_EXIT_LOST_RANK, tg_world_error(st->w)) : TG_OK;
}

/* --zero 1: clip, step this rank's shard, all-gather the parameters. */
static tg_status optimizer_step(tg_trainer *tr, double lr, void *user) {
    run_state *st = user;
    tg_status s = tg_ddp_zero_step(st->ddp, lr, tg_trainer_get_config(tr)->clip_grad_norm);
    return s ? hook_fail(st, s, TG_EXIT_LOST_RANK, tg_world_error(st->w)) : TG_OK;
}

/* Gradient accumulation: only the last micro-batch all-reduces. */
static tg_status set_sync(tg_trainer *tr, bool sync, void *user) {
    (void)tr;
    run_state *st = user;
    if (st->ddp)
        tg_ddp_set_sync(st->ddp, sync);
    return TG_OK;
}

/* Rank 0's batch-norm statistics to every rank before each forward and each
 * evaluation (DDP's broadcast_buffers). */
static tg_status before_forward(tg_trainer *tr, void *user) {
    (void)tr;
    run_state *st = user;
    tg_status s = st->ddp ? tg_ddp_broadcast_buffers(st->ddp) : TG_OK;
    return s ? hook_fail(st, s, TG_EXIT_LOST_RANK, tg_world_error(st->w)) : TG_OK;
}

static tg_status allreduce_sum(tg_trainer *tr, double *vals, int n, void *user) {
    (void)tr;
    run_state *st = user;
    if (st->world == 1)
        return TG_OK;
    tg_status s = tg_metrics_allreduce(st->w, n, vals);
    return s ? hook_fail(st, s, TG_EXIT_LOST_RANK, tg_world_error(st->w)) : TG_OK;
}

static tg_status after_step(tg_trainer *tr, bool *stop, void *user) {
    run_state *st = user;
    tg_trainer_state ps = tg_trainer_state_get(tr);
    tg_world_set_step(st->w, ps.step);
    if (st->o->check_replicas && st->world > 1) {
        tg_status s = check_replicas(st, tr, ps.step);
        if (s)
            return s;
    }
    int64_t flag = tg_cli_stop_signal() != 0;
    if (st->world > 1) {
        tg_status s = tg_allreduce_sum(st->w, &flag, 1, TG_I64, "stop vote");
        if (s)
            return hook_fail(st, s, TG_EXIT_LOST_RANK, tg_world_error(st->w));
    }
    const train_opts *o = st->o;
    bool epoch_end = ps.step % tg_trainer_steps_per_epoch(tr) == 0;
    bool last = ps.step == tg_trainer_total_steps(tr);
    bool every = o->ckpt_every > 0 && ps.step % o->ckpt_every == 0;
    if (o->ckpt_dir && (flag || epoch_end || last || every)) {
        tg_status s = tg_train_save_checkpoint(st, tr);
        if (s)
            return s;
    }
    if (flag) {
        st->stop_step = ps.step;
        st->stop_ranks = flag;
        *stop = true;
    }
    return TG_OK;
}


/* mkdir -p: every missing folder of path, then path itself. */
static int mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return -1;
    struct stat sb;
    if (stat(buf, &sb) != 0)
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return access(buf, W_OK | X_OK);
}

/* A stop request that arrived before the first step (while the data was
 * opened and checked): nothing was trained, so nothing is saved. */
static int stopped_early(const run_state *st) {
    if (st->rank == 0)
        printf("stopped by a signal before the first step; nothing to save%s\n",
               st->o->ckpt_dir ? "; exit 75: requeue to start (or continue) the run" : "");
    return tg_cli_stop_exit(st->o->ckpt_dir != NULL);
}

/* The worst exit code over the ranks (so that all stop together). */
static int agree(run_state *st, int code) {
    if (st->world == 1)
        return code;
    /* Encoded so that a sum tells any failure and the largest code apart. */
    int64_t v[2] = {code != 0, code};
    int64_t all[2 * 1024];
    if (st->world > 1024 || tg_allgather(st->w, v, all, 2, TG_I64, "start-up status") != TG_OK)
        return code ? code : TG_EXIT_LOST_RANK;
    int worst = code;
    for (int r = 0; r < st->world && worst == 0; r++)
        worst = (int)all[2 * r + 1];
    return worst;
}

/* ---- the run ---- */

int tg_train_open_device(const train_opts *o, tg_world *w, char *err, size_t len) {
    if (o->device != TG_DEVICE_CUDA)
        return TG_EXIT_OK;
#ifndef TG_HAVE_CUDA
    (void)w;
    snprintf(err, len,
             "--device cuda: this build has no CUDA backend (configure with nvcc "
             "present and TG_CUDA=ON)");
    return TG_EXIT_USAGE;
#else
    char why[1024];
    if (tg_cuda_available(why, sizeof why) != TG_OK) {
        snprintf(err, len, "--device cuda: %s", why);
        return TG_EXIT_RUNTIME;
    }
    int n = tg_cuda_device_count();
    if (tg_world_local_size(w) > n) {
        snprintf(err, len,
                 "--device cuda: %d ranks run on this node but it has %d GPU%s; start at "
                 "most %d ranks per node",
                 tg_world_local_size(w), n, n == 1 ? "" : "s", n);
        return TG_EXIT_USAGE;
    }
    if (tg_cuda_set_device(tg_world_local_rank(w), why, sizeof why) != TG_OK) {
        snprintf(err, len, "--device cuda: %s", why);
        return TG_EXIT_RUNTIME;
    }
    return TG_EXIT_OK;
#endif
}

/* After the trainer exists: resume, DDP, trace, the loop. */
static int train(run_state *st, tg_trainer *tr, const char *data) {
    tg_ctx *ctx = tg_trainer_ctx(tr);
    const train_opts *o = st->o;
    int code = 0;
    /* Every rank builds the same model, so every rank stops here alike. */
    if (o->sync_bn && !tg_model_has_bn(tg_trainer_model(tr))) {
        if (st->rank == 0)
            fprintf(stderr, "tapegrad train: --sync-bn needs a model with batch norm; %s has none\n",
                    tg_trainer_model(tr)->name);
        return TG_EXIT_USAGE;
    }
    if (o->resume) {
        char path[4096];
        /* The choice is rank 0's and the same everywhere; a load can fail on
         * one rank only (its own file system), so the ranks agree on it. */
        code = tg_train_choose_resume(st, tr, path, sizeof path);
        if (code == 0 && path[0])
            code = agree(st, tg_train_load_resume(st, tr, path));
        if (code) {
            tg_ckpt_tensors_free(st->zts, st->nzts);
            st->zts = NULL;
            return code < 0 ? TG_EXIT_OK : code;
        }
    }
    const tg_params *ps = tg_trainer_params(tr);
    tg_ddp_config dc = {.bucket_bytes = (size_t)(o->bucket_mb * 1024 * 1024),
                        .first_bucket_bytes = (size_t)(o->first_bucket_mb * 1024 * 1024),
                        .zero_stage = st->zero,
                        .grad_dtype = o->grad_dtype};
    tg_status s =
        tg_ddp_new(ctx, st->w, ps->nparams, ps->params, ps->nbuffers, ps->buffers, &dc, &st->ddp);
    if (!s && st->zero)
        s = tg_ddp_zero_init(st->ddp, &tg_trainer_get_config(tr)->optim);
    if (!s && st->zts)
        s = tg_ddp_zero_load_state(st->ddp, st->zts, st->nzts, st->zsteps);
    tg_ckpt_tensors_free(st->zts, st->nzts);
    st->zts = NULL;
    /* A shard that one rank could not restore stops every rank. */
    if (st->zero) {
        int agreed = agree(st, s ? TG_EXIT_DATA : 0);
        s = s ? s : agreed ? TG_ERR_SHAPE : TG_OK;
    }
    if (s) {
        say_error(st, tg_world_error(st->w)[0] ? tg_world_error(st->w)
                                               : "another rank could not restore its optimizer "
                                                 "shard");
        tg_ddp_free(st->ddp);
        st->ddp = NULL;
        return s == TG_ERR_COMM || s == TG_ERR_TIMEOUT ? TG_EXIT_LOST_RANK : TG_EXIT_DATA;
    }
    tg_ddp_set_trace(st->ddp, tg_trainer_get_config(tr)->trace);
    if (o->sync_bn) {
        tg_world_attach(st->w, ctx);
        tg_model_set_sync_bn(tg_trainer_model(tr), true);
    }
    if (st->rank == 0 && o->verbosity >= 0)
        print_banner(st, tr, data);
    if (tg_train_optim_memory(tr, st->ddp, st->w, st->zero, o->verbosity >= 0) != TG_OK) {
        say_error(st, tg_world_error(st->w));
        return TG_EXIT_LOST_RANK;
    }
    if (o->zero && st->world == 1 && o->verbosity >= 0)
        printf("--zero 1: nothing to shard on one rank; the whole optimizer runs here\n");
    if (st->rank == 0)
        warn_blas_core(o);
    const int64_t start_step = tg_trainer_state_get(tr).step;
    if (st->metrics && tg_metrics_write_config(st->metrics, tg_trainer_get_config(tr), o, st->world,
                                               o->resume ? start_step : -1) != 0)
        st->metrics_failed = true;
    tg_world_set_step(st->w, start_step);
    if (st->bar && st->rank == 0)
        st->prog = tg_progress_start(tr, tg_trainer_get_config(tr)->batch_size);
    s = tg_trainer_run(tr);
    tg_progress_stop(st->prog);
    st->prog = NULL;
    if (s == TG_ERR_STOPPED) {
        code = stopped_early(st);
    } else if (s) {
        say_error(st, st->err[0] ? st->err : tg_ctx_error(ctx));
        code = st->err_code ? st->err_code : exit_code(s);
    } else if (tg_trainer_stopped(tr)) {
        if (st->rank == 0 && o->ckpt_dir)
            tg_train_write_marker(st, tg_cli_stop_signal());
        if (st->rank == 0 && o->ckpt_dir)
            printf("stopped by a signal (seen by %lld of %d ranks) after step %lld; "
                   "checkpoint %s; exit %d: requeue to continue with --resume auto\n",
                   (long long)st->stop_ranks, st->world, (long long)st->stop_step, st->last_ckpt,
                   TG_EXIT_REQUEUE);
        else if (st->rank == 0)
            printf("stopped by a signal after step %lld; no --ckpt-dir, so nothing was saved\n",
                   (long long)st->stop_step);
        /* 75 promises a checkpoint; without one, the usual 128 + signal. */
        code = tg_cli_stop_exit(o->ckpt_dir != NULL);
    }
    tg_ddp_free(st->ddp);
    return code;
}

int tg_train_run(tg_trainer_config *cfg, const train_opts *o, const char *data, tg_world *w) {
    run_state st = {.o = o, .w = w, .rank = tg_world_rank(w), .world = tg_world_size(w),
                    .zero = o->zero == 1 && tg_world_size(w) > 1};
    /* mpirun and srun hand their ranks a pseudo-terminal even when the job's
     * output goes to a file, so a launched run always gets plain lines. What
     * launched us is judged from the environment as it was before MPI's
     * start-up (a singleton's MPI_Init sets PMIX_RANK itself). */
    st.bar = o->verbosity == 0 && isatty(STDOUT_FILENO) && st.world == 1 && !tg_cli_launched();
    int code = TG_EXIT_OK;
    char err[512];
    if (tg_cli_stop_signals_install(err, sizeof err) != 0) {
        say_error(&st, err);
        return TG_EXIT_RUNTIME;
    }
    if (st.rank == 0 && o->metrics && !(st.metrics = fopen(o->metrics, o->resume ? "a" : "w"))) {
        /* Told to the others below, through agree(). */
        fprintf(stderr, "tapegrad train: --metrics: cannot create '%s': %s\n", o->metrics,
                strerror(errno));
        code = TG_EXIT_USAGE;
    }
    /* An unusable checkpoint folder is found now, not at the first save. */
    if (code == 0 && st.rank == 0 && o->ckpt_dir && mkdir_p(o->ckpt_dir) != 0) {
        fprintf(stderr, "tapegrad train: --ckpt-dir %s: cannot create or write the folder: %s\n",
                o->ckpt_dir, strerror(errno));
        code = TG_EXIT_DATA;
    }
    if (code == 0 && st.rank == 0 && o->ckpt_dir)
        tg_train_clear_marker(o);
    /* Checkpoints record the dataset: read once now, before the first
     * step. A file that cannot be read is reported by the trainer's open. */
    if (code == 0 && st.rank == 0 && o->ckpt_dir &&
        tg_cli_file_record(data, &st.data, err, sizeof err) != 0)
        st.data.path[0] = '\0';
    if ((code = agree(&st, code)) != 0)
        goto out;
    cfg->data_path = data;
    cfg->hooks = (tg_trainer_hooks){.user = &st,
                                    .on_event = on_event,
                                    .after_backward = after_backward,
                                    .set_sync = set_sync,
                                    .before_forward = before_forward,
                                    .allreduce_sum = allreduce_sum,
                                    .after_step = after_step,
                                    .optimizer_step = st.zero ? optimizer_step : NULL,
                                    .should_stop = tg_cli_stop_requested};
    tg_train_config_text(cfg, o, st.cfg_text, sizeof st.cfg_text);
    tg_trace *trace = NULL;
    if (o->trace) {
        char prefix[4096];
        snprintf(prefix, sizeof prefix, "%s", o->trace);
        size_t pl = strlen(prefix);
        if (pl > 5 && strcmp(prefix + pl - 5, ".json") == 0)
            prefix[pl - 5] = '\0';
        if (tg_trace_open(prefix, st.rank, 0, &trace, err, sizeof err) != TG_OK) {
            say_error(&st, err);
            code = TG_EXIT_RUNTIME;
        }
    }
    /* Every rank's clock against rank 0's, so that `tapegrad trace merge`
     * can lay the ranks' files on one time line. Collective: all ranks
     * measure when any traces (the option is the same everywhere). */
    if (o->trace && (code = agree(&st, code)) == 0) {
        double off = 0;
        if (tg_world_clock_offset(st.w, &off, NULL) != TG_OK) {
            say_error(&st, tg_world_error(st.w));
            code = TG_EXIT_LOST_RANK;
        }
        tg_trace_set_clock_offset(trace, off);
    }
    cfg->trace = trace;
    /* More threads than CPUs only compete, and each costs OpenBLAS a buffer. */
    int threads = st.rank == 0 ? tg_cli_cap_threads("train", "--threads", o->threads)
                               : tg_cli_cap_threads_quiet(o->threads);
    tg_ctx_config cc = {.device = o->device, .threads = threads};
    if (threads > 0)
        snprintf(st.threads, sizeof st.threads, "%d", threads);
    else
        cc.threads = tg_cli_rank_threads(tg_world_local_size(st.w), st.threads, sizeof st.threads);
    tg_ctx *ctx = NULL;
    if (code == 0 && o->device == TG_DEVICE_CPU)
        code = tg_cli_check_blas_room("train", cc.threads);
    if (code == 0 && tg_ctx_new(&cc, &ctx) != TG_OK) {
        say_error(&st, tg_last_init_error());
        code = TG_EXIT_RUNTIME;
    }
    if (code == 0 && o->precision != TG_PRECISION_F32 &&
        tg_ctx_set_precision(ctx, o->precision) != TG_OK) {
        say_error(&st, tg_ctx_error(ctx));
        code = TG_EXIT_RUNTIME;
    }
    if (code == 0 && o->device == TG_DEVICE_CPU && tg_cli_blas_warmup() != 0) {
        say_error(&st, "out of memory for a first matrix product");
        code = TG_EXIT_RUNTIME;
    }
    tg_trainer *tr = NULL;
    if (code == 0) {
        tg_status s = tg_trainer_new(ctx, cfg, &tr);
        if (s == TG_ERR_STOPPED) {
            code = stopped_early(&st);
        } else if (s) {
            say_error(&st, tg_ctx_error(ctx));
            code = exit_code(s);
        }
    }
    /* A rank that failed to start must not leave the others waiting in the
     * model check: agree first. */
    code = agree(&st, code);
    if (code == 0) {
        code = train(&st, tr, data);
    }
    tg_trainer_free(tr);
    if (ctx)
        tg_ctx_free(ctx);
    if (trace && tg_trace_dropped(trace) > 0)
        fprintf(stderr,
                "tapegrad train: rank %d: warning: the trace kept its first %lld spans and "
                "dropped %lld more (its buffer is full); trace a shorter run (--max-steps)\n",
                st.rank, (long long)tg_trace_count(trace), (long long)tg_trace_dropped(trace));
    if (trace && tg_trace_close(trace, err, sizeof err) != TG_OK) {
        say_error(&st, err);
        if (code == TG_EXIT_OK)
            code = TG_EXIT_RUNTIME;
    }
out:
    free(st.scratch);
    if (st.metrics && (fclose(st.metrics) != 0 || st.metrics_failed)) {
        fprintf(stderr, "tapegrad train: writing %s failed\n", o->metrics);
        if (code == TG_EXIT_OK)
            code = TG_EXIT_RUNTIME;
    }
    return code;
}
