/*
 * tests/test_text_cli.c: token data from the command line. `tapegrad convert
 * text` with byte tokens and with a tiny GPT-2-style BPE made here (the
 * tokens checked against the merges worked by hand), its bad inputs (exit
 * codes, the file and line named, no output left behind), and a bigram
 * language model (a model file: an i64 input and one embedding giving
 * (N, T, 256) logits) trained on the result: perplexity and bits per byte in
 * the lines and the metrics, eval --ckpt on the same figures, and 20 steps
 * straight equal to 10 + --resume + 10, bit for bit.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <hdf5.h>

#include "tapegrad/datasets.h"

#include "test_util.h"

/* tp() with a buffer of its own per call (64 in turn), so that
 * one command line can name several files. */
static const char *tp(const char *name) {
    static char bufs[64][512];
    static int k;
    char *b = bufs[k++ % 64];
    snprintf(b, sizeof bufs[0], "%s", tgt_path(name));
    return b;
}

/* A text of 6000 words from a small vocabulary, the same every run. */
static const char *make_text(const char *name) {
    static const char *const words[] = {"the",  "cat",   "sat", "on",   "a",    "mat",
                                        "and",  "dog",   "ran", "far",  "away", "while",
                                        "bird", "sings", "in",  "trees"};
    const char *p = tp(name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    uint32_t s = 12345;
    for (int i = 0; i < 6000; i++) {
        s = s * 1103515245u + 12345u;
        fprintf(f, "%s%s", i ? " " : "", words[(s >> 16) % 16]);
    }
    assert_int_equal(fclose(f), 0);
    return p;
}

static void test_convert_bytes(void **state) {
    (void)state;
    const char *txt = make_text("a.txt");
    tgt_write_file(tp("b.txt"), "hello\n");
    const char *h5 = tp("bytes.h5");
    assert_int_equal(
        tgt_run("convert text --in '%s' '%s' --out '%s' --val-fraction 0.25", txt, tp("b.txt"), h5),
        0);
    tgt_expect_out("split 'val'");
    char err[512];
    tg_dataset *tr, *va;
    tg_dataset_options o = {.block_size = 8};
    assert_int_equal(tg_dataset_open_opts(h5, "train", &o, &tr, err, sizeof err), TG_OK);
    assert_int_equal(tg_dataset_open_opts(h5, "val", &o, &va, err, sizeof err), TG_OK);
    int64_t all = tg_dataset_num_tokens(tr) + tg_dataset_num_tokens(va);
    /* Every byte of both files is a token; val is the last quarter. */
    FILE *f = fopen(txt, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    int64_t bytes = ftell(f) + 6;
    fclose(f);
    assert_int_equal(all, bytes);
    assert_int_equal(tg_dataset_num_tokens(va), (int64_t)floor(0.25 * (double)bytes + 0.5));
    assert_true(tg_dataset_is_tokens(tr));
    assert_int_equal(tg_dataset_num_classes(tr), 256);
    assert_string_equal(tg_dataset_tokenizer(tr), "bytes");
    assert_true(tg_dataset_bytes_per_token(tr) == 1.0);
    assert_int_equal(tg_dataset_len(tr), tg_dataset_num_tokens(tr) - 8);
    /* The last window of val ends in "hello\n"; its labels are its inputs
     * shifted by one. */
    int64_t last = tg_dataset_len(va) - 1;
    float x[8];
    int64_t y[8];
    assert_int_equal(tg_dataset_read(va, &last, 1, x, y, err, sizeof err), TG_OK);
    assert_int_equal(y[7], '\n');
    assert_int_equal(y[6], 'o');
    for (int k = 0; k < 7; k++)
        assert_int_equal((int64_t)x[k + 1], y[k]);
    tg_dataset_close(tr);
    tg_dataset_close(va);
    /* inspect lists both token splits. */
    assert_int_equal(tgt_run("inspect '%s'", h5), 0);
    tgt_expect_out("split val: ");
    tgt_expect_out("vocabulary 256, tokenizer bytes, 1 bytes per token");
    tgt_expect_out("tokens: u8 (");
    /* The tokenizer is written as a fixed-length string. A variable-length
     * one (files written before, h5py's str attributes) is not read (its
     * bytes are in the global heap, where a damaged file can hang HDF5):
     * the file opens and names it "unknown". */
    hid_t fh = H5Fopen(h5, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(fh, "train", H5P_DEFAULT);
    hid_t a = H5Aopen(g, "tokenizer", H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    assert_true(fh >= 0 && g >= 0 && a >= 0 && t >= 0);
    assert_int_equal(H5Tis_variable_str(t), 0);
    H5Tclose(t);
    H5Aclose(a);
    assert_true(H5Adelete(g, "tokenizer") >= 0);
    hid_t vt = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    assert_true(H5Tset_size(vt, H5T_VARIABLE) >= 0);
    a = H5Acreate2(g, "tokenizer", vt, sp, H5P_DEFAULT, H5P_DEFAULT);
    const char *bpe = "bpe";
    assert_true(a >= 0 && H5Awrite(a, vt, &bpe) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(vt);
    H5Gclose(g);
    H5Fclose(fh);
    assert_int_equal(tg_dataset_open_opts(h5, "train", &o, &tr, err, sizeof err), TG_OK);
    assert_string_equal(tg_dataset_tokenizer(tr), "unknown");
    tg_dataset_close(tr);
}

/* GPT-2's symbol for byte b, as a JSON \u escape: the printable Latin-1
 * bytes stand for themselves, the 68 others for U+0100 onwards in order. */
static unsigned gpt2_cp(int b) {
    int k = 0;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)
        return (unsigned)b;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174))
            k++;
    return 256u + (unsigned)k;
}

/* vocab.json: the 256 bytes (id = byte), "th" 256, "the" 257, " the" 258;
 * merges "t h", "th e", then " the" (U+0120 is GPT-2's space). */
static void write_bpe(const char *vocab, const char *merges, const char *extra_merge) {
    FILE *f = fopen(vocab, "w");
    assert_non_null(f);
    fprintf(f, "{\n");
    for (int b = 0; b < 256; b++)
        fprintf(f, "  \"\\u%04x\": %d,\n", gpt2_cp(b), b);
    fprintf(f, "  \"th\": 256,\n  \"the\": 257,\n  \"\\u0120the\": 258\n}\n");
    assert_int_equal(fclose(f), 0);
    f = fopen(merges, "w");
    assert_non_null(f);
    fprintf(f, "#version: 0.2\nt h\nth e\n\xc4\xa0 the\n%s", extra_merge);
    assert_int_equal(fclose(f), 0);
}

static void test_convert_bpe(void **state) {
    (void)state;
    const char *v = tp("vocab.json"), *m = tp("merges.txt");
    write_bpe(v, m, "");
    tgt_write_file(tp("c.txt"), "the cat the");
    const char *h5 = tp("bpe.h5");
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s' --val-fraction 0 --vocab '%s' "
                             "--merges '%s'",
                             tp("c.txt"), h5, v, m),
                     0);
    tgt_expect_out("6 tokens (bpe, vocabulary 259");
    char err[512];
    tg_dataset *ds;
    tg_dataset_options o = {.block_size = 5};
    assert_int_equal(tg_dataset_open_opts(h5, "train", &o, &ds, err, sizeof err), TG_OK);
    /* "the" " cat" " the": the, then the space and c a t unmerged, then
     * " the" by the third merge. */
    const int64_t want[6] = {257, ' ', 'c', 'a', 't', 258};
    int64_t i0 = 0;
    float x[5];
    int64_t y[5];
    assert_int_equal(tg_dataset_read(ds, &i0, 1, x, y, err, sizeof err), TG_OK);
    for (int k = 0; k < 5; k++) {
        assert_int_equal((int64_t)x[k], want[k]);
        assert_int_equal(y[k], want[k + 1]);
    }
    assert_string_equal(tg_dataset_tokenizer(ds), "bpe");
    assert_true(fabs(tg_dataset_bytes_per_token(ds) - 11.0 / 6.0) < 1e-12);
    assert_int_equal(tg_dataset_x_dtype(ds), TG_I32); /* stored as u16 */
    tg_dataset_close(ds);
}

