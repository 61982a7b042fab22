/*
 * kernels/cpu/cpu_attn.c: fused scaled dot-product attention, forward and
 * backward, over tiles with an online softmax (the flash-attention scheme).
 *
 * Operands are contiguous (the runtime makes them so): q (BH, T_q, D), k and
 * v (BH, T_k, D) with BH the product of the leading dims, the output like q
 * and lse (BH, T_q). A forward task is up to ATTN_FWD_GROUP tiles of ATTN_BQ
 * queries of one BH row; a backward task is a whole BH row (one pass) or, with
 * fewer than ATTN_ROWS_PER_THREAD rows per thread, a tile of queries (the dq
 * pass) then a tile of ATTN_BK keys (the dk/dv pass). Tasks are dealt
 * round-robin to the threads. Each task owns the output rows it writes, so no
 * two threads write the same element, and every sum runs in one fixed order:
 * how the work is grouped into tasks changes no bit (test_attention checks
 * both backwards and the thread counts against each other), so the results
 * depend on neither the thread count nor the schedule. Scratch is a few
 * small arrays on the stack (at most 48 KiB per thread in f32, 96 KiB in
 * f64: the one-pass backward's): no heap, and nothing of size T_q x T_k.
 *
 * Forward, per query row i: for each tile of keys, the scores s_j = scale *
 * q_i . k_j, the running maximum m and sum l of exp(s - m), and the output
 * accumulated as o_i = o_i * exp(m_old - m_new) + sum_j exp(s_j - m_new) v_j;
 * at the end o_i /= l and lse_i = m + log(l) is saved for backward.
 *
 * Backward recomputes p_ij = exp(scale * q_i . k_j - lse_i) tile by tile.
 * With D_i = g_i . o_i (= sum_j p_ij dp_ij) and dp_ij = g_i . v_j:
 * ds_ij = p_ij (dp_ij - D_i), dq_i = scale sum_j ds_ij k_j, dk_j = scale
 * sum_i ds_ij q_i and dv_j = sum_i p_ij g_i. The one-pass backward walks a
 * row's key tiles and, for each, its blocks of queries: p and ds once per
 * block, dk and dv summed over the blocks, dq over the key tiles in the order
 * the dq pass sums them. The two-pass one (dq by query tiles, then dk and dv
 * by key tiles) computes p and ds twice but splits a row between tasks.
 *
 * Causal (ints[0] = 1) keeps keys j <= i (top-left aligned): the loops stop
 * at the diagonal, and the block products skip the zero terms of the
 * diagonal blocks (attn_cmask), so a causal call does about half the work.
 *
 * Every product is a block product (attn_mm): a block of scores or
 * probabilities times rows of k, v, q or g, or a block of q or g times a
 * transposed key tile for the scores, with four (x86-64-v4 clone) or two
 * rows of four vectors of outputs kept in registers while the sum runs.
 *
 * Rounding is the same in every clone (baseline, x86-64-v3, x86-64-v4):
 * products are a multiply then an add (no contraction, no FMA), sums over a
 * row run lane-wise over 32-byte vectors then across the lanes in a fixed
 * order (never in the compiler's vector width), and the f32 exp is our own
 * (cpu_vexp.h, shared with cross-entropy), not libmvec's, whose SSE4 and AVX2 versions
 * differ in the last bit; so f32 results are the same bits on every x86-64
 * CPU. f64 takes libm's scalar exp, as glibc picks it for the CPU. Speed:
 * docs/performance/attention.md, "Attention". Under autocast (TG_KP_ATTN_BF16) f32
 * calls with head dims up to 128 run cpu_attn_bf16.c instead.
 */
#include <math.h>

#include "cpu.h"
#include "cpu_vexp.h"

/* Queries per tile (a tile is a task of the dq pass), keys per tile (a task
 * of the dk/dv pass): a key tile of 64 rows of D <= 128 floats stays in L2
 * while the task's queries walk it. */
#define ATTN_BQ 32
#define ATTN_BK 64
/* Columns of a key tile transposed at a time: the score loops' scratch
 * stays at ATTN_DC x ATTN_BK whatever the head dim. */
#define ATTN_DC 64
/* The block product's vectors: 32 bytes (an AVX2 register; two SSE ones in
 * the baseline clone), through GCC's vector extension, unaligned and allowed
 * to alias the floats they are read from. A product is a multiply and an
 * add, as in scalar code (no contraction), and every sum over a row runs in
 * an order fixed by the source (lanes of 32-byte vectors, then the lanes in
 * a fixed order), never by the clone's vector width: every clone rounds
 * alike. (64-byte vectors in the x86-64-v4 clone were slower on an AVX-512
 * CPU that runs them as two halves: docs/performance/attention.md.) */
#define ATTN_VBYTES 32
typedef tg__v8f attn_v_float;
typedef double attn_v_double
    __attribute__((vector_size(ATTN_VBYTES), aligned(sizeof(double)), may_alias));
typedef tg__v8i attn_vi32;
#define ATTN_LANES(T) ((int64_t)(ATTN_VBYTES / sizeof(T)))
/* n rounded up to whole vectors of T. */
#define ATTN_VCEIL(T, n) (((n) + ATTN_LANES(T) - 1) / ATTN_LANES(T) * ATTN_LANES(T))

/* exp of eight floats, the same bits on every CPU and in every clone
 * (cpu_vexp.h). */
