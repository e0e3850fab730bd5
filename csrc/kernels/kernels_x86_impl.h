// The x86 kernels shared by kernels_avx2.cpp and kernels_avx512vnni.cpp, written once and
// parameterised by a struct `Isa` of what the instruction sets do differently:
//
//   static __m256i Isa::u8s8(__m256i u, __m256i s);  // eight int32 sums, each of four u8 * s8
//   template <int R>                                  // y[0..R) for R consecutive rows of w, in
//   static void Isa::matvec_f32_rows(const float* w, const float* x, float* y, int64_t cols);
//                                                     // the canonical 16-lane order
//   static __m256i Isa::gemm_dot(__m256i acc, __m256i w, __m256i x);  // matmul_q8_0's dot
//
// Each of those files includes this header and instantiates the templates with its own struct, so
// everything here is compiled with that file's flags (and internal linkage): it must use nothing
// beyond AVX2. The f32 arithmetic follows the canonical order of kernels_scalar.cpp, one matrix
// row per lane; integer sums are exact either way.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels_internal.h"

namespace sage::kernels {
namespace {

constexpr int kRows = 8;  // rows of a matrix-vector product computed together, one per lane

inline int32_t hsum256_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// Eight vectors of eight int32 partial sums -> one vector holding the total of each (exact).
inline __m256i reduce8(const __m256i* v) {
    const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]);
    const __m256i h23 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]);
    const __m256i h67 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i a = _mm256_hadd_epi32(h01, h23);  // per 128-bit lane: rows 0-3
    const __m256i b = _mm256_hadd_epi32(h45, h67);  // per 128-bit lane: rows 4-7
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                            _mm256_permute2x128_si256(a, b, 0x31));
}

inline __m256i load32(const int8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// The exact sum of a Q8_0 block's 32 q: its bytes as u8 (q + 128) summed by vpsadbw. The packed
// products start each block's sum at -offset times it, undoing the offset their weights carry.
inline int32_t sum_of_q(const BlockQ8_0& x) {
    const __m256i u = _mm256_xor_si256(load32(x.q), _mm256_set1_epi8(static_cast<char>(0x80)));
    const __m256i sums = _mm256_sad_epu8(u, _mm256_setzero_si256());  // four partial sums, u64
    const __m128i s =
        _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    return _mm_cvtsi128_si32(_mm_add_epi64(s, _mm_unpackhi_epi64(s, s))) - 128 * kBlockSize;
}

// Pointers to the kRows rows of a group; rows past the end repeat the last row (computed, not
// stored), so a ragged group runs the same code and the same per-row order.
template <typename Block>
inline void group_rows(const Block* w, int64_t nb, int64_t r, int64_t rows, const Block** out) {
    for (int i = 0; i < kRows; ++i) out[i] = w + (r + i < rows ? r + i : rows - 1) * nb;
}

inline void store_rows(float* y, int64_t r, int64_t rows, __m256 acc) {
    if (rows - r >= kRows) {
        _mm256_storeu_ps(y + r, acc);
    } else {
        float t[kRows];
        _mm256_storeu_ps(t, acc);
        for (int64_t i = 0; i < rows - r; ++i) y[r + i] = t[i];
    }
}

// The partial sums of rows r .. r + 7 that a previous column chunk stored.
inline __m256 load_rows(const float* y, int64_t r, int64_t rows) {
    if (rows - r >= kRows) return _mm256_loadu_ps(y + r);
    float t[kRows] = {};
    for (int64_t i = 0; i < rows - r; ++i) t[i] = y[r + i];
    return _mm256_loadu_ps(t);
}

// acc = acc + (ws * xs) * float(isum), one row per lane.
template <typename Block>
inline __m256 accumulate(__m256 acc, const Block* const* wr, int64_t b, float xs, __m256i isum) {
    const __m256 ws =
        _mm256_setr_ps(wr[0][b].scale, wr[1][b].scale, wr[2][b].scale, wr[3][b].scale,
                       wr[4][b].scale, wr[5][b].scale, wr[6][b].scale, wr[7][b].scale);
    const __m256 s = _mm256_mul_ps(ws, _mm256_set1_ps(xs));
    return _mm256_add_ps(acc, _mm256_mul_ps(s, _mm256_cvtepi32_ps(isum)));
}

// Signed q8 x q8 through the unsigned x signed dot: |x| * (w with the sign of x). Both operands
// lie in [-127, 127], so neither the absolute value nor the product pairs saturate.
template <typename Isa>
void matvec_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    const int64_t nb = blocks_per_row(cols);
    for (int64_t r = 0; r < rows; r += kRows) {
        const BlockQ8_0* wr[kRows];
        group_rows(w, nb, r, rows, wr);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const __m256i xv = load32(x[b].q);
            const __m256i ax = _mm256_abs_epi8(xv);
            __m256i part[kRows];
            for (int i = 0; i < kRows; ++i)
                part[i] = Isa::u8s8(ax, _mm256_sign_epi8(load32(wr[i][b].q), xv));
            acc = accumulate(acc, wr, b, x[b].scale, reduce8(part));
        }
        store_rows(y, r, rows, acc);
    }
}

