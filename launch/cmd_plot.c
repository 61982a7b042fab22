/*
 * launch/cmd_plot.c: `tapegrad plot METRICS.jsonl... --out curves.png
 * [--csv curves.csv]`.
 *
 * Reads metrics files written by `tapegrad train --metrics` with a JSON
 * parser (launch/metrics.c) and draws three panels with gnuplot (Debian's
 * gnuplot-nox): the training loss of every logged step with the per-epoch
 * train, validation and test loss over it, the test (and validation)
 * accuracy per epoch, or for a regression run the MAE (its loss is the MSE),
 * and samples/s (tokens/s for runs on token data) per epoch; several files
 * are overlaid, each named in the legend. --csv
 * writes the same curves as a table. The data goes to gnuplot through a
 * temporary file beside the output, so nothing but the outputs is left.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"

/* A metrics file of 1 GiB is far beyond any run's; larger is not ours. */
#define MAX_METRICS_BYTES (1L << 30)
#define MAX_RUNS 16

typedef struct plot_opts {
    const char *in[MAX_RUNS];
    int n_in;
    const char *out, *csv;
    int width, height;
} plot_opts;

static void plot_usage(FILE *f) {
    fprintf(f, "usage: tapegrad plot METRICS.jsonl... [--out FILE.png] [--csv FILE.csv]\n"
               "                     [--size WxH]\n"
               "\n"
               "Draws the curves of one or more metrics files (tapegrad train --metrics),\n"
               "overlaid with a legend, as a PNG with gnuplot (install gnuplot-nox): the\n"
               "training loss of every logged step with the per-epoch train, validation and\n"
               "test loss (by step), the test and validation accuracy per epoch (for\n"
               "regression runs, whose loss is the MSE: the MAE), and samples/s (tokens/s\n"
               "for language models) per epoch.\n"
               "A resumed run's events replace what the first run logged after the resume\n"
               "point.\n"
               "\n"
               "options (at least one of --out and --csv):\n"
               "  --out FILE.png   the image to write\n"
               "  --csv FILE.csv   the curves as CSV: run,event,step,epoch,loss,train_loss,\n"
               "                   test_loss,test_acc,samples_per_s,val_loss,val_acc,\n"
               "                   test_mae,val_mae (event: step or epoch; empty cells\n"
               "                   where a field does not apply)\n"
               "  --size WxH       the image's size in pixels (default 1500x450)\n"
               "  -h, --help       print this help and exit\n"
               "\n"
               "exit codes: 0 written, 1 gnuplot or writing failed, 2 usage error,\n"
               "3 a metrics file is missing, unreadable, damaged or has no curves.\n");
}

static int load(const plot_opts *o, tg_metrics_curves *c) {
    for (int r = 0; r < o->n_in; r++) {
        size_t len;
        char *text = tg_cli_read_file("plot", o->in[r], MAX_METRICS_BYTES, &len), err[512];
        if (!text)
            return -1;
        int bad = tg_metrics_parse(text, len, o->in[r], &c[r], err, sizeof err);
        free(text);
        if (bad) {
            fprintf(stderr, "tapegrad plot: %s\n", err);
            return -1;
        }
        if (c[r].n_steps == 0 && c[r].n_epochs == 0) {
            fprintf(stderr,
                    "tapegrad plot: %s has no \"step\" or \"epoch\" events (is it a metrics "
                    "file of tapegrad train --metrics?)\n",
                    o->in[r]);
            return -1;
        }
    }
    return 0;
}

/* %g, or NaN (gnuplot skips it) / an empty CSV cell. */
static void num(FILE *f, double v, bool csv) {
    if (isfinite(v))
        fprintf(f, "%.9g", v);
    else if (!csv)
        fputs("NaN", f);
}

