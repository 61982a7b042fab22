/*
 * kernels/cpu/cpu_dnnl.c: bf16 products through oneDNN, for the autocast
 * precision (tg_ctx_set_precision in runtime.h).
 *
 * Debian's OpenBLAS has no bf16 gemm, so the three convolution rows, and
 * the bf16 matmul on CPUs without AVX512_BF16 (elsewhere it runs on our own
 * kernel, cpu_gemm_bf16.c, unless TG_CPU_BF16_GEMM=onednn), run on oneDNN's
 * primitives: the f32 operands are rounded to bf16 (nearest even) into
 * buffers this state owns, the primitive multiplies in bf16 and accumulates
 * and writes in f32. Primitives are made
 * once per shape and kept (a small cache, oldest out when full), with their
 * memory objects and a scratchpad this state owns (user scratchpad mode), so
 * a steady training step creates none, and the stream is made with the
 * state. oneDNN's execute call itself still allocates its argument map on the
 * heap each time (a C++ hash map: a node per argument and the bucket array;
 * nothing in its C API avoids it), and some of its kernels allocate the
 * closures of their parallel loops: that is the heap use left in a steady
 * bf16 step. To keep it small, the layout changes and bf16 roundings around
 * the products run on our own loops (cpu_bf16_layout.c, and the tables of
 * "layouts" below) rather than as reorder primitives, and no execute passes a
 * scratchpad it does not need.
 *
 * Built without oneDNN (TG_HAVE_DNNL undefined), every entry point fails
 * with TG_ERR_UNSUPPORTED and says so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

static tg_status dnnl_failf(char *err, size_t errlen, tg_status st, const char *fmt,
                            const char *what) {
    if (err && errlen)
        snprintf(err, errlen, fmt, what);
    return st;
}

#ifndef TG_HAVE_DNNL

struct tg__dnnl {
    int unused;
};

static const char no_dnnl[] =
    "cpu %s: bf16 precision needs oneDNN, and this build has none (install libdnnl-dev and "
    "reconfigure)";

tg_status tg__dnnl_new(tg__dnnl **out, char *err, size_t errlen) {
    *out = NULL;
    return dnnl_failf(err, errlen, TG_ERR_UNSUPPORTED, no_dnnl, "backend");
}

void tg__dnnl_free(tg__dnnl *d) { (void)d; }

tg_status tg__dnnl_gemm(tg__dnnl *d, const tg__gemm_arg *ga, const tg__gemm_arg *gb, int64_t n,
                        int64_t m, int64_t k, const float *A, const float *B, float *C, char *err,
                        size_t errlen) {
    (void)d, (void)ga, (void)gb, (void)n, (void)m, (void)k, (void)A, (void)B, (void)C;
    return dnnl_failf(err, errlen, TG_ERR_UNSUPPORTED, no_dnnl, "matmul");
}

tg_status tg__dnnl_conv(tg__dnnl *d, int kind, bool bf16, const tg__conv_geom *g,
                        const tg_kview *in0, const tg_kview *in1, const tg_kview *bias, float *out,
                        char *err, size_t errlen) {
    (void)d, (void)kind, (void)bf16, (void)g, (void)in0, (void)in1, (void)bias, (void)out;
    return dnnl_failf(err, errlen, TG_ERR_UNSUPPORTED, no_dnnl, "conv2d");
}

#else

#include <dnnl.h>
#include <omp.h>

/* Primitives kept at once; a model has a few dozen distinct products. */
#define DNNL_CACHE 96
#define DNNL_KEY 16
#define DNNL_ARGS 5

enum {
    DK_MATMUL = 1,
    DK_CONV = 16
};

typedef struct dn_entry {
    int64_t key[DNNL_KEY];
    dnnl_primitive_t prim;
    dnnl_memory_t mem[DNNL_ARGS];
    int arg[DNNL_ARGS];
    int nargs;
    size_t scratch;
    uint64_t used;
} dn_entry;

/* A convolution (see "convolution" below): its primitive and the reorders
 * of its two inputs and of its result. */
/* How a reorder runs: not at all (the layouts agree), on our own loops for
 * the activations' layouts (see "layouts" below), or as oneDNN's primitive. */
enum { RO_NONE, RO_CVT, RO_TO_BLK, RO_FROM_BLK, RO_TO_MAP, RO_FROM_MAP, RO_DNNL };