static inline void attn_vexp_float(attn_v_float *px) { tg__vexp8(px); }
/* f64 (the tests' and gradcheck's type): libm's exp, lane by lane. */
static inline void attn_vexp_double(attn_v_double *x) {
    for (int i = 0; i < 4; i++)
        (*x)[i] = exp((*x)[i]);
}
static inline float attn_hsum_float(const attn_v_float *pv) {
    const attn_v_float v = *pv;
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}
static inline double attn_hsum_double(const attn_v_double *pv) {
    const attn_v_double v = *pv;
    return (v[0] + v[1]) + (v[2] + v[3]);
}
/* Below this many multiply-adds (BH * T_q * T_k * D) a call stays on the
 * calling thread. */
#define ATTN_PAR_MIN (1 << 18)
/* The backward runs in one pass when there are at least this many BH rows
 * per thread (a task is a whole row there). */
#define ATTN_ROWS_PER_THREAD 4
/* Query tiles per task of the forward, at most. */
#define ATTN_FWD_GROUP 4
/* The helpers are inlined into each clone of the tasks that call them (a
 * helper left out of line would run its baseline code). */
#define ATTN_INLINE static inline __attribute__((always_inline))
/* The tasks are compiled for x86-64-v4 (AVX-512: 32 vector registers, which
 * the block products' wide tile uses) besides cpu.h's x86-64-v3 and baseline
 * clones, where cpu.h compiles clones at all. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define ATTN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define ATTN_WIDE() (__builtin_cpu_supports("x86-64-v4") > 0)
#else
#define ATTN_CLONES TG__CPU_CLONES
#define ATTN_WIDE() false
#endif

typedef struct attn_geom {
    int64_t bh, tq, tk, d;
    double scale;
    bool causal;
    bool wide; /* the block products' 4-row tile (attn_mm) */
} attn_geom;

/* How many keys of the tile [k0, k0 + nk) query i attends to. */
static inline int64_t attn_nvalid(const attn_geom *g, int64_t i, int64_t k0, int64_t nk) {
    if (!g->causal)
        return nk;
    const int64_t n = i + 1 - k0;
    return n < 0 ? 0 : (n < nk ? n : nk);
}

/* The keys below this bound are the only ones queries [q0, q0 + nq) see. */
static inline int64_t attn_kend(const attn_geom *g, int64_t q0, int64_t nq) {
    return g->causal && q0 + nq < g->tk ? q0 + nq : g->tk;
}

#define ATTN_MIN(a, b) ((a) < (b) ? (a) : (b))

/* Which terms of a block product a causal mask keeps, row r of the output
 * against term j: all (ATTN_ALL); j <= r + diag (ATTN_UPTO: rows are
 * queries, terms keys); j >= r + diag (ATTN_FROM: rows are keys, terms
 * queries). */
typedef struct attn_cmask {
    enum {
        ATTN_ALL,
        ATTN_UPTO,
        ATTN_FROM
    } kind;
    int64_t diag;
} attn_cmask;

/* The terms [j0, j1) of nj that rows [r, r + h) need together; false if none. */
static inline bool attn_jrange(attn_cmask cm, int64_t r, int64_t h, int64_t nj, int64_t *j0,
                               int64_t *j1) {
    *j0 = 0;
    *j1 = nj;
    if (cm.kind == ATTN_UPTO)
        *j1 = r + h + cm.diag < nj ? r + h + cm.diag : nj;
    else if (cm.kind == ATTN_FROM)
        *j0 = r + cm.diag > 0 ? r + cm.diag : 0;
    return *j0 < *j1;
}

/* A geometry's mask for rows from row0 against terms from j0. */
#define ATTN_UPTO_MASK(g, row0, j0) \
    ((attn_cmask){(g)->causal ? ATTN_UPTO : ATTN_ALL, (row0) - (j0)})
#define ATTN_FROM_MASK(g, row0, j0) \
    ((attn_cmask){(g)->causal ? ATTN_FROM : ATTN_ALL, (row0) - (j0)})
#define ATTN_NOMASK ((attn_cmask){ATTN_ALL, 0})

/* A block product's accumulator: 0 where the product sets its output, the
 * output where it adds to it. */
#define ATTN_LD(V, p, set) ((set) ? (V){0} : *(V *)(p))

