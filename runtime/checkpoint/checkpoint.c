/*
 * checkpoint.c: the checkpoint folder. Saving atomically and durably
 * (temporary name, fsync, rename, fsync of the folder, then `latest` the same
 * way), keeping the last K, and choosing the checkpoint to resume from.
 * checkpoint_file.c holds the HDF5 layout of a single file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_internal.h"
#include "core/internal.h"

#define LATEST "latest"
#define LATEST_TMP ".latest.tmp"

bool (*tg__ckpt_fault)(tg__ck_stage stage, int index) = NULL;

/* ---- shared helpers ---- */

const char *tg__ck_stage_name(tg__ck_stage stage) {
    static const char *const names[TG__CK_STAGE_COUNT] = {
        [TG__CK_CREATED] = "after creating the file",
        [TG__CK_TENSOR] = "while writing the tensors",
        [TG__CK_FSYNC] = "at fsync",
        [TG__CK_RENAME] = "at rename",
        [TG__CK_DIRSYNC] = "at the folder's fsync",
        [TG__CK_LATEST] = "writing the latest pointer",
        [TG__CK_LATEST_RENAME] = "renaming the latest pointer",
        [TG__CK_PRUNE] = "deleting old checkpoints",
    };
    return (unsigned)stage < TG__CK_STAGE_COUNT ? names[stage] : "at an unknown stage";
}

bool tg__ck_fault(tg__ck_stage stage, int index, const char *path, char *err, size_t errlen) {
    if (!tg__ckpt_fault || !tg__ckpt_fault(stage, index))
        return false;
    tg__ck_fail(TG_ERR_IO, err, errlen, "%s: I/O error %s (injected)", path,
                tg__ck_stage_name(stage));
    return true;
}

tg_status tg__ck_fail(tg_status st, char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;

    if (!err || errlen == 0)
        return st;
    va_start(ap, fmt);
    /* A truncated message is still a useful message. */
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

tg_status tg__ck_check_tensors(const char *what, int n, tg_tensor *const *ts, char *err,
                               size_t errlen) {
    for (int i = 0; i < n; i++) {
        const char *nm = ts[i] ? ts[i]->name : NULL;
        if (!ts[i])
            return tg__ck_fail(TG_ERR_INVALID, err, errlen, "%s: tensor %d of %d is NULL", what, i,
                               n);
        if (!nm || !nm[0] || strchr(nm, '/') || strcmp(nm, ".") == 0)
            return tg__ck_fail(TG_ERR_INVALID, err, errlen,
                               "%s: tensor %d has %s%s%s; checkpoints need a unique, non-empty "
                               "name without '/'",
                               what, i, nm ? "the name '" : "no name", nm ? nm : "", nm ? "'" : "");
        for (int j = 0; j < i; j++)
            if (strcmp(ts[j]->name, nm) == 0)
                return tg__ck_fail(TG_ERR_INVALID, err, errlen,
                                   "%s: tensors %d and %d are both named '%s'", what, j, i, nm);
    }
    return TG_OK;
}

/* ---- the file system ---- */

static tg_status join(char *out, size_t len, const char *dir, const char *name, char *err,
                      size_t errlen) {
    int w = snprintf(out, len, "%s/%s", dir, name);

    if (w < 0 || (size_t)w >= len)
        return tg__ck_fail(TG_ERR_INVALID, err, errlen, "%s/%s: path too long", dir, name);
    return TG_OK;
}

/* mkdir -p: every missing parent is made, each as the umask allows. */
static tg_status mkdir_p(const char *dir, char *err, size_t errlen) {
    char buf[PATH_MAX];
    struct stat sb;
    size_t len = strlen(dir);

    if (len >= sizeof buf)
        return tg__ck_fail(TG_ERR_INVALID, err, errlen, "%s: path too long", dir);
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return tg__ck_fail(TG_ERR_IO, err, errlen,
                               "%s: cannot create the checkpoint folder (at %s): %s", dir, buf,
                               strerror(errno));
        buf[i] = dir[i];
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: is not a folder", dir);
    return TG_OK;
}

/* fsync a folder, so that a rename in it survives a power cut (Linux needs
 * the folder opened read-only for this). */
static tg_status sync_dir(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot open for fsync: %s", path,
                           strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        (void)close(fd);
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: fsync failed: %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: close failed: %s", path, strerror(errno));
    return TG_OK;
}

static tg_status write_all(const char *path, const char *text, char *err, size_t errlen) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    size_t len = strlen(text), off = 0;

    if (fd < 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot create: %s", path, strerror(errno));
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            (void)close(fd);
            return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: write failed: %s", path, strerror(e));
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        (void)close(fd);
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: fsync failed: %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: close failed: %s", path, strerror(errno));
    return TG_OK;
}

/* Points DIR/latest at `name` atomically. *replaced says whether the rename
 * happened (after it, only the folder's fsync can still fail). */
static tg_status write_latest(const char *dir, const char *name, bool *replaced, char *err,
                              size_t errlen) {
    char tmp[PATH_MAX], dst[PATH_MAX], line[PATH_MAX];
    tg_status st;

    *replaced = false;
    if (join(tmp, sizeof tmp, dir, LATEST_TMP, err, errlen) ||
        join(dst, sizeof dst, dir, LATEST, err, errlen))
        return TG_ERR_INVALID;
    snprintf(line, sizeof line, "%s\n", name);
    if (tg__ck_fault(TG__CK_LATEST, 0, dst, err, errlen))
        return TG_ERR_IO;
    st = write_all(tmp, line, err, errlen);
    if (st == TG_OK && tg__ck_fault(TG__CK_LATEST_RENAME, 0, dst, err, errlen))
        st = TG_ERR_IO;
    if (st == TG_OK && rename(tmp, dst) != 0)
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot rename %s to it: %s", dst, tmp,
                         strerror(errno));
    if (st) {
        (void)unlink(tmp);
        return st;
    }
    *replaced = true;
    return sync_dir(dir, err, errlen);
}

