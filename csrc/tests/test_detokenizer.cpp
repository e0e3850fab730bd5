// The detokenizer turns token streams into the same notes miditok decodes from them (real streams
// from sage_edge.tokenizer with miditok's own decoding: data/remi_fixtures.h), and a hand-built
// stream into the notes worked out by hand.
#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#include "../engine/detokenizer.h"
#include "data/remi_fixtures.h"
#include "testing.h"

using sage::Detokenizer;
using sage::Family;
using sage::Kind;
using sage::NoteEvent;
using sage::TokenInfo;

namespace {

constexpr double kTpq = fixtures::kTicksPerQuarter;

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

int id_of(Kind kind, int32_t a = 0, int32_t b = 0) {
    for (int i = 0; i < fixtures::kVocabSize; ++i) {
        const TokenInfo& t = vocab()[i];
        if (t.kind == kind && t.a == a && (kind != Kind::TimeSig || t.b == b)) return i;
    }
    return -1;
}

using NoteKey = std::tuple<double, double, int32_t, int32_t, int32_t>;

std::vector<NoteKey> decode(Detokenizer& d, const std::vector<int>& tokens) {
    std::vector<NoteKey> notes;
    NoteEvent e;
    for (int t : tokens) {
        if (d.push(t, &e)) notes.emplace_back(e.time, e.duration, e.pitch, e.velocity, e.program);
    }
    return notes;
}

template <size_t NT, size_t NN>
void check_matches_miditok(const int32_t (&tokens)[NT], const fixtures::Note (&expected)[NN]) {
    Detokenizer d(vocab().data(), fixtures::kVocabSize, fixtures::kTicksPerQuarter);
    std::vector<NoteKey> notes = decode(d, std::vector<int>(tokens, tokens + NT));
    std::sort(notes.begin(), notes.end());  // miditok groups notes by track; compare as sets
    std::vector<NoteKey> want;
    for (const fixtures::Note& n : expected) {
        want.emplace_back(n.onset / kTpq, n.duration / kTpq, n.pitch, n.velocity, n.program);
    }
    std::sort(want.begin(), want.end());
    CHECK_EQ(notes.size(), want.size());
    size_t mismatches = 0;
    for (size_t i = 0; i < std::min(notes.size(), want.size()); ++i)
        mismatches += notes[i] != want[i];
    CHECK_EQ(mismatches, 0u);
    uint64_t bars = 0;
    for (int32_t t : tokens) bars += vocab()[t].kind == Kind::Bar;
    CHECK_EQ(d.bars(), bars);
}

}  // namespace

TEST(real_streams_decode_like_miditok) {
    check_matches_miditok(fixtures::k_bwv66_6_tokens, fixtures::k_bwv66_6_notes);
    check_matches_miditok(fixtures::k_bwv269_tokens, fixtures::k_bwv269_notes);
    check_matches_miditok(fixtures::k_band_tokens, fixtures::k_band_notes);  // drums, 4/4 -> 3/4
}

TEST(hand_built_stream) {
    Detokenizer d(vocab().data(), fixtures::kVocabSize, fixtures::kTicksPerQuarter);
    CHECK_EQ(d.tempo_bpm(), 120.0);
    const std::vector<int> tokens = {
        id_of(Kind::Bos),
        // Bar 0, 4/4 (48 ticks), tempo 96.37.
        id_of(Kind::Bar),
        id_of(Kind::TimeSig, 4, 4),
        id_of(Kind::Position, 0),
        id_of(Kind::Tempo, 96370),
        id_of(Kind::Program, 52),
        id_of(Kind::Pitch, 60),
        id_of(Kind::Velocity, 95),
        id_of(Kind::Duration, 12),  // note at 0, 1 quarter
        id_of(Kind::Program, 42),
        id_of(Kind::Pitch, 48),
        id_of(Kind::Velocity, 63),
        id_of(Kind::Duration, 6),  // note at 0, half a quarter
        id_of(Kind::Position, 30),
        id_of(Kind::Program, -1),
        id_of(Kind::PitchDrum, 36),
        id_of(Kind::Velocity, 127),
        id_of(Kind::Duration, 3),  // drum at 2.5
        // Bar 1 starts at 48 ticks = 4 quarters; it is 3/4 (36 ticks).
        id_of(Kind::Bar),
        id_of(Kind::TimeSig, 3, 4),
        id_of(Kind::Position, 6),
        id_of(Kind::Program, 0),
        id_of(Kind::Pitch, 72),
        id_of(Kind::Velocity, 95),
        id_of(Kind::Duration, 24),  // note at 4.5, 2 quarters
        // An empty bar 2 at 84 ticks = 7 quarters, then bar 3 at 120 ticks = 10 quarters.
        id_of(Kind::Bar),
        id_of(Kind::TimeSig, 3, 4),
        id_of(Kind::Bar),
        id_of(Kind::TimeSig, 3, 4),
        id_of(Kind::Position, 12),
        id_of(Kind::Tempo, 134010),
        id_of(Kind::Pitch, 74),  // no Program: the last one (0) plays it
        id_of(Kind::Velocity, 95),
        id_of(Kind::Duration, 12),  // note at 11
    };
    for (int t : tokens) CHECK(t >= 0);
    const std::vector<NoteKey> notes = decode(d, tokens);
    const std::vector<NoteKey> expected = {
        {0.0, 1.0, 60, 95, 52}, {0.0, 0.5, 48, 63, 42}, {2.5, 0.25, 36, 127, -1},
        {4.5, 2.0, 72, 95, 0},  {11.0, 1.0, 74, 95, 0},
    };
    CHECK(notes == expected);
    CHECK_EQ(d.bars(), 4u);
    CHECK_EQ(d.tempo_bpm(), 134.01);
    CHECK_EQ(d.time(), 11.0);

    d.reset();
    CHECK_EQ(d.bars(), 0u);
    CHECK_EQ(d.tempo_bpm(), 120.0);
    CHECK_EQ(d.time(), 0.0);
}

