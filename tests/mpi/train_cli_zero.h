/* The "zero" group of train_cli.c: --zero 1 (ZeRO stage 1), included by
 * train_cli_groups.h after its helpers and train_cli_syncbn.h. */

/* model for `steps` steps of a global batch of 16 at a constant learning
 * rate (so that a run cut short is the start of a longer one), checkpoints
 * in folder d every 2 steps; np 0 runs alone. x: more options, NULL-ended. */
static int z_run(int np, const char *data, const char *model, const char *optim, const char *d,
                 const char *steps, const char *const *x, char **out) {
    const char *a[48] = {"train", "--data", data, "--model", model, "--optimizer", optim,
                         "--max-steps", steps, "--batch-size", "16", "--log-every", "1",
                         "--threads", "1", "--schedule", "constant", "--ckpt-dir", P("%s", d),
                         "--ckpt-every", "2", "--keep", "0", "--metrics", P("%s.jsonl", d)};
    int n = 25;
    for (int i = 0; x && x[i] && n < 46; i++)
        a[n++] = x[i];
    a[n] = NULL;
    return run(np, out, a);
}
#define X(...) ((const char *const[]){__VA_ARGS__, NULL})

/* MiB figures of the start-up line "optimizer state: A MiB on rank 0, at
 * most B MiB on any rank (ZeRO-1 over N ranks; C MiB unsharded)". */
static void z_memory(const char *out, double *rank0, double *unsharded) {
    *rank0 = number_after(out, "optimizer state: ");
    *unsharded = number_after(out, "ranks; ");
}

/* --zero 1 on 2 and 4 ranks against the same run without it and against 1
 * rank, after 4 steps: every tensor (parameters and the optimizer state that
 * rank 0 gathered into the checkpoint) and every step's loss. */
static void zero_equivalence(const char *data, const char *model, const char *optim,
                             const char *extra) {
    char *out, ref[64];
    const char *tag = extra ? "-clip" : "";
    snprintf(ref, sizeof ref, "z-%s-%s%s-1", model, optim, tag);
    int code = z_run(0, data, model, optim, ref, "4", X(extra, "0.01"), &out);
    CHECK(code == 0, "%s %s alone: exit %d\n%s", model, optim, code, out);
    free(out);
    const int nps[2] = {2, 4};
    for (int i = 0; i < 2; i++) {
        char z[64], plain[64];
        snprintf(z, sizeof z, "z-%s-%s%s-%dz", model, optim, tag, nps[i]);
        snprintf(plain, sizeof plain, "z-%s-%s%s-%d", model, optim, tag, nps[i]);
        code = z_run(nps[i], data, model, optim, z, "4", X("--zero", "1", extra, "0.01"), &out);
        CHECK(code == 0, "%s %s --zero 1 on %d ranks: exit %d\n%s", model, optim, nps[i], code,
              out);
        double r0, whole;
        z_memory(out, &r0, &whole);
        printf("zero: %s %s on %d ranks: optimizer state %.3f MiB on rank 0 of %.3f MiB\n", model,
               optim, nps[i], r0, whole);
        CHECK(r0 > 0 && fabs(r0 * nps[i] / whole - 1) < 0.1,
                  "%s %s: rank 0 holds %.3f of %.3f MiB on %d ranks", model, optim, r0, whole,
                  nps[i]);
        free(out);
        code = z_run(nps[i], data, model, optim, plain, "4", X(extra, "0.01"), &out);
        CHECK(code == 0, "%s %s on %d ranks: exit %d\n%s", model, optim, nps[i], code, out);
        free(out);
        double dz = ckpt_diff(CKPT(plain, 4), CKPT(z, 4)), d1 = ckpt_diff(CKPT(ref, 4), CKPT(z, 4));
        double lz = loss_diff(plain, z);
        printf("zero: %s %s%s on %d ranks after 4 steps: --zero 1 vs without %.3g, vs 1 rank "
               "%.3g; losses vs without %.3g\n",
               model, optim, extra ? " --clip-grad-norm 0.01" : "", nps[i], dz, d1, lz);
        /* Adam divides by sqrt(v): 1 rank's rounding differences grow there. */
        double tol1 = strcmp(optim, "sgd") == 0 ? 1e-5 : 1e-4;
        /* Clipping: the norm is summed shard by shard across the ranks. */
        double tolz = extra ? 1e-5 : 1e-6;
        CHECK(dz <= tolz && d1 <= tol1 && lz <= tolz,
              "%s %s on %d ranks: --zero 1 differs from the all-reduce run by %.3g, from 1 rank "
              "by %.3g, losses by %.3g",
              model, optim, nps[i], dz, d1, lz);
        if (extra) {
            /* The clipping did act: the same run unclipped went elsewhere. */
            char unclipped[64];
            snprintf(unclipped, sizeof unclipped, "z-%s-%s-%dz", model, optim, nps[i]);
            double dc = ckpt_diff(CKPT(unclipped, 4), CKPT(z, 4));
            printf("zero: clipped vs unclipped on %d ranks: %.3g\n", nps[i], dc);
            CHECK(dc > 1e-2, "--clip-grad-norm 0.01 changed nothing (%.3g)", dc);
        }
    }
}

