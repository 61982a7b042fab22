/*
 * tests/optim_fixtures.h: the optimizer, clipping and schedule fixtures of
 * tests/test_optim.c (included once, by it): their storage and the parser of
 * tests/fixtures/optim.txt, written by tests/gen_optim_fixtures.py.
 */
/* ---- fixture storage ---- */

typedef struct fx_vec {
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t n;
    double *v; /* NULL: "none" */
} fx_vec;

typedef struct fx_state {
    int dt; /* 0 f64, 1 f32 */
    int idx;
    char key[32];
    fx_vec val;
} fx_state;

typedef struct fx_optim {
    char id[64];
    tg_optim_config cfg;
    int nsteps, np;
    char pname[MAXP][16];
    fx_vec init[MAXP];
    fx_vec grad[MAXSTEPS][MAXP];
    double lr[MAXSTEPS];
    fx_vec expect[2][MAXSTEPS][MAXP];
    fx_state state[MAXSTATE * 2];
    int nstate;
} fx_optim;

typedef struct fx_clip {
    char id[64];
    int np;
    double max_norm;
    fx_vec grad[MAXP];
    double total[2];
    fx_vec clipped[2][MAXP];
} fx_clip;

typedef struct fx_sched {
    char kind[16], id[32];
    int n;
    double lr;
    double a, b; /* warmup: W; step: step_size, gamma; cosine: t_max, min_lr */
    double v[64];
} fx_sched;

static fx_optim g_opt[MAXCASES];
static int g_nopt;
static fx_clip g_clip[MAXCASES];
static int g_nclip;
static fx_sched g_sched[MAXCASES];
static int g_nsched;
static char g_load_error[512];
static void *g_keep[8192];
static int g_nkeep;

static double *keep_doubles(int64_t n)
{
    if (g_nkeep == (int)(sizeof g_keep / sizeof g_keep[0]))
        return NULL;
    double *p = calloc((size_t)(n ? n : 1), sizeof *p);
    if (p)
        g_keep[g_nkeep++] = p;
    return p;
}

static void free_kept(void)
{
    for (int i = 0; i < g_nkeep; i++)
        free(g_keep[i]);
    g_nkeep = 0;
}

/* ---- parsing ---- */

static int split(char *s, char **tok, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) {
        if (n == max)
            return -1;
        tok[n++] = t;
    }
    return n;
}

static bool to_f64(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return !(errno == ERANGE || *end || end == s);
}

static bool to_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    *out = (int)v;
    return !(errno || *end || end == s);
}

/* Parses the values after " : " into v, which must hold exactly n of them
 * (n < 0: as many as there are, into a fresh vector). */
static const char *parse_values(char *vals, fx_vec *v, int64_t n)
{
    int64_t cap = n >= 0 ? n : 64;
    v->v = keep_doubles(cap);
    if (!v->v)
        return "out of memory";
    int64_t k = 0;
    char *save = NULL;
    for (char *t = strtok_r(vals, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save)) {
        if (k == cap)
            return "too many values";
        if (!to_f64(t, &v->v[k++]))
            return "bad value";
    }
    if (n >= 0 && k != n)
        return "wrong number of values";
    v->n = k;
    return NULL;
}

/* Splits "<head...> : <values>" at the colon. */
static char *cut_values(char *line)
{
    char *c = strstr(line, " : ");
    if (!c)
        return NULL;
    *c = '\0';
    return c + 3;
}

static const char *parse_shape(char **tok, int ntok, fx_vec *v)
{
    if (ntok < 1 || !to_int(tok[0], &v->ndim) || v->ndim < 0 || v->ndim > TG_MAX_DIMS ||
        ntok != 1 + v->ndim)
        return "bad shape";
    v->n = 1;
    for (int d = 0; d < v->ndim; d++) {
        int s;
        if (!to_int(tok[1 + d], &s) || s < 0)
            return "bad dim";
        v->shape[d] = s;
        v->n *= s;
    }
    return NULL;
}

