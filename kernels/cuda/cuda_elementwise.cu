/*
 * kernels/cuda/cuda_elementwise.cu: the elementwise kernels (binary with
 * broadcasting, where, unary), forward ops and the fused gradient helpers
 * (relu_backward, clamp_backward, gelu_backward) side by side.
 *
 * Each op is a small functor applied by one of three templated kernels;
 * each kernel walks the output with a grid-stride loop and computes the
 * strided offset of every operand from the element's coordinates.
 * Broadcast inputs arrive as views with stride 0, so no kernel knows about
 * broadcasting. The expressions are those of kernels/cpu/cpu_elementwise.c,
 * evaluated in the operands' own precision.
 */
#include "cuda.h"

/* ---- math in both precisions ---- */

__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double m_abs(double x) { return fabs(x); }
__device__ __forceinline__ float m_erf(float x) { return erff(x); }
__device__ __forceinline__ double m_erf(double x) { return erf(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float m_sin(float x) { return sinf(x); }
__device__ __forceinline__ double m_sin(double x) { return sin(x); }
__device__ __forceinline__ float m_cos(float x) { return cosf(x); }
__device__ __forceinline__ double m_cos(double x) { return cos(x); }
__device__ __forceinline__ float m_pow(float x, float e) { return powf(x, e); }
__device__ __forceinline__ double m_pow(double x, double e) { return pow(x, e); }

/* ---- the kernels ---- */

template <typename T, typename F>
__global__ void k_unary(int64_t n, tg__cuda_geom g, T *o, const T *x, F f) {
    TG__CUDA_FOR(i, n) {
        int64_t off[2];
        tg__cuda_offsets<2>(g, i, off);
        o[off[0]] = f(x[off[1]]);
    }
}

template <typename T, typename F>
__global__ void k_binary(int64_t n, tg__cuda_geom g, T *o, const T *x, const T *y, F f) {
    TG__CUDA_FOR(i, n) {
        int64_t off[3];
        tg__cuda_offsets<3>(g, i, off);
        o[off[0]] = f(x[off[1]], y[off[2]]);
    }
}

template <typename C, typename T>
__global__ void k_where(int64_t n, tg__cuda_geom g, T *o, const C *c, const T *x, const T *y) {
    TG__CUDA_FOR(i, n) {
        int64_t off[4];
        tg__cuda_offsets<4>(g, i, off);
        o[off[0]] = c[off[1]] != (C)0 ? x[off[2]] : y[off[3]];
    }
}

/* ---- host side ---- */

/*
 * Checks dtypes and shapes as the CPU kernels do (inputs already broadcast
 * to the output's shape) and builds the collapsed geometry, output first.
 * first_any: input 0 may have any dtype (the condition of where).
 */
static tg_status ew_prepare(const tg_kargs *a, int nin, bool first_any, tg__cuda_geom *g,
                            bool ints = false) {
    const tg_dtype dt = a->out.dtype;
    tg_status st = ints && (dt == TG_U8 || dt == TG_I32 || dt == TG_I64)
                       ? TG_OK
                       : tg__cuda_check_float(a, first_any ? 0 : nin);
    for (int i = first_any ? 1 : nin; st == TG_OK && i < nin; i++) {
        if (a->in[i].dtype != a->out.dtype)
            st = tg__cuda_fail(a, TG_ERR_DTYPE, "cuda %s: input %d dtype differs from the output",
                               tg_op_name(a->op), i);
    }
    if (st != TG_OK)
        return st;
    if (a->nin < nin)
        return tg__cuda_fail(a, TG_ERR_INVALID, "cuda %s: %d inputs given, %d expected",
                             tg_op_name(a->op), a->nin, nin);
    for (int i = 0; i < nin; i++) {
        if (!tg__cuda_same_shape(&a->in[i], &a->out))
            return tg__cuda_fail(a, TG_ERR_SHAPE,
                                 "cuda %s: input %d is not broadcast to the output shape",
                                 tg_op_name(a->op), i);
    }
    tg__cuda_geom_init(g, a->out.ndim, a->out.shape);
    tg__cuda_geom_add(g, a->out.strides);
    for (int i = 0; i < nin; i++)
        tg__cuda_geom_add(g, a->in[i].strides);
    tg__cuda_geom_collapse(g);
    return TG_OK;
}

template <typename F> static tg_status ew_unary(void *state, const tg_kargs *a, F f) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg__cuda_geom g;
    tg_status st = ew_prepare(a, 1, false, &g);
    if (st != TG_OK)
        return st;
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (a->out.dtype == TG_F32)
        k_unary<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (float *)a->out.data,
                                                               (const float *)a->in[0].data, f);
    else
        k_unary<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (double *)a->out.data,
                                                                (const double *)a->in[0].data, f);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

template <typename T, typename F>
static void ew_binary_launch(tg__cuda_state *s, const tg_kargs *a, int64_t n,
                             const tg__cuda_geom &g, F f) {
    k_binary<T><<<tg__cuda_blocks(n), TG__CUDA_THREADS, 0, s->stream>>>(
        n, g, (T *)a->out.data, (const T *)a->in[0].data, (const T *)a->in[1].data, f);
}

