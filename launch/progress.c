/*
 * launch/progress.c: the progress bar (see progress.h).
 */
#include "progress.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS 100000000L /* 10 redraws a second */

struct tg_progress {
    const tg_trainer *tr;
    int64_t batch;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool quit, drawn;
    double loss;
    double t0;                 /* when the bar started */
    double t_rate;             /* time and step of the first step seen, */
    int64_t step_rate0;        /* the origin of the rate */
    double eval_t0;            /* when the evaluation under way began */
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* "1:02:03" or "2:03". */
static void hms(double s, char *buf, size_t len) {
    long t = s > 0 && s < 1e8 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

static int columns(void) {
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return 80;
}

/* [####....] of `width` cells, done/total filled. */
static void bar(char *out, int width, int64_t done, int64_t total) {
    int fill = total > 0 ? (int)((double)width * (double)done / (double)total) : 0;
    fill = fill < 0 ? 0 : fill > width ? width : fill;
    out[0] = '[';
    for (int i = 0; i < width; i++)
        out[1 + i] = i < fill ? '#' : '.';
    out[width + 1] = ']';
    out[width + 2] = 0;
}

/* Draws the line (the lock is held). */
static void draw(tg_progress *p) {
    tg_trainer_progress q = tg_trainer_progress_get(p->tr);
    double now = now_s();
    char left[64], right[160], times[48], el[24], eta[24] = "?", b[256];
    hms(now - p->t0, el, sizeof el);
    if (q.eval_total > 0) {
        if (p->eval_t0 == 0)
            p->eval_t0 = now;
        hms(now - p->eval_t0, times, sizeof times);
        snprintf(left, sizeof left, "eval ");
        snprintf(right, sizeof right, " %lld/%lld  %s", (long long)q.eval_done,
                 (long long)q.eval_total, times);
    } else {
        p->eval_t0 = 0;
        if (p->step_rate0 < 0 || q.step < p->step_rate0) {
            p->step_rate0 = q.step;
            p->t_rate = now;
        }
        double rate = q.step > p->step_rate0 ? (double)(q.step - p->step_rate0) /
                                                  (now - p->t_rate)
                                            : 0;
        if (rate > 0)
            hms((double)(q.total_steps - q.step) / rate, eta, sizeof eta);
        int64_t spe = q.steps_per_epoch > 0 ? q.steps_per_epoch : 1;
        /* The epoch under way; at the end, the last one, complete. */
        int64_t epoch = q.step < q.total_steps ? q.step / spe + 1 : (q.step - 1) / spe + 1;
        if (epoch < 1)
            epoch = 1;
        int64_t in_epoch = q.step - (epoch - 1) * spe;
        /* The last epoch of a run cut by --max-steps is partial. */
        int64_t epoch_len = epoch == q.epochs ? q.total_steps - (epoch - 1) * spe : spe;
        snprintf(left, sizeof left, "epoch %lld/%lld ", (long long)epoch, (long long)q.epochs);
        char loss[32] = "";
        if (p->loss == p->loss && p->loss != 0)
            snprintf(loss, sizeof loss, "  loss %.4f", p->loss);
        /* Token data counts tokens: T a sample. */
        int64_t tps = tg_trainer_tokens_per_sample(p->tr);
        snprintf(right, sizeof right, " %lld/%lld%s  %.0f %s/s  %s<%s", (long long)in_epoch,
                 (long long)epoch_len, loss, rate * (double)p->batch * (double)(tps ? tps : 1),
                 tps ? "tokens" : "samples", el, eta);
        q.eval_done = in_epoch;
        q.eval_total = epoch_len;
    }
    int cols = columns() - 1;
    int width = cols - (int)strlen(left) - (int)strlen(right) - 2;
    width = width > 40 ? 40 : width;
    if (width < 5) {
        /* A narrow terminal: the counts without the bar. */
        printf("\r\033[K%.*s%.*s", cols / 2, left, cols - cols / 2, right);
    } else {
        bar(b, width, q.eval_done, q.eval_total);
        printf("\r\033[K%s%s%s", left, b, right);
    }
    fflush(stdout);
    p->drawn = true;
}

static void *run(void *arg) {
    tg_progress *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->quit) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_nsec += TICK_NS;
        if (t.tv_nsec >= 1000000000L) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &t);
        if (!p->quit)
            draw(p);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

tg_progress *tg_progress_start(const tg_trainer *tr, int64_t global_batch) {
    tg_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->tr = tr;
    p->batch = global_batch;
    p->t0 = now_s();
    p->step_rate0 = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, run, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        return NULL;
    }
    return p;
}

void tg_progress_set_loss(tg_progress *p, double loss) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->loss = loss;
    pthread_mutex_unlock(&p->mu);
}

void tg_progress_hold(tg_progress *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->drawn) {
        printf("\r\033[K");
        fflush(stdout);
        p->drawn = false;
    }
}

void tg_progress_release(tg_progress *p) {
    if (p)
        pthread_mutex_unlock(&p->mu);
}

void tg_progress_stop(tg_progress *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    if (p->drawn) {
        printf("\r\033[K");
        fflush(stdout);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
