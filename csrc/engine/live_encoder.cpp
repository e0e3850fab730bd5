#include "live_encoder.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "model_file.h"

namespace sage {

namespace {

// round(numerator / denominator), halves up, for denominator > 0 (symusic's resample rounds so).
int64_t divide_rounded(int64_t numerator, int64_t denominator) {
    const int64_t twice = 2 * numerator + denominator;
    const int64_t d = 2 * denominator;
    return twice >= 0 ? twice / d : -((-twice + d - 1) / d);
}

// The nearest of `n` ascending values, ties to the larger (miditok's np_get_closest).
int nearest_index(const int32_t* values, int n, int64_t x) {
    int best = 0;
    for (int i = 1; i < n; ++i)
        if (std::llabs(values[i] - x) <= std::llabs(values[best] - x)) best = i;
    return best;
}

[[noreturn]] void argument(const std::string& message) {
    throw Error(Status::Argument, message);
}

}  // namespace

LiveEncoder::LiveEncoder(const TokenInfo* vocab, int vocab_size, int ticks_per_quarter,
                         const LiveOptions& options)
    : vocab_(vocab),
      vocab_size_(vocab_size),
      ticks_per_quarter_(ticks_per_quarter),
      options_(options) {
    for (auto& t : position_token_) t = -1;
    for (auto& t : program_token_) t = -1;
    for (int i = 0; i < 128; ++i) pitch_token_[i] = drum_token_[i] = -1;
    // Values ascend with ids in the tokenizer's vocabulary, but nothing here relies on it.
    auto insert_sorted = [](int32_t* values, int32_t* ids, int& n, int cap, int32_t v, int32_t id) {
        if (n == cap) return;
        int i = n++;
        for (; i > 0 && values[i - 1] > v; --i) values[i] = values[i - 1], ids[i] = ids[i - 1];
        values[i] = v, ids[i] = id;
    };
    for (int id = 0; id < vocab_size; ++id) {
        const TokenInfo& t = vocab[id];
        switch (t.kind) {
            case Kind::Bar:
                if (bar_token_ < 0) bar_token_ = id;
                break;
            case Kind::TimeSig:
                has_timesig_ = true;
                break;
            case Kind::Position:
                if (t.a >= 0 && t.a < kMaxBarTicks) position_token_[t.a] = id;
                break;
            case Kind::Tempo:
                if (t.a > 0) insert_sorted(tempo_value_, tempo_id_, n_tempos_, 64, t.a, id);
                break;
            case Kind::Program:
                if (t.a >= -1 && t.a < 128) program_token_[t.a + 1] = id;
                break;
            case Kind::Pitch:
                if (t.a >= 0 && t.a < 128) pitch_token_[t.a] = id;
                break;
            case Kind::PitchDrum:
                if (t.a >= 0 && t.a < 128) drum_token_[t.a] = id;
                break;
            case Kind::Velocity:
                insert_sorted(velocity_value_, velocity_token_, n_velocities_, 128, t.a, id);
                break;
            case Kind::Duration:
                insert_sorted(duration_value_, duration_token_, n_durations_, 256, t.a, id);
                break;
            default:
                break;
        }
    }
    if (bar_token_ < 0 || n_durations_ == 0)
        argument("the model's vocabulary has no Bar or no Duration tokens: it is not REMI+");
    meter_token(options.bar_quarters);
    if (options.us_per_quarter == 0) argument("us_per_quarter must be > 0");
    for (int c = 0; c < kChannels; ++c) {
        const int p = options.channel_programs[c];
        if (p < -1 || p > 127 || program_token_[p + 1] < 0)
            argument("channel " + std::to_string(c + 1) + ": program " + std::to_string(p) +
                     " has no Program token in the model");
    }
    reset();
}

int32_t LiveEncoder::timesig_token(int32_t quarters) const {
    for (int id = 0; id < vocab_size_; ++id)
        if (vocab_[id].kind == Kind::TimeSig && vocab_[id].a == quarters && vocab_[id].b == 4)
            return id;
    return -1;
}

bool LiveEncoder::meter_writable(int32_t quarters) const {
    if (quarters < 1 || int64_t{quarters} * ticks_per_quarter_ > kMaxBarTicks) return false;
    if (has_timesig_ && timesig_token(quarters) < 0) return false;
    for (int64_t tick = 0; tick < int64_t{quarters} * ticks_per_quarter_; ++tick)
        if (position_token_[tick] < 0) return false;
    return true;
}

int32_t LiveEncoder::meter_token(int32_t quarters) const {
    if (quarters < 1 || int64_t{quarters} * ticks_per_quarter_ > kMaxBarTicks)
        argument("bar of " + std::to_string(quarters) + " quarters: out of range");
    const int32_t token = timesig_token(quarters);
    if (has_timesig_ && token < 0)
        argument("the model has no time signature " + std::to_string(quarters) + "/4");
    for (int64_t tick = 0; tick < int64_t{quarters} * ticks_per_quarter_; ++tick)
        if (position_token_[tick] < 0)
            argument("the model has no Position token for tick " + std::to_string(tick) +
                     ": its grid is not one Position per tick");
    return token;
}

bool LiveEncoder::bar_at(uint64_t bar, int64_t* start, int32_t* quarters) const {
    int i = n_meters_ - 1;
    while (i >= 0 && meters_[i].bar > bar) --i;
    if (i < 0) return false;
    const MeterSegment& m = meters_[i];
    if (start)
        *start = m.start + static_cast<int64_t>(bar - m.bar) * m.quarters * ticks_per_quarter_;
    if (quarters) *quarters = m.quarters;
    return true;
}

void LiveEncoder::open_next_bar() {
    int32_t quarters = 0;
    bar_at(bars_written_, &open_start_, &quarters);
    open_ticks_ = int64_t{quarters} * ticks_per_quarter_;
    for (int i = n_meters_ - 1; i >= 0; --i)
        if (meters_[i].bar <= bars_written_) {
            open_timesig_ = meters_[i].timesig;
            break;
        }
}

void LiveEncoder::set_meter(uint64_t bar, int32_t quarters) {
    const uint64_t first_free = bars_written_ + (taken_ > 0 ? 1 : 0);
    if (bar < first_free)
        argument("meter from bar " + std::to_string(bar) + ": bar " + std::to_string(first_free) +
                 " is the first not started");
    const int32_t token = meter_token(quarters);
    // The segment at `bar` (new or replaced), the later ones kept; one that repeats the meter
    // before it is no change and goes.
    int i = 0;
    while (i < n_meters_ && meters_[i].bar < bar) ++i;
    if (i == n_meters_ || meters_[i].bar != bar) {
        if (n_meters_ == kMaxMeters) {
            // Forget the oldest segment if it lies wholly behind the open bar.
            if (n_meters_ < 2 || meters_[1].bar > bars_written_ || i == 0)
                argument("more than " + std::to_string(kMaxMeters) + " meter changes planned");
            std::copy(meters_ + 1, meters_ + n_meters_, meters_);
            --n_meters_, --i;
        }
        std::copy_backward(meters_ + i, meters_ + n_meters_, meters_ + n_meters_ + 1);
        ++n_meters_;
    }
    meters_[i] = {bar, 0, quarters, token};
    int kept = 0;
    for (int j = 0; j < n_meters_; ++j) {
        if (kept > 0 && meters_[j].quarters == meters_[kept - 1].quarters) continue;
        if (kept > 0) {
            const MeterSegment& p = meters_[kept - 1];
            meters_[j].start = p.start + static_cast<int64_t>(meters_[j].bar - p.bar) * p.quarters *
                                             ticks_per_quarter_;
        }
        meters_[kept++] = meters_[j];
    }
    n_meters_ = kept;
    open_next_bar();
}

uint64_t LiveEncoder::meter(int64_t time_us, int32_t quarters) {
    const int64_t tick = tick_at(time_us);
    uint64_t bar = bars_written_ + (taken_ > 0 ? 1 : 0);
    // The first bar line at or after `tick`, walking the table a segment at a time.
    int64_t start = 0;
    int32_t q = 0;
    bar_at(bar, &start, &q);
    int i = 0;
    while (start < tick) {
        while (i < n_meters_ && meters_[i].bar <= bar) ++i;
        const int64_t length = int64_t{q} * ticks_per_quarter_;
        const uint64_t needed = static_cast<uint64_t>((tick - start + length - 1) / length);
        if (i == n_meters_ || bar + needed <= meters_[i].bar) {
            bar += needed;
            break;
        }
        start = meters_[i].start;
        bar = meters_[i].bar;
        q = meters_[i].quarters;
    }
    set_meter(bar, quarters);
    return bar;
}

void LiveEncoder::reset() {
    for (int c = 0; c < kChannels; ++c) {
        channel_program_[c] = options_.channel_programs[c];
        for (auto& s : sounding_[c]) s = -1;
    }
    n_notes_ = 0;
    origin_us_ = options_.start_us;
    origin_tick_ = 0;
    us_per_quarter_ = options_.us_per_quarter;
    bars_written_ = notes_read_ = late_ = dropped_ = 0;
    meters_[0] = {0, 0, options_.bar_quarters, meter_token(options_.bar_quarters)};
    n_meters_ = 1;
    open_next_bar();
    closed_tick_ = 0;
    taken_ = 0;
    taken_position_ = -1;
    last_onset_ = -1;
    keys_down_ = 0;
    last_key_us_ = options_.start_us;
    status_ = 0, n_data_ = 0, in_sysex_ = false;
    clock_ = Clock::Free, clock_held_ = false, held_tick_ = 0;
    clocks_ = stopped_clocks_ = run_pulses_ = 0;
    clock_anchor_tick_ = 0, clock_tick_ = clock_start_tick_ = clock_from_tick_ = -1;
    last_pulse_24_ = stop_us_ = -1;
    clock_stops_ = notes_while_stopped_ = 0;
    // miditok always writes a tempo at tick 0 (120 BPM when the score has none).
    n_tempos_waiting_ = 0;
    written_tempo_token_ = -1;
    last_tempo_token_ = tempo_token(us_per_quarter_);
    if (last_tempo_token_ >= 0) tempos_[n_tempos_waiting_++] = {0, last_tempo_token_};
}

int64_t LiveEncoder::tick_at(int64_t time_us) const {
    if (clock_held_) return held_tick_;  // a clock stopped, or waiting for its first pulse
    if (time_us < origin_us_) time_us = origin_us_;  // before the start: the first grid point
    return origin_tick_ +
           divide_rounded((time_us - origin_us_) * ticks_per_quarter_, us_per_quarter_);
}

int64_t LiveEncoder::time_of(int64_t tick) const {
    return origin_us_ +
           divide_rounded((tick - origin_tick_) * int64_t{us_per_quarter_}, ticks_per_quarter_);
}

int64_t LiveEncoder::time_of_pulse(int64_t pulse) const {
    return origin_us_ +
           divide_rounded((pulse * ticks_per_quarter_ - kPulsesPerQuarter * origin_tick_) *
                              int64_t{us_per_quarter_},
                          kPulsesPerQuarter * ticks_per_quarter_);
}

int32_t LiveEncoder::duration_ticks(int64_t from_us, int64_t to_us) const {
    const int64_t ticks = divide_rounded((to_us - from_us) * ticks_per_quarter_, us_per_quarter_);
    return nearest_duration(ticks < 1 ? 1 : ticks);
}

int32_t LiveEncoder::nearest_duration(int64_t ticks) const {
    return duration_value_[nearest_index(duration_value_, n_durations_, ticks)];
}

int32_t LiveEncoder::tempo_token(uint32_t us_per_quarter) const {
    if (n_tempos_ == 0) return -1;
    // miditok picks the nearest tempo in microseconds per quarter, ties to the slower one.
    int best = 0;
    double best_distance = 0;
    for (int i = 0; i < n_tempos_; ++i) {
        const double mspq = 60e6 / (tempo_value_[i] / 1000.0);
        const double distance = std::fabs(mspq - us_per_quarter);
        if (i == 0 || distance < best_distance ||
            (distance == best_distance && tempo_value_[i] < tempo_value_[best])) {
            best = i;
            best_distance = distance;
        }
    }
    return tempo_id_[best];
}

uint8_t LiveEncoder::rank_of(int program) const {
    for (int c = 0; c < kChannels; ++c)
        if (channel_program_[c] == program) return static_cast<uint8_t>(c);
    return kChannels;
}

void LiveEncoder::note_on(int64_t time_us, int channel, int pitch, int velocity) {
    if (channel < 0 || channel >= kChannels || pitch < 0 || pitch > 127 || velocity < 0 ||
        velocity > 127)
        argument("note on: channel 0..15, pitch and velocity 0..127");
    if (velocity == 0) return note_off(time_us, channel, pitch);
    last_key_us_ = time_us;
    if (clock_ == Clock::Stopped) {  // the music stands: not heard, its note-off swallowed
        if (sounding_[channel][pitch] == -1) ++keys_down_;
        sounding_[channel][pitch] = -2;
        ++notes_while_stopped_;
        return;
    }
    if (sounding_[channel][pitch] == -1) ++keys_down_;  // else the key was down: struck again
    if (sounding_[channel][pitch] >= 0) end_note(sounding_[channel][pitch], time_us);
    sounding_[channel][pitch] = -1;
    const int program = channel_program_[channel];
    const int32_t token = program < 0 ? drum_token_[pitch] : pitch_token_[pitch];
    if (token < 0 || n_notes_ == kMaxNotes) {
        ++dropped_;
        sounding_[channel][pitch] = -2;  // its note-off is expected: swallow it
        return;
    }
    int64_t onset = tick_at(time_us);
    if (onset < closed_tick_) {  // its place is taken: it sounds from the first point not taken
        onset = closed_tick_;
        ++late_;
    }
    last_onset_ = std::max(last_onset_, onset);
    Note& n = notes_[n_notes_];
    n.onset = onset;
    n.on_us = time_us;
    n.length = 0;
    n.program = static_cast<int16_t>(program);
    n.rank = rank_of(program);
    n.channel = static_cast<uint8_t>(channel);
    n.pitch = static_cast<uint8_t>(pitch);
    n.velocity = n_velocities_ > 0
                     ? static_cast<uint8_t>(
                           velocity_value_[nearest_index(velocity_value_, n_velocities_, velocity)])
                     : static_cast<uint8_t>(velocity);
    sounding_[channel][pitch] = static_cast<int16_t>(n_notes_++);
    ++notes_read_;
}

void LiveEncoder::note_off(int64_t time_us, int channel, int pitch) {
    if (channel < 0 || channel >= kChannels || pitch < 0 || pitch > 127)
        argument("note off: channel 0..15, pitch 0..127");
    last_key_us_ = time_us;
    if (sounding_[channel][pitch] != -1) --keys_down_;
    if (sounding_[channel][pitch] >= 0) end_note(sounding_[channel][pitch], time_us);
    sounding_[channel][pitch] = -1;
}

void LiveEncoder::cut(Note& note, int64_t tick) {
    note.length = nearest_duration(std::max<int64_t>(1, tick - note.onset));
    sounding_[note.channel][note.pitch] = -2;  // its note-off is swallowed
}

void LiveEncoder::end_note(int slot, int64_t time_us) {
    notes_[slot].length = duration_ticks(notes_[slot].on_us, time_us);
    sounding_[notes_[slot].channel][notes_[slot].pitch] = -1;
}

void LiveEncoder::program_change(int channel, int program) {
    if (channel < 0 || channel >= kChannels || program < -1 || program > 127)
        argument("program change: channel 0..15, program -1..127");
    if (program_token_[program + 1] >= 0) channel_program_[channel] = program;
}

void LiveEncoder::tempo(int64_t time_us, uint32_t us_per_quarter) {
    if (us_per_quarter == 0) argument("tempo: us_per_quarter must be > 0");
    // The new tempo starts at the grid point nearest its time, as miditok quantizes tempo times.
    const int64_t tick = tick_at(time_us);
    origin_us_ = time_of(tick);
    origin_tick_ = tick;
    us_per_quarter_ = us_per_quarter;
    const int32_t token = tempo_token(us_per_quarter);
    if (token < 0) return;
    const int64_t at = tick < closed_tick_ ? closed_tick_ : tick;
    // miditok keeps the last of several tempos at one tick, then drops repeats of one value.
    if (n_tempos_waiting_ > 0 && tempos_[n_tempos_waiting_ - 1].tick == at) {
        --n_tempos_waiting_;
        last_tempo_token_ =
            n_tempos_waiting_ > 0 ? tempos_[n_tempos_waiting_ - 1].token : written_tempo_token_;
    }
    if (token == last_tempo_token_) return;
    if (n_tempos_waiting_ == kMaxTempos) return;  // a flood of tempo changes: keep the first ones
    tempos_[n_tempos_waiting_++] = {at, token};
    last_tempo_token_ = token;
}

void LiveEncoder::midi(int64_t time_us, const uint8_t* bytes, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        const uint8_t b = bytes[i];
        if (b >= 0xF8) {  // real-time bytes come anywhere, even inside another message
            if (!options_.follow_clock) continue;
            // Pulses count only while the clock runs (many masters send them stopped too).
            if (b == 0xF8 && clock_ == Clock::Running) clock_pulse(time_us);
            if (b == 0xFA) clock_run(time_us, true);
            if (b == 0xFB && clock_ != Clock::Running) clock_run(time_us, false);
            if (b == 0xFC && clock_ == Clock::Running) clock_stop(time_us);
            continue;
        }
        if (b == 0xF0) {
            in_sysex_ = true;
            n_sysex_ = 0;
            status_ = 0;
            continue;
        }
        if (b == 0xF7) {
            if (in_sysex_) sysex_message(time_us);
            in_sysex_ = false;
            continue;
        }
        if (b & 0x80) {
            in_sysex_ = false;
            // System common messages cancel running status; of them only the Song Position
            // Pointer (0xF2) is read.
            status_ = b < 0xF0 || b == 0xF2 ? b : 0;
            n_data_ = 0;
            continue;
        }
        if (in_sysex_) {
            if (n_sysex_ < kSysexBytes) sysex_[n_sysex_] = b;
            ++n_sysex_;  // past kSysexBytes: too long to be read, skipped whole
            continue;
        }
        if (status_ == 0) continue;
        data_[n_data_++] = b;
        const uint8_t type = status_ & 0xF0;
        const int needed = (type == 0xC0 || type == 0xD0) ? 1 : 2;
        if (n_data_ < needed) continue;
        if (status_ == 0xF2) {
            // Song Position Pointer: sixteenth notes (6 pulses each) from the song's start (the
            // bar a Start anchored). Read while the clock stands (MIDI 1.0 has a master send it
            // so), the next Continue resumes there. Read while it runs (a master that locates
            // while playing), it is a Stop at the last pulse, the pointer and a Continue, unless
            // it names the sixteenth the clock is in (docs/jam.md, "Stop, Continue, Song Position
            // Pointer").
            const uint64_t position = 6 * (uint64_t{data_[0]} | uint64_t{data_[1]} << 7);
            if (options_.follow_clock && clock_ != Clock::Running) {
                clocks_ = position;
            } else if (options_.follow_clock && clocks_ / 6 != position / 6) {
                clock_stop(time_us);
                clocks_ = position;
                clock_run(time_us, false);
            }
            status_ = 0;
            n_data_ = 0;
            continue;
        }
        handle_message(time_us);
        n_data_ = 0;  // running status: the next data bytes reuse status_
    }
}

