// Attention on 512-bit vectors, for kernels_avx512vnni.cpp alone (compiled with its flags; internal
// linkage like kernels_x86_impl.h, whose 256-bit code it falls back to for widths that are not a
// multiple of 16). The same canonical order as kernels_scalar.cpp: each key's score in its own
// lane, exp_f32 lane by lane, the total's eight lanes added in increasing j, each output element's
// sum over the keys in increasing j.
//
// Where the time went in the 256-bit code (a decode step's attention at 1 024 past tokens, the
// shipped model): the scores, the exponentials and the value sums each about a third, the
// exponentials alone ~25 instructions per eight keys. Sixteen lanes halve the instructions of all
// three; a ring's end or a window's ragged tail is one masked vector (two masked loads and a lane
// shift) instead of eight scalar gathers per element.
#pragma once

#include <immintrin.h>

#include "kernels_x86_impl.h"

namespace sage::kernels {
namespace {

// kernels_x86_impl.h's Lanes8 on 16 lanes: the value sums, the exp and the SwiGLU.
struct Lanes16 {
    using V = __m512;
    static constexpr int kLanes = 16;
    static V zero() { return _mm512_setzero_ps(); }
    static V set1(float x) { return _mm512_set1_ps(x); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static V div(V a, V b) { return _mm512_div_ps(a, b); }
    static V negate(V v) {  // (AVX-512F has no xor of floats)
        const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u));
        return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign));
    }
    // exp_each's steps: the same bits as Lanes8's in fewer instructions. k * c is exact (k an
    // integer below 2^8 in magnitude, c = kLn2Hi = 355 / 512), so x - k * c rounds once either way
    // (one fused step), and p * 2^k is exact for the k it meets (scalef instead of building 2^k's
    // bits). Checked against Lanes8's for every float in [-100, 88.5] (a throwaway program).
    using Mask = __mmask16;
    static Mask below(V x, float limit) { return _mm512_cmp_ps_mask(x, set1(limit), _CMP_LT_OQ); }
    static V min(V a, V b) { return _mm512_min_ps(a, b); }
    static V round(V x) {
        return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
    static V minus_exact_product(V x, V k, float c) { return _mm512_fnmadd_ps(k, set1(c), x); }
    static V times_two_to(V p, V k, Mask zero) {  // p * 2^k, 0 in `zero`
        return _mm512_maskz_scalef_ps(static_cast<__mmask16>(~zero), p, k);
    }
    static V fmadd(V w, V v, V acc) { return _mm512_fmadd_ps(w, v, acc); }
    static void store_scaled(float* o, V v, float s) {
        _mm512_storeu_ps(o, _mm512_mul_ps(v, _mm512_set1_ps(s)));
    }
    template <typename Ring>
    static V value(const AttentionGroup& a, int64_t slot, int c) {
        return Ring::value16(a, slot, c);
    }
};

inline __m512 exp16(__m512 x) {  // exp_f32 of sixteen lanes
    exp_each<Lanes16, 1>(&x);
    return x;
}

// Lanes 0 .. 7 (half 0) or 8 .. 15 (half 1) as a 256-bit vector. (The zero-masked extract: GCC 12
// warns falsely about the undefined vector inside _mm512_castps512_ps256 and its kin.)
template <int Half>
inline __m256 half8(__m512 v) {
    return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, _mm512_castps_pd(v), Half));
}

inline __mmask16 first_lanes(int64_t n) {  // lanes 0 .. n - 1, n <= 16
    return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
}

// Sixteen consecutive elements of a ring memory as f32, lanes outside `m` zero: keys of slots
// slot .. slot + 15 (element c), elements c .. c + 15 of the value in `slot`.
struct F32Lanes16 : F32Lanes {
    static __m512 keys16(const AttentionGroup& a, int c, int64_t slot, __mmask16 m) {
        return _mm512_maskz_loadu_ps(m, a.keys + c * a.horizon + slot);
    }
    static __m512 keys16(const AttentionGroup& a, int c, int64_t slot) {
        return _mm512_loadu_ps(a.keys + c * a.horizon + slot);
    }
    static __m512 value16(const AttentionGroup& a, int64_t slot, int c) {
        return _mm512_loadu_ps(a.values + slot * a.value_stride + c);
    }
    static void prefetch_keys(const AttentionGroup& a, int c, int64_t slot) {
        _mm_prefetch(reinterpret_cast<const char*>(a.keys + c * a.horizon + slot), _MM_HINT_T0);
    }
};

