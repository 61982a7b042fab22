/*
 * npy_convert.c: NumPy .npy files (x and y) to the tapegrad HDF5 schema.
 *
 * Memory stays bounded whatever the size of the inputs: y is read twice in
 * blocks (once to check the labels and find num_classes, which decides the
 * stored type, and once to write it), and x is streamed through one chunk of
 * samples and a small raw block, converted, checked and summed on the way.
 * The output side is h5out.c's, as for idx.c: a new file under a temporary
 * name, or a temporary group in an existing file, published only when
 * complete.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy_internal.h"

#define NPY_DEFAULT_CHUNK 1024
/* The default chunk shrinks for large samples so that the one chunk held in
 * memory (and the reads of a chunk cache) stay modest. */
#define NPY_CHUNK_BYTES ((int64_t)64 << 20)
#define NPY_LABEL_CHUNK_FACTOR 64
/* Elements per raw read of x. */
#define NPY_RAW_BLOCK ((int64_t)1 << 18)
/* Labels per read while checking y. */
#define NPY_LABEL_BLOCK ((int64_t)1 << 16)

struct conv {
    struct npy_file x, y;
    tg_npy_options o;
    int64_t n, per;       /* samples, elements per sample */
    int64_t ncls;         /* num_classes to write (0: regression targets) */
    int64_t tdim;         /* f32 targets per sample (y f4/f8 (N,) or (N, K)); 0: labels */
    bool xu8;             /* x stored as u8 (else f32) */
    int64_t chunk;        /* samples per chunk of x */
    double scale;
    /* The statistics are per channel (x's axis 1) when x holds images with
     * channels, (N, C, H, W) with C > 1, else one set for all of x: nch of them, each
     * channel covering ch_numel consecutive elements of a sample. */
    int64_t nch, ch_numel;
    struct chstat *cs;
};

/* Statistics of one channel of x: exact integer sums for u8; for floats,
 * count, mean and sum of squared deviations merged block by block (Chan et
 * al.), which stays accurate where E[v^2] - E[v]^2 would cancel. Then the
 * mean and std written. */
struct chstat {
    uint64_t sum, sumsq;
    double cnt, fmean, m2;
    double mean, sd;
};

/* The most channels that get statistics of their own. */
#define NPY_MAX_CHANNELS 4096

/* ---------------------------------------------------------------------- */
/* Inputs                                                                  */
/* ---------------------------------------------------------------------- */

static tg_status check_x(const struct npy_file *x, char *err, size_t errlen) {
    char sh[160];

    tg__npy_shape_str(x, sh, sizeof sh);
    if (!(x->kind == 'u' && x->size == 1) && x->kind != 'f')
        return tg__ds_fail(TG_ERR_UNSUPPORTED, err, errlen,
                           "%s: x has dtype %s%s but expected uint8 ('|u1'), float32 ('<f4') or "
                           "float64 ('<f8')",
                           x->path, x->descr,
                           strchr(x->descr, 'O') ? " (Python objects)" : "");
    if (x->fortran && x->ndim > 1)
        return tg__ds_fail(TG_ERR_UNSUPPORTED, err, errlen,
                           "%s: x of shape %s is in Fortran order; expected C order (save "
                           "np.ascontiguousarray(x))",
                           x->path, sh);
    if (x->ndim < 2 || x->ndim > 5)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: x has shape %s but expected (N, d1[, ..., d4]): 1 to 4 dims "
                           "after N",
                           x->path, sh);
    int64_t per = 1;
    for (int i = 0; i < x->ndim; i++) {
        if (x->shape[i] == 0)
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: x has shape %s: an empty array, nothing to convert", x->path,
                               sh);
        /* The reader's bound on a sample, so that what is written reads. */
        if (i > 0 && (x->shape[i] > TG_DATASET_MAX_SAMPLE_NUMEL ||
                      (per *= x->shape[i]) > TG_DATASET_MAX_SAMPLE_NUMEL))
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: x has shape %s: a sample must have at most %lld elements",
                               x->path, sh, (long long)TG_DATASET_MAX_SAMPLE_NUMEL);
    }
    return tg__npy_check_body(x, err, errlen);
}

