/*
 * test_checkpoint.c: checkpoint files and folders, in a temporary folder.
 *
 * Tensors round-trip bit for bit (random bit patterns, NaN payloads
 * included) and the file is read back here with the HDF5 API and zlib alone,
 * as docs/CHECKPOINTS.md tells outside readers to; `latest` and keep-K leave
 * the folder as documented; a save made to fail at each stage in turn (and
 * one that hits a real file-size limit) leaves the previous checkpoint
 * loadable; and every bad input fails with a status and a message that names
 * the file and what was expected.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <zlib.h>

#include "checkpoint/checkpoint_internal.h"
#include "tapegrad/checkpoint.h"
#include "test_util.h"

static const char *join2(const char *a, const char *b) {
    static char buf[8][768];
    static int next;
    char *p = buf[next++ % 8];

    snprintf(p, 768, "%s/%s", a, b);
    return p;
}

static int group_setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_ckpt");
}

static int group_teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

/* No HDF5 object (file, group, dataset, attribute) is left open. */
static void expect_no_open_ids(void) {
    ssize_t n = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n != 0)
        print_error("%zd HDF5 objects left open\n", n);
    assert_int_equal(n, 0);
}

static tg_ctx *new_ctx(void) {
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    return ctx;
}

/* Asserts a failure with status want whose message holds every given
 * fragment (a NULL-terminated list), then clears the context's error. */
static void expect_fail(tg_ctx *ctx, tg_status got, tg_status want, ...) {
    const char *msg = tg_ctx_error(ctx), *frag;
    va_list ap;

    if (getenv("TG_TEST_VERBOSE"))
        print_message("%s\n", msg);
    if (got != want)
        print_error("status %s, expected %s; message: %s\n", tg_status_str(got),
                    tg_status_str(want), msg);
    assert_int_equal(got, want);
    va_start(ap, want);
    while ((frag = va_arg(ap, const char *)) != NULL) {
        if (!strstr(msg, frag))
            print_error("message \"%s\" lacks \"%s\"\n", msg, frag);
        assert_non_null(strstr(msg, frag));
    }
    va_end(ap);
    tg_ctx_clear_error(ctx);
}

/* ---- a small "model": every dtype, 0-d, empty, and a multi-chunk tensor ---- */

#define NT 7
typedef struct model {
    tg_tensor *t[NT];
    int n;
} model;

static const char *const k_names[NT] = {"fc1.weight", "fc1.bias",   "scale",  "optim.step",
                                        "empty",      "big.weight", "mask.u8"};

static void make_model(tg_ctx *ctx, model *m) {
    static const int64_t s_w[] = {3, 4}, s_b[] = {4}, s_i[] = {2, 3}, s_e[] = {0, 5},
                         s_big[] = {300, 1000}, s_u8[] = {2, 2, 3};

    m->n = NT;
    m->t[0] = tg_param(ctx, TG_F32, 2, s_w, k_names[0]);
    m->t[1] = tg_param(ctx, TG_F32, 1, s_b, k_names[1]);
    m->t[2] = tg_persistent(ctx, TG_F64, 0, NULL, k_names[2]);
    m->t[3] = tg_persistent(ctx, TG_I64, 2, s_i, k_names[3]);
    m->t[4] = tg_persistent(ctx, TG_F32, 2, s_e, k_names[4]);
    m->t[5] = tg_param(ctx, TG_F32, 2, s_big, k_names[5]);
    m->t[6] = tg_persistent(ctx, TG_U8, 3, s_u8, k_names[6]);
    for (int i = 0; i < NT; i++)
        assert_non_null(m->t[i]);
}

static size_t nbytes(const tg_tensor *t) { return (size_t)tg_numel(t) * tg_dtype_size(t->dtype); }

/* In-place writes to parameters need grad mode off. */
static tg_status set_bytes(tg_ctx *ctx, tg_tensor *t, const void *src, size_t nb) {
    bool prev = tg_set_grad_enabled(ctx, false);
    tg_status st = tg_copy_from_host(ctx, t, src, nb);
    tg_set_grad_enabled(ctx, prev);
    return st;
}

/* Random bit patterns (so NaN payloads, -0 and denormals occur) from seed. */
static void fill_model(tg_ctx *ctx, model *m, uint64_t seed) {
    for (int i = 0; i < m->n; i++) {
        size_t nb = nbytes(m->t[i]);
        unsigned char *buf = malloc(nb + 1);
        uint64_t x = seed * 0x9E3779B97F4A7C15ull + (uint64_t)i;
        assert_non_null(buf);
        for (size_t k = 0; k < nb; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[k] = (unsigned char)(x >> 24);
        }
        assert_int_equal(set_bytes(ctx, m->t[i], buf, nb), TG_OK);
        free(buf);
    }
}

