/*
 * tests/test_gemm_bf16.c: the bf16 product of our own (kernels/cpu/
 * cpu_gemm_bf16.c) that the autocast matmul runs on CPUs with AVX512_BF16.
 *
 *   - Against a reference computed here (the operands rounded to bf16 by
 *     tg_bf16_from_f32, the products summed in double): shapes with tails of
 *     the 12 x 32 tile and of the 96-row, 512-column and 512-K blocks, odd K,
 *     K of 1 and 0, all four transposes, leading dimensions wider than the
 *     matrix (the gap filled with NaN, which must never be read), at 1, 2 and
 *     3 parts. Every element must lie within f32 accumulation's bound
 *     ((k + 2) 2^-24 of the sum of the terms' magnitudes) and, where the
 *     rounding to bf16 moves the f32 product, the check must see it (the
 *     operands really were rounded). Ties, NaN and a denormal that rounds up
 *     to the smallest normal round as tg_bf16_from_f32.
 *   - The bits do not depend on the parts nor on the running threads: the
 *     same product at 1, 2, 3 and 5 parts, with OpenMP's count at 1, 2 and 3;
 *     and through tg_matmul in a 2- and a 3-thread context at bf16 precision
 *     with 1, 2 and (the 3-thread one) 2 running threads, as
 *     test_thread_parts does for the f32 products.
 *   - The switch TG_CPU_BF16_GEMM: "own" and "onednn" both give products
 *     within the bound through tg_matmul ("own" the bits of the direct
 *     call), and an unknown value fails the context's creation with a
 *     message naming the variable.
 *
 * On a CPU without AVX512_BF16 the cases of our kernel are skipped (and say
 * so); the oneDNN path and the switch's errors are still checked. Without
 * oneDNN, bf16 precision cannot be set (its convolutions need it) and the
 * cases through tg_matmul are skipped.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "tapegrad/nn.h"
#include "tapegrad/runtime.h"

static uint64_t seed = 0x9e3779b97f4a7c15ull;
static float uniform(void) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(seed >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static float f32_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double r16(float f) { return (double)tg_bf16_to_f32(tg_bf16_from_f32(f)); }

/* A rows x cols matrix with row stride ld: random values with their low
 * bits set (so that rounding matters), a few ties to even each way, and NaN
 * in the gap between cols and ld. */
static float *matrix(int64_t rows, int64_t cols, int64_t ld) {
    const size_t len = (size_t)(rows > 0 ? rows : 1) * (size_t)(ld > 0 ? ld : 1);
    float *p = malloc(len * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = NAN;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float v = uniform() * (1.0f + 3.0f * (float)((r * 7 + c * 3) % 5));
            const int64_t h = (r * 31 + c * 17) % 23;
            if (h == 0)
                v = f32_of(0x3f808000u); /* 1 + 2^-8: a tie, rounds down to even */
            else if (h == 1)
                v = f32_of(0xbf818000u); /* a tie that rounds up to even */
            p[r * ld + c] = v;
        }
    return p;
}

/* One product's operands: op(A) is n x k, op(B) k x m. */
typedef struct prod {
    int64_t n, m, k;
    bool ta, tb;
    tg__gemm_arg ga, gb;
    float *A, *B;
} prod;

/* Operands for (n, m, k) with leading dimensions `pad` wider than needed. */
static prod prod_make(int64_t n, int64_t m, int64_t k, bool ta, bool tb, int64_t pad) {
    prod p = {.n = n, .m = m, .k = k, .ta = ta, .tb = tb};
    const int64_t ar = ta ? k : n, ac = ta ? n : k, br = tb ? m : k, bc = tb ? k : m;
    p.ga = (tg__gemm_arg){.trans = ta, .ld = ac + pad};
    p.gb = (tg__gemm_arg){.trans = tb, .ld = bc + pad};
    p.A = matrix(ar, ac, p.ga.ld);
    p.B = matrix(br, bc, p.gb.ld);
    return p;
}

static void prod_free(prod *p) { free(p->A), free(p->B); }

/* Element (i, kk) of op(A) and (kk, j) of op(B) in their storage. */
static float *a_ref(const prod *p, int64_t i, int64_t kk) {
    return p->ta ? &p->A[kk * p->ga.ld + i] : &p->A[i * p->ga.ld + kk];
}
static float *b_ref(const prod *p, int64_t kk, int64_t j) {
    return p->tb ? &p->B[j * p->gb.ld + kk] : &p->B[kk * p->gb.ld + j];
}

/* Checks C against the bf16 reference; returns how many elements the
 * rounding moved by more than the bound from the f32 operands' product. */
