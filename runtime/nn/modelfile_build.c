/*
 * runtime/nn/modelfile_build.c: sections to a checked, initialised net.
 *
 * Each section becomes one node: its keys are checked against the layer
 * type's list, its inputs resolved to earlier nodes by name, its output
 * shape computed from its inputs' (so a misfit is reported here, once, with
 * both shapes, and never by an op in the middle of a step), and its layer
 * struct initialised in file order from one stream, as a PyTorch module
 * that declares its layers in the same order would be.
 */
#include "modelfile_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PyTorch's defaults. */
#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1
#define LN_EPS 1e-5

typedef struct layer_type {
    const char *name;
    tg__mf_kind kind;
    const char *keys; /* besides name and input */
} layer_type;

static const layer_type types[] = {
    {"input", TG__MF_INPUT, "shape, dtype"},
    {"linear", TG__MF_LINEAR, "out, bias"},
    {"conv2d", TG__MF_CONV2D, "out, kernel, stride, padding, dilation, groups, bias"},
    {"batchnorm", TG__MF_BATCHNORM, "momentum, eps"},
    {"batchnorm1d", TG__MF_BATCHNORM, "momentum, eps"},
    {"batchnorm2d", TG__MF_BATCHNORM, "momentum, eps"},
    {"layernorm", TG__MF_LAYERNORM, "dims, eps"},
    {"embedding", TG__MF_EMBEDDING, "num, dim"},
    {"dropout", TG__MF_DROPOUT, "p"},
    {"relu", TG__MF_RELU, ""},
    {"gelu", TG__MF_GELU, ""},
    {"silu", TG__MF_SILU, ""},
    {"tanh", TG__MF_TANH, ""},
    {"sigmoid", TG__MF_SIGMOID, ""},
    {"maxpool", TG__MF_MAXPOOL, "kernel, stride, padding"},
    {"avgpool", TG__MF_AVGPOOL, "kernel, stride, padding"},
    {"globalavgpool", TG__MF_GAP, ""},
    {"flatten", TG__MF_FLATTEN, "start"},
    {"add", TG__MF_ADD, "inputs, project"},
    {"concat", TG__MF_CONCAT, "inputs, dim"},
};
#define NTYPES (int)(sizeof types / sizeof types[0])

const char *tg__mf_kind_name(tg__mf_kind k) {
    for (int i = 0; i < NTYPES; i++)
        if (types[i].kind == k)
            return types[i].name;
    return "?";
}

typedef struct bstate {
    tg_ctx *ctx;
    const tg_net_options *o;
    const char *path;
    tg_net *net;
    tg_params *ps;
    tg_rng rng;
    const tg__mf_section *sec;
    tg__mf_node *node;
    int count[TG__MF_KIND_COUNT];
} bstate;

