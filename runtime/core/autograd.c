/* Dispatch, the tape and the reverse walk. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const tg__bw_fn backward_rules[] = {
#define TG_OP(E, name, arity, flags) [TG_OP_##E] = tg__bw_##name,
#include "tapegrad/ops.def"
#undef TG_OP
};
_Static_assert(sizeof backward_rules / sizeof backward_rules[0] == TG_OP_COUNT,
               "backward rule table out of step with ops.def");

/* bf16 is a storage dtype: the ops that only move elements take it, the
 * cast makes and reads it, and every other op refuses it here, before a
 * backend's dtype switch could take its 2-byte elements for another type. */
static bool bf16_ok(tg_op op)
{
    switch (op) {
    case TG_OP_CAST:
    case TG_OP_COPY:
    case TG_OP_RESHAPE:
    case TG_OP_SLICE_SCATTER:
    case TG_OP_CONCAT:
        return true;
    default:
        return (tg_op_flags(op) & TG_OPF_VIEW) != 0;
    }
}

tg_status tg__run(tg_ctx *ctx, tg_op op, const tg_op_params *p, tg_tensor *out, int nin,
                  tg_tensor *const *ins)
{
    bool low = out->dtype == TG_BF16;
    for (int i = 0; i < nin && !low; i++)
        low = ins[i]->dtype == TG_BF16;
    if (low && !bf16_ok(op))
        return tg__fail(ctx, TG_ERR_DTYPE,
                        "%s: bf16 tensors hold values only (cast them to f32 with tg_to_dtype, or "
                        "compute in bf16 with tg_ctx_set_precision)",
                        tg_op_name(op));
    tg_kernel_fn k = ctx->be->kernels[op];
    if (!k)
        return tg__fail(ctx, TG_ERR_UNSUPPORTED, "%s: not supported on the %s backend",
                        tg_op_name(op), ctx->be->name);
    if (tg_numel(out) == 0 && op != TG_OP_CONCAT)
        return TG_OK;
    static const tg_op_params none;
    tg_kargs a = {.op = op, .p = p ? p : &none, .nin = nin, .err = ctx->kerr,
                  .errlen = sizeof ctx->kerr};
    ctx->kerr[0] = '\0';
    tg__kview(out, &a.out);
    for (int i = 0; i < nin; i++)
        tg__kview(ins[i], &a.in[i]);
    tg_status s = k(ctx->bstate, &a);
    if (s != TG_OK)
        return tg__fail(ctx, s, "%s: %s", tg_op_name(op), ctx->kerr[0] ? ctx->kerr : tg_status_str(s));
    return TG_OK;
}

static bool grow_tape(tg_ctx *ctx)
{
    int64_t cap = ctx->cap_records ? 2 * ctx->cap_records : 256;
    tg__rec *r = realloc(ctx->records, (size_t)cap * sizeof *r);
    if (!r)
        return false;
    ctx->alloc_count++;
    ctx->records = r;
    ctx->cap_records = cap;
    return true;
}

tg_status tg__record(tg_ctx *ctx, tg_op op, const tg_op_params *p, tg_tensor *out, int nin,
                     tg_tensor *const *ins, uint32_t saved_mask)
{
    bool needs = false;
    if (ctx->grad_enabled && (tg_op_flags(op) & TG_OPF_DIFF))
        for (int i = 0; i < nin; i++)
            needs |= ins[i]->requires_grad;
    out->requires_grad = needs;
    out->record = 0;
    if (!needs)
        return TG_OK;
    if (ctx->nrecords == ctx->cap_records && !grow_tape(ctx))
        return tg__fail(ctx, TG_ERR_NOMEM, "%s: out of memory growing the tape", tg_op_name(op));
    tg__rec *r = &ctx->records[ctx->nrecords];
    r->op = op;
    r->nin = nin;
    r->saved_mask = saved_mask;
    r->seq = ctx->tape_base + (uint64_t)ctx->nrecords;
    r->out = out;
    if (p)
        r->p = *p;
    else
        memset(&r->p, 0, sizeof r->p);
    for (int i = 0; i < nin; i++) {
        tg_tensor *t = ins[i];
        r->in[i] = t;
        r->version[i] = t->storage->version;
        /* The earliest record that reads a leaf is the last one the reverse
         * walk visits: after it, the leaf's gradient is final. */
        if (t->requires_grad && t->record == 0 && t->first_use < ctx->tape_base)
            t->first_use = r->seq;
    }
    r->version[TG_MAX_INPUTS] = out->storage->version;
    out->record = r->seq;
    ctx->nrecords++;
    return TG_OK;
}

