/*
 * checkpoint_read.c: reading one checkpoint file (the layout is in
 * checkpoint_h5.c). A file is checked against its tapegrad header before
 * HDF5 opens it, and every number HDF5 then reports (the tensor count, each
 * rank, dim, element size and string length) is bounded by what the file's
 * size allows before anything is allocated for it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "checkpoint_internal.h"
#include "core/internal.h"

/* The number of points of a dataspace, or -1 when it has none or HDF5
 * cannot say. */
static hssize_t npoints(hid_t sp) { return sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp); }

/* count values of an integer attribute of obj. */
static bool read_dattr(hid_t obj, const char *name, hid_t mtype, int count, void *out) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), sp = a >= 0 ? H5Aget_space(a) : -1;
    hid_t t = a >= 0 ? H5Aget_type(a) : -1;
    bool ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) <= 8 &&
              npoints(sp) == count && H5Aread(a, mtype, out) >= 0;
    if (t >= 0)
        (void)H5Tclose(t);
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (a >= 0)
        (void)H5Aclose(a);
    return ok;
}

/* ---- the metadata ---- */

static tg_status get_attr(const tg__ckfile *f, const char *name, H5T_class_t cls, hid_t mtype,
                          int count, void *v, char *err, size_t errlen) {
    htri_t ex = H5Aexists(f->file, name);
    hid_t a, t = -1, sp = -1;
    bool ok = false;

    if (ex <= 0)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: the root attribute '%s' is missing (a damaged checkpoint?)",
                           f->path, name);
    a = H5Aopen(f->file, name, H5P_DEFAULT);
    if (a >= 0) {
        t = H5Aget_type(a);
        sp = H5Aget_space(a);
    }
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == cls && H5Tget_size(t) <= 8 && npoints(sp) == count)
        ok = H5Aread(a, mtype, v) >= 0;
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (t >= 0)
        (void)H5Tclose(t);
    if (a >= 0)
        (void)H5Aclose(a);
    (void)H5Eclear2(H5E_DEFAULT);
    if (!ok)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: the root attribute '%s' is not %d %s value%s", f->path, name, count,
                           cls == H5T_INTEGER ? "integer" : "string", count > 1 ? "s" : "");
    return TG_OK;
}

/* A fixed-length string attribute of the root, truncated to len - 1. */
static tg_status get_str(const tg__ckfile *f, const char *name, char *out, size_t len, char *err,
                         size_t errlen) {
    htri_t ex = H5Aexists(f->file, name);
    hid_t a = -1, t = -1, sp = -1;
    char *tmp = NULL;
    size_t size = 0;
    bool ok = false;

    if (ex > 0)
        a = H5Aopen(f->file, name, H5P_DEFAULT);
    if (a >= 0) {
        t = H5Aget_type(a);
        sp = H5Aget_space(a);
    }
    /* One string of a bounded length: H5Aread writes points x size bytes. */
    if (t >= 0 && npoints(sp) == 1 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0) {
        size = H5Tget_size(t);
        if (size > 0 && size <= TG__CK_STR_MAX)
            tmp = calloc(size + 1, 1);
    }
    if (tmp)
        ok = H5Aread(a, t, tmp) >= 0;
    if (ok)
        snprintf(out, len, "%s", tmp);
    free(tmp);
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (t >= 0)
        (void)H5Tclose(t);
    if (a >= 0)
        (void)H5Aclose(a);
    (void)H5Eclear2(H5E_DEFAULT);
    if (ex <= 0)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: not a tapegrad checkpoint (no root attribute '%s')", f->path, name);
    if (!ok)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: the root attribute '%s' is not one fixed-length string of at most "
                           "%d bytes",
                           f->path, name, TG__CK_STR_MAX);
    return TG_OK;
}

/* The text of the dataset d when it is one fixed-length string no longer
 * than the file (heap memory, NUL-terminated), else NULL. */
static char *read_text(const tg__ckfile *f, hid_t d) {
    hid_t t = d >= 0 ? H5Dget_type(d) : -1, sp = d >= 0 ? H5Dget_space(d) : -1;
    char *s = NULL;
    if (t >= 0 && npoints(sp) == 1 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0 &&
        H5Tget_size(t) > 0 && H5Tget_size(t) <= (size_t)f->size)
        s = calloc(H5Tget_size(t) + 1, 1);
    if (s && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) < 0) {
        free(s);
        s = NULL;
    }
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (t >= 0)
        (void)H5Tclose(t);
    return s;
}

