/*
 * kernels/cpu/cpu_gemm_bf16.c: the autocast matmul's bf16 product on our own
 * AVX512_BF16 kernel (vdpbf16ps), for CPUs that have it.
 *
 * C (n x m, f32, row-major, ld m) = op(A) op(B), with A and B f32 (laid out
 * as for BLAS: tg__gemm_arg) rounded to bf16 (nearest even, NaN quieted: the
 * bits of tg_bf16_from_f32) and the products summed in f32. The structure is
 * GotoBLAS's. A block of G16_KC values of K by G16_NC columns of op(B) is
 * packed into panels of G16_NR columns stored as [K/2][G16_NR][2] bf16 (each
 * 32-bit word a pair of consecutive K values of one column); a block of
 * G16_MC rows of op(A) into tiles of G16_MR rows, [K/2][G16_MR][2] when A is
 * stored transposed, else rows of pairs (row i's pairs in order, G16_KCP
 * apart), which a row-major A gives without a transposition. A micro-kernel
 * keeps a G16_MR x G16_NR tile of C in 24 AVX-512 registers and adds, per
 * pair of K, one broadcast word of A times two vectors of B (vdpbf16ps: two
 * products into each f32 lane). Each tile of A (12 KiB) stays in L1 while
 * the panels of B stream past it from L2.
 *
 * The rounding happens in the packing, so the f32 operands are read once and
 * no separate conversion pass runs: VCVTNE2PS2BF16 (nearest even, NaN
 * quieted alike), except where a vector holds an f32 denormal, which that
 * instruction flushes to zero: those vectors round in integer arithmetic
 * (rnd_hi) as tg_bf16_from_f32 does. An odd K is padded with a zero half;
 * the tails of rows and columns are packed as zeros and stored through
 * masks. The packing asks for the source rows a few ahead (prefetch), since
 * it reads them once from memory.
 *
 * The bits: every element of C is one chain of vdpbf16ps over the pairs of K
 * in order (the first K block starts from zero, each next one from the f32
 * partial sums it stored in C), whatever tile, block or part holds the
 * element, so the result depends neither on the number of parts nor on how
 * many threads run them. The work is still cut as the f32 products' is
 * (cpu_matmul.c): C in tg__cpu_parts(state) blocks of rows (columns when C
 * has more columns than rows), run by TG__CPU_PARTS; K is never split.
 *
 * The heap: each thread slot (one per part, at most the context's thread
 * count) has packing buffers of a fixed size (the blocks' bounds, 608 KiB),
 * made at the context's first bf16 product and kept in the backend's state
 * (tg__cpu_state.gemm16): a steady step allocates nothing.
 *
 * Dispatch (tg__gemm16_mode, once per context, at its creation): ours where
 * the CPU has AVX512_BF16 (with AVX512F, BW, DQ and VL), oneDNN's matmul
 * (cpu_dnnl.c) elsewhere. At 1 thread on the gpt's shapes ours measured
 * level with oneDNN's or ahead (docs/performance/bf16.md, bench_gemm16), so no
 * shape is left to oneDNN. The environment variable TG_CPU_BF16_GEMM
 * overrides the choice: "auto" (the default), "own" (an error at context
 * creation on a CPU without AVX512_BF16) or "onednn", so that tests and
 * benchmarks run both paths on one machine. Only this file is compiled for
 * AVX-512 (target attributes); the rest of the build stays generic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

/* Rows and columns of the micro-kernel's tile of C: G16_MR x G16_NV vectors
 * of 16 floats, 24 accumulators of the 32 registers. */
#define G16_MR 12
#define G16_NV 2
#define G16_NR (16 * G16_NV)
/* K per block (G16_KCP pairs), rows of op(A) and columns of op(B) per packed
 * block: A's block (96 KiB) and B's (up to 512 KiB) stay in L2. */
#define G16_KC 512
#define G16_KCP (G16_KC / 2)
#define G16_MC (8 * G16_MR)
#define G16_NC 512
/* u32 words (bf16 pairs) of one slot's buffers. */
#define G16_ABUF ((size_t)G16_MC * G16_KCP)
#define G16_BBUF ((size_t)G16_NC * G16_KCP)
/* Below this many multiply-adds a product runs on the calling thread. */
#define G16_PAR_MIN (1 << 18)

struct tg__gemm16 {
    int slots;
    uint32_t *buf; /* slot s: G16_ABUF words of A, then G16_BBUF of B */
};

/* ---- the choice ---- */

#if defined(__x86_64__) && defined(__GNUC__)
#define G16_X86 1
#include <immintrin.h>
#else
#define G16_X86 0
#endif

