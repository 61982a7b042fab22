/*
 * launch/cmd_plot.c: `tapegrad plot METRICS.jsonl --out curves.png`.
 *
 * Reads the "epoch" events of a metrics file written by `tapegrad train
 * --metrics` and draws three panels with gnuplot (Debian's gnuplot-nox):
 * train and test loss, test accuracy, and samples/s, each per epoch. The data
 * goes to gnuplot through a temporary file beside the output, so nothing but
 * the PNG is left behind.
 */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct plot_opts {
    const char *in;
    const char *out;
    int width, height;
} plot_opts;

static void plot_usage(FILE *f) {
    fprintf(f, "usage: tapegrad plot METRICS.jsonl --out FILE.png [--size WxH]\n"
               "\n"
               "Draws train/test loss, test accuracy and samples/s per epoch from the\n"
               "\"epoch\" events of a metrics file (tapegrad train --metrics) as a PNG,\n"
               "with gnuplot (install gnuplot-nox).\n"
               "\n"
               "options:\n"
               "  --out FILE.png   the image to write (required)\n"
               "  --size WxH       its size in pixels (default 1200x400)\n"
               "  -h, --help       print this help and exit\n");
}

/* The number after "key": in a flat JSON object, or false when absent. */
static bool json_number(const char *line, const char *key, double *v) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        return false;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    char *end;
    errno = 0;
    *v = strtod(p, &end);
    return end != p && errno == 0;
}

static bool is_epoch_event(const char *line) {
    const char *p = strstr(line, "\"event\":");
    if (!p)
        return false;
    p += strlen("\"event\":");
    while (*p == ' ')
        p++;
    return strncmp(p, "\"epoch\"", 7) == 0;
}

/* Copies the epoch rows of in to the gnuplot data file dat; returns the row
 * count, or -1 with a message printed. */
static int write_data(const char *in, FILE *dat) {
    FILE *f = fopen(in, "r");
    if (!f) {
        fprintf(stderr, "tapegrad plot: cannot open %s: %s\n", in, strerror(errno));
        return -1;
    }
    char line[4096];
    int rows = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!is_epoch_event(line))
            continue;
        double ep, trl, tel, acc, sps;
        if (!json_number(line, "epoch", &ep) || !json_number(line, "train_loss", &trl) ||
            !json_number(line, "test_loss", &tel) || !json_number(line, "test_acc", &acc) ||
            !json_number(line, "samples_per_s", &sps)) {
            fprintf(stderr,
                    "tapegrad plot: %s:%d: an \"epoch\" event needs epoch, train_loss, "
                    "test_loss, test_acc and samples_per_s\n",
                    in, lineno);
            fclose(f);
            return -1;
        }
        fprintf(dat, "%g %.9g %.9g %.9g %.9g\n", ep, trl, tel, acc, sps);
        rows++;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "tapegrad plot: error reading %s\n", in);
        return -1;
    }
    if (rows == 0)
        fprintf(stderr,
                "tapegrad plot: %s has no \"epoch\" events (is it a metrics file of "
                "tapegrad train --metrics?)\n",
                in);
    return rows ? rows : -1;
}

static void write_script(FILE *g, const plot_opts *o, const char *dat) {
    fprintf(g,
            "set terminal pngcairo size %d,%d noenhanced\n"
            "set output '%s'\n"
            "set multiplot layout 1,3 title '%s'\n"
            "set xlabel 'epoch'\nset grid\nset key top right\n"
            "set title 'loss'\n"
            "plot '%s' using 1:2 with linespoints title 'train', "
            "'' using 1:3 with linespoints title 'test'\n"
            "set title 'test accuracy'\nset key bottom right\n"
            "plot '%s' using 1:4 with linespoints title 'test acc'\n"
            "set title 'throughput'\n"
            "plot '%s' using 1:5 with linespoints title 'samples/s'\n"
            "unset multiplot\n",
            o->width, o->height, o->out, o->in, dat, dat, dat);
}

/* Runs gnuplot on the script file; returns its exit status or -1. */
static int run_gnuplot(const char *script) {
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        fprintf(stderr, "tapegrad plot: cannot run gnuplot: %s (install gnuplot-nox)\n",
                strerror(errno));
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int parse_args(int argc, char **argv, plot_opts *o) {
    *o = (plot_opts){.width = 1200, .height = 400};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            plot_usage(stdout);
            return -1;
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            o->out = argv[++i];
        } else if (!strcmp(a, "--size") && i + 1 < argc) {
            char *x;
            long w = strtol(argv[++i], &x, 10);
            long h = *x == 'x' ? strtol(x + 1, &x, 10) : 0;
            if (*x || w < 64 || h < 64 || w > 10000 || h > 10000) {
                fprintf(stderr, "tapegrad plot: --size '%s': expected WxH, 64 to 10000 each\n",
                        argv[i]);
                return TG_EXIT_USAGE;
            }
            o->width = (int)w;
            o->height = (int)h;
        } else if (a[0] == '-') {
            fprintf(stderr, "tapegrad plot: unknown option '%s' (or missing value)\n", a);
            return TG_EXIT_USAGE;
        } else if (!o->in) {
            o->in = a;
        } else {
            fprintf(stderr, "tapegrad plot: more than one metrics file ('%s')\n", a);
            return TG_EXIT_USAGE;
        }
    }
    if (!o->in || !o->out) {
        fprintf(stderr, "tapegrad plot: %s is required\n",
                o->in ? "--out FILE.png" : "a metrics file");
        plot_usage(stderr);
        return TG_EXIT_USAGE;
    }
    /* The paths go into a gnuplot script between single quotes. */
    if (strchr(o->in, '\'') || strchr(o->out, '\'')) {
        fprintf(stderr, "tapegrad plot: file names may not contain a single quote\n");
        return TG_EXIT_USAGE;
    }
    return 0;
}

int tg_cmd_plot(int argc, char **argv) {
    plot_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? TG_EXIT_OK : rc;
    char dat[4096], gp[4096];
    snprintf(dat, sizeof dat, "%s.data.XXXXXX", o.out);
    snprintf(gp, sizeof gp, "%s.gp.XXXXXX", o.out);
    int fd1 = mkstemp(dat);
    int fd2 = fd1 >= 0 ? mkstemp(gp) : -1;
    if (fd1 < 0 || fd2 < 0) {
        fprintf(stderr, "tapegrad plot: cannot create a temporary file beside %s: %s\n", o.out,
                strerror(errno));
        if (fd1 >= 0) {
            close(fd1);
            unlink(dat);
        }
        return TG_EXIT_RUNTIME;
    }
    FILE *fd = fdopen(fd1, "w"), *fg = fdopen(fd2, "w");
    rc = TG_EXIT_OK;
    if (!fd || !fg || write_data(o.in, fd) < 0)
        rc = TG_EXIT_DATA;
    else
        write_script(fg, &o, dat);
    if ((fd ? fclose(fd) : close(fd1)) | (fg ? fclose(fg) : close(fd2)))
        rc = rc ? rc : TG_EXIT_RUNTIME;
    if (rc == TG_EXIT_OK) {
        int g = run_gnuplot(gp);
        if (g != 0) {
            fprintf(stderr, "tapegrad plot: gnuplot failed (status %d) writing %s\n", g, o.out);
            rc = TG_EXIT_RUNTIME;
        }
    }
    unlink(dat);
    unlink(gp);
    if (rc == TG_EXIT_OK)
        printf("wrote %s (%dx%d)\n", o.out, o.width, o.height);
    return rc;
}
