/*
 * tests/cuda_backend_attn_rows.h: the rows of test_cuda_backend.c's table
 * for the fused attention (builders in cuda_backend_attn_builders.h),
 * included inside that table. The forward rows also compare the gradients
 * of q, k and v, so both backward kernels run; the long ones cross the CPU
 * kernel's query (32) and key (64) tiles.
 */
#define CBA(nm, opx, f, n, ...) \
    {.name = nm, .op = TG_OP_##opx, .fn = b_##f, .nin = n, .in = {__VA_ARGS__}, .tol = 1e-4}
    CBA("sdpa (2,3,7,16)", SDPA, sdpa, 3, IN(CB_RAND, 4, 2, 3, 7, 16), IN(CB_RAND, 4, 2, 3, 7, 16),
        IN(CB_RAND, 4, 2, 3, 7, 16)),
    CBA("sdpa causal (1,2,130,64)", SDPA, sdpa_causal, 3, IN(CB_RAND, 4, 1, 2, 130, 64),
        IN(CB_RAND, 4, 1, 2, 130, 64), IN(CB_RAND, 4, 1, 2, 130, 64)),
    CBA("sdpa T_q 5, T_k 70, D 32", SDPA, sdpa, 3, IN(CB_RAND, 4, 2, 1, 5, 32),
        IN(CB_RAND, 4, 2, 1, 70, 32), IN(CB_RAND, 4, 2, 1, 70, 32)),
    CBA("sdpa causal T_q 9, T_k 4, 3-d", SDPA, sdpa_causal, 3, IN(CB_RAND, 3, 3, 9, 40),
        IN(CB_RAND, 3, 3, 4, 40), IN(CB_RAND, 3, 3, 4, 40)),
    CBA("sdpa_backward causal (2,2,33,16)", SDPA_BACKWARD, sdpa_bw, 4,
        IN(CB_RAND, 4, 2, 2, 33, 16), IN(CB_RAND, 4, 2, 2, 33, 16), IN(CB_RAND, 4, 2, 2, 33, 16),
        IN(CB_RAND, 4, 2, 2, 33, 16)),
#undef CBA