typedef struct dn_reorder {
    int how;
    dnnl_primitive_t prim; /* RO_DNNL only */
    dnnl_memory_t src, dst;
    size_t from_bytes, to_bytes; /* sizes of the two layouts (blocked ones pad) */
    int64_t n, c, hw, blk;       /* the loops' shape: NCHW with HW = H W, channel block */
    bool bf16;                   /* RO_CVT, RO_TO_BLK, RO_TO_MAP: whether the result is bf16 */
    int32_t *map;                /* RO_*_MAP: each plain element's place in the other layout */
} dn_reorder;

typedef struct dn_conv {
    dn_entry main;
    dn_reorder in[2], out;
} dn_conv;

/* The convolutions live in their own small cache beside the products'. */
#define DNNL_CONVS 48

struct tg__dnnl_convs {
    dn_conv c[DNNL_CONVS];
    int n;
};

struct tg__dnnl {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dn_entry e[DNNL_CACHE];
    int n;
    uint64_t tick;
    /* bf16 copies of the two operands, and the scratchpad: grow only. */
    uint16_t *buf[2];
    size_t cap[2];
    void *scratch;
    size_t scratch_cap;
    /* Convolutions: plain f32 copies of strided inputs, the blocked result. */
    void *plain[2], *res;
    size_t plain_cap[2], res_cap;
    struct tg__dnnl_convs *convp;
};

static const char *dnnl_status_name(dnnl_status_t s) {
    switch (s) {
    case dnnl_out_of_memory:
        return "out of memory";
    case dnnl_invalid_arguments:
        return "invalid arguments";
    case dnnl_unimplemented:
        return "no implementation for this CPU and shape";
    default:
        return "failed";
    }
}

static void tg__dnnl_convs_free(tg__dnnl *d);

tg_status tg__dnnl_new(tg__dnnl **out, char *err, size_t errlen) {
    tg__dnnl *d = calloc(1, sizeof *d);
    *out = NULL;
    if (d && !(d->convp = calloc(1, sizeof *d->convp)))
        free(d), d = NULL;
    if (!d)
        return dnnl_failf(err, errlen, TG_ERR_NOMEM, "cpu %s: out of memory", "oneDNN state");
    dnnl_status_t s = dnnl_engine_create(&d->engine, dnnl_cpu, 0);
    if (s == dnnl_success)
        s = dnnl_stream_create(&d->stream, d->engine, dnnl_stream_default_flags);
    if (s != dnnl_success) {
        if (d->engine)
            dnnl_engine_destroy(d->engine);
        free(d->convp);
        free(d);
        return dnnl_failf(err, errlen, TG_ERR_BACKEND, "cpu oneDNN: cannot create the %s",
                          "CPU engine and stream");
    }
    *out = d;
    return TG_OK;
}

static void entry_free(dn_entry *e) {
    for (int i = 0; i < e->nargs; i++)
        if (e->mem[i])
            dnnl_memory_destroy(e->mem[i]);
    if (e->prim)
        dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

void tg__dnnl_free(tg__dnnl *d) {
    if (!d)
        return;
    for (int i = 0; i < d->n; i++)
        entry_free(&d->e[i]);
    tg__dnnl_convs_free(d);
    dnnl_stream_destroy(d->stream);
    dnnl_engine_destroy(d->engine);
    free(d->buf[0]), free(d->buf[1]), free(d->scratch);
    free(d->plain[0]), free(d->plain[1]), free(d->res), free(d->convp);
    free(d);
}

/* ---- the cache ---- */

static dn_entry *lookup(tg__dnnl *d, const int64_t *key) {
    for (int i = 0; i < d->n; i++)
        if (!memcmp(d->e[i].key, key, sizeof d->e[i].key)) {
            d->e[i].used = ++d->tick;
            return &d->e[i];
        }
    return NULL;
}

/* A free slot: a new one, or the least recently used one emptied. */
static dn_entry *slot(tg__dnnl *d) {
    if (d->n < DNNL_CACHE)
        return &d->e[d->n++];
    dn_entry *old = &d->e[0];
    for (int i = 1; i < d->n; i++)
        if (d->e[i].used < old->used)
            old = &d->e[i];
    entry_free(old);
    return old;
}

/* Makes the primitive of pd into e with a memory object per argument. */
static dnnl_status_t entry_make(tg__dnnl *d, dn_entry *e, dnnl_primitive_desc_t pd, const int *args,
                                int nargs) {
    dnnl_status_t s = dnnl_primitive_create(&e->prim, pd);
    for (int i = 0; i < nargs && s == dnnl_success; i++) {
        const dnnl_memory_desc_t *md =
            dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, args[i]);
        e->arg[i] = args[i];
        s = dnnl_memory_create(&e->mem[i], md, d->engine, DNNL_MEMORY_NONE);
        e->nargs = i + 1;
    }
    if (s == dnnl_success)
        e->scratch = dnnl_memory_desc_get_size(
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    /* No scratchpad argument where none is needed: each argument of an
     * execute costs a heap node in oneDNN's argument map. */
    if (s == dnnl_success && !e->scratch && e->arg[e->nargs - 1] == DNNL_ARG_SCRATCHPAD) {
        dnnl_memory_destroy(e->mem[--e->nargs]);
        e->mem[e->nargs] = NULL;
    }
    return s;
}

static dnnl_primitive_attr_t user_scratch_attr(void) {
    dnnl_primitive_attr_t attr = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success)
        return NULL;
    if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success) {
        dnnl_primitive_attr_destroy(attr);
        return NULL;
    }
    return attr;
}

