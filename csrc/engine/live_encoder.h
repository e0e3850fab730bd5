// The live encoder: timed MIDI events from a musician become the tokenizer's REMI+ tokens, bar by
// bar, with the order and values sage_edge.tokenizer.Tokenizer.encode gives for the same notes
// (docs/jam.md, "The live encoder", states the rules and the few differences).
//
// Time: events carry microseconds on the caller's clock. Bar 0 starts at start_us; the tempo
// (microseconds per quarter, as MIDI stores it) turns time into the model's ticks, and an onset
// goes to the nearest grid tick (halves up), a duration is rounded the same way, at least one tick,
// then set to the nearest Duration of the vocabulary -- what symusic's resample and miditok's
// preprocessing do to a file. A bar is written once the clock has passed its last grid point (no
// later event can round into it) and every note that starts in it has ended, or when the caller
// forces it: a note still sounding then is cut at the bar line (its length from its grid point to
// the line, so that when the caller polls does not change it). Before that, the part of the open
// bar no later event can change (take_final) can be taken ahead: the bar's tokens are the same,
// handed out in two or more pieces.
//
// Memory: fixed-size arrays, sized at construction; no event allocates. A note that finds the
// pool full is dropped and counted.
#pragma once

#include <cstddef>
#include <cstdint>

#include "vocab.h"

namespace sage {

constexpr int64_t kPulsesPerQuarter = 24;  // MIDI clock: 24 pulses per quarter note (ppqn)

struct LiveOptions {
    int64_t start_us = 0;                // where bar 0 begins
    uint32_t us_per_quarter = 500000;    // the tempo until a tempo event (120 BPM)
    int32_t bar_quarters = 4;            // bars of bar_quarters/4 (until set_meter changes it)
    int32_t channel_programs[16] = {0};  // General MIDI program per channel, -1 = drums
    bool follow_clock = false;  // MIDI clock (24 ppqn) drives the grid (docs/jam.md, "Clock")
};

struct LiveCounts {
    uint64_t bars_written;     // bars taken so far
    uint64_t notes;            // notes read (note-ons inside the vocabulary's range)
    uint64_t late;             // notes whose grid point lay in a bar already written
    uint64_t dropped;          // notes lost: pool full, or outside the vocabulary's pitch range
    uint32_t sounding;         // notes held now
    uint32_t waiting;          // notes not yet written
    int64_t clock_tick;        // following a clock: the grid tick of its last pulse, -1 before one
    int64_t clock_start_tick;  // following a clock: the downbeat its last Start made, -1 before
    // Following a clock: notes for grid ticks before this are not to be played (the last Start's
    // downbeat, or where the last Continue moved to after a Song Position Pointer), -1 before.
    int64_t clock_from_tick;
    uint64_t clock_stops;          // Stops read while the clock ran
    int32_t clock_running;         // 1 from a Start or Continue to a Stop
    uint64_t notes_while_stopped;  // note-ons read while the clock was stopped: not heard
};

class LiveEncoder {
  public:
    static constexpr int kMaxNotes = 512;  // notes sounding or waiting for their bar
    static constexpr int kMaxTempos = 32;  // tempo changes waiting for their bar
    static constexpr int kChannels = 16;
    static constexpr int kMaxBarTicks = 12 * 96;  // a 12/4 bar at 96 ticks per quarter
    static constexpr int kMaxMeters = 64;         // meter segments kept (past, open and planned)

    // vocab must outlive the encoder (it is the model's table). Throws sage::Error(Argument) when
    // the options do not fit the vocabulary (no Bar, no TimeSig bar_quarters/4, a program without
    // a token, a tempo out of range).
    LiveEncoder(const TokenInfo* vocab, int vocab_size, int ticks_per_quarter,
                const LiveOptions& options);
    void reset();  // forget every note and bar; the options stay

