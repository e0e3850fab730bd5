// AVX2 kernels (this file alone is compiled with -mavx2 -mfma). Fused multiply-add only where
// the canonical order of kernels_scalar.cpp has fma (the attention); every f32 result follows it,
// with the rows of a matrix-vector product spread over SIMD lanes so each row keeps its own
// sequential order. The integer matrix-vector products over the file's layout are shared with
// AVX-512 VNNI (kernels_x86_impl.h); the products over packed panels are this file's own.
#include <immintrin.h>

#include <cstring>

#include "kernels_x86_impl.h"

namespace sage::kernels {
namespace {

// matmul_q8_0_panels: a panel's 16 rows are two vectors of 8 lanes, each lane summing its own row
// as in the AVX-512 VNNI kernel. maddubs would saturate on the stored q + 128 (two products reach
// 2 * 255 * 127), so each vector of packed bytes is turned back into q (xor 0x80) and multiplied
// with the sign trick, |x| * (q with the sign of x): both in [-127, 127], so a pair of products is
// at most 2 * 127 * 127 < 32767, and madd by 1 widens the pairs to the lane's exact int32 sum.
// Then matvec_q8_0's f32 step, block by block: the same bits. Every column block stays in
// registers (no chunking, no scratch): |x| is taken from each broadcast, once for both halves.
constexpr int kAvx2PanelTokens = 4;  // tokens against one panel block at once (16 registers)

// Eight rows' q (lane i: bytes 4k .. 4k + 3 of row i) from their packed q + 128.
inline __m256i panel_q(const uint8_t* packed) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
}

// isum + the four-byte dots of q with x (four bytes broadcast; ax = |x|), one int32 per lane.
inline __m256i panel_dot(__m256i isum, __m256i q, __m256i x, __m256i ax) {
    const __m256i pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(q, x));
    return _mm256_add_epi32(isum, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

// matvec_q8_0's f32 step for eight rows: acc + (w scales * x scale) * float(isum).
inline __m256 panel_step(__m256 acc, const float* w_scales, float x_scale, __m256i isum) {
    const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(w_scales), _mm256_set1_ps(x_scale));
    return _mm256_add_ps(acc, _mm256_mul_ps(s, _mm256_cvtepi32_ps(isum)));
}

template <int NT>
inline void avx2_panel_tokens(const PanelBlockQ8* panel, int64_t nb, const BlockQ8_0* const* xt,
                              __m256* acc /* [NT][2] */) {
    for (int64_t b = 0; b < nb; ++b) {
        const PanelBlockQ8& p = panel[b];
        __m256i isum[NT][2];
        for (int t = 0; t < NT; ++t) isum[t][0] = isum[t][1] = _mm256_setzero_si256();
        for (int k = 0; k < kBlockSize / 4; ++k) {
            const __m256i q0 = panel_q(p.q[k][0]), q1 = panel_q(p.q[k][8]);
            for (int t = 0; t < NT; ++t) {
                int32_t four;
                std::memcpy(&four, xt[t][b].q + 4 * k, sizeof four);
                const __m256i xv = _mm256_set1_epi32(four), ax = _mm256_abs_epi8(xv);
                isum[t][0] = panel_dot(isum[t][0], q0, xv, ax);
                isum[t][1] = panel_dot(isum[t][1], q1, xv, ax);
            }
        }
        for (int t = 0; t < NT; ++t) {
            acc[2 * t] = panel_step(acc[2 * t], p.scale, xt[t][b].scale, isum[t][0]);
            acc[2 * t + 1] = panel_step(acc[2 * t + 1], p.scale + 8, xt[t][b].scale, isum[t][1]);
        }
    }
}

// One token (a decode step) against one panel: avx2_panel_tokens<1>'s arithmetic in a loop of its
// own, which measured 4 % faster on the decode step's products (88 -> 85 us; no array of tokens).
inline void avx2_panel_one_token(const PanelBlockQ8* panel, int64_t nb, const BlockQ8_0* x,
                                 __m256* acc /* [2] */) {
    for (int64_t b = 0; b < nb; ++b) {
        const PanelBlockQ8& p = panel[b];
        __m256i isum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int k = 0; k < kBlockSize / 4; ++k) {
            int32_t four;
            std::memcpy(&four, x[b].q + 4 * k, sizeof four);
            const __m256i xv = _mm256_set1_epi32(four), ax = _mm256_abs_epi8(xv);
            for (int h = 0; h < 2; ++h)
                isum[h] = panel_dot(isum[h], panel_q(p.q[k][8 * h]), xv, ax);
        }
        for (int h = 0; h < 2; ++h)
            acc[h] = panel_step(acc[h], p.scale + 8 * h, x[b].scale, isum[h]);
    }
}