int64_t LiveEncoder::pulse_tick(uint64_t pulse) const {
    return clock_anchor_tick_ +
           divide_rounded(static_cast<int64_t>(pulse) * ticks_per_quarter_, 24);
}

int LiveEncoder::meter_segment_at(int64_t tick) const {
    int i = n_meters_ - 1;
    while (i > 0 && meters_[i].start > tick) --i;
    return i;
}

uint64_t LiveEncoder::bar_of(int64_t tick) const {
    const MeterSegment& m = meters_[meter_segment_at(tick)];
    const int64_t length = int64_t{m.quarters} * ticks_per_quarter_;
    return m.bar + static_cast<uint64_t>(tick > m.start ? (tick - m.start) / length : 0);
}

int64_t LiveEncoder::bar_line_before(int64_t tick) const {
    const int i = meter_segment_at(tick);
    const int64_t start = meters_[i].start;
    const int64_t length = int64_t{meters_[i].quarters} * ticks_per_quarter_;
    const int64_t bars =
        tick >= start ? (tick - start) / length : -((start - tick + length - 1) / length);
    return start + bars * length;
}

int64_t LiveEncoder::same_place(int64_t tick, int64_t from) const {
    const int64_t place = tick - bar_line_before(tick);
    for (uint64_t bar = bars_written_;; ++bar) {
        int64_t start = 0;
        int32_t quarters = 0;
        bar_at(bar, &start, &quarters);
        // In a shorter bar than the place's own, a place past its end is the next bar line.
        const int64_t at = start + std::min(place, int64_t{quarters} * ticks_per_quarter_);
        if (at >= from) return at;
    }
}

