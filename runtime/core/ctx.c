/* The context: errors, arenas, and the static tables generated from ops.def. */
#include "checked.h"
#include "internal.h"
#include "tapegrad/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
#define TG_X_(name, str) str,
    TG_STATUS_LIST(TG_X_)
#undef TG_X_
};
_Static_assert(sizeof status_names / sizeof status_names[0] == TG_STATUS_COUNT,
               "status table out of step with the enum");

const char *tg_status_str(tg_status s)
{
    if ((unsigned)s >= TG_STATUS_COUNT)
        return "unknown status";
    return status_names[s];
}

static const struct {
    const char *name;
    int arity;
    unsigned flags;
} op_info[] = {
#define TG_OP(E, n, ar, fl) [TG_OP_##E] = {#n, ar, fl},
#include "tapegrad/ops.def"
#undef TG_OP
};
_Static_assert(sizeof op_info / sizeof op_info[0] == TG_OP_COUNT, "op table out of step");

const char *tg_op_name(tg_op op) { return (unsigned)op < TG_OP_COUNT ? op_info[op].name : "?"; }
int tg_op_arity(tg_op op) { return (unsigned)op < TG_OP_COUNT ? op_info[op].arity : 0; }
unsigned tg_op_flags(tg_op op) { return (unsigned)op < TG_OP_COUNT ? op_info[op].flags : 0; }

size_t tg_dtype_size(tg_dtype dt)
{
    static const size_t sizes[TG_DTYPE_COUNT] = {4, 8, 1, 4, 8, 2};
    return (unsigned)dt < TG_DTYPE_COUNT ? sizes[dt] : 0;
}

const char *tg_dtype_name(tg_dtype dt)
{
    static const char *const names[TG_DTYPE_COUNT] = {"f32", "f64", "u8", "i32", "i64", "bf16"};
    return (unsigned)dt < TG_DTYPE_COUNT ? names[dt] : "?";
}

bool tg_dtype_is_float(tg_dtype dt) { return dt == TG_F32 || dt == TG_F64; }

const char *tg_device_name(tg_device d) { return d == TG_DEVICE_CUDA ? "cuda" : "cpu"; }

/* ---- errors ---- */

tg_status tg__fail(tg_ctx *ctx, tg_status s, const char *fmt, ...)
{
    if (ctx->status != TG_OK)
        return s;
    ctx->status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return s;
}

tg_status tg_ctx_status(const tg_ctx *ctx) { return ctx ? ctx->status : TG_ERR_INVALID; }
const char *tg_ctx_error(const tg_ctx *ctx) { return ctx ? ctx->err : "no context"; }
const tg_backend *tg_ctx_backend(const tg_ctx *ctx) { return ctx->be; }

void tg_ctx_clear_error(tg_ctx *ctx)
{
    ctx->status = TG_OK;
    ctx->err[0] = '\0';
}

bool tg__check_args(tg_ctx *ctx, const char *op, int n, tg_tensor *const *ts)
{
    for (int i = 0; i < n; i++) {
        if (ts[i]) {
            if (!tg__check_live(ctx, op, i + 1, ts[i]))
                return false;
            continue;
        }
        /* A NULL operand most often comes from an earlier failed op: keep that
         * error, which names the real cause. */
        tg__fail(ctx, TG_ERR_INVALID, "%s: operand %d is NULL", op, i + 1);
        return false;
    }
    return true;
}

bool tg__check_live_slow(tg_ctx *ctx, const char *op, int i, const tg_tensor *t)
{
    uint64_t s = t->step;
    if (s == 0 || s == ctx->step + 1)
        return true;
    /* A released struct holds the poison word; one made in a later step
     * cannot be seen from an earlier one. */
    uint64_t from = (s >> 32) == TG__POISON_HI ? (s & 0xffffffffu) : s;
    char who[32] = "";
    if (i > 0)
        snprintf(who, sizeof who, "operand %d: ", i);
    tg__fail(ctx, TG_ERR_INVALID,
             "%s: %stensor from step %llu used after tg_step_reset (now step %llu); step "
             "tensors die at the reset: make it again in each step, or copy it into a "
             "tg_persistent tensor before the loop",
             op, who, (unsigned long long)(from ? from - 1 : 0), (unsigned long long)ctx->step);
    return false;
}

