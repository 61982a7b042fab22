/*
 * launch/train_ckpt.c: the checkpoints of one rank of `tapegrad train`:
 * saving (rank 0 writes, every rank learns the outcome), resuming before
 * the first step (choosing the file, checking and loading it) and the
 * pre-emption marker left after a signal stop. The run itself is
 * launch/train_run.c.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tapegrad/checkpoint.h"
#include "tapegrad/modelfile.h"
#include "train.h"
#include "train_run.h"

/* ---- checkpoints ---- */

/* Parameters, buffers and the optimizer's state: what a checkpoint holds. */
static int ckpt_tensors(tg_trainer *tr, tg_tensor **ts, tg_tensor *const *extra, int nextra) {
    const tg_params *ps = tg_trainer_params(tr);
    int n = 0;
    for (int i = 0; i < ps->nparams; i++)
        ts[n++] = ps->params[i];
    for (int i = 0; i < ps->nbuffers; i++)
        ts[n++] = ps->buffers[i];
    int k = tg_optim_state(tg_trainer_optim(tr), ts + n, MAX_CKPT_TENSORS - n);
    for (int i = 0; i < nextra && n + k < MAX_CKPT_TENSORS; i++)
        ts[n + k++] = extra[i];
    return k > MAX_CKPT_TENSORS - n ? -1 : n + k;
}

/* Rank 0 saves; then every rank learns whether it worked, so that a failed
 * save ends every rank with the same exit code. */
tg_status tg_train_save_checkpoint(run_state *st, tg_trainer *tr) {
    tg_ctx *ctx = tg_trainer_ctx(tr);
    int64_t code = 0;
    /* --zero 1: rank 0 gathers the whole optimizer state (the file's format
     * does not depend on the world size or on ZeRO). */
    tg_tensor *zs[MAX_CKPT_TENSORS];
    int nz = 0;
    if (st->zero && tg_ddp_zero_gather_state(st->ddp, zs, MAX_CKPT_TENSORS, &nz) != TG_OK)
        return hook_fail(st, TG_ERR_COMM, TG_EXIT_LOST_RANK, tg_world_error(st->w));
    tg_optim *opt = st->zero ? tg_ddp_zero_optim(st->ddp) : tg_trainer_optim(tr);
    if (st->rank == 0) {
        tg_tensor *ts[MAX_CKPT_TENSORS];
        int n = ckpt_tensors(tr, ts, zs, nz);
        tg_trainer_state ps = tg_trainer_state_get(tr);
        const tg_trainer_config *c = tg_trainer_get_config(tr);
        tg_ckpt_meta m = {.step = ps.step,
                          .epoch = ps.epoch,
                          .samples_consumed = ps.samples_consumed,
                          .rng = {ps.seed, 0},
                          .optim_steps = tg_optim_steps(opt),
                          .world_size = st->world,
                          .config = st->cfg_text,
                          .data_path = st->data.path,
                          .data_bytes = st->data.bytes};
        const tg_model *md = tg_trainer_model(tr);
        snprintf(m.model, sizeof m.model, "%s", md->name);
        snprintf(m.data_sha256, sizeof m.data_sha256, "%s", st->data.sha256);
        /* The model file, so that eval, export and inspect rebuild the model
         * from the checkpoint alone. */
        m.model_text = c->model_text ? c->model_text : tg_model_builtin_text(md->name);
        memcpy(m.model_input, md->in_shape, sizeof m.model_input);
        m.model_input_ndim = md->in_ndim;
        m.model_classes = md->num_classes;
        tg_ctx_clear_error(ctx);
        tg_status s = n < 0 ? TG_ERR_INVALID
                            : tg_ckpt_save(ctx, st->o->ckpt_dir, &m, n, ts, st->o->keep,
                                           st->last_ckpt, sizeof st->last_ckpt);
        if (s != TG_OK) {
            char msg[1200];
            snprintf(msg, sizeof msg, "saving the checkpoint of step %lld failed: %s",
                     (long long)ps.step, n < 0 ? "too many tensors" : tg_ctx_error(ctx));
            hook_fail(st, s, TG_EXIT_DATA, msg);
            code = TG_EXIT_DATA;
        }
    }
    if (st->world > 1 && tg_broadcast(st->w, &code, 1, TG_I64, 0, "checkpoint saved") != TG_OK)
        return hook_fail(st, TG_ERR_COMM, TG_EXIT_LOST_RANK, tg_world_error(st->w));
    if (code && st->rank != 0)
        return hook_fail(st, TG_ERR_IO, (int)code,
                         "rank 0 could not save the checkpoint (see its message); stopping");
    return code ? TG_ERR_IO : TG_OK;
}