// Start, or Continue: the clock runs again, from its next pulse on. Until that pulse the grid
// stands where the music resumes (docs/jam.md, "Clock"):
// - Start (and a Continue before any Start): the first pulse is the downbeat of the first bar,
//   from the open one on, that nothing was played in or after and the clock has not entered: what
//   the musician played before Start stays where it was played, in the past, and a bar they were
//   in closes as played (as if its rest had passed). Of an open bar nothing was played in, only
//   the positions taken ahead are closed: the time before the clock ran (in which tick_at ran on)
//   holds nothing.
// - Continue: the song position (where Stop left it, or where a Song Position Pointer put it) at
//   its place in the bar, at the first such point from a sixteenth before where the clock stopped
//   on: the stream cannot go back further, and the time skipped holds nothing, not even empty
//   bars. (A master restarts from the sixteenth it stopped in, and may send its pointer with every
//   Continue: the grid then goes back those few pulses.)
void LiveEncoder::clock_run(int64_t time_us, bool start) {
    const bool from_the_top = start || clock_ == Clock::Free;
    int64_t stopped = 0, floor = 0;  // the grid ticks where it stopped, and the earliest to resume
    if (from_the_top) {
        uint64_t bar = bars_written_;
        int64_t line = open_start_;
        while (last_onset_ >= line || 24 * line <= last_pulse_24_) bar_at(++bar, &line, nullptr);
        if (start) clocks_ = 0;
        clock_anchor_tick_ = clock_start_tick_ = stopped = floor = line;
        closed_tick_ = std::max(line, taken_position_ + 1);
        stop_us_ = -1;  // a new song: the time the clock stood is not carried over
    } else {
        stopped = pulse_tick(stopped_clocks_);
        floor = pulse_tick(stopped_clocks_ - std::min<uint64_t>(stopped_clocks_, 6));
    }
    const int64_t here = pulse_tick(clocks_);
    const int64_t to = same_place(here, floor);
    clock_anchor_tick_ += to - here;
    if (from_the_top || to > stopped) clock_from_tick_ = to;  // the ticks before were skipped
    clock_ = Clock::Running;
    clock_held_ = true;
    held_tick_ = to;
    run_pulses_ = 0;
    origin_us_ = time_us;  // for time_of until the first pulse
    origin_tick_ = to;
}

