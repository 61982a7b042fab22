/*
 * ZeRO stage 1: the optimizer state sharded across ranks (as DeepSpeed's
 * stage 1 and llm.c do), as a mode of the DDP object.
 *
 * Layout. With tg_ddp_config.zero_stage = 1 every bucket's gradients are
 * padded (with zeros) to a multiple of the world size N and cut into N equal
 * blocks; block r of every bucket belongs to rank r. The bucket's all-reduce
 * becomes a reduce-scatter (comm/ddp.c), so rank r receives the sum of its
 * blocks only, into the `shard` tensor (its blocks one after another).
 *
 * The optimizer. A parameter whose elements fall in rank r's blocks gets,
 * on rank r, a "piece": a 1-D view of those elements of the parameter (the
 * parameter's own memory) whose ->grad is the matching 1-D view of the
 * shard. Rank r's tg_optim is made over its pieces only, so its state
 * (momentum, Adam's moments) covers about 1/N of the model, and the update
 * rules, being elementwise, give exactly what the whole optimizer would.
 * Each piece keeps the parameter's name, so its state tensors are named as
 * the whole optimizer's are ("optim.fc1.weight.exp_avg"), holding a range
 * of elements.
 *
 * After the step each rank writes its updated pieces into its blocks of the
 * buckets (whose gradients are spent), an all-gather per bucket gives every
 * rank every block, the parameters are copied out of the buckets, and the
 * buckets are zeroed, which zeroes the gradients (they are views of the
 * buckets) for the next step.
 *
 * Checkpoints keep their format: rank 0 gathers the full state (each state
 * tensor shaped like its parameter) into step tensors before writing, and a
 * resume on any world size takes its pieces' ranges out of the file's full
 * tensors (tg_ddp_zero_load_state).
 */
#include "ddp_internal.h"

#include "tapegrad/checkpoint.h"
#include "tapegrad/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct zero_piece {
    int k;            /* order position of its parameter */
    int64_t lo, hi;   /* the parameter's elements [lo, hi) */
    tg_tensor param;  /* view of those elements of the parameter */
    tg_tensor grad;   /* view of their averaged gradient in the shard */
} zero_piece;

struct tg__zero {
    tg_optim *opt;
    tg_optim_config cfg;
    zero_piece *pc;
    tg_tensor **pp; /* &pc[j].param, for the optimizer */
    int npc;
    int nk;            /* state tensors per parameter (0: none), "step" first */
    tg_tensor **state; /* npc * nk, the optimizer's */
    char (*names)[160]; /* staging names of a gather (ntrain * nk) */
};

static const char *const sgd_keys[] = {"step", "momentum_buffer"};
static const char *const adam_keys[] = {"step", "exp_avg", "exp_avg_sq"};

static int keys_of(const tg_optim_config *c, const char *const **keys)
{
    *keys = c->kind == TG_OPTIM_SGD ? sgd_keys : adam_keys;
    return c->kind == TG_OPTIM_SGD ? (c->momentum != 0.0 ? 2 : 0) : 3;
}

static int64_t block_len(const tg_ddp *d, int i) { return d->b[i].ngrad / d->w->size; }

/* Rank r's elements of parameter k: [*lo, *hi) of the parameter; false when
 * none. */
static bool piece_range(const tg_ddp *d, int k, int r, int64_t *lo, int64_t *hi)
{
    const ddp_param *p = &d->p[k];
    int64_t sb = block_len(d, p->bucket), a = (int64_t)r * sb, b = a + sb;
    int64_t s = p->off > a ? p->off : a, e = p->off + p->numel < b ? p->off + p->numel : b;
    *lo = s - p->off;
    *hi = e - p->off;
    return e > s;
}

void tg__ddp_zero_free(tg_ddp *d)
{
    tg__zero *z = d->z;
    if (!z)
        return;
    tg_optim_free(z->opt);
    free(z->pc);
    free(z->pp);
    free(z->state);
    free(z->names);
    free(z);
    d->z = NULL;
}

