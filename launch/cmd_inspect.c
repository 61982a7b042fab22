/*
 * launch/cmd_inspect.c: `tapegrad inspect FILE.h5`, what a file holds.
 *
 * For a dataset: each split's size, the shapes and dtypes of x and y, the
 * chunking, the group's attributes and the class histogram. The split is
 * also opened with the reader, so that inspect reports the same schema
 * errors training would. A file without split groups is described as a
 * checkpoint (tg_ckpt_describe: step, epoch, configuration, every tensor's
 * name, shape, dtype, norm and checksum).
 */
#include "cli.h"

#include <hdf5.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tapegrad/checkpoint.h"
#include "tapegrad/datasets.h"
#include "tapegrad/modelfile.h"

#define MAX_SPLITS 64

static void inspect_usage(FILE *f) {
    fprintf(f, "usage: tapegrad inspect FILE.h5\n"
               "       tapegrad inspect MODEL.ini|NAME [--input-shape C,H,W] [--classes K]\n"
               "\n"
               "Describes a tapegrad dataset: its splits, the shapes, dtypes and chunking of\n"
               "x and y, the attributes of each split and its class histogram. Every split is\n"
               "validated as training would validate it.\n"
               "\n"
               "Or a checkpoint: its step, epoch, samples consumed, the configuration it was\n"
               "trained with, and each tensor's name, shape, dtype and L2 norm; every\n"
               "checksum is verified.\n"
               "\n"
               "Or a model file (a path ending in .ini, or a shipped model: mlp, cnn, cnn-bn,\n"
               "resnet20, resnet18, gpt): its summary table, each layer's name, type, output\n"
               "shape and parameter count, and the totals, for one sample's shape\n"
               "(--input-shape, else the shape of its [input] section, else 1,28,28, or 128\n"
               "tokens for a token model) and K classes (default: 10; 256 for a token model).\n"
               "Every shape is checked as training would check it.\n"
               "\n"
               "options:\n"
               "  --input-shape C,H,W   one sample's shape, for a model file\n"
               "  --classes K           the value of `classes` in a model file (default: 10)\n"
               "  -h, --help            print this help and exit\n"
               "\n"
               "exit codes: 0 the file is a valid dataset, checkpoint or model file, 2 usage\n"
               "error, 3 the file is missing, not HDF5, neither, a split breaks the schema, a\n"
               "checkpoint fails a checksum or a model file does not build\n");
}

typedef struct split_list {
    int n;
    hsize_t pos; /* the index of the link the callback is called for */
    char names[MAX_SPLITS][128];
} split_list;

/*
 * H5Literate callback: keep the groups below the root that are splits:
 * those holding x or y (a split missing one of them is then reported by the
 * reader, as training would) or tokens, and "train" and "test" whatever they
 * hold.
 * The group is opened by its index, not by the name read from the file, and
 * only the known names x and y are looked up in it.
 */
static herr_t collect(hid_t root, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    split_list *sl = data;
    hsize_t pos = sl->pos++;
    if (name[0] == '.' || !name[0] || strchr(name, '/') || sl->n >= MAX_SPLITS ||
        strlen(name) >= sizeof(sl->names[0]))
        return 0;
    hid_t g = H5Oopen_by_idx(root, ".", H5_INDEX_NAME, H5_ITER_INC, pos, H5P_DEFAULT);
    if (g < 0)
        return 0;
    bool split = strcmp(name, "train") == 0 || strcmp(name, "test") == 0;
    if (H5Iget_type(g) == H5I_GROUP)
        split = split || H5Lexists(g, "x", H5P_DEFAULT) > 0 || H5Lexists(g, "y", H5P_DEFAULT) > 0 ||
                H5Lexists(g, "tokens", H5P_DEFAULT) > 0;
    else
        split = false;
    (void)H5Oclose(g);
    if (split)
        snprintf(sl->names[sl->n++], sizeof(sl->names[0]), "%s", name);
    return 0;
}

