// The MIDI scheduler: notes with their times become MIDI 1.0 channel messages, each due at its
// time, for a player that sleeps until the earliest is due and sends everything due then (the
// runner's playback loop through sage_midi_scheduler_* in the C API; the jam loops of every front
// end through JamPlayer, jam_player.h). Times are in one unit the caller chooses per scheduler
// (quarter notes, microseconds on its clock, a followed clock's grid ticks) and only compared,
// never converted.
//
// Rules: a program change goes out at a channel's first note and whenever the program on a channel
// changes (never on channel 10, index 9, the drums). A note given no channel gets one by its
// program: drums (-1) on channel 10, melodic programs the channels in order of first appearance,
// skipping 10; with more than 15 the channel whose program was assigned longest ago is reused. At
// one time note-offs go first, then program changes, then note-ons, then in the order queued. When
// two notes of one pitch overlap on a channel, the note-off is sent only when the last of them
// ends, so the earlier note's end does not cut the later one. Messages are 3 or 2 bytes each, no
// running status (every message carries its status byte, so a receiver can join at any time).
//
// Memory: the queue is reserved at construction; nothing allocates after it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sage {

constexpr int kMidiDrumChannel = 9;
constexpr int kMidiAutoChannel = -1;  // a note given no channel: one by its program
constexpr size_t kMidiMaxMessageBytes = 3;

struct ScheduledNote {
    double time, end;                  // in the scheduler's unit; end before time counts as time
    int32_t pitch, velocity, program;  // program -1: drums
    int32_t channel;                   // 0..15, or kMidiAutoChannel
};

class MidiScheduler {
  public:
    // Room for `notes` notes (each takes at most 3 messages: program change, note-on, note-off).
    explicit MidiScheduler(size_t notes);

    // Queues the note's messages. Returns false, queueing nothing, when there is no room.
    bool add(const ScheduledNote& note);

    bool empty() const { return queue_.empty(); }
    size_t queued() const { return queue_.size(); }
    size_t free_notes() const { return (capacity_ - queue_.size()) / 3; }
    // Time of the earliest queued message; only when !empty().
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
    // while they fit: call again while it writes any), and the queue is emptied. Returns the bytes
    // written.
    size_t silence(uint8_t* out, size_t capacity);

  private:
    // One channel message waiting for its time.
    struct Message {
        double time;
        uint8_t rank;    // at one time: note-offs (0) first, then program changes (1), note-ons (2)
        uint64_t order;  // then in the order they were queued
        uint8_t bytes[kMidiMaxMessageBytes];
        uint8_t size;
    };
    static bool later(const Message& a, const Message& b);

    int channel_for(int32_t program, double time);
    void set_program(int channel, int32_t program, double time);
    size_t take_front(uint8_t* out);  // sends (writes) or drops the earliest message; bytes written
    void push(double time, uint8_t rank, uint8_t status, uint8_t data1, int data2);

    size_t capacity_;  // messages
    uint64_t order_ = 0;
    std::vector<Message> queue_;       // a binary min-heap on (time, rank, order)
    int16_t program_of_channel_[16];   // -2: the channel is free
    uint64_t channel_last_used_[16];   // the order at which a program last took the channel
    uint16_t sounding_[16][128] = {};  // note-ons sent minus note-offs due, per channel and pitch
    uint16_t skipped_[16][128] = {};   // note-offs queued not to send: skipped or released notes
};

}  // namespace sage
