#include "sampler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "math.h"

namespace sage {

namespace {

// A logit as the sampler sees it: NaN and -inf cannot be drawn, +inf is the largest finite value.
bool usable(float logit) {
    return !std::isnan(logit) && logit != -INFINITY;
}
float finite(float x) {
    return std::min(std::max(x, -FLT_MAX), FLT_MAX);
}

// A candidate as one integer: sorting these ascending orders the candidates by logit descending
// (finite() first; -0 and +0 are one value), then by id ascending. The float's bits as an unsigned
// integer sort like the floats once a negative has every bit flipped and a positive its sign bit;
// all flipped again, descending.
uint64_t candidate_key(float logit, int id) {
    const float x = finite(logit) + 0.0f;  // -0 + 0 = +0
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const uint32_t ascending = (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
    return (uint64_t{~ascending} << 32) | static_cast<uint32_t>(id);
}

int32_t candidate_id(uint64_t key) {
    return static_cast<int32_t>(key & 0xFFFFFFFFu);
}

// Sorts keys[0 .. n) ascending by their logit's 32 bits, keys of one logit in the order given
// (gathered by id, so by id ascending): candidate_key's total order. Least significant byte
// first, one stable counting pass per byte through `spare`, a byte that every key shares
// skipped (the sign and exponent bits of nearby logits).
void radix_sort(uint64_t* keys, uint64_t* spare, int n) {
    uint32_t count[4][256] = {};
    for (int i = 0; i < n; ++i)
        for (int b = 0; b < 4; ++b) ++count[b][(keys[i] >> (32 + 8 * b)) & 0xFF];
    uint64_t* from = keys;
    uint64_t* to = spare;
    for (int b = 0; b < 4; ++b) {
        const int shift = 32 + 8 * b;
        if (count[b][(from[0] >> shift) & 0xFF] == static_cast<uint32_t>(n)) continue;
        uint32_t start = 0;
        for (uint32_t& c : count[b]) {
            const uint32_t keys_here = c;
            c = start;
            start += keys_here;
        }
        for (int i = 0; i < n; ++i) to[count[b][(from[i] >> shift) & 0xFF]++] = from[i];
        std::swap(from, to);
    }
    if (from != keys) std::copy(from, from + n, keys);
}

}  // namespace

Sampler::Sampler(int vocab_size, uint64_t seed)
    : vocab_size_(vocab_size),
      rng_(seed),
      order_(static_cast<size_t>(std::max(vocab_size, 1))),
      spare_(order_.size()),
      weight_(static_cast<size_t>(std::max(vocab_size, 1))) {}

void Sampler::reseed(uint64_t seed) {
    rng_.reseed(seed);
}

int Sampler::argmax(const float* logits, const uint8_t* allowed) const {
    int best = -1;
    float best_logit = 0;
    int first_allowed = -1;
    for (int i = 0; i < vocab_size_; ++i) {
        if (allowed && !allowed[i]) continue;
        if (first_allowed < 0) first_allowed = i;
        if (!usable(logits[i])) continue;
        const float logit = finite(logits[i]);
        if (best < 0 || logit > best_logit) {  // strict: the lowest id wins a tie
            best = i;
            best_logit = logit;
        }
    }
    return best >= 0 ? best : first_allowed;
}

int Sampler::sample(const float* logits, const uint8_t* allowed, const SamplingParams& p) {
    if (!(p.temperature > 0) || p.top_k == 1) return argmax(logits, allowed);

    // 1. Candidates, as keys (candidate_key). Without branches: the grammar's mask is irregular.
    int n = 0;
    for (int i = 0; i < vocab_size_; ++i) {
        order_[n] = candidate_key(logits[i], i);
        n += static_cast<int>((allowed == nullptr || allowed[i] != 0) & usable(logits[i]));
    }
    if (n == 0) return argmax(logits, allowed);

    // 3. Logit descending, id ascending: a total order, hence one result whatever the sort (the
    // keys sort as integers, by radix: no comparison at all).
    radix_sort(order_.data(), spare_.data(), n);
    if (p.top_k > 0) n = std::min(p.top_k, n);

    // 4. Weights relative to the best candidate.
    const float z_max = finite(finite(logits[candidate_id(order_[0])]) / p.temperature);
    for (int r = 0; r < n; ++r) {
        const float z = finite(finite(logits[candidate_id(order_[r])]) / p.temperature);
        weight_[r] = exp_f32(z - z_max);
    }

    // 5. min-p: weights are probabilities relative to the best one, and they are sorted.
    if (p.min_p > 0) {
        int kept = 1;
        while (kept < n && weight_[kept] >= p.min_p) ++kept;
        n = kept;
    }

    // 6. top-p over what is left.
    double total = 0;
    for (int r = 0; r < n; ++r) total += weight_[r];
    if (p.top_p < 1) {
        const double target = static_cast<double>(p.top_p) * total;
        double mass = 0;
        int kept = 0;
        while (kept < n) {
            mass += weight_[kept++];
            if (mass >= target) break;
        }
        n = kept;
        total = mass;
    }

    // 7. One uniform draw.
    const double threshold = static_cast<double>(rng_.next_float()) * total;
    double running = 0;
    for (int r = 0; r < n; ++r) {
        running += weight_[r];
        if (running > threshold) return candidate_id(order_[r]);
    }
    return candidate_id(order_[n - 1]);
}

}  // namespace sage
