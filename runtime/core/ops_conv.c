/*
 * Convolution and pooling (nn.h): shape logic and backward rules.
 *
 * conv2d's two gradients are ops of their own and adjoint to each other and
 * to conv2d itself: for <v, bw_input(g, w)> = <conv2d(v, w), g> and
 * <v, bw_weight(x, g)> = <conv2d(x, v), g>, so the backward rule of each of
 * the three rows is made of the other two, and derivatives of any order stay
 * on the tape. The CPU kernels need a column matrix; the runtime allocates it
 * in the step arena and passes it as the kernel's last input (it is not
 * recorded).
 */
#include "checked.h"
#include "internal.h"
#include "tapegrad/nn.h"

#include <stdio.h>

enum { CV_STRIDE = 0, CV_PAD = 2, CV_DIL = 4, CV_BIAS = 6, CV_SIZE = 7 };

static const tg_conv2d_opts conv_default = {{1, 1}, {0, 0}, {1, 1}};

static bool conv_params(tg_ctx *ctx, const char *op, const tg_conv2d_opts *o, tg_op_params *p)
{
    if (!o)
        o = &conv_default;
    for (int i = 0; i < 2; i++) {
        if (o->stride[i] < 1 || o->dilation[i] < 1 || o->pad[i] < 0) {
            tg__fail(ctx, TG_ERR_INVALID,
                     "%s: stride (%d, %d) and dilation (%d, %d) must be >= 1 and pad (%d, %d) >= 0",
                     op, o->stride[0], o->stride[1], o->dilation[0], o->dilation[1], o->pad[0],
                     o->pad[1]);
            return false;
        }
        p->ints[CV_STRIDE + i] = o->stride[i];
        p->ints[CV_PAD + i] = o->pad[i];
        p->ints[CV_DIL + i] = o->dilation[i];
    }
    return true;
}

static tg_conv2d_opts opts_of(const tg_op_params *p)
{
    tg_conv2d_opts o;
    for (int i = 0; i < 2; i++) {
        o.stride[i] = (int)p->ints[CV_STRIDE + i];
        o.pad[i] = (int)p->ints[CV_PAD + i];
        o.dilation[i] = (int)p->ints[CV_DIL + i];
    }
    return o;
}

/* Output size along one dim into *out, -1 when the kernel does not fit;
 * false when the padded input or the dilated kernel overflows an int64_t
 * (sizes of views and the sizes given to the gradient ops can be huge). */
static bool conv_out(int64_t in, int64_t k, const tg_op_params *p, int i, int64_t *out)
{
    int64_t span, padded;
    if (!tg__mul_i64(p->ints[CV_DIL + i], k - 1, &span) || !tg__add_i64(span, 1, &span) ||
        !tg__add_i64(in, 2 * p->ints[CV_PAD + i], &padded))
        return false;
    *out = padded < span ? -1 : (padded - span) / p->ints[CV_STRIDE + i] + 1;
    return true;
}

/* Both output sizes of a conv row, or false with an error naming op, the
 * sizes and the options when they overflow. */
static bool conv_out2(tg_ctx *ctx, const char *op, int64_t h, int64_t w, int64_t r, int64_t s,
                      const tg_op_params *p, int64_t *oh, int64_t *ow)
{
    if (conv_out(h, r, p, 0, oh) && conv_out(w, s, p, 1, ow))
        return true;
    tg__fail(ctx, TG_ERR_SHAPE,
             "%s: input %lldx%lld with kernel %lldx%lld, pad (%lld, %lld) and dilation (%lld, "
             "%lld): the padded input or the dilated kernel overflows an int64_t",
             op, (long long)h, (long long)w, (long long)r, (long long)s,
             (long long)p->ints[CV_PAD], (long long)p->ints[CV_PAD + 1],
             (long long)p->ints[CV_DIL], (long long)p->ints[CV_DIL + 1]);
    return false;
}

