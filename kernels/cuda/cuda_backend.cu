/*
 * kernels/cuda/cuda_backend.cu: the CUDA backend's function table, its
 * per-context state, memory, copies and synchronisation on the context's
 * own stream, the in-place helpers, and the helpers the kernel files share.
 */
#include <stdarg.h>
#include <stdlib.h>

#include "cuda.h"

/* cudaMalloc aligns to at least 256 bytes, more than the 64 the interface
 * promises; a zero-byte request still gets a real pointer, as on the CPU. */
#define CUDA_MIN_ALLOC 256

tg_status tg__cuda_fail(const tg_kargs *a, tg_status st, const char *fmt, ...) {
    if (a->err && a->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(a->err, a->errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

tg_status tg__cuda_check_float(const tg_kargs *a, int nin) {
    const tg_dtype dt = a->out.dtype;
    if (dt != TG_F32 && dt != TG_F64)
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda %s: output dtype %s is not a float dtype",
                             tg_op_name(a->op), tg_dtype_name(dt));
    for (int i = 0; i < nin; i++) {
        if (a->in[i].dtype != dt)
            return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda %s: input %d has dtype %s, expected %s",
                                 tg_op_name(a->op), i, tg_dtype_name(a->in[i].dtype),
                                 tg_dtype_name(dt));
    }
    return TG_OK;
}

/* ---- strided geometry ---- */

void tg__cuda_geom_init(tg__cuda_geom *g, int ndim, const int64_t *shape) {
    g->ndim = ndim;
    g->nops = 0;
    for (int d = 0; d < ndim; d++)
        g->shape[d] = shape[d];
}

void tg__cuda_geom_add(tg__cuda_geom *g, const int64_t *strides) {
    const int k = g->nops++;
    for (int d = 0; d < g->ndim; d++)
        g->st[k][d] = strides[d];
}

void tg__cuda_geom_collapse(tg__cuda_geom *g) {
    int nd = 0;
    for (int d = 0; d < g->ndim; d++) {
        if (g->shape[d] == 1)
            continue;
        g->shape[nd] = g->shape[d];
        for (int k = 0; k < g->nops; k++)
            g->st[k][nd] = g->st[k][d];
        nd++;
    }
    if (nd == 0) {
        /* A single element: one dim of size 1, every offset 0. */
        g->ndim = 1;
        g->shape[0] = 1;
        for (int k = 0; k < g->nops; k++)
            g->st[k][0] = 0;
        return;
    }
    /* Dim `last` absorbs dim d when one step along last equals a full sweep
     * of d for every operand; d then becomes the inner part of the merge. */
    int last = 0;
    for (int d = 1; d < nd; d++) {
        bool merge = true;
        for (int k = 0; k < g->nops && merge; k++)
            merge = g->st[k][last] == g->st[k][d] * g->shape[d];
        if (merge) {
            g->shape[last] *= g->shape[d];
            for (int k = 0; k < g->nops; k++)
                g->st[k][last] = g->st[k][d];
        } else {
            last++;
            g->shape[last] = g->shape[d];
            for (int k = 0; k < g->nops; k++)
                g->st[k][last] = g->st[k][d];
        }
    }
    g->ndim = last + 1;
}

/* ---- lifetime ---- */

/* Records a failed CUDA call of cuda_init and jumps to the cleanup label. */
#define INIT_TRY(call, label)                                                              \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            if (err)                                                                       \
                snprintf(err, errlen, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__, \
                         cudaGetErrorString(e_));                                          \
            goto label;                                                                    \
        }                                                                                  \
    } while (0)
#define INIT_BLAS_TRY(call, label)                                                         \
    do {                                                                                   \
        cublasStatus_t e_ = (call);                                                        \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                                                 \
            if (err)                                                                       \
                snprintf(err, errlen, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__, \
                         tg__cublas.GetStatusString(e_));                                  \
            goto label;                                                                    \
        }                                                                                  \
    } while (0)

