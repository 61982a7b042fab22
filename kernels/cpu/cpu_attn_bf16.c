/*
 * kernels/cpu/cpu_attn_bf16.c: the fused attention of cpu_attn.c under
 * autocast (ints[TG_KP_ATTN_BF16] of its params, f32 operands): products in
 * bf16 with f32 accumulation, as PyTorch's autocast runs
 * scaled_dot_product_attention in bf16.
 *
 * Forward: q, k and v are rounded to bf16 (nearest even, as
 * tg_bf16_from_f32); S = Q K^T sums bf16 products in f32; the online softmax
 * (maximum, exp with cpu_vexp.h's tg__vexp8, running sum l) runs in f32 on
 * the f32 scores; the probabilities P are rounded to bf16 for P V, whose sum
 * is f32; o = (P V) / l and lse = m + log(l) are written in f32 (l sums the
 * unrounded P). Backward: dO is rounded to bf16 as q, k, v; dP = dO V^T
 * (bf16 products, f32 sums); D_i = sum_c bf16(dO_ic) o_ic in f32; P is
 * recomputed in f32 from the saved lse, dS = P (dP - D) scale in f32; then
 * dV = bf16(P)^T bf16(dO), dK = bf16(dS)^T bf16(Q) and dQ = bf16(dS) bf16(K),
 * f32 sums; the gradients are f32.
 *
 * The work is cut as in cpu_attn.c: forward tasks of up to AB_FWD_GROUP
 * tiles of AB_BQ queries of one BH row walking tiles of AB_BK keys; the
 * backward in one pass (a task per BH row) or two (a task per query tile for
 * dq, then per key tile for dk and dv), whichever the thread count favours.
 * Every output element is summed by one task in one fixed order, the same
 * in every grouping, so the bits depend on neither the thread count nor the
 * schedule. Scratch is on the stack (at most about 110 KiB per thread): no
 * heap. Head dims above AB_DMAX run cpu_attn.c's f32 kernel.
 *
 * The scores are computed transposed (a row per key, a lane per query) so
 * that the softmax runs along the vector lanes and every product is the
 * same block product: out[r][c] (+)= sum_p W(r, p) . B[p][c], where W(r, p)
 * and B[p][c] are pairs of bf16 in a 32-bit word (the first element in the
 * low half) and "." multiplies the pairs and adds the two products, as the
 * AVX512_BF16 instruction vdpbf16ps does. Two versions of it:
 *   - with _mm512_dpbf16_ps (vdpbf16ps), on CPUs with AVX512_BF16;
 *   - portable C: each pair widened to f32, acc = acc + hi * hi, then
 *     acc = acc + lo * lo, in vdpbf16ps' order. A product of two bf16 is
 *     exact in f32, so each step rounds once, as the instruction does, but
 *     vdpbf16ps flushes denormal inputs and outputs to zero (and the AVX512
 *     path rounds P, dS and the key tiles with vcvtneps2bf16, which takes
 *     denormal inputs as 0); the two agree to the tolerance the tests hold
 *     them to, not bit for bit.
 * The path is chosen once at run time from the CPU; the environment
 * variable TG_ATTN_BF16=portable (read once) or tg__cpu_attn_bf16_set_path
 * (tests) forces the portable one.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "cpu_vexp.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define AB_HAVE_AVX 1
#define AB_AVX __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define AB_HAVE_AVX 0
#endif

/* Queries per tile (32 lanes: four 8-float vectors, two 16-float ones), keys
 * per tile, query tiles per forward task at most, and the largest head dim
 * (the stack scratch's size). */
#define AB_BQ 32
#define AB_BK 64
#define AB_FWD_GROUP 4
#define AB_DMAX 128
/* As cpu_attn.c's ATTN_ROWS_PER_THREAD: the backward runs in one pass with at
 * least this many BH rows per thread. */
#define AB_ROWS_PER_THREAD 4
#define AB_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AB_INLINE static inline __attribute__((always_inline))

typedef struct ab_geom {
    int64_t bh, tq, tk, d;
    int64_t dp2; /* pairs of a row of d (d rounded up to even, halved) */
    int64_t dv;  /* d rounded up to 16 floats: the packed rows' length */
    float scale;
    bool causal;
} ab_geom;

static inline uint32_t ab_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float ab_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
/* tg_bf16_from_f32's rounding (nearest even, NaN kept quiet), without a
 * branch so that loops over it vectorise; the bf16 in the low 16 bits. */
AB_INLINE uint32_t ab_bf(float x) {
    const uint32_t u = ab_bits(x);
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, n = (u >> 16) | 0x40u;
    return (u & 0x7fffffffu) > 0x7f800000u ? n : r;
}

/* ---- packing: f32 to pairs of bf16 ---- */

/* Pairs along each of n rows of x (row stride xs, d columns):
 * y[j * dp2 + c] = bf16(x[j][2c]) | bf16(x[j][2c + 1]) << 16, the high half 0
 * past d. */
AB_INLINE void ab_cpairs(const float *x, int64_t xs, int64_t n, int64_t d, int64_t dp2,
                         uint32_t *y) {
    for (int64_t j = 0; j < n; j++) {
        const float *xj = x + j * xs;
        uint32_t *yj = y + j * dp2;
        for (int64_t c = 0; c < d / 2; c++)
            yj[c] = ab_bf(xj[2 * c]) | ab_bf(xj[2 * c + 1]) << 16;
        if (d % 2)
            yj[d / 2] = ab_bf(xj[d - 1]);
    }
}

