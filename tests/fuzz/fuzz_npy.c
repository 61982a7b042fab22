/*
 * tests/fuzz/fuzz_npy.c: the .npy header parser (datasets/npy.c) and the
 * converter (datasets/npy_convert.c) on arbitrary input: the first two
 * bytes (big-endian) are the length of the x file, then x, then the y file.
 * The header of each is parsed alone, then the pair is converted into a
 * scratch folder, and a successful conversion must read back.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_files.h"
#include "npy_internal.h"
#include "tapegrad/datasets.h"

static void parse(const char *path) {
    struct npy_file f;
    char err[512];
    if (tg__npy_open(&f, path, err, sizeof err) == TG_OK) {
        (void)tg__npy_check_body(&f, err, sizeof err);
        tg__npy_close(&f);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    size_t nx = (size_t)data[0] << 8 | data[1];
    data += 2;
    size -= 2;
    if (nx > size)
        nx = size;
    fuzz_dir d;
    if (fuzz_dir_make(&d) != 0)
        return 0;
    const char *x = fuzz_dir_write(&d, "x.npy", data, nx);
    const char *y = fuzz_dir_write(&d, "y.npy", data + nx, size - nx);
    const char *out = fuzz_dir_path(&d, "out.h5");
    char err[512];
    if (x && y && out) {
        parse(x);
        parse(y);
        tg_npy_options o = {.chunk_samples = 3};
        if (tg_npy_convert(x, y, out, "train", &o, err, sizeof err) == TG_OK) {
            tg_dataset *ds;
            if (tg_dataset_open(out, "train", &ds, err, sizeof err) != TG_OK)
                __builtin_trap();
            tg_dataset_close(ds);
        }
    }
    fuzz_dir_remove(&d);
    return 0;
}
