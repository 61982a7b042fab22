/*
 * idx.c: MNIST-family IDX files (gzip) to the tapegrad HDF5 schema.
 *
 * An IDX file is a big-endian header (a 4-byte magic 0x000008DD, where 08 is
 * u8 and DD the number of dimensions, then DD 4-byte sizes) followed by the
 * raw u8 body. The images are streamed through a buffer of one chunk of
 * samples, so converting needs memory for the labels and one chunk only.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "datasets_internal.h"

#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_DEFAULT_CHUNK 1024
/* Labels are tiny; bigger chunks keep the chunk index small. */
#define IDX_LABEL_CHUNK_FACTOR 64

struct idx_file {
    gzFile gz;
    const char *path;
    uint32_t dims[3];
    int64_t body; /* body bytes the header announces */
};

struct idx_out {
    const char *path; /* as the caller named it, for messages */
    char *tmp_path;   /* non-NULL while a new file is written */
    char tmp_group[300];
    char split[256];
    hid_t file;
    hid_t fapl;
    bool existed;
};

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Reads up to len bytes, looping because gzread takes an unsigned count and
 * may return less. *got receives the bytes read; a stream that ends early is
 * not an error here (the caller reports it with the counts it expected).
 */
static tg_status gz_read(struct idx_file *f, void *buf, size_t len, size_t *got, char *err,
                         size_t errlen) {
    unsigned char *p = buf;

    *got = 0;
    while (*got < len) {
        size_t want = len - *got;
        unsigned step = want > (size_t)INT_MAX ? (unsigned)INT_MAX : (unsigned)want;
        int r = gzread(f->gz, p + *got, step);
        int zerr = Z_OK;
        const char *msg;

        if (r > 0) {
            *got += (size_t)r;
            continue;
        }
        if (r == 0)
            return TG_OK;
        msg = gzerror(f->gz, &zerr);
        /* Z_BUF_ERROR is zlib's "unexpected end of file": a cut stream. */
        if (zerr == Z_BUF_ERROR)
            return TG_OK;
        if (zerr == Z_ERRNO)
            return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: read failed: %s", f->path,
                               strerror(errno));
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: corrupt gzip stream (%s)", f->path,
                           msg ? msg : "zlib error");
    }
    return TG_OK;
}

static tg_status idx_close(struct idx_file *f, tg_status st, char *err, size_t errlen) {
    int r;

    if (!f->gz)
        return st;
    r = gzclose(f->gz);
    f->gz = NULL;
    if (st != TG_OK || r == Z_OK)
        return st;
    /* gzclose reports a stream that ended inside a gzip member. */
    if (r == Z_BUF_ERROR)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: gzip stream is truncated", f->path);
    return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: closing failed (zlib error %d)", f->path, r);
}

/*
 * Opens an IDX file and checks its header against the magic and rank
 * expected: `what` describes the expected content for the message.
 */
