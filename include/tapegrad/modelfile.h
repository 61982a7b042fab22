/*
 * tapegrad/modelfile.h: networks described by model files.
 *
 * Overview
 * --------
 * A model file is an INI file whose sections, in order, are the layers of a
 * network (as Darknet's .cfg files): each section's name is the layer type,
 * its keys the layer's settings. docs/MODELS.md has the grammar and every
 * layer type with its keys and defaults. A five-line example:
 *
 *     [conv2d]
 *     out = 16
 *     kernel = 3
 *     [globalavgpool]
 *     [linear]
 *     out = classes
 *
 * tg_net_build() parses the text (with libinih), resolves every layer's
 * inputs (the previous layer's output, or the names given by `input` and
 * `inputs`), checks every shape once for the given sample shape, and
 * compiles the layers to the structs of nn.h (tg_linear, tg_conv2d_layer,
 * tg_batchnorm, ...), whose parameters are registered in the caller's
 * tg_params under PyTorch state_dict names made from the layers' names
 * ("fc1.weight", "layer1.0.bn1.running_mean"). The forward pass walks the
 * layers in file order. The built-in models (mlp, cnn, cnn-bn) and the
 * ResNets are such files, shipped in models/ and compiled into the library
 * (tg_model_builtin_text).
 *
 * Ownership: a tg_net and its tensors live in the context (freed with it);
 * nothing here needs a free.
 *
 * Errors: TG_ERR_INVALID (syntax, an unknown layer or key, a bad value, a
 * missing required key, an unknown or later name) or TG_ERR_SHAPE (a shape
 * that does not fit), with a message that names the file, the line, the
 * layer and the key: "net.ini:7: layer 'fc1' [linear]: key 'out': expected
 * a positive integer or 'classes', got 'x'".
 */
#ifndef TAPEGRAD_MODELFILE_H
#define TAPEGRAD_MODELFILE_H

#include "tapegrad/nn.h"
#include "tapegrad/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most layers in one file, keys per layer, and bytes of a file. */
#define TG_NET_MAX_LAYERS 1024
#define TG_NET_MAX_KEYS 16
#define TG_NET_MAX_TEXT (1 << 20)
/* The longest layer name, including the NUL. */
#define TG_NET_NAME_MAX 64

typedef struct tg_net tg_net;

typedef struct tg_net_options {
    /* What the file is called in messages ("<text>" when NULL). */
    const char *path;
    /* One sample's shape (without the batch dim). */
    int in_ndim;
    const int64_t *in_shape;
    /* The value of `classes` in the file, and the size the last layer's
     * output must have ((N, classes)); 0: not a classifier, `classes` is
     * refused and the output may have any shape. */
    int64_t classes;
    /* The stream the parameters are drawn from: tg_rng_make(seed, 0), in
     * file order (dropout masks use tg_rng_make(seed, 1)). */
    uint64_t seed;
    /* Only parse and check shapes: no tensor is made and ps may be NULL
     * (tg_net_summary still works; tg_net_forward does not). */
    bool check_only;
} tg_net_options;

/*
 * Parses and compiles `text` (len bytes, NUL bytes refused) into *out, its
 * parameters and buffers registered in ps (dtype ps->dtype). On failure
 * *out is NULL and the context holds the message.
 */
tg_status tg_net_build(tg_ctx *ctx, const char *text, size_t len, const tg_net_options *o,
                       tg_params *ps, tg_net **out);

/* The dtype the file's [input] asks for: TG_I64 where it says dtype = i64
 * (token indices), else TG_F32 (f64 parameters make that f64 at build
 * time). Parses the text without building it; on a parse error the context
 * holds the message and *dt is left alone. */
tg_status tg_net_input_dtype(tg_ctx *ctx, const char *text, size_t len, tg_dtype *dt);

/* x (N, in_shape...) -> the last layer's output (N, ...). training selects
 * batch statistics in the BatchNorm layers and enables dropout. */
tg_tensor *tg_net_forward(tg_ctx *ctx, tg_net *net, tg_tensor *x, bool training);

/* The number of layers (the input included) and the last layer's shape. */
int tg_net_layers(const tg_net *net);
int tg_net_out_shape(const tg_net *net, int64_t *shape);

/*
 * A summary table as torchinfo and Keras print it: every layer's name, type,
 * output shape and parameter count, then the totals. Writes at most len
 * bytes (NUL included) and returns the length the whole table needs.
 */
size_t tg_net_summary(const tg_net *net, char *buf, size_t len);

/*
 * Generation with a key/value cache (nets with [attention] layers, whose
 * input is a window of tokens (T)). tg_net_cache_new() makes, once, the
 * persistent caches of every attention layer for `batch` sequences of up to
 * T positions (the net's block size). tg_net_forward_cached() runs the net
 * in evaluation mode on the tokens x (batch, t) at positions [pos, pos + t)
 * only: each attention layer stores their keys and values in its cache and
 * attends over the first pos + t positions, so that a new token costs one
 * position's work. pos is 0 (a prompt of t <= T tokens) or the number of
 * positions already given, with t = 1, and pos + t <= T. Returns the logits
 * (batch, t, ...) of those positions; with pos = 0 and t = T they equal
 * tg_net_forward()'s.
 */
tg_status tg_net_cache_new(tg_ctx *ctx, tg_net *net, int64_t batch);
tg_tensor *tg_net_forward_cached(tg_ctx *ctx, tg_net *net, tg_tensor *x, int64_t pos);
/* The positions a token model takes (its input (T)); 0 for another net,
 * and for one with a layer that mixes positions other than [attention]
 * (flatten, concat, a layernorm over more than the features, batch norm,
 * convolutions, pooling): tg_net_forward_cached() refuses those. */
int64_t tg_net_block_size(const tg_net *net);

/*
 * One token drawn from logits (n) as nanoGPT's generate() draws it: the
 * logits divided by temperature (0: the first largest logit, no draw),
 * those below the top_k-th largest dropped (top_k 0: none; ties with it
 * stay), softmax, then the first token whose cumulative probability exceeds
 * u, one uniform number of rng (one Philox block). -1 for bad arguments.
 */
int64_t tg_sample_logits(const float *logits, int64_t n, double temperature, int64_t top_k,
                         tg_rng *rng);

/*
 * The text of the gpt model (docs/MODELS.md): n_layer pre-LN blocks of
 * n_head heads, n_embd wide (n_head must divide it), dropout p in [0, 1);
 * block_size positions in the position table (0: the input's T). Writes at
 * most len bytes (NUL included) and returns the length the whole text
 * needs, or 0 for a bad size.
 */
size_t tg_gpt_model_text(char *buf, size_t len, int n_layer, int n_head, int64_t n_embd,
                         int64_t block_size, double dropout);

/* The text of a model shipped with tapegrad ("mlp", "cnn", "cnn-bn",
 * "resnet20", "resnet18"), NULL for another name. */
const char *tg_model_builtin_text(const char *name);
/* The shipped names, in order; *n receives how many. */
const char *const *tg_model_builtin_names(int *n);

#ifdef __cplusplus
}
#endif
#endif
