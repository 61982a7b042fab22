/*
 * tests/test_bf16_layout.c: the data movements around oneDNN's products
 * (kernels/cpu/cpu_bf16_layout.c) against plain reference loops.
 *
 * f32 rows to bf16 must round exactly as tg_bf16_from_f32 (nearest even,
 * NaN quieted, infinities kept) with any row stride; NCHW planes to the
 * channel-blocked layout nChwXc (X = 8, 16; f32 and bf16) must place every
 * value and zero the padding channels (the destination starts as garbage),
 * and the blocked f32 layout back to planes must restore them. Channel
 * counts that fill the block and that do not, pixel counts below, at and
 * above a 16-pixel tile, at one thread and two (the AVX-512 paths run where
 * the CPU has them, the plain loops elsewhere).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"

static float value(int64_t i) {
    /* distinct, signed, with low bits set so that rounding matters */
    return (float)((i * 2654435761u) % 100003) / 977.0f - 51.3f + (float)i * 1.0000001e-3f;
}

static void test_rows(void **state) {
    (void)state;
    const int64_t rows = 37, cols = 53, ld = 61;
    float *src = malloc(sizeof(float) * rows * ld);
    uint16_t *dst = malloc(sizeof(uint16_t) * rows * cols);
    assert_non_null(src);
    assert_non_null(dst);
    for (int64_t i = 0; i < rows * ld; i++)
        src[i] = value(i);
    /* the special values: NaN, infinities, a tie to even each way, zeros */
    const uint32_t special[] = {0x7fc00001u, 0xffa00000u, 0x7f800000u, 0xff800000u,
                                0x3f808000u, 0x3f818000u, 0x80000000u, 0x00000001u};
    for (int j = 0; j < 8; j++)
        memcpy(&src[3 * ld + 17 + j], &special[j], 4);
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        memset(dst, 0xa5, sizeof(uint16_t) * rows * cols);
        tg__bf16_rows(dst, src, rows, cols, ld);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                const uint16_t want = tg_bf16_from_f32(src[r * ld + c]);
                if (dst[r * cols + c] != want)
                    fail_msg("%d thread(s): row %lld col %lld: 0x%04x, expected 0x%04x", threads,
                             (long long)r, (long long)c, dst[r * cols + c], want);
            }
    }
    free(src);
    free(dst);
}

static void check_layout(int64_t n, int64_t c, int64_t hw, int64_t blk, int threads) {
    const int64_t cbs = (c + blk - 1) / blk, pc = cbs * blk;
    const int64_t numel = n * c * hw, blocked = n * pc * hw;
    float *src = malloc(sizeof(float) * numel), *back = malloc(sizeof(float) * numel);
    float *b32 = malloc(sizeof(float) * blocked);
    uint16_t *b16 = malloc(sizeof(uint16_t) * blocked);
    assert_true(src && back && b32 && b16);
    for (int64_t i = 0; i < numel; i++)
        src[i] = value(i);
    omp_set_num_threads(threads);
    memset(b32, 0xa5, sizeof(float) * blocked);
    memset(b16, 0xa5, sizeof(uint16_t) * blocked);
    tg__blk_from_planes(b32, false, src, n, c, hw, blk);
    tg__blk_from_planes(b16, true, src, n, c, hw, blk);
    for (int64_t i = 0; i < n; i++)
        for (int64_t ch = 0; ch < pc; ch++)
            for (int64_t p = 0; p < hw; p++) {
                const int64_t at = ((i * cbs + ch / blk) * hw + p) * blk + ch % blk;
                const float want = ch < c ? src[(i * c + ch) * hw + p] : 0.0f;
                if (memcmp(&b32[at], &want, 4) || b16[at] != tg_bf16_from_f32(want))
                    fail_msg("n %lld c %lld hw %lld blk %lld, %d thread(s): image %lld channel "
                             "%lld pixel %lld: %g and 0x%04x, expected %g and 0x%04x",
                             (long long)n, (long long)c, (long long)hw, (long long)blk, threads,
                             (long long)i, (long long)ch, (long long)p, (double)b32[at], b16[at],
                             (double)want, tg_bf16_from_f32(want));
            }
    memset(back, 0xa5, sizeof(float) * numel);
    tg__blk_to_planes(back, b32, n, c, hw, blk);
    for (int64_t i = 0; i < numel; i++)
        if (memcmp(&back[i], &src[i], 4))
            fail_msg("n %lld c %lld hw %lld blk %lld, %d thread(s): back to planes, element %lld: "
                     "%g, expected %g",
                     (long long)n, (long long)c, (long long)hw, (long long)blk, threads,
                     (long long)i, (double)back[i], (double)src[i]);
    free(src), free(back), free(b32), free(b16);
}

static void test_blocked(void **state) {
    (void)state;
    const int64_t cs[] = {1, 3, 16, 20, 32, 35}, hws[] = {1, 7, 16, 33, 196};
    for (int threads = 1; threads <= 2; threads++)
        for (size_t a = 0; a < sizeof cs / sizeof cs[0]; a++)
            for (size_t b = 0; b < sizeof hws / sizeof hws[0]; b++) {
                check_layout(3, cs[a], hws[b], 16, threads);
                check_layout(2, cs[a], hws[b], 8, threads);
            }
    /* large enough to run as an OpenMP region */
    check_layout(4, 40, 28 * 28, 16, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_blocked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
