/* Private to runtime/: the parsed model file and the compiled net
 * (tapegrad/modelfile.h). */
#ifndef TG_RUNTIME_MODELFILE_INTERNAL_H
#define TG_RUNTIME_MODELFILE_INTERNAL_H

#include "nn_internal.h"
#include "tapegrad/modelfile.h"
#include "tapegrad/rng.h"

/* ---- the parse: sections with their keys, as written ---- */

typedef struct tg__mf_key {
    char *key, *value;
    int line;
    bool used; /* read by the layer's compiler: an unused key is unknown */
} tg__mf_key;

typedef struct tg__mf_section {
    char type[32];
    int line;
    int nkeys;
    tg__mf_key keys[TG_NET_MAX_KEYS];
} tg__mf_section;

typedef struct tg__mf_file {
    const char *path;
    int n;
    tg__mf_section *s; /* n sections, heap */
} tg__mf_file;

/* Parses text into f (sections in order); on failure the context names the
 * line. Free with tg__mf_file_free even after a failure. */
tg_status tg__mf_parse(tg_ctx *ctx, const char *text, size_t len, const char *path, tg__mf_file *f);
void tg__mf_file_free(tg__mf_file *f);

/* ---- the compiled net ---- */

typedef enum tg__mf_kind {
    TG__MF_INPUT = 0,
    TG__MF_LINEAR,
    TG__MF_CONV2D,
    TG__MF_BATCHNORM,
    TG__MF_LAYERNORM,
    TG__MF_EMBEDDING,
    TG__MF_DROPOUT,
    TG__MF_RELU,
    TG__MF_GELU,
    TG__MF_SILU,
    TG__MF_TANH,
    TG__MF_SIGMOID,
    TG__MF_MAXPOOL,
    TG__MF_AVGPOOL,
    TG__MF_GAP,
    TG__MF_FLATTEN,
    TG__MF_ADD,
    TG__MF_CONCAT,
    TG__MF_ATTENTION,
    TG__MF_POSEMB,
    TG__MF_KIND_COUNT
} tg__mf_kind;

#define TG__MF_MAX_IN 8

typedef struct tg__mf_node {
    tg__mf_kind kind;
    char name[TG_NET_NAME_MAX];
    int line;
    int nin;
    int in[TG__MF_MAX_IN]; /* earlier nodes */
    tg_dtype dtype;        /* of the output */
    int ndim;              /* of one sample's output */
    int64_t shape[TG_MAX_DIMS];
    int64_t nparams, nbuffers; /* scalars */
    /* settings */
    int kernel[2], stride[2], pad[2];
    int dim;     /* concat: batched dim; flatten: start dim */
    double p;    /* dropout */
    int proj;    /* add: 0 none, 1 1x1 conv, 2 1x1 conv + batchnorm */
    int heads;   /* attention */
    bool causal; /* attention */
    bool fused;  /* attention: the fused op (else composed from op rows) */
    int tie;     /* linear: the node whose weight it uses (0: its own) */
    /* layers */
    tg_linear lin;
    tg_conv2d_layer conv;
    tg_batchnorm bn;
    tg_layernorm ln;
    tg_embedding emb;
    tg_conv2d_layer pconv; /* add's projection */
    tg_batchnorm pbn;
    tg_linear c_attn, c_proj;   /* attention */
    tg_tensor *kcache, *vcache; /* attention: (T, N, heads, D), tg_net_cache_new */
} tg__mf_node;

struct tg_net {
    int n;
    tg__mf_node *nodes; /* context memory */
    tg_tensor **vals;   /* one output per node during a forward */
    tg_rng drop_rng;
    bool check_only;
    int64_t cache_batch; /* the batch the key/value caches hold; 0: none */
};

const char *tg__mf_kind_name(tg__mf_kind k);

/* ---- the build's state and key readers (modelfile_build.c), shared with
 * the transformer layers (modelfile_gpt.c) ---- */

typedef struct tg__mf_bstate {
    tg_ctx *ctx;
    const tg_net_options *o;
    const char *path;
    tg_net *net;
    tg_params *ps;
    tg_rng rng;
    const tg__mf_section *sec;
    tg__mf_node *node;
    int count[TG__MF_KIND_COUNT];
} tg__mf_bstate;

/* "file:line: layer 'name' [type]: key 'k': ..." in the context. */
tg_status tg__mf_bfail(tg__mf_bstate *b, tg_status s, const tg__mf_key *k, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
tg__mf_key *tg__mf_find_key(const tg__mf_section *sec, const char *name);
tg_status tg__mf_get_int(tg__mf_bstate *b, const char *key, bool required, int64_t def, int64_t lo,
                         int64_t hi, int64_t *out);
/* A positive integer or `classes`. */
tg_status tg__mf_get_out(tg__mf_bstate *b, const char *key, int64_t *out);
tg_status tg__mf_get_double(tg__mf_bstate *b, const char *key, double def, double lo, double hi,
                            bool hi_open, double *out);
tg_status tg__mf_get_bool(tg__mf_bstate *b, const char *key, bool def, bool *out);
char *tg__mf_shape_str(const tg__mf_node *n, char *buf, size_t len);
tg_status tg__mf_need_in(tg__mf_bstate *b, int lo, int hi, bool want_float, const char *what);
void tg__mf_copy_shape(tg__mf_node *n, const tg__mf_node *x);
/* `init = default | normal` and `std`: *std < 0 for the layer's default. */
tg_status tg__mf_get_init(tg__mf_bstate *b, double *std);
/* Fills t with zeros (a bias under init = normal). */
tg_status tg__mf_zero(tg_ctx *ctx, tg_tensor *t);

/* The transformer layers (modelfile_gpt.c). */
tg_status tg__mf_compile_attention(tg__mf_bstate *b);
tg_status tg__mf_compile_posemb(tg__mf_bstate *b);
/* pos < 0: the full forward; else the cached one at positions
 * [pos, pos + T) (tg_net_forward_cached). */
tg_tensor *tg__mf_attention_forward(tg_ctx *ctx, tg_net *net, tg__mf_node *n, tg_tensor *x,
                                    bool training, int64_t pos);
tg_tensor *tg__mf_posemb_forward(tg_ctx *ctx, tg__mf_node *n, tg_tensor *x, int64_t pos);

/* Every batch norm of the net, add projections' included: --sync-bn. */
void tg__net_set_sync_bn(tg_net *net, bool sync);
bool tg__net_has_bn(const tg_net *net);

#endif