/* Pairs of rows: y[p * ys + c] = bf16(x[2p][c]) | bf16(x[2p + 1][c]) << 16 for
 * p < ceil(n / 2), c < d; a missing row 2p + 1 is 0, and so are the columns
 * [d, ys). */
AB_INLINE void ab_rpairs(const float *x, int64_t xs, int64_t n, int64_t d, int64_t ys,
                         uint32_t *y) {
    for (int64_t p = 0; 2 * p < n; p++) {
        const float *x0 = x + 2 * p * xs, *x1 = x0 + xs;
        uint32_t *yp = y + p * ys;
        if (2 * p + 1 < n)
            for (int64_t c = 0; c < d; c++)
                yp[c] = ab_bf(x0[c]) | ab_bf(x1[c]) << 16;
        else
            for (int64_t c = 0; c < d; c++)
                yp[c] = ab_bf(x0[c]);
        for (int64_t c = d; c < ys; c++)
            yp[c] = 0;
    }
}

/* Transposed pairs of n <= AB_BQ rows of d: y[c * AB_BQ + i] = the pair c
 * of row i, 0 for the rows [n, AB_BQ). */
AB_INLINE void ab_tpairs(const float *x, int64_t n, int64_t d, uint32_t *y) {
    const int64_t np = (d + 1) / 2;
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * d;
        for (int64_t c = 0; c < d / 2; c++)
            y[c * AB_BQ + i] = ab_bf(xi[2 * c]) | ab_bf(xi[2 * c + 1]) << 16;
        if (d % 2)
            y[d / 2 * AB_BQ + i] = ab_bf(xi[d - 1]);
    }
    for (int64_t c = 0; c < np; c++)
        for (int64_t i = n; i < AB_BQ; i++)
            y[c * AB_BQ + i] = 0;
}

/* ---- the block product, portable ---- */

/* Eight floats and eight 32-bit words (pairs of bf16), unaligned. */
typedef tg__v8f ab_pv;
typedef uint32_t ab_pu __attribute__((vector_size(32), aligned(4), may_alias));

/* R rows by V vectors of eight columns in R * V accumulators, each pair's
 * high products added before its low ones (vdpbf16ps' order); the B words
 * are widened once for the R rows. */
#define AB_MMP(R, V)                                                                       \
    AB_INLINE void ab_mmp_##R##_##V(const uint32_t *W, int64_t wr, int64_t wp, int64_t np, \
                                    const uint32_t *B, int64_t bs, float *out, int64_t os, \
                                    bool set) {                                            \
        ab_pv acc[R][V];                                                                   \
        for (int r = 0; r < R; r++)                                                        \
            for (int v = 0; v < V; v++)                                                    \
                acc[r][v] = set ? (ab_pv){0} : *(const ab_pv *)(out + r * os + 8 * v);     \
        for (int64_t p = 0; p < np; p++) {                                                 \
            ab_pv hi[V], lo[V];                                                            \
            for (int v = 0; v < V; v++) {                                                  \
                const ab_pu u = *(const ab_pu *)(B + p * bs + 8 * v);                      \
                hi[v] = (ab_pv)(u & 0xffff0000u);                                          \
                lo[v] = (ab_pv)(u << 16);                                                  \
            }                                                                              \
            for (int r = 0; r < R; r++) {                                                  \
                const uint32_t w = W[r * wr + p * wp];                                     \
                const float w1 = ab_float(w & 0xffff0000u), w0 = ab_float(w << 16);        \
                for (int v = 0; v < V; v++) {                                              \
                    acc[r][v] = acc[r][v] + w1 * hi[v];                                    \
                    acc[r][v] = acc[r][v] + w0 * lo[v];                                    \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        for (int r = 0; r < R; r++)                                                        \
            for (int v = 0; v < V; v++)                                                    \
                *(ab_pv *)(out + r * os + 8 * v) = acc[r][v];                              \
    }
AB_MMP(4, 2)
AB_MMP(1, 2)
AB_MMP(4, 1)
AB_MMP(1, 1)

/* out[r * os + c] (= with set, else +=) sum over p < np of W(r, p) . B[p * bs
 * + c] for r < nr, c < nc, W(r, p) = W[r * wr + p * wp]: sixteen and then
 * eight columns at a time in registers, the last few one by one; every
 * element summed in the same order whichever way. */
AB_INLINE void ab_mm_port(const uint32_t *W, int64_t wr, int64_t wp, int64_t nr, int64_t np,
                          const uint32_t *B, int64_t bs, int64_t nc, float *out, int64_t os,
                          bool set) {
    int64_t c0 = 0;
    for (; c0 + 16 <= nc; c0 += 16) {
        int64_t r = 0;
        for (; r + 4 <= nr; r += 4)
            ab_mmp_4_2(W + r * wr, wr, wp, np, B + c0, bs, out + r * os + c0, os, set);
        for (; r < nr; r++)
            ab_mmp_1_2(W + r * wr, wr, wp, np, B + c0, bs, out + r * os + c0, os, set);
    }
    for (; c0 + 8 <= nc; c0 += 8) {
        int64_t r = 0;
        for (; r + 4 <= nr; r += 4)
            ab_mmp_4_1(W + r * wr, wr, wp, np, B + c0, bs, out + r * os + c0, os, set);
        for (; r < nr; r++)
            ab_mmp_1_1(W + r * wr, wr, wp, np, B + c0, bs, out + r * os + c0, os, set);
    }
    for (int64_t r = 0; r < nr && c0 < nc; r++)
        for (int64_t c = c0; c < nc; c++) {
            float acc = set ? 0.0f : out[r * os + c];
            for (int64_t p = 0; p < np; p++) {
                const uint32_t w = W[r * wr + p * wp], b = B[p * bs + c];
                acc = acc + ab_float(w & 0xffff0000u) * ab_float(b & 0xffff0000u);
                acc = acc + ab_float(w << 16) * ab_float(b << 16);
            }
            out[r * os + c] = acc;
        }
}

/* ---- the block product, vdpbf16ps ---- */

#if AB_HAVE_AVX
/* R rows by V vectors of 16 columns in R * V registers; the last vector
 * masked by tail. B may be read up to V whole vectors. */
#define AB_MMK(R, V)                                                                           \
    AB_AVX static inline __attribute__((always_inline)) void ab_mmk_##R##_##V(                 \
        const uint32_t *W, int64_t wr, int64_t wp, int64_t np, const uint32_t *B, int64_t bs,  \
        float *out, int64_t os, __mmask16 tail, bool set) {                                    \
        __m512 acc[R][V];                                                                      \
        for (int r = 0; r < R; r++)                                                            \
            for (int v = 0; v < V; v++)                                                        \
                acc[r][v] = set ? _mm512_setzero_ps()                                          \
                                : _mm512_maskz_loadu_ps(v == V - 1 ? tail : (__mmask16)0xffff, \
                                                        out + r * os + 16 * v);                \
        for (int64_t p = 0; p < np; p++) {                                                     \
            __m512i b[V];                                                                      \
            for (int v = 0; v < V; v++)                                                        \
                b[v] = _mm512_loadu_si512((const void *)(B + p * bs + 16 * v));                \
            for (int r = 0; r < R; r++) {                                                      \
                const __m512i w = _mm512_set1_epi32((int)W[r * wr + p * wp]);                  \
                for (int v = 0; v < V; v++)                                                    \
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)w, (__m512bh)b[v]);      \
            }                                                                                  \
        }                                                                                      \
        for (int r = 0; r < R; r++)                                                            \
            for (int v = 0; v < V; v++)                                                        \
                _mm512_mask_storeu_ps(out + r * os + 16 * v,                                   \
                                      v == V - 1 ? tail : (__mmask16)0xffff, acc[r][v]);       \
    }
