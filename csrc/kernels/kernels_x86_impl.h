// The x86 kernels shared by kernels_avx2.cpp and kernels_avx512vnni.cpp, written once and
// parameterised by a struct `Isa` of what the instruction sets do differently:
//
//   static __m256i Isa::u8s8(__m256i u, __m256i s);  // eight int32 sums, each of four u8 * s8
//   template <int R>                                  // y[0..R) for R consecutive rows of w, in
//   static void Isa::matvec_f32_rows(const float* w, const float* x, float* y, int64_t cols);
//                                                     // the canonical 16-lane order
//
// Each of those files includes this header and instantiates the templates with its own struct, so
// everything here is compiled with that file's flags (and internal linkage): it must use nothing
// beyond AVX2. The f32 arithmetic follows the canonical order of kernels_scalar.cpp, one matrix
// row per lane; integer sums are exact either way.
#pragma once

#include <immintrin.h>

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

}  // namespace
}  // namespace sage::kernels
