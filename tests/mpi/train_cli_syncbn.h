/* The "syncbn" group of train_cli.c: --sync-bn (SyncBatchNorm), included by
 * train_cli_groups.h after its helpers. */

/* cnn-bn for 4 steps of a global batch of 16 with the tensors of its last
 * checkpoint in folder d; np 0 runs alone. extra: one more option or NULL. */
static int bn_run(int np, const char *data, const char *d, const char *extra, char **out) {
    return run(np, out,
               ARGS("train", "--data", data, "--model", "cnn-bn", "--optimizer", "sgd",
                    "--max-steps", "4", "--batch-size", "16", "--log-every", "1", "--threads",
                    "1", "--ckpt-dir", P("%s", d), "--metrics", P("%s.jsonl", d), extra));
}

/* As ckpt_diff, but the biases of conv1, conv2 and fc1 feed a batch norm,
 * which removes any constant: their gradient is 0 in exact arithmetic, and
 * their momentum buffers hold weight decay plus rounding noise of the order
 * of 1e-8, whose difference relative to the buffer (about 4e-5) means
 * nothing. Those three are held to an absolute 1e-7 instead (*abs_out). */
static double bn_ckpt_diff(const char *a, const char *b, double *abs_out) {
    tensors ta, tb;
    *abs_out = 1e30;
    if (!read_ckpt(a, &ta) || !read_ckpt(b, &tb))
        return 1e30;
    double worst = ta.n == tb.n ? 0 : 1e30, worst_abs = 0;
    for (int i = 0; i < ta.n && i < tb.n; i++) {
        if (strcmp(ta.names[i], tb.names[i]) != 0 || ta.len[i] != tb.len[i]) {
            worst = 1e30;
            continue;
        }
        double mx = 0, d = 0;
        for (long long k = 0; k < ta.len[i]; k++) {
            mx = fmax(mx, fabs(ta.vals[i][k]));
            d = fmax(d, fabs(ta.vals[i][k] - tb.vals[i][k]));
        }
        const char *n = ta.names[i];
        if (!strcmp(n, "optim.conv1.bias.momentum_buffer") ||
            !strcmp(n, "optim.conv2.bias.momentum_buffer") ||
            !strcmp(n, "optim.fc1.bias.momentum_buffer"))
            worst_abs = fmax(worst_abs, d);
        else
            worst = fmax(worst, mx > 0 ? d / mx : d);
    }
    free_ckpt(&ta);
    free_ckpt(&tb);
    *abs_out = worst_abs;
    return worst;
}

/* The loss of every step line of a metrics file, at most n; returns the count. */
static int step_losses(const char *path, double *loss, int n) {
    char *m = slurp(path);
    int k = 0;
    for (const char *at = m; k < n && (at = strstr(at, "{\"event\":\"step\"")); at++)
        loss[k++] = number_after(at, "\"loss\":");
    free(m);
    return k;
}

/* The largest relative difference of the 4 step losses of two runs. */
static double loss_diff(const char *a, const char *b) {
    double la[4], lb[4];
    if (step_losses(P("%s.jsonl", a), la, 4) != 4 || step_losses(P("%s.jsonl", b), lb, 4) != 4)
        return 1e30;
    double worst = 0;
    for (int i = 0; i < 4; i++)
        worst = fmax(worst, fabs(la[i] - lb[i]) / fmax(fabs(la[i]), 1e-30));
    return worst;
}

static void group_syncbn(void) {
    const char *data = make_data("d.h5", 256, 50);
    char *out;
    int code = bn_run(0, data, "sb-1", "--sync-bn", &out);
    CHECK(code == 0, "cnn-bn --sync-bn alone: exit %d\n%s", code, out);
    free(out);
    code = bn_run(0, data, "plain-1", NULL, &out);
    CHECK(code == 0, "cnn-bn alone: exit %d\n%s", code, out);
    free(out);
    /* Alone, SyncBatchNorm is the fused row's arithmetic in another order. */
    double da, d = bn_ckpt_diff(CKPT("plain-1", 4), CKPT("sb-1", 4), &da);
    printf("syncbn: 1 rank with and without --sync-bn: largest relative difference %.3g "
           "(pre-bn bias momenta: %.3g absolute)\n",
           d, da);
    CHECK(d <= 1e-5 && da <= 1e-7, "1 rank: --sync-bn differs from the fused batch norm by %.3g "
                                   "(%.3g absolute)", d, da);
    const int nps[2] = {2, 4};
    for (int i = 0; i < 2; i++) {
        char sb[32], plain[32];
        snprintf(sb, sizeof sb, "sb-%d", nps[i]);
        snprintf(plain, sizeof plain, "plain-%d", nps[i]);
        code = bn_run(nps[i], data, sb, "--sync-bn", &out);
        CHECK(code == 0, "cnn-bn --sync-bn on %d ranks: exit %d\n%s", nps[i], code, out);
        free(out);
        code = bn_run(nps[i], data, plain, NULL, &out);
        CHECK(code == 0, "cnn-bn on %d ranks: exit %d\n%s", nps[i], code, out);
        free(out);
        double dsa, ds = bn_ckpt_diff(CKPT("sb-1", 4), CKPT(sb, 4), &dsa);
        double dl = loss_diff("sb-1", sb);
        double dpa, dp = bn_ckpt_diff(CKPT("plain-1", 4), CKPT(plain, 4), &dpa);
        printf("syncbn: %d ranks vs 1 after 4 steps: tensors %.3g (pre-bn bias momenta %.3g "
               "absolute), step losses %.3g with --sync-bn; tensors %.3g without\n",
               nps[i], ds, dsa, dl, dp);
        CHECK(ds <= 1e-5 && dsa <= 1e-7, "--sync-bn: %d ranks differ from 1 by %.3g (%.3g "
                                         "absolute)", nps[i], ds, dsa);
        CHECK(dl <= 1e-5, "--sync-bn: %d ranks' losses differ from 1's by %.3g", nps[i], dl);
        /* Without it each rank normalises by its own quarter or half. */
        CHECK(dp >= 1e-3, "without --sync-bn %d ranks differ from 1 by only %.3g", nps[i], dp);
    }
    /* One sample per rank: the batch-norm layer after fc1 has one value per
     * channel on each rank, enough only when the ranks pool their batch. */
    code = run(4, &out, ARGS("train", "--data", data, "--model", "cnn-bn", "--max-steps", "2",
                             "--batch-size", "4", "--threads", "1", "--sync-bn"));
    CHECK(code == 0, "--sync-bn, one sample on each of 4 ranks: exit %d\n%s", code, out);
    free(out);
    code = run(4, &out, ARGS("train", "--data", data, "--model", "cnn-bn", "--max-steps", "2",
                             "--batch-size", "4", "--threads", "1"));
    CHECK(code != 0 && has(out, "more than 1 value per channel"),
          "one sample on each of 4 ranks without --sync-bn: exit %d\n%s", code, out);
    free(out);
    code = run(0, &out, ARGS("train", "--data", data, "--model", "mlp", "--sync-bn"));
    CHECK(code == 2 && has(out, "--sync-bn needs a model with batch norm, got --model "
                                "mlp"),
          "--sync-bn with the mlp: exit %d\n%s", code, out);
    free(out);
}