    void note_on(int64_t time_us, int channel, int pitch, int velocity);  // velocity 0 = off
    void note_off(int64_t time_us, int channel, int pitch);
    void program_change(int channel, int program);
    void tempo(int64_t time_us, uint32_t us_per_quarter);
    // The meter from bar `bar` on (until a later change): bars of quarters/4. `bar` is one not
    // started yet: the open bar while none of its tokens were taken, or a later one. Throws
    // Argument when the bar is started, the vocabulary has no such meter (TimeSig, a Position per
    // tick), or kMaxMeters changes are planned ahead.
    void set_meter(uint64_t bar, int32_t quarters);
    // A time signature met at time_us, as a file's: it takes effect at the first bar line at or
    // after the grid tick nearest time_us (miditok delays a signature to the next bar so), or at
    // the first bar not started when that one is. Returns the bar.
    uint64_t meter(int64_t time_us, int32_t quarters);
    // The bar table: where bar `bar` starts (grid ticks from bar 0) and its quarters, for the
    // bars from the oldest meter segment kept on (false before it: forgotten).
    bool bar_at(uint64_t bar, int64_t* start, int32_t* quarters) const;
    // The quarters of bar `bar` (0: older than the table) and the TimeSig token of a meter (-1:
    // the vocabulary has none); throws Argument when the vocabulary cannot write such a bar.
    int32_t quarters_of(uint64_t bar) const {
        int32_t quarters = 0;
        bar_at(bar, nullptr, &quarters);
        return quarters;
    }
    int32_t meter_token(int32_t quarters) const;
    // Raw MIDI bytes received at time_us: running status, real-time bytes anywhere, SysEx skipped
    // but for a Universal Real Time time signature, which changes the meter (as meter() does);
    // a message cut between two calls is completed by the next.
    void midi(int64_t time_us, const uint8_t* bytes, size_t n);

    // The number of tokens take_bar writes for the next bar if it is complete at now_us (or, with
    // force, once its last grid point has passed); 0 when it is not (or all were taken ahead).
    size_t next_bar_size(int64_t now_us, bool force) const;
    // Writes the next bar's tokens (Bar, TimeSig, then Position, Tempo and notes; those take_final
    // gave ahead left out) and moves on to the following bar; returns how many (0: not complete,
    // or every token taken ahead: bars_written tells). Throws Argument when capacity is short.
    size_t take_bar(int64_t now_us, bool force, int32_t* tokens, size_t capacity);
    // Writes the tokens of the open bar that are final at now_us and were not taken yet: the
    // positions the clock has passed (no later onset or tempo can round into them), up to the
    // first note still sounding (its Program, Pitch and Velocity, not its Duration). take_bar then
    // writes the rest of the bar. Returns how many; throws Argument when capacity is short.
    size_t take_final(int64_t now_us, int32_t* tokens, size_t capacity);

    // The next bar so far, without taking it: the tokens take_bar would write for its notes (and
    // tempo changes) before grid tick until_tick, a note still sounding with the length it has
    // sounded at now_us but at least to grid tick held_until (its note-off may change it);
    // *settled receives how many leading tokens come before the first such note (they will not
    // change). Throws Argument when capacity is short.
    size_t peek_bar(int64_t until_tick, int64_t held_until, int64_t now_us, int32_t* tokens,
                    size_t capacity, size_t* settled) const;
    // The grid tick of the latest note-on read so far (-1 before one).
    int64_t last_onset() const { return last_onset_; }

