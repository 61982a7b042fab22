/*
 * prefetch.c: one I/O thread per loader reading batches ahead of the trainer.
 *
 * The loader owns a ring of `depth` batch buffers. The consumer holds at most
 * one of them (the batch it is working on); the I/O thread fills the others in
 * ring order and stops when all are full. Counters under one mutex say who
 * owns what: slots [released, taken) are the consumer's, [taken, produced)
 * are ready, the rest are free to fill. HDF5 serialises its own calls, so one
 * reader thread per rank is all the parallelism there is to have.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets_internal.h"

#define LOADER_DEFAULT_DEPTH 2
#define LOADER_MAX_DEPTH 16
#define LOADER_MSG 512

struct slot {
    float *x;
    int64_t *y;
    float *t; /* regression targets (NULL for labels) */
    int64_t *idx;
    int64_t n;
    int64_t consumed_after; /* the sampler's position after this batch */
    bool last;              /* the last batch of its epoch */
    tg_status st;
    char msg[LOADER_MSG];
};

struct tg_loader {
    tg_dataset *ds;
    tg_sampler *s;
    int depth;
    struct slot *slots;

    /* Augmentation (aug.flags 0: none), applied on the I/O thread: the
     * sample's (C, H, W), the pad value of each channel, one sample of
     * scratch. */
    tg_augment aug;
    int64_t c, h, w;
    float *fill;
    float *tmp;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t can_fill; /* the I/O thread waits for a free slot */
    pthread_cond_t can_take; /* the consumer waits for a ready slot */
    uint64_t produced, taken, released;
    bool stop, done;

    /* Consumer side only. */
    int64_t consumed;
    const float *targets; /* of the batch returned last */
    bool end_pending;
    tg_status sticky;
    char sticky_msg[LOADER_MSG];
};

/* Crops and flips each sample of the batch in place, its draws keyed by
 * the epoch and the sample's index in the split. */
static void augment(tg_loader *ld, struct slot *sl, int64_t epoch) {
    const tg_augment *a = &ld->aug;
    int64_t numel = ld->c * ld->h * ld->w;

    for (int64_t i = 0; i < sl->n; i++) {
        int dy, dx;
        bool flip;
        float *x = sl->x + i * numel;

        tg_augment_draw(a->seed, epoch, sl->idx[i], a->pad, &dy, &dx, &flip);
        if (!(a->flags & TG_AUGMENT_CROP))
            dy = dx = a->pad;
        if (!(a->flags & TG_AUGMENT_FLIP))
            flip = false;
        if (dy == a->pad && dx == a->pad && !flip)
            continue;
        tg_augment_apply(x, ld->c, ld->h, ld->w, a->pad, dy, dx, flip, ld->fill, ld->tmp);
        memcpy(x, ld->tmp, (size_t)numel * sizeof *x);
    }
}

static void fill(tg_loader *ld, struct slot *sl) {
    int64_t epoch = 0;

    sl->st = tg_sampler_next(ld->s, sl->idx, &sl->n, &epoch, NULL, &sl->last, sl->msg,
                             sizeof sl->msg);
    if (sl->st == TG_OK && sl->t)
        sl->st = tg_dataset_read_targets(ld->ds, sl->idx, sl->n, sl->x, sl->t, sl->msg,
                                         sizeof sl->msg);
    else if (sl->st == TG_OK)
        sl->st = tg_dataset_read(ld->ds, sl->idx, sl->n, sl->x, sl->y, sl->msg, sizeof sl->msg);
    if (sl->st == TG_OK && ld->aug.flags)
        augment(ld, sl, epoch);
    sl->consumed_after = tg_sampler_samples_consumed(ld->s);
}

