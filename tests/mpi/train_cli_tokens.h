/* The token group of train_cli.c (included once, after its groups): a
 * bigram language model (a model file over windows of tokens) on text
 * converted by `convert text` trains the same on 1 and 2 ranks (every
 * step's loss and the checkpoint within float rounding: the windows of a
 * global batch depend on the seed and the step alone, each rank taking its
 * slice), and `eval --ckpt` under 2 ranks reports the loss of 1 rank. */

/* The step losses of a metrics file, in order (at most max). */
static int token_step_losses(const char *metrics, double *loss, int max) {
    char *text = slurp(metrics);
    int n = 0;
    for (const char *p = text; n < max && (p = strstr(p, "\"event\":\"step\"")) != NULL; p++) {
        const char *l = strstr(p, "\"loss\":");
        if (l)
            loss[n++] = strtod(l + 7, NULL);
    }
    free(text);
    return n;
}

static void group_tokens(void) {
    const char *txt = P("lm.txt");
    FILE *f = fopen(txt, "w");
    CHECK(f != NULL, "cannot write %s", txt);
    uint32_t s = 7;
    static const char *const words[8] = {"the", "cat", "sat", "on", "a", "mat", "and", "ran"};
    for (int i = 0; i < 4000; i++) {
        s = s * 1103515245u + 12345u;
        fprintf(f, "%s ", words[(s >> 16) % 8]);
    }
    fclose(f);
    char data[1024], model[1024];
    snprintf(data, sizeof data, "%s", P("lm.h5"));
    snprintf(model, sizeof model, "%s", P("bigram.ini"));
    f = fopen(model, "w");
    CHECK(f != NULL, "cannot write %s", model);
    fputs("[input]\ndtype = i64\n[embedding]\nnum = 256\ndim = 256\n", f);
    fclose(f);
    char *out;
    int code = run(0, &out, ARGS("convert", "text", "--in", txt, "--out", data));
    CHECK(code == 0, "convert text: exit %d\n%s", code, out);
    free(out);
    double l1[16], l2[16];
    const int nps[2] = {0, 2};
    for (int i = 0; i < 2; i++) {
        char d[32];
        snprintf(d, sizeof d, "tok-np%d", nps[i]);
        code =
            run(nps[i], &out,
                ARGS("train", "--data", data, "--model", model, "--block-size", "16",
                     "--batch-size", "8", "--steps-per-epoch", "4", "--epochs", "2", "--lr", "0.05",
                     "--schedule", "constant", "--log-every", "1", "--threads", "1",
                     "--check-replicas", "--ckpt-dir", P("%s", d), "--metrics", P("%s.jsonl", d)));
        CHECK(code == 0, "tokens on %d ranks: exit %d\n%s", nps[i], code, out);
        CHECK(has(out, "tokens/s"), "no tokens/s in the progress lines:\n%s", out);
        free(out);
    }
    int n1 = token_step_losses(P("tok-np0.jsonl"), l1, 16),
        n2 = token_step_losses(P("tok-np2.jsonl"), l2, 16);
    CHECK(n1 == 8 && n2 == 8, "step events: %d alone, %d on 2 ranks (want 8)", n1, n2);
    double worst = 0;
    for (int i = 0; i < n1 && i < n2; i++) {
        double r = fabs(l1[i] - l2[i]) / fabs(l1[i]);
        worst = r > worst ? r : worst;
    }
    double diff = ckpt_diff(CKPT("tok-np0", 8), CKPT("tok-np2", 8));
    printf("tokens: 2 ranks vs alone over 8 steps: step losses within %.3g relative, "
           "parameters within %.3g\n",
           worst, diff);
    CHECK(worst <= 1e-5, "step losses on 2 ranks differ from 1 rank by %.3g", worst);
    CHECK(diff <= 1e-5, "2 ranks differ from 1 rank by %.3g", diff);
    CHECK(l1[7] < l1[0], "the loss did not fall: %g -> %g", l1[0], l1[7]);
    /* eval of the 1-rank checkpoint, alone and on 2 ranks: the same loss. */
    double el[2];
    for (int i = 0; i < 2; i++) {
        code = run(nps[i], &out, ARGS("eval", "--ckpt", CKPT("tok-np0", 8), "--threads", "1"));
        CHECK(code == 0 && has(out, "bits per byte"), "eval on %d ranks: exit %d\n%s", nps[i], code,
              out);
        el[i] = number_after(out, ": loss ");
        free(out);
    }
    CHECK(fabs(el[0] - el[1]) <= 1e-5 * fabs(el[0]), "eval: %.8g alone, %.8g on 2 ranks", el[0],
          el[1]);
}