static const char *parse_cfg(fx_optim *o, char **tok, int n)
{
    if (n < 5 || g_nopt == MAXCASES)
        return "bad optim line";
    snprintf(o->id, sizeof o->id, "%s", tok[1]);
    tg_optim_kind kind = strcmp(tok[2], "sgd") == 0    ? TG_OPTIM_SGD
                         : strcmp(tok[2], "adam") == 0 ? TG_OPTIM_ADAM
                                                       : TG_OPTIM_ADAMW;
    o->cfg = tg_optim_defaults(kind);
    if (!to_int(tok[3], &o->nsteps) || !to_int(tok[4], &o->np) || o->nsteps > MAXSTEPS ||
        o->np > MAXP)
        return "bad step or parameter count";
    for (int i = 5; i < n; i++) {
        char *eq = strchr(tok[i], '=');
        double x;
        if (!eq || !to_f64(eq + 1, &x))
            return "bad key=value";
        *eq = '\0';
        const char *k = tok[i];
        if (!strcmp(k, "lr")) o->cfg.lr = x;
        else if (!strcmp(k, "momentum")) o->cfg.momentum = x;
        else if (!strcmp(k, "dampening")) o->cfg.dampening = x;
        else if (!strcmp(k, "nesterov")) o->cfg.nesterov = x != 0.0;
        else if (!strcmp(k, "weight_decay")) o->cfg.weight_decay = x;
        else if (!strcmp(k, "beta1")) o->cfg.beta1 = x;
        else if (!strcmp(k, "beta2")) o->cfg.beta2 = x;
        else if (!strcmp(k, "eps")) o->cfg.eps = x;
        else return "unknown key";
    }
    return NULL;
}

static int dt_index(const char *s) { return strcmp(s, "f64") == 0 ? 0 : 1; }

static bool in_range(int v, int hi) { return v >= 0 && v < hi; }

/* One line of an optim block. */
static const char *parse_optim_line(fx_optim *o, char *line)
{
    char *vals = cut_values(line);
    char *tok[16];
    int n = split(line, tok, 16), a, b;
    if (n < 1)
        return "empty line";
    if (!strcmp(tok[0], "param")) {
        if (n < 3 || !to_int(tok[1], &a) || !in_range(a, o->np) || !vals)
            return "bad param line";
        snprintf(o->pname[a], sizeof o->pname[a], "%s", tok[2]);
        const char *e = parse_shape(tok + 3, n - 3, &o->init[a]);
        return e ? e : parse_values(vals, &o->init[a], o->init[a].n);
    }
    if (!strcmp(tok[0], "lr")) {
        if (n != 3 || !to_int(tok[1], &a) || !in_range(a, o->nsteps) || !to_f64(tok[2], &o->lr[a]))
            return "bad lr line";
        return NULL;
    }
    if (!strcmp(tok[0], "grad")) {
        if (n < 3 || !to_int(tok[1], &a) || !to_int(tok[2], &b) || !in_range(a, o->nsteps) ||
            !in_range(b, o->np))
            return "bad grad line";
        fx_vec *g = &o->grad[a][b];
        *g = o->init[b];
        g->v = NULL;
        if (n == 4 && !strcmp(tok[3], "none"))
            return NULL;
        return vals ? parse_values(vals, g, g->n) : "grad without values";
    }
    if (!strcmp(tok[0], "expect")) {
        if (n != 4 || !to_int(tok[2], &a) || !to_int(tok[3], &b) || !in_range(a, o->nsteps) ||
            !in_range(b, o->np) || !vals)
            return "bad expect line";
        fx_vec *e = &o->expect[dt_index(tok[1])][a][b];
        *e = o->init[b];
        return parse_values(vals, e, e->n);
    }
    if (!strcmp(tok[0], "state")) {
        if (n != 4 || !to_int(tok[2], &a) || !in_range(a, o->np) || !vals ||
            o->nstate == MAXSTATE * 2)
            return "bad state line";
        fx_state *s = &o->state[o->nstate++];
        s->dt = dt_index(tok[1]);
        s->idx = a;
        snprintf(s->key, sizeof s->key, "%s", tok[3]);
        return parse_values(vals, &s->val, -1);
    }
    return "unknown line in an optim block";
}