// Weights stay unsigned (q + 8 in 0..15), the u8 operand of the dot:
// sum (u - 8) * x = sum u * x - 8 * sum x.
template <typename Isa>
void matvec_q4(const BlockQ4* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    const int64_t nb = blocks_per_row(cols);
    const __m128i deinterleave =
        _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m256i shuf = _mm256_broadcastsi128_si256(deinterleave);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i ones8 = _mm256_set1_epi8(1);
    for (int64_t r = 0; r < rows; r += kRows) {
        const BlockQ4* wr[kRows];
        group_rows(w, nb, r, rows, wr);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            // x as [even elements | odd elements], to meet [low nibbles | high nibbles].
            const __m256i xv =
                _mm256_permute4x64_epi64(_mm256_shuffle_epi8(load32(x[b].q), shuf), 0xD8);
            const int32_t xsum = hsum256_epi32(Isa::u8s8(ones8, xv));
            __m256i part[kRows];
            for (int i = 0; i < kRows; ++i) {
                const __m128i packed =
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr[i][b].q));
                const __m256i wv =
                    _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(packed),
                                                             _mm_srli_epi16(packed, 4), 1),
                                     low4);
                part[i] = Isa::u8s8(wv, xv);
            }
            const __m256i isum = _mm256_sub_epi32(reduce8(part), _mm256_set1_epi32(8 * xsum));
            acc = accumulate(acc, wr, b, x[b].scale, isum);
        }
        store_rows(y, r, rows, acc);
    }
}

// The last step of the canonical 16-lane f32 reduction, from the eight sums s8[i] = acc[i] +
// acc[i + 8]: the halving tree.
inline float reduce8_ps(__m256 s8) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

template <typename Isa>
void matvec_f32(const float* w, const float* x, float* y, int64_t rows, int64_t cols) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) Isa::template matvec_f32_rows<4>(w + r * cols, x, y + r, cols);
    for (; r < rows; ++r) Isa::template matvec_f32_rows<1>(w + r * cols, x, y + r, cols);
}

// ---- quantize_row_q8_0 -------------------------------------------------------------------------
// Whole blocks eight at a time: their max|x| gathered into one vector (no horizontal max per
// block), the eight scales and inverse scales by two vector divisions, then each block's q. The
// same code serves AVX-512: for the engine's rows (8 to 24 blocks) it measured faster than
// 16-block groups of 512-bit vectors (31 vs 42 ns for 256 values, 88 vs 95 ns for 768).

// max|x| of `count` (1..8) whole blocks from x on, block j's in lane j (max is exact in any order;
// the lanes from count on repeat block 0). Each block's four vectors are first folded into one,
// then the 8 vectors are halved pairwise three times, the pairs chosen so that block j ends in
// lane j: vector i holds block 4 * (i % 2) + i / 2.
inline __m256 block_amax8(const float* x, int count) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 m[8];
    for (int i = 0; i < 8; ++i) {
        const int block = 4 * (i % 2) + i / 2;
        const float* xb = x + (block < count ? block : 0) * kBlockSize;
        m[i] = _mm256_and_ps(_mm256_loadu_ps(xb), abs_mask);
        for (int k = 1; k < 4; ++k)
            m[i] = _mm256_max_ps(m[i], _mm256_and_ps(_mm256_loadu_ps(xb + 8 * k), abs_mask));
    }
    __m256 h[4];
    for (int i = 0; i < 4; ++i)  // 128-bit halves: [a | b], each vector's two halves folded
        h[i] = _mm256_max_ps(_mm256_permute2f128_ps(m[2 * i], m[2 * i + 1], 0x20),
                             _mm256_permute2f128_ps(m[2 * i], m[2 * i + 1], 0x31));
    for (int i = 0; i < 2; ++i)  // per half: two lanes each of two vectors' sources
        h[i] = _mm256_max_ps(_mm256_shuffle_ps(h[2 * i], h[2 * i + 1], 0x44),
                             _mm256_shuffle_ps(h[2 * i], h[2 * i + 1], 0xEE));
    return _mm256_max_ps(_mm256_shuffle_ps(h[0], h[1], 0x88), _mm256_shuffle_ps(h[0], h[1], 0xDD));
}

// q[0..31] = clamp(round_half_even(x * inv), -127, 127) for a block's 32 floats.
inline __m256i quantize32(const float* x, __m256 inv) {
    __m256i i[4];
    for (int k = 0; k < 4; ++k)  // cvtps rounds half to even (default MXCSR)
        i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), inv));
    const __m256i p =
        _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    const __m256i ordered =
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    return _mm256_max_epi8(ordered, _mm256_set1_epi8(-127));
}

// `count` (1..8) whole blocks from x on into y[0 .. count).
inline void quantize_blocks(const float* x, BlockQ8_0* y, int count) {
    const __m256 scale = _mm256_div_ps(block_amax8(x, count), _mm256_set1_ps(127.0f));
    const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), scale);
    // inverse_scale: 0 where 1 / scale is infinite (scale 0, or so small it overflows).
    const __m256 finite = _mm256_cmp_ps(_mm256_sub_ps(inv, inv), _mm256_setzero_ps(), _CMP_EQ_OQ);
    alignas(32) float scales[8], invs[8];
    _mm256_store_ps(scales, scale);
    _mm256_store_ps(invs, _mm256_and_ps(inv, finite));
    for (int j = 0; j < count; ++j) {
        y[j].scale = scales[j];
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[j].q),
                            quantize32(x + j * kBlockSize, _mm256_set1_ps(invs[j])));
    }
}

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
    const int64_t whole = n / kBlockSize;
    for (int64_t b = 0; b < whole; b += 8)
        quantize_blocks(x + b * kBlockSize, y + b, whole - b < 8 ? int(whole - b) : 8);
    if (whole < blocks_per_row(n)) {  // the last block, zero-padded: the padding's q are 0
        float padded[kBlockSize] = {};
        std::memcpy(padded, x + whole * kBlockSize,
                    static_cast<size_t>(n - whole * kBlockSize) * sizeof(float));
        quantize_blocks(padded, y + whole, 1);
    }
}

