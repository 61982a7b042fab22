/*
 * tests/fuzz/fuzz_idx.c: the IDX converter (datasets/idx.c) on arbitrary
 * input. The first byte chooses how the rest is used: its low bit whether
 * the two files are gzip-compressed here (so that the fuzzer controls the
 * IDX headers and bodies) or written as given (the gzip layer itself); the
 * next two bytes (big-endian) are the length of the labels file, the rest
 * is the images file. The output goes to a scratch folder.
 */
#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

#include "fuzz_files.h"
#include "tapegrad/datasets.h"

static const char *put(fuzz_dir *d, const char *name, const uint8_t *p, size_t n, bool gz) {
    if (!gz)
        return fuzz_dir_write(d, name, p, n);
    const char *path = fuzz_dir_path(d, name);
    gzFile f = path ? gzopen(path, "wb1") : NULL;
    if (!f)
        return NULL;
    int w = n ? gzwrite(f, p, (unsigned)n) : 0;
    return gzclose(f) == Z_OK && w == (int)n ? path : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3)
        return 0;
    bool gz = (data[0] & 1) == 0;
    size_t nl = (size_t)data[1] << 8 | data[2];
    data += 3;
    size -= 3;
    if (nl > size)
        nl = size;
    fuzz_dir d;
    if (fuzz_dir_make(&d) != 0)
        return 0;
    const char *lab = put(&d, "labels.gz", data, nl, gz);
    const char *img = put(&d, "images.gz", data + nl, size - nl, gz);
    const char *out = fuzz_dir_path(&d, "out.h5");
    char err[512];
    tg_idx_options o = {.chunk_samples = 7};
    if (lab && img && out &&
        tg_idx_convert_opts(img, lab, out, "train", &o, err, sizeof err) == TG_OK) {
        /* What the converter wrote must read back. */
        tg_dataset *ds;
        if (tg_dataset_open(out, "train", &ds, err, sizeof err) != TG_OK)
            __builtin_trap();
        tg_dataset_close(ds);
    }
    fuzz_dir_remove(&d);
    return 0;
}
