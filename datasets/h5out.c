/*
 * h5out.c: the output side of the converters (idx.c, npy_convert.c).
 *
 * A split is written into a temporary group ("/.NAME.partial") of either a
 * new file under a temporary name or an existing HDF5 file opened in place,
 * and published only when complete: the group is renamed to the split's
 * name and a new file is renamed into place. A failure at any point takes
 * back what was written, so an existing file keeps its other splits and the
 * old version of the split, and no half-written file or split is left.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datasets_internal.h"

void tg__ds_out_init(struct tg__ds_out *o, const char *path) {
    memset(o, 0, sizeof *o);
    o->path = path;
    o->file = -1;
    o->fapl = -1;
}

tg_status tg__ds_out_split_name(struct tg__ds_out *o, const char *split, char *err, size_t errlen) {
    while (*split == '/')
        split++;
    if (!*split || strchr(split, '/') || strlen(split) >= sizeof o->split - 16)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "%s: bad split name \"%s\" (expected a top-level name like \"train\")",
                           o->path, split);
    snprintf(o->split, sizeof o->split, "/%s", split);
    /* The split is built under this name and renamed when complete, so a
     * failure never leaves a split that looks valid but is partial. */
    snprintf(o->tmp_group, sizeof o->tmp_group, "/.%s.partial", split);
    return TG_OK;
}

tg_status tg__ds_out_err(const struct tg__ds_out *o, const char *what, char *err, size_t errlen) {
    char detail[256];

    return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: %s failed (HDF5: %s)", o->path, what,
                       tg__ds_h5_detail(detail, sizeof detail));
}

tg_status tg__ds_out_open(struct tg__ds_out *o, char *err, size_t errlen) {
    struct stat sb;
    size_t len;

    /* Kept open until tg__ds_out_close: closing it between a failed H5Fopen
     * and the message would clear the error stack the message quotes. */
    o->fapl = tg__ds_fapl(false);
    if (o->fapl < 0)
        return tg__ds_out_err(o, "setting up file access", err, errlen);
    if (stat(o->path, &sb) == 0) {
        if (tg__ds_is_hdf5(o->path) <= 0)
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: exists and is not an HDF5 file; refusing to overwrite it",
                               o->path);
        o->existed = true;
        o->file = H5Fopen(o->path, H5F_ACC_RDWR, o->fapl);
        if (o->file < 0)
            return tg__ds_out_err(o, "opening for writing", err, errlen);
        if (H5Lexists(o->file, o->tmp_group, H5P_DEFAULT) > 0 &&
            H5Ldelete(o->file, o->tmp_group, H5P_DEFAULT) < 0)
            return tg__ds_out_err(o, "removing a partial split", err, errlen);
        return TG_OK;
    }
    if (errno != ENOENT)
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot stat: %s", o->path, strerror(errno));
    len = strlen(o->path) + 32;
    o->tmp_path = malloc(len);
    if (!o->tmp_path)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", o->path);
    snprintf(o->tmp_path, len, "%s.tmp%ld", o->path, (long)getpid());
    /* A new file takes the newest format this HDF5 writes: its metadata
     * carries checksums, so damage is found when the file is read. Files of
     * older formats (h5py's default) stay readable. */
    if (H5Pset_libver_bounds(o->fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) < 0)
        return tg__ds_out_err(o, "choosing the file format", err, errlen);
    o->file = H5Fcreate(o->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, o->fapl);
    if (o->file < 0)
        return tg__ds_out_err(o, "creating the file", err, errlen);
    return TG_OK;
}

