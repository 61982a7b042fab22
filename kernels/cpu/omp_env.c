/*
 * kernels/cpu/omp_env.c: how long an idle OpenMP worker spins before it
 * sleeps (tg_omp_spin_setup, include/tapegrad/runtime.h).
 *
 * libgomp's default is to spin for 300,000 iterations (milliseconds on
 * current CPUs) at every barrier and at the end of every parallel region
 * before it waits on a futex. On a machine of its own that costs nothing. On
 * a shared node (another job, a data loader, a busy neighbour) a spinning
 * worker burns the time slice that the thread it waits for needs, and 2
 * threads fall far below 1 thread (docs/PERFORMANCE.md, "Under
 * contention"). A short spin keeps the hand-off between back-to-back regions
 * fast when the cores are free and gives the core away soon when they are not.
 *
 * libgomp reads its environment once, when it is loaded, before main(), and
 * OpenMP has no call that changes the wait policy afterwards. Setting the
 * variable even in the executable's .preinit_array is too late: the C
 * library's own start-up resets the environment to the one the kernel passed.
 * So the program executes itself again, once, with the variable set.
 * (A binary replaced or deleted since it started is not executed again.)
 */
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "tapegrad/runtime.h"

/* About 50 microseconds of spinning (a pause instruction takes roughly 140
 * cycles on Skylake and later): longer than the gap between two kernels of
 * one step, far shorter than a scheduler time slice. */
#define TG_OMP_SPINCOUNT_DEFAULT "1000"

void tg_omp_spin_setup(char **argv) {
    if (!argv || !argv[0] || getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"))
        return;
    if (setenv("GOMP_SPINCOUNT", TG_OMP_SPINCOUNT_DEFAULT, 0) != 0)
        return;
    /* The file itself, not /proc/self/exe: the process's name (comm, what
     * ps, pgrep and the launchers' process trees show) is the basename of
     * the path executed, and must stay "tapegrad". */
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || (size_t)n >= sizeof self - 1)
        return;
    self[n] = '\0';
    /* Only returns on failure; the program then goes on with libgomp's
     * defaults (slower on a busy machine, not wrong), and the variable stays
     * set for the processes it starts. */
    execv(self, argv);
}
