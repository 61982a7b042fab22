/*
 * kernels/cpu/cpu_matmul.c: batched matrix product through OpenBLAS gemm.
 *
 * Operands are handed to BLAS as they lie in memory: a matrix whose last dim
 * is contiguous is passed as is, one whose second-to-last dim is contiguous
 * is passed transposed, so transposed views never cost a copy. Each large
 * product is split across the OpenMP threads (cpu_gemm), so the batch loop
 * runs on the calling thread.
 *
 * Under bf16 autocast the products are bf16 ones instead, on the same
 * layouts: our AVX512_BF16 kernel (cpu_gemm_bf16.c) where the CPU has it,
 * oneDNN's matmul (cpu_dnnl.c) elsewhere or when TG_CPU_BF16_GEMM=onednn.
 */
#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>

#include "cpu.h"

/* bps > 0: our f32 product (cpu_sgemm.c), with B row-major (bps
 * TG__CPU_SGEMM_NR) or in its panels (bps TG__CPU_SGEMM_NR k); else BLAS. */
static void cpu_gemm1(int64_t bps, tg_dtype dt, const tg__gemm_arg *ga, const tg__gemm_arg *gb,
                      int64_t n, int64_t m, int64_t k, const void *A, const void *B, void *C,
                      int64_t ldc) {
    if (bps > 0) {
        /* Row i of op(A) is row i of A, or column i when transposed. */
        tg__cpu_sgemm(n, m, k, A, ga->trans ? 1 : ga->ld, ga->trans ? ga->ld : 1, B, gb->ld, bps, C,
                      ldc);
        return;
    }
    const enum CBLAS_TRANSPOSE ta = ga->trans ? CblasTrans : CblasNoTrans;
    const enum CBLAS_TRANSPOSE tb = gb->trans ? CblasTrans : CblasNoTrans;
    if (dt == TG_F32)
        cblas_sgemm(CblasRowMajor, ta, tb, (int)n, (int)m, (int)k, 1.0f, A, (int)ga->ld, B,
                    (int)gb->ld, 0.0f, C, (int)ldc);
    else
        cblas_dgemm(CblasRowMajor, ta, tb, (int)n, (int)m, (int)k, 1.0, A, (int)ga->ld, B,
                    (int)gb->ld, 0.0, C, (int)ldc);
}

/* Below this many multiply-adds a product runs on the calling thread. */
#define CPU_GEMM_PAR_MIN (1 << 18)
/* Blocks of C start at multiples of this (a multiple of the kernels' tiles);
 * of TG__CPU_SGEMM_NR for our f32 product, whose B comes in panels. */
#define CPU_GEMM_ALIGN 16

/* One product split into blocks of C (see cpu_gemm). */
typedef struct cpu_gemm_split {
    int64_t bps;
    tg_dtype dt;
    const tg__gemm_arg *ga, *gb;
    int64_t n, m, k, es, len, align, units, parts;
    bool by_rows;
    const void *A, *B;
    void *C;
} cpu_gemm_split;

/* Block p: rows or columns [lo, hi) of C, whole multiples of s->align. */
static void cpu_gemm_block(const cpu_gemm_split *s, int64_t p) {
    const int64_t lo = s->units * p / s->parts * s->align;
    int64_t hi = s->units * (p + 1) / s->parts * s->align;
    hi = hi < s->len ? hi : s->len;
    if (hi <= lo)
        return;
    if (s->by_rows) {
        /* Row i of op(A) is row i of A, or column i when transposed. */
        const char *a0 = (const char *)s->A + (s->ga->trans ? lo : lo * s->ga->ld) * s->es;
        cpu_gemm1(s->bps, s->dt, s->ga, s->gb, hi - lo, s->m, s->k, a0, s->B,
                  (char *)s->C + lo * s->m * s->es, s->m);
    } else {
        const int64_t boff = s->bps > 0     ? lo / TG__CPU_SGEMM_NR * s->bps
                             : s->gb->trans ? lo * s->gb->ld
                                            : lo;
        cpu_gemm1(s->bps, s->dt, s->ga, s->gb, s->n, hi - lo, s->k, s->A,
                  (const char *)s->B + boff * s->es, (char *)s->C + lo * s->es, s->m);
    }
}

