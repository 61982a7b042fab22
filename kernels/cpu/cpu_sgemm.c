/*
 * kernels/cpu/cpu_sgemm.c: the f32 matrix product of our own on CPUs with
 * AVX-512, used instead of OpenBLAS's sgemm there by matmul (cpu_matmul.c
 * says for which shapes).
 *
 * C (n x m, row-major) = op(A) B with B read in panels of 32 columns:
 * row-major as it lies, or copied by tg__cpu_sgemm_pack into panels laid
 * end to end (cpu_matmul.c copies a B given transposed, and a wide one of a
 * tall product); and A read where it lies: element (i, l) of op(A) at
 * A[i * ars + l * acs], so A given transposed costs no copy. C is written,
 * not accumulated into: no zero fill first.
 *
 * The register tile is SG_MR rows by two 16-float vectors of columns: 16
 * accumulators, each k step two loads of B and SG_MR broadcasts of A for
 * 2 * SG_MR fused multiply-adds. K runs in chunks of SG_KC (the first
 * chunk writes C, the next ones add to it); for each chunk, row blocks of
 * SG_MR pass over every column tile of C while their rows of A stay in L1
 * and B's chunk stays in L2 (256 KiB or less for the gpt's products;
 * cpu_matmul.c sends a B of more than 2^19 values, whose chunks would not
 * fit, to OpenBLAS). Blocks of 256 columns (a smaller chunk of B for wide
 * products) measured slower on the gpt's products; not kept.
 *
 * Each element of C is the sum over l in increasing order, in chunks of
 * SG_KC from l = 0, whatever the blocks of C a caller cuts the product
 * into: the bits do not depend on the threads (cpu_matmul.c splits C by the
 * context's thread count). They differ from OpenBLAS's in the last bits.
 *
 * Measured against OpenBLAS 0.3.21 (Cooperlake kernels) on one core of an
 * AMD EPYC (Zen 4) at the gpt's shapes: docs/performance/gpt.md, "f32 products
 * of our own".
 */
#include <immintrin.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#define SG_MR 8
#define SG_KC 256
#define SG_NR TG__CPU_SGEMM_NR

/* -1 not yet decided, 0 OpenBLAS, 1 ours. */
static atomic_int sg_mode = -1;

/* The kernel needs AVX-512 F alone. */
static bool sg_cpu(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512f") > 0;
#else
    return false;
#endif
}

bool tg__cpu_sgemm_on(void) {
    int m = atomic_load_explicit(&sg_mode, memory_order_relaxed);
    if (m < 0) {
        const char *e = getenv("TG_CPU_SGEMM");
        m = sg_cpu() && !(e && !strcmp(e, "blas"));
        atomic_store_explicit(&sg_mode, m, memory_order_relaxed);
    }
    return m == 1;
}

bool tg__cpu_sgemm_set(bool on) {
    const bool was = tg__cpu_sgemm_on();
    atomic_store_explicit(&sg_mode, on && sg_cpu(), memory_order_relaxed);
    return was;
}

