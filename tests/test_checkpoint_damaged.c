/*
 * test_checkpoint_damaged.c: damaged checkpoint files and folders.
 *
 * One byte changed in each part of a checkpoint (the tapegrad header, the
 * HDF5 superblock, a tensor's dataspace, a tensor's name, its data) and
 * truncations: each is refused with a message naming the file, in a child
 * process under a memory cap and a time limit, and `auto` resumes from the
 * previous valid checkpoint. Behind the header, the same damage with the
 * header made to match (as a file without a header would meet it) is still
 * refused. Numbers out of range (a step of 2^60, shapes of 2^62 bytes and
 * more), a tensor missing for its model at export, export's --out, a folder
 * or junk named like a checkpoint when pruning, and a FIFO named `latest`.
 * A checkpoint without the header (the plain HDF5 files of earlier
 * versions) stays readable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "checkpoint/checkpoint_internal.h"
#include "tapegrad/checkpoint.h"
#include "tapegrad/trainer.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static int group_setup(void **state) {
    (void)state;
    return tgt_dir_setup("tg_ckdmg");
}

static int group_teardown(void **state) {
    (void)state;
    return tgt_dir_teardown();
}

static const char *join2(const char *a, const char *b) {
    static char buf[8][768];
    static int next;
    char *p = buf[next++ % 8];

    snprintf(p, 768, "%s/%s", a, b);
    return p;
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *d;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    d = malloc((size_t)n + 1);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return d;
}

static void spit(const char *path, const void *d, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static tg_ctx *new_ctx(void) {
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(NULL, &ctx), TG_OK);
    return ctx;
}

static void expect_msg(tg_ctx *ctx, tg_status got, tg_status want, ...) {
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

/* ---- a tiny checkpoint: a (3, 7) f32, a (5,) f64, an empty (0, 4) u8 ---- */

#define NT 3
static const int64_t k_w[2] = {3, 7}, k_b[1] = {5}, k_e[2] = {0, 4};

static void make_tensors(tg_ctx *ctx, tg_tensor **t, float scale) {
    float w[21];
    double b[5];

    t[0] = tg_persistent(ctx, TG_F32, 2, k_w, "w.dense");
    t[1] = tg_persistent(ctx, TG_F64, 1, k_b, "bias.x");
    t[2] = tg_persistent(ctx, TG_U8, 2, k_e, "empty");
    for (int i = 0; i < 21; i++)
        w[i] = scale * (1000.25f + (float)i);
    for (int i = 0; i < 5; i++)
        b[i] = scale * (0.125 + i);
    assert_int_equal(tg_copy_from_host(ctx, t[0], w, sizeof w), TG_OK);
    assert_int_equal(tg_copy_from_host(ctx, t[1], b, sizeof b), TG_OK);
}

static tg_ckpt_meta meta_at(int64_t step) {
    tg_ckpt_meta m = {.step = step,
                      .epoch = 0,
                      .samples_consumed = step * 32,
                      .optim_steps = step,
                      .world_size = 1,
                      .rng = {1, 2},
                      .model = "tiny",
                      .config = "model = tiny\n"};
    return m;
}

static const char *save_at(tg_ctx *ctx, const char *dir, int64_t step, int keep) {
    static char p[8][1024];
    static int next;
    char *out = p[next++ % 8];
    tg_tensor *t[NT];
    tg_ckpt_meta m = meta_at(step);

    make_tensors(ctx, t, (float)step);
    assert_int_equal(tg_ckpt_save(ctx, dir, &m, NT, t, keep, out, 1024), TG_OK);
    return out;
}

/* The offset of the one occurrence of pattern in d. */
static size_t find_once(const unsigned char *d, size_t len, const void *pat, size_t plen) {
    const unsigned char *hit = memmem(d, len, pat, plen);
    assert_non_null(hit);
    assert_null(memmem(hit + 1, len - (size_t)(hit + 1 - d), pat, plen));
    return (size_t)(hit - d);
}

/* ---- the damage ---- */

typedef enum damage {
    D_MAGIC,      /* a byte of the header's magic */
    D_USERBLOCK,  /* a byte in the header's zero padding */
    D_LENGTH,     /* the header's file length */
    D_SUPERBLOCK, /* a byte of the HDF5 superblock */
    D_RANK,       /* the rank in w.dense's dataspace */
    D_DIM_ZERO,   /* w.dense's first dim set to 0 */
    D_NAME,       /* a byte of "w.dense" in its link */
    D_DATA,       /* a byte of w.dense's data */
    D_TRUNC_HALF, /* the file cut in half */
    D_TRUNC_HDR,  /* cut just after the header */
    D_TRAILING,   /* bytes appended */
    D_COUNT
} damage;

