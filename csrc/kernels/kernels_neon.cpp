// NEON kernels for ARMv8.0 (Cortex-A72): int8 products with vmull_s8 / vpadalq_s16.
#define SAGE_NEON_DOT 0
#include "kernels_neon_impl.h"

namespace sage::kernels {
const KernelTable kNeonTable = {
    "neon", quantize_row_q8_0, matvec_q8_0,     matvec_q4, matvec_f32, matmul_q8_0,
    swiglu, attend_group,      attend_group_q8,
};
}  // namespace sage::kernels
