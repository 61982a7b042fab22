/*
 * text_convert.c: text files into token splits (tg_text_convert).
 *
 * The files are read as bytes, concatenated in order, and tokenised: one
 * token per byte (vocabulary 256), or a GPT-2-style BPE (bpe.c). The last
 * val_fraction of the tokens becomes split "val", the rest "train", as
 * nanoGPT's prepare scripts cut a corpus: the validation text is a contiguous
 * stretch the model never trains on.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bpe_internal.h"
#include "datasets_internal.h"

/* Tokens per HDF5 chunk of a tokens dataset. */
#define TOKEN_CHUNK ((int64_t)1 << 16)
/* Bytes read from a text file at a time. */
#define READ_BLOCK ((size_t)1 << 20)

struct text_tokens {
    uint16_t *ids;
    int64_t n, cap;
    int64_t text_bytes;
};

static tg_status grow(struct text_tokens *t, int64_t need, char *err, size_t errlen) {
    int64_t cap = t->cap ? t->cap : 1 << 16;
    uint16_t *p;

    if (need <= t->cap)
        return TG_OK;
    while (cap < need)
        cap *= 2;
    p = realloc(t->ids, (size_t)cap * sizeof *p);
    if (!p)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "convert text: no memory for %lld tokens",
                           (long long)cap);
    t->ids = p;
    t->cap = cap;
    return TG_OK;
}

/* Reads one whole file into *buf (*len bytes). */
static tg_status read_file(const char *path, unsigned char **buf, int64_t *len, char *err,
                           size_t errlen) {
    struct stat sb;
    FILE *f;
    unsigned char *b;
    size_t got = 0;

    if (stat(path, &sb) != 0)
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: not a regular file, expected text", path);
    f = fopen(path, "rb");
    if (!f)
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot open: %s", path, strerror(errno));
    b = malloc((size_t)sb.st_size + 1);
    if (!b) {
        fclose(f);
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for %lld bytes", path,
                           (long long)sb.st_size);
    }
    while (got < (size_t)sb.st_size) {
        size_t want = (size_t)sb.st_size - got < READ_BLOCK ? (size_t)sb.st_size - got : READ_BLOCK;
        size_t r = fread(b + got, 1, want, f);
        got += r;
        if (r < want)
            break;
    }
    if (ferror(f) || got != (size_t)sb.st_size) {
        int e = errno;
        fclose(f);
        free(b);
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: read %zu of %lld bytes%s%s", path, got,
                           (long long)sb.st_size, e ? ": " : "", e ? strerror(e) : "");
    }
    fclose(f);
    *buf = b;
    *len = (int64_t)got;
    return TG_OK;
}

/* Appends the tokens of one file. */
static tg_status add_file(struct text_tokens *t, tg_bpe *bpe, const char *path, char *err,
                          size_t errlen) {
    unsigned char *buf = NULL;
    int64_t len = 0, m;
    tg_status st = read_file(path, &buf, &len, err, errlen);

    if (st == TG_OK)
        st = grow(t, t->n + len, err, errlen);
    if (st) {
        free(buf);
        return st;
    }
    if (bpe) {
        m = tg_bpe_encode(bpe, buf, len, t->ids + t->n);
        if (m < 0) {
            free(buf);
            return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory to encode %lld bytes",
                               path, (long long)len);
        }
    } else {
        for (int64_t i = 0; i < len; i++)
            t->ids[t->n + i] = buf[i];
        m = len;
    }
    free(buf);
    t->n += m;
    t->text_bytes += len;
    return TG_OK;
}

/* The text bytes that tokens [a, b) stand for. */
static double span_bytes(const struct text_tokens *t, tg_bpe *bpe, int64_t a, int64_t b) {
    double sum = 0;

    if (!bpe)
        return (double)(b - a);
    for (int64_t i = a; i < b; i++)
        sum += (double)tg__bpe_token_bytes(bpe, t->ids[i]);
    return sum;
}

