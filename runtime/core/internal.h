/* Private to runtime/: the context layout, arenas, the tape and helpers that
 * the op files share. Nothing here is part of the public API. */
#ifndef TG_RUNTIME_INTERNAL_H
#define TG_RUNTIME_INTERNAL_H

#include "tapegrad/runtime.h"

#include <stdarg.h>

/* A bump allocator over a list of chunks. reset() keeps one chunk as big as
 * the high-water mark, so after the first step nothing is allocated. */
typedef struct tg__chunk {
    char *base;
    size_t size;
    size_t used;
    struct tg__chunk *next;
} tg__chunk;

typedef struct tg__arena {
    tg__chunk *head; /* the chunk being filled; older ones follow */
    size_t used;     /* bytes handed out since the last reset */
    size_t high_water;
    size_t min_chunk;
    bool device; /* chunks come from the backend, else from the host heap */
} tg__arena;

/* One tape record. saved_mask bit i (i < TG_MAX_INPUTS) means input i is read
 * by the backward rule, bit TG_MAX_INPUTS means the output is; the versions
 * of those storages are checked before the rule runs. */
#define TG__SAVED_OUT (1u << TG_MAX_INPUTS)
typedef struct tg__rec {
    tg_op op;
    int nin;
    uint32_t saved_mask;
    uint64_t seq;
    tg_tensor *in[TG_MAX_INPUTS];
    tg_tensor *out;
    uint32_t version[TG_MAX_INPUTS + 1];
    tg_op_params p;
} tg__rec;

struct tg_ctx {
    const tg_backend *be;
    void *bstate;
    tg_status status;
    char err[512];
    char kerr[256];
    bool grad_enabled;
    /* The products' precision (tg_ctx_set_precision). */
    tg_precision precision;
    tg__arena step_meta, step_data; /* tensor structs; tensor data */
    /* The step: tg_step_reset calls so far. Step tensors carry step + 1. */
    uint64_t step;
    /* Debug mode (TG_DEBUG_STEPS): released step memory is poisoned, the
     * tensor structs of two consecutive steps come from two arenas that take
     * turns (step_meta and step_meta_alt), and every op checks that its
     * operands belong to the current step. */
    bool debug_steps;
    tg__arena step_meta_alt;
    tg__arena pers_meta, pers_data;
    /* The tape: records[i] has seq tape_base + i. */
    tg__rec *records;
    int64_t nrecords, cap_records;
    uint64_t tape_base;
    /* Persistent tensors, so that tg_step_reset can drop their step grads. */
    tg_tensor **persistent;
    int64_t npersistent, cap_persistent;
    /* Scratch list of tensors touched by one backward walk. */
    tg_tensor **touched;
    int64_t ntouched, cap_touched;
    tg_grad_hook_fn hook;
    void *hook_user;
    /* comm/'s collective for ops across ranks (world_sum); sum NULL: a world of one */
    tg_collective coll;
    uint64_t alloc_count;
    /* Storages made so far (tg_storage.serial). */
    uint64_t nstorage;
};

