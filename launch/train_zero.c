/*
 * launch/train_zero.c: the parts of `tapegrad train --zero 1` outside the
 * DDP object: resuming (the checkpoint is read into host memory, the model
 * takes its parameters and buffers at once and the ddp its optimizer shard
 * once it exists) and the start-up report of the optimizer state's memory.
 */
#include <stdio.h>
#include <string.h>

#include "tapegrad/optim.h"
#include "train.h"

static const tg_ckpt_tensor *find(const tg_ckpt_tensor *ts, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(ts[i].name, name) == 0)
            return &ts[i];
    return NULL;
}

tg_status tg_train_zero_read(tg_trainer *tr, const char *path, tg_ckpt_tensor **ts, int *n,
                             char *why, size_t whylen) {
    tg_ctx *ctx = tg_trainer_ctx(tr);
    const tg_params *ps = tg_trainer_params(tr);
    const char *model = tg_model_name(tg_trainer_get_config(tr)->model);
    *ts = NULL;
    *n = 0;
    tg_status s = tg_ckpt_read_tensors(ctx, path, ts, n);
    if (s) {
        snprintf(why, whylen, "%s", tg_ctx_error(ctx));
        return s;
    }
    int others = 0;
    for (int i = 0; i < *n; i++)
        others += strncmp((*ts)[i].name, "optim.", 6) != 0;
    char fit[1024];
    if (!tg_train_ckpt_fits(model, ps, *ts, *n, fit, sizeof fit)) {
        snprintf(why, whylen, "%s: %s", path, fit);
        s = TG_ERR_SHAPE;
    } else if (others != ps->nparams + ps->nbuffers) {
        snprintf(why, whylen, "%s holds %d tensors besides optimizer state; model '%s' has %d",
                 path, others, model, ps->nparams + ps->nbuffers);
        s = TG_ERR_SHAPE;
    }
    bool prev = tg_set_grad_enabled(ctx, false);
    for (int i = 0; !s && i < ps->nparams + ps->nbuffers; i++) {
        tg_tensor *t = i < ps->nparams ? ps->params[i] : ps->buffers[i - ps->nparams];
        const tg_ckpt_tensor *x = find(*ts, *n, t->name);
        if (tg_copy_from_host(ctx, t, x->data, x->nbytes)) {
            snprintf(why, whylen, "%s: loading %s: %s", path, t->name, tg_ctx_error(ctx));
            s = tg_ctx_status(ctx);
        }
    }
    tg_set_grad_enabled(ctx, prev);
    if (s) {
        tg_ckpt_tensors_free(*ts, *n);
        *ts = NULL;
        *n = 0;
    }
    return s;
}

tg_status tg_train_optim_memory(tg_trainer *tr, tg_ddp *ddp, tg_world *w, bool zero, bool print) {
    size_t mine = 0, whole = 0;
    tg_optim *opt = zero ? tg_ddp_zero_optim(ddp) : tg_trainer_optim(tr);
    tg_tensor *st[3 * TG_PARAMS_MAX + 8];
    int k = tg_optim_state(opt, st, 3 * TG_PARAMS_MAX + 8);
    for (int i = 0; i < k && i < 3 * TG_PARAMS_MAX + 8; i++)
        mine += (size_t)tg_numel(st[i]) * tg_dtype_size(st[i]->dtype);
    /* The whole optimizer's: per trainable parameter a step count and one
     * or two tensors of its size. */
    const tg_trainer_config *c = tg_trainer_get_config(tr);
    int per = c->optim.kind == TG_OPTIM_SGD ? (c->optim.momentum != 0 ? 1 : 0) : 2;
    const tg_params *ps = tg_trainer_params(tr);
    for (int i = 0; per && i < ps->nparams; i++)
        if (ps->params[i]->requires_grad)
            whole += 8 + (size_t)per * (size_t)tg_numel(ps->params[i]) *
                             tg_dtype_size(ps->params[i]->dtype);
    int64_t v = (int64_t)mine, all[1024];
    int n = tg_world_size(w);
    if (n > 1 && (n > 1024 || tg_allgather(w, &v, all, 1, TG_I64, "optimizer memory") != TG_OK))
        return TG_ERR_COMM;
    int64_t most = v;
    for (int r = 0; r < n && n > 1; r++)
        most = all[r] > most ? all[r] : most;
    if (tg_world_rank(w) != 0 || !print)
        return TG_OK;
    if (zero)
        printf("optimizer state: %.2f MiB on rank 0, at most %.2f MiB on any rank (ZeRO-1 over %d "
               "ranks; %.2f MiB unsharded)\n",
               (double)mine / 1048576.0, (double)most / 1048576.0, n, (double)whole / 1048576.0);
    else
        printf("optimizer state: %.2f MiB on each rank\n", (double)mine / 1048576.0);
    fflush(stdout);
    return TG_OK;
}