/*
 * C (n x m, row-major, ld m) = op(A) op(B). A large product is split into
 * `parts` column blocks of C (row blocks when C has more rows than columns),
 * each a single-threaded gemm: OpenBLAS runs single-threaded inside a
 * parallel region. This is about as fast as OpenBLAS's own threading but,
 * unlike it, allocates nothing (its threaded path mallocs a job array on
 * every call). K is never split, and the blocks depend on `parts` (the
 * context's thread count) alone, not on how many threads run them: while
 * the spin watch runs a step on one thread (omp_throttle.c), that thread
 * computes every block in turn, and the bits are the same.
 */
static void cpu_gemm_split_run(int parts, int64_t bps, tg_dtype dt, const tg__gemm_arg *ga,
                               const tg__gemm_arg *gb, int64_t n, int64_t m, int64_t k,
                               const void *A, const void *B, void *C) {
    const bool by_rows = n > m;
    const int64_t len = by_rows ? n : m;
    const int64_t align = bps > 0 ? TG__CPU_SGEMM_NR : CPU_GEMM_ALIGN;
    if (parts < 2 || n * m * k < CPU_GEMM_PAR_MIN || len < 2 * align || omp_in_parallel()) {
        cpu_gemm1(bps, dt, ga, gb, n, m, k, A, B, C, m);
        return;
    }
    const int64_t units = (len + align - 1) / align;
    const cpu_gemm_split s = {.bps = bps,
                              .dt = dt,
                              .ga = ga,
                              .gb = gb,
                              .n = n,
                              .m = m,
                              .k = k,
                              .es = (int64_t)tg__cpu_esize(dt),
                              .len = len,
                              .align = align,
                              .units = units,
                              .parts = units < parts ? units : parts,
                              .by_rows = by_rows,
                              .A = A,
                              .B = B,
                              .C = C};
    TG__CPU_PARTS(s.parts, cpu_gemm_block(&s, p));
}

/* Below this many elements B is copied on the calling thread. */
#define CPU_PACK_PAR_MIN (1 << 16)

/* Our f32 product takes a product whose B holds at most this many values;
 * OpenBLAS the larger ones (the cnn's first linear layer: 3136 x 1024), where
 * its packing measured faster than ours (bench_sgemm) and copying B would
 * cost most. */
#define CPU_SGEMM_MAX_B (1 << 19)
/* ... and one with a transposed B only from this many rows on; from as many
 * rows on, a row-major B of at least CPU_SGEMM_MIN_M_PACK columns is copied
 * into the kernel's panels too. */
#define CPU_SGEMM_MIN_N_PACK 1024
#define CPU_SGEMM_MIN_M_PACK 256

/*
 * The f32 product of our own (cpu_sgemm.c) reads B in panels of 32 columns.
 * A tall product (the gpt's n = batch x T) first copies B into panels laid
 * end to end, into the state's buffer (grown once, kept: no heap call in a
 * steady step; a test's direct call without a state gets a buffer of its
 * own), by parts when large: a B given transposed (x W^T) can be read no
 * other way, and a wide row-major one, whose rows of 32 floats lie 1 KiB or
 * more apart, fed the kernel 7% faster from the copy (bench_sgemm, the
 * gpt's 4096 x 128 x 512 product). A short or narrow product reads a
 * row-major B where it lies (the copy measured slower at 128 columns).
 * Whether ours runs is decided here, on the whole product, so that every
 * block of a split product takes the same path. Everything else goes to
 * cpu_gemm_split_run as it is.
 */
