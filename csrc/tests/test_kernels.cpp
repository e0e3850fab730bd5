// Every kernel path this CPU runs against the scalar reference: exact integer block sums and
// bit-identical f32 results (memcmp), over random shapes with ragged tails, extremes, zero scales
// and empty rows; plus the dispatch rules.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"
#include "testing.h"

namespace k = sage::kernels;

namespace {

// A small deterministic generator (the same numbers on every platform and standard library).
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint64_t next() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
    }
    int64_t range(int64_t lo, int64_t hi) {  // inclusive
        return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1));
    }
    float uniform(float lo, float hi) {
        return lo + (hi - lo) * static_cast<float>(next() >> 40) / static_cast<float>(1 << 24);
    }
};

std::vector<const k::KernelTable*> paths() {
    const k::KernelTable* t[16];
    const int n = k::available(t, 16);
    return std::vector<const k::KernelTable*>(t, t + n);
}

const k::KernelTable& scalar() {
    return *k::find("scalar");
}

int64_t random_cols(Rng& rng) {
    switch (rng.range(0, 5)) {
        case 0:
            return rng.range(0, 3);
        case 1:
            return 32 * rng.range(1, 34);  // whole blocks
        case 2:
            return 32 * rng.range(0, 34) + 1;  // one element into a new block
        default:
            return rng.range(0, 1100);
    }
}

// A row of floats in one of several regimes: ordinary, wide range, zero blocks, integer ties.
std::vector<float> random_floats(Rng& rng, int64_t n) {
    std::vector<float> x(static_cast<size_t>(n));
    const int mode = static_cast<int>(rng.range(0, 4));
    const float mag = std::ldexp(1.0f, static_cast<int>(rng.range(-20, 20)));
    for (int64_t i = 0; i < n; ++i) {
        float v = rng.uniform(-1.0f, 1.0f) * mag;
        if (mode == 1) v *= std::ldexp(1.0f, static_cast<int>(rng.range(-30, 30)));
        if (mode == 2 && (i / k::kBlockSize) % 2 == 0) v = 0.0f;  // every other block all zero
        if (mode == 3) v = static_cast<float>(rng.range(-254, 254)) * 0.5f;  // exact .5 ties
        if (mode == 4 && i % 7 == 0) v = -v * 1000.0f;
        x[static_cast<size_t>(i)] = v;
    }
    return x;
}

// Q8_0 blocks with random q (pad positions 0) and scales that include 0 and extremes.
std::vector<k::BlockQ8_0> random_q8(Rng& rng, int64_t rows, int64_t cols) {
    const int64_t nb = k::blocks_per_row(cols);
    std::vector<k::BlockQ8_0> w(static_cast<size_t>(rows * nb));
    const int mode = static_cast<int>(rng.range(0, 3));
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
            k::BlockQ8_0& blk = w[static_cast<size_t>(r * nb + b)];
            blk.scale = rng.range(0, 9) == 0 ? 0.0f : rng.uniform(-2.0f, 2.0f);
            for (int i = 0; i < k::kBlockSize; ++i) {
                int q = static_cast<int>(rng.range(-127, 127));
                if (mode == 1) q = rng.range(0, 1) ? 127 : -127;  // extremes
                if (mode == 2) q = 127;
                if (b * k::kBlockSize + i >= cols) q = 0;
                blk.q[i] = static_cast<int8_t>(q);
            }
        }
    }
    return w;
}

std::vector<k::BlockQ4> random_q4(Rng& rng, int64_t rows, int64_t cols) {
    const int64_t nb = k::blocks_per_row(cols);
    std::vector<k::BlockQ4> w(static_cast<size_t>(rows * nb));
    const int mode = static_cast<int>(rng.range(0, 3));
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
            k::BlockQ4& blk = w[static_cast<size_t>(r * nb + b)];
            blk.scale = rng.range(0, 9) == 0 ? 0.0f : rng.uniform(-2.0f, 2.0f);
            for (int i = 0; i < k::kBlockSize / 2; ++i) {
                int lo = static_cast<int>(rng.range(0, 15)),
                    hi = static_cast<int>(rng.range(0, 15));
                if (mode == 1) lo = hi = 0;                     // q = -8 everywhere
                if (mode == 2) lo = hi = 15;                    // q = 7 everywhere
                if (b * k::kBlockSize + 2 * i >= cols) lo = 8;  // padding is q = 0
                if (b * k::kBlockSize + 2 * i + 1 >= cols) hi = 8;
                blk.q[i] = static_cast<uint8_t>(lo | (hi << 4));
            }
        }
    }
    return w;
}

