/* The world: MPI initialisation, rank/size/node discovery, error messages,
 * and the deadline loop that every collective waits in. */
#include "comm_internal.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TG__DEFAULT_TIMEOUT_S 300.0
#define TG__DIAG_TAG 7001
/* How long a waiter polls without sleeping (see tg__comm_wait). */
#define TG__SPIN_S 0.01

double tg__now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void vset(tg_world *w, const char *fmt, va_list ap)
{
    int n = snprintf(w->err, sizeof w->err, "rank %d: ", w->rank);
    if (n < 0 || (size_t)n >= sizeof w->err)
        n = 0;
    vsnprintf(w->err + n, sizeof w->err - (size_t)n, fmt, ap);
}

tg_status tg__comm_fail(tg_world *w, tg_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(w, fmt, ap);
    va_end(ap);
    return s;
}

tg_status tg__comm_break(tg_world *w, tg_status s)
{
    w->broken = true;
    w->broken_status = s;
    return s;
}

tg_status tg__comm_refuse(tg_world *w, const char *what)
{
    /* Keep the first message: it names the real cause. */
    (void)what;
    return w->broken_status;
}

const char *tg__step_str(const tg_world *w, char *buf, size_t len)
{
    if (w->step >= 0)
        snprintf(buf, len, " (step %lld)", (long long)w->step);
    else if (len)
        buf[0] = '\0';
    return buf;
}

tg_status tg__mpi_check(tg_world *w, int rc, const char *call, const char *what)
{
    if (rc == MPI_SUCCESS)
        return TG_OK;
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "MPI error code %d", rc);
    char st[48];
    tg__comm_fail(w, TG_ERR_COMM, "%s%s%s%s failed: %s", call, what ? " for " : "",
                  what ? what : "", tg__step_str(w, st, sizeof st), msg);
    return tg__comm_break(w, TG_ERR_COMM);
}

bool tg__mpi_type(tg_dtype dt, bool sum, MPI_Datatype *out)
{
    switch (dt) {
    case TG_F32: *out = MPI_FLOAT; return true;
    case TG_F64: *out = MPI_DOUBLE; return true;
    case TG_I32: *out = MPI_INT32_T; return true;
    case TG_I64: *out = MPI_INT64_T; return true;
    case TG_U8: *out = MPI_BYTE; return !sum;
    /* MPI has no bf16: moved as 16-bit words, summed by the caller's own
     * operation (comm/mpi_coll.c). */
    case TG_BF16: *out = MPI_UINT16_T; return !sum;
    default: return false;
    }
}

/* ---- the timeout path ---- */

/* What each rank tells its peers after a timeout: where it is. */
typedef struct diag_note {
    int64_t seq;
    int64_t step;
    int64_t rank;
    int64_t magic;
} diag_note;

#define TG__DIAG_MAGIC 0x7467636f6d6dLL

/*
 * Learn which peers did not reach the collective that timed out. Every rank
 * that times out sends a note to every peer and waits a grace period for
 * theirs; notes are small, so MPI delivers them eagerly and a peer that
 * times out a little later is still heard. A peer that sends nothing within
 * the grace period is dead, stuck in computation, or blocked elsewhere: we
 * name it. A peer that answers from another collective is named with its
 * position. Errors here are ignored: this is diagnosis on a failing job.
 */
