/*
 * tests/fuzz/fuzz_files.h: scratch files for the fuzz targets whose parsers
 * read paths. Each call of a target makes its own folder (mkdtemp under
 * $TMPDIR or /tmp) and removes it with everything in it before returning,
 * so no state is kept between calls.
 */
#ifndef TG_FUZZ_FILES_H
#define TG_FUZZ_FILES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fuzz_dir {
    char dir[256];
    char paths[4][300];
    int n;
} fuzz_dir;

/* Makes the folder; 0 on success. */
static inline int fuzz_dir_make(fuzz_dir *d) {
    const char *base = getenv("TMPDIR");
    d->n = 0;
    snprintf(d->dir, sizeof d->dir, "%s/tg-fuzz-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(d->dir) ? 0 : -1;
}

/* The path of `name` in the folder, remembered for removal (at most 4). */
static inline const char *fuzz_dir_path(fuzz_dir *d, const char *name) {
    if (d->n >= 4)
        return NULL;
    char *p = d->paths[d->n++], dir[sizeof d->dir];
    memcpy(dir, d->dir, sizeof dir);
    snprintf(p, sizeof d->paths[0], "%s/%s", dir, name);
    return p;
}

/* Writes len bytes to a new file `name`; returns its path or NULL. */
static inline const char *fuzz_dir_write(fuzz_dir *d, const char *name, const void *data,
                                         size_t len) {
    const char *p = fuzz_dir_path(d, name);
    FILE *f = p ? fopen(p, "wb") : NULL;
    if (!f)
        return NULL;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    if (fclose(f) != 0 || w != len)
        return NULL;
    return p;
}

/* Removes every remembered path, anything a converter left beside them
 * (a failed run must leave nothing, but the folder is removed anyway) and
 * the folder. */
static inline void fuzz_dir_remove(fuzz_dir *d) {
    char cmd[400];
    for (int i = 0; i < d->n; i++)
        (void)unlink(d->paths[i]);
    if (rmdir(d->dir) != 0 && !strchr(d->dir, '\'')) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "fuzz: cannot remove %s\n", d->dir);
    }
}

#endif