// The reference for one block's integer sum, written here independently of every kernel.
int32_t block_sum_q8(const k::BlockQ8_0& a, const k::BlockQ8_0& b) {
    int32_t s = 0;
    for (int i = 0; i < k::kBlockSize; ++i) s += int32_t{a.q[i]} * int32_t{b.q[i]};
    return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// A ring memory of random keys and values and one group's query heads: the kernel's inputs.
struct AttentionCase {
    int heads, d_head;
    int64_t horizon, first_slot, window, value_stride;
    std::vector<float> q, keys, values, slopes, scores, out;
    // The same memory as int8 elements with a scale per slot (attend_group_q8): random int8 and
    // scales (some zero), not a quantization of keys and values; the keys as quads (kernels.h),
    // their padding random bytes (-128 included), which the scores must not see.
    std::vector<int8_t> keys_q8, values_q8;
    std::vector<float> key_scales, value_scales;
    std::vector<uint8_t> weights;

    AttentionCase(Rng& rng, int heads_, int d_head_, int64_t horizon_)
        : heads(heads_), d_head(d_head_), horizon(horizon_) {
        window = rng.range(0, 3) == 0 ? horizon : rng.range(1, horizon);
        first_slot = rng.range(0, horizon - 1);
        value_stride = d_head + rng.range(0, 2) * 8;
        const float mag = std::ldexp(1.0f, static_cast<int>(rng.range(-3, 3)));
        q = random_floats(rng, int64_t{heads} * d_head);
        for (float& v : q) v = std::fmod(v, 1.0f) * mag;  // scores that need the max shift
        keys = random_floats(rng, d_head * horizon);
        for (float& v : keys) v = std::fmod(v, 4.0f);
        values = random_floats(rng, horizon * value_stride);
        for (int h = 0; h < heads; ++h) slopes.push_back(std::ldexp(1.0f, -(h + 1)));
        scores.assign(size_t(heads * window), NAN);
        out.assign(size_t(heads * d_head) + 1, NAN);
        keys_q8.assign(size_t(k::key_quads(d_head) * horizon * 4), 0);
        for (int64_t i = 0; i < k::key_quads(d_head) * 4; ++i)
            for (int64_t j = 0; j < horizon; ++j)
                keys_q8[size_t(k::key_q8_index(i, j, horizon))] =
                    int8_t(i < d_head ? rng.range(-127, 127) : rng.range(-128, 127));
        // The values as quads of slots (kernels.h), the padding slots random too.
        for (int64_t i = 0; i < (horizon + 3) / 4 * 4 * value_stride; ++i)
            values_q8.push_back(int8_t(rng.range(-127, 127)));
        weights.assign(size_t(k::attention_weights_bytes(heads, horizon)), 0xA5);
        for (int64_t j = 0; j < horizon; ++j) {
            key_scales.push_back(rng.range(0, 9) == 0 ? 0.0f : rng.uniform(0.0f, 0.05f));
            value_scales.push_back(rng.range(0, 9) == 0 ? 0.0f : rng.uniform(0.0f, 0.05f));
        }
    }

    k::AttentionGroup args() {
        k::AttentionGroup a{};
        a.q = q.data();
        a.keys = keys.data();
        a.values = values.data();
        a.value_stride = value_stride;
        a.horizon = horizon;
        a.first_slot = first_slot;
        a.window = window;
        a.slopes = slopes.data();
        a.scale = 1.0f / std::sqrt(float(d_head));
        a.heads = heads;
        a.d_head = d_head;
        a.scores = scores.data();
        a.out = out.data();
        a.keys_q8 = keys_q8.data();
        a.values_q8 = values_q8.data();
        a.key_scales = key_scales.data();
        a.value_scales = value_scales.data();
        a.weights = weights.data();
        return a;
    }
};

// A block of consecutive queries against a memory that does not wrap (AttentionBlock): an
// AttentionCase's memory of `slots` slots, and `tokens` queries whose windows grow up to
// max_window and then slide.
struct AttentionBlockCase {
    AttentionCase memory;
    int64_t tokens, max_window, first_window, first_slot, q_stride, out_stride;

    AttentionBlockCase(Rng& rng, int heads, int d_head, int64_t max_window_, int64_t tokens_)
        : memory(rng, heads, d_head, 1), tokens(tokens_), max_window(max_window_) {
        first_window = rng.range(0, 2) == 0 ? max_window : rng.range(1, max_window);
        first_slot = rng.range(0, 4);
        const int64_t slots = first_slot + first_window + tokens - 1 + rng.range(0, 3);
        memory = AttentionCase(rng, heads, d_head, slots);
        q_stride = int64_t{heads} * d_head + rng.range(0, 2) * 8;
        out_stride = int64_t{heads} * d_head + rng.range(0, 1) * 5;
        memory.q = random_floats(rng, tokens * q_stride);
        const float mag = std::ldexp(1.0f, static_cast<int>(rng.range(-3, 3)));
        for (float& v : memory.q) v = std::fmod(v, 1.0f) * mag;
        memory.scores.assign(size_t(int64_t{heads} * max_window), NAN);
        memory.out.assign(size_t(tokens * out_stride) + 1, NAN);
    }

    k::AttentionBlock args() {
        k::AttentionBlock b{};
        b.first = memory.args();
        b.first.first_slot = first_slot;
        b.first.window = first_window;
        b.tokens = tokens;
        b.q_stride = q_stride;
        b.out_stride = out_stride;
        b.max_window = max_window;
        return b;
    }
};

// One digest of many kernel results over fixed inputs. The expected value was computed on x86-64
// and must come out the same on every architecture and path: this is the cross-platform
// bit-exactness promise (run under qemu-aarch64 in CI).
uint64_t kernel_digest(const k::KernelTable& t) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    auto mix = [&h](const void* p, size_t n) {
        const unsigned char* c = static_cast<const unsigned char*>(p);
        for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 1099511628211ull;
    };
    Rng rng(11);
    for (int trial = 0; trial < 40; ++trial) {
        const int64_t rows = rng.range(1, 40), cols = random_cols(rng);
        const int64_t nb = k::blocks_per_row(cols);
        const auto wf = random_floats(rng, rows * cols);
        const auto xf = random_floats(rng, cols);
        std::vector<k::BlockQ8_0> w8(static_cast<size_t>(rows * nb)), x8(static_cast<size_t>(nb));
        for (int64_t r = 0; r < rows; ++r)
            t.quantize_row_q8_0(wf.data() + r * cols, w8.data() + r * nb, cols);
        t.quantize_row_q8_0(xf.data(), x8.data(), cols);
        mix(w8.data(), w8.size() * sizeof(k::BlockQ8_0));
        mix(x8.data(), x8.size() * sizeof(k::BlockQ8_0));
        const auto w4 = random_q4(rng, rows, cols);
        std::vector<float> y(static_cast<size_t>(rows));
        t.matvec_q8_0(w8.data(), x8.data(), y.data(), rows, cols);
        mix(y.data(), y.size() * sizeof(float));
        t.matvec_q4(w4.data(), x8.data(), y.data(), rows, cols);
        mix(y.data(), y.size() * sizeof(float));
        t.matvec_f32(wf.data(), xf.data(), y.data(), rows, cols);
        mix(y.data(), y.size() * sizeof(float));
        const int64_t tokens = rng.range(1, 9);
        const auto xs = random_q8(rng, tokens, cols);
        std::vector<float> block(static_cast<size_t>(tokens * rows));
        t.matmul_q8_0(w8.data(), xs.data(), block.data(), rows, cols, tokens, rows);
        mix(block.data(), block.size() * sizeof(float));
    }
    for (int trial = 0; trial < 40; ++trial) {
        const int64_t n = rng.range(0, 70);
        auto gate = random_floats(rng, n);
        const auto up = random_floats(rng, n);
        t.swiglu(gate.data(), up.data(), n);
        mix(gate.data(), gate.size() * sizeof(float));
    }
    for (int trial = 0; trial < 40; ++trial) {
        const int64_t rows = rng.range(1, 5), n = rng.range(1, 300);
        const auto x = random_floats(rng, rows * n);
        const auto gain = random_floats(rng, n);
        std::vector<float> out(static_cast<size_t>(rows * n));
        t.rmsnorm(x.data(), gain.data(), out.data(), n, rows, 1e-5f);
        mix(out.data(), out.size() * sizeof(float));
    }
    for (int trial = 0; trial < 40; ++trial) {
        // One draw per statement: the order of a call's arguments differs between compilers.
        const int heads = static_cast<int>(rng.range(1, 9));
        const int d_head = static_cast<int>(rng.range(1, 70));
        const int64_t horizon = rng.range(1, 300);
        AttentionCase c(rng, heads, d_head, horizon);
        t.attend_group(c.args());
        mix(c.out.data(), (c.out.size() - 1) * sizeof(float));  // not the NaN sentinel
        t.attend_group_q8(c.args());
        mix(c.out.data(), (c.out.size() - 1) * sizeof(float));
    }
    for (int trial = 0; trial < 20; ++trial) {
        const int heads = static_cast<int>(rng.range(1, 9));
        const int d_head = static_cast<int>(rng.range(1, 70));
        const int64_t max_window = rng.range(1, 200);
        const int64_t tokens = rng.range(1, 12);
        AttentionBlockCase c(rng, heads, d_head, max_window, tokens);
        t.attend_block(c.args());
        mix(c.memory.out.data(), (c.memory.out.size() - 1) * sizeof(float));
        t.attend_block_q8(c.args());
        mix(c.memory.out.data(), (c.memory.out.size() - 1) * sizeof(float));
    }
    return h;
}

}  // namespace

