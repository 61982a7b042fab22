/*
 * kernels/cpu/cpu.h: private header of the CPU backend (OpenBLAS + OpenMP).
 *
 * Every op row of tapegrad/ops.def has a kernel tg__cpu_<name> here; the
 * kernel table in cpu_backend.c is generated from ops.def and names each of
 * them, so a row without a kernel fails to compile. View rows get a NULL
 * kernel because the runtime never dispatches them.
 *
 * The header also carries the helpers the kernel files share: error
 * reporting, dtype checks and a strided loop driver (tg__cpu_loop) that
 * collapses dims, tiles the iteration space and runs a row function over it,
 * in parallel when the work is large enough. It also declares the vector
 * math functions and the attributes that let the hot loops vectorise.
 */
#ifndef TG_KERNELS_CPU_H
#define TG_KERNELS_CPU_H

#include <inttypes.h>
#include <omp.h>
#include <stdbool.h>

#include "cpu_par.h"
#include "kview.h"
#include "tapegrad/kernels.h"

/*
 * Below this many elements a kernel runs on the calling thread: starting an
 * OpenMP team costs a few microseconds, more than a small op itself.
 */
#define TG__CPU_PAR_MIN 32768

/* Elements per task of the loop driver: large enough to amortise the per-task
 * offset computation, small enough to balance many threads. */
#define TG__CPU_TILE 8192
/* The loop driver handles the output and up to three inputs (where). */
#define TG__CPU_MAX_OPERANDS 4

/* oneDNN's engine, stream, primitive cache and bf16 buffers (cpu_dnnl.c). */
typedef struct tg__dnnl tg__dnnl;

/* The short OpenMP spin while the cores are shared (omp_throttle.h). */
typedef struct tg__omp_throttle tg__omp_throttle;

/* Our bf16 product's packing buffers (cpu_gemm_bf16.c). */
typedef struct tg__gemm16 tg__gemm16;

/* Per-context state: the thread count the context asked for, the number of
 * parts the products and convolutions cut their work into (that count, or
 * OpenMP's when it asked for none), oneDNN's state, made at the first bf16
 * product that needs it (NULL until then), whether the bf16 matmul runs on
 * our kernel (gemm16_own, chosen at creation) and its buffers (made at its
 * first use), and the watch that shortens OpenMP's spin and runs steps on
 * one thread while the cores are shared (NULL: none). */
typedef struct tg__cpu_state {
    int threads;
    int parts;
    tg__dnnl *dnnl;
    bool gemm16_own;
    tg__gemm16 *gemm16;
    tg__omp_throttle *throttle;
    /* cpu_matmul.c's copy of B in tg__cpu_sgemm's panels: grows, kept
     * (tg__cpu_grow; pack_cap in bytes). */
    void *pack;
    size_t pack_cap;
} tg__cpu_state;

/* The parts a split kernel cuts its work into: fixed for the context, so
 * that its bits do not depend on how many threads run the parts (one while
 * the watch finds the cores shared, omp_throttle.c). */
static inline int tg__cpu_parts(const void *state) {
    const tg__cpu_state *s = state;
    return s ? s->parts : omp_get_max_threads(); /* a state, or a test's direct call */
}

/* A buffer of at least nbytes in *p (64-byte aligned), grown (never shrunk)
 * as needed, *cap its size; NULL when out of memory (the old buffer kept).
 * cpu_backend.c. */
void *tg__cpu_grow(void **p, size_t *cap, size_t nbytes);

/* ---- CPU features (cpu_backend.c) ---- */

/* The four AVX-512 subsets (F, BW, DQ, VL) that OpenBLAS's SkylakeX and later
 * kernels and ours are built for, with the registers saved by the OS (the
 * compiler's checks include that); and those with AVX512_BF16 (vdpbf16ps,
 * the bf16 product's and attention's kernels). */
bool tg__cpu_avx512(void);
bool tg__cpu_avx512_bf16(void);

/* ---- the f32 product of our own (cpu_sgemm.c) ---- */

/* Whether products use it: on CPUs with AVX-512, unless TG_CPU_SGEMM=blas
 * (read once). tg__cpu_sgemm_set switches it (tests; off where the CPU lacks
 * AVX-512) and returns the previous choice. */