static const char *const k_damage[D_COUNT] = {
    "magic", "user block", "header length", "superblock", "dataspace rank", "zero dim",
    "name",  "data",       "half",          "header cut", "trailing bytes",
};

/* A copy of the file's bytes with damage d; *len is updated. */
static unsigned char *damaged(const unsigned char *orig, size_t *len, damage d) {
    unsigned char *b = malloc(*len + 64);
    /* A version 2 dataspace message: version, rank 2, max dims present,
     * simple; then dims 3 and 7 as 8-byte little-endian numbers. */
    static const unsigned char space[20] = {2, 2, 1, 1, 3, 0, 0, 0, 0, 0,
                                            0, 0, 7, 0, 0, 0, 0, 0, 0, 0};
    float w0 = 3.0f * 1000.25f;
    size_t at;

    assert_non_null(b);
    memcpy(b, orig, *len);
    switch (d) {
    case D_MAGIC:
        b[3] ^= 0x20;
        break;
    case D_USERBLOCK:
        b[200] ^= 0x01;
        break;
    case D_LENGTH:
        b[24] ^= 0x01;
        break;
    case D_SUPERBLOCK:
        b[TG__CK_HEADER + 20] ^= 0x40;
        break;
    case D_RANK:
        at = find_once(b, *len, space, sizeof space);
        b[at + 1] = 0x20;
        break;
    case D_DIM_ZERO:
        at = find_once(b, *len, space, sizeof space);
        b[at + 4] = 0;
        break;
    case D_NAME:
        at = find_once(b, *len, "w.dense", 7);
        b[at + 3] ^= 0x02;
        break;
    case D_DATA:
        at = find_once(b, *len, &w0, sizeof w0);
        b[at + 1] ^= 0x10;
        break;
    case D_TRUNC_HALF:
        *len /= 2;
        break;
    case D_TRUNC_HDR:
        *len = TG__CK_HEADER + 40;
        break;
    case D_TRAILING:
        memset(b + *len, 0xab, 64);
        *len += 64;
        break;
    default:
        fail();
    }
    return b;
}

/* Runs fn(arg) in a child under a 2 GiB address-space cap (not under
 * AddressSanitizer, which reserves more) and a 30 s alarm; returns its exit
 * code, or 1000 + the signal that ended it. */
static int capped(int (*fn)(const char *), const char *arg) {
    pid_t pid;
    int st = 0;

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
#ifndef UNDER_ASAN
        struct rlimit r = {(rlim_t)2 << 30, (rlim_t)2 << 30};
        (void)setrlimit(RLIMIT_AS, &r);
#endif
        alarm(30);
        _exit(fn(arg));
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
}

/* In a child: `auto` picks ckpt-2 and warns about ckpt-3. */
static int child_find(const char *dir) {
    tg_ctx *ctx;
    char found[1024], warn[2048];
    int code = 0;

    if (tg_ctx_new(NULL, &ctx) != TG_OK)
        return 9;
    if (tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn) != TG_OK)
        code = 2;
    else if (!strstr(found, "ckpt-00000002.h5"))
        code = 3;
    else if (!strstr(warn, "ckpt-00000003.h5") || !strstr(warn, "falling back"))
        code = 4;
    if (getenv("TG_TEST_VERBOSE"))
        fprintf(stderr, "%s: %s\n", dir, code == 2 ? tg_ctx_error(ctx) : warn);
    tg_ctx_free(ctx);
    return code;
}

