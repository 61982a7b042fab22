/* Elementwise ops: forward shape/dtype logic and backward rules side by side. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define IN0 (1u << 0)
#define IN1 (1u << 1)
#define OUT TG__SAVED_OUT

bool tg__broadcast_shape(tg_ctx *ctx, const char *op, const tg_tensor *a, const tg_tensor *b,
                         int *ndim, int64_t *shape)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[96], sb[96];
            tg__fail(ctx, TG_ERR_SHAPE,
                     "%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld; sizes must "
                     "match or one be 1, aligned from the right)",
                     op, tg_shape_str(a, sa, sizeof sa), tg_shape_str(b, sb, sizeof sb), i,
                     (long long)da, (long long)db);
            return false;
        }
        shape[i] = da == 1 ? db : da;
    }
    *ndim = nd;
    return true;
}

/* A stride-0 view of t expanded to (ndim, shape); t itself when equal. Not
 * recorded: used to hand broadcast operands to kernels. */
tg_tensor *tg__expand_view(tg_ctx *ctx, tg_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim == ndim && !memcmp(t->shape, shape, sizeof(int64_t) * (size_t)ndim))
        return t;
    int64_t strides[TG_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        int it = t->ndim - ndim + i;
        strides[i] = (it >= 0 && t->shape[it] == shape[i]) ? t->strides[it] : 0;
    }
    return tg__view(ctx, t, ndim, shape, strides, t->offset);
}

tg_tensor *tg_sum_to(tg_ctx *ctx, tg_tensor *g, int ndim, const int64_t *shape)
{
    tg_tensor *ins[1] = {g};
    if (!tg__check_args(ctx, "sum_to", 1, ins))
        return NULL;
    if (ndim < 0 || (ndim > 0 && !shape))
        return tg__fail(ctx, TG_ERR_INVALID, "sum_to: %s target shape",
                        ndim < 0 ? "negative dims in the" : "NULL"),
               NULL;
    if (g->ndim == ndim && !memcmp(g->shape, shape, sizeof(int64_t) * (size_t)ndim))
        return g;
    if (ndim > g->ndim)
        return tg__fail(ctx, TG_ERR_SHAPE, "sum_to: target has more dims than the tensor"), NULL;
    int axes[TG_MAX_DIMS], n = 0, lead = g->ndim - ndim;
    for (int i = 0; i < g->ndim; i++) {
        if (i < lead) {
            axes[n++] = i;
            continue;
        }
        int64_t want = shape[i - lead];
        if (want == 1 && g->shape[i] != 1)
            axes[n++] = i;
        else if (want != g->shape[i]) {
            char b[96];
            tg__fail(ctx, TG_ERR_SHAPE, "sum_to: %s cannot be reduced to the target shape",
                     tg_shape_str(g, b, sizeof b));
            return NULL;
        }
    }
    tg_tensor *s = n ? tg_sum(ctx, g, n, axes, true) : g;
    return tg_reshape(ctx, s, ndim, shape);
}

/* ---- binary ---- */

tg_tensor *tg__binary(tg_ctx *ctx, tg_op op, tg_tensor *a, tg_tensor *b, const tg_op_params *p,
                      uint32_t saved, bool ints)
{
    const char *name = tg_op_name(op);
    tg_tensor *ins[2] = {a, b};
    if (!tg__check_args(ctx, name, 2, ins) ||
        (!(ints && !tg_dtype_is_float(a->dtype)) && !tg__check_float(ctx, name, a)) ||
        !tg__check_same_dtype(ctx, name, a, b))
        return NULL;
    int nd;
    int64_t shape[TG_MAX_DIMS];
    if (!tg__broadcast_shape(ctx, name, a, b, &nd, shape))
        return NULL;
    tg_tensor *out = tg__new(ctx, a->dtype, nd, shape, false);
    tg_tensor *views[2] = {out ? tg__expand_view(ctx, a, nd, shape) : NULL,
                           out ? tg__expand_view(ctx, b, nd, shape) : NULL};
    if (!views[0] || !views[1] || tg__run(ctx, op, p, out, 2, views) != TG_OK)
        return NULL;
    if (tg__record(ctx, op, p, out, 2, ins, saved) != TG_OK)
        return NULL;
    return out;
}

/* add, sub, mul and eq also take integer operands (u8, i32, i64: wrapping
 * arithmetic, never recorded since integer tensors do not require grad). */
