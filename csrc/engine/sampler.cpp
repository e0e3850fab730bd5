#include "sampler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

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

}  // namespace

Sampler::Sampler(int vocab_size, uint64_t seed)
    : vocab_size_(vocab_size),
      rng_(seed),
      order_(static_cast<size_t>(std::max(vocab_size, 1))),
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

    // 1. Candidates.
    int n = 0;
    for (int i = 0; i < vocab_size_; ++i) {
        if ((!allowed || allowed[i]) && usable(logits[i])) order_[n++] = i;
    }
    if (n == 0) return argmax(logits, allowed);

    // 3. Logit descending, id ascending: a total order, hence one result whatever the sort.
    const auto before = [logits](int32_t a, int32_t b) {
        const float la = finite(logits[a]), lb = finite(logits[b]);
        return la > lb || (la == lb && a < b);
    };
    const int kept_by_k = p.top_k > 0 ? std::min(p.top_k, n) : n;
    if (kept_by_k < n) {
        std::partial_sort(order_.begin(), order_.begin() + kept_by_k, order_.begin() + n, before);
    } else {
        std::sort(order_.begin(), order_.begin() + n, before);
    }
    n = kept_by_k;

    // 4. Weights relative to the best candidate.
    const float z_max = finite(finite(logits[order_[0]]) / p.temperature);
    for (int r = 0; r < n; ++r) {
        const float z = finite(finite(logits[order_[r]]) / p.temperature);
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
        if (running > threshold) return order_[r];
    }
    return order_[n - 1];
}

}  // namespace sage