tg_tensor *tg__apply(tg_ctx *ctx, tg_op op, const tg_op_params *p, tg_tensor *out, int nin,
                     tg_tensor *const *ins, uint32_t saved_mask)
{
    if (!out)
        return NULL;
    if (!(tg_op_flags(op) & TG_OPF_VIEW) && tg__run(ctx, op, p, out, nin, ins) != TG_OK)
        return NULL;
    if (tg__record(ctx, op, p, out, nin, ins, saved_mask) != TG_OK)
        return NULL;
    return out;
}

/* ---- requires_grad and friends ---- */

tg_status tg_set_requires_grad(tg_ctx *ctx, tg_tensor *t, bool requires_grad)
{
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "set_requires_grad: NULL tensor");
    if (!tg__check_live(ctx, "set_requires_grad", 1, t))
        return ctx->status;
    if (!tg_is_leaf(t))
        return tg__fail(ctx, TG_ERR_AUTOGRAD,
                        "set_requires_grad: only leaf tensors can change requires_grad; this "
                        "tensor was made by an op");
    if (requires_grad && !tg_dtype_is_float(t->dtype))
        return tg__fail(ctx, TG_ERR_DTYPE, "set_requires_grad: %s tensors cannot require grad",
                        tg_dtype_name(t->dtype));
    t->requires_grad = requires_grad;
    return TG_OK;
}

tg_status tg_retain_grad(tg_ctx *ctx, tg_tensor *t)
{
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "retain_grad: NULL tensor");
    if (!tg__check_live(ctx, "retain_grad", 1, t))
        return ctx->status;
    if (!t->requires_grad)
        return tg__fail(ctx, TG_ERR_AUTOGRAD, "retain_grad: tensor does not require grad");
    t->retain_grad = true;
    return TG_OK;
}

tg_status tg_zero_grad(tg_ctx *ctx, tg_tensor *t)
{
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "zero_grad: NULL tensor");
    if (!t->grad)
        return TG_OK;
    if (t->grad->record != 0) {
        /* A gradient made under create_graph is part of a graph: detach it. */
        t->grad = NULL;
        return TG_OK;
    }
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_status s = tg_fill_(ctx, t->grad, 0.0);
    tg_set_grad_enabled(ctx, prev);
    return s;
}

/* ---- the reverse walk ---- */

static bool touch(tg_ctx *ctx, tg_tensor *t)
{
    if (t->touched)
        return true;
    if (ctx->ntouched == ctx->cap_touched) {
        int64_t cap = ctx->cap_touched ? 2 * ctx->cap_touched : 256;
        tg_tensor **p = realloc(ctx->touched, (size_t)cap * sizeof *p);
        if (!p)
            return false;
        ctx->alloc_count++;
        ctx->touched = p;
        ctx->cap_touched = cap;
    }
    t->touched = true;
    ctx->touched[ctx->ntouched++] = t;
    return true;
}

/* dst += src in place with the add kernel: the bits of tg_add(dst, src). The
 * elementwise kernels allow an output that is exactly input 0, and they
 * write a contiguous output (the callers check dst is). */
static tg_status add_into(tg_ctx *ctx, tg_tensor *dst, tg_tensor *src)
{
    tg_tensor *ins[2] = {dst, src};
    tg_status s = tg__run(ctx, TG_OP_ADD, NULL, dst, 2, ins);
    if (!s)
        tg_bump_version(dst);
    return s;
}

/* Same f32 or f64 dtype (the add kernel's; bf16 goes through tg_add),
 * device and shape. */
static bool same_geometry(const tg_tensor *a, const tg_tensor *b)
{
    return (a->dtype == TG_F32 || a->dtype == TG_F64) && a->dtype == b->dtype &&
           a->device == b->device && a->ndim == b->ndim &&
           !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim);
}