/* The step of a file named ckpt-<digits>.h5, or -1. */
static int64_t parse_step(const char *name) {
    const char *p = name + 5;
    int64_t v = 0;
    int digits = 0;

    if (strncmp(name, "ckpt-", 5) != 0)
        return -1;
    for (; *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
        v = v * 10 + (*p - '0');
    return digits && strcmp(p, ".h5") == 0 ? v : -1;
}

static int cmp_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void ckpt_name(char *out, size_t len, int64_t step) {
    snprintf(out, len, "ckpt-%08" PRId64 ".h5", step);
}

/* The steps of DIR's checkpoint files, highest first; *steps is heap memory.
 * With `stale`, leftover temporaries of interrupted saves are deleted too. */
static tg_status list_steps(const char *dir, int64_t **steps, int *n, bool stale, char *err,
                            size_t errlen) {
    DIR *d = opendir(dir);
    struct dirent *de;
    int64_t *v = NULL;
    int cnt = 0, cap = 0;
    char p[PATH_MAX];

    *steps = NULL;
    *n = 0;
    if (!d)
        return tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot list the folder: %s", dir,
                           strerror(errno));
    while ((de = readdir(d)) != NULL) {
        int64_t s = parse_step(de->d_name);
        if (stale && s < 0 && de->d_name[0] == '.') {
            size_t l = strlen(de->d_name);
            /* ".ckpt-<digits>.h5.tmp": strip the dot and the suffix to check. */
            if (l > 5 && strcmp(de->d_name + l - 4, ".tmp") == 0) {
                char base[256];
                snprintf(base, sizeof base, "%.*s", (int)(l - 5), de->d_name + 1);
                if (parse_step(base) >= 0 && join(p, sizeof p, dir, de->d_name, NULL, 0) == 0)
                    (void)unlink(p);
            }
        }
        if (s < 0)
            continue;
        if (cnt == cap) {
            int64_t *q = realloc(v, sizeof *v * (size_t)(cap = cap ? cap * 2 : 16));
            if (!q) {
                free(v);
                (void)closedir(d);
                return tg__ck_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", dir);
            }
            v = q;
        }
        v[cnt++] = s;
    }
    (void)closedir(d);
    if (cnt > 1)
        qsort(v, (size_t)cnt, sizeof *v, cmp_desc);
    *steps = v;
    *n = cnt;
    return TG_OK;
}

/* Whether DIR/name is a checkpoint this format wrote, whole: a regular file
 * whose tapegrad header and whole-file CRC-32 check out. */
static bool valid_ckpt(const char *dir, const char *name) {
    char p[PATH_MAX];
    tg__ck_kind kind;

    return join(p, sizeof p, dir, name, NULL, 0) == TG_OK &&
           tg__ck_check_file(p, true, &kind, NULL, NULL, 0) == TG_OK && kind == TG__CK_KIND_SEALED;
}

/* Keeps the new checkpoint and the keep-1 highest valid others. Only valid
 * checkpoints of this format count and are removed: a folder, a damaged
 * file or junk named like a checkpoint takes no slot and stays, as does a
 * checkpoint without the header (an older tapegrad's). Best effort: a file
 * that cannot be removed stays, and the save still succeeded. */
static void prune(const char *dir, int keep, int64_t step) {
    int64_t *v;
    int n, kept = 1;
    char name[64], p[PATH_MAX];

    if (keep <= 0 || list_steps(dir, &v, &n, true, NULL, 0) != TG_OK)
        return;
    for (int i = 0; i < n; i++) {
        if (v[i] == step)
            continue;
        ckpt_name(name, sizeof name, v[i]);
        if (!valid_ckpt(dir, name) || kept++ < keep)
            continue;
        if (join(p, sizeof p, dir, name, NULL, 0) == TG_OK)
            (void)unlink(p);
    }
    free(v);
}