static tg_status cuda_init(void **state, int threads, char *err, size_t errlen) {
    (void)threads;
    int n = 0;
    tg__cuda_state *s = NULL;
    /* cuBLAS is opened at run time (cuda_loader.c): a node without it can
     * still run CPU contexts. */
    char why[1024];
    if (tg__cublas_load(why, sizeof why) != TG_OK) {
        if (err)
            snprintf(err, errlen, "cuda backend: %s", why);
        return TG_ERR_UNSUPPORTED;
    }
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        if (err)
            snprintf(err, errlen, "cuda backend: no CUDA device is available (%s)",
                     e != cudaSuccess ? cudaGetErrorString(e) : "none visible");
        (void)cudaGetLastError();
        return TG_ERR_UNSUPPORTED;
    }
    s = (tg__cuda_state *)calloc(1, sizeof *s);
    if (!s) {
        if (err)
            snprintf(err, errlen, "cuda backend: out of memory allocating its state");
        return TG_ERR_NOMEM;
    }
    /* The context lives on the device current when it is made. */
    INIT_TRY(cudaGetDevice(&s->device), out_state);
    INIT_TRY(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), out_state);
    INIT_TRY(cudaMalloc(&s->bad, sizeof *s->bad), out_stream);
    INIT_TRY(cudaMalloc(&s->scratch, TG__CUDA_SCRATCH * sizeof *s->scratch), out_bad);
    INIT_BLAS_TRY(tg__cublas.Create(&s->blas), out_scratch);
    /* The handle queues its work on the context's stream. Default math
     * keeps f32 products in f32 (no TF32 tensor cores), which is what the
     * CPU results are compared with. */
    INIT_BLAS_TRY(tg__cublas.SetStream(s->blas, s->stream), out_blas);
    INIT_BLAS_TRY(tg__cublas.SetMathMode(s->blas, CUBLAS_DEFAULT_MATH), out_blas);
    *state = s;
    return TG_OK;
out_blas:
    (void)tg__cublas.Destroy(s->blas);
out_scratch:
    (void)cudaFree(s->scratch);
out_bad:
    (void)cudaFree(s->bad);
out_stream:
    (void)cudaStreamDestroy(s->stream);
out_state:
    free(s);
    return TG_ERR_BACKEND;
}
#undef INIT_TRY
#undef INIT_BLAS_TRY

static void cuda_release(void *state) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    if (!s)
        return;
    /* Release cannot report: the queued work is waited for and every handle
     * is destroyed whatever an earlier step returned. */
    (void)cudaStreamSynchronize(s->stream);
    (void)tg__cublas.Destroy(s->blas);
    (void)cudaFree(s->scratch);
    (void)cudaFree(s->lo);
    (void)cudaFree(s->bad);
    (void)cudaStreamDestroy(s->stream);
    free(s);
}

/* ---- memory ---- */

static void *cuda_alloc(void *state, size_t nbytes) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, nbytes > CUDA_MIN_ALLOC ? nbytes : CUDA_MIN_ALLOC);
    if (e != cudaSuccess) {
        snprintf(s->err, sizeof s->err, "cudaMalloc of %zu bytes failed at %s:%d: %s", nbytes,
                 __FILE__, __LINE__, cudaGetErrorString(e));
        /* An allocation failure is sticky for nothing else: clear it so
         * that the next cudaGetLastError does not blame a kernel. */
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_free(void *state, void *ptr) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    /* cudaFree waits for the device, so no queued kernel still uses ptr. */
    cudaError_t e = cudaFree(ptr);
    if (e != cudaSuccess)
        snprintf(s->err, sizeof s->err, "cudaFree failed at %s:%d: %s", __FILE__, __LINE__,
                 cudaGetErrorString(e));
}

/*
 * Copies go on the context's stream, behind every kernel queued before them.
 * The runtime reads a device-to-host result as soon as the call returns and
 * may reuse or free a host source right away (tg_fill_ copies from a stack
 * variable), so copies that touch the host wait for the stream;
 * device-to-device copies stay queued.
 */
static tg_status cuda_copy(void *state, void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    if (n == 0)
        return TG_OK;
    TG__CUDA_TRY(cudaMemcpyAsync(dst, src, n, kind, s->stream), s->err, sizeof s->err);
    if (kind != cudaMemcpyDeviceToDevice)
        TG__CUDA_TRY(cudaStreamSynchronize(s->stream), s->err, sizeof s->err);
    return TG_OK;
}

static tg_status cuda_h2d(void *st, void *d, const void *s, size_t n) {
    return cuda_copy(st, d, s, n, cudaMemcpyHostToDevice);
}
static tg_status cuda_d2h(void *st, void *d, const void *s, size_t n) {
    return cuda_copy(st, d, s, n, cudaMemcpyDeviceToHost);
}
static tg_status cuda_d2d(void *st, void *d, const void *s, size_t n) {
    return cuda_copy(st, d, s, n, cudaMemcpyDeviceToDevice);
}

