// Private to csrc/kernels: one table per instruction set, defined in its own translation unit and
// compiled with that instruction set's flags. Only dispatch.cpp (baseline flags) refers to them,
// and only after checking the CPU can run them.
//
// Every SIMD file keeps its code in an anonymous namespace and uses no std:: templates, so no
// out-of-line instantiation compiled with -mavx512f (say) can be picked by the linker for a
// caller on a CPU without it.
#pragma once

#include <cmath>
#include <cstring>

#include "kernels.h"

namespace sage::kernels {

namespace {

// How attend_group reads a ring memory: f32 (F32Ring) or int8 with a scale per slot (Q8Ring). The
// SIMD paths extend these with their vector loads. (In an anonymous namespace: one copy per
// instruction-set file.)
struct F32Ring {
    static float key(const AttentionGroup& a, int c, int64_t slot) {
        return a.keys[c * a.horizon + slot];
    }
    static float value(const AttentionGroup& a, int64_t slot, int c) {
        return a.values[slot * a.value_stride + c];
    }
    static float weight(const AttentionGroup&, float e, int64_t) { return e; }
};

struct Q8Ring {
    static float value(const AttentionGroup& a, int64_t slot, int c) {
        return static_cast<float>(a.values_q8[slot * a.value_stride + c]);
    }
    static float weight(const AttentionGroup& a, float e, int64_t slot) {
        return e * a.value_scales[slot];
    }
};

// s = (q . k) * scale - slope * distance for the f32 key in `slot`, in attend_group's canonical
// order (kernels_scalar.cpp): the scalar path scores every key with it. score_of_dot is its last
// step, which the SIMD paths apply lane by lane to the keys they gather (gathered_scores).
inline float score_of_dot(const AttentionGroup& a, float dot, float slope, float distance) {
    return dot * a.scale - slope * distance;
}

inline float attention_score(const AttentionGroup& a, const float* q, int64_t slot, float slope,
                             float distance) {
    float dot = 0.0f;
    for (int c = 0; c < a.d_head; ++c) dot = std::fma(q[c], F32Ring::key(a, c, slot), dot);
    return score_of_dot(a, dot, slope, distance);
}

// A query head as attend_group_q8 scores with it: its int8 elements (quantize_row_int8, one scale
// for the head), zero-padded to whole quads (key_quads), and the factor qscale * scale that turns
// an exact integer dot product with a key into the score's first product.
struct QueryQ8 {
    alignas(64) int8_t q[kMaxHeadWidth];
    float factor;
    int32_t sum;  // the sum of q's elements (the x86 dot product adds 128 to every key byte)
    int quads;