tg_tensor *tg_add(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_ADD, a, b, NULL, 0, true); }
tg_tensor *tg_sub(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_SUB, a, b, NULL, 0, true); }
tg_tensor *tg_mul(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_MUL, a, b, NULL, IN0 | IN1, true); }
tg_tensor *tg_div(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_DIV, a, b, NULL, IN1 | OUT, false); }
tg_tensor *tg_eq(tg_ctx *ctx, tg_tensor *a, tg_tensor *b) { return tg__binary(ctx, TG_OP_EQ, a, b, NULL, 0, true); }
tg_tensor *tg__add_into_new(tg_ctx *ctx, tg_tensor *y, tg_tensor *b)
{
    tg_tensor *ins[2] = {y, b};
    if (!tg__check_args(ctx, "add", 2, ins) || y->dtype != b->dtype ||
        (y->dtype != TG_F32 && y->dtype != TG_F64) || y->device != b->device ||
        !tg_is_contiguous(y) || y->storage->persistent ||
        (y->requires_grad && y->record == 0))
        return tg_add(ctx, y, b);
    int nd;
    int64_t shape[TG_MAX_DIMS];
    if (!tg__broadcast_shape(ctx, "add", y, b, &nd, shape))
        return NULL;
    if (nd != y->ndim || memcmp(shape, y->shape, sizeof(int64_t) * (size_t)nd))
        return tg_add(ctx, y, b);
    tg_tensor *out = tg__view(ctx, y, nd, y->shape, y->strides, y->offset);
    tg_tensor *views[2] = {y, out ? tg__expand_view(ctx, b, nd, shape) : NULL};
    if (!views[1] || tg__run(ctx, TG_OP_ADD, NULL, out, 2, views) != TG_OK)
        return NULL;
    tg_bump_version(y);
    if (tg__record(ctx, TG_OP_ADD, NULL, out, 2, ins, 0) != TG_OK)
        return NULL;
    return out;
}

tg_tensor *tg_relu_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x)
{
    return tg__binary(ctx, TG_OP_RELU_BACKWARD, g, x, NULL, IN1, false);
}
tg_tensor *tg_clamp_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x, double lo, double hi)
{
    tg_op_params p = {.f = {lo, hi}};
    return tg__binary(ctx, TG_OP_CLAMP_BACKWARD, g, x, &p, IN1, false);
}
tg_tensor *tg_gelu_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x)
{
    return tg__binary(ctx, TG_OP_GELU_BACKWARD, g, x, NULL, IN0 | IN1, false);
}

#define SHAPE_OF(t) (t)->ndim, (t)->shape

tg_status tg__bw_add(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_sum_to(ctx, g, SHAPE_OF(r->in[0]));
    gin[1] = tg_sum_to(ctx, g, SHAPE_OF(r->in[1]));
    return gin[0] && gin[1] ? TG_OK : ctx->status;
}

tg_status tg__bw_sub(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    gin[0] = tg_sum_to(ctx, g, SHAPE_OF(r->in[0]));
    gin[1] = r->in[1]->requires_grad ? tg_sum_to(ctx, tg_neg(ctx, g), SHAPE_OF(r->in[1])) : NULL;
    return gin[0] && (gin[1] || !r->in[1]->requires_grad) ? TG_OK : ctx->status;
}

tg_status tg__bw_mul(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    for (int i = 0; i < 2; i++) {
        if (!r->in[i]->requires_grad)
            continue;
        gin[i] = tg_sum_to(ctx, tg_mul(ctx, g, r->in[1 - i]), SHAPE_OF(r->in[i]));
        if (!gin[i])
            return ctx->status;
    }
    return TG_OK;
}

tg_status tg__bw_div(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    tg_tensor *a = r->in[0], *b = r->in[1];
    if (a->requires_grad && !(gin[0] = tg_sum_to(ctx, tg_div(ctx, g, b), SHAPE_OF(a))))
        return ctx->status;
    /* d(a/b)/db = -a/b^2 = -out/b */
    if (b->requires_grad &&
        !(gin[1] = tg_sum_to(ctx, tg_neg(ctx, tg_div(ctx, tg_mul(ctx, g, r->out), b)), SHAPE_OF(b))))
        return ctx->status;
    return TG_OK;
}

static tg_status not_differentiable(tg_ctx *ctx, const tg__rec *r)
{
    return tg__fail(ctx, TG_ERR_AUTOGRAD, "%s is not differentiable", tg_op_name(r->op));
}

tg_status tg__bw_eq(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    (void)g, (void)gin;
    return not_differentiable(ctx, r);
}

tg_status tg__bw_sign(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    (void)g, (void)gin;
    return not_differentiable(ctx, r);
}

/* relu_backward and clamp_backward are linear in g with a constant mask, so
 * their gradient w.r.t. g is the same masked op, and x gets none. */
tg_status tg__bw_relu_backward(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    if (r->in[0]->requires_grad &&
        !(gin[0] = tg_sum_to(ctx, tg_relu_backward(ctx, g, r->in[1]), SHAPE_OF(r->in[0]))))
        return ctx->status;
    return TG_OK;
}