static void cpu_gemm(void *state, int parts, tg_dtype dt, const tg__gemm_arg *ga,
                     const tg__gemm_arg *gb, int64_t n, int64_t m, int64_t k, const void *A,
                     const void *B, void *C) {
    /* Copying B costs k m against the product's n k m: worth it for tall
     * products, not for a batch of a few hundred rows (the mlp's), where
     * OpenBLAS's packing, vectorised, does it for less. */
    const bool tall = n >= CPU_SGEMM_MIN_N_PACK;
    const bool own =
        dt == TG_F32 && k * m <= CPU_SGEMM_MAX_B && (!gb->trans || tall) && tg__cpu_sgemm_on();
    const bool pack = gb->trans || (tall && m >= CPU_SGEMM_MIN_M_PACK);
    if (!own || !pack) {
        cpu_gemm_split_run(parts, own ? TG__CPU_SGEMM_NR : 0, dt, ga, gb, n, m, k, A, B, C);
        return;
    }
    tg__cpu_state *s = state;
    const int64_t nr = TG__CPU_SGEMM_NR, panels = (m + nr - 1) / nr;
    const size_t need = (size_t)(panels * nr * k);
    float *mine = NULL;
    float *pk = s ? tg__cpu_grow(&s->pack, &s->pack_cap, need * sizeof(float))
                  : (mine = malloc(need * sizeof(float)));
    if (!pk) { /* out of memory: OpenBLAS takes B as it lies */
        cpu_gemm_split_run(parts, 0, dt, ga, gb, n, m, k, A, B, C);
        return;
    }
    const int64_t rs = gb->trans ? 1 : gb->ld, cs = gb->trans ? gb->ld : 1;
    const int64_t np = (int64_t)need < CPU_PACK_PAR_MIN || omp_in_parallel() ? 1
                       : parts < panels                                      ? parts
                                                                             : panels;
    TG__CPU_PARTS(np,
                  tg__cpu_sgemm_pack(pk, B, rs, cs, k, m, panels * p / np, panels * (p + 1) / np));
    const tg__gemm_arg plain = {.ld = nr, .trans = false};
    cpu_gemm_split_run(parts, nr * k, dt, ga, &plain, n, m, k, A, pk, C);
    free(mine);
}

/* The bf16 product (autocast): ours (cpu_gemm_bf16.c) where the state says
 * so, oneDNN's otherwise, each made at its first use. */
static tg_status cpu_product16(tg__cpu_state *s, const tg_kargs *a, const tg__gemm_arg *ga,
                               const tg__gemm_arg *gb, int64_t n, int64_t m, int64_t k,
                               const float *A, const float *B, float *C) {
    if (s->gemm16_own) {
        if (!s->gemm16 && !(s->gemm16 = tg__gemm16_new(s->parts)))
            return tg__cpu_fail(a, TG_ERR_NOMEM, "cpu matmul: out of memory for the bf16 "
                                                 "product's packing buffers");
        tg__gemm16_run(s->gemm16, s->parts, ga, gb, n, m, k, A, B, C);
        return TG_OK;
    }
    tg__dnnl *dn = tg__cpu_dnnl(s, a);
    if (!dn)
        return TG_ERR_UNSUPPORTED;
    return tg__dnnl_gemm(dn, ga, gb, n, m, k, A, B, C, a->err, a->errlen);
}

/* One product: BLAS or our own f32 one, or a bf16 product when bf16 is set
 * (autocast). */
static tg_status cpu_product(void *state, bool bf16, const tg_kargs *a, const tg__gemm_arg *ga,
                             const tg__gemm_arg *gb, int64_t n, int64_t m, int64_t k,
                             const void *A, const void *B, void *C) {
    if (bf16)
        return cpu_product16(state, a, ga, gb, n, m, k, A, B, C);
    cpu_gemm(state, tg__cpu_parts(state), a->out.dtype, ga, gb, n, m, k, A, B, C);
    return TG_OK;
}

/*
 * When B is the same matrix for every batch and A's batch dims and row dim
 * are one evenly strided run of rows, the whole product is one gemm with
 * batch * n rows, which BLAS parallelises far better than many small ones.
 * On success *rows and *row_stride describe the merged A.
 */
static bool cpu_matmul_fold(const tg_kview *A, const tg_kview *B, int nb, const int64_t *bshape,
                            int64_t *rows, int64_t *row_stride) {
    for (int d = 0; d < nb; d++) {
        if (bshape[d] > 1 && B->shape[d] != 1 && B->strides[d] != 0)
            return false;
    }
    int64_t nrows = A->shape[nb];
    int64_t st = nrows > 1 ? A->strides[nb] : -1;
    for (int d = nb - 1; d >= 0; d--) {
        if (bshape[d] == 1)
            continue;
        if (A->shape[d] == 1 || A->strides[d] == 0)
            return false;
        if (st < 0)
            st = A->strides[d];
        else if (A->strides[d] != st * nrows)
            return false;
        nrows *= bshape[d];
    }
    *rows = nrows;
    *row_stride = st < 0 ? 1 : st;
    return true;
}

