/*
 * tapegrad/kernels.h: the backend interface.
 *
 * A backend is a struct of function pointers: memory (alloc, free, copies,
 * zero fill), synchronisation, and a kernel table indexed by tg_op. The
 * runtime never calls a device API itself; it calls these. Kernels know
 * nothing about tapes or autograd: they get strided views of their operands
 * and the op's parameters, and they write a freshly allocated contiguous
 * output (the only exceptions are the in-place helpers at the end of the
 * struct).
 *
 * A NULL kernel means "not supported on this backend": the runtime reports
 * TG_ERR_UNSUPPORTED naming the op and the backend, and never calls it.
 *
 * Two backends exist: tg_backend_cpu() (OpenBLAS + OpenMP), always present,
 * and tg_backend_cuda(), which returns NULL when the library was built
 * without CUDA.
 */
#ifndef TAPEGRAD_KERNELS_H
#define TAPEGRAD_KERNELS_H

#include "tapegrad/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A strided view of an operand. data already includes the view's offset;
 * strides are in elements and may be 0 (broadcast) but never negative. */
typedef struct tg_kview {
    void *data;
    tg_dtype dtype;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t strides[TG_MAX_DIMS];
} tg_kview;

/*
 * Parameters of one op application. Which fields mean what is fixed per op:
 *   affine:        y = f[0] * x + f[1]
 *   pow_scalar:    y = x ^ f[0]
 *   clamp, clamp_backward: lo = f[0], hi = f[1]
 *   sum/mean/max/min: axes in the bitmask `axes` (of the input), keepdim
 *   argmax, softmax, log_softmax, gather, scatter_add, concat: `axis`
 *   permute:       ints[0..ndim) the permutation
 *   slice, slice_scatter: `axis`, ints[0] start, ints[1] stop, ints[2] step
 *   cumsum:        `axis`, ints[0] = 1 to sum from the end
 *   topk_indices:  `axis`, ints[0] = k, ints[1] = 1 for the largest
 */
typedef struct tg_op_params {
    double f[4];
    int64_t ints[3 * TG_MAX_DIMS];
    uint32_t axes;
    int axis;
    bool keepdim;
} tg_op_params;

/* The autocast flag (tg_ctx_set_precision in runtime.h): the runtime sets
 * ints[TG_KP_MATMUL_BF16] of matmul's params, ints[TG_KP_CONV_BF16] of
 * conv2d's and its two gradients', and ints[TG_KP_ATTN_BF16] of
 * scaled_dot_product_attention's and its backward's (whose ints[0] is the
 * causal flag), to 1 when the operands are f32 and the context computes
 * products in bf16. A kernel then rounds the operands to bf16, accumulates
 * in f32 and writes f32, or fails with TG_ERR_UNSUPPORTED when it cannot. */
enum { TG_KP_MATMUL_BF16 = 0, TG_KP_ATTN_BF16 = 1, TG_KP_CONV_BF16 = 9 };
static inline bool tg_kparams_bf16(const tg_op_params *p, int slot)
{
    return p && p->ints[slot] == 1;
}

/* Everything one kernel call needs. err/errlen is a buffer the kernel may
 * fill with a message when it returns a status other than TG_OK. */
typedef struct tg_kargs {
    tg_op op;
    const tg_op_params *p;
    tg_kview out;
    int nin;
    tg_kview in[TG_MAX_INPUTS];
    char *err;
    size_t errlen;
} tg_kargs;

typedef tg_status (*tg_kernel_fn)(void *state, const tg_kargs *a);

/*
 * One optimizer update of one parameter, over flat contiguous buffers of n
 * elements of dtype (f32 or f64) in the backend's memory, with the rules of
 * tapegrad/optim.h (runtime/train/optim.c computes the scalars):
 *   SGD:  buf is the momentum buffer (NULL without momentum); first is true
 *         on the parameter's first step; wd is the L2 weight decay.
 *   ADAM: decay is AdamW's factor 1 - lr*wd (1 for Adam), wd the L2 term
 *         (0 for AdamW), step_size = lr / (1 - beta1^t),
 *         bc2_sqrt = sqrt(1 - beta2^t).
 * err/errlen as in tg_kargs.
 */
