/*
 * kernels/cpu/cpu_par.h: when a CPU loop runs as an OpenMP region, and how
 * work cut into parts is run, shared by the CPU kernels (cpu.h) and the
 * optimizer's host loops (runtime/train/optim.c).
 */
#ifndef TG_KERNELS_CPU_PAR_H
#define TG_KERNELS_CPU_PAR_H

#include <omp.h>
#include <stdbool.h>

/*
 * Whether a loop runs as an OpenMP region: only when it is `big` enough and
 * more than one thread would run it. Loops branch on this (TG__CPU_FOR)
 * rather than use an if() clause, because libgomp allocates and frees a team
 * for every region that runs on one thread, if(false) regions included, and a
 * steady-state step must not touch the heap.
 */
static inline bool tg__cpu_par_if(bool big) {
    return big && omp_get_max_threads() > 1 && !omp_in_parallel();
}

/* Runs the loop given after `pragma` (an "omp parallel for ..." string) as a
 * region when `par` holds, on the calling thread otherwise. */
#define TG__CPU_FOR(par, pragma, ...)   \
    do {                                \
        if (par) {                      \
            _Pragma(pragma) __VA_ARGS__ \
        } else {                        \
            __VA_ARGS__                 \
        }                               \
    } while (0)

/*
 * Runs the statement given, which reads the part number `p` (an int64_t), for
 * parts 0 to nparts - 1: on min(nparts, OpenMP's count) threads, thread t
 * taking parts t, t + T, ..., or all in turn on the calling thread when there
 * is one part or OpenMP's count is 1 (the count the spin watch sets while
 * the cores are shared, omp_throttle.c; and no one-thread region, which
 * would allocate a team). A kernel that cuts its work into a fixed number of
 * parts (the context's thread count, tg__cpu_parts), each with its own
 * output and scratch, gets the same bits however many threads run them.
 */
#define TG__CPU_PARTS(nparts, ...)                                                          \
    do {                                                                                    \
        const int64_t tg_np_ = (nparts);                                                    \
        const int tg_run_ = omp_get_max_threads();                                          \
        if (tg_np_ < 2 || tg_run_ < 2) {                                                    \
            for (int64_t p = 0; p < tg_np_; p++) {                                          \
                __VA_ARGS__;                                                                \
            }                                                                               \
        } else {                                                                            \
            const int tg_nth_ = tg_np_ < tg_run_ ? (int)tg_np_ : tg_run_;                   \
            _Pragma("omp parallel num_threads(tg_nth_)") {                                  \
                const int64_t tg_t_ = omp_get_thread_num(), tg_tt_ = omp_get_num_threads(); \
                for (int64_t p = tg_t_; p < tg_np_; p += tg_tt_) {                          \
                    __VA_ARGS__;                                                            \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    } while (0)

#endif