tg_status tg__ds_out_close(struct tg__ds_out *o, tg_status st, char *err, size_t errlen) {
    if (st == TG_OK) {
        if (H5Lexists(o->file, o->split, H5P_DEFAULT) > 0 &&
            H5Ldelete(o->file, o->split, H5P_DEFAULT) < 0)
            st = tg__ds_out_err(o, "removing the old split", err, errlen);
        else if (H5Lmove(o->file, o->tmp_group, o->file, o->split, H5P_DEFAULT, H5P_DEFAULT) < 0)
            st = tg__ds_out_err(o, "naming the split", err, errlen);
    }
    if (st != TG_OK && o->existed && o->file >= 0)
        (void)H5Ldelete(o->file, o->tmp_group, H5P_DEFAULT);
    /* Closing flushes everything written: its failure is a write failure. */
    if (o->file >= 0 && H5Fclose(o->file) < 0 && st == TG_OK)
        st = tg__ds_out_err(o, "closing the file", err, errlen);
    o->file = -1;
    if (o->fapl >= 0)
        (void)H5Pclose(o->fapl);
    o->fapl = -1;
    if (o->tmp_path) {
        if (st == TG_OK && rename(o->tmp_path, o->path) != 0)
            st = tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot rename the finished file: %s",
                             o->path, strerror(errno));
        if (st != TG_OK)
            (void)unlink(o->tmp_path);
        free(o->tmp_path);
        o->tmp_path = NULL;
    }
    return st;
}

tg_status tg__ds_out_attr(const struct tg__ds_out *o, hid_t grp, const char *name, hid_t ftype,
                          hid_t mtype, const void *val, char *err, size_t errlen) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(grp, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = a < 0 ? -1 : H5Awrite(a, mtype, val);
    char what[64];

    if (a >= 0 && H5Aclose(a) < 0)
        w = -1;
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (w < 0) {
        snprintf(what, sizeof what, "writing attribute %s", name);
        return tg__ds_out_err(o, what, err, errlen);
    }
    return TG_OK;
}

tg_status tg__ds_out_norm_attrs(const struct tg__ds_out *o, hid_t grp, int32_t num_classes,
                                double scale, double mean, double sd, char *err, size_t errlen) {
    tg_status st = tg__ds_out_attr(o, grp, TG__ATTR_NUM_CLASSES, H5T_STD_I32LE, H5T_NATIVE_INT32,
                                   &num_classes, err, errlen);

    if (st == TG_OK)
        st = tg__ds_out_attr(o, grp, TG__ATTR_SCALE, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &scale, err,
                             errlen);
    if (st == TG_OK)
        st = tg__ds_out_attr(o, grp, TG__ATTR_MEAN, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &mean, err,
                             errlen);
    if (st == TG_OK)
        st = tg__ds_out_attr(o, grp, TG__ATTR_STD, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &sd, err,
                             errlen);
    return st;
}

/* A mean or std attribute: a scalar when n is 1, else a vector of n. */
static tg_status out_vec(const struct tg__ds_out *o, hid_t grp, const char *name, const double *v,
                         int64_t n, char *err, size_t errlen) {
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp, a;
    herr_t w;
    char what[64];

    if (n == 1)
        return tg__ds_out_attr(o, grp, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v, err, errlen);
    sp = H5Screate_simple(1, dims, NULL);
    a = sp < 0 ? -1 : H5Acreate2(grp, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    w = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_DOUBLE, v);
    if (a >= 0 && H5Aclose(a) < 0)
        w = -1;
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (w < 0) {
        snprintf(what, sizeof what, "writing attribute %s", name);
        return tg__ds_out_err(o, what, err, errlen);
    }
    return TG_OK;
}

tg_status tg__ds_out_norm_attrs_v(const struct tg__ds_out *o, hid_t grp, int32_t num_classes,
                                  double scale, const double *mean, const double *sd, int64_t n,
                                  char *err, size_t errlen) {
    /* Regression targets (num_classes 0) have no classes to write. */
    tg_status st = num_classes <= 0
                       ? TG_OK
                       : tg__ds_out_attr(o, grp, TG__ATTR_NUM_CLASSES, H5T_STD_I32LE,
                                         H5T_NATIVE_INT32, &num_classes, err, errlen);

    if (st == TG_OK)
        st = tg__ds_out_attr(o, grp, TG__ATTR_SCALE, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &scale, err,
                             errlen);
    if (st == TG_OK)
        st = out_vec(o, grp, TG__ATTR_MEAN, mean, n, err, errlen);
    if (st == TG_OK)
        st = out_vec(o, grp, TG__ATTR_STD, sd, n, err, errlen);
    return st;
}

