/*
 * checkpoint_write.c: writing one checkpoint file (the layout is in
 * checkpoint_h5.c). The file is built in memory as an HDF5 image with a
 * 512-byte user block, sealed with the tapegrad header (checkpoint_seal.c),
 * then written with write() and fsync().
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

/* ---- writing ---- */

static herr_t put_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int count,
                       const void *v) {
    hsize_t d = (hsize_t)count;
    hid_t sp = count == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d, NULL);
    hid_t a, es;
    herr_t r;

    if (sp < 0)
        return -1;
    a = H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    r = a < 0 ? -1 : H5Awrite(a, mtype, v);
    es = tg__ck_h5_keep(r < 0);
    if (a >= 0 && H5Aclose(a) < 0)
        r = -1;
    (void)H5Sclose(sp);
    tg__ck_h5_restore(es);
    return r;
}

static herr_t put_str(hid_t obj, const char *name, const char *s) {
    hid_t t = tg__ck_str_type(strlen(s)), es;
    herr_t r;

    if (t < 0)
        return -1;
    r = put_attr(obj, name, t, t, 1, s);
    es = tg__ck_h5_keep(r < 0);
    (void)H5Tclose(t);
    tg__ck_h5_restore(es);
    return r;
}

static herr_t put_i64(hid_t obj, const char *name, int64_t v) {
    return put_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &v);
}

static herr_t put_u32(hid_t obj, const char *name, uint32_t v) {
    return put_attr(obj, name, H5T_STD_U32LE, H5T_NATIVE_UINT32, 1, &v);
}

static herr_t write_meta(hid_t file, const tg_ckpt_meta *meta, int n) {
    tg_ckpt_meta mm = *meta, *m = &mm;
    int32_t fv = TG_CKPT_FORMAT_VERSION, ws = m->world_size;
    const char *model = m->model;

    /* What a reader will see: the writer's version, the name as kept. */
    mm.format_version = fv;
    snprintf(mm.version, sizeof mm.version, "%s", TG_VERSION_STRING);
    mm.model[sizeof mm.model - 1] = '\0';
    if (put_str(file, "format", TG__CK_FORMAT_NAME) < 0 ||
        put_attr(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &fv) < 0 ||
        put_str(file, "tapegrad_version", TG_VERSION_STRING) < 0 ||
        put_str(file, "model", model) < 0 || put_i64(file, "step", m->step) < 0 ||
        put_i64(file, "epoch", m->epoch) < 0 ||
        put_i64(file, "samples_consumed", m->samples_consumed) < 0 ||
        put_i64(file, "optim_steps", m->optim_steps) < 0 ||
        put_attr(file, "rng_state", H5T_STD_U64LE, H5T_NATIVE_UINT64, 2, m->rng) < 0 ||
        put_attr(file, "world_size", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &ws) < 0 ||
        put_i64(file, "num_tensors", n) < 0 ||
        put_u32(file, "meta_crc32", tg__ck_meta_crc(m, n)) < 0)
        return -1;
    /* Readers take strings of up to TG__CK_STR_MAX bytes. */
    if (!m->data_path || !m->data_path[0] || strlen(m->data_path) >= TG__CK_STR_MAX)
        return 0;
    mm.data_sha256[sizeof mm.data_sha256 - 1] = '\0';
    if (put_str(file, "data_path", m->data_path) < 0 ||
        put_i64(file, "data_bytes", m->data_bytes) < 0 ||
        put_str(file, "data_sha256", mm.data_sha256) < 0 ||
        put_u32(file, "data_crc32", tg__ck_data_crc(&mm)) < 0)
        return -1;
    return 0;
}

/* The configuration is a dataset, not an attribute: attributes in the
 * compact storage of HDF5 1.8-format files are limited to 64 KiB. */
