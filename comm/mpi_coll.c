/* Collectives over host memory with MPI's non-blocking operations, and the
 * public blocking wrappers that wait for them under the world's timeout. */
#include "comm_internal.h"

#include <limits.h>
#include <stdio.h>

static tg_status check_count(tg_world *w, int64_t count, const char *what)
{
    if (count >= 0 && count <= INT_MAX)
        return TG_OK;
    return tg__comm_fail(w, TG_ERR_INVALID, "%s: count %lld out of range [0, %d]",
                  what ? what : "collective", (long long)count, INT_MAX);
}

static tg_status check_type(tg_world *w, tg_dtype dt, bool sum, const char *what,
                            MPI_Datatype *t)
{
    if ((unsigned)dt < TG_DTYPE_COUNT && tg__mpi_type(dt, sum, t))
        return TG_OK;
    if (sum && dt == TG_BF16) {
        *t = MPI_UINT16_T;
        return TG_OK;
    }
    return tg__comm_fail(w, TG_ERR_DTYPE, "%s: dtype %s is not supported%s", what ? what : "collective",
                  (unsigned)dt < TG_DTYPE_COUNT ? tg_dtype_name(dt) : "?",
                  sum ? " for a sum (f32, f64, i32, i64, bf16 are)" : "");
}

/* The sum operation for dt: bf16's own (16-bit words), else MPI_SUM. */
static MPI_Op sum_op(const tg_world *w, tg_dtype dt)
{
    return dt == TG_BF16 ? w->bf16_sum : MPI_SUM;
}

static tg_status mpi_allreduce_start(tg_world *w, void *state, void *buf, int64_t count,
                                     tg_dtype dt, const char *what, tg__req *r)
{
    (void)state;
    MPI_Datatype t;
    tg_status c = check_count(w, count, what);
    if (c || (c = check_type(w, dt, true, what, &t)))
        return c;
    tg_status s = tg__mpi_check(
        w, MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, t, sum_op(w, dt), w->comm, &r->mpi),
        "MPI_Iallreduce", what);
    r->active = !s;
    return s;
}

static tg_status mpi_bcast_start(tg_world *w, void *state, void *buf, int64_t count, tg_dtype dt,
                                 int root, const char *what, tg__req *r)
{
    (void)state;
    MPI_Datatype t;
    tg_status c = check_count(w, count, what);
    if (c || (c = check_type(w, dt, false, what, &t)))
        return c;
    tg_status s = tg__mpi_check(w, MPI_Ibcast(buf, (int)count, t, root, w->comm, &r->mpi),
                                "MPI_Ibcast", what);
    r->active = !s;
    return s;
}

static tg_status mpi_allgather_start(tg_world *w, void *state, const void *send, void *recv,
                                     int64_t count, tg_dtype dt, const char *what, tg__req *r)
{
    (void)state;
    MPI_Datatype t;
    tg_status c = check_count(w, count, what);
    if (c || (c = check_type(w, dt, false, what, &t)))
        return c;
    /* MPI wants MPI_IN_PLACE where NCCL takes the block's own address. */
    if (send == (const char *)recv + (size_t)w->rank * (size_t)count * tg_dtype_size(dt))
        send = MPI_IN_PLACE;
    tg_status s = tg__mpi_check(
        w, MPI_Iallgather(send, (int)count, t, recv, (int)count, t, w->comm, &r->mpi),
        "MPI_Iallgather", what);
    r->active = !s;
    return s;
}

static tg_status mpi_reduce_scatter_start(tg_world *w, void *state, const void *send, void *recv,
                                          int64_t count, tg_dtype dt, const char *what,
                                          tg__req *r)
{
    (void)state;
    MPI_Datatype t;
    tg_status c = check_count(w, count * w->size, what);
    if (c || (c = check_type(w, dt, true, what, &t)))
        return c;
    tg_status s = tg__mpi_check(w, MPI_Ireduce_scatter_block(send, recv, (int)count, t, sum_op(w, dt),
                                                             w->comm, &r->mpi),
                                "MPI_Ireduce_scatter_block", what);
    r->active = !s;
    return s;
}

static tg_status mpi_test(tg_world *w, void *state, tg__req *r, const char *what, bool *done)
{
    (void)state;
    int flag = 0;
    tg_status s = tg__mpi_check(w, MPI_Test(&r->mpi, &flag, MPI_STATUS_IGNORE), "MPI_Test", what);
    *done = !s && flag;
    return s;
}

const tg__coll tg__coll_mpi = {
    .name = "mpi",
    .allreduce_start = mpi_allreduce_start,
    .bcast_start = mpi_bcast_start,
    .allgather_start = mpi_allgather_start,
    .reduce_scatter_start = mpi_reduce_scatter_start,
    .test = mpi_test,
    /* A timed-out MPI collective cannot be cancelled; the world is marked
     * broken instead and never touches that request again. */
    .abort = NULL,
    .release = NULL,
};

