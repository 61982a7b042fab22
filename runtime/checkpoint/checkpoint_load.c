/*
 * checkpoint_load.c: loading a checkpoint into the caller's tensors, and
 * describing one for `tapegrad inspect`. The layout and the primitives that
 * read it are in checkpoint_file.c.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_internal.h"
#include "core/internal.h"

/* Pairs every caller tensor with a file entry (match[i]); reports the first
 * problem (missing, extra, shape, dtype, non-contiguous) and how many. */
static tg_status match_tensors(const tg__ckfile *f, const tg_ckpt_meta *m, const tg__ckent *e,
                               int ne, int n, tg_tensor *const *ts, int *match, char *err,
                               size_t errlen) {
    int problems = 0;
    tg_status st = TG_OK;
    char a[128], b[128];

    for (int i = 0; i < n; i++) {
        const tg_tensor *t = ts[i];
        const tg__ckent *x = NULL;
        tg_status s = TG_OK;

        match[i] = -1;
        for (int j = 0; j < ne && !x; j++)
            if (strcmp(e[j].name, t->name) == 0) {
                x = &e[j];
                match[i] = j;
            }
        tg__ck_shape_str(t->ndim, t->shape, b, sizeof b);
        if (!x) {
            s = TG_ERR_SHAPE;
            if (!problems)
                tg__ck_fail(s, err, errlen,
                            "%s: tensor '%s' %s %s is missing from the file (a "
                            "checkpoint of model '%s' with %d tensors)",
                            f->path, t->name, b, tg_dtype_name(t->dtype), m->model, ne);
        } else if (x->ndim != t->ndim ||
                   memcmp(x->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim) != 0 ||
                   x->dtype != (int)t->dtype) {
            bool same_shape = x->ndim == t->ndim &&
                              memcmp(x->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim) == 0;
            s = same_shape ? TG_ERR_DTYPE : TG_ERR_SHAPE;
            if (!problems)
                tg__ck_fail(s, err, errlen,
                            "%s: tensor '%s' is %s %s in the file but %s %s in "
                            "the model",
                            f->path, t->name, tg__ck_shape_str(x->ndim, x->shape, a, sizeof a),
                            x->tname, b, tg_dtype_name(t->dtype));
        } else if (!tg_is_contiguous(t)) {
            s = TG_ERR_INVALID;
            if (!problems)
                tg__ck_fail(s, err, errlen,
                            "%s: tensor '%s' is a non-contiguous view: load into "
                            "the tensor it views",
                            f->path, t->name);
        }
        if (s && !problems++)
            st = s;
    }
    for (int j = 0; j < ne; j++) {
        bool found = false;
        for (int i = 0; i < n && !found; i++)
            found = match[i] == j;
        if (found)
            continue;
        if (!problems++) {
            st = TG_ERR_SHAPE;
            tg__ck_fail(st, err, errlen,
                        "%s: the file holds tensor '%s' %s %s, which the model "
                        "does not have (a checkpoint of model '%s'?)",
                        f->path, e[j].name, tg__ck_shape_str(e[j].ndim, e[j].shape, a, sizeof a),
                        e[j].tname, m->model);
        }
    }
    if (problems > 1) {
        size_t len = strlen(err);
        snprintf(err + len, errlen - len, "; %d mismatches in all", problems);
    }
    return st;
}

static tg_status load_data(tg_ctx *ctx, const tg__ckfile *f, const tg__ckent *e, int n,
                           tg_tensor *const *ts, const int *match, char *err, size_t errlen) {
    size_t total = 1, off = 0;
    char *buf;
    bool prev;
    tg_status st = TG_OK;

    for (int i = 0; i < n; i++)
        total += e[match[i]].nbytes;
    buf = malloc(total);
    if (!buf)
        return tg__ck_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for %zu bytes of tensors",
                           f->path, total);
    /* Everything is read and checked before any tensor changes, so a load
     * that fails leaves the caller's tensors as they were. */
    for (int i = 0; i < n && st == TG_OK; i++) {
        st = tg__ck_read(f, &e[match[i]], buf + off, err, errlen);
        off += e[match[i]].nbytes;
    }
    prev = tg_set_grad_enabled(ctx, false);
    off = 0;
    for (int i = 0; i < n && st == TG_OK; i++) {
        size_t nb = e[match[i]].nbytes;
        if (tg_copy_from_host(ctx, ts[i], buf + off, nb) != TG_OK) {
            st = tg__ck_fail(ctx->status, err, errlen, "%s: filling tensor '%s': %s", f->path,
                             ts[i]->name, tg_ctx_error(ctx));
            tg_ctx_clear_error(ctx);
        }
        off += nb;
    }
    tg_set_grad_enabled(ctx, prev);
    free(buf);
    return st;
}

