/*
 * h5data.c: opening one split of an HDF5 dataset file and validating it
 * against the schema (the file, the group, x and y, the attributes, every
 * label). Reading samples is h5data_read.c.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5data_internal.h"

/* Labels are checked at open in blocks of this many. */
#define LABEL_BLOCK 65536
/* The largest chunk cache given to a compressed dataset. */
#define FILTERED_CHUNK_CACHE ((size_t)64 << 20)
/*
 * Deflate, the filter the converters and h5py use, cannot shrink data more
 * than about 1032:1, so a compressed dataset cannot hold more than this many
 * times the file's size. Uncompressed data must fit in the file itself.
 */
#define MAX_FILTER_RATIO 1032

static const char *xdesc = "a dataset of shape (N, ...) with dtype u8 or f32";
static const char *ydesc = "a dataset of shape (N,) with an integer dtype (u8, i32 or i64)";

bool tg__h5d_stop_asked(const tg_dataset *ds) { return ds->stop && ds->stop(ds->stop_user); }

tg_status tg__h5d_stopped(const tg_dataset *ds, const char *what, char *err, size_t errlen) {
    return tg__ds_fail(TG_ERR_STOPPED, err, errlen, "%s: %s: %s stopped by request", ds->path,
                       ds->split, what);
}

tg_status tg__h5d_fail(const tg_dataset *ds, tg_status st, const char *what, char *err,
                        size_t errlen) {
    char detail[256];

    return tg__ds_fail(st, err, errlen, "%s: %s failed (HDF5: %s)", ds->path, what,
                       tg__ds_h5_detail(detail, sizeof detail));
}

static herr_t list_cb(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    char *buf = data;
    size_t used = strlen(buf);

    (void)g;
    (void)info;
    if (name[0] != '.' && used + strlen(name) + 4 < 256)
        snprintf(buf + used, 256 - used, "%s/%s", used ? ", " : "", name);
    return 0;
}

/* Opens the split group, or says which groups the file does have. */
static tg_status open_group(tg_dataset *ds, char *err, size_t errlen) {
    char have[256] = "";
    htri_t ex = H5Lexists(ds->file, ds->split, H5P_DEFAULT);

    if (ex < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "looking up the split", err, errlen);
    if (ex == 0) {
        hsize_t idx = 0;
        (void)H5Literate(ds->file, H5_INDEX_NAME, H5_ITER_INC, &idx, list_cb, have);
        /* A checkpoint holds /tensors and no splits: say so rather than
         * that a split is missing. */
        htri_t ck = H5Lexists(ds->file, "tensors", H5P_DEFAULT);
        (void)H5Eclear2(H5E_DEFAULT);
        if (ck > 0)
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s is a tapegrad checkpoint, not a dataset (a dataset holds "
                               "splits such as %s with x and y; give a checkpoint to --resume, "
                               "or to eval/export --ckpt)",
                               ds->path, ds->split);
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: split group %s not found (the file has %s)", ds->path, ds->split,
                           have[0] ? have : "no groups");
    }
    ds->grp = H5Oopen(ds->file, ds->split, H5P_DEFAULT);
    if (ds->grp < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "opening the split group", err, errlen);
    if (H5Iget_type(ds->grp) != H5I_GROUP)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s is not a group (expected a group holding x and y)", ds->path,
                           ds->split);
    return TG_OK;
}

/* Opens dataset `name` of the split; dapl tunes the chunk cache. */
static tg_status open_member(tg_dataset *ds, const char *name, const char *desc, hid_t dapl,
                             hid_t *out, char *err, size_t errlen) {
    htri_t ex = H5Lexists(ds->grp, name, H5P_DEFAULT);

    if (ex < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "looking up a dataset", err, errlen);
    if (ex == 0)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: %s/%s not found (expected %s)",
                           ds->path, ds->split, name, desc);
    *out = H5Oopen(ds->grp, name, H5P_DEFAULT);
    if (*out < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "opening a dataset", err, errlen);
    if (H5Iget_type(*out) != H5I_DATASET)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: %s/%s is not a dataset (expected %s)",
                           ds->path, ds->split, name, desc);
    /* Reopen through H5Dopen2 to apply the access properties. HDF5 shares
     * one structure between the open handles of a dataset and keeps the
     * properties of the first, so the probe handle is closed first. */
    if (dapl >= 0) {
        (void)H5Oclose(*out);
        *out = H5Dopen2(ds->grp, name, dapl);
        if (*out < 0)
            return tg__h5d_fail(ds, TG_ERR_IO, "opening a dataset", err, errlen);
    }
    return TG_OK;
}