static herr_t write_config(hid_t file, const char *config) {
    const char *s = config ? config : "";
    size_t len = strlen(s);
    hid_t t = tg__ck_str_type(len), sp = H5Screate(H5S_SCALAR), d = -1, es;
    herr_t r = -1;

    if (t >= 0 && sp >= 0)
        d = H5Dcreate2(file, "config", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d >= 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) >= 0 &&
        put_u32(d, "crc32", tg__ck_crc_bytes(s, len)) >= 0)
        r = 0;
    es = tg__ck_h5_keep(r < 0);
    if (d >= 0 && H5Dclose(d) < 0)
        r = -1;
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (t >= 0)
        (void)H5Tclose(t);
    tg__ck_h5_restore(es);
    return r;
}

/* The model file's text, as the configuration is stored, with the sample
 * shape and classes it was built for; absent when there is none. */
static herr_t write_model_text(hid_t file, const tg_ckpt_meta *m) {
    if (!m->model_text)
        return 0;
    const char *s = m->model_text;
    size_t len = strlen(s);
    hid_t t = tg__ck_str_type(len ? len : 1), sp = H5Screate(H5S_SCALAR), d = -1, es;
    herr_t r = -1;

    if (t >= 0 && sp >= 0)
        d = H5Dcreate2(file, "model_text", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d >= 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) >= 0 &&
        put_u32(d, "crc32", tg__ck_crc_bytes(s, len)) >= 0 &&
        put_attr(d, "input_shape", H5T_STD_I64LE, H5T_NATIVE_INT64, 3, m->model_input) >= 0 &&
        put_i64(d, "num_classes", m->model_classes) >= 0 &&
        (m->model_input_ndim != 1 || put_i64(d, "input_ndim", 1) >= 0))
        r = 0;
    es = tg__ck_h5_keep(r < 0);
    if (d >= 0 && H5Dclose(d) < 0)
        r = -1;
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (t >= 0)
        (void)H5Tclose(t);
    tg__ck_h5_restore(es);
    return r;
}

/* Chunked with Fletcher-32: a chunk starts as the whole tensor, and its
 * leading dims are halved until it fits TG__CK_CHUNK_BYTES (a single element always
 * fits, so this ends). */
static hid_t tensor_dcpl(const tg_tensor *t) {
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t c[TG_MAX_DIMS];
    size_t bytes = tg_dtype_size(t->dtype);

    if (p < 0 || t->ndim == 0 || tg_numel(t) == 0)
        return p;
    for (int i = 0; i < t->ndim; i++) {
        c[i] = (hsize_t)t->shape[i];
        bytes *= (size_t)t->shape[i];
    }
    for (int i = 0; i < t->ndim && bytes > TG__CK_CHUNK_BYTES; i++) {
        while (c[i] > 1 && bytes > TG__CK_CHUNK_BYTES) {
            hsize_t half = (c[i] + 1) / 2;
            bytes = bytes / (size_t)c[i] * (size_t)half;
            c[i] = half;
        }
    }
    if (H5Pset_chunk(p, t->ndim, c) < 0 || H5Pset_fletcher32(p) < 0) {
        (void)H5Pclose(p);
        return -1;
    }
    return p;
}