/* "u8", "i64", "f32", ... for an HDF5 type. */
static const char *type_name(hid_t t, char *buf, size_t len) {
    H5T_class_t c = H5Tget_class(t);
    size_t bits = H5Tget_size(t) * 8;
    if (c == H5T_INTEGER)
        snprintf(buf, len, "%c%zu", H5Tget_sign(t) == H5T_SGN_NONE ? 'u' : 'i', bits);
    else if (c == H5T_FLOAT)
        snprintf(buf, len, "f%zu", bits);
    else if (c == H5T_STRING)
        snprintf(buf, len, "string");
    else
        snprintf(buf, len, "class %d", (int)c);
    return buf;
}

/* Prints "name: u8 (60000, 1, 28, 28), chunks (1024, 1, 28, 28), deflate 0". */
static void describe_dataset(hid_t grp, const char *name) {
    hid_t d = H5Dopen2(grp, name, H5P_DEFAULT);
    if (d < 0) {
        printf("    %s: cannot be opened\n", name);
        return;
    }
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d), pl = H5Dget_create_plist(d);
    char tn[32];
    hsize_t dims[H5S_MAX_RANK];
    int nd = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, NULL) : -1;
    printf("    %s: %s (", name, t >= 0 ? type_name(t, tn, sizeof tn) : "?");
    for (int i = 0; i < nd; i++)
        printf("%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    printf("%s)", nd == 1 ? "," : "");
    if (pl >= 0 && H5Pget_layout(pl) == H5D_CHUNKED) {
        hsize_t ch[H5S_MAX_RANK];
        int nc = H5Pget_chunk(pl, H5S_MAX_RANK, ch);
        printf(", chunks (");
        for (int i = 0; i < nc; i++)
            printf("%s%llu", i ? ", " : "", (unsigned long long)ch[i]);
        printf("%s)", nc == 1 ? "," : "");
        int nf = H5Pget_nfilters(pl);
        printf(", %s", nf > 0 ? "compressed" : "uncompressed");
    } else if (pl >= 0) {
        printf(", contiguous");
    }
    printf("\n");
    if (pl >= 0)
        H5Pclose(pl);
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    H5Dclose(d);
}

/* H5Aiterate callback: prints one attribute's value when it is a number or
 * a string, else its type. */
static herr_t print_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    /* By index, not by the name read from the file. */
    hsize_t *pos = data;
    hid_t a = H5Aopen_by_idx(loc, ".", H5_INDEX_NAME, H5_ITER_INC, (*pos)++, H5P_DEFAULT,
                             H5P_DEFAULT);
    if (a < 0)
        return 0;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    H5T_class_t c = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    char tn[32];
    double v[16];
    printf("    attribute %s = ", name);
    /* A number, or a short vector of them (per-channel mean and std). */
    if ((c == H5T_INTEGER || c == H5T_FLOAT) && n >= 1 && n <= 16 &&
        H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0) {
        for (hssize_t i = 0; i < n; i++)
            printf("%s%.9g", i ? "," : "", v[i]);
        if (n == 1)
            printf(" (%s)\n", type_name(t, tn, sizeof tn));
        else
            printf(" (%s, %lld values)\n", type_name(t, tn, sizeof tn), (long long)n);
    } else
        printf("<%s, %lld values>\n", t >= 0 ? type_name(t, tn, sizeof tn) : "?", (long long)n);
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    H5Aclose(a);
    return 0;
}

/* Reads every label through the reader, in blocks, and prints the counts. */
static int histogram(tg_dataset *ds, const char *path, const char *split) {
    int64_t n = tg_dataset_len(ds), k = tg_dataset_num_classes(ds);
    const int64_t block = 65536;
    int64_t *idx = malloc((size_t)block * sizeof(*idx));
    int64_t *y = malloc((size_t)block * sizeof(*y));
    int64_t *count = calloc((size_t)k, sizeof(*count));
    int code = TG_EXIT_OK;
    if (!idx || !y || !count) {
        fprintf(stderr, "tapegrad inspect: out of memory for %lld classes\n", (long long)k);
        code = TG_EXIT_RUNTIME;
        goto out;
    }
    char err[512];
    for (int64_t at = 0; at < n; at += block) {
        int64_t m = n - at < block ? n - at : block;
        for (int64_t i = 0; i < m; i++)
            idx[i] = at + i;
        tg_status s = tg_dataset_read(ds, idx, m, NULL, y, err, sizeof err);
        if (s) {
            fprintf(stderr, "tapegrad inspect: %s\n", err);
            code = tg_cli_exit_for_status(s);
            goto out;
        }
        for (int64_t i = 0; i < m; i++)
            count[y[i]]++;
    }
    printf("    classes (%s/%s):", path, split);
    for (int64_t c = 0; c < k; c++)
        printf("%s%lld: %lld (%.1f%%)", c % 5 ? "  " : "\n      ", (long long)c,
               (long long)count[c], 100.0 * (double)count[c] / (double)n);
    printf("\n");
out:
    free(idx);
    free(y);
    free(count);
    return code;
}

