/*
 * h5data_read.c: reading samples of an open split by arbitrary indices, and
 * normalising them.
 *
 * Data below the cache budget is kept in memory whole and gathered from
 * there. Everything else stays on disk: a batch's indices are sorted, each
 * run of consecutive indices is one hyperslab read into a scratch buffer, and
 * the unique samples are normalised from it into the caller's order, so
 * memory is bounded by the budget plus one batch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5data_internal.h"

/* Cached f32 inputs are checked for non-finite values in blocks of this
 * many elements, asking the stop callback between blocks. */
#define SCAN_BLOCK ((int64_t)1 << 22)

float tg__ds_zero_value(const tg_dataset *ds, int64_t c) {
    int64_t k = ds->nch > 1 ? c : 0;

    return (float)((0.0 * ds->scale - ds->mean_v[k]) / ds->std_v[k]);
}

static tg_status grow_scratch(tg_dataset *ds, int64_t n, char *err, size_t errlen) {
    struct order *o;
    unsigned char *raw;
    int64_t *yl;

    if (n <= ds->cap)
        return TG_OK;
    if ((uint64_t)n > SIZE_MAX / 2 / (ds->sample_bytes + sizeof *o))
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: a batch of %lld samples is too large",
                           ds->path, (long long)n);
    o = realloc(ds->order, (size_t)n * sizeof *o);
    if (o)
        ds->order = o;
    raw = o ? realloc(ds->raw, (size_t)n * ds->sample_bytes) : NULL;
    if (raw)
        ds->raw = raw;
    yl = raw ? realloc(ds->ylab, (size_t)n * sizeof *yl) : NULL;
    if (!yl)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for a batch of %lld samples",
                           ds->path, (long long)n);
    ds->ylab = yl;
    ds->cap = n;
    return TG_OK;
}

/* The index of the first non-finite of the n floats at p, or -1. */
static int64_t first_nonfinite(const unsigned char *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, p + 4 * i, sizeof v);
        if (!isfinite(v))
            return i;
    }
    return -1;
}

/* TG_ERR_FORMAT for element elem (of the flat f32 data at p) being NaN or
 * infinite: names the sample, the element within it and the value. */
static tg_status bad_value(const tg_dataset *ds, int64_t sample, int64_t elem,
                           const unsigned char *src, char *err, size_t errlen) {
    float v;

    memcpy(&v, src + 4 * elem, sizeof v);
    return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                       "%s: %s/x[%lld] (sample %lld) holds %s at element %lld; f32 inputs must "
                       "be finite",
                       ds->path, ds->split, (long long)sample, (long long)sample,
                       isnan(v) ? "nan" : v > 0 ? "inf" : "-inf", (long long)elem);
}

/*
 * Normalises one stored sample (index `sample`) into sample_numel floats.
 * A NaN or infinite f32 input fails here, in the thread that reads the
 * samples, rather than as a NaN loss some steps later.
 */
static tg_status emit_x(const tg_dataset *ds, int64_t sample, const unsigned char *src,
                        float *dst, char *err, size_t errlen) {
    if (ds->xdtype == TG_U8) {
        for (int64_t k = 0, i = 0; k < ds->nch; k++) {
            const float *lut = ds->lut + k * 256;
            for (int64_t e = i + ds->ch_numel; i < e; i++)
                dst[i] = lut[src[i]];
        }
        return TG_OK;
    }
    for (int64_t k = 0, i = 0; k < ds->nch; k++) {
        double mean = ds->mean_v[k], sd = ds->std_v[k];
        for (int64_t e = i + ds->ch_numel; i < e; i++) {
            float v;
            memcpy(&v, src + 4 * i, sizeof v);
            if (!isfinite(v))
                return bad_value(ds, sample, i, src, err, errlen);
            dst[i] = (float)(((double)v * ds->scale - mean) / sd);
        }
    }
    return TG_OK;
}

/* Checks the whole cached f32 x for NaN and infinities, in blocks between
 * which the stop callback is asked. */
static tg_status scan_cached_x(const tg_dataset *ds, char *err, size_t errlen) {
    int64_t total = ds->n * ds->sample_numel;

    for (int64_t s = 0; s < total; s += SCAN_BLOCK) {
        int64_t m = total - s < SCAN_BLOCK ? total - s : SCAN_BLOCK;
        int64_t at;

        if (tg__h5d_stop_asked(ds))
            return tg__h5d_stopped(ds, "checking x", err, errlen);
        at = first_nonfinite(ds->x_cache + 4 * (size_t)s, m);
        if (at >= 0) {
            int64_t e = s + at, i = e / ds->sample_numel;
            return bad_value(ds, i, e - i * ds->sample_numel,
                             ds->x_cache + (size_t)i * ds->sample_bytes, err, errlen);
        }
    }
    return TG_OK;
}

