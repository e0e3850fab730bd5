#include "jam.h"

#include <algorithm>
#include <cmath>

#include "model_file.h"

namespace sage {

Jam::Jam(const Model& model, const JamOptions& options, const kernels::KernelTable& kernels)
    : model_(model),
      options_(options),
      live_(model.vocab.data(), model.config.vocab_size, model.config.ticks_per_quarter,
            options.live) {
    if (options.mode != JamMode::CallResponse && options.mode != JamMode::Accompany)
        throw Error(Status::Argument, "mode must be call-response (0) or accompany (1)");
    if (options.phrase_bars < 1 || options.phrase_bars > 64)
        throw Error(Status::Argument, "phrase_bars must be 1..64");
    if (!(options.rest_quarters >= 0) || options.rest_quarters > 64)
        throw Error(Status::Argument, "rest_quarters must be 0..64");
    if (options.lookahead_bars > 16) throw Error(Status::Argument, "lookahead_bars must be 0..16");
    const bool anticipation = options.mode == JamMode::Accompany && options.lookahead_bars == 0;
    if (options.react != 0 && options.react != 1 && options.react != kAuto)
        throw Error(Status::Argument, "react must be 0, 1 or -1 (by the mode)");
    // The defaults by the mode (jam.h): in time, every beat, reacting; otherwise neither.
    const uint32_t beat = static_cast<uint32_t>(model.config.ticks_per_quarter);
    if (options_.listen_ticks == kListenBeat)
        options_.listen_ticks = anticipation && beat < uint32_t(live_.bar_ticks()) ? beat : 0;
    if (options_.react == kAuto) options_.react = anticipation ? 1 : 0;
    if (options_.listen_ticks > 0 && !anticipation)
        throw Error(Status::Argument, "listening within a bar needs accompaniment, lookahead 0");
    if (options_.predict && !anticipation)
        throw Error(Status::Argument, "predicting the musician needs accompaniment, lookahead 0");
    if (options_.react && !anticipation)
        throw Error(Status::Argument, "reacting to the musician needs accompaniment, lookahead 0");
    if (options.n_programs < 1 || options.n_programs > 16)
        throw Error(Status::Argument, "the engine needs 1..16 programs to play");
    Session::check_sampling(options.sampling);
    SessionOptions so;
    so.seed = options.seed;
    session_ = std::make_unique<Session>(model, so, kernels);
    if (options_.listen_ticks >= static_cast<uint32_t>(live_.bar_ticks()))
        throw Error(Status::Argument, "listen_ticks must be below a bar (" +
                                          std::to_string(live_.bar_ticks()) + " ticks)");
    session_->set_programs(options.programs, options.n_programs);
    if (options.predict) {
        // The musician's part, written by the model to harmonise with and replaced once played:
        // the program of the musician's first channel.
        predicted_program_ = options.live.channel_programs[0];
        int32_t programs[17];
        std::copy(options.programs, options.programs + options.n_programs, programs);
        programs[options.n_programs] = predicted_program_;
        session_->set_programs(programs, options.n_programs + 1);
    }
    session_->set_meter(options.live.bar_quarters, 4);
    locked_quarters_ = options.live.bar_quarters;
    int32_t bos = -1;
    std::fill(position_token_, position_token_ + LiveEncoder::kMaxBarTicks, -1);
    for (int id = 0; id < model.config.vocab_size; ++id) {
        const TokenInfo& t = model.vocab[id];
        if (t.kind == Kind::Position && t.a >= 0 && t.a < LiveEncoder::kMaxBarTicks &&
            position_token_[t.a] < 0)
            position_token_[t.a] = id;
        if (model.vocab[id].kind == Kind::Bar && bar_token_ < 0) bar_token_ = id;
        if (model.vocab[id].kind == Kind::Bos && bos < 0) bos = id;
    }
    if (bos >= 0) feed(&bos, 1);
    if (anticipation) {
        bar_line_ = session_->make_snapshot();
        anchor_ = session_->make_snapshot();
        history_at_bar_line_ = history_count_;
    }
}

int Jam::channel_of(int32_t program) const {
    // The engine's parts on channels 1, 2, ... in the order of its programs, skipping the drum
    // channel; drums on channel 10 (sage_edge.live.part_channels places parts the same way).
    int channel = 0;
    for (size_t i = 0; i < options_.n_programs; ++i) {
        if (options_.programs[i] < 0) {
            if (program < 0) return 9;
            continue;
        }
        if (options_.programs[i] == program) return channel;
        channel = channel + 1 == 9 ? 10 : channel + 1;
    }
    return 0;
}

void Jam::follow_meter() {
    const bool bar_opened =
        history_count_ > 0 && history_[(history_count_ - 1) % kHistory] == bar_token_;
    const uint64_t bars = session_->bars();
    const int32_t quarters = live_.quarters_of(bar_opened && bars > 0 ? bars - 1 : bars);
    if (quarters == 0 || quarters == locked_quarters_) return;
    session_->set_meter(quarters, 4);
    locked_quarters_ = quarters;
}

void Jam::record(const int32_t* tokens, size_t n) {
    for (size_t i = 0; i < n; ++i) history_[history_count_++ % kHistory] = tokens[i];
}

void Jam::feed(const int32_t* tokens, size_t n) {
    session_->feed(tokens, n, nullptr, false);
    record(tokens, n);
}

size_t Jam::history(int32_t* out, size_t n) const {
    const uint64_t kept = history_count_ < kHistory ? history_count_ : kHistory;
    const size_t count = n < kept ? n : static_cast<size_t>(kept);
    for (size_t i = 0; i < count; ++i) out[i] = history_[(history_count_ - count + i) % kHistory];
    return count;
}

void Jam::feed_musician(const int32_t* tokens, size_t n) {
    feed(tokens, n);
    NoteEvent skip[64];
    while (session_->pop_events(skip, 64) > 0) {  // the musician's own notes: not played back
    }
}

void Jam::collect(int64_t shift_ticks) {
    const double tpq = model_.config.ticks_per_quarter;
    NoteEvent decoded[64];
    size_t n;
    while ((n = session_->pop_events(decoded, 64)) > 0) {
        for (size_t i = 0; i < n; ++i) {
            const NoteEvent& e = decoded[i];
            if (e.program == predicted_program_) continue;  // the musician's, foreseen
            const int64_t on = std::llround(e.time * tpq) + shift_ticks;
            const int64_t off = std::llround((e.time + e.duration) * tpq) + shift_ticks;
            if (notes_count_ == kNoteCapacity) {  // full: drop the oldest
                notes_head_ = (notes_head_ + 1) % kNoteCapacity;
                --notes_count_;
                ++dropped_notes_;
            }
            notes_[(notes_head_ + notes_count_++) % kNoteCapacity] = {
                live_.time_of(on), live_.time_of(off), on,        off,
                e.pitch,           e.velocity,         e.program, channel_of(e.program)};
        }
    }
}

bool Jam::has_notes(size_t n) const {
    for (size_t i = 0; i < n; ++i)
        if (model_.vocab[bar_[i]].kind == Kind::Program) return true;
    return false;
}

void Jam::start_answer() {
    stop_ = BarStop{};
    stop_.bars = options_.phrase_bars;
    generating_ = true;
    answer_end_bar_ = live_.bars_written() + options_.phrase_bars;
    state_ = State::Answering;
    phrase_started_ = false;
    phrase_bars_ = 0;
    ++answers_;
}

// The musician's bar again, with the engine's parts between its notes: at each of the musician's
// positions the engine is stopped (a Position at or past it is left pending), the musician's
// tokens of that position are fed, and the engine goes on, free to add notes at that position
// after them, until it closes the bar. A few tokens per poll, so sends stay on time.
void Jam::start_accompaniment(const int32_t* tokens, size_t n) {
    std::copy(tokens, tokens + n, accompanied_);
    accompanied_n_ = n;
    size_t i = 0;
    while (i < n && model_.vocab[tokens[i]].kind != Kind::Position) ++i;
    feed_musician(tokens, i);  // Bar, TimeSig
    accompanied_next_ = i;
    accompanied_start_ = session_->bar().start;
    const uint64_t bar = live_.bars_written() - 1;
    int64_t start = 0, sounds_at = 0;
    int32_t quarters = 0;
    live_.bar_at(bar, &start, &quarters);
    live_.bar_at(bar + options_.lookahead_bars, &sounds_at, nullptr);
    accompanied_quarters_ = quarters;
    accompanied_shift_ = sounds_at - start;
    accompanying_ = true;
    next_stop();
}

void Jam::next_stop() {
    const double tpq = model_.config.ticks_per_quarter;
    stop_ = BarStop{};
    stop_.bars = 1;
    stop_.opened = 1;  // the bar is open: stop at a Position at or past `end`, or at a Bar
    stop_.end = accompanied_start_ + (accompanied_next_ < accompanied_n_
                                          ? model_.vocab[accompanied_[accompanied_next_]].a / tpq
                                          : accompanied_quarters_);
}

void Jam::accompany() {
    StopReason reason = StopReason::Capacity;
    follow_meter();
    record(generated_,
           session_->generate_bars(options_.sampling, stop_, generated_, kTokensPerPoll, &reason));
    collect(accompanied_shift_);
    if (reason == StopReason::Capacity) return;
    if (accompanied_next_ == accompanied_n_) {  // the engine closed the bar
        accompanying_ = false;
        return;
    }
    size_t next = accompanied_next_ + 1;
    while (next < accompanied_n_ && model_.vocab[accompanied_[next]].kind != Kind::Position) ++next;
    feed_musician(accompanied_ + accompanied_next_, next - accompanied_next_);
    accompanied_next_ = next;
    next_stop();
}

// Anticipation. The engine plays bar b + 1 while the musician plays it: it decides its notes from
// the musician's bars up to b, and at each listening point (every listen_ticks) from what the
// musician has played of bar b + 1 so far. Either way the session goes back to the bar line and
// is fed the bar so far as it sounded (the musician's notes, then the engine's at each position,
// as the live encoder orders programs by channel), so the stream it continues from is the music
// heard, in the tokenizer's order; then it generates on, from the listening point.
void Jam::anticipate(int64_t now_us) {
    const double tpq = model_.config.ticks_per_quarter;
    const int64_t played_ticks = live_.bar_ticks();
    const size_t n = live_.take_bar(now_us, true, bar_, kMaxBarTokens);
    if (n > 0) {  // the bar played is complete: it becomes the true start of the next one
        replay(bar_, n, n, static_cast<int32_t>(played_ticks));
        session_->save(*bar_line_);
        history_at_bar_line_ = history_count_;
        anchor_n_ = 0;
        played_n_ = 0;
        bar_start_tick_ = live_.open_bar_start();
        listen_at_ = bar_start_tick_;  // the bar line is the bar's first listening point
        anticipating_ = false;
    }
    const int64_t bar_ticks = live_.bar_ticks();  // of the bar being played
    // At a listening point the engine knows the musician's notes that start before it (ahead), or
    // also those at it (react: once one has come, or half a grid step after the point).
    const int64_t now_tick = live_.tick_at(now_us);
    const bool heard = options_.react ? now_tick > listen_at_ || live_.last_onset() >= listen_at_
                                      : now_tick >= listen_at_;
    if (listen_at_ >= 0 && heard) {
        // The engine decides from `from` on (a tick of the bar), knowing the onsets before `known`.
        const int64_t known = options_.react ? std::max(now_tick, listen_at_ + 1) : now_tick;
        const int64_t from =
            std::min(known - (options_.react ? 1 : 0) - bar_start_tick_, bar_ticks);
        const int64_t every = options_.listen_ticks > 0 ? options_.listen_ticks : bar_ticks;
        const int64_t next = std::min((from / every + 1) * every, bar_ticks);
        size_t settled = 0;
        const size_t m =
            live_.peek_bar(known, bar_start_tick_ + next, now_us, bar_, kMaxBarTokens, &settled);
        replay(bar_, m, settled, static_cast<int32_t>(from));
        session_->set_position_floor(static_cast<int32_t>(from));
        listen_at_ = next < bar_ticks ? bar_start_tick_ + next : -1;
        stop_ = BarStop{};
        stop_.opened = 1;  // the bar is open: stop at a Position at or past `end`, or at its Bar
        stop_.end = session_->bar().start + static_cast<double>(next) / tpq;
        // Reacting, the engine may add notes at `from` after the musician's, under their Position.
        reading_ = PlayedNote{};
        reading_.tick = static_cast<int32_t>(from);
        reading_.position = from < bar_ticks ? position_token_[from] : -1;
        anticipating_ = true;
    }
    // A few tokens at a time, returning as soon as a note is complete (as an answer does): the
    // first note after a listening point goes out without waiting for the rest of the poll's.
    for (size_t done = 0; anticipating_ && done < kTokensPerPoll && notes_count_ == 0;) {
        StopReason reason = StopReason::Capacity;
        follow_meter();
        const size_t made =
            session_->generate_bars(options_.sampling, stop_, generated_, kTokensPerStep, &reason);
        record(generated_, made);
        keep_played(generated_, made);
        collect(0);
        done += made;
        if (reason != StopReason::Capacity) anticipating_ = false;  // until the next point
    }
}

// The engine's notes as they are generated, kept to be replayed with the bar.
void Jam::keep_played(const int32_t* tokens, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        const TokenInfo& info = model_.vocab[tokens[i]];
        if (info.kind == Kind::Position) {
            reading_.position = tokens[i];
            reading_.tick = info.a;
            reading_.n = 0;
        } else if (info.kind == Kind::Program) {
            reading_.n = 0;
            reading_.tokens[reading_.n++] = tokens[i];
        } else if (info.kind == Kind::Pitch || info.kind == Kind::PitchDrum ||
                   info.kind == Kind::Velocity) {
            if (reading_.n > 0 && reading_.n < 3) reading_.tokens[reading_.n++] = tokens[i];
        } else if (info.kind == Kind::Duration && reading_.n > 0) {
            reading_.tokens[reading_.n++] = tokens[i];
            const bool foreseen = model_.vocab[reading_.tokens[0]].a == predicted_program_;
            if (!foreseen && played_n_ < kMaxPlayed) played_[played_n_++] = reading_;
            reading_.n = 0;
        }
    }
}

