/*
 * tapegrad/datasets.h: training data on disk, and getting it to the trainer.
 *
 * Four pieces, each usable alone:
 *
 *   - tg_idx_convert() turns MNIST-family IDX files (gzip) into the HDF5
 *     schema below, and tg_npy_convert() does the same for NumPy .npy files.
 *   - tg_dataset reads one split of such a file: validated at open, then
 *     tg_dataset_read() gathers any set of sample indices into normalised f32
 *     inputs and i64 labels.
 *   - tg_sampler decides which samples each rank reads: one permutation per
 *     epoch computed from (seed, epoch) alone, so it is the same on every rank
 *     and for every thread count. Global batch k is perm[k*B, (k+1)*B); rank r
 *     of w takes its contiguous slice of B/w samples, so the global batch does
 *     not depend on the world size, and the position in the data is a single
 *     number, samples_consumed, that is valid for any world size.
 *   - tg_loader runs one I/O thread that reads batches ahead of the consumer
 *     into preallocated buffers (double buffering).
 *
 * Schema (docs/DATASETS.md has the full text): one HDF5 file, one group per
 * split ("/train", "/test"). Each group holds `x`, shape (N, ...), u8 or f32,
 * and `y`, shape (N,), an integer type, with labels in [0, num_classes). Group
 * attributes: `num_classes` (integer, required), `scale`, `mean`, `std`
 * (doubles, optional, default 1, 0, 1; mean and std may instead be vectors
 * of length C, one value per channel, x's first axis after N). A sample is
 * normalised as (x*scale - mean[c])/std[c].
 *
 * Errors: every fallible call returns a tg_status and writes a one-line
 * message into the caller's buffer `err` of `errlen` bytes (either may be
 * NULL/0 to not receive it). Messages name the file, the HDF5 path and what
 * was expected, e.g. "data.h5: /train/y has 59999 rows but /train/x has
 * 60000". Nothing is printed. This module does not use the runtime context.
 *
 * Threads: a tg_dataset or tg_sampler must not be used by two threads at
 * once. A tg_loader takes both over until tg_loader_free(). HDF5 must be the
 * thread-safe build (Debian's is) because the loader reads on its own thread.
 *
 * Example: train for one epoch on rank `rank` of `world`.
 *
 *     char err[512];
 *     tg_dataset *ds;
 *     tg_sampler *sp;
 *     tg_loader *ld;
 *     if (tg_dataset_open("fmnist.h5", "train", &ds, err, sizeof err))
 *         goto fail;
 *     tg_sampler_config sc = tg_sampler_config_train(
 *         tg_dataset_len(ds), 256, 42, rank, world);
 *     if (tg_sampler_new(&sc, &sp, err, sizeof err))
 *         goto fail;
 *     if (tg_loader_new(ds, sp, NULL, &ld, err, sizeof err))
 *         goto fail;
 *     for (;;) {
 *         const float *x;
 *         const int64_t *y;
 *         int64_t n;
 *         bool end;
 *         if (tg_loader_next(ld, &x, &y, &n, &end, err, sizeof err))
 *             goto fail;
 *         if (end)
 *             break;
 *         // x: n * tg_dataset_sample_numel(ds) floats, y: n labels.
 *     }
 *     // Save tg_loader_samples_consumed(ld) in the checkpoint.
 *     tg_loader_free(ld);
 *     tg_sampler_free(sp);
 *     tg_dataset_close(ds);
 */
#ifndef TAPEGRAD_DATASETS_H
#define TAPEGRAD_DATASETS_H

#include "tapegrad/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* IDX conversion                                                            */
/* ------------------------------------------------------------------------ */

/* How tg_idx_convert_opts() lays out the data it writes. */
typedef struct tg_idx_options {
    /* Samples per HDF5 chunk of x (and of y, times 64). 0 means 1024. */
    int64_t chunk_samples;
    /* zlib level 0..9 for x and y; 0 (the default) writes no filter, which
     * keeps random reads fast: a compressed chunk must be inflated whole to
     * read one sample from it. */
    int deflate_level;
    /* Optional: asked between blocks of work; when it returns true the
     * conversion gives up with TG_ERR_STOPPED and leaves nothing behind
     * (the pre-emption flag of a launcher). */
    bool (*stop)(void *user);
    void *stop_user;
} tg_idx_options;