/* Bytes of tensor i, heap memory. */
static unsigned char *bytes_of(tg_ctx *ctx, const tg_tensor *t) {
    unsigned char *buf = malloc(nbytes(t) + 1);
    assert_non_null(buf);
    assert_int_equal(tg_to_host(ctx, t, buf, nbytes(t)), TG_OK);
    return buf;
}

static void expect_same(tg_ctx *ca, const model *a, tg_ctx *cb, const model *b) {
    for (int i = 0; i < a->n; i++) {
        unsigned char *x = bytes_of(ca, a->t[i]), *y = bytes_of(cb, b->t[i]);
        assert_int_equal(nbytes(a->t[i]), nbytes(b->t[i]));
        if (memcmp(x, y, nbytes(a->t[i])) != 0)
            print_error("tensor %s differs\n", a->t[i]->name);
        assert_memory_equal(x, y, nbytes(a->t[i]));
        free(x);
        free(y);
    }
}

static tg_ckpt_meta meta_at(int64_t step) {
    tg_ckpt_meta m = {0};
    m.step = step;
    m.epoch = 3;
    m.samples_consumed = step * 256 + 17;
    m.rng[0] = 0xDEADBEEFCAFEF00Dull;
    m.rng[1] = 0x0123456789ABCDEFull + (uint64_t)step;
    m.optim_steps = step + 1;
    m.world_size = 4;
    snprintf(m.model, sizeof m.model, "mlp");
    m.config = "model = mlp\nlr = 0.001\n";
    return m;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static void spit(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* Number of entries of dir whose name ends in suffix. */
static int count_suffix(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    size_t ls = strlen(suffix);

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        n += l >= ls && strcmp(de->d_name + l - ls, suffix) == 0;
    }
    closedir(d);
    return n;
}

/* Saves model m (filled from seed) at step into dir; returns the file path. */
static const char *save_at(tg_ctx *ctx, const char *dir, model *m, int64_t step, int keep) {
    static char path[8][1024];
    static int next;
    char *p = path[next++ % 8];
    tg_ckpt_meta meta = meta_at(step);
    tg_status st = tg_ckpt_save(ctx, dir, &meta, m->n, m->t, keep, p, 1024);

    if (st)
        print_error("save: %s\n", tg_ctx_error(ctx));
    assert_int_equal(st, TG_OK);
    return p;
}

/* ---- round trip ---- */

static void test_roundtrip(void **state) {
    tg_ctx *ctx = new_ctx(), *c2 = new_ctx();
    model a, b;
    tg_ckpt_meta m = {0}, want = meta_at(100);
    const char *dir = tgt_path("rt"), *path;
    uint32_t v0;

    (void)state;
    make_model(ctx, &a);
    fill_model(ctx, &a, 1);
    path = save_at(ctx, dir, &a, 100, 3);
    assert_string_equal(path, join2(dir, "ckpt-00000100.h5"));

    /* A second context stands for a fresh process, possibly of another
     * world size: nothing in the file depends on it. */
    make_model(c2, &b);
    fill_model(c2, &b, 2);
    v0 = b.t[0]->storage->version;
    assert_int_equal(tg_ckpt_load(c2, path, b.n, b.t, &m), TG_OK);
    expect_same(ctx, &a, c2, &b);
    assert_true(b.t[0]->storage->version > v0);
    /* Grad mode is on and fc1.weight requires grad: load still fills it,
     * and leaves grad mode as it was. */
    assert_true(tg_grad_enabled(c2));

    assert_int_equal(m.format_version, TG_CKPT_FORMAT_VERSION);
    assert_string_equal(m.version, TG_VERSION_STRING);
    assert_int_equal(m.step, want.step);
    assert_int_equal(m.epoch, want.epoch);
    assert_int_equal(m.samples_consumed, want.samples_consumed);
    assert_true(m.rng[0] == want.rng[0] && m.rng[1] == want.rng[1]);
    assert_int_equal(m.optim_steps, want.optim_steps);
    assert_int_equal(m.world_size, 4);
    assert_string_equal(m.model, "mlp");
    assert_string_equal(m.config, want.config);
    tg_ckpt_meta_free(&m);
    assert_null(m.config);

    assert_int_equal(tg_ckpt_read_meta(c2, path, &m), TG_OK);
    assert_int_equal(m.step, 100);
    assert_string_equal(m.config, want.config);
    tg_ckpt_meta_free(&m);
    assert_int_equal(tg_ckpt_verify(c2, path), TG_OK);
    tg_ctx_free(ctx);
    tg_ctx_free(c2);
}

/* A configuration beyond the 64 KiB attribute limit, and an empty one. */
static void test_config_sizes(void **state) {
    tg_ctx *ctx = new_ctx();
    model a;
    tg_ckpt_meta m = meta_at(7), got;
    size_t len = 200000;
    char *cfg = malloc(len + 1), path[1024];

    (void)state;
    assert_non_null(cfg);
    for (size_t i = 0; i < len; i++)
        cfg[i] = (char)(i % 61 == 60 ? '\n' : 'a' + (int)(i % 26));
    cfg[len] = '\0';
    make_model(ctx, &a);
    fill_model(ctx, &a, 3);
    m.config = cfg;
    assert_int_equal(tg_ckpt_save(ctx, tgt_path("cfg"), &m, a.n, a.t, 0, path, sizeof path), TG_OK);
    assert_int_equal(tg_ckpt_read_meta(ctx, path, &got), TG_OK);
    assert_string_equal(got.config, cfg);
    tg_ckpt_meta_free(&got);
    m.config = NULL;
    m.step = 8;
    assert_int_equal(tg_ckpt_save(ctx, tgt_path("cfg"), &m, a.n, a.t, 0, path, sizeof path), TG_OK);
    assert_int_equal(tg_ckpt_read_meta(ctx, path, &got), TG_OK);
    assert_string_equal(got.config, "");
    tg_ckpt_meta_free(&got);
    free(cfg);
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* The layout docs/CHECKPOINTS.md promises, read with HDF5 and zlib only. */
static void test_layout(void **state) {
    tg_ctx *ctx = new_ctx();
    model a;
    const char *path;
    hid_t f, d, attr, dcpl, g;
    int64_t step;
    uint64_t rng[2];
    uint32_t crc;
    unsigned char *want;
    float *got;
    char name[64];
    H5Z_filter_t filt;
    unsigned flags;
    size_t nelm = 0;

    (void)state;
    make_model(ctx, &a);
    fill_model(ctx, &a, 4);
    path = save_at(ctx, tgt_path("layout"), &a, 42, 0);
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    attr = H5Aopen(f, "step", H5P_DEFAULT);
    assert_true(attr >= 0);
    assert_true(H5Aread(attr, H5T_NATIVE_INT64, &step) >= 0);
    assert_int_equal(step, 42);
    H5Aclose(attr);
    attr = H5Aopen(f, "rng_state", H5P_DEFAULT);
    assert_true(H5Aread(attr, H5T_NATIVE_UINT64, rng) >= 0);
    assert_true(rng[0] == 0xDEADBEEFCAFEF00Dull);
    H5Aclose(attr);

    /* /tensors/big.weight: the name with its dot, row-major f32, a CRC-32
     * of its bytes as zlib computes it, and the Fletcher-32 filter. */
    d = H5Dopen2(f, "/tensors/big.weight", H5P_DEFAULT);
    assert_true(d >= 0);
    want = bytes_of(ctx, a.t[5]);
    got = malloc(nbytes(a.t[5]));
    assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, got) >= 0);
    assert_memory_equal(got, want, nbytes(a.t[5]));
    attr = H5Aopen(d, "crc32", H5P_DEFAULT);
    assert_true(H5Aread(attr, H5T_NATIVE_UINT32, &crc) >= 0);
    assert_int_equal(crc, (uint32_t)crc32(0, want, (uInt)nbytes(a.t[5])));
    H5Aclose(attr);
    dcpl = H5Dget_create_plist(d);
    assert_int_equal(H5Pget_nfilters(dcpl), 1);
    filt = H5Pget_filter2(dcpl, 0, &flags, &nelm, NULL, 0, NULL, NULL);
    assert_int_equal(filt, H5Z_FILTER_FLETCHER32);
    H5Pclose(dcpl);
    H5Dclose(d);
    free(got);
    free(want);

    /* Listed in creation order, as saved. */
    g = H5Gopen2(f, "tensors", H5P_DEFAULT);
    for (int i = 0; i < NT; i++) {
        assert_true(H5Lget_name_by_idx(g, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, (hsize_t)i, name,
                                       sizeof name, H5P_DEFAULT) > 0);
        assert_string_equal(name, k_names[i]);
    }
    H5Gclose(g);
    H5Fclose(f);
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* ---- the folder: latest, keep-K ---- */

static void test_latest_and_keep(void **state) {
    tg_ctx *ctx = new_ctx();
    model a;
    const char *dir = tgt_path("keep");
    char found[1024], warn[512], *latest;

    (void)state;
    make_model(ctx, &a);
    for (int s = 1; s <= 5; s++) {
        fill_model(ctx, &a, (uint64_t)s);
        save_at(ctx, dir, &a, s * 10, 3);
    }
    assert_false(exists(join2(dir, "ckpt-00000010.h5")));
    assert_false(exists(join2(dir, "ckpt-00000020.h5")));
    assert_true(exists(join2(dir, "ckpt-00000030.h5")));
    assert_true(exists(join2(dir, "ckpt-00000040.h5")));
    assert_true(exists(join2(dir, "ckpt-00000050.h5")));
    assert_int_equal(count_suffix(dir, ".h5"), 3);
    assert_int_equal(count_suffix(dir, ".tmp"), 0);
    latest = slurp(join2(dir, "latest"), NULL);
    assert_string_equal(latest, "ckpt-00000050.h5\n");
    free(latest);
    assert_int_equal(tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn), TG_OK);
    assert_string_equal(found, join2(dir, "ckpt-00000050.h5"));
    assert_string_equal(warn, "");

    /* A save at a lower step (after resuming from an older checkpoint) is
     * never pruned itself, and becomes latest. */
    save_at(ctx, dir, &a, 35, 2);
    assert_true(exists(join2(dir, "ckpt-00000035.h5")));
    assert_true(exists(join2(dir, "ckpt-00000050.h5")));
    assert_int_equal(count_suffix(dir, ".h5"), 2);
    latest = slurp(join2(dir, "latest"), NULL);
    assert_string_equal(latest, "ckpt-00000035.h5\n");
    free(latest);

    /* keep <= 0 keeps everything; a stale temporary of an interrupted save
     * is swept. */
    spit(join2(dir, ".ckpt-00000060.h5.tmp"), "x", 1);
    for (int s = 6; s <= 8; s++)
        save_at(ctx, dir, &a, s * 10, 0);
    assert_int_equal(count_suffix(dir, ".h5"), 5);
    assert_int_equal(count_suffix(dir, ".tmp"), 0);
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* ---- failure injection ---- */

static tg__ck_stage g_stage;
static int g_index;

static bool fault_hook(tg__ck_stage stage, int index) {
    return stage == g_stage && (stage != TG__CK_TENSOR || index == g_index);
}

/* The folder still reads as it did with only `good` (step 100, model a). */
static void expect_previous(tg_ctx *ctx, const char *dir, const model *a) {
    tg_ctx *c2 = new_ctx();
    model b;
    char found[1024], warn[512], *latest;
    tg_ckpt_meta m;

    assert_int_equal(count_suffix(dir, ".tmp"), 0);
    assert_false(exists(join2(dir, "ckpt-00000200.h5")));
    latest = slurp(join2(dir, "latest"), NULL);
    assert_string_equal(latest, "ckpt-00000100.h5\n");
    free(latest);
    assert_int_equal(tg_ckpt_find(c2, dir, found, sizeof found, warn, sizeof warn), TG_OK);
    assert_string_equal(found, join2(dir, "ckpt-00000100.h5"));
    assert_string_equal(warn, "");
    make_model(c2, &b);
    assert_int_equal(tg_ckpt_load(c2, found, b.n, b.t, &m), TG_OK);
    assert_int_equal(m.step, 100);
    tg_ckpt_meta_free(&m);
    expect_same(ctx, a, c2, &b);
    tg_ctx_free(c2);
}

static void test_fault_injection(void **state) {
    static const struct {
        tg__ck_stage stage;
        int index;
        const char *where;
    } cases[] = {
        {TG__CK_CREATED, 0, ".ckpt-00000200.h5.tmp"},
        {TG__CK_TENSOR, 0, ".ckpt-00000200.h5.tmp"},
        {TG__CK_TENSOR, 3, ".ckpt-00000200.h5.tmp"},
        {TG__CK_TENSOR, NT - 1, ".ckpt-00000200.h5.tmp"},
        {TG__CK_FSYNC, 0, ".ckpt-00000200.h5.tmp"},
        {TG__CK_RENAME, 0, ".ckpt-00000200.h5.tmp"},
        {TG__CK_DIRSYNC, 0, "fault"},
        {TG__CK_LATEST, 0, "latest"},
        {TG__CK_LATEST_RENAME, 0, "latest"},
    };
    tg_ctx *ctx = new_ctx();
    model a, b;
    const char *dir = tgt_path("fault");

    (void)state;
    make_model(ctx, &a);
    make_model(ctx, &b);
    fill_model(ctx, &a, 11);
    fill_model(ctx, &b, 12);
    save_at(ctx, dir, &a, 100, 3);
    tg__ckpt_fault = fault_hook;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_ckpt_meta m = meta_at(200);
        tg_status st;
        g_stage = cases[i].stage;
        g_index = cases[i].index;
        st = tg_ckpt_save(ctx, dir, &m, b.n, b.t, 3, NULL, 0);
        expect_fail(ctx, st, TG_ERR_IO, dir, cases[i].where, tg__ck_stage_name(g_stage), NULL);
        tg__ckpt_fault = NULL;
        expect_previous(ctx, dir, &a);
        tg__ckpt_fault = fault_hook;
    }

    /* Pruning fails after the new checkpoint is durable: the save still
     * succeeded (pruning never fails one), both checkpoints stay, and the
     * new one is the one to resume from. */
    {
        tg_ckpt_meta m = meta_at(200);
        char found[1024], warn[512];
        g_stage = TG__CK_PRUNE;
        assert_int_equal(tg_ckpt_save(ctx, dir, &m, b.n, b.t, 1, NULL, 0), TG_OK);
        assert_true(exists(join2(dir, "ckpt-00000100.h5")));
        assert_true(exists(join2(dir, "ckpt-00000200.h5")));
        tg__ckpt_fault = NULL;
        assert_int_equal(tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn), TG_OK);
        assert_string_equal(found, join2(dir, "ckpt-00000200.h5"));
    }
    tg__ckpt_fault = NULL;
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* A real write failure: the file-size limit makes write() fail with EFBIG
 * part-way through the big tensor, as a full disk would. */
