/* Creation: arange, full_like/ones_like, and random tensors from a Philox
 * stream. Values are made on the host and copied to the backend, so every
 * backend holds the same numbers for the same stream. */
#include "internal.h"
#include "tapegrad/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Writes v (a value of the target dtype, given as a double or an int64)
 * into element i of a host buffer. */
static void store(tg_dtype dt, void *buf, int64_t i, double v, int64_t iv, bool is_int)
{
    switch (dt) {
    case TG_F32:
        ((float *)buf)[i] = is_int ? (float)iv : (float)v;
        break;
    case TG_F64:
        ((double *)buf)[i] = is_int ? (double)iv : v;
        break;
    case TG_U8:
        ((uint8_t *)buf)[i] = (uint8_t)(is_int ? iv : (int64_t)v);
        break;
    case TG_I32:
        ((int32_t *)buf)[i] = (int32_t)(is_int ? iv : (int64_t)v);
        break;
    case TG_BF16:
        ((uint16_t *)buf)[i] = tg_bf16_from_f32(is_int ? (float)iv : (float)v);
        break;
    default:
        ((int64_t *)buf)[i] = is_int ? iv : (int64_t)v;
        break;
    }
}

/* A host buffer for n elements of dt, or NULL with the error set. */
static void *host_buf(tg_ctx *ctx, const char *fn, tg_dtype dt, int64_t n)
{
    if ((unsigned)dt >= TG_DTYPE_COUNT)
        return tg__fail(ctx, TG_ERR_DTYPE, "%s: unknown dtype %d", fn, (int)dt), NULL;
    void *buf = malloc((size_t)(n > 0 ? n : 1) * tg_dtype_size(dt));
    if (!buf)
        tg__fail(ctx, TG_ERR_NOMEM, "%s: out of memory for %lld host elements", fn, (long long)n);
    return buf;
}

static tg_tensor *upload(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, void *buf)
{
    tg_tensor *t = buf ? tg_from_data(ctx, dt, ndim, shape, buf) : NULL;
    free(buf);
    return t;
}

tg_tensor *tg_arange(tg_ctx *ctx, tg_dtype dt, double start, double stop, double step)
{
    if (!(step != 0.0) || !isfinite(start) || !isfinite(stop) || !isfinite(step))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "arange: start %g, stop %g and step %g must be finite and step nonzero",
                        start, stop, step),
               NULL;
    double count = ceil((stop - start) / step);
    if (count < 0)
        count = 0;
    if (count > 1e12)
        return tg__fail(ctx, TG_ERR_INVALID, "arange: %g elements is too many", count), NULL;
    int64_t n = (int64_t)count, shape[1] = {n};
    void *buf = host_buf(ctx, "arange", dt, n);
    bool integral = start == floor(start) && step == floor(step);
    for (int64_t i = 0; buf && i < n; i++) {
        if (!tg_dtype_is_float(dt) && integral)
            store(dt, buf, i, 0.0, (int64_t)start + i * (int64_t)step, true);
        else
            store(dt, buf, i, start + (double)i * step, 0, false);
    }
    return upload(ctx, dt, 1, shape, buf);
}

tg_tensor *tg_full_like(tg_ctx *ctx, const tg_tensor *t, double value)
{
    tg_tensor *tt = (tg_tensor *)t;
    if (!tg__check_args(ctx, "full_like", 1, &tt))
        return NULL;
    return tg_full(ctx, t->dtype, t->ndim, t->shape, value);
}

tg_tensor *tg_ones_like(tg_ctx *ctx, const tg_tensor *t) { return tg_full_like(ctx, t, 1.0); }