tg_status tg_ckpt_load(tg_ctx *ctx, const char *path, int n, tg_tensor *const *ts,
                       tg_ckpt_meta *meta) {
    char err[TG__CK_ERRLEN];
    tg__ckfile f;
    tg_ckpt_meta m;
    tg__ckent *e = NULL;
    int ne = 0, *match = NULL;
    tg_status st;

    if (!path || n < 0 || (n > 0 && !ts))
        return tg__fail(ctx, TG_ERR_INVALID, "ckpt_load: NULL path or tensor list");
    st = tg__ck_check_tensors(path, n, ts, err, sizeof err);
    if (st)
        return tg__fail(ctx, st, "%s", err);
    st = tg__ck_open(path, &f, &m, err, sizeof err);
    if (st) {
        tg_ckpt_meta_free(&m);
        return tg__fail(ctx, st, "%s", err);
    }
    st = tg__ck_entries(&f, &e, &ne, err, sizeof err);
    if (st == TG_OK && !(match = malloc(sizeof *match * (size_t)(n ? n : 1))))
        st = tg__ck_fail(TG_ERR_NOMEM, err, sizeof err, "%s: out of memory", path);
    if (st == TG_OK)
        st = match_tensors(&f, &m, e, ne, n, ts, match, err, sizeof err);
    if (st == TG_OK)
        st = load_data(ctx, &f, e, n, ts, match, err, sizeof err);
    free(match);
    tg__ck_free_entries(e, ne);
    tg__ck_close(&f);
    if (st == TG_OK && meta)
        *meta = m;
    else
        tg_ckpt_meta_free(&m);
    return st ? tg__fail(ctx, st, "%s", err) : TG_OK;
}

