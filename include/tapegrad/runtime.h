/*
 * tapegrad/runtime.h: tensors, the tape and autograd.
 *
 * Overview
 * --------
 * A context (tg_ctx) owns a backend, two kinds of memory and the tape:
 *   - the persistent pool holds tensors that live as long as the context
 *     (parameters, optimizer state): tg_param(), tg_persistent();
 *   - the step arena holds everything else (inputs, activations, gradients of
 *     intermediates). tg_step_reset() releases it all at once; the arena keeps
 *     its high-water mark, so a training loop allocates nothing after its
 *     first step.
 * Every op appends a record to the tape when grad mode is on and one of its
 * inputs requires grad; tg_backward() walks the tape from the end.
 *
 * Worked example (seed 000): y = ln x1 + x1*x2 - exp(x2) at (2, 5)
 *
 *     tg_ctx *ctx;
 *     tg_ctx_new(NULL, &ctx);
 *     tg_tensor *x1 = tg_scalar(ctx, TG_F64, 2.0);
 *     tg_tensor *x2 = tg_scalar(ctx, TG_F64, 5.0);
 *     tg_set_requires_grad(ctx, x1, true);
 *     tg_set_requires_grad(ctx, x2, true);
 *     tg_tensor *y = tg_sub(ctx, tg_add(ctx, tg_log(ctx, x1), tg_mul(ctx, x1, x2)),
 *                           tg_exp(ctx, x2));
 *     if (!y || tg_backward(ctx, y, NULL, 0) != TG_OK)
 *         fprintf(stderr, "%s\n", tg_ctx_error(ctx));
 *     // x1->grad holds 5.5, x2->grad holds -146.41 (read with tg_item).
 *     tg_ctx_free(ctx);
 *
 * Errors: op constructors return NULL on failure and leave the status
 * (tg_ctx_status) and a message naming the op and the operands
 * (tg_ctx_error) in the context. An op given a NULL operand returns NULL and
 * keeps the first error, so a chain of ops is checked once at its end. All
 * other fallible calls return a tg_status and also set the message.
 *
 * Ownership: every tensor belongs to its context. Step tensors die at
 * tg_step_reset() or tg_ctx_free(); persistent ones at tg_ctx_free(). Never
 * free a tensor yourself.
 *
 * Lifetimes
 * ---------
 * Persistent tensors: those made by tg_param() and tg_persistent() (and the
 * parameters, buffers and optimizer state that nn.h and optim.h make with
 * them). They survive tg_step_reset(), keep their values, and are the only
 * tensors that do.
 * Step tensors: everything else, namely tg_empty/zeros/full/scalar/
 * from_data/zeros_like, the result of every op, every gradient of a
 * non-leaf, and every view (reshape, transpose, permute, slice,
 * broadcast_to, chunk, ...) even of a persistent tensor: the view's struct
 * is a step tensor although the storage it shares is not. A persistent
 * leaf's ->grad is persistent once tg_backward made it, unless it was made
 * under TG_CREATE_GRAPH (then it is a step tensor and the reset clears the
 * pointer). tg_step_reset() releases all step tensors and the tape at
 * once, and the next step's tensors reuse their memory: a pointer to a step
 * tensor kept past the reset reads whatever tensor now lives there. Run
 * with TG_DEBUG_STEPS=1 in the environment to have every op check its
 * operands and fail with "tensor from step N used after tg_step_reset"
 * (always in the step after N; later while the memory was not reused).
 * Hoisting work out of the loop: to compute something once (a constant
 * input, a mask, a transposed weight that does not change), make a
 * tg_persistent() tensor of the right shape before the loop and fill it
 * with tg_copy_(ctx, dst, src) from the step tensor that computed it, then
 * tg_step_reset(); in the loop use the persistent tensor (views of it are
 * cheap, but must be made again in each step). Values that change each
 * step (a batch) are best written into a persistent tensor with
 * tg_copy_from_host(), which allocates nothing.
 *
 *     // once, before the loop
 *     int64_t n[1] = {64};
 *     tg_tensor *scale = tg_persistent(ctx, TG_F32, 1, n, "scale");
 *     tg_copy_(ctx, scale, tg_exp(ctx, tg_from_data(ctx, TG_F32, 1, n, host)));
 *     tg_step_reset(ctx);
 *     for (int step = 0; step < steps; step++) {
 *         tg_tensor *y = tg_mul(ctx, tg_linear_forward(ctx, &layer, x), scale);
 *         ...
 *         tg_step_reset(ctx); // y and x die here; scale does not
 *     }
 *
 * Sizes: element counts, byte sizes, strides and view offsets computed from
 * shapes are overflow-checked. A shape with more elements than an int64_t
 * counts fails with TG_ERR_SHAPE, one of more than PTRDIFF_MAX bytes with
 * TG_ERR_NOMEM, and the message names the shape.
 *
 * Semantics follow PyTorch: requires_grad propagates; leaves accumulate into
 * ->grad across backward calls until zeroed; non-leaf gradients are kept only
 * for tensors marked with tg_retain_grad(); in-place ops are never recorded,
 * are refused on a tensor that requires grad while grad mode is on, and bump
 * a version counter so that backward refuses a saved tensor that changed.
 * max and min split the gradient evenly among tied extrema.
 */
