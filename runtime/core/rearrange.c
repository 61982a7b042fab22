/* einops-style rearrange, built from reshape and permute (so it needs no
 * backward rule of its own): split the left side's groups into elementary
 * axes, permute them into the right side's order, merge the right's groups. */
#include "checked.h"
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RA_MAX_NAME 16

typedef struct {
    int n;                          /* elementary axes */
    char names[TG_MAX_DIMS][RA_MAX_NAME];
    int ngroups;
    int group_start[TG_MAX_DIMS + 1]; /* group g covers axes [start[g], start[g+1]) */
} ra_side;

static int find_name(const ra_side *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name))
            return i;
    return -1;
}

/* Parses "a (b1 b2) c" into axes and groups. Returns false with a message. */
static bool parse_side(tg_ctx *ctx, const char *p, const char *end, ra_side *s)
{
    memset(s, 0, sizeof *s);
    bool in_group = false;
    while (p < end) {
        if (isspace((unsigned char)*p)) {
            p++;
        } else if (*p == '(') {
            if (in_group)
                return tg__fail(ctx, TG_ERR_INVALID, "rearrange: nested '(' in pattern"), false;
            if (s->ngroups == TG_MAX_DIMS)
                return tg__fail(ctx, TG_ERR_INVALID, "rearrange: too many groups"), false;
            in_group = true;
            s->group_start[s->ngroups++] = s->n;
            p++;
        } else if (*p == ')') {
            if (!in_group)
                return tg__fail(ctx, TG_ERR_INVALID, "rearrange: unmatched ')' in pattern"), false;
            in_group = false;
            p++;
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            const char *q = p;
            while (q < end && (isalnum((unsigned char)*q) || *q == '_'))
                q++;
            if (q - p >= RA_MAX_NAME || s->n == TG_MAX_DIMS)
                return tg__fail(ctx, TG_ERR_INVALID, "rearrange: axis name too long or too many "
                                "axes"), false;
            memcpy(s->names[s->n], p, (size_t)(q - p));
            if (find_name(s, s->names[s->n]) >= 0)
                return tg__fail(ctx, TG_ERR_INVALID, "rearrange: axis '%s' appears twice on one "
                                "side", s->names[s->n]), false;
            if (!in_group) {
                if (s->ngroups == TG_MAX_DIMS)
                    return tg__fail(ctx, TG_ERR_INVALID, "rearrange: too many groups"), false;
                s->group_start[s->ngroups++] = s->n;
            }
            s->n++;
            p = q;
        } else {
            return tg__fail(ctx, TG_ERR_INVALID, "rearrange: unexpected character '%c' in "
                            "pattern", *p), false;
        }
    }
    if (in_group)
        return tg__fail(ctx, TG_ERR_INVALID, "rearrange: unclosed '(' in pattern"), false;
    s->group_start[s->ngroups] = s->n;
    return true;
}

/* "b1=2, a=3": looks up name; returns -1 when not given, -2 on a syntax error. */
static int64_t given_size(const char *sizes, const char *name)
{
    if (!sizes)
        return -1;
    size_t len = strlen(name);
    for (const char *p = sizes; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *eq = strchr(p, '=');
        if (!*p)
            break;
        if (!eq)
            return -2;
        const char *k = p, *kend = eq;
        while (kend > k && kend[-1] == ' ')
            kend--;
        char *num_end;
        long long v = strtoll(eq + 1, &num_end, 10);
        if (num_end == eq + 1)
            return -2;
        if ((size_t)(kend - k) == len && !strncmp(k, name, len))
            return v;
        p = num_end;
    }
    return -1;
}

/* Sizes of the left side's elementary axes from the tensor's shape. */
static bool infer_sizes(tg_ctx *ctx, const ra_side *l, const tg_tensor *a, const char *sizes,
                        int64_t *size)
{
    if (l->ngroups != a->ndim) {
        char b[96];
        return tg__fail(ctx, TG_ERR_SHAPE, "rearrange: pattern has %d dims on the left, tensor %s "
                        "has %d", l->ngroups, tg_shape_str(a, b, sizeof b), a->ndim), false;
    }
    for (int g = 0; g < l->ngroups; g++) {
        int64_t known = 1;
        int unknown = -1;
        for (int i = l->group_start[g]; i < l->group_start[g + 1]; i++) {
            size[i] = given_size(sizes, l->names[i]);
            if (size[i] == -2)
                return tg__fail(ctx, TG_ERR_INVALID, "rearrange: bad sizes \"%s\" (want "
                                "name=value,...)", sizes), false;
            if (size[i] >= 0) {
                if (!tg__mul_i64(known, size[i], &known))
                    return tg__fail(ctx, TG_ERR_SHAPE, "rearrange: the sizes \"%s\" of dim %d "
                                    "multiply past an int64_t", sizes, g), false;
            } else if (unknown >= 0)
                return tg__fail(ctx, TG_ERR_INVALID, "rearrange: cannot infer both '%s' and "
                                "'%s': give one size", l->names[unknown], l->names[i]), false;
            else
                unknown = i;
        }
        if (unknown >= 0)
            size[unknown] = known ? a->shape[g] / known : 0;
        if (a->shape[g] != (unknown >= 0 ? size[unknown] * known : known) ||
            (unknown >= 0 && known && a->shape[g] % known))
            return tg__fail(ctx, TG_ERR_SHAPE, "rearrange: dim %d of size %lld does not split as "
                            "the pattern and sizes say", g, (long long)a->shape[g]), false;
    }
    return true;
}

tg_tensor *tg_rearrange(tg_ctx *ctx, tg_tensor *a, const char *pattern, const char *sizes)
{
    if (!tg__check_args(ctx, "rearrange", 1, &a))
        return NULL;
    const char *arrow = pattern ? strstr(pattern, "->") : NULL;
    if (!arrow)
        return tg__fail(ctx, TG_ERR_INVALID, "rearrange: pattern must look like \"a b -> b a\""),
               NULL;
    ra_side l, r;
    if (!parse_side(ctx, pattern, arrow, &l) ||
        !parse_side(ctx, arrow + 2, arrow + strlen(arrow), &r))
        return NULL;
    if (l.n != r.n)
        return tg__fail(ctx, TG_ERR_INVALID, "rearrange: the two sides name different axes"), NULL;
    int perm[TG_MAX_DIMS];
    for (int i = 0; i < r.n; i++)
        if ((perm[i] = find_name(&l, r.names[i])) < 0)
            return tg__fail(ctx, TG_ERR_INVALID, "rearrange: axis '%s' is not on the left side",
                            r.names[i]), NULL;
    int64_t size[TG_MAX_DIMS], out_shape[TG_MAX_DIMS];
    if (!infer_sizes(ctx, &l, a, sizes, size))
        return NULL;
    for (int g = 0; g < r.ngroups; g++) {
        out_shape[g] = 1;
        for (int i = r.group_start[g]; i < r.group_start[g + 1]; i++)
            if (!tg__mul_i64(out_shape[g], size[perm[i]], &out_shape[g]))
                return tg__fail(ctx, TG_ERR_SHAPE, "rearrange: output dim %d of \"%s\" has more "
                                "elements than an int64_t counts", g, pattern), NULL;
    }
    tg_tensor *t = tg_reshape(ctx, a, l.n, size);
    t = tg_permute(ctx, t, perm);
    return tg_reshape(ctx, t, r.ngroups, out_shape);
}
