/*
 * kernels/cuda/cuda_conv.cu: 2-D convolution (NCHW, groups = 1) and its two
 * gradients, by im2col / col2im kernels around one cuBLAS gemm per call: the
 * CUDA version of kernels/cpu/cpu_conv.c, with the same matrices.
 *
 * The column matrix of the whole batch is (C*R*S, N*OH*OW), row-major:
 * sample n owns columns [n*OH*OW, (n+1)*OH*OW). The runtime hands every
 * kernel a step-arena workspace (device memory here) as its last input,
 * large enough for that matrix and a (K, N*OH*OW) one, so no kernel
 * allocates. The three products, row-major:
 *     conv2d:                 tmp (K, L)  = w (K, CRS) . col (CRS, L)
 *     conv2d_backward_input:  dcol (CRS, L) = w^T . gp (K, L), then col2im
 *     conv2d_backward_weight: dw (K, CRS) = gp (K, L) . col^T
 * with L = N*OH*OW and gp the gradient packed as (K, L). cuBLAS is
 * column-major, and a row-major (r x c) matrix is the column-major (c x r)
 * transpose with the same leading dimension, so each row-major C = op(A)
 * op(B) is handed over as the column-major C^T = op(B)^T op(A)^T, operands
 * swapped (see cuda_matmul.cu).
 *
 * col2im is written as a gather: one thread per element of dx adds the
 * column entries that came from it in (r, s) order, which is the order in
 * which the CPU's scatter adds them, so no atomics are needed and dx matches
 * the CPU's given the same column matrix.
 *
 * Parameters (tg_op_params.ints): [0..1] stride, [2..3] pad, [4..5]
 * dilation, [6] has bias (conv2d), [7..8] the spatial size of the tensor a
 * gradient kernel produces.
 */
#include <limits.h>

#include "cuda.h"

/* The CPU's checks: the geometry, BLAS's int range, one float dtype. */
static tg_status conv_dims_ok(const tg_kargs *a, const tg__conv_geom *g) {
    const bool fits = g->sh > 0 && g->sw > 0 && g->dh > 0 && g->dw > 0 &&
                      g->oh == (g->h + 2 * g->ph - g->dh * (g->r - 1) - 1) / g->sh + 1 &&
                      g->ow == (g->w + 2 * g->pw - g->dw * (g->s - 1) - 1) / g->sw + 1;
    if (!fits)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda %s: inconsistent convolution geometry",
                             tg_op_name(a->op));
    const int64_t ld = g->n * g->oh * g->ow, crs = g->c * g->r * g->s;
    if (ld > INT_MAX || crs > INT_MAX || g->k > INT_MAX)
        return tg__cuda_fail(a, TG_ERR_UNSUPPORTED, "cuda %s: dims exceed cuBLAS's int range",
                             tg_op_name(a->op));
    return TG_OK;
}

static bool conv_same_float(const tg_kargs *a, int nin) {
    for (int i = 0; i < nin; i++)
        if (a->in[i].dtype != a->out.dtype)
            return false;
    return a->out.dtype == TG_F32 || a->out.dtype == TG_F64;
}

static bool conv_ws_ok(const tg__conv_geom *g, const tg_kview *ws) {
    return tg__kview_numel(ws) >= (g->c * g->r * g->s + g->k) * g->n * g->oh * g->ow;
}

/* ---- device kernels ---- */

/* col[(c*R + r)*S + s][n*OH*OW + oh*OW + ow] = x[n, c, ih, iw] or 0 in the
 * padding; xs are x's strides over (n, c, h, w). One thread per entry. */
template <typename T>
__global__ static void k_im2col(tg__conv_geom g, const T *x, int64_t xs0, int64_t xs1, int64_t xs2,
                                int64_t xs3, T *col) {
    const int64_t ohw = g.oh * g.ow, ld = g.n * ohw, total = g.c * g.r * g.s * ld;
    TG__CUDA_FOR(i, total) {
        const int64_t row = i / ld, j = i % ld;
        const int64_t n = j / ohw, oh = j % ohw / g.ow, ow = j % g.ow;
        const int64_t s = row % g.s, r = row / g.s % g.r, c = row / (g.s * g.r);
        const int64_t ih = oh * g.sh - g.ph + r * g.dh, iw = ow * g.sw - g.pw + s * g.dw;
        col[i] = ih >= 0 && ih < g.h && iw >= 0 && iw < g.w
                     ? x[n * xs0 + c * xs1 + ih * xs2 + iw * xs3]
                     : (T)0;
    }
}

/* dx[n, c, ih, iw] = sum over (r, s) of the column entry that im2col took
 * from it; dx is contiguous. One thread per element of dx. */