// Back to the bar line, then the bar so far: the musician's tokens of it (from the live encoder:
// Bar, TimeSig, then by position; the first `settled` will not change) with the engine's notes
// played before `until` merged in at their positions, after the musician's. What cannot change any
// more (settled, and before `until`: reacting, more of the musician's notes at `until` may come)
// is fed once: the session keeps a snapshot after it (the anchor) and the next replay of the bar
// starts there.
void Jam::replay(const int32_t* musician, size_t n, size_t settled, int32_t until) {
    ++replays_;
    size_t k = 0, p = 0, fixed = SIZE_MAX;  // fixed: merged_[0, fixed) cannot change any more
    auto engine_notes = [&](int32_t before, int32_t at) {  // the engine's notes before `before`
        for (; p < played_n_ && played_[p].tick < before && played_[p].tick < until; ++p) {
            if (played_[p].tick != at) merged_[k++] = played_[p].position;
            at = played_[p].tick;
            for (int32_t j = 0; j < played_[p].n; ++j) merged_[k++] = played_[p].tokens[j];
        }
        return at;
    };
    int32_t at = -1;  // the position written last
    for (size_t i = 0; i < n;) {
        const TokenInfo& info = model_.vocab[musician[i]];
        if (info.kind != Kind::Position) {
            if (i == settled) fixed = std::min(fixed, k);
            merged_[k++] = musician[i++];
            continue;
        }
        // The engine's notes before this position, then the musician's at it, then the engine's.
        at = engine_notes(info.a, at);
        if (info.a >= until) fixed = std::min(fixed, k);
        if (info.a != at) merged_[k++] = musician[i];
        at = info.a;
        for (++i; i < n && model_.vocab[musician[i]].kind != Kind::Position; ++i) {
            if (i == settled) fixed = std::min(fixed, k);
            merged_[k++] = musician[i];
        }
        at = engine_notes(at + 1, at);
    }
    engine_notes(until, at);
    fixed = std::min(fixed, k);
    // From the anchor if what it was fed still starts the bar (it does unless the caller's clock
    // went back), else from the bar line.
    size_t start = 0;
    if (anchor_n_ > 0 && anchor_n_ <= fixed &&
        std::equal(merged_, merged_ + anchor_n_, anchor_tokens_)) {
        session_->restore(*anchor_);
        history_count_ = history_at_anchor_;
        start = anchor_n_;
    } else {
        session_->restore(*bar_line_);
        history_count_ = history_at_bar_line_;
        anchor_n_ = 0;
    }
    replayed_tokens_ += k - start;
    if (fixed > start) {
        feed(merged_ + start, fixed - start);
        session_->save(*anchor_);
        history_at_anchor_ = history_count_;
        std::copy(merged_ + start, merged_ + fixed, anchor_tokens_ + start);
        anchor_n_ = fixed;
    }
    feed(merged_ + fixed, k - fixed);
    NoteEvent skip[64];
    while (session_->pop_events(skip, 64) > 0) {  // notes already played, or the musician's
    }
}