static bool check4(tg_ctx *ctx, const char *op, const char *what, const tg_tensor *t)
{
    char s[96];
    if (t->ndim == 4)
        return true;
    tg__fail(ctx, TG_ERR_SHAPE, "%s: %s must have 4 dims (NCHW / KCRS), got %s", op, what,
             tg_shape_str(t, s, sizeof s));
    return false;
}

/* The workspace budget of one conv call. The CPU kernels give each thread
 * a slot of its own (one sample's column matrix, a packed gradient and a
 * weight-gradient partial sum) and run one gemm per sample in it: a column
 * matrix for the whole batch (crs x N*OH*OW: 160 MB for the cnn's conv2 at
 * batch 256, times three calls per step) cost more peak memory than all the
 * activations. The kernel uses as many threads as slots fit, so the budget
 * holds at least 8 slots (and at least one). On a GPU, where memory is
 * plentiful and one large gemm is what pays, the workspace holds the batch. */
#define CONV_WS_BYTES ((int64_t)4 << 20)
#define CONV_MIN_SLOTS 8

/* Room for the slots: each (crs + k) * ohw + k * crs values (the layout
 * cpu_conv.c reads back), as many as fit CONV_WS_BYTES, at least
 * CONV_MIN_SLOTS, at most one per sample. */
static tg_tensor *workspace(tg_ctx *ctx, const char *op, tg_dtype dt, int64_t c, int64_t r,
                            int64_t s, int64_t k, int64_t n, int64_t oh, int64_t ow)
{
    /* Every size here comes from tensors that exist, but their products
     * need not fit (views can be huge): check each one. */
    int64_t crs, ohw, slot, t1, t2, len, whole = 0;
    bool ok = tg__mul_i64(c, r, &crs) && tg__mul_i64(crs, s, &crs) && tg__mul_i64(oh, ow, &ohw) &&
              tg__add_i64(crs, k, &t1) && tg__mul_i64(t1, ohw, &t1) &&
              tg__mul_i64(k, crs, &t2) && tg__add_i64(t1, t2, &slot);
    int64_t ns = 0;
    if (ok) {
        ns = CONV_WS_BYTES / (int64_t)tg_dtype_size(dt) / (slot > 0 ? slot : 1);
        ns = ns < CONV_MIN_SLOTS ? CONV_MIN_SLOTS : ns;
        ns = ns > n ? n : ns;
        ok = tg__mul_i64(slot, ns > 0 ? ns : 1, &len);
    }
    /* The CUDA kernels run one im2col and one cuBLAS gemm over the whole
     * batch: column matrix and packed gradient for all n samples
     * (cuda_conv.cu's conv_ws_ok). */
    if (ok && ctx->be->device == TG_DEVICE_CUDA) {
        ok = tg__add_i64(crs, k, &whole) && tg__mul_i64(whole, n, &whole) &&
             tg__mul_i64(whole, ohw, &whole);
        len = ok && whole > len ? whole : len;
    }
    if (!ok) {
        tg__fail(ctx, TG_ERR_SHAPE,
                 "%s: the workspace for %lld channels, a %lldx%lld kernel, %lld filters, "
                 "%lld samples and a %lldx%lld output has more elements than an int64_t counts",
                 op, (long long)c, (long long)r, (long long)s, (long long)k, (long long)n,
                 (long long)oh, (long long)ow);
        return NULL;
    }
    return tg__new(ctx, dt, 1, &len, false);
}

/* Runs a conv row with the workspace appended to the kernel's inputs and
 * records it with the first nin inputs; the first two are saved. */
static tg_tensor *conv_run(tg_ctx *ctx, tg_op op, const tg_op_params *p, tg_tensor *out, int nin,
                           tg_tensor **ins, tg_tensor *ws)
{
    if (!out || !ws)
        return NULL;
    ins[nin] = ws;
    /* Autocast: f32 operands multiplied in bf16; the record keeps the
     * params without the flag, so that the backward follows the context. */
    tg_op_params lo = *p;
    lo.ints[TG_KP_CONV_BF16] = ctx->precision == TG_PRECISION_BF16 && out->dtype == TG_F32;
    if (tg__run(ctx, op, &lo, out, nin + 1, ins) != TG_OK)
        return NULL;
    if (tg__record(ctx, op, p, out, nin, ins, 3u) != TG_OK)
        return NULL;
    return out;
}