static tg_status bfail(bstate *b, tg_status s, const tg__mf_key *k, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "file:line: layer 'name' [type]: key 'k': ..." */
static tg_status bfail(bstate *b, tg_status s, const tg__mf_key *k, const char *fmt, ...) {
    char msg[300], key[80] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (k)
        snprintf(key, sizeof key, "key '%.40s': ", k->key);
    return tg__fail(b->ctx, s, "%s:%d: layer '%s' [%s]: %s%s", b->path, k ? k->line : b->sec->line,
                    b->node->name, b->sec->type, key, msg);
}

static tg__mf_key *find_key(const tg__mf_section *sec, const char *name) {
    for (int i = 0; i < sec->nkeys; i++)
        if (strcmp(sec->keys[i].key, name) == 0)
            return (tg__mf_key *)&sec->keys[i];
    return NULL;
}

static bool parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (end == s || *end || errno || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* An integer key in [lo, hi]; def when absent (required: an error). */
static tg_status get_int(bstate *b, const char *key, bool required, int64_t def, int64_t lo,
                         int64_t hi, int64_t *out) {
    tg__mf_key *k = find_key(b->sec, key);
    *out = def;
    if (!k)
        return required ? bfail(b, TG_ERR_INVALID, NULL, "missing required key '%s'", key) : TG_OK;
    if (!parse_i64(k->value, lo, hi, out))
        return bfail(b, TG_ERR_INVALID, k, "expected an integer in [%lld, %lld], got '%s'",
                     (long long)lo, (long long)hi, k->value);
    return TG_OK;
}

/* out = N or out = classes. */
static tg_status get_out(bstate *b, const char *key, int64_t *out) {
    tg__mf_key *k = find_key(b->sec, key);
    if (!k)
        return bfail(b, TG_ERR_INVALID, NULL, "missing required key '%s'", key);
    if (strcmp(k->value, "classes") == 0) {
        if (b->o->classes < 1)
            return bfail(b, TG_ERR_INVALID, k,
                         "'classes' has no value here (not a classification dataset)");
        *out = b->o->classes;
        return TG_OK;
    }
    if (!parse_i64(k->value, 1, (int64_t)1 << 24, out))
        return bfail(b, TG_ERR_INVALID, k,
                     "expected a positive integer (at most 2^24) or 'classes', got '%s'", k->value);
    return TG_OK;
}

/* "3" or "3,2" (height, width). */
static tg_status get_pair(bstate *b, const char *key, bool required, int def, int lo, int hi,
                          int out[2]) {
    tg__mf_key *k = find_key(b->sec, key);
    out[0] = out[1] = def;
    if (!k)
        return required ? bfail(b, TG_ERR_INVALID, NULL, "missing required key '%s'", key) : TG_OK;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", k->value);
    char *comma = strchr(buf, ',');
    int64_t v[2];
    bool ok = strlen(k->value) < sizeof buf;
    if (comma)
        *comma = '\0';
    ok = ok && parse_i64(buf, lo, hi, &v[0]);
    if (ok && comma)
        ok = parse_i64(comma + 1, lo, hi, &v[1]);
    else
        v[1] = v[0];
    if (!ok)
        return bfail(b, TG_ERR_INVALID, k,
                     "expected an integer or two ('height, width') in [%d, %d], got '%s'", lo, hi,
                     k->value);
    out[0] = (int)v[0];
    out[1] = (int)v[1];
    return TG_OK;
}

static tg_status get_double(bstate *b, const char *key, double def, double lo, double hi,
                            bool hi_open, double *out) {
    tg__mf_key *k = find_key(b->sec, key);
    *out = def;
    if (!k)
        return TG_OK;
    char *end;
    errno = 0;
    double v = strtod(k->value, &end);
    while (*end == ' ' || *end == '\t')
        end++;
    if (end == k->value || *end || errno || !isfinite(v) || v < lo || (hi_open ? v >= hi : v > hi))
        return bfail(b, TG_ERR_INVALID, k, "expected a number in [%g, %g%s, got '%s'", lo, hi,
                     hi_open ? ")" : "]", k->value);
    *out = v;
    return TG_OK;
}

static tg_status get_bool(bstate *b, const char *key, bool def, bool *out) {
    tg__mf_key *k = find_key(b->sec, key);
    *out = def;
    if (!k)
        return TG_OK;
    const char *v = k->value;
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
        *out = false;
    else
        return bfail(b, TG_ERR_INVALID, k, "expected true or false, got '%s'", v);
    return TG_OK;
}

static char *shape_str(const tg__mf_node *n, char *buf, size_t len) {
    size_t off = (size_t)snprintf(buf, len, "(N");
    for (int d = 0; d < n->ndim && off < len; d++)
        off += (size_t)snprintf(buf + off, len - off, ", %lld", (long long)n->shape[d]);
    if (off < len)
        snprintf(buf + off, len - off, ")");
    return buf;
}

/* Layer names become tensor names: letters, digits, '_', '-' and '.'
 * (PyTorch's nesting), not starting or ending with '.', no "..". */
static bool good_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= TG_NET_NAME_MAX || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return false;
    return true;
}

/* The node an input name means: an earlier one. */
static tg_status resolve(bstate *b, const tg__mf_key *k, const char *name, int self, int *out) {
    for (int i = 0; i < self; i++)
        if (strcmp(b->net->nodes[i].name, name) == 0) {
            *out = i;
            return TG_OK;
        }
    if (strcmp(b->net->nodes[self].name, name) == 0)
        return bfail(b, TG_ERR_INVALID, k, "the layer names itself as its input (a cycle)");
    return bfail(b, TG_ERR_INVALID, k,
                 "unknown name '%s' (inputs must name an earlier layer: a later one would make a "
                 "cycle)",
                 name);
}

/* `inputs = a, b, ...`: a list of earlier names; one name means (previous,
 * name). */
static tg_status get_inputs(bstate *b, int self, int min, int max) {
    tg__mf_node *n = b->node;
    tg__mf_key *k = find_key(b->sec, "inputs");
    if (!k)
        return bfail(b, TG_ERR_INVALID, NULL, "missing required key 'inputs'");
    char buf[1024];
    if (strlen(k->value) >= sizeof buf)
        return bfail(b, TG_ERR_INVALID, k, "the list is too long");
    snprintf(buf, sizeof buf, "%s", k->value);
    int names = 0, idx[TG__MF_MAX_IN];
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ' || *t == '\t')
            t++;
        char *e = t + strlen(t);
        while (e > t && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (names >= TG__MF_MAX_IN || names >= max)
            return bfail(b, TG_ERR_INVALID, k, "more than %d names",
                         max < TG__MF_MAX_IN ? max : TG__MF_MAX_IN);
        if (!*t)
            return bfail(b, TG_ERR_INVALID, k, "an empty name in '%s'", k->value);
        tg_status s = resolve(b, k, t, self, &idx[names]);
        if (s)
            return s;
        names++;
    }
    if (names == 0)
        return bfail(b, TG_ERR_INVALID, k, "expected one or more layer names");
    n->nin = 0;
    if (names == 1)
        n->in[n->nin++] = self - 1;
    for (int i = 0; i < names; i++)
        n->in[n->nin++] = idx[i];
    if (n->nin < min || n->nin > max)
        return bfail(b, TG_ERR_INVALID, k, "takes %d to %d inputs, got %d", min, max, n->nin);
    return TG_OK;
}

static bool float_dtype(tg_dtype d) { return d == TG_F32 || d == TG_F64; }

/* Checks that input 0 exists with ndim in [lo, hi] and a float (or an
 * integer) dtype. */
static tg_status need_in(bstate *b, int lo, int hi, bool want_float, const char *what) {
    const tg__mf_node *x = &b->net->nodes[b->node->in[0]];
    char sb[160];
    if (x->ndim < lo || x->ndim > hi)
        return bfail(b, TG_ERR_SHAPE, NULL, "input '%s' is %s, expected %s", x->name,
                     shape_str(x, sb, sizeof sb), what);
    if (want_float != float_dtype(x->dtype))
        return bfail(b, TG_ERR_DTYPE, NULL, "input '%s' is %s, expected %s values", x->name,
                     tg_dtype_name(x->dtype), want_float ? "float" : "integer");
    return TG_OK;
}

static void copy_shape(tg__mf_node *n, const tg__mf_node *x) {
    n->ndim = x->ndim;
    memcpy(n->shape, x->shape, sizeof n->shape);
    n->dtype = x->dtype;
}

/* The most scalars one layer's parameters or one sample's output may hold:
 * sizes are checked in doubles against it before any int64 product, so no
 * file can overflow one. */
#define SIZE_CAP ((double)((int64_t)1 << 40))

static tg_status too_big(bstate *b, const char *what, double v) {
    return bfail(b, TG_ERR_SHAPE, NULL, "%s of %.3g scalars is more than the 2^40 a layer may have",
                 what, v);
}

static int64_t pool_out(int64_t h, int k, int s, int p, int d) {
    int64_t span = (int64_t)d * (k - 1) + 1;
    return h + 2 * p < span ? 0 : (h + 2 * p - span) / s + 1;
}

/* ---- one layer: shape, checks, parameters ---- */

static tg_status compile_input(bstate *b) {
    tg__mf_node *n = b->node;
    const tg_net_options *o = b->o;
    n->ndim = o->in_ndim;
    memcpy(n->shape, o->in_shape, (size_t)o->in_ndim * sizeof *n->shape);
    n->dtype = TG_F32;
    if (b->ps && b->ps->dtype == TG_F64)
        n->dtype = TG_F64;
    tg__mf_key *k = find_key(b->sec, "dtype");
    if (k && !strcmp(k->value, "i64"))
        n->dtype = TG_I64;
    else if (k && strcmp(k->value, "f32") != 0)
        return bfail(b, TG_ERR_INVALID, k,
                     "expected f32 or i64 (indices for an [embedding]), got '%s'", k->value);
    k = find_key(b->sec, "shape");
    if (!k)
        return TG_OK;
    int64_t sh[TG_MAX_DIMS];
    int nd = 0;
    char buf[256];
    bool ok = strlen(k->value) < sizeof buf;
    snprintf(buf, sizeof buf, "%s", k->value);
    for (char *save = NULL, *t = strtok_r(buf, ",x", &save); ok && t;
         t = strtok_r(NULL, ",x", &save))
        ok = nd < TG_MAX_DIMS - 1 && parse_i64(t, 1, (int64_t)1 << 32, &sh[nd++]);
    if (!ok || nd == 0)
        return bfail(b, TG_ERR_INVALID, k,
                     "expected one sample's sizes such as '3, 32, 32' (1 to %d positive integers), "
                     "got '%s'",
                     TG_MAX_DIMS - 1, k->value);
    char sb[160];
    if (nd != n->ndim || memcmp(sh, n->shape, (size_t)nd * sizeof *sh) != 0) {
        tg__mf_node tmp = {.ndim = nd};
        memcpy(tmp.shape, sh, sizeof sh);
        char sa[160];
        return bfail(b, TG_ERR_SHAPE, k, "the file says %s but the data gives %s",
                     shape_str(&tmp, sa, sizeof sa), shape_str(n, sb, sizeof sb));
    }
    return TG_OK;
}

static tg_status compile_linear(bstate *b) {
    tg__mf_node *n = b->node;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    int64_t out;
    bool bias;
    tg_status s = need_in(b, 1, TG_MAX_DIMS - 1, true, "(N, ..., features)");
    if (!s)
        s = get_out(b, "out", &out);
    if (!s)
        s = get_bool(b, "bias", true, &bias);
    if (s)
        return s;
    int64_t in = x->shape[x->ndim - 1];
    if ((double)in * (double)out > SIZE_CAP)
        return too_big(b, "a weight", (double)in * (double)out);
    copy_shape(n, x);
    n->shape[n->ndim - 1] = out;
    n->nparams = in * out + (bias ? out : 0);
    if (b->o->check_only)
        return TG_OK;
    return tg_linear_init(b->ctx, &n->lin, b->ps, n->name, in, out, bias, &b->rng);
}

static tg_status compile_conv(bstate *b) {
    tg__mf_node *n = b->node;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    int64_t out, groups;
    int k[2], st[2], pad[2], dil[2];
    bool bias;
    tg_status s = need_in(b, 3, 3, true, "(N, C, H, W)");
    if (!s)
        s = get_out(b, "out", &out);
    if (!s)
        s = get_pair(b, "kernel", true, 1, 1, 1024, k);
    if (!s)
        s = get_pair(b, "stride", false, 1, 1, 1024, st);
    if (!s)
        s = get_pair(b, "padding", false, 0, 0, 1024, pad);
    if (!s)
        s = get_pair(b, "dilation", false, 1, 1, 1024, dil);
    if (!s)
        s = get_int(b, "groups", false, 1, 1, 1 << 24, &groups);
    if (!s)
        s = get_bool(b, "bias", true, &bias);
    if (s)
        return s;
    if (groups != 1)
        return bfail(b, TG_ERR_UNSUPPORTED, find_key(b->sec, "groups"),
                     "grouped convolutions are not supported yet (only groups = 1)");
    char sb[160];
    int64_t oh = pool_out(x->shape[1], k[0], st[0], pad[0], dil[0]);
    int64_t ow = pool_out(x->shape[2], k[1], st[1], pad[1], dil[1]);
    if (oh < 1 || ow < 1)
        return bfail(b, TG_ERR_SHAPE, NULL,
                     "input '%s' %s is smaller than the kernel %dx%d (dilation %dx%d, padding "
                     "%dx%d)",
                     x->name, shape_str(x, sb, sizeof sb), k[0], k[1], dil[0], dil[1], pad[0],
                     pad[1]);
    n->ndim = 3;
    n->dtype = x->dtype;
    n->shape[0] = out;
    n->shape[1] = oh;
    n->shape[2] = ow;
    int64_t c = x->shape[0];
    if ((double)out * (double)c * k[0] * k[1] > SIZE_CAP)
        return too_big(b, "a weight", (double)out * (double)c * k[0] * k[1]);
    n->nparams = out * c * k[0] * k[1] + (bias ? out : 0);
    if (b->o->check_only)
        return TG_OK;
    tg_conv2d_opts co = {{st[0], st[1]}, {pad[0], pad[1]}, {dil[0], dil[1]}};
    return tg_conv2d_init(b->ctx, &n->conv, b->ps, n->name, c, out, k, &co, bias, &b->rng);
}

static tg_status compile_bn(bstate *b, const char *type) {
    tg__mf_node *n = b->node;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    double mom, eps;
    tg_status s;
    if (!strcmp(type, "batchnorm1d"))
        s = need_in(b, 1, 1, true, "(N, C) for [batchnorm1d]");
    else if (!strcmp(type, "batchnorm2d"))
        s = need_in(b, 3, 3, true, "(N, C, H, W) for [batchnorm2d]");
    else
        s = x->ndim == 2 ? need_in(b, 3, 3, true, "(N, C) or (N, C, H, W)")
                         : need_in(b, 1, 3, true, "(N, C) or (N, C, H, W)");
    if (!s)
        s = get_double(b, "momentum", BN_MOMENTUM, 0, 1, false, &mom);
    if (!s)
        s = get_double(b, "eps", BN_EPS, 1e-30, 1, false, &eps);
    if (s)
        return s;
    copy_shape(n, x);
    int64_t c = x->shape[0];
    n->nparams = 2 * c;
    n->nbuffers = 2 * c + 1;
    if (b->o->check_only)
        return TG_OK;
    return tg_batchnorm_init(b->ctx, &n->bn, b->ps, n->name, c, eps, mom);
}

static tg_status compile_ln(bstate *b) {
    tg__mf_node *n = b->node;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    int64_t dims;
    double eps;
    tg_status s = need_in(b, 1, TG_MAX_DIMS - 1, true, "(N, ...)");
    if (!s)
        s = get_int(b, "dims", false, 1, 1, TG_MAX_DIMS - 1, &dims);
    if (!s)
        s = get_double(b, "eps", LN_EPS, 1e-30, 1, false, &eps);
    if (s)
        return s;
    char sb[160];
    if (dims > x->ndim)
        return bfail(b, TG_ERR_SHAPE, find_key(b->sec, "dims"),
                     "normalises the last %lld dims but input '%s' is %s", (long long)dims, x->name,
                     shape_str(x, sb, sizeof sb));
    copy_shape(n, x);
    const int64_t *sh = x->shape + x->ndim - dims;
    int64_t m = 1;
    for (int d = 0; d < dims; d++)
        m *= sh[d];
    n->nparams = 2 * m;
    if (b->o->check_only)
        return TG_OK;
    return tg_layernorm_init(b->ctx, &n->ln, b->ps, n->name, (int)dims, sh, eps);
}

static tg_status compile_emb(bstate *b) {
    tg__mf_node *n = b->node;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    int64_t num, dim;
    tg_status s = need_in(b, 1, TG_MAX_DIMS - 2, false, "(N, ...) indices");
    if (!s)
        s = get_int(b, "num", true, 0, 1, (int64_t)1 << 26, &num);
    if (!s)
        s = get_int(b, "dim", true, 0, 1, (int64_t)1 << 20, &dim);
    if (s)
        return s;
    copy_shape(n, x);
    n->shape[n->ndim++] = dim;
    n->dtype = b->ps && b->ps->dtype == TG_F64 ? TG_F64 : TG_F32;
    n->nparams = num * dim;
    if (b->o->check_only)
        return TG_OK;
    return tg_embedding_init(b->ctx, &n->emb, b->ps, n->name, num, dim, &b->rng);
}

static tg_status compile_pool(bstate *b) {
    tg__mf_node *n = b->node;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    tg_status s = need_in(b, 3, 3, true, "(N, C, H, W)");
    if (!s)
        s = get_pair(b, "kernel", true, 1, 1, 1024, n->kernel);
    if (!s)
        s = get_pair(b, "stride", false, 0, 1, 1024, n->stride);
    if (!s)
        s = get_pair(b, "padding", false, 0, 0, 512, n->pad);
    if (s)
        return s;
    for (int d = 0; d < 2; d++) {
        if (n->stride[d] == 0)
            n->stride[d] = n->kernel[d];
        if (n->pad[d] > n->kernel[d] / 2)
            return bfail(b, TG_ERR_INVALID, find_key(b->sec, "padding"),
                         "padding %d is more than half the kernel %d", n->pad[d], n->kernel[d]);
    }
    char sb[160];
    int64_t oh = pool_out(x->shape[1], n->kernel[0], n->stride[0], n->pad[0], 1);
    int64_t ow = pool_out(x->shape[2], n->kernel[1], n->stride[1], n->pad[1], 1);
    if (oh < 1 || ow < 1)
        return bfail(b, TG_ERR_SHAPE, NULL, "input '%s' %s is smaller than the window %dx%d",
                     x->name, shape_str(x, sb, sizeof sb), n->kernel[0], n->kernel[1]);
    copy_shape(n, x);
    n->shape[1] = oh;
    n->shape[2] = ow;
    return TG_OK;
}

static tg_status compile_flatten(bstate *b) {
    tg__mf_node *n = b->node;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    int64_t start;
    tg_status s = need_in(b, 1, TG_MAX_DIMS - 1, x->dtype != TG_I64, "(N, ...)");
    if (!s)
        s = get_int(b, "start", false, 1, 1, TG_MAX_DIMS - 1, &start);
    if (s)
        return s;
    char sb[160];
    if (start > x->ndim)
        return bfail(b, TG_ERR_SHAPE, find_key(b->sec, "start"),
                     "dim %lld does not exist in input '%s' %s", (long long)start, x->name,
                     shape_str(x, sb, sizeof sb));
    n->dim = (int)start;
    n->dtype = x->dtype;
    n->ndim = (int)start;
    memcpy(n->shape, x->shape, sizeof n->shape);
    int64_t m = 1;
    for (int d = (int)start - 1; d < x->ndim; d++)
        m *= x->shape[d];
    n->shape[start - 1] = m;
    return TG_OK;
}

static bool same_shape(const tg__mf_node *a, const tg__mf_node *c) {
    return a->ndim == c->ndim && !memcmp(a->shape, c->shape, (size_t)a->ndim * sizeof *a->shape);
}

static tg_status compile_add(bstate *b, int self) {
    tg__mf_node *n = b->node;
    tg_status s = get_inputs(b, self, 2, 2);
    if (s)
        return s;
    const tg__mf_node *x = &b->net->nodes[n->in[0]], *y = &b->net->nodes[n->in[1]];
    tg__mf_key *pk = find_key(b->sec, "project");
    if (pk && !strcmp(pk->value, "conv"))
        n->proj = 1;
    else if (pk && !strcmp(pk->value, "conv-bn"))
        n->proj = 2;
    else if (pk && strcmp(pk->value, "none") != 0)
        return bfail(b, TG_ERR_INVALID, pk, "expected none, conv or conv-bn, got '%s'", pk->value);
    char sa[160], sb[160];
    if (!float_dtype(x->dtype) || x->dtype != y->dtype)
        return bfail(b, TG_ERR_DTYPE, NULL, "adds '%s' (%s) and '%s' (%s): expected float values",
                     x->name, tg_dtype_name(x->dtype), y->name, tg_dtype_name(y->dtype));
    copy_shape(n, x);
    if (!n->proj) {
        if (!same_shape(x, y))
            return bfail(b, TG_ERR_SHAPE, NULL,
                         "adds '%s' %s and '%s' %s: the shapes differ (project = conv-bn maps "
                         "the second onto the first)",
                         x->name, shape_str(x, sa, sizeof sa), y->name,
                         shape_str(y, sb, sizeof sb));
        return TG_OK;
    }
    if (x->ndim != 3 || y->ndim != 3)
        return bfail(b, TG_ERR_SHAPE, pk,
                     "a projection maps (N, C, H, W) images, got '%s' %s and '%s' %s", x->name,
                     shape_str(x, sa, sizeof sa), y->name, shape_str(y, sb, sizeof sb));
    int str[2];
    for (int d = 0; d < 2; d++) {
        int64_t want = x->shape[1 + d], have = y->shape[1 + d];
        int64_t st = (have + want - 1) / want;
        if (st < 1 || st > 1024 || pool_out(have, 1, (int)st, 0, 1) != want)
            return bfail(b, TG_ERR_SHAPE, pk, "no 1x1 stride maps '%s' %s onto '%s' %s", y->name,
                         shape_str(y, sb, sizeof sb), x->name, shape_str(x, sa, sizeof sa));
        str[d] = (int)st;
    }
    int64_t c = y->shape[0], k = x->shape[0];
    if ((double)c * (double)k > SIZE_CAP)
        return too_big(b, "a projection", (double)c * (double)k);
    n->nparams = k * c + (n->proj == 2 ? 2 * k : 0);
    n->nbuffers = n->proj == 2 ? 2 * k + 1 : 0;
    if (b->o->check_only)
        return TG_OK;
    char pre[TG_NET_NAME_MAX + 8];
    static const int one[2] = {1, 1};
    tg_conv2d_opts co = {{str[0], str[1]}, {0, 0}, {1, 1}};
    snprintf(pre, sizeof pre, "%s.0", n->name);
    s = tg_conv2d_init(b->ctx, &n->pconv, b->ps, pre, c, k, one, &co, false, &b->rng);
    snprintf(pre, sizeof pre, "%s.1", n->name);
    if (!s && n->proj == 2)
        s = tg_batchnorm_init(b->ctx, &n->pbn, b->ps, pre, k, BN_EPS, BN_MOMENTUM);
    return s;
}

static tg_status compile_concat(bstate *b, int self) {
    tg__mf_node *n = b->node;
    int64_t dim;
    tg_status s = get_inputs(b, self, 2, TG__MF_MAX_IN);
    if (!s)
        s = get_int(b, "dim", false, 1, 1, TG_MAX_DIMS - 1, &dim);
    if (s)
        return s;
    const tg__mf_node *x = &b->net->nodes[n->in[0]];
    char sa[160], sb[160];
    if (dim > x->ndim)
        return bfail(b, TG_ERR_SHAPE, find_key(b->sec, "dim"),
                     "dim %lld does not exist in input '%s' %s", (long long)dim, x->name,
                     shape_str(x, sa, sizeof sa));
    copy_shape(n, x);
    n->dim = (int)dim;
    for (int i = 1; i < n->nin; i++) {
        const tg__mf_node *y = &b->net->nodes[n->in[i]];
        bool ok = y->ndim == x->ndim && y->dtype == x->dtype;
        for (int d = 0; ok && d < x->ndim; d++)
            ok = d == dim - 1 || y->shape[d] == x->shape[d];
        if (!ok)
            return bfail(b, TG_ERR_SHAPE, NULL,
                         "cannot join '%s' %s %s and '%s' %s %s along dim %lld (the other sizes "
                         "and the dtype must agree)",
                         x->name, shape_str(x, sa, sizeof sa), tg_dtype_name(x->dtype), y->name,
                         shape_str(y, sb, sizeof sb), tg_dtype_name(y->dtype), (long long)dim);
        n->shape[dim - 1] += y->shape[dim - 1];
    }
    return TG_OK;
}

static tg_status compile_node(bstate *b, int self, const char *type) {
    tg__mf_node *n = b->node;
    tg_status s;
    switch (n->kind) {
    case TG__MF_INPUT:
        return compile_input(b);
    case TG__MF_LINEAR:
        return compile_linear(b);
    case TG__MF_CONV2D:
        return compile_conv(b);
    case TG__MF_BATCHNORM:
        return compile_bn(b, type);
    case TG__MF_LAYERNORM:
        return compile_ln(b);
    case TG__MF_EMBEDDING:
        return compile_emb(b);
    case TG__MF_DROPOUT:
        s = need_in(b, 1, TG_MAX_DIMS - 1, true, "(N, ...)");
        if (!s)
            s = get_double(b, "p", 0.5, 0, 1, true, &n->p);
        copy_shape(n, &b->net->nodes[n->in[0]]);
        return s;
    case TG__MF_RELU:
    case TG__MF_GELU:
    case TG__MF_SILU:
    case TG__MF_TANH:
    case TG__MF_SIGMOID:
        copy_shape(n, &b->net->nodes[n->in[0]]);
        return need_in(b, 1, TG_MAX_DIMS - 1, true, "(N, ...)");
    case TG__MF_MAXPOOL:
    case TG__MF_AVGPOOL:
        return compile_pool(b);
    case TG__MF_GAP:
        s = need_in(b, 3, 3, true, "(N, C, H, W)");
        copy_shape(n, &b->net->nodes[n->in[0]]);
        n->ndim = 1;
        return s;
    case TG__MF_FLATTEN:
        return compile_flatten(b);
    case TG__MF_ADD:
        return compile_add(b, self);
    case TG__MF_CONCAT:
        return compile_concat(b, self);
    default:
        return bfail(b, TG_ERR_INVALID, NULL, "internal: layer kind %d", (int)n->kind);
    }
}

/* Checks a section's keys against its type's list. */
static tg_status check_keys(bstate *b, const layer_type *t) {
    for (int i = 0; i < b->sec->nkeys; i++) {
        const char *k = b->sec->keys[i].key;
        if (!strcmp(k, "name") || (!strcmp(k, "input") && t->kind != TG__MF_INPUT &&
                                   t->kind != TG__MF_ADD && t->kind != TG__MF_CONCAT))
            continue;
        bool ok = false;
        size_t kl = strlen(k);
        for (const char *p = t->keys; *p && !ok;) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            ok = l == kl && !strncmp(p, k, l);
            p = e ? e + 2 : p + l;
        }
        if (!ok)
            return bfail(b, TG_ERR_INVALID, &b->sec->keys[i],
                         "unknown key (layer [%s] takes: name%s%s%s)", t->name,
                         t->kind == TG__MF_INPUT || t->kind == TG__MF_ADD ||
                                 t->kind == TG__MF_CONCAT
                             ? ""
                             : ", input",
                         t->keys[0] ? ", " : "", t->keys);
    }
    return TG_OK;
}