/* ---- resuming ---- */

/* Rank 0 picks the file (the auto policy, or --resume FILE) and tells the
 * others, so that every rank loads the same one. *path is "" to start
 * afresh. Returns an exit code, the same on every rank. */
/* Whether the checkpoint at path holds every parameter and buffer of the
 * trainer's model under its name, shape and dtype: a file that verifies can
 * still fail here (an old-format file, written before checkpoints had a
 * whole-file checksum, with a damaged tensor name), and --resume auto then
 * falls back to an older one instead of failing at the load. */
static bool fits_model(const char *path, void *user, char *why, size_t whylen) {
    tg_trainer *tr = user;
    const tg_params *ps = tg_trainer_params(tr);
    tg_ckpt_tensor *ts = NULL;
    int n = 0;
    tg_ctx *ctx = tg_trainer_ctx(tr);
    if (tg_ckpt_read_tensors(ctx, path, &ts, &n) != TG_OK) {
        snprintf(why, whylen, "%s", tg_ctx_error(ctx));
        return false;
    }
    char detail[512];
    bool ok = tg_train_ckpt_fits(tg_trainer_model(tr)->name, ps, ts, n, detail,
                                 sizeof detail);
    if (!ok)
        snprintf(why, whylen, "%s: %s", path, detail);
    tg_ckpt_tensors_free(ts, n);
    return ok;
}

int tg_train_choose_resume(run_state *st, tg_trainer *tr, char *path, size_t len) {
    tg_ctx *ctx = tg_trainer_ctx(tr);
    const train_opts *o = st->o;
    int64_t code = 0;
    path[0] = '\0';
    if (st->rank == 0) {
        if (strcmp(o->resume, "auto") != 0) {
            snprintf(path, len, "%s", o->resume);
        } else {
            char warn[2048];
            tg_ctx_clear_error(ctx);
            tg_status s = tg_ckpt_find_usable(ctx, o->ckpt_dir, path, len, warn, sizeof warn,
                                              fits_model, tr);
            if (s == TG_OK)
                tg_ctx_clear_error(ctx); /* a candidate's failed check left its message */
            if (s == TG_OK && warn[0]) {
                fprintf(stderr, "tapegrad train: warning: %s\n", warn);
            } else if (s != TG_OK && !warn[0] && s == TG_ERR_IO) {
                printf("resume auto: no checkpoint in %s; starting afresh\n", o->ckpt_dir);
                path[0] = '\0';
            } else if (s != TG_OK) {
                fprintf(stderr, "tapegrad train: --resume auto: %s%s%s\n", tg_ctx_error(ctx),
                        warn[0] ? ": " : "", warn);
                code = TG_EXIT_DATA;
            }
        }
    }
    if (st->world > 1) {
        if (tg_broadcast(st->w, &code, 1, TG_I64, 0, "resume choice") != TG_OK ||
            tg_broadcast(st->w, path, (int64_t)len, TG_U8, 0, "resume path") != TG_OK) {
            say_error(st, tg_world_error(st->w));
            return TG_EXIT_LOST_RANK;
        }
    }
    return (int)code;
}