void matmul_q8_0_panels(const PanelBlockQ8* w, const BlockQ8_0* x, float* y, int64_t rows,
                        int64_t cols, int64_t tokens, int64_t y_stride) {
    const int64_t nb = blocks_per_row(cols);
    for (int64_t r = 0; r < rows; r += kPanelRows) {
        const PanelBlockQ8* panel = w + (r / kPanelRows) * nb;
        if (tokens == 1) {
            __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
            avx2_panel_one_token(panel, nb, x, acc);
            store_rows(y, r, rows, acc[0]);
            store_rows(y, r + kRows, rows, acc[1]);
            continue;
        }
        for (int64_t t = 0; t < tokens; t += kAvx2PanelTokens) {
            const int nt = tokens - t < kAvx2PanelTokens ? int(tokens - t) : kAvx2PanelTokens;
            __m256 acc[2 * kAvx2PanelTokens];
            const BlockQ8_0* xt[kAvx2PanelTokens];
            for (int i = 0; i < nt; ++i) {
                xt[i] = x + (t + i) * nb;
                acc[2 * i] = acc[2 * i + 1] = _mm256_setzero_ps();
            }
            with_count<kAvx2PanelTokens>(
                nt, [&](auto n) { avx2_panel_tokens<decltype(n)::value>(panel, nb, xt, acc); });
            for (int i = 0; i < nt; ++i) {
                float* yt = y + (t + i) * y_stride;
                store_rows(yt, r, rows, acc[2 * i]);
                store_rows(yt, r + kRows, rows, acc[2 * i + 1]);
            }
        }
    }
}

// matmul_q4_panels: the same two vectors of 8 lanes, over q4 panels. A vector of packed bytes
// gives, masked, the q + 8 (0 .. 15) that meet x's bytes 4k .. 4k + 3 and, shifted and masked,
// those that meet bytes 16 + 4k .. 16 + 4k + 3: the unsigned operand of maddubs as they are (a
// pair of products is at most 2 * 15 * 127, two pairs' sum 7 620: no saturation, so the two are
// added as int16 before madd widens them). Each lane's sum starts at -8 times the sum of x's block
// (computed once per chunk of blocks and tokens), which undoes the + 8; then matvec_q4's f32 step,
// block by block: the same bits.
constexpr int kQ4ChunkBlocks = 32;  // column blocks whose corrections are computed at once
constexpr int kQ4ChunkTokens = 16;  // tokens whose corrections are computed at once (2 KB)

template <int NT>
inline void avx2_q4_panel_tokens(const PanelBlockQ4* panel, int64_t n_blocks,
                                 const BlockQ8_0* const* xt,
                                 const int32_t (*correction)[kQ4ChunkBlocks],
                                 __m256* acc /* [NT][2] */) {
    const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < n_blocks; ++b) {
        const PanelBlockQ4& p = panel[b];
        __m256i isum[NT][2];
        for (int t = 0; t < NT; ++t) isum[t][0] = isum[t][1] = _mm256_set1_epi32(correction[t][b]);
        for (int k = 0; k < kBlockSize / 8; ++k) {
            __m256i lo[2], hi[2];
            for (int h = 0; h < 2; ++h) {
                const __m256i v =
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.q[k][8 * h]));
                lo[h] = _mm256_and_si256(v, low);
                hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
            }
            for (int t = 0; t < NT; ++t) {
                int32_t four[2];
                std::memcpy(&four[0], xt[t][b].q + 4 * k, sizeof four[0]);
                std::memcpy(&four[1], xt[t][b].q + kBlockSize / 2 + 4 * k, sizeof four[1]);
                const __m256i x0 = _mm256_set1_epi32(four[0]), x1 = _mm256_set1_epi32(four[1]);
                for (int h = 0; h < 2; ++h) {
                    const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], x0),
                                                           _mm256_maddubs_epi16(hi[h], x1));
                    isum[t][h] = _mm256_add_epi32(isum[t][h], _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        for (int t = 0; t < NT; ++t) {
            acc[2 * t] = panel_step(acc[2 * t], p.scale, xt[t][b].scale, isum[t][0]);
            acc[2 * t + 1] = panel_step(acc[2 * t + 1], p.scale + 8, xt[t][b].scale, isum[t][1]);
        }
    }
}

