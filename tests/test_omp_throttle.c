/*
 * tests/test_omp_throttle.c: the CPU backend's spin watch
 * (kernels/cpu/omp_throttle.c): idle OpenMP workers spin libgomp's long
 * default while the training thread gets its CPU, and briefly while it waits
 * for one (the cores are shared).
 *
 *   - The decision, fed synthetic runnable-time and run-delay figures: quiet windows
 *     keep the long spin, a busy window turns the short one on, short steps
 *     are summed into windows, it turns off after quiet windows in a row,
 *     asks for longer quiet after coming back soon, skips bad figures.
 *   - The switch itself: with the short spin on, a worker that finished a
 *     region sleeps at once (the process uses almost no CPU while the
 *     training thread sleeps), where libgomp's default spin burns
 *     milliseconds; switched off, the helper thread is gone.
 *   - All threads or one while the cores are shared, fed synthetic step
 *     times: one thread first, then the team's trial, the faster kept for
 *     the hold and the other tried again; free cores give the team back and
 *     forget the figures.
 *   - Running on one thread and back: OpenMP's and OpenBLAS's counts follow,
 *     the team comes back at the first oneDNN product and when freed.
 *   - The user's OMP_WAIT_POLICY or GOMP_SPINCOUNT turns the watch off, as
 *     does one thread.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu/omp_throttle.h"

/* ---- the decision ---- */

/* Feeds `n` steps of `time` runnable seconds with `frac` of it spent
 * waiting for a CPU. */
static bool feed(tg__spin_watch *w, int n, double time, double frac) {
    bool on = w->throttled;
    for (int i = 0; i < n; i++)
        on = tg__spin_watch_feed(w, time, time * frac);
    return on;
}

static void test_quiet_keeps_long_spin(void **state) {
    (void)state;
    tg__spin_watch w = {0};
    assert_false(feed(&w, 1000, 0.01, 0.0));
    assert_false(feed(&w, 1000, 0.01, TG__SPIN_BUSY_FRAC * 0.9));
}

static void test_busy_window_turns_short_spin_on(void **state) {
    (void)state;
    tg__spin_watch w = {0};
    /* Steps of 1/256 s (exact in binary): the first window closes when they
     * add up to 0.2 s, not before. */
    const double step = 1.0 / 256;
    int per_window = 0;
    while (per_window * step < TG__SPIN_WINDOW_S)
        per_window++;
    assert_false(feed(&w, per_window - 1, step, 0.5));
    assert_true(feed(&w, 1, step, 0.5));
    /* A single long step is a window of its own. */
    tg__spin_watch w2 = {0};
    assert_true(tg__spin_watch_feed(&w2, 1.0, 0.2));
    /* One busy step among quiet ones, under the threshold for its window. */
    assert_true(1.0 / per_window < TG__SPIN_BUSY_FRAC);
    tg__spin_watch w3 = {0};
    assert_false(feed(&w3, per_window - 1, step, 0.0) || tg__spin_watch_feed(&w3, step, step));
}

static void test_quiet_windows_turn_it_off(void **state) {
    (void)state;
    tg__spin_watch w = {0};
    assert_true(feed(&w, 1, 0.5, 0.4));
    /* Quiet windows, one short of the number needed: still on. */
    assert_true(feed(&w, TG__SPIN_QUIET_WINDOWS - 1, 0.5, 0.0));
    /* A window between the two thresholds starts the count again. */
    assert_true(feed(&w, 1, 0.5, (TG__SPIN_QUIET_FRAC + TG__SPIN_BUSY_FRAC) / 2));
    assert_true(feed(&w, TG__SPIN_QUIET_WINDOWS - 1, 0.5, 0.0));
    assert_false(feed(&w, 1, 0.5, 0.0));
}