TEST(scalar_quantize_hand_example) {
    // amax = 254 -> scale = 2, inv = 0.5: ties round to even, the clamp holds at +-127.
    const float x[10] = {254.0f, -254.0f, 3.0f, 5.0f, -1.0f, -3.0f, 1.0f, 7.0f, 0.0f, 100.2f};
    const int8_t want[10] = {127, -127, 2, 2, 0, -2, 0, 4, 0, 50};
    k::BlockQ8_0 y[2];
    std::memset(y, 0x55, sizeof(y));
    scalar().quantize_row_q8_0(x, y, 10);
    CHECK_EQ(y[0].scale, 2.0f);
    for (int i = 0; i < 10; ++i) CHECK_EQ(int{y[0].q[i]}, int{want[i]});
    for (int i = 10; i < k::kBlockSize; ++i) CHECK_EQ(int{y[0].q[i]}, 0);  // zero padding
    CHECK_EQ(int{y[1].q[0]}, 0x55);                                        // one block only

    // An all-zero block: scale 0, every q 0.
    const float z[3] = {0.0f, -0.0f, 0.0f};
    scalar().quantize_row_q8_0(z, y, 3);
    CHECK_EQ(y[0].scale, 0.0f);
    for (int i = 0; i < k::kBlockSize; ++i) CHECK_EQ(int{y[0].q[i]}, 0);
}

TEST(scalar_matvec_matches_definition) {
    Rng rng(7);
    const int64_t rows = 5, cols = 70, nb = k::blocks_per_row(cols);
    const auto w = random_q8(rng, rows, cols);
    const auto x = random_q8(rng, 1, cols);
    std::vector<float> y(rows);
    scalar().matvec_q8_0(w.data(), x.data(), y.data(), rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            int32_t s = 0;
            for (int i = 0; i < k::kBlockSize; ++i) s += w[r * nb + b].q[i] * x[b].q[i];
            const float sc = w[r * nb + b].scale * x[b].scale;
            acc = acc + sc * static_cast<float>(s);
        }
        CHECK_EQ(y[r], acc);
    }
}

TEST(quantize_row_identical_on_every_path) {
    Rng rng(1);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 300; ++trial) {
            const int64_t n = random_cols(rng);
            const auto x = random_floats(rng, n);
            const size_t nb = static_cast<size_t>(k::blocks_per_row(n));
            std::vector<k::BlockQ8_0> a(nb + 1), b(nb + 1);
            std::memset(a.data(), 0x5A, a.size() * sizeof(k::BlockQ8_0));
            std::memset(b.data(), 0x5A, b.size() * sizeof(k::BlockQ8_0));
            scalar().quantize_row_q8_0(x.data(), a.data(), n);
            p->quantize_row_q8_0(x.data(), b.data(), n);
            const bool same = std::memcmp(a.data(), b.data(), a.size() * sizeof(k::BlockQ8_0)) == 0;
            if (!same) std::fprintf(stderr, "path %s, n = %lld\n", p->name, (long long)n);
            CHECK(same);
        }
    }
}

TEST(matvec_q8_0_block_sums_exact_on_every_path) {
    // With one block per row and both scales 1, y[r] = 0 + 1 * float(isum) = isum exactly (it is
    // below 2^24), so each path's integer block sum can be read off and compared to the integer.
    Rng rng(2);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 100; ++trial) {
            const int64_t rows = rng.range(1, 40), cols = rng.range(1, k::kBlockSize);
            auto w = random_q8(rng, rows, cols);
            auto x = random_q8(rng, 1, cols);
            for (auto& blk : w) blk.scale = 1.0f;
            x[0].scale = 1.0f;
            std::vector<float> y(static_cast<size_t>(rows));
            p->matvec_q8_0(w.data(), x.data(), y.data(), rows, cols);
            for (int64_t r = 0; r < rows; ++r)
                CHECK_EQ(y[r], static_cast<float>(block_sum_q8(w[r], x[0])));
        }
        // The extremes: 32 * 127 * 127 and its negative.
        k::BlockQ8_0 w[2], x[1];
        w[0].scale = w[1].scale = x[0].scale = 1.0f;
        for (int i = 0; i < k::kBlockSize; ++i) {
            w[0].q[i] = 127, w[1].q[i] = -127;
            x[0].q[i] = 127;
        }
        float y[2];
        p->matvec_q8_0(w, x, y, 2, k::kBlockSize);
        CHECK_EQ(y[0], 32.0f * 127 * 127);
        CHECK_EQ(y[1], -32.0f * 127 * 127);
    }
}

TEST(matvec_q8_0_bit_identical_on_every_path) {
    Rng rng(3);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 120; ++trial) {
            const int64_t rows = trial < 3 ? trial : rng.range(1, 70);
            const int64_t cols = trial == 3 ? 0 : (trial == 4 ? 1 : random_cols(rng));
            const auto w = random_q8(rng, rows, cols);
            const auto x = random_q8(rng, 1, cols);
            std::vector<float> y0(static_cast<size_t>(rows) + 1, NAN), y1(y0);
            scalar().matvec_q8_0(w.data(), x.data(), y0.data(), rows, cols);
            p->matvec_q8_0(w.data(), x.data(), y1.data(), rows, cols);
            CHECK(std::isnan(y1.back()));  // nothing written past the last row
            y0.pop_back(), y1.pop_back();
            const bool same = same_bits(y0, y1);
            if (!same)
                std::fprintf(stderr, "path %s, %lldx%lld\n", p->name, (long long)rows,
                             (long long)cols);
            CHECK(same);
        }
    }
}

