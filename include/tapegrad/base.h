/*
 * tapegrad/base.h: the vocabulary every module shares.
 *
 * Status codes, dtypes, devices, the op enum and the size limits. Nothing here
 * allocates or needs a context; every other public header includes this one.
 *
 * Errors: every fallible call reports a tg_status. Calls that return a status
 * return it directly; op constructors (which return a tensor so that
 * expressions compose) return NULL on failure and leave the status and a
 * message in their context (see tg_ctx_status() and tg_ctx_error() in
 * runtime.h). tg_status_str() names a status.
 */
#ifndef TAPEGRAD_BASE_H
#define TAPEGRAD_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TG_VERSION_MAJOR 0
#define TG_VERSION_MINOR 1
#define TG_VERSION_PATCH 0
#define TG_VERSION_STRING "0.1.0"

/* The most dimensions a tensor may have. */
#define TG_MAX_DIMS 8
/* The most inputs an op record keeps (concat takes up to this many). */
#define TG_MAX_INPUTS 16

/* Status codes: one X-macro generates the enum and the strings. */
#define TG_STATUS_LIST(X)                                                   \
    X(OK, "ok")                                                             \
    X(ERR_INVALID, "invalid argument")                                      \
    X(ERR_SHAPE, "shape mismatch")                                          \
    X(ERR_DTYPE, "dtype mismatch")                                          \
    X(ERR_AXIS, "axis out of range")                                        \
    X(ERR_NOMEM, "out of memory")                                           \
    X(ERR_AUTOGRAD, "autograd error")                                       \
    X(ERR_INPLACE, "in-place modification error")                           \
    X(ERR_UNSUPPORTED, "not supported")                                     \
    X(ERR_IO, "I/O error")                                                  \
    X(ERR_FORMAT, "bad file format")                                        \
    X(ERR_BACKEND, "backend error")                                         \
    X(ERR_COMM, "communication error")                                      \
    X(ERR_TIMEOUT, "timed out")                                             \
    X(ERR_STOPPED, "stopped by request")

typedef enum tg_status {
#define TG_X_(name, str) TG_##name,
    TG_STATUS_LIST(TG_X_)
#undef TG_X_
    TG_STATUS_COUNT
} tg_status;

/* A static string naming the status; never NULL. */
const char *tg_status_str(tg_status s);

typedef enum tg_dtype {
    TG_F32 = 0,
    TG_F64,
    TG_U8,
    TG_I32,
    TG_I64,
    /* bfloat16: f32's sign and 8-bit exponent with a 7-bit mantissa, stored
     * as the top 16 bits of the f32. A storage dtype: casts to and from it,
     * copies, checkpoints and export take it; arithmetic runs in f32 (see
     * tg_ctx_set_precision() in runtime.h for bf16 matmul and convolution). */
    TG_BF16,
    TG_DTYPE_COUNT
} tg_dtype;

/* Bytes per element, and a static name ("f32", ...). */
size_t tg_dtype_size(tg_dtype dt);
const char *tg_dtype_name(tg_dtype dt);
/* True for f32 and f64, the dtypes gradients flow through (not bf16, whose
 * tensors hold values only: a cast to bf16 is not differentiable). */
bool tg_dtype_is_float(tg_dtype dt);

/* f32 to bf16 bits with round-to-nearest-even, as PyTorch's conversion: a
 * NaN stays a (quiet) NaN, values past bf16's largest finite round to inf. */
static inline uint16_t tg_bf16_from_f32(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x40u);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

/* bf16 bits to f32: exact. */
static inline float tg_bf16_to_f32(uint16_t b)
{
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)b << 16};
    return v.f;
}

typedef enum tg_device {
    TG_DEVICE_CPU = 0,
    TG_DEVICE_CUDA,
    TG_DEVICE_COUNT
} tg_device;

const char *tg_device_name(tg_device d);

/*
 * The op enum, generated from ops.def. Each row is
 * TG_OP(ENUM, name, arity, flags); arity -1 means variadic.
 */
enum {
    TG_OPF_NONE = 0,
    /* Gradients flow through this op (it has a backward rule). */
    TG_OPF_DIFF = 1 << 0,
    /* The op only changes strides: no kernel is ever dispatched for it. */
    TG_OPF_VIEW = 1 << 1,
};

typedef enum tg_op {
#define TG_OP(E, name, arity, flags) TG_OP_##E,
#include "tapegrad/ops.def"
#undef TG_OP
    TG_OP_COUNT
} tg_op;

/* Static name of an op ("add", ...), its arity and its TG_OPF_* flags. */
const char *tg_op_name(tg_op op);
int tg_op_arity(tg_op op);
unsigned tg_op_flags(tg_op op);

#ifdef __cplusplus
}
#endif
#endif