tg_tensor *tg_conv2d(tg_ctx *ctx, tg_tensor *x, tg_tensor *w, tg_tensor *b, const tg_conv2d_opts *o)
{
    const char *op = "conv2d";
    tg_tensor *ins[4] = {x, w, b, NULL};
    char sx[96], sw[96];
    tg_op_params p = {0};
    if (!tg__check_args(ctx, op, 2, ins) || !tg__check_float(ctx, op, x) ||
        !tg__check_same_dtype(ctx, op, x, w) || !check4(ctx, op, "x", x) ||
        !check4(ctx, op, "w", w) || !conv_params(ctx, op, o, &p))
        return NULL;
    if (w->shape[1] != x->shape[1] || w->shape[0] < 1 || w->shape[1] < 1 || w->shape[2] < 1 ||
        w->shape[3] < 1)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "conv2d: weight %s does not fit input %s (expected (K, %lld, R, S) with "
                        "K, R, S >= 1; groups = 1)",
                        tg_shape_str(w, sw, sizeof sw), tg_shape_str(x, sx, sizeof sx),
                        (long long)x->shape[1]),
               NULL;
    if (b) {
        if (!tg__check_live(ctx, op, 3, b) || !tg__check_same_dtype(ctx, op, x, b))
            return NULL;
        if (b->ndim != 1 || b->shape[0] != w->shape[0])
            return tg__fail(ctx, TG_ERR_SHAPE, "conv2d: bias %s, expected (%lld,)",
                            tg_shape_str(b, sx, sizeof sx), (long long)w->shape[0]),
                   NULL;
    }
    int64_t oh, ow;
    if (!conv_out2(ctx, op, x->shape[2], x->shape[3], w->shape[2], w->shape[3], &p, &oh, &ow))
        return NULL;
    if (oh < 1 || ow < 1)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "conv2d: kernel %lldx%lld (dilation %lld, %lld) is larger than the padded "
                        "input %s",
                        (long long)w->shape[2], (long long)w->shape[3], (long long)p.ints[CV_DIL],
                        (long long)p.ints[CV_DIL + 1], tg_shape_str(x, sx, sizeof sx)),
               NULL;
    ins[1] = w = tg_contiguous(ctx, w);
    if (!w)
        return NULL;
    p.ints[CV_BIAS] = b != NULL;
    int64_t shape[4] = {x->shape[0], w->shape[0], oh, ow};
    tg_tensor *out = tg__new(ctx, x->dtype, 4, shape, false);
    tg_tensor *ws = out ? workspace(ctx, op, x->dtype, w->shape[1], w->shape[2], w->shape[3],
                                    w->shape[0], x->shape[0], oh, ow)
                        : NULL;
    return conv_run(ctx, TG_OP_CONV2D, &p, out, b ? 3 : 2, ins, ws);
}

