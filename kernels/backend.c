/* Backend lookup for builds without CUDA: the CUDA entry points exist and say
 * that no CUDA backend is present. With CUDA they live in kernels/cuda/. */
#include "tapegrad/kernels.h"

#ifndef TG_HAVE_CUDA
const tg_backend *tg_backend_cuda(void) { return NULL; }
int tg_cuda_device_count(void) { return 0; }
#endif
