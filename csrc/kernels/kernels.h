// The engine's arithmetic: block formats and the kernels that consume them.
//
// Every kernel exists once per instruction set (scalar reference, AVX2, AVX-512 VNNI, NEON,
// NEON dot-product) behind one dispatch point, `sage::kernels::active()`. Every path produces
// bit-identical results to the scalar reference: integer block sums are exact, and the f32
// arithmetic that follows is done in the canonical order documented beside each kernel (the
// build disables FMA contraction so the compiler cannot reorder it either). This is what lets
// the same seed give the same tokens on x86 and on a Raspberry Pi.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace sage::kernels {

// Q8_0: 32 int8 values sharing one f32 scale; value = scale * q. A row of n values is stored as
// ceil(n / 32) blocks, the last one zero-padded. The scale is f32 (not f16) so that quantization
// is exact to reproduce in numpy and needs no half-precision conversion on the Cortex-A72.
constexpr int kBlockSize = 32;
struct BlockQ8_0 {
    float scale;
    int8_t q[kBlockSize];
};
static_assert(sizeof(BlockQ8_0) == 36, "BlockQ8_0 must be 4 + 32 bytes (docs/format.md)");

// Q4: 32 signed 4-bit values in [-8, 7] sharing one f32 scale; value = scale * q. Byte i holds
// element 2i in its low nibble and element 2i+1 in its high nibble, each stored as q + 8.
struct BlockQ4 {
    float scale;
    uint8_t q[kBlockSize / 2];
};
static_assert(sizeof(BlockQ4) == 20, "BlockQ4 must be 4 + 16 bytes (docs/format.md)");

inline int64_t blocks_per_row(int64_t n) {
    return (n + kBlockSize - 1) / kBlockSize;
}

// Q8_0 weights repacked for the x86 and NEON dot-product products (not a file format: the engine
// packs the file's Q8_0 matrices once, when a path that has matmul_q8_0_panels first runs a
// model). A panel is kPanelRows consecutive rows; its blocks follow one another, each holding its
// rows' block b transposed four bytes at a time, as unsigned bytes q + 128, and their scales, so
// that one broadcast of four bytes of x meets all the panel's rows in one dot-product instruction
// (AVX-512 VNNI; AVX2 in two halves of 8 rows and NEON's sdot in four of 4, undoing the + 128) and
// each lane sums its own row: no horizontal sums. Same bytes per row as BlockQ8_0.
constexpr int kPanelRows = 16;
struct alignas(64) PanelBlockQ8 {
    uint8_t q[kBlockSize / 4][kPanelRows][4];  // q[k][i]: bytes 4k .. 4k + 3 of row i, + 128
    float scale[kPanelRows];                   // row i's block scale
};
static_assert(sizeof(PanelBlockQ8) == kPanelRows * sizeof(BlockQ8_0),
              "a panel block must hold its rows' blocks in the same bytes");

inline int64_t panels_of(int64_t rows) {
    return (rows + kPanelRows - 1) / kPanelRows;
}

// w[rows][blocks_per_row(cols)] -> out[panels_of(rows)][blocks_per_row(cols)]: panel p holds rows
// 16p .. 16p + 15; rows past the end are zero (scale 0, q 0), computed and never stored.
void pack_q8_0_panels(const BlockQ8_0* w, int64_t rows, int64_t cols, PanelBlockQ8* out);

// Q4 weights repacked the same way (not a file format either): a panel block holds its 16 rows'
// block b with each byte's two nibbles (the file's q + 8, 0 .. 15) regrouped so that byte j of
// row i in q[k] holds element 4k + j in its low nibble and element 16 + 4k + j in its high one.
// One mask (and a shift, or a second mask) unpacks four bytes of 16 rows for the elements that
// meet x's bytes 4k .. 4k + 3 and 16 + 4k .. 16 + 4k + 3: the unsigned operand of the dot
// product, the + 8 undone by subtracting 8 times the sum of x's block. Same bytes per row as
// BlockQ4.
struct alignas(64) PanelBlockQ4 {
    uint8_t q[kBlockSize / 8][kPanelRows][4];  // q[k][i][j]: elements 4k + j | 16 + 4k + j << 4
    float scale[kPanelRows];                   // row i's block scale
};
static_assert(sizeof(PanelBlockQ4) == kPanelRows * sizeof(BlockQ4),
              "a q4 panel block must hold its rows' blocks in the same bytes");

