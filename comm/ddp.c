/*
 * Data-parallel gradients. Parameters are grouped into buckets in reverse
 * order (the order in which backward finalises them); each bucket is one
 * flat persistent tensor holding the gradients of its parameters followed by
 * one "used" flag per parameter. A parameter's ->grad becomes a view of its
 * slot the first time its gradient is final in a synchronised step (the
 * gradient is copied in once), so autograd then accumulates straight into
 * the bucket and the average is left there: no copy in or out. Buckets are
 * started strictly in index order, so that every rank issues the same
 * collectives in the same order even when a parameter gets no gradient on
 * some rank (its bucket then starts only in tg_ddp_wait). The flags, summed
 * with the gradients, tell whether any rank had a gradient, so a parameter
 * unused everywhere keeps ->grad NULL, as in PyTorch.
 */
#include "ddp_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static int lookup(const tg_ddp *d, const tg_tensor *t)
{
    for (size_t i = ptr_hash(t) & d->mask;; i = (i + 1) & d->mask) {
        if (d->keys[i] == t)
            return d->vals[i];
        if (!d->keys[i])
            return -1;
    }
}

tg_status tg__ddp_ctx_fail(tg_ddp *d, const char *doing)
{
    return tg__comm_fail(d->w, tg_ctx_status(d->ctx) ? tg_ctx_status(d->ctx) : TG_ERR_BACKEND,
                         "ddp: %s: %s", doing, tg_ctx_error(d->ctx));
}

void *tg__ddp_bucket_data(const ddp_bucket *b)
{
    return (char *)b->buf->storage->data + (size_t)b->buf->offset * tg_dtype_size(b->dt);
}

/* A view of parameter k's slot in its bucket, shaped like the parameter. */
static tg_tensor *slot_view(tg_ddp *d, int k)
{
    const ddp_param *p = &d->p[k];
    tg_tensor *v = tg_slice(d->ctx, d->b[p->bucket].buf, 0, p->off, p->off + p->numel, 1);
    return tg_reshape(d->ctx, v, p->t->ndim, p->t->shape);
}

/* Make parameter k's slot hold its gradient (zeros when it has none). A
 * ->grad that is the slot already does; any other is copied in, and a plain
 * (not graph-recorded) one is then replaced by the slot, so that from then
 * on autograd accumulates straight into the bucket. */
static tg_status fill_slot(tg_ddp *d, int k)
{
    tg_tensor *t = d->p[k].t, *v = d->p[k].view, *g = t->grad;
    if (g == v)
        return TG_OK;
    if (g ? tg_copy_(d->ctx, v, g) : tg_fill_(d->ctx, v, 0.0))
        return tg__ddp_ctx_fail(d, t->name ? t->name : "gradient copy");
    if (g && g->record == 0)
        t->grad = v;
    return TG_OK;
}

/* Write the used flags of bucket i (1 where this rank has a gradient). The
 * copy from host also orders the slot copies before the all-reduce on a
 * device whose copies to the device synchronise its stream. */
static tg_status write_flags(tg_ddp *d, int i)
{
    ddp_bucket *b = &d->b[i];
    for (int j = 0; j < b->count; j++) {
        const ddp_param *p = &d->p[b->first + j];
        d->flags[j] = p->ready || p->t->grad ? 1.0 : 0.0;
        d->flags32[j] = (float)d->flags[j];
        if (d->zero)
            d->zflags[b->first + j] = d->flags[j];
    }
    tg_tensor *v = tg_slice(d->ctx, b->buf, 0, b->ngrad, b->ngrad + b->count, 1);
    size_t n = (size_t)b->count * tg_dtype_size(b->dt);
    const void *src = b->dt == TG_F32 ? (const void *)d->flags32 : (const void *)d->flags;
    if (!v || tg_copy_from_host(d->ctx, v, src, n))
        return tg__ddp_ctx_fail(d, "writing bucket flags");
    return TG_OK;
}

