/*
 * checkpoint_seal.c: the tapegrad header in a checkpoint's HDF5 user block.
 *
 * A checkpoint is written with a 512-byte HDF5 user block (HDF5 skips it and
 * finds its superblock at offset 512). tapegrad fills it with:
 *
 *   offset  size  field
 *        0    16  magic "TAPEGRADCKPT\r\n\032\n"
 *       16     4  header format, u32 little-endian (1)
 *       20     4  header size, u32 LE (512: where the HDF5 file starts)
 *       24     8  total file length in bytes, u64 LE
 *       32     4  CRC-32 (zlib) of every byte after the header, u32 LE
 *       36   472  zero
 *      508     4  CRC-32 of bytes 0..507, u32 LE
 *
 * Readers check all of it with plain read() calls, bounded by the file's real
 * size, before HDF5 parses a byte of the file: a damaged checkpoint is refused
 * here, not after HDF5 has followed its damaged metadata. A file that starts
 * with the plain HDF5 signature is an older checkpoint without the header;
 * it is read through the same bounded path but verified only after HDF5 has
 * parsed it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "checkpoint_internal.h"

static const unsigned char k_magic[TG__CK_MAGIC_LEN] = "TAPEGRADCKPT\r\n\032\n";
static const unsigned char k_h5sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

#define HDR_FORMAT 1
#define READ_BLOCK ((size_t)1 << 20)

uint32_t tg__ck_crc(uint32_t crc, const void *p, size_t n) {
    const Bytef *b = p;
    uLong c = crc;

    /* zlib's length is an unsigned int: feed it a gigabyte at a time. */
    while (n) {
        uInt k = n > ((size_t)1 << 30) ? (uInt)1 << 30 : (uInt)n;
        c = crc32(c, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)c;
}

static void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n) {
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Bob Jenkins' lookup3 hash (hashlittle), which HDF5 uses for the checksums
 * of its metadata. */
#define ROT(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
static uint32_t lookup3(const unsigned char *k, size_t len, uint32_t init) {
    uint32_t a, b, c, w[3];

    a = b = c = 0xdeadbeefu + (uint32_t)len + init;
    if (len == 0)
        return c;
    for (;;) {
        size_t m = len > 12 ? 12 : len;
        w[0] = w[1] = w[2] = 0;
        for (size_t i = 0; i < m; i++)
            w[i / 4] += (uint32_t)k[i] << (8 * (i % 4));
        a += w[0];
        b += w[1];
        c += w[2];
        if (len <= 12)
            break;
        a -= c, a ^= ROT(c, 4), c += b;
        b -= a, b ^= ROT(a, 6), a += c;
        c -= b, c ^= ROT(b, 8), b += a;
        a -= c, a ^= ROT(c, 16), c += b;
        b -= a, b ^= ROT(a, 19), a += c;
        c -= b, c ^= ROT(b, 4), b += a;
        len -= 12;
        k += 12;
    }
    c ^= b, c -= ROT(b, 14);
    a ^= c, a -= ROT(c, 11);
    b ^= a, b -= ROT(a, 25);
    c ^= b, c -= ROT(b, 16);
    a ^= c, a -= ROT(c, 4);
    b ^= a, b -= ROT(a, 14);
    c ^= b, c -= ROT(b, 24);
    return c;
}

uint32_t tg__ck_lookup3(const void *p, size_t n) { return lookup3(p, n, 0); }

void tg__ck_fix_superblock(unsigned char *h5, size_t len) {
    size_t n;

    /* Superblock versions 2 and 3: signature, version, sizes of offsets and
     * lengths, status flags, four addresses, then the checksum. HDF5 1.10's
     * H5Fget_file_image() clears the status flags in the copy but keeps the
     * checksum computed with them set, which no reader accepts. */
    if (len < 12 || memcmp(h5, k_h5sig, 8) != 0 || h5[8] < 2 || h5[8] > 3 ||
        (h5[9] != 4 && h5[9] != 8))
        return;
    n = 12 + 4 * (size_t)h5[9];
    if (n + 4 > len)
        return;
    put_le(h5 + n, lookup3(h5, n, 0), 4);
}

void tg__ck_seal(unsigned char *file, size_t len) {
    unsigned char *h = file;

    memset(h, 0, TG__CK_HEADER);
    memcpy(h, k_magic, TG__CK_MAGIC_LEN);
    put_le(h + 16, HDR_FORMAT, 4);
    put_le(h + 20, TG__CK_HEADER, 4);
    put_le(h + 24, len, 8);
    put_le(h + 32, tg__ck_crc(0, file + TG__CK_HEADER, len - TG__CK_HEADER), 4);
    put_le(h + TG__CK_HEADER - 4, tg__ck_crc(0, h, TG__CK_HEADER - 4), 4);
}

/* read() until n bytes or the end; returns the count, or -1. */
static ssize_t read_full(int fd, void *buf, size_t n) {
    size_t got = 0;

    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int tg__ck_open_regular(const char *path, int64_t *size, char *err, size_t errlen) {
    struct stat sb;
    int fd;

    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot open the checkpoint: %s", path,
                    strerror(errno));
        return -1;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        (void)close(fd);
        tg__ck_fail(TG_ERR_IO, err, errlen, "%s: is not a regular file", path);
        return -1;
    }
    if (size)
        *size = (int64_t)sb.st_size;
    return fd;
}

