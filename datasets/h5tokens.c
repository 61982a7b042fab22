/*
 * h5tokens.c: token splits (a 1-D `tokens` dataset per split, written by
 * `tapegrad convert text`): opening and checking one, and reading windows
 * of it.
 *
 * A sample of a token split is a window: sample i is tokens [i, i+T] (T =
 * block, T+1 tokens). Its input is the first T tokens and its labels the
 * last T (the window shifted by one), so a batch of n windows gives n*T
 * inputs and n*T labels. The tokens are kept in memory (two bytes each)
 * when they fit the cache budget; otherwise each window is one hyperslab
 * read, so memory stays bounded by one window whatever the file's size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5data_internal.h"

/* Tokens are checked at open in blocks of this many. */
#define TOKEN_BLOCK ((int64_t)1 << 20)
/* Compressed data expands at most about 1032 times (see h5data.c). */
#define MAX_FILTER_RATIO 1032

/* Reads the optional scalar attribute `name` of the group as memory type
 * mtype (class cls) into val; *found tells whether it exists. */
static tg_status tok_attr(tg_dataset *ds, const char *name, H5T_class_t cls, hid_t mtype, void *val,
                          bool *found, char *err, size_t errlen) {
    htri_t ex = H5Aexists(ds->grp, name);
    hid_t a, t, sp;
    H5T_class_t c;
    hssize_t npts;
    herr_t r = -1;

    *found = false;
    if (ex < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "looking up an attribute", err, errlen);
    if (ex == 0)
        return TG_OK;
    a = H5Aopen(ds->grp, name, H5P_DEFAULT);
    if (a < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "opening an attribute", err, errlen);
    t = H5Aget_type(a);
    sp = H5Aget_space(a);
    c = t < 0 ? H5T_NO_CLASS : H5Tget_class(t);
    npts = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    bool fits = npts == 1 && (c == cls || (cls == H5T_FLOAT && c == H5T_INTEGER));
    if (fits && cls == H5T_STRING) {
        /* A variable-length string is not read: its bytes live in the
         * file's global heap, and HDF5 1.10 reading a damaged one can loop
         * for ever (found by fuzz_dataset; the input is in its corpus). The
         * attribute only names the tokenizer, for inspect, so such a file
         * (as `convert text` wrote them before, or h5py's str attributes)
         * opens and names it "unknown". */
        hid_t m = H5Tcopy(H5T_C_S1);
        bool vl = H5Tis_variable_str(t) != 0;
        if (vl) {
            snprintf(val, 32, "unknown");
            r = 0;
        } else if (m >= 0 && H5Tget_size(t) < 32 && H5Tset_size(m, 32) >= 0) {
            memset(val, 0, 32);
            r = H5Aread(a, m, val);
        }
        if (m >= 0)
            (void)H5Tclose(m);
    } else if (fits) {
        r = H5Aread(a, mtype, val);
    }
    if (sp >= 0)
        (void)H5Sclose(sp);
    if (t >= 0)
        (void)H5Tclose(t);
    (void)H5Aclose(a);
    if (r < 0)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen, "%s: %s attribute %s must be a single %s",
                           ds->path, ds->split, name,
                           cls == H5T_STRING    ? "string of under 32 bytes"
                           : cls == H5T_INTEGER ? "integer"
                                                : "number");
    *found = true;
    return TG_OK;
}

static tg_status tok_attrs(tg_dataset *ds, char *err, size_t errlen) {
    int64_t vocab = 0;
    bool found;
    tg_status st = tok_attr(ds, TG__ATTR_VOCAB_SIZE, H5T_INTEGER, H5T_NATIVE_INT64, &vocab, &found,
                            err, errlen);

    if (st)
        return st;
    if (!found || vocab < 2 || vocab > TG_DATASET_MAX_VOCAB)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s needs an integer attribute vocab_size in [2, %d]%s", ds->path,
                           ds->split, TG_DATASET_MAX_VOCAB, found ? "" : " (it has none)");
    ds->num_classes = vocab;
    ds->bytes_per_token = 1.0;
    st = tok_attr(ds, TG__ATTR_BYTES_PER_TOKEN, H5T_FLOAT, H5T_NATIVE_DOUBLE, &ds->bytes_per_token,
                  &found, err, errlen);
    if (st == TG_OK && !(ds->bytes_per_token > 0 && ds->bytes_per_token < 1e6))
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s attribute bytes_per_token is %g, expected a number > 0",
                           ds->path, ds->split, ds->bytes_per_token);
    snprintf(ds->tokenizer, sizeof ds->tokenizer, "bytes");
    if (st == TG_OK)
        st = tok_attr(ds, TG__ATTR_TOKENIZER, H5T_STRING, -1, ds->tokenizer, &found, err, errlen);
    return st;
}

