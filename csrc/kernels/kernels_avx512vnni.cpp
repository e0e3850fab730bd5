// AVX-512 VNNI kernels (this file alone is compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512vnni). Integer block sums use vpdpbusd (u8 x s8 -> s32) with the sign trick
// |x| x sign(w, x); the f32 arithmetic follows the canonical order of kernels_scalar.cpp, one
// matrix row per lane.
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
    const __m256i a = _mm256_hadd_epi32(h01, h23);
    const __m256i b = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                            _mm256_permute2x128_si256(a, b, 0x31));
}

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
    const int64_t nb = blocks_per_row(n);
    const __m128i qmin = _mm_set1_epi8(-127);
    for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + b * kBlockSize;
        const int64_t len = n - b * kBlockSize;
        // Elements past the row's end load as 0, which quantizes to q = 0.
        const __mmask16 m0 = len >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << len) - 1);
        const __mmask16 m1 = len >= 32  ? __mmask16(0xFFFF)
                             : len > 16 ? __mmask16((1u << (len - 16)) - 1)
                                        : __mmask16(0);
        const __m512 v0 = _mm512_maskz_loadu_ps(m0, xb);
        const __m512 v1 = _mm512_maskz_loadu_ps(m1, xb + 16);
        const float amax =
            _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float scale = amax / 127.0f;
        const float inv = inverse_scale(scale);
        const __m512 iv = _mm512_set1_ps(inv);
        // cvtps rounds half to even (default MXCSR); cvtsepi32 saturates to [-128, 127].
        const __m128i q0 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, iv)));
        const __m128i q1 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, iv)));
        y[b].scale = scale;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].q), _mm_max_epi8(q0, qmin));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].q + 16), _mm_max_epi8(q1, qmin));
    }
}

inline __m256i load32(const int8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Eight int32 partial sums of a_q * b_q, given ax = |a_q| and the raw a_q (for the signs).
inline __m256i dot32(__m256i ax, __m256i a, __m256i bq) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, _mm256_sign_epi8(bq, a));
}

void dot_q8_0_block_sums(const BlockQ8_0* a, const BlockQ8_0* b, int32_t* sums, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const __m256i av = load32(a[i].q);
        sums[i] = hsum256_epi32(dot32(_mm256_abs_epi8(av), av, load32(b[i].q)));
    }
}

template <typename Block>
inline void group_rows(const Block* w, int64_t nb, int64_t r, int64_t rows, const Block** out) {
    for (int i = 0; i < kRows; ++i) out[i] = w + (r + i < rows ? r + i : rows - 1) * nb;
}

inline void store_rows(float* y, int64_t r, int64_t rows, __m256 acc) {
    const int64_t left = rows - r;
    const __mmask8 m = left >= kRows ? __mmask8(0xFF) : __mmask8((1u << left) - 1);
    _mm256_mask_storeu_ps(y + r, m, acc);
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
            const __m256i ax = _mm256_abs_epi8(xv);
            __m256i part[kRows];
            for (int i = 0; i < kRows; ++i) part[i] = dot32(ax, xv, load32(wr[i][b].q));
            acc = accumulate(acc, wr, b, x[b].scale, reduce8(part));
        }
        store_rows(y, r, rows, acc);
    }
}

void matvec_q4(const BlockQ4* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols) {
    const int64_t nb = blocks_per_row(cols);
    // Weights stay unsigned (q + 8 in 0..15), the u8 operand of vpdpbusd:
    // sum (u - 8) * x = sum u * x - 8 * sum x.
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
            const int32_t xsum =
                hsum256_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ones8, xv));
            __m256i part[kRows];
            for (int i = 0; i < kRows; ++i) {
                const __m128i packed =
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(wr[i][b].q));
                const __m256i wv =
                    _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(packed),
                                                             _mm_srli_epi16(packed, 4), 1),
                                     low4);
                part[i] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, xv);
            }
            const __m256i isum = _mm256_sub_epi32(reduce8(part), _mm256_set1_epi32(8 * xsum));
            acc = accumulate(acc, wr, b, x[b].scale, isum);
        }
        store_rows(y, r, rows, acc);
    }
}

// One zmm is exactly the 16 canonical lanes; then the halving tree.
inline float reduce16(__m512 acc) {
    const __m256 s8 =
        _mm256_add_ps(_mm512_castps512_ps256(acc),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

template <int R>
inline void matvec_f32_rows(const float* w, const float* x, float* y, int64_t cols) {
    __m512 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16) {
        const __m512 xv = _mm512_loadu_ps(x + j);
        for (int i = 0; i < R; ++i)
            acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(_mm512_loadu_ps(w + i * cols + j), xv));
    }
    if (j < cols) {  // tail: masked lanes load w = x = 0 and add +0
        const __mmask16 m = __mmask16((1u << (cols - j)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
        for (int i = 0; i < R; ++i)
            acc[i] = _mm512_add_ps(acc[i],
                                   _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i * cols + j), xv));
    }
    for (int i = 0; i < R; ++i) y[i] = reduce16(acc[i]);
}

void matvec_f32(const float* w, const float* x, float* y, int64_t rows, int64_t cols) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) matvec_f32_rows<4>(w + r * cols, x, y + r, cols);
    for (; r < rows; ++r) matvec_f32_rows<1>(w + r * cols, x, y + r, cols);
}

}  // namespace

const KernelTable kAvx512VnniTable = {
    "avx512vnni", quantize_row_q8_0, dot_q8_0_block_sums, matvec_q8_0, matvec_q4, matvec_f32,
};

}  // namespace sage::kernels
