/*
 * tests/torch_fixtures_ops.h: how test_torch_fixtures.c applies the ops by
 * name: the binary, unary and reduction tables, and the runners of the ops
 * of runtime/core/ops_math2.c (casts, cumsum, topk, logsumexp, var/std,
 * index_select, masked_fill, squeeze/unsqueeze). Included once, by that
 * file, after its parameter helpers. The composite names these runners
 * answer to are listed in tests/torch_fixtures_load.h (k_composites2).
 */

/* Ops that take the same operands, dispatched by name. */
typedef tg_tensor *(*binary_fn)(tg_ctx *, tg_tensor *, tg_tensor *);
typedef tg_tensor *(*unary_fn)(tg_ctx *, tg_tensor *);
typedef tg_tensor *(*reduce_fn)(tg_ctx *, tg_tensor *, int, const int *, bool);

static const struct {
    const char *name;
    binary_fn fn;
} k_binary[] = {
    {"add", tg_add}, {"sub", tg_sub}, {"mul", tg_mul}, {"div", tg_div},
    {"eq", tg_eq},   {"ne", tg_ne},   {"gt", tg_gt},   {"ge", tg_ge},
    {"lt", tg_lt},   {"le", tg_le},   {"matmul", tg_matmul},
    {"maximum", tg_maximum}, {"minimum", tg_minimum},
};

static const struct {
    const char *name;
    unary_fn fn;
} k_unary[] = {
    {"neg", tg_neg},   {"exp", tg_exp},
    {"log", tg_log},   {"sqrt", tg_sqrt},
    {"abs", tg_abs},   {"erf", tg_erf},
    {"relu", tg_relu}, {"sigmoid", tg_sigmoid},
    {"tanh", tg_tanh}, {"silu", tg_silu},
    {"gelu", tg_gelu}, {"sign", tg_sign},
    {"copy", tg_copy}, {"world_sum", tg_world_sum}, {"contiguous", tg_contiguous},
    {"sin", tg_sin},   {"cos", tg_cos},
};

static const struct {
    const char *name;
    reduce_fn fn;
} k_reduce[] = {
    {"sum", tg_sum},
    {"mean", tg_mean},
    {"max", tg_max},
    {"min", tg_min},
};

/* Applies a binary, unary or reduction op found in the tables above;
 * returns false when op is in none of them. */
static bool apply_table(tg_ctx *ctx, const operands *o, tg_tensor **r) {
    const fx_case *c = o->c;
    for (size_t i = 0; i < sizeof k_binary / sizeof k_binary[0]; i++)
        if (strcmp(c->op, k_binary[i].name) == 0) {
            *r = k_binary[i].fn(ctx, opnd(o, "a"), opnd(o, "b"));
            return true;
        }
    for (size_t i = 0; i < sizeof k_unary / sizeof k_unary[0]; i++)
        if (strcmp(c->op, k_unary[i].name) == 0) {
            *r = k_unary[i].fn(ctx, opnd(o, "a"));
            return true;
        }
    for (size_t i = 0; i < sizeof k_reduce / sizeof k_reduce[0]; i++)
        if (strcmp(c->op, k_reduce[i].name) == 0) {
            int axes[TG_MAX_DIMS];
            int na = axes_param(c, axes);
            *r = k_reduce[i].fn(ctx, opnd(o, "a"), na, axes, param_i64(c, "keepdim", 0) != 0);
            return true;
        }
    return false;
}

/* The float dtype of the running case (set by run_case). */
static tg_dtype g_run_dt = TG_F64;

static tg_dtype cast_target(const fx_case *c, tg_dtype float_dt) {
    const char *d = string_param(c, "dtype");
    if (strcmp(d, "float") == 0)
        return float_dt;
    if (strcmp(d, "i64") == 0)
        return TG_I64;
    if (strcmp(d, "i32") == 0)
        return TG_I32;
    if (strcmp(d, "u8") == 0)
        return TG_U8;
    CASE_FAIL("unknown cast dtype '%s'", d);
    return TG_F64;
}

/* The ops of ops_math2.c that take parameters; false when op is none. */
static bool apply_ops2(tg_ctx *ctx, const operands *o, tg_tensor **r) {
    const fx_case *c = o->c;
    const char *op = c->op;
    int axes[TG_MAX_DIMS];
    if (strcmp(op, "cast") == 0) {
        /* "float" is the run's float dtype (f64, or f32 for the f32 run). */
        *r = tg_to_dtype(ctx, opnd(o, "a"), cast_target(c, g_run_dt));
    } else if (strcmp(op, "cumsum") == 0) {
        *r = tg_cumsum(ctx, opnd(o, "a"), (int)param_i64(c, "axis", 0));
    } else if (strcmp(op, "topk_indices") == 0 || strcmp(op, "topk") == 0) {
        tg_tensor *idx = NULL;
        tg_tensor *v = tg_topk(ctx, opnd(o, "a"), param_i64(c, "k", 0), (int)param_i64(c, "axis", 0),
                               param_i64(c, "largest", 0) != 0, &idx);
        *r = op[4] == '_' ? idx : v;
    } else if (strcmp(op, "logsumexp") == 0) {
        int na = axes_param(c, axes);
        *r = tg_logsumexp(ctx, opnd(o, "a"), na, axes, param_i64(c, "keepdim", 0) != 0);
    } else if (strcmp(op, "var") == 0 || strcmp(op, "std") == 0) {
        int na = axes_param(c, axes);
        *r = (op[0] == 'v' ? tg_var : tg_std)(ctx, opnd(o, "a"), na, axes,
                                               param_i64(c, "unbiased", 0) != 0,
                                               param_i64(c, "keepdim", 0) != 0);
    } else if (strcmp(op, "index_select") == 0) {
        *r = tg_index_select(ctx, opnd(o, "a"), (int)param_i64(c, "axis", 0), opnd(o, "index"));
    } else if (strcmp(op, "masked_fill") == 0) {
        *r = tg_masked_fill(ctx, opnd(o, "a"), opnd(o, "mask"), param_f64(c, "value", 0));
    } else if (strcmp(op, "squeeze") == 0) {
        int na = axes_param(c, axes);
        *r = tg_squeeze(ctx, opnd(o, "a"), na, axes);
    } else if (strcmp(op, "unsqueeze") == 0) {
        *r = tg_unsqueeze(ctx, opnd(o, "a"), (int)param_i64(c, "axis", 0));
    } else {
        return false;
    }
    return true;
}