static tg_status launch(tg_ddp *d, int i)
{
    ddp_bucket *b = &d->b[i];
    tg_status s = write_flags(d, i);
    if (s)
        return s;
    if (d->w->broken)
        return tg__comm_refuse(d->w, b->label);
    d->w->seq++;
    b->t0_us = tg_trace_now_us();
    if (d->zero) {
        char *shard = (char *)d->shard->storage->data +
                      (size_t)(d->shard->offset + b->soff) * tg_dtype_size(b->dt);
        s = d->coll->reduce_scatter_start(d->w, d->cstate, tg__ddp_bucket_data(b), shard,
                                          b->ngrad / d->w->size, b->dt, b->label, &b->req);
    } else if (d->grad_dt == TG_BF16 && b->dt == TG_F32) {
        /* Half the bytes on the wire; the flags (0 or 1 per parameter, summed
         * over at most 256 ranks) are exact in bf16. */
        b->low = tg_to_dtype(d->ctx, b->buf, TG_BF16);
        if (!b->low)
            return tg__ddp_ctx_fail(d, "rounding a bucket to bf16");
        s = d->coll->allreduce_start(d->w, d->cstate, b->low->storage->data,
                                     b->ngrad + b->count, TG_BF16, b->label, &b->req);
    } else {
        s = d->coll->allreduce_start(d->w, d->cstate, tg__ddp_bucket_data(b),
                                     b->ngrad + b->count, b->dt, b->label, &b->req);
    }
    b->launched = !s;
    return s;
}

static void finished(tg_ddp *d, ddp_bucket *b)
{
    b->done = true;
    tg_trace_span(d->trace, 1, b->label, b->t0_us, tg_trace_now_us());
}

/* Drive the in-flight all-reduces (MPI progresses only inside its calls). */
static tg_status progress(tg_ddp *d)
{
    for (int i = 0; i < d->next_launch; i++) {
        ddp_bucket *b = &d->b[i];
        bool done;
        if (b->done)
            continue;
        tg_status s = tg__comm_poll(d->w, d->coll, d->cstate, &b->req, b->label, &done);
        if (s)
            return s;
        if (done)
            finished(d, b);
    }
    return TG_OK;
}

static tg_status launch_ready(tg_ddp *d)
{
    while (d->next_launch < d->nb && d->b[d->next_launch].nready == d->b[d->next_launch].count) {
        tg_status s = launch(d, d->next_launch);
        if (s)
            return s;
        d->next_launch++;
    }
    return progress(d);
}

static void hook(tg_ctx *ctx, tg_tensor *leaf, void *user)
{
    (void)ctx;
    tg_ddp *d = user;
    if (!d->sync || d->err || d->w->size == 1)
        return;
    int k = lookup(d, leaf);
    if (k < 0)
        return;
    ddp_param *p = &d->p[k];
    ddp_bucket *b = &d->b[p->bucket];
    if (p->ready && b->launched) {
        d->err = tg__comm_fail(d->w, TG_ERR_AUTOGRAD,
                               "ddp: parameter %s got a second gradient after its bucket's "
                               "all-reduce started%s; call backward once per synchronised step "
                               "(use tg_ddp_set_sync(false) for the others)",
                               leaf->name ? leaf->name : "(unnamed)", "");
        return;
    }
    if ((d->err = fill_slot(d, k)))
        return;
    if (!p->ready) {
        p->ready = true;
        b->nready++;
        if (!d->rebuilt && d->ready_seq)
            d->ready_seq[d->nready_seq++] = k;
    }
    d->err = launch_ready(d);
}

static void reset_step(tg_ddp *d)
{
    for (int k = 0; k < d->ntrain; k++)
        d->p[k].ready = false;
    for (int i = 0; i < d->nb; i++) {
        d->b[i].nready = 0;
        d->b[i].launched = d->b[i].done = false;
        d->b[i].req.active = false;
    }
    d->next_launch = 0;
}

static tg_status wait_all(tg_ddp *d);
static tg_status rebuild(tg_ddp *d);

