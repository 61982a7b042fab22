/*
 * launch/cmd_export.c: `tapegrad export --ckpt FILE --format safetensors
 * --out model.safetensors`.
 *
 * Writes a checkpoint's parameters and buffers in the safetensors format: an
 * 8-byte little-endian header length, a JSON header mapping each tensor name
 * to {"dtype", "shape", "data_offsets"}, then the raw little-endian data.
 * tapegrad already names tensors as PyTorch's state_dict names the same
 * layers ("conv1.weight", "bn1.running_mean"), so the file loads into the
 * equivalent torch.nn.Module with load_state_dict. Optimizer state ("optim.*")
 * is left out unless --include-optimizer is given.
 *
 * The checkpoint is read and verified in full (its header, every checksum,
 * every size bounded by the file's) and checked against the model its
 * metadata names: every parameter and buffer of that model with its shape
 * and dtype, and nothing else but optimizer state, so that the result loads
 * with a strict load_state_dict. The output is written under a temporary
 * name and renamed, so a failed export never leaves a partial file under the
 * requested name, and it only ever replaces a regular file.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tapegrad/checkpoint.h"
#include "tapegrad/trainer.h"

/* The tensors to write: pointers into the checkpoint's list. */
typedef struct ex_list {
    const tg_ckpt_tensor **t;
    int n;
} ex_list;

static void export_usage(FILE *f) {
    fprintf(f, "usage: tapegrad export --ckpt FILE.h5 --out FILE.safetensors [options]\n"
               "\n"
               "Writes the parameters and buffers of a checkpoint as safetensors, named as\n"
               "PyTorch's state_dict names the same layers (load with safetensors or by\n"
               "hand: 8-byte header length, JSON header, raw little-endian data).\n"
               "\n"
               "options:\n"
               "  --ckpt FILE.h5        the checkpoint to export (required)\n"
               "  --out FILE            the file to write (required)\n"
               "  --format NAME         safetensors (the only format; default)\n"
               "  --include-optimizer   also export the optimizer state (optim.*)\n"
               "  -h, --help            print this help and exit\n"
               "\n"
               "exit codes: 0 success, 1 runtime error, 2 usage error, 3 data error\n");
}

/* The safetensors name of a dtype. */
static const char *st_dtype(tg_dtype dt) {
    switch (dt) {
    case TG_F32:
        return "F32";
    case TG_F64:
        return "F64";
    case TG_U8:
        return "U8";
    case TG_I32:
        return "I32";
    case TG_I64:
        return "I64";
    case TG_BF16:
        return "BF16";
    default:
        return NULL;
    }
}

static const tg_ckpt_tensor *find(const tg_ckpt_tensor *ts, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(ts[i].name, name) == 0)
            return &ts[i];
    return NULL;
}

/* dim d of tensor `name` in the file, or `def` when it is absent or smaller. */
static int64_t dim_of(const tg_ckpt_tensor *ts, int n, const char *name, int ndim, int d,
                      int64_t def) {
    const tg_ckpt_tensor *t = find(ts, n, name);
    return t && t->ndim == ndim && t->shape[d] > 0 ? t->shape[d] : def;
}

/* The input shape and classes that give the file's layer shapes: the first
 * layer's inputs and the last layer's outputs (the CNNs see H/4 x W/4 after
 * two poolings, so H = 4 and W = 4 x the rest gives the same shapes). */
static void model_dims(tg_model_kind kind, const tg_ckpt_tensor *ts, int n, int64_t in[3],
                       int64_t *classes) {
    in[0] = 1;
    in[1] = in[2] = 28;
    if (kind == TG_MODEL_MLP) {
        int64_t d = dim_of(ts, n, "fc1.weight", 2, 1, 0);
        *classes = dim_of(ts, n, "fc3.weight", 2, 0, dim_of(ts, n, "fc3.bias", 1, 0, 10));
        if (d > 0) {
            in[1] = 1;
            in[2] = d;
        }
        return;
    }
    int64_t d = dim_of(ts, n, "fc1.weight", 2, 1, 0);
    in[0] = dim_of(ts, n, "conv1.weight", 4, 1, 1);
    *classes = dim_of(ts, n, "fc2.weight", 2, 0, dim_of(ts, n, "fc2.bias", 1, 0, 10));
    if (d > 0 && d % 64 == 0) {
        in[1] = 4;
        in[2] = 4 * (d / 64);
    }
}