/*
 * Converts an MNIST-family pair of gzip'd IDX files (images: magic 0x00000803,
 * u8, dims N x rows x cols; labels: magic 0x00000801, u8, dims N) into split
 * `split` ("train", "test", ...) of the HDF5 file out_h5:
 *
 *   x  u8 (N, 1, rows, cols)   (NCHW with one channel)
 *   y  u8 (N,)
 *   num_classes  10 when every label is in 0..9, else max label + 1
 *   scale        1/255
 *   mean, std    mean and population standard deviation of all pixels of the
 *                split after scaling (std 1 if the pixels are constant); a
 *                split other than "train" written into a file that already
 *                holds "train" takes train's mean and std instead, so that
 *                test data is normalised as the training data was
 *
 * A new file is written under a temporary name and renamed into place. An
 * existing HDF5 file keeps its other splits; a split of the same name is
 * replaced (HDF5 does not give back the old split's space; h5repack does).
 * An existing file that is not HDF5 is refused rather than overwritten.
 *
 * Returns TG_OK; TG_ERR_IO when a file cannot be opened, read or written;
 * TG_ERR_FORMAT for a file that is not gzip, a bad IDX magic, a body shorter
 * or longer than its header says, or label and image counts that differ;
 * TG_ERR_INVALID for NULL or empty arguments. On failure a new output file is
 * not created and an existing one keeps its previous content for `split`.
 */
tg_status tg_idx_convert(const char *images_gz, const char *labels_gz, const char *out_h5,
                         const char *split, char *err, size_t errlen);

/* As tg_idx_convert() with explicit layout options; opts may be NULL. */
tg_status tg_idx_convert_opts(const char *images_gz, const char *labels_gz, const char *out_h5,
                              const char *split, const tg_idx_options *opts, char *err,
                              size_t errlen);

/* ------------------------------------------------------------------------ */
/* NumPy (.npy) conversion                                                   */
/* ------------------------------------------------------------------------ */

/* What tg_npy_convert() writes; all-zero fields mean the defaults. */
typedef struct tg_npy_options {
    /* Samples per HDF5 chunk of x (and of y, times 64). 0 means 1024, or
     * fewer when a chunk of x would pass 64 MiB; a value given is kept
     * (halved only below HDF5's 4 GiB chunk limit). The converter holds one
     * chunk of x in memory. */
    int64_t chunk_samples;
    /* zlib level 0..9 for x and y, as tg_idx_options (0: no filter). */
    int deflate_level;
    /* The split's num_classes: 0 means the largest label + 1; a value given
     * must be 1..TG_DATASET_MAX_CLASSES and every label must lie below it. */
    int64_t num_classes;
    /* The scale attribute: 0 means 1/255 for u8 x and 1 for float x; a value
     * given must be finite and non-zero. */
    double scale;
    /* When true, mean and std are written as given (finite, std > 0);
     * else they are chosen like tg_idx_convert() does: train's for another
     * split written beside a train split, else computed from the split. */
    bool set_mean_std;
    double mean, std;
    /* Optional: as tg_idx_options.stop. */
    bool (*stop)(void *user);
    void *stop_user;
} tg_npy_options;

