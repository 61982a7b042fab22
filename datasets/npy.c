/*
 * npy.c: reading NumPy .npy files, the header and a streamed body.
 *
 * A .npy file is the magic "\x93NUMPY", a major and a minor version byte, the
 * length of the header (2 bytes little-endian in version 1.0, 4 bytes in 2.0
 * and 3.0), the header itself, a Python dict literal such as
 * "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }" padded with
 * spaces and ending in a newline, and then the raw elements. The header is
 * parsed here by a small strict parser instead of an evaluator, so a file
 * cannot make the converter do more than read three known keys.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "npy_internal.h"

/* numpy itself refuses headers over 10,000 bytes unless told otherwise; a
 * little more room costs nothing and still bounds what a bad file can make
 * us allocate. */
#define NPY_MAX_HEADER 65536
#define NPY_PREAMBLE 6

static const unsigned char npy_magic[NPY_PREAMBLE] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

struct cursor {
    const char *p, *end;
    const char *why; /* set by the first parse failure */
};

static void skip_ws(struct cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool fail_parse(struct cursor *c, const char *why) {
    if (!c->why)
        c->why = why;
    return false;
}

static bool eat(struct cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes (numpy writes none in the keys or
 * in the descr of the dtypes taken here). */
static bool parse_str(struct cursor *c, char *buf, size_t len) {
    char q;
    size_t n = 0;

    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return fail_parse(c, "expected a quoted string");
    q = *c->p++;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\')
            return fail_parse(c, "escapes in strings are not supported");
        if (n + 1 >= len)
            return fail_parse(c, "string too long");
        buf[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return fail_parse(c, "unterminated string");
    c->p++;
    buf[n] = '\0';
    return true;
}

static bool parse_word(struct cursor *c, const char *w) {
    size_t n = strlen(w);

    skip_ws(c);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, w, n) == 0) {
        c->p += n;
        return true;
    }
    return false;
}

static bool parse_bool(struct cursor *c, bool *v) {
    if (parse_word(c, "True"))
        *v = true;
    else if (parse_word(c, "False"))
        *v = false;
    else
        return fail_parse(c, "fortran_order must be True or False");
    return true;
}

/* A tuple of non-negative integers: (), (6,), (6, 3) with an optional
 * trailing comma; Python 2 files may write longs as "6L". */
static bool parse_shape(struct cursor *c, struct npy_file *f) {
    if (!eat(c, '('))
        return fail_parse(c, "shape must be a tuple");
    f->ndim = 0;
    for (;;) {
        int64_t v = 0;
        bool any = false;

        skip_ws(c);
        if (eat(c, ')'))
            break;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return fail_parse(c, "a dimension is too large");
            v = v * 10 + (*c->p++ - '0');
            any = true;
        }
        if (!any)
            return fail_parse(c, "shape must hold non-negative integers");
        if (c->p < c->end && *c->p == 'L')
            c->p++;
        if (f->ndim >= TG_MAX_DIMS)
            return fail_parse(c, "shape has more than 8 dimensions");
        f->shape[f->ndim++] = v;
        if (eat(c, ')'))
            break;
        if (!eat(c, ','))
            return fail_parse(c, "expected ',' or ')' in shape");
    }
    /* "(6)" is an int in Python, not a tuple: numpy never writes it. */
    return true;
}

/* The descr string: a byte order, a kind and an item size, e.g. "<f4". */
static bool parse_descr(struct cursor *c, struct npy_file *f) {
    char s[64];
    char *end;
    long size;

    skip_ws(c);
    if (c->p < c->end && *c->p == '[') {
        snprintf(f->descr, sizeof f->descr, "structured");
        f->kind = 0;
        /* Skip the list: nothing in it is used, and the dtype is refused
         * once the rest of the dict is known to be well formed. */
        for (int depth = 0; c->p < c->end; c->p++) {
            depth += *c->p == '[' || *c->p == '(';
            depth -= *c->p == ']' || *c->p == ')';
            if (depth == 0) {
                c->p++;
                return true;
            }
        }
        return fail_parse(c, "unterminated descr list");
    }
    if (!parse_str(c, s, sizeof s))
        return false;
    snprintf(f->descr, sizeof f->descr, "%s", s);
    f->kind = 0;
    if (!strchr("<>|=", s[0]) || !s[0] || !s[1])
        return true;
    size = strtol(s + 2, &end, 10);
    if (*end != '\0' || end == s + 2 || size <= 0 || size > 16)
        return true;
    f->kind = s[1];
    f->size = (int)size;
    /* '=' is the writer's native order; numpy writes '<' or '>' explicitly,
     * so a '=' file is taken as little-endian, the order of every host
     * tapegrad runs on. */
    f->big = s[0] == '>';
    return true;
}