#define CPU_ATTN(T)                                                                                \
    /* Lane sums over whole vectors, then the lanes, then the rest in order. */                    \
    ATTN_INLINE T attn_dot_##T(const T *a, const T *b, int64_t n) {                                \
        typedef attn_v_##T V;                                                                      \
        const int64_t L = ATTN_LANES(T), nv = n - n % L;                                           \
        V acc = {0};                                                                               \
        for (int64_t i = 0; i < nv; i += L)                                                        \
            acc += *(const V *)(a + i) * *(const V *)(b + i);                                      \
        T s = attn_hsum_##T(&acc);                                                                 \
        for (int64_t i = nv; i < n; i++)                                                           \
            s += a[i] * b[i];                                                                      \
        return s;                                                                                  \
    }                                                                                              \
    ATTN_INLINE void attn_scal_##T(T *y, T alpha, int64_t n) {                                     \
        TG__CPU_SIMD("omp simd")                                                                   \
        for (int64_t i = 0; i < n; i++)                                                            \
            y[i] *= alpha;                                                                         \
    }                                                                                              \
    /* Two rows of out, four vectors of columns, in eight vector accumulators                      \
     * (eight independent chains of adds). */                                                      \
    ATTN_INLINE void attn_mm2_##T(const T *w0, const T *w1, int64_t wj, int64_t nj, const T *B,    \
                                  int64_t bs, T *o0, T *o1, bool set) {                            \
        typedef attn_v_##T V;                                                                      \
        const int L = (int)(ATTN_VBYTES / sizeof(T));                                              \
        V a0 = ATTN_LD(V, o0, set), a1 = ATTN_LD(V, o0 + L, set);                                  \
        V a2 = ATTN_LD(V, o0 + 2 * L, set), a3 = ATTN_LD(V, o0 + 3 * L, set);                      \
        V b0 = ATTN_LD(V, o1, set), b1 = ATTN_LD(V, o1 + L, set);                                  \
        V b2 = ATTN_LD(V, o1 + 2 * L, set), b3 = ATTN_LD(V, o1 + 3 * L, set);                      \
        for (int64_t j = 0; j < nj; j++) {                                                         \
            const T x = w0[j * wj], y = w1[j * wj], *p = B + j * bs;                               \
            const V v0 = *(const V *)p, v1 = *(const V *)(p + L), v2 = *(const V *)(p + 2 * L),    \
                    v3 = *(const V *)(p + 3 * L);                                                  \
            a0 += x * v0, a1 += x * v1, a2 += x * v2, a3 += x * v3;                                \
            b0 += y * v0, b1 += y * v1, b2 += y * v2, b3 += y * v3;                                \
        }                                                                                          \
        *(V *)o0 = a0, *(V *)(o0 + L) = a1, *(V *)(o0 + 2 * L) = a2, *(V *)(o0 + 3 * L) = a3;      \
        *(V *)o1 = b0, *(V *)(o1 + L) = b1, *(V *)(o1 + 2 * L) = b2, *(V *)(o1 + 3 * L) = b3;      \
    }                                                                                              \
    /* Four rows of out, four vectors of columns, in sixteen accumulators: for                     \
     * the x86-64-v4 clone, whose 32 vector registers hold them with the four                      \
     * vectors of B and a broadcast (AVX2's 16 would spill them). */                               \
    ATTN_INLINE void attn_mm4_##T(const T *w, int64_t wr, int64_t wj, int64_t nj, const T *B,      \
                                  int64_t bs, T *o, int64_t os, bool set) {                        \
        typedef attn_v_##T V;                                                                      \
        const int64_t L = ATTN_LANES(T);                                                           \
        T *o0 = o, *o1 = o + os, *o2 = o + 2 * os, *o3 = o + 3 * os;                               \
        V a0 = ATTN_LD(V, o0, set), a1 = ATTN_LD(V, o0 + L, set);                                  \
        V a2 = ATTN_LD(V, o0 + 2 * L, set), a3 = ATTN_LD(V, o0 + 3 * L, set);                      \
        V b0 = ATTN_LD(V, o1, set), b1 = ATTN_LD(V, o1 + L, set);                                  \
        V b2 = ATTN_LD(V, o1 + 2 * L, set), b3 = ATTN_LD(V, o1 + 3 * L, set);                      \
        V c0 = ATTN_LD(V, o2, set), c1 = ATTN_LD(V, o2 + L, set);                                  \
        V c2 = ATTN_LD(V, o2 + 2 * L, set), c3 = ATTN_LD(V, o2 + 3 * L, set);                      \
        V d0 = ATTN_LD(V, o3, set), d1 = ATTN_LD(V, o3 + L, set);                                  \
        V d2 = ATTN_LD(V, o3 + 2 * L, set), d3 = ATTN_LD(V, o3 + 3 * L, set);                      \
        for (int64_t j = 0; j < nj; j++) {                                                         \
            const T *p = B + j * bs, *wc = w + j * wj;                                             \
            const V v0 = *(const V *)p, v1 = *(const V *)(p + L), v2 = *(const V *)(p + 2 * L),    \
                    v3 = *(const V *)(p + 3 * L);                                                  \
            T x = wc[0];                                                                           \
            a0 += x * v0, a1 += x * v1, a2 += x * v2, a3 += x * v3;                                \
            x = wc[wr];                                                                            \
            b0 += x * v0, b1 += x * v1, b2 += x * v2, b3 += x * v3;                                \
            x = wc[2 * wr];                                                                        \
            c0 += x * v0, c1 += x * v1, c2 += x * v2, c3 += x * v3;                                \
            x = wc[3 * wr];                                                                        \
            d0 += x * v0, d1 += x * v1, d2 += x * v2, d3 += x * v3;                                \
        }                                                                                          \
        *(V *)o0 = a0, *(V *)(o0 + L) = a1, *(V *)(o0 + 2 * L) = a2, *(V *)(o0 + 3 * L) = a3;      \
        *(V *)o1 = b0, *(V *)(o1 + L) = b1, *(V *)(o1 + 2 * L) = b2, *(V *)(o1 + 3 * L) = b3;      \
        *(V *)o2 = c0, *(V *)(o2 + L) = c1, *(V *)(o2 + 2 * L) = c2, *(V *)(o2 + 3 * L) = c3;      \
        *(V *)o3 = d0, *(V *)(o3 + L) = d1, *(V *)(o3 + 2 * L) = d2, *(V *)(o3 + 3 * L) = d3;      \
    }                                                                                              \
    /* out[r][c] += sum_j w(r, j) * B[j][c] for r < nr, j < nj, c < nc (= with                     \
     * set, which goes without a mask), with w(r, j) = w[r * wr + j * wj], B's                     \
     * rows bs apart and out's os apart: four (wide) or two rows and four                          \
     * vectors of columns at a time stay in registers while j runs, each sum in                    \
     * order of j, so the tile changes no bit. A causal mask (cm, attn_jrange)                     \
     * leaves out terms whose weights are 0. For finite B that changes no bit                      \
     * of a sum that starts at +0 and is never scaled (dq, dk, dv): such a sum                     \
     * never holds -0, and adding a zero leaves it as it is. (The forward's                        \
     * output, scaled by alpha, may keep the sign of a zero it underflowed to.) */                 \
    ATTN_INLINE void attn_mm_##T(bool wide, attn_cmask cm, const T *w, int64_t wr, int64_t wj,     \
                                 int64_t nr, int64_t nj, const T *B, int64_t bs, int64_t nc,       \
                                 T *out, int64_t os, bool set) {                                   \
        const int64_t vw = 4 * ATTN_LANES(T);                                                      \
        int64_t r = 0, cv = nc - nc % vw, j0, j1;                                                  \
        if (wide)                                                                                  \
            for (; r + 4 <= nr; r += 4)                                                            \
                if (attn_jrange(cm, r, 4, nj, &j0, &j1))                                           \
                    for (int64_t c0 = 0; c0 < cv; c0 += vw)                                        \
                        attn_mm4_##T(w + r * wr + j0 * wj, wr, wj, j1 - j0, B + j0 * bs + c0, bs,  \
                                     out + r * os + c0, os, set);                                  \
        for (; r + 2 <= nr; r += 2)                                                                \
            if (attn_jrange(cm, r, 2, nj, &j0, &j1))                                               \
                for (int64_t c0 = 0; c0 < cv; c0 += vw)                                            \
                    attn_mm2_##T(w + r * wr + j0 * wj, w + (r + 1) * wr + j0 * wj, wj, j1 - j0,    \
                                 B + j0 * bs + c0, bs, out + r * os + c0, out + (r + 1) * os + c0, \
                                 set);                                                             \
        /* the last odd row, and the columns past the vector blocks */                             \
        for (int64_t rr = 0; rr < nr; rr++) {                                                      \
            if (!attn_jrange(cm, rr, 1, nj, &j0, &j1))                                             \
                continue;                                                                          \
            for (int64_t c = rr >= r ? 0 : cv; c < nc; c++) {                                      \
                T acc = set ? 0 : out[rr * os + c];                                                \
                for (int64_t j = j0; j < j1; j++)                                                  \
                    acc += w[rr * wr + j * wj] * B[j * bs + c];                                    \
                out[rr * os + c] = acc;                                                            \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* bt[c][j] = b[j][c0 + c] for j < nb, c < nc (rows of b d apart, of bt                        \
     * ATTN_BK). */                                                                                \
    ATTN_INLINE void attn_tr_##T(const T *b, int64_t nb, int64_t d, int64_t c0, int64_t nc,        \
                                 T *bt) {                                                          \
        for (int64_t j = 0; j < nb; j++)                                                           \
            for (int64_t c = 0; c < nc; c++)                                                       \
                bt[c * ATTN_BK + j] = b[j * d + c0 + c];                                           \
    }                                                                                              \
    /* S[i][j] = a_i . b_j for na rows of a and nb <= ATTN_BK rows of b (row                       \
     * stride ATTN_BK in S): b goes through bt transposed, ATTN_DC of its                          \
     * columns at a time, so that the products run along j; each sum runs over                     \
     * c in order. With d <= ATTN_DC a caller may pass b already transposed in                     \
     * btp (the first nb columns of a longer tile's transpose). */                                 \
    ATTN_INLINE void attn_scores_##T(bool wide, const T *a, int64_t na, const T *b, int64_t nb,    \
                                     int64_t d, T *S, T *bt, const T *btp) {                       \
        /* the first columns' products set S; the padding to whole vectors is 0 */                 \
        for (int64_t i = 0; i < na; i++)                                                           \
            for (int64_t j = nb; j < ATTN_VCEIL(T, nb); j++)                                       \
                S[i * ATTN_BK + j] = 0;                                                            \
        if (btp) {                                                                                 \
            attn_mm_##T(wide, ATTN_NOMASK, a, d, 1, na, d, btp, ATTN_BK, nb, S, ATTN_BK, true);    \
            return;                                                                                \
        }                                                                                          \
        for (int64_t c0 = 0; c0 < d; c0 += ATTN_DC) {                                              \
            const int64_t nc = ATTN_MIN(ATTN_DC, d - c0);                                          \
            attn_tr_##T(b, nb, d, c0, nc, bt);                                                     \
            attn_mm_##T(wide, ATTN_NOMASK, a + c0, d, 1, na, nc, bt, ATTN_BK, nb, S, ATTN_BK,      \
                        c0 == 0);                                                                  \
        }                                                                                          \
    }                                                                                              \
    /* Step one of a query row's online softmax over a key tile: the nv >= 1                       \
     * unmasked scores si scaled; returns their maximum and m's. A maximum is                      \
     * exact: its order does not matter. */                                                        \
    ATTN_INLINE T attn_fwd_max_##T(const attn_geom *g, T *si, int64_t nv, T m) {                   \
        typedef attn_v_##T V;                                                                      \
        const T sc = (T)g->scale;                                                                  \
        for (int64_t j = 0; j < ATTN_VCEIL(T, nv); j += ATTN_LANES(T))                             \
            *(V *)(si + j) *= sc;                                                                  \
        TG__CPU_SIMD("omp simd reduction(max : m)")                                                \
        for (int64_t j = 0; j < nv; j++)                                                           \
            m = si[j] > m ? si[j] : m;                                                             \
        return m;                                                                                  \
    }                                                                                              \
    /* Step two, given the row's new maximum mt and its accumulator's factor                       \
     * alpha = exp(m_old - mt): the nv unmasked scores become exp(s - mt), the                     \
     * masked ones up to nk 0, and l = l alpha + their sum. si has whole                           \
     * vectors up to nk (the padding past nk is finite: attn_scores zeroes                         \
     * it). */                                                                                     \
    ATTN_INLINE void attn_fwd_exp_##T(T *si, int64_t nv, int64_t nk, T mt, T alpha, double *l) {   \
        typedef attn_v_##T V;                                                                      \
        const int64_t L = ATTN_LANES(T), nvv = ATTN_VCEIL(T, nv);                                  \
        V acc = {0};                                                                               \
        for (int64_t j = 0; j < nvv; j += L) {                                                     \
            V e = *(V *)(si + j) - mt;                                                             \
            attn_vexp_##T(&e);                                                                     \
            if (j + L > nv)                                                                        \
                for (int64_t c = nv - j; c < L; c++)                                               \
                    e[c] = 0;                                                                      \
            *(V *)(si + j) = e;                                                                    \
            acc += e;                                                                              \
        }                                                                                          \
        for (int64_t j = nvv; j < nk; j++)                                                         \
            si[j] = 0;                                                                             \
        *l = *l * (double)alpha + (double)attn_hsum_##T(&acc);                                     \
    }                                                                                              \
    /* The online softmax of a tile's nq rows S (query q0 first) against the                       \
     * keys [k0, k0 + nk): the rows' maxima first, then their factors alpha                        \
     * in whole vectors (exp(-inf) = 0 drops the empty accumulator of a                            \
     * row's first tile), then the exponentials; o's rows are scaled by                            \
     * alpha. */                                                                                   \
    ATTN_INLINE void attn_fwd_softmax_##T(const attn_geom *g, T *S, int64_t q0, int64_t nq,        \
                                          int64_t k0, int64_t nk, T *m, double *l, T *o) {         \
        typedef attn_v_##T V;                                                                      \
        const int64_t L = ATTN_LANES(T), d = g->d;                                                 \
        T mo[ATTN_BQ], mn[ATTN_BQ];                                                                \
        for (int64_t i = 0; i < ATTN_BQ; i++) {                                                    \
            const int64_t nv = i < nq ? attn_nvalid(g, q0 + i, k0, nk) : 0;                        \
            mo[i] = mn[i] = i < nq ? m[i] : 0;                                                     \
            if (nv > 0)                                                                            \
                mn[i] = attn_fwd_max_##T(g, S + i * ATTN_BK, nv, m[i]);                            \
        }                                                                                          \
        for (int64_t i = 0; i < ATTN_VCEIL(T, nq); i += L) {                                       \
            V a = *(V *)(mo + i) - *(V *)(mn + i);                                                 \
            attn_vexp_##T(&a);                                                                     \
            *(V *)(mo + i) = a;                                                                    \
        }                                                                                          \
        for (int64_t i = 0; i < nq; i++) {                                                         \
            const int64_t nv = attn_nvalid(g, q0 + i, k0, nk);                                     \
            T *si = S + i * ATTN_BK;                                                               \
            if (nv == 0) {                                                                         \
                for (int64_t j = 0; j < nk; j++)                                                   \
                    si[j] = 0;                                                                     \
                continue;                                                                          \
            }                                                                                      \
            attn_fwd_exp_##T(si, nv, nk, mn[i], mo[i], &l[i]);                                     \
            m[i] = mn[i];                                                                          \
            if (mo[i] != 1)                                                                        \
                attn_scal_##T(o + i * d, mo[i], d);                                                \
        }                                                                                          \
    }                                                                                              \
    /* The forward of ng query tiles of BH row b from tile qt0 on, each with                       \
     * its own online softmax, walking the key tiles once: a key tile is                           \
     * transposed once for all of them (d <= ATTN_DC), and each tile's sums run                    \
     * as they would alone. */                                                                     \
    ATTN_CLONES static void attn_fwd_task_##T(const attn_geom *g, int64_t b, int64_t qt0,          \
                                              int64_t ng, const T *q, const T *k, const T *v,      \
                                              T *o, T *lse) {                                      \
        const int64_t d = g->d, ql = ATTN_MIN(g->tq, (qt0 + ng) * ATTN_BQ);                        \
        const int64_t kend = attn_kend(g, qt0 * ATTN_BQ, ql - qt0 * ATTN_BQ);                      \
        const T *kb = k + b * g->tk * d, *vb = v + b * g->tk * d;                                  \
        const bool pre = d <= ATTN_DC;                                                             \
        T S[ATTN_BQ * ATTN_BK], bt[ATTN_DC * ATTN_BK], m[ATTN_FWD_GROUP * ATTN_BQ];                \
        double l[ATTN_FWD_GROUP * ATTN_BQ];                                                        \
        for (int64_t i = 0; i < ql - qt0 * ATTN_BQ; i++) {                                         \
            m[i] = (T)-INFINITY;                                                                   \
            l[i] = 0;                                                                              \
        }                                                                                          \
        for (int64_t c = 0; c < (ql - qt0 * ATTN_BQ) * d; c++)                                     \
            o[(b * g->tq + qt0 * ATTN_BQ) * d + c] = 0;                                            \
        for (int64_t k0 = 0; k0 < kend; k0 += ATTN_BK) {                                           \
            if (pre)                                                                               \
                attn_tr_##T(kb + k0 * d, ATTN_MIN(ATTN_BK, kend - k0), d, 0, d, bt);               \
            for (int64_t t = 0; t < ng; t++) {                                                     \
                const int64_t q0 = (qt0 + t) * ATTN_BQ, nq = ATTN_MIN(ATTN_BQ, g->tq - q0);        \
                const int64_t row0 = b * g->tq + q0, ke = attn_kend(g, q0, nq);                    \
                if (nq <= 0 || k0 >= ke)                                                           \
                    continue;                                                                      \
                const int64_t nk = ATTN_MIN(ATTN_BK, ke - k0);                                     \
                T *mt = m + t * ATTN_BQ;                                                           \
                double *lt = l + t * ATTN_BQ;                                                      \
                attn_scores_##T(g->wide, q + row0 * d, nq, kb + k0 * d, nk, d, S, bt,              \
                                pre ? bt : NULL);                                                  \
                attn_fwd_softmax_##T(g, S, q0, nq, k0, nk, mt, lt, o + row0 * d);                  \
                attn_mm_##T(g->wide, ATTN_UPTO_MASK(g, q0, k0), S, ATTN_BK, 1, nq, nk,             \
                            vb + k0 * d, d, d, o + row0 * d, d, false);                            \
            }                                                                                      \
        }                                                                                          \
        for (int64_t i = 0; i < ql - qt0 * ATTN_BQ; i++) {                                         \
            const int64_t r = b * g->tq + qt0 * ATTN_BQ + i;                                       \
            attn_scal_##T(o + r * d, (T)(1.0 / l[i]), d);                                          \
            lse[r] = (T)((double)m[i] + log(l[i]));                                                \
        }                                                                                          \
    }                                                                                              \
    /* P and dS of one block: rows [r0, r0 + ni) (i0 the first one's query index)                  \
     * against the key tile [k0, k0 + nk): S becomes p, dP becomes ds * scale,                     \
     * both 0 where masked. */                                                                     \
    ATTN_INLINE void attn_pds_##T(const attn_geom *g, int64_t b, int64_t i0, int64_t ni,           \
                                  int64_t k0, int64_t nk, const T *go, const T *q, const T *k,     \
                                  const T *v, const T *o, const T *lse, T *S, T *dP, T *bt,        \
                                  const T *btk, const T *btv) {                                    \
        const int64_t d = g->d, r0 = b * g->tq + i0, kr = (b * g->tk + k0) * d;                    \
        typedef attn_v_##T V;                                                                      \
        const int64_t L = ATTN_LANES(T);                                                           \
        const T sc = (T)g->scale;                                                                  \
        attn_scores_##T(g->wide, q + r0 * d, ni, k + kr, nk, d, S, bt, btk);                       \
        attn_scores_##T(g->wide, go + r0 * d, ni, v + kr, nk, d, dP, bt, btv);                     \
        for (int64_t i = 0; i < ni; i++) {                                                         \
            const int64_t r = r0 + i, nv = attn_nvalid(g, i0 + i, k0, nk);                         \
            const T di = attn_dot_##T(go + r * d, o + r * d, d), li = lse[r];                      \
            T *si = S + i * ATTN_BK, *pi = dP + i * ATTN_BK;                                       \
            for (int64_t j = 0; j < ATTN_VCEIL(T, nv); j += L) {                                   \
                V p = *(V *)(si + j) * sc - li;                                                    \
                attn_vexp_##T(&p);                                                                 \
                V ds = p * (*(V *)(pi + j) - di) * sc;                                             \
                if (j + L > nv)                                                                    \
                    for (int64_t c = nv - j; c < L; c++)                                           \
                        p[c] = ds[c] = 0;                                                          \
                *(V *)(si + j) = p;                                                                \
                *(V *)(pi + j) = ds;                                                               \
            }                                                                                      \
            for (int64_t j = ATTN_VCEIL(T, nv); j < nk; j++)                                       \
                si[j] = pi[j] = 0;                                                                 \
        }                                                                                          \
    }                                                                                              \
    /* dq for one query tile; g, o, lse as the forward's rows. */                                  \
    ATTN_CLONES static void attn_dq_task_##T(const attn_geom *g, int64_t task, const T *go,        \
                                             const T *q, const T *k, const T *v, const T *o,       \
                                             const T *lse, T *dq) {                                \
        const int64_t nqt = (g->tq + ATTN_BQ - 1) / ATTN_BQ, b = task / nqt, d = g->d;             \
        const int64_t q0 = task % nqt * ATTN_BQ, nq = ATTN_MIN(ATTN_BQ, g->tq - q0);               \
        const int64_t row0 = b * g->tq + q0, kend = attn_kend(g, q0, nq);                          \
        T S[ATTN_BQ * ATTN_BK], dP[ATTN_BQ * ATTN_BK], bt[ATTN_DC * ATTN_BK];                      \
        for (int64_t c = 0; c < nq * d; c++)                                                       \
            dq[row0 * d + c] = 0;                                                                  \
        for (int64_t k0 = 0; k0 < kend; k0 += ATTN_BK) {                                           \
            const int64_t nk = ATTN_MIN(ATTN_BK, kend - k0);                                       \
            attn_pds_##T(g, b, q0, nq, k0, nk, go, q, k, v, o, lse, S, dP, bt, NULL, NULL);        \
            attn_mm_##T(g->wide, ATTN_UPTO_MASK(g, q0, k0), dP, ATTN_BK, 1, nq, nk,                \
                        k + (b * g->tk + k0) * d, d, d, dq + row0 * d, d, false);                  \
        }                                                                                          \
    }                                                                                              \
    /* dk and dv for the key tile [k0, k0 + nk) of BH row b, over blocks of                        \
     * ATTN_BQ queries; with dq, also dq += ds k for those blocks (the one-pass                    \
     * backward). Causal, a block's keys stop at its last query: the keys past                     \
     * it would add only zeros. */                                                                 \
    ATTN_INLINE void attn_kv_tile_##T(const attn_geom *g, int64_t b, int64_t k0, int64_t nk,       \
                                      const T *go, const T *q, const T *k, const T *v, const T *o, \
                                      const T *lse, T *dq, T *dk, T *dv) {                         \
        const int64_t d = g->d, krow = b * g->tk + k0;                                             \
        T S[ATTN_BQ * ATTN_BK], dP[ATTN_BQ * ATTN_BK], bt[ATTN_DC * ATTN_BK];                      \
        T btv[ATTN_DC * ATTN_BK];                                                                  \
        /* the tile's k and v transposed once for all its blocks */                                \
        const bool pre = d <= ATTN_DC;                                                             \
        if (pre) {                                                                                 \
            attn_tr_##T(k + krow * d, nk, d, 0, d, bt);                                            \
            attn_tr_##T(v + krow * d, nk, d, 0, d, btv);                                           \
        }                                                                                          \
        for (int64_t c = 0; c < nk * d; c++) {                                                     \
            dk[krow * d + c] = 0;                                                                  \
            dv[krow * d + c] = 0;                                                                  \
        }                                                                                          \
        for (int64_t i0 = g->causal ? k0 : 0; i0 < g->tq; i0 += ATTN_BQ) {                         \
            const int64_t ni = ATTN_MIN(ATTN_BQ, g->tq - i0), r0 = b * g->tq + i0;                 \
            const int64_t nb = g->causal ? ATTN_MIN(nk, i0 + ni - k0) : nk;                        \
            attn_pds_##T(g, b, i0, ni, k0, nb, go, q, k, v, o, lse, S, dP, bt, pre ? bt : NULL,    \
                         pre ? btv : NULL);                                                        \
            attn_mm_##T(g->wide, ATTN_FROM_MASK(g, k0, i0), S, 1, ATTN_BK, nb, ni, go + r0 * d, d, \
                        d, dv + krow * d, d, false);                                               \
            attn_mm_##T(g->wide, ATTN_FROM_MASK(g, k0, i0), dP, 1, ATTN_BK, nb, ni, q + r0 * d, d, \
                        d, dk + krow * d, d, false);                                               \
            if (dq)                                                                                \
                attn_mm_##T(g->wide, ATTN_UPTO_MASK(g, i0, k0), dP, ATTN_BK, 1, ni, nb,            \
                            k + krow * d, d, d, dq + r0 * d, d, false);                            \
        }                                                                                          \
    }                                                                                              \
    /* dk and dv for one key tile (the second pass of the two-pass backward). */                   \
    ATTN_CLONES static void attn_dkv_task_##T(const attn_geom *g, int64_t task, const T *go,       \
                                              const T *q, const T *k, const T *v, const T *o,      \
                                              const T *lse, T *dk, T *dv) {                        \
        const int64_t nkt = (g->tk + ATTN_BK - 1) / ATTN_BK, b = task / nkt;                       \
        const int64_t k0 = task % nkt * ATTN_BK, nk = ATTN_MIN(ATTN_BK, g->tk - k0);               \
        attn_kv_tile_##T(g, b, k0, nk, go, q, k, v, o, lse, NULL, dk, dv);                         \
    }                                                                                              \
    /* dq, dk and dv of one BH row in one pass over its key tiles: dq sums the                     \
     * key tiles in the order the dq pass does, so both backwards give the same                    \
     * bits. */                                                                                    \
    ATTN_CLONES static void attn_bwd_row_task_##T(const attn_geom *g, int64_t b, const T *go,      \
                                                  const T *q, const T *k, const T *v, const T *o,  \
                                                  const T *lse, T *dq, T *dk, T *dv) {             \
        for (int64_t c = 0; c < g->tq * g->d; c++)                                                 \
            dq[b * g->tq * g->d + c] = 0;                                                          \
        for (int64_t k0 = 0; k0 < g->tk; k0 += ATTN_BK)                                            \
            attn_kv_tile_##T(g, b, k0, ATTN_MIN(ATTN_BK, g->tk - k0), go, q, k, v, o, lse, dq, dk, \
                             dv);                                                                  \
    }                                                                                              \
    /* Tasks of ATTN_FWD_GROUP query tiles of one BH row, fewer per task when                      \
     * that leaves under ATTN_ROWS_PER_THREAD tasks per thread; the grouping                       \
     * changes no bit. */                                                                          \
    static void attn_fwd_##T(const attn_geom *g, bool par, const T *q, const T *k, const T *v,     \
                             T *o, T *lse) {                                                       \
        const int64_t nqt = (g->tq + ATTN_BQ - 1) / ATTN_BQ;                                       \
        const int64_t want = ATTN_ROWS_PER_THREAD * (par ? omp_get_max_threads() : 1);             \
        int64_t ng = ATTN_FWD_GROUP;                                                               \
        while (ng > 1 && g->bh * ((nqt + ng - 1) / ng) < want)                                     \
            ng /= 2;                                                                               \
        const int64_t per = (nqt + ng - 1) / ng, ntask = g->bh * per;                              \
        TG__CPU_FOR(par, "omp parallel for schedule(static, 1)",                                   \
                    for (int64_t t = 0; t < ntask; t++)                                            \
                        attn_fwd_task_##T(g, t / per, t % per * ng, ng, q, k, v, o, lse););        \
    }                                                                                              \
    /* One pass (a task per BH row) when there are enough rows for the threads,                    \
     * else two (tasks per tile); both give the same bits, so the choice may                       \
     * follow the thread count. */                                                                 \
    static void attn_bwd_##T(const attn_geom *g, bool par, const T *go, const T *q, const T *k,    \
                             const T *v, const T *o, const T *lse, T *dq, T *dk, T *dv) {          \
        const int64_t nq = g->bh * ((g->tq + ATTN_BQ - 1) / ATTN_BQ);                              \
        const int64_t nk = g->bh * ((g->tk + ATTN_BK - 1) / ATTN_BK);                              \
        if (g->bh >= ATTN_ROWS_PER_THREAD * (par ? omp_get_max_threads() : 1)) {                   \
            TG__CPU_FOR(par, "omp parallel for schedule(static, 1)",                               \
                        for (int64_t b = 0; b < g->bh; b++)                                        \
                            attn_bwd_row_task_##T(g, b, go, q, k, v, o, lse, dq, dk, dv););        \
            return;                                                                                \
        }                                                                                          \
        TG__CPU_FOR(par, "omp parallel for schedule(static, 1)",                                   \
                    for (int64_t t = 0; t < nq; t++)                                               \
                        attn_dq_task_##T(g, t, go, q, k, v, o, lse, dq););                         \
        TG__CPU_FOR(par, "omp parallel for schedule(static, 1)",                                   \
                    for (int64_t t = 0; t < nk; t++)                                               \
                        attn_dkv_task_##T(g, t, go, q, k, v, o, lse, dk, dv););                    \
    }

CPU_ATTN(float)
CPU_ATTN(double)

static bool attn_is(const tg_kview *v, int ndim, const int64_t *shape) {
    if (v->ndim != ndim || !tg__kview_contig(v))
        return false;
    for (int d = 0; d < ndim; d++)
        if (v->shape[d] != shape[d])
            return false;
    return true;
}

/* Geometry from q (in[iq]) and k (in[iq + 1]); checks that v (in[iq + 2]) is
 * like k, that out is like q and lse (in[ilse]) is q without its last dim,
 * all contiguous. */
static tg_status attn_geom_of(const tg_kargs *a, int iq, int ilse, attn_geom *g) {
    const tg_kview *q = &a->in[iq], *k = &a->in[iq + 1];
    const int n = q->ndim;
    bool ok = n >= 3 && k->ndim == n && attn_is(q, n, q->shape) && attn_is(k, n, k->shape) &&
              attn_is(&a->in[iq + 2], n, k->shape) && attn_is(&a->out, n, q->shape) &&
              attn_is(&a->in[ilse], n - 1, q->shape) && k->shape[n - 1] == q->shape[n - 1];
    g->bh = 1;
    for (int d = 0; ok && d < n - 2; d++) {
        ok = k->shape[d] == q->shape[d];
        g->bh *= q->shape[d];
    }
    if (!ok)
        return tg__cpu_fail(a, TG_ERR_SHAPE,
                            "cpu %s: operands must be contiguous (..., T_q, D) and (..., T_k, D) "
                            "with the same leading dims",
                            tg_op_name(a->op));
    g->tq = q->shape[n - 2];
    g->tk = k->shape[n - 2];
    g->d = q->shape[n - 1];
    g->scale = a->p->f[0];
    g->causal = a->p->ints[0] != 0;
    g->wide = ATTN_WIDE();
    return TG_OK;
}

static bool attn_par(const attn_geom *g) {
    return tg__cpu_par_if((double)g->bh * (double)g->tq * (double)g->tk * (double)g->d >=
                          ATTN_PAR_MIN);
}

/* in: q, k, v, lse (written); out: o. */
tg_status tg__cpu_scaled_dot_product_attention(void *state, const tg_kargs *a) {
    (void)state;
    attn_geom g = {0};
    tg_status st = tg__cpu_check_float(a, 4);
    if (st == TG_OK)
        st = attn_geom_of(a, 0, 3, &g);
    if (st != TG_OK)
        return st;
    if (a->out.dtype == TG_F32 && tg_kparams_bf16(a->p, TG_KP_ATTN_BF16) &&
        tg__cpu_attn_bf16_fits(g.d))
        tg__cpu_attn_bf16_fwd(g.bh, g.tq, g.tk, g.d, g.scale, g.causal, attn_par(&g), a->in[0].data,
                              a->in[1].data, a->in[2].data, a->out.data, a->in[3].data);
    else if (a->out.dtype == TG_F32)
        attn_fwd_float(&g, attn_par(&g), a->in[0].data, a->in[1].data, a->in[2].data, a->out.data,
                       a->in[3].data);
    else
        attn_fwd_double(&g, attn_par(&g), a->in[0].data, a->in[1].data, a->in[2].data, a->out.data,
                        a->in[3].data);
    return TG_OK;
}

/* in: g, q, k, v, o, lse, dk (written), dv (written); out: dq. */
tg_status tg__cpu_scaled_dot_product_attention_backward(void *state, const tg_kargs *a) {
    (void)state;
    attn_geom g = {0};
    tg_status st = tg__cpu_check_float(a, 8);
    if (st == TG_OK)
        st = attn_geom_of(a, 1, 5, &g);
    if (st != TG_OK)
        return st;
    const tg_kview *q = &a->in[1], *k = &a->in[2];
    if (!attn_is(&a->in[0], q->ndim, q->shape) || !attn_is(&a->in[4], q->ndim, q->shape) ||
        !attn_is(&a->in[6], k->ndim, k->shape) || !attn_is(&a->in[7], k->ndim, k->shape))
        return tg__cpu_fail(a, TG_ERR_SHAPE,
                            "cpu %s: g and o must be like q, dk and dv like k, all contiguous",
                            tg_op_name(a->op));
    void *const *p = (void *const[]){a->in[0].data, a->in[1].data, a->in[2].data, a->in[3].data,
                                     a->in[4].data, a->in[5].data, a->in[6].data, a->in[7].data};
    if (a->out.dtype == TG_F32 && tg_kparams_bf16(a->p, TG_KP_ATTN_BF16) &&
        tg__cpu_attn_bf16_fits(g.d))
        tg__cpu_attn_bf16_bwd(g.bh, g.tq, g.tk, g.d, g.scale, g.causal, attn_par(&g), p[0], p[1],
                              p[2], p[3], p[4], p[5], a->out.data, p[6], p[7]);
    else if (a->out.dtype == TG_F32)
        attn_bwd_float(&g, attn_par(&g), p[0], p[1], p[2], p[3], p[4], p[5], a->out.data, p[6],
                       p[7]);
    else
        attn_bwd_double(&g, attn_par(&g), p[0], p[1], p[2], p[3], p[4], p[5], a->out.data, p[6],
                        p[7]);
    return TG_OK;
}