tg_status tg__ck_check_file(const char *path, bool body, tg__ck_kind *kind, int64_t *size,
                            char *err, size_t errlen) {
    unsigned char h[TG__CK_HEADER + 9], *buf = NULL;
    int64_t fsize = 0;
    uint64_t len;
    uint32_t want, got;
    ssize_t n;
    int fd = tg__ck_open_regular(path, &fsize, err, errlen);
    tg_status st = TG_OK;

    *kind = TG__CK_KIND_NONE;
    if (size)
        *size = fsize;
    if (fd < 0)
        return TG_ERR_IO;
    n = read_full(fd, h, sizeof h);
    if (n < 0) {
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: read failed: %s", path, strerror(errno));
        goto out;
    }
    if (n >= 8 && memcmp(h, k_h5sig, 8) == 0) {
        *kind = TG__CK_KIND_OLD;
        goto out;
    }
    if (n < TG__CK_MAGIC_LEN || memcmp(h, k_magic, TG__CK_MAGIC_LEN) != 0) {
        /* An HDF5 file after a user block whose magic is damaged. */
        bool damaged = n == (ssize_t)sizeof h && memcmp(h + TG__CK_HEADER, k_h5sig, 8) == 0;
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         damaged ? "%s: the tapegrad header is damaged (its magic string does not "
                                   "match; the file is corrupt)"
                                 : "%s: not an HDF5 file (expected a tapegrad checkpoint)",
                         path);
        goto out;
    }
    if (n < (ssize_t)sizeof h) {
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: truncated (%zd bytes, shorter than the %d-byte tapegrad header and "
                         "the HDF5 signature)",
                         path, n, TG__CK_HEADER);
        goto out;
    }
    want = (uint32_t)get_le(h + TG__CK_HEADER - 4, 4);
    got = tg__ck_crc(0, h, TG__CK_HEADER - 4);
    if (want != got) {
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: the tapegrad header fails its CRC-32 (stored %08" PRIx32
                         ", computed %08" PRIx32 "; the file is corrupt)",
                         path, want, got);
        goto out;
    }
    if (get_le(h + 16, 4) != HDR_FORMAT || get_le(h + 20, 4) != TG__CK_HEADER) {
        st = tg__ck_fail(TG_ERR_UNSUPPORTED, err, errlen,
                         "%s: tapegrad header format %" PRIu64 " with a %" PRIu64
                         "-byte header (this build reads format %d, 512 bytes): upgrade tapegrad",
                         path, get_le(h + 16, 4), get_le(h + 20, 4), HDR_FORMAT);
        goto out;
    }
    len = get_le(h + 24, 8);
    if (len != (uint64_t)fsize) {
        st = tg__ck_fail(
            TG_ERR_FORMAT, err, errlen,
            "%s: %s (the tapegrad header says %" PRIu64 " bytes, the file has %" PRId64 ")", path,
            len > (uint64_t)fsize ? "truncated" : "has trailing bytes", len, fsize);
        goto out;
    }
    /* tapegrad writes the newest HDF5 format behind the header (superblock
     * version 2 or later: metadata with checksums); an older superblock
     * there is no file this format wrote. */
    if (memcmp(h + TG__CK_HEADER, k_h5sig, 8) != 0 || h[TG__CK_HEADER + 8] < 2) {
        st = tg__ck_fail(
            TG_ERR_FORMAT, err, errlen,
            "%s: no HDF5 superblock of version 2 or later after the tapegrad header "
            "(found %s, version %d)",
            path, memcmp(h + TG__CK_HEADER, k_h5sig, 8) == 0 ? "a superblock" : "no HDF5 signature",
            (int)h[TG__CK_HEADER + 8]);
        goto out;
    }
    *kind = TG__CK_KIND_SEALED;
    if (!body)
        goto out;
    buf = malloc(READ_BLOCK);
    if (!buf) {
        st = tg__ck_fail(TG_ERR_NOMEM, err, errlen, "%s: no memory for a read buffer", path);
        goto out;
    }
    got = tg__ck_crc(0, NULL, 0);
    if (lseek(fd, TG__CK_HEADER, SEEK_SET) != TG__CK_HEADER) {
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: seek failed: %s", path, strerror(errno));
        goto out;
    }
    for (uint64_t off = TG__CK_HEADER; off < len;) {
        size_t want_n = len - off > READ_BLOCK ? READ_BLOCK : (size_t)(len - off);
        n = read_full(fd, buf, want_n);
        if (n < 0 || (size_t)n != want_n) {
            st = tg__ck_fail(n < 0 ? TG_ERR_IO : TG_ERR_FORMAT, err, errlen,
                             "%s: %s at byte %" PRIu64 " of %" PRIu64, path,
                             n < 0 ? strerror(errno) : "truncated while reading", off, len);
            goto out;
        }
        got = tg__ck_crc(got, buf, (size_t)n);
        off += (uint64_t)n;
    }
    want = (uint32_t)get_le(h + 32, 4);
    if (want != got)
        st = tg__ck_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: the file fails its whole-file CRC-32 checksum (stored %08" PRIx32
                         ", computed %08" PRIx32 "; the file is corrupt)",
                         path, want, got);
