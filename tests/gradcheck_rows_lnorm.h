/*
 * tests/gradcheck_rows_lnorm.h: the gc_table rows of the fused layer norm
 * (runtime/core/ops_lnorm.c), included inside gc_table (gradcheck_table.h),
 * with the builders of gradcheck_table_lnorm.h: over the last dim and the
 * last two, a single row, a long row that crosses the kernel's 64-column
 * blocks, a strided input, and second order through the composed rule.
 */
    GC(LAYER_NORM, lnf1, "(3,4) over (4)", .nin = 3,
       .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 1, 4), GC_IN(R, 1, 4)}, GC_OUT(2, 3, 4), SO),
    GC(LAYER_NORM, lnf2, "(2,3,4) over (3,4)", .nin = 3,
       .in = {GC_IN(R, 3, 2, 3, 4), GC_IN(R, 2, 3, 4), GC_IN(R, 2, 3, 4)}, GC_OUT(3, 2, 3, 4),
       SO),
    GC(LAYER_NORM, lnf2, "one row (2,5) over (2,5)", .nin = 3,
       .in = {GC_IN(R, 2, 2, 5), GC_IN(R, 2, 2, 5), GC_IN(R, 2, 2, 5)}, GC_OUT(2, 2, 5)),
    GC(LAYER_NORM, lnf1, "(3,70) over (70), weight fixed", .nin = 3,
       .in = {GC_IN(R, 2, 3, 70), GC_CONST(R, 1, 70), GC_IN(R, 1, 70)}, GC_OUT(2, 3, 70),
       GC_SAMPLE(24)),
    GC(LAYER_NORM, lnf_view, "strided x", .nin = 3,
       .in = {GC_IN(R, 2, 5, 3), GC_IN(R, 1, 5), GC_IN(R, 1, 5)}, GC_OUT(2, 3, 5)),
    GC(LAYER_NORM, sq_lnf1, "squared (4,3) over (3)", .nin = 3,
       .in = {GC_IN(R, 2, 4, 3), GC_IN(R, 1, 3), GC_IN(R, 1, 3)}, SO),
    GC(LAYER_NORM, sq_lnf2, "squared (2,2,3) over (2,3)", .nin = 3,
       .in = {GC_IN(R, 3, 2, 2, 3), GC_IN(R, 2, 2, 3), GC_IN(R, 2, 2, 3)}, SO),
    GCN(LAYER_NORM_BACKWARD, lnb, "g x (3,4) over (4)", .nin = 3,
        .in = {GC_IN(R, 2, 3, 4), GC_IN(R, 2, 3, 4), GC_IN(R, 1, 4)}, GC_OUT(2, 3, 4)),
    GCN(LAYER_NORM_BACKWARD, lnb, "g x (2,2,3) over (2,3)", .nin = 3,
        .in = {GC_IN(R, 3, 2, 2, 3), GC_IN(R, 3, 2, 2, 3), GC_IN(R, 2, 2, 3)},
        GC_OUT(3, 2, 2, 3)),
