/*
 * kernels/cpu/cpu_bf16_layout.c: the data movements around oneDNN's products
 * (cpu_dnnl.c): f32 rows rounded to bf16 (nearest even, as tg_bf16_from_f32),
 * and NCHW f32 planes to and from the channel-blocked layout nChwXc that
 * oneDNN's direct convolutions run on (X = 8 or 16 channels interleaved per
 * pixel, the channels padded to X with zeros).
 *
 * These run on our own loops rather than as oneDNN reorder primitives: each
 * primitive execute allocates oneDNN's argument map on the heap, and the
 * loops here make none. On CPUs with AVX-512 the 16-channel layouts move
 * as 16 x 16 tiles transposed in registers; elsewhere (and for 8 channels)
 * plain loops.
 * Each entry point runs as an OpenMP region over images and channel blocks
 * when it is large and more than one thread is set (cpu_par.h).
 */
#include <immintrin.h>
#include <stdint.h>

#include "cpu.h"

static bool have_avx512(void) {
    static int have = -1;
    if (have < 0)
        have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    return have;
}

/* ---- f32 to bf16 ---- */

__attribute__((target("avx512f,avx512bw"))) static inline __m256i bf16x16(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    /* NaN: quieted, as tg_bf16_from_f32 */
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

__attribute__((target("avx512f,avx512bw"))) static void cvt_row512(uint16_t *dst, const float *src,
                                                                   int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), bf16x16(_mm512_loadu_ps(src + i)));
    for (; i < n; i++)
        dst[i] = tg_bf16_from_f32(src[i]);
}

static void cvt_row(uint16_t *dst, const float *src, int64_t n) {
    if (have_avx512()) {
        cvt_row512(dst, src, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = tg_bf16_from_f32(src[i]);
}

void tg__bf16_rows(uint16_t *dst, const float *src, int64_t rows, int64_t cols, int64_t ld) {
    TG__CPU_FOR(tg__cpu_par_if(rows * cols >= (1 << 16)), "omp parallel for schedule(static)",
                for (int64_t r = 0; r < rows; r++) cvt_row(dst + r * cols, src + r * ld, cols););
}

/* ---- NCHW planes to nChwXc ---- */

/* r[i][j] -> r[j][i] for a 16 x 16 tile of floats in registers. */
__attribute__((target("avx512f,avx512bw"))) static inline void tr16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* One image's block of 16 channels: s its first plane, o its first pixel;
 * 16 pixels at a time, transposed in registers. */
__attribute__((target("avx512f,avx512bw"))) static void to_blk16_512(void *o, bool bf16,
                                                                     const float *s, int64_t hw) {
    for (int64_t p = 0; p < hw; p += 16) {
        const int64_t np = hw - p < 16 ? hw - p : 16;
        const __mmask16 m = np == 16 ? 0xffff : (__mmask16)((1u << np) - 1);
        __m512 r[16];
        for (int j = 0; j < 16; j++)
            r[j] = _mm512_maskz_loadu_ps(m, s + j * hw + p);
        tr16(r);
        for (int q = 0; q < np; q++) {
            if (bf16)
                _mm256_storeu_si256((__m256i *)((uint16_t *)o + (p + q) * 16), bf16x16(r[q]));
            else
                _mm512_storeu_ps((float *)o + (p + q) * 16, r[q]);
        }
    }
}

static void to_blk_block(void *o, bool bf16, const float *s, int64_t cn, int64_t hw, int64_t blk) {
    if (blk == 16 && cn == 16 && have_avx512()) {
        to_blk16_512(o, bf16, s, hw);
        return;
    }
    for (int64_t p = 0; p < hw; p++)
        for (int64_t j = 0; j < blk; j++) {
            const float v = j < cn ? s[j * hw + p] : 0.0f;
            if (bf16)
                ((uint16_t *)o)[p * blk + j] = tg_bf16_from_f32(v);
            else
                ((float *)o)[p * blk + j] = v;
        }
}

void tg__blk_from_planes(void *dst, bool bf16, const float *src, int64_t n, int64_t c, int64_t hw,
                         int64_t blk) {
    const int64_t cbs = (c + blk - 1) / blk, tasks = n * cbs;
    const size_t es = bf16 ? 2 : 4;
    TG__CPU_FOR(
        tg__cpu_par_if(n * c * hw >= (1 << 15)), "omp parallel for schedule(static)",
        for (int64_t t = 0; t < tasks; t++) {
            const int64_t i = t / cbs, cb = t % cbs;
            const int64_t cn = c - cb * blk < blk ? c - cb * blk : blk;
            to_blk_block((char *)dst + (size_t)(t * blk * hw) * es, bf16,
                         src + (i * c + cb * blk) * hw, cn, hw, blk);
        });
}

/* ---- nChwXc f32 to NCHW planes ---- */

__attribute__((target("avx512f,avx512bw"))) static void from_blk16_512(float *o, const float *s,
                                                                       int64_t cn, int64_t hw) {
    for (int64_t p = 0; p < hw; p += 16) {
        const int64_t np = hw - p < 16 ? hw - p : 16;
        const __mmask16 m = np == 16 ? 0xffff : (__mmask16)((1u << np) - 1);
        __m512 r[16];
        for (int q = 0; q < 16; q++)
            r[q] = q < np ? _mm512_loadu_ps(s + (p + q) * 16) : _mm512_setzero_ps();
        tr16(r);
        for (int64_t j = 0; j < cn; j++)
            _mm512_mask_storeu_ps(o + j * hw + p, m, r[j]);
    }
}

static void from_blk_block(float *o, const float *s, int64_t cn, int64_t hw, int64_t blk) {
    if (blk == 16 && have_avx512()) {
        from_blk16_512(o, s, cn, hw);
        return;
    }
    for (int64_t j = 0; j < cn; j++)
        for (int64_t p = 0; p < hw; p++)
            o[j * hw + p] = s[p * blk + j];
}

void tg__blk_to_planes(float *dst, const float *src, int64_t n, int64_t c, int64_t hw,
                       int64_t blk) {
    const int64_t cbs = (c + blk - 1) / blk, tasks = n * cbs;
    TG__CPU_FOR(
        tg__cpu_par_if(n * c * hw >= (1 << 15)), "omp parallel for schedule(static)",
        for (int64_t t = 0; t < tasks; t++) {
            const int64_t i = t / cbs, cb = t % cbs;
            const int64_t cn = c - cb * blk < blk ? c - cb * blk : blk;
            from_blk_block(dst + (i * c + cb * blk) * hw, src + t * blk * hw, cn, hw, blk);
        });
}
