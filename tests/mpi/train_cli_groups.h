/* The test groups of train_cli.c (included once, after its helpers). */

#define CKPT(d, step) P("%s/ckpt-%08d.h5", d, step)

static bool has(const char *text, const char *what) { return strstr(text, what) != NULL; }

/* The number after `key` on the last line holding it (NAN when none). */
static double number_after(const char *text, const char *key) {
    const char *p = NULL, *q = text;
    while ((q = strstr(q, key)) != NULL)
        p = q++;
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

/* ---- ddp ---- */

static void ddp_equivalence(const char *data, const char *model) {
    char ref[64];
    snprintf(ref, sizeof ref, "ddp-%s-np0", model);
    char *ref_out = NULL;
    const int nps[3] = {0, 2, 4};
    for (int i = 0; i < 3; i++) {
        char d[64], trace[600];
        snprintf(d, sizeof d, "ddp-%s-np%d", model, nps[i]);
        snprintf(trace, sizeof trace, "%s", P("trace-%s-%d.json", model, nps[i]));
        char *out;
        int code = run(nps[i], &out,
                       ARGS("train", "--data", data, "--model", model, "--optimizer", "sgd",
                            "--max-steps", "3", "--batch-size", "16", "--eval-batch-size", "16",
                            "--log-every", "1", "--threads", "1", "--check-replicas",
                            "--bucket-mb", "0.05", "--trace", trace, "--ckpt-dir", P("%s", d)));
        CHECK(code == 0, "%s on %d ranks exited %d:\n%s", model, nps[i], code, out);
        if (i == 0) {
            ref_out = out;
            continue;
        }
        double diff = ckpt_diff(CKPT(ref, 3), CKPT(d, 3));
        printf("%s: %d ranks vs alone after 3 steps: largest relative difference %.3g\n", model,
               nps[i], diff);
        CHECK(diff <= 1e-5, "%s: %d ranks differ from 1 rank by %.3g", model, nps[i], diff);
        /* The logged loss is the mean over the global batch on every world. */
        double l0 = number_after(ref_out, "step 3/16  loss "), l = number_after(out, "step 3/16  loss ");
        CHECK(fabs(l0 - l) < 2e-4, "%s: step 3 loss %g alone, %g on %d ranks", model, l0, l,
              nps[i]);
        CHECK(has(out, "ranks (") && has(out, "batch 16 ("), "%s: banner:\n%s", model, out);
        for (int r = 0; r < nps[i]; r++) {
            char *t = slurp(P("trace-%s-%d.rank%d.json", model, nps[i], r));
            CHECK(has(t, "\"forward\"") && has(t, "\"backward\"") && has(t, "\"optimizer\"") &&
                      has(t, "allreduce bucket"),
                  "%s: trace of rank %d lacks spans: %.200s", model, r, t);
            free(t);
        }
        free(out);
    }
    free(ref_out);
}

static void group_ddp(void) {
    const char *data = make_data("d.h5", 256, 50);
    ddp_equivalence(data, "mlp");
    ddp_equivalence(data, "cnn");

    char *out;
    int code = run(4, &out, ARGS("train", "--data", data, "--batch-size", "6", "--threads", "1"));
    CHECK(code == 2, "batch 6 on 4 ranks: exit %d", code);
    CHECK(has(out, "--batch-size 6 (the global batch) is not divisible by the world size 4"),
          "%s", out);
    free(out);

    /* A training split smaller than the world's batch: a clear refusal. */
    const char *tiny = make_data("tiny.h5", 2, 3);
    code = run(4, &out, ARGS("train", "--data", tiny, "--batch-size", "4", "--threads", "1"));
    CHECK(code == 1, "2 training samples on 4 ranks: exit %d", code);
    CHECK(has(out, "split train has 2 samples, fewer than one batch of 4"), "%s", out);
    free(out);

    /* A test split smaller than the world: ranks 3.. get nothing, every
     * sample still counted once (the trainer checks the count). */
    const char *small = make_data("small.h5", 8, 3);
    code = run(4, &out, ARGS("train", "--data", small, "--batch-size", "4", "--max-steps", "2",
                             "--threads", "1"));
    CHECK(code == 0, "3 test samples on 4 ranks: exit %d\n%s", code, out);
    double acc = number_after(out, "test accuracy: ");
    CHECK(fabs(acc * 3 - round(acc * 3)) < 1e-3, "accuracy %g is not k/3", acc);
    free(out);

    /* 37 training samples in batches of 8: 4 steps per epoch (the last
     * partial batch dropped); 13 test samples in batches of 4 on 2 ranks. */
    const char *uneven = make_data("uneven.h5", 37, 13);
    code = run(2, &out, ARGS("train", "--data", uneven, "--batch-size", "8", "--epochs", "2",
                             "--eval-batch-size", "4", "--threads", "1"));
    CHECK(code == 0, "uneven: exit %d\n%s", code, out);
    CHECK(has(out, "8 steps (4 per epoch)") && has(out, "8 steps, "), "%s", out);
    acc = number_after(out, "test accuracy: ");
    CHECK(fabs(acc * 13 - round(acc * 13)) < 1e-3, "accuracy %g is not k/13", acc);
    free(out);

    /* No --threads and no OMP_NUM_THREADS: ranks that share all of the
     * node's CPUs divide them; alone, a rank keeps OpenMP's default. With
     * more ranks than CPUs mpiexec --oversubscribe binds none, so 4 ranks
     * share them on a machine of fewer than 4 CPUs (elsewhere mpiexec binds
     * each to its own, and OpenMP's default is that). */
    char *omp = getenv("OMP_NUM_THREADS") ? strdup(getenv("OMP_NUM_THREADS")) : NULL;
    unsetenv("OMP_NUM_THREADS");
    cpu_set_t set;
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0, "sched_getaffinity failed");
    const int cpus = CPU_COUNT(&set), per = cpus / 4 > 1 ? cpus / 4 : 1;
    char want[96];
    snprintf(want, sizeof want, "threads %d (4 ranks share this node's %d CPUs) per rank", per,
             cpus);
    code = run(4, &out, ARGS("train", "--data", uneven, "--batch-size", "8", "--max-steps", "2"));
    CHECK(code == 0, "default threads: exit %d\n%s", code, out);
    CHECK(cpus >= 4 || cpus < sysconf(_SC_NPROCESSORS_ONLN) || has(out, want),
          "expected '%s' in:\n%s", want, out);
    free(out);
    code = run(1, &out, ARGS("train", "--data", uneven, "--batch-size", "8", "--max-steps", "2"));
    CHECK(code == 0 && has(out, "threads the OpenMP default per rank"), "1 rank: exit %d\n%s",
          code, out);
    free(out);
    if (omp) {
        setenv("OMP_NUM_THREADS", omp, 1);
        free(omp);
    }
}