/* The pieces' views: parameter elements, and their gradients in the shard. */
static tg_status make_pieces(tg_ddp *d, tg__zero *z)
{
    const int r = d->w->rank;
    for (int k = 0; k < d->ntrain; k++) {
        int64_t lo, hi;
        if (piece_range(d, k, r, &lo, &hi))
            z->pc[z->npc++] = (zero_piece){.k = k, .lo = lo, .hi = hi};
    }
    for (int j = 0; j < z->npc; j++) {
        zero_piece *pc = &z->pc[j];
        const ddp_param *p = &d->p[pc->k];
        const ddp_bucket *b = &d->b[p->bucket];
        int64_t numel = p->numel, at = b->soff + p->off + pc->lo - r * block_len(d, p->bucket);
        tg_tensor *v = tg_slice(d->ctx, tg_reshape(d->ctx, p->t, 1, &numel), 0, pc->lo, pc->hi, 1);
        tg_tensor *g = tg_slice(d->ctx, d->shard, 0, at, at + pc->hi - pc->lo, 1);
        if (!v || !g || v->storage != p->t->storage)
            return v && g ? tg__comm_fail(d->w, TG_ERR_BACKEND, "ddp: a parameter view copied")
                          : tg__ddp_ctx_fail(d, "making ZeRO's parameter views");
        tg__ddp_keep_view(&pc->param, v, p->t->name);
        tg__ddp_keep_view(&pc->grad, g, p->t->name);
        /* The optimizer skips parameters that do not require grad. */
        pc->param.requires_grad = true;
        pc->param.grad = &pc->grad;
        z->pp[j] = &pc->param;
    }
    return TG_OK;
}

tg_status tg_ddp_zero_init(tg_ddp *d, const tg_optim_config *oc)
{
    if (!d->zero || d->z || !oc)
        return tg__comm_fail(d->w, TG_ERR_INVALID, "ddp: ZeRO needs a ddp made with zero_stage 1 "
                             "on more than one rank, initialised once");
    tg__zero *z = calloc(1, sizeof *z);
    if (!z)
        return tg__comm_fail(d->w, TG_ERR_NOMEM, "ddp: out of memory");
    d->z = z;
    const char *const *keys;
    z->cfg = *oc;
    z->nk = keys_of(oc, &keys);
    z->pc = calloc((size_t)d->ntrain + 1, sizeof *z->pc);
    z->pp = calloc((size_t)d->ntrain + 1, sizeof *z->pp);
    z->state = calloc((size_t)(d->ntrain + 1) * (size_t)(z->nk + 1), sizeof *z->state);
    z->names = calloc((size_t)(d->ntrain + 1) * (size_t)(z->nk + 1), sizeof *z->names);
    if (!z->pc || !z->pp || !z->state || !z->names)
        return tg__comm_fail(d->w, TG_ERR_NOMEM, "ddp: out of memory");
    bool prev = tg_set_grad_enabled(d->ctx, false);
    tg_status s = make_pieces(d, z);
    tg_set_grad_enabled(d->ctx, prev);
    if (!s && tg_optim_new(d->ctx, oc, z->npc, z->pp, &z->opt) != TG_OK)
        s = tg__ddp_ctx_fail(d, "making the optimizer of this rank's shard");
    if (!s && tg_optim_state(z->opt, z->state, z->npc * z->nk) != z->npc * z->nk)
        s = tg__comm_fail(d->w, TG_ERR_BACKEND, "ddp: unexpected optimizer state");
    return s;
}

tg_optim *tg_ddp_zero_optim(tg_ddp *d) { return d->z ? d->z->opt : NULL; }

size_t tg_ddp_zero_state_bytes(const tg_ddp *d)
{
    size_t n = 0;
    for (int i = 0; d->z && i < d->z->npc * d->z->nk; i++)
        n += (size_t)tg_numel(d->z->state[i]) * tg_dtype_size(d->z->state[i]->dtype);
    return n;
}

tg_status tg__ddp_zero_unpack(tg_ddp *d)
{
    /* Which parameters had a gradient on some rank: those alone step. */
    tg_status s = tg_allreduce_sum(d->w, d->zflags, d->ntrain, TG_F64, "ZeRO gradient flags");
    if (s)
        return s;
    if (tg_mul_scalar_(d->ctx, d->shard, 1.0 / d->w->size))
        return tg__ddp_ctx_fail(d, "averaging the gradient shard");
    for (int j = 0; d->z && j < d->z->npc; j++)
        d->z->pc[j].param.grad = d->zflags[d->z->pc[j].k] > 0 ? &d->z->pc[j].grad : NULL;
    return TG_OK;
}

/* Clip to max_norm over the whole model: the squares of every rank's shard
 * summed across ranks. */
