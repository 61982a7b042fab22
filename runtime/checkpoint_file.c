/*
 * checkpoint_file.c: the HDF5 layout of one checkpoint file.
 *
 *   /                 attributes: format = "tapegrad-checkpoint", format_version,
 *                     tapegrad_version, model, step, epoch, samples_consumed,
 *                     optim_steps, rng_state (2 x u64), world_size, num_tensors
 *   /config           scalar fixed-length string; attribute crc32
 *   /tensors/<name>   one dataset per tensor, named by the tensor's ->name,
 *                     little-endian, row-major; attribute crc32; datasets of
 *                     one or more elements are chunked with Fletcher-32
 *
 * docs/CHECKPOINTS.md is the reference for readers outside tapegrad;
 * checkpoint_load.c builds loading and describing on the readers here.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>
#include <zlib.h>

#include "checkpoint_internal.h"
#include "internal.h"

#define FORMAT_NAME "tapegrad-checkpoint"
/* Chunks of at most this many bytes: big enough that the per-chunk overhead
 * (an index entry and a 4-byte checksum) is negligible, small enough that a
 * flipped bit is located to a megabyte. */
#define CHUNK_BYTES ((size_t)1 << 20)

/* ---- small helpers ---- */

static void h5_quiet(void) {
    /* Failing to silence the printer only makes HDF5 noisier; nothing to
     * report. With the thread-safe build the setting is per thread. */
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
    /* Walking upward, the first entry is the innermost, most specific one
     * ("truncated file: ...", "data error detected by Fletcher32 ..."). */
    if (!w->found && e->desc && e->desc[0]) {
        snprintf(w->buf, w->len, "%s", e->desc);
        w->found = 1;
    }
    return 0;
}

/* The innermost description on HDF5's error stack, then clears the stack. */
static const char *h5_detail(char *buf, size_t len) {
    struct detail_walk w = {buf, len, 0};

    buf[0] = '\0';
    char *m, *q;

    if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, detail_cb, &w) < 0 || !w.found)
        snprintf(buf, len, "no detail from HDF5");
    (void)H5Eclear2(H5E_DEFAULT);
    /* A failed write() reads "file write failed: time = ..., filename = ...,
     * errno = 28, error message = 'No space left on device', ..." over two
     * lines: keep the head and the system's message, on one line. */
    m = strstr(buf, "error message = '");
    q = strchr(buf, ':');
    if (m && q && q < m) {
        char *end = strchr(m + 17, '\'');
        size_t head = (size_t)(q - buf) + 1, n = end ? (size_t)(end - (m + 17)) : strlen(m + 17);
        buf[head] = ' ';
        memmove(buf + head + 1, m + 17, n);
        buf[head + 1 + n] = '\0';
    }
    for (q = buf; *q; q++)
        if (*q == '\n' || *q == '\r')
            *q = ' ';
    return buf;
}

/* Any successful HDF5 call clears the error stack, so a failing path keeps
 * it aside while it closes what it opened, then puts it back for
 * h5_detail(). */
static hid_t h5_keep(bool failed) { return failed ? H5Eget_current_stack() : -1; }

static void h5_restore(hid_t stack) {
    /* H5Eset_current_stack also closes the saved copy. */
    if (stack >= 0)
        (void)H5Eset_current_stack(stack);
}