// pack_q8_0_panels for Q4 weights: rows past the end are zero (scale 0, every nibble 8).
void pack_q4_panels(const BlockQ4* w, int64_t rows, int64_t cols, PanelBlockQ4* out);

// e^x with a relative error below 2e-7 for x in [-87, 88]; 0 below, clamped above. The engine
// computes it itself so that every build, x86 or ARM, gets the same bits (the C library's expf
// differs between versions and between its FMA and non-FMA variants); the attention kernels
// reproduce it lane by lane. `static`: one copy per translation unit, so the copy compiled into
// an instruction-set file never serves a caller on a CPU without that instruction set.
static inline float exp_f32(float x) {
    if (x < -87.0f) return 0.0f;
    if (x > 88.0f) x = 88.0f;
    // x = k ln2 + r with |r| <= ln2 / 2; ln2 is split in two so that k * kLn2Hi is exact.
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693359375f;
    constexpr float kLn2Lo = -2.12194440e-4f;
    const float k = std::nearbyint(x * kLog2e);
    const float r = (x - k * kLn2Hi) - k * kLn2Lo;
    // Taylor series of e^r to degree 7 (truncation error < 1e-8 on |r| <= 0.35), Horner order.
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    // Scale by 2^k through the exponent bits; k is in [-126, 127] here.
    const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    float two_k;
    std::memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k;
}

// 1 / scale of a Q8_0 block, or 0 when the scale is 0 or so small that 1 / scale overflows:
// such a block quantizes to zeros on every path (docs/format.md). `static` keeps one copy per
// instruction-set file, so the linker never picks an AVX-512 copy for the scalar path.
static inline float inverse_scale(float scale) {
    if (scale == 0.0f) return 0.0f;
    const float inv = 1.0f / scale;
    return inv - inv == 0.0f ? inv : 0.0f;  // inf - inf is NaN: the overflow case
}

// std::nearbyint(x) (round half to even, the default rounding mode) for |x| < 2^22 without the C
// library: x + 1.5 * 2^23 lies in (2^23, 2^24), where floats are 1 apart, so the addition rounds x
// to an integer, half to even (1.5 * 2^23 is even), and the subtraction is exact. Compiled for the
// baseline x86-64, std::nearbyint is a call to libm's nearbyintf per element: when the session
// quantized its int8 rows with it, that was most of what an int8 memory added to a prefill.
static inline float round_half_even_small(float x) {
    constexpr float kShift = 12582912.0f;  // 1.5 * 2^23
    return (x + kShift) - kShift;
}

// quantize_row_int8's element: clamp(round-half-even(x * inv), -127, 127) (|x * inv| <= 127 plus a
// rounding, well inside round_half_even_small's range).
static inline int8_t quantize_int8(float x, float inv) {
    const float r = round_half_even_small(x * inv);
    return static_cast<int8_t>(r > 127.0f ? 127 : (r < -127.0f ? -127 : static_cast<int>(r)));
}

// One row of an int8 ring memory (a key or a value of one key/value head): x[n] -> q[i * q_stride]
// for i < n and the returned scale, with quantize_row_q8_0's rule over the whole row (scale =
// max|x| / 127, q = round-half-even(x / scale) clamped to [-127, 127]); x ~ scale * q. The
// definition of KernelTable::quantize_row_int8 (every path's bytes and scale are these).
static inline float quantize_row_int8(const float* x, int64_t n, int8_t* q, int64_t q_stride) {
    float lane[8] = {};  // the max in eight lanes (exact in any order): no chain of n maxima
    for (int64_t i = 0; i < n; ++i) {
        const float a = std::fabs(x[i]);
        lane[i % 8] = a > lane[i % 8] ? a : lane[i % 8];
    }
    float amax = 0.0f;
    for (float a : lane) amax = a > amax ? a : amax;
    const float scale = amax / 127.0f;
    const float inv = inverse_scale(scale);
    for (int64_t i = 0; i < n; ++i) q[i * q_stride] = quantize_int8(x[i], inv);
    return scale;
}

