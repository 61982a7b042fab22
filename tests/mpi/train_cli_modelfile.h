/* The model-file group of train_cli.c (included once, after its groups):
 * a model file with a residual add, a concat and pooling trains the same on
 * 1, 2 and 4 ranks (no batch norm, whose per-rank statistics differ by
 * design, as PyTorch DDP's without SyncBatchNorm), and its checkpoint from 2
 * ranks resumes on 4 without --model and evaluates under 2 ranks. */

static void group_modelfile(void) {
    const char *data = make_data("m.h5", 256, 50);
    char model[1024];
    snprintf(model, sizeof model, "%s", P("net.ini"));
    FILE *f = fopen(model, "w");
    CHECK(f != NULL, "cannot write %s", model);
    fputs("[input]\nname = img\n[conv2d]\nname = c1\nout = 6\nkernel = 3\npadding = 1\n"
          "[relu]\n[conv2d]\nname = c2\nout = 6\nkernel = 3\npadding = 1\n"
          "[add]\nname = res\ninputs = relu1\n[concat]\ninputs = img\n"
          "[maxpool]\nkernel = 2\n[flatten]\n[linear]\nname = fc\nout = classes\n",
          f);
    fclose(f);
    char *out;
    int code;
    const int nps[3] = {0, 2, 4};
    for (int i = 0; i < 3; i++) {
        char d[32];
        snprintf(d, sizeof d, "mf-np%d", nps[i]);
        code = run(nps[i], &out,
                   ARGS("train", "--data", data, "--model", model, "--optimizer", "sgd",
                        "--max-steps", "3", "--batch-size", "16", "--threads", "1",
                        "--check-replicas", "--ckpt-dir", P("%s", d)));
        CHECK(code == 0, "model file on %d ranks: exit %d\n%s", nps[i], code, out);
        free(out);
        if (i) {
            double diff = ckpt_diff(CKPT("mf-np0", 3), CKPT(d, 3));
            printf("model file: %d ranks vs alone after 3 steps: largest relative difference "
                   "%.3g\n",
                   nps[i], diff);
            CHECK(diff <= 1e-5, "model file: %d ranks differ from 1 rank by %.3g", nps[i], diff);
        }
    }
    code = run(2, &out,
                   ARGS("train", "--data", data, "--model", model, "--max-steps", "4",
                        "--batch-size", "16", "--threads", "1", "--ckpt-dir", P("mf")));
    CHECK(code == 0, "model file on 2 ranks: exit %d\n%s", code, out);
    free(out);
    code = run(4, &out,
               ARGS("train", "--data", data, "--max-steps", "8", "--batch-size", "16",
                    "--threads", "1", "--ckpt-dir", P("mf"), "--resume", "auto"));
    CHECK(code == 0 && has(out, "resumed from") && has(out, "(842 parameters)"),
          "resume on 4 ranks without --model: exit %d\n%s", code, out);
    free(out);
    code = run(2, &out, ARGS("eval", "--ckpt", CKPT("mf", 8), "--data", data, "--threads", "1"));
    CHECK(code == 0 && has(out, "accuracy"), "eval on 2 ranks: exit %d\n%s", code, out);
    free(out);
}