/* Checks the stream and the shape; returns the element count or -1. */
static int64_t rand_prep(tg_ctx *ctx, const char *fn, tg_rng *rng, int ndim, const int64_t *shape)
{
    if (!rng)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: NULL rng stream (make one with tg_rng_make)", fn),
               -1;
    if (ndim < 0 || ndim > TG_MAX_DIMS || (ndim > 0 && !shape))
        return tg__fail(ctx, TG_ERR_SHAPE, "%s: bad shape (%d dims)", fn, ndim), -1;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] > 0 && n > INT64_MAX / shape[d]))
            return tg__fail(ctx, TG_ERR_SHAPE, "%s: bad size %lld of dim %d", fn,
                            (long long)shape[d], d),
                   -1;
        n *= shape[d];
    }
    return n;
}

tg_tensor *tg_rand(tg_ctx *ctx, tg_rng *rng, tg_dtype dt, int ndim, const int64_t *shape)
{
    int64_t n = rand_prep(ctx, "rand", rng, ndim, shape);
    if (n < 0)
        return NULL;
    if (!tg_dtype_is_float(dt))
        return tg__fail(ctx, TG_ERR_DTYPE, "rand: dtype %s is not a float dtype", tg_dtype_name(dt)),
               NULL;
    void *buf = host_buf(ctx, "rand", dt, n);
    uint32_t w[4];
    for (int64_t i = 0; buf && i < n; i++) {
        if (i % 4 == 0)
            tg_philox4x32(rng->key, rng->counter + (uint64_t)(i / 4), w);
        if (dt == TG_F32)
            ((float *)buf)[i] = (float)(w[i % 4] >> 8) * (1.0f / 16777216.0f);
        else
            ((double *)buf)[i] = tg_u32_to_unit(w[i % 4]);
    }
    rng->counter += (uint64_t)((n + 3) / 4);
    return upload(ctx, dt, ndim, shape, buf);
}

tg_tensor *tg_randn(tg_ctx *ctx, tg_rng *rng, tg_dtype dt, int ndim, const int64_t *shape)
{
    int64_t n = rand_prep(ctx, "randn", rng, ndim, shape);
    if (n < 0)
        return NULL;
    if (!tg_dtype_is_float(dt))
        return tg__fail(ctx, TG_ERR_DTYPE, "randn: dtype %s is not a float dtype", tg_dtype_name(dt)),
               NULL;
    void *buf = host_buf(ctx, "randn", dt, n);
    uint32_t w[4];
    for (int64_t i = 0; buf && i < n; i += 2) {
        tg_philox4x32(rng->key, rng->counter + (uint64_t)(i / 2), w);
        /* u1 in (0, 1] keeps log() finite. */
        double u1 = ((double)w[0] + 1.0) / 4294967296.0, u2 = tg_u32_to_unit(w[1]);
        double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
        store(dt, buf, i, rad * cos(th), 0, false);
        if (i + 1 < n)
            store(dt, buf, i + 1, rad * sin(th), 0, false);
    }
    rng->counter += (uint64_t)((n + 1) / 2);
    return upload(ctx, dt, ndim, shape, buf);
}

tg_tensor *tg_randint(tg_ctx *ctx, tg_rng *rng, int64_t low, int64_t high, tg_dtype dt, int ndim,
                      const int64_t *shape)
{
    int64_t n = rand_prep(ctx, "randint", rng, ndim, shape);
    if (n < 0)
        return NULL;
    if (high <= low)
        return tg__fail(ctx, TG_ERR_INVALID, "randint: empty range [%lld, %lld)", (long long)low,
                        (long long)high),
               NULL;
    uint64_t range = (uint64_t)high - (uint64_t)low;
    void *buf = host_buf(ctx, "randint", dt, n);
    uint32_t w[4];
    for (int64_t i = 0; buf && i < n; i++) {
        tg_philox4x32(rng->key, rng->counter + (uint64_t)i, w);
        uint64_t x = ((uint64_t)w[0] << 32) | w[1];
        int64_t v = (int64_t)((uint64_t)low + x % range);
        store(dt, buf, i, 0.0, v, true);
    }
    rng->counter += (uint64_t)n;
    return upload(ctx, dt, ndim, shape, buf);
}
