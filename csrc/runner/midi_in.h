// Real-time MIDI 1.0 input: the bytes a serial port (DIN MIDI on a UART), a USB MIDI device
// (/dev/snd/midiC1D0) or a pseudo-terminal delivers, read without blocking. A terminal is put in
// raw mode so no byte is translated; its baud rate is left as configured (docs/jam.md).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace sage::runner {

class MidiIn {
  public:
    MidiIn() = default;
    MidiIn(const MidiIn&) = delete;
    MidiIn& operator=(const MidiIn&) = delete;
    ~MidiIn();

    // Opens path for reading; on failure returns false and sets *error.
    bool open(const std::string& path, std::string* error);
    int fd() const { return fd_; }
    // Reads what has arrived: > 0 bytes, 0 at the end of the input (the other side closed), -1
    // when nothing is waiting. On an error returns -2 and sets *error.
    ssize_t read(uint8_t* bytes, size_t capacity, std::string* error);
    void close();

  private:
    int fd_ = -1;
};

}  // namespace sage::runner
