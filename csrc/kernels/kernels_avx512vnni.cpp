// AVX-512 VNNI kernels (this file alone is compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512vnni). Integer block sums use vpdpbusd (u8 x s8 -> s32) in the integer matrix-vector
// products shared with AVX2 (kernels_x86_impl.h, with quantize_row_q8_0); the f32 product and the
// SwiGLU use 512-bit vectors. The f32 arithmetic follows the canonical order of kernels_scalar.cpp,
// one matrix row per lane.
#include <immintrin.h>

#include "kernels_avx512_attention.h"
#include "kernels_x86_impl.h"

namespace sage::kernels {
namespace {

// matmul_q8_0 on 512-bit vectors: the shared 8-row algorithm of kernels_x86_impl.h with panels of
// 16 rows (two transposed 8-row halves per vector) and up to 8 tokens per packed vector. One row
// per lane, blocks in order: matvec_q8_0's arithmetic, bit for bit.
constexpr int kWideRows = 16;
constexpr int kWideTokens = 8;
// A panel is packed once for kWideTokenChunk tokens (the packing's transposes cost about a quarter
// of the products when it served 16); 8 column blocks keep the prepared x at 16 KB.
constexpr int kWidePanelBlocks = 8;
constexpr int kWideTokenChunk = 64;

struct WideBlock {
    __m512i q[kBlockSize / 4];  // q[k], lane i: bytes 4k .. 4k + 3 of row i's block
    __m512i correction;         // 128 * (sum of row i's q), lane i
    __m512 scale;               // row i's block scale, lane i
};

void pack_wide_panel(const BlockQ8_0* const* wr, int64_t b0, int64_t n_blocks, WideBlock* out) {
    const __m512i offset = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int64_t b = 0; b < n_blocks; ++b) {
        __m256i lo[8], hi[8], t[8];
        for (int i = 0; i < 8; ++i) t[i] = load32(wr[i][b0 + b].q);
        transpose8x8_epi32(t, lo);
        for (int i = 0; i < 8; ++i) t[i] = load32(wr[8 + i][b0 + b].q);
        transpose8x8_epi32(t, hi);
        WideBlock& p = out[b];
        p.correction = _mm512_setzero_si512();
        for (int k = 0; k < kBlockSize / 4; ++k) {
            p.q[k] = _mm512_inserti64x4(_mm512_castsi256_si512(lo[k]), hi[k], 1);
            p.correction = _mm512_dpbusd_epi32(p.correction, offset, p.q[k]);
        }
        float scales[kWideRows];
        for (int i = 0; i < kWideRows; ++i) scales[i] = wr[i][b0 + b].scale;
        p.scale = _mm512_loadu_ps(scales);
    }
}

template <int NT>
inline void wide_panel_tokens(const WideBlock* panel, int64_t n_blocks, const int8_t* x,
                              int64_t x_stride, const float* const* xs, __m512* acc) {
    for (int64_t b = 0; b < n_blocks; ++b) {
        const WideBlock& p = panel[b];
        __m512i isum[NT];
        for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
        const int8_t* xb = x + b * kBlockSize;
        for (int k = 0; k < kBlockSize / 4; ++k) {
            for (int t = 0; t < NT; ++t) {
                int32_t four;
                std::memcpy(&four, xb + t * x_stride + 4 * k, sizeof four);
                isum[t] = _mm512_dpbusd_epi32(isum[t], _mm512_set1_epi32(four), p.q[k]);
            }
        }
        for (int t = 0; t < NT; ++t) {
            const __m512 s = _mm512_mul_ps(p.scale, _mm512_set1_ps(xs[t][b]));
            const __m512i exact = _mm512_sub_epi32(isum[t], p.correction);
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(s, _mm512_cvtepi32_ps(exact)));
        }
    }
}

