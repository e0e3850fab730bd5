// Real-time MIDI 1.0 output for hardware: the bytes of timed channel messages to a device (a serial
// port, a USB MIDI device such as /dev/snd/midiC1D0, a pseudo-terminal) or a file.
//
// The messages and their times come from the engine's MIDI scheduler (sage_midi_scheduler_* in
// the C API); this file opens the devices and writes the bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sage::runner {

// Opens a MIDI device or file with open(2)'s `flags`; a terminal (a serial port, a pty) is put in
// raw mode so no byte is translated, its baud rate left as configured. Returns the descriptor, or
// -1 with *error set (error may be null: nothing is allocated then). MidiOut and MidiIn open
// through it.
int open_midi_device(const std::string& path, int flags, std::string* error);

// The output device or file, opened for writing. A terminal (a serial port or a pty) is put in raw
// mode so no byte is translated; its baud rate is left as configured (see docs/deploy.md).
class MidiOut {
  public:
    MidiOut() = default;
    MidiOut(const MidiOut&) = delete;
    MidiOut& operator=(const MidiOut&) = delete;
    ~MidiOut();

    // Opens (or creates) path; on failure returns false and sets *error.
    bool open(const std::string& path, std::string* error);
    // Writes all n bytes (retrying short writes); on failure returns false and sets *error.
    bool write(const uint8_t* bytes, size_t n, std::string* error);
    void close();

  private:
    int fd_ = -1;
};

}  // namespace sage::runner