static void diagnose(tg_world *w, char *out, size_t len)
{
    out[0] = '\0';
    if (w->size <= 1)
        return;
    int n = w->size;
    /* notes[n] is our own note. */
    diag_note *notes = calloc((size_t)n + 1, sizeof *notes);
    MPI_Request *rq = calloc((size_t)(2 * n), sizeof *rq);
    if (!notes || !rq) {
        free(notes);
        free(rq);
        snprintf(out, len, "; could not identify the missing rank (out of memory)");
        return;
    }
    diag_note *mine = &notes[n];
    *mine = (diag_note){(int64_t)w->seq, w->step, w->rank, TG__DIAG_MAGIC};
    for (int p = 0; p < 2 * n; p++)
        rq[p] = MPI_REQUEST_NULL;
    for (int p = 0; p < n; p++) {
        if (p == w->rank)
            continue;
        MPI_Irecv(&notes[p], (int)sizeof(diag_note), MPI_BYTE, p, TG__DIAG_TAG, w->side, &rq[p]);
        MPI_Isend(mine, (int)sizeof(diag_note), MPI_BYTE, p, TG__DIAG_TAG, w->side, &rq[n + p]);
    }
    double grace = w->timeout_s / 4;
    grace = grace < 0.2 ? 0.2 : grace > 5.0 ? 5.0 : grace;
    double deadline = tg__now_s() + grace;
    bool *got = calloc((size_t)n, sizeof *got);
    int ngot = 0;
    while (got && ngot < n - 1 && tg__now_s() < deadline) {
        for (int p = 0; p < n; p++) {
            int flag = 0;
            if (p == w->rank || got[p])
                continue;
            if (MPI_Test(&rq[p], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
                got[p] = true;
                ngot++;
            }
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    size_t used = 0;
    int missing = 0;
    for (int p = 0; got && p < n; p++) {
        if (p == w->rank || got[p])
            continue;
        int k = snprintf(out + used, len - used, "%s%d", missing ? ", " : "; no answer from rank ", p);
        if (k > 0 && (size_t)k < len - used)
            used += (size_t)k;
        missing++;
    }
    if (missing && used < len)
        used += (size_t)snprintf(out + used, len - used, " (lost, stuck or elsewhere)");
    for (int p = 0; got && p < n && used < len; p++) {
        if (!got[p] || notes[p].magic != TG__DIAG_MAGIC || notes[p].seq == mine->seq)
            continue;
        int k = snprintf(out + used, len - used, "; rank %d is at collective #%lld (step %lld), "
                         "this rank at #%lld", p, (long long)notes[p].seq,
                         (long long)notes[p].step, (long long)mine->seq);
        if (k > 0)
            used += (size_t)k < len - used ? (size_t)k : len - used;
    }
    if (!missing && used == 0)
        snprintf(out, len, "; every peer answered (a slow rank or a lost message)");
    /* Unmatched receives would hold our buffers: cancel them. Sends to a
     * dead peer cannot be completed; let MPI forget them. */
    for (int p = 0; p < n; p++) {
        if (p == w->rank)
            continue;
        if (got && !got[p] && rq[p] != MPI_REQUEST_NULL) {
            MPI_Cancel(&rq[p]);
            MPI_Request_free(&rq[p]);
        }
        if (rq[n + p] != MPI_REQUEST_NULL)
            MPI_Request_free(&rq[n + p]);
    }
    /* notes must outlive any receive or send MPI might still complete
     * after we gave up on it: keep it (a one-off leak on a failing job). */
    if (!got)
        snprintf(out, len, "; could not identify the missing rank (out of memory)");
    free(got);
    free(rq);
}

tg_status tg__comm_expire(tg_world *w, const tg__coll *c, void *state, const char *what)
{
    char who[512], st[48];
    diagnose(w, who, sizeof who);
    if (c->abort)
        c->abort(w, state);
    tg__comm_fail(w, TG_ERR_TIMEOUT, "%s%s timed out after %.1f s%s", what ? what : "collective",
                  tg__step_str(w, st, sizeof st), w->timeout_s, who);
    return tg__comm_break(w, TG_ERR_TIMEOUT);
}

tg_status tg__comm_poll(tg_world *w, const tg__coll *c, void *state, tg__req *r,
                        const char *what, bool *done)
{
    *done = !r->active;
    if (!r->active)
        return TG_OK;
    tg_status s = c->test(w, state, r, what, done);
    if (s)
        return s;
    if (*done)
        r->active = false;
    return TG_OK;
}

tg_status tg__comm_wait(tg_world *w, const tg__coll *c, void *state, tg__req *r, double deadline,
                        const char *what)
{
    /* Poll without pause for the first TG__SPIN_S seconds: a collective
     * needs the progress calls of both sides between its rounds, and a
     * sleeping poller adds the sleep (at least the 50 us timer slack of
     * nanosleep) to every round. When this node's ranks outnumber its
     * cores, sched_yield() between polls hands the core to a peer that
     * shares it; otherwise it would only hand it to unrelated processes,
     * which may keep it for a whole time slice (measured: a 4 MiB bucket
     * 0.8 ms spinning, 3 to 5 ms yielding on a loaded 2-core machine).
     * After the spin, poll with a pause growing to 0.5 ms, so that a long
     * wait (a slow or lost peer) does not hold a core until the deadline. */
    double spin_until = tg__now_s() + TG__SPIN_S;
    long pause_ns = 50000;
    for (;;) {
        bool done;
        tg_status s = tg__comm_poll(w, c, state, r, what, &done);
        if (s || done)
            return s;
        double now = tg__now_s();
        if (now > deadline)
            return tg__comm_expire(w, c, state, what);
        if (now < spin_until) {
            if (w->oversubscribed)
                sched_yield();
            continue;
        }
        struct timespec ts = {0, pause_ns};
        nanosleep(&ts, NULL);
        if (pause_ns < 500000)
            pause_ns *= 2;
    }
}

/* ---- init and teardown ---- */

static void init_err(char *err, size_t errlen, const char *fmt, const char *call, int rc)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (rc != MPI_SUCCESS && MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "MPI error code %d", rc);
    if (err && errlen)
        snprintf(err, errlen, fmt, call, msg);
}

/* MPI_Op function: inout[i] = bf16(f32(in[i]) + f32(inout[i])). */
static void bf16_sum_fn(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    const uint16_t *a = in;
    uint16_t *b = inout;
    (void)dt;
    for (int i = 0; i < *len; i++)
        b[i] = tg_bf16_from_f32(tg_bf16_to_f32(a[i]) + tg_bf16_to_f32(b[i]));
}

static tg_status world_comms(tg_world *w, char *err, size_t errlen)
{
    const char *fmt = "world init: %s failed: %s";
    int rc = MPI_Op_create(bf16_sum_fn, 1, &w->bf16_sum);
    if (rc) {
        w->bf16_sum = MPI_OP_NULL;
        return init_err(err, errlen, fmt, "MPI_Op_create", rc), TG_ERR_COMM;
    }
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &w->comm);
    if (rc) {
        w->comm = MPI_COMM_NULL;
        return init_err(err, errlen, fmt, "MPI_Comm_dup", rc), TG_ERR_COMM;
    }
    if ((rc = MPI_Comm_set_errhandler(w->comm, MPI_ERRORS_RETURN)))
        return init_err(err, errlen, fmt, "MPI_Comm_set_errhandler", rc), TG_ERR_COMM;
    if ((rc = MPI_Comm_rank(w->comm, &w->rank)) || (rc = MPI_Comm_size(w->comm, &w->size)))
        return init_err(err, errlen, fmt, "MPI_Comm_rank/size", rc), TG_ERR_COMM;
    if ((rc = MPI_Comm_dup(w->comm, &w->side))) {
        w->side = MPI_COMM_NULL;
        return init_err(err, errlen, fmt, "MPI_Comm_dup (side)", rc), TG_ERR_COMM;
    }
    rc = MPI_Comm_split_type(w->comm, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &w->local);
    if (rc) {
        w->local = MPI_COMM_NULL;
        return init_err(err, errlen, fmt, "MPI_Comm_split_type", rc), TG_ERR_COMM;
    }
    if ((rc = MPI_Comm_set_errhandler(w->local, MPI_ERRORS_RETURN)) ||
        (rc = MPI_Comm_rank(w->local, &w->local_rank)) ||
        (rc = MPI_Comm_size(w->local, &w->local_size)))
        return init_err(err, errlen, fmt, "MPI_Comm_rank/size (node)", rc), TG_ERR_COMM;
    return TG_OK;
}

/*
 * Open MPI's non-blocking all-reduce (coll/libnbc) picks, for fewer than 4
 * ranks or any in-place call, a binomial tree: reduce to rank 0, then
 * broadcast. Every DDP bucket is in place, and on 2 ranks that algorithm
 * takes twice as long as the blocking MPI_Allreduce of the same bytes
 * (docs/COMM.md, "Performance"). Its reduce-scatter + all-gather algorithm
 * (Rabenseifner's) matches the blocking call. The choice is a control
 * variable that the library reads on every call, so it can be set through
 * the tool interface after initialisation: only when it still holds its
 * default ("ignore", 0), so a user's OMPI_MCA_coll_libnbc_iallreduce_algorithm
 * wins, and only when every rank can set it, since ranks must run the same
 * algorithm. With another MPI the variable does not exist and nothing
 * changes. Every step is optional: a failure leaves MPI's default.
 */
typedef struct nbc_tuner {
    MPI_T_cvar_handle h;
} nbc_tuner;

#define TG__NBC_REDSCAT_ALLGATHER 3

static bool nbc_tuner_open(nbc_tuner *t)
{
    int provided, idx, count, value = -1;
    if (MPI_T_init_thread(MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return false;
    if (MPI_T_cvar_get_index("coll_libnbc_iallreduce_algorithm", &idx) == MPI_SUCCESS &&
        MPI_T_cvar_handle_alloc(idx, NULL, &t->h, &count) == MPI_SUCCESS) {
        if (count == 1 && MPI_T_cvar_read(t->h, &value) == MPI_SUCCESS && value == 0)
            return true;
        MPI_T_cvar_handle_free(&t->h);
    }
    MPI_T_finalize();
    return false;
}

static bool nbc_tuner_write(nbc_tuner *t, int value)
{
    return MPI_T_cvar_write(t->h, &value) == MPI_SUCCESS;
}

static void nbc_tuner_close(nbc_tuner *t)
{
    MPI_T_cvar_handle_free(&t->h);
    MPI_T_finalize();
}

/* Set the algorithm on every rank or on none (t is open iff can). */
static tg_status nbc_tune(tg_world *w, nbc_tuner *t, bool can, int64_t ranks_that_can)
{
    tg_status s = TG_OK;
    if (ranks_that_can == w->size) {
        int64_t ok = can && nbc_tuner_write(t, TG__NBC_REDSCAT_ALLGATHER);
        s = tg_allreduce_sum(w, &ok, 1, TG_I64, "libnbc tuning");
        w->nbc_tuned = !s && ok == w->size;
        if (!w->nbc_tuned && can)
            nbc_tuner_write(t, 0); /* back to the default, like the others */
    }
    if (can)
        nbc_tuner_close(t);
    return s;
}

tg_status tg_world_init(int *argc, char ***argv, const tg_world_config *cfg, tg_world **out,
                        char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out) {
        if (err && errlen)
            snprintf(err, errlen, "world init: NULL output pointer");
        return TG_ERR_INVALID;
    }
    *out = NULL;
    tg_world *w = calloc(1, sizeof *w);
    if (!w) {
        if (err && errlen)
            snprintf(err, errlen, "world init: out of memory");
        return TG_ERR_NOMEM;
    }
    w->comm = w->side = w->local = MPI_COMM_NULL;
    w->bf16_sum = MPI_OP_NULL;
    w->step = -1;
    w->timeout_s = cfg && cfg->timeout_s > 0 ? cfg->timeout_s : TG__DEFAULT_TIMEOUT_S;
    w->host = &tg__coll_mpi;
    int inited = 0, provided = 0, rc = MPI_Initialized(&inited);
    if (rc == MPI_SUCCESS && !inited) {
        rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        w->owns_mpi = rc == MPI_SUCCESS;
    } else if (rc == MPI_SUCCESS) {
        rc = MPI_Query_thread(&provided);
    }
    tg_status s = TG_OK;
    if (rc) {
        init_err(err, errlen, "world init: %s failed: %s", "MPI_Init_thread", rc);
        s = TG_ERR_COMM;
    } else if (provided < MPI_THREAD_FUNNELED) {
        if (err && errlen)
            snprintf(err, errlen, "world init: MPI provides thread level %d, below "
                     "MPI_THREAD_FUNNELED", provided);
        s = TG_ERR_COMM;
    }
    if (!s)
        s = world_comms(w, err, errlen);
    if (!s) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        w->oversubscribed = cpus > 0 && w->local_size > cpus;
    }
    if (!s) {
        /* Count nodes (one leader, local rank 0, per node) and the ranks
         * that can choose libnbc's all-reduce algorithm, in one exchange. */
        nbc_tuner t;
        bool can = w->size > 1 && nbc_tuner_open(&t);
        int64_t v[2] = {w->local_rank == 0, can};
        s = tg_allreduce_sum(w, v, 2, TG_I64, "node count");
        w->nodes = (int)v[0];
        if (!s)
            s = nbc_tune(w, &t, can, v[1]);
        else if (can)
            nbc_tuner_close(&t);
        if (s && err && errlen)
            snprintf(err, errlen, "%s", w->err);
    }
    if (s) {
        tg_world_free(w);
        return s;
    }
    *out = w;
    return TG_OK;
}

static void free_comm(MPI_Comm *c)
{
    if (*c != MPI_COMM_NULL)
        MPI_Comm_free(c);
    *c = MPI_COMM_NULL;
}

void tg_world_free(tg_world *w)
{
    if (!w)
        return;
    if (w->dev && w->dev->release)
        w->dev->release(w->dev_state);
    /* A broken world may hold collectives that a lost peer will never
     * complete; freeing communicators or finalising could wait for it. */
    if (!w->broken) {
        free_comm(&w->local);
        free_comm(&w->side);
        free_comm(&w->comm);
        if (w->bf16_sum != MPI_OP_NULL)
            MPI_Op_free(&w->bf16_sum);
        if (w->owns_mpi)
            MPI_Finalize();
    }
    free(w);
}

void tg_world_abort(tg_world *w, int code)
{
    MPI_Abort(w && w->comm != MPI_COMM_NULL ? w->comm : MPI_COMM_WORLD, code);
}

int tg_world_rank(const tg_world *w) { return w->rank; }
int tg_world_size(const tg_world *w) { return w->size; }
int tg_world_local_rank(const tg_world *w) { return w->local_rank; }
int tg_world_local_size(const tg_world *w) { return w->local_size; }
int tg_world_node_count(const tg_world *w) { return w->nodes; }
double tg_world_timeout(const tg_world *w) { return w->timeout_s; }
void tg_world_set_step(tg_world *w, int64_t step) { w->step = step; }
int64_t tg_world_step(const tg_world *w) { return w->step; }
const char *tg_world_error(const tg_world *w) { return w->err; }
bool tg_world_broken(const tg_world *w) { return w->broken; }

void tg_world_set_timeout(tg_world *w, double seconds)
{
    w->timeout_s = seconds > 0 ? seconds : TG__DEFAULT_TIMEOUT_S;
}
