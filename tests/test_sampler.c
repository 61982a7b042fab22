/*
 * test_sampler.c: the epoch permutation and the split of global batches
 * across ranks. The properties that make N-rank training equal 1-rank
 * training are checked directly: the same permutation everywhere, rank
 * slices that concatenate to the 1-rank batch, every evaluation sample seen
 * exactly once, and a position that survives a change of world size.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tapegrad/datasets.h"

static void expect_fail(tg_status got, tg_status want, const char *msg, const char *f1,
                        const char *f2) {
    if (got != want || !strstr(msg, f1) || (f2 && !strstr(msg, f2)))
        print_error("status %d (want %d), message \"%s\", want \"%s\" and \"%s\"\n", got, want, msg,
                    f1, f2 ? f2 : "");
    assert_int_equal(got, want);
    assert_non_null(strstr(msg, f1));
    if (f2)
        assert_non_null(strstr(msg, f2));
}

/* Known answers from the Random123 distribution (tests/kat_vectors). */
static void test_philox_kat(void **state) {
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };

    (void)state;
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];

        tg_philox4x32_10(kat[i], kat[i] + 4, out);
        for (int w = 0; w < 4; w++)
            assert_int_equal(out[w], kat[i][6 + w]);
    }
}

static void assert_is_perm(const int64_t *p, int64_t n) {
    char *seen = calloc((size_t)n, 1);

    assert_non_null(seen);
    for (int64_t i = 0; i < n; i++) {
        assert_true(p[i] >= 0 && p[i] < n);
        assert_false(seen[p[i]]);
        seen[p[i]] = 1;
    }
    free(seen);
}

static void test_permutation(void **state) {
    /* Pinned so that a change of the shuffle, which would silently change
     * every resumed run, fails here. */
    static const int64_t golden[10] = {7, 5, 1, 3, 9, 4, 2, 6, 0, 8};
    enum {
        N = 1000
    };
    int64_t *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), g[10];
    int64_t same;
    char err[256];

    (void)state;
    assert_true(a && b);
    for (int64_t e = 0; e < 4; e++) {
        assert_int_equal(tg_permutation(42, e, N, a, err, sizeof err), TG_OK);
        assert_is_perm(a, N);
        assert_int_equal(tg_permutation(42, e, N, b, err, sizeof err), TG_OK);
        assert_memory_equal(a, b, N * sizeof *a);
        /* Another epoch (or seed) is another order: count fixed points of
         * the pair, which for independent permutations are about one. */
        assert_int_equal(
            tg_permutation(e == 3 ? 43 : 42, e == 3 ? e : e + 1, N, b, err, sizeof err), TG_OK);
        same = 0;
        for (int i = 0; i < N; i++)
            same += a[i] == b[i];
        assert_true(same < 20);
    }
    assert_int_equal(tg_permutation(42, 0, 10, g, err, sizeof err), TG_OK);
    assert_memory_equal(g, golden, sizeof golden);
    assert_int_equal(tg_permutation(1, 0, 1, g, err, sizeof err), TG_OK);
    assert_int_equal(g[0], 0);
    expect_fail(tg_permutation(1, -1, 10, g, err, sizeof err), TG_ERR_INVALID, err, "epoch", NULL);
    free(a);
    free(b);
}

struct perm_job {
    int64_t *p;
    tg_status st;
};

static void *perm_thread(void *arg) {
    struct perm_job *j = arg;

    j->st = tg_permutation(7, 3, 5000, j->p, NULL, 0);
    return NULL;
}

