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
 * The checkpoint is verified first (every checksum), then read through its
 * documented HDF5 layout (/tensors/<name>, in creation order); the output is
 * written under a temporary name and renamed, so a failed export never leaves
 * a partial file under the requested name.
 */
#include "cli.h"

#include <errno.h>
#include <hdf5.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tapegrad/checkpoint.h"

typedef struct ex_tensor {
    char name[256];
    const char *dtype; /* safetensors dtype */
    int ndim;
    hsize_t dims[TG_MAX_DIMS];
    size_t nbytes;
    void *data;
} ex_tensor;

typedef struct ex_list {
    ex_tensor *t;
    int n, cap;
    bool optimizer;
    const char *err; /* first failure inside the iteration */
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

/* The safetensors dtype of an HDF5 integer/float type, or NULL. */
static const char *st_dtype(hid_t type) {
    H5T_class_t c = H5Tget_class(type);
    size_t sz = H5Tget_size(type);
    if (c == H5T_FLOAT)
        return sz == 4 ? "F32" : sz == 8 ? "F64" : NULL;
    if (c != H5T_INTEGER)
        return NULL;
    bool sign = H5Tget_sign(type) == H5T_SGN_2;
    switch (sz) {
    case 1:
        return sign ? "I8" : "U8";
    case 4:
        return sign ? "I32" : "U32";
    case 8:
        return sign ? "I64" : "U64";
    default:
        return NULL;
    }
}

static herr_t read_one(hid_t grp, const char *name, const H5L_info_t *info, void *op) {
    (void)info;
    ex_list *l = op;
    if (!l->optimizer && strncmp(name, "optim.", 6) == 0)
        return 0;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        ex_tensor *p = realloc(l->t, (size_t)cap * sizeof *p);
        if (!p)
            return l->err = "out of memory", -1;
        l->t = p;
        l->cap = cap;
    }
    ex_tensor *t = &l->t[l->n];
    memset(t, 0, sizeof *t);
    if (strlen(name) >= sizeof t->name)
        return l->err = "a tensor name is too long", -1;
    /* Names go into the JSON header verbatim. */
    for (const char *c = name; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
            return l->err = "a tensor name holds a character that JSON would need escaped", -1;
    strcpy(t->name, name);
    hid_t d = H5Dopen2(grp, name, H5P_DEFAULT);
    hid_t ty = d >= 0 ? H5Dget_type(d) : -1;
    hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
    herr_t rc = -1;
    t->dtype = ty >= 0 ? st_dtype(ty) : NULL;
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (t->dtype && nd >= 0 && nd <= TG_MAX_DIMS) {
        t->ndim = nd;
        H5Sget_simple_extent_dims(sp, t->dims, NULL);
        size_t n = 1;
        for (int i = 0; i < nd; i++)
            n *= (size_t)t->dims[i];
        t->nbytes = n * H5Tget_size(ty);
        /* Little-endian native types of the same class and size. */
        hid_t mem = H5Tget_native_type(ty, H5T_DIR_ASCEND);
        t->data = malloc(t->nbytes ? t->nbytes : 1);
        if (mem >= 0 && t->data &&
            (t->nbytes == 0 || H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, t->data) >= 0))
            rc = 0;
        if (mem >= 0)
            H5Tclose(mem);
    }
    if (rc < 0) {
        free(t->data);
        l->err = t->dtype ? "a tensor could not be read" : "a tensor has an unsupported dtype";
    } else {
        l->n++;
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (ty >= 0)
        H5Tclose(ty);
    if (d >= 0)
        H5Dclose(d);
    return rc;
}

/* Reads /tensors of a verified checkpoint; prints and returns an exit code. */
static int read_tensors(const char *path, ex_list *l) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t g = f >= 0 ? H5Gopen2(f, "/tensors", H5P_DEFAULT) : -1;
    hsize_t idx = 0;
    herr_t rc = g >= 0 ? H5Literate(g, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, read_one, l) : -1;
    if (g >= 0)
        H5Gclose(g);
    if (f >= 0)
        H5Fclose(f);
    if (rc < 0) {
        fprintf(stderr, "tapegrad export: %s: reading /tensors failed: %s\n", path,
                l->err ? l->err : "not a readable checkpoint");
        return TG_EXIT_DATA;
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
        const ex_tensor *t = &l->t[i];
        ok = sb_printf(&s, &len, &cap, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, t->dtype);
        for (int d = 0; ok && d < t->ndim; d++)
            ok = sb_printf(&s, &len, &cap, "%s%llu", d ? "," : "", (unsigned long long)t->dims[d]);
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
    FILE *f = hdr ? fopen(tmp, "wb") : NULL;
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
        ok = fwrite(l->t[i].data, 1, l->t[i].nbytes, f) == l->t[i].nbytes;
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
        } else {
            fprintf(stderr, "tapegrad export: unknown option '%s' (or missing value)\n", a);
            return TG_EXIT_USAGE;
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
    tg_ctx *ctx;
    if (tg_ctx_new(NULL, &ctx) != TG_OK) {
        fprintf(stderr, "tapegrad export: %s\n", tg_last_init_error());
        return TG_EXIT_RUNTIME;
    }
    tg_ckpt_meta m = {0};
    tg_status s = tg_ckpt_verify(ctx, ckpt);
    if (!s)
        s = tg_ckpt_read_meta(ctx, ckpt, &m);
    int rc = s ? tg_cli_exit_for_status(s) : TG_EXIT_OK;
    if (s)
        fprintf(stderr, "tapegrad export: %s\n", tg_ctx_error(ctx));
    ex_list l = {.optimizer = optimizer};
    if (!rc)
        rc = read_tensors(ckpt, &l);
    if (!rc)
        rc = write_file(out, &l, &m);
    if (!rc)
        printf("wrote %s: %d tensors of model '%s' at step %lld\n", out, l.n, m.model,
               (long long)m.step);
    for (int i = 0; i < l.n; i++)
        free(l.t[i].data);
    free(l.t);
    tg_ckpt_meta_free(&m);
    tg_ctx_free(ctx);
    return rc;
}