static tg_status write_tensor(tg_ctx *ctx, hid_t grp, const char *path, const tg_tensor *t,
                              void *buf, char *err, size_t errlen) {
    hsize_t dims[TG_MAX_DIMS];
    size_t nbytes = (size_t)tg_numel(t) * tg_dtype_size(t->dtype);
    hid_t sp, dcpl, d = -1, es, ftype, mtype;
    char why[256];
    tg_status st = TG_OK;

    if (tg_to_host(ctx, t, buf, nbytes) != TG_OK) {
        st = tg__ck_fail(ctx->status, err, errlen, "%s: reading tensor '%s' to the host: %s", path,
                         t->name, tg_ctx_error(ctx));
        tg_ctx_clear_error(ctx);
        return st;
    }
    for (int i = 0; i < t->ndim; i++)
        dims[i] = (hsize_t)t->shape[i];
    sp = t->ndim ? H5Screate_simple(t->ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    dcpl = tensor_dcpl(t);
    ftype = tg__ck_file_type(t->dtype);
    mtype = tg__ck_mem_type(t->dtype);
    if (sp >= 0 && dcpl >= 0 && ftype >= 0)
        d = H5Dcreate2(grp, t->name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    /* An empty tensor has nothing to write; its dataset reads back empty. */
    if (d < 0 || mtype < 0 ||
        (nbytes && H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) ||
        put_u32(d, "crc32", tg__ck_crc_bytes(buf, nbytes)) < 0)
        st = TG_ERR_IO;
    tg__ck_type_close(t->dtype, ftype);
    tg__ck_type_close(t->dtype, mtype);
    es = tg__ck_h5_keep(st != TG_OK);
    if (d >= 0 && H5Dclose(d) < 0)
        st = TG_ERR_IO;
    if (dcpl >= 0)
        (void)H5Pclose(dcpl);
    if (sp >= 0)
        (void)H5Sclose(sp);
    tg__ck_h5_restore(es);
    if (st)
        return tg__ck_fail(st, err, errlen, "%s: writing tensor '%s': %s", path, t->name,
                           tg__ck_h5_detail(why, sizeof why));
    return TG_OK;
}

static tg_status write_body(tg_ctx *ctx, hid_t file, const char *path, const tg_ckpt_meta *m, int n,
                            tg_tensor *const *ts, char *err, size_t errlen) {
    size_t maxb = 1;
    hid_t gcpl, grp = -1;
    void *buf;
    char why[256];
    tg_status st = TG_OK;

    if (write_meta(file, m, n) < 0 || write_config(file, m->config) < 0 ||
        write_model_text(file, m) < 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: writing the metadata: %s", path,
                           tg__ck_h5_detail(why, sizeof why));
    /* Tracking creation order lets readers list the tensors in the order
     * they were saved (parameters first, then optimizer state). */
    gcpl = H5Pcreate(H5P_GROUP_CREATE);
    if (gcpl >= 0 &&
        H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) >= 0)
        grp = H5Gcreate2(file, "tensors", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (gcpl >= 0)
        (void)H5Pclose(gcpl);
    if (grp < 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: creating /tensors: %s", path,
                           tg__ck_h5_detail(why, sizeof why));
    for (int i = 0; i < n; i++) {
        size_t b = (size_t)tg_numel(ts[i]) * tg_dtype_size(ts[i]->dtype);
        maxb = b > maxb ? b : maxb;
    }
    buf = malloc(maxb);
    if (!buf)
        st = tg__ck_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for a %zu-byte buffer", path,
                         maxb);
    for (int i = 0; i < n && st == TG_OK; i++) {
        if (tg__ck_fault(TG__CK_TENSOR, i, path, err, errlen))
            st = TG_ERR_IO;
        else
            st = write_tensor(ctx, grp, path, ts[i], buf, err, errlen);
    }
    free(buf);
    if (H5Gclose(grp) < 0 && st == TG_OK)
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: closing /tensors: %s", path,
                         tg__ck_h5_detail(why, sizeof why));
    return st;
}

/* Builds the whole file in memory and returns its image (heap memory).
 * HDF5 never writes to disk here: a write() that fails inside HDF5 leaves
 * the file half-closed in the library (H5Fclose fails and the id stays, to
 * crash at exit), so the disk I/O is done by write_image() below, where a
 * full disk is an ordinary error. */
