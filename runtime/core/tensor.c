/* Tensors: creation, views, host access and the in-place operations. */
#include "checked.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tg__contig_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

int64_t tg__numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

int64_t tg_numel(const tg_tensor *t) { return t ? tg__numel(t->ndim, t->shape) : 0; }

bool tg_is_contiguous(const tg_tensor *t)
{
    /* An empty tensor has no element whose address could be out of order. */
    if (tg_numel(t) == 0)
        return true;
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != s)
            return false;
        s *= t->shape[i];
    }
    return true;
}

bool tg_is_leaf(const tg_tensor *t) { return t && t->record == 0; }

char *tg__dims_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, len - off, "(");
    for (int i = 0; i < ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (off < len)
        snprintf(buf + off, len - off, ndim == 1 ? ",)" : ")");
    return buf;
}

char *tg_shape_str(const tg_tensor *t, char *buf, size_t len)
{
    return tg__dims_str(t->ndim, t->shape, buf, len);
}

void tg__kview(const tg_tensor *t, tg_kview *v)
{
    v->data = (char *)t->storage->data + t->offset * (int64_t)tg_dtype_size(t->dtype);
    v->dtype = t->dtype;
    v->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) {
        v->shape[i] = t->shape[i];
        v->strides[i] = t->strides[i];
    }
}

bool tg__check_dims(tg_ctx *ctx, const char *op, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > TG_MAX_DIMS)
        return tg__fail(ctx, TG_ERR_SHAPE, "%s: %d dims (0 to %d allowed)", op, ndim, TG_MAX_DIMS),
               false;
    if (ndim > 0 && !shape)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: NULL shape", op), false;
    char b[TG__SHAPE_STR];
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return tg__fail(ctx, TG_ERR_SHAPE, "%s: shape %s has the negative size %lld in dim %d",
                            op, tg__dims_str(ndim, shape, b, sizeof b), (long long)shape[i], i),
                   false;
    /* The product of the sizes, zeros counted as ones, bounds the element
     * count and every contiguous stride: it must fit an int64_t. */
    int64_t span = 1;
    for (int i = 0; i < ndim; i++)
        if (!tg__mul_i64(span, shape[i] > 0 ? shape[i] : 1, &span))
            return tg__fail(ctx, TG_ERR_SHAPE,
                            "%s: shape %s has more elements than an int64_t counts (at most "
                            "%lld)",
                            op, tg__dims_str(ndim, shape, b, sizeof b), (long long)INT64_MAX),
                   false;
    return true;
}

/* check_shape's common case in one pass: false for anything unusual, which
 * the full checks then name. */
static inline bool shape_fits(tg_dtype dt, int ndim, const int64_t *shape, size_t *nbytes)
{
    if ((unsigned)dt >= TG_DTYPE_COUNT || (unsigned)ndim > TG_MAX_DIMS || (ndim && !shape))
        return false;
    uint64_t span = 1;
    bool empty = false;
    for (int i = 0; i < ndim; i++) {
        int64_t d = shape[i];
        if (d <= 0) {
            if (d < 0)
                return false;
            empty = true;
        } else if (__builtin_mul_overflow(span, (uint64_t)d, &span)) {
            return false;
        }
    }
    uint64_t b;
    if (span > (uint64_t)INT64_MAX || __builtin_mul_overflow(span, tg_dtype_size(dt), &b) ||
        b > TG__MAX_BYTES)
        return false;
    *nbytes = empty ? 0 : (size_t)b;
    return true;
}

/* A shape for a new tensor of dtype dt: valid dims and a byte size that
 * fits TG__MAX_BYTES. Writes the byte size. */
