/*
 * Collectives over device memory with NCCL (built only with CUDA).
 *
 * The communicator is created non-blocking (config.blocking = 0), so that
 * neither its creation nor a collective can block the host on a lost peer:
 * every call may return ncclInProgress and completion is polled, through
 * ncclCommGetAsyncError for the communicator and a CUDA event for each
 * collective, against the world's deadline. On a timeout or an asynchronous
 * error the communicator is aborted (ncclCommAbort), which releases the
 * GPU work stuck in it.
 */
#ifdef TG_HAVE_CUDA

#include "comm_internal.h"
#define TG__WANT_NCCL
#include "cuda/cuda_loader.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TG__NCCL_EVENTS 64

typedef struct nccl_state {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t ev[TG__NCCL_EVENTS];
    int nev, next_ev;
    int device;
    bool aborted;
} nccl_state;

static tg_status cuda_check(tg_world *w, cudaError_t e, const char *call, const char *what)
{
    if (e == cudaSuccess)
        return TG_OK;
    char st[48];
    tg__comm_fail(w, TG_ERR_BACKEND, "%s%s%s%s failed: %s", call, what ? " for " : "",
                  what ? what : "", tg__step_str(w, st, sizeof st), cudaGetErrorString(e));
    return tg__comm_break(w, TG_ERR_BACKEND);
}

static tg_status nccl_check(tg_world *w, ncclResult_t r, const char *call, const char *what)
{
    if (r == ncclSuccess || r == ncclInProgress)
        return TG_OK;
    char st[48];
    tg__comm_fail(w, TG_ERR_COMM, "%s%s%s%s failed: %s", call, what ? " for " : "",
                  what ? what : "", tg__step_str(w, st, sizeof st), tg__nccl.GetErrorString(r));
    return tg__comm_break(w, TG_ERR_COMM);
}

static bool nccl_type(tg_dtype dt, ncclDataType_t *t)
{
    switch (dt) {
    case TG_F32: *t = ncclFloat32; return true;
    case TG_F64: *t = ncclFloat64; return true;
    case TG_I32: *t = ncclInt32; return true;
    case TG_I64: *t = ncclInt64; return true;
    case TG_U8: *t = ncclUint8; return true;
    case TG_BF16: *t = ncclBfloat16; return true;
    default: return false;
    }
}