struct Q8Lanes16 : Q8Lanes {};

// score = dot * scale - slope * distance, score_of_dot's operations lane by lane.
inline __m512 score16(__m512 dot, __m512 scale, __m512 slope, __m512 distance) {
    return _mm512_sub_ps(_mm512_mul_ps(dot, scale), _mm512_mul_ps(slope, distance));
}

// The distances of sixteen keys from the newest, the first at `newest` (exact in f32).
inline __m512 distances16(int64_t newest) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm512_cvtepi32_ps(
        _mm512_sub_epi32(_mm512_set1_epi32(static_cast<int32_t>(newest)), lane));
}

// NV vectors of sixteen consecutive keys (the first in `slot`, at window index j, none past the
// ring's end) for NH heads: each key vector feeds NH heads, NH * NV sums in flight.
template <typename Ring, int NH, int NV, bool PF>
inline void score_keys16(const AttentionGroup& a, const float* q, int64_t slot, int64_t j,
                         const __m512* slope, __m512 scale, float* s, __m512* vmax) {
    __m512 dot[NH][NV];
    for (int h = 0; h < NH; ++h)
        for (int v = 0; v < NV; ++v) dot[h][v] = _mm512_setzero_ps();
    for (int c = 0; c < a.d_head; ++c) {
        __m512 k[NV];
        for (int v = 0; v < NV; ++v) k[v] = Ring::keys16(a, c, slot + 16 * v);
        if (PF)
            for (int v = 0; v < NV; ++v) Ring::prefetch_keys(a, c, slot + 16 * (NV + v));
        for (int h = 0; h < NH; ++h) {
            const __m512 qc = _mm512_set1_ps(q[h * a.d_head + c]);
            for (int v = 0; v < NV; ++v) dot[h][v] = _mm512_fmadd_ps(qc, k[v], dot[h][v]);
        }
    }
    for (int v = 0; v < NV; ++v) {
        const __m512 distance = distances16(a.window - 1 - (j + 16 * v));
        for (int h = 0; h < NH; ++h) {
            const __m512 score = score16(dot[h][v], scale, slope[h], distance);
            _mm512_storeu_ps(s + h * a.window + j + 16 * v, score);
            vmax[h] = _mm512_max_ps(vmax[h], score);
        }
    }
}

// The n <= 16 keys at window indices j .. j + n - 1 from `slot`, wrapping at the ring's end: the
// m keys before the end and the n - m from slot 0 on, each a masked load, the second moved up m
// lanes. Lanes past n are zero and their results dropped.
struct WrappedLanes {
    int64_t slot;
    __mmask16 before, after, live;  // lanes from `slot` on, lanes from slot 0 on, lanes 0 .. n - 1
    __m512i shift;                  // lane l takes lane l - m of the second load
    int n_after;                    // n - m

    WrappedLanes(const AttentionGroup& a, int64_t slot_, int n) : slot(slot_) {
        const int64_t m = a.horizon - slot < n ? a.horizon - slot : n;
        before = first_lanes(m);
        live = first_lanes(n);
        after = static_cast<__mmask16>(live & ~before);
        const __m512i lane =
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        shift = _mm512_and_si512(_mm512_sub_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(m))),
                                 _mm512_set1_epi32(15));
        n_after = static_cast<int>(n - m);
    }
    template <typename Load>  // load(first slot, lanes) -> the vector of those slots from lane 0
    __m512 operator()(Load&& load) const {
        const __m512 head = load(slot, before);
        if (n_after == 0) return head;
        const __m512 tail = _mm512_permutexvar_ps(shift, load(0, first_lanes(n_after)));
        return _mm512_mask_blend_ps(after, head, tail);
    }
};

