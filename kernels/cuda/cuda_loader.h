/*
 * kernels/cuda/cuda_loader.h: the CUDA libraries that are loaded at run time.
 *
 * A CUDA build links the CUDA runtime statically (libcudart_static.a, which
 * itself opens the driver, libcuda.so.1, on first use) and opens cuBLAS and
 * NCCL with dlopen, by their versioned sonames, the first time a CUDA context
 * or an NCCL communicator is made. So one binary starts and trains on the CPU
 * on a node without any of them, and only --device cuda needs them.
 *
 * Each library has one table of the functions the project calls, resolved
 * once with dlsym. tg__cublas_load / tg__nccl_load return TG_OK once every
 * function of the table was found, else TG_ERR_UNSUPPORTED with a message
 * naming the library (and the function, when the library lacks one). The
 * tables are only read after a successful load.
 */
#ifndef TG_KERNELS_CUDA_LOADER_H
#define TG_KERNELS_CUDA_LOADER_H

#include <stddef.h>

#include "tapegrad/base.h"

#ifdef __cplusplus
#define TG__FN_TYPE(sym) decltype(&sym)
extern "C" {
#else
#define TG__FN_TYPE(sym) __typeof__(&sym)
#endif

/* A library's description: its soname, the directory of the toolkit the
 * build used (tried when the soname alone is not found), and its table. */
typedef struct tg__dl_lib {
    const char *what;      /* "cuBLAS" */
    const char *soname;    /* "libcublas.so.13" */
    const char *fallback;  /* a directory, or "" */
    const char *const *names;
    void **fns;
    size_t count;
} tg__dl_lib;

/* Opens lib and resolves every name of its table into fns, once per process
 * (later calls return the first outcome and its message). handle: where the
 * dlopen handle is kept. On failure err gets the message. */
tg_status tg__dl_load(const tg__dl_lib *lib, void **handle, char *err, size_t errlen);

/* Where a loaded library was found (its path), or NULL when not loaded. */
const char *tg__dl_path(void *handle, char *buf, size_t len);

/* For tg_cuda_describe (comm/nccl_loader.c): loads NCCL; true with its path
 * in path, or false with the reason in msg. */
bool tg__nccl_describe(char *path, size_t plen, char *msg, size_t mlen);

#ifdef __cplusplus
}
#endif

/* ---- cuBLAS ---- */
#ifdef TG__WANT_CUBLAS
#include <cublas_v2.h>

/* X(member, symbol): every cuBLAS function the backend calls. */
#define TG__CUBLAS_FUNCS(X)                             \
    X(Create, cublasCreate_v2)                          \
    X(Destroy, cublasDestroy_v2)                        \
    X(SetStream, cublasSetStream_v2)                    \
    X(SetMathMode, cublasSetMathMode)                   \
    X(GetStatusString, cublasGetStatusString)           \
    X(Sgemm, cublasSgemm_v2)                            \
    X(Dgemm, cublasDgemm_v2)                            \
    X(SgemmStridedBatched, cublasSgemmStridedBatched)   \
    X(DgemmStridedBatched, cublasDgemmStridedBatched)

/* Y(member, symbol, type): functions whose C++ declaration is overloaded
 * (cublas_api.h adds a C++ variant), so decltype cannot name their C type:
 * it is spelled out. */
typedef cublasStatus_t (*tg__cublas_gemm_sbex_fn)(
    cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
    const void *, cudaDataType, int, long long, const void *, cudaDataType, int, long long,
    const void *, void *, cudaDataType, int, long long, int, cublasComputeType_t, cublasGemmAlgo_t);
#define TG__CUBLAS_FUNCS_TYPED(Y) \
    Y(GemmStridedBatchedEx, cublasGemmStridedBatchedEx, tg__cublas_gemm_sbex_fn)

typedef struct tg__cublas_api {
#define TG__X(m, sym) TG__FN_TYPE(sym) m;
    TG__CUBLAS_FUNCS(TG__X)
#undef TG__X
#define TG__Y(m, sym, type) type m;
    TG__CUBLAS_FUNCS_TYPED(TG__Y)
#undef TG__Y
} tg__cublas_api;

#ifdef __cplusplus
extern "C" {
#endif
/* The table; valid after tg__cublas_load returned TG_OK. */
extern tg__cublas_api tg__cublas;
tg_status tg__cublas_load(char *err, size_t errlen);
#ifdef __cplusplus
}
#endif
#endif /* TG__WANT_CUBLAS */

/* ---- NCCL ---- */
#ifdef TG__WANT_NCCL
#include <nccl.h>

/* X(member, symbol): every NCCL function comm/nccl.c calls. */
#define TG__NCCL_FUNCS(X)                               \
    X(GetUniqueId, ncclGetUniqueId)                     \
    X(CommInitRankConfig, ncclCommInitRankConfig)       \
    X(CommGetAsyncError, ncclCommGetAsyncError)         \
    X(CommAbort, ncclCommAbort)                         \
    X(CommDestroy, ncclCommDestroy)                     \
    X(GetErrorString, ncclGetErrorString)               \
    X(AllReduce, ncclAllReduce)                         \
    X(Broadcast, ncclBroadcast)                         \
    X(AllGather, ncclAllGather)                         \
    X(ReduceScatter, ncclReduceScatter)

typedef struct tg__nccl_api {
#define TG__X(m, sym) TG__FN_TYPE(sym) m;
    TG__NCCL_FUNCS(TG__X)
#undef TG__X
} tg__nccl_api;

extern tg__nccl_api tg__nccl;
tg_status tg__nccl_load(char *err, size_t errlen);
#endif /* TG__WANT_NCCL */

#endif