    void prepare(const AttentionGroup& a, int head) {
        quads = static_cast<int>(key_quads(a.d_head));
        for (int c = a.d_head; c < 4 * quads; ++c) q[c] = 0;
        factor = quantize_row_int8(a.q + int64_t{head} * a.d_head, a.d_head, q, 1) * a.scale;
        sum = 0;
        for (int c = 0; c < a.d_head; ++c) sum += q[c];
    }
    int32_t quad(int i) const {  // elements 4i .. 4i + 3 as one 32-bit word
        int32_t w;
        std::memcpy(&w, q + 4 * i, sizeof w);
        return w;
    }
};

// The key in `slot`'s quad i as one 32-bit word (the x86 and NEON paths load these as lanes).
inline int32_t key_quad(const AttentionGroup& a, int i, int64_t slot) {
    int32_t w;
    std::memcpy(&w, a.keys_q8 + (i * a.horizon + slot) * 4, sizeof w);
    return w;
}

// attend_group_q8's score from the exact integer dot product of the query head and the key in
// `slot`: s = fma(float(isum), factor * key_scale, -(slope * distance)). isum is at most
// kMaxHeadWidth * 127 * 127 < 2^24 in magnitude, so float(isum) is exact.
inline float score_of_isum(const AttentionGroup& a, const QueryQ8& q, int32_t isum, int64_t slot,
                           float slope, float distance) {
    return std::fma(static_cast<float>(isum), q.factor * a.key_scales[slot], -(slope * distance));
}

inline float attention_score_q8(const AttentionGroup& a, const QueryQ8& q, int64_t slot,
                                float slope, float distance) {
    int32_t isum = 0;
    for (int c = 0; c < 4 * q.quads; ++c)
        isum += int32_t{q.q[c]} * int32_t{a.keys_q8[key_q8_index(c, slot, a.horizon)]};
    return score_of_isum(a, q, isum, slot, slope, distance);
}

// The slots of the n <= W keys from `slot` on, wrapping at the ring's end; a lane past n repeats
// the first key (a SIMD path gathers them into one vector and drops those lanes' results).
template <int W>
void gathered_slots(const AttentionGroup& a, int64_t slot, int n, int64_t* slots) {
    for (int l = 0; l < W; ++l) {
        const int64_t k = slot + (l < n ? l : 0);
        slots[l] = k < a.horizon ? k : k - a.horizon;
    }
}

// The scores of n gathered keys at window indices j .. j + n - 1 into s[j ..] (one head's row),
// score(l, distance) giving lane l's, and the head's running max.
template <typename Score>
void gathered_scores(const AttentionGroup& a, int n, int64_t j, float* s, float* max_score,
                     Score&& score) {
    for (int l = 0; l < n; ++l) {
        s[j + l] = score(l, static_cast<float>(a.window - 1 - (j + l)));
        if (s[j + l] > *max_score) *max_score = s[j + l];
    }
}

// out[c] = (sum over the window of weight_j * v_j[c]) * inv_total for one head's weights e and
// one element c: the SIMD paths' tail for widths that are not a multiple of their vectors.
template <typename Ring>
float attention_value(const AttentionGroup& a, const float* e, int c, float inv_total) {
    float o = 0.0f;
    int64_t slot = a.first_slot;
    for (int64_t j = 0; j < a.window; ++j) {
        o = std::fma(Ring::weight(a, e[j], slot), Ring::value(a, slot, c), o);
        if (++slot == a.horizon) slot = 0;
    }
    return o * inv_total;
}

template <int N>
struct Count {
    static constexpr int value = N;
};

// n as a compile-time count, Count<n> for n in 1..N (Count<N> above N): run(Count<n>{}), so that a
// loop over n unrolls into registers for every count a caller can leave.
template <int N, typename Run>
void with_count(int n, Run&& run) {
    if constexpr (N > 1) {
        if (n < N) return with_count<N - 1>(n, run);
    }
    run(Count<N>{});
}

// The SIMD paths attend a group's query heads at most kHeadGroup at a time (each key and value
// vector loaded feeds them all): run(Count<n>{}, h0) for heads h0 .. h0 + n - 1, n <= kHeadGroup.
constexpr int kHeadGroup = 4;
template <typename Run>
void for_head_groups(int heads, Run&& run) {
    for (int h0 = 0; h0 < heads; h0 += kHeadGroup)
        with_count<kHeadGroup>(heads - h0, [&](auto n) { run(n, h0); });
}

// The value sums skip exact zeros: the softmax leaves head h's weights +0 before first[h] (its
// leading vectors whose scores all lie more than 87 below the max, exp_f32's 0), and
// fma(+0, v, o) == o, so head h's sums may start there. value_runs orders the NH heads by their
// first weight and calls run(Count<n>{}, order, j0, j1) for the keys j0 .. j1 - 1 over which the
// n heads order[0 .. n) are the active ones; each call continues those heads' sums.
template <int NH, typename Run>
void value_runs(const int64_t* first, int64_t window, Run&& run) {
    static_assert(NH >= 1 && NH <= 4, "a head group is at most four heads");
    int order[NH];
    for (int h = 0; h < NH; ++h) {  // insertion sort by first weight
        int i = h;
        for (; i > 0 && first[order[i - 1]] > first[h]; --i) order[i] = order[i - 1];
        order[i] = h;
    }
    for (int n = 1; n <= NH; ++n) {
        const int64_t j0 = first[order[n - 1]];
        const int64_t j1 = n < NH ? first[order[n]] : window;
        if (j0 == j1) continue;
        with_count<NH>(n, [&](auto active) { run(active, order, j0, j1); });
    }
}

// Query t of a block as an AttentionGroup of its own (AttentionBlock's definition).
inline AttentionGroup block_query(const AttentionBlock& b, int64_t t) {
    AttentionGroup a = b.first;
    const int64_t newest = b.first.first_slot + b.first.window - 1 + t;
    a.window = b.first.window + t < b.max_window ? b.first.window + t : b.max_window;
    a.first_slot = newest - a.window + 1;
    a.q = b.first.q + t * b.q_stride;
    a.out = b.first.out + t * b.out_stride;
    return a;
}

// attend_block as its definition: `attend` (a path's attend_group or attend_group_q8) for each
// query. The scalar reference is this; the NEON paths use it with their own attend_group.
template <void (*attend)(const AttentionGroup&)>
void attend_each_query(const AttentionBlock& b) {
    for (int64_t t = 0; t < b.tokens; ++t) attend(block_query(b, t));
}

}  // namespace

extern const KernelTable kScalarTable;
#if defined(SAGE_KERNELS_HAVE_X86)
extern const KernelTable kAvx2Table;
extern const KernelTable kAvx512VnniTable;
#endif
#if defined(SAGE_KERNELS_HAVE_NEON)
extern const KernelTable kNeonTable;
extern const KernelTable kNeonDotTable;
#endif

}  // namespace sage::kernels
