/*
 * gradcheck.h: finite-difference gradient checking for tapegrad ops.
 *
 * A case is a small builder f(inputs) -> tensor plus a description of its
 * inputs. The checker forms loss = sum(f(x) * W) for a fixed random W of f's
 * output shape, gets the analytic gradient with tg_backward(ctx, out, W, 0)
 * (so W is the seed) and compares it with central differences computed in
 * TG_F64, perturbing one element of one input at a time (the difference is
 * taken per output element before the weighted sum, so a large output does
 * not drown it in rounding). Values live in host arrays; every evaluation
 * rebuilds its inputs from them and the step arena is reset in between, so
 * no evaluation can see state left by another.
 *
 * The second-order check differentiates the gradient itself: g = tg_grad(out,
 * W, inputs, TG_CREATE_GRAPH), h = sum_i sum(g_i * V_i) for fixed random V_i,
 * then tg_backward(h) is compared with finite differences of h.
 */
#ifndef TAPEGRAD_TESTS_GRADCHECK_H
#define TAPEGRAD_TESTS_GRADCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tapegrad/runtime.h"

/* The most inputs one case has. */
#define GC_MAX_IN 4

/* Half-width of the central difference, and the comparison tolerances:
 * |analytic - numeric| <= GC_ATOL + GC_RTOL * max(|analytic|, |numeric|). */
#define GC_EPS 1e-6
#define GC_ATOL 1e-6
#define GC_RTOL 1e-6

/* How an input's values are made. The random kinds are differentiated unless
 * the argument says nograd; the fixed kinds never are. */
typedef enum gc_gen {
    /* uniform in [-1, 1] */
    GC_RAND = 0,
    /* uniform in [0.5, 2]: log, sqrt, fractional powers, divisors */
    GC_POS,
    /* uniform in [-1, 1] but at least 0.05 away from 0 and from +-0.5, the
     * kinks of abs, relu and clamp(-0.5, 0.5): a finite difference that
     * straddles a kink measures neither one-sided derivative */
    GC_NOKINK,
    /* a shuffle of well-separated values (gaps >= 0.08): max and min must
     * not see ties in a gradient check, since a tie is a kink */
    GC_DISTINCT,
    /* fixed f64 values from `data` (never differentiated) */
    GC_DATA,
    /* fixed i64 values from `idx` (indices, conditions) */
    GC_INDEX,
} gc_gen;

typedef struct gc_arg {
    gc_gen gen;
    /* a random input that is held constant (not differentiated) */
    bool nograd;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    const double *data;
    const int64_t *idx;
} gc_arg;

/* Builds the function under test from its inputs (in the case's order). */
typedef tg_tensor *(*gc_build_fn)(tg_ctx *ctx, tg_tensor *const *in);

typedef enum gc_mode {
    /* gradient check against finite differences */
    GC_GRAD = 0,
    /* a row without TG_OPF_DIFF: the output must not require grad even
     * though a float input does, and nothing may be recorded */
    GC_NODIFF,
} gc_mode;

/* A case that exercises a composite API (stack, chunk, rearrange, ...)
 * rather than one op row; it does not count towards row coverage. */
#define GC_COMPOSITE ((int)TG_OP_COUNT)

typedef struct gc_case {
    const char *name;
    /* the tg_op row this case covers, or GC_COMPOSITE */
    int op;
    gc_mode mode;
    gc_build_fn fn;
    int nin;
    gc_arg in[GC_MAX_IN];
    /* when check_out is set, the output must have this shape */
    bool check_out;
    int out_ndim;
    int64_t out_shape[TG_MAX_DIMS];
    /* also run the second-order check (create_graph) on this case */
    bool second_order;
    /* > 0: perturb only this many elements of each input (large cases,
     * sized to reach the kernels' multi-threaded paths) */
    int sample;
    /* GC_NODIFF cases: the expected output values (check_out gives the
     * count), or NULL */
    const double *expect;
} gc_case;

/* Shorthands for the table. */
#define GC_IN(g, n, ...)                                  \
    {                                                     \
        .gen = (g), .ndim = (n), .shape = { __VA_ARGS__ } \
    }
#define GC_IN0(g)                             \
    {                                         \
        .gen = (g), .ndim = 0, .shape = { 0 } \
    }
#define GC_CONST(g, n, ...)                                               \
    {                                                                     \
        .gen = (g), .nograd = true, .ndim = (n), .shape = { __VA_ARGS__ } \
    }
#define GC_IDX(p, n, ...)                                                  \
    {                                                                      \
        .gen = GC_INDEX, .idx = (p), .ndim = (n), .shape = { __VA_ARGS__ } \
    }
#define GC_DATA_IN(p, n, ...)                                              \
    {                                                                      \
        .gen = GC_DATA, .data = (p), .ndim = (n), .shape = { __VA_ARGS__ } \
    }
#define GC_OUT(n, ...) .check_out = true, .out_ndim = (n), .out_shape = {__VA_ARGS__}
#define GC_OUT0 .check_out = true, .out_ndim = 0, .out_shape = {0}
#define GC_SAMPLE(n) .sample = (n)

/* The result of one check: ok, or a message saying what differed. */
typedef struct gc_result {
    bool ok;
    /* the largest |analytic - numeric| seen, for the log */
    double max_abs_err;
    char msg[512];
} gc_result;

/* First-order check of c in TG_F64 against finite differences. seed picks
 * the random values; the same seed gives the same inputs, W and V. */
gc_result gc_check(const gc_case *c, uint64_t seed);
/* Second-order check: the gradient of sum_i sum(g_i * V_i). */
gc_result gc_check2(const gc_case *c, uint64_t seed);
/* The analytic gradient in TG_F32 must agree with the one in TG_F64 to
 * single precision: the f32 kernels and backward rules are the ones a
 * training run uses. */
gc_result gc_check_f32(const gc_case *c, uint64_t seed);
/* For GC_NODIFF cases. */
gc_result gc_check_nodiff(const gc_case *c, uint64_t seed);

#endif
