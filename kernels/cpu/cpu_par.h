/*
 * kernels/cpu/cpu_par.h: when a CPU loop runs as an OpenMP region, shared by
 * the CPU kernels (cpu.h) and the optimizer's host loops (runtime/train/optim.c).
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

#endif