static int64_t check(const prod *p, const float *C, const char *what) {
    int64_t moved = 0;
    for (int64_t i = 0; i < p->n; i++)
        for (int64_t j = 0; j < p->m; j++) {
            double ref = 0, mag = 0, f32 = 0;
            for (int64_t kk = 0; kk < p->k; kk++) {
                const float a = *a_ref(p, i, kk), b = *b_ref(p, kk, j);
                const double t = r16(a) * r16(b);
                ref += t, mag += fabs(t), f32 += (double)a * b;
            }
            const double tol = (double)(p->k + 2) * ldexp(mag, -24) + 1e-30;
            const float got = C[i * p->m + j];
            if (!(fabs((double)got - ref) <= tol))
                fail_msg("%s: %lld x %lld @ %lld x %lld (A%s, B%s, ld %lld, %lld): C[%lld][%lld] "
                         "= %.9g, the bf16 reference %.9g (bound %.3g)",
                         what, (long long)p->n, (long long)p->k, (long long)p->k, (long long)p->m,
                         p->ta ? "^T" : "", p->tb ? "^T" : "", (long long)p->ga.ld,
                         (long long)p->gb.ld, (long long)i, (long long)j, (double)got, ref, tol);
            moved += fabs(f32 - ref) > 2 * tol;
        }
    return moved;
}

static float *run_own(tg__gemm16 *g, int parts, const prod *p) {
    float *C = malloc((size_t)(p->n * p->m + 1) * sizeof *C);
    assert_non_null(C);
    for (int64_t i = 0; i < p->n * p->m; i++)
        C[i] = 12345.0f; /* stale: every element must be written */
    tg__gemm16_run(g, parts, &p->ga, &p->gb, p->n, p->m, p->k, p->A, p->B, C);
    return C;
}

static bool have_kernel(void) {
    if (tg__cpu_avx512_bf16())
        return true;
    print_message("skipped: this CPU has no AVX512_BF16\n");
    return false;
}

/* (n, m, k): tails of the tile (12 x 32), of the blocks (96 rows, 512
 * columns, 512 of K) and odd K. */
static const int64_t shapes[][3] = {
    {1, 1, 1},     {1, 1, 2},     {3, 5, 7},      {12, 32, 2},    {13, 33, 3},
    {25, 47, 65},  {97, 100, 31}, {100, 97, 256}, {130, 70, 257}, {40, 530, 40},
    {37, 45, 513}, {5, 200, 1},   {300, 17, 33},  {17, 300, 600}, {64, 64, 0},
};

static void test_against_reference(void **state) {
    (void)state;
    if (!have_kernel())
        return;
    tg__gemm16 *g = tg__gemm16_new(3);
    assert_non_null(g);
    int64_t moved = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++) {
            const int64_t *sh = shapes[s];
            prod p = prod_make(sh[0], sh[1], sh[2], t & 1, t & 2, (s + t) % 3 == 0 ? 0 : 5 + t);
            for (int parts = 1; parts <= 3; parts++) {
                float *C = run_own(g, parts, &p);
                const int64_t mv = check(&p, C, "own kernel");
                moved = parts == 1 ? moved + mv : moved;
                free(C);
            }
            prod_free(&p);
        }
    tg__gemm16_free(g);
    /* The check can tell f32 operands from bf16 ones. */
    assert_true(moved > 1000);
}

/* A NaN operand gives NaN in its row; an infinity stays infinite. */
static void test_nan_inf(void **state) {
    (void)state;
    if (!have_kernel())
        return;
    tg__gemm16 *g = tg__gemm16_new(1);
    assert_non_null(g);
    for (int t = 0; t < 4; t++) {
        prod p = prod_make(5, 20, 9, t & 1, t & 2, 0);
        for (int64_t kk = 0; kk < p.k; kk++) /* row 4 of op(A): positive, finite */
            *a_ref(&p, 4, kk) = 1.0f;
        for (int64_t kk = 0; kk < p.k; kk++) /* column 3 of op(B): positive */
            *b_ref(&p, kk, 3) = 0.5f;
        *a_ref(&p, 2, 6) = f32_of(0x7f800001u); /* a signalling NaN */
        *b_ref(&p, 7, 3) = INFINITY;
        float *C = run_own(g, 1, &p);
        for (int64_t j = 0; j < p.m; j++)
            assert_true(isnan(C[2 * p.m + j]));
        assert_true(isinf(C[4 * p.m + 3]) && C[4 * p.m + 3] > 0);
        assert_true(isfinite(C[0 * p.m + 0]));
        free(C);
        prod_free(&p);
    }
    tg__gemm16_free(g);
}

