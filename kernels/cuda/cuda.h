/*
 * kernels/cuda/cuda.h: private header of the CUDA backend (CUDA + cuBLAS).
 *
 * Every op row of tapegrad/ops.def has a kernel tg__cuda_<name> declared
 * here; the kernel table in cuda_backend.cu is generated from ops.def and
 * names each of them, so a row without a kernel fails to compile. View rows
 * get a NULL kernel because the runtime never dispatches them.
 *
 * The kernels follow the contract of tapegrad/kernels.h and the semantics of
 * the CPU kernels (kernels/cpu/), which are the reference: strided input
 * views, a fresh contiguous output, the op's parameters in tg_op_params.
 * All work is queued on the context's stream; a kernel returns once its
 * work is queued, except where it must read a result back to report an
 * error (gather and scatter_add check their indices).
 *
 * The header also carries what the kernel files share: the per-context
 * state, the macros that turn CUDA and cuBLAS errors into statuses, the
 * launch geometry and a strided-offset helper for device code.
 */
#ifndef TG_KERNELS_CUDA_H
#define TG_KERNELS_CUDA_H

#include <cuda_runtime.h>
#include <inttypes.h>
#include <stdio.h>

#include "tapegrad/kernels.h"
#define TG__WANT_CUBLAS
#include "cuda/cuda_loader.h"
#include "kview.h"

/* Doubles in the per-context scratch buffer: the partial sums of
 * cross_entropy's row blocks, one per block of its first pass. */
#define TG__CUDA_SCRATCH 1024

/* Per-context state: the stream all work goes on, the cuBLAS handle bound
 * to it, the device the context was made on, one device word that the
 * indexing kernels use to report the first bad index, and a small device
 * scratch buffer allocated once at init (so that no kernel allocates). err
 * keeps the message of the last failed memory call, which has no error
 * buffer of its own. */
typedef struct tg__cuda_state {
    cudaStream_t stream;
    cublasHandle_t blas;
    int device;
    unsigned long long *bad;
    double *scratch;
    /* bf16 copies of a product's f32 operands (autocast): grown, never
     * shrunk, so a steady step allocates nothing. */
    void *lo;
    size_t lo_cap;
    char err[256];
} tg__cuda_state;

/* Column-major C = op(A) op(B) (m x n, k inner; `batch` problems strideA,
 * strideB, strideC elements apart) with f32 A, B, C: A and B are rounded to
 * bf16 (nearest even) into s->lo and multiplied by cublasGemmStridedBatchedEx
 * with f32 accumulation (CUBLAS_COMPUTE_32F). The autocast product of the
 * matmul and convolution kernels (cuda_matmul.cu). */
tg_status tg__cuda_gemm_bf16(tg__cuda_state *s, const tg_kargs *a, cublasOperation_t ta,
                             cublasOperation_t tb, int m, int n, int k, const float *A, int lda,
                             long long sA, const float *B, int ldb, long long sB, float *C,
                             int ldc, long long sC, int batch);

/* ---- kernels, one per ops.def row ---- */

