/*
 * kernels/cpu/cpu_blas_info.c: which OpenBLAS, and which of its kernels, the
 * CPU backend runs on (tg_blas_info_get, declared in tapegrad/runtime.h).
 *
 * A DYNAMIC_ARCH OpenBLAS (Debian's) carries kernels for many CPUs and picks
 * one set when it is loaded. OPENBLAS_CORETYPE overrides that choice; set to
 * an AVX2 core on an AVX-512 CPU it costs a third of the CNN's throughput,
 * and nothing else shows it, so the launcher reports what was chosen.
 */
#include <cblas.h>
#include <stdlib.h>
#include <strings.h>

#include "cpu.h"
#include "tapegrad/runtime.h"

/* OpenBLAS's names of its AVX-512 kernel sets (driver/others/dynamic.c). */
static const char *const avx512_cores[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};

void tg_blas_info_get(tg_blas_info *out) {
    /* CMake links OpenBLAS into every build, so both calls always exist; a
     * library that returns no name is reported as "unknown". */
    const char *core = openblas_get_corename();
    const char *config = openblas_get_config();
    const char *forced = getenv("OPENBLAS_CORETYPE");
    *out = (tg_blas_info){
        .core = core && *core ? core : "unknown",
        .config = config && *config ? config : "OpenBLAS",
        /* OpenBLAS ignores an empty value, so it forces nothing. */
        .forced_core = forced && *forced ? forced : NULL,
        .cpu_avx512 = tg__cpu_avx512(),
        .own_sgemm = tg__cpu_sgemm_on(),
    };
    for (size_t i = 0; i < sizeof avx512_cores / sizeof avx512_cores[0]; i++)
        if (strcasecmp(out->core, avx512_cores[i]) == 0)
            out->core_avx512 = true;
}
