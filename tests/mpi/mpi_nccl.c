/*
 * tests/mpi/mpi_nccl.c: the NCCL path of the world (comm/nccl.c) on real
 * device memory, run under mpiexec with one rank per GPU (ctest: 1 rank).
 *
 * On a node where CUDA cannot run (tg_cuda_available fails: no driver, no
 * GPU, or cuBLAS or NCCL not loadable) it checks that tg_world_nccl_init
 * fails with a status and a message instead of crashing, prints why, and
 * exits 77 (skipped). With a GPU it makes the communicator, then sums f32,
 * f64, i32 and i64 buffers in device memory (allocated through the CUDA
 * backend) across the ranks and checks every element, checks that a u8 sum
 * is refused with a message naming the dtype, and that the world stays
 * usable for host collectives afterwards.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/kernels.h"

#include "mpi_check.h"

#define N 1000

static double value_at(int rank, int64_t i) { return (double)(rank + 1) * (double)(i % 97); }

static void test_sum(tg_world *w, const tg_backend *be, void *st, tg_dtype dt)
{
    const size_t es = tg_dtype_size(dt), nbytes = N * es;
    void *host = malloc(nbytes), *dev = be->alloc(st, nbytes);
    CHECK(host && dev, "allocating %zu bytes", nbytes);
    if (!host || !dev)
        goto out;
    const int r = tg_world_rank(w), size = tg_world_size(w);
    for (int64_t i = 0; i < N; i++) {
        double v = value_at(r, i);
        switch (dt) {
        case TG_F32: ((float *)host)[i] = (float)v; break;
        case TG_F64: ((double *)host)[i] = v; break;
        case TG_I32: ((int32_t *)host)[i] = (int32_t)v; break;
        default: ((int64_t *)host)[i] = (int64_t)v; break;
        }
    }
    CHECK_OK(w, be->copy_h2d(st, dev, host, nbytes));
    CHECK_OK(w, tg_allreduce_sum_device(w, dev, N, dt, "test buffer"));
    memset(host, 0, nbytes);
    CHECK_OK(w, be->copy_d2h(st, host, dev, nbytes));
    /* sum over ranks of (r + 1) * (i % 97): exact in every dtype here. */
    int bad = 0;
    for (int64_t i = 0; i < N && bad < 5; i++) {
        double want = (double)size * (size + 1) / 2 * (double)(i % 97), got;
        switch (dt) {
        case TG_F32: got = ((float *)host)[i]; break;
        case TG_F64: got = ((double *)host)[i]; break;
        case TG_I32: got = ((int32_t *)host)[i]; break;
        default: got = (double)((int64_t *)host)[i]; break;
        }
        if (got != want) {
            CHECK(got == want, "%s element %lld: %g, expected %g", tg_dtype_name(dt),
                  (long long)i, got, want);
            bad++;
        }
    }
out:
    if (dev)
        be->free(st, dev);
    free(host);
}

int main(int argc, char **argv)
{
    tg_world *w;
    char err[1024];
    if (tg_world_init(&argc, &argv, NULL, &w, err, sizeof err) != TG_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    tg_check_rank = tg_world_rank(w);
    if (tg_cuda_available(err, sizeof err) != TG_OK) {
        /* No CUDA here: the NCCL init must fail cleanly, with a message. */
        tg_status s = tg_world_nccl_init(w);
        const char *msg = tg_world_error(w);
        int ok = s != TG_OK && strstr(msg, "NCCL") != NULL;
        printf("mpi_nccl: CUDA cannot run here (%s); tg_world_nccl_init: %s: %s\n", err,
               tg_status_str(s), msg);
        if (!ok) {
            fprintf(stderr, "FAIL: expected a failed NCCL init with a message naming NCCL\n");
            return 1;
        }
        printf("mpi_nccl: skipped\n");
        /* The world may be broken now; leave without collectives. */
        return 77;
    }
    CHECK_OK(w, tg_cuda_set_device(tg_world_local_rank(w), err, sizeof err));
    CHECK_OK(w, tg_world_nccl_init(w));
    const tg_backend *be = tg_backend_cuda();
    void *st = NULL;
    tg_status s = be->init(&st, 0, err, sizeof err);
    CHECK(s == TG_OK, "cuda backend init: %s", err);
    if (s == TG_OK) {
        const tg_dtype dts[] = {TG_F32, TG_F64, TG_I32, TG_I64};
        for (int i = 0; i < 4; i++)
            test_sum(w, be, st, dts[i]);
        void *dev = be->alloc(st, 64);
        tg_status u = tg_allreduce_sum_device(w, dev, 64, TG_U8, "bytes");
        CHECK(u == TG_ERR_DTYPE && strstr(tg_world_error(w), "dtype u8 cannot be summed"),
              "u8 sum: %s: %s", tg_status_str(u), tg_world_error(w));
        be->free(st, dev);
        be->release(st);
    }
    int64_t one = 1;
    CHECK_OK(w, tg_allreduce_sum(w, &one, 1, TG_I64, "after NCCL"));
    CHECK(one == tg_world_size(w), "host sum after NCCL: %lld", (long long)one);
    int rc = tg_check_finish(w, "mpi_nccl");
    tg_world_free(w);
    return rc;
}