static uint32_t crc_bytes(const void *p, size_t n) {
    const Bytef *b = p;
    uLong c = crc32(0L, Z_NULL, 0);

    /* zlib's length is an unsigned int: feed it a gigabyte at a time. */
    while (n) {
        uInt k = n > ((size_t)1 << 30) ? (uInt)1 << 30 : (uInt)n;
        c = crc32(c, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)c;
}

const char *tg__ck_shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t off = (size_t)snprintf(buf, len, "(");

    for (int i = 0; i < ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    if (off < len)
        snprintf(buf + off, len - off, ndim == 1 ? ",)" : ")");
    return buf;
}

static hid_t file_type(tg_dtype dt) {
    switch (dt) {
    case TG_F32:
        return H5T_IEEE_F32LE;
    case TG_F64:
        return H5T_IEEE_F64LE;
    case TG_U8:
        return H5T_STD_U8LE;
    case TG_I32:
        return H5T_STD_I32LE;
    case TG_I64:
        return H5T_STD_I64LE;
    default:
        return -1;
    }
}

static hid_t mem_type(tg_dtype dt) {
    switch (dt) {
    case TG_F32:
        return H5T_NATIVE_FLOAT;
    case TG_F64:
        return H5T_NATIVE_DOUBLE;
    case TG_U8:
        return H5T_NATIVE_UINT8;
    case TG_I32:
        return H5T_NATIVE_INT32;
    case TG_I64:
        return H5T_NATIVE_INT64;
    default:
        return -1;
    }
}

/* The tg_dtype a file type stores, or -1; its name goes to buf. */
static int dtype_of(hid_t type, char *buf, size_t len) {
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    bool sign = H5Tget_sign(type) != H5T_SGN_NONE;

    if (cls == H5T_FLOAT) {
        snprintf(buf, len, "f%zu", size * 8);
        return size == 4 ? TG_F32 : size == 8 ? TG_F64 : -1;
    }
    if (cls == H5T_INTEGER) {
        snprintf(buf, len, "%c%zu", sign ? 'i' : 'u', size * 8);
        if (!sign)
            return size == 1 ? TG_U8 : -1;
        return size == 4 ? TG_I32 : size == 8 ? TG_I64 : -1;
    }
    snprintf(buf, len, "%s", cls == H5T_STRING ? "string" : "a non-numeric type");
    return -1;
}

static hid_t str_type(size_t len) {
    hid_t t = H5Tcopy(H5T_C_S1);

    if (t < 0)
        return t;
    if (H5Tset_size(t, len + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0) {
        (void)H5Tclose(t);
        return -1;
    }
    return t;
}

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
    es = h5_keep(r < 0);
    if (a >= 0 && H5Aclose(a) < 0)
        r = -1;
    (void)H5Sclose(sp);
    h5_restore(es);
    return r;
}

static herr_t put_str(hid_t obj, const char *name, const char *s) {
    hid_t t = str_type(strlen(s)), es;
    herr_t r;

    if (t < 0)
        return -1;
    r = put_attr(obj, name, t, t, 1, s);
    es = h5_keep(r < 0);
    (void)H5Tclose(t);
    h5_restore(es);
    return r;
}

static herr_t put_i64(hid_t obj, const char *name, int64_t v) {
    return put_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &v);
}

static herr_t put_u32(hid_t obj, const char *name, uint32_t v) {
    return put_attr(obj, name, H5T_STD_U32LE, H5T_NATIVE_UINT32, 1, &v);
}

/* The CRC-32 of the metadata's canonical text (docs/CHECKPOINTS.md gives
 * the recipe), so that a flipped bit in an attribute is caught. */
static uint32_t meta_crc(const tg_ckpt_meta *m, int64_t n) {
    char buf[512];
    int len =
        snprintf(buf, sizeof buf,
                 "%d\n%s\n%s\n%" PRId64 "\n%" PRId64 "\n%" PRId64 "\n%" PRId64 "\n%" PRIu64
                 "\n%" PRIu64 "\n%d\n%" PRId64 "\n",
                 (int)m->format_version, m->version, m->model, m->step, m->epoch,
                 m->samples_consumed, m->optim_steps, m->rng[0], m->rng[1], (int)m->world_size, n);
    return crc_bytes(buf, len < 0 ? 0 : (size_t)len < sizeof buf ? (size_t)len : sizeof buf - 1);
}

static herr_t write_meta(hid_t file, const tg_ckpt_meta *meta, int n) {
    tg_ckpt_meta mm = *meta, *m = &mm;
    int32_t fv = TG_CKPT_FORMAT_VERSION, ws = m->world_size;
    const char *model = m->model;

    /* What a reader will see: the writer's version, the name as kept. */
    mm.format_version = fv;
    snprintf(mm.version, sizeof mm.version, "%s", TG_VERSION_STRING);
    mm.model[sizeof mm.model - 1] = '\0';
    if (put_str(file, "format", FORMAT_NAME) < 0 ||
        put_attr(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &fv) < 0 ||
        put_str(file, "tapegrad_version", TG_VERSION_STRING) < 0 ||
        put_str(file, "model", model) < 0 || put_i64(file, "step", m->step) < 0 ||
        put_i64(file, "epoch", m->epoch) < 0 ||
        put_i64(file, "samples_consumed", m->samples_consumed) < 0 ||
        put_i64(file, "optim_steps", m->optim_steps) < 0 ||
        put_attr(file, "rng_state", H5T_STD_U64LE, H5T_NATIVE_UINT64, 2, m->rng) < 0 ||
        put_attr(file, "world_size", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &ws) < 0 ||
        put_i64(file, "num_tensors", n) < 0 || put_u32(file, "meta_crc32", meta_crc(m, n)) < 0)
        return -1;
    return 0;
}