tg_status tg__gemm16_mode(bool *own, char *err, size_t errlen) {
    const char *e = getenv("TG_CPU_BF16_GEMM");
    *own = false;
    if (!e || !*e || !strcmp(e, "auto")) {
        *own = tg__cpu_avx512_bf16();
        return TG_OK;
    }
    if (!strcmp(e, "onednn"))
        return TG_OK;
    if (!strcmp(e, "own")) {
        if ((*own = tg__cpu_avx512_bf16()))
            return TG_OK;
        if (err && errlen)
            snprintf(err, errlen,
                     "cpu backend: TG_CPU_BF16_GEMM=own, but this CPU has no AVX512_BF16 (use "
                     "auto or onednn)");
        return TG_ERR_UNSUPPORTED;
    }
    if (err && errlen)
        snprintf(err, errlen, "cpu backend: TG_CPU_BF16_GEMM=%.64s: expected auto, own or onednn",
                 e);
    return TG_ERR_INVALID;
}

/* ---- the buffers ---- */

tg__gemm16 *tg__gemm16_new(int slots) {
    if (slots < 1)
        slots = 1;
    tg__gemm16 *g = malloc(sizeof *g);
    const size_t words = (size_t)slots * (G16_ABUF + G16_BBUF);
    if (!g || !(g->buf = aligned_alloc(64, words * sizeof(uint32_t)))) {
        free(g);
        return NULL;
    }
    g->slots = slots;
    return g;
}

void tg__gemm16_free(tg__gemm16 *g) {
    if (g)
        free(g->buf);
    free(g);
}

/* One product, described once for all its parts. */
typedef struct g16_job {
    const tg__gemm_arg *ga, *gb;
    int64_t n, m, k;
    const float *A, *B;
    float *C;
} g16_job;

/* ---- the kernel (AVX512_BF16) ---- */

#if G16_X86

#define G16_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

/* f32 lanes to bf16 in their high 16 bits (the low 16 are left over), as
 * tg_bf16_from_f32: nearest even, NaN quieted. */
G16_TARGET static inline __m512i rnd_hi(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
}

/* Lanes of pairs: the low half from even's lanes, the high half from odd's. */
G16_TARGET static inline __m512i pair_lanes(__m512i even, __m512i odd) {
    return _mm512_mask_blend_epi16(0xaaaaaaaau, _mm512_srli_epi32(even, 16), odd);
}

/* 32 consecutive values (from rnd_hi, in two vectors) to their 16 pairs. */
G16_TARGET static inline __m512i pair_run(__m512i lo, __m512i hi) {
    const __m512i odd_words =
        _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27,
                         25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi16(lo, odd_words, hi);
}

/* Whether any lane of lo or hi is an f32 denormal, which VCVTNE2PS2BF16
 * flushes to zero where tg_bf16_from_f32 rounds it. */
G16_TARGET static inline bool any_denormal(__m512 lo, __m512 hi) {
    return (_mm512_fpclass_ps_mask(lo, 0x20) | _mm512_fpclass_ps_mask(hi, 0x20)) != 0;
}

/* 32 consecutive f32 values to their 16 pairs of bf16: one VCVTNE2PS2BF16
 * (nearest even, NaN quieted as tg_bf16_from_f32 does) unless a denormal
 * needs the integer rounding. */
G16_TARGET static inline __m512i pairs_along(__m512 lo, __m512 hi) {
    if (__builtin_expect(any_denormal(lo, hi), 0))
        return pair_run(rnd_hi(lo), rnd_hi(hi));
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* Lane i of even and of odd to pair i (even's value in the low half). */
G16_TARGET static inline __m512i pairs_across(__m512 even, __m512 odd) {
    if (__builtin_expect(any_denormal(even, odd), 0))
        return pair_lanes(rnd_hi(even), rnd_hi(odd));
    /* words 0-15: even's, 16-31: odd's; interleaved */
    const __m512i mix = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24,
                                         8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(mix, (__m512i)_mm512_cvtne2ps_pbh(odd, even));
}

/* r[i][j] -> r[j][i] for 16 x 16 32-bit words. */
G16_TARGET static inline void tr16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* r[4i + j], 128-bit lane L: column 4L + j of rows 4i .. 4i + 3 */
    for (int j = 0; j < 4; j++) {
        const __m512i u0 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x44);
        const __m512i u1 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xee);
        const __m512i u2 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x44);
        const __m512i u3 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xee);
        t[j] = _mm512_shuffle_i32x4(u0, u2, 0x88);
        t[4 + j] = _mm512_shuffle_i32x4(u0, u2, 0xdd);
        t[8 + j] = _mm512_shuffle_i32x4(u1, u3, 0x88);
        t[12 + j] = _mm512_shuffle_i32x4(u1, u3, 0xdd);
    }
    for (int i = 0; i < 16; i++)
        r[i] = t[i];
}

