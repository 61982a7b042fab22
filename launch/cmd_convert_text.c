/*
 * launch/cmd_convert_text.c: `tapegrad convert text`: text files to the
 * token splits train and val of an HDF5 dataset (byte tokens, or a GPT-2
 * BPE the user supplies).
 */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad/datasets.h"

/* The most --in files. */
#define MAX_INPUTS 4096

static void text_usage(FILE *f) {
    fprintf(f, "usage: tapegrad convert text --in FILE... --out FILE.h5 [--val-fraction F]\n"
               "                            [--vocab VOCAB.json --merges MERGES.txt]\n"
               "\n"
               "Converts text files (read as bytes, concatenated in the order given) into\n"
               "the token splits train and val of the HDF5 dataset FILE.h5: each holds a\n"
               "1-D `tokens` dataset (u8 for byte tokens, u16 for a BPE) and the attributes\n"
               "vocab_size, tokenizer (bytes or bpe) and bytes_per_token. val is the last\n"
               "F of the tokens, train the rest. Without --vocab/--merges every byte is a\n"
               "token (vocabulary 256); with them, a GPT-2-style byte-level BPE (the\n"
               "vocab.json and merges.txt GPT-2 ships, or any of that form) gives u16\n"
               "tokens. Train on it with tapegrad train --data FILE.h5 (windows of\n"
               "--block-size tokens). A new file is written under a temporary name and\n"
               "renamed; an existing file keeps its other splits.\n"
               "\n"
               "options:\n"
               "  --in FILE...        text files (required; --in may be repeated)\n"
               "  --out FILE.h5       the dataset to write or extend (required)\n"
               "  --val-fraction F    share of the tokens for val, in [0, 1); 0 writes no\n"
               "                      val split (default: 0.1)\n"
               "  --vocab FILE.json   a BPE's vocabulary: {\"token\": id, ...} (with --merges)\n"
               "  --merges FILE.txt   its merges, one \"left right\" pair a line by rank\n"
               "  -h, --help          print this help and exit\n");
}

/* What was written, read back through the reader. */
static int summarize_text(const char *out, const char *split) {
    char err[512];
    tg_dataset *ds;
    tg_dataset_options o = {.block_size = 1};
    tg_status s = tg_dataset_open_opts(out, split, &o, &ds, err, sizeof err);
    if (s) {
        fprintf(stderr, "tapegrad convert: %s\n", err);
        return tg_cli_exit_for_status(s);
    }
    printf("%s: split '%s': %lld tokens (%s, vocabulary %lld, %.4f bytes per token)\n", out, split,
           (long long)tg_dataset_num_tokens(ds), tg_dataset_tokenizer(ds),
           (long long)tg_dataset_num_classes(ds), tg_dataset_bytes_per_token(ds));
    tg_dataset_close(ds);
    return TG_EXIT_OK;
}

int tg_cmd_convert_text(int argc, char **argv) {
    const char *cmd = "convert";
    const char *out = NULL, *vocab = NULL, *merges = NULL, *v;
    const char **in = calloc(MAX_INPUTS, sizeof *in);
    int nin = 0, code = TG_EXIT_OK;
    tg_text_options o = {.val_fraction = 0.1};
    if (!in) {
        fprintf(stderr, "tapegrad convert: out of memory\n");
        return TG_EXIT_RUNTIME;
    }
    for (int i = 2; i < argc && !code; i++) {
        int m = 0;
        if (tg_cli_is_help(argv[i])) {
            text_usage(stdout);
            free(in);
            return TG_EXIT_OK;
        } else if ((m = tg_cli_opt(cmd, argc, argv, &i, "--in", &v)) > 0) {
            /* --in A B C: every following argument up to the next option. */
            in[nin++] = v;
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 && nin < MAX_INPUTS)
                in[nin++] = argv[++i];
            if (nin >= MAX_INPUTS)
                code = tg_cli_usage_error(cmd, "--in: more than %d files", MAX_INPUTS - 1);
        } else if (m == 0 && (m = tg_cli_opt(cmd, argc, argv, &i, "--out", &v)) > 0) {
            out = v;
        } else if (m == 0 && (m = tg_cli_opt(cmd, argc, argv, &i, "--vocab", &v)) > 0) {
            vocab = v;
        } else if (m == 0 && (m = tg_cli_opt(cmd, argc, argv, &i, "--merges", &v)) > 0) {
            merges = v;
        } else if (m == 0 && (m = tg_cli_opt(cmd, argc, argv, &i, "--val-fraction", &v)) > 0) {
            if (tg_cli_parse_f64(cmd, "--val-fraction", v, 0, 0.999999, &o.val_fraction))
                code = TG_EXIT_USAGE;
        } else if (m == 0) {
            static const char *const names[] = {"--in",    "--out",    "--val-fraction",
                                                "--vocab", "--merges", "--help"};
            code = tg_cli_unknown_option(cmd, argv[i], names, sizeof names / sizeof names[0]);
        }
        if (m < 0)
            code = TG_EXIT_USAGE;
    }
    if (!code && (!nin || !out))
        code = tg_cli_usage_error(cmd, "%s is required", !nin ? "--in" : "--out");
    if (!code && !vocab != !merges)
        code = tg_cli_usage_error(cmd, "--vocab and --merges go together: give both or neither");
    char err[1024];
    if (!code) {
        o.vocab_json = vocab;
        o.merges_txt = merges;
        o.stop = tg_cli_stop_requested;
        if (tg_cli_stop_signals_install(err, sizeof err) != 0) {
            fprintf(stderr, "tapegrad convert: %s\n", err);
            code = TG_EXIT_RUNTIME;
        }
    }
    if (!code) {
        tg_status s = tg_text_convert(in, nin, out, &o, err, sizeof err);
        tg_cli_stop_signals_restore();
        if (s) {
            fprintf(stderr, "tapegrad convert: %s\n", err);
            code = s == TG_ERR_STOPPED   ? tg_cli_stop_exit(false)
                   : s == TG_ERR_INVALID ? TG_EXIT_USAGE
                                         : tg_cli_exit_for_status(s);
        }
    }
    if (!code)
        code = summarize_text(out, "train");
    if (!code && o.val_fraction > 0)
        code = summarize_text(out, "val");
    free(in);
    return code;
}
