/* The "data" group of train_cli.c: augmentation, validation sets and
 * regression targets from the command line, alone and on 2 ranks (included by train_cli_groups.h
 * after its helpers). */

/* `steps` steps of the cnn (with --augment crop,flip when aug) on np ranks into
 * folder d. */
static int train_aug(int np, const char *data, const char *d, const char *steps, bool aug,
                     bool resume, char **out) {
    /* SGD, as the ddp group: Adam's update g / sqrt(v) magnifies the
     * rounding differences of tiny gradients between world sizes. */
    const char *args[40] = {"train",
                            "--data",
                            data,
                            "--model",
                            "cnn",
                            "--max-steps",
                            steps,
                            "--batch-size",
                            "16",
                            "--schedule",
                            "constant",
                            "--log-every",
                            "1",
                            "--threads",
                            "1",
                            "--ckpt-dir",
                            P("%s", d),
                            "--metrics",
                            P("%s.jsonl", d),
                            "--optimizer",
                            "sgd"};
    int n = 21;
    if (aug) {
        args[n++] = "--augment";
        args[n++] = "crop,flip";
        args[n++] = "--augment-pad";
        args[n++] = "2";
    }
    if (resume) {
        args[n++] = "--resume";
        args[n++] = "auto";
    }
    args[n] = NULL;
    return run(np, out, args);
}

/* 1 rank == 2 ranks with augmentation, and it does change the run. */
static void augment_ranks(const char *data) {
    char *out;
    const int nps[2] = {0, 2};
    for (int i = 0; i < 2; i++) {
        char d[32];
        snprintf(d, sizeof d, "aug-%d", nps[i]);
        int code = train_aug(nps[i], data, d, "8", true, false, &out);
        CHECK(code == 0, "augment on %d: exit %d\n%s", nps[i], code, out);
        free(out);
    }
    int code = train_aug(0, data, "plain-0", "8", false, false, &out);
    CHECK(code == 0, "no augment: exit %d\n%s", code, out);
    free(out);
    double diff = ckpt_diff(CKPT("aug-0", 8), CKPT("aug-2", 8));
    printf("--augment crop,flip: 1 rank vs 2 ranks after 8 steps: largest relative difference "
           "%.3g\n",
           diff);
    CHECK(diff <= 1e-5, "augmented run on 2 ranks differs from 1 rank by %.3g", diff);
    double moved = ckpt_diff(CKPT("aug-0", 8), CKPT("plain-0", 8));
    printf("--augment crop,flip vs none after 8 steps: largest relative difference %.3g\n", moved);
    CHECK(moved > 1e-3, "augmentation changed nothing (%.3g)", moved);
}

/* 20 steps straight == 10 + resume + 10, bit-identical, with augmentation
 * (the draws continue at the restored epoch). */
static void augment_resume(int np, const char *data) {
    char a[32], b[32];
    snprintf(a, sizeof a, "augw-%d", np);
    snprintf(b, sizeof b, "augs-%d", np);
    char *out;
    int code = train_aug(np, data, a, "20", true, false, &out);
    CHECK(code == 0, "20 steps on %d: exit %d\n%s", np, code, out);
    free(out);
    code = train_aug(np, data, b, "10", true, false, &out);
    CHECK(code == 0, "10 steps on %d: exit %d\n%s", np, code, out);
    free(out);
    code = train_aug(np, data, b, "20", true, true, &out);
    CHECK(code == 0 && has(out, "resumed from"), "resume on %d: exit %d\n%s", np, code, out);
    free(out);
    double diff = ckpt_diff(CKPT(a, 20), CKPT(b, 20));
    printf("--augment crop,flip on %d rank(s): 20 steps vs 10 + resume + 10: largest difference "
           "%.3g\n",
           np ? np : 1, diff);
    CHECK(diff == 0, "%d ranks: resumed augmented run differs by %.3g", np, diff);
    char *ma = slurp(P("%s.jsonl", a)), *mb = slurp(P("%s.jsonl", b));
    char *sa = lines_with(ma, "\"event\":\"step\""), *sb = lines_with(mb, "\"event\":\"step\"");
    CHECK(strcmp(sa, sb) == 0 && strlen(sa) > 0, "%d ranks: loss lines differ:\n%s\nvs\n%s", np, sa,
          sb);
    free(ma);
    free(mb);
    free(sa);
    free(sb);
}

/* --val-fraction on 1 and 2 ranks: the same held-out set (the same val
 * loss), its fields in every epoch event, the test split only at the end. */