TEST(bar_gives_the_start_and_time_signature_of_each_bar) {
    Detokenizer d(vocab().data(), fixtures::kVocabSize, fixtures::kTicksPerQuarter);
    auto bar = [&] {
        const sage::BarInfo b = d.bar();
        return std::make_tuple(b.index, b.start, b.numerator, b.denominator);
    };
    CHECK(bar() == std::make_tuple(uint64_t{0}, 0.0, 4, 4));  // before any Bar: 4/4 at 0
    NoteEvent e;
    const std::vector<std::pair<int, std::tuple<uint64_t, double, int32_t, int32_t>>> steps = {
        {id_of(Kind::Bar), {1, 0.0, 4, 4}},
        {id_of(Kind::TimeSig, 7, 4), {1, 0.0, 7, 4}},  // the TimeSig sets the bar it is in
        {id_of(Kind::Position, 60), {1, 0.0, 7, 4}},
        {id_of(Kind::Bar), {2, 7.0, 7, 4}},  // 7 quarters later, still 7/4 until its TimeSig
        {id_of(Kind::TimeSig, 3, 4), {2, 7.0, 3, 4}},
        {id_of(Kind::Bar), {3, 10.0, 3, 4}},
        {id_of(Kind::TimeSig, 12, 4), {3, 10.0, 12, 4}},
        {id_of(Kind::Bar), {4, 22.0, 12, 4}},
    };
    for (const auto& [token, expected] : steps) {
        CHECK(token >= 0);
        d.push(token, &e);
        CHECK(bar() == expected);
    }
    d.reset();
    CHECK(bar() == std::make_tuple(uint64_t{0}, 0.0, 4, 4));
}

TEST(broken_notes_are_skipped_like_miditok_skips_them) {
    Detokenizer d(vocab().data(), fixtures::kVocabSize, fixtures::kTicksPerQuarter);
    const int bar = id_of(Kind::Bar), pos = id_of(Kind::Position, 0);
    const int pitch = id_of(Kind::Pitch, 60), vel = id_of(Kind::Velocity, 95);
    const int dur = id_of(Kind::Duration, 12), program = id_of(Kind::Program, 40);
    // Velocity without Pitch, Pitch + Duration without Velocity, a Position inside a note.
    CHECK(decode(d, {bar, pos, program, vel, dur}).empty());
    CHECK(decode(d, {program, pitch, dur}).empty());
    CHECK(decode(d, {program, pitch, vel, id_of(Kind::Position, 12), dur}).empty());
    // Specials are transparent (Tokenizer.decode drops them); ids out of range are ignored.
    CHECK_EQ(decode(d, {program, pitch, id_of(Kind::Pad), vel, -5, 100000, dur}).size(), 1u);
    // A Position before any Bar opens bar 0; the Bar after it starts bar 1.
    d.reset();
    const std::vector<NoteKey> notes = decode(d, {id_of(Kind::Position, 12), program, pitch, vel,
                                                  dur, bar, pos, program, pitch, vel, dur});
    const std::vector<NoteKey> expected = {{1.0, 1.0, 60, 95, 40}, {4.0, 1.0, 60, 95, 40}};
    CHECK(notes == expected);
}

SAGE_TEST_MAIN()
