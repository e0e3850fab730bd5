// The sampler: a fixed seed gives a fixed token sequence on every machine, and each filter
// (greedy, top-k, top-p, min-p, the grammar mask) keeps exactly the tokens it should.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <new>
#include <vector>

#include "../engine/rng.h"
#include "../engine/sampler.h"
#include "counting_allocator.h"
#include "testing.h"

using sage::Pcg32;
using sage::Sampler;
using sage::SamplingParams;

namespace {

// Logits whose softmax is `probs`.
std::vector<float> logits_of(const std::vector<double>& probs) {
    std::vector<float> logits;
    for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
    return logits;
}

std::vector<int> histogram(Sampler& sampler, const std::vector<float>& logits,
                           const SamplingParams& params, int draws,
                           const uint8_t* allowed = nullptr) {
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits.data(), allowed, params)];
    return counts;
}

double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int draws) {
    double chi2 = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
        const double expected = probs[i] * draws;
        chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
    return chi2;
}

// No filter (the default top_p is 0.95): draws follow the softmax itself.
SamplingParams unfiltered(float temperature = 1.0f) {
    SamplingParams p;
    p.temperature = temperature;
    p.top_p = 1.0f;
    return p;
}

}  // namespace

TEST(pcg32_matches_reference_implementation) {
    // pcg32-demo of pcg-c-basic: pcg32_srandom_r(&rng, 42u, 54u), first six outputs.
    Pcg32 rng(42, 54);
    const uint32_t expected[] = {0xa15c02b7, 0x7b47f409, 0xba1d3330,
                                 0x83d2f293, 0xbfa4784b, 0xcbed606e};
    for (uint32_t e : expected) CHECK_EQ(rng.next_u32(), e);
}

TEST(uniform_floats_lie_in_unit_interval) {
    Pcg32 rng(7);
    for (int i = 0; i < 10000; ++i) {
        const float u = rng.next_float();
        CHECK(u >= 0.0f && u < 1.0f);
    }
}

TEST(fixed_seed_gives_fixed_sequence) {
    // Golden tokens: any change to the RNG, the softmax or the draw changes them, on any machine.
    const std::vector<float> logits = {0.5f, 1.5f, -0.25f, 2.0f, 1.0f, 0.0f, 1.75f, -1.0f};
    Sampler sampler(8, 1234);
    const SamplingParams params = unfiltered(0.9f);  // the golden tokens were drawn unfiltered
    std::vector<int> tokens;
    for (int i = 0; i < 24; ++i) tokens.push_back(sampler.sample(logits.data(), nullptr, params));
    const std::vector<int> golden = {3, 4, 3, 1, 6, 3, 3, 1, 6, 1, 1, 1,
                                     3, 4, 6, 3, 1, 3, 3, 5, 1, 3, 6, 3};
    CHECK(tokens == golden);
    if (tokens != golden) {
        for (int t : tokens) std::fprintf(stderr, "%d, ", t);
        std::fprintf(stderr, "\n");
    }

    // The same seed again, after a reseed, gives the same tokens; another seed does not.
    sampler.reseed(1234);
    std::vector<int> again;
    for (int i = 0; i < 24; ++i) again.push_back(sampler.sample(logits.data(), nullptr, params));
    CHECK(again == tokens);
    Sampler other(8, 1235);
    std::vector<int> different;
    for (int i = 0; i < 24; ++i) different.push_back(other.sample(logits.data(), nullptr, params));
    CHECK(different != tokens);
}

TEST(greedy_is_argmax_with_lowest_id_on_ties) {
    const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 3.0f, -2.0f};
    Sampler sampler(5, 1);
    SamplingParams greedy;
    greedy.temperature = 0;
    for (int i = 0; i < 10; ++i) CHECK_EQ(sampler.sample(logits.data(), nullptr, greedy), 1);
    const uint8_t allowed[] = {1, 0, 1, 1, 1};
    CHECK_EQ(sampler.sample(logits.data(), allowed, greedy), 3);
}

TEST(top_k_one_is_argmax) {
    const std::vector<float> logits = {0.2f, 0.1f, 0.3f, 0.25f};
    Sampler sampler(4, 9);
    SamplingParams params;
    params.top_k = 1;
    params.temperature = 5.0f;  // flat, but top-k 1 leaves only the best
    for (int i = 0; i < 200; ++i) CHECK_EQ(sampler.sample(logits.data(), nullptr, params), 2);
}