AB_MMK(4, 4)
AB_MMK(1, 4)
AB_MMK(4, 3)
AB_MMK(1, 3)
AB_MMK(8, 2)
AB_MMK(1, 2)
AB_MMK(8, 1)
AB_MMK(1, 1)

/* ab_mm_port's product with vdpbf16ps: 64 columns at a time, in blocks of
 * rows (more rows where there are fewer columns). */
#define AB_ROWS(R, V)                                                                     \
    do {                                                                                  \
        for (; r + R <= nr; r += R)                                                       \
            ab_mmk_##R##_##V(W + r * wr, wr, wp, np, Bc, bs, oc + r * os, os, tail, set); \
        for (; r < nr; r++)                                                               \
            ab_mmk_1_##V(W + r * wr, wr, wp, np, Bc, bs, oc + r * os, os, tail, set);     \
    } while (0)
AB_AVX static void ab_mm_avx(const uint32_t *W, int64_t wr, int64_t wp, int64_t nr, int64_t np,
                             const uint32_t *B, int64_t bs, int64_t nc, float *out, int64_t os,
                             bool set) {
    for (int64_t c0 = 0; c0 < nc; c0 += 64) {
        const int64_t n = AB_MIN(64, nc - c0), nv = (n + 15) / 16;
        const __mmask16 tail = (__mmask16)(n % 16 ? (1u << (n % 16)) - 1 : 0xffffu);
        const uint32_t *Bc = B + c0;
        float *oc = out + c0;
        int64_t r = 0;
        if (nv == 4)
            AB_ROWS(4, 4);
        else if (nv == 3)
            AB_ROWS(4, 3);
        else if (nv == 2)
            AB_ROWS(8, 2);
        else
            AB_ROWS(8, 1);
    }
}
#endif

/* ---- the softmax parts (f32, shared by both paths) ---- */

typedef tg__v8f ab_v;
typedef tg__v8i ab_vi;
/* Lanes where m holds, a; else b (a macro: a function passing 32-byte
 * vectors would change the ABI in the baseline build). */
#define AB_SEL(m, a, b) ((ab_v)(((ab_vi)(a) & (m)) | ((ab_vi)(b) & ~(m))))

/* bf16 of eight floats; pairs of them. */
typedef uint16_t ab_vh __attribute__((vector_size(16)));
typedef uint16_t ab_vh2 __attribute__((vector_size(32)));
typedef uint32_t ab_vu __attribute__((vector_size(32)));
/* ab_bf over eight lanes (the portable path's rounding). */
AB_INLINE void ab_cvt8_port(const ab_v *x, ab_vh *y) {
    const ab_vu u = (ab_vu)*x;
    const ab_vu rn = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, nan = (u >> 16) | 0x40u;
    const ab_vu isnan = (ab_vu)((u & 0x7fffffffu) > 0x7f800000u);
    *y = __builtin_convertvector((nan & isnan) | (rn & ~isnan), ab_vh);
}
/* Rows of floats in pairs along each row (ab_cpairs), the portable way. */
AB_INLINE void ab_cpairs_port(const float *x, int64_t xs, int64_t n, int64_t d, int64_t dp2,
                              uint32_t *y) {
    ab_cpairs(x, xs, n, d, dp2, y);
}
#if AB_HAVE_AVX
/* The same with AVX512_BF16's conversions (vcvtneps2bf16: nearest even as
 * ab_bf, but denormal inputs taken as 0). */