static tg_status read_config(const tg__ckfile *f, tg_ckpt_meta *m, char *err, size_t errlen) {
    hid_t d = H5Dopen2(f->file, "config", H5P_DEFAULT);
    uint32_t crc = 0;
    char *s = read_text(f, d);
    bool ok = s && read_dattr(d, "crc32", H5T_NATIVE_UINT32, 1, &crc);
    if (d >= 0)
        (void)H5Dclose(d);
    (void)H5Eclear2(H5E_DEFAULT);
    if (!ok) {
        free(s);
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /config is missing or is not one string (of at most the file's "
                           "size) with a crc32 attribute",
                           f->path);
    }
    if (tg__ck_crc_bytes(s, strlen(s)) != crc) {
        free(s);
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /config fails its CRC-32 checksum (the file is corrupt)", f->path);
    }
    m->config = s;
    return TG_OK;
}

/* The optional dataset record: absent in older checkpoints (and when the
 * writer had none), else whole and matching its CRC-32. */
static tg_status read_data(const tg__ckfile *f, tg_ckpt_meta *m, char *err, size_t errlen) {
    htri_t ex = H5Aexists(f->file, "data_path");
    (void)H5Eclear2(H5E_DEFAULT);
    if (ex <= 0)
        return TG_OK;
    char *path = calloc(TG__CK_STR_MAX + 1, 1);
    uint32_t crc = 0;
    if (!path)
        return tg__ck_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", f->path);
    tg_status st = get_str(f, "data_path", path, TG__CK_STR_MAX + 1, err, errlen);
    if (!st)
        st = get_attr(f, "data_bytes", H5T_INTEGER, H5T_NATIVE_INT64, 1, &m->data_bytes, err,
                      errlen);
    if (!st)
        st = get_str(f, "data_sha256", m->data_sha256, sizeof m->data_sha256, err, errlen);
    if (!st)
        st = get_attr(f, "data_crc32", H5T_INTEGER, H5T_NATIVE_UINT32, 1, &crc, err, errlen);
    m->data_path = path;
    if (!st && crc != tg__ck_data_crc(m))
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: the dataset record (data_path, data_bytes, data_sha256) fails its "
                         "CRC-32 checksum (the file is corrupt)",
                         f->path);
    return st;
}

/* /model_text when the file has one (as /config, with the sample shape and
 * classes as attributes); m->model_text stays NULL when it has none. */
static tg_status read_model_text(const tg__ckfile *f, tg_ckpt_meta *m, char *err, size_t errlen) {
    if (H5Lexists(f->file, "model_text", H5P_DEFAULT) <= 0) {
        (void)H5Eclear2(H5E_DEFAULT);
        return TG_OK;
    }
    hid_t d = H5Dopen2(f->file, "model_text", H5P_DEFAULT);
    uint32_t crc = 0;
    char *s = read_text(f, d);
    bool ok = s && read_dattr(d, "crc32", H5T_NATIVE_UINT32, 1, &crc) &&
              read_dattr(d, "input_shape", H5T_NATIVE_INT64, 3, m->model_input) &&
              read_dattr(d, "num_classes", H5T_NATIVE_INT64, 1, &m->model_classes);
    /* input_ndim (1: a vector model) is absent for images and older files. */
    int64_t ind = 3;
    if (ok && H5Aexists(d, "input_ndim") > 0)
        ok = read_dattr(d, "input_ndim", H5T_NATIVE_INT64, 1, &ind) && (ind == 1 || ind == 3);
    m->model_input_ndim = (int)ind;
    if (d >= 0)
        (void)H5Dclose(d);
    (void)H5Eclear2(H5E_DEFAULT);
    bool sane = ok && m->model_classes >= 0 && m->model_classes <= ((int64_t)1 << 24);
    for (int i = 0; sane && i < 3; i++)
        sane = m->model_input[i] >= 1 && m->model_input[i] <= ((int64_t)1 << 32);
    if (!sane || tg__ck_crc_bytes(s, strlen(s)) != crc) {
        free(s);
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /model_text is not one string with its crc32, input_shape (3 "
                           "sizes >= 1), num_classes and an input_ndim of 1 or 3 if any, or fails "
                           "its checksum (the file is "
                           "corrupt)",
                           f->path);
    }
    m->model_text = s;
    return TG_OK;
}