bool tg__cpu_sgemm_on(void);
bool tg__cpu_sgemm_set(bool on);
/* The width of its panels of B, and of its tiles of C. */
#define TG__CPU_SGEMM_NR 32
/* C (n x m, row stride ldc) = op(A) B: op(A)'s element (i, l) at
 * A[i * ars + l * acs]; B (k x m) in panels of 32 columns, its element
 * (l, j) at B[j / 32 * bps + l * ldb + j % 32]: row-major with row stride
 * ldb when bps is 32, or as tg__cpu_sgemm_pack lays it out (ldb 32, bps
 * 32 k). */
void tg__cpu_sgemm(int64_t n, int64_t m, int64_t k, const float *A, int64_t ars, int64_t acs,
                   const float *B, int64_t ldb, int64_t bps, float *C, int64_t ldc);
/* Panels [p0, p1) of B (k x m, its element (l, j) at B[l * rs + j * cs])
 * into dst: panel p (columns [32 p, 32 p + 32)) at dst + 32 k p, its row l
 * the 32 floats at + 32 l (the last panel's columns past m left as they
 * are: the kernel never reads them). */
void tg__cpu_sgemm_pack(float *dst, const float *B, int64_t rs, int64_t cs, int64_t k, int64_t m,
                        int64_t p0, int64_t p1);

/* ---- oneDNN (cpu_dnnl.c) ---- */

tg_status tg__dnnl_new(tg__dnnl **out, char *err, size_t errlen);
void tg__dnnl_free(tg__dnnl *d);
/* The state's oneDNN object, made on first use; NULL with a message in the
 * kernel's error buffer when it cannot be (no oneDNN in this build). */
tg__dnnl *tg__cpu_dnnl(void *state, const tg_kargs *a);
/* C (n x m, row-major, ld m, f32) = op(A) op(B) with A and B (f32, laid out
 * as for BLAS) rounded to bf16 and the products summed in f32. */
tg_status tg__dnnl_gemm(tg__dnnl *d, const tg__gemm_arg *ga, const tg__gemm_arg *gb, int64_t n,
                        int64_t m, int64_t k, const float *A, const float *B, float *C, char *err,
                        size_t errlen);
/* One convolution row through oneDNN. kind 0: y = conv(in0 = x, in1 = w)
 * (+ bias); 1: dx from in0 = g, in1 = w; 2: dw from in0 = x, in1 = g. bf16:
 * the inputs (any strides) are rounded to bf16 and the result is f32;
 * otherwise everything is contiguous f32. out is contiguous f32. */
tg_status tg__dnnl_conv(tg__dnnl *d, int kind, bool bf16, const tg__conv_geom *g,
                        const tg_kview *in0, const tg_kview *in1, const tg_kview *bias, float *out,
                        char *err, size_t errlen);

/* ---- our bf16 product (cpu_gemm_bf16.c) ---- */

/* Whether a context's bf16 matmul runs on our kernel (*own) or on oneDNN's:
 * ours where the CPU can, unless the environment variable TG_CPU_BF16_GEMM
 * says otherwise (auto, own, onednn); an unknown value, or own on a CPU
 * without AVX512_BF16, fails with a message naming the variable. */
tg_status tg__gemm16_mode(bool *own, char *err, size_t errlen);
/* Packing buffers for `slots` threads (at least 1); NULL when out of memory. */
tg__gemm16 *tg__gemm16_new(int slots);
void tg__gemm16_free(tg__gemm16 *g);
/* C (n x m, row-major, ld m, f32) = op(A) op(B) with A and B (f32, laid out
 * as for BLAS) rounded to bf16 and the products summed in f32, cut into
 * `parts` blocks (at most the slots); the bits depend on neither the parts
 * nor the running threads. Needs tg__cpu_avx512_bf16(); k may be 0. */
void tg__gemm16_run(tg__gemm16 *g, int parts, const tg__gemm_arg *ga, const tg__gemm_arg *gb,
                    int64_t n, int64_t m, int64_t k, const float *A, const float *B, float *C);

/* ---- the data movements around oneDNN (cpu_bf16_layout.c) ---- */

/* dst (rows x cols, packed) = src (row stride ld) rounded to bf16. */
void tg__bf16_rows(uint16_t *dst, const float *src, int64_t rows, int64_t cols, int64_t ld);
/* dst (n x c x hw in nChwXc, X = blk, f32 or bf16, channels padded to blk with
 * zeros) from the NCHW f32 planes src (n x c x hw). */
void tg__blk_from_planes(void *dst, bool bf16, const float *src, int64_t n, int64_t c,
                         int64_t hw, int64_t blk);
