/*
 * kernels/cpu/omp_throttle.h: the short OpenMP spin while the cores are
 * shared (omp_throttle.c). Internal to the CPU backend; the decision is
 * exposed for its unit test (tests/test_omp_throttle.c).
 */
#ifndef TG_KERNELS_CPU_OMP_THROTTLE_H
#define TG_KERNELS_CPU_OMP_THROTTLE_H

#include <stdbool.h>

/* The figures are summed over windows of at least this much runnable time
 * (about ten of the scheduler's time slices under load; the run delay of one
 * interruption by a kernel thread is a small part of it). */
#define TG__SPIN_WINDOW_S 0.05
/* A window in which the training thread waited for a CPU this part of the
 * time or more turns the short spin on... */
#define TG__SPIN_BUSY_FRAC 0.10
/* ...and windows below this part, TG__SPIN_QUIET_WINDOWS of them in a row
 * (twice as many after each time the short spin had to come back within
 * that many windows, up to TG__SPIN_QUIET_MAX), turn it off again. */
#define TG__SPIN_QUIET_FRAC 0.03
#define TG__SPIN_QUIET_WINDOWS 4
#define TG__SPIN_QUIET_MAX 256
/* More parked threads than this (a few threads on a very large node) and
 * the short spin is not used. */
#define TG__SPIN_MAX_PARKED 256

typedef struct tg__spin_watch {
    double time, delay; /* runnable time and run delay summed over the window, s */
    int quiet;          /* quiet windows in a row while throttled */
    int need;           /* quiet windows that turn the short spin off (0: the default) */
    int since;          /* windows since it was last turned off */
    bool released;      /* it was turned off at least once */
    bool throttled;
} tg__spin_watch;

/* Feeds one interval's runnable time of the training thread (on a CPU or
 * waiting for one) and the part of it spent waiting (its run delay), in
 * seconds (a negative figure is skipped); returns whether the short spin
 * should be on. A zeroed struct is the starting state (long spin). */
bool tg__spin_watch_feed(tg__spin_watch *w, double time_s, double delay_s);

/*
 * While the cores are shared, whether a step runs on all the context's
 * threads or on one is measured rather than guessed: a trial of each (at
 * least TG__PICK_TRIAL_STEPS steps and TG__PICK_TRIAL_S seconds, the first
 * step after a switch not counted), one thread first, then the faster is kept
 * for TG__PICK_HOLD_S (and TG__PICK_HOLD_TRIALS trials' time) and the
 * other tried again. The products and
 * convolutions cut their work by the context's thread count whatever number
 * of threads runs it, so both give the same bits.
 */
#define TG__PICK_TRIAL_S 0.1
#define TG__PICK_TRIAL_STEPS 4
#define TG__PICK_HOLD_S 2.0
/* ...and at least this many times the longest trial, so that with long steps
 * (a trial of 4 steps of 0.3 s) the slower setting's trials stay a small
 * part of the time. */
#define TG__PICK_HOLD_TRIALS 10

typedef struct tg__thread_pick {
    double per[2]; /* seconds per step measured on all threads [0] and on one [1]; 0: none */
    double sum;    /* seconds of the steps timed in the current trial or hold window */
    int n;         /* ...and their number */
    double held;   /* seconds the current choice has been kept */
    double trial;  /* seconds of the longest trial so far */
    bool one;      /* steps run on one thread */
    bool holding;  /* the current setting was chosen (not on trial) */
    bool skip;     /* the next step is the first after a switch: not timed */
} tg__thread_pick;

/* Feeds one step: whether the cores are shared now (the spin watch's
 * decision) and the step's wall time in seconds (negative: unknown, not
 * counted); returns whether the next steps run on one thread. A zeroed
 * struct is the starting state (all threads). */
bool tg__thread_pick_feed(tg__thread_pick *p, bool shared, double step_s);

typedef struct tg__omp_throttle tg__omp_throttle;

/* NULL when out of memory (the backend then runs without it). `threads` is
 * the context's thread count (1: the watch is off). */
tg__omp_throttle *tg__omp_throttle_new(int threads);
void tg__omp_throttle_free(tg__omp_throttle *t);
/* Once per step, on the training thread: reads the clocks, feeds the watch,
 * turns the short spin on or off, and (when may_one) chooses between all the
 * threads and one for the next steps (tg__thread_pick_feed). */
void tg__omp_throttle_step(tg__omp_throttle *t, bool may_one);
/* Runs the calling thread's steps on one thread or on the team now (the step
 * calls this with its choice). */
void tg__omp_throttle_run_one(tg__omp_throttle *t, bool one);
/* Runs the training thread's steps on the whole team from now on, until the
 * next step's choice (which the backend then makes with may_one false). */
void tg__omp_throttle_team(tg__omp_throttle *t);
/* Whether steps run on one thread now. */
bool tg__omp_throttle_one(const tg__omp_throttle *t);
/* Turns the short spin on or off now (the step calls this). */
void tg__omp_throttle_set(tg__omp_throttle *t, bool throttled);
/* Whether the short spin is on. */
bool tg__omp_throttle_active(const tg__omp_throttle *t);
/* Whether the watch runs (off: the user's OMP_WAIT_POLICY or GOMP_SPINCOUNT,
 * one thread, no run delay to read). */
bool tg__omp_throttle_watching(const tg__omp_throttle *t);

#endif
