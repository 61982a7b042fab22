/*
 * tests/bench/bench_allreduce.c: the DDP hook's gradient all-reduce against a
 * bare MPI_Allreduce of the same bytes.
 *
 *     mpiexec -n 2 build/tests/bench/bench_allreduce [--reps N] [--mib SIZE]
 *                  [--bucket-mb X] [--first-bucket-mb X]
 *
 * (--help lists the options.)
 * For each total gradient size, the "model" is 8 f32 parameters of equal size
 * and the loss is the sum of all their elements, so backward is a few cheap
 * kernels and every gradient is final almost at once. Per repetition:
 *   hook  = backward + tg_ddp_wait with synchronisation on, minus
 *   local = backward alone with the DDP in no_sync mode (no communication),
 * against
 *   bare  = one MPI_Allreduce (MPI_IN_PLACE, MPI_FLOAT, MPI_SUM) of all bytes.
 * The three alternate within each repetition, after a barrier, so that a
 * change in the machine's speed affects them alike. Medians are printed with
 * the effective throughput (bytes / time) and the ratio hook/bare throughput.
 */
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tapegrad/comm.h"
#include "tapegrad/runtime.h"
#include "bench_util.h"

#define NPARAM 8

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* backward of sum over all parameters of sum(p), then (with sync) the wait. */
static int step(tg_ctx *ctx, tg_ddp *d, tg_tensor **ps, bool sync)
{
    tg_ddp_set_sync(d, sync);
    tg_tensor *loss = NULL;
    for (int i = 0; i < NPARAM; i++) {
        tg_tensor *s = tg_sum(ctx, ps[i], 0, NULL, false);
        loss = loss ? tg_add(ctx, loss, s) : s;
    }
    if (!loss || tg_backward(ctx, loss, NULL, 0) || tg_ddp_wait(d))
        return 1;
    for (int i = 0; i < NPARAM; i++)
        tg_zero_grad(ctx, ps[i]);
    tg_step_reset(ctx);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mpiexec -n N bench_allreduce [options]\n"
               "\n"
               "Times the DDP hook's gradient all-reduce (backward + tg_ddp_wait, minus\n"
               "backward alone) against one bare MPI_Allreduce of the same bytes, for\n"
               "models of 8 equal f32 parameters totalling 1, 4, 25 and 100 MiB.\n"
               "\n"
               "options:\n"
               "  --reps N              repetitions per size, medians printed (default 15)\n"
               "  --mib X               only a model of X MiB (for profiling)\n"
               "  --bucket-mb X         the DDP's bucket capacity (default: the model's)\n"
               "  --first-bucket-mb X   the first bucket's capacity (default: the model's)\n"
               "  -h, --help            print this help and exit\n");
}

/* The value of option argv[*i], or NULL (with a message) when it is missing
 * or not a positive number. */
static bool positive(int argc, char **argv, int *i, double *out)
{
    char *end;
    if (*i + 1 >= argc || (*out = strtod(argv[*i + 1], &end)) <= 0 || *end) {
        fprintf(stderr, "bench_allreduce: %s needs a positive number\n", argv[*i]);
        return false;
    }
    *i += 1;
    return true;
}