static bool parse_dict(struct cursor *c, struct npy_file *f) {
    bool seen[3] = {false, false, false};
    char key[32];

    if (!eat(c, '{'))
        return fail_parse(c, "the header is not a dict");
    for (;;) {
        int k;

        if (eat(c, '}'))
            break;
        if (!parse_str(c, key, sizeof key))
            return false;
        k = strcmp(key, "descr") == 0           ? 0
            : strcmp(key, "fortran_order") == 0 ? 1
            : strcmp(key, "shape") == 0         ? 2
                                                : -1;
        if (k < 0)
            return fail_parse(c, "unknown key (expected descr, fortran_order and shape)");
        if (seen[k])
            return fail_parse(c, "a key appears twice");
        seen[k] = true;
        if (!eat(c, ':'))
            return fail_parse(c, "expected ':' after a key");
        if (!(k == 0 ? parse_descr(c, f) : k == 1 ? parse_bool(c, &f->fortran) : parse_shape(c, f)))
            return false;
        if (eat(c, '}'))
            break;
        if (!eat(c, ','))
            return fail_parse(c, "expected ',' or '}' between items");
    }
    skip_ws(c);
    if (c->p != c->end)
        return fail_parse(c, "text after the dict");
    if (!seen[0] || !seen[1] || !seen[2])
        return fail_parse(c, "missing key (expected descr, fortran_order and shape)");
    return true;
}

/* Copies the header into buf for a message, printable characters only. */
static const char *header_excerpt(const char *h, size_t n, char *buf, size_t len) {
    size_t k = 0;

    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\n'))
        n--;
    for (size_t i = 0; i < n && k + 4 < len; i++)
        buf[k++] = h[i] >= 0x20 && h[i] < 0x7f ? h[i] : '?';
    if (k + 4 >= len && n > k)
        memcpy(buf + k, "...", 3), k += 3;
    buf[k] = '\0';
    return buf;
}

const char *tg__npy_shape_str(const struct npy_file *f, char *buf, size_t len) {
    size_t used = 0;

    used += (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < f->ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "",
                                 (long long)f->shape[i]);
    if (used < len)
        snprintf(buf + used, len - used, f->ndim == 1 ? ",)" : ")");
    return buf;
}

static tg_status npy_fail_close(struct npy_file *f, tg_status st) {
    tg__npy_close(f);
    return st;
}

/* Reads the preamble and the header length; returns the header length or
 * fails with the message. */
static tg_status read_preamble(struct npy_file *f, uint32_t *hlen, int64_t *off, char *err,
                               size_t errlen) {
    unsigned char pre[12];
    size_t got = fread(pre, 1, 10, f->fp), need;

    if (ferror(f->fp))
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: read failed: %s", f->path, strerror(errno));
    if (got < NPY_PREAMBLE || memcmp(pre, npy_magic, NPY_PREAMBLE) != 0)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: not a .npy file (bad magic; expected \\x93NUMPY, as np.save "
                           "writes)",
                           f->path);
    if (got < 8)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: truncated header: the file ends inside the version", f->path);
    f->major = pre[6];
    f->minor = pre[7];
    if (f->major < 1 || f->major > 3 || f->minor != 0)
        return tg__ds_fail(TG_ERR_UNSUPPORTED, err, errlen,
                           "%s: .npy format version %u.%u is not supported (expected 1.0, 2.0 or "
                           "3.0)",
                           f->path, f->major, f->minor);
    need = f->major == 1 ? 10 : 12;
    if (got == 10 && need == 12)
        got += fread(pre + 10, 1, 2, f->fp);
    if (ferror(f->fp))
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: read failed: %s", f->path, strerror(errno));
    if (got < need)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: truncated header: the file ends inside the header length",
                           f->path);
    *hlen = f->major == 1 ? (uint32_t)pre[8] | (uint32_t)pre[9] << 8
                          : (uint32_t)pre[8] | (uint32_t)pre[9] << 8 | (uint32_t)pre[10] << 16 |
                                (uint32_t)pre[11] << 24;
    *off = (int64_t)need;
    if (*hlen > NPY_MAX_HEADER)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: header length %u is over the %d bytes allowed", f->path, *hlen,
                           NPY_MAX_HEADER);
    return TG_OK;
}

/* Sets numel and the body size from the shape, refusing overflow. */
static tg_status body_size(struct npy_file *f, char *err, size_t errlen) {
    f->numel = 1;
    for (int i = 0; i < f->ndim; i++) {
        if (f->shape[i] != 0 && f->numel > INT64_MAX / f->size / f->shape[i])
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s: shape is too large (more than 2^63 bytes)", f->path);
        f->numel *= f->shape[i];
    }
    f->body = f->numel * f->size;
    return TG_OK;
}

