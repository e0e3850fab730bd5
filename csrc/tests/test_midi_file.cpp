// The runner's Standard MIDI File writer: the bytes parse back (chunks, lengths, events) into the
// notes that went in. tests/test_runner.py also reads the runner's files with mido. And its
// real-time scheduler's skip (a followed clock's Start).
#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "../runner/midi_file.h"
#include "testing.h"

namespace {

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
    return uint32_t{b[at]} << 24 | uint32_t{b[at + 1]} << 16 | uint32_t{b[at + 2]} << 8 | b[at + 3];
}
uint32_t be16(const std::vector<uint8_t>& b, size_t at) {
    return uint32_t{b[at]} << 8 | b[at + 1];
}

struct ParsedTrack {
    std::vector<std::tuple<uint32_t, int, int, int>> notes;  // on tick, off tick, pitch, velocity
    int program = -1;                                        // from the program change
    int channel = -1;
    uint32_t tempo_micros = 0;
    bool ended = false;  // an end-of-track meta event closes it
};

// A minimal reader for what the writer emits: no running status, meta and channel events.
ParsedTrack parse_track(const std::vector<uint8_t>& b, size_t begin, size_t end) {
    ParsedTrack track;
    std::map<int, std::pair<uint32_t, int>> sounding;  // pitch -> on tick, velocity
    uint32_t tick = 0;
    size_t i = begin;
    while (i < end && !track.ended) {
        uint32_t delta = 0;
        uint8_t byte;
        do {
            byte = b[i++];
            delta = delta << 7 | (byte & 0x7F);
        } while (byte & 0x80);
        tick += delta;
        const uint8_t status = b[i++];
        if (status == 0xFF) {
            const uint8_t type = b[i++];
            const uint8_t length = b[i++];
            if (type == 0x51) track.tempo_micros = be32(b, i - 1) & 0xFFFFFF;
            if (type == 0x2F) track.ended = true;
            i += length;
        } else if ((status & 0xF0) == 0xC0) {
            track.program = b[i++];
            track.channel = status & 0x0F;
        } else if ((status & 0xF0) == 0x90) {
            sounding[b[i]] = {tick, b[i + 1]};
            track.channel = status & 0x0F;
            i += 2;
        } else if ((status & 0xF0) == 0x80) {
            const auto on = sounding.at(b[i]);
            track.notes.emplace_back(on.first, tick, b[i], on.second);
            i += 2;
        } else {
            CHECK(false);  // the writer emits nothing else
            break;
        }
    }
    CHECK_EQ(i, end);  // the chunk length is exact
    std::sort(track.notes.begin(), track.notes.end());
    return track;
}

}  // namespace

TEST(type_1_file_with_one_track_per_program) {
    const sage_note_event events[] = {
        {0.0, 1.0, 60, 95, 52},
        {0.0, 0.5, 48, 63, 42},
        {2.5, 0.25, 36, 127, -1},
        {1.0, 1.0, 60, 95, 52},  // the same pitch again right after the first ends
        {4.5, 2.0, 72, 95, 0},
        {1.0 / 3.0, 1.0 / 3.0, 50, 80, 42},  // a triplet rounds
    };
    const std::vector<uint8_t> b = sage::runner::midi_file_bytes(
        events, sizeof events / sizeof events[0], sage::runner::MidiTiming{96.37, {}, 0});

    // Header chunk: "MThd", 6, type 1, conductor + 4 programs (0, 42, 52, drums), 480 per quarter.
    CHECK(std::string(b.begin(), b.begin() + 4) == "MThd");
    CHECK_EQ(be32(b, 4), 6u);
    CHECK_EQ(be16(b, 8), 1u);
    CHECK_EQ(be16(b, 10), 5u);
    CHECK_EQ(be16(b, 12), 480u);

    std::vector<ParsedTrack> tracks;
    size_t at = 14;
    while (at + 8 <= b.size()) {
        CHECK(std::string(b.begin() + at, b.begin() + at + 4) == "MTrk");
        const uint32_t length = be32(b, at + 4);
        CHECK(at + 8 + length <= b.size());
        tracks.push_back(parse_track(b, at + 8, at + 8 + length));
        at += 8 + length;
    }
    CHECK_EQ(at, b.size());
    CHECK_EQ(tracks.size(), 5u);
    if (tracks.size() != 5) return;
    for (const ParsedTrack& t : tracks) CHECK(t.ended);

    CHECK_EQ(tracks[0].tempo_micros, 622600u);  // round(60e6 / 96.37)
    CHECK(tracks[0].notes.empty());

    using Note = std::tuple<uint32_t, int, int, int>;
    CHECK_EQ(tracks[1].program, 0);
    CHECK((tracks[1].notes == std::vector<Note>{{2160, 3120, 72, 95}}));
    CHECK_EQ(tracks[2].program, 42);
    CHECK((tracks[2].notes == std::vector<Note>{{0, 240, 48, 63}, {160, 320, 50, 80}}));
    CHECK_EQ(tracks[3].program, 52);
    CHECK((tracks[3].notes == std::vector<Note>{{0, 480, 60, 95}, {480, 960, 60, 95}}));
    CHECK_EQ(tracks[4].program, -1);  // drums: no program change, channel 10
    CHECK_EQ(tracks[4].channel, 9);
    CHECK((tracks[4].notes == std::vector<Note>{{1200, 1320, 36, 127}}));
    // Melodic channels are distinct and never the drum channel.
    CHECK(tracks[1].channel != tracks[2].channel && tracks[2].channel != tracks[3].channel);
    for (int t = 1; t <= 3; ++t) CHECK(tracks[t].channel != 9);
}