/* Per run r: gnuplot block 2r holds its steps, block 2r+1 its epochs. */
static void write_data(FILE *f, const tg_metrics_curves *c, int n) {
    for (int r = 0; r < n; r++) {
        for (size_t i = 0; i < c[r].n_steps; i++) {
            num(f, c[r].step[i], false);
            fputc(' ', f);
            num(f, c[r].loss[i], false);
            fputc('\n', f);
        }
        if (c[r].n_steps == 0)
            fputs("NaN NaN\n", f);
        fputs("\n\n", f);
        for (size_t i = 0; i < c[r].n_epochs; i++) {
            const double v[] = {c[r].ep[i],       c[r].ep_step[i],  c[r].train_loss[i],
                                c[r].test_loss[i], c[r].test_acc[i], c[r].sps[i],
                                c[r].val_loss[i],  c[r].val_acc[i],  c[r].test_mae[i],
                                c[r].val_mae[i],   c[r].tps[i]};
            for (int k = 0; k < 11; k++) {
                num(f, v[k], false);
                fputc(k < 10 ? ' ' : '\n', f);
            }
        }
        if (c[r].n_epochs == 0)
            fputs("NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN\n", f);
        fputs("\n\n", f);
    }
}

static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int write_csv(const char *path, const plot_opts *o, const tg_metrics_curves *c) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "tapegrad plot: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    fputs("run,event,step,epoch,loss,train_loss,test_loss,test_acc,samples_per_s,val_loss,"
          "val_acc,test_mae,val_mae\n",
          f);
    for (int r = 0; r < o->n_in; r++) {
        for (size_t i = 0; i < c[r].n_steps; i++) {
            csv_field(f, o->in[r]);
            fputs(",step,", f);
            num(f, c[r].step[i], true);
            fputc(',', f);
            num(f, c[r].step_epoch[i], true);
            fputc(',', f);
            num(f, c[r].loss[i], true);
            fputs(",,,,,,,,\n", f);
        }
        for (size_t i = 0; i < c[r].n_epochs; i++) {
            csv_field(f, o->in[r]);
            fputs(",epoch,", f);
            const double v[] = {c[r].ep_step[i],    c[r].ep[i],        NAN,
                                c[r].train_loss[i], c[r].test_loss[i], c[r].test_acc[i],
                                c[r].sps[i],        c[r].val_loss[i],  c[r].val_acc[i],
                                c[r].test_mae[i],   c[r].val_mae[i]};
            for (int k = 0; k < 11; k++) {
                num(f, v[k], true);
                fputc(k < 10 ? ',' : '\n', f);
            }
        }
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "tapegrad plot: writing %s failed\n", path);
        return -1;
    }
    return 0;
}

