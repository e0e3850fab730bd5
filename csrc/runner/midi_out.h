// Real-time MIDI 1.0 output for hardware: note events -> timed channel messages -> a byte stream
// (a serial port, a USB MIDI device such as /dev/snd/midiC1D0, a pseudo-terminal or a file).
//
// MidiScheduler turns each decoded note into its messages (a program change the first time a
// program plays, a note-on, a note-off `duration` later) on a fixed-capacity queue ordered by time,
// so a player can sleep until the earliest message is due and send everything due then. Channels
// are given to programs in order of first appearance, skipping channel 10 (index 9), which plays
// the drums (program -1); with more than 15 melodic programs the oldest channel is reused. When two
// notes of one pitch overlap on a channel, the note-off is sent only when the last of them ends, so
// the earlier note's end does not cut the later one. Messages are 3 or 2 bytes each, no running
// status (every message carries its status byte, so a receiver can join the stream at any time).
//
// Nothing here allocates after construction: the queue's storage is reserved once.
#pragma once

#include <sage_edge/sage_edge.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sage::runner {

constexpr int kMidiDrumChannel = 9;
constexpr size_t kMidiMaxMessageBytes = 3;

// One MIDI channel message waiting for its time (in quarter notes from the session's start).
struct TimedMessage {
    double time;
    uint8_t rank;  // at one time: note-offs (0) first, then program changes (1), then note-ons (2)
    uint64_t order;  // then in the order they were queued
    uint8_t bytes[kMidiMaxMessageBytes];
    uint8_t size;
};

class MidiScheduler {
  public:
    // Room for `capacity` messages; each note needs at most 3 (program change, note-on, note-off).
    explicit MidiScheduler(size_t capacity);

    // Queues the note's messages. Returns false, queueing nothing, when there is no room.
    bool add(const sage_note_event& note);

    bool empty() const { return queue_.empty(); }
    size_t free_slots() const { return capacity_ - queue_.size(); }
    // Time of the earliest queued message, in quarter notes; only when !empty().
    double next_time() const { return queue_.front().time; }

    // Removes every message due at or before `time` and writes its bytes to out, in order, as
    // long as they fit in `capacity` bytes (the rest stay queued). Returns the bytes written.
    size_t take_due(double time, uint8_t* out, size_t capacity);

    // For a jump of the music past `time` (a followed clock's Start): removes every message due
    // before it, writing only the program changes and the note-offs of the notes that sound; the
    // note-ons are dropped, and so are their note-offs, whenever due. Returns the bytes written
    // (as many as fit in `capacity`: call again while messages before `time` are left).
    size_t skip_before(double time, uint8_t* out, size_t capacity);

    // For a pause of the music (a followed clock's Stop): note-offs now for every sounding note
    // (written to out while they fit: call again while it writes any), whose queued note-offs are
    // then dropped; the notes to come stay queued. Returns the bytes written.
    size_t release(uint8_t* out, size_t capacity);

    // For a stop in the middle of the music: note-offs for every sounding note (written to out
    // while they fit), and the queue is emptied. Returns the bytes written.
    size_t silence(uint8_t* out, size_t capacity);

  private:
    int channel_for(int32_t program, double time);
    size_t take_front(uint8_t* out);  // sends (writes) or drops the earliest message; bytes written
    void push(double time, uint8_t rank, uint8_t status, uint8_t data1, int data2);

    size_t capacity_;
    uint64_t order_ = 0;
    std::vector<TimedMessage> queue_;  // a binary min-heap on (time, rank, order)
    int16_t program_of_channel_[16];   // -2: the channel is free
    uint64_t channel_last_used_[16];   // the order at which a program last took the channel
    uint16_t sounding_[16][128] = {};  // note-ons sent minus note-offs due, per channel and pitch
    uint16_t skipped_[16][128] = {};   // note-offs queued not to send: skipped or released notes
};

// Opens a MIDI device or file with open(2)'s `flags`; a terminal (a serial port, a pty) is put in
// raw mode so no byte is translated, its baud rate left as configured. Returns the descriptor, or
// -1 with *error set. MidiOut and MidiIn open through it.
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