    // Grid ticks from start_us to time_us under the tempo map (rounded, halves up).
    int64_t tick_at(int64_t time_us) const;
    // When grid tick `tick` falls, on the caller's clock, under the current tempo.
    int64_t time_of(int64_t tick) const;
    // When pulse `pulse` of a MIDI clock from bar 0 (kPulsesPerQuarter a quarter note) falls, the
    // same way: a pulse on a grid tick falls at the tick's time_of (a clock led by JamPlayer).
    int64_t time_of_pulse(int64_t pulse) const;
    // The bar (of the bar table) that holds grid tick `tick`, from the oldest segment kept on.
    uint64_t bar_of(int64_t tick) const;
    int64_t bar_ticks() const { return open_ticks_; }       // of the open bar
    int64_t open_bar_start() const { return open_start_; }  // grid tick of the open bar
    int ticks_per_quarter() const { return ticks_per_quarter_; }
    uint32_t keys_down() const { return keys_down_; }  // keys held now, written or not
    int64_t last_key_us() const {
        return last_key_us_;
    }  // the last note on or off, start_us before
    uint64_t bars_written() const { return bars_written_; }
    LiveCounts counts() const;

  private:
    struct Note {
        int64_t onset;    // grid ticks
        int64_t on_us;    // when it was struck
        int32_t length;   // quantized ticks once it ended, 0 while it sounds
        int16_t program;  // -1 = drums
        uint8_t rank;     // order among programs at one position: the lowest channel playing it
        uint8_t channel, pitch, velocity;  // velocity: the vocabulary's nearest
    };
    struct TempoChange {
        int64_t tick;
        int32_t token;
    };

    void end_note(int slot, int64_t time_us);
    // Ends a sounding note at grid tick `tick` (a forced bar's line, a clock's Stop); its note-off
    // is swallowed.
    void cut(Note& note, int64_t tick);
    int32_t duration_ticks(int64_t from_us, int64_t to_us) const;
    int32_t nearest_duration(int64_t ticks) const;
    int32_t tempo_token(uint32_t us_per_quarter) const;
    uint8_t rank_of(int program) const;
    bool bar_complete(int64_t now_us, bool force) const;
    // Indices of the next bar's notes starting before grid tick `end`, in the tokenizer's order.
    size_t sort_bar(int64_t end, int64_t now_us, int* order) const;
    // A note's length, or while it sounds the length it has sounded at now_us.
    int32_t length_at(const Note& note, int64_t now_us) const;
    // The next bar's tokens as take_bar writes them, of its notes and tempo changes before grid
    // tick `end` (a note still sounding: with the length it has at now_us); tokens == nullptr
    // counts them only. Returns how many.
    // held_until: a note still sounding lasts at least to this grid tick; *settled (if not null)
    // receives how many leading tokens come before the first note still sounding.
    // final_only: stop at the first note still sounding, after its Program, Pitch and Velocity
    // (before them when another note of its program, pitch and onset follows: the tokenizer keeps
    // one of them by length). Token k goes to tokens[k - skip], k >= skip; *last_position gets
    // the tick of the last Position written (-1: none).
    size_t write_bar(int64_t end, int64_t now_us, int32_t* tokens, int64_t held_until = 0,
                     size_t* settled = nullptr, bool final_only = false, size_t skip = 0,
                     int64_t* last_position = nullptr) const;
    void open_next_bar();  // the open bar's start, length and TimeSig from the table
    int32_t timesig_token(int32_t quarters) const;  // -1: none
    bool meter_writable(int32_t quarters) const;    // what meter_token checks, without throwing
    void sysex_message(int64_t time_us);            // a complete SysEx: a time signature?
    void handle_message(int64_t time_us);
    void clock_pulse(int64_t time_us);
    void clock_run(int64_t time_us, bool start);  // Start (from the top), or Continue
    void clock_stop(int64_t time_us);
    int64_t pulse_tick(uint64_t pulse) const;  // the grid tick of a pulse (halves up)
    // The first grid tick at or after `from` whose place in its bar is the place of grid tick
    // `tick` in its own.
    int64_t same_place(int64_t tick, int64_t from) const;
    int64_t bar_line_before(int64_t tick) const;
    int meter_segment_at(int64_t tick) const;  // the bar table's segment holding a grid tick  //
                                               // the start of the bar holding a grid tick

    const TokenInfo* vocab_;
    int vocab_size_;
    int ticks_per_quarter_;
    LiveOptions options_;

