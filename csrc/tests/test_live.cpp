// The live encoder through the C API (sage_live_*): token kinds and order of a bar, when a bar is
// complete, forcing, late notes, the pool's limit, capacity errors, and the MIDI byte parser under
// random bytes. Parity with the Python tokenizer on real pieces is tests/test_live.py's.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "engine/rng.h"
#include "engine_fixtures.h"
#include "sage_edge/sage_edge.h"
#include "testing.h"

namespace {

using sage::testing::fixture_models;
using sage::testing::load_or_die;

constexpr int64_t kQuarter = 500000;  // 120 BPM

std::vector<uint32_t> kinds(const sage_model* model, const int32_t* tokens, size_t n) {
    std::vector<uint32_t> out;
    for (size_t i = 0; i < n; ++i) {
        uint32_t kind = 0;
        sage_model_get_token(model, tokens[i], nullptr, &kind, nullptr, nullptr);
        out.push_back(kind);
    }
    return out;
}

// Feeds tokens to the session one by one, each checked against the grammar mask first.
bool grammatical(sage_session* session, const int32_t* tokens, size_t n, size_t vocab_size) {
    std::vector<uint8_t> mask(vocab_size);
    for (size_t i = 0; i < n; ++i) {
        if (sage_session_allowed_next(session, mask.data(), mask.size()) != SAGE_OK) return false;
        if (!mask[tokens[i]]) return false;
        if (sage_session_feed(session, &tokens[i], 1, nullptr, 0) != SAGE_OK) return false;
    }
    return true;
}

int32_t value(const sage_model* model, int32_t token) {
    int32_t a = 0;
    sage_model_get_token(model, token, nullptr, nullptr, &a, nullptr);
    return a;
}

TEST(a_bar_holds_its_notes_in_the_tokenizers_order) {
    for (const auto& path : fixture_models()) {
        sage_model* model = load_or_die(path);
        sage_live_options o = sage_live_options_default();
        o.channel_programs[0] = 52;
        o.channel_programs[1] = 42;
        sage_live* live = nullptr;
        CHECK_EQ(sage_live_create(model, &o, &live), SAGE_OK);
        // Channel 1 (cello) before channel 0 in time, but channel 0 first at one position.
        CHECK_EQ(sage_live_note(live, kQuarter, 1, 48, 70), SAGE_OK);
        CHECK_EQ(sage_live_note(live, kQuarter, 0, 72, 70), SAGE_OK);
        CHECK_EQ(sage_live_note(live, kQuarter, 0, 67, 70), SAGE_OK);
        CHECK_EQ(sage_live_note(live, 2 * kQuarter, 0, 72, 0), SAGE_OK);
        CHECK_EQ(sage_live_note(live, 2 * kQuarter, 0, 67, 0), SAGE_OK);
        int32_t tokens[64];
        size_t count = 99;
        // The bar line has not passed: not complete, and the cello still sounds.
        CHECK_EQ(sage_live_take_bar(live, 3 * kQuarter, 0, tokens, 64, &count), SAGE_OK);
        CHECK_EQ(count, size_t{0});
        CHECK_EQ(sage_live_take_bar(live, 5 * kQuarter, 0, tokens, 64, &count), SAGE_OK);
        CHECK_EQ(count, size_t{0});
        CHECK_EQ(sage_live_note(live, 5 * kQuarter, 1, 48, 0), SAGE_OK);
        // Too small a buffer takes nothing.
        CHECK_EQ(sage_live_take_bar(live, 5 * kQuarter, 0, tokens, 4, &count), SAGE_ERR_ARGUMENT);
        CHECK_EQ(sage_live_take_bar(live, 5 * kQuarter, 0, tokens, 64, &count), SAGE_OK);
        const std::vector<uint32_t> want = {
            SAGE_KIND_BAR,      SAGE_KIND_TIMESIG, SAGE_KIND_POSITION, SAGE_KIND_TEMPO,
            SAGE_KIND_POSITION, SAGE_KIND_PROGRAM, SAGE_KIND_PITCH,    SAGE_KIND_VELOCITY,
            SAGE_KIND_DURATION, SAGE_KIND_PROGRAM, SAGE_KIND_PITCH,    SAGE_KIND_VELOCITY,
            SAGE_KIND_DURATION, SAGE_KIND_PROGRAM, SAGE_KIND_PITCH,    SAGE_KIND_VELOCITY,
            SAGE_KIND_DURATION};
        CHECK(kinds(model, tokens, count) == want);
        CHECK_EQ(value(model, tokens[4]), 12);  // beat 2: 12 ticks
        CHECK_EQ(value(model, tokens[5]), 52);  // channel 0's program first
        CHECK_EQ(value(model, tokens[6]), 67);  // then by pitch
        CHECK_EQ(value(model, tokens[10]), 72);
        CHECK_EQ(value(model, tokens[13]), 42);
        CHECK_EQ(value(model, tokens[16]), 48);  // 4 quarters held
        sage_live_counts c{};
        CHECK_EQ(sage_live_get_counts(live, &c), SAGE_OK);
        CHECK_EQ(c.bars_taken, uint64_t{1});
        CHECK_EQ(c.waiting, 0u);
        // An empty bar is Bar, TimeSig.
        CHECK_EQ(sage_live_take_bar(live, 9 * kQuarter, 0, tokens, 64, &count), SAGE_OK);
        CHECK_EQ(count, size_t{2});
        int64_t t = 0;
        CHECK_EQ(sage_live_time_of(live, 8 * 12, &t), SAGE_OK);
        CHECK_EQ(t, 8 * kQuarter);
        sage_live_free(live);
        sage_model_free(model);
    }
}

TEST(a_full_pool_drops_and_counts) {
    sage_model* model = load_or_die(fixture_models()[0]);
    sage_live* live = nullptr;
    CHECK_EQ(sage_live_create(model, nullptr, &live), SAGE_OK);
    for (int i = 0; i < 600; ++i) {  // 600 short notes in one bar: 512 fit
        CHECK_EQ(sage_live_note(live, i * 1000, i % 8, 40 + i % 40, 90), SAGE_OK);
        CHECK_EQ(sage_live_note(live, i * 1000 + 500, i % 8, 40 + i % 40, 0), SAGE_OK);
    }
    sage_live_counts c{};
    sage_live_get_counts(live, &c);
    CHECK_EQ(c.notes + c.dropped, uint64_t{600});
    CHECK_EQ(c.waiting, 512u);
    std::vector<int32_t> tokens(4096);
    size_t count = 0;
    CHECK_EQ(sage_live_take_bar(live, 4 * kQuarter, 0, tokens.data(), tokens.size(), &count),
             SAGE_OK);
    CHECK(count > 2);
    sage_live_free(live);
    sage_model_free(model);
}

TEST(bad_arguments_are_refused) {
    sage_model* model = load_or_die(fixture_models()[0]);
    sage_live_options o = sage_live_options_default();
    sage_live* live = nullptr;
    o.bar_quarters = 0;
    CHECK_EQ(sage_live_create(model, &o, &live), SAGE_ERR_ARGUMENT);
    o = sage_live_options_default();
    o.channel_programs[3] = 128;
    CHECK_EQ(sage_live_create(model, &o, &live), SAGE_ERR_ARGUMENT);
    o = sage_live_options_default();
    o.us_per_quarter = 0;
    CHECK_EQ(sage_live_create(model, &o, &live), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_live_create(model, nullptr, &live), SAGE_OK);
    CHECK_EQ(sage_live_note(live, 0, 0, 128, 1), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_live_note(live, 0, 0, 60, 128), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_live_tempo(live, 0, 0), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_live_midi(live, 0, nullptr, 3), SAGE_ERR_ARGUMENT);
    size_t count = 0;
    CHECK_EQ(sage_live_take_bar(live, 0, 0, nullptr, 0, nullptr), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_live_take_bar(nullptr, 0, 0, nullptr, 0, &count), SAGE_ERR_ARGUMENT);
    sage_live_free(live);
    sage_model_free(model);
}

// The bar table: 4/4, then 3/4 from bar 1 (set_meter), then a time signature met in the middle of
// bar 2 (meter), which takes effect at bar 3, as miditok delays it; each bar's TimeSig and
// length follow, and a bar already started cannot change.
TEST(meter_changes_follow_the_bar_table) {
    sage_model* model = load_or_die(fixture_models()[0]);
    sage_live* live = nullptr;
    CHECK_EQ(sage_live_create(model, nullptr, &live), SAGE_OK);
    const int64_t tick = kQuarter / 12;
    CHECK_EQ(sage_live_set_meter(live, 1, 3), SAGE_OK);
    uint64_t from = 0;
    CHECK_EQ(sage_live_meter(live, (48 + 36 + 10) * tick, 6, &from), SAGE_OK);
    CHECK_EQ(from, uint64_t{3});
    const int64_t starts[] = {0, 48, 84, 120, 192};
    const int32_t quarters[] = {4, 3, 3, 6, 6};
    for (uint64_t bar = 0; bar < 5; ++bar) {
        int64_t start = -1;
        int32_t q = 0;
        CHECK_EQ(sage_live_get_bar(live, bar, &start, &q), SAGE_OK);
        CHECK_EQ(start, starts[bar]);
        CHECK_EQ(q, quarters[bar]);
    }
    // A note on the last tick of each bar: it lands in that bar, at that bar's last position.
    int32_t tokens[64];
    size_t count = 0;
    for (uint64_t bar = 0; bar < 4; ++bar) {
        const int64_t last = starts[bar + 1] - 1;
        CHECK_EQ(sage_live_note(live, last * tick, 0, 60, 80), SAGE_OK);
        CHECK_EQ(sage_live_note(live, (last + 1) * tick, 0, 60, 0), SAGE_OK);
        CHECK_EQ(sage_live_take_bar(live, (last + 1) * tick, 0, tokens, 64, &count), SAGE_OK);
        CHECK(count >= 4);
        CHECK_EQ(value(model, tokens[1]), quarters[bar]);  // TimeSig quarters/4
        CHECK_EQ(value(model, tokens[count - 5]), static_cast<int32_t>(last - starts[bar]));
    }
    // Bar 4 is open; taking its Bar and TimeSig ahead starts it.
    CHECK_EQ(sage_live_set_meter(live, 4, 2), SAGE_OK);
    CHECK_EQ(sage_live_take_final(live, starts[4] * tick, tokens, 64, &count), SAGE_OK);
    CHECK_EQ(value(model, tokens[1]), 2);
    CHECK_EQ(sage_live_set_meter(live, 4, 3), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_live_set_meter(live, 3, 3), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_live_set_meter(live, 5, 13), SAGE_ERR_ARGUMENT);  // no 13/4 bar
    // A time signature met in a started bar takes effect at the next one.
    CHECK_EQ(sage_live_meter(live, starts[4] * tick, 5, &from), SAGE_OK);
    CHECK_EQ(from, uint64_t{5});
    int64_t start = 0;
    int32_t q = 0;
    CHECK_EQ(sage_live_get_bar(live, 5, &start, &q), SAGE_OK);
    CHECK_EQ(start, starts[4] + 24);
    CHECK_EQ(q, 5);
    CHECK_EQ(sage_live_get_bar(live, 5, nullptr, &q), SAGE_ERR_ARGUMENT);
    sage_live_free(live);
    sage_model_free(model);
}

// A followed clock whose Start comes after the musician has played (docs/jam.md, "Clock"): what
// was played stays where it was played, the bar it is in closes as played, and the first pulse is
// the downbeat of the bar after it; with nothing played, the open bar's (as at a timely Start).
TEST(a_late_start_begins_the_bar_after_what_was_played) {
    sage_model* model = load_or_die(fixture_models()[0]);
    sage_model_info info{};
    sage_model_get_info(model, &info);
    const int64_t tpq = info.ticks_per_quarter;
    sage_live_options o = sage_live_options_default();
    o.follow_clock = 1;
    const uint8_t start[] = {0xFA}, pulse[] = {0xF8};
    int32_t tokens[256];
    size_t count = 0;
    // The Positions of a bar's tokens, in order.
    auto positions = [&](size_t n) {
        std::vector<int32_t> at;
        const std::vector<uint32_t> k = kinds(model, tokens, n);
        for (size_t i = 0; i < n; ++i)
            if (k[i] == SAGE_KIND_POSITION) at.push_back(value(model, tokens[i]));
        return at;
    };
    // last_played: where the musician's last note before Start falls, in quarters (< 0: none).
    for (const double last_played : {-1.0, 1.0, 5.0}) {
        sage_live* live = nullptr;
        CHECK_EQ(sage_live_create(model, &o, &live), SAGE_OK);
        // Before Start, the encoder's own clock runs (120 BPM from 0): a note in bar 0 at beat 2
        // and, for 5.0, one in bar 1 at beat 2; Start comes in bar 2, at 9 quarters.
        for (double q = 1.0; q <= last_played; q += 4.0) {
            const uint8_t on[] = {0x90, 60, 90}, off[] = {0x90, 60, 0};
            CHECK_EQ(sage_live_midi(live, static_cast<int64_t>(q * kQuarter), on, 3), SAGE_OK);
            CHECK_EQ(sage_live_midi(live, static_cast<int64_t>((q + 0.5) * kQuarter), off, 3),
                     SAGE_OK);
        }
        int64_t now = 9 * kQuarter;
        CHECK_EQ(sage_live_midi(live, now, start, 1), SAGE_OK);
        sage_live_counts c{};
        CHECK_EQ(sage_live_get_counts(live, &c), SAGE_OK);
        const int64_t downbeat = last_played < 0 ? 0 : last_played < 4 ? 4 * tpq : 8 * tpq;
        CHECK_EQ(c.clock_start_tick, downbeat);
        CHECK_EQ(c.clock_tick, int64_t{-1});
        // The bars played before Start are complete at once, each note where it was played.
        for (int64_t bar = 0; bar * 4 * tpq < downbeat; ++bar) {
            CHECK_EQ(sage_live_take_bar(live, now, 0, tokens, 256, &count), SAGE_OK);
            const std::vector<int32_t> at = positions(count);  // (bar 0: the Tempo's at 0)
            CHECK(!at.empty());
            CHECK_EQ(at.back(), static_cast<int32_t>(tpq));
        }
        CHECK_EQ(sage_live_take_bar(live, now, 0, tokens, 256, &count), SAGE_OK);
        CHECK_EQ(count, size_t{0});  // the downbeat's bar waits for the clock
        // A bar of pulses at 120 BPM, a note on the first: it opens the next bar.
        const uint8_t on[] = {0x90, 64, 90}, off[] = {0x90, 64, 0};
        for (int p = 0; p <= 96; ++p) {
            now += kQuarter / 24;
            CHECK_EQ(sage_live_midi(live, now, pulse, 1), SAGE_OK);
            if (p == 0) CHECK_EQ(sage_live_midi(live, now, on, 3), SAGE_OK);
            if (p == 12) CHECK_EQ(sage_live_midi(live, now, off, 3), SAGE_OK);
            if (p == 0) {
                CHECK_EQ(sage_live_get_counts(live, &c), SAGE_OK);
                CHECK_EQ(c.clock_tick, downbeat);
            }
        }
        CHECK_EQ(sage_live_take_bar(live, now, 0, tokens, 256, &count), SAGE_OK);
        const std::vector<int32_t> at = positions(count);
        CHECK_EQ(at.size(), size_t{1});
        CHECK_EQ(at[0], 0);
        CHECK_EQ(sage_live_get_counts(live, &c), SAGE_OK);
        CHECK_EQ(static_cast<int64_t>(c.bars_taken) * 4 * tpq, downbeat + 4 * tpq);
        sage_live_free(live);
    }
    sage_model_free(model);
}

// A live encoder following a clock, the bytes sent at a time that pulses move on at 120 BPM.
struct ClockedLive {
    sage_model* model = load_or_die(fixture_models()[0]);
    sage_live* live = nullptr;
    int64_t tpq = 0, now = 0;
    ClockedLive() {
        sage_model_info info{};
        sage_model_get_info(model, &info);
        tpq = info.ticks_per_quarter;
        CHECK_EQ(24 % tpq, 0);
        sage_live_options o = sage_live_options_default();
        o.follow_clock = 1;
        CHECK_EQ(sage_live_create(model, &o, &live), SAGE_OK);
    }
    ~ClockedLive() {
        sage_live_free(live);
        sage_model_free(model);
    }
    void send(std::vector<uint8_t> bytes) {
        CHECK_EQ(sage_live_midi(live, now, bytes.data(), bytes.size()), SAGE_OK);
    }
    void pulses(int n) {
        for (int p = 0; p < n; ++p) {
            now += kQuarter / 24;
            send({0xF8});
        }
    }
    sage_live_counts counts() const {
        sage_live_counts c{};
        CHECK_EQ(sage_live_get_counts(live, &c), SAGE_OK);
        return c;
    }
};

// A followed clock's Stop and Continue (docs/jam.md, "Stop, Continue, Song Position Pointer"):
// stopped, the grid stands, whatever time passes: no bar completes, notes played are not heard,
// the note sounding ends where the clock stopped, and no tempo is measured across the pause;
// Continue resumes on the pulse after the last. Before, the grid ran on at the last tempo while
// stopped (bar 1 was complete after the pause), the note played stopped was heard, and the first
// quarter after Continue measured the pause as a tempo.
TEST(a_stopped_clock_holds_the_grid_until_continue) {
    ClockedLive clocked;
    auto& [model, live, tpq, now] = clocked;
    const int64_t bar = 4 * tpq;
    auto send = [&](std::vector<uint8_t> bytes) { clocked.send(std::move(bytes)); };
    auto pulses = [&](int n) { clocked.pulses(n); };
    int32_t tokens[256];
    size_t count = 0;
    sage_live_counts c{};
    send({0xFA});
    pulses(1);  // the downbeat
    pulses(4 * 24);
    send({0x90, 60, 90});  // bar 1's downbeat, held into the pause
    CHECK_EQ(sage_live_take_bar(live, now, 0, tokens, 256, &count), SAGE_OK);
    CHECK(count > 0);    // bar 0
    pulses(2 * 24 - 1);  // to beat 3 of bar 1 (its last pulse: half a grid step before it)
    now += 5000;
    send({0xFC});
    c = clocked.counts();
    CHECK_EQ(c.clock_running, 0);
    CHECK_EQ(c.clock_stops, uint64_t{1});
    int64_t tick = 0;
    // Ten seconds stopped: the grid stands at beat 3, the notes played are not heard.
    for (int k = 0; k < 10; ++k) {
        now += 1000000;
        if (k == 2) send({0x90, 60, 0});  // the held note's key let go: it ended at the stop
        if (k == 4) send({0x90, 72, 90});
        if (k == 5) send({0x90, 72, 0});
        send({0xF8});  // a master may send pulses while stopped: they do not count
        CHECK_EQ(sage_live_tick_at(live, now, &tick), SAGE_OK);
        CHECK_EQ(tick, bar + 2 * tpq);
        CHECK_EQ(sage_live_take_bar(live, now, 1, tokens, 256, &count), SAGE_OK);
        CHECK_EQ(count, size_t{0});
    }
    c = clocked.counts();
    CHECK_EQ(c.bars_taken, uint64_t{1});
    CHECK_EQ(c.notes_while_stopped, uint64_t{1});
    CHECK_EQ(c.notes, uint64_t{1});
    send({0xFB});  // Continue: the next pulse is beat 3 of bar 1
    CHECK_EQ(sage_live_take_bar(live, now, 1, tokens, 256, &count), SAGE_OK);
    CHECK_EQ(count, size_t{0});
    pulses(1);
    send({0x90, 64, 90});
    c = clocked.counts();
    CHECK_EQ(c.clock_tick, bar + 2 * tpq);
    CHECK_EQ(c.clock_running, 1);
    pulses(24);
    send({0x90, 64, 0});
    pulses(24);  // bar 2's downbeat
    CHECK_EQ(sage_live_take_bar(live, now, 0, tokens, 256, &count), SAGE_OK);
    // Bar 1: the held note from 0, two quarters (cut at the stop), the note after Continue at
    // beat 3, a quarter; no Tempo (the pause measured no tempo).
    const std::vector<uint32_t> k = kinds(model, tokens, count);
    std::vector<int32_t> positions, durations;
    for (size_t i = 0; i < count; ++i) {
        CHECK(k[i] != SAGE_KIND_TEMPO);
        if (k[i] == SAGE_KIND_POSITION) positions.push_back(value(model, tokens[i]));
        if (k[i] == SAGE_KIND_DURATION) durations.push_back(value(model, tokens[i]));
    }
    CHECK(positions == (std::vector<int32_t>{0, static_cast<int32_t>(2 * tpq)}));
    CHECK(durations ==
          (std::vector<int32_t>{static_cast<int32_t>(2 * tpq), static_cast<int32_t>(tpq)}));
}

// A Song Position Pointer read while the clock is stopped: Continue resumes at its position's place
// in the bar, from a sixteenth before where the clock stopped on (the stream cannot go back, and
// the time skipped holds nothing, not even empty bars); the notes decided for ticks skipped are not
// to be played (clock_from_tick). The clock stops a pulse after beat 2 of bar 1. A pointer to the
// sixteenth it stopped in (a master sends it with every Continue, and restarts there) resumes
// there, and so does one to the same place whole bars ahead; one to beat 3 resumes at beat 3 of
// bar 1; one back to bar 0's first sixteenth, at bar 2's. Before, the grid ran on through the pause
// and the pointer counted from the Start's bar whatever had been played since.
// Plays a Start, pulses to a pulse after beat 2 of bar 1, a Song Position Pointer to sixteenth
// `pointer` (while the clock runs, or after a Stop and 3 s stopped, followed by Continue), a
// pulse, a note, and two bars of pulses. Returns the counts after the pointer (and Continue), the
// clock's tick after the next pulse and the ticks of the note's positions in the bars written.
struct Moved {
    int64_t tpq;
    sage_live_counts after;
    int64_t tick;
    std::vector<int32_t> notes;
};
Moved move_with_a_pointer(int pointer, bool running) {
    ClockedLive clocked;
    auto& [model, live, tpq, now] = clocked;
    auto send = [&](std::vector<uint8_t> bytes) { clocked.send(std::move(bytes)); };
    auto pulses = [&](int n) { clocked.pulses(n); };
    int32_t tokens[256];
    size_t count = 0;
    Moved moved;
    moved.tpq = tpq;
    CHECK_EQ(tpq % 4, 0);
    send({0xFA});
    pulses(1 + 4 * 24 + 24 + 1);  // to beat 2 of bar 1 and a pulse
    if (!running) {
        send({0xFC});
        now += 3000000;
    }
    send({0xF2, static_cast<uint8_t>(pointer & 0x7F), static_cast<uint8_t>(pointer >> 7)});
    if (!running) send({0xFB});
    moved.after = clocked.counts();
    pulses(1);
    send({0x90, 67, 90});
    moved.tick = clocked.counts().clock_tick;
    pulses(6);
    send({0x90, 67, 0});
    pulses(4 * 24 * 2);
    const int64_t bar = 4 * tpq;
    for (int b = 0; b < 3; ++b) {
        CHECK_EQ(sage_live_take_bar(live, now, 0, tokens, 256, &count), SAGE_OK);
        const std::vector<uint32_t> k = kinds(model, tokens, count);
        for (size_t i = 0; i + 1 < count; ++i)
            if (k[i] == SAGE_KIND_POSITION && k[i + 1] == SAGE_KIND_PROGRAM)
                moved.notes.push_back(b * static_cast<int32_t>(bar) + value(model, tokens[i]));
    }
    CHECK_EQ(clocked.counts().late, uint64_t{0});
    return moved;
}

TEST(a_song_position_pointer_moves_where_continue_resumes) {
    // In sixteenths from bar 0: the pointer, where the music goes on, and clock_from_tick.
    const int moves[][3] = {{16 + 4, 16 + 4, 0},
                            {16 + 16 + 16 + 4, 16 + 4, 0},
                            {16 + 8, 16 + 8, 16 + 8},
                            {1, 32 + 1, 32 + 1}};
    for (const auto& [pointer, resumed_16, from_16] : moves) {
        const Moved moved = move_with_a_pointer(pointer, false);
        const int64_t resumed = resumed_16 * moved.tpq / 4, from = from_16 * moved.tpq / 4;
        CHECK_EQ(moved.after.clock_from_tick, from);
        CHECK_EQ(moved.tick, resumed);
        // The note lies at `resumed`, and no bar was written between.
        CHECK(moved.notes == std::vector<int32_t>{static_cast<int32_t>(resumed)});
    }
}

// A Song Position Pointer read while the clock runs (a master that locates while playing; MIDI 1.0
// has it sent while stopped, Start being a pointer to 0 and a Continue) is a Stop at the last
// pulse, the pointer and a Continue: the same counts, grid and notes as the test above, with one
// Stop counted (the front ends release the notes sounding), except for a pointer to the sixteenth
// the clock is in (a master repeating where it is), which changes nothing: the clock runs on from
// its pulse (tick 61 at 12 ticks a quarter, not the sixteenth's 60). Before, a pointer while
// running was ignored, and the grid ran on where the master had left.
TEST(a_song_position_pointer_while_running_relocates_as_stop_and_continue) {
    for (const int pointer : {16 + 16 + 16 + 4, 16 + 8, 1}) {
        const Moved running = move_with_a_pointer(pointer, true);
        const Moved stopped = move_with_a_pointer(pointer, false);
        CHECK_EQ(running.after.clock_stops, uint64_t{1});
        CHECK_EQ(running.after.clock_running, 1);
        CHECK_EQ(running.after.clock_from_tick, stopped.after.clock_from_tick);
        CHECK_EQ(running.tick, stopped.tick);
        CHECK(running.notes == stopped.notes);
    }
    const Moved in_place = move_with_a_pointer(16 + 4, true);
    const int64_t pulse_122 = 122 * in_place.tpq / 24;
    CHECK_EQ(in_place.after.clock_stops, uint64_t{0});
    CHECK_EQ(in_place.after.clock_from_tick, 0);
    CHECK_EQ(in_place.tick, pulse_122);
    CHECK(in_place.notes == std::vector<int32_t>{static_cast<int32_t>(pulse_122)});
}

// Random bytes, in random chunks, as a broken cable or a noisy UART would deliver them: the parser
// never reads out of bounds (run under ASan by the asan preset), and every bar stays decodable.
TEST(random_bytes_never_break_the_parser) {
    sage_model* model = load_or_die(fixture_models()[0]);
    sage_model_info info{};
    sage_model_get_info(model, &info);
    int32_t bos = -1;
    sage_model_find_kind(model, SAGE_KIND_BOS, &bos);
    // Without a clock, and following one (the random bytes Start, Stop, Continue and point it;
    // a pulse is added to every other chunk so that its grid moves).
    for (const int follow : {0, 1}) {
        sage_live_options o = sage_live_options_default();
        o.follow_clock = follow;
        sage_live* live = nullptr;
        CHECK_EQ(sage_live_create(model, &o, &live), SAGE_OK);
        sage_session* session = nullptr;
        CHECK_EQ(sage_session_create(model, nullptr, &session), SAGE_OK);
        CHECK_EQ(sage_session_feed(session, &bos, 1, nullptr, 0), SAGE_OK);
        sage::Pcg32 rng(7);
        std::vector<uint8_t> bytes(64);
        std::vector<int32_t> tokens(8192);
        int64_t now = 0;
        bool meters_seen[13] = {false};
        for (int chunk = 0; chunk < 5000; ++chunk) {
            const size_t n = rng.next_u32() % bytes.size();
            for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(rng.next_u32());
            if (chunk % 4 == 0 && n > 11) {
                // A time signature SysEx, whole half of the time, else cut or malformed by the
                // rest.
                const uint8_t head[] = {0xF0, 0x7F, 0x7F, 0x03, 0x42, 4};
                std::copy(head, head + 6, bytes.begin());
                bytes[6] = static_cast<uint8_t>(rng.next_u32() % 14);
                bytes[7] = static_cast<uint8_t>(rng.next_u32() % 8);
                if (rng.next_u32() % 2) bytes[10] = 0xF7;
            } else if (follow && chunk % 2 == 1 && n > 0) {
                bytes[0] = 0xF8;
            }
            now += static_cast<int64_t>(rng.next_u32() % 20000);
            CHECK_EQ(sage_live_midi(live, now, bytes.data(), n), SAGE_OK);
            size_t count = 0;
            CHECK_EQ(sage_live_take_bar(live, now, chunk % 50 == 0, tokens.data(), tokens.size(),
                                        &count),
                     SAGE_OK);
            CHECK(grammatical(session, tokens.data(), count, info.vocab_size));
            sage_live_counts open{};
            sage_live_get_counts(live, &open);
            int64_t start = 0;
            int32_t quarters = 0;
            CHECK_EQ(sage_live_get_bar(live, open.bars_taken, &start, &quarters), SAGE_OK);
            CHECK(quarters >= 1 && quarters <= 12);
            meters_seen[quarters] = true;
        }
        CHECK(std::count(meters_seen, meters_seen + 13, true) >= 4);  // the SysEx changed the meter
        sage_live_counts c{};
        sage_live_get_counts(live, &c);
        CHECK(c.notes > 100 && c.bars_taken > 10);
        if (follow) CHECK(c.clock_stops > 10 && c.notes_while_stopped > 10);
        uint64_t fed = 0;
        sage_session_get_position(session, &fed);
        CHECK(fed > c.bars_taken * 2 + c.notes);  // every bar and note went through the mask
        sage_session_free(session);
        sage_live_free(live);
    }
    sage_model_free(model);
}

// Taking a bar's final part ahead (sage_live_take_final) between events hands out the same tokens
// as taking the bar whole: random notes on three channels (two of one program: notes of one
// program, pitch and onset, which the tokenizer keeps one of), chords, notes held over bar lines,
// tempo changes, forced bars; one encoder takes parts ahead at random moments, a twin does not.
TEST(a_bar_taken_in_parts_is_the_bar) {
    sage_model* model = load_or_die(fixture_models()[0]);
    sage_live_options o = sage_live_options_default();
    o.channel_programs[0] = o.channel_programs[1] = 52;
    o.channel_programs[2] = 42;
    sage_live *parts = nullptr, *whole = nullptr;
    CHECK_EQ(sage_live_create(model, &o, &parts), SAGE_OK);
    CHECK_EQ(sage_live_create(model, &o, &whole), SAGE_OK);
    sage::Pcg32 rng(11);
    std::vector<int32_t> got, want, tokens(8192);
    size_t count = 0, pieces = 0;
    int64_t now = 0;
    for (int step = 0; step < 20000; ++step) {
        now += static_cast<int64_t>(rng.next_u32() % 60000);
        const int channel = static_cast<int>(rng.next_u32() % 3);
        const int pitch = 60 + static_cast<int>(rng.next_u32() % 5);
        const int velocity =
            rng.next_u32() % 3 == 0 ? 0 : 40 + static_cast<int>(rng.next_u32() % 80);
        const bool force = rng.next_u32() % 40 == 0;
        for (sage_live* live : {parts, whole}) {
            std::vector<int32_t>& out = live == parts ? got : want;
            if (live == parts && rng.next_u32() % 2 == 0) {
                CHECK_EQ(sage_live_take_final(live, now, tokens.data(), tokens.size(), &count),
                         SAGE_OK);
                out.insert(out.end(), tokens.begin(), tokens.begin() + count);
                pieces += count > 0;
            }
            while (sage_live_take_bar(live, now, force, tokens.data(), tokens.size(), &count) ==
                       SAGE_OK &&
                   count > 0)
                out.insert(out.end(), tokens.begin(), tokens.begin() + count);
            CHECK_EQ(sage_live_note(live, now, channel, pitch, velocity), SAGE_OK);
            if (step % 500 == 0) CHECK_EQ(sage_live_tempo(live, now, 400000 + step), SAGE_OK);
        }
    }
    for (sage_live* live : {parts, whole}) {  // the bar open at the end, part of it taken ahead
        std::vector<int32_t>& out = live == parts ? got : want;
        CHECK_EQ(
            sage_live_take_bar(live, now + 4 * kQuarter, 1, tokens.data(), tokens.size(), &count),
            SAGE_OK);
        out.insert(out.end(), tokens.begin(), tokens.begin() + count);
    }
    sage_live_counts a{}, b{};
    sage_live_get_counts(parts, &a);
    sage_live_get_counts(whole, &b);
    CHECK_EQ(a.bars_taken, b.bars_taken);
    CHECK(a.bars_taken > 100 && pieces > 1000);
    CHECK_EQ(a.late, 0u);
    CHECK(got == want);
    sage_live_free(parts);
    sage_live_free(whole);
    sage_model_free(model);
}

// A melody on channel 0 into a jam: a note each quarter (pitch_of its time, released just before
// the next) until melody_end, the jam polled every millisecond until `until`; its notes to *out.
template <typename PitchOf>
void play_melody(sage_jam* jam, int64_t melody_end, int64_t until, std::vector<sage_jam_note>* out,
                 PitchOf pitch_of) {
    sage_live* live = nullptr;
    CHECK_EQ(sage_jam_get_live(jam, &live), SAGE_OK);
    sage_jam_note notes[64];
    for (int64_t t = 0; t < until; t += 1000) {
        if (t < melody_end && t % kQuarter == 0)
            CHECK_EQ(sage_live_note(live, t, 0, pitch_of(t), 90), SAGE_OK);
        if (t < melody_end && t % kQuarter == kQuarter - 1000)
            CHECK_EQ(sage_live_note(live, t, 0, pitch_of(t), 0), SAGE_OK);
        size_t count = 0;
        CHECK_EQ(sage_jam_poll(jam, t, notes, 64, &count), SAGE_OK);
        out->insert(out->end(), notes, notes + count);
    }
}

// A call-and-response jam of `phrase_bars`-bar phrases answering on program 42 (or, with mode
// SAGE_JAM_ACCOMPANY, accompanying `lookahead` bars behind), the musician on channel 0 (program
// 52); its live encoder to *live.
sage_jam* answering_jam(sage_model* model, uint32_t phrase_bars, sage_live** live,
                        int32_t mode = SAGE_JAM_CALL_RESPONSE, uint32_t lookahead = 0) {
    sage_jam_options o = sage_jam_options_default();
    o.mode = mode;
    o.lookahead_bars = lookahead;
    o.phrase_bars = phrase_bars;
    o.programs[0] = 42;
    o.n_programs = 1;
    o.live.channel_programs[0] = 52;
    sage_jam* jam = nullptr;
    CHECK_EQ(sage_jam_create(model, &o, &jam), SAGE_OK);
    CHECK_EQ(sage_jam_get_live(jam, live), SAGE_OK);
    return jam;
}

// Call and response through the C API: a phrase of two bars on channel 0, then the engine answers
// bars 2 and 3 on its program, and its notes lie there; the musician's notes are in the stream.
TEST(a_jam_answers_a_phrase_in_the_next_bars) {
    for (const auto& path : fixture_models()) {
        sage_model* model = load_or_die(path);
        sage_live* live = nullptr;
        sage_jam* jam = answering_jam(model, 2, &live);
        sage_jam_note notes[64];
        std::vector<sage_jam_note> answer;
        const int64_t bar = 4 * kQuarter;
        for (int64_t t = 0; t < 5 * bar; t += 1000) {
            if (t < 2 * bar && t % kQuarter == 0)
                CHECK_EQ(sage_live_note(live, t, 0, 60 + static_cast<int>(t / kQuarter), 90),
                         SAGE_OK);
            if (t < 2 * bar && t % kQuarter == kQuarter / 2)
                CHECK_EQ(sage_live_note(live, t, 0, 60 + static_cast<int>(t / kQuarter), 0),
                         SAGE_OK);
            size_t count = 0;
            CHECK_EQ(sage_jam_poll(jam, t, notes, 64, &count), SAGE_OK);
            answer.insert(answer.end(), notes, notes + count);
        }
        sage_jam_state state{};
        CHECK_EQ(sage_jam_get_state(jam, &state), SAGE_OK);
        CHECK_EQ(state.answers, uint64_t{1});
        for (const sage_jam_note& n : answer) {
            CHECK(n.time_us >= 2 * bar && n.time_us < 4 * bar);
            CHECK_EQ(n.program, 42);
            CHECK_EQ(n.channel, 0);
        }
        int32_t history[512];
        size_t count = 0;
        CHECK_EQ(sage_jam_get_history(jam, history, 512, &count), SAGE_OK);
        int musician_pitches = 0;
        for (size_t i = 0; i + 1 < count; ++i)
            if (value(model, history[i]) == 52 &&
                kinds(model, history + i, 1)[0] == static_cast<uint32_t>(SAGE_KIND_PROGRAM))
                ++musician_pitches;
        CHECK_EQ(musician_pitches, 8);
        sage_jam_free(jam);
        sage_model_free(model);
    }
}

// A forced bar cuts a note held past its end at the bar line, whenever the poll that takes it
// comes: in call and response (the phrase's last bar) and in accompaniment (every bar, one bar
// behind and in time), two takes whose held note starts 1 ms apart (the same grid point) write the
// same stream and play alike. Cut at the poll's time (half a grid step before the bar line) its
// length fell on a rounding tie, 11.5 ticks: 12 on time, 11 a millisecond late, and the two takes,
// and everything after, differed (docs/jam.md, "When a bar is written").
TEST(a_forced_bar_cuts_its_held_note_at_the_bar_line) {
    const std::pair<int32_t, uint32_t> ways[] = {
        {SAGE_JAM_CALL_RESPONSE, 0}, {SAGE_JAM_ACCOMPANY, 1}, {SAGE_JAM_ACCOMPANY, 0}};
    for (const auto& path : fixture_models())
        for (const auto& [mode, lookahead] : ways) {
            sage_model* model = load_or_die(path);
            std::vector<int32_t> histories[2];
            for (int late_us : {0, 1000}) {
                sage_live* live = nullptr;
                sage_jam* jam = answering_jam(model, 1, &live, mode, lookahead);
                sage_jam_note notes[64];
                const int64_t bar = 4 * kQuarter;
                for (int64_t t = 0; t < 3 * bar; t += 1000) {
                    if (t < 3 * kQuarter && t % kQuarter == 0)
                        CHECK_EQ(
                            sage_live_note(live, t, 0, 60 + static_cast<int>(t / kQuarter), 90),
                            SAGE_OK);
                    if (t < 3 * kQuarter && t % kQuarter == kQuarter - 2000)
                        CHECK_EQ(sage_live_note(live, t, 0, 60 + static_cast<int>(t / kQuarter), 0),
                                 SAGE_OK);
                    if (t == 3 * kQuarter + late_us)  // held past the bar line
                        CHECK_EQ(sage_live_note(live, t, 0, 67, 90), SAGE_OK);
                    if (t == bar + 10000) CHECK_EQ(sage_live_note(live, t, 0, 67, 0), SAGE_OK);
                    size_t count = 0;
                    CHECK_EQ(sage_jam_poll(jam, t, notes, 64, &count), SAGE_OK);
                }
                int32_t history[1024];
                size_t count = 0;
                CHECK_EQ(sage_jam_get_history(jam, history, 1024, &count), SAGE_OK);
                histories[late_us > 0].assign(history, history + count);
                sage_jam_free(jam);
            }
            CHECK(histories[0].size() > 20);
            CHECK(histories[0] == histories[1]);
            sage_model_free(model);
        }
}

// Accompaniment in time (lookahead 0), listening every beat: what the engine plays before a grid
// point cannot depend on what the musician plays from there on. Two takes, the same seed, the same
// notes until beat 2 of bar 2 and other pitches from there: ahead, every note the engine plays
// before beat 3 (decided before beat 2 was heard) is the same in both; reacting, every note before
// beat 2. The engine plays from bar 1 on, in the bars the musician plays, and its stream holds the
// musician's notes and exactly the engine's notes played (each bar is replayed as it sounded).
TEST(an_in_time_accompaniment_knows_only_what_was_played) {
    for (const auto& path : fixture_models())
        for (int react = 0; react <= 1; ++react) {
            sage_model* model = load_or_die(path);
            std::vector<sage_jam_note> takes[2];
            std::vector<int32_t> history[2] = {std::vector<int32_t>(8192),
                                               std::vector<int32_t>(8192)};
            size_t history_n[2] = {0, 0};
            int64_t beat_ticks = 0, changed = 0;
            for (int take = 0; take < 2; ++take) {
                sage_jam_options o = sage_jam_options_default();
                o.mode = SAGE_JAM_ACCOMPANY;
                o.lookahead_bars = 0;
                o.react = react;
                o.programs[0] = 42;
                o.n_programs = 1;
                o.seed = 5;
                o.live.channel_programs[0] = 52;
                sage_jam* jam = nullptr;
                sage_live* live = nullptr;
                CHECK_EQ(sage_live_create(model, &o.live, &live), SAGE_OK);
                CHECK_EQ(sage_live_tick_at(live, kQuarter, &beat_ticks), SAGE_OK);
                sage_live_free(live);
                o.listen_ticks = static_cast<uint32_t>(beat_ticks);
                CHECK_EQ(sage_jam_create(model, &o, &jam), SAGE_OK);
                const int64_t bar = 4 * kQuarter, change = 2 * bar + kQuarter;
                changed = (change / kQuarter) * beat_ticks;
                play_melody(jam, 4 * bar, 5 * bar, &takes[take], [&](int64_t t) {
                    return 60 + static_cast<int>(t / kQuarter % 7) +
                           (take == 1 && t >= change ? 5 : 0);
                });
                sage_jam_state state{};
                CHECK_EQ(sage_jam_get_state(jam, &state), SAGE_OK);
                CHECK(state.replays >= 4 * 4);  // each beat of bars 1..4
                CHECK(state.replayed_tokens > 0);
                CHECK_EQ(sage_jam_get_history(jam, history[take].data(), history[take].size(),
                                              &history_n[take]),
                         SAGE_OK);
                sage_jam_free(jam);
            }
            CHECK(!takes[0].empty());
            const int64_t known = react ? changed : changed + beat_ticks;
            std::vector<sage_jam_note> before[2];
            const int64_t bar_ticks = 4 * beat_ticks;
            for (int take = 0; take < 2; ++take) {
                std::vector<std::pair<int64_t, int32_t>> played;  // in bars 1..3 (replayed whole)
                for (const sage_jam_note& n : takes[take]) {
                    CHECK(n.tick >= bar_ticks && n.tick < 6 * bar_ticks);
                    CHECK_EQ(n.program, 42);
                    if (n.tick < known) before[take].push_back(n);
                    if (n.tick < 4 * bar_ticks) played.emplace_back(n.tick, n.pitch);
                }
                // The stream: the musician's 16 notes, and in bars 1..3 the engine's notes as
                // played, at their ticks.
                std::vector<std::pair<int64_t, int32_t>> written;
                int musician = 0, bars = -1;
                int64_t tick = 0;
                int32_t program = 0;
                CHECK(history_n[take] < history[take].size());  // from the start
                for (size_t i = 0; i < history_n[take]; ++i) {
                    const uint32_t kind = kinds(model, &history[take][i], 1)[0];
                    const int32_t a = value(model, history[take][i]);
                    if (kind == static_cast<uint32_t>(SAGE_KIND_BAR)) ++bars;
                    if (kind == static_cast<uint32_t>(SAGE_KIND_POSITION))
                        tick = bars * bar_ticks + a;
                    if (kind == static_cast<uint32_t>(SAGE_KIND_PROGRAM)) {
                        program = a;
                        musician += a == 52;
                    }
                    if (kind == static_cast<uint32_t>(SAGE_KIND_PITCH) && program == 42 &&
                        bars >= 1 && bars <= 3)
                        written.emplace_back(tick, a);
                }
                CHECK_EQ(musician, 16);
                std::sort(played.begin(), played.end());
                std::sort(written.begin(), written.end());
                CHECK(written == played);
            }
            CHECK_EQ(before[0].size(), before[1].size());
            for (size_t i = 0; i < before[0].size() && i < before[1].size(); ++i) {
                CHECK_EQ(before[0][i].tick, before[1][i].tick);
                CHECK_EQ(before[0][i].pitch, before[1][i].pitch);
                CHECK_EQ(before[0][i].end_tick, before[1][i].end_tick);
            }
            sage_model_free(model);
        }
}

// The engine's notes of a 3-bar take (a melody on channel 0, each quarter) accompanied by a jam
// with options o; the jam's options as it plays go to *resolved.
std::vector<sage_jam_note> accompany_take(const sage_model* model, const sage_jam_options& o,
                                          sage_jam_options* resolved, sage_jam_state* state) {
    sage_jam* jam = nullptr;
    CHECK_EQ(sage_jam_create(model, &o, &jam), SAGE_OK);
    CHECK_EQ(sage_jam_get_options(jam, resolved), SAGE_OK);
    std::vector<sage_jam_note> played;
    const int64_t bar = 4 * kQuarter;
    play_melody(jam, 3 * bar, 4 * bar, &played,
                [](int64_t t) { return 60 + static_cast<int>(t / kQuarter % 5); });
    CHECK_EQ(sage_jam_get_state(jam, state), SAGE_OK);
    sage_jam_free(jam);
    return played;
}

// The defaults (sage_jam_options_default) accompany in time, listening every beat (the model's
// ticks per quarter) and reacting: a take with them plays exactly what one asking for that plays.
// lookahead_bars 1 alone is one bar behind, neither listening nor reacting; call and response
// ignores the defaults but refuses them asked for explicitly.
TEST(the_default_accompaniment_is_in_time_every_beat_reacting) {
    for (const auto& path : fixture_models()) {
        sage_model* model = load_or_die(path);
        sage_model_info info{};
        CHECK_EQ(sage_model_get_info(model, &info), SAGE_OK);
        sage_jam_options o = sage_jam_options_default();
        o.mode = SAGE_JAM_ACCOMPANY;
        o.programs[0] = 42;
        o.n_programs = 1;
        o.seed = 7;
        o.live.channel_programs[0] = 52;
        sage_jam_options got{};
        sage_jam_state state{}, asked_state{};
        const std::vector<sage_jam_note> by_default = accompany_take(model, o, &got, &state);
        CHECK_EQ(got.lookahead_bars, 0u);
        CHECK_EQ(got.listen_ticks, static_cast<uint32_t>(info.ticks_per_quarter));
        CHECK_EQ(got.react, 1);
        CHECK_EQ(got.predict, 0);
        CHECK(state.replays >= 2 * 4);  // every beat of bars 1 and 2 at least
        sage_jam_options asked = o;
        asked.lookahead_bars = 0;
        asked.listen_ticks = static_cast<uint32_t>(info.ticks_per_quarter);
        asked.react = 1;
        const std::vector<sage_jam_note> in_time = accompany_take(model, asked, &got, &asked_state);
        CHECK(!by_default.empty());
        CHECK_EQ(by_default.size(), in_time.size());
        for (size_t i = 0; i < by_default.size() && i < in_time.size(); ++i) {
            CHECK_EQ(by_default[i].tick, in_time[i].tick);
            CHECK_EQ(by_default[i].pitch, in_time[i].pitch);
            CHECK_EQ(by_default[i].end_tick, in_time[i].end_tick);
        }
        CHECK_EQ(state.replays, asked_state.replays);

        sage_jam_options behind = o;
        behind.lookahead_bars = 1;
        accompany_take(model, behind, &got, &state);
        CHECK_EQ(got.lookahead_bars, 1u);
        CHECK_EQ(got.listen_ticks, 0u);
        CHECK_EQ(got.react, 0);
        CHECK_EQ(state.replays, uint64_t{0});

        sage_jam_options answer = o;
        answer.mode = SAGE_JAM_CALL_RESPONSE;
        sage_jam* jam = nullptr;
        CHECK_EQ(sage_jam_create(model, &answer, &jam), SAGE_OK);
        CHECK_EQ(sage_jam_get_options(jam, &got), SAGE_OK);
        CHECK_EQ(got.listen_ticks, 0u);
        CHECK_EQ(got.react, 0);
        sage_jam_free(jam);
        answer.react = 1;
        CHECK_EQ(sage_jam_create(model, &answer, &jam), SAGE_ERR_ARGUMENT);
        answer.react = SAGE_JAM_AUTO;
        answer.listen_ticks = static_cast<uint32_t>(info.ticks_per_quarter);
        CHECK_EQ(sage_jam_create(model, &answer, &jam), SAGE_ERR_ARGUMENT);
        asked.react = 2;
        CHECK_EQ(sage_jam_create(model, &asked, &jam), SAGE_ERR_ARGUMENT);
        behind.react = 1;
        CHECK_EQ(sage_jam_create(model, &behind, &jam), SAGE_ERR_ARGUMENT);
        sage_model_free(model);
    }
}

}  // namespace

SAGE_TEST_MAIN()