/* A token split (convert text): its tokens, vocabulary and attributes. */
static int inspect_tokens(hid_t f, tg_dataset *ds, const char *split) {
    printf("  split %s: %lld tokens, vocabulary %lld, tokenizer %s, %.6g bytes per token\n",
           split, (long long)tg_dataset_num_tokens(ds), (long long)tg_dataset_num_classes(ds),
           tg_dataset_tokenizer(ds), tg_dataset_bytes_per_token(ds));
    hid_t g = H5Gopen2(f, split, H5P_DEFAULT);
    if (g >= 0) {
        describe_dataset(g, "tokens");
        H5Gclose(g);
    }
    tg_dataset_close(ds);
    return TG_EXIT_OK;
}

static int inspect_split(hid_t f, const char *path, const char *split) {
    char err[512];
    tg_dataset *ds;
    /* Windows of one token: any token split with two tokens opens. */
    tg_dataset_options o = {.block_size = 1};
    tg_status s = tg_dataset_open_opts(path, split, &o, &ds, err, sizeof err);
    if (s) {
        printf("  split %s: invalid\n", split);
        fprintf(stderr, "tapegrad inspect: %s\n", err);
        return tg_cli_exit_for_status(s);
    }
    if (tg_dataset_is_tokens(ds))
        return inspect_tokens(f, ds, split);
    const double *m, *sd;
    int64_t nch = tg_dataset_norm(ds, &m, &sd);
    if (nch == 1) {
        printf("  split %s: %lld samples, %lld classes, normalised as (x*%.9g - %.9g)/%.9g\n",
               split, (long long)tg_dataset_len(ds), (long long)tg_dataset_num_classes(ds),
               tg_dataset_scale(ds), m[0], sd[0]);
    } else {
        /* Per channel: mean[c] and std[c] listed. */
        printf("  split %s: %lld samples, %lld classes, normalised per channel c as "
               "(x*%.9g - mean[c])/std[c], mean",
               split, (long long)tg_dataset_len(ds), (long long)tg_dataset_num_classes(ds),
               tg_dataset_scale(ds));
        for (int64_t k = 0; k < nch && k < 16; k++)
            printf("%s%.6g", k ? "," : " ", m[k]);
        printf("%s, std", nch > 16 ? ",..." : "");
        for (int64_t k = 0; k < nch && k < 16; k++)
            printf("%s%.6g", k ? "," : " ", sd[k]);
        printf("%s\n", nch > 16 ? ",..." : "");
    }
    hid_t g = H5Gopen2(f, split, H5P_DEFAULT);
    if (g >= 0) {
        describe_dataset(g, "x");
        describe_dataset(g, "y");
        hsize_t at = 0, pos = 0;
        H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &at, print_attr, &pos);
        H5Gclose(g);
    }
    /* Regression targets have no classes to count. */
    int code = TG_EXIT_OK;
    if (tg_dataset_target_dim(ds) > 0)
        printf("    targets: %lld f32 values per sample (regression)\n",
               (long long)tg_dataset_target_dim(ds));
    else
        code = histogram(ds, path, split);
    tg_dataset_close(ds);
    return code;
}

/* sealed: the file starts with the checkpoint header (so it is no dataset
 * and was never opened as HDF5 here). */
