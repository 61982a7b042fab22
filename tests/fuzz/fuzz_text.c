/*
 * tests/fuzz/fuzz_text.c: `convert text` (datasets/text_convert.c) on an
 * arbitrary text file, with the token splits written into a scratch folder
 * and read back: the tokens of train and val must add up to the input's
 * bytes, and every window of each must read.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_files.h"
#include "tapegrad/datasets.h"

static int64_t read_back(const char *out, const char *split) {
    char err[512];
    tg_dataset *ds;
    tg_dataset_options o = {.block_size = 1};
    if (tg_dataset_open_opts(out, split, &o, &ds, err, sizeof err) != TG_OK)
        return -1;
    int64_t ntok = tg_dataset_num_tokens(ds);
    for (int64_t i = 0; i < tg_dataset_len(ds); i++) {
        float x;
        int64_t y;
        if (tg_dataset_read(ds, &i, 1, &x, &y, err, sizeof err) != TG_OK || x < 0 || y > 255)
            __builtin_trap();
    }
    tg_dataset_close(ds);
    return ntok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_dir d;
    if (fuzz_dir_make(&d) != 0)
        return 0;
    const char *in = fuzz_dir_write(&d, "in.txt", data, size);
    const char *out = fuzz_dir_path(&d, "out.h5");
    char err[512];
    if (in && out) {
        const char *ins[1] = {in};
        tg_text_options o = {.val_fraction = 0.25};
        if (tg_text_convert(ins, 1, out, &o, err, sizeof err) == TG_OK) {
            int64_t a = read_back(out, "train"), b = read_back(out, "val");
            /* Every split written has a window of 1 + 1 tokens. */
            if (a < 0 || b < 0 || a + b != (int64_t)size)
                __builtin_trap();
        }
    }
    fuzz_dir_remove(&d);
    return 0;
}