/* The key of a "key = value" line (or of an unset "# key = ..." comment):
 * its start and length. */
static const char *line_key(const char *l, size_t n, size_t *kl) {
    if (n >= 2 && l[0] == '#' && l[1] == ' ')
        l += 2, n -= 2;
    const char *eq = memchr(l, '=', n);
    *kl = eq ? (size_t)(eq - l) : 0;
    return l;
}

/* Names the settings that differ from the checkpoint's (a resumed run
 * takes the command line's; a different schedule or batch changes it).
 * Only keys that the checkpoint records count: an older checkpoint records
 * fewer options. */
static void warn_config(const char *old, const char *now, const char *path) {
    bool said = false;
    for (const char *l = now; *l;) {
        size_t n = strcspn(l, "\n"), kl;
        const char *k = line_key(l, n, &kl);
        bool known = false, same = false;
        for (const char *o = old; *o && kl;) {
            size_t on = strcspn(o, "\n"), okl;
            const char *ok = line_key(o, on, &okl);
            if (okl == kl && strncmp(ok, k, kl) == 0) {
                known = true;
                same = on == n && strncmp(o, l, n) == 0;
            }
            o += on + (o[on] == '\n');
        }
        if (known && !same) {
            if (!said)
                fprintf(stderr,
                        "tapegrad train: warning: resuming %s with other settings (the "
                        "new ones apply):",
                        path);
            if (k != l) /* "# key = (unset: ...)" */
                fprintf(stderr, " %.*s unset;", (int)kl - 1, k);
            else
                fprintf(stderr, " %.*s;", (int)n, l);
            said = true;
        }
        l += n + (l[n] == '\n');
    }
    if (said)
        fprintf(stderr, "\n");
}

/* Loads `path` into this rank's trainer and moves it to the saved position.
 * Returns an exit code (0: loaded; -1: the run was already complete). */