/* The same permutation from any number of threads running at once. */
static void test_permutation_threads(void **state) {
    enum {
        T = 4,
        N = 5000
    };
    pthread_t th[T];
    struct perm_job jobs[T];
    int64_t *ref = malloc(N * sizeof *ref);

    (void)state;
    assert_non_null(ref);
    assert_int_equal(tg_permutation(7, 3, N, ref, NULL, 0), TG_OK);
    for (int t = 0; t < T; t++) {
        jobs[t].p = malloc(N * sizeof *ref);
        assert_non_null(jobs[t].p);
        assert_int_equal(pthread_create(&th[t], NULL, perm_thread, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_int_equal(jobs[t].st, TG_OK);
        assert_memory_equal(jobs[t].p, ref, N * sizeof *ref);
        free(jobs[t].p);
    }
    free(ref);
}

/* Rank slices of every global batch concatenate to the 1-rank batch. */
static void check_slices(tg_sampler_config base) {
    tg_sampler *one, *r[4];
    int64_t full[64], part[64], n1, n;
    char err[256];
    tg_sampler_config c = base;

    c.rank = 0;
    c.world = 1;
    assert_int_equal(tg_sampler_new(&c, &one, err, sizeof err), TG_OK);
    for (int w = 1; w <= 4; w *= 2) {
        for (int k = 0; k < w; k++) {
            c = base;
            c.rank = k;
            c.world = w;
            assert_int_equal(tg_sampler_new(&c, &r[k], err, sizeof err), TG_OK);
            assert_int_equal(tg_sampler_local_batch(r[k]), base.batch / w);
            assert_int_equal(tg_sampler_num_batches(r[k]), tg_sampler_num_batches(one));
        }
        for (int64_t e = 0; e < 3; e++)
            for (int64_t b = 0; b < tg_sampler_num_batches(one); b++) {
                int64_t got = 0;

                assert_int_equal(tg_sampler_batch(one, e, b, full, &n1, err, sizeof err), TG_OK);
                for (int k = 0; k < w; k++) {
                    assert_int_equal(tg_sampler_batch(r[k], e, b, part, &n, err, sizeof err),
                                     TG_OK);
                    assert_true(got + n <= n1);
                    if (n)
                        assert_memory_equal(part, full + got, (size_t)n * sizeof *part);
                    got += n;
                }
                assert_int_equal(got, n1);
            }
        for (int k = 0; k < w; k++)
            tg_sampler_free(r[k]);
    }
    tg_sampler_free(one);
}

static void test_rank_slices(void **state) {
    (void)state;
    check_slices(tg_sampler_config_train(103, 8, 5, 0, 1));
    check_slices(tg_sampler_config_train(64, 16, 9, 0, 1));
    check_slices(tg_sampler_config_eval(103, 8, 0, 1));
    check_slices(tg_sampler_config_eval(5, 8, 0, 1));
}

/* Evaluation sees every sample exactly once across the ranks, in order. */
static void check_eval(int64_t n, int64_t batch, int world) {
    int *seen = calloc((size_t)n, sizeof *seen);
    int64_t idx[64], cnt;
    char err[256];

    assert_non_null(seen);
    for (int r = 0; r < world; r++) {
        tg_sampler_config c = tg_sampler_config_eval(n, batch, r, world);
        tg_sampler *s;
        bool last = false;
        int64_t batches = 0;

        assert_int_equal(tg_sampler_new(&c, &s, err, sizeof err), TG_OK);
        assert_int_equal(tg_sampler_num_batches(s), (n + batch - 1) / batch);
        while (!last) {
            int64_t e, k;

            assert_int_equal(tg_sampler_next(s, idx, &cnt, &e, &k, &last, err, sizeof err), TG_OK);
            assert_int_equal(e, 0);
            assert_int_equal(k, batches++);
            for (int64_t i = 0; i < cnt; i++)
                seen[idx[i]]++;
        }
        assert_int_equal(tg_sampler_samples_consumed(s), n);
        tg_sampler_free(s);
    }
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(seen[i], 1);
    free(seen);
}

static void test_eval_coverage(void **state) {
    (void)state;
    check_eval(103, 8, 1);
    check_eval(103, 8, 2);
    check_eval(103, 8, 4);
    check_eval(103, 12, 3);
    check_eval(5, 8, 4);
    check_eval(1, 4, 4);
}

/* samples_consumed maps to (epoch, batch) and resumes under another world
 * size at exactly the same global batch. */
static void test_resume(void **state) {
    tg_sampler_config c4 = tg_sampler_config_train(103, 8, 11, 0, 4);
    tg_sampler_config c1 = tg_sampler_config_train(103, 8, 11, 0, 1);
    tg_sampler *s4, *s1;
    int64_t idx[8], full[8], n, e, k, pos;
    char err[256];

    (void)state;
    assert_int_equal(tg_sampler_new(&c4, &s4, err, sizeof err), TG_OK);
    assert_int_equal(tg_sampler_epoch_samples(s4), 96);
    /* 12 batches of 8 per epoch: 27 batches end in epoch 2, batch 3. */
    for (int i = 0; i < 27; i++)
        assert_int_equal(tg_sampler_next(s4, idx, &n, NULL, NULL, NULL, err, sizeof err), TG_OK);
    pos = tg_sampler_samples_consumed(s4);
    assert_int_equal(pos, 27 * 8);
    assert_int_equal(tg_sampler_locate(s4, pos, &e, &k, err, sizeof err), TG_OK);
    assert_int_equal(e, 2);
    assert_int_equal(k, 3);
    assert_int_equal(tg_sampler_next(s4, idx, &n, &e, &k, NULL, err, sizeof err), TG_OK);
    assert_int_equal(n, 2);

    assert_int_equal(tg_sampler_new(&c1, &s1, err, sizeof err), TG_OK);
    assert_int_equal(tg_sampler_set_samples_consumed(s1, pos, err, sizeof err), TG_OK);
    assert_int_equal(tg_sampler_next(s1, full, &n, &e, &k, NULL, err, sizeof err), TG_OK);
    assert_int_equal(e, 2);
    assert_int_equal(k, 3);
    assert_int_equal(n, 8);
    assert_memory_equal(idx, full, 2 * sizeof *idx);

    expect_fail(tg_sampler_set_samples_consumed(s1, pos + 3, err, sizeof err), TG_ERR_INVALID, err,
                "not on a batch boundary", "B = 8");
    expect_fail(tg_sampler_locate(s1, -8, &e, &k, err, sizeof err), TG_ERR_INVALID, err, "negative",
                NULL);
    assert_int_equal(tg_sampler_samples_consumed(s1), pos + 8);
    tg_sampler_free(s1);
    tg_sampler_free(s4);
}

static void test_config_errors(void **state) {
    tg_sampler_config c = tg_sampler_config_train(100, 10, 1, 0, 4);
    tg_sampler *s = (tg_sampler *)&c;
    char err[256];

    (void)state;
    expect_fail(tg_sampler_new(&c, &s, err, sizeof err), TG_ERR_INVALID, err, "B = 10", "w = 4");
    assert_null(s);
    c = tg_sampler_config_train(100, 8, 1, 4, 4);
    expect_fail(tg_sampler_new(&c, &s, err, sizeof err), TG_ERR_INVALID, err, "rank 4",
                "world size 4");
    c = tg_sampler_config_train(5, 8, 1, 0, 2);
    expect_fail(tg_sampler_new(&c, &s, err, sizeof err), TG_ERR_INVALID, err, "N = 5", "drop_last");
    c = tg_sampler_config_eval(0, 8, 0, 1);
    expect_fail(tg_sampler_new(&c, &s, err, sizeof err), TG_ERR_INVALID, err, "N = 0", NULL);
    c = tg_sampler_config_eval(20, 8, 0, 1);
    assert_int_equal(tg_sampler_new(&c, &s, err, sizeof err), TG_OK);
    expect_fail(tg_sampler_batch(s, 0, 3, (int64_t[8]){0}, &(int64_t){0}, err, sizeof err),
                TG_ERR_INVALID, err, "batch 3", NULL);
    tg_sampler_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_kat),          cmocka_unit_test(test_permutation),
        cmocka_unit_test(test_permutation_threads), cmocka_unit_test(test_rank_slices),
        cmocka_unit_test(test_eval_coverage),       cmocka_unit_test(test_resume),
        cmocka_unit_test(test_config_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
