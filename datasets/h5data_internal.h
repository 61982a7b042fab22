/*
 * h5data_internal.h: the dataset handle shared by h5data.c (open and
 * validation) and h5data_read.c (reading samples). Private to datasets/.
 */
#ifndef TAPEGRAD_H5DATA_INTERNAL_H
#define TAPEGRAD_H5DATA_INTERNAL_H

#include "datasets_internal.h"

struct order {
    int64_t idx; /* sample index */
    int64_t pos; /* position in the caller's batch */
};

struct tg_dataset {
    char *path;
    char *split; /* "/train" */
    hid_t file, grp, x, y;
    hid_t xspace, yspace;
    int64_t n;
    int sample_ndim;
    int64_t sample_shape[TG_MAX_DIMS];
    int64_t sample_numel;
    size_t sample_bytes;
    tg_dtype xdtype;
    int64_t num_classes;
    double scale, mean, std; /* mean and std: channel 0's */
    /* Normalisation per channel (the first axis of a sample) when the
     * attributes are vectors, else nch = 1: mean_v/std_v (nch values) and
     * the u8 lookup table lut (nch x 256), each channel covering ch_numel
     * consecutive elements of a sample. */
    int64_t nch, ch_numel;
    double *mean_v, *std_v;
    float *lut;
    int64_t budget;
    int64_t file_bytes; /* the file's size on disk at open */
    bool (*stop)(void *user);
    void *stop_user;

    /* Regression: y is f32 (N,) or (N, K); tdim is K (1 for (N,)), 0 for
     * labels. t_cache holds all of y when it fits the budget; trow is
     * scratch for reading rows from the file. */
    int64_t tdim;
    float *t_cache;
    float *trow;
    int64_t *y_cache;
    unsigned char *x_cache;
    bool x_cache_tried;

    /* Token splits (docs/DATASETS.md): a 1-D `tokens` dataset (opened as
     * x) of ntok tokens; sample i is the window of block+1 tokens starting
     * at token i, so n = ntok - block. tok_cache holds all the tokens (as
     * u16) when they fit the budget; tok_win is one window of scratch. */
    bool tokens;
    int64_t ntok, block;
    double bytes_per_token;
    char tokenizer[32];
    uint16_t *tok_cache, *tok_win;

    /* Scratch for one batch, grown to the largest batch seen. */
    int64_t cap;
    struct order *order;
    unsigned char *raw;
    int64_t *ylab;
};

/* The most channels a vector mean or std may have. */
#define TG__H5D_MAX_NORM_CHANNELS 4096

bool tg__h5d_stop_asked(const tg_dataset *ds);
/* TG_ERR_STOPPED: "PATH: SPLIT: WHAT stopped by request". */
tg_status tg__h5d_stopped(const tg_dataset *ds, const char *what, char *err, size_t errlen);
/* st with "PATH: WHAT failed (HDF5: innermost detail)". */
tg_status tg__h5d_fail(const tg_dataset *ds, tg_status st, const char *what, char *err,
                       size_t errlen);
/* TG_ERR_FORMAT for label v of sample i outside [0, num_classes); `when`
 * is appended to the message. */
tg_status tg__h5d_label_range(const tg_dataset *ds, int64_t i, int64_t v, const char *when,
                              char *err, size_t errlen);

/* Checks every target of an f32 y for NaN and infinities (in blocks),
 * caching y when it fits the budget. */
tg_status tg__h5d_check_targets(tg_dataset *ds, char *err, size_t errlen);

/* Token splits (h5tokens.c): opens and checks the `tokens` dataset of
 * the open group (every token below vocab_size, read in blocks, cached
 * when it fits the budget) with windows of `block` tokens; reads windows. */
tg_status tg__h5d_open_tokens(tg_dataset *ds, int64_t block, char *err, size_t errlen);
tg_status tg__h5d_read_tokens(tg_dataset *ds, const int64_t *indices, int64_t n, float *x_out,
                              int64_t *y_out, char *err, size_t errlen);

#endif
