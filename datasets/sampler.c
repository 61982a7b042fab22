/*
 * sampler.c: which samples each rank reads, batch by batch.
 *
 * The epoch permutation is a Fisher-Yates shuffle driven by Philox4x32-10: the
 * random number for step t of epoch e is a pure function of (seed, e, t), so
 * every rank computes the same permutation with no communication, and the
 * result cannot depend on thread counts or on how many epochs were skipped.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets_internal.h"

/* Philox4x32 constants (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC'11): round multipliers and the Weyl key increments. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
/* The counter's last word tags the stream, so that other users of Philox
 * with the same seed and small counters do not replay the permutation. */
#define PERM_STREAM 0x7065726du /* "perm" */
/* The stream of the validation hold-out's shuffle. */
#define HOLDOUT_STREAM 0x686f6c64u /* "hold" */
/* The stream of draws with replacement (token windows). */
#define DRAW_STREAM 0x64726177u /* "draw" */
#define EPOCH_LIMIT ((int64_t)1 << 32)

struct tg_sampler {
    tg_sampler_config cfg;
    int64_t nb;       /* global batches per epoch */
    int64_t per;      /* samples per epoch */
    int64_t local;    /* B / world */
    int64_t consumed; /* global samples consumed */
    int64_t *perm;    /* NULL without shuffle */
    int64_t perm_epoch;
};

static void mulhilo32(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * b;

    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void tg_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];

    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;

        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        mulhilo32(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo32(PHILOX_M1, c2, &hi1, &lo1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The high 64 bits of a * b, without a 128-bit type. */
static uint64_t mulhi64(uint64_t a, uint64_t b) {
    uint64_t al = (uint32_t)a, ah = a >> 32, bl = (uint32_t)b, bh = b >> 32;
    uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
    uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;

    return hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
}

/* The Fisher-Yates shuffle of [0, n) for (seed, epoch) on Philox stream
 * `stream` (the counter's last word). */
static void shuffle(uint64_t seed, int64_t epoch, uint32_t stream, int64_t n, int64_t *perm) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4] = {0};

    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    /* Step t swaps position i = n-1-t with j uniform in [0, i]. One Philox
     * block gives two 64-bit numbers, for steps 2b and 2b+1. */
    for (int64_t t = 0; t < n - 1; t++) {
        int64_t i = n - 1 - t, j, tmp;
        uint64_t r;

        if ((t & 1) == 0) {
            uint64_t b = (uint64_t)t >> 1;
            const uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), (uint32_t)epoch, stream};
            tg_philox4x32_10(ctr, key, out);
        }
        r = (t & 1) ? ((uint64_t)out[3] << 32 | out[2]) : ((uint64_t)out[1] << 32 | out[0]);
        /* Multiply-shift maps r to [0, i]; its bias, below (i+1) / 2^64, is
         * far under anything a training run can observe. */
        j = (int64_t)mulhi64(r, (uint64_t)i + 1);
        tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
}

tg_status tg_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm, char *err,
                         size_t errlen) {
    if (!perm || n < 1 || epoch < 0 || epoch >= EPOCH_LIMIT)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_permutation: needs perm, n >= 1 (got %lld) and an epoch in "
                           "[0, 2^32) (got %lld)",
                           (long long)n, (long long)epoch);
    shuffle(seed, epoch, PERM_STREAM, n, perm);
    return TG_OK;
}

int64_t tg_holdout_count(int64_t n, double fraction) {
    double v = floor(fraction * (double)n + 0.5);

    return v < 0 ? 0 : v > (double)n ? n : (int64_t)v;
}

tg_status tg_holdout(uint64_t seed, int64_t n, int64_t nval, int64_t *val, int64_t *train,
                     char *err, size_t errlen) {
    int64_t *perm;
    unsigned char *held;
    int64_t a = 0, b = 0;

    if (n < 1 || nval < 0 || nval > n || (nval && !val) || (nval < n && !train))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_holdout: needs n >= 1 (got %lld), 0 <= nval <= n (got %lld) "
                           "and the outputs",
                           (long long)n, (long long)nval);
    perm = malloc((size_t)n * sizeof *perm);
    held = calloc((size_t)n, 1);
    if (!perm || !held) {
        free(perm);
        free(held);
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen,
                           "holdout: no memory for a permutation of %lld samples", (long long)n);
    }
    shuffle(seed, 0, HOLDOUT_STREAM, n, perm);
    for (int64_t i = 0; i < nval; i++)
        held[perm[i]] = 1;
    for (int64_t i = 0; i < n; i++) {
        if (held[i])
            val[a++] = i;
        else
            train[b++] = i;
    }
    free(perm);
    free(held);
    return TG_OK;
}