/* Every count in the metadata is within what a run can reach; a trainer
 * multiplies them (step x batch size), so a huge one is refused here. */
static tg_status check_ranges(const tg__ckfile *f, const tg_ckpt_meta *m, char *err,
                              size_t errlen) {
    const struct {
        const char *name;
        int64_t v, lo, hi;
    } r[] = {
        {"step", m->step, 0, TG_CKPT_COUNT_MAX},
        {"epoch", m->epoch, 0, TG_CKPT_COUNT_MAX},
        {"samples_consumed", m->samples_consumed, 0, TG_CKPT_COUNT_MAX},
        {"optim_steps", m->optim_steps, 0, TG_CKPT_COUNT_MAX},
        {"world_size", m->world_size, 0, 1 << 24},
        {"num_tensors", f->num_tensors, 0, TG__CK_MAX_TENSORS},
    };

    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (r[i].v < r[i].lo || r[i].v > r[i].hi)
            return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: the root attribute '%s' is %" PRId64 " (expected %" PRId64
                               " to %" PRId64 ")",
                               f->path, r[i].name, r[i].v, r[i].lo, r[i].hi);
    return TG_OK;
}

static tg_status read_meta(tg__ckfile *f, tg_ckpt_meta *m, char *err, size_t errlen) {
    char fmt[64];
    uint32_t crc = 0;
    tg_status st;

    memset(m, 0, sizeof *m);
    st = get_str(f, "format", fmt, sizeof fmt, err, errlen);
    if (st == TG_OK && strcmp(fmt, TG__CK_FORMAT_NAME) != 0)
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: not a tapegrad checkpoint (format is '%s', expected '%s')", f->path,
                         fmt, TG__CK_FORMAT_NAME);
    if (st == TG_OK)
        st = get_attr(f, "format_version", H5T_INTEGER, H5T_NATIVE_INT32, 1, &m->format_version,
                      err, errlen);
    if (st == TG_OK)
        st = get_str(f, "tapegrad_version", m->version, sizeof m->version, err, errlen);
    if (st)
        return st;
    if (m->format_version > TG_CKPT_FORMAT_VERSION)
        return tg__ck_fail(TG_ERR_UNSUPPORTED, err, errlen,
                           "%s: checkpoint format version %d (written by tapegrad %s) is newer "
                           "than this build reads (up to %d): upgrade tapegrad",
                           f->path, (int)m->format_version, m->version, TG_CKPT_FORMAT_VERSION);
    if (m->format_version < 1)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: invalid checkpoint format version %d (expected 1 to %d)", f->path,
                           (int)m->format_version, TG_CKPT_FORMAT_VERSION);
    st = get_str(f, "model", m->model, sizeof m->model, err, errlen);
    if (!st)
        st = get_attr(f, "step", H5T_INTEGER, H5T_NATIVE_INT64, 1, &m->step, err, errlen);
    if (!st)
        st = get_attr(f, "epoch", H5T_INTEGER, H5T_NATIVE_INT64, 1, &m->epoch, err, errlen);
    if (!st)
        st = get_attr(f, "samples_consumed", H5T_INTEGER, H5T_NATIVE_INT64, 1, &m->samples_consumed,
                      err, errlen);
    if (!st)
        st = get_attr(f, "optim_steps", H5T_INTEGER, H5T_NATIVE_INT64, 1, &m->optim_steps, err,
                      errlen);
    if (!st)
        st = get_attr(f, "rng_state", H5T_INTEGER, H5T_NATIVE_UINT64, 2, m->rng, err, errlen);
    if (!st)
        st = get_attr(f, "world_size", H5T_INTEGER, H5T_NATIVE_INT32, 1, &m->world_size, err,
                      errlen);
    if (!st)
        st = get_attr(f, "num_tensors", H5T_INTEGER, H5T_NATIVE_INT64, 1, &f->num_tensors, err,
                      errlen);
    if (!st)
        st = get_attr(f, "meta_crc32", H5T_INTEGER, H5T_NATIVE_UINT32, 1, &crc, err, errlen);
    if (!st && crc != tg__ck_meta_crc(m, f->num_tensors))
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: the metadata fails its CRC-32 checksum (the file is corrupt)",
                         f->path);
    if (!st)
        st = check_ranges(f, m, err, errlen);
    if (!st)
        st = read_config(f, m, err, errlen);
    if (!st)
        st = read_data(f, m, err, errlen);
    if (!st)
        st = read_model_text(f, m, err, errlen);
    return st;
}