bool tg__check_float(tg_ctx *ctx, const char *op, const tg_tensor *t)
{
    if (tg_dtype_is_float(t->dtype))
        return true;
    tg__fail(ctx, TG_ERR_DTYPE, "%s: expected a float tensor (f32 or f64), got %s", op,
             tg_dtype_name(t->dtype));
    return false;
}

bool tg__check_same_dtype(tg_ctx *ctx, const char *op, const tg_tensor *a, const tg_tensor *b)
{
    if (a->dtype == b->dtype)
        return true;
    tg__fail(ctx, TG_ERR_DTYPE, "%s: operands have different dtypes (%s and %s)", op,
             tg_dtype_name(a->dtype), tg_dtype_name(b->dtype));
    return false;
}

bool tg__axis(tg_ctx *ctx, const char *op, int ndim, int *axis)
{
    int ax = *axis < 0 ? *axis + ndim : *axis;
    if (ax < 0 || ax >= ndim || (ndim == 0)) {
        tg__fail(ctx, TG_ERR_AXIS, "%s: axis %d out of range for a tensor of %d dims", op, *axis,
                 ndim);
        return false;
    }
    *axis = ax;
    return true;
}

/* ---- arenas ---- */

#define TG__ALIGN 64

static void *chunk_mem_alloc(tg_ctx *ctx, tg__arena *a, size_t size)
{
    ctx->alloc_count++;
    if (a->device)
        return ctx->be->alloc(ctx->bstate, size);
    return aligned_alloc(TG__ALIGN, size);
}

static void chunk_mem_free(tg_ctx *ctx, tg__arena *a, void *p)
{
    if (a->device)
        ctx->be->free(ctx->bstate, p);
    else
        free(p);
}

/* Both entry points below; static so that it is inlined into each (the
 * exported functions of a shared library are not). */
static inline void *arena_take(tg_ctx *ctx, tg__arena *a, size_t nbytes)
{
    size_t n;
    /* A request near SIZE_MAX would round up to a small size. */
    if (nbytes > TG__MAX_BYTES || !tg__round_up_size(nbytes, TG__ALIGN, &n))
        return NULL;
    if (n == 0)
        n = TG__ALIGN;
    tg__chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > a->min_chunk ? n : a->min_chunk;
        /* Grow geometrically so that the first step needs few chunks (while
         * the double fits). */
        if (c && c->size <= TG__MAX_BYTES / 2 && size < 2 * c->size)
            size = 2 * c->size;
        tg__chunk *nc = malloc(sizeof *nc);
        char *mem = nc ? chunk_mem_alloc(ctx, a, size) : NULL;
        if (!mem) {
            free(nc);
            return NULL;
        }
        *nc = (tg__chunk){.base = mem, .size = size, .used = 0, .next = c};
        a->head = c = nc;
    }
    void *p = c->base + c->used;
    c->used += n;
    a->used += n;
    if (a->used > a->high_water)
        a->high_water = a->used;
    return p;
}

void *tg__arena_try(tg_ctx *ctx, tg__arena *a, size_t nbytes)
{
    return arena_take(ctx, a, nbytes);
}

void *tg__arena_alloc(tg_ctx *ctx, tg__arena *a, size_t nbytes)
{
    void *p = arena_take(ctx, a, nbytes);
    if (!p)
        tg__fail(ctx, TG_ERR_NOMEM, "out of memory allocating %zu bytes%s", nbytes,
                 nbytes > TG__MAX_BYTES ? " (more than any allocation can hold)" : "");
    return p;
}

