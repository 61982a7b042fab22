/*
 * tests/fuzz/fuzz_checkpoint.c: the checkpoint reader on arbitrary bytes.
 *
 * The input is written to a temporary file and read the ways tapegrad reads
 * a checkpoint: verify (header, whole-file CRC, metadata, every tensor's
 * checksums), read_meta, read_tensors (export's path) and describe
 * (inspect's). A random change to a file with the tapegrad header fails its
 * CRC-32 before HDF5 sees it, so the same bytes are also read with the
 * header recomputed to match them (HDF5 then parses the mutated structure
 * behind a valid header) and, for intact inputs, with the header cut off
 * (the path of a plain HDF5 checkpoint without a header). Each read must end
 * in a status, within bounded memory.
 *
 * TG_FUZZ_PLAIN_HDF5=1 also reads mutated plain HDF5 files (as given and
 * with any header cut off): that finds HDF5's own crashes on the format
 * without metadata checksums, which tapegrad cannot prevent.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/checkpoint_internal.h"
#include "tapegrad/checkpoint.h"

/*
 * LeakSanitizer's built-in suppressions for this program. HDF5 1.10 loses
 * memory of its own when it fails to open a damaged object: the object
 * header it was loading (inside H5O_protect, when the header fails its
 * checksum) or the layout message it had copied (inside H5D_open), and no id
 * reaches the caller to close. Only allocations made inside libhdf5 are
 * matched: tapegrad's own never have an HDF5 frame in their stack, and an
 * HDF5 object that tapegrad leaves open stays reachable (the tests check for
 * open ids instead). Any other leak is reported.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libhdf5\n"; }
const char *__lsan_default_options(void);
const char *__lsan_default_options(void) { return "print_suppressions=0"; }

/*
 * A damaged size field in a plain HDF5 file (the format without metadata
 * checksums) makes HDF5 1.10 ask malloc for that size before it reads the
 * bytes (96 GiB in H5C_protect, from H5Fopen). In a normal build that malloc
 * fails and H5Fopen returns an error, which tapegrad reports as a damaged
 * file; AddressSanitizer's allocator would abort instead. Returning NULL
 * keeps the fuzz run as faithful as that; every malloc of tapegrad's is
 * checked.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

static void read_all_ways(tg_ctx *ctx, const char *path) {
    tg_ckpt_meta m = {0};
    tg_ckpt_tensor *ts = NULL;
    char *text = NULL;
    int n = 0;

    (void)tg_ckpt_verify(ctx, path);
    tg_ctx_clear_error(ctx);
    if (tg_ckpt_read_meta(ctx, path, &m) == TG_OK)
        tg_ckpt_meta_free(&m);
    tg_ctx_clear_error(ctx);
    if (tg_ckpt_read_tensors(ctx, path, &ts, &n) == TG_OK)
        tg_ckpt_tensors_free(ts, n);
    tg_ctx_clear_error(ctx);
    (void)tg_ckpt_describe(ctx, path, &text);
    free(text);
    tg_ctx_clear_error(ctx);
}

static int write_file(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    int ok;

    if (!f)
        return -1;
    ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint8_t h5sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    const char *dir = getenv("TMPDIR"), *all = getenv("TG_FUZZ_PLAIN_HDF5");
    bool plain_all = all && all[0] == '1';
    bool sealed = size > TG__CK_HEADER + 8 && memcmp(data, "TAPEGRADCKPT", 12) == 0;
    bool intact = false;
    char path[4096];
    tg_ctx *ctx = NULL;
    uint8_t *copy;
    int fd;

    snprintf(path, sizeof path, "%s/tg-fuzz-ckpt-XXXXXX", dir && dir[0] ? dir : "/tmp");
    fd = mkstemp(path);
    if (fd < 0)
        return 0;
    (void)close(fd);
    if (tg_ctx_new(NULL, &ctx) != TG_OK) {
        (void)unlink(path);
        return 0;
    }
    /* As given. A plain HDF5 file is parsed by HDF5 before any check of
     * ours can run, and HDF5 1.10 has crashes of its own on damaged files
     * of that format (see below): mutating those is opt-in. */
    if (write_file(path, data, size) == 0) {
        if (plain_all || size < sizeof h5sig || memcmp(data, h5sig, sizeof h5sig) != 0)
            read_all_ways(ctx, path);
    }
    if (sealed) {
        /* With the header made to match the bytes: HDF5 parses the mutated
         * structure behind a valid header (only the newest format, whose
         * metadata has checksums of its own, is accepted there). */
        copy = malloc(size);
        if (copy) {
            memcpy(copy, data, size);
            tg__ck_seal(copy, size);
            /* The input's header already matched its bytes. */
            intact = memcmp(copy, data, TG__CK_HEADER) == 0;
            if (write_file(path, copy, size) == 0)
                read_all_ways(ctx, path);
            free(copy);
        }
        /* Without the header: a plain HDF5 file, read through the path of
         * checkpoints written before the header existed. Only for intact
         * inputs (the seeds: plain HDF5 checkpoints, valid and damaged, are
         * kept in the corpus behind a header), unless TG_FUZZ_PLAIN_HDF5=1:
         * mutations of that format reach crashes inside HDF5 1.10 itself
         * (a use-after-free in H5Aexists, allocations of a damaged size in
         * H5C_protect) that no check of tapegrad's can precede. */
        if ((intact || plain_all) &&
            write_file(path, data + TG__CK_HEADER, size - TG__CK_HEADER) == 0)
            read_all_ways(ctx, path);
    }
    tg_ctx_free(ctx);
    (void)unlink(path);
    return 0;
}