/* The binary ops that also take integer operands (u8, i32, i64). */
template <typename F> static tg_status ew_binary_int(void *state, const tg_kargs *a, F f) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg__cuda_geom g;
    tg_status st = ew_prepare(a, 2, false, &g, true);
    if (st != TG_OK)
        return st;
    for (int i = 0; i < 2; i++)
        if (a->in[i].dtype != a->out.dtype)
            return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda %s: input %d dtype differs from the output",
                                 tg_op_name(a->op), i);
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    switch (a->out.dtype) {
    case TG_F32:
        ew_binary_launch<float>(s, a, n, g, f);
        break;
    case TG_F64:
        ew_binary_launch<double>(s, a, n, g, f);
        break;
    case TG_U8:
        ew_binary_launch<uint8_t>(s, a, n, g, f);
        break;
    case TG_I32:
        ew_binary_launch<int32_t>(s, a, n, g, f);
        break;
    default:
        ew_binary_launch<int64_t>(s, a, n, g, f);
        break;
    }
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

template <typename F> static tg_status ew_binary(void *state, const tg_kargs *a, F f) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg__cuda_geom g;
    tg_status st = ew_prepare(a, 2, false, &g);
    if (st != TG_OK)
        return st;
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(n);
    if (a->out.dtype == TG_F32)
        k_binary<float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (float *)a->out.data,
                                                                (const float *)a->in[0].data,
                                                                (const float *)a->in[1].data, f);
    else
        k_binary<double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (double *)a->out.data,
                                                                 (const double *)a->in[0].data,
                                                                 (const double *)a->in[1].data, f);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* The op parameters a functor needs, read once on the host. Ops without
 * parameters may be given none; then they are all zero. */
static double ew_param(const tg_kargs *a, int i) { return a->p ? a->p->f[i] : 0.0; }

/* ---- binary ops: a is input 0, b input 1 ---- */

#define CUDA_BINARY(name, EXPR)                                               \
    struct f_##name {                                                         \
        double p0, p1;                                                        \
        template <typename T> __device__ T operator()(T a, T b) const {       \
            const T lo = (T)p0, hi = (T)p1;                                   \
            (void)lo;                                                         \
            (void)hi;                                                         \
            return (EXPR);                                                    \
        }                                                                     \
    };                                                                        \
    tg_status tg__cuda_##name(void *state, const tg_kargs *a) {               \
        return ew_binary(state, a, f_##name{ew_param(a, 0), ew_param(a, 1)}); \
    }

/* The ops that also take integer operands; T is the operands' type. */
#define CUDA_BINARY_INT(name, EXPR)                                       \
    struct f_##name {                                                     \
        template <typename T> __device__ T operator()(T a, T b) const {   \
            return (T)(EXPR);                                             \
        }                                                                 \
    };                                                                    \
    tg_status tg__cuda_##name(void *state, const tg_kargs *a) {           \
        return ew_binary_int(state, a, f_##name{});                       \
    }

/* NaN in either operand propagates, as on the CPU. */
template <typename T> __device__ __forceinline__ bool m_isnan(T x) { return false; }
template <> __device__ __forceinline__ bool m_isnan<float>(float x) { return isnan(x); }
template <> __device__ __forceinline__ bool m_isnan<double>(double x) { return isnan(x); }

/* Integer add/sub/mul wrap: they run in unsigned 64-bit arithmetic, where
 * overflow is defined, as on the CPU. */
template <typename T> __device__ __forceinline__ T w_add(T a, T b) {
    return (T)((unsigned long long)a + (unsigned long long)b);
}
template <typename T> __device__ __forceinline__ T w_sub(T a, T b) {
    return (T)((unsigned long long)a - (unsigned long long)b);
}
template <typename T> __device__ __forceinline__ T w_mul(T a, T b) {
    return (T)((unsigned long long)a * (unsigned long long)b);
}
template <> __device__ __forceinline__ float w_add<float>(float a, float b) { return a + b; }
template <> __device__ __forceinline__ double w_add<double>(double a, double b) { return a + b; }
template <> __device__ __forceinline__ float w_sub<float>(float a, float b) { return a - b; }
template <> __device__ __forceinline__ double w_sub<double>(double a, double b) { return a - b; }
template <> __device__ __forceinline__ float w_mul<float>(float a, float b) { return a * b; }
template <> __device__ __forceinline__ double w_mul<double>(double a, double b) { return a * b; }

CUDA_BINARY_INT(add, w_add(a, b))
CUDA_BINARY_INT(sub, w_sub(a, b))
CUDA_BINARY_INT(mul, w_mul(a, b))
CUDA_BINARY(div, a / b)
CUDA_BINARY_INT(eq, a == b)
CUDA_BINARY_INT(ne, a != b)
CUDA_BINARY_INT(gt, a > b)
CUDA_BINARY_INT(ge, a >= b)
CUDA_BINARY_INT(lt, a < b)
CUDA_BINARY_INT(le, a <= b)
CUDA_BINARY_INT(maximum, (m_isnan(a) || a > b) ? a : b)
CUDA_BINARY_INT(minimum, (m_isnan(a) || a < b) ? a : b)
/* Gradient helpers: a is the incoming gradient, b the forward input. */
CUDA_BINARY(relu_backward, b > (T)0 ? a : (T)0)
CUDA_BINARY(clamp_backward, (lo <= b && b <= hi) ? a : (T)0)
/* g gelu'(x) = g (Phi(x) + x phi(x)), the exact (erf) GELU */
CUDA_BINARY(gelu_backward,
            a * ((T)0.5 + (T)0.5 * m_erf(b * (T)0.70710678118654752440) +
                 b * (T)0.39894228040143267794 * m_exp((T)-0.5 * b * b)))