/* ---- the public blocking forms ---- */

static tg_status finish(tg_world *w, tg_status s, tg__req *r, const char *label)
{
    if (s)
        return s;
    return tg__comm_wait(w, w->host, w->host_state, r, tg__now_s() + w->timeout_s, label);
}

static const char *label(char *buf, size_t len, const char *coll, const char *what)
{
    snprintf(buf, len, "%s%s%s", coll, what ? " of " : "", what ? what : "");
    return buf;
}

tg_status tg_allreduce_sum(tg_world *w, void *buf, int64_t count, tg_dtype dt, const char *what)
{
    char l[128];
    label(l, sizeof l, "allreduce", what);
    if (w->broken)
        return tg__comm_refuse(w, l);
    if (!buf && count > 0)
        return tg__comm_fail(w, TG_ERR_INVALID, "%s: NULL buffer", l);
    tg__req r = {0};
    w->seq++;
    return finish(w, w->host->allreduce_start(w, w->host_state, buf, count, dt, l, &r), &r, l);
}

tg_status tg_broadcast(tg_world *w, void *buf, int64_t count, tg_dtype dt, int root,
                       const char *what)
{
    char l[128];
    label(l, sizeof l, "broadcast", what);
    if (w->broken)
        return tg__comm_refuse(w, l);
    if (root < 0 || root >= w->size)
        return tg__comm_fail(w, TG_ERR_INVALID, "%s: root %d is not a rank of a world of %d", l,
                             root, w->size);
    if (!buf && count > 0)
        return tg__comm_fail(w, TG_ERR_INVALID, "%s: NULL buffer", l);
    tg__req r = {0};
    w->seq++;
    return finish(w, w->host->bcast_start(w, w->host_state, buf, count, dt, root, l, &r), &r, l);
}

tg_status tg_allgather(tg_world *w, const void *send, void *recv, int64_t count, tg_dtype dt,
                       const char *what)
{
    char l[128];
    label(l, sizeof l, "allgather", what);
    if (w->broken)
        return tg__comm_refuse(w, l);
    if ((!send || !recv) && count > 0)
        return tg__comm_fail(w, TG_ERR_INVALID, "%s: NULL buffer", l);
    tg__req r = {0};
    w->seq++;
    return finish(w, w->host->allgather_start(w, w->host_state, send, recv, count, dt, l, &r), &r,
                  l);
}

tg_status tg_barrier(tg_world *w, const char *what)
{
    char l[128];
    label(l, sizeof l, "barrier", what);
    if (w->broken)
        return tg__comm_refuse(w, l);
    tg__req r = {0};
    w->seq++;
    tg_status s = tg__mpi_check(w, MPI_Ibarrier(w->comm, &r.mpi), "MPI_Ibarrier", l);
    r.active = !s;
    return finish(w, s, &r, l);
}

tg_status tg_metrics_allreduce(tg_world *w, int n, double *vals)
{
    return tg_allreduce_sum(w, vals, n, TG_F64, "metrics");
}

/* The context's collective (tg_world_attach): MPI for host memory, NCCL
 * for device memory. The runtime has synchronised the device already. */
static tg_status ctx_sum(void *user, tg_ctx *ctx, void *data, int64_t n, tg_dtype dt, char *err,
                         size_t errlen)
{
    tg_world *w = user;
    const char *what = "world_sum (sync batch norm)";
    tg_status s = tg_ctx_backend(ctx)->device == TG_DEVICE_CUDA
                      ? tg_allreduce_sum_device(w, data, n, dt, what)
                      : tg_allreduce_sum(w, data, n, dt, what);
    if (s && err && errlen)
        snprintf(err, errlen, "%s", tg_world_error(w));
    return s;
}

void tg_world_attach(tg_world *w, tg_ctx *ctx)
{
    tg_collective c = {.sum = ctx_sum, .size = w->size, .user = w};
    tg_set_collective(ctx, &c);
}

#ifndef TG_HAVE_CUDA
tg_status tg_world_nccl_init(tg_world *w)
{
    return tg__comm_fail(w, TG_ERR_UNSUPPORTED, "NCCL: built without CUDA");
}

tg_status tg_allreduce_sum_device(tg_world *w, void *buf, int64_t count, tg_dtype dt,
                                  const char *what)
{
    (void)buf;
    (void)count;
    (void)dt;
    return tg__comm_fail(w, TG_ERR_UNSUPPORTED, "allreduce of %s on device memory: built without "
                         "CUDA", what ? what : "a buffer");
}
#endif
