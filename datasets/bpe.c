/*
 * bpe.c: a GPT-2-style byte-level BPE tokenizer read from the vocab.json and
 * merges.txt pair that GPT-2 and its descendants ship.
 *
 * GPT-2 writes every byte as a printable code point (its bytes_to_unicode
 * table: the printable Latin-1 bytes as themselves, the other 68 bytes as
 * U+0100 onwards), so vocabulary entries and merges are UTF-8 strings of
 * those code points. Both files are mapped back to byte strings here.
 * vocab.json must be one flat JSON object of string keys and integer
 * values; it is read by a small parser of its own so that every message
 * names the line. Encoding cuts the text into pieces as GPT-2's pattern
 * does (with ASCII classes: letters are A-Z, a-z and every byte >= 0x80)
 * and applies the merges to each piece by rank.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_internal.h"
#include "datasets_internal.h"

/* The longest token, in bytes. */
#define MAX_TOKEN 256
/* The largest file either of the two may be. */
#define MAX_FILE ((long)1 << 30)

struct entry {
    uint32_t hash;
    int32_t id;  /* -1: empty slot */
    int32_t off; /* the token's bytes in b->bytes */
    int32_t len;
};

struct merge {
    uint64_t key; /* left id << 32 | right id; 0 with rank -1: empty */
    int32_t rank;
    int32_t id;
};

struct tg_bpe {
    struct entry *tab; /* byte string -> id, open addressing */
    int64_t tcap;
    unsigned char *bytes;
    int64_t nbytes, bcap;
    struct merge *mt; /* (left, right) -> (rank, merged id) */
    int64_t mcap;
    int32_t byte_id[256];
    int32_t *tok_len; /* bytes of each id, -1 where no token has it */
    int64_t vocab;    /* largest id + 1 */
    int32_t *work;    /* encode scratch */
    int64_t wcap;
};

static uint32_t hash_bytes(const unsigned char *p, int64_t n) {
    uint32_t h = 2166136261u;
    for (int64_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* GPT-2's bytes_to_unicode, inverted: the byte a code point stands for, or
 * -1. */
static int cp_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp >= 256 && cp < 256 + 68) {
        int k = (int)cp - 256;
        for (int b = 0; b < 256; b++) {
            bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
            if (!printable && k-- == 0)
                return b;
        }
    }
    return -1;
}

/* Decodes one UTF-8 code point at s (n bytes left); returns its length or
 * 0 when malformed. */
static int utf8_cp(const unsigned char *s, size_t n, uint32_t *cp) {
    int len = s[0] < 0x80             ? 1
              : (s[0] & 0xE0) == 0xC0 ? 2
              : (s[0] & 0xF0) == 0xE0 ? 3
              : (s[0] & 0xF8) == 0xF0 ? 4
                                      : 0;
    if (len == 0 || (size_t)len > n)
        return 0;
    *cp = len == 1 ? s[0] : s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        *cp = *cp << 6 | (s[i] & 0x3F);
    }
    return len;
}

/* Maps a string of GPT-2 code points (n bytes of UTF-8) to the bytes it
 * stands for; returns their count or -1. */
static int64_t unmap(const unsigned char *s, size_t n, unsigned char *out) {
    int64_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = utf8_cp(s + i, n - i, &cp);
        int b = l ? cp_to_byte(cp) : -1;
        if (b < 0 || m >= MAX_TOKEN)
            return -1;
        out[m++] = (unsigned char)b;
        i += (size_t)l;
    }
    return m;
}

static struct entry *find(const tg_bpe *b, const unsigned char *p, int64_t n, uint32_t h) {
    for (int64_t i = h & (b->tcap - 1);; i = (i + 1) & (b->tcap - 1)) {
        struct entry *e = &b->tab[i];
        if (e->id < 0 || (e->hash == h && e->len == n && !memcmp(b->bytes + e->off, p, (size_t)n)))
            return e;
    }
}