/* After bucket i's sum: average, and copy back where any rank had a gradient. */
static tg_status unpack(tg_ddp *d, int i)
{
    ddp_bucket *b = &d->b[i];
    if (b->low) {
        tg_tensor *wide = tg_to_dtype(d->ctx, b->low, TG_F32);
        b->low = NULL;
        if (!wide || tg_copy_(d->ctx, b->buf, wide))
            return tg__ddp_ctx_fail(d, "widening a bf16 bucket to f32");
    }
    tg_tensor *fv = tg_slice(d->ctx, b->buf, 0, b->ngrad, b->ngrad + b->count, 1);
    size_t n = (size_t)b->count * tg_dtype_size(b->dt);
    void *dst = b->dt == TG_F32 ? (void *)d->flags32 : (void *)d->flags;
    if (!fv || tg_to_host(d->ctx, fv, dst, n))
        return tg__ddp_ctx_fail(d, "reading bucket flags");
    if (tg_mul_scalar_(d->ctx, b->buf, 1.0 / d->w->size))
        return tg__ddp_ctx_fail(d, "averaging a bucket");
    for (int j = 0; j < b->count; j++) {
        double used = b->dt == TG_F32 ? (double)d->flags32[j] : d->flags[j];
        tg_tensor *t = d->p[b->first + j].t;
        if (used <= 0)
            continue;
        tg_tensor *v = d->p[b->first + j].view;
        if (!t->grad) {
            /* Another rank had a gradient: take the average too, so that
             * every rank steps identically. */
            t->grad = v;
        } else if (t->grad != v && tg_copy_(d->ctx, t->grad, v)) {
            /* A graph-recorded gradient keeps its own tensor. */
            return tg__ddp_ctx_fail(d, "copying a gradient back");
        }
    }
    return TG_OK;
}

tg_status tg_ddp_wait(tg_ddp *d)
{
    if (!d->sync || d->w->size == 1)
        return TG_OK;
    const double t0_us = tg_trace_now_us();
    tg_status s = wait_all(d);
    if (!s && !d->rebuilt)
        s = rebuild(d);
    /* The time backward's end waited for communication: the part of the
     * all-reduce that did not overlap backward. */
    tg_trace_span(d->trace, 0, "ddp wait", t0_us, tg_trace_now_us());
    return s;
}

static tg_status wait_all(tg_ddp *d)
{
    tg_status s = d->err;
    /* Buckets that did not fill (a parameter without a gradient here) start
     * now, in order, their missing slots holding whatever ->grad has. */
    for (; !s && d->next_launch < d->nb; d->next_launch++) {
        ddp_bucket *b = &d->b[d->next_launch];
        for (int j = 0; !s && j < b->count; j++)
            if (!d->p[b->first + j].ready)
                s = fill_slot(d, b->first + j);
        if (!s)
            s = launch(d, d->next_launch);
    }
    /* Wait for the buckets in order; after each, one poll of the others, so
     * that every span ends at the first poll that saw its bucket complete
     * (the precision of the comm track: the gaps between polls). */
    double deadline = tg__now_s() + d->w->timeout_s;
    for (int i = 0; !s && i < d->nb; i++) {
        ddp_bucket *b = &d->b[i];
        if (!(s = progress(d)) && !b->done) {
            s = tg__comm_wait(d->w, d->coll, d->cstate, &b->req, deadline, b->label);
            if (!s)
                finished(d, b);
        }
    }
    if (d->zero && !s)
        s = tg__ddp_zero_unpack(d);
    for (int i = 0; !s && !d->zero && i < d->nb; i++)
        s = unpack(d, i);
    d->err = TG_OK;
    reset_step(d);
    /* Collectives may be left in flight, or skipped here but issued by the
     * peers: this world cannot be used for another step. */
    if (s && !d->w->broken)
        tg__comm_break(d->w, s);
    return s;
}

void tg_ddp_set_sync(tg_ddp *d, bool sync) { d->sync = sync; }
bool tg_ddp_sync(const tg_ddp *d) { return d->sync; }
void tg_ddp_set_trace(tg_ddp *d, tg_trace *t) { d->trace = t; }
int tg_ddp_bucket_count(const tg_ddp *d) { return d->nb; }

bool tg_ddp_bucket_info(const tg_ddp *d, int i, int *first, int *count, size_t *bytes)
{
    if (i < 0 || i >= d->nb)
        return false;
    if (first)
        *first = d->b[i].first;
    if (count)
        *count = d->b[i].count;
    if (bytes)
        *bytes = (size_t)d->b[i].ngrad * tg_dtype_size(d->b[i].dt);
    return true;
}