static bool check_shape(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, size_t *nbytes)
{
    if (shape_fits(dt, ndim, shape, nbytes))
        return true;
    if ((unsigned)dt >= TG_DTYPE_COUNT)
        return tg__fail(ctx, TG_ERR_DTYPE, "tensor: unknown dtype %d", (int)dt), false;
    if (!tg__check_dims(ctx, "tensor", ndim, shape))
        return false;
    if (!tg__nbytes_checked(ndim, shape, tg_dtype_size(dt), nbytes)) {
        char b[TG__SHAPE_STR];
        return tg__fail(ctx, TG_ERR_NOMEM,
                        "tensor: shape %s of %s needs more than %zu bytes, the most a tensor can "
                        "hold",
                        tg__dims_str(ndim, shape, b, sizeof b), tg_dtype_name(dt), TG__MAX_BYTES),
               false;
    }
    return true;
}

static bool track_persistent(tg_ctx *ctx, tg_tensor *t)
{
    if (ctx->npersistent == ctx->cap_persistent) {
        int64_t cap = ctx->cap_persistent ? 2 * ctx->cap_persistent : 64;
        tg_tensor **p = realloc(ctx->persistent, (size_t)cap * sizeof *p);
        if (!p)
            return tg__fail(ctx, TG_ERR_NOMEM, "out of memory tracking a parameter"), false;
        ctx->alloc_count++;
        ctx->persistent = p;
        ctx->cap_persistent = cap;
    }
    ctx->persistent[ctx->npersistent++] = t;
    return true;
}

tg_tensor *tg__new(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, bool persistent)
{
    size_t nbytes;
    if (!check_shape(ctx, dt, ndim, shape, &nbytes))
        return NULL;
    tg__arena *meta = persistent ? &ctx->pers_meta : &ctx->step_meta;
    tg__arena *data = persistent ? &ctx->pers_data : &ctx->step_data;
    tg_tensor *t = tg__arena_alloc(ctx, meta, sizeof *t + sizeof(tg_storage));
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    tg_storage *st = (tg_storage *)(t + 1);
    st->data = tg__arena_try(ctx, data, nbytes);
    if (!st->data) {
        char b[TG__SHAPE_STR];
        return tg__fail(ctx, TG_ERR_NOMEM,
                        "tensor: out of memory allocating %zu bytes for a %s tensor of shape %s",
                        nbytes, tg_dtype_name(dt), tg__dims_str(ndim, shape, b, sizeof b)),
               NULL;
    }
    st->nbytes = nbytes;
    st->version = 0;
    st->persistent = persistent;
    st->serial = ctx->nstorage++;
    t->dtype = dt;
    t->device = ctx->be->device;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    tg__contig_strides(ndim, shape, t->strides);
    t->storage = st;
    t->step = persistent ? 0 : ctx->step + 1;
    if (persistent && !track_persistent(ctx, t))
        return NULL;
    return t;
}

/* The element offsets a view can reach, offset + sum (shape[i] - 1) *
 * strides[i] at both ends, must fit an int64_t (and so must its numel). */
static bool check_view(tg_ctx *ctx, int ndim, const int64_t *shape, const int64_t *strides,
                       int64_t offset)
{
    int64_t lo = offset, hi = offset, n;
    bool ok = tg__numel_checked(ndim, shape, &n);
    for (int i = 0; ok && n > 0 && i < ndim; i++) {
        int64_t span;
        ok = tg__mul_i64(shape[i] - 1, strides[i], &span) &&
             (span < 0 ? tg__add_i64(lo, span, &lo) : tg__add_i64(hi, span, &hi));
    }
    if (ok)
        return true;
    char a[TG__SHAPE_STR], b[TG__SHAPE_STR];
    tg__fail(ctx, TG_ERR_SHAPE,
             "view: shape %s with strides %s at offset %lld addresses elements past the int64_t "
             "range",
             tg__dims_str(ndim, shape, a, sizeof a), tg__dims_str(ndim, strides, b, sizeof b),
             (long long)offset);
    return false;
}