/* Writes tokens [a, b) as split `split` of the output. */
static tg_status write_split(const struct text_tokens *t, tg_bpe *bpe, const char *out_h5,
                             const char *split, int64_t a, int64_t b, char *err, size_t errlen) {
    struct tg__ds_out o;
    int64_t n = b - a;
    hsize_t dims[1] = {(hsize_t)n}, chunk[1] = {(hsize_t)(n < TOKEN_CHUNK ? n : TOKEN_CHUNK)};
    int64_t vocab = bpe ? tg_bpe_vocab_size(bpe) : 256;
    double bpt = span_bytes(t, bpe, a, b) / (double)n;
    const char *kind = bpe ? "bpe" : "bytes";
    hid_t grp = -1, d = -1, st_type = -1;
    tg_status st;

    tg__ds_out_init(&o, out_h5);
    st = tg__ds_out_split_name(&o, split, err, errlen);
    if (st)
        return st;
    st = tg__ds_out_open(&o, err, errlen);
    if (st == TG_OK) {
        grp = H5Gcreate2(o.file, o.tmp_group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (grp < 0)
            st = tg__ds_out_err(&o, "creating the split group", err, errlen);
    }
    if (st == TG_OK) {
        d = tg__ds_out_dataset(grp, "tokens", vocab <= 256 ? H5T_STD_U8LE : H5T_STD_U16LE, 1, dims,
                               chunk, 0);
        if (d < 0 || tg__ds_out_rows(d, H5T_NATIVE_UINT16, 1, dims, 0, n, t->ids + a) < 0)
            st = tg__ds_out_err(&o, "writing tokens", err, errlen);
    }
    if (st == TG_OK)
        st = tg__ds_out_attr(&o, grp, TG__ATTR_VOCAB_SIZE, H5T_STD_I64LE, H5T_NATIVE_INT64, &vocab,
                             err, errlen);
    if (st == TG_OK)
        st = tg__ds_out_attr(&o, grp, TG__ATTR_BYTES_PER_TOKEN, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE,
                             &bpt, err, errlen);
    if (st == TG_OK) {
        /* A fixed-length string: a variable-length one lives in the file's
         * global heap, which readers do not trust (datasets/h5tokens.c). */
        st_type = H5Tcopy(H5T_C_S1);
        if (st_type < 0 || H5Tset_size(st_type, strlen(kind) + 1) < 0)
            st = tg__ds_out_err(&o, "making a string type", err, errlen);
        else
            st = tg__ds_out_attr(&o, grp, TG__ATTR_TOKENIZER, st_type, st_type, kind, err, errlen);
    }
    if (st_type >= 0)
        (void)H5Tclose(st_type);
    if (grp >= 0)
        st = tg__ds_out_split_close(&o, grp, d, -1, st, err, errlen);
    else if (d >= 0)
        (void)H5Dclose(d);
    return tg__ds_out_close(&o, st, err, errlen);
}

tg_status tg_text_convert(const char *const *inputs, int nin, const char *out_h5,
                          const tg_text_options *opts, char *err, size_t errlen) {
    tg_text_options o = {0};
    struct text_tokens t = {0};
    tg_bpe *bpe = NULL;
    tg_status st = TG_OK;
    int64_t nval;

    if (opts)
        o = *opts;
    if (!inputs || nin < 1 || !out_h5 || !*out_h5)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "tg_text_convert: inputs and an output must be given");
    if (!(o.val_fraction >= 0 && o.val_fraction < 1))
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "convert text: val fraction %g is outside [0, 1)", o.val_fraction);
    if (!o.vocab_json != !o.merges_txt)
        return tg__ds_fail(TG_ERR_INVALID, err, errlen,
                           "convert text: a BPE needs both a vocab file and a merges file");
    tg__ds_h5_quiet();
    if (o.vocab_json)
        st = tg_bpe_load(o.vocab_json, o.merges_txt, &bpe, err, errlen);
    for (int i = 0; st == TG_OK && i < nin; i++) {
        if (o.stop && o.stop(o.stop_user))
            st = tg__ds_fail(TG_ERR_STOPPED, err, errlen, "convert text: stopped by request");
        else
            st = add_file(&t, bpe, inputs[i], err, errlen);
    }
    nval = (int64_t)floor(o.val_fraction * (double)t.n + 0.5);
    if (st == TG_OK && t.n == 0)
        st = tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: no text to convert (the input is empty)",
                         inputs[0]);
    /* A split needs two tokens: one window of one input and its target. */
    else if (st == TG_OK && (t.n - nval < 2 || (o.val_fraction > 0 && nval < 2)))
        st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                         "convert text: %lld tokens are too few for a val fraction of %g (a "
                         "split needs at least 2 tokens; train would get %lld, val %lld)",
                         (long long)t.n, o.val_fraction, (long long)(t.n - nval), (long long)nval);
    if (st == TG_OK)
        st = write_split(&t, bpe, out_h5, "train", 0, t.n - nval, err, errlen);
    if (st == TG_OK && nval > 0)
        st = write_split(&t, bpe, out_h5, "val", t.n - nval, t.n, err, errlen);
    free(t.ids);
    tg_bpe_free(bpe);
    return st;
}
