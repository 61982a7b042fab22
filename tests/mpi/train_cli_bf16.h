/* The "bf16" group of train_cli.c: --grad-dtype bf16 (gradients summed over
 * the ranks in bf16) and --precision bf16 under data parallelism. Included by
 * train_cli.c after train_cli_groups.h (z_run, X, loss_diff). */

/* mlp with SGD for 4 steps of a global batch of 16: the same run on 1 rank
 * in f32, on 2 ranks in f32 and on 2 ranks with --grad-dtype bf16. SGD moves
 * the parameters by lr * gradient, so the bf16 rounding of the summed
 * gradients (relative 2^-9) shows in the parameters: 2 bf16 ranks differ from
 * 1 rank by more than 2 f32 ranks do (the rounding happened), and by at most
 * 1e-2 of each tensor's largest value, losses by 1e-3 (the documented
 * tolerance, docs/COMM.md; measured 3.8e-3 and 8.6e-6). */
static void bf16_grad_dtype(const char *data) {
    char *out;
    int code = z_run(0, data, "mlp", "sgd", "g-1", "4", NULL, &out);
    CHECK(code == 0, "mlp alone: exit %d\n%s", code, out);
    free(out);
    code = z_run(2, data, "mlp", "sgd", "g-2", "4", NULL, &out);
    CHECK(code == 0, "mlp on 2 ranks: exit %d\n%s", code, out);
    free(out);
    code = z_run(2, data, "mlp", "sgd", "g-2b", "4", X("--grad-dtype", "bf16"), &out);
    CHECK(code == 0, "mlp --grad-dtype bf16 on 2 ranks: exit %d\n%s", code, out);
    free(out);
    double f = ckpt_diff(CKPT("g-1", 4), CKPT("g-2", 4));
    double b = ckpt_diff(CKPT("g-1", 4), CKPT("g-2b", 4));
    double l = loss_diff("g-1", "g-2b");
    printf("bf16: mlp sgd after 4 steps, 1 rank vs 2 ranks: f32 gradients %.3g, bf16 gradients "
           "%.3g (losses %.3g)\n",
           f, b, l);
    CHECK(b > f && b > 1e-6, "--grad-dtype bf16 changed nothing (%.3g vs f32's %.3g)", b, f);
    CHECK(b <= 1e-2 && l <= 1e-3, "--grad-dtype bf16 on 2 ranks is %.3g (losses %.3g) from 1 rank",
          b, l);
}

/* --precision bf16: 2 ranks track 1 rank as closely as in f32 (the products
 * round the same operands on every rank), and the precision did change the
 * result against f32. */
static void bf16_precision(const char *data) {
    char *out;
    int code = z_run(0, data, "cnn", "adamw", "p-1", "4", X("--precision", "bf16"), &out);
    if (code != 0 && has(out, "oneDNN")) {
        printf("bf16: --precision bf16 unavailable in this build (no oneDNN): checked the "
               "message only\n");
        free(out);
        return;
    }
    CHECK(code == 0, "cnn --precision bf16 alone: exit %d\n%s", code, out);
    free(out);
    code = z_run(2, data, "cnn", "adamw", "p-2", "4", X("--precision", "bf16"), &out);
    CHECK(code == 0, "cnn --precision bf16 on 2 ranks: exit %d\n%s", code, out);
    free(out);
    code = z_run(0, data, "cnn", "adamw", "p-1f", "4", NULL, &out);
    CHECK(code == 0, "cnn alone: exit %d\n%s", code, out);
    free(out);
    double d = ckpt_diff(CKPT("p-1", 4), CKPT("p-2", 4));
    double f = ckpt_diff(CKPT("p-1", 4), CKPT("p-1f", 4));
    printf("bf16: cnn adamw --precision bf16 after 4 steps: 2 ranks vs 1 rank %.3g; bf16 vs f32 "
           "on 1 rank %.3g\n",
           d, f);
    CHECK(d <= 1e-4, "--precision bf16 on 2 ranks is %.3g from 1 rank", d);
    CHECK(f > 1e-6, "--precision bf16 gave the f32 result (%.3g)", f);
}

static void group_bf16(void) {
    const char *data = make_data("d.h5", 256, 50);
    bf16_grad_dtype(data);
    bf16_precision(data);
    char *out;
    int code = run(0, &out, ARGS("train", "--data", data, "--grad-dtype", "bf16", "--zero", "1"));
    CHECK(code == 2 && has(out, "--grad-dtype bf16 and --zero 1"),
          "--grad-dtype bf16 --zero 1: exit %d\n%s", code, out);
    free(out);
    code = run(0, &out, ARGS("train", "--data", data, "--precision", "f16"));
    CHECK(code == 2 && has(out, "--precision"), "--precision f16: exit %d\n%s", code, out);
    free(out);
}
