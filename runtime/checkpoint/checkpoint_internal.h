/*
 * checkpoint_internal.h: what the two checkpoint files share, and the
 * failure-injection hook the tests use.
 *
 * checkpoint_h5.c holds what writing and reading one file share (its HDF5
 * layout is described there); checkpoint_seal.c the tapegrad header in the
 * file's user block; checkpoint_write.c writes a file, checkpoint_read.c
 * opens, lists, reads and verifies one; checkpoint_load.c loads one into the
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

/* The HDF5 user block that holds the tapegrad header, and its magic. */
#define TG__CK_FORMAT_NAME "tapegrad-checkpoint"
#define TG__CK_HEADER 512
#define TG__CK_MAGIC_LEN 16
/* Chunks of at most this many bytes: big enough that the per-chunk overhead
 * (an index entry and a 4-byte checksum) is negligible, small enough that a
 * flipped bit is located to a megabyte. Readers refuse larger chunks. */
#define TG__CK_CHUNK_BYTES ((size_t)1 << 20)
/* Readers' bounds: the longest tensor name and string attribute, and the
 * most tensors in one file. */
#define TG__CK_NAME_MAX 1024
#define TG__CK_STR_MAX 4096
#define TG__CK_MAX_TENSORS (1 << 20)

/* What the first bytes of a file say it is. */
typedef enum tg__ck_kind {
    TG__CK_KIND_NONE = 0, /* neither (or it failed a check) */
    TG__CK_KIND_OLD,      /* the plain HDF5 signature: a checkpoint without the header */
    TG__CK_KIND_SEALED,   /* the tapegrad header, and it checked out */
} tg__ck_kind;

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

/* ---- the tapegrad header (checkpoint_seal.c) ---- */

/* zlib's CRC-32, continued from crc (0 to start), for any length. */
uint32_t tg__ck_crc(uint32_t crc, const void *p, size_t n);
#define tg__ck_crc_bytes(p, n) tg__ck_crc(0, (p), (n))
/* HDF5's metadata checksum (Jenkins' lookup3) of n bytes. */
uint32_t tg__ck_lookup3(const void *p, size_t n);
/* Recomputes the checksum of a version 2 or 3 superblock at h5 (see the
 * function for why). Anything else is left alone. */
void tg__ck_fix_superblock(unsigned char *h5, size_t len);
/* Fills the first TG__CK_HEADER bytes of a len-byte file image. */
void tg__ck_seal(unsigned char *file, size_t len);
/* Opens path read-only without blocking (a FIFO never waits) and refuses
 * anything but a regular file (a symlink to one is fine); the fd, or -1 with
 * the message in err. *size (may be NULL) gets the file's size. */
int tg__ck_open_regular(const char *path, int64_t *size, char *err, size_t errlen);
/* Reads the file's first bytes: the tapegrad header (checked: magic, its
 * CRC, format, the file length; with `body`, the CRC of everything after
 * it too) or the plain HDF5 signature (an older checkpoint). Anything else
 * or a mismatch is TG_ERR_FORMAT naming the file and what did not match. */
tg_status tg__ck_check_file(const char *path, bool body, tg__ck_kind *kind, int64_t *size,
                            char *err, size_t errlen);
/* Rewrites the header of a sealed file to match its current bytes (tests
 * use it to reach the checks behind the header). */
tg_status tg__ck_reseal(const char *path, char *err, size_t errlen);

/* ---- shared HDF5 helpers (checkpoint_h5.c) ---- */

/* Turns off HDF5's error printer (per thread). */
void tg__ck_h5_quiet(void);
/* The innermost description on HDF5's error stack, then clears the stack. */
const char *tg__ck_h5_detail(char *buf, size_t len);
/* Keeps the error stack aside while a failing path closes what it opened
 * (-1 when not failed), and puts it back. */
hid_t tg__ck_h5_keep(bool failed);
void tg__ck_h5_restore(hid_t stack);
/* The file and memory types of a dtype, or -1; give each back with
 * tg__ck_type_close() (bf16's is a type made for the call). */
hid_t tg__ck_file_type(tg_dtype dt);
hid_t tg__ck_mem_type(tg_dtype dt);
void tg__ck_type_close(tg_dtype dt, hid_t t);
/* True for the dtypes checkpoints store (every tg_dtype). */
bool tg__ck_dtype_stored(tg_dtype dt);
/* The tg_dtype a file type stores, or -1; its name goes to buf. */
int tg__ck_dtype_of(hid_t type, char *buf, size_t len);
/* A NUL-terminated fixed-length string type for len characters. */
hid_t tg__ck_str_type(size_t len);
/* The CRC-32 of the metadata's canonical text. */
uint32_t tg__ck_meta_crc(const tg_ckpt_meta *m, int64_t n);
/* The CRC-32 of the dataset record (path, bytes, sha256). */
uint32_t tg__ck_data_crc(const tg_ckpt_meta *m);
/* File access properties: reading (core_increment 0) or an in-memory file. */
hid_t tg__ck_fapl(size_t core_increment);

/* ---- one open checkpoint file (checkpoint_read.c) ---- */

/* An open checkpoint: the file and its /tensors group. */
typedef struct tg__ckfile {
    const char *path;
    hid_t file;
    hid_t tensors;
    int64_t num_tensors;
    int64_t size;     /* the file's size in bytes: bounds every size read from it */
    tg__ck_kind kind; /* sealed (verified before HDF5 opened it) or old */
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

/* Opens the file at `path` (after checking its tapegrad header and
 * whole-file CRC when it has one) and reads and checks its metadata into m
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