void tg__ck_close(tg__ckfile *f) {
    if (f->tensors >= 0)
        (void)H5Gclose(f->tensors);
    if (f->file >= 0)
        (void)H5Fclose(f->file);
    f->tensors = f->file = -1;
    (void)H5Eclear2(H5E_DEFAULT);
}

tg_status tg__ck_open(const char *path, tg__ckfile *f, tg_ckpt_meta *m, char *err, size_t errlen) {
    hid_t fapl, es;
    char why[256];
    tg_status st;

    tg__ck_h5_quiet();
    memset(m, 0, sizeof *m);
    f->path = path;
    f->file = f->tensors = -1;
    f->num_tensors = 0;
    /* The header and the whole-file CRC, before HDF5 reads a byte. */
    st = tg__ck_check_file(path, true, &f->kind, &f->size, err, errlen);
    if (st)
        return st;
    fapl = tg__ck_fapl(0);
    f->file = fapl < 0 ? -1 : H5Fopen(path, H5F_ACC_RDONLY, fapl);
    es = tg__ck_h5_keep(f->file < 0);
    if (fapl >= 0)
        (void)H5Pclose(fapl);
    tg__ck_h5_restore(es);
    if (f->file < 0)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen, "%s: cannot open as HDF5: %s", path,
                           tg__ck_h5_detail(why, sizeof why));
    st = read_meta(f, m, err, errlen);
    if (st == TG_OK) {
        f->tensors = H5Gopen2(f->file, "tensors", H5P_DEFAULT);
        if (f->tensors < 0)
            st = tg__ck_fail(TG_ERR_FORMAT, err, errlen, "%s: the group /tensors is missing", path);
    }
    if (st)
        tg__ck_close(f);
    return st;
}

void tg__ck_free_entries(tg__ckent *e, int n) {
    for (int i = 0; e && i < n; i++)
        free(e[i].name);
    free(e);
}

/* The shape of dataset d's dataspace into e (ndim, shape), checked: a
 * simple or scalar space of at most TG_MAX_DIMS dims, each at most
 * TG_CKPT_COUNT_MAX. */
static tg_status entry_shape(const tg__ckfile *f, hid_t d, tg__ckent *e, char *err, size_t errlen) {
    hid_t sp = H5Dget_space(d);
    hsize_t dims[TG_MAX_DIMS];
    H5S_class_t cls = sp < 0 ? H5S_NO_CLASS : H5Sget_simple_extent_type(sp);
    int nd = cls == H5S_SIMPLE || cls == H5S_SCALAR ? H5Sget_simple_extent_ndims(sp) : -1;
    bool ok = nd >= 0 && nd <= TG_MAX_DIMS && H5Sget_simple_extent_dims(sp, dims, NULL) == nd;

    if (sp >= 0)
        (void)H5Sclose(sp);
    (void)H5Eclear2(H5E_DEFAULT);
    if (!ok)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /tensors/%s has no simple shape of at most %d dims (rank %d)",
                           f->path, e->name, TG_MAX_DIMS, nd);
    for (int i = 0; i < nd; i++) {
        if (dims[i] > (hsize_t)TG_CKPT_COUNT_MAX)
            return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: /tensors/%s: dim %d is %llu (expected at most %" PRId64 ")",
                               f->path, e->name, i, (unsigned long long)dims[i], TG_CKPT_COUNT_MAX);
        e->shape[i] = (int64_t)dims[i];
    }
    e->ndim = nd;
    return TG_OK;
}

/* The byte count of e's shape and dtype into e->nbytes, checked against
 * the file: the product may not overflow, and the data, its chunks and the
 * dataset's storage must fit in the file (a file holds every byte it
 * stores; tapegrad writes no compression and no unwritten chunks). */