static tg_status idx_open(struct idx_file *f, const char *path, uint32_t magic, int ndim,
                          const char *what, char *err, size_t errlen) {
    unsigned char hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndim, got;
    uint32_t m;
    tg_status st;

    memset(f, 0, sizeof *f);
    f->path = path;
    errno = 0;
    f->gz = gzopen(path, "rb");
    if (!f->gz)
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot open: %s", path,
                           errno ? strerror(errno) : "out of memory");
    if (gzbuffer(f->gz, 1u << 17) != 0)
        return idx_close(f, tg__ds_fail(TG_ERR_IO, err, errlen, "%s: gzbuffer failed", path), err,
                         errlen);
    st = gz_read(f, hdr, hlen, &got, err, errlen);
    if (st)
        return idx_close(f, st, err, errlen);
    /* zlib reads a file without a gzip header "transparently"; IDX data must
     * arrive compressed, so a direct file is the wrong file. */
    if (gzdirect(f->gz))
        return idx_close(f,
                         tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                     "%s: not a gzip file (expected gzip-compressed IDX %s)", path,
                                     what),
                         err, errlen);
    if (got < 4)
        return idx_close(f,
                         tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                     "%s: short header: %zu bytes, expected an IDX magic of 4",
                                     path, got),
                         err, errlen);
    m = be32(hdr);
    if (m != magic)
        return idx_close(f,
                         tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                     "%s: bad IDX magic 0x%08x, expected 0x%08x (%s)%s", path, m,
                                     magic, what,
                                     m == IDX_MAGIC_LABELS   ? "; this looks like a labels file"
                                     : m == IDX_MAGIC_IMAGES ? "; this looks like an images file"
                                                             : ""),
                         err, errlen);
    if (got < hlen)
        return idx_close(f,
                         tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                     "%s: short header: %zu bytes, expected %zu (%s)", path, got,
                                     hlen, what),
                         err, errlen);
    f->body = 1;
    for (int i = 0; i < ndim; i++) {
        f->dims[i] = be32(hdr + 4 + 4 * i);
        if (f->dims[i] == 0)
            return idx_close(f,
                             tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                         "%s: header has a zero dimension (%s)", path, what),
                             err, errlen);
        f->body *= f->dims[i];
    }
    return TG_OK;
}

/* After the body: anything left means the header lied or the file is not
 * what it claims, which is worth refusing rather than silently dropping. */
static tg_status idx_finish(struct idx_file *f, char *err, size_t errlen) {
    unsigned char extra;
    size_t got;
    tg_status st = gz_read(f, &extra, 1, &got, err, errlen);

    if (st == TG_OK && got)
        st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: data continues past the %lld body bytes its header announces",
                         f->path, (long long)f->body);
    return idx_close(f, st, err, errlen);
}

static tg_status read_labels(const char *path, uint8_t **labels, int64_t *n, char *err,
                             size_t errlen) {
    struct idx_file f;
    size_t got;
    tg_status st;

    st = idx_open(&f, path, IDX_MAGIC_LABELS, 1, "u8 labels, dims N", err, errlen);
    if (st)
        return st;
    *n = f.dims[0];
    *labels = malloc((size_t)*n);
    if (!*labels)
        return idx_close(&f,
                         tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for %lld labels",
                                     path, (long long)*n),
                         err, errlen);
    st = gz_read(&f, *labels, (size_t)*n, &got, err, errlen);
    if (st == TG_OK && got < (size_t)*n)
        st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: short body: header says %lld labels but only %zu follow the header",
                         path, (long long)*n, got);
    st = st ? idx_close(&f, st, err, errlen) : idx_finish(&f, err, errlen);
    if (st) {
        free(*labels);
        *labels = NULL;
    }
    return st;
}

static tg_status h5_err(const struct idx_out *o, const char *what, char *err, size_t errlen) {
    char detail[256];

    return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: %s failed (HDF5: %s)", o->path, what,
                       tg__ds_h5_detail(detail, sizeof detail));
}

/*
 * Opens the output: an existing HDF5 file in place, or a new file under a
 * temporary name. A partial group from an earlier failed run is removed.
 */
static tg_status out_open(struct idx_out *o, char *err, size_t errlen) {
    struct stat sb;
    size_t len;

    /* Kept open until out_close: closing it between a failed H5Fopen and
     * the message would clear the error stack the message quotes. */
    o->fapl = tg__ds_fapl(false);
    if (o->fapl < 0)
        return h5_err(o, "setting up file access", err, errlen);
    if (stat(o->path, &sb) == 0) {
        if (tg__ds_is_hdf5(o->path) <= 0)
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: exists and is not an HDF5 file; refusing to overwrite it",
                               o->path);
        o->existed = true;
        o->file = H5Fopen(o->path, H5F_ACC_RDWR, o->fapl);
        if (o->file < 0)
            return h5_err(o, "opening for writing", err, errlen);
        if (H5Lexists(o->file, o->tmp_group, H5P_DEFAULT) > 0 &&
            H5Ldelete(o->file, o->tmp_group, H5P_DEFAULT) < 0)
            return h5_err(o, "removing a partial split", err, errlen);
        return TG_OK;
    }
    if (errno != ENOENT)
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot stat: %s", o->path, strerror(errno));
    len = strlen(o->path) + 32;
    o->tmp_path = malloc(len);
    if (!o->tmp_path)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", o->path);
    snprintf(o->tmp_path, len, "%s.tmp%ld", o->path, (long)getpid());
    o->file = H5Fcreate(o->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, o->fapl);
    if (o->file < 0)
        return h5_err(o, "creating the file", err, errlen);
    return TG_OK;
}