#define TG__CUDA_KERNEL(name) tg_status tg__cuda_##name(void *state, const tg_kargs *a)
/* cuda_elementwise.cu */
TG__CUDA_KERNEL(add);
TG__CUDA_KERNEL(sub);
TG__CUDA_KERNEL(mul);
TG__CUDA_KERNEL(div);
TG__CUDA_KERNEL(eq);
TG__CUDA_KERNEL(relu_backward);
TG__CUDA_KERNEL(clamp_backward);
TG__CUDA_KERNEL(gelu_backward);
TG__CUDA_KERNEL(where);
TG__CUDA_KERNEL(neg);
TG__CUDA_KERNEL(affine);
TG__CUDA_KERNEL(pow_scalar);
TG__CUDA_KERNEL(exp);
TG__CUDA_KERNEL(log);
TG__CUDA_KERNEL(sqrt);
TG__CUDA_KERNEL(abs);
TG__CUDA_KERNEL(erf);
TG__CUDA_KERNEL(relu);
TG__CUDA_KERNEL(sigmoid);
TG__CUDA_KERNEL(tanh);
TG__CUDA_KERNEL(silu);
TG__CUDA_KERNEL(gelu);
TG__CUDA_KERNEL(clamp);
TG__CUDA_KERNEL(sign);
TG__CUDA_KERNEL(ne);
TG__CUDA_KERNEL(gt);
TG__CUDA_KERNEL(ge);
TG__CUDA_KERNEL(lt);
TG__CUDA_KERNEL(le);
TG__CUDA_KERNEL(maximum);
TG__CUDA_KERNEL(minimum);
TG__CUDA_KERNEL(sin);
TG__CUDA_KERNEL(cos);
/* cuda_ops2.cu */
TG__CUDA_KERNEL(cast);
TG__CUDA_KERNEL(cumsum);
TG__CUDA_KERNEL(topk_indices);
tg_status tg__cuda_sum_int(void *state, const tg_kargs *a);
/* cuda_reduce.cu */
TG__CUDA_KERNEL(sum);
TG__CUDA_KERNEL(mean);
TG__CUDA_KERNEL(max);
TG__CUDA_KERNEL(min);
TG__CUDA_KERNEL(argmax);
/* cuda_matmul.cu */
TG__CUDA_KERNEL(matmul);
/* cuda_shape.cu */
TG__CUDA_KERNEL(copy);
TG__CUDA_KERNEL(reshape);
TG__CUDA_KERNEL(slice_scatter);
/* world_sum's local part: a copy (the collective sums it in place) */
TG__CUDA_KERNEL(world_sum);
TG__CUDA_KERNEL(concat);
/* cuda_softmax.cu */
TG__CUDA_KERNEL(softmax);
TG__CUDA_KERNEL(log_softmax);
TG__CUDA_KERNEL(gather);
TG__CUDA_KERNEL(scatter_add);
/* cuda_loss.cu */
TG__CUDA_KERNEL(cross_entropy);
TG__CUDA_KERNEL(cross_entropy_backward);
TG__CUDA_KERNEL(dropout);
/* cuda_conv.cu */
TG__CUDA_KERNEL(conv2d);
TG__CUDA_KERNEL(conv2d_backward_input);
TG__CUDA_KERNEL(conv2d_backward_weight);
/* cuda_pool.cu */
TG__CUDA_KERNEL(max_pool2d);
TG__CUDA_KERNEL(max_pool2d_indices);
TG__CUDA_KERNEL(max_pool2d_backward);
TG__CUDA_KERNEL(avg_pool2d);
TG__CUDA_KERNEL(avg_pool2d_backward);
/* cuda_norm.cu */
TG__CUDA_KERNEL(batch_norm);
TG__CUDA_KERNEL(batch_norm_backward);
/* cuda_lnorm.cu */
TG__CUDA_KERNEL(layer_norm);
TG__CUDA_KERNEL(layer_norm_backward);
/* cuda_attn.cu */
TG__CUDA_KERNEL(scaled_dot_product_attention);
TG__CUDA_KERNEL(scaled_dot_product_attention_backward);
#undef TG__CUDA_KERNEL

/* cuda_optim.cu: the backend's optim_update member. */
tg_status tg__cuda_optim_update(void *state, const tg_optim_update_args *a);

/* Views only change strides; the runtime never dispatches a kernel for them. */
#define tg__cuda_permute NULL
#define tg__cuda_broadcast_to NULL
#define tg__cuda_slice NULL

/* ---- error handling ---- */

/*
 * Each macro runs one foreign call and, when it fails, writes "<call> failed
 * at <file>:<line>: <error string>" into (err, errlen) when err is not NULL,
 * then returns TG_ERR_BACKEND from the enclosing function.
 */
static inline void tg__cuda_report(char *err, size_t errlen, const char *call, const char *file,
                                   int line, const char *what) {
    if (err && errlen > 0)
        snprintf(err, errlen, "%s failed at %s:%d: %s", call, file, line, what);
}

#define TG__CUDA_TRY(call, err, errlen)                                                      \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            tg__cuda_report(err, errlen, #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
            return TG_ERR_BACKEND;                                                           \
        }                                                                                    \
    } while (0)