static void *io_main(void *arg) {
    tg_loader *ld = arg;

    pthread_mutex_lock(&ld->mu);
    for (;;) {
        struct slot *sl;
        tg_status st;

        while (!ld->stop && ld->produced - ld->released >= (uint64_t)ld->depth)
            pthread_cond_wait(&ld->can_fill, &ld->mu);
        if (ld->stop)
            break;
        sl = &ld->slots[ld->produced % (uint64_t)ld->depth];
        /* The slot is ours until published: read without the lock so the
         * consumer can take the batches already made. */
        pthread_mutex_unlock(&ld->mu);
        fill(ld, sl);
        st = sl->st;
        pthread_mutex_lock(&ld->mu);
        ld->produced++;
        pthread_cond_signal(&ld->can_take);
        /* The failed slot carries the error to the consumer; nothing after
         * it can be read in order, so the thread ends. */
        if (st != TG_OK)
            break;
    }
    ld->done = true;
    pthread_cond_signal(&ld->can_take);
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

static void free_slots(tg_loader *ld) {
    if (!ld->slots)
        return;
    for (int i = 0; i < ld->depth; i++) {
        free(ld->slots[i].x);
        free(ld->slots[i].y);
        free(ld->slots[i].idx);
        free(ld->slots[i].t);
    }
    free(ld->slots);
    ld->slots = NULL;
    free(ld->fill);
    free(ld->tmp);
    ld->fill = ld->tmp = NULL;
}

/* The augmentation's geometry, pad values and scratch. */
static tg_status init_augment(tg_loader *ld, const tg_augment *a, char *err, size_t errlen) {
    int nd;
    const int64_t *sh;
    tg_status st = tg__augment_check(a, ld->ds, err, errlen);

    if (st || !a->flags)
        return st;
    ld->aug = *a;
    sh = tg_dataset_sample_shape(ld->ds, &nd);
    ld->c = nd == 3 ? sh[0] : 1;
    ld->h = sh[nd - 2];
    ld->w = sh[nd - 1];
    ld->fill = malloc((size_t)ld->c * sizeof *ld->fill);
    ld->tmp = malloc((size_t)tg_dataset_sample_numel(ld->ds) * sizeof *ld->tmp);
    if (!ld->fill || !ld->tmp)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "loader: no memory for augmentation");
    for (int64_t k = 0; k < ld->c; k++)
        ld->fill[k] = tg__ds_zero_value(ld->ds, k);
    return TG_OK;
}

static tg_status alloc_slots(tg_loader *ld, char *err, size_t errlen) {
    int64_t local = tg_sampler_local_batch(ld->s);
    int64_t numel = tg_dataset_sample_numel(ld->ds);
    int64_t tdim = tg_dataset_target_dim(ld->ds);
    /* Token windows carry a label per position. */
    int64_t lps = tg_dataset_labels_per_sample(ld->ds);

    if ((uint64_t)local > SIZE_MAX / sizeof(float) / (uint64_t)numel)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen,
                           "loader: a batch of %lld samples is too large", (long long)local);
    ld->slots = calloc((size_t)ld->depth, sizeof *ld->slots);
    if (!ld->slots)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "loader: out of memory");
    for (int i = 0; i < ld->depth; i++) {
        struct slot *sl = &ld->slots[i];

        sl->x = malloc((size_t)(local * numel) * sizeof *sl->x);
        sl->y = malloc((size_t)(local * lps) * sizeof *sl->y);
        sl->idx = malloc((size_t)local * sizeof *sl->idx);
        if (tdim)
            sl->t = malloc((size_t)(local * tdim) * sizeof *sl->t);
        if (!sl->x || !sl->y || !sl->idx || (tdim && !sl->t))
            return tg__ds_fail(TG_ERR_NOMEM, err, errlen,
                               "loader: no memory for %d buffers of %lld samples", ld->depth,
                               (long long)local);
    }
    return TG_OK;
}

static tg_status init_sync(tg_loader *ld, char *err, size_t errlen) {
    if (pthread_mutex_init(&ld->mu, NULL) != 0)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "loader: cannot create a mutex");
    if (pthread_cond_init(&ld->can_fill, NULL) != 0) {
        pthread_mutex_destroy(&ld->mu);
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "loader: cannot create a condition");
    }
    if (pthread_cond_init(&ld->can_take, NULL) != 0) {
        pthread_cond_destroy(&ld->can_fill);
        pthread_mutex_destroy(&ld->mu);
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "loader: cannot create a condition");
    }
    return TG_OK;
}

/* Starts the thread with every signal blocked, so that process signals
 * (SIGTERM from a scheduler, SIGINT) go to the trainer's threads. */
static tg_status start_thread(tg_loader *ld, char *err, size_t errlen) {
    sigset_t all, old;
    int rc;

    sigfillset(&all);
    rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc == 0) {
        rc = pthread_create(&ld->thread, NULL, io_main, ld);
        (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (rc)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "loader: cannot start the I/O thread: %s",
                           strerror(rc));
    ld->started = true;
    return TG_OK;
}

