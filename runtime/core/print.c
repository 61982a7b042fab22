/* tg_tensor_str and tg_print: a tensor as PyTorch prints it (torch 1.13's
 * _tensor_str with the default print options: precision 4, threshold 1000,
 * edgeitems 3, linewidth 80). */
#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PR_THRESHOLD 1000
#define PR_EDGE 3
#define PR_LINEWIDTH 80
#define PR_INDENT 7 /* strlen("tensor(") */

typedef struct pr_out {
    char *buf;
    size_t len;
    int64_t n; /* the whole text's length so far */
} pr_out;

static void pr_put(pr_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pr_put(pr_out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = (size_t)o->n < o->len ? o->len - (size_t)o->n : 0;
    int k = vsnprintf(room ? o->buf + o->n : NULL, room, fmt, ap);
    va_end(ap);
    if (k > 0)
        o->n += k;
}

/* The formatter: how each element is written, and the common width. */
typedef struct pr_fmt {
    bool is_float, int_mode, sci_mode, summarize;
    int width;
    const double *f;   /* float values */
    const int64_t *i;  /* integer values */
    int ndim;
    const int64_t *shape;
    int64_t strides[TG_MAX_DIMS]; /* row-major, of the host copy */
} pr_fmt;

static int pr_elem(const pr_fmt *F, int64_t k, char *s, size_t len)
{
    if (!F->is_float)
        return snprintf(s, len, "%" PRId64, F->i[k]);
    double v = F->f[k];
    if (isnan(v))
        return snprintf(s, len, "nan");
    if (isinf(v))
        return snprintf(s, len, v > 0 ? "inf" : "-inf");
    if (F->sci_mode)
        return snprintf(s, len, "%.4e", v);
    if (F->int_mode)
        return snprintf(s, len, "%.0f.", v);
    return snprintf(s, len, "%.4f", v);
}

/* Visits the displayed elements (flat indices) in order. */
typedef void (*pr_visit)(pr_fmt *F, int64_t k, void *user);
static void pr_walk(pr_fmt *F, int d, int64_t base, pr_visit fn, void *user)
{
    if (d == F->ndim) {
        fn(F, base, user);
        return;
    }
    int64_t n = F->shape[d];
    for (int64_t j = 0; j < n; j++) {
        if (F->summarize && n > 2 * PR_EDGE && j == PR_EDGE)
            j = n - PR_EDGE;
        pr_walk(F, d + 1, base + j * F->strides[d], fn, user);
    }
}

/* Pass 1 (torch's _Formatter): integer widths, or for floats int_mode and
 * sci_mode from the nonzero finite values, and the width. */
typedef struct pr_stats {
    int64_t nfin;
    double lo, hi;
    bool integral;
} pr_stats;

static void pr_stat(pr_fmt *F, int64_t k, void *user)
{
    pr_stats *S = user;
    char s[64];
    if (!F->is_float) {
        int w = pr_elem(F, k, s, sizeof s);
        if (w > F->width)
            F->width = w;
        return;
    }
    double v = F->f[k];
    if (!isfinite(v) || v == 0.0)
        return;
    double a = fabs(v);
    S->lo = S->nfin ? fmin(S->lo, a) : a;
    S->hi = S->nfin ? fmax(S->hi, a) : a;
    S->nfin++;
    if (v != ceil(v))
        S->integral = false;
}

static void pr_width(pr_fmt *F, int64_t k, void *user)
{
    (void)user;
    double v = F->f[k];
    if (!isfinite(v) || v == 0.0)
        return;
    char s[64];
    int w = pr_elem(F, k, s, sizeof s);
    if (w > F->width)
        F->width = w;
}

static void pr_value(pr_out *o, const pr_fmt *F, int64_t k)
{
    char s[64];
    int w = pr_elem(F, k, s, sizeof s);
    pr_put(o, "%*s%s", F->width > w ? F->width - w : 0, "", s);
}

static void pr_tensor(pr_out *o, const pr_fmt *F, int d, int64_t base, int indent)
{
    int64_t n = F->shape[d];
    bool cut = F->summarize && n > 2 * PR_EDGE;
    pr_put(o, "[");
    if (d == F->ndim - 1) {
        int per_line = (PR_LINEWIDTH - indent) / (F->width + 2);
        if (per_line < 1)
            per_line = 1;
        int64_t shown = 0;
        for (int64_t j = 0; j < n; j++) {
            if (shown > 0)
                pr_put(o, shown % per_line ? ", " : ",\n%*s", indent + 1, "");
            if (cut && j == PR_EDGE) {
                pr_put(o, " ...");
                j = n - PR_EDGE - 1;
            } else {
                pr_value(o, F, base + j * F->strides[d]);
            }
            shown++;
        }
    } else {
        for (int64_t j = 0; j < n; j++) {
            if (j > 0) {
                pr_put(o, ",");
                for (int r = 0; r < F->ndim - d - 1; r++)
                    pr_put(o, "\n");
                pr_put(o, "%*s", indent + 1, "");
            }
            if (cut && j == PR_EDGE) {
                pr_put(o, "...");
                j = n - PR_EDGE - 1;
                continue;
            }
            pr_tensor(o, F, d + 1, base + j * F->strides[d], indent + 1);
        }
    }
    pr_put(o, "]");
}

static const char *pr_torch_dtype(tg_dtype dt)
{
    switch (dt) {
    case TG_F64:
        return "torch.float64";
    case TG_U8:
        return "torch.uint8";
    case TG_I32:
        return "torch.int32";
    case TG_BF16:
        return "torch.bfloat16";
    default:
        return NULL; /* f32 and i64 are torch's defaults: not printed */
    }
}

int64_t tg_tensor_str(tg_ctx *ctx, const tg_tensor *t, char *buf, size_t len)
{
    if (!t)
        return tg__fail(ctx, TG_ERR_INVALID, "tensor_str: NULL tensor"), -1;
    if (buf && len)
        buf[0] = '\0';
    int64_t n = tg_numel(t);
    size_t es = tg_dtype_size(t->dtype);
    void *raw = malloc((size_t)(n > 0 ? n : 1) * es);
    double *f = tg_dtype_is_float(t->dtype) || t->dtype == TG_BF16 ? malloc((size_t)(n > 0 ? n : 1) * sizeof *f) : NULL;
    int64_t *iv = f ? NULL : malloc((size_t)(n > 0 ? n : 1) * sizeof *iv);
    if (!raw || (!f && !iv)) {
        free(raw), free(f), free(iv);
        return tg__fail(ctx, TG_ERR_NOMEM, "tensor_str: out of memory for %lld elements",
                        (long long)n),
               -1;
    }
    if (tg_to_host(ctx, t, raw, (size_t)n * es) != TG_OK) {
        free(raw), free(f), free(iv);
        return -1;
    }
    for (int64_t k = 0; k < n; k++) {
        switch (t->dtype) {
        case TG_F32:
            f[k] = ((const float *)raw)[k];
            break;
        case TG_F64:
            f[k] = ((const double *)raw)[k];
            break;
        case TG_BF16:
            f[k] = tg_bf16_to_f32(((const uint16_t *)raw)[k]);
            break;
        case TG_U8:
            iv[k] = ((const uint8_t *)raw)[k];
            break;
        case TG_I32:
            iv[k] = ((const int32_t *)raw)[k];
            break;
        default:
            iv[k] = ((const int64_t *)raw)[k];
            break;
        }
    }
    free(raw);

    pr_out o = {.buf = buf, .len = buf ? len : 0, .n = 0};
    pr_fmt F = {.is_float = f != NULL, .int_mode = true, .summarize = n > PR_THRESHOLD,
                .width = 1, .f = f, .i = iv, .ndim = t->ndim, .shape = t->shape};
    tg__contig_strides(t->ndim, t->shape, F.strides);
    pr_put(&o, "tensor(");
    if (n == 0) {
        pr_put(&o, "[]");
    } else {
        pr_stats S = {.integral = true};
        pr_walk(&F, 0, 0, pr_stat, &S);
        if (F.is_float && S.nfin > 0) {
            F.int_mode = S.integral;
            F.sci_mode = S.hi / S.lo > 1000.0 || S.hi > 1e8 || (!S.integral && S.lo < 1e-4);
            pr_walk(&F, 0, 0, pr_width, NULL);
        }
        if (t->ndim == 0)
            pr_value(&o, &F, 0);
        else
            pr_tensor(&o, &F, 0, 0, PR_INDENT);
    }
    if (n == 0 && t->ndim != 1) {
        pr_put(&o, ", size=(");
        for (int d = 0; d < t->ndim; d++)
            pr_put(&o, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        pr_put(&o, ")");
    }
    const char *tdt = pr_torch_dtype(t->dtype);
    if (tdt)
        pr_put(&o, ", dtype=%s", tdt);
    if (t->requires_grad) {
        if (t->record == 0 || t->record < ctx->tape_base ||
            t->record - ctx->tape_base >= (uint64_t)ctx->nrecords)
            pr_put(&o, ", requires_grad=True");
        else
            pr_put(&o, ", grad_fn=<%s>", tg_op_name(ctx->records[t->record - ctx->tape_base].op));
    }
    pr_put(&o, ")");
    free(f);
    free(iv);
    return o.n;
}

tg_status tg_print(tg_ctx *ctx, const tg_tensor *t)
{
    int64_t n = tg_tensor_str(ctx, t, NULL, 0);
    if (n < 0)
        return tg_ctx_status(ctx);
    char *s = malloc((size_t)n + 1);
    if (!s)
        return tg__fail(ctx, TG_ERR_NOMEM, "print: out of memory for %lld characters",
                        (long long)n);
    tg_tensor_str(ctx, t, s, (size_t)n + 1);
    printf("%s\n", s);
    free(s);
    return TG_OK;
}