// ---- matmul_q8_0 -------------------------------------------------------------------------------
// A block of tokens against panels of kRows weight rows, one row per lane as in matvec_q8_0. Each
// panel is repacked once for kTokenChunk tokens so that vector k of a block holds bytes 4k .. 4k+3
// of each of its rows: a broadcast of four bytes of a token's x then meets all the rows in one dot
// (Isa::gemm_dot(acc, w, x): acc + the four-byte dots of the packed weights w with x, one int32
// per row), each lane sums its row's block exactly, and no horizontal sum is needed. The f32
// accumulation is matvec_q8_0's, block by block, so the results are the same bits. (AVX-512 VNNI
// runs the same algorithm on 16-row panels, kernels_avx512vnni.cpp.)
constexpr int kPanelBlocks = 32;  // column blocks of a panel packed at once (1 024 columns)
constexpr int kTokenChunk = 16;   // tokens whose x is prepared at once (16 KB on the stack)
constexpr int kTokenGroup = 4;    // tokens computed together against one packed vector

struct PackedBlock {
    __m256i q[kBlockSize / 4];  // q[k], lane i: bytes 4k .. 4k + 3 of row i's block
    __m256 scale;               // row i's block scale, lane i
};

// The 8 x 8 transpose of 32-bit elements: row i's bytes 4k .. 4k + 3 go to lane i of out[k].
inline void transpose8x8_epi32(const __m256i* in, __m256i* out) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(in[i], in[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(in[i], in[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int k = 0; k < 4; ++k) {
        out[k] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x20);
        out[k + 4] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x31);
    }
}

inline void pack_panel(const BlockQ8_0* const* wr, int64_t b0, int64_t n_blocks, PackedBlock* out) {
    for (int64_t b = 0; b < n_blocks; ++b) {
        __m256i rows[kRows];
        for (int i = 0; i < kRows; ++i) rows[i] = load32(wr[i][b0 + b].q);
        PackedBlock& p = out[b];
        transpose8x8_epi32(rows, p.q);
        p.scale = _mm256_setr_ps(wr[0][b0 + b].scale, wr[1][b0 + b].scale, wr[2][b0 + b].scale,
                                 wr[3][b0 + b].scale, wr[4][b0 + b].scale, wr[5][b0 + b].scale,
                                 wr[6][b0 + b].scale, wr[7][b0 + b].scale);
    }
}

// NT tokens (x: prepared bytes [NT][n_blocks][32], xs: their block scales) against one packed
// panel; acc[t] holds the panel's 8 row sums of token t, carried across column chunks.
template <typename Isa, int NT>
inline void panel_tokens(const PackedBlock* panel, int64_t n_blocks, const int8_t* x,
                         int64_t x_stride, const float* const* xs, __m256* acc) {
    for (int64_t b = 0; b < n_blocks; ++b) {
        const PackedBlock& p = panel[b];
        __m256i isum[NT];
        for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
        const int8_t* xb = x + b * kBlockSize;
        for (int k = 0; k < kBlockSize / 4; ++k) {
            for (int t = 0; t < NT; ++t) {
                int32_t four;
                std::memcpy(&four, xb + t * x_stride + 4 * k, sizeof four);
                isum[t] = Isa::gemm_dot(isum[t], p.q[k], _mm256_set1_epi32(four));
            }
        }
        for (int t = 0; t < NT; ++t) {
            const __m256 s = _mm256_mul_ps(p.scale, _mm256_set1_ps(xs[t][b]));
            acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(s, _mm256_cvtepi32_ps(isum[t])));
        }
    }
}

