/* Private to comm/: the world's layout, the collective-backend interface and
 * the helpers the comm sources share. */
#ifndef TG_COMM_INTERNAL_H
#define TG_COMM_INTERNAL_H

#include "tapegrad/comm.h"

#include <mpi.h>
#include <stdarg.h>

/* One collective in flight. Each backend uses the field it needs: MPI a
 * request, NCCL the index of an event in its pool. */
typedef struct tg__req {
    MPI_Request mpi;
    int event;
    bool active;
} tg__req;

/*
 * A collective backend: MPI over host memory (comm/mpi_coll.c) or NCCL over
 * device memory (comm/nccl.c). The start functions queue the operation and
 * return at once; test reports completion without blocking; abort tears the
 * backend down after a timeout so that nothing is left waiting on a lost
 * peer (optional: NULL when there is nothing to tear down). Every function
 * sets the world's message on failure.
 */
typedef struct tg__coll {
    const char *name;
    tg_status (*allreduce_start)(tg_world *w, void *state, void *buf, int64_t count, tg_dtype dt,
                                 const char *what, tg__req *r);
    tg_status (*bcast_start)(tg_world *w, void *state, void *buf, int64_t count, tg_dtype dt,
                             int root, const char *what, tg__req *r);
    /* In place when send is recv's block of this rank (recv + rank * count). */
    tg_status (*allgather_start)(tg_world *w, void *state, const void *send, void *recv,
                                 int64_t count, tg_dtype dt, const char *what, tg__req *r);
    /* recv (count elements) gets this rank's block of the sum over ranks of
     * send (count * size elements, blocks in rank order); send and recv do
     * not overlap. */
    tg_status (*reduce_scatter_start)(tg_world *w, void *state, const void *send, void *recv,
                                      int64_t count, tg_dtype dt, const char *what, tg__req *r);
    tg_status (*test)(tg_world *w, void *state, tg__req *r, const char *what, bool *done);
    void (*abort)(tg_world *w, void *state);
    void (*release)(void *state);
} tg__coll;

struct tg_world {
    MPI_Comm comm;  /* collectives */
    MPI_Comm side;  /* the diagnosis exchange after a timeout */
    MPI_Comm local; /* ranks of this node */
    /* MPI has no bf16: sums of bf16 buffers (16-bit words) go through this
     * operation, each pair added in f32 and rounded to nearest even. */
    MPI_Op bf16_sum;
    int rank, size, local_rank, local_size, nodes;
    bool owns_mpi;
    double timeout_s;
    int64_t step;
    uint64_t seq; /* collectives started, for the diagnosis */
    bool oversubscribed; /* more ranks on this node than online cores */
    bool nbc_tuned; /* libnbc's all-reduce algorithm set to reduce-scatter + all-gather */
    bool broken;
    tg_status broken_status;
    char err[1024];
    const tg__coll *host;
    void *host_state;
    const tg__coll *dev; /* NULL until tg_world_nccl_init */
    void *dev_state;
};

extern const tg__coll tg__coll_mpi;
#ifdef TG_HAVE_CUDA
extern const tg__coll tg__coll_nccl;
#endif

/* Set the message, prefixed with "rank R: "; returns s. */
tg_status tg__comm_fail(tg_world *w, tg_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Turn an MPI return code into a status: TG_OK for MPI_SUCCESS, else
 * TG_ERR_COMM with a message naming the call, `what` and the step, and the
 * world marked broken. */
tg_status tg__mpi_check(tg_world *w, int rc, const char *call, const char *what);
/* Mark the world broken with status s (the message is already set). */
tg_status tg__comm_break(tg_world *w, tg_status s);
/* The failure of a world that is already broken. */
tg_status tg__comm_refuse(tg_world *w, const char *what);
/* " (step 17)" or "" into buf; returns buf. */
const char *tg__step_str(const tg_world *w, char *buf, size_t len);

/* MPI datatype of dt; false for a dtype MPI cannot sum when sum is set. */
bool tg__mpi_type(tg_dtype dt, bool sum, MPI_Datatype *out);

double tg__now_s(void);
/* Poll r until it completes or the deadline (tg__now_s() seconds) passes.
 * On expiry: exchange a note with every peer over the side communicator to
 * learn which ranks did not arrive, abort the backend, set a message naming
 * this rank, `what`, the step and the missing ranks, and return
 * TG_ERR_TIMEOUT with the world broken. */
tg_status tg__comm_wait(tg_world *w, const tg__coll *c, void *state, tg__req *r, double deadline,
                        const char *what);
/* One poll of r without blocking: *done when complete. */
tg_status tg__comm_poll(tg_world *w, const tg__coll *c, void *state, tg__req *r,
                        const char *what, bool *done);
/* The timeout path on its own, for callers that poll several requests. */
tg_status tg__comm_expire(tg_world *w, const tg__coll *c, void *state, const char *what);

#endif