/* In a child: every reader refuses the file as a data error naming it. */
static int child_refuse(const char *path) {
    tg_ctx *ctx;
    tg_ckpt_meta m = {0};
    tg_ckpt_tensor *ts = NULL;
    char *text = NULL;
    int n = 0, code = 0;
    tg_status st;

    if (tg_ctx_new(NULL, &ctx) != TG_OK)
        return 9;
    st = tg_ckpt_verify(ctx, path);
    if (st != TG_ERR_FORMAT || !strstr(tg_ctx_error(ctx), path))
        code = 2;
    if (getenv("TG_TEST_VERBOSE"))
        fprintf(stderr, "verify: %s\n", tg_ctx_error(ctx));
    tg_ctx_clear_error(ctx);
    st = tg_ckpt_describe(ctx, path, &text);
    if (st != TG_ERR_FORMAT && !code)
        code = 3;
    free(text);
    tg_ctx_clear_error(ctx);
    st = tg_ckpt_read_tensors(ctx, path, &ts, &n);
    if ((st != TG_ERR_FORMAT || ts) && !code)
        code = 4;
    tg_ckpt_tensors_free(ts, n);
    tg_ctx_clear_error(ctx);
    /* The metadata alone may be intact (damage in a tensor); then it
     * must read as it was written. */
    st = tg_ckpt_read_meta(ctx, path, &m);
    if (st == TG_OK && (m.step != 3 || strcmp(m.model, "tiny") != 0) && !code)
        code = 5;
    if (st != TG_OK && st != TG_ERR_FORMAT && !code)
        code = 6;
    tg_ckpt_meta_free(&m);
    tg_ctx_free(ctx);
    return code;
}

/* Every damage to the newest of three checkpoints: refused, and `auto`
 * falls back to the previous one, under a memory cap. */
static void test_damage_falls_back(void **state) {
    tg_ctx *ctx = new_ctx();
    const char *dir = tgt_path("fallback"), *p3;
    unsigned char *orig;
    size_t olen;

    (void)state;
    save_at(ctx, dir, 1, 0);
    save_at(ctx, dir, 2, 0);
    p3 = save_at(ctx, dir, 3, 0);
    orig = slurp(p3, &olen);
    for (int d = 0; d < D_COUNT; d++) {
        size_t len = olen;
        unsigned char *b = damaged(orig, &len, (damage)d);
        int rc;

        spit(p3, b, len);
        free(b);
        rc = capped(child_refuse, p3);
        if (rc)
            print_error("damage '%s': the readers gave code %d\n", k_damage[d], rc);
        assert_int_equal(rc, 0);
        rc = capped(child_find, dir);
        if (rc)
            print_error("damage '%s': resume auto gave code %d\n", k_damage[d], rc);
        assert_int_equal(rc, 0);
    }
    spit(p3, orig, olen);
    assert_int_equal(tg_ckpt_verify(ctx, p3), TG_OK);
    free(orig);
    tg_ctx_free(ctx);
}

/* The same damage behind a header that matches it (what a file without the
 * header meets): HDF5's metadata checksums, the bounds and the CRCs still
 * refuse it, under the memory cap. */
static void test_damage_behind_the_header(void **state) {
    tg_ctx *ctx = new_ctx();
    const char *p = save_at(ctx, tgt_path("resealed"), 3, 0);
    const char *plain = tgt_path("resealed/plain.h5");
    unsigned char *orig;
    size_t olen;
    char err[256];

    (void)state;
    orig = slurp(p, &olen);
    for (int d = D_SUPERBLOCK; d < D_COUNT; d++) {
        size_t len = olen;
        unsigned char *b = damaged(orig, &len, (damage)d);
        int rc;

        /* Cut at the header: nothing behind it to damage. Trailing bytes
         * past HDF5's end of file are no damage to its contents. */
        if (d == D_TRUNC_HDR || d == D_TRAILING) {
            free(b);
            continue;
        }
        spit(p, b, len);
        assert_int_equal(tg__ck_reseal(p, err, sizeof err), TG_OK);
        rc = capped(child_refuse, p);
        if (rc)
            print_error("damage '%s' (resealed): code %d\n", k_damage[d], rc);
        assert_int_equal(rc, 0);
        /* And with the header stripped: a plain HDF5 file. */
        spit(plain, b + TG__CK_HEADER, len - TG__CK_HEADER);
        rc = capped(child_refuse, plain);
        if (rc)
            print_error("damage '%s' (no header): code %d\n", k_damage[d], rc);
        assert_int_equal(rc, 0);
        free(b);
    }
    free(orig);
    tg_ctx_free(ctx);
}

/* ---- item by item ---- */

/* An empty tensor's CRC-32 (of no bytes) is compared like any other. */
static void test_empty_tensor_crc(void **state) {
    tg_ctx *ctx = new_ctx();
    const char *p = save_at(ctx, tgt_path("empty"), 3, 0);
    uint32_t bad = 0x12345678;
    char err[256];
    hid_t f, d, a;

    (void)state;
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    d = H5Dopen2(f, "tensors/empty", H5P_DEFAULT);
    assert_true(d >= 0);
    a = H5Aopen(d, "crc32", H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Awrite(a, H5T_NATIVE_UINT32, &bad) >= 0);
    H5Aclose(a);
    H5Dclose(d);
    H5Fclose(f);
    assert_int_equal(tg__ck_reseal(p, err, sizeof err), TG_OK);
    expect_msg(ctx, tg_ckpt_verify(ctx, p), TG_ERR_FORMAT, p, "'empty'", "CRC-32",
               "stored 12345678, computed 00000000", NULL);
    tg_ctx_free(ctx);
}

