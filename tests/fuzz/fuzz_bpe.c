/*
 * tests/fuzz/fuzz_bpe.c: the BPE readers (datasets/bpe.c: the vocab.json
 * parser and the merges.txt parser) and the encoder on arbitrary input: the
 * first four bytes are the lengths (big-endian, two bytes each) of the
 * vocabulary and the merges texts, which follow; the rest is text to encode.
 * A tokenizer that loads must encode into ids below its vocabulary whose
 * bytes add up to the text's length (a byte-level BPE loses nothing).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "bpe_internal.h"
#include "tapegrad/datasets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4)
        return 0;
    size_t nv = (size_t)data[0] << 8 | data[1], nm = (size_t)data[2] << 8 | data[3];
    data += 4;
    size -= 4;
    if (nv > size)
        nv = size;
    if (nm > size - nv)
        nm = size - nv;
    char err[512];
    tg_bpe *b;
    if (tg_bpe_parse((const char *)data, nv, "vocab.json", (const char *)data + nv, nm,
                     "merges.txt", &b, err, sizeof err) != TG_OK)
        return 0;
    const unsigned char *text = data + nv + nm;
    int64_t len = (int64_t)(size - nv - nm);
    uint16_t *ids = malloc((size_t)(len > 0 ? len : 1) * sizeof *ids);
    int64_t n = ids ? tg_bpe_encode(b, text, len, ids) : -1;
    int64_t bytes = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] >= tg_bpe_vocab_size(b))
            __builtin_trap();
        bytes += tg__bpe_token_bytes(b, ids[i]);
    }
    if (n >= 0 && (n > len || bytes != len))
        __builtin_trap();
    free(ids);
    tg_bpe_free(b);
    return 0;
}
