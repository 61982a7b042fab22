/*
 * launch/cmd_convert.c: `tapegrad convert idx|npy`: MNIST-family IDX files
 * or NumPy .npy files to a split of an HDF5 dataset.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "tapegrad/datasets.h"

static void convert_usage(FILE *f) {
    fprintf(f, "usage: tapegrad convert idx --images FILE.gz --labels FILE.gz --out FILE.h5 ...\n"
               "       tapegrad convert npy --x X.npy --y Y.npy --out FILE.h5 ...\n"
               "       tapegrad convert text --in FILE... --out FILE.h5 ...\n"
               "\n"
               "Run 'tapegrad convert idx --help' (npy, text) for the options of each.\n");
}

static void npy_usage(FILE *f) {
    fprintf(f, "usage: tapegrad convert npy --x X.npy --y Y.npy --out FILE.h5\n"
               "                           [--split NAME] [--num-classes K] [--scale S]\n"
               "                           [--mean M --std S] [--chunk N] [--deflate LEVEL]\n"
               "\n"
               "Converts a pair of NumPy .npy files (np.save, format 1.0, 2.0 or 3.0) into\n"
               "split NAME of the HDF5 dataset FILE.h5: x (N, d1[, ..., d4]) uint8 -> u8 or\n"
               "float32/float64 -> f32 (values must be finite), y (N,) any integer dtype ->\n"
               "u8 (or i32 above 256 classes), attributes num_classes, scale, mean and std\n"
               "(per channel, as vectors, when x is (N, C, ...) with C > 1); a float y of\n"
               "(N,) or (N, K) is written as f32 regression targets, without num_classes.\n"
               "A split other than train written into a file that holds train takes train's\n"
               "mean and std unless --mean/--std are given. A new file is written under a\n"
               "temporary name and renamed; an existing file keeps its other splits and a\n"
               "split of the same name is replaced. A file that is not HDF5 is never\n"
               "overwritten.\n"
               "\n"
               "options:\n"
               "  --x FILE.npy       the inputs, C order (required)\n"
               "  --y FILE.npy       the labels, in [0, num_classes) (required)\n"
               "  --out FILE.h5      the dataset to write or extend (required)\n"
               "  --split NAME       the split to write (default: train)\n"
               "  --num-classes K    default: the largest label + 1\n"
               "  --scale S          default: 1/255 for uint8 x, 1 for float x\n"
               "  --mean M --std S   normalisation to record, both or neither\n"
               "                     (default: mean and std of x*scale over the split)\n"
               "  --chunk N          samples per HDF5 chunk of x (default: 1024, fewer for\n"
               "                     samples over 64 KiB)\n"
               "  --deflate LEVEL    zlib level 0-9 (default: 0, uncompressed, fastest reads)\n"
               "  -h, --help         print this help and exit\n");
}

static void idx_usage(FILE *f) {
    fprintf(f, "usage: tapegrad convert idx --images FILE.gz --labels FILE.gz --out FILE.h5\n"
               "                           [--split NAME] [--chunk N] [--deflate LEVEL]\n"
               "\n"
               "Converts a pair of gzip'd MNIST-family IDX files (images magic 0x00000803,\n"
               "labels magic 0x00000801) into split NAME of the HDF5 dataset FILE.h5: x u8\n"
               "(N, 1, rows, cols), y u8 (N,), attributes num_classes, scale 1/255 and the\n"
               "split's pixel mean and std (a split other than train written into a file\n"
               "that holds train takes train's). A new file is written under a temporary name and\n"
               "renamed; an existing file keeps its other splits and a split of the same name\n"
               "is replaced. A file that is not HDF5 is never overwritten.\n"
               "\n"
               "options:\n"
               "  --images FILE.gz   the IDX image file (required)\n"
               "  --labels FILE.gz   the IDX label file (required)\n"
               "  --out FILE.h5      the dataset to write or extend (required)\n"
               "  --split NAME       the split to write (default: train)\n"
               "  --chunk N          samples per HDF5 chunk of x (default: 1024)\n"
               "  --deflate LEVEL    zlib level 0-9 (default: 0, uncompressed, fastest reads)\n"
               "  -h, --help         print this help and exit\n"
               "\n"
               "example (Fashion-MNIST from the Debian package dataset-fashion-mnist):\n"
               "  d=/usr/share/datasets/fashion-mnist\n"
               "  tapegrad convert idx --images $d/train-images-idx3-ubyte.gz \\\n"
               "      --labels $d/train-labels-idx1-ubyte.gz --out fmnist.h5 --split train\n"
               "  tapegrad convert idx --images $d/t10k-images-idx3-ubyte.gz \\\n"
               "      --labels $d/t10k-labels-idx1-ubyte.gz --out fmnist.h5 --split test\n");
}

/* Prints what the converter wrote, read back through the reader so that the
 * summary is also a check that the split opens. */