// Stop: the music stands where the clock's last pulse put it. The grid does not move, no bar is
// completed by the time passing, and the musician's notes still sounding end there; notes played
// while it stands are not heard.
void LiveEncoder::clock_stop(int64_t time_us) {
    clock_ = Clock::Stopped;
    stopped_clocks_ = clocks_;
    if (!clock_held_) held_tick_ = pulse_tick(clocks_ - 1);  // a pulse came since it ran
    clock_held_ = true;
    stop_us_ = time_us;
    ++clock_stops_;
    for (int i = 0; i < n_notes_; ++i)
        if (notes_[i].length == 0) cut(notes_[i], held_tick_);
}

// A pulse is a grid point whenever it falls on a tick (every 2 pulses at 12 ticks per quarter):
// the grid is re-anchored there, so the grid never drifts from the clock, and the tempo between
// pulses is the last quarter note's (24 pulses). A new tempo token is written when the
// measured tempo's nearest token changes. The first pulse after a Start or Continue starts the
// grid again from its place (between two ticks if it falls there).
void LiveEncoder::clock_pulse(int64_t time_us) {
    const uint64_t pulse = clocks_++, run = run_pulses_++;
    const int64_t quarter = time_us - pulse_us_[run % 24];  // 24 pulses ago
    pulse_us_[run % 24] = time_us;
    const int64_t scaled = static_cast<int64_t>(pulse) * ticks_per_quarter_;
    last_pulse_24_ = 24 * clock_anchor_tick_ + scaled;
    const int64_t tick = clock_anchor_tick_ + scaled / 24, past = scaled % 24;  // 24ths of a tick
    if (run == 0) {
        clock_held_ = false;
        for (auto& t : pulse_us_) t = time_us;
        // The time the clock stood is no rest of the musician's.
        if (stop_us_ >= 0) last_key_us_ = std::min(last_key_us_, stop_us_) + (time_us - stop_us_);
        stop_us_ = -1;
        origin_tick_ = tick;
        origin_us_ = time_us - past * us_per_quarter_ / (24 * ticks_per_quarter_);
        clock_tick_ = tick;  // the tick it is on or past: after a pointer back, not the old one
        return;
    }
    if (past != 0) return;
    if (run >= 24 && quarter > 0) {
        const uint32_t measured = static_cast<uint32_t>(quarter);
        if (tempo_token(measured) != last_tempo_token_) tempo(time_us, measured);
        us_per_quarter_ = measured;
    }
    origin_us_ = time_us;
    origin_tick_ = tick;
    clock_tick_ = tick;
}