static tg_status check_y(const struct npy_file *y, char *err, size_t errlen) {
    char sh[160];

    tg__npy_shape_str(y, sh, sizeof sh);
    if (y->kind != 'u' && y->kind != 'i' && y->kind != 'f')
        return tg__ds_fail(TG_ERR_UNSUPPORTED, err, errlen,
                           "%s: y has dtype %s%s but expected an integer dtype (i1, i2, i4, i8, "
                           "u1, u2, u4, u8) for labels or f4/f8 for regression targets",
                           y->path, y->descr,
                           strchr(y->descr, 'O') ? " (Python objects)" : "");
    /* Regression targets: (N,) or (N, K), C order. */
    if (y->kind == 'f' && (y->ndim != 1 && y->ndim != 2))
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: y has shape %s but float targets are (N,) or (N, K)", y->path, sh);
    if (y->kind == 'f' && y->ndim == 2 && y->fortran)
        return tg__ds_fail(TG_ERR_UNSUPPORTED, err, errlen,
                           "%s: y is in Fortran order; save np.ascontiguousarray(y)", y->path);
    if (y->kind == 'f' && y->ndim == 2 && y->shape[1] == 0)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: y has shape %s: no targets per sample", y->path, sh);
    if (y->kind != 'f' && y->ndim != 1)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: y has shape %s but expected (N,): one label per sample", y->path,
                           sh);
    /* One dimension is laid out the same in either order. */
    if (y->shape[0] == 0)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: y has shape %s: an empty array, nothing to convert", y->path, sh);
    return tg__npy_check_body(y, err, errlen);
}

/* Decodes the label at p; *raw receives its bits as read (for messages),
 * and a uint64 label above INT64_MAX comes back as INT64_MAX. */
static int64_t label_at(const struct npy_file *y, const unsigned char *p, uint64_t *raw) {
    uint64_t v = tg__npy_load_bits(p, y->size, y->big);
    int bits = 8 * y->size;

    if (y->kind == 'i' && bits < 64 && (v >> (bits - 1)) & 1)
        v |= ~(uint64_t)0 << bits;
    *raw = v;
    if (y->kind == 'u' && v > (uint64_t)INT64_MAX)
        return INT64_MAX;
    return (int64_t)v;
}

/* First pass over y: every label in range; num_classes when not given. */
/* TG_ERR_STOPPED when the caller's stop callback asks for it. */
static tg_status check_stop(const struct conv *c, const char *path, char *err, size_t errlen) {
    if (c->o.stop && c->o.stop(c->o.stop_user))
        return tg__ds_fail(TG_ERR_STOPPED, err, errlen, "%s: conversion stopped by request",
                           path);
    return TG_OK;
}

static tg_status convert_floats(const struct npy_file *x, const char *name,
                                const unsigned char *raw, int64_t m, int64_t first, float *out,
                                char *err, size_t errlen);

/* Regression targets: every value finite and within f32 (read and
 * converted once here, again when written). */
static tg_status scan_targets(struct conv *c, char *err, size_t errlen) {
    struct npy_file *y = &c->y;
    int64_t total = c->n * c->tdim;
    unsigned char *buf = malloc((size_t)(NPY_LABEL_BLOCK * y->size));
    float *f = malloc((size_t)NPY_LABEL_BLOCK * sizeof *f);
    tg_status st = buf && f ? TG_OK
                            : tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", y->path);

    if (st == TG_OK && c->o.num_classes)
        st = tg__ds_fail(TG_ERR_INVALID, err, errlen,
                         "%s: num_classes %lld given, but y holds float regression targets",
                         y->path, (long long)c->o.num_classes);
    for (int64_t i = 0; i < total && st == TG_OK; i += NPY_LABEL_BLOCK) {
        int64_t m = total - i < NPY_LABEL_BLOCK ? total - i : NPY_LABEL_BLOCK;

        st = check_stop(c, y->path, err, errlen);
        if (st == TG_OK)
            st = tg__npy_read(y, buf, m, err, errlen);
        if (st == TG_OK)
            st = convert_floats(y, "y", buf, m, i, f, err, errlen);
    }
    free(buf);
    free(f);
    c->ncls = 0;
    return st;
}