tg_tensor *tg__view(tg_ctx *ctx, const tg_tensor *src, int ndim, const int64_t *shape,
                    const int64_t *strides, int64_t offset)
{
    if (!check_view(ctx, ndim, shape, strides, offset))
        return NULL;
    /* Views are step tensors, also views of persistent ones: they die with
     * the step, the storage they share does not. */
    tg_tensor *t = tg__arena_alloc(ctx, &ctx->step_meta, sizeof *t);
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    t->dtype = src->dtype;
    t->device = src->device;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->strides[i] = strides[i];
    }
    t->offset = offset;
    t->storage = src->storage;
    t->step = ctx->step + 1;
    return t;
}

tg_tensor *tg_empty(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape)
{
    return tg__new(ctx, dt, ndim, shape, false);
}

static tg_tensor *fill_new(tg_ctx *ctx, tg_tensor *t, double v)
{
    if (t && tg_fill_(ctx, t, v) != TG_OK)
        return NULL;
    if (t)
        t->storage->version = 0;
    return t;
}

tg_tensor *tg_zeros(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape)
{
    return fill_new(ctx, tg__new(ctx, dt, ndim, shape, false), 0.0);
}

tg_tensor *tg_full(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, double value)
{
    return fill_new(ctx, tg__new(ctx, dt, ndim, shape, false), value);
}

tg_tensor *tg_scalar(tg_ctx *ctx, tg_dtype dt, double value)
{
    return tg_full(ctx, dt, 0, NULL, value);
}

tg_tensor *tg_zeros_like(tg_ctx *ctx, const tg_tensor *t)
{
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "zeros_like: operand 1 is NULL"), NULL;
    if (!tg__check_live(ctx, "zeros_like", 1, t))
        return NULL;
    return tg_zeros(ctx, t->dtype, t->ndim, t->shape);
}

tg_tensor *tg_from_data(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, const void *data)
{
    tg_tensor *t = tg__new(ctx, dt, ndim, shape, false);
    if (!t)
        return NULL;
    if (t->storage->nbytes && !data)
        return tg__fail(ctx, TG_ERR_INVALID, "from_data: NULL data"), NULL;
    if (t->storage->nbytes &&
        ctx->be->copy_h2d(ctx->bstate, t->storage->data, data, t->storage->nbytes) != TG_OK)
        return tg__fail(ctx, TG_ERR_BACKEND, "from_data: copy to device failed"), NULL;
    return t;
}

/* A copy of name in the persistent pool, so that names built in one reused
 * buffer stay distinct; NULL (with the error set) when out of memory. */
static const char *copy_name(tg_ctx *ctx, const char *name)
{
    if (!name)
        return NULL;
    size_t len = strlen(name) + 1;
    char *c = tg__arena_alloc(ctx, &ctx->pers_meta, len);
    if (c)
        memcpy(c, name, len);
    return c;
}

static tg_tensor *new_persistent(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape,
                                 const char *name)
{
    tg_tensor *t = tg__new(ctx, dt, ndim, shape, true);
    if (!t)
        return NULL;
    if (name && !(t->name = copy_name(ctx, name)))
        return NULL;
    if (t->storage->nbytes && ctx->be->zero(ctx->bstate, t->storage->data, t->storage->nbytes))
        return tg__fail(ctx, TG_ERR_BACKEND, "param: zero fill failed"), NULL;
    return t;
}

tg_tensor *tg_param(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, const char *name)
{
    tg_tensor *t = new_persistent(ctx, dt, ndim, shape, name);
    if (t && !tg_dtype_is_float(dt))
        return tg__fail(ctx, TG_ERR_DTYPE, "param %s: parameters must be f32 or f64, not %s",
                        name ? name : "", tg_dtype_name(dt)),
               NULL;
    if (t)
        t->requires_grad = true;
    return t;
}

tg_tensor *tg_persistent(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, const char *name)
{
    return new_persistent(ctx, dt, ndim, shape, name);
}

/* ---- host access ---- */

