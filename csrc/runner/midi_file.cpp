#include "midi_file.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <tuple>

namespace sage::runner {

namespace {

constexpr int kDrumChannel = 9;

void put_u16(std::vector<uint8_t>& out, uint32_t v) {
    out.push_back(static_cast<uint8_t>(v >> 8));
    out.push_back(static_cast<uint8_t>(v));
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
    put_u16(out, v >> 16);
    put_u16(out, v & 0xFFFFu);
}

// MIDI variable-length quantity: 7 bits per byte, most significant first, high bit = "more".
void put_varlen(std::vector<uint8_t>& out, uint32_t v) {
    uint8_t bytes[5];
    int n = 0;
    do {
        bytes[n++] = static_cast<uint8_t>(v & 0x7F);
        v >>= 7;
    } while (v != 0);
    while (n-- > 0) out.push_back(static_cast<uint8_t>(bytes[n] | (n > 0 ? 0x80 : 0)));
}

// An "MTrk" chunk around the events in body (delta times already in place).
void put_track(std::vector<uint8_t>& out, const std::vector<uint8_t>& body) {
    out.insert(out.end(), {'M', 'T', 'r', 'k'});
    put_u32(out, static_cast<uint32_t>(body.size()));
    out.insert(out.end(), body.begin(), body.end());
}

void put_end_of_track(std::vector<uint8_t>& body) {
    body.insert(body.end(), {0x00, 0xFF, 0x2F, 0x00});
}

uint32_t to_ticks(double quarters, int ticks_per_quarter) {
    const double ticks = std::nearbyint(quarters * ticks_per_quarter);
    if (!(ticks > 0)) return 0;                                             // negative or NaN
    return ticks < 0x0FFFFFFF ? static_cast<uint32_t>(ticks) : 0x0FFFFFFF;  // varlen limit
}

uint8_t clamp7(int32_t v, int32_t low) {
    return static_cast<uint8_t>(std::min(std::max(v, low), 127));
}

// The MIDI time-signature meta event's denominator is a power of two: its exponent, or -1.
int denominator_exponent(int32_t denominator) {
    for (int e = 0; e <= 6; ++e)
        if (denominator == 1 << e) return e;
    return -1;
}

// Conductor events at tick 0 and at each change of time signature, with delta times.
void put_time_signatures(std::vector<uint8_t>& body, const std::vector<sage_bar>& bars,
                         int ticks_per_quarter) {
    uint32_t tick = 0;
    int32_t numerator = 0, denominator = 0;  // of the last event written
    for (const sage_bar& bar : bars) {
        const int exponent = denominator_exponent(bar.denominator);
        if (exponent < 0 || bar.numerator < 1 || bar.numerator > 255) continue;
        if (bar.numerator == numerator && bar.denominator == denominator) continue;
        const uint32_t at = std::max(tick, to_ticks(bar.start, ticks_per_quarter));
        put_varlen(body, at - tick);
        tick = at;
        // Metronome clicks: one per denominator note, 24 MIDI clocks to the quarter.
        const auto clocks = static_cast<uint8_t>(std::max(1, 96 / bar.denominator));
        body.insert(body.end(), {0xFF, 0x58, 0x04, static_cast<uint8_t>(bar.numerator),
                                 static_cast<uint8_t>(exponent), clocks, 8});
        numerator = bar.numerator;
        denominator = bar.denominator;
    }
    if (numerator == 0) body.insert(body.end(), {0x00, 0xFF, 0x58, 0x04, 4, 2, 24, 8});
}

struct FileNote {
    uint8_t pitch;
    uint32_t on, off;  // ticks
    uint8_t velocity;
};

struct ChannelEvent {
    uint32_t tick;
    uint8_t on;  // 0 = note-off (sorted first at a tick, so a repeated note re-sounds), 1 = on
    uint8_t pitch;
    uint8_t velocity;
};

}  // namespace

std::vector<uint8_t> midi_file_bytes(const sage_note_event* events, size_t n,
                                     const MidiTiming& timing, int ticks_per_quarter) {
    std::vector<int32_t> programs;
    for (size_t i = 0; i < n; ++i)
        programs.push_back(events[i].program < 0 ? -1 : std::min(events[i].program, 127));
    // Ascending program order, drums (-1) last.
    std::sort(programs.begin(), programs.end(),
              [](int32_t a, int32_t b) { return (a < 0 ? 128 : a) < (b < 0 ? 128 : b); });
    programs.erase(std::unique(programs.begin(), programs.end()), programs.end());

    std::vector<uint8_t> out;
    out.insert(out.end(), {'M', 'T', 'h', 'd'});
    put_u32(out, 6);
    put_u16(out, 1);  // type 1: simultaneous tracks
    put_u16(out, static_cast<uint32_t>(programs.size() + 1));
    put_u16(out, static_cast<uint32_t>(ticks_per_quarter));

    // Conductor track: the tempo at tick 0, then the time signatures.
    std::vector<uint8_t> body;
    const double bpm = timing.tempo_bpm > 0 ? timing.tempo_bpm : 120.0;
    const auto micros = static_cast<uint32_t>(
        std::min(std::max(std::nearbyint(60e6 / bpm), 1.0), double{0xFFFFFF}));
    body.insert(body.end(), {0x00, 0xFF, 0x51, 0x03});
    body.insert(body.end(), {static_cast<uint8_t>(micros >> 16), static_cast<uint8_t>(micros >> 8),
                             static_cast<uint8_t>(micros)});
    put_time_signatures(body, timing.bars, ticks_per_quarter);
    put_end_of_track(body);
    put_track(out, body);

    const uint32_t end = timing.end > 0 ? to_ticks(timing.end, ticks_per_quarter) : 0x0FFFFFFF;

    int next_channel = 0;
    std::vector<FileNote> notes;
    std::vector<ChannelEvent> track;
    for (const int32_t program : programs) {
        int channel = kDrumChannel;
        if (program >= 0) {
            channel = next_channel;
            next_channel = (next_channel + 1) % 16;
            if (next_channel == kDrumChannel) next_channel = kDrumChannel + 1;
        }
        notes.clear();
        for (size_t i = 0; i < n; ++i) {
            const int32_t p = events[i].program < 0 ? -1 : std::min(events[i].program, 127);
            if (p != program) continue;
            const uint32_t on = to_ticks(events[i].time, ticks_per_quarter);
            if (on >= end) continue;  // past the last bar line
            const uint32_t length =
                std::max<uint32_t>(1, to_ticks(events[i].duration, ticks_per_quarter));
            notes.push_back({clamp7(events[i].pitch, 0), on, std::min<uint32_t>(on + length, end),
                             clamp7(events[i].velocity, 1)});
        }
        // A channel sounds a pitch once: a note struck again while it sounds ends there (left
        // overlapping, a reader pairs the note-offs first in, first out and gets both lengths
        // wrong).
        std::sort(notes.begin(), notes.end(), [](const FileNote& a, const FileNote& b) {
            return std::tie(a.pitch, a.on, a.off) < std::tie(b.pitch, b.on, b.off);
        });
        for (size_t i = 0; i + 1 < notes.size(); ++i) {
            const FileNote& next = notes[i + 1];
            if (next.pitch == notes[i].pitch && next.on > notes[i].on)
                notes[i].off = std::min(notes[i].off, next.on);
        }
        track.clear();
        for (const FileNote& note : notes) {
            track.push_back({note.on, 1, note.pitch, note.velocity});
            track.push_back({note.off, 0, note.pitch, 0});
        }
        std::sort(track.begin(), track.end(), [](const ChannelEvent& a, const ChannelEvent& b) {
            if (a.tick != b.tick) return a.tick < b.tick;
            if (a.on != b.on) return a.on < b.on;
            if (a.pitch != b.pitch) return a.pitch < b.pitch;
            return a.velocity < b.velocity;
        });

        body.clear();
        if (program >= 0) {  // the drum channel needs no program change
            body.insert(body.end(), {0x00, static_cast<uint8_t>(0xC0 | channel),
                                     static_cast<uint8_t>(program)});
        }
        uint32_t tick = 0;
        for (const ChannelEvent& e : track) {
            put_varlen(body, e.tick - tick);
            tick = e.tick;
            body.push_back(static_cast<uint8_t>((e.on ? 0x90 : 0x80) | channel));
            body.push_back(e.pitch);
            body.push_back(e.on ? e.velocity : 64);  // note-off velocity 64: "no preference"
        }
        put_end_of_track(body);
        put_track(out, body);
    }
    return out;
}

bool write_midi_file(const std::string& path, const sage_note_event* events, size_t n,
                     const MidiTiming& timing, std::string* error) {
    const std::vector<uint8_t> bytes = midi_file_bytes(events, n, timing);
    std::FILE* file = std::fopen(path.c_str(), "wb");
    if (file == nullptr) {
        *error = path + ": " + std::strerror(errno);
        return false;
    }
    const bool written = std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size();
    const bool closed = std::fclose(file) == 0;
    if (!written || !closed) {
        *error = path + ": write failed";
        return false;
    }
    return true;
}

}  // namespace sage::runner