/* dst (NCHW f32 planes, n x c x hw) from src in nChwXc f32 (X = blk). */
void tg__blk_to_planes(float *dst, const float *src, int64_t n, int64_t c, int64_t hw,
                       int64_t blk);

/* ---- kernels, one per ops.def row ---- */

tg_status tg__cpu_add(void *state, const tg_kargs *a);
tg_status tg__cpu_sub(void *state, const tg_kargs *a);
tg_status tg__cpu_mul(void *state, const tg_kargs *a);
tg_status tg__cpu_div(void *state, const tg_kargs *a);
tg_status tg__cpu_eq(void *state, const tg_kargs *a);
tg_status tg__cpu_relu_backward(void *state, const tg_kargs *a);
tg_status tg__cpu_gelu_backward(void *state, const tg_kargs *a);
tg_status tg__cpu_clamp_backward(void *state, const tg_kargs *a);
tg_status tg__cpu_where(void *state, const tg_kargs *a);
tg_status tg__cpu_neg(void *state, const tg_kargs *a);
tg_status tg__cpu_affine(void *state, const tg_kargs *a);
tg_status tg__cpu_pow_scalar(void *state, const tg_kargs *a);
tg_status tg__cpu_exp(void *state, const tg_kargs *a);
tg_status tg__cpu_log(void *state, const tg_kargs *a);
tg_status tg__cpu_sqrt(void *state, const tg_kargs *a);
tg_status tg__cpu_abs(void *state, const tg_kargs *a);
tg_status tg__cpu_erf(void *state, const tg_kargs *a);
tg_status tg__cpu_relu(void *state, const tg_kargs *a);
tg_status tg__cpu_sigmoid(void *state, const tg_kargs *a);
tg_status tg__cpu_tanh(void *state, const tg_kargs *a);
tg_status tg__cpu_silu(void *state, const tg_kargs *a);
tg_status tg__cpu_gelu(void *state, const tg_kargs *a);
tg_status tg__cpu_clamp(void *state, const tg_kargs *a);
tg_status tg__cpu_sign(void *state, const tg_kargs *a);
tg_status tg__cpu_sum(void *state, const tg_kargs *a);
tg_status tg__cpu_mean(void *state, const tg_kargs *a);
tg_status tg__cpu_max(void *state, const tg_kargs *a);
tg_status tg__cpu_min(void *state, const tg_kargs *a);
tg_status tg__cpu_argmax(void *state, const tg_kargs *a);
tg_status tg__cpu_matmul(void *state, const tg_kargs *a);
tg_status tg__cpu_copy(void *state, const tg_kargs *a);
tg_status tg__cpu_reshape(void *state, const tg_kargs *a);
tg_status tg__cpu_slice_scatter(void *state, const tg_kargs *a);
/* world_sum's local part: a copy (the collective sums it in place) */
tg_status tg__cpu_world_sum(void *state, const tg_kargs *a);
tg_status tg__cpu_concat(void *state, const tg_kargs *a);
tg_status tg__cpu_softmax(void *state, const tg_kargs *a);
tg_status tg__cpu_log_softmax(void *state, const tg_kargs *a);
tg_status tg__cpu_gather(void *state, const tg_kargs *a);
tg_status tg__cpu_scatter_add(void *state, const tg_kargs *a);
/* cpu_loss.c */
tg_status tg__cpu_cross_entropy(void *state, const tg_kargs *a);
tg_status tg__cpu_cross_entropy_backward(void *state, const tg_kargs *a);
tg_status tg__cpu_dropout(void *state, const tg_kargs *a);
/* cpu_conv.c */
tg_status tg__cpu_conv2d(void *state, const tg_kargs *a);
tg_status tg__cpu_conv2d_backward_input(void *state, const tg_kargs *a);
tg_status tg__cpu_conv2d_backward_weight(void *state, const tg_kargs *a);
/* cpu_pool.c */
tg_status tg__cpu_max_pool2d(void *state, const tg_kargs *a);
tg_status tg__cpu_max_pool2d_indices(void *state, const tg_kargs *a);
tg_status tg__cpu_max_pool2d_backward(void *state, const tg_kargs *a);
tg_status tg__cpu_avg_pool2d(void *state, const tg_kargs *a);
tg_status tg__cpu_avg_pool2d_backward(void *state, const tg_kargs *a);
/* cpu_norm.c */
tg_status tg__cpu_batch_norm(void *state, const tg_kargs *a);
tg_status tg__cpu_batch_norm_backward(void *state, const tg_kargs *a);
/* cpu_lnorm.c */
tg_status tg__cpu_layer_norm(void *state, const tg_kargs *a);
tg_status tg__cpu_layer_norm_backward(void *state, const tg_kargs *a);
/* cpu_attn.c */
tg_status tg__cpu_scaled_dot_product_attention(void *state, const tg_kargs *a);
tg_status tg__cpu_scaled_dot_product_attention_backward(void *state, const tg_kargs *a);
/* cpu_attn_bf16.c: the same under autocast (TG_KP_ATTN_BF16), for head dims
 * tg__cpu_attn_bf16_fits takes; contiguous f32 operands as cpu_attn.c's. */