/* The bytes of t's elements (a broadcast view's can exceed any buffer). */
static bool host_bytes(tg_ctx *ctx, const char *op, const tg_tensor *t, size_t *want)
{
    if (tg__nbytes_checked(t->ndim, t->shape, tg_dtype_size(t->dtype), want))
        return true;
    char b[TG__SHAPE_STR];
    tg__fail(ctx, TG_ERR_NOMEM, "%s: a %s tensor of shape %s has more than %zu bytes", op,
             tg_dtype_name(t->dtype), tg_shape_str(t, b, sizeof b), TG__MAX_BYTES);
    return false;
}

tg_status tg_to_host(tg_ctx *ctx, const tg_tensor *t, void *dst, size_t nbytes)
{
    if (!t || !dst)
        return tg__fail(ctx, TG_ERR_INVALID, "to_host: NULL %s", t ? "destination" : "tensor");
    if (!tg__check_live(ctx, "to_host", 0, t))
        return ctx->status;
    size_t want;
    if (!host_bytes(ctx, "to_host", t, &want))
        return ctx->status;
    if (nbytes != want)
        return tg__fail(ctx, TG_ERR_INVALID, "to_host: buffer of %zu bytes for a tensor of %zu",
                        nbytes, want);
    const tg_tensor *src = t;
    if (!tg_is_contiguous(t)) {
        /* Gather the view into a step tensor first; tg_copy does not record
         * because it runs with grad mode off here. */
        bool prev = tg_set_grad_enabled(ctx, false);
        src = tg_copy(ctx, (tg_tensor *)t);
        tg_set_grad_enabled(ctx, prev);
        if (!src)
            return ctx->status;
    }
    if (!want)
        return TG_OK;
    const char *p = (const char *)src->storage->data + src->offset * (int64_t)tg_dtype_size(src->dtype);
    if (ctx->be->copy_d2h(ctx->bstate, dst, p, want) != TG_OK)
        return tg__fail(ctx, TG_ERR_BACKEND, "to_host: copy from device failed");
    return TG_OK;
}

static double load_as_double(tg_dtype dt, const void *p)
{
    switch (dt) {
    case TG_F32: return *(const float *)p;
    case TG_F64: return *(const double *)p;
    case TG_U8: return *(const uint8_t *)p;
    case TG_I32: return *(const int32_t *)p;
    case TG_BF16: return tg_bf16_to_f32(*(const uint16_t *)p);
    default: return (double)*(const int64_t *)p;
    }
}

/* tg_get and tg_item; fn names the caller in messages. */
static tg_status get_value(tg_ctx *ctx, const char *fn, const tg_tensor *t, int64_t flat_index,
                           double *value)
{
    if (!t || !value)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: NULL %s", fn, t ? "destination" : "tensor");
    if (!tg__check_live(ctx, fn, 0, t))
        return ctx->status;
    if (flat_index < 0 || flat_index >= tg_numel(t))
        return tg__fail(ctx, TG_ERR_INVALID, "%s: index %lld out of range for %lld elements", fn,
                        (long long)flat_index, (long long)tg_numel(t));
    int64_t off = t->offset, rem = flat_index;
    for (int i = t->ndim - 1; i >= 0; i--) {
        off += (rem % t->shape[i]) * t->strides[i];
        rem /= t->shape[i];
    }
    size_t es = tg_dtype_size(t->dtype);
    unsigned char buf[8];
    if (ctx->be->copy_d2h(ctx->bstate, buf, (const char *)t->storage->data + off * (int64_t)es, es))
        return tg__fail(ctx, TG_ERR_BACKEND, "%s: copy from device failed", fn);
    *value = load_as_double(t->dtype, buf);
    return TG_OK;
}

tg_status tg_get(tg_ctx *ctx, const tg_tensor *t, int64_t flat_index, double *value)
{
    return get_value(ctx, "get", t, flat_index, value);
}