static void test_convert_bad_input(void **state) {
    (void)state;
    const char *h5 = tp("bad.h5"), *v = tp("v.json"), *m = tp("m.txt");
    tgt_write_file(tp("t.txt"), "some text to convert");
    tgt_write_file(tp("empty.txt"), "");
    assert_int_equal(tgt_run("convert text --out '%s'", h5), 2);
    tgt_expect_out("--in is required");
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s' --vocab '%s'", tp("t.txt"), h5, v),
                     2);
    tgt_expect_out("--vocab and --merges go together");
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s' --val-fraction 1", tp("t.txt"), h5),
                     2);
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s'", tp("none.txt"), h5), 3);
    tgt_expect_out("none.txt: cannot open");
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s'", tp("empty.txt"), h5), 3);
    tgt_expect_out("empty.txt: no text to convert");
    /* 20 bytes at 0.05: val would get 1 token, no window. */
    assert_int_equal(
        tgt_run("convert text --in '%s' --out '%s' --val-fraction 0.05", tp("t.txt"), h5), 3);
    tgt_expect_out("train would get 19, val 1");
    /* A merge whose result is not in the vocabulary: file and line. */
    write_bpe(v, m, "c a\n");
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s' --vocab '%s' --merges '%s'",
                             tp("t.txt"), h5, v, m),
                     3);
    tgt_expect_out("m.txt:5: the merge result is not in the vocabulary");
    write_bpe(v, m, "onlyone\n");
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s' --vocab '%s' --merges '%s'",
                             tp("t.txt"), h5, v, m),
                     3);
    tgt_expect_out("m.txt:5: expected two tokens");
    /* A vocabulary that is not JSON, one with a float id, one without
     * every byte. */
    write_bpe(v, m, "");
    tgt_write_file(v, "{\n  \"a\": 1,\n  \"b\" 2\n}\n");
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s' --vocab '%s' --merges '%s'",
                             tp("t.txt"), h5, v, m),
                     3);
    tgt_expect_out("v.json:3: expected ':' after a key");
    tgt_write_file(v, "{\"a\": 1.5}");
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s' --vocab '%s' --merges '%s'",
                             tp("t.txt"), h5, v, m),
                     3);
    tgt_expect_out("v.json:1: expected an integer id");
    tgt_write_file(v, "{\"a\": 1}");
    assert_int_equal(tgt_run("convert text --in '%s' --out '%s' --vocab '%s' --merges '%s'",
                             tp("t.txt"), h5, v, m),
                     3);
    tgt_expect_out("has no token (a byte-level BPE needs all 256");
    assert_int_not_equal(access(h5, F_OK), 0);
}