/* An f32 denormal just below the smallest normal rounds up to it, as
 * tg_bf16_from_f32 does (a conversion that flushes denormals would give 0),
 * in every packing of A and of B. */
static void test_denormal_rounds_up(void **state) {
    (void)state;
    if (!have_kernel())
        return;
    tg__gemm16 *g = tg__gemm16_new(1);
    assert_non_null(g);
    const float up = f32_of(0x007fffc0u), big = ldexpf(1.0f, 100);
    assert_int_equal(tg_bf16_from_f32(up), 0x0080); /* 2^-126 */
    for (int t = 0; t < 4; t++) {
        prod p = prod_make(3, 40, 37, t & 1, t & 2, 2);
        for (int64_t i = 0; i < p.n; i++)
            for (int64_t kk = 0; kk < p.k; kk++)
                *a_ref(&p, i, kk) = 0.0f;
        for (int64_t kk = 0; kk < p.k; kk++)
            for (int64_t j = 0; j < p.m; j++)
                *b_ref(&p, kk, j) = 0.0f;
        *a_ref(&p, 1, 5) = up, *b_ref(&p, 5, 33) = big;
        *a_ref(&p, 2, 6) = big, *b_ref(&p, 6, 7) = up;
        float *C = run_own(g, 1, &p);
        for (int64_t i = 0; i < p.n; i++)
            for (int64_t j = 0; j < p.m; j++) {
                const bool hit = (i == 1 && j == 33) || (i == 2 && j == 7);
                if (C[i * p.m + j] != (hit ? ldexpf(1.0f, -26) : 0.0f))
                    fail_msg("A%s, B%s: C[%lld][%lld] = %g, expected %g", p.ta ? "^T" : "",
                             p.tb ? "^T" : "", (long long)i, (long long)j, (double)C[i * p.m + j],
                             hit ? ldexp(1.0, -26) : 0.0);
            }
        free(C);
        prod_free(&p);
    }
    tg__gemm16_free(g);
}

/* The same bits at any number of parts and of running threads. */
static void test_bits_parts_threads(void **state) {
    (void)state;
    if (!have_kernel())
        return;
    tg__gemm16 *g = tg__gemm16_new(5);
    assert_non_null(g);
    const int64_t sh[][3] = {{301, 203, 517}, {70, 600, 130}};
    for (size_t s = 0; s < 2; s++)
        for (int t = 0; t < 4; t++) {
            prod p = prod_make(sh[s][0], sh[s][1], sh[s][2], t & 1, t & 2, 3);
            omp_set_num_threads(1);
            float *ref = run_own(g, 1, &p);
            const size_t bytes = (size_t)(p.n * p.m) * sizeof(float);
            for (int run = 1; run <= 3; run++) {
                omp_set_num_threads(run);
                const int parts[] = {1, 2, 3, 5};
                for (int q = 0; q < 4; q++) {
                    float *C = run_own(g, parts[q], &p);
                    assert_memory_equal(C, ref, bytes);
                    free(C);
                }
            }
            free(ref);
            prod_free(&p);
        }
    omp_set_num_threads(1);
    tg__gemm16_free(g);
}

/* ---- through tg_matmul ---- */

/* A context of `threads` at bf16 precision under TG_CPU_BF16_GEMM=mode;
 * NULL when this build cannot set bf16 (no oneDNN for the convolutions). */
