// The scalar reference: the definition of every kernel's result. Every other path must reproduce
// these bits exactly, so the f32 order of operations below is the canonical one.
//
// Canonical orders (all f32 arithmetic is IEEE binary32, round-to-nearest-even; a product is
// rounded before it is added, except where fma(a, b, c) is written: a * b + c rounded once, as IEEE
// 754 defines it, which x86 FMA3, AArch64 FMLA and std::fma all compute to the same bits):
//
// quantize_row_q8_0, per block of 32 (the last one zero-padded):
//     amax  = max over the block of |x|                  (exact, order-free)
//     scale = amax / 127.0f
//     inv   = scale != 0 ? 1.0f / scale : 0.0f, and 0 when 1 / scale overflows (inverse_scale)
//     q[i]  = clamp(round_half_even(x[i] * inv), -127, 127); padding elements get q = 0.
//   Inputs must be finite (a NaN or an infinity gives an unspecified block).
//
// matvec_q8_0 / matvec_q4, per row r, blocks b = 0, 1, ... in order:
//     acc = 0.0f
//     acc = acc + (w[r][b].scale * x[b].scale) * (float)isum[r][b]
//   isum[r][b] is the exact int32 sum of the block's 32 products q_w * q_x; it is at most
//   32 * 127 * 127 < 2^24 in magnitude, so (float)isum is exact too. Weight q values must
//   lie in [-127, 127] (q8_0) as the format requires.
//
// matvec_f32, per row: sixteen lanes; lane i accumulates, in increasing j, the products
// w[j] * x[j] of every j with j % 16 == i (acc_i = acc_i + w[j] * x[j], starting at 0.0f). The
// lanes are then reduced by halving:
//     s8[i] = acc[i] + acc[i + 8]  (i < 8)
//     s4[i] = s8[i]  + s8[i + 4]   (i < 4)
//     s2[i] = s4[i]  + s4[i + 2]   (i < 2)
//     y     = s2[0]  + s2[1]
//   A SIMD path may pad the tail with w = x = 0: 0 * 0 = +0 and acc + (+0) == acc for every acc
//   these sums can produce (they never produce -0), so the bits do not change.
//
// rmsnorm, per row of n values (rmsnorm_each_row, kernels_internal.h):
//     ss      = matvec_f32 of the row with itself (its 16 lanes and halving, above)
//     inv_rms = 1.0f / sqrt(ss / float(n) + eps)           (sqrt correctly rounded, IEEE 754)
//     out[i]  = (x[i] * inv_rms) * gain[i]
//
// matmul_q8_0 / matmul_q4: matvec_q8_0 / matvec_q4 of every token, so each y element has their
// order (kernels_internal.h's matvec_each_panel runs them 16 rows at a time for every token).
//
// matmul_q8_0_panels: matmul_q8_0 of the weights before pack_q8_0_panels, so its reference is
// this file's matmul_q8_0 on the file's layout (the packing only moves bytes; q + 128 is undone
// by subtracting 128 times the sum of x's block, exactly, before the block's f32 step).
//
// matmul_q4_panels: matvec_q4 of each token over the weights before pack_q4_panels (the + 8 is
// undone by subtracting 8 times the sum of x's block, exactly, before the block's f32 step).
//
// attend_group, per query head i of the group (ALiBi slope m_i), keys j = 0 .. window - 1 oldest
// first (slot (first_slot + j) mod horizon, distance d_j = window - 1 - j):
//     dot_ij = 0.0f; dot_ij = fma(q_i[c], k_j[c], dot_ij) for c = 0, 1, ..., d_head - 1 in order
//     s_ij   = dot_ij * scale - m_i * float(d_j)
//     max_i  = max over j of s_ij                          (exact, order-free)
//     e_ij   = exp_f32(s_ij - max_i)                       (kernels.h, lane by lane)
//     total_i: eight lanes, lane l summing e_ij over j with j % 8 == l in increasing j from 0.0f,
//              then halved: t4[l] = lane[l] + lane[l + 4], t2[l] = t4[l] + t4[l + 2],
//              total_i = t2[0] + t2[1]
//     out_i[c] = o_i[c] * (1.0f / total_i), o_i[c] = 0.0f; o_i[c] = fma(e_ij, v_j[c], o_i[c]) for j
//              in increasing order
//   attend_group_q8, the same over an int8 memory with slot scales ks_j, vs_j, int8 key and value
//   elements kq_j[c], vq_j[c], and each query head quantized once: qq_i[c] and qs_i from
//   quantize_row_int8(q_i) (kernels.h), f_i = qs_i * scale:
//     isum_ij = sum over c of qq_i[c] * kq_j[c]            (exact int32, order-free)
//     s_ij    = fma(float(isum_ij), f_i * ks_j, -(m_i * float(d_j)))
//     max_i, e_ij and total_i as above, then each head's weights quantized once:
//     w_ij    = e_ij * vs_j;  ws_i = (max over j of w_ij) / 255.0f;  inv_i = inverse_scale(ws_i)
//     wq_ij   = min(round_half_even(w_ij * inv_i), 255)   (0 .. 255)
//     osum_ic = sum over j of wq_ij * vq_j[c]             (exact int32, order-free: horizons of an
//                                                          int8 memory are <= kMaxInt8Horizon)
//     out_i[c] = float(osum_ic) * (ws_i * (1.0f / total_i))
//   (The integer dot products are what the int8 memory is for: a four-way int8 dot instruction
//   does four multiply-adds of 16 keys or elements at once on AVX-512 VNNI, where f32 does one.)
//   (The attention's products are fused: one rounding per term instead of two, and half the
//   instructions on every SIMD path.)
//   Every key's dot product runs on its own, so a SIMD path gives each key a lane; padded lanes of
//   the total add e = +0, which leaves every sum of positive terms unchanged.
//
// attend_block: attend_group (attend_group_q8) of each query of the block, so each query's result
// has exactly attend_group's order. A path that attends several queries together runs every
// query's value sums over the union of their windows with weight +0 outside its own:
// fma(+0, v, o) == o for every finite v and every o these sums produce (they start at +0.0f and
// are never -0), so the bits do not change.
#include <cmath>
#include <cstdlib>