static int32_t lookup(const tg_bpe *b, const unsigned char *p, int64_t n) {
    return find(b, p, n, hash_bytes(p, n))->id;
}

static bool grow_tab(tg_bpe *b) {
    int64_t cap = b->tcap ? b->tcap * 2 : 1024;
    struct entry *old = b->tab, *t = malloc((size_t)cap * sizeof *t);
    int64_t ocap = b->tcap;
    if (!t)
        return false;
    for (int64_t i = 0; i < cap; i++)
        t[i].id = -1;
    b->tab = t;
    b->tcap = cap;
    for (int64_t i = 0; i < ocap; i++)
        if (old[i].id >= 0)
            *find(b, b->bytes + old[i].off, old[i].len, old[i].hash) = old[i];
    free(old);
    return true;
}

/* Adds token bytes p[0..n) as id; false when out of memory. *dup is set
 * when the bytes already have an id. */
static bool add_token(tg_bpe *b, const unsigned char *p, int64_t n, int32_t id, bool *dup) {
    uint32_t h = hash_bytes(p, n);
    struct entry *e;
    *dup = false;
    if ((b->vocab + 1) * 2 > b->tcap && !grow_tab(b))
        return false;
    e = find(b, p, n, h);
    if (e->id >= 0) {
        *dup = true;
        return true;
    }
    if (b->nbytes + n > b->bcap) {
        int64_t cap = b->bcap ? b->bcap * 2 : 4096;
        while (cap < b->nbytes + n)
            cap *= 2;
        unsigned char *nb = realloc(b->bytes, (size_t)cap);
        if (!nb)
            return false;
        b->bytes = nb;
        b->bcap = cap;
    }
    memcpy(b->bytes + b->nbytes, p, (size_t)n);
    *e = (struct entry){.hash = h, .id = id, .off = (int32_t)b->nbytes, .len = (int32_t)n};
    b->nbytes += n;
    return true;
}

/* ---- vocab.json: one flat object of "string": integer ---- */

struct jp {
    const char *s, *end, *name;
    int line;
    char *err;
    size_t errlen;
};

static tg_status jfail(struct jp *j, const char *what) {
    return tg__ds_fail(TG_ERR_FORMAT, j->err, j->errlen, "%s:%d: %s", j->name, j->line, what);
}

static void jspace(struct jp *j) {
    while (j->s < j->end && (*j->s == ' ' || *j->s == '\t' || *j->s == '\r' || *j->s == '\n')) {
        if (*j->s == '\n')
            j->line++;
        j->s++;
    }
}

