/*
 * runtime/nn/modelfile_gpt.c: the transformer layers of model files
 * ([attention], [pos_embedding]), their forward passes with and without a
 * key/value cache, and the text of the gpt model (tapegrad/modelfile.h).
 *
 * [attention] is nanoGPT's CausalSelfAttention: one linear c_attn (3E, E)
 * gives q, k and v, split into heads (N, H, T, D); attention; the heads
 * joined again and projected by c_proj (E, E); dropout on the result. The
 * attention itself is the fused op row scaled_dot_product_attention, called
 * from one place (attend()); `fused = false` composes it from op rows
 * instead (q k^T / sqrt(D), the causal mask, softmax, times v).
 *
 * The cached forward (tg_net_forward_cached) runs the net on the tokens at
 * positions [pos, pos + t) only: each attention layer writes its k and v
 * for those positions into persistent caches (N, H, block, D) and attends
 * over the cache's first pos + t positions, so generating a token costs one
 * position's work, not a forward over the whole prefix.
 */
#include "modelfile_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- build ---- */

tg_status tg__mf_compile_attention(tg__mf_bstate *b) {
    tg__mf_node *n = b->node;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    int64_t heads;
    bool bias;
    double std, pstd = -1;
    tg_status s = tg__mf_need_in(b, 2, 2, true, "(N, T, E): a sequence of vectors");
    if (!s)
        s = tg__mf_get_int(b, "heads", true, 1, 1, 1 << 16, &heads);
    if (!s)
        s = tg__mf_get_bool(b, "causal", true, &n->causal);
    if (!s)
        s = tg__mf_get_bool(b, "fused", true, &n->fused);
    if (!s)
        s = tg__mf_get_bool(b, "bias", true, &bias);
    if (!s)
        s = tg__mf_get_double(b, "dropout", 0, 0, 1, true, &n->p);
    if (!s)
        s = tg__mf_get_init(b, &std);
    tg__mf_key *pk = tg__mf_find_key(b->sec, "proj_std");
    if (!s && pk && std < 0)
        return tg__mf_bfail(b, TG_ERR_INVALID, pk, "'proj_std' needs init = normal");
    if (!s && std >= 0)
        s = tg__mf_get_double(b, "proj_std", std, 0, 1e3, false, &pstd);
    if (s)
        return s;
    int64_t e = x->shape[1];
    char sb[160];
    if (e % heads != 0)
        return tg__mf_bfail(b, TG_ERR_SHAPE, tg__mf_find_key(b->sec, "heads"),
                            "input '%s' %s has %lld features, which %lld heads do not divide",
                            x->name, tg__mf_shape_str(x, sb, sizeof sb), (long long)e,
                            (long long)heads);
    if ((double)e * (double)e * 4 > (double)((int64_t)1 << 40))
        return tg__mf_bfail(b, TG_ERR_SHAPE, NULL,
                            "%lld features make weights of more than 2^40 "
                            "scalars",
                            (long long)e);
    n->heads = (int)heads;
    tg__mf_copy_shape(n, x);
    n->nparams = 4 * e * e + (bias ? 4 * e : 0);
    if (b->o->check_only)
        return TG_OK;
    char pre[TG_NET_NAME_MAX + 16];
    snprintf(pre, sizeof pre, "%s.c_attn", n->name);
    s = tg_linear_init(b->ctx, &n->c_attn, b->ps, pre, e, 3 * e, bias, &b->rng);
    if (!s && std >= 0)
        s = tg_init_normal(b->ctx, n->c_attn.weight, 0.0, std, &b->rng);
    if (!s && std >= 0)
        s = tg__mf_zero(b->ctx, n->c_attn.bias);
    snprintf(pre, sizeof pre, "%s.c_proj", n->name);
    if (!s)
        s = tg_linear_init(b->ctx, &n->c_proj, b->ps, pre, e, e, bias, &b->rng);
    if (!s && std >= 0)
        s = tg_init_normal(b->ctx, n->c_proj.weight, 0.0, pstd, &b->rng);
    if (!s && std >= 0)
        s = tg__mf_zero(b->ctx, n->c_proj.bias);
    return s;
}

