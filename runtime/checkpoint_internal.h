/*
 * checkpoint_internal.h: what the two checkpoint files share, and the
 * failure-injection hook the tests use.
 *
 * checkpoint_file.c knows the HDF5 layout of one checkpoint file (writing,
 * opening, reading, verifying); checkpoint_load.c loads one into the
 * caller's tensors and describes one; checkpoint.c knows the folder
 * (temporary names, fsync, rename, `latest`, pruning, choosing a file to
 * resume from). Not part of the public API.
 */
#ifndef TG_CHECKPOINT_INTERNAL_H
#define TG_CHECKPOINT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <hdf5.h>

#include "tapegrad/checkpoint.h"

/* Size of the message buffers the internals fill; the context holds 512. */
#define TG__CK_ERRLEN 512

/*
 * The points at which a save can fail, in the order it reaches them. The
 * fault hook is asked at each; the tests make each one fail in turn and check
 * that the previous checkpoint survives.
 */
typedef enum tg__ck_stage {
    TG__CK_CREATED = 0,   /* the temporary file exists, nothing written yet */
    TG__CK_TENSOR,        /* before tensor `index` is written */
    TG__CK_FSYNC,         /* the temporary is written, before its fsync */
    TG__CK_RENAME,        /* before the temporary is renamed to ckpt-<step>.h5 */
    TG__CK_DIRSYNC,       /* renamed, before the folder's fsync */
    TG__CK_LATEST,        /* before the temporary `latest` is written */
    TG__CK_LATEST_RENAME, /* the temporary `latest` is durable, before its rename */
    TG__CK_PRUNE,         /* `latest` is updated, before old checkpoints go */
    TG__CK_STAGE_COUNT
} tg__ck_stage;

/*
 * Test-only fault injection: when set, it is called at each stage (index is
 * the tensor's position for TG__CK_TENSOR, else 0) and a true return makes
 * the save fail there as an I/O error would. This is the one mutable global
 * of the module; production code never sets it, so it stays NULL.
 */
extern bool (*tg__ckpt_fault)(tg__ck_stage stage, int index);

/* A static name for a stage ("after creating the file", ...). */
const char *tg__ck_stage_name(tg__ck_stage stage);

/* Returns true (and writes an I/O error for `path` into err) when the hook
 * asks this stage to fail. */
bool tg__ck_fault(tg__ck_stage stage, int index, const char *path, char *err, size_t errlen);

/* printf into err (always NUL-terminated, truncated to fit); returns st. */
tg_status tg__ck_fail(tg_status st, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Checks that n tensors are non-NULL with unique, non-empty names that hold
 * no '/' and are not "."; `what` names the caller in the message. */
tg_status tg__ck_check_tensors(const char *what, int n, tg_tensor *const *ts, char *err,
                               size_t errlen);

/* Writes the checkpoint file at `path` (created or truncated) and fsyncs
 * it. The file is built in memory first, so a save holds its whole image in
 * memory, twice at the peak. On failure the file may be left half-written:
 * the caller removes it. */
tg_status tg__ck_write(tg_ctx *ctx, const char *path, const tg_ckpt_meta *meta, int n,
                       tg_tensor *const *ts, char *err, size_t errlen);

/* tg_ckpt_verify() with the message in err instead of the context. */
tg_status tg__ck_verify(const char *path, char *err, size_t errlen);

/* ---- one open checkpoint file (checkpoint_file.c) ---- */

/* An open checkpoint: the file and its /tensors group. */
typedef struct tg__ckfile {
    const char *path;
    hid_t file;
    hid_t tensors;
    int64_t num_tensors;
} tg__ckfile;

/* One tensor as the file describes it. */
typedef struct tg__ckent {
    char *name;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int dtype; /* a tg_dtype, or -1 for a type tapegrad does not use */
    char tname[24];
    uint32_t crc;
    size_t nbytes;
} tg__ckent;

/* Opens the file at `path` and reads and checks its metadata into m
 * (m->config is heap memory the caller frees with tg_ckpt_meta_free(), also
 * on failure). */
tg_status tg__ck_open(const char *path, tg__ckfile *f, tg_ckpt_meta *m, char *err, size_t errlen);
void tg__ck_close(tg__ckfile *f);
/* Lists the datasets under /tensors in the order they were saved; *out is
 * heap memory for tg__ck_free_entries(). */
tg_status tg__ck_entries(const tg__ckfile *f, tg__ckent **out, int *count, char *err,
                         size_t errlen);
void tg__ck_free_entries(tg__ckent *e, int n);
/* Reads one tensor's bytes (e->nbytes) into buf and checks both checksums. */
tg_status tg__ck_read(const tg__ckfile *f, const tg__ckent *e, void *buf, char *err, size_t errlen);
/* "(2, 3)", "(4,)", "()" into buf; returns buf. */
const char *tg__ck_shape_str(int ndim, const int64_t *shape, char *buf, size_t len);

#endif
