/*
 * runtime/nn/modelfile_forward.c: the forward pass of a compiled net and its
 * summary table (tapegrad/modelfile.h).
 *
 * The walk is in file order; each node reads the outputs of earlier nodes,
 * which the build resolved to indices, so there is nothing to sort. Every
 * layer is a layer struct of nn.h or an op row, so autograd needs nothing
 * more.
 */
#include "modelfile_internal.h"

#include <stdio.h>
#include <string.h>

static tg_tensor *check_input(tg_ctx *ctx, tg_net *net, tg_tensor *x) {
    const tg__mf_node *in = &net->nodes[0];
    char sx[96], se[160];
    bool ok = x->ndim == in->ndim + 1;
    for (int d = 0; ok && d < in->ndim; d++)
        ok = x->shape[d + 1] == in->shape[d];
    if (!ok) {
        size_t off = (size_t)snprintf(se, sizeof se, "(N");
        for (int d = 0; d < in->ndim && off < sizeof se; d++)
            off += (size_t)snprintf(se + off, sizeof se - off, ", %lld", (long long)in->shape[d]);
        if (off < sizeof se)
            snprintf(se + off, sizeof se - off, ")");
        tg__fail(ctx, TG_ERR_SHAPE, "model: input of shape %s, expected %s",
                 tg_shape_str(x, sx, sizeof sx), se);
        return NULL;
    }
    if (x->dtype != in->dtype)
        return tg_to_dtype(ctx, x, in->dtype);
    return x;
}

static tg_tensor *add_forward(tg_ctx *ctx, tg__mf_node *n, tg_tensor *a, tg_tensor *b,
                              bool training) {
    if (n->proj)
        b = tg_conv2d_forward(ctx, &n->pconv, b);
    if (n->proj == 2)
        b = tg_batchnorm_forward(ctx, &n->pbn, b, training);
    return tg_add(ctx, a, b);
}

/* pos >= 0: the cached forward at positions [pos, ...). */
static tg_tensor *node_forward(tg_ctx *ctx, tg_net *net, tg__mf_node *n, bool training,
                               int64_t pos) {
    tg_tensor *x = net->vals[n->in[0]];
    static const int axes[2] = {2, 3};
    switch (n->kind) {
    case TG__MF_LINEAR:
        return tg_linear_forward(ctx, &n->lin, x);
    case TG__MF_CONV2D:
        return tg_conv2d_forward(ctx, &n->conv, x);
    case TG__MF_BATCHNORM:
        return tg_batchnorm_forward(ctx, &n->bn, x, training);
    case TG__MF_LAYERNORM:
        return tg_layernorm_forward(ctx, &n->ln, x);
    case TG__MF_EMBEDDING:
        return tg_embedding_forward(ctx, &n->emb, x);
    case TG__MF_DROPOUT:
        return tg_dropout(ctx, x, n->p, training, &net->drop_rng);
    case TG__MF_RELU:
        return tg_relu(ctx, x);
    case TG__MF_GELU:
        return tg_gelu(ctx, x);
    case TG__MF_SILU:
        return tg_silu(ctx, x);
    case TG__MF_TANH:
        return tg_tanh(ctx, x);
    case TG__MF_SIGMOID:
        return tg_sigmoid(ctx, x);
    case TG__MF_MAXPOOL:
        return tg_max_pool2d(ctx, x, n->kernel, n->stride, n->pad);
    case TG__MF_AVGPOOL:
        return tg_avg_pool2d(ctx, x, n->kernel, n->stride, n->pad);
    case TG__MF_GAP:
        return tg_mean(ctx, x, 2, axes, false);
    case TG__MF_FLATTEN:
        return tg_flatten(ctx, x, n->dim);
    case TG__MF_ADD:
        return add_forward(ctx, n, x, net->vals[n->in[1]], training);
    case TG__MF_CONCAT: {
        tg_tensor *ts[TG__MF_MAX_IN];
        for (int i = 0; i < n->nin; i++)
            ts[i] = net->vals[n->in[i]];
        return tg_concat(ctx, n->nin, ts, n->dim);
    }
    case TG__MF_ATTENTION:
        return tg__mf_attention_forward(ctx, net, n, x, training, pos);
    case TG__MF_POSEMB:
        return tg__mf_posemb_forward(ctx, n, x, pos);
    default:
        tg__fail(ctx, TG_ERR_INVALID, "model: layer '%s' of kind %d", n->name, (int)n->kind);
        return NULL;
    }
}

/* The walk over the layers from the input x0 (already checked). */
static tg_tensor *walk(tg_ctx *ctx, tg_net *net, tg_tensor *x0, bool training, int64_t pos) {
    tg_tensor *y = net->vals[0] = x0;
    for (int i = 1; y && i < net->n; i++) {
        tg__mf_node *n = &net->nodes[i];
        y = net->vals[i] = node_forward(ctx, net, n, training, pos);
        if (!y && ctx->status != TG_OK && !strstr(ctx->err, n->name)) {
            /* Name the layer in the op's message (the build checked the
             * shapes, so this is rare: a NaN check, memory). */
            char m[sizeof ctx->err];
            int k = snprintf(m, sizeof m, "layer '%s' [%s]: ", n->name, tg__mf_kind_name(n->kind));
            if (k > 0 && (size_t)k < sizeof m) {
                size_t room = sizeof m - (size_t)k;
                memcpy(m + k, ctx->err, room - 1);
                m[sizeof m - 1] = '\0';
                memcpy(ctx->err, m, sizeof m);
            }
        }
    }
    for (int i = 0; i < net->n; i++)
        net->vals[i] = NULL;
    return y;
}