template <typename Ring, int NH>
inline void score_wrapped16(const AttentionGroup& a, const float* q, int64_t slot, int64_t j, int n,
                            const __m512* slope, __m512 scale, float* s, __m512* vmax) {
    const WrappedLanes w(a, slot, n);
    __m512 dot[NH];
    for (int h = 0; h < NH; ++h) dot[h] = _mm512_setzero_ps();
    for (int c = 0; c < a.d_head; ++c) {
        const __m512 k = w([&](int64_t from, __mmask16 m) { return Ring::keys16(a, c, from, m); });
        for (int h = 0; h < NH; ++h)
            dot[h] = _mm512_fmadd_ps(_mm512_set1_ps(q[h * a.d_head + c]), k, dot[h]);
    }
    const __m512 distance = distances16(a.window - 1 - j);
    for (int h = 0; h < NH; ++h) {
        const __m512 score = score16(dot[h], scale, slope[h], distance);
        _mm512_mask_storeu_ps(s + h * a.window + j, w.live, score);
        vmax[h] = _mm512_mask_max_ps(vmax[h], w.live, vmax[h], score);
    }
}

// s_ij for NH heads starting at h0 into a.scores; returns each head's max in max_score.
template <typename Ring, int NH>
void attention_scores16(const AttentionGroup& a, int h0, float* max_score) {
    const float* q = a.q + int64_t{h0} * a.d_head;
    float* s = a.scores + int64_t{h0} * a.window;
    const __m512 scale = _mm512_set1_ps(a.scale);
    __m512 slope[NH], vmax[NH];
    for (int h = 0; h < NH; ++h) {
        slope[h] = _mm512_set1_ps(a.slopes[h0 + h]);
        vmax[h] = _mm512_set1_ps(-INFINITY);
    }
    for_key_steps(a, [&](int64_t j, int64_t slot, int64_t run) -> int64_t {
        if (run >= 64) {
            score_keys16<Ring, NH, 4, true>(a, q, slot, j, slope, scale, s, vmax);
            return 64;
        }
        if (run >= 32) {
            score_keys16<Ring, NH, 2, false>(a, q, slot, j, slope, scale, s, vmax);
            return 32;
        }
        if (run >= 16) {
            score_keys16<Ring, NH, 1, false>(a, q, slot, j, slope, scale, s, vmax);
            return 16;
        }
        const int64_t n = a.window - j < 16 ? a.window - j : 16;  // the ring's end, the last keys
        score_wrapped16<Ring, NH>(a, q, slot, j, static_cast<int>(n), slope, scale, s, vmax);
        return n;
    });
    for (int h = 0; h < NH; ++h)
        max_score[h] = hmax8(_mm256_max_ps(half8<0>(vmax[h]), half8<1>(vmax[h])));
}

// KernelTable::quantize_row_int8 on sixteen lanes, the same bytes as kernels.h's: max|x| in any
// order (exact), the scale and its inverse as written there, cvtps rounding half to even, the
// clamp at -127 (and the saturation at 127).
inline float quantize_row16(const float* x, int64_t n, int8_t* q) {
    __m512 amax = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16)
        amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(first_lanes(n - i), x + i)));
    const float scale = hmax8(_mm256_max_ps(half8<0>(amax), half8<1>(amax))) / 127.0f;
    const __m512 inv = _mm512_set1_ps(inverse_scale(scale));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 live = first_lanes(n - i);
        const __m512i r =
            _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, x + i), inv));
        const __m128i b = _mm_max_epi8(_mm512_cvtsepi32_epi8(r), _mm_set1_epi8(-127));
        _mm_mask_storeu_epi8(q + i, live, b);
    }
    return scale;
}

// ---- attend_group_q8's scores: exact integer dot products on sixteen keys ----------------------
// Quad i of sixteen consecutive slots (kernels.h) is one 512-bit load, and one vpdpbusd adds the
// four-byte dot products of all sixteen with a broadcast of the query's quad i: 64 multiply-adds
// per instruction, where the f32 memory's fused multiply-add does 16. vpdpbusd multiplies
// unsigned by signed bytes, so the keys' bytes go in with 128 added (an exclusive or of their sign
// bits) and each sum starts at -128 times the sum of the query's bytes: exact, the reference's
// isum.
inline __m512i biased16(__m512i k) {  // k + 128 as unsigned bytes
    return _mm512_xor_si512(k, _mm512_set1_epi8(static_cast<char>(0x80)));
}

inline __m512i key_quads16(const AttentionGroup& a, int i, int64_t slot) {
    return _mm512_loadu_si512(a.keys_q8 + (i * a.horizon + slot) * 4);
}