static void shape_str(int ndim, const int64_t *s, char *buf, size_t len) {
    size_t off = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (off < len)
        snprintf(buf + off, len - off, ndim == 1 ? ",)" : ")");
}

bool tg_train_ckpt_fits(const char *model, const tg_params *ps, const tg_ckpt_tensor *ts, int n,
                        char *why, size_t whylen) {
    char a[128], b[128];
    for (int i = 0; i < ps->nparams + ps->nbuffers; i++) {
        const tg_tensor *t = i < ps->nparams ? ps->params[i] : ps->buffers[i - ps->nparams];
        const tg_ckpt_tensor *x = find(ts, n, t->name ? t->name : "");
        shape_str(t->ndim, t->shape, b, sizeof b);
        if (!x) {
            snprintf(why, whylen, "tensor '%s' %s %s of model '%s' is missing from the file",
                     t->name ? t->name : "?", b, tg_dtype_name(t->dtype), model);
            return false;
        }
        if (x->ndim != t->ndim || x->dtype != t->dtype ||
            memcmp(x->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim) != 0) {
            shape_str(x->ndim, x->shape, a, sizeof a);
            snprintf(why, whylen, "tensor '%s' is %s %s in the file but %s %s in model '%s'",
                     t->name, a, tg_dtype_name(x->dtype), b, tg_dtype_name(t->dtype), model);
            return false;
        }
    }
    return true;
}

/* Checks the file's tensors against the model its metadata names: every
 * parameter and buffer present with its shape and dtype, nothing else but
 * optimizer state. Prints the first problem; returns an exit code. */
static int check_model(const char *path, const tg_ckpt_meta *m, const tg_ckpt_tensor *ts, int n) {
    tg_model_kind kind = TG_MODEL_MLP;
    if (!m->model_text && !tg_model_from_name(m->model, &kind)) {
        fprintf(stderr,
                "tapegrad export: %s: unknown model '%s' and no model file stored (expected mlp, "
                "cnn or cnn-bn)\n",
                path, m->model);
        return TG_EXIT_DATA;
    }
    tg_ctx *ctx;
    if (tg_ctx_new(NULL, &ctx) != TG_OK) {
        fprintf(stderr, "tapegrad export: %s\n", tg_last_init_error());
        return TG_EXIT_RUNTIME;
    }
    tg_model md;
    int64_t in[3], classes;
    int code = TG_EXIT_OK;
    tg_status s;
    if (m->model_text) {
        /* The model file it stores, built for the shape it was trained on. */
        memcpy(in, m->model_input, sizeof in);
        classes = m->model_classes;
        int nd = m->model_input_ndim == 1 ? 1 : 3;
        s = tg_model_init_sample(ctx, &md, m->model, m->model_text, nd, in + 3 - nd, classes, 0);
    } else {
        model_dims(kind, ts, n, in, &classes);
        s = tg_model_init(ctx, &md, kind, in, classes, 0);
    }
    if (s != TG_OK) {
        fprintf(stderr, "tapegrad export: %s: the tensors do not describe a model '%s': %s\n", path,
                m->model, tg_ctx_error(ctx));
        code = TG_EXIT_DATA;
    }
    const tg_params *ps = &md.params;
    int nm = code ? 0 : ps->nparams + ps->nbuffers;
    char why[512];
    if (!code && !tg_train_ckpt_fits(m->model, ps, ts, n, why, sizeof why)) {
        fprintf(stderr, "tapegrad export: %s: %s\n", path, why);
        code = TG_EXIT_DATA;
    }
    for (int j = 0; j < n && !code; j++) {
        bool known = strncmp(ts[j].name, "optim.", 6) == 0;
        for (int i = 0; i < nm && !known; i++) {
            const tg_tensor *t = i < ps->nparams ? ps->params[i] : ps->buffers[i - ps->nparams];
            known = strcmp(t->name, ts[j].name) == 0;
        }
        if (!known) {
            fprintf(stderr,
                    "tapegrad export: %s: the file holds tensor '%s', which model '%s' does not "
                    "have\n",
                    path, ts[j].name, m->model);
            code = TG_EXIT_DATA;
        }
    }
    tg_ctx_free(ctx);
    return code;
}