/* ---- resume ---- */

static int train_to(int np, const char *data, const char *d, const char *steps, bool resume,
                    char **out) {
    const char *args[40] = {"train", "--data", data, "--max-steps", steps, "--batch-size", "16",
                            "--schedule", "constant", "--log-every", "1", "--threads", "1",
                            "--ckpt-dir", P("%s", d), "--metrics", P("%s.jsonl", d)};
    int n = 17;
    if (resume) {
        args[n++] = "--resume";
        args[n++] = "auto";
    }
    args[n] = NULL;
    return run(np, out, args);
}

static void exact_resume(int np, const char *data) {
    char a[32], b[32];
    snprintf(a, sizeof a, "whole-%d", np);
    snprintf(b, sizeof b, "split-%d", np);
    char *out;
    int code = train_to(np, data, a, "20", false, &out);
    CHECK(code == 0, "20 steps on %d: exit %d\n%s", np, code, out);
    free(out);
    code = train_to(np, data, b, "10", false, &out);
    CHECK(code == 0, "10 steps on %d: exit %d\n%s", np, code, out);
    free(out);
    code = train_to(np, data, b, "20", true, &out);
    CHECK(code == 0, "resume to 20 on %d: exit %d\n%s", np, code, out);
    CHECK(has(out, "resumed from") && has(out, "step 10, epoch 1, 160 samples consumed"), "%s",
          out);
    free(out);
    double diff = ckpt_diff(CKPT(a, 20), CKPT(b, 20));
    CHECK(diff == 0, "%d ranks: resumed run differs by %.3g", np, diff);
    char *ma = slurp(P("%s.jsonl", a)), *mb = slurp(P("%s.jsonl", b));
    char *sa = lines_with(ma, "\"event\":\"step\""), *sb = lines_with(mb, "\"event\":\"step\"");
    CHECK(strcmp(sa, sb) == 0 && strlen(sa) > 0, "%d ranks: loss lines differ:\n%s\nvs\n%s", np,
          sa, sb);
    free(ma);
    free(mb);
    free(sa);
    free(sb);
}

