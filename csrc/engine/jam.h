// Playing with a musician (docs/jam.md): a session that listens through a live encoder and answers.
//
// Call and response: the musician's notes are fed as they become final (a note once its position
// has passed and it has ended; a bar's end once the bar is complete), so at a phrase's end only
// what its last moments decide is left to feed (a held note's Duration). A phrase ends after
// phrase_bars bars from its first note, or once the musician has rested rest_quarters; the engine
// then answers phrase_bars bars on its programs, from the next bar line, continuing from everything
// played; the musician's notes during the answer are not heard. Then it listens again.
//
// Accompaniment: the musician's bar b is known once it is complete; the engine then writes bar b
// again with its own parts between the musician's notes (forced at their positions), and plays
// its parts lookahead_bars later, on the same grid (docs/jam.md, "What the engine knows").
// With lookahead_bars = 0 (anticipation) the engine plays bar b + 1 in bar b + 1, deciding it from
// the musician's bars up to b (and, every listen_ticks, from what the musician has played of bar
// b + 1 so far): at each of these moments the session goes back to the bar line (a snapshot),
// is fed the bar so far as it was really played, the musician's notes and the engine's merged,
// and generates on from there.
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

// listen_ticks: one beat (the model's ticks per quarter) when accompanying in time and a bar holds
// more than one, else 0 (bar lines only).
constexpr uint32_t kListenBeat = UINT32_MAX;
// react: on when accompanying in time, off otherwise.
constexpr int32_t kAuto = -1;

struct JamOptions {
    JamMode mode = JamMode::CallResponse;
    uint32_t phrase_bars = 4;  // call and response: bars of a phrase and of an answer
    double rest_quarters = 0;  // call and response: a rest this long ends a phrase (0: off)
    // The defaults (the C API's too) accompany in time, listening every beat and reacting: what
    // the musician hears is as consonant as what the model writes knowing the whole bar
    // (docs/jam.md, "Accompaniment quality"); lookahead_bars 1 (one bar behind) costs no reaction
    // latency. kListenBeat and kAuto resolve by the mode at construction: call and response and
    // one bar behind never listen within a bar nor react.
    uint32_t lookahead_bars = 0;  // accompaniment: the engine's bar b sounds in bar b + this
    // Anticipation (lookahead_bars 0; docs/jam.md, "What the engine knows"): listen again every
    // listen_ticks grid ticks (0: at bar lines only); react: wait at a listening point for the
    // musician's note there; predict: the model writes the musician's part ahead too, unplayed.
    uint32_t listen_ticks = kListenBeat;
    int32_t react = kAuto;  // 0, 1 or kAuto
    bool predict = false;
    int32_t programs[16] = {0};  // the engine's programs
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
    // Generation per poll: a poll stays short, so a front end polling between MIDI bytes answers a
    // clock pulse quickly; while generating() it polls again at once. An accompanied bar takes up
    // to kTokensPerPoll a poll; an answer one step (a few hundred microseconds here).
    static constexpr size_t kTokensPerPoll = 8;
    static constexpr size_t kTokensPerStep = 2;

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
    bool generating() const { return generating_ || accompanying_; }  // poll again at once
    uint64_t answers() const { return answers_; }
    const JamOptions& options() const { return options_; }  // defaults resolved by the mode
    uint64_t replays() const { return replays_; }  // anticipation: times a bar was replayed
    uint64_t replayed_tokens() const { return replayed_tokens_; }  // fed by those replays
    // The last min(n, kHistory) tokens of the session's stream, oldest first; returns how many.
    size_t history(int32_t* out, size_t n) const;
    static constexpr size_t kHistory = 8192;
    uint64_t dropped_notes() const { return dropped_notes_; }  // not polled before 1024 more came

