// AVX-512 VNNI kernels (this file alone is compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512vnni). Integer block sums use vpdpbusd (u8 x s8 -> s32) in the integer matrix-vector
// products shared with AVX2 (kernels_x86_impl.h); quantization and the f32 product use 512-bit
// vectors. The f32 arithmetic follows the canonical order of kernels_scalar.cpp, one matrix row per
// lane.
#include <immintrin.h>

#include "kernels_x86_impl.h"

namespace sage::kernels {
namespace {

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

struct Avx512Vnni {
    static __m256i u8s8(__m256i u, __m256i s) {
        return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
    }

    // matmul_q8_0: x + 128 (flipping the sign bit) is the unsigned operand of vpdpbusd, so one
    // instruction takes 32 products; 128 * sum(w) comes off each block sum.
    static constexpr int kGemmOffset = 128;
    static __m256i gemm_x(__m256i x) {
        return _mm256_xor_si256(x, _mm256_set1_epi8(static_cast<char>(0x80)));
    }
    static __m256i gemm_dot(__m256i acc, __m256i w, __m256i x) {
        return _mm256_dpbusd_epi32(acc, x, w);
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
    matvec_q8_0<Avx512Vnni>,
    matvec_q4<Avx512Vnni>,
    matvec_f32<Avx512Vnni>,
    matmul_q8_0<Avx512Vnni>,
    swiglu,
    attend_group,
};

}  // namespace sage::kernels
