/*
 * h5data_targets.c: f32 regression targets, y of shape (N,) or (N, K):
 * checked for NaN and infinities at open (cached whole when they fit the
 * budget) and gathered by sample index.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5data_internal.h"

/* Targets are checked at open in blocks of this many rows. */
#define TARGET_BLOCK 16384

/* Reads rows [start, start+count) of y as floats into dst. */
static herr_t read_rows(tg_dataset *ds, hsize_t start, hsize_t count, float *dst) {
    hsize_t off[2] = {start, 0}, cnt[2] = {count, (hsize_t)ds->tdim};
    int rank = H5Sget_simple_extent_ndims(ds->yspace);
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    herr_t r = -1;

    if (ms >= 0 && H5Sselect_hyperslab(ds->yspace, H5S_SELECT_SET, off, NULL, cnt, NULL) >= 0)
        r = H5Dread(ds->y, H5T_NATIVE_FLOAT, ms, ds->yspace, H5P_DEFAULT, dst);
    if (ms >= 0)
        (void)H5Sclose(ms);
    return r;
}

static tg_status bad_target(const tg_dataset *ds, int64_t row, int64_t k, float v, char *err,
                            size_t errlen) {
    return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                       "%s: %s/y[%lld] holds %s at value %lld; regression targets must be finite",
                       ds->path, ds->split, (long long)row,
                       isnan(v) ? "nan"
                       : v > 0  ? "inf"
                                : "-inf",
                       (long long)k);
}

tg_status tg__h5d_check_targets(tg_dataset *ds, char *err, size_t errlen) {
    int64_t k = ds->tdim, rows = TARGET_BLOCK;
    uint64_t need = (uint64_t)ds->n * (uint64_t)k * sizeof(float);
    bool keep = ds->budget >= 0 && need <= (uint64_t)ds->budget;
    float *buf;

    ds->trow = malloc((size_t)k * sizeof *ds->trow);
    buf = malloc((size_t)(keep ? ds->n : (ds->n < rows ? ds->n : rows)) * (size_t)k * sizeof *buf);
    if (!buf || !ds->trow) {
        free(buf);
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory to check the targets",
                           ds->path);
    }
    for (int64_t s = 0; s < ds->n; s += rows) {
        int64_t m = ds->n - s < rows ? ds->n - s : rows;
        float *dst = keep ? buf + s * k : buf;

        if (tg__h5d_stop_asked(ds)) {
            free(buf);
            return tg__h5d_stopped(ds, "checking the targets", err, errlen);
        }
        if (read_rows(ds, (hsize_t)s, (hsize_t)m, dst) < 0) {
            free(buf);
            return tg__h5d_fail(ds, TG_ERR_IO, "reading y", err, errlen);
        }
        for (int64_t i = 0; i < m * k; i++)
            if (!isfinite(dst[i])) {
                tg_status st = bad_target(ds, s + i / k, i % k, dst[i], err, errlen);
                free(buf);
                return st;
            }
    }
    if (keep)
        ds->t_cache = buf;
    else
        free(buf);
    return TG_OK;
}

tg_status tg_dataset_read_targets(tg_dataset *ds, const int64_t *indices, int64_t n, float *x_out,
                                  float *t_out, char *err, size_t errlen) {
    int64_t k;
    tg_status st;

    if (!ds || n < 0 || (n > 0 && !indices))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_dataset_read_targets: needs a dataset, n >= 0 and indices");
    if (!ds->tdim)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "%s: %s holds class labels, not f32 regression targets", ds->path,
                           ds->split);
    /* x, and the indices' range, as for labels. */
    st = tg_dataset_read(ds, indices, n, x_out, NULL, err, errlen);
    if (st || !t_out)
        return st;
    k = ds->tdim;
    for (int64_t i = 0; i < n; i++) {
        const float *row = ds->t_cache ? ds->t_cache + indices[i] * k : ds->trow;

        if (!ds->t_cache && read_rows(ds, (hsize_t)indices[i], 1, ds->trow) < 0)
            return tg__h5d_fail(ds, TG_ERR_IO, "reading y", err, errlen);
        for (int64_t j = 0; j < k; j++)
            if (!isfinite(row[j]))
                return bad_target(ds, indices[i], j, row[j], err, errlen);
        memcpy(t_out + i * k, row, (size_t)k * sizeof *t_out);
    }
    return TG_OK;
}