tg_status tg__cpu_matmul(void *state, const tg_kargs *a) {
    tg_status st = tg__cpu_check_float(a, 2);
    if (st != TG_OK)
        return st;
    const bool bf16 = tg_kparams_bf16(a->p, TG_KP_MATMUL_BF16);
    if (bf16 && a->out.dtype != TG_F32)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu matmul: bf16 products take f32 operands");
    const tg_kview *A = &a->in[0], *B = &a->in[1], *C = &a->out;
    const int nd = C->ndim;
    if (nd < 2 || A->ndim != nd || B->ndim != nd)
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu matmul: operands need the same ndim >= 2");
    const int nb = nd - 2;
    const int64_t n = C->shape[nb], m = C->shape[nb + 1], k = A->shape[nb + 1];
    if (A->shape[nb] != n || B->shape[nb] != k || B->shape[nb + 1] != m)
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu matmul: inner dims do not match");
    int64_t batch = 1;
    for (int d = 0; d < nb; d++) {
        batch *= C->shape[d];
        if ((A->shape[d] != 1 && A->shape[d] != C->shape[d]) ||
            (B->shape[d] != 1 && B->shape[d] != C->shape[d]))
            return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu matmul: batch dim %d does not broadcast", d);
    }
    if (batch == 0 || n == 0 || m == 0)
        return TG_OK;
    const size_t esize = tg__cpu_esize(C->dtype);
    if (k == 0) {
        /* An empty sum: BLAS would reject k == 0 with lda checks on some builds. */
        tg__cpu_zero(C->data, (size_t)(batch * n * m) * esize);
        return TG_OK;
    }
    tg__gemm_arg ga, gb;
    if (!tg__gemm_layout(n, k, A->strides[nb], A->strides[nb + 1], &ga) ||
        !tg__gemm_layout(k, m, B->strides[nb], B->strides[nb + 1], &gb))
        return tg__cpu_fail(a, TG_ERR_INVALID,
                            "cpu matmul: an operand has neither its last nor its second-to-last "
                            "dim contiguous");

    int64_t rows, row_stride;
    tg__gemm_arg gfold;
    if (batch > 1 && cpu_matmul_fold(A, B, nb, C->shape, &rows, &row_stride) &&
        tg__gemm_layout(rows, k, row_stride, A->strides[nb + 1], &gfold) && !gfold.trans) {
        if (rows > INT_MAX || m > INT_MAX || k > INT_MAX || gfold.ld > INT_MAX || gb.ld > INT_MAX)
            return tg__cpu_fail(a, TG_ERR_UNSUPPORTED, "cpu matmul: dims exceed BLAS's int range");
        return cpu_product(state, bf16, a, &gfold, &gb, rows, m, k, A->data, B->data, C->data);
    }
    if (n > INT_MAX || m > INT_MAX || k > INT_MAX || ga.ld > INT_MAX || gb.ld > INT_MAX)
        return tg__cpu_fail(a, TG_ERR_UNSUPPORTED, "cpu matmul: dims exceed BLAS's int range");

    /* Batch strides; a size-1 batch dim is broadcast whatever its stride. */
    int64_t sa[TG_MAX_DIMS], sb[TG_MAX_DIMS], coord[TG_MAX_DIMS];
    for (int d = 0; d < nb; d++) {
        sa[d] = A->shape[d] == 1 ? 0 : A->strides[d];
        sb[d] = B->shape[d] == 1 ? 0 : B->strides[d];
        coord[d] = 0;
    }
    const char *pa = A->data, *pb = B->data;
    char *pc = C->data;
    int64_t offa = 0, offb = 0;
    for (int64_t t = 0; t < batch; t++) {
        st = cpu_product(state, bf16, a, &ga, &gb, n, m, k, pa + offa * (int64_t)esize,
                         pb + offb * (int64_t)esize, pc + t * n * m * (int64_t)esize);
        if (st != TG_OK)
            return st;
        for (int d = nb - 1; d >= 0; d--) {
            offa += sa[d];
            offb += sb[d];
            if (++coord[d] < C->shape[d])
                break;
            coord[d] = 0;
            offa -= sa[d] * C->shape[d];
            offb -= sb[d] * C->shape[d];
        }
    }
    return TG_OK;
}