/* Second pass over y for targets: f32, one chunk of rows per write. */
static tg_status write_targets(struct conv *c, const struct tg__ds_out *o, hid_t yd, int64_t yc,
                               char *err, size_t errlen) {
    struct npy_file *y = &c->y;
    int64_t k = c->tdim;
    unsigned char *raw = malloc((size_t)(yc * k * y->size));
    float *f = malloc(sizeof(float) * (size_t)(yc * k));
    hsize_t dims[2] = {(hsize_t)c->n, (hsize_t)k};
    tg_status st = raw && f ? tg__npy_seek_body(y, err, errlen)
                            : tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", y->path);

    for (int64_t i = 0; i < c->n && st == TG_OK; i += yc) {
        int64_t m = c->n - i < yc ? c->n - i : yc;

        st = tg__npy_read(y, raw, m * k, err, errlen);
        if (st == TG_OK)
            st = convert_floats(y, "y", raw, m * k, i * k, f, err, errlen);
        if (st == TG_OK && tg__ds_out_rows(yd, H5T_NATIVE_FLOAT, y->ndim, dims, i, m, f) < 0)
            st = tg__ds_out_err(o, "writing y", err, errlen);
    }
    free(raw);
    free(f);
    return st;
}

static tg_status scan_labels(struct conv *c, char *err, size_t errlen) {
    if (c->tdim)
        return scan_targets(c, err, errlen);
    struct npy_file *y = &c->y;
    unsigned char *buf = malloc((size_t)(NPY_LABEL_BLOCK * y->size));
    int64_t max = -1, given = c->o.num_classes;
    tg_status st = TG_OK;

    if (!buf)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", y->path);
    for (int64_t i = 0; i < c->n && st == TG_OK; i += NPY_LABEL_BLOCK) {
        int64_t m = c->n - i < NPY_LABEL_BLOCK ? c->n - i : NPY_LABEL_BLOCK;

        st = check_stop(c, y->path, err, errlen);
        if (st == TG_OK)
            st = tg__npy_read(y, buf, m, err, errlen);
        for (int64_t k = 0; k < m && st == TG_OK; k++) {
            uint64_t raw;
            int64_t v = label_at(y, buf + k * y->size, &raw);

            if (v < 0)
                st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                 "%s: label y[%lld] = %lld is negative; labels must lie in [0, "
                                 "num_classes)",
                                 y->path, (long long)(i + k), (long long)v);
            else if (given && v >= given)
                st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                 "%s: label y[%lld] = %llu is not below num_classes %lld",
                                 y->path, (long long)(i + k), (unsigned long long)raw,
                                 (long long)given);
            else if (v >= TG_DATASET_MAX_CLASSES)
                st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                 "%s: label y[%lld] = %llu is too large: num_classes must be "
                                 "at most %lld",
                                 y->path, (long long)(i + k), (unsigned long long)raw,
                                 (long long)TG_DATASET_MAX_CLASSES);
            else if (v > max)
                max = v;
        }
    }
    free(buf);
    c->ncls = given ? given : max + 1;
    return st;
}

/* ---------------------------------------------------------------------- */
/* Streaming                                                               */
/* ---------------------------------------------------------------------- */