tg_status tg_item(tg_ctx *ctx, const tg_tensor *t, double *value)
{
    if (t && !tg__check_live(ctx, "item", 0, t))
        return ctx->status;
    if (t && tg_numel(t) != 1) {
        char b[96];
        return tg__fail(ctx, TG_ERR_SHAPE, "item: tensor of shape %s has %lld elements, not 1",
                        tg_shape_str(t, b, sizeof b), (long long)tg_numel(t));
    }
    return get_value(ctx, "item", t, 0, value);
}

/* ---- in place ---- */

static tg_status check_inplace(tg_ctx *ctx, const char *op, tg_tensor *t)
{
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: NULL tensor", op);
    if (!tg__check_live(ctx, op, 1, t))
        return ctx->status;
    if (t->requires_grad && ctx->grad_enabled)
        return tg__fail(ctx, TG_ERR_INPLACE,
                        "%s: in-place operation on %s%s%s that requires grad; in-place ops are "
                        "not differentiated: turn grad mode off or use the out-of-place op",
                        op, tg_is_leaf(t) ? "a leaf tensor" : "a tensor", t->name ? " " : "",
                        t->name ? t->name : "");
    return TG_OK;
}

void tg_bump_version(tg_tensor *t) { t->storage->version++; }

/* Contiguous float tensors go straight to the backend helpers; anything else
 * is an error for these helpers (parameters and gradients are contiguous). */
static tg_status check_flat(tg_ctx *ctx, const char *op, const tg_tensor *t)
{
    if (!tg_dtype_is_float(t->dtype))
        return tg__fail(ctx, TG_ERR_DTYPE, "%s: expected f32 or f64, got %s", op,
                        tg_dtype_name(t->dtype));
    if (!tg_is_contiguous(t))
        return tg__fail(ctx, TG_ERR_INVALID, "%s: tensor is not contiguous", op);
    return TG_OK;
}

static void *data_ptr(const tg_tensor *t)
{
    return (char *)t->storage->data + t->offset * (int64_t)tg_dtype_size(t->dtype);
}

tg_status tg_fill_(tg_ctx *ctx, tg_tensor *t, double value)
{
    tg_status s = check_inplace(ctx, "fill_", t);
    if (s)
        return s;
    if (!tg_dtype_is_float(t->dtype) && tg_is_contiguous(t)) {
        /* Integer tensors: fill on the host, copy once. Rare (labels). */
        size_t es = tg_dtype_size(t->dtype);
        int64_t n = tg_numel(t);
        for (int64_t i = 0; i < n; i++) {
            union { uint8_t u8; uint16_t u16; int32_t i32; int64_t i64; } v;
            if (t->dtype == TG_U8) v.u8 = (uint8_t)value;
            else if (t->dtype == TG_BF16) v.u16 = tg_bf16_from_f32((float)value);
            else if (t->dtype == TG_I32) v.i32 = (int32_t)value;
            else v.i64 = (int64_t)value;
            if (ctx->be->copy_h2d(ctx->bstate, (char *)data_ptr(t) + i * (int64_t)es, &v, es))
                return tg__fail(ctx, TG_ERR_BACKEND, "fill_: copy failed");
        }
        tg_bump_version(t);
        return TG_OK;
    }
    if ((s = check_flat(ctx, "fill_", t)))
        return s;
    if (ctx->be->fill(ctx->bstate, t->dtype, tg_numel(t), value, data_ptr(t)))
        return tg__fail(ctx, TG_ERR_BACKEND, "fill_: backend failed");
    tg_bump_version(t);
    return TG_OK;
}

tg_status tg_mul_scalar_(tg_ctx *ctx, tg_tensor *t, double value)
{
    tg_status s = check_inplace(ctx, "mul_scalar_", t);
    if (s || (s = check_flat(ctx, "mul_scalar_", t)))
        return s;
    if (ctx->be->scale(ctx->bstate, t->dtype, tg_numel(t), value, data_ptr(t)))
        return tg__fail(ctx, TG_ERR_BACKEND, "mul_scalar_: backend failed");
    tg_bump_version(t);
    return TG_OK;
}