template <typename Isa>
void matmul_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols,
                 int64_t tokens, int64_t y_stride) {
    const int64_t nb = blocks_per_row(cols);
    if (nb == 0) {  // no columns: every sum is the accumulator's 0
        for (int64_t t = 0; t < tokens; ++t)
            for (int64_t r = 0; r < rows; ++r) y[t * y_stride + r] = 0.0f;
        return;
    }
    alignas(32) int8_t xbytes[kTokenChunk * kPanelBlocks * kBlockSize];
    float xscale[kTokenChunk][kPanelBlocks];
    PackedBlock panel[kPanelBlocks];
    for (int64_t b0 = 0; b0 < nb; b0 += kPanelBlocks) {
        const int64_t n_blocks = nb - b0 < kPanelBlocks ? nb - b0 : kPanelBlocks;
        const int64_t x_stride = n_blocks * kBlockSize;
        for (int64_t t0 = 0; t0 < tokens; t0 += kTokenChunk) {
            const int64_t n_tokens = tokens - t0 < kTokenChunk ? tokens - t0 : kTokenChunk;
            for (int64_t t = 0; t < n_tokens; ++t) {
                for (int64_t b = 0; b < n_blocks; ++b) {
                    const BlockQ8_0& blk = x[(t0 + t) * nb + b0 + b];
                    _mm256_storeu_si256(
                        reinterpret_cast<__m256i*>(xbytes + t * x_stride + b * kBlockSize),
                        load32(blk.q));
                    xscale[t][b] = blk.scale;
                }
            }
            for (int64_t r = 0; r < rows; r += kRows) {
                const BlockQ8_0* wr[kRows];
                group_rows(w, nb, r, rows, wr);
                pack_panel(wr, b0, n_blocks, panel);
                for (int64_t t = 0; t < n_tokens; t += kTokenGroup) {
                    const int nt = n_tokens - t < kTokenGroup ? int(n_tokens - t) : kTokenGroup;
                    __m256 acc[kTokenGroup];
                    float* yt[kTokenGroup];
                    const float* xs[kTokenGroup];
                    for (int i = 0; i < nt; ++i) {
                        yt[i] = y + (t0 + t + i) * y_stride;
                        xs[i] = xscale[t + i];
                        acc[i] = b0 == 0 ? _mm256_setzero_ps() : load_rows(yt[i], r, rows);
                    }
                    const int8_t* xt = xbytes + t * x_stride;
                    switch (nt) {
                        case 4:
                            panel_tokens<Isa, 4>(panel, n_blocks, xt, x_stride, xs, acc);
                            break;
                        case 3:
                            panel_tokens<Isa, 3>(panel, n_blocks, xt, x_stride, xs, acc);
                            break;
                        case 2:
                            panel_tokens<Isa, 2>(panel, n_blocks, xt, x_stride, xs, acc);
                            break;
                        default:
                            panel_tokens<Isa, 1>(panel, n_blocks, xt, x_stride, xs, acc);
                            break;
                    }
                    for (int i = 0; i < nt; ++i) store_rows(yt[i], r, rows, acc[i]);
                }
            }
        }
    }
}

// ---- attend_group ------------------------------------------------------------------------------
// Every key gets its own lane (the keys of consecutive slots are consecutive in memory), at most
// kHeadGroup query heads at a time (for_head_groups); each value row is read once for those heads.

// Vectors of keys (values) in flight per query head: AVX-512's 32 registers hold four, AVX2's 16
// two. The order of every sum is the same either way (each key and each output element its own).
#if defined(__AVX512F__)
constexpr int kAttentionVectors = 4;
#else
constexpr int kAttentionVectors = 2;
#endif

// The vector operations of the value sums, the exp and the SwiGLU (kernels_internal.h's exp_each
// and swiglu_each) on W::kLanes lanes: Lanes8 here (AVX2, and AVX-512's widths that are not a
// multiple of 16), Lanes16 in kernels_avx512_attention.h.
struct Lanes8 {
    using V = __m256;
    static constexpr int kLanes = 8;
    static V zero() { return _mm256_setzero_ps(); }
    static V set1(float x) { return _mm256_set1_ps(x); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static V div(V a, V b) { return _mm256_div_ps(a, b); }
    static V negate(V v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }
    // exp_each's steps (exp_f32's operations).
    using Mask = __m256;
    static Mask below(V x, float limit) { return _mm256_cmp_ps(x, set1(limit), _CMP_LT_OQ); }
    static V min(V a, V b) { return _mm256_min_ps(a, b); }
    static V round(V x) {
        return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
    static V minus_exact_product(V x, V k, float c) { return sub(x, mul(k, set1(c))); }
    static V times_two_to(V p, V k, Mask zero) {  // p * 2^k through the exponent bits, 0 in `zero`
        const __m256i bits =
            _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
        return _mm256_andnot_ps(zero, mul(p, _mm256_castsi256_ps(bits)));
    }
    static V fmadd(V w, V v, V acc) { return _mm256_fmadd_ps(w, v, acc); }
    static void store_scaled(float* o, V v, float s) {
        _mm256_storeu_ps(o, _mm256_mul_ps(v, _mm256_set1_ps(s)));
    }
    template <typename Ring>
    static V value(const AttentionGroup& a, int64_t slot, int c) {
        return Ring::value8(a, slot, c);
    }
};

inline __m256 exp8(__m256 x) {
    exp_each<Lanes8, 1>(&x);
    return x;
}

inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

// KernelTable::quantize_row_int8 on eight lanes, the same bytes as kernels.h's: max|x| in any order
// (exact), the scale and its inverse as written there, cvtps rounding half to even, the clamp at
// -127 (and the saturation at 127); the last n % 8 elements by quantize_int8.
inline float quantize_row8(const float* x, int64_t n, int8_t* q) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 vmax = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask));
    float amax = hmax8(vmax);
    for (; i < n; ++i) amax = std::fabs(x[i]) > amax ? std::fabs(x[i]) : amax;
    const float scale = amax / 127.0f;
    const float inv = inverse_scale(scale);
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256i r = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
        const __m128i w =
            _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        const __m128i b = _mm_max_epi8(_mm_packs_epi16(w, w), _mm_set1_epi8(-127));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), b);
    }
    for (; i < n; ++i) q[i] = quantize_int8(x[i], inv);
    return scale;
}

// Eight consecutive elements of a ring memory as f32: keys of slots slot .. slot + 7 (element
// c), or elements c .. c + 7 of the value in `slot`.
struct F32Lanes : F32Ring {
    static constexpr bool kIntegerDots = false;  // the scores are f32 dot products
    static __m256 keys8(const AttentionGroup& a, int c, int64_t slot) {
        return _mm256_loadu_ps(a.keys + c * a.horizon + slot);
    }
    static __m256 value8(const AttentionGroup& a, int64_t slot, int c) {
        return _mm256_loadu_ps(a.values + slot * a.value_stride + c);
    }
};