AB_AVX AB_INLINE void ab_cvt8_avx(const ab_v *x, ab_vh *y) {
    __m256 v;
    memcpy(&v, x, sizeof v);
    const __m128bh h = _mm256_cvtneps_pbh(v);
    memcpy(y, &h, sizeof *y);
}
AB_AVX AB_INLINE void ab_cpairs_avx(const float *x, int64_t xs, int64_t n, int64_t d, int64_t dp2,
                                    uint32_t *y) {
    for (int64_t j = 0; j < n; j++) {
        const float *xj = x + j * xs;
        uint32_t *yj = y + j * dp2;
        int64_t c = 0;
        for (; c + 16 <= d; c += 16) {
            const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(xj + c));
            _mm256_storeu_si256((__m256i *)(void *)(yj + c / 2), (__m256i)h);
        }
        for (; c + 1 < d; c += 2)
            yj[c / 2] = ab_bf(xj[c]) | ab_bf(xj[c + 1]) << 16;
        if (d % 2)
            yj[d / 2] = ab_bf(xj[d - 1]);
    }
}
#endif

/* One query tile's online softmax over one key tile, in the scores'
 * transpose ST (row j: key k0 + j; lane i: query q0 + i; AB_BQ lanes, nk
 * rows): the masked scores scaled in place, then p = exp(scale s - m_new)
 * (0 where causal masks it) rounded to bf16 into Pp in pairs of keys (P V's
 * W; a missing key nk, when odd, is 0); m, l (the unrounded p summed) and
 * alpha = exp(m_old - m_new) (al) per lane. A lane that has seen no key
 * keeps m = -inf, l = 0 (its maximum is taken as 0 for the exps). */
#define AB_SOFTMAX(P, IATTR)                                                                      \
    IATTR AB_INLINE void ab_fwd_softmax_##P(const ab_geom *g, float *ST, int64_t q0, int64_t k0,  \
                                            int64_t nk, float *m, float *l, float *al,            \
                                            uint32_t *Pp) {                                       \
        const ab_v sc = (ab_v){0} + g->scale, ninf = (ab_v){0} - INFINITY;                        \
        for (int h = 0; h < AB_BQ; h += 8) {                                                      \
            ab_vi last; /* the last key of each lane's query, relative to k0 */                   \
            for (int c = 0; c < 8; c++)                                                           \
                last[c] = g->causal ? (int32_t)(q0 + h + c - k0) : (int32_t)nk;                   \
            /* the rows past the lanes' last key are masked in all eight lanes */                 \
            const int64_t je = g->causal ? AB_MIN(nk, q0 + h + 8 - k0) : nk;                      \
            ab_v mx = *(ab_v *)(m + h);                                                           \
            for (int64_t j = 0; j < je; j++) {                                                    \
                ab_v *ps = (ab_v *)(ST + j * AB_BQ + h);                                          \
                const ab_v s = AB_SEL((ab_vi){0} + (int32_t)j <= last, *ps * sc, ninf);           \
                *ps = s;                                                                          \
                mx = AB_SEL(s > mx, s, mx);                                                       \
            }                                                                                     \
            const ab_v mn = AB_SEL(mx == ninf, (ab_v){0}, mx);                                    \
            ab_v a = *(ab_v *)(m + h) - mn, sum = {0};                                            \
            tg__vexp8(&a);                                                                        \
            for (int64_t j = 0; j < nk; j += 2) {                                                 \
                ab_vh r[2];                                                                       \
                for (int x = 0; x < 2; x++) {                                                     \
                    ab_v e = {0};                                                                 \
                    if (j + x < je) {                                                             \
                        e = *(const ab_v *)(ST + (j + x) * AB_BQ + h) - mn;                       \
                        tg__vexp8(&e);                                                            \
                        sum += e;                                                                 \
                    }                                                                             \
                    ab_cvt8_##P(&e, &r[x]);                                                       \
                }                                                                                 \
                const ab_vh2 z = __builtin_shufflevector(r[0], r[1], 0, 8, 1, 9, 2, 10, 3, 11, 4, \
                                                         12, 5, 13, 6, 14, 7, 15);                \
                memcpy(Pp + j / 2 * AB_BQ + h, &z, sizeof z);                                     \
            }                                                                                     \
            *(ab_v *)(l + h) = *(ab_v *)(l + h) * a + sum;                                        \
            *(ab_v *)(m + h) = mx;                                                                \
            *(ab_v *)(al + h) = a;                                                                \
        }                                                                                         \
    }
AB_SOFTMAX(port, )
#if AB_HAVE_AVX
AB_SOFTMAX(avx, AB_AVX)
#endif

/* A backward block's P and dS, transposed (row j: key k0 + j; lane i: query
 * i0 + i), from the scores ST and dPT = dO . v: p = exp(scale s - lse) and
 * ds = p (dp - D) scale, both 0 where masked and in the lanes [ni, AB_BQ),
 * rounded to bf16 into the block products' operands: Pb and Sb (p and ds,
 * pairs of queries along each key's row: dV's and dK's W) and Sp (ds, pairs
 * of keys: dQ's W; a missing key nk, when odd, is 0). */