/* Binds the data pointers (in argument order) and the scratchpad, runs. */
static tg_status entry_run(tg__dnnl *d, dn_entry *e, void *const *ptrs, char *err, size_t errlen) {
    dnnl_exec_arg_t args[DNNL_ARGS + 1];
    int n = 0;
    if (!tg__cpu_grow(&d->scratch, &d->scratch_cap, e->scratch ? e->scratch : 64))
        return dnnl_failf(err, errlen, TG_ERR_NOMEM, "cpu oneDNN: out of memory for the %s",
                          "scratchpad");
    for (int i = 0; i < e->nargs; i++) {
        if (e->arg[i] == DNNL_ARG_SCRATCHPAD)
            dnnl_memory_set_data_handle(e->mem[i], d->scratch);
        else
            dnnl_memory_set_data_handle(e->mem[i], ptrs[i]);
        args[n++] = (dnnl_exec_arg_t){e->arg[i], e->mem[i]};
    }
    dnnl_status_t s = dnnl_primitive_execute(e->prim, d->stream, n, args);
    if (s == dnnl_success)
        s = dnnl_stream_wait(d->stream);
    if (s != dnnl_success)
        return dnnl_failf(err, errlen, TG_ERR_BACKEND, "cpu oneDNN: a primitive failed to run: %s",
                          dnnl_status_name(s));
    return TG_OK;
}

/* ---- matmul ---- */

/* Strides of op(X) (rows x cols) packed from a matrix stored transposed or not. */
static void op_strides(bool trans, int64_t rows, int64_t cols, dnnl_dims_t st) {
    st[0] = trans ? 1 : cols;
    st[1] = trans ? rows : 1;
}

static tg_status matmul_entry(tg__dnnl *d, const int64_t *key, bool ta, bool tb, int64_t n,
                              int64_t m, int64_t k, dn_entry **out, char *err, size_t errlen) {
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_dims_t sa, sb, sc = {m, 1};
    op_strides(ta, n, k, sa);
    op_strides(tb, k, m, sb);
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = user_scratch_attr();
    dnnl_status_t s = attr ? dnnl_success : dnnl_out_of_memory;
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_strides(&a_md, 2, (dnnl_dims_t){n, k}, dnnl_bf16, sa);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_strides(&b_md, 2, (dnnl_dims_t){k, m}, dnnl_bf16, sb);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_strides(&c_md, 2, (dnnl_dims_t){n, m}, dnnl_f32, sc);
    if (s == dnnl_success)
        s = dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, &desc, attr, d->engine, NULL);
    const int before = d->n;
    dn_entry *e = slot(d);
    static const int args[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_SCRATCHPAD};
    if (s == dnnl_success)
        s = entry_make(d, e, pd, args, 4);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        entry_free(e);
        d->n = before < d->n ? before : d->n;
        return dnnl_failf(err, errlen, TG_ERR_UNSUPPORTED, "cpu oneDNN bf16 matmul: %s",
                          dnnl_status_name(s));
    }
    memcpy(e->key, key, sizeof e->key);
    e->used = ++d->tick;
    *out = e;
    return TG_OK;
}

