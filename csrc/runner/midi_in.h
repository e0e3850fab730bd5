// Real-time MIDI 1.0 input: the bytes a serial port (DIN MIDI on a UART), a USB MIDI device
// (/dev/snd/midiC1D0) or a pseudo-terminal delivers, read without blocking. A terminal is put in
// raw mode so no byte is translated; its baud rate is left as configured (docs/jam.md).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace sage::runner {

// What a lost input says to the jam (--reconnect): All Notes Off (controller 123) on each of the 16
// channels, so that the keys held when it went are released (docs/jam.md, "When a port goes away").
struct AllNotesOff {
    uint8_t bytes[48];
    constexpr AllNotesOff() : bytes{} {
        for (int c = 0; c < 16; ++c) {
            bytes[3 * c] = static_cast<uint8_t>(0xB0 | c);
            bytes[3 * c + 1] = 123;
        }
    }
};

class MidiIn {
  public:
    // What read returns besides a count of bytes (0: the end of the input, the other side closed;
    // EOF or EIO, which a pty whose other side closed gives).
    static constexpr ssize_t kNothing = -1;  // nothing is waiting
    static constexpr ssize_t kError = -2;    // *error says what
    static constexpr ssize_t kRemoved = -3;  // ENODEV, ENXIO: the device was removed (unplugged)

    MidiIn() = default;
    MidiIn(const MidiIn&) = delete;
    MidiIn& operator=(const MidiIn&) = delete;
    ~MidiIn();

    // Opens path for reading; on failure returns false and sets *error.
    bool open(const std::string& path, std::string* error);
    // Opens the path of open() again after close(): true when it opened. Allocates nothing.
    bool reopen();
    int fd() const { return fd_; }
    // Whether the path opened is a character device (a raw MIDI device, a serial port, a pty):
    // the inputs --reconnect reopens; a regular file or a FIFO ends as it always does.
    bool character_device() const { return character_device_; }
    // Reads what has arrived: > 0 bytes, 0 at the end of the input, or kNothing, kError (setting
    // *error) or kRemoved.
    ssize_t read(uint8_t* bytes, size_t capacity, std::string* error);
    void close();

  private:
    std::string path_;
    int fd_ = -1;
    bool character_device_ = false;
};

}  // namespace sage::runner