#include "kernels_internal.h"

namespace sage::kernels {
namespace {

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
    const int64_t nb = blocks_per_row(n);
    for (int64_t b = 0; b < nb; ++b) {
        const int64_t start = b * kBlockSize;
        const int64_t len = n - start < kBlockSize ? n - start : kBlockSize;
        float amax = 0.0f;
        for (int64_t i = 0; i < len; ++i) {
            const float a = std::fabs(x[start + i]);
            if (a > amax) amax = a;
        }
        const float scale = amax / 127.0f;
        const float inv = inverse_scale(scale);
        y[b].scale = scale;
        for (int64_t i = 0; i < kBlockSize; ++i) {
            int q = 0;
            if (i < len) {
                // std::nearbyint rounds half to even in the default rounding mode.
                const float r = std::nearbyint(x[start + i] * inv);
                q = r > 127.0f ? 127 : (r < -127.0f ? -127 : static_cast<int>(r));
            }
            y[b].q[i] = static_cast<int8_t>(q);
        }
    }
}

int32_t block_sum_q8(const BlockQ8_0& a, const BlockQ8_0& b) {
    int32_t s = 0;
    for (int i = 0; i < kBlockSize; ++i) s += int32_t{a.q[i]} * int32_t{b.q[i]};
    return s;
}

int32_t block_sum_q4(const BlockQ4& w, const BlockQ8_0& x) {
    int32_t s = 0;
    for (int i = 0; i < kBlockSize / 2; ++i) {
        const int32_t lo = int32_t{w.q[i] & 0x0F} - 8;
        const int32_t hi = int32_t{w.q[i] >> 4} - 8;
        s += lo * int32_t{x.q[2 * i]} + hi * int32_t{x.q[2 * i + 1]};
    }
    return s;
}

void matvec_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    const int64_t nb = blocks_per_row(cols);
    for (int64_t r = 0; r < rows; ++r) {
        const BlockQ8_0* wr = w + r * nb;
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            const float s = wr[b].scale * x[b].scale;
            acc = acc + s * static_cast<float>(block_sum_q8(wr[b], x[b]));
        }
        y[r] = acc;
    }
}

