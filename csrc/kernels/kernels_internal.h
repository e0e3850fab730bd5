// Private to csrc/kernels: one table per instruction set, defined in its own translation unit and
// compiled with that instruction set's flags. Only dispatch.cpp (baseline flags) refers to them,
// and only after checking the CPU can run them.
//
// Every SIMD file keeps its code in an anonymous namespace and uses no std:: templates, so no
// out-of-line instantiation compiled with -mavx512f (say) can be picked by the linker for a
// caller on a CPU without it.
#pragma once

#include "kernels.h"

namespace sage::kernels {

// 1 / scale of a Q8_0 block, or 0 when the scale is 0 or so small that 1 / scale overflows:
// such a block quantizes to zeros on every path (docs/format.md). `static` keeps one copy per
// instruction-set file, so the linker never picks an AVX-512 copy for the scalar path.
static inline float inverse_scale(float scale) {
    if (scale == 0.0f) return 0.0f;
    const float inv = 1.0f / scale;
    return inv - inv == 0.0f ? inv : 0.0f;  // inf - inf is NaN: the overflow case
}

// s = (q . k) * scale - slope * distance for the key in `slot` (keys stored [d_head][horizon]),
// in attend_group's canonical order (kernels_scalar.cpp): the scalar path scores every key with
// it, and the SIMD paths the keys left over after their full vectors.
static inline float attention_score(const float* q, const float* keys, int64_t horizon,
                                    int64_t slot, int d_head, float scale, float slope,
                                    float distance) {
    float dot = 0.0f;
    for (int c = 0; c < d_head; ++c) dot = dot + q[c] * keys[c * horizon + slot];
    return dot * scale - slope * distance;
}

extern const KernelTable kScalarTable;
#if defined(SAGE_KERNELS_HAVE_X86)
extern const KernelTable kAvx2Table;
extern const KernelTable kAvx512VnniTable;
#endif
#if defined(SAGE_KERNELS_HAVE_NEON)
extern const KernelTable kNeonTable;
extern const KernelTable kNeonDotTable;
#endif

}  // namespace sage::kernels