TEST(a_note_struck_again_while_it_sounds_ends_there) {
    const sage_note_event events[] = {
        {0.0, 2.0, 60, 90, 52},  // held two beats, struck again after one
        {1.0, 0.5, 60, 80, 52},
        {1.0, 0.5, 64, 80, 52},  // another pitch is left alone
    };
    const std::vector<uint8_t> b = sage::runner::midi_file_bytes(events, 3, {});
    const size_t conductor_end = 22 + be32(b, 18);
    const ParsedTrack track =
        parse_track(b, conductor_end + 8, conductor_end + 8 + be32(b, conductor_end + 4));
    using Note = std::tuple<uint32_t, int, int, int>;
    CHECK((track.notes ==
           std::vector<Note>{{0, 480, 60, 90}, {480, 720, 60, 80}, {480, 720, 64, 80}}));
}

TEST(empty_file_has_only_the_conductor_track) {
    const std::vector<uint8_t> b = sage::runner::midi_file_bytes(nullptr, 0, {});
    CHECK_EQ(be16(b, 10), 1u);
    CHECK(std::string(b.begin() + 14, b.begin() + 18) == "MTrk");
    const ParsedTrack conductor = parse_track(b, 22, 22 + be32(b, 18));
    CHECK_EQ(conductor.tempo_micros, 500000u);
    CHECK_EQ(22 + be32(b, 18), b.size());
}

TEST(long_times_use_multi_byte_delta_times) {
    const sage_note_event events[] = {{1000.0, 300.0, 60, 100, 0}};  // 480000 and 144000 ticks
    const std::vector<uint8_t> b = sage::runner::midi_file_bytes(events, 1, {});
    const size_t track1 = 22 + be32(b, 18);
    const ParsedTrack t = parse_track(b, track1 + 8, track1 + 8 + be32(b, track1 + 4));
    using Note = std::tuple<uint32_t, int, int, int>;
    CHECK((t.notes == std::vector<Note>{{480000, 624000, 60, 100}}));
}

// The conductor track's time-signature events: (tick, numerator, denominator exponent, clocks).
std::vector<std::tuple<uint32_t, int, int, int>> time_signatures(const std::vector<uint8_t>& b) {
    std::vector<std::tuple<uint32_t, int, int, int>> out;
    const size_t end = 22 + be32(b, 18);
    uint32_t tick = 0;
    for (size_t i = 22; i < end;) {
        uint32_t delta = 0;
        uint8_t byte;
        do {
            byte = b[i++];
            delta = delta << 7 | (byte & 0x7F);
        } while (byte & 0x80);
        tick += delta;
        CHECK_EQ(b[i], 0xFF);  // the conductor track holds meta events only
        const uint8_t type = b[i + 1], length = b[i + 2];
        if (type == 0x58) out.emplace_back(tick, b[i + 3], b[i + 4], b[i + 5]);
        i += 3 + length;
    }
    return out;
}

TEST(time_signatures_follow_the_bars_and_the_end_cuts_the_notes) {
    // 4/4, 4/4, 7/4, 3/4, 3/4 bars; the music ends after the fifth bar, at 4+4+7+3+3 = 21 quarters.
    sage::runner::MidiTiming timing{120.0, {}, 21.0};
    timing.bars = {
        {1, 0.0, 4, 4}, {2, 4.0, 4, 4}, {3, 8.0, 7, 4}, {4, 15.0, 3, 4}, {5, 18.0, 3, 4}};
    const sage_note_event events[] = {
        {17.0, 1.0, 60, 90, 0},
        {20.0, 3.0, 62, 90, 0},  // rings past the last bar line: cut there
        {21.0, 1.0, 64, 90, 0},  // starts at the end: left out
    };
    const std::vector<uint8_t> b = sage::runner::midi_file_bytes(events, 3, timing);
    using Signature = std::tuple<uint32_t, int, int, int>;
    CHECK((time_signatures(b) ==
           std::vector<Signature>{{0, 4, 2, 24}, {8 * 480, 7, 2, 24}, {15 * 480, 3, 2, 24}}));
    const size_t track1 = 22 + be32(b, 18);
    const ParsedTrack t = parse_track(b, track1 + 8, track1 + 8 + be32(b, track1 + 4));
    using Note = std::tuple<uint32_t, int, int, int>;
    CHECK(
        (t.notes == std::vector<Note>{{17 * 480, 18 * 480, 60, 90}, {20 * 480, 21 * 480, 62, 90}}));

    // A denominator MIDI cannot write is left out; without bars the file says 4/4.
    timing.bars = {{1, 0.0, 6, 8}, {2, 3.0, 5, 3}};
    CHECK((time_signatures(sage::runner::midi_file_bytes(events, 3, timing)) ==
           std::vector<Signature>{{0, 6, 3, 12}}));
    CHECK((time_signatures(sage::runner::midi_file_bytes(events, 3, {})) ==
           std::vector<Signature>{{0, 4, 2, 24}}));
}

SAGE_TEST_MAIN()