#define AB_PDS(P, IATTR)                                                                           \
    IATTR AB_INLINE void ab_bwd_pds_##P(const ab_geom *g, const float *ST, const float *dPT,       \
                                        int64_t i0, int64_t ni, int64_t k0, int64_t nk,            \
                                        const float *lsev, const float *Dv, uint32_t *Pb,          \
                                        uint32_t *Sb, uint32_t *Sp) {                              \
        const ab_v sc = (ab_v){0} + g->scale;                                                      \
        for (int h = 0; h < AB_BQ; h += 8) {                                                       \
            ab_vi last;                                                                            \
            for (int c = 0; c < 8; c++)                                                            \
                last[c] = h + c >= ni ? -1 : g->causal ? (int32_t)(i0 + h + c - k0) : (int32_t)nk; \
            const ab_v li = *(const ab_v *)(lsev + h), di = *(const ab_v *)(Dv + h);               \
            /* the rows past the lanes' last key are masked in all eight lanes */                  \
            int64_t je = g->causal ? AB_MIN(nk, i0 + h + 8 - k0) : nk;                             \
            je = h >= ni ? 0 : je < 0 ? 0 : je;                                                    \
            for (int64_t j = 0; j < nk; j += 2) {                                                  \
                ab_vh rp[2], rs[2];                                                                \
                for (int x = 0; x < 2; x++) {                                                      \
                    ab_v p = {0}, ds = {0};                                                        \
                    if (j + x < je) {                                                              \
                        p = *(const ab_v *)(ST + (j + x) * AB_BQ + h) * sc - li;                   \
                        tg__vexp8(&p);                                                             \
                        ds = p * (*(const ab_v *)(dPT + (j + x) * AB_BQ + h) - di) * sc;           \
                        const ab_vi keep = (ab_vi){0} + (int32_t)(j + x) <= last;                  \
                        p = (ab_v)((ab_vi)p & keep);                                               \
                        ds = (ab_v)((ab_vi)ds & keep);                                             \
                    }                                                                              \
                    ab_cvt8_##P(&p, &rp[x]);                                                       \
                    ab_cvt8_##P(&ds, &rs[x]);                                                      \
                }                                                                                  \
                const ab_vh2 z = __builtin_shufflevector(rs[0], rs[1], 0, 8, 1, 9, 2, 10, 3, 11,   \
                                                         4, 12, 5, 13, 6, 14, 7, 15);              \
                memcpy(Sp + j / 2 * AB_BQ + h, &z, sizeof z);                                      \
                for (int x = 0; x < 2 && j + x < nk; x++) {                                        \
                    memcpy(Pb + (j + x) * (AB_BQ / 2) + h / 2, &rp[x], sizeof rp[x]);              \
                    memcpy(Sb + (j + x) * (AB_BQ / 2) + h / 2, &rs[x], sizeof rs[x]);              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
AB_PDS(port, )
#if AB_HAVE_AVX
AB_PDS(avx, AB_AVX)
#endif

/* Per query lane of a block: lse, and D_i = sum_c bf16(dO_ic) o_ic in f32
 * (eight lanes of columns, then the lanes in a fixed order, then the last
 * columns in order); 0 in the lanes [ni, AB_BQ). */
AB_INLINE void ab_bwd_rowstats(const ab_geom *g, int64_t r0, int64_t ni, const float *go,
                               const float *o, const float *lse, float *lsev, float *Dv) {
    const int64_t d = g->d, d8 = d - d % 8;
    for (int64_t i = 0; i < AB_BQ; i++) {
        float s = 0;
        if (i < ni) {
            const float *gi = go + (r0 + i) * d, *oi = o + (r0 + i) * d;
            ab_v acc = {0};
            for (int64_t c = 0; c < d8; c += 8) {
                ab_v gr;
                for (int x = 0; x < 8; x++)
                    gr[x] = ab_float(ab_bf(gi[c + x]) << 16);
                acc += gr * *(const ab_v *)(oi + c);
            }
            s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (int64_t c = d8; c < d; c++)
                s += ab_float(ab_bf(gi[c]) << 16) * oi[c];
        }
        Dv[i] = s;
        lsev[i] = i < ni ? lse[r0 + i] : 0;
    }
}

/* The keys below this bound are the only ones queries [q0, q0 + nq) see. */
static inline int64_t ab_kend(const ab_geom *g, int64_t q0, int64_t nq) {
    return g->causal && q0 + nq < g->tk ? q0 + nq : g->tk;
}

/* ---- the tasks, once per block product ---- */

#define AB_TASKS(P, ATTR, IATTR, MM)                                                              \
    /* The forward of ng query tiles of BH row b from tile qt0 on, each with                      \
     * its own online softmax, walking the key tiles once (each key tile                          \
     * packed once for all of them). */                                                           \
    ATTR static void ab_fwd_task_##P(const ab_geom *g, int64_t b, int64_t qt0, int64_t ng,        \
                                     const float *q, const float *k, const float *v, float *o,    \
                                     float *lse) {                                                \
        const int64_t d = g->d, dp2 = g->dp2, dv = g->dv, q00 = qt0 * AB_BQ;                      \
        const int64_t ql = AB_MIN(g->tq, (qt0 + ng) * AB_BQ), kend = ab_kend(g, q00, ql - q00);   \
        uint32_t QT[AB_FWD_GROUP][AB_DMAX / 2 * AB_BQ], Kr[AB_BK * AB_DMAX / 2];                  \
        uint32_t Vp[AB_BK / 2 * AB_DMAX], Pp[AB_BK / 2 * AB_BQ];                                  \
        float ST[AB_BK * AB_BQ], m[AB_FWD_GROUP * AB_BQ], l[AB_FWD_GROUP * AB_BQ], al[AB_BQ];     \
        for (int64_t t = 0; t < ng && q00 + t * AB_BQ < g->tq; t++) {                             \
            const int64_t q0 = q00 + t * AB_BQ;                                                   \
            ab_tpairs(q + (b * g->tq + q0) * d, AB_MIN(AB_BQ, g->tq - q0), d, QT[t]);             \
        }                                                                                         \
        for (int64_t i = 0; i < AB_FWD_GROUP * AB_BQ; i++)                                        \
            m[i] = -INFINITY, l[i] = 0;                                                           \
        for (int64_t c = 0; c < (ql - q00) * d; c++)                                              \
            o[(b * g->tq + q00) * d + c] = 0;                                                     \
        for (int64_t k0 = 0; k0 < kend; k0 += AB_BK) {                                            \
            const int64_t nkt = AB_MIN(AB_BK, kend - k0), kr = (b * g->tk + k0) * d;              \
            ab_cpairs_##P(k + kr, d, nkt, d, dp2, Kr);                                            \
            ab_rpairs(v + kr, d, nkt, d, dv, Vp);                                                 \
            for (int64_t t = 0; t < ng; t++) {                                                    \
                const int64_t q0 = q00 + t * AB_BQ, nq = AB_MIN(AB_BQ, g->tq - q0);               \
                const int64_t ke = nq > 0 ? ab_kend(g, q0, nq) : 0, row0 = b * g->tq + q0;        \
                if (nq <= 0 || k0 >= ke)                                                          \
                    continue;                                                                     \
                const int64_t nk = AB_MIN(AB_BK, ke - k0);                                        \
                MM(Kr, dp2, 1, nk, dp2, QT[t], AB_BQ, AB_BQ, ST, AB_BQ, true);                    \
                ab_fwd_softmax_##P(g, ST, q0, k0, nk, m + t * AB_BQ, l + t * AB_BQ, al, Pp);      \
                for (int64_t i = 0; i < nq; i++)                                                  \
                    if (al[i] != 1)                                                               \
                        for (int64_t c = 0; c < d; c++)                                           \
                            o[(row0 + i) * d + c] *= al[i];                                       \
                MM(Pp, 1, AB_BQ, nq, (nk + 1) / 2, Vp, dv, d, o + row0 * d, d, false);            \
            }                                                                                     \
        }                                                                                         \
        for (int64_t i = 0; i < ql - q00; i++) {                                                  \
            const int64_t r = b * g->tq + q00 + i;                                                \
            const float li = l[i], inv = 1.0f / li;                                               \
            for (int64_t c = 0; c < d; c++)                                                       \
                o[r * d + c] *= inv;                                                              \
            lse[r] = (float)((double)m[i] + log((double)li));                                     \
        }                                                                                         \
    }                                                                                             \
    /* One backward block: queries [i0, i0 + ni) of BH row b against the nk                       \
     * keys from k0, whose tile is packed in Kr, Vr (pairs along rows) and Kp                     \
     * (pairs of rows). With kv, dk and dv (the tile's rows) += the block's                       \
     * terms; with dq, dq's rows += its terms. */                                                 \
    IATTR static inline __attribute__((always_inline)) void ab_bwd_block_##P(                     \
        const ab_geom *g, int64_t b, int64_t i0, int64_t ni, int64_t k0, int64_t nk,              \
        const uint32_t *Kr, const uint32_t *Vr, const uint32_t *Kp, const float *go,              \
        const float *q, const float *o, const float *lse, float *dq, float *dk, float *dv) {      \
        const int64_t d = g->d, dp2 = g->dp2, r0 = b * g->tq + i0, kr = (b * g->tk + k0) * d;     \
        uint32_t QT[AB_DMAX / 2 * AB_BQ], GT[AB_DMAX / 2 * AB_BQ];                                \
        uint32_t Qp[AB_BQ / 2 * AB_DMAX], Gp[AB_BQ / 2 * AB_DMAX];                                \
        uint32_t Pb[AB_BK * AB_BQ / 2], Sb[AB_BK * AB_BQ / 2], Sp[AB_BK / 2 * AB_BQ];             \
        float ST[AB_BK * AB_BQ], dPT[AB_BK * AB_BQ], lsev[AB_BQ], Dv[AB_BQ];                      \
        ab_tpairs(q + r0 * d, ni, d, QT);                                                         \
        ab_tpairs(go + r0 * d, ni, d, GT);                                                        \
        ab_bwd_rowstats(g, r0, ni, go, o, lse, lsev, Dv);                                         \
        MM(Kr, dp2, 1, nk, dp2, QT, AB_BQ, AB_BQ, ST, AB_BQ, true);                               \
        MM(Vr, dp2, 1, nk, dp2, GT, AB_BQ, AB_BQ, dPT, AB_BQ, true);                              \
        ab_bwd_pds_##P(g, ST, dPT, i0, ni, k0, nk, lsev, Dv, Pb, Sb, Sp);                         \
        if (dk) {                                                                                 \
            ab_rpairs(q + r0 * d, d, ni, d, g->dv, Qp);                                           \
            ab_rpairs(go + r0 * d, d, ni, d, g->dv, Gp);                                          \
            MM(Pb, AB_BQ / 2, 1, nk, (ni + 1) / 2, Gp, g->dv, d, dv + kr, d, false);              \
            MM(Sb, AB_BQ / 2, 1, nk, (ni + 1) / 2, Qp, g->dv, d, dk + kr, d, false);              \
        }                                                                                         \
        if (dq) {                                                                                 \
            MM(Sp, 1, AB_BQ, ni, (nk + 1) / 2, Kp, g->dv, d, dq + r0 * d, d, false);              \
        }                                                                                         \
    }                                                                                             \
    /* The key tile [k0, k0 + nk) of BH row b packed for the block products. */                   \
    IATTR static inline __attribute__((always_inline)) void ab_pack_keys_##P(                     \
        const ab_geom *g, int64_t b, int64_t k0, int64_t nk, const float *k, const float *v,      \
        uint32_t *Kr, uint32_t *Vr, uint32_t *Kp) {                                               \
        const int64_t d = g->d, kr = (b * g->tk + k0) * d;                                        \
        ab_cpairs_##P(k + kr, d, nk, d, g->dp2, Kr);                                              \
        ab_cpairs_##P(v + kr, d, nk, d, g->dp2, Vr);                                              \
        ab_rpairs(k + kr, d, nk, d, g->dv, Kp);                                                   \
    }                                                                                             \
    /* dk and dv of the key tile [k0, k0 + nk) of BH row b over its blocks of                     \
     * queries; with dq, also dq's terms (the one-pass backward). Causal, a                       \
     * block's keys stop at its last query. */                                                    \
    ATTR static void ab_kv_tile_##P(const ab_geom *g, int64_t b, int64_t k0, int64_t nk,          \
                                    const float *go, const float *q, const float *k,              \
                                    const float *v, const float *o, const float *lse, float *dq,  \
                                    float *dk, float *dv) {                                       \
        uint32_t Kr[AB_BK * AB_DMAX / 2], Vr[AB_BK * AB_DMAX / 2], Kp[AB_BK / 2 * AB_DMAX];       \
        const int64_t kr = (b * g->tk + k0) * g->d;                                               \
        ab_pack_keys_##P(g, b, k0, nk, k, v, Kr, Vr, Kp);                                         \
        for (int64_t c = 0; c < nk * g->d; c++)                                                   \
            dk[kr + c] = dv[kr + c] = 0;                                                          \
        for (int64_t i0 = g->causal ? k0 : 0; i0 < g->tq; i0 += AB_BQ) {                          \
            const int64_t ni = AB_MIN(AB_BQ, g->tq - i0);                                         \
            const int64_t nb = g->causal ? AB_MIN(nk, i0 + ni - k0) : nk;                         \
            ab_bwd_block_##P(g, b, i0, ni, k0, nb, Kr, Vr, Kp, go, q, o, lse, dq, dk, dv);        \
        }                                                                                         \
    }                                                                                             \
    /* dq of one query tile (the two-pass backward's first pass): the key                         \
     * tiles in the order the one-pass backward adds them. */                                     \
    ATTR static void ab_dq_task_##P(const ab_geom *g, int64_t task, const float *go,              \
                                    const float *q, const float *k, const float *v,               \
                                    const float *o, const float *lse, float *dq) {                \
        const int64_t nqt = (g->tq + AB_BQ - 1) / AB_BQ, b = task / nqt;                          \
        const int64_t q0 = task % nqt * AB_BQ, nq = AB_MIN(AB_BQ, g->tq - q0);                    \
        const int64_t kend = ab_kend(g, q0, nq);                                                  \
        uint32_t Kr[AB_BK * AB_DMAX / 2], Vr[AB_BK * AB_DMAX / 2], Kp[AB_BK / 2 * AB_DMAX];       \
        for (int64_t c = 0; c < nq * g->d; c++)                                                   \
            dq[(b * g->tq + q0) * g->d + c] = 0;                                                  \
        for (int64_t k0 = 0; k0 < kend; k0 += AB_BK) {                                            \
            const int64_t nk = AB_MIN(AB_BK, kend - k0);                                          \
            ab_pack_keys_##P(g, b, k0, nk, k, v, Kr, Vr, Kp);                                     \
            ab_bwd_block_##P(g, b, q0, nq, k0, nk, Kr, Vr, Kp, go, q, o, lse, dq, NULL, NULL);    \
        }                                                                                         \
    }                                                                                             \
    ATTR static void ab_dkv_task_##P(const ab_geom *g, int64_t task, const float *go,             \
                                     const float *q, const float *k, const float *v,              \
                                     const float *o, const float *lse, float *dk, float *dv) {    \
        const int64_t nkt = (g->tk + AB_BK - 1) / AB_BK, b = task / nkt;                          \
        const int64_t k0 = task % nkt * AB_BK;                                                    \
        ab_kv_tile_##P(g, b, k0, AB_MIN(AB_BK, g->tk - k0), go, q, k, v, o, lse, NULL, dk, dv);   \
    }                                                                                             \
    ATTR static void ab_bwd_row_task_##P(                                                         \
        const ab_geom *g, int64_t b, const float *go, const float *q, const float *k,             \
        const float *v, const float *o, const float *lse, float *dq, float *dk, float *dv) {      \
        for (int64_t c = 0; c < g->tq * g->d; c++)                                                \
            dq[b * g->tq * g->d + c] = 0;                                                         \
        for (int64_t k0 = 0; k0 < g->tk; k0 += AB_BK)                                             \
            ab_kv_tile_##P(g, b, k0, AB_MIN(AB_BK, g->tk - k0), go, q, k, v, o, lse, dq, dk, dv); \
    }