tg_status tg__dnnl_gemm(tg__dnnl *d, const tg__gemm_arg *ga, const tg__gemm_arg *gb, int64_t n,
                        int64_t m, int64_t k, const float *A, const float *B, float *C, char *err,
                        size_t errlen) {
    const int64_t key[DNNL_KEY] = {DK_MATMUL, n, m, k, ga->trans, gb->trans};
    dn_entry *e = lookup(d, key);
    tg_status st = TG_OK;
    if (!e && (st = matmul_entry(d, key, ga->trans, gb->trans, n, m, k, &e, err, errlen)))
        return st;
    uint16_t *a16 = tg__cpu_grow((void **)&d->buf[0], &d->cap[0], (size_t)(n * k) * 2);
    uint16_t *b16 = tg__cpu_grow((void **)&d->buf[1], &d->cap[1], (size_t)(k * m) * 2);
    if (!a16 || !b16)
        return dnnl_failf(err, errlen, TG_ERR_NOMEM, "cpu oneDNN: out of memory for the %s",
                          "bf16 operands");
    /* Stored as they lie: op(A) is A (n x k) or A^T (A stored k x n). */
    if (ga->trans)
        tg__bf16_rows(a16, A, k, n, ga->ld);
    else
        tg__bf16_rows(a16, A, n, k, ga->ld);
    if (gb->trans)
        tg__bf16_rows(b16, B, m, k, gb->ld);
    else
        tg__bf16_rows(b16, B, k, m, gb->ld);
    void *const ptrs[] = {a16, b16, C, NULL};
    return entry_run(d, e, ptrs, err, errlen);
}

/* ---- convolution ---- */

/*
 * A convolution runs on the layouts oneDNN picks for it (blocked, e.g.
 * nChw16c, for its direct jit kernels, far faster than im2col on plain NCHW):
 * each input is reordered from our f32 NCHW (or OIHW) into the picked layout
 * and dtype (bf16: the rounding happens in the reorder, to nearest even), and
 * the f32 result is reordered back when its layout differs. Each reorder is a
 * primitive of the entry, made with it.
 */

static void reorder_free(dn_reorder *r) {
    free(r->map);
    if (r->prim)
        dnnl_primitive_destroy(r->prim);
    if (r->src)
        dnnl_memory_destroy(r->src);
    if (r->dst)
        dnnl_memory_destroy(r->dst);
    memset(r, 0, sizeof *r);
}

/* ---- layouts ---- */

/*
 * The activations' reorders run on our own loops rather than as oneDNN
 * primitives: every primitive execute allocates oneDNN's argument map on the
 * heap, and these layouts are simple. Three cases: plain NCHW f32 to plain
 * NCHW bf16 (a rounding), plain NCHW f32 to the channel-blocked layout nChwXc
 * (X = 8 or 16; f32 or bf16, channels padded to the block with zeros), and
 * nChwXc f32 back to NCHW f32. The weights' layouts (two or three inner
 * blocks, e.g. OIhw8i16o2i) are small: for them a table made with the entry
 * holds each plain element's place in the blocked layout, and the reorder is
 * a gather or a scatter through it. Anything else is oneDNN's reorder.
 */

/* Whether md is dense 4-d NCHW-order with only the channels blocked, and by
 * how many (*blk; 0: not blocked at all). */
static bool md_chan_blocked(const dnnl_memory_desc_t *md, int64_t *blk) {
    if (md->ndims != 4 || md->format_kind != dnnl_blocked || md->offset0)
        return false;
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    int64_t bl = 0;
    if (b->inner_nblks == 1 && b->inner_idxs[0] == 1 &&
        (b->inner_blks[0] == 8 || b->inner_blks[0] == 16))
        bl = b->inner_blks[0];
    else if (b->inner_nblks != 0)
        return false;
    const int64_t *pd = md->padded_dims, e = bl ? bl : 1;
    if (pd[0] != md->dims[0] || pd[2] != md->dims[2] || pd[3] != md->dims[3] ||
        pd[1] != (bl ? (md->dims[1] + bl - 1) / bl * bl : md->dims[1]))
        return false;
    const int64_t hw = pd[2] * pd[3];
    if (b->strides[3] != e || b->strides[2] != pd[3] * e || b->strides[1] != hw * e ||
        b->strides[0] != pd[1] * hw)
        return false;
    *blk = bl;
    return true;
}