/* Publishes the finished split: swap the group in, close, rename a new file
 * into place. On failure everything written is taken back. */
static tg_status out_close(struct idx_out *o, tg_status st, char *err, size_t errlen) {
    if (st == TG_OK) {
        if (H5Lexists(o->file, o->split, H5P_DEFAULT) > 0 &&
            H5Ldelete(o->file, o->split, H5P_DEFAULT) < 0)
            st = h5_err(o, "removing the old split", err, errlen);
        else if (H5Lmove(o->file, o->tmp_group, o->file, o->split, H5P_DEFAULT, H5P_DEFAULT) < 0)
            st = h5_err(o, "naming the split", err, errlen);
    }
    if (st != TG_OK && o->existed && o->file >= 0)
        (void)H5Ldelete(o->file, o->tmp_group, H5P_DEFAULT);
    /* Closing flushes everything written: its failure is a write failure. */
    if (o->file >= 0 && H5Fclose(o->file) < 0 && st == TG_OK)
        st = h5_err(o, "closing the file", err, errlen);
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

static tg_status write_attr(const struct idx_out *o, hid_t grp, const char *name, hid_t ftype,
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
        return h5_err(o, what, err, errlen);
    }
    return TG_OK;
}

/* Creates a chunked dataset, optionally deflated. */
static hid_t make_dataset(hid_t grp, const char *name, int rank, const hsize_t *dims,
                          const hsize_t *chunk, int level) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t d = -1;

    if (sp >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
        (level <= 0 || H5Pset_deflate(dcpl, (unsigned)level) >= 0))
        d = H5Dcreate2(grp, name, H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl >= 0)
        (void)H5Pclose(dcpl);
    if (sp >= 0)
        (void)H5Sclose(sp);
    return d;
}

struct pixel_stats {
    uint64_t sum;
    uint64_t sumsq;
};

/* Streams the image body into x one chunk of samples at a time. */
static tg_status write_images(struct idx_file *im, const struct idx_out *o, hid_t x, int64_t chunk,
                              struct pixel_stats *ps, char *err, size_t errlen) {
    int64_t n = im->dims[0], per = (int64_t)im->dims[1] * im->dims[2];
    hsize_t start[4] = {0}, count[4] = {0, 1, im->dims[1], im->dims[2]};
    unsigned char *buf = malloc((size_t)(chunk * per));
    tg_status st = TG_OK;

    if (!buf)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", im->path);
    for (int64_t i = 0; i < n && st == TG_OK; i += chunk) {
        int64_t m = n - i < chunk ? n - i : chunk;
        size_t got;
        hid_t ms, fs;
        herr_t w = -1;

        st = gz_read(im, buf, (size_t)(m * per), &got, err, errlen);
        if (st)
            break;
        if (got < (size_t)(m * per)) {
            st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                             "%s: short body: header says %lld images of %ux%u (%lld bytes) but "
                             "only %lld bytes follow the header",
                             im->path, (long long)n, im->dims[1], im->dims[2], (long long)im->body,
                             (long long)(i * per + (int64_t)got));
            break;
        }
        for (int64_t k = 0; k < m * per; k++) {
            ps->sum += buf[k];
            ps->sumsq += (uint64_t)buf[k] * buf[k];
        }
        start[0] = (hsize_t)i;
        count[0] = (hsize_t)m;
        ms = H5Screate_simple(4, count, NULL);
        fs = H5Dget_space(x);
        if (ms >= 0 && fs >= 0 &&
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
            w = H5Dwrite(x, H5T_NATIVE_UCHAR, ms, fs, H5P_DEFAULT, buf);
        if (fs >= 0)
            (void)H5Sclose(fs);
        if (ms >= 0)
            (void)H5Sclose(ms);
        if (w < 0)
            st = h5_err(o, "writing x", err, errlen);
    }
    free(buf);
    return st;
}