AB_TASKS(port, TG__CPU_CLONES, , ab_mm_port)
#if AB_HAVE_AVX
AB_TASKS(avx, AB_AVX, AB_AVX, ab_mm_avx)
#endif

/* ---- dispatch ---- */

/* -1: not chosen yet; else a tg__cpu_attn_bf16_path. */
static int ab_path_now = -1;

bool tg__cpu_attn_bf16_native(void) { return AB_HAVE_AVX && tg__cpu_avx512_bf16(); }

static int ab_path(void) {
    int p = __atomic_load_n(&ab_path_now, __ATOMIC_RELAXED);
    if (p < 0) {
        const char *e = getenv("TG_ATTN_BF16");
        p = e && !strcmp(e, "portable")  ? TG__ATTN_BF16_PORTABLE
            : tg__cpu_attn_bf16_native() ? TG__ATTN_BF16_AVX512
                                         : TG__ATTN_BF16_PORTABLE;
        __atomic_store_n(&ab_path_now, p, __ATOMIC_RELAXED);
    }
    return p;
}

int tg__cpu_attn_bf16_set_path(int path) {
    const int prev = ab_path();
    const int p = path == TG__ATTN_BF16_AVX512 && tg__cpu_attn_bf16_native()
                      ? TG__ATTN_BF16_AVX512
                      : TG__ATTN_BF16_PORTABLE;
    __atomic_store_n(&ab_path_now, p, __ATOMIC_RELAXED);
    return prev;
}