/* Checks x's dtype and rank and records the sample shape. */
static tg_status check_x(tg_dataset *ds, hsize_t *dims, char *err, size_t errlen) {
    hid_t t = H5Dget_type(ds->x);
    int kind = t < 0 ? TG__H5_OTHER : tg__ds_type_kind(t);
    char tn[32] = "unknown", sh[160];
    int nd;

    if (t >= 0) {
        tg__ds_type_name(t, tn, sizeof tn);
        (void)H5Tclose(t);
    }
    if (kind != TG__H5_U8 && kind != TG__H5_F32)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s/x has dtype %s but expected u8 or f32", ds->path, ds->split, tn);
    ds->xdtype = kind == TG__H5_U8 ? TG_U8 : TG_F32;
    nd = H5Sget_simple_extent_ndims(ds->xspace);
    if (nd < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "reading the shape of x", err, errlen);
    if (nd < 2 || nd > TG_MAX_DIMS)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s/x has rank %d but expected 2..%d (N, ...)", ds->path, ds->split,
                           nd, TG_MAX_DIMS);
    if (H5Sget_simple_extent_dims(ds->xspace, dims, NULL) < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "reading the shape of x", err, errlen);
    ds->sample_ndim = nd - 1;
    ds->sample_numel = 1;
    for (int i = 1; i < nd; i++) {
        ds->sample_shape[i - 1] = (int64_t)dims[i];
        if (dims[i] == 0 || dims[i] > (hsize_t)TG_DATASET_MAX_SAMPLE_NUMEL ||
            ds->sample_numel * (int64_t)dims[i] > TG_DATASET_MAX_SAMPLE_NUMEL)
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: %s/x has shape %s: a sample must have 1 to %lld elements",
                               ds->path, ds->split, tg__ds_dims_str(dims, nd, sh, sizeof sh),
                               (long long)TG_DATASET_MAX_SAMPLE_NUMEL);
        ds->sample_numel *= (int64_t)dims[i];
    }
    ds->sample_bytes = (size_t)ds->sample_numel * (ds->xdtype == TG_U8 ? 1 : 4);
    return TG_OK;
}

/* Checks y's dtype and rank and that it matches x's length. */
static tg_status check_y(tg_dataset *ds, hsize_t nx, char *err, size_t errlen) {
    hid_t t = H5Dget_type(ds->y);
    int kind = t < 0 ? TG__H5_OTHER : tg__ds_type_kind(t);
    char tn[32] = "unknown", sh[160];
    hsize_t dims[H5S_MAX_RANK];
    int nd;

    if (t >= 0) {
        tg__ds_type_name(t, tn, sizeof tn);
        (void)H5Tclose(t);
    }
    if (kind != TG__H5_U8 && kind != TG__H5_INT && kind != TG__H5_F32)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s/y has dtype %s but expected an integer type (u8, i32 or i64) "
                           "for labels or f32 for regression targets",
                           ds->path, ds->split, tn);
    nd = H5Sget_simple_extent_ndims(ds->yspace);
    if (nd < 0 || H5Sget_simple_extent_dims(ds->yspace, dims, NULL) < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "reading the shape of y", err, errlen);
    /* f32 targets: (N,) or (N, K). */
    if (kind == TG__H5_F32 && (nd == 1 || nd == 2)) {
        ds->tdim = nd == 2 ? (int64_t)dims[1] : 1;
        if (ds->tdim < 1 || ds->tdim > TG_DATASET_MAX_CLASSES)
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: %s/y has shape %s: a target must have 1 to %lld values",
                               ds->path, ds->split, tg__ds_dims_str(dims, nd, sh, sizeof sh),
                               (long long)TG_DATASET_MAX_CLASSES);
    } else if (kind == TG__H5_F32) {
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s/y is f32 of rank %d (shape %s) but regression targets are "
                           "(N,) or (N, K)",
                           ds->path, ds->split, nd, tg__ds_dims_str(dims, nd, sh, sizeof sh));
    } else if (nd != 1)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s/y has rank %d (shape %s) but expected 1 (N,)", ds->path,
                           ds->split, nd, tg__ds_dims_str(dims, nd, sh, sizeof sh));
    if (dims[0] != nx)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: %s/y has %llu rows but %s/x has %llu",
                           ds->path, ds->split, (unsigned long long)dims[0], ds->split,
                           (unsigned long long)nx);
    if (nx == 0)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: %s is empty (x and y have 0 rows)",
                           ds->path, ds->split);
    if (nx > (hsize_t)INT64_MAX / 16)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: %s/x has too many rows (%llu)",
                           ds->path, ds->split, (unsigned long long)nx);
    ds->n = (int64_t)nx;
    return TG_OK;
}

