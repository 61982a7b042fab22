/*
 * tapegrad/checkpoint.h: saving and resuming training state.
 *
 * A checkpoint is one HDF5 file written by rank 0 that holds a list of named
 * tensors (parameters, buffers, optimizer state) and the metadata a trainer
 * needs to continue exactly where it stopped (step, epoch, samples consumed,
 * RNG state, optimizer step count, the resolved configuration). Nothing in it
 * depends on the world size, so any number of ranks can resume from it: each
 * rank loads the same file, and the sampler continues from samples_consumed.
 * docs/CHECKPOINTS.md describes the file layout for h5dump and h5py users.
 *
 * Folder layout, as tg_ckpt_save() leaves it:
 *
 *     DIR/ckpt-00000100.h5    one file per saved step (the last `keep`)
 *     DIR/ckpt-00000200.h5
 *     DIR/latest              one line: "ckpt-00000200.h5"
 *
 * Saving is atomic and durable: the file is written under a temporary name
 * (DIR/.ckpt-00000200.h5.tmp), fsynced, renamed, the folder fsynced, and only
 * then is `latest` replaced the same way and older checkpoints deleted. A
 * failure at any point returns an error naming the file and leaves the
 * previous checkpoint and `latest` as they were, with no temporary behind.
 *
 * The file starts with a 512-byte tapegrad header (in HDF5's user block)
 * holding the file's length and a CRC-32 of the rest, which every reader
 * checks before HDF5 parses the file; every size HDF5 then reports is bounded
 * by the file's. Every dataset carries a CRC-32 of its bytes, and tensors of
 * one or more elements are also stored with HDF5's Fletcher-32 filter;
 * loading verifies both, so a flipped bit is reported, never loaded.
 *
 * Worked example: save every 100 steps, resume from whatever is there.
 *
 *     tg_tensor *ts[64];
 *     int n = ...;  // parameters, then tg_optim_state(opt, ts + np, 64 - np)
 *     char path[4096], warn[1024];
 *     tg_ckpt_meta m = {0};
 *     if (tg_ckpt_find(ctx, "runs/a", path, sizeof path, warn, sizeof warn) == TG_OK) {
 *         if (warn[0])
 *             fprintf(stderr, "warning: %s\n", warn);
 *         if (tg_ckpt_load(ctx, path, n, ts, &m) != TG_OK)
 *             goto fail;                  // tg_ctx_error(ctx) says why
 *         tg_optim_set_steps(opt, m.optim_steps);
 *         ... continue from m.step, m.samples_consumed, m.rng ...
 *         tg_ckpt_meta_free(&m);
 *     }
 *     ...
 *     tg_ckpt_meta s = {.step = step, .epoch = epoch, .samples_consumed = seen,
 *                       .rng = {rng.key, rng.counter}, .optim_steps = tg_optim_steps(opt),
 *                       .world_size = world, .model = "mlp", .config = cfg_text};
 *     if (tg_ckpt_save(ctx, "runs/a", &s, n, ts, 3, NULL, 0) != TG_OK)
 *         goto fail;
 *
 * Errors: every call returns a tg_status and sets the context's message
 * (tg_ctx_error), which names the file and what was expected, e.g.
 * "runs/a/ckpt-00000100.h5: tensor 'fc1.weight' is (128, 784) f32 in the file
 * but (256, 784) f32 in the model". Like every fallible call, these keep the
 * first pending error: clear it (tg_ctx_clear_error) before calling. The
 * statuses: TG_ERR_INVALID for bad arguments (a NULL pointer, a tensor name
 * that is empty, repeated or holds '/'); TG_ERR_IO for the file system
 * (missing file, unwritable folder, full disk, and "nothing to resume");
 * TG_ERR_FORMAT for a file that is not a valid checkpoint (not HDF5,
 * truncated, a failed checksum, missing metadata, a count or size out of
 * range); TG_ERR_UNSUPPORTED for a
 * checkpoint of a newer format version; TG_ERR_SHAPE / TG_ERR_DTYPE when the
 * file's tensors do not match the caller's (missing, extra, other shape or
 * dtype); TG_ERR_NOMEM. Nothing is printed.
 *
 * Threads: the calls are reentrant (HDF5 is the thread-safe build), but two
 * processes must not save into the same folder at once; only rank 0 saves.
 * Tensors may live on any device: data goes through tg_to_host() and
 * tg_copy_from_host().
 */
#ifndef TAPEGRAD_CHECKPOINT_H
#define TAPEGRAD_CHECKPOINT_H

