/*
 * kernels/cpu/omp_throttle.c: idle OpenMP workers spin long while the cores
 * are the process's own and briefly while they are shared (docs/performance/contention.md,
 * "Under contention").
 *
 * libgomp's idle workers spin GOMP_SPINCOUNT (300,000 by default, a few
 * milliseconds) at every barrier and between regions before they sleep. On
 * cores of its own that keeps the hand-off between the many short regions of
 * a step fast; on shared cores the spinning worker burns the time slice the
 * thread it waits for needs, and 2 threads fall far below 1 thread. libgomp
 * reads the spin count once, when it loads, and has no call to change it,
 * but it switches to a short spin by itself (100 iterations with the wait
 * policy unset, about 5 us) while it manages more threads than the process
 * has CPUs (the libgomp manual, GOMP_SPINCOUNT): its own defence against
 * oversubscription.
 *
 * So the CPU backend watches, once per step (tg_step_reset), how long the
 * training thread waited for a CPU while runnable (the run delay the kernel
 * keeps in /proc/thread-self/schedstat) against the time it was runnable
 * (on a CPU or waiting for one), over windows of 50 ms. When the
 * waiting is a noticeable part of the time, the cores are shared, and a
 * helper thread opens an OpenMP region whose threads sleep on a condition
 * variable: libgomp now manages more threads than CPUs and every spin in the
 * process becomes the short one. When the waiting has stayed low for a few
 * windows the region is closed and the helper joins, and the long spin is
 * back. The parked threads use no CPU.
 *
 * Even with the short spin, a step's regions wait at every barrier for a
 * partner that lost its core, which one thread never does; and whether the
 * team or one thread is faster on shared cores depends on how shared they
 * are. So while the watch finds the cores shared, the step is run on one
 * thread (OpenMP's and OpenBLAS's count set to 1 on the training thread)
 * and on the team in turn, timed, and the faster kept, with the other tried
 * again every few seconds (tg__thread_pick_feed). Nothing about the
 * arithmetic changes: the products and convolutions cut their work into the
 * context's thread count of parts whatever the number of threads that runs
 * them (cpu_matmul.c, cpu_conv.c), and every other loop's sums run in an
 * order fixed by the sizes, so the results are the bits they would be
 * without the watch. Once oneDNN runs products (bf16), whose splits follow
 * its thread count, the step stays on the team.
 *
 * The watch is off when the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT (the
 * user's choice stands), at one thread (no worker spins), and where the
 * run delay cannot be read.
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <fcntl.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "omp_throttle.h"

/* ---- the decision ---- */

bool tg__spin_watch_feed(tg__spin_watch *w, double time_s, double delay_s) {
    if (!(time_s >= 0) || !(delay_s >= 0))
        return w->throttled; /* a counter went backwards or a read failed: skip */
    w->time += time_s;
    w->delay += delay_s;
    if (w->time < TG__SPIN_WINDOW_S)
        return w->throttled;
    const double frac = w->delay / w->time;
    w->time = w->delay = 0;
    const int need = w->need > 0 ? w->need : TG__SPIN_QUIET_WINDOWS;
    if (frac >= TG__SPIN_BUSY_FRAC) {
        if (!w->throttled) {
            /* Back soon after it was turned off: the quiet windows were its
             * own doing (fewer spinning threads, less waiting), so ask for
             * longer quiet next time. After a long quiet spell, the default. */
            if (w->released && w->since < need)
                w->need = need * 2 < TG__SPIN_QUIET_MAX ? need * 2 : TG__SPIN_QUIET_MAX;
            else if (w->since >= TG__SPIN_QUIET_MAX)
                w->need = 0;
        }
        w->throttled = true;
        w->quiet = 0;
    } else if (w->throttled) {
        w->quiet = frac < TG__SPIN_QUIET_FRAC ? w->quiet + 1 : 0;
        if (w->quiet >= need) {
            w->throttled = false;
            w->quiet = 0;
            w->since = 0;
            w->released = true;
        }
    } else if (w->since < TG__SPIN_QUIET_MAX) {
        w->since++;
    }
    return w->throttled;
}

/* ---- all threads or one ---- */

static void pick_switch(tg__thread_pick *p, bool one) {
    p->one = one;
    p->skip = true;
    p->sum = 0;
    p->n = 0;
}