static int inspect_checkpoint(const char *path, bool sealed) {
    tg_ctx *ctx;
    if (tg_ctx_new(NULL, &ctx) != TG_OK) {
        fprintf(stderr, "tapegrad inspect: %s\n", tg_last_init_error());
        return TG_EXIT_RUNTIME;
    }
    char *text = NULL;
    tg_status s = tg_ckpt_describe(ctx, path, &text);
    if (text)
        fputs(text, stdout);
    int code = TG_EXIT_OK;
    if (s == TG_ERR_FORMAT && text) {
        fprintf(stderr, "tapegrad inspect: %s\n", tg_ctx_error(ctx));
        code = TG_EXIT_DATA;
    } else if (s && sealed) {
        fprintf(stderr, "tapegrad inspect: %s\n", tg_ctx_error(ctx));
        code = s == TG_ERR_NOMEM ? TG_EXIT_RUNTIME : TG_EXIT_DATA;
    } else if (s) {
        fprintf(stderr,
                "tapegrad inspect: %s: not a dataset (no split group holding x and y), nor "
                "a checkpoint: %s\n",
                path, tg_ctx_error(ctx));
        code = s == TG_ERR_NOMEM ? TG_EXIT_RUNTIME : TG_EXIT_DATA;
    }
    free(text);
    tg_ctx_free(ctx);
    return code;
}

static int inspect_file(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "tapegrad inspect: %s: no such file\n", path);
        return TG_EXIT_DATA;
    }
    /* A checkpoint with its header is checked (header, whole-file CRC)
     * before HDF5 parses any of it. */
    if (tg_ckpt_has_header(path))
        return inspect_checkpoint(path, true);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Fis_hdf5(path) <= 0) {
        fprintf(stderr, "tapegrad inspect: %s: not an HDF5 file\n", path);
        return TG_EXIT_DATA;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "tapegrad inspect: %s: cannot be opened as HDF5 (truncated?)\n", path);
        return TG_EXIT_DATA;
    }
    split_list sl = {0};
    hsize_t at = 0;
    herr_t e = H5Literate(f, H5_INDEX_NAME, H5_ITER_INC, &at, collect, &sl);
    int code = TG_EXIT_OK;
    if (e < 0) {
        fprintf(stderr, "tapegrad inspect: %s: cannot list the root group\n", path);
        code = TG_EXIT_DATA;
    } else if (sl.n == 0) {
        /* Checkpoints hold tensors, not splits. */
        code = inspect_checkpoint(path, false);
    } else {
        printf("%s: dataset, %d split%s\n", path, sl.n, sl.n == 1 ? "" : "s");
        for (int i = 0; i < sl.n; i++) {
            int c = inspect_split(f, path, sl.names[i]);
            if (c != TG_EXIT_OK && code == TG_EXIT_OK)
                code = c;
        }
    }
    H5Fclose(f);
    return code;
}

int tg_cmd_inspect(int argc, char **argv) {
    const char *cmd = "inspect";
    const char *path = NULL, *shape = NULL, *classes = NULL;
    for (int i = 1; i < argc; i++) {
        if (tg_cli_is_help(argv[i])) {
            inspect_usage(stdout);
            return TG_EXIT_OK;
        }
        int m = tg_cli_opt(cmd, argc, argv, &i, "--input-shape", &shape);
        if (m == 0)
            m = tg_cli_opt(cmd, argc, argv, &i, "--classes", &classes);
        if (m < 0)
            return TG_EXIT_USAGE;
        if (m > 0)
            continue;
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            static const char *const names[] = {"--help", "--input-shape", "--classes"};
            return tg_cli_unknown_option(cmd, argv[i], names, 3);
        }
        if (path)
            return tg_cli_usage_error(cmd, "one file at a time ('%s' and '%s' given)", path,
                                      argv[i]);
        path = argv[i];
    }
    if (!path) {
        inspect_usage(stderr);
        return TG_EXIT_USAGE;
    }
    size_t n = strlen(path);
    if (tg_model_builtin_text(path) || (n > 4 && strcmp(path + n - 4, ".ini") == 0) || shape ||
        classes)
        return tg_inspect_model(path, shape, classes);
    return inspect_file(path);
}