inline __m512i key_quads16(const AttentionGroup& a, int i, int64_t slot, __mmask16 m) {
    return _mm512_maskz_loadu_epi32(m, a.keys_q8 + (i * a.horizon + slot) * 4);
}

// score_of_isum on sixteen lanes: fma(float(isum), factor * ks, -(slope * distance)).
inline __m512 score_of_isum16(__m512i isum, float factor, __m512 key_scale, __m512 slope,
                              __m512 distance) {
    return _mm512_fmsub_ps(_mm512_cvtepi32_ps(isum),
                           _mm512_mul_ps(_mm512_set1_ps(factor), key_scale),
                           _mm512_mul_ps(slope, distance));
}

template <int NH, int NV>
inline void score_keys16_q8(const AttentionGroup& a, const QueryQ8* q, int64_t slot, int64_t j,
                            const __m512* slope, float* s, __m512* vmax) {
    __m512i dot[NH][NV];
    for (int h = 0; h < NH; ++h)
        for (int v = 0; v < NV; ++v) dot[h][v] = _mm512_set1_epi32(-128 * q[h].sum);
    for (int i = 0; i < q[0].quads; ++i) {
        __m512i k[NV];
        for (int v = 0; v < NV; ++v) k[v] = biased16(key_quads16(a, i, slot + 16 * v));
        for (int h = 0; h < NH; ++h) {
            const __m512i qi = _mm512_set1_epi32(q[h].quad(i));
            for (int v = 0; v < NV; ++v) dot[h][v] = _mm512_dpbusd_epi32(dot[h][v], k[v], qi);
        }
    }
    for (int v = 0; v < NV; ++v) {
        const __m512 distance = distances16(a.window - 1 - (j + 16 * v));
        const __m512 ks = _mm512_loadu_ps(a.key_scales + slot + 16 * v);
        for (int h = 0; h < NH; ++h) {
            const __m512 score = score_of_isum16(dot[h][v], q[h].factor, ks, slope[h], distance);
            _mm512_storeu_ps(s + h * a.window + j + 16 * v, score);
            vmax[h] = _mm512_max_ps(vmax[h], score);
        }
    }
}

// The n <= 16 keys from `slot`, wrapping at the ring's end (WrappedLanes): lanes past n are zero
// keys, and their results are dropped.
template <int NH>
inline void score_wrapped16_q8(const AttentionGroup& a, const QueryQ8* q, int64_t slot, int64_t j,
                               int n, const __m512* slope, float* s, __m512* vmax) {
    const WrappedLanes w(a, slot, n);
    __m512i dot[NH];
    for (int h = 0; h < NH; ++h) dot[h] = _mm512_set1_epi32(-128 * q[h].sum);
    for (int i = 0; i < q[0].quads; ++i) {
        const __m512i k = biased16(_mm512_castps_si512(w([&](int64_t from, __mmask16 m) {
            return _mm512_castsi512_ps(key_quads16(a, i, from, m));
        })));
        for (int h = 0; h < NH; ++h)
            dot[h] = _mm512_dpbusd_epi32(dot[h], k, _mm512_set1_epi32(q[h].quad(i)));
    }
    const __m512 distance = distances16(a.window - 1 - j);
    const __m512 ks =
        w([&](int64_t from, __mmask16 m) { return _mm512_maskz_loadu_ps(m, a.key_scales + from); });
    for (int h = 0; h < NH; ++h) {
        const __m512 score = score_of_isum16(dot[h], q[h].factor, ks, slope[h], distance);
        _mm512_mask_storeu_ps(s + h * a.window + j, w.live, score);
        vmax[h] = _mm512_mask_max_ps(vmax[h], w.live, vmax[h], score);
    }
}

