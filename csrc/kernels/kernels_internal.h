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

struct Q8Ring {};

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

// KernelTable::quantize_row_int8 as kernels.h's loop compiled with a path's flags (the scalar
// reference, and the NEON paths).
inline float quantize_row_int8_each(const float* x, int64_t n, int8_t* q) {
    return quantize_row_int8(x, n, q, 1);
}

// A query head as attend_group_q8 scores with it: its int8 elements (quantize_row_int8, one scale
// for the head), zero-padded to whole quads (key_quads), and the factor qscale * scale that turns
// an exact integer dot product with a key into the score's first product.
struct QueryQ8 {
    alignas(64) int8_t q[kMaxHeadWidth];
    float factor;
    int32_t sum;  // the sum of q's elements (the x86 dot product adds 128 to every key byte)
    int quads;

    // quantize(x, n, q) is quantize_row_int8(x, n, q, 1): a path's KernelTable::quantize_row_int8.
    template <typename Quantize>
    void prepare(const AttentionGroup& a, int head, Quantize&& quantize) {
        quads = static_cast<int>(key_quads(a.d_head));
        for (int c = a.d_head; c < 4 * quads; ++c) q[c] = 0;
        factor = quantize(a.q + int64_t{head} * a.d_head, a.d_head, q) * a.scale;
        sum = 0;
        for (int c = 0; c < a.d_head; ++c) sum += q[c];
    }
    void prepare(const AttentionGroup& a, int head) { prepare(a, head, quantize_row_int8_each); }
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

// attend_group_q8's quantized weight of a key: w (its softmax weight times its value's scale) over
// the head's weight scale ws, rounded half to even; inv is inverse_scale(ws), and w <= 255 ws.
inline uint8_t quantize_weight(float w, float inv) {
    const float r = std::nearbyint(w * inv);
    return r > 255.0f ? uint8_t{255} : static_cast<uint8_t>(r);
}

// Where the SIMD paths put a head's quantized weights for the integer value sums: one row of
// AttentionGroup::weights per head, in which bytes 4b .. 4b + 3 are the weights of one quad of
// value slots (value_q8_index) and every byte that is not a window key's weight is 0. The window's
// keys up to the ring's end (run 0) start at byte first_slot % 4, those from slot 0 on (run 1,
// when the window wraps) at the next multiple of 4.
struct WeightRuns {
    int64_t keys[2];       // the window's keys in each run
    int64_t base_pos[2];   // the byte of each run's first quad (a multiple of 4)
    int64_t base_slot[2];  // the slot of each run's first quad (a multiple of 4)
    int64_t offset0;       // first_slot % 4: run 0's first key is byte offset0
    int64_t bytes;         // the row's bytes in use, a multiple of 4 (at most window + 9)