bool tg__cpu_attn_bf16_fits(int64_t d) { return d >= 1 && d <= AB_DMAX; }

static ab_geom ab_geom_of(int64_t bh, int64_t tq, int64_t tk, int64_t d, double scale,
                          bool causal) {
    return (ab_geom){.bh = bh,
                     .tq = tq,
                     .tk = tk,
                     .d = d,
                     .dp2 = (d + 1) / 2,
                     .dv = (d + 15) / 16 * 16,
                     .scale = (float)scale,
                     .causal = causal};
}

#if AB_HAVE_AVX
#define AB_CALL(name, ...)                 \
    do {                                   \
        if (avx)                           \
            ab_##name##_avx(__VA_ARGS__);  \
        else                               \
            ab_##name##_port(__VA_ARGS__); \
    } while (0)
#else
#define AB_CALL(name, ...) ab_##name##_port(__VA_ARGS__)
#endif

void tg__cpu_attn_bf16_fwd(int64_t bh, int64_t tq, int64_t tk, int64_t d, double scale, bool causal,
                           bool par, const float *q, const float *k, const float *v, float *o,
                           float *lse) {
    const ab_geom gg = ab_geom_of(bh, tq, tk, d, scale, causal), *g = &gg;
    const bool avx = ab_path() == TG__ATTN_BF16_AVX512;
    (void)avx;
    /* as cpu_attn.c: fewer query tiles per task when that leaves under
     * AB_ROWS_PER_THREAD tasks per thread; the grouping changes no bit */
    const int64_t nqt = (tq + AB_BQ - 1) / AB_BQ;
    const int64_t want = AB_ROWS_PER_THREAD * (par ? omp_get_max_threads() : 1);
    int64_t ng = AB_FWD_GROUP;
    while (ng > 1 && bh * ((nqt + ng - 1) / ng) < want)
        ng /= 2;
    const int64_t per = (nqt + ng - 1) / ng, ntask = bh * per;
    TG__CPU_FOR(par, "omp parallel for schedule(static, 1)",
                for (int64_t t = 0; t < ntask; t++)
                    AB_CALL(fwd_task, g, t / per, t % per * ng, ng, q, k, v, o, lse););
}