static void group_resume(void) {
    const char *data = make_data("d.h5", 256, 50);
    exact_resume(0, data);
    exact_resume(2, data);
    /* The 2-rank checkpoint of step 10 continued on 1 and on 4 ranks. */
    const int nps[2] = {0, 4};
    for (int i = 0; i < 2; i++) {
        char d[32];
        snprintf(d, sizeof d, "reshard-%d", nps[i]);
        char *out;
        int code = run(nps[i], &out,
                       ARGS("train", "--data", data, "--max-steps", "20", "--batch-size", "16",
                            "--schedule", "constant", "--log-every", "1", "--threads", "1",
                            "--ckpt-dir", P("%s", d), "--resume", CKPT("split-2", 10)));
        CHECK(code == 0, "resume on %d: exit %d\n%s", nps[i], code, out);
        CHECK(has(out, "step 10, epoch 1, 160 samples consumed (written by 2 ranks)"), "%s",
              out);
        double diff = ckpt_diff(CKPT("whole-2", 20), CKPT(d, 20));
        printf("2-rank checkpoint resumed on %d rank(s): largest relative difference %.3g\n",
               nps[i] ? nps[i] : 1, diff);
        CHECK(diff <= 1e-5, "resumed on %d ranks: differs by %.3g", nps[i], diff);
        free(out);
    }
}

/* ---- bad checkpoints ---- */

static void copy_file(const char *from, const char *to, long keep) {
    char *buf = NULL;
    FILE *f = fopen(from, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n)
        n = 0;
    fclose(f);
    FILE *g = fopen(to, "wb");
    fwrite(buf, 1, (size_t)(keep >= 0 && keep < n ? keep : n), g);
    fclose(g);
    free(buf);
}

/* Flips one bit in the middle of dataset `name`'s first chunk. */
static void flip_bit(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t sp = H5Dget_space(d);
    haddr_t addr = 0;
    hsize_t size = 0;
    H5Dget_chunk_info(d, sp, 0, NULL, NULL, &addr, &size);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    CHECK(size > 0, "no chunk in %s", name);
    int fd = open(path, O_RDWR);
    unsigned char c;
    off_t at = (off_t)(addr + size / 2);
    if (pread(fd, &c, 1, at) == 1) {
        c ^= 0x10;
        CHECK(pwrite(fd, &c, 1, at) == 1, "pwrite");
    }
    close(fd);
}

static void expect(int np, const char *what, int want, const char *msg, const char *const *args) {
    char *out;
    int code = run(np, &out, args);
    CHECK(code == want, "%s: exit %d, expected %d:\n%s", what, code, want, out);
    CHECK(has(out, msg), "%s: no '%s' in:\n%s", what, msg, out);
    free(out);
}

#define TRAIN(...) ARGS("train", "--data", data, "--max-steps", "4", "--threads", "1", __VA_ARGS__)

