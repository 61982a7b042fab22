/*
 * tests/cuda_backend_lnorm_rows.h: the rows of test_cuda_backend.c's table
 * for the fused layer norm (builders in cuda_backend_lnorm_builders.h),
 * included inside that table. The forward rows also compare the gradients
 * of x, weight and bias, so both backward kernels run; rows longer than the
 * CUDA block (256 threads) and more columns than one block of the
 * weight-gradient kernel.
 */
#define CBL(nm, opx, f, n, ...) \
    {.name = nm, .op = TG_OP_##opx, .fn = b_##f, .nin = n, .in = {__VA_ARGS__}, .tol = 1e-4}
    CBL("layer_norm (4,7,32) over (32)", LAYER_NORM, ln1, 3, IN(CB_RAND, 3, 4, 7, 32),
        IN(CB_RAND, 1, 32), IN(CB_RAND, 1, 32)),
    CBL("layer_norm (3,600) over (600)", LAYER_NORM, ln1, 3, IN(CB_RAND, 2, 3, 600),
        IN(CB_RAND, 1, 600), IN(CB_RAND, 1, 600)),
    CBL("layer_norm (2,3,5) over (3,5)", LAYER_NORM, ln2, 3, IN(CB_RAND, 3, 2, 3, 5),
        IN(CB_RAND, 2, 3, 5), IN(CB_RAND, 2, 3, 5)),
    CBL("layer_norm_backward (50,300)", LAYER_NORM_BACKWARD, ln_bw, 3, IN(CB_RAND, 2, 50, 300),
        IN(CB_RAND, 2, 50, 300), IN(CB_RAND, 1, 300)),
    CBL("layer_norm_backward (2,3,4) over (3,4)", LAYER_NORM_BACKWARD, ln_bw, 3,
        IN(CB_RAND, 3, 2, 3, 4), IN(CB_RAND, 3, 2, 3, 4), IN(CB_RAND, 2, 3, 4)),
#undef CBL
