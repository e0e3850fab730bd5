// The NEON kernels, shared by kernels_neon.cpp (ARMv8.0, Cortex-A72) and kernels_neondot.cpp
// (ARMv8.2 dot product, Cortex-A76). Included inside an anonymous namespace by each of them, with
// SAGE_NEON_DOT set to 0 or 1. The f32 arithmetic follows the canonical order of
// kernels_scalar.cpp, one matrix row per lane; integer sums are exact either way.
#pragma once

#include <arm_neon.h>

#include <cstring>

#include "kernels_internal.h"

#ifndef SAGE_NEON_DOT
#error "define SAGE_NEON_DOT to 0 or 1 before including kernels_neon_impl.h"
#endif

namespace sage::kernels {
namespace {

constexpr int kRows = 8;  // rows of a matrix-vector product computed together (two quads)

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
    const int64_t nb = blocks_per_row(n);
    const int8x16_t qmin = vdupq_n_s8(-127);
    for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + b * kBlockSize;
        float padded[kBlockSize];
        const int64_t len = n - b * kBlockSize;
        if (len < kBlockSize) {
            std::memset(padded, 0, sizeof(padded));
            std::memcpy(padded, xb, static_cast<size_t>(len) * sizeof(float));
            xb = padded;
        }
        float32x4_t v[8];
        float32x4_t m = vdupq_n_f32(0.0f);
        for (int k = 0; k < 8; ++k) {
            v[k] = vld1q_f32(xb + 4 * k);
            m = vmaxq_f32(m, vabsq_f32(v[k]));
        }
        const float amax = vmaxvq_f32(m);
        const float scale = amax / 127.0f;
        const float inv = inverse_scale(scale);
        y[b].scale = scale;
        for (int h = 0; h < 2; ++h) {
            int16x8_t q16[2];
            for (int k = 0; k < 2; ++k) {
                // vcvtnq rounds to nearest, ties to even; vqmovn saturates.
                const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(v[4 * h + 2 * k], inv));
                const int32x4_t c = vcvtnq_s32_f32(vmulq_n_f32(v[4 * h + 2 * k + 1], inv));
                q16[k] = vcombine_s16(vqmovn_s32(a), vqmovn_s32(c));
            }
            const int8x16_t q8 = vcombine_s8(vqmovn_s16(q16[0]), vqmovn_s16(q16[1]));
            vst1q_s8(y[b].q + 16 * h, vmaxq_s8(q8, qmin));
        }
    }
}

// Four int32 partial sums of 32 products a[i] * x[i] (a0/a1, x0/x1: the two 16-byte halves).
inline int32x4_t dot32(int8x16_t a0, int8x16_t a1, int8x16_t x0, int8x16_t x1) {
#if SAGE_NEON_DOT
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), a0, x0), a1, x1);
#else
    // |a * x| <= 127 * 128, so two products fit an int16 lane.
    int16x8_t p0 = vmull_s8(vget_low_s8(a0), vget_low_s8(x0));
    p0 = vmlal_high_s8(p0, a0, x0);
    int16x8_t p1 = vmull_s8(vget_low_s8(a1), vget_low_s8(x1));
    p1 = vmlal_high_s8(p1, a1, x1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
#endif
}

// Four vectors of partial sums -> one vector holding the total of each (exact).
inline int32x4_t reduce4(const int32x4_t* v) {
    return vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]));
}

template <typename Block>
inline void group_rows(const Block* w, int64_t nb, int64_t r, int64_t rows, const Block** out) {
    for (int i = 0; i < kRows; ++i) out[i] = w + (r + i < rows ? r + i : rows - 1) * nb;
}

inline void store_rows(float* y, int64_t r, int64_t rows, const float32x4_t* acc) {
    if (rows - r >= kRows) {
        vst1q_f32(y + r, acc[0]);
        vst1q_f32(y + r + 4, acc[1]);
    } else {
        float t[kRows];
        vst1q_f32(t, acc[0]);
        vst1q_f32(t + 4, acc[1]);
        for (int64_t i = 0; i < rows - r; ++i) y[r + i] = t[i];
    }
}

// acc = acc + (ws * xs) * float(isum), one row per lane, for rows 4g .. 4g + 3 of the group.
template <typename Block>
inline float32x4_t accumulate(float32x4_t acc, const Block* const* wr, int64_t b, float xs,
                              int32x4_t isum) {
    const float ws_arr[4] = {wr[0][b].scale, wr[1][b].scale, wr[2][b].scale, wr[3][b].scale};
    const float32x4_t s = vmulq_n_f32(vld1q_f32(ws_arr), xs);
    return vaddq_f32(acc, vmulq_f32(s, vcvtq_f32_s32(isum)));
}