/*
 * Converts a pair of NumPy .npy files (format versions 1.0, 2.0 and 3.0) into
 * split `split` of the HDF5 file out_h5:
 *
 *   x_npy  shape (N, d1[, ..., d4]) (1 to 4 dims after N, at most
 *          TG_DATASET_MAX_SAMPLE_NUMEL elements per sample), dtype u1 (stored
 *          as u8) or f4/f8 (stored as f32; every value must be finite, and an
 *          f8 value must fit in f32). C order; any byte order.
 *   y_npy  shape (N,), any integer dtype (i1..i8, u1..u8), any byte order;
 *          labels in [0, num_classes). Stored as u8 when num_classes <= 256,
 *          else as i32.
 *
 * Attributes: num_classes, scale and mean/std as tg_npy_options says. Unless
 * set_mean_std gives them, a split other than "train" written into a file
 * that already holds "train" (with a mean and a positive std) takes train's
 * mean and std, so that test data is normalised as the training data was;
 * otherwise mean and std are computed: the mean and population standard
 * deviation of all values of x*scale of the split (std 1 if x is constant),
 * with x as stored. x is streamed from the file one chunk at a time and y
 * in blocks, so memory stays bounded by one chunk of x whatever the size of
 * the files.
 *
 * The output is written as tg_idx_convert() writes it: a new file under a
 * temporary name renamed into place; an existing HDF5 file keeps its other
 * splits and `split` is replaced only once the new one is complete; an
 * existing file that is not HDF5 is refused.
 *
 * Returns TG_OK; TG_ERR_IO when a file cannot be opened, read or written;
 * TG_ERR_FORMAT for a file that is not .npy, a truncated or malformed header,
 * a body shorter or longer than the header says, shapes that break the
 * schema or disagree, empty arrays, a label out of range or a non-finite x
 * (each message names the file and the first offending index);
 * TG_ERR_UNSUPPORTED for a valid .npy this converter does not take: another
 * format version, another dtype (objects, bool, complex, structured, ...) or
 * Fortran order with more than one dimension (save with
 * np.ascontiguousarray()); TG_ERR_INVALID for NULL or empty arguments or bad
 * options; TG_ERR_NOMEM. opts may be NULL. On failure a new output file is
 * not created and an existing one keeps its previous content.
 */
