/*
 * tapegrad/nn.h: layers, losses and parameter initialisation.
 *
 * Overview
 * --------
 * A layer is a plain struct that holds its parameter and buffer tensors
 * (persistent tensors of the context) and its hyper-parameters. Each layer has
 * an init function that allocates and initialises its tensors the way
 * PyTorch's default initialisation does, registers them in a tg_params list
 * under dotted names ("conv1.weight", "bn1.running_mean", as PyTorch's
 * state_dict names them), and a forward function built from the ops of the
 * op table (or from a fused op with its own row), so that autograd needs
 * nothing more.
 *
 *     tg_params ps = {0};
 *     tg_rng rng = tg_rng_make(seed, 0);
 *     tg_linear fc;
 *     tg_status s = tg_linear_init(ctx, &fc, &ps, "fc1", 784, 256, true, &rng);
 *     tg_tensor *y = tg_linear_forward(ctx, &fc, x);      // x: (N, 784)
 *     tg_tensor *l = tg_cross_entropy(ctx, y, labels, 0.0);
 *
 * Ownership: all tensors belong to the context; tg_params only lists them
 * (it allocates nothing and needs no free). Names passed as prefixes are
 * copied into the context's persistent pool.
 *
 * Errors: init functions return a tg_status; forward functions and losses
 * return NULL with the error in the context, like every op.
 */
#ifndef TAPEGRAD_NN_H
#define TAPEGRAD_NN_H

#include "tapegrad/rng.h"
#include "tapegrad/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most tensors one tg_params list holds. */
#define TG_PARAMS_MAX 256

/*
 * The tensors of a model in registration order. params are the trainable
 * tensors (requires_grad); buffers are the persistent state that is not
 * trained (running statistics). Both are saved in checkpoints and broadcast
 * at start in data-parallel runs. Every tensor has a unique ->name.
 */
typedef struct tg_params {
    int nparams;
    tg_tensor *params[TG_PARAMS_MAX];
    int nbuffers;
    tg_tensor *buffers[TG_PARAMS_MAX];
    /* The float dtype the layer inits below make their tensors in: TG_F32
     * (the zero value, so `tg_params ps = {0}` gives f32 layers) or TG_F64
     * (torch's nn.Linear(..., dtype=torch.float64): gradient checks,
     * scientific models). Set it before the inits. A layer given no list
     * is f32. */
    tg_dtype dtype;
    /* no_decay[i]: params[i] is exempt from weight decay under the rule of
     * nanoGPT and llm.c (decay the matrices only): set for every parameter
     * of fewer than 2 dims (biases, norm weights) and for embedding tables.
     * The optimizer applies it when given (tg_optim_config.no_decay). */
    bool no_decay[TG_PARAMS_MAX];
} tg_params;

/* Number of scalars in the trainable parameters. */
int64_t tg_params_numel(const tg_params *ps);

/* ---- initialisation (in place, from a counter-based stream) ---- */

/* U(-bound, bound) with bound = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)),
 * as torch.nn.init.kaiming_uniform_(mode="fan_in", nonlinearity="leaky_relu"). */
tg_status tg_init_kaiming_uniform(tg_ctx *ctx, tg_tensor *t, double a, tg_rng *rng);
tg_status tg_init_kaiming_normal(tg_ctx *ctx, tg_tensor *t, double a, tg_rng *rng);
tg_status tg_init_xavier_uniform(tg_ctx *ctx, tg_tensor *t, double gain, tg_rng *rng);
tg_status tg_init_xavier_normal(tg_ctx *ctx, tg_tensor *t, double gain, tg_rng *rng);
tg_status tg_init_uniform(tg_ctx *ctx, tg_tensor *t, double lo, double hi, tg_rng *rng);
tg_status tg_init_normal(tg_ctx *ctx, tg_tensor *t, double mean, double std, tg_rng *rng);

/* ---- fused ops of the op table used by the layers ---- */

/* 2-D convolution, NCHW: x (N, C, H, W), w (K, C, R, S), b (K) or NULL.
 * stride, pad and dilation are {h, w}; groups = 1. */
