/*
 * augment.c: random crop and horizontal flip of image samples, drawn from
 * Philox keyed by (seed, epoch, sample index) so that the result depends on
 * nothing else (not the rank, the world size, the batch or a resume).
 */
#include <stdio.h>
#include <string.h>

#include "datasets_internal.h"

/* The counter's last word tags the stream, apart from the permutation's. */
#define AUG_STREAM 0x61756721u /* "aug!" */

void tg_augment_draw(uint64_t seed, int64_t epoch, int64_t index, int pad, int *dy, int *dx,
                     bool *flip) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)index, (uint32_t)((uint64_t)index >> 32), (uint32_t)epoch,
                             AUG_STREAM};
    uint32_t out[4];
    uint64_t span = (uint64_t)(pad > 0 ? 2 * pad + 1 : 1);

    tg_philox4x32_10(ctr, key, out);
    /* Multiply-shift maps 32 random bits to [0, span). */
    *dy = (int)(((uint64_t)out[0] * span) >> 32);
    *dx = (int)(((uint64_t)out[1] * span) >> 32);
    *flip = (out[2] >> 31) != 0;
}

void tg_augment_apply(const float *src, int64_t c, int64_t h, int64_t w, int pad, int dy, int dx,
                      bool flip, const float *fill, float *dst) {
    for (int64_t k = 0; k < c; k++) {
        const float *s = src + k * h * w;
        float *d = dst + k * h * w;
        float f = fill ? fill[k] : 0.0f;

        for (int64_t y = 0; y < h; y++) {
            /* Row y of the window is row y + dy - pad of the image. */
            int64_t sy = y + dy - pad;

            for (int64_t x = 0; x < w; x++) {
                int64_t sx = (flip ? w - 1 - x : x) + dx - pad;

                d[y * w + x] = sy >= 0 && sy < h && sx >= 0 && sx < w ? s[sy * w + sx] : f;
            }
        }
    }
}

tg_status tg__augment_check(const tg_augment *a, const tg_dataset *ds, char *err, size_t errlen) {
    int nd;
    const int64_t *sh = tg_dataset_sample_shape(ds, &nd);
    char shape[96] = "";

    if (!a->flags)
        return TG_OK;
    if (a->flags & ~(unsigned)(TG_AUGMENT_CROP | TG_AUGMENT_FLIP))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen, "augment: unknown flags 0x%x", a->flags);
    if (a->pad < 0 || a->pad > TG_AUGMENT_MAX_PAD)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "augment: crop padding %d is outside [0, %d]", a->pad,
                           TG_AUGMENT_MAX_PAD);
    if (nd == 2 || nd == 3)
        return TG_OK;
    for (int i = 0; i < nd; i++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", i ? ", " : "",
                 (long long)sh[i]);
    return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                       "%s: %s: augmentation (crop, flip) needs image samples (C, H, W) or "
                       "(H, W), but x's samples have shape (%s)",
                       tg_dataset_path(ds), tg_dataset_split(ds), shape);
}