/* Loads x whole when it fits what the label cache left of the budget. */
static tg_status maybe_cache_x(tg_dataset *ds, char *err, size_t errlen) {
    int64_t left = ds->budget - (ds->y_cache ? ds->n * (int64_t)sizeof(int64_t) : 0);
    hid_t mt = ds->xdtype == TG_U8 ? H5T_NATIVE_UCHAR : H5T_NATIVE_FLOAT;

    ds->x_cache_tried = true;
    if (ds->budget < 0 || (uint64_t)ds->n > (uint64_t)(left > 0 ? left : 0) / ds->sample_bytes)
        return TG_OK;
    /* Not getting the memory only means reading from the file instead. */
    ds->x_cache = malloc((size_t)ds->n * ds->sample_bytes);
    if (!ds->x_cache)
        return TG_OK;
    if (H5Dread(ds->x, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds->x_cache) < 0) {
        free(ds->x_cache);
        ds->x_cache = NULL;
        return tg__h5d_fail(ds, TG_ERR_IO, "reading x", err, errlen);
    }
    if (ds->xdtype == TG_F32) {
        tg_status st = scan_cached_x(ds, err, errlen);
        if (st) {
            free(ds->x_cache);
            ds->x_cache = NULL;
            /* A later read must not take the file's copy as checked. */
            ds->x_cache_tried = false;
            return st;
        }
    }
    return TG_OK;
}

tg_status tg__ds_reserve(tg_dataset *ds, int64_t n, char *err, size_t errlen) {
    /* Token windows are read into the window scratch made at open. */
    if (ds->tokens)
        return TG_OK;
    if (!ds->x_cache_tried) {
        tg_status st = maybe_cache_x(ds, err, errlen);
        if (st)
            return st;
    }
    return grow_scratch(ds, n, err, errlen);
}

static int order_cmp(const void *a, const void *b) {
    const struct order *p = a, *q = b;

    return (p->idx > q->idx) - (p->idx < q->idx);
}

/*
 * Reads the labels of the sorted unique indices into ds->ylab with one
 * H5Dread: runs of consecutive indices are OR-ed into one selection. For a
 * 1-D dataset the element-by-element mapping this costs (see read_runs_x) is
 * one step per label, cheaper than a call per run.
 */
static herr_t read_runs_y(tg_dataset *ds, int64_t n) {
    H5S_seloper_t op = H5S_SELECT_SET;
    hsize_t uniq = 0;
    hid_t ms;
    herr_t r;

    for (int64_t i = 0; i < n;) {
        hsize_t start = (hsize_t)ds->order[i].idx, count;
        int64_t e = ds->order[i].idx + 1;

        /* Extend the run over repeats and consecutive indices. */
        while (++i < n && ds->order[i].idx <= e)
            e = ds->order[i].idx + 1;
        count = (hsize_t)e - start;
        if (H5Sselect_hyperslab(ds->yspace, op, &start, NULL, &count, NULL) < 0)
            return -1;
        op = H5S_SELECT_OR;
        uniq += count;
    }
    ms = H5Screate_simple(1, &uniq, NULL);
    if (ms < 0)
        return -1;
    r = H5Dread(ds->y, H5T_NATIVE_INT64, ms, ds->yspace, H5P_DEFAULT, ds->ylab);
    (void)H5Sclose(ms);
    return r;
}

/*
 * Reads the unique samples of the sorted batch into ds->raw with one
 * H5Dread per run of consecutive indices, the memory space shaped like the
 * run. A single read of all runs OR-ed together would be one call, but HDF5
 * 1.10 then maps every element to its chunk one by one (memory and file
 * selections differ in shape), which measured 7x slower for 28x28 samples.
 * Returns the number of unique samples, or -1 if HDF5 failed.
 */