tg_status tg__npy_open(struct npy_file *f, const char *path, char *err, size_t errlen) {
    char *hdr = NULL, ex[120];
    uint32_t hlen = 0;
    struct cursor c;
    struct stat sb;
    size_t got;
    tg_status st;

    memset(f, 0, sizeof *f);
    f->path = path;
    errno = 0;
    f->fp = fopen(path, "rb");
    if (!f->fp)
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot open: %s", path,
                           errno ? strerror(errno) : "unknown error");
    st = read_preamble(f, &hlen, &f->body_off, err, errlen);
    if (st)
        return npy_fail_close(f, st);
    hdr = malloc(hlen ? hlen : 1);
    if (!hdr)
        return npy_fail_close(f, tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", path));
    got = fread(hdr, 1, hlen, f->fp);
    if (ferror(f->fp))
        st = tg__ds_fail(TG_ERR_IO, err, errlen, "%s: read failed: %s", path, strerror(errno));
    else if (got < hlen)
        st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                         "%s: truncated header: %zu of the %u bytes its length announces", path,
                         got, hlen);
    if (st == TG_OK) {
        c = (struct cursor){hdr, hdr + hlen, NULL};
        if (!parse_dict(&c, f))
            st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                             "%s: bad header dict: %s (header: %s)", path, c.why,
                             header_excerpt(hdr, hlen, ex, sizeof ex));
    }
    free(hdr);
    if (st)
        return npy_fail_close(f, st);
    f->body_off += hlen;
    if (f->kind == 0 || !strchr("uif", f->kind) ||
        (f->kind == 'f' ? f->size != 4 && f->size != 8 : f->size != 1 && f->size != 2 &&
                                                             f->size != 4 && f->size != 8))
        f->kind = 0;
    /* Body size from the shape with a placeholder item size for dtypes that
     * are refused later, so that message can still name the shape. */
    if (!f->size)
        f->size = 1;
    st = body_size(f, err, errlen);
    if (st)
        return npy_fail_close(f, st);
    /* A regular file's size tells a truncated body before anything is
     * written; reading checks again, for files that change or are pipes. */
    if (fstat(fileno(f->fp), &sb) != 0)
        return npy_fail_close(f, tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot stat: %s", path,
                                             strerror(errno)));
    f->regular = S_ISREG(sb.st_mode);
    f->file_size = (int64_t)sb.st_size;
    return TG_OK;
}

tg_status tg__npy_check_body(const struct npy_file *f, char *err, size_t errlen) {
    char sh[160];

    if (!f->regular || f->file_size == f->body_off + f->body)
        return TG_OK;
    tg__npy_shape_str(f, sh, sizeof sh);
    if (f->file_size < f->body_off + f->body)
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: truncated body: shape %s of %s needs %lld bytes but only %lld "
                           "follow the header",
                           f->path, sh, f->descr, (long long)f->body,
                           (long long)(f->file_size - f->body_off));
    return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                       "%s: data continues past the %lld body bytes of shape %s of %s", f->path,
                       (long long)f->body, sh, f->descr);
}

tg_status tg__npy_seek_body(struct npy_file *f, char *err, size_t errlen) {
    if (fseeko(f->fp, (off_t)f->body_off, SEEK_SET) != 0)
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: seek failed: %s", f->path,
                           strerror(errno));
    f->pos = 0;
    return TG_OK;
}

tg_status tg__npy_read(struct npy_file *f, void *buf, int64_t nelem, char *err, size_t errlen) {
    size_t want = (size_t)nelem * (size_t)f->size;
    size_t got = fread(buf, 1, want, f->fp);

    if (got == want) {
        f->pos += nelem;
        return TG_OK;
    }
    if (ferror(f->fp))
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: read failed: %s", f->path, strerror(errno));
    return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                       "%s: truncated body: it ends after %lld of %lld elements", f->path,
                       (long long)(f->pos + (int64_t)(got / (size_t)f->size)),
                       (long long)f->numel);
}

void tg__npy_close(struct npy_file *f) {
    /* Read-only: a failing fclose loses nothing. */
    if (f->fp)
        (void)fclose(f->fp);
    f->fp = NULL;
}

uint64_t tg__npy_load_bits(const unsigned char *p, int size, bool big) {
    uint64_t v = 0;

    for (int b = 0; b < size; b++)
        v = v << 8 | p[big ? b : size - 1 - b];
    return v;
}
