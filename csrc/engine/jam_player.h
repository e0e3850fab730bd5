// The jam's output timing (docs/jam.md, "Playing the notes" and "Clock"): one place where the
// engine's notes become MIDI bytes on time, for every front end that plays a jam (sage-edge-run
// --midi-in, sage_edge.live.Jam.serve, examples/answer_midi.c, through sage_jam_player_* in the
// C API). It polls the jam, queues its notes in a MidiScheduler and says what is due:
//
// - On the jam's own clock a note is due at its time_us; leading a clock, Start (0xFA) goes out at
//   bar 0 and then 24 pulses (0xF8) per quarter note, each at the live encoder's time for it (a
//   pulse on a grid tick at the tick's time_of, so before the notes of that tick), and Stop (0xFC)
//   at the end. Following the input's clock (the jam's live encoder follows it), a note is due
//   when the clock's last pulse reaches its grid tick; the notes decided for a tick before where
//   the music went on (the live encoder's clock_from_tick: a Start, a Continue a Song Position
//   Pointer moved) are not played (skip_before, and none decided later is queued), and a Stop
//   releases the notes sounding.
// - After the input ends, it polls on for the bars a last phrase needs to end and be answered (or
//   accompanied, lookahead bars later): until the start of bar b + 2 * phrase_bars + later + 2,
//   b the bar the input ended in, later = lookahead_bars when accompanying, else 1. Then it plays
//   what is queued (following a clock, whose pulses ended with the input, nothing more) and is
//   done; stop() ends the notes sounding (note-offs, not All Notes Off: the scheduler knows which
//   sound) and, leading, sends Stop.
//
// Memory: the scheduler is reserved at construction; nothing allocates after it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "jam.h"
#include "midi_scheduler.h"

namespace sage {

class JamPlayer {
  public:
    // Room for 1 365 notes at once (4 095 messages): more than a bar of the engine's parts holds.
    static constexpr size_t kNotes = 1365;
    // A message sent later than this after it was due counts as a late send.
    static constexpr int64_t kLateUs = 10000;
    // The longest wait between two calls: the jam is polled every millisecond.
    static constexpr int64_t kPollUs = 1000;

    // The jam must outlive the player. lead_clock: send the clock (Start, pulses, Stop); throws
    // Argument when the jam follows the input's clock.
    JamPlayer(Jam& jam, bool lead_clock);

    // Polls the jam (until it returns fewer notes than asked) and queues its new notes, writing
    // the ones queued to out (those not played, decided for a tick a followed clock skipped, are
    // left out); returns how many, capacity when more may be waiting. Nothing once closing.
    size_t poll(int64_t now_us, JamNote* out, size_t capacity);
    // Writes what is due at now_us, in order: a followed clock's Stop (note-offs) and jump
    // (skip_before), the pulses due when leading, the messages due. Whole messages while they
    // fit; one message a call when capacity is kMidiMaxMessageBytes or less. Call again while it
    // writes any.
    size_t take_due(int64_t now_us, uint8_t* out, size_t capacity);
    // The input ended (the musician is done): the tail starts.
    void input_ended(int64_t now_us);
    // How long the front end may wait for input before it calls again: 0 while the jam generates,
    // else until the next pulse or message due, at most kPollUs.
    int64_t wait_us(int64_t now_us) const;
    // The end, whenever it comes: note-offs for the notes sounding, nothing queued is played, and
    // leading a clock that started, Stop. Call again while it writes any (one message a call as
    // take_due).
    size_t stop(uint8_t* out, size_t capacity);

    bool closing() const { return closing_; }
    // Closing, and nothing left to play (following a clock: its pulses ended with the input).
    bool done() const { return closing_ && (follow_ || scheduler_.empty()); }
    uint64_t notes() const { return notes_; }      // queued to play
    uint64_t dropped() const { return dropped_; }  // skipped by a followed clock, or no room
    uint64_t late_sends() const { return late_sends_; }
    int64_t worst_late_us() const { return worst_late_us_; }
    uint64_t pulses() const { return pulses_; }
    size_t queued() const { return scheduler_.queued(); }

  private:
    void update_closing(int64_t now_us);

    Jam& jam_;
    LiveEncoder& live_;
    MidiScheduler scheduler_;
    const bool follow_, lead_;
    int64_t clock_from_ = -1;   // following: the clock_from_tick already skipped to
    uint64_t clock_stops_ = 0;  // following: the Stops already released
    int64_t next_pulse_ = 0;    // leading: the next pulse to send (0: Start goes with it)
    bool started_ = false;      // leading: Start was sent
    bool stopped_ = false, stop_sent_ = false;
    int64_t close_us_ = -1;  // when the tail ends, once the input ended
    bool closing_ = false;
    int64_t late_now_ = -1;  // the now_us of the last late send counted (one a call's now)
    uint64_t notes_ = 0, dropped_ = 0, late_sends_ = 0, pulses_ = 0;
    int64_t worst_late_us_ = 0;
};

}  // namespace sage
