/* Learning-rate schedules: a pure function of the step index (see optim.h
 * for the definitions and how they relate to torch.optim.lr_scheduler). */
#include "core/internal.h"
#include "tapegrad/optim.h"

#include <math.h>

static bool finite_nonneg(double x) { return x >= 0.0 && !isinf(x); }

/* The single source of truth for validity, shared by tg_lr_check (which
 * explains) and tg_lr_at (which returns NaN). */
static const char *lr_problem(const tg_lr_schedule *s)
{
    if (!s)
        return "NULL schedule";
    if (s->kind != TG_LR_CONSTANT && s->kind != TG_LR_STEP && s->kind != TG_LR_COSINE)
        return "unknown kind (constant, step or cosine)";
    if (!finite_nonneg(s->lr))
        return "lr must be finite and >= 0";
    if (s->warmup_steps < 0)
        return "warmup_steps must be >= 0";
    if (s->kind == TG_LR_STEP && s->step_size < 1)
        return "step_size must be >= 1";
    if (s->kind == TG_LR_STEP && !finite_nonneg(s->gamma))
        return "gamma must be finite and >= 0";
    if (s->kind == TG_LR_COSINE && s->total_steps < 1)
        return "total_steps must be >= 1 (it counts the whole run)";
    if (s->kind == TG_LR_COSINE && !finite_nonneg(s->min_lr))
        return "min_lr must be finite and >= 0";
    return NULL;
}

tg_status tg_lr_check(tg_ctx *ctx, const tg_lr_schedule *s)
{
    const char *why = lr_problem(s);
    if (!why)
        return TG_OK;
    if (!s)
        return tg__fail(ctx, TG_ERR_INVALID, "lr schedule: %s", why);
    return tg__fail(ctx, TG_ERR_INVALID,
                    "lr schedule: %s (kind %d, lr %g, warmup_steps %lld, step_size %lld, gamma %g, "
                    "total_steps %lld, min_lr %g)",
                    why, (int)s->kind, s->lr, (long long)s->warmup_steps, (long long)s->step_size,
                    s->gamma, (long long)s->total_steps, s->min_lr);
}

double tg_lr_at(const tg_lr_schedule *s, int64_t step)
{
    if (lr_problem(s))
        return NAN;
    if (step < 0)
        step = 0;
    if (step < s->warmup_steps)
        return s->lr * (double)(step + 1) / (double)s->warmup_steps;
    int64_t t = step - s->warmup_steps;
    switch (s->kind) {
    case TG_LR_STEP:
        return s->lr * pow(s->gamma, (double)(t / s->step_size));
    case TG_LR_COSINE: {
        /* A warm-up as long as the run or longer leaves no cosine part: the
         * run ends in the warm-up (above), and a step past the run gets
         * min_lr. */
        int64_t total = s->total_steps - s->warmup_steps;
        if (t >= total)
            return s->min_lr;
        const double pi = 3.14159265358979323846;
        return s->min_lr +
               (s->lr - s->min_lr) * (1.0 + cos(pi * (double)t / (double)total)) / 2.0;
    }
    default:
        return s->lr;
    }
}