/* The bigram model and the data for the training tests. */
static const char *bigram(void) {
    const char *p = tp("bigram.ini");
    tgt_write_file(p, "[input]\ndtype = i64\n\n[embedding]\nnum = 256\ndim = 256\n");
    return p;
}

static const char *token_data(void) {
    const char *h5 = tp("lm.h5");
    if (access(h5, F_OK) != 0 &&
        tgt_run("convert text --in '%s' --out '%s'", make_text("lm.txt"), h5) != 0)
        fail_msg("convert text:\n%s", tgt_out);
    return h5;
}

#define TRAIN_ARGS                                                                        \
    "train --data '%s' --model '%s' --block-size 16 --batch-size 8 --steps-per-epoch 10 " \
    "--epochs 2 --lr 0.1 --schedule constant --log-every 1 --threads 1 --verbose "

/* The "loss" of every step event of a metrics file, as text (bit-exact). */
static void step_losses(const char *metrics, char *out, size_t len) {
    FILE *f = fopen(metrics, "r");
    char line[4096];
    size_t off = 0;
    assert_non_null(f);
    out[0] = 0;
    while (fgets(line, sizeof line, f)) {
        char *l = strstr(line, "\"event\":\"step\"") ? strstr(line, "\"loss\":") : NULL;
        if (l)
            off += (size_t)snprintf(out + off, len - off, "%.*s\n", (int)strcspn(l, ","), l);
    }
    fclose(f);
}