  private:
    enum class State { Listening, Answering };
    void feed_musician(const int32_t* tokens, size_t n);
    void start_answer();             // the Bar opening the answer is fed by the caller
    bool has_notes(size_t n) const;  // the first n tokens of bar_ hold a note
    void start_accompaniment(const int32_t* tokens, size_t n);
    void accompany();  // a few tokens more of the bar being accompanied
    void next_stop();  // the engine's stop before the musician's next position (or the bar end)
    void collect(int64_t shift_ticks);
    // Anticipation (lookahead_bars = 0).
    void anticipate(int64_t now_us);
    void replay(const int32_t* musician, size_t n, size_t settled, int32_t until_tick);
    void keep_played(const int32_t* tokens, size_t n);
    // The session's meter lock follows the bar table: the meter of the bar whose TimeSig comes
    // next (the bar just opened when the last token was its Bar, else the next one).
    void follow_meter();
    void feed(const int32_t* tokens, size_t n);    // feeds and records
    void record(const int32_t* tokens, size_t n);  // the engine's notes decoded so far -> notes_
    int channel_of(int32_t program) const;

    const Model& model_;
    JamOptions options_;
    LiveEncoder live_;
    std::unique_ptr<Session> session_;
    int32_t bar_token_ = -1;
    int32_t locked_quarters_ = 0;  // the session's meter lock
    State state_ = State::Listening;
    bool phrase_started_ = false;
    bool bar_notes_ = false;  // call and response: the open bar's part fed ahead holds a note
    uint32_t phrase_bars_ = 0;
    uint64_t answer_end_bar_ = 0;  // call and response: the encoder's bar after the answer
    BarStop stop_{};
    bool generating_ = false;
    uint64_t answers_ = 0;
    int32_t bar_[kMaxBarTokens + 1];  // + the Bar opening an answer
    // Accompaniment: the musician's bar being accompanied, the next of its tokens to feed.
    int32_t accompanied_[kMaxBarTokens];
    size_t accompanied_n_ = 0, accompanied_next_ = 0;
    bool accompanying_ = false;
    double accompanied_start_ = 0;     // quarters
    double accompanied_quarters_ = 0;  // its length
    int64_t accompanied_shift_ = 0;    // ticks from its start to the bar its parts sound in
    int32_t generated_[kTokensPerPoll];
    // The engine's notes decoded and not yet handed out, oldest first.
    static constexpr size_t kNoteCapacity = 1024;
    JamNote notes_[kNoteCapacity];
    size_t notes_head_ = 0, notes_count_ = 0;
    uint64_t dropped_notes_ = 0;
    int32_t history_[kHistory];
    uint64_t history_count_ = 0;  // tokens recorded, all time

    // Anticipation: the session at the bar line of the bar being played, and the engine's notes
    // played in that bar so far (Program Pitch Velocity Duration, velocity absent from a
    // vocabulary without it), to replay the bar once more of the musician's part is known.
    std::unique_ptr<SessionSnapshot> bar_line_;
    uint64_t history_at_bar_line_ = 0;
    // And further into the bar: the session after the replayed tokens that cannot change any more
    // (anchor_tokens_, from the bar line), so that the next replay feeds only what follows them.
    std::unique_ptr<SessionSnapshot> anchor_;
    uint64_t history_at_anchor_ = 0;
    size_t anchor_n_ = 0;  // 0: no anchor in this bar (the bar line is the one)
    struct PlayedNote {
        int32_t tick;      // in the bar
        int32_t position;  // its Position token
        int32_t tokens[4];
        int32_t n;
    };
    static constexpr size_t kMaxPlayed = 512;
    PlayedNote played_[kMaxPlayed];
    size_t played_n_ = 0;
    PlayedNote reading_{};  // the note being generated
    bool anticipating_ = false;
    int64_t bar_start_tick_ = 0;  // of the bar being played
    int64_t listen_at_ = -1;      // the next listening point's grid tick, -1 none in this bar
    int32_t position_token_[LiveEncoder::kMaxBarTicks];  // by tick in the bar, -1 none
    int32_t predicted_program_ = -2;  // predict: the musician's program the model writes, unplayed
    uint64_t replays_ = 0, replayed_tokens_ = 0;
    int32_t merged_[kMaxBarTokens + 5 * kMaxPlayed];
    int32_t anchor_tokens_[kMaxBarTokens + 5 * kMaxPlayed];
};

}  // namespace sage