tg_status tg__bw_clamp_backward(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    if (r->in[0]->requires_grad &&
        !(gin[0] = tg_sum_to(ctx, tg_clamp_backward(ctx, g, r->in[1], r->p.f[0], r->p.f[1]),
                             SHAPE_OF(r->in[0]))))
        return ctx->status;
    return TG_OK;
}

/* gelu_backward(g, x) = g gelu'(x) is linear in g; in x its derivative is
 * g gelu''(x) = g phi(x) (2 - x^2), phi(x) = exp(-x^2/2)/sqrt(2 pi). */
tg_status tg__bw_gelu_backward(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    tg_tensor *dy = r->in[0], *x = r->in[1];
    if (dy->requires_grad &&
        !(gin[0] = tg_sum_to(ctx, tg_gelu_backward(ctx, g, x), SHAPE_OF(dy))))
        return ctx->status;
    if (x->requires_grad) {
        tg_tensor *x2 = tg_mul(ctx, x, x);
        tg_tensor *pdf = tg_mul_scalar(ctx, tg_exp(ctx, tg_mul_scalar(ctx, x2, -0.5)),
                                       0.3989422804014327);
        tg_tensor *d2 = tg_mul(ctx, pdf, tg_affine(ctx, x2, -1.0, 2.0));
        if (!(gin[1] = tg_sum_to(ctx, tg_mul(ctx, tg_mul(ctx, g, dy), d2), SHAPE_OF(x))))
            return ctx->status;
    }
    return TG_OK;
}

/* ---- where ---- */

tg_tensor *tg_where(tg_ctx *ctx, tg_tensor *cond, tg_tensor *a, tg_tensor *b)
{
    tg_tensor *ins[3] = {cond, a, b};
    if (!tg__check_args(ctx, "where", 3, ins) || !tg__check_float(ctx, "where", a) ||
        !tg__check_same_dtype(ctx, "where", a, b))
        return NULL;
    int nd, nd2;
    int64_t s1[TG_MAX_DIMS], s2[TG_MAX_DIMS];
    if (!tg__broadcast_shape(ctx, "where", a, b, &nd, s1))
        return NULL;
    tg_tensor probe = {.ndim = nd};
    memcpy(probe.shape, s1, sizeof s1);
    if (!tg__broadcast_shape(ctx, "where", cond, &probe, &nd2, s2))
        return NULL;
    tg_tensor *out = tg__new(ctx, a->dtype, nd2, s2, false);
    tg_tensor *views[3];
    for (int i = 0; i < 3; i++)
        if (!out || !(views[i] = tg__expand_view(ctx, ins[i], nd2, s2)))
            return NULL;
    if (tg__run(ctx, TG_OP_WHERE, NULL, out, 3, views) != TG_OK ||
        tg__record(ctx, TG_OP_WHERE, NULL, out, 3, ins, 1u) != TG_OK)
        return NULL;
    return out;
}

tg_status tg__bw_where(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    tg_tensor *zero = tg_scalar(ctx, g->dtype, 0.0);
    if (r->in[1]->requires_grad &&
        !(gin[1] = tg_sum_to(ctx, tg_where(ctx, r->in[0], g, zero), SHAPE_OF(r->in[1]))))
        return ctx->status;
    if (r->in[2]->requires_grad &&
        !(gin[2] = tg_sum_to(ctx, tg_where(ctx, r->in[0], zero, g), SHAPE_OF(r->in[2]))))
        return ctx->status;
    return TG_OK;
}

/* ---- unary ---- */

tg_tensor *tg__unary(tg_ctx *ctx, tg_op op, tg_tensor *a, const tg_op_params *p, uint32_t saved)
{
    const char *name = tg_op_name(op);
    if (!tg__check_args(ctx, name, 1, &a) || !tg__check_float(ctx, name, a))
        return NULL;
    return tg__apply(ctx, op, p, tg__new(ctx, a->dtype, a->ndim, a->shape, false), 1, &a, saved);
}