void matmul_q8_0_wide(const BlockQ8_0* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols,
                      int64_t tokens, int64_t y_stride) {
    const int64_t nb = blocks_per_row(cols);
    if (nb == 0) {  // no columns: every sum is the accumulator's 0
        for (int64_t t = 0; t < tokens; ++t)
            for (int64_t r = 0; r < rows; ++r) y[t * y_stride + r] = 0.0f;
        return;
    }
    alignas(64) int8_t xbytes[kWideTokenChunk * kWidePanelBlocks * kBlockSize];
    float xscale[kWideTokenChunk][kWidePanelBlocks];
    WideBlock panel[kWidePanelBlocks];
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));  // x + 128 as u8
    for (int64_t b0 = 0; b0 < nb; b0 += kWidePanelBlocks) {
        const int64_t n_blocks = nb - b0 < kWidePanelBlocks ? nb - b0 : kWidePanelBlocks;
        const int64_t x_stride = n_blocks * kBlockSize;
        for (int64_t t0 = 0; t0 < tokens; t0 += kWideTokenChunk) {
            const int64_t n_tokens = tokens - t0 < kWideTokenChunk ? tokens - t0 : kWideTokenChunk;
            for (int64_t t = 0; t < n_tokens; ++t) {
                for (int64_t b = 0; b < n_blocks; ++b) {
                    const BlockQ8_0& blk = x[(t0 + t) * nb + b0 + b];
                    _mm256_storeu_si256(
                        reinterpret_cast<__m256i*>(xbytes + t * x_stride + b * kBlockSize),
                        _mm256_xor_si256(load32(blk.q), flip));
                    xscale[t][b] = blk.scale;
                }
            }
            for (int64_t r = 0; r < rows; r += kWideRows) {
                const BlockQ8_0* wr[kWideRows];
                for (int i = 0; i < kWideRows; ++i)
                    wr[i] = w + (r + i < rows ? r + i : rows - 1) * nb;
                pack_wide_panel(wr, b0, n_blocks, panel);
                const __mmask16 live =
                    rows - r >= kWideRows ? __mmask16(0xFFFF) : __mmask16((1u << (rows - r)) - 1);
                for (int64_t t = 0; t < n_tokens; t += kWideTokens) {
                    const int nt = n_tokens - t < kWideTokens ? int(n_tokens - t) : kWideTokens;
                    __m512 acc[kWideTokens];
                    float* yt[kWideTokens];
                    const float* xs[kWideTokens];
                    for (int i = 0; i < nt; ++i) {
                        yt[i] = y + (t0 + t + i) * y_stride + r;
                        xs[i] = xscale[t + i];
                        acc[i] = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(live, yt[i]);
                    }
                    const int8_t* xt = xbytes + t * x_stride;
                    with_count<8>(nt, [&](auto n) {
                        wide_panel_tokens<decltype(n)::value>(panel, n_blocks, xt, x_stride, xs,
                                                              acc);
                    });
                    for (int i = 0; i < nt; ++i) _mm512_mask_storeu_ps(yt[i], live, acc[i]);
                }
            }
        }
    }
}

// matmul_q8_0_panels: a panel's 16 rows are the 16 lanes; each four bytes of a token's x,
// broadcast, meet the panel's q + 128 (the unsigned operand) in one vpdpbusd, so a lane sums
// (q + 128) * x over its row's block: starting the sum at -128 * (the block's sum of x) leaves the
// exact block sum. Then matvec_q8_0's f32 step, block by block: the same bits.
//
// Its bound on Zen 4 is the pipes, not the loads: a 512-bit vpdpbusd and a vmulps share two pipes
// (one of either per cycle, measured), so a (panel, token, block) costs 8 dot products and the f32
// step's 2 products, 10 cycles for 512 multiply-adds; the conversion and the addition run beside
// them. A block of tokens gets there by keeping 8 tokens' sums in registers against each
// panel load, with the tokens' bytes, corrections and scales laid out block by block (PanelTokens)
// so that a group's broadcasts sit at fixed offsets from one pointer.
constexpr int kPanelChunkBlocks = 32;  // column blocks per decode chunk (1 024 columns)
constexpr int kPanelChunkTokens = 64;  // tokens per block chunk (the session's prefill block)
constexpr int kPanelTokenBlocks = 8;   // column blocks per block chunk (20 KB of PanelTokens)
constexpr int kPanelTokens = 8;        // tokens against one panel block at once
// Panels against one token at once in a decode step: q8_0 2 (4 measured the same rate), q4 4
// (2 measured 8 % slower: 42 against 39 us for the q4 copy of the shipped model's products).
template <typename Panel>
constexpr int kDecodePanels = 2;
template <>
constexpr int kDecodePanels<PanelBlockQ4> = 4;