void tg__arena_release(tg_ctx *ctx, tg__arena *a)
{
    tg__chunk *c = a->head;
    while (c) {
        tg__chunk *next = c->next;
        chunk_mem_free(ctx, a, c->base);
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used = 0;
}

void tg__arena_reset(tg_ctx *ctx, tg__arena *a)
{
    /* With more than one chunk, replace them all by one chunk as large as the
     * high-water mark: from then on a step of the same shape fits in it. */
    if (a->head && a->head->next) {
        size_t hw = a->high_water;
        tg__arena_release(ctx, a);
        size_t saved_min = a->min_chunk;
        a->min_chunk = hw;
        void *p = tg__arena_alloc(ctx, a, hw);
        a->min_chunk = saved_min;
        if (p)
            a->head->used = 0;
    } else if (a->head) {
        a->head->used = 0;
    }
    a->used = 0;
}

/* Debug mode: fill what the arena handed out with poison (see
 * TG__POISON_HI), or, for device memory, NaN. */
static void arena_poison(tg_ctx *ctx, tg__arena *a, uint64_t step)
{
    for (tg__chunk *c = a->head; c; c = c->next) {
        if (a->device) {
            /* The f32 NaN 0xffffffff in every word: read as f64 it is the
             * NaN 0xffffffffffffffff, as integers -1. (A double NaN keeps
             * its sign and the top of its payload when it becomes a float.) */
            uint64_t bits = UINT64_MAX;
            double nan_all_ones;
            memcpy(&nan_all_ones, &bits, sizeof nan_all_ones);
            if (c->used >= 4)
                ctx->be->fill(ctx->bstate, TG_F32, (int64_t)(c->used / 4), nan_all_ones, c->base);
            continue;
        }
        uint64_t w = (uint64_t)TG__POISON_HI << 32 | ((step + 1) & 0xffffffffu);
        uint64_t *p = (uint64_t *)(void *)c->base;
        for (size_t i = 0; i < c->used / sizeof w; i++)
            p[i] = w;
    }
}

void tg_arena_stats(const tg_ctx *ctx, size_t *used, size_t *reserved, size_t *high_water)
{
    size_t res = 0;
    for (const tg__chunk *c = ctx->step_data.head; c; c = c->next)
        res += c->size;
    if (used)
        *used = ctx->step_data.used;
    if (reserved)
        *reserved = res;
    if (high_water)
        *high_water = ctx->step_data.high_water;
}

uint64_t tg_ctx_alloc_count(const tg_ctx *ctx) { return ctx->alloc_count; }

/* ---- the context ---- */

static char init_error[256];

/* Debug mode: on when built with TG_DEBUG_STEPS, unless the environment
 * variable TG_DEBUG_STEPS is 0; else on when the variable is set and not 0. */
static bool debug_steps_default(void)
{
    const char *e = getenv("TG_DEBUG_STEPS");
    if (e && *e)
        return strcmp(e, "0") != 0;
#ifdef TG_DEBUG_STEPS
    return true;
#else
    return false;
#endif
}

const char *tg_last_init_error(void) { return init_error; }

tg_status tg_ctx_new(const tg_ctx_config *cfg, tg_ctx **out)
{
    tg_ctx_config def = {.device = TG_DEVICE_CPU, .threads = 0};
    if (!cfg)
        cfg = &def;
    if (!out) {
        snprintf(init_error, sizeof init_error, "ctx_new: NULL output pointer");
        return TG_ERR_INVALID;
    }
    *out = NULL;
    if (cfg->device != TG_DEVICE_CPU && cfg->device != TG_DEVICE_CUDA) {
        snprintf(init_error, sizeof init_error,
                 "ctx_new: unknown device %d (expected TG_DEVICE_CPU = %d or TG_DEVICE_CUDA = %d)",
                 (int)cfg->device, (int)TG_DEVICE_CPU, (int)TG_DEVICE_CUDA);
        return TG_ERR_INVALID;
    }
    const tg_backend *be = cfg->device == TG_DEVICE_CUDA ? tg_backend_cuda() : tg_backend_cpu();
    if (!be) {
        snprintf(init_error, sizeof init_error, "the %s backend is not built into this library",
                 tg_device_name(cfg->device));
        return TG_ERR_UNSUPPORTED;
    }
    tg_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        snprintf(init_error, sizeof init_error, "out of memory creating a context");
        return TG_ERR_NOMEM;
    }
    ctx->be = be;
    ctx->grad_enabled = true;
    ctx->tape_base = 1;
    ctx->debug_steps = debug_steps_default();
    ctx->step_meta.min_chunk = 64 * 1024;
    ctx->step_meta_alt.min_chunk = 64 * 1024;
    ctx->step_data.min_chunk = 1 << 20;
    ctx->step_data.device = true;
    ctx->pers_meta.min_chunk = 16 * 1024;
    ctx->pers_data.min_chunk = 1 << 20;
    ctx->pers_data.device = true;
    if (be->init) {
        tg_status s = be->init(&ctx->bstate, cfg->threads, init_error, sizeof init_error);
        if (s != TG_OK) {
            free(ctx);
            return s;
        }
    }
    *out = ctx;
    return TG_OK;
}