static void test_back_soon_asks_longer_quiet(void **state) {
    (void)state;
    tg__spin_watch w = {0};
    assert_true(feed(&w, 1, 0.5, 0.4));
    assert_false(feed(&w, TG__SPIN_QUIET_WINDOWS, 0.5, 0.0));
    /* Busy again in the next window: its own spinning was the waiting. */
    assert_true(feed(&w, 1, 0.5, 0.4));
    assert_true(feed(&w, TG__SPIN_QUIET_WINDOWS, 0.5, 0.0));
    assert_true(feed(&w, TG__SPIN_QUIET_WINDOWS - 1, 0.5, 0.0));
    assert_false(feed(&w, 1, 0.5, 0.0)); /* twice as many quiet windows */
    /* The longest wait is capped. */
    for (int i = 0; i < 20; i++) {
        feed(&w, 1, 0.5, 0.4);
        feed(&w, TG__SPIN_QUIET_MAX, 0.5, 0.0);
    }
    assert_false(w.throttled);
    assert_true(w.need <= TG__SPIN_QUIET_MAX);
    /* After a long quiet spell the default number holds again. */
    feed(&w, TG__SPIN_QUIET_MAX, 0.5, 0.0);
    assert_true(feed(&w, 1, 0.5, 0.4));
    assert_true(feed(&w, TG__SPIN_QUIET_WINDOWS - 1, 0.5, 0.0));
    assert_false(feed(&w, 1, 0.5, 0.0));
}

static void test_bad_figures_skipped(void **state) {
    (void)state;
    tg__spin_watch w = {0};
    assert_false(tg__spin_watch_feed(&w, 1.0, -1.0)); /* the delay was not read */
    assert_false(tg__spin_watch_feed(&w, -1.0, 0.5)); /* a counter went back */
    assert_true(w.time == 0 && w.delay == 0);
    assert_true(tg__spin_watch_feed(&w, 1.0, 0.5));
}

/* ---- all threads or one ---- */

/* Feeds n steps of `step` seconds while the cores are `shared`; returns the
 * last answer. (Step times are chosen so that no trial ends on a rounding.) */
static bool steps(tg__thread_pick *p, bool shared, double step, int n) {
    bool one = p->one;
    for (int i = 0; i < n; i++)
        one = tg__thread_pick_feed(p, shared, step);
    return one;
}

static void test_pick_free_machine_keeps_team(void **state) {
    (void)state;
    tg__thread_pick p = {0};
    assert_false(steps(&p, false, 0.01, 1000));
    assert_false(p.one);
}

/* Shared cores: one thread first; the team's trial next; the faster kept
 * for the hold, then the other tried again; each trial needs its steps and
 * its time. */
static void test_pick_measures_both_keeps_faster(void **state) {
    (void)state;
    tg__thread_pick p = {0};
    assert_true(tg__thread_pick_feed(&p, true, 0.01)); /* shared now: one thread */
    assert_true(tg__thread_pick_feed(&p, true, 5.0));  /* the switch's own step: not timed */
    /* One thread at 30 ms a step: 4 steps make its trial (0.12 s). */
    assert_true(steps(&p, true, 0.03, TG__PICK_TRIAL_STEPS - 1));
    assert_false(tg__thread_pick_feed(&p, true, 0.03)); /* the team's trial */
    assert_true(p.per[1] > 0.029 && p.per[1] < 0.031);
    assert_false(tg__thread_pick_feed(&p, true, 1.0)); /* not timed */
    /* The team at 11 ms: 9 steps are not enough time, 10 are (0.11 s). */
    assert_false(steps(&p, true, 0.011, 9));
    assert_true(p.per[0] == 0);
    assert_false(tg__thread_pick_feed(&p, true, 0.011));
    assert_true(p.holding && p.per[0] > 0.0109 && p.per[0] < 0.0111);
    /* Kept for the hold (windows of 10 steps, 0.11 s: 19 make 2 s), then
     * one thread is tried again. */
    assert_false(steps(&p, true, 0.011, 18 * 10 + 9));
    assert_true(tg__thread_pick_feed(&p, true, 0.011));
    assert_false(p.holding);
    assert_true(p.per[1] == 0);
    /* One thread is now the faster (6 ms): after its trial (17 steps) it
     * is kept. */
    assert_true(steps(&p, true, 0.006, 1 + 16));
    assert_false(p.holding);
    assert_true(tg__thread_pick_feed(&p, true, 0.006));
    assert_true(p.holding && p.per[1] < p.per[0]);
    assert_true(steps(&p, true, 0.006, 100));
    /* The cores free again: the team, and the figures forgotten. */
    assert_false(tg__thread_pick_feed(&p, false, 0.006));
    assert_true(p.per[0] == 0 && p.per[1] == 0 && !p.holding);
    assert_true(tg__thread_pick_feed(&p, true, 0.006)); /* shared again: one first */
}