// The widest key/value head a model may have (the loader rejects wider): the int8 attention
// quantizes a query head into a buffer of this many bytes on the stack.
constexpr int kMaxHeadWidth = 1024;

// An int8 memory stores each key as quads: elements 4i .. 4i + 3 side by side, so that one 32-bit
// lane holds them for a four-way integer dot product (vpdpbusd, maddubs, sdot). A key of d_head
// elements has key_quads(d_head) quads, the last one padded (its padding bytes may hold anything:
// the query's padding is 0). Quad i of the key in slot s is the 32-bit word keys_q8[i * horizon
// + s] (as int32 words: the same layout as an f32 memory's keys, one quad where it has one
// element), so element c of that key is the byte key_q8_index(c, s, horizon).
inline int64_t key_quads(int64_t d_head) {
    return (d_head + 3) / 4;
}
inline int64_t key_q8_index(int64_t c, int64_t slot, int64_t horizon) {
    return ((c / 4) * horizon + slot) * 4 + c % 4;
}

// Its values go in quads of slots: element c of slots 4b .. 4b + 3 side by side, so that one 32-bit
// lane holds four slots' element c and a broadcast of four slots' weights meets a vector of
// elements. With `stride` elements per slot (every key/value head's), element c of the value in
// slot s is the byte value_q8_index(c, s, stride), and the memory holds its slots rounded up to a
// multiple of 4 (the padding slots zero). Value bytes lie in [-127, 127] (quantize_row_int8).
inline int64_t value_q8_index(int64_t c, int64_t slot, int64_t stride) {
    return ((slot / 4) * stride + c) * 4 + slot % 4;
}

// The longest horizon an int8 memory may have: its value sums are exact int32 sums of up to
// horizon products of at most 255 * 127 (the session refuses longer).
constexpr int64_t kMaxInt8Horizon = 65536;

// The bytes of scratch attend_group_q8 needs for the quantized weights of `heads` query heads over
// a window of up to `window` keys (one row of window + 12 bytes per head, AttentionGroup::weights).
inline int64_t attention_weights_bytes(int heads, int64_t window) {
    return int64_t{heads} * (window + 12);
}

// One key/value group's attention for the query at the newest position of a layer's ring memory
// (docs/design.md): the `heads` query heads that share the group, against the `window` newest
// positions, which sit in ring slots first_slot, first_slot + 1, ... (mod horizon), oldest first.
struct AttentionGroup {
    const float* q;        // [heads][d_head] the group's query heads
    const float* keys;     // [d_head][horizon]: element c of the key in slot s at keys[c*horizon+s]
    const float* values;   // element c of the value in slot s at values[s*value_stride+c]
    int64_t value_stride;  // floats between consecutive slots' values
    int64_t horizon;       // slots in the ring
    int64_t first_slot;    // the oldest position's slot
    int64_t window;        // positions attended, 1..horizon; the last is at distance 0
    const float* slopes;   // [heads] ALiBi slopes
    float scale;           // 1 / sqrt(d_head)
    int heads, d_head;
    float* scores;  // scratch, [heads][window]
    float* out;     // [heads][d_head]
    // An int8 memory (attend_group_q8; keys and values unused): the keys as quads (key_quads),
    // the values as quads of slots (value_q8_index, with value_stride elements per slot), and one
    // scale per slot, so that the key in slot s is key_scales[s] * (its int8 elements).
    const int8_t* keys_q8;  // [key_quads(d_head)][horizon][4]
    const int8_t*
        values_q8;  // element c of slot s at values_q8[value_q8_index(c, s, value_stride)]
    const float* key_scales;    // [horizon]
    const float* value_scales;  // [horizon]
    uint8_t* weights;           // scratch of attention_weights_bytes(heads, window)
};