/* ---- describe ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    int w;

    if (b->oom)
        return;
    for (;;) {
        va_start(ap, fmt);
        w = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)w < b->cap) {
            b->len += (size_t)w;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 1024) + (size_t)w;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
}

static double l2_norm(const void *buf, tg_dtype dt, size_t count) {
    double s = 0;

    for (size_t i = 0; i < count; i++) {
        double v = 0;
        switch (dt) {
        case TG_F32:
            v = ((const float *)buf)[i];
            break;
        case TG_F64:
            v = ((const double *)buf)[i];
            break;
        case TG_U8:
            v = ((const uint8_t *)buf)[i];
            break;
        case TG_I32:
            v = ((const int32_t *)buf)[i];
            break;
        case TG_I64:
            v = (double)((const int64_t *)buf)[i];
            break;
        case TG_BF16:
            v = tg_bf16_to_f32(((const uint16_t *)buf)[i]);
            break;
        default:
            break;
        }
        s += v * v;
    }
    return sqrt(s);
}

static void describe_meta(sbuf *b, const char *path, const tg_ckpt_meta *m, int ne,
                          const tg__ckent *e) {
    size_t bytes = 0;
    int64_t elems = 0;

    for (int i = 0; i < ne; i++) {
        bytes += e[i].nbytes;
        elems += tg__numel(e[i].ndim, e[i].shape);
    }
    sb_printf(b, "checkpoint %s\n", path);
    sb_printf(b, "  format_version    %d (tapegrad %s)\n", (int)m->format_version, m->version);
    sb_printf(b, "  model             %s\n", m->model);
    sb_printf(b, "  step              %" PRId64 "\n", m->step);
    sb_printf(b, "  epoch             %" PRId64 "\n", m->epoch);
    sb_printf(b, "  samples_consumed  %" PRId64 "\n", m->samples_consumed);
    sb_printf(b, "  optim_steps       %" PRId64 "\n", m->optim_steps);
    sb_printf(b, "  rng_state         0x%016" PRIx64 " 0x%016" PRIx64 "\n", m->rng[0], m->rng[1]);
    sb_printf(b, "  world_size        %d\n", (int)m->world_size);
    sb_printf(b, "  tensors           %d (%" PRId64 " elements, %zu bytes)\n", ne, elems, bytes);
    if (m->data_path)
        sb_printf(b, "  dataset           %s (%" PRId64 " bytes, sha256 %s)\n", m->data_path,
                  m->data_bytes, m->data_sha256[0] ? m->data_sha256 : "unknown");
    else
        sb_printf(b, "  dataset           not recorded (a checkpoint of an older tapegrad)\n");
}

tg_status tg_ckpt_describe(tg_ctx *ctx, const char *path, char **text) {
    char err[TG__CK_ERRLEN], shp[128], first[TG__CK_ERRLEN] = "";
    tg__ckfile f;
    tg_ckpt_meta m;
    tg__ckent *e = NULL;
    int ne = 0, bad = 0;
    size_t maxb = 1;
    void *buf = NULL;
    sbuf b = {0};
    tg_status st;

    if (!path || !text)
        return tg__fail(ctx, TG_ERR_INVALID, "ckpt_describe: NULL %s", path ? "text" : "path");
    *text = NULL;
    st = tg__ck_open(path, &f, &m, err, sizeof err);
    if (st == TG_OK)
        st = tg__ck_entries(&f, &e, &ne, err, sizeof err);
    for (int i = 0; i < ne; i++)
        maxb = e[i].nbytes > maxb ? e[i].nbytes : maxb;
    if (st == TG_OK && !(buf = malloc(maxb)))
        st = tg__ck_fail(TG_ERR_NOMEM, err, sizeof err, "%s: out of memory", path);
    if (st == TG_OK) {
        describe_meta(&b, path, &m, ne, e);
        for (int i = 0; i < ne; i++) {
            tg_status r = tg__ck_read(&f, &e[i], buf, err, sizeof err);
            size_t cnt = e[i].nbytes / tg_dtype_size((tg_dtype)e[i].dtype);
            tg__ck_shape_str(e[i].ndim, e[i].shape, shp, sizeof shp);
            if (r == TG_OK)
                sb_printf(&b, "    %-32s %-16s %-4s norm %.6g\n", e[i].name, shp, e[i].tname,
                          l2_norm(buf, (tg_dtype)e[i].dtype, cnt));
            else
                sb_printf(&b, "    %-32s %-16s %-4s CHECKSUM MISMATCH\n", e[i].name, shp,
                          e[i].tname);
            if (r && !bad++)
                snprintf(first, sizeof first, "%s", err);
        }
        sb_printf(&b, "  config (%zu bytes)\n%s%s", strlen(m.config), m.config,
                  m.config[0] && m.config[strlen(m.config) - 1] != '\n' ? "\n" : "");
        if (m.model_text) {
            char in[96];
            if (m.model_input_ndim == 1)
                snprintf(in, sizeof in, "(%lld)", (long long)m.model_input[2]);
            else
                snprintf(in, sizeof in, "(%lld, %lld, %lld)", (long long)m.model_input[0],
                         (long long)m.model_input[1], (long long)m.model_input[2]);
            sb_printf(&b, "  model file (%zu bytes, built for input %s, %lld classes)\n%s%s",
                      strlen(m.model_text), in, (long long)m.model_classes, m.model_text,
                      m.model_text[0] && m.model_text[strlen(m.model_text) - 1] != '\n' ? "\n"
                                                                                      : "");
        }
        if (b.oom)
            st = tg__ck_fail(TG_ERR_NOMEM, err, sizeof err, "%s: out of memory", path);
        else if (bad) {
            st = tg__ck_fail(TG_ERR_FORMAT, err, sizeof err, "%s (%d tensor%s damaged)", first, bad,
                             bad > 1 ? "s" : "");
        }
    }
    free(buf);
    tg__ck_free_entries(e, ne);
    if (f.file >= 0)
        tg__ck_close(&f);
    tg_ckpt_meta_free(&m);
    if (st == TG_OK || (st == TG_ERR_FORMAT && bad))
        *text = b.p;
    else
        free(b.p);
    return st ? tg__fail(ctx, st, "%s", err) : TG_OK;
}