// attention_scores16 for an int8 memory: the NH query heads from h0 quantized once (QueryQ8).
template <int NH>
void attention_scores16_q8(const AttentionGroup& a, int h0, float* max_score) {
    QueryQ8 q[NH];
    for (int h = 0; h < NH; ++h) q[h].prepare(a, h0 + h, quantize_row16);
    float* s = a.scores + int64_t{h0} * a.window;
    __m512 slope[NH], vmax[NH];
    for (int h = 0; h < NH; ++h) {
        slope[h] = _mm512_set1_ps(a.slopes[h0 + h]);
        vmax[h] = _mm512_set1_ps(-INFINITY);
    }
    for_key_steps(a, [&](int64_t j, int64_t slot, int64_t run) -> int64_t {
        if (run >= 64) {
            score_keys16_q8<NH, 4>(a, q, slot, j, slope, s, vmax);
            return 64;
        }
        if (run >= 32) {
            score_keys16_q8<NH, 2>(a, q, slot, j, slope, s, vmax);
            return 32;
        }
        if (run >= 16) {
            score_keys16_q8<NH, 1>(a, q, slot, j, slope, s, vmax);
            return 16;
        }
        const int64_t n = a.window - j < 16 ? a.window - j : 16;
        score_wrapped16_q8<NH>(a, q, slot, j, static_cast<int>(n), slope, s, vmax);
        return n;
    });
    for (int h = 0; h < NH; ++h)
        max_score[h] = hmax8(_mm256_max_ps(half8<0>(vmax[h]), half8<1>(vmax[h])));
}

// quantize_weights' vector steps on sixteen lanes (cvtps rounds half to even, as nearbyint; the
// unsigned saturation is quantize_weight's clamp at 255).
struct Weights16 {
    static constexpr int kLanes = 16;
    static constexpr bool kMasked = true;  // a run's last n < 16 keys as masked lanes
    using Max = __m512;
    static Max max_init() { return _mm512_setzero_ps(); }
    static void scale(float* e, const float* vs, Max& m, int64_t n = 16) {
        const __mmask16 live = first_lanes(n);  // lanes past n: w = 0, which leaves the max
        const __m512 w =
            _mm512_mul_ps(_mm512_maskz_loadu_ps(live, e), _mm512_maskz_loadu_ps(live, vs));
        _mm512_mask_storeu_ps(e, live, w);
        m = _mm512_max_ps(m, w);
    }
    static float max_of(Max m) { return hmax8(_mm256_max_ps(half8<0>(m), half8<1>(m))); }
    static void quantize(const float* w, float inv, uint8_t* q, int64_t n = 16) {
        const __mmask16 live = first_lanes(n);
        const __m512i r =
            _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, w), _mm512_set1_ps(inv)));
        _mm_mask_storeu_epi8(q, live, _mm512_cvtusepi32_epi8(r));
    }
};

// The integer value sums of an int8 memory for NH heads from h0 (kernels_scalar.cpp), their
// weights quantized into a.weights (WeightRuns): a quad of four slots' elements c .. c + 15 is one
// 512-bit load, and one vpdpbusd adds the four slots' products of all sixteen with a broadcast of
// the slots' four weights (unsigned bytes, as vpdpbusd wants them). Exact: the reference's osum.
template <int NH>
void attention_values16_q8(const AttentionGroup& a, int h0, const float* inv_total,
                           const int64_t* first) {
    const WeightRuns runs(a);
    const HeadWeights<Weights16, NH> weights(a, runs, h0, first);
    for (int c0 = 0; c0 < a.d_head; c0 += 32) {
        const int n = a.d_head - c0;
        const __mmask16 live[2] = {first_lanes(n), n > 16 ? first_lanes(n - 16) : __mmask16(0)};
        __m512i acc[NH][2];
        for (int h = 0; h < NH; ++h) acc[h][0] = acc[h][1] = _mm512_setzero_si512();
        runs.for_quads(weights.from, [&](int64_t pos, int64_t slot) {
            const int8_t* p = a.values_q8 + value_q8_index(c0, slot, a.value_stride);
            const __m512i v0 = _mm512_maskz_loadu_epi32(live[0], p);
            const __m512i v1 = _mm512_maskz_loadu_epi32(live[1], p + 64);
            for (int h = 0; h < NH; ++h) {
                int32_t four;
                std::memcpy(&four, weights.row[h] + pos, sizeof four);
                const __m512i w = _mm512_set1_epi32(four);
                acc[h][0] = _mm512_dpbusd_epi32(acc[h][0], w, v0);
                acc[h][1] = _mm512_dpbusd_epi32(acc[h][1], w, v1);
            }
        });
        for (int h = 0; h < NH; ++h) {
            const __m512 f = _mm512_set1_ps(weights.scale[h] * inv_total[h]);
            float* o = a.out + int64_t{h0 + h} * a.d_head + c0;
            for (int k = 0; k < 2; ++k)
                _mm512_mask_storeu_ps(o + 16 * k, live[k],
                                      _mm512_mul_ps(_mm512_cvtepi32_ps(acc[h][k]), f));
        }
    }
}

