/*
 * kernels/cpu/cpu_conv.c: 2-D convolution (NCHW, groups = 1) and its two
 * gradients, by im2col and one OpenBLAS gemm per call.
 *
 * The batch is split into runs of samples, one per OpenMP thread, and each
 * thread runs im2col, one single-threaded gemm per sample and col2im in its
 * own slot of the workspace the runtime hands every kernel as its last input
 * (so no kernel allocates, a sample's column matrix stays in cache, and no
 * threaded gemm forks and joins, or allocates its job array, per call). The
 * weight gradient is summed per thread and the partial sums added in thread
 * order, so one thread count always gives the same bits.
 *
 * Parameters (tg_op_params.ints): [0..1] stride, [2..3] pad, [4..5]
 * dilation, [6] has bias (conv2d), [7..8] the spatial size of the tensor a
 * gradient kernel produces (H, W of x, or R, S of w).
 */
#include <cblas.h>
#include <limits.h>
#include <omp.h>

#include "cpu.h"

static bool cpu_conv_geom_ok(const tg__conv_geom *g) {
    return g->oh == (g->h + 2 * g->ph - g->dh * (g->r - 1) - 1) / g->sh + 1 &&
           g->ow == (g->w + 2 * g->pw - g->dw * (g->s - 1) - 1) / g->sw + 1 && g->sh > 0 &&
           g->sw > 0 && g->dh > 0 && g->dw > 0;
}

/* The range [lo, hi) of output positions o whose input o*st - pad + off lies
 * in [0, size). */
static void cpu_valid_range(int64_t size, int64_t nout, int64_t st, int64_t pad, int64_t off,
                            int64_t *lo, int64_t *hi) {
    int64_t base = off - pad; /* input index at o = 0 */
    int64_t l = base >= 0 ? 0 : (-base + st - 1) / st;
    int64_t h = size - base <= 0 ? 0 : (size - base + st - 1) / st;
    if (h > nout)
        h = nout;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* The stride-1, dilation-1 im2col of one sample (below) copies each output
 * row as whole chunks of this many bytes and builds each zero-padded input
 * plane, at most CPU_IM2COL_PLANE bytes, on the stack. */
#define CPU_IM2COL_CHUNK 64
#define CPU_IM2COL_PLANE 32768

/*
 * One sample's im2col for stride 1 and dilation 1 with unit-stride rows, the
 * cnns' case. Each channel plane is first copied into a zero-padded plane,
 * so every row of the column matrix is a plain copy from it without edge
 * tests, done as whole chunks: the last chunk of a row runs past the row's
 * end into the next one, which is written afterwards (rows in order, (c, r,
 * s) blocks in order), and past the matrix's end by less than a chunk, into
 * memory the caller says is free (slack values). The general loop spent most
 * of its time in bounds tests and short remainder loops. Returns false, doing
 * nothing, when the case does not apply.
 */
#define CPU_IM2COL_S1(TYPE)                                                                        \
    TG__CPU_CLONES static bool cpu_im2col_s1_##TYPE(const tg__conv_geom *g, const TYPE *x,         \
                                                    const int64_t *xs, TYPE *col, int64_t slack) { \
        enum {                                                                                     \
            CH = CPU_IM2COL_CHUNK / sizeof(TYPE)                                                   \
        };                                                                                         \
        const int64_t hp = g->h + 2 * g->ph, wp = g->w + 2 * g->pw + CH;                           \
        if (g->n != 1 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 || xs[3] != 1 ||     \
            slack < CH || hp * wp * (int64_t)sizeof(TYPE) > CPU_IM2COL_PLANE)                      \
            return false;                                                                          \
        TYPE plane[CPU_IM2COL_PLANE / sizeof(TYPE)];                                               \
        const int64_t ohw = g->oh * g->ow, nch = (g->ow + CH - 1) / CH;                            \
        for (int64_t i = 0; i < hp * wp; i++)                                                      \
            plane[i] = 0;                                                                          \
        for (int64_t c = 0; c < g->c; c++) {                                                       \
            const TYPE *xp = x + c * xs[1];                                                        \
            for (int64_t ih = 0; ih < g->h; ih++) {                                                \
                TYPE *pr = plane + (ih + g->ph) * wp + g->pw;                                      \
                const TYPE *xr = xp + ih * xs[2];                                                  \
                for (int64_t iw = 0; iw < g->w; iw++)                                              \
                    pr[iw] = xr[iw];                                                               \
            }                                                                                      \
            for (int64_t r = 0; r < g->r; r++)                                                     \
                for (int64_t s = 0; s < g->s; s++) {                                               \
                    TYPE *d = col + ((c * g->r + r) * g->s + s) * ohw;                             \
                    for (int64_t oh = 0; oh < g->oh; oh++) {                                       \
                        const TYPE *src = plane + (oh + r) * wp + s;                               \
                        TYPE *dr = d + oh * g->ow;                                                 \
                        for (int64_t q = 0; q < nch; q++)                                          \
                            for (int e = 0; e < CH; e++)                                           \
                                dr[q * CH + e] = src[q * CH + e];                                  \
                    }                                                                              \
                }                                                                                  \
        }                                                                                          \
        return true;                                                                               \
    }