tg_tensor *tg_conv2d_backward_input(tg_ctx *ctx, tg_tensor *g, tg_tensor *w,
                                    const tg_conv2d_opts *o, int64_t h, int64_t wd)
{
    const char *op = "conv2d_backward_input";
    tg_tensor *ins[3] = {g, w, NULL};
    char sg[96], sw[96];
    tg_op_params p = {0};
    if (!tg__check_args(ctx, op, 2, ins) || !tg__check_float(ctx, op, g) ||
        !tg__check_same_dtype(ctx, op, g, w) || !check4(ctx, op, "g", g) ||
        !check4(ctx, op, "w", w) || !conv_params(ctx, op, o, &p))
        return NULL;
    int64_t oh = 0, ow = 0;
    if (h >= 1 && wd >= 1 && !conv_out2(ctx, op, h, wd, w->shape[2], w->shape[3], &p, &oh, &ow))
        return NULL;
    if (g->shape[1] != w->shape[0] || h < 1 || wd < 1 || oh != g->shape[2] || ow != g->shape[3])
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "%s: gradient %s and weight %s do not fit an input of size %lldx%lld", op,
                        tg_shape_str(g, sg, sizeof sg), tg_shape_str(w, sw, sizeof sw),
                        (long long)h, (long long)wd),
               NULL;
    ins[1] = w = tg_contiguous(ctx, w);
    if (!w)
        return NULL;
    p.ints[CV_SIZE] = h;
    p.ints[CV_SIZE + 1] = wd;
    int64_t shape[4] = {g->shape[0], w->shape[1], h, wd};
    tg_tensor *out = tg__new(ctx, g->dtype, 4, shape, false);
    tg_tensor *ws = out ? workspace(ctx, op, g->dtype, w->shape[1], w->shape[2], w->shape[3],
                                    w->shape[0], g->shape[0], g->shape[2], g->shape[3])
                        : NULL;
    return conv_run(ctx, TG_OP_CONV2D_BACKWARD_INPUT, &p, out, 2, ins, ws);
}

tg_tensor *tg_conv2d_backward_weight(tg_ctx *ctx, tg_tensor *x, tg_tensor *g,
                                     const tg_conv2d_opts *o, int64_t r, int64_t s)
{
    const char *op = "conv2d_backward_weight";
    tg_tensor *ins[3] = {x, g, NULL};
    char sx[96], sg[96];
    tg_op_params p = {0};
    if (!tg__check_args(ctx, op, 2, ins) || !tg__check_float(ctx, op, x) ||
        !tg__check_same_dtype(ctx, op, x, g) || !check4(ctx, op, "x", x) ||
        !check4(ctx, op, "g", g) || !conv_params(ctx, op, o, &p))
        return NULL;
    int64_t oh = 0, ow = 0;
    if (r >= 1 && s >= 1 && !conv_out2(ctx, op, x->shape[2], x->shape[3], r, s, &p, &oh, &ow))
        return NULL;
    if (g->shape[0] != x->shape[0] || r < 1 || s < 1 || x->shape[1] < 1 || oh != g->shape[2] ||
        ow != g->shape[3])
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "%s: input %s and gradient %s do not fit a %lldx%lld kernel", op,
                        tg_shape_str(x, sx, sizeof sx), tg_shape_str(g, sg, sizeof sg),
                        (long long)r, (long long)s),
               NULL;
    p.ints[CV_SIZE] = r;
    p.ints[CV_SIZE + 1] = s;
    int64_t shape[4] = {g->shape[1], x->shape[1], r, s};
    tg_tensor *out = tg__new(ctx, x->dtype, 4, shape, false);
    tg_tensor *ws = out ? workspace(ctx, op, x->dtype, x->shape[1], r, s, g->shape[1],
                                    g->shape[0], g->shape[2], g->shape[3])
                        : NULL;
    return conv_run(ctx, TG_OP_CONV2D_BACKWARD_WEIGHT, &p, out, 2, ins, ws);
}

tg_status tg__bw_conv2d(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    tg_tensor *x = r->in[0], *w = r->in[1];
    tg_conv2d_opts o = opts_of(&r->p);
    if (x->requires_grad &&
        !(gin[0] = tg_conv2d_backward_input(ctx, g, w, &o, x->shape[2], x->shape[3])))
        return ctx->status;
    if (w->requires_grad &&
        !(gin[1] = tg_conv2d_backward_weight(ctx, x, g, &o, w->shape[2], w->shape[3])))
        return ctx->status;
    if (r->nin == 3 && r->in[2]->requires_grad &&
        !(gin[2] = tg_sum(ctx, g, 3, (const int[]){0, 2, 3}, false)))
        return ctx->status;
    return TG_OK;
}