static void group_badckpt(void) {
    const char *data = make_data("d.h5", 256, 50);
    char *out;
    int code = run(0, &out, TRAIN("--ckpt-dir", P("good"), "--ckpt-every", "2"));
    CHECK(code == 0, "exit %d\n%s", code, out);
    free(out);
    char good[1024];
    snprintf(good, sizeof good, "%s", CKPT("good", 4));

    expect(2, "a file in the way", 3, "cannot create or write the folder",
           TRAIN("--ckpt-dir", P("d.h5/sub")));
    expect(0, "another model", 3, "tensor 'conv1.weight'", TRAIN("--model", "cnn", "--resume", good));
    copy_file(good, P("trunc.h5"), 3000);
    expect(2, "truncated", 3, "truncated", TRAIN("--resume", P("trunc.h5")));
    copy_file(good, P("flip.h5"), -1);
    flip_bit(P("flip.h5"), "/tensors/fc2.weight");
    expect(0, "flipped bit", 3, "checksum", TRAIN("--resume", P("flip.h5")));
    FILE *f = fopen(P("text.h5"), "w");
    fputs("not a checkpoint\n", f);
    fclose(f);
    expect(0, "not HDF5", 3, "not an HDF5 file", TRAIN("--resume", P("text.h5")));
    expect(0, "missing file", 3, "No such file", TRAIN("--resume", P("nope.h5")));
    mkdir(P("broken"), 0755);
    copy_file(good, CKPT("broken", 5), 3000);
    expect(2, "nothing valid to resume", 3, "nothing to resume",
           TRAIN("--ckpt-dir", P("broken"), "--resume", "auto"));
    expect(0, "resume auto without a folder", 2, "--resume auto needs --ckpt-dir",
           TRAIN("--resume", "auto"));
    expect(0, "an empty folder", 0, "starting afresh",
           TRAIN("--ckpt-dir", P("empty"), "--resume", "auto"));
    expect(0, "another global batch", 2, "another global batch",
           TRAIN("--batch-size", "32", "--resume", good));

    /* The newest checkpoint broken: a warning, and the one before is used. */
    mkdir(P("fb"), 0755);
    copy_file(CKPT("good", 2), CKPT("fb", 2), -1);
    copy_file(good, CKPT("fb", 4), 3000);
    code = run(2, &out, ARGS("train", "--data", data, "--max-steps", "6", "--threads", "1",
                             "--ckpt-dir", P("fb"), "--resume", "auto"));
    CHECK(code == 0, "fallback: exit %d\n%s", code, out);
    CHECK(has(out, "warning: ") && has(out, "falling back") && has(out, "step 2, epoch"),
          "%s", out);
    free(out);
}

/* ---- pre-emption ---- */

/* Waits until `log` holds `what` (up to 30 s). */
static bool wait_for(const char *log, const char *what) {
    for (int i = 0; i < 1500; i++) {
        char *t = slurp(log);
        bool ok = has(t, what);
        free(t);
        if (ok)
            return true;
        usleep(20000);
    }
    return false;
}

/* A child process of `parent` (a rank under mpirun), or 0. */
static pid_t child_of(pid_t parent) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = 0;
    while (d && (e = readdir(d)) != NULL && !found) {
        char p[300], buf[512];
        snprintf(p, sizeof p, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue;
        if (fgets(buf, sizeof buf, f)) {
            const char *rp = strrchr(buf, ')');
            int ppid = 0;
            char st;
            if (rp && sscanf(rp + 1, " %c %d", &st, &ppid) == 2 && ppid == parent &&
                strstr(buf, "(tapegrad)"))
                found = (pid_t)atoi(e->d_name);
        }
        fclose(f);
    }
    if (d)
        closedir(d);
    return found;
}

static const char *const *long_run(const char *data, const char *d) {
    static const char *args[32];
    const char *a[] = {"train", "--data", data, "--max-steps", "100000", "--epochs", "10000",
                       "--batch-size", "16", "--schedule", "constant", "--log-every", "1",
                       "--threads", "1", "--ckpt-dir", P("%s", d), "--ckpt-every", "1000", NULL};
    memcpy(args, a, sizeof a);
    return args;
}