    // Token ids by value (-1: the vocabulary has none).
    int32_t bar_token_ = -1;
    bool has_timesig_ = false;
    int32_t position_token_[kMaxBarTicks];  // by tick within the bar
    int32_t program_token_[129];            // program + 1
    int32_t pitch_token_[128], drum_token_[128];
    int32_t velocity_value_[128], velocity_token_[128];
    int n_velocities_ = 0;
    int32_t duration_value_[256], duration_token_[256];
    int n_durations_ = 0;
    int32_t tempo_value_[64], tempo_id_[64];  // bpm x 1000, ascending
    int n_tempos_ = 0;

    // State.
    int32_t channel_program_[kChannels];
    Note notes_[kMaxNotes];
    int n_notes_ = 0;
    int16_t sounding_[kChannels][128];  // slot of the note held, -1 none, -2 written already
    TempoChange tempos_[kMaxTempos];
    int n_tempos_waiting_ = 0;
    int32_t last_tempo_token_ = -1;            // of the tempo in force (written or waiting)
    int32_t written_tempo_token_ = -1;         // of the last tempo written
    int64_t origin_us_ = 0, origin_tick_ = 0;  // the tempo segment in force starts here
    uint32_t us_per_quarter_ = 500000;
    uint64_t bars_written_ = 0;
    // The bar table: meter segments by first bar (the first at or before the open bar, later ones
    // planned), each with its start tick; the open bar's start, length and TimeSig token.
    struct MeterSegment {
        uint64_t bar;
        int64_t start;
        int32_t quarters, timesig;
    };
    MeterSegment meters_[kMaxMeters];
    int n_meters_ = 0;
    int64_t open_start_ = 0, open_ticks_ = 0;
    int32_t open_timesig_ = -1;
    // Ticks before closed_tick_ are taken (a bar, or the final part of the open bar): a note or
    // tempo that would land there is placed at closed_tick_. taken_ tokens of the open bar are out,
    // the last of their Positions at taken_position_ (-1: none).
    int64_t closed_tick_ = 0;
    size_t taken_ = 0;
    int64_t taken_position_ = -1;
    int64_t last_onset_ = -1;
    uint64_t notes_read_ = 0, late_ = 0, dropped_ = 0;
    uint32_t keys_down_ = 0;
    int64_t last_key_us_ = 0;
    // The MIDI byte parser: running status and the message being read.
    uint8_t status_ = 0, data_[2] = {0, 0};
    int n_data_ = 0;
    bool in_sysex_ = false;
    static constexpr size_t kSysexBytes = 32;  // a time signature with up to 12 compound pairs
    uint8_t sysex_[kSysexBytes];
    size_t n_sysex_ = 0;
    // Following a MIDI clock (docs/jam.md, "Clock"): the song position in pulses from the anchor
    // (the grid tick of pulse 0), the last 24 pulses' times since it ran again (one quarter note:
    // the tempo). Stopped, and from a Start or Continue to its first pulse, the grid stands at
    // held_tick_: tick_at gives it whatever the time.
    enum class Clock : uint8_t { Free, Running, Stopped };  // Free: no Start yet, time drives
    Clock clock_ = Clock::Free;
    bool clock_held_ = false;
    int64_t held_tick_ = 0;
    uint64_t clocks_ = 0, stopped_clocks_ = 0;  // the position now, and where Stop left it
    uint64_t run_pulses_ = 0;                   // pulses since the last Start or Continue
    int64_t clock_anchor_tick_ = 0;
    int64_t clock_tick_ = -1;
    int64_t clock_start_tick_ = -1;
    int64_t clock_from_tick_ = -1;
    int64_t last_pulse_24_ = -1;  // 24 x the grid tick of the last pulse (exact), -1 before one
    uint64_t clock_stops_ = 0, notes_while_stopped_ = 0;
    int64_t stop_us_ = -1;  // when the clock stopped, until it runs again (-1: it runs)
    int64_t pulse_us_[24] = {0};
};

}  // namespace sage