tg_sampler_config tg_sampler_config_train(int64_t n, int64_t batch, uint64_t seed, int rank,
                                          int world) {
    tg_sampler_config c = {.n = n, .batch = batch, .seed = seed, .rank = rank, .world = world,
                           .shuffle = true, .drop_last = true};

    return c;
}

tg_sampler_config tg_sampler_config_eval(int64_t n, int64_t batch, int rank, int world) {
    tg_sampler_config c = {.n = n, .batch = batch, .rank = rank, .world = world};

    return c;
}

tg_status tg_sampler_new(const tg_sampler_config *cfg, tg_sampler **out, char *err, size_t errlen) {
    tg_sampler *s;

    if (out)
        *out = NULL;
    if (!cfg || !out)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_sampler_new: cfg and out must be given");
    if (cfg->n < 1 || cfg->batch < 1)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: N = %lld and global batch B = %lld must both be >= 1",
                           (long long)cfg->n, (long long)cfg->batch);
    if (cfg->world < 1 || cfg->rank < 0 || cfg->rank >= cfg->world)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: rank %d is outside [0, world size %d)", cfg->rank, cfg->world);
    if (cfg->batch % cfg->world)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: global batch B = %lld is not divisible by world size w = %d "
                           "(each rank takes B/w samples)",
                           (long long)cfg->batch, cfg->world);
    /* An epoch's samples, epoch_batches x B, must be a number. */
    if (cfg->draw && (cfg->epoch_batches < 1 || cfg->epoch_batches > INT64_MAX / cfg->batch))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: drawing with replacement needs epoch_batches in [1, "
                           "2^63 / B], got %lld",
                           (long long)cfg->epoch_batches);
    if (cfg->stride < 0 || (cfg->stride > 1 && cfg->subset))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: stride %lld must be >= 0 and not given with a subset",
                           (long long)cfg->stride);
    if (cfg->drop_last && !cfg->draw && cfg->n < cfg->batch)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: N = %lld is smaller than the global batch B = %lld, so with "
                           "drop_last an epoch has no batch",
                           (long long)cfg->n, (long long)cfg->batch);
    s = calloc(1, sizeof *s);
    if (!s)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "sampler: out of memory");
    s->cfg = *cfg;
    s->nb = cfg->drop_last ? cfg->n / cfg->batch : (cfg->n + cfg->batch - 1) / cfg->batch;
    s->per = cfg->drop_last ? s->nb * cfg->batch : cfg->n;
    if (cfg->draw) {
        s->nb = cfg->epoch_batches;
        s->per = s->nb * cfg->batch;
    }
    s->local = cfg->batch / cfg->world;
    s->perm_epoch = -1;
    if (cfg->shuffle && !cfg->draw) {
        s->perm = malloc((size_t)cfg->n * sizeof *s->perm);
        if (!s->perm) {
            free(s);
            return tg__ds_fail(TG_ERR_NOMEM, err, errlen,
                               "sampler: no memory for a permutation of %lld samples",
                               (long long)cfg->n);
        }
    }
    *out = s;
    return TG_OK;
}

void tg_sampler_free(tg_sampler *s) {
    if (!s)
        return;
    free(s->perm);
    free(s);
}

const tg_sampler_config *tg_sampler_get_config(const tg_sampler *s) { return &s->cfg; }
int64_t tg_sampler_num_batches(const tg_sampler *s) { return s->nb; }
int64_t tg_sampler_epoch_samples(const tg_sampler *s) { return s->per; }
int64_t tg_sampler_local_batch(const tg_sampler *s) { return s->local; }
int64_t tg_sampler_samples_consumed(const tg_sampler *s) { return s->consumed; }

/* Positions [lo, lo+m) of global batch g drawn with replacement: position
 * j is Philox(seed; g, j, stream) mapped to [0, n) by multiply-shift. */
