/*
 * tests/torch_fixtures_load.h: the PyTorch fixture file tests/fixtures/ops.txt
 * (format: tests/gen_fixtures.py) read into memory, and the op names its
 * cases may carry. Shared by test_torch_fixtures.c, which runs every case,
 * and test_torch_fixture_coverage.c, which checks that every ops.def row has
 * a case and that every case names an op that exists.
 *
 * load_fixtures() appends a file's cases to g_cases / g_ncases (ops.txt,
 * then fixtures/attn.txt, which a torch 2 generator writes), or sets
 * g_load_error (file:line: what is wrong) and returns -1; free_cases() releases them. Include after
 * <cmocka.h>. Everything is static inline so that a test uses only what it
 * needs.
 */
#ifndef TG_TESTS_TORCH_FIXTURES_LOAD_H
#define TG_TESTS_TORCH_FIXTURES_LOAD_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/runtime.h"

#define FX_MAX_PARAMS 16
#define FX_MAX_OUTPUTS 8
#define FX_NAME_LEN 64

/* ---- the fixture file ---- */

typedef struct fx_param {
    char key[FX_NAME_LEN];
    int ntok;
    char **tok; /* the values, as written (pointing into buf) */
    char *buf;
    char *rest; /* everything after the key (string params) */
} fx_param;

typedef struct fx_tensor {
    char name[FX_NAME_LEN];
    char dtype[8]; /* "f64", "i64", "u8" */
    bool rg;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t numel;
    double *v;
} fx_tensor;

typedef struct fx_case {
    char op[FX_NAME_LEN];
    char id[FX_NAME_LEN];
    const char *file; /* the fixture file's name, without its folder */
    int line;
    int nparams, ninputs, noutputs, nseeds, ngrads;
    fx_param params[FX_MAX_PARAMS];
    fx_tensor inputs[TG_MAX_INPUTS];
    fx_tensor outputs[FX_MAX_OUTPUTS];
    fx_tensor seeds[FX_MAX_OUTPUTS];
    fx_tensor grads[TG_MAX_INPUTS];
} fx_case;

static fx_case *g_cases;
static int g_ncases;
static int g_capcases;
static char g_load_error[512];

/* ---- parsing ---- */

static inline int load_error(const char *path, int line, const char *msg) {
    snprintf(g_load_error, sizeof g_load_error, "%s:%d: %s", path, line, msg);
    return -1;
}

static inline char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Splits s in place at whitespace; returns the number of tokens. */
static inline int split(char *s, char **tok, int max) {
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == max)
            return -1;
        tok[n++] = t;
    }
    return n;
}

static inline bool parse_i64(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s)
        return false;
    *out = (int64_t)v;
    return true;
}

static inline bool parse_f64(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno == ERANGE || *end || end == s)
        return false;
    *out = v;
    return true;
}

/*
 * "<head tokens> <ndim> <dims...> : <values...>" with `nhead` tokens before
 * ndim (a name, a dtype, a flag: whatever the line kind has).
 */
static inline const char *parse_tensor(char *line, int nhead, char **head, fx_tensor *t) {
    char *colon = strstr(line, " :");
    if (!colon)
        return "missing ' :' before the values";
    *colon = '\0';
    char *vals = colon + 2;
    char *tok[4 + TG_MAX_DIMS + 2];
    int n = split(line, tok, (int)(sizeof tok / sizeof tok[0]));
    if (n < nhead + 2) /* kind, head..., ndim */
        return "too few fields";
    for (int i = 0; i < nhead; i++)
        head[i] = tok[1 + i];
    int64_t ndim;
    if (!parse_i64(tok[1 + nhead], &ndim) || ndim < 0 || ndim > TG_MAX_DIMS)
        return "bad ndim";
    if (n != 2 + nhead + ndim)
        return "dims do not match ndim";
    t->ndim = (int)ndim;
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (!parse_i64(tok[2 + nhead + d], &t->shape[d]) || t->shape[d] < 0)
            return "bad dim";
        t->numel *= t->shape[d];
    }
    t->v = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(double));
    if (!t->v)
        return "out of memory";
    int64_t k = 0;
    char *save = NULL;
    for (char *v = strtok_r(vals, " \t", &save); v; v = strtok_r(NULL, " \t", &save)) {
        if (k == t->numel)
            return "more values than the shape holds";
        if (!parse_f64(v, &t->v[k]))
            return "bad value";
        k++;
    }
    if (k != t->numel)
        return "fewer values than the shape holds";
    return NULL;
}

static inline void free_cases(void) {
    for (int i = 0; i < g_ncases; i++) {
        fx_case *c = &g_cases[i];
        for (int j = 0; j < c->nparams; j++) {
            free(c->params[j].tok);
            free(c->params[j].buf);
            free(c->params[j].rest);
        }
        for (int j = 0; j < c->ninputs; j++)
            free(c->inputs[j].v);
        for (int j = 0; j < c->noutputs; j++)
            free(c->outputs[j].v);
        for (int j = 0; j < c->nseeds; j++)
            free(c->seeds[j].v);
        for (int j = 0; j < c->ngrads; j++)
            free(c->grads[j].v);
    }
    free(g_cases);
    g_cases = NULL;
    g_ncases = g_capcases = 0;
}

