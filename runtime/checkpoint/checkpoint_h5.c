/*
 * checkpoint_h5.c: what writing and reading a checkpoint file share: HDF5's
 * error stack and settings, the file's types, the metadata's checksum.
 *
 * The layout of one checkpoint file:
 *
 *   user block        512 bytes: the tapegrad header (checkpoint_seal.c)
 *   /                 attributes: format = "tapegrad-checkpoint", format_version,
 *                     tapegrad_version, model, step, epoch, samples_consumed,
 *                     optim_steps, rng_state (2 x u64), world_size, num_tensors,
 *                     meta_crc32; optional (since 0.x, older files lack them):
 *                     data_path, data_bytes, data_sha256, data_crc32 (the
 *                     dataset the run trained on; tg__ck_data_crc)
 *   /config           scalar fixed-length string; attribute crc32
 *   /model_text       optional: the model file; attributes crc32, input_shape
 *                     (3 x i64), num_classes
 *   /tensors/<name>   one dataset per tensor, named by the tensor's ->name,
 *                     little-endian, row-major; attribute crc32; datasets of
 *                     one or more elements are chunked with Fletcher-32
 *
 * docs/CHECKPOINTS.md is the reference for readers outside tapegrad;
 * checkpoint_write.c writes it, checkpoint_read.c reads it.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "checkpoint_internal.h"
#include "core/internal.h"

/* ---- small helpers ---- */

void tg__ck_h5_quiet(void) {
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
const char *tg__ck_h5_detail(char *buf, size_t len) {
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
 * tg__ck_h5_detail(). */
hid_t tg__ck_h5_keep(bool failed) { return failed ? H5Eget_current_stack() : -1; }

void tg__ck_h5_restore(hid_t stack) {
    /* H5Eset_current_stack also closes the saved copy. */
    if (stack >= 0)
        (void)H5Eset_current_stack(stack);
}

const char *tg__ck_shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t off = (size_t)snprintf(buf, len, "(");

    for (int i = 0; i < ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    if (off < len)
        snprintf(buf + off, len - off, ndim == 1 ? ",)" : ")");
    return buf;
}

/* bf16 as HDF5 describes it itself: a 16-bit little-endian float with f32's
 * sign and 8-bit exponent (bias 127) and a 7-bit mantissa. HDF5 converts it to
 * any other float type on read (h5py: ds.astype("<f4")). A new type each call,
 * closed by tg__ck_type_close(). */
static hid_t bf16_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);

    if (t < 0)
        return t;
    if (H5Tset_fields(t, 15, 7, 8, 0, 7) < 0 || H5Tset_offset(t, 0) < 0 ||
        H5Tset_precision(t, 16) < 0 || H5Tset_size(t, 2) < 0 || H5Tset_ebias(t, 127) < 0) {
        (void)H5Tclose(t);
        return -1;
    }
    return t;
}

static bool is_bf16_type(hid_t type) {
    size_t spos, epos, esize, mpos, msize;

    return H5Tget_size(type) == 2 && H5Tget_ebias(type) == 127 &&
           H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) >= 0 && spos == 15 &&
           epos == 7 && esize == 8 && mpos == 0 && msize == 7 &&
           H5Tget_order(type) == H5T_ORDER_LE;
}

bool tg__ck_dtype_stored(tg_dtype dt) { return (unsigned)dt < TG_DTYPE_COUNT; }

void tg__ck_type_close(tg_dtype dt, hid_t t) {
    if (dt == TG_BF16 && t >= 0)
        (void)H5Tclose(t);
}

hid_t tg__ck_file_type(tg_dtype dt) {
    switch (dt) {
    case TG_BF16:
        return bf16_type();
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

hid_t tg__ck_mem_type(tg_dtype dt) {
    switch (dt) {
    case TG_BF16:
        return bf16_type();
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
int tg__ck_dtype_of(hid_t type, char *buf, size_t len) {
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    bool sign = H5Tget_sign(type) != H5T_SGN_NONE;

    if (cls == H5T_FLOAT && is_bf16_type(type)) {
        snprintf(buf, len, "bf16");
        return TG_BF16;
    }
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

hid_t tg__ck_str_type(size_t len) {
    hid_t t = H5Tcopy(H5T_C_S1);

    if (t < 0)
        return t;
    if (H5Tset_size(t, len + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0) {
        (void)H5Tclose(t);
        return -1;
    }
    return t;
}

/* The CRC-32 of the metadata's canonical text (docs/CHECKPOINTS.md gives
 * the recipe), so that a flipped bit in an attribute is caught. */
uint32_t tg__ck_meta_crc(const tg_ckpt_meta *m, int64_t n) {
    char buf[512];
    int len =
        snprintf(buf, sizeof buf,
                 "%d\n%s\n%s\n%" PRId64 "\n%" PRId64 "\n%" PRId64 "\n%" PRId64 "\n%" PRIu64
                 "\n%" PRIu64 "\n%d\n%" PRId64 "\n",
                 (int)m->format_version, m->version, m->model, m->step, m->epoch,
                 m->samples_consumed, m->optim_steps, m->rng[0], m->rng[1], (int)m->world_size, n);
    return tg__ck_crc_bytes(buf, len < 0                    ? 0
                                 : (size_t)len < sizeof buf ? (size_t)len
                                                            : sizeof buf - 1);
}

/* Access properties: the default (sec2) driver for reading, or, with
 * core_increment > 0, an in-memory file that grows by that many bytes. */
hid_t tg__ck_fapl(size_t core_increment) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);

    if (fapl < 0)
        return fapl;
    if (core_increment && H5Pset_fapl_core(fapl, core_increment, false) < 0) {
        (void)H5Pclose(fapl);
        return -1;
    }
    /* Written in the newest format this HDF5 offers (a version 3 superblock,
     * object headers and B-trees with checksums of their own), which HDF5
     * 1.10 and later read. Reading accepts any format from the earliest. */
    if (H5Pset_libver_bounds(fapl, core_increment ? H5F_LIBVER_LATEST : H5F_LIBVER_EARLIEST,
                             H5F_LIBVER_LATEST) < 0) {
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

uint32_t tg__ck_data_crc(const tg_ckpt_meta *m) {
    char num[32];
    int n = snprintf(num, sizeof num, "\n%" PRId64 "\n", m->data_bytes);
    uint32_t c = tg__ck_crc(0, m->data_path, strlen(m->data_path));
    c = tg__ck_crc(c, num, n > 0 ? (size_t)n : 0);
    return tg__ck_crc(c, m->data_sha256, strnlen(m->data_sha256, sizeof m->data_sha256));
}