    explicit WeightRuns(const AttentionGroup& a) {
        offset0 = a.first_slot % 4;
        keys[0] = a.window < a.horizon - a.first_slot ? a.window : a.horizon - a.first_slot;
        keys[1] = a.window - keys[0];
        base_pos[0] = 0;
        base_slot[0] = a.first_slot - offset0;
        base_pos[1] = (offset0 + keys[0] + 3) / 4 * 4;
        base_slot[1] = 0;
        bytes = base_pos[1] + (keys[1] + 3) / 4 * 4;
    }
    int64_t pos(int64_t j) const {  // the byte of window key j
        return j < keys[0] ? offset0 + j : base_pos[1] + (j - keys[0]);
    }
    // f(j0, j1, slot, byte) for each run's window keys j0 .. j1 - 1 from window key `from` on, the
    // slot and the byte of key j0 (both rise with j within a run).
    template <typename F>
    void for_runs(int64_t from, F&& f) const {
        for (int r = 0; r < 2; ++r) {
            const int64_t start = r == 0 ? 0 : keys[0];
            const int64_t j0 = from > start ? from : start, j1 = start + keys[r];
            if (j0 >= j1) continue;
            f(j0, j1, r == 0 ? base_slot[0] + offset0 + j0 : j0 - keys[0], pos(j0));
        }
    }
    // f(byte, slot) for each quad of value slots holding window keys from window key `from` on.
    template <typename F>
    void for_quads(int64_t from, F&& f) const {
        for (int r = 0; r < 2; ++r) {
            const int64_t start = r == 0 ? 0 : keys[0];
            if (keys[r] == 0 || from >= start + keys[r]) continue;
            const int64_t first = from > start ? (pos(from) - base_pos[r]) / 4 : 0;
            const int64_t end = (pos(start) - base_pos[r] + keys[r] + 3) / 4;
            for (int64_t b = first; b < end; ++b) f(base_pos[r] + 4 * b, base_slot[r] + 4 * b);
        }
    }
};

// A head's weights for the integer value sums: e[j] becomes w_j = e[j] * value_scales[slot of
// j], and row (the head's row of AttentionGroup::weights, laid out by WeightRuns) their quantized
// values; returns the head's weight scale ws = max w / 255. Window keys before `first` have
// weight +0 (the softmax's skipped keys), and so do their bytes. V is the path's vector steps
// (kLanes at a time; the rest of a run one by one, or by V::kMasked steps of n < kLanes lanes):
// V::scale(e, vs, vmax) multiplies in place and keeps the running max, V::max_of(vmax) reduces it,
// V::quantize(w, inv, q) writes quantize_weight of each lane.
template <typename V>
float quantize_weights(const AttentionGroup& a, float* e, uint8_t* row, const WeightRuns& runs,
                       int64_t first) {
    typename V::Max vmax = V::max_init();
    float wmax = 0.0f;
    runs.for_runs(first, [&](int64_t j0, int64_t j1, int64_t slot, int64_t) {
        const float* vs = a.value_scales + slot - j0;  // window key j's scale at vs[j]
        int64_t j = j0;
        for (; j + V::kLanes <= j1; j += V::kLanes) V::scale(e + j, vs + j, vmax);
        if constexpr (V::kMasked) {
            if (j < j1) V::scale(e + j, vs + j, vmax, j1 - j);
            return;
        }
        for (; j < j1; ++j) {
            e[j] = e[j] * vs[j];
            wmax = e[j] > wmax ? e[j] : wmax;
        }
    });
    const float vector_max = V::max_of(vmax);
    wmax = vector_max > wmax ? vector_max : wmax;
    const float ws = wmax / 255.0f, inv = inverse_scale(ws);
    std::memset(row, 0, static_cast<size_t>(runs.bytes));
    runs.for_runs(first, [&](int64_t j0, int64_t j1, int64_t, int64_t pos) {
        uint8_t* q = row + pos - j0;  // window key j's byte at q[j]
        int64_t j = j0;
        for (; j + V::kLanes <= j1; j += V::kLanes) V::quantize(e + j, inv, q + j);
        if constexpr (V::kMasked) {
            if (j < j1) V::quantize(e + j, inv, q + j, j1 - j);
            return;
        }
        for (; j < j1; ++j) q[j] = quantize_weight(e[j], inv);
    });
    return ws;
}

// The window's keys oldest first, in steps that a path's scoring chooses: step(j, slot, run) gets
// window key j, its slot and the run of consecutive slots from there (to the ring's end or the
// window's end, whichever is nearer), scores some of the keys from j on and returns how many.
template <typename Step>
void for_key_steps(const AttentionGroup& a, Step&& step) {
    int64_t j = 0, slot = a.first_slot;
    while (j < a.window) {
        const int64_t run = a.window - j < a.horizon - slot ? a.window - j : a.horizon - slot;
        const int64_t n = step(j, slot, run);
        j += n;
        slot += n;
        if (slot >= a.horizon) slot -= a.horizon;
    }
}

// The quantized weights of the NH heads from h0 for the integer value sums (quantize_weights<V>
// of each head, into its row of a.weights): the rows, the heads' weight scales, and the first
// window key that any of them weighs (`first`: each head's, from the softmax).
template <typename V, int NH>
struct HeadWeights {
    const uint8_t* row[NH];
    float scale[NH];
    int64_t from;

