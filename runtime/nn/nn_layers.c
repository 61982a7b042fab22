/*
 * Layers (nn.h): init functions with PyTorch's default initialisation and
 * forward functions built from op rows, so autograd needs nothing more.
 *
 * BatchNorm in training mode is the fused batch_norm row (runtime/core/ops_norm.c),
 * which keeps only x and per-channel statistics for backward; in eval mode
 * it is an affine map built from elementwise rows. With `sync` set
 * (SyncBatchNorm) training mode takes its statistics over every rank, built
 * from reduction, elementwise and world_sum rows. LayerNorm is the
 * fused layer_norm row (runtime/core/ops_lnorm.c), which keeps only x and
 * per-row statistics for backward.
 */
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define SHAPE_OF(t) (t)->ndim, (t)->shape

/* The dtype of a layer's tensors: its list's (f32 without a list). */
#define LAYER_DT(ps) ((ps) ? (ps)->dtype : TG_F32)

static tg_status bad(tg_ctx *ctx, const char *op, const char *what)
{
    return tg__fail(ctx, TG_ERR_INVALID, "%s: %s", op, what);
}

/* ---- Linear ---- */

tg_status tg_linear_init(tg_ctx *ctx, tg_linear *l, tg_params *ps, const char *name, int64_t in,
                         int64_t out, bool bias, tg_rng *rng)
{
    if (!l || !rng)
        return bad(ctx, "linear_init", "NULL layer or rng");
    if (in < 1 || out < 1)
        return tg__fail(ctx, TG_ERR_SHAPE, "linear_init %s: sizes in %lld, out %lld must be >= 1",
                        name ? name : "", (long long)in, (long long)out);
    memset(l, 0, sizeof *l);
    int64_t ws[2] = {out, in};
    l->weight = tg__nn_tensor(ctx, ps, name, "weight", true, LAYER_DT(ps), 2, ws);
    if (!l->weight)
        return ctx->status;
    /* torch.nn.Linear.reset_parameters: kaiming_uniform_(a = sqrt(5)), which
     * is U(-1/sqrt(in), 1/sqrt(in)), and the bias from the same bound. */
    tg_status s = tg_init_kaiming_uniform(ctx, l->weight, sqrt(5.0), rng);
    if (s || !bias)
        return s;
    l->bias = tg__nn_tensor(ctx, ps, name, "bias", true, LAYER_DT(ps), 1, &out);
    if (!l->bias)
        return ctx->status;
    double bound = 1.0 / sqrt((double)in);
    return tg_init_uniform(ctx, l->bias, -bound, bound, rng);
}

tg_tensor *tg_linear_forward(tg_ctx *ctx, const tg_linear *l, tg_tensor *x)
{
    char sx[96], sw[96];
    if (!l || !l->weight)
        return bad(ctx, "linear", "NULL layer or weight"), NULL;
    if (!tg__check_args(ctx, "linear", 1, &x))
        return NULL;
    if (x->ndim < 1 || x->shape[x->ndim - 1] != l->weight->shape[1])
        return tg__fail(ctx, TG_ERR_SHAPE, "linear: input %s does not end in %lld (weight %s)",
                        tg_shape_str(x, sx, sizeof sx), (long long)l->weight->shape[1],
                        tg_shape_str(l->weight, sw, sizeof sw)),
               NULL;
    /* The transposed weight is a view: gemm reads it as it lies. */
    tg_tensor *y = tg_matmul(ctx, x, tg_transpose(ctx, l->weight, 0, 1));
    /* The bias is added into the product itself: one (..., out) tensor. */
    return l->bias ? tg__add_into_new(ctx, y, l->bias) : y;
}

/* ---- Conv2d ---- */