struct Q8Lanes : Q8Ring {
    static constexpr bool kIntegerDots = true;  // attention_scores_q8, attention_values_q8
};

// The scores of NV vectors of eight consecutive keys (the first in `slot`, at window index j) for
// NH heads into s, their maxima into vmax. Each broadcast of a query element feeds NV keys' sums,
// and NH * NV sums are in flight at once.
template <typename Ring, int NH, int NV>
inline void score_keys(const AttentionGroup& a, const float* q, int64_t slot, int64_t j,
                       const __m256* slope, __m256 scale, float* s, __m256* vmax) {
    __m256 dot[NH][NV];
    for (int h = 0; h < NH; ++h)
        for (int v = 0; v < NV; ++v) dot[h][v] = _mm256_setzero_ps();
    for (int c = 0; c < a.d_head; ++c) {
        __m256 k[NV];
        for (int v = 0; v < NV; ++v) k[v] = Ring::keys8(a, c, slot + 8 * v);
        for (int h = 0; h < NH; ++h) {
            const __m256 qc = _mm256_set1_ps(q[h * a.d_head + c]);
            for (int v = 0; v < NV; ++v) dot[h][v] = _mm256_fmadd_ps(qc, k[v], dot[h][v]);
        }
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int v = 0; v < NV; ++v) {
        const int32_t newest = static_cast<int32_t>(a.window - 1 - (j + 8 * v));
        const __m256 distance =
            _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(newest), lane));
        for (int h = 0; h < NH; ++h) {
            const __m256 score =
                _mm256_sub_ps(_mm256_mul_ps(dot[h][v], scale), _mm256_mul_ps(slope[h], distance));
            _mm256_storeu_ps(s + h * a.window + j + 8 * v, score);
            vmax[h] = _mm256_max_ps(vmax[h], score);
        }
    }
}

// The scores of the n <= 8 keys at window indices j .. j + n - 1 (from `slot`, wrapping at the
// ring's end) for NH heads: their dot products on the lanes of one vector, the keys gathered lane
// by lane (a lane past n repeats key j, and its result is dropped), the rest of attention_score
// lane by lane; the same operations, so the same bits. (Before, these keys went one at a time, a
// chain of d_head dependent multiply-adds each: a ring's end or a window that is not a multiple
// of 8 cost a decode step's attention up to a quarter of its time.)
// Element c of the keys in eight slots, one per lane.
inline __m256 gather_keys(const AttentionGroup& a, int c, const int64_t* slots) {
    return _mm256_setr_ps(F32Ring::key(a, c, slots[0]), F32Ring::key(a, c, slots[1]),
                          F32Ring::key(a, c, slots[2]), F32Ring::key(a, c, slots[3]),
                          F32Ring::key(a, c, slots[4]), F32Ring::key(a, c, slots[5]),
                          F32Ring::key(a, c, slots[6]), F32Ring::key(a, c, slots[7]));
}