/* Our own loops for from -> to, when they cover it (r->how set). */
static bool reorder_own(dn_reorder *r, const dnnl_memory_desc_t *from,
                        const dnnl_memory_desc_t *to) {
    int64_t bf, bt;
    if (!md_chan_blocked(from, &bf) || !md_chan_blocked(to, &bt) || from->data_type != dnnl_f32 ||
        (to->data_type != dnnl_f32 && to->data_type != dnnl_bf16))
        return false;
    r->n = from->dims[0], r->c = from->dims[1], r->hw = from->dims[2] * from->dims[3];
    r->bf16 = to->data_type == dnnl_bf16;
    if (!bf && !bt && r->bf16)
        r->how = RO_CVT;
    else if (!bf && bt)
        r->how = RO_TO_BLK, r->blk = bt;
    else if (bf && !bt && !r->bf16)
        r->how = RO_FROM_BLK, r->blk = bf;
    return r->how != RO_NONE;
}

/* Where element idx (logical, 4-d) lies in the blocked layout md. */
static int64_t blk_offset(const dnnl_memory_desc_t *md, const int64_t idx[4]) {
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    int64_t blk[4] = {1, 1, 1, 1}, rem[4], off = md->offset0, st = 1;
    for (int i = 0; i < b->inner_nblks; i++)
        blk[b->inner_idxs[i]] *= b->inner_blks[i];
    for (int d = 0; d < 4; d++) {
        off += idx[d] / blk[d] * b->strides[d];
        rem[d] = idx[d] % blk[d];
    }
    /* the innermost block is the last, stride 1 */
    for (int i = b->inner_nblks - 1; i >= 0; i--) {
        const int d = b->inner_idxs[i];
        off += rem[d] % b->inner_blks[i] * st;
        rem[d] /= b->inner_blks[i];
        st *= b->inner_blks[i];
    }
    return off;
}

/* A table reorder (RO_TO_MAP or RO_FROM_MAP) between the dense plain NCHW md
 * (the caller has checked it: md_chan_blocked, no block) and the blocked md
 * blk, when small enough; false when it does not apply. */
static bool reorder_map(dn_reorder *r, const dnnl_memory_desc_t *plain,
                        const dnnl_memory_desc_t *blk, int how) {
    const int64_t *dm = plain->dims;
    const int64_t numel = dm[0] * dm[1] * dm[2] * dm[3];
    if (blk->ndims != 4 || blk->format_kind != dnnl_blocked || numel > (1 << 22) ||
        dnnl_memory_desc_get_size(blk) / 2 > INT32_MAX)
        return false;
    for (int d = 0; d < 4; d++)
        if (blk->dims[d] != dm[d])
            return false;
    if (!(r->map = malloc((size_t)numel * sizeof *r->map)))
        return false;
    int64_t i = 0, idx[4];
    for (idx[0] = 0; idx[0] < dm[0]; idx[0]++)
        for (idx[1] = 0; idx[1] < dm[1]; idx[1]++)
            for (idx[2] = 0; idx[2] < dm[2]; idx[2]++)
                for (idx[3] = 0; idx[3] < dm[3]; idx[3]++)
                    r->map[i++] = (int32_t)blk_offset(blk, idx);
    r->n = numel;
    r->how = how;
    return true;
}

static void reorder_map_run(const dn_reorder *r, const void *from, void *to) {
    const int32_t *map = r->map;
    const int64_t n = r->n;
    if (r->how == RO_FROM_MAP) {
        const float *s = from;
        float *o = to;
        for (int64_t i = 0; i < n; i++)
            o[i] = s[map[i]];
        return;
    }
    const float *s = from;
    memset(to, 0, r->to_bytes); /* the padding */
    if (r->bf16)
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)to)[map[i]] = tg_bf16_from_f32(s[i]);
    else
        for (int64_t i = 0; i < n; i++)
            ((float *)to)[map[i]] = s[i];
}

static void reorder_own_run(const dn_reorder *r, const void *from, void *to) {
    if (r->how == RO_TO_MAP || r->how == RO_FROM_MAP)
        reorder_map_run(r, from, to);
    else if (r->how == RO_CVT)
        tg__bf16_rows(to, from, r->n * r->c, r->hw, r->hw);
    else if (r->how == RO_TO_BLK)
        tg__blk_from_planes(to, r->bf16, from, r->n, r->c, r->hw, r->blk);
    else
        tg__blk_to_planes(to, from, r->n, r->c, r->hw, r->blk);
}

