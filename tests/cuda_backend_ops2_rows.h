/*
 * tests/cuda_backend_ops2_rows.h: the rows of test_cuda_backend.c's table
 * for the ops of runtime/core/ops_math2.c (builders in
 * cuda_backend_ops2_builders.h), included inside that table.
 */
#define CB2(nm, opx, f, n, ...) {.name = nm, .op = TG_OP_##opx, .fn = b_##f, .nin = n, .in = {__VA_ARGS__}}
    CB2("ne ties", NE, ne, 2, IN(CB_SMALLINT, 2, 3, 4), IN(CB_SMALLINT, 1, 4)),
    CB2("gt transposed", GT, gt_t, 2, IN(CB_SMALLINT, 2, 4, 3), IN(CB_SMALLINT, 2, 3, 4)),
    CB2("ge large", GE, ge, 2, IN(CB_SMALLINT, 2, 300, 257), IN(CB_SMALLINT, 2, 1, 257)),
    CB2("lt", LT, lt, 2, IN(CB_RAND, 2, 3, 4), IN(CB_RAND, 0, 0)),
    CB2("le ties", LE, le, 2, IN(CB_SMALLINT, 3, 2, 3, 4), IN(CB_SMALLINT, 3, 2, 3, 4)),
    CB2("maximum", MAXIMUM, maximum, 2, IN(CB_RAND, 3, 2, 3, 1), IN(CB_RAND, 2, 3, 4)),
    CB2("maximum transposed", MAXIMUM, maximum_t, 2, IN(CB_RAND, 2, 5, 3), IN(CB_RAND, 2, 3, 5)),
    CB2("maximum large", MAXIMUM, maximum, 2, IN(CB_RAND, 2, 300, 257), IN(CB_RAND, 1, 257)),
    CB2("minimum", MINIMUM, minimum, 2, IN(CB_RAND, 2, 4, 3), IN(CB_RAND, 1, 3)),
    CB2("sin", SIN, sin, 1, IN(CB_RAND, 2, 3, 4)),
    CB2("sin large", SIN, sin, 1, IN(CB_RAND, 2, 300, 257)),
    CB2("cos transposed", COS, cos_t, 1, IN(CB_RAND, 2, 4, 3)),
    CB2("cast f64 round trip", CAST, cast_rt, 1, IN(CB_RAND, 2, 3, 5)),
    CB2("cast to i64", CAST, cast_i64, 1, IN(CB_RAND, 2, 4, 6)),
    CB2("cast to u8 to i32", CAST, cast_u8_i32, 1, IN(CB_POS, 2, 3, 4)),
    CB2("cumsum axis 1", CUMSUM, cumsum_1, 1, IN(CB_RAND, 3, 2, 5, 3)),
    CB2("cumsum transposed", CUMSUM, cumsum_0_t, 1, IN(CB_RAND, 2, 4, 6)),
    CB2("cumsum long", CUMSUM, cumsum_1, 1, IN(CB_RAND, 2, 3, 700)),
    CB2("topk indices ties", TOPK_INDICES, topk_idx, 1, IN(CB_SMALLINT, 2, 5, 7)),
    CB2("bottomk indices transposed", TOPK_INDICES, bottomk_idx_t, 1, IN(CB_RAND, 2, 4, 6)),
    CB2("topk values", TOPK_INDICES, topk_vals, 1, IN(CB_RAND, 3, 2, 3, 9)),
    CB2("add i64 broadcast", ADD, add_i64, 2, IDX(cb2_ia, 2, 2, 3), IDX(cb2_ib3, 1, 3)),
    CB2("eq i64 then i64 sum", EQ, eq_sum_i64, 2, IDX(cb2_ia, 2, 3, 2), IDX(cb2_ib, 2, 3, 2)),
    CB2("sum i64 transposed", SUM, sum_i64_1, 1, IDX(cb2_ia, 2, 2, 3)),
    CB2("mul/sub/maximum i64", MAXIMUM, mul_i64_max, 2, IDX(cb2_ia, 1, 6), IDX(cb2_ib, 1, 6)),
    CB2("logsumexp", EXP, logsumexp, 1, IN(CB_RAND, 2, 4, 9)),
    CB2("std", SQRT, std, 1, IN(CB_RAND, 2, 6, 5)),
    CB2("masked_fill", WHERE, masked_fill, 2, IN(CB_RAND, 2, 3, 4), IN(CB_COND, 1, 4)),
    CB2("index_select", GATHER, index_select, 2, IN(CB_RAND, 2, 3, 4), IDX(cb2_sel, 1, 5)),
#undef CB2