tg_status tg_conv2d_init(tg_ctx *ctx, tg_conv2d_layer *l, tg_params *ps, const char *name,
                         int64_t in, int64_t out, const int kernel[2], const tg_conv2d_opts *o,
                         bool bias, tg_rng *rng)
{
    if (!l || !rng || !kernel)
        return bad(ctx, "conv2d_init", "NULL layer, kernel size or rng");
    if (in < 1 || out < 1 || kernel[0] < 1 || kernel[1] < 1)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "conv2d_init %s: in %lld, out %lld, kernel %dx%d must all be >= 1",
                        name ? name : "", (long long)in, (long long)out, kernel[0], kernel[1]);
    memset(l, 0, sizeof *l);
    if (o)
        l->opts = *o;
    else
        l->opts = (tg_conv2d_opts){{1, 1}, {0, 0}, {1, 1}};
    int64_t ws[4] = {out, in, kernel[0], kernel[1]};
    l->weight = tg__nn_tensor(ctx, ps, name, "weight", true, LAYER_DT(ps), 4, ws);
    if (!l->weight)
        return ctx->status;
    /* torch.nn.Conv2d.reset_parameters: as Linear, with fan_in = in*kh*kw. */
    tg_status s = tg_init_kaiming_uniform(ctx, l->weight, sqrt(5.0), rng);
    if (s || !bias)
        return s;
    l->bias = tg__nn_tensor(ctx, ps, name, "bias", true, LAYER_DT(ps), 1, &out);
    if (!l->bias)
        return ctx->status;
    double bound = 1.0 / sqrt((double)(in * kernel[0] * kernel[1]));
    return tg_init_uniform(ctx, l->bias, -bound, bound, rng);
}

tg_tensor *tg_conv2d_forward(tg_ctx *ctx, const tg_conv2d_layer *l, tg_tensor *x)
{
    if (!l || !l->weight)
        return bad(ctx, "conv2d", "NULL layer or weight"), NULL;
    int64_t g = l->groups > 1 ? l->groups : 1;
    if (g == 1)
        return tg_conv2d(ctx, x, l->weight, l->bias, &l->opts);
    int64_t cin = l->weight->shape[1], cout = l->weight->shape[0] / g;
    if (!tg__check_args(ctx, "conv2d", 1, &x))
        return NULL;
    if (x->ndim != 4 || x->shape[1] != g * cin || l->weight->shape[0] % g != 0)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "conv2d: %lld groups of %lld input channels need (N, %lld, H, W) and "
                        "a multiple of %lld outputs",
                        (long long)g, (long long)cin, (long long)(g * cin), (long long)g),
               NULL;
    /* A group's input, weight and bias are slices (views): the gradients of
     * the g convolutions land in disjoint parts of the weight's gradient. */
    tg_tensor *parts[TG_CONV_GROUPS_MAX];
    if (g > TG_CONV_GROUPS_MAX)
        return tg__fail(ctx, TG_ERR_UNSUPPORTED, "conv2d: %lld groups (at most %d)",
                        (long long)g, TG_CONV_GROUPS_MAX),
               NULL;
    for (int64_t i = 0; i < g; i++) {
        tg_tensor *xi = tg_slice(ctx, x, 1, i * cin, (i + 1) * cin, 1);
        tg_tensor *wi = tg_slice(ctx, l->weight, 0, i * cout, (i + 1) * cout, 1);
        tg_tensor *bi = l->bias ? tg_slice(ctx, l->bias, 0, i * cout, (i + 1) * cout, 1) : NULL;
        parts[i] = tg_conv2d(ctx, xi, wi, bi, &l->opts);
        if (!parts[i])
            return NULL;
    }
    return tg_concat(ctx, (int)g, parts, 1);
}

/* ---- BatchNorm ---- */

tg_status tg_batchnorm_init(tg_ctx *ctx, tg_batchnorm *bn, tg_params *ps, const char *name,
                            int64_t channels, double eps, double momentum)
{
    if (!bn)
        return bad(ctx, "batchnorm_init", "NULL layer");
    if (channels < 1 || !(eps > 0) || !(momentum >= 0 && momentum <= 1))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "batchnorm_init %s: channels %lld must be >= 1, eps %g > 0 and momentum "
                        "%g in [0, 1]",
                        name ? name : "", (long long)channels, eps, momentum);
    memset(bn, 0, sizeof *bn);
    bn->eps = eps;
    bn->momentum = momentum;
    bn->weight = tg__nn_tensor(ctx, ps, name, "weight", true, LAYER_DT(ps), 1, &channels);
    bn->bias = bn->weight ? tg__nn_tensor(ctx, ps, name, "bias", true, LAYER_DT(ps), 1, &channels) : NULL;
    bn->running_mean =
        bn->bias ? tg__nn_tensor(ctx, ps, name, "running_mean", false, LAYER_DT(ps), 1, &channels) : NULL;
    bn->running_var = bn->running_mean ? tg__nn_tensor(ctx, ps, name, "running_var", false, LAYER_DT(ps),
                                                       1, &channels)
                                       : NULL;
    bn->num_batches_tracked =
        bn->running_var ? tg__nn_tensor(ctx, ps, name, "num_batches_tracked", false, TG_I64, 0, NULL)
                        : NULL;
    if (!bn->num_batches_tracked)
        return ctx->status;
    /* weight 1, bias 0, running mean 0, running variance 1 (tensors start
     * zero-filled). */
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_status s = tg_fill_(ctx, bn->weight, 1.0);
    if (!s)
        s = tg_fill_(ctx, bn->running_var, 1.0);
    tg_set_grad_enabled(ctx, prev);
    return s;
}