void matvec_q4(const BlockQ4* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    const int64_t nb = blocks_per_row(cols);
    for (int64_t r = 0; r < rows; ++r) {
        const BlockQ4* wr = w + r * nb;
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            const float s = wr[b].scale * x[b].scale;
            acc = acc + s * static_cast<float>(block_sum_q4(wr[b], x[b]));
        }
        y[r] = acc;
    }
}

void matvec_f32(const float* w, const float* x, float* y, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* wr = w + r * cols;
        float acc[16] = {};
        for (int64_t j = 0; j < cols; ++j) {
            const float p = wr[j] * x[j];
            acc[j % 16] = acc[j % 16] + p;
        }
        for (int i = 0; i < 8; ++i) acc[i] = acc[i] + acc[i + 8];
        for (int i = 0; i < 4; ++i) acc[i] = acc[i] + acc[i + 4];
        for (int i = 0; i < 2; ++i) acc[i] = acc[i] + acc[i + 2];
        y[r] = acc[0] + acc[1];
    }
}

void swiglu(float* gate, const float* up, int64_t n) {
    for (int64_t i = 0; i < n; ++i) gate[i] = (gate[i] / (1.0f + exp_f32(-gate[i]))) * up[i];
}

// Head i's softmax in place over its scores e[0 .. window): returns 1 / total.
float softmax(const AttentionGroup& a, float* e) {
    float max_score = -INFINITY;
    for (int64_t j = 0; j < a.window; ++j) max_score = e[j] > max_score ? e[j] : max_score;
    float lane[8] = {};
    for (int64_t j = 0; j < a.window; ++j) {
        e[j] = exp_f32(e[j] - max_score);
        lane[j % 8] = lane[j % 8] + e[j];
    }
    for (int l = 0; l < 4; ++l) lane[l] = lane[l] + lane[l + 4];
    for (int l = 0; l < 2; ++l) lane[l] = lane[l] + lane[l + 2];
    return 1.0f / (lane[0] + lane[1]);
}

// The scores of head i's keys, oldest first: score(slot, distance).
template <typename Score>
void head_scores(const AttentionGroup& a, float* e, Score&& score) {
    int64_t slot = a.first_slot;
    for (int64_t j = 0; j < a.window; ++j) {
        e[j] = score(slot, static_cast<float>(a.window - 1 - j));
        if (++slot == a.horizon) slot = 0;
    }
}

void attend_group(const AttentionGroup& a) {
    for (int i = 0; i < a.heads; ++i) {
        const float* q = a.q + int64_t{i} * a.d_head;
        float* e = a.scores + int64_t{i} * a.window;
        head_scores(a, e, [&](int64_t slot, float distance) {
            return attention_score(a, q, slot, a.slopes[i], distance);
        });
        const float inv_total = softmax(a, e);
        float* o = a.out + int64_t{i} * a.d_head;
        for (int c = 0; c < a.d_head; ++c) o[c] = 0.0f;
        int64_t slot = a.first_slot;
        for (int64_t j = 0; j < a.window; ++j) {
            for (int c = 0; c < a.d_head; ++c)
                o[c] = std::fma(e[j], F32Ring::value(a, slot, c), o[c]);
            if (++slot == a.horizon) slot = 0;
        }
        for (int c = 0; c < a.d_head; ++c) o[c] = o[c] * inv_total;
    }
}

