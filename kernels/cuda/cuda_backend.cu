/* The CUDA backend: device memory, copies and synchronisation on the
 * context's own stream. The kernel table is filled family by family; a NULL
 * entry makes the runtime report the op as unsupported on this backend. */
#include "tapegrad/kernels.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

struct tg_cuda_state {
    cudaStream_t stream;
    int device;
};

/* Turns a CUDA error into a status with the call and file:line. */
#define CUDA_TRY(call, err, errlen)                                                            \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            if (err)                                                                           \
                snprintf(err, errlen, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__,     \
                         cudaGetErrorString(e_));                                              \
            return TG_ERR_BACKEND;                                                             \
        }                                                                                      \
    } while (0)

static tg_status cuda_init(void **state, int threads, char *err, size_t errlen)
{
    (void)threads;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        snprintf(err, errlen, "no CUDA device is available");
        return TG_ERR_UNSUPPORTED;
    }
    struct tg_cuda_state *s = (struct tg_cuda_state *)calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return TG_ERR_NOMEM;
    }
    CUDA_TRY(cudaGetDevice(&s->device), err, errlen);
    CUDA_TRY(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), err, errlen);
    *state = s;
    return TG_OK;
}

static void cuda_release(void *state)
{
    struct tg_cuda_state *s = (struct tg_cuda_state *)state;
    if (!s)
        return;
    cudaStreamSynchronize(s->stream);
    cudaStreamDestroy(s->stream);
    free(s);
}

static void *cuda_alloc(void *state, size_t nbytes)
{
    (void)state;
    void *p = NULL;
    return cudaMalloc(&p, nbytes) == cudaSuccess ? p : NULL;
}

static void cuda_free(void *state, void *ptr)
{
    (void)state;
    cudaFree(ptr);
}

static tg_status cuda_copy(void *state, void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    struct tg_cuda_state *s = (struct tg_cuda_state *)state;
    CUDA_TRY(cudaMemcpyAsync(dst, src, n, kind, s->stream), NULL, 0);
    /* Host-side buffers may be reused by the caller right away. */
    if (kind != cudaMemcpyDeviceToDevice)
        CUDA_TRY(cudaStreamSynchronize(s->stream), NULL, 0);
    return TG_OK;
}

static tg_status cuda_h2d(void *st, void *d, const void *s, size_t n)
{
    return cuda_copy(st, d, s, n, cudaMemcpyHostToDevice);
}
static tg_status cuda_d2h(void *st, void *d, const void *s, size_t n)
{
    return cuda_copy(st, d, s, n, cudaMemcpyDeviceToHost);
}
static tg_status cuda_d2d(void *st, void *d, const void *s, size_t n)
{
    return cuda_copy(st, d, s, n, cudaMemcpyDeviceToDevice);
}

static tg_status cuda_zero(void *state, void *dst, size_t n)
{
    struct tg_cuda_state *s = (struct tg_cuda_state *)state;
    CUDA_TRY(cudaMemsetAsync(dst, 0, n, s->stream), NULL, 0);
    return TG_OK;
}

static tg_status cuda_sync(void *state)
{
    struct tg_cuda_state *s = (struct tg_cuda_state *)state;
    CUDA_TRY(cudaStreamSynchronize(s->stream), NULL, 0);
    return TG_OK;
}

template <typename T> __global__ void k_axpy(int64_t n, T alpha, const T *x, T *y)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] += alpha * x[i];
}

template <typename T> __global__ void k_scale(int64_t n, T alpha, T *y)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] *= alpha;
}

template <typename T> __global__ void k_fill(int64_t n, T v, T *y)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = v;
}

static unsigned blocks_for(int64_t n) { return (unsigned)((n + 255) / 256); }

static tg_status cuda_axpy(void *state, tg_dtype dt, int64_t n, double alpha, const void *x, void *y)
{
    struct tg_cuda_state *s = (struct tg_cuda_state *)state;
    if (n == 0)
        return TG_OK;
    if (dt == TG_F32)
        k_axpy<float><<<blocks_for(n), 256, 0, s->stream>>>(n, (float)alpha, (const float *)x, (float *)y);
    else if (dt == TG_F64)
        k_axpy<double><<<blocks_for(n), 256, 0, s->stream>>>(n, alpha, (const double *)x, (double *)y);
    else
        return TG_ERR_DTYPE;
    CUDA_TRY(cudaGetLastError(), NULL, 0);
    return TG_OK;
}

static tg_status cuda_scale(void *state, tg_dtype dt, int64_t n, double alpha, void *y)
{
    struct tg_cuda_state *s = (struct tg_cuda_state *)state;
    if (n == 0)
        return TG_OK;
    if (dt == TG_F32)
        k_scale<float><<<blocks_for(n), 256, 0, s->stream>>>(n, (float)alpha, (float *)y);
    else if (dt == TG_F64)
        k_scale<double><<<blocks_for(n), 256, 0, s->stream>>>(n, alpha, (double *)y);
    else
        return TG_ERR_DTYPE;
    CUDA_TRY(cudaGetLastError(), NULL, 0);
    return TG_OK;
}

static tg_status cuda_fill(void *state, tg_dtype dt, int64_t n, double v, void *y)
{
    struct tg_cuda_state *s = (struct tg_cuda_state *)state;
    if (n == 0)
        return TG_OK;
    if (dt == TG_F32)
        k_fill<float><<<blocks_for(n), 256, 0, s->stream>>>(n, (float)v, (float *)y);
    else if (dt == TG_F64)
        k_fill<double><<<blocks_for(n), 256, 0, s->stream>>>(n, v, (double *)y);
    else
        return TG_ERR_DTYPE;
    CUDA_TRY(cudaGetLastError(), NULL, 0);
    return TG_OK;
}

static tg_backend make_backend(void)
{
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
    return b;
}

static const tg_backend cuda_backend = make_backend();

extern "C" const tg_backend *tg_backend_cuda(void) { return &cuda_backend; }

extern "C" int tg_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess)
        return 0;
    return n;
}