int tg_ddp_bucket_param(const tg_ddp *d, int k)
{
    return k >= 0 && k < d->ntrain ? d->index[k] : -1;
}

void tg_ddp_free(tg_ddp *d)
{
    if (!d)
        return;
    tg_set_grad_hook(d->ctx, NULL, NULL);
    /* A gradient that is a slot view outlives the ddp as a copy. */
    for (int k = 0; k < d->ntrain; k++) {
        tg_tensor *t = d->p[k].t;
        if (!t->grad || t->grad != d->p[k].view)
            continue;
        tg_tensor *g = tg_persistent(d->ctx, t->dtype, t->ndim, t->shape, t->name);
        t->grad = g && tg_copy_(d->ctx, g, d->p[k].view) == TG_OK ? g : NULL;
    }
    free(d->views);
    free(d->p);
    free(d->index);
    free(d->b);
    free(d->keys);
    free(d->vals);
    free(d->flags);
    free(d->flags32);
    free(d->bufs);
    free(d->bstage);
    free(d->bufviews);
    free(d->ready_seq);
    free(d->zflags);
    tg__ddp_zero_free(d);
    free(d);
}

tg_status tg_ddp_broadcast_buffers(tg_ddp *d)
{
    if (d->w->size == 1 || d->nbufs == 0)
        return TG_OK;
    if (d->w->broken)
        return tg__comm_refuse(d->w, "buffer broadcast");
    tg_status s = TG_OK;
    size_t off = 0;
    for (int i = 0; i < d->nbufs && !s && d->w->rank == 0; i++) {
        size_t b = (size_t)tg_numel(d->bufs[i]) * tg_dtype_size(d->bufs[i]->dtype);
        if (tg_to_host(d->ctx, d->bufs[i], d->bstage + off, b))
            s = tg__ddp_ctx_fail(d, "reading a buffer for its broadcast");
        off += b;
    }
    /* Every rank joins the broadcast even after a local failure, so that no
     * peer waits for it. */
    tg_status bs = tg_broadcast(d->w, d->bstage, (int64_t)d->bstage_bytes, TG_U8, 0,
                                "buffers (batch-norm statistics)");
    s = s ? s : bs;
    if (s || d->w->rank == 0)
        return s;
    bool prev = tg_set_grad_enabled(d->ctx, false);
    off = 0;
    for (int i = 0; i < d->nbufs && !s; i++) {
        size_t b = (size_t)tg_numel(d->bufs[i]) * tg_dtype_size(d->bufs[i]->dtype);
        if (tg_copy_from_host(d->ctx, d->bufs[i], d->bstage + off, b))
            s = tg__ddp_ctx_fail(d, "writing a broadcast buffer");
        off += b;
    }
    tg_set_grad_enabled(d->ctx, prev);
    return s;
}

/* ---- construction ---- */

tg_status tg__ddp_check_model(tg_world *w, tg_ctx *ctx, int nparams, tg_tensor *const *params,
                              int nbuffers, tg_tensor *const *buffers);
tg_status tg__ddp_broadcast(tg_world *w, tg_ctx *ctx, int n, tg_tensor *const *ts);

