/* Shape ops: views (permute, broadcast_to, slice), reshape, copies, concat.
 * Forward and backward side by side. */
#include "checked.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define SHAPE_OF(t) (t)->ndim, (t)->shape

tg_tensor *tg_copy(tg_ctx *ctx, tg_tensor *a)
{
    if (!tg__check_args(ctx, "copy", 1, &a))
        return NULL;
    return tg__apply(ctx, TG_OP_COPY, NULL, tg__new(ctx, a->dtype, SHAPE_OF(a), false), 1, &a, 0);
}

tg_status tg__bw_copy(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    (void)ctx, (void)r;
    gin[0] = g;
    return TG_OK;
}

tg_tensor *tg_contiguous(tg_ctx *ctx, tg_tensor *a)
{
    if (a && tg_is_contiguous(a))
        return a;
    return tg_copy(ctx, a);
}

/* ---- reshape ---- */

tg_tensor *tg_reshape(tg_ctx *ctx, tg_tensor *a, int ndim, const int64_t *shape)
{
    if (!tg__check_args(ctx, "reshape", 1, &a))
        return NULL;
    if (ndim < 0 || ndim > TG_MAX_DIMS || (ndim && !shape))
        return tg__fail(ctx, TG_ERR_SHAPE, "reshape: bad target of %d dims", ndim), NULL;
    int64_t s[TG_MAX_DIMS], known = 1;
    int infer = -1;
    char b[TG__SHAPE_STR], t[TG__SHAPE_STR];
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0)
            infer = i;
        else if (s[i] < 0)
            return tg__fail(ctx, TG_ERR_SHAPE, "reshape: bad size %lld in dim %d of %s",
                            (long long)s[i], i, tg__dims_str(ndim, shape, t, sizeof t)), NULL;
        else if (!tg__mul_i64(known, s[i], &known))
            return tg__fail(ctx, TG_ERR_SHAPE, "reshape: cannot reshape %s to %s: the target has "
                            "more elements than an int64_t counts", tg_shape_str(a, b, sizeof b),
                            tg__dims_str(ndim, shape, t, sizeof t)), NULL;
    }
    int64_t n = tg_numel(a);
    if (infer >= 0)
        s[infer] = known ? n / known : 0;
    int64_t m;
    if (!tg__numel_checked(ndim, s, &m) || m != n)
        return tg__fail(ctx, TG_ERR_SHAPE, "reshape: cannot reshape %s (%lld elements) to %s",
                        tg_shape_str(a, b, sizeof b), (long long)n,
                        tg__dims_str(ndim, shape, t, sizeof t)), NULL;
    /* The target's contiguous strides must fit too. */
    if (!tg__check_dims(ctx, "reshape", ndim, s))
        return NULL;
    tg_tensor *out;
    if (tg_is_contiguous(a)) {
        int64_t st[TG_MAX_DIMS];
        tg__contig_strides(ndim, s, st);
        out = tg__view(ctx, a, ndim, s, st, a->offset);
        if (!out)
            return NULL;
    } else {
        out = tg__new(ctx, a->dtype, ndim, s, false);
        if (!out || tg__run(ctx, TG_OP_RESHAPE, NULL, out, 1, &a) != TG_OK)
            return NULL;
    }
    return tg__record(ctx, TG_OP_RESHAPE, NULL, out, 1, &a, 0) == TG_OK ? out : NULL;
}

tg_status tg__bw_reshape(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_reshape(ctx, g, SHAPE_OF(r->in[0]));
    return gin[0] ? TG_OK : ctx->status;
}

/* ---- permute / transpose ---- */

tg_tensor *tg_permute(tg_ctx *ctx, tg_tensor *a, const int *perm)
{
    if (!tg__check_args(ctx, "permute", 1, &a))
        return NULL;
    if (!perm && a->ndim)
        return tg__fail(ctx, TG_ERR_INVALID, "permute: NULL permutation"), NULL;
    int64_t shape[TG_MAX_DIMS], strides[TG_MAX_DIMS];
    uint32_t seen = 0;
    tg_op_params p = {0};
    for (int i = 0; i < a->ndim; i++) {
        int ax = perm[i];
        if (!tg__axis(ctx, "permute", a->ndim, &ax))
            return NULL;
        if (seen & (1u << ax))
            return tg__fail(ctx, TG_ERR_AXIS, "permute: axis %d appears twice", perm[i]), NULL;
        seen |= 1u << ax;
        p.ints[i] = ax;
        shape[i] = a->shape[ax];
        strides[i] = a->strides[ax];
    }
    tg_tensor *out = tg__view(ctx, a, a->ndim, shape, strides, a->offset);
    return tg__apply(ctx, TG_OP_PERMUTE, &p, out, 1, &a, 0);
}

