/*
 * kernels/cpu/cpu_dnnl.c: bf16 products through oneDNN, for the autocast
 * precision (tg_ctx_set_precision in runtime.h).
 *
 * Debian's OpenBLAS has no bf16 gemm, so the bf16 matmul and the three
 * convolution rows run on oneDNN's primitives: the f32 operands are rounded
 * to bf16 (nearest even) into buffers this state owns, the primitive
 * multiplies in bf16 and accumulates and writes in f32. Primitives are made
 * once per shape and kept (a small cache, oldest out when full), with their
 * memory objects and a scratchpad this state owns (user scratchpad mode), so
 * a steady training step creates none. oneDNN's execute call itself still
 * allocates a small argument map on the heap each time (its C++ runtime):
 * that is the one heap use per product left in a steady bf16 step.
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

bool tg__dnnl_built(void) { return false; }

#else

#include <dnnl.h>
#include <omp.h>

bool tg__dnnl_built(void) { return true; }

/* Primitives kept at once; a model has a few dozen distinct products. */
#define DNNL_CACHE 96
#define DNNL_KEY 16
#define DNNL_ARGS 5

enum { DK_MATMUL = 1, DK_CONV = 16 };

typedef struct dnnl_entry {
    int64_t key[DNNL_KEY];
    dnnl_primitive_t prim;
    dnnl_memory_t mem[DNNL_ARGS];
    int arg[DNNL_ARGS];
    int nargs;
    size_t scratch;
    uint64_t used;
} dnnl_entry;

struct tg__dnnl {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_entry e[DNNL_CACHE];
    int n;
    uint64_t tick;
    /* bf16 copies of the two operands, and the scratchpad: grow only. */
    uint16_t *buf[2];
    size_t cap[2];
    void *scratch;
    size_t scratch_cap;
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

tg_status tg__dnnl_new(tg__dnnl **out, char *err, size_t errlen) {
    tg__dnnl *d = calloc(1, sizeof *d);
    *out = NULL;
    if (!d)
        return dnnl_failf(err, errlen, TG_ERR_NOMEM, "cpu %s: out of memory", "oneDNN state");
    dnnl_status_t s = dnnl_engine_create(&d->engine, dnnl_cpu, 0);
    if (s == dnnl_success)
        s = dnnl_stream_create(&d->stream, d->engine, dnnl_stream_default_flags);
    if (s != dnnl_success) {
        if (d->engine)
            dnnl_engine_destroy(d->engine);
        free(d);
        return dnnl_failf(err, errlen, TG_ERR_BACKEND, "cpu oneDNN: cannot create the %s",
                          "CPU engine and stream");
    }
    *out = d;
    return TG_OK;
}

static void entry_free(dnnl_entry *e) {
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
    dnnl_stream_destroy(d->stream);
    dnnl_engine_destroy(d->engine);
    free(d->buf[0]), free(d->buf[1]), free(d->scratch);
    free(d);
}

/* A buffer of at least nbytes in slot, grown (never shrunk) as needed. */
static void *grow(void **p, size_t *cap, size_t nbytes) {
    if (nbytes <= *cap)
        return *p;
    void *q = aligned_alloc(64, (nbytes + 63) / 64 * 64);
    if (!q)
        return NULL;
    free(*p);
    *p = q;
    *cap = nbytes;
    return q;
}

/* ---- f32 to bf16, nearest even, in parallel over large buffers ---- */

__attribute__((target_clones("arch=skylake-avx512", "avx2", "default"))) static void
cvt_row(uint16_t *dst, const float *src, int64_t n, int64_t stride) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = tg_bf16_from_f32(src[i * stride]);
}

/* Rounds a strided f32 view into a contiguous bf16 buffer, row-major. */
static void cvt_view(uint16_t *dst, const tg_kview *v) {
    const int nd = v->ndim;
    const int64_t inner = nd ? v->shape[nd - 1] : 1, is = nd ? v->strides[nd - 1] : 1;
    const int64_t rows = inner ? tg__kview_numel(v) / inner : 0;
    const float *src = (const float *)v->data;
#pragma omp parallel for schedule(static) if (rows * inner >= (1 << 16))
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = 0, q = r;
        for (int d = nd - 2; d >= 0; d--) {
            off += (q % v->shape[d]) * v->strides[d];
            q /= v->shape[d];
        }
        cvt_row(dst + r * inner, src + off, inner, is);
    }
}

/* Rounds rows x cols (row stride ld) into a packed buffer (row stride cols). */
static void cvt_matrix(uint16_t *dst, const float *src, int64_t rows, int64_t cols, int64_t ld) {
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
    for (int64_t r = 0; r < rows; r++)
        cvt_row(dst + r * cols, src + r * ld, cols, 1);
}