typedef struct tg_conv2d_opts {
    int stride[2];
    int pad[2];
    int dilation[2];
} tg_conv2d_opts;
tg_tensor *tg_conv2d(tg_ctx *ctx, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                     const tg_conv2d_opts *o);
/* The gradients of conv2d as ops of their own (conv2d's backward rule uses
 * them; each is differentiable, so create_graph works through convolutions).
 * backward_input: g (N, K, OH, OW), w (K, C, R, S) -> (N, C, h, w);
 * backward_weight: x (N, C, H, W), g (N, K, OH, OW) -> (K, C, r, s). */
tg_tensor *tg_conv2d_backward_input(tg_ctx *ctx, tg_tensor *g, tg_tensor *w,
                                    const tg_conv2d_opts *o, int64_t h, int64_t w_size);
tg_tensor *tg_conv2d_backward_weight(tg_ctx *ctx, tg_tensor *x, tg_tensor *g,
                                     const tg_conv2d_opts *o, int64_t r, int64_t s);
/* Pooling over NCHW windows kernel {h, w}, stride {h, w} (0 = kernel), pad {h, w}. */
tg_tensor *tg_max_pool2d(tg_ctx *ctx, tg_tensor *x, const int kernel[2], const int stride[2],
                         const int pad[2]);
tg_tensor *tg_avg_pool2d(tg_ctx *ctx, tg_tensor *x, const int kernel[2], const int stride[2],
                         const int pad[2]);
/* Pooling requires 0 <= pad <= kernel / 2 (as PyTorch); windows start at
 * -pad and the output size is floor((H + 2 pad - kernel) / stride) + 1. Max
 * pooling pads with -inf and sends the gradient to the first maximum of each
 * window in row-major order (ties: the earliest element wins, as PyTorch's
 * CPU kernel); average pooling counts the padding (count_include_pad, the
 * PyTorch default), so the divisor is always kernel[0] * kernel[1]. */
/* The (i64) flat index ih * W + iw of each window's maximum, as PyTorch's
 * return_indices; not differentiable. */
tg_tensor *tg_max_pool2d_indices(tg_ctx *ctx, tg_tensor *x, const int kernel[2],
                                 const int stride[2], const int pad[2]);
/* The gradient of tg_max_pool2d(x, kernel, stride, pad) for an incoming g
 * shaped like its output: dx shaped like x, each window's g at the window's
 * first maximum (the element tg_max_pool2d_indices names), summed where
 * windows overlap. One pass; not differentiable (the result never requires
 * grad; tg_max_pool2d's own backward rule stays differentiable under
 * create_graph). */
tg_tensor *tg_max_pool2d_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x, const int kernel[2],
                                  const int stride[2], const int pad[2]);
/* The gradient of avg_pool2d for an input of spatial size h x w (an op, the
 * adjoint of avg_pool2d). */
tg_tensor *tg_avg_pool2d_backward(tg_ctx *ctx, tg_tensor *g, const int kernel[2],
                                  const int stride[2], const int pad[2], int64_t h, int64_t w);
/* Batch norm in training mode over x (N, C) or (N, C, H, W) with weight and
 * bias (C): y = (x - mean) * invstd * weight + bias, per channel over every
 * dim but 1, with the biased variance and invstd = 1 / sqrt(var + eps). When
 * stats is not NULL it receives a (3, C) step tensor that never requires
 * grad: rows mean, invstd and the biased variance. Differentiable in x,
 * weight and bias to every order. */
tg_tensor *tg_batch_norm(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                         double eps, tg_tensor **stats);
/* Its gradient for an incoming g shaped like x, given the stats tg_batch_norm
 * returned for this x: dx, and (when not NULL) the weight and bias gradients
 * (C). Not differentiable: the results never require grad (tg_batch_norm's
 * own backward rule builds a differentiable gradient under create_graph). */
tg_tensor *tg_batch_norm_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x, tg_tensor *weight,
                                  tg_tensor *stats, tg_tensor **gweight, tg_tensor **gbias);
/* Layer norm over the last ndim dims of x, whose shape must be weight's
 * (weight->ndim == ndim) and bias's: y = (x - mean) * invstd * weight + bias
 * per row of those dims, with the biased variance and invstd = 1 / sqrt(var
 * + eps), as torch.nn.functional.layer_norm. One fused op: forward keeps
 * only x, the weight and per-row statistics for backward. Differentiable in
 * x, weight and bias to every order. */
tg_tensor *tg_layer_norm(tg_ctx *ctx, tg_tensor *x, int ndim, tg_tensor *weight, tg_tensor *bias,
                         double eps);