// The attention of a block of consecutive queries of one key/value group (a prompt's prefill):
// query t (t = 0 .. tokens - 1) is `first` moved t positions on. Its heads are at
// first.q + t * q_stride, its output goes to first.out + t * out_stride, its newest key (its own)
// sits in slot first.first_slot + first.window - 1 + t, and its window is the
// min(first.window + t, max_window) newest keys up to that one. The memory must not wrap: the last
// query's key lies below first.horizon (the session copies a layer's window into such a memory).
// first.scores is scratch of first.heads * max_window floats (attend_group's for the longest
// window). Each query's result is attend_group's (attend_group_q8's) for that query, bit for bit.
struct AttentionBlock {
    AttentionGroup first;
    int64_t tokens;
    int64_t q_stride, out_stride;  // floats between consecutive queries' heads, outputs
    int64_t max_window;            // the layer's horizon
};

// One instruction set's implementation of every kernel.
struct KernelTable {
    const char* name;  // "scalar", "avx2", "avx512vnni", "neon", "neondot"

    // x[n] -> y[blocks_per_row(n)]: amax = max|x|, scale = amax / 127, inv = 1 / scale (0 if scale
    // is 0 or 1 / scale overflows), q = round-half-even(x * inv) clamped to [-127, 127]. Identical
    // to sage_edge.quant (numpy).
    void (*quantize_row_q8_0)(const float* x, BlockQ8_0* y, int64_t n);

    // quantize_row_int8(x, n, q, 1) (above): a row of an int8 memory's key or value, or a query
    // head of attend_group_q8, into q[0 .. n); returns the scale. Every key and value of a prefill
    // block and of a decode step goes through it (RingMemory::write).
    float (*quantize_row_int8)(const float* x, int64_t n, int8_t* q);

    // y[r] = sum over blocks b, in order, of (w[r][b].scale * x[b].scale) * float(isum_rb), with
    // an f32 accumulator starting at 0 (see kernels_scalar.cpp for the canonical order).
    void (*matvec_q8_0)(const BlockQ8_0* w, const BlockQ8_0* x, float* y, int64_t rows,
                        int64_t cols);

    // The same for 4-bit weights against Q8_0 activations.
    void (*matvec_q4)(const BlockQ4* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols);

    // y[r] = dot(w[r], x) in f32, accumulated in the canonical 16-lane order of kernels_scalar.cpp.
    void (*matvec_f32)(const float* w, const float* x, float* y, int64_t rows, int64_t cols);

    // matvec_q8_0 for a block of tokens: y[t * y_stride + r] for t < tokens is matvec_q8_0 of x[t]
    // (x holds the tokens' rows one after another, blocks_per_row(cols) blocks each), bit for bit.
    // Each weight row is read once for the whole block (a prompt's prefill).
    void (*matmul_q8_0)(const BlockQ8_0* w, const BlockQ8_0* x, float* y, int64_t rows,
                        int64_t cols, int64_t tokens, int64_t y_stride);

    // The same for 4-bit weights: matvec_q4 of each token, bit for bit, each weight row read
    // once for the block (the prefill of a q4 model on a path without matmul_q4_panels).
    void (*matmul_q4)(const BlockQ4* w, const BlockQ8_0* x, float* y, int64_t rows, int64_t cols,
                      int64_t tokens, int64_t y_stride);

    // matmul_q8_0 (so matvec_q8_0 for one token) over weights packed by pack_q8_0_panels, w
    // pointing at the panel of the first row computed (a multiple of kPanelRows), bit for bit.
    // Null where a path reads the file's layout instead (scalar; NEON without the dot product,
    // where undoing the + 128 and repeating x's bytes cost more than the packing saves); the
    // session then never packs.
    void (*matmul_q8_0_panels)(const PanelBlockQ8* w, const BlockQ8_0* x, float* y, int64_t rows,
                               int64_t cols, int64_t tokens, int64_t y_stride);

