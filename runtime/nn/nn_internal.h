/* Private to runtime/: helpers shared by the nn layer files. */
#ifndef TG_RUNTIME_NN_INTERNAL_H
#define TG_RUNTIME_NN_INTERNAL_H

#include "core/internal.h"
#include "tapegrad/nn.h"

/* A new persistent tensor named "<prefix>.<suffix>" (just suffix when prefix
 * is NULL or empty), registered in ps (when not NULL) as a parameter
 * (trainable: requires_grad) or a buffer. Fails on a duplicate name or a
 * full list. Values are zero. */
tg_tensor *tg__nn_tensor(tg_ctx *ctx, tg_params *ps, const char *prefix, const char *suffix,
                         bool trainable, tg_dtype dt, int ndim, const int64_t *shape);

#endif