tg_status tg__mf_compile_posemb(tg__mf_bstate *b) {
    tg__mf_node *n = b->node;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    int64_t num;
    double std;
    tg_status s = tg__mf_need_in(b, 2, 2, true, "(N, T, E): a sequence of vectors");
    if (s)
        return s;
    int64_t t = x->shape[0], e = x->shape[1];
    s = tg__mf_get_int(b, "num", false, t, 1, (int64_t)1 << 26, &num);
    if (!s)
        s = tg__mf_get_init(b, &std);
    if (s)
        return s;
    char sb[160];
    if (num < t)
        return tg__mf_bfail(b, TG_ERR_SHAPE, tg__mf_find_key(b->sec, "num"),
                            "%lld positions, but input '%s' %s has %lld", (long long)num, x->name,
                            tg__mf_shape_str(x, sb, sizeof sb), (long long)t);
    if ((double)num * (double)e > (double)((int64_t)1 << 40))
        return tg__mf_bfail(b, TG_ERR_SHAPE, NULL, "a table of more than 2^40 scalars");
    tg__mf_copy_shape(n, x);
    n->nparams = num * e;
    if (b->o->check_only)
        return TG_OK;
    s = tg_embedding_init(b->ctx, &n->emb, b->ps, n->name, num, e, &b->rng);
    if (!s && std >= 0)
        s = tg_init_normal(b->ctx, n->emb.weight, 0.0, std, &b->rng);
    return s;
}

/* ---- forward ---- */

tg_tensor *tg__mf_posemb_forward(tg_ctx *ctx, tg__mf_node *n, tg_tensor *x, int64_t pos) {
    if (!x)
        return NULL;
    int64_t p0 = pos < 0 ? 0 : pos, t = x->shape[1], num = n->emb.weight->shape[0];
    if (p0 + t > num) {
        tg__fail(ctx, TG_ERR_SHAPE,
                 "layer '%s' [pos_embedding]: positions %lld to %lld, but the "
                 "table has %lld",
                 n->name, (long long)p0, (long long)(p0 + t - 1), (long long)num);
        return NULL;
    }
    return tg_add(ctx, x, tg_slice(ctx, n->emb.weight, 0, p0, p0 + t, 1));
}

/* The one place attention is computed (full and cached forward alike):
 * softmax(q k^T / sqrt(D) + mask) v for q (N, H, T, D) and k, v (N, H, S,
 * D); causal (T == S): position i sees positions 0..i. The fused op
 * (tiled, online softmax, no (T, S) probabilities kept) unless the layer
 * says fused = false, which composes it from matmul, masked_fill and
 * softmax (the two agree: tests/test_attention.c). */
static tg_tensor *attend(tg_ctx *ctx, tg_tensor *q, tg_tensor *k, tg_tensor *v, bool causal,
                         bool fused) {
    if (!q || !k || !v)
        return NULL;
    return fused ? tg_scaled_dot_product_attention(ctx, q, k, v, causal)
                 : tg_attention_composed(ctx, q, k, v, causal);
}

/* (N, T, 3E) -> q, k and v, each (N, H, T, D): slices of one contiguous
 * (3, N, H, T, D) copy, so that the attention reads them without copies of
 * its own and backward adds their gradients into one tensor. */
static void split_heads(tg_ctx *ctx, tg_tensor *qkv, int64_t h, tg_tensor **out) {
    out[0] = out[1] = out[2] = NULL;
    if (!qkv)
        return;
    int64_t n = qkv->shape[0], t = qkv->shape[1], e = qkv->shape[2] / 3;
    int64_t sh5[5] = {n, t, 3, h, e / h}, sh4[4] = {n, h, t, e / h};
    static const int perm[5] = {2, 0, 3, 1, 4};
    tg_tensor *all = tg_contiguous(ctx, tg_permute(ctx, tg_reshape(ctx, qkv, 5, sh5), perm));
    for (int part = 0; part < 3 && all; part++)
        out[part] = tg_reshape(ctx, tg_slice(ctx, all, 0, part, part + 1, 1), 4, sh4);
}

/* Writes src (N, H, t, D) into the cache (block, N, H, D: positions
 * outermost, so that a range of them is contiguous) at positions [pos, pos
 * + t) and returns the first pos + t positions as (N, H, pos + t, D). */
static tg_tensor *cache_put(tg_ctx *ctx, tg_tensor *cache, tg_tensor *src, int64_t pos) {
    if (!src)
        return NULL;
    static const int to_cache[4] = {2, 0, 1, 3}, from_cache[4] = {1, 2, 0, 3};
    int64_t t = src->shape[2];
    if (tg_copy_(ctx, tg_slice(ctx, cache, 0, pos, pos + t, 1), tg_permute(ctx, src, to_cache)) !=
        TG_OK)
        return NULL;
    return tg_permute(ctx, tg_slice(ctx, cache, 0, 0, pos + t, 1), from_cache);
}

