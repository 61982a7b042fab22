/*
 * tests/heap_count.h: a heap-call counter for one executable (include it in
 * exactly one of its files). It defines malloc, calloc, realloc,
 * aligned_alloc, posix_memalign and memalign over glibc's __libc_* entry
 * points and counts every call made from any thread (OpenMP and OpenBLAS
 * workers included) between tg_heap_count_start() and tg_heap_count_stop().
 * With trace > 0 the call stacks of the first `trace` counted calls go to
 * stderr (glibc's backtrace; build with -rdynamic to name the executable's
 * functions). Used by test_heap_steady.c and bench/bench_train.c.
 *
 * With TG_HEAP_COUNT_APART defined before the include (it needs dladdr:
 * define _GNU_SOURCE first), tg_heap_count_apart(lib) sets calls that have a
 * frame of their call stack in a shared library whose path contains `lib`
 * apart: they count in tg_heap_apart_calls, not in the total. A test uses it
 * to hold its own code to zero while a library it calls is known to allocate.
 */
#ifndef TG_TESTS_HEAP_COUNT_H
#define TG_TESTS_HEAP_COUNT_H

#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_long tg_heap_calls;
static atomic_int tg_heap_counting;
static long tg_heap_trace;
static _Thread_local int tg_heap_in_trace;

#ifdef TG_HEAP_COUNT_APART
#include <dlfcn.h>
#include <string.h>

static const char *tg_heap_apart;
static atomic_long tg_heap_apart_calls;

/* Whether a frame of the calling stack lies in a library whose path
 * contains tg_heap_apart. */
static int tg_heap_from_apart(void) {
    void *frames[64];
    int n = backtrace(frames, 64);
    for (int i = 0; i < n; i++) {
        Dl_info di;
        if (dladdr(frames[i], &di) && di.dli_fname && strstr(di.dli_fname, tg_heap_apart))
            return 1;
    }
    return 0;
}

/* Sets the calls from the library whose path contains lib apart (NULL: none). */
static inline void tg_heap_count_apart(const char *lib) {
    void *prime[2];
    backtrace(prime, 2); /* loads libgcc's unwinder before counting */
    tg_heap_apart = lib;
}
#endif

static void tg_heap_count(void) {
    if (!atomic_load_explicit(&tg_heap_counting, memory_order_relaxed) || tg_heap_in_trace)
        return;
#ifdef TG_HEAP_COUNT_APART
    if (tg_heap_apart) {
        tg_heap_in_trace = 1;
        int apart = tg_heap_from_apart();
        tg_heap_in_trace = 0;
        if (apart) {
            atomic_fetch_add_explicit(&tg_heap_apart_calls, 1, memory_order_relaxed);
            return;
        }
    }
#endif
    long k = atomic_fetch_add_explicit(&tg_heap_calls, 1, memory_order_relaxed);
    if (k < tg_heap_trace) {
        void *frames[24];
        tg_heap_in_trace = 1;
        int n = backtrace(frames, 24);
        fprintf(stderr, "heap call %ld:\n", k + 1);
        backtrace_symbols_fd(frames, n, 2);
        tg_heap_in_trace = 0;
    }
}

void *malloc(size_t n) {
    tg_heap_count();
    return __libc_malloc(n);
}
void *calloc(size_t m, size_t n) {
    tg_heap_count();
    return __libc_calloc(m, n);
}
void *realloc(void *p, size_t n) {
    tg_heap_count();
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t al, size_t n) {
    tg_heap_count();
    return __libc_memalign(al, n);
}
void *memalign(size_t al, size_t n) {
    tg_heap_count();
    return __libc_memalign(al, n);
}
int posix_memalign(void **out, size_t al, size_t n) {
    tg_heap_count();
    void *p = __libc_memalign(al, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

/* Counts from now on, tracing the first `trace` calls. */
static inline void tg_heap_count_start(long trace) {
    if (trace > 0) {
        void *prime[2];
        backtrace(prime, 2); /* loads libgcc's unwinder before counting */
    }
    tg_heap_trace = trace;
    atomic_store(&tg_heap_calls, 0);
#ifdef TG_HEAP_COUNT_APART
    atomic_store(&tg_heap_apart_calls, 0);
#endif
    atomic_store(&tg_heap_counting, 1);
}

/* Turns the CPU backend's spin watch off for the contexts made after it
 * (kernels/cpu/omp_throttle.c): while the cores are shared the watch
 * starts or joins a thread and switches between one thread and the team,
 * which calls the heap, and on a machine shared with other jobs (a parallel
 * ctest) that can fall in a counted step. A spin count of the user's turns
 * the watch off; this one is libgomp's default, which the library was
 * loaded with, so nothing else changes. A test of steady-state heap calls
 * calls it first; a benchmark, which measures the watch too, does not. */
static inline void tg_heap_count_watch_off(void) { setenv("GOMP_SPINCOUNT", "300000", 0); }

/* Stops counting; the calls counted since the start. */
static inline long tg_heap_count_stop(void) {
    atomic_store(&tg_heap_counting, 0);
    return atomic_load(&tg_heap_calls);
}

#endif
