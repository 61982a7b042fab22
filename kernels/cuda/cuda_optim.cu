/*
 * kernels/cuda/cuda_optim.cu: the fused optimizer updates (SGD with
 * momentum, dampening, nesterov and weight decay; Adam and AdamW), one
 * thread per element over a parameter's flat buffers, in place.
 *
 * Each element runs the host loop of runtime/train/optim.c operation for
 * operation: the same scalars rounded to the parameter's type first, the
 * same order of operations. nvcc would contract a * b + c into a fused
 * multiply-add, which rounds once where the host rounds twice; every
 * operation is therefore written with a round-to-nearest intrinsic
 * (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn and their double forms),
 * which nvcc never contracts. With IEEE arithmetic on both sides the GPU
 * update is meant to equal the CPU's bit for bit.
 */
#include <stdio.h>

#include "cuda.h"

/* The rounded operations, overloaded on the element type. */
__device__ __forceinline__ float op_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double op_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float op_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double op_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float op_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double op_div(double a, double b) { return __ddiv_rn(a, b); }
/* The host computes (float)sqrt((double)v); rounding the double square root
 * of a float to float gives the correctly rounded float square root. */
__device__ __forceinline__ float op_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double op_sqrt(double a) { return __dsqrt_rn(a); }

/* The scalars of one update, already rounded to T. */
template <typename T> struct sgd_k {
    T nlr, wd, mom, omd;
    bool do_wd, nesterov, first;
};

template <typename T> struct adam_k {
    T decay, wd, b1, b2, omb1, omb2, eps, nss, bc2;
    bool do_decay, do_wd;
};

/* sgd_float/sgd_double of optim.c; b is NULL without momentum. */
template <typename T> __global__ static void k_sgd(int64_t n, sgd_k<T> k, T *p, const T *g, T *b) {
    TG__CUDA_FOR(i, n) {
        T d = g[i];
        if (k.do_wd)
            d = op_add(d, op_mul(k.wd, p[i]));
        if (b) {
            const T bi = k.first ? d : op_add(op_mul(b[i], k.mom), op_mul(k.omd, d));
            b[i] = bi;
            d = k.nesterov ? op_add(d, op_mul(k.mom, bi)) : bi;
        }
        p[i] = op_add(p[i], op_mul(k.nlr, d));
    }
}

/* adam_float/adam_double of optim.c. */
template <typename T>
__global__ static void k_adam(int64_t n, adam_k<T> k, T *p, const T *g, T *m, T *v) {
    TG__CUDA_FOR(i, n) {
        T pi = p[i], d = g[i];
        if (k.do_decay)
            pi = op_mul(pi, k.decay);
        if (k.do_wd)
            d = op_add(d, op_mul(k.wd, pi));
        const T mi = op_add(op_mul(m[i], k.b1), op_mul(k.omb1, d));
        const T vi = op_add(op_mul(v[i], k.b2), op_mul(op_mul(k.omb2, d), d));
        m[i] = mi;
        v[i] = vi;
        const T den = op_add(op_div(op_sqrt(vi), k.bc2), k.eps);
        p[i] = op_add(pi, op_div(op_mul(k.nss, mi), den));
    }
}

template <typename T>
static void sgd_launch(tg__cuda_state *s, const tg_optim_update_args *a, unsigned nb) {
    sgd_k<T> k;
    k.nlr = (T)-a->lr;
    k.wd = (T)a->wd;
    k.mom = (T)a->momentum;
    k.omd = (T)(1.0 - a->dampening);
    k.do_wd = a->wd != 0.0;
    k.nesterov = a->nesterov;
    k.first = a->first;
    k_sgd<T>
        <<<nb, TG__CUDA_THREADS, 0, s->stream>>>(a->n, k, (T *)a->p, (const T *)a->g, (T *)a->buf);
}

template <typename T>
static void adam_launch(tg__cuda_state *s, const tg_optim_update_args *a, unsigned nb) {
    adam_k<T> k;
    k.decay = (T)a->decay;
    k.wd = (T)a->wd;
    k.b1 = (T)a->beta1;
    k.b2 = (T)a->beta2;
    k.omb1 = (T)(1.0 - a->beta1);
    k.omb2 = (T)(1.0 - a->beta2);
    k.eps = (T)a->eps;
    k.nss = (T)-a->step_size;
    k.bc2 = (T)a->bc2_sqrt;
    k.do_decay = a->decay != 1.0;
    k.do_wd = a->wd != 0.0;
    k_adam<T><<<nb, TG__CUDA_THREADS, 0, s->stream>>>(a->n, k, (T *)a->p, (const T *)a->g,
                                                      (T *)a->m, (T *)a->v);
}

static tg_status optim_fail(const tg_optim_update_args *a, tg_status st, const char *msg) {
    if (a->err && a->errlen > 0)
        snprintf(a->err, a->errlen, "cuda optim_update: %s", msg);
    return st;
}

tg_status tg__cuda_optim_update(void *state, const tg_optim_update_args *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    if (a->dtype != TG_F32 && a->dtype != TG_F64)
        return optim_fail(a, TG_ERR_DTYPE, "parameters must be f32 or f64");
    if (a->rule != TG_OPTIM_RULE_SGD && a->rule != TG_OPTIM_RULE_ADAM)
        return optim_fail(a, TG_ERR_INVALID, "unknown update rule");
    if (a->rule == TG_OPTIM_RULE_ADAM && (!a->m || !a->v))
        return optim_fail(a, TG_ERR_INVALID, "adam needs both moment buffers");
    if (a->n <= 0)
        return TG_OK;
    const unsigned nb = tg__cuda_blocks(a->n);
    if (a->rule == TG_OPTIM_RULE_SGD) {
        if (a->dtype == TG_F32)
            sgd_launch<float>(s, a, nb);
        else
            sgd_launch<double>(s, a, nb);
    } else {
        if (a->dtype == TG_F32)
            adam_launch<float>(s, a, nb);
        else
            adam_launch<double>(s, a, nb);
    }
    TG__CUDA_TRY(cudaGetLastError(), a->err, a->errlen);
    return TG_OK;
}