tg_status tg_npy_convert(const char *x_npy, const char *y_npy, const char *out_h5,
                         const char *split, const tg_npy_options *opts, char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* Text conversion                                                           */
/* ------------------------------------------------------------------------ */

/* What tg_text_convert() writes; all-zero fields mean the defaults. */
typedef struct tg_text_options {
    /* The share of the tokens, taken from the end of the text, written as
     * split "val"; 0 writes no val split. In [0, 1). */
    double val_fraction;
    /* A GPT-2-style byte-level BPE: vocab_json maps token strings (in
     * GPT-2's byte-to-unicode alphabet) to ids, merges_txt lists the merges
     * by rank ("a b" per line, an optional "#version" first line). Both or
     * neither; neither: byte tokens (vocabulary 256). */
    const char *vocab_json;
    const char *merges_txt;
    /* Optional: as tg_idx_options.stop. */
    bool (*stop)(void *user);
    void *stop_user;
} tg_text_options;

/*
 * Converts the text files inputs[0..nin) (concatenated in order, read as
 * bytes) into token splits of out_h5 (see tg_dataset_is_tokens): "train"
 * with the first tokens and "val" with the last round(val_fraction x
 * ntok). Each split holds `tokens`, u8 for byte tokens and u16 for a BPE,
 * and the attributes vocab_size, tokenizer ("bytes" or "bpe") and
 * bytes_per_token (the split's bytes of text per token). The output is
 * written as tg_idx_convert() writes it (a new file under a temporary name
 * renamed into place; an existing HDF5 file keeps its other splits).
 *
 * Returns TG_OK; TG_ERR_IO when a file cannot be read or written;
 * TG_ERR_FORMAT for a bad vocab or merges file (the message names the file
 * and the line), for empty input, or for a split left with fewer than 2
 * tokens (one window of one token and its target);
 * TG_ERR_INVALID for bad arguments; TG_ERR_NOMEM. The whole text's tokens
 * are held in memory (two bytes per token) while converting.
 */
tg_status tg_text_convert(const char *const *inputs, int nin, const char *out_h5,
                          const tg_text_options *opts, char *err, size_t errlen);

/* A GPT-2-style BPE tokenizer (see tg_text_options). */
typedef struct tg_bpe tg_bpe;

/* Reads a vocab.json and merges.txt pair. Every merge's parts and result
 * must be in the vocabulary, and so must the 256 single bytes; ids must lie
 * in [0, 65536). Errors name the file and the line. */
tg_status tg_bpe_load(const char *vocab_json, const char *merges_txt, tg_bpe **out, char *err,
                      size_t errlen);
/* The same from texts in memory; the names label the messages. */
tg_status tg_bpe_parse(const char *vocab, size_t vlen, const char *vname, const char *merges,
                       size_t mlen, const char *mname, tg_bpe **out, char *err, size_t errlen);
void tg_bpe_free(tg_bpe *b);
/* The vocabulary size: the largest id + 1. */
int64_t tg_bpe_vocab_size(const tg_bpe *b);
/*
 * Encodes len bytes of text into ids (room for len ids: a BPE never gives
 * more tokens than bytes) and returns the count, or -1 when out of memory.
 * The text is cut into pieces as GPT-2 cuts it (contractions, letters,
 * digits, other symbols, each with one leading space; runs of spaces) and
 * each piece is merged by rank.
 */
int64_t tg_bpe_encode(tg_bpe *b, const unsigned char *text, int64_t len, uint16_t *ids);

/* ------------------------------------------------------------------------ */
/* Dataset reader                                                            */
/* ------------------------------------------------------------------------ */

typedef struct tg_dataset tg_dataset;

/* The largest num_classes and the most elements per sample a split may
 * declare: larger values are refused at open (TG_ERR_FORMAT) rather than
 * left to fail as an allocation of the model. */
#define TG_DATASET_MAX_CLASSES ((int64_t)1 << 20)
#define TG_DATASET_MAX_SAMPLE_NUMEL ((int64_t)1 << 24)

/* Token splits: the default window length T and the largest vocabulary. */
#define TG_DATASET_DEFAULT_BLOCK 128
#define TG_DATASET_MAX_VOCAB 65536

/* The default for tg_dataset_options.cache_budget: 256 MiB. */
#define TG_DATASET_DEFAULT_CACHE_BUDGET ((int64_t)256 << 20)

typedef struct tg_dataset_options {
    /*
     * Bytes the reader may keep in memory as whole copies of the split. The
     * labels are cached at open when N*8 bytes fit; x (stored dtype, e.g. one
     * byte per u8 element) is cached on the first tg_dataset_read() (or when
     * a loader starts) when it fits in what the labels left. Anything not cached is read from the
     * file for every batch, so memory stays bounded for splits larger than RAM. 0 means
     * TG_DATASET_DEFAULT_CACHE_BUDGET; a negative value caches nothing.
     */
    int64_t cache_budget;
    /* Token splits: the window length T (the block size); 0 means
     * TG_DATASET_DEFAULT_BLOCK. Ignored for splits of x and y. */
    int64_t block_size;
    /* Optional: asked between the blocks of the work done at open (the
     * label scan, the check of cached f32 inputs); when it returns true the
     * open gives up with TG_ERR_STOPPED. */
    bool (*stop)(void *user);
    void *stop_user;
} tg_dataset_options;

/*
 * Opens split `split` ("train" or "/train") of the HDF5 file `path` and
 * validates it: an HDF5 file, not truncated, the split group present with
 * datasets x and y, x of rank >= 2 (at most TG_MAX_DIMS) and dtype u8 or f32,
 * y of rank 1 and an integer dtype, the same number of rows N >= 1, an integer
 * attribute num_classes >= 1, optional finite scale/mean/std with std > 0,
 * and every label in [0, num_classes) (read in bounded chunks).
 *
 * Uses the default options (cache_budget 256 MiB). On TG_OK *out is a new handle the caller
 * frees with tg_dataset_close(). Returns TG_ERR_IO when the file cannot be
 * read, TG_ERR_FORMAT when it breaks the schema, TG_ERR_INVALID for bad
 * arguments, TG_ERR_NOMEM. *out is NULL on failure.
 */
tg_status tg_dataset_open(const char *path, const char *split, tg_dataset **out, char *err,
                          size_t errlen);

/* As tg_dataset_open() with explicit options; opts may be NULL. */
tg_status tg_dataset_open_opts(const char *path, const char *split, const tg_dataset_options *opts,
                               tg_dataset **out, char *err, size_t errlen);

/* Closes the file and frees the handle and its caches. NULL is a no-op. */
void tg_dataset_close(tg_dataset *ds);

/* Number of samples N of the split. */
int64_t tg_dataset_len(const tg_dataset *ds);

/* The shape of one sample (x's shape without N): *ndim receives its rank; the
 * array is owned by ds and valid until tg_dataset_close(). */
const int64_t *tg_dataset_sample_shape(const tg_dataset *ds, int *ndim);

/* Elements per sample: the product of the sample shape. */
int64_t tg_dataset_sample_numel(const tg_dataset *ds);

/* x's stored dtype: TG_U8 or TG_F32. tg_dataset_read() always returns f32. */
tg_dtype tg_dataset_x_dtype(const tg_dataset *ds);

/* The split's num_classes attribute. */
int64_t tg_dataset_num_classes(const tg_dataset *ds);

/* The normalisation attributes (or their defaults 1, 0, 1); with vector
 * attributes, mean and std are channel 0's. */
double tg_dataset_scale(const tg_dataset *ds);
double tg_dataset_mean(const tg_dataset *ds);
double tg_dataset_std(const tg_dataset *ds);

/* The per-channel mean and std (arrays owned by ds) and their length: 1
 * when both attributes are single numbers, else C, x's first axis after N
 * (a single number beside a vector applies to every channel). Channel k
 * covers elements [k*M, (k+1)*M) of a sample, M = sample_numel / C. */
int64_t tg_dataset_norm(const tg_dataset *ds, const double **mean, const double **std);

/* True once x is held whole in memory (see cache_budget). */
bool tg_dataset_x_cached(const tg_dataset *ds);

/*
 * Gathers the n samples indices[0..n) (any order, repeats allowed) into
 * x_out, n * sample_numel floats, normalised as (x*scale - mean)/std and
 * computed in double, and their labels into y_out, n int64. Either output may
 * be NULL to skip it. Data held in memory (see cache_budget) is gathered
 * directly. Otherwise the indices are sorted, repeats are read once, each run
 * of consecutive indices of x is one hyperslab read (so sequential batches
 * are one read), and the labels are one read of all runs OR-ed together.
 * Scratch buffers grow to the largest n seen and are reused.
 *
 * Returns TG_OK; TG_ERR_INVALID for an index outside [0, N) (the message
 * names it); TG_ERR_IO for a failed read; TG_ERR_FORMAT for a label outside
 * [0, num_classes) (the file changed since open); TG_ERR_NOMEM.
 */
tg_status tg_dataset_read(tg_dataset *ds, const int64_t *indices, int64_t n, float *x_out,
                          int64_t *y_out, char *err, size_t errlen);

/*
 * Regression. A split whose y is f32 of shape (N,) or (N, K) holds
 * targets instead of labels: num_classes is then not read (and reported
 * as 0), every target must be finite (checked at open), and
 * tg_dataset_target_dim() is K (1 for (N,)); it is 0 for a label split.
 * tg_dataset_read_targets() gathers x as tg_dataset_read() does and the
 * targets into t_out (n * K floats, either output may be NULL);
 * tg_dataset_read() with y_out refuses such a split (TG_ERR_INVALID), and
 * tg_dataset_read_targets() refuses a label split.
 */
int64_t tg_dataset_target_dim(const tg_dataset *ds);
tg_status tg_dataset_read_targets(tg_dataset *ds, const int64_t *indices, int64_t n, float *x_out,
                                  float *t_out, char *err, size_t errlen);

/*
 * Token splits. A split whose group holds a 1-D `tokens` dataset (u8 or
 * u16; no x) is a token split (docs/DATASETS.md; `tapegrad convert text`
 * writes them): group attributes vocab_size (integer in [2, 65536],
 * required; every token must lie below it, checked at open), tokenizer (a
 * string, "bytes" or "bpe"; default "bytes") and bytes_per_token (the text's
 * bytes per token, for bits per byte; default 1). With T the block size
 * (tg_dataset_options.block_size), sample i is the window of T+1 tokens
 * starting at token i, so tg_dataset_len() is ntok - T and a sample has
 * shape (T). tg_dataset_read() writes a window's first T tokens as its
 * inputs (n*T floats, the token ids) and its last T as its labels (n*T
 * int64: the next token at every position); num_classes is vocab_size.
 * The tokens are held in memory (2 bytes each) when they fit the cache
 * budget, else every window is read from the file.
 *
 * tg_dataset_is_tokens() tells such a split; tg_dataset_block_size() is T
 * and tg_dataset_num_tokens() the tokens in the split (0 for other splits);
 * tg_dataset_labels_per_sample() is T for a token split and 1 otherwise;
 * tg_dataset_bytes_per_token() and tg_dataset_tokenizer() (owned by ds)
 * give the attributes (0 and NULL for other splits).
 */
bool tg_dataset_is_tokens(const tg_dataset *ds);
int64_t tg_dataset_block_size(const tg_dataset *ds);
int64_t tg_dataset_num_tokens(const tg_dataset *ds);
int64_t tg_dataset_labels_per_sample(const tg_dataset *ds);
double tg_dataset_bytes_per_token(const tg_dataset *ds);
const char *tg_dataset_tokenizer(const tg_dataset *ds);

/* Whether the HDF5 file `path` has a top-level group `split`: 1, 0, or -1
 * when the file cannot be read as HDF5. Prints nothing. */
int tg_dataset_has_split(const char *path, const char *split);

/* The file path and split name as given to tg_dataset_open(); owned by ds. */
const char *tg_dataset_path(const tg_dataset *ds);
const char *tg_dataset_split(const tg_dataset *ds);

/* ------------------------------------------------------------------------ */
/* Sampler                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Philox4x32-10 (Salmon et al., SC'11), the counter-based generator behind
 * the epoch permutation: out = philox(ctr, key). Pure; exposed for tests and
 * for anyone who needs the same stream.
 */
void tg_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/*
 * Writes the epoch permutation of [0, n) for (seed, epoch) into perm (n
 * entries): a Fisher-Yates shuffle whose swap targets come from Philox keyed
 * by seed with the epoch and step in the counter. The result depends on
 * nothing else. Returns TG_ERR_INVALID for n < 1, epoch outside [0, 2^32)
 * or perm NULL.
 */
tg_status tg_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm, char *err,
                         size_t errlen);