void tg_ctx_free(tg_ctx *ctx)
{
    if (!ctx)
        return;
    tg__arena_release(ctx, &ctx->step_meta);
    tg__arena_release(ctx, &ctx->step_meta_alt);
    tg__arena_release(ctx, &ctx->step_data);
    tg__arena_release(ctx, &ctx->pers_meta);
    tg__arena_release(ctx, &ctx->pers_data);
    free(ctx->records);
    free(ctx->persistent);
    free(ctx->touched);
    if (ctx->be->release)
        ctx->be->release(ctx->bstate);
    free(ctx);
}

void tg_step_reset(tg_ctx *ctx)
{
    for (int64_t i = 0; i < ctx->npersistent; i++) {
        tg_tensor *t = ctx->persistent[i];
        if (t->grad && !t->grad->storage->persistent)
            t->grad = NULL;
        t->gacc = NULL;
    }
    ctx->tape_base += (uint64_t)ctx->nrecords;
    ctx->nrecords = 0;
    if (ctx->debug_steps) {
        arena_poison(ctx, &ctx->step_meta, ctx->step);
        arena_poison(ctx, &ctx->step_data, ctx->step);
        tg__arena t = ctx->step_meta;
        ctx->step_meta = ctx->step_meta_alt;
        ctx->step_meta_alt = t;
    }
    ctx->step++;
    tg__arena_reset(ctx, &ctx->step_meta);
    tg__arena_reset(ctx, &ctx->step_data);
    if (ctx->be->step)
        ctx->be->step(ctx->bstate);
}

tg_status tg_synchronize(tg_ctx *ctx)
{
    if (ctx->be->synchronize && ctx->be->synchronize(ctx->bstate) != TG_OK)
        return tg__fail(ctx, TG_ERR_BACKEND, "synchronising the %s device failed",
                        ctx->be->name);
    return TG_OK;
}

bool tg_grad_enabled(const tg_ctx *ctx) { return ctx->grad_enabled; }

bool tg_set_grad_enabled(tg_ctx *ctx, bool enabled)
{
    bool prev = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return prev;
}

const char *tg_precision_name(tg_precision p)
{
    return p == TG_PRECISION_F32 ? "f32" : p == TG_PRECISION_BF16 ? "bf16" : "?";
}

tg_precision tg_ctx_precision(const tg_ctx *ctx) { return ctx->precision; }

/* One tiny matmul and convolution in bf16: the backend says whether it can. */
static tg_status precision_probe(tg_ctx *ctx)
{
    const int64_t s2[] = {2, 2}, sx[] = {1, 1, 3, 3}, sw[] = {1, 1, 2, 2};
    bool grad = tg_set_grad_enabled(ctx, false);
    tg_tensor *a = tg_zeros(ctx, TG_F32, 2, s2);
    tg_tensor *x = tg_zeros(ctx, TG_F32, 4, sx), *w = tg_zeros(ctx, TG_F32, 4, sw);
    tg_tensor *y = a && x && w ? tg_matmul(ctx, a, a) : NULL;
    tg_tensor *z = y ? tg_conv2d(ctx, x, w, NULL, NULL) : NULL;
    tg_set_grad_enabled(ctx, grad);
    return z ? TG_OK : ctx->status;
}

tg_status tg_ctx_set_precision(tg_ctx *ctx, tg_precision p)
{
    if (p != TG_PRECISION_F32 && p != TG_PRECISION_BF16)
        return tg__fail(ctx, TG_ERR_INVALID, "set_precision: unknown precision %d (expected "
                        "TG_PRECISION_F32 or TG_PRECISION_BF16)", (int)p);
    if (ctx->status != TG_OK)
        return ctx->status;
    const tg_precision prev = ctx->precision;
    ctx->precision = p;
    if (p == TG_PRECISION_BF16 && prev != p && precision_probe(ctx) != TG_OK) {
        ctx->precision = prev;
        char why[sizeof ctx->err];
        snprintf(why, sizeof why, "%s", ctx->err);
        tg_status st = ctx->status == TG_ERR_UNSUPPORTED ? TG_ERR_UNSUPPORTED : ctx->status;
        tg_ctx_clear_error(ctx);
        return tg__fail(ctx, st, "set_precision bf16: the %s backend cannot compute in bf16: %s",
                        ctx->be->name, why);
    }
    return TG_OK;
}

void tg_set_grad_hook(tg_ctx *ctx, tg_grad_hook_fn fn, void *user)
{
    ctx->hook = fn;
    ctx->hook_user = user;
}

int64_t tg_tape_size(const tg_ctx *ctx) { return ctx->nrecords; }
