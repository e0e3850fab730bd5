// AVX2 kernels (this file alone is compiled with -mavx2 -mfma). No fused multiply-add is used:
// every f32 result follows the canonical order of kernels_scalar.cpp, with the rows of a
// matrix-vector product spread over SIMD lanes so each row keeps its own sequential order.
#include <immintrin.h>

#include <cstring>

#include "kernels_internal.h"

namespace sage::kernels {
namespace {

constexpr int kRows = 8;  // rows of a matrix-vector product computed together, one per lane

inline float hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

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

// q[0..31] = clamp(round_half_even(v * inv), -127, 127) for 32 floats in four vectors.
inline __m256i quantize32(const __m256* v, __m256 inv) {
    const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v[0], inv));
    const __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v[1], inv));
    const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v[2], inv));
    const __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v[3], inv));
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    const __m256i ordered =
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    return _mm256_max_epi8(ordered, _mm256_set1_epi8(-127));
}

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
    const int64_t nb = blocks_per_row(n);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + b * kBlockSize;
        float padded[kBlockSize];
        const int64_t len = n - b * kBlockSize;
        if (len < kBlockSize) {
            std::memset(padded, 0, sizeof(padded));
            std::memcpy(padded, xb, static_cast<size_t>(len) * sizeof(float));
            xb = padded;
        }
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 4; ++k) {
            v[k] = _mm256_loadu_ps(xb + 8 * k);
            m = _mm256_max_ps(_mm256_and_ps(v[k], abs_mask), m);
        }
        const float amax = hmax256(m);
        const float scale = amax / 127.0f;
        const float inv = inverse_scale(scale);
        y[b].scale = scale;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].q), quantize32(v, _mm256_set1_ps(inv)));
    }
}

inline __m256i load32(const int8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Eight int32 partial sums of a_q * b_q, given ax = |a_q| and the raw a_q (for the signs).
inline __m256i dot32(__m256i ax, __m256i a, __m256i bq) {
    const __m256i p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(bq, a));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

void dot_q8_0_block_sums(const BlockQ8_0* a, const BlockQ8_0* b, int32_t* sums, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const __m256i av = load32(a[i].q);
        sums[i] = hsum256_epi32(dot32(_mm256_sign_epi8(av, av), av, load32(b[i].q)));
    }
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

void matvec_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    const int64_t nb = blocks_per_row(cols);
    for (int64_t r = 0; r < rows; r += kRows) {
        const BlockQ8_0* wr[kRows];
        group_rows(w, nb, r, rows, wr);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const __m256i xv = load32(x[b].q);
            const __m256i ax = _mm256_sign_epi8(xv, xv);
            __m256i part[kRows];
            for (int i = 0; i < kRows; ++i) part[i] = dot32(ax, xv, load32(wr[i][b].q));
            acc = accumulate(acc, wr, b, x[b].scale, reduce8(part));
        }
        store_rows(y, r, rows, acc);
    }
}

void matvec_q4(const BlockQ4* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    const int64_t nb = blocks_per_row(cols);
    // Weights stay unsigned (q + 8 in 0..15): sum (u - 8) * x = sum u * x - 8 * sum x.
    const __m128i deinterleave =
        _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m256i shuf = _mm256_broadcastsi128_si256(deinterleave);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i ones8 = _mm256_set1_epi8(1);
    const __m256i ones16 = _mm256_set1_epi16(1);
    for (int64_t r = 0; r < rows; r += kRows) {
        const BlockQ4* wr[kRows];
        group_rows(w, nb, r, rows, wr);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            // x as [even elements | odd elements], to meet [low nibbles | high nibbles].
            const __m256i xv =
                _mm256_permute4x64_epi64(_mm256_shuffle_epi8(load32(x[b].q), shuf), 0xD8);
            const int32_t xsum =
                hsum256_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(ones8, xv), ones16));
            __m256i part[kRows];
            for (int i = 0; i < kRows; ++i) {
                const __m128i packed =
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr[i][b].q));
                const __m256i wv =
                    _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(packed),
                                                             _mm_srli_epi16(packed, 4), 1),
                                     low4);
                part[i] = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), ones16);
            }
            const __m256i isum = _mm256_sub_epi32(reduce8(part), _mm256_set1_epi32(8 * xsum));
            acc = accumulate(acc, wr, b, x[b].scale, isum);
        }
        store_rows(y, r, rows, acc);
    }
}

// The canonical 16-lane f32 dot product: lanes 0-7 in lo, 8-15 in hi, then the halving tree.
inline float reduce16(__m256 lo, __m256 hi) {
    const __m256 s8 = _mm256_add_ps(lo, hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

template <int R>
inline void matvec_f32_rows(const float* w, const float* x, float* y, int64_t cols) {
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
    for (int i = 0; i < R; ++i) y[i] = reduce16(lo[i], hi[i]);
}

void matvec_f32(const float* w, const float* x, float* y, int64_t rows, int64_t cols) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) matvec_f32_rows<4>(w + r * cols, x, y + r, cols);
    for (; r < rows; ++r) matvec_f32_rows<1>(w + r * cols, x, y + r, cols);
}

}  // namespace

const KernelTable kAvx2Table = {
    "avx2", quantize_row_q8_0, dot_q8_0_block_sums, matvec_q8_0, matvec_q4, matvec_f32,
};

}  // namespace sage::kernels
