/*
 * The gpt data-parallel on 1, 2 and 4 ranks: its tied output layer gives
 * wte.weight two gradients per backward (the head's and the embedding's),
 * which the all-reduce must carry summed, and attention, layer norm and the
 * position table must average like any layer. Each rank trains the small
 * gpt (tg_gpt_model_text) with SGD (momentum, weight decay with the decay
 * mask) on its slice of a global batch of token windows; every rank also
 * trains the same model alone, in a second context, on the whole batch:
 * after every step the
 * data-parallel parameters must equal that 1-rank run within 1e-5 relative
 * and be bit-identical across ranks.
 */
#include "mpi_check.h"

#include <math.h>
#include <string.h>

#include "tapegrad/modelfile.h"
#include "tapegrad/optim.h"

enum {
    T = 8,
    V = 11,
    GB = 8,
    STEPS = 5
};

static int64_t xs[STEPS][GB * T], ys[STEPS][GB * T];

static tg_ctx *new_ctx(void) {
    tg_ctx *ctx = NULL;
    tg_ctx_config cc = {.device = TG_DEVICE_CPU, .threads = 1};
    if (tg_ctx_new(&cc, &ctx) != TG_OK) {
        fprintf(stderr, "%s\n", tg_last_init_error());
        exit(2);
    }
    return ctx;
}

typedef struct lm {
    tg_ctx *ctx;
    tg_params ps;
    tg_net *net;
    tg_optim *opt;
} lm;

static void make(lm *m) {
    m->ctx = new_ctx();
    size_t n = tg_gpt_model_text(NULL, 0, 2, 2, 16, 0, 0.0);
    char *text = malloc(n);
    tg_gpt_model_text(text, n, 2, 2, 16, 0, 0.0);
    int64_t t = T;
    tg_net_options o = {.path = "gpt", .in_ndim = 1, .in_shape = &t, .classes = V, .seed = 3};
    memset(&m->ps, 0, sizeof m->ps);
    CHECK(tg_net_build(m->ctx, text, n - 1, &o, &m->ps, &m->net) == TG_OK, "%s",
          tg_ctx_error(m->ctx));
    free(text);
    /* SGD: Adam's normalised steps would blow the rounding noise of the
     * gradients that are 0 in exact arithmetic (the key bias: softmax does
     * not see a constant added to a row) up to lr-sized differences. */
    tg_optim_config oc = tg_optim_defaults(TG_OPTIM_SGD);
    oc.momentum = 0.9;
    oc.weight_decay = 0.1;
    oc.no_decay = m->ps.no_decay;
    CHECK(tg_optim_new(m->ctx, &oc, m->ps.nparams, m->ps.params, &m->opt) == TG_OK, "%s",
          tg_ctx_error(m->ctx));
}

/* Forward and backward of sequences [lo, hi) of step k's batch. */
static void backward(lm *m, int k, int lo, int hi) {
    int64_t sh[2] = {hi - lo, T}, n = (hi - lo) * T, ls[2] = {n, V};
    tg_tensor *x = tg_from_data(m->ctx, TG_I64, 2, sh, xs[k] + lo * T);
    tg_tensor *y = tg_from_data(m->ctx, TG_I64, 1, &n, ys[k] + lo * T);
    tg_tensor *l = tg_cross_entropy(
        m->ctx, tg_reshape(m->ctx, tg_net_forward(m->ctx, m->net, x, true), 2, ls), y, 0.0);
    CHECK(l && tg_backward(m->ctx, l, NULL, 0) == TG_OK, "%s", tg_ctx_error(m->ctx));
}

static void step(lm *m) {
    CHECK(tg_clip_grad_norm(m->ctx, m->ps.nparams, m->ps.params, 1.0, NULL) == TG_OK, "%s",
          tg_ctx_error(m->ctx));
    CHECK(tg_optim_step(m->ctx, m->opt, 0.1) == TG_OK, "%s", tg_ctx_error(m->ctx));
    CHECK(tg_optim_zero_grad(m->ctx, m->opt) == TG_OK, "%s", tg_ctx_error(m->ctx));
    tg_step_reset(m->ctx);
}

static double rel_diff(lm *a, lm *b, int i) {
    int64_t n = tg_numel(a->ps.params[i]);
    float *u = malloc((size_t)n * sizeof *u), *v = malloc((size_t)n * sizeof *v);
    tg_to_host(a->ctx, a->ps.params[i], u, (size_t)n * sizeof *u);
    tg_to_host(b->ctx, b->ps.params[i], v, (size_t)n * sizeof *v);
    double num = 0, den = 0;
    for (int64_t j = 0; j < n; j++) {
        num = fmax(num, fabs((double)u[j] - v[j]));
        den = fmax(den, fabs((double)v[j]));
    }
    free(u);
    free(v);
    return num / (den > 0 ? den : 1);
}

/* A digest of every parameter, compared across ranks. */
static void check_identical(tg_world *w, lm *m, int k) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < m->ps.nparams; i++) {
        int64_t n = tg_numel(m->ps.params[i]);
        unsigned char *b = malloc((size_t)n * 4);
        tg_to_host(m->ctx, m->ps.params[i], b, (size_t)n * 4);
        for (int64_t j = 0; j < n * 4; j++)
            h = (h ^ b[j]) * 1099511628211ull;
        free(b);
    }
    int64_t mine = (int64_t)(h >> 1), all[64];
    int n = tg_world_size(w);
    CHECK_OK(w, tg_allgather(w, &mine, all, 1, TG_I64, "digest"));
    for (int r = 1; r < n && r < 64; r++)
        CHECK(all[r] == all[0], "step %d: rank %d's parameters differ from rank 0's", k, r);
}

int main(int argc, char **argv) {
    tg_world *w;
    char err[512];
    if (tg_world_init(&argc, &argv, NULL, &w, err, sizeof err) != TG_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    tg_check_rank = tg_world_rank(w);
    int r = tg_world_rank(w), n = tg_world_size(w), lb = GB / n;
    uint32_t s = 777;
    for (int k = 0; k < STEPS; k++)
        for (int i = 0; i < GB * T; i++) {
            s = s * 1664525u + 1013904223u;
            xs[k][i] = (s >> 8) % V;
            ys[k][i] = (xs[k][i] * 3 + 1) % V;
        }
    lm m, ref;
    make(&m);
    make(&ref);
    tg_ddp *ddp = NULL;
    CHECK_OK(w, tg_ddp_new(m.ctx, w, m.ps.nparams, m.ps.params, 0, NULL, NULL, &ddp));
    for (int k = 0; ddp && k < STEPS; k++) {
        tg_world_set_step(w, k);
        backward(&m, k, r * lb, (r + 1) * lb);
        CHECK_OK(w, tg_ddp_wait(ddp));
        step(&m);
        backward(&ref, k, 0, GB);
        step(&ref);
        for (int i = 0; i < m.ps.nparams; i++) {
            double d = rel_diff(&m, &ref, i);
            CHECK(d <= 1e-5, "step %d: %s differs from the 1-rank run by %g", k,
                  m.ps.params[i]->name, d);
        }
        check_identical(w, &m, k);
    }
    tg_ddp_free(ddp);
    tg_optim_free(m.opt);
    tg_optim_free(ref.opt);
    tg_ctx_free(m.ctx);
    tg_ctx_free(ref.ctx);
    int rc = tg_check_finish(w, "mpi_gpt");
    tg_world_free(w);
    return rc;
}