/* Reads tokens [start, start+m) into dst (u16). */
static herr_t read_tokens(tg_dataset *ds, int64_t start, int64_t m, uint16_t *dst) {
    hsize_t off = (hsize_t)start, cnt = (hsize_t)m;
    hid_t ms = H5Screate_simple(1, &cnt, NULL);
    herr_t r = -1;

    if (ms >= 0 && H5Sselect_hyperslab(ds->xspace, H5S_SELECT_SET, &off, NULL, &cnt, NULL) >= 0)
        r = H5Dread(ds->x, H5T_NATIVE_UINT16, ms, ds->xspace, H5P_DEFAULT, dst);
    if (ms >= 0)
        (void)H5Sclose(ms);
    return r;
}

/* Every token below vocab_size, in blocks; keeps them all when they fit. */
static tg_status check_tokens(tg_dataset *ds, char *err, size_t errlen) {
    bool keep = ds->budget > 0 && (uint64_t)ds->ntok <= (uint64_t)ds->budget / 2;
    int64_t bl = keep ? ds->ntok : ds->ntok < TOKEN_BLOCK ? ds->ntok : TOKEN_BLOCK;
    uint16_t *buf = malloc((size_t)bl * sizeof *buf);

    if (!buf)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory to check %lld tokens",
                           ds->path, (long long)bl);
    for (int64_t i = 0; i < ds->ntok; i += bl) {
        int64_t m = ds->ntok - i < bl ? ds->ntok - i : bl;
        uint16_t *p = keep ? buf + i : buf;
        if (tg__h5d_stop_asked(ds)) {
            free(buf);
            return tg__h5d_stopped(ds, "checking the tokens", err, errlen);
        }
        if (read_tokens(ds, i, m, p) < 0) {
            free(buf);
            return tg__h5d_fail(ds, TG_ERR_IO, "reading the tokens", err, errlen);
        }
        for (int64_t k = 0; k < m; k++) {
            unsigned v = p[k];
            if (v < ds->num_classes)
                continue;
            free(buf);
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: %s/tokens[%lld] is %u, outside [0, vocab_size %lld)", ds->path,
                               ds->split, (long long)(i + k), v, (long long)ds->num_classes);
        }
    }
    if (keep)
        ds->tok_cache = buf;
    else
        free(buf);
    return TG_OK;
}

