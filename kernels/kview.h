/*
 * kernels/kview.h: geometry helpers that every backend shares (private to
 * kernels/): element counts and contiguity of a strided view, the BLAS
 * layout of a strided matrix, and the parameters of a 2-D convolution. Plain
 * host code, included by the C files of cpu/ and the .cu files of cuda/, so
 * that both backends read views and op parameters by one rule.
 */
#ifndef TG_KERNELS_KVIEW_H
#define TG_KERNELS_KVIEW_H

#include <stdbool.h>

#include "tapegrad/kernels.h"

static inline int64_t tg__kview_numel(const tg_kview *v) {
    int64_t n = 1;
    for (int d = 0; d < v->ndim; d++)
        n *= v->shape[d];
    return n;
}

/* Row-major contiguous strides of a shape. */
static inline void tg__contig_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        s *= shape[d];
    }
}

/* True when the view is laid out row-major without gaps (the stride of a
 * size-1 dim is free). */
static inline bool tg__kview_contig(const tg_kview *v) {
    int64_t s = 1;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (v->shape[d] != 1 && v->strides[d] != s)
            return false;
        s *= v->shape[d];
    }
    return true;
}

/* How one operand of shape rows x cols is handed to a gemm. */
typedef struct tg__gemm_arg {
    bool trans; /* stored column-major (row stride 1) */
    int64_t ld;
} tg__gemm_arg;

/*
 * Picks the BLAS layout of a rows x cols matrix with strides (sr, sc).
 * Row-major storage (sc == 1) is passed untransposed with ld = sr; column-major
 * storage (sr == 1) is passed transposed with ld = sc. A dim of size 1 never
 * moves, so its stride is free and ld only has to satisfy BLAS's lower bound.
 * Returns false when neither layout fits.
 */
static inline bool tg__gemm_layout(int64_t rows, int64_t cols, int64_t sr, int64_t sc,
                                   tg__gemm_arg *g) {
    const int64_t min_ld_rm = cols > 1 ? cols : 1;
    const int64_t min_ld_cm = rows > 1 ? rows : 1;
    if (sc == 1 || cols == 1) {
        if (rows == 1 || sr >= min_ld_rm) {
            g->trans = false;
            g->ld = rows == 1 ? min_ld_rm : sr;
            return true;
        }
    }
    if (sr == 1 || rows == 1) {
        if (cols == 1 || sc >= min_ld_cm) {
            g->trans = true;
            g->ld = cols == 1 ? min_ld_cm : sc;
            return true;
        }
    }
    return false;
}

/* The sizes of one conv2d application: x (n, c, h, w), w (k, c, r, s),
 * y (n, k, oh, ow); stride, padding and dilation per spatial dim. */
typedef struct tg__conv_geom {
    int64_t n, c, h, w, k, r, s, oh, ow;
    int64_t sh, sw, ph, pw, dh, dw;
} tg__conv_geom;

/* Stride, padding and dilation from the op's parameters (ints[0..5]). */
static inline void tg__conv_params(const tg_kargs *a, tg__conv_geom *g) {
    const int64_t *p = a->p->ints;
    g->sh = p[0], g->sw = p[1], g->ph = p[2], g->pw = p[3], g->dh = p[4], g->dw = p[5];
}

#endif