// The MIDI 1.0 Universal Real Time SysEx time signature (Notation Information):
// F0 7F <device> 03 02|42 <ln> <nn> <dd> <cc> <bb> [<nn> <dd>...] F7, 02 immediate, 42 delayed
// (to the next bar line), dd a power of two, further nn dd pairs a compound meter. Either way the
// meter changes at the first bar line at or after the message's grid point (as meter() does: a
// bar cannot change in its middle). The bar of T 64th notes is written as the tokenizer writes
// it (sage_edge.tokenizer.quarter_note_meter): N/4 with N = k T / 16 quarters, for the smallest
// k of 1, 2, 4, 8 that makes it whole. A meter the model cannot write is skipped.
void LiveEncoder::sysex_message(int64_t time_us) {
    const uint8_t* m = sysex_;
    if (n_sysex_ < 9 || n_sysex_ > kSysexBytes || m[0] != 0x7F || m[2] != 0x03 ||
        (m[3] != 0x02 && m[3] != 0x42) || m[4] < 4 || n_sysex_ != size_t{5} + m[4] ||
        (m[4] - 4) % 2 != 0)
        return;
    int64_t sixty_fourths = 0;
    for (size_t i = 5; i < n_sysex_; i += i == 5 ? 4 : 2) {
        if (m[i] == 0 || m[i + 1] > 6) return;
        sixty_fourths += int64_t{m[i]} * (64 >> m[i + 1]);
    }
    int32_t quarters = 0;
    for (int k = 1; k <= 8 && quarters == 0; k *= 2)
        if (sixty_fourths * k % 16 == 0) quarters = static_cast<int32_t>(sixty_fourths * k / 16);
    if (quarters < 1 || int64_t{quarters} * ticks_per_quarter_ > kMaxBarTicks ||
        !meter_writable(quarters))
        return;
    if (n_meters_ == kMaxMeters && meters_[1].bar > bars_written_) return;  // a flood: skipped
    meter(time_us, quarters);
}