static tg_status check_pair(tg_ctx *ctx, const char *op, const tg_tensor *dst, const tg_tensor *src)
{
    if (!src)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: NULL source", op);
    if (!tg__check_live(ctx, op, 2, src))
        return ctx->status;
    if (dst->dtype != src->dtype)
        return tg__fail(ctx, TG_ERR_DTYPE, "%s: dtypes differ (%s and %s)", op,
                        tg_dtype_name(dst->dtype), tg_dtype_name(src->dtype));
    if (dst->ndim != src->ndim ||
        memcmp(dst->shape, src->shape, sizeof(int64_t) * (size_t)dst->ndim) != 0) {
        char a[96], b[96];
        return tg__fail(ctx, TG_ERR_SHAPE, "%s: shapes differ (%s and %s)", op,
                        tg_shape_str(dst, a, sizeof a), tg_shape_str(src, b, sizeof b));
    }
    return TG_OK;
}

tg_status tg_axpy_(tg_ctx *ctx, tg_tensor *dst, double alpha, const tg_tensor *src)
{
    tg_status s = check_inplace(ctx, "axpy_", dst);
    if (s || (s = check_pair(ctx, "axpy_", dst, src)) || (s = check_flat(ctx, "axpy_", dst)))
        return s;
    if (!tg_is_contiguous(src)) {
        bool prev = tg_set_grad_enabled(ctx, false);
        src = tg_copy(ctx, (tg_tensor *)src);
        tg_set_grad_enabled(ctx, prev);
        if (!src)
            return ctx->status;
    }
    if (ctx->be->axpy(ctx->bstate, dst->dtype, tg_numel(dst), alpha, data_ptr(src), data_ptr(dst)))
        return tg__fail(ctx, TG_ERR_BACKEND, "axpy_: backend failed");
    tg_bump_version(dst);
    return TG_OK;
}

tg_status tg_copy_(tg_ctx *ctx, tg_tensor *dst, const tg_tensor *src)
{
    tg_status s = check_inplace(ctx, "copy_", dst);
    if (s || (s = check_pair(ctx, "copy_", dst, src)))
        return s;
    if (!tg_is_contiguous(dst))
        return tg__fail(ctx, TG_ERR_INVALID, "copy_: destination is not contiguous");
    if (!tg_is_contiguous(src)) {
        bool prev = tg_set_grad_enabled(ctx, false);
        src = tg_copy(ctx, (tg_tensor *)src);
        tg_set_grad_enabled(ctx, prev);
        if (!src)
            return ctx->status;
    }
    size_t n = (size_t)tg_numel(dst) * tg_dtype_size(dst->dtype);
    if (n && ctx->be->copy_d2d(ctx->bstate, data_ptr(dst), data_ptr(src), n))
        return tg__fail(ctx, TG_ERR_BACKEND, "copy_: backend failed");
    tg_bump_version(dst);
    return TG_OK;
}

tg_status tg_copy_from_host(tg_ctx *ctx, tg_tensor *t, const void *src, size_t nbytes)
{
    tg_status s = check_inplace(ctx, "copy_from_host", t);
    if (s)
        return s;
    size_t want;
    if (!host_bytes(ctx, "copy_from_host", t, &want))
        return ctx->status;
    if (!src && want)
        return tg__fail(ctx, TG_ERR_INVALID, "copy_from_host: NULL source for %zu bytes", want);
    if (nbytes != want || !tg_is_contiguous(t))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "copy_from_host: %zu bytes for a %scontiguous tensor of %zu bytes", nbytes,
                        tg_is_contiguous(t) ? "" : "non-", want);
    if (want && ctx->be->copy_h2d(ctx->bstate, data_ptr(t), src, want))
        return tg__fail(ctx, TG_ERR_BACKEND, "copy_from_host: copy to device failed");
    tg_bump_version(t);
    return TG_OK;
}