template <typename T> __global__ static void k_col2im(tg__conv_geom g, const T *col, T *dx) {
    const int64_t ohw = g.oh * g.ow, ld = g.n * ohw, total = g.n * g.c * g.h * g.w;
    TG__CUDA_FOR(i, total) {
        const int64_t iw = i % g.w, ih = i / g.w % g.h, c = i / (g.w * g.h) % g.c;
        const int64_t n = i / (g.w * g.h * g.c);
        T acc = 0;
        for (int64_t r = 0; r < g.r; r++) {
            const int64_t th = ih + g.ph - r * g.dh;
            if (th < 0 || th % g.sh != 0 || th / g.sh >= g.oh)
                continue;
            const int64_t oh = th / g.sh;
            for (int64_t s = 0; s < g.s; s++) {
                const int64_t tw = iw + g.pw - s * g.dw;
                if (tw < 0 || tw % g.sw != 0 || tw / g.sw >= g.ow)
                    continue;
                const int64_t ow = tw / g.sw;
                acc += col[((c * g.r + r) * g.s + s) * ld + n * ohw + oh * g.ow + ow];
            }
        }
        dx[i] = acc;
    }
}

/* gp[k][n*OH*OW + oh*OW + ow] = src[n, k, oh, ow]; gs are src's strides. */
template <typename T>
__global__ static void k_gpack(tg__conv_geom g, const T *src, int64_t gs0, int64_t gs1,
                               int64_t gs2, int64_t gs3, T *gp) {
    const int64_t ohw = g.oh * g.ow, ld = g.n * ohw, total = g.k * ld;
    TG__CUDA_FOR(i, total) {
        const int64_t k = i / ld, j = i % ld;
        const int64_t n = j / ohw, oh = j % ohw / g.ow, ow = j % g.ow;
        gp[i] = src[n * gs0 + k * gs1 + oh * gs2 + ow * gs3];
    }
}

/* out[n, k, j] = tmp[k][n*OH*OW + j] + b[k] (b may be NULL). */
template <typename T>
__global__ static void k_conv_out(tg__conv_geom g, const T *tmp, const T *b, int64_t bs, T *out) {
    const int64_t ohw = g.oh * g.ow, ld = g.n * ohw, total = g.n * g.k * ohw;
    TG__CUDA_FOR(i, total) {
        const int64_t j = i % ohw, k = i / ohw % g.k, n = i / (ohw * g.k);
        out[i] = tmp[k * ld + n * ohw + j] + (b ? b[k * bs] : (T)0);
    }
}

/* ---- gemm ---- */

/* One column-major gemm C = op(A) op(B) (m x n, k inner) on the context's
 * handle, alpha 1, beta 0, for the output's dtype. */
static tg_status conv_gemm(tg__cuda_state *s, const tg_kargs *a, cublasOperation_t ta,
                           cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void *A,
                           int64_t lda, const void *B, int64_t ldb, void *C, int64_t ldc) {
    /* Autocast: the same product with the operands rounded to bf16. */
    if (a->out.dtype == TG_F32 && tg_kparams_bf16(a->p, TG_KP_CONV_BF16))
        return tg__cuda_gemm_bf16(s, a, ta, tb, (int)m, (int)n, (int)k, (const float *)A,
                                  (int)lda, 0, (const float *)B, (int)ldb, 0, (float *)C,
                                  (int)ldc, 0, 1);
    if (a->out.dtype == TG_F32) {
        const float one = 1.0f, zero = 0.0f;
        TG__CUBLAS_K(tg__cublas.Sgemm(s->blas, ta, tb, (int)m, (int)n, (int)k, &one,
                                      (const float *)A, (int)lda, (const float *)B, (int)ldb, &zero,
                                      (float *)C, (int)ldc),
                     a);
    } else {
        const double one = 1.0, zero = 0.0;
        TG__CUBLAS_K(tg__cublas.Dgemm(s->blas, ta, tb, (int)m, (int)n, (int)k, &one,
                                      (const double *)A, (int)lda, (const double *)B, (int)ldb,
                                      &zero, (double *)C, (int)ldc),
                     a);
    }
    return TG_OK;
}

/* ---- launchers, one dtype each ---- */

