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

#include <zlib.h>

#include "datasets_internal.h"

#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_DEFAULT_CHUNK 1024
/* Labels are tiny; bigger chunks keep the chunk index small. */
#define IDX_LABEL_CHUNK_FACTOR 64
/* Deflate expands at most about 1032:1: a header announcing more body than
 * that times the compressed file is damaged, and is refused before any
 * allocation or read. */
#define IDX_MAX_GZIP_RATIO 1032
/* Labels are read in blocks of this many, the buffer growing as data
 * arrives, so memory follows the body actually present. */
#define IDX_LABEL_BLOCK ((size_t)1 << 20)

struct idx_file {
    gzFile gz;
    const char *path;
    uint32_t dims[3];
    int64_t body; /* body bytes the header announces */
    const tg_idx_options *opts;
};

static bool stop_asked(const struct idx_file *f) {
    return f->opts && f->opts->stop && f->opts->stop(f->opts->stop_user);
}

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
                          const char *what, const tg_idx_options *opts, char *err,
                          size_t errlen) {
    static const char *const field[2][3] = {{"items", "", ""}, {"images", "rows", "cols"}};
    unsigned char hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndim, got;
    uint64_t body = 1, cap;
    struct stat sb;
    uint32_t m;
    tg_status st;

    memset(f, 0, sizeof *f);
    f->path = path;
    f->opts = opts;
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
    for (int i = 0; i < ndim; i++) {
        f->dims[i] = be32(hdr + 4 + 4 * i);
        if (f->dims[i] == 0)
            return idx_close(f,
                             tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                         "%s: header has a zero dimension (%s)", path, what),
                             err, errlen);
        body *= f->dims[i]; /* three 32-bit factors: at most 2^96, see below */
    }
    /* The reader's bound on a sample, so that what is written reads. */
    if (ndim == 3 &&
        (uint64_t)f->dims[1] * f->dims[2] > (uint64_t)TG_DATASET_MAX_SAMPLE_NUMEL)
        return idx_close(f,
                         tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                     "%s: header says images of %u rows x %u cols (%llu pixels "
                                     "each); at most %lld pixels per image are supported "
                                     "(damaged header?)",
                                     path, f->dims[1], f->dims[2],
                                     (unsigned long long)f->dims[1] * f->dims[2],
                                     (long long)TG_DATASET_MAX_SAMPLE_NUMEL),
                         err, errlen);
    if (ndim == 3 && __builtin_mul_overflow((uint64_t)f->dims[0],
                                            (uint64_t)f->dims[1] * f->dims[2], &body))
        body = UINT64_MAX;
    if (stat(path, &sb) != 0 ||
        __builtin_mul_overflow((uint64_t)sb.st_size, (uint64_t)IDX_MAX_GZIP_RATIO, &cap))
        cap = UINT64_MAX;
    if (body > cap || body > (uint64_t)INT64_MAX) {
        char dims[96];
        int k = ndim == 1 ? 0 : 1;
        if (ndim == 1)
            snprintf(dims, sizeof dims, "%s %u", field[k][0], f->dims[0]);
        else
            snprintf(dims, sizeof dims, "%s %u, %s %u, %s %u", field[k][0], f->dims[0],
                     field[k][1], f->dims[1], field[k][2], f->dims[2]);
        return idx_close(f,
                         tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                     "%s: header says %s (%llu body bytes) but the file has only "
                                     "%lld compressed bytes, which gzip expands at most %d "
                                     "times: the header is damaged",
                                     path, dims, (unsigned long long)body, (long long)sb.st_size,
                                     IDX_MAX_GZIP_RATIO),
                         err, errlen);
    }
    f->body = (int64_t)body;
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

static tg_status read_labels(const char *path, const tg_idx_options *opts, uint8_t **labels,
                             int64_t *n, char *err, size_t errlen) {
    struct idx_file f;
    size_t got = 0, cap = 0;
    tg_status st;

    *labels = NULL;
    st = idx_open(&f, path, IDX_MAGIC_LABELS, 1, "u8 labels, dims N", opts, err, errlen);
    if (st)
        return st;
    *n = f.dims[0];
    /* The buffer grows with the data read, not with the header's count. */
    while (st == TG_OK && got < (size_t)*n) {
        size_t want = (size_t)*n - got < IDX_LABEL_BLOCK ? (size_t)*n - got : IDX_LABEL_BLOCK;
        size_t step;

        if (stop_asked(&f)) {
            st = tg__ds_fail(TG_ERR_STOPPED, err, errlen, "%s: reading the labels stopped by "
                             "request", path);
            break;
        }
        if (got + want > cap) {
            size_t nc = cap ? cap * 2 : IDX_LABEL_BLOCK;
            uint8_t *p;
            if (nc > (size_t)*n)
                nc = (size_t)*n;
            p = realloc(*labels, nc);
            if (!p) {
                st = tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for %lld labels",
                                 path, (long long)*n);
                break;
            }
            *labels = p;
            cap = nc;
        }
        st = gz_read(&f, *labels + got, want, &step, err, errlen);
        got += step;
        if (st == TG_OK && step < want)
            break;
    }
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