tg_tensor *tg__mf_attention_forward(tg_ctx *ctx, tg_net *net, tg__mf_node *n, tg_tensor *x,
                                    bool training, int64_t pos) {
    if (!x)
        return NULL;
    int64_t nb = x->shape[0], t = x->shape[1], e = x->shape[2];
    tg_tensor *qkv = tg_linear_forward(ctx, &n->c_attn, x), *hs[3];
    split_heads(ctx, qkv, n->heads, hs);
    tg_tensor *q = hs[0], *k = hs[1], *v = hs[2];
    bool causal = n->causal;
    if (pos >= 0) {
        k = cache_put(ctx, n->kcache, k, pos);
        v = cache_put(ctx, n->vcache, v, pos);
        /* One new position sees the whole cache; a prefill starts at 0. */
        causal = causal && pos == 0;
    }
    tg_tensor *y = attend(ctx, q, k, v, causal, n->fused);
    static const int perm[4] = {0, 2, 1, 3};
    int64_t sh[3] = {nb, t, e};
    y = tg_reshape(ctx, tg_contiguous(ctx, tg_permute(ctx, y, perm)), 3, sh);
    y = tg_linear_forward(ctx, &n->c_proj, y);
    return tg_dropout(ctx, y, n->p, training, &net->drop_rng);
}

/* ---- the key/value cache ---- */

tg_status tg_net_cache_new(tg_ctx *ctx, tg_net *net, int64_t batch) {
    if (!net || net->check_only || batch < 1)
        return tg__fail(ctx, TG_ERR_INVALID, "net_cache_new: %s",
                        !net        ? "NULL net"
                        : batch < 1 ? "batch < 1"
                                    : "the net was built with check_only");
    if (net->cache_batch == batch)
        return TG_OK;
    if (net->cache_batch)
        return tg__fail(ctx, TG_ERR_INVALID,
                        "net_cache_new: the caches hold a batch of %lld, not %lld",
                        (long long)net->cache_batch, (long long)batch);
    int64_t block = net->nodes[0].shape[0];
    for (int i = 0; i < net->n; i++) {
        tg__mf_node *n = &net->nodes[i];
        if (n->kind != TG__MF_ATTENTION)
            continue;
        int64_t sh[4] = {block, batch, n->heads, n->shape[1] / n->heads};
        char nm[TG_NET_NAME_MAX + 16];
        snprintf(nm, sizeof nm, "%s.kcache", n->name);
        n->kcache = tg_persistent(ctx, n->c_attn.weight->dtype, 4, sh, nm);
        snprintf(nm, sizeof nm, "%s.vcache", n->name);
        n->vcache = n->kcache ? tg_persistent(ctx, n->c_attn.weight->dtype, 4, sh, nm) : NULL;
        if (!n->vcache)
            return ctx->status ? ctx->status : TG_ERR_NOMEM;
    }
    net->cache_batch = batch;
    return TG_OK;
}

/* A token model: tokens (T) in, and every layer works position by position
 * (or, for attention, over earlier positions), so that a run on positions
 * [pos, pos + t) alone gives their outputs. */
int64_t tg_net_block_size(const tg_net *net) {
    if (!net || net->n < 1 || net->nodes[0].ndim != 1 || net->nodes[0].dtype != TG_I64)
        return 0;
    for (int i = 1; i < net->n; i++) {
        const tg__mf_node *n = &net->nodes[i];
        bool ok = n->ndim == 2 && n->shape[0] == net->nodes[0].shape[0];
        switch (n->kind) {
        case TG__MF_EMBEDDING:
        case TG__MF_POSEMB:
        case TG__MF_ATTENTION:
        case TG__MF_LINEAR:
        case TG__MF_DROPOUT:
        case TG__MF_RELU:
        case TG__MF_GELU:
        case TG__MF_SILU:
        case TG__MF_TANH:
        case TG__MF_SIGMOID:
        case TG__MF_ADD:
            break;
        case TG__MF_LAYERNORM: /* over the features only */
            ok = ok && n->nparams == 2 * n->shape[1];
            break;
        default:
            ok = false;
        }
        if (!ok)
            return 0;
    }
    return net->nodes[0].shape[0];
}

/* ---- the gpt model's text ---- */

typedef struct tbuf {
    char *p;
    size_t len, need;
} tbuf;