static tg_status build_image(tg_ctx *ctx, const char *path, const tg_ckpt_meta *m, int n,
                             tg_tensor *const *ts, void **image, size_t *size, char *err,
                             size_t errlen) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    size_t guess = (size_t)1 << 20;
    hid_t fapl, fcpl, file = -1, es;
    ssize_t len = -1;
    unsigned char *img = NULL;
    char why[256];
    tg_status st;

    *image = NULL;
    for (int i = 0; i < n; i++)
        guess += (size_t)tg_numel(ts[i]) * tg_dtype_size(ts[i]->dtype) + 4096;
    fapl = tg__ck_fapl(guess);
    /* The user block that will hold the tapegrad header. */
    fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (fapl >= 0 && fcpl >= 0 && H5Pset_userblock(fcpl, TG__CK_HEADER) >= 0)
        file = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    es = tg__ck_h5_keep(file < 0);
    if (fapl >= 0)
        (void)H5Pclose(fapl);
    if (fcpl >= 0)
        (void)H5Pclose(fcpl);
    tg__ck_h5_restore(es);
    if (file < 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot create the file in memory: %s", path,
                           tg__ck_h5_detail(why, sizeof why));
    st = write_body(ctx, file, path, m, n, ts, err, errlen);
    if (st == TG_OK &&
        (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0 || (len = H5Fget_file_image(file, NULL, 0)) <= 0))
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot lay out the file: %s", path,
                         tg__ck_h5_detail(why, sizeof why));
    if (st == TG_OK && !(img = calloc((size_t)len + TG__CK_HEADER, 1)))
        st = tg__ck_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for a %zd-byte file image", path,
                         len);
    if (st == TG_OK && H5Fget_file_image(file, img + TG__CK_HEADER, (size_t)len) != len)
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot copy the file image: %s", path,
                         tg__ck_h5_detail(why, sizeof why));
    if (H5Fclose(file) < 0 && st == TG_OK)
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: closing the in-memory file: %s", path,
                         tg__ck_h5_detail(why, sizeof why));
    (void)H5Eclear2(H5E_DEFAULT);
    /* The image starts at the superblock (HDF5 1.10 leaves the user block
     * out; a library that keeps it in gives it at the front, to replace). */
    if (st == TG_OK && memcmp(img + TG__CK_HEADER, sig, sizeof sig) != 0) {
        if (len > 2 * TG__CK_HEADER && memcmp(img + 2 * TG__CK_HEADER, sig, sizeof sig) == 0) {
            len -= TG__CK_HEADER;
            memmove(img + TG__CK_HEADER, img + 2 * TG__CK_HEADER, (size_t)len);
        } else
            st = tg__ck_fail(TG_ERR_IO, err, errlen,
                             "%s: the in-memory image has no HDF5 superblock where expected", path);
    }
    if (st) {
        free(img);
        return st;
    }
    tg__ck_fix_superblock(img + TG__CK_HEADER, (size_t)len);
    *size = (size_t)len + TG__CK_HEADER;
    tg__ck_seal(img, *size);
    *image = img;
    return TG_OK;
}

static tg_status write_image(int fd, const char *path, const char *image, size_t size, char *err,
                             size_t errlen) {
    size_t off = 0;

    while (off < size) {
        ssize_t w = write(fd, image + off, size - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return tg__ck_fail(TG_ERR_IO, err, errlen,
                               "%s: write failed after %zu of %zu bytes: %s", path, off, size,
                               w < 0 ? strerror(errno) : "no progress");
        off += (size_t)w;
    }
    if (tg__ck_fault(TG__CK_FSYNC, 0, path, err, errlen))
        return TG_ERR_IO;
    if (fsync(fd) != 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: fsync failed: %s", path, strerror(errno));
    return TG_OK;
}

tg_status tg__ck_write(tg_ctx *ctx, const char *path, const tg_ckpt_meta *m, int n,
                       tg_tensor *const *ts, char *err, size_t errlen) {
    void *image = NULL;
    size_t size = 0;
    int fd;
    tg_status st;

    tg__ck_h5_quiet();
    for (int i = 0; i < n; i++)
        if (!tg__ck_dtype_stored(ts[i]->dtype))
            return tg__ck_fail(TG_ERR_DTYPE, err, errlen,
                               "%s: tensor '%s' has dtype %s, which "
                               "checkpoints do not store",
                               path, ts[i]->name, tg_dtype_name(ts[i]->dtype));
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot create the file: %s", path,
                           strerror(errno));
    if (tg__ck_fault(TG__CK_CREATED, 0, path, err, errlen))
        st = TG_ERR_IO;
    else
        st = build_image(ctx, path, m, n, ts, &image, &size, err, errlen);
    if (st == TG_OK)
        st = write_image(fd, path, image, size, err, errlen);
    free(image);
    if (close(fd) != 0 && st == TG_OK)
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: close failed: %s", path, strerror(errno));
    return st;
}