TEST(top_k_keeps_the_k_best) {
    const std::vector<float> logits = {0.0f, 0.4f, 0.1f, 0.3f, 0.2f};
    Sampler sampler(5, 3);
    SamplingParams params;
    params.top_k = 2;
    const std::vector<int> counts = histogram(sampler, logits, params, 2000);
    CHECK_EQ(counts[0] + counts[2] + counts[4], 0);
    CHECK(counts[1] > 0 && counts[3] > 0);
}

TEST(top_k_breaks_ties_by_id_and_signed_zeros_tie) {
    // Candidates sort by logit descending, then id: -0 and +0 are the same logit, so the two
    // best of {-0, -0, +0, -1} are ids 0 and 1; +inf ties with the largest finite logit.
    const std::vector<float> zeros = {-0.0f, -0.0f, 0.0f, -1.0f};
    Sampler sampler(4, 5);
    SamplingParams params = unfiltered();
    params.top_k = 2;
    std::vector<int> counts = histogram(sampler, zeros, params, 400);
    CHECK_EQ(counts[2] + counts[3], 0);
    CHECK(counts[0] > 0 && counts[1] > 0);
    const std::vector<float> largest = {1.0f, FLT_MAX, INFINITY, FLT_MAX};
    Sampler other(4, 6);
    counts = histogram(other, largest, params, 400);
    CHECK_EQ(counts[0] + counts[3], 0);
    CHECK(counts[1] > 0 && counts[2] > 0);
}

TEST(candidates_sort_by_logit_then_id) {
    // Step 3's order, seen through the draws: at a temperature so high that every kept weight is
    // exactly 1 (|z| < 1e-20), top_k = m draws candidate floor(u * m) of the order, u the draw's
    // uniform. Logits from a few values (ties; -0 with +0; both signs; exponents far apart, so
    // some bytes of the logits' bits are shared and some not), random masks and sizes.
    const float values[] = {-0.0f, 0.0f, 1.0f, -1.0f, 1.5f, 3.0e5f, -2.5e-3f, 7.0f, 7.000001f};
    Pcg32 pick(99);
    for (int trial = 0; trial < 300; ++trial) {
        const int vocab = 1 + static_cast<int>(pick.next_u32() % 600);
        const int distinct = 1 + static_cast<int>(pick.next_u32() % 9);
        std::vector<float> logits(vocab);
        std::vector<uint8_t> allowed(vocab);
        for (int i = 0; i < vocab; ++i) {
            logits[i] = values[pick.next_u32() % distinct];
            allowed[i] = pick.next_u32() % 4 != 0;
        }
        allowed[pick.next_u32() % vocab] = 1;
        std::vector<int> order;  // the specified order: logit descending, then id ascending
        for (int i = 0; i < vocab; ++i)
            if (allowed[i]) order.push_back(i);
        std::stable_sort(order.begin(), order.end(),
                         [&](int a, int b) { return logits[a] > logits[b]; });
        const uint64_t seed = pick.next_u32();
        Sampler sampler(vocab, seed);
        Pcg32 uniform(seed);
        SamplingParams params = unfiltered(1e30f);
        params.top_k = 2 + static_cast<int>(pick.next_u32() % order.size());
        const int m = std::min<int>(params.top_k, static_cast<int>(order.size()));
        for (int draw = 0; draw < 4; ++draw) {
            const double threshold = static_cast<double>(uniform.next_float()) * m;
            CHECK_EQ(sampler.sample(logits.data(), allowed.data(), params),
                     order[static_cast<size_t>(threshold)]);
        }
    }
}

TEST(tiny_top_p_is_argmax) {
    const std::vector<float> logits = logits_of({0.3, 0.25, 0.45});
    Sampler sampler(3, 11);
    SamplingParams params;
    params.top_p = 1e-6f;
    for (int i = 0; i < 200; ++i) CHECK_EQ(sampler.sample(logits.data(), nullptr, params), 2);
}