// What the packed weights' offset adds to a block's sum: q8_0 panels hold q + 128, q4 panels
// q + 8 (the file's nibbles).
inline int32_t panel_offset(const PanelBlockQ8*) {
    return 128;
}
inline int32_t panel_offset(const PanelBlockQ4*) {
    return 8;
}

// One column block of a chunk of tokens, token after token.
struct alignas(64) PanelTokens {
    int8_t q[kPanelChunkTokens][kBlockSize];
    int32_t correction[kPanelChunkTokens];
    float scale[kPanelChunkTokens];
};

// Tokens t .. t + NT - 1 of the chunk against one panel over n_blocks column blocks, their rows'
// sums in acc[0 .. NT).
template <int NT>
inline void panel_tokens(const PanelBlockQ8* panel, int64_t n_blocks, const PanelTokens* x,
                         int64_t t, __m512* acc) {
    for (int64_t b = 0; b < n_blocks; ++b) {
        const PanelBlockQ8& p = panel[b];
        const int8_t* xq = x[b].q[t];
        __m512i isum[NT];
        for (int i = 0; i < NT; ++i) isum[i] = _mm512_set1_epi32(x[b].correction[t + i]);
        for (int k = 0; k < kBlockSize / 4; ++k) {
            const __m512i w = _mm512_loadu_si512(p.q[k]);
            for (int i = 0; i < NT; ++i) {
                int32_t four;
                std::memcpy(&four, xq + i * kBlockSize + 4 * k, sizeof four);
                isum[i] = _mm512_dpbusd_epi32(isum[i], w, _mm512_set1_epi32(four));
            }
        }
        const __m512 scale = _mm512_loadu_ps(p.scale);
        for (int i = 0; i < NT; ++i) {
            const __m512 s = _mm512_mul_ps(scale, _mm512_set1_ps(x[b].scale[t + i]));
            acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(s, _mm512_cvtepi32_ps(isum[i])));
        }
    }
}

// The same for q4 panels: each vector of packed bytes unpacked once for the NT tokens, its low
// nibbles (masked) and its high ones (shifted and masked), both the unsigned operand q + 8.
template <int NT>
inline void panel_tokens(const PanelBlockQ4* panel, int64_t n_blocks, const PanelTokens* x,
                         int64_t t, __m512* acc) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < n_blocks; ++b) {
        const PanelBlockQ4& p = panel[b];
        const int8_t* xq = x[b].q[t];
        __m512i isum[NT];
        for (int i = 0; i < NT; ++i) isum[i] = _mm512_set1_epi32(x[b].correction[t + i]);
        for (int k = 0; k < kBlockSize / 8; ++k) {
            const __m512i v = _mm512_loadu_si512(p.q[k]);
            const __m512i lo = _mm512_and_si512(v, low);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
            for (int i = 0; i < NT; ++i) {
                int32_t four[2];
                std::memcpy(&four[0], xq + i * kBlockSize + 4 * k, sizeof four[0]);
                std::memcpy(&four[1], xq + i * kBlockSize + kBlockSize / 2 + 4 * k, sizeof four[1]);
                isum[i] = _mm512_dpbusd_epi32(isum[i], lo, _mm512_set1_epi32(four[0]));
                isum[i] = _mm512_dpbusd_epi32(isum[i], hi, _mm512_set1_epi32(four[1]));
            }
        }
        const __m512 scale = _mm512_loadu_ps(p.scale);
        for (int i = 0; i < NT; ++i) {
            const __m512 s = _mm512_mul_ps(scale, _mm512_set1_ps(x[b].scale[t + i]));
            acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(s, _mm512_cvtepi32_ps(isum[i])));
        }
    }
}