/* Poll the communicator's asynchronous state until it leaves ncclInProgress. */
static tg_status settle(tg_world *w, nccl_state *s, double deadline, const char *what)
{
    for (;;) {
        ncclResult_t a = ncclInProgress;
        tg_status st = nccl_check(w, tg__nccl.CommGetAsyncError(s->comm, &a),
                                  "ncclCommGetAsyncError", what);
        if (st)
            return st;
        if (a != ncclInProgress)
            return nccl_check(w, a, "NCCL (asynchronous error)", what);
        if (tg__now_s() > deadline)
            return tg__comm_expire(w, &tg__coll_nccl, s, what);
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

static tg_status record(tg_world *w, nccl_state *s, const char *what, tg__req *r)
{
    r->event = s->next_ev;
    s->next_ev = (s->next_ev + 1) % s->nev;
    tg_status st = cuda_check(w, cudaEventRecord(s->ev[r->event], s->stream), "cudaEventRecord",
                              what);
    r->active = !st;
    return st;
}

static tg_status nccl_allreduce_start(tg_world *w, void *state, void *buf, int64_t count,
                                      tg_dtype dt, const char *what, tg__req *r)
{
    nccl_state *s = state;
    ncclDataType_t t;
    if (!nccl_type(dt, &t) || dt == TG_U8)
        return tg__comm_fail(w, TG_ERR_DTYPE, "%s: dtype %s cannot be summed",
                             what ? what : "allreduce", tg_dtype_name(dt));
    tg_status st = nccl_check(w, tg__nccl.AllReduce(buf, buf, (size_t)count, t, ncclSum,
                                                    s->comm, s->stream),
                              "ncclAllReduce", what);
    return st ? st : record(w, s, what, r);
}

static tg_status nccl_bcast_start(tg_world *w, void *state, void *buf, int64_t count, tg_dtype dt,
                                  int root, const char *what, tg__req *r)
{
    nccl_state *s = state;
    ncclDataType_t t;
    if (!nccl_type(dt, &t))
        return tg__comm_fail(w, TG_ERR_DTYPE, "%s: dtype not supported", what ? what : "broadcast");
    tg_status st = nccl_check(w, tg__nccl.Broadcast(buf, buf, (size_t)count, t, root,
                                                    s->comm, s->stream),
                              "ncclBroadcast", what);
    return st ? st : record(w, s, what, r);
}

static tg_status nccl_allgather_start(tg_world *w, void *state, const void *send, void *recv,
                                      int64_t count, tg_dtype dt, const char *what, tg__req *r)
{
    nccl_state *s = state;
    ncclDataType_t t;
    if (!nccl_type(dt, &t))
        return tg__comm_fail(w, TG_ERR_DTYPE, "%s: dtype not supported", what ? what : "allgather");
    tg_status st = nccl_check(w, tg__nccl.AllGather(send, recv, (size_t)count, t, s->comm,
                                                    s->stream),
                              "ncclAllGather", what);
    return st ? st : record(w, s, what, r);
}

static tg_status nccl_reduce_scatter_start(tg_world *w, void *state, const void *send, void *recv,
                                           int64_t count, tg_dtype dt, const char *what,
                                           tg__req *r)
{
    nccl_state *s = state;
    ncclDataType_t t;
    if (!nccl_type(dt, &t) || dt == TG_U8)
        return tg__comm_fail(w, TG_ERR_DTYPE, "%s: dtype %s cannot be summed",
                             what ? what : "reduce-scatter", tg_dtype_name(dt));
    tg_status st = nccl_check(w, tg__nccl.ReduceScatter(send, recv, (size_t)count, t, ncclSum,
                                                        s->comm, s->stream),
                              "ncclReduceScatter", what);
    return st ? st : record(w, s, what, r);
}

static tg_status nccl_test(tg_world *w, void *state, tg__req *r, const char *what, bool *done)
{
    nccl_state *s = state;
    *done = false;
    ncclResult_t a = ncclSuccess;
    tg_status st = nccl_check(w, tg__nccl.CommGetAsyncError(s->comm, &a),
                              "ncclCommGetAsyncError", what);
    if (!st && a != ncclInProgress)
        st = nccl_check(w, a, "NCCL (asynchronous error)", what);
    if (st) {
        tg__coll_nccl.abort(w, s);
        return st;
    }
    cudaError_t e = cudaEventQuery(s->ev[r->event]);
    if (e == cudaErrorNotReady)
        return TG_OK;
    st = cuda_check(w, e, "cudaEventQuery", what);
    *done = !st;
    return st;
}

static void nccl_abort(tg_world *w, void *state)
{
    (void)w;
    nccl_state *s = state;
    if (s && !s->aborted && s->comm) {
        tg__nccl.CommAbort(s->comm);
        s->aborted = true;
    }
}

static void nccl_release(void *state)
{
    nccl_state *s = state;
    if (!s)
        return;
    if (s->comm && !s->aborted)
        tg__nccl.CommDestroy(s->comm);
    for (int i = 0; i < s->nev; i++)
        cudaEventDestroy(s->ev[i]);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    free(s);
}

const tg__coll tg__coll_nccl = {
    .name = "nccl",
    .allreduce_start = nccl_allreduce_start,
    .bcast_start = nccl_bcast_start,
    .allgather_start = nccl_allgather_start,
    .reduce_scatter_start = nccl_reduce_scatter_start,
    .test = nccl_test,
    .abort = nccl_abort,
    .release = nccl_release,
};

static tg_status nccl_setup(tg_world *w, nccl_state *s)
{
    char why[1024];
    if (tg__nccl_load(why, sizeof why))
        return tg__comm_fail(w, TG_ERR_UNSUPPORTED, "NCCL init: %s", why);
    int ndev = 0;
    tg_status st = cuda_check(w, cudaGetDeviceCount(&ndev), "cudaGetDeviceCount", "NCCL init");
    if (!st && ndev <= 0)
        return tg__comm_fail(w, TG_ERR_UNSUPPORTED, "NCCL init: no CUDA device");
    if (st)
        return st;
    s->device = w->local_rank % ndev;
    if ((st = cuda_check(w, cudaSetDevice(s->device), "cudaSetDevice", "NCCL init")) ||
        (st = cuda_check(w, cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking),
                         "cudaStreamCreateWithFlags", "NCCL init")))
        return st;
    for (; s->nev < TG__NCCL_EVENTS; s->nev++)
        if ((st = cuda_check(w, cudaEventCreateWithFlags(&s->ev[s->nev], cudaEventDisableTiming),
                             "cudaEventCreate", "NCCL init")))
            return st;
    /* Rank 0 makes the id; MPI (under its own timeout) hands it out. */
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (w->rank == 0 &&
        (st = nccl_check(w, tg__nccl.GetUniqueId(&id), "ncclGetUniqueId", "NCCL init")))
        return st;
    if ((st = tg_broadcast(w, &id, (int64_t)sizeof id, TG_U8, 0, "NCCL unique id")))
        return st;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    st = nccl_check(w, tg__nccl.CommInitRankConfig(&s->comm, w->size, id, w->rank, &cfg),
                    "ncclCommInitRankConfig", "NCCL init");
    if (!st)
        st = settle(w, s, tg__now_s() + w->timeout_s, "NCCL init");
    return st;
}

tg_status tg_world_nccl_init(tg_world *w)
{
    if (w->dev)
        return TG_OK;
    if (w->broken)
        return tg__comm_refuse(w, "NCCL init");
    nccl_state *s = calloc(1, sizeof *s);
    if (!s)
        return tg__comm_fail(w, TG_ERR_NOMEM, "NCCL init: out of memory");
    tg_status st = nccl_setup(w, s);
    if (st) {
        nccl_abort(w, s);
        nccl_release(s);
        return st;
    }
    w->dev = &tg__coll_nccl;
    w->dev_state = s;
    return TG_OK;
}

tg_status tg_allreduce_sum_device(tg_world *w, void *buf, int64_t count, tg_dtype dt,
                                  const char *what)
{
    char l[128];
    snprintf(l, sizeof l, "allreduce of %s", what ? what : "a device buffer");
    if (w->broken)
        return tg__comm_refuse(w, l);
    tg_status st = w->dev ? TG_OK : tg_world_nccl_init(w);
    if (st)
        return st;
    tg__req r = {0};
    w->seq++;
    st = w->dev->allreduce_start(w, w->dev_state, buf, count, dt, l, &r);
    if (st)
        return st;
    return tg__comm_wait(w, w->dev, w->dev_state, &r, tg__now_s() + w->timeout_s, l);
}

#else
/* Without CUDA the device entry points live in mpi_coll.c. */
typedef int tg__nccl_unused;
#endif