/* Adds /tensors/<name> of the given shape (f32, chunked, no data written)
 * to a sealed checkpoint, with the metadata's count and CRC updated and the
 * header resealed: a file whose only fault is the shape. */
static void add_huge(const char *p, const char *name, int nd, const hsize_t *dims) {
    tg_ctx *ctx = new_ctx();
    tg_ckpt_meta m;
    hsize_t chunk[2] = {1, 1024};
    int64_t n = NT + 1;
    uint32_t crc, zero = 0;
    char err[256];
    hid_t f, g, sp, pl, d, a;

    assert_int_equal(tg_ckpt_read_meta(ctx, p, &m), TG_OK);
    crc = tg__ck_meta_crc(&m, n);
    tg_ckpt_meta_free(&m);
    tg_ctx_free(ctx);
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    g = H5Gopen2(f, "tensors", H5P_DEFAULT);
    sp = H5Screate_simple(nd, dims, NULL);
    pl = H5Pcreate(H5P_DATASET_CREATE);
    chunk[0] = nd == 1 ? 1024 : 1;
    assert_true(H5Pset_chunk(pl, nd, chunk) >= 0);
    d = H5Dcreate2(g, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    assert_true(d >= 0);
    a = H5Acreate2(d, "crc32", H5T_STD_U32LE, H5Screate(H5S_SCALAR), H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Awrite(a, H5T_NATIVE_UINT32, &zero) >= 0);
    H5Aclose(a);
    H5Dclose(d);
    H5Pclose(pl);
    H5Sclose(sp);
    H5Gclose(g);
    a = H5Aopen(f, "num_tensors", H5P_DEFAULT);
    assert_true(H5Awrite(a, H5T_NATIVE_INT64, &n) >= 0);
    H5Aclose(a);
    a = H5Aopen(f, "meta_crc32", H5P_DEFAULT);
    assert_true(H5Awrite(a, H5T_NATIVE_UINT32, &crc) >= 0);
    H5Aclose(a);
    H5Fclose(f);
    assert_int_equal(tg__ck_reseal(p, err, sizeof err), TG_OK);
}

/* Shapes whose size overflows or exceeds the file: a data error that names
 * the file and the tensor, from the library and from inspect and export
 * (exit 3, not 0 with a norm of 0, not 1 for out of memory). */
static void test_huge_shapes(void **state) {
    static const hsize_t d1[2] = {(hsize_t)1 << 32, (hsize_t)1 << 30}, d2[1] = {(hsize_t)1 << 40},
                         d3[2] = {(hsize_t)1 << 40, (hsize_t)1 << 40};
    static const struct {
        int nd;
        const hsize_t *dims;
    } cases[] = {{2, d1}, {1, d2}, {2, d3}};
    tg_ctx *ctx = new_ctx();
    char *text = (char *)1;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[64];
        const char *p, *out = tgt_path("huge.safetensors");
        snprintf(dir, sizeof dir, "huge%zu", i);
        p = save_at(ctx, tgt_path(dir), 3, 0);
        add_huge(p, "huge", cases[i].nd, cases[i].dims);
        expect_msg(ctx, tg_ckpt_verify(ctx, p), TG_ERR_FORMAT, p, "/tensors/huge",
                   "more than the file's", NULL);
        expect_msg(ctx, tg_ckpt_describe(ctx, p, &text), TG_ERR_FORMAT, "/tensors/huge", NULL);
        assert_null(text);
        assert_int_equal(capped(child_refuse, p), 0);
        assert_int_equal(tgt_run("inspect '%s'", p), 3);
        tgt_expect_out("/tensors/huge");
        assert_int_equal(tgt_run("export --ckpt '%s' --out '%s'", p, out), 3);
        tgt_expect_out("/tensors/huge");
        assert_false(exists(out));
    }
    tg_ctx_free(ctx);
}

/* A step of 2^60 (which step x batch size overflows): refused when saving,
 * and reported as a data error naming the field when read. */