template <typename Ring, int NH>
inline void score_gathered(const AttentionGroup& a, const float* q, int64_t slot, int64_t j, int n,
                           int h0, float* s, float* max_score) {
    int64_t slots[8];
    gathered_slots<8>(a, slot, n, slots);
    __m256 dot[NH];
    for (int h = 0; h < NH; ++h) dot[h] = _mm256_setzero_ps();
    for (int c = 0; c < a.d_head; ++c) {
        const __m256 k = gather_keys(a, c, slots);
        for (int h = 0; h < NH; ++h)
            dot[h] = _mm256_fmadd_ps(_mm256_set1_ps(q[h * a.d_head + c]), k, dot[h]);
    }
    for (int h = 0; h < NH; ++h) {
        float d[8];
        _mm256_storeu_ps(d, dot[h]);
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
    const __m256 scale = _mm256_set1_ps(a.scale);
    __m256 slope[NH], vmax[NH];
    for (int h = 0; h < NH; ++h) {
        slope[h] = _mm256_set1_ps(a.slopes[h0 + h]);
        vmax[h] = _mm256_set1_ps(-INFINITY);
        max_score[h] = -INFINITY;
    }
    // Vectors of consecutive slots while the ring's end is 8 or more keys away; the keys around
    // the end, and the window's last few, gathered into one vector.
    for_key_steps(a, [&](int64_t j, int64_t slot, int64_t run) -> int64_t {
        if (kAttentionVectors >= 4 && run >= 32) {
            score_keys<Ring, NH, kAttentionVectors>(a, q, slot, j, slope, scale, s, vmax);
            return 8 * kAttentionVectors;
        }
        if (run >= 16) {
            score_keys<Ring, NH, 2>(a, q, slot, j, slope, scale, s, vmax);
            return 16;
        }
        if (run >= 8) {
            score_keys<Ring, NH, 1>(a, q, slot, j, slope, scale, s, vmax);
            return 8;
        }
        const int64_t n = a.window - j < 8 ? a.window - j : 8;
        score_gathered<Ring, NH>(a, q, slot, j, static_cast<int>(n), h0, s, max_score);
        return n;
    });
    for (int h = 0; h < NH; ++h) {
        const float m = hmax8(vmax[h]);
        if (m > max_score[h]) max_score[h] = m;
    }
}

// ---- attend_group_q8's scores: exact integer dot products ---------------------------------------
// The keys are quads (kernels.h), so quad i of eight consecutive slots is one 256-bit load, and a
// broadcast of the query's quad i meets all eight: q . k by matvec_q8_0's sign trick (|q| times k
// with q's sign; both lie in [-127, 127], so maddubs' pairs stay below 2^15), the pairs summed
// into the keys' int32 lanes by madd. Exact, so any order gives the reference's isum.
inline __m256i dot_quads8(__m256i acc, __m256i k, __m256i q, __m256i abs_q) {
    const __m256i pairs = _mm256_maddubs_epi16(abs_q, _mm256_sign_epi8(k, q));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

inline __m256i key_quads8(const AttentionGroup& a, int i, int64_t slot) {
    return _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(a.keys_q8 + (i * a.horizon + slot) * 4));
}

// score_of_isum on eight lanes: fma(float(isum), factor * ks, -(slope * distance)).
inline __m256 score_of_isum8(__m256i isum, float factor, __m256 key_scale, __m256 slope,
                             __m256 distance) {
    return _mm256_fmsub_ps(_mm256_cvtepi32_ps(isum),
                           _mm256_mul_ps(_mm256_set1_ps(factor), key_scale),
                           _mm256_mul_ps(slope, distance));
}

// NV vectors of eight consecutive keys (the first in `slot`, at window index j) for NH heads.
template <int NH, int NV>
inline void score_keys_q8(const AttentionGroup& a, const QueryQ8* q, int64_t slot, int64_t j,
                          const __m256* slope, float* s, __m256* vmax) {
    __m256i dot[NH][NV];
    for (int h = 0; h < NH; ++h)
        for (int v = 0; v < NV; ++v) dot[h][v] = _mm256_setzero_si256();
    for (int i = 0; i < q[0].quads; ++i) {
        __m256i k[NV];
        for (int v = 0; v < NV; ++v) k[v] = key_quads8(a, i, slot + 8 * v);
        for (int h = 0; h < NH; ++h) {
            const __m256i qi = _mm256_set1_epi32(q[h].quad(i));
            const __m256i abs_qi = _mm256_abs_epi8(qi);
            for (int v = 0; v < NV; ++v) dot[h][v] = dot_quads8(dot[h][v], k[v], qi, abs_qi);
        }
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int v = 0; v < NV; ++v) {
        const int32_t newest = static_cast<int32_t>(a.window - 1 - (j + 8 * v));
        const __m256 distance =
            _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(newest), lane));
        const __m256 ks = _mm256_loadu_ps(a.key_scales + slot + 8 * v);
        for (int h = 0; h < NH; ++h) {
            const __m256 score = score_of_isum8(dot[h][v], q[h].factor, ks, slope[h], distance);
            _mm256_storeu_ps(s + h * a.window + j + 8 * v, score);
            vmax[h] = _mm256_max_ps(vmax[h], score);
        }
    }
}

// The n <= 8 keys at window indices j .. j + n - 1 from `slot`, wrapping at the ring's end: their
// quads gathered lane by lane (as score_gathered), the scores finished lane by lane.
template <int NH>
inline void score_gathered_q8(const AttentionGroup& a, const QueryQ8* q, int64_t slot, int64_t j,
                              int n, int h0, float* s, float* max_score) {
    int64_t slots[8];
    gathered_slots<8>(a, slot, n, slots);
    __m256i dot[NH];
    for (int h = 0; h < NH; ++h) dot[h] = _mm256_setzero_si256();
    for (int i = 0; i < q[0].quads; ++i) {
        const __m256i k = _mm256_setr_epi32(key_quad(a, i, slots[0]), key_quad(a, i, slots[1]),
                                            key_quad(a, i, slots[2]), key_quad(a, i, slots[3]),
                                            key_quad(a, i, slots[4]), key_quad(a, i, slots[5]),
                                            key_quad(a, i, slots[6]), key_quad(a, i, slots[7]));
        for (int h = 0; h < NH; ++h) {
            const __m256i qi = _mm256_set1_epi32(q[h].quad(i));
            dot[h] = dot_quads8(dot[h], k, qi, _mm256_abs_epi8(qi));
        }
    }
    for (int h = 0; h < NH; ++h) {
        int32_t isum[8];
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(isum), dot[h]);
        gathered_scores(a, n, j, s + h * a.window, &max_score[h], [&](int l, float distance) {
            return score_of_isum(a, q[h], isum[l], slots[l], a.slopes[h0 + h], distance);
        });
    }
}

// attention_scores for an int8 memory: the NH query heads from h0 quantized once (QueryQ8).
template <int NH>
void attention_scores_q8(const AttentionGroup& a, int h0, float* max_score) {
    QueryQ8 q[NH];
    for (int h = 0; h < NH; ++h) q[h].prepare(a, h0 + h, quantize_row8);
    float* s = a.scores + int64_t{h0} * a.window;
    __m256 slope[NH], vmax[NH];
    for (int h = 0; h < NH; ++h) {
        slope[h] = _mm256_set1_ps(a.slopes[h0 + h]);
        vmax[h] = _mm256_set1_ps(-INFINITY);
        max_score[h] = -INFINITY;
    }
    for_key_steps(a, [&](int64_t j, int64_t slot, int64_t run) -> int64_t {
        if (run >= 16) {
            score_keys_q8<NH, 2>(a, q, slot, j, slope, s, vmax);
            return 16;
        }
        if (run >= 8) {
            score_keys_q8<NH, 1>(a, q, slot, j, slope, s, vmax);
            return 8;
        }
        const int64_t n = a.window - j < 8 ? a.window - j : 8;
        score_gathered_q8<NH>(a, q, slot, j, static_cast<int>(n), h0, s, max_score);
        return n;
    });
    for (int h = 0; h < NH; ++h) {
        const float m = hmax8(vmax[h]);
        if (m > max_score[h]) max_score[h] = m;
    }
}