// One token (a decode step) against NP panels at once: each broadcast of x serves NP panels, and
// each panel's block sum runs as two chains (even and odd k) added at the end (integers: exact),
// so that the sums' latency is not the product's bound.
template <int NP>
inline void panels_one_token(const PanelBlockQ8* panel, int64_t nb, int64_t n_blocks,
                             const BlockQ8_0* x, const int32_t* correction, __m512* acc) {
    for (int64_t b = 0; b < n_blocks; ++b) {
        __m512i even[NP], odd[NP];
        for (int p = 0; p < NP; ++p) {
            even[p] = _mm512_set1_epi32(correction[b]);
            odd[p] = _mm512_setzero_si512();
        }
        for (int k = 0; k < kBlockSize / 4; k += 2) {
            int32_t four[2];
            std::memcpy(four, x[b].q + 4 * k, sizeof four);
            const __m512i x0 = _mm512_set1_epi32(four[0]), x1 = _mm512_set1_epi32(four[1]);
            for (int p = 0; p < NP; ++p) {
                const PanelBlockQ8& pb = panel[p * nb + b];
                even[p] = _mm512_dpbusd_epi32(even[p], _mm512_loadu_si512(pb.q[k]), x0);
                odd[p] = _mm512_dpbusd_epi32(odd[p], _mm512_loadu_si512(pb.q[k + 1]), x1);
            }
        }
        const __m512 xs = _mm512_set1_ps(x[b].scale);
        for (int p = 0; p < NP; ++p) {
            const __m512 s = _mm512_mul_ps(_mm512_loadu_ps(panel[p * nb + b].scale), xs);
            const __m512 sum = _mm512_cvtepi32_ps(_mm512_add_epi32(even[p], odd[p]));
            acc[p] = _mm512_add_ps(acc[p], _mm512_mul_ps(s, sum));
        }
    }
}

// The same for q4 panels: a vector of packed bytes holds, in its low nibbles, the weights that
// meet x's bytes 4k .. 4k + 3 (masked: q + 8, the unsigned operand) and in its high nibbles those
// that meet bytes 16 + 4k .. 16 + 4k + 3, masked in place, so 16 times their q + 8: that chain's
// sum is divided back by 16 (exact, it is a multiple of 16) when the two are added.
template <int NP>
inline void panels_one_token(const PanelBlockQ4* panel, int64_t nb, int64_t n_blocks,
                             const BlockQ8_0* x, const int32_t* correction, __m512* acc) {
    const __m512i low = _mm512_set1_epi8(0x0F), high = _mm512_set1_epi8(static_cast<char>(0xF0));
    for (int64_t b = 0; b < n_blocks; ++b) {
        __m512i lo[NP], hi[NP];
        for (int p = 0; p < NP; ++p) {
            lo[p] = _mm512_set1_epi32(correction[b]);
            hi[p] = _mm512_setzero_si512();
        }
        for (int k = 0; k < kBlockSize / 8; ++k) {
            int32_t four[2];
            std::memcpy(&four[0], x[b].q + 4 * k, sizeof four[0]);
            std::memcpy(&four[1], x[b].q + kBlockSize / 2 + 4 * k, sizeof four[1]);
            const __m512i x0 = _mm512_set1_epi32(four[0]), x1 = _mm512_set1_epi32(four[1]);
            for (int p = 0; p < NP; ++p) {
                const __m512i v = _mm512_loadu_si512(panel[p * nb + b].q[k]);
                lo[p] = _mm512_dpbusd_epi32(lo[p], _mm512_and_si512(v, low), x0);
                hi[p] = _mm512_dpbusd_epi32(hi[p], _mm512_and_si512(v, high), x1);
            }
        }
        const __m512 xs = _mm512_set1_ps(x[b].scale);
        for (int p = 0; p < NP; ++p) {
            const __m512 s = _mm512_mul_ps(_mm512_loadu_ps(panel[p * nb + b].scale), xs);
            const __m512i isum = _mm512_add_epi32(lo[p], _mm512_srai_epi32(hi[p], 4));
            acc[p] = _mm512_add_ps(acc[p], _mm512_mul_ps(s, _mm512_cvtepi32_ps(isum)));
        }
    }
}

