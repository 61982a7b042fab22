/*
 * launch/progress.h: the progress bar of `tapegrad train` on a terminal.
 * Private to launch/.
 *
 * A thread redraws one line about ten times a second from the trainer's
 * progress counters (tg_trainer_progress_get: atomic reads, nothing added to
 * the training path but one relaxed store per step):
 *
 *   epoch 2/15 [########........] 180/468  loss 0.4213  21034 samples/s  0:12<0:49
 *   eval [#####.........] 12/40  0:03
 *
 * The bar follows the terminal's width; the times are the run's elapsed
 * time and its estimated remainder (to --max-steps when that ends the run
 * before the epochs). Whoever else writes to the terminal takes the line
 * first with tg_progress_hold() (which clears it) and gives it back with
 * tg_progress_release().
 */
#ifndef TAPEGRAD_LAUNCH_PROGRESS_H
#define TAPEGRAD_LAUNCH_PROGRESS_H

#include <stdint.h>

#include "tapegrad/trainer.h"

typedef struct tg_progress tg_progress;

/* Starts the bar for tr on stdout (which must be a terminal); global_batch
 * gives samples/s. NULL when the thread cannot start (then there is no bar;
 * the run goes on). */
tg_progress *tg_progress_start(const tg_trainer *tr, int64_t global_batch);
/* The loss shown: that of the last logged step. */
void tg_progress_set_loss(tg_progress *p, double loss);
void tg_progress_hold(tg_progress *p);
void tg_progress_release(tg_progress *p);
/* Stops the thread and clears the line; NULL is ok. */
void tg_progress_stop(tg_progress *p);

#endif
