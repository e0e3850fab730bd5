// Playing with a musician (docs/jam.md): a session that listens through a live encoder and answers.
//
// Call and response: every bar the musician plays is fed as it completes (so at a phrase's end
// only its last bar is left to feed). A phrase ends after phrase_bars bars from its first note, or
// once the musician has rested rest_quarters; the engine then answers phrase_bars bars on its
// programs, from the next bar line, continuing from everything played; the musician's notes
// during the answer are not heard. Then it listens again.
//
// Accompaniment: the musician's bar b is known once it is complete; the engine then writes bar b
// again with its own parts between the musician's notes (forced at their positions), and plays
// its parts lookahead_bars later, on the same grid (docs/jam.md, "What the engine knows").
//
// Memory: everything is allocated at construction; poll allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels.h"
#include "live_encoder.h"
#include "sampler.h"
#include "session.h"

namespace sage {

enum class JamMode : int32_t { CallResponse = 0, Accompany = 1 };

struct JamOptions {
    JamMode mode = JamMode::CallResponse;
    uint32_t phrase_bars = 4;     // call and response: bars of a phrase and of an answer
    double rest_quarters = 0;     // call and response: a rest this long ends a phrase (0: off)
    uint32_t lookahead_bars = 1;  // accompaniment: the engine's bar b sounds in bar b + this
    int32_t programs[16] = {0};   // the engine's programs
    size_t n_programs = 0;
    SamplingParams sampling;
    uint64_t seed = 0;
    LiveOptions live;
};

struct JamNote {  // a note the engine plays, on the caller's clock
    int64_t time_us, end_us;
    int64_t tick, end_tick;  // grid ticks from bar 0
    int32_t pitch, velocity, program, channel;
};

class Jam {
  public:
    static constexpr size_t kMaxBarTokens = 2 + 2 * LiveEncoder::kMaxBarTicks + 5 * 512;
    // Generation per poll: a poll stays short (about 2 ms), so a front end polling between MIDI
    // bytes answers a clock pulse quickly.
    static constexpr size_t kTokensPerPoll = 8;
    static constexpr size_t kTokensPerStep = 2;  // checked for a finished note this often

    Jam(const Model& model, const JamOptions& options, const kernels::KernelTable& kernels);
    LiveEncoder& live() { return live_; }
    // The musical controls for the engine's parts (the musician's notes are fed, not drawn, so
    // they are never masked; the controls still see them, e.g. for parallels).
    void set_controls(const sage_controls& controls) { session_->set_controls(controls); }
    const Session& session() const { return *session_; }

    // Takes the bars complete at now_us, feeds them, and generates up to kTokensPerPoll tokens
    // of the engine's part; writes at most capacity of the notes decoded (the rest wait for the
    // next poll) and returns how many.
    size_t poll(int64_t now_us, JamNote* out, size_t capacity);
    bool answering() const { return state_ != State::Listening; }
    uint64_t answers() const { return answers_; }
    // The last min(n, kHistory) tokens of the session's stream, oldest first; returns how many.
    size_t history(int32_t* out, size_t n) const;
    static constexpr size_t kHistory = 8192;
    uint64_t dropped_notes() const { return dropped_notes_; }  // not polled before 1024 more came

  private:
    enum class State { Listening, Answering };
    void feed_musician(const int32_t* tokens, size_t n);
    void start_answer();
    void start_accompaniment(const int32_t* tokens, size_t n);
    void accompany();  // a few tokens more of the bar being accompanied
    void next_stop();  // the engine's stop before the musician's next position (or the bar end)
    void collect(int64_t shift_ticks);
    void feed(const int32_t* tokens, size_t n);    // feeds and records
    void record(const int32_t* tokens, size_t n);  // the engine's notes decoded so far -> notes_
    int channel_of(int32_t program) const;

    const Model& model_;
    JamOptions options_;
    LiveEncoder live_;
    std::unique_ptr<Session> session_;
    int32_t bar_token_ = -1, timesig_token_ = -1;
    State state_ = State::Listening;
    bool phrase_started_ = false;
    uint32_t phrase_bars_ = 0;
    uint64_t answer_end_bar_ = 0;  // call and response: the encoder's bar after the answer
    BarStop stop_{};
    bool generating_ = false;
    uint64_t answers_ = 0;
    int32_t bar_[kMaxBarTokens];
    // Accompaniment: the musician's bar being accompanied, the next of its tokens to feed.
    int32_t accompanied_[kMaxBarTokens];
    size_t accompanied_n_ = 0, accompanied_next_ = 0;
    bool accompanying_ = false;
    double accompanied_start_ = 0;  // quarters
    int32_t generated_[kTokensPerPoll];
    // The engine's notes decoded and not yet handed out, oldest first.
    static constexpr size_t kNoteCapacity = 1024;
    JamNote notes_[kNoteCapacity];
    size_t notes_head_ = 0, notes_count_ = 0;
    uint64_t dropped_notes_ = 0;
    int32_t history_[kHistory];
    uint64_t history_count_ = 0;  // tokens recorded, all time
};

}  // namespace sage