/*
 * A validation set held out of a split of n samples: tg_holdout_count() is
 * round(fraction * n), clamped to [0, n]; tg_holdout() writes the nval
 * held-out indices into val and the other n - nval into train, both in
 * ascending order. The choice is the first nval entries of a Philox
 * Fisher-Yates shuffle keyed by seed on a stream of its own (not an epoch
 * permutation), so it depends on (seed, n, nval) alone, never on the world
 * size. Returns TG_ERR_INVALID for bad sizes, TG_ERR_NOMEM.
 */
int64_t tg_holdout_count(int64_t n, double fraction);
tg_status tg_holdout(uint64_t seed, int64_t n, int64_t nval, int64_t *val, int64_t *train,
                     char *err, size_t errlen);

typedef struct tg_sampler_config {
    int64_t n;      /* samples in the split, N >= 1 */
    int64_t batch;  /* global batch B >= 1, divisible by world */
    uint64_t seed;  /* permutation seed (ignored without shuffle) */
    int rank;       /* 0 <= rank < world */
    int world;      /* world size >= 1 */
    bool shuffle;   /* permute each epoch (training) or keep file order */
    bool drop_last; /* drop the last partial global batch of each epoch */
    /* Optional (borrowed, n entries): the sampler draws positions in [0, n)
     * as above and hands out subset[position], so that it covers a subset
     * of a split (the samples left after a validation hold-out). NULL: the
     * positions themselves (times stride, when stride > 1). */
    const int64_t *subset;
    int64_t stride;
    /* Draw with replacement instead of permuting (token windows): the
     * sample at position j of global batch g (g counts batches from the
     * start of the run, over every epoch) is a uniform draw from [0, n)
     * made by Philox keyed by seed with (g, j) in the counter, so global
     * batch g is a function of (seed, g) alone. An epoch is then
     * epoch_batches batches (>= 1; drop_last and shuffle are ignored). */
    bool draw;
    int64_t epoch_batches;
} tg_sampler_config;