/* A --zero 1 run on 2 ranks, stopped after step 2 and resumed from its
 * checkpoint on 2 ranks (bit-identical), on 4 with --zero 1 and on 1 (the
 * file has the whole optimizer state): each ends equal to the run that was
 * not interrupted. */
static void zero_resume(const char *data) {
    char *out;
    int code = z_run(2, data, "mlp", "adamw", "zr-full", "4", X("--zero", "1"), &out);
    CHECK(code == 0, "zero, 4 steps on 2 ranks: exit %d\n%s", code, out);
    free(out);
    const int nps[3] = {2, 4, 0};
    for (int i = 0; i < 3; i++) {
        char d[64];
        snprintf(d, sizeof d, "zr-%d", nps[i]);
        code = z_run(2, data, "mlp", "adamw", d, "2", X("--zero", "1"), &out);
        CHECK(code == 0, "zero, 2 steps on 2 ranks: exit %d\n%s", code, out);
        free(out);
        code = z_run(nps[i], data, "mlp", "adamw", d, "4", X("--zero", "1", "--resume", "auto"),
                     &out);
        CHECK(code == 0 && has(out, "resumed from"), "zero resume on %d ranks: exit %d\n%s",
              nps[i], code, out);
        free(out);
        double diff = ckpt_diff(CKPT("zr-full", 4), CKPT(d, 4));
        printf("zero: saved on 2 ranks at step 2, resumed on %d: after step 4 largest relative "
               "difference to the uninterrupted run %.3g\n",
               nps[i] ? nps[i] : 1, diff);
        if (nps[i] == 2)
            CHECK(diff == 0, "zero resumed on 2 ranks is not bit-identical: %.3g", diff);
        else
            CHECK(diff <= 1e-5, "zero resumed on %d ranks differs by %.3g", nps[i], diff);
    }
    /* A checkpoint of another optimizer: refused, naming the mismatch. */
    code = z_run(2, data, "mlp", "sgd", "zr-sgd", "2", X("--zero", "1"), &out);
    free(out);
    code = run(2, &out, ARGS("train", "--data", data, "--model", "mlp", "--optimizer", "adamw",
                             "--max-steps", "4", "--batch-size", "16", "--threads", "1",
                             "--ckpt-dir", P("zr-sgd"), "--zero", "1", "--resume", "auto"));
    CHECK(code == 3 && has(out, "optimizer state tensors, this run's optimizer keeps"),
          "adamw resuming an sgd checkpoint with --zero 1: exit %d\n%s", code, out);
    free(out);
}

static void group_zero(void) {
    const char *data = make_data("d.h5", 256, 50);
    zero_equivalence(data, "mlp", "adamw", NULL);
    zero_equivalence(data, "mlp", "sgd", NULL);
    zero_equivalence(data, "cnn", "adam", NULL);
    zero_equivalence(data, "mlp", "adamw", "--clip-grad-norm");
    zero_resume(data);
    /* With gradient accumulation (no_sync micro-steps) and SyncBatchNorm. */
    char *out;
    for (int z = 0; z < 2; z++) {
        int code = z_run(2, data, "cnn-bn", "adamw", z ? "zc-z" : "zc", "4",
                         X("--accum-steps", "2", "--sync-bn", z ? "--zero" : NULL, "1"), &out);
        CHECK(code == 0, "cnn-bn --accum-steps 2 --sync-bn%s: exit %d\n%s", z ? " --zero 1" : "",
              code, out);
        free(out);
    }
    double dc = ckpt_diff(CKPT("zc", 4), CKPT("zc-z", 4));
    printf("zero: cnn-bn --accum-steps 2 --sync-bn on 2 ranks, --zero 1 vs without: %.3g\n", dc);
    CHECK(dc == 0, "--zero 1 with accumulation and sync-bn differs by %.3g", dc);
    int code = run(0, &out, ARGS("train", "--data", data, "--zero", "2"));
    CHECK(code == 2 && has(out, "--zero"), "--zero 2: exit %d\n%s", code, out);
    free(out);
}