tg_status tg__bw_conv2d_backward_input(tg_ctx *ctx, const tg__rec *r, tg_tensor *v,
                                       tg_tensor **gin)
{
    tg_tensor *g = r->in[0], *w = r->in[1];
    tg_conv2d_opts o = opts_of(&r->p);
    if (g->requires_grad && !(gin[0] = tg_conv2d(ctx, v, w, NULL, &o)))
        return ctx->status;
    if (w->requires_grad &&
        !(gin[1] = tg_conv2d_backward_weight(ctx, v, g, &o, w->shape[2], w->shape[3])))
        return ctx->status;
    return TG_OK;
}

tg_status tg__bw_conv2d_backward_weight(tg_ctx *ctx, const tg__rec *r, tg_tensor *v,
                                        tg_tensor **gin)
{
    tg_tensor *x = r->in[0], *g = r->in[1];
    tg_conv2d_opts o = opts_of(&r->p);
    if (x->requires_grad &&
        !(gin[0] = tg_conv2d_backward_input(ctx, g, v, &o, x->shape[2], x->shape[3])))
        return ctx->status;
    if (g->requires_grad && !(gin[1] = tg_conv2d(ctx, x, v, NULL, &o)))
        return ctx->status;
    return TG_OK;
}

/* ---- pooling ---- */

enum { PL_KERNEL = 0, PL_STRIDE = 2, PL_PAD = 4 };

static bool pool_params(tg_ctx *ctx, const char *op, const int kernel[2], const int stride[2],
                        const int pad[2], tg_op_params *p)
{
    if (!kernel) {
        tg__fail(ctx, TG_ERR_INVALID, "%s: NULL kernel size", op);
        return false;
    }
    for (int i = 0; i < 2; i++) {
        int k = kernel[i], s = stride && stride[i] ? stride[i] : kernel[i], pd = pad ? pad[i] : 0;
        if (k < 1 || s < 1 || pd < 0 || 2 * pd > k) {
            tg__fail(ctx, TG_ERR_INVALID,
                     "%s: kernel %d, stride %d, pad %d in dim %d: expected kernel >= 1, stride "
                     ">= 1 (0 = kernel) and 0 <= pad <= kernel / 2",
                     op, k, s, pd, i);
            return false;
        }
        p->ints[PL_KERNEL + i] = k;
        p->ints[PL_STRIDE + i] = s;
        p->ints[PL_PAD + i] = pd;
    }
    return true;
}

/* Output size along one dim, -1 when the window does not fit; -2 when the
 * padded input overflows an int64_t. */
static int64_t pool_out(int64_t in, const tg_op_params *p, int i)
{
    int64_t padded;
    if (!tg__add_i64(in, 2 * p->ints[PL_PAD + i], &padded))
        return -2;
    return padded < p->ints[PL_KERNEL + i]
               ? -1
               : (padded - p->ints[PL_KERNEL + i]) / p->ints[PL_STRIDE + i] + 1;
}

/* Checks x and fills p; writes the output shape. */
static bool pool_setup(tg_ctx *ctx, const char *op, tg_tensor *x, const int kernel[2],
                       const int stride[2], const int pad[2], tg_op_params *p, int64_t *shape)
{
    char s[96];
    if (!tg__check_args(ctx, op, 1, &x) || !tg__check_float(ctx, op, x) ||
        !check4(ctx, op, "x", x) || !pool_params(ctx, op, kernel, stride, pad, p))
        return false;
    shape[0] = x->shape[0];
    shape[1] = x->shape[1];
    shape[2] = pool_out(x->shape[2], p, 0);
    shape[3] = pool_out(x->shape[3], p, 1);
    if (shape[2] == -2 || shape[3] == -2) {
        tg__fail(ctx, TG_ERR_SHAPE, "%s: input %s with pad (%lld, %lld): the padded input "
                 "overflows an int64_t", op, tg_shape_str(x, s, sizeof s),
                 (long long)p->ints[PL_PAD], (long long)p->ints[PL_PAD + 1]);
        return false;
    }
    if (shape[2] < 1 || shape[3] < 1) {
        tg__fail(ctx, TG_ERR_SHAPE, "%s: a %lldx%lld window does not fit the padded input %s", op,
                 (long long)p->ints[PL_KERNEL], (long long)p->ints[PL_KERNEL + 1],
                 tg_shape_str(x, s, sizeof s));
        return false;
    }
    return true;
}