/* Writes x, y and the attributes into the temporary group. */
/* A split other than train is normalised as train was, when the file already
 * holds a train split: a model must see test data the way it saw its
 * training data, and statistics of the test split itself would leak it into
 * the preprocessing. Returns true (with mean and sd set) when it applies. */
static bool train_norm(const struct idx_out *o, double *mean, double *sd) {
    if (strcmp(o->split, "/train") == 0 || H5Lexists(o->file, "/train", H5P_DEFAULT) <= 0)
        return false;
    hid_t g = H5Gopen2(o->file, "/train", H5P_DEFAULT);
    if (g < 0)
        return false;
    double v[2];
    const char *names[2] = {TG__ATTR_MEAN, TG__ATTR_STD};
    bool ok = true;
    for (int i = 0; i < 2 && ok; i++) {
        hid_t a = H5Aexists(g, names[i]) > 0 ? H5Aopen(g, names[i], H5P_DEFAULT) : -1;
        ok = a >= 0 && H5Aread(a, H5T_NATIVE_DOUBLE, &v[i]) >= 0;
        if (a >= 0)
            H5Aclose(a);
    }
    H5Gclose(g);
    if (!ok || !(v[1] > 0))
        return false;
    *mean = v[0];
    *sd = v[1];
    return true;
}