/* The name a run has in the legend: its file name without the folder. */
static const char *run_title(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* True when the run has a finite value in the epoch column a. */
static bool has(const tg_metrics_curves *c, const double *a) {
    for (size_t i = 0; i < c->n_epochs; i++)
        if (isfinite(a[i]))
            return true;
    return false;
}

/* gnuplot fails on a plot whose every point is undefined: a panel that no
 * run has a value for says so instead. */
static void no_data(FILE *g) {
    fputs("set label 1 'no data' at graph 0.5,0.5 center\nset yrange [0:1]\nplot 1/0 notitle\n"
          "unset label 1\nset autoscale y\n",
          g);
}

static void write_script(FILE *g, const plot_opts *o, const tg_metrics_curves *c,
                         const char *dat) {
    double max_ep = 1;
    bool acc = false, mae = false, sps = false, tok = true;
    for (int r = 0; r < o->n_in; r++) {
        sps |= has(&c[r], c[r].sps);
        /* tokens/s when every run with a throughput has one (token data) */
        tok &= !has(&c[r], c[r].sps) || has(&c[r], c[r].tps);
        for (size_t i = 0; i < c[r].n_epochs; i++)
            max_ep = c[r].ep[i] > max_ep ? c[r].ep[i] : max_ep;
        acc |= has(&c[r], c[r].test_acc) || has(&c[r], c[r].val_acc);
        mae |= has(&c[r], c[r].test_mae) || has(&c[r], c[r].val_mae);
    }
    /* The middle panel: accuracy when any run has one, else (regression
     * runs only) the MAE. Columns of an epoch block: 5 test_acc, 8 val_acc,
     * 9 test_mae, 10 val_mae. */
    bool show_mae = !acc && mae;
    int col_test = show_mae ? 9 : 5, col_val = show_mae ? 10 : 8;
    int tic = (int)ceil(max_ep / 10.0);
    fprintf(g,
            "set terminal pngcairo size %d,%d noenhanced\n"
            "set output '%s'\n"
            "set multiplot layout 1,3\n"
            "set grid\nset key top right\n",
            o->width, o->height, o->out);
    fprintf(g, "set title 'loss'\nset xlabel 'step'\nset ylabel 'loss'\nplot ");
    for (int r = 0; r < o->n_in; r++) {
        const char *t = run_title(o->in[r]);
        fprintf(g,
                "%s'%s' index %d using 1:2 with lines lw 1 lc %d title '%s: train (step)', "
                "'' index %d using 2:3 with linespoints pt 7 lc %d title '%s: train (epoch)', "
                "'' index %d using 2:4 with linespoints pt 5 dt 2 lc %d title '%s: test'",
                r ? ", " : "", dat, 2 * r, r + 1, t, 2 * r + 1, r + 1, t, 2 * r + 1, r + 1, t);
        if (has(&c[r], c[r].val_loss))
            fprintf(g, ", '' index %d using 2:7 with linespoints pt 9 dt 3 lc %d title '%s: val'",
                    2 * r + 1, r + 1, t);
    }
    fprintf(g, "\nset xlabel 'epoch'\nset xtics %d\nset format x '%%.0f'\n"
               "set xrange [0.5:%g]\n",
            tic, max_ep + 0.5);
    if (show_mae)
        fprintf(g, "set title 'MAE (regression; the loss is the MSE)'\nset ylabel 'MAE'\n"
                   "set key top right\n");
    else
        fprintf(g, "set title 'accuracy'\nset ylabel 'accuracy'\nset key bottom right\n");
    if (!acc && !mae)
        no_data(g);
    for (int r = 0, n = 0; r < o->n_in && (acc || mae); r++) {
        const char *t = run_title(o->in[r]);
        const double *test = show_mae ? c[r].test_mae : c[r].test_acc;
        const double *val = show_mae ? c[r].val_mae : c[r].val_acc;
        if (has(&c[r], test))
            fprintf(g, "%s'%s' index %d using 1:%d with linespoints pt 7 lc %d title '%s: test'",
                    n++ ? ", " : "plot ", dat, 2 * r + 1, col_test, r + 1, t);
        if (has(&c[r], val))
            fprintf(g, "%s'%s' index %d using 1:%d with linespoints pt 9 dt 3 lc %d title '%s: val'",
                    n++ ? ", " : "plot ", dat, 2 * r + 1, col_val, r + 1, t);
        if (r == o->n_in - 1)
            fputc('\n', g);
    }
    fprintf(g, "set title 'throughput'\nset ylabel '%s'\nset key top right\n",
            tok ? "tokens/s" : "samples/s");
    if (!sps)
        no_data(g);
    for (int r = 0, n = 0; r < o->n_in && sps; r++) {
        if (has(&c[r], c[r].sps))
            fprintf(g, "%s'%s' index %d using 1:%d with linespoints pt 7 lc %d title '%s'",
                    n++ ? ", " : "plot ", dat, 2 * r + 1, tok ? 11 : 6, r + 1,
                    run_title(o->in[r]));
        if (r == o->n_in - 1)
            fputc('\n', g);
    }
    fprintf(g, "unset multiplot\n");
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

/* The paths go into a gnuplot script between single quotes. */
static bool plain_name(const char *s) {
    for (; *s; s++)
        if (*s == '\'' || (unsigned char)*s < 0x20)
            return false;
    return true;
}

static int parse_args(int argc, char **argv, plot_opts *o) {
    *o = (plot_opts){.width = 1500, .height = 450};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            plot_usage(stdout);
            return -1;
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            o->out = argv[++i];
        } else if (!strcmp(a, "--csv") && i + 1 < argc) {
            o->csv = argv[++i];
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
        } else if (!strcmp(a, "--out") || !strcmp(a, "--csv") || !strcmp(a, "--size")) {
            return tg_cli_usage_error("plot", "%s needs a value", a);
        } else if (a[0] == '-' && a[1] != '\0') {
            static const char *const names[] = {"--out", "--csv", "--size", "--help"};
            return tg_cli_unknown_option("plot", a, names, sizeof names / sizeof names[0]);
        } else if (o->n_in == MAX_RUNS) {
            fprintf(stderr, "tapegrad plot: at most %d metrics files ('%s')\n", MAX_RUNS, a);
            return TG_EXIT_USAGE;
        } else {
            o->in[o->n_in++] = a;
        }
    }
    if (!o->n_in || (!o->out && !o->csv)) {
        fprintf(stderr, "tapegrad plot: %s is required\n",
                o->n_in ? "--out FILE.png or --csv FILE.csv" : "a metrics file");
        plot_usage(stderr);
        return TG_EXIT_USAGE;
    }
    for (int r = 0; r < o->n_in; r++)
        if (!plain_name(o->in[r]) || (o->out && !plain_name(o->out))) {
            fprintf(stderr, "tapegrad plot: file names may not contain a single quote or a "
                            "control character\n");
            return TG_EXIT_USAGE;
        }
    return 0;
}