TEST(matvec_q4_bit_identical_on_every_path) {
    Rng rng(4);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 120; ++trial) {
            const int64_t rows = trial < 3 ? trial : rng.range(1, 70);
            const int64_t cols = trial == 3 ? 0 : (trial == 4 ? 1 : random_cols(rng));
            const auto w = random_q4(rng, rows, cols);
            const auto x = random_q8(rng, 1, cols);
            std::vector<float> y0(static_cast<size_t>(rows) + 1, NAN), y1(y0);
            scalar().matvec_q4(w.data(), x.data(), y0.data(), rows, cols);
            p->matvec_q4(w.data(), x.data(), y1.data(), rows, cols);
            CHECK(std::isnan(y1.back()));
            y0.pop_back(), y1.pop_back();
            const bool same = same_bits(y0, y1);
            if (!same)
                std::fprintf(stderr, "path %s, %lldx%lld\n", p->name, (long long)rows,
                             (long long)cols);
            CHECK(same);
        }
    }
}

TEST(matvec_q4_extremes_exact) {
    // Every q = -8 against every x = 127 (and 7 against -127): sums are exact, scales 1.
    for (const k::KernelTable* p : paths()) {
        k::BlockQ4 w[2];
        k::BlockQ8_0 x[1];
        w[0].scale = w[1].scale = x[0].scale = 1.0f;
        for (int i = 0; i < 16; ++i) w[0].q[i] = 0x00, w[1].q[i] = 0xFF;
        for (int i = 0; i < 32; ++i) x[0].q[i] = 127;
        float y[2];
        p->matvec_q4(w, x, y, 2, 32);
        CHECK_EQ(y[0], -8.0f * 127 * 32);
        CHECK_EQ(y[1], 7.0f * 127 * 32);
    }
}

TEST(matvec_f32_bit_identical_on_every_path) {
    Rng rng(5);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 120; ++trial) {
            const int64_t rows = trial < 3 ? trial : rng.range(1, 70);
            const int64_t cols = trial == 3 ? 0 : (trial == 4 ? 1 : random_cols(rng));
            const auto w = random_floats(rng, rows * cols);
            const auto x = random_floats(rng, cols);
            std::vector<float> y0(static_cast<size_t>(rows) + 1, NAN), y1(y0);
            scalar().matvec_f32(w.data(), x.data(), y0.data(), rows, cols);
            p->matvec_f32(w.data(), x.data(), y1.data(), rows, cols);
            CHECK(std::isnan(y1.back()));
            y0.pop_back(), y1.pop_back();
            const bool same = same_bits(y0, y1);
            if (!same)
                std::fprintf(stderr, "path %s, %lldx%lld\n", p->name, (long long)rows,
                             (long long)cols);
            CHECK(same);
        }
    }
}

TEST(matvec_f32_canonical_order) {
    // 17 elements: lane 0 gets elements 0 and 16. Values chosen so another order would differ.
    std::vector<float> w(17, 1.0f), x(17, 0.0f);
    x[0] = 1e8f, x[16] = -1e8f, x[8] = 1.0f, x[1] = 0.5f;
    for (const k::KernelTable* p : paths()) {
        float y = -1.0f;
        p->matvec_f32(w.data(), x.data(), &y, 1, 17);
        CHECK_EQ(y, 1.5f);  // (1e8 + -1e8) exactly 0 in lane 0, then the tree adds 1 and 0.5
    }
}

// Whether product(y) (a block product writing token t's rows at y + t * stride) gives `matvec`
// (a scalar reference) of each token over w's rows, bit for bit; the padding between the rows stays
// NaN on both sides, so memcmp covers it too.
template <typename Block, typename Product>
bool equals_matvec_per_token(const char* path, const Block* w, const std::vector<k::BlockQ8_0>& x,
                             int64_t rows, int64_t cols, int64_t tokens, int64_t stride,
                             void (*matvec)(const Block*, const k::BlockQ8_0*, float*, int64_t,
                                            int64_t),
                             Product&& product) {
    const int64_t nb = k::blocks_per_row(cols);
    std::vector<float> want(static_cast<size_t>(tokens * stride), NAN), got(want);
    for (int64_t t = 0; t < tokens; ++t)
        matvec(w, x.data() + t * nb, want.data() + t * stride, rows, cols);
    product(got.data());
    const bool same = same_bits(want, got);
    if (!same)
        std::fprintf(stderr, "path %s, %lldx%lld, %lld tokens\n", path, (long long)rows,
                     (long long)cols, (long long)tokens);
    return same;
}

TEST(matmul_q8_0_equals_matvec_per_token_on_every_path) {
    // Bit for bit the matvec of each token, on every path: ragged rows and column chunks (past
    // 1 024 columns), token counts around the register groups, an output stride wider than rows.
    Rng rng(8);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 60; ++trial) {
            const int64_t rows = trial < 2 ? trial + 1 : rng.range(1, 40);
            const int64_t cols = trial == 2 ? 0 : (trial == 3 ? 1100 : random_cols(rng));
            const int64_t tokens = rng.range(1, 37), stride = rows + rng.range(0, 3);
            const auto w = random_q8(rng, rows, cols);
            const auto x = random_q8(rng, tokens, cols);
            CHECK(equals_matvec_per_token(p->name, w.data(), x, rows, cols, tokens, stride,
                                          scalar().matvec_q8_0, [&](float* y) {
                                              p->matmul_q8_0(w.data(), x.data(), y, rows, cols,
                                                             tokens, stride);
                                          }));
        }
    }
}

// One packed product against the scalar matvec of the file's layout, token by token, bit for bit:
// w holds skip + rows rows (the computed ones start `skip` rows, a multiple of a panel, in), x the
// tokens' rows; y's rows `stride` floats apart, the padding left NaN on both sides.
template <typename Block, typename Panel>
bool packed_equals_unpacked(const char* path, const std::vector<Block>& w,
                            const std::vector<k::BlockQ8_0>& x, int64_t skip, int64_t rows,
                            int64_t cols, int64_t tokens, int64_t stride,
                            void (*pack)(const Block*, int64_t, int64_t, Panel*),
                            void (*matvec)(const Block*, const k::BlockQ8_0*, float*, int64_t,
                                           int64_t),
                            void (*packed_product)(const Panel*, const k::BlockQ8_0*, float*,
                                                   int64_t, int64_t, int64_t, int64_t)) {
    const int64_t nb = k::blocks_per_row(cols);
    std::vector<Panel> packed(static_cast<size_t>(k::panels_of(skip + rows) * nb));
    pack(w.data(), skip + rows, cols, packed.data());
    return equals_matvec_per_token(path, w.data() + skip * nb, x, rows, cols, tokens, stride,
                                   matvec, [&](float* y) {
                                       packed_product(packed.data() + skip / k::kPanelRows * nb,
                                                      x.data(), y, rows, cols, tokens, stride);
                                   });
}