/* The same, and (when stats is not NULL) the (2, R) step tensor of the R
 * rows' mean and invstd, which never requires grad. */
tg_tensor *tg_layer_norm_stats(tg_ctx *ctx, tg_tensor *x, int ndim, tg_tensor *weight,
                               tg_tensor *bias, double eps, tg_tensor **stats);
/* Its gradient for an incoming g shaped like x, given the stats
 * tg_layer_norm_stats returned for this x: dx, and (when not NULL) the
 * weight and bias gradients (weight's shape). Not differentiable: the
 * results never require grad. */
tg_tensor *tg_layer_norm_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *x, int ndim,
                                  tg_tensor *weight, tg_tensor *stats, tg_tensor **gweight,
                                  tg_tensor **gbias);
/* Scaled dot-product attention, fused: softmax(q k^T / sqrt(D)) v with q
 * (..., T_q, D), k and v (..., T_k, D), at least 3 dims each, the leading
 * (batch, head) dims equal (no broadcasting), f32 or f64, every size > 0.
 * causal masks key j > query i (top-left aligned: torch's is_causal for
 * T_q == T_k, and torch.ones(T_q, T_k).tril() otherwise). Result (..., T_q,
 * D). Forward and backward run over tiles with an online softmax and keep
 * only a (..., T_q) log-sum-exp for backward, never the (T_q, T_k)
 * probabilities: memory grows linearly in T. Differentiable in q, k and v to
 * every order (under create_graph the gradient is built from composed ops).
 * Under autocast (tg_ctx_set_precision bf16, runtime.h) f32 operands are
 * rounded to bf16 for the products (q k^T and P v, and in the backward
 * dO v^T, P^T dO, dS k, dS^T q with P, dO and dS rounded too), summed in f32;
 * the softmax, the log-sum-exps and the results are f32. The backward
 * follows the precision set when it runs. (On the CPU, head dims above 128
 * run in f32.) */
tg_tensor *tg_scaled_dot_product_attention(tg_ctx *ctx, tg_tensor *q, tg_tensor *k, tg_tensor *v,
                                           bool causal);
/* The same, and (when lse is not NULL) the (..., T_q) step tensor of each
 * row's log-sum-exp of the scaled (masked) scores, which never requires
 * grad. */
tg_tensor *tg_scaled_dot_product_attention_lse(tg_ctx *ctx, tg_tensor *q, tg_tensor *k,
                                               tg_tensor *v, bool causal, tg_tensor **lse);
/* Its gradient for an incoming g shaped like the output o, given the o and
 * lse the forward returned for these q, k, v and causal: dq, and (when not
 * NULL) dk and dv. Not differentiable: the results never require grad. */
tg_tensor *tg_scaled_dot_product_attention_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *q,
                                                    tg_tensor *k, tg_tensor *v, tg_tensor *o,
                                                    tg_tensor *lse, bool causal, tg_tensor **dk,
                                                    tg_tensor **dv);
/* The same attention composed from op rows (matmul, masked_fill with -inf,
 * softmax, matmul): keeps the (..., T_q, T_k) probabilities for backward.
 * The reference the fused op is tested against; same arguments and rules. */
tg_tensor *tg_attention_composed(tg_ctx *ctx, tg_tensor *q, tg_tensor *k, tg_tensor *v,
                                 bool causal);
/* Mean cross-entropy of logits (N, C) against integer targets (N,) in
 * [0, C), with label smoothing in [0, 1): a scalar. */
tg_tensor *tg_cross_entropy(tg_ctx *ctx, tg_tensor *logits, tg_tensor *targets,
                            double label_smoothing);
/* Its gradient with respect to the logits for an incoming scalar gradient g:
 * g * (softmax(logits) - q) / N with q the smoothed one-hot targets (an op,
 * differentiable in g and in the logits). A target outside [0, C) makes
 * either op fail with TG_ERR_INVALID naming the row and the target. */
tg_tensor *tg_cross_entropy_backward(tg_ctx *ctx, tg_tensor *g, tg_tensor *logits,
                                     tg_tensor *targets, double label_smoothing);
/* Mean squared error, a scalar. */
tg_tensor *tg_mse_loss(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);
/* x with every element zeroed with probability p and the rest scaled by
 * 1/(1-p) when training; x itself when not (or when p is 0). p in [0, 1).
 * Element i (row-major) is kept when word i % 4 of the Philox block
 * (rng->key, rng->counter + i / 4), divided by 2^32, is >= p; the stream then
 * advances by ceil(numel / 4) blocks. The mask so depends only on the seed
 * and the position, never on the thread count. */