/* Long steps (a cnn's 0.3 s): trials of 4 steps, and the hold lasts ten
 * trials' time, not 2 s, before the slower setting is tried again. */
static void test_pick_long_steps_hold_longer(void **state) {
    (void)state;
    tg__thread_pick p = {0};
    assert_true(steps(&p, true, 0.3, 2 + 3));   /* the switch, its untimed step, 3 of 4 */
    assert_false(steps(&p, true, 0.3, 1));      /* one thread measured (1.2 s) */
    assert_false(steps(&p, true, 0.25, 1 + 4)); /* the team's trial: faster, kept */
    assert_true(p.holding);
    assert_false(steps(&p, true, 0.25, 44)); /* 11 s */
    assert_true(p.holding);
    assert_true(steps(&p, true, 0.25, 8)); /* 13 s: one thread's new trial */
}

static void test_pick_team_slower_stays_one(void **state) {
    (void)state;
    tg__thread_pick p = {0};
    assert_true(steps(&p, true, 0.03, 2)); /* the switch and its untimed step */
    assert_true(steps(&p, true, 0.03, 3));
    assert_false(steps(&p, true, 0.03, 1)); /* one thread measured: the team's trial */
    assert_false(steps(&p, true, 0.05, 4)); /* its untimed step and 3 of 4 */
    assert_true(steps(&p, true, 0.05, 1));  /* the team is slower: back to one, kept */
    assert_true(p.holding);
    /* Unknown step times are not counted. */
    assert_true(steps(&p, true, 0.05, 1)); /* the switch's untimed step */
    const int n = p.n;
    assert_true(tg__thread_pick_feed(&p, true, -1.0));
    assert_int_equal(p.n, n);
    assert_true(tg__thread_pick_feed(&p, true, 0.05));
    assert_int_equal(p.n, n + 1);
}

/* ---- the switch ---- */

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static volatile double g_sink;

/* The process's CPU seconds while the calling thread sleeps 50 ms after a
 * region on every thread: what the idle workers spend spinning. */
static double idle_cpu_after_region(void) {
#pragma omp parallel
    {
        double s = 0;
        for (int i = 0; i < 1000; i++)
            s += i * 0.5;
        g_sink = s;
    }
    const double c0 = cpu_s();
    usleep(50000);
    return cpu_s() - c0;
}

static void test_short_spin_sleeps_at_once(void **state) {
    (void)state;
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") || omp_get_num_procs() < 2) {
        print_message("skipped: a wait policy of the user's, or one CPU\n");
        skip();
    }
    omp_set_num_threads(omp_get_num_procs());
    tg__omp_throttle *t = tg__omp_throttle_new(0);
    assert_non_null(t);
    /* A busy machine can only take CPU from a spinning worker (it loses its
     * core), never add to it while the calling thread sleeps: the long spin
     * is the most of five tries, the short one the least of three. */
    double spin_long = 0, spin_short = 1;
    for (int i = 0; i < 5; i++) {
        double c = idle_cpu_after_region();
        spin_long = c > spin_long ? c : spin_long;
    }
    tg__omp_throttle_set(t, true);
    assert_true(tg__omp_throttle_active(t));
    for (int i = 0; i < 3; i++) {
        double c = idle_cpu_after_region();
        spin_short = c < spin_short ? c : spin_short;
    }
    tg__omp_throttle_set(t, false);
    assert_false(tg__omp_throttle_active(t));
    print_message("idle CPU after a region: %.2f ms long spin, %.2f ms short\n", spin_long * 1e3,
                  spin_short * 1e3);
    if (spin_long < 1e-3) {
        print_message("skipped: libgomp's spin here is under 1 ms, too short to tell\n");
        tg__omp_throttle_free(t);
        skip();
    }
    assert_true(spin_short < spin_long / 4);
    /* Off again: the long spin is back. */
    double again = 0;
    for (int i = 0; i < 5; i++) {
        double c = idle_cpu_after_region();
        again = c > again ? c : again;
    }
    assert_true(again > spin_long / 4);
    /* Freed while on: the helper is joined. */
    tg__omp_throttle_set(t, true);
    tg__omp_throttle_free(t);
}