/*
 * Reads a numeric group attribute holding one value. integer selects the
 * accepted class and the memory type (int64 or double). Returns TG_OK with
 * *found = false when the attribute is absent.
 */
static tg_status read_attr(tg_dataset *ds, const char *name, bool integer, void *val, bool *found,
                           char *err, size_t errlen) {
    htri_t ex = H5Aexists(ds->grp, name);
    hid_t a, t, sp;
    H5T_class_t cls;
    hssize_t npts;
    herr_t r = -1;

    *found = false;
    if (ex < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "looking up an attribute", err, errlen);
    if (ex == 0)
        return TG_OK;
    a = H5Aopen(ds->grp, name, H5P_DEFAULT);
    if (a < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "opening an attribute", err, errlen);
    t = H5Aget_type(a);
    sp = H5Aget_space(a);
    cls = t < 0 ? H5T_NO_CLASS : H5Tget_class(t);
    npts = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if ((cls == H5T_INTEGER || (!integer && cls == H5T_FLOAT)) && npts == 1)
        r = H5Aread(a, integer ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, val);
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (t >= 0)
        (void)H5Tclose(t);
    (void)H5Aclose(a);
    if (r < 0 && (cls == H5T_INTEGER || (!integer && cls == H5T_FLOAT)) && npts == 1)
        return tg__h5d_fail(ds, TG_ERR_IO, "reading an attribute", err, errlen);
    if (r < 0)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: %s attribute %s must be a single %s",
                           ds->path, ds->split, name, integer ? "integer" : "number");
    *found = true;
    return TG_OK;
}

/*
 * Reads the normalisation attribute `name` (mean or std) into vals: one
 * number, or a vector with one number per channel (x's first axis after
 * N when x is (N, C, H, W); other samples have one channel). *count gets 1 or C; *found whether the attribute exists.
 */
static tg_status read_norm(tg_dataset *ds, const char *name, double *vals, int64_t *count,
                           bool *found, char *err, size_t errlen) {
    /* Only images (C, H, W) have channels; (H, W) images and vectors have one. */
    int64_t c = ds->sample_ndim == 3 ? ds->sample_shape[0] : 1;
    htri_t ex = H5Aexists(ds->grp, name);
    hid_t a, t, sp;
    H5T_class_t cls;
    hssize_t npts;
    int nd;
    herr_t r = -1;

    *found = false;
    *count = 1;
    if (ex < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "looking up an attribute", err, errlen);
    if (ex == 0)
        return TG_OK;
    a = H5Aopen(ds->grp, name, H5P_DEFAULT);
    if (a < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "opening an attribute", err, errlen);
    t = H5Aget_type(a);
    sp = H5Aget_space(a);
    cls = t < 0 ? H5T_NO_CLASS : H5Tget_class(t);
    npts = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    bool numeric = cls == H5T_INTEGER || cls == H5T_FLOAT;
    bool fits = npts == 1 || (nd == 1 && npts == c && c <= TG__H5D_MAX_NORM_CHANNELS);
    if (numeric && fits)
        r = H5Aread(a, H5T_NATIVE_DOUBLE, vals);
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (t >= 0)
        (void)H5Tclose(t);
    (void)H5Aclose(a);
    if (r < 0 && numeric && fits)
        return tg__h5d_fail(ds, TG_ERR_IO, "reading an attribute", err, errlen);
    if (!numeric)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s attribute %s must be a number or a vector of %lld numbers "
                           "(one per channel)",
                           ds->path, ds->split, name, (long long)c);
    if (!fits)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s attribute %s has %lld values but expected 1 or %lld (one per "
                           "channel: x's samples have %lld channels%s)",
                           ds->path, ds->split, name, (long long)npts, (long long)c,
                           (long long)c,
                           c > TG__H5D_MAX_NORM_CHANNELS ? ", more than a vector may have" : "");
    *count = npts;
    *found = true;
    return TG_OK;
}

