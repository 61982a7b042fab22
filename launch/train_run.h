/*
 * launch/train_run.h: one rank's state in `tapegrad train`, shared by the
 * run (train_run.c) and its checkpoints, resuming and pre-emption marker
 * (train_ckpt.c); private to those two files.
 */
#ifndef TAPEGRAD_LAUNCH_TRAIN_RUN_H
#define TAPEGRAD_LAUNCH_TRAIN_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "progress.h"
#include "tapegrad/checkpoint.h"
#include "train.h"

#define MAX_CKPT_TENSORS (3 * TG_PARAMS_MAX + 8)

/* Everything one rank's run needs in the hooks. */
typedef struct run_state {
    const train_opts *o;
    tg_world *w;
    tg_ddp *ddp;
    int rank, world;
    FILE *metrics;
    bool metrics_failed;
    char cfg_text[8192];
    char err[1536];         /* a hook's failure, said in our words */
    int err_code;           /* its exit code (0: from the status) */
    int64_t stop_step;      /* the step the run stopped at after a signal */
    int64_t stop_ranks;     /* how many ranks had seen a signal */
    char last_ckpt[4096];   /* the last checkpoint written (rank 0) */
    unsigned char *scratch; /* --check-replicas: one tensor's bytes */
    size_t scratch_len;
    bool bar;          /* stdout is a terminal: one redrawn progress line */
    tg_progress *prog; /* its thread, while the trainer runs */
    char threads[96];  /* the banner's thread count, e.g. "2" */
    tg_cli_data_record data; /* rank 0 with --ckpt-dir: what checkpoints record */
    bool zero;         /* --zero 1 on more than one rank */
    tg_ckpt_tensor *zts; /* a --zero 1 resume's tensors, until the ddp takes its shard */
    int nzts;
    int64_t zsteps;
} run_state;

/* Prints "tapegrad train: rank R: MSG" (the rank only in a real job, and
 * not twice when MSG already names it). */
static inline void say_error(const run_state *st, const char *msg) {
    if (st->world > 1 && strncmp(msg, "rank ", 5) != 0)
        fprintf(stderr, "tapegrad train: rank %d: %s\n", st->rank, msg);
    else
        fprintf(stderr, "tapegrad train: %s\n", msg);
}

static inline tg_status hook_fail(run_state *st, tg_status s, int code, const char *msg) {
    snprintf(st->err, sizeof st->err, "%s", msg);
    st->err_code = code;
    return s;
}

/* ---- launch/train_ckpt.c ---- */

/* Rank 0 saves; then every rank learns whether it worked, so that a failed
 * save ends every rank with the same exit code. */
tg_status tg_train_save_checkpoint(run_state *st, tg_trainer *tr);
/* Rank 0 picks the file (the auto policy, or --resume FILE) and tells the
 * others; *path is "" to start afresh. Returns an exit code, the same on
 * every rank. */
int tg_train_choose_resume(run_state *st, tg_trainer *tr, char *path, size_t len);
/* Loads `path` into this rank's trainer and moves it to the saved position.
 * Returns an exit code (0: loaded; -1: the run was already complete). */
int tg_train_load_resume(run_state *st, tg_trainer *tr, const char *path);
/* The pre-emption marker (CKPT_DIR/PREEMPTED): removed when a run starts,
 * written by rank 0 after the checkpoint of a signal stop. */
void tg_train_clear_marker(const train_opts *o);
void tg_train_write_marker(const run_state *st, int sig);

#endif