tg_status tg_loader_new(tg_dataset *ds, tg_sampler *s, const tg_loader_options *opts,
                        tg_loader **out, char *err, size_t errlen) {
    tg_loader *ld;
    tg_status st;
    int depth = opts && opts->depth ? opts->depth : LOADER_DEFAULT_DEPTH;
    hbool_t ts = false;

    if (out)
        *out = NULL;
    if (!ds || !s || !out)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_loader_new: dataset, sampler and out must be given");
    /* HDF5 calls from the I/O thread and from the trainer (checkpoints) may
     * overlap; only the thread-safe build serialises them. */
    if (H5is_library_threadsafe(&ts) < 0 || !ts)
        return tg__ds_fail(TG_ERR_UNSUPPORTED, err, errlen,
                           "loader: the HDF5 library is not built thread-safe, so it cannot "
                           "be read from an I/O thread");
    if (depth < 2 || depth > LOADER_MAX_DEPTH)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen, "loader: depth %d is outside [2, %d]",
                           depth, LOADER_MAX_DEPTH);
    const tg_sampler_config *sc = tg_sampler_get_config(s);
    /* A subset, a stride (token windows) or draws cover part of the split. */
    bool part = sc->subset || sc->stride > 1 || sc->draw;
    if (part ? (sc->n - 1) * (sc->stride > 1 ? sc->stride : 1) >= tg_dataset_len(ds)
             : sc->n != tg_dataset_len(ds))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "loader: the sampler covers N = %lld samples but %s: %s has %lld",
                           (long long)tg_sampler_get_config(s)->n, tg_dataset_path(ds),
                           tg_dataset_split(ds), (long long)tg_dataset_len(ds));
    ld = calloc(1, sizeof *ld);
    if (!ld)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "loader: out of memory");
    ld->ds = ds;
    ld->s = s;
    ld->depth = depth;
    ld->consumed = tg_sampler_samples_consumed(s);
    st = alloc_slots(ld, err, errlen);
    if (st == TG_OK && opts)
        st = init_augment(ld, &opts->augment, err, errlen);
    if (st == TG_OK)
        st = tg__ds_reserve(ds, tg_sampler_local_batch(s), err, errlen);
    if (st) {
        free_slots(ld);
        free(ld);
        return st;
    }
    st = init_sync(ld, err, errlen);
    if (st) {
        free_slots(ld);
        free(ld);
        return st;
    }
    st = start_thread(ld, err, errlen);
    if (st) {
        tg_loader_free(ld);
        return st;
    }
    *out = ld;
    return TG_OK;
}

tg_status tg_loader_next(tg_loader *ld, const float **x, const int64_t **y, int64_t *n,
                         bool *end_of_epoch, char *err, size_t errlen) {
    struct slot *sl;

    if (!ld || !x || !y || !n || !end_of_epoch)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen, "tg_loader_next: all arguments are needed");
    *x = NULL;
    *y = NULL;
    *n = 0;
    *end_of_epoch = false;
    if (ld->sticky)
        return tg__ds_fail(ld->sticky, err, errlen, "%s", ld->sticky_msg);
    pthread_mutex_lock(&ld->mu);
    /* The batch returned last time goes back to the I/O thread. */
    if (ld->released < ld->taken) {
        ld->released++;
        pthread_cond_signal(&ld->can_fill);
    }
    if (ld->end_pending) {
        pthread_mutex_unlock(&ld->mu);
        ld->end_pending = false;
        *end_of_epoch = true;
        return TG_OK;
    }
    while (ld->produced == ld->taken && !ld->done)
        pthread_cond_wait(&ld->can_take, &ld->mu);
    if (ld->produced == ld->taken) {
        pthread_mutex_unlock(&ld->mu);
        ld->sticky = TG_ERR_INVALID;
        snprintf(ld->sticky_msg, sizeof ld->sticky_msg, "loader: the I/O thread has stopped");
        return tg__ds_fail(ld->sticky, err, errlen, "%s", ld->sticky_msg);
    }
    sl = &ld->slots[ld->taken % (uint64_t)ld->depth];
    ld->taken++;
    pthread_mutex_unlock(&ld->mu);
    if (sl->st) {
        ld->sticky = sl->st;
        memcpy(ld->sticky_msg, sl->msg, sizeof ld->sticky_msg);
        return tg__ds_fail(ld->sticky, err, errlen, "%s", ld->sticky_msg);
    }
    ld->consumed = sl->consumed_after;
    ld->targets = sl->t;
    ld->end_pending = sl->last;
    *x = sl->x;
    *y = sl->y;
    *n = sl->n;
    return TG_OK;
}

int64_t tg_loader_samples_consumed(const tg_loader *ld) { return ld->consumed; }
const float *tg_loader_targets(const tg_loader *ld) { return ld->targets; }

void tg_loader_free(tg_loader *ld) {
    if (!ld)
        return;
    if (ld->started) {
        pthread_mutex_lock(&ld->mu);
        ld->stop = true;
        pthread_cond_signal(&ld->can_fill);
        pthread_mutex_unlock(&ld->mu);
        (void)pthread_join(ld->thread, NULL);
    }
    pthread_cond_destroy(&ld->can_take);
    pthread_cond_destroy(&ld->can_fill);
    pthread_mutex_destroy(&ld->mu);
    /* Batches read ahead but never returned are given back to the sampler:
     * the position is always a batch boundary, so this cannot fail. */
    (void)tg_sampler_set_samples_consumed(ld->s, ld->consumed, NULL, 0);
    free_slots(ld);
    free(ld);
}