/* The running averages: r = (1 - m) r + m * batch, with the batch variance
 * made unbiased (times n / (n - 1)), and num_batches_tracked + 1. */
static tg_status bn_update(tg_ctx *ctx, tg_batchnorm *bn, tg_tensor *mean, tg_tensor *var,
                           int64_t count)
{
    int64_t c = bn->running_mean->shape[0];
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_tensor *m = tg_reshape(ctx, mean, 1, &c), *v = tg_reshape(ctx, var, 1, &c);
    double mo = bn->momentum;
    tg_status s = m && v ? TG_OK : ctx->status;
    if (!s)
        s = tg_mul_scalar_(ctx, bn->running_mean, 1.0 - mo);
    if (!s)
        s = tg_axpy_(ctx, bn->running_mean, mo, m);
    if (!s)
        s = tg_mul_scalar_(ctx, bn->running_var, 1.0 - mo);
    if (!s)
        s = tg_axpy_(ctx, bn->running_var, mo * (double)count / (double)(count - 1), v);
    double nbt = 0;
    if (!s)
        s = tg_item(ctx, bn->num_batches_tracked, &nbt);
    if (!s) {
        int64_t n = (int64_t)nbt + 1;
        s = tg_copy_from_host(ctx, bn->num_batches_tracked, &n, sizeof n);
    }
    tg_set_grad_enabled(ctx, prev);
    return s;
}

/*
 * SyncBatchNorm: the batch statistics of every rank's part of the global
 * batch (tg_world_sum, the identity on a world of one). Two sums cross the
 * ranks: the per-channel sums with the element count, then the squared
 * deviations from the global mean (two passes, as the fused row makes, so
 * the variance has no cancellation). Built from op rows, so backward crosses
 * the ranks through world_sum's own rule: the sums of g and g * xhat over
 * the global batch, as PyTorch's SyncBatchNorm all-reduces them. Every rank
 * must run it in the same order; a rank may hold a single sample.
 */
static tg_tensor *bn_sync_forward(tg_ctx *ctx, tg_batchnorm *bn, tg_tensor *x)
{
    char sx[96];
    const int axes[3] = {0, 2, 3};
    const int nax = x->ndim == 4 ? 3 : 1;
    int64_t c = bn->weight->shape[0], one = 1, pshape[4] = {1, c, 1, 1};
    tg_tensor *parts[2] = {tg_sum(ctx, x, nax, axes, false),
                           tg_full(ctx, x->dtype, 1, &one, (double)(tg_numel(x) / c))};
    tg_tensor *tot = parts[0] && parts[1] ? tg_world_sum(ctx, tg_concat(ctx, 2, parts, 0)) : NULL;
    double m = 0;
    if (!tot || tg_item(ctx, tg_slice(ctx, tot, 0, c, c + 1, 1), &m) != TG_OK)
        return NULL;
    if (m < 2)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "batchnorm (sync): training needs more than 1 value per channel over "
                        "all %d ranks, input %s",
                        tg_collective_size(ctx), tg_shape_str(x, sx, sizeof sx)),
               NULL;
    tg_tensor *mean = tg_mul_scalar(ctx, tg_slice(ctx, tot, 0, 0, c, 1), 1.0 / m);
    tg_tensor *xc = tg_sub(ctx, x, tg_reshape(ctx, mean, x->ndim, pshape));
    tg_tensor *var =
        tg_mul_scalar(ctx, tg_world_sum(ctx, tg_sum(ctx, tg_mul(ctx, xc, xc), nax, axes, false)),
                      1.0 / m);
    tg_tensor *scale = tg_mul(ctx, tg_pow_scalar(ctx, tg_add_scalar(ctx, var, bn->eps), -0.5),
                              bn->weight);
    tg_tensor *y = tg_add(ctx, tg_mul(ctx, xc, tg_reshape(ctx, scale, x->ndim, pshape)),
                          tg_reshape(ctx, bn->bias, x->ndim, pshape));
    if (!y || bn_update(ctx, bn, mean, var, (int64_t)m) != TG_OK)
        return NULL;
    return y;
}