static void val_fraction(const char *data) {
    double val[2] = {NAN, NAN};
    const int nps[2] = {0, 2};
    for (int i = 0; i < 2; i++) {
        char *out;
        const char *m = P("valf-%d.jsonl", nps[i]);
        int code = run(nps[i], &out,
                       ARGS("train", "--data", data, "--val-fraction", "0.25", "--max-steps", "24",
                            "--batch-size", "16", "--threads", "1", "--eval-batch-size", "10",
                            "--metrics", m));
        CHECK(code == 0, "--val-fraction on %d: exit %d\n%s", nps[i], code, out);
        CHECK(has(out, "(192 train / 50 test / 64 val)"), "%s", out);
        CHECK(has(out, "epoch 1/2 done: train_loss") && has(out, "val_loss") && has(out, "val_acc"),
              "%s", out);
        free(out);
        char *t = slurp(m);
        char *ep = lines_with(t, "\"event\":\"epoch\"");
        char *first = strstr(ep, "\"epoch\":1,");
        CHECK(first && strstr(first, "\"test_loss\":null") && strstr(first, "\"val_loss\":") &&
                  strstr(first, "\"val_acc\":"),
              "epoch 1 event: %s", ep);
        val[i] = first ? number_after(first, "\"val_loss\":") : NAN;
        char *end = strstr(t, "{\"event\":\"end\"");
        CHECK(end && !strstr(end, "\"test_loss\":null") && strstr(end, "\"val_acc\":"), "%s", t);
        free(ep);
        free(t);
    }
    printf("--val-fraction 0.25: epoch 1 val_loss %.9g on 1 rank, %.9g on 2 ranks\n", val[0],
           val[1]);
    CHECK(fabs(val[0] - val[1]) <= 1e-5 * fabs(val[0]), "val_loss %.9g vs %.9g", val[0], val[1]);
}

/* A "val" split of its own, and the errors of the options. */
static void val_split_and_errors(const char *data) {
    hid_t f = H5Fopen(data, H5F_ACC_RDWR, H5P_DEFAULT);
    write_split(f, "val", 30, 500);
    H5Fclose(f);
    char *out;
    int code = run(2, &out,
                   ARGS("train", "--data", data, "--val-split", "val", "--max-steps", "32",
                        "--batch-size", "16", "--threads", "1", "--metrics", P("vals.jsonl")));
    CHECK(code == 0 && has(out, "(256 train / 50 test / 30 val)"), "--val-split: exit %d\n%s", code,
          out);
    free(out);
    char *t = slurp(P("vals.jsonl"));
    CHECK(has(t, "\"val_loss\":") && has(t, "\"test_loss\":null"), "%s", t);
    free(t);
    code = run(0, &out, ARGS("train", "--data", data, "--augment", "crop,spin"));
    CHECK(code == 2 && has(out, "crop,spin") && has(out, "crop,flip"), "exit %d\n%s", code, out);
    free(out);
    code =
        run(0, &out, ARGS("train", "--data", data, "--val-split", "val", "--val-fraction", "0.1"));
    CHECK(code == 2 && has(out, "--val-split and --val-fraction exclude each other"), "exit %d\n%s",
          code, out);
    free(out);
    code = run(0, &out, ARGS("train", "--data", data, "--val-split", "train"));
    CHECK(code == 2 && has(out, "--val-split train is the training split"), "exit %d\n%s", code,
          out);
    free(out);
    code = run(0, &out, ARGS("train", "--data", data, "--val-split", "nosuch", "--threads", "1"));
    CHECK(code == 3 && has(out, "split group /nosuch not found"), "exit %d\n%s", code, out);
    free(out);
    code = run(0, &out, ARGS("train", "--data", data, "--val-fraction", "0.999", "--threads", "1"));
    CHECK(code != 0 && has(out, "holds out 256 of the 256 samples of split train"), "exit %d\n%s",
          code, out);
    free(out);
}

/* Regression: f32 targets y (N, 2), two linear functions of x; the mlp
 * with --loss auto (MSE) on 1 and 2 ranks ends equal to float rounding,
 * and reports test_mse and test_mae. */