/* Errors: set the status (only if none is pending) and the message. */
tg_status tg__fail(tg_ctx *ctx, tg_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* For ops: NULL operands keep the pending error, or set one naming the op. */
bool tg__check_args(tg_ctx *ctx, const char *op, int n, tg_tensor *const *ts);

/* Released step memory (debug mode) holds this in its top 32 bits and the
 * step it belonged to + 1 in the low 32, in every 8-byte word: a tensor
 * struct read after its release names its step. */
#define TG__POISON_HI 0x7e6a11d0u
/* Debug mode: false, with an error naming op, operand i (from 1) and the
 * step, when t is a step tensor of an earlier step. */
bool tg__check_live_slow(tg_ctx *ctx, const char *op, int i, const tg_tensor *t);
/* One test of a flag outside debug mode. */
static inline bool tg__check_live(tg_ctx *ctx, const char *op, int i, const tg_tensor *t)
{
    return !ctx->debug_steps || !t || tg__check_live_slow(ctx, op, i, t);
}
/* The longest string tg__dims_str writes for TG_MAX_DIMS sizes. */
#define TG__SHAPE_STR 200
/* Writes "(2, 3, 4)" for a shape; returns buf. */
char *tg__dims_str(int ndim, const int64_t *shape, char *buf, size_t len);
/* A user-given shape: 0..TG_MAX_DIMS dims, no negative size, and the
 * product of its sizes (zeros counted as ones) fits an int64_t; else false
 * with an error naming op and the shape. */
bool tg__check_dims(tg_ctx *ctx, const char *op, int ndim, const int64_t *shape);
bool tg__check_float(tg_ctx *ctx, const char *op, const tg_tensor *t);
bool tg__check_same_dtype(tg_ctx *ctx, const char *op, const tg_tensor *a, const tg_tensor *b);
/* Normalise a possibly negative axis for ndim; false (with error) if out of range. */
bool tg__axis(tg_ctx *ctx, const char *op, int ndim, int *axis);

/* nbytes from the arena, 64-byte aligned; NULL with an out-of-memory error.
 * tg__arena_try sets no error (the caller names what it was for). */
void *tg__arena_alloc(tg_ctx *ctx, tg__arena *a, size_t nbytes);
void *tg__arena_try(tg_ctx *ctx, tg__arena *a, size_t nbytes);
void tg__arena_reset(tg_ctx *ctx, tg__arena *a);
void tg__arena_release(tg_ctx *ctx, tg__arena *a);

/* A new contiguous tensor (persistent or step) with undefined values. */
tg_tensor *tg__new(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, bool persistent);
/* A view of src sharing its storage, with the given geometry. */
tg_tensor *tg__view(tg_ctx *ctx, const tg_tensor *src, int ndim, const int64_t *shape,
                    const int64_t *strides, int64_t offset);
void tg__contig_strides(int ndim, const int64_t *shape, int64_t *strides);
int64_t tg__numel(int ndim, const int64_t *shape);
void tg__kview(const tg_tensor *t, tg_kview *v);

/* Run the op's kernel: out = op(ins). */
tg_status tg__run(tg_ctx *ctx, tg_op op, const tg_op_params *p, tg_tensor *out, int nin,
                  tg_tensor *const *ins);
/* Append a record when grad mode is on and an input requires grad; sets
 * out->requires_grad accordingly. */
tg_status tg__record(tg_ctx *ctx, tg_op op, const tg_op_params *p, tg_tensor *out, int nin,
                     tg_tensor *const *ins, uint32_t saved_mask);
/* Both of the above for the common case: allocate nothing, run, record.
 * Returns out, or NULL with the error set. */
tg_tensor *tg__apply(tg_ctx *ctx, tg_op op, const tg_op_params *p, tg_tensor *out, int nin,
                     tg_tensor *const *ins, uint32_t saved_mask);

/* Broadcast two shapes (seed 000 rules); false with an error naming both. */
bool tg__broadcast_shape(tg_ctx *ctx, const char *op, const tg_tensor *a, const tg_tensor *b,
                         int *ndim, int64_t *shape);

/* The elementwise constructors of ops_elementwise.c, shared by the op files:
 * a binary op with broadcasting (ints: integer operands are accepted too),
 * a unary float op, and a stride-0 view of t expanded to (ndim, shape). */
tg_tensor *tg__binary(tg_ctx *ctx, tg_op op, tg_tensor *a, tg_tensor *b, const tg_op_params *p,
                      uint32_t saved, bool ints);
tg_tensor *tg__unary(tg_ctx *ctx, tg_op op, tg_tensor *a, const tg_op_params *p, uint32_t saved);
/* tg_add(y, b) written into y's storage when y is a contiguous step tensor
 * that only its caller holds (a product just made, as in the linear layer)
 * and b broadcasts to y's shape: the same sum and record, one tensor fewer.
 * Anything else is tg_add. */
tg_tensor *tg__add_into_new(tg_ctx *ctx, tg_tensor *y, tg_tensor *b);
tg_tensor *tg__expand_view(tg_ctx *ctx, tg_tensor *t, int ndim, const int64_t *shape);

/* Backward rules: given the record and the gradient of its output, write the
 * gradient of each input (NULL when an input gets none) into gin. They are
 * written with the public ops, so they record when create_graph is on. */
typedef tg_status (*tg__bw_fn)(tg_ctx *ctx, const tg__rec *r, tg_tensor *gout,
                               tg_tensor **gin);
#define TG_OP(E, name, arity, flags)                                                         \
    tg_status tg__bw_##name(tg_ctx *ctx, const tg__rec *r, tg_tensor *gout, tg_tensor **gin);
#include "tapegrad/ops.def"
#undef TG_OP

/* Shared by reductions and broadcasting gradients: reshape g (reduced with
 * keepdim false over `axes` of an ndim-shaped tensor) back to keepdim form. */
tg_tensor *tg__unsqueeze_axes(tg_ctx *ctx, tg_tensor *g, int ndim, const int64_t *shape,
                              uint32_t axes);

#endif