/* ---- save ---- */

/* Steps 1-3 of a save: the temporary file and its fsync (tg__ck_write),
 * then the rename. On failure the temporary is gone. */
static tg_status save_file(tg_ctx *ctx, const char *tmp, const char *dst, const tg_ckpt_meta *m,
                           int n, tg_tensor *const *ts, char *err, size_t errlen) {
    tg_status st = tg__ck_write(ctx, tmp, m, n, ts, err, errlen);

    if (st == TG_OK && tg__ck_fault(TG__CK_RENAME, 0, tmp, err, errlen))
        st = TG_ERR_IO;
    if (st == TG_OK && rename(tmp, dst) != 0)
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot rename to %s: %s", tmp, dst,
                         strerror(errno));
    if (st)
        (void)unlink(tmp);
    return st;
}

tg_status tg_ckpt_save(tg_ctx *ctx, const char *dir, const tg_ckpt_meta *meta, int n,
                       tg_tensor *const *ts, int keep, char *path, size_t pathlen) {
    char err[TG__CK_ERRLEN], name[64], tmpname[80], tmp[PATH_MAX], dst[PATH_MAX];
    bool existed, replaced = false;
    tg_status st;

    if (path && pathlen)
        path[0] = '\0';
    if (!dir || !dir[0] || !meta || n < 0 || (n > 0 && !ts))
        return tg__fail(ctx, TG_ERR_INVALID, "ckpt_save: NULL or empty folder, meta or tensors");
    if (meta->step < 0 || meta->step > TG_CKPT_COUNT_MAX || meta->epoch < 0 ||
        meta->epoch > TG_CKPT_COUNT_MAX || meta->samples_consumed < 0 ||
        meta->samples_consumed > TG_CKPT_COUNT_MAX || meta->optim_steps < 0 ||
        meta->optim_steps > TG_CKPT_COUNT_MAX || meta->world_size < 0 ||
        meta->world_size > (1 << 24))
        return tg__fail(ctx, TG_ERR_INVALID,
                        "ckpt_save: %s: step %" PRId64 ", epoch %" PRId64
                        ", samples_consumed %" PRId64 ", optim_steps %" PRId64
                        " or world_size %d is negative or too large (at most 2^48, 2^24 ranks)",
                        dir, meta->step, meta->epoch, meta->samples_consumed, meta->optim_steps,
                        (int)meta->world_size);
    ckpt_name(name, sizeof name, meta->step);
    snprintf(tmpname, sizeof tmpname, ".%s.tmp", name);
    st = tg__ck_check_tensors(dir, n, ts, err, sizeof err);
    if (!st)
        st = mkdir_p(dir, err, sizeof err);
    if (!st && (join(dst, sizeof dst, dir, name, err, sizeof err) ||
                join(tmp, sizeof tmp, dir, tmpname, err, sizeof err)))
        st = TG_ERR_INVALID;
    if (st)
        return tg__fail(ctx, st, "%s", err);
    existed = access(dst, F_OK) == 0;
    st = save_file(ctx, tmp, dst, meta, n, ts, err, sizeof err);
    if (st)
        return tg__fail(ctx, st, "%s", err);
    if (tg__ck_fault(TG__CK_DIRSYNC, 0, dir, err, sizeof err))
        st = TG_ERR_IO;
    if (!st)
        st = sync_dir(dir, err, sizeof err);
    if (!st)
        st = write_latest(dir, name, &replaced, err, sizeof err);
    if (st) {
        /* `latest` still names the previous checkpoint: take the new file
         * away so the folder reads as before, unless it replaced a file of
         * the same step (which `latest` may name, and which it now is). */
        if (!replaced && !existed)
            (void)unlink(dst);
        return tg__fail(ctx, st, "%s", err);
    }
    if (path && pathlen)
        snprintf(path, pathlen, "%s", dst);
    /* Pruning never fails a save: the new checkpoint is durable and named
     * by `latest` already. An injected fault skips it. */
    if (!tg__ck_fault(TG__CK_PRUNE, 0, dir, err, sizeof err))
        prune(dir, keep, meta->step);
    return TG_OK;
}

/* ---- find ---- */