static int hexval(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static size_t put_utf8(uint32_t cp, unsigned char *o) {
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A JSON string (escapes resolved) into out as UTF-8; *n its length. */
static tg_status jstring(struct jp *j, unsigned char *out, size_t cap, size_t *n) {
    *n = 0;
    if (j->s >= j->end || *j->s != '"')
        return jfail(j, "expected a string key in double quotes");
    j->s++;
    while (j->s < j->end && *j->s != '"') {
        unsigned char c = (unsigned char)*j->s++;
        uint32_t cp = c;
        if (c == '\n' || c < 0x20)
            return jfail(j, "control character inside a string");
        if (c == '\\') {
            if (j->s >= j->end)
                break;
            char e = *j->s++;
            const char *map = strchr("\"\"\\\\//b\bf\fn\nr\rt\t", e);
            if (e == 'u') {
                cp = 0;
                for (int k = 0; k < 4; k++) {
                    int h = j->s < j->end ? hexval(*j->s++) : -1;
                    if (h < 0)
                        return jfail(j, "bad \\u escape (expected 4 hex digits)");
                    cp = cp << 4 | (uint32_t)h;
                }
                if (cp >= 0xD800 && cp < 0xE000)
                    return jfail(j, "surrogate \\u escape: no GPT-2 token needs one");
            } else if (map && e) {
                cp = (unsigned char)map[1];
            } else {
                return jfail(j, "unknown escape in a string");
            }
            if (*n + 4 > cap)
                return jfail(j, "key longer than a token may be (256 bytes)");
            *n += put_utf8(cp, out + *n);
            continue;
        }
        if (*n + 1 > cap)
            return jfail(j, "key longer than a token may be (256 bytes)");
        out[(*n)++] = c;
    }
    if (j->s >= j->end)
        return jfail(j, "unterminated string");
    j->s++;
    return TG_OK;
}

static tg_status parse_vocab(tg_bpe *b, struct jp *j) {
    unsigned char key[4 * MAX_TOKEN + 4], tok[MAX_TOKEN];
    size_t kn;
    jspace(j);
    if (j->s >= j->end || *j->s != '{')
        return jfail(j, "expected a JSON object { \"token\": id, ... }");
    j->s++;
    jspace(j);
    if (j->s < j->end && *j->s == '}')
        return jfail(j, "the vocabulary is empty");
    for (;;) {
        jspace(j);
        tg_status st = jstring(j, key, sizeof key, &kn);
        if (st)
            return st;
        jspace(j);
        if (j->s >= j->end || *j->s != ':')
            return jfail(j, "expected ':' after a key");
        j->s++;
        jspace(j);
        /* Digits read within the text (which need not end in a NUL). */
        long v = 0;
        const char *d = j->s;
        while (d < j->end && isdigit((unsigned char)*d) && v < TG_DATASET_MAX_VOCAB)
            v = v * 10 + (*d++ - '0');
        if (d == j->s || v >= TG_DATASET_MAX_VOCAB ||
            (d < j->end && (isdigit((unsigned char)*d) || *d == '.' || *d == 'e' || *d == 'E')))
            return jfail(j, "expected an integer id in [0, 65536) after the key");
        j->s = d;
        int64_t m = unmap(key, kn, tok);
        if (m <= 0)
            return jfail(j, "key is not a string of GPT-2 byte symbols (bytes_to_unicode)");
        bool dup;
        if (!add_token(b, tok, m, (int32_t)v, &dup))
            return tg__ds_fail(TG_ERR_NOMEM, j->err, j->errlen, "%s: out of memory", j->name);
        if (dup)
            return jfail(j, "the same token appears twice");
        if (b->tok_len[v] >= 0)
            return jfail(j, "two tokens have the same id");
        b->tok_len[v] = (int32_t)m;
        if (v + 1 > b->vocab)
            b->vocab = v + 1;
        jspace(j);
        if (j->s < j->end && *j->s == ',') {
            j->s++;
            continue;
        }
        if (j->s < j->end && *j->s == '}')
            break;
        return jfail(j, "expected ',' or '}' after an id");
    }
    j->s++;
    jspace(j);
    if (j->s != j->end)
        return jfail(j, "text after the object");
    return TG_OK;
}

/* ---- merges.txt ---- */

static struct merge *mfind(const tg_bpe *b, uint64_t key) {
    for (uint64_t i = mix64(key) & (uint64_t)(b->mcap - 1);; i = (i + 1) & (uint64_t)(b->mcap - 1))
        if (b->mt[i].rank < 0 || b->mt[i].key == key)
            return &b->mt[i];
}

static tg_status parse_merges(tg_bpe *b, const char *text, size_t len, const char *name, char *err,
                              size_t errlen) {
    int64_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    b->mcap = 1024;
    while (b->mcap < 2 * lines)
        b->mcap *= 2;
    b->mt = malloc((size_t)b->mcap * sizeof *b->mt);
    if (!b->mt)
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", name);
    for (int64_t i = 0; i < b->mcap; i++)
        b->mt[i].rank = -1;
    int32_t rank = 0;
    int line = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n')
            e++;
        size_t n = e > i && text[e - 1] == '\r' ? e - 1 - i : e - i;
        const char *l = text + i;
        line++;
        i = e + 1;
        if (n == 0 || (line == 1 && n >= 8 && !strncmp(l, "#version", 8)))
            continue;
        const char *sp = memchr(l, ' ', n);
        unsigned char a[MAX_TOKEN], c[MAX_TOKEN], ab[2 * MAX_TOKEN];
        int64_t na = sp ? unmap((const unsigned char *)l, (size_t)(sp - l), a) : -1;
        int64_t nc = sp ? unmap((const unsigned char *)sp + 1, n - (size_t)(sp - l) - 1, c) : -1;
        if (na <= 0 || nc <= 0)
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s:%d: expected two tokens of GPT-2 byte symbols separated by "
                               "one space",
                               name, line);
        memcpy(ab, a, (size_t)na);
        memcpy(ab + na, c, (size_t)nc);
        int32_t ia = lookup(b, a, na), ic = lookup(b, c, nc), iab = lookup(b, ab, na + nc);
        if (ia < 0 || ic < 0 || iab < 0)
            return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                               "%s:%d: the merge%s is not in the vocabulary", name, line,
                               ia < 0   ? "'s left part"
                               : ic < 0 ? "'s right part"
                                        : " result");
        struct merge *m = mfind(b, (uint64_t)ia << 32 | (uint32_t)ic);
        if (m->rank >= 0)
            continue; /* a repeated merge keeps its first rank */
        *m = (struct merge){.key = (uint64_t)ia << 32 | (uint32_t)ic, .rank = rank++, .id = iab};
    }
    return TG_OK;
}