bool tg__cpu_attn_bf16_fits(int64_t d);
void tg__cpu_attn_bf16_fwd(int64_t bh, int64_t tq, int64_t tk, int64_t d, double scale,
                           bool causal, bool par, const float *q, const float *k, const float *v,
                           float *o, float *lse);
void tg__cpu_attn_bf16_bwd(int64_t bh, int64_t tq, int64_t tk, int64_t d, double scale,
                           bool causal, bool par, const float *go, const float *q,
                           const float *k, const float *v, const float *o, const float *lse,
                           float *dq, float *dk, float *dv);
/* Its block products: vdpbf16ps (CPUs with AVX512_BF16) or portable C.
 * Chosen once from the CPU (TG_ATTN_BF16=portable in the environment forces
 * the portable one); set_path (for tests) picks one, AVX512 only where the CPU
 * has it, and returns the previous path. */
enum { TG__ATTN_BF16_PORTABLE = 0, TG__ATTN_BF16_AVX512 = 1 };
bool tg__cpu_attn_bf16_native(void);
int tg__cpu_attn_bf16_set_path(int path);

/* cpu_elementwise.c: comparisons, maximum/minimum, sin, cos */
tg_status tg__cpu_ne(void *state, const tg_kargs *a);
tg_status tg__cpu_gt(void *state, const tg_kargs *a);
tg_status tg__cpu_ge(void *state, const tg_kargs *a);
tg_status tg__cpu_lt(void *state, const tg_kargs *a);
tg_status tg__cpu_le(void *state, const tg_kargs *a);
tg_status tg__cpu_maximum(void *state, const tg_kargs *a);
tg_status tg__cpu_minimum(void *state, const tg_kargs *a);
tg_status tg__cpu_sin(void *state, const tg_kargs *a);
tg_status tg__cpu_cos(void *state, const tg_kargs *a);
/* cpu_ops2.c: cast, cumsum, topk indices and the integer sum */
tg_status tg__cpu_cast(void *state, const tg_kargs *a);
tg_status tg__cpu_cumsum(void *state, const tg_kargs *a);
tg_status tg__cpu_topk_indices(void *state, const tg_kargs *a);
tg_status tg__cpu_sum_int(const tg_kargs *a);

/* Views only change strides; the runtime never dispatches a kernel for them. */
#define tg__cpu_permute NULL
#define tg__cpu_broadcast_to NULL
#define tg__cpu_slice NULL

/* ---- shared helpers (cpu_backend.c) ---- */