/* The configuration is a dataset, not an attribute: attributes in the
 * compact storage of HDF5 1.8-format files are limited to 64 KiB. */
static herr_t write_config(hid_t file, const char *config) {
    const char *s = config ? config : "";
    size_t len = strlen(s);
    hid_t t = str_type(len), sp = H5Screate(H5S_SCALAR), d = -1, es;
    herr_t r = -1;

    if (t >= 0 && sp >= 0)
        d = H5Dcreate2(file, "config", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d >= 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) >= 0 &&
        put_u32(d, "crc32", crc_bytes(s, len)) >= 0)
        r = 0;
    es = h5_keep(r < 0);
    if (d >= 0 && H5Dclose(d) < 0)
        r = -1;
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (t >= 0)
        (void)H5Tclose(t);
    h5_restore(es);
    return r;
}

/* Chunked with Fletcher-32: a chunk starts as the whole tensor, and its
 * leading dims are halved until it fits CHUNK_BYTES (a single element always
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
    for (int i = 0; i < t->ndim && bytes > CHUNK_BYTES; i++) {
        while (c[i] > 1 && bytes > CHUNK_BYTES) {
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
    hid_t sp, dcpl, d = -1, es;
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
    if (sp >= 0 && dcpl >= 0)
        d = H5Dcreate2(grp, t->name, file_type(t->dtype), sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    /* An empty tensor has nothing to write; its dataset reads back empty. */
    if (d < 0 ||
        (nbytes && H5Dwrite(d, mem_type(t->dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) ||
        put_u32(d, "crc32", crc_bytes(buf, nbytes)) < 0)
        st = TG_ERR_IO;
    es = h5_keep(st != TG_OK);
    if (d >= 0 && H5Dclose(d) < 0)
        st = TG_ERR_IO;
    if (dcpl >= 0)
        (void)H5Pclose(dcpl);
    if (sp >= 0)
        (void)H5Sclose(sp);
    h5_restore(es);
    if (st)
        return tg__ck_fail(st, err, errlen, "%s: writing tensor '%s': %s", path, t->name,
                           h5_detail(why, sizeof why));
    return TG_OK;
}

/* Access properties: the default (sec2) driver for reading, or, with
 * core_increment > 0, an in-memory file that grows by that many bytes. */
static hid_t make_fapl(size_t core_increment) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);

    if (fapl < 0)
        return fapl;
    if (core_increment && H5Pset_fapl_core(fapl, core_increment, false) < 0) {
        (void)H5Pclose(fapl);
        return -1;
    }
    /* The earliest format that holds what we write (the creation-ordered
     * group needs 1.8), so any HDF5 from 1.8 on and h5py read it. Newer
     * lower bounds (a checksummed v2 superblock) give a corrupt image from
     * H5Fget_file_image() in HDF5 1.10, so the metadata carries its own
     * CRC-32 (meta_crc32) instead. */
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_EARLIEST, H5F_LIBVER_V18) < 0) {
        (void)H5Pclose(fapl);
        return -1;
    }
#if H5_VERSION_GE(1, 10, 7)
    /* Use file locks, but tolerate file systems without them. */
    if (H5Pset_file_locking(fapl, true, true) < 0) {
        (void)H5Pclose(fapl);
        return -1;
    }
#endif
    return fapl;
}