int tg_train_load_resume(run_state *st, tg_trainer *tr, const char *path) {
    tg_ctx *ctx = tg_trainer_ctx(tr);
    const tg_trainer_config *c = tg_trainer_get_config(tr);
    char msg[1400];
    tg_ckpt_meta m = {0};
    tg_ctx_clear_error(ctx);
    tg_status s = tg_ckpt_read_meta(ctx, path, &m);
    if (s) {
        snprintf(msg, sizeof msg, "--resume: %s", tg_ctx_error(ctx));
        say_error(st, msg);
        return s == TG_ERR_NOMEM ? TG_EXIT_RUNTIME : TG_EXIT_DATA;
    }
    /* Another model is reported by the load below, which names the first
     * tensor that differs and the file's model. */
    int code = 0;
    int64_t want;
    /* The reader bounds step to 2^48, but a batch size can still make the
     * product overflow: that checkpoint cannot be this run's. */
    if (__builtin_mul_overflow(m.step, (int64_t)c->batch_size, &want)) {
        snprintf(msg, sizeof msg,
                 "--resume: %s: the field 'step' (%lld) times --batch-size %lld overflows: not a "
                 "checkpoint of this run",
                 path, (long long)m.step, (long long)c->batch_size);
        code = TG_EXIT_DATA;
    } else if (m.samples_consumed != want) {
        snprintf(msg, sizeof msg,
                 "--resume: %s was written with another global batch (%lld samples in %lld "
                 "steps), this run has --batch-size %lld",
                 path, (long long)m.samples_consumed, (long long)m.step, (long long)c->batch_size);
        code = TG_EXIT_USAGE;
    }
    if (code > 0) {
        say_error(st, msg);
        tg_ckpt_meta_free(&m);
        return code;
    }
    if (st->rank == 0 && m.config)
        warn_config(m.config, st->cfg_text, path);
    const char *text =
        c->model_text ? c->model_text : tg_model_builtin_text(tg_trainer_model(tr)->name);
    if (st->rank == 0 && m.model_text && text && strcmp(m.model_text, text) != 0)
        fprintf(stderr,
                "tapegrad train: warning: resuming %s with another model file than it was "
                "trained with (the texts differ; its tensors must still fit by name and shape)\n",
                path);
    tg_tensor *ts[MAX_CKPT_TENSORS];
    int n = ckpt_tensors(tr, ts, NULL, 0);
    /* The position first: it resets the optimizer's step counts, which the
     * checkpoint's own step tensors then overwrite. A checkpoint at or past
     * the end is still loaded, to report a broken or foreign file. */
    bool complete = m.step >= tg_trainer_total_steps(tr);
    s = complete ? TG_OK : tg_trainer_set_position(tr, m.step, m.samples_consumed);
    if (s == TG_OK) {
        tg_optim_set_steps(tg_trainer_optim(tr), m.optim_steps);
        st->zsteps = m.optim_steps;
        msg[0] = 0;
        s = st->zero ? tg_train_zero_read(tr, path, &st->zts, &st->nzts, msg, sizeof msg)
                     : tg_ckpt_load(ctx, path, n, ts, NULL);
    }
    if (s) {
        char why[sizeof msg];
        snprintf(why, sizeof why, "%s", msg[0] ? msg : tg_ctx_error(ctx));
        snprintf(msg, sizeof msg, "--resume: %.1380s", why);
        say_error(st, msg);
        code = s == TG_ERR_NOMEM ? TG_EXIT_RUNTIME : TG_EXIT_DATA;
    } else if (complete) {
        if (st->rank == 0)
            printf("%s is at step %lld: the run (%lld steps) is already complete\n", path,
                   (long long)m.step, (long long)tg_trainer_total_steps(tr));
        code = -1;
    } else if (st->rank == 0) {
        printf("resumed from %s: step %lld, epoch %lld, %lld samples consumed (written by %d "
               "rank%s)\n",
               path, (long long)m.step, (long long)m.epoch + 1, (long long)m.samples_consumed,
               m.world_size, m.world_size == 1 ? "" : "s");
    }
    tg_ckpt_meta_free(&m);
    return code;
}

/* ---- the pre-emption marker ---- */

/*
 * After the checkpoint of a signal stop, rank 0 leaves CKPT_DIR/PREEMPTED
 * ("step N", the signal, the checkpoint), and removes it when the next run
 * starts. A batch script reads it when the launcher does not pass exit code
 * 75 on: mpirun that got SIGTERM or SIGINT itself exits 1 although every
 * rank checkpointed and returned 75 (docs/SLURM.md).
 */
static void marker_path(const train_opts *o, char *buf, size_t len, const char *suffix) {
    snprintf(buf, len, "%s/%s%s", o->ckpt_dir, TG_PREEMPT_MARKER, suffix);
}

void tg_train_clear_marker(const train_opts *o) {
    char p[4200];
    marker_path(o, p, sizeof p, "");
    if (unlink(p) != 0 && errno != ENOENT)
        fprintf(stderr, "tapegrad train: warning: cannot remove %s: %s\n", p, strerror(errno));
}

void tg_train_write_marker(const run_state *st, int sig) {
    char p[4200], tmp[4200];
    marker_path(st->o, p, sizeof p, "");
    marker_path(st->o, tmp, sizeof tmp, ".tmp");
    FILE *f = fopen(tmp, "w");
    bool ok = f && fprintf(f, "step %lld\nsignal %s\ncheckpoint %s\n", (long long)st->stop_step,
                           sig == SIGTERM   ? "SIGTERM"
                           : sig == SIGUSR1 ? "SIGUSR1"
                           : sig == SIGINT  ? "SIGINT"
                                            : "another rank's",
                           st->last_ckpt) > 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (ok && rename(tmp, p) == 0)
        return;
    fprintf(stderr, "tapegrad train: warning: cannot write %s: %s\n", p, strerror(errno));
    remove(tmp);
}