#ifndef TAPEGRAD_RUNTIME_H
#define TAPEGRAD_RUNTIME_H

#include "tapegrad/base.h"
#include "tapegrad/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tg_ctx tg_ctx;

/* Memory shared by a tensor and its views. version counts in-place writes. */
typedef struct tg_storage {
    void *data;
    size_t nbytes;
    uint32_t version;
    bool persistent;
    /* Internal: the context's count of storages made before this one. */
    uint64_t serial;
} tg_storage;

/*
 * A tensor. The fields are readable by users; change them only through the
 * functions below. Shapes are row-major; strides and offset are in elements.
 */
typedef struct tg_tensor {
    tg_dtype dtype;
    tg_device device;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t strides[TG_MAX_DIMS];
    int64_t offset;
    tg_storage *storage;
    bool requires_grad;
    bool retain_grad;
    /* The accumulated gradient (leaves, and retained non-leaves), or NULL. */
    struct tg_tensor *grad;
    /* Sequence number of the tape record that made this tensor; 0 = leaf. */
    uint64_t record;
    /* Optional name, used in error messages and checkpoints (tg_param and
     * tg_persistent keep a copy: the caller's string may be reused). */
    const char *name;
    /* Internal: 0 for a persistent tensor, else the step it was made in + 1
     * (checked against the context in debug mode, see TG_DEBUG_STEPS). */
    uint64_t step;
    /* Internal to autograd. */
    uint64_t first_use;
    struct tg_tensor *gacc;
    bool touched;
    /* gacc is backward's own (nothing else refers to its storage), so later
     * contributions may be added into it in place. */
    bool gacc_own;
} tg_tensor;

/* ---- the context ---- */

typedef struct tg_ctx_config {
    tg_device device;   /* TG_DEVICE_CPU (default) or TG_DEVICE_CUDA */
    int threads;        /* CPU threads; <= 0: the OpenMP default */
} tg_ctx_config;

/* Create a context; cfg may be NULL for the defaults. On failure *out is
 * NULL and the returned status says why (a message goes to stderr-free
 * storage: call tg_last_init_error()); a device other than TG_DEVICE_CPU
 * and TG_DEVICE_CUDA is TG_ERR_INVALID. The environment variable
 * TG_DEBUG_STEPS (1 or 0), read here, turns the step-lifetime debug mode
 * on or off for this context (see Lifetimes above). */
tg_status tg_ctx_new(const tg_ctx_config *cfg, tg_ctx **out);

const char *tg_last_init_error(void);
void tg_ctx_free(tg_ctx *ctx);

/* The first error since the last tg_ctx_clear_error(), and its message. */
tg_status tg_ctx_status(const tg_ctx *ctx);
const char *tg_ctx_error(const tg_ctx *ctx);
void tg_ctx_clear_error(tg_ctx *ctx);
const tg_backend *tg_ctx_backend(const tg_ctx *ctx);
/* Wait until the device has finished the work queued so far (a no-op on the
 * CPU), e.g. before another stream (NCCL's) reads tensors just written. */
tg_status tg_synchronize(tg_ctx *ctx);

/* Release every step tensor and clear the tape. Persistent tensors keep
 * their values; a persistent leaf's gradient made under create_graph (which
 * lives in the step arena) is dropped. Every pointer to a step tensor,
 * views of parameters included, is dead afterwards (see Lifetimes). */
