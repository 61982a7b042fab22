/* Backend lookup for builds without CUDA: the CUDA entry points exist and say
 * that no CUDA backend is present. With CUDA they live in kernels/cuda/. */
#include "tapegrad/kernels.h"

#include <stdio.h>

#ifndef TG_HAVE_CUDA
const tg_backend *tg_backend_cuda(void) { return NULL; }
int tg_cuda_device_count(void) { return 0; }

tg_status tg_cuda_available(char *err, size_t len) {
    snprintf(err, len, "this build has no CUDA backend (configure with nvcc present and "
                       "TG_CUDA=ON)");
    return TG_ERR_UNSUPPORTED;
}

tg_status tg_cuda_set_device(int device, char *err, size_t len) {
    snprintf(err, len, "cannot select GPU %d: this build has no CUDA backend", device);
    return TG_ERR_UNSUPPORTED;
}

void tg_cuda_describe(char *buf, size_t len) { snprintf(buf, len, "CUDA backend: not built\n"); }
#endif