#include "tapegrad/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The format this build writes; it reads every version up to this one. */
#define TG_CKPT_FORMAT_VERSION 1

/* The largest step, epoch, samples_consumed and optim_steps a checkpoint
 * holds (2^48): saving refuses larger ones, reading reports them as damage. */
#define TG_CKPT_COUNT_MAX ((int64_t)1 << 48)

/* Longest model name and version string kept, including the NUL. */
#define TG_CKPT_NAME_MAX 64

/*
 * What a checkpoint records besides its tensors. The caller fills it for
 * tg_ckpt_save() (format_version and version are ignored there: the writer
 * sets them); tg_ckpt_load() and tg_ckpt_read_meta() fill all of it.
 */
typedef struct tg_ckpt_meta {
    int32_t format_version;         /* set by the writer: TG_CKPT_FORMAT_VERSION */
    int64_t step;                   /* optimizer steps done; >= 0; names the file */
    int64_t epoch;                  /* the epoch in progress */
    int64_t samples_consumed;       /* global samples read so far (any world size) */
    uint64_t rng[2];                /* the trainer's RNG state: tg_rng key, counter */
    int64_t optim_steps;            /* tg_optim_steps() */
    int32_t world_size;             /* ranks at save time (informative only) */
    char model[TG_CKPT_NAME_MAX];   /* the model's name, e.g. "mlp" */
    char version[TG_CKPT_NAME_MAX]; /* set by the writer: TG_VERSION_STRING */
    /* The resolved configuration as text, any length (NULL saves ""). After
     * tg_ckpt_load()/tg_ckpt_read_meta() it is heap memory owned by this
     * struct: release it with tg_ckpt_meta_free(). */
    const char *config;
    /* The dataset the run trained on, optional (older checkpoints and a
     * data_path of NULL or "" record none): its absolute path, its size in
     * bytes and the SHA-256 of its bytes as 64 lowercase hex digits. Saved
     * as the root attributes data_path, data_bytes, data_sha256 and their
     * CRC-32 data_crc32. After a load, data_path is heap memory owned by
     * this struct (NULL when none is recorded). */
    const char *data_path;
    int64_t data_bytes;
    char data_sha256[65];
    /* The model file the model was built from (docs/MODELS.md), so that
     * eval, export and inspect rebuild it from the checkpoint alone, with one
     * sample's shape and the classes it was built for. NULL saves none (the
     * built-in model `model` then names it); a load gives NULL for a file
     * without one (written before model files) and heap memory otherwise,
     * released by tg_ckpt_meta_free(). */
    const char *model_text;
    /* One sample's sizes, padded with leading 1s to three; model_input_ndim
     * says how many are the sample's: 1 for vectors (D), stored (1, 1, D);
     * 3 (or 0, as older files read) for images (C, H, W). */
    int64_t model_input[3];
    int model_input_ndim;
    int64_t model_classes;
} tg_ckpt_meta;

/* Frees m->config, m->data_path and m->model_text when a load made them, and
 * sets them to
 * NULL. NULL is a no-op. */
void tg_ckpt_meta_free(tg_ckpt_meta *m);

/*
 * Save n tensors and the metadata as DIR/ckpt-<step, 8 digits>.h5, point
 * DIR/latest at it, then delete older checkpoints so that `keep` remain (the
 * new one and the keep-1 with the highest steps among the others; keep <= 0
 * keeps all). DIR is created with its parents (mkdir -p) when missing. Each
 * tensor needs a unique, non-empty ->name without '/' (dots are fine); 0-d
 * and empty tensors are allowed. The tensors are only read. A file of the
 * same step is replaced. The path written goes to `path` (may be NULL).
 *
 * Only valid checkpoints of this format count towards `keep` and are deleted
 * (a folder or junk named like one is left alone), and pruning never fails
 * the save: a file that cannot be deleted stays. step, epoch,
 * samples_consumed and optim_steps must lie in 0..TG_CKPT_COUNT_MAX.
 * The file is built in memory and then written with write() and fsync(), so
 * a save holds the file's image (about the tensors' total size) twice at its
 * peak.
 */
tg_status tg_ckpt_save(tg_ctx *ctx, const char *dir, const tg_ckpt_meta *meta, int n,
                       tg_tensor *const *tensors, int keep, char *path, size_t pathlen);