typedef enum tg_optim_rule {
    TG_OPTIM_RULE_SGD = 0,
    TG_OPTIM_RULE_ADAM,
} tg_optim_rule;

typedef struct tg_optim_update_args {
    tg_optim_rule rule;
    tg_dtype dtype;
    int64_t n;
    void *p;
    const void *g;
    void *buf, *m, *v;
    double lr, wd, momentum, dampening;
    bool nesterov, first;
    double decay, beta1, beta2, eps, step_size, bc2_sqrt;
    char *err;
    size_t errlen;
} tg_optim_update_args;

typedef struct tg_backend {
    const char *name;
    tg_device device;
    /* Create and destroy the backend's per-context state (streams, handles,
     * thread settings). threads <= 0 means the library default. */
    tg_status (*init)(void **state, int threads, char *err, size_t errlen);
    void (*release)(void *state);
    /* Device memory. alloc returns NULL on failure; memory is 64-byte aligned. */
    void *(*alloc)(void *state, size_t nbytes);
    void (*free)(void *state, void *ptr);
    tg_status (*copy_h2d)(void *state, void *dst, const void *src, size_t nbytes);
    tg_status (*copy_d2h)(void *state, void *dst, const void *src, size_t nbytes);
    tg_status (*copy_d2d)(void *state, void *dst, const void *src, size_t nbytes);
    tg_status (*zero)(void *state, void *dst, size_t nbytes);
    /* Wait for all queued work of this context. */
    tg_status (*synchronize)(void *state);
    /* (optional) Called at every tg_step_reset, on the thread that calls it
     * (the CPU backend's spin watch). */
    void (*step)(void *state);
    /* In-place helpers used by gradient accumulation and optimizers:
     * dst[i] += alpha * src[i], dst[i] *= alpha, dst[i] = value; contiguous,
     * n elements of a float dtype. */
    tg_status (*axpy)(void *state, tg_dtype dt, int64_t n, double alpha, const void *src, void *dst);
    tg_status (*scale)(void *state, tg_dtype dt, int64_t n, double alpha, void *dst);
    tg_status (*fill)(void *state, tg_dtype dt, int64_t n, double value, void *dst);
    /* (optional) One fused optimizer update (tg_optim_update_args). NULL:
     * the runtime runs its host loop, which needs host-addressable memory. */
    tg_status (*optim_update)(void *state, const tg_optim_update_args *a);
    /* The kernel table, indexed by tg_op. */
    tg_kernel_fn kernels[TG_OP_COUNT];
} tg_backend;

/* The CPU backend; always available. */
const tg_backend *tg_backend_cpu(void);
/* The CUDA backend, or NULL when built without CUDA. */
const tg_backend *tg_backend_cuda(void);
/* Number of CUDA devices visible (0 without CUDA or without a GPU). */
int tg_cuda_device_count(void);
/* Whether this process can make CUDA contexts: cuBLAS (opened at run time),
 * the NVIDIA driver (libcuda.so.1) and at least one visible GPU. TG_OK, else
 * TG_ERR_UNSUPPORTED with a message in err naming what is missing (the
 * library and why the loader refused it). Without CUDA: TG_ERR_UNSUPPORTED. */
tg_status tg_cuda_available(char *err, size_t len);
/* Makes GPU `device` the calling thread's current device; TG_ERR_BACKEND with
 * the CUDA error in err on failure (TG_ERR_UNSUPPORTED without CUDA). */
tg_status tg_cuda_set_device(int device, char *err, size_t len);
/* A few lines for `tapegrad --version`: whether the CUDA backend is built,
 * and where the driver, cuBLAS and NCCL were found (or why not), and how
 * many GPUs are visible. Always NUL-terminated. */
void tg_cuda_describe(char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