tg_tensor *tg_neg(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_NEG, a, NULL, 0); }
tg_tensor *tg_affine(tg_ctx *ctx, tg_tensor *a, double scale, double shift)
{
    tg_op_params p = {.f = {scale, shift}};
    return tg__unary(ctx, TG_OP_AFFINE, a, &p, 0);
}
tg_tensor *tg_add_scalar(tg_ctx *ctx, tg_tensor *a, double s) { return tg_affine(ctx, a, 1.0, s); }
tg_tensor *tg_mul_scalar(tg_ctx *ctx, tg_tensor *a, double s) { return tg_affine(ctx, a, s, 0.0); }
tg_tensor *tg_pow_scalar(tg_ctx *ctx, tg_tensor *a, double e)
{
    tg_op_params p = {.f = {e}};
    return tg__unary(ctx, TG_OP_POW_SCALAR, a, &p, IN0);
}
tg_tensor *tg_exp(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_EXP, a, NULL, OUT); }
tg_tensor *tg_log(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_LOG, a, NULL, IN0); }
tg_tensor *tg_sqrt(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_SQRT, a, NULL, OUT); }
tg_tensor *tg_abs(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_ABS, a, NULL, IN0); }
tg_tensor *tg_erf(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_ERF, a, NULL, IN0); }
tg_tensor *tg_relu(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_RELU, a, NULL, IN0); }
tg_tensor *tg_sigmoid(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_SIGMOID, a, NULL, OUT); }
tg_tensor *tg_tanh(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_TANH, a, NULL, OUT); }
tg_tensor *tg_silu(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_SILU, a, NULL, IN0); }
tg_tensor *tg_gelu(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_GELU, a, NULL, IN0); }
tg_tensor *tg_sign(tg_ctx *ctx, tg_tensor *a) { return tg__unary(ctx, TG_OP_SIGN, a, NULL, 0); }
tg_tensor *tg_clamp(tg_ctx *ctx, tg_tensor *a, double lo, double hi)
{
    if (a && lo > hi)
        return tg__fail(ctx, TG_ERR_INVALID, "clamp: lower bound %g above upper bound %g", lo, hi),
               NULL;
    tg_op_params p = {.f = {lo, hi}};
    return tg__unary(ctx, TG_OP_CLAMP, a, &p, IN0);
}

/* Each rule below writes gin[0]; they share this wrapper. */
#define UNARY_BW(name, expr)                                                                     \
    tg_status tg__bw_##name(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)     \
    {                                                                                            \
        tg_tensor *x = r->in[0], *y = r->out;                                                    \
        (void)x, (void)y;                                                                        \
        gin[0] = (expr);                                                                         \
        return gin[0] ? TG_OK : ctx->status;                                                     \
    }

UNARY_BW(neg, tg_neg(ctx, g))
UNARY_BW(affine, tg_mul_scalar(ctx, g, r->p.f[0]))
/* p x^(p-1); for p = 0 the derivative is 0 everywhere, including x = 0 where
 * the formula would give 0 * inf. */
UNARY_BW(pow_scalar,
         r->p.f[0] == 0.0
             ? tg_zeros_like(ctx, x)
             : tg_mul(ctx, g, tg_mul_scalar(ctx, tg_pow_scalar(ctx, x, r->p.f[0] - 1.0), r->p.f[0])))
UNARY_BW(exp, tg_mul(ctx, g, y))
UNARY_BW(log, tg_div(ctx, g, x))
UNARY_BW(sqrt, tg_div(ctx, tg_mul_scalar(ctx, g, 0.5), y))
UNARY_BW(abs, tg_mul(ctx, g, tg_sign(ctx, x)))
/* d erf(x)/dx = 2/sqrt(pi) exp(-x^2) */
UNARY_BW(erf, tg_mul(ctx, g,
                     tg_mul_scalar(ctx, tg_exp(ctx, tg_mul_scalar(ctx, tg_mul(ctx, x, x), -1.0)),
                                   1.1283791670955126)))
UNARY_BW(relu, tg_relu_backward(ctx, g, x))
/* s (1 - s) */
UNARY_BW(sigmoid, tg_mul(ctx, g, tg_mul(ctx, y, tg_affine(ctx, y, -1.0, 1.0))))
/* 1 - t^2 */
UNARY_BW(tanh, tg_mul(ctx, g, tg_affine(ctx, tg_mul(ctx, y, y), -1.0, 1.0)))
UNARY_BW(clamp, tg_clamp_backward(ctx, g, x, r->p.f[0], r->p.f[1]))

/* d silu/dx = s (1 + x (1 - s)) with s = sigmoid(x) */
tg_status tg__bw_silu(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    tg_tensor *x = r->in[0], *s = tg_sigmoid(ctx, x);
    tg_tensor *d = tg_mul(ctx, s, tg_add_scalar(ctx, tg_mul(ctx, x, tg_affine(ctx, s, -1.0, 1.0)), 1.0));
    gin[0] = tg_mul(ctx, g, d);
    return gin[0] ? TG_OK : ctx->status;
}

/* d gelu/dx = Phi(x) + x phi(x), Phi(x) = (1 + erf(x/sqrt 2))/2,
 * phi(x) = exp(-x^2/2)/sqrt(2 pi): one fused pass (gelu_backward). */
UNARY_BW(gelu, tg_gelu_backward(ctx, g, x))