CPU_IM2COL_S1(float)
CPU_IM2COL_S1(double)

/* im2col and col2im for one dtype. xs are the strides of x over (n, c, h, w);
 * ld is the column matrix's row length N*OH*OW; slack values after the
 * matrix may be scribbled on (cpu_im2col_s1). */
#define CPU_CONV_FAMILY(TYPE, GEMM)                                                                \
    TG__CPU_CLONES static void cpu_im2col_##TYPE(const tg__conv_geom *g, const TYPE *x,            \
                                                 const int64_t *xs, TYPE *col, int64_t slack) {    \
        if (cpu_im2col_s1_##TYPE(g, x, xs, col, slack))                                            \
            return;                                                                                \
        const int64_t ohw = g->oh * g->ow, ld = g->n * ohw;                                        \
        for (int64_t n = 0; n < g->n; n++) {                                                       \
            for (int64_t c = 0; c < g->c; c++) {                                                   \
                const TYPE *xp = x + n * xs[0] + c * xs[1];                                        \
                for (int64_t r = 0; r < g->r; r++) {                                               \
                    int64_t ohlo, ohhi;                                                            \
                    cpu_valid_range(g->h, g->oh, g->sh, g->ph, r * g->dh, &ohlo, &ohhi);           \
                    for (int64_t s = 0; s < g->s; s++) {                                           \
                        int64_t owlo, owhi;                                                        \
                        cpu_valid_range(g->w, g->ow, g->sw, g->pw, s * g->dw, &owlo, &owhi);       \
                        TYPE *d = col + ((c * g->r + r) * g->s + s) * ld + n * ohw;                \
                        for (int64_t oh = 0; oh < g->oh; oh++) {                                   \
                            TYPE *dr = d + oh * g->ow;                                             \
                            if (oh < ohlo || oh >= ohhi) {                                         \
                                for (int64_t ow = 0; ow < g->ow; ow++)                             \
                                    dr[ow] = 0;                                                    \
                                continue;                                                          \
                            }                                                                      \
                            const int64_t ih = oh * g->sh - g->ph + r * g->dh;                     \
                            const TYPE *xr = xp + ih * xs[2];                                      \
                            const int64_t iw0 = s * g->dw - g->pw, st = g->sw * xs[3];             \
                            for (int64_t ow = 0; ow < owlo; ow++)                                  \
                                dr[ow] = 0;                                                        \
                            /* Unit stride (the common case) is a plain copy the compiler          \
                             * vectorises; the strided loop is a scalar gather. */                 \
                            if (st == 1) {                                                         \
                                const TYPE *xq = xr + iw0 * xs[3];                                 \
                                for (int64_t ow = owlo; ow < owhi; ow++)                           \
                                    dr[ow] = xq[ow];                                               \
                            } else {                                                               \
                                for (int64_t ow = owlo; ow < owhi; ow++)                           \
                                    dr[ow] = xr[iw0 * xs[3] + ow * st];                            \
                            }                                                                      \
                            for (int64_t ow = owhi; ow < g->ow; ow++)                              \
                                dr[ow] = 0;                                                        \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* dx (contiguous, zeroed here) += col2im(col). */                                             \
    TG__CPU_CLONES static void cpu_col2im_##TYPE(const tg__conv_geom *g, const TYPE *col,          \
                                                 TYPE *dx) {                                       \
        const int64_t ohw = g->oh * g->ow, ld = g->n * ohw;                                        \
        for (int64_t n = 0; n < g->n; n++) {                                                       \
            for (int64_t c = 0; c < g->c; c++) {                                                   \
                TYPE *xp = dx + (n * g->c + c) * g->h * g->w;                                      \
                for (int64_t i = 0; i < g->h * g->w; i++)                                          \
                    xp[i] = 0;                                                                     \
                for (int64_t r = 0; r < g->r; r++) {                                               \
                    int64_t ohlo, ohhi;                                                            \
                    cpu_valid_range(g->h, g->oh, g->sh, g->ph, r * g->dh, &ohlo, &ohhi);           \
                    for (int64_t s = 0; s < g->s; s++) {                                           \
                        int64_t owlo, owhi;                                                        \
                        cpu_valid_range(g->w, g->ow, g->sw, g->pw, s * g->dw, &owlo, &owhi);       \
                        const TYPE *d = col + ((c * g->r + r) * g->s + s) * ld + n * ohw;          \
                        const int64_t iw0 = s * g->dw - g->pw;                                     \
                        for (int64_t oh = ohlo; oh < ohhi; oh++) {                                 \
                            const int64_t ih = oh * g->sh - g->ph + r * g->dh;                     \
                            TYPE *xr = xp + ih * g->w + iw0;                                       \
                            const TYPE *dr = d + oh * g->ow;                                       \
                            if (g->sw == 1) /* a unit-stride add that vectorises */                \
                                for (int64_t ow = owlo; ow < owhi; ow++)                           \
                                    xr[ow] += dr[ow];                                              \
                            else                                                                   \
                                for (int64_t ow = owlo; ow < owhi; ow++)                           \
                                    xr[ow * g->sw] += dr[ow];                                      \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* gp (K, N*OH*OW) from g (N, K, OH, OW) with strides gs. */                                   \
    static void cpu_gpack_##TYPE(const tg__conv_geom *g, const TYPE *src, const int64_t *gs,       \
                                 TYPE *gp) {                                                       \
        const int64_t ohw = g->oh * g->ow, ld = g->n * ohw;                                        \
        for (int64_t n = 0; n < g->n; n++) {                                                       \
            for (int64_t k = 0; k < g->k; k++) {                                                   \
                const TYPE *sp = src + n * gs[0] + k * gs[1];                                      \
                TYPE *d = gp + k * ld + n * ohw;                                                   \
                for (int64_t oh = 0; oh < g->oh; oh++)                                             \
                    for (int64_t ow = 0; ow < g->ow; ow++)                                         \
                        d[oh * g->ow + ow] = sp[oh * gs[2] + ow * gs[3]];                          \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* One thread's share of the forward pass: samples [lo, hi), one gemm                          \
     * each straight into the output, with slot as its column matrix. */                           \
    static void cpu_conv_fwd_part_##TYPE(const tg__conv_geom *g, const tg_kview *x, const TYPE *w, \
                                         const tg_kview *b, TYPE *slot, TYPE *out, int64_t lo,     \
                                         int64_t hi) {                                             \
        const int64_t ohw = g->oh * g->ow, crs = g->c * g->r * g->s;                               \
        tg__conv_geom g1 = *g;                                                                     \
        g1.n = 1;                                                                                  \
        for (int64_t n = lo; n < hi; n++) {                                                        \
            TYPE *on = out + n * g->k * ohw;                                                       \
            cpu_im2col_##TYPE(&g1, (const TYPE *)x->data + n * x->strides[0], x->strides, slot,    \
                              g->k * ohw);                                                         \
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->k, (int)ohw, (int)crs, 1, w,   \
                 (int)crs, slot, (int)ohw, 0, on, (int)ohw);                                       \
            if (b)                                                                                 \
                for (int64_t k = 0; k < g->k; k++) {                                               \
                    const TYPE bias = ((const TYPE *)b->data)[k * b->strides[0]];                  \
                    for (int64_t j = 0; j < ohw; j++)                                              \
                        on[k * ohw + j] += bias;                                                   \
                }                                                                                  \
        }                                                                                          \
    }                                                                                              \
    /* g of sample n as a (K, OH*OW) row-major matrix: in place when its                           \
     * layout already is, else packed into tmp. */                                                 \
    static const TYPE *cpu_conv_gmat_##TYPE(const tg__conv_geom *g, const tg_kview *gv, int64_t n, \
                                            TYPE *tmp) {                                           \
        const int64_t *gs = gv->strides, ohw = g->oh * g->ow;                                      \
        const TYPE *gn = (const TYPE *)gv->data + n * gs[0];                                       \
        if ((g->ow == 1 || gs[3] == 1) && (g->oh == 1 || gs[2] == g->ow) &&                        \
            (g->k == 1 || gs[1] == ohw))                                                           \
            return gn;                                                                             \
        tg__conv_geom g1 = *g;                                                                     \
        g1.n = 1;                                                                                  \
        cpu_gpack_##TYPE(&g1, gn, gs, tmp);                                                        \
        return tmp;                                                                                \
    }                                                                                              \
    static void cpu_conv_bwi_part_##TYPE(const tg__conv_geom *g, const tg_kview *gv,               \
                                         const TYPE *w, TYPE *slot, TYPE *dx, int64_t lo,          \
                                         int64_t hi) {                                             \
        const int64_t ohw = g->oh * g->ow, crs = g->c * g->r * g->s;                               \
        tg__conv_geom g1 = *g;                                                                     \
        g1.n = 1;                                                                                  \
        TYPE *dcol = slot, *tmp = slot + crs * ohw;                                                \
        for (int64_t n = lo; n < hi; n++) {                                                        \
            const TYPE *gn = cpu_conv_gmat_##TYPE(g, gv, n, tmp);                                  \
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)crs, (int)ohw, (int)g->k, 1, w,     \
                 (int)crs, gn, (int)ohw, 0, dcol, (int)ohw);                                       \
            cpu_col2im_##TYPE(&g1, dcol, dx + n * g->c * g->h * g->w);                             \
        }                                                                                          \
    }                                                                                              \
    /* acc (K, CRS) = the sum over samples [lo, hi) of g_n col_n^T (zero when                      \
     * the range is empty). */                                                                     \
    static void cpu_conv_bww_part_##TYPE(const tg__conv_geom *g, const tg_kview *x,                \
                                         const tg_kview *gv, TYPE *slot, TYPE *acc, int64_t lo,    \
                                         int64_t hi) {                                             \
        const int64_t ohw = g->oh * g->ow, crs = g->c * g->r * g->s;                               \
        tg__conv_geom g1 = *g;                                                                     \
        g1.n = 1;                                                                                  \
        TYPE *col = slot, *tmp = slot + crs * ohw;                                                 \
        if (lo >= hi)                                                                              \
            for (int64_t i = 0; i < g->k * crs; i++)                                               \
                acc[i] = 0;                                                                        \
        for (int64_t n = lo; n < hi; n++) {                                                        \
            /* im2col first: it may scribble on the start of tmp. */                               \
            cpu_im2col_##TYPE(&g1, (const TYPE *)x->data + n * x->strides[0], x->strides, col,     \
                              g->k * ohw);                                                         \
            const TYPE *gn = cpu_conv_gmat_##TYPE(g, gv, n, tmp);                                  \
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g->k, (int)crs, (int)ohw, 1, gn,    \
                 (int)ohw, col, (int)ohw, n > lo ? 1 : 0, acc, (int)crs);                          \
        }                                                                                          \
    }                                                                                              \
    /* The three products: nt parts, each with its own workspace slot of                           \
     * sl values, take contiguous runs of samples (a static split by the                           \
     * context's thread count, so a context always sums in the same order,                         \
     * however many threads run the parts: TG__CPU_PARTS, which runs one                           \
     * part on the caller without a region). Inside the region OpenBLAS runs                       \
     * single-threaded. */                                                                         \
    static void cpu_conv_fwd_##TYPE(const tg__conv_geom *g, int nt, int64_t sl, const tg_kview *x, \
                                    const TYPE *w, const tg_kview *b, TYPE *ws, TYPE *out) {       \
        TG__CPU_PARTS(nt, cpu_conv_fwd_part_##TYPE(g, x, w, b, ws + p * sl, out, g->n * p / nt,    \
                                                    g->n * (p + 1) / nt));                         \
    }                                                                                              \
    static void cpu_conv_bwi_##TYPE(const tg__conv_geom *g, int nt, int64_t sl,                    \
                                    const tg_kview *gv, const TYPE *w, TYPE *ws, TYPE *dx) {       \
        TG__CPU_PARTS(nt, cpu_conv_bwi_part_##TYPE(g, gv, w, ws + p * sl, dx, g->n * p / nt,       \
                                                    g->n * (p + 1) / nt));                         \
    }                                                                                              \
    /* Part 0 sums into dw, the others into the tail of their slots; the                           \
     * partial sums are then added in part order. */                                               \
    static void cpu_conv_bww_##TYPE(const tg__conv_geom *g, int nt, int64_t sl, const tg_kview *x, \
                                    const tg_kview *gv, TYPE *ws, TYPE *dw) {                      \
        const int64_t kcrs = g->k * g->c * g->r * g->s;                                            \
        TG__CPU_PARTS(nt, cpu_conv_bww_part_##TYPE(g, x, gv, ws + p * sl,                          \
                                                    p == 0 ? dw : ws + p * sl + sl - kcrs,         \
                                                    g->n * p / nt, g->n * (p + 1) / nt));          \
        for (int t = 1; t < nt; t++) {                                                             \
            const TYPE *acc = ws + t * sl + sl - kcrs;                                             \
            for (int64_t i = 0; i < kcrs; i++)                                                     \
                dw[i] += acc[i];                                                                   \
        }                                                                                          \
    }

CPU_CONV_FAMILY(float, cblas_sgemm)
CPU_CONV_FAMILY(double, cblas_dgemm)

static tg_status cpu_conv_dims_ok(const tg_kargs *a, const tg__conv_geom *g) {
    if (!cpu_conv_geom_ok(g))
        return tg__cpu_fail(a, TG_ERR_SHAPE, "cpu %s: inconsistent convolution geometry",
                            tg_op_name(a->op));
    const int64_t ld = g->n * g->oh * g->ow, crs = g->c * g->r * g->s;
    if (ld > INT_MAX || crs > INT_MAX || g->k > INT_MAX)
        return tg__cpu_fail(a, TG_ERR_UNSUPPORTED, "cpu %s: dims exceed BLAS's int range",
                            tg_op_name(a->op));
    return TG_OK;
}

/* Values in one thread's workspace slot: the column matrix of one sample
 * (crs x OH*OW), a packed gradient (k x OH*OW) and a weight-gradient partial
 * sum (k x crs). Must match ops_conv.c's workspace(). */
static int64_t cpu_conv_slot(const tg__conv_geom *g) {
    const int64_t crs = g->c * g->r * g->s;
    return (crs + g->k) * g->oh * g->ow + g->k * crs;
}

/* How many parts the kernels cut the batch into: the context's thread count
 * (tg__cpu_parts), at most one per sample and per slot the workspace holds;
 * 0 when it holds none. */
static int cpu_conv_threads(const void *state, const tg__conv_geom *g, const tg_kview *ws) {
    const int64_t sl = cpu_conv_slot(g);
    int64_t nt = tg__cpu_parts(state);
    if (sl > 0 && tg__kview_numel(ws) / sl < nt)
        nt = tg__kview_numel(ws) / sl;
    if (g->n < nt)
        nt = g->n > 0 ? g->n : 1;
    return (int)nt;
}

static bool cpu_same_float(const tg_kargs *a, int nin) {
    for (int i = 0; i < nin; i++)
        if (a->in[i].dtype != a->out.dtype)
            return false;
    return a->out.dtype == TG_F32 || a->out.dtype == TG_F64;
}

/* The autocast path of a conv row: 1 when it does not apply, else the status
 * of oneDNN's bf16 convolution of kind (see tg__dnnl_conv). */
static int cpu_conv_bf16(void *state, const tg_kargs *a, int kind, const tg__conv_geom *g,
                         const tg_kview *in0, const tg_kview *in1, const tg_kview *bias) {
    if (!tg_kparams_bf16(a->p, TG_KP_CONV_BF16))
        return 1;
    if (a->out.dtype != TG_F32)
        return tg__cpu_fail(a, TG_ERR_DTYPE, "cpu %s: bf16 products take f32 operands",
                            tg_op_name(a->op));
    tg__dnnl *dn = tg__cpu_dnnl(state, a);
    if (!dn)
        return TG_ERR_UNSUPPORTED;
    if (tg__kview_numel(&a->out) == 0)
        return TG_OK;
    if (tg__kview_numel(in0) == 0 || tg__kview_numel(in1) == 0) {
        tg__cpu_zero(a->out.data, (size_t)tg__kview_numel(&a->out) * 4);
        return TG_OK;
    }
    return tg__dnnl_conv(dn, kind, true, g, in0, in1, bias, a->out.data, a->err, a->errlen);
}

tg_status tg__cpu_conv2d(void *state, const tg_kargs *a) {
    const bool has_b = a->p->ints[6] != 0;
    if (a->nin != (has_b ? 4 : 3) || !cpu_same_float(a, a->nin))
        return tg__cpu_fail(a, TG_ERR_DTYPE,
                            "cpu conv2d: expected x, w, [b,] workspace of one "
                            "float dtype");
    const tg_kview *x = &a->in[0], *w = &a->in[1], *ws = &a->in[a->nin - 1];
    tg__conv_geom g;
    tg__conv_params(a, &g);
    g.n = x->shape[0], g.c = x->shape[1], g.h = x->shape[2], g.w = x->shape[3];
    g.k = w->shape[0], g.r = w->shape[2], g.s = w->shape[3];
    g.oh = a->out.shape[2], g.ow = a->out.shape[3];
    tg_status st = cpu_conv_dims_ok(a, &g);
    if (st != TG_OK)
        return st;
    const int nt = cpu_conv_threads(state, &g, ws);
    const int64_t sl = cpu_conv_slot(&g);
    if (!tg__kview_contig(w) || nt < 1)
        return tg__cpu_fail(a, TG_ERR_INVALID,
                            "cpu conv2d: w must be contiguous and the "
                            "workspace large enough");
    const tg_kview *b = has_b ? &a->in[2] : NULL;
    const int lo = cpu_conv_bf16(state, a, 0, &g, x, w, b);
    if (lo != 1)
        return (tg_status)lo;
    if (x->dtype == TG_F32)
        cpu_conv_fwd_float(&g, nt, sl, x, w->data, b, ws->data, a->out.data);
    else
        cpu_conv_fwd_double(&g, nt, sl, x, w->data, b, ws->data, a->out.data);
    return TG_OK;
}

/* in: g (N, K, OH, OW), w (K, C, R, S), workspace; out: dx (N, C, H, W). */
tg_status tg__cpu_conv2d_backward_input(void *state, const tg_kargs *a) {
    if (a->nin != 3 || !cpu_same_float(a, 3))
        return tg__cpu_fail(a, TG_ERR_DTYPE,
                            "cpu conv2d_backward_input: expected g, w, "
                            "workspace of one float dtype");
    const tg_kview *gv = &a->in[0], *w = &a->in[1], *ws = &a->in[2];
    tg__conv_geom g;
    tg__conv_params(a, &g);
    g.n = gv->shape[0], g.k = gv->shape[1], g.oh = gv->shape[2], g.ow = gv->shape[3];
    g.c = w->shape[1], g.r = w->shape[2], g.s = w->shape[3];
    g.h = a->out.shape[2], g.w = a->out.shape[3];
    tg_status st = cpu_conv_dims_ok(a, &g);
    if (st != TG_OK)
        return st;
    const int nt = cpu_conv_threads(state, &g, ws);
    const int64_t sl = cpu_conv_slot(&g);
    if (!tg__kview_contig(w) || nt < 1)
        return tg__cpu_fail(a, TG_ERR_INVALID,
                            "cpu conv2d_backward_input: w must be "
                            "contiguous and the workspace large enough");
    const int lo = cpu_conv_bf16(state, a, 1, &g, gv, w, NULL);
    if (lo != 1)
        return (tg_status)lo;
    if (gv->dtype == TG_F32)
        cpu_conv_bwi_float(&g, nt, sl, gv, w->data, ws->data, a->out.data);
    else
        cpu_conv_bwi_double(&g, nt, sl, gv, w->data, ws->data, a->out.data);
    return TG_OK;
}

/* in: x (N, C, H, W), g (N, K, OH, OW), workspace; out: dw (K, C, R, S). */
tg_status tg__cpu_conv2d_backward_weight(void *state, const tg_kargs *a) {
    if (a->nin != 3 || !cpu_same_float(a, 3))
        return tg__cpu_fail(a, TG_ERR_DTYPE,
                            "cpu conv2d_backward_weight: expected x, g, "
                            "workspace of one float dtype");
    const tg_kview *x = &a->in[0], *gv = &a->in[1], *ws = &a->in[2];
    tg__conv_geom g;
    tg__conv_params(a, &g);
    g.n = x->shape[0], g.c = x->shape[1], g.h = x->shape[2], g.w = x->shape[3];
    g.k = gv->shape[1], g.oh = gv->shape[2], g.ow = gv->shape[3];
    g.r = a->out.shape[2], g.s = a->out.shape[3];
    tg_status st = cpu_conv_dims_ok(a, &g);
    if (st != TG_OK)
        return st;
    const int nt = cpu_conv_threads(state, &g, ws);
    const int64_t sl = cpu_conv_slot(&g);
    if (nt < 1)
        return tg__cpu_fail(a, TG_ERR_INVALID,
                            "cpu conv2d_backward_weight: the workspace is too small");
    const int lo = cpu_conv_bf16(state, a, 2, &g, x, gv, NULL);
    if (lo != 1)
        return (tg_status)lo;
    if (g.n * g.oh * g.ow == 0) {
        tg__cpu_zero(a->out.data, (size_t)tg__kview_numel(&a->out) * tg__cpu_esize(x->dtype));
        return TG_OK;
    }
    if (x->dtype == TG_F32)
        cpu_conv_bww_float(&g, nt, sl, x, gv, ws->data, a->out.data);
    else
        cpu_conv_bww_double(&g, nt, sl, x, gv, ws->data, a->out.data);
    return TG_OK;
}