static int summarize(const char *out, const char *split) {
    char err[512];
    tg_dataset *ds;
    tg_status s = tg_dataset_open(out, split, &ds, err, sizeof err);
    if (s) {
        fprintf(stderr, "tapegrad convert: %s\n", err);
        return tg_cli_exit_for_status(s);
    }
    int nd;
    const int64_t *sh = tg_dataset_sample_shape(ds, &nd);
    printf("%s: split '%s': %lld samples of ", out, split, (long long)tg_dataset_len(ds));
    for (int i = 0; i < nd; i++)
        printf("%s%lld", i ? "x" : "", (long long)sh[i]);
    const double *m, *sd;
    int64_t nch = tg_dataset_norm(ds, &m, &sd);
    if (tg_dataset_target_dim(ds) > 0)
        printf(" %s, %lld f32 targets a sample, mean", tg_dtype_name(tg_dataset_x_dtype(ds)),
               (long long)tg_dataset_target_dim(ds));
    else
        printf(" %s, %lld classes, mean", tg_dtype_name(tg_dataset_x_dtype(ds)),
               (long long)tg_dataset_num_classes(ds));
    /* One value, or one per channel. */
    for (int64_t k = 0; k < nch; k++)
        printf("%s%.6f", k ? "," : " ", m[k]);
    printf(", std");
    for (int64_t k = 0; k < nch; k++)
        printf("%s%.6f", k ? "," : " ", sd[k]);
    printf("\n");
    tg_dataset_close(ds);
    return TG_EXIT_OK;
}

static bool bad_split(const char *split) {
    if (split[0] && split[0] != '.' && !strchr(split, '/'))
        return false;
    tg_cli_usage_error("convert",
                       "--split: expected a group name without '/' or a leading '.', got '%s'",
                       split);
    return true;
}

/* The converter's status as an exit code, with its message. */
static int convert_failed(tg_status s, const char *err) {
    fprintf(stderr, "tapegrad convert: %s\n", err);
    /* A signal: the converter took back everything it had written. */
    if (s == TG_ERR_STOPPED)
        return tg_cli_stop_exit(false);
    /* A valid file of a kind the converter does not take is a data error. */
    if (s == TG_ERR_UNSUPPORTED)
        return TG_EXIT_DATA;
    return s == TG_ERR_INVALID ? TG_EXIT_USAGE : tg_cli_exit_for_status(s);
}