/* Add g into t's in-flight gradient. own: g is backward's own (made by the
 * rule that returned it and referred to by nothing else), so it may take
 * later contributions in place. Without create_graph a second contribution is
 * added into whichever of the two is owned instead of into a new tensor: the
 * same sum, one (t-sized) tensor fewer; the first contribution is kept as it
 * is. With create_graph every sum is a recorded tg_add. */
static tg_status accumulate(tg_ctx *ctx, tg_tensor *t, tg_tensor *g, bool own)
{
    /* A non-leaf whose record was freed would swallow the gradient: the walk
     * cannot go on through it to the leaves below, so refuse rather than
     * return a silently incomplete result. */
    if (t->record != 0 && t->record < ctx->tape_base)
        return tg__fail(ctx, TG_ERR_AUTOGRAD,
                        "backward: the graph reaches a tensor%s%s made by a graph that was "
                        "already freed by a backward pass or tg_step_reset; pass "
                        "TG_RETAIN_GRAPH to the first backward to go through it again",
                        t->name ? " " : "", t->name ? t->name : "");
    if (!touch(ctx, t))
        return tg__fail(ctx, TG_ERR_NOMEM, "backward: out of memory");
    if (!t->gacc) {
        t->gacc = g;
        t->gacc_own = own;
        return TG_OK;
    }
    tg_tensor *dst = t->gacc_own && tg_is_contiguous(t->gacc) ? t->gacc
                     : own && tg_is_contiguous(g)                ? g
                                                                 : NULL;
    if (!ctx->grad_enabled && dst && same_geometry(t->gacc, g)) {
        tg_status s = add_into(ctx, dst, dst == g ? t->gacc : g);
        if (s)
            return s;
        t->gacc = dst;
        t->gacc_own = true;
        return TG_OK;
    }
    tg_tensor *sum = tg_add(ctx, t->gacc, g);
    if (!sum)
        return ctx->status;
    t->gacc = sum;
    t->gacc_own = !ctx->grad_enabled;
    return TG_OK;
}

/* Fold a leaf's in-flight gradient into ->grad (backward mode). */
static tg_status finalize_leaf(tg_ctx *ctx, tg_tensor *t, bool create_graph)
{
    tg_tensor *g = t->gacc;
    t->gacc = NULL;
    if (!g)
        return TG_OK;
    if (create_graph || (t->grad && t->grad->record != 0)) {
        t->grad = t->grad ? tg_add(ctx, t->grad, g) : g;
        if (!t->grad)
            return ctx->status;
    } else if (!t->grad) {
        /* The gradient lives as long as its leaf: a parameter's gradient is
         * persistent, so the step arena can be reset under it. */
        tg_tensor *buf = t->storage->persistent ? tg__new(ctx, t->dtype, t->ndim, t->shape, true)
                                                : tg__new(ctx, t->dtype, t->ndim, t->shape, false);
        if (!buf)
            return ctx->status;
        tg_status s = tg_copy_(ctx, buf, g);
        if (s)
            return s;
        t->grad = buf;
    } else {
        tg_status s = tg_axpy_(ctx, t->grad, 1.0, g);
        if (s)
            return s;
    }
    if (ctx->hook)
        ctx->hook(ctx, t, ctx->hook_user);
    return TG_OK;
}

static tg_status check_versions(tg_ctx *ctx, const tg__rec *r)
{
    for (int i = 0; i <= r->nin; i++) {
        int bit = i == r->nin ? TG_MAX_INPUTS : i;
        if (!(r->saved_mask & (1u << bit)))
            continue;
        const tg_tensor *t = i == r->nin ? r->out : r->in[i];
        if (t->storage->version != r->version[bit])
            return tg__fail(ctx, TG_ERR_INPLACE,
                            "backward: a tensor saved for backward was modified in place "
                            "(%s %s%s%s: version %u, expected %u)",
                            tg_op_name(r->op), i == r->nin ? "output" : "input",
                            t->name ? " " : "", t->name ? t->name : "", t->storage->version,
                            r->version[bit]);
    }
    return TG_OK;
}