tg_tensor *tg_max_pool2d(tg_ctx *ctx, tg_tensor *x, const int kernel[2], const int stride[2],
                         const int pad[2])
{
    tg_op_params p = {0};
    int64_t shape[4];
    if (!pool_setup(ctx, "max_pool2d", x, kernel, stride, pad, &p, shape))
        return NULL;
    return tg__apply(ctx, TG_OP_MAX_POOL2D, &p, tg__new(ctx, x->dtype, 4, shape, false), 1, &x,
                     1u);
}

tg_tensor *tg_max_pool2d_indices(tg_ctx *ctx, tg_tensor *x, const int kernel[2],
                                 const int stride[2], const int pad[2])
{
    tg_op_params p = {0};
    int64_t shape[4];
    if (!pool_setup(ctx, "max_pool2d_indices", x, kernel, stride, pad, &p, shape))
        return NULL;
    return tg__apply(ctx, TG_OP_MAX_POOL2D_INDICES, &p, tg__new(ctx, TG_I64, 4, shape, false), 1,
                     &x, 0);
}

static void pool_args(const tg_op_params *p, int k[2], int s[2], int pd[2])
{
    for (int i = 0; i < 2; i++) {
        k[i] = (int)p->ints[PL_KERNEL + i];
        s[i] = (int)p->ints[PL_STRIDE + i];
        pd[i] = (int)p->ints[PL_PAD + i];
    }
}

tg_tensor *tg_max_pool2d_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x, const int kernel[2],
                                  const int stride[2], const int pad[2])
{
    const char *op = "max_pool2d_backward";
    char sg[96], sx[96];
    tg_op_params p = {0};
    int64_t shape[4];
    tg_tensor *ins[2] = {g, x};
    if (!tg__check_args(ctx, op, 2, ins) ||
        !pool_setup(ctx, op, x, kernel, stride, pad, &p, shape) ||
        !tg__check_same_dtype(ctx, op, x, g) || !check4(ctx, op, "g", g))
        return NULL;
    for (int d = 0; d < 4; d++)
        if (g->shape[d] != shape[d])
            return tg__fail(ctx, TG_ERR_SHAPE,
                            "%s: gradient %s must have max_pool2d's output shape "
                            "(%lld, %lld, %lld, %lld) for input %s",
                            op, tg_shape_str(g, sg, sizeof sg), (long long)shape[0],
                            (long long)shape[1], (long long)shape[2], (long long)shape[3],
                            tg_shape_str(x, sx, sizeof sx)),
                   NULL;
    return tg__apply(ctx, TG_OP_MAX_POOL2D_BACKWARD, &p,
                     tg__new(ctx, x->dtype, 4, x->shape, false), 2, ins, 0);
}

/* The gradient goes to the first maximum of each window. Without
 * create_graph (every training step) the fused row does it in one pass.
 * Under create_graph g is scattered through the indices into each (H*W)
 * plane instead: scatter_add's own backward (gather) keeps second
 * derivatives correct; the gradient with respect to x through the choice of
 * the maximum is zero almost everywhere. */
