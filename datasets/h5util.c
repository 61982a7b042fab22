/*
 * h5util.c: error messages and HDF5 helpers shared by the datasets module.
 */
#include <stdio.h>
#include <string.h>

#include "datasets_internal.h"

tg_status tg__ds_fail(tg_status st, char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;

    if (!err || errlen == 0)
        return st;
    va_start(ap, fmt);
    /* A truncated message is still a useful message: the return value of
     * vsnprintf only tells how much was cut. */
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

void tg__ds_h5_quiet(void) {
    /* Failing to silence the printer only makes HDF5 noisier; nothing to
     * report to the caller. */
    (void)H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

struct detail_walk {
    char *buf;
    size_t len;
    int found;
};

static herr_t detail_cb(unsigned n, const H5E_error2_t *e, void *data) {
    struct detail_walk *w = data;

    (void)n;
    /* Walking upward, the first entry is the innermost one: the most
     * specific reason ("truncated file: ..."), not "unable to open file". */
    if (!w->found && e->desc && e->desc[0]) {
        snprintf(w->buf, w->len, "%s", e->desc);
        w->found = 1;
    }
    return 0;
}

const char *tg__ds_h5_detail(char *buf, size_t len) {
    struct detail_walk w = {buf, len, 0};

    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, detail_cb, &w) < 0 || !w.found)
        snprintf(buf, len, "no detail");
    (void)H5Eclear2(H5E_DEFAULT);
    return buf;
}

int tg__ds_type_kind(hid_t type) {
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);

    if (cls == H5T_INTEGER) {
        if (size == 1 && H5Tget_sign(type) == H5T_SGN_NONE)
            return TG__H5_U8;
        return TG__H5_INT;
    }
    if (cls == H5T_FLOAT && size == 4)
        return TG__H5_F32;
    return TG__H5_OTHER;
}

const char *tg__ds_type_name(hid_t type, char *buf, size_t len) {
    size_t bits = H5Tget_size(type) * 8;

    switch (H5Tget_class(type)) {
    case H5T_INTEGER:
        snprintf(buf, len, "%c%zu", H5Tget_sign(type) == H5T_SGN_NONE ? 'u' : 'i', bits);
        break;
    case H5T_FLOAT:
        snprintf(buf, len, "f%zu", bits);
        break;
    case H5T_STRING:
        snprintf(buf, len, "string");
        break;
    case H5T_COMPOUND:
        snprintf(buf, len, "compound");
        break;
    case H5T_ENUM:
        snprintf(buf, len, "enum");
        break;
    case H5T_ARRAY:
        snprintf(buf, len, "array");
        break;
    default:
        snprintf(buf, len, "a non-numeric type");
        break;
    }
    return buf;
}

const char *tg__ds_dims_str(const hsize_t *dims, int ndim, char *buf, size_t len) {
    size_t used = 0;

    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (ndim == 0)
        snprintf(buf, len, "scalar");
    for (int i = 0; i < ndim && used < len; i++) {
        int w =
            snprintf(buf + used, len - used, "%s%llu", i ? "x" : "", (unsigned long long)dims[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return buf;
}

htri_t tg__ds_is_hdf5(const char *path) {
#if H5_VERSION_GE(1, 12, 0)
    return H5Fis_accessible(path, H5P_DEFAULT);
#else
    return H5Fis_hdf5(path);
#endif
}

hid_t tg__ds_fapl(bool nosieve) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);

    if (fapl < 0)
        return fapl;
    if (nosieve && H5Pset_sieve_buf_size(fapl, 0) < 0) {
        (void)H5Pclose(fapl);
        return -1;
    }
#if H5_VERSION_GE(1, 10, 7)
    if (H5Pset_file_locking(fapl, true, true) < 0) {
        (void)H5Pclose(fapl);
        return -1;
    }
#endif
    return fapl;
}