static void test_huge_step(void **state) {
    tg_ctx *ctx = new_ctx();
    const char *dir = tgt_path("step");
    tg_tensor *t[NT];
    tg_ckpt_meta m = meta_at(1), got = {0};
    char err[256], found[1024], warn[1024];
    const char *p = join2(dir, "ckpt-00000003.h5");

    (void)state;
    m.step = m.optim_steps = (int64_t)1 << 60;
    make_tensors(ctx, t, 1.0f);
    expect_msg(ctx, tg_ckpt_save(ctx, dir, &m, NT, t, 0, NULL, 0), TG_ERR_INVALID, "step",
               "too large", NULL);
    save_at(ctx, dir, 2, 0);
    /* Written past the save's check, as a forged or damaged file would be. */
    m.samples_consumed = 0;
    assert_int_equal(tg__ck_write(ctx, p, &m, NT, t, err, sizeof err), TG_OK);
    expect_msg(ctx, tg_ckpt_read_meta(ctx, p, &got), TG_ERR_FORMAT, p, "'step'",
               "1152921504606846976", "expected 0 to 281474976710656", NULL);
    tg_ckpt_meta_free(&got);
    assert_int_equal(tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn), TG_OK);
    assert_string_equal(found, join2(dir, "ckpt-00000002.h5"));
    tg_ctx_free(ctx);
}

/* export checks the checkpoint against the model it names. */
static void test_export_checks_model(void **state) {
    tg_ctx *ctx = new_ctx();
    tg_model md;
    const int64_t in[3] = {1, 4, 4};
    tg_tensor *ts[32];
    int n = 0, nb = -1;
    tg_ckpt_meta m = {.step = 5,
                      .samples_consumed = 5,
                      .world_size = 1,
                      .model = "mlp",
                      .config = "model = mlp\n"};
    char full[1024], part[1024];
    const char *out = tgt_path("mlp.safetensors");

    (void)state;
    assert_int_equal(tg_model_init(ctx, &md, TG_MODEL_MLP, in, 3, 1), TG_OK);
    for (int i = 0; i < md.params.nparams; i++) {
        if (strcmp(md.params.params[i]->name, "fc3.bias") == 0)
            nb = n;
        ts[n++] = md.params.params[i];
    }
    for (int i = 0; i < md.params.nbuffers; i++)
        ts[n++] = md.params.buffers[i];
    assert_true(nb >= 0);
    assert_int_equal(tg_ckpt_save(ctx, tgt_path("mlp_full"), &m, n, ts, 0, full, sizeof full),
                     TG_OK);
    assert_int_equal(tgt_run("export --ckpt '%s' --out '%s'", full, out), 0);
    tgt_expect_out("wrote");
    /* Without fc3.bias. */
    ts[nb] = ts[--n];
    assert_int_equal(tg_ckpt_save(ctx, tgt_path("mlp_part"), &m, n, ts, 0, part, sizeof part),
                     TG_OK);
    assert_int_equal(unlink(out), 0);
    assert_int_equal(tgt_run("export --ckpt '%s' --out '%s'", part, out), 3);
    tgt_expect_out("'fc3.bias' (3,) f32 of model 'mlp' is missing from the file");
    tgt_expect_out(part);
    assert_false(exists(out));
    tg_ctx_free(ctx);
}

/* export --out: empty is a usage error; an existing FIFO or folder is left
 * alone (no rename over it). */
