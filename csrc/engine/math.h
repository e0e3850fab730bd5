// Elementary functions the engine computes itself so that every build, x86 or ARM, gets the same
// bits: the C library's expf differs between versions and between its FMA and non-FMA variants.
// Compiled with -ffp-contract=off (CMakeLists.txt), every operation below rounds as written.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace sage {

// e^x with a relative error below 2e-7 for x in [-87, 88]; 0 below, +inf-free above (clamped).
inline float exp_f32(float x) {
    if (x < -87.0f) return 0.0f;
    if (x > 88.0f) x = 88.0f;
    // x = k ln2 + r with |r| <= ln2 / 2; ln2 is split in two so that k * kLn2Hi is exact.
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693359375f;
    constexpr float kLn2Lo = -2.12194440e-4f;
    const float k = std::nearbyint(x * kLog2e);
    const float r = (x - k * kLn2Hi) - k * kLn2Lo;
    // Taylor series of e^r to degree 7 (truncation error < 1e-8 on |r| <= 0.35), Horner order.
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    // Scale by 2^k through the exponent bits; k is in [-126, 127] here.
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    float two_k;
    std::memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k;
}

// z * sigmoid(z), the SwiGLU gate.
inline float silu_f32(float z) {
    return z / (1.0f + exp_f32(-z));
}

}  // namespace sage