size_t Jam::poll(int64_t now_us, JamNote* out, size_t capacity) {
    const bool call_response = options_.mode == JamMode::CallResponse;
    for (; bar_line_ == nullptr;) {
        if (state_ == State::Answering && live_.bars_written() >= answer_end_bar_) {
            if (generating_) break;  // the musician's next bar waits for the answer's end
            // Should the answer have stopped short (a model that never closes a bar), empty bars
            // keep the stream's bars on the musician's.
            while (session_->bars() < live_.bars_written()) {
                const int32_t timesig = live_.meter_token(live_.quarters_of(session_->bars()));
                const int32_t empty[2] = {bar_token_, timesig};
                feed(empty, timesig >= 0 ? 2 : 1);
            }
            state_ = State::Listening;
        }
        // Call and response forces the bar a phrase ends with (held notes cut at the bar line)
        // and the bars of an answer; accompaniment forces every bar: the engine cannot wait.
        const bool force = !call_response || state_ == State::Answering ||
                           (phrase_started_ ? phrase_bars_ + 1 >= options_.phrase_bars
                                            : options_.phrase_bars == 1);
        if (accompanying_) break;  // the musician's next bar waits for this one's parts
        const uint64_t taken = live_.bars_written();
        size_t n =
            live_.take_bar(now_us, force, bar_, kMaxBarTokens);  // held notes: cut at the line
        if (live_.bars_written() == taken) break;  // (a bar all taken ahead gives no tokens)
        if (!call_response) {
            start_accompaniment(bar_, n);
            continue;
        }
        if (state_ == State::Answering)
            continue;  // the musician's notes during the answer
                       // are not heard: the bar is the answer's
        phrase_started_ |= bar_notes_ || has_notes(n);
        bar_notes_ = false;
        bool phrase_ends = false;
        if (phrase_started_) {
            ++phrase_bars_;
            const int64_t bar_line = live_.time_of(live_.open_bar_start());
            const double rested = static_cast<double>(bar_line - live_.last_key_us()) /
                                  (live_.time_of(live_.ticks_per_quarter()) - live_.time_of(0));
            const bool rest_ends = options_.rest_quarters > 0 && live_.keys_down() == 0 &&
                                   rested >= options_.rest_quarters;
            phrase_ends = phrase_bars_ >= options_.phrase_bars || rest_ends;
        }
        // The answer opens the next bar itself, so that nothing lands in the bar just played (the
        // meter lock keeps its bars as long as the musician's); its Bar goes in with the rest of
        // the phrase's last bar, one prefill.
        if (phrase_ends) bar_[n++] = bar_token_;
        feed_musician(bar_, n);
        if (phrase_ends) start_answer();
    }
    // Listening, the part of the open bar no later event can change is fed now, so that at a
    // phrase's end only what its last moments decide is left (a held note's Duration).
    if (call_response && state_ == State::Listening) {
        const size_t n = live_.take_final(now_us, bar_, kMaxBarTokens);
        bar_notes_ |= has_notes(n);
        if (n > 0) feed_musician(bar_, n);
    }
    if (accompanying_) accompany();
    if (bar_line_ != nullptr) anticipate(now_us);
    // One step of the answer a poll: a pulse or a note the front end reads meanwhile waits for
    // no more than that, and a note goes out as soon as it is decoded.
    if (generating_) {
        StopReason reason = StopReason::Capacity;
        follow_meter();
        const size_t n =
            session_->generate_bars(options_.sampling, stop_, generated_, kTokensPerStep, &reason);
        record(generated_, n);
        if (reason != StopReason::Capacity) generating_ = false;  // its last Bar stays pending
        collect(0);
    }
    size_t k = 0;
    for (; k < capacity && notes_count_ > 0; ++k) {
        out[k] = notes_[notes_head_];
        notes_head_ = (notes_head_ + 1) % kNoteCapacity;
        --notes_count_;
    }
    return k;
}

}  // namespace sage