/* The scale (a number) and the per-channel mean and std, checked. */
static tg_status read_norms(tg_dataset *ds, char *err, size_t errlen) {
    int64_t c = ds->sample_shape[0], cnt[2] = {1, 1};
    const char *names[2] = {TG__ATTR_MEAN, TG__ATTR_STD};
    double *v[2];
    bool found;
    tg_status st;

    ds->scale = 1.0;
    st = read_attr(ds, TG__ATTR_SCALE, false, &ds->scale, &found, err, errlen);
    if (st)
        return st;
    if (!isfinite(ds->scale))
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s attribute scale is %g but expected a finite number", ds->path,
                           ds->split, ds->scale);
    ds->mean_v = malloc((size_t)(c <= TG__H5D_MAX_NORM_CHANNELS ? c : 1) * sizeof(double));
    ds->std_v = malloc((size_t)(c <= TG__H5D_MAX_NORM_CHANNELS ? c : 1) * sizeof(double));
    if (!ds->mean_v || !ds->std_v)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", ds->path);
    v[0] = ds->mean_v;
    v[1] = ds->std_v;
    v[0][0] = 0.0;
    v[1][0] = 1.0;
    for (int i = 0; i < 2; i++) {
        st = read_norm(ds, names[i], v[i], &cnt[i], &found, err, errlen);
        if (st)
            return st;
        for (int64_t k = 0; k < cnt[i]; k++)
            if (!isfinite(v[i][k]) || (i == 1 && !(v[i][k] > 0)))
                return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                   "%s: %s attribute %s%s is %g but expected a finite number%s",
                                   ds->path, ds->split, names[i], cnt[i] > 1 ? "[k]" : "",
                                   v[i][k], i == 1 ? " > 0" : "");
    }
    /* A number and a vector mix: the number applies to every channel. */
    ds->nch = cnt[0] > cnt[1] ? cnt[0] : cnt[1];
    for (int i = 0; i < 2; i++)
        for (int64_t k = cnt[i]; k < ds->nch; k++)
            v[i][k] = v[i][0];
    ds->ch_numel = ds->sample_numel / ds->nch;
    ds->mean = ds->mean_v[0];
    ds->std = ds->std_v[0];
    return TG_OK;
}

static tg_status read_attrs(tg_dataset *ds, char *err, size_t errlen) {
    bool found;
    tg_status st;

    st = ds->tdim ? TG_OK
                  : read_attr(ds, TG__ATTR_NUM_CLASSES, true, &ds->num_classes, &found, err,
                              errlen);
    if (st)
        return st;
    /* Regression targets have no classes: num_classes is not read. */
    if (ds->tdim)
        ds->num_classes = 0;
    else if (!found)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s has no attribute num_classes (expected an integer in 1..%lld)",
                           ds->path, ds->split, (long long)TG_DATASET_MAX_CLASSES);
    if (!ds->tdim && (ds->num_classes < 1 || ds->num_classes > TG_DATASET_MAX_CLASSES))
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s attribute num_classes is %lld but expected an integer in "
                           "1..%lld",
                           ds->path, ds->split, (long long)ds->num_classes,
                           (long long)TG_DATASET_MAX_CLASSES);
    st = read_norms(ds, err, errlen);
    if (st)
        return st;
    ds->lut = malloc((size_t)ds->nch * 256 * sizeof *ds->lut);
    if (!ds->lut)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", ds->path);
    for (int64_t k = 0; k < ds->nch; k++)
        for (int v = 0; v < 256; v++)
            ds->lut[k * 256 + v] =
                (float)(((double)v * ds->scale - ds->mean_v[k]) / ds->std_v[k]);
    return TG_OK;
}

/* Reads y[start, start+count) as int64 into dst. */
static herr_t read_labels(tg_dataset *ds, hsize_t start, hsize_t count, int64_t *dst) {
    hid_t ms = H5Screate_simple(1, &count, NULL);
    herr_t r = -1;

    if (ms >= 0 && H5Sselect_hyperslab(ds->yspace, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0)
        r = H5Dread(ds->y, H5T_NATIVE_INT64, ms, ds->yspace, H5P_DEFAULT, dst);
    if (ms >= 0)
        (void)H5Sclose(ms);
    return r;
}

tg_status tg__h5d_label_range(const tg_dataset *ds, int64_t i, int64_t v, const char *when,
                             char *err, size_t errlen) {
    return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                       "%s: %s/y[%lld] = %lld is outside [0, %lld) (num_classes = %lld)%s",
                       ds->path, ds->split, (long long)i, (long long)v, (long long)ds->num_classes,
                       (long long)ds->num_classes, when);
}

