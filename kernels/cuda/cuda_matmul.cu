/*
 * kernels/cuda/cuda_matmul.cu: batched matrix product through cuBLAS.
 *
 * cuBLAS is column-major. A row-major matrix X with leading dimension ld is,
 * read column-major with the same ld, the matrix X^T; so the row-major
 * product C = A B (n x m) is computed as the column-major C^T = B^T A^T
 * with the operands swapped, and the contiguous row-major C is a column-major
 * m x n matrix with ld = m. An operand whose second-to-last dim is the
 * contiguous one (a transposed view) is passed with CUBLAS_OP_T instead of
 * being copied, exactly as the CPU kernel passes it to OpenBLAS.
 *
 * Batches: when every operand's batch offset is one stride times the flat
 * batch index (contiguous batches, or a broadcast operand with stride 0),
 * one cublas<t>gemmStridedBatched call does them all; otherwise (a batch
 * broadcast over some but not all of several batch dims) each batch is one
 * gemm call. All calls go on the context's stream through its handle.
 */
#include <cuda_bf16.h>
#include <limits.h>

#include "cuda.h"

/* ---- bf16 products (autocast) ---- */

__global__ static void k_round_bf16(int64_t n, const float *x, __nv_bfloat16 *o) {
    TG__CUDA_FOR(i, n) o[i] = __float2bfloat16_rn(x[i]);
}

/* Elements from an operand's first to its last, rows x cols (column-major,
 * ld) op'd by t, batch problems `stride` apart. */
static int64_t span(cublasOperation_t t, int rows, int cols, int ld, long long stride, int batch) {
    const int64_t r = t == CUBLAS_OP_N ? rows : cols, c = t == CUBLAS_OP_N ? cols : rows;
    return (int64_t)(batch - 1) * stride + (c - 1) * (int64_t)ld + r;
}

tg_status tg__cuda_gemm_bf16(tg__cuda_state *s, const tg_kargs *a, cublasOperation_t ta,
                             cublasOperation_t tb, int m, int n, int k, const float *A, int lda,
                             long long sA, const float *B, int ldb, long long sB, float *C,
                             int ldc, long long sC, int batch) {
    const int64_t na = span(ta, m, k, lda, sA, batch), nbv = span(tb, k, n, ldb, sB, batch);
    const size_t need = (size_t)(na + nbv) * sizeof(__nv_bfloat16);
    if (need > s->lo_cap) {
        (void)cudaFree(s->lo);
        s->lo = NULL;
        s->lo_cap = 0;
        TG__CUDA_K(cudaMalloc(&s->lo, need), a);
        s->lo_cap = need;
    }
    __nv_bfloat16 *a16 = (__nv_bfloat16 *)s->lo, *b16 = a16 + na;
    /* The whole span, gaps included, so that lda, ldb and the strides stay. */
    k_round_bf16<<<tg__cuda_blocks(na), TG__CUDA_THREADS, 0, s->stream>>>(na, A, a16);
    k_round_bf16<<<tg__cuda_blocks(nbv), TG__CUDA_THREADS, 0, s->stream>>>(nbv, B, b16);
    TG__CUDA_LAUNCHED(a);
    const float one = 1.0f, zero = 0.0f;
    TG__CUBLAS_K(tg__cublas.GemmStridedBatchedEx(s->blas, ta, tb, m, n, k, &one, a16, CUDA_R_16BF,
                                                 lda, sA, b16, CUDA_R_16BF, ldb, sB, &zero, C,
                                                 CUDA_R_32F, ldc, sC, batch, CUBLAS_COMPUTE_32F,
                                                 CUBLAS_GEMM_DEFAULT),
                 a);
    return TG_OK;
}

/*
 * The batch strides of an operand (0 along its size-1 dims) as one stride
 * over the flat batch index of the output's batch shape, when there is one:
 * s[d] must equal stride * (product of the batch sizes after d) for every
 * batch dim of size > 1.
 */
static bool batch_stride(int nb, const int64_t *cshape, const int64_t *s, int64_t *stride) {
    int64_t inner = 1;
    bool have = false;
    int64_t st = 0;
    for (int d = nb - 1; d >= 0; d--) {
        if (cshape[d] > 1) {
            if (!have) {
                if (s[d] % inner != 0)
                    return false;
                st = s[d] / inner;
                have = true;
            } else if (s[d] != st * inner) {
                return false;
            }
        }
        inner *= cshape[d];
    }
    *stride = st;
    return true;
}

/* The arguments of one gemm problem, shared by every batch. */
typedef struct cuda_gemm {
    cublasOperation_t opa, opb;
    int n, m, k, lda, ldb;
} cuda_gemm;

static tg_status gemm_one(tg__cuda_state *s, const tg_kargs *a, const cuda_gemm *g, const void *A,
                          const void *B, void *C) {
    if (tg_kparams_bf16(a->p, TG_KP_MATMUL_BF16))
        return tg__cuda_gemm_bf16(s, a, g->opb, g->opa, g->m, g->n, g->k, (const float *)B, g->ldb,
                                  0, (const float *)A, g->lda, 0, (float *)C, g->m, 0, 1);
    if (a->out.dtype == TG_F32) {
        const float one = 1.0f, zero = 0.0f;
        TG__CUBLAS_K(tg__cublas.Sgemm(s->blas, g->opb, g->opa, g->m, g->n, g->k, &one,
                                      (const float *)B, g->ldb, (const float *)A, g->lda, &zero,
                                      (float *)C, g->m),
                     a);
    } else {
        const double one = 1.0, zero = 0.0;
        TG__CUBLAS_K(tg__cublas.Dgemm(s->blas, g->opb, g->opa, g->m, g->n, g->k, &one,
                                      (const double *)B, g->ldb, (const double *)A, g->lda, &zero,
                                      (double *)C, g->m),
                     a);
    }
    return TG_OK;
}