/* The tensors to export (optimizer state only when asked); prints and
 * returns an exit code. */
static int select_tensors(const char *path, const tg_ckpt_tensor *ts, int n, bool optimizer,
                          ex_list *l) {
    l->t = calloc((size_t)(n ? n : 1), sizeof *l->t);
    if (!l->t) {
        fprintf(stderr, "tapegrad export: out of memory\n");
        return TG_EXIT_RUNTIME;
    }
    for (int i = 0; i < n; i++) {
        if (!optimizer && strncmp(ts[i].name, "optim.", 6) == 0)
            continue;
        /* Names go into the JSON header verbatim. */
        for (const char *c = ts[i].name; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) {
                fprintf(stderr,
                        "tapegrad export: %s: tensor name '%s' holds a character that JSON "
                        "would need escaped\n",
                        path, ts[i].name);
                return TG_EXIT_DATA;
            }
        if (!st_dtype(ts[i].dtype)) {
            fprintf(stderr, "tapegrad export: %s: tensor '%s' has an unsupported dtype\n", path,
                    ts[i].name);
            return TG_EXIT_DATA;
        }
        l->t[l->n++] = &ts[i];
    }
    if (l->n == 0) {
        fprintf(stderr, "tapegrad export: %s holds no parameters\n", path);
        return TG_EXIT_DATA;
    }
    return TG_EXIT_OK;
}