static tg_status build_node(bstate *b, int i, const tg__mf_section *sec) {
    tg__mf_node *n = &b->net->nodes[i];
    b->sec = sec;
    b->node = n;
    n->line = sec->line;
    const layer_type *t = NULL;
    for (int j = 0; j < NTYPES && !t; j++)
        if (!strcmp(types[j].name, sec->type))
            t = &types[j];
    tg__mf_key *nk = find_key(sec, "name");
    snprintf(n->name, sizeof n->name, "%s", nk ? nk->value : "?");
    if (!t) {
        char list[400];
        size_t off = 0;
        for (int j = 0; j < NTYPES; j++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", j ? ", " : "",
                                    types[j].name);
        return tg__fail(b->ctx, TG_ERR_INVALID,
                        "%s:%d: unknown layer type [%s] (expected one of: %s)", b->path, sec->line,
                        sec->type, list);
    }
    n->kind = t->kind;
    if (t->kind == TG__MF_INPUT && i != 0)
        return bfail(b, TG_ERR_INVALID, NULL, "[input] must be the first layer");
    if (nk && !good_name(nk->value))
        return bfail(b, TG_ERR_INVALID, nk,
                     "'%s' is not a layer name (1 to %d of a-z, A-Z, 0-9, '_', '-', '.'; no "
                     "leading, trailing or double '.')",
                     nk->value, TG_NET_NAME_MAX - 1);
    if (!nk) {
        if (t->kind == TG__MF_INPUT)
            snprintf(n->name, sizeof n->name, "input");
        else
            snprintf(n->name, sizeof n->name, "%s%d", t->name, ++b->count[t->kind]);
    }
    for (int j = 0; j < i; j++) {
        if (strcmp(b->net->nodes[j].name, n->name) != 0)
            continue;
        if (b->net->nodes[j].line == 0)
            return bfail(b, TG_ERR_INVALID, nk,
                         "the name '%s' is the input's (a file without [input] starts with one "
                         "of that name)",
                         n->name);
        return bfail(b, TG_ERR_INVALID, nk, "the name '%s' is already taken by line %d", n->name,
                     b->net->nodes[j].line);
    }
    tg_status s = check_keys(b, t);
    if (s)
        return s;
    if (t->kind != TG__MF_INPUT && t->kind != TG__MF_ADD && t->kind != TG__MF_CONCAT) {
        tg__mf_key *ik = find_key(sec, "input");
        n->nin = 1;
        n->in[0] = i - 1;
        if (ik && (s = resolve(b, ik, ik->value, i, &n->in[0])) != TG_OK)
            return s;
    }
    s = compile_node(b, i, t->name);
    double m = 1;
    for (int d = 0; !s && d < n->ndim; d++)
        m *= (double)n->shape[d];
    if (!s && m > SIZE_CAP)
        return too_big(b, "an output", m);
    return s;
}