/* Training: shuffled, last partial batch dropped (N / B batches). */
tg_sampler_config tg_sampler_config_train(int64_t n, int64_t batch, uint64_t seed, int rank,
                                          int world);
/* Evaluation: file order, every sample exactly once across the ranks; the
 * last global batch may be partial, so a rank may get fewer samples or none. */
tg_sampler_config tg_sampler_config_eval(int64_t n, int64_t batch, int rank, int world);

typedef struct tg_sampler tg_sampler;

/*
 * Creates a sampler positioned at samples_consumed = 0. *out is freed with
 * tg_sampler_free(). Returns TG_ERR_INVALID (naming the field) when B is not
 * divisible by the world size, rank is outside [0, world), n or B < 1, or an
 * epoch would have no batch (drop_last with N < B); TG_ERR_NOMEM.
 */
tg_status tg_sampler_new(const tg_sampler_config *cfg, tg_sampler **out, char *err, size_t errlen);

/* Frees the sampler. NULL is a no-op. */
void tg_sampler_free(tg_sampler *s);

/* The configuration the sampler was made with. */
const tg_sampler_config *tg_sampler_get_config(const tg_sampler *s);

/* Global batches per epoch: N / B with drop_last, ceil(N / B) without. */
int64_t tg_sampler_num_batches(const tg_sampler *s);