static tg_status entry_size(const tg__ckfile *f, hid_t d, tg__ckent *e, char *err, size_t errlen) {
    uint64_t n = tg_dtype_size((tg_dtype)e->dtype), stored;
    hsize_t cd[TG_MAX_DIMS];
    hid_t pl;
    char shp[160];
    bool chunk_ok = true;
    uint64_t chunk = n;

    for (int i = 0; i < e->ndim; i++)
        if (__builtin_mul_overflow(n, (uint64_t)e->shape[i], &n))
            n = UINT64_MAX;
    if (n > (uint64_t)f->size)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /tensors/%s is %s %s: %s%" PRIu64
                           " bytes, more than the file's %" PRId64,
                           f->path, e->name, tg__ck_shape_str(e->ndim, e->shape, shp, sizeof shp),
                           e->tname, n == UINT64_MAX ? "over " : "", n, f->size);
    e->nbytes = (size_t)n;
    pl = H5Dget_create_plist(d);
    if (pl >= 0 && H5Pget_layout(pl) == H5D_CHUNKED) {
        int cr = H5Pget_chunk(pl, TG_MAX_DIMS, cd);
        chunk_ok = cr == e->ndim;
        for (int i = 0; chunk_ok && i < cr; i++)
            chunk_ok = cd[i] >= 1 && !__builtin_mul_overflow(chunk, (uint64_t)cd[i], &chunk) &&
                       chunk <= TG__CK_CHUNK_BYTES;
    }
    if (pl >= 0)
        (void)H5Pclose(pl);
    stored = H5Dget_storage_size(d);
    (void)H5Eclear2(H5E_DEFAULT);
    if (pl < 0 || !chunk_ok)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /tensors/%s: its chunks are not of its rank %d and at most %zu "
                           "bytes",
                           f->path, e->name, e->ndim, TG__CK_CHUNK_BYTES);
    if (n && (stored < n || stored > (uint64_t)f->size))
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /tensors/%s stores %llu bytes for %" PRIu64
                           " bytes of data in a file of %" PRId64 " (expected all of the data)",
                           f->path, e->name, (unsigned long long)stored, n, f->size);
    return TG_OK;
}

static tg_status describe_entry(const tg__ckfile *f, hid_t d, tg__ckent *e, char *err,
                                size_t errlen) {
    hid_t t = H5Dget_type(d), a = -1, asp = -1;
    bool crc_ok = false;
    tg_status st = entry_shape(f, d, e, err, errlen);

    if (st)
        goto out;
    e->dtype = t < 0 ? -1 : tg__ck_dtype_of(t, e->tname, sizeof e->tname);
    if (e->dtype < 0) {
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: /tensors/%s holds %s (expected f32, f64, u8, i32 or i64)", f->path,
                         e->name, t < 0 ? "an unreadable type" : e->tname);
        goto out;
    }
    snprintf(e->tname, sizeof e->tname, "%s", tg_dtype_name((tg_dtype)e->dtype));
    if (H5Aexists(d, "crc32") > 0)
        a = H5Aopen(d, "crc32", H5P_DEFAULT);
    if (a >= 0)
        asp = H5Aget_space(a);
    /* H5Aread writes one value per point: exactly one. */
    if (npoints(asp) == 1)
        crc_ok = H5Aread(a, H5T_NATIVE_UINT32, &e->crc) >= 0;
    if (!crc_ok) {
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: /tensors/%s has no crc32 attribute of one value", f->path, e->name);
        goto out;
    }
    st = entry_size(f, d, e, err, errlen);
out:
    if (asp >= 0)
        (void)H5Sclose(asp);
    if (a >= 0)
        (void)H5Aclose(a);
    if (t >= 0)
        (void)H5Tclose(t);
    (void)H5Eclear2(H5E_DEFAULT);
    return st;
}

/* The name of link i, at most TG__CK_NAME_MAX bytes; NULL when HDF5 cannot
 * say or it is longer. */
static char *link_name(hid_t grp, H5_index_t idx, hsize_t i) {
    ssize_t len = H5Lget_name_by_idx(grp, ".", idx, H5_ITER_INC, i, NULL, 0, H5P_DEFAULT);
    char *s = len <= 0 || len > TG__CK_NAME_MAX ? NULL : calloc((size_t)len + 1, 1);

    if (s &&
        H5Lget_name_by_idx(grp, ".", idx, H5_ITER_INC, i, s, (size_t)len + 1, H5P_DEFAULT) != len) {
        free(s);
        s = NULL;
    }
    return s;
}

