/*
 * tests/bench/bench_util.h: the helpers the benchmarks share: a monotonic
 * clock in seconds, qsort's order of doubles (for medians), and operands of
 * a fixed, spread pattern.
 */
#ifndef TG_TESTS_BENCH_UTIL_H
#define TG_TESTS_BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* For qsort: ascending doubles. */
static inline int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* n floats in [-0.5, 0.5), the same for every run (malloc'd; NULL when out
 * of memory). */
static inline float *rnd(int64_t n) {
    float *p = malloc((size_t)n * sizeof *p);
    for (int64_t i = 0; p && i < n; i++)
        p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    return p;
}

#endif