/* Second pass over y: the checked labels as i32, one chunk of y per write. */
static tg_status write_labels(struct conv *c, const struct tg__ds_out *o, hid_t yd, int64_t yc,
                              char *err, size_t errlen) {
    struct npy_file *y = &c->y;
    unsigned char *raw = malloc((size_t)(yc * y->size));
    int32_t *lab = malloc(sizeof(int32_t) * (size_t)yc);
    hsize_t dims[1] = {(hsize_t)c->n};
    tg_status st = raw && lab ? tg__npy_seek_body(y, err, errlen)
                              : tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", y->path);

    for (int64_t i = 0; i < c->n && st == TG_OK; i += yc) {
        int64_t m = c->n - i < yc ? c->n - i : yc;
        uint64_t bits;

        st = tg__npy_read(y, raw, m, err, errlen);
        for (int64_t k = 0; k < m && st == TG_OK; k++)
            lab[k] = (int32_t)label_at(y, raw + k * y->size, &bits);
        if (st == TG_OK && tg__ds_out_rows(yd, H5T_NATIVE_INT32, 1, dims, i, m, lab) < 0)
            st = tg__ds_out_err(o, "writing y", err, errlen);
    }
    free(raw);
    free(lab);
    return st;
}

/* Names element e of x (or y: `name`) as "x[3, 0, 1, 2]" in buf. */
static const char *x_index(const struct npy_file *x, const char *name, int64_t e, char *buf,
                           size_t len) {
    int64_t idx[TG_MAX_DIMS];
    size_t used = 0;

    for (int d = x->ndim - 1; d >= 0; d--) {
        idx[d] = e % x->shape[d];
        e /= x->shape[d];
    }
    used += (size_t)snprintf(buf, len, "%s[", name);
    for (int d = 0; d < x->ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", d ? ", " : "",
                                 (long long)idx[d]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
    return buf;
}

/* Converts m raw float elements to f32 into out, refusing non-finite
 * values; `first` is the element index of raw[0] for the message. */
static tg_status convert_floats(const struct npy_file *x, const char *name,
                                const unsigned char *raw, int64_t m, int64_t first, float *out,
                                char *err, size_t errlen) {
    char where[160];

    for (int64_t k = 0; k < m; k++) {
        uint64_t bits = tg__npy_load_bits(raw + k * x->size, x->size, x->big);
        double d;
        float f;

        if (x->size == 4) {
            uint32_t b32 = (uint32_t)bits;
            memcpy(&f, &b32, sizeof f);
            d = f;
        } else {
            memcpy(&d, &bits, sizeof d);
            f = (float)d;
        }
        if (!isfinite(d))
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: %s is %s; float values must be finite", x->path,
                               x_index(x, name, first + k, where, sizeof where),
                               isnan(d) ? "NaN" : d > 0 ? "inf" : "-inf");
        if (!isfinite(f))
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: %s = %g is outside the float32 range it is stored in",
                               x->path, x_index(x, name, first + k, where, sizeof where), d);
        out[k] = f;
    }
    return TG_OK;
}

/* Adds m stored values, all of one channel, to its statistics. */
static void add_run(struct conv *c, struct chstat *cs, const void *vals, int64_t m) {
    const uint8_t *u = vals;
    const float *f = vals;
    double bmean = 0, bm2 = 0, delta, tot;

    if (c->xu8) {
        for (int64_t k = 0; k < m; k++) {
            cs->sum += u[k];
            cs->sumsq += (uint64_t)u[k] * u[k];
        }
        return;
    }
    for (int64_t k = 0; k < m; k++)
        bmean += (double)f[k] * c->scale;
    bmean /= (double)m;
    for (int64_t k = 0; k < m; k++) {
        double dv = (double)f[k] * c->scale - bmean;
        bm2 += dv * dv;
    }
    tot = cs->cnt + (double)m;
    delta = bmean - cs->fmean;
    cs->fmean += delta * (double)m / tot;
    cs->m2 += bm2 + delta * delta * cs->cnt * (double)m / tot;
    cs->cnt = tot;
}

/* Adds m stored values that start at element `first` of x (flat, C order)
 * to the statistics, in runs of one channel; with one channel the whole
 * block is one run. */