/*
 * Checks every label in bounded blocks. When all of y fits the budget the
 * blocks are read straight into the label cache, which is then kept.
 */
static tg_status check_labels(tg_dataset *ds, char *err, size_t errlen) {
    int64_t *buf;
    bool keep = ds->budget >= 0 && (uint64_t)ds->n <= (uint64_t)ds->budget / sizeof(int64_t);

    buf =
        malloc((size_t)(keep ? ds->n : (ds->n < LABEL_BLOCK ? ds->n : LABEL_BLOCK)) * sizeof *buf);
    if (!buf)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory to check the labels",
                           ds->path);
    for (int64_t s = 0; s < ds->n; s += LABEL_BLOCK) {
        int64_t m = ds->n - s < LABEL_BLOCK ? ds->n - s : LABEL_BLOCK;
        int64_t *dst = keep ? buf + s : buf;

        if (tg__h5d_stop_asked(ds)) {
            free(buf);
            return tg__h5d_stopped(ds, "checking the labels", err, errlen);
        }
        if (read_labels(ds, (hsize_t)s, (hsize_t)m, dst) < 0) {
            free(buf);
            return tg__h5d_fail(ds, TG_ERR_IO, "reading y", err, errlen);
        }
        for (int64_t i = 0; i < m; i++)
            if (dst[i] < 0 || dst[i] >= ds->num_classes) {
                int64_t v = dst[i];
                free(buf);
                return tg__h5d_label_range(ds, s + i, v, "", err, errlen);
            }
    }
    if (keep)
        ds->y_cache = buf;
    else
        free(buf);
    return TG_OK;
}

/*
 * The chunk cache of a dataset. Uncompressed chunks bypass it: a zero-byte
 * cache makes HDF5 read just the selected bytes, not whole chunks, and keeps
 * memory within the budget. Compressed chunks need it, or a chunk would be
 * inflated once per sample read from it.
 */
static hid_t chunk_access(const tg_dataset *ds, hid_t dset) {
    hid_t dcpl = H5Dget_create_plist(dset);
    hid_t dapl;
    int nfilters = dcpl < 0 ? 0 : H5Pget_nfilters(dcpl);
    size_t bytes = 0;

    if (dcpl >= 0)
        (void)H5Pclose(dcpl);
    if (nfilters > 0 && ds->budget > 0)
        bytes =
            (uint64_t)ds->budget < FILTERED_CHUNK_CACHE ? (size_t)ds->budget : FILTERED_CHUNK_CACHE;
    dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0 && H5Pset_chunk_cache(dapl, 12421, bytes, 1.0) < 0) {
        (void)H5Pclose(dapl);
        dapl = -1;
    }
    return dapl;
}

/* Opens a member once to learn its layout, then again with the chunk cache
 * that layout wants. */
static tg_status open_tuned(tg_dataset *ds, const char *name, const char *desc, hid_t *out,
                            char *err, size_t errlen) {
    hid_t probe = -1, dapl;
    tg_status st = open_member(ds, name, desc, -1, &probe, err, errlen);

    if (st) {
        if (probe >= 0)
            (void)H5Oclose(probe);
        return st;
    }
    dapl = chunk_access(ds, probe);
    (void)H5Oclose(probe);
    if (dapl < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "setting up dataset access", err, errlen);
    st = open_member(ds, name, desc, dapl, out, err, errlen);
    (void)H5Pclose(dapl);
    return st;
}

/*
 * Checks that the data dataset `name` declares (rows rows of `per_row`
 * elements) can be in the file: at most its size on disk when stored
 * uncompressed, MAX_FILTER_RATIO times that when compressed. A damaged or
 * hostile header declaring 2^40 rows in a small file is refused here rather
 * than read for hours as fill values. Overflow counts as too large.
 */