/* ---- the cache ---- */

static dnnl_entry *lookup(tg__dnnl *d, const int64_t *key) {
    for (int i = 0; i < d->n; i++)
        if (!memcmp(d->e[i].key, key, sizeof d->e[i].key)) {
            d->e[i].used = ++d->tick;
            return &d->e[i];
        }
    return NULL;
}

/* A free slot: a new one, or the least recently used one emptied. */
static dnnl_entry *slot(tg__dnnl *d) {
    if (d->n < DNNL_CACHE)
        return &d->e[d->n++];
    dnnl_entry *old = &d->e[0];
    for (int i = 1; i < d->n; i++)
        if (d->e[i].used < old->used)
            old = &d->e[i];
    entry_free(old);
    return old;
}

/* Makes the primitive of pd into e with a memory object per argument. */
static dnnl_status_t entry_make(tg__dnnl *d, dnnl_entry *e, dnnl_primitive_desc_t pd,
                                const int *args, int nargs) {
    dnnl_status_t s = dnnl_primitive_create(&e->prim, pd);
    for (int i = 0; i < nargs && s == dnnl_success; i++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md,
                                                                     args[i]);
        e->arg[i] = args[i];
        s = dnnl_memory_create(&e->mem[i], md, d->engine, DNNL_MEMORY_NONE);
        e->nargs = i + 1;
    }
    if (s == dnnl_success)
        e->scratch = dnnl_memory_desc_get_size(
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
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
static tg_status entry_run(tg__dnnl *d, dnnl_entry *e, void *const *ptrs, char *err,
                           size_t errlen) {
    dnnl_exec_arg_t args[DNNL_ARGS + 1];
    int n = 0;
    if (!grow(&d->scratch, &d->scratch_cap, e->scratch ? e->scratch : 64))
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
                              int64_t m, int64_t k, dnnl_entry **out, char *err, size_t errlen) {
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
    dnnl_entry *e = slot(d);
    static const int args[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_SCRATCHPAD};
    if (s == dnnl_success)
        s = entry_make(d, e, pd, args, 4);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        entry_free(e);
        d->n--;
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
    dnnl_entry *e = lookup(d, key);
    tg_status st = TG_OK;
    if (!e && (st = matmul_entry(d, key, ga->trans, gb->trans, n, m, k, &e, err, errlen)))
        return st;
    uint16_t *a16 = grow((void **)&d->buf[0], &d->cap[0], (size_t)(n * k) * 2);
    uint16_t *b16 = grow((void **)&d->buf[1], &d->cap[1], (size_t)(k * m) * 2);
    if (!a16 || !b16)
        return dnnl_failf(err, errlen, TG_ERR_NOMEM, "cpu oneDNN: out of memory for the %s",
                          "bf16 operands");
    /* Stored as they lie: op(A) is A (n x k) or A^T (A stored k x n). */
    if (ga->trans)
        cvt_matrix(a16, A, k, n, ga->ld);
    else
        cvt_matrix(a16, A, n, k, ga->ld);
    if (gb->trans)
        cvt_matrix(b16, B, m, k, gb->ld);
    else
        cvt_matrix(b16, B, k, m, gb->ld);
    void *const ptrs[] = {a16, b16, C, NULL};
    return entry_run(d, e, ptrs, err, errlen);
}

/* ---- convolution ---- */

static tg_status conv_entry(tg__dnnl *d, const int64_t *key, int kind, bool bf16, bool bias,
                            const tg__conv_geom *g, dnnl_entry **out, char *err, size_t errlen) {
    const dnnl_data_type_t lo = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t x_md, w_md, y_md, b_md, xf_md, wf_md, yf_md;
    const dnnl_dims_t strides = {g->sh, g->sw}, dil = {g->dh - 1, g->dw - 1},
                      pl = {g->ph, g->pw},
                      pr = {(g->oh - 1) * g->sh + (g->r - 1) * g->dh + 1 - g->h - g->ph,
                            (g->ow - 1) * g->sw + (g->s - 1) * g->dw + 1 - g->w - g->pw};
    const dnnl_dims_t xd = {g->n, g->c, g->h, g->w}, wd = {g->k, g->c, g->r, g->s},
                      yd = {g->n, g->k, g->oh, g->ow}, bd = {g->k};
    dnnl_status_t s = dnnl_success;
    /* Low precision where the operand is read, f32 where it is written. */
    s = s ?: dnnl_memory_desc_init_by_tag(&x_md, 4, xd, lo, dnnl_nchw);
    s = s ?: dnnl_memory_desc_init_by_tag(&xf_md, 4, xd, dnnl_f32, dnnl_nchw);
    s = s ?: dnnl_memory_desc_init_by_tag(&w_md, 4, wd, lo, dnnl_oihw);
    s = s ?: dnnl_memory_desc_init_by_tag(&wf_md, 4, wd, dnnl_f32, dnnl_oihw);
    s = s ?: dnnl_memory_desc_init_by_tag(&y_md, 4, yd, lo, dnnl_nchw);
    s = s ?: dnnl_memory_desc_init_by_tag(&yf_md, 4, yd, dnnl_f32, dnnl_nchw);
    s = s ?: dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_x);
    dnnl_convolution_desc_t fwd, desc;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    dnnl_primitive_attr_t attr = user_scratch_attr();
    if (!attr)
        s = dnnl_out_of_memory;
    s = s ?: dnnl_dilated_convolution_forward_desc_init(&fwd, dnnl_forward_training,
                                                        dnnl_convolution_direct, &x_md, &w_md,
                                                        bias ? &b_md : NULL, &yf_md, strides, dil,
                                                        pl, pr);
    int args[DNNL_ARGS], nargs = 0;
    if (kind == 0) {
        s = s ?: dnnl_primitive_desc_create(&pd, &fwd, attr, d->engine, NULL);
        args[nargs++] = DNNL_ARG_SRC, args[nargs++] = DNNL_ARG_WEIGHTS;
        if (bias)
            args[nargs++] = DNNL_ARG_BIAS;
        args[nargs++] = DNNL_ARG_DST;
    } else {
        s = s ?: dnnl_primitive_desc_create(&hint, &fwd, NULL, d->engine, NULL);
        if (kind == 1) {
            s = s ?: dnnl_dilated_convolution_backward_data_desc_init(
                          &desc, dnnl_convolution_direct, &xf_md, &w_md, &y_md, strides, dil, pl,
                          pr);
            args[nargs++] = DNNL_ARG_DIFF_DST, args[nargs++] = DNNL_ARG_WEIGHTS;
            args[nargs++] = DNNL_ARG_DIFF_SRC;
        } else {
            s = s ?: dnnl_dilated_convolution_backward_weights_desc_init(
                          &desc, dnnl_convolution_direct, &x_md, &wf_md, NULL, &y_md, strides, dil,
                          pl, pr);
            args[nargs++] = DNNL_ARG_SRC, args[nargs++] = DNNL_ARG_DIFF_DST;
            args[nargs++] = DNNL_ARG_DIFF_WEIGHTS;
        }
        s = s ?: dnnl_primitive_desc_create(&pd, &desc, attr, d->engine, hint);
    }
    args[nargs++] = DNNL_ARG_SCRATCHPAD;
    dnnl_entry *e = slot(d);
    s = s ?: entry_make(d, e, pd, args, nargs);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        entry_free(e);
        d->n--;
        return dnnl_failf(err, errlen, TG_ERR_UNSUPPORTED, "cpu oneDNN convolution: %s",
                          dnnl_status_name(s));
    }
    memcpy(e->key, key, sizeof e->key);
    e->used = ++d->tick;
    *out = e;
    return TG_OK;
}