static int64_t read_runs_x(tg_dataset *ds, int64_t n) {
    hsize_t start[TG_MAX_DIMS] = {0}, count[TG_MAX_DIMS];
    hid_t mt = ds->xdtype == TG_U8 ? H5T_NATIVE_UCHAR : H5T_NATIVE_FLOAT;
    int rank = ds->sample_ndim + 1;
    int64_t uniq = 0;

    for (int d = 1; d < rank; d++)
        count[d] = (hsize_t)ds->sample_shape[d - 1];
    for (int64_t i = 0; i < n;) {
        int64_t s = ds->order[i].idx, e = s + 1;
        hid_t ms;
        herr_t r = -1;

        /* Extend the run over repeats and consecutive indices. */
        while (++i < n && ds->order[i].idx <= e)
            e = ds->order[i].idx + 1;
        start[0] = (hsize_t)s;
        count[0] = (hsize_t)(e - s);
        ms = H5Screate_simple(rank, count, NULL);
        if (ms >= 0 &&
            H5Sselect_hyperslab(ds->xspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
            r = H5Dread(ds->x, mt, ms, ds->xspace, H5P_DEFAULT,
                        ds->raw + (size_t)uniq * ds->sample_bytes);
        if (ms >= 0)
            (void)H5Sclose(ms);
        if (r < 0)
            return -1;
        uniq += e - s;
    }
    return uniq;
}

/* Reads the sorted batch from the file (x and/or y) and scatters it. */
static tg_status read_sorted(tg_dataset *ds, int64_t n, float *x_out, int64_t *y_out, char *err,
                             size_t errlen) {
    bool fx = x_out && !ds->x_cache, fy = y_out && !ds->y_cache;
    int64_t u = -1, prev = -1;

    qsort(ds->order, (size_t)n, sizeof *ds->order, order_cmp);
    if (fx && read_runs_x(ds, n) < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "reading x", err, errlen);
    if (fy && read_runs_y(ds, n) < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "reading y", err, errlen);
    for (int64_t i = 0; i < n; i++) {
        const struct order *o = &ds->order[i];

        /* Unique samples were read in sorted order: a new index is the next
         * slot of the scratch buffers. */
        if (o->idx != prev)
            u++;
        prev = o->idx;
        if (x_out) {
            tg_status st = emit_x(ds, o->idx,
                                  fx ? ds->raw + (size_t)u * ds->sample_bytes
                                     : ds->x_cache + (size_t)o->idx * ds->sample_bytes,
                                  x_out + o->pos * ds->sample_numel, err, errlen);
            if (st)
                return st;
        }
        if (y_out) {
            int64_t v = fy ? ds->ylab[u] : ds->y_cache[o->idx];
            if (v < 0 || v >= ds->num_classes)
                return tg__h5d_label_range(ds, o->idx, v, " (the file changed after it was opened?)", err,
                                   errlen);
            y_out[o->pos] = v;
        }
    }
    return TG_OK;
}

tg_status tg_dataset_read(tg_dataset *ds, const int64_t *indices, int64_t n, float *x_out,
                          int64_t *y_out, char *err, size_t errlen) {
    tg_status st;

    if (!ds || n < 0 || (n > 0 && !indices))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_dataset_read: needs a dataset, n >= 0 and indices");
    if (y_out && ds->tdim)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "%s: %s holds f32 regression targets, not labels: read them with "
                           "tg_dataset_read_targets()",
                           ds->path, ds->split);
    if (n == 0)
        return TG_OK;
    tg__ds_h5_quiet();
    for (int64_t i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= ds->n)
            return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                               "%s: %s: index %lld (batch position %lld) is outside [0, %lld)",
                               ds->path, ds->split, (long long)indices[i], (long long)i,
                               (long long)ds->n);
    if (ds->tokens)
        return tg__h5d_read_tokens(ds, indices, n, x_out, y_out, err, errlen);
    if (x_out && !ds->x_cache_tried) {
        st = maybe_cache_x(ds, err, errlen);
        if (st)
            return st;
    }
    if ((!x_out || ds->x_cache) && (!y_out || ds->y_cache)) {
        /* Everything needed is in memory: gather directly, no sort. */
        for (int64_t i = 0; i < n; i++) {
            if (x_out) {
                st = emit_x(ds, indices[i], ds->x_cache + (size_t)indices[i] * ds->sample_bytes,
                            x_out + i * ds->sample_numel, err, errlen);
                if (st)
                    return st;
            }
            if (y_out)
                y_out[i] = ds->y_cache[indices[i]];
        }
        return TG_OK;
    }
    st = grow_scratch(ds, n, err, errlen);
    if (st)
        return st;
    for (int64_t i = 0; i < n; i++) {
        ds->order[i].idx = indices[i];
        ds->order[i].pos = i;
    }
    return read_sorted(ds, n, x_out, y_out, err, errlen);
}
