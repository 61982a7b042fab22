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

typedef struct tg__omp_throttle tg__omp_throttle;

/* NULL when out of memory (the backend then runs without it). `threads` is
 * the context's setting (1: the watch is off). */
tg__omp_throttle *tg__omp_throttle_new(int threads);
void tg__omp_throttle_free(tg__omp_throttle *t);
/* Once per step, on the training thread: reads the clocks, feeds the watch,
 * and turns the short spin on or off. */
void tg__omp_throttle_step(tg__omp_throttle *t);
/* Turns the short spin on or off now (the step calls this). */
void tg__omp_throttle_set(tg__omp_throttle *t, bool throttled);
/* Whether the short spin is on. */
bool tg__omp_throttle_active(const tg__omp_throttle *t);
/* Whether the watch runs (off: the user's OMP_WAIT_POLICY or GOMP_SPINCOUNT,
 * one thread, no run delay to read). */
bool tg__omp_throttle_watching(const tg__omp_throttle *t);

#endif
