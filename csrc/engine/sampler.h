// Drawing the next token from the logits: temperature, top-k, min-p and top-p, seeded.
//
// The algorithm is fully specified so that a seed gives the same tokens on every machine:
//   1. Candidates are the allowed ids whose logit is not NaN or -inf (+inf counts as FLT_MAX).
//   2. temperature <= 0 (greedy), or top_k == 1: the candidate with the largest logit, the
//      lowest id on ties. No random number is drawn.
//   3. Otherwise z_i = logit_i / temperature, clamped to +-FLT_MAX. Candidates are ordered by
//      logit descending, then id ascending (a total order, so any sort gives the same result);
//      top_k > 0 keeps the first top_k.
//   4. w_i = exp_f32(z_i - z_max) (math.h, never std::exp), so the best candidate has w = 1.
//   5. min_p > 0 keeps the candidates with w_i >= min_p (probability relative to the best).
//   6. top_p < 1 keeps the shortest prefix whose mass reaches top_p of the remaining mass
//      (sums in double, in the order of step 3; at least one candidate survives).
//   7. One uniform u in [0, 1) (PCG32, top 24 bits); the token is the first candidate whose
//      running sum of w exceeds u * (sum of kept w).
// With no candidate at all, sample() returns the lowest allowed id, or -1 if nothing is allowed.
#pragma once

#include <cstdint>
#include <vector>

#include "rng.h"

namespace sage {

// The defaults of every front end (the C API's sage_sampling_default, the Python module's
// DEFAULT_SAMPLING, the CLIs): top_p 0.95 is the setting whose music was measured
// (docs/evaluation.md); 1 lets the model's rare tokens through.
struct SamplingParams {
    float temperature = 1;  // 0 = greedy
    int top_k = 0;          // 0 = off
    float top_p = 0.95f;    // 1 = off
    float min_p = 0;        // 0 = off
};

class Sampler {  // allocates its scratch (vocab-size buffers) in the constructor, nothing after
  public:
    Sampler(int vocab_size, uint64_t seed);
    void reseed(uint64_t seed);
    // logits[V] read-only; allowed[V] (1 = may be drawn), nullptr = all. Returns a token id.
    int sample(const float* logits, const uint8_t* allowed, const SamplingParams& p);

    int vocab_size() const { return vocab_size_; }
    // Scratch bytes per vocabulary entry: order_, spare_ and weight_.
    static constexpr uint64_t kScratchBytesPerToken = 2 * sizeof(uint64_t) + sizeof(float);

  private:
    int argmax(const float* logits, const uint8_t* allowed) const;

    int vocab_size_;
    Pcg32 rng_;
    std::vector<uint64_t> order_;  // candidates' keys (their ids in the low 32 bits), sorted
    std::vector<uint64_t> spare_;  // the radix sort's other half
    std::vector<float> weight_;    // exp(z - z_max) of order_[i]
};

}  // namespace sage