void LiveEncoder::handle_message(int64_t time_us) {
    const int channel = status_ & 0x0F;
    switch (status_ & 0xF0) {
        case 0x80:
            note_off(time_us, channel, data_[0]);
            break;
        case 0x90:
            note_on(time_us, channel, data_[0], data_[1]);
            break;
        case 0xB0:
            // All Notes Off (controller 123): the keys down on the channel are released, as a
            // keyboard's panic button or a front end that lost its input does (docs/jam.md,
            // "When a port goes away").
            if (data_[0] == 123)
                for (int pitch = 0; pitch < 128; ++pitch)
                    if (sounding_[channel][pitch] != -1) note_off(time_us, channel, pitch);
            break;
        case 0xC0:
            // Channel 10 stays drums: General MIDI programs name melodic instruments.
            if (channel_program_[channel] >= 0) program_change(channel, data_[0]);
            break;
        default:
            break;  // aftertouch, other controllers, pitch bend: the vocabulary has no tokens for
                    // them
    }
}

bool LiveEncoder::bar_complete(int64_t now_us, bool force) const {
    const int64_t end = open_start_ + open_ticks_;
    if (tick_at(now_us) < end) return false;  // a later event could still round into the bar
    if (force) return true;
    for (int i = 0; i < n_notes_; ++i)
        if (notes_[i].onset < end && notes_[i].length == 0) return false;
    return true;
}