tg_status tg_bpe_parse(const char *vocab, size_t vlen, const char *vname, const char *merges,
                       size_t mlen, const char *mname, tg_bpe **out, char *err, size_t errlen) {
    tg_bpe *b;
    tg_status st;

    *out = NULL;
    b = calloc(1, sizeof *b);
    if (!b || !(b->tok_len = malloc(TG_DATASET_MAX_VOCAB * sizeof *b->tok_len))) {
        free(b);
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", vname);
    }
    for (int i = 0; i < TG_DATASET_MAX_VOCAB; i++)
        b->tok_len[i] = -1;
    struct jp j = {
        .s = vocab, .end = vocab + vlen, .name = vname, .line = 1, .err = err, .errlen = errlen};
    st = grow_tab(b) ? parse_vocab(b, &j) : tg__ds_fail(TG_ERR_NOMEM, err, errlen, "out of memory");
    for (int c = 0; st == TG_OK && c < 256; c++) {
        unsigned char byte = (unsigned char)c;
        b->byte_id[c] = lookup(b, &byte, 1);
        if (b->byte_id[c] < 0)
            st = tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                             "%s: byte 0x%02x has no token (a byte-level BPE needs all 256 "
                             "bytes in its vocabulary)",
                             vname, c);
    }
    if (st == TG_OK)
        st = parse_merges(b, merges, mlen, mname, err, errlen);
    if (st) {
        tg_bpe_free(b);
        return st;
    }
    *out = b;
    return TG_OK;
}

static tg_status slurp(const char *path, char **buf, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    long n;
    if (!f)
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: cannot read (not a regular file?)", path);
    }
    if (n > MAX_FILE) {
        fclose(f);
        return tg__ds_fail(TG_ERR_FORMAT, err, errlen,
                           "%s: %ld bytes is more than the 1 GiB a "
                           "vocab or merges file may have",
                           path, n);
    }
    *buf = malloc((size_t)n + 1);
    if (!*buf) {
        fclose(f);
        return tg__ds_fail(TG_ERR_NOMEM, err, errlen, "%s: out of memory", path);
    }
    *len = fread(*buf, 1, (size_t)n, f);
    bool bad = ferror(f) || *len != (size_t)n;
    fclose(f);
    if (bad) {
        free(*buf);
        return tg__ds_fail(TG_ERR_IO, err, errlen, "%s: read failed", path);
    }
    return TG_OK;
}

