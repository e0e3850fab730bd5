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
    if (options.lookahead_bars < 1 || options.lookahead_bars > 16)
        throw Error(Status::Argument, "lookahead_bars must be 1..16");
    if (options.n_programs < 1 || options.n_programs > 16)
        throw Error(Status::Argument, "the engine needs 1..16 programs to play");
    Session::check_sampling(options.sampling);
    SessionOptions so;
    so.seed = options.seed;
    session_ = std::make_unique<Session>(model, so, kernels);
    session_->set_programs(options.programs, options.n_programs);
    session_->set_meter(options.live.bar_quarters, 4);
    int32_t bos = -1;
    for (int id = 0; id < model.config.vocab_size; ++id) {
        if (model.vocab[id].kind == Kind::Bar && bar_token_ < 0) bar_token_ = id;
        if (model.vocab[id].kind == Kind::Bos && bos < 0) bos = id;
        if (model.vocab[id].kind == Kind::TimeSig &&
            model.vocab[id].a == options.live.bar_quarters && model.vocab[id].b == 4)
            timesig_token_ = id;
    }
    if (bos >= 0) feed(&bos, 1);
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

void Jam::start_answer() {
    // The answer opens the next bar itself, so that nothing lands in the bar just played; the
    // meter lock keeps its bars as long as the musician's.
    feed(&bar_token_, 1);
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
                                          : static_cast<double>(options_.live.bar_quarters));
}

void Jam::accompany() {
    StopReason reason = StopReason::Capacity;
    record(generated_,
           session_->generate_bars(options_.sampling, stop_, generated_, kTokensPerPoll, &reason));
    collect(int64_t{options_.lookahead_bars} * live_.bar_ticks());
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

size_t Jam::poll(int64_t now_us, JamNote* out, size_t capacity) {
    const bool call_response = options_.mode == JamMode::CallResponse;
    for (;;) {
        if (state_ == State::Answering && live_.bars_written() >= answer_end_bar_) {
            if (generating_) break;  // the musician's next bar waits for the answer's end
            // Should the answer have stopped short (a model that never closes a bar), empty bars
            // keep the stream's bars on the musician's.
            while (session_->bars() < live_.bars_written()) {
                const int32_t empty[2] = {bar_token_, timesig_token_};
                feed(empty, timesig_token_ >= 0 ? 2 : 1);
            }
            state_ = State::Listening;
        }
        // Call and response forces the bar a phrase ends with (held notes cut at the bar line)
        // and the bars of an answer; accompaniment forces every bar: the engine cannot wait.
        const bool force = !call_response || state_ == State::Answering ||
                           (phrase_started_ ? phrase_bars_ + 1 >= options_.phrase_bars
                                            : options_.phrase_bars == 1);
        if (accompanying_) break;  // the musician's next bar waits for this one's parts
        const size_t n = live_.take_bar(now_us, force, bar_, kMaxBarTokens);
        if (n == 0) break;
        if (!call_response) {
            start_accompaniment(bar_, n);
            continue;
        }
        if (state_ == State::Answering)
            continue;  // the musician's notes during the answer
                       // are not heard: the bar is the answer's
        feed_musician(bar_, n);
        bool notes = false;
        for (size_t i = 0; i < n; ++i) notes |= model_.vocab[bar_[i]].kind == Kind::Program;
        phrase_started_ |= notes;
        if (!phrase_started_) continue;
        ++phrase_bars_;
        const int64_t bar_line = live_.time_of(live_.bars_written() * live_.bar_ticks());
        const double rested = static_cast<double>(bar_line - live_.last_key_us()) /
                              (live_.time_of(live_.ticks_per_quarter()) - live_.time_of(0));
        const bool rest_ends = options_.rest_quarters > 0 && live_.keys_down() == 0 &&
                               rested >= options_.rest_quarters;
        if (phrase_bars_ >= options_.phrase_bars || rest_ends) start_answer();
    }
    if (accompanying_) accompany();
    // A few tokens at a time, returning as soon as a note is complete: the answer's first note
    // goes out without waiting for the rest of the poll's tokens.
    for (size_t done = 0; generating_ && done < kTokensPerPoll && notes_count_ == 0;) {
        StopReason reason = StopReason::Capacity;
        const size_t n =
            session_->generate_bars(options_.sampling, stop_, generated_, kTokensPerStep, &reason);
        record(generated_, n);
        done += n;
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
