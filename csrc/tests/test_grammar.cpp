// The REMI+ grammar mask, checked against real token streams from sage_edge.tokenizer (Bach
// chorales, and a drum + tempo-change + meter-change piece; data/remi_fixtures.h): every real
// token is allowed where it occurs, and the mask forbids what would make the stream undecodable.
#include <cstdlib>
#include <new>
#include <vector>

#include "../engine/detokenizer.h"
#include "../engine/grammar.h"
#include "../engine/sampler.h"
#include "counting_allocator.h"
#include "data/remi_fixtures.h"
#include "testing.h"

using sage::Family;
using sage::Grammar;
using sage::Kind;
using sage::TokenInfo;

namespace {

// The tokenizer's vocabulary as the engine sees it.
const std::vector<TokenInfo>& vocab() {
    static const std::vector<TokenInfo> table = [] {
        std::vector<TokenInfo> t;
        for (const fixtures::Entry& e : fixtures::kVocab) {
            t.push_back({static_cast<Family>(e.family), static_cast<Kind>(e.kind), e.a, e.b});
        }
        return t;
    }();
    return table;
}

Grammar make_grammar() {
    return Grammar(vocab().data(), fixtures::kVocabSize, fixtures::kTicksPerQuarter);
}

// The id of the token of this kind and value (a), or -1.
int id_of(Kind kind, int32_t a = 0, int32_t b = 0) {
    for (int i = 0; i < fixtures::kVocabSize; ++i) {
        const TokenInfo& t = vocab()[i];
        if (t.kind == kind && t.a == a && (kind != Kind::TimeSig || t.b == b)) return i;
    }
    return -1;
}

bool allows(const Grammar& g, int token) {
    std::vector<uint8_t> mask(fixtures::kVocabSize);
    g.allowed(mask.data());
    return mask[token] != 0;
}

bool allows_any_of(const Grammar& g, Kind kind) {
    std::vector<uint8_t> mask(fixtures::kVocabSize);
    g.allowed(mask.data());
    for (int i = 0; i < fixtures::kVocabSize; ++i) {
        if (mask[i] && vocab()[i].kind == kind) return true;
    }
    return false;
}

void accept_all(Grammar& g, const std::vector<int>& tokens) {
    for (int t : tokens) g.accept(t);
}

// Walks a real stream and returns the index of the first token the mask forbids, or -1.
template <size_t N>
int first_forbidden(Grammar& g, const int32_t (&tokens)[N]) {
    std::vector<uint8_t> mask(fixtures::kVocabSize);
    for (size_t i = 0; i < N; ++i) {
        g.allowed(mask.data());
        if (!mask[tokens[i]]) return static_cast<int>(i);
        g.accept(tokens[i]);
    }
    return -1;
}

}  // namespace

TEST(every_real_token_is_allowed_where_it_occurs) {
    Grammar g = make_grammar();
    CHECK_EQ(first_forbidden(g, fixtures::k_bwv66_6_tokens), -1);
    g.reset();
    CHECK_EQ(first_forbidden(g, fixtures::k_bwv269_tokens), -1);
    g.reset();
    CHECK_EQ(first_forbidden(g, fixtures::k_band_tokens), -1);

    // After a BOS too.
    g.reset();
    CHECK(allows(g, id_of(Kind::Bos)));
    g.accept(id_of(Kind::Bos));
    CHECK(!allows(g, id_of(Kind::Bos)));
    CHECK_EQ(first_forbidden(g, fixtures::k_bwv269_tokens), -1);
}

TEST(start_allows_only_bos_and_bar) {
    Grammar g = make_grammar();
    std::vector<uint8_t> mask(fixtures::kVocabSize);
    g.allowed(mask.data());
    for (int i = 0; i < fixtures::kVocabSize; ++i) {
        const Kind k = vocab()[i].kind;
        CHECK_EQ(mask[i] != 0, k == Kind::Bos || k == Kind::Bar);
    }
}