void tg__cpu_attn_bf16_bwd(int64_t bh, int64_t tq, int64_t tk, int64_t d, double scale, bool causal,
                           bool par, const float *go, const float *q, const float *k,
                           const float *v, const float *o, const float *lse, float *dq, float *dk,
                           float *dv) {
    const ab_geom gg = ab_geom_of(bh, tq, tk, d, scale, causal), *g = &gg;
    const bool avx = ab_path() == TG__ATTN_BF16_AVX512;
    (void)avx;
    const int64_t nq = bh * ((tq + AB_BQ - 1) / AB_BQ), nk = bh * ((tk + AB_BK - 1) / AB_BK);
    if (bh >= AB_ROWS_PER_THREAD * (par ? omp_get_max_threads() : 1)) {
        TG__CPU_FOR(par, "omp parallel for schedule(static, 1)",
                    for (int64_t b = 0; b < bh; b++)
                        AB_CALL(bwd_row_task, g, b, go, q, k, v, o, lse, dq, dk, dv););
        return;
    }
    TG__CPU_FOR(par, "omp parallel for schedule(static, 1)",
                for (int64_t t = 0; t < nq; t++) AB_CALL(dq_task, g, t, go, q, k, v, o, lse, dq););
    TG__CPU_FOR(par, "omp parallel for schedule(static, 1)",
                for (int64_t t = 0; t < nk; t++)
                    AB_CALL(dkv_task, g, t, go, q, k, v, o, lse, dk, dv););
}