out:
    free(buf);
    (void)close(fd);
    if (st)
        *kind = TG__CK_KIND_NONE;
    return st;
}

bool tg_ckpt_has_header(const char *path) {
    unsigned char h[TG__CK_MAGIC_LEN];
    int fd = path ? tg__ck_open_regular(path, NULL, NULL, 0) : -1;
    bool yes;

    if (fd < 0)
        return false;
    yes = read_full(fd, h, sizeof h) == (ssize_t)sizeof h && memcmp(h, k_magic, sizeof h) == 0;
    (void)close(fd);
    return yes;
}

tg_status tg__ck_reseal(const char *path, char *err, size_t errlen) {
    int64_t size = 0;
    int fd = tg__ck_open_regular(path, &size, err, errlen);
    unsigned char *buf = NULL;
    tg_status st = TG_OK;

    if (fd < 0)
        return TG_ERR_IO;
    if (size < TG__CK_HEADER || !(buf = malloc((size_t)size)) ||
        read_full(fd, buf, (size_t)size) != (ssize_t)size)
        st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot read it to reseal", path);
    (void)close(fd);
    if (st == TG_OK) {
        tg__ck_seal(buf, (size_t)size);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, buf, TG__CK_HEADER) != TG__CK_HEADER)
            st = tg__ck_fail(TG_ERR_IO, err, errlen, "%s: cannot rewrite the header", path);
        if (fd >= 0)
            (void)close(fd);
    }
    free(buf);
    return st;
}
