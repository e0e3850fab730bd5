// The NEON kernels, shared by kernels_neon.cpp (ARMv8.0, Cortex-A72) and kernels_neondot.cpp
// (ARMv8.2 dot product, Cortex-A76). Included inside an anonymous namespace by each of them, with
// SAGE_NEON_DOT set to 0 or 1. The f32 arithmetic follows the canonical order of
// kernels_scalar.cpp, one matrix row per lane; integer sums are exact either way.
#pragma once

#include <arm_neon.h>

#include <cmath>
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

#if SAGE_NEON_DOT
// matmul_q8_0_panels (the dot-product path only): a panel's 16 rows are four vectors of four
// lanes, row 4j + i in lane i of vector j, each lane summing its own row, so no sum across lanes.
// Each 16 bytes of a panel block (four rows' bytes 4k .. 4k + 3, packed as q + 128) are turned
// back into q (xor 0x80) and meet x's bytes 4k .. 4k + 3 in one vdotq_laneq_s32: the exact block
// sums isum. Then matvec_q8_0's f32 step, block by block: the same bits. Against matvec_q8_0 on
// the file's layout a panel block needs no sums across lanes, no zeroed sum per row and one load of
// its scales instead of gathering them, a third fewer instructions; without the dot product the
// xor and the repeated bytes of x cost as much as that saves, so that path keeps the file's layout
// (docs/deploy.md, section 6, has the counts).
inline void panel_block_sums(const PanelBlockQ8& p, const BlockQ8_0& xb, int32x4_t* isum) {
    const int8x16_t x0 = vld1q_s8(xb.q), x1 = vld1q_s8(xb.q + 16);
    auto q = [&](int k, int j) {  // rows 4j .. 4j + 3, bytes 4k .. 4k + 3
        return vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p.q[k][4 * j]), vdupq_n_u8(0x80)));
    };
    for (int j = 0; j < 4; ++j) {
        int32x4_t sum = vdupq_n_s32(0);
        sum = vdotq_laneq_s32(sum, q(0, j), x0, 0);
        sum = vdotq_laneq_s32(sum, q(1, j), x0, 1);
        sum = vdotq_laneq_s32(sum, q(2, j), x0, 2);
        sum = vdotq_laneq_s32(sum, q(3, j), x0, 3);
        sum = vdotq_laneq_s32(sum, q(4, j), x1, 0);
        sum = vdotq_laneq_s32(sum, q(5, j), x1, 1);
        sum = vdotq_laneq_s32(sum, q(6, j), x1, 2);
        isum[j] = vdotq_laneq_s32(sum, q(7, j), x1, 3);
    }
}

void matmul_q8_0_panels(const PanelBlockQ8* w, const BlockQ8_0* x, float* y, int64_t rows,
                        int64_t cols, int64_t tokens, int64_t y_stride) {
    const int64_t nb = blocks_per_row(cols);
    for (int64_t r = 0; r < rows; r += kPanelRows) {
        const PanelBlockQ8* panel = w + (r / kPanelRows) * nb;
        for (int64_t t = 0; t < tokens; ++t) {  // the panel stays in the cache for every token
            const BlockQ8_0* xt = x + t * nb;
            float32x4_t acc[4];
            for (int j = 0; j < 4; ++j) acc[j] = vdupq_n_f32(0.0f);
            for (int64_t b = 0; b < nb; ++b) {
                int32x4_t isum[4];
                panel_block_sums(panel[b], xt[b], isum);
                for (int j = 0; j < 4; ++j) {
                    const float32x4_t s =
                        vmulq_n_f32(vld1q_f32(panel[b].scale + 4 * j), xt[b].scale);
                    acc[j] = vaddq_f32(acc[j], vmulq_f32(s, vcvtq_f32_s32(isum[j])));
                }
            }
            float* yt = y + t * y_stride;
            store_rows(yt, r, rows, acc);
            store_rows(yt, r + kRows, rows, acc + 2);
        }
    }
}
#endif

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

// ---- attend_group: every key its own lane, at most kHeadGroup query heads at a time ----------
// (for_head_groups, kernels_internal.h)