static tg_status write_body(tg_ctx *ctx, hid_t file, const char *path, const tg_ckpt_meta *m, int n,
                            tg_tensor *const *ts, char *err, size_t errlen) {
    size_t maxb = 1;
    hid_t gcpl, grp = -1;
    void *buf;
    char why[256];
    tg_status st = TG_OK;

    if (write_meta(file, m, n) < 0 || write_config(file, m->config) < 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: writing the metadata: %s", path,
                           h5_detail(why, sizeof why));
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
                           h5_detail(why, sizeof why));
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
                         h5_detail(why, sizeof why));
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
    size_t guess = (size_t)1 << 20;
    hid_t fapl, file, es;
    ssize_t len = -1;
    char why[256];
    tg_status st;

    *image = NULL;
    for (int i = 0; i < n; i++)
        guess += (size_t)tg_numel(ts[i]) * tg_dtype_size(ts[i]->dtype) + 4096;
    fapl = make_fapl(guess);
    file = fapl < 0 ? -1 : H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    es = h5_keep(file < 0);
    if (fapl >= 0)
        (void)H5Pclose(fapl);
    h5_restore(es);
    if (file < 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot create the file in memory: %s", path,
                           h5_detail(why, sizeof why));
    st = write_body(ctx, file, path, m, n, ts, err, errlen);
    if (st == TG_OK &&
        (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0 || (len = H5Fget_file_image(file, NULL, 0)) <= 0))
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot lay out the file: %s", path,
                         h5_detail(why, sizeof why));
    if (st == TG_OK && !(*image = malloc((size_t)len)))
        st = tg__ck_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for a %zd-byte file image", path,
                         len);
    if (st == TG_OK && H5Fget_file_image(file, *image, (size_t)len) != len)
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot copy the file image: %s", path,
                         h5_detail(why, sizeof why));
    if (H5Fclose(file) < 0 && st == TG_OK)
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: closing the in-memory file: %s", path,
                         h5_detail(why, sizeof why));
    (void)H5Eclear2(H5E_DEFAULT);
    if (st) {
        free(*image);
        *image = NULL;
        return st;
    }
    *size = (size_t)len;
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

    h5_quiet();
    for (int i = 0; i < n; i++)
        if (file_type(ts[i]->dtype) < 0)
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

/* ---- reading ---- */

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
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == cls && H5Sget_simple_extent_npoints(sp) == count)
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
    hid_t a = -1, t = -1;
    char *tmp = NULL;
    size_t size = 0;
    bool ok = false;

    if (ex > 0)
        a = H5Aopen(f->file, name, H5P_DEFAULT);
    if (a >= 0)
        t = H5Aget_type(a);
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0) {
        size = H5Tget_size(t);
        tmp = calloc(size + 1, 1);
    }
    if (tmp)
        ok = H5Aread(a, t, tmp) >= 0;
    if (ok)
        snprintf(out, len, "%s", tmp);
    free(tmp);
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
                           "%s: the root attribute '%s' is not a fixed-length string", f->path,
                           name);
    return TG_OK;
}

static tg_status read_config(const tg__ckfile *f, tg_ckpt_meta *m, char *err, size_t errlen) {
    hid_t d = H5Dopen2(f->file, "config", H5P_DEFAULT), t = -1, a = -1;
    uint32_t crc = 0;
    char *s = NULL;
    bool ok = false;

    if (d >= 0)
        t = H5Dget_type(d);
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0)
        s = calloc(H5Tget_size(t) + 1, 1);
    if (s && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) >= 0)
        a = H5Aopen(d, "crc32", H5P_DEFAULT);
    if (a >= 0)
        ok = H5Aread(a, H5T_NATIVE_UINT32, &crc) >= 0;
    if (a >= 0)
        (void)H5Aclose(a);
    if (t >= 0)
        (void)H5Tclose(t);
    if (d >= 0)
        (void)H5Dclose(d);
    (void)H5Eclear2(H5E_DEFAULT);
    if (!ok) {
        free(s);
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /config is missing or is not a string with a crc32 attribute",
                           f->path);
    }
    if (crc_bytes(s, strlen(s)) != crc) {
        free(s);
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /config fails its CRC-32 checksum (the file is corrupt)", f->path);
    }
    m->config = s;
    return TG_OK;
}