TEST(note_attributes_come_in_order) {
    Grammar g = make_grammar();
    const int bar = id_of(Kind::Bar), four_four = id_of(Kind::TimeSig, 4, 4);
    g.accept(bar);
    CHECK(!allows_any_of(g, Kind::Pitch));  // no Pitch after Bar
    CHECK(!allows_any_of(g, Kind::Position));
    CHECK(allows(g, four_four));
    g.accept(four_four);
    CHECK(!allows_any_of(g, Kind::Velocity));
    g.accept(id_of(Kind::Position, 0));
    CHECK(!allows_any_of(g, Kind::Pitch));     // Program first
    CHECK(!allows_any_of(g, Kind::Velocity));  // no Velocity without Pitch
    CHECK(allows_any_of(g, Kind::Tempo));
    g.accept(id_of(Kind::Program, 52));
    CHECK(allows_any_of(g, Kind::Pitch));
    CHECK(!allows_any_of(g, Kind::PitchDrum));
    CHECK(!allows_any_of(g, Kind::Velocity));
    CHECK(!allows_any_of(g, Kind::Position));
    g.accept(id_of(Kind::Pitch, 60));
    CHECK(allows_any_of(g, Kind::Velocity));
    CHECK(!allows_any_of(g, Kind::Duration));
    g.accept(id_of(Kind::Velocity, 95));
    CHECK(allows_any_of(g, Kind::Duration));
    CHECK(!allows_any_of(g, Kind::Pitch));
    g.accept(id_of(Kind::Duration, 12));
    CHECK(allows_any_of(g, Kind::Program));
    CHECK(allows(g, bar));
    CHECK(!allows_any_of(g, Kind::Velocity));
    CHECK(!allows_any_of(g, Kind::Tempo));  // a Tempo belongs right after its Position

    // Drums take PitchDrum.
    g.accept(id_of(Kind::Program, -1));
    CHECK(allows_any_of(g, Kind::PitchDrum));
    CHECK(!allows_any_of(g, Kind::Pitch));
}

TEST(positions_rise_within_the_bar_and_stay_inside_it) {
    Grammar g = make_grammar();
    accept_all(g, {id_of(Kind::Bar), id_of(Kind::TimeSig, 4, 4), id_of(Kind::Position, 24),
                   id_of(Kind::Program, 40), id_of(Kind::Pitch, 60), id_of(Kind::Velocity, 95),
                   id_of(Kind::Duration, 12)});
    CHECK(!allows(g, id_of(Kind::Position, 12)));
    CHECK(!allows(g, id_of(Kind::Position, 24)));
    CHECK(allows(g, id_of(Kind::Position, 25)));
    CHECK(allows(g, id_of(Kind::Position, 47)));
    CHECK(!allows(g, id_of(Kind::Position, 48)));  // a 4/4 bar is 48 ticks at 12 per quarter

    // A new bar starts the positions over; a 3/4 bar is 36 ticks.
    accept_all(g, {id_of(Kind::Bar), id_of(Kind::TimeSig, 3, 4)});
    CHECK_EQ(g.bar_ticks(), 36);
    CHECK(allows(g, id_of(Kind::Position, 0)));
    CHECK(allows(g, id_of(Kind::Position, 35)));
    CHECK(!allows(g, id_of(Kind::Position, 36)));
}

// Bar lengths are computed in 64 bits: a huge ticks_per_quarter (2^30, where 4 · tpq overflows a
// 32-bit int) gives a positive bar of at most INT32_MAX ticks, not undefined behaviour.
TEST(bar_length_of_a_huge_ticks_per_quarter_does_not_overflow) {
    Grammar g(vocab().data(), fixtures::kVocabSize, 1 << 30);
    CHECK_EQ(g.bar_ticks(), INT32_MAX);
    accept_all(g, {id_of(Kind::Bar), id_of(Kind::TimeSig, 1, 4)});
    CHECK_EQ(g.bar_ticks(), 1 << 30);  // 1 · 4 · 2^30 / 4
    accept_all(g, {id_of(Kind::Bar), id_of(Kind::TimeSig, 6, 4)});
    CHECK_EQ(g.bar_ticks(), INT32_MAX);  // 6 · 2^30 does not fit: the 4/4 fallback, clamped
}