static tg_status gemm_strided(tg__cuda_state *s, const tg_kargs *a, const cuda_gemm *g, int64_t sa,
                              int64_t sb, int batch) {
    const long long sc = (long long)g->n * g->m;
    if (tg_kparams_bf16(a->p, TG_KP_MATMUL_BF16))
        return tg__cuda_gemm_bf16(s, a, g->opb, g->opa, g->m, g->n, g->k,
                                  (const float *)a->in[1].data, g->ldb, sb,
                                  (const float *)a->in[0].data, g->lda, sa, (float *)a->out.data,
                                  g->m, sc, batch);
    if (a->out.dtype == TG_F32) {
        const float one = 1.0f, zero = 0.0f;
        TG__CUBLAS_K(tg__cublas.SgemmStridedBatched(s->blas, g->opb, g->opa, g->m, g->n, g->k, &one,
                                                    (const float *)a->in[1].data, g->ldb, sb,
                                                    (const float *)a->in[0].data, g->lda, sa, &zero,
                                                    (float *)a->out.data, g->m, sc, batch),
                     a);
    } else {
        const double one = 1.0, zero = 0.0;
        TG__CUBLAS_K(tg__cublas.DgemmStridedBatched(s->blas, g->opb, g->opa, g->m, g->n, g->k, &one,
                                                    (const double *)a->in[1].data, g->ldb, sb,
                                                    (const double *)a->in[0].data, g->lda, sa,
                                                    &zero, (double *)a->out.data, g->m, sc, batch),
                     a);
    }
    return TG_OK;
}

tg_status tg__cuda_matmul(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg_status st = tg__cuda_check_float(a, 2);
    if (st != TG_OK)
        return st;
    if (tg_kparams_bf16(a->p, TG_KP_MATMUL_BF16) && a->out.dtype != TG_F32)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda matmul: bf16 products take f32 operands");
    const tg_kview *A = &a->in[0], *B = &a->in[1], *C = &a->out;
    const int nd = C->ndim;
    if (nd < 2 || A->ndim != nd || B->ndim != nd)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda matmul: operands need the same ndim >= 2");
    const int nb = nd - 2;
    const int64_t n = C->shape[nb], m = C->shape[nb + 1], k = A->shape[nb + 1];
    if (A->shape[nb] != n || B->shape[nb] != k || B->shape[nb + 1] != m)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda matmul: inner dims do not match");
    int64_t batch = 1;
    int64_t sa[TG_MAX_DIMS], sb[TG_MAX_DIMS];
    for (int d = 0; d < nb; d++) {
        batch *= C->shape[d];
        if ((A->shape[d] != 1 && A->shape[d] != C->shape[d]) ||
            (B->shape[d] != 1 && B->shape[d] != C->shape[d]))
            return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda matmul: batch dim %d does not broadcast",
                                 d);
        /* A size-1 batch dim is broadcast whatever its stride. */
        sa[d] = A->shape[d] == 1 ? 0 : A->strides[d];
        sb[d] = B->shape[d] == 1 ? 0 : B->strides[d];
    }
    if (batch == 0 || n == 0 || m == 0)
        return TG_OK;
    const size_t esize = C->dtype == TG_F32 ? 4 : 8;
    if (k == 0) {
        /* An empty sum; cuBLAS would reject the leading dimensions. */
        TG__CUDA_K(cudaMemsetAsync(C->data, 0, (size_t)(batch * n * m) * esize, s->stream), a);
        return TG_OK;
    }
    tg__gemm_arg ga, gb;
    if (!tg__gemm_layout(n, k, A->strides[nb], A->strides[nb + 1], &ga) ||
        !tg__gemm_layout(k, m, B->strides[nb], B->strides[nb + 1], &gb))
        return tg__cuda_fail(a, TG_ERR_INVALID,
                             "cuda matmul: an operand has neither its last nor its second-to-last "
                             "dim contiguous");
    if (n > INT_MAX || m > INT_MAX || k > INT_MAX || ga.ld > INT_MAX || gb.ld > INT_MAX ||
        batch > INT_MAX)
        return tg__cuda_fail(a, TG_ERR_UNSUPPORTED, "cuda matmul: dims exceed cuBLAS's int range");
    /* Row-major storage is the column-major transpose, which is what the
     * swapped product wants: it goes in untransposed, and vice versa. */
    const cuda_gemm g = {ga.trans ? CUBLAS_OP_T : CUBLAS_OP_N,
                         gb.trans ? CUBLAS_OP_T : CUBLAS_OP_N,
                         (int)n,
                         (int)m,
                         (int)k,
                         (int)ga.ld,
                         (int)gb.ld};
    if (batch == 1)
        return gemm_one(s, a, &g, A->data, B->data, C->data);
    int64_t bsa, bsb;
    if (batch_stride(nb, C->shape, sa, &bsa) && batch_stride(nb, C->shape, sb, &bsb))
        return gemm_strided(s, a, &g, bsa, bsb, (int)batch);
    /* The general broadcast: one gemm per batch, walked with an odometer. */
    int64_t coord[TG_MAX_DIMS] = {0};
    int64_t offa = 0, offb = 0;
    for (int64_t t = 0; t < batch; t++) {
        st = gemm_one(s, a, &g, (const char *)A->data + offa * (int64_t)esize,
                      (const char *)B->data + offb * (int64_t)esize,
                      (char *)C->data + t * n * m * (int64_t)esize);
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