// The vector operations of the exp and the SwiGLU (kernels_internal.h's exp_each and swiglu_each)
// on four lanes.
struct Lanes4 {
    using V = float32x4_t;
    static constexpr int kLanes = 4;
    static V set1(float x) { return vdupq_n_f32(x); }
    static V load(const float* p) { return vld1q_f32(p); }
    static void store(float* p, V v) { vst1q_f32(p, v); }
    static V add(V a, V b) { return vaddq_f32(a, b); }
    static V mul(V a, V b) { return vmulq_f32(a, b); }
    static V div(V a, V b) { return vdivq_f32(a, b); }
    static V negate(V v) { return vnegq_f32(v); }
    // exp_each's steps (exp_f32's operations).
    using Mask = uint32x4_t;
    static Mask below(V x, float limit) { return vcltq_f32(x, set1(limit)); }
    static V min(V a, V b) { return vminq_f32(a, b); }
    static V round(V x) { return vrndnq_f32(x); }
    static V sub(V a, V b) { return vsubq_f32(a, b); }
    static V minus_exact_product(V x, V k, float c) { return sub(x, mul(k, set1(c))); }
    static V times_two_to(V p, V k, Mask zero) {  // p * 2^k through the exponent bits, 0 in `zero`
        const int32x4_t bits = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)), 23);
        const float32x4_t e = vmulq_f32(p, vreinterpretq_f32_s32(bits));
        return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(e), zero));
    }
};

inline float32x4_t exp4(float32x4_t x) {  // exp_f32 of four lanes
    exp_each<Lanes4, 1>(&x);
    return x;
}

// SwiGLU four vectors at a time, then one, then element by element. Four keep the exp's chains
// (five live vectors each, with the gate) and its constants in AArch64's 32 vector registers;
// eight spill two vectors to the stack per step (GCC 12). Chosen by the registers, not timed on a
// Cortex-A72 or A76 (qemu's timing is not the hardware's).
void swiglu(float* gate, const float* up, int64_t n) {
    swiglu_lanes<Lanes4, 4>(gate, up, n);
}

// Four consecutive elements of a ring memory as f32: keys of slots slot .. slot + 3 (element c),
// or elements c .. c + 3 of the value in `slot`.
struct F32Lanes : F32Ring {
    static constexpr bool kIntegerDots = false;  // the scores are f32 dot products
    static float32x4_t keys4(const AttentionGroup& a, int c, int64_t slot) {
        return vld1q_f32(a.keys + c * a.horizon + slot);
    }
    static float32x4_t value4(const AttentionGroup& a, int64_t slot, int c) {
        return vld1q_f32(a.values + slot * a.value_stride + c);
    }
};

struct Q8Lanes : Q8Ring {
    static constexpr bool kIntegerDots = true;  // attention_scores_q8, attention_values_q8
};