/* A reorder from md `from` to md `to`, unless they are equal. */
static dnnl_status_t reorder_make(tg__dnnl *d, dn_reorder *r, const dnnl_memory_desc_t *from,
                                  const dnnl_memory_desc_t *to) {
    r->from_bytes = dnnl_memory_desc_get_size(from);
    r->to_bytes = dnnl_memory_desc_get_size(to);
    if (dnnl_memory_desc_equal(from, to))
        return dnnl_success;
    if (reorder_own(r, from, to))
        return dnnl_success;
    /* the weights: f32 plain to a blocked f32 or bf16, or blocked f32 back */
    int64_t pb;
    const bool f32_in = from->data_type == dnnl_f32;
    if (f32_in && (to->data_type == dnnl_f32 || to->data_type == dnnl_bf16) &&
        md_chan_blocked(from, &pb) && !pb) {
        r->bf16 = to->data_type == dnnl_bf16;
        if (reorder_map(r, from, to, RO_TO_MAP))
            return dnnl_success;
    } else if (f32_in && to->data_type == dnnl_f32 && md_chan_blocked(to, &pb) && !pb &&
               reorder_map(r, to, from, RO_FROM_MAP))
        return dnnl_success;
    r->how = RO_DNNL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_reorder_primitive_desc_create(&pd, from, d->engine, to, d->engine, NULL);
    if (s == dnnl_success)
        s = dnnl_primitive_create(&r->prim, pd);
    if (s == dnnl_success)
        s = dnnl_memory_create(&r->src, from, d->engine, DNNL_MEMORY_NONE);
    if (s == dnnl_success)
        s = dnnl_memory_create(&r->dst, to, d->engine, DNNL_MEMORY_NONE);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return s;
}

static tg_status reorder_run(tg__dnnl *d, const dn_reorder *r, void *from, void *to, char *err,
                             size_t errlen) {
    if (r->how != RO_DNNL) {
        reorder_own_run(r, from, to);
        return TG_OK;
    }
    dnnl_memory_set_data_handle(r->src, from);
    dnnl_memory_set_data_handle(r->dst, to);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, r->src}, {DNNL_ARG_TO, r->dst}};
    dnnl_status_t s = dnnl_primitive_execute(r->prim, d->stream, 2, args);
    if (s != dnnl_success)
        return dnnl_failf(err, errlen, TG_ERR_BACKEND, "cpu oneDNN: a reorder failed: %s",
                          dnnl_status_name(s));
    return TG_OK;
}

static void conv_free(dn_conv *c) {
    entry_free(&c->main);
    reorder_free(&c->in[0]);
    reorder_free(&c->in[1]);
    reorder_free(&c->out);
}

static void tg__dnnl_convs_free(tg__dnnl *d) {
    for (int i = 0; i < d->convp->n; i++)
        conv_free(&d->convp->c[i]);
}

static dn_conv *conv_lookup(tg__dnnl *d, const int64_t *key) {
    for (int i = 0; i < d->convp->n; i++)
        if (!memcmp(d->convp->c[i].main.key, key, sizeof d->convp->c[i].main.key)) {
            d->convp->c[i].main.used = ++d->tick;
            return &d->convp->c[i];
        }
    return NULL;
}

static dn_conv *conv_slot(tg__dnnl *d) {
    if (d->convp->n < DNNL_CONVS)
        return &d->convp->c[d->convp->n++];
    dn_conv *old = &d->convp->c[0];
    for (int i = 1; i < d->convp->n; i++)
        if (d->convp->c[i].main.used < old->main.used)
            old = &d->convp->c[i];
    conv_free(old);
    return old;
}

/* The descriptor of the convolution of kind over the operand descriptors
 * x, w, y (any layouts), and its primitive descriptor. */