// quantize_weights' vector steps on eight lanes (cvtps rounds half to even, as nearbyint).
struct Weights8 {
    static constexpr int kLanes = 8;
    static constexpr bool kMasked = false;
    using Max = __m256;
    static Max max_init() { return _mm256_setzero_ps(); }
    static void scale(float* e, const float* vs, Max& m) {
        const __m256 w = _mm256_mul_ps(_mm256_loadu_ps(e), _mm256_loadu_ps(vs));
        _mm256_storeu_ps(e, w);
        m = _mm256_max_ps(m, w);
    }
    static float max_of(Max m) { return hmax8(m); }
    static void quantize(const float* w, float inv, uint8_t* q) {
        __m256i r = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(w), _mm256_set1_ps(inv)));
        r = _mm256_min_epi32(r, _mm256_set1_epi32(255));
        // The low byte of each lane to bytes 0 .. 3 of each 128-bit half.
        r = _mm256_shuffle_epi8(
            r, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4,
                                8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
        const int32_t lo = _mm256_cvtsi256_si32(r), hi = _mm256_extract_epi32(r, 4);
        std::memcpy(q, &lo, sizeof lo);
        std::memcpy(q + 4, &hi, sizeof hi);
    }
};

// The integer value sums of an int8 memory for NH heads from h0 (kernels_scalar.cpp), their
// weights quantized into a.weights (WeightRuns). A quad of four slots' elements c .. c + 7 is one
// 256-bit load; the weights go in as wq - 128 (a signed byte: matvec_q8_0's sign trick needs |w|
// <= 128 against values in [-127, 127] to keep maddubs' pairs below 2^15), and 128 times the sum
// of the same slots' values is added back. Exact: the reference's osum.
template <int NH>
void attention_values_q8(const AttentionGroup& a, int h0, const float* inv_total,
                         const int64_t* first) {
    const WeightRuns runs(a);
    const HeadWeights<Weights8, NH> weights(a, runs, h0, first);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int c0 = 0; c0 < a.d_head; c0 += 16) {
        __m256i live[2];  // the elements below d_head
        for (int v = 0; v < 2; ++v)
            live[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(a.d_head - c0 - 8 * v), lane);
        __m256i acc[NH][2], vsum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int h = 0; h < NH; ++h) acc[h][0] = acc[h][1] = _mm256_setzero_si256();
        runs.for_quads(weights.from, [&](int64_t pos, int64_t slot) {
            const int8_t* p = a.values_q8 + value_q8_index(c0, slot, a.value_stride);
            __m256i v[2];
            for (int k = 0; k < 2; ++k) {
                v[k] = _mm256_maskload_epi32(reinterpret_cast<const int*>(p + 32 * k), live[k]);
                vsum[k] = _mm256_add_epi32(
                    vsum[k], _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v[k]), ones16));
            }
            for (int h = 0; h < NH; ++h) {
                int32_t four;
                std::memcpy(&four, weights.row[h] + pos, sizeof four);
                const __m256i w = _mm256_set1_epi32(four ^ static_cast<int32_t>(0x80808080u));
                const __m256i abs_w = _mm256_abs_epi8(w);
                for (int k = 0; k < 2; ++k) acc[h][k] = dot_quads8(acc[h][k], v[k], w, abs_w);
            }
        });
        for (int h = 0; h < NH; ++h) {
            const __m256 f = _mm256_set1_ps(weights.scale[h] * inv_total[h]);
            float* o = a.out + int64_t{h0 + h} * a.d_head + c0;
            for (int k = 0; k < 2; ++k) {
                const __m256i osum = _mm256_add_epi32(acc[h][k], _mm256_slli_epi32(vsum[k], 7));
                _mm256_maskstore_ps(o + 8 * k, live[k], _mm256_mul_ps(_mm256_cvtepi32_ps(osum), f));
            }
        }
    }
}

// e_ij = exp(s_ij - max_i) in place; returns 1 / total_i (the canonical eight-lane sum), and in
// *first the window index from which the weights are not all 0: the leading vectors whose scores
// all lie more than 87 below the max are exp_f32's 0 without computing it (adding +0 leaves the
// lanes unchanged), the older part of a long window under ALiBi's steeper slopes.
inline float softmax_weights(float* e, int64_t window, float max_score, int64_t* first) {
    const __m256 m = _mm256_set1_ps(max_score);
    const __m256 below = _mm256_set1_ps(-87.0f);
    __m256 lanes = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= window; j += 8) {
        const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(e + j), m);
        if (_mm256_movemask_ps(_mm256_cmp_ps(x, below, _CMP_NLT_UQ)) != 0) break;
        _mm256_storeu_ps(e + j, _mm256_setzero_ps());
    }
    *first = j;
    for (; j + 8 <= window; j += 8) {
        const __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(e + j), m));
        _mm256_storeu_ps(e + j, v);
        lanes = _mm256_add_ps(lanes, v);
    }
    float lane[8];
    _mm256_storeu_ps(lane, lanes);
    for (int l = 0; j < window; ++j, ++l) {
        e[j] = exp_f32(e[j] - max_score);
        lane[l] = lane[l] + e[j];
    }
    for (int l = 0; l < 4; ++l) lane[l] = lane[l] + lane[l + 4];
    for (int l = 0; l < 2; ++l) lane[l] = lane[l] + lane[l + 2];
    return 1.0f / (lane[0] + lane[1]);
}