void matmul_q4_panels(const PanelBlockQ4* w, const BlockQ8_0* x, float* y, int64_t rows,
                      int64_t cols, int64_t tokens, int64_t y_stride) {
    const int64_t nb = blocks_per_row(cols);
    if (nb == 0) {  // no columns: every sum is the accumulator's 0
        for (int64_t t = 0; t < tokens; ++t)
            for (int64_t r = 0; r < rows; ++r) y[t * y_stride + r] = 0.0f;
        return;
    }
    int32_t correction[kQ4ChunkTokens][kQ4ChunkBlocks];
    for (int64_t b0 = 0; b0 < nb; b0 += kQ4ChunkBlocks) {
        const int64_t n_blocks = nb - b0 < kQ4ChunkBlocks ? nb - b0 : kQ4ChunkBlocks;
        for (int64_t t0 = 0; t0 < tokens; t0 += kQ4ChunkTokens) {
            const int64_t n_tokens = tokens - t0 < kQ4ChunkTokens ? tokens - t0 : kQ4ChunkTokens;
            for (int64_t t = 0; t < n_tokens; ++t)
                for (int64_t b = 0; b < n_blocks; ++b)
                    correction[t][b] = -8 * sum_of_q(x[(t0 + t) * nb + b0 + b]);
            for (int64_t r = 0; r < rows; r += kPanelRows) {
                const PanelBlockQ4* panel = w + (r / kPanelRows) * nb + b0;
                for (int64_t t = 0; t < n_tokens; t += kAvx2PanelTokens) {
                    const int nt =
                        n_tokens - t < kAvx2PanelTokens ? int(n_tokens - t) : kAvx2PanelTokens;
                    __m256 acc[2 * kAvx2PanelTokens];
                    const BlockQ8_0* xt[kAvx2PanelTokens];
                    for (int i = 0; i < nt; ++i) {
                        float* yt = y + (t0 + t + i) * y_stride;
                        xt[i] = x + (t0 + t + i) * nb + b0;
                        acc[2 * i] = b0 == 0 ? _mm256_setzero_ps() : load_rows(yt, r, rows);
                        acc[2 * i + 1] =
                            b0 == 0 ? _mm256_setzero_ps() : load_rows(yt, r + kRows, rows);
                    }
                    with_count<kAvx2PanelTokens>(nt, [&](auto n) {
                        avx2_q4_panel_tokens<decltype(n)::value>(panel, n_blocks, xt,
                                                                 correction + t, acc);
                    });
                    for (int i = 0; i < nt; ++i) {
                        float* yt = y + (t0 + t + i) * y_stride;
                        store_rows(yt, r, rows, acc[2 * i]);
                        store_rows(yt, r + kRows, rows, acc[2 * i + 1]);
                    }
                }
            }
        }
    }
}

struct Avx2 {
    // maddubs makes int16 sums of two products (at most 2 * 127 * 127, so they never saturate
    // here); madd by 1 widens pairs of them to int32.
    static __m256i u8s8(__m256i u, __m256i s) {
        return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
    }

    // matmul_q8_0: |x| times w with the sign of x, as in matvec_q8_0.
    static __m256i gemm_dot(__m256i acc, __m256i w, __m256i x) {
        return _mm256_add_epi32(acc, u8s8(_mm256_abs_epi8(x), _mm256_sign_epi8(w, x)));
    }

    // The canonical 16 lanes: 0-7 in lo, 8-15 in hi.
    template <int R>
    static void matvec_f32_rows(const float* w, const float* x, float* y, int64_t cols) {
        __m256 lo[R], hi[R];
        for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm256_setzero_ps();
        int64_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            const __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
            for (int i = 0; i < R; ++i) {
                const float* wi = w + i * cols + j;
                lo[i] = _mm256_add_ps(lo[i], _mm256_mul_ps(_mm256_loadu_ps(wi), x0));
                hi[i] = _mm256_add_ps(hi[i], _mm256_mul_ps(_mm256_loadu_ps(wi + 8), x1));
            }
        }
        if (j < cols) {  // tail: masked lanes load w = x = 0 and add +0
            const int64_t t = cols - j;
            const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(t)), idx);
            const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(t) - 8), idx);
            const __m256 x0 = _mm256_maskload_ps(x + j, m0), x1 = _mm256_maskload_ps(x + j + 8, m1);
            for (int i = 0; i < R; ++i) {
                const float* wi = w + i * cols + j;
                lo[i] = _mm256_add_ps(lo[i], _mm256_mul_ps(_mm256_maskload_ps(wi, m0), x0));
                hi[i] = _mm256_add_ps(hi[i], _mm256_mul_ps(_mm256_maskload_ps(wi + 8, m1), x1));
            }
        }
        for (int i = 0; i < R; ++i) y[i] = reduce8_ps(_mm256_add_ps(lo[i], hi[i]));
    }
};

}  // namespace

const KernelTable kAvx2Table = {
    "avx2",
    quantize_row_q8_0,
    quantize_row8,
    matvec_q8_0<Avx2>,
    matvec_q4<Avx2>,
    matvec_f32<Avx2>,
    matmul_q8_0<Avx2>,
    matvec_each_panel<BlockQ4, matvec_q4<Avx2>>,  // matmul_q4 (the session uses the panels)
    matmul_q8_0_panels,
    matmul_q4_panels,
    swiglu,
    rmsnorm_each_row<matvec_f32<Avx2>>,
    attend_group,
    attend_group_q8,
    attend_each_query<attend_group>,
    attend_each_query<attend_group_q8>,
};

}  // namespace sage::kernels
