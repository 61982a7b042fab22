/*
 * comm/nccl_loader.c: NCCL opened at run time (built only with CUDA). The
 * table of the functions comm/nccl.c calls is resolved once, the first time
 * a world makes an NCCL communicator; see kernels/cuda/cuda_loader.h.
 */
#ifdef TG_HAVE_CUDA

#define TG__WANT_NCCL
#include "cuda/cuda_loader.h"

#include <pthread.h>
#include <stdio.h>

#ifndef TG_NCCL_SONAME
#error "the build names NCCL's soname (TG_NCCL_SONAME)"
#endif
#ifndef TG_NCCL_DIR
#define TG_NCCL_DIR ""
#endif

tg__nccl_api tg__nccl;

static const char *const nccl_names[] = {
#define TG__X(m, sym) #sym,
    TG__NCCL_FUNCS(TG__X)
#undef TG__X
};

_Static_assert(sizeof(tg__nccl_api) == sizeof nccl_names / sizeof *nccl_names * sizeof(void *),
               "one table entry per NCCL name");

static pthread_once_t nccl_once = PTHREAD_ONCE_INIT;
static tg_status nccl_status;
static char nccl_msg[1024];
static void *nccl_handle;

static void nccl_load_once(void)
{
    const tg__dl_lib lib = {.what = "NCCL",
                            .soname = TG_NCCL_SONAME,
                            .fallback = TG_NCCL_DIR,
                            .names = nccl_names,
                            .fns = (void **)&tg__nccl,
                            .count = sizeof nccl_names / sizeof *nccl_names};
    nccl_status = tg__dl_load(&lib, &nccl_handle, nccl_msg, sizeof nccl_msg);
}

tg_status tg__nccl_load(char *err, size_t errlen)
{
    pthread_once(&nccl_once, nccl_load_once);
    if (nccl_status && err)
        snprintf(err, errlen, "%s", nccl_msg);
    return nccl_status;
}

bool tg__nccl_describe(char *path, size_t plen, char *msg, size_t mlen)
{
    if (tg__nccl_load(msg, mlen) != TG_OK)
        return false;
    if (!tg__dl_path(nccl_handle, path, plen))
        snprintf(path, plen, "%s", TG_NCCL_SONAME);
    return true;
}

#else
typedef int tg__nccl_loader_unused;
#endif