static tg_status clip(tg_ddp *d, double max_norm)
{
    tg__zero *z = d->z;
    double local = 0;
    if (z->npc && tg_clip_grad_norm(d->ctx, z->npc, z->pp, 1e300, &local) != TG_OK)
        return tg__ddp_ctx_fail(d, "the gradient norm of this rank's shard");
    double sq = local * local;
    tg_status s = tg_allreduce_sum(d->w, &sq, 1, TG_F64, "ZeRO gradient norm");
    double c = max_norm / (sqrt(sq) + 1e-6);
    if (!s && c < 1 && tg_mul_scalar_(d->ctx, d->shard, c))
        s = tg__ddp_ctx_fail(d, "clipping the gradient shard");
    return s;
}

/* Every rank's blocks of every bucket to every rank, in place. */
static tg_status gather_params(tg_ddp *d)
{
    tg_status s = tg_synchronize(d->ctx) ? tg__ddp_ctx_fail(d, "synchronising") : TG_OK;
    char label[48];
    double deadline = tg__now_s() + d->w->timeout_s;
    for (int i = 0; !s && i < d->nb; i++) {
        ddp_bucket *b = &d->b[i];
        size_t es = tg_dtype_size(b->dt);
        char *data = tg__ddp_bucket_data(b);
        snprintf(label, sizeof label, "all-gather bucket %d", i);
        if (d->w->broken)
            return tg__comm_refuse(d->w, label);
        d->w->seq++;
        double t0 = tg_trace_now_us();
        s = d->coll->allgather_start(d->w, d->cstate,
                                     data + (size_t)d->w->rank * (size_t)block_len(d, i) * es, data,
                                     block_len(d, i), b->dt, label, &b->req);
        if (!s)
            s = tg__comm_wait(d->w, d->coll, d->cstate, &b->req, deadline, label);
        tg_trace_span(d->trace, 1, label, t0, tg_trace_now_us());
    }
    return s;
}

tg_status tg_ddp_zero_step(tg_ddp *d, double lr, double max_norm)
{
    tg__zero *z = d->z;
    if (!z)
        return tg__comm_fail(d->w, TG_ERR_INVALID, "ddp: tg_ddp_zero_step before tg_ddp_zero_init");
    tg_status s = max_norm > 0 ? clip(d, max_norm) : TG_OK;
    if (!s && tg_optim_step(d->ctx, z->opt, lr) != TG_OK)
        s = tg__ddp_ctx_fail(d, "the optimizer step of this rank's shard");
    bool prev = tg_set_grad_enabled(d->ctx, false);
    /* The gradients are spent: the buckets carry the parameters now. */
    for (int j = 0; !s && j < z->npc; j++) {
        const zero_piece *pc = &z->pc[j];
        const ddp_param *p = &d->p[pc->k];
        tg_tensor *slot = tg_slice(d->ctx, d->b[p->bucket].buf, 0, p->off + pc->lo,
                                   p->off + pc->hi, 1);
        if (!slot || tg_copy_(d->ctx, slot, &pc->param))
            s = tg__ddp_ctx_fail(d, "writing a parameter shard");
    }
    if (!s)
        s = gather_params(d);
    for (int k = 0; !s && k < d->ntrain; k++)
        if (tg_copy_(d->ctx, d->p[k].t, d->p[k].view))
            s = tg__ddp_ctx_fail(d, "copying a gathered parameter");
    for (int f = 0; !s && f < 2; f++)
        if (d->flat[f] && tg_fill_(d->ctx, d->flat[f], 0.0))
            s = tg__ddp_ctx_fail(d, "zeroing the gradients");
    for (int k = 0; !s && k < d->ntrain; k++) {
        tg_tensor *t = d->p[k].t;
        if (t->grad && t->grad != d->p[k].view && tg_zero_grad(d->ctx, t))
            s = tg__ddp_ctx_fail(d, "zeroing a gradient");
    }
    tg_set_grad_enabled(d->ctx, prev);
    if (s && !d->w->broken)
        tg__comm_break(d->w, s);
    return s;
}

/* ---- checkpoints ---- */

/* Order positions sorted by the caller's parameter index. */
static void by_index(const tg_ddp *d, int *ord)
{
    for (int k = 0; k < d->ntrain; k++) {
        int j = k;
        while (j > 0 && d->index[ord[j - 1]] > d->index[k]) {
            ord[j] = ord[j - 1];
            j--;
        }
        ord[j] = k;
    }
}