// x's bytes at +-127 (AVX2's q8_0 pairs of products reach 2 * 127 * 127).
void to_extremes(Rng& rng, std::vector<k::BlockQ8_0>& blocks) {
    for (auto& block : blocks)
        for (auto& q : block.q) q = rng.range(0, 1) ? 127 : -127;
}

TEST(matmul_q8_0_panels_equals_matvec_of_the_unpacked_rows_on_every_path) {
    // The packed kernel against the scalar matvec of the file's layout, bit for bit, on the paths
    // that have it: rows around and past a panel (and a start inside the packed matrix, as a
    // family's key/value rows are), column chunks past 1 024, tokens around the register group
    // and past a chunk of 64, an output stride wider than rows; weights and x at the q extremes.
    Rng rng(9);
    int checked = 0;
    for (const k::KernelTable* p : paths()) {
        if (p->matmul_q8_0_panels == nullptr) continue;
        for (int trial = 0; trial < 60; ++trial) {
            const int64_t rows = trial < 2 ? trial + 1 : rng.range(1, 70);
            const int64_t cols = trial == 2 ? 0 : (trial == 3 ? 1100 : random_cols(rng));
            const int64_t tokens = trial == 4 ? 70 : rng.range(1, 20);
            const int64_t stride = rows + rng.range(0, 3);
            const int64_t skip = rng.range(0, 2) * k::kPanelRows;  // rows before the computed ones
            auto w = random_q8(rng, skip + rows, cols);
            if (trial == 5) to_extremes(rng, w);
            auto x = random_q8(rng, tokens, cols);
            if (trial == 5) to_extremes(rng, x);
            CHECK(packed_equals_unpacked(p->name, w, x, skip, rows, cols, tokens, stride,
                                         k::pack_q8_0_panels, scalar().matvec_q8_0,
                                         p->matmul_q8_0_panels));
            ++checked;
        }
    }
    std::printf("  %d packed products checked\n", checked);
}

TEST(matmul_q4_panels_equals_matvec_q4_of_the_unpacked_rows_on_every_path) {
    // The same for q4 weights: odd row counts around and past a panel and the decode step's
    // groups of panels, columns not a multiple of a block or of a chunk (1 100), single tokens and
    // blocks past a chunk; weights at q = -8 and 7 everywhere (random_q4's modes), x at +-127.
    Rng rng(10);
    int checked = 0;
    for (const k::KernelTable* p : paths()) {
        if (p->matmul_q4_panels == nullptr) continue;
        for (int trial = 0; trial < 80; ++trial) {
            const int64_t rows = trial < 2 ? trial + 1 : 2 * rng.range(0, 35) + 1;
            const int64_t cols = trial == 2 ? 0 : (trial == 3 ? 1100 : random_cols(rng));
            const int64_t tokens = trial == 4 ? 70 : (trial % 3 == 0 ? 1 : rng.range(1, 20));
            const int64_t stride = rows + rng.range(0, 3);
            const int64_t skip = rng.range(0, 2) * k::kPanelRows;
            const auto w = random_q4(rng, skip + rows, cols);
            auto x = random_q8(rng, tokens, cols);
            if (trial % 4 == 1) to_extremes(rng, x);
            CHECK(packed_equals_unpacked(p->name, w, x, skip, rows, cols, tokens, stride,
                                         k::pack_q4_panels, scalar().matvec_q4,
                                         p->matmul_q4_panels));
            ++checked;
        }
    }
    std::printf("  %d packed q4 products checked\n", checked);
}

TEST(matmul_q4_equals_matvec_q4_per_token_on_every_path) {
    // matmul_q4 on the file's layout against the scalar matvec_q4 of each token, bit for bit, on
    // every path: odd row counts around and past a panel of 16 and NEON's groups of 8, no columns,
    // an odd number of whole blocks, ragged tails and 1 100 columns, 1 to 70 tokens, an output
    // stride wider than rows (its padding left NaN); weights at q = -8 and 7 everywhere
    // (random_q4's modes), x at +-127.
    Rng rng(12);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 60; ++trial) {
            const int64_t rows = trial < 2 ? trial + 1 : 2 * rng.range(0, 35) + 1;
            const int64_t cols = trial == 2       ? 0
                                 : trial == 3     ? 1100
                                 : trial % 5 == 4 ? 32 * (2 * rng.range(0, 8) + 1)
                                                  : random_cols(rng);
            const int64_t tokens = trial == 5 ? 70 : (trial % 3 == 0 ? 1 : rng.range(1, 70));
            const int64_t stride = rows + rng.range(0, 3);
            const auto w = random_q4(rng, rows, cols);
            auto x = random_q8(rng, tokens, cols);
            if (trial % 4 == 1) to_extremes(rng, x);
            CHECK(equals_matvec_per_token(p->name, w.data(), x, rows, cols, tokens, stride,
                                          scalar().matvec_q4, [&](float* y) {
                                              p->matmul_q4(w.data(), x.data(), y, rows, cols,
                                                           tokens, stride);
                                          }));
        }
    }
}

TEST(attend_group_bit_identical_on_every_path) {
    // Group sizes around the kernels' head groups, widths that are and are not multiples of the
    // vector widths, windows that wrap around the ring or not, windows of one key; the f32 memory
    // (attend_group) and the int8 one (attend_group_q8).
    using Kernel = void (*k::KernelTable::*)(const k::AttentionGroup&);
    const struct {
        Kernel kernel;
        const char* name;
    } kernels[] = {{&k::KernelTable::attend_group, "attend_group"},
                   {&k::KernelTable::attend_group_q8, "attend_group_q8"}};
    Rng rng(9);
    for (const auto& kernel : kernels) {
        for (const k::KernelTable* p : paths()) {
            for (int trial = 0; trial < 150; ++trial) {
                const int heads = static_cast<int>(rng.range(1, 9));
                const int d_head = trial % 3 == 0 ? 32 : static_cast<int>(rng.range(1, 70));
                const int64_t horizon = trial % 5 == 0 ? 1 : rng.range(1, 300);
                AttentionCase c(rng, heads, d_head, horizon);
                AttentionCase d = c;
                (scalar().*kernel.kernel)(c.args());
                (p->*kernel.kernel)(d.args());
                CHECK(std::isnan(d.out.back()));  // nothing written past the last head
                const bool same = same_bits(c.out, d.out);
                if (!same)
                    std::fprintf(stderr,
                                 "%s, path %s, %d heads x %d, window %lld of %lld from %lld\n",
                                 kernel.name, p->name, heads, d_head, (long long)c.window,
                                 (long long)horizon, (long long)c.first_slot);
                CHECK(same);
            }
        }
    }
}