static tg_status cuda_zero(void *state, void *dst, size_t n) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    if (n == 0)
        return TG_OK;
    TG__CUDA_TRY(cudaMemsetAsync(dst, 0, n, s->stream), s->err, sizeof s->err);
    return TG_OK;
}

static tg_status cuda_sync(void *state) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    TG__CUDA_TRY(cudaStreamSynchronize(s->stream), s->err, sizeof s->err);
    return TG_OK;
}

/* ---- in-place helpers ---- */

template <typename T> __global__ void k_axpy(int64_t n, T alpha, const T *x, T *y) {
    TG__CUDA_FOR(i, n) y[i] += alpha * x[i];
}

template <typename T> __global__ void k_scale(int64_t n, T alpha, T *y) {
    TG__CUDA_FOR(i, n) y[i] *= alpha;
}

template <typename T> __global__ void k_fill(int64_t n, T v, T *y) { TG__CUDA_FOR(i, n) y[i] = v; }

static tg_status cuda_axpy(void *state, tg_dtype dt, int64_t n, double alpha, const void *x,
                           void *y) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    if (n <= 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (dt == TG_F32)
        k_axpy<float>
            <<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, (float)alpha, (const float *)x, (float *)y);
    else if (dt == TG_F64)
        k_axpy<double>
            <<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, alpha, (const double *)x, (double *)y);
    else
        return TG_ERR_DTYPE;
    TG__CUDA_TRY(cudaGetLastError(), s->err, sizeof s->err);
    return TG_OK;
}

static tg_status cuda_scale(void *state, tg_dtype dt, int64_t n, double alpha, void *y) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    if (n <= 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (dt == TG_F32)
        k_scale<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, (float)alpha, (float *)y);
    else if (dt == TG_F64)
        k_scale<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, alpha, (double *)y);
    else
        return TG_ERR_DTYPE;
    TG__CUDA_TRY(cudaGetLastError(), s->err, sizeof s->err);
    return TG_OK;
}

static tg_status cuda_fill(void *state, tg_dtype dt, int64_t n, double v, void *y) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    if (n <= 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (dt == TG_F32)
        k_fill<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, (float)v, (float *)y);
    else if (dt == TG_F64)
        k_fill<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, v, (double *)y);
    else
        return TG_ERR_DTYPE;
    TG__CUDA_TRY(cudaGetLastError(), s->err, sizeof s->err);
    return TG_OK;
}

/* ---- the table ---- */

/* The rows of ops.def, counted independently of the enum. */
static constexpr int cuda_op_rows = 0
#define TG_OP(E, name, arity, flags) +1
#include "tapegrad/ops.def"
#undef TG_OP
    ;

static tg_backend make_backend(void) {
    /* C++ has no designated initializers for arrays: fill field by field. */
    tg_backend b = {};
    b.name = "cuda";
    b.device = TG_DEVICE_CUDA;
    b.init = cuda_init;
    b.release = cuda_release;
    b.alloc = cuda_alloc;
    b.free = cuda_free;
    b.copy_h2d = cuda_h2d;
    b.copy_d2h = cuda_d2h;
    b.copy_d2d = cuda_d2d;
    b.zero = cuda_zero;
    b.synchronize = cuda_sync;
    b.axpy = cuda_axpy;
    b.scale = cuda_scale;
    b.fill = cuda_fill;
    b.optim_update = tg__cuda_optim_update;
    /* One assignment per row, each naming tg__cuda_<name>: a row without a
     * kernel (or an explicit NULL in cuda.h) fails to compile. */
#define TG_OP(E, name, arity, flags) b.kernels[TG_OP_##E] = tg__cuda_##name;
#include "tapegrad/ops.def"
#undef TG_OP
    return b;
}

static_assert(sizeof(((tg_backend *)0)->kernels) / sizeof(tg_kernel_fn) == TG_OP_COUNT,
              "the cuda kernel table must have one entry per op");
static_assert(cuda_op_rows == TG_OP_COUNT, "ops.def and the op enum disagree");

static const tg_backend cuda_backend = make_backend();

extern "C" const tg_backend *tg_backend_cuda(void) { return &cuda_backend; }

extern "C" int tg_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        /* No driver or no device: clear the error so that it is not
         * reported later by an unrelated call. */
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}