static void regression_ranks(void) {
    const char *path = P("reg.h5");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const char *names[2] = {"train", "test"};
    const int ns[2] = {256, 50};
    for (int sp = 0; sp < 2; sp++) {
        int n = ns[sp];
        hid_t g = H5Gcreate2(f, names[sp], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        hsize_t xd[4] = {(hsize_t)n, 1, 8, 8}, yd[2] = {(hsize_t)n, 2};
        float *x = malloc(sizeof(float) * (size_t)n * 64),
              *y = malloc(sizeof(float) * (size_t)n * 2);
        for (int i = 0; i < n; i++) {
            y[2 * i] = y[2 * i + 1] = 0;
            for (int j = 0; j < 64; j++) {
                x[i * 64 + j] = (float)((i * 31 + j * 7 + sp * 5) % 17) / 8.0f - 1.0f;
                y[2 * i] += (j < 32 ? 0.05f : -0.05f) * x[i * 64 + j];
                y[2 * i + 1] += (j % 5 == 0 ? 0.1f : 0.0f) * x[i * 64 + j];
            }
        }
        hid_t s4 = H5Screate_simple(4, xd, NULL);
        hid_t d = H5Dcreate2(g, "x", H5T_IEEE_F32LE, s4, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
        H5Dclose(d);
        H5Sclose(s4);
        hid_t s2 = H5Screate_simple(2, yd, NULL);
        d = H5Dcreate2(g, "y", H5T_IEEE_F32LE, s2, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, y);
        H5Dclose(d);
        H5Sclose(s2);
        H5Gclose(g);
        free(x);
        free(y);
    }
    H5Fclose(f);
    const int nps[2] = {0, 2};
    double mse[2] = {NAN, NAN};
    for (int i = 0; i < 2; i++) {
        char *out, d[32];
        snprintf(d, sizeof d, "reg-%d", nps[i]);
        int code = run(nps[i], &out,
                       ARGS("train", "--data", path, "--optimizer", "sgd", "--max-steps", "32",
                            "--batch-size", "16", "--threads", "1", "--ckpt-dir", P("%s", d),
                            "--metrics", P("%s.jsonl", d)));
        CHECK(code == 0 && has(out, "test mse: "), "regression on %d: exit %d\n%s", nps[i], code,
              out);
        free(out);
        char *t = slurp(P("%s.jsonl", d));
        const char *end = strstr(t, "{\"event\":\"end\"");
        mse[i] = end ? number_after(end, "\"test_mse\":") : NAN;
        CHECK(end && has(end, "\"test_mae\":") && has(end, "\"test_acc\":null"), "%s", t);
        free(t);
    }
    double diff = ckpt_diff(CKPT("reg-0", 32), CKPT("reg-2", 32));
    printf("regression (MSE): 1 rank vs 2 ranks after 32 steps: largest relative difference %.3g, "
           "test mse %.9g vs %.9g\n",
           diff, mse[0], mse[1]);
    CHECK(diff <= 1e-5, "regression on 2 ranks differs from 1 rank by %.3g", diff);
    CHECK(fabs(mse[0] - mse[1]) <= 1e-5 * fabs(mse[0]), "test mse %.9g vs %.9g", mse[0], mse[1]);
}

/* --val-fraction with --augment across a resume: 20 steps straight and
 * 10 + resume + 10 on 2 ranks give bit-identical checkpoints (the same
 * held-out set, the same draws). */
static void val_resume(const char *data) {
    const char *dirs[2] = {"valr-whole", "valr-split"};
    const char *steps[3] = {"20", "10", "20"};
    for (int r = 0; r < 3; r++) {
        char *out;
        const char *d = dirs[r == 0 ? 0 : 1];
        const char *args[40] = {"train",
                                "--data",
                                data,
                                "--max-steps",
                                steps[r],
                                "--batch-size",
                                "16",
                                "--threads",
                                "1",
                                "--val-fraction",
                                "0.25",
                                "--augment",
                                "crop,flip",
                                "--ckpt-dir",
                                P("%s", d),
                                "--log-every",
                                "1",
                                "--metrics",
                                P("%s.jsonl", d),
                                "--schedule",
                                "constant"};
        int n = 21;
        if (r == 2) {
            args[n++] = "--resume";
            args[n++] = "auto";
        }
        args[n] = NULL;
        int code = run(2, &out, args);
        CHECK(code == 0, "val resume run %d: exit %d\n%s", r, code, out);
        free(out);
    }
    double diff = ckpt_diff(CKPT("valr-whole", 20), CKPT("valr-split", 20));
    printf("--val-fraction 0.25 --augment crop,flip on 2 ranks: 20 steps vs 10 + resume + 10: "
           "largest difference %.3g\n",
           diff);
    CHECK(diff == 0, "resumed run with a validation hold-out differs by %.3g", diff);
    char *ma = slurp(P("valr-whole.jsonl")), *mb = slurp(P("valr-split.jsonl"));
    char *ea = lines_with(ma, "\"event\":\"end\""), *eb = lines_with(mb, "\"event\":\"end\"");
    /* The last end event's val figures (before the timings): the split run
     * has two end events, one per part. */
    char *va = strstr(ea, "\"val_loss\""), *vb = NULL;
    for (char *q = eb; (q = strstr(q, "\"val_loss\"")) != NULL; q++)
        vb = q;
    CHECK(va && vb && strncmp(va, vb, 60) == 0, "val figures differ:\n%s\nvs\n%s", ea, eb);
    free(ma);
    free(mb);
    free(ea);
    free(eb);
}

static void group_data(void) {
    const char *data = make_data("d.h5", 256, 50);
    augment_ranks(data);
    augment_resume(0, data);
    augment_resume(2, data);
    val_fraction(data);
    val_split_and_errors(data);
    val_resume(data);
    regression_ranks();
}