/* Writes a message into a->err (when there is room) and returns st. */
tg_status tg__cpu_fail(const tg_kargs *a, tg_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns TG_OK when the output and inputs 0..nin-1 all have the same float
 * dtype; otherwise TG_ERR_DTYPE with a message naming the op. */
tg_status tg__cpu_check_float(const tg_kargs *a, int nin);

/* Fills nbytes with zero bytes, in parallel when the buffer is large. */
void tg__cpu_zero(void *dst, size_t nbytes);

/* Bytes per element; kept here so kernels need nothing from the runtime. */
static inline size_t tg__cpu_esize(tg_dtype dt) {
    switch (dt) {
    case TG_U8:
        return 1;
    case TG_BF16:
        return 2;
    case TG_F32:
    case TG_I32:
        return 4;
    case TG_F64:
    case TG_I64:
        return 8;
    default:
        return 0;
    }
}

/* Reads element i of an integer index array (u8, i32 or i64). */
static inline int64_t tg__cpu_index_at(const void *p, tg_dtype dt, int64_t i) {
    switch (dt) {
    case TG_U8:
        return ((const uint8_t *)p)[i];
    case TG_I32:
        return ((const int32_t *)p)[i];
    default:
        return ((const int64_t *)p)[i];
    }
}

/*
 * Vectorisable math. glibc's libmvec has SIMD versions of exp, log, erf and
 * tanh, but <math.h> announces them only under -ffast-math. These
 * declarations name the same symbols (through asm labels) with a simd clone,
 * so that `omp simd` loops call the vector versions, and mark them const: a
 * possible errno write is what otherwise keeps every loop that calls them
 * scalar, and no kernel reads errno. Outside vector loops they are the plain
 * libm functions. The clones exist for all four functions from glibc 2.35.
 */
#define TG__CPU_VMATH __attribute__((const))
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#if __GLIBC_PREREQ(2, 35)
#undef TG__CPU_VMATH
#define TG__CPU_VMATH __attribute__((const, simd("notinbranch")))
#endif
#endif
TG__CPU_VMATH float tg__cpu_m_expf(float) __asm__("expf");
TG__CPU_VMATH double tg__cpu_m_exp(double) __asm__("exp");
TG__CPU_VMATH float tg__cpu_m_logf(float) __asm__("logf");
TG__CPU_VMATH double tg__cpu_m_log(double) __asm__("log");
TG__CPU_VMATH float tg__cpu_m_erff(float) __asm__("erff");
TG__CPU_VMATH double tg__cpu_m_erf(double) __asm__("erf");
TG__CPU_VMATH float tg__cpu_m_tanhf(float) __asm__("tanhf");
TG__CPU_VMATH double tg__cpu_m_tanh(double) __asm__("tanh");
#define tg__cpu_vexp(x) _Generic((x), float : tg__cpu_m_expf, double : tg__cpu_m_exp)(x)
#define tg__cpu_vlog(x) _Generic((x), float : tg__cpu_m_logf, double : tg__cpu_m_log)(x)
#define tg__cpu_verf(x) _Generic((x), float : tg__cpu_m_erff, double : tg__cpu_m_erf)(x)
#define tg__cpu_vtanh(x) _Generic((x), float : tg__cpu_m_tanhf, double : tg__cpu_m_tanh)(x)

/*
 * Row functions of the compute-heavy kernels are compiled twice, for the
 * x86-64 baseline the library is built for and for x86-64-v3 (AVX2), and the
 * loader picks the version the CPU can run. Floating-point contraction stays
 * off under -std=c11, so both versions round alike. Sanitizer builds skip
 * this: ifunc resolvers run before the sanitizer runtime is ready.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define TG__CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TG__CPU_CLONES
#endif

/*
 * `omp simd` on the loops that should vectorise. GCC vectorises a loop that
 * calls a math function or reduces in floating point only when asked this
 * way; clang vectorises such loops on its own terms and reports every
 * `omp simd` it cannot honour as a warning (an error under -Werror), so for
 * clang the request is left out.
 */
#if defined(__clang__)
#define TG__CPU_SIMD(clauses)
#else
#define TG__CPU_SIMD(clauses) _Pragma(clauses)
#endif

/* ---- the strided loop driver (cpu_elementwise.c) ---- */

/*
 * A row function processes n elements of one row: ptr[0] is the output,
 * ptr[1..] the inputs, stride[i] the element stride of operand i along the
 * row. For a contiguous output stride[0] is 1 (the driver guarantees it).
 */
typedef void (*tg__cpu_row_fn)(char *const *ptr, const int64_t *stride, int64_t n,
                               const tg_op_params *p);

/* An iteration shape and the operands walked over it, output first. */
typedef struct tg__cpu_loop {
    int ndim;
    int nops;
    int64_t shape[TG_MAX_DIMS];
    int64_t strides[TG__CPU_MAX_OPERANDS][TG_MAX_DIMS];
    char *data[TG__CPU_MAX_OPERANDS];
    size_t esize[TG__CPU_MAX_OPERANDS];
} tg__cpu_loop;

void tg__cpu_loop_init(tg__cpu_loop *l, int ndim, const int64_t *shape);
/* Adds an operand with its element strides over the loop's shape. */
void tg__cpu_loop_add(tg__cpu_loop *l, void *data, tg_dtype dt, const int64_t *strides);
/* Collapses dims, then calls fn over every row; empty shapes do nothing. */
void tg__cpu_loop_run(tg__cpu_loop *l, tg__cpu_row_fn fn, const tg_op_params *p);

#endif