static inline __mmask16 lanes(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

/* The packing reads its source rows once, from memory: the rows G16_AHEAD
 * ahead are asked for while these are packed, so that many lines are on
 * their way at once (one row at a time leaves the prefetchers too little). */
#define G16_AHEAD 6

static inline void prefetch_run(const float *s, int64_t n) {
    for (int64_t i = 0; i < n; i += 16)
        _mm_prefetch((const char *)(s + i), _MM_HINT_T0);
}

/*
 * Panels [kp][w] of pairs from a matrix whose K runs down its rows: value
 * (kk, x) at s[kk * ld + x], kk < kc, x < nx (the rest zeros), kp =
 * ceil(kc / 2) pairs; panel q holds x from q * w, at dst + q * kp * w. The
 * two rows of each pair are read once across every panel, in order.
 * op(A) given transposed, op(B) not.
 */
G16_TARGET static void pack_down(uint32_t *dst, int w, const float *s, int64_t ld, int64_t kc,
                                 int64_t nx) {
    const int64_t kp = (kc + 1) / 2, np = (nx + w - 1) / w;
    for (int64_t p = 0; p < kp; p++, s += 2 * ld) {
        const bool odd = 2 * p + 1 < kc;
        prefetch_run(s + G16_AHEAD * ld, nx);
        prefetch_run(s + (G16_AHEAD + 1) * ld, nx);
        for (int64_t q = 0; q < np; q++) {
            uint32_t *d = dst + (q * kp + p) * w;
            for (int g = 0; g < w; g += 16) {
                const int64_t x = q * w + g;
                const __mmask16 in = lanes(nx - x);
                const __m512 e = _mm512_maskz_loadu_ps(in, s + x);
                const __m512 o = odd ? _mm512_maskz_loadu_ps(in, s + ld + x) : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(d + g, lanes(w - g), pairs_across(e, o));
            }
        }
    }
}

/*
 * Rows of pairs: row x (x < nx) of a matrix whose K runs along its rows,
 * value (kk, x) at s[x * ld + kk], to dst + x * G16_KCP as kp pairs (the
 * pair past an odd kc half zero). op(A) not transposed.
 */
G16_TARGET static void pack_rows(uint32_t *dst, const float *s, int64_t ld, int64_t kc,
                                 int64_t nx) {
    const int64_t kp = (kc + 1) / 2;
    for (int64_t x = 0; x < nx; x++, s += ld, dst += G16_KCP) {
        prefetch_run(s + G16_AHEAD * ld, kc);
        for (int64_t p0 = 0; p0 < kp; p0 += 16) {
            const __mmask16 m0 = lanes(kc - 2 * p0), m1 = lanes(kc - 2 * p0 - 16);
            const __m512i v = pairs_along(_mm512_maskz_loadu_ps(m0, s + 2 * p0),
                                          _mm512_maskz_loadu_ps(m1, s + 2 * p0 + 16));
            _mm512_mask_storeu_epi32(dst + p0, lanes(kp - p0), v);
        }
    }
}

/*
 * The same panel from a matrix whose K runs along its rows: value (kk, x) at
 * s[x * ld + kk]. Each 16 x 32 tile's pairs are transposed in registers.
 * op(A) not transposed, op(B) transposed.
 */
G16_TARGET static void pack_along(uint32_t *dst, int w, const float *s, int64_t ld, int64_t kc,
                                  int64_t nx) {
    const int64_t kp = (kc + 1) / 2;
    for (int g = 0; g < w; g += 16) {
        const __mmask16 out = lanes(w - g);
        const int64_t rows = nx - g < 16 ? nx - g : 16;
        for (int64_t p0 = 0; p0 < kp; p0 += 16) {
            const __mmask16 m0 = lanes(kc - 2 * p0), m1 = lanes(kc - 2 * p0 - 16);
            __m512i r[16];
            for (int x = 0; x < 16; x++) {
                if (x >= rows) {
                    r[x] = _mm512_setzero_si512();
                    continue;
                }
                const float *q = s + (g + x) * ld + 2 * p0;
                r[x] = pairs_along(_mm512_maskz_loadu_ps(m0, q), _mm512_maskz_loadu_ps(m1, q + 16));
            }
            tr16(r);
            const int64_t np = kp - p0 < 16 ? kp - p0 : 16;
            for (int64_t q = 0; q < np; q++)
                _mm512_mask_storeu_epi32(dst + (p0 + q) * w + g, out, r[q]);
        }
    }
}

/*
 * The micro-kernel: the mr x nr tile at c (row stride ldc) of kp pairs of the
 * A panel a times the B panel b ([kp][G16_NR]), from zero when first is set,
 * else added to the tile's f32 values (the earlier K blocks). Pair p of row
 * i of A is a[i * as + p * ps]: [kp][G16_MR] (as 1, ps G16_MR) or rows of
 * G16_KCP (as G16_KCP, ps 1), two instances with constant strides.
 */
G16_TARGET static inline __attribute__((always_inline)) void
kernel_at(int64_t kp, const uint32_t *a, const int64_t as, const int64_t ps, const uint32_t *b,
          float *c, int64_t ldc, int mr, int nr, bool first) {
    __m512 acc[G16_MR][G16_NV];
    __mmask16 cm[G16_NV];
    for (int v = 0; v < G16_NV; v++)
        cm[v] = lanes(nr - 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < G16_MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < G16_NV; v++)
            acc[i][v] = first || i >= mr ? _mm512_setzero_ps()
                                         : _mm512_maskz_loadu_ps(cm[v], c + i * ldc + 16 * v);
    for (int64_t p = 0; p < kp; p++, a += ps, b += G16_NR) {
        __m512i bv[G16_NV];
#pragma GCC unroll 4
        for (int v = 0; v < G16_NV; v++)
            bv[v] = _mm512_loadu_si512(b + 16 * v);
#pragma GCC unroll 16
        for (int i = 0; i < G16_MR; i++) {
            const __m512i av = _mm512_set1_epi32((int)a[i * as]);
#pragma GCC unroll 4
            for (int v = 0; v < G16_NV; v++)
                acc[i][v] = _mm512_dpbf16_ps(acc[i][v], (__m512bh)av, (__m512bh)bv[v]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < G16_MR; i++) {
        if (i >= mr)
            break;
#pragma GCC unroll 4
        for (int v = 0; v < G16_NV; v++)
            _mm512_mask_storeu_ps(c + i * ldc + 16 * v, cm[v], acc[i][v]);
    }
}

G16_TARGET static void kernel_panel(int64_t kp, const uint32_t *a, const uint32_t *b, float *c,
                                    int64_t ldc, int mr, int nr, bool first) {
    kernel_at(kp, a, 1, G16_MR, b, c, ldc, mr, nr, first);
}

G16_TARGET static void kernel_rows(int64_t kp, const uint32_t *a, const uint32_t *b, float *c,
                                   int64_t ldc, int mr, int nr, bool first) {
    kernel_at(kp, a, G16_KCP, 1, b, c, ldc, mr, nr, first);
}

/* op(B)'s rows [k0, k0 + kc) and columns [j0, j0 + nc) into panels of
 * [kp][G16_NR]. */
G16_TARGET static void pack_b(const g16_job *j, uint32_t *bp, int64_t k0, int64_t kc, int64_t j0,
                              int64_t nc) {
    const int64_t kp = (kc + 1) / 2, ld = j->gb->ld;
    if (!j->gb->trans) {
        pack_down(bp, G16_NR, j->B + k0 * ld + j0, ld, kc, nc);
        return;
    }
    for (int64_t jr = 0; jr < nc; jr += G16_NR, bp += kp * G16_NR) {
        const int64_t w = nc - jr < G16_NR ? nc - jr : G16_NR;
        pack_along(bp, G16_NR, j->B + (j0 + jr) * ld + k0, ld, kc, w);
    }
}

/* op(A)'s rows [i0, i0 + mc) and columns [k0, k0 + kc): panels of
 * [kp][G16_MR] when A is stored transposed, else rows of G16_KCP pairs. */
G16_TARGET static void pack_a(const g16_job *j, uint32_t *ap, int64_t i0, int64_t mc, int64_t k0,
                              int64_t kc) {
    const int64_t ld = j->ga->ld;
    if (j->ga->trans)
        pack_down(ap, G16_MR, j->A + k0 * ld + i0, ld, kc, mc);
    else {
        pack_rows(ap, j->A + i0 * ld + k0, ld, kc, mc);
        /* the last tile's rows past mc: zeros, not whatever lay there */
        for (int64_t x = mc; x % G16_MR; x++)
            memset(ap + x * G16_KCP, 0, (size_t)(kc + 1) / 2 * sizeof *ap);
    }
}

/* The block of C of rows [r0, r1) and columns [c0, c1), on one slot's buffers. */
G16_TARGET static void g16_block(const g16_job *j, uint32_t *ap, uint32_t *bp, int64_t r0,
                                 int64_t r1, int64_t c0, int64_t c1) {
    const bool panels = j->ga->trans;
    for (int64_t jc = c0; jc < c1; jc += G16_NC) {
        const int64_t nc = c1 - jc < G16_NC ? c1 - jc : G16_NC;
        for (int64_t pc = 0; pc < j->k; pc += G16_KC) {
            const int64_t kc = j->k - pc < G16_KC ? j->k - pc : G16_KC, kp = (kc + 1) / 2;
            /* A's tiles: G16_MR rows apart, as panels or as rows. */
            const int64_t astep = panels ? kp * G16_MR : G16_MR * G16_KCP;
            pack_b(j, bp, pc, kc, jc, nc);
            for (int64_t ic = r0; ic < r1; ic += G16_MC) {
                const int64_t mc = r1 - ic < G16_MC ? r1 - ic : G16_MC;
                pack_a(j, ap, ic, mc, pc, kc);
                for (int64_t ir = 0; ir < mc; ir += G16_MR) {
                    const int mr = (int)(mc - ir < G16_MR ? mc - ir : G16_MR);
                    const uint32_t *a = ap + ir / G16_MR * astep;
                    float *c = j->C + (ic + ir) * j->m + jc;
                    for (int64_t jr = 0; jr < nc; jr += G16_NR, c += G16_NR) {
                        const int nr = (int)(nc - jr < G16_NR ? nc - jr : G16_NR);
                        const uint32_t *b = bp + jr / G16_NR * kp * G16_NR;
                        if (panels)
                            kernel_panel(kp, a, b, c, j->m, mr, nr, pc == 0);
                        else
                            kernel_rows(kp, a, b, c, j->m, mr, nr, pc == 0);
                    }
                }
            }
        }
    }
}

#endif /* G16_X86 */

/* ---- the product ---- */

/* One product split into blocks of C (rows when C has more rows than
 * columns), whole tiles each. */
typedef struct g16_split {
    const g16_job *job;
    tg__gemm16 *g;
    bool by_rows;
    int64_t len, unit, units, parts;
} g16_split;

static void g16_part(const g16_split *s, int64_t p) {
#if G16_X86
    const int64_t lo = s->units * p / s->parts * s->unit;
    int64_t hi = s->units * (p + 1) / s->parts * s->unit;
    hi = hi < s->len ? hi : s->len;
    if (hi <= lo)
        return;
    /* A thread of TG__CPU_PARTS's region runs its parts in turn: its slot
     * is its number (below the parts, so below the slots). One part runs
     * on the caller, on slot 0. */
    const int slot = s->parts > 1 && omp_in_parallel() ? omp_get_thread_num() : 0;
    uint32_t *ap = s->g->buf + (size_t)slot * (G16_ABUF + G16_BBUF), *bp = ap + G16_ABUF;
    const g16_job *j = s->job;
    if (s->by_rows)
        g16_block(j, ap, bp, lo, hi, 0, j->m);
    else
        g16_block(j, ap, bp, 0, j->n, lo, hi);
#else
    (void)s, (void)p;
#endif
}

void tg__gemm16_run(tg__gemm16 *g, int parts, const tg__gemm_arg *ga, const tg__gemm_arg *gb,
                    int64_t n, int64_t m, int64_t k, const float *A, const float *B, float *C) {
    if (n <= 0 || m <= 0)
        return;
    if (k <= 0) {
        tg__cpu_zero(C, (size_t)(n * m) * sizeof(float));
        return;
    }
    const g16_job job = {.ga = ga, .gb = gb, .n = n, .m = m, .k = k, .A = A, .B = B, .C = C};
    const bool by_rows = n > m;
    const int64_t len = by_rows ? n : m, unit = by_rows ? G16_MR : G16_NR;
    const int64_t units = (len + unit - 1) / unit;
    if (parts > g->slots)
        parts = g->slots;
    if (parts < 2 || n * m * k < G16_PAR_MIN || omp_in_parallel())
        parts = 1;
    g16_split s = {.job = &job,
                   .g = g,
                   .by_rows = by_rows,
                   .len = len,
                   .unit = unit,
                   .units = units,
                   .parts = units < parts ? units : parts};
    TG__CPU_PARTS(s.parts, g16_part(&s, p));
}