static void put(tbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(tbuf *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = s->need < s->len ? s->len - s->need : 0;
    int k = vsnprintf(room ? s->p + s->need : NULL, room, fmt, ap);
    va_end(ap);
    if (k > 0)
        s->need += (size_t)k;
}

size_t tg_gpt_model_text(char *buf, size_t len, int n_layer, int n_head, int64_t n_embd,
                         int64_t block_size, double dropout) {
    if (buf && len)
        buf[0] = '\0';
    if (n_layer < 1 || n_layer > 256 || n_head < 1 || n_embd < 1 || n_embd % n_head ||
        block_size < 0 || !(dropout >= 0 && dropout < 1))
        return 0;
    tbuf s = {buf, len, 0};
    /* GPT-2: N(0, 0.02), the residual projections 0.02 / sqrt(2 n_layer). */
    double pstd = 0.02 / sqrt(2.0 * n_layer);
    put(&s,
        "# gpt: a GPT-2 style decoder (tapegrad train --model gpt): token and learned\n"
        "# position embeddings, %d pre-LN blocks (layernorm, causal self-attention,\n"
        "# residual, layernorm, MLP 4x with GELU, residual), a final layernorm and an\n"
        "# output projection tied to the token embedding. n_layer %d, n_head %d,\n"
        "# n_embd %lld, dropout %g.\n"
        "[input]\ndtype = i64\n\n"
        "[embedding]\nname = wte\nnum = classes\ndim = %lld\ninit = normal\nstd = 0.02\n\n"
        "[pos_embedding]\nname = wpe\n",
        n_layer, n_layer, n_head, (long long)n_embd, dropout, (long long)n_embd);
    if (block_size > 0)
        put(&s, "num = %lld\n", (long long)block_size);
    put(&s, "init = normal\nstd = 0.02\n\n[dropout]\nname = drop\np = %g\n", dropout);
    const char *prev = "drop";
    char res[32];
    for (int l = 0; l < n_layer; l++) {
        put(&s,
            "\n[layernorm]\nname = h.%d.ln_1\n\n"
            "[attention]\nname = h.%d.attn\nheads = %d\ndropout = %g\ninit = normal\n"
            "std = 0.02\nproj_std = %.17g\n\n"
            "[add]\nname = h.%d.res_1\ninputs = %s\n\n"
            "[layernorm]\nname = h.%d.ln_2\n\n"
            "[linear]\nname = h.%d.mlp.c_fc\nout = %lld\ninit = normal\nstd = 0.02\n\n"
            "[gelu]\nname = h.%d.mlp.gelu\n\n"
            "[linear]\nname = h.%d.mlp.c_proj\nout = %lld\ninit = normal\nstd = %.17g\n\n"
            "[dropout]\nname = h.%d.mlp.drop\np = %g\n\n"
            "[add]\nname = h.%d.res_2\ninputs = h.%d.res_1\n",
            l, l, n_head, dropout, pstd, l, prev, l, l, (long long)(4 * n_embd), l, l,
            (long long)n_embd, pstd, l, dropout, l, l);
        snprintf(res, sizeof res, "h.%d.res_2", l);
        prev = res;
    }
    put(&s, "\n[layernorm]\nname = ln_f\n\n[linear]\nname = lm_head\ntie = wte\nbias = false\n");
    return s.need + 1;
}

/* ---- drawing a token ---- */

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

int64_t tg_sample_logits(const float *logits, int64_t n, double temperature, int64_t top_k,
                         tg_rng *rng) {
    if (!logits || n < 1 || !rng || !(temperature >= 0) || isinf(temperature) || top_k < 0)
        return -1;
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    if (temperature == 0 || top_k == 1)
        return best;
    /* Keep the logits at least as large as the k-th largest (ties kept, as
     * nanoGPT's logits[logits < v[:, [-1]]] = -inf). */
    float thr = -INFINITY;
    if (top_k > 0 && top_k < n) {
        float *s = malloc((size_t)n * sizeof *s);
        if (!s)
            return -1;
        memcpy(s, logits, (size_t)n * sizeof *s);
        qsort(s, (size_t)n, sizeof *s, cmp_desc);
        thr = s[top_k - 1];
        free(s);
    }
    double top = (double)logits[best] / temperature, total = 0;
    for (int64_t i = 0; i < n; i++)
        if (logits[i] >= thr)
            total += exp((double)logits[i] / temperature - top);
    uint32_t w[4];
    tg_philox4x32(rng->key, rng->counter++, w);
    double u = tg_u32_to_unit(w[0]) * total, cum = 0;
    int64_t last = best;
    for (int64_t i = 0; i < n; i++) {
        if (logits[i] < thr)
            continue;
        cum += exp((double)logits[i] / temperature - top);
        last = i;
        if (cum > u)
            return i;
    }
    return last; /* rounding: u within the last bit of the total */
}