static void add_stats(struct conv *c, const void *vals, int64_t m, int64_t first) {
    size_t esz = c->xu8 ? 1 : sizeof(float);

    if (c->nch == 1) {
        add_run(c, &c->cs[0], vals, m);
        return;
    }
    for (int64_t k = 0; k < m;) {
        int64_t e = (first + k) % c->per, ch = e / c->ch_numel;
        int64_t left = (ch + 1) * c->ch_numel - e, r = m - k < left ? m - k : left;

        add_run(c, &c->cs[ch], (const unsigned char *)vals + (size_t)k * esz, r);
        k += r;
    }
}

/* Streams x into the dataset one chunk of samples at a time. */
static tg_status write_x(struct conv *c, const struct tg__ds_out *o, hid_t xd, const hsize_t *dims,
                         char *err, size_t errlen) {
    struct npy_file *x = &c->x;
    size_t esz = c->xu8 ? 1 : sizeof(float);
    unsigned char *out = malloc((size_t)(c->chunk * c->per) * esz);
    unsigned char *raw = malloc((size_t)(NPY_RAW_BLOCK * x->size));
    tg_status st = out && raw ? TG_OK
                              : tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", x->path);

    for (int64_t i = 0; i < c->n && st == TG_OK; i += c->chunk) {
        int64_t m = c->n - i < c->chunk ? c->n - i : c->chunk, total = m * c->per;

        st = check_stop(c, x->path, err, errlen);
        for (int64_t k = 0; k < total && st == TG_OK; k += NPY_RAW_BLOCK) {
            int64_t b = total - k < NPY_RAW_BLOCK ? total - k : NPY_RAW_BLOCK;
            unsigned char *dst = out + (size_t)k * esz;

            st = tg__npy_read(x, raw, b, err, errlen);
            if (st)
                break;
            if (c->xu8)
                memcpy(dst, raw, (size_t)b);
            else
                st = convert_floats(x, "x", raw, b, i * c->per + k, (float *)(void *)dst, err,
                                    errlen);
            if (st == TG_OK)
                add_stats(c, dst, b, i * c->per + k);
        }
        if (st == TG_OK && tg__ds_out_rows(xd, c->xu8 ? H5T_NATIVE_UCHAR : H5T_NATIVE_FLOAT,
                                           x->ndim, dims, i, m, out) < 0)
            st = tg__ds_out_err(o, "writing x", err, errlen);
    }
    /* Anything after the body means the header lied (checked up front for
     * regular files; this catches pipes and files that grew). */
    if (st == TG_OK && fgetc(x->fp) != EOF)
        st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: data continues past the %lld body bytes its header announces",
                         x->path, (long long)x->body);
    free(out);
    free(raw);
    return st;
}

/* mean and std as given; else train's when the file holds a train split
 * and this is another split (tg__ds_out_train_norm), else from the
 * statistics. */
static void finish_channel(struct conv *c, struct chstat *cs) {
    double cnt = (double)c->n * (double)c->ch_numel, var;

    if (c->xu8) {
        /* As idx.c: exact integer sums, then E[v^2] - E[v]^2, well
         * conditioned for values in 0..255. */
        double m = (double)cs->sum / cnt;
        var = (double)cs->sumsq / cnt - m * m;
        cs->mean = m * c->scale;
        cs->sd = var > 0 ? sqrt(var) * fabs(c->scale) : 0.0;
    } else {
        cs->mean = cs->fmean;
        cs->sd = cs->m2 > 0 ? sqrt(cs->m2 / cs->cnt) : 0.0;
    }
    /* Constant inputs would divide by zero at read time. */
    if (!(cs->sd > 0) || !isfinite(cs->sd))
        cs->sd = 1.0;
}

/* With mean and std given (one value for all channels) the attributes are
 * numbers; else one per channel of the statistics. *mean and *sd receive
 * arrays of *n values (inside c). */