/* Rank 0 receives every rank's `len` floats, in rank order. */
static tg_status gather_host(tg_ddp *d, const float *send, float *recv, int64_t len)
{
    tg__req r = {0};
    const char *what = "ZeRO optimizer state for the checkpoint";
    if (d->w->broken)
        return tg__comm_refuse(d->w, what);
    if (len > (1 << 30))
        return tg__comm_fail(d->w, TG_ERR_INVALID, "ddp: ZeRO shard of %lld elements too large",
                             (long long)len);
    d->w->seq++;
    tg_status s = tg__mpi_check(d->w, MPI_Igather(send, (int)len, MPI_FLOAT, recv, (int)len,
                                                  MPI_FLOAT, 0, d->w->comm, &r.mpi),
                                "MPI_Igather", what);
    r.active = !s;
    return s ? s : tg__comm_wait(d->w, d->w->host, d->w->host_state, &r,
                                 tg__now_s() + d->w->timeout_s, what);
}

/* Rank 0: state key kk of parameter k, from the gathered blocks `all`, into
 * a new step tensor named as the whole optimizer names it. */
static tg_tensor *assemble(tg_ddp *d, int k, int kk, const char *key, const float *all,
                           float *host)
{
    const ddp_param *p = &d->p[k];
    const int64_t sb = block_len(d, p->bucket), S = tg_numel(d->shard);
    for (int64_t e = 0; e < p->numel; e++) {
        int64_t q = p->off + e, r = q / sb;
        host[e] = all[r * S + d->b[p->bucket].soff + q - r * sb];
    }
    char *nm = d->z->names[k * d->z->nk + kk];
    snprintf(nm, sizeof d->z->names[0], "optim.%s.%s", p->t->name, key);
    tg_tensor *t = tg_empty(d->ctx, TG_F32, p->t->ndim, p->t->shape);
    if (!t || tg_copy_from_host(d->ctx, t, host, (size_t)p->numel * sizeof *host))
        return NULL;
    t->name = nm;
    return t;
}

/* The "step" tensors: each parameter's count, from the rank that holds its
 * first element. */
static tg_status gather_steps(tg_ddp *d, double *steps)
{
    tg__zero *z = d->z;
    for (int j = 0; j < z->npc; j++)
        if (z->pc[j].lo == 0 && tg_to_host(d->ctx, z->state[j * z->nk], &steps[z->pc[j].k], 8))
            return tg__ddp_ctx_fail(d, "reading a step count");
    return tg_allreduce_sum(d->w, steps, d->ntrain, TG_F64, "ZeRO step counts");
}

tg_status tg_ddp_zero_gather_state(tg_ddp *d, tg_tensor **out, int max, int *n)
{
    tg__zero *z = d->z;
    *n = 0;
    if (!z || z->nk == 0)
        return TG_OK;
    const char *const *keys;
    keys_of(&z->cfg, &keys);
    const bool root = d->w->rank == 0;
    const int64_t S = tg_numel(d->shard);
    int64_t most = 1;
    for (int k = 0; k < d->ntrain; k++)
        most = d->p[k].numel > most ? d->p[k].numel : most;
    float *mine = calloc((size_t)S + 1, sizeof *mine);
    float *all = root ? malloc(((size_t)S * (size_t)d->w->size + 1) * sizeof *all) : NULL;
    float *host = root ? malloc((size_t)most * sizeof *host) : NULL;
    double *steps = calloc((size_t)d->ntrain + 1, sizeof *steps);
    int *ord = calloc((size_t)d->ntrain + 1, sizeof *ord);
    tg_status s = mine && steps && ord && (!root || (all && host))
                      ? TG_OK
                      : tg__comm_fail(d->w, TG_ERR_NOMEM, "ddp: out of memory gathering state");
    /* Every rank joins every collective below, even after a local failure. */
    tg_status cs = gather_steps(d, steps);
    s = s ? s : cs;
    by_index(d, ord);
    if (!s && root && d->ntrain * z->nk > max)
        s = tg__comm_fail(d->w, TG_ERR_INVALID, "ddp: room for %d state tensors, %d needed", max,
                          d->ntrain * z->nk);
    for (int i = 0; !s && root && i < d->ntrain; i++) {
        static const int64_t one = 1;
        int k = ord[i];
        char *nm = z->names[k * z->nk];
        snprintf(nm, sizeof z->names[0], "optim.%s.step", d->p[k].t->name);
        tg_tensor *t = tg_empty(d->ctx, TG_F64, 1, &one);
        if (!t || tg_copy_from_host(d->ctx, t, &steps[k], 8)) {
            s = tg__ddp_ctx_fail(d, "staging a step count");
        } else {
            t->name = nm;
            out[i * z->nk] = t;
        }
    }
    for (int kk = 1; kk < z->nk; kk++) {
        if (mine)
            memset(mine, 0, (size_t)S * sizeof *mine);
        for (int j = 0; !s && j < z->npc; j++) {
            const zero_piece *pc = &z->pc[j];
            const ddp_param *p = &d->p[pc->k];
            int64_t at = d->b[p->bucket].soff + p->off + pc->lo -
                         (int64_t)d->w->rank * block_len(d, p->bucket);
            if (tg_to_host(d->ctx, z->state[j * z->nk + kk], mine + at,
                           (size_t)(pc->hi - pc->lo) * sizeof *mine))
                s = tg__ddp_ctx_fail(d, "reading optimizer state");
        }
        cs = gather_host(d, mine, all, S);
        s = s ? s : cs;
        for (int i = 0; !s && root && i < d->ntrain; i++) {
            tg_tensor *t = assemble(d, ord[i], kk, keys[kk], all, host);
            if (!t)
                s = tg__ddp_ctx_fail(d, "staging optimizer state");
            out[i * z->nk + kk] = t;
        }
    }
    if (!s && root)
        *n = d->ntrain * z->nk;
    free(mine);
    free(all);
    free(host);
    free(steps);
    free(ord);
    return s;
}