static dnnl_status_t conv_pd(tg__dnnl *d, int kind, bool bias, const tg__conv_geom *g,
                             const dnnl_memory_desc_t *x, const dnnl_memory_desc_t *w,
                             const dnnl_memory_desc_t *y, const dnnl_memory_desc_t *xlo,
                             const dnnl_memory_desc_t *wlo, dnnl_primitive_attr_t attr,
                             dnnl_primitive_desc_t *pd) {
    const dnnl_dims_t st = {g->sh, g->sw}, dil = {g->dh - 1, g->dw - 1}, pl = {g->ph, g->pw},
                      pr = {(g->oh - 1) * g->sh + (g->r - 1) * g->dh + 1 - g->h - g->ph,
                            (g->ow - 1) * g->sw + (g->s - 1) * g->dw + 1 - g->w - g->pw};
    dnnl_memory_desc_t b_md;
    dnnl_convolution_desc_t fwd, desc;
    dnnl_primitive_desc_t hint = NULL;
    const dnnl_alg_kind_t alg = dnnl_convolution_direct;
    dnnl_status_t s = dnnl_memory_desc_init_by_tag(&b_md, 1, (dnnl_dims_t){g->k}, dnnl_f32, dnnl_x);
    /* The forward descriptor, also the hint of the two gradients. */
    if (s == dnnl_success)
        s = dnnl_dilated_convolution_forward_desc_init(&fwd, dnnl_forward_training, alg,
                                                       kind == 0 ? x : xlo, kind == 0 ? w : wlo,
                                                       bias ? &b_md : NULL, y, st, dil, pl, pr);
    if (s != dnnl_success || kind == 0)
        return s == dnnl_success ? dnnl_primitive_desc_create(pd, &fwd, attr, d->engine, NULL) : s;
    s = dnnl_primitive_desc_create(&hint, &fwd, NULL, d->engine, NULL);
    if (s == dnnl_success && kind == 1)
        s = dnnl_dilated_convolution_backward_data_desc_init(&desc, alg, x, w, y, st, dil, pl, pr);
    else if (s == dnnl_success)
        s = dnnl_dilated_convolution_backward_weights_desc_init(&desc, alg, x, w, NULL, y, st, dil,
                                                                pl, pr);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(pd, &desc, attr, d->engine, hint);
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    return s;
}

static tg_status conv_entry(tg__dnnl *d, const int64_t *key, int kind, bool bf16, bool bias,
                            const tg__conv_geom *g, dn_conv **out, char *err, size_t errlen) {
    const dnnl_data_type_t lo = bf16 ? dnnl_bf16 : dnnl_f32;
    const dnnl_dims_t xd = {g->n, g->c, g->h, g->w}, wd = {g->k, g->c, g->r, g->s},
                      yd = {g->n, g->k, g->oh, g->ow};
    /* Our plain f32 tensors, and "any" layouts in the product's dtypes. */
    dnnl_memory_desc_t xu, wu, yu, xa, wa, ya, xl, wl;
    dnnl_status_t s = dnnl_success;
    s = s ?: dnnl_memory_desc_init_by_tag(&xu, 4, xd, dnnl_f32, dnnl_nchw);
    s = s ?: dnnl_memory_desc_init_by_tag(&wu, 4, wd, dnnl_f32, dnnl_oihw);
    s = s ?: dnnl_memory_desc_init_by_tag(&yu, 4, yd, dnnl_f32, dnnl_nchw);
    s = s ?: dnnl_memory_desc_init_by_tag(&xl, 4, xd, lo, dnnl_format_tag_any);
    s = s ?: dnnl_memory_desc_init_by_tag(&wl, 4, wd, lo, dnnl_format_tag_any);
    /* What is read is low precision, what is written f32. */
    const dnnl_data_type_t xt = kind == 1 ? dnnl_f32 : lo, wt = kind == 2 ? dnnl_f32 : lo,
                           yt = kind == 0 ? dnnl_f32 : lo;
    s = s ?: dnnl_memory_desc_init_by_tag(&xa, 4, xd, xt, dnnl_format_tag_any);
    s = s ?: dnnl_memory_desc_init_by_tag(&wa, 4, wd, wt, dnnl_format_tag_any);
    s = s ?: dnnl_memory_desc_init_by_tag(&ya, 4, yd, yt, dnnl_format_tag_any);
    dnnl_primitive_attr_t attr = user_scratch_attr();
    dnnl_primitive_desc_t pd = NULL;
    if (!attr)
        s = dnnl_out_of_memory;
    s = s ?: conv_pd(d, kind, bias, g, &xa, &wa, &ya, &xl, &wl, attr, &pd);
    const int before = d->convp->n;
    dn_conv *c = conv_slot(d);
    int args[DNNL_ARGS], nargs = 0;
    /* The inputs in kernel order (x, w | g, w | x, g) and the output. */
    const int ain[3][2] = {{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS},
                           {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS},
                           {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST}};
    const int aout[3] = {DNNL_ARG_DST, DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_WEIGHTS};
    const dnnl_memory_desc_t *uin[3][2] = {{&xu, &wu}, {&yu, &wu}, {&xu, &yu}};
    const dnnl_memory_desc_t *uout[3] = {&yu, &xu, &wu};
    args[nargs++] = ain[kind][0], args[nargs++] = ain[kind][1];
    if (kind == 0 && bias)
        args[nargs++] = DNNL_ARG_BIAS;
    args[nargs++] = aout[kind];
    args[nargs++] = DNNL_ARG_SCRATCHPAD;
    s = s ?: entry_make(d, &c->main, pd, args, nargs);
    for (int i = 0; i < 2 && s == dnnl_success; i++)
        s = reorder_make(d, &c->in[i], uin[kind][i],
                         dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, args[i]));
    if (s == dnnl_success)
        s = reorder_make(d, &c->out,
                         dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, aout[kind]),
                         uout[kind]);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        conv_free(c);
        d->convp->n = before < d->convp->n ? before : d->convp->n;
        return dnnl_failf(err, errlen, TG_ERR_UNSUPPORTED, "cpu oneDNN convolution: %s",
                          dnnl_status_name(s));
    }
    memcpy(c->main.key, key, sizeof c->main.key);
    c->main.used = ++d->tick;
    *out = c;
    return TG_OK;
}

