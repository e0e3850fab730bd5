// NEON kernels with the ARMv8.2 dot-product extension (Cortex-A76): int8 products with
// vdotq_s32. This file alone is compiled with -march=armv8.2-a+dotprod.
#define SAGE_NEON_DOT 1
#include "kernels_neon_impl.h"

namespace sage::kernels {
// The block attention attends query by query with this path's attend_group (the tiled version
// is x86's, where the extra registers of AVX-512 pay for it; not measured on a Cortex-A72/A76).
const KernelTable kNeonDotTable = {
    "neondot",
    quantize_row_q8_0,
    quantize_row_int8_each,
    matvec_q8_0,
    matvec_q4,
    matvec_f32,
    matvec_each_panel<BlockQ8_0, matvec_q8_0>,  // matmul_q8_0 (the session uses the panels)
    matvec_each_panel<BlockQ4, matvec_q4>,      // matmul_q4
    matmul_q8_0_panels,
    nullptr,  // matmul_q4_panels (kernels.h)
    swiglu,
    rmsnorm_each_row<matvec_f32>,
    attend_group,
    attend_group_q8,
    attend_each_query<attend_group>,
    attend_each_query<attend_group_q8>,
};
}  // namespace sage::kernels
