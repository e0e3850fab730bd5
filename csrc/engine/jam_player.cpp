#include "jam_player.h"

#include <algorithm>
#include <cmath>

#include "model_file.h"

namespace sage {

namespace {

constexpr uint8_t kClockStart = 0xFA, kClockPulse = 0xF8, kClockStop = 0xFC;

}  // namespace

JamPlayer::JamPlayer(Jam& jam, bool lead_clock)
    : jam_(jam),
      live_(jam.live()),
      scheduler_(kNotes),
      follow_(jam.options().live.follow_clock),
      lead_(lead_clock) {
    if (follow_ && lead_)
        throw Error(Status::Argument, "a jam that follows the input's clock cannot lead one");
}

void JamPlayer::update_closing(int64_t now_us) {
    closing_ = closing_ || (close_us_ >= 0 && now_us > close_us_);
}

size_t JamPlayer::poll(int64_t now_us, JamNote* out, size_t capacity) {
    update_closing(now_us);
    if (closing_) return 0;
    // Following: a note decided for a tick before where the music went on had its time without
    // the clock, or was jumped (sage_live_counts.clock_from_tick).
    const int64_t from = follow_ ? live_.counts().clock_from_tick : -1;
    size_t count = 0;
    while (count < capacity) {
        const size_t asked = capacity - count;
        const size_t got = jam_.poll(now_us, out + count, asked);
        const size_t end = count + got;
        for (size_t i = count; i < end; ++i) {
            const JamNote& n = out[i];
            const ScheduledNote note{
                follow_ ? static_cast<double>(n.tick) : static_cast<double>(n.time_us),
                follow_ ? static_cast<double>(n.end_tick) : static_cast<double>(n.end_us),
                n.pitch,
                n.velocity,
                n.program,
                n.channel};
            if (n.tick < from || !scheduler_.add(note)) {
                ++dropped_;
                continue;
            }
            ++notes_;
            out[count++] = n;  // i >= count: the kept notes move down over the dropped ones
        }
        if (got < asked) break;
    }
    return count;
}

size_t JamPlayer::take_due(int64_t now_us, uint8_t* out, size_t capacity) {
    update_closing(now_us);
    if (stopped_) return 0;
    const bool one = capacity <= kMidiMaxMessageBytes;
    double due_by = static_cast<double>(now_us);
    if (follow_) {
        const LiveCounts clock = live_.counts();
        if (clock.clock_stops != clock_stops_) {
            // A Stop: the notes sounding end now, the notes to come wait for the clock.
            if (const size_t n = scheduler_.release(out, capacity)) return n;
            clock_stops_ = clock.clock_stops;
        }
        if (clock.clock_from_tick != clock_from_) {
            // A Start, or a Continue a Song Position Pointer moved: the notes before it are not
            // played; program changes and the note-offs of notes sounding go out.
            if (const size_t n = scheduler_.skip_before(static_cast<double>(clock.clock_from_tick),
                                                        out, capacity))
                return n;
            clock_from_ = clock.clock_from_tick;
        }
        due_by = static_cast<double>(clock.clock_tick);  // -1 before the first pulse: nothing
    }
    size_t written = 0;
    while (lead_ && written < capacity && live_.time_of_pulse(next_pulse_) <= now_us) {
        // Start with the first pulse, then the pulses: before the notes due at the same time.
        if (!started_) {
            out[written++] = kClockStart;
            started_ = true;
            if (one) return written;
            continue;
        }
        out[written++] = kClockPulse;
        ++next_pulse_;
        ++pulses_;
        if (one) return written;
    }
    if (scheduler_.empty() || scheduler_.next_time() > due_by) return written;
    if (!follow_) {  // following, a message is due at its pulse, never late by our clock
        const int64_t late = now_us - static_cast<int64_t>(std::ceil(scheduler_.next_time()));
        if (late > kLateUs && now_us != late_now_) {
            ++late_sends_;
            late_now_ = now_us;
            worst_late_us_ = std::max(worst_late_us_, late);
        }
    }
    return written + scheduler_.take_due(due_by, out + written, capacity - written);
}

void JamPlayer::input_ended(int64_t now_us) {
    if (close_us_ >= 0) return;
    const JamOptions& o = jam_.options();
    const uint64_t later = o.mode == JamMode::Accompany ? o.lookahead_bars : 1;
    int64_t tail_tick = 0;
    live_.bar_at(live_.bar_of(live_.tick_at(now_us)) + 2 * uint64_t{o.phrase_bars} + later + 2,
                 &tail_tick, nullptr);
    // Following a clock that stands, its time for the tick may have passed: closing at once (its
    // pulses, which would play the rest, ended with the input).
    close_us_ = std::max(now_us, live_.time_of(tail_tick));
}

int64_t JamPlayer::wait_us(int64_t now_us) const {
    if (!closing_ && jam_.generating()) return 0;  // closing, the jam is polled no more
    int64_t wait = kPollUs;
    if (lead_) wait = std::min(wait, live_.time_of_pulse(next_pulse_) - now_us);
    if (!follow_ && !scheduler_.empty())  // following, the pulses wake the wait as input
        wait = std::min(wait, static_cast<int64_t>(std::ceil(scheduler_.next_time())) - now_us);
    return std::max<int64_t>(wait, 0);
}

size_t JamPlayer::stop(uint8_t* out, size_t capacity) {
    stopped_ = true;
    if (const size_t n = scheduler_.silence(out, capacity)) return n;
    if (!lead_ || !started_ || stop_sent_ || capacity == 0) return 0;
    stop_sent_ = true;
    out[0] = kClockStop;
    return 1;
}

}  // namespace sage