bool tg__thread_pick_feed(tg__thread_pick *p, bool shared, double step_s) {
    if (!shared) {
        /* A free machine: all threads, and the figures of the last busy
         * spell are stale. */
        *p = (tg__thread_pick){0};
        return false;
    }
    if (p->per[0] == 0 && p->per[1] == 0 && !p->one && p->n == 0 && !p->skip) {
        /* The cores just became shared: one thread first, the choice that
         * cannot fall below one thread's speed. */
        pick_switch(p, true);
        return true;
    }
    if (p->skip || !(step_s >= 0)) {
        p->skip = false;
        return p->one;
    }
    p->sum += step_s;
    p->n++;
    if (p->n < TG__PICK_TRIAL_STEPS || p->sum < TG__PICK_TRIAL_S)
        return p->one;
    const int cur = p->one;
    p->per[cur] = p->sum / p->n;
    if (p->holding) {
        /* The kept setting's figure follows its latest window; after the
         * hold, the other setting gets a new trial. */
        p->held += p->sum;
        p->sum = 0;
        p->n = 0;
        if (p->held >= TG__PICK_HOLD_S && p->held >= TG__PICK_HOLD_TRIALS * p->trial) {
            p->holding = false;
            p->per[!cur] = 0;
            pick_switch(p, !cur);
        }
        return p->one;
    }
    p->trial = p->sum > p->trial ? p->sum : p->trial;
    p->sum = 0;
    p->n = 0;
    if (p->per[!cur] == 0) {
        pick_switch(p, !cur); /* the other setting's trial */
        return p->one;
    }
    /* Both measured: keep the faster (one thread on a tie). */
    const bool one = p->per[1] <= p->per[0];
    p->holding = true;
    p->held = 0;
    if (one != p->one)
        pick_switch(p, one);
    return p->one;
}

/* ---- the parked region ---- */

struct tg__omp_throttle {
    tg__spin_watch watch;
    bool on;     /* the watch runs (see tg__omp_throttle_new) */
    bool parked; /* the helper's region is open */
    pthread_t helper;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state; /* 0: opening, 1: open, 2: asked to close */
    int extra; /* threads the helper's region adds */
    double last_wall, last_run, last_delay;
    bool have;      /* last_run and last_delay were read */
    pid_t last_tid; /* the thread the last figures came from */
    int team;       /* the context's thread count */
    tg__thread_pick pick;
    bool one;         /* the training thread's OpenMP count is 1 (pick.one applied) */
    double step_wall; /* when the last step began (0: none on this thread yet) */
};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The calling thread's time on a CPU and its run delay (time runnable but
 * waiting for a CPU), in seconds: the first two fields of its schedstat.
 * False when they cannot be read. No heap call. */
static bool sched_times(double *run, double *delay) {
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    unsigned long long r, d;
    if (sscanf(buf, "%llu %llu", &r, &d) != 2)
        return false;
    *run = 1e-9 * (double)r;
    *delay = 1e-9 * (double)d;
    return true;
}

static void *helper_main(void *arg) {
    tg__omp_throttle *t = arg;
    /* Its threads sleep in the region: the master on the condition variable,
     * the others at the region's closing barrier (after a short spin, since
     * the throttle holds by then). */
#pragma omp parallel num_threads(t->extra + 1)
    {
        if (omp_get_thread_num() == 0) {
            pthread_mutex_lock(&t->mu);
            t->state = 1;
            pthread_cond_broadcast(&t->cv);
            while (t->state != 2)
                pthread_cond_wait(&t->cv, &t->mu);
            pthread_mutex_unlock(&t->mu);
        }
    }
    return NULL;
}

static void park(tg__omp_throttle *t) {
    /* libgomp spins short while it manages more threads than CPUs: the
     * training thread's team counts omp_get_max_threads(), the helper's adds
     * its threads beyond its master. */
    const int procs = omp_get_num_procs(), team = t->team;
    t->extra = procs - team + 1 > 1 ? procs - team + 1 : 1;
    if (t->extra > TG__SPIN_MAX_PARKED)
        return;
    t->state = 0;
    if (pthread_create(&t->helper, NULL, helper_main, t) != 0)
        return;
    pthread_mutex_lock(&t->mu);
    while (t->state != 1)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    t->parked = true;
}