tg_status tg__h5d_open_tokens(tg_dataset *ds, int64_t block, char *err, size_t errlen) {
    hid_t t;
    int nd;
    hsize_t dims[H5S_MAX_RANK];
    char tn[32] = "unknown";
    bool ok;

    ds->x = H5Dopen2(ds->grp, "tokens", H5P_DEFAULT);
    if (ds->x < 0 || (ds->xspace = H5Dget_space(ds->x)) < 0)
        return tg__h5d_fail(ds, TG_ERR_IO, "opening tokens", err, errlen);
    t = H5Dget_type(ds->x);
    ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_NONE &&
         H5Tget_size(t) <= 2;
    size_t es = t >= 0 ? H5Tget_size(t) : 1;
    if (t >= 0) {
        tg__ds_type_name(t, tn, sizeof tn);
        (void)H5Tclose(t);
    }
    if (!ok)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s/tokens has dtype %s but expected u8 or u16", ds->path, ds->split,
                           tn);
    nd = H5Sget_simple_extent_ndims(ds->xspace);
    if (nd != 1 || H5Sget_simple_extent_dims(ds->xspace, dims, NULL) < 0)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s/tokens has rank %d but expected 1 (a sequence of tokens)",
                           ds->path, ds->split, nd);
    /* A header declaring more tokens than the file can hold is damaged. */
    if (dims[0] > (uint64_t)ds->file_bytes * MAX_FILTER_RATIO / es)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s/tokens declares %llu tokens but the file has only %lld bytes: "
                           "its header is damaged or its data is missing",
                           ds->path, ds->split, (unsigned long long)dims[0],
                           (long long)ds->file_bytes);
    ds->ntok = (int64_t)dims[0];
    ds->block = block > 0 ? block : TG_DATASET_DEFAULT_BLOCK;
    if (ds->block > TG_DATASET_MAX_SAMPLE_NUMEL || ds->ntok < ds->block + 1)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %s has %lld tokens, fewer than one window of block size %lld + 1",
                           ds->path, ds->split, (long long)ds->ntok, (long long)ds->block);
    ds->tokens = true;
    ds->n = ds->ntok - ds->block;
    ds->sample_ndim = 1;
    ds->sample_shape[0] = ds->block;
    ds->sample_numel = ds->block;
    ds->sample_bytes = (size_t)(ds->block + 1) * sizeof *ds->tok_win;
    ds->xdtype = es == 1 ? TG_U8 : TG_I32;
    ds->scale = ds->std = 1.0;
    ds->nch = 1;
    ds->mean_v = calloc(1, sizeof *ds->mean_v);
    ds->std_v = malloc(sizeof *ds->std_v);
    ds->tok_win = malloc(ds->sample_bytes);
    if (!ds->mean_v || !ds->std_v || !ds->tok_win)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", ds->path);
    ds->std_v[0] = 1.0;
    tg_status st = tok_attrs(ds, err, errlen);
    return st ? st : check_tokens(ds, err, errlen);
}

tg_status tg__h5d_read_tokens(tg_dataset *ds, const int64_t *indices, int64_t n, float *x_out,
                              int64_t *y_out, char *err, size_t errlen) {
    const int64_t T = ds->block;

    for (int64_t i = 0; i < n; i++) {
        const uint16_t *w = ds->tok_cache ? ds->tok_cache + indices[i] : ds->tok_win;
        if (!ds->tok_cache && read_tokens(ds, indices[i], T + 1, ds->tok_win) < 0)
            return tg__h5d_fail(ds, TG_ERR_IO, "reading a window of tokens", err, errlen);
        for (int64_t k = 0; k <= T; k++)
            if (w[k] >= ds->num_classes)
                return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                                   "%s: %s/tokens[%lld] is %u, outside [0, vocab_size %lld) (the "
                                   "file changed since it was opened)",
                                   ds->path, ds->split, (long long)(indices[i] + k), (unsigned)w[k],
                                   (long long)ds->num_classes);
        for (int64_t k = 0; k < T; k++) {
            if (x_out)
                x_out[i * T + k] = (float)w[k];
            if (y_out)
                y_out[i * T + k] = w[k + 1];
        }
    }
    return TG_OK;
}

int tg_dataset_has_split(const char *path, const char *split) {
    hid_t fapl, f;
    htri_t r = -1;

    if (!path || !split)
        return -1;
    while (*split == '/')
        split++;
    tg__ds_h5_quiet();
    if (tg__ds_is_hdf5(path) <= 0)
        return -1;
    fapl = tg__ds_fapl(true);
    f = fapl >= 0 ? H5Fopen(path, H5F_ACC_RDONLY, fapl) : -1;
    if (fapl >= 0)
        (void)H5Pclose(fapl);
    if (f >= 0 && *split && !strchr(split, '/'))
        r = H5Lexists(f, split, H5P_DEFAULT);
    if (f >= 0)
        (void)H5Fclose(f);
    (void)H5Eclear2(H5E_DEFAULT);
    return r < 0 ? -1 : r > 0;
}

bool tg_dataset_is_tokens(const tg_dataset *ds) { return ds->tokens; }
int64_t tg_dataset_block_size(const tg_dataset *ds) { return ds->tokens ? ds->block : 0; }
int64_t tg_dataset_num_tokens(const tg_dataset *ds) { return ds->tokens ? ds->ntok : 0; }
double tg_dataset_bytes_per_token(const tg_dataset *ds) {
    return ds->tokens ? ds->bytes_per_token : 0;
}
const char *tg_dataset_tokenizer(const tg_dataset *ds) { return ds->tokens ? ds->tokenizer : NULL; }
int64_t tg_dataset_labels_per_sample(const tg_dataset *ds) { return ds->tokens ? ds->block : 1; }