static tg_status write_split(struct idx_file *im, const uint8_t *labels, const struct idx_out *o,
                             const tg_idx_options *opts, char *err, size_t errlen) {
    int64_t n = im->dims[0], chunk = opts->chunk_samples;
    hsize_t xd[4] = {(hsize_t)n, 1, im->dims[1], im->dims[2]};
    hsize_t xc[4] = {0, 1, im->dims[1], im->dims[2]}, yd[1] = {(hsize_t)n}, yc[1];
    struct pixel_stats ps = {0, 0};
    hid_t grp, x = -1, y = -1;
    tg_status st = TG_OK;
    int32_t ncls = 10;
    double scale = 1.0 / 255.0, mean, var, sd;

    if (chunk > n)
        chunk = n;
    /* HDF5 refuses chunks of 4 GiB or more. */
    while (chunk > 1 && chunk * (int64_t)im->dims[1] * im->dims[2] >= ((int64_t)1 << 32))
        chunk /= 2;
    xc[0] = (hsize_t)chunk;
    yc[0] = (hsize_t)(chunk * IDX_LABEL_CHUNK_FACTOR < n ? chunk * IDX_LABEL_CHUNK_FACTOR : n);
    for (int64_t i = 0; i < n; i++)
        if (labels[i] >= ncls)
            ncls = labels[i] + 1;

    grp = H5Gcreate2(o->file, o->tmp_group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (grp < 0)
        return h5_err(o, "creating the split group", err, errlen);
    x = make_dataset(grp, "x", 4, xd, xc, opts->deflate_level);
    y = make_dataset(grp, "y", 1, yd, yc, opts->deflate_level);
    if (x < 0 || y < 0)
        st = h5_err(o, "creating x and y", err, errlen);
    else if (H5Dwrite(y, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels) < 0)
        st = h5_err(o, "writing y", err, errlen);
    if (st == TG_OK)
        st = write_images(im, o, x, chunk, &ps, err, errlen);
    if (st == TG_OK)
        st = idx_finish(im, err, errlen);
    if (st == TG_OK) {
        /* Population statistics of x*scale: exact integer sums, then the
         * variance as E[v^2] - E[v]^2, which is well conditioned for pixels. */
        double cnt = (double)n * im->dims[1] * im->dims[2];
        mean = (double)ps.sum / cnt;
        var = (double)ps.sumsq / cnt - mean * mean;
        sd = var > 0 ? sqrt(var) * scale : 0.0;
        mean *= scale;
        /* Constant pixels would divide by zero at read time. */
        if (!(sd > 0))
            sd = 1.0;
        train_norm(o, &mean, &sd);
        st = write_attr(o, grp, TG__ATTR_NUM_CLASSES, H5T_STD_I32LE, H5T_NATIVE_INT32, &ncls, err,
                        errlen);
        if (st == TG_OK)
            st = write_attr(o, grp, TG__ATTR_SCALE, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &scale, err,
                            errlen);
        if (st == TG_OK)
            st = write_attr(o, grp, TG__ATTR_MEAN, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &mean, err,
                            errlen);
        if (st == TG_OK)
            st = write_attr(o, grp, TG__ATTR_STD, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &sd, err,
                            errlen);
    }
    if (x >= 0 && H5Dclose(x) < 0 && st == TG_OK)
        st = h5_err(o, "closing x", err, errlen);
    if (y >= 0 && H5Dclose(y) < 0 && st == TG_OK)
        st = h5_err(o, "closing y", err, errlen);
    if (H5Gclose(grp) < 0 && st == TG_OK)
        st = h5_err(o, "closing the split group", err, errlen);
    return st;
}

static tg_status check_split_name(const char *split, struct idx_out *o, char *err, size_t errlen) {
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

tg_status tg_idx_convert_opts(const char *images_gz, const char *labels_gz, const char *out_h5,
                              const char *split, const tg_idx_options *opts, char *err,
                              size_t errlen) {
    tg_idx_options o_ = {IDX_DEFAULT_CHUNK, 0};
    struct idx_out out = {.path = out_h5, .file = -1, .fapl = -1};
    struct idx_file im = {0};
    uint8_t *labels = NULL;
    int64_t nlab = 0;
    tg_status st;

    if (!images_gz || !labels_gz || !out_h5 || !split || !*out_h5)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_idx_convert: images, labels, output and split must be given");
    if (opts) {
        o_ = *opts;
        if (o_.chunk_samples <= 0)
            o_.chunk_samples = IDX_DEFAULT_CHUNK;
        if (o_.deflate_level < 0 || o_.deflate_level > 9)
            return tg__ds_fail(TG_ERR_INVALID, err, errlen, "%s: deflate level %d is outside 0..9",
                               out_h5, o_.deflate_level);
    }
    st = check_split_name(split, &out, err, errlen);
    if (st)
        return st;
    tg__ds_h5_quiet();
    st = read_labels(labels_gz, &labels, &nlab, err, errlen);
    if (st)
        return st;
    st = idx_open(&im, images_gz, IDX_MAGIC_IMAGES, 3, "u8 images, dims N x rows x cols", err,
                  errlen);
    if (st == TG_OK && (int64_t)im.dims[0] != nlab)
        st = idx_close(&im,
                       tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                   "%s has %lld labels but %s has %lld images", labels_gz,
                                   (long long)nlab, images_gz, (long long)im.dims[0]),
                       err, errlen);
    if (st == TG_OK) {
        st = out_open(&out, err, errlen);
        if (st == TG_OK)
            st = write_split(&im, labels, &out, &o_, err, errlen);
        st = out_close(&out, st, err, errlen);
        st = idx_close(&im, st, err, errlen);
    }
    free(labels);
    return st;
}

tg_status tg_idx_convert(const char *images_gz, const char *labels_gz, const char *out_h5,
                         const char *split, char *err, size_t errlen) {
    return tg_idx_convert_opts(images_gz, labels_gz, out_h5, split, NULL, err, errlen);
}
