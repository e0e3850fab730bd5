// The sampler's random number generator: PCG32 (O'Neill 2014, "XSH RR" output on a 64-bit LCG).
// Integer state only, so a seed gives the same numbers on every compiler and CPU.
#pragma once

#include <cstdint>

namespace sage {

class Pcg32 {
  public:
    explicit Pcg32(uint64_t seed, uint64_t stream = kStream) { reseed(seed, stream); }

    // pcg32_srandom_r(seed, stream) of the reference implementation.
    void reseed(uint64_t seed, uint64_t stream = kStream) {
        state_ = 0;
        increment_ = (stream << 1u) | 1u;
        next_u32();
        state_ += seed;
        next_u32();
    }

    uint32_t next_u32() {
        const uint64_t old = state_;
        state_ = old * kMultiplier + increment_;
        const auto xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
        const auto rotation = static_cast<uint32_t>(old >> 59u);
        return (xorshifted >> rotation) | (xorshifted << ((32u - rotation) & 31u));
    }

    // Uniform in [0, 1): the top 24 bits, so every value is exact in a float.
    float next_float() { return static_cast<float>(next_u32() >> 8) * (1.0f / 16777216.0f); }

    static constexpr uint64_t kStream = 0xda3e39cb94b95bdbull;  // the reference's default stream

  private:
    static constexpr uint64_t kMultiplier = 6364136223846793005ull;
    uint64_t state_ = 0;
    uint64_t increment_ = 0;
};

}  // namespace sage