int32_t LiveEncoder::length_at(const Note& note, int64_t now_us) const {
    return note.length > 0 ? note.length : duration_ticks(note.on_us, now_us);
}

size_t LiveEncoder::sort_bar(int64_t end, int64_t now_us, int* order) const {
    auto before = [&](const Note& a, const Note& b) {
        if (a.onset != b.onset) return a.onset < b.onset;
        if (a.rank != b.rank) return a.rank < b.rank;
        if (a.program != b.program) return a.program < b.program;
        if (a.pitch != b.pitch) return a.pitch < b.pitch;
        const int32_t la = length_at(a, now_us), lb = length_at(b, now_us);
        if (la != lb) return la < lb;
        return a.velocity < b.velocity;
    };
    size_t n = 0;
    for (int i = 0; i < n_notes_; ++i) {
        if (notes_[i].onset >= end) continue;
        size_t j = n++;
        for (; j > 0 && before(notes_[i], notes_[order[j - 1]]); --j) order[j] = order[j - 1];
        order[j] = i;
    }
    return n;
}

size_t LiveEncoder::write_bar(int64_t end, int64_t now_us, int32_t* tokens, int64_t held_until,
                              size_t* settled, bool final_only, size_t skip,
                              int64_t* last_position) const {
    const int64_t start = open_bar_start();
    int order[kMaxNotes];
    const size_t n = sort_bar(end, now_us, order);
    size_t k = 0;
    auto put = [&](int32_t token) {
        if (tokens && k >= skip) tokens[k - skip] = token;
        ++k;
    };
    put(bar_token_);
    if (open_timesig_ >= 0) put(open_timesig_);
    if (settled) *settled = SIZE_MAX;
    int64_t at = -1;
    int t = 0;
    for (size_t i = 0;; ++i) {
        // Tempo changes of the bar come before the notes at their tick.
        for (; t < n_tempos_waiting_ && tempos_[t].tick < end &&
               (i == n || tempos_[t].tick <= notes_[order[i]].onset);
             ++t) {
            if (tempos_[t].tick != at) put(position_token_[tempos_[t].tick - start]);
            at = tempos_[t].tick;
            put(tempos_[t].token);
        }
        if (i == n) break;
        const Note& note = notes_[order[i]];
        const auto same_place = [&](const Note& other) {
            return note.onset == other.onset && note.program == other.program &&
                   note.pitch == other.pitch;
        };
        if (i > 0 && same_place(notes_[order[i - 1]]))
            continue;  // miditok removes notes of one program, pitch and onset but the first
        if (note.onset != at) put(position_token_[note.onset - start]);
        at = note.onset;
        if (settled && note.length == 0 && *settled == SIZE_MAX) *settled = k;
        // A sounding note's Duration waits for its note-off; of several notes at one place the
        // tokenizer keeps one by their lengths, so not even their Program is final yet.
        if (final_only && note.length == 0 && i + 1 < n && same_place(notes_[order[i + 1]])) break;
        put(program_token_[note.program + 1]);
        put(note.program < 0 ? drum_token_[note.pitch] : pitch_token_[note.pitch]);
        if (n_velocities_ > 0)
            put(velocity_token_[nearest_index(velocity_value_, n_velocities_, note.velocity)]);
        if (final_only && note.length == 0) break;
        int64_t length = length_at(note, now_us);
        if (note.length == 0) length = std::max(length, held_until - note.onset);
        put(duration_token_[nearest_index(duration_value_, n_durations_, length)]);
    }
    if (settled && *settled == SIZE_MAX) *settled = k;
    if (last_position) *last_position = at;
    return k;
}