static void test_real_write_failure(void **state) {
    tg_ctx *ctx = new_ctx();
    model a, b;
    const char *dir = tgt_path("efbig");
    struct rlimit old, lim;
    tg_ckpt_meta m = meta_at(200);
    tg_status st;

    (void)state;
    make_model(ctx, &a);
    make_model(ctx, &b);
    fill_model(ctx, &a, 21);
    fill_model(ctx, &b, 22);
    save_at(ctx, dir, &a, 100, 3);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 256 * 1024;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    st = tg_ckpt_save(ctx, dir, &m, b.n, b.t, 3, NULL, 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    expect_fail(ctx, st, TG_ERR_IO, ".ckpt-00000200.h5.tmp", NULL);
    expect_previous(ctx, dir, &a);
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* ---- bad inputs ---- */

static void test_folders(void **state) {
    tg_ctx *ctx = new_ctx();
    model a;
    tg_ckpt_meta m = meta_at(1);
    const char *nested = tgt_path("new/a/b"), *file = tgt_path("plainfile");
    char found[1024], warn[512];

    (void)state;
    make_model(ctx, &a);
    fill_model(ctx, &a, 5);
    /* A missing folder is made, with its parents. */
    save_at(ctx, nested, &a, 1, 1);
    assert_true(exists(join2(nested, "ckpt-00000001.h5")));

    /* A folder that cannot be made (a file is in the way). */
    spit(file, "x", 1);
    expect_fail(ctx, tg_ckpt_save(ctx, join2(file, "sub"), &m, a.n, a.t, 1, NULL, 0), TG_ERR_IO,
                "plainfile/sub", "cannot create the checkpoint folder", NULL);
    expect_fail(ctx, tg_ckpt_save(ctx, file, &m, a.n, a.t, 1, NULL, 0), TG_ERR_IO, "plainfile",
                "not a folder", NULL);
    /* A folder without write permission (root writes anyway: not checked). */
    if (geteuid() != 0) {
        const char *ro = tgt_path("readonly");
        assert_int_equal(mkdir(ro, 0500), 0);
        expect_fail(ctx, tg_ckpt_save(ctx, ro, &m, a.n, a.t, 1, NULL, 0), TG_ERR_IO, ro,
                    "cannot create", NULL);
        chmod(ro, 0700);
    }

    /* Nothing to resume: no folder, an empty folder. */
    expect_fail(ctx, tg_ckpt_find(ctx, tgt_path("nope"), found, sizeof found, warn, sizeof warn),
                TG_ERR_IO, "nothing to resume in", "nope", "no such folder", NULL);
    assert_string_equal(warn, "");
    assert_int_equal(mkdir(tgt_path("emptydir"), 0700), 0);
    expect_fail(ctx,
                tg_ckpt_find(ctx, tgt_path("emptydir"), found, sizeof found, warn, sizeof warn),
                TG_ERR_IO, "nothing to resume in", "emptydir", "no checkpoint files", NULL);
    assert_string_equal(warn, "");
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

static void test_bad_names(void **state) {
    tg_ctx *ctx = new_ctx();
    model a;
    tg_ckpt_meta m = meta_at(1);
    const char *dir = tgt_path("names");
    tg_tensor *dup;

    (void)state;
    make_model(ctx, &a);
    dup = a.t[1];
    a.t[1] = a.t[0];
    expect_fail(ctx, tg_ckpt_save(ctx, dir, &m, a.n, a.t, 1, NULL, 0), TG_ERR_INVALID,
                "both named 'fc1.weight'", NULL);
    a.t[1] = dup;
    dup->name = "fc1/bias";
    expect_fail(ctx, tg_ckpt_save(ctx, dir, &m, a.n, a.t, 1, NULL, 0), TG_ERR_INVALID, "'fc1/bias'",
                "without '/'", NULL);
    dup->name = NULL;
    expect_fail(ctx, tg_ckpt_save(ctx, dir, &m, a.n, a.t, 1, NULL, 0), TG_ERR_INVALID, "no name",
                NULL);
    dup->name = "fc1.bias";
    m.step = -1;
    expect_fail(ctx, tg_ckpt_save(ctx, dir, &m, a.n, a.t, 1, NULL, 0), TG_ERR_INVALID, "negative",
                NULL);
    assert_false(exists(dir));
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* Bad files: missing, not HDF5, HDF5 but not a checkpoint, truncated. */
static void test_bad_files(void **state) {
    tg_ctx *ctx = new_ctx();
    model a;
    tg_ckpt_meta m;
    const char *path, *junk = tgt_path("junk.h5"), *other = tgt_path("other.h5"),
                      *cut = tgt_path("cut.h5");
    char *data;
    size_t len;
    hid_t f;

    (void)state;
    make_model(ctx, &a);
    fill_model(ctx, &a, 6);
    expect_fail(ctx, tg_ckpt_load(ctx, tgt_path("missing.h5"), a.n, a.t, &m), TG_ERR_IO,
                "missing.h5", "No such file", NULL);
    spit(junk, "this is not HDF5\n", 17);
    expect_fail(ctx, tg_ckpt_load(ctx, junk, a.n, a.t, &m), TG_ERR_FORMAT, "junk.h5",
                "not an HDF5 file", NULL);
    f = H5Fcreate(other, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    H5Fclose(f);
    expect_fail(ctx, tg_ckpt_load(ctx, other, a.n, a.t, &m), TG_ERR_FORMAT, "other.h5",
                "not a tapegrad checkpoint", NULL);
    expect_fail(ctx, tg_ckpt_verify(ctx, other), TG_ERR_FORMAT, "not a tapegrad checkpoint", NULL);

    path = save_at(ctx, tgt_path("cut"), &a, 5, 1);
    data = slurp(path, &len);
    spit(cut, data, len / 2);
    expect_fail(ctx, tg_ckpt_load(ctx, cut, a.n, a.t, &m), TG_ERR_FORMAT, "cut.h5", "truncated",
                NULL);
    spit(cut, data, 100);
    expect_fail(ctx, tg_ckpt_read_meta(ctx, cut, &m), TG_ERR_FORMAT, "cut.h5", NULL);
    free(data);
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* Flips one bit of the first occurrence of `pattern` in the file. */
static void flip_in_file(const char *path, const void *pattern, size_t plen) {
    size_t len;
    char *data = slurp(path, &len);
    char *hit = memmem(data, len, pattern, plen);
    assert_non_null(hit);
    /* The pattern must be unique, or the flip might land elsewhere. */
    assert_null(memmem(hit + 1, len - (size_t)(hit + 1 - data), pattern, plen));
    hit[plen / 2] ^= 0x10;
    spit(path, data, len);
    free(data);
}

/* Makes the tapegrad header match the file's damaged bytes, so that the
 * checks behind it (Fletcher-32, the CRC-32s) are the ones that fire. */
static void reseal(const char *path) {
    char err[256];
    assert_int_equal(tg__ck_reseal(path, err, sizeof err), TG_OK);
}

static void test_bit_flips(void **state) {
    tg_ctx *ctx = new_ctx();
    model a, b;
    tg_ckpt_meta m;
    const char *path;
    unsigned char *raw, *before;
    char *text = NULL;

    (void)state;
    make_model(ctx, &a);
    make_model(ctx, &b);
    fill_model(ctx, &a, 7);
    fill_model(ctx, &b, 8);

    /* In a chunked tensor: HDF5's Fletcher-32 catches it. */
    path = save_at(ctx, tgt_path("flip1"), &a, 1, 1);
    raw = bytes_of(ctx, a.t[5]);
    flip_in_file(path, raw + 4096, 32);
    free(raw);
    /* The whole-file CRC-32 of the header catches it first. */
    expect_fail(ctx, tg_ckpt_verify(ctx, path), TG_ERR_FORMAT, path, "whole-file CRC-32", NULL);
    reseal(path);
    before = bytes_of(ctx, b.t[0]);
    expect_fail(ctx, tg_ckpt_load(ctx, path, b.n, b.t, &m), TG_ERR_FORMAT, path, "'big.weight'",
                "checksum", NULL);
    /* All or nothing: tensors read before the damaged one were not filled. */
    raw = bytes_of(ctx, b.t[0]);
    assert_memory_equal(raw, before, nbytes(b.t[0]));
    free(raw);
    free(before);
    expect_fail(ctx, tg_ckpt_verify(ctx, path), TG_ERR_FORMAT, "'big.weight'", NULL);
    expect_fail(ctx, tg_ckpt_describe(ctx, path, &text), TG_ERR_FORMAT, "'big.weight'", NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "CHECKSUM MISMATCH"));
    assert_non_null(strstr(text, "fc1.weight"));
    free(text);

    /* In the 0-d f64 (stored contiguous, without Fletcher-32): the CRC-32. */
    path = save_at(ctx, tgt_path("flip2"), &a, 1, 1);
    raw = bytes_of(ctx, a.t[2]);
    flip_in_file(path, raw, 8);
    free(raw);
    reseal(path);
    expect_fail(ctx, tg_ckpt_load(ctx, path, b.n, b.t, &m), TG_ERR_FORMAT, path, "'scale'",
                "CRC-32", NULL);
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* A checkpoint of another model: missing, extra, other shape, other dtype. */
static void test_other_model(void **state) {
    tg_ctx *ctx = new_ctx();
    model a;
    tg_ckpt_meta m;
    const char *path;
    static const int64_t s43[] = {4, 3}, s34[] = {3, 4};
    tg_tensor *swap, *t43, *t64;

    (void)state;
    make_model(ctx, &a);
    fill_model(ctx, &a, 9);
    path = save_at(ctx, tgt_path("other"), &a, 1, 1);

    /* One tensor fewer in the model: the file has an extra one. */
    expect_fail(ctx, tg_ckpt_load(ctx, path, a.n - 1, a.t, &m), TG_ERR_SHAPE, path, "'mask.u8'",
                "(2, 2, 3) u8", "the model does not have", "'mlp'", NULL);
    /* A tensor the file lacks. */
    swap = a.t[6];
    a.t[6] = tg_persistent(ctx, TG_U8, 1, s43, "conv1.weight");
    expect_fail(ctx, tg_ckpt_load(ctx, path, a.n, a.t, &m), TG_ERR_SHAPE, path, "'conv1.weight'",
                "missing from the file", "2 mismatches in all", NULL);
    a.t[6] = swap;
    /* Shape, then dtype. */
    swap = a.t[0];
    t43 = tg_persistent(ctx, TG_F32, 2, s43, "fc1.weight");
    a.t[0] = t43;
    expect_fail(ctx, tg_ckpt_load(ctx, path, a.n, a.t, &m), TG_ERR_SHAPE, path, "'fc1.weight'",
                "(3, 4) f32 in the file but (4, 3) f32 in the model", NULL);
    t64 = tg_persistent(ctx, TG_F64, 2, s34, "fc1.weight");
    a.t[0] = t64;
    expect_fail(ctx, tg_ckpt_load(ctx, path, a.n, a.t, &m), TG_ERR_DTYPE, path, "'fc1.weight'",
                "(3, 4) f32 in the file but (3, 4) f64 in the model", NULL);
    a.t[0] = swap;
    assert_int_equal(tg_ckpt_load(ctx, path, a.n, a.t, NULL), TG_OK);
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

static void set_root_i32(const char *path, const char *name, int32_t v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), a;
    assert_true(f >= 0);
    a = H5Aopen(f, name, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Awrite(a, H5T_NATIVE_INT32, &v) >= 0);
    H5Aclose(a);
    H5Fclose(f);
    reseal(path);
}

static void test_newer_format(void **state) {
    tg_ctx *ctx = new_ctx();
    model a;
    tg_ckpt_meta m;
    const char *path;
    char want[64];

    (void)state;
    make_model(ctx, &a);
    fill_model(ctx, &a, 10);
    path = save_at(ctx, tgt_path("newer"), &a, 1, 1);
    set_root_i32(path, "format_version", TG_CKPT_FORMAT_VERSION + 1);
    snprintf(want, sizeof want, "format version %d", TG_CKPT_FORMAT_VERSION + 1);
    expect_fail(ctx, tg_ckpt_load(ctx, path, a.n, a.t, &m), TG_ERR_UNSUPPORTED, path, want,
                "upgrade", NULL);
    expect_fail(ctx, tg_ckpt_read_meta(ctx, path, &m), TG_ERR_UNSUPPORTED, path, NULL);
    /* A changed attribute (here world_size) fails the metadata's CRC-32. */
    path = save_at(ctx, tgt_path("metaflip"), &a, 1, 1);
    set_root_i32(path, "world_size", 5);
    expect_fail(ctx, tg_ckpt_read_meta(ctx, path, &m), TG_ERR_FORMAT, path,
                "metadata fails its CRC-32", NULL);
    expect_fail(ctx, tg_ckpt_verify(ctx, path), TG_ERR_FORMAT, "metadata", NULL);
    set_root_i32(path, "world_size", 4);
    assert_int_equal(tg_ckpt_verify(ctx, path), TG_OK);
    path = save_at(ctx, tgt_path("newer"), &a, 2, 1);
    set_root_i32(path, "format_version", 0);
    expect_fail(ctx, tg_ckpt_load(ctx, path, a.n, a.t, &m), TG_ERR_FORMAT, path,
                "invalid checkpoint format version 0", NULL);
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* ---- resume: latest broken or missing ---- */

static void test_find_fallback(void **state) {
    tg_ctx *ctx = new_ctx();
    model a;
    const char *dir = tgt_path("fallback"), *p3;
    char found[1024], warn[1024], *data;
    size_t len;

    (void)state;
    make_model(ctx, &a);
    fill_model(ctx, &a, 13);
    save_at(ctx, dir, &a, 1, 0);
    save_at(ctx, dir, &a, 2, 0);
    p3 = save_at(ctx, dir, &a, 3, 0);

    /* latest names a truncated file: warn, fall back to step 2. */
    data = slurp(p3, &len);
    spit(p3, data, len / 3);
    free(data);
    assert_int_equal(tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn), TG_OK);
    assert_string_equal(found, join2(dir, "ckpt-00000002.h5"));
    assert_non_null(strstr(warn, "ckpt-00000003.h5"));
    assert_non_null(strstr(warn, "truncated"));
    assert_non_null(strstr(warn, "falling back to"));

    /* latest missing: warn, take the newest valid. */
    assert_int_equal(unlink(join2(dir, "latest")), 0);
    assert_int_equal(tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn), TG_OK);
    assert_string_equal(found, join2(dir, "ckpt-00000002.h5"));
    assert_non_null(strstr(warn, "latest: missing"));
    assert_non_null(strstr(warn, "skipping"));

    /* latest names a file that is gone. */
    spit(join2(dir, "latest"), "ckpt-00000009.h5\n", 17);
    assert_int_equal(tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn), TG_OK);
    assert_string_equal(found, join2(dir, "ckpt-00000002.h5"));
    assert_non_null(strstr(warn, "ckpt-00000009.h5"));

    /* Nothing valid at all. */
    spit(join2(dir, "ckpt-00000001.h5"), "junk", 4);
    spit(join2(dir, "ckpt-00000002.h5"), "junk", 4);
    expect_fail(ctx, tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn), TG_ERR_IO,
                "nothing to resume in", dir, "3 checkpoint files, none valid", NULL);
    assert_non_null(strstr(warn, "not an HDF5 file"));
    assert_string_equal(found, "");
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

/* ---- describe ---- */

static void test_describe(void **state) {
    tg_ctx *ctx = new_ctx();
    static const int64_t s2[] = {2}, s23[] = {2, 3};
    static const float w[2] = {3.0f, -4.0f};
    static const int64_t ix[6] = {1, 2, 2, 4, 0, 0};
    tg_tensor *ts[3];
    tg_ckpt_meta m = meta_at(77);
    char path[1024], *text = NULL;
    double pi = 3.25;

    (void)state;
    ts[0] = tg_param(ctx, TG_F32, 1, s2, "layer.w");
    ts[1] = tg_persistent(ctx, TG_I64, 2, s23, "counts");
    ts[2] = tg_persistent(ctx, TG_F64, 0, NULL, "temperature");
    assert_int_equal(set_bytes(ctx, ts[0], w, sizeof w), TG_OK);
    assert_int_equal(tg_copy_from_host(ctx, ts[1], ix, sizeof ix), TG_OK);
    assert_int_equal(tg_copy_from_host(ctx, ts[2], &pi, sizeof pi), TG_OK);
    assert_int_equal(tg_ckpt_save(ctx, tgt_path("desc"), &m, 3, ts, 1, path, sizeof path), TG_OK);
    assert_int_equal(tg_ckpt_describe(ctx, path, &text), TG_OK);
    if (getenv("TG_TEST_VERBOSE"))
        print_message("%s", text);
    /* Norms by hand: |(3, -4)| = 5, |(1,2,2,4,0,0)| = 5, |3.25| = 3.25. */
    assert_non_null(strstr(text, "layer.w"));
    assert_non_null(strstr(text, "(2,)"));
    assert_non_null(strstr(text, "counts"));
    assert_non_null(strstr(text, "(2, 3)"));
    assert_non_null(strstr(text, "i64  norm 5\n"));
    assert_non_null(strstr(text, "f32  norm 5\n"));
    assert_non_null(strstr(text, "()               f64  norm 3.25\n"));
    assert_non_null(strstr(text, "step              77\n"));
    assert_non_null(strstr(text, "samples_consumed  19729\n"));
    assert_non_null(strstr(text, "world_size        4\n"));
    assert_non_null(strstr(text, "model             mlp\n"));
    assert_non_null(strstr(text, "lr = 0.001\n"));
    assert_non_null(strstr(text, "tensors           3 (9 elements, 64 bytes)"));
    free(text);
    expect_fail(ctx, tg_ckpt_describe(ctx, tgt_path("none.h5"), &text), TG_ERR_IO, "none.h5", NULL);
    assert_null(text);
    tg_ctx_free(ctx);
    expect_no_open_ids();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),       cmocka_unit_test(test_config_sizes),
        cmocka_unit_test(test_layout),          cmocka_unit_test(test_latest_and_keep),
        cmocka_unit_test(test_fault_injection), cmocka_unit_test(test_real_write_failure),
        cmocka_unit_test(test_folders),         cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_bad_files),       cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_other_model),     cmocka_unit_test(test_newer_format),
        cmocka_unit_test(test_find_fallback),   cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