TEST(attend_block_bit_identical_on_every_path) {
    // Blocks of one query and of several (full tiles and a query left over), windows that grow
    // and windows that slide, widths around the vector widths, f32 and int8 memory: every path's
    // attend_block equals the scalar reference, which is attend_group of each query.
    using Kernel = void (*k::KernelTable::*)(const k::AttentionBlock&);
    const struct {
        Kernel kernel;
        const char* name;
    } kernels[] = {{&k::KernelTable::attend_block, "attend_block"},
                   {&k::KernelTable::attend_block_q8, "attend_block_q8"}};
    Rng rng(17);
    for (const auto& kernel : kernels) {
        for (const k::KernelTable* p : paths()) {
            for (int trial = 0; trial < 80; ++trial) {
                const int heads = trial % 2 == 0 ? 4 : static_cast<int>(rng.range(1, 9));
                const int d_head = trial % 3 == 0 ? 32 : static_cast<int>(rng.range(1, 70));
                const int64_t max_window = trial % 7 == 0 ? 1 : rng.range(1, 300);
                const int64_t tokens = rng.range(1, 20);
                AttentionBlockCase c(rng, heads, d_head, max_window, tokens);
                AttentionBlockCase d = c;
                (scalar().*kernel.kernel)(c.args());
                (p->*kernel.kernel)(d.args());
                CHECK(std::isnan(d.memory.out.back()));  // nothing written past the last query
                const bool same = same_bits(c.memory.out, d.memory.out);
                if (!same)
                    std::fprintf(stderr,
                                 "%s, path %s, %d heads x %d, %lld queries, window %lld/%lld\n",
                                 kernel.name, p->name, heads, d_head, (long long)tokens,
                                 (long long)c.first_window, (long long)max_window);
                CHECK(same);
            }
        }
    }
    // The reference is attend_group of each query: query t's window is the newest
    // min(first_window + t, max_window) keys up to slot first_slot + first_window - 1 + t.
    for (int trial = 0; trial < 30; ++trial) {
        AttentionBlockCase c(rng, 3, 16, rng.range(1, 40), rng.range(1, 10));
        scalar().attend_block(c.args());
        for (int64_t t = 0; t < c.tokens; ++t) {
            AttentionCase one = c.memory;
            k::AttentionGroup a = one.args();
            const int64_t newest = c.first_slot + c.first_window - 1 + t;
            a.window = std::min(c.first_window + t, c.max_window);
            a.first_slot = newest - a.window + 1;
            a.q = one.q.data() + t * c.q_stride;
            a.out = one.out.data();
            scalar().attend_group(a);
            CHECK(std::memcmp(a.out, c.memory.out.data() + t * c.out_stride,
                              size_t(3 * 16) * sizeof(float)) == 0);
        }
    }
}

TEST(attend_group_q8_is_attention_over_the_dequantized_memory) {
    // The scalar int8 reference against attend_group (f32) over the memory it stands for:
    // element * slot scale, each product exact in f32 (int8 times a scale with a short mantissa).
    // The queries are int8 times a power of two with an element of magnitude 127, which
    // quantize_row_int8 reproduces exactly, so the scores differ only by the order of rounding;
    // the value sums differ by the weights' quantization: each weight e_j * vs_j is rounded to a
    // multiple of ws = max_j e_j * vs_j / 255, off by at most ws (half of it, and a rounding near
    // a tie that the scores' last bits move), so output element c is off by at most
    // ws * sum_j |vq_j[c]| / total.
    Rng rng(15);
    for (int trial = 0; trial < 60; ++trial) {
        const int heads = static_cast<int>(rng.range(1, 6));
        const int d_head = static_cast<int>(rng.range(1, 40));
        const int64_t horizon = rng.range(1, 100);
        AttentionCase c(rng, heads, d_head, horizon);
        for (float& s : c.key_scales) s = std::ldexp(std::floor(s * 4096.0f), -12);
        for (float& s : c.value_scales) s = std::ldexp(std::floor(s * 4096.0f), -12);
        for (int h = 0; h < heads; ++h) {
            const float unit = std::ldexp(1.0f, static_cast<int>(rng.range(-9, -5)));
            for (int e = 0; e < d_head; ++e)
                c.q[size_t(h * d_head + e)] =
                    unit * (e == h % d_head ? -127.0f : float(rng.range(-127, 127)));
        }
        auto value_q8 = [&](int64_t slot, int e) {
            return c.values_q8[size_t(k::value_q8_index(e, slot, c.value_stride))];
        };
        for (int e = 0; e < d_head; ++e)
            for (int64_t j = 0; j < horizon; ++j)
                c.keys[e * horizon + j] =
                    c.key_scales[j] * c.keys_q8[size_t(k::key_q8_index(e, j, horizon))];
        for (int64_t j = 0; j < horizon; ++j)
            for (int e = 0; e < d_head; ++e)
                c.values[j * c.value_stride + e] = c.value_scales[j] * value_q8(j, e);
        AttentionCase d = c;
        scalar().attend_group_q8(c.args());
        scalar().attend_group(d.args());  // leaves each head's e_j in d.scores
        float magnitude = 0.0f;
        for (float s : c.value_scales) magnitude = std::max(magnitude, s * 127.0f);
        for (int h = 0; h < heads; ++h) {
            const float* e = d.scores.data() + h * c.window;
            double total = 0.0, wmax = 0.0;
            for (int64_t j = 0; j < c.window; ++j) {
                const int64_t slot = (c.first_slot + j) % horizon;
                total += e[j];
                wmax = std::max(wmax, double(e[j]) * c.value_scales[size_t(slot)]);
            }
            for (int el = 0; el < d_head; ++el) {
                double spread = 0.0;
                for (int64_t j = 0; j < c.window; ++j)
                    spread += std::abs(value_q8((c.first_slot + j) % horizon, el));
                const double bound = wmax / 255.0 * spread / total + 1e-5 * magnitude + 1e-30;
                const size_t i = size_t(h * d_head + el);
                CHECK(std::fabs(double(c.out[i]) - double(d.out[i])) <= bound);
            }
        }
    }
}