void tg_step_reset(tg_ctx *ctx);
/* Bytes in use and reserved by the step arena, and its high-water mark. */
void tg_arena_stats(const tg_ctx *ctx, size_t *used, size_t *reserved, size_t *high_water);
/* Number of host allocations the context has made so far (arena chunks, tape
 * growth). A training loop in steady state leaves it unchanged. */
uint64_t tg_ctx_alloc_count(const tg_ctx *ctx);

/* ---- the BLAS library ---- */

/*
 * The BLAS library the CPU backend runs on (always OpenBLAS), as the loaded
 * library reports it, for start-up banners and benchmark logs. OpenBLAS
 * chooses its kernels once, when it is loaded: by the CPU, unless the
 * variable OPENBLAS_CORETYPE names a core, which it then takes even when the
 * CPU could run faster ones.
 *   core         the kernel set in use, e.g. "Haswell" or "Cooperlake"
 *                ("unknown" when the library does not say);
 *   config       the library's build string, e.g. "OpenBLAS 0.3.21 ...";
 *   forced_core  the value of OPENBLAS_CORETYPE now, or NULL when it is unset
 *                or empty (the library read it at load time);
 *   cpu_avx512   this CPU runs AVX-512 F, BW, DQ and VL;
 *   core_avx512  core is one of OpenBLAS's AVX-512 kernel sets (SkylakeX,
 *                Cooperlake, SapphireRapids);
 *   own_sgemm    f32 matrix products run on tapegrad's own AVX-512 kernel
 *                rather than OpenBLAS's sgemm (CPUs with AVX-512 F, unless
 *                the variable TG_CPU_SGEMM is "blas"; the largest products
 *                and short ones with a transposed second operand excepted);
 *                convolutions and f64 products stay on OpenBLAS.
 * The strings belong to the library (or the environment); do not free them.
 */
typedef struct tg_blas_info {
    const char *core;
    const char *config;
    const char *forced_core;
    bool cpu_avx512;
    bool core_avx512;
    bool own_sgemm;
} tg_blas_info;
void tg_blas_info_get(tg_blas_info *out);

/* ---- making tensors ---- */

/* Step tensors (released by tg_step_reset). Values of tg_empty are undefined. */
tg_tensor *tg_empty(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape);
tg_tensor *tg_zeros(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape);
tg_tensor *tg_full(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, double value);
tg_tensor *tg_scalar(tg_ctx *ctx, tg_dtype dt, double value);
/* Copies numel * dtype-size bytes from host memory `data`. */
tg_tensor *tg_from_data(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, const void *data);
tg_tensor *tg_zeros_like(tg_ctx *ctx, const tg_tensor *t);

/* Persistent tensors, zero-filled. tg_param also sets requires_grad. The
 * name (may be NULL) is copied: a buffer reused for the next name is fine. */
tg_tensor *tg_param(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, const char *name);
tg_tensor *tg_persistent(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, const char *name);

int64_t tg_numel(const tg_tensor *t);
bool tg_is_contiguous(const tg_tensor *t);
bool tg_is_leaf(const tg_tensor *t);
/* Writes "(2, 3, 4)" into buf; returns buf. */
char *tg_shape_str(const tg_tensor *t, char *buf, size_t len);

/* Copy the tensor's elements, in row-major order, to host memory. nbytes must
 * equal numel * dtype size. */
tg_status tg_to_host(tg_ctx *ctx, const tg_tensor *t, void *dst, size_t nbytes);
/* The value of a one-element tensor, converted to double. */
tg_status tg_item(tg_ctx *ctx, const tg_tensor *t, double *value);
/* The value at a row-major flat index, converted to double (for tests). */
tg_status tg_get(tg_ctx *ctx, const tg_tensor *t, int64_t flat_index, double *value);

/* ---- in-place operations (never recorded; each bumps the version) ---- */

tg_status tg_copy_from_host(tg_ctx *ctx, tg_tensor *t, const void *src, size_t nbytes);
tg_status tg_fill_(tg_ctx *ctx, tg_tensor *t, double value);
tg_status tg_mul_scalar_(tg_ctx *ctx, tg_tensor *t, double value);
/* dst += alpha * src; same shape and dtype. */
tg_status tg_axpy_(tg_ctx *ctx, tg_tensor *dst, double alpha, const tg_tensor *src);
/* dst = src (same shape and dtype; src may be strided). */
tg_status tg_copy_(tg_ctx *ctx, tg_tensor *dst, const tg_tensor *src);
/* Sets the version of t's storage forward, as an in-place write would. */
void tg_bump_version(tg_tensor *t);