/* Samples consumed per epoch: (N / B) * B with drop_last, N without. */
int64_t tg_sampler_epoch_samples(const tg_sampler *s);

/* The most samples this rank gets in one batch: B / world. */
int64_t tg_sampler_local_batch(const tg_sampler *s);

/*
 * Writes this rank's indices of global batch k of `epoch` into idx (room for
 * tg_sampler_local_batch() entries) and their count into *n, which is 0 for
 * a rank past the end of a partial last batch. Returns TG_ERR_INVALID for k
 * outside [0, num_batches) or a bad epoch; TG_ERR_NOMEM.
 */
tg_status tg_sampler_batch(tg_sampler *s, int64_t epoch, int64_t k, int64_t *idx, int64_t *n,
                           char *err, size_t errlen);

/*
 * Returns this rank's part of the batch at the current position (as
 * tg_sampler_batch), then advances samples_consumed past the whole global
 * batch. *epoch and *k (either may be NULL) receive the batch's coordinates;
 * *last is set when it is the last batch of its epoch (may be NULL).
 */
tg_status tg_sampler_next(tg_sampler *s, int64_t *idx, int64_t *n, int64_t *epoch, int64_t *k,
                          bool *last, char *err, size_t errlen);

/* Global samples consumed since epoch 0, batch 0: the resume position. */
int64_t tg_sampler_samples_consumed(const tg_sampler *s);

/*
 * Sets the position (resuming from a checkpoint, possibly written with a
 * different world size). It must fall on a batch boundary of this sampler:
 * returns TG_ERR_INVALID otherwise, naming the nearest boundaries.
 */
tg_status tg_sampler_set_samples_consumed(tg_sampler *s, int64_t consumed, char *err,
                                          size_t errlen);

/*
 * Maps a samples_consumed value to the epoch and global batch it begins:
 * epoch = consumed / epoch_samples, k = (consumed % epoch_samples) / B.
 * Returns TG_ERR_INVALID if consumed is negative or not on a batch boundary.
 */