static void draw(const tg_sampler *s, int64_t g, int64_t lo, int64_t m, int64_t *idx) {
    const uint32_t key[2] = {(uint32_t)s->cfg.seed, (uint32_t)(s->cfg.seed >> 32)};

    for (int64_t i = 0; i < m; i++) {
        uint64_t j = (uint64_t)(lo + i);
        const uint32_t ctr[4] = {(uint32_t)g, (uint32_t)((uint64_t)g >> 32), (uint32_t)j,
                                 DRAW_STREAM};
        uint32_t out[4];
        tg_philox4x32_10(ctr, key, out);
        uint64_t r = (uint64_t)out[1] << 32 | out[0];
        int64_t p = (int64_t)mulhi64(r, (uint64_t)s->cfg.n);
        idx[i] = s->cfg.subset ? s->cfg.subset[p] : p;
    }
}

tg_status tg_sampler_batch(tg_sampler *s, int64_t epoch, int64_t k, int64_t *idx, int64_t *n,
                           char *err, size_t errlen) {
    int64_t g0, m, lo, hi;

    if (!idx || !n)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen, "sampler: idx and n must be given");
    if (k < 0 || k >= s->nb || epoch < 0 || epoch >= EPOCH_LIMIT)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: batch %lld of epoch %lld is outside [0, %lld) x [0, 2^32)",
                           (long long)k, (long long)epoch, (long long)s->nb);
    if (s->perm && s->perm_epoch != epoch) {
        tg_status st = tg_permutation(s->cfg.seed, epoch, s->cfg.n, s->perm, err, errlen);
        if (st)
            return st;
        s->perm_epoch = epoch;
    }
    /* The global batch is [g0, g0+m) of the epoch order; this rank owns the
     * slice [lo, hi) of it, which is empty past the end of a short batch. */
    g0 = k * s->cfg.batch;
    m = s->per - g0 < s->cfg.batch ? s->per - g0 : s->cfg.batch;
    lo = (int64_t)s->cfg.rank * s->local;
    hi = lo + s->local < m ? lo + s->local : m;
    *n = hi > lo ? hi - lo : 0;
    if (s->cfg.draw) {
        draw(s, epoch * s->nb + k, lo, *n, idx);
        return TG_OK;
    }
    for (int64_t i = 0; i < *n; i++) {
        int64_t j = s->perm ? s->perm[g0 + lo + i] : g0 + lo + i;
        idx[i] = s->cfg.subset ? s->cfg.subset[j] : s->cfg.stride > 1 ? j * s->cfg.stride : j;
    }
    return TG_OK;
}

tg_status tg_sampler_locate(const tg_sampler *s, int64_t consumed, int64_t *epoch, int64_t *k,
                            char *err, size_t errlen) {
    int64_t e, within;

    if (consumed < 0)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: samples_consumed %lld is negative", (long long)consumed);
    e = consumed / s->per;
    within = consumed % s->per;
    if (within % s->cfg.batch)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: samples_consumed %lld is not on a batch boundary (B = %lld, "
                           "%lld samples per epoch; nearest boundaries %lld and %lld)",
                           (long long)consumed, (long long)s->cfg.batch, (long long)s->per,
                           (long long)(consumed - within % s->cfg.batch),
                           (long long)(consumed - within % s->cfg.batch + s->cfg.batch));
    if (e >= EPOCH_LIMIT)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "sampler: samples_consumed %lld is past epoch 2^32",
                           (long long)consumed);
    if (epoch)
        *epoch = e;
    if (k)
        *k = within / s->cfg.batch;
    return TG_OK;
}

tg_status tg_sampler_set_samples_consumed(tg_sampler *s, int64_t consumed, char *err,
                                          size_t errlen) {
    tg_status st = tg_sampler_locate(s, consumed, NULL, NULL, err, errlen);

    if (st == TG_OK)
        s->consumed = consumed;
    return st;
}

tg_status tg_sampler_next(tg_sampler *s, int64_t *idx, int64_t *n, int64_t *epoch, int64_t *k,
                          bool *last, char *err, size_t errlen) {
    int64_t e = 0, b = 0, g0;
    tg_status st = tg_sampler_locate(s, s->consumed, &e, &b, err, errlen);

    if (st == TG_OK)
        st = tg_sampler_batch(s, e, b, idx, n, err, errlen);
    if (st)
        return st;
    g0 = b * s->cfg.batch;
    /* A short last batch advances to the epoch boundary, not past it. */
    s->consumed += s->per - g0 < s->cfg.batch ? s->per - g0 : s->cfg.batch;
    if (epoch)
        *epoch = e;
    if (k)
        *k = b;
    if (last)
        *last = b == s->nb - 1;
    return TG_OK;
}
