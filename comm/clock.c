/*
 * The offset of each rank's monotonic clock from rank 0's, for merging the
 * ranks' traces onto one time line. Rank 0 exchanges a few ping-pongs with
 * each peer in turn and keeps the round with the shortest round trip (the
 * least queueing): offset = t_peer - (t_send + t_receive) / 2, accurate to
 * half that round trip. Every message runs under the world's timeout.
 */
#include "comm_internal.h"

#include <math.h>

#define TG__CLOCK_ROUNDS 8
#define TG__CLOCK_TAG 7301

static tg_status wait_req(tg_world *w, MPI_Request rq, double deadline)
{
    tg__req r = {.mpi = rq, .active = true};
    return tg__comm_wait(w, &tg__coll_mpi, w->host_state, &r, deadline, "clock offset");
}

static tg_status send_d(tg_world *w, double v, int to, double deadline)
{
    MPI_Request rq;
    tg_status s = tg__mpi_check(
        w, MPI_Isend(&v, 1, MPI_DOUBLE, to, TG__CLOCK_TAG, w->comm, &rq), "MPI_Isend",
        "clock offset");
    return s ? s : wait_req(w, rq, deadline);
}

static tg_status recv_d(tg_world *w, double *v, int from, double deadline)
{
    MPI_Request rq;
    tg_status s = tg__mpi_check(
        w, MPI_Irecv(v, 1, MPI_DOUBLE, from, TG__CLOCK_TAG, w->comm, &rq), "MPI_Irecv",
        "clock offset");
    return s ? s : wait_req(w, rq, deadline);
}

/* Rank 0's side of the exchange with peer; *offset gets the peer's. */
static tg_status measure(tg_world *w, int peer, double deadline, double *offset, double *rtt)
{
    *rtt = INFINITY;
    for (int k = 0; k < TG__CLOCK_ROUNDS; k++) {
        double t0 = tg_trace_now_us(), remote = 0;
        tg_status s = send_d(w, t0, peer, deadline);
        if (!s)
            s = recv_d(w, &remote, peer, deadline);
        if (s)
            return s;
        double t1 = tg_trace_now_us();
        if (t1 - t0 < *rtt) {
            *rtt = t1 - t0;
            *offset = remote - 0.5 * (t0 + t1);
        }
    }
    return TG_OK;
}

/* A peer's side: answer each ping with its own clock, then learn the result. */
static tg_status answer(tg_world *w, double deadline, double *offset)
{
    for (int k = 0; k < TG__CLOCK_ROUNDS; k++) {
        double ping;
        tg_status s = recv_d(w, &ping, 0, deadline);
        if (!s)
            s = send_d(w, tg_trace_now_us(), 0, deadline);
        if (s)
            return s;
    }
    return recv_d(w, offset, 0, deadline);
}

tg_status tg_world_clock_offset(tg_world *w, double *offset_us, double *error_us)
{
    *offset_us = 0;
    if (error_us)
        *error_us = 0;
    if (w->size == 1)
        return TG_OK;
    if (w->broken)
        return tg__comm_refuse(w, "clock offset");
    double deadline = tg__now_s() + w->timeout_s;
    if (w->rank != 0) {
        tg_status s = answer(w, deadline, offset_us);
        if (!s && error_us)
            s = recv_d(w, error_us, 0, deadline);
        return s;
    }
    for (int peer = 1; peer < w->size; peer++) {
        double off = 0, rtt;
        tg_status s = measure(w, peer, deadline, &off, &rtt);
        if (!s)
            s = send_d(w, off, peer, deadline);
        if (!s)
            s = send_d(w, 0.5 * rtt, peer, deadline);
        if (s)
            return s;
        if (error_us && 0.5 * rtt > *error_us)
            *error_us = 0.5 * rtt;
    }
    return TG_OK;
}
