/*
 * launch/metrics.h: the JSONL metrics of `tapegrad train --metrics`, written
 * and read (by `tapegrad plot`) through cJSON, so that every string is
 * escaped, numbers stay numbers and a damaged line is an error, not a guess.
 * Private to launch/.
 *
 * Every line is one JSON object with "event" and "time" (Unix seconds, with
 * milliseconds). The events and their fields are listed in docs/TRAINING.md.
 */
#ifndef TAPEGRAD_LAUNCH_METRICS_H
#define TAPEGRAD_LAUNCH_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tapegrad/trainer.h"
#include "train.h"

/* {"event":"config","time":..,"world_size":N,"resumed_from_step":S|null,
 *  <each recorded option of train's table, typed; unset ones null>}; opts
 * may be NULL (their defaults). Returns 0, or -1 when writing failed. */
int tg_metrics_write_config(FILE *f, const tg_trainer_config *cfg, const train_opts *opts,
                            int world, int64_t resumed_from_step);

/* A "step", "epoch" or "end" event of the trainer; rss and peak in MiB (-1
 * when unknown, written as null). Returns 0, or -1 when writing failed. */
int tg_metrics_write_event(FILE *f, const tg_trainer_event *ev, int world, double rss,
                           double peak);

/* The curves of one metrics file, for plotting. Per step: step, loss. Per
 * epoch: epoch, step, train_loss, test_loss, test_acc, samples_per_s (NaN
 * where the file has null), and the optional val_loss, val_acc, test_mae,
 * val_mae, tokens_per_s (NaN where the file has null or lacks them: no
 * validation split, a classification run, data that is not tokens). A resumed run's events replace those of the first
 * run from the step it resumed at, so a curve never goes back. */
typedef struct tg_metrics_curves {
    size_t n_steps, cap_steps;
    double *step, *step_epoch, *loss;
    size_t n_epochs, cap_epochs;
    double *ep, *ep_step, *train_loss, *test_loss, *test_acc, *sps;
    double *val_loss, *val_acc, *test_mae, *val_mae, *tps;
} tg_metrics_curves;

/* Parses the text of a metrics file (name is used in messages). Returns 0,
 * or -1 with err naming the file, the line and what was wrong. Lines of
 * events it does not know are skipped. */
int tg_metrics_parse(const char *text, size_t len, const char *name, tg_metrics_curves *c,
                     char *err, size_t errlen);
void tg_metrics_curves_free(tg_metrics_curves *c);

#endif