TEST(program_restriction) {
    Grammar g = make_grammar();
    const int32_t satb[] = {52, 42};
    g.set_allowed_programs(satb, 2);
    CHECK(g.any_program_allowed());
    accept_all(g, {id_of(Kind::Bar), id_of(Kind::TimeSig, 4, 4), id_of(Kind::Position, 0)});
    std::vector<uint8_t> mask(fixtures::kVocabSize);
    g.allowed(mask.data());
    for (int i = 0; i < fixtures::kVocabSize; ++i) {
        if (vocab()[i].kind != Kind::Program) continue;
        CHECK_EQ(mask[i] != 0, vocab()[i].a == 52 || vocab()[i].a == 42);
    }
    // A prompt may still use other programs; the grammar follows it.
    g.accept(id_of(Kind::Program, 0));
    CHECK(allows_any_of(g, Kind::Pitch));

    const int32_t drums[] = {-1};
    g.set_allowed_programs(drums, 1);
    g.reset();
    accept_all(g, {id_of(Kind::Bar), id_of(Kind::TimeSig, 4, 4), id_of(Kind::Position, 0)});
    CHECK(allows(g, id_of(Kind::Program, -1)));
    CHECK(!allows(g, id_of(Kind::Program, 0)));

    const int32_t none_in_vocab[] = {200};
    g.set_allowed_programs(none_in_vocab, 1);
    CHECK(!g.any_program_allowed());
    g.set_allowed_programs(nullptr, 0);
    CHECK(g.any_program_allowed());
    CHECK(allows(g, id_of(Kind::Program, 0)));
}

TEST(eos_only_when_enabled_and_after_a_note) {
    Grammar g = make_grammar();
    const int eos = id_of(Kind::Eos);
    const std::vector<int> note = {id_of(Kind::Bar),         id_of(Kind::TimeSig, 4, 4),
                                   id_of(Kind::Position, 0), id_of(Kind::Program, 0),
                                   id_of(Kind::Pitch, 60),   id_of(Kind::Velocity, 95),
                                   id_of(Kind::Duration, 12)};
    accept_all(g, note);
    CHECK(!allows(g, eos));
    g.set_allow_eos(true);
    CHECK(allows(g, eos));
    g.accept(id_of(Kind::Bar));
    CHECK(!allows(g, eos));
    g.accept(eos);  // a new piece may follow
    CHECK(allows(g, id_of(Kind::Bos)));
    CHECK(allows(g, id_of(Kind::Bar)));
    CHECK(!allows_any_of(g, Kind::Position));
}

TEST(pad_and_mask_are_never_allowed) {
    Grammar g = make_grammar();
    const int pad = id_of(Kind::Pad), mask_token = id_of(Kind::Mask);
    for (int32_t t : fixtures::k_band_tokens) {
        CHECK(!allows(g, pad));
        CHECK(!allows(g, mask_token));
        g.accept(t);
    }
}

TEST(any_prompt_is_accepted_and_the_mask_never_empties) {
    Grammar g = make_grammar();
    std::vector<uint8_t> mask(fixtures::kVocabSize);
    uint64_t state = 12345;
    for (int i = 0; i < 5000; ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        const int token = static_cast<int>(state >> 40) % (fixtures::kVocabSize + 20) - 10;
        g.accept(token);  // garbage, out of range included
        g.allowed(mask.data());
        int allowed = 0;
        for (uint8_t m : mask) allowed += m;
        CHECK(allowed > 0);
    }
}

TEST(sampling_under_the_mask_gives_decodable_music) {
    // Random logits, masked draws: every Pitch becomes a note, onsets never go back in time.
    Grammar g = make_grammar();
    sage::Detokenizer detokenizer(vocab().data(), fixtures::kVocabSize, fixtures::kTicksPerQuarter);
    sage::Sampler sampler(fixtures::kVocabSize, 99);
    std::vector<float> logits(fixtures::kVocabSize);
    std::vector<uint8_t> mask(fixtures::kVocabSize);
    uint64_t state = 7;
    int pitches = 0, notes = 0, bars = 0;
    double last_onset = 0;
    sage::testing::allocations = 0;
    sage::testing::counting_allocations = true;
    for (int step = 0; step < 20000; ++step) {
        for (float& l : logits) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            l = static_cast<float>(state >> 40) / 16777216.0f * 4.0f;
        }
        g.allowed(mask.data());
        const int token = sampler.sample(logits.data(), mask.data(), sage::SamplingParams{});
        g.accept(token);
        const Kind kind = vocab()[token].kind;
        pitches += kind == Kind::Pitch || kind == Kind::PitchDrum;
        bars += kind == Kind::Bar;
        sage::NoteEvent note;
        if (detokenizer.push(token, &note)) {
            ++notes;
            CHECK(note.time >= last_onset);
            last_onset = note.time;
        }
    }
    sage::testing::counting_allocations = false;
    CHECK_EQ(sage::testing::allocations.load(), 0L);
    CHECK(notes > 1000);
    CHECK(notes >= pitches - 1);  // the last note may be unfinished
    CHECK(bars > 10);
    CHECK_EQ(detokenizer.bars(), static_cast<uint64_t>(bars));
}

SAGE_TEST_MAIN()