template <typename T>
static tg_status conv_fwd(tg__cuda_state *s, const tg_kargs *a, const tg__conv_geom *g,
                          const tg_kview *x, const tg_kview *w, const tg_kview *b, T *ws) {
    const int64_t ld = g->n * g->oh * g->ow, crs = g->c * g->r * g->s;
    T *col = ws, *tmp = ws + crs * ld;
    k_im2col<T><<<tg__cuda_blocks(crs * ld), TG__CUDA_THREADS, 0, s->stream>>>(
        *g, (const T *)x->data, x->strides[0], x->strides[1], x->strides[2], x->strides[3], col);
    TG__CUDA_LAUNCHED(a);
    /* Row-major tmp (K, L) = w (K, CRS) . col (CRS, L) is the column-major
     * tmp^T (L x K) = col^T (L x CRS) . w^T (CRS x K). */
    tg_status st =
        conv_gemm(s, a, CUBLAS_OP_N, CUBLAS_OP_N, ld, g->k, crs, col, ld, w->data, crs, tmp, ld);
    if (st != TG_OK)
        return st;
    k_conv_out<T><<<tg__cuda_blocks(g->k * ld), TG__CUDA_THREADS, 0, s->stream>>>(
        *g, tmp, b ? (const T *)b->data : NULL, b ? b->strides[0] : 0, (T *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

template <typename T>
static tg_status conv_bwi(tg__cuda_state *s, const tg_kargs *a, const tg__conv_geom *g,
                          const tg_kview *gv, const tg_kview *w, T *ws) {
    const int64_t ld = g->n * g->oh * g->ow, crs = g->c * g->r * g->s;
    T *gp = ws, *dcol = ws + g->k * ld;
    k_gpack<T><<<tg__cuda_blocks(g->k * ld), TG__CUDA_THREADS, 0, s->stream>>>(
        *g, (const T *)gv->data, gv->strides[0], gv->strides[1], gv->strides[2], gv->strides[3],
        gp);
    TG__CUDA_LAUNCHED(a);
    /* Row-major dcol (CRS, L) = w^T . gp is the column-major
     * dcol^T (L x CRS) = gp^T (L x K) . w (K x CRS); w's storage read
     * column-major is w^T (CRS x K), hence OP_T. */
    tg_status st =
        conv_gemm(s, a, CUBLAS_OP_N, CUBLAS_OP_T, ld, crs, g->k, gp, ld, w->data, crs, dcol, ld);
    if (st != TG_OK)
        return st;
    const int64_t nx = g->n * g->c * g->h * g->w;
    k_col2im<T>
        <<<tg__cuda_blocks(nx), TG__CUDA_THREADS, 0, s->stream>>>(*g, dcol, (T *)a->out.data);
    TG__CUDA_LAUNCHED(a);
    return TG_OK;
}

template <typename T>
static tg_status conv_bww(tg__cuda_state *s, const tg_kargs *a, const tg__conv_geom *g,
                          const tg_kview *x, const tg_kview *gv, T *ws) {
    const int64_t ld = g->n * g->oh * g->ow, crs = g->c * g->r * g->s;
    T *gp = ws, *col = ws + g->k * ld;
    k_gpack<T><<<tg__cuda_blocks(g->k * ld), TG__CUDA_THREADS, 0, s->stream>>>(
        *g, (const T *)gv->data, gv->strides[0], gv->strides[1], gv->strides[2], gv->strides[3],
        gp);
    TG__CUDA_LAUNCHED(a);
    k_im2col<T><<<tg__cuda_blocks(crs * ld), TG__CUDA_THREADS, 0, s->stream>>>(
        *g, (const T *)x->data, x->strides[0], x->strides[1], x->strides[2], x->strides[3], col);
    TG__CUDA_LAUNCHED(a);
    /* Row-major dw (K, CRS) = gp (K, L) . col^T is the column-major
     * dw^T (CRS x K) = col (CRS x L) . gp^T (L x K); col's storage read
     * column-major is col^T (L x CRS), hence OP_T. */
    return conv_gemm(s, a, CUBLAS_OP_T, CUBLAS_OP_N, crs, g->k, ld, col, ld, gp, ld, a->out.data,
                     crs);
}

/* ---- the three rows ---- */

tg_status tg__cuda_conv2d(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    const bool has_b = a->p->ints[6] != 0;
    if (a->nin != (has_b ? 4 : 3) || !conv_same_float(a, a->nin))
        return tg__cuda_fail(a, TG_ERR_DTYPE,
                             "cuda conv2d: expected x, w, [b,] workspace of one float dtype");
    const tg_kview *x = &a->in[0], *w = &a->in[1], *ws = &a->in[a->nin - 1];
    tg__conv_geom g;
    tg__conv_params(a, &g);
    g.n = x->shape[0], g.c = x->shape[1], g.h = x->shape[2], g.w = x->shape[3];
    g.k = w->shape[0], g.r = w->shape[2], g.s = w->shape[3];
    g.oh = a->out.shape[2], g.ow = a->out.shape[3];
    tg_status st = conv_dims_ok(a, &g);
    if (st != TG_OK)
        return st;
    if (!tg__kview_contig(w) || !conv_ws_ok(&g, ws))
        return tg__cuda_fail(a, TG_ERR_INVALID,
                             "cuda conv2d: w must be contiguous and the workspace large enough");
    /* An empty batch has an empty output; cuBLAS would refuse ld = 0. */
    if (g.n * g.oh * g.ow == 0 || g.k == 0)
        return TG_OK;
    if (g.c * g.r * g.s == 0)
        return tg__cuda_fail(a, TG_ERR_SHAPE, "cuda conv2d: the weight has no elements");
    const tg_kview *b = has_b ? &a->in[2] : NULL;
    if (x->dtype == TG_F32)
        return conv_fwd<float>(s, a, &g, x, w, b, (float *)ws->data);
    return conv_fwd<double>(s, a, &g, x, w, b, (double *)ws->data);
}

/* in: g (N, K, OH, OW), w (K, C, R, S), workspace; out: dx (N, C, H, W). */
tg_status tg__cuda_conv2d_backward_input(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    if (a->nin != 3 || !conv_same_float(a, 3))
        return tg__cuda_fail(a, TG_ERR_DTYPE,
                             "cuda conv2d_backward_input: expected g, w, "
                             "workspace of one float dtype");
    const tg_kview *gv = &a->in[0], *w = &a->in[1], *ws = &a->in[2];
    tg__conv_geom g;
    tg__conv_params(a, &g);
    g.n = gv->shape[0], g.k = gv->shape[1], g.oh = gv->shape[2], g.ow = gv->shape[3];
    g.c = w->shape[1], g.r = w->shape[2], g.s = w->shape[3];
    g.h = a->out.shape[2], g.w = a->out.shape[3];
    tg_status st = conv_dims_ok(a, &g);
    if (st != TG_OK)
        return st;
    if (!tg__kview_contig(w) || !conv_ws_ok(&g, ws))
        return tg__cuda_fail(a, TG_ERR_INVALID,
                             "cuda conv2d_backward_input: w must be "
                             "contiguous and the workspace large enough");
    const int64_t nx = g.n * g.c * g.h * g.w;
    if (nx == 0)
        return TG_OK;
    if (g.k == 0 || g.r * g.s == 0) {
        /* No output channel reaches dx: an empty sum. */
        const size_t es = a->out.dtype == TG_F32 ? 4 : 8;
        TG__CUDA_K(cudaMemsetAsync(a->out.data, 0, (size_t)nx * es, s->stream), a);
        return TG_OK;
    }
    if (gv->dtype == TG_F32)
        return conv_bwi<float>(s, a, &g, gv, w, (float *)ws->data);
    return conv_bwi<double>(s, a, &g, gv, w, (double *)ws->data);
}

/* in: x (N, C, H, W), g (N, K, OH, OW), workspace; out: dw (K, C, R, S). */
tg_status tg__cuda_conv2d_backward_weight(void *state, const tg_kargs *a) {
    tg__cuda_state *s = (tg__cuda_state *)state;
    if (a->nin != 3 || !conv_same_float(a, 3))
        return tg__cuda_fail(a, TG_ERR_DTYPE,
                             "cuda conv2d_backward_weight: expected x, g, "
                             "workspace of one float dtype");
    const tg_kview *x = &a->in[0], *gv = &a->in[1], *ws = &a->in[2];
    tg__conv_geom g;
    tg__conv_params(a, &g);
    g.n = x->shape[0], g.c = x->shape[1], g.h = x->shape[2], g.w = x->shape[3];
    g.k = gv->shape[1], g.oh = gv->shape[2], g.ow = gv->shape[3];
    g.r = a->out.shape[2], g.s = a->out.shape[3];
    tg_status st = conv_dims_ok(a, &g);
    if (st != TG_OK)
        return st;
    if (!conv_ws_ok(&g, ws))
        return tg__cuda_fail(a, TG_ERR_INVALID,
                             "cuda conv2d_backward_weight: the workspace is too small");
    const int64_t nw = g.k * g.c * g.r * g.s;
    if (nw == 0)
        return TG_OK;
    if (g.n * g.oh * g.ow == 0) {
        /* An empty batch: every weight's gradient is an empty sum. */
        const size_t es = a->out.dtype == TG_F32 ? 4 : 8;
        TG__CUDA_K(cudaMemsetAsync(a->out.data, 0, (size_t)nw * es, s->stream), a);
        return TG_OK;
    }
    if (x->dtype == TG_F32)
        return conv_bww<float>(s, a, &g, x, gv, (float *)ws->data);
    return conv_bww<double>(s, a, &g, x, gv, (double *)ws->data);
}