TEST(top_p_keeps_the_nucleus) {
    // Sorted: 0.4 (id 3), 0.3 (id 2), 0.2 (id 1), 0.1 (id 0). top_p 0.65 needs 0.4 + 0.3.
    const std::vector<double> probs = {0.1, 0.2, 0.3, 0.4};
    const std::vector<float> logits = logits_of(probs);
    Sampler sampler(4, 5);
    SamplingParams params;
    params.top_p = 0.65f;
    const int draws = 20000;
    const std::vector<int> counts = histogram(sampler, logits, params, draws);
    CHECK_EQ(counts[0] + counts[1], 0);
    // Renormalised over the nucleus: 4/7 and 3/7.
    CHECK(std::abs(counts[3] / double(draws) - 4.0 / 7.0) < 0.02);
}

// top-p keeps the shortest prefix whose mass reaches top_p: with two equal logits and top_p 0.5
// the first alone reaches it exactly (0.5 and 1.0 are exact in binary), so it is always drawn.
TEST(top_p_stops_where_the_mass_reaches_it_exactly) {
    const std::vector<float> logits = {0.25f, 0.25f};
    Sampler sampler(2, 3);
    SamplingParams params;
    params.top_p = 0.5f;
    const std::vector<int> counts = histogram(sampler, logits, params, 2000);
    CHECK_EQ(counts[1], 0);
}

TEST(min_p_drops_tokens_below_a_fraction_of_the_best) {
    // Relative to the best (0.4): 0.3 -> 0.75, 0.2 -> 0.5, 0.1 -> 0.25.
    const std::vector<float> logits = logits_of({0.1, 0.2, 0.3, 0.4});
    Sampler sampler(4, 21);
    SamplingParams params;
    params.min_p = 0.45f;
    const std::vector<int> counts = histogram(sampler, logits, params, 5000);
    CHECK_EQ(counts[0], 0);
    CHECK(counts[1] > 0 && counts[2] > 0 && counts[3] > 0);
}

TEST(draws_follow_the_softmax) {
    const std::vector<double> probs = {0.1, 0.2, 0.3, 0.4};
    const std::vector<float> logits = logits_of(probs);
    Sampler sampler(4, 2024);
    const int draws = 40000;
    // Chi-square with 3 degrees of freedom: 16.27 is its 0.999 quantile.
    CHECK(chi_square(histogram(sampler, logits, unfiltered(), draws), probs, draws) < 16.27);

    // Temperature 2 flattens: softmax(log p / 2) is proportional to sqrt(p).
    const SamplingParams hot = unfiltered(2.0f);
    std::vector<double> flat;
    double total = 0;
    for (double p : probs) total += std::sqrt(p);
    for (double p : probs) flat.push_back(std::sqrt(p) / total);
    CHECK(chi_square(histogram(sampler, logits, hot, draws), flat, draws) < 16.27);
}

TEST(mask_and_unusable_logits_are_never_drawn) {
    const std::vector<float> logits = {5.0f, NAN, -INFINITY, 0.0f, 1.0f, INFINITY};
    const uint8_t allowed[] = {0, 1, 1, 1, 1, 0};
    Sampler sampler(6, 8);
    const std::vector<int> counts = histogram(sampler, logits, SamplingParams{}, 3000, allowed);
    CHECK_EQ(counts[0] + counts[1] + counts[2] + counts[5], 0);
    CHECK(counts[3] > 0 && counts[4] > counts[3]);

    const uint8_t none[] = {0, 0, 0, 0, 0, 0};
    CHECK_EQ(sampler.sample(logits.data(), none, SamplingParams{}), -1);
    const uint8_t only_nan[] = {0, 1, 0, 0, 0, 0};
    CHECK_EQ(sampler.sample(logits.data(), only_nan, SamplingParams{}), 1);
}

TEST(sample_allocates_nothing) {
    std::vector<float> logits(513);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(0.37f * i) * 3.0f;
    std::vector<uint8_t> allowed(logits.size(), 1);
    Sampler sampler(513, 77);
    SamplingParams params;
    params.top_k = 40;
    params.top_p = 0.9f;
    params.min_p = 0.05f;
    sage::testing::allocations = 0;
    sage::testing::counting_allocations = true;
    for (int i = 0; i < 100; ++i) {
        sampler.sample(logits.data(), allowed.data(), params);
        sampler.sample(logits.data(), nullptr, SamplingParams{});
    }
    sage::testing::counting_allocations = false;
    CHECK_EQ(sage::testing::allocations.load(), 0L);
}

SAGE_TEST_MAIN()