static int convert_npy(int argc, char **argv) {
    const char *cmd = "convert";
    const char *x = NULL, *y = NULL, *out = NULL, *split = "train", *v;
    const char *mean = NULL, *sd = NULL;
    tg_npy_options o = {0};
    for (int i = 2; i < argc; i++) {
        int m;
        int64_t k;
        if (tg_cli_is_help(argv[i])) {
            npy_usage(stdout);
            return TG_EXIT_OK;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--x", &v)) != 0) {
            x = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--y", &v)) != 0) {
            y = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--out", &v)) != 0) {
            out = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--split", &v)) != 0) {
            split = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--num-classes", &v)) != 0) {
            if (m < 0 || tg_cli_parse_i64(cmd, "--num-classes", v, 1, TG_DATASET_MAX_CLASSES, &k))
                return TG_EXIT_USAGE;
            o.num_classes = k;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--scale", &v)) != 0) {
            if (m < 0 || tg_cli_parse_f64(cmd, "--scale", v, 1e-300, 1e300, &o.scale))
                return TG_EXIT_USAGE;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--mean", &v)) != 0) {
            mean = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--std", &v)) != 0) {
            sd = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--chunk", &v)) != 0) {
            if (m < 0 || tg_cli_parse_i64(cmd, "--chunk", v, 1, INT32_MAX, &k))
                return TG_EXIT_USAGE;
            o.chunk_samples = k;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--deflate", &v)) != 0) {
            if (m < 0 || tg_cli_parse_i64(cmd, "--deflate", v, 0, 9, &k))
                return TG_EXIT_USAGE;
            o.deflate_level = (int)k;
        } else {
            static const char *const names[] = {
                "--x",    "--y",   "--out",   "--split",   "--num-classes", "--scale",
                "--mean", "--std", "--chunk", "--deflate", "--help"};
            return tg_cli_unknown_option(cmd, argv[i], names, sizeof names / sizeof names[0]);
        }
        if (m < 0)
            return TG_EXIT_USAGE;
    }
    if (!x || !y || !out)
        return tg_cli_usage_error(cmd, "%s is required", !x ? "--x" : !y ? "--y" : "--out");
    if (!mean != !sd)
        return tg_cli_usage_error(cmd, "--mean and --std go together: give both or neither");
    if (mean && (tg_cli_parse_f64(cmd, "--mean", mean, -1e300, 1e300, &o.mean) ||
                 tg_cli_parse_f64(cmd, "--std", sd, 1e-300, 1e300, &o.std)))
        return TG_EXIT_USAGE;
    o.set_mean_std = mean != NULL;
    if (bad_split(split))
        return TG_EXIT_USAGE;
    char err[512];
    o.stop = tg_cli_stop_requested;
    if (tg_cli_stop_signals_install(err, sizeof err) != 0)
        return convert_failed(TG_ERR_IO, err);
    tg_status s = tg_npy_convert(x, y, out, split, &o, err, sizeof err);
    tg_cli_stop_signals_restore();
    return s ? convert_failed(s, err) : summarize(out, split);
}

int tg_cmd_convert(int argc, char **argv) {
    const char *cmd = "convert";
    if (argc < 2) {
        convert_usage(stderr);
        return TG_EXIT_USAGE;
    }
    if (tg_cli_is_help(argv[1])) {
        convert_usage(stdout);
        return TG_EXIT_OK;
    }
    if (strcmp(argv[1], "npy") == 0)
        return convert_npy(argc, argv);
    if (strcmp(argv[1], "text") == 0)
        return tg_cmd_convert_text(argc, argv);
    if (strcmp(argv[1], "idx") != 0)
        return tg_cli_usage_error(cmd, "unknown format '%s' (expected idx, npy or text)",
                                  argv[1]);

    const char *images = NULL, *labels = NULL, *out = NULL, *split = "train", *v;
    tg_idx_options o = {0};
    for (int i = 2; i < argc; i++) {
        int m;
        int64_t x;
        if (tg_cli_is_help(argv[i])) {
            idx_usage(stdout);
            return TG_EXIT_OK;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--images", &v)) != 0) {
            images = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--labels", &v)) != 0) {
            labels = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--out", &v)) != 0) {
            out = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--split", &v)) != 0) {
            split = v;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--chunk", &v)) != 0) {
            if (m < 0 || tg_cli_parse_i64(cmd, "--chunk", v, 1, INT32_MAX, &x))
                return TG_EXIT_USAGE;
            o.chunk_samples = x;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--deflate", &v)) != 0) {
            if (m < 0 || tg_cli_parse_i64(cmd, "--deflate", v, 0, 9, &x))
                return TG_EXIT_USAGE;
            o.deflate_level = (int)x;
        } else {
            static const char *const names[] = {"--images", "--labels",  "--out", "--split",
                                                "--chunk",  "--deflate", "--help"};
            return tg_cli_unknown_option(cmd, argv[i], names, sizeof names / sizeof names[0]);
        }
        if (m < 0)
            return TG_EXIT_USAGE;
    }
    if (!images || !labels || !out)
        return tg_cli_usage_error(cmd, "%s is required", !images ? "--images"
                                                         : !labels ? "--labels"
                                                                   : "--out");
    if (bad_split(split))
        return TG_EXIT_USAGE;

    char err[512];
    o.stop = tg_cli_stop_requested;
    if (tg_cli_stop_signals_install(err, sizeof err) != 0)
        return convert_failed(TG_ERR_IO, err);
    tg_status s = tg_idx_convert_opts(images, labels, out, split, &o, err, sizeof err);
    tg_cli_stop_signals_restore();
    return s ? convert_failed(s, err) : summarize(out, split);
}