TEST(quantize_row_int8_rule) {
    // The ring's quantizer is quantize_row_q8_0's rule over a whole row, written with a stride.
    Rng rng(16);
    for (int trial = 0; trial < 200; ++trial) {
        const int64_t n = rng.range(1, 32);
        const auto x = random_floats(rng, n);
        k::BlockQ8_0 block;
        scalar().quantize_row_q8_0(x.data(), &block, n);
        std::vector<int8_t> q(size_t(n * 3), 99);
        const float scale = k::quantize_row_int8(x.data(), n, q.data(), 3);
        CHECK_EQ(scale, block.scale);
        for (int64_t i = 0; i < n; ++i) {
            CHECK_EQ(int{q[size_t(i * 3)]}, int{block.q[i]});
            CHECK_EQ(int{q[size_t(i * 3 + 1)]}, 99);  // the stride's gaps untouched
        }
    }
}

TEST(quantize_row_int8_identical_on_every_path) {
    // Every path's table entry stores kernels.h's bytes and scale, and those are the rule written
    // out with std::nearbyint (round_half_even_small is its replacement): rows up to the widest
    // head, exact .5 ties (max 127, so the scale is 1), zero rows, tails of every length.
    Rng rng(17);
    for (int trial = 0; trial < 400; ++trial) {
        const int64_t n = std::min<int64_t>(random_cols(rng), k::kMaxHeadWidth);
        auto x = random_floats(rng, n);
        if (trial % 4 == 0 && n > 0) {  // ties: halves up to 127 in magnitude, and 127 itself
            for (int64_t i = 0; i < n; ++i)
                x[size_t(i)] = static_cast<float>(rng.range(-254, 254)) * 0.5f;
            x[size_t(rng.range(0, n - 1))] = trial % 8 == 0 ? 127.0f : -127.0f;
        }
        std::vector<int8_t> want(size_t(n) + 16, 0x5A);
        const float want_scale = k::quantize_row_int8(x.data(), n, want.data(), 1);
        float amax = 0.0f;
        for (float v : x) amax = std::max(amax, std::fabs(v));
        CHECK_EQ(want_scale, amax / 127.0f);
        const float inv = k::inverse_scale(want_scale);
        for (int64_t i = 0; i < n; ++i) {
            const float r = std::nearbyint(x[size_t(i)] * inv);
            CHECK_EQ(int{want[size_t(i)]},
                     static_cast<int>(std::max(-127.0f, std::min(127.0f, r))));
        }
        for (const k::KernelTable* p : paths()) {
            std::vector<int8_t> got(size_t(n) + 16, 0x5A);
            const float scale = p->quantize_row_int8(x.data(), n, got.data());
            CHECK_EQ(scale, want_scale);
            const bool same = got == want;  // the 16 bytes past n untouched too
            if (!same) std::fprintf(stderr, "path %s, n = %lld\n", p->name, (long long)n);
            CHECK(same);
        }
    }
}

TEST(attend_group_matches_softmax_attention) {
    // The scalar reference against softmax attention computed here in double: same window, same
    // ALiBi distances, oldest key in first_slot.
    Rng rng(10);
    for (int trial = 0; trial < 40; ++trial) {
        const int heads = static_cast<int>(rng.range(1, 6));
        const int d_head = static_cast<int>(rng.range(1, 40));
        const int64_t horizon = rng.range(1, 100);
        AttentionCase c(rng, heads, d_head, horizon);
        scalar().attend_group(c.args());
        for (int h = 0; h < c.heads; ++h) {
            std::vector<double> s(static_cast<size_t>(c.window));
            double top = -INFINITY, total = 0.0;
            for (int64_t j = 0; j < c.window; ++j) {
                const int64_t slot = (c.first_slot + j) % c.horizon;
                double dot = 0.0;
                for (int e = 0; e < c.d_head; ++e)
                    dot += double(c.q[h * c.d_head + e]) * c.keys[e * c.horizon + slot];
                s[j] = dot / std::sqrt(double(c.d_head)) - c.slopes[h] * double(c.window - 1 - j);
                top = std::max(top, s[j]);
            }
            for (double& v : s) total += (v = std::exp(v - top));
            for (int e = 0; e < c.d_head; ++e) {
                double o = 0.0, scale = 0.0;
                for (int64_t j = 0; j < c.window; ++j) {
                    const double v =
                        c.values[((c.first_slot + j) % c.horizon) * c.value_stride + e];
                    o += s[j] * v / total;
                    scale += s[j] * std::fabs(v) / total;
                }
                CHECK(std::fabs(c.out[h * c.d_head + e] - o) <= 1e-5 * (scale + 1e-30) + 1e-37);
            }
        }
    }
}

TEST(exp_f32_vector_lanes_match_scalar) {
    // The attention kernels' vector exp against kernels.h's exp_f32 over the softmax's domain
    // (x <= 0, past the -87 cutoff): with q = 0 the 16 weights of a window are exactly
    // exp_f32(-(slope * distance)), the newest key's being exp_f32(0) = 1.
    Rng rng(12);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 500; ++trial) {
            const float slope = rng.uniform(0.0f, 7.0f);
            float q[1] = {0.0f}, keys[16] = {}, values[16] = {}, scores[16], out[1];
            k::AttentionGroup a{};
            a.q = q, a.keys = keys, a.values = values, a.value_stride = 1, a.horizon = 16;
            a.window = 16, a.slopes = &slope, a.scale = 1.0f, a.heads = a.d_head = 1;
            a.scores = scores, a.out = out;
            p->attend_group(a);
            for (int j = 0; j < 16; ++j)
                CHECK_EQ(scores[j], k::exp_f32(-(slope * static_cast<float>(15 - j))));
        }
    }
}