/* The implicit [input] a file without one starts with. */
static const tg__mf_section implicit_input = {.type = "input", .line = 0};

tg_status tg_net_build(tg_ctx *ctx, const char *text, size_t len, const tg_net_options *o,
                       tg_params *ps, tg_net **out) {
    if (!out || !o)
        return tg__fail(ctx, TG_ERR_INVALID, "net_build: NULL argument");
    *out = NULL;
    const char *path = o->path ? o->path : "<text>";
    if (o->in_ndim < 1 || o->in_ndim >= TG_MAX_DIMS || !o->in_shape)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: a sample shape of %d dims (expected 1 to %d)",
                        path, o->in_ndim, TG_MAX_DIMS - 1);
    for (int d = 0; d < o->in_ndim; d++)
        if (o->in_shape[d] < 1 || o->in_shape[d] > ((int64_t)1 << 32))
            return tg__fail(ctx, TG_ERR_INVALID, "%s: sample size %lld in dim %d", path,
                            (long long)o->in_shape[d], d);
    if (!o->check_only && !ps)
        return tg__fail(ctx, TG_ERR_INVALID, "%s: no parameter list", path);
    tg__mf_file f;
    tg_status s = tg__mf_parse(ctx, text, len, path, &f);
    if (s) {
        tg__mf_file_free(&f);
        return s;
    }
    bool has_input = !strcmp(f.s[0].type, "input");
    int nn = f.n + !has_input;
    tg_net *net = tg__arena_alloc(ctx, &ctx->pers_meta, sizeof *net);
    tg__mf_node *nodes =
        net ? tg__arena_alloc(ctx, &ctx->pers_meta, (size_t)nn * sizeof *nodes) : NULL;
    tg_tensor **vals =
        nodes ? tg__arena_alloc(ctx, &ctx->pers_meta, (size_t)nn * sizeof *vals) : NULL;
    if (!vals) {
        tg__mf_file_free(&f);
        return ctx->status ? ctx->status : tg__fail(ctx, TG_ERR_NOMEM, "%s: out of memory", path);
    }
    memset(net, 0, sizeof *net);
    memset(nodes, 0, (size_t)nn * sizeof *nodes);
    memset(vals, 0, (size_t)nn * sizeof *vals);
    net->nodes = nodes;
    net->vals = vals;
    net->n = nn;
    net->check_only = o->check_only;
    net->drop_rng = tg_rng_make(o->seed, 1);
    bstate b = {
        .ctx = ctx, .o = o, .path = path, .net = net, .ps = ps, .rng = tg_rng_make(o->seed, 0)};
    for (int i = 0; i < nn && !s; i++)
        s = build_node(&b, i, has_input ? &f.s[i] : i ? &f.s[i - 1] : &implicit_input);
    if (!s && o->classes > 0) {
        const tg__mf_node *last = &nodes[nn - 1];
        char sb[160];
        /* A model of a token window (an i64 input (T)) may give the
         * classes at every position: (N, T, classes). */
        bool per_pos = nodes[0].dtype == TG_I64 && nodes[0].ndim == 1 && last->ndim == 2 &&
                       last->shape[0] == nodes[0].shape[0] && last->shape[1] == o->classes;
        if ((!per_pos && (last->ndim != 1 || last->shape[0] != o->classes)) ||
            !float_dtype(last->dtype))
            s = tg__fail(ctx, TG_ERR_SHAPE,
                         "%s:%d: layer '%s' [%s]: the model ends in %s, expected (N, %lld) for a "
                         "classification dataset of %lld classes (end with [linear] out = "
                         "classes)",
                         path, last->line, last->name, tg__mf_kind_name(last->kind),
                         shape_str(last, sb, sizeof sb), (long long)o->classes,
                         (long long)o->classes);
    }
    tg__mf_file_free(&f);
    if (!s)
        *out = net;
    return s;
}

int tg_net_layers(const tg_net *net) { return net ? net->n : 0; }

int tg_net_out_shape(const tg_net *net, int64_t *shape) {
    if (!net || net->n < 1)
        return 0;
    const tg__mf_node *n = &net->nodes[net->n - 1];
    memcpy(shape, n->shape, (size_t)n->ndim * sizeof *shape);
    return n->ndim;
}
