/*
 * tests/mpi/train_cli_sbatch.h: the decisions of launch/slurm/train.sbatch
 * after a signal, in both launch modes, without a SLURM cluster: the script
 * runs under bash as SLURM would start it (SLURM_* variables set), with
 * stand-ins for scontrol (which records a requeue) and srun (which starts
 * one rank) first on PATH, and the real mpirun and tapegrad.
 *
 *   mpirun, SIGUSR1 to the batch shell   mpirun forwards it, exit 75: requeue
 *   mpirun, SIGTERM to mpirun itself     mpirun exits 1 although the ranks
 *                                        returned 75; PREEMPTED says they
 *                                        checkpointed: requeue
 *   mpirun, SIGTERM to shell and mpirun  (scancel) checkpointed, no requeue
 *   srun, SIGUSR1 to the batch shell     exit 75: requeue
 *   a stale PREEMPTED, a failing run     the exit code stands, no requeue
 *
 * Included by train_cli.c (group "sbatch").
 */

static void write_exec(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0 || chmod(path, 0755) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

/* A child of `parent` whose command name is `comm` ("mpirun"), or 0. */
static pid_t child_named(pid_t parent, const char *comm) {
    char want[64];
    snprintf(want, sizeof want, "(%s)", comm);
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
                strstr(buf, want))
                found = (pid_t)atoi(e->d_name);
        }
        fclose(f);
    }
    if (d)
        closedir(d);
    return found;
}

/* SIGKILL to pid and everything under it (children first found, then the
 * parent), so that a failed case leaves no ranks behind. */
static void kill_tree(pid_t pid) {
    if (pid <= 0)
        return;
    kill(pid, SIGSTOP);
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char p[300], buf[512];
        snprintf(p, sizeof p, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue;
        int ppid = 0;
        char st;
        const char *rp = fgets(buf, sizeof buf, f) ? strrchr(buf, ')') : NULL;
        fclose(f);
        if (rp && sscanf(rp + 1, " %c %d", &st, &ppid) == 2 && ppid == pid)
            kill_tree((pid_t)atoi(e->d_name));
    }
    if (d)
        closedir(d);
    kill(pid, SIGKILL);
}

/* The script's exit code, or -2 after killing it (and its job step) when it
 * has not ended within secs. */
static int wait_script(pid_t pid, int secs) {
    for (int i = 0; i < secs * 50; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0)
            return -1;
        usleep(20000);
    }
    kill_tree(pid);
    waitpid(pid, NULL, 0);
    return -2;
}

/* Whether `log` shows `what` within secs; stops early when pid ended. */
static bool wait_log(const char *log, const char *what, int secs, pid_t pid) {
    for (int i = 0; i < secs * 50; i++) {
        char *t = slurp(log);
        bool ok = has(t, what);
        free(t);
        if (ok)
            return true;
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            return false; /* ended (still to be reaped by wait_script) */
        usleep(20000);
    }
    return false;
}

