/*
 * datasets_internal.h: helpers shared by the files of the datasets module.
 *
 * Not installed and not part of the public API. Everything here is prefixed
 * tg__ because it has external linkage inside libtapegrad.
 */
#ifndef TAPEGRAD_DATASETS_INTERNAL_H
#define TAPEGRAD_DATASETS_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "tapegrad/datasets.h"

/*
 * Writes a printf-style message into err (when err is non-NULL and errlen > 0)
 * and returns st, so that a failing path reads `return tg__ds_fail(st, ...)`.
 * The message is truncated to fit; it is always NUL-terminated.
 */
tg_status tg__ds_fail(tg_status st, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Switches off HDF5's automatic printing of its error stack for the calling
 * thread. With the thread-safe HDF5 build the setting is per thread, so every
 * entry point calls this, including the loader's I/O thread.
 */
void tg__ds_h5_quiet(void);

/*
 * Copies the most specific description on the calling thread's HDF5 error
 * stack (the innermost entry, e.g. "truncated file: eof = ...") into buf, or
 * "no detail" when the stack is empty. Returns buf.
 */
const char *tg__ds_h5_detail(char *buf, size_t len);

/*
 * 1 when path holds an HDF5 signature, 0 when not, negative when it cannot
 * be checked (H5Fis_accessible from HDF5 1.12 on, H5Fis_hdf5 before).
 */
htri_t tg__ds_is_hdf5(const char *path);

/*
 * A file access property list for the module's files: HDF5's file locks are
 * used but tolerated where the file system has none (some parallel file
 * systems), and the raw-data sieve buffer is off when `nosieve` (reads ask
 * for whole samples, so the 64 KiB sieve around each would only over-read).
 * Returns a property list to close, or a negative id.
 */
hid_t tg__ds_fapl(bool nosieve);

/*
 * Names an HDF5 datatype the way the schema speaks of it ("u8", "i32",
 * "f64", "string", ...) into buf and returns buf.
 */
const char *tg__ds_type_name(hid_t type, char *buf, size_t len);

/* Classifies an HDF5 datatype: 1 for an unsigned 8-bit integer, 2 for a
 * 4-byte float, 3 for any other integer, 0 for anything else. */
enum {
    TG__H5_OTHER = 0,
    TG__H5_U8 = 1,
    TG__H5_F32 = 2,
    TG__H5_INT = 3
};
int tg__ds_type_kind(hid_t type);

/*
 * Formats dims as "60000x1x28x28" into buf and returns buf.
 */
const char *tg__ds_dims_str(const hsize_t *dims, int ndim, char *buf, size_t len);

/* The normalisation attributes as the schema defines them. */
#define TG__ATTR_NUM_CLASSES "num_classes"
#define TG__ATTR_SCALE "scale"
#define TG__ATTR_MEAN "mean"
#define TG__ATTR_STD "std"
/* The attributes of a token split. */
#define TG__ATTR_VOCAB_SIZE "vocab_size"
#define TG__ATTR_TOKENIZER "tokenizer"
#define TG__ATTR_BYTES_PER_TOKEN "bytes_per_token"

/*
 * Prepares the dataset for reads of up to n indices that allocate nothing:
 * grows the reusable scratch buffers and, when x is due to be cached whole,
 * loads it now. The loader calls it once at start.
 */
tg_status tg__ds_reserve(tg_dataset *ds, int64_t n, char *err, size_t errlen);

/* The normalised value of a stored 0 in channel c (the first axis of a
 * sample): what augmentation pads with. */
float tg__ds_zero_value(const tg_dataset *ds, int64_t c);

/* TG_ERR_INVALID unless a's flags and pad are valid and, when it does
 * anything, ds's samples are images (C, H, W) or (H, W); names the file and
 * split. */
tg_status tg__augment_check(const tg_augment *a, const tg_dataset *ds, char *err, size_t errlen);

/* ---------------------------------------------------------------------- */
/* Converter output (h5out.c)                                              */
/* ---------------------------------------------------------------------- */

/*
 * One split being written by a converter. tg__ds_out_init() and
 * tg__ds_out_split_name() prepare it, tg__ds_out_open() opens the file,
 * the converter fills the group o->tmp_group, and tg__ds_out_close()
 * publishes it or takes everything back.
 */
struct tg__ds_out {
    const char *path; /* as the caller named it, for messages */
    char *tmp_path;   /* non-NULL while a new file is written */
    char tmp_group[300];
    char split[256];
    hid_t file;
    hid_t fapl;
    bool existed;
};

/* Sets o up for the output file `path` (borrowed) with nothing open. */
void tg__ds_out_init(struct tg__ds_out *o, const char *path);

/*
 * Checks a split name ("train" or "/train": one top-level name) and sets
 * o->split and o->tmp_group from it; TG_ERR_INVALID names the bad name.
 */
tg_status tg__ds_out_split_name(struct tg__ds_out *o, const char *split, char *err, size_t errlen);

/* TG_ERR_IO with "PATH: WHAT failed (HDF5: innermost detail)". */
tg_status tg__ds_out_err(const struct tg__ds_out *o, const char *what, char *err, size_t errlen);

/*
 * Opens the output: an existing HDF5 file in place, or a new file under a
 * temporary name. A partial group from an earlier failed run is removed. An
 * existing file that is not HDF5 is refused (TG_ERR_FORMAT). Whatever it
 * returns, tg__ds_out_close() must follow.
 */
tg_status tg__ds_out_open(struct tg__ds_out *o, char *err, size_t errlen);

/*
 * Publishes the finished split when st is TG_OK: swaps the group in,
 * closes, renames a new file into place. On failure (st or its own)
 * everything written is taken back. Returns the first failure.
 */
tg_status tg__ds_out_close(struct tg__ds_out *o, tg_status st, char *err, size_t errlen);

/* Writes the scalar attribute `name` of file type ftype on grp from val
 * (memory type mtype). */
tg_status tg__ds_out_attr(const struct tg__ds_out *o, hid_t grp, const char *name, hid_t ftype,
                          hid_t mtype, const void *val, char *err, size_t errlen);

/* Writes the schema's four attributes num_classes, scale, mean and std. */
tg_status tg__ds_out_norm_attrs(const struct tg__ds_out *o, hid_t grp, int32_t num_classes,
                                double scale, double mean, double sd, char *err, size_t errlen);

/* Creates a chunked dataset of file type `type` in grp, deflated at
 * `level` when level > 0. Returns the dataset or a negative id. */
hid_t tg__ds_out_dataset(hid_t grp, const char *name, hid_t type, int rank, const hsize_t *dims,
                         const hsize_t *chunk, int level);

/* Writes rows [start, start+m) of dataset d, whose shape is dims (rank
 * dims, at most TG_MAX_DIMS), from buf of memory type mtype. */
herr_t tg__ds_out_rows(hid_t d, hid_t mtype, int rank, const hsize_t *dims, int64_t start,
                       int64_t m, const void *buf);

/* Closes x and y (when >= 0) and the split group grp; returns st, or the
 * first closing failure when st is TG_OK. */
tg_status tg__ds_out_split_close(const struct tg__ds_out *o, hid_t grp, hid_t x, hid_t y,
                                 tg_status st, char *err, size_t errlen);

/*
 * The normalisation rule of the converters: a split other than "train"
 * written into a file that already holds "/train" with a mean and a
 * positive std takes train's (into *mean and *sd, returning true); else it
 * returns false and leaves them alone. Needs o open.
 */
bool tg__ds_out_train_norm(const struct tg__ds_out *o, double *mean, double *sd);

/* The same for n channels: train's mean and std, each one number (given
 * to every channel) or n, into mean[n] and sd[n]; false (and nothing
 * written) when train has none or another length. */
bool tg__ds_out_train_norm_v(const struct tg__ds_out *o, double *mean, double *sd, int64_t n);

/* tg__ds_out_norm_attrs() with mean and std of n channels: scalars when n
 * is 1 (exactly as tg__ds_out_norm_attrs writes them), else vectors; no
 * num_classes when it is 0 (regression targets). */
tg_status tg__ds_out_norm_attrs_v(const struct tg__ds_out *o, hid_t grp, int32_t num_classes,
                                  double scale, const double *mean, const double *sd, int64_t n,
                                  char *err, size_t errlen);

#endif