/* ---- where: input 0 is the condition, of any dtype ---- */

template <typename C>
static void where_launch(tg__cuda_state *s, const tg_kargs *a, int64_t n, const tg__cuda_geom &g) {
    const unsigned nb = tg__cuda_blocks(n);
    const C *c = (const C *)a->in[0].data;
    if (a->out.dtype == TG_F32)
        k_where<C, float><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (float *)a->out.data, c,
                                                                  (const float *)a->in[1].data,
                                                                  (const float *)a->in[2].data);
    else
        k_where<C, double><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(n, g, (double *)a->out.data, c,
                                                                   (const double *)a->in[1].data,
                                                                   (const double *)a->in[2].data);
}

tg_status tg__cuda_where(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    tg__cuda_geom g;
    tg_status st = ew_prepare(a, 3, true, &g);
    if (st != TG_OK)
        return st;
    const int64_t n = tg__kview_numel(&a->out);
    if (n == 0)
        return TG_OK;
    switch (a->in[0].dtype) {
    case TG_F32:
        where_launch<float>(s, a, n, g);
        break;
    case TG_F64:
        where_launch<double>(s, a, n, g);
        break;
    case TG_U8:
        where_launch<uint8_t>(s, a, n, g);
        break;
    case TG_I32:
        where_launch<int32_t>(s, a, n, g);
        break;
    case TG_I64:
        where_launch<int64_t>(s, a, n, g);
        break;
    default:
        return tg__cuda_fail(a, TG_ERR_DTYPE, "cuda where: unknown condition dtype %d",
                             (int)a->in[0].dtype);
    }
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

/* ---- unary ops: the expression sees a; p0, p1 are f[0], f[1] ---- */

#define CUDA_UNARY(name, EXPR)                                               \
    struct f_##name {                                                        \
        double p0, p1;                                                       \
        template <typename T> __device__ T operator()(T a) const {           \
            const T w = (T)p0, c = (T)p1;                                    \
            (void)w;                                                         \
            (void)c;                                                         \
            return (EXPR);                                                   \
        }                                                                    \
    };                                                                       \
    tg_status tg__cuda_##name(void *state, const tg_kargs *a) {              \
        return ew_unary(state, a, f_##name{ew_param(a, 0), ew_param(a, 1)}); \
    }

CUDA_UNARY(neg, -a)
CUDA_UNARY(affine, w *a + c)
CUDA_UNARY(exp, m_exp(a))
CUDA_UNARY(log, m_log(a))
CUDA_UNARY(sqrt, m_sqrt(a))
CUDA_UNARY(abs, m_abs(a))
CUDA_UNARY(erf, m_erf(a))
/* Written so that NaN passes through, as on the CPU. */
CUDA_UNARY(relu, a < (T)0 ? (T)0 : a)
CUDA_UNARY(sigmoid, (T)1 / ((T)1 + m_exp(-a)))
CUDA_UNARY(tanh, m_tanh(a))
CUDA_UNARY(silu, a / ((T)1 + m_exp(-a)))
CUDA_UNARY(gelu, (T)0.5 * a * ((T)1 + m_erf(a * (T)0.70710678118654752440)))
/* lo = f[0] (w here), hi = f[1] (c); NaN passes through. */
CUDA_UNARY(clamp, a < w ? w : (a > c ? c : a))
CUDA_UNARY(sign, (T)((a > (T)0) - (a < (T)0)))
CUDA_UNARY(sin, m_sin(a))
CUDA_UNARY(cos, m_cos(a))

/*
 * pow_scalar: the exponents the CPU kernel special-cases are special-cased
 * the same way (squares and reciprocals exactly, +-0.5 through sqrt as in
 * PyTorch), so both backends agree at the edges (negative bases, -0, inf).
 * The branch depends only on the exponent, so every thread takes the same one.
 */
struct f_pow_scalar {
    double e;
    template <typename T> __device__ T operator()(T a) const {
        if (e == 2.0)
            return a * a;
        if (e == 3.0)
            return a * a * a;
        if (e == 0.5)
            return m_sqrt(a);
        if (e == -0.5)
            return (T)1 / m_sqrt(a);
        if (e == -1.0)
            return (T)1 / a;
        if (e == -2.0)
            return (T)1 / (a * a);
        return m_pow(a, (T)e);
    }
};

tg_status tg__cuda_pow_scalar(void *state, const tg_kargs *a) {
    return ew_unary(state, a, f_pow_scalar{ew_param(a, 0)});
}