    // matvec_q4 of every token (y[t * y_stride + r], as matmul_q8_0) over weights packed by
    // pack_q4_panels, w pointing at the panel of the first row computed, bit for bit. Null where
    // a path reads the file's layout (scalar, NEON: matmul_q4).
    void (*matmul_q4_panels)(const PanelBlockQ4* w, const BlockQ8_0* x, float* y, int64_t rows,
                             int64_t cols, int64_t tokens, int64_t y_stride);

    // gate[i] = silu(gate[i]) * up[i], silu(z) = z / (1 + exp_f32(-z)): the SwiGLU of the
    // feed-forward, each element rounded as written on every path.
    void (*swiglu)(float* gate, const float* up, int64_t n);

    // out[t][i] = (x[t][i] * inv_rms_t) * gain[i] for `rows` rows of n values, inv_rms_t =
    // 1 / sqrt(ss_t / n + eps), ss_t the row's sum of squares in matvec_f32's 16-lane order (its
    // dot with itself): the pre-norm of every layer (kernels_scalar.cpp).
    void (*rmsnorm)(const float* x, const float* gain, float* out, int64_t n, int64_t rows,
                    float eps);

    // Softmax attention of one key/value group (AttentionGroup), every key and value read once for
    // all the group's query heads, in the canonical order of kernels_scalar.cpp.
    void (*attend_group)(const AttentionGroup& a);

    // The same over an int8 memory (AttentionGroup's keys_q8 ... weights), in the canonical order
    // of kernels_scalar.cpp: each query head is quantized to int8 (quantize_row_int8, one scale
    // per head), its dot product with a key is an exact integer sum, and the scales are applied
    // once per score; after the softmax each head's weights times the values' scales are quantized
    // to 0 .. 255 (one scale per head), and the value sums are exact integer sums too.
    void (*attend_group_q8)(const AttentionGroup& a);

    // attend_group (attend_group_q8) of every query of an AttentionBlock, each key and value read
    // once for a tile of queries where the path tiles them.
    void (*attend_block)(const AttentionBlock& b);
    void (*attend_block_q8)(const AttentionBlock& b);
};

// Whether a path multiplies by packed panels (of either dtype): a session on it has its model
// pack them (Model::pack_panels) before the first product.
inline bool reads_panels(const KernelTable& t) {
    return t.matmul_q8_0_panels != nullptr || t.matmul_q4_panels != nullptr;
}

// The table the engine uses: chosen once (thread-safe) from the CPU's features, or forced by the
// environment variable SAGE_EDGE_KERNEL=scalar|avx2|avx512vnni|neon|neondot. Forcing a path the
// CPU cannot run (or an unknown name) is an error reported by `select_error()`, e.g.
// "SAGE_EDGE_KERNEL=neon: not available on this CPU (available: scalar, avx2, avx512vnni)";
// `active()` then has nothing to return and must not be used — callers check `select_error()`
// first, or use `try_active()`. (Calling `active()` anyway prints the error and aborts.)
const KernelTable& active();
const char* select_error();       // nullptr when the selection succeeded
const KernelTable* try_active();  // the active table, or nullptr when select_error() is set

// The selection rule behind active(), without the environment: `forced` is a SAGE_EDGE_KERNEL
// value (nullptr or "" picks the best path this CPU runs). Returns nullptr on an unknown or
// unavailable name and, if `error` is not null, stores the message select_error() would give.
const KernelTable* choose(const char* forced, std::string* error);

// Writes the paths compiled into this binary that this CPU can run to out[0..), scalar first and
// best last, at most max_out of them; returns how many it wrote.
int available(const KernelTable** out, int max_out);
const KernelTable* find(const char* name);  // nullptr if unknown or not runnable here

// Human-readable CPU features relevant to the dispatch, e.g. "avx2 fma avx512f avx512bw
// avx512vnni".
const char* cpu_features();

}  // namespace sage::kernels