inline __mmask16 live_rows(int64_t rows, int64_t r) {
    return rows - r >= kPanelRows ? __mmask16(0xFFFF) : __mmask16((1u << (rows - r)) - 1);
}

// A decode step: kDecodePanels panels at a time, then the rest one by one.
template <typename Panel>
void panels_decode(const Panel* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t nb) {
    constexpr int NP = kDecodePanels<Panel>;
    int32_t correction[kPanelChunkBlocks];
    for (int64_t b0 = 0; b0 < nb; b0 += kPanelChunkBlocks) {
        const int64_t n_blocks = nb - b0 < kPanelChunkBlocks ? nb - b0 : kPanelChunkBlocks;
        for (int64_t b = 0; b < n_blocks; ++b)
            correction[b] = -panel_offset(w) * sum_of_q(x[b0 + b]);
        int64_t r = 0;
        for (; r + NP * kPanelRows <= rows; r += NP * kPanelRows) {
            __m512 acc[NP];
            for (int p = 0; p < NP; ++p)
                acc[p] = b0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(y + r + p * kPanelRows);
            panels_one_token<NP>(w + (r / kPanelRows) * nb + b0, nb, n_blocks, x + b0, correction,
                                 acc);
            for (int p = 0; p < NP; ++p) _mm512_storeu_ps(y + r + p * kPanelRows, acc[p]);
        }
        for (; r < rows; r += kPanelRows) {
            const __mmask16 live = live_rows(rows, r);
            __m512 acc = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(live, y + r);
            panels_one_token<1>(w + (r / kPanelRows) * nb + b0, nb, n_blocks, x + b0, correction,
                                &acc);
            _mm512_mask_storeu_ps(y + r, live, acc);
        }
    }
}

// matmul_q8_0_panels and matmul_q4_panels.
template <typename Panel>
void matmul_panels(const Panel* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols,
                   int64_t tokens, int64_t y_stride) {
    const int64_t nb = blocks_per_row(cols);
    if (nb == 0) {  // no columns: every sum is the accumulator's 0
        for (int64_t t = 0; t < tokens; ++t)
            for (int64_t r = 0; r < rows; ++r) y[t * y_stride + r] = 0.0f;
        return;
    }
    if (tokens == 1) {
        panels_decode(w, x, y, rows, nb);
        return;
    }
    PanelTokens prepared[kPanelTokenBlocks];
    for (int64_t b0 = 0; b0 < nb; b0 += kPanelTokenBlocks) {
        const int64_t n_blocks = nb - b0 < kPanelTokenBlocks ? nb - b0 : kPanelTokenBlocks;
        for (int64_t t0 = 0; t0 < tokens; t0 += kPanelChunkTokens) {
            const int64_t n_tokens =
                tokens - t0 < kPanelChunkTokens ? tokens - t0 : kPanelChunkTokens;
            for (int64_t b = 0; b < n_blocks; ++b) {
                for (int64_t t = 0; t < n_tokens; ++t) {
                    const BlockQ8_0& block = x[(t0 + t) * nb + b0 + b];
                    std::memcpy(prepared[b].q[t], block.q, kBlockSize);
                    prepared[b].correction[t] = -panel_offset(w) * sum_of_q(block);
                    prepared[b].scale[t] = block.scale;
                }
            }
            for (int64_t r = 0; r < rows; r += kPanelRows) {
                const Panel* panel = w + (r / kPanelRows) * nb + b0;
                const __mmask16 live = live_rows(rows, r);
                // The next panel's lines, a slice per token group (into L1: the session's other
                // steps between two products leave the weights in the shared L3 at best).
                const char* next = reinterpret_cast<const char*>(panel + nb);
                const int64_t lines =
                    r + kPanelRows < rows ? n_blocks * int64_t{sizeof(Panel)} / 64 : 0;
                const int64_t groups = (n_tokens + kPanelTokens - 1) / kPanelTokens;
                const int64_t per_group = (lines + groups - 1) / groups;
                for (int64_t t = 0; t < n_tokens; t += kPanelTokens) {
                    const int nt = n_tokens - t < kPanelTokens ? int(n_tokens - t) : kPanelTokens;
                    const int64_t first_line = t / kPanelTokens * per_group;
                    for (int64_t l = first_line; l < first_line + per_group && l < lines; ++l)
                        _mm_prefetch(next + 64 * l, _MM_HINT_T0);
                    float* yt = y + (t0 + t) * y_stride + r;
                    with_count<8>(nt, [&](auto n) {
                        constexpr int NT = decltype(n)::value;
                        __m512 acc[NT];
                        for (int i = 0; i < NT; ++i)
                            acc[i] = b0 == 0 ? _mm512_setzero_ps()
                                             : _mm512_maskz_loadu_ps(live, yt + i * y_stride);
                        panel_tokens<NT>(panel, n_blocks, prepared, t, acc);
                        for (int i = 0; i < NT; ++i)
                            _mm512_mask_storeu_ps(yt + i * y_stride, live, acc[i]);
                    });
                }
            }
        }
    }
}