size_t LiveEncoder::next_bar_size(int64_t now_us, bool force) const {
    if (!bar_complete(now_us, force)) return 0;
    return write_bar(open_start_ + open_ticks_, now_us, nullptr) - taken_;
}

size_t LiveEncoder::take_final(int64_t now_us, int32_t* tokens, size_t capacity) {
    const int64_t start = open_start_, end = start + open_ticks_;
    closed_tick_ = std::max(closed_tick_, std::min(std::max(tick_at(now_us), start), end));
    const size_t total = write_bar(closed_tick_, now_us, nullptr, 0, nullptr, true);
    if (total - taken_ > capacity)
        argument("the bar's final part has " + std::to_string(total - taken_) +
                 " tokens, capacity " + std::to_string(capacity));
    write_bar(closed_tick_, now_us, tokens, 0, nullptr, true, taken_, &taken_position_);
    const size_t n = total - taken_;
    taken_ = total;
    return n;
}

size_t LiveEncoder::peek_bar(int64_t until_tick, int64_t held_until, int64_t now_us,
                             int32_t* tokens, size_t capacity, size_t* settled) const {
    const int64_t end = open_start_ + open_ticks_;
    const int64_t until = std::min(end, until_tick);
    const size_t size = write_bar(until, now_us, nullptr, held_until);
    if (size > capacity)
        argument("the bar so far has " + std::to_string(size) + " tokens, capacity " +
                 std::to_string(capacity));
    return write_bar(until, now_us, tokens, held_until, settled);
}

size_t LiveEncoder::take_bar(int64_t now_us, bool force, int32_t* tokens, size_t capacity) {
    if (!bar_complete(now_us, force)) return 0;
    const size_t size = next_bar_size(now_us, force);
    if (size > capacity)
        argument("the bar has " + std::to_string(size) + " tokens, capacity " +
                 std::to_string(capacity));
    const int64_t end = open_start_ + open_ticks_;
    // A forced bar cuts the notes still sounding at its bar line, on the grid: cut at the poll's
    // time their lengths fell on a rounding tie (the poll comes half a grid step before the line),
    // so a millisecond of read jitter changed a Duration and everything the engine played after.
    for (int i = 0; i < n_notes_; ++i)
        if (notes_[i].onset < end && notes_[i].length == 0) cut(notes_[i], end);
    const size_t k = write_bar(end, now_us, tokens, 0, nullptr, false, taken_) - taken_;
    int t = 0;
    for (; t < n_tempos_waiting_ && tempos_[t].tick < end; ++t)
        written_tempo_token_ = tempos_[t].token;
    // Drop the written tempos and notes; the notes left move down, and so do their slots.
    int kept = 0;
    for (int i = t; i < n_tempos_waiting_; ++i) tempos_[kept++] = tempos_[i];
    n_tempos_waiting_ = kept;
    kept = 0;
    for (int i = 0; i < n_notes_; ++i) {
        if (notes_[i].onset < end) continue;
        notes_[kept] = notes_[i];
        if (notes_[kept].length == 0)
            sounding_[notes_[kept].channel][notes_[kept].pitch] = static_cast<int16_t>(kept);
        ++kept;
    }
    n_notes_ = kept;
    ++bars_written_;
    open_next_bar();
    closed_tick_ = std::max(closed_tick_, end);
    taken_ = 0;
    taken_position_ = -1;
    return k;
}

LiveCounts LiveEncoder::counts() const {
    LiveCounts c{};
    c.bars_written = bars_written_;
    c.notes = notes_read_;
    c.late = late_;
    c.dropped = dropped_;
    for (int i = 0; i < n_notes_; ++i) c.sounding += notes_[i].length == 0;
    c.waiting = static_cast<uint32_t>(n_notes_);
    c.clock_tick = clock_tick_;
    c.clock_start_tick = clock_start_tick_;
    c.clock_from_tick = clock_from_tick_;
    c.clock_stops = clock_stops_;
    c.clock_running = clock_ == Clock::Running;
    c.notes_while_stopped = notes_while_stopped_;
    return c;
}

}  // namespace sage
