/*
 * tapegrad/rng.h: counter-based random numbers (Philox4x32-10).
 *
 * A stream is a 64-bit key and a 64-bit counter; the n-th block of four
 * 32-bit words is a pure function of (key, counter + n). So the same seed
 * gives the same numbers whatever the thread count, any element can be
 * computed on its own (kernels use this for dropout masks), and the state to
 * checkpoint is two integers.
 *
 *     tg_rng r = tg_rng_make(seed, stream_id);
 *     float u[10];
 *     tg_rng_uniform(&r, u, 10, -1.0f, 1.0f);
 */
#ifndef TAPEGRAD_RNG_H
#define TAPEGRAD_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tg_rng {
    uint64_t key;
    uint64_t counter; /* blocks of four words consumed so far */
} tg_rng;

/* One Philox4x32-10 block. */
void tg_philox4x32(uint64_t key, uint64_t counter, uint32_t out[4]);

/* A stream from a user seed and a stream id (e.g. a parameter's index):
 * different ids give independent streams. */
tg_rng tg_rng_make(uint64_t seed, uint64_t stream);

/* n floats uniform in [lo, hi). Consumes ceil(n / 4) blocks. */
void tg_rng_uniform(tg_rng *r, float *out, int64_t n, float lo, float hi);
/* n floats from N(mean, std^2) (Box-Muller). Consumes ceil(n / 2) blocks. */
void tg_rng_normal(tg_rng *r, float *out, int64_t n, float mean, float std);
/* A uniform integer in [0, bound). */
uint64_t tg_rng_below(tg_rng *r, uint64_t bound);
/* A uniform double in [0, 1) from a 32-bit word. */
static inline double tg_u32_to_unit(uint32_t w) { return (double)w * (1.0 / 4294967296.0); }

#ifdef __cplusplus
}
#endif
#endif