tg_tensor *tg_batchnorm_forward(tg_ctx *ctx, tg_batchnorm *bn, tg_tensor *x, bool training)
{
    char sx[96];
    if (!bn || !bn->weight || !bn->running_mean)
        return bad(ctx, "batchnorm", "NULL or uninitialised layer"), NULL;
    if (!tg__check_args(ctx, "batchnorm", 1, &x) || !tg__check_float(ctx, "batchnorm", x) ||
        !tg__check_same_dtype(ctx, "batchnorm", x, bn->weight))
        return NULL;
    int64_t c = bn->weight->shape[0];
    if ((x->ndim != 2 && x->ndim != 4) || x->shape[1] != c)
        return tg__fail(ctx, TG_ERR_SHAPE, "batchnorm: input %s, expected (N, %lld) or (N, %lld, "
                                           "H, W)",
                        tg_shape_str(x, sx, sizeof sx), (long long)c, (long long)c),
               NULL;
    int64_t pshape[4] = {1, c, 1, 1};
    if (!training) {
        tg_tensor *w = tg_reshape(ctx, bn->weight, x->ndim, pshape);
        tg_tensor *b = tg_reshape(ctx, bn->bias, x->ndim, pshape);
        tg_tensor *rm = tg_reshape(ctx, bn->running_mean, x->ndim, pshape);
        tg_tensor *rv = tg_reshape(ctx, bn->running_var, x->ndim, pshape);
        tg_tensor *scale = tg_mul(ctx, w, tg_pow_scalar(ctx, tg_add_scalar(ctx, rv, bn->eps), -0.5));
        tg_tensor *shift = tg_sub(ctx, b, tg_mul(ctx, rm, scale));
        return tg_add(ctx, tg_mul(ctx, x, scale), shift);
    }
    if (bn->sync)
        return bn_sync_forward(ctx, bn, x);
    int64_t count = tg_numel(x) / c;
    if (count < 2)
        return tg__fail(ctx, TG_ERR_SHAPE,
                        "batchnorm: training needs more than 1 value per channel, input %s",
                        tg_shape_str(x, sx, sizeof sx)),
               NULL;
    tg_tensor *stats = NULL;
    tg_tensor *y = tg_batch_norm(ctx, x, bn->weight, bn->bias, bn->eps, &stats);
    if (!y)
        return NULL;
    /* stats rows: mean, invstd, biased variance. */
    tg_tensor *mean = tg_slice(ctx, stats, 0, 0, 1, 1), *var = tg_slice(ctx, stats, 0, 2, 3, 1);
    if (!mean || !var || bn_update(ctx, bn, mean, var, count) != TG_OK)
        return NULL;
    return y;
}

/* ---- LayerNorm ---- */

tg_status tg_layernorm_init(tg_ctx *ctx, tg_layernorm *ln, tg_params *ps, const char *name, int ndim,
                            const int64_t *shape, double eps)
{
    if (!ln || !shape)
        return bad(ctx, "layernorm_init", "NULL layer or shape");
    if (ndim < 1 || ndim > TG_MAX_DIMS || !(eps > 0))
        return tg__fail(ctx, TG_ERR_INVALID, "layernorm_init %s: ndim %d must be in [1, %d], eps "
                                             "%g > 0",
                        name ? name : "", ndim, TG_MAX_DIMS, eps);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 1)
            return tg__fail(ctx, TG_ERR_SHAPE, "layernorm_init %s: size %lld in dim %d",
                            name ? name : "", (long long)shape[d], d);
    memset(ln, 0, sizeof *ln);
    ln->ndim = ndim;
    ln->eps = eps;
    ln->weight = tg__nn_tensor(ctx, ps, name, "weight", true, LAYER_DT(ps), ndim, shape);
    ln->bias = ln->weight ? tg__nn_tensor(ctx, ps, name, "bias", true, LAYER_DT(ps), ndim, shape) : NULL;
    if (!ln->bias)
        return ctx->status;
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_status s = tg_fill_(ctx, ln->weight, 1.0);
    tg_set_grad_enabled(ctx, prev);
    return s;
}