static void warn_add(char *warn, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void warn_add(char *warn, size_t len, const char *fmt, ...) {
    size_t used;
    va_list ap;

    if (!warn || !len)
        return;
    used = strlen(warn);
    if (used && used + 2 < len) {
        memcpy(warn + used, "; ", 3);
        used += 2;
    }
    if (used + 1 >= len)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(warn + used, len - used, fmt, ap);
    va_end(ap);
}

/* The file name `latest` holds (one line, no '/'), or "" with a warning. */
static bool read_latest(const char *dir, char *name, size_t len, char *warn, size_t warnlen) {
    char p[PATH_MAX], buf[512], why[TG__CK_ERRLEN];
    size_t got = 0;
    int fd;

    name[0] = '\0';
    if (join(p, sizeof p, dir, LATEST, NULL, 0))
        return false;
    /* Without blocking (a FIFO named `latest` must not hang a resume), and
     * only a regular file or a symlink to one. */
    errno = 0;
    fd = tg__ck_open_regular(p, NULL, why, sizeof why);
    if (fd < 0) {
        if (errno == ENOENT)
            warn_add(warn, warnlen, "%s: missing (an interrupted save?)", p);
        else
            warn_add(warn, warnlen, "%s", why);
        return false;
    }
    while (got < sizeof buf - 1) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    (void)close(fd);
    buf[got] = '\0';
    while (got && (buf[got - 1] == '\n' || buf[got - 1] == '\r' || buf[got - 1] == ' '))
        buf[--got] = '\0';
    if (!got || strchr(buf, '/') || strchr(buf, '\n') || got >= len) {
        warn_add(warn, warnlen, "%s: does not hold a checkpoint file name", p);
        return false;
    }
    memcpy(name, buf, got + 1);
    return true;
}

tg_status tg_ckpt_find(tg_ctx *ctx, const char *dir, char *path, size_t pathlen, char *warn,
                       size_t warnlen) {
    return tg_ckpt_find_usable(ctx, dir, path, pathlen, warn, warnlen, NULL, NULL);
}

/* tg__ck_verify, then the caller's check (usable may be NULL). */
static tg_status candidate_ok(const char *p, tg_ckpt_usable_fn usable, void *user, char *err,
                              size_t errlen) {
    tg_status st = tg__ck_verify(p, err, errlen);
    if (st == TG_OK && usable && !usable(p, user, err, errlen))
        st = TG_ERR_FORMAT;
    return st;
}

tg_status tg_ckpt_find_usable(tg_ctx *ctx, const char *dir, char *path, size_t pathlen, char *warn,
                              size_t warnlen, tg_ckpt_usable_fn usable, void *user) {
    char err[TG__CK_ERRLEN], latest[256], name[64], p[PATH_MAX];
    struct stat sb;
    int64_t *v = NULL;
    int n = 0;
    bool have_latest;
    tg_status st;

    if (warn && warnlen)
        warn[0] = '\0';
    if (!dir || !path || !pathlen)
        return tg__fail(ctx, TG_ERR_INVALID, "ckpt_find: NULL folder or path buffer");
    path[0] = '\0';
    if (stat(dir, &sb) != 0)
        return tg__fail(ctx, TG_ERR_IO, "nothing to resume in %s (%s)", dir,
                        errno == ENOENT ? "no such folder" : strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return tg__fail(ctx, TG_ERR_IO, "nothing to resume in %s (not a folder)", dir);
    st = list_steps(dir, &v, &n, false, err, sizeof err);
    if (st)
        return tg__fail(ctx, st, "%s", err);
    have_latest = read_latest(dir, latest, sizeof latest, n ? warn : NULL, warnlen);
    if (have_latest && join(p, sizeof p, dir, latest, err, sizeof err) == 0) {
        if (candidate_ok(p, usable, user, err, sizeof err) == TG_OK)
            goto found;
        warn_add(warn, warnlen, "%s/%s names %s, which cannot be used: %s", dir, LATEST, latest,
                 err);
    }
    for (int i = 0; i < n; i++) {
        ckpt_name(name, sizeof name, v[i]);
        if (have_latest && strcmp(name, latest) == 0)
            continue;
        if (join(p, sizeof p, dir, name, err, sizeof err))
            continue;
        if (candidate_ok(p, usable, user, err, sizeof err) == TG_OK) {
            warn_add(warn, warnlen, "falling back to %s", p);
            goto found;
        }
        warn_add(warn, warnlen, "skipping %s", err);
    }
    free(v);
    if (n)
        return tg__fail(ctx, TG_ERR_IO,
                        "nothing to resume in %s (%d checkpoint file%s, none "
                        "valid)",
                        dir, n, n > 1 ? "s" : "");
    return tg__fail(ctx, TG_ERR_IO, "nothing to resume in %s (no checkpoint files)", dir);
found:
    free(v);
    if (strlen(p) >= pathlen)
        return tg__fail(ctx, TG_ERR_INVALID, "ckpt_find: %s does not fit in %zu bytes", p, pathlen);
    memcpy(path, p, strlen(p) + 1);
    return TG_OK;
}