/* ---- autograd ---- */

enum {
    TG_RETAIN_GRAPH = 1 << 0,  /* keep the tape for another backward */
    TG_CREATE_GRAPH = 1 << 1,  /* record the backward pass: higher-order grads */
};

/* Only leaves may change requires_grad; float dtypes only. */
tg_status tg_set_requires_grad(tg_ctx *ctx, tg_tensor *t, bool requires_grad);
/* Keep the gradient of a non-leaf in ->grad after backward. */
tg_status tg_retain_grad(tg_ctx *ctx, tg_tensor *t);
/* Grad mode: returns the previous setting. */
bool tg_grad_enabled(const tg_ctx *ctx);
bool tg_set_grad_enabled(tg_ctx *ctx, bool enabled);

/*
 * The precision of the products (autocast, as torch.autocast with
 * dtype=torch.bfloat16). TG_PRECISION_F32 (the default): every op computes in
 * its operands' dtype. TG_PRECISION_BF16: tg_matmul (so tg_linear), tg_conv2d
 * and the two convolution gradients, given f32 operands, round the operands
 * to bf16, multiply with f32 accumulation and return f32; so does the fused
 * tg_scaled_dot_product_attention and its backward (q, k, v, the
 * probabilities, the seed gradient and dS rounded to bf16 for their
 * products, the softmax in f32; nn.h). Nothing else
 * changes: tensors, parameters, gradients and optimizer state stay f32 (the
 * master weights), and the tape, reductions, softmax, norms and losses run in
 * f32. The backward products follow the setting in force when backward runs.
 * f64 operands are never rounded. bf16 has f32's range: no loss scaling.
 *
 * Setting bf16 checks once that the backend can (on the CPU: a build with
 * oneDNN; it runs a tiny product, which makes a few small step tensors) and
 * otherwise returns TG_ERR_UNSUPPORTED with a message and keeps f32. On the
 * CPU the matmuls run on tapegrad's own AVX512_BF16 kernel where the CPU
 * has it (the same bits at any thread count), on oneDNN elsewhere; the
 * environment variable TG_CPU_BF16_GEMM (auto, own or onednn), read by
 * tg_ctx_new, overrides that choice, and tg_ctx_new fails on another value
 * (or on own where the CPU lacks AVX512_BF16).
 */
typedef enum tg_precision {
    TG_PRECISION_F32 = 0,
    TG_PRECISION_BF16,
} tg_precision;
tg_status tg_ctx_set_precision(tg_ctx *ctx, tg_precision p);
tg_precision tg_ctx_precision(const tg_ctx *ctx);
/* "f32" or "bf16" ("?" for another value). */
const char *tg_precision_name(tg_precision p);

/* Backpropagate from root. seed is dL/droot; NULL means 1 and then root must
 * have one element. Leaf gradients accumulate into ->grad. */
tg_status tg_backward(tg_ctx *ctx, tg_tensor *root, tg_tensor *seed, unsigned flags);
/* Like torch.autograd.grad: grads[i] = d root / d inputs[i] (NULL when
 * inputs[i] does not affect root); nothing is accumulated into ->grad. */
tg_status tg_grad(tg_ctx *ctx, tg_tensor *root, tg_tensor *seed, int n, tg_tensor *const *inputs,
                  tg_tensor **grads, unsigned flags);
/* Zero t->grad in place (keeps the buffer). */
tg_status tg_zero_grad(tg_ctx *ctx, tg_tensor *t);

/* Called during backward as soon as a leaf's gradient for this backward is
 * final (its ->grad holds the accumulated value). */
typedef void (*tg_grad_hook_fn)(tg_ctx *ctx, tg_tensor *leaf, void *user);
void tg_set_grad_hook(tg_ctx *ctx, tg_grad_hook_fn fn, void *user);
/* Number of records on the tape now. */
int64_t tg_tape_size(const tg_ctx *ctx);

/* ---- ops across ranks ----
 * The runtime knows nothing of MPI or NCCL: comm/ installs a collective in
 * the context (tg_world_attach in tapegrad/comm.h) and the ops that span
 * ranks call it. Without one the context is a world of one, where those ops
 * are the identity. */
