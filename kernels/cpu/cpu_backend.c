/*
 * kernels/cpu/cpu_backend.c: the CPU backend's function table, its memory
 * functions, the in-place helpers and the helpers shared by the kernel files.
 */
#include <cblas.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "omp_throttle.h"

/* Memory is aligned to a cache line, which is also the widest SIMD register. */
#define CPU_ALIGN 64
/* Above this many bytes, zero fills are split among threads. */
#define CPU_ZERO_CHUNK ((size_t)1 << 20)

/* ---- buffers kept by the backend's state ---- */

void *tg__cpu_grow(void **p, size_t *cap, size_t nbytes) {
    if (nbytes <= *cap)
        return *p;
    void *q = aligned_alloc(CPU_ALIGN, (nbytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN);
    if (!q)
        return NULL;
    free(*p);
    *p = q;
    *cap = nbytes;
    return q;
}

/* ---- CPU features ---- */

bool tg__cpu_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    return false;
#endif
}

bool tg__cpu_avx512_bf16(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    return tg__cpu_avx512() && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

tg_status tg__cpu_fail(const tg_kargs *a, tg_status st, const char *fmt, ...) {
    if (a->err && a->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(a->err, a->errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

static const char *cpu_dtype_name(tg_dtype dt) {
    static const char *const names[TG_DTYPE_COUNT] = {"f32", "f64", "u8", "i32", "i64", "bf16"};
    return (unsigned)dt < TG_DTYPE_COUNT ? names[dt] : "?";
}

tg_status tg__cpu_check_float(const tg_kargs *a, int nin) {
    tg_dtype dt = a->out.dtype;
    if (dt != TG_F32 && dt != TG_F64)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu %s: output dtype %s is not a float dtype",
                            tg_op_name(a->op), cpu_dtype_name(dt));
    for (int i = 0; i < nin; i++) {
        if (a->in[i].dtype != dt)
            return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu %s: input %d has dtype %s, expected %s",
                                tg_op_name(a->op), i, cpu_dtype_name(a->in[i].dtype),
                                cpu_dtype_name(dt));
    }
    return TG_OK;
}

void tg__cpu_zero(void *dst, size_t nbytes) {
    if (!tg__cpu_par_if(nbytes > 4 * CPU_ZERO_CHUNK)) {
        memset(dst, 0, nbytes);
        return;
    }
    int64_t nchunks = (int64_t)((nbytes + CPU_ZERO_CHUNK - 1) / CPU_ZERO_CHUNK);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
        size_t off = (size_t)c * CPU_ZERO_CHUNK;
        size_t len = nbytes - off < CPU_ZERO_CHUNK ? nbytes - off : CPU_ZERO_CHUNK;
        memset((char *)dst + off, 0, len);
    }
}

/* ---- lifetime and memory ---- */

static tg_status cpu_init(void **state, int threads, char *err, size_t errlen) {
    tg__cpu_state *s = malloc(sizeof *s);
    if (!s) {
        if (err && errlen)
            snprintf(err, errlen, "cpu backend: out of memory allocating its state");
        return TG_ERR_NOMEM;
    }
    s->threads = threads;
    s->dnnl = NULL;
    s->pack = NULL;
    s->pack_cap = 0;
    s->gemm16 = NULL;
    tg_status st = tg__gemm16_mode(&s->gemm16_own, err, errlen);
    if (st != TG_OK) {
        free(s);
        return st;
    }
    /* Both thread pools follow the context's setting so that OpenMP loops
     * and BLAS calls do not oversubscribe the machine against each other. */
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
    s->parts = omp_get_max_threads();
    s->throttle = tg__omp_throttle_new(s->parts);
    *state = s;
    return TG_OK;
}

static void cpu_release(void *state) {
    tg__cpu_state *s = state;
    if (s) {
        tg__dnnl_free(s->dnnl);
        tg__gemm16_free(s->gemm16);
        tg__omp_throttle_free(s->throttle);
        free(s->pack);
    }
    free(state);
}

/* Once per step: the spin watch (omp_throttle.c). It may run the step on
 * one thread only where the bits do not depend on it: not once oneDNN
 * runs products (its splits follow its thread count). */
static void cpu_step(void *state) {
    tg__cpu_state *s = state;
    tg__omp_throttle_step(s->throttle, s->dnnl == NULL);
}

tg__dnnl *tg__cpu_dnnl(void *state, const tg_kargs *a) {
    tg__cpu_state *s = state;
    if (!s->dnnl) {
        if (tg__dnnl_new(&s->dnnl, a->err, a->errlen) != TG_OK)
            return NULL;
        /* oneDNN's splits follow the thread count: from its first product
         * on, the steps run on the whole team (see cpu_step). */
        tg__omp_throttle_team(s->throttle);
    }
    return s->dnnl;
}

static void *cpu_alloc(void *state, size_t nbytes) {
    (void)state;
    /* aligned_alloc wants a multiple of the alignment, and a zero-byte
     * request must still yield a pointer that free() accepts. */
    size_t rounded = (nbytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    if (rounded < nbytes)
        return NULL;
    return aligned_alloc(CPU_ALIGN, rounded ? rounded : CPU_ALIGN);
}

static void cpu_free(void *state, void *ptr) {
    (void)state;
    free(ptr);
}

static tg_status cpu_copy(void *state, void *dst, const void *src, size_t nbytes) {
    (void)state;
    if (nbytes)
        memcpy(dst, src, nbytes);
    return TG_OK;
}

static tg_status cpu_zero(void *state, void *dst, size_t nbytes) {
    (void)state;
    if (nbytes)
        tg__cpu_zero(dst, nbytes);
    return TG_OK;
}

static tg_status cpu_synchronize(void *state) {
    /* Every CPU kernel has finished when it returns. */
    (void)state;
    return TG_OK;
}

/* ---- in-place helpers ---- */

/* Generates the f32 and f64 bodies of one in-place helper from one loop. */
#define CPU_INPLACE(real, BODY)                                                               \
    do {                                                                                      \
        real *d = dst;                                                                        \
        const real *s = src;                                                                  \
        const real av = (real)alpha;                                                          \
        (void)s;                                                                              \
        (void)av;                                                                             \
        /* Small sizes run on the caller: an if(false) region still makes                     \
         * libgomp allocate (and free) a one-thread team. */                                  \
        if (tg__cpu_par_if(n > TG__CPU_PAR_MIN)) {                                            \
            _Pragma("omp parallel for simd schedule(static)") for (int64_t i = 0; i < n; i++) \
                BODY;                                                                         \
        } else {                                                                              \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) BODY;                         \
        }                                                                                     \
    } while (0)

#define CPU_INPLACE_DISPATCH(BODY) \
    switch (dt) {                  \
    case TG_F32:                   \
        CPU_INPLACE(float, BODY);  \
        return TG_OK;              \
    case TG_F64:                   \
        CPU_INPLACE(double, BODY); \
        return TG_OK;              \
    default:                       \
        return TG_ERR_DTYPE;       \
    }

static tg_status cpu_axpy(void *state, tg_dtype dt, int64_t n, double alpha, const void *src,
                          void *dst) {
    (void)state;
    CPU_INPLACE_DISPATCH(d[i] += av * s[i])
}

static tg_status cpu_scale(void *state, tg_dtype dt, int64_t n, double alpha, void *dst) {
    const void *src = NULL;
    (void)state;
    CPU_INPLACE_DISPATCH(d[i] *= av)
}

static tg_status cpu_fill(void *state, tg_dtype dt, int64_t n, double value, void *dst) {
    const void *src = NULL;
    double alpha = value;
    (void)state;
    CPU_INPLACE_DISPATCH(d[i] = av)
}

/* ---- the table ---- */

static const tg_backend cpu_backend = {
    .name = "cpu",
    .device = TG_DEVICE_CPU,
    .init = cpu_init,
    .step = cpu_step,
    .release = cpu_release,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy_h2d = cpu_copy,
    .copy_d2h = cpu_copy,
    .copy_d2d = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
    .axpy = cpu_axpy,
    .scale = cpu_scale,
    .fill = cpu_fill,
    .kernels =
        {
#define TG_OP(E, name, arity, flags) [TG_OP_##E] = tg__cpu_##name,
#include "tapegrad/ops.def"
#undef TG_OP
        },
};

/* The table is indexed by tg_op; if kernels.h ever sized it differently from
 * the enum, the designated initializers above could silently drop rows. */
_Static_assert(sizeof cpu_backend.kernels / sizeof cpu_backend.kernels[0] == TG_OP_COUNT,
               "the cpu kernel table must have one entry per op");

const tg_backend *tg_backend_cpu(void) { return &cpu_backend; }
