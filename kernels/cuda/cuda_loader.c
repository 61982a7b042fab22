/*
 * kernels/cuda/cuda_loader.c: cuBLAS opened at run time, the generic table
 * loader that comm/nccl_loader.c shares, and the public entry points that
 * tell a caller whether this process can run CUDA work (see cuda_loader.h).
 */
#define _GNU_SOURCE /* dlinfo */
#define TG__WANT_CUBLAS
#include "cuda_loader.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tapegrad/kernels.h"

#ifndef TG_CUBLAS_SONAME
#error "the build names cuBLAS's soname (TG_CUBLAS_SONAME)"
#endif
#ifndef TG_CUBLAS_DIR
#define TG_CUBLAS_DIR ""
#endif

/* The driver library that libcudart_static opens itself. */
#define TG__LIBCUDA "libcuda.so.1"

const char *tg__dl_path(void *handle, char *buf, size_t len) {
    struct link_map *lm = NULL;
    if (!handle || dlinfo(handle, RTLD_DI_LINKMAP, &lm) != 0 || !lm || !lm->l_name)
        return NULL;
    snprintf(buf, len, "%s", lm->l_name);
    return buf;
}

/* Opens by soname (the loader's search: LD_LIBRARY_PATH, the cache, the
 * system directories), then in the toolkit directory the build used. */
static void *dl_open(const tg__dl_lib *lib, char *why, size_t len) {
    void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
    if (h)
        return h;
    const char *e = dlerror();
    snprintf(why, len, "%s", e ? e : "dlopen failed");
    if (lib->fallback && lib->fallback[0]) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", lib->fallback, lib->soname);
        h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
    }
    return NULL;
}

tg_status tg__dl_load(const tg__dl_lib *lib, void **handle, char *err, size_t errlen) {
    char why[512];
    void *h = dl_open(lib, why, sizeof why);
    if (!h) {
        snprintf(err, errlen,
                 "%s: %s not found (%s)%s%s; the CUDA path needs it on the loader's path "
                 "(LD_LIBRARY_PATH)",
                 lib->what, lib->soname, why, lib->fallback[0] ? "; also not in " : "",
                 lib->fallback);
        return TG_ERR_UNSUPPORTED;
    }
    for (size_t i = 0; i < lib->count; i++) {
        (void)dlerror();
        lib->fns[i] = dlsym(h, lib->names[i]);
        if (!lib->fns[i]) {
            char p[512];
            const char *e = dlerror();
            snprintf(err, errlen, "%s: %s (%s) has no function %s (%s)", lib->what, lib->soname,
                     tg__dl_path(h, p, sizeof p) ? p : "?", lib->names[i], e ? e : "dlsym failed");
            memset(lib->fns, 0, lib->count * sizeof *lib->fns);
            dlclose(h);
            return TG_ERR_UNSUPPORTED;
        }
    }
    *handle = h;
    return TG_OK;
}

/* ---- cuBLAS ---- */

tg__cublas_api tg__cublas;

static const char *const cublas_names[] = {
#define TG__X(m, sym) #sym,
    TG__CUBLAS_FUNCS(TG__X)
#undef TG__X
#define TG__Y(m, sym, type) #sym,
    TG__CUBLAS_FUNCS_TYPED(TG__Y)
#undef TG__Y
};

/* The table is filled through an array of pointers of the same layout. */
_Static_assert(sizeof(tg__cublas_api) == sizeof cublas_names / sizeof *cublas_names *
                                             sizeof(void *),
               "one table entry per cuBLAS name");

static pthread_once_t cublas_once = PTHREAD_ONCE_INIT;
static tg_status cublas_status;
static char cublas_msg[1024];
static void *cublas_handle;

static void cublas_load_once(void) {
    const tg__dl_lib lib = {.what = "cuBLAS",
                            .soname = TG_CUBLAS_SONAME,
                            .fallback = TG_CUBLAS_DIR,
                            .names = cublas_names,
                            .fns = (void **)&tg__cublas,
                            .count = sizeof cublas_names / sizeof *cublas_names};
    cublas_status = tg__dl_load(&lib, &cublas_handle, cublas_msg, sizeof cublas_msg);
}