static void preempt(const char *data, const char *d, bool to_launcher) {
    const char *log = P("%s.log", d);
    pid_t pid = spawn(2, log, long_run(data, d));
    CHECK(wait_for(log, "step 5/"), "%s: no progress", d);
    pid_t target = to_launcher ? pid : child_of(pid);
    CHECK(target > 0, "no rank found under mpirun %d", (int)pid);
    if (target > 0)
        kill(target, to_launcher ? SIGUSR1 : SIGTERM);
    int code = wait_code(pid);
    char *out = slurp(log);
    CHECK(code == 75, "%s: exit %d, expected 75:\n%s", d, code, out);
    int step = (int)number_after(out, "of 2 ranks) after step ");
    CHECK(step >= 5, "%s: no stop step in:\n%s", d, out);
    CHECK(access(CKPT(d, step), R_OK) == 0, "%s: no checkpoint of step %d", d, step);
    free(out);
    char steps[32];
    snprintf(steps, sizeof steps, "%d", step + 3);
    code = run(2, &out, ARGS("train", "--data", data, "--max-steps", steps, "--epochs", "10000",
                             "--batch-size", "16", "--schedule", "constant", "--log-every", "1",
                             "--threads", "1", "--ckpt-dir", P("%s", d), "--resume", "auto"));
    char want[64];
    snprintf(want, sizeof want, "step %d, epoch", step);
    CHECK(code == 0 && has(out, want) && has(out, "test accuracy"),
          "%s: resume after the stop: exit %d:\n%s", d, code, out);
    free(out);
}

static void group_preempt(void) {
    const char *data = make_data("d.h5", 2048, 50);
    preempt(data, "term", false);
    preempt(data, "usr1", true);
    /* Alone: the first SIGINT asks for a stop; the second one ends the
     * process at once. The cnn's steps of 512 samples take long enough
     * (about 0.1 s) for the second signal to arrive before the step ends;
     * the pause keeps the kernel from merging the two into one. */
    const char *log = P("int.log");
    const char *const *args = long_run(data, "int");
    const char *cnn[40];
    int n = 0;
    while (args[n]) {
        cnn[n] = args[n];
        n++;
    }
    const char *extra[] = {"--model", "cnn", "--batch-size", "512", NULL};
    for (int i = 0; extra[i]; i++)
        cnn[n++] = extra[i];
    cnn[n] = NULL;
    pid_t pid = spawn(0, log, cnn);
    CHECK(wait_for(log, "step 2/"), "SIGINT: no progress");
    kill(pid, SIGINT);
    usleep(20000);
    kill(pid, SIGINT);
    int code = wait_code(pid);
    CHECK(code == 130, "two SIGINTs: exit %d", code);
}

/* ---- eval and inspect ---- */

