/*
 * tests/fuzz/fuzz_dataset.c: the HDF5 dataset reader (datasets/h5data.c) on
 * arbitrary files: open and validate split "train" (the label scan, or the
 * check of f32 regression targets, or of a token split's tokens, included),
 * then read a batch of x and y, from memory and from the file.
 *
 * Only files whose superblock is version 2 or later (HDF5's newer formats,
 * which the converters write) are tried. Their metadata carries checksums,
 * so a damaged header is refused by HDF5 itself, and mutations reach what
 * the reader checks: shapes, types, attributes, labels and values. In the
 * original format (version 0, h5py's default) local heaps and B-tree nodes
 * have no checksum and HDF5 1.10 allocates the sizes they state (found by
 * this target: H5HL_protect asking for 2^60 bytes from a 10 KiB file); that
 * is inside HDF5, which fails cleanly when such an allocation fails, and no
 * code of ours is on that path.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_files.h"
#include "tapegrad/datasets.h"

/* Batches larger than this many floats are not read (a sample may
 * legitimately hold 2^24 elements; the harness keeps memory small). */
#define MAX_BATCH_FLOATS ((int64_t)1 << 20)

static void read_some(const char *path, int64_t budget) {
    tg_dataset_options o = {.cache_budget = budget};
    tg_dataset *ds = NULL;
    char err[512];

    if (tg_dataset_open_opts(path, "train", &o, &ds, err, sizeof err) != TG_OK)
        return;
    int64_t n = tg_dataset_len(ds), numel = tg_dataset_sample_numel(ds);
    int64_t idx[4] = {n - 1, 0, n / 2, n - 1};
    if (numel > 0 && numel <= MAX_BATCH_FLOATS / 4) {
        float *x = malloc((size_t)(4 * numel) * sizeof *x);
        /* A token split gives a label per position of each window. */
        int64_t *y = malloc((size_t)(4 * tg_dataset_labels_per_sample(ds)) * sizeof *y);
        /* Regression targets (f32 y) through their own reader. */
        int64_t k = tg_dataset_target_dim(ds);
        float *t = k > 0 && k <= MAX_BATCH_FLOATS / 4 ? malloc((size_t)(4 * k) * sizeof *t) : NULL;
        if (x && t)
            (void)tg_dataset_read_targets(ds, idx, 4, x, t, err, sizeof err);
        else if (x && y && k == 0)
            (void)tg_dataset_read(ds, idx, 4, x, y, err, sizeof err);
        free(y);
        free(t);
        free(x);
    }
    tg_dataset_close(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint8_t sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (size < 9 || memcmp(data, sig, sizeof sig) != 0 || data[8] < 2)
        return 0;
    fuzz_dir d;
    if (fuzz_dir_make(&d) != 0)
        return 0;
    const char *path = fuzz_dir_write(&d, "data.h5", data, size);
    if (path) {
        read_some(path, 1 << 20); /* small splits held in memory */
        read_some(path, -1);      /* everything read from the file */
    }
    fuzz_dir_remove(&d);
    return 0;
}