void attend_group_q8(const AttentionGroup& a) {
    QueryQ8 q;
    for (int i = 0; i < a.heads; ++i) {
        q.prepare(a, i);
        float* e = a.scores + int64_t{i} * a.window;
        head_scores(a, e, [&](int64_t slot, float distance) {
            return attention_score_q8(a, q, slot, a.slopes[i], distance);
        });
        const float inv_total = softmax(a, e);
        float wmax = 0.0f;
        int64_t slot = a.first_slot;
        for (int64_t j = 0; j < a.window; ++j) {
            const float w = e[j] * a.value_scales[slot];
            wmax = w > wmax ? w : wmax;
            if (++slot == a.horizon) slot = 0;
        }
        const float ws = wmax / 255.0f, inv = inverse_scale(ws);
        int32_t isum[kMaxHeadWidth] = {};
        slot = a.first_slot;
        for (int64_t j = 0; j < a.window; ++j) {
            const int32_t wq = quantize_weight(e[j] * a.value_scales[slot], inv);
            for (int c = 0; c < a.d_head; ++c)
                isum[c] += wq * a.values_q8[value_q8_index(c, slot, a.value_stride)];
            if (++slot == a.horizon) slot = 0;
        }
        float* o = a.out + int64_t{i} * a.d_head;
        for (int c = 0; c < a.d_head; ++c) o[c] = static_cast<float>(isum[c]) * (ws * inv_total);
    }
}

}  // namespace

namespace {

// Lays out the panels of w[rows][blocks_per_row(cols)] (kernels.h): each panel block's scales, and
// put(panel block, i, row i's block or null past the end) for its bytes.
template <typename Block, typename Panel, typename Put>
void pack_panels(const Block* w, int64_t rows, int64_t cols, Panel* out, Put&& put) {
    const int64_t nb = blocks_per_row(cols);
    for (int64_t p = 0; p < panels_of(rows); ++p) {
        for (int64_t b = 0; b < nb; ++b) {
            Panel& panel = out[p * nb + b];
            for (int i = 0; i < kPanelRows; ++i) {
                const int64_t r = p * kPanelRows + i;
                const Block* block = r < rows ? &w[r * nb + b] : nullptr;
                panel.scale[i] = block != nullptr ? block->scale : 0.0f;
                put(panel, i, block);
            }
        }
    }
}

}  // namespace

void pack_q8_0_panels(const BlockQ8_0* w, int64_t rows, int64_t cols, PanelBlockQ8* out) {
    pack_panels(w, rows, cols, out, [](PanelBlockQ8& panel, int i, const BlockQ8_0* block) {
        for (int j = 0; j < kBlockSize; ++j)
            panel.q[j / 4][i][j % 4] =
                static_cast<uint8_t>((block != nullptr ? block->q[j] : 0) + 128);
    });
}

void pack_q4_panels(const BlockQ4* w, int64_t rows, int64_t cols, PanelBlockQ4* out) {
    pack_panels(w, rows, cols, out, [](PanelBlockQ4& panel, int i, const BlockQ4* block) {
        auto nibble = [block](int e) {  // element e's q + 8 (8: a zero past the end)
            return block != nullptr ? (block->q[e / 2] >> (4 * (e % 2))) & 0x0F : 8;
        };
        for (int j = 0; j < kBlockSize / 2; ++j)
            panel.q[j / 4][i][j % 4] =
                static_cast<uint8_t>(nibble(j) | nibble(kBlockSize / 2 + j) << 4);
    });
}

const KernelTable kScalarTable = {
    "scalar",
    quantize_row_q8_0,
    quantize_row_int8_each,
    matvec_q8_0,
    matvec_q4,
    matvec_f32,
    matvec_each_panel<BlockQ8_0, matvec_q8_0>,  // matmul_q8_0
    matvec_each_panel<BlockQ4, matvec_q4>,      // matmul_q4
    nullptr,  // matmul_q8_0_panels: the file's layout is the reference
    nullptr,  // matmul_q4_panels: likewise
    swiglu,
    rmsnorm_each_row<matvec_f32>,
    attend_group,
    attend_group_q8,
    attend_each_query<attend_group>,
    attend_each_query<attend_group_q8>,
};

}  // namespace sage::kernels