static int draw(const plot_opts *o, const tg_metrics_curves *c) {
    char dat[4096], gp[4096];
    snprintf(dat, sizeof dat, "%s.data.XXXXXX", o->out);
    snprintf(gp, sizeof gp, "%s.gp.XXXXXX", o->out);
    int fd1 = mkstemp(dat);
    int fd2 = fd1 >= 0 ? mkstemp(gp) : -1;
    if (fd1 < 0 || fd2 < 0) {
        fprintf(stderr, "tapegrad plot: cannot create a temporary file beside %s: %s\n", o->out,
                strerror(errno));
        if (fd1 >= 0) {
            close(fd1);
            unlink(dat);
        }
        return TG_EXIT_RUNTIME;
    }
    FILE *fd = fdopen(fd1, "w"), *fg = fdopen(fd2, "w");
    bool bad = !fd || !fg;
    if (!bad) {
        write_data(fd, c, o->n_in);
        write_script(fg, o, c, dat);
    }
    bad |= (fd ? fclose(fd) : close(fd1)) != 0;
    bad |= (fg ? fclose(fg) : close(fd2)) != 0;
    int rc = bad ? TG_EXIT_RUNTIME : TG_EXIT_OK;
    if (rc == TG_EXIT_OK) {
        int g = run_gnuplot(gp);
        if (g != 0) {
            fprintf(stderr, "tapegrad plot: gnuplot failed (status %d) writing %s\n", g, o->out);
            rc = TG_EXIT_RUNTIME;
        }
    }
    unlink(dat);
    unlink(gp);
    if (rc == TG_EXIT_OK)
        printf("wrote %s (%dx%d)\n", o->out, o->width, o->height);
    return rc;
}

int tg_cmd_plot(int argc, char **argv) {
    plot_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? TG_EXIT_OK : rc;
    tg_metrics_curves c[MAX_RUNS] = {0};
    rc = load(&o, c) ? TG_EXIT_DATA : TG_EXIT_OK;
    if (rc == TG_EXIT_OK && o.csv) {
        rc = write_csv(o.csv, &o, c) ? TG_EXIT_RUNTIME : TG_EXIT_OK;
        if (rc == TG_EXIT_OK)
            printf("wrote %s\n", o.csv);
    }
    if (rc == TG_EXIT_OK && o.out)
        rc = draw(&o, c);
    for (int r = 0; r < o.n_in; r++)
        tg_metrics_curves_free(&c[r]);
    return rc;
}
