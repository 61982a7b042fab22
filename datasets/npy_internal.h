/*
 * npy_internal.h: the .npy reader (npy.c) that the converter (npy_convert.c)
 * streams from. Not installed and not part of the public API.
 */
#ifndef TAPEGRAD_NPY_INTERNAL_H
#define TAPEGRAD_NPY_INTERNAL_H

#include <stdio.h>

#include "datasets_internal.h"

/* An open .npy file after its header has been parsed and checked. */
struct npy_file {
    FILE *fp;
    const char *path;
    unsigned major, minor; /* format version */
    char descr[64];        /* as written, or "structured", for messages */
    /* 'u', 'i' or 'f' with size 1, 2, 4 or 8 (f: 4 or 8); 0 for any other
     * dtype, which the caller refuses by naming descr. */
    char kind;
    int size;      /* bytes per element (1 when kind is 0) */
    bool big;      /* elements are big-endian */
    bool fortran;  /* fortran_order */
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t numel;     /* product of shape */
    int64_t body;      /* numel * size */
    int64_t body_off;  /* offset of the first element */
    bool regular;      /* a regular file, whose size is file_size */
    int64_t file_size;
    int64_t pos;       /* elements read since tg__npy_seek_body() */
};

/*
 * Opens path and parses its header: the magic, version 1.0, 2.0 or 3.0, a
 * header of at most 64 KiB that is a dict of exactly descr, fortran_order and
 * shape. The file is left positioned at the first element. On failure the
 * file is closed and the message says why (TG_ERR_IO, TG_ERR_FORMAT, or
 * TG_ERR_UNSUPPORTED for another version).
 */
tg_status tg__npy_open(struct npy_file *f, const char *path, char *err, size_t errlen);

/* For a regular file, refuses a body shorter or longer than the header says. */
tg_status tg__npy_check_body(const struct npy_file *f, char *err, size_t errlen);

/* Goes back to the first element. */
tg_status tg__npy_seek_body(struct npy_file *f, char *err, size_t errlen);

/* Reads the next nelem elements, raw, into buf (nelem * size bytes); a short
 * read is a truncated body (TG_ERR_FORMAT) or a read error (TG_ERR_IO). */
tg_status tg__npy_read(struct npy_file *f, void *buf, int64_t nelem, char *err, size_t errlen);

/* Closes the file; safe to call twice. */
void tg__npy_close(struct npy_file *f);

/* The element at p of `size` bytes as an unsigned integer of its bits, from
 * the file's byte order to the host's. */
uint64_t tg__npy_load_bits(const unsigned char *p, int size, bool big);

/* Formats the shape the way Python prints a tuple: "(6,)", "(6, 1, 28, 28)". */
const char *tg__npy_shape_str(const struct npy_file *f, char *buf, size_t len);

#endif
