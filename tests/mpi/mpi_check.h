/* A tiny check harness for the MPI tests: every rank runs the same checks;
 * a failed check prints the rank and the place, and the program's exit code
 * is non-zero when any rank failed any check. (cmocka's runner is per
 * process and its output from several ranks would interleave.) */
#ifndef TG_MPI_CHECK_H
#define TG_MPI_CHECK_H

#include "tapegrad/comm.h"

#include <stdio.h>
#include <stdlib.h>

static int tg_check_failures;
static int tg_check_rank;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "rank %d: CHECK FAILED %s:%d: %s: ", tg_check_rank, __FILE__,  \
                    __LINE__, #cond);                                                      \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
            tg_check_failures++;                                                           \
        }                                                                                  \
    } while (0)

/* CHECK a status; print the world's message on failure. */
#define CHECK_OK(w, expr)                                                                  \
    do {                                                                                   \
        tg_status s_ = (expr);                                                             \
        CHECK(s_ == TG_OK, "%s: %s", tg_status_str(s_), tg_world_error(w));                \
    } while (0)

/* Sum the failures over ranks; rank 0 reports; returns the exit code. */
static inline int tg_check_finish(tg_world *w, const char *name)
{
    int64_t f = tg_check_failures;
    if (tg_allreduce_sum(w, &f, 1, TG_I64, "test failures") != TG_OK) {
        fprintf(stderr, "%s\n", tg_world_error(w));
        return 2;
    }
    if (tg_world_rank(w) == 0)
        printf("%s: %d ranks, %lld failed checks\n", name, tg_world_size(w), (long long)f);
    return f ? 1 : 0;
}

#endif