tg_tensor *tg_dropout(tg_ctx *ctx, tg_tensor *x, double p, bool training, tg_rng *rng);
/* Collapse dims [start_dim, ndim) into one. */
tg_tensor *tg_flatten(tg_ctx *ctx, tg_tensor *x, int start_dim);

/* ---- layers ---- */

typedef struct tg_linear {
    tg_tensor *weight; /* (out, in) */
    tg_tensor *bias;   /* (out) or NULL */
} tg_linear;
tg_status tg_linear_init(tg_ctx *ctx, tg_linear *l, tg_params *ps, const char *name, int64_t in,
                         int64_t out, bool bias, tg_rng *rng);
/* x (..., in) -> (..., out) */
tg_tensor *tg_linear_forward(tg_ctx *ctx, const tg_linear *l, tg_tensor *x);

/* The most groups a grouped convolution layer takes. */
#define TG_CONV_GROUPS_MAX 1024
typedef struct tg_conv2d_layer {
    tg_tensor *weight; /* (out, in / groups, kh, kw) */
    tg_tensor *bias;   /* (out) or NULL */
    tg_conv2d_opts opts;
    /* 0 or 1: a plain convolution. g > 1 (set after tg_conv2d_init with
     * in / g input channels): the input channels and the outputs are split
     * into g groups, group i's outputs seeing only group i's inputs (as
     * torch.nn.Conv2d's groups), computed as g convolutions joined. */
    int64_t groups;
} tg_conv2d_layer;
tg_status tg_conv2d_init(tg_ctx *ctx, tg_conv2d_layer *l, tg_params *ps, const char *name,
                         int64_t in, int64_t out, const int kernel[2], const tg_conv2d_opts *o,
                         bool bias, tg_rng *rng);
tg_tensor *tg_conv2d_forward(tg_ctx *ctx, const tg_conv2d_layer *l, tg_tensor *x);

/* BatchNorm over (N, C) (1d) or (N, C, H, W) (2d): batch statistics and a
 * running-average update (unbiased variance, as PyTorch) when training, the
 * running statistics when not. */
typedef struct tg_batchnorm {
    tg_tensor *weight, *bias;                /* (C), trainable */
    tg_tensor *running_mean, *running_var;   /* (C), buffers */
    tg_tensor *num_batches_tracked;          /* (), i64 buffer */
    double eps, momentum;
    /* SyncBatchNorm: in training the batch statistics (and, in backward, the
     * sums of the gradient) are taken over every rank of the context's
     * collective (tg_world_sum), so N ranks normalise as one rank with the
     * whole global batch would. Built from op rows, not the fused row; on a
     * world of one it gives the fused row's values to float rounding. Every
     * rank must call forward in the same order. */
    bool sync;
} tg_batchnorm;
tg_status tg_batchnorm_init(tg_ctx *ctx, tg_batchnorm *bn, tg_params *ps, const char *name,
                            int64_t channels, double eps, double momentum);
tg_tensor *tg_batchnorm_forward(tg_ctx *ctx, tg_batchnorm *bn, tg_tensor *x, bool training);

/* LayerNorm over the last `ndim` dims of shape `shape`. */
typedef struct tg_layernorm {
    tg_tensor *weight, *bias;
    int ndim;
    double eps;
} tg_layernorm;
tg_status tg_layernorm_init(tg_ctx *ctx, tg_layernorm *ln, tg_params *ps, const char *name, int ndim,
                            const int64_t *shape, double eps);
tg_tensor *tg_layernorm_forward(tg_ctx *ctx, const tg_layernorm *ln, tg_tensor *x);

/* Embedding: integer indices (...) -> (..., dim). */
typedef struct tg_embedding {
    tg_tensor *weight; /* (num, dim) */
} tg_embedding;
tg_status tg_embedding_init(tg_ctx *ctx, tg_embedding *e, tg_params *ps, const char *name,
                            int64_t num, int64_t dim, tg_rng *rng);
tg_tensor *tg_embedding_forward(tg_ctx *ctx, const tg_embedding *e, tg_tensor *indices);

#ifdef __cplusplus
}
#endif
#endif