typedef struct tg_collective {
    /* Sum n elements of dtype dt at data (contiguous memory of the context's
     * device) over every rank, in place. Every rank makes the same calls in
     * the same order. On failure returns a status and writes why to err. */
    tg_status (*sum)(void *user, tg_ctx *ctx, void *data, int64_t n, tg_dtype dt, char *err,
                     size_t errlen);
    int size; /* ranks taking part */
    void *user;
} tg_collective;
/* Copy c into the context (NULL or c->sum NULL: none, a world of one). */
void tg_set_collective(tg_ctx *ctx, const tg_collective *c);
/* Ranks of the context's collective (1 without one). */
int tg_collective_size(const tg_ctx *ctx);
/* x summed elementwise over every rank (the world_sum row); the identity,
 * as a copy, on a world of one. Recorded like any op: its gradient is the
 * world_sum of the gradient. Collective: every rank must call it, in the same
 * order, with the same shape. */
tg_tensor *tg_world_sum(tg_ctx *ctx, tg_tensor *x);

/* ---- ops (each returns a new tensor, or NULL with the error in ctx) ---- */

/* Elementwise with broadcasting (seed 000 rules: shapes align from the
 * right; each pair of dims must be equal or one of them 1). Both operands
 * have one dtype (no promotion); add, sub, mul and eq also take integer
 * tensors (u8, i32, i64; wrapping arithmetic), div only floats. */
