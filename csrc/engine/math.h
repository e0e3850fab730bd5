// Elementary functions the engine computes itself so that every build, x86 or ARM, gets the same
// bits. Compiled with -ffp-contract=off (CMakeLists.txt), every operation rounds as written.
#pragma once

#include "../kernels/kernels.h"

namespace sage {

// e^x, the kernels' own (kernels.h): the same bits on every build and every CPU.
using kernels::exp_f32;

}  // namespace sage