static tg_status read_meta(tg__ckfile *f, tg_ckpt_meta *m, char *err, size_t errlen) {
    char fmt[64];
    uint32_t crc = 0;
    tg_status st;

    memset(m, 0, sizeof *m);
    st = get_str(f, "format", fmt, sizeof fmt, err, errlen);
    if (st == TG_OK && strcmp(fmt, FORMAT_NAME) != 0)
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: not a tapegrad checkpoint (format is '%s', expected '%s')", f->path,
                         fmt, FORMAT_NAME);
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
    if (!st && crc != meta_crc(m, f->num_tensors))
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: the metadata fails its CRC-32 checksum (the file is corrupt)",
                         f->path);
    if (!st)
        st = read_config(f, m, err, errlen);
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
    struct stat sb;
    htri_t h5;
    hid_t fapl, es;
    char why[256];
    tg_status st;

    h5_quiet();
    memset(m, 0, sizeof *m);
    f->path = path;
    f->file = f->tensors = -1;
    if (stat(path, &sb) != 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot open the checkpoint: %s", path,
                           strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: is not a regular file", path);
#if H5_VERSION_GE(1, 12, 0)
    h5 = H5Fis_accessible(path, H5P_DEFAULT);
#else
    h5 = H5Fis_hdf5(path);
#endif
    if (h5 <= 0) {
        (void)H5Eclear2(H5E_DEFAULT);
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: not an HDF5 file (expected a tapegrad checkpoint)", path);
    }
    fapl = make_fapl(0);
    f->file = fapl < 0 ? -1 : H5Fopen(path, H5F_ACC_RDONLY, fapl);
    es = h5_keep(f->file < 0);
    if (fapl >= 0)
        (void)H5Pclose(fapl);
    h5_restore(es);
    if (f->file < 0)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen, "%s: cannot open as HDF5: %s", path,
                           h5_detail(why, sizeof why));
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

static tg_status describe_entry(const tg__ckfile *f, hid_t d, tg__ckent *e, char *err,
                                size_t errlen) {
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d), a = -1;
    hsize_t dims[TG_MAX_DIMS];
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    bool crc_ok = false;

    if (nd >= 0 && nd <= TG_MAX_DIMS && H5Sget_simple_extent_dims(sp, dims, NULL) >= 0) {
        e->ndim = nd;
        for (int i = 0; i < nd; i++)
            e->shape[i] = (int64_t)dims[i];
    } else {
        nd = -1;
    }
    e->dtype = t < 0 ? -1 : dtype_of(t, e->tname, sizeof e->tname);
    if (H5Aexists(d, "crc32") > 0)
        a = H5Aopen(d, "crc32", H5P_DEFAULT);
    if (a >= 0)
        crc_ok = H5Aread(a, H5T_NATIVE_UINT32, &e->crc) >= 0;
    if (a >= 0)
        (void)H5Aclose(a);
    if (t >= 0)
        (void)H5Tclose(t);
    if (sp >= 0)
        (void)H5Sclose(sp);
    (void)H5Eclear2(H5E_DEFAULT);
    if (nd < 0)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /tensors/%s has no simple shape of at most %d dims", f->path,
                           e->name, TG_MAX_DIMS);
    if (e->dtype < 0)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: /tensors/%s holds %s (expected f32, f64, u8, i32 or i64)", f->path,
                           e->name, e->tname);
    snprintf(e->tname, sizeof e->tname, "%s", tg_dtype_name((tg_dtype)e->dtype));
    if (!crc_ok)
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen, "%s: /tensors/%s has no crc32 attribute",
                           f->path, e->name);
    e->nbytes = (size_t)tg__numel(e->ndim, e->shape) * tg_dtype_size((tg_dtype)e->dtype);
    return TG_OK;
}

static char *link_name(hid_t grp, H5_index_t idx, hsize_t i) {
    ssize_t len = H5Lget_name_by_idx(grp, ".", idx, H5_ITER_INC, i, NULL, 0, H5P_DEFAULT);
    char *s = len < 0 ? NULL : malloc((size_t)len + 1);

    if (s &&
        H5Lget_name_by_idx(grp, ".", idx, H5_ITER_INC, i, s, (size_t)len + 1, H5P_DEFAULT) < 0) {
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
    tg__ckent *e;
    tg_status st = TG_OK;

    *out = NULL;
    *count = 0;
    if (H5Gget_info(f->tensors, &gi) < 0 || gi.nlinks > (1u << 30))
        return tg__ck_fail(TG_ERR_FORMAT, err, errlen, "%s: cannot list /tensors", f->path);
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
            st = tg__ck_fail(TG_ERR_FORMAT, err, errlen, "%s: cannot read the name of tensor %llu",
                             f->path, (unsigned long long)i);
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

    if (e->nbytes == 0)
        return TG_OK;
    d = H5Dopen2(f->tensors, e->name, H5P_DEFAULT);
    if (d >= 0)
        r = H5Dread(d, mem_type((tg_dtype)e->dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    if (d < 0 || r < 0) {
        h5_detail(why, sizeof why);
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
    crc = crc_bytes(buf, e->nbytes);
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