struct pixel_stats {
    uint64_t sum;
    uint64_t sumsq;
};

/* Streams the image body into x one chunk of samples at a time. */
static tg_status write_images(struct idx_file *im, const struct tg__ds_out *o, hid_t x,
                              const hsize_t *xd, int64_t chunk, struct pixel_stats *ps, char *err,
                              size_t errlen) {
    int64_t n = im->dims[0], per = (int64_t)im->dims[1] * im->dims[2];
    unsigned char *buf = malloc((size_t)(chunk * per));
    tg_status st = TG_OK;

    if (!buf)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen,
                           "%s: no memory for a chunk of %lld images of %ux%u", im->path,
                           (long long)chunk, im->dims[1], im->dims[2]);
    for (int64_t i = 0; i < n && st == TG_OK; i += chunk) {
        int64_t m = n - i < chunk ? n - i : chunk;
        size_t got;

        if (stop_asked(im)) {
            st = tg__ds_fail(TG_ERR_STOPPED, err, errlen,
                             "%s: converting the images stopped by request", im->path);
            break;
        }
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
        if (tg__ds_out_rows(x, H5T_NATIVE_UCHAR, 4, xd, i, m, buf) < 0)
            st = tg__ds_out_err(o, "writing x", err, errlen);
    }
    free(buf);
    return st;
}

/* Writes x, y and the attributes into the temporary group. */
static tg_status write_split(struct idx_file *im, const uint8_t *labels, const struct tg__ds_out *o,
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
        return tg__ds_out_err(o, "creating the split group", err, errlen);
    x = tg__ds_out_dataset(grp, "x", H5T_STD_U8LE, 4, xd, xc, opts->deflate_level);
    y = tg__ds_out_dataset(grp, "y", H5T_STD_U8LE, 1, yd, yc, opts->deflate_level);
    if (x < 0 || y < 0)
        st = tg__ds_out_err(o, "creating x and y", err, errlen);
    else if (H5Dwrite(y, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels) < 0)
        st = tg__ds_out_err(o, "writing y", err, errlen);
    if (st == TG_OK)
        st = write_images(im, o, x, xd, chunk, &ps, err, errlen);
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
        /* Beside a train split, train's statistics instead (h5out.c). */
        (void)tg__ds_out_train_norm(o, &mean, &sd);
        st = tg__ds_out_norm_attrs(o, grp, ncls, scale, mean, sd, err, errlen);
    }
    return tg__ds_out_split_close(o, grp, x, y, st, err, errlen);
}

tg_status tg_idx_convert_opts(const char *images_gz, const char *labels_gz, const char *out_h5,
                              const char *split, const tg_idx_options *opts, char *err,
                              size_t errlen) {
    tg_idx_options o_ = {.chunk_samples = IDX_DEFAULT_CHUNK};
    struct tg__ds_out out;
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
    tg__ds_out_init(&out, out_h5);
    st = tg__ds_out_split_name(&out, split, err, errlen);
    if (st)
        return st;
    tg__ds_h5_quiet();
    st = read_labels(labels_gz, &o_, &labels, &nlab, err, errlen);
    if (st)
        return st;
    st = idx_open(&im, images_gz, IDX_MAGIC_IMAGES, 3, "u8 images, dims N x rows x cols", &o_,
                  err, errlen);
    if (st == TG_OK && (int64_t)im.dims[0] != nlab)
        st = idx_close(&im,
                       tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                   "%s has %lld labels but %s has %lld images", labels_gz,
                                   (long long)nlab, images_gz, (long long)im.dims[0]),
                       err, errlen);
    if (st == TG_OK) {
        st = tg__ds_out_open(&out, err, errlen);
        if (st == TG_OK)
            st = write_split(&im, labels, &out, &o_, err, errlen);
        st = tg__ds_out_close(&out, st, err, errlen);
        st = idx_close(&im, st, err, errlen);
    }
    free(labels);
    return st;
}

tg_status tg_idx_convert(const char *images_gz, const char *labels_gz, const char *out_h5,
                         const char *split, char *err, size_t errlen) {
    return tg_idx_convert_opts(images_gz, labels_gz, out_h5, split, NULL, err, errlen);
}