#define TG__CUBLAS_TRY(call, err, errlen)                           \
    do {                                                            \
        cublasStatus_t e_ = (call);                                 \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                          \
            tg__cuda_report(err, errlen, #call, __FILE__, __LINE__, \
                            tg__cublas.GetStatusString(e_));        \
            return TG_ERR_BACKEND;                                  \
        }                                                           \
    } while (0)

/* The kernel-call forms: the message goes to the call's error buffer. */
#define TG__CUDA_K(call, a) TG__CUDA_TRY(call, (a)->err, (a)->errlen)
#define TG__CUBLAS_K(call, a) TG__CUBLAS_TRY(call, (a)->err, (a)->errlen)
/* After a <<<...>>> launch: a bad configuration is reported at once; faults
 * inside the kernel surface at the next synchronising call. */
#define TG__CUDA_LAUNCHED(a) TG__CUDA_K(cudaGetLastError(), a)

/* Writes a message into a->err (when there is room) and returns st. */
tg_status tg__cuda_fail(const tg_kargs *a, tg_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* TG_OK when the output and inputs 0..nin-1 share one float dtype. */
tg_status tg__cuda_check_float(const tg_kargs *a, int nin);

/* ---- launch geometry ---- */

/* Threads per block for the simple kernels, and the most blocks one launch
 * uses: the kernels walk their range with a grid-stride loop, so a cap on
 * the grid only changes how many elements each thread takes. */
#define TG__CUDA_THREADS 256
#define TG__CUDA_MAX_BLOCKS 65535

static inline unsigned tg__cuda_blocks(int64_t n) {
    int64_t b = (n + TG__CUDA_THREADS - 1) / TG__CUDA_THREADS;
    if (b < 1)
        b = 1;
    return (unsigned)(b < TG__CUDA_MAX_BLOCKS ? b : TG__CUDA_MAX_BLOCKS);
}

/* ---- strided operands ---- */

/* The output and up to three inputs (where) walked over one shape. */
#define TG__CUDA_MAX_OPERANDS 4

/*
 * An iteration shape and the element strides of each operand over it,
 * passed to kernels by value. Element i of the iteration (row-major over
 * shape) is at offset sum_d coord_d(i) * st[k][d] in operand k.
 */
typedef struct tg__cuda_geom {
    int ndim;
    int nops;
    int64_t shape[TG_MAX_DIMS];
    int64_t st[TG__CUDA_MAX_OPERANDS][TG_MAX_DIMS];
} tg__cuda_geom;

/* Starts a geometry over shape; operands are added in order, output first. */
void tg__cuda_geom_init(tg__cuda_geom *g, int ndim, const int64_t *shape);
void tg__cuda_geom_add(tg__cuda_geom *g, const int64_t *strides);
/* Drops size-1 dims and merges neighbours that every operand steps over as
 * one; the offsets of every element are unchanged. */
void tg__cuda_geom_collapse(tg__cuda_geom *g);

static inline bool tg__cuda_same_shape(const tg_kview *x, const tg_kview *y) {
    if (x->ndim != y->ndim)
        return false;
    for (int d = 0; d < x->ndim; d++) {
        if (x->shape[d] != y->shape[d])
            return false;
    }
    return true;
}

#ifdef __CUDACC__
/* Offsets of element i in the first N operands of g. */
template <int N>
__device__ __forceinline__ void tg__cuda_offsets(const tg__cuda_geom &g, int64_t i, int64_t *off) {
#pragma unroll
    for (int k = 0; k < N; k++)
        off[k] = 0;
    for (int d = g.ndim - 1; d >= 0; d--) {
        const int64_t c = i % g.shape[d];
        i /= g.shape[d];
#pragma unroll
        for (int k = 0; k < N; k++)
            off[k] += c * g.st[k][d];
    }
}

/* Reads element i of an integer index array (u8, i32 or i64). */
__device__ __forceinline__ int64_t tg__cuda_index_at(const void *p, tg_dtype dt, int64_t i) {
    switch (dt) {
    case TG_U8:
        return ((const uint8_t *)p)[i];
    case TG_I32:
        return ((const int32_t *)p)[i];
    default:
        return ((const int64_t *)p)[i];
    }
}

/* The grid-stride loop every simple kernel uses. */
#define TG__CUDA_FOR(i, n)                                                    \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)blockDim.x * gridDim.x)
#endif

#endif