/* Starts train.sbatch under bash with its output in `log`. */
static pid_t spawn_sbatch(const char *log) {
    char *argv[] = {"bash", TG_SBATCH, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    pid_t pid;
    if (posix_spawnp(&pid, "bash", &fa, NULL, argv, environ) != 0) {
        perror("posix_spawnp bash");
        exit(2);
    }
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

typedef enum { USR1_SHELL, TERM_LAUNCHER, TERM_BOTH } sb_signal;

/* One run of the script that is signalled once training is under way;
 * returns the script's exit code, with its output in *out and what the
 * stand-in scontrol recorded in *requeues (free both). */
static int sbatch_case(const char *name, const char *launcher, sb_signal how, char **out,
                       char **requeues) {
    const char *log = P("%s.log", name), *rq = P("%s.requeue", name);
    setenv("TG_LAUNCHER", launcher, 1);
    setenv("TG_CKPT_DIR", P("%s", name), 1);
    setenv("TG_STUB_LOG", rq, 1);
    pid_t pid = spawn_sbatch(log);
    /* Generous: the machine may be busy; a case that does not get going
     * is ended, not waited for. */
    bool going = wait_log(log, "step 5/", 90, pid);
    pid_t step = child_named(pid, !strcmp(launcher, "mpirun") ? "mpirun" : "tapegrad");
    CHECK(going && step > 0, "%s: no progress, or no %s under the script (pid %d)", name,
          launcher, (int)pid);
    if (going && how != TERM_LAUNCHER)
        kill(pid, how == USR1_SHELL ? SIGUSR1 : SIGTERM);
    if (going && how != USR1_SHELL && step > 0)
        kill(step, SIGTERM);
    int code = wait_script(pid, going && step > 0 ? 60 : 1);
    *out = slurp(log);
    *requeues = slurp(rq);
    return code;
}

/* The marker's step has its checkpoint in `dir_name`. */
static void check_marker(const char *name) {
    char *m = slurp(P("%s/PREEMPTED", name));
    int step = (int)number_after(m, "step ");
    CHECK(step > 0 && has(m, "signal SIG") && access(CKPT(name, step), R_OK) == 0,
          "%s: marker '%s' without its checkpoint", name, m);
    free(m);
}

static void group_sbatch(void) {
    const char *data = make_data("sb.h5", 2048, 50);
    const char *bin = P("stub");
    mkdir(bin, 0755);
    write_exec(P("stub/scontrol"),
               "#!/bin/sh\n"
               "# scontrol for the test: the allocation's nodes, and requeue recorded\n"
               "case \"$1\" in\n"
               "show) echo localhost ;;\n"
               "requeue) echo \"requeue $2\" >>\"$TG_STUB_LOG\" ;;\n"
               "*) exit 1 ;;\n"
               "esac\n");
    write_exec(P("stub/srun"), "#!/bin/sh\n"
                               "# srun for the test: its options dropped, one task\n"
                               "while [ $# -gt 0 ]; do\n"
                               "    case \"$1\" in --*) shift ;; *) break ;; esac\n"
                               "done\n"
                               "exec \"$@\"\n");
    char path[4096];
    snprintf(path, sizeof path, "%s:%s", bin, getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    setenv("PATH", path, 1);
    setenv("SLURM_JOB_ID", "4242", 1);
    setenv("SLURM_NTASKS", "2", 1);
    setenv("SLURM_NTASKS_PER_NODE", "2", 1);
    setenv("SLURM_CPUS_PER_TASK", "1", 1);
    setenv("SLURM_JOB_NODELIST", "localhost", 1);
    unsetenv("SLURM_RESTART_COUNT");
    setenv("TAPEGRAD", TG_CLI_PATH, 1);
    setenv("TG_DATA", data, 1);
    setenv("TG_MODEL", "mlp", 1);
    setenv("TG_EPOCHS", "10000", 1);
    setenv("TG_CKPT_EVERY", "1000", 1);
    setenv("TG_TRAIN_ARGS", "--max-steps 100000 --batch-size 16 --schedule constant --log-every 1",
           1);
    /* mpirun signalled itself waits this long before its SIGTERM reaches
     * the ranks (and again before SIGKILL); the mlp's checkpoint is quick. */
    setenv("TG_MPIRUN_GRACE", "2", 1);
    setenv("TG_MPIRUN_ARGS",
           geteuid() == 0 ? "--oversubscribe --allow-run-as-root" : "--oversubscribe", 1);
    char *out, *rq;

    int code = sbatch_case("usr1", "mpirun", USR1_SHELL, &out, &rq);
    CHECK(code == 0 && has(out, "step exited with 75") &&
              has(out, "checkpointed; requeued job 4242") && has(rq, "requeue 4242"),
          "mpirun, SIGUSR1 to the shell: exit %d, requeues '%s':\n%s", code, rq, out);
    check_marker("usr1");
    free(out);
    free(rq);

    code = sbatch_case("term", "mpirun", TERM_LAUNCHER, &out, &rq);
    CHECK(code == 0 && has(out, "step exited with 1") && has(out, "but rank 0 left ") &&
              has(out, "counting it as exit 75") && has(out, "checkpointed; requeued job 4242") &&
              has(rq, "requeue 4242"),
          "mpirun, SIGTERM to mpirun: exit %d, requeues '%s':\n%s", code, rq, out);
    check_marker("term");
    free(out);
    free(rq);

    code = sbatch_case("cancel", "mpirun", TERM_BOTH, &out, &rq);
    CHECK(code == 75 && has(out, "checkpointed after SIGTERM; not requeueing") && !rq[0],
          "mpirun, scancel: exit %d, requeues '%s':\n%s", code, rq, out);
    check_marker("cancel");
    free(out);
    free(rq);

    code = sbatch_case("srun", "srun", USR1_SHELL, &out, &rq);
    CHECK(code == 0 && has(out, "step exited with 75") && has(rq, "requeue 4242"),
          "srun, SIGUSR1 to the shell: exit %d, requeues '%s':\n%s", code, rq, out);
    check_marker("srun");
    free(out);
    free(rq);

    /* A marker left from before speaks for nothing: a run that fails keeps
     * its exit code and is not requeued. */
    mkdir(P("stale"), 0755);
    write_exec(P("stale/PREEMPTED"), "step 7\nsignal SIGTERM\ncheckpoint x\n");
    setenv("TG_DATA", P("missing.h5"), 1);
    setenv("TG_LAUNCHER", "mpirun", 1);
    setenv("TG_CKPT_DIR", P("stale"), 1);
    setenv("TG_STUB_LOG", P("stale.requeue"), 1);
    code = wait_script(spawn_sbatch(P("stale.log")), 60);
    out = slurp(P("stale.log"));
    rq = slurp(P("stale.requeue"));
    CHECK(code == 3 && has(out, "step exited with 3") && !has(out, "counting it") && !rq[0] &&
              access(P("stale/PREEMPTED"), F_OK) != 0,
          "stale marker: exit %d, requeues '%s':\n%s", code, rq, out);
    free(out);
    free(rq);
    setenv("TG_DATA", data, 1);
}
