/* DDP start-up: check that every rank has the same model, then copy rank
 * 0's values to all ranks. */
#include "comm_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a rank says about one tensor. Zero-filled before use, so that the
 * bytes (and their hash) are a function of the fields alone. */
typedef struct tensor_desc {
    char name[64];
    int32_t dtype;
    int32_t ndim;
    int32_t requires_grad;
    int32_t pad;
    int64_t shape[TG_MAX_DIMS];
} tensor_desc;

static void describe(const tg_tensor *t, tensor_desc *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", t->name ? t->name : "");
    d->dtype = (int32_t)t->dtype;
    d->ndim = t->ndim;
    d->requires_grad = t->requires_grad;
    for (int i = 0; i < t->ndim; i++)
        d->shape[i] = t->shape[i];
}

static int64_t digest(const tensor_desc *d)
{
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = (const unsigned char *)d;
    for (size_t i = 0; i < sizeof *d; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return (int64_t)(h >> 1);
}

static char *desc_str(const tensor_desc *d, char *buf, size_t len)
{
    int n = snprintf(buf, len, "'%s' %s%s (", d->name,
                     (unsigned)d->dtype < TG_DTYPE_COUNT ? tg_dtype_name((tg_dtype)d->dtype) : "?",
                     d->requires_grad ? "" : " no-grad");
    for (int i = 0; i < d->ndim && i < TG_MAX_DIMS && n > 0 && (size_t)n < len; i++)
        n += snprintf(buf + n, len - (size_t)n, "%s%lld", i ? ", " : "", (long long)d->shape[i]);
    if (n > 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, ")");
    return buf;
}

static const tg_tensor *entry(int nparams, tg_tensor *const *params, tg_tensor *const *buffers,
                              int i)
{
    return i < nparams ? params[i] : buffers[i - nparams];
}

/* Everyone has the hashes of everyone: find the first entry where some rank
 * differs from rank 0, gather that entry's description, and fail. */
static tg_status name_difference(tg_world *w, int nparams, tg_tensor *const *params,
                                 tg_tensor *const *buffers, const int64_t *all, int n)
{
    int first = -1, who = -1;
    for (int i = 0; i < n && first < 0; i++)
        for (int r = 1; r < w->size; r++)
            if (all[(size_t)r * (size_t)n + (size_t)i] != all[i]) {
                first = i;
                who = r;
                break;
            }
    if (first < 0)
        return TG_OK;
    tensor_desc mine, *descs = calloc((size_t)w->size, sizeof *descs);
    if (!descs)
        return tg__comm_fail(w, TG_ERR_NOMEM, "ddp: out of memory");
    describe(entry(nparams, params, buffers, first), &mine);
    tg_status s = tg_allgather(w, &mine, descs, (int64_t)sizeof mine, TG_U8, "ddp model check");
    if (!s) {
        char a[256], b[256];
        bool buf = first >= nparams;
        s = tg__comm_fail(w, TG_ERR_INVALID,
                          "ddp: the model differs between ranks: %s %d is %s on rank 0 but %s on "
                          "rank %d",
                          buf ? "buffer" : "parameter", buf ? first - nparams : first,
                          desc_str(&descs[0], a, sizeof a), desc_str(&descs[who], b, sizeof b),
                          who);
    }
    free(descs);
    return s;
}

tg_status tg__ddp_check_model(tg_world *w, tg_ctx *ctx, int nparams, tg_tensor *const *params,
                              int nbuffers, tg_tensor *const *buffers)
{
    (void)ctx;
    int n = nparams + nbuffers;
    int64_t counts[2] = {nparams, nbuffers};
    int64_t *all = calloc((size_t)w->size * (size_t)(n > 2 ? n : 2), sizeof *all);
    int64_t *mine = calloc((size_t)(n ? n : 1), sizeof *mine);
    tg_status s = all && mine ? TG_OK : tg__comm_fail(w, TG_ERR_NOMEM, "ddp: out of memory");
    if (!s)
        s = tg_allgather(w, counts, all, 2, TG_I64, "ddp model check");
    /* Compare with rank 0's counts, so that every rank finds the same
     * difference and all skip the next exchange together. */
    for (int r = 1; !s && r < w->size; r++)
        if (all[2 * r] != all[0] || all[2 * r + 1] != all[1])
            s = tg__comm_fail(w, TG_ERR_INVALID,
                              "ddp: the model differs between ranks: rank 0 has %lld parameters "
                              "and %lld buffers, rank %d has %lld and %lld",
                              (long long)all[0], (long long)all[1], r, (long long)all[2 * r],
                              (long long)all[2 * r + 1]);
    for (int i = 0; !s && i < n; i++) {
        tensor_desc d;
        describe(entry(nparams, params, buffers, i), &d);
        mine[i] = digest(&d);
    }
    if (!s)
        s = tg_allgather(w, mine, all, n, TG_I64, "ddp model check");
    if (!s)
        s = name_difference(w, nparams, params, buffers, all, n);
    free(all);
    free(mine);
    return s;
}

/* Rank 0's values to every rank, through a host buffer so that any device
 * works; this runs once, so the staging copy does not matter. */
tg_status tg__ddp_broadcast(tg_world *w, tg_ctx *ctx, int n, tg_tensor *const *ts)
{
    if (w->size == 1 || n == 0)
        return TG_OK;
    size_t max = 1;
    for (int i = 0; i < n; i++) {
        size_t b = (size_t)tg_numel(ts[i]) * tg_dtype_size(ts[i]->dtype);
        max = b > max ? b : max;
    }
    void *stage = malloc(max);
    if (!stage)
        return tg__comm_fail(w, TG_ERR_NOMEM, "ddp: out of memory for a %zu-byte broadcast", max);
    /* Writing into parameters is an in-place op on tensors that require
     * grad: allowed only with grad mode off. */
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_status s = TG_OK;
    /* Every rank joins every broadcast even after a local failure (with
     * whatever the buffer holds), so that no peer waits for it; the first
     * error is reported at the end. */
    for (int i = 0; i < n && !w->broken; i++) {
        size_t b = (size_t)tg_numel(ts[i]) * tg_dtype_size(ts[i]->dtype);
        char what[96];
        snprintf(what, sizeof what, "initial values of %s", ts[i]->name ? ts[i]->name : "a tensor");
        if (!s && w->rank == 0 && tg_to_host(ctx, ts[i], stage, b))
            s = tg__comm_fail(w, tg_ctx_status(ctx), "ddp: %s", tg_ctx_error(ctx));
        tg_status bs = tg_broadcast(w, stage, (int64_t)b, TG_U8, 0, what);
        s = s ? s : bs;
        if (!s && w->rank != 0 && tg_copy_from_host(ctx, ts[i], stage, b))
            s = tg__comm_fail(w, tg_ctx_status(ctx), "ddp: %s", tg_ctx_error(ctx));
    }
    tg_set_grad_enabled(ctx, prev);
    free(stage);
    return s;
}