// The scores of NV vectors of four consecutive keys (the first in `slot`, at window index j) for
// the NH heads from h0 into s, their maxima into vmax. Each query element feeds NV keys' sums, and
// NH * NV sums are in flight at once (what an in-order core like the Cortex-A53 needs).
template <typename Ring, int NH, int NV>
inline void score_keys(const AttentionGroup& a, const float* q, int64_t slot, int64_t j, int h0,
                       float* s, float32x4_t* vmax) {
    float32x4_t dot[NH][NV];
    for (int h = 0; h < NH; ++h)
        for (int v = 0; v < NV; ++v) dot[h][v] = vdupq_n_f32(0.0f);
    for (int c = 0; c < a.d_head; ++c) {
        float32x4_t k[NV];
        for (int v = 0; v < NV; ++v) k[v] = Ring::keys4(a, c, slot + 4 * v);
        for (int h = 0; h < NH; ++h)
            for (int v = 0; v < NV; ++v)
                dot[h][v] = vfmaq_n_f32(dot[h][v], k[v], q[h * a.d_head + c]);
    }
    const float lane_arr[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    const float32x4_t lane = vld1q_f32(lane_arr);
    for (int v = 0; v < NV; ++v) {
        // distance = window - 1 - (j + 4v + lane), exact in f32 (below 2^24)
        const float32x4_t distance =
            vsubq_f32(vdupq_n_f32(static_cast<float>(a.window - 1 - (j + 4 * v))), lane);
        for (int h = 0; h < NH; ++h) {
            const float32x4_t score =
                vsubq_f32(vmulq_n_f32(dot[h][v], a.scale), vmulq_n_f32(distance, a.slopes[h0 + h]));
            vst1q_f32(s + h * a.window + j + 4 * v, score);
            vmax[h] = vmaxq_f32(vmax[h], score);
        }
    }
}

// The scores of the n <= 4 keys at window indices j .. j + n - 1 (from `slot`, wrapping at the
// ring's end) for the NH heads from h0: their dot products on the lanes of one vector, the keys
// gathered lane by lane (a lane past n repeats key j, and its result is dropped), the rest of
// attention_score lane by lane; the same operations, so the same bits (as on x86: one key at a
// time was a chain of d_head dependent multiply-adds).
template <typename Ring, int NH>
inline void score_gathered(const AttentionGroup& a, const float* q, int64_t slot, int64_t j, int n,
                           int h0, float* s, float* max_score) {
    int64_t slots[4];
    gathered_slots<4>(a, slot, n, slots);
    float32x4_t dot[NH];
    for (int h = 0; h < NH; ++h) dot[h] = vdupq_n_f32(0.0f);
    for (int c = 0; c < a.d_head; ++c) {
        float32x4_t k = vdupq_n_f32(Ring::key(a, c, slots[0]));
        k = vsetq_lane_f32(Ring::key(a, c, slots[1]), k, 1);
        k = vsetq_lane_f32(Ring::key(a, c, slots[2]), k, 2);
        k = vsetq_lane_f32(Ring::key(a, c, slots[3]), k, 3);
        for (int h = 0; h < NH; ++h) dot[h] = vfmaq_n_f32(dot[h], k, q[h * a.d_head + c]);
    }
    for (int h = 0; h < NH; ++h) {
        float d[4];
        vst1q_f32(d, dot[h]);
        gathered_scores(a, n, j, s + h * a.window, &max_score[h], [&](int l, float distance) {
            return score_of_dot(a, d[l], a.slopes[h0 + h], distance);
        });
    }
}

// s_ij for NH heads starting at h0 into a.scores; returns each head's max in max_score.
template <typename Ring, int NH>
void attention_scores(const AttentionGroup& a, int h0, float* max_score) {
    const float* q = a.q + int64_t{h0} * a.d_head;
    float* s = a.scores + int64_t{h0} * a.window;
    float32x4_t vmax[NH];
    for (int h = 0; h < NH; ++h) {
        vmax[h] = vdupq_n_f32(-INFINITY);
        max_score[h] = -INFINITY;
    }
    // Vectors of consecutive slots while the ring's end is 4 or more keys away; the keys around
    // the end, and the window's last few, gathered into one vector.
    for_key_steps(a, [&](int64_t j, int64_t slot, int64_t run) -> int64_t {
        if (run >= 16) {
            score_keys<Ring, NH, 4>(a, q, slot, j, h0, s, vmax);
            return 16;
        }
        if (run >= 4) {
            score_keys<Ring, NH, 1>(a, q, slot, j, h0, s, vmax);
            return 4;
        }
        const int64_t n = a.window - j < 4 ? a.window - j : 4;
        score_gathered<Ring, NH>(a, q, slot, j, static_cast<int>(n), h0, s, max_score);
        return n;
    });
    for (int h = 0; h < NH; ++h) {
        const float m = vmaxvq_f32(vmax[h]);
        if (m > max_score[h]) max_score[h] = m;
    }
}

// ---- attend_group_q8's scores: exact integer dot products --------------------------------------
// Quad i of four consecutive slots (kernels.h) is one 16-byte load; the query's quad i is
// broadcast to meet all four. With the dot product (SAGE_NEON_DOT) one sdot adds the four keys'
// four-byte products; without it (ARMv8.0), two quads' products are widened to int16 pairs (two
// products of [-127, 127] stay below 2^15) and added pairwise into int32 lanes, each key's lanes
// folded at the end. Exact either way: the reference's isum.
struct QuadDots {
#if SAGE_NEON_DOT
    int32x4_t sum;  // lane l: key l
    QuadDots() : sum(vdupq_n_s32(0)) {}
    void add(int8x16_t k0, int8x16_t q0, int8x16_t k1, int8x16_t q1) {
        sum = vdotq_s32(vdotq_s32(sum, k0, q0), k1, q1);
    }
    void add(int8x16_t k, int8x16_t q) { sum = vdotq_s32(sum, k, q); }
    int32x4_t total() const { return sum; }
#else
    int32x4_t lo, hi;  // pairs of products: keys 0 and 1 in lo, 2 and 3 in hi, two lanes each
    QuadDots() : lo(vdupq_n_s32(0)), hi(vdupq_n_s32(0)) {}
    void add(int8x16_t k0, int8x16_t q0, int8x16_t k1, int8x16_t q1) {
        int16x8_t p = vmull_s8(vget_low_s8(k0), vget_low_s8(q0));
        p = vmlal_s8(p, vget_low_s8(k1), vget_low_s8(q1));
        lo = vpadalq_s16(lo, p);
        int16x8_t r = vmull_high_s8(k0, q0);
        r = vmlal_high_s8(r, k1, q1);
        hi = vpadalq_s16(hi, r);
    }
    void add(int8x16_t k, int8x16_t q) {
        lo = vpadalq_s16(lo, vmull_s8(vget_low_s8(k), vget_low_s8(q)));
        hi = vpadalq_s16(hi, vmull_high_s8(k, q));
    }
    int32x4_t total() const { return vpaddq_s32(lo, hi); }
#endif
};

inline int8x16_t query_quad(const QueryQ8& q, int i) {  // quad i in every lane (0 past the end)
    return vreinterpretq_s8_s32(vdupq_n_s32(i < q.quads ? q.quad(i) : 0));
}

// fma(float(isum), factor * ks, -(slope * distance)) on four lanes.
inline float32x4_t score_of_isum4(int32x4_t isum, float factor, float32x4_t key_scale, float slope,
                                  float32x4_t distance) {
    return vfmaq_f32(vnegq_f32(vmulq_n_f32(distance, slope)), vcvtq_f32_s32(isum),
                     vmulq_n_f32(key_scale, factor));
}

// NV vectors of four consecutive keys (the first in `slot`, at window index j) for NH heads; the
// quads go two at a time (a key's quads past the last are zero).
template <int NH, int NV>
inline void score_keys_q8(const AttentionGroup& a, const QueryQ8* q, int64_t slot, int64_t j,
                          int h0, float* s, float32x4_t* vmax) {
    QuadDots dot[NH][NV];
    const int quads = q[0].quads;
    auto keys = [&](int i, int v) {
        return i < quads ? vld1q_s8(a.keys_q8 + (i * a.horizon + slot + 4 * v) * 4) : vdupq_n_s8(0);
    };
    for (int i = 0; i < quads; i += 2) {
        int8x16_t k0[NV], k1[NV];
        for (int v = 0; v < NV; ++v) {
            k0[v] = keys(i, v);
            k1[v] = keys(i + 1, v);
        }
        for (int h = 0; h < NH; ++h) {
            const int8x16_t q0 = query_quad(q[h], i), q1 = query_quad(q[h], i + 1);
            for (int v = 0; v < NV; ++v) dot[h][v].add(k0[v], q0, k1[v], q1);
        }
    }
    const float lane_arr[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    const float32x4_t lane = vld1q_f32(lane_arr);
    for (int v = 0; v < NV; ++v) {
        const float32x4_t distance =
            vsubq_f32(vdupq_n_f32(static_cast<float>(a.window - 1 - (j + 4 * v))), lane);
        const float32x4_t ks = vld1q_f32(a.key_scales + slot + 4 * v);
        for (int h = 0; h < NH; ++h) {
            const float32x4_t score =
                score_of_isum4(dot[h][v].total(), q[h].factor, ks, a.slopes[h0 + h], distance);
            vst1q_f32(s + h * a.window + j + 4 * v, score);
            vmax[h] = vmaxq_f32(vmax[h], score);
        }
    }
}

// The n <= 4 keys at window indices j .. j + n - 1 from `slot`, wrapping at the ring's end: their
// quads gathered lane by lane, the scores finished lane by lane.
template <int NH>
inline void score_gathered_q8(const AttentionGroup& a, const QueryQ8* q, int64_t slot, int64_t j,
                              int n, int h0, float* s, float* max_score) {
    int64_t slots[4];
    gathered_slots<4>(a, slot, n, slots);
    QuadDots dot[NH];
    const int quads = q[0].quads;
    auto keys = [&](int i) {
        if (i >= quads) return vdupq_n_s8(0);
        int32x4_t k = vdupq_n_s32(key_quad(a, i, slots[0]));
        k = vsetq_lane_s32(key_quad(a, i, slots[1]), k, 1);
        k = vsetq_lane_s32(key_quad(a, i, slots[2]), k, 2);
        k = vsetq_lane_s32(key_quad(a, i, slots[3]), k, 3);
        return vreinterpretq_s8_s32(k);
    };
    for (int i = 0; i < quads; i += 2) {
        const int8x16_t k0 = keys(i), k1 = keys(i + 1);
        for (int h = 0; h < NH; ++h)
            dot[h].add(k0, query_quad(q[h], i), k1, query_quad(q[h], i + 1));
    }
    for (int h = 0; h < NH; ++h) {
        int32_t isum[4];
        vst1q_s32(isum, dot[h].total());
        gathered_scores(a, n, j, s + h * a.window, &max_score[h], [&](int l, float distance) {
            return score_of_isum(a, q[h], isum[l], slots[l], a.slopes[h0 + h], distance);
        });
    }
}

// attention_scores for an int8 memory: the NH query heads from h0 quantized once (QueryQ8).
template <int NH>
void attention_scores_q8(const AttentionGroup& a, int h0, float* max_score) {
    // Eight vectors of four keys in flight with sdot; four without it (two accumulators each).
    constexpr int kVectors = SAGE_NEON_DOT ? 4 : 2;
    QueryQ8 q[NH];
    for (int h = 0; h < NH; ++h) q[h].prepare(a, h0 + h);
    float* s = a.scores + int64_t{h0} * a.window;
    float32x4_t vmax[NH];
    for (int h = 0; h < NH; ++h) {
        vmax[h] = vdupq_n_f32(-INFINITY);
        max_score[h] = -INFINITY;
    }
    for_key_steps(a, [&](int64_t j, int64_t slot, int64_t run) -> int64_t {
        if (run >= 4 * kVectors) {
            score_keys_q8<NH, kVectors>(a, q, slot, j, h0, s, vmax);
            return 4 * kVectors;
        }
        if (run >= 4) {
            score_keys_q8<NH, 1>(a, q, slot, j, h0, s, vmax);
            return 4;
        }
        const int64_t n = a.window - j < 4 ? a.window - j : 4;
        score_gathered_q8<NH>(a, q, slot, j, static_cast<int>(n), h0, s, max_score);
        return n;
    });
    for (int h = 0; h < NH; ++h) {
        const float m = vmaxvq_f32(vmax[h]);
        if (m > max_score[h]) max_score[h] = m;
    }
}

// quantize_weights' vector steps on four lanes (vcvtnq rounds half to even, as nearbyint).
struct Weights4 {
    static constexpr int kLanes = 4;
    static constexpr bool kMasked = false;
    using Max = float32x4_t;
    static Max max_init() { return vdupq_n_f32(0.0f); }
    static void scale(float* e, const float* vs, Max& m) {
        const float32x4_t w = vmulq_f32(vld1q_f32(e), vld1q_f32(vs));
        vst1q_f32(e, w);
        m = vmaxq_f32(m, w);
    }
    static float max_of(Max m) { return vmaxvq_f32(m); }
    static void quantize(const float* w, float inv, uint8_t* q) {
        const uint32x4_t r =
            vminq_u32(vcvtnq_u32_f32(vmulq_n_f32(vld1q_f32(w), inv)), vdupq_n_u32(255));
        const uint16x4_t h = vmovn_u32(r);
        const uint32_t four = vget_lane_u32(vreinterpret_u32_u8(vmovn_u16(vcombine_u16(h, h))), 0);
        std::memcpy(q, &four, sizeof four);
    }
};

// The integer value sums of an int8 memory for NH heads from h0 (kernels_scalar.cpp), their
// weights quantized into a.weights (WeightRuns). A quad of four slots' elements c .. c + 3 is one
// 16-byte load (QuadDots' lanes are then elements); the weights go in as wq - 128 (a signed byte,
// for the signed dot products), and 128 times the sum of the same slots' values is added back.
// Exact: the reference's osum.
template <int NH>
void attention_values_q8(const AttentionGroup& a, int h0, const float* inv_total,
                         const int64_t* first) {
    const WeightRuns runs(a);
    const HeadWeights<Weights4, NH> weights(a, runs, h0, first);
    for (int c0 = 0; c0 < a.d_head; c0 += 8) {
        const int n = a.d_head - c0 < 8 ? a.d_head - c0 : 8;
        QuadDots acc[NH][2];
        int32x4_t vsum[2] = {vdupq_n_s32(0), vdupq_n_s32(0)};
        runs.for_quads(weights.from, [&](int64_t pos, int64_t slot) {
            const int8_t* p = a.values_q8 + value_q8_index(c0, slot, a.value_stride);
            int8x16_t v[2];
            if (n == 8) {
                v[0] = vld1q_s8(p);
                v[1] = vld1q_s8(p + 16);
            } else {  // the last elements of a width that is not a multiple of 8
                int8_t t[32] = {};
                std::memcpy(t, p, static_cast<size_t>(4 * n));
                v[0] = vld1q_s8(t);
                v[1] = vld1q_s8(t + 16);
            }
            for (int k = 0; k < 2; ++k) {
#if SAGE_NEON_DOT
                vsum[k] = vdotq_s32(vsum[k], v[k], vdupq_n_s8(1));
#else
                vsum[k] = vpadalq_s16(vsum[k], vpaddlq_s8(v[k]));
#endif
            }
            for (int h = 0; h < NH; ++h) {
                int32_t four;
                std::memcpy(&four, weights.row[h] + pos, sizeof four);
                const int8x16_t w =
                    vreinterpretq_s8_s32(vdupq_n_s32(four ^ static_cast<int32_t>(0x80808080u)));
                for (int k = 0; k < 2; ++k) acc[h][k].add(v[k], w);
            }
        });
        for (int h = 0; h < NH; ++h) {
            const float f = weights.scale[h] * inv_total[h];
            float o[8];
            for (int k = 0; k < 2; ++k) {
                const int32x4_t osum = vaddq_s32(acc[h][k].total(), vshlq_n_s32(vsum[k], 7));
                vst1q_f32(o + 4 * k, vmulq_n_f32(vcvtq_f32_s32(osum), f));
            }
            std::memcpy(a.out + int64_t{h0 + h} * a.d_head + c0, o, sizeof(float) * n);
        }
    }
}

// e_ij = exp(s_ij - max_i) in place; returns 1 / total_i (the canonical eight-lane sum: lanes
// 0-3 in lo, 4-7 in hi), and in *first the window index from which the weights are not all 0: the
// leading eight-key steps whose scores all lie more than 87 below the max are exp_f32's 0 without
// computing it (adding +0 leaves the lanes unchanged).
inline float softmax_weights(float* e, int64_t window, float max_score, int64_t* first) {
    const float32x4_t m = vdupq_n_f32(max_score);
    const float32x4_t below = vdupq_n_f32(-87.0f);
    float32x4_t lo = vdupq_n_f32(0.0f), hi = vdupq_n_f32(0.0f);
    int64_t j = 0;
    for (; j + 8 <= window; j += 8) {
        // x < -87 in every lane (a NaN is not below, as in exp_f32)
        const uint32x4_t under = vandq_u32(vcltq_f32(vsubq_f32(vld1q_f32(e + j), m), below),
                                           vcltq_f32(vsubq_f32(vld1q_f32(e + j + 4), m), below));
        if (vminvq_u32(under) == 0) break;
        vst1q_f32(e + j, vdupq_n_f32(0.0f));
        vst1q_f32(e + j + 4, vdupq_n_f32(0.0f));
    }
    *first = j;
    for (; j + 8 <= window; j += 8) {
        const float32x4_t a = exp4(vsubq_f32(vld1q_f32(e + j), m));
        const float32x4_t b = exp4(vsubq_f32(vld1q_f32(e + j + 4), m));
        vst1q_f32(e + j, a);
        vst1q_f32(e + j + 4, b);
        lo = vaddq_f32(lo, a);
        hi = vaddq_f32(hi, b);
    }
    float lane[8];
    vst1q_f32(lane, lo);
    vst1q_f32(lane + 4, hi);
    for (int l = 0; j < window; ++j, ++l) {
        e[j] = exp_f32(e[j] - max_score);
        lane[l] = lane[l] + e[j];
    }
    for (int l = 0; l < 4; ++l) lane[l] = lane[l] + lane[l + 4];
    for (int l = 0; l < 2; ++l) lane[l] = lane[l] + lane[l + 2];
    return 1.0f / (lane[0] + lane[1]);
}

// acc_i += e_ij v_j for the NA heads head[0 .. NA) and j = j0 .. j1 - 1 in order (slot: j0's),
// C vectors of four elements from c0; the sums come from and go back to acc.
template <typename Ring, int NA, int C>
void value_sums(const AttentionGroup& a, const int* head, int64_t j0, int64_t j1, int64_t slot,
                int c0, float32x4_t (*acc)[2]) {
    float32x4_t sum[NA][C];
    const float* e[NA];
    for (int i = 0; i < NA; ++i) {
        e[i] = a.scores + int64_t{head[i]} * a.window;
        for (int k = 0; k < C; ++k) sum[i][k] = acc[head[i]][k];
    }
    for (int64_t j = j0; j < j1; ++j) {
        float32x4_t v[C];
        for (int k = 0; k < C; ++k) v[k] = Ring::value4(a, slot, c0 + 4 * k);
        for (int i = 0; i < NA; ++i) {
            const float weight = Ring::weight(a, e[i][j], slot);
            for (int k = 0; k < C; ++k) sum[i][k] = vfmaq_n_f32(sum[i][k], v[k], weight);
        }
        if (++slot == a.horizon) slot = 0;
    }
    for (int i = 0; i < NA; ++i)
        for (int k = 0; k < C; ++k) acc[head[i]][k] = sum[i][k];
}

// out_i = (sum_j e_ij v_j) * inv_total_i for NH heads from h0, C vectors of four elements from c0,
// each head's sums from its first nonzero weight on (value_runs).
template <typename Ring, int NH, int C>
void attention_values(const AttentionGroup& a, int h0, int c0, const float* inv_total,
                      const int64_t* first) {
    static_assert(C <= 2, "two vectors of four per head at most");
    float32x4_t acc[NH][2];
    for (int h = 0; h < NH; ++h)
        for (int k = 0; k < C; ++k) acc[h][k] = vdupq_n_f32(0.0f);
    AttentionGroup g = a;
    g.scores = a.scores + int64_t{h0} * a.window;
    value_runs<NH>(first, a.window, [&](auto n, const int* order, int64_t j0, int64_t j1) {
        value_sums<Ring, decltype(n)::value, C>(g, order, j0, j1, (a.first_slot + j0) % a.horizon,
                                                c0, acc);
    });
    for (int h = 0; h < NH; ++h) {
        float* o = a.out + int64_t{h0 + h} * a.d_head + c0;
        for (int k = 0; k < C; ++k) vst1q_f32(o + 4 * k, vmulq_n_f32(acc[h][k], inv_total[h]));
    }
}

template <typename Ring, int NH>
void attend_heads(const AttentionGroup& a, int h0) {
    float max_score[NH], inv_total[NH];
    int64_t first[NH];
    if constexpr (Ring::kIntegerDots)
        attention_scores_q8<NH>(a, h0, max_score);
    else
        attention_scores<Ring, NH>(a, h0, max_score);
    for (int h = 0; h < NH; ++h)
        inv_total[h] = softmax_weights(a.scores + int64_t{h0 + h} * a.window, a.window,
                                       max_score[h], &first[h]);
    if constexpr (Ring::kIntegerDots) {
        attention_values_q8<NH>(a, h0, inv_total, first);
    } else {
        int c = 0;
        for (; c + 8 <= a.d_head; c += 8) attention_values<Ring, NH, 2>(a, h0, c, inv_total, first);
        for (; c + 4 <= a.d_head; c += 4) attention_values<Ring, NH, 1>(a, h0, c, inv_total, first);
        for (; c < a.d_head; ++c)  // a width that is not a multiple of 4: the rest one by one
            for (int h = 0; h < NH; ++h)
                a.out[int64_t{h0 + h} * a.d_head + c] = attention_value<Ring>(
                    a, a.scores + int64_t{h0 + h} * a.window, c, inv_total[h]);
    }
}

template <typename Ring>
void attend(const AttentionGroup& a) {
    for_head_groups(a.heads,
                    [&](auto n, int h0) { attend_heads<Ring, decltype(n)::value>(a, h0); });
}

void attend_group(const AttentionGroup& a) {
    attend<F32Lanes>(a);
}

void attend_group_q8(const AttentionGroup& a) {
    attend<Q8Lanes>(a);
}

}  // namespace
}  // namespace sage::kernels