    HeadWeights(const AttentionGroup& a, const WeightRuns& runs, int h0, const int64_t* first) {
        from = a.window;
        for (int h = 0; h < NH; ++h) {
            uint8_t* r = a.weights + int64_t{h} * (a.window + 12);
            scale[h] =
                quantize_weights<V>(a, a.scores + int64_t{h0 + h} * a.window, r, runs, first[h]);
            row[h] = r;
            from = first[h] < from ? first[h] : from;
        }
    }
};

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

// rmsnorm of each row (kernels.h) with a path's own matvec_f32 for the sum of squares: the row's
// dot with itself, so every path sums it in the same 16 lanes. The normalizing loop is elementwise
// (each element rounded as written), plain C that each instruction-set file vectorizes with its
// own flags.
template <void (*matvec_f32)(const float*, const float*, float*, int64_t, int64_t)>
void rmsnorm_each_row(const float* x, const float* gain, float* out, int64_t n, int64_t rows,
                      float eps) {
    for (int64_t t = 0; t < rows; ++t) {
        const float* xt = x + t * n;
        float* ot = out + t * n;
        float sum_squares = 0.0f;
        matvec_f32(xt, xt, &sum_squares, 1, n);
        const float inv_rms = 1.0f / std::sqrt(sum_squares / static_cast<float>(n) + eps);
        for (int64_t i = 0; i < n; ++i) ot[i] = (xt[i] * inv_rms) * gain[i];
    }
}

// matmul_q8_0 or matmul_q4 (kernels.h) from a path's matrix-vector product of the same weights:
// panels of kPanelRows rows, each run for every token while it sits in the L1 cache (a 16-row
// panel of a 512-column matrix is 9 KB in q8_0, 5 KB in q4), so each weight row comes from memory
// once per block of tokens; each row is the matvec's, so the same bits. The scalar reference and
// the NEON paths use it (x86 uses it for matmul_q4, whose session product is matmul_q4_panels).
template <typename Block, void (*matvec)(const Block*, const BlockQ8_0*, float*, int64_t, int64_t)>
void matvec_each_panel(const Block* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols,
                       int64_t tokens, int64_t y_stride) {
    const int64_t nb = blocks_per_row(cols);
    for (int64_t r = 0; r < rows; r += kPanelRows) {
        const int64_t n = rows - r < kPanelRows ? rows - r : kPanelRows;
        for (int64_t t = 0; t < tokens; ++t)
            matvec(w + r * nb, x + t * nb, y + t * y_stride + r, n, cols);
    }
}

// ---- exp and SwiGLU over vectors of lanes ------------------------------------------------------
// W is a path's vector of W::kLanes floats: Lanes8 (kernels_x86_impl.h), Lanes16
// (kernels_avx512_attention.h), Lanes4 (kernels_neon_impl.h), each with the operations below.

// exp_f32 (kernels.h) of W::kLanes lanes, operation by operation, for N vectors at once: each step
// runs over all N before the next, so their chains of dependent operations overlap (the SwiGLU's
// N at a time, swiglu_vectors).
template <typename W, int N>
inline void exp_each(typename W::V* x) {
    typename W::Mask below[N];
    typename W::V k[N], r[N], p[N];
    for (int i = 0; i < N; ++i) {
        below[i] = W::below(x[i], -87.0f);
        x[i] = W::min(x[i], W::set1(88.0f));
        k[i] = W::round(W::mul(x[i], W::set1(1.44269504088896341f)));
    }
    for (int i = 0; i < N; ++i)
        r[i] = W::sub(W::minus_exact_product(x[i], k[i], 0.693359375f),
                      W::mul(k[i], W::set1(-2.12194440e-4f)));
    constexpr float kTaylor[] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f,
                                 0.5f,          1.0f,          1.0f};
    for (int i = 0; i < N; ++i) p[i] = W::set1(1.0f / 5040.0f);
    for (float c : kTaylor)
        for (int i = 0; i < N; ++i) p[i] = W::add(W::mul(p[i], r[i]), W::set1(c));
    for (int i = 0; i < N; ++i) x[i] = W::times_two_to(p[i], k[i], below[i]);
}

// SwiGLU of N vectors of W::kLanes lanes, the exp's steps over the N in lockstep (exp_each).
template <typename W, int N>
inline void swiglu_each(float* gate, const float* up) {
    typename W::V z[N], e[N];
    for (int j = 0; j < N; ++j) {
        z[j] = W::load(gate + W::kLanes * j);
        e[j] = W::negate(z[j]);
    }
    exp_each<W, N>(e);
    for (int j = 0; j < N; ++j) {
        const typename W::V silu = W::div(z[j], W::add(W::set1(1.0f), e[j]));
        W::store(gate + W::kLanes * j, W::mul(silu, W::load(up + W::kLanes * j)));
    }
}

// SwiGLU on W::kLanes lanes, N vectors at a time, then one; returns how many elements it did, a
// multiple of W::kLanes.
template <typename W, int N>
inline int64_t swiglu_vectors(float* gate, const float* up, int64_t n) {
    int64_t i = 0;
    for (; i + N * W::kLanes <= n; i += N * W::kLanes) swiglu_each<W, N>(gate + i, up + i);
    for (; i + W::kLanes <= n; i += W::kLanes) swiglu_each<W, 1>(gate + i, up + i);
    return i;
}

// The SwiGLU (kernels.h) with swiglu_vectors<W, N>, then element by element.
template <typename W, int N>
inline void swiglu_lanes(float* gate, const float* up, int64_t n) {
    for (int64_t i = swiglu_vectors<W, N>(gate, up, n); i < n; ++i)
        gate[i] = (gate[i] / (1.0f + exp_f32(-gate[i]))) * up[i];
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