// The SwiGLU's vectors per step on both x86 paths (swiglu_vectors; 768 values: eight at a time 366
// ns on AVX2, 238 on AVX-512; four 369 and 261, six 384 and 244, two 408 and 260).
constexpr int kSwigluVectors = 8;

// SwiGLU on eight lanes (AVX2, and AVX-512's tails), then one by one.
inline void swiglu(float* gate, const float* up, int64_t n) {
    swiglu_lanes<Lanes8, kSwigluVectors>(gate, up, n);
}

// acc_i += e_ij v_j for the NA heads head[0 .. NA) and j = j0 .. j1 - 1 in order (slot: j0's),
// C vectors of W::kLanes elements from c0; the sums come from and go back to acc.
template <typename Ring, typename W, int NA, int C>
void value_sums(const AttentionGroup& a, const int* head, int64_t j0, int64_t j1, int64_t slot,
                int c0, typename W::V (*acc)[C]) {
    typename W::V sum[NA][C];
    const float* e[NA];
    for (int i = 0; i < NA; ++i) {
        e[i] = a.scores + int64_t{head[i]} * a.window;
        for (int k = 0; k < C; ++k) sum[i][k] = acc[head[i]][k];
    }
    for (int64_t j = j0; j < j1; ++j) {
        typename W::V v[C];
        for (int k = 0; k < C; ++k) v[k] = W::template value<Ring>(a, slot, c0 + W::kLanes * k);
        for (int i = 0; i < NA; ++i) {
            const typename W::V weight = W::set1(Ring::weight(a, e[i][j], slot));
            for (int k = 0; k < C; ++k) sum[i][k] = W::fmadd(weight, v[k], sum[i][k]);
        }
        if (++slot == a.horizon) slot = 0;
    }
    for (int i = 0; i < NA; ++i)
        for (int k = 0; k < C; ++k) acc[head[i]][k] = sum[i][k];
}

// out_i = (sum_j e_ij v_j) * inv_total_i for NH heads from h0, C vectors of W::kLanes elements
// from c0, each head's sums from its first nonzero weight on (value_runs).
template <typename Ring, typename W, int NH, int C>
void attention_values(const AttentionGroup& a, int h0, int c0, const float* inv_total,
                      const int64_t* first) {
    typename W::V acc[NH][C];
    for (int h = 0; h < NH; ++h)
        for (int k = 0; k < C; ++k) acc[h][k] = W::zero();
    AttentionGroup g = a;
    g.scores = a.scores + int64_t{h0} * a.window;
    value_runs<NH>(first, a.window, [&](auto n, const int* order, int64_t j0, int64_t j1) {
        value_sums<Ring, W, decltype(n)::value, C>(g, order, j0, j1,
                                                   (a.first_slot + j0) % a.horizon, c0, acc);
    });
    for (int h = 0; h < NH; ++h) {
        float* o = a.out + int64_t{h0 + h} * a.d_head + c0;
        for (int k = 0; k < C; ++k) W::store_scaled(o + W::kLanes * k, acc[h][k], inv_total[h]);
    }
}

// The output elements from c on: vectors of eight (two at a time), then one by one.
template <typename Ring, int NH>
void attention_values_from(const AttentionGroup& a, int h0, int c, const float* inv_total,
                           const int64_t* first) {
    for (; c + 16 <= a.d_head; c += 16)
        attention_values<Ring, Lanes8, NH, 2>(a, h0, c, inv_total, first);
    for (; c + 8 <= a.d_head; c += 8)
        attention_values<Ring, Lanes8, NH, 1>(a, h0, c, inv_total, first);
    for (; c < a.d_head; ++c)  // a width that is not a multiple of 8: the rest one by one
        for (int h = 0; h < NH; ++h)
            a.out[int64_t{h0 + h} * a.d_head + c] =
                attention_value<Ring>(a, a.scores + int64_t{h0 + h} * a.window, c, inv_total[h]);
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
        if (kAttentionVectors >= 4)
            for (; c + 32 <= a.d_head; c += 32)
                attention_values<Ring, Lanes8, NH, kAttentionVectors>(a, h0, c, inv_total, first);
        attention_values_from<Ring, NH>(a, h0, c, inv_total, first);
    }
}

template <typename Ring>
void attend(const AttentionGroup& a) {
    for_head_groups(a.heads,
                    [&](auto n, int h0) { attend_heads<Ring, decltype(n)::value>(a, h0); });
}

inline void attend_group(const AttentionGroup& a) {
    attend<F32Lanes>(a);
}

inline void attend_group_q8(const AttentionGroup& a) {
    attend<Q8Lanes>(a);
}

}  // namespace
}  // namespace sage::kernels