tg_status tg__cublas_load(char *err, size_t errlen) {
    pthread_once(&cublas_once, cublas_load_once);
    if (cublas_status && err)
        snprintf(err, errlen, "%s", cublas_msg);
    return cublas_status;
}

/* ---- public entry points (tapegrad/kernels.h) ---- */

/* Whether the driver library can be opened, and where it is. */
static bool driver_found(char *path, size_t len, char *why, size_t wlen) {
    void *h = dlopen(TG__LIBCUDA, RTLD_LAZY | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, wlen, "%s", e ? e : "dlopen failed");
        return false;
    }
    if (!tg__dl_path(h, path, len))
        snprintf(path, len, "%s", TG__LIBCUDA);
    dlclose(h);
    return true;
}

tg_status tg_cuda_available(char *err, size_t len) {
    char e[1024];
    tg_status st = tg__cublas_load(e, sizeof e);
    if (st) {
        snprintf(err, len, "%s", e);
        return st;
    }
    char path[512], why[512];
    if (!driver_found(path, sizeof path, why, sizeof why)) {
        snprintf(err, len, "the NVIDIA driver (%s) is not installed on this node (%s)",
                 TG__LIBCUDA, why);
        return TG_ERR_UNSUPPORTED;
    }
    int n = 0;
    cudaError_t ce = cudaGetDeviceCount(&n);
    if (ce != cudaSuccess || n < 1) {
        snprintf(err, len, "no GPU is visible on this node (%s)",
                 ce != cudaSuccess ? cudaGetErrorString(ce) : "cudaGetDeviceCount: 0 devices");
        (void)cudaGetLastError();
        return TG_ERR_UNSUPPORTED;
    }
    return TG_OK;
}

tg_status tg_cuda_set_device(int device, char *err, size_t len) {
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess) {
        snprintf(err, len, "cudaSetDevice(%d): %s", device, cudaGetErrorString(ce));
        (void)cudaGetLastError();
        return TG_ERR_BACKEND;
    }
    return TG_OK;
}

/* Appends formatted text to buf at *at. */
__attribute__((format(printf, 4, 5))) static void line(char *buf, size_t len, size_t *at,
                                                       const char *fmt, ...) {
    if (*at >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *at, len - *at, fmt, ap);
    va_end(ap);
    if (n > 0)
        *at += (size_t)n;
}

void tg_cuda_describe(char *buf, size_t len) {
    size_t at = 0;
    char msg[1024], path[512], why[512];
    if (len)
        buf[0] = '\0';
    line(buf, len, &at, "CUDA backend: built (CUDA runtime %d.%d, linked statically)\n",
         CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    if (driver_found(path, sizeof path, why, sizeof why)) {
        int dv = 0;
        if (cudaDriverGetVersion(&dv) != cudaSuccess)
            dv = 0;
        line(buf, len, &at, "  driver: %s (CUDA %d.%d)\n", path, dv / 1000, dv % 1000 / 10);
    } else {
        line(buf, len, &at, "  driver: %s not found (%s)\n", TG__LIBCUDA, why);
    }
    if (tg__cublas_load(msg, sizeof msg) == TG_OK)
        line(buf, len, &at, "  cuBLAS: %s\n",
             tg__dl_path(cublas_handle, path, sizeof path) ? path : TG_CUBLAS_SONAME);
    else
        line(buf, len, &at, "  cuBLAS: not found: %s\n", msg);
    if (tg__nccl_describe(path, sizeof path, msg, sizeof msg))
        line(buf, len, &at, "  NCCL: %s\n", path);
    else
        line(buf, len, &at, "  NCCL: not found: %s\n", msg);
    int n = tg_cuda_device_count();
    line(buf, len, &at, "  GPUs: %d visible\n", n);
}