static const char *parse_clip_line(fx_clip *c, char *line)
{
    char *vals = cut_values(line);
    char *tok[16];
    int n = split(line, tok, 16), a;
    if (n < 2)
        return "short line";
    if (!strcmp(tok[0], "cgrad")) {
        if (!to_int(tok[1], &a) || !in_range(a, c->np))
            return "bad cgrad line";
        if (n == 3 && !strcmp(tok[2], "none"))
            return NULL;
        const char *e = parse_shape(tok + 2, n - 2, &c->grad[a]);
        return e ? e : vals ? parse_values(vals, &c->grad[a], c->grad[a].n) : "no values";
    }
    if (!strcmp(tok[0], "total"))
        return n == 3 && to_f64(tok[2], &c->total[dt_index(tok[1])]) ? NULL : "bad total line";
    if (!strcmp(tok[0], "clipped")) {
        if (n != 3 || !to_int(tok[2], &a) || !in_range(a, c->np) || !vals)
            return "bad clipped line";
        fx_vec *v = &c->clipped[dt_index(tok[1])][a];
        *v = c->grad[a];
        return parse_values(vals, v, v->n);
    }
    return "unknown line in a clip block";
}

static const char *parse_sched(char *line)
{
    char *vals = cut_values(line);
    char *tok[16];
    int n = split(line, tok, 16);
    if (!vals || n < 6 || g_nsched == MAXCASES)
        return "bad sched line";
    fx_sched *s = &g_sched[g_nsched++];
    snprintf(s->kind, sizeof s->kind, "%s", tok[1]);
    snprintf(s->id, sizeof s->id, "%s", tok[2]);
    if (!to_int(tok[3], &s->n) || s->n > 64 || !to_f64(tok[4], &s->lr) || !to_f64(tok[5], &s->a))
        return "bad sched fields";
    if (n > 6 && !to_f64(tok[6], &s->b))
        return "bad sched fields";
    fx_vec v;
    const char *e = parse_values(vals, &v, s->n);
    if (!e)
        memcpy(s->v, v.v, (size_t)s->n * sizeof(double));
    return e;
}

/* Reads the fixture file; on failure g_load_error says where and why. */
static void load_fixtures(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(g_load_error, sizeof g_load_error, "%s: %s", path, strerror(errno));
        return;
    }
    static char line[1 << 16];
    int lineno = 0;
    fx_optim *o = NULL;
    fx_clip *c = NULL;
    const char *err = NULL;
    while (!err && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char head[16] = {0};
        sscanf(line, "%15s", head);
        if (!strcmp(head, "end")) {
            o = NULL;
            c = NULL;
        } else if (o) {
            err = parse_optim_line(o, line);
        } else if (c) {
            err = parse_clip_line(c, line);
        } else if (!strcmp(head, "optim")) {
            char *tok[32];
            o = &g_opt[g_nopt];
            int n = split(line, tok, 32);
            err = n < 0 ? "too many fields" : parse_cfg(o, tok, n);
            g_nopt++;
        } else if (!strcmp(head, "clip")) {
            char *tok[8];
            if (g_nclip == MAXCASES || split(line, tok, 8) != 4)
                err = "bad clip line";
            c = &g_clip[g_nclip++];
            if (!err && (!to_int(tok[2], &c->np) || c->np > MAXP || !to_f64(tok[3], &c->max_norm)))
                err = "bad clip fields";
            if (!err)
                snprintf(c->id, sizeof c->id, "%s", tok[1]);
        } else if (!strcmp(head, "sched")) {
            err = parse_sched(line);
        } else {
            err = "unknown block";
        }
    }
    fclose(f);
    if (err)
        snprintf(g_load_error, sizeof g_load_error, "%s:%d: %s", path, lineno, err);
}

