/*
 * A rank is lost mid-run. With argument "kill", rank 1 SIGKILLs itself at
 * step 3; with "stop", it SIGSTOPs itself (alive but silent, which the
 * launcher cannot see). The other ranks, training with DDP under a 2 s
 * timeout, must exit non-zero within it, naming rank 1 (and, when they get
 * to report, the step). tests/mpi/expect_fail.sh checks the outcome.
 */
#include "tapegrad/comm.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    tg_world *w;
    char err[512];
    tg_world_config wc = {.timeout_s = 2.0};
    if (tg_world_init(&argc, &argv, &wc, &w, err, sizeof err) != TG_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int stop = argc > 1 && strcmp(argv[1], "stop") == 0;
    tg_ctx *ctx;
    if (tg_ctx_new(NULL, &ctx) != TG_OK)
        return 2;
    int64_t shape[2] = {4, 4};
    tg_tensor *p = tg_param(ctx, TG_F32, 2, shape, "w");
    tg_ddp *ddp;
    if (tg_ddp_new(ctx, w, 1, &p, 0, NULL, NULL, &ddp) != TG_OK) {
        fprintf(stderr, "%s\n", tg_world_error(w));
        return 2;
    }
    for (int64_t step = 0; step < 10; step++) {
        tg_world_set_step(w, step);
        if (tg_world_rank(w) == 1 && step == 3) {
            fprintf(stderr, "rank 1: losing myself at step 3 (%s)\n", stop ? "SIGSTOP" : "SIGKILL");
            raise(stop ? SIGSTOP : SIGKILL);
        }
        tg_tensor *x = tg_full(ctx, TG_F32, 2, shape, 1.0);
        tg_tensor *l = tg_sum(ctx, tg_matmul(ctx, x, p), 0, NULL, false);
        if (!l || tg_backward(ctx, l, NULL, 0) != TG_OK)
            return 2;
        if (tg_ddp_wait(ddp) != TG_OK) {
            fprintf(stderr, "%s\n", tg_world_error(w));
            tg_world_free(w);
            return 3;
        }
        tg_zero_grad(ctx, p);
        tg_step_reset(ctx);
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "rank %d: finished, which a lost peer should have prevented\n",
            tg_world_rank(w));
    tg_ddp_free(ddp);
    tg_ctx_free(ctx);
    tg_world_free(w);
    return 0;
}
