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