TEST(swiglu_bit_identical_on_every_path) {
    // Ragged lengths (past 8 vectors of 16 lanes, the kernels' widest step), gates from tiny to
    // past the exp cutoffs (|z| > 87), signed zeros; the scalar reference within float rounding
    // of z * sigmoid(z) * up in double where exp_f32 does not clamp.
    Rng rng(13);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 100; ++trial) {
            const int64_t n = rng.range(0, 300);
            auto gate = random_floats(rng, n);
            const auto up = random_floats(rng, n);
            for (int64_t i = 0; i + 2 < n; i += 97)
                gate[i] = -0.0f, gate[i + 1] = 100.0f, gate[i + 2] = -100.0f;
            auto want = gate, got = gate;
            scalar().swiglu(want.data(), up.data(), n);
            p->swiglu(got.data(), up.data(), n);
            CHECK(same_bits(want, got));
            for (int64_t i = 0; i < n; ++i) {
                const double z = gate[i], exact = z / (1.0 + std::exp(-z)) * up[i];
                if (std::fabs(z) > 80.0 || !(std::fabs(exact) < 1e38)) continue;  // exp clamps
                CHECK(std::fabs(want[i] - exact) <= 1e-6 * std::fabs(exact) + 1e-38);
            }
        }
    }
}

TEST(rmsnorm_bit_identical_on_every_path) {
    // Ragged widths (tails of every length of 16 and 8 lanes), several rows, inputs from tiny to
    // overflowing the sum of squares; the scalar reference within float rounding of the double
    // rmsnorm where the sum is finite.
    Rng rng(17);
    for (const k::KernelTable* p : paths()) {
        for (int trial = 0; trial < 100; ++trial) {
            const int64_t rows = rng.range(1, 9);
            const int64_t n = trial < 40 ? trial + 1 : rng.range(1, 1100);
            const auto x = random_floats(rng, rows * n);
            const auto gain = random_floats(rng, n);
            const float eps = trial % 2 ? 1e-5f : 1e-6f;
            std::vector<float> want(static_cast<size_t>(rows * n) + 1, NAN), got(want);
            scalar().rmsnorm(x.data(), gain.data(), want.data(), n, rows, eps);
            p->rmsnorm(x.data(), gain.data(), got.data(), n, rows, eps);
            CHECK(std::isnan(got.back()));
            if (!same_bits(want, got))
                std::fprintf(stderr, "path %s, %lld rows of %lld\n", p->name, (long long)rows,
                             (long long)n);
            CHECK(same_bits(want, got));
            for (int64_t t = 0; t < rows; ++t) {
                double ss = 0;
                for (int64_t i = 0; i < n; ++i) ss += double(x[t * n + i]) * x[t * n + i];
                if (!(ss < 1e37) || ss / n < 1e-30) continue;  // overflow, or eps dominates
                const double inv = 1.0 / std::sqrt(ss / n + eps);
                for (int64_t i = 0; i < n; ++i) {
                    const double exact = x[t * n + i] * inv * gain[i];
                    if (std::fabs(exact) < 1e-30) continue;  // subnormal results
                    CHECK(std::fabs(want[t * n + i] - exact) <= 1e-5 * std::fabs(exact));
                }
            }
        }
    }
}

TEST(rmsnorm_sums_squares_in_the_canonical_order) {
    // 4096² = 2^24 first, then ones: added one by one, each 1 rounds away (2^24 + 1 is a tie to
    // even), but in matvec_f32's 16 lanes the ones pair up first and the sum is 2^24 + 30.
    constexpr int64_t n = 32;
    std::vector<float> x(n, 1.0f), gain(n, 1.0f);
    x[0] = 4096.0f, x[16] = 0.0f;
    const float eps = 1e-5f;
    const float lanes = 16777216.0f + 30.0f, one_by_one = 16777216.0f;
    const float inv_rms = 1.0f / std::sqrt(lanes / static_cast<float>(n) + eps);
    CHECK(inv_rms != 1.0f / std::sqrt(one_by_one / static_cast<float>(n) + eps));
    for (const k::KernelTable* p : paths()) {
        std::vector<float> out(n);
        p->rmsnorm(x.data(), gain.data(), out.data(), n, 1, eps);
        for (int64_t i = 0; i < n; ++i) CHECK_EQ(out[i], (x[i] * inv_rms) * gain[i]);
    }
}

TEST(same_digest_on_every_architecture) {
    constexpr uint64_t kExpected = 0x9ef2a5e0c251ef21ull;
    for (const k::KernelTable* p : paths()) {
        const uint64_t d = kernel_digest(*p);
        if (d != kExpected) std::printf("  %s digest: 0x%016llx\n", p->name, (unsigned long long)d);
        CHECK(d == kExpected);
    }
}

TEST(dispatch_rules) {
    const auto all = paths();
    CHECK(!all.empty());
    CHECK_EQ(std::string(all.front()->name), std::string("scalar"));

    std::string err;
    const k::KernelTable* best = k::choose(nullptr, &err);
    CHECK(best == all.back());
    CHECK(k::choose("", &err) == all.back());
    for (const k::KernelTable* p : all) {
        CHECK(k::choose(p->name, &err) == p);
        CHECK(k::find(p->name) == p);
    }

    err.clear();
    CHECK(k::choose("bogus", &err) == nullptr);
    CHECK(err.find("SAGE_EDGE_KERNEL=bogus: unknown kernel path (available: scalar") == 0);
    CHECK(k::find("bogus") == nullptr);

    for (const char* name : {"scalar", "avx2", "avx512vnni", "neon", "neondot"}) {
        if (k::find(name) != nullptr) continue;
        err.clear();
        CHECK(k::choose(name, &err) == nullptr);
        CHECK(err == std::string("SAGE_EDGE_KERNEL=") + name + ": not available on this CPU" +
                         err.substr(err.find(" (available: ")));
        std::printf("  %s\n", err.c_str());
    }

    const k::KernelTable* one[1];
    CHECK_EQ(k::available(one, 1), 1);
    CHECK(one[0] == all.front());
    CHECK(k::cpu_features() != nullptr);
    std::printf("  cpu features: %s\n", k::cpu_features());
}

TEST(dispatch_active_path) {
    const char* forced = std::getenv("SAGE_EDGE_KERNEL");
    const char* expect = std::getenv("SAGE_EDGE_EXPECT_KERNEL");
    if (k::select_error() != nullptr) {
        std::printf("  selection error: %s\n", k::select_error());
        CHECK(forced != nullptr);  // only a forced path can fail
        CHECK(k::try_active() == nullptr);
        CHECK(expect == nullptr);
        return;
    }
    const k::KernelTable& a = k::active();
    CHECK(k::try_active() == &a);
    std::printf("  active: %s\n", a.name);
    if (forced != nullptr && forced[0] != '\0') CHECK_EQ(std::string(a.name), std::string(forced));
    if (expect != nullptr) CHECK_EQ(std::string(a.name), std::string(expect));
}

SAGE_TEST_MAIN()