tg_tensor *tg_add(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_sub(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_mul(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_div(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
/* 1 where a == b else 0 (dtype of a); never requires grad. */
tg_tensor *tg_eq(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
/* cond ? a : b, broadcasting all three; cond of any dtype, nonzero = true. */
tg_tensor *tg_where(tg_ctx *ctx, tg_tensor *cond, tg_tensor *a, tg_tensor *b);

tg_tensor *tg_neg(tg_ctx *ctx, tg_tensor *a);
/* scale * a + shift */
tg_tensor *tg_affine(tg_ctx *ctx, tg_tensor *a, double scale, double shift);
tg_tensor *tg_add_scalar(tg_ctx *ctx, tg_tensor *a, double s);
tg_tensor *tg_mul_scalar(tg_ctx *ctx, tg_tensor *a, double s);
tg_tensor *tg_pow_scalar(tg_ctx *ctx, tg_tensor *a, double p);
tg_tensor *tg_exp(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_log(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_sqrt(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_abs(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_erf(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_relu(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_sigmoid(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_tanh(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_silu(tg_ctx *ctx, tg_tensor *a);
/* The exact (erf) GELU, PyTorch's default. */
tg_tensor *tg_gelu(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_clamp(tg_ctx *ctx, tg_tensor *a, double lo, double hi);
/* -1, 0 or 1; never requires grad. */
tg_tensor *tg_sign(tg_ctx *ctx, tg_tensor *a);
/* Fused gradient helpers: g * (x > 0), g * (lo <= x <= hi), and gelu's
 * g * (Phi(x) + x phi(x)) (Phi, phi: the normal cdf and pdf) in one pass. */
tg_tensor *tg_relu_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x);
tg_tensor *tg_clamp_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x, double lo, double hi);
tg_tensor *tg_gelu_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x);

/* Reductions over the axes listed (negative axes count from the end; naxes 0
 * means all axes). sum also takes integer tensors and then gives i64. */
tg_tensor *tg_sum(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim);
tg_tensor *tg_mean(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim);
tg_tensor *tg_max(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim);
tg_tensor *tg_min(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim);
/* Index (i64) of the first maximum along axis. */
tg_tensor *tg_argmax(tg_ctx *ctx, tg_tensor *a, int axis, bool keepdim);
/* Sum of b over the dims that broadcasting added, so that the result has
 * `ndim`/`shape` (the gradient of broadcast_to). */
tg_tensor *tg_sum_to(tg_ctx *ctx, tg_tensor *b, int ndim, const int64_t *shape);

/* Matrix product as torch.matmul: 1-D operands are promoted and the added
 * dim removed; leading (batch) dims broadcast. */
tg_tensor *tg_matmul(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);

/* Shape. Views share storage; reshape copies only when it must. */
tg_tensor *tg_copy(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_contiguous(tg_ctx *ctx, tg_tensor *a);
/* One entry of shape may be -1 (inferred). */
tg_tensor *tg_reshape(tg_ctx *ctx, tg_tensor *a, int ndim, const int64_t *shape);
tg_tensor *tg_permute(tg_ctx *ctx, tg_tensor *a, const int *perm);
tg_tensor *tg_transpose(tg_ctx *ctx, tg_tensor *a, int d0, int d1);
tg_tensor *tg_broadcast_to(tg_ctx *ctx, tg_tensor *a, int ndim, const int64_t *shape);
/* a[..., start:stop:step, ...] along axis; negative start/stop count from the
 * end and are clamped as Python does; step >= 1. */
tg_tensor *tg_slice(tg_ctx *ctx, tg_tensor *a, int axis, int64_t start, int64_t stop, int64_t step);
/* Zeros of shape `shape` with src written at [start:stop:step] along axis
 * (the gradient of slice). */
tg_tensor *tg_slice_scatter(tg_ctx *ctx, tg_tensor *src, int ndim, const int64_t *shape, int axis,
                            int64_t start, int64_t stop, int64_t step);
tg_tensor *tg_concat(tg_ctx *ctx, int n, tg_tensor *const *ts, int axis);
tg_tensor *tg_stack(tg_ctx *ctx, int n, tg_tensor *const *ts, int axis);
/* Split into `chunks` views of size ceil(len/chunks) along axis (the last
 * may be smaller), as torch.chunk. Writes up to `chunks` tensors to out and
 * returns how many, or -1 on error. */
int tg_chunk(tg_ctx *ctx, tg_tensor *a, int chunks, int axis, tg_tensor **out);
/* einops-style rearrange from grouping, transposition and concatenation:
 *   tg_rearrange(ctx, t, "a (b1 b2) c -> (a c) (b2 b1)", "b1=2")
 * sizes: comma-separated name=value for axes that cannot be inferred. */
tg_tensor *tg_rearrange(tg_ctx *ctx, tg_tensor *a, const char *pattern, const char *sizes);

tg_tensor *tg_softmax(tg_ctx *ctx, tg_tensor *a, int axis);
tg_tensor *tg_log_softmax(tg_ctx *ctx, tg_tensor *a, int axis);
/* out[..i..] = a[..index[..i..]..] along axis (torch.gather); index is an
 * integer tensor with a's ndim whose other dims do not exceed a's. */
tg_tensor *tg_gather(tg_ctx *ctx, tg_tensor *a, int axis, tg_tensor *index);
/* Zeros of `shape` with src added at index along axis (gather's gradient). */
tg_tensor *tg_scatter_add(tg_ctx *ctx, tg_tensor *src, int axis, tg_tensor *index, int ndim,
                          const int64_t *shape);

/* ---- more of what PyTorch users reach for (docs/PYTORCH.md) ---- */

/* Comparisons, like tg_eq: 1 where the relation holds else 0, in the dtype
 * of a (float or integer; both operands of one dtype); never require grad. */
tg_tensor *tg_ne(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_gt(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_ge(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_lt(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_le(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
/* Elementwise maximum/minimum with broadcasting (float or integer); NaN
 * propagates. The gradient goes to the larger (smaller) operand and is split
 * evenly on ties, as max splits it among tied extrema. */
tg_tensor *tg_maximum(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_minimum(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_sin(tg_ctx *ctx, tg_tensor *a);
tg_tensor *tg_cos(tg_ctx *ctx, tg_tensor *a);

/* A copy converted to dtype dt (f32, f64, u8, i32, i64, bf16; float to integer
 * truncates toward zero, out-of-range values are undefined as in C; to bf16
 * rounds to nearest even through f32, as PyTorch). The gradient flows between
 * f32 and f64; an integer or bf16 result never requires grad. Always a new tensor, also when dt is a's dtype. */
tg_tensor *tg_to_dtype(tg_ctx *ctx, tg_tensor *a, tg_dtype dt);
/* A view of a's data that is a leaf and never requires grad (torch's
 * detach): it shares storage and version counter with a. */
tg_tensor *tg_detach(tg_ctx *ctx, tg_tensor *a);

/* log(sum(exp(a))) over axes (naxes 0: all), computed stably. */
tg_tensor *tg_logsumexp(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool keepdim);
/* Variance and standard deviation over axes (naxes 0: all); unbiased divides
 * by n - 1 (PyTorch's default), else by n. */
tg_tensor *tg_var(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool unbiased,
                  bool keepdim);
tg_tensor *tg_std(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes, bool unbiased,
                  bool keepdim);
/* Cumulative sum along axis (float dtypes). */
tg_tensor *tg_cumsum(tg_ctx *ctx, tg_tensor *a, int axis);
/* The k largest (largest) or smallest elements along axis, sorted, ties by
 * lower index first; *indices (when not NULL) receives their i64 indices.
 * The values are differentiable (a gather); the indices are not. */
tg_tensor *tg_topk(tg_ctx *ctx, tg_tensor *a, int64_t k, int axis, bool largest,
                   tg_tensor **indices);
tg_tensor *tg_topk_indices(tg_ctx *ctx, tg_tensor *a, int64_t k, int axis, bool largest);
/* The entries of a at the 1-d integer index along axis (torch.index_select). */
tg_tensor *tg_index_select(tg_ctx *ctx, tg_tensor *a, int axis, tg_tensor *index);
/* a with value where mask (any dtype, nonzero = true, broadcast to a's
 * shape) is set; the gradient flows to a where mask is not set. */
tg_tensor *tg_masked_fill(tg_ctx *ctx, tg_tensor *a, tg_tensor *mask, double value);
/* Insert a size-1 dim at axis (-ndim-1 <= axis <= ndim). */
tg_tensor *tg_unsqueeze(tg_ctx *ctx, tg_tensor *a, int axis);
/* Remove the size-1 dims among axes (naxes 0: all size-1 dims); a named dim
 * of another size stays, as in PyTorch. */
tg_tensor *tg_squeeze(tg_ctx *ctx, tg_tensor *a, int naxes, const int *axes);

/* ---- creation (runtime/core/creation.c) ---- */

/* start, start + step, ... below stop (above it for a negative step), as
 * torch.arange; the count is ceil((stop - start) / step). */
tg_tensor *tg_arange(tg_ctx *ctx, tg_dtype dt, double start, double stop, double step);
/* Step tensors of t's dtype and shape. */
tg_tensor *tg_full_like(tg_ctx *ctx, const tg_tensor *t, double value);
tg_tensor *tg_ones_like(tg_ctx *ctx, const tg_tensor *t);

/* Random tensors from a Philox stream (tapegrad/rng.h, as dropout takes):
 * the values are a function of (key, counter) only, made on the host, so a
 * seed gives the same numbers on CPU and CUDA and whatever the thread count.
 * Each call advances rng->counter past the blocks it used.
 *   rand:    uniform [0, 1): element i is word i of the stream (block i/4,
 *            word i%4), 24 bits for f32 (as tg_rng_uniform), 32 for f64;
 *   randn:   N(0, 1) by Box-Muller: elements 2m, 2m+1 from block m (as
 *            tg_rng_normal);
 *   randint: uniform in [low, high) (any dtype): element i from block i,
 *            (w0 << 32 | w1) mod (high - low), as tg_rng_below. */
struct tg_rng;
tg_tensor *tg_rand(tg_ctx *ctx, struct tg_rng *rng, tg_dtype dt, int ndim, const int64_t *shape);
tg_tensor *tg_randn(tg_ctx *ctx, struct tg_rng *rng, tg_dtype dt, int ndim, const int64_t *shape);
tg_tensor *tg_randint(tg_ctx *ctx, struct tg_rng *rng, int64_t low, int64_t high, tg_dtype dt,
                      int ndim, const int64_t *shape);

/* ---- printing (runtime/core/print.c) ---- */

/* The tensor as PyTorch prints it: "tensor([[1.5000, 2.0000], ...])" with
 * 4 decimals (or "1." when every value is integral, or scientific notation
 * for a wide range), ", dtype=torch.float64" and similar for dtypes other
 * than f32 and i64, ", requires_grad=True" when it requires grad, and
 * summarised with "..." (3 items each side of every dim) above 1000
 * elements. Writes at most len bytes (NUL-terminated) into buf and returns
 * the length of the whole text, as snprintf, or -1 with the error in ctx. */
int64_t tg_tensor_str(tg_ctx *ctx, const tg_tensor *t, char *buf, size_t len);
/* Prints tg_tensor_str and a newline to stdout. */
tg_status tg_print(tg_ctx *ctx, const tg_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
