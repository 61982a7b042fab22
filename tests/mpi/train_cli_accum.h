/* The "accum" group of train_cli.c: gradient accumulation and the buffer
 * broadcast (included by train_cli_groups.h after its helpers). */

/* 1 rank x --accum-steps 4, 2 ranks x 2 and 4 ranks x 1 take the same steps:
 * the same global batch cut into the same four quarters, whose gradients
 * add up before one optimizer step. */
static void accum_equivalence(const char *data, const char *model) {
    const int nps[3] = {0, 2, 4};
    const char *accums[3] = {"4", "2", "1"};
    for (int i = 0; i < 3; i++) {
        char *out, ref[64], d[64];
        snprintf(ref, sizeof ref, "acc-%s-0", model);
        snprintf(d, sizeof d, "acc-%s-%d", model, nps[i]);
        int code = run(nps[i], &out,
                       ARGS("train", "--data", data, "--model", model, "--optimizer", "sgd",
                            "--max-steps", "4", "--batch-size", "16", "--log-every", "1",
                            "--threads", "1", "--accum-steps", accums[i], "--ckpt-dir",
                            P("%s", d)));
        CHECK(code == 0, "%s, %d ranks x accum %s: exit %d\n%s", model, nps[i], accums[i], code,
              out);
        free(out);
        if (i == 0)
            continue;
        double diff = ckpt_diff(CKPT(ref, 4), CKPT(d, 4));
        printf("%s: 1 rank x accum 4 vs %d ranks x accum %s after 4 steps: largest relative "
               "difference %.3g\n",
               model, nps[i], accums[i], diff);
        CHECK(diff <= 1e-5, "%s: 1 rank x accum 4 differs from %d ranks x accum %s by %.3g",
              model, nps[i], accums[i], diff);
    }
}

/* With batch norm, every rank takes rank 0's running statistics before each
 * forward and each evaluation: the test loss the 2-rank run reports is the
 * loss of its checkpoint (rank 0's model) evaluated alone. */
static void buffers_broadcast(const char *data) {
    char *out;
    /* An evaluation batch of 10 gives both ranks test samples to score. */
    int code = run(2, &out,
                   ARGS("train", "--data", data, "--model", "cnn-bn", "--max-steps", "20",
                        "--batch-size", "32", "--eval-batch-size", "10", "--threads", "1",
                        "--ckpt-dir", P("bn2"), "--metrics", P("bn2.jsonl")));
    CHECK(code == 0, "cnn-bn on 2 ranks: exit %d\n%s", code, out);
    free(out);
    /* The "end" event's test loss, with all its digits. */
    char *m = slurp(P("bn2.jsonl"));
    const char *end = strstr(m, "{\"event\":\"end\"");
    double trained = end ? number_after(end, "\"test_loss\":") : NAN;
    free(m);
    code = run(0, &out, ARGS("eval", "--ckpt", CKPT("bn2", 20), "--data", data, "--threads", "1"));
    CHECK(code == 0, "eval: exit %d\n%s", code, out);
    double evaluated = number_after(out, "loss ");
    free(out);
    printf("cnn-bn on 2 ranks: reported test loss %.6f, its checkpoint evaluated alone %.6f\n",
           trained, evaluated);
    /* eval prints 6 decimals. */
    CHECK(fabs(trained - evaluated) <= 1e-6 + 1e-6 * fabs(evaluated),
          "cnn-bn on 2 ranks reported test loss %.6f, its checkpoint evaluates to %.6f", trained,
          evaluated);
}

/* The bucket capacities of the command line: the mlp (0.94 MB of
 * gradients) gets two buckets by default and one with --bucket-mb 25
 * --first-bucket-mb 1 (PyTorch's capacities). Counted in the trace. */
static int buckets_in_trace(const char *data, const char *name, const char *bucket,
                            const char *first) {
    char *out;
    int code = run(2, &out, ARGS("train", "--data", data, "--max-steps", "3", "--batch-size",
                                 "16", "--threads", "1", "--trace", P("%s.json", name),
                                 bucket ? "--bucket-mb" : NULL, bucket, "--first-bucket-mb",
                                 first));
    CHECK(code == 0, "%s: exit %d\n%s", name, code, out);
    free(out);
    char *t = slurp(P("%s.rank0.json", name));
    int n = 0;
    for (int b = 0; b < 8; b++) {
        char key[48];
        snprintf(key, sizeof key, "\"allreduce bucket %d\"", b);
        n += has(t, key);
    }
    free(t);
    return n;
}

static void group_accum(void) {
    const char *data = make_data("d.h5", 256, 50);
    int nb = buckets_in_trace(data, "lay-default", NULL, NULL);
    CHECK(nb == 2, "the mlp has %d buckets by default, expected 2", nb);
    nb = buckets_in_trace(data, "lay-torch", "25", "1");
    CHECK(nb == 1, "the mlp has %d buckets with --bucket-mb 25 --first-bucket-mb 1", nb);
    accum_equivalence(data, "mlp");
    accum_equivalence(data, "cnn");
    buffers_broadcast(data);
    char *out;
    int code = run(2, &out, ARGS("train", "--data", data, "--batch-size", "12",
                                 "--accum-steps", "4", "--threads", "1"));
    CHECK(code == 2, "batch 12 on 2 ranks x accum 4: exit %d", code);
    CHECK(has(out, "--batch-size 12 (the global batch) is not divisible by 8 (2 ranks x "
                   "--accum-steps 4)"),
          "%s", out);
    free(out);
    code = run(0, &out, ARGS("train", "--data", data, "--accum-steps", "0"));
    CHECK(code == 2, "--accum-steps 0: exit %d\n%s", code, out);
    free(out);
}