/* Lists the datasets under /tensors, in the order they were saved. */
tg_status tg__ck_entries(const tg__ckfile *f, tg__ckent **out, int *count, char *err,
                         size_t errlen) {
    H5G_info_t gi;
    H5_index_t idx = H5_INDEX_CRT_ORDER;
    uint64_t total = 0;
    tg__ckent *e;
    tg_status st = TG_OK;

    *out = NULL;
    *count = 0;
    /* Every link takes more than 16 bytes of the file. */
    if (H5Gget_info(f->tensors, &gi) < 0 || gi.nlinks > TG__CK_MAX_TENSORS ||
        gi.nlinks > (hsize_t)f->size / 16)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: cannot list /tensors (or it holds more links than the file can)",
                           f->path);
    if ((int64_t)gi.nlinks != f->num_tensors)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /tensors holds %llu datasets but num_tensors says %" PRId64,
                           f->path, (unsigned long long)gi.nlinks, f->num_tensors);
    e = calloc(gi.nlinks ? gi.nlinks : 1, sizeof *e);
    if (!e)
        return tg__ck_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory to list %llu tensors", f->path,
                           (unsigned long long)gi.nlinks);
    for (hsize_t i = 0; i < gi.nlinks && st == TG_OK; i++) {
        hid_t d;

        e[i].name = link_name(f->tensors, idx, i);
        if (!e[i].name && i == 0) {
            /* A group written without creation order: fall back to names. */
            idx = H5_INDEX_NAME;
            e[i].name = link_name(f->tensors, idx, i);
        }
        if (!e[i].name) {
            st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                             "%s: cannot read the name of tensor %llu (unreadable, empty or over "
                             "%d bytes)",
                             f->path, (unsigned long long)i, TG__CK_NAME_MAX);
            break;
        }
        *count = (int)i + 1;
        d = H5Dopen2(f->tensors, e[i].name, H5P_DEFAULT);
        if (d < 0) {
            st = tg__ck_fail(TG_ERR_FORMAT, err, errlen, "%s: /tensors/%s is not a dataset",
                             f->path, e[i].name);
            break;
        }
        st = describe_entry(f, d, &e[i], err, errlen);
        (void)H5Dclose(d);
        /* Each tensor has storage of its own: together they fit in the file
         * too (a load allocates their sum). */
        total += e[i].nbytes;
        if (st == TG_OK && total > (uint64_t)f->size)
            st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                             "%s: the tensors up to '%s' hold %" PRIu64
                             " bytes, more than the file's %" PRId64,
                             f->path, e[i].name, total, f->size);
    }
    (void)H5Eclear2(H5E_DEFAULT);
    if (st) {
        tg__ck_free_entries(e, *count);
        *count = 0;
        return st;
    }
    *out = e;
    return TG_OK;
}

/* Reads one tensor's bytes into buf (e->nbytes) and checks both checksums. */
tg_status tg__ck_read(const tg__ckfile *f, const tg__ckent *e, void *buf, char *err,
                      size_t errlen) {
    hid_t d;
    herr_t r = 0;
    char why[256];
    uint32_t crc;

    /* An empty tensor reads nothing, but its CRC (of no bytes) is compared
     * all the same: a damaged dim of 0 must not pass. */
    d = H5Dopen2(f->tensors, e->name, H5P_DEFAULT);
    if (d >= 0 && e->nbytes) {
        hid_t mtype = tg__ck_mem_type((tg_dtype)e->dtype);
        r = mtype < 0 ? -1 : H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        tg__ck_type_close((tg_dtype)e->dtype, mtype);
    }
    if (d < 0 || r < 0) {
        tg__ck_h5_detail(why, sizeof why);
        if (d >= 0)
            (void)H5Dclose(d);
        if (strstr(why, "Fletcher32") || strstr(why, "checksum"))
            return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: tensor '%s' fails its Fletcher-32 checksum (the file is "
                               "corrupt)",
                               f->path, e->name);
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen, "%s: cannot read tensor '%s': %s", f->path,
                           e->name, why);
    }
    (void)H5Dclose(d);
    crc = tg__ck_crc_bytes(buf, e->nbytes);
    if (crc != e->crc)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: tensor '%s' fails its CRC-32 checksum (stored %08" PRIx32
                           ", computed %08" PRIx32 "; the file is corrupt)",
                           f->path, e->name, e->crc, crc);
    return TG_OK;
}

/* ---- public entry points ---- */

void tg_ckpt_meta_free(tg_ckpt_meta *m) {
    if (!m)
        return;
    /* The struct's pointer is const for callers who save a string literal;
     * after a load it is the heap copy that this module made. */
    free((void *)m->config);
    m->config = NULL;
    free((void *)m->data_path);
    m->data_path = NULL;
    free((void *)m->model_text);
    m->model_text = NULL;
}