static void test_export_out(void **state) {
    tg_ctx *ctx = new_ctx();
    tg_model md;
    const int64_t in[3] = {1, 4, 4};
    tg_ckpt_meta m = {.step = 5, .model = "mlp", .config = ""};
    char ck[1024];
    const char *fifo = tgt_path("out.fifo"), *dir = tgt_path("out.dir");
    struct stat sb;

    (void)state;
    assert_int_equal(tg_model_init(ctx, &md, TG_MODEL_MLP, in, 3, 1), TG_OK);
    assert_int_equal(tg_ckpt_save(ctx, tgt_path("outck"), &m, md.params.nparams, md.params.params,
                                  0, ck, sizeof ck),
                     TG_OK);
    assert_int_equal(tgt_run("export --ckpt '%s' --out ''", ck), 2);
    tgt_expect_out("--out: empty file name");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(tgt_run("export --ckpt '%s' --out '%s'", ck, fifo), 2);
    tgt_expect_out("is not a regular file");
    assert_int_equal(lstat(fifo, &sb), 0);
    assert_true(S_ISFIFO(sb.st_mode));
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(tgt_run("export --ckpt '%s' --out '%s'", ck, dir), 2);
    assert_int_equal(lstat(dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    tg_ctx_free(ctx);
}

/* Pruning counts and removes only valid checkpoints of this format. */
static void test_prune_valid_only(void **state) {
    tg_ctx *ctx = new_ctx();
    const char *dir = tgt_path("prune");

    (void)state;
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(join2(dir, "ckpt-00000097.h5"), 0700), 0);
    spit(join2(dir, "ckpt-00000098.h5"), "junk", 4);
    spit(join2(dir, "ckpt-00000099.h5"), "more junk", 9);
    /* The first save succeeds (a folder named like a checkpoint does not
     * fail it), then keep 3 keeps three valid ones. */
    save_at(ctx, dir, 100, 3);
    save_at(ctx, dir, 101, 3);
    save_at(ctx, dir, 102, 3);
    save_at(ctx, dir, 103, 3);
    assert_false(exists(join2(dir, "ckpt-00000100.h5")));
    for (int s = 101; s <= 103; s++) {
        char name[64];
        snprintf(name, sizeof name, "ckpt-%08d.h5", s);
        assert_int_equal(tg_ckpt_verify(ctx, join2(dir, name)), TG_OK);
    }
    /* What is not a valid checkpoint stays as it was. */
    assert_true(exists(join2(dir, "ckpt-00000097.h5")));
    assert_true(exists(join2(dir, "ckpt-00000098.h5")));
    assert_true(exists(join2(dir, "ckpt-00000099.h5")));
    tg_ctx_free(ctx);
}

/* In a child: `auto` with `latest` a FIFO returns (no hang) with ckpt-2
 * and a warning that `latest` is not a regular file. */
static int child_fifo(const char *dir) {
    tg_ctx *ctx;
    char found[1024], warn[2048];
    int code = 0;

    if (tg_ctx_new(NULL, &ctx) != TG_OK)
        return 9;
    if (tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn) != TG_OK)
        code = 2;
    else if (!strstr(found, "ckpt-00000002.h5"))
        code = 3;
    else if (!strstr(warn, "latest: is not a regular file"))
        code = 4;
    tg_ctx_free(ctx);
    return code;
}

static void test_latest_fifo(void **state) {
    tg_ctx *ctx = new_ctx();
    const char *dir = tgt_path("fifo");

    (void)state;
    save_at(ctx, dir, 1, 0);
    save_at(ctx, dir, 2, 0);
    assert_int_equal(unlink(join2(dir, "latest")), 0);
    assert_int_equal(mkfifo(join2(dir, "latest"), 0600), 0);
    /* A FIFO named like a checkpoint is skipped the same way. */
    assert_int_equal(mkfifo(join2(dir, "ckpt-00000009.h5"), 0600), 0);
    assert_int_equal(capped(child_fifo, dir), 0);
    tg_ctx_free(ctx);
}

/* The usable check of test_find_skips_unusable: the file holds w.dense. */
static bool holds_w_dense(const char *path, void *user, char *why, size_t whylen) {
    tg_ctx *ctx = user;
    tg_ckpt_tensor *ts = NULL;
    int n = 0;
    bool found = false;
    if (tg_ckpt_read_tensors(ctx, path, &ts, &n) != TG_OK) {
        snprintf(why, whylen, "%s", tg_ctx_error(ctx));
        return false;
    }
    for (int i = 0; i < n; i++)
        found |= strcmp(ts[i].name, "w.dense") == 0;
    tg_ckpt_tensors_free(ts, n);
    if (!found)
        snprintf(why, whylen, "%s: tensor 'w.dense' is missing", path);
    return found;
}

/* An old-format checkpoint with a damaged tensor name passes verification
 * (no checksum covers the names of that format), so `auto` used to take it
 * and fail at the load; tg_ckpt_find_usable, given a check against the
 * model (as `train --resume auto` gives it), falls back to the previous. */