static const tg_ckpt_tensor *find(const tg_ckpt_tensor *ts, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(ts[i].name, name) == 0)
            return &ts[i];
    return NULL;
}

/* The file's tensor `name` must exist with the dtype and element count of
 * what it restores. */
static const tg_ckpt_tensor *expect(tg_ddp *d, const tg_ckpt_tensor *ts, int n, const char *name,
                                    tg_dtype dt, const tg_tensor *like)
{
    const tg_ckpt_tensor *t = find(ts, n, name);
    bool ok = t && t->dtype == dt && t->ndim == (like ? like->ndim : 1);
    for (int i = 0; ok && i < t->ndim; i++)
        ok = t->shape[i] == (like ? like->shape[i] : 1);
    if (!ok)
        tg__comm_fail(d->w, TG_ERR_SHAPE, "ddp: the checkpoint's optimizer state %s '%s'%s",
                      t ? "tensor" : "has no tensor", name,
                      t ? " has another shape or dtype than this run's optimizer keeps"
                        : " (written with another optimizer?)");
    return ok ? t : NULL;
}

tg_status tg_ddp_zero_load_state(tg_ddp *d, const tg_ckpt_tensor *ts, int n, int64_t optim_steps)
{
    tg__zero *z = d->z;
    if (!z)
        return tg__comm_fail(d->w, TG_ERR_INVALID, "ddp: ZeRO state loaded before tg_ddp_zero_init");
    const char *const *keys;
    keys_of(&z->cfg, &keys);
    /* Exactly the whole optimizer's tensors: every parameter's, no other. */
    int file_state = 0;
    for (int i = 0; i < n; i++)
        file_state += strncmp(ts[i].name, "optim.", 6) == 0;
    if (file_state != d->ntrain * z->nk)
        return tg__comm_fail(d->w, TG_ERR_SHAPE,
                             "ddp: the checkpoint holds %d optimizer state tensors, this run's "
                             "optimizer keeps %d (another optimizer?)",
                             file_state, d->ntrain * z->nk);
    char name[200];
    for (int k = 0; k < d->ntrain; k++)
        for (int kk = 0; kk < z->nk; kk++) {
            snprintf(name, sizeof name, "optim.%s.%s", d->p[k].t->name, keys[kk]);
            if (!expect(d, ts, n, name, kk ? TG_F32 : TG_F64, kk ? d->p[k].t : NULL))
                return TG_ERR_SHAPE;
        }
    tg_optim_set_steps(z->opt, optim_steps);
    for (int j = 0; j < z->npc; j++)
        for (int kk = 0; kk < z->nk; kk++) {
            const zero_piece *pc = &z->pc[j];
            snprintf(name, sizeof name, "optim.%s.%s", d->p[pc->k].t->name, keys[kk]);
            const tg_ckpt_tensor *t = find(ts, n, name);
            const char *src = (const char *)t->data + (kk ? (size_t)pc->lo * 4 : 0);
            size_t len = kk ? (size_t)(pc->hi - pc->lo) * 4 : 8;
            if (tg_copy_from_host(d->ctx, z->state[j * z->nk + kk], src, len))
                return tg__ddp_ctx_fail(d, "restoring optimizer state");
        }
    return TG_OK;
}