static void test_train_bigram(void **state) {
    (void)state;
    const char *h5 = token_data(), *model = bigram(), *met = tp("lm.jsonl");
    assert_int_equal(tgt_run(TRAIN_ARGS "--ckpt-dir '%s' --metrics '%s'", h5, model, tp("ck"), met),
                     0);
    /* Progress in tokens/s; val (convert's held-out tail) evaluated. */
    tgt_expect_out("tokens/s");
    tgt_expect_out("test_ppl");
    tgt_expect_out("test loss: ");
    const char *l = strstr(tgt_out, "test loss: ");
    double loss = strtod(l + 11, NULL);
    /* The bigram learns: below the uniform guess ln 256 = 5.545. */
    assert_true(loss > 0 && loss < 5.0);
    const char *p = strstr(l, "perplexity ");
    assert_non_null(p);
    assert_true(fabs(strtod(p + 11, NULL) - exp(loss)) < 1e-2 * exp(loss));
    const char *b = strstr(l, ", ");
    assert_true(fabs(strtod(b + 2, NULL) - loss / log(2.0)) < 1e-3);
    char text[1 << 14];
    FILE *f = fopen(met, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    assert_non_null(strstr(text, "\"test_bpb\":"));
    assert_non_null(strstr(text, "\"test_ppl\":"));
    assert_non_null(strstr(text, "\"tokens_per_s\":"));
    /* eval --ckpt: the same loss on val (the default without a test split). */
    assert_int_equal(tgt_run("eval --ckpt '%s/ckpt-00000020.h5' --threads 1", tp("ck")), 0);
    tgt_expect_out("on val: loss ");
    tgt_expect_out("perplexity ");
    tgt_expect_out("bits per byte ");
    double eloss = strtod(strstr(tgt_out, "loss ") + 5, NULL);
    assert_true(fabs(eloss - loss) < 1e-4);
}

static void test_resume_bit_identical(void **state) {
    (void)state;
    const char *h5 = token_data(), *model = bigram();
    char a[4096], b[4096];
    assert_int_equal(
        tgt_run(TRAIN_ARGS "--max-steps 20 --metrics '%s'", h5, model, tp("straight.jsonl")), 0);
    assert_int_equal(tgt_run(TRAIN_ARGS "--max-steps 10 --ckpt-dir '%s' --metrics '%s'", h5, model,
                             tp("rs"), tp("halves.jsonl")),
                     0);
    assert_int_equal(tgt_run(TRAIN_ARGS "--max-steps 20 --ckpt-dir '%s' --metrics '%s' "
                                        "--resume auto",
                             h5, model, tp("rs"), tp("halves.jsonl")),
                     0);
    step_losses(tp("straight.jsonl"), a, sizeof a);
    step_losses(tp("halves.jsonl"), b, sizeof b);
    assert_int_equal(strlen(a) > 0, 1);
    assert_string_equal(a, b);
    /* Another seed draws other windows. */
    assert_int_equal(
        tgt_run(TRAIN_ARGS "--max-steps 20 --seed 7 --metrics '%s'", h5, model, tp("seed7.jsonl")),
        0);
    step_losses(tp("seed7.jsonl"), b, sizeof b);
    assert_string_not_equal(a, b);
}

/* --accum-steps 2: each rank's windows cut in two micro-batches (their
 * labels with them) give the losses of the whole batch. */
static void test_accum(void **state) {
    (void)state;
    const char *h5 = token_data(), *model = bigram();
    char a[4096], b[4096];
    assert_int_equal(tgt_run(TRAIN_ARGS "--max-steps 5 --optimizer sgd --metrics '%s'", h5, model,
                             tp("acc1.jsonl")),
                     0);
    assert_int_equal(tgt_run(TRAIN_ARGS "--max-steps 5 --optimizer sgd --accum-steps 2 "
                                        "--metrics '%s'",
                             h5, model, tp("acc2.jsonl")),
                     0);
    step_losses(tp("acc1.jsonl"), a, sizeof a);
    step_losses(tp("acc2.jsonl"), b, sizeof b);
    int n = 0;
    for (const char *p = a, *q = b; (p = strstr(p, ":")) && (q = strstr(q, ":")); p++, q++) {
        double x = strtod(p + 1, NULL), y = strtod(q + 1, NULL);
        assert_true(fabs(x - y) <= 1e-5 * fabs(x));
        n++;
    }
    assert_int_equal(n, 5);
}

static void test_train_bad_model(void **state) {
    (void)state;
    const char *h5 = token_data(), *m = tp("clf.ini");
    /* A classifier of the whole window, not a score per position. */
    tgt_write_file(m, "[input]\ndtype = i64\n\n[embedding]\nnum = 256\ndim = 4\n\n[flatten]\n\n"
                      "[linear]\nout = 256\n");
    assert_int_not_equal(tgt_run(TRAIN_ARGS, h5, m), 0);
    tgt_expect_out("must give (N, 16, 256) logits");
    /* A per-position model on a split of labelled samples. */
    unsigned char xv[16 * 8];
    int64_t yv[16];
    for (int i = 0; i < 16; i++) {
        yv[i] = i % 3;
        for (int j = 0; j < 8; j++)
            xv[i * 8 + j] = (unsigned char)(i * 8 + j);
    }
    tgt_write_npy(tp("xv.npy"), "|u1", "(16, 8)", xv, sizeof xv);
    tgt_write_npy(tp("yv.npy"), "<i8", "(16,)", yv, sizeof yv);
    const char *imgp = tp("vec.h5");
    assert_int_equal(
        tgt_run("convert npy --x '%s' --y '%s' --out '%s'", tp("xv.npy"), tp("yv.npy"), imgp), 0);
    const char *pm = tp("pos.ini");
    tgt_write_file(pm, "[input]\ndtype = i64\n\n[embedding]\nnum = 256\n"
                       "dim = 4\n\n[linear]\nout = classes\n");
    assert_int_not_equal(tgt_run("train --data '%s' --model '%s' --max-steps 1 --threads 1 "
                                 "--batch-size 8 --test-split train",
                                 imgp, pm),
                         0);
    tgt_expect_out("gives a score per position");
    /* A block size longer than the val split. */
    assert_int_not_equal(
        tgt_run("train --data '%s' --model '%s' --block-size 100000 --threads 1", h5, bigram()), 0);
    tgt_expect_out("fewer than one window of block size 100000");
}

static int setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_textcli");
}

static int teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert_bytes),        cmocka_unit_test(test_convert_bpe),
        cmocka_unit_test(test_convert_bad_input),    cmocka_unit_test(test_train_bigram),
        cmocka_unit_test(test_resume_bit_identical), cmocka_unit_test(test_accum),
        cmocka_unit_test(test_train_bad_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