static tg_status check_stored(const tg_dataset *ds, hid_t dset, const char *name, uint64_t rows,
                              uint64_t per_row, char *err, size_t errlen) {
    hid_t t = H5Dget_type(dset), dcpl = H5Dget_create_plist(dset);
    size_t es = t >= 0 ? H5Tget_size(t) : 0;
    int nf = dcpl >= 0 ? H5Pget_nfilters(dcpl) : -1;
    uint64_t bytes, cap;
    char total[32];
    bool over;

    if (t >= 0)
        (void)H5Tclose(t);
    if (dcpl >= 0)
        (void)H5Pclose(dcpl);
    if (es == 0 || nf < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "reading the layout of a dataset", err, errlen);
    over = __builtin_mul_overflow(rows, per_row, &bytes) ||
           __builtin_mul_overflow(bytes, (uint64_t)es, &bytes);
    if (nf == 0)
        cap = (uint64_t)ds->file_bytes;
    else if (__builtin_mul_overflow((uint64_t)ds->file_bytes, (uint64_t)MAX_FILTER_RATIO, &cap))
        cap = UINT64_MAX;
    if (!over && bytes <= cap)
        return TG_OK;
    if (over)
        snprintf(total, sizeof total, "more than 2^64");
    else
        snprintf(total, sizeof total, "%llu", (unsigned long long)bytes);
    return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                       "%s: %s/%s declares %llu rows of %llu elements of %zu bytes (%s bytes) but "
                       "the file has only %lld bytes%s: its header is damaged or its data is "
                       "missing",
                       ds->path, ds->split, name, (unsigned long long)rows,
                       (unsigned long long)per_row, es, total, (long long)ds->file_bytes,
                       nf ? " (compressed data expands at most 1032 times)" : "");
}

static tg_status open_members(tg_dataset *ds, char *err, size_t errlen) {
    hsize_t dims[H5S_MAX_RANK];
    tg_status st;

    st = open_tuned(ds, "x", xdesc, &ds->x, err, errlen);
    if (st == TG_OK)
        st = open_tuned(ds, "y", ydesc, &ds->y, err, errlen);
    if (st)
        return st;
    ds->xspace = H5Dget_space(ds->x);
    ds->yspace = H5Dget_space(ds->y);
    if (ds->xspace < 0 || ds->yspace < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "reading the dataspaces", err, errlen);
    st = check_x(ds, dims, err, errlen);
    if (st == TG_OK)
        st = check_y(ds, dims[0], err, errlen);
    if (st == TG_OK)
        st = check_stored(ds, ds->x, "x", dims[0], (uint64_t)ds->sample_numel, err, errlen);
    if (st == TG_OK)
        st = check_stored(ds, ds->y, "y", dims[0], (uint64_t)(ds->tdim ? ds->tdim : 1), err,
                          errlen);
    return st;
}

/* Opens the file after checking it is a readable HDF5 file. */
static tg_status open_file(tg_dataset *ds, char *err, size_t errlen) {
    char detail[256];
    struct stat sb;
    htri_t is;
    hid_t fapl;

    if (stat(ds->path, &sb) != 0 || access(ds->path, R_OK) != 0)
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot open: %s", ds->path,
                           strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: is a directory, expected an HDF5 file",
                           ds->path);
    ds->file_bytes = (int64_t)sb.st_size;
    is = tg__ds_is_hdf5(ds->path);
    if (is < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "checking the file", err, errlen);
    if (is == 0)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: not an HDF5 file (no HDF5 signature found)", ds->path);
    fapl = tg__ds_fapl(true);
    if (fapl < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "setting up file access", err, errlen);
    ds->file = H5Fopen(ds->path, H5F_ACC_RDONLY, fapl);
    /* Take the reason before the next API call clears the error stack. */
    if (ds->file < 0)
        tg__ds_h5_detail(detail, sizeof detail);
    (void)H5Pclose(fapl);
    if (ds->file >= 0)
        return TG_OK;
    if (strstr(detail, "truncated"))
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: file is truncated (%lld bytes on disk; HDF5: %s)", ds->path,
                           (long long)sb.st_size, detail);
    return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot open as HDF5 (HDF5: %s)", ds->path,
                       detail);
}

static char *dup_str(const char *prefix, const char *s) {
    size_t len = strlen(prefix) + strlen(s) + 1;
    char *p = malloc(len);

    if (p)
        snprintf(p, len, "%s%s", prefix, s);
    return p;
}