// e_j = exp(s_j - max) in place; returns 1 / total (the canonical eight-lane sum: each vector's
// low eight keys then its high eight added to the lanes, in increasing j), and in *first the
// window index of the first e_j that is not 0. A vector whose scores all lie more than 87 below
// the max is exp_f32's 0 without computing it: with ALiBi's steeper slopes, the older half of a
// long window or more.
inline float softmax_weights16(float* e, int64_t window, float max_score, int64_t* first) {
    const __m512 m = _mm512_set1_ps(max_score);
    const __m512 below = _mm512_set1_ps(-87.0f);
    __m256 lanes = _mm256_setzero_ps();
    *first = -1;
    int64_t j = 0;
    // Skipped vectors first (the oldest keys under the steep slopes), then two at a time.
    for (; j < window; j += 16) {
        const __mmask16 live = first_lanes(window - j);
        const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(live, e + j), m);
        if ((_mm512_cmp_ps_mask(x, below, _CMP_NLT_UQ) & live) != 0) break;
        _mm512_mask_storeu_ps(e + j, live, _mm512_setzero_ps());  // lanes + 0: unchanged
    }
    *first = j;
    for (; j + 32 <= window; j += 32) {
        const __m512 v0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(e + j), m));
        const __m512 v1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(e + j + 16), m));
        _mm512_storeu_ps(e + j, v0);
        _mm512_storeu_ps(e + j + 16, v1);
        lanes = _mm256_add_ps(lanes, half8<0>(v0));
        lanes = _mm256_add_ps(lanes, half8<1>(v0));
        lanes = _mm256_add_ps(lanes, half8<0>(v1));
        lanes = _mm256_add_ps(lanes, half8<1>(v1));
    }
    for (; j < window; j += 16) {
        const __mmask16 live = first_lanes(window - j);
        // Lanes past the window: e = +0, which leaves the lanes' sums of positive terms unchanged.
        const __m512 v =
            _mm512_maskz_mov_ps(live, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, e + j), m)));
        _mm512_mask_storeu_ps(e + j, live, v);
        lanes = _mm256_add_ps(lanes, half8<0>(v));
        lanes = _mm256_add_ps(lanes, half8<1>(v));
    }
    return 1.0f / reduce8_ps(lanes);  // the halving tree from the eight lanes
}

template <typename Ring, int NH>
void attend_heads16(const AttentionGroup& a, int h0) {
    float max_score[NH], inv_total[NH];
    int64_t first[NH];
    if constexpr (Ring::kIntegerDots)
        attention_scores16_q8<NH>(a, h0, max_score);
    else
        attention_scores16<Ring, NH>(a, h0, max_score);
    for (int h = 0; h < NH; ++h)
        inv_total[h] = softmax_weights16(a.scores + int64_t{h0 + h} * a.window, a.window,
                                         max_score[h], &first[h]);
    if constexpr (Ring::kIntegerDots) {
        attention_values16_q8<NH>(a, h0, inv_total, first);
    } else {
        int c = 0;
        for (; c + 32 <= a.d_head; c += 32)
            attention_values<Ring, Lanes16, NH, 2>(a, h0, c, inv_total, first);
        for (; c + 16 <= a.d_head; c += 16)
            attention_values<Ring, Lanes16, NH, 1>(a, h0, c, inv_total, first);
        attention_values_from<Ring, NH>(a, h0, c, inv_total, first);  // the last 0 .. 15 elements
    }
}

template <typename Ring>
void attend16(const AttentionGroup& a) {
    for_head_groups(a.heads,
                    [&](auto n, int h0) { attend_heads16<Ring, decltype(n)::value>(a, h0); });
}

inline void attend_group16(const AttentionGroup& a) {
    attend16<F32Lanes16>(a);
}

inline void attend_group16_q8(const AttentionGroup& a) {
    attend16<Q8Lanes16>(a);
}

}  // namespace
}  // namespace sage::kernels