int main(int argc, char **argv)
{
    int reps = 15;
    double only = 0; /* --mib X: that size alone (for profiling) */
    double bucket_mb = 0, first_mb = 0, v;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--reps") && positive(argc, argv, &i, &v)) {
            reps = (int)v;
        } else if (!strcmp(argv[i], "--mib") && positive(argc, argv, &i, &v)) {
            only = v;
        } else if (!strcmp(argv[i], "--bucket-mb") && positive(argc, argv, &i, &v)) {
            bucket_mb = v;
        } else if (!strcmp(argv[i], "--first-bucket-mb") && positive(argc, argv, &i, &v)) {
            first_mb = v;
        } else {
            if (argv[i][0] == '-' && strcmp(argv[i], "--reps") && strcmp(argv[i], "--mib") &&
                strcmp(argv[i], "--bucket-mb") && strcmp(argv[i], "--first-bucket-mb"))
                fprintf(stderr, "bench_allreduce: unknown option '%s'\n", argv[i]);
            else if (argv[i][0] != '-')
                fprintf(stderr, "bench_allreduce: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    tg_ddp_config dc = {.bucket_bytes = (size_t)(bucket_mb * 1024 * 1024),
                        .first_bucket_bytes = (size_t)(first_mb * 1024 * 1024)};
    char err[256];
    tg_world *w;
    if (tg_world_init(&argc, &argv, NULL, &w, err, sizeof err)) {
        fprintf(stderr, "bench_allreduce: %s\n", err);
        return 1;
    }
    int rank = tg_world_rank(w), size = tg_world_size(w);
    if (rank == 0)
        printf("bench_allreduce: tapegrad %s, %d ranks; median of %d reps\n"
               "%10s %12s %12s %12s %10s %10s %8s\n",
               TG_VERSION_STRING, size, reps, "MiB", "local ms", "hook ms", "bare ms",
               "hook GB/s", "bare GB/s", "ratio");
    static const double sizes[] = {1, 4, 25, 100};
    const double *mib = only > 0 ? &only : sizes;
    size_t nsizes = only > 0 ? 1 : sizeof sizes / sizeof sizes[0];
    for (size_t k = 0; k < nsizes; k++) {
        tg_ctx_config cc = {.threads = 1};
        tg_ctx *ctx;
        if (tg_ctx_new(&cc, &ctx))
            return 1;
        int64_t per = (int64_t)(mib[k] * 1024 * 1024 / 4 / NPARAM);
        tg_tensor *ps[NPARAM];
        char names[NPARAM][16];
        for (int i = 0; i < NPARAM; i++) {
            snprintf(names[i], sizeof names[i], "p%d", i);
            ps[i] = tg_param(ctx, TG_F32, 1, &per, names[i]);
        }
        tg_ddp *d;
        if (tg_ddp_new(ctx, w, NPARAM, ps, 0, NULL, &dc, &d)) {
            fprintf(stderr, "rank %d: %s\n", rank, tg_world_error(w));
            return 1;
        }
        size_t n = (size_t)per * NPARAM;
        float *buf = calloc(n, sizeof *buf);
        double *tl = calloc((size_t)reps, sizeof *tl), *th = calloc((size_t)reps, sizeof *th);
        double *tb = calloc((size_t)reps, sizeof *tb);
        for (int r = -2; r < reps; r++) { /* two warm-ups */
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = now_s();
            if (step(ctx, d, ps, false))
                return 1;
            double t1 = now_s();
            MPI_Barrier(MPI_COMM_WORLD);
            double t2 = now_s();
            if (step(ctx, d, ps, true)) {
                fprintf(stderr, "rank %d: %s\n", rank, tg_world_error(w));
                return 1;
            }
            double t3 = now_s();
            MPI_Barrier(MPI_COMM_WORLD);
            double t4 = now_s();
            MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            double t5 = now_s();
            if (r >= 0) {
                tl[r] = t1 - t0;
                th[r] = (t3 - t2) - (t1 - t0);
                tb[r] = t5 - t4;
            }
        }
        /* The slowest rank sets the pace: take each rep's maximum. */
        MPI_Allreduce(MPI_IN_PLACE, th, reps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, tb, reps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        double ml = median(tl, reps), mh = median(th, reps), mb = median(tb, reps);
        double bytes = (double)n * 4;
        if (rank == 0)
            printf("%10.0f %12.3f %12.3f %12.3f %10.2f %10.2f %8.3f\n", mib[k], 1e3 * ml,
                   1e3 * mh, 1e3 * mb, bytes / mh / 1e9, bytes / mb / 1e9, mb / mh);
        free(buf);
        free(tl);
        free(th);
        free(tb);
        tg_ddp_free(d);
        tg_ctx_free(ctx);
    }
    tg_world_free(w);
    return 0;
}