hid_t tg__ds_out_dataset(hid_t grp, const char *name, hid_t type, int rank, const hsize_t *dims,
                         const hsize_t *chunk, int level) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t d = -1;

    if (sp >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
        (level <= 0 || H5Pset_deflate(dcpl, (unsigned)level) >= 0))
        d = H5Dcreate2(grp, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl >= 0)
        (void)H5Pclose(dcpl);
    if (sp >= 0)
        (void)H5Sclose(sp);
    return d;
}

herr_t tg__ds_out_rows(hid_t d, hid_t mtype, int rank, const hsize_t *dims, int64_t start,
                       int64_t m, const void *buf) {
    hsize_t off[TG_MAX_DIMS] = {0}, cnt[TG_MAX_DIMS];
    hid_t ms, fs;
    herr_t w = -1;

    memcpy(cnt, dims, sizeof(hsize_t) * (size_t)rank);
    off[0] = (hsize_t)start;
    cnt[0] = (hsize_t)m;
    ms = H5Screate_simple(rank, cnt, NULL);
    fs = H5Dget_space(d);
    if (ms >= 0 && fs >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL) >= 0)
        w = H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, buf);
    if (fs >= 0)
        (void)H5Sclose(fs);
    if (ms >= 0)
        (void)H5Sclose(ms);
    return w;
}

tg_status tg__ds_out_split_close(const struct tg__ds_out *o, hid_t grp, hid_t x, hid_t y,
                                 tg_status st, char *err, size_t errlen) {
    if (x >= 0 && H5Dclose(x) < 0 && st == TG_OK)
        st = tg__ds_out_err(o, "closing x", err, errlen);
    if (y >= 0 && H5Dclose(y) < 0 && st == TG_OK)
        st = tg__ds_out_err(o, "closing y", err, errlen);
    if (H5Gclose(grp) < 0 && st == TG_OK)
        st = tg__ds_out_err(o, "closing the split group", err, errlen);
    return st;
}

/* A split other than train is normalised as train was, when the file
 * already holds a train split: a model must see test data the way it saw
 * its training data, and statistics of the test split itself would leak it
 * into the preprocessing. A train split without both attributes, or with a
 * std that is not positive, does not apply, and the split keeps its own. */
bool tg__ds_out_train_norm(const struct tg__ds_out *o, double *mean, double *sd) {
    return tg__ds_out_train_norm_v(o, mean, sd, 1);
}

bool tg__ds_out_train_norm_v(const struct tg__ds_out *o, double *mean, double *sd, int64_t n) {
    const char *names[2] = {TG__ATTR_MEAN, TG__ATTR_STD};
    double *dst[2] = {mean, sd};
    double *v[2];
    hssize_t cnt[2] = {0, 0};
    bool ok = true;
    hid_t g;

    if (strcmp(o->split, "/train") == 0 || H5Lexists(o->file, "/train", H5P_DEFAULT) <= 0)
        return false;
    g = H5Gopen2(o->file, "/train", H5P_DEFAULT);
    if (g < 0)
        return false;
    v[0] = malloc((size_t)n * sizeof(double));
    v[1] = malloc((size_t)n * sizeof(double));
    ok = v[0] && v[1];
    for (int i = 0; i < 2 && ok; i++) {
        hid_t a = H5Aexists(g, names[i]) > 0 ? H5Aopen(g, names[i], H5P_DEFAULT) : -1;
        hid_t sp = a >= 0 ? H5Aget_space(a) : -1;

        cnt[i] = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
        /* One number for every channel, or one per channel. */
        ok = (cnt[i] == 1 || cnt[i] == n) && H5Aread(a, H5T_NATIVE_DOUBLE, v[i]) >= 0;
        /* Read-only handles: closing them cannot lose data. */
        if (sp >= 0)
            (void)H5Sclose(sp);
        if (a >= 0)
            (void)H5Aclose(a);
    }
    (void)H5Gclose(g);
    for (int i = 0; i < 2 && ok; i++)
        for (int64_t k = 0; k < n; k++)
            ok = ok && isfinite(v[i][cnt[i] == 1 ? 0 : k]) &&
                 (i == 0 || v[i][cnt[i] == 1 ? 0 : k] > 0);
    for (int i = 0; i < 2 && ok; i++)
        for (int64_t k = 0; k < n; k++)
            dst[i][k] = v[i][cnt[i] == 1 ? 0 : k];
    free(v[0]);
    free(v[1]);
    return ok;
}