tg_status tg_dataset_open_opts(const char *path, const char *split, const tg_dataset_options *opts,
                               tg_dataset **out, char *err, size_t errlen) {
    tg_dataset *ds;
    tg_status st;

    if (out)
        *out = NULL;
    if (!path || !split || !out)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_dataset_open: path, split and out must be given");
    while (*split == '/')
        split++;
    if (!*split || strchr(split, '/'))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "%s: bad split name \"%s\" (expected a top-level group like \"train\")",
                           path, split);
    tg__ds_h5_quiet();
    ds = calloc(1, sizeof *ds);
    if (!ds)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", path);
    ds->file = ds->grp = ds->x = ds->y = ds->xspace = ds->yspace = -1;
    ds->budget = opts && opts->cache_budget ? opts->cache_budget : TG_DATASET_DEFAULT_CACHE_BUDGET;
    ds->stop = opts ? opts->stop : NULL;
    ds->stop_user = opts ? opts->stop_user : NULL;
    ds->path = dup_str("", path);
    ds->split = dup_str("/", split);
    if (!ds->path || !ds->split) {
        tg_dataset_close(ds);
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", path);
    }
    st = open_file(ds, err, errlen);
    if (st == TG_OK)
        st = open_group(ds, err, errlen);
    /* A split of tokens (and no x) is read in windows (h5tokens.c). */
    if (st == TG_OK && H5Lexists(ds->grp, "tokens", H5P_DEFAULT) > 0 &&
        H5Lexists(ds->grp, "x", H5P_DEFAULT) == 0) {
        st = tg__h5d_open_tokens(ds, opts ? opts->block_size : 0, err, errlen);
        goto done;
    }
    if (st == TG_OK)
        st = open_members(ds, err, errlen);
    if (st == TG_OK)
        st = read_attrs(ds, err, errlen);
    if (st == TG_OK)
        st = ds->tdim ? tg__h5d_check_targets(ds, err, errlen) : check_labels(ds, err, errlen);
done:
    if (st) {
        tg_dataset_close(ds);
        return st;
    }
    *out = ds;
    return TG_OK;
}

tg_status tg_dataset_open(const char *path, const char *split, tg_dataset **out, char *err,
                          size_t errlen) {
    return tg_dataset_open_opts(path, split, NULL, out, err, errlen);
}

void tg_dataset_close(tg_dataset *ds) {
    hid_t sp[2], ob[4];

    if (!ds)
        return;
    sp[0] = ds->xspace;
    sp[1] = ds->yspace;
    ob[0] = ds->x;
    ob[1] = ds->y;
    ob[2] = ds->grp;
    /* Closing a read-only file cannot lose data; failures are not actionable. */
    for (int i = 0; i < 2; i++)
        if (sp[i] >= 0)
            (void)H5Sclose(sp[i]);
    for (int i = 0; i < 3; i++)
        if (ob[i] >= 0)
            (void)H5Oclose(ob[i]);
    if (ds->file >= 0)
        (void)H5Fclose(ds->file);
    free(ds->y_cache);
    free(ds->x_cache);
    free(ds->tok_cache);
    free(ds->tok_win);
    free(ds->t_cache);
    free(ds->trow);
    free(ds->mean_v);
    free(ds->std_v);
    free(ds->lut);
    free(ds->order);
    free(ds->raw);
    free(ds->ylab);
    free(ds->path);
    free(ds->split);
    free(ds);
}

int64_t tg_dataset_len(const tg_dataset *ds) { return ds->n; }
int64_t tg_dataset_sample_numel(const tg_dataset *ds) { return ds->sample_numel; }
tg_dtype tg_dataset_x_dtype(const tg_dataset *ds) { return ds->xdtype; }
int64_t tg_dataset_num_classes(const tg_dataset *ds) { return ds->num_classes; }
int64_t tg_dataset_target_dim(const tg_dataset *ds) { return ds->tdim; }
double tg_dataset_scale(const tg_dataset *ds) { return ds->scale; }
double tg_dataset_mean(const tg_dataset *ds) { return ds->mean; }
double tg_dataset_std(const tg_dataset *ds) { return ds->std; }

int64_t tg_dataset_norm(const tg_dataset *ds, const double **mean, const double **std) {
    if (mean)
        *mean = ds->mean_v;
    if (std)
        *std = ds->std_v;
    return ds->nch;
}
bool tg_dataset_x_cached(const tg_dataset *ds) { return ds->x_cache || ds->tok_cache; }
const char *tg_dataset_path(const tg_dataset *ds) { return ds->path; }
const char *tg_dataset_split(const tg_dataset *ds) { return ds->split; }

const int64_t *tg_dataset_sample_shape(const tg_dataset *ds, int *ndim) {
    if (ndim)
        *ndim = ds->sample_ndim;
    return ds->sample_shape;
}