tg_status tg__bw_permute(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    int inv[TG_MAX_DIMS];
    for (int i = 0; i < r->in[0]->ndim; i++)
        inv[r->p.ints[i]] = i;
    gin[0] = tg_permute(ctx, g, inv);
    return gin[0] ? TG_OK : ctx->status;
}

tg_tensor *tg_transpose(tg_ctx *ctx, tg_tensor *a, int d0, int d1)
{
    if (!tg__check_args(ctx, "transpose", 1, &a) || !tg__axis(ctx, "transpose", a->ndim, &d0) ||
        !tg__axis(ctx, "transpose", a->ndim, &d1))
        return NULL;
    int perm[TG_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++)
        perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return tg_permute(ctx, a, perm);
}

/* ---- broadcast_to ---- */

tg_tensor *tg_broadcast_to(tg_ctx *ctx, tg_tensor *a, int ndim, const int64_t *shape)
{
    if (!tg__check_args(ctx, "broadcast_to", 1, &a))
        return NULL;
    if (ndim < a->ndim || ndim > TG_MAX_DIMS || (ndim && !shape))
        return tg__fail(ctx, TG_ERR_SHAPE, "broadcast_to: cannot broadcast %d dims to %d", a->ndim,
                        ndim), NULL;
    if (!tg__check_dims(ctx, "broadcast_to", ndim, shape))
        return NULL;
    int64_t strides[TG_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        int ia = a->ndim - ndim + i;
        int64_t d = ia >= 0 ? a->shape[ia] : 1;
        if (d != shape[i] && d != 1) {
            char b[96];
            return tg__fail(ctx, TG_ERR_SHAPE, "broadcast_to: %s cannot broadcast to size %lld in "
                            "dim %d", tg_shape_str(a, b, sizeof b), (long long)shape[i], i), NULL;
        }
        strides[i] = (ia >= 0 && d == shape[i]) ? a->strides[ia] : 0;
    }
    tg_tensor *out = tg__view(ctx, a, ndim, shape, strides, a->offset);
    return tg__apply(ctx, TG_OP_BROADCAST_TO, NULL, out, 1, &a, 0);
}

tg_status tg__bw_broadcast_to(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_sum_to(ctx, g, SHAPE_OF(r->in[0]));
    return gin[0] ? TG_OK : ctx->status;
}

/* ---- slice ---- */

/* Python's slice semantics: negative indices count from the end, then both
 * ends are clamped to [0, len]. Returns the number of elements selected. */
static int64_t norm_slice(int64_t len, int64_t *start, int64_t *stop, int64_t step)
{
    if (*start < 0)
        *start += len;
    if (*stop < 0)
        *stop += len;
    *start = *start < 0 ? 0 : (*start > len ? len : *start);
    *stop = *stop < 0 ? 0 : (*stop > len ? len : *stop);
    return *stop > *start ? (*stop - *start - 1) / step + 1 : 0;
}