static tg_ctx *bf16_ctx(int threads, const char *mode) {
    setenv("TG_CPU_BF16_GEMM", mode, 1);
    tg_ctx_config cfg = {.device = TG_DEVICE_CPU, .threads = threads};
    tg_ctx *ctx = NULL;
    assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_OK);
    unsetenv("TG_CPU_BF16_GEMM");
    if (tg_ctx_set_precision(ctx, TG_PRECISION_BF16) != TG_OK) {
        assert_non_null(strstr(tg_ctx_error(ctx), "oneDNN"));
        print_message("skipped: %s\n", tg_ctx_error(ctx));
        tg_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

/* op(A) op(B) through the op: a transposed operand is the transpose view of
 * its storage (its leading dimension is its width: the op's layouts). */
static float *op_matmul(tg_ctx *ctx, const prod *p) {
    const int64_t as[2] = {p->ta ? p->k : p->n, p->ta ? p->n : p->k};
    const int64_t bs[2] = {p->tb ? p->m : p->k, p->tb ? p->k : p->m};
    tg_tensor *at = tg_from_data(ctx, TG_F32, 2, as, p->A);
    tg_tensor *bt = tg_from_data(ctx, TG_F32, 2, bs, p->B);
    if (p->ta)
        at = tg_transpose(ctx, at, 0, 1);
    if (p->tb)
        bt = tg_transpose(ctx, bt, 0, 1);
    tg_tensor *c = tg_matmul(ctx, at, bt);
    if (!c)
        fail_msg("%s", tg_ctx_error(ctx));
    float *out = malloc((size_t)(p->n * p->m) * sizeof *out);
    assert_non_null(out);
    assert_int_equal(tg_to_host(ctx, c, out, (size_t)(p->n * p->m) * sizeof *out), TG_OK);
    return out;
}

static void test_paths_through_op(void **state) {
    (void)state;
    const bool own = tg__cpu_avx512_bf16();
    const char *modes[] = {"onednn", "own", "auto"};
    tg__gemm16 *g = tg__gemm16_new(1);
    assert_non_null(g);
    for (int md = 0; md < (own ? 3 : 1); md++) {
        tg_ctx *ctx = bf16_ctx(2, modes[md]);
        if (!ctx)
            break;
        for (int t = 0; t < 4; t++) {
            prod p = prod_make(150, 90, 77, t & 1, t & 2, 0);
            float *C = op_matmul(ctx, &p);
            check(&p, C, modes[md]);
            if (md == 1) {
                float *D = run_own(g, 1, &p);
                assert_memory_equal(C, D, (size_t)(p.n * p.m) * sizeof(float));
                free(D);
            }
            free(C);
            prod_free(&p);
        }
        tg_ctx_free(ctx);
    }
    tg__gemm16_free(g);
}

/* As test_thread_parts: a 2- and a 3-thread context, OpenMP's count at the
 * context's, at 1 and (3 threads) at 2. */
static void test_context_threads(void **state) {
    (void)state;
    if (!have_kernel())
        return;
    for (int threads = 2; threads <= 3; threads++) {
        tg_ctx *ctx = bf16_ctx(threads, "own");
        if (!ctx)
            return;
        for (int t = 0; t < 4; t++) {
            prod p = prod_make(300, 200, 150, t & 1, t & 2, 0);
            const size_t bytes = (size_t)(p.n * p.m) * sizeof(float);
            omp_set_num_threads(threads);
            float *team = op_matmul(ctx, &p);
            for (int run = 1; run < threads; run++) {
                omp_set_num_threads(run);
                float *C = op_matmul(ctx, &p);
                assert_memory_equal(C, team, bytes);
                free(C);
            }
            free(team);
            prod_free(&p);
        }
        tg_ctx_free(ctx);
    }
}

/* A bad TG_CPU_BF16_GEMM fails the context's creation with a message naming
 * the variable and the values it takes; "own" fails on a CPU without
 * AVX512_BF16. Unset again, contexts are made as before. */
static void test_bad_switch(void **state) {
    (void)state;
    const char *bad[] = {"fast", "OWN", "onednn "};
    tg_ctx_config cfg = {.device = TG_DEVICE_CPU, .threads = 1};
    for (int i = 0; i < 3; i++) {
        setenv("TG_CPU_BF16_GEMM", bad[i], 1);
        tg_ctx *ctx = (tg_ctx *)&cfg;
        assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_ERR_INVALID);
        assert_null(ctx);
        char want[64];
        snprintf(want, sizeof want, "TG_CPU_BF16_GEMM=%s:", bad[i]);
        assert_non_null(strstr(tg_last_init_error(), want));
        assert_non_null(strstr(tg_last_init_error(), "expected auto, own or onednn"));
    }
    setenv("TG_CPU_BF16_GEMM", "own", 1);
    tg_ctx *ctx = NULL;
    const tg_status st = tg_ctx_new(&cfg, &ctx);
    if (tg__cpu_avx512_bf16()) {
        assert_int_equal(st, TG_OK);
    } else {
        assert_int_equal(st, TG_ERR_UNSUPPORTED);
        assert_non_null(strstr(tg_last_init_error(), "no AVX512_BF16"));
    }
    tg_ctx_free(ctx);
    unsetenv("TG_CPU_BF16_GEMM");
    ctx = NULL;
    assert_int_equal(tg_ctx_new(&cfg, &ctx), TG_OK);
    tg_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference),  cmocka_unit_test(test_nan_inf),
        cmocka_unit_test(test_denormal_rounds_up), cmocka_unit_test(test_bits_parts_threads),
        cmocka_unit_test(test_paths_through_op),   cmocka_unit_test(test_context_threads),
        cmocka_unit_test(test_bad_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