tg_tensor *tg_layernorm_forward(tg_ctx *ctx, const tg_layernorm *ln, tg_tensor *x)
{
    char sx[96], sw[96];
    if (!ln || !ln->weight)
        return bad(ctx, "layernorm", "NULL or uninitialised layer"), NULL;
    if (!tg__check_args(ctx, "layernorm", 1, &x) || !tg__check_float(ctx, "layernorm", x) ||
        !tg__check_same_dtype(ctx, "layernorm", x, ln->weight))
        return NULL;
    bool ok = x->ndim >= ln->ndim;
    for (int d = 0; ok && d < ln->ndim; d++)
        ok = x->shape[x->ndim - ln->ndim + d] == ln->weight->shape[d];
    if (!ok)
        return tg__fail(ctx, TG_ERR_SHAPE, "layernorm: input %s does not end in %s",
                        tg_shape_str(x, sx, sizeof sx), tg_shape_str(ln->weight, sw, sizeof sw)),
               NULL;
    return tg_layer_norm(ctx, x, ln->ndim, ln->weight, ln->bias, ln->eps);
}

/* ---- Embedding ---- */

tg_status tg_embedding_init(tg_ctx *ctx, tg_embedding *e, tg_params *ps, const char *name,
                            int64_t num, int64_t dim, tg_rng *rng)
{
    if (!e || !rng)
        return bad(ctx, "embedding_init", "NULL layer or rng");
    if (num < 1 || dim < 1)
        return tg__fail(ctx, TG_ERR_SHAPE, "embedding_init %s: num %lld and dim %lld must be >= 1",
                        name ? name : "", (long long)num, (long long)dim);
    memset(e, 0, sizeof *e);
    int64_t shape[2] = {num, dim};
    e->weight = tg__nn_tensor(ctx, ps, name, "weight", true, LAYER_DT(ps), 2, shape);
    if (!e->weight)
        return ctx->status;
    if (ps)
        ps->no_decay[ps->nparams - 1] = true; /* a table, not a matrix */
    /* torch.nn.Embedding.reset_parameters: N(0, 1). */
    return tg_init_normal(ctx, e->weight, 0.0, 1.0, rng);
}

/* A gather along dim 0 of the weight with the indices broadcast over the
 * columns (a stride-0 view, no copy); its gradient is scatter_add. */
tg_tensor *tg_embedding_forward(tg_ctx *ctx, const tg_embedding *e, tg_tensor *indices)
{
    if (!e || !e->weight)
        return bad(ctx, "embedding", "NULL or uninitialised layer"), NULL;
    if (!tg__check_args(ctx, "embedding", 1, &indices))
        return NULL;
    if (indices->dtype != TG_U8 && indices->dtype != TG_I32 && indices->dtype != TG_I64)
        return tg__fail(ctx, TG_ERR_DTYPE,
                        "embedding: indices must be an integer tensor (u8, i32, i64), got %s",
                        tg_dtype_name(indices->dtype)),
               NULL;
    if (indices->ndim + 1 > TG_MAX_DIMS)
        return tg__fail(ctx, TG_ERR_SHAPE, "embedding: indices have too many dims (%d)",
                        indices->ndim),
               NULL;
    int64_t m = tg_numel(indices), dim = e->weight->shape[1];
    int64_t col[2] = {m, 1}, full[2] = {m, dim}, out[TG_MAX_DIMS];
    tg_tensor *idx = tg_broadcast_to(ctx, tg_reshape(ctx, indices, 2, col), 2, full);
    tg_tensor *rows = tg_gather(ctx, e->weight, 0, idx);
    for (int d = 0; d < indices->ndim; d++)
        out[d] = indices->shape[d];
    out[indices->ndim] = dim;
    return tg_reshape(ctx, rows, indices->ndim + 1, out);
}