/* The switch between the team and one thread: OpenMP's count (and
 * OpenBLAS's, which follows it) on the calling thread; the first oneDNN
 * product's call puts the team back; freeing while on one thread restores
 * the team's count. */
static void test_run_one_and_back(void **state) {
    (void)state;
    omp_set_num_threads(2);
    tg__omp_throttle *t = tg__omp_throttle_new(2);
    assert_non_null(t);
    assert_false(tg__omp_throttle_one(t));
    tg__omp_throttle_run_one(t, true);
    assert_true(tg__omp_throttle_one(t));
    assert_int_equal(omp_get_max_threads(), 1);
    assert_int_equal(openblas_get_num_threads(), 1);
    tg__omp_throttle_team(t);
    assert_false(tg__omp_throttle_one(t));
    assert_int_equal(omp_get_max_threads(), 2);
    tg__omp_throttle_team(t); /* on the team already: nothing changes */
    assert_int_equal(omp_get_max_threads(), 2);
    tg__omp_throttle_run_one(t, true);
    tg__omp_throttle_free(t);
    assert_int_equal(omp_get_max_threads(), 2);
}

static void test_user_choice_turns_watch_off(void **state) {
    (void)state;
    char *saved_policy = getenv("OMP_WAIT_POLICY"), *saved_spin = getenv("GOMP_SPINCOUNT");
    saved_policy = saved_policy ? strdup(saved_policy) : NULL;
    saved_spin = saved_spin ? strdup(saved_spin) : NULL;
    unsetenv("OMP_WAIT_POLICY");
    unsetenv("GOMP_SPINCOUNT");
    tg__omp_throttle *t = tg__omp_throttle_new(2);
    const bool readable = access("/proc/thread-self/schedstat", R_OK) == 0;
    assert_int_equal(tg__omp_throttle_watching(t), readable);
    tg__omp_throttle_free(t);
    t = tg__omp_throttle_new(1);
    assert_false(tg__omp_throttle_watching(t));
    tg__omp_throttle_free(t);
    setenv("GOMP_SPINCOUNT", "300000", 1);
    t = tg__omp_throttle_new(2);
    assert_false(tg__omp_throttle_watching(t));
    tg__omp_throttle_free(t);
    unsetenv("GOMP_SPINCOUNT");
    setenv("OMP_WAIT_POLICY", "passive", 1);
    t = tg__omp_throttle_new(2);
    assert_false(tg__omp_throttle_watching(t));
    tg__omp_throttle_free(t);
    unsetenv("OMP_WAIT_POLICY");
    if (saved_policy)
        setenv("OMP_WAIT_POLICY", saved_policy, 1);
    if (saved_spin)
        setenv("GOMP_SPINCOUNT", saved_spin, 1);
    free(saved_policy);
    free(saved_spin);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quiet_keeps_long_spin),
        cmocka_unit_test(test_busy_window_turns_short_spin_on),
        cmocka_unit_test(test_quiet_windows_turn_it_off),
        cmocka_unit_test(test_back_soon_asks_longer_quiet),
        cmocka_unit_test(test_bad_figures_skipped),
        cmocka_unit_test(test_pick_free_machine_keeps_team),
        cmocka_unit_test(test_pick_measures_both_keeps_faster),
        cmocka_unit_test(test_pick_team_slower_stays_one),
        cmocka_unit_test(test_pick_long_steps_hold_longer),
        cmocka_unit_test(test_short_spin_sleeps_at_once),
        cmocka_unit_test(test_run_one_and_back),
        cmocka_unit_test(test_user_choice_turns_watch_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
