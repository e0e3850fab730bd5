// Standard MIDI File writer (type 1) for the runner: note events in quarter notes -> bytes.
//
// Layout: a conductor track (tempo, 4/4 time signature) and one track per program, in ascending
// program order with drums (-1) last. Each program track sets its channel's program at tick 0,
// then holds its notes as note-on / note-off pairs (note-on velocity 0 is never used). Channels
// are given to programs in track order, skipping channel 10 (index 9), which is the drums';
// with more than 15 melodic programs channels are reused. Times are rounded to the nearest tick.
#pragma once

#include <sage_edge/sage_edge.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sage::runner {

constexpr int kMidiTicksPerQuarter = 480;

// The bytes of the file. tempo_bpm must be > 0.
std::vector<uint8_t> midi_file_bytes(const sage_note_event* events, size_t n, double tempo_bpm,
                                     int ticks_per_quarter = kMidiTicksPerQuarter);

// Writes the file; on failure returns false and sets *error.
bool write_midi_file(const std::string& path, const sage_note_event* events, size_t n,
                     double tempo_bpm, std::string* error);

}  // namespace sage::runner
