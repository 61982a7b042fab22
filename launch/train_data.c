/*
 * launch/train_data.c: finding or building the Fashion-MNIST cache file.
 */
#include "train_data.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "tapegrad/datasets.h"

static const char *const idx_files[4] = {
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
};

/* mkdir -p: creates dir and its missing parents (mode 0755). */
static int make_dirs(char *dir) {
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = mkdir(dir, 0755);
        *p = '/';
        if (r != 0 && errno != EEXIST)
            return -1;
    }
    return mkdir(dir, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

/* The cache folder: $XDG_CACHE_HOME/tapegrad, else $HOME/.cache/tapegrad. */
static int cache_dir(char *dir, size_t len) {
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;
    /* The XDG base directory spec says a relative value is to be ignored. */
    if (xdg && xdg[0] == '/')
        n = snprintf(dir, len, "%s/tapegrad", xdg);
    else if (home && home[0])
        n = snprintf(dir, len, "%s/.cache/tapegrad", home);
    else {
        fprintf(stderr, "tapegrad train: neither XDG_CACHE_HOME nor HOME is set, so there is "
                        "no cache folder for Fashion-MNIST; pass --data FILE.h5\n");
        return TG_EXIT_RUNTIME;
    }
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "tapegrad train: cache folder path too long\n");
        return TG_EXIT_RUNTIME;
    }
    return 0;
}

/* A temporary of another host, or of an older naming, is left this long
 * (seconds since its last change) before it counts as abandoned. */
#define STALE_TMP_AGE (24 * 3600)

/*
 * Removes the temporaries of conversions that died (killed, or a machine
 * that went down) from the cache folder: "NAME.tmp.HOST.PID" of this host
 * whose process is gone, and any "NAME.tmp.*" untouched for a day (another
 * host's, which cannot be asked about its process).
 */
static void remove_stale_tmps(const char *dir, const char *host) {
    char prefix[300], mine[600], path[8192];
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t pl, ml;

    if (!d)
        return;
    snprintf(prefix, sizeof prefix, "%s.tmp.", TG_FMNIST_CACHE_NAME);
    snprintf(mine, sizeof mine, "%s%s.", prefix, host);
    pl = strlen(prefix);
    ml = strlen(mine);
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        bool dead = false;
        if (strncmp(e->d_name, prefix, pl) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (strncmp(e->d_name, mine, ml) == 0) {
            char *end;
            long pid = strtol(e->d_name + ml, &end, 10);
            /* The converter's own temporary ("NAME.tmp.HOST.PID.tmpPID")
             * belongs to the same process. */
            dead = pid > 0 && (*end == '\0' || *end == '.') && kill((pid_t)pid, 0) != 0 &&
                   errno == ESRCH;
        }
        if (dead || time(NULL) - st.st_mtime > STALE_TMP_AGE)
            (void)unlink(path);
    }
    closedir(d);
}

static int convert_into(const char *idx_dir, const char *tmp) {
    char src[4][4096];
    for (int i = 0; i < 4; i++) {
        int n = snprintf(src[i], sizeof src[i], "%s/%s", idx_dir, idx_files[i]);
        if (n < 0 || (size_t)n >= sizeof src[i] || access(src[i], R_OK) != 0) {
            fprintf(stderr,
                    "tapegrad train: %s: %s\n"
                    "Fashion-MNIST comes from the Debian package dataset-fashion-mnist "
                    "(or pass --idx-dir DIR, or --data FILE.h5)\n",
                    src[i], n < 0 || (size_t)n >= sizeof src[i] ? "path too long"
                                                                 : strerror(errno));
            return TG_EXIT_DATA;
        }
    }
    char err[512];
    tg_idx_options io = {.stop = tg_cli_stop_requested};
    tg_status s = tg_idx_convert_opts(src[0], src[1], tmp, "train", &io, err, sizeof err);
    if (s == TG_OK)
        s = tg_idx_convert_opts(src[2], src[3], tmp, "test", &io, err, sizeof err);
    /* A signal may also end a read early (EINTR): a stop all the same. */
    if (s == TG_ERR_STOPPED || (s && tg_cli_stop_signal())) {
        printf("stopped by a signal while converting Fashion-MNIST; nothing was kept\n");
        return tg_cli_stop_exit(false);
    }
    if (s) {
        fprintf(stderr, "tapegrad train: converting Fashion-MNIST: %s\n", err);
        return tg_cli_exit_for_status(s);
    }
    return 0;
}

int tg_fmnist_cache(const char *idx_dir, char *path, size_t len) {
    char dir[4096];
    int code = cache_dir(dir, sizeof dir);
    if (code)
        return code;
    int n = snprintf(path, len, "%s/%s", dir, TG_FMNIST_CACHE_NAME);
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "tapegrad train: cache file path too long\n");
        return TG_EXIT_RUNTIME;
    }
    struct stat st;
    if (stat(path, &st) == 0)
        return 0;

    if (make_dirs(dir) != 0) {
        fprintf(stderr, "tapegrad train: cannot create the cache folder %s: %s\n", dir,
                strerror(errno));
        return TG_EXIT_RUNTIME;
    }
    /* A name of this process's own, so that two first runs at once do not
     * write into one file; the loser's rename replaces an identical file.
     * The host in the name tells whose process it was on a shared file
     * system. */
    char host[128] = "host", tmp[4400];
    if (gethostname(host, sizeof host) != 0 || !host[0])
        snprintf(host, sizeof host, "host");
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)
        if (*p == '/' || *p == '.')
            *p = '_';
    remove_stale_tmps(dir, host);
    snprintf(tmp, sizeof tmp, "%s.tmp.%s.%ld", path, host, (long)getpid());
    unlink(tmp);
    printf("converting Fashion-MNIST from %s to %s (first use)\n", idx_dir, path);
    fflush(stdout);
    code = convert_into(idx_dir, tmp);
    if (code == 0 && rename(tmp, path) != 0) {
        fprintf(stderr, "tapegrad train: renaming %s to %s: %s\n", tmp, path, strerror(errno));
        code = TG_EXIT_RUNTIME;
    }
    if (code)
        unlink(tmp);
    return code;
}