/* A contiguous f32 copy of v in buf (v itself when it is contiguous). */
static void *plain_f32(const tg_kview *v, void **buf, size_t *cap) {
    if (tg__kview_contig(v))
        return v->data;
    const int64_t n = tg__kview_numel(v);
    float *dst = tg__cpu_grow(buf, cap, (size_t)n * 4);
    if (!dst)
        return NULL;
    const float *src = v->data;
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0, q = i;
        for (int d = v->ndim - 1; d >= 0; d--) {
            off += (q % v->shape[d]) * v->strides[d];
            q /= v->shape[d];
        }
        dst[i] = src[off];
    }
    return dst;
}

tg_status tg__dnnl_conv(tg__dnnl *d, int kind, bool bf16, const tg__conv_geom *g,
                        const tg_kview *in0, const tg_kview *in1, const tg_kview *bias, float *out,
                        char *err, size_t errlen) {
    const int64_t key[DNNL_KEY] = {DK_CONV + kind, bf16,  bias != NULL, g->n, g->c,  g->h,
                                   g->w,           g->k,  g->r,         g->s, g->sh, g->sw,
                                   g->ph,          g->pw, g->dh,        g->dw};
    dn_conv *c = conv_lookup(d, key);
    tg_status st = TG_OK;
    if (!c && (st = conv_entry(d, key, kind, bf16, bias != NULL, g, &c, err, errlen)))
        return st;
    const tg_kview *in[2] = {in0, in1};
    void *ptrs[DNNL_ARGS];
    for (int i = 0; i < 2; i++) {
        void *src = plain_f32(in[i], &d->plain[i], &d->plain_cap[i]);
        void *dst =
            src && c->in[i].how ? tg__cpu_grow((void **)&d->buf[i], &d->cap[i], c->in[i].to_bytes) : src;
        if (!dst)
            return dnnl_failf(err, errlen, TG_ERR_NOMEM, "cpu oneDNN: out of memory for the %s",
                              "convolution's operands");
        if (c->in[i].how && (st = reorder_run(d, &c->in[i], src, dst, err, errlen)))
            return st;
        ptrs[i] = dst;
    }
    int i = 2;
    if (bias)
        ptrs[i++] = bias->data;
    void *res = c->out.how ? tg__cpu_grow(&d->res, &d->res_cap, c->out.from_bytes) : out;
    if (!res)
        return dnnl_failf(err, errlen, TG_ERR_NOMEM, "cpu oneDNN: out of memory for the %s",
                          "convolution's result");
    ptrs[i] = res;
    if ((st = entry_run(d, &c->main, ptrs, err, errlen)))
        return st;
    if (c->out.how && (st = reorder_run(d, &c->out, res, out, err, errlen)))
        return st;
    return TG_OK;
}

#endif