static inline int load_fixtures(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return load_error(path, 0, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    fx_case *c = NULL; /* the open case, if any */
    while (getline(&line, &cap, f) != -1) {
        lineno++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        const char *err = NULL;
        if (strncmp(line, "case ", 5) == 0) {
            if (c) {
                rc = load_error(path, lineno, "'case' before 'end'");
                break;
            }
            if (g_ncases == g_capcases) {
                g_capcases = g_capcases ? 2 * g_capcases : 64;
                fx_case *p = realloc(g_cases, (size_t)g_capcases * sizeof *p);
                if (!p) {
                    rc = load_error(path, lineno, "out of memory");
                    break;
                }
                g_cases = p;
            }
            c = &g_cases[g_ncases++];
            memset(c, 0, sizeof *c);
            c->file = base;
            c->line = lineno;
            char *tok[4];
            if (split(line, tok, 4) != 3 || strlen(tok[1]) >= FX_NAME_LEN ||
                strlen(tok[2]) >= FX_NAME_LEN) {
                rc = load_error(path, lineno, "expected 'case <op> <id>'");
                break;
            }
            strcpy(c->op, tok[1]);
            strcpy(c->id, tok[2]);
            continue;
        }
        if (!c) {
            rc = load_error(path, lineno, "line outside a case");
            break;
        }
        if (strcmp(line, "end") == 0) {
            if (c->noutputs == 0)
                err = "case without an output";
            c = NULL;
        } else if (strncmp(line, "param ", 6) == 0) {
            if (c->nparams == FX_MAX_PARAMS) {
                err = "too many params";
            } else {
                fx_param *p = &c->params[c->nparams++];
                char *key = line + 6;
                char *sp = strchr(key, ' ');
                const char *rest = sp ? sp + 1 : "";
                if (sp)
                    *sp = '\0';
                if (strlen(key) >= FX_NAME_LEN) {
                    err = "param key too long";
                } else {
                    strcpy(p->key, key);
                    p->rest = xstrdup(rest);
                    p->buf = xstrdup(rest);
                    int maxtok = (int)strlen(rest) / 2 + 1;
                    p->tok = calloc((size_t)maxtok, sizeof(char *));
                    if (!p->rest || !p->buf || !p->tok)
                        err = "out of memory";
                    else
                        p->ntok = split(p->buf, p->tok, maxtok);
                }
            }
        } else if (strncmp(line, "input ", 6) == 0) {
            if (c->ninputs == TG_MAX_INPUTS) {
                err = "too many inputs";
            } else {
                fx_tensor *t = &c->inputs[c->ninputs++];
                char *head[3];
                err = parse_tensor(line, 3, head, t);
                if (!err) {
                    if (strlen(head[0]) >= FX_NAME_LEN || strlen(head[1]) >= sizeof t->dtype)
                        err = "name or dtype too long";
                    else if (strcmp(head[2], "0") && strcmp(head[2], "1"))
                        err = "requires_grad must be 0 or 1";
                    else {
                        strcpy(t->name, head[0]);
                        strcpy(t->dtype, head[1]);
                        t->rg = head[2][0] == '1';
                    }
                }
            }
        } else if (strncmp(line, "output ", 7) == 0) {
            if (c->noutputs == FX_MAX_OUTPUTS) {
                err = "too many outputs";
            } else {
                fx_tensor *t = &c->outputs[c->noutputs++];
                char *head[1];
                err = parse_tensor(line, 1, head, t);
                if (!err) {
                    if (strlen(head[0]) >= sizeof t->dtype)
                        err = "dtype too long";
                    else
                        strcpy(t->dtype, head[0]);
                }
            }
        } else if (strncmp(line, "seed ", 5) == 0) {
            if (c->nseeds == FX_MAX_OUTPUTS) {
                err = "too many seeds";
            } else {
                fx_tensor *t = &c->seeds[c->nseeds++];
                strcpy(t->dtype, "f64");
                err = parse_tensor(line, 0, NULL, t);
            }
        } else if (strncmp(line, "grad ", 5) == 0) {
            if (c->ngrads == TG_MAX_INPUTS) {
                err = "too many grads";
            } else {
                fx_tensor *t = &c->grads[c->ngrads++];
                char *head[1];
                strcpy(t->dtype, "f64");
                err = parse_tensor(line, 1, head, t);
                if (!err) {
                    if (strlen(head[0]) >= FX_NAME_LEN)
                        err = "name too long";
                    else
                        strcpy(t->name, head[0]);
                }
            }
        } else {
            err = "unknown line kind";
        }
        if (err) {
            rc = load_error(path, lineno, err);
            break;
        }
    }
    if (rc == 0 && c)
        rc = load_error(path, lineno, "file ends inside a case");
    if (rc == 0 && g_ncases == 0)
        rc = load_error(path, lineno, "no cases");
    free(line);
    fclose(f);
    return rc;
}

/* ---- the op names a case may carry ---- */

/* The composite functions (not ops.def rows) that fixtures also cover. */
static const char *const k_composites[] = {
    "transpose", "stack", "chunk", "rearrange", "sum_to", "add_scalar", "mul_scalar", "contiguous",
    "linear", "mse_loss", "batchnorm", "layernorm", "embedding",
};

/* The composite functions of ops_math2.c (not ops.def rows) that fixtures
 * also cover. */
static const char *const k_composites2[] = {
    "topk", "logsumexp", "var", "std", "index_select", "masked_fill", "squeeze", "unsqueeze",
};

/* The composite of runtime/core/ops_attn.c that fixtures/attn.txt covers. */
static const char *const k_composites_attn[] = {"attention_composed"};

/* The ops.def row called name, or -1. */
static inline int op_by_name(const char *name) {
    for (int op = 0; op < TG_OP_COUNT; op++)
        if (strcmp(tg_op_name((tg_op)op), name) == 0)
            return op;
    return -1;
}

#endif
