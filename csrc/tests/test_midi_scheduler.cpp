// The MIDI scheduler through the C API (sage_midi_scheduler_*): programs and channels, the order of
// messages at one time, overlapping notes of one pitch, a followed clock's Start (skip_before) and
// Stop (release), silence, and the argument checks. Real bytes through ptys are the front ends'
// tests (tests/test_midi_out.py, tests/test_jam.py).
#include <cstdint>
#include <vector>

#include "sage_edge/sage_edge.h"
#include "testing.h"

namespace {

using Bytes = std::vector<uint8_t>;

struct Scheduler {
    sage_midi_scheduler* s = nullptr;
    explicit Scheduler(size_t notes) { CHECK_EQ(sage_midi_scheduler_create(notes, &s), SAGE_OK); }
    ~Scheduler() { sage_midi_scheduler_free(s); }
    bool add(double time, double end, int32_t pitch, int32_t program,
             int32_t channel = SAGE_MIDI_CHANNEL_AUTO) {
        const sage_midi_note note{time, end, pitch, 90, program, channel};
        return sage_midi_scheduler_add(s, &note) == SAGE_OK;
    }
    sage_midi_scheduler_state state() const {
        sage_midi_scheduler_state st{};
        CHECK_EQ(sage_midi_scheduler_get_state(s, &st), SAGE_OK);
        return st;
    }
    Bytes take_due(double time) {
        uint8_t out[256];
        size_t n = 0;
        CHECK_EQ(sage_midi_scheduler_take_due(s, time, out, sizeof out, &n), SAGE_OK);
        return Bytes(out, out + n);
    }
};

TEST(programs_go_out_once_per_channel_and_offs_before_ons) {
    Scheduler s(16);
    CHECK(s.add(0.0, 1.0, 60, 52));
    CHECK(s.add(0.0, 1.0, 36, -1));  // drums: channel 10, no program change
    CHECK(s.add(1.0, 2.0, 62, 52));  // program 52 again: its channel, no program change
    CHECK(s.add(1.0, 2.0, 55, 53));  // a new program: the next channel
    CHECK((s.take_due(0.0) == Bytes{0xC0, 52, 0x90, 60, 90, 0x99, 36, 90}));
    // At 1: the note-offs, then program 53's change, then the note-ons.
    CHECK((s.take_due(1.0) ==
           Bytes{0x80, 60, 64, 0x89, 36, 64, 0xC1, 53, 0x90, 62, 90, 0x91, 55, 90}));
    CHECK_EQ(s.state().queued, size_t{2});
    CHECK_EQ(s.state().next_time, 2.0);
}

TEST(a_channel_given_is_kept_and_its_program_changes_when_the_program_does) {
    Scheduler s(16);
    CHECK(s.add(0.0, 1.0, 60, 52, 3));
    CHECK(s.add(1.0, 2.0, 62, 53, 3));  // another program on channel 3: a program change
    CHECK(s.add(1.0, 2.0, 36, -1, 9));  // the drum channel never gets one
    CHECK((s.take_due(0.0) == Bytes{0xC3, 52, 0x93, 60, 90}));
    CHECK((s.take_due(1.0) == Bytes{0x83, 60, 64, 0xC3, 53, 0x93, 62, 90, 0x99, 36, 90}));
}

// Two notes of one pitch on one channel, the second struck while the first sounds and ending after
// it: one note-off, when the second ends (the first's end must not cut it).
TEST(overlapping_notes_of_one_pitch_sound_until_the_last_ends) {
    Scheduler s(16);
    CHECK(s.add(0.0, 2.0, 60, 52, 0));
    CHECK(s.add(1.0, 3.0, 60, 52, 0));
    CHECK((s.take_due(0.0) == Bytes{0xC0, 52, 0x90, 60, 90}));
    CHECK((s.take_due(1.0) == Bytes{0x90, 60, 90}));
    CHECK((s.take_due(2.5) == Bytes{}));  // the first note's end: nothing
    CHECK((s.take_due(3.0) == Bytes{0x80, 60, 64}));
    CHECK_EQ(s.state().queued, size_t{0});
}

// A followed clock's Start jumps the music past notes decided before it (docs/jam.md, "A Start
// that comes late"): skip_before drops their note-ons, and their note-offs whenever due, but sends
// the program changes and the note-offs of notes that sound.
TEST(a_skip_drops_the_notes_before_it_and_keeps_programs_and_endings) {
    Scheduler s(21);
    CHECK(s.add(0.0, 1.0, 60, 52));               // sounds from 0 to 1
    CHECK_EQ(s.take_due(0.0).size(), size_t{5});  // program 52, note-on
    CHECK(s.add(1.5, 2.5, 62, 52));               // before the skip, ends after it
    CHECK(s.add(1.5, 1.75, 64, 53));              // program 53's first note, before the skip
    CHECK(s.add(3.0, 4.0, 65, 52));               // after the skip
    uint8_t out[64];
    size_t n = 0;
    CHECK_EQ(sage_midi_scheduler_skip_before(s.s, 2.0, out, sizeof out, &n), SAGE_OK);
    // The note-off of 60 (channel 0), then program 53 on channel 1.
    CHECK((Bytes(out, out + n) == Bytes{0x80, 60, 64, 0xC1, 53}));
    // 62's note-off (at 2.5) is not sent: its note-on was skipped.
    CHECK((s.take_due(10.0) == Bytes{0x90, 65, 90, 0x80, 65, 64}));
    CHECK_EQ(s.state().queued, size_t{0});
}

// A followed clock's Stop: the notes sounding end now, their note-offs are not sent again, the
// notes to come stay queued; silence ends the sounding notes and forgets the rest.
TEST(release_ends_the_sounding_notes_and_silence_forgets_the_rest) {
    Scheduler s(16);
    CHECK(s.add(0.0, 2.0, 60, 52));
    CHECK(s.add(3.0, 4.0, 62, 52));
    CHECK_EQ(s.take_due(0.0).size(), size_t{5});
    uint8_t out[64];
    size_t n = 0;
    CHECK_EQ(sage_midi_scheduler_release(s.s, out, sizeof out, &n), SAGE_OK);
    CHECK((Bytes(out, out + n) == Bytes{0x80, 60, 64}));
    CHECK_EQ(sage_midi_scheduler_release(s.s, out, sizeof out, &n), SAGE_OK);
    CHECK_EQ(n, size_t{0});
    CHECK((s.take_due(3.0) == Bytes{0x90, 62, 90}));  // 60's note-off at 2 is not sent again
    CHECK_EQ(sage_midi_scheduler_silence(s.s, out, sizeof out, &n), SAGE_OK);
    CHECK((Bytes(out, out + n) == Bytes{0x80, 62, 64}));
    CHECK_EQ(s.state().queued, size_t{0});
    // Out of room for the bytes: call again while it writes any.
    for (int pitch = 60; pitch < 63; ++pitch) CHECK(s.add(5.0, 6.0, pitch, 52));
    CHECK_EQ(s.take_due(5.0).size(), size_t{9});
    Bytes all;
    do {
        CHECK_EQ(sage_midi_scheduler_silence(s.s, out, 4, &n), SAGE_OK);
        all.insert(all.end(), out, out + n);
    } while (n > 0);
    CHECK((all == Bytes{0x80, 60, 64, 0x80, 61, 64, 0x80, 62, 64}));
}

TEST(room_and_arguments_are_checked) {
    sage_midi_scheduler* none = nullptr;
    CHECK_EQ(sage_midi_scheduler_create(0, &none), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_midi_scheduler_create(SAGE_MIDI_SCHEDULER_MAX_NOTES + 1, &none),
             SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_midi_scheduler_create(1, nullptr), SAGE_ERR_ARGUMENT);
    Scheduler s(2);
    CHECK(s.add(0.0, 1.0, 60, 52));
    CHECK_EQ(s.state().free_notes, size_t{1});  // a program change, a note-on, a note-off queued
    CHECK(s.add(0.0, 1.0, 62, 52));
    CHECK_EQ(s.state().free_notes, size_t{0});
    const sage_midi_note note{0.0, 1.0, 64, 90, 52, SAGE_MIDI_CHANNEL_AUTO};
    CHECK_EQ(sage_midi_scheduler_add(s.s, &note), SAGE_ERR_STATE);
    CHECK_EQ(s.state().queued, size_t{5});  // nothing queued
    sage_midi_note bad = note;
    bad.channel = 16;
    CHECK_EQ(sage_midi_scheduler_add(s.s, &bad), SAGE_ERR_ARGUMENT);
    size_t n = 7;
    CHECK_EQ(sage_midi_scheduler_take_due(s.s, 0.0, nullptr, 8, &n), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_midi_scheduler_take_due(nullptr, 0.0, nullptr, 0, &n), SAGE_ERR_ARGUMENT);
    CHECK_EQ(sage_midi_scheduler_take_due(s.s, 0.0, nullptr, 0, &n), SAGE_OK);
    CHECK_EQ(n, size_t{0});
    sage_midi_scheduler_free(nullptr);
}

}  // namespace

SAGE_TEST_MAIN()