static void test_find_skips_unusable(void **state) {
    tg_ctx *ctx = new_ctx();
    const char *dir = tgt_path("names");
    char found[1024], warn[2048], ck3[1024];
    size_t len;
    unsigned char *d = slurp(TG_FIXTURE_DIR "/ckpt_plain_hdf5.h5", &len);

    (void)state;
    save_at(ctx, dir, 2, 0);
    d[find_once(d, len, "w.dense", 7) + 6] = 'f';
    snprintf(ck3, sizeof ck3, "%s", join2(dir, "ckpt-00000003.h5"));
    spit(ck3, d, len);
    spit(join2(dir, "latest"), "ckpt-00000003.h5\n", 17);
    free(d);
    assert_int_equal(tg_ckpt_verify(ctx, ck3), TG_OK);
    assert_int_equal(tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn), TG_OK);
    assert_string_equal(found, ck3);
    assert_int_equal(tg_ckpt_find_usable(ctx, dir, found, sizeof found, warn, sizeof warn,
                                         holds_w_dense, ctx),
                     TG_OK);
    assert_string_equal(found, join2(dir, "ckpt-00000002.h5"));
    if (!strstr(warn, "tensor 'w.dense' is missing") || !strstr(warn, "falling back to"))
        fail_msg("warning: %s", warn);
    tg_ctx_free(ctx);
}

/* A checkpoint without the header (a plain HDF5 file, as earlier versions
 * wrote) stays readable: its metadata, its tensors and `auto`. */
static void test_plain_hdf5_readable(void **state) {
    tg_ctx *ctx = new_ctx();
    const char *fixture = TG_FIXTURE_DIR "/ckpt_plain_hdf5.h5";
    const char *dir = tgt_path("plain"), *p;
    tg_ckpt_tensor *ts = NULL;
    tg_ckpt_meta m;
    unsigned char *d;
    char found[1024], warn[1024];
    size_t len;
    int n = 0;

    (void)state;
    d = slurp(fixture, &len);
    assert_memory_equal(d, "\x89HDF\r\n\x1a\n", 8);
    assert_false(tg_ckpt_has_header(fixture));
    assert_int_equal(tg_ckpt_verify(ctx, fixture), TG_OK);
    assert_int_equal(tg_ckpt_read_meta(ctx, fixture, &m), TG_OK);
    assert_int_equal(m.step, 3);
    assert_int_equal(m.samples_consumed, 96);
    assert_string_equal(m.model, "tiny");
    assert_null(m.data_path); /* older than the dataset record */
    tg_ckpt_meta_free(&m);
    assert_int_equal(tg_ckpt_read_tensors(ctx, fixture, &ts, &n), TG_OK);
    assert_int_equal(n, 5);
    assert_string_equal(ts[0].name, "w.dense");
    assert_int_equal(ts[0].shape[1], 7);
    assert_true(((float *)ts[0].data)[4] == -1.0f);
    assert_int_equal(((int64_t *)ts[2].data)[0], 42);
    tg_ckpt_tensors_free(ts, n);
    /* In a folder, as the newest: `auto` takes it. */
    save_at(ctx, dir, 2, 0);
    spit(join2(dir, "ckpt-00000003.h5"), d, len);
    spit(join2(dir, "latest"), "ckpt-00000003.h5\n", 17);
    assert_int_equal(tg_ckpt_find(ctx, dir, found, sizeof found, warn, sizeof warn), TG_OK);
    assert_string_equal(found, join2(dir, "ckpt-00000003.h5"));
    /* Behind a header, only the newest HDF5 format (metadata with
     * checksums) is accepted: the header never vouches for the old one. */
    {
        unsigned char *w = calloc(len + TG__CK_HEADER, 1);
        const char *wp = tgt_path("wrapped.h5");
        assert_non_null(w);
        memcpy(w + TG__CK_HEADER, d, len);
        tg__ck_seal(w, len + TG__CK_HEADER);
        spit(wp, w, len + TG__CK_HEADER);
        free(w);
        expect_msg(ctx, tg_ckpt_verify(ctx, wp), TG_ERR_FORMAT, wp,
                   "no HDF5 superblock of version 2 or later", "version 0", NULL);
    }
    free(d);
    /* A new file with its header stripped reads the same way. */
    p = save_at(ctx, tgt_path("strip"), 4, 0);
    assert_true(tg_ckpt_has_header(p));
    d = slurp(p, &len);
    spit(p, d + TG__CK_HEADER, len - TG__CK_HEADER);
    free(d);
    assert_int_equal(tg_ckpt_verify(ctx, p), TG_OK);
    tg_ctx_free(ctx);
}

/* The header's fields as docs/CHECKPOINTS.md gives them, computed here
 * with zlib's CRC-32 alone; HDF5 and h5dump-style readers skip it. */