static void finish_stats(struct conv *c, const struct tg__ds_out *o, double *mean, double *sd,
                         int64_t *n) {
    if (c->o.set_mean_std) {
        mean[0] = c->o.mean;
        sd[0] = c->o.std;
        *n = 1;
        return;
    }
    *n = c->nch;
    for (int64_t k = 0; k < c->nch; k++) {
        finish_channel(c, &c->cs[k]);
        mean[k] = c->cs[k].mean;
        sd[k] = c->cs[k].sd;
    }
    (void)tg__ds_out_train_norm_v(o, mean, sd, c->nch);
}

/* The chunk of x: as asked, or the default, within the split and HDF5's
 * 4 GiB chunk limit. */
static void choose_chunk(struct conv *c) {
    int64_t bytes = c->per * (c->xu8 ? 1 : 4);

    c->chunk = c->o.chunk_samples;
    if (c->chunk <= 0) {
        c->chunk = NPY_CHUNK_BYTES / bytes;
        if (c->chunk > NPY_DEFAULT_CHUNK)
            c->chunk = NPY_DEFAULT_CHUNK;
        if (c->chunk < 1)
            c->chunk = 1;
    }
    if (c->chunk > c->n)
        c->chunk = c->n;
    while (c->chunk > 1 && c->chunk * bytes >= ((int64_t)1 << 32))
        c->chunk /= 2;
}

/* Writes x, y and the attributes into the temporary group. */
static tg_status write_split(struct conv *c, const struct tg__ds_out *o, char *err, size_t errlen) {
    hsize_t xd[TG_MAX_DIMS], xc[TG_MAX_DIMS], yd[2] = {(hsize_t)c->n, (hsize_t)c->tdim}, yc[2];
    hid_t grp, x = -1, y = -1;
    tg_status st = TG_OK;
    int32_t ncls = (int32_t)c->ncls;

    choose_chunk(c);
    for (int i = 0; i < c->x.ndim; i++)
        xd[i] = xc[i] = (hsize_t)c->x.shape[i];
    xc[0] = (hsize_t)c->chunk;
    yc[0] = (hsize_t)(c->chunk * NPY_LABEL_CHUNK_FACTOR < c->n ? c->chunk * NPY_LABEL_CHUNK_FACTOR
                                                               : c->n);
    grp = H5Gcreate2(o->file, o->tmp_group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (grp < 0)
        return tg__ds_out_err(o, "creating the split group", err, errlen);
    x = tg__ds_out_dataset(grp, "x", c->xu8 ? H5T_STD_U8LE : H5T_IEEE_F32LE, c->x.ndim, xd, xc,
                           c->o.deflate_level);
    yc[1] = (hsize_t)c->tdim;
    if (c->tdim)
        y = tg__ds_out_dataset(grp, "y", H5T_IEEE_F32LE, c->y.ndim, yd, yc, c->o.deflate_level);
    else
        y = tg__ds_out_dataset(grp, "y", c->ncls <= 256 ? H5T_STD_U8LE : H5T_STD_I32LE, 1, yd, yc,
                               c->o.deflate_level);
    if (x < 0 || y < 0)
        st = tg__ds_out_err(o, "creating x and y", err, errlen);
    if (st == TG_OK)
        st = c->tdim ? write_targets(c, o, y, (int64_t)yc[0], err, errlen)
                     : write_labels(c, o, y, (int64_t)yc[0], err, errlen);
    if (st == TG_OK)
        st = write_x(c, o, x, xd, err, errlen);
    double *mean = st == TG_OK ? malloc(2 * (size_t)c->nch * sizeof *mean) : NULL;
    if (st == TG_OK && !mean)
        st = tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", o->path);
    if (st == TG_OK) {
        int64_t n = 1;
        finish_stats(c, o, mean, mean + c->nch, &n);
        st = tg__ds_out_norm_attrs_v(o, grp, ncls, c->scale, mean, mean + c->nch, n, err, errlen);
    }
    free(mean);
    return tg__ds_out_split_close(o, grp, x, y, st, err, errlen);
}

/* ---------------------------------------------------------------------- */
/* Entry point                                                             */
/* ---------------------------------------------------------------------- */

static tg_status check_options(const tg_npy_options *o, const char *out, char *err,
                               size_t errlen) {
    if (o->chunk_samples < 0)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen, "%s: chunk_samples %lld is negative", out,
                           (long long)o->chunk_samples);
    if (o->deflate_level < 0 || o->deflate_level > 9)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen, "%s: deflate level %d is outside 0..9",
                           out, o->deflate_level);
    if (o->num_classes < 0 || o->num_classes > TG_DATASET_MAX_CLASSES)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "%s: num_classes %lld is outside 1..%lld (0 for max label + 1)", out,
                           (long long)o->num_classes, (long long)TG_DATASET_MAX_CLASSES);
    if (!isfinite(o->scale))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen, "%s: scale %g is not finite", out,
                           o->scale);
    if (o->set_mean_std && !(isfinite(o->mean) && isfinite(o->std) && o->std > 0))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "%s: mean %g / std %g: expected finite values with std > 0", out,
                           o->mean, o->std);
    return TG_OK;
}