// swiglu on 16 lanes (Lanes16: kernels_avx512_attention.h), its tail on 8: the division bounds it,
// and a 512-bit one serves twice the lanes of AVX2's in less than twice the time (a prefill's
// SwiGLU 4.1 -> 2.5 cycles per element here).
void swiglu16(float* gate, const float* up, int64_t n) {
    const int64_t i = swiglu_vectors<Lanes16, kSwigluVectors>(gate, up, n);
    swiglu(gate + i, up + i, n - i);
}

struct Avx512Vnni {
    static __m256i u8s8(__m256i u, __m256i s) {
        return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
    }

    // One zmm is exactly the 16 canonical lanes.
    template <int R>
    static void matvec_f32_rows(const float* w, const float* x, float* y, int64_t cols) {
        __m512 acc[R];
        for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            const __m512 xv = _mm512_loadu_ps(x + j);
            for (int i = 0; i < R; ++i)
                acc[i] =
                    _mm512_add_ps(acc[i], _mm512_mul_ps(_mm512_loadu_ps(w + i * cols + j), xv));
        }
        if (j < cols) {  // tail: masked lanes load w = x = 0 and add +0
            const __mmask16 m = __mmask16((1u << (cols - j)) - 1);
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
            for (int i = 0; i < R; ++i)
                acc[i] = _mm512_add_ps(
                    acc[i], _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i * cols + j), xv));
        }
        for (int i = 0; i < R; ++i) {
            const __m256 high =
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[i]), 1));
            y[i] = reduce8_ps(_mm256_add_ps(_mm512_castps512_ps256(acc[i]), high));
        }
    }
};

}  // namespace

const KernelTable kAvx512VnniTable = {
    "avx512vnni",
    quantize_row_q8_0,
    quantize_row16,
    matvec_q8_0<Avx512Vnni>,
    matvec_q4<Avx512Vnni>,
    matvec_f32<Avx512Vnni>,
    matmul_q8_0_wide,
    matvec_each_panel<BlockQ4, matvec_q4<Avx512Vnni>>,  // matmul_q4 (the session uses the panels)
    matmul_panels<PanelBlockQ8>,
    matmul_panels<PanelBlockQ4>,
    swiglu16,
    rmsnorm_each_row<matvec_f32<Avx512Vnni>>,
    attend_group16,
    attend_group16_q8,
    // Query by query on 16 lanes: faster than two queries per 8-lane tile sharing their loads
    // (the FMA units, not the loads, bound it; a 1 000-token prefill 6 % faster).
    attend_each_query<attend_group16>,
    attend_each_query<attend_group16_q8>,
};

}  // namespace sage::kernels