tg_status tg_ckpt_read_meta(tg_ctx *ctx, const char *path, tg_ckpt_meta *meta) {
    char err[TG__CK_ERRLEN];
    tg__ckfile f;
    tg_ckpt_meta m;
    tg_status st;

    if (!path || !meta)
        return tg__fail(ctx, TG_ERR_INVALID, "ckpt_read_meta: NULL %s", path ? "meta" : "path");
    st = tg__ck_open(path, &f, &m, err, sizeof err);
    if (st) {
        tg_ckpt_meta_free(&m);
        return tg__fail(ctx, st, "%s", err);
    }
    tg__ck_close(&f);
    *meta = m;
    return TG_OK;
}

tg_status tg__ck_verify(const char *path, char *err, size_t errlen) {
    tg__ckfile f;
    tg_ckpt_meta m;
    tg__ckent *e = NULL;
    int ne = 0;
    size_t maxb = 1;
    void *buf = NULL;
    tg_status st = tg__ck_open(path, &f, &m, err, errlen);

    tg_ckpt_meta_free(&m);
    if (st)
        return st;
    st = tg__ck_entries(&f, &e, &ne, err, errlen);
    for (int i = 0; i < ne; i++)
        maxb = e[i].nbytes > maxb ? e[i].nbytes : maxb;
    if (st == TG_OK && !(buf = malloc(maxb)))
        st = tg__ck_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for %zu bytes", path, maxb);
    for (int i = 0; i < ne && st == TG_OK; i++)
        st = tg__ck_read(&f, &e[i], buf, err, errlen);
    free(buf);
    tg__ck_free_entries(e, ne);
    tg__ck_close(&f);
    return st;
}

tg_status tg_ckpt_verify(tg_ctx *ctx, const char *path) {
    char err[TG__CK_ERRLEN];
    tg_status st;

    if (!path)
        return tg__fail(ctx, TG_ERR_INVALID, "ckpt_verify: NULL path");
    st = tg__ck_verify(path, err, sizeof err);
    return st ? tg__fail(ctx, st, "%s", err) : TG_OK;
}

void tg_ckpt_tensors_free(tg_ckpt_tensor *t, int n) {
    for (int i = 0; t && i < n; i++) {
        free(t[i].name);
        free(t[i].data);
    }
    free(t);
}

tg_status tg_ckpt_read_tensors(tg_ctx *ctx, const char *path, tg_ckpt_tensor **out, int *count) {
    char err[TG__CK_ERRLEN];
    tg__ckfile f;
    tg_ckpt_meta m;
    tg__ckent *e = NULL;
    tg_ckpt_tensor *t = NULL;
    int ne = 0;
    tg_status st;

    if (!path || !out || !count)
        return tg__fail(ctx, TG_ERR_INVALID, "ckpt_read_tensors: NULL path or output");
    *out = NULL;
    *count = 0;
    st = tg__ck_open(path, &f, &m, err, sizeof err);
    tg_ckpt_meta_free(&m);
    if (st)
        return tg__fail(ctx, st, "%s", err);
    st = tg__ck_entries(&f, &e, &ne, err, sizeof err);
    if (st == TG_OK && !(t = calloc((size_t)(ne ? ne : 1), sizeof *t)))
        st = tg__ck_fail(TG_ERR_NOMEM, err, sizeof err, "%s: out of memory", path);
    for (int i = 0; i < ne && st == TG_OK; i++) {
        t[i].name = strdup(e[i].name);
        t[i].dtype = (tg_dtype)e[i].dtype;
        t[i].ndim = e[i].ndim;
        memcpy(t[i].shape, e[i].shape, sizeof t[i].shape);
        t[i].nbytes = e[i].nbytes;
        /* Sizes are bounded by the file's size (tg__ck_entries). */
        t[i].data = malloc(e[i].nbytes ? e[i].nbytes : 1);
        if (!t[i].data || !t[i].name)
            st = tg__ck_fail(TG_ERR_NOMEM, err, sizeof err, "%s: no memory for tensor '%s'", path,
                             e[i].name);
        else
            st = tg__ck_read(&f, &e[i], t[i].data, err, sizeof err);
    }
    tg__ck_free_entries(e, ne);
    tg__ck_close(&f);
    if (st) {
        tg_ckpt_tensors_free(t, t ? ne : 0);
        return tg__fail(ctx, st, "%s", err);
    }
    *out = t;
    *count = ne;
    return TG_OK;
}