/* Leaves whose earliest use is this record now have their final gradient. */
static tg_status finalize_inputs(tg_ctx *ctx, const tg__rec *r, bool create_graph)
{
    for (int i = 0; i < r->nin; i++) {
        tg_tensor *t = r->in[i];
        tg_status s;
        if (t->record == 0 && t->first_use == r->seq && t->gacc &&
            (s = finalize_leaf(ctx, t, create_graph)))
            return s;
    }
    return TG_OK;
}

/* A slice's gradient added straight into the slice of its input's owned
 * gradient where that slice is contiguous: no zero-filled input-sized tensor
 * per slice (q, k and v sliced from one tensor write one gradient, not three
 * then summed). */
static bool slice_into(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_status *s)
{
    tg_tensor *in = r->in[0];
    if (r->op != TG_OP_SLICE || ctx->grad_enabled || !in->gacc || !in->gacc_own ||
        !same_geometry(in->gacc, in))
        return false;
    tg_tensor *dst = tg_slice(ctx, in->gacc, r->p.axis, r->p.ints[0], r->p.ints[1], r->p.ints[2]);
    if (!dst) {
        *s = ctx->status;
        return true;
    }
    if (!same_geometry(dst, g) || !tg_is_contiguous(dst))
        return false;
    *s = add_into(ctx, dst, g);
    return true;
}

/* gin[i] is the rule's own: made during the rule (a storage newer than
 * mark), in the step arena, and no other gin shares its storage. */
static bool owned(const tg_tensor *const *gin, int n, int i, uint64_t mark)
{
    const tg_storage *st = gin[i]->storage;
    if (st->serial < mark || st->persistent)
        return false;
    for (int j = 0; j < n; j++)
        if (j != i && gin[j] && gin[j]->storage == st)
            return false;
    return true;
}

static tg_status walk_record(tg_ctx *ctx, int64_t idx, bool capture, bool create_graph)
{
    /* Copy: backward rules may append records (create_graph) and move the array. */
    tg__rec r = ctx->records[idx];
    tg_tensor *gout = r.out->gacc;
    if (!gout)
        return capture ? TG_OK : finalize_inputs(ctx, &r, create_graph);
    tg_status s = check_versions(ctx, &r);
    if (s)
        return s;
    tg_tensor *gin[TG_MAX_INPUTS] = {0};
    const uint64_t mark = ctx->nstorage;
    bool done = r.in[0]->requires_grad && slice_into(ctx, &r, gout, &s);
    if (s)
        return s;
    if (!done && (s = backward_rules[r.op](ctx, &r, gout, gin)))
        return ctx->status ? ctx->status : s;
    if (r.out->retain_grad && !capture)
        r.out->grad = gout;
    r.out->gacc = NULL;
    r.out->gacc_own = false;
    if (capture)
        r.out->gacc = gout; /* kept so a requested non-leaf input can be read */
    for (int i = 0; i < r.nin; i++) {
        tg_tensor *t = r.in[i];
        if (!gin[i] || !t->requires_grad)
            continue;
        bool own = !create_graph && owned((const tg_tensor *const *)gin, r.nin, i, mark);
        if ((s = accumulate(ctx, t, gin[i], own)))
            return s;
    }
    return capture ? TG_OK : finalize_inputs(ctx, &r, create_graph);
}

static tg_status check_root(tg_ctx *ctx, const char *fn, tg_tensor *root, tg_tensor **seed)
{
    if (!root)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: NULL root tensor", fn);
    if (!tg__check_live(ctx, fn, 1, root) || !tg__check_live(ctx, fn, 2, *seed))
        return ctx->status;
    if (!root->requires_grad)
        return tg__fail(ctx, TG_ERR_AUTOGRAD,
                        "%s: the root tensor does not require grad (no input of its graph has "
                        "requires_grad set, or it was computed with grad mode off)",
                        fn);
    if (root->record != 0 && root->record < ctx->tape_base)
        return tg__fail(ctx, TG_ERR_AUTOGRAD,
                        "%s: the graph of this tensor was already freed by a backward pass or "
                        "tg_step_reset; pass TG_RETAIN_GRAPH to the first backward to go through "
                        "it again",
                        fn);
    char a[96], b[96];
    if (!*seed) {
        if (tg_numel(root) != 1)
            return tg__fail(ctx, TG_ERR_SHAPE,
                            "%s: a seed gradient is needed for a root of shape %s (only a "
                            "one-element root gets an implicit seed of 1)",
                            fn, tg_shape_str(root, a, sizeof a));
        *seed = tg_full(ctx, root->dtype, root->ndim, root->shape, 1.0);
        return *seed ? TG_OK : ctx->status;
    }
    if ((*seed)->ndim != root->ndim ||
        memcmp((*seed)->shape, root->shape, sizeof(int64_t) * (size_t)root->ndim) ||
        (*seed)->dtype != root->dtype)
        return tg__fail(ctx, TG_ERR_SHAPE, "%s: seed of shape %s %s for a root of shape %s %s", fn,
                        tg_shape_str(*seed, a, sizeof a), tg_dtype_name((*seed)->dtype),
                        tg_shape_str(root, b, sizeof b), tg_dtype_name(root->dtype));
    return TG_OK;
}