tg_status tg_bpe_load(const char *vocab_json, const char *merges_txt, tg_bpe **out, char *err,
                      size_t errlen) {
    char *v = NULL, *m = NULL;
    size_t vl = 0, ml = 0;
    tg_status st = slurp(vocab_json, &v, &vl, err, errlen);
    if (st == TG_OK)
        st = slurp(merges_txt, &m, &ml, err, errlen);
    if (st == TG_OK)
        st = tg_bpe_parse(v, vl, vocab_json, m, ml, merges_txt, out, err, errlen);
    free(v);
    free(m);
    return st;
}

void tg_bpe_free(tg_bpe *b) {
    if (!b)
        return;
    free(b->tab);
    free(b->bytes);
    free(b->mt);
    free(b->tok_len);
    free(b->work);
    free(b);
}

int64_t tg_bpe_vocab_size(const tg_bpe *b) { return b->vocab; }

int64_t tg__bpe_token_bytes(const tg_bpe *b, uint16_t id) {
    return b->tok_len[id] > 0 ? b->tok_len[id] : 0;
}

/* ---- encoding ---- */

static bool is_letter(unsigned char c) { return isalpha(c) || c >= 0x80; }
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* The length of the piece at t[0..n), following GPT-2's pattern
 * 's|'t|'re|'ve|'m|'ll|'d| ?L+| ?N+| ?[^\sLN]+|\s+(?!\S)|\s+ . */
static int64_t piece(const unsigned char *t, int64_t n) {
    static const char *const contr[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    for (int k = 0; k < 7; k++) {
        int64_t l = (int64_t)strlen(contr[k]);
        if (l <= n && !memcmp(t, contr[k], (size_t)l))
            return l;
    }
    int64_t i = t[0] == ' ' && n > 1 && !is_space(t[1]) ? 1 : 0;
    if (i < n && !is_space(t[i])) {
        int cls = is_letter(t[i]) ? 0 : is_digit(t[i]) ? 1 : 2;
        while (i < n && !is_space(t[i]) && (is_letter(t[i]) ? 0 : is_digit(t[i]) ? 1 : 2) == cls)
            i++;
        return i;
    }
    while (i < n && is_space(t[i]))
        i++;
    /* Leave the last space to the word that follows, as (?!\S) does. */
    return i < n && i > 1 ? i - 1 : i;
}

/* Merges the ids w[0..m) by rank; returns the new count. */
static int64_t merge_piece(const tg_bpe *b, int32_t *w, int64_t m) {
    while (m > 1) {
        int32_t best = -1, id = -1;
        for (int64_t i = 0; i + 1 < m; i++) {
            const struct merge *mg = mfind(b, (uint64_t)w[i] << 32 | (uint32_t)w[i + 1]);
            if (mg->rank >= 0 && (best < 0 || mg->rank < best)) {
                best = mg->rank;
                id = mg->id;
            }
        }
        if (best < 0)
            break;
        /* Every occurrence of the best pair, left to right. */
        int64_t o = 0;
        for (int64_t i = 0; i < m; i++) {
            if (i + 1 < m && mfind(b, (uint64_t)w[i] << 32 | (uint32_t)w[i + 1])->rank == best) {
                w[o++] = id;
                i++;
            } else {
                w[o++] = w[i];
            }
        }
        m = o;
    }
    return m;
}

int64_t tg_bpe_encode(tg_bpe *b, const unsigned char *text, int64_t len, uint16_t *ids) {
    int64_t out = 0;
    for (int64_t i = 0; i < len;) {
        int64_t pl = piece(text + i, len - i), m = pl;
        if (m > b->wcap) {
            int32_t *w = realloc(b->work, (size_t)m * sizeof *w);
            if (!w)
                return -1;
            b->work = w;
            b->wcap = m;
        }
        for (int64_t k = 0; k < m; k++)
            b->work[k] = b->byte_id[text[i + k]];
        m = merge_piece(b, b->work, m);
        for (int64_t k = 0; k < m; k++)
            ids[out++] = (uint16_t)b->work[k];
        i += pl;
    }
    return out;
}
