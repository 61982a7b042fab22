/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC'11), the generator cuRAND and PyTorch's CUDA backend use. */
#include "tapegrad/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

void tg_philox4x32(uint64_t key, uint64_t counter, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = mulhilo(PHILOX_M0, c0, &hi0);
        uint32_t lo1 = mulhilo(PHILOX_M1, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* splitmix64 mixes seed and stream into a well-spread key. */
static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

tg_rng tg_rng_make(uint64_t seed, uint64_t stream)
{
    tg_rng r = {.key = mix64(seed ^ mix64(stream)), .counter = 0};
    return r;
}

void tg_rng_uniform(tg_rng *r, float *out, int64_t n, float lo, float hi)
{
    uint32_t w[4];
    for (int64_t i = 0; i < n; i += 4) {
        tg_philox4x32(r->key, r->counter++, w);
        for (int j = 0; j < 4 && i + j < n; j++) {
            /* 24 random bits give every float in [0, 1) equal spacing. */
            float u = (float)(w[j] >> 8) * (1.0f / 16777216.0f);
            out[i + j] = lo + (hi - lo) * u;
        }
    }
}

void tg_rng_normal(tg_rng *r, float *out, int64_t n, float mean, float std)
{
    uint32_t w[4];
    for (int64_t i = 0; i < n; i += 2) {
        tg_philox4x32(r->key, r->counter++, w);
        /* u1 in (0, 1] keeps log() finite. */
        double u1 = ((double)w[0] + 1.0) / 4294967296.0, u2 = tg_u32_to_unit(w[1]);
        double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
        out[i] = mean + std * (float)(rad * cos(th));
        if (i + 1 < n)
            out[i + 1] = mean + std * (float)(rad * sin(th));
    }
}

uint64_t tg_rng_below(tg_rng *r, uint64_t bound)
{
    uint32_t w[4];
    tg_philox4x32(r->key, r->counter++, w);
    uint64_t x = ((uint64_t)w[0] << 32) | w[1];
    /* The modulo bias is below 2^-32 for the bounds used here (dataset sizes). */
    return bound ? x % bound : 0;
}