static size_t clamp_size(size_t v, size_t lo, size_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Bucket capacities not given in cfg follow the model's gradient bytes:
 * the first bucket (the last layers, final first) holds about a quarter of
 * them (64 KiB to 1 MiB), so that its all-reduce starts while backward
 * still has most of the model to go; the others about half (1 to 25 MiB),
 * so that a large layer (the cnn's fc1, 12.8 MB) does not wait in one
 * bucket for every layer before it. A model of a few MiB thus gets two or
 * three buckets; a toy model of a few KiB gets one. */
static void bucket_caps(const tg_ddp *d, const tg_ddp_config *cfg, size_t *first, size_t *cap)
{
    size_t total = 0;
    for (int k = 0; k < d->ntrain; k++)
        total += (size_t)d->p[k].numel * tg_dtype_size(d->p[k].t->dtype);
    *first = cfg && cfg->first_bucket_bytes ? cfg->first_bucket_bytes
                                            : clamp_size(total / 4, 64 << 10, TG__MIB);
    *cap = cfg && cfg->bucket_bytes ? cfg->bucket_bytes
                                    : clamp_size(total / 2, TG__MIB, 25 * TG__MIB);
}

/* Cuts the parameters, in their order positions, into buckets: b[], nb and
 * each parameter's bucket and offset. */
static void layout(tg_ddp *d)
{
    memset(d->b, 0, ((size_t)d->ntrain + 1) * sizeof *d->b);
    d->nb = 0;
    size_t bytes = 0;
    for (int k = 0; k < d->ntrain; k++) {
        tg_tensor *t = d->p[k].t;
        size_t pb = (size_t)d->p[k].numel * tg_dtype_size(t->dtype);
        ddp_bucket *cur = d->nb ? &d->b[d->nb - 1] : NULL;
        size_t limit = d->nb == 1 ? d->cap_first : d->cap;
        if (!cur || cur->dt != t->dtype || (cur->count > 0 && bytes + pb > limit)) {
            cur = &d->b[d->nb++];
            cur->dt = t->dtype;
            cur->first = k;
            snprintf(cur->label, sizeof cur->label, "allreduce bucket %d", d->nb - 1);
            bytes = 0;
        }
        d->p[k].bucket = d->nb - 1;
        d->p[k].off = cur->ngrad;
        cur->ngrad += d->p[k].numel;
        cur->count++;
        bytes += pb;
    }
    /* ZeRO: each bucket's gradients padded (with zeros that stay zeros) to
     * equal blocks, one per rank; this rank's blocks lie one after another
     * in the shard tensor. */
    const int64_t n = d->w->size;
    int64_t at = 0;
    for (int i = 0; d->zero && i < d->nb; i++) {
        snprintf(d->b[i].label, sizeof d->b[i].label, "reduce-scatter bucket %d", i);
        d->b[i].ngrad = (d->b[i].ngrad + n - 1) / n * n;
        d->b[i].soff = at;
        at += d->b[i].ngrad / n;
    }
}

/* A view made in the step arena, copied into memory that lives as long as
 * the ddp; it shares persistent storage, so tg_step_reset keeps it (as a
 * gradient, or as a bucket). */
void tg__ddp_keep_view(tg_tensor *dst, const tg_tensor *v, const char *name)
{
    *dst = *v;
    dst->requires_grad = dst->retain_grad = dst->touched = false;
    dst->grad = dst->gacc = NULL;
    dst->record = dst->first_use = 0;
    /* Not a step tensor any more: the step-lifetime checks pass it. */
    dst->step = 0;
    dst->name = name;
}

/* Each bucket's view of its dtype's flat tensor (buckets of one dtype lie
 * in bucket order), then each parameter's slot view of its bucket. */
static tg_status make_views(tg_ddp *d)
{
    int64_t at[2] = {0, 0};
    for (int i = 0; i < d->nb; i++) {
        int f = d->b[i].dt == TG_F64;
        int64_t n = d->b[i].ngrad + d->b[i].count;
        const tg_tensor *v = tg_slice(d->ctx, d->flat[f], 0, at[f], at[f] + n, 1);
        if (!v)
            return tg__ddp_ctx_fail(d, "making a bucket view");
        tg__ddp_keep_view(&d->bufviews[i], v, "ddp bucket");
        d->b[i].buf = &d->bufviews[i];
        at[f] += n;
    }
    for (int k = 0; k < d->ntrain; k++) {
        const tg_tensor *v = slot_view(d, k);
        if (!v || v->storage != d->b[d->p[k].bucket].buf->storage)
            return v ? tg__comm_fail(d->w, TG_ERR_BACKEND, "ddp: a slot view copied its bucket")
                     : tg__ddp_ctx_fail(d, "making a slot view");
        tg__ddp_keep_view(&d->views[k], v, d->p[k].t->name);
        d->p[k].view = &d->views[k];
    }
    return TG_OK;
}

static tg_status build_buckets(tg_ddp *d, const tg_ddp_config *cfg)
{
    bucket_caps(d, cfg, &d->cap_first, &d->cap);
    d->b = calloc((size_t)d->ntrain + 1, sizeof *d->b);
    d->bufviews = calloc((size_t)d->ntrain + 1, sizeof *d->bufviews);
    d->views = calloc((size_t)d->ntrain + 1, sizeof *d->views);
    if (!d->b || !d->bufviews || !d->views)
        return tg__comm_fail(d->w, TG_ERR_NOMEM, "ddp: out of memory");
    layout(d);
    /* One flat tensor per dtype: the gradients and one flag per parameter;
     * the same total for any bucket layout. */
    int64_t total[2] = {0, 0};
    for (int k = 0; k < d->ntrain; k++)
        total[d->p[k].t->dtype == TG_F64] += d->p[k].numel + 1 + (d->zero ? d->w->size - 1 : 0);
    for (int f = 0; f < 2; f++) {
        if (total[f] == 0)
            continue;
        d->flat[f] = tg_persistent(d->ctx, f ? TG_F64 : TG_F32, 1, &total[f], "ddp buckets");
        if (!d->flat[f])
            return tg__ddp_ctx_fail(d, "allocating the buckets");
    }
    tg_status s = make_views(d);
    if (s)
        return s;
    if (d->zero) {
        int64_t n = d->b[d->nb - 1].soff + d->b[d->nb - 1].ngrad / d->w->size;
        tg_tensor *t = tg_persistent(d->ctx, TG_F32, 1, &n, "zero gradient shard");
        d->zflags = calloc((size_t)d->ntrain + 1, sizeof *d->zflags);
        if (!t || !d->zflags)
            return t ? tg__comm_fail(d->w, TG_ERR_NOMEM, "ddp: out of memory")
                     : tg__ddp_ctx_fail(d, "allocating the gradient shard");
        d->shard = t;
    }
    /* Flags for any layout: at most every parameter in one bucket. */
    d->flags = calloc((size_t)d->ntrain + 1, sizeof *d->flags);
    d->flags32 = calloc((size_t)d->ntrain + 1, sizeof *d->flags32);
    d->ready_seq = calloc((size_t)d->ntrain + 1, sizeof *d->ready_seq);
    if (!d->flags || !d->flags32 || !d->ready_seq)
        return tg__comm_fail(d->w, TG_ERR_NOMEM, "ddp: out of memory");
    return TG_OK;
}

/*
 * After the first synchronised step, lay the buckets out in the order the
 * gradients became final (PyTorch DDP's bucket rebuild): a model whose
 * parameters are registered in another order than backward finalises them
 * (a residual projection, a shared embedding) otherwise fills its first
 * bucket late. Rank 0's order is broadcast, so the layout stays identical
 * on every rank. The gradients that live in the buckets are moved to their
 * new slots through host memory (once).
 */
static tg_status rebuild(tg_ddp *d)
{
    d->rebuilt = true;
    const int n = d->ntrain;
    int32_t *order = calloc((size_t)n + 1, sizeof *order);
    char *seen = calloc((size_t)n + 1, 1);
    tg_status s = order && seen ? TG_OK : tg__comm_fail(d->w, TG_ERR_NOMEM, "ddp: out of memory");
    int m = 0;
    for (int i = 0; !s && i < d->nready_seq; i++)
        if (!seen[d->ready_seq[i]]) {
            seen[d->ready_seq[i]] = 1;
            order[m++] = d->ready_seq[i];
        }
    for (int k = 0; !s && k < n; k++)
        if (!seen[k])
            order[m++] = k;
    /* Every rank joins the broadcast, even after a local failure. */
    tg_status bs = tg_broadcast(d->w, order ? (void *)order : (void *)seen,
                                order ? (int64_t)n * 4 : 0, TG_U8, 0, "bucket order");
    s = s ? s : bs;
    bool same = true;
    for (int k = 0; !s && k < n; k++)
        same &= order[k] == k && order[k] >= 0 && order[k] < n;
    for (int k = 0; !s && k < n; k++)
        if (order[k] < 0 || order[k] >= n)
            s = tg__comm_fail(d->w, TG_ERR_INVALID, "ddp: bad bucket order from rank 0");
    if (s || same) {
        free(order);
        free(seen);
        return s;
    }
    /* Save the gradients that are slot views, by old position. */
    size_t *off = calloc((size_t)n + 1, sizeof *off), total = 0;
    for (int k = 0; off && k < n; k++) {
        off[k] = total;
        total += (size_t)d->p[k].numel * tg_dtype_size(d->p[k].t->dtype);
    }
    unsigned char *host = off ? malloc(total ? total : 1) : NULL;
    ddp_param *np = calloc((size_t)n + 1, sizeof *np);
    int *nindex = calloc((size_t)n + 1, sizeof *nindex);
    if (!off || !host || !np || !nindex)
        s = tg__comm_fail(d->w, TG_ERR_NOMEM, "ddp: out of memory");
    for (int k = 0; !s && k < n; k++) {
        seen[k] = d->p[k].t->grad == d->p[k].view;
        size_t b = (size_t)d->p[k].numel * tg_dtype_size(d->p[k].t->dtype);
        if (seen[k] && tg_to_host(d->ctx, d->p[k].view, host + off[k], b))
            s = tg__ddp_ctx_fail(d, "saving a gradient for the bucket rebuild");
    }
    if (!s) {
        for (int j = 0; j < n; j++) {
            np[j] = d->p[order[j]];
            nindex[j] = d->index[order[j]];
        }
        memcpy(d->p, np, (size_t)n * sizeof *np);
        memcpy(d->index, nindex, (size_t)n * sizeof *nindex);
        for (int j = 0; j < n; j++) {
            size_t i = ptr_hash(d->p[j].t) & d->mask;
            while (d->keys[i] != d->p[j].t)
                i = (i + 1) & d->mask;
            d->vals[i] = j;
        }
        layout(d);
        s = make_views(d);
    }
    for (int j = 0; !s && j < n; j++) {
        int k = order[j];
        size_t b = (size_t)d->p[j].numel * tg_dtype_size(d->p[j].t->dtype);
        if (!seen[k])
            continue;
        if (tg_copy_from_host(d->ctx, d->p[j].view, host + off[k], b))
            s = tg__ddp_ctx_fail(d, "restoring a gradient after the bucket rebuild");
        d->p[j].t->grad = d->p[j].view;
    }
    free(order);
    free(seen);
    free(off);
    free(host);
    free(np);
    free(nindex);
    return s;
}

static tg_status build_table(tg_ddp *d, int nparams, tg_tensor *const *params)
{
    for (int i = nparams - 1; i >= 0; i--) {
        tg_tensor *t = params[i];
        if (!t->requires_grad)
            continue;
        if (!tg_dtype_is_float(t->dtype) || !tg_is_contiguous(t))
            return tg__comm_fail(d->w, TG_ERR_INVALID, "ddp: parameter %d (%s) must be a "
                                 "contiguous f32 or f64 tensor", i, t->name ? t->name : "unnamed");
        d->index[d->ntrain] = i;
        d->p[d->ntrain].t = t;
        d->p[d->ntrain].numel = tg_numel(t);
        d->ntrain++;
    }
    size_t size = 16;
    while (size < 2 * (size_t)d->ntrain + 1)
        size *= 2;
    d->keys = calloc(size, sizeof *d->keys);
    d->vals = calloc(size, sizeof *d->vals);
    if (!d->keys || !d->vals)
        return tg__comm_fail(d->w, TG_ERR_NOMEM, "ddp: out of memory");
    d->mask = size - 1;
    for (int k = 0; k < d->ntrain; k++) {
        size_t i = ptr_hash(d->p[k].t) & d->mask;
        while (d->keys[i] && d->keys[i] != d->p[k].t)
            i = (i + 1) & d->mask;
        if (d->keys[i])
            return tg__comm_fail(d->w, TG_ERR_INVALID, "ddp: parameter %d (%s) is listed twice",
                                 d->index[k], d->p[k].t->name ? d->p[k].t->name : "unnamed");
        d->keys[i] = d->p[k].t;
        d->vals[i] = k;
    }
    return TG_OK;
}

tg_status tg_ddp_new(tg_ctx *ctx, tg_world *w, int nparams, tg_tensor *const *params, int nbuffers,
                     tg_tensor *const *buffers, const tg_ddp_config *cfg, tg_ddp **out)
{
    if (!out || !ctx || !w)
        return w ? tg__comm_fail(w, TG_ERR_INVALID, "ddp: NULL argument") : TG_ERR_INVALID;
    *out = NULL;
    if (nparams < 0 || nbuffers < 0 || (nparams && !params) || (nbuffers && !buffers))
        return tg__comm_fail(w, TG_ERR_INVALID, "ddp: bad parameter or buffer list");
    for (int i = 0; i < nparams + nbuffers; i++)
        if (!(i < nparams ? params[i] : buffers[i - nparams]))
            return tg__comm_fail(w, TG_ERR_INVALID, "ddp: %s %d is NULL",
                                 i < nparams ? "parameter" : "buffer",
                                 i < nparams ? i : i - nparams);
    tg_status s = tg__ddp_check_model(w, ctx, nparams, params, nbuffers, buffers);
    if (!s)
        s = tg__ddp_broadcast(w, ctx, nparams, params);
    if (!s)
        s = tg__ddp_broadcast(w, ctx, nbuffers, buffers);
    if (s)
        return s;
    tg_ddp *d = calloc(1, sizeof *d);
    if (!d)
        return tg__comm_fail(w, TG_ERR_NOMEM, "ddp: out of memory");
    d->ctx = ctx;
    d->w = w;
    d->sync = true;
    d->coll = w->host;
    d->cstate = w->host_state;
    d->zero = cfg && cfg->zero_stage == 1 && w->size > 1;
    /* ZeRO keeps its first layout (the optimizer's shards follow it). */
    d->rebuilt = d->zero;
    d->p = calloc((size_t)nparams + 1, sizeof *d->p);
    d->index = calloc((size_t)nparams + 1, sizeof *d->index);
    if (!d->p || !d->index)
        s = tg__comm_fail(w, TG_ERR_NOMEM, "ddp: out of memory");
    if (!s)
        s = build_table(d, nparams, params);
    for (int k = 0; !s && d->zero && k < d->ntrain; k++)
        if (d->p[k].t->dtype != TG_F32)
            s = tg__comm_fail(w, TG_ERR_INVALID, "ddp: ZeRO shards f32 parameters only; %s is %s",
                              d->p[k].t->name ? d->p[k].t->name : "a parameter",
                              tg_dtype_name(d->p[k].t->dtype));
    d->grad_dt = cfg ? cfg->grad_dtype : TG_F32;
    if (!s && d->grad_dt != TG_F32 && d->grad_dt != TG_BF16)
        s = tg__comm_fail(w, TG_ERR_INVALID, "ddp: gradients travel in f32 or bf16, not %s",
                          (unsigned)d->grad_dt < TG_DTYPE_COUNT ? tg_dtype_name(d->grad_dt) : "?");
    if (!s && d->grad_dt == TG_BF16 && cfg && cfg->zero_stage == 1)
        s = tg__comm_fail(w, TG_ERR_UNSUPPORTED,
                          "ddp: bf16 gradients (grad_dtype) with ZeRO stage 1 are not supported");
    if (!s && cfg && (cfg->zero_stage < 0 || cfg->zero_stage > 1))
        s = tg__comm_fail(w, TG_ERR_INVALID, "ddp: ZeRO stage %d: only 0 and 1 exist",
                          cfg->zero_stage);
    if (!s && nbuffers > 0) {
        d->bufs = malloc((size_t)nbuffers * sizeof *d->bufs);
        for (int i = 0; d->bufs && i < nbuffers; i++)
            d->bstage_bytes += (size_t)tg_numel(buffers[i]) * tg_dtype_size(buffers[i]->dtype);
        d->bstage = d->bufs ? malloc(d->bstage_bytes ? d->bstage_bytes : 1) : NULL;
        if (!d->bstage)
            s = tg__comm_fail(w, TG_ERR_NOMEM, "ddp: out of memory");
        else
            memcpy(d->bufs, buffers, (size_t)nbuffers * sizeof *d->bufs);
        d->nbufs = s ? 0 : nbuffers;
    }
    if (!s)
        s = build_buckets(d, cfg);
    if (!s && tg_ctx_backend(ctx)->device == TG_DEVICE_CUDA && w->size > 1) {
        s = w->dev ? TG_OK : tg_world_nccl_init(w);
        d->coll = w->dev;
        d->cstate = w->dev_state;
    }
    if (s) {
        tg_ddp_free(d);
        return s;
    }
    tg_set_grad_hook(ctx, hook, d);
    *out = d;
    return TG_OK;
}