/* in0/in1: x, w (forward; bias may be given), g, w (kind 1: the gradient of
 * x) or x, g (kind 2: the gradient of w); out is f32 and contiguous. With
 * bf16 false both inputs must be contiguous f32 (oneDNN's f32 convolution). */
tg_status tg__dnnl_conv(tg__dnnl *d, int kind, bool bf16, const tg__conv_geom *g,
                        const tg_kview *in0, const tg_kview *in1, const tg_kview *bias, float *out,
                        char *err, size_t errlen) {
    const int64_t key[DNNL_KEY] = {DK_CONV + kind, bf16, bias != NULL, g->n, g->c, g->h, g->w,
                                   g->k, g->r, g->s, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw};
    dnnl_entry *e = lookup(d, key);
    tg_status st = TG_OK;
    if (!e && (st = conv_entry(d, key, kind, bf16, bias != NULL, g, &e, err, errlen)))
        return st;
    void *ptrs[DNNL_ARGS] = {in0->data, in1->data};
    if (bf16) {
        ptrs[0] = grow((void **)&d->buf[0], &d->cap[0], (size_t)tg__kview_numel(in0) * 2);
        ptrs[1] = grow((void **)&d->buf[1], &d->cap[1], (size_t)tg__kview_numel(in1) * 2);
        if (!ptrs[0] || !ptrs[1])
            return dnnl_failf(err, errlen, TG_ERR_NOMEM, "cpu oneDNN: out of memory for the %s",
                              "bf16 operands");
        cvt_view(ptrs[0], in0);
        cvt_view(ptrs[1], in1);
    }
    int i = 2;
    if (bias)
        ptrs[i++] = bias->data;
    ptrs[i] = out;
    return entry_run(d, e, ptrs, err, errlen);
}

#endif
