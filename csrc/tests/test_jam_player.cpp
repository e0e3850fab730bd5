// The jam player (csrc/engine/jam_player.*) through the C API (sage_jam_player_*): the notes it
// queues are the jam's, their bytes go out at their times, a led clock's Start, pulses and Stop,
// a followed clock's pulses, Stop and jumps, the tail after the input ends, late sends, and the
// argument checks. Real bytes through ptys are the front ends' tests (tests/test_jam.py).
#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "engine_fixtures.h"
#include "testing.h"

namespace {

using sage::testing::load_or_die;
using Bytes = std::vector<uint8_t>;

constexpr int64_t kQuarter = 500000;  // 120 BPM
constexpr int64_t kBar = 4 * kQuarter;

// A call-and-response jam of 1-bar phrases on the shipped model (the musician's program 52, the
// engine's 42; bar 0 at 0, 120 BPM, 4/4), played through a player.
struct PlayedJam {
    sage_model* model = load_or_die(SAGE_SHIPPED_MODEL);
    sage_jam* jam = nullptr;
    sage_live* live = nullptr;
    sage_jam_player* player = nullptr;
    int64_t tpq = 0;
    explicit PlayedJam(int lead = 0, bool follow = false, int mode = SAGE_JAM_CALL_RESPONSE,
                       uint32_t lookahead = 1) {
        sage_model_info info{};
        sage_model_get_info(model, &info);
        tpq = info.ticks_per_quarter;
        sage_jam_options o = sage_jam_options_default();
        o.mode = mode;
        o.lookahead_bars = lookahead;
        o.phrase_bars = 1;
        o.programs[0] = 42;
        for (int c = 0; c < 16; ++c) o.live.channel_programs[c] = c == 9 ? -1 : 52;
        o.live.follow_clock = follow ? 1 : 0;
        CHECK_EQ(sage_jam_create(model, &o, &jam), SAGE_OK);
        CHECK_EQ(sage_jam_get_live(jam, &live), SAGE_OK);
        CHECK_EQ(sage_jam_player_create(jam, lead, &player), SAGE_OK);
    }
    ~PlayedJam() {
        sage_jam_player_free(player);
        sage_jam_free(jam);
        sage_model_free(model);
    }
    // The musician's phrase: two quarter notes from `from_us`.
    void phrase(int64_t from_us) {
        for (int k = 0; k < 2; ++k) {
            CHECK_EQ(sage_live_note(live, from_us + k * kQuarter, 0, 60 + 2 * k, 90), SAGE_OK);
            CHECK_EQ(sage_live_note(live, from_us + k * kQuarter + kQuarter / 2, 0, 60 + 2 * k, 0),
                     SAGE_OK);
        }
    }
    std::vector<sage_jam_note> poll(int64_t now) {
        std::vector<sage_jam_note> out;
        sage_jam_note notes[4];  // small: the player is asked again while it fills it
        size_t count = 0;
        do {
            CHECK_EQ(sage_jam_player_poll(player, now, notes, 4, &count), SAGE_OK);
            out.insert(out.end(), notes, notes + count);
        } while (count == 4);
        return out;
    }
    Bytes take_due(int64_t now, size_t capacity = 256) {
        Bytes out;
        uint8_t bytes[256];
        size_t n = 0;
        do {
            CHECK_EQ(sage_jam_player_take_due(player, now, bytes, capacity, &n), SAGE_OK);
            out.insert(out.end(), bytes, bytes + n);
        } while (n > 0);
        return out;
    }
    Bytes stop() {
        Bytes out;
        uint8_t bytes[256];
        size_t n = 0;
        do {
            CHECK_EQ(sage_jam_player_stop(player, bytes, sizeof bytes, &n), SAGE_OK);
            out.insert(out.end(), bytes, bytes + n);
        } while (n > 0);
        return out;
    }
    sage_jam_player_state state() const {
        sage_jam_player_state st{};
        CHECK_EQ(sage_jam_player_get_state(player, &st), SAGE_OK);
        return st;
    }
    int64_t time_of(int64_t tick) const {
        int64_t t = 0;
        CHECK_EQ(sage_live_time_of(live, tick, &t), SAGE_OK);
        return t;
    }
};

// The note-ons in bytes as (channel, pitch), in order.
std::vector<std::pair<int, int>> note_ons(const Bytes& b) {
    std::vector<std::pair<int, int>> ons;
    for (size_t i = 0; i + 2 < b.size(); ++i)
        if ((b[i] & 0xF0) == 0x90 && b[i + 2] > 0) ons.emplace_back(b[i] & 0x0F, b[i + 1]);
    return ons;
}

// The player queues exactly the notes the jam decides (compared with a second jam of the same
// options polled directly), and each note-on goes out at the first call at or after its time_us.
TEST(the_player_plays_the_jams_notes_at_their_times) {
    PlayedJam played;
    sage_jam_options o{};
    CHECK_EQ(sage_jam_get_options(played.jam, &o), SAGE_OK);
    sage_jam* reference = nullptr;
    CHECK_EQ(sage_jam_create(played.model, &o, &reference), SAGE_OK);
    sage_live* reference_live = nullptr;
    CHECK_EQ(sage_jam_get_live(reference, &reference_live), SAGE_OK);
    played.phrase(0);
    for (int k = 0; k < 2; ++k) {
        CHECK_EQ(sage_live_note(reference_live, k * kQuarter, 0, 60 + 2 * k, 90), SAGE_OK);
        CHECK_EQ(sage_live_note(reference_live, k * kQuarter + kQuarter / 2, 0, 60 + 2 * k, 0),
                 SAGE_OK);
    }
    std::vector<sage_jam_note> queued, decided;
    std::vector<std::tuple<int64_t, int, int>> sent, expected;  // (call's time, channel, pitch)
    for (int64_t now = 0; now < 6 * kBar; now += 1000) {
        const std::vector<sage_jam_note> notes = played.poll(now);
        queued.insert(queued.end(), notes.begin(), notes.end());
        for (const auto& [channel, pitch] : note_ons(played.take_due(now)))
            sent.emplace_back(now, channel, pitch);
        sage_jam_note batch[64];
        size_t count = 0;
        do {
            CHECK_EQ(sage_jam_poll(reference, now, batch, 64, &count), SAGE_OK);
            decided.insert(decided.end(), batch, batch + count);
        } while (count == 64);
    }
    CHECK(decided.size() > 2);
    CHECK_EQ(queued.size(), decided.size());
    for (size_t i = 0; i < std::min(queued.size(), decided.size()); ++i) {
        CHECK_EQ(queued[i].tick, decided[i].tick);
        CHECK_EQ(queued[i].time_us, decided[i].time_us);
        CHECK_EQ(queued[i].end_us, decided[i].end_us);
        CHECK_EQ(queued[i].pitch, decided[i].pitch);
        CHECK_EQ(queued[i].channel, decided[i].channel);
        // Every answer note sounds in the answer bar, bar 1; its note-on goes out on time.
        CHECK(decided[i].time_us >= kBar && decided[i].time_us < 2 * kBar);
        expected.emplace_back((decided[i].time_us + 999) / 1000 * 1000, decided[i].channel,
                              decided[i].pitch);
    }
    std::sort(sent.begin(), sent.end());
    std::sort(expected.begin(), expected.end());
    CHECK(sent == expected);
    const sage_jam_player_state st = played.state();
    CHECK_EQ(st.notes, uint64_t{decided.size()});
    CHECK_EQ(st.dropped, uint64_t{0});
    CHECK_EQ(st.late_sends, uint64_t{0});
    CHECK_EQ(st.pulses, uint64_t{0});
    CHECK_EQ(st.queued, size_t{0});
    CHECK((played.stop() == Bytes{}));  // nothing sounds, no clock led: nothing to end
    sage_jam_free(reference);
}

// Messages sent more than SAGE_JAM_LATE_US after due count once per call time, the latest kept.
TEST(late_sends_count_once_per_call_time) {
    PlayedJam played;
    played.phrase(0);
    int64_t first = -1;
    for (int64_t now = 0; now < kBar + kQuarter && first < 0; now += 1000) {
        const std::vector<sage_jam_note> notes = played.poll(now);
        if (!notes.empty()) first = notes.front().time_us;
    }
    CHECK(first >= kBar);
    const int64_t now = first + SAGE_JAM_LATE_US + 5000;
    Bytes out;
    uint8_t bytes[3];
    size_t n = 0;
    do {  // one message a call, all at one time: one late send
        CHECK_EQ(sage_jam_player_take_due(played.player, now, bytes, sizeof bytes, &n), SAGE_OK);
        CHECK(n <= 3);
        out.insert(out.end(), bytes, bytes + n);
    } while (n > 0);
    CHECK(!note_ons(out).empty());
    CHECK_EQ(played.state().late_sends, uint64_t{1});
    CHECK_EQ(played.state().worst_late_us, SAGE_JAM_LATE_US + 5000);
}

// Leading: Start with the first pulse at bar 0, then 24 pulses a quarter note at the live
// encoder's times (a pulse on a grid tick exactly at the tick's time, before that tick's notes),
// one message a call when asked, and Stop at the end; nothing after it.
TEST(a_led_clock_starts_pulses_and_stops) {
    PlayedJam played(1);
    CHECK((played.take_due(0, SAGE_MIDI_MAX_MESSAGE_BYTES) == Bytes{0xFA, 0xF8}));
    uint8_t one[3];
    size_t n = 0;
    int64_t wait = 0;
    CHECK_EQ(sage_jam_player_wait(played.player, 20000, &wait), SAGE_OK);
    CHECK_EQ(wait, int64_t{833});  // the next pulse, at 500000 / 24 (rounded)
    CHECK((played.take_due(20832) == Bytes{}));
    CHECK((played.take_due(20833) == Bytes{0xF8}));
    played.phrase(0);
    uint64_t pulses = 2, notes_seen = 0;
    for (int64_t now = 21000; now < 3 * kBar; now += 1000) {
        played.poll(now);
        const Bytes out = played.take_due(now);
        const uint64_t due = static_cast<uint64_t>(now * 24 / kQuarter) + 1;  // pulses 0..due-1
        pulses += std::count(out.begin(), out.end(), 0xF8);
        CHECK_EQ(pulses, due);
        // A pulse due with a note goes before it.
        const auto on =
            std::find_if(out.begin(), out.end(), [](uint8_t b) { return b >= 0x90 && b < 0xA0; });
        if (on != out.end()) {
            ++notes_seen;
            CHECK(std::find(on, out.end(), 0xF8) == out.end());
        }
    }
    CHECK(notes_seen > 0);
    CHECK_EQ(played.state().pulses, pulses);
    // A grid tick's pulse falls at the tick's time.
    const int64_t tick = 3 * 4 * played.tpq + 1;
    const int64_t pulse_of_tick = tick * 24 / played.tpq;
    CHECK_EQ(pulse_of_tick * played.tpq, tick * 24);
    played.take_due(played.time_of(tick) - 1);
    CHECK_EQ(played.state().pulses, static_cast<uint64_t>(pulse_of_tick));
    CHECK((played.take_due(played.time_of(tick)) == Bytes{0xF8}));
    // The end: note-offs for what sounds, then Stop; then nothing more.
    const Bytes end = played.stop();
    CHECK(!end.empty() && end.back() == 0xFC);
    CHECK_EQ(std::count(end.begin(), end.end(), 0xFC), 1L);
    CHECK((played.take_due(10 * kBar) == Bytes{}));
    CHECK_EQ(sage_jam_player_stop(played.player, one, sizeof one, &n), SAGE_OK);
    CHECK_EQ(n, size_t{0});
}

// Following: a note goes out when the clock's pulse reaches its tick; a Stop releases the notes
// sounding and nothing goes out until Continue; a Start later drops the notes decided for ticks
// before its downbeat (never sent), and a leading player is refused.
TEST(a_followed_clock_plays_on_its_pulses_stops_and_jumps) {
    {
        PlayedJam refused(0, true);
        sage_jam_player* player = nullptr;
        CHECK_EQ(sage_jam_player_create(refused.jam, 1, &player), SAGE_ERR_ARGUMENT);
        CHECK(player == nullptr);
    }
    PlayedJam played(0, true);
    int64_t now = 0;
    int64_t pulse = 0;  // pulses sent since the last Start
    std::vector<sage_jam_note> queued;
    std::vector<int64_t> queued_at;  // the clock's tick when each was queued
    auto send = [&](std::vector<uint8_t> bytes) {
        CHECK_EQ(sage_live_midi(played.live, now, bytes.data(), bytes.size()), SAGE_OK);
    };
    auto clock_tick = [&] {
        sage_live_counts c{};
        CHECK_EQ(sage_live_get_counts(played.live, &c), SAGE_OK);
        return c.clock_tick;
    };
    // A pulse's time: the pulse (or none, stopped), a poll, what is due. Each note-on goes out
    // at the pulse of its tick (or, decided after it, at once).
    auto step = [&](bool pulse_it) {
        const int64_t before = clock_tick();
        now += kQuarter / 24;
        if (pulse_it) {
            send({0xF8});
            ++pulse;
        }
        const int64_t tick = clock_tick();
        const std::vector<sage_jam_note> notes = played.poll(now);
        queued.insert(queued.end(), notes.begin(), notes.end());
        queued_at.insert(queued_at.end(), notes.size(), tick);
        const Bytes b = played.take_due(now);
        for (const auto& [channel, pitch] : note_ons(b)) {
            bool found = false;
            for (size_t i = 0; i < queued.size(); ++i)
                found = found || (queued[i].channel == channel && queued[i].pitch == pitch &&
                                  queued[i].tick <= tick &&
                                  (queued[i].tick > before || queued_at[i] == tick));
            CHECK(found);
        }
        return b;
    };
    send({0xFA});
    // A phrase on the pulses of bar 0, answered in bar 1; Stop a beat into bar 1.
    Bytes out;
    for (int k = 0; k < 24 * 5; ++k) {
        if (k == 0 || k == 24) send({0x90, static_cast<uint8_t>(60 + k / 12), 90});
        if (k == 12 || k == 36) send({0x90, static_cast<uint8_t>(60 + (k - 12) / 12), 0});
        const Bytes b = step(true);
        out.insert(out.end(), b.begin(), b.end());
    }
    CHECK(!note_ons(out).empty());
    int sounding = 0;
    for (size_t i = 0; i + 2 < out.size(); ++i) {
        if ((out[i] & 0xF0) == 0x90 && out[i + 2] > 0) ++sounding;
        if ((out[i] & 0xF0) == 0x80) --sounding;
    }
    const int64_t stop_tick = clock_tick();
    send({0xFC});
    const Bytes released = played.take_due(now);
    CHECK_EQ(static_cast<int>(std::count_if(released.begin(), released.end(),
                                            [](uint8_t b) { return (b & 0xF0) == 0x80; })),
             sounding);
    CHECK(note_ons(released).empty());
    for (int k = 0; k < 48; ++k) CHECK(note_ons(step(false)).empty());  // stopped
    // Start again: the clock entered bar 1, so its downbeat is bar 2's; the rest of bar 1's
    // answer, queued, is never played.
    CHECK(std::any_of(queued.begin(), queued.end(),
                      [&](const sage_jam_note& j) { return j.tick > stop_tick; }));
    send({0xFA});
    sage_live_counts counts{};
    CHECK_EQ(sage_live_get_counts(played.live, &counts), SAGE_OK);
    CHECK_EQ(counts.clock_from_tick, 2 * 4 * played.tpq);
    for (int k = 0; k < 24 * 4; ++k) CHECK(note_ons(step(true)).empty());
    // The input ends: following, the player is done once closing (no pulses will come).
    CHECK_EQ(sage_jam_player_input_ended(played.player, now), SAGE_OK);
    played.take_due(now + 20 * kBar);
    CHECK(played.state().closing == 1 && played.state().done == 1);
}

// After the input ends in bar b, the jam is polled on until bar b + 2 * phrase_bars + later + 2
// starts (later: 1 in call and response, lookahead_bars accompanying), then not; the player is
// done once what is queued has played.
TEST(the_tail_lasts_the_bars_a_last_phrase_needs) {
    for (const uint32_t lookahead : {0u, 1u, 3u}) {
        for (const int mode : {SAGE_JAM_CALL_RESPONSE, SAGE_JAM_ACCOMPANY}) {
            if (mode == SAGE_JAM_CALL_RESPONSE && lookahead != 1) continue;
            PlayedJam played(0, false, mode, lookahead);
            played.phrase(0);
            const int64_t ended = kBar + kBar / 3;  // in bar 1
            for (int64_t now = 0; now <= ended; now += 1000) {
                played.poll(now);
                played.take_due(now);
            }
            CHECK_EQ(sage_jam_player_input_ended(played.player, ended), SAGE_OK);
            CHECK_EQ(sage_jam_player_input_ended(played.player, ended + kBar), SAGE_OK);  // once
            const uint32_t later = mode == SAGE_JAM_ACCOMPANY ? lookahead : 1;
            const int64_t close = (1 + 2 * 1 + later + 2) * kBar;
            played.take_due(close);
            CHECK_EQ(played.state().closing, 0);
            played.poll(close + 1);
            CHECK_EQ(played.state().closing, 1);
            sage_jam_note note{};
            size_t count = 1;
            CHECK_EQ(sage_jam_player_poll(played.player, close + 2, &note, 1, &count), SAGE_OK);
            CHECK_EQ(count, size_t{0});
            played.take_due(close + 10 * kBar);
            CHECK_EQ(played.state().queued, size_t{0});
            CHECK_EQ(played.state().done, 1);
        }
    }
}

TEST(the_players_arguments_are_checked) {
    PlayedJam played;
    sage_jam_player* player = nullptr;
    CHECK_EQ(sage_jam_player_create(nullptr, 0, &player), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_jam_player_create(played.jam, 0, nullptr), SAGE_ERR_ARGUMENT);
    uint8_t bytes[4];
    size_t n = 7;
    CHECK_EQ(sage_jam_player_take_due(played.player, 0, bytes, 2, &n), SAGE_ERR_ARGUMENT);
    CHECK_EQ(n, size_t{0});
    CHECK_EQ(sage_jam_player_take_due(played.player, 0, nullptr, 4, &n), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_jam_player_stop(played.player, bytes, 0, &n), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_jam_player_take_due(nullptr, 0, bytes, 4, &n), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_jam_player_poll(played.player, 0, nullptr, 1, &n), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_jam_player_wait(played.player, 0, nullptr), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_jam_player_get_state(played.player, nullptr), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_jam_player_input_ended(nullptr, 0), SAGE_ERR_ARGUMENT);
    sage_jam_player_free(nullptr);
}

}  // namespace

SAGE_TEST_MAIN()