tg_status tg_sampler_locate(const tg_sampler *s, int64_t consumed, int64_t *epoch, int64_t *k,
                            char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* Augmentation                                                              */
/* ------------------------------------------------------------------------ */

/* Which transforms tg_augment applies (bits of tg_augment.flags). */
enum {
    TG_AUGMENT_CROP = 1u << 0, /* random crop of the zero-padded image */
    TG_AUGMENT_FLIP = 1u << 1, /* horizontal flip with probability 1/2 */
};

/* The largest crop padding, in pixels. */
#define TG_AUGMENT_MAX_PAD 256

/*
 * Image augmentation of the training split, as torchvision's CIFAR recipe
 * (RandomCrop(size, padding=pad), then RandomHorizontalFlip()): a sample of
 * shape (C, H, W) (or (H, W), one channel) is padded with `pad` pixels of
 * stored value 0 on every side (before normalisation, as torchvision pads
 * before Normalize: a padded pixel reads (0*scale - mean)/std), an H x W
 * window at a random offset (dy, dx) in [0, 2*pad]^2 is cut out, and it is
 * mirrored left-right with probability 1/2.
 *
 * The draws are a pure function of (seed, epoch, sample index in the split):
 * Philox4x32-10 keyed by the seed, with the index and the epoch in the
 * counter. So a sample is transformed the same way on any number of ranks,
 * for any batch size, and after a resume.
 */
typedef struct tg_augment {
    unsigned flags; /* TG_AUGMENT_* bits; 0: none */
    int pad;        /* crop padding in [0, TG_AUGMENT_MAX_PAD] */
    uint64_t seed;
} tg_augment;

/* The draws for sample `index` of `epoch`: crop offsets *dy, *dx in
 * [0, 2*pad] and *flip. Pure. */
void tg_augment_draw(uint64_t seed, int64_t epoch, int64_t index, int pad, int *dy, int *dx,
                     bool *flip);

/*
 * Writes the transform of one normalised sample src (c x h x w floats) into
 * dst (which must not overlap src): dst[k][y][x] = P[k][y+dy][x'+dx] with
 * x' = w-1-x when flip (else x), where P is src padded by `pad` on every
 * side with fill[k] (the normalised value of a stored 0; NULL: 0.0f).
 */
void tg_augment_apply(const float *src, int64_t c, int64_t h, int64_t w, int pad, int dy, int dx,
                      bool flip, const float *fill, float *dst);

/* ------------------------------------------------------------------------ */
/* Prefetching loader                                                        */
/* ------------------------------------------------------------------------ */

typedef struct tg_loader tg_loader;

typedef struct tg_loader_options {
    /* Batch buffers: the consumer holds one while the I/O thread fills the
     * others. 0 means 2 (double buffering); at most 16. */
    int depth;
    /* Applied by the I/O thread to every sample it reads (flags 0: none).
     * Needs samples of shape (C, H, W) or (H, W). */
    tg_augment augment;
} tg_loader_options;

/*
 * Starts a loader that reads, on its own thread, the batches that sampler s
 * gives from its current position on, from dataset ds. The loader borrows ds
 * and s (neither is freed by it; both must outlive it) and is their only user
 * until tg_loader_free(). The sampler's n must equal tg_dataset_len(ds).
 * All buffers are allocated here, and x is loaded into memory here when the
 * dataset's cache budget allows it; reading a batch allocates nothing.
 * opts may be NULL. Returns TG_ERR_INVALID (bad depth, sampler size),
 * TG_ERR_UNSUPPORTED (HDF5 not thread-safe), TG_ERR_NOMEM (also when the
 * thread cannot start), or the TG_ERR_IO of loading x.
 */
tg_status tg_loader_new(tg_dataset *ds, tg_sampler *s, const tg_loader_options *opts,
                        tg_loader **out, char *err, size_t errlen);

/*
 * Waits for the next batch and returns it: *x is n * sample_numel floats, *y
 * n labels (n * T for a token split: tg_dataset_labels_per_sample()),
 * both owned by the loader and valid until the next call of
 * tg_loader_next() or tg_loader_free(); *n may be 0 (a rank's share of a
 * partial evaluation batch). When the epoch is over, one call instead sets
 * *end_of_epoch, *n = 0 and *x = *y = NULL; the call after it starts the next
 * epoch. An error of the I/O thread (a failed read, a bad label) is returned
 * here with its message, and again by every later call.
 */
tg_status tg_loader_next(tg_loader *ld, const float **x, const int64_t **y, int64_t *n,
                         bool *end_of_epoch, char *err, size_t errlen);

/* For a split of regression targets: the n * K targets of the batch the
 * last tg_loader_next() returned (its *y is then not meaningful), valid as
 * long as that batch; NULL for a label split. */
const float *tg_loader_targets(const tg_loader *ld);

/* The position after the last batch returned by tg_loader_next(): save this
 * in a checkpoint. */
int64_t tg_loader_samples_consumed(const tg_loader *ld);

/*
 * Stops the I/O thread (waiting for at most the batch it is reading), frees
 * the buffers, and sets the sampler's position to tg_loader_samples_consumed()
 * so batches read ahead but never returned are not lost. NULL is a no-op.
 */
void tg_loader_free(tg_loader *ld);

#ifdef __cplusplus
}
#endif
#endif