void matvec_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    const int64_t nb = blocks_per_row(cols);
    for (int64_t r = 0; r < rows; r += kRows) {
        const BlockQ8_0* wr[kRows];
        group_rows(w, nb, r, rows, wr);
        float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        for (int64_t b = 0; b < nb; ++b) {
            const int8x16_t x0 = vld1q_s8(x[b].q), x1 = vld1q_s8(x[b].q + 16);
            for (int g = 0; g < 2; ++g) {
                int32x4_t part[4];
                for (int i = 0; i < 4; ++i) {
                    const int8_t* q = wr[4 * g + i][b].q;
                    part[i] = dot32(vld1q_s8(q), vld1q_s8(q + 16), x0, x1);
                }
                acc[g] = accumulate(acc[g], wr + 4 * g, b, x[b].scale, reduce4(part));
            }
        }
        store_rows(y, r, rows, acc);
    }
}

void matvec_q4(const BlockQ4* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    const int64_t nb = blocks_per_row(cols);
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    const int8x16_t eight = vdupq_n_s8(8);
    for (int64_t r = 0; r < rows; r += kRows) {
        const BlockQ4* wr[kRows];
        group_rows(w, nb, r, rows, wr);
        float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        for (int64_t b = 0; b < nb; ++b) {
            // val[0] = even elements (meet the low nibbles), val[1] = odd (the high nibbles).
            const int8x16x2_t xd = vld2q_s8(x[b].q);
            for (int g = 0; g < 2; ++g) {
                int32x4_t part[4];
                for (int i = 0; i < 4; ++i) {
                    const uint8x16_t packed = vld1q_u8(wr[4 * g + i][b].q);
                    const int8x16_t lo =
                        vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, low4)), eight);
                    const int8x16_t hi =
                        vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), eight);
                    part[i] = dot32(lo, hi, xd.val[0], xd.val[1]);
                }
                acc[g] = accumulate(acc[g], wr + 4 * g, b, x[b].scale, reduce4(part));
            }
        }
        store_rows(y, r, rows, acc);
    }
}

// Lanes 0-3, 4-7, 8-11, 12-15 in a[0..3], then the halving tree.
inline float reduce16(const float32x4_t* a) {
    const float32x4_t s4 = vaddq_f32(vaddq_f32(a[0], a[2]), vaddq_f32(a[1], a[3]));
    const float32x2_t s2 = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));
    return vget_lane_f32(s2, 0) + vget_lane_f32(s2, 1);
}

template <int R>
inline void matvec_f32_rows(const float* w, const float* x, float* y, int64_t cols) {
    float32x4_t acc[R][4];
    for (int i = 0; i < R; ++i)
        for (int k = 0; k < 4; ++k) acc[i][k] = vdupq_n_f32(0.0f);
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16) {
        float32x4_t xv[4];
        for (int k = 0; k < 4; ++k) xv[k] = vld1q_f32(x + j + 4 * k);
        for (int i = 0; i < R; ++i)
            for (int k = 0; k < 4; ++k)
                acc[i][k] =
                    vaddq_f32(acc[i][k], vmulq_f32(vld1q_f32(w + i * cols + j + 4 * k), xv[k]));
    }
    if (j < cols) {  // tail: pad w = x = 0, which adds +0
        const size_t t = static_cast<size_t>(cols - j);
        float xt[16] = {};
        std::memcpy(xt, x + j, t * sizeof(float));
        for (int i = 0; i < R; ++i) {
            float wt[16] = {};
            std::memcpy(wt, w + i * cols + j, t * sizeof(float));
            for (int k = 0; k < 4; ++k)
                acc[i][k] =
                    vaddq_f32(acc[i][k], vmulq_f32(vld1q_f32(wt + 4 * k), vld1q_f32(xt + 4 * k)));
        }
    }
    for (int i = 0; i < R; ++i) y[i] = reduce16(acc[i]);
}

void matvec_f32(const float* w, const float* x, float* y, int64_t rows, int64_t cols) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) matvec_f32_rows<4>(w + r * cols, x, y + r, cols);
    for (; r < rows; ++r) matvec_f32_rows<1>(w + r * cols, x, y + r, cols);
}

}  // namespace
}  // namespace sage::kernels