static void test_header_layout(void **state) {
    tg_ctx *ctx = new_ctx();
    const char *p = save_at(ctx, tgt_path("layout"), 3, 0);
    unsigned char *d;
    size_t len;
    uint64_t flen = 0;
    uint32_t body = 0, self = 0;
    hid_t f;

    (void)state;
    d = slurp(p, &len);
    assert_memory_equal(d, "TAPEGRADCKPT\r\n\032\n", 16);
    assert_int_equal(d[16] | d[17] << 8, 1);
    assert_int_equal(d[20] | d[21] << 8, 512);
    for (int i = 7; i >= 0; i--)
        flen = flen << 8 | d[24 + i];
    assert_int_equal(flen, len);
    for (int i = 3; i >= 0; i--) {
        body = body << 8 | d[32 + i];
        self = self << 8 | d[508 + i];
    }
    assert_int_equal(body, tg__ck_crc_bytes(d + 512, len - 512));
    assert_int_equal(self, tg__ck_crc_bytes(d, 508));
    for (int i = 36; i < 508; i++)
        assert_int_equal(d[i], 0);
    assert_memory_equal(d + 512, "\x89HDF\r\n\x1a\n", 8);
    free(d);
    f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_true(H5Lexists(f, "tensors/w.dense", H5P_DEFAULT) > 0);
    H5Fclose(f);
    tg_ctx_free(ctx);
}

/* The dataset record: saved and read back as given, described by
 * inspect; absent (NULL) when none was given; a changed field is caught by
 * its CRC-32. */
static void test_dataset_record(void **state) {
    tg_ctx *ctx = new_ctx();
    tg_tensor *t[NT];
    tg_ckpt_meta m = meta_at(5), r;
    const char *sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    char path[1024], err[256], *text = NULL;
    int64_t big = 123456789;
    hid_t f, a;

    (void)state;
    m.data_path = "/data/sets/fa\"shion.h5";
    m.data_bytes = 55468400;
    snprintf(m.data_sha256, sizeof m.data_sha256, "%s", sha);
    make_tensors(ctx, t, 1.0f);
    assert_int_equal(tg_ckpt_save(ctx, tgt_path("rec"), &m, NT, t, 0, path, sizeof path), TG_OK);
    assert_int_equal(tg_ckpt_read_meta(ctx, path, &r), TG_OK);
    assert_non_null(r.data_path);
    assert_string_equal(r.data_path, "/data/sets/fa\"shion.h5");
    assert_int_equal(r.data_bytes, 55468400);
    assert_string_equal(r.data_sha256, sha);
    tg_ckpt_meta_free(&r);
    assert_null(r.data_path);
    assert_int_equal(tg_ckpt_describe(ctx, path, &text), TG_OK);
    assert_non_null(strstr(text, "  dataset           /data/sets/fa\"shion.h5 (55468400 bytes, "
                                 "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08)"));
    free(text);
    /* Without a record: NULL, and inspect says so. */
    const char *q = save_at(ctx, tgt_path("norec"), 6, 0);
    assert_int_equal(tg_ckpt_read_meta(ctx, q, &r), TG_OK);
    assert_null(r.data_path);
    assert_int_equal(r.data_sha256[0], 0);
    tg_ckpt_meta_free(&r);
    assert_int_equal(tg_ckpt_describe(ctx, q, &text), TG_OK);
    assert_non_null(strstr(text, "dataset           not recorded"));
    free(text);
    /* Another size behind a valid header: the record's CRC-32 fails. */
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    a = H5Aopen(f, "data_bytes", H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Awrite(a, H5T_NATIVE_INT64, &big) >= 0);
    H5Aclose(a);
    H5Fclose(f);
    assert_int_equal(tg__ck_reseal(path, err, sizeof err), TG_OK);
    expect_msg(ctx, tg_ckpt_read_meta(ctx, path, &r), TG_ERR_FORMAT, path, "dataset record",
               "CRC-32", NULL);
    tg_ckpt_meta_free(&r);
    tg_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_damage_falls_back),
        cmocka_unit_test(test_damage_behind_the_header),
        cmocka_unit_test(test_empty_tensor_crc),
        cmocka_unit_test(test_huge_shapes),
        cmocka_unit_test(test_huge_step),
        cmocka_unit_test(test_export_checks_model),
        cmocka_unit_test(test_export_out),
        cmocka_unit_test(test_prune_valid_only),
        cmocka_unit_test(test_latest_fifo),
        cmocka_unit_test(test_plain_hdf5_readable),
        cmocka_unit_test(test_find_skips_unusable),
        cmocka_unit_test(test_dataset_record),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
