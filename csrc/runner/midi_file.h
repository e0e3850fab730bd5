// Standard MIDI File writer (type 1) for the runner: note events in quarter notes -> bytes.
//
// Layout: a conductor track (tempo, time signatures) and one track per program, in ascending
// program order with drums (-1) last. Each program track sets its channel's program at tick 0,
// then holds its notes as note-on / note-off pairs (note-on velocity 0 is never used). Channels
// are given to programs in track order, skipping channel 10 (index 9), which is the drums';
// with more than 15 melodic programs channels are reused. Times are rounded to the nearest tick.
// The conductor track carries a time-signature event at each bar whose signature differs from the
// bar before (the first bar always); with no bars, one 4/4 at tick 0. Where the music has an end
// (the last bar line), notes are cut there, so the file holds exactly those bars.
#pragma once

#include <sage_edge/sage_edge.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sage::runner {

constexpr int kMidiTicksPerQuarter = 480;

// What the file says about time besides the notes: the tempo, the bars in order (start and time
// signature, from sage_session_get_bar), and where the music ends in quarters (0: no end, nothing
// is cut). A signature the MIDI file cannot hold (a denominator that is not a power of two up to
// 64, a numerator outside 1..255) is left out.
struct MidiTiming {
    double tempo_bpm = 120.0;  // must be > 0
    std::vector<sage_bar> bars;
    double end = 0;
};

// The bytes of the file.
std::vector<uint8_t> midi_file_bytes(const sage_note_event* events, size_t n,
                                     const MidiTiming& timing,
                                     int ticks_per_quarter = kMidiTicksPerQuarter);

// Writes the file; on failure returns false and sets *error.
bool write_midi_file(const std::string& path, const sage_note_event* events, size_t n,
                     const MidiTiming& timing, std::string* error);

}  // namespace sage::runner