void tg__cpu_sgemm_pack(float *dst, const float *B, int64_t rs, int64_t cs, int64_t k, int64_t m,
                        int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
        const int64_t j0 = p * SG_NR, w = m - j0 < SG_NR ? m - j0 : SG_NR;
        float *d = dst + p * SG_NR * k;
        if (cs == 1) { /* rows of B: 32 floats each */
            for (int64_t l = 0; l < k; l++)
                memcpy(d + l * SG_NR, B + l * rs + j0, (size_t)w * sizeof(float));
            continue;
        }
        /* columns of B (a transposed one): in blocks of 16 steps of k, so
         * that both sides stay in cache */
        for (int64_t lb = 0; lb < k; lb += 16) {
            const int64_t le = lb + 16 < k ? lb + 16 : k;
            for (int64_t j = 0; j < w; j++)
                for (int64_t l = lb; l < le; l++)
                    d[l * SG_NR + j] = B[l * rs + (j0 + j) * cs];
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)

#define SG_TARGET __attribute__((target("avx512f,avx2,fma")))

/* rows (<= SG_MR) x 32 columns (masked by m0, m1) of C over kc steps of k. */
SG_TARGET static inline __attribute__((always_inline)) void
sg_tile(int rows, int64_t kc, const float *a, int64_t ars, int64_t acs, const float *b, int64_t ldb,
        float *c, int64_t ldc, __mmask16 m0, __mmask16 m1, bool first) {
    __m512 acc[SG_MR][2];
#pragma GCC unroll 16
    for (int r = 0; r < SG_MR; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t l = 0; l < kc; l++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + l * ldb);
        const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + l * ldb + 16);
        const float *al = a + l * acs;
#pragma GCC unroll 16
        for (int r = 0; r < SG_MR; r++) {
            if (r < rows) {
                const __m512 av = _mm512_set1_ps(al[r * ars]);
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < SG_MR; r++) {
        if (r < rows) {
            float *cr = c + r * ldc;
            if (!first) {
                acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_maskz_loadu_ps(m0, cr));
                acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_maskz_loadu_ps(m1, cr + 16));
            }
            _mm512_mask_storeu_ps(cr, m0, acc[r][0]);
            _mm512_mask_storeu_ps(cr + 16, m1, acc[r][1]);
        }
    }
}

/* The full tile, with the row count a constant so the loops unroll to
 * straight code; and any other. */
SG_TARGET static void sg_tile_full(int64_t kc, const float *a, int64_t ars, int64_t acs,
                                   const float *b, int64_t ldb, float *c, int64_t ldc, bool first) {
    sg_tile(SG_MR, kc, a, ars, acs, b, ldb, c, ldc, 0xffff, 0xffff, first);
}

SG_TARGET static void sg_tile_part(int rows, int64_t kc, const float *a, int64_t ars, int64_t acs,
                                   const float *b, int64_t ldb, float *c, int64_t ldc,
                                   __mmask16 m0, __mmask16 m1, bool first) {
    sg_tile(rows, kc, a, ars, acs, b, ldb, c, ldc, m0, m1, first);
}

static __mmask16 sg_mask(int64_t cols) {
    return cols >= 16 ? (__mmask16)0xffff : cols <= 0 ? 0 : (__mmask16)((1u << cols) - 1);
}

void tg__cpu_sgemm(int64_t n, int64_t m, int64_t k, const float *A, int64_t ars, int64_t acs,
                   const float *B, int64_t ldb, int64_t bps, float *C, int64_t ldc) {
    for (int64_t l0 = 0; l0 < k; l0 += SG_KC) {
        const int64_t kc = k - l0 < SG_KC ? k - l0 : SG_KC;
        const bool first = l0 == 0;
        for (int64_t i = 0; i < n; i += SG_MR) {
            const int rows = n - i < SG_MR ? (int)(n - i) : SG_MR;
            const float *ai = A + i * ars + l0 * acs;
            for (int64_t j = 0; j < m; j += SG_NR) {
                const float *bj = B + j / SG_NR * bps + l0 * ldb;
                float *cij = C + i * ldc + j;
                if (rows == SG_MR && m - j >= SG_NR)
                    sg_tile_full(kc, ai, ars, acs, bj, ldb, cij, ldc, first);
                else
                    sg_tile_part(rows, kc, ai, ars, acs, bj, ldb, cij, ldc, sg_mask(m - j),
                                 sg_mask(m - j - 16), first);
            }
        }
    }
}

#else

void tg__cpu_sgemm(int64_t n, int64_t m, int64_t k, const float *A, int64_t ars, int64_t acs,
                   const float *B, int64_t ldb, int64_t bps, float *C, int64_t ldc) {
    /* Never chosen (tg__cpu_sgemm_on is false off x86-64); kept correct. */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) {
            float s = 0;
            for (int64_t l = 0; l < k; l++)
                s += A[i * ars + l * acs] * B[j / SG_NR * bps + l * ldb + j % SG_NR];
            C[i * ldc + j] = s;
        }
}

#endif