static void group_eval(void) {
    const char *data = make_data("d.h5", 256, 52);
    char *out;
    int code = run(0, &out, ARGS("train", "--data", data, "--max-steps", "20", "--threads", "1",
                                 "--ckpt-dir", P("ev")));
    CHECK(code == 0, "exit %d\n%s", code, out);
    double train_loss = number_after(out, "test_loss ");
    free(out);
    const char *ck = CKPT("ev", 20);
    double loss[2], acc[2];
    double conf_sum[2];
    const int nps[2] = {0, 3};
    for (int i = 0; i < 2; i++) {
        code = run(nps[i], &out, ARGS("eval", "--ckpt", ck, "--data", data, "--confusion",
                                      "--batch-size", "5", "--threads", "1"));
        CHECK(code == 0, "eval on %d: exit %d\n%s", nps[i], code, out);
        loss[i] = number_after(out, "loss ");
        acc[i] = number_after(out, "accuracy ");
        CHECK(has(out, "(52 samples"), "%s", out);
        /* The matrix: 4 rows of 4 counts after "0:" .. "3:". */
        double sum = 0, diag = 0;
        for (int r = 0; r < 4; r++) {
            char key[8];
            snprintf(key, sizeof key, "%d:", r);
            const char *m = strstr(out, "confusion matrix");
            const char *p = strstr(m ? m : out, key);
            for (int c = 0; p && c < 4; c++) {
                char *end;
                double v = strtod(p + (c == 0 ? 2 : 0), &end);
                p = end;
                sum += v;
                diag += r == c ? v : 0;
            }
        }
        conf_sum[i] = sum;
        CHECK(sum == 52, "confusion sums to %g on %d ranks:\n%s", sum, nps[i], out);
        CHECK(fabs(diag / 52 - acc[i]) < 1e-6, "diagonal %g vs accuracy %g", diag, acc[i]);
        free(out);
    }
    CHECK(fabs(loss[0] - train_loss) < 1e-4, "eval loss %g vs training's %g", loss[0],
          train_loss);
    CHECK(fabs(loss[0] - loss[1]) < 1e-5 && acc[0] == acc[1] && conf_sum[0] == conf_sum[1],
          "1 rank: %g %g; 3 ranks: %g %g", loss[0], acc[0], loss[1], acc[1]);

    const char *small = make_data("small.h5", 8, 3);
    /* Batches of 6 on 2 ranks: rank 0 gets all 3 samples, rank 1 none. */
    expect(2, "eval of 3 samples on 2 ranks", 0, "(3 samples",
           ARGS("eval", "--ckpt", ck, "--data", small, "--batch-size", "6", "--threads", "1"));
    expect(0, "eval of a missing checkpoint", 3, "No such file",
           ARGS("eval", "--ckpt", P("nope.h5"), "--data", data));
    expect(0, "eval of a dataset", 3, "not a tapegrad checkpoint",
           ARGS("eval", "--ckpt", data, "--data", data));
    expect(0, "eval without --ckpt", 2, "--ckpt FILE is required", ARGS("eval", "--data", data));

    code = run(0, &out, ARGS("inspect", ck));
    CHECK(code == 0, "inspect: exit %d\n%s", code, out);
    CHECK(has(out, "step              20") && has(out, "fc1.weight") && has(out, "(256, 64)") &&
              has(out, "optim.fc1.weight.exp_avg") && has(out, "batch_size = 128") &&
              has(out, "norm "),
          "%s", out);
    free(out);
    copy_file(ck, P("flip.h5"), -1);
    flip_bit(P("flip.h5"), "/tensors/fc1.weight");
    /* The header's whole-file CRC-32 refuses it before HDF5 opens it (the
     * per-tensor CHECKSUM MISMATCH listing is for files without a header). */
    expect(0, "inspect of a flipped bit", 3, "fails its whole-file CRC-32",
           ARGS("inspect", P("flip.h5")));
}

#include "train_cli_accum.h"
#include "train_cli_syncbn.h"
#include "train_cli_zero.h"
#include "train_cli_sbatch.h"
#include "train_cli_data.h"

static void group_modelfile(void); /* train_cli_modelfile.h */
static void group_tokens(void);    /* train_cli_tokens.h */
#include "train_cli_bf16.h"

static int run_group(const char *name) {
    static const struct {
        const char *name;
        void (*fn)(void);
    } groups[] = {{"ddp", group_ddp},
                  {"resume", group_resume},
                  {"badckpt", group_badckpt},
                  {"preempt", group_preempt},
                  {"eval", group_eval},
                  {"accum", group_accum},
                  {"syncbn", group_syncbn},
                  {"zero", group_zero},
                  {"sbatch", group_sbatch},
                  {"modelfile", group_modelfile},
                  {"data", group_data},
                  {"tokens", group_tokens},
                  {"bf16", group_bf16}};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (strcmp(groups[i].name, name) == 0) {
            groups[i].fn();
            return 1;
        }
    return 0;
}