static void unpark(tg__omp_throttle *t) {
    pthread_mutex_lock(&t->mu);
    t->state = 2;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    /* The helper's exit frees its thread pool, and with it libgomp's count
     * of the threads it manages goes back down. */
    pthread_join(t->helper, NULL);
    t->parked = false;
}

/* Runs the training thread's next steps on one thread or on the team:
 * OpenMP's count for its regions, which OpenBLAS follows too. */
static void apply_one(tg__omp_throttle *t, bool one) {
    if (one == t->one)
        return;
    omp_set_num_threads(one ? 1 : t->team);
    openblas_set_num_threads(one ? 1 : t->team);
    t->one = one;
}

tg__omp_throttle *tg__omp_throttle_new(int threads) {
    tg__omp_throttle *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    double run, delay;
    t->team = threads > 0 ? threads : omp_get_max_threads();
    t->on = !getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT") && t->team > 1 &&
            sched_times(&run, &delay);
    t->last_tid = -1;
    return t;
}

void tg__omp_throttle_free(tg__omp_throttle *t) {
    if (!t)
        return;
    if (t->parked)
        unpark(t);
    /* Back to the team's count (the count this thread had, or the one the
     * context set at its start when freed on another thread). */
    apply_one(t, false);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

void tg__omp_throttle_set(tg__omp_throttle *t, bool throttled) {
    if (throttled && !t->parked)
        park(t);
    else if (!throttled && t->parked)
        unpark(t);
}

bool tg__omp_throttle_active(const tg__omp_throttle *t) { return t && t->parked; }

bool tg__omp_throttle_watching(const tg__omp_throttle *t) { return t && t->on; }

/* The spin half of a step: reads the run delay a few times a window and
 * feeds the watch. */
static void watch_spin(tg__omp_throttle *t, double wall, bool first) {
    double run = 0, delay = 0;
    if (first) {
        /* The first step on this thread: its history so far (loading the
         * data, building the model) is the first window, so that a busy
         * machine is seen before the first parallel steps rather than after. */
        t->last_wall = wall;
        t->have = sched_times(&t->last_run, &t->last_delay);
        if (t->have && t->last_run + t->last_delay >= TG__SPIN_WINDOW_S)
            tg__omp_throttle_set(
                t, tg__spin_watch_feed(&t->watch, t->last_run + t->last_delay, t->last_delay));
        return;
    }
    if (wall - t->last_wall < TG__SPIN_WINDOW_S / 4)
        return; /* the schedstat file is read a few times a window at most */
    const bool have = sched_times(&run, &delay);
    const bool want =
        have && t->have
            ? tg__spin_watch_feed(&t->watch, (run - t->last_run) + (delay - t->last_delay),
                                  delay - t->last_delay)
            : t->watch.throttled;
    t->last_wall = wall;
    t->have = have;
    t->last_run = run;
    t->last_delay = delay;
    tg__omp_throttle_set(t, want);
}

void tg__omp_throttle_step(tg__omp_throttle *t, bool may_one) {
    if (!t || !t->on)
        return;
    const double wall = wall_now();
    const pid_t tid = gettid();
    const bool first = tid != t->last_tid;
    if (first) {
        /* Steps moved to another thread (or this is the first): its OpenMP
         * count is the team's, and the choice starts over. */
        t->last_tid = tid;
        t->one = false;
        t->pick = (tg__thread_pick){0};
        t->step_wall = 0;
    }
    watch_spin(t, wall, first);
    const double step_s = t->step_wall > 0 ? wall - t->step_wall : -1;
    t->step_wall = wall;
    apply_one(t, may_one && tg__thread_pick_feed(&t->pick, t->watch.throttled, step_s));
}

void tg__omp_throttle_run_one(tg__omp_throttle *t, bool one) {
    if (t)
        apply_one(t, one);
}

void tg__omp_throttle_team(tg__omp_throttle *t) {
    if (!t || !t->one)
        return;
    apply_one(t, false);
    t->pick = (tg__thread_pick){0};
}

bool tg__omp_throttle_one(const tg__omp_throttle *t) { return t && t->one; }