static void clear_touched(tg_ctx *ctx)
{
    for (int64_t i = 0; i < ctx->ntouched; i++) {
        ctx->touched[i]->gacc = NULL;
        ctx->touched[i]->gacc_own = false;
        ctx->touched[i]->touched = false;
    }
    ctx->ntouched = 0;
}

static tg_status run_walk(tg_ctx *ctx, tg_tensor *root, tg_tensor *seed, bool capture,
                          unsigned flags)
{
    bool create_graph = flags & TG_CREATE_GRAPH;
    bool prev = tg_set_grad_enabled(ctx, create_graph);
    int64_t end = ctx->nrecords;
    tg_status s = accumulate(ctx, root, seed, false);
    if (!s && root->record == 0 && !capture)
        s = finalize_leaf(ctx, root, create_graph);
    int64_t start_idx = root->record ? (int64_t)(root->record - ctx->tape_base) : -1;
    for (int64_t i = start_idx; !s && i >= 0 && i < end; i--)
        s = walk_record(ctx, i, capture, create_graph);
    /* A leaf whose earliest record was not reached (it lies outside the
     * walked range) still gets its gradient, just not early. */
    for (int64_t i = 0; !s && !capture && i < ctx->ntouched; i++) {
        tg_tensor *t = ctx->touched[i];
        if (t->record == 0 && t->gacc)
            s = finalize_leaf(ctx, t, create_graph);
    }
    tg_set_grad_enabled(ctx, prev);
    return s;
}

static void free_graph(tg_ctx *ctx, unsigned flags)
{
    if (flags & (TG_RETAIN_GRAPH | TG_CREATE_GRAPH))
        return;
    ctx->tape_base += (uint64_t)ctx->nrecords;
    ctx->nrecords = 0;
}

tg_status tg_backward(tg_ctx *ctx, tg_tensor *root, tg_tensor *seed, unsigned flags)
{
    tg_status s = check_root(ctx, "backward", root, &seed);
    if (s)
        return s;
    s = run_walk(ctx, root, seed, false, flags);
    clear_touched(ctx);
    if (!s)
        free_graph(ctx, flags);
    return s;
}

tg_status tg_grad(tg_ctx *ctx, tg_tensor *root, tg_tensor *seed, int n, tg_tensor *const *inputs,
                  tg_tensor **grads, unsigned flags)
{
    tg_status s = check_root(ctx, "grad", root, &seed);
    if (s)
        return s;
    if (n < 0 || (n > 0 && (!inputs || !grads)))
        return tg__fail(ctx, TG_ERR_INVALID, "grad: bad input list");
    for (int i = 0; i < n; i++) {
        if (inputs[i] && !tg__check_live(ctx, "grad", 3 + i, inputs[i]))
            return ctx->status;
        if (!inputs[i] || !inputs[i]->requires_grad)
            return tg__fail(ctx, TG_ERR_AUTOGRAD, "grad: input %d %s", i,
                            inputs[i] ? "does not require grad" : "is NULL");
        grads[i] = NULL;
    }
    s = run_walk(ctx, root, seed, true, flags);
    for (int i = 0; !s && i < n; i++)
        grads[i] = inputs[i]->gacc;
    clear_touched(ctx);
    if (!s)
        free_graph(ctx, flags);
    return s;
}