tg_status tg__bw_max_pool2d(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    tg_tensor *x = r->in[0];
    int k[2], s[2], pd[2];
    pool_args(&r->p, k, s, pd);
    if (!ctx->grad_enabled) {
        gin[0] = tg_max_pool2d_backward(ctx, g, x, k, s, pd);
        return gin[0] ? TG_OK : ctx->status;
    }
    tg_tensor *idx = tg_max_pool2d_indices(ctx, x, k, s, pd);
    if (!idx)
        return ctx->status;
    int64_t n = x->shape[0], c = x->shape[1];
    int64_t gs[3] = {n, c, g->shape[2] * g->shape[3]}, xs[3] = {n, c, x->shape[2] * x->shape[3]};
    tg_tensor *sc = tg_scatter_add(ctx, tg_reshape(ctx, g, 3, gs), 2, tg_reshape(ctx, idx, 3, gs),
                                   3, xs);
    gin[0] = tg_reshape(ctx, sc, 4, x->shape);
    return gin[0] ? TG_OK : ctx->status;
}

/* Never recorded (no TG_OPF_DIFF), so never called. */
tg_status tg__bw_max_pool2d_indices(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    (void)r, (void)g, (void)gin;
    return tg__fail(ctx, TG_ERR_AUTOGRAD, "max_pool2d_indices: not differentiable");
}

/* Never recorded (no TG_OPF_DIFF), so never called. */
tg_status tg__bw_max_pool2d_backward(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    (void)r, (void)g, (void)gin;
    return tg__fail(ctx, TG_ERR_AUTOGRAD,
                    "max_pool2d_backward: no second derivative (max_pool2d's backward rule "
                    "scatters through max_pool2d_indices under create_graph)");
}

tg_tensor *tg_avg_pool2d(tg_ctx *ctx, tg_tensor *x, const int kernel[2], const int stride[2],
                         const int pad[2])
{
    tg_op_params p = {0};
    int64_t shape[4];
    if (!pool_setup(ctx, "avg_pool2d", x, kernel, stride, pad, &p, shape))
        return NULL;
    p.ints[6] = x->shape[2];
    p.ints[7] = x->shape[3];
    return tg__apply(ctx, TG_OP_AVG_POOL2D, &p, tg__new(ctx, x->dtype, 4, shape, false), 1, &x,
                     0);
}

tg_tensor *tg_avg_pool2d_backward(tg_ctx *ctx, tg_tensor *g, const int kernel[2],
                                  const int stride[2], const int pad[2], int64_t h, int64_t w)
{
    const char *op = "avg_pool2d_backward";
    char s[96];
    tg_op_params p = {0};
    if (!tg__check_args(ctx, op, 1, &g) || !tg__check_float(ctx, op, g) ||
        !check4(ctx, op, "g", g) || !pool_params(ctx, op, kernel, stride, pad, &p))
        return NULL;
    if (h < 1 || w < 1 || pool_out(h, &p, 0) != g->shape[2] || pool_out(w, &p, 1) != g->shape[3])
        return tg__fail(ctx, TG_ERR_SHAPE, "%s: gradient %s does not fit an input of %lldx%lld",
                        op, tg_shape_str(g, s, sizeof s), (long long)h, (long long)w),
               NULL;
    p.ints[6] = h;
    p.ints[7] = w;
    int64_t shape[4] = {g->shape[0], g->shape[1], h, w};
    return tg__apply(ctx, TG_OP_AVG_POOL2D_BACKWARD, &p, tg__new(ctx, g->dtype, 4, shape, false),
                     1, &g, 0);
}

/* The two rows are adjoint: each one's gradient is the other. */
tg_status tg__bw_avg_pool2d(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    int k[2], s[2], pd[2];
    pool_args(&r->p, k, s, pd);
    gin[0] = tg_avg_pool2d_backward(ctx, g, k, s, pd, r->p.ints[6], r->p.ints[7]);
    return gin[0] ? TG_OK : ctx->status;
}

tg_status tg__bw_avg_pool2d_backward(tg_ctx *ctx, const tg__rec *r, tg_tensor *g, tg_tensor **gin)
{
    int k[2], s[2], pd[2];
    pool_args(&r->p, k, s, pd);
    gin[0] = tg_avg_pool2d(ctx, g, k, s, pd);
    return gin[0] ? TG_OK : ctx->status;
}