tg_tensor *tg_slice(tg_ctx *ctx, tg_tensor *a, int axis, int64_t start, int64_t stop, int64_t step)
{
    if (!tg__check_args(ctx, "slice", 1, &a) || !tg__axis(ctx, "slice", a->ndim, &axis))
        return NULL;
    if (step < 1)
        return tg__fail(ctx, TG_ERR_INVALID, "slice: step must be >= 1, got %lld",
                        (long long)step), NULL;
    int64_t cnt = norm_slice(a->shape[axis], &start, &stop, step);
    int64_t shape[TG_MAX_DIMS], strides[TG_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    memcpy(strides, a->strides, sizeof strides);
    shape[axis] = cnt;
    /* With at most one element selected the stride is never used (and a
     * huge step must not overflow it). */
    if (cnt > 1 && !tg__mul_i64(a->strides[axis], step, &strides[axis])) {
        char b[96];
        return tg__fail(ctx, TG_ERR_SHAPE, "slice: step %lld along dim %d of %s overflows the "
                        "stride", (long long)step, axis, tg_shape_str(a, b, sizeof b)), NULL;
    }
    tg_tensor *out = tg__view(ctx, a, a->ndim, shape, strides,
                              a->offset + (cnt ? start * a->strides[axis] : 0));
    tg_op_params p = {.axis = axis, .ints = {start, stop, step}};
    return tg__apply(ctx, TG_OP_SLICE, &p, out, 1, &a, 0);
}

tg_status tg__bw_slice(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_slice_scatter(ctx, g, SHAPE_OF(r->in[0]), r->p.axis, r->p.ints[0], r->p.ints[1],
                              r->p.ints[2]);
    return gin[0] ? TG_OK : ctx->status;
}

tg_tensor *tg_slice_scatter(tg_ctx *ctx, tg_tensor *src, int ndim, const int64_t *shape, int axis,
                            int64_t start, int64_t stop, int64_t step)
{
    if (!tg__check_args(ctx, "slice_scatter", 1, &src) ||
        !tg__axis(ctx, "slice_scatter", ndim, &axis))
        return NULL;
    if (!shape)
        return tg__fail(ctx, TG_ERR_INVALID, "slice_scatter: NULL target shape"), NULL;
    if (!tg__check_dims(ctx, "slice_scatter", ndim, shape))
        return NULL;
    if (step < 1)
        return tg__fail(ctx, TG_ERR_INVALID, "slice_scatter: step %lld (must be >= 1)",
                        (long long)step), NULL;
    if (ndim != src->ndim)
        return tg__fail(ctx, TG_ERR_SHAPE, "slice_scatter: target of %d dims for a source of %d",
                        ndim, src->ndim), NULL;
    int64_t cnt = norm_slice(shape[axis], &start, &stop, step);
    for (int i = 0; i < ndim; i++) {
        int64_t want = i == axis ? cnt : shape[i];
        if (src->shape[i] != want) {
            char b[96];
            return tg__fail(ctx, TG_ERR_SHAPE, "slice_scatter: source %s does not fit the slice "
                            "(dim %d must be %lld)", tg_shape_str(src, b, sizeof b), i,
                            (long long)want), NULL;
        }
    }
    tg_op_params p = {.axis = axis, .ints = {start, stop, step}};
    tg_tensor *out = tg__new(ctx, src->dtype, ndim, shape, false);
    /* An empty slice still has to produce zeros: the kernel is skipped for
     * an empty source, so fill here. */
    if (out && cnt == 0 && tg_numel(out) &&
        ctx->be->zero(ctx->bstate, out->storage->data, out->storage->nbytes))
        return tg__fail(ctx, TG_ERR_BACKEND, "slice_scatter: zero fill failed"), NULL;
    if (out && cnt == 0)
        return tg__record(ctx, TG_OP_SLICE_SCATTER, &p, out, 1, &src, 0) ? NULL : out;
    return tg__apply(ctx, TG_OP_SLICE_SCATTER, &p, out, 1, &src, 0);
}

tg_status tg__bw_slice_scatter(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_slice(ctx, g, r->p.axis, r->p.ints[0], r->p.ints[1], r->p.ints[2]);
    return gin[0] ? TG_OK : ctx->status;
}

/* ---- concat / stack / chunk ---- */

static tg_tensor *concat_small(tg_ctx *ctx, int n, tg_tensor *const *ts, int axis)
{
    const tg_tensor *a = ts[0];
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[axis] = 0;
    for (int i = 0; i < n; i++) {
        const tg_tensor *t = ts[i];
        bool ok = t->ndim == a->ndim;
        for (int d = 0; ok && d < a->ndim; d++)
            ok = d == axis || t->shape[d] == a->shape[d];
        if (!ok) {
            char sa[96], sb[96];
            return tg__fail(ctx, TG_ERR_SHAPE, "concat: tensor %d has shape %s, tensor 0 has %s "
                            "(all dims but %d must match)", i, tg_shape_str(t, sb, sizeof sb),
                            tg_shape_str(a, sa, sizeof sa), axis), NULL;
        }
        if (!tg__check_same_dtype(ctx, "concat", a, t))
            return NULL;
        if (!tg__add_i64(shape[axis], t->shape[axis], &shape[axis])) {
            char sa[96];
            return tg__fail(ctx, TG_ERR_SHAPE, "concat: the sizes along dim %d overflow an int64_t "
                            "at tensor %d of shape %s", axis, i, tg_shape_str(t, sa, sizeof sa)),
                   NULL;
        }
    }
    tg_op_params p = {.axis = axis};
    return tg__apply(ctx, TG_OP_CONCAT, &p, tg__new(ctx, a->dtype, a->ndim, shape, false), n, ts, 0);
}

tg_tensor *tg_concat(tg_ctx *ctx, int n, tg_tensor *const *ts, int axis)
{
    if (n < 1 || !ts)
        return tg__fail(ctx, TG_ERR_INVALID, "concat: need at least one tensor"), NULL;
    if (!tg__check_args(ctx, "concat", n, ts) || !tg__axis(ctx, "concat", ts[0]->ndim, &axis))
        return NULL;
    if (n <= TG_MAX_INPUTS)
        return concat_small(ctx, n, ts, axis);
    /* More inputs than a record holds: concatenate in groups, then the groups. */
    tg_tensor *parts[TG_MAX_INPUTS];
    int per = (n + TG_MAX_INPUTS - 1) / TG_MAX_INPUTS, np = 0;
    for (int i = 0; i < n; i += per)
        parts[np++] = tg_concat(ctx, n - i < per ? n - i : per, ts + i, axis);
    return tg_concat(ctx, np, parts, axis);
}

tg_status tg__bw_concat(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    int64_t off = 0;
    for (int i = 0; i < r->nin; i++) {
        int64_t len = r->in[i]->shape[r->p.axis];
        if (r->in[i]->requires_grad &&
            !(gin[i] = tg_slice(ctx, g, r->p.axis, off, off + len, 1)))
            return ctx->status;
        off += len;
    }
    return TG_OK;
}

tg_tensor *tg_stack(tg_ctx *ctx, int n, tg_tensor *const *ts, int axis)
{
    if (n < 1 || !ts)
        return tg__fail(ctx, TG_ERR_INVALID, "stack: need at least one tensor"), NULL;
    if (!tg__check_args(ctx, "stack", n, ts) || !tg__axis(ctx, "stack", ts[0]->ndim + 1, &axis))
        return NULL;
    if (ts[0]->ndim + 1 > TG_MAX_DIMS)
        return tg__fail(ctx, TG_ERR_SHAPE, "stack: result would have too many dims"), NULL;
    tg_tensor *parts[TG_MAX_INPUTS * TG_MAX_INPUTS];
    if (n > TG_MAX_INPUTS * TG_MAX_INPUTS)
        return tg__fail(ctx, TG_ERR_INVALID, "stack: at most %d tensors",
                        TG_MAX_INPUTS * TG_MAX_INPUTS), NULL;
    /* Check here, so that a mismatch names stack and the caller's shapes,
     * not the concat of the unsqueezed tensors that it runs. */
    for (int i = 1; i < n; i++) {
        const tg_tensor *t = ts[i], *a = ts[0];
        if (t->ndim != a->ndim ||
            memcmp(t->shape, a->shape, sizeof(int64_t) * (size_t)a->ndim) != 0) {
            char sa[96], sb[96];
            return tg__fail(ctx, TG_ERR_SHAPE, "stack: tensor %d has shape %s, tensor 0 has %s "
                            "(all must have the same shape)", i, tg_shape_str(t, sb, sizeof sb),
                            tg_shape_str(a, sa, sizeof sa)), NULL;
        }
        if (!tg__check_same_dtype(ctx, "stack", a, t))
            return NULL;
    }
    for (int i = 0; i < n; i++) {
        int64_t shape[TG_MAX_DIMS];
        const tg_tensor *t = ts[i];
        for (int d = 0, j = 0; d <= t->ndim; d++)
            shape[d] = d == axis ? 1 : t->shape[j++];
        if (!(parts[i] = tg_reshape(ctx, ts[i], t->ndim + 1, shape)))
            return NULL;
    }
    return tg_concat(ctx, n, parts, axis);
}

int tg_chunk(tg_ctx *ctx, tg_tensor *a, int chunks, int axis, tg_tensor **out)
{
    if (!tg__check_args(ctx, "chunk", 1, &a) || !tg__axis(ctx, "chunk", a->ndim, &axis))
        return -1;
    if (chunks < 1 || !out)
        return tg__fail(ctx, TG_ERR_INVALID, "chunk: chunks must be >= 1 (got %d)", chunks), -1;
    /* ceil(len / chunks), written so that no sum can overflow. */
    int64_t len = a->shape[axis], size = len ? (len - 1) / chunks + 1 : 1;
    int n = 0;
    for (int64_t start = 0; start < len && n < chunks; start += size) {
        bool last = len - start <= size;
        if (!(out[n++] = tg_slice(ctx, a, axis, start, last ? len : start + size, 1)))
            return -1;
        if (last)
            break;
    }
    return n;
}