/* Opens and checks both inputs and that they agree. */
static tg_status open_inputs(struct conv *c, const char *x_npy, const char *y_npy, char *err,
                             size_t errlen) {
    tg_status st = tg__npy_open(&c->x, x_npy, err, errlen);

    if (st == TG_OK)
        st = check_x(&c->x, err, errlen);
    if (st == TG_OK)
        st = tg__npy_open(&c->y, y_npy, err, errlen);
    if (st == TG_OK)
        st = check_y(&c->y, err, errlen);
    if (st == TG_OK && c->x.shape[0] != c->y.shape[0])
        st = tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s has %lld labels but %s has %lld samples",
                         y_npy, (long long)c->y.shape[0], x_npy, (long long)c->x.shape[0]);
    if (st)
        return st;
    c->n = c->x.shape[0];
    c->per = c->x.numel / c->n;
    c->xu8 = c->x.kind == 'u';
    c->tdim = c->y.kind == 'f' ? (c->y.ndim == 2 ? c->y.shape[1] : 1) : 0;
    c->nch = c->x.ndim == 4 && c->x.shape[1] > 1 && c->x.shape[1] <= NPY_MAX_CHANNELS
                 ? c->x.shape[1]
                 : 1;
    c->ch_numel = c->per / c->nch;
    c->cs = calloc((size_t)c->nch, sizeof *c->cs);
    if (!c->cs)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", x_npy);
    c->scale = c->o.scale != 0 ? c->o.scale : c->xu8 ? 1.0 / 255.0 : 1.0;
    return TG_OK;
}

tg_status tg_npy_convert(const char *x_npy, const char *y_npy, const char *out_h5,
                         const char *split, const tg_npy_options *opts, char *err,
                         size_t errlen) {
    struct tg__ds_out out;
    struct conv *c;
    tg_status st;

    if (!x_npy || !y_npy || !out_h5 || !split || !*x_npy || !*y_npy || !*out_h5)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_npy_convert: x, y, output and split must be given");
    tg__ds_out_init(&out, out_h5);
    c = calloc(1, sizeof *c);
    if (!c)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", out_h5);
    if (opts)
        c->o = *opts;
    st = check_options(&c->o, out_h5, err, errlen);
    if (st == TG_OK)
        st = tg__ds_out_split_name(&out, split, err, errlen);
    if (st == TG_OK)
        st = open_inputs(c, x_npy, y_npy, err, errlen);
    /* Labels are checked before the output is touched. */
    if (st == TG_OK)
        st = scan_labels(c, err, errlen);
    if (st == TG_OK) {
        tg__ds_h5_quiet();
        st = tg__ds_out_open(&out, err, errlen);
        if (st == TG_OK)
            st = write_split(c, &out, err, errlen);
        st = tg__ds_out_close(&out, st, err, errlen);
    }
    tg__npy_close(&c->x);
    tg__npy_close(&c->y);
    free(c->cs);
    free(c);
    return st;
}