/*
 * Load the checkpoint file at `path` into the caller's n tensors, matched by
 * ->name: the file must hold exactly these names (a missing or an extra
 * tensor is an error, as is another shape or dtype; the message names the
 * tensor and both shapes and dtypes). Checks the format version and every
 * checksum. The tensors are filled in place (their versions bump; grad mode
 * is switched off for the copy) only when everything checked out: on any
 * error they are untouched. The data passes through one host buffer as large
 * as all the tensors together. meta (may be NULL) receives the metadata;
 * free it with tg_ckpt_meta_free().
 */
tg_status tg_ckpt_load(tg_ctx *ctx, const char *path, int n, tg_tensor *const *tensors,
                       tg_ckpt_meta *meta);

/* Read only the metadata of the checkpoint at `path` (checks its format
 * version and the configuration's checksum), e.g. to build the model that
 * the checkpoint's configuration describes before tg_ckpt_load(). */
tg_status tg_ckpt_read_meta(tg_ctx *ctx, const char *path, tg_ckpt_meta *meta);

/* Check the checkpoint at `path` without a model: format version, metadata
 * and every tensor's checksums (reads the whole file twice: once for the
 * header's whole-file CRC-32, once through HDF5). */
tg_status tg_ckpt_verify(tg_ctx *ctx, const char *path);

/*
 * Choose the checkpoint to resume from in DIR (the `auto` policy): the one
 * `latest` names, if it passes tg_ckpt_verify(); otherwise the valid
 * checkpoint with the highest step. Each candidate passed over (and a
 * missing or unreadable `latest`) is described in `warn` (one sentence per
 * candidate, "; "-separated, truncated to warnlen; empty when there was
 * nothing to warn about), for the caller to print. The chosen file's path
 * goes to `path`. When DIR is missing or holds no valid checkpoint the status
 * is TG_ERR_IO with the message "nothing to resume in DIR ..."; warn is then
 * empty exactly when DIR held no checkpoint at all, which lets a trainer start
 * afresh on an empty folder yet refuse to overwrite broken checkpoints.
 * Each candidate is read in full twice to verify it (see tg_ckpt_verify).
 */
tg_status tg_ckpt_find(tg_ctx *ctx, const char *dir, char *path, size_t pathlen, char *warn,
                       size_t warnlen);

/* As tg_ckpt_find(), with a further check of each candidate that passed
 * verification: usable(path, user, why, whylen) returns false (and says why)
 * for a checkpoint that verifies but cannot be used, for example one whose
 * tensors do not fit the model; the search then falls back to the next one.
 * usable may be NULL. */
typedef bool (*tg_ckpt_usable_fn)(const char *path, void *user, char *why, size_t whylen);
tg_status tg_ckpt_find_usable(tg_ctx *ctx, const char *dir, char *path, size_t pathlen,
                              char *warn, size_t warnlen, tg_ckpt_usable_fn usable, void *user);

/* One tensor of a checkpoint, as tg_ckpt_read_tensors() returns it. */
typedef struct tg_ckpt_tensor {
    char *name;
    tg_dtype dtype;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    size_t nbytes; /* the data's size: numel x the dtype's size */
    void *data;    /* row-major, in the host's byte order */
} tg_ckpt_tensor;

/*
 * Read every tensor of the checkpoint at `path` without a model, in the
 * order they were saved, each checked against both its checksums (for
 * `tapegrad export`, which then checks them against the model the
 * checkpoint names). *tensors is heap memory for tg_ckpt_tensors_free();
 * on error it is NULL and *n is 0. Sizes are bounded by the file's size.
 */
tg_status tg_ckpt_read_tensors(tg_ctx *ctx, const char *path, tg_ckpt_tensor **tensors, int *n);
void tg_ckpt_tensors_free(tg_ckpt_tensor *tensors, int n);

/* Whether the file at `path` is a regular file that starts with the
 * tapegrad checkpoint header (checkpoints written since the header was
 * introduced; docs/CHECKPOINTS.md). Reads 16 bytes; checks nothing else. */
bool tg_ckpt_has_header(const char *path);

/*
 * A human-readable description of the checkpoint at `path` (for `tapegrad
 * inspect`): the metadata, the configuration, and one line per tensor with
 * its name, shape, dtype, L2 norm and whether its checksum holds. *text is
 * heap memory for the caller to free(). A tensor that fails its checksum is
 * still listed (as "CHECKSUM MISMATCH") and the call returns TG_ERR_FORMAT
 * with the text set; on other errors *text is NULL.
 */
tg_status tg_ckpt_describe(tg_ctx *ctx, const char *path, char **text);

#ifdef __cplusplus
}
#endif
#endif