/* Appends to a growing heap string; false when out of memory. */
static bool sb_printf(char **s, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool sb_printf(char **s, size_t *len, size_t *cap, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(*s ? *s + *len : NULL, *s ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (k < 0)
            return false;
        if (*s && *len + (size_t)k < *cap) {
            *len += (size_t)k;
            return true;
        }
        size_t ncap = (*cap ? *cap * 2 : 4096) + (size_t)k;
        char *p = realloc(*s, ncap);
        if (!p)
            return false;
        *s = p;
        *cap = ncap;
    }
}

/* The JSON header, padded with spaces to a multiple of 8 bytes. */
static char *make_header(const ex_list *l, const tg_ckpt_meta *m, size_t *hlen) {
    char *s = NULL;
    size_t len = 0, cap = 0, off = 0;
    bool ok = sb_printf(&s, &len, &cap,
                        "{\"__metadata__\":{\"format\":\"pt\",\"producer\":\"tapegrad %s\","
                        "\"model\":\"%s\",\"step\":\"%lld\"}",
                        TG_VERSION_STRING, m->model, (long long)m->step);
    for (int i = 0; ok && i < l->n; i++) {
        const tg_ckpt_tensor *t = l->t[i];
        ok = sb_printf(&s, &len, &cap, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                       st_dtype(t->dtype));
        for (int d = 0; ok && d < t->ndim; d++)
            ok = sb_printf(&s, &len, &cap, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        ok = ok && sb_printf(&s, &len, &cap, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    ok = ok && sb_printf(&s, &len, &cap, "}");
    while (ok && len % 8)
        ok = sb_printf(&s, &len, &cap, " ");
    if (!ok) {
        free(s);
        return NULL;
    }
    *hlen = len;
    return s;
}

static int write_file(const char *out, const ex_list *l, const tg_ckpt_meta *m) {
    size_t hlen = 0;
    char *hdr = make_header(l, m, &hlen);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
    /* O_EXCL: never through a file or link already at the temporary name. */
    int fd = hdr ? open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666) : -1;
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (fd >= 0 && !f)
        close(fd);
    if (!f) {
        fprintf(stderr, "tapegrad export: cannot write %s: %s\n", tmp,
                hdr ? strerror(errno) : "out of memory");
        free(hdr);
        return TG_EXIT_RUNTIME;
    }
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    bool ok = fwrite(le, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
    for (int i = 0; ok && i < l->n; i++)
        ok = fwrite(l->t[i]->data, 1, l->t[i]->nbytes, f) == l->t[i]->nbytes;
    ok = (fflush(f) == 0) && ok && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    free(hdr);
    if (!ok || rename(tmp, out) != 0) {
        fprintf(stderr, "tapegrad export: writing %s failed: %s\n", out, strerror(errno));
        unlink(tmp);
        return TG_EXIT_RUNTIME;
    }
    return TG_EXIT_OK;
}

int tg_cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *format = "safetensors";
    bool optimizer = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            export_usage(stdout);
            return TG_EXIT_OK;
        } else if (!strcmp(a, "--ckpt") && i + 1 < argc) {
            ckpt = argv[++i];
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(a, "--format") && i + 1 < argc) {
            format = argv[++i];
        } else if (!strcmp(a, "--include-optimizer")) {
            optimizer = true;
        } else if (!strcmp(a, "--ckpt") || !strcmp(a, "--out") || !strcmp(a, "--format")) {
            return tg_cli_usage_error("export", "%s needs a value", a);
        } else if (a[0] == '-') {
            static const char *const names[] = {"--ckpt", "--out", "--format",
                                                "--include-optimizer", "--help"};
            return tg_cli_unknown_option("export", a, names, sizeof names / sizeof names[0]);
        } else {
            return tg_cli_usage_error("export", "unexpected argument '%s'", a);
        }
    }
    if (strcmp(format, "safetensors") != 0) {
        fprintf(stderr, "tapegrad export: --format '%s': expected safetensors\n", format);
        return TG_EXIT_USAGE;
    }
    if (!ckpt || !out) {
        fprintf(stderr, "tapegrad export: %s is required\n", ckpt ? "--out FILE" : "--ckpt FILE");
        export_usage(stderr);
        return TG_EXIT_USAGE;
    }
    if (!ckpt[0] || !out[0]) {
        fprintf(stderr, "tapegrad export: %s: empty file name\n", ckpt[0] ? "--out" : "--ckpt");
        return TG_EXIT_USAGE;
    }
    /* The output replaces a regular file at most (renaming over a device
     * node, a FIFO, a folder or a link would replace it with a file). */
    struct stat sb;
    if (lstat(out, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        fprintf(stderr, "tapegrad export: --out %s exists and is not a regular file\n", out);
        return TG_EXIT_USAGE;
    }
    tg_ctx *ctx;
    if (tg_ctx_new(NULL, &ctx) != TG_OK) {
        fprintf(stderr, "tapegrad export: %s\n", tg_last_init_error());
        return TG_EXIT_RUNTIME;
    }
    /* Read and verified in full (the header and every checksum), then
     * checked against the model the checkpoint names. */
    tg_ckpt_meta m = {0};
    tg_ckpt_tensor *ts = NULL;
    int n = 0;
    ex_list l = {0};
    tg_status s = tg_ckpt_read_meta(ctx, ckpt, &m);
    if (!s)
        s = tg_ckpt_read_tensors(ctx, ckpt, &ts, &n);
    int rc = s ? tg_cli_exit_for_status(s) : TG_EXIT_OK;
    if (s)
        fprintf(stderr, "tapegrad export: %s\n", tg_ctx_error(ctx));
    if (!rc)
        rc = check_model(ckpt, &m, ts, n);
    if (!rc)
        rc = select_tensors(ckpt, ts, n, optimizer, &l);
    if (!rc)
        rc = write_file(out, &l, &m);
    if (!rc)
        printf("wrote %s: %d tensors of model '%s' at step %lld\n", out, l.n, m.model,
               (long long)m.step);
    free(l.t);
    tg_ckpt_tensors_free(ts, n);
    tg_ckpt_meta_free(&m);
    tg_ctx_free(ctx);
    return rc;
}