tg_tensor *tg_net_forward(tg_ctx *ctx, tg_net *net, tg_tensor *x, bool training) {
    if (!net || net->check_only) {
        tg__fail(ctx, TG_ERR_INVALID, "net_forward: %s",
                 net ? "the net was built with check_only" : "NULL net");
        return NULL;
    }
    if (!tg__check_args(ctx, "net_forward", 1, &x))
        return NULL;
    tg_tensor *x0 = check_input(ctx, net, x);
    return x0 ? walk(ctx, net, x0, training, -1) : NULL;
}

tg_tensor *tg_net_forward_cached(tg_ctx *ctx, tg_net *net, tg_tensor *x, int64_t pos) {
    if (!tg__check_args(ctx, "net_forward_cached", 1, &x))
        return NULL;
    int64_t block = tg_net_block_size(net);
    if (!net || !net->cache_batch || !block) {
        tg__fail(ctx, TG_ERR_INVALID, "net_forward_cached: %s",
                 !net     ? "NULL net"
                 : !block ? "the net does not take a window of tokens (T)"
                          : "no cache (tg_net_cache_new)");
        return NULL;
    }
    char sx[96];
    int64_t t = x->ndim == 2 ? x->shape[1] : 0;
    if (x->ndim != 2 || x->shape[0] != net->cache_batch || t < 1 || pos < 0 || pos + t > block ||
        (pos > 0 && t != 1) || tg_dtype_is_float(x->dtype)) {
        tg__fail(ctx, TG_ERR_SHAPE,
                 "net_forward_cached: tokens %s %s at position %lld, expected (%lld, t) integers "
                 "with t <= %lld at position 0, or t = 1 at a position below %lld",
                 tg_shape_str(x, sx, sizeof sx), tg_dtype_name(x->dtype), (long long)pos,
                 (long long)net->cache_batch, (long long)block, (long long)block);
        return NULL;
    }
    tg_tensor *x0 = x->dtype == net->nodes[0].dtype ? x : tg_to_dtype(ctx, x, net->nodes[0].dtype);
    return x0 ? walk(ctx, net, x0, false, pos) : NULL;
}

/* ---- the summary table ---- */

typedef struct sbuf {
    char *p;
    size_t len, need;
} sbuf;

static void put(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(sbuf *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = s->need < s->len ? s->len - s->need : 0;
    int k = vsnprintf(room ? s->p + s->need : NULL, room, fmt, ap);
    va_end(ap);
    if (k > 0)
        s->need += (size_t)k;
}

static void thousands(int64_t v, char *buf, size_t len) {
    char raw[32];
    snprintf(raw, sizeof raw, "%lld", (long long)v);
    size_t n = strlen(raw), o = 0;
    for (size_t i = 0; i < n && o + 2 < len; i++) {
        if (i && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = raw[i];
    }
    buf[o] = '\0';
}

size_t tg_net_summary(const tg_net *net, char *buf, size_t len) {
    sbuf s = {buf, len, 0};
    if (buf && len)
        buf[0] = '\0';
    if (!net)
        return 0;
    int64_t total = 0, buffers = 0;
    char line[120];
    memset(line, '=', 86);
    line[86] = '\0';
    put(&s, "%s\n%-28s %-14s %-26s %14s\n%s\n", line, "Layer (name)", "Type", "Output Shape",
        "Param #", line);
    for (int i = 0; i < net->n; i++) {
        const tg__mf_node *n = &net->nodes[i];
        char shape[160], pc[32];
        size_t off = (size_t)snprintf(shape, sizeof shape, "(N");
        for (int d = 0; d < n->ndim && off < sizeof shape; d++)
            off +=
                (size_t)snprintf(shape + off, sizeof shape - off, ", %lld", (long long)n->shape[d]);
        if (off < sizeof shape)
            snprintf(shape + off, sizeof shape - off, ")");
        thousands(n->nparams, pc, sizeof pc);
        char type[40];
        snprintf(type, sizeof type, "%s%s", tg__mf_kind_name(n->kind),
                 n->kind == TG__MF_ADD && n->proj ? (n->proj == 2 ? "+conv-bn" : "+conv") : "");
        put(&s, "%-28s %-14s %-26s %14s\n", n->name, type, shape, pc);
        total += n->nparams;
        buffers += n->nbuffers;
    }
    char t[32], bb[32];
    thousands(total, t, sizeof t);
    thousands(buffers, bb, sizeof bb);
    put(&s,
        "%s\nTotal params: %s\nTrainable params: %s\nNon-trainable params: 0\n"
        "Buffers (batch-norm statistics): %s\nParameter size (f32): %.2f MB\n%s\n",
        line, t, t, bb, (double)total * 4.0 / 1e6, line);
    return s.need + 1;
}

void tg__net_set_sync_bn(tg_net *net, bool sync) {
    for (int i = 0; net && i < net->n; i++) {
        tg__mf_node *d = &net->nodes[i];
        if (d->kind == TG__MF_BATCHNORM)
            d->bn.sync = sync;
        if (d->kind == TG__MF_ADD && d->proj == 2)
            d->pbn.sync = sync;
    }
}

bool tg__net_has_bn(const tg_net *net) {
    for (int i = 0; net && i < net->n; i++)
        if (net->nodes[i].kind == TG__MF_BATCHNORM ||
            (net->nodes[i].kind == TG__MF_ADD && net->nodes[i].proj == 2))
            return true;
    return false;
}
